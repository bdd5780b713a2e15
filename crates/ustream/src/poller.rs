//! The async poller: a thin driver of [`Schedule`] over reqwest that yields
//! [`SourceItem`]s.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chat_model::{Cursor, SourceItem, redact_url};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::mapping::{Context, accounts_of, message_id, order_payload};
use crate::memory::MessageMemory;
use crate::schedule::{Planned, RequestKind, Schedule, ScheduleState};
use crate::wire::{Item, NetworkAccount, Response};

/// How many recent event ids the poller remembers to drop repeats across overlapping windows.
const RECENT_IDS: usize = 2048;
/// How many of them travel in the cursor (so a restart does not repeat the last window).
const CURSOR_IDS: usize = 256;

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

/// How failed polls are retried inside the poller before it gives up with an error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// The delay after the first failure.
    pub initial: Duration,
    /// The cap on any delay.
    pub max: Duration,
    /// Give up (return the error) after this many consecutive failures; 1 = never retry.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            max_attempts: 3,
        }
    }
}

impl RetryPolicy {
    /// The delay after the n-th consecutive failure (1-based).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        self.initial.saturating_mul(1u32 << exp).min(self.max)
    }
}

/// Settings of a [`Poller`].
#[derive(Clone, Debug)]
pub struct PollerConfig {
    /// Server base URL, e.g. `http://socialstream.ustream.tv` (paths are appended).
    pub base_url: String,
    /// The channel id.
    pub channel: String,
    /// The source name put in every event.
    pub source: String,
    /// The longest a single request may take.
    pub request_timeout: Duration,
    /// Retries of failed polls.
    pub retry: RetryPolicy,
    /// The widest timeslice one catch-up request may ask for, seconds.
    pub max_window: u64,
    /// Responses larger than this are refused.
    pub max_response_bytes: usize,
    /// The refresh interval assumed before the server names one, seconds.
    pub initial_interval: u64,
}

impl PollerConfig {
    /// Defaults for a channel on a server.
    pub fn new(base_url: impl Into<String>, channel: impl Into<String>) -> Self {
        let channel = channel.into();
        PollerConfig {
            base_url: base_url.into(),
            source: "ustream".to_owned(),
            channel,
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            max_window: crate::schedule::DEFAULT_MAX_WINDOW,
            max_response_bytes: 8 * 1024 * 1024,
            initial_interval: 10,
        }
    }

    /// Builds a default HTTP client (rustls, the public web roots).
    pub fn http_client(&self) -> Result<reqwest::Client, Error> {
        reqwest::Client::builder()
            .use_rustls_tls()
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))
    }

    /// The silence after which a supervisor may presume the poller dead, for a refresh
    /// interval: the interval, one request timeout, and the poller's own retry budget plus a
    /// margin (so its retries never look like a stall).
    pub fn stall_timeout(&self, interval: u64) -> Duration {
        let mut retries = Duration::ZERO;
        for n in 1..self.retry.max_attempts.max(1) {
            retries += self.retry.delay(n) + self.request_timeout;
        }
        Duration::from_secs(interval) + self.request_timeout + retries + Duration::from_secs(5)
    }
}

/// Polls one channel's Social Stream, yielding events in time order, keep-alives after every
/// successful poll, cursor updates and stall timeouts.
#[derive(Debug)]
pub struct Poller {
    http: reqwest::Client,
    config: PollerConfig,
    base: String,
    switched_host: Option<String>,
    schedule: Schedule,
    ctx: Context,
    ignored: BTreeSet<NetworkAccount>,
    recent: VecDeque<String>,
    recent_set: HashSet<String>,
    /// `createdAt` of the recent message ids that carry one.
    recent_at: HashMap<String, i64>,
    memory: MessageMemory,
    queue: VecDeque<SourceItem>,
    failures: u32,
}

