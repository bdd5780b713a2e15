//! The Campfire emulator: the streaming API (`GET /room/{id}/live.json`) and the REST
//! endpoints a streaming client needs (`POST /room/{id}/join.json`,
//! `GET /room/{id}/recent.json?since_message_id=N`, `GET /users/{id}.json`), on one
//! loopback port.
//!
//! It follows `campfire-streaming.txt` and NOTES.md: HTTP basic auth with the token as user
//! and `x` (or `X`) as password (401 otherwise), one JSON object per frame terminated by `\r`
//! (or `\r\n` when configured), each object compact, laid out over two lines as the
//! document prints its example response, or pretty-printed ([`Layout`]), a single space as
//! keep-alive every ~3 s (also through quiet periods of any length), `created_at` as
//! `2009-12-01 23:44:40` (UTC, no zone) and `starred` as the string `"true"`/`"false"` in the
//! stream; the REST API answers `{"messages": [...]}` with `created_at` as
//! `2009/12/01 23:44:40 +0000` and `starred` as a boolean, up to 100 messages after
//! `since_message_id` (the oldest first).
//!
//! Faults from [`Config::faults`] apply to each `live.json` request in turn; faults from
//! [`Config::rest_faults`] to each REST request (statuses, delays and refusals).
//!
//! With [`Config::require_join`], streaming a room the token has not joined is refused with
//! `403 Forbidden` (the document: "The authenticated user must already have joined the room
//! in order to use this API"). The document names no status; 403 is what a server says to
//! valid credentials (not 401) for a room that exists (not 404) that it will not serve yet,
//! and the body says to join (`POST /room/{id}/join.json`).
//!
//! Message ids never repeat across restarts: unless [`Config::first_id`] is set, the first
//! id is the start time in microseconds since the Unix epoch (below 2^53, so JavaScript
//! clients read it exactly), and ids grow by one per message from there.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::{BodySender, Writer, channel_body};
use crate::fault::{Fault, FaultPlan, lock};
use crate::server::{ServerHandle, bind, serve_router, stopped};
use crate::traffic::{PEOPLE, Traffic};

/// Settings of a Campfire emulator.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (default `127.0.0.1:0`, an ephemeral loopback port).
    pub listen: SocketAddr,
    /// Seed of the generated traffic.
    pub seed: u64,
    /// Generated messages per second across all rooms; 0 = none.
    pub rate: f64,
    /// Faults for each `live.json` connection, in order.
    pub faults: Arc<FaultPlan>,
    /// Faults for each REST request (`join.json`, `recent.json`), in order.
    pub rest_faults: Arc<FaultPlan>,
    /// API tokens the server accepts (basic auth user; password `x` or `X`).
    pub tokens: Vec<String>,
    /// Rooms that exist (others answer 404).
    pub rooms: Vec<u64>,
    /// Rooms that exist but no token may read (403).
    pub restricted_rooms: Vec<u64>,
    /// Refuse to stream a room the token has not joined over REST (403), as the document
    /// says the real service requires.
    pub require_join: bool,
    /// How often a single-space keep-alive is sent between messages (~3 s on the real one).
    pub keepalive: Duration,
    /// Terminate frames with `\r\n` instead of `\r`.
    pub crlf: bool,
    /// How each streamed object is laid out (compact by default).
    pub layout: Layout,
    /// The largest `recent.json` answer (the real service: 100).
    pub recent_limit: usize,
    /// The id of the first message (ids then increase across all rooms); `None`: the start
    /// time in microseconds since the Unix epoch, so a restarted emulator never reissues an
    /// id.
    pub first_id: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 1,
            rate: 2.0,
            faults: Arc::new(FaultPlan::none()),
            rest_faults: Arc::new(FaultPlan::none()),
            tokens: vec![DEFAULT_TOKEN.to_owned()],
            rooms: vec![DEFAULT_ROOM],
            restricted_rooms: Vec::new(),
            require_join: false,
            keepalive: Duration::from_secs(3),
            crlf: false,
            layout: Layout::Compact,
            recent_limit: 100,
            first_id: None,
        }
    }
}

/// How the streaming API lays out each JSON object of the stream. Every layout is one frame
/// per object, terminated by `\r` (or `\r\n`): a `\n` may occur inside a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// One line per object (`serde_json::to_string`).
    #[default]
    Compact,
    /// Over two lines, as the document prints its example response: a `\n ` after the
    /// middle member.
    Document,
    /// Pretty-printed, one member per line (`serde_json::to_string_pretty`).
    Pretty,
}

impl Layout {
    /// `value` laid out this way (without the frame's terminator).
    pub fn render(self, value: &Value) -> String {
        match (self, value) {
            (Layout::Compact, v) => v.to_string(),
            (Layout::Pretty, v) => {
                serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
            }
            (Layout::Document, Value::Object(o)) => {
                let members: Vec<String> = o
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                    .collect();
                let (head, tail) = members.split_at(members.len().div_ceil(2));
                if tail.is_empty() {
                    format!("{{{}}}", head.join(","))
                } else {
                    format!("{{{},\n {}}}", head.join(","), tail.join(","))
                }
            }
            (Layout::Document, v) => v.to_string(),
        }
    }
}

/// The first message id of an emulator started now: microseconds since the Unix epoch.
fn time_based_first_id() -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    u64::try_from(micros).unwrap_or(u64::MAX / 2).max(1)
}

