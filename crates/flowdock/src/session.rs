//! The sans-IO core of a Flowdock connection: the whole connection plan, quinn-proto style.
//!
//! A [`Session`] says which HTTP request to make next ([`Session::poll_request`]: the REST
//! baselines, the stream itself, the REST backfill pages), takes what came back
//! ([`Session::handle_response`], [`Session::handle_chunk`], [`Session::handle_end`],
//! [`Session::handle_network_error`]) and hands out [`SourceItem`]s
//! ([`Session::poll_item`]) while keeping the resume [`FlowdockCursor`]. It does no IO and
//! reads no clock: the caller passes the time, so every protocol rule is testable without a
//! socket.
//!
//! The plan of one connection:
//!
//! 1. **Baselines** (`GET /flows/:org/:flow/messages?limit=1`, one per `org/flow`): the
//!    server's latest message id, the start position of a flow the cursor does not know yet,
//!    and a check of the ones it knows (ids that went backwards: the server was reset). The
//!    JSON transport needs them (an error fails the connection); Event-Stream takes them best
//!    effort.
//! 2. **The stream** (`Accept` of the transport; `Last-Event-ID` on Event-Stream when the
//!    cursor has one, and the server replays what was missed).
//! 3. **Backfill** (`messages?since_id=N&limit=L&sort=asc`, paged): on the JSON transport,
//!    and on Event-Stream while no event id is known, the messages missed since the cursor,
//!    delivered in order before the live ones. Live bytes that arrive meanwhile are held.
//! 4. **Live**: chunks are framed (`\r`-delimited JSON, or SSE), parsed, mapped and
//!    de-duplicated by message id per flow.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chat_model::{Cursor, SourceItem, Timestamp, redact_url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stream_frame::{
    Chunk, Decode, Delimiter, Frame, Item, JsonLinesDecoder, Limits, SseDecoder, SseItem,
};

use crate::error::Error;
use crate::map::{
    event_of, id_needs_raw, normalize_flow, normalize_flow_cow, room_of_parts, stable_id_of,
};
use crate::wire::{WireMessage, WireRef};

/// The real streaming host.
pub const DEFAULT_STREAM_URL: &str = "https://stream.flowdock.com";
/// The real REST host (backfill).
pub const DEFAULT_API_URL: &str = "https://api.flowdock.com";
/// The most messages the REST API returns per request (its `limit` is 1-100).
pub const MAX_BACKFILL_LIMIT: u32 = 100;
/// How many backfill pages one reconnect fetches at most per flow.
pub const MAX_BACKFILL_PAGES: usize = 50;
/// The longest a REST request (baseline, backfill page) may take.
pub const REST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which of the two streaming content types to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// `text/event-stream`: Server-Sent Events, resumed with `Last-Event-ID` (the default).
    #[default]
    EventStream,
    /// `application/json`: `\r`-delimited JSON objects, gaps closed by REST backfill.
    Json,
}

impl Transport {
    /// The `Accept` header value that selects this transport.
    pub fn accept(self) -> &'static str {
        match self {
            Transport::EventStream => "text/event-stream",
            Transport::Json => "application/json",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Transport::Json => "JSON stream",
            Transport::EventStream => "event stream",
        }
    }
}

/// The `active` parameter: how the user appears to others while streaming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Active {
    /// `active=true`: shown as active.
    True,
    /// `active=idle`: shown as idle.
    Idle,
}

impl Active {
    /// Parses `"true"` or `"idle"`.
    pub fn parse(s: &str) -> Option<Active> {
        match s {
            "true" => Some(Active::True),
            "idle" => Some(Active::Idle),
            _ => None,
        }
    }

    /// The query value.
    pub fn as_str(self) -> &'static str {
        match self {
            Active::True => "true",
            Active::Idle => "idle",
        }
    }
}

/// Where a Flowdock connection resumes: stored in a [`chat_model::Cursor`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowdockCursor {
    /// The last SSE event id seen (sent as `Last-Event-ID` on reconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
    /// The highest message id delivered per flow (`org/flow`), for REST backfill.
    #[serde(default)]
    pub last_message_id: BTreeMap<String, u64>,
}

impl FlowdockCursor {
    /// Wraps the cursor for the supervisor.
    pub fn to_cursor(&self) -> Cursor {
        Cursor::from_typed(self)
    }

    /// Reads a cursor stored by [`FlowdockCursor::to_cursor`].
    pub fn from_cursor(cursor: &Cursor) -> Result<Self, chat_model::CursorError> {
        cursor.to_typed()
    }

    /// Records that message `id` of `room` was delivered; returns false when it was not newer
    /// than what the cursor already holds.
    pub fn advance(&mut self, room: &str, id: u64) -> bool {
        match self.last_message_id.get_mut(room) {
            Some(last) if id > *last => {
                *last = id;
                true
            }
            Some(_) => false,
            None => {
                self.last_message_id.insert(room.to_owned(), id);
                id > 0
            }
        }
    }
}

/// Percent-encodes a query value, keeping the characters flow names use (`/`, `:`, `,`).
pub(crate) fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/:,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes one path segment (also escaping `/` and `,`).
pub(crate) fn encode_segment(s: &str) -> String {
    encode_query(s).replace('/', "%2F").replace(',', "%2C")
}

/// What a [`Session`] streams and how: plain settings, no credentials (the IO loop adds the
/// token to every request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The `source` name put on every event.
    pub source: String,
    /// Streaming base URL (default [`DEFAULT_STREAM_URL`]).
    pub url: String,
    /// REST base URL for baselines and backfill (None: [`DEFAULT_API_URL`] for the real
    /// host, else `url`).
    pub api_url: Option<String>,
    /// Flows to stream, as `org/flow` (or flow ids).
    pub flows: Vec<String>,
    /// Also stream private messages (`user=1`).
    pub private: bool,
    /// The `active` parameter, when set.
    pub active: Option<Active>,
    /// Which content type to stream.
    pub transport: Transport,
    /// Largest frame accepted, in bytes.
    pub max_frame: usize,
    /// Messages per REST backfill request (1-100).
    pub backfill_limit: u32,
    /// Keep each message's wire object on its event ([`chat_model::Event::raw`]); without it
    /// frames are read straight into typed fields, never into a JSON tree (default true).
    pub keep_raw: bool,
}

impl Settings {
    /// Settings for `flows` on the real hosts, with the SSE transport.
    pub fn new(source: impl Into<String>, flows: Vec<String>) -> Self {
        Settings {
            source: source.into(),
            url: DEFAULT_STREAM_URL.to_owned(),
            api_url: None,
            flows,
            private: false,
            active: None,
            transport: Transport::EventStream,
            max_frame: 1024 * 1024,
            backfill_limit: MAX_BACKFILL_LIMIT,
            keep_raw: true,
        }
    }

    /// Checks the settings and returns them with both base URLs parsed and written out
    /// (`api_url` always set).
    pub fn resolve(mut self) -> Result<Settings, Error> {
        self.check_flows()?;
        let base = parse_url("url", &self.url)?;
        let api = match &self.api_url {
            Some(a) => parse_url("api_url", a)?,
            None if base.host_str() == Some("stream.flowdock.com") => {
                parse_url("api_url", DEFAULT_API_URL)?
            }
            None => base.clone(),
        };
        self.url = base.to_string();
        self.api_url = Some(api.to_string());
        Ok(self)
    }

