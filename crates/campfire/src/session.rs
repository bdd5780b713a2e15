//! The sans-IO core of one connection: the whole plan (start position, join, subscribe,
//! backfill, author names) as [`Request`]s out and [`Response`]s in, the live body as bytes
//! in, and [`SourceItem`]s, the resume cursor and the next deadline out. It reads no clock
//! and does no IO; [`crate::Client`] executes it over HTTP.
//!
//! The plan of one connection:
//! 1. Without a resume position (and with a REST API to backfill from), the start is the
//!    room's latest message id: given in [`SessionConfig::baseline`] by an earlier session,
//!    or asked for with `recent.json?limit=1` before anything else ([`Purpose::Latest`]), so
//!    nothing posted between "now" and the first live message is lost.
//! 2. With [`SessionConfig::join`], `POST join.json` ([`Purpose::Join`]).
//! 3. `GET live.json` ([`Purpose::Live`]); a 403 before joining makes the session join and
//!    ask once more when a REST API is known, and is [`Error::NotJoined`] when none is.
//! 4. With a position to resume from, `recent.json?since_message_id=` pages of
//!    [`RECENT_LIMIT`] ([`Purpose::Recent`], at most [`MAX_BACKFILL_PAGES`]), yielded in id
//!    order before the first live message; a resume position the server knows nothing after
//!    is checked against the room's latest id (a reset server's ids go backwards).
//! 5. Streaming: the body through [`Session::handle_chunk`]; authors' names are looked up
//!    (`GET users/{id}.json`, [`Purpose::User`], once per id) before their events are yielded.
//!
//! Framing follows NOTES.md: one JSON object per frame, frames separated by `\r` only. A
//! `\n` is never a boundary: an object laid out over several lines (as the document's own
//! example response is) or a body with a raw line feed stays one frame, a `\r\n` ending is a
//! boundary followed by whitespace, and whitespace between frames (Campfire's single space
//! every ~3 s) is a keep-alive.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chat_model::{Cursor, DisconnectReason, SourceItem, StatusClass};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stream_frame::{Chunk, Decode, Delimiter, Frame, Item, JsonLinesDecoder, Limits};

use crate::error::{Endpoint, Error};
use crate::map::into_event;
use crate::wire::{Message, RecentMessages};

/// The most messages `recent.json` returns per request.
pub const RECENT_LIMIT: usize = 100;

/// The most `recent.json` pages one backfill fetches (100 × 100 messages).
pub const MAX_BACKFILL_PAGES: usize = 100;

/// Campfire's resume position: the id of the last message delivered.
///
/// Stored in a [`chat_model::Cursor`] with [`CampfireCursor::to_cursor`]; on reconnect the
/// session backfills every message with a larger id from `recent.json?since_message_id=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampfireCursor {
    /// The id of the last message delivered.
    pub last_message_id: u64,
}

impl CampfireCursor {
    /// Wraps this position in the opaque cursor the supervisor stores.
    pub fn to_cursor(self) -> Cursor {
        Cursor::from_typed(&self)
    }

    /// Reads a position back from a stored cursor.
    pub fn from_cursor(cursor: &Cursor) -> Result<Self, chat_model::CursorError> {
        cursor.to_typed()
    }
}

/// The settings of one [`Session`]: plain values, no URLs or secrets.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The source name put on every event (`Event::source`).
    pub source: String,
    /// The room id.
    pub room: u64,
    /// Whether a REST API is known (join, backfill and name lookups need one).
    pub api: bool,
    /// Join the room before streaming.
    pub join: bool,
    /// Backfill missed messages from `recent.json` when resuming.
    pub backfill: bool,
    /// End the stream with [`DisconnectReason::Stalled`] after this much silence (see
    /// [`Session::poll_timeout`]); `None` leaves liveness to the caller.
    pub idle_timeout: Option<Duration>,
    /// Frame size limit.
    pub limits: Limits,
    /// Keep each message's wire object in `Event::raw`.
    pub keep_raw: bool,
    /// Fill in author names with `GET users/{id}.json` (needs [`SessionConfig::api`]).
    pub resolve_names: bool,
    /// The start position an earlier session without a resume position fixed.
    pub baseline: Option<CampfireCursor>,
    /// Author names already known (`None`: the lookup failed; it is not repeated).
    pub names: HashMap<u64, Option<String>>,
}

impl SessionConfig {
    /// Settings for `room`: a REST API known, no join, backfill and name lookups on, raw
    /// kept, no idle timeout.
    pub fn new(room: u64) -> Self {
        SessionConfig {
            source: "campfire".to_owned(),
            room,
            api: true,
            join: false,
            backfill: true,
            idle_timeout: None,
            limits: Limits::default(),
            keep_raw: true,
            resolve_names: true,
            baseline: None,
            names: HashMap::new(),
        }
    }

    /// Whether resuming backfills (backfill on and a REST API known).
    pub fn can_backfill(&self) -> bool {
        self.backfill && self.api
    }
}

/// What a [`Request`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purpose {
    /// The room's latest message id: `GET recent.json?limit=1`.
    Latest,
    /// Join the room: `POST room/{id}/join.json`.
    Join,
    /// Subscribe: `GET room/{id}/live.json`, whose body is the stream.
    Live,
    /// One backfill page: `GET recent.json?since_message_id=N&limit=100`.
    Recent {
        /// The id the page starts after.
        since: Option<u64>,
    },
    /// An author's name: `GET users/{id}.json`.
    User {
        /// The user id.
        id: u64,
    },
}

impl Purpose {
    /// The endpoint a request for this purpose goes to.
    pub fn endpoint(self) -> Endpoint {
        match self {
            Purpose::Latest | Purpose::Recent { .. } => Endpoint::Recent,
            Purpose::Join => Endpoint::Join,
            Purpose::Live => Endpoint::Live,
            Purpose::User { .. } => Endpoint::User,
        }
    }
}

/// An HTTP method a [`Request`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST` (with an empty body).
    Post,
}

/// Which base URL a [`Request`] goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// The streaming host (`live.json`).
    Streaming,
    /// The REST API host (join, recent, users).
    Api,
}

/// One HTTP request the session wants sent; the caller adds the base URL, basic auth
/// (token, `x`) and its user agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What it is for; hand it back with the answer.
    pub purpose: Purpose,
    /// The method.
    pub method: Method,
    /// The base URL it goes to.
    pub host: Host,
    /// The path, relative to the base URL (`room/111/live.json`).
    pub path: String,
    /// Query parameters, in order.
    pub query: Vec<(&'static str, String)>,
    /// Request headers.
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Request {
    /// The request for `purpose` in `room`.
    pub fn new(purpose: Purpose, room: u64) -> Request {
        let recent = |since: Option<u64>, limit: usize| {
            let mut query: Vec<_> = since
                .map(|s| ("since_message_id", s.to_string()))
                .into_iter()
                .collect();
            query.push(("limit", limit.to_string()));
            (
                Method::Get,
                Host::Api,
                format!("room/{room}/recent.json"),
                query,
            )
        };
        let (method, host, path, query) = match purpose {
            Purpose::Latest => recent(None, 1),
            Purpose::Recent { since } => recent(since, RECENT_LIMIT),
            Purpose::Join => (
                Method::Post,
                Host::Api,
                format!("room/{room}/join.json"),
                vec![],
            ),
            Purpose::Live => (
                Method::Get,
                Host::Streaming,
                format!("room/{room}/live.json"),
                vec![],
            ),
            Purpose::User { id } => (Method::Get, Host::Api, format!("users/{id}.json"), vec![]),
        };
        let mut headers = vec![("accept", "application/json")];
        if method == Method::Post {
            headers.push(("content-type", "application/json"));
        }
        Request {
            purpose,
            method,
            host,
            path,
            query,
            headers,
        }
    }

    /// Whether the answer's body is the live stream (feed it with [`Session::handle_chunk`]
    /// after a successful head, instead of reading it whole).
    pub fn is_stream(&self) -> bool {
        self.purpose == Purpose::Live
    }
}

/// An HTTP answer, as the session needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` delay (read with [`chat_model::parse_retry_after`]).
    pub retry_after: Option<Duration>,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The whole body; empty for the head of a live stream (its body goes to
    /// [`Session::handle_chunk`]). For an error status, its start is enough.
    pub body: Vec<u8>,
}

impl Response {
    /// An answer with `status` and `body` and no other header.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            body: body.into(),
            ..Response::default()
        }
    }

    /// Fails with [`Error::Status`] unless the status is a success.
    pub fn check(&self, room: u64, endpoint: Endpoint) -> Result<(), Error> {
        if StatusClass::of(self.status) == StatusClass::Success {
            return Ok(());
        }
        let body = String::from_utf8_lossy(&self.body);
        Err(Error::Status {
            room,
            endpoint,
            status: self.status,
            retry_after: self.retry_after,
            body: body.trim().chars().take(200).collect(),
        })
    }

    /// Fails with [`Error::Protocol`] when the content type is neither JSON nor plain text.
    fn check_json(&self, room: u64, endpoint: Endpoint) -> Result<(), Error> {
        let ct = self
            .content_type
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        if self.content_type.is_none() || ct.contains("json") || ct.starts_with("text/plain") {
            return Ok(());
        }
        Err(Error::Protocol {
            room,
            endpoint,
            message: format!("expected a JSON response, got content type {ct:?}"),
        })
    }

    /// The messages of a `recent.json` answer (checked), as the server listed them.
    pub fn recent_messages(&self, room: u64) -> Result<Vec<Value>, Error> {
        self.check(room, Endpoint::Recent)?;
        self.check_json(room, Endpoint::Recent)?;
        serde_json::from_slice::<RecentMessages>(&self.body)
            .map(|r| r.messages)
            .map_err(|e| Error::Protocol {
                room,
                endpoint: Endpoint::Recent,
                message: format!("the answer is not a list of messages: {e}"),
            })
    }

    /// The name in a `users/{id}.json` answer (`{"user": {"name": ...}}`), if it has one.
    pub fn user_name(&self, room: u64) -> Result<Option<String>, Error> {
        self.check(room, Endpoint::User)?;
        let v: Value = serde_json::from_slice(&self.body).map_err(|e| Error::Protocol {
            room,
            endpoint: Endpoint::User,
            message: format!("not JSON: {e}"),
        })?;
        let user = v.get("user").unwrap_or(&v);
        Ok(user.get("name").and_then(Value::as_str).map(str::to_owned))
    }
}