/// The token the default configuration accepts.
pub const DEFAULT_TOKEN: &str = "campfire-emulator-token";

/// The room the default configuration has.
pub const DEFAULT_ROOM: u64 = 111;

/// Message types generated traffic draws from, with their weights (mostly text).
pub const TRAFFIC_WEIGHTS: &[(&str, u32)] = &[
    ("TextMessage", 700),
    ("PasteMessage", 40),
    ("EnterMessage", 35),
    ("LeaveMessage", 35),
    ("TimestampMessage", 30),
    ("TopicChangeMessage", 15),
    ("UploadMessage", 15),
    ("SoundMessage", 15),
    ("TweetMessage", 10),
    ("IdleMessage", 10),
    ("UnidleMessage", 10),
    ("KickMessage", 5),
    ("SystemMessage", 5),
    ("AdvertisementMessage", 3),
    ("AllowGuestsMessage", 3),
    ("DisallowGuestsMessage", 3),
    ("LockMessage", 3),
    ("UnlockMessage", 3),
    ("ConferenceCreatedMessage", 3),
    ("ConferenceFinishedMessage", 3),
];

/// One message the emulator committed to a room's transcript.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    /// The message id.
    pub id: u64,
    /// The room.
    pub room: u64,
    /// The Campfire type (`TextMessage`, ...).
    pub kind: String,
    /// The body, when the type has one.
    pub body: Option<String>,
    /// The author, when the type has one.
    pub user_id: Option<u64>,
    /// When it was committed.
    pub created_at: DateTime<Utc>,
    /// Whether it is starred.
    pub starred: bool,
    /// Type-specific fields (a tweet, a sound's url, an upload's full_url).
    pub extra: serde_json::Map<String, Value>,
}

impl Committed {
    /// The object the streaming API sends for this message.
    pub fn stream_json(&self) -> Value {
        let mut v = json!({
            "room_id": self.room,
            "created_at": self.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            "body": self.body,
            "id": self.id,
            "user_id": self.user_id,
            "type": self.kind,
            "starred": if self.starred { "true" } else { "false" },
        });
        if let Value::Object(o) = &mut v {
            o.extend(self.extra.clone());
        }
        v
    }

    /// The object the REST API sends for this message.
    pub fn rest_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "room_id": self.room,
            "user_id": self.user_id,
            "body": self.body,
            "created_at": self.created_at.format("%Y/%m/%d %H:%M:%S +0000").to_string(),
            "type": self.kind,
            "starred": self.starred,
        });
        if let Value::Object(o) = &mut v {
            o.extend(self.extra.clone());
        }
        v
    }
}

/// One request the emulator answered.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path, e.g. `/room/111/live.json`.
    pub path: String,
    /// The `since_message_id` query parameter, for `recent.json`.
    pub since_message_id: Option<u64>,
    /// The `limit` query parameter, for `recent.json`.
    pub limit: Option<usize>,
    /// When the request was answered (for a stream: when its response began).
    pub at: std::time::Instant,
    /// The basic-auth user (token) the request carried, when readable.
    pub user: Option<String>,
    /// The status answered.
    pub status: u16,
}

#[derive(Debug)]
struct Store {
    messages: Vec<Committed>,
    next_id: u64,
    traffic: Traffic,
    joined: HashSet<(String, u64)>,
    requests: Vec<RequestRecord>,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    store: Mutex<Store>,
    /// The number of committed messages; streams wait on it.
    count: watch::Sender<usize>,
    shutdown: watch::Receiver<bool>,
    live_open: std::sync::atomic::AtomicUsize,
    live_total: std::sync::atomic::AtomicUsize,
    /// Bumped by [`Emulator::end_streams`]: every open stream ends cleanly.
    ends: watch::Sender<u64>,
}

