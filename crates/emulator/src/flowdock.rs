//! The Flowdock emulator: the streaming API (both content types) and the REST messages
//! endpoint used for backfill, on one loopback port.
//!
//! What it serves, following `flowdock-streaming.txt` and NOTES.md:
//! * `GET /flows?filter=org/flow,...&user=1&active=true|idle` and `GET /flows/:org/:flow`;
//!   HTTP basic auth with the token as user (empty password), or the `access_token` query
//!   parameter (the document's browser example). 401 for a bad token, 404 for an unknown flow,
//!   403 for a flow the token may not read, 400 when neither `filter` nor `user` is given.
//! * Content negotiation by the `Accept` header or the `accept` query parameter; the JSON
//!   stream is the default.
//! * JSON stream: one object per frame ended by `\r` (or `\r\n`, [`Config::crlf`]), optionally
//!   pretty-printed with raw newlines inside ([`Config::pretty`]), a `\n` keep-alive every
//!   [`Config::keepalive`].
//! * Event-Stream: `id:` (a stream-wide sequence number) and `data:` per message, a `retry:`
//!   hint at the start when configured, `:` comments as keep-alives; `Last-Event-ID` replays
//!   every stored message after that id (presence, `activity.user`, has no id and is not
//!   stored, so it is never replayed).
//! * CORS on every answer and preflights answered, for the document's browser example.
//! * Message ids (and SSE ids) start from a time-based base, so a restarted emulator never
//!   reissues an id ([`Config::id_base`] plays a server that reset); optional quiet periods
//!   of the traffic ([`Config::quiet`]), keep-alives only.
//! * `GET /flows/:org/:flow/messages?since_id=N&limit=1..100&sort=asc|desc`: stored messages
//!   as a JSON array (newest `limit` first by default, like the real API).
//! * Seeded traffic using the shapes of the real events (message, comment with `influx:`
//!   tag, message-edit, tag-change, file, action, status, activity.user, activity,
//!   discussion, and an undocumented internal type), in several flows, plus private messages.
//! * Faults per stream connection from [`crate::FaultPlan`]: drop after N body bytes
//!   (mid-frame; the bytes before the cut are flushed first), stall with or without
//!   keep-alives, an HTTP status (with `Retry-After`), a malformed or oversize frame before
//!   the next real one, one-byte writes, a delayed answer, and `Refuse` (the response fails
//!   before its first body byte and the connection is dropped). REST requests are not faulted.
//! * Records every committed message ([`Emulator::committed`]) and every request with its
//!   `Last-Event-ID` and `since_id` ([`Emulator::requests`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::FaultPlan;
use crate::body::{BodySender, Writer, channel_body};
use crate::fault::{Fault, lock};
use crate::server::{ServerHandle, bind, serve_router, stopped};
use crate::traffic::{PEOPLE, Traffic};

/// Settings of the Flowdock emulator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (default `127.0.0.1:0`, an ephemeral loopback port).
    pub listen: SocketAddr,
    /// Seed of the generated traffic.
    pub seed: u64,
    /// Generated messages per second over all flows; 0 = none.
    pub rate: f64,
    /// Faults for stream connections (REST requests are not faulted).
    pub faults: Arc<FaultPlan>,
    /// The access token accepted.
    pub token: String,
    /// The user id the token belongs to (private messages are addressed to it).
    pub user_id: String,
    /// Flows that exist and can be read, as `org/flow`.
    pub flows: Vec<String>,
    /// Flows that exist but the token may not read (403).
    pub forbidden_flows: Vec<String>,
    /// Keep-alive period of both transports.
    pub keepalive: Duration,
    /// Use `\r\n` instead of `\r` between JSON stream frames (the document's Ruby example and
    /// the npm `flowdock` client split on `\r\n`).
    pub crlf: bool,
    /// Pretty-print every streamed object: raw newlines between its members on the JSON
    /// stream (the document allows `\n` inside a message, only `\r` ends one), one `data:`
    /// line per line on Event-Stream.
    pub pretty: bool,
    /// Quiet periods of the generated traffic: after every `.0` of traffic, none for `.1`
    /// (keep-alives only), longer than a client's timers when set so.
    pub quiet: Option<(Duration, Duration)>,
    /// The first message id of every flow (and the first SSE event id) is above this. None: a
    /// time-based base (microseconds since the epoch at start), so a restarted emulator never
    /// reissues an id an earlier run gave out. Set a small one to play a server that reset.
    pub id_base: Option<u64>,
    /// Messages name their flow by its id ([`flow_id`]) instead of `org:flow` (the document
    /// lets clients name flows by id too); the stream's `filter` accepts either.
    pub flow_ids: bool,
    /// `retry:` sent at the start of every Event-Stream response, when set.
    pub sse_retry: Option<Duration>,
    /// Stored messages per flow generated before the server starts (REST history).
    pub history: usize,
    /// Share of generated messages that are private messages to [`Config::user_id`].
    pub private_share: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 1,
            rate: 2.0,
            faults: Arc::new(FaultPlan::none()),
            token: "flowdock-token".to_owned(),
            user_id: "1".to_owned(),
            flows: vec!["acme/main".to_owned(), "acme/ops".to_owned()],
            forbidden_flows: vec!["acme/secret".to_owned()],
            keepalive: Duration::from_secs(20),
            crlf: false,
            pretty: false,
            quiet: None,
            id_base: None,
            flow_ids: false,
            sse_retry: Some(Duration::from_secs(2)),
            history: 5,
            private_share: 0.05,
        }
    }
}

/// A message the emulator committed (stored, so replayed and backfilled).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Committed {
    /// The stream-wide sequence number (the SSE `id:`).
    pub seq: u64,
    /// The flow as `org/flow`, or `"private"` for a private message.
    pub flow: String,
    /// The message id (per flow).
    pub id: u64,
    /// The event type.
    pub event: String,
    /// The text (message content, comment text, edit text, file name, ...).
    pub text: String,
    /// The id a client gives it: `flowdock:<flow>:<id>`.
    pub event_id: String,
}

