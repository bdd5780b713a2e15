//! The sans-IO session: the whole plan of polling one channel's Social Stream.
//!
//! A [`Session`] takes HTTP responses and time and answers which request to send next and
//! when ([`Session::poll_request`], [`Session::poll_timeout`]), the items to deliver
//! ([`Session::poll_item`]) and the resume state ([`Session::cursor`]). It reads no clock
//! and does no IO; [`Client`](crate::Client) is the async loop around it. See [`Session`]
//! for the plan.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use chat_model::{Cursor, SourceItem, lock_ignoring_poison, redact_url};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::map::{Context, accounts_of, message_id, order_items, order_owned_payload};
use crate::wire::{Envelope, Item, NetworkAccount, typed};

/// The default window cap: a widened timeslice never spans more than this many seconds.
pub const DEFAULT_MAX_WINDOW: u64 = 3600;
/// How many recent event ids the session remembers to drop repeats.
const RECENT_IDS: usize = 2048;
/// How many of them travel in the cursor (so a restart does not repeat the last window).
const CURSOR_IDS: usize = 256;
/// Added to the longest legitimate silence to give the stall timeout.
const STALL_MARGIN: Duration = Duration::from_secs(5);
/// How many recent messages are remembered per user.
const PER_USER: usize = 256;
/// How many users are remembered.
const MAX_USERS: usize = 2048;

/// Settings of a [`Session`] (and of the [`Client`](crate::Client) that drives one).
#[derive(Clone, Debug)]
pub struct Config {
    /// Server base URL, e.g. `http://socialstream.ustream.tv` (paths are appended).
    pub base_url: String,
    /// The channel id.
    pub channel: String,
    /// The source name put in every event.
    pub source: String,
    /// The longest a single request may take.
    pub request_timeout: Duration,
    /// The widest timeslice one catch-up request may ask for, seconds.
    pub max_window: u64,
    /// Responses larger than this are refused.
    pub max_response_bytes: usize,
    /// The refresh interval assumed before the server names one, seconds.
    pub initial_interval: u64,
    /// Keep each payload item's wire JSON in `Event::raw`.
    pub keep_raw: bool,
}

impl Config {
    /// Defaults for a channel on a server.
    pub fn new(base_url: impl Into<String>, channel: impl Into<String>) -> Self {
        Config {
            base_url: base_url.into(),
            channel: channel.into(),
            source: "ustream".to_owned(),
            request_timeout: Duration::from_secs(10),
            max_window: DEFAULT_MAX_WINDOW,
            max_response_bytes: 8 * 1024 * 1024,
            initial_interval: 10,
            keep_raw: true,
        }
    }

    /// The silence after which a supervisor may presume the connection dead, for a refresh
    /// interval: the longest legitimate silence plus a margin. After each successful
    /// response (which yields a keep-alive) the next request is due at most one interval
    /// after the previous one was sent (the longer of the old and the new interval when the
    /// server changes it, which is what the session announces), and takes at most the
    /// request timeout; any failure ends the connection at once instead of being retried
    /// inside it.
    pub fn stall_timeout(&self, interval: u64) -> Duration {
        Duration::from_secs(interval.max(1)) + self.request_timeout + STALL_MARGIN
    }
}

/// The resume state of a channel: host, range, schedule anchor, ignore list, recent ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UstreamCursor {
    /// The server base URL after a `host` switch (`None`: the configured one).
    #[serde(default)]
    pub host: Option<String>,
    /// The schedule: last range end, interval, anchor, whether `/default` comes next.
    pub schedule: ScheduleState,
    /// Accounts currently ignored (`ignUser` not yet lifted by `unIgnUser`).
    #[serde(default)]
    pub ignored: Vec<NetworkAccount>,
    /// Ids of the most recent events, oldest first.
    #[serde(default)]
    pub recent_ids: Vec<String>,
    /// The `createdAt` of each of `recent_ids` that is a message with a time of its own
    /// (`null` otherwise), so a uid a reset server issues again is told from a repeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_at: Vec<Option<i64>>,
}

impl UstreamCursor {
    /// As a chat-model cursor.
    pub fn to_cursor(&self) -> Cursor {
        Cursor::from_typed(self)
    }

    /// From a chat-model cursor.
    pub fn from_cursor(c: &Cursor) -> Result<Self, chat_model::CursorError> {
        c.to_typed()
    }
}

/// The resume part of the schedule, stored in the cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The end of the last range received (the next timeslice starts here).
    pub range_end: Option<i64>,
    /// The last refresh interval, seconds.
    pub refresh_interval: u64,
    /// The anchor's range value (the first range value of the session).
    pub anchor_range: Option<i64>,
    /// When the anchor was queried, Unix milliseconds (wall clock, so it survives restarts).
    pub anchor_unix_ms: Option<i64>,
    /// Whether the next request must be `/default` (a session start or a host switch).
    pub needs_default: bool,
}

/// Which request to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// `/default`: the start of a session (or after a host switch).
    Default,
    /// `/timeslice/{from}/{width}`.
    Timeslice {
        /// The range value the slice starts at (the previous range end).
        from: i64,
        /// Its length in seconds: the refresh interval, or more when catching up.
        width: u64,
    },
}

/// A request to send: a GET without an `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The server base URL (the configured one, or the one a `host` item named).
    pub base_url: String,
    /// The channel id.
    pub channel: String,
    /// `/default` or which timeslice.
    pub kind: RequestKind,
}

impl Request {
    /// `/socialstream/get.json/{channel}/default` or `.../timeslice/{from}/{width}`.
    pub fn path(&self) -> String {
        let base = format!("/socialstream/get.json/{}", self.channel);
        match self.kind {
            RequestKind::Default => format!("{base}/default"),
            RequestKind::Timeslice { from, width } => format!("{base}/timeslice/{from}/{width}"),
        }
    }

    /// The full URL to GET.
    pub fn url(&self) -> String {
        format!("{}{}", self.base_url, self.path())
    }
}

/// An HTTP response to a [`Request`], as the IO layer read it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The `Retry-After` header, as sent.
    pub retry_after: Option<String>,
    /// The `Content-Type` header, as sent (named in errors about unreadable bodies).
    pub content_type: Option<String>,
    /// The body (may be left empty for a status other than 200).
    pub body: Vec<u8>,
}

impl Response {
    /// A 200 response with this body.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Response {
            status: 200,
            body: body.into(),
            ..Response::default()
        }
    }
}

/// Where the session stands with its next request.
#[derive(Clone, Debug)]
enum Phase {
    /// Waiting for the next slot.
    Idle { due: Instant },
    /// Due; [`Session::poll_request`] hands it out.
    Ready { kind: RequestKind, sent_at: Instant },
    /// Sent; waiting for its response.
    InFlight { kind: RequestKind, sent_at: Instant },
    /// Ended by a failure (sticky).
    Failed(Error),
}

/// The sans-IO state of polling one channel.
///
/// - Drift-free schedule (the document's rule): remember the first range value (`FIRST`)
///   and the moment it was queried (`START`); the timeslice starting at range value `V` is
///   requested at `START + (V - FIRST)`. Example: first timestamp 1000 queried at `START`,
///   the response to `/timeslice/1100/10` says `refreshInterval: 5` and `range: [1100, 1110]`,
///   so the next request is `/timeslice/1110/5` at `START + 110`. A request sent later than
///   its slot (a slow response, a resume) is widened to end where an on-time schedule would
///   be; it starts at the last range end, so nothing in between is lost. One slice spans at
///   most [`Config::max_window`] seconds; a longer gap is caught up in back-to-back requests.
/// - Control items: `host` (restart with `/default` on the new server), `ignMsg`,
///   `ignUser` / `unIgnUser` (the ignore list, and retraction of the user's earlier messages
///   from the [`MessageMemory`]).
/// - Repeats: the ids of recently delivered messages (and their `createdAt`) are remembered,
///   so a `/default` history after a host switch or a resume delivers (and applies) nothing
///   twice.
/// - Failures: a request that fails (HTTP status, `success: false`, an unreadable body, a
///   transport error passed to [`Session::handle_end`]) ends the session with a sticky
///   [`Error`]; the supervisor reconnects later with the last cursor, whose first request
///   is widened from the last range end.
#[derive(Debug)]
pub struct Session {
    config: Config,
    ctx: Context,
    base: String,
    switched_host: Option<String>,
    schedule: Schedule,
    ignored: BTreeSet<NetworkAccount>,
    recent: VecDeque<String>,
    recent_set: HashSet<String>,
    /// `createdAt` of the recent message ids that carry one.
    recent_at: HashMap<String, i64>,
    memory: MessageMemory,
    queue: VecDeque<SourceItem>,
    phase: Phase,
    /// The latest moment known on both clocks (monotonic, Unix ms), for the cursor.
    clock: (Instant, i64),
    /// The stall timeout announced last in this session (a new session announces one).
    announced: Option<Duration>,
}

