//! TLS trust for every client the binary builds: each `ca_file` is read and parsed once, and
//! one HTTP client and one rustls configuration exist per distinct CA set, shared by all
//! sources and targets that name it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// How long an HTTP client waits for a TCP (and TLS) connection before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an idle HTTP connection is probed by TCP keep-alive.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// The most idle connections an HTTP client keeps open per host for reuse.
///
/// Sources of one service share a host and a client: unbounded, every source's short REST
/// requests (baselines, backfill, user lists) could leave a connection of its own idle in
/// the pool beside its stream, each holding an fd and hyper's buffers (about 8,000 for
/// 10,000 Flowdock sources) until the pool's idle timeout.
pub const POOL_MAX_IDLE_PER_HOST: usize = 32;

/// Why the trust for a `ca_file` could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read ca_file {}: {source}", path.display())]
    Read {
        /// The file named by `ca_file`.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The file is not PEM.
    #[error("ca_file {} is not a PEM certificate file: {source}", path.display())]
    Pem {
        /// The file named by `ca_file`.
        path: PathBuf,
        /// What the PEM parser refused.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The file holds no certificate.
    #[error("ca_file {} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file named by `ca_file`.
        path: PathBuf,
    },
    /// A certificate in the file cannot be used as a trust anchor.
    #[error("ca_file {} holds an unusable certificate: {reason}", path.display())]
    Unusable {
        /// The file named by `ca_file`.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Rustls(#[source] rustls::Error),
}

/// The CA sets seen so far and the clients built for each.
#[derive(Default)]
pub struct Tls {
    roots: HashMap<PathBuf, Arc<Vec<CertificateDer<'static>>>>,
    http: HashMap<Option<PathBuf>, reqwest::Client>,
    rustls: HashMap<Option<PathBuf>, Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca_files", &self.roots.keys().collect::<Vec<_>>())
            .field("http_clients", &self.http.len())
            .field("rustls_configs", &self.rustls.len())
            .finish()
    }
}

impl Tls {
    /// The shared HTTP client trusting the public web roots plus `ca_file`'s certificates.
    pub fn http_client(&mut self, ca_file: Option<&Path>) -> Result<reqwest::Client, TlsError> {
        let key = ca_file.map(Path::to_path_buf);
        if let Some(client) = self.http.get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(TCP_KEEPALIVE)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .tcp_nodelay(true);
        if let Some(path) = ca_file {
            for der in self.roots(path)?.iter() {
                let cert = reqwest::Certificate::from_der(der).map_err(|e| TlsError::Unusable {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(TlsError::Client)?;
        self.http.insert(key, client.clone());
        Ok(client)
    }

    /// The shared rustls configuration (for `wss://`) trusting the public web roots plus
    /// `ca_file`'s certificates (built by [`multistreamer::tls::client_config`]).
    pub fn rustls_config(
        &mut self,
        ca_file: Option<&Path>,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let key = ca_file.map(Path::to_path_buf);
        if let Some(config) = self.rustls.get(&key) {
            return Ok(config.clone());
        }
        let config = match ca_file {
            Some(path) => multistreamer::tls::client_config(&self.roots(path)?).map_err(|e| {
                TlsError::Unusable {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?,
            None => multistreamer::tls::client_config(&[]).map_err(TlsError::Rustls)?,
        };
        self.rustls.insert(key, config.clone());
        Ok(config)
    }

    /// The certificates of the PEM file `path`, read once.
    fn roots(&mut self, path: &Path) -> Result<Arc<Vec<CertificateDer<'static>>>, TlsError> {
        if let Some(certs) = self.roots.get(path) {
            return Ok(certs.clone());
        }
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|source| TlsError::Pem {
                path: path.to_path_buf(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: path.to_path_buf(),
            });
        }
        let certs = Arc::new(certs);
        self.roots.insert(path.to_path_buf(), certs.clone());
        Ok(certs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_junk_and_empty_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut tls = Tls::default();
        let missing = dir.path().join("missing.pem");
        let e = tls.http_client(Some(&missing)).unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = tls.rustls_config(Some(&empty)).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e:?}");
        assert!(e.to_string().contains("empty.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = tls.http_client(Some(&junk)).unwrap_err();
        assert!(e.to_string().contains("junk.pem"), "{e}");
    }

    #[test]
    fn one_client_per_ca_set() {
        let mut tls = Tls::default();
        tls.http_client(None).unwrap();
        tls.http_client(None).unwrap();
        tls.rustls_config(None).unwrap();
        let a = tls.rustls_config(None).unwrap();
        assert_eq!(tls.http.len(), 1);
        assert_eq!(tls.rustls.len(), 1);
        assert!(Arc::ptr_eq(&a, &tls.rustls_config(None).unwrap()));
    }
}
