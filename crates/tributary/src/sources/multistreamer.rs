//! Supervising the multistreamer client.
//!
//! Defaults honour the document and NOTES.md: multistreamer cannot replay, so the policy is
//! [`Resume::NoReplay`] and the supervisor emits a gap event on every reconnect. The web client
//! reconnects after a fixed 5 s; we back off from 2 s to 60 s with jitter instead. The server
//! pings after 30 s without an incoming frame; the supervisor's stall timeout (45 s by
//! default, `stall_timeout` in the config) replaces a connection silent for longer. The
//! client's own ping schedule follows the effective stall timeout
//! ([`multistreamer::schedule_for_stall_timeout`]: ping after a third of it, at most 15 s; a
//! pong deadline of half of it, at most 10 s), so every pong — a keep-alive — comes before the
//! watchdog fires on a quiet but healthy connection, and a dead one is declared dead inside
//! the timeout. Viewer counts are requested once a minute. The last status snapshot is
//! carried across reconnects, so an unchanged status is not reported again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_model::{Cursor, DisconnectReason, Kind, Service, SourceItem};
use multistreamer::{ConnectOptions, Status};
use supervisor::{Connection, Policy, Resume, Source};

use crate::config_types::{Common, MultistreamerConfig};
use crate::tls::Tls;

/// The supervisor's default stall timeout: above the server's 30 s ping and the client's own
/// ping (15 s) plus pong deadline (10 s).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(45);

/// The first reconnect delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(2);

/// The longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How often the viewer count is requested.
pub const VIEWCOUNT_INTERVAL: Duration = Duration::from_secs(60);

/// A configured multistreamer stream, kept alive by the supervisor.
#[derive(Debug)]
pub struct MultistreamerSource {
    name: String,
    options: ConnectOptions,
    last_status: Arc<Mutex<Option<Status>>>,
}

/// One live multistreamer WebSocket.
#[derive(Debug)]
pub struct MultistreamerConnection {
    conn: multistreamer::Connection,
    last_status: Arc<Mutex<Option<Status>>>,
}

/// The client options a `[[source]]` table describes (also what `tributary send` connects
/// with); the error names the source and what is wrong.
pub fn connect_options(
    name: &str,
    common: &Common,
    cfg: &MultistreamerConfig,
    tls: &mut Tls,
) -> Result<ConnectOptions, String> {
    let mut options = ConnectOptions::new(cfg.url.clone(), cfg.stream, cfg.token.clone());
    options.source = name.to_owned();
    options.keep_raw = common.keep_raw;
    options.viewcount_interval = Some(VIEWCOUNT_INTERVAL);
    // The supervisor applies the same override (`sources::overrides`) to the policy.
    options.fit_stall_timeout(effective_stall_timeout(common));
    options
        .endpoint()
        .map_err(|e| format!("source `{name}`: {e}"))?;
    if let Some(path) = &common.ca_file {
        let config = tls
            .rustls_config(Some(path))
            .map_err(|e| format!("source `{name}`: {e}"))?;
        options.tls = Some(config);
    }
    Ok(options)
}

/// The stall timeout the supervisor enforces on this source: the config's `stall_timeout`,
/// else [`STALL_TIMEOUT`].
pub fn effective_stall_timeout(common: &Common) -> Duration {
    common.stall_timeout.unwrap_or(STALL_TIMEOUT)
}

/// Builds the source from its config table; the error names what is wrong.
pub fn build(
    name: &str,
    common: &Common,
    cfg: &MultistreamerConfig,
    tls: &mut Tls,
) -> Result<MultistreamerSource, String> {
    Ok(MultistreamerSource {
        name: name.to_owned(),
        options: connect_options(name, common, cfg, tls)?,
        last_status: Arc::default(),
    })
}

/// `multistreamer <ws URL without its query> stream <id>`: what a source reads, never the token.
fn identity_of(options: &ConnectOptions) -> String {
    let url = match options.endpoint() {
        Ok(mut url) => {
            url.set_query(None);
            url.to_string()
        }
        // `build` refuses such a URL; keep the identity token-free all the same.
        Err(_) => chat_model::redact_url(&options.url),
    };
    format!("multistreamer {url} stream {}", options.stream)
}