impl Session {
    /// A session for `config`; `resume` continues a saved one: same host, the range widened
    /// from the last end, same ignore list and recent ids. `now` and `wall_ms` (Unix
    /// milliseconds) are the same moment on the monotonic and the wall clock, so a saved
    /// anchor maps onto this process's clock.
    pub fn new(
        config: Config,
        resume: Option<UstreamCursor>,
        now: Instant,
        wall_ms: i64,
    ) -> Result<Self, Error> {
        check_base_url(&config.base_url)?;
        if config.channel.is_empty() || config.channel.contains('/') {
            return Err(Error::BadChannel {
                channel: config.channel.clone(),
            });
        }
        let resume = resume.unwrap_or_default();
        let schedule = if resume.schedule.range_end.is_some() {
            Schedule::resume(&resume.schedule, now, wall_ms)
        } else {
            Schedule::new(config.initial_interval)
        }
        .with_max_window(config.max_window);
        let base = resume
            .host
            .clone()
            .unwrap_or_else(|| config.base_url.trim_end_matches('/').to_owned());
        let due = schedule.next(now).at;
        // Until the first response the wait is at most the interval planned with (the saved
        // one on a resume, which may be longer than the one the supervisor started with).
        let stall = config.stall_timeout(schedule.interval);
        let mut s = Session {
            ctx: Context {
                source: config.source.clone(),
                channel: config.channel.clone(),
                keep_raw: config.keep_raw,
            },
            base,
            switched_host: resume.host.clone(),
            schedule,
            ignored: resume.ignored.iter().cloned().collect(),
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            recent_at: HashMap::new(),
            memory: MessageMemory::new(),
            queue: VecDeque::from([SourceItem::StallTimeout(stall)]),
            phase: Phase::Idle { due },
            clock: (now, wall_ms),
            announced: Some(stall),
            config,
        };
        let times = if resume.recent_at.len() == resume.recent_ids.len() {
            resume.recent_at
        } else {
            vec![None; resume.recent_ids.len()]
        };
        for (id, at) in resume.recent_ids.into_iter().zip(times) {
            if let Some(at) = at {
                s.recent_at.insert(id.clone(), at);
            }
            s.remember(id);
        }
        Ok(s)
    }

    /// Shares `memory` (the recent messages per user that an `ignUser` retracts) with this
    /// session; a source passes the same memory to each session it builds, so reconnects
    /// keep it.
    pub fn with_memory(mut self, memory: MessageMemory) -> Self {
        self.memory = memory;
        self
    }

