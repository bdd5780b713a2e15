//! The client against the StreamIn emulator: every status code, limits, refresh, key storage.

use std::sync::Arc;

use chat_model::Secret;
use chrono::NaiveDate;
use emulator::streamin::{Config, DEFAULT_API_KEY, Emulator};
use emulator::{Fault, FaultPlan};
use streamin::{
    ApiStatus, Client, Error, FileKeyStore, Invalid, KeyStore, MemoryKeyStore, NewMessage,
};

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
}

async fn start(config: Config) -> (Emulator, Client) {
    let emu = Emulator::start(config).await.unwrap();
    let client = Client::new(emu.url(), Secret::new(DEFAULT_API_KEY)).unwrap();
    (emu, client)
}

fn assert_api(e: &Error, status: ApiStatus, text: &str) {
    match e {
        Error::Api {
            status: s, message, ..
        } => {
            assert_eq!(*s, status, "{e}");
            assert!(message.contains(text), "server message kept: {e}");
        }
        other => panic!("expected API status {status:?}, got {other}"),
    }
    assert!(!e.to_string().contains(DEFAULT_API_KEY));
    assert!(!format!("{e:?}").contains(DEFAULT_API_KEY));
}

#[tokio::test]
async fn ping_and_send() {
    let (emu, client) = start(Config::default()).await;
    assert_eq!(
        client.ping().await.unwrap(),
        "Pong! You have a valid API key!"
    );
    let info = client
        .new_message(
            &NewMessage::markdown("Deploy **done**, see [log](http://ci.example/1)")
                .with_external_id("message_345185")
                .with_delivery_confirmation(true),
        )
        .await
        .unwrap();
    assert_eq!(info.external_id, "message_345185");
    assert_eq!(
        info.content,
        "Deploy '''done''', see [http://ci.example/1 log]"
    );
    assert!(!info.created_at.is_empty());
    // Sent 0 (= yes, as the text says); the echo is reported as received.
    assert_eq!(info.delivery_confirmation, serde_json::Value::Bool(false));
    let got = emu.committed();
    assert_eq!(got[0].delivery_confirmation, "0");
    assert_eq!(
        got[0].content,
        "Deploy '''done''', see [http://ci.example/1 log]"
    );
    // Without an external id, a timestamp string is sent; without confirmation, 1.
    client
        .new_message(&NewMessage::wiki("''plain''"))
        .await
        .unwrap();
    let got = emu.committed();
    assert!(got[1].external_id.parse::<i64>().unwrap() > 1_600_000_000_000);
    assert_eq!(got[1].delivery_confirmation, "1");
    assert_eq!(got[1].content, "''plain''");
    emu.stop().await;
}

#[tokio::test]
async fn every_status_code_is_typed_with_the_servers_message() {
    let (emu, client) = start(Config::default()).await;
    // 101: a well-formed key the server does not know.
    let other = Client::new(emu.url(), Secret::new("0123456789abcdef0123456789abcdef")).unwrap();
    assert_api(
        &other.ping().await.unwrap_err(),
        ApiStatus::InvalidApiKey,
        "Invalid API key",
    );
    // 0 and 104 through the message content, the rest forced for every request.
    let e = client
        .new_message(&NewMessage::wiki("!status:0"))
        .await
        .unwrap_err();
    assert_api(&e, ApiStatus::RequestFailure, "Request failure");
    assert!(e.is_retryable());
    let e = client
        .new_message(&NewMessage::wiki("!status:104"))
        .await
        .unwrap_err();
    assert_api(
        &e,
        ApiStatus::InvalidCallStructure,
        "Invalid API call structure",
    );
    for (code, status, text) in [
        (102, ApiStatus::NoApiKey, "No API key"),
        (103, ApiStatus::RequestNotSupported, "Request not supported"),
        (105, ApiStatus::UnknownRequest, "Unknown API request"),
        (201, ApiStatus::OverRefreshLimit(201), "Over refresh limit"),
        (
            -201,
            ApiStatus::OverRefreshLimit(-201),
            "Over refresh limit",
        ),
        (999, ApiStatus::Other(999), "Error"),
    ] {
        emu.force_status(Some(code));
        let e = client.ping().await.unwrap_err();
        assert_api(&e, status, text);
        assert!(e.to_string().contains(&code.to_string()), "{e}");
        assert!(!e.is_retryable());
    }
    emu.force_status(None);
    assert!(client.ping().await.is_ok());
    emu.stop().await;
}