impl MultistreamerSource {
    /// The latest status snapshot any connection of this source reported.
    pub fn last_status(&self) -> Option<Status> {
        chat_model::lock_ignoring_poison(&self.last_status).clone()
    }
}

impl Source for MultistreamerSource {
    type Connection = MultistreamerConnection;

    fn name(&self) -> &str {
        &self.name
    }

    fn service(&self) -> Service {
        Service::Multistreamer
    }

    /// The service, the WebSocket URL without the token, and the stream id.
    fn identity(&self) -> String {
        identity_of(&self.options)
    }

    fn policy(&self) -> Policy {
        super::policy(
            BACKOFF_INITIAL,
            BACKOFF_MAX,
            STALL_TIMEOUT,
            Resume::NoReplay,
        )
    }

    async fn connect(
        &mut self,
        _resume: Option<Cursor>,
    ) -> Result<MultistreamerConnection, DisconnectReason> {
        // No replay exists: a cursor would have nothing to resume from.
        let mut options = self.options.clone();
        options.known_status = self.last_status();
        let conn = multistreamer::connect(&options).await?;
        Ok(MultistreamerConnection {
            conn,
            last_status: Arc::clone(&self.last_status),
        })
    }
}

impl Connection for MultistreamerConnection {
    async fn next_item(&mut self) -> Result<SourceItem, DisconnectReason> {
        let item = self.conn.next_item().await?;
        if matches!(&item, SourceItem::Event { event, .. } if event.kind == Kind::Status) {
            *chat_model::lock_ignoring_poison(&self.last_status) = self.conn.status().cloned();
        }
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::{Disposition, Secret};
    use emulator::multistreamer::{Config, Emulator};

    fn cfg(url: &str, token: &str) -> MultistreamerConfig {
        MultistreamerConfig {
            token: Secret::new(token),
            url: url.to_owned(),
            stream: 21,
        }
    }

    /// An emulator with no generated traffic or periodic status.
    async fn quiet_emulator() -> Emulator {
        Emulator::start(Config {
            rate: 0.0,
            status_every: None,
            ..Config::default()
        })
        .await
        .unwrap()
    }

    async fn next_event(conn: &mut MultistreamerConnection) -> chat_model::Event {
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if let SourceItem::Event { event, .. } = conn.next_item().await.unwrap() {
                    return event;
                }
            }
        })
        .await
        .expect("an event in time")
    }

    #[test]
    fn policy_defaults_follow_the_documents() {
        let s = build(
            "live",
            &Common::default(),
            &cfg("wss://ms.example.com", "t"),
            &mut Tls::default(),
        )
        .unwrap();
        let p = s.policy();
        assert_eq!(p.resume, Resume::NoReplay, "multistreamer cannot replay");
        assert!(
            p.stall_timeout > Duration::from_secs(30),
            "above the server's 30 s ping"
        );
        assert!(
            p.stall_timeout
                > multistreamer::DEFAULT_PING_INTERVAL + multistreamer::DEFAULT_PONG_TIMEOUT
        );
        assert_eq!(p.backoff.initial, BACKOFF_INITIAL);
        assert_eq!(p.backoff.max, BACKOFF_MAX);
        assert!(p.validate().is_ok());
        assert_eq!(s.name(), "live");
        assert_eq!(s.service(), Service::Multistreamer);
        assert_eq!(s.options.source, "live");
        assert_eq!(s.options.viewcount_interval, Some(VIEWCOUNT_INTERVAL));
        assert!(!format!("{s:?}").contains("sekrit"));
    }

    #[test]
    fn the_ping_schedule_follows_the_effective_stall_timeout() {
        let default = build(
            "live",
            &Common::default(),
            &cfg("wss://h", "t"),
            &mut Tls::default(),
        )
        .unwrap();
        assert_eq!(
            (default.options.ping_interval, default.options.pong_timeout),
            (
                multistreamer::DEFAULT_PING_INTERVAL,
                multistreamer::DEFAULT_PONG_TIMEOUT
            )
        );
        for secs in [1, 3, 10, 45, 600] {
            let stall = Duration::from_secs(secs);
            let common = Common {
                stall_timeout: Some(stall),
                ..Common::default()
            };
            let s = build("live", &common, &cfg("wss://h", "t"), &mut Tls::default()).unwrap();
            // What the supervisor will enforce on this source.
            let enforced = s
                .policy()
                .with_overrides(&super::super::overrides(&common))
                .stall_timeout;
            assert_eq!(enforced, stall);
            assert_eq!(effective_stall_timeout(&common), stall);
            let (ping, pong) = (s.options.ping_interval, s.options.pong_timeout);
            assert!(ping <= stall / 3, "{secs}s: ping after {ping:?}");
            assert!(ping + pong < enforced, "{secs}s: {ping:?} + {pong:?}");
        }
    }

    #[test]
    fn identity_names_service_url_and_stream_but_never_the_token() {
        let a = build(
            "live",
            &Common::default(),
            &cfg("https://ms.example.com/x/", "sekrit"),
            &mut Tls::default(),
        )
        .unwrap();
        assert_eq!(
            a.identity(),
            "multistreamer wss://ms.example.com/x/ws/21 stream 21"
        );
        let other_token = build(
            "live",
            &Common::default(),
            &cfg("wss://ms.example.com/x", "t2"),
            &mut Tls::default(),
        )
        .unwrap();
        assert_eq!(
            a.identity(),
            other_token.identity(),
            "the token is not part of it"
        );
        let mut other_stream = cfg("wss://ms.example.com/x", "sekrit");
        other_stream.stream = 22;
        let b = build(
            "live",
            &Common::default(),
            &other_stream,
            &mut Tls::default(),
        )
        .unwrap();
        assert_ne!(a.identity(), b.identity());
        let c = build(
            "live",
            &Common::default(),
            &cfg("wss://other.example.com/x", "sekrit"),
            &mut Tls::default(),
        )
        .unwrap();
        assert_ne!(a.identity(), c.identity());
        assert!(!a.identity().contains("sekrit"));
    }

    #[test]
    fn config_errors_are_clear_and_redacted() {
        let e = build(
            "live",
            &Common::default(),
            &cfg("ftp://h", "sekrit-token"),
            &mut Tls::default(),
        )
        .unwrap_err();
        assert!(
            e.contains("source `live`") && e.contains("not ws or wss"),
            "{e}"
        );
        assert!(!e.contains("sekrit-token"));
        let common = Common {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Common::default()
        };
        let e = build("live", &common, &cfg("wss://h", "t"), &mut Tls::default()).unwrap_err();
        assert!(
            e.contains("source `live`") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn connects_and_carries_the_status_across_reconnects() {
        let emu = quiet_emulator().await;
        let mut source = build(
            "live",
            &Common::default(),
            &cfg(&emu.url(), emu.token()),
            &mut Tls::default(),
        )
        .unwrap();
        let mut conn = source.connect(None).await.unwrap();
        let e = next_event(&mut conn).await;
        assert_eq!(e.kind, Kind::Status);
        assert_eq!(e.source, "live");
        assert!(source.last_status().is_some());
        drop(conn);
        // Reconnect: the unchanged status is not reported again, chat flows.
        let mut conn = source.connect(None).await.unwrap();
        emu.inject_chat(false, 14, serde_json::json!("1"), "Ada", None, "hi again");
        let e = next_event(&mut conn).await;
        assert_eq!(e.kind, Kind::Message, "{e:?}");
        assert_eq!(e.text, "hi again");
        emu.stop().await;
    }

    #[tokio::test]
    async fn a_bad_token_is_fatal() {
        let emu = quiet_emulator().await;
        let mut source = build(
            "live",
            &Common::default(),
            &cfg(&emu.url(), "nope-nope"),
            &mut Tls::default(),
        )
        .unwrap();
        let e = source.connect(None).await.unwrap_err();
        assert_eq!(e.disposition(), Disposition::Fatal);
        assert!(e.to_string().contains("stream 21"), "{e}");
        assert!(!e.to_string().contains("nope-nope"), "{e}");
        emu.stop().await;
    }
}