    /// The memory of recent messages per user this session uses.
    pub fn memory(&self) -> &MessageMemory {
        &self.memory
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The server base URL polled now (changes on a `host` item).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The accounts ignored now.
    pub fn ignored(&self) -> impl Iterator<Item = &NetworkAccount> {
        self.ignored.iter()
    }

    /// The current refresh interval in seconds.
    pub fn refresh_interval(&self) -> u64 {
        self.schedule.interval
    }

    /// The failure that ended the session, if any (it stays).
    pub fn error(&self) -> Option<&Error> {
        match &self.phase {
            Phase::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// When the next request is due: `None` while one is ready or in flight, or after a
    /// failure.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle { due } => Some(due),
            _ => None,
        }
    }

    /// Time passed: at `now`, a request that is due becomes ready, planned for this moment
    /// (so a late send widens its slice).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Idle { due } = self.phase {
            if now >= due {
                self.phase = Phase::Ready {
                    kind: self.schedule.next(now).kind,
                    sent_at: now,
                };
            }
        }
    }

    /// The request to send now, once (after [`Session::handle_timeout`] found it due); its
    /// answer goes to [`Session::handle_response`], a transport failure to
    /// [`Session::handle_end`].
    pub fn poll_request(&mut self) -> Option<Request> {
        let Phase::Ready { kind, sent_at } = self.phase else {
            return None;
        };
        self.phase = Phase::InFlight { kind, sent_at };
        Some(self.request(kind))
    }

    fn request(&self, kind: RequestKind) -> Request {
        Request {
            base_url: self.base.clone(),
            channel: self.config.channel.clone(),
            kind,
        }
    }

    /// The response to the request in flight, read at `now` (`wall_ms`: the same moment in
    /// Unix milliseconds, for `Retry-After` dates and the cursor). A status other than 200,
    /// `success: false` or an unreadable body ends the session.
    pub fn handle_response(&mut self, response: Response, now: Instant, wall_ms: i64) {
        self.clock = (now, wall_ms);
        let Phase::InFlight { kind, sent_at } = self.phase else {
            tracing::debug!(channel = %self.config.channel, "ustream response without a request in flight ignored");
            return;
        };
        let url = redact_url(&self.request(kind).url());
        match self.read(response, &url, wall_ms) {
            Ok(envelope) => match self.apply(kind, sent_at, envelope, &url) {
                Ok(()) => {
                    self.phase = Phase::Idle {
                        due: self.schedule.next(now).at,
                    }
                }
                Err(e) => self.fail(e),
            },
            Err(e) => self.fail(e),
        }
    }

    /// The request in flight (or the connection) ended without a response: `error` says why
    /// (network, timeout, oversize). The session ends with it.
    pub fn handle_end(&mut self, error: Error) {
        if !matches!(self.phase, Phase::Failed(_)) {
            self.fail(error);
        }
    }

    /// The next item to deliver.
    pub fn poll_item(&mut self) -> Option<SourceItem> {
        self.queue.pop_front()
    }

    /// The current resume state.
    pub fn cursor(&self) -> UstreamCursor {
        let skip = self.recent.len().saturating_sub(CURSOR_IDS);
        let recent_ids: Vec<String> = self.recent.iter().skip(skip).cloned().collect();
        let recent_at: Vec<Option<i64>> = recent_ids
            .iter()
            .map(|id| self.recent_at.get(id).copied())
            .collect();
        UstreamCursor {
            host: self.switched_host.clone(),
            schedule: self.schedule.state(self.clock.0, self.clock.1),
            ignored: self.ignored.iter().cloned().collect(),
            recent_at: if recent_at.iter().any(Option::is_some) {
                recent_at
            } else {
                Vec::new()
            },
            recent_ids,
        }
    }

    fn fail(&mut self, e: Error) {
        tracing::warn!(channel = %self.config.channel, error = %e,
            "ustream poll failed; the connection ends (a reconnect resumes from the last range end)");
        self.phase = Phase::Failed(e);
    }

    /// The envelope of a response, or why there is none.
    fn read(&self, r: Response, url: &str, wall_ms: i64) -> Result<Read, Error> {
        let channel = self.config.channel.clone();
        if r.status != 200 {
            let wall =
                SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(wall_ms).unwrap_or(0));
            return Err(Error::Http {
                channel,
                url: url.to_owned(),
                status: r.status,
                retry_after: r
                    .retry_after
                    .as_deref()
                    .and_then(|v| chat_model::parse_retry_after(v, wall)),
            });
        }
        if r.body.len() > self.config.max_response_bytes {
            return Err(Error::TooLarge {
                channel,
                url: url.to_owned(),
                limit: self.config.max_response_bytes,
            });
        }
        if !self.config.keep_raw {
            if let Some(read) = read_typed(&r.body) {
                return Ok(read);
            }
        }
        let envelope: Envelope = serde_json::from_slice(&r.body).map_err(|e| Error::Protocol {
            channel: channel.clone(),
            url: url.to_owned(),
            detail: format!(
                "not a social stream JSON response (content type {:?}): {e}",
                r.content_type.as_deref().unwrap_or("")
            ),
        })?;
        if !envelope.success {
            return Err(Error::Failed {
                channel,
                message: envelope
                    .message
                    .unwrap_or_else(|| "(the server gave no message)".to_owned()),
            });
        }
        Ok(Read {
            range: envelope.range,
            refresh_interval: envelope.refresh_interval,
            clean: envelope.is_suffix_cleaning_needed,
            payload: Payload::Json(envelope.payload),
        })
    }

    fn remember(&mut self, id: String) -> bool {
        if !self.recent_set.insert(id.clone()) {
            return false;
        }
        self.recent.push_back(id);
        while self.recent.len() > RECENT_IDS {
            if let Some(old) = self.recent.pop_front() {
                self.recent_set.remove(&old);
                self.recent_at.remove(&old);
            }
        }
        true
    }

    /// Queues `event` unless it was delivered already; whether it was queued.
    fn emit(&mut self, event: chat_model::Event) -> bool {
        if self.remember(event.id.clone()) {
            self.queue.push_back(SourceItem::event(event));
            true
        } else {
            false
        }
    }

    /// Whether the message event `id` (with this `createdAt`) was delivered already: a
    /// remembered id, unless the server issued it again with another time.
    fn delivered(&self, id: &str, created_at: Option<i64>) -> bool {
        self.recent_set.contains(id)
            && match (created_at, self.recent_at.get(id)) {
                (Some(at), Some(&seen)) => at == seen,
                _ => true,
            }
    }

    /// Skips an item the session cannot act on: a warning and a counted `Malformed` item.
    fn malformed(&mut self, error: String) {
        tracing::warn!(channel = %self.config.channel, %error, "ustream payload item skipped");
        self.queue.push_back(SourceItem::Malformed { error });
    }

    /// A message id delivered before comes again with another `createdAt`: the server was
    /// reset and issues its uids again. The ids remembered from before mean nothing now.
    fn check_reissued(&mut self, id: &str, created_at: Option<i64>) {
        let (Some(at), Some(&seen)) = (created_at, self.recent_at.get(id)) else {
            return;
        };
        if at != seen {
            tracing::warn!(channel = %self.config.channel, id, delivered_created_at = seen, created_at = at,
                "ustream: the server issued a delivered message uid again with another time (was it reset?); \
                 forgetting the ids delivered before and taking the server's messages");
            self.recent.clear();
            self.recent_set.clear();
            self.recent_at.clear();
        }
    }

    fn is_ignored(&self, accounts: &[NetworkAccount]) -> bool {
        accounts.iter().any(|a| self.ignored.contains(a))
    }

    /// Applies a successful response to the request `kind` sent at `sent_at`.
    fn apply(
        &mut self,
        kind: RequestKind,
        sent_at: Instant,
        resp: Read,
        url: &str,
    ) -> Result<(), Error> {
        let channel = self.config.channel.clone();
        let Some(range) = resp.range else {
            return Err(Error::Protocol {
                channel,
                url: url.to_owned(),
                detail: "a successful response without a range".to_owned(),
            });
        };
        let applied = self
            .schedule
            .on_success(kind, sent_at, range, resp.refresh_interval);
        if applied.server_behind {
            tracing::warn!(channel = %channel, asked = %url, range = ?range,
                "ustream: the server's range lies behind the cursor (a reset server, or a cursor \
                 from another one); taking the server's position with /default");
        }
        if applied.interval_changed {
            tracing::debug!(channel = %channel, interval = self.schedule.interval, "ustream refresh interval");
        }
        // The next request is due at most one interval after this one was sent: the interval
        // it was planned with (a timeslice) or the new one, whichever is longer; the one
        // after it, the new one. So a shorter interval is announced one response late.
        let wait = match kind {
            RequestKind::Default => self.schedule.interval,
            RequestKind::Timeslice { .. } => self.schedule.interval.max(applied.planned_interval),
        };
        let stall = self.config.stall_timeout(wait);
        if self.announced != Some(stall) {
            self.announced = Some(stall);
            self.queue.push_back(SourceItem::StallTimeout(stall));
        }
        let clean = resp.clean;
        let mut new_host: Option<String> = None;
        let mut occurrences: HashMap<String, usize> = HashMap::new();
        let ordered = match resp.payload {
            Payload::Json(payload) => order_owned_payload(payload, range[1]),
            Payload::Typed(items) => order_items(items, range[1]),
        };
        // A `/default` answers the recent history, which repeats what a session delivered
        // before (after a host switch, or a restart that must begin with `/default`). The
        // payload is one stretch of the timeline, so everything up to the last message
        // delivered already was delivered (or hidden, or applied) then: control items among
        // it (which have no uid of their own) must not be applied or announced again.
        let replayed = match kind {
            RequestKind::Default => ordered
                .iter()
                .rposition(|o| match &o.item {
                    Ok(Item::Msg(m)) => self.delivered(&message_id(&channel, &m.uid), m.created_at),
                    _ => false,
                })
                .map_or(0, |last| last + 1),
            RequestKind::Timeslice { .. } => 0,
        };
        if replayed > 0 {
            tracing::debug!(channel = %channel, items = replayed,
                "ustream: the /default history repeats items delivered before; skipping them");
        }
        for o in ordered.into_iter().skip(replayed) {
            let item = match o.item {
                Ok(item) => item,
                Err(e) => {
                    self.malformed(format!(
                        "ustream channel {channel}: payload item {} of the window {}-{} skipped: {e}",
                        o.position, range[0], range[1]
                    ));
                    continue;
                }
            };
            // Items without an id of their own get one from the window start (stable when a
            // window is fetched again, widened) and their occurrence in it, counted per
            // event they make (so two `unIgnUser` of one user that differ in other fields,
            // e.g. `createdAt`, do not share an id).
            // (Messages and `ignMsg` items have ids of their own: no stamp, and their keys,
            // JSON objects with a uid, could not collide with the others'.)
            let key = match &item {
                Item::IgnUser { network } | Item::UnIgnUser { network } => {
                    Some(format!("{}:{network:?}", item.kind()))
                }
                Item::Host { host } => Some(format!("host:{host}")),
                Item::Msg(_) | Item::IgnMsg { .. } => None,
                _ => Some(o.raw.to_string()),
            };
            let stamp = match key {
                Some(key) => {
                    let n = occurrences.entry(key).or_default();
                    *n += 1;
                    format!("{}.{}", range[0], n)
                }
                None => String::new(),
            };
            match &item {
                Item::Msg(m) => {
                    let accounts = accounts_of(m);
                    if self.is_ignored(&accounts) {
                        tracing::debug!(channel = %channel, uid = %m.uid, "message of an ignored user hidden");
                        continue;
                    }
                    let event = self.ctx.message(m, o.at, clean, &o.raw);
                    let id = event.id.clone();
                    self.check_reissued(&id, m.created_at);
                    if self.emit(event) {
                        if let Some(at) = m.created_at {
                            self.recent_at.insert(id, at);
                        }
                        self.memory.record(&accounts, &m.uid, o.at);
                    }
                }
                Item::IgnMsg { uid } => {
                    self.memory.forget(uid);
                    let event = self.ctx.retraction(uid, o.at, &o.raw);
                    self.emit(event);
                }
                Item::IgnUser { network } => {
                    if network.iter().all(|a| self.ignored.contains(a)) {
                        // Nothing changes (a repeat of an ignUser in force): no second event.
                        tracing::debug!(channel = %channel, ?network, "ignUser of a user ignored already");
                        continue;
                    }
                    self.ignored.extend(network.iter().cloned());
                    let ignore = self.ctx.ignore(true, network, o.at, &stamp, &o.raw);
                    let ignore_id = ignore.id.clone();
                    if self.emit(ignore) {
                        // The document: remove all messages of that user from the chat window.
                        for uid in self.memory.take_user(network, o.at) {
                            let r = self
                                .ctx
                                .user_retraction(&uid, &ignore_id, network, o.at, &o.raw);
                            self.emit(r);
                        }
                    }
                }
                Item::UnIgnUser { network } => {
                    if !self.is_ignored(network) {
                        // Nothing changes (a repeat, or a user never ignored): no event.
                        tracing::debug!(channel = %channel, ?network, "unIgnUser of a user not ignored");
                        continue;
                    }
                    for a in network {
                        self.ignored.remove(a);
                    }
                    let event = self.ctx.ignore(false, network, o.at, &stamp, &o.raw);
                    self.emit(event);
                }
                Item::Host { host } => match resolve_host(&self.base, host) {
                    Ok(resolved) if resolved == *new_host.as_ref().unwrap_or(&self.base) => {
                        // Already there (a history that lists the host item which sent the
                        // session here): following it again would restart with /default anew.
                        tracing::debug!(channel = %channel, host = %redact_url(&resolved),
                            "ustream host item naming the current host ignored");
                    }
                    Ok(resolved) => {
                        new_host = Some(resolved);
                        let event = self.ctx.host(host, o.at, &stamp, &o.raw);
                        self.emit(event);
                    }
                    Err(e) => self.malformed(format!(
                        "ustream channel {channel}: host item {} of the window {}-{} skipped: {e}",
                        o.position, range[0], range[1]
                    )),
                },
                Item::Unknown { kind } => {
                    let event = self.ctx.unknown(kind, &stamp, o.at, &o.raw);
                    self.emit(event);
                }
            }
        }
        if let Some(host) = new_host {
            tracing::info!(channel = %channel, host = %redact_url(&host), "ustream social stream moved; restarting with /default");
            self.base = host.clone();
            self.switched_host = Some(host);
            self.schedule.restart_with_default();
        }
        if kind == RequestKind::Default {
            tracing::debug!(channel = %channel, range_end = range[1], "ustream session anchored");
        }
        self.queue
            .push_back(SourceItem::Cursor(self.cursor().to_cursor()));
        self.queue.push_back(SourceItem::KeepAlive);
        Ok(())
    }
}