/// One request the emulator received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// The path.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The `Accept` header.
    pub accept: Option<String>,
    /// The `Last-Event-ID` header.
    pub last_event_id: Option<String>,
    /// The `since_id` query parameter (REST).
    pub since_id: Option<u64>,
    /// Whether the token was accepted.
    pub authorized: bool,
    /// Whether the token came in the `access_token` query parameter.
    pub token_in_query: bool,
    /// The status answered.
    pub status: u16,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    /// `org/flow`, or None for a private message.
    flow: Option<String>,
    /// Recipient of a private message.
    to: Option<String>,
    /// Stored messages are replayed and backfilled; presence is not.
    stored: bool,
    id: Option<u64>,
    event: String,
    text: String,
    json: Value,
}

#[derive(Debug, Default)]
struct Log {
    entries: Vec<Entry>,
    seq: u64,
    /// Where every flow's message ids start (the first id is `base + 1`).
    base: u64,
    next_id: HashMap<String, u64>,
    /// Recent chat message ids per flow (targets for comments, edits, tag changes).
    recent: HashMap<String, Vec<(u64, String)>>,
}

#[derive(Debug)]
struct Shared {
    cfg: Config,
    log: Mutex<Log>,
    traffic: Mutex<Traffic>,
    seq_tx: watch::Sender<u64>,
    requests: Mutex<Vec<RequestRecord>>,
    shutdown: watch::Receiver<bool>,
    /// The users API: who exists, who is in which flow, its fault, its requests.
    users: Mutex<Users>,
}

/// A running Flowdock emulator.
#[derive(Debug)]
pub struct Emulator {
    handle: ServerHandle,
    shared: Arc<Shared>,
    generator: Option<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    /// Starts the emulator (and its traffic generator when `rate > 0`).
    pub async fn start(config: Config) -> std::io::Result<Emulator> {
        let listener = bind(config.listen).await?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let base = config.id_base.unwrap_or_else(time_based_id_base);
        let (seq_tx, _) = watch::channel(base);
        let shared = Arc::new(Shared {
            traffic: Mutex::new(Traffic::new(config.seed)),
            cfg: config,
            log: Mutex::new(Log {
                seq: base,
                base,
                ..Log::default()
            }),
            seq_tx,
            requests: Mutex::new(Vec::new()),
            shutdown: shutdown_rx,
            users: Mutex::new(Users::default()),
        });
        lock(&shared.users).seed(&shared.cfg);
        for flow in shared.cfg.flows.clone() {
            for _ in 0..shared.cfg.history {
                let line = lock(&shared.traffic).line();
                let user = user_of(lock(&shared.traffic).person());
                shared.append(
                    Some(&flow),
                    None,
                    "message",
                    json!(line),
                    vec![],
                    Some(user),
                );
            }
        }
        let router = Router::new()
            .route("/flows", get(stream_many))
            .route("/flows/{org}/{flow}", get(stream_one))
            .route("/flows/{org}/{flow}/messages", get(messages))
            .route("/flows/{org}/{flow}/users", get(flow_users))
            .route("/users/{id}", get(one_user))
            .layer(axum::middleware::from_fn(cors))
            .with_state(shared.clone());
        let handle = serve_router(listener, router, shutdown_tx)?;
        let generator = (shared.cfg.rate > 0.0).then(|| tokio::spawn(generate(shared.clone())));
        Ok(Emulator {
            handle,
            shared,
            generator,
        })
    }

