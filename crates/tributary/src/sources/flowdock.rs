//! Supervising the flowdock client.
//!
//! Defaults honour the document and NOTES.md: after an unexpected response "wait a few
//! seconds" — HTTP errors back off 2 s × 2^n up to 120 s, as the known clients did; a stall
//! timeout of 75 s, more than three of the server's ~20 s keep-alives (`\n` on the JSON
//! stream, a comment on Event-Stream) and inside the 60-90 s inactivity timeout a known SSE
//! client used; and lossless resume on both transports — Event-Stream replays after
//! `Last-Event-ID`, the JSON stream is backfilled over REST (`messages?since_id=`).

use std::time::Duration;

use chat_model::{Cursor, DisconnectReason, Service, SourceItem};
use flowdock::{Client, ClientConfig, FlowdockCursor, FlowdockStream, Transport};
use supervisor::{Connection, Policy, Resume, Source};

use crate::config_types::{Common, FlowdockConfig};
use crate::tls::Tls;

/// Flowdock's stall timeout: over three ~20 s keep-alive periods.
pub const STALL_TIMEOUT: Duration = flowdock::DEFAULT_STALL_TIMEOUT;

/// The first reconnect delay after an HTTP error (2 s × 2^n).
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(2);

/// The longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(120);

/// Configured Flowdock flows, kept alive by the supervisor.
#[derive(Debug)]
pub struct FlowdockSource {
    name: String,
    client: Client,
}

/// One live Flowdock stream.
#[derive(Debug)]
pub struct FlowdockConnection {
    stream: FlowdockStream,
}

/// Builds the source from its config table; the error names what is wrong.
pub fn build(
    name: &str,
    common: &Common,
    cfg: &FlowdockConfig,
    tls: &mut Tls,
) -> Result<FlowdockSource, String> {
    let mut c = ClientConfig::new(name, cfg.token.clone(), cfg.flows.clone());
    if let Some(url) = &common.url {
        c.settings.url = url.clone();
    }
    c.settings.api_url = cfg.api_url.clone();
    c.settings.private = cfg.private;
    c.settings.transport = cfg.transport;
    c.settings.active = cfg.active;
    c.settings.keep_raw = common.keep_raw;
    let http = super::http_client(name, common, tls)?;
    let client = Client::with_http_client(c, http).map_err(|e| format!("source `{name}`: {e}"))?;
    Ok(FlowdockSource {
        name: name.to_owned(),
        client,
    })
}

impl Source for FlowdockSource {
    type Connection = FlowdockConnection;

    fn name(&self) -> &str {
        &self.name
    }

    fn service(&self) -> Service {
        Service::Flowdock
    }

    fn policy(&self) -> Policy {
        let cfg = self.client.config();
        // Private messages have no REST backfill here: on the JSON stream a reconnect can
        // miss them, so say so with gap events.
        let lossless = !(cfg.settings.transport == Transport::Json && cfg.settings.private);
        let resume = if lossless {
            Resume::Replays
        } else {
            Resume::NoReplay
        };
        let mut policy = super::policy(BACKOFF_INITIAL, BACKOFF_MAX, STALL_TIMEOUT, resume);
        // 2 s × 2^n, as the known clients did.
        policy.backoff.multiplier = 2.0;
        policy
    }

    /// `flowdock <transport> <stream URL> api <REST URL> flows <org/flow,...> private <bool>`:
    /// a cursor holds per-flow message ids of that server (and its SSE event id), meaningless
    /// for another server, flow set or private stream. The URLs never hold the token.
    fn identity(&self) -> String {
        let cfg = self.client.config();
        let transport = match cfg.settings.transport {
            Transport::EventStream => "sse",
            Transport::Json => "json",
        };
        let mut flows = cfg.settings.flows.clone();
        flows.sort();
        format!(
            "flowdock {transport} {} api {} flows {} private {}",
            chat_model::redact_url(&self.client.stream_url()),
            chat_model::redact_url(self.client.api_url()),
            flows.join(","),
            cfg.settings.private
        )
    }

    async fn connect(
        &mut self,
        resume: Option<Cursor>,
    ) -> Result<FlowdockConnection, DisconnectReason> {
        let cursor: Option<FlowdockCursor> =
            super::typed_resume(&self.name, "Flowdock", "starting from now", resume);
        let stream = self.client.connect(cursor).await?;
        Ok(FlowdockConnection { stream })
    }
}

