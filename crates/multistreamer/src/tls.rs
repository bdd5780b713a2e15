//! TLS for `wss://`: rustls with the `ring` crypto provider set up explicitly (never the
//! process-wide default, so whichever providers other crates enable cannot clash).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// A rustls client configuration trusting the public web roots plus `extra_roots`
/// (self-hosted servers, tests); an error says which root rustls refused.
pub fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots.add(cert.clone())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_builds() {
        let c = client_config(&[]).unwrap();
        assert!(!c.alpn_protocols.iter().any(|p| p.is_empty()));
    }

    #[test]
    fn a_junk_root_is_refused() {
        let junk = CertificateDer::from(b"not a certificate".to_vec());
        assert!(client_config(&[junk]).is_err());
    }
}