/// A successful response, read.
struct Read {
    range: Option<[i64; 2]>,
    refresh_interval: Option<u64>,
    clean: bool,
    payload: Payload,
}

/// The payload of a [`Read`].
enum Payload {
    /// As JSON trees (kept as `raw`).
    Json(Vec<serde_json::Value>),
    /// Read straight from the body: `(item, createdAt, raw = null)`, newest first.
    Typed(Vec<(Result<Item, String>, Option<i64>, serde_json::Value)>),
}

/// The typed reading of a successful response (see [`crate::wire::typed`]); `None` when it
/// does not cover the body, which is then read as an [`Envelope`] (that reading reports
/// whatever is wrong with it).
fn read_typed(body: &[u8]) -> Option<Read> {
    let envelope: typed::Envelope<'_> = serde_json::from_slice(body).ok()?;
    if !envelope.success {
        return None;
    }
    let payload = envelope.payload.unwrap_or_default();
    let mut items = Vec::with_capacity(payload.len());
    for typed::Obj(fields) in payload {
        let (item, at) = typed::item(fields)?;
        items.push((item.map_err(|e| e.to_string()), at, serde_json::Value::Null));
    }
    Some(Read {
        range: envelope.range,
        refresh_interval: envelope.refresh_interval,
        clean: envelope.is_suffix_cleaning_needed,
        payload: Payload::Typed(items),
    })
}

fn check_base_url(base: &str) -> Result<(), Error> {
    let bad = |detail: String| Error::BadUrl {
        url: redact_url(base),
        detail,
    };
    let url = url::Url::parse(base).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "the scheme is {:?}; it must be http:// or https://",
            url.scheme()
        )));
    }
    Ok(())
}

/// The new base URL for a `host` item: a full URL is taken as is; a host name (or
/// `host:port`) replaces the current server, keeping its scheme and path prefix.
pub fn resolve_host(current: &str, host: &str) -> Result<String, Error> {
    let host = host.trim();
    let bad = |detail: String| Error::BadHost {
        host: redact_url(host),
        detail,
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("empty or containing whitespace".to_owned()));
    }
    if host.contains("://") {
        url::Url::parse(host).map_err(|e| bad(e.to_string()))?;
        return Ok(host.trim_end_matches('/').to_owned());
    }
    let cur = url::Url::parse(current).map_err(|e| bad(format!("the current url: {e}")))?;
    let candidate = format!(
        "{}://{}{}",
        cur.scheme(),
        host.trim_end_matches('/'),
        cur.path().trim_end_matches('/')
    );
    url::Url::parse(&candidate).map_err(|e| bad(e.to_string()))?;
    Ok(candidate)
}

// ---- The drift-free schedule ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Anchor {
    first: i64,
    start: Instant,
}

/// The next request of the schedule and when it is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Planned {
    at: Instant,
    kind: RequestKind,
}

/// What a successful response changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Applied {
    /// The refresh interval differs from the one before (or is the session's first).
    interval_changed: bool,
    /// The server's range ended before the slice asked for (a reset server, or a cursor from
    /// another server): the schedule takes the server's position with a new `/default`.
    server_behind: bool,
    /// The interval the answered request was planned with, seconds.
    planned_interval: u64,
}

/// The drift-free poll schedule of one channel.
#[derive(Clone, Debug)]
struct Schedule {
    anchor: Option<Anchor>,
    range_end: Option<i64>,
    interval: u64,
    max_window: u64,
    needs_default: bool,
    not_before: Option<Instant>,
}

impl Schedule {
    /// A schedule that starts with `/default`; `interval` is used until the server names one.
    fn new(interval: u64) -> Self {
        Schedule {
            anchor: None,
            range_end: None,
            interval: interval.max(1),
            max_window: DEFAULT_MAX_WINDOW,
            needs_default: true,
            not_before: None,
        }
    }

    /// Picks up a saved schedule; `now` and `now_unix_ms` are the same moment.
    fn resume(state: &ScheduleState, now: Instant, now_unix_ms: i64) -> Self {
        let mut s = Schedule::new(state.refresh_interval);
        s.range_end = state.range_end;
        s.needs_default = state.needs_default || state.range_end.is_none();
        if let (Some(first), Some(at_ms)) = (state.anchor_range, state.anchor_unix_ms) {
            let ago = Duration::from_millis(u64::try_from(now_unix_ms - at_ms).unwrap_or(0));
            s.anchor = Some(match now.checked_sub(ago) {
                Some(start) => Anchor { first, start },
                // Too far back for this clock: move the anchor forward by whole seconds.
                None => Anchor {
                    first: first + i64::try_from(ago.as_secs()).unwrap_or(i64::MAX / 2),
                    start: now,
                },
            });
        } else if let Some(first) = s.range_end {
            s.anchor = Some(Anchor { first, start: now });
        }
        s
    }

    fn with_max_window(mut self, seconds: u64) -> Self {
        self.max_window = seconds.max(1);
        self
    }

    /// The state to save in a cursor; `now`/`now_unix_ms` as for [`Schedule::resume`].
    fn state(&self, now: Instant, now_unix_ms: i64) -> ScheduleState {
        let (anchor_range, anchor_unix_ms) = match self.anchor {
            Some(a) => {
                let since = now.saturating_duration_since(a.start).as_millis();
                let since = i64::try_from(since).unwrap_or(i64::MAX / 2);
                let before =
                    i64::try_from(a.start.saturating_duration_since(now).as_millis()).unwrap_or(0);
                (Some(a.first), Some(now_unix_ms - since + before))
            }
            None => (None, None),
        };
        ScheduleState {
            range_end: self.range_end,
            refresh_interval: self.interval,
            anchor_range,
            anchor_unix_ms,
            needs_default: self.needs_default,
        }
    }

    /// The range value an on-time schedule has reached at `t`.
    fn current_value(a: Anchor, t: Instant) -> i64 {
        let secs = t.saturating_duration_since(a.start).as_secs();
        a.first + i64::try_from(secs).unwrap_or(i64::MAX / 2)
    }

