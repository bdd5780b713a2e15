//! Supervising the campfire client.
//!
//! Defaults honour the document and NOTES.md: "wait a few seconds" before reconnecting
//! (backoff from 3 s, capped at 2 min); a stall timeout of 20 s, well above several of
//! Campfire's ~3 s single-space keep-alives (a 6 s timeout was seen to flap); and lossless
//! resume through `recent.json?since_message_id=` backfill whenever a REST API URL is known.
//! A prompt reconnect (the idle HTTP 400, a clean end of stream) also waits a few seconds,
//! jittered in [`PROMPT_DELAY_MIN`, `PROMPT_DELAY_MAX`]: "Upon unexpected disconnection, API
//! clients should wait for a few seconds before trying to reconnect."

use std::time::Duration;

use campfire::{CampfireCursor, Client, ClientConfig, DEFAULT_STREAMING_URL, LiveStream};
use chat_model::{Cursor, DisconnectReason, Service, SourceItem};
use supervisor::{Connection, Policy, PromptDelay, Resume, Source};

use crate::config_types::{CampfireConfig, Common};
use crate::tls::Tls;

/// Campfire's stall timeout: several keep-alive periods (~3 s each) with a wide margin.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The first reconnect delay ("wait a few seconds").
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(3);

/// The longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(120);

/// The least wait before a prompt reconnect (idle HTTP 400, clean end of stream).
pub const PROMPT_DELAY_MIN: Duration = Duration::from_secs(2);

/// The longest wait before a prompt reconnect.
pub const PROMPT_DELAY_MAX: Duration = Duration::from_secs(3);

/// A configured Campfire room, kept alive by the supervisor.
#[derive(Debug)]
pub struct CampfireSource {
    name: String,
    client: Client,
}

/// One live Campfire stream.
#[derive(Debug)]
pub struct CampfireConnection {
    stream: LiveStream,
}

/// Builds the source from its config table; the error names what is wrong.
pub fn build(
    name: &str,
    common: &Common,
    cfg: &CampfireConfig,
    tls: &mut Tls,
) -> Result<CampfireSource, String> {
    let mut c = ClientConfig::new(cfg.token.clone(), cfg.room);
    c.source = name.to_owned();
    c.url = common
        .url
        .clone()
        .unwrap_or_else(|| DEFAULT_STREAMING_URL.to_owned());
    c.api_url = cfg.api_url.clone();
    c.join = cfg.join;
    // Liveness is the supervisor's watchdog (stall_timeout), not the client's.
    c.idle_timeout = None;
    // `Event.raw` only when asked for (`--raw`): building it costs a JSON tree per event.
    c.keep_raw = common.keep_raw;
    let http = super::http_client(name, common, tls)?;
    let client = Client::with_http_client(c, http).map_err(|e| format!("source `{name}`: {e}"))?;
    Ok(CampfireSource {
        name: name.to_owned(),
        client,
    })
}

impl Source for CampfireSource {
    type Connection = CampfireConnection;

    fn name(&self) -> &str {
        &self.name
    }

    fn service(&self) -> Service {
        Service::Campfire
    }

    fn policy(&self) -> Policy {
        let resume = if self.client.can_backfill() {
            Resume::Replays
        } else {
            Resume::NoReplay
        };
        Policy {
            prompt_delay: PromptDelay {
                min: PROMPT_DELAY_MIN,
                max: PROMPT_DELAY_MAX,
            },
            ..super::policy(BACKOFF_INITIAL, BACKOFF_MAX, STALL_TIMEOUT, resume)
        }
    }

    /// The service, the streaming URL and the room: a cursor saved for another server or
    /// room is not reused.
    fn identity(&self) -> String {
        let c = self.client.config();
        format!(
            "campfire {} room {}",
            chat_model::redact_url(c.url.trim_end_matches('/')),
            c.room
        )
    }