/// The paging of one backfill: `recent.json` pages after `since` until one is not full.
#[derive(Debug)]
pub(crate) struct Pager {
    room: u64,
    since: Option<u64>,
    pages: usize,
    messages: Vec<Value>,
}

impl Pager {
    pub(crate) fn new(room: u64, since: Option<u64>) -> Self {
        Pager {
            room,
            since,
            pages: 0,
            messages: Vec::new(),
        }
    }

    /// The request for the next page.
    pub(crate) fn request(&self) -> Request {
        Request::new(Purpose::Recent { since: self.since }, self.room)
    }

    /// Takes one page; `true` when another is to be fetched.
    pub(crate) fn handle(&mut self, response: &Response) -> Result<bool, Error> {
        let page = response.recent_messages(self.room)?;
        self.pages += 1;
        let full = page.len() >= RECENT_LIMIT;
        let max = page
            .iter()
            .filter_map(|m| m.get("id").and_then(id_of))
            .max();
        self.messages.extend(page);
        match (full, max) {
            (true, Some(max)) if self.since.is_none_or(|s| max > s) => {
                self.since = Some(max);
                if self.pages < MAX_BACKFILL_PAGES {
                    return Ok(true);
                }
                tracing::warn!(
                    room = self.room,
                    pages = MAX_BACKFILL_PAGES,
                    "backfill stopped after the page limit; older missed messages are not fetched"
                );
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Every message fetched, as the server listed them.
    pub(crate) fn into_messages(self) -> Vec<Value> {
        self.messages
    }
}

/// A decoded piece of the live stream waiting to become items.
#[derive(Debug)]
enum Pending {
    /// A frame, keep-alive or framing error.
    Frame(Item<Frame>),
    /// The end of a chunk: one with `bytes` that yielded no keep-alive and no event yields a
    /// keep-alive here.
    ChunkEnd {
        /// Whether the chunk had any bytes.
        bytes: bool,
    },
}

/// Where the connection plan is.
#[derive(Debug)]
enum Phase {
    /// Learning the room's latest id (the start position).
    Start,
    /// Joining the room.
    Join,
    /// Subscribing to `live.json`.
    Live,
    /// Subscribed; fetching what was missed.
    Backfill(Pager),
    /// Subscribed, nothing missed: checking the resume position against the latest id.
    ResetCheck,
    /// Streaming (possibly ended: see `Session::ended`).
    Streaming,
}

/// One connection to a Campfire room, without IO: see the [module docs](self).
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    phase: Phase,
    awaiting: Option<Purpose>,
    joined: bool,
    decoder: JsonLinesDecoder,
    frames: Vec<Item<Frame>>,
    resume: Option<u64>,
    last: Option<u64>,
    start: Option<CampfireCursor>,
    baseline: Option<CampfireCursor>,
    backfilled: HashSet<u64>,
    items: VecDeque<SourceItem>,
    /// Decoded frames of the live stream not yet turned into items, with the chunk ends.
    pending: VecDeque<Pending>,
    /// Whether the chunk being turned into items yielded a keep-alive or an event so far.
    alive: bool,
    idle_since: Option<Instant>,
    error: Option<Error>,
    ended: Option<DisconnectReason>,
}

impl Session {
    /// A session for `config.room`, resuming after `resume` when given.
    pub fn new(config: SessionConfig, resume: Option<CampfireCursor>) -> Self {
        let mut start = None;
        let resume = match resume {
            Some(c) => Some(c),
            None if config.can_backfill() => {
                start = config.baseline;
                start
            }
            None => None,
        };
        let phase = if resume.is_none() && config.can_backfill() {
            Phase::Start
        } else if config.join {
            Phase::Join
        } else {
            Phase::Live
        };
        let resume = resume.map(|c| c.last_message_id);
        Session {
            // `\r` only: a `\n` may occur inside a frame (see the module docs).
            decoder: JsonLinesDecoder::new(Delimiter::Cr, config.limits),
            baseline: start,
            config,
            phase,
            awaiting: None,
            joined: false,
            frames: Vec::new(),
            resume,
            last: resume,
            start,
            backfilled: HashSet::new(),
            items: VecDeque::new(),
            pending: VecDeque::new(),
            alive: false,
            idle_since: None,
            error: None,
            ended: None,
        }
    }

    /// The position after the last message delivered (or the resume position).
    pub fn cursor(&self) -> Option<CampfireCursor> {
        self.last
            .map(|last_message_id| CampfireCursor { last_message_id })
    }

    /// The resume position this session started from.
    pub fn resumed_from(&self) -> Option<CampfireCursor> {
        self.resume
            .map(|last_message_id| CampfireCursor { last_message_id })
    }

    /// The start position of a session without a resume position, once known; keep it for
    /// the next such session ([`SessionConfig::baseline`]).
    pub fn baseline(&self) -> Option<CampfireCursor> {
        self.baseline
    }

    /// The author names learned so far (and those given in the config).
    pub fn names(&self) -> &HashMap<u64, Option<String>> {
        &self.config.names
    }

    /// Whether the plan is done and the live body is being decoded.
    pub fn is_streaming(&self) -> bool {
        matches!(self.phase, Phase::Streaming)
    }

    /// Why the connection ended, once it has: the same reason every time.
    pub fn ended(&self) -> Option<&DisconnectReason> {
        self.ended.as_ref()
    }

    /// The typed error that ended the connection, once (later calls return `None`;
    /// [`Session::ended`] keeps the reason).
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// The next request to send, if any; one at a time, answered with
    /// [`Session::handle_response`] or [`Session::handle_error`].
    pub fn poll_request(&mut self) -> Option<Request> {
        if self.awaiting.is_some() || (self.ended.is_some() && !self.is_streaming()) {
            return None;
        }
        let purpose = match &self.phase {
            Phase::Start | Phase::ResetCheck => Purpose::Latest,
            Phase::Join => Purpose::Join,
            Phase::Live => Purpose::Live,
            Phase::Backfill(pager) => pager.request().purpose,
            Phase::Streaming => {
                while self.items.is_empty() && self.process_one() {}
                Purpose::User {
                    id: self.name_needed()?,
                }
            }
        };
        self.awaiting = Some(purpose);
        Some(Request::new(purpose, self.config.room))
    }

    /// Takes the answer to the request for `purpose`; for [`Purpose::Live`], the head (the
    /// body then goes to [`Session::handle_chunk`]).
    pub fn handle_response(&mut self, purpose: Purpose, response: Response, now: Instant) {
        if self.awaiting != Some(purpose) {
            tracing::debug!(
                room = self.config.room,
                ?purpose,
                "unexpected answer ignored"
            );
            return;
        }
        self.awaiting = None;
        let room = self.config.room;
        if let Purpose::User { id } = purpose {
            let name = response.user_name(room).unwrap_or_else(|e| {
                tracing::warn!(room, user = id, error = %e, "cannot look up a Campfire user name");
                None
            });
            return self.learn_name(id, name, now);
        }
        if let Err(e) = self.advance(purpose, &response, now) {
            self.fail(e);
        }
    }

    /// Takes the failure of the request for `purpose` (or of the live body) to get an
    /// answer: `message` says what happened (timed out, cannot connect, ...).
    pub fn handle_error(&mut self, purpose: Purpose, message: String, now: Instant) {
        if self.awaiting == Some(purpose) {
            self.awaiting = None;
        }
        if let Purpose::User { id } = purpose {
            tracing::warn!(room = self.config.room, user = id, error = %message, "cannot look up a Campfire user name");
            return self.learn_name(id, None, now);
        }
        if self.ended.is_none() {
            self.fail(Error::Network {
                room: self.config.room,
                endpoint: purpose.endpoint(),
                message,
            });
        }
    }

    /// Decodes the next chunk of the live body: a `&Bytes` as the HTTP client delivers it
    /// (frames are then slices of it, without copying) or any `&[u8]`. Any bytes are proof of
    /// life (see [`Session::poll_timeout`]).
    pub fn handle_chunk<'a>(&mut self, chunk: impl Into<Chunk<'a>>, now: Instant) {
        if self.ended.is_some() {
            return;
        }
        match self.phase {
            Phase::Streaming => {
                self.idle_since = Some(now);
                self.take_chunk(chunk.into());
            }
            // Subscribed, still backfilling: decoded now, delivered after the backfill.
            Phase::Backfill(_) | Phase::ResetCheck => {
                self.decoder.feed_chunk(chunk.into(), &mut self.frames);
                self.pending
                    .extend(self.frames.drain(..).map(Pending::Frame));
            }
            _ => tracing::debug!(room = self.config.room, "bytes before the stream ignored"),
        }
    }

    /// The live body ended cleanly: a last unterminated frame is still decoded, then the
    /// connection ends with [`DisconnectReason::EndOfStream`].
    pub fn handle_end(&mut self, now: Instant) {
        if self.ended.is_some() {
            return;
        }
        self.idle_since = Some(now);
        self.take_end();
        self.ended = Some(DisconnectReason::EndOfStream);
    }

    /// When [`Session::handle_timeout`] is next due: the idle timeout after the last bytes,
    /// while streaming (not while a name lookup is out).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.is_streaming() || self.ended.is_some() || self.awaiting.is_some() {
            return None;
        }
        Some(self.idle_since? + self.config.idle_timeout?)
    }

    /// Checks the timer at `now`: silence for the idle timeout ends the connection with
    /// [`DisconnectReason::Stalled`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if let (Some(at), Some(idle)) = (self.poll_timeout(), self.config.idle_timeout) {
            if now >= at {
                self.fail(Error::Stalled {
                    room: self.config.room,
                    idle,
                });
            }
        }
    }

    /// The next item: the start position, backfilled messages, then live messages,
    /// keep-alives and malformed-frame reports. An event whose author's name is being looked
    /// up waits for it (see [`Session::poll_request`]).
    pub fn poll_item(&mut self) -> Option<SourceItem> {
        let mut item = loop {
            if self.name_needed().is_some() {
                return None;
            }
            if let Some(item) = self.items.pop_front() {
                break item;
            }
            // Frames are turned into items as they are asked for, so a chunk of many
            // messages never sits in the queue as events.
            if !(self.is_streaming() && self.process_one()) {
                self.release();
                return None;
            }
        };
        if let (true, SourceItem::Event { event, .. }) = (self.resolving(), &mut item) {
            if event.author.name.is_none() {
                if let Some(id) = event.author.id.as_deref().and_then(|i| i.parse().ok()) {
                    event.author.name = self.config.names.get(&id).cloned().flatten();
                }
            }
        }
        Some(item)
    }

    /// Gives back the memory of a burst once its items are all taken: an idle connection
    /// does not keep the queues at their peak size.
    fn release(&mut self) {
        const KEEP: usize = 16;
        if self.items.capacity() > KEEP {
            self.items.shrink_to_fit();
        }
        if self.pending.capacity() > KEEP {
            self.pending.shrink_to_fit();
        }
        if self.frames.capacity() > KEEP {
            self.frames.shrink_to_fit();
        }
    }

    fn resolving(&self) -> bool {
        self.config.resolve_names && self.config.api
    }

    /// The user id whose name the next event waits for.
    fn name_needed(&self) -> Option<u64> {
        let SourceItem::Event { event, .. } = self.items.front()? else {
            return None;
        };
        // Names known when the event was made are filled in already: no lookup here.
        if event.author.name.is_some() || !self.resolving() {
            return None;
        }
        let id = event.author.id.as_deref()?.parse().ok()?;
        (!self.config.names.contains_key(&id)).then_some(id)
    }

    fn learn_name(&mut self, id: u64, name: Option<String>, now: Instant) {
        self.config.names.insert(id, name);
        // No bytes were read while the lookup was out: the idle clock restarts.
        self.idle_since = self.idle_since.map(|_| now);
    }

    fn fail(&mut self, e: Error) {
        tracing::debug!(room = self.config.room, error = %e, "Campfire connection ended");
        self.ended = Some(e.to_reason());
        self.error = Some(e);
    }

    /// One step of the plan, on the answer for `purpose`.
    fn advance(&mut self, purpose: Purpose, r: &Response, now: Instant) -> Result<(), Error> {
        let room = self.config.room;
        match (purpose, &mut self.phase) {
            (Purpose::Latest, Phase::Start) => {
                let latest = latest(room, r)?;
                self.start = Some(latest);
                self.baseline = Some(latest);
                self.resume = Some(latest.last_message_id);
                self.last = self.resume;
                self.phase = if self.config.join {
                    Phase::Join
                } else {
                    Phase::Live
                };
            }
            (Purpose::Join, Phase::Join) => {
                r.check(room, Endpoint::Join)?;
                tracing::debug!(room, "joined Campfire room");
                self.joined = true;
                self.phase = Phase::Live;
            }
            (Purpose::Live, Phase::Live) => {
                match r.check(room, Endpoint::Live) {
                    Err(Error::Status {
                        status: 403, body, ..
                    }) if !self.joined => {
                        if !self.config.api {
                            return Err(Error::NotJoined {
                                room,
                                status: 403,
                                body,
                            });
                        }
                        tracing::info!(
                            room,
                            "live.json answered HTTP 403: joining the room (the streaming API serves only joined rooms)"
                        );
                        self.joined = true;
                        self.phase = Phase::Join;
                        return Ok(());
                    }
                    other => other?,
                }
                r.check_json(room, Endpoint::Live)?;
                tracing::debug!(room, "streaming");
                // Subscribed before the backfill is fetched, so nothing posted in between is
                // lost; what both deliver is dropped once.
                match self.resume {
                    Some(since) if self.config.can_backfill() => {
                        self.phase = Phase::Backfill(Pager::new(room, Some(since)));
                    }
                    _ => self.begin_streaming(Vec::new(), now),
                }
            }
            (Purpose::Recent { .. }, Phase::Backfill(pager)) => {
                if pager.handle(r)? {
                    return Ok(());
                }
                let Phase::Backfill(pager) = std::mem::replace(&mut self.phase, Phase::Live) else {
                    unreachable!("matched above")
                };
                let missed = pager.into_messages();
                tracing::debug!(room, since = ?self.resume, count = missed.len(), "backfilled from recent.json");
                if missed.is_empty() && self.start.is_none() {
                    // A position from outside (a saved cursor) that the server knows nothing
                    // after: check that its ids did not go backwards.
                    self.phase = Phase::ResetCheck;
                } else {
                    self.begin_streaming(missed, now);
                }
            }
            (Purpose::Latest, Phase::ResetCheck) => {
                let latest = latest(room, r)?;
                if let Some(cursor) = self.resume.filter(|&c| latest.last_message_id < c) {
                    tracing::warn!(
                        room,
                        cursor,
                        latest = latest.last_message_id,
                        "the Campfire server's message ids went backwards (a reset server?): \
                         its latest id is below the saved position; taking the server's position"
                    );
                    self.take_position(latest);
                    self.start = Some(latest);
                }
                self.begin_streaming(Vec::new(), now);
            }
            (purpose, phase) => {
                tracing::debug!(room, ?purpose, ?phase, "answer out of plan ignored");
            }
        }
        Ok(())
    }

    /// The plan is done: the start position, then the backfill, then what the live stream
    /// already sent.
    fn begin_streaming(&mut self, missed: Vec<Value>, now: Instant) {
        let mut out = std::mem::take(&mut self.items);
        if let Some(start) = self.start {
            out.push_back(SourceItem::Cursor(start.to_cursor()));
        }
        self.backfill(missed, &mut out);
        self.items = out;
        // What the stream sent during the backfill is no chunk of its own.
        self.pending.push_back(Pending::ChunkEnd { bytes: false });
        self.phase = Phase::Streaming;
        self.idle_since = Some(now);
    }

    /// Takes the server's `position` in place of the resume position, when the server's ids
    /// went backwards (a reset server): no message is dropped as already delivered any more,
    /// and cursors continue from `position`.
    fn take_position(&mut self, position: CampfireCursor) {
        self.resume = None;
        self.last = Some(position.last_message_id);
    }

    /// Delivers the messages of a `recent.json` answer: those after the resume position, in id
    /// order; unreadable ones are reported as malformed.
    fn backfill(&mut self, messages: Vec<Value>, out: &mut VecDeque<SourceItem>) {
        let mut parsed = Vec::with_capacity(messages.len());
        for (index, raw) in messages.into_iter().enumerate() {
            match Message::deserialize(&raw) {
                Ok(m) => parsed.push((m, raw)),
                Err(e) => out.push_back(SourceItem::Malformed {
                    error: format!(
                        "Campfire room {}: backfilled message #{index} from recent.json skipped: {e}",
                        self.config.room
                    ),
                }),
            }
        }
        parsed.sort_by_key(|(m, _)| m.id);
        for (message, raw) in parsed {
            if self.resume.is_some_and(|r| message.id <= r) || !self.backfilled.insert(message.id) {
                continue;
            }
            self.deliver(message, Some(raw), out);
        }
    }

    /// Decodes one chunk of the live stream into pending frames. The decoder reports every
    /// chunk of keep-alive whitespace (each of Campfire's single spaces, seconds apart, is one
    /// [`SourceItem::KeepAlive`]); a chunk that only continues a frame (part of a long
    /// message) completes nothing, so it yields one (see [`Pending::ChunkEnd`]), and a
    /// watchdog never mistakes a quiet room or a slow long frame for a dead stream.
    fn take_chunk(&mut self, chunk: Chunk<'_>) {
        self.decoder.feed_chunk(chunk, &mut self.frames);
        self.pending
            .extend(self.frames.drain(..).map(Pending::Frame));
        self.pending.push_back(Pending::ChunkEnd {
            bytes: !chunk.as_slice().is_empty(),
        });
    }

    /// Ends the live stream: a last unterminated frame is still decoded.
    fn take_end(&mut self) {
        self.decoder.finish_stream(&mut self.frames);
        self.pending
            .extend(self.frames.drain(..).map(Pending::Frame));
    }

    /// Turns the next pending frame into items; `false` when none is pending.
    fn process_one(&mut self) -> bool {
        let Some(next) = self.pending.pop_front() else {
            return false;
        };
        let mut out = std::mem::take(&mut self.items);
        match next {
            Pending::Frame(Item::KeepAlive) => {
                self.alive = true;
                out.push_back(SourceItem::KeepAlive);
            }
            Pending::Frame(Item::Error(e)) => out.push_back(SourceItem::Malformed {
                error: format!("Campfire room {}: {e}", self.config.room),
            }),
            Pending::Frame(Item::Frame(frame)) => self.frame(frame, &mut out),
            Pending::ChunkEnd { bytes } => {
                if bytes && !self.alive {
                    out.push_back(SourceItem::KeepAlive);
                }
                self.alive = false;
            }
        }
        self.items = out;
        true
    }

    /// [`Session::take_chunk`], then every item of it (and of what was pending) into `out`.
    #[cfg(test)]
    fn feed<'a>(&mut self, chunk: impl Into<Chunk<'a>>, out: &mut Vec<SourceItem>) {
        self.take_chunk(chunk.into());
        self.drain(out);
    }

    /// [`Session::take_end`], then every item into `out`.
    #[cfg(test)]
    fn finish(&mut self, out: &mut Vec<SourceItem>) {
        self.take_end();
        self.drain(out);
    }

    #[cfg(test)]
    fn drain(&mut self, out: &mut Vec<SourceItem>) {
        while self.process_one() {}
        out.extend(self.items.drain(..));
    }

    fn frame(&mut self, frame: Frame, out: &mut VecDeque<SourceItem>) {
        // Without `raw`, the common case (one strict JSON object) is read straight into a
        // message; anything else (several objects, raw control characters, a duplicate
        // field, an error to report) takes the general path, which reads it the same way.
        if !self.config.keep_raw {
            if let Ok(message) = serde_json::from_slice::<Message>(&frame.bytes) {
                return self.live(message, None, out);
            }
        }
        let values = match parse_lenient(&frame.bytes) {
            Ok(values) => values,
            Err(e) => return self.malformed(frame.offset, &e.to_string(), out),
        };
        for raw in values {
            let parsed = match raw {
                Value::Object(_) => Message::deserialize(&raw)
                    .map(|m| (m, raw))
                    .map_err(|e| e.to_string()),
                other => Err(format!(
                    "expected a message object, got {}",
                    kind_name(&other)
                )),
            };
            match parsed {
                Ok((message, raw)) => self.live(message, Some(raw), out),
                Err(e) => self.malformed(frame.offset, &e, out),
            }
        }
    }

    /// A message of the live stream: delivered unless the backfill or an earlier
    /// connection did.
    fn live(&mut self, message: Message, raw: Option<Value>, out: &mut VecDeque<SourceItem>) {
        if self.resume.is_some_and(|r| message.id <= r) || self.backfilled.contains(&message.id) {
            tracing::debug!(
                room = self.config.room,
                id = message.id,
                "already delivered"
            );
            return;
        }
        self.deliver(message, raw, out);
    }

    fn malformed(&self, offset: u64, error: &str, out: &mut VecDeque<SourceItem>) {
        out.push_back(SourceItem::Malformed {
            error: format!(
                "Campfire room {}: malformed message skipped (at byte offset {offset}): {error}",
                self.config.room
            ),
        });
    }

    fn deliver(&mut self, message: Message, raw: Option<Value>, out: &mut VecDeque<SourceItem>) {
        let id = message.id;
        let last = self.last.map_or(id, |l| l.max(id));
        self.last = Some(last);
        let c = &self.config;
        let user = message.user_id;
        let mut event = into_event(&c.source, c.room, message, raw.filter(|_| c.keep_raw));
        if let (true, Some(user)) = (self.resolving(), user) {
            if let Some(name) = c.names.get(&user) {
                event.author.name.clone_from(name);
            }
        }
        let cursor = CampfireCursor {
            last_message_id: last,
        };
        self.alive = true;
        out.push_back(SourceItem::Event {
            event,
            cursor: Some(cursor.to_cursor()),
        });
    }
}