    /// Checks that something is streamed and that no flow is blank.
    pub fn check_flows(&self) -> Result<(), Error> {
        if self.flows.is_empty() && !self.private {
            return Err(Error::NoFlows);
        }
        match self.flows.iter().find(|f| f.trim().is_empty()) {
            Some(bad) => Err(Error::BadFlow {
                flow: bad.clone(),
                problem: "is empty",
            }),
            None => Ok(()),
        }
    }

    /// The REST base URL (the resolved `api_url`, else `url`).
    pub fn api_base(&self) -> &str {
        self.api_url.as_deref().unwrap_or(&self.url)
    }

    /// The streaming URL: `/flows/:org/:flow` for exactly one `org/flow` and no private
    /// stream, else `/flows?filter=...` (with `user=1`); plus `active` when set. The token is
    /// never in it.
    pub fn stream_url(&self) -> String {
        let base = self.url.trim_end_matches('/');
        let mut params = Vec::new();
        let single = match self.flows.as_slice() {
            [flow] if !self.private => flow
                .split_once('/')
                .filter(|(o, f)| !o.is_empty() && !f.is_empty() && !f.contains('/')),
            _ => None,
        };
        let path = match single {
            Some((org, flow)) => format!(
                "{base}/flows/{}/{}",
                encode_segment(org),
                encode_segment(flow)
            ),
            None => {
                if !self.flows.is_empty() {
                    params.push(format!("filter={}", encode_query(&self.flows.join(","))));
                }
                if self.private {
                    params.push("user=1".to_owned());
                }
                format!("{base}/flows")
            }
        };
        if let Some(active) = self.active {
            params.push(format!("active={}", active.as_str()));
        }
        if params.is_empty() {
            path
        } else {
            format!("{path}?{}", params.join("&"))
        }
    }

    /// Names what is streamed, for errors: `flows a/b, c/d (+ private) at URL` (redacted).
    pub fn describe(&self) -> String {
        let mut what = if self.flows.is_empty() {
            "private messages".to_owned()
        } else {
            let mut w = format!(
                "flow{} {}",
                if self.flows.len() == 1 { "" } else { "s" },
                self.flows.join(", ")
            );
            if self.private {
                w.push_str(" and private messages");
            }
            w
        };
        what.push_str(&format!(" at {}", redact_url(&self.stream_url())));
        what
    }

    /// The configured flows that can be backfilled over REST (those written `org/flow`).
    pub fn backfill_flows(&self) -> Vec<String> {
        self.flows
            .iter()
            .filter(|f| f.split('/').filter(|p| !p.is_empty()).count() == 2)
            .cloned()
            .collect()
    }

    /// The REST URL of the messages of `flow` (`org/flow`): those after `since_id` (oldest
    /// first), or the latest `limit` when `since_id` is `None`.
    pub fn messages_url(
        &self,
        flow: &str,
        since_id: Option<u64>,
        limit: u32,
    ) -> Result<String, Error> {
        let (org, name) = flow.split_once('/').ok_or_else(|| Error::BadFlow {
            flow: flow.to_owned(),
            problem: "is not written org/flow",
        })?;
        let mut url = format!(
            "{}/flows/{}/{}/messages?limit={}",
            self.api_base().trim_end_matches('/'),
            encode_segment(org),
            encode_segment(name),
            limit.clamp(1, MAX_BACKFILL_LIMIT)
        );
        if let Some(since) = since_id {
            url.push_str(&format!("&since_id={since}&sort=asc"));
        }
        Ok(url)
    }

    fn limit(&self) -> u32 {
        self.backfill_limit.clamp(1, MAX_BACKFILL_LIMIT)
    }
}

fn parse_url(what: &'static str, s: &str) -> Result<url::Url, Error> {
    let invalid = |reason: String| Error::InvalidUrl {
        what,
        url: redact_url(s),
        reason,
    };
    let u = url::Url::parse(s.trim_end_matches('/')).map_err(|e| invalid(e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https".to_owned()));
    }
    Ok(u)
}

/// An HTTP request the session wants made: always a `GET` with HTTP basic auth (the token as
/// user, an empty password) and the `Accept` header of [`Request::accept`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Open the stream; its body goes to [`Session::handle_chunk`].
    Stream {
        /// The streaming URL (no token in it).
        url: String,
        /// The `Accept` header (the transport's content type).
        accept: &'static str,
        /// The `Last-Event-ID` header, when set (Event-Stream resume).
        last_event_id: Option<String>,
    },
    /// Fetch messages of a flow over REST: a baseline (`since_id` None: the latest `limit`)
    /// or a backfill page (oldest first after `since_id`); the body goes to
    /// [`Session::handle_response`].
    Backfill {
        /// The flow, `org/flow`.
        flow: String,
        /// The REST URL.
        url: String,
        /// Messages after this id; None for the latest.
        since_id: Option<u64>,
        /// How many messages at most.
        limit: u32,
    },
}

impl Request {
    /// The URL to `GET`.
    pub fn url(&self) -> &str {
        match self {
            Request::Stream { url, .. } | Request::Backfill { url, .. } => url,
        }
    }

    /// The `Accept` header value.
    pub fn accept(&self) -> &'static str {
        match self {
            Request::Stream { accept, .. } => accept,
            Request::Backfill { .. } => "application/json",
        }
    }

    /// The headers besides auth: `Accept`, and `Last-Event-ID` when resuming.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("Accept", self.accept().to_owned())];
        if let Request::Stream {
            last_event_id: Some(id),
            ..
        } = self
        {
            h.push(("Last-Event-ID", id.clone()));
        }
        h
    }

    /// The longest the whole request may take: REST requests only (a stream is open-ended;
    /// the supervisor's stall timer watches it).
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            Request::Stream { .. } => None,
            Request::Backfill { .. } => Some(REST_TIMEOUT),
        }
    }

    /// Whether this opens the stream.
    pub fn is_stream(&self) -> bool {
        matches!(self, Request::Stream { .. })
    }

    /// Names the request for errors (URL redacted).
    fn describe(&self, settings: &Settings) -> String {
        match self {
            Request::Stream { .. } => settings.describe(),
            Request::Backfill { flow, url, .. } => {
                format!("messages of flow {flow} at {}", redact_url(url))
            }
        }
    }
}

/// What came back for a [`Request`]: the head, and the body of a REST answer (empty for the
/// stream, whose body goes to [`Session::handle_chunk`], and for error statuses).
#[derive(Clone, Copy, Debug)]
pub struct Response<'a> {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, when sent.
    pub content_type: Option<&'a str>,
    /// The `Retry-After` header as read by [`chat_model::parse_retry_after`], when sent.
    pub retry_after: Option<Duration>,
    /// The body of a REST answer.
    pub body: &'a [u8],
}

impl<'a> Response<'a> {
    /// A 200 answer with `content_type` and `body`, no `Retry-After`.
    pub fn ok(content_type: &'a str, body: &'a [u8]) -> Self {
        Response {
            status: 200,
            content_type: Some(content_type),
            retry_after: None,
            body,
        }
    }

