//! Supervising the ustream client.
//!
//! The Social Stream is polled, not streamed: a "connection" is a [`ustream::Poller`] that
//! retries failed polls itself (a few times, with backoff) and ends only when retrying does not
//! help. Its cursor (host, last range end, schedule anchor, ignore list, recent ids) lets a
//! reconnect ask for one widened timeslice from the last range end, so nothing in between is
//! lost: [`Resume::Replays`]. The stall timeout follows the refresh interval (the poller
//! announces it with `SourceItem::StallTimeout` whenever the interval changes).

use std::time::Duration;

use chat_model::{Cursor, DisconnectReason, Service, SourceItem};
use supervisor::{Connection, Policy, Resume, Source};
use ustream::{DEFAULT_BASE_URL, HttpClient, Poller, PollerConfig, UstreamCursor};

use crate::config_types::{Common, UstreamConfig};

/// The first reconnect delay after the poller gave up on its own retries.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(2);

/// The longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A configured Ustream channel, kept alive by the supervisor.
#[derive(Debug)]
pub struct UstreamSource {
    name: String,
    config: PollerConfig,
    http: HttpClient,
}

/// One running poller.
#[derive(Debug)]
pub struct UstreamConnection {
    poller: Poller,
}

/// Builds the source from its config table; the error names what is wrong.
pub fn build(name: &str, common: &Common, cfg: &UstreamConfig) -> Result<UstreamSource, String> {
    let url = common
        .url
        .clone()
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    let mut config = PollerConfig::new(url, cfg.channel.to_string());
    config.source = name.to_owned();
    config
        .root_certificates_pem
        .extend(super::read_ca_file(name, common)?);
    let http = config
        .http_client()
        .map_err(|e| format!("source `{name}`: {e}{}", super::ca_file_hint(common)))?;
    // Check the URL and channel now, so a bad config fails before anything runs.
    Poller::with_client(http.clone(), config.clone(), None)
        .map_err(|e| format!("source `{name}`: {e}"))?;
    Ok(UstreamSource {
        name: name.to_owned(),
        config,
        http,
    })
}

#[cfg(test)]
impl UstreamSource {
    /// The poller settings in use.
    pub fn poller_config(&self) -> &PollerConfig {
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
        // Until the server names its interval; the poller announces the real one.
        let stall_timeout = self.config.stall_timeout(self.config.initial_interval);
        super::policy(BACKOFF_INITIAL, BACKOFF_MAX, stall_timeout, Resume::Replays)
    }

    async fn connect(
        &mut self,
        resume: Option<Cursor>,
    ) -> Result<UstreamConnection, DisconnectReason> {
        let cursor: Option<UstreamCursor> =
            super::typed_resume(&self.name, "Ustream", "starting with /default", resume);
        let poller = Poller::with_client(self.http.clone(), self.config.clone(), cursor)?;
        Ok(UstreamConnection { poller })
    }
}

impl Connection for UstreamConnection {
    async fn next_item(&mut self) -> Result<SourceItem, DisconnectReason> {
        Ok(self.poller.next_item().await?)
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
        )
        .unwrap();
        assert_eq!(s.name(), "us");
        assert_eq!(s.service(), Service::Ustream);
        let p = s.policy();
        assert_eq!(p.resume, Resume::Replays);
        assert!(p.stall_timeout > Duration::from_secs(20));
        assert_eq!(s.poller_config().channel, "42");
        assert_eq!(s.poller_config().source, "us");
        let d = build("d", &Common::default(), &UstreamConfig { channel: 1 }).unwrap();
        assert_eq!(d.poller_config().base_url, DEFAULT_BASE_URL);
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let e = build("us", &common("ftp://x"), &UstreamConfig { channel: 1 }).unwrap_err();
        assert!(e.contains("source `us`") && e.contains("http"), "{e}");
        let c = Common {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..common("https://x")
        };
        let e = build("us", &c, &UstreamConfig { channel: 1 }).unwrap_err();
        assert!(e.contains("ca_file /nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("tributary-ustream-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate").unwrap();
        let c = Common {
            ca_file: Some(dir.clone()),
            ..common("https://x")
        };
        let e = build("us", &c, &UstreamConfig { channel: 1 }).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        assert!(e.contains("ca_file"), "{e}");
    }

    #[tokio::test]
    async fn a_foreign_cursor_is_ignored() {
        let mut s = build(
            "us",
            &common("http://127.0.0.1:1"),
            &UstreamConfig { channel: 7 },
        )
        .unwrap();
        let c = Cursor::from_json(serde_json::json!("not ours"));
        assert!(s.connect(Some(c)).await.is_ok());
        let mine = UstreamCursor::default().to_cursor();
        assert!(s.connect(Some(mine)).await.is_ok());
    }
}