    async fn connect(
        &mut self,
        resume: Option<Cursor>,
    ) -> Result<CampfireConnection, DisconnectReason> {
        let cursor: Option<CampfireCursor> =
            super::typed_resume(&self.name, "Campfire", "starting from now", resume);
        let stream = self.client.connect(cursor).await?;
        Ok(CampfireConnection { stream })
    }
}

impl Connection for CampfireConnection {
    async fn next_item(&mut self) -> Result<SourceItem, DisconnectReason> {
        self.stream.next_item().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Secret;
    use emulator::campfire::{Config, DEFAULT_ROOM, DEFAULT_TOKEN, Emulator};

    fn cfg(token: &str) -> CampfireConfig {
        CampfireConfig {
            token: Secret::new(token),
            room: DEFAULT_ROOM,
            api_url: None,
            join: false,
        }
    }

    #[test]
    fn policy_defaults_follow_the_documents() {
        let real = build("ops", &Common::default(), &cfg("t"), &mut Tls::default()).unwrap();
        let p = real.policy();
        assert_eq!(p.stall_timeout, STALL_TIMEOUT);
        assert!(p.stall_timeout >= Duration::from_secs(3 * 5));
        assert_eq!(p.backoff.initial, BACKOFF_INITIAL);
        assert_eq!(p.backoff.max, BACKOFF_MAX);
        // The real streaming host has no REST API: without api_url nothing can be backfilled.
        assert_eq!(p.resume, Resume::NoReplay);
        assert_eq!(real.name(), "ops");
        assert_eq!(real.service(), Service::Campfire);

        let mut with_api = cfg("t");
        with_api.api_url = Some("https://acme.campfirenow.com".into());
        let p = build("ops", &Common::default(), &with_api, &mut Tls::default())
            .unwrap()
            .policy();
        assert_eq!(p.resume, Resume::Replays);

        let common = Common {
            url: Some("http://127.0.0.1:9".into()),
            ..Common::default()
        };
        let p = build("ops", &common, &cfg("t"), &mut Tls::default())
            .unwrap()
            .policy();
        assert_eq!(p.resume, Resume::Replays);
    }

    #[test]
    fn prompt_reconnects_wait_a_few_seconds() {
        use supervisor::{Action, MachineConfig, SourceMachine};
        let p = build("ops", &Common::default(), &cfg("t"), &mut Tls::default())
            .unwrap()
            .policy();
        assert_eq!(p.prompt_delay.min, Duration::from_secs(2));
        assert_eq!(p.prompt_delay.max, Duration::from_secs(3));
        // Through the supervisor's rule, for many seeds: the idle 400 at connect and a clean
        // end after a while both wait 2-3 s, never more than 4 s.
        for seed in 0..200 {
            let mut m = SourceMachine::new(
                "ops",
                Service::Campfire,
                p.clone(),
                MachineConfig {
                    seed,
                    ..MachineConfig::default()
                },
            );
            let (t0, wall) = (std::time::Instant::now(), chrono::Utc::now());
            m.start(t0, wall);
            while m.poll_action().is_some() {}
            let idle = campfire::Error::Status {
                room: 1,
                endpoint: campfire::Endpoint::Live,
                status: 400,
                retry_after: None,
                body: String::new(),
            };
            m.on_disconnect(t0, wall, idle.into());
            let at = m.poll_timeout().unwrap();
            let wait = at - t0;
            assert!(
                wait >= Duration::from_secs(2) && wait <= Duration::from_secs(3),
                "{wait:?}"
            );
            m.handle_timeout(at, wall);
            let actions: Vec<Action> = std::iter::from_fn(|| m.poll_action()).collect();
            assert!(
                matches!(actions.last(), Some(Action::Connect { .. })),
                "{actions:?}"
            );
            m.on_connected(at, wall);
            let end = at + Duration::from_secs(5);
            m.on_disconnect(end, wall, DisconnectReason::EndOfStream);
            let wait = m.poll_timeout().unwrap() - end;
            assert!(
                wait >= Duration::from_secs(2) && wait <= Duration::from_secs(3),
                "{wait:?}"
            );
        }
    }

    #[test]
    fn identity_names_service_url_and_room() {
        let common = Common {
            url: Some("http://127.0.0.1:9/".into()),
            ..Common::default()
        };
        let a = build("ops", &common, &cfg("t"), &mut Tls::default()).unwrap();
        assert_eq!(
            a.identity(),
            format!("campfire http://127.0.0.1:9 room {DEFAULT_ROOM}")
        );
        let mut other_room = cfg("t");
        other_room.room = 7;
        let b = build("ops", &common, &other_room, &mut Tls::default()).unwrap();
        assert_ne!(a.identity(), b.identity());
        let other_host = Common {
            url: Some("http://127.0.0.1:10".into()),
            ..Common::default()
        };
        let c = build("ops", &other_host, &cfg("t"), &mut Tls::default()).unwrap();
        assert_ne!(a.identity(), c.identity());
        // The token is no part of it.
        let d = build("ops", &common, &cfg("another-token"), &mut Tls::default()).unwrap();
        assert_eq!(a.identity(), d.identity());
        let real = build("ops", &Common::default(), &cfg("t"), &mut Tls::default()).unwrap();
        assert_eq!(
            real.identity(),
            format!("campfire https://streaming.campfirenow.com room {DEFAULT_ROOM}")
        );
    }

    #[test]
    fn config_errors_are_clear() {
        let common = Common {
            url: Some("ftp://h".into()),
            ..Common::default()
        };
        let e = build("ops", &common, &cfg("t"), &mut Tls::default()).unwrap_err();
        assert!(e.contains("source `ops`") && e.contains("scheme"), "{e}");

        crate::sources::assert_ca_file_errors(|common| {
            build("ops", common, &cfg("t"), &mut Tls::default())
        });

        let mut joining = cfg("t");
        joining.join = true;
        let e = build("ops", &Common::default(), &joining, &mut Tls::default()).unwrap_err();
        assert!(e.contains("api_url"), "{e}");
    }

    #[tokio::test]
    async fn connects_resumes_and_refuses_bad_tokens() {
        let emu = Emulator::start(Config {
            rate: 0.0,
            keepalive: Duration::from_millis(50),
            ..Config::default()
        })
        .await
        .unwrap();
        let common = Common {
            url: Some(emu.url()),
            ..Common::default()
        };
        let mut source = build("ops", &common, &cfg(DEFAULT_TOKEN), &mut Tls::default()).unwrap();
        let first = emu.inject_text(DEFAULT_ROOM, "before");
        let missed = emu.inject_text(DEFAULT_ROOM, "missed");
        let resume = CampfireCursor {
            last_message_id: first,
        }
        .to_cursor();
        let mut conn = source.connect(Some(resume)).await.unwrap();
        let item = tokio::time::timeout(Duration::from_secs(20), conn.next_item())
            .await
            .unwrap()
            .unwrap();
        match item {
            SourceItem::Event { event, cursor } => {
                assert_eq!(event.id, format!("campfire:{DEFAULT_ROOM}:{missed}"));
                assert_eq!(event.source, "ops");
                let c = CampfireCursor::from_cursor(&cursor.unwrap()).unwrap();
                assert_eq!(c.last_message_id, missed);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(emu.since_message_ids(), vec![Some(first)]);

        // A cursor of another shape is ignored, not fatal.
        let odd = Cursor::from_json(serde_json::json!({"last_event_id": "x"}));
        assert!(source.connect(Some(odd)).await.is_ok());

        let mut bad = build("ops", &common, &cfg("nope"), &mut Tls::default()).unwrap();
        let e = bad.connect(None).await.unwrap_err();
        assert!(e.is_fatal());
        assert!(
            e.to_string().contains(&format!("room {DEFAULT_ROOM}")),
            "{e}"
        );
        emu.stop().await;
    }
}