    /// Checks the status and the content type (`expected`) of a response for `what`.
    pub fn check(&self, what: &str, expected: &'static str) -> Result<(), Error> {
        if !(200..300).contains(&self.status) {
            return Err(Error::Http {
                status: self.status,
                what: what.to_owned(),
                retry_after: self.retry_after,
            });
        }
        let got = self.content_type.unwrap_or("");
        let mime = got
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime != expected {
            return Err(Error::ContentType {
                what: what.to_owned(),
                got: if got.is_empty() {
                    "(none)".into()
                } else {
                    got.to_owned()
                },
                expected,
            });
        }
        Ok(())
    }

    /// The body of a messages request as JSON objects, after [`Response::check`].
    pub fn messages(&self, what: &str) -> Result<Vec<Value>, Error> {
        self.check(what, "application/json")?;
        serde_json::from_slice::<Vec<Value>>(self.body).map_err(|e| Error::NotJson {
            what: what.to_owned(),
            expected: "a JSON array of messages",
            detail: e.to_string(),
        })
    }
}

/// How a stream ended while the backfill still ran.
#[derive(Debug)]
enum End {
    Clean,
    Cut(String),
}

enum Framer {
    /// The decoder and the frames of the chunk being handled (kept for reuse).
    Json(JsonLinesDecoder, Vec<Item<Frame>>),
    /// SSE events are handled as the decoder finds them (its text windows are then reused).
    Sse(Box<SseDecoder>),
}

impl Framer {
    fn buffered_len(&self) -> usize {
        match self {
            Framer::Json(d, _) => d.buffered_len(),
            Framer::Sse(d) => d.buffered_len(),
        }
    }
}

/// A chunk smaller than this is not part of a burst: the item queue and the frame list give
/// their memory back once drained (an idle stream keeps no buffers between keep-alives).
const SMALL_CHUNK: usize = 1024;

/// Where the connection plan stands.
#[derive(Debug)]
enum Phase {
    /// Taking the baselines of these flows (front first).
    Baseline(VecDeque<String>),
    /// The stream is to be opened (or its head is awaited).
    Open,
    /// Backfilling the front flow of the queue from `since` (page `page`); then the others.
    Backfill {
        flows: VecDeque<String>,
        since: u64,
        page: usize,
    },
    /// Streaming.
    Live,
}