/// A running Campfire emulator.
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
        let (count, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                messages: Vec::new(),
                next_id: config.first_id.unwrap_or_else(time_based_first_id).max(1),
                traffic: Traffic::new(config.seed),
                joined: HashSet::new(),
                requests: Vec::new(),
            }),
            count,
            shutdown: shutdown_rx,
            live_open: Default::default(),
            live_total: Default::default(),
            ends: watch::channel(0).0,
            config,
        });
        let router = Router::new()
            .route("/room/{id}/live.json", get(live))
            .route("/room/{id}/join.json", post(join))
            .route("/room/{id}/recent.json", get(recent))
            .route("/users/{file}", get(user))
            .with_state(shared.clone());
        let handle = serve_router(listener, router, shutdown_tx)?;
        let generator = (shared.config.rate > 0.0).then(|| {
            let shared = shared.clone();
            tokio::spawn(generate(shared))
        });
        Ok(Emulator {
            handle,
            shared,
            generator,
        })
    }

    /// The base URL (streaming and REST API on the same host).
    pub fn url(&self) -> String {
        self.handle.url()
    }

    /// The address the emulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// A `[[source]]` table connecting `tributary run` to this emulator's first room.
    pub fn config_snippet(&self, source_name: &str) -> String {
        let room = self
            .shared
            .config
            .rooms
            .iter()
            .find(|r| !self.shared.config.restricted_rooms.contains(r))
            .copied()
            .unwrap_or(DEFAULT_ROOM);
        let token = self
            .shared
            .config
            .tokens
            .first()
            .cloned()
            .unwrap_or_default();
        format!(
            "[[source]]\nname = {name:?}\nservice = \"campfire\"\ntoken = {token:?}\nurl = {url:?}\napi_url = {url:?}\nroom = {room}\njoin = true\n",
            name = source_name,
            url = self.url(),
        )
    }

    /// Every message committed so far, in order.
    pub fn committed(&self) -> Vec<Committed> {
        lock(&self.shared.store).messages.clone()
    }

    /// Commits a message now and sends it to every open stream of its room; returns its id.
    pub fn inject(&self, room: u64, kind: &str, body: Option<&str>, user_id: Option<u64>) -> u64 {
        commit(
            &self.shared,
            room,
            kind,
            body.map(str::to_owned),
            user_id,
            serde_json::Map::new(),
        )
    }

    /// Commits a `TextMessage` from user 1 in `room`; returns its id.
    pub fn inject_text(&self, room: u64, body: &str) -> u64 {
        self.inject(room, "TextMessage", Some(body), Some(1))
    }

    /// Commits one generated message (any type, by the traffic weights) in `room`; returns
    /// its id.
    pub fn inject_generated(&self, room: u64) -> u64 {
        generate_one(&self.shared, room)
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.store).requests.clone()
    }

    /// The `since_message_id` of every `recent.json` request, in order (`None` when absent).
    pub fn since_message_ids(&self) -> Vec<Option<u64>> {
        lock(&self.shared.store)
            .requests
            .iter()
            .filter(|r| r.path.ends_with("/recent.json"))
            .map(|r| r.since_message_id)
            .collect()
    }

    /// Whether `token` has joined `room` over REST.
    pub fn has_joined(&self, token: &str, room: u64) -> bool {
        lock(&self.shared.store)
            .joined
            .contains(&(token.to_owned(), room))
    }

    /// The number of `live.json` streams open now.
    pub fn open_streams(&self) -> usize {
        self.shared
            .live_open
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The number of `live.json` streams served since the start.
    pub fn streams_served(&self) -> usize {
        self.shared
            .live_total
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The fault plan for `live.json` connections (push more faults while running).
    pub fn faults(&self) -> &Arc<FaultPlan> {
        &self.shared.config.faults
    }

    /// The fault plan for REST requests.
    pub fn rest_faults(&self) -> &Arc<FaultPlan> {
        &self.shared.config.rest_faults
    }

    /// Ends every open `live.json` stream cleanly (the chunked body's terminator), as a
    /// server does that closes its streams without failing; the server keeps running.
    pub fn end_streams(&self) {
        self.shared.ends.send_modify(|n| *n += 1);
    }

    /// Stops the traffic generator for good; the server keeps serving what it committed.
    pub fn stop_traffic(&mut self) {
        if let Some(g) = self.generator.take() {
            g.abort();
        }
    }

    /// Stops the server, ending every open stream.
    pub async fn stop(mut self) {
        if let Some(g) = self.generator.take() {
            g.abort();
        }
        self.handle.stop().await;
    }
}

fn commit(
    shared: &Shared,
    room: u64,
    kind: &str,
    body: Option<String>,
    user_id: Option<u64>,
    extra: serde_json::Map<String, Value>,
) -> u64 {
    let (id, count) = {
        let mut store = lock(&shared.store);
        let id = store.next_id;
        store.next_id += 1;
        let starred = kind == "TextMessage" && store.traffic.chance(0.05);
        store.messages.push(Committed {
            id,
            room,
            kind: kind.to_owned(),
            body,
            user_id,
            created_at: Utc::now(),
            starred,
            extra,
        });
        (id, store.messages.len())
    };
    shared.count.send_replace(count);
    id
}

/// The user id of person `i` of [`PEOPLE`].
fn user_of(i: usize) -> u64 {
    i as u64 + 1
}

fn generate_one(shared: &Shared, room: u64) -> u64 {
    let (kind, body, user, extra) = {
        let mut store = lock(&shared.store);
        let t = &mut store.traffic;
        let total: u32 = TRAFFIC_WEIGHTS.iter().map(|(_, w)| w).sum();
        let mut pick = t.pick(total as usize) as u32;
        let mut kind = TRAFFIC_WEIGHTS[0].0;
        for (k, w) in TRAFFIC_WEIGHTS {
            if pick < *w {
                kind = k;
                break;
            }
            pick -= w;
        }
        let person = t.person();
        let user = Some(user_of(person));
        let mut extra = serde_json::Map::new();
        let (body, user) = match kind {
            "TextMessage" => (Some(t.line()), user),
            "PasteMessage" => (
                Some(format!("{}\n{}\n{}", t.line(), t.line(), t.line())),
                user,
            ),
            "TopicChangeMessage" => (Some(format!("Topic: {}", t.line())), user),
            "UploadMessage" => {
                let name = ["report.pdf", "screenshot.png", "deploy.log", "notes.txt"][t.pick(4)];
                extra.insert(
                    "full_url".into(),
                    json!(format!("https://uploads.example.invalid/{room}/{name}")),
                );
                (Some(name.to_owned()), user)
            }
            "SoundMessage" => {
                let (sound, description) = [
                    ("trombone", "plays a sad trombone"),
                    ("rimshot", "plays a rimshot"),
                    ("crickets", "hears crickets chirping"),
                    ("tada", "plays a fanfare"),
                ][t.pick(4)];
                extra.insert("description".into(), json!(description));
                extra.insert(
                    "url".into(),
                    json!(format!("https://sounds.example.invalid/{sound}.mp3")),
                );
                (Some(sound.to_owned()), user)
            }
            "TweetMessage" => {
                let handle = PEOPLE[person].to_ascii_lowercase();
                let tweet_id = 10_000_000 + t.pick(1_000_000) as u64;
                let message = t.line();
                extra.insert(
                    "tweet".into(),
                    json!({"id": tweet_id, "message": message, "author_username": handle,
                           "author_avatar_url": format!("https://avatars.example.invalid/{handle}.png")}),
                );
                (
                    Some(format!("https://twitter.com/{handle}/status/{tweet_id}")),
                    user,
                )
            }
            "TimestampMessage" => (None, None),
            "SystemMessage" => (
                Some("Campfire will be down for maintenance at 02:00 UTC".to_owned()),
                None,
            ),
            "AdvertisementMessage" => (
                Some("Try Basecamp: project management that works".to_owned()),
                None,
            ),
            "AllowGuestsMessage" => (Some(format!("https://guest.example.invalid/{room}")), user),
            _ => (None, user),
        };
        (kind, body, user, extra)
    };
    commit(shared, room, kind, body, user, extra)
}

async fn generate(shared: Arc<Shared>) {
    let rooms: Vec<u64> = shared
        .config
        .rooms
        .iter()
        .copied()
        .filter(|r| !shared.config.restricted_rooms.contains(r))
        .collect();
    if rooms.is_empty() {
        return;
    }
    let mut shutdown = shared.shutdown.clone();
    let period = Duration::from_secs_f64(1.0 / shared.config.rate.max(0.001));
    let mut next = 0usize;
    loop {
        let jitter = { lock(&shared.store).traffic.pick(1000) } as f64 / 1000.0;
        let wait = period.mul_f64(0.5 + jitter);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut shutdown) => return,
        }
        let room = rooms[next % rooms.len()];
        next += 1;
        generate_one(&shared, room);
    }
}