fn unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Poller {
    /// A poller with its own HTTP client; `resume` continues a saved session.
    pub fn new(config: PollerConfig, resume: Option<UstreamCursor>) -> Result<Self, Error> {
        let http = config.http_client()?;
        Poller::with_client(http, config, resume)
    }

    /// A poller using `http` (e.g. one trusting an extra CA); `resume` continues a saved
    /// session: same host, the range widened from the last end, same ignore list.
    pub fn with_client(
        http: reqwest::Client,
        config: PollerConfig,
        resume: Option<UstreamCursor>,
    ) -> Result<Self, Error> {
        let url = reqwest::Url::parse(&config.base_url).map_err(|e| {
            Error::Config(format!(
                "bad ustream url {:?}: {e}",
                redact_url(&config.base_url)
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "ustream url {:?} must be http:// or https://",
                redact_url(&config.base_url)
            )));
        }
        if config.channel.is_empty() || config.channel.contains('/') {
            return Err(Error::Config(format!(
                "bad ustream channel id {:?}",
                config.channel
            )));
        }
        let now = Instant::now();
        let resume = resume.unwrap_or_default();
        let schedule = if resume.schedule.range_end.is_some() {
            Schedule::resume(&config.channel, &resume.schedule, now, unix_ms())
        } else {
            Schedule::new(&config.channel, config.initial_interval)
        }
        .with_max_window(config.max_window);
        let base = resume
            .host
            .clone()
            .unwrap_or_else(|| config.base_url.trim_end_matches('/').to_owned());
        let mut p = Poller {
            http,
            ctx: Context {
                source: config.source.clone(),
                channel: config.channel.clone(),
            },
            base,
            switched_host: resume.host.clone(),
            schedule,
            ignored: resume.ignored.iter().cloned().collect(),
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            recent_at: HashMap::new(),
            memory: MessageMemory::new(),
            queue: VecDeque::new(),
            failures: 0,
            config,
        };
        let times = if resume.recent_at.len() == resume.recent_ids.len() {
            resume.recent_at
        } else {
            vec![None; resume.recent_ids.len()]
        };
        for (id, at) in resume.recent_ids.into_iter().zip(times) {
            if let Some(at) = at {
                p.recent_at.insert(id.clone(), at);
            }
            p.remember(id);
        }
        Ok(p)
    }

    /// Shares `memory` (the recent messages per user that an `ignUser` retracts) with this
    /// poller; a source passes the same memory to each poller it builds, so reconnects keep it.
    pub fn with_memory(mut self, memory: MessageMemory) -> Self {
        self.memory = memory;
        self
    }

    /// The memory of recent messages per user this poller uses.
    pub fn memory(&self) -> &MessageMemory {
        &self.memory
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
            schedule: self.schedule.state(Instant::now(), unix_ms()),
            ignored: self.ignored.iter().cloned().collect(),
            recent_at: if recent_at.iter().any(Option::is_some) {
                recent_at
            } else {
                Vec::new()
            },
            recent_ids,
        }
    }

    /// The server base URL polled now (changes on a `host` item).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The accounts ignored now.
    pub fn ignored(&self) -> impl Iterator<Item = &NetworkAccount> {
        self.ignored.iter()
    }

    /// The schedule (for inspection).
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
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

    /// Skips an item the poller cannot act on: a warning and a counted `Malformed` item.
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

    /// The next item. Waits for the schedule, polls, retries failed polls with backoff, and
    /// returns an error only when a failure cannot be retried or retries ran out.
    ///
    /// Cancel-safe: dropping the future mid-request changes nothing.
    pub async fn next_item(&mut self) -> Result<SourceItem, Error> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Ok(item);
            }
            let planned = self.schedule.next(Instant::now());
            tokio::time::sleep_until(planned.at.into()).await;
            // Re-plan at the actual send time so a late send widens its window.
            let planned = self.schedule.next(Instant::now());
            let sent_at = Instant::now();
            match self.fetch(&planned).await {
                Ok(resp) => match self.apply(&planned, sent_at, resp) {
                    Ok(()) => self.failures = 0,
                    Err(e) => self.failed(e)?,
                },
                Err(e) => self.failed(e)?,
            }
        }
    }

    fn failed(&mut self, e: Error) -> Result<(), Error> {
        self.failures += 1;
        if !e.is_retryable() || self.failures >= self.config.retry.max_attempts.max(1) {
            self.failures = 0;
            return Err(e);
        }
        let delay = self
            .config
            .retry
            .delay(self.failures)
            .max(e.retry_after().unwrap_or_default());
        tracing::warn!(channel = %self.config.channel, error = %e, retry_in_ms = delay.as_millis() as u64,
            "ustream poll failed; retrying, the next timeslice covers the missed window");
        self.schedule.on_failure(Instant::now() + delay);
        Ok(())
    }

    async fn fetch(&self, planned: &Planned) -> Result<Response, Error> {
        let url = format!("{}{}", self.base, planned.path);
        let shown = redact_url(&url);
        let channel = &self.config.channel;
        let timeout = self.config.request_timeout;
        let work = async {
            let resp = self
                .http
                .get(&url)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| Error::Network {
                    channel: channel.clone(),
                    url: shown.clone(),
                    detail: e.without_url().to_string(),
                })?;
            let status = resp.status().as_u16();
            if status != 200 {
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| chat_model::parse_retry_after(v, std::time::SystemTime::now()));
                return Err(Error::Http {
                    channel: channel.clone(),
                    url: shown.clone(),
                    status,
                    retry_after,
                });
            }
            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let mut resp = resp;
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| Error::Network {
                channel: channel.clone(),
                url: shown.clone(),
                detail: format!("response cut short: {}", e.without_url()),
            })? {
                if body.len() + chunk.len() > self.config.max_response_bytes {
                    return Err(Error::TooLarge {
                        channel: channel.clone(),
                        url: shown.clone(),
                        limit: self.config.max_response_bytes,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            serde_json::from_slice::<Response>(&body).map_err(|e| Error::Protocol {
                channel: channel.clone(),
                url: shown.clone(),
                detail: format!(
                    "not a social stream JSON response (content type {content_type:?}): {e}"
                ),
            })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                channel: channel.clone(),
                url: shown,
                timeout,
            }),
        }
    }

    fn is_ignored(&self, accounts: &[NetworkAccount]) -> bool {
        accounts.iter().any(|a| self.ignored.contains(a))
    }

    fn apply(&mut self, planned: &Planned, sent_at: Instant, resp: Response) -> Result<(), Error> {
        let channel = self.config.channel.clone();
        if !resp.success {
            return Err(Error::Failed {
                channel,
                message: resp
                    .message
                    .unwrap_or_else(|| "(the server gave no message)".to_owned()),
            });
        }
        let Some(range) = resp.range else {
            return Err(Error::Protocol {
                channel,
                url: redact_url(&format!("{}{}", self.base, planned.path)),
                detail: "a successful response without a range".to_owned(),
            });
        };
        let applied = self
            .schedule
            .on_success(planned, sent_at, range, resp.refresh_interval);
        if applied.server_behind {
            tracing::warn!(channel = %channel, asked = %planned.path, range = ?range,
                "ustream: the server's range lies behind the cursor (a reset server, or a cursor \
                 from another one); taking the server's position with /default");
        }
        if applied.interval_changed {
            let interval = self.schedule.refresh_interval();
            self.queue.push_back(SourceItem::StallTimeout(
                self.config.stall_timeout(interval),
            ));
        }
        let clean = resp.is_suffix_cleaning_needed;
        let mut new_host: Option<String> = None;
        let mut occurrences: HashMap<String, usize> = HashMap::new();
        let ordered = order_payload(&resp.payload, range[1]);
        // A `/default` answers the recent history, which repeats what a session delivered
        // before (after a host switch, or a restart that must begin with `/default`). The
        // payload is one stretch of the timeline, so everything up to the last message
        // delivered already was delivered (or hidden, or applied) then: control items among
        // it (which have no uid of their own) must not be applied or announced again.
        let replayed = match planned.kind {
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
            // window is fetched again, widened) and their occurrence in it.
            let key = o.raw.to_string();
            let n = occurrences.entry(key).or_default();
            *n += 1;
            let stamp = format!("{}.{}", range[0], n);
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
                        // poller here): following it again would restart with /default anew.
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
        if planned.kind == RequestKind::Default {
            tracing::debug!(channel = %channel, range_end = range[1], "ustream session anchored");
        }
        self.queue
            .push_back(SourceItem::Cursor(self.cursor().to_cursor()));
        self.queue.push_back(SourceItem::KeepAlive);
        Ok(())
    }
}