impl Connection for FlowdockConnection {
    async fn next_item(&mut self) -> Result<SourceItem, DisconnectReason> {
        self.stream.next_item().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Secret;
    use emulator::flowdock::{Config, Emulator};

    fn cfg(token: &str, transport: Transport) -> FlowdockConfig {
        FlowdockConfig {
            token: Secret::new(token),
            flows: vec!["acme/main".into(), "acme/ops".into()],
            private: false,
            transport,
            active: None,
            api_url: None,
        }
    }

    #[test]
    fn policy_defaults_follow_the_documents() {
        let s = build(
            "fd",
            &Common::default(),
            &cfg("t", Transport::EventStream),
            &mut Tls::default(),
        )
        .unwrap();
        let p = s.policy();
        assert_eq!(p.stall_timeout, STALL_TIMEOUT);
        assert!(p.stall_timeout >= 3 * flowdock::KEEPALIVE_PERIOD);
        assert!((Duration::from_secs(60)..=Duration::from_secs(90)).contains(&p.stall_timeout));
        assert_eq!(p.backoff.initial, Duration::from_secs(2));
        assert_eq!(p.backoff.max, Duration::from_secs(120));
        assert_eq!(p.resume, Resume::Replays);
        assert_eq!(s.service(), Service::Flowdock);
        assert_eq!(s.name(), "fd");
        let json = build(
            "fd",
            &Common::default(),
            &cfg("t", Transport::Json),
            &mut Tls::default(),
        )
        .unwrap();
        assert_eq!(json.policy().resume, Resume::Replays);
        let mut private = cfg("t", Transport::Json);
        private.private = true;
        let p = build("fd", &Common::default(), &private, &mut Tls::default())
            .unwrap()
            .policy();
        assert_eq!(p.resume, Resume::NoReplay);
    }

    #[test]
    fn identity_names_service_transport_urls_and_flows() {
        let common = Common {
            url: Some("http://127.0.0.1:9".into()),
            ..Common::default()
        };
        let sse = build(
            "fd",
            &common,
            &cfg("secret-token", Transport::EventStream),
            &mut Tls::default(),
        )
        .unwrap();
        let id = sse.identity();
        assert_eq!(
            id,
            "flowdock sse http://127.0.0.1:9/flows?filter=acme/main,acme/ops api http://127.0.0.1:9/ flows acme/main,acme/ops private false"
        );
        assert!(!id.contains("secret-token"));
        let json = build(
            "fd",
            &common,
            &cfg("t", Transport::Json),
            &mut Tls::default(),
        )
        .unwrap();
        assert_ne!(json.identity(), id, "transport");
        let mut one = cfg("t", Transport::EventStream);
        one.flows.pop();
        assert_ne!(
            build("fd", &common, &one, &mut Tls::default())
                .unwrap()
                .identity(),
            id,
            "flows"
        );
        let mut private = cfg("t", Transport::EventStream);
        private.private = true;
        assert_ne!(
            build("fd", &common, &private, &mut Tls::default())
                .unwrap()
                .identity(),
            id,
            "private"
        );
        let other = Common {
            url: Some("http://127.0.0.1:10".into()),
            ..Common::default()
        };
        let moved = build(
            "fd",
            &other,
            &cfg("t", Transport::EventStream),
            &mut Tls::default(),
        )
        .unwrap();
        assert_ne!(moved.identity(), id, "url");
        // The token is not part of what is read.
        let same = build(
            "fd",
            &common,
            &cfg("other-token", Transport::EventStream),
            &mut Tls::default(),
        )
        .unwrap();
        assert_eq!(same.identity(), id);
    }

    #[test]
    fn config_errors_are_clear() {
        let mut none = cfg("t", Transport::EventStream);
        none.flows.clear();
        let e = build("fd", &Common::default(), &none, &mut Tls::default()).unwrap_err();
        assert!(e.contains("source `fd`") && e.contains("no flows"), "{e}");
        let common = Common {
            url: Some("ftp://h".into()),
            ..Common::default()
        };
        let e = build(
            "fd",
            &common,
            &cfg("t", Transport::EventStream),
            &mut Tls::default(),
        )
        .unwrap_err();
        assert!(e.contains("scheme"), "{e}");
        crate::sources::assert_ca_file_errors(|common| {
            build(
                "fd",
                common,
                &cfg("t", Transport::EventStream),
                &mut Tls::default(),
            )
        });
    }

    #[tokio::test]
    async fn connects_resumes_and_refuses_bad_tokens() {
        let emu = Emulator::start(Config {
            rate: 0.0,
            keepalive: Duration::from_millis(100),
            sse_retry: None,
            ..Config::default()
        })
        .await
        .unwrap();
        let common = Common {
            url: Some(emu.url()),
            ..Common::default()
        };
        let token = Config::default().token;
        let mut source = build(
            "fd",
            &common,
            &cfg(&token, Transport::EventStream),
            &mut Tls::default(),
        )
        .unwrap();
        let first = emu.inject_message("acme/main", "before");
        let missed = emu.inject_message("acme/ops", "missed");
        let resume = FlowdockCursor {
            last_event_id: Some(first.seq.to_string()),
            ..FlowdockCursor::default()
        }
        .to_cursor();
        let mut conn = source.connect(Some(resume)).await.unwrap();
        // The fixed start position (and keep-alives) come first, then the replayed event.
        let item = loop {
            let item = tokio::time::timeout(Duration::from_secs(20), conn.next_item())
                .await
                .unwrap()
                .unwrap();
            if !matches!(item, SourceItem::Cursor(_) | SourceItem::KeepAlive) {
                break item;
            }
        };
        match item {
            SourceItem::Event { event, cursor } => {
                assert_eq!(event.id, missed.event_id);
                assert_eq!(event.source, "fd");
                let c = FlowdockCursor::from_cursor(&cursor.unwrap()).unwrap();
                assert_eq!(c.last_event_id, Some(missed.seq.to_string()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(emu.last_event_ids(), vec![Some(first.seq.to_string())]);

        // A cursor of another shape is ignored, not fatal.
        let odd = Cursor::from_json(serde_json::json!("x"));
        assert!(source.connect(Some(odd)).await.is_ok());

        let mut bad = build(
            "fd",
            &common,
            &cfg("nope", Transport::Json),
            &mut Tls::default(),
        )
        .unwrap();
        let e = bad.connect(None).await.unwrap_err();
        assert!(e.is_fatal());
        assert!(e.to_string().contains("acme/main"), "{e}");
        emu.stop().await;
    }
}