    /// When the timeslice starting at `v` is due: `START + (v - FIRST)`.
    fn due(a: Anchor, v: i64) -> Instant {
        let offset = v - a.first;
        if offset >= 0 {
            a.start + Duration::from_secs(offset.unsigned_abs())
        } else {
            a.start
                .checked_sub(Duration::from_secs(offset.unsigned_abs()))
                .unwrap_or(a.start)
        }
    }

    /// The next request and when it is due, if sent no earlier than `now`.
    fn next(&self, now: Instant) -> Planned {
        let (anchor, from) = match (self.needs_default, self.anchor, self.range_end) {
            (false, Some(a), Some(v)) => (a, v),
            _ => {
                return Planned {
                    at: self.not_before.unwrap_or(now),
                    kind: RequestKind::Default,
                };
            }
        };
        let mut at = Self::due(anchor, from);
        if let Some(nb) = self.not_before {
            at = at.max(nb);
        }
        let send = at.max(now);
        let on_time_end =
            Self::current_value(anchor, send) + i64::try_from(self.interval).unwrap_or(1);
        let wanted = u64::try_from(on_time_end - from).unwrap_or(0);
        let width = wanted.clamp(self.interval, self.max_window.max(self.interval));
        Planned {
            at,
            kind: RequestKind::Timeslice { from, width },
        }
    }

    /// Records a successful response to `kind`, which was sent at `sent_at`.
    ///
    /// A timeslice answered with a range that ends before the slice's start means the
    /// server's position lies behind the cursor: waiting for it to catch up would swallow
    /// everything it sends meanwhile, so the session starts over with `/default` (the range
    /// end is kept for the cursor until then). A range that ends beyond the slice asked for
    /// (a server clock running ahead) moves the anchor, so the next request is never more
    /// than the interval this one was planned with after it.
    fn on_success(
        &mut self,
        kind: RequestKind,
        sent_at: Instant,
        range: [i64; 2],
        refresh_interval: Option<u64>,
    ) -> Applied {
        let first_of_session = matches!(kind, RequestKind::Default);
        let planned = Duration::from_secs(self.interval);
        let new_interval = refresh_interval.unwrap_or(self.interval).max(1);
        let interval_changed = first_of_session || new_interval != self.interval;
        self.interval = new_interval;
        self.not_before = None;
        let mut server_behind = false;
        let step = Duration::from_secs(self.interval);
        match kind {
            RequestKind::Default => {
                self.anchor = Some(Anchor {
                    first: range[1],
                    start: sent_at,
                });
                self.range_end = Some(range[1]);
                self.needs_default = false;
            }
            RequestKind::Timeslice { from, .. } => {
                if range[1] < from {
                    server_behind = true;
                    self.restart_with_default();
                } else if range[1] == from {
                    // No progress: do not spin; ask again one interval later.
                    self.not_before = Some(sent_at + step);
                } else {
                    self.range_end = Some(range[1]);
                    if let Some(a) = self.anchor {
                        if Self::due(a, range[1]) > sent_at + planned {
                            let behind = i64::try_from(planned.as_secs()).unwrap_or(1);
                            self.anchor = Some(Anchor {
                                first: range[1] - behind,
                                start: sent_at,
                            });
                        }
                    }
                }
            }
        }
        Applied {
            interval_changed,
            server_behind,
            planned_interval: planned.as_secs(),
        }
    }

    /// Starts over with `/default` (after a host switch); the range end is kept for the cursor.
    fn restart_with_default(&mut self) {
        self.needs_default = true;
        self.anchor = None;
        self.not_before = None;
    }
}

// ---- The memory of recent messages per user ----

/// One remembered message.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Remembered {
    /// Delivery order.
    seq: u64,
    uid: String,
    /// Its time, epoch seconds.
    at: i64,
}

#[derive(Debug, Default)]
struct User {
    messages: VecDeque<Remembered>,
    /// Its last activity tick (its key in `MemoryInner::by_activity`).
    last_seq: u64,
}

#[derive(Debug, Default)]
struct MemoryInner {
    users: HashMap<NetworkAccount, User>,
    /// The accounts each remembered uid is filed under.
    by_uid: HashMap<String, Vec<NetworkAccount>>,
    /// Every user by its `last_seq`: the least recently active one first.
    by_activity: BTreeMap<u64, NetworkAccount>,
    /// Counts the activity of users (one tick per account a message is filed under).
    activity: u64,
    seq: u64,
}

/// A shared handle on a source's memory of recent messages per user (clones share it), so
/// an `ignUser` item can retract the earlier messages of the user it ignores (the document:
/// "remove all messages from the chat window for the given user").
///
/// Users are matched as the document matches them: by network provider + displayName
/// ([`NetworkAccount`]), any account of a message's `network[]` array. The memory keeps the
/// last 256 messages of at most 2048 users (the least recently active user is forgotten
/// first). It survives reconnects when each session gets the same handle; it is not saved in
/// the cursor, so after a process restart only the messages delivered since are known.
#[derive(Clone, Debug, Default)]
pub struct MessageMemory {
    inner: Arc<Mutex<MemoryInner>>,
}