/// The new base URL for a `host` item: a full URL is taken as is; a host name (or
/// `host:port`) replaces the current server, keeping its scheme and path prefix.
pub fn resolve_host(current: &str, host: &str) -> Result<String, Error> {
    let host = host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(Error::Config(format!(
            "the social stream sent an unusable host {host:?}"
        )));
    }
    if host.contains("://") {
        reqwest::Url::parse(host).map_err(|e| {
            Error::Config(format!(
                "bad host {:?} in a host item: {e}",
                redact_url(host)
            ))
        })?;
        return Ok(host.trim_end_matches('/').to_owned());
    }
    let cur = reqwest::Url::parse(current)
        .map_err(|e| Error::Config(format!("bad ustream url {:?}: {e}", redact_url(current))))?;
    let candidate = format!(
        "{}://{}{}",
        cur.scheme(),
        host.trim_end_matches('/'),
        cur.path().trim_end_matches('/')
    );
    reqwest::Url::parse(&candidate)
        .map_err(|e| Error::Config(format!("bad host {host:?} in a host item: {e}")))?;
    Ok(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn retry_delays_grow_and_cap() {
        let r = RetryPolicy::default();
        assert_eq!(r.delay(1), Duration::from_secs(1));
        assert_eq!(r.delay(2), Duration::from_secs(2));
        assert_eq!(r.delay(10), Duration::from_secs(8));
        let c = PollerConfig::new("http://x", "1");
        assert!(c.stall_timeout(5) > Duration::from_secs(5) + c.request_timeout);
    }

    #[test]
    fn config_errors_are_clear() {
        let e = Poller::new(PollerConfig::new("ftp://x", "1"), None).unwrap_err();
        assert!(e.to_string().contains("http"));
        let e = Poller::new(PollerConfig::new("http://x", ""), None).unwrap_err();
        assert!(e.to_string().contains("channel"));
    }

    #[test]
    fn cursor_round_trips() {
        let mut p = Poller::new(PollerConfig::new("http://x", "1"), None).unwrap();
        p.ignored.insert(NetworkAccount {
            provider: "twitter".into(),
            display_name: "G".into(),
        });
        p.remember("ustream:1:9".into());
        let c = p.cursor();
        let back = UstreamCursor::from_cursor(&c.to_cursor()).unwrap();
        assert_eq!(back, c);
        let q = Poller::new(PollerConfig::new("http://x", "1"), Some(back)).unwrap();
        assert_eq!(q.ignored().count(), 1);
        assert!(q.recent_set.contains("ustream:1:9"));
    }
}