#[tokio::test]
async fn limits_are_refused_before_sending() {
    let (emu, client) = start(Config::default()).await;
    let e = client
        .new_message(&NewMessage::wiki("x".repeat(1001)))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Invalid(Invalid::ContentTooLong { chars: 1001 })),
        "{e}"
    );
    // Markdown that grows past the limit when converted is refused too.
    let e = client
        .new_message(&NewMessage::markdown("a'' ".repeat(60)))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Invalid(Invalid::ContentTooLong { .. })),
        "{e}"
    );
    let e = client
        .new_message(&NewMessage::wiki("x").with_external_id("i".repeat(256)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("255"), "{e}");
    assert!(client.new_message(&NewMessage::wiki("")).await.is_err());
    // 1000 multi-byte characters are within the limit.
    client
        .new_message(&NewMessage::wiki("日".repeat(1000)))
        .await
        .unwrap();
    assert_eq!(
        emu.requests(),
        ["new_message"],
        "only the valid one was sent"
    );
    // A malformed key is refused before any request.
    let e = Client::new(emu.url(), Secret::new("not-a-key")).unwrap_err();
    assert!(e.to_string().contains("32"), "{e}");
    assert_eq!(emu.requests().len(), 1);
    emu.stop().await;
}

#[tokio::test]
async fn refresh_once_per_day() {
    let (emu, mut client) = start(Config {
        today: Some(day(30)),
        ..Config::default()
    })
    .await;
    let store = MemoryKeyStore::new();
    let new_key = client.refresh_api_key_on(&store, day(30)).await.unwrap();
    assert_eq!(new_key.expose(), emu.api_key());
    assert_eq!(store.key().unwrap(), new_key);
    assert_eq!(client.api_key(), &new_key);
    client.ping().await.unwrap();
    let sent = emu.requests().len();
    // A second refresh the same day is refused without asking the server.
    let e = client
        .refresh_api_key_on(&store, day(30))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::RefreshLimit { date } if date == day(30)),
        "{e}"
    );
    assert!(e.to_string().contains("2026-11-30"));
    assert_eq!(emu.requests().len(), sent);
    // The next day it works again.
    emu.set_today(day(30).succ_opt().unwrap());
    let newer = client
        .refresh_api_key_on(&store, day(30).succ_opt().unwrap())
        .await
        .unwrap();
    assert_ne!(newer, new_key);
    emu.stop().await;
}

#[tokio::test]
async fn a_server_side_refusal_is_remembered() {
    let (emu, mut client) = start(Config {
        today: Some(day(30)),
        last_refresh: Some(day(30)),
        ..Config::default()
    })
    .await;
    let store = MemoryKeyStore::new();
    let e = client
        .refresh_api_key_on(&store, day(30))
        .await
        .unwrap_err();
    assert_api(&e, ApiStatus::OverRefreshLimit(-201), "Over refresh limit");
    assert_eq!(store.last_refresh().unwrap(), Some(day(30)));
    let sent = emu.requests().len();
    let e = client
        .refresh_api_key_on(&store, day(30))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RefreshLimit { .. }));
    assert_eq!(emu.requests().len(), sent);
    emu.stop().await;
}

#[tokio::test]
async fn refresh_rewrites_the_key_file() {
    let (emu, mut client) = start(Config {
        today: Some(day(30)),
        ..Config::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamin.key");
    std::fs::write(&path, format!("{DEFAULT_API_KEY}\n")).unwrap();
    let store = FileKeyStore::new(&path);
    let key = client.refresh_api_key_on(&store, day(30)).await.unwrap();
    assert_eq!(store.load().unwrap(), key);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", key.expose())
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A new process with the same files also refuses a second refresh today.
    let mut again = Client::new(emu.url(), store.load().unwrap()).unwrap();
    let e = again
        .refresh_api_key_on(&FileKeyStore::new(&path), day(30))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RefreshLimit { .. }), "{e}");
    emu.stop().await;
}

#[tokio::test]
async fn transport_failures_are_clear_and_keyless() {
    let (emu, client) = start(Config {
        faults: Arc::new(FaultPlan::script([
            vec![Fault::Status {
                code: 500,
                retry_after: None,
            }],
            vec![Fault::Malformed],
        ])),
        ..Config::default()
    })
    .await;
    let e = client.ping().await.unwrap_err();
    assert!(matches!(e, Error::Http { status: 500, .. }), "{e}");
    assert!(e.is_retryable());
    assert!(e.to_string().contains("api_key=[redacted]"), "{e}");
    let e = client.ping().await.unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
    assert!(!e.to_string().contains(DEFAULT_API_KEY));
    let url = emu.url();
    emu.stop().await;
    let e = Client::new(url, Secret::new(DEFAULT_API_KEY))
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Network { .. }), "{e}");
    assert!(!e.to_string().contains(DEFAULT_API_KEY), "{e}");
    assert!(!format!("{e:?}").contains(DEFAULT_API_KEY));
}