    /// The base URL (streaming and REST).
    pub fn url(&self) -> String {
        self.handle.url()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// A `[[source]]` table that connects `tributary run` to this emulator.
    pub fn config_snippet(&self, source_name: &str) -> String {
        let flows = self
            .shared
            .cfg
            .flows
            .iter()
            .map(|f| format!("{f:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "[[source]]\nname = {source_name:?}\nservice = \"flowdock\"\ntoken = {:?}\nurl = {:?}\nflows = [{flows}]\ntransport = \"sse\"\n",
            self.shared.cfg.token,
            self.url()
        )
    }

    /// Every stored message it committed, in order.
    pub fn committed(&self) -> Vec<Committed> {
        lock(&self.shared.log)
            .entries
            .iter()
            .filter(|e| e.stored)
            .map(committed_of)
            .collect()
    }

    /// Commits a chat message to `flow` (`org/flow`) now.
    pub fn inject_message(&self, flow: &str, text: &str) -> Committed {
        self.inject(flow, "message", json!(text), vec![])
    }

    /// Commits a message of any event type to `flow` now (content and tags as given).
    pub fn inject(&self, flow: &str, event: &str, content: Value, tags: Vec<String>) -> Committed {
        let e = self
            .shared
            .append(Some(flow), None, event, content, tags, Some("2".into()));
        e.expect("stored event")
    }

    /// Sends a presence (`activity.user`) event to `flow`; it is not stored.
    pub fn inject_presence(&self, flow: &str, user: &str) {
        self.shared.append(
            Some(flow),
            None,
            "activity.user",
            json!({"last_activity": now_ms(), "typing": false}),
            vec![],
            Some(user.to_owned()),
        );
    }

    /// Commits an integration event on a thread to `flow`: `event` is `"discussion"` (an
    /// external comment, `line` its body) or `"activity"` (`line` in its title).
    pub fn inject_thread_event(&self, flow: &str, event: &str, line: &str) -> Committed {
        self.shared
            .append_thread_event(flow, event, line)
            .expect("stored event")
    }

    /// Commits a private message to the token's user.
    pub fn inject_private(&self, text: &str) -> Committed {
        let to = self.shared.cfg.user_id.clone();
        self.shared
            .append(
                None,
                Some(to),
                "message",
                json!(text),
                vec![],
                Some("7".into()),
            )
            .expect("stored event")
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    /// The `Last-Event-ID` header of every stream request, in order.
    pub fn last_event_ids(&self) -> Vec<Option<String>> {
        self.requests()
            .into_iter()
            .filter(|r| !r.path.ends_with("/messages"))
            .map(|r| r.last_event_id)
            .collect()
    }

    /// The `since_id` of every REST messages request that had one, in order.
    pub fn since_ids(&self) -> Vec<u64> {
        self.requests()
            .into_iter()
            .filter_map(|r| r.since_id)
            .collect()
    }

    /// Stops the traffic generator for good; the server keeps serving what it committed.
    pub fn stop_traffic(&mut self) {
        if let Some(g) = self.generator.take() {
            g.abort();
        }
    }

    /// Stops the server and ends open streams.
    pub async fn stop(mut self) {
        self.stop_traffic();
        self.handle.stop().await;
    }
}

fn committed_of(e: &Entry) -> Committed {
    let flow = e.flow.clone().unwrap_or_else(|| "private".to_owned());
    let id = e.id.unwrap_or(0);
    Committed {
        seq: e.seq,
        event_id: format!("flowdock:{flow}:{id}"),
        flow,
        id,
        event: e.event.clone(),
        text: e.text.clone(),
    }
}

/// The id of flow `org/flow` (stable, shaped like the service's flow ids).
pub fn flow_id(flow: &str) -> String {
    // FNV-1a with two seeds, for 32 hex digits.
    let hash = |seed: u64| {
        flow.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (hash(0xcbf2_9ce4_8422_2325), hash(0x8422_2325_cbf2_9ce4));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Microseconds since the epoch: ids from a later start are above every id of an earlier run
/// (which would need more than a million messages a second to catch up), and still exact in
/// a JavaScript number.
fn time_based_id_base() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0)
}

fn user_of(person: usize) -> String {
    (10 + person).to_string()
}

impl Shared {
    /// Appends an event; returns its record when it is stored.
    fn append(
        &self,
        flow: Option<&str>,
        to: Option<String>,
        event: &str,
        content: Value,
        tags: Vec<String>,
        user: Option<String>,
    ) -> Option<Committed> {
        self.append_with(flow, to, event, content, tags, user, |_| None)
    }

    /// Appends an event that `complete` finishes first (extra fields; it may return the
    /// recorded text): only a complete event is stored and published, so every connection
    /// and every REST answer sees the same object.
    #[allow(clippy::too_many_arguments)]
    fn append_with(
        &self,
        flow: Option<&str>,
        to: Option<String>,
        event: &str,
        content: Value,
        tags: Vec<String>,
        user: Option<String>,
        complete: impl FnOnce(&mut Value) -> Option<String>,
    ) -> Option<Committed> {
        let stored = event != "activity.user";
        let mut log = lock(&self.log);
        log.seq += 1;
        let seq = log.seq;
        let key = flow.unwrap_or("private").to_owned();
        let id = stored.then(|| {
            let base = log.base;
            let next = log.next_id.entry(key.clone()).or_insert(base);
            *next += 1;
            *next
        });
        let text = match (&content, event) {
            (Value::String(s), _) => s.clone(),
            (c, "comment") => c["text"].as_str().unwrap_or_default().to_owned(),
            (c, "message-edit") => c["updated_content"].as_str().unwrap_or_default().to_owned(),
            (c, "file") => c["file_name"].as_str().unwrap_or_default().to_owned(),
            (c, _) => c.to_string(),
        };
        let mut obj = json!({
            "event": event,
            "content": content,
            "tags": tags,
            "sent": now_ms(),
            "attachments": [],
            "app": "chat",
            "user": user.unwrap_or_else(|| "0".to_owned()),
        });
        if let Some(id) = id {
            obj["id"] = json!(id);
            obj["uuid"] = json!(format!("emu{seq:013}"));
        }
        if let Some(flow) = flow {
            // The stream's own form of the flow reference: `org:flow`, or the flow's id.
            obj["flow"] = if self.cfg.flow_ids {
                json!(flow_id(flow))
            } else {
                json!(flow.replacen('/', ":", 1))
            };
        }
        if let Some(to) = &to {
            obj["to"] = json!(to);
        }
        if event == "file" {
            obj["attachments"] = json!([obj["content"].clone()]);
            obj["tags"] = json!([":file"]);
        }
        if event == "message" && flow.is_some() {
            if let Some(id) = id {
                log.recent
                    .entry(key.clone())
                    .or_default()
                    .push((id, text.clone()));
                let r = log.recent.get_mut(&key).expect("just inserted");
                if r.len() > 20 {
                    r.remove(0);
                }
            }
        }
        let text = complete(&mut obj).unwrap_or(text);
        let entry = Entry {
            seq,
            flow: flow.map(str::to_owned),
            to,
            stored,
            id,
            event: event.to_owned(),
            text,
            json: obj,
        };
        let rec = stored.then(|| committed_of(&entry));
        log.entries.push(entry);
        drop(log);
        self.seq_tx.send_replace(seq);
        rec
    }

    /// Generates one realistic event.
    fn generate_one(&self) {
        let (flow_idx, kind, person, line, private, extra) = {
            let mut t = lock(&self.traffic);
            let flow_idx = t.pick(self.cfg.flows.len());
            let private = t.chance(self.cfg.private_share);
            (
                flow_idx,
                t.pick(100),
                t.person(),
                t.line(),
                private,
                t.pick(1000),
            )
        };
        let user = user_of(person);
        if private || self.cfg.flows.is_empty() {
            let to = self.cfg.user_id.clone();
            self.append(None, Some(to), "message", json!(line), vec![], Some(user));
            return;
        }
        let flow = self.cfg.flows[flow_idx].clone();
        let target = {
            let log = lock(&self.log);
            log.recent
                .get(&flow)
                .and_then(|r| r.get(extra % r.len().max(1)).cloned())
        };
        let f = Some(flow.as_str());
        let u = Some(user.clone());
        match (kind, target) {
            (0..=54, _) | (55..=77, None) => {
                self.append(f, None, "message", json!(line), vec![], u);
            }
            (55..=64, Some((id, title))) => {
                self.append(
                    f,
                    None,
                    "comment",
                    json!({"title": title, "text": line}),
                    vec![format!("influx:{id}")],
                    u,
                );
            }
            (65..=69, Some((id, _))) => {
                self.append(
                    f,
                    None,
                    "message-edit",
                    json!({"message": id, "updated_content": format!("{line} (edited)")}),
                    vec![],
                    u,
                );
            }
            (70..=73, Some((id, _))) => {
                self.append(
                    f,
                    None,
                    "tag-change",
                    json!({"message": id, "add": ["#deploy"], "remove": []}),
                    vec![],
                    u,
                );
            }
            (74..=77, Some(_)) => {
                let name = format!("report-{extra}.txt");
                self.append(
                    f,
                    None,
                    "file",
                    json!({"content_type": "text/plain", "file_name": name, "file_size": 100 + extra,
                           "path": format!("/flows/{flow}/files/emu{extra}/{name}")}),
                    vec![],
                    u,
                );
            }
            (78..=82, _) => {
                let content = match extra % 4 {
                    0 => json!({"type": "join"}),
                    1 => json!({"type": "add_people", "message": [PEOPLE[extra % PEOPLE.len()]]}),
                    2 => json!({"type": "invite", "email": "new.person@example.com"}),
                    _ => {
                        json!({"type": "add_rss_feed", "url": "https://status.example.com/feed.rss"})
                    }
                };
                self.append(f, None, "action", content, vec![], u);
            }
            (83..=85, _) => {
                self.append(f, None, "status", json!("in a meeting"), vec![], u);
            }
            (86..=92, _) => {
                self.append(
                    f,
                    None,
                    "activity.user",
                    json!({"last_activity": now_ms(), "typing": extra % 2 == 0}),
                    vec![],
                    u,
                );
            }
            (93..=95, _) => {
                self.append_thread_event(&flow, "discussion", &line);
            }
            (96..=97, _) => {
                self.append_thread_event(&flow, "activity", &line);
            }
            _ => {
                self.append(f, None, "backend.user.block", json!(user), vec![], u);
            }
        }
    }

    /// An integration `activity` or `discussion` event on a thread (shape of the fixtures),
    /// published only once complete (author, title, body and thread filled in).
    fn append_thread_event(&self, flow: &str, event: &str, line: &str) -> Option<Committed> {
        let thread_id = format!("emuThread{}", flow.len());
        let initial = {
            let log = lock(&self.log);
            let base = log.base;
            log.recent
                .get(flow)
                .and_then(|r| r.first().map(|(id, _)| *id))
                .unwrap_or(base + 1)
        };
        let title = if event == "discussion" {
            "commented on ticket".to_owned()
        } else {
            format!("Updated <a href=\"https://ci.example.com/\">{line}</a>")
        };
        let discussion = event == "discussion";
        self.append_with(
            Some(flow),
            None,
            event,
            Value::Null,
            vec![],
            Some("0".into()),
            |obj| {
                obj["thread_id"] = json!(thread_id);
                obj["app"] = json!("influx");
                obj["title"] = json!(title);
                obj["author"] = json!({"name": "CI Bot"});
                obj["body"] = if discussion { json!(line) } else { Value::Null };
                obj["thread"] = json!({
                    "id": thread_id, "title": "Build pipeline", "initial_message": initial,
                    "body": "", "status": null, "fields": [], "actions": [],
                });
                Some(if discussion {
                    line.to_owned()
                } else {
                    title.clone()
                })
            },
        )
    }

    fn record(&self, r: RequestRecord) {
        lock(&self.requests).push(r);
    }
}

async fn generate(shared: Arc<Shared>) {
    let period = Duration::from_secs_f64(1.0 / shared.cfg.rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let started = Instant::now();
    let mut stop = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !in_quiet_period(shared.cfg.quiet, started.elapsed()) {
                    shared.generate_one();
                }
            }
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Whether `elapsed` since the start falls in a quiet period of `quiet` (traffic, then
/// silence, repeating).
fn in_quiet_period(quiet: Option<(Duration, Duration)>, elapsed: Duration) -> bool {
    let Some((busy, silent)) = quiet else {
        return false;
    };
    let cycle = (busy + silent).as_nanos().max(1);
    elapsed.as_nanos() % cycle >= busy.as_nanos()
}

/// CORS, so the document's browser `EventSource` example works from a page of another
/// origin: every answer allows the asking origin (any, when none is named), and a preflight
/// (`OPTIONS`, which a browser sends before `Last-Event-ID` or `Authorization` headers) is
/// answered with what the API accepts.
async fn cors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut r = if req.method() == axum::http::Method::OPTIONS {
        let asked = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static(
                "authorization, accept, last-event-id, cache-control",
            ));
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, OPTIONS"),
        );
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = r.headers_mut();
    match origin {
        Some(o) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            h.append(header::VARY, HeaderValue::from_static("origin"));
        }
        None => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    r
}

/// Checks basic auth (token as user) or the `access_token` parameter.
fn authorize(shared: &Shared, headers: &HeaderMap, q: &HashMap<String, String>) -> (bool, bool) {
    if let Some(t) = q.get("access_token") {
        return (t == &shared.cfg.token, true);
    }
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .map(|userpass| {
            let user = userpass
                .split_once(':')
                .map_or(userpass.as_str(), |(u, _)| u);
            user == shared.cfg.token
        })
        .unwrap_or(false);
    (ok, false)
}

fn error(status: StatusCode, message: &str) -> Response {
    let mut r = (status, axum::Json(json!({"message": message}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Flowdock\""),
        );
    }
    r
}

/// Checks one flow reference; the error response when it cannot be read.
fn check_flow(shared: &Shared, flow: &str) -> Result<String, (StatusCode, String)> {
    let flow = if flow.contains('/') {
        flow.to_owned()
    } else if let Some(named) = shared.cfg.flows.iter().find(|f| flow_id(f) == flow) {
        named.clone()
    } else {
        flow.replacen(':', "/", 1)
    };
    if shared.cfg.forbidden_flows.contains(&flow) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("You don't have access to flow {flow}"),
        ));
    }
    if !shared.cfg.flows.contains(&flow) {
        return Err((StatusCode::NOT_FOUND, format!("Flow {flow} not found")));
    }
    Ok(flow)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Json,
    Sse,
}

