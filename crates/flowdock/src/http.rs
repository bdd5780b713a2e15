//! The HTTP helpers the stream client and the user lookups share: URL encoding, response
//! checks, `Retry-After` and error chains.

use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use crate::error::Error;

/// Percent-encodes a query value, keeping the characters flow names use (`/`, `:`, `,`).
pub(crate) fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/:,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes one path segment (also escaping `/` and `,`).
pub(crate) fn encode_segment(s: &str) -> String {
    encode_query(s).replace('/', "%2F").replace(',', "%2C")
}

/// Checks the status and content type of a response.
pub(crate) fn check_response(
    resp: &reqwest::Response,
    what: &str,
    expected: &'static str,
) -> Result<(), Error> {
    let status = resp.status();
    if !status.is_success() {
        return Err(Error::Http {
            status: status.as_u16(),
            what: what.to_owned(),
            retry_after: retry_after(resp.headers()),
        });
    }
    let got = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mime = got
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != expected {
        return Err(Error::ContentType {
            what: what.to_owned(),
            got: if got.is_empty() { "(none)".into() } else { got },
            expected,
        });
    }
    Ok(())
}

/// Reads a `Retry-After` header against the current time; the parsing is
/// [`chat_model::parse_retry_after`] (delay-seconds or an HTTP-date).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    chat_model::parse_retry_after(value, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Fri, 31 Dec 9999 23:59:59 GMT".parse().unwrap(),
        );
        assert!(retry_after(&h).is_some_and(|d| d > Duration::from_secs(3600)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
