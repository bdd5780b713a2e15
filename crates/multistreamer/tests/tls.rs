//! `wss://` end to end: a loopback TLS WebSocket server (rustls + tungstenite, on a thread)
//! with a test CA; the client trusts it only through `ConnectOptions::tls` built by `tls::client_config`.
//!
//! The certificates in `tests/data` were made once with openssl for 127.0.0.1 and localhost
//! (valid until 2126); the key is a throwaway used only here.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chat_model::{Kind, Secret, SourceItem};
use multistreamer::{ConnectOptions, Error, connect};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_tungstenite::tungstenite::{self, Message};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Serves one TLS WebSocket connection: checks the token, answers the status request with a
/// status and one chat message, then closes.
fn serve_once(listener: TcpListener) -> std::thread::JoinHandle<Option<String>> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(data("test-server.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(data("test-server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let conn = rustls::ServerConnection::new(Arc::new(config)).ok()?;
        let tls = rustls::StreamOwned::new(conn, tcp);
        let mut path = None;
        // tungstenite's `Callback` trait fixes the closure's (large) error type.
        #[allow(clippy::result_large_err)]
        let mut ws = tungstenite::accept_hdr(
            tls,
            |req: &tungstenite::handshake::server::Request,
             resp: tungstenite::handshake::server::Response| {
                path = Some(req.uri().to_string());
                Ok(resp)
            },
        )
        .ok()?;
        let first = ws.read().ok()?;
        assert_eq!(first.to_text().ok()?, r#"{"type":"status"}"#);
        ws.send(Message::Text(
            r#"{"type":"status","status":{"data_pushing":true},"accounts":{"0":{"live":false,"writable":true,"ready":true,"name":"john","network":{"name":"irc","displayName":"IRC"}}}}"#.into(),
        ))
        .ok()?;
        ws.send(Message::Text(
            r#"{"type":"text","account_id":0,"network":"irc","from":{"id":2,"name":"test"},"text":"over tls","timestamp":1764504000000}"#.into(),
        ))
        .ok()?;
        let _ = ws.close(None);
        // Drain until the client's close arrives.
        for _ in 0..10 {
            if ws.read().is_err() {
                break;
            }
        }
        path
    })
}

#[tokio::test]
async fn wss_with_a_private_ca() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve_once(listener);
    let mut opts = ConnectOptions::new(format!("wss://{addr}"), 21, Secret::new("tls-token"));
    let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(data("test-ca.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    opts.tls = Some(multistreamer::tls::client_config(&ca).unwrap());
    let mut conn = connect(&opts).await.unwrap();
    let mut kinds = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match conn.next_item().await {
                Ok(SourceItem::Event { event, .. }) => kinds.push((event.kind, event.text)),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(kinds[0].0, Kind::Status);
    assert_eq!(kinds[1], (Kind::Message, "over tls".to_owned()));
    assert!(matches!(end, Error::Closed { .. }), "{end}");
    drop(conn);
    let path = tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
    assert_eq!(path.as_deref(), Some("/ws/21?token=tls-token"));
}

#[tokio::test]
async fn wss_without_the_ca_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = serve_once(listener);
    // Only the public web roots: the test CA is unknown.
    let opts = ConnectOptions::new(format!("wss://{addr}"), 21, Secret::new("tls-token"));
    let e = connect(&opts).await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    assert!(!e.to_string().contains("tls-token"), "{e}");
}