async fn stream_many(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let filter: Vec<String> = q
        .get("filter")
        .map(|f| {
            f.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let private = q.get("user").map(String::as_str) == Some("1");
    stream(shared, filter, private, q, headers, uri).await
}

async fn stream_one(
    State(shared): State<Arc<Shared>>,
    Path((org, flow)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let private = q.get("user").map(String::as_str) == Some("1");
    stream(
        shared,
        vec![format!("{org}/{flow}")],
        private,
        q,
        headers,
        uri,
    )
    .await
}

async fn stream(
    shared: Arc<Shared>,
    filter: Vec<String>,
    private: bool,
    q: HashMap<String, String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let faults = shared.cfg.faults.next_connection();
    let accept_header = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (authorized, token_in_query) = authorize(&shared, &headers, &q);
    let mut rec = RequestRecord {
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        accept: accept_header.clone(),
        last_event_id: last_event_id.clone(),
        since_id: None,
        authorized,
        token_in_query,
        status: 200,
    };
    let answer = |shared: &Shared, mut rec: RequestRecord, r: Response| {
        rec.status = r.status().as_u16();
        shared.record(rec);
        r
    };
    for fault in &faults {
        match fault {
            Fault::Delay(d) => tokio::time::sleep(*d).await,
            Fault::Status { code, retry_after } => {
                let status =
                    StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut r = error(status, "injected fault");
                if let Some(s) = retry_after {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(*s));
                }
                return answer(&shared, rec, r);
            }
            _ => {}
        }
    }
    if !authorized {
        return answer(
            &shared,
            rec,
            error(StatusCode::UNAUTHORIZED, "Unauthorized"),
        );
    }
    if filter.is_empty() && !private {
        return answer(
            &shared,
            rec,
            error(
                StatusCode::BAD_REQUEST,
                "Either filter or user parameter must be set",
            ),
        );
    }
    let mut flows = HashSet::new();
    for f in &filter {
        match check_flow(&shared, f) {
            Ok(flow) => {
                flows.insert(flow);
            }
            Err((status, msg)) => return answer(&shared, rec, error(status, &msg)),
        }
    }
    let wanted = q
        .get("accept")
        .cloned()
        .or(accept_header)
        .unwrap_or_default();
    let mode = if wanted.contains("text/event-stream") {
        Mode::Sse
    } else {
        Mode::Json
    };
    if let Some(active) = q.get("active") {
        if active == "true" || active == "idle" {
            for flow in &flows {
                shared.append(
                    Some(flow),
                    None,
                    "activity.user",
                    json!({"last_activity": now_ms(), "typing": false, "status": active}),
                    vec![],
                    Some(shared.cfg.user_id.clone()),
                );
            }
        }
    }
    // Where this connection starts in the log: SSE replays after Last-Event-ID. What is
    // replayed (before `live_from`) is what the server stores: presence is not.
    let (start, live_from) = {
        let log = lock(&shared.log);
        let replay_from = match (mode, last_event_id.as_deref().map(str::parse::<u64>)) {
            (Mode::Sse, Some(Ok(id))) => Some(id),
            _ => None,
        };
        let start = match replay_from {
            Some(id) => log.entries.partition_point(|e| e.seq <= id),
            None => log.entries.len(),
        };
        (start, log.entries.len())
    };
    let (tx, body) = channel_body();
    let conn = Conn {
        shared: shared.clone(),
        mode,
        flows,
        private,
        pos: start,
        live_from,
        faults: faults.clone(),
    };
    tokio::spawn(conn.run(tx));
    rec.status = 200;
    shared.record(rec);
    let content_type = match mode {
        Mode::Sse => "text/event-stream",
        Mode::Json => "application/json",
    };
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// One open stream: writes its messages with the connection's faults applied.
struct Conn {
    shared: Arc<Shared>,
    mode: Mode,
    flows: HashSet<String>,
    private: bool,
    pos: usize,
    /// Log entries before this index are a replay: only stored ones are sent.
    live_from: usize,
    faults: Vec<Fault>,
}

impl Conn {
    fn matches(&self, e: &Entry) -> bool {
        match (&e.flow, &e.to) {
            (Some(flow), _) => self.flows.contains(flow),
            (None, Some(to)) => self.private && *to == self.shared.cfg.user_id,
            (None, None) => false,
        }
    }

    fn frame(&self, e: &Entry) -> Vec<u8> {
        let json = if self.shared.cfg.pretty {
            serde_json::to_string_pretty(&e.json).unwrap_or_else(|_| e.json.to_string())
        } else {
            e.json.to_string()
        };
        match self.mode {
            Mode::Json => {
                let mut f = json.into_bytes();
                f.extend_from_slice(if self.shared.cfg.crlf { b"\r\n" } else { b"\r" });
                f
            }
            Mode::Sse => {
                let mut s = String::new();
                if e.stored {
                    s.push_str(&format!("id: {}\n", e.seq));
                }
                // One `data:` line per line: the client joins them with `\n`.
                for line in json.lines() {
                    s.push_str(&format!("data: {line}\n"));
                }
                s.push('\n');
                s.into_bytes()
            }
        }
    }

    fn junk(&self, size: Option<usize>) -> Vec<u8> {
        let body = match size {
            Some(n) => format!(
                "{{\"event\":\"message\",\"content\":\"{}\"}}",
                "x".repeat(n.saturating_sub(32))
            ),
            None => "{\"event\":\"message\",\"content\":".to_owned(),
        };
        match self.mode {
            Mode::Json => {
                let mut f = body.into_bytes();
                f.extend_from_slice(if self.shared.cfg.crlf { b"\r\n" } else { b"\r" });
                f
            }
            Mode::Sse => format!("data: {body}\n\n").into_bytes(),
        }
    }

    fn keepalive(&self) -> &'static [u8] {
        match self.mode {
            Mode::Json => b"\n",
            Mode::Sse => b": keep-alive\n\n",
        }
    }

    async fn run(mut self, tx: BodySender) {
        let mut out = Writer::new(tx, &self.faults);
        let mut malformed = 0usize;
        let mut oversize: Vec<usize> = Vec::new();
        let mut stall: Option<(bool, Option<Instant>)> = None;
        let mut refuse = false;
        for f in &self.faults {
            match f {
                Fault::Malformed => malformed += 1,
                Fault::Oversize(n) => oversize.push(*n),
                Fault::Stall {
                    keepalives,
                    duration,
                } => stall = Some((*keepalives, duration.map(|d| Instant::now() + d))),
                Fault::Refuse => refuse = true,
                _ => {}
            }
        }
        if refuse {
            // Fail the body before its first byte: the server drops the connection without
            // finishing a response, which the client sees as a network failure.
            out.fail("injected fault: refused").await;
            return;
        }
        let mut seq_rx = self.shared.seq_tx.subscribe();
        let mut stop = self.shared.shutdown.clone();
        let period = self.shared.cfg.keepalive.max(Duration::from_millis(10));
        let mut next_keepalive = Instant::now() + period;
        let silent = matches!(stall, Some((false, _)));
        if self.mode == Mode::Sse && !silent {
            if let Some(retry) = self.shared.cfg.sse_retry {
                if out
                    .write(format!("retry: {}\n\n", retry.as_millis()).as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        // Bounded by the server's life: every turn waits for news, a timer or shutdown.
        loop {
            if let Some((_, Some(until))) = stall {
                if Instant::now() >= until {
                    stall = None;
                }
            }
            if stall.is_none() {
                let frames: Vec<Vec<u8>> = {
                    let log = lock(&self.shared.log);
                    let mut frames = Vec::new();
                    while self.pos < log.entries.len() {
                        let e = &log.entries[self.pos];
                        let replayed = self.pos < self.live_from;
                        self.pos += 1;
                        if self.matches(e) && (e.stored || !replayed) {
                            frames.push(self.frame(e));
                        }
                    }
                    frames
                };
                for frame in frames {
                    while malformed > 0 {
                        malformed -= 1;
                        if out.write(&self.junk(None)).await.is_err() {
                            return;
                        }
                    }
                    for n in std::mem::take(&mut oversize) {
                        if out.write(&self.junk(Some(n))).await.is_err() {
                            return;
                        }
                    }
                    if out.write(&frame).await.is_err() {
                        return;
                    }
                }
            }
            let stall_end = match stall {
                Some((_, Some(until))) => until,
                _ => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                changed = seq_rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(next_keepalive) => {
                    next_keepalive += period;
                    let send = match stall { Some((keepalives, _)) => keepalives, None => true };
                    if send && out.write(self.keepalive()).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(stall_end) => {}
                _ = stopped(&mut stop) => return,
                _ = out.closed() => return,
            }
        }
    }
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    Path((org, flow)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let (authorized, token_in_query) = authorize(&shared, &headers, &q);
    let since_id = q.get("since_id").and_then(|s| s.parse::<u64>().ok());
    let mut rec = RequestRecord {
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        accept: headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        last_event_id: None,
        since_id,
        authorized,
        token_in_query,
        status: 200,
    };
    let r = messages_response(&shared, authorized, &format!("{org}/{flow}"), &q, since_id);
    rec.status = r.status().as_u16();
    shared.record(rec);
    r
}

fn messages_response(
    shared: &Shared,
    authorized: bool,
    flow: &str,
    q: &HashMap<String, String>,
    since_id: Option<u64>,
) -> Response {
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let flow = match check_flow(shared, flow) {
        Ok(f) => f,
        Err((status, msg)) => return error(status, &msg),
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 30,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return error(StatusCode::BAD_REQUEST, "limit must be between 1 and 100"),
    };
    if q.contains_key("since_id") && since_id.is_none() {
        return error(StatusCode::BAD_REQUEST, "since_id must be a message id");
    }
    let asc = match q.get("sort").map(String::as_str) {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return error(StatusCode::BAD_REQUEST, "sort must be asc or desc"),
    };
    let log = lock(&shared.log);
    let matching: Vec<&Entry> = log
        .entries
        .iter()
        .filter(|e| e.stored && e.flow.as_deref() == Some(flow.as_str()))
        .filter(|e| since_id.is_none_or(|s| e.id.unwrap_or(0) > s))
        .collect();
    let picked: Vec<Value> = if asc {
        matching
            .iter()
            .take(limit)
            .map(|e| e.json.clone())
            .collect()
    } else {
        matching
            .iter()
            .rev()
            .take(limit)
            .map(|e| e.json.clone())
            .collect()
    };
    axum::Json(Value::Array(picked)).into_response()
}

/// Full names of [`PEOPLE`] (the generated traffic's speakers, user ids 10 and up).
const FULL_NAMES: &[&str] = &[
    "Ada Lovelace",
    "Grace Hopper",
    "Linus Torvalds",
    "Margaret Hamilton",
    "Ken Thompson",
    "Barbara Liskov",
    "Dennis Ritchie",
    "Frances Allen",
    "Alan Turing",
    "Radia Perlman",
];

/// The users of the REST users API (`GET /flows/:org/:flow/users`, `GET /users/:id`).
#[derive(Debug, Default)]
struct Users {
    /// Every user, by id, as the API shows it.
    all: HashMap<String, Value>,
    /// The members of each flow (`org/flow`), in order.
    members: HashMap<String, Vec<String>>,
    /// A fault every users request gets while set (a status, or a delay before answering).
    fault: Option<Fault>,
    /// Every users request, in order.
    requests: Vec<RequestRecord>,
}

impl Users {
    /// Every user the traffic uses: the token's user, the `inject` author ("2"), the
    /// private-message sender ("7") and the blocked user ("9") of the helpers, and the
    /// generated speakers (10 and up). "7" and "9" are in no flow: only `/users/:id` knows
    /// them.
    fn seed(&mut self, cfg: &Config) {
        let mut add = |id: &str, nick: &str, name: &str, member: bool| {
            self.add(id, nick, name, if member { &cfg.flows } else { &[] });
        };
        add("2", "Mia", "Mia Koskinen", true);
        add("7", "Sam", "Sam Virtanen", false);
        add("9", "Spammy", "Spam Account", false);
        for (i, (nick, name)) in PEOPLE.iter().zip(FULL_NAMES).enumerate() {
            add(&user_of(i), nick, name, true);
        }
        add(&cfg.user_id, "Joe", "Joe Example", true);
    }

    fn add(&mut self, id: &str, nick: &str, name: &str, flows: &[String]) {
        let email = format!("{}@example.com", nick.to_ascii_lowercase());
        let numeric = id.parse::<u64>().map_or_else(|_| json!(id), |n| json!(n));
        self.all.insert(
            id.to_owned(),
            json!({
                "id": numeric,
                "nick": nick,
                "name": name,
                "email": email,
                "avatar": format!("https://avatars.example.com/{id}/"),
                "website": null,
            }),
        );
        for flow in flows {
            let m = self.members.entry(flow.clone()).or_default();
            if !m.iter().any(|u| u == id) {
                m.push(id.to_owned());
            }
        }
    }
}

impl Emulator {
    /// Adds (or renames) a user of the users API, a member of `flows` (`org/flow`); for
    /// users who appear after a client connected.
    pub fn add_user(&self, id: &str, nick: &str, name: &str, flows: &[&str]) {
        let flows: Vec<String> = flows.iter().map(|f| (*f).to_owned()).collect();
        lock(&self.shared.users).add(id, nick, name, &flows);
    }

    /// The users API's view of user `id`, when it exists.
    pub fn user(&self, id: &str) -> Option<Value> {
        lock(&self.shared.users).all.get(id).cloned()
    }

    /// From now on every users request gets `fault` (`Fault::Status`: that status;
    /// `Fault::Delay`: the answer comes that much later); `None` heals it.
    pub fn set_users_fault(&self, fault: Option<Fault>) {
        lock(&self.shared.users).fault = fault;
    }

    /// Every request to the users API, in order (not in [`Emulator::requests`]).
    pub fn user_requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.users).requests.clone()
    }

    /// Commits a message of any event type to `flow`, sent by `user` (`"0"`: no user).
    pub fn inject_as(
        &self,
        flow: &str,
        user: &str,
        event: &str,
        content: Value,
        tags: Vec<String>,
    ) -> Committed {
        self.shared
            .append(
                Some(flow),
                None,
                event,
                content,
                tags,
                Some(user.to_owned()),
            )
            .expect("stored event")
    }

    /// Commits a private message from `from` to the token's user.
    pub fn inject_private_from(&self, from: &str, text: &str) -> Committed {
        let to = self.shared.cfg.user_id.clone();
        self.shared
            .append(
                None,
                Some(to),
                "message",
                json!(text),
                vec![],
                Some(from.to_owned()),
            )
            .expect("stored event")
    }
}

/// Serves a users request: applies the users fault, checks the token, answers with
/// `answer` and records the request with the status answered.
async fn users_request(
    shared: &Shared,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    uri: &axum::http::Uri,
    answer: impl FnOnce(&Shared) -> Response,
) -> Response {
    let (authorized, token_in_query) = authorize(shared, headers, q);
    let fault = lock(&shared.users).fault.clone();
    let mut rec = RequestRecord {
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        accept: headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        last_event_id: None,
        since_id: None,
        authorized,
        token_in_query,
        status: 200,
    };
    let refuse = match fault {
        Some(Fault::Delay(d)) => {
            let mut stop = shared.shutdown.clone();
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stopped(&mut stop) => {}
            }
            None
        }
        Some(Fault::Status { code, retry_after }) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = error(status, "injected fault");
            if let Some(s) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            Some(r)
        }
        _ => None,
    };
    let refuse =
        refuse.or_else(|| (!authorized).then(|| error(StatusCode::UNAUTHORIZED, "Unauthorized")));
    let r = refuse.unwrap_or_else(|| answer(shared));
    rec.status = r.status().as_u16();
    lock(&shared.users).requests.push(rec);
    r
}

/// `GET /flows/:org/:flow/users`: the users of a flow.
async fn flow_users(
    State(shared): State<Arc<Shared>>,
    Path((org, flow)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    users_request(&shared, &headers, &q, &uri, |shared| {
        let flow = match check_flow(shared, &format!("{org}/{flow}")) {
            Ok(f) => f,
            Err((status, msg)) => return error(status, &msg),
        };
        let users = lock(&shared.users);
        let list: Vec<Value> = users
            .members
            .get(&flow)
            .into_iter()
            .flatten()
            .filter_map(|id| users.all.get(id).cloned())
            .collect();
        axum::Json(Value::Array(list)).into_response()
    })
    .await
}

/// `GET /users/:id`: one user.
async fn one_user(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    users_request(&shared, &headers, &q, &uri, |shared| {
        let user = lock(&shared.users).all.get(&id).cloned();
        match user {
            Some(u) => axum::Json(u).into_response(),
            None => error(StatusCode::NOT_FOUND, &format!("User {id} not found")),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn quiet() -> Config {
        Config {
            rate: 0.0,
            history: 2,
            ..Config::default()
        }
    }

    /// A raw HTTP/1.1 GET; returns the whole response text read until `until` appears or the
    /// connection ends (bounded by a timeout).
    async fn get(addr: SocketAddr, path: &str, extra: &str, until: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("flowdock-token:");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n{extra}Connection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if String::from_utf8_lossy(&buf).contains(until) {
                    break;
                }
            }
        })
        .await;
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[tokio::test]
    async fn auth_and_flow_checks() {
        let emu = Emulator::start(quiet()).await.unwrap();
        let addr = emu.addr();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /flows/acme/main HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        assert!(
            get(addr, "/flows/acme/nope", "", "\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            get(addr, "/flows?filter=acme/main,acme/secret", "", "\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 403")
        );
        assert!(
            get(addr, "/flows", "", "\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 400")
        );
        emu.stop().await;
    }

    #[tokio::test]
    async fn json_stream_and_sse_replay() {
        let emu = Emulator::start(quiet()).await.unwrap();
        let addr = emu.addr();
        let c = emu.inject_message("acme/main", "hello");
        let body = get(
            addr,
            "/flows/acme/main?accept=text/event-stream",
            "Last-Event-ID: 0\r\n",
            "hello",
        )
        .await;
        assert!(body.contains("text/event-stream"), "{body}");
        assert!(body.contains("retry: 2000"));
        assert!(body.contains(&format!("id: {}\n", c.seq)));
        // Replay after the injected message's id gives nothing of it.
        let task = tokio::spawn(async move {
            get(
                addr,
                "/flows?filter=acme/main,acme/ops",
                "Accept: application/json\r\n",
                "\"flow\":\"acme:ops\"",
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        emu.inject_message("acme/ops", "later");
        let json = task.await.unwrap();
        assert!(json.contains("application/json"), "{json}");
        assert!(json.contains("\"content\":\"later\""), "{json}");
        assert!(json.contains("\"flow\":\"acme:ops\""), "{json}");
        assert!(!json.contains("hello"), "JSON stream does not replay");
        assert_eq!(emu.last_event_ids(), vec![Some("0".to_owned()), None]);
        emu.stop().await;
    }

    #[tokio::test]
    async fn rest_messages_since_id() {
        let emu = Emulator::start(quiet()).await.unwrap();
        let a = emu.inject_message("acme/main", "a");
        emu.inject_message("acme/main", "b");
        emu.inject_message("acme/main", "c");
        let r = get(
            emu.addr(),
            &format!(
                "/flows/acme/main/messages?since_id={}&limit=1&sort=asc",
                a.id
            ),
            "",
            "]",
        )
        .await;
        assert!(
            r.contains("\"content\":\"b\"") && !r.contains("\"content\":\"c\""),
            "{r}"
        );
        let r = get(emu.addr(), "/flows/acme/main/messages?limit=101", "", "}").await;
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
        assert_eq!(emu.since_ids(), vec![a.id]);
        // History + 3 injected, all committed, ids increasing per flow.
        let main: Vec<u64> = emu
            .committed()
            .into_iter()
            .filter(|c| c.flow == "acme/main")
            .map(|c| c.id)
            .collect();
        assert_eq!(main.len(), 5);
        assert!(main.windows(2).all(|w| w[0] < w[1]));
        emu.stop().await;
    }

    #[tokio::test]
    async fn faults_status_and_drop() {
        let plan = FaultPlan::script([
            vec![Fault::Status {
                code: 503,
                retry_after: Some(3),
            }],
            vec![Fault::DropAfterBytes(10)],
        ]);
        let emu = Emulator::start(Config {
            faults: Arc::new(plan),
            ..quiet()
        })
        .await
        .unwrap();
        let r = get(emu.addr(), "/flows/acme/main", "", "\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.to_ascii_lowercase().contains("retry-after: 3"),
            "{r}"
        );
        let addr = emu.addr();
        let task = tokio::spawn(async move { get(addr, "/flows/acme/main", "", "never").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        emu.inject_message("acme/main", "a long enough message to be cut");
        let started = std::time::Instant::now();
        let r = task.await.unwrap();
        let body = r.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(
            body.to_ascii_lowercase().starts_with("a\r\n{\"app\":\"ch"),
            "10 bytes then cut: {r:?}"
        );
        assert!(
            !body.contains("0\r\n\r\n"),
            "no clean end of the chunked body: {r:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(9),
            "the connection was closed"
        );
        emu.stop().await;
    }

    #[tokio::test]
    async fn users_api_lists_flow_users_and_single_users() {
        let emu = Emulator::start(quiet()).await.unwrap();
        let addr = emu.addr();
        let list = get(addr, "/flows/acme/main/users", "", "]").await;
        assert!(list.starts_with("HTTP/1.1 200"), "{list}");
        assert!(list.contains("application/json"), "{list}");
        for nick in PEOPLE {
            assert!(
                list.contains(&format!("\"nick\":\"{nick}\"")),
                "{nick}: {list}"
            );
        }
        assert!(
            list.contains("\"id\":10,"),
            "numeric ids like the real API: {list}"
        );
        assert!(!list.contains("\"Sam\""), "7 is in no flow");
        let sam = get(addr, "/users/7", "", "}").await;
        assert!(
            sam.starts_with("HTTP/1.1 200") && sam.contains("\"nick\":\"Sam\""),
            "{sam}"
        );
        assert!(
            get(addr, "/users/4242", "", "}")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            get(addr, "/flows/acme/secret/users", "", "}")
                .await
                .starts_with("HTTP/1.1 403")
        );
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /users/7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        emu.add_user("30", "Newbie", "New Person", &["acme/ops"]);
        assert!(
            get(addr, "/flows/acme/ops/users", "", "]")
                .await
                .contains("Newbie")
        );
        emu.set_users_fault(Some(Fault::Status {
            code: 503,
            retry_after: None,
        }));
        assert!(
            get(addr, "/users/7", "", "}")
                .await
                .starts_with("HTTP/1.1 503")
        );
        let statuses: Vec<u16> = emu.user_requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 200, 404, 403, 401, 200, 503]);
        assert!(
            emu.requests().is_empty(),
            "kept apart from the stream and messages log"
        );
        emu.stop().await;
    }

    #[tokio::test]
    async fn sse_endpoint_answers_cors_for_a_browser_origin() {
        let emu = Emulator::start(quiet()).await.unwrap();
        let addr = emu.addr();
        let origin = "Origin: https://app.example.org\r\n";
        let r = get(
            addr,
            "/flows?filter=acme/main&accept=text/event-stream",
            origin,
            "retry:",
        )
        .await
        .to_ascii_lowercase();
        assert!(r.starts_with("http/1.1 200"), "{r}");
        assert!(r.contains("content-type: text/event-stream"), "{r}");
        assert!(
            r.contains("access-control-allow-origin: https://app.example.org\r\n"),
            "{r}"
        );
        assert!(r.contains("access-control-allow-credentials: true"), "{r}");
        // The document's example passes the token in the query, as EventSource cannot send
        // headers; an error answer is readable by the page too.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!(
                "GET /flows/acme/main?accept=text/event-stream&access_token=nope HTTP/1.1\r\nHost: x\r\n{origin}Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut refused = String::new();
        s.read_to_string(&mut refused).await.unwrap();
        let refused = refused.to_ascii_lowercase();
        assert!(refused.starts_with("http/1.1 401"), "{refused}");
        assert!(
            refused.contains("access-control-allow-origin: https://app.example.org"),
            "{refused}"
        );
        // A preflight (sent before a `Last-Event-ID` or `Authorization` header) is allowed.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!(
                "OPTIONS /flows/acme/main HTTP/1.1\r\nHost: x\r\n{origin}Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut pre = String::new();
        s.read_to_string(&mut pre).await.unwrap();
        let pre = pre.to_ascii_lowercase();
        assert!(pre.starts_with("http/1.1 204"), "{pre}");
        assert!(pre.contains("access-control-allow-methods: get"), "{pre}");
        assert!(
            pre.contains("access-control-allow-headers: last-event-id"),
            "{pre}"
        );
        assert!(
            pre.contains("access-control-allow-origin: https://app.example.org"),
            "{pre}"
        );
        emu.stop().await;
    }

    #[tokio::test]
    async fn keepalives_and_generated_traffic() {
        let emu = Emulator::start(Config {
            rate: 50.0,
            keepalive: Duration::from_millis(50),
            ..quiet()
        })
        .await
        .unwrap();
        // Each keep-alive is one `\n`, written as its own 1-byte chunk.
        let r = get(emu.addr(), "/flows/acme/main", "", "1\r\n\n\r\n").await;
        assert!(r.contains("1\r\n\n\r\n"), "{r:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let c = emu.committed();
        assert!(c.len() > 6, "traffic generated: {}", c.len());
        emu.stop().await;
    }
}