/// Reads `Authorization: Basic` into (user, password).
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A 200 response with `body` as `application/json; charset=utf-8`.
fn json_response(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn unauthorized() -> Response {
    let mut r = plain(StatusCode::UNAUTHORIZED, "HTTP Basic: Access denied.\n");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Application\""),
    );
    r
}

/// Checks auth and the room; `Ok(token)` when the request may go on.
fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    room: &str,
    streaming: bool,
) -> Result<(String, u64), Box<Response>> {
    let Some((user, password)) = basic_auth(headers) else {
        return Err(Box::new(unauthorized()));
    };
    if !shared.config.tokens.contains(&user) || !(password == "x" || password == "X") {
        return Err(Box::new(unauthorized()));
    }
    let Some(room) = room
        .parse::<u64>()
        .ok()
        .filter(|r| shared.config.rooms.contains(r))
    else {
        return Err(Box::new(plain(StatusCode::NOT_FOUND, "Room not found\n")));
    };
    if shared.config.restricted_rooms.contains(&room) {
        return Err(Box::new(plain(
            StatusCode::FORBIDDEN,
            "You may not access this room\n",
        )));
    }
    if streaming
        && shared.config.require_join
        && !lock(&shared.store).joined.contains(&(user.clone(), room))
    {
        return Err(Box::new(plain(
            StatusCode::FORBIDDEN,
            "You must join the room (POST /room/{id}/join.json) before streaming it\n",
        )));
    }
    Ok((user, room))
}

fn record(
    shared: &Shared,
    method: &'static str,
    path: String,
    since: Option<u64>,
    headers: &HeaderMap,
    status: u16,
) {
    record_limit(shared, method, path, since, None, headers, status);
}

fn record_limit(
    shared: &Shared,
    method: &'static str,
    path: String,
    since: Option<u64>,
    limit: Option<usize>,
    headers: &HeaderMap,
    status: u16,
) {
    let user = basic_auth(headers).map(|(u, _)| u);
    lock(&shared.store).requests.push(RequestRecord {
        method,
        path,
        since_message_id: since,
        limit,
        at: std::time::Instant::now(),
        user,
        status,
    });
}

/// Applies the request-level faults (refuse, status, delay); `Some` answers the request.
async fn request_faults(faults: &[Fault]) -> Option<Response> {
    for fault in faults {
        match fault {
            Fault::Delay(d) => tokio::time::sleep(*d).await,
            Fault::Refuse => {
                // The body fails before its first byte: hyper aborts the connection without
                // a complete response.
                let body = Body::from_stream(futures_util::stream::once(async {
                    Err::<Bytes, std::io::Error>(std::io::Error::other("refused"))
                }));
                return Some(Response::new(body));
            }
            Fault::Status { code, retry_after } => {
                let status =
                    StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut r = (
                    status,
                    status.canonical_reason().unwrap_or("Error").to_owned() + "\n",
                )
                    .into_response();
                if let Some(secs) = retry_after {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
                }
                if *code == 401 {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"Application\""),
                    );
                }
                return Some(r);
            }
            _ => {}
        }
    }
    None
}

/// Applies the request-level `faults`, then checks auth and the room: `Ok((token, room))`
/// when the request may go on, else the answer that ends it.
async fn admit(
    shared: &Shared,
    faults: &[Fault],
    headers: &HeaderMap,
    room: &str,
    streaming: bool,
) -> Result<(String, u64), Box<Response>> {
    if let Some(r) = request_faults(faults).await {
        return Err(Box::new(r));
    }
    authorize(shared, headers, room, streaming)
}

