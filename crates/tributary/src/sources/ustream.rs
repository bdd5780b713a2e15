//! Supervising the ustream client.
//!
//! The Social Stream is polled, not streamed: a "connection" is a [`ustream::Client`] that
//! polls on the document's drift-free schedule and ends at the first failed poll (with the
//! server's `Retry-After`, if any); the supervisor retries with backoff. Its cursor (host, last
//! range end, schedule anchor, ignore list, recent ids) lets a reconnect ask for one widened
//! timeslice from the last range end, so nothing in between is lost: [`Resume::Replays`]. The
//! stall timeout follows the refresh interval (the client announces it with
//! `SourceItem::StallTimeout` on its first response and whenever the interval changes).

use std::time::Duration;

use chat_model::{Cursor, DisconnectReason, Service, SourceItem};
use supervisor::{Connection, Policy, Resume, Source};
use ustream::{Client, Config, DEFAULT_BASE_URL, HttpClient, MessageMemory, UstreamCursor};

use crate::config_types::{Common, UstreamConfig};
use crate::tls::Tls;

/// The first reconnect delay after a failed poll (the client retries nothing itself).
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);

/// A connection up this long (polls succeeded meanwhile: any failure ends it) resets the
/// backoff, so failures separated by successful polls do not add up to long delays.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// The longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A configured Ustream channel, kept alive by the supervisor.
#[derive(Debug)]
pub struct UstreamSource {
    name: String,
    config: Config,
    http: HttpClient,
    /// The recent messages per user, shared by every client of this source so an `ignUser`
    /// after a reconnect still retracts the messages delivered before it.
    memory: MessageMemory,
}

/// One running client.
#[derive(Debug)]
pub struct UstreamConnection {
    client: Client,
}

/// Builds the source from its config table; the error names what is wrong.
pub fn build(
    name: &str,
    common: &Common,
    cfg: &UstreamConfig,
    tls: &mut Tls,
) -> Result<UstreamSource, String> {
    let url = common
        .url
        .clone()
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    let mut config = Config::new(url, cfg.channel.to_string());
    config.source = name.to_owned();
    // `Event.raw` only when asked for (`--raw`): a copy of the JSON tree per event.
    config.keep_raw = common.keep_raw;
    let http = super::http_client(name, common, tls)?;
    // Check the URL and channel now, so a bad config fails before anything runs.
    Client::with_http_client(config.clone(), http.clone(), None)
        .map_err(|e| format!("source `{name}`: {e}"))?;
    Ok(UstreamSource {
        name: name.to_owned(),
        config,
        http,
        memory: MessageMemory::new(),
    })
}

#[cfg(test)]
impl UstreamSource {
    /// The client settings in use.
    pub fn client_config(&self) -> &Config {
        &self.config
    }
}

impl Source for UstreamSource {
    type Connection = UstreamConnection;

    fn name(&self) -> &str {
        &self.name
    }

    fn service(&self) -> Service {
        Service::Ustream
    }

    fn policy(&self) -> Policy {
        // Until the server names its interval; the client announces the real one.
        let stall_timeout = self.config.stall_timeout(self.config.initial_interval);
        let mut policy =
            super::policy(BACKOFF_INITIAL, BACKOFF_MAX, stall_timeout, Resume::Replays);
        policy.backoff.healthy_after = HEALTHY_AFTER;
        policy
    }

    /// The service, the configured server URL and the channel: a cursor saved for another
    /// server or channel (its host, range and ids) is not reused.
    fn identity(&self) -> String {
        format!(
            "ustream {} channel {}",
            chat_model::redact_url(self.config.base_url.trim_end_matches('/')),
            self.config.channel
        )
    }

    async fn connect(
        &mut self,
        resume: Option<Cursor>,
    ) -> Result<UstreamConnection, DisconnectReason> {
        let cursor: Option<UstreamCursor> =
            super::typed_resume(&self.name, "Ustream", "starting with /default", resume);
        let client = Client::with_http_client(self.config.clone(), self.http.clone(), cursor)?
            .with_memory(self.memory.clone());
        Ok(UstreamConnection { client })
    }
}