impl MessageMemory {
    /// An empty memory.
    pub fn new() -> Self {
        MessageMemory::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryInner> {
        lock_ignoring_poison(&self.inner)
    }

    /// Remembers that the message `uid` (at `at`) of a user known by `accounts` was delivered.
    pub fn record(&self, accounts: &[NetworkAccount], uid: &str, at: i64) {
        if accounts.is_empty() {
            return;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        inner.seq += 1;
        let seq = inner.seq;
        let mut filed: Vec<NetworkAccount> = Vec::with_capacity(accounts.len());
        for a in accounts {
            if filed.contains(a) {
                continue;
            }
            filed.push(a.clone());
            inner.activity += 1;
            let tick = inner.activity;
            let user = match inner.users.get_mut(a) {
                Some(user) => {
                    // Moved to the most recently active end, without a copy of the account.
                    let account = inner.by_activity.remove(&user.last_seq);
                    inner
                        .by_activity
                        .insert(tick, account.unwrap_or_else(|| a.clone()));
                    user
                }
                None => {
                    inner.by_activity.insert(tick, a.clone());
                    inner.users.entry(a.clone()).or_default()
                }
            };
            user.last_seq = tick;
            user.messages.push_back(Remembered {
                seq,
                uid: uid.to_owned(),
                at,
            });
            if user.messages.len() > PER_USER {
                if let Some(old) = user.messages.pop_front() {
                    unfile(&mut inner.by_uid, &old.uid, a);
                }
            }
        }
        inner
            .by_uid
            .entry(uid.to_owned())
            .or_default()
            .extend(filed);
        while inner.users.len() > MAX_USERS {
            let Some((_, oldest)) = inner.by_activity.pop_first() else {
                break;
            };
            if let Some(user) = inner.users.remove(&oldest) {
                for m in user.messages {
                    unfile(&mut inner.by_uid, &m.uid, &oldest);
                }
            }
        }
    }

    /// Takes out (and forgets) the remembered messages of any of `accounts` at or before
    /// `up_to` (epoch seconds), in delivery order: the messages an `ignUser` at `up_to`
    /// retracts. A message after it (an `ignUser` seen again after an `unIgnUser`) stays.
    pub fn take_user(&self, accounts: &[NetworkAccount], up_to: i64) -> Vec<String> {
        let mut g = self.lock();
        let mut found: Vec<Remembered> = Vec::new();
        for a in accounts {
            if let Some(user) = g.users.get(a) {
                found.extend(
                    user.messages
                        .iter()
                        .filter(|m| m.at <= up_to && !found.iter().any(|f| f.uid == m.uid))
                        .cloned()
                        .collect::<Vec<_>>(),
                );
            }
        }
        found.sort_by_key(|m| m.seq);
        let uids: Vec<String> = found.into_iter().map(|m| m.uid).collect();
        for uid in &uids {
            forget_locked(&mut g, uid);
        }
        uids
    }

    /// Forgets the message `uid` (it was retracted by an `ignMsg`).
    pub fn forget(&self, uid: &str) {
        forget_locked(&mut self.lock(), uid);
    }

    /// How many messages are remembered (each once, however many accounts it is filed under).
    pub fn len(&self) -> usize {
        self.lock().by_uid.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn unfile(by_uid: &mut HashMap<String, Vec<NetworkAccount>>, uid: &str, a: &NetworkAccount) {
    if let Some(list) = by_uid.get_mut(uid) {
        list.retain(|x| x != a);
        if list.is_empty() {
            by_uid.remove(uid);
        }
    }
}

fn forget_locked(inner: &mut MemoryInner, uid: &str) {
    let Some(accounts) = inner.by_uid.remove(uid) else {
        return;
    };
    for a in accounts {
        let empty = match inner.users.get_mut(&a) {
            Some(user) => {
                user.messages.retain(|m| m.uid != uid);
                user.messages.is_empty()
            }
            None => false,
        };
        if empty {
            if let Some(user) = inner.users.remove(&a) {
                inner.by_activity.remove(&user.last_seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const WALL: i64 = 1_700_000_000_000;

    fn config() -> Config {
        Config::new("http://h", "1234")
    }

    fn body(range: [i64; 2], interval: u64, payload: Value) -> Response {
        Response::ok(
            serde_json::to_vec(&json!({
                "success": true, "refreshInterval": interval, "range": range, "payload": payload
            }))
            .unwrap(),
        )
    }

    /// The request due at `now`, if any.
    fn step(s: &mut Session, now: Instant) -> Option<Request> {
        s.handle_timeout(now);
        s.poll_request()
    }

    fn drain(s: &mut Session) -> Vec<SourceItem> {
        std::iter::from_fn(|| s.poll_item()).collect()
    }

    // ---- the session ----

    #[test]
    fn the_documents_example_through_the_session() {
        let start = Instant::now();
        let mut s = Session::new(config(), None, start, WALL).unwrap();
        assert_eq!(s.poll_timeout(), Some(start));
        let r = step(&mut s, start).unwrap();
        assert_eq!(r.url(), "http://h/socialstream/get.json/1234/default");
        assert!(s.poll_request().is_none(), "handed out once");
        assert_eq!(s.poll_timeout(), None, "in flight");
        s.handle_response(body([0, 1000], 10, json!([])), start, WALL);
        let items = drain(&mut s);
        assert!(matches!(items[0], SourceItem::StallTimeout(_)));
        assert!(matches!(items.last(), Some(SourceItem::KeepAlive)));
        let mut now = start;
        loop {
            let due = s.poll_timeout().unwrap();
            assert!(
                step(&mut s, due - Duration::from_millis(1)).is_none(),
                "not early"
            );
            now = now.max(due);
            let r = step(&mut s, now).unwrap();
            let RequestKind::Timeslice { from, width } = r.kind else {
                panic!("{r:?}")
            };
            if from == 1100 {
                assert_eq!(now, start + secs(100));
                s.handle_response(body([1100, 1110], 5, json!([])), now, WALL);
                break;
            }
            s.handle_response(body([from, from + width as i64], 10, json!([])), now, WALL);
        }
        assert_eq!(s.poll_timeout(), Some(start + secs(110)));
        let r = step(&mut s, start + secs(110)).unwrap();
        assert_eq!(r.path(), "/socialstream/get.json/1234/timeslice/1110/5");
        assert_eq!(s.refresh_interval(), 5);
    }

    #[test]
    fn a_failed_request_ends_the_session_for_good_with_the_servers_retry_after() {
        let start = Instant::now();
        let mut s = Session::new(config(), None, start, WALL).unwrap();
        step(&mut s, start).unwrap();
        s.handle_response(body([0, 100], 2, json!([])), start, WALL);
        drain(&mut s);
        step(&mut s, start + secs(2)).unwrap();
        // An HTTP date 30 s after the wall clock passed in.
        let date = "Tue, 14 Nov 2023 22:13:50 GMT";
        assert_eq!(WALL / 1000 + 30, 1_700_000_030);
        s.handle_response(
            Response {
                status: 503,
                retry_after: Some(date.into()),
                ..Response::default()
            },
            start + secs(3),
            WALL,
        );
        let e = s.error().cloned().expect("failed");
        assert_eq!(e.retry_after(), Some(secs(30)));
        assert!(e.to_string().contains("503") && e.to_string().contains("/timeslice/100/"));
        let r: chat_model::DisconnectReason = e.clone().into();
        assert!(!r.is_fatal());
        assert_eq!(s.poll_timeout(), None);
        assert!(step(&mut s, start + secs(100)).is_none());
        assert!(drain(&mut s).is_empty(), "no items after a failure");
        // Sticky: a later end or response changes nothing.
        s.handle_end(Error::BadChannel {
            channel: "x".into(),
        });
        s.handle_response(body([100, 102], 2, json!([])), start + secs(4), WALL);
        assert_eq!(s.error().unwrap().to_string(), e.to_string());
        // The cursor still points at the last good range end.
        assert_eq!(s.cursor().schedule.range_end, Some(100));
    }

    #[test]
    fn unreadable_and_refused_responses_end_the_session() {
        let start = Instant::now();
        let cases: Vec<(Response, &str)> = vec![
            (Response::ok("<html>"), "not a social stream JSON"),
            (
                Response::ok(r#"{"success": false, "message": "offline"}"#),
                "offline",
            ),
            (Response::ok(r#"{"success": true}"#), "without a range"),
            (Response::ok(vec![b' '; 100]), "exceeds 10 bytes"),
        ];
        for (resp, want) in cases {
            let mut c = config();
            c.max_response_bytes = if want.contains("exceeds") { 10 } else { 1000 };
            let mut s = Session::new(c, None, start, WALL).unwrap();
            step(&mut s, start).unwrap();
            s.handle_response(resp, start, WALL);
            let e = s.error().expect("failed");
            assert!(e.to_string().contains(want), "{e}");
            assert!(e.is_retryable());
        }
    }

    #[test]
    fn every_session_announces_its_stall_timeout_and_it_covers_the_longest_silence() {
        let start = Instant::now();
        let mut s = Session::new(config(), None, start, WALL).unwrap();
        step(&mut s, start).unwrap();
        s.handle_response(body([0, 100], 30, json!([])), start, WALL);
        let want = config().stall_timeout(30);
        assert!(drain(&mut s).contains(&SourceItem::StallTimeout(want)));
        let r = step(&mut s, start).unwrap();
        assert_eq!(
            r.kind,
            RequestKind::Timeslice {
                from: 100,
                width: 30
            }
        );
        s.handle_response(body([100, 130], 30, json!([])), start, WALL);
        let cursor = s.cursor();
        // A resumed session announces the saved interval's before its first request (the
        // supervisor may still hold the one for the configured initial interval).
        let later = start + secs(1);
        let mut r = Session::new(config(), Some(cursor), later, WALL + 1000).unwrap();
        assert_eq!(r.poll_item(), Some(SourceItem::StallTimeout(want)));
        assert!(want > config().stall_timeout(config().initial_interval));
        assert_eq!(r.poll_timeout(), Some(start + secs(30)), "the saved slot");
        let later = start + secs(30);
        let q = step(&mut r, later).unwrap();
        assert_eq!(
            q.kind,
            RequestKind::Timeslice {
                from: 130,
                width: 30
            }
        );
        r.handle_response(body([130, 160], 30, json!([])), later, WALL + 30_000);
        assert!(
            !drain(&mut r).contains(&SourceItem::StallTimeout(want)),
            "announced already"
        );
        // Longest silence: the next slot (at most one interval after the last send) plus a
        // request that takes the whole request timeout.
        assert!(want > secs(30) + config().request_timeout);
    }

    #[test]
    fn a_server_range_ahead_of_the_grid_never_puts_the_next_poll_beyond_one_interval() {
        let start = Instant::now();
        let mut s = Session::new(config(), None, start, WALL).unwrap();
        step(&mut s, start).unwrap();
        s.handle_response(body([0, 100], 2, json!([])), start, WALL);
        let r = step(&mut s, start).unwrap();
        assert_eq!(
            r.kind,
            RequestKind::Timeslice {
                from: 100,
                width: 2
            }
        );
        // The server's clock jumped: it answers up to 160.
        s.handle_response(body([100, 160], 2, json!([])), start, WALL);
        assert_eq!(s.poll_timeout(), Some(start + secs(2)));
        let r = step(&mut s, start + secs(2)).unwrap();
        assert_eq!(
            r.kind,
            RequestKind::Timeslice {
                from: 160,
                width: 2
            }
        );
    }

    #[test]
    fn host_switch_and_ignores_through_the_session() {
        let start = Instant::now();
        let mut s = Session::new(config(), None, start, WALL).unwrap();
        step(&mut s, start).unwrap();
        let msg = |uid: &str, at: i64, who: &str| {
            json!({"uid": uid, "createdAt": at, "text": uid, "profileNetwork": "twitter",
                "network": [{"provider": "twitter", "displayName": who}]})
        };
        let ign =
            json!({"type": "ignUser", "network": [{"provider": "twitter", "displayName": "Ken"}]});
        // Newest first: the ignore comes after Ken's first message.
        s.handle_response(
            body(
                [0, 100],
                2,
                json!([
                    msg("3", 99, "Ken"),
                    ign,
                    msg("2", 98, "Ada"),
                    msg("1", 97, "Ken")
                ]),
            ),
            start,
            WALL,
        );
        let ids: Vec<String> = drain(&mut s)
            .into_iter()
            .filter_map(|i| match i {
                SourceItem::Event { event, .. } => Some(event.id),
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert_eq!(ids[0], "ustream:1234:1");
        assert_eq!(ids[1], "ustream:1234:2");
        assert!(ids[2].contains(":ignUser:"));
        assert_eq!(
            ids[3],
            format!("{}/1", ids[2]),
            "Ken's earlier message retracted"
        );
        assert_eq!(s.ignored().count(), 1);
        let r = step(&mut s, start).unwrap();
        s.handle_response(
            body([100, 102], 2, json!([{"type": "host", "host": "h2:81"}])),
            start,
            WALL,
        );
        drain(&mut s);
        assert_eq!(s.base_url(), "http://h2:81");
        let r2 = step(&mut s, start).unwrap();
        assert_eq!(r2.url(), "http://h2:81/socialstream/get.json/1234/default");
        assert_ne!(r.base_url, r2.base_url);
        // The new host's history repeats what was delivered: nothing comes twice.
        s.handle_response(
            body(
                [0, 5000],
                2,
                json!([msg("4", 101, "Ada"), msg("2", 98, "Ada")]),
            ),
            start,
            WALL,
        );
        let ids: Vec<String> = drain(&mut s)
            .into_iter()
            .filter_map(|i| match i {
                SourceItem::Event { event, .. } => Some(event.id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["ustream:1234:4"]);
        let c = s.cursor();
        assert_eq!(c.host.as_deref(), Some("http://h2:81"));
        assert_eq!(c.ignored.len(), 1);
        assert_eq!(c.schedule.anchor_unix_ms, Some(WALL));
    }

    #[test]
    fn host_resolution() {
        assert_eq!(
            resolve_host("http://socialstream.ustream.tv", "ss2.ustream.tv").unwrap(),
            "http://ss2.ustream.tv"
        );
        assert_eq!(
            resolve_host("http://127.0.0.1:8000/prefix", "127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000/prefix"
        );
        assert_eq!(
            resolve_host("http://a", "https://b:1/x/").unwrap(),
            "https://b:1/x"
        );
        assert!(resolve_host("http://a", "").is_err());
        assert!(resolve_host("http://a", "bad host").is_err());
    }

    #[test]
    fn config_errors_are_clear() {
        let now = Instant::now();
        let e = Session::new(Config::new("ftp://x", "1"), None, now, 0).unwrap_err();
        assert!(e.to_string().contains("http"), "{e}");
        let e = Session::new(Config::new("http://x", ""), None, now, 0).unwrap_err();
        assert!(e.to_string().contains("channel"), "{e}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn cursor_round_trips() {
        let now = Instant::now();
        let mut p = Session::new(Config::new("http://x", "1"), None, now, WALL).unwrap();
        p.ignored.insert(NetworkAccount {
            provider: "twitter".into(),
            display_name: "G".into(),
        });
        p.remember("ustream:1:9".into());
        let c = p.cursor();
        let back = UstreamCursor::from_cursor(&c.to_cursor()).unwrap();
        assert_eq!(back, c);
        let q = Session::new(Config::new("http://x", "1"), Some(back), now, WALL).unwrap();
        assert_eq!(q.ignored().count(), 1);
        assert!(q.recent_set.contains("ustream:1:9"));
    }
    // ---- the schedule ----

    const CH: &str = "1234";

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn path(p: &Planned) -> String {
        Request {
            base_url: String::new(),
            channel: CH.into(),
            kind: p.kind,
        }
        .path()
    }

    /// Answers `planned` as an on-time server would: `[from, from + width]`.
    fn answer(s: &mut Schedule, p: &Planned, sent: Instant, interval: u64) -> Applied {
        let range = match p.kind {
            RequestKind::Default => [0, 1000],
            RequestKind::Timeslice { from, width } => [from, from + width as i64],
        };
        s.on_success(p.kind, sent, range, Some(interval))
    }

    #[test]
    fn the_documents_example() {
        let start = Instant::now();
        let mut s = Schedule::new(10);
        let p = s.next(start);
        assert_eq!(path(&p), "/socialstream/get.json/1234/default");
        assert_eq!(p.at, start);
        answer(&mut s, &p, start, 10);
        // Walk the hand clock through the slices 1000..1100, each sent exactly on time.
        for k in 0..10u64 {
            let p = s.next(start);
            let v = 1000 + 10 * k as i64;
            assert_eq!(
                path(&p),
                format!("/socialstream/get.json/1234/timeslice/{v}/10")
            );
            assert_eq!(p.at, start + secs(10 * k));
            answer(&mut s, &p, p.at, 10);
        }
        let p = s.next(start);
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/1100/10");
        assert_eq!(p.at, start + secs(100));
        // The response to /timeslice/1100/10 says refreshInterval=5.
        let applied = s.on_success(p.kind, p.at, [1100, 1110], Some(5));
        assert!(applied.interval_changed);
        let p = s.next(start + secs(100));
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/1110/5");
        assert_eq!(p.at, start + secs(110));
        // And the one after that is 5 s later.
        s.on_success(p.kind, p.at, [1110, 1115], Some(5));
        let p = s.next(start + secs(111));
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/1115/5");
        assert_eq!(p.at, start + secs(115));
    }

    #[test]
    fn slow_responses_do_not_accumulate_delay() {
        let start = Instant::now();
        let mut s = Schedule::new(2);
        let p = s.next(start);
        s.on_success(p.kind, start, [0, 500], Some(2));
        let mut now = start;
        for round in 0..20u64 {
            let p = s.next(now);
            let send = p.at.max(now);
            // Every response takes 3.5 s, longer than the 2 s interval.
            now = send + Duration::from_millis(3500);
            let RequestKind::Timeslice { from, width } = p.kind else {
                panic!()
            };
            // The slice always ends where an on-time schedule would be at its send time.
            let on_time = 500 + send.duration_since(start).as_secs() as i64 + 2;
            assert_eq!(from + width as i64, on_time, "round {round}");
            s.on_success(p.kind, send, [from, from + width as i64], Some(2));
        }
        // Every request is due on the original grid: START + (from - FIRST).
        let p = s.next(now);
        let RequestKind::Timeslice { from, .. } = p.kind else {
            panic!()
        };
        assert_eq!(p.at, start + secs((from - 500) as u64));
        assert!(p.at <= now, "still behind, so it goes out at once");
    }

    #[test]
    fn on_time_grid_after_a_single_slow_response() {
        let start = Instant::now();
        let mut s = Schedule::new(5);
        let p = s.next(start);
        s.on_success(p.kind, start, [0, 1000], Some(5));
        let p = s.next(start); // /timeslice/1000/5 at START
        s.on_success(p.kind, start, [1000, 1005], Some(5));
        let p = s.next(start); // due at START+5
        assert_eq!(p.at, start + secs(5));
        // It is answered 7 s late (at START+12): the next one goes out at once, widened to
        // end at 1012 + 5 ...
        s.on_success(p.kind, p.at, [1005, 1010], Some(5));
        let now = start + secs(12);
        let p = s.next(now);
        assert_eq!(p.at, start + secs(10));
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/1010/7");
        s.on_success(p.kind, now, [1010, 1017], Some(5));
        // ... and the following one is back on the grid: START + 17.
        let p = s.next(now);
        assert_eq!(p.at, start + secs(17));
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/1017/5");
    }

    #[test]
    fn interval_change_applies_immediately() {
        let start = Instant::now();
        let mut s = Schedule::new(10);
        let p = s.next(start);
        assert!(
            s.on_success(p.kind, start, [0, 50], Some(3))
                .interval_changed
        );
        let p = s.next(start);
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/50/3");
        assert!(
            !s.on_success(p.kind, start, [50, 53], Some(3))
                .interval_changed
        );
        let p = s.next(start);
        assert_eq!(p.at, start + secs(3));
        assert!(
            s.on_success(p.kind, p.at, [53, 56], Some(1))
                .interval_changed
        );
        let p = s.next(start + secs(3));
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/56/1");
        assert_eq!(p.at, start + secs(6));
        assert_eq!(s.interval, 1);
    }

    #[test]
    fn host_switch_restarts_with_default() {
        let start = Instant::now();
        let mut s = Schedule::new(2);
        let p = s.next(start);
        s.on_success(p.kind, start, [0, 100], Some(2));
        s.restart_with_default();
        let p = s.next(start + secs(1));
        assert_eq!(p.kind, RequestKind::Default);
        assert_eq!(p.at, start + secs(1));
        // The new server has its own clock: a new anchor.
        s.on_success(p.kind, start + secs(1), [0, 5000], Some(2));
        let p = s.next(start + secs(1));
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/5000/2");
        assert_eq!(p.at, start + secs(1));
    }

    #[test]
    fn no_progress_does_not_spin() {
        let start = Instant::now();
        let mut s = Schedule::new(2);
        let p = s.next(start);
        s.on_success(p.kind, start, [0, 100], Some(2));
        let p = s.next(start);
        s.on_success(p.kind, start, [100, 100], Some(2));
        let p = s.next(start);
        assert_eq!(p.at, start + secs(2));
    }

    #[test]
    fn a_server_behind_the_cursor_is_followed_with_default() {
        let start = Instant::now();
        // Resumed from a cursor at range 1000 against a server whose clock says 400.
        let st = ScheduleState {
            range_end: Some(1000),
            refresh_interval: 2,
            anchor_range: Some(990),
            anchor_unix_ms: Some(1_000_000),
            needs_default: false,
        };
        let mut s = Schedule::resume(&st, start, 1_010_000);
        let p = s.next(start);
        assert!(path(&p).contains("/timeslice/1000/"), "{}", path(&p));
        let applied = s.on_success(p.kind, start, [400, 400], Some(2));
        assert!(applied.server_behind);
        let p = s.next(start);
        assert_eq!(p.kind, RequestKind::Default);
        assert_eq!(
            p.at, start,
            "at once, not when the server's clock reaches 1000"
        );
        assert!(s.state(start, 0).needs_default);
        assert_eq!(
            s.range_end,
            Some(1000),
            "kept for the cursor until /default answers"
        );
        s.on_success(p.kind, start, [0, 398], Some(2));
        let p = s.next(start);
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/398/2");
        // No progress (range end at the start) is not a reset.
        let a = s.on_success(p.kind, start, [398, 398], Some(2));
        assert!(!a.server_behind);
        assert!(matches!(
            s.next(start).kind,
            RequestKind::Timeslice { from: 398, .. }
        ));
    }

    #[test]
    fn widening_is_capped_and_catches_up_in_steps() {
        let start = Instant::now();
        let mut s = Schedule::new(2).with_max_window(10);
        let p = s.next(start);
        s.on_success(p.kind, start, [0, 100], Some(2));
        let now = start + secs(25);
        let p = s.next(now);
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/100/10");
        s.on_success(p.kind, now, [100, 110], Some(2));
        let p = s.next(now);
        assert!(p.at <= now, "behind schedule: send at once");
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/110/10");
        s.on_success(p.kind, now, [110, 120], Some(2));
        let p = s.next(now);
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/120/7");
    }

    #[test]
    fn state_round_trips_across_a_restart() {
        let start = Instant::now();
        let mut s = Schedule::new(2);
        let p = s.next(start);
        s.on_success(p.kind, start, [0, 100], Some(2));
        let p = s.next(start);
        s.on_success(p.kind, start, [100, 102], Some(2));
        let unix_at_start = 1_700_000_000_000i64;
        let st = s.state(start + secs(1), unix_at_start + 1000);
        assert_eq!(st.anchor_range, Some(100));
        assert_eq!(st.anchor_unix_ms, Some(unix_at_start));
        assert_eq!(st.range_end, Some(102));
        // A new process, 30 s later on the wall clock.
        let later = start + secs(3);
        let r = Schedule::resume(&st, later, unix_at_start + 30_000);
        let p = r.next(later);
        assert!(p.at <= later);
        assert_eq!(path(&p), "/socialstream/get.json/1234/timeslice/102/30");
        let json = serde_json::to_string(&st).unwrap();
        let back: ScheduleState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);
        // A fresh state starts with /default.
        let fresh = Schedule::resume(&Schedule::new(2).state(later, 0), later, 0);
        assert_eq!(fresh.next(later).kind, RequestKind::Default);
    }

    // ---- the memory ----

    fn acc(p: &str, n: &str) -> NetworkAccount {
        NetworkAccount {
            provider: p.into(),
            display_name: n.into(),
        }
    }

    #[test]
    fn takes_a_users_earlier_messages_by_any_account_once() {
        let m = MessageMemory::new();
        let gy = [acc("twitter", "Gyula"), acc("facebook", "G F")];
        m.record(&gy, "1", 10);
        m.record(&[acc("twitter", "Ada")], "2", 11);
        m.record(&gy[1..], "3", 12);
        m.record(&gy, "4", 20);
        let shared = m.clone();
        assert_eq!(shared.len(), 4);
        // ignUser names the facebook account only, at 15: 1 and 3 (not the later 4).
        assert_eq!(m.take_user(&[acc("facebook", "G F")], 15), ["1", "3"]);
        // Taken once: the twitter account no longer holds 1.
        assert_eq!(
            m.take_user(&[acc("twitter", "Gyula")], 15),
            Vec::<String>::new()
        );
        m.forget("4");
        assert_eq!(m.take_user(&gy, 100), Vec::<String>::new());
        assert_eq!(m.take_user(&[acc("twitter", "Ada")], 100), ["2"]);
        assert!(m.is_empty());
        // Display names are matched exactly, provider and all.
        m.record(&[acc("twitter", "Ada")], "5", 1);
        assert!(m.take_user(&[acc("facebook", "Ada")], 9).is_empty());
        assert!(m.take_user(&[acc("twitter", "ada")], 9).is_empty());
    }

    #[test]
    fn bounded_per_user_and_in_users() {
        let m = MessageMemory::new();
        let a = [acc("twitter", "Chatty")];
        for i in 0..PER_USER + 10 {
            m.record(&a, &i.to_string(), i as i64);
        }
        assert_eq!(m.len(), PER_USER);
        for u in 0..MAX_USERS + 5 {
            m.record(&[acc("ustream", &format!("u{u}"))], &format!("x{u}"), 0);
        }
        let g = m.lock();
        assert_eq!(g.users.len(), MAX_USERS);
        assert!(
            !g.users.contains_key(&a[0]),
            "the least recently active user went first"
        );
        assert_eq!(g.by_uid.len(), MAX_USERS);
    }
}