async fn join(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/room/{room}/join.json");
    let faults = shared.config.rest_faults.next_connection();
    let (token, room) = match admit(&shared, &faults, &headers, &room, false).await {
        Ok(v) => v,
        Err(r) => {
            record(&shared, "POST", path, None, &headers, r.status().as_u16());
            return *r;
        }
    };
    let newly = lock(&shared.store).joined.insert((token, room));
    if newly {
        commit(
            &shared,
            room,
            "EnterMessage",
            None,
            Some(1),
            serde_json::Map::new(),
        );
    }
    record(&shared, "POST", path, None, &headers, 200);
    json_response(Body::empty())
}

/// `GET /users/{id}.json`: the people of the generated traffic are users 1 to 10.
async fn user(
    State(shared): State<Arc<Shared>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/users/{file}");
    let id = file.strip_suffix(".json").unwrap_or("");
    let authorized = basic_auth(&headers).is_some_and(|(user, password)| {
        shared.config.tokens.contains(&user) && (password == "x" || password == "X")
    });
    if !authorized {
        record(&shared, "GET", path, None, &headers, 401);
        return unauthorized();
    }
    let person = id
        .parse::<usize>()
        .ok()
        .and_then(|i| i.checked_sub(1))
        .filter(|i| *i < PEOPLE.len());
    let Some(i) = person else {
        record(&shared, "GET", path, None, &headers, 404);
        return plain(StatusCode::NOT_FOUND, "User not found\n");
    };
    record(&shared, "GET", path, None, &headers, 200);
    let name = PEOPLE[i];
    let body = json!({"user": {
        "id": user_of(i),
        "name": name,
        "email_address": format!("{}@example.invalid", name.to_ascii_lowercase()),
        "admin": i == 0,
        "created_at": "2009/11/20 16:41:39 +0000",
        "type": "Member",
        "avatar_url": format!("https://avatars.example.invalid/{}.png", name.to_ascii_lowercase()),
    }});
    json_response(Body::from(body.to_string()))
}

#[derive(Debug, Deserialize)]
struct RecentQuery {
    since_message_id: Option<String>,
    limit: Option<String>,
}

async fn recent(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    Query(q): Query<RecentQuery>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/room/{room}/recent.json");
    let since = q
        .since_message_id
        .as_deref()
        .and_then(|s| s.parse::<u64>().ok());
    let faults = shared.config.rest_faults.next_connection();
    let room = match admit(&shared, &faults, &headers, &room, false).await {
        Ok((_, room)) => room,
        Err(r) => {
            record(&shared, "GET", path, since, &headers, r.status().as_u16());
            return *r;
        }
    };
    if q.since_message_id.is_some() && since.is_none() {
        record(&shared, "GET", path, None, &headers, 400);
        return plain(
            StatusCode::BAD_REQUEST,
            "since_message_id must be a number\n",
        );
    }
    let limit = q
        .limit
        .as_deref()
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(shared.config.recent_limit)
        .clamp(1, shared.config.recent_limit.max(1));
    let messages: Vec<Value> = {
        let store = lock(&shared.store);
        let in_room = store.messages.iter().filter(|m| m.room == room);
        match since {
            Some(since) => in_room
                .filter(|m| m.id > since)
                .take(limit)
                .map(Committed::rest_json)
                .collect(),
            None => {
                let all: Vec<&Committed> = in_room.collect();
                let skip = all.len().saturating_sub(limit);
                all[skip..].iter().map(|m| m.rest_json()).collect()
            }
        }
    };
    let asked = q.limit.as_deref().and_then(|l| l.parse::<usize>().ok());
    record_limit(&shared, "GET", path, since, asked, &headers, 200);
    json_response(Body::from(json!({ "messages": messages }).to_string()))
}