impl Connection for UstreamConnection {
    async fn next_item(&mut self) -> Result<SourceItem, DisconnectReason> {
        Ok(self.client.next_item().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(url: &str) -> Common {
        Common {
            url: Some(url.to_owned()),
            ..Common::default()
        }
    }

    #[test]
    fn builds_with_replaying_policy() {
        let s = build(
            "us",
            &common("http://127.0.0.1:1"),
            &UstreamConfig { channel: 42 },
            &mut Tls::default(),
        )
        .unwrap();
        assert_eq!(s.name(), "us");
        assert_eq!(s.service(), Service::Ustream);
        let p = s.policy();
        assert_eq!(p.resume, Resume::Replays);
        assert_eq!(p.backoff.initial, BACKOFF_INITIAL);
        assert_eq!(p.backoff.healthy_after, HEALTHY_AFTER);
        assert!(p.validate().is_ok());
        assert!(p.stall_timeout > Duration::from_secs(20));
        assert_eq!(s.client_config().channel, "42");
        assert_eq!(s.client_config().source, "us");
        let d = build(
            "d",
            &Common::default(),
            &UstreamConfig { channel: 1 },
            &mut Tls::default(),
        )
        .unwrap();
        assert_eq!(d.client_config().base_url, DEFAULT_BASE_URL);
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let e = build(
            "us",
            &common("ftp://x"),
            &UstreamConfig { channel: 1 },
            &mut Tls::default(),
        )
        .unwrap_err();
        assert!(e.contains("source `us`") && e.contains("http"), "{e}");
        let c = Common {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..common("https://x")
        };
        let e = build("us", &c, &UstreamConfig { channel: 1 }, &mut Tls::default()).unwrap_err();
        assert!(e.contains("ca_file /nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("tributary-ustream-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate").unwrap();
        let c = Common {
            ca_file: Some(dir.clone()),
            ..common("https://x")
        };
        let e = build("us", &c, &UstreamConfig { channel: 1 }, &mut Tls::default()).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        assert!(e.contains("ca_file"), "{e}");
    }

    #[test]
    fn identity_names_service_url_and_channel() {
        let a = build(
            "us",
            &common("http://127.0.0.1:9/"),
            &UstreamConfig { channel: 7 },
            &mut Tls::default(),
        )
        .unwrap();
        assert_eq!(a.identity(), "ustream http://127.0.0.1:9 channel 7");
        let b = build(
            "us",
            &common("http://127.0.0.1:9"),
            &UstreamConfig { channel: 8 },
            &mut Tls::default(),
        )
        .unwrap();
        assert_ne!(a.identity(), b.identity());
        let c = build(
            "us",
            &common("http://127.0.0.1:10"),
            &UstreamConfig { channel: 7 },
            &mut Tls::default(),
        )
        .unwrap();
        assert_ne!(a.identity(), c.identity());
        // The source name is no part of it.
        let d = build(
            "other",
            &common("http://127.0.0.1:9"),
            &UstreamConfig { channel: 7 },
            &mut Tls::default(),
        )
        .unwrap();
        assert_eq!(a.identity(), d.identity());
        let real = build(
            "us",
            &Common::default(),
            &UstreamConfig { channel: 7 },
            &mut Tls::default(),
        )
        .unwrap();
        assert_eq!(
            real.identity(),
            format!("ustream {DEFAULT_BASE_URL} channel 7")
        );
    }

    /// Pulls items from `conn` until `done` holds for the items so far (generous deadline).
    async fn pull_until(
        conn: &mut UstreamConnection,
        items: &mut Vec<SourceItem>,
        done: impl Fn(&[SourceItem]) -> bool,
    ) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done(items) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out: {items:#?}"
            );
            let item = tokio::time::timeout(Duration::from_secs(15), conn.next_item())
                .await
                .expect("an item within 15 s")
                .expect("the client keeps going");
            items.push(item);
        }
    }

    fn events(items: &[SourceItem]) -> Vec<&chat_model::Event> {
        items.iter().filter_map(SourceItem::as_event).collect()
    }

    fn last_cursor(items: &[SourceItem]) -> Option<Cursor> {
        items.iter().rev().find_map(|i| match i {
            SourceItem::Cursor(c) => Some(c.clone()),
            _ => None,
        })
    }

    /// Every client of a source shares one memory of recent messages per user: an `ignUser`
    /// that arrives after a reconnect retracts the messages delivered before it, and the
    /// user stays ignored on the next reconnect.
    #[tokio::test]
    async fn reconnects_share_the_memory_an_ignore_retracts_from() {
        use chat_model::Kind;
        let emu = emulator::ustream::Emulator::start(emulator::ustream::Config {
            rate: 0.0,
            lag_secs: 1,
            refresh_intervals: vec![1],
            interval_every: 0,
            ..emulator::ustream::Config::default()
        })
        .await
        .unwrap();
        let mut s = build(
            "us",
            &common(&emu.url()),
            &UstreamConfig {
                channel: emu.channel(),
            },
            &mut Tls::default(),
        )
        .unwrap();
        let ken = emu.inject_message("twitter", "Ken", "before the reconnect");
        let ken_id = format!("ustream:{}:{ken}", emu.channel());
        let ada = emu.inject_message("twitter", "Ada", "not Ken");
        let mut items = Vec::new();
        let mut conn = s.connect(None).await.unwrap();
        pull_until(&mut conn, &mut items, |i| {
            events(i)
                .iter()
                .any(|e| e.native_id.as_deref() == Some(ada.as_str()))
                && matches!(i.last(), Some(SourceItem::KeepAlive))
        })
        .await;
        drop(conn);

        // Reconnected (a new client, resuming from the cursor), then Ken is ignored.
        let mut conn = s.connect(last_cursor(&items)).await.unwrap();
        emu.ignore_user("twitter", "Ken");
        let from = items.len();
        pull_until(&mut conn, &mut items, |i| {
            events(&i[from..]).iter().any(|e| e.kind == Kind::Ignore)
                && matches!(i.last(), Some(SourceItem::KeepAlive))
        })
        .await;
        let retracted: Vec<&str> = events(&items[from..])
            .iter()
            .filter(|e| e.kind == Kind::Retraction)
            .filter_map(|e| e.refers_to.as_deref())
            .collect();
        assert_eq!(retracted, [ken_id.as_str()], "{:#?}", &items[from..]);
        drop(conn);

        // Ignored still after another reconnect.
        let mut conn = s.connect(last_cursor(&items)).await.unwrap();
        emu.inject_message("twitter", "Ken", "hidden");
        let shown = emu.inject_message("twitter", "Ada", "shown");
        let from = items.len();
        pull_until(&mut conn, &mut items, |i| {
            events(&i[from..])
                .iter()
                .any(|e| e.native_id.as_deref() == Some(shown.as_str()))
        })
        .await;
        let texts: Vec<&str> = events(&items[from..])
            .iter()
            .filter(|e| e.kind == Kind::Message)
            .map(|e| e.text.as_str())
            .collect();
        assert_eq!(texts, ["shown"]);
        emu.stop().await;
    }

    #[tokio::test]
    async fn a_foreign_cursor_is_ignored() {
        let mut s = build(
            "us",
            &common("http://127.0.0.1:1"),
            &UstreamConfig { channel: 7 },
            &mut Tls::default(),
        )
        .unwrap();
        let c = Cursor::from_json(serde_json::json!("not ours"));
        assert!(s.connect(Some(c)).await.is_ok());
        let mine = UstreamCursor::default().to_cursor();
        assert!(s.connect(Some(mine)).await.is_ok());
    }
}