/// One Flowdock connection, sans IO: requests out, responses, bytes and time in, items out.
pub struct Session {
    settings: Settings,
    /// What is streamed (for errors).
    what: String,
    /// No resume cursor was given: this connection fixes the start position.
    fresh: bool,
    /// The position the session started from (to tell whether the baselines moved it).
    resumed: FlowdockCursor,
    cursor: FlowdockCursor,
    /// The start position this connection fixed (fresh sessions, after the baselines).
    start: Option<FlowdockCursor>,
    phase: Phase,
    /// The request handed out and not answered yet.
    outstanding: Option<Request>,
    framer: Option<Framer>,
    /// Bytes fed so far (for error offsets of SSE events).
    fed: u64,
    /// Live bytes received before the backfill finished, and how the stream ended then.
    held: Vec<u8>,
    held_end: Option<End>,
    /// Aliases the baselines found, learnt when the stream opens.
    baseline_aliases: Vec<(String, String)>,
    /// The received-at time of the latest bytes (for a last frame completed by the end).
    received: Option<Timestamp>,
    /// Other references to the configured flows (a flow id, as the REST answers for that
    /// flow name it), each to the configured `org/flow`.
    aliases: HashMap<String, String>,
    /// The flow a message that names none belongs to (a single-flow stream).
    only_flow: Option<String>,
    items: VecDeque<SourceItem>,
    /// The last chunk was small (see [`SMALL_CHUNK`]).
    small_chunk: bool,
    /// Sticky: once set, the session is over and says so again on every ask.
    error: Option<Error>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("what", &self.what)
            .field("transport", &self.settings.transport)
            .field("phase", &self.phase)
            .field("cursor", &self.cursor)
            .field("fed", &self.fed)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A connection streaming what `settings` say, resuming from `resume` (None: a fresh
    /// start, whose position the baselines fix).
    pub fn new(settings: Settings, resume: Option<FlowdockCursor>) -> Self {
        let fresh = resume.is_none();
        let cursor = resume.unwrap_or_default();
        let only_flow = match (settings.flows.as_slice(), settings.private) {
            ([flow], false) => Some(normalize_flow(flow)),
            _ => None,
        };
        Session {
            what: settings.describe(),
            phase: Phase::Baseline(settings.backfill_flows().into()),
            settings,
            fresh,
            resumed: cursor.clone(),
            cursor,
            start: None,
            outstanding: None,
            framer: None,
            fed: 0,
            held: Vec::new(),
            held_end: None,
            baseline_aliases: Vec::new(),
            received: None,
            aliases: HashMap::new(),
            only_flow,
            items: VecDeque::new(),
            small_chunk: true,
            error: None,
        }
    }

    /// A fresh session (no resume cursor) that starts from `start`, the position an earlier
    /// fresh session of the same source fixed (see [`Session::start_position`]), when any.
    pub fn with_start(mut self, start: Option<FlowdockCursor>) -> Self {
        if let (true, Some(start), None) = (self.fresh, start, &self.framer) {
            self.resumed = start.clone();
            self.cursor = start;
        }
        self
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The start position this (fresh) session fixed once its baselines were taken.
    pub fn start_position(&self) -> Option<&FlowdockCursor> {
        self.start.as_ref()
    }

    /// The next request to make, if any; at most one is outstanding at a time (answer it with
    /// [`Session::handle_response`] or [`Session::handle_network_error`]).
    pub fn poll_request(&mut self) -> Option<Request> {
        self.advance();
        if self.outstanding.is_some() || self.error.is_some() {
            return None;
        }
        let request = match &self.phase {
            Phase::Baseline(flows) => {
                let flow = flows.front()?.clone();
                match self.settings.messages_url(&flow, None, 1) {
                    Ok(url) => Request::Backfill {
                        url,
                        flow,
                        since_id: None,
                        limit: 1,
                    },
                    Err(e) => {
                        self.fail(e);
                        return None;
                    }
                }
            }
            Phase::Open => {
                let last_event_id = match self.settings.transport {
                    Transport::EventStream => {
                        self.cursor.last_event_id.clone().filter(|i| !i.is_empty())
                    }
                    Transport::Json => None,
                };
                Request::Stream {
                    url: self.settings.stream_url(),
                    accept: self.settings.transport.accept(),
                    last_event_id,
                }
            }
            Phase::Backfill { flows, since, .. } => {
                let flow = flows.front()?.clone();
                let (since, limit) = (*since, self.settings.limit());
                match self.settings.messages_url(&flow, Some(since), limit) {
                    Ok(url) => Request::Backfill {
                        url,
                        flow,
                        since_id: Some(since),
                        limit,
                    },
                    Err(e) => {
                        self.fail(e);
                        return None;
                    }
                }
            }
            Phase::Live => return None,
        };
        self.outstanding = Some(request.clone());
        Some(request)
    }

    /// Takes the answer to the outstanding request; `received` is when it arrived (the
    /// received-at time of backfilled events).
    pub fn handle_response(&mut self, response: Response<'_>, received: Timestamp) {
        let Some(request) = self.outstanding.take() else {
            tracing::debug!("flowdock: a response without a request; ignored");
            return;
        };
        let what = request.describe(&self.settings);
        match request {
            Request::Stream { accept, .. } => match response.check(&what, accept) {
                Ok(()) => self.stream_opened(),
                Err(e) => self.fail(e),
            },
            Request::Backfill { flow, .. } => {
                let got = response.messages(&what);
                if matches!(self.phase, Phase::Baseline(_)) {
                    self.baseline(&flow, got);
                } else {
                    self.backfilled(&flow, got, received);
                }
            }
        }
        self.advance();
    }

    /// The outstanding request failed before an answer (refused, reset, timed out), or, with
    /// none outstanding, the live stream was cut: `detail` says how.
    pub fn handle_network_error(&mut self, detail: impl Into<String>) {
        let detail = detail.into();
        match self.outstanding.take() {
            Some(request) => {
                let error = Error::Network {
                    what: request.describe(&self.settings),
                    detail,
                };
                match request {
                    Request::Stream { .. } => self.fail(error),
                    Request::Backfill { flow, .. } => {
                        if matches!(self.phase, Phase::Baseline(_)) {
                            self.baseline(&flow, Err(error));
                        } else {
                            self.backfilled(&flow, Err(error), chrono::DateTime::UNIX_EPOCH);
                        }
                    }
                }
                self.advance();
            }
            None if self.error.is_some() => {}
            None if matches!(self.phase, Phase::Backfill { .. }) => {
                self.held_end = Some(End::Cut(detail))
            }
            None => self.fail(Error::Cut {
                what: self.what.clone(),
                detail,
            }),
        }
    }

    /// Feeds one chunk of the stream's body, received at `now` (wall clock: `received`).
    ///
    /// `chunk` is a `&Bytes` as HTTP clients deliver it (JSON frames are then slices of it,
    /// without copying) or any `&[u8]`. Bytes that arrive while the backfill runs are held
    /// until it is done, so missed messages come first.
    pub fn handle_chunk<'a>(
        &mut self,
        chunk: impl Into<Chunk<'a>>,
        now: Instant,
        received: Timestamp,
    ) {
        let _ = now;
        let chunk = chunk.into();
        if self.error.is_some() || self.framer.is_none() {
            return;
        }
        self.received = Some(received);
        self.small_chunk = chunk.as_slice().len() < SMALL_CHUNK;
        if !matches!(self.phase, Phase::Live) {
            self.held.extend_from_slice(chunk.as_slice());
            return;
        }
        self.feed(chunk, received);
    }

    /// The stream's body ended cleanly at `now`: [`Error::Ended`], or [`Error::Truncated`]
    /// when bytes of a frame were held without their end (`\r`, or the blank line of an
    /// event), which a resumed session fetches again. Either way the session is then over
    /// ([`Session::error`]).
    pub fn handle_end(&mut self, now: Instant) {
        let _ = now;
        match self.phase {
            _ if self.error.is_some() => {}
            Phase::Backfill { .. } => self.held_end = Some(End::Clean),
            _ => self.end(),
        }
    }

    /// Ends the stream: the last frame, or the error of a frame cut short.
    fn end(&mut self) {
        let partial = self.framer.as_ref().map_or(0, Framer::buffered_len);
        if partial > 0 {
            return self.fail(Error::Truncated {
                what: self.what.clone(),
                partial,
            });
        }
        let received = self.received.unwrap_or(chrono::DateTime::UNIX_EPOCH);
        self.decode(None, received);
        self.fail(Error::Ended {
            what: self.what.clone(),
        });
    }

    /// Time passed: the session has no timer of its own (the supervisor watches for stalls),
    /// so nothing happens; kept for the common session surface.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }

    /// When [`Session::handle_timeout`] is next due: never.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The next item: the start position first (a fresh start, or a position the baselines
    /// moved), then backfilled events, then live events, keep-alives, retry hints and
    /// malformed-frame reports.
    pub fn poll_item(&mut self) -> Option<SourceItem> {
        let item = self.items.pop_front();
        if self.items.is_empty() && self.small_chunk && self.items.capacity() > 0 {
            // Not in a burst: an idle connection holds no queue.
            self.items = VecDeque::new();
        }
        item
    }

    /// The item [`Session::poll_item`] would return next.
    pub fn peek_item(&self) -> Option<&SourceItem> {
        self.items.front()
    }

    /// The item [`Session::poll_item`] would return next, to change in place (e.g. to put
    /// names on it) before it is taken.
    pub fn peek_item_mut(&mut self) -> Option<&mut SourceItem> {
        self.items.front_mut()
    }

    /// Why the session is over, once it is (sticky: the same error on every call). Items
    /// queued before the end are still handed out by [`Session::poll_item`].
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// Whether the plan reached the live stream (every request made and answered).
    pub fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live) && self.error.is_none()
    }

    /// The resume cursor after everything decoded so far.
    pub fn cursor(&self) -> &FlowdockCursor {
        &self.cursor
    }

    /// Bytes buffered inside an incomplete frame (non-zero when a stream was cut mid-frame).
    pub fn buffered_len(&self) -> usize {
        self.framer.as_ref().map_or(0, Framer::buffered_len) + self.held.len()
    }

    fn fail(&mut self, error: Error) {
        if self.error.is_none() {
            self.outstanding = None;
            self.error = Some(error);
        }
    }

    /// Moves the plan on after an answer: the baselines done, the backfill done.
    fn advance(&mut self) {
        if self.error.is_some() {
            return;
        }
        if let Phase::Baseline(flows) = &self.phase {
            if flows.is_empty() {
                if self.fresh && self.start.is_none() {
                    self.start = Some(self.cursor.clone());
                }
                self.phase = Phase::Open;
            }
        }
        if let Phase::Backfill { flows, since, page } = &mut self.phase {
            if *page == 0 {
                // Only flows with a known position: never replay a whole history.
                while let Some(flow) = flows.front() {
                    match self.cursor.last_message_id.get(flow) {
                        Some(&known) => {
                            *since = known;
                            break;
                        }
                        None => {
                            flows.pop_front();
                        }
                    }
                }
            }
            if flows.is_empty() {
                self.go_live();
            }
        }
    }

    /// The baseline answer for `flow`: fixes or checks its position.
    fn baseline(&mut self, flow: &str, got: Result<Vec<Value>, Error>) {
        if let Phase::Baseline(flows) = &mut self.phase {
            flows.pop_front();
        }
        let transport = self.settings.transport;
        let known = self.cursor.last_message_id.get(flow).copied();
        let needed = transport == Transport::Json || self.cursor.last_event_id.is_none();
        let source = &self.settings.source;
        let latest = match got {
            Ok(latest) => latest,
            Err(e) if transport == Transport::Json => return self.fail(e),
            Err(e) if needed => {
                tracing::warn!(source = %source, flow = %flow, error = %e,
                    "flowdock: no REST position for the flow; a drop before the first event may lose messages");
                return;
            }
            Err(e) => {
                tracing::debug!(source = %source, flow = %flow, error = %e,
                    "flowdock: cannot check the flow's REST position; resuming with Last-Event-ID");
                return;
            }
        };
        let mut top = None;
        for raw in latest {
            if let Ok(m) = serde_json::from_value::<WireMessage>(raw) {
                if let Some(reference) = m.flow.clone() {
                    self.baseline_aliases.push((reference, flow.to_owned()));
                }
                top = top.max(m.id_u64());
            }
        }
        let top = top.unwrap_or(0);
        match known {
            // With an SSE event id, Last-Event-ID replays what was missed: a REST baseline
            // taken now would mark the replay as already delivered.
            None if needed => {
                self.cursor.last_message_id.insert(flow.to_owned(), top);
            }
            None => {}
            Some(mine) if top < mine => {
                tracing::warn!(
                    source = %source,
                    flow = %flow,
                    cursor_id = mine,
                    server_id = top,
                    "flowdock: the server's message ids went backwards in flow {flow} \
                     (latest {top}, below the {mine} already delivered; server reset?); \
                     resuming from the server's position"
                );
                self.cursor.last_message_id.insert(flow.to_owned(), top);
                // Its event ids are the old server's too.
                self.cursor.last_event_id = None;
            }
            Some(_) => {}
        }
    }

    /// The stream's head was accepted: set up the framer, then backfill or go live.
    fn stream_opened(&mut self) {
        let limits = Limits::with_max_frame(self.settings.max_frame);
        self.framer = Some(match self.settings.transport {
            // The document: objects "delimited by carriage return (\r). Newline characters
            // (\n) may occur in messages, but carriage returns should not." So only `\r`
            // ends a frame: a pretty-printed object with raw newlines between its members is
            // one message, `\n` (or other whitespace) between frames is a keep-alive, and a
            // `\r\n` ending is a frame followed by a keep-alive.
            Transport::Json => Framer::Json(JsonLinesDecoder::new(Delimiter::Cr, limits), vec![]),
            Transport::EventStream => {
                let mut dec = SseDecoder::new(limits);
                if let Some(id) = &self.cursor.last_event_id {
                    dec.set_last_event_id(id);
                }
                Framer::Sse(Box::new(dec))
            }
        });
        let changed = self.cursor != self.resumed;
        for (reference, flow) in std::mem::take(&mut self.baseline_aliases) {
            self.learn_alias(&reference, &flow);
        }
        if self.fresh || changed {
            // The start position, fixed before any event of this connection.
            self.items
                .push_back(SourceItem::Cursor(self.cursor.to_cursor()));
        }
        let rest_resume =
            self.settings.transport == Transport::Json || self.cursor.last_event_id.is_none();
        if rest_resume {
            self.phase = Phase::Backfill {
                flows: self.settings.backfill_flows().into(),
                since: 0,
                page: 0,
            };
        } else {
            self.go_live();
        }
    }

    /// One backfill page of `flow` (or its failure).
    fn backfilled(&mut self, flow: &str, got: Result<Vec<Value>, Error>, received: Timestamp) {
        let page = match got {
            Ok(page) => page,
            Err(e) if self.settings.transport == Transport::Json => return self.fail(e),
            Err(e) => {
                tracing::warn!(source = %self.settings.source, error = %e,
                    "flowdock: REST backfill failed; going on with the live stream");
                return self.go_live();
            }
        };
        let Phase::Backfill { since, .. } = self.phase else {
            return;
        };
        let n = page.len();
        let mut msgs: Vec<(WireMessage, Value)> = Vec::with_capacity(n);
        for raw in page {
            match WireMessage::deserialize(&raw) {
                Ok(m) => msgs.push((m, raw)),
                Err(e) => self.items.push_back(SourceItem::Malformed {
                    error: format!("flowdock backfill of {flow}: bad message ({e})"),
                }),
            }
        }
        msgs.sort_by_key(|(m, _)| m.id_u64().unwrap_or(0));
        let delivered = msgs.len();
        // The next page starts after the newest id of this one: the page's own ids, not a
        // lookup that another naming of the flow could leave behind.
        let next = msgs
            .iter()
            .filter_map(|(m, _)| m.id_u64())
            .max()
            .unwrap_or(since);
        for (mut m, raw) in msgs {
            // It belongs to the flow asked for, whatever its `flow` field says (which, when
            // it differs, is learnt as an alias).
            if let Some(reference) = m.flow.take() {
                self.learn_alias(&reference, flow);
            }
            m.flow = Some(flow.to_owned());
            self.deliver(m.view(), Some(raw), received);
        }
        tracing::debug!(flow, since, delivered, "flowdock: backfilled");
        let limit = self.settings.limit() as usize;
        if let Phase::Backfill { flows, since, page } = &mut self.phase {
            *page += 1;
            if n < limit || next <= *since || *page >= MAX_BACKFILL_PAGES {
                flows.pop_front();
                *page = 0;
            } else {
                *since = next;
            }
        }
    }

    /// The plan is done: stream, starting with the bytes held during the backfill.
    fn go_live(&mut self) {
        self.phase = Phase::Live;
        let held = std::mem::take(&mut self.held);
        if !held.is_empty() {
            let received = self.received.unwrap_or(chrono::DateTime::UNIX_EPOCH);
            self.feed((&held).into(), received);
        }
        match self.held_end.take() {
            Some(End::Clean) => self.end(),
            Some(End::Cut(detail)) => self.fail(Error::Cut {
                what: self.what.clone(),
                detail,
            }),
            None => {}
        }
    }

    fn feed(&mut self, chunk: Chunk<'_>, received: Timestamp) {
        self.decode(Some(chunk), received);
    }

    /// Frames `chunk` (None: the end of the stream) and handles what it completed.
    fn decode(&mut self, chunk: Option<Chunk<'_>>, received: Timestamp) {
        let base = self.fed;
        if let Some(c) = &chunk {
            self.fed += c.as_slice().len() as u64;
        }
        match self.framer.take() {
            Some(Framer::Json(mut dec, mut items)) => {
                match chunk {
                    Some(c) => dec.feed_chunk(c, &mut items),
                    None => dec.finish_stream(&mut items),
                }
                self.json_items(&mut items, received);
                if self.small_chunk && items.capacity() > 0 {
                    items = Vec::new();
                }
                self.framer = Some(Framer::Json(dec, items));
            }
            Some(Framer::Sse(mut dec)) => {
                match chunk {
                    Some(c) => dec.feed_each(c, |item| self.sse_item(item, base, received)),
                    None => {
                        let mut items = Vec::new();
                        dec.finish_stream(&mut items);
                        for item in items {
                            self.sse_item(item, base, received);
                        }
                    }
                }
                self.framer = Some(Framer::Sse(dec));
            }
            None => {}
        }
    }

    fn json_items(&mut self, items: &mut Vec<Item<Frame>>, received: Timestamp) {
        for item in items.drain(..) {
            match item {
                Item::KeepAlive => self.items.push_back(SourceItem::KeepAlive),
                Item::Error(e) => self.items.push_back(SourceItem::Malformed {
                    error: format!("flowdock JSON stream: {e}"),
                }),
                Item::Frame(frame) => {
                    if self.fast(WireRef::parse(&frame.bytes), received).is_some() {
                        continue;
                    }
                    match serde_json::from_slice::<Value>(&frame.bytes) {
                        Ok(raw) => {
                            self.message(raw, received, || {
                                format!("at byte offset {}", frame.offset)
                            });
                        }
                        Err(e) => self.items.push_back(SourceItem::Malformed {
                            error: format!(
                                "flowdock JSON stream: frame is not JSON ({e}) (at byte offset {})",
                                frame.offset
                            ),
                        }),
                    }
                }
            }
        }
    }

    fn sse_item(&mut self, item: Item<SseItem>, base: u64, received: Timestamp) {
        match item {
            Item::KeepAlive | Item::Frame(SseItem::Comment(_)) => {
                self.items.push_back(SourceItem::KeepAlive)
            }
            Item::Error(e) => self.items.push_back(SourceItem::Malformed {
                error: format!("flowdock event stream: {e}"),
            }),
            Item::Frame(SseItem::Retry(ms)) => self
                .items
                .push_back(SourceItem::RetryHint(Duration::from_millis(ms))),
            Item::Frame(SseItem::Event(ev)) => {
                let id_changed = !ev.id.is_empty()
                    && self.cursor.last_event_id.as_deref() != Some(ev.id.as_str());
                if id_changed {
                    match &mut self.cursor.last_event_id {
                        // The old id's buffer takes the new one (no allocation per event).
                        Some(last) => {
                            last.clear();
                            last.push_str(&ev.id);
                        }
                        None => self.cursor.last_event_id = Some(ev.id.to_string()),
                    }
                }
                let carried = match self.fast(WireRef::parse_str(&ev.data), received) {
                    Some(carried) => carried,
                    None => match serde_json::from_str::<Value>(&ev.data) {
                        Ok(raw) => self.message(raw, received, || {
                            format!("event id {:?}, in the chunk at byte offset {base}", ev.id)
                        }),
                        Err(e) => {
                            self.items.push_back(SourceItem::Malformed {
                                error: format!(
                                    "flowdock event stream: event data is not JSON ({e}) (event id {:?}, in the chunk at byte offset {base})",
                                    ev.id
                                ),
                            });
                            false
                        }
                    },
                };
                // The id advanced but no event carried the cursor: report it alone.
                if id_changed && !carried {
                    self.items
                        .push_back(SourceItem::Cursor(self.cursor.to_cursor()));
                }
            }
        }
    }

    /// The streaming hot path: a message read straight from its frame into typed fields
    /// (`msg`, None when that read did not take it). Taken only when the event needs no JSON
    /// tree: no `raw` is kept and its id does not hash the wire object. Returns whether an
    /// event (with the cursor) was queued, or None when the frame is left to
    /// [`Session::message`], which reads it through a `Value` as before.
    fn fast(&mut self, msg: Option<WireRef<'_>>, received: Timestamp) -> Option<bool> {
        let msg = msg.filter(|m| !self.settings.keep_raw && !id_needs_raw(m))?;
        Some(self.deliver(msg, None, received))
    }

    /// Handles one parsed wire object of the stream; returns whether an event was queued.
    fn message(
        &mut self,
        raw: Value,
        received: Timestamp,
        where_: impl FnOnce() -> String,
    ) -> bool {
        let transport = self.settings.transport.name();
        if !raw.is_object() {
            self.items.push_back(SourceItem::Malformed {
                error: format!(
                    "flowdock {transport}: message is not a JSON object ({})",
                    where_()
                ),
            });
            return false;
        }
        match WireMessage::deserialize(&raw) {
            Ok(msg) => self.deliver(msg.view(), Some(raw), received),
            Err(e) => {
                self.items.push_back(SourceItem::Malformed {
                    error: format!(
                        "flowdock {transport}: message has an unexpected shape ({e}) ({})",
                        where_()
                    ),
                });
                false
            }
        }
    }

    /// Learns that `reference` (as a message's `flow` field gives it, e.g. a flow id) is the
    /// configured flow `flow` (`org/flow`): such messages are named and resumed as `flow`.
    fn learn_alias(&mut self, reference: &str, flow: &str) {
        let reference = normalize_flow(reference.trim());
        if reference.is_empty() || reference == flow {
            return;
        }
        // Positions recorded under the other name before it was known count for the flow.
        if let Some(id) = self.cursor.last_message_id.remove(&reference) {
            self.cursor.advance(flow, id);
        }
        self.aliases.insert(reference, flow.to_owned());
    }

    /// The configured flow a message belongs to, when it names one (or the stream has one).
    fn flow_of(&self, msg: &WireRef<'_>) -> Option<String> {
        match msg.flow.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) => {
                let f = normalize_flow_cow(f);
                match self.aliases.get(f.as_ref()) {
                    Some(alias) => Some(alias.clone()),
                    None => Some(f.into_owned()),
                }
            }
            None if msg.to.is_none() => self.only_flow.clone(),
            None => None,
        }
    }

    /// Maps and queues one message, advancing the cursor; drops a message already delivered
    /// (by id, per flow) when replays overlap (Flowdock message ids grow within a flow).
    /// `raw` is its wire object when it was read as one (kept on the event when
    /// [`Settings::keep_raw`]). Returns whether an event was queued.
    ///
    /// The position is kept under the configured flow the message belongs to (its `flow`
    /// field, an alias of it, or the stream's only flow), the same key the REST backfill
    /// resumes from: so the cursor attached to each event names the last delivered id of its
    /// flow, whichever form the server used.
    fn deliver(&mut self, msg: WireRef<'_>, raw: Option<Value>, received: Timestamp) -> bool {
        let private = msg.to.is_some();
        let (room, has_flow) = match self.flow_of(&msg) {
            // The message is named by its configured flow from here on.
            Some(flow) => {
                let room = match room_of_parts(Some(&flow), private) {
                    Cow::Borrowed(r) if r.len() == flow.len() => None,
                    other => Some(other.into_owned()),
                };
                (room.unwrap_or(flow), true)
            }
            None => (
                room_of_parts(msg.flow.as_deref(), private).into_owned(),
                msg.flow.is_some(),
            ),
        };
        if let (Some(id), true) = (msg.id_u64(), has_flow) {
            if !self.cursor.advance(&room, id) {
                tracing::debug!(room, id, "flowdock: dropping a message already delivered");
                return false;
            }
        }
        debug_assert!(
            raw.is_some() || !id_needs_raw(&msg),
            "the id hashes the wire object"
        );
        let id = stable_id_of(&msg, &room, || {
            raw.as_ref().map(Value::to_string).unwrap_or_default()
        });
        let mut event = event_of(&self.settings.source, msg, room, id, received);
        if self.settings.keep_raw {
            event.raw = raw;
        }
        self.items.push_back(SourceItem::Event {
            event,
            cursor: Some(self.cursor.to_cursor()),
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Kind;

    fn now() -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn ok<'a>(content_type: &'a str, body: &'a [u8]) -> Response<'a> {
        Response::ok(content_type, body)
    }

    /// A live session on the private stream (no REST requests), resuming from `cursor`.
    fn live(transport: Transport, cursor: FlowdockCursor, max_frame: usize) -> Session {
        let mut settings = Settings::new("s", vec![]);
        settings.private = true;
        settings.transport = transport;
        settings.max_frame = max_frame;
        let mut s = Session::new(settings, Some(cursor));
        let req = s.poll_request().unwrap();
        assert!(req.is_stream(), "{req:?}");
        s.handle_response(ok(transport.accept(), b""), now());
        assert!(s.is_live());
        s
    }

    fn feed(s: &mut Session, bytes: &[u8]) -> Vec<SourceItem> {
        s.handle_chunk(bytes, Instant::now(), now());
        std::iter::from_fn(|| s.poll_item()).collect()
    }

    fn events(out: &[SourceItem]) -> Vec<chat_model::Event> {
        out.iter()
            .filter_map(|i| match i {
                SourceItem::Event { event, .. } => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    const M1: &str =
        r#"{"id":1,"event":"message","flow":"o:f","content":"héllo ü 日本","user":"2","sent":1}"#;
    const M2: &str =
        r#"{"id":2,"event":"message","flow":"o:f","content":"two","user":"2","sent":2}"#;

    #[test]
    fn json_stream_cr_and_crlf_and_keepalives() {
        let mut d = live(Transport::Json, FlowdockCursor::default(), 1 << 20);
        let out = feed(&mut d, format!("{M1}\r\n\n{M2}\r").as_bytes());
        let ev = events(&out);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].text, "héllo ü 日本");
        assert!(out.iter().any(|i| matches!(i, SourceItem::KeepAlive)));
        assert_eq!(d.cursor().last_message_id["o/f"], 2);
    }

    #[test]
    fn json_stream_frames_on_cr_only_pretty_printed_is_one_message() {
        let pretty = |id: u64, text: &str| {
            serde_json::to_string_pretty(&serde_json::json!({
                "id": id, "event": "message", "flow": "o:f", "content": text, "user": "2"
            }))
            .unwrap()
        };
        let (a, b) = (pretty(1, "first\nline two"), pretty(2, "second"));
        assert!(a.contains('\n'), "raw newlines between members: {a}");
        for (sep, ka) in [("\r", false), ("\r\n", true), ("\r \t\n\n", true)] {
            let mut d = live(Transport::Json, FlowdockCursor::default(), 1 << 20);
            let out = feed(&mut d, format!("\n{a}{sep}{b}{sep}").as_bytes());
            assert!(
                !out.iter()
                    .any(|i| matches!(i, SourceItem::Malformed { .. })),
                "{sep:?}: {out:?}"
            );
            let ev = events(&out);
            assert_eq!(ev.len(), 2, "{sep:?}: {out:?}");
            assert_eq!(ev[0].text, "first\nline two");
            assert_eq!(ev[1].text, "second");
            let kas = out
                .iter()
                .filter(|i| matches!(i, SourceItem::KeepAlive))
                .count();
            // The leading `\n`, plus one per separator that has whitespace after its `\r`.
            assert_eq!(kas, if ka { 3 } else { 1 }, "{sep:?}: {out:?}");
        }
    }

    #[test]
    fn utf8_split_across_chunks() {
        let mut d = live(Transport::Json, FlowdockCursor::default(), 1 << 20);
        let mut out = Vec::new();
        for b in format!("{M1}\r").as_bytes() {
            out.extend(feed(&mut d, std::slice::from_ref(b)));
        }
        assert_eq!(events(&out)[0].text, "héllo ü 日本");
    }

    #[test]
    fn malformed_frame_is_reported_with_offset_and_skipped() {
        let mut d = live(Transport::Json, FlowdockCursor::default(), 1 << 20);
        let out = feed(&mut d, format!("{{not json\r{M2}\r").as_bytes());
        let SourceItem::Malformed { error } = &out[0] else {
            panic!("{out:?}")
        };
        assert!(error.contains("offset 0"), "{error}");
        assert_eq!(events(&out).len(), 1);
    }

    #[test]
    fn oversize_frame_is_refused() {
        let mut d = live(Transport::Json, FlowdockCursor::default(), 100);
        let big = format!(r#"{{"event":"message","content":"{}"}}"#, "x".repeat(200));
        let out = feed(&mut d, format!("{big}\r{M2}\r").as_bytes());
        assert!(matches!(&out[0], SourceItem::Malformed { error } if error.contains("limit")));
        assert_eq!(events(&out).len(), 1);
        assert!(d.buffered_len() <= 100);
    }

    #[test]
    fn json_transport_skips_already_delivered() {
        let mut cursor = FlowdockCursor::default();
        cursor.advance("o/f", 1);
        let mut d = live(Transport::Json, cursor, 1 << 20);
        let ev = events(&feed(&mut d, format!("{M1}\r{M2}\r").as_bytes()));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].id, "flowdock:o/f:2");
    }

    #[test]
    fn sse_events_ids_retry_comments() {
        let mut d = live(Transport::EventStream, FlowdockCursor::default(), 1 << 20);
        let input =
            format!("retry: 3000\n\n: ping\n\nid: 41\ndata: {M1}\n\nid: 42\ndata: {M2}\n\n");
        let out = feed(&mut d, input.as_bytes());
        assert!(matches!(out[0], SourceItem::RetryHint(d) if d == Duration::from_secs(3)));
        assert!(matches!(out[1], SourceItem::KeepAlive));
        let ev = events(&out);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].kind, Kind::Message);
        assert_eq!(d.cursor().last_event_id.as_deref(), Some("42"));
        let SourceItem::Event {
            cursor: Some(c), ..
        } = out.last().unwrap()
        else {
            panic!()
        };
        let c = FlowdockCursor::from_cursor(c).unwrap();
        assert_eq!(c.last_event_id.as_deref(), Some("42"));
    }

    #[test]
    fn sse_bad_data_is_malformed_but_id_advances() {
        let mut d = live(Transport::EventStream, FlowdockCursor::default(), 1 << 20);
        let out = feed(&mut d, b"id: 7\ndata: {oops\n\n");
        assert!(matches!(&out[0], SourceItem::Malformed { error } if error.contains("\"7\"")));
        assert!(matches!(&out[1], SourceItem::Cursor(_)));
    }

    #[test]
    fn cursor_round_trips() {
        let mut c = FlowdockCursor {
            last_event_id: Some("9".into()),
            ..Default::default()
        };
        c.advance("a/b", 5);
        let back = FlowdockCursor::from_cursor(&c.to_cursor()).unwrap();
        assert_eq!(back, c);
        assert!(!c.advance("a/b", 5));
    }

    fn settings(transport: Transport, flows: &[&str]) -> Settings {
        let mut s = Settings::new("s", flows.iter().map(|f| f.to_string()).collect());
        s.url = "http://127.0.0.1:9".into();
        s.transport = transport;
        s.resolve().unwrap()
    }

    #[test]
    fn settings_are_checked() {
        assert!(matches!(
            Settings::new("s", vec![]).resolve(),
            Err(Error::NoFlows)
        ));
        let mut s = Settings::new("s", vec!["a/b".into()]);
        s.api_url = Some("ftp://x".into());
        assert!(matches!(
            s.resolve(),
            Err(Error::InvalidUrl {
                what: "api_url",
                ..
            })
        ));
        let s = settings(Transport::Json, &["a/b"]);
        assert_eq!(s.api_base(), "http://127.0.0.1:9/");
        assert_eq!(
            s.messages_url("a/b", Some(3), 500).unwrap(),
            "http://127.0.0.1:9/flows/a/b/messages?limit=100&since_id=3&sort=asc"
        );
        assert!(matches!(
            s.messages_url("ab", None, 1),
            Err(Error::BadFlow { .. })
        ));
    }

    #[test]
    fn a_refused_stream_is_a_sticky_typed_error() {
        let mut s = Session::new(settings(Transport::EventStream, &["x-flow-id"]), None);
        assert!(
            s.poll_request().unwrap().is_stream(),
            "no REST for a flow id"
        );
        s.handle_response(
            Response {
                status: 503,
                content_type: None,
                retry_after: Some(Duration::from_secs(7)),
                body: b"",
            },
            now(),
        );
        for _ in 0..2 {
            let e = s.error().expect("failed");
            assert!(
                matches!(e, Error::Http { status: 503, retry_after: Some(d), what } if d.as_secs() == 7 && what.contains("x-flow-id")),
                "{e:?}"
            );
            assert!(s.poll_request().is_none() && s.poll_item().is_none());
        }
        s.handle_chunk(b"{}\r", Instant::now(), now());
        assert!(s.poll_item().is_none());
    }

    #[test]
    fn a_wrong_content_type_names_the_flows() {
        let mut s = Session::new(settings(Transport::EventStream, &["x-flow-id"]), None);
        s.poll_request().unwrap();
        s.handle_response(ok("text/html; charset=utf-8", b""), now());
        assert!(
            matches!(s.error(), Some(Error::ContentType { got, expected: "text/event-stream", .. }) if got.starts_with("text/html"))
        );
    }

    #[test]
    fn the_end_of_the_stream_is_sticky_and_tells_a_cut_frame() {
        let mut d = live(Transport::Json, FlowdockCursor::default(), 1 << 20);
        feed(&mut d, &M1.as_bytes()[..10]);
        d.handle_end(Instant::now());
        assert!(matches!(
            d.error(),
            Some(Error::Truncated { partial: 10, .. })
        ));
        d.handle_end(Instant::now());
        d.handle_network_error("reset");
        assert!(
            matches!(d.error(), Some(Error::Truncated { .. })),
            "the first error stays"
        );
        assert_eq!(d.error().unwrap().to_disconnect_reason().code(), "network");
        // A cut while a frame is held.
        let mut d = live(Transport::Json, FlowdockCursor::default(), 1 << 20);
        feed(&mut d, M1.as_bytes());
        assert_eq!(d.buffered_len(), M1.len());
        d.handle_network_error("reset");
        assert!(matches!(d.error(), Some(Error::Cut { .. })));
        let mut d = live(Transport::EventStream, FlowdockCursor::default(), 1 << 20);
        d.handle_end(Instant::now());
        assert_eq!(
            d.error().unwrap().to_disconnect_reason(),
            chat_model::DisconnectReason::EndOfStream
        );
    }

    #[test]
    fn json_plan_baseline_stream_backfill_pages_then_held_live_bytes() {
        let mut st = settings(Transport::Json, &["o/f"]);
        st.backfill_limit = 2;
        let mut s = Session::new(st, None);
        let msg =
            |id: u64| format!(r#"{{"id":{id},"event":"message","flow":"o:f","content":"m{id}"}}"#);
        let Some(Request::Backfill {
            since_id: None,
            limit: 1,
            url,
            ..
        }) = s.poll_request()
        else {
            panic!()
        };
        assert!(url.ends_with("/flows/o/f/messages?limit=1"), "{url}");
        assert!(s.poll_request().is_none(), "one request at a time");
        s.handle_response(
            ok("application/json", format!("[{}]", msg(5)).as_bytes()),
            now(),
        );
        assert_eq!(s.start_position().unwrap().last_message_id["o/f"], 5);
        let req = s.poll_request().unwrap();
        assert_eq!(
            req,
            Request::Stream {
                url: "http://127.0.0.1:9/flows/o/f".into(),
                accept: "application/json",
                last_event_id: None
            }
        );
        assert_eq!(req.headers(), [("Accept", "application/json".to_owned())]);
        s.handle_response(ok("application/json", b""), now());
        // Live bytes during the backfill wait for it.
        s.handle_chunk(
            format!("{}\r{}\r", msg(8), msg(9)).as_bytes(),
            Instant::now(),
            now(),
        );
        let mut pages = vec![];
        while let Some(Request::Backfill { since_id, .. }) = s.poll_request() {
            let since = since_id.unwrap();
            pages.push(since);
            let body: Vec<String> = (since + 1..=(since + 2).min(8)).map(msg).collect();
            s.handle_response(
                ok(
                    "application/json",
                    format!("[{}]", body.join(",")).as_bytes(),
                ),
                now(),
            );
        }
        assert_eq!(pages, [5, 7]);
        assert!(s.is_live());
        let items: Vec<SourceItem> = std::iter::from_fn(|| s.poll_item()).collect();
        assert!(matches!(items[0], SourceItem::Cursor(_)), "{items:?}");
        let ids: Vec<String> = events(&items).into_iter().map(|e| e.text).collect();
        assert_eq!(ids, ["m6", "m7", "m8", "m9"], "8 overlapped: once");
    }

    #[test]
    fn json_backfill_failure_fails_the_session_sse_goes_on() {
        for transport in [Transport::Json, Transport::EventStream] {
            let mut s = Session::new(settings(transport, &["o/f"]), None);
            s.poll_request().unwrap();
            s.handle_network_error("refused");
            if transport == Transport::Json {
                assert!(
                    matches!(s.error(), Some(Error::Network { what, .. }) if what.contains("o/f"))
                );
                continue;
            }
            assert!(s.poll_request().unwrap().is_stream(), "SSE: best effort");
            s.handle_response(ok("text/event-stream", b""), now());
            assert!(s.is_live(), "no position, no backfill");
        }
    }

    #[test]
    fn sse_resume_sends_last_event_id_and_skips_the_backfill() {
        let cursor = FlowdockCursor {
            last_event_id: Some("41".into()),
            last_message_id: [("o/f".to_owned(), 7)].into(),
        };
        let mut s = Session::new(settings(Transport::EventStream, &["o/f"]), Some(cursor));
        s.poll_request().unwrap();
        s.handle_response(
            ok("application/json", br#"[{"id":9,"event":"message"}]"#),
            now(),
        );
        let req = s.poll_request().unwrap();
        assert!(matches!(&req, Request::Stream { last_event_id: Some(id), .. } if id == "41"));
        assert!(req.headers().contains(&("Last-Event-ID", "41".to_owned())));
        s.handle_response(ok("text/event-stream", b""), now());
        assert!(s.is_live());
        assert!(s.poll_item().is_none(), "nothing moved: no cursor item");
    }

    #[test]
    fn a_server_reset_moves_the_position_back_and_forgets_the_event_id() {
        let cursor = FlowdockCursor {
            last_event_id: Some("41".into()),
            last_message_id: [("o/f".to_owned(), 70)].into(),
        };
        let mut s = Session::new(settings(Transport::EventStream, &["o/f"]), Some(cursor));
        s.poll_request().unwrap();
        s.handle_response(
            ok("application/json", br#"[{"id":3,"event":"message"}]"#),
            now(),
        );
        let req = s.poll_request().unwrap();
        assert!(
            matches!(
                &req,
                Request::Stream {
                    last_event_id: None,
                    ..
                }
            ),
            "{req:?}"
        );
        s.handle_response(ok("text/event-stream", b""), now());
        assert!(matches!(s.poll_item(), Some(SourceItem::Cursor(_))));
        let Some(Request::Backfill { since_id, .. }) = s.poll_request() else {
            panic!()
        };
        assert_eq!(since_id, Some(3));
    }
}
