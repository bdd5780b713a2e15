//! Errors as one printable line.

/// `e` and each of its causes joined by `": "`, each with URLs' secrets redacted: the form every
/// crate logs and reports (HTTP clients keep the interesting part in `source`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = crate::redact_url(&e.to_string());
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = crate::redact_url(&c.to_string());
        // Some errors repeat their source's text in their own; say it once.
        if !s.ends_with(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer at http://h/x?token=abc")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_causes_and_redacts() {
        let e = Outer(std::io::Error::other("connection reset"));
        let s = error_chain(&e);
        assert!(s.ends_with(": connection reset"), "{s}");
        assert!(!s.contains("abc"), "{s}");
    }
}