/// The room's latest message id (0 for an empty room) in a `recent.json?limit=1` answer.
fn latest(room: u64, response: &Response) -> Result<CampfireCursor, Error> {
    let messages = response.recent_messages(room)?;
    let ids = messages.iter().filter_map(|m| m.get("id").and_then(id_of));
    Ok(CampfireCursor {
        last_message_id: ids.max().unwrap_or(0),
    })
}

/// A message id, as a number or a numeric string.
pub(crate) fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses one frame into the JSON values it holds: normally exactly one. Accepted as well,
/// so that no message is lost to a server's layout:
/// * a string holding raw control characters (a body with a raw line feed or tab, which
///   strict JSON forbids): read with those characters escaped;
/// * several objects in one frame, separated only by whitespace such as `\n` (the
///   document's example response is laid out that way): each is a value.
///
/// When neither reading works the error is the strict parser's.
fn parse_lenient(bytes: &[u8]) -> Result<Vec<Value>, serde_json::Error> {
    let strict = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => return Ok(vec![v]),
        Err(e) => e,
    };
    let escaped = escape_raw_controls(bytes);
    let text = escaped.as_deref().unwrap_or(bytes);
    let values: Result<Vec<Value>, _> = serde_json::Deserializer::from_slice(text)
        .into_iter::<Value>()
        .collect();
    match values {
        Ok(values) if !values.is_empty() => Ok(values),
        _ => Err(strict),
    }
}