async fn live(
    State(shared): State<Arc<Shared>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/room/{room}/live.json");
    let faults = shared.config.faults.next_connection();
    let room = match admit(&shared, &faults, &headers, &room, true).await {
        Ok((_, room)) => room,
        Err(r) => {
            record(&shared, "GET", path, None, &headers, r.status().as_u16());
            return *r;
        }
    };
    record(&shared, "GET", path, None, &headers, 200);
    // Subscribe before answering: every message committed from now on is streamed.
    let start = lock(&shared.store).messages.len();
    let (tx, body) = channel_body();
    shared
        .live_total
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    tokio::spawn(stream_room(shared.clone(), room, start, faults, tx));
    let mut r = json_response(body);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0
            .live_open
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn stream_room(
    shared: Arc<Shared>,
    room: u64,
    start: usize,
    faults: Vec<Fault>,
    tx: BodySender,
) {
    shared
        .live_open
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _guard = OpenGuard(shared.clone());
    let delim: &[u8] = if shared.config.crlf { b"\r\n" } else { b"\r" };
    let mut w = Writer::new(tx, &faults);
    let mut stall: Option<(bool, Option<Instant>)> = faults.iter().find_map(|f| match f {
        Fault::Stall {
            keepalives,
            duration,
        } => Some((*keepalives, duration.map(|d| Instant::now() + d))),
        _ => None,
    });
    let _ = run_stream(&shared, room, start, &faults, delim, &mut w, &mut stall).await;
}

async fn run_stream(
    shared: &Shared,
    room: u64,
    start: usize,
    faults: &[Fault],
    delim: &[u8],
    w: &mut Writer,
    stall: &mut Option<(bool, Option<Instant>)>,
) -> Result<(), ()> {
    let mut shutdown = shared.shutdown.clone();
    let mut count = shared.count.subscribe();
    let mut ends = shared.ends.subscribe();
    let layout = shared.config.layout;
    let mut next = start;
    for fault in faults {
        match fault {
            Fault::Malformed => {
                let mut f = format!("{{\"room_id\":{room},\"id\":").into_bytes();
                f.extend_from_slice(delim);
                w.write(&f).await?;
            }
            Fault::Oversize(n) => {
                let head = format!("{{\"room_id\":{room},\"type\":\"TextMessage\",\"body\":\"");
                let pad = n.saturating_sub(head.len() + 2);
                let mut f = head.into_bytes();
                f.extend(std::iter::repeat_n(b'x', pad));
                f.extend_from_slice(b"\"}");
                f.extend_from_slice(delim);
                w.write(&f).await?;
            }
            _ => {}
        }
    }
    let keepalive = shared.config.keepalive.max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some((_, Some(until))) = stall {
            if Instant::now() >= *until {
                *stall = None;
            }
        }
        if stall.is_none() {
            let batch: Vec<Committed> = {
                let store = lock(&shared.store);
                let batch = store.messages[next.min(store.messages.len())..]
                    .iter()
                    .filter(|m| m.room == room)
                    .cloned()
                    .collect();
                next = store.messages.len();
                batch
            };
            for m in batch {
                let mut frame = layout.render(&m.stream_json()).into_bytes();
                frame.extend_from_slice(delim);
                w.write(&frame).await?;
            }
        }
        let stall_end = async {
            match stall {
                Some((_, Some(until))) => tokio::time::sleep_until(*until).await,
                _ => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = stopped(&mut shutdown) => return Ok(()),
            _ = ends.changed() => return Ok(()),
            _ = w.closed() => return Err(()),
            changed = count.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            _ = tick.tick() => {
                let silent = matches!(stall, Some((false, _)));
                if !silent {
                    w.write(b" ").await?;
                }
            }
            _ = stall_end => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn auth(token: &str, password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{token}:{password}"))
    }

    async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        auth: Option<String>,
    ) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n");
        if let Some(a) = auth {
            req.push_str(&format!("Authorization: Basic {a}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        s
    }

    /// Reads until `pred` holds for everything read so far, or 10 s pass.
    async fn read_until(s: &mut TcpStream, pred: impl Fn(&str) -> bool) -> String {
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut chunk = [0u8; 4096];
        while !pred(&String::from_utf8_lossy(&buf)) {
            match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// `GET /room/111/live.json` with the default token.
    async fn open_live(emu: &Emulator) -> TcpStream {
        request(
            emu.addr(),
            "GET",
            "/room/111/live.json",
            Some(auth(DEFAULT_TOKEN, "x")),
        )
        .await
    }

    /// A quiet emulator whose live streams follow `plan`.
    async fn start_with_faults(plan: FaultPlan) -> Emulator {
        Emulator::start(Config {
            faults: Arc::new(plan),
            ..quiet()
        })
        .await
        .unwrap()
    }

    fn quiet() -> Config {
        Config {
            rate: 0.0,
            keepalive: Duration::from_millis(50),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn auth_and_rooms() {
        let emu = Emulator::start(Config {
            rooms: vec![111, 222],
            restricted_rooms: vec![222],
            ..quiet()
        })
        .await
        .unwrap();
        let addr = emu.addr();
        let cases = [
            (None, "/room/111/live.json", "401"),
            (Some(auth("wrong", "x")), "/room/111/live.json", "401"),
            (Some(auth(DEFAULT_TOKEN, "y")), "/room/111/live.json", "401"),
            (Some(auth(DEFAULT_TOKEN, "x")), "/room/999/live.json", "404"),
            (Some(auth(DEFAULT_TOKEN, "x")), "/room/abc/live.json", "404"),
            (Some(auth(DEFAULT_TOKEN, "X")), "/room/222/live.json", "403"),
            (Some(auth(DEFAULT_TOKEN, "X")), "/room/111/live.json", "200"),
        ];
        let n = cases.len();
        for (a, path, want) in cases {
            let mut s = request(addr, "GET", path, a).await;
            let got = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
            assert!(
                got.starts_with(&format!("HTTP/1.1 {want}")),
                "{path}: {got}"
            );
            if want == "401" {
                assert!(got.to_ascii_lowercase().contains("www-authenticate"));
            }
            if want == "200" {
                assert!(got.contains("application/json"));
            }
        }
        assert_eq!(emu.requests().len(), n);
        emu.stop().await;
    }

    #[tokio::test]
    async fn streams_messages_with_cr_and_keepalives() {
        let emu = Emulator::start(quiet()).await.unwrap();
        let mut s = open_live(&emu).await;
        let head = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let id = emu.inject_text(111, "hello there");
        let got = read_until(&mut s, |t| {
            t.contains("hello there") && t.matches(' ').count() > 3
        })
        .await;
        assert!(got.contains(&format!("\"id\":{id}")), "{got}");
        assert!(got.contains("\"type\":\"TextMessage\""));
        assert!(got.contains("\"starred\":\""), "{got}");
        assert!(got.contains("hello there\""));
        // The frame ends with a lone CR (chunked encoding adds its own CRLFs after it).
        let msg_end = got.find("}\r").expect("frame terminated by CR");
        assert!(got[msg_end..].len() > 2);
        let committed = emu.committed();
        assert_eq!(committed.len(), 1);
        assert_eq!(committed[0].body.as_deref(), Some("hello there"));
        emu.stop().await;
    }

    #[tokio::test]
    async fn recent_pages_since_and_records_it() {
        let emu = Emulator::start(Config {
            recent_limit: 3,
            ..quiet()
        })
        .await
        .unwrap();
        let ids: Vec<u64> = (0..5)
            .map(|i| emu.inject_text(111, &format!("m{i}")))
            .collect();
        let mut s = request(
            emu.addr(),
            "GET",
            &format!("/room/111/recent.json?since_message_id={}", ids[0]),
            Some(auth(DEFAULT_TOKEN, "x")),
        )
        .await;
        let got = read_until(&mut s, |t| t.contains("]}")).await;
        let body = &got[got.find("{\"messages\"").unwrap()..];
        let v: Value = serde_json::from_str(body.trim()).unwrap();
        let got_ids: Vec<u64> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        assert_eq!(got_ids, ids[1..4].to_vec());
        assert!(v["messages"][0]["starred"].is_boolean());
        assert!(
            v["messages"][0]["created_at"]
                .as_str()
                .unwrap()
                .ends_with("+0000")
        );
        assert_eq!(emu.since_message_ids(), vec![Some(ids[0])]);
        emu.stop().await;
    }

    #[tokio::test]
    async fn join_records_membership_and_enables_streaming() {
        let emu = Emulator::start(Config {
            require_join: true,
            ..quiet()
        })
        .await
        .unwrap();
        let a = || Some(auth(DEFAULT_TOKEN, "x"));
        let mut s = request(emu.addr(), "GET", "/room/111/live.json", a()).await;
        let got = read_until(&mut s, |t| t.contains("join.json")).await;
        assert!(got.starts_with("HTTP/1.1 403"), "{got}");
        assert!(got.contains("You must join the room"), "{got}");
        let mut s = request(emu.addr(), "POST", "/room/111/join.json", a()).await;
        let got = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(emu.has_joined(DEFAULT_TOKEN, 111));
        assert_eq!(emu.committed()[0].kind, "EnterMessage");
        let mut s = request(emu.addr(), "GET", "/room/111/live.json", a()).await;
        let got = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        emu.stop().await;
    }

    #[tokio::test]
    async fn faults_status_drop_and_malformed() {
        let plan = FaultPlan::script([
            vec![Fault::Status {
                code: 503,
                retry_after: Some(4),
            }],
            vec![Fault::Status {
                code: 400,
                retry_after: None,
            }],
            vec![Fault::Malformed, Fault::DropAfterBytes(40)],
        ]);
        let emu = start_with_faults(plan).await;
        let a = || Some(auth(DEFAULT_TOKEN, "x"));
        let mut s = request(emu.addr(), "GET", "/room/111/live.json", a()).await;
        let got = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
        assert!(got.starts_with("HTTP/1.1 503"), "{got}");
        assert!(got.to_ascii_lowercase().contains("retry-after: 4"), "{got}");
        let mut s = request(emu.addr(), "GET", "/room/111/live.json", a()).await;
        let got = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
        let mut s = request(emu.addr(), "GET", "/room/111/live.json", a()).await;
        let _ = read_until(&mut s, |t| t.contains("\"id\":\r")).await;
        emu.inject_text(111, "a message long enough to be cut in the middle");
        // The connection is cut after 40 body bytes: the read ends (EOF) without the
        // chunked terminator and without the whole message.
        let got = read_until(&mut s, |_| false).await;
        assert!(!got.contains("cut in the middle"), "{got}");
        assert!(!got.contains("\r\n0\r\n\r\n"), "{got}");
        emu.stop().await;
    }

    #[tokio::test]
    async fn refuse_closes_without_a_response() {
        let plan = FaultPlan::script([vec![Fault::Refuse]]);
        let emu = start_with_faults(plan).await;
        let mut s = open_live(&emu).await;
        let got = read_until(&mut s, |_| false).await;
        // Not a byte of response: the connection is closed at once.
        assert!(got.is_empty(), "{got:?}");
        emu.stop().await;
    }

    #[tokio::test]
    async fn users_have_names() {
        let emu = Emulator::start(quiet()).await.unwrap();
        let a = || Some(auth(DEFAULT_TOKEN, "x"));
        let mut s = request(emu.addr(), "GET", "/users/2.json", a()).await;
        let got = read_until(&mut s, |t| t.contains("}}")).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(
            got.contains(&format!("\"name\":\"{}\"", PEOPLE[1])),
            "{got}"
        );
        let mut s = request(emu.addr(), "GET", "/users/99.json", a()).await;
        let got = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
        assert!(got.starts_with("HTTP/1.1 404"), "{got}");
        let mut s = request(emu.addr(), "GET", "/users/2.json", None).await;
        let got = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
        assert!(got.starts_with("HTTP/1.1 401"), "{got}");
        emu.stop().await;
    }

    #[tokio::test]
    async fn stall_without_keepalives_then_resume() {
        let plan = FaultPlan::script([vec![Fault::Stall {
            keepalives: false,
            duration: Some(Duration::from_millis(400)),
        }]]);
        let emu = start_with_faults(plan).await;
        let mut s = open_live(&emu).await;
        let head = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
        assert!(head.starts_with("HTTP/1.1 200"));
        emu.inject_text(111, "held back");
        // Nothing (not even a keep-alive) during the stall; then the message arrives.
        let early = tokio::time::timeout(Duration::from_millis(150), s.read(&mut [0u8; 64])).await;
        assert!(early.is_err(), "bytes arrived during a silent stall");
        let got = read_until(&mut s, |t| t.contains("held back")).await;
        assert!(got.contains("held back"));
        emu.stop().await;
    }

    #[tokio::test]
    async fn generated_traffic_covers_types_and_ids_increase() {
        let emu = Emulator::start(quiet()).await.unwrap();
        for _ in 0..600 {
            emu.inject_generated(111);
        }
        let c = emu.committed();
        assert!(c.windows(2).all(|w| w[0].id < w[1].id));
        let kinds: HashSet<&str> = c.iter().map(|m| m.kind.as_str()).collect();
        assert!(kinds.len() >= 15, "{kinds:?}");
        let text = c.iter().filter(|m| m.kind == "TextMessage").count();
        assert!(text > c.len() / 2);
        for m in &c {
            if m.kind == "TimestampMessage" {
                assert_eq!(m.user_id, None);
                assert_eq!(m.body, None);
            }
        }
        emu.stop().await;
    }

    #[tokio::test]
    async fn stop_ends_open_streams() {
        let emu = Emulator::start(quiet()).await.unwrap();
        let mut s = open_live(&emu).await;
        let _ = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
        tokio::time::timeout(Duration::from_secs(10), emu.stop())
            .await
            .expect("stop is prompt");
        let rest = read_until(&mut s, |_| false).await;
        let _ = rest;
    }

    #[tokio::test]
    async fn layouts_are_multi_line_frames_terminated_by_cr() {
        for (layout, crlf) in [
            (Layout::Document, false),
            (Layout::Pretty, true),
            (Layout::Compact, true),
        ] {
            let emu = Emulator::start(Config {
                layout,
                crlf,
                ..quiet()
            })
            .await
            .unwrap();
            let mut s = open_live(&emu).await;
            let _ = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
            let id = emu.inject(111, "PasteMessage", Some("one\ntwo"), Some(2));
            let got = read_until(&mut s, |t| t.contains("\"starred\"") && t.contains("}\r")).await;
            // After the head: chunk-size lines, keep-alives, then the frame in one chunk.
            let body = got.as_str();
            let start = body.find('{').unwrap();
            let end = body.rfind("}\r").unwrap() + 1;
            let frame = &body[start..end];
            // One frame per object: a `\n` inside it unless compact, never a `\r`.
            assert_eq!(frame.contains('\n'), layout != Layout::Compact, "{frame:?}");
            assert!(!frame.contains('\r'), "{frame:?}");
            if crlf {
                assert!(body[end..].starts_with("\r\n"), "{body:?}");
            }
            let v: Value = serde_json::from_str(frame).unwrap();
            assert_eq!(v["id"], id);
            assert_eq!(v["body"], "one\ntwo");
            emu.stop().await;
        }
        let doc = Layout::Document.render(&json!({"a": 1, "b": null, "c": "x"}));
        assert_eq!(doc, "{\"a\":1,\"b\":null,\n \"c\":\"x\"}");
    }

    #[tokio::test]
    async fn ids_are_never_reissued_after_a_restart() {
        let emu = Emulator::start(quiet()).await.unwrap();
        let first = emu.inject_text(111, "before the restart");
        let second = emu.inject_text(111, "also before");
        assert_eq!(second, first + 1);
        // Microseconds since the epoch: a 2020s date, exact in a JavaScript number.
        assert!(
            first > 1_500_000_000_000_000 && first < (1 << 53),
            "{first}"
        );
        emu.stop().await;
        let again = Emulator::start(quiet()).await.unwrap();
        let after = again.inject_text(111, "after the restart");
        assert!(after > second, "{after} <= {second}");
        again.stop().await;
        let fixed = Emulator::start(Config {
            first_id: Some(5),
            ..quiet()
        })
        .await
        .unwrap();
        assert_eq!(fixed.inject_text(111, "x"), 5);
        fixed.stop().await;
    }

    #[tokio::test]
    async fn end_streams_finishes_the_response_cleanly() {
        let emu = Emulator::start(quiet()).await.unwrap();
        let mut s = open_live(&emu).await;
        let _ = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
        assert!(common_eventually(|| emu.open_streams() == 1).await);
        emu.end_streams();
        // The chunked terminator: a clean end, not a cut.
        let got = read_until(&mut s, |t| t.ends_with("0\r\n\r\n")).await;
        assert!(got.ends_with("0\r\n\r\n"), "{got:?}");
        assert!(common_eventually(|| emu.open_streams() == 0).await);
        // The server still serves new streams.
        let mut s = open_live(&emu).await;
        let head = read_until(&mut s, |t| t.contains("\r\n\r\n")).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        emu.stop().await;
    }

    async fn common_eventually(cond: impl Fn() -> bool) -> bool {
        for _ in 0..1000 {
            if cond() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cond()
    }

    #[test]
    fn snippet_is_toml_like() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let emu = Emulator::start(quiet()).await.unwrap();
            let s = emu.config_snippet("ops");
            assert!(s.contains("service = \"campfire\""));
            assert!(s.contains("room = 111"));
            assert!(s.contains(&emu.url()));
            emu.stop().await;
        });
    }
}