/// `bytes` with every raw control character inside a JSON string escaped (`\n`, `\r`, `\t`
/// or `\u00XX`); `None` when there is none.
fn escape_raw_controls(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let (mut in_string, mut escaped) = (false, false);
    for (i, &b) in bytes.iter().enumerate() {
        let raw_control = in_string && !escaped && b < 0x20;
        if raw_control {
            let o = out.get_or_insert_with(|| bytes[..i].to_vec());
            match b {
                b'\n' => o.extend_from_slice(b"\\n"),
                b'\r' => o.extend_from_slice(b"\\r"),
                b'\t' => o.extend_from_slice(b"\\t"),
                _ => o.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            }
        } else if let Some(o) = out.as_mut() {
            o.push(b);
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        }
    }
    out
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Kind;
    use serde_json::json;

    fn line(id: u64, kind: &str, body: &str) -> String {
        json!({"room_id":1,"created_at":"2009-12-01 23:44:40","body":body,"id":id,
               "user_id":1,"type":kind,"starred":"false"})
        .to_string()
    }

    fn config(limits: Limits, keep_raw: bool) -> SessionConfig {
        SessionConfig {
            source: "ops".into(),
            limits,
            keep_raw,
            ..SessionConfig::new(1)
        }
    }

    fn session(resume: Option<u64>) -> Session {
        Session::new(
            config(Limits::default(), true),
            resume.map(|last_message_id| CampfireCursor { last_message_id }),
        )
    }

    fn ids(items: &[SourceItem]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                SourceItem::Event { event, .. } => event.native_id.as_ref()?.parse().ok(),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn frames_keepalives_and_cursor() {
        let mut s = session(None);
        let mut out = Vec::new();
        let stream = format!(
            " {}\r {}\r\n{}\r",
            line(1, "TextMessage", "a"),
            line(2, "EnterMessage", ""),
            line(3, "TimestampMessage", "")
        );
        s.feed(stream.as_bytes(), &mut out);
        assert_eq!(ids(&out), vec![1, 2, 3]);
        // Two spaces and the `\n` of the `\r\n` ending: whitespace between frames.
        assert_eq!(
            out.iter()
                .filter(|i| matches!(i, SourceItem::KeepAlive))
                .count(),
            3
        );
        match &out.last().unwrap() {
            SourceItem::Event { event, cursor } => {
                assert_eq!(event.kind, Kind::System);
                let c = CampfireCursor::from_cursor(cursor.as_ref().unwrap()).unwrap();
                assert_eq!(c.last_message_id, 3);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.cursor().unwrap().last_message_id, 3);
    }

    fn texts(items: &[SourceItem]) -> Vec<String> {
        items
            .iter()
            .filter_map(|i| match i {
                SourceItem::Event { event, .. } => Some(event.text.clone()),
                _ => None,
            })
            .collect()
    }

    fn malformed(items: &[SourceItem]) -> Vec<String> {
        items
            .iter()
            .filter_map(|i| match i {
                SourceItem::Malformed { error } => Some(error.clone()),
                _ => None,
            })
            .collect()
    }

    /// The document's example response, laid out as the document prints it: each object over
    /// two lines.
    const DOC_FIRST: &str = "{\"room_id\":1,\"created_at\":\"2009-12-01 23:44:40\",\"body\":\"hello\",\"id\":1,\n \"user_id\":1,\"type\":\"TextMessage\",\"starred\":\"true\"}";
    const DOC_SECOND: &str = "{\"room_id\":1,\"created_at\":\"2009-12-01 23:40:00\",\"body\":null,\"id\":2,\n \"user_id\":null,\"type\":\"TimestampMessage\",\"starred\":\"false\"}";

    #[test]
    fn multi_line_objects_are_one_frame_each() {
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<Value>(&line(3, "PasteMessage", "a\nb")).unwrap(),
        )
        .unwrap();
        assert!(pretty.matches('\n').count() > 5, "{pretty}");
        for sep in ["\r", "\r\n"] {
            let stream = format!("{DOC_FIRST}{sep} {DOC_SECOND}{sep} {pretty}{sep}");
            // In one chunk and byte by byte: a `\n` never ends a frame.
            for one_byte in [false, true] {
                let mut s = session(None);
                let mut out = Vec::new();
                if one_byte {
                    for b in stream.as_bytes() {
                        s.feed(std::slice::from_ref(b), &mut out);
                    }
                } else {
                    s.feed(stream.as_bytes(), &mut out);
                }
                assert_eq!(malformed(&out), Vec::<String>::new());
                assert_eq!(ids(&out), vec![1, 2, 3], "{sep:?} {one_byte}");
                assert_eq!(texts(&out), vec!["hello", "", "a\nb"]);
            }
        }
    }

    #[test]
    fn a_raw_line_feed_or_tab_in_a_body_is_kept() {
        let mut s = session(None);
        let mut out = Vec::new();
        let raw = line(7, "PasteMessage", "line one\nline two\tend")
            .replace("\\n", "\n")
            .replace("\\t", "\t");
        assert!(raw.contains('\n') && raw.contains('\t'), "{raw}");
        s.feed(
            format!("{raw}\r {}\r", line(8, "TextMessage", "next")).as_bytes(),
            &mut out,
        );
        assert_eq!(malformed(&out), Vec::<String>::new());
        assert_eq!(ids(&out), vec![7, 8]);
        assert_eq!(texts(&out), vec!["line one\nline two\tend", "next"]);
    }

    #[test]
    fn objects_separated_only_by_line_feeds_are_each_delivered() {
        let mut s = session(None);
        let mut out = Vec::new();
        s.feed(format!("{DOC_FIRST}\n{DOC_SECOND}\r").as_bytes(), &mut out);
        assert_eq!(malformed(&out), Vec::<String>::new());
        assert_eq!(ids(&out), vec![1, 2]);
        // A broken object among them is still reported, with the frame's offset.
        let mut s = session(None);
        let mut out = Vec::new();
        s.feed(format!(" {DOC_FIRST}\n{{\"id\":\r").as_bytes(), &mut out);
        assert_eq!(ids(&out), Vec::<u64>::new());
        let errors = malformed(&out);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("offset 1"), "{errors:?}");
    }

    #[test]
    fn take_position_forgets_the_resume_position() {
        let mut s = session(Some(1_000_000));
        let mut out = Vec::new();
        s.take_position(CampfireCursor {
            last_message_id: 40,
        });
        assert_eq!(s.cursor().unwrap().last_message_id, 40);
        s.feed(
            format!(
                "{}\r{}\r",
                line(39, "TextMessage", "a"),
                line(41, "TextMessage", "b")
            )
            .as_bytes(),
            &mut out,
        );
        assert_eq!(ids(&out), vec![39, 41]);
        assert_eq!(s.cursor().unwrap().last_message_id, 41);
        let cursors: Vec<u64> = out
            .iter()
            .filter_map(|i| match i {
                SourceItem::Event { cursor, .. } => Some(
                    CampfireCursor::from_cursor(cursor.as_ref()?)
                        .ok()?
                        .last_message_id,
                ),
                _ => None,
            })
            .collect();
        assert_eq!(cursors, vec![40, 41]);
    }

    #[test]
    fn every_keepalive_space_is_seen() {
        let mut s = session(None);
        let mut out = Vec::new();
        for _ in 0..4 {
            s.feed(b" ", &mut out);
        }
        assert_eq!(out, vec![SourceItem::KeepAlive; 4]);
        // Part of a long frame is proof of life too; the frame itself is one event.
        let mut out = Vec::new();
        let l = line(1, "TextMessage", "a");
        let (x, y) = l.as_bytes().split_at(10);
        s.feed(x, &mut out);
        assert_eq!(out, vec![SourceItem::KeepAlive]);
        s.feed(y, &mut out);
        s.feed(b"\r", &mut out);
        assert_eq!(ids(&out), vec![1]);
    }

    #[test]
    fn malformed_frame_is_reported_with_offset_and_skipped() {
        let mut s = session(None);
        let mut out = Vec::new();
        let good = line(1, "TextMessage", "a");
        let stream = format!("{good}\r{{\"id\":\r[1]\r{}\r", line(2, "TextMessage", "b"));
        s.feed(stream.as_bytes(), &mut out);
        assert_eq!(ids(&out), vec![1, 2]);
        let errors: Vec<_> = out
            .iter()
            .filter_map(|i| match i {
                SourceItem::Malformed { error } => Some(error.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(errors.len(), 2);
        let offset = good.len() + 1;
        assert!(
            errors[0].contains(&format!("offset {offset}")),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains("room 1"));
        assert!(errors[1].contains("an array"), "{}", errors[1]);
    }

    #[test]
    fn backfill_first_then_live_without_repeats() {
        let mut s = session(Some(10));
        let mut out = Vec::new();
        let backfill = vec![
            serde_json::from_str(&line(13, "TextMessage", "c")).unwrap(),
            serde_json::from_str(&line(9, "TextMessage", "old")).unwrap(),
            serde_json::from_str(&line(11, "TextMessage", "a")).unwrap(),
            json!({"id": "x"}),
            serde_json::from_str(&line(12, "TextMessage", "b")).unwrap(),
        ];
        let mut backfilled = VecDeque::new();
        s.backfill(backfill, &mut backfilled);
        out.extend(backfilled);
        let live = format!(
            "{}\r{}\r{}\r",
            line(10, "TextMessage", "old"),
            line(13, "TextMessage", "c"),
            line(14, "TextMessage", "d")
        );
        s.feed(live.as_bytes(), &mut out);
        assert_eq!(ids(&out), vec![11, 12, 13, 14]);
        assert!(
            out.iter()
                .any(|i| matches!(i, SourceItem::Malformed { error } if error.contains("#3")))
        );
        assert_eq!(s.cursor().unwrap().last_message_id, 14);
        assert_eq!(s.resumed_from().unwrap().last_message_id, 10);
    }

    #[test]
    fn oversize_frame_refused() {
        let mut s = Session::new(config(Limits::with_max_frame(64), false), None);
        let mut out = Vec::new();
        let big = format!("{{\"body\":\"{}\"}}\r", "x".repeat(200));
        s.feed(big.as_bytes(), &mut out);
        s.feed(
            format!("{}\r", line(1, "TextMessage", "a")).as_bytes(),
            &mut out,
        );
        assert!(matches!(&out[0], SourceItem::Malformed { error } if error.contains("limit")));
        // the second message is itself larger than 64 bytes: also refused.
        assert_eq!(ids(&out), Vec::<u64>::new());
        let mut s = Session::new(config(Limits::with_max_frame(4096), false), None);
        let mut out = Vec::new();
        s.feed(big.as_bytes(), &mut out);
        s.feed(
            format!("{}\r", line(1, "TextMessage", "a")).as_bytes(),
            &mut out,
        );
        assert_eq!(ids(&out), vec![1]);
        let event = out.iter().find_map(SourceItem::as_event);
        assert!(event.unwrap().raw.is_none());
    }

    #[test]
    fn finish_decodes_last_unterminated_frame() {
        let mut s = session(None);
        let mut out = Vec::new();
        s.feed(line(5, "TextMessage", "a").as_bytes(), &mut out);
        assert!(ids(&out).is_empty());
        s.finish(&mut out);
        assert_eq!(ids(&out), vec![5]);
    }

    /// A wire object as a frame: known fields in every shape (and left out), unknown
    /// fields, unicode and escapes, the odd duplicate key, now and then not an object.
    fn wire_object() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let text = prop::sample::select(vec![
            "\"hello\"",
            "\"h\\u00e9 \\\"q\\\" \\n\"",
            "\"日本語 ü\"",
            "\"\"",
            "null",
            "5",
            "true",
            "[1]",
            "{\"a\":1}",
        ]);
        let id = prop::sample::select(vec![
            "1", "42", "\"7\"", "\" 9 \"", "-1", "null", "1.5", "\"x\"",
        ]);
        let user = id.clone();
        let kind = prop::sample::select(vec![
            "\"TextMessage\"",
            "\"TweetMessage\"",
            "\"SoundMessage\"",
            "\"UploadMessage\"",
            "\"IdleMessage\"",
            "\"HologramMessage\"",
            "\"TimestampMessage\"",
            "7",
            "null",
        ]);
        let at = prop::sample::select(vec![
            "\"2009-12-01 23:44:40\"",
            "\"2009/12/01 23:44:40 +0000\"",
            "\"2009-12-01T23:44:40Z\"",
            "\"2009-13-01 23:44:40\"",
            "\"2009-12-01 23:44:60\"",
            "\"soon\"",
            "0",
        ]);
        let starred = prop::sample::select(vec![
            "\"true\"",
            "\"false\"",
            "true",
            "null",
            "\"maybe\"",
            "1",
        ]);
        let extra = prop::sample::select(vec![
            "\"url\":\"http://x\"",
            "\"full_url\":null",
            "\"byte_size\":12",
            "\"zzz\":{\"deep\":[1,2.5,\"é\"]}",
            "\"tweet\":{\"id\":9,\"message\":\"tw\",\"author_username\":\"a\"}",
            "\"tweet\":[\"1\",\"m\"]",
            "\"tweet\":{\"message\":3}",
            "\"id\":77",
            "\"body\":\"again\"",
        ]);
        (
            prop::option::of(id),
            prop::option::of(kind),
            prop::option::of(at),
            prop::option::of(text),
            prop::option::of(starred),
            prop::option::of(user),
            prop::collection::vec(extra, 0..3),
            0u8..12,
        )
            .prop_map(|(id, kind, at, body, starred, user, extras, shape)| {
                let mut fields: Vec<String> = Vec::new();
                for (k, v) in [("id", id), ("type", kind), ("created_at", at), ("body", body), ("starred", starred), ("user_id", user)] {
                    if let Some(v) = v {
                        fields.push(format!("\"{k}\":{v}"));
                    }
                }
                fields.extend(extras.iter().map(|e| (*e).to_owned()));
                match shape {
                    0 => format!("[{}]", fields.len()),
                    1 => format!("{{{}}} {{\"id\":3,\"type\":\"TextMessage\",\"created_at\":\"2009-12-01 23:44:40\"}}", fields.join(",")),
                    _ => format!("{{{}}}", fields.join(",")),
                }
            })
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// The typed read (without `raw`) yields exactly what reading a JSON tree first
            /// yields: the same events (but `raw`) and the same reports, whatever the fields.
            #[test]
            fn typed_frames_read_as_the_json_tree_reads_them(
                frames in proptest::collection::vec(wire_object(), 1..6),
            ) {
                let body: String = frames.iter().map(|f| format!("{f}\r")).collect();
                let run = |keep_raw: bool| {
                    let mut s = Session::new(config(Limits::default(), keep_raw), None);
                    let mut out = Vec::new();
                    s.feed(body.as_bytes(), &mut out);
                    for item in &mut out {
                        if let SourceItem::Event { event, .. } = item {
                            event.raw = None;
                        }
                    }
                    (out, s.cursor())
                };
                prop_assert_eq!(run(false), run(true));
            }

            #[test]
            fn arbitrary_bytes_never_panic_and_every_item_is_accounted_for(
                chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
            ) {
                let mut s = session(None);
                let mut out = Vec::new();
                for c in &chunks {
                    s.feed(c, &mut out);
                }
                s.finish(&mut out);
                // Every event that came out has a cursor no smaller than its own id.
                for item in &out {
                    if let SourceItem::Event { event, cursor } = item {
                        let id: u64 = event.native_id.as_ref().unwrap().parse().unwrap();
                        let c = CampfireCursor::from_cursor(cursor.as_ref().unwrap()).unwrap();
                        prop_assert!(c.last_message_id >= id);
                    }
                }
            }

            #[test]
            fn arbitrary_message_objects_decode_or_are_reported(
                id in proptest::option::of(0u64..u64::MAX),
                kind in "[A-Za-z]{0,20}",
                body in proptest::option::of(".{0,30}"),
                user in proptest::option::of(0u64..1000),
                starred in prop_oneof![Just(json!("true")), Just(json!("false")), Just(json!(true)), Just(json!(null)), Just(json!("x"))],
            ) {
                let raw = json!({"id": id, "type": kind, "body": body, "user_id": user,
                                 "created_at": "2009-12-01 23:44:40", "starred": starred});
                let mut s = session(None);
                let mut out = Vec::new();
                s.feed(format!("{raw}\r").as_bytes(), &mut out);
                let events = ids(&out);
                let malformed = out.iter().filter(|i| matches!(i, SourceItem::Malformed { .. })).count();
                prop_assert_eq!(events.len() + malformed, 1);
                if let Some(id) = id {
                    if starred != json!("x") {
                        prop_assert_eq!(events, vec![id]);
                    }
                }
            }

            #[test]
            fn chunking_never_changes_the_events(
                n in 1usize..12,
                cuts in proptest::collection::vec(0usize..4000, 0..20),
                crlf in any::<bool>(),
                layout in 0u8..3,
            ) {
                let sep = if crlf { "\r\n" } else { "\r" };
                let mut stream = String::from(" ");
                for i in 1..=n {
                    let l = line(i as u64, "TextMessage", "héllo ☃\nzwei");
                    let l = match layout {
                        // Compact, as most servers send it.
                        0 => l,
                        // Pretty-printed: raw line feeds between members.
                        1 => serde_json::to_string_pretty(&serde_json::from_str::<Value>(&l).unwrap()).unwrap(),
                        // A raw line feed inside the body.
                        _ => l.replace("\\n", "\n"),
                    };
                    stream.push_str(&l);
                    stream.push_str(sep);
                    stream.push(' ');
                }
                let bytes = stream.as_bytes();
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
                cuts.sort_unstable();
                let mut s = session(None);
                let mut out = Vec::new();
                let mut prev = 0;
                for c in cuts.into_iter().chain([bytes.len()]) {
                    s.feed(&bytes[prev..c], &mut out);
                    prev = c;
                }
                prop_assert_eq!(ids(&out), (1..=n as u64).collect::<Vec<_>>());
                let malformed = out.iter().any(|i| matches!(i, SourceItem::Malformed { .. }));
                prop_assert!(!malformed);
                prop_assert!(texts(&out).iter().all(|t| t == "héllo ☃\nzwei"));
            }
        }
    }

    /// Driving whole sessions through their plan, as the client does, against a fake server.
    mod plan {
        use super::*;
        use chat_model::Disposition;
        use proptest::prelude::*;

        /// A fake Campfire: the room's messages (ids increasing) and its users' names.
        struct Server {
            posted: Vec<u64>,
            names: HashMap<u64, String>,
            requests: Vec<Purpose>,
        }

        impl Server {
            fn new(posted: Vec<u64>) -> Self {
                Server {
                    posted,
                    names: HashMap::from([(1, "Ann".to_owned())]),
                    requests: Vec::new(),
                }
            }

            fn message(id: u64) -> Value {
                serde_json::from_str(&line(id, "TextMessage", &format!("m{id}"))).unwrap()
            }

            /// The answer to `request` (the live head is a bare 200).
            fn answer(&mut self, request: &Request) -> Response {
                self.requests.push(request.purpose);
                let json = |v: Value| Response {
                    content_type: Some("application/json; charset=utf-8".into()),
                    ..Response::new(200, v.to_string())
                };
                match request.purpose {
                    Purpose::Latest => {
                        let last: Vec<Value> = self
                            .posted
                            .last()
                            .map(|&id| Server::message(id))
                            .into_iter()
                            .collect();
                        json(json!({ "messages": last }))
                    }
                    Purpose::Recent { since } => {
                        let page: Vec<Value> = self
                            .posted
                            .iter()
                            .filter(|&&id| since.is_none_or(|s| id > s))
                            .take(RECENT_LIMIT)
                            .map(|&id| Server::message(id))
                            .collect();
                        json(json!({ "messages": page }))
                    }
                    Purpose::User { id } => match self.names.get(&id) {
                        Some(name) => json(json!({"user": {"id": id, "name": name}})),
                        None => Response::new(404, "Not found"),
                    },
                    Purpose::Join | Purpose::Live => Response::new(200, ""),
                }
            }

            /// Answers every request the session asks for, until it asks for none.
            fn serve(&mut self, s: &mut Session, now: Instant) {
                while let Some(request) = s.poll_request() {
                    let response = self.answer(&request);
                    s.handle_response(request.purpose, response, now);
                }
            }
        }

        fn api_config() -> SessionConfig {
            SessionConfig {
                source: "ops".into(),
                ..SessionConfig::new(1)
            }
        }

        /// Every item the session has ready, answering name lookups from `server`.
        fn drain(s: &mut Session, server: &mut Server, now: Instant) -> Vec<SourceItem> {
            let mut out = Vec::new();
            loop {
                if let Some(item) = s.poll_item() {
                    out.push(item);
                } else if let Some(request) = s.poll_request() {
                    let response = server.answer(&request);
                    s.handle_response(request.purpose, response, now);
                } else {
                    return out;
                }
            }
        }

        fn stream_of(ids: &[u64], keepalive_every: usize) -> String {
            let mut body = String::new();
            for (i, &id) in ids.iter().enumerate() {
                if keepalive_every > 0 && i % keepalive_every == 0 {
                    body.push(' ');
                }
                body.push_str(&line(id, "TextMessage", &format!("m{id}")));
                body.push('\r');
            }
            body
        }

        fn feed_split(s: &mut Session, bytes: &[u8], cuts: &[usize], now: Instant) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut prev = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                s.handle_chunk(&bytes[prev..c], now);
                prev = c;
            }
        }

        #[test]
        fn a_fresh_start_learns_the_latest_id_then_subscribes_then_backfills() {
            let now = Instant::now();
            let mut server = Server::new(vec![3, 5]);
            let mut s = Session::new(api_config(), None);
            let latest = s.poll_request().unwrap();
            assert_eq!(latest.purpose, Purpose::Latest);
            assert_eq!((latest.method, latest.host), (Method::Get, Host::Api));
            assert_eq!(latest.path, "room/1/recent.json");
            assert_eq!(latest.query, vec![("limit", "1".to_owned())]);
            assert_eq!(s.poll_request(), None, "one request at a time");
            let answer = server.answer(&latest);
            s.handle_response(Purpose::Latest, answer, now);
            assert_eq!(s.baseline(), Some(CampfireCursor { last_message_id: 5 }));
            // Posted between the look at the latest id and the subscription.
            server.posted.push(6);
            let live = s.poll_request().unwrap();
            assert_eq!((live.purpose, live.host), (Purpose::Live, Host::Streaming));
            assert_eq!(live.path, "room/1/live.json");
            assert!(live.is_stream());
            s.handle_response(Purpose::Live, Response::new(200, ""), now);
            assert!(!s.is_streaming());
            // Live bytes that arrive during the backfill wait for it.
            s.handle_chunk(
                &format!("{}\r", line(6, "TextMessage", "m6")).into_bytes()[..],
                now,
            );
            s.handle_chunk(
                &format!("{}\r", line(7, "TextMessage", "m7")).into_bytes()[..],
                now,
            );
            let recent = s.poll_request().unwrap();
            assert_eq!(recent.purpose, Purpose::Recent { since: Some(5) });
            assert_eq!(
                recent.query,
                vec![
                    ("since_message_id", "5".to_owned()),
                    ("limit", "100".to_owned())
                ]
            );
            let answer = server.answer(&recent);
            s.handle_response(recent.purpose, answer, now);
            assert!(s.is_streaming());
            let items = drain(&mut s, &mut server, now);
            assert_eq!(
                items[0],
                SourceItem::Cursor(CampfireCursor { last_message_id: 5 }.to_cursor())
            );
            assert_eq!(ids(&items), vec![6, 7]);
            let names: Vec<_> = items
                .iter()
                .filter_map(|i| match i {
                    SourceItem::Event { event, .. } => event.author.name.clone(),
                    _ => None,
                })
                .collect();
            assert_eq!(names, vec!["Ann", "Ann"]);
            assert_eq!(s.names().get(&1), Some(&Some("Ann".to_owned())));
            // (The live head above was answered by hand.)
            assert_eq!(
                server.requests,
                vec![
                    Purpose::Latest,
                    Purpose::Recent { since: Some(5) },
                    Purpose::User { id: 1 }
                ]
            );
            // A later session of the same client starts from the same baseline, asking nothing.
            let mut again = Session::new(
                SessionConfig {
                    baseline: s.baseline(),
                    ..api_config()
                },
                None,
            );
            assert_eq!(again.poll_request().unwrap().purpose, Purpose::Live);
        }

        #[test]
        fn a_refused_stream_joins_and_asks_once_more() {
            let now = Instant::now();
            let mut s = Session::new(
                api_config(),
                Some(CampfireCursor {
                    last_message_id: 10,
                }),
            );
            assert_eq!(s.poll_request().unwrap().purpose, Purpose::Live);
            s.handle_response(
                Purpose::Live,
                Response::new(403, "You must join the room"),
                now,
            );
            assert_eq!(s.ended(), None);
            let join = s.poll_request().unwrap();
            assert_eq!((join.purpose, join.method), (Purpose::Join, Method::Post));
            assert_eq!(join.path, "room/1/join.json");
            assert!(join.headers.contains(&("content-type", "application/json")));
            s.handle_response(Purpose::Join, Response::new(200, ""), now);
            assert_eq!(s.poll_request().unwrap().purpose, Purpose::Live);
            // Refused again after joining: no third try.
            s.handle_response(Purpose::Live, Response::new(403, "no"), now);
            assert!(matches!(
                s.take_error(),
                Some(Error::Status {
                    endpoint: Endpoint::Live,
                    status: 403,
                    ..
                })
            ));
            assert!(matches!(s.ended(), Some(DisconnectReason::Forbidden(_))));
            assert_eq!(s.poll_request(), None);

            // Configured to join: joins first, and a 403 then is final.
            let joining = SessionConfig {
                join: true,
                ..api_config()
            };
            let mut s = Session::new(
                joining,
                Some(CampfireCursor {
                    last_message_id: 10,
                }),
            );
            assert_eq!(s.poll_request().unwrap().purpose, Purpose::Join);
            s.handle_response(Purpose::Join, Response::new(200, ""), now);
            assert_eq!(s.poll_request().unwrap().purpose, Purpose::Live);
            s.handle_response(Purpose::Live, Response::new(403, ""), now);
            assert!(s.ended().is_some());

            // A failed join is the join's own error.
            let mut s = Session::new(
                api_config(),
                Some(CampfireCursor {
                    last_message_id: 10,
                }),
            );
            s.poll_request();
            s.handle_response(Purpose::Live, Response::new(403, ""), now);
            s.poll_request();
            s.handle_response(Purpose::Join, Response::new(500, "boom"), now);
            let e = s.take_error().unwrap();
            assert!(
                matches!(
                    e,
                    Error::Status {
                        endpoint: Endpoint::Join,
                        status: 500,
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("boom"), "{e}");

            // Without a REST API: what to do.
            let no_api = SessionConfig {
                api: false,
                ..api_config()
            };
            let mut s = Session::new(no_api, None);
            assert_eq!(s.poll_request().unwrap().purpose, Purpose::Live);
            s.handle_response(Purpose::Live, Response::new(403, "join first"), now);
            let e = s.take_error().unwrap();
            assert!(
                matches!(&e, Error::NotJoined { room: 1, status: 403, body } if body == "join first"),
                "{e:?}"
            );
            assert!(matches!(s.ended(), Some(DisconnectReason::Forbidden(_))));
            assert_eq!(s.poll_request(), None);
        }

        #[test]
        fn http_400_on_the_stream_is_an_idle_close_and_sticks() {
            let now = Instant::now();
            let mut s = Session::new(
                SessionConfig {
                    api: false,
                    ..api_config()
                },
                None,
            );
            s.poll_request();
            s.handle_response(Purpose::Live, Response::new(400, ""), now);
            assert_eq!(s.take_error().unwrap().status(), Some(400));
            assert_eq!(s.take_error().map(|e| e.status()), None, "taken once");
            let reason = s.ended().cloned().unwrap();
            assert!(matches!(reason, DisconnectReason::IdleClose(_)), "{reason}");
            assert_eq!(reason.disposition(), Disposition::Prompt);
            // Sticky: nothing more is asked or yielded, whatever arrives.
            s.handle_chunk(&b"{\"id\":1}\r"[..], now);
            s.handle_end(now);
            assert_eq!(s.poll_request(), None);
            assert_eq!(s.poll_item(), None);
            assert_eq!(s.ended(), Some(&reason));
        }

        #[test]
        fn retry_after_and_content_type_are_read() {
            let now = Instant::now();
            let mut s = Session::new(
                SessionConfig {
                    api: false,
                    ..api_config()
                },
                None,
            );
            s.poll_request();
            let busy = Response {
                retry_after: Some(Duration::from_secs(4)),
                ..Response::new(503, "busy")
            };
            s.handle_response(Purpose::Live, busy, now);
            assert_eq!(
                s.ended().unwrap().disposition(),
                Disposition::After(Duration::from_secs(4))
            );

            let mut s = Session::new(
                SessionConfig {
                    api: false,
                    ..api_config()
                },
                None,
            );
            s.poll_request();
            let html = Response {
                content_type: Some("text/html".into()),
                ..Response::new(200, "")
            };
            s.handle_response(Purpose::Live, html, now);
            let e = s.take_error().unwrap();
            assert!(
                e.to_string().contains("text/html") && e.to_string().contains("room 1"),
                "{e}"
            );
            assert!(matches!(s.ended(), Some(DisconnectReason::Protocol(_))));
        }

        #[test]
        fn transport_failures_end_the_plan_or_the_stream() {
            let now = Instant::now();
            let mut s = Session::new(api_config(), Some(CampfireCursor { last_message_id: 1 }));
            s.poll_request();
            s.handle_response(Purpose::Live, Response::new(200, ""), now);
            let recent = s.poll_request().unwrap();
            s.handle_error(recent.purpose, "timed out".into(), now);
            let e = s.take_error().unwrap();
            assert!(
                matches!(
                    e,
                    Error::Network {
                        endpoint: Endpoint::Recent,
                        ..
                    }
                ),
                "{e}"
            );
            assert_eq!(s.poll_request(), None);

            let mut s = Session::new(
                SessionConfig {
                    api: false,
                    ..api_config()
                },
                None,
            );
            s.poll_request();
            s.handle_response(Purpose::Live, Response::new(200, ""), now);
            s.handle_chunk(format!("{}\r", line(4, "TextMessage", "a")).as_bytes(), now);
            s.handle_error(Purpose::Live, "stream broken: reset".into(), now);
            s.handle_end(now);
            // What arrived before the break is still yielded, then the reason, every time.
            assert_eq!(
                ids(&std::iter::from_fn(|| s.poll_item()).collect::<Vec<_>>()),
                vec![4]
            );
            assert!(matches!(s.ended(), Some(DisconnectReason::Network(m)) if m.contains("reset")));
        }

        #[test]
        fn a_clean_end_decodes_the_last_frame_then_ends() {
            let now = Instant::now();
            let mut s = Session::new(
                SessionConfig {
                    api: false,
                    ..api_config()
                },
                None,
            );
            s.poll_request();
            s.handle_response(Purpose::Live, Response::new(200, ""), now);
            s.handle_chunk(line(9, "TextMessage", "last").as_bytes(), now);
            s.handle_end(now);
            assert_eq!(
                ids(&std::iter::from_fn(|| s.poll_item()).collect::<Vec<_>>()),
                vec![9]
            );
            assert_eq!(s.ended(), Some(&DisconnectReason::EndOfStream));
            assert_eq!(s.cursor(), Some(CampfireCursor { last_message_id: 9 }));
        }

        #[test]
        fn silence_for_the_idle_timeout_is_a_stall() {
            let t0 = Instant::now();
            let idle = Duration::from_secs(20);
            let config = SessionConfig {
                api: false,
                idle_timeout: Some(idle),
                ..api_config()
            };
            let mut s = Session::new(config, None);
            assert_eq!(s.poll_timeout(), None, "no timer before the stream");
            s.poll_request();
            s.handle_response(Purpose::Live, Response::new(200, ""), t0);
            assert_eq!(s.poll_timeout(), Some(t0 + idle));
            // A keep-alive space is proof of life.
            s.handle_chunk(&b" "[..], t0 + Duration::from_secs(10));
            assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(30)));
            s.handle_timeout(t0 + Duration::from_secs(29));
            assert_eq!(s.ended(), None);
            s.handle_timeout(t0 + Duration::from_secs(30));
            assert_eq!(s.ended(), Some(&DisconnectReason::Stalled { idle }));
            assert_eq!(s.poll_timeout(), None);
            assert_eq!(s.poll_item(), Some(SourceItem::KeepAlive));
            assert_eq!(s.poll_item(), None);

            // Without an idle timeout there is no timer at all.
            let mut s = Session::new(
                SessionConfig {
                    api: false,
                    ..api_config()
                },
                None,
            );
            s.poll_request();
            s.handle_response(Purpose::Live, Response::new(200, ""), t0);
            assert_eq!(s.poll_timeout(), None);
            s.handle_timeout(t0 + Duration::from_secs(3600));
            assert_eq!(s.ended(), None);
        }

        #[test]
        fn a_reset_server_is_followed_to_its_position() {
            let now = Instant::now();
            let mut server = Server::new(vec![1000]);
            let stale = CampfireCursor {
                last_message_id: 5_000_000,
            };
            let mut s = Session::new(api_config(), Some(stale));
            server.serve(&mut s, now);
            assert_eq!(
                server.requests,
                vec![
                    Purpose::Live,
                    Purpose::Recent {
                        since: Some(5_000_000)
                    },
                    Purpose::Latest
                ]
            );
            s.handle_chunk(
                format!("{}\r", line(1001, "TextMessage", "new")).as_bytes(),
                now,
            );
            let items = drain(&mut s, &mut server, now);
            assert_eq!(
                items[0],
                SourceItem::Cursor(
                    CampfireCursor {
                        last_message_id: 1000
                    }
                    .to_cursor()
                )
            );
            assert_eq!(ids(&items), vec![1001]);
            assert_eq!(s.baseline(), None, "not a start of its own");
        }

        #[test]
        fn backfill_follows_pages_until_one_is_not_full() {
            let now = Instant::now();
            let mut server = Server::new((1..=251).collect());
            let mut s = Session::new(api_config(), Some(CampfireCursor { last_message_id: 1 }));
            server.serve(&mut s, now);
            let pages: Vec<_> = server
                .requests
                .iter()
                .filter_map(|p| match p {
                    Purpose::Recent { since } => *since,
                    _ => None,
                })
                .collect();
            assert_eq!(pages, vec![1, 101, 201]);
            let items = drain(&mut s, &mut server, now);
            assert_eq!(ids(&items), (2..=251).collect::<Vec<_>>());
        }

        #[test]
        fn names_are_looked_up_once_per_author() {
            let now = Instant::now();
            let mut server = Server::new(vec![]);
            server.names.insert(4, "Dee".into());
            let config = SessionConfig {
                api: false,
                ..api_config()
            };
            // Without a REST API, no lookups: events go out unnamed.
            let mut s = Session::new(config, None);
            s.poll_request();
            s.handle_response(Purpose::Live, Response::new(200, ""), now);
            s.handle_chunk(format!("{}\r", line(1, "TextMessage", "a")).as_bytes(), now);
            assert_eq!(s.poll_request(), None);
            assert!(
                matches!(s.poll_item(), Some(SourceItem::Event { event, .. }) if event.author.name.is_none())
            );

            let config = SessionConfig {
                backfill: false,
                ..api_config()
            };
            let mut s = Session::new(config, None);
            server.serve(&mut s, now);
            let body: String = [(1, 4), (2, 4), (3, 77), (4, 77), (5, 0)]
                .iter()
                .map(|&(id, user)| {
                    let mut v: Value = serde_json::from_str(&line(id, "TextMessage", "x")).unwrap();
                    v["user_id"] = if user == 0 { Value::Null } else { json!(user) };
                    format!("{v}\r")
                })
                .collect();
            s.handle_chunk(body.as_bytes(), now);
            // The first event waits for its author's name.
            assert_eq!(s.poll_item(), None);
            let lookup = s.poll_request().unwrap();
            assert_eq!(
                (lookup.purpose, lookup.path.as_str()),
                (Purpose::User { id: 4 }, "users/4.json")
            );
            assert_eq!(s.poll_item(), None, "still waiting");
            let answer = server.answer(&lookup);
            s.handle_response(lookup.purpose, answer, now);
            let items = drain(&mut s, &mut server, now);
            let names: Vec<Option<String>> = items
                .iter()
                .filter_map(|i| match i {
                    SourceItem::Event { event, .. } => Some(event.author.name.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                names,
                vec![Some("Dee".into()), Some("Dee".into()), None, None, None]
            );
            assert_eq!(
                server
                    .requests
                    .iter()
                    .filter(|p| matches!(p, Purpose::User { .. }))
                    .collect::<Vec<_>>(),
                vec![&Purpose::User { id: 4 }, &Purpose::User { id: 77 }]
            );
            // A failed lookup is not repeated either.
            s.handle_chunk(
                format!(
                    "{}\r",
                    line(6, "TextMessage", "y").replace("\"user_id\":1", "\"user_id\":8")
                )
                .as_bytes(),
                now,
            );
            let lookup = s.poll_request().unwrap();
            s.handle_error(lookup.purpose, "timed out".into(), now);
            assert!(
                matches!(s.poll_item(), Some(SourceItem::Event { event, .. }) if event.author.name.is_none())
            );
            assert_eq!(s.names().get(&8), Some(&None));
            assert_eq!(s.ended(), None, "a failed lookup does not end the stream");
        }

        proptest! {
            #[test]
            fn random_chunk_splits_with_keepalives_yield_every_message_once(
                n in 1usize..30,
                every in 0usize..4,
                cuts in proptest::collection::vec(0usize..8000, 0..40),
            ) {
                let now = Instant::now();
                let mut s = Session::new(SessionConfig { api: false, ..api_config() }, None);
                s.poll_request();
                s.handle_response(Purpose::Live, Response::new(200, ""), now);
                let ids_sent: Vec<u64> = (1..=n as u64).map(|i| i * 3).collect();
                let body = stream_of(&ids_sent, every);
                feed_split(&mut s, body.as_bytes(), &cuts, now);
                let items: Vec<_> = std::iter::from_fn(|| s.poll_item()).collect();
                prop_assert_eq!(ids(&items), ids_sent.clone());
                let only_events_and_keepalives = items.iter().all(|i| matches!(i, SourceItem::Event { .. } | SourceItem::KeepAlive));
                prop_assert!(only_events_and_keepalives);
                prop_assert_eq!(s.cursor(), Some(CampfireCursor { last_message_id: n as u64 * 3 }));
            }

            #[test]
            fn a_drop_mid_object_then_resume_delivers_every_message_once_in_order(
                total in 1usize..260,
                seen in 0usize..260,
                cut in 1usize..120,
                backfilled in 0usize..260,
                overlap in 0usize..5,
                cuts in proptest::collection::vec(0usize..40_000, 0..20),
                clean_end in any::<bool>(),
            ) {
                let now = Instant::now();
                let all: Vec<u64> = (1..=total as u64).map(|i| 100 + i * 2).collect();
                let seen = seen.min(total - 1);
                let mut server = Server::new(vec![]);
                // First connection: a fresh start in an empty room.
                let mut first = Session::new(api_config(), None);
                server.serve(&mut first, now);
                prop_assert!(first.is_streaming());
                // Its stream: `seen` messages, then a drop inside the next object.
                server.posted = all.clone();
                let mut body = stream_of(&all[..seen], 2);
                let next = line(all[seen], "TextMessage", "cut");
                body.push_str(&next[..cut.min(next.len() - 1)]);
                feed_split(&mut first, body.as_bytes(), &cuts, now);
                if clean_end {
                    first.handle_end(now);
                } else {
                    first.handle_error(Purpose::Live, "stream broken".into(), now);
                }
                let mut got = ids(&drain(&mut first, &mut server, now));
                prop_assert!(first.ended().is_some());
                let cursor = first.cursor();
                // Second connection, resuming: the backfill sees what was posted before it
                // asked; the live stream carries what came after subscribing, which may
                // overlap the backfill.
                let visible = backfilled.clamp(seen, total);
                server.posted = all[..visible].to_vec();
                let mut second = Session::new(api_config(), cursor);
                server.serve(&mut second, now);
                prop_assert!(second.is_streaming());
                let live_from = visible.saturating_sub(overlap).max(seen);
                feed_split(&mut second, stream_of(&all[live_from..], 1).as_bytes(), &cuts, now);
                got.extend(ids(&drain(&mut second, &mut server, now)));
                prop_assert_eq!(got, all);
            }

            #[test]
            fn any_status_on_the_stream_is_handled(
                status in 100u16..600,
                api in any::<bool>(),
                retry in proptest::option::of(0u64..100),
            ) {
                let now = Instant::now();
                let config = SessionConfig { api, backfill: false, ..api_config() };
                let mut s = Session::new(config, None);
                prop_assert_eq!(s.poll_request().map(|r| r.purpose), Some(Purpose::Live));
                let response = Response { retry_after: retry.map(Duration::from_secs), ..Response::new(status, "why") };
                s.handle_response(Purpose::Live, response, now);
                match status {
                    200..=299 => prop_assert!(s.is_streaming() && s.ended().is_none()),
                    403 if api => prop_assert_eq!(s.poll_request().map(|r| r.purpose), Some(Purpose::Join)),
                    _ => {
                        let reason = s.ended().cloned().unwrap();
                        match status {
                            400 => prop_assert!(matches!(reason, DisconnectReason::IdleClose(_))),
                            401 | 403 | 404 => prop_assert!(reason.is_fatal()),
                            _ => prop_assert!(!reason.is_fatal()),
                        }
                        prop_assert_eq!(s.take_error().and_then(|e| e.status()), Some(status));
                        prop_assert_eq!(s.poll_request(), None);
                        prop_assert_eq!(s.ended(), Some(&reason));
                    }
                }
            }

            #[test]
            fn every_author_is_looked_up_at_most_once(
                authors in proptest::collection::vec(0u64..6, 1..40),
                failing in proptest::collection::vec(any::<bool>(), 6),
            ) {
                let now = Instant::now();
                let mut server = Server::new(vec![]);
                server.names = (1..6).filter(|&u| !failing[u as usize]).map(|u| (u, format!("user{u}"))).collect();
                let mut s = Session::new(SessionConfig { backfill: false, ..api_config() }, None);
                server.serve(&mut s, now);
                let body: String = authors.iter().enumerate().map(|(i, &user)| {
                    let mut v: Value = serde_json::from_str(&line(i as u64 + 1, "TextMessage", "x")).unwrap();
                    v["user_id"] = if user == 0 { Value::Null } else { json!(user) };
                    format!("{v}\r")
                }).collect();
                s.handle_chunk(body.as_bytes(), now);
                let items = drain(&mut s, &mut server, now);
                let names: Vec<Option<String>> = items.iter().filter_map(|i| match i {
                    SourceItem::Event { event, .. } => Some(event.author.name.clone()),
                    _ => None,
                }).collect();
                let want: Vec<Option<String>> = authors.iter().map(|u| server.names.get(u).cloned()).collect();
                prop_assert_eq!(names, want);
                let mut lookups: Vec<u64> = server.requests.iter().filter_map(|p| match p {
                    Purpose::User { id } => Some(*id),
                    _ => None,
                }).collect();
                let asked = lookups.len();
                lookups.sort_unstable();
                lookups.dedup();
                prop_assert_eq!(asked, lookups.len());
                prop_assert!(!lookups.contains(&0));
            }
        }
    }
}
