//! The async client: join, backfill and stream one room.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_model::{DisconnectReason, Secret, SourceItem, lock_ignoring_poison, redact_url};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER, USER_AGENT};
use stream_frame::Limits;
use url::Url;

use crate::error::{Endpoint, Error};
use crate::session::{CampfireCursor, Session};
use crate::wire::{Message, RecentMessages};

/// The real streaming host.
pub const DEFAULT_STREAMING_URL: &str = "https://streaming.campfirenow.com";

/// The most messages `recent.json` returns per request.
pub const RECENT_LIMIT: usize = 100;

/// The most `recent.json` pages one backfill fetches (100 × 100 messages).
pub const MAX_BACKFILL_PAGES: usize = 100;

/// How to reach one Campfire room.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The source name put on every event (`Event::source`).
    pub source: String,
    /// Streaming base URL (default [`DEFAULT_STREAMING_URL`]).
    pub url: String,
    /// REST API base URL for join and backfill (`https://ACCOUNT.campfirenow.com`). When
    /// `None`, the streaming URL serves REST too (self-hosted servers, the emulator), except
    /// for the real streaming host, which has no REST API: then join is unavailable and
    /// reconnects cannot backfill.
    pub api_url: Option<String>,
    /// The API token (basic auth user; the password is `x`).
    pub token: Secret,
    /// The room id.
    pub room: u64,
    /// Join the room over REST before each stream (the streaming API requires membership).
    /// Without it the client still joins when the stream is refused with HTTP 403 and a REST
    /// API is known, then streams again once.
    pub join: bool,
    /// Backfill missed messages from `recent.json` when resuming.
    pub backfill: bool,
    /// End the stream with [`DisconnectReason::Stalled`] after this much silence (no message,
    /// no keep-alive); `None` leaves liveness to the caller (a supervisor's watchdog).
    pub idle_timeout: Option<Duration>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for REST requests and for the stream's response headers.
    pub request_timeout: Duration,
    /// Frame size limit.
    pub limits: Limits,
    /// Keep each message's wire object in `Event::raw`.
    pub keep_raw: bool,
    /// Fill in author names from the REST API (`GET /users/{id}.json`, cached per client);
    /// the stream itself only carries user ids.
    pub resolve_names: bool,
}

impl ClientConfig {
    /// Settings for `room` with `token` and the defaults: the real streaming host, no join,
    /// backfill on, a 20 s idle timeout (several of Campfire's ~3 s keep-alives), raw kept.
    pub fn new(token: impl Into<Secret>, room: u64) -> Self {
        ClientConfig {
            source: "campfire".to_owned(),
            url: DEFAULT_STREAMING_URL.to_owned(),
            api_url: None,
            token: token.into(),
            room,
            join: false,
            backfill: true,
            idle_timeout: Some(Duration::from_secs(20)),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            limits: Limits::default(),
            keep_raw: true,
            resolve_names: true,
        }
    }
}

/// A client for one Campfire room.
#[derive(Clone, Debug)]
pub struct Client {
    config: ClientConfig,
    http: reqwest::Client,
    live_url: Url,
    join_url: Option<Url>,
    recent_url: Option<Url>,
    api_base: Option<Url>,
    names: Arc<Mutex<HashMap<u64, Option<String>>>>,
    /// The start position fixed by the first connect without a resume position (the room's
    /// latest id then); every later connect without one starts from it too.
    baseline: Arc<Mutex<Option<CampfireCursor>>>,
}

fn base_url(what: &'static str, raw: &str) -> Result<Url, Error> {
    let invalid = |reason: String| Error::InvalidUrl {
        what,
        url: redact_url(raw),
        reason,
    };
    let mut url = Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the scheme must be http or https, not {}",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials belong in `token`, not in the URL".to_owned(),
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn join(base: &Url, what: &'static str, path: &str) -> Result<Url, Error> {
    base.join(path).map_err(|e| Error::InvalidUrl {
        what,
        url: redact_url(base.as_str()),
        reason: e.to_string(),
    })
}

impl Client {
    /// Checks the settings and builds its own HTTP client (rustls, the public web roots).
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(Error::Client)?;
        Client::with_http_client(config, http)
    }

    /// Checks the settings and uses `http` (shared, or trusting extra roots) for every request.
    pub fn with_http_client(config: ClientConfig, http: reqwest::Client) -> Result<Client, Error> {
        let stream_base = base_url("streaming", &config.url)?;
        let api_base = match &config.api_url {
            Some(api) => Some(base_url("api", api)?),
            None if stream_base.host_str() == Some("streaming.campfirenow.com") => None,
            None => Some(stream_base.clone()),
        };
        let room = config.room;
        let live_url = join(&stream_base, "streaming", &format!("room/{room}/live.json"))?;
        let (join_url, recent_url) = match &api_base {
            Some(api) => (
                Some(join(api, "api", &format!("room/{room}/join.json"))?),
                Some(join(api, "api", &format!("room/{room}/recent.json"))?),
            ),
            None => (None, None),
        };
        if config.join && join_url.is_none() {
            return Err(Error::InvalidUrl {
                what: "api",
                url: String::new(),
                reason: "joining the room needs the REST API URL (api_url, e.g. https://ACCOUNT.campfirenow.com)".to_owned(),
            });
        }
        if config.backfill && recent_url.is_none() {
            tracing::warn!(
                room,
                "no Campfire api_url: reconnects cannot backfill missed messages"
            );
        }
        Ok(Client {
            config,
            http,
            live_url,
            join_url,
            recent_url,
            api_base,
            names: Arc::default(),
            baseline: Arc::default(),
        })
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Whether reconnects can backfill what they missed (backfill on and a REST API known).
    pub fn can_backfill(&self) -> bool {
        self.config.backfill && self.recent_url.is_some()
    }

    /// The streaming URL (it holds no secret).
    pub fn live_url(&self) -> &str {
        self.live_url.as_str()
    }

    fn network(&self, endpoint: Endpoint, e: reqwest::Error) -> Error {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_body() || e.is_decode() {
            "connection lost while reading"
        } else {
            "request failed"
        };
        let message = format!("{kind}: {}", error_chain(e));
        Error::Network {
            room: self.config.room,
            endpoint,
            message,
        }
    }

    async fn check(
        &self,
        endpoint: Endpoint,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, Error> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let body = tokio::time::timeout(Duration::from_secs(2), response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let body: String = body.trim().chars().take(200).collect();
        Err(Error::Status {
            room: self.config.room,
            endpoint,
            status: status.as_u16(),
            retry_after,
            body,
        })
    }

    /// Joins the room over REST (`POST /room/{id}/join.json`).
    pub async fn join(&self) -> Result<(), Error> {
        let Some(url) = self.join_url.clone() else {
            return Err(self.no_rest(Endpoint::Join));
        };
        let response = self
            .http
            .post(url)
            .basic_auth(self.config.token.expose(), Some("x"))
            .header(USER_AGENT, user_agent())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json")
            .body("")
            .timeout(self.config.request_timeout)
            .send()
            .await
            .map_err(|e| self.network(Endpoint::Join, e))?;
        self.check(Endpoint::Join, response).await?;
        tracing::debug!(room = self.config.room, "joined Campfire room");
        Ok(())
    }

    /// One page of `recent.json`: up to [`RECENT_LIMIT`] messages after `since` (the wire
    /// objects, as the server listed them).
    pub async fn recent_page(&self, since: Option<u64>) -> Result<Vec<serde_json::Value>, Error> {
        self.recent_request(since, RECENT_LIMIT).await
    }

    fn no_rest(&self, endpoint: Endpoint) -> Error {
        Error::Protocol {
            room: self.config.room,
            endpoint,
            message: "no REST API URL configured (api_url)".to_owned(),
        }
    }

    async fn recent_request(
        &self,
        since: Option<u64>,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, Error> {
        let Some(mut url) = self.recent_url.clone() else {
            return Err(self.no_rest(Endpoint::Recent));
        };
        {
            let mut q = url.query_pairs_mut();
            if let Some(since) = since {
                q.append_pair("since_message_id", &since.to_string());
            }
            q.append_pair("limit", &limit.to_string());
        }
        let response = self
            .http
            .get(url)
            .basic_auth(self.config.token.expose(), Some("x"))
            .header(USER_AGENT, user_agent())
            .header(ACCEPT, "application/json")
            .timeout(self.config.request_timeout)
            .send()
            .await
            .map_err(|e| self.network(Endpoint::Recent, e))?;
        let response = self.check(Endpoint::Recent, response).await?;
        self.check_json(Endpoint::Recent, response.headers())?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.network(Endpoint::Recent, e))?;
        let recent: RecentMessages =
            serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                room: self.config.room,
                endpoint: Endpoint::Recent,
                message: format!("the answer is not a list of messages: {e}"),
            })?;
        Ok(recent.messages)
    }

    /// Every message after `since`, oldest first, following pages of [`RECENT_LIMIT`] up to
    /// [`MAX_BACKFILL_PAGES`].
    pub async fn recent(&self, since: Option<u64>) -> Result<Vec<Message>, Error> {
        let mut all = Vec::new();
        for raw in self.recent_raw(since).await? {
            let m = serde_json::from_value::<Message>(raw).map_err(|e| Error::Protocol {
                room: self.config.room,
                endpoint: Endpoint::Recent,
                message: format!("unreadable message: {e}"),
            })?;
            all.push(m);
        }
        all.sort_by_key(|m| m.id);
        Ok(all)
    }

    async fn recent_raw(&self, since: Option<u64>) -> Result<Vec<serde_json::Value>, Error> {
        let mut all = Vec::new();
        let mut since = since;
        for _ in 0..MAX_BACKFILL_PAGES {
            let page = self.recent_page(since).await?;
            let full = page.len() >= RECENT_LIMIT;
            let max = page
                .iter()
                .filter_map(|m| m.get("id").and_then(id_of))
                .max();
            all.extend(page);
            match (full, max) {
                (true, Some(max)) if since.is_none_or(|s| max > s) => since = Some(max),
                _ => return Ok(all),
            }
        }
        tracing::warn!(
            room = self.config.room,
            pages = MAX_BACKFILL_PAGES,
            "backfill stopped after the page limit; older missed messages are not fetched"
        );
        Ok(all)
    }

    fn check_json(&self, endpoint: Endpoint, headers: &HeaderMap) -> Result<(), Error> {
        let Some(ct) = headers.get(CONTENT_TYPE) else {
            return Ok(());
        };
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        if ct.contains("json") || ct.starts_with("text/plain") {
            return Ok(());
        }
        Err(Error::Protocol {
            room: self.config.room,
            endpoint,
            message: format!("expected a JSON response, got content type {ct:?}"),
        })
    }

    /// The room's latest message id (0 for an empty room), from `recent.json?limit=1`.
    async fn latest(&self) -> Result<CampfireCursor, Error> {
        let latest = self.recent_request(None, 1).await?;
        let last_message_id = latest
            .iter()
            .filter_map(|m| m.get("id").and_then(id_of))
            .max()
            .unwrap_or(0);
        Ok(CampfireCursor { last_message_id })
    }

    /// The start position fixed by the first connect without a resume position, if any.
    pub fn baseline(&self) -> Option<CampfireCursor> {
        *lock_ignoring_poison(&self.baseline)
    }

    /// Sends `GET live.json` and checks the answer's status and content type.
    async fn request_live(&self) -> Result<reqwest::Response, Error> {
        let request = self
            .http
            .get(self.live_url.clone())
            .basic_auth(self.config.token.expose(), Some("x"))
            .header(USER_AGENT, user_agent())
            .header(ACCEPT, "application/json")
            .send();
        let response = match tokio::time::timeout(self.config.request_timeout, request).await {
            Ok(r) => r.map_err(|e| self.network(Endpoint::Live, e))?,
            Err(_) => {
                return Err(Error::Network {
                    room: self.config.room,
                    endpoint: Endpoint::Live,
                    message: format!(
                        "no response within {}s",
                        self.config.request_timeout.as_secs_f64()
                    ),
                });
            }
        };
        let response = self.check(Endpoint::Live, response).await?;
        self.check_json(Endpoint::Live, response.headers())?;
        Ok(response)
    }

    /// Opens `live.json`. The streaming API serves only rooms the user has joined: a 403
    /// when this connect has not joined yet makes the client join over REST and ask once
    /// more; without a REST API it is [`Error::NotJoined`].
    async fn open_live(&self, mut joined: bool) -> Result<reqwest::Response, Error> {
        loop {
            match self.request_live().await {
                Err(Error::Status {
                    status: 403, body, ..
                }) if !joined => {
                    if self.join_url.is_none() {
                        return Err(Error::NotJoined {
                            room: self.config.room,
                            status: 403,
                            body,
                        });
                    }
                    tracing::info!(
                        room = self.config.room,
                        "live.json answered HTTP 403: joining the room (the streaming API serves only joined rooms)"
                    );
                    self.join().await?;
                    joined = true;
                }
                other => return other,
            }
        }
    }

    /// Opens the live stream: takes the start position (below), joins when configured, then
    /// `GET live.json` (joining and asking again when it is refused with 403), then backfills
    /// from `recent.json` what was posted after `resume`, yielded before the first live
    /// message.
    ///
    /// Without `resume` (and with a REST API) the start is the room's latest message id,
    /// asked for before subscribing. The first such call fixes it (see [`Client::baseline`]):
    /// every later call without `resume` starts from the same position, so a first stream
    /// that never answers or dies before its first message loses nothing. The start is the
    /// stream's first item, a [`SourceItem::Cursor`], before any event.
    ///
    /// With `resume`, when nothing was missed and the room's latest id is below it, the
    /// server's ids went backwards (a reset server): that is logged as a warning and the
    /// server's position is taken (also yielded as a [`SourceItem::Cursor`]) instead of
    /// dropping every new message as already delivered.
    pub async fn connect(&self, resume: Option<CampfireCursor>) -> Result<LiveStream, Error> {
        // A first connection starts from the room's latest id, learned before joining and
        // subscribing and backfilled after, so nothing posted in between is lost (the join's
        // own EnterMessage included) and a drop before the first message, or a failed join,
        // can still be backfilled.
        let mut start = None;
        let resume = match resume {
            Some(c) => Some(c),
            None if self.can_backfill() => {
                let fixed = self.baseline();
                let baseline = match fixed {
                    Some(b) => b,
                    None => {
                        let latest = self.latest().await?;
                        *lock_ignoring_poison(&self.baseline) = Some(latest);
                        latest
                    }
                };
                start = Some(baseline);
                start
            }
            None => None,
        };
        if self.config.join {
            self.join().await?;
        }
        let response = self.open_live(self.config.join).await?;
        let mut session = Session::new(
            self.config.source.clone(),
            self.config.room,
            resume,
            self.config.limits,
            self.config.keep_raw,
        );
        let mut pending = Vec::new();
        // The stream is subscribed before the backfill is fetched, so nothing posted in
        // between is lost; the session drops what both deliver.
        if let (Some(cursor), true) = (resume, self.can_backfill()) {
            let missed = self.recent_raw(Some(cursor.last_message_id)).await?;
            tracing::debug!(
                room = self.config.room,
                since = cursor.last_message_id,
                count = missed.len(),
                "backfilled from recent.json"
            );
            // A position from outside (a saved cursor) that the server knows nothing after:
            // check that its ids did not go backwards.
            if missed.is_empty() && start.is_none() {
                let latest = self.latest().await?;
                if latest.last_message_id < cursor.last_message_id {
                    tracing::warn!(
                        room = self.config.room,
                        cursor = cursor.last_message_id,
                        latest = latest.last_message_id,
                        "the Campfire server's message ids went backwards (a reset server?): \
                         its latest id is below the saved position; taking the server's position"
                    );
                    session.take_position(latest);
                    start = Some(latest);
                }
            }
            if let Some(start) = start {
                pending.push(SourceItem::Cursor(start.to_cursor()));
            }
            session.backfill(missed, &mut pending);
        } else if let Some(start) = start {
            pending.push(SourceItem::Cursor(start.to_cursor()));
        }
        tracing::debug!(room = self.config.room, url = %redact_url(self.live_url.as_str()), "streaming");
        Ok(LiveStream {
            names: (self.config.resolve_names && self.api_base.is_some()).then(|| self.clone()),
            room: self.config.room,
            response: Some(response),
            session,
            pending: pending.into(),
            scratch: Vec::new(),
            idle_timeout: self.config.idle_timeout,
            ended: None,
        })
    }
}

impl Client {
    /// The name of user `id` from `GET /users/{id}.json` (`{"user": {"name": ...}}`), cached;
    /// `None` when it cannot be had (the failure is logged once and not retried).
    pub async fn user_name(&self, id: u64) -> Option<String> {
        if let Some(known) = lock_ignoring_poison(&self.names).get(&id) {
            return known.clone();
        }
        let name = match self.fetch_user_name(id).await {
            Ok(name) => name,
            Err(e) => {
                tracing::warn!(room = self.config.room, user = id, error = %e, "cannot look up a Campfire user name");
                None
            }
        };
        lock_ignoring_poison(&self.names).insert(id, name.clone());
        name
    }

    async fn fetch_user_name(&self, id: u64) -> Result<Option<String>, Error> {
        let base = self
            .api_base
            .as_ref()
            .ok_or_else(|| self.no_rest(Endpoint::User))?;
        let url = join(base, "api", &format!("users/{id}.json"))?;
        let response = self
            .http
            .get(url)
            .basic_auth(self.config.token.expose(), Some("x"))
            .header(USER_AGENT, user_agent())
            .header(ACCEPT, "application/json")
            .timeout(self.config.request_timeout.min(Duration::from_secs(5)))
            .send()
            .await
            .map_err(|e| self.network(Endpoint::User, e))?;
        let response = self.check(Endpoint::User, response).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.network(Endpoint::User, e))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
            room: self.config.room,
            endpoint: Endpoint::User,
            message: format!("not JSON: {e}"),
        })?;
        let user = v.get("user").unwrap_or(&v);
        Ok(user.get("name").and_then(|n| n.as_str()).map(str::to_owned))
    }
}

fn id_of(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn user_agent() -> &'static str {
    concat!("tributary-campfire/", env!("CARGO_PKG_VERSION"))
}

/// Reads a `Retry-After` header against the current time; the parsing is
/// [`chat_model::parse_retry_after`] (delay-seconds or an HTTP-date).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    chat_model::parse_retry_after(value, std::time::SystemTime::now())
}

/// One open live stream of a room, yielding [`SourceItem`]s until it ends.
#[derive(Debug)]
pub struct LiveStream {
    names: Option<Client>,
    room: u64,
    response: Option<reqwest::Response>,
    session: Session,
    pending: VecDeque<SourceItem>,
    scratch: Vec<SourceItem>,
    idle_timeout: Option<Duration>,
    ended: Option<DisconnectReason>,
}

impl LiveStream {
    /// The next item: backfilled messages first, then live messages, keep-alives and
    /// malformed-frame reports. An `Err` ends the stream ([`DisconnectReason::EndOfStream`]
    /// for a clean end); later calls return the same reason. Cancel safe: dropping the
    /// future loses no item.
    pub async fn next_item(&mut self) -> Result<SourceItem, DisconnectReason> {
        loop {
            if let Some(front) = self.pending.front_mut() {
                // Look the author's name up before taking the item out, so a caller that
                // drops this future mid-lookup loses nothing.
                if let (Some(client), SourceItem::Event { event, .. }) = (&self.names, front) {
                    let id = event.author.id.as_deref().and_then(|i| i.parse().ok());
                    if let (None, Some(id)) = (&event.author.name, id) {
                        event.author.name = client.user_name(id).await;
                    }
                }
                if let Some(item) = self.pending.pop_front() {
                    return Ok(item);
                }
            }
            if let Some(reason) = &self.ended {
                return Err(reason.clone());
            }
            let Some(response) = self.response.as_mut() else {
                self.ended = Some(DisconnectReason::EndOfStream);
                continue;
            };
            let chunk = match self.idle_timeout {
                Some(idle) => match tokio::time::timeout(idle, response.chunk()).await {
                    Ok(c) => c,
                    Err(_) => {
                        self.response = None;
                        self.ended = Some(
                            Error::Stalled {
                                room: self.room,
                                idle,
                            }
                            .into(),
                        );
                        continue;
                    }
                },
                None => response.chunk().await,
            };
            match chunk {
                Ok(Some(bytes)) => self.session.feed(&bytes, &mut self.scratch),
                Ok(None) => {
                    self.session.finish(&mut self.scratch);
                    self.response = None;
                    self.ended = Some(DisconnectReason::EndOfStream);
                }
                Err(e) => {
                    self.response = None;
                    self.ended = Some(DisconnectReason::Network(format!(
                        "Campfire room {}: stream broken: {}",
                        self.room,
                        error_chain(e)
                    )));
                }
            }
            self.pending.extend(self.scratch.drain(..));
        }
    }

    /// The position after the last message delivered so far (or the resume position).
    pub fn cursor(&self) -> Option<CampfireCursor> {
        self.session.cursor()
    }
}

/// The error and its causes on one line, without the URL reqwest adds to its message.
fn error_chain(e: reqwest::Error) -> String {
    chat_model::error_chain(&e.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_and_checked() {
        let mut c = ClientConfig::new("tok", 111);
        c.url = "http://127.0.0.1:9/base".into();
        let client = Client::new(c.clone()).unwrap();
        assert_eq!(
            client.live_url(),
            "http://127.0.0.1:9/base/room/111/live.json"
        );
        assert_eq!(
            client.recent_url.as_ref().unwrap().as_str(),
            "http://127.0.0.1:9/base/room/111/recent.json"
        );
        c.api_url = Some("http://127.0.0.1:8".into());
        let client = Client::new(c.clone()).unwrap();
        assert_eq!(
            client.join_url.as_ref().unwrap().as_str(),
            "http://127.0.0.1:8/room/111/join.json"
        );
        assert!(client.can_backfill());

        c.url = "ftp://x".into();
        let e = Client::new(c.clone()).unwrap_err();
        assert!(e.to_string().contains("scheme"), "{e}");
        c.url = "http://tok:secret@h".into();
        let e = Client::new(c.clone()).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(matches!(
            DisconnectReason::from(e),
            DisconnectReason::Config(_)
        ));
        c.url = "not a url".into();
        assert!(Client::new(c).is_err());
    }

    #[test]
    fn the_real_streaming_host_has_no_rest_api() {
        let c = ClientConfig::new("tok", 1);
        let client = Client::new(c.clone()).unwrap();
        assert!(!client.can_backfill());
        let mut joining = c.clone();
        joining.join = true;
        let e = Client::new(joining).unwrap_err();
        assert!(e.to_string().contains("api_url"), "{e}");
        let mut with_api = c;
        with_api.join = true;
        with_api.api_url = Some("https://acme.campfirenow.com".into());
        let client = Client::new(with_api).unwrap();
        assert!(client.can_backfill());
        assert_eq!(
            client.recent_url.unwrap().as_str(),
            "https://acme.campfirenow.com/room/1/recent.json"
        );
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[tokio::test]
    async fn a_refusal_without_a_rest_api_says_to_join() {
        use emulator::campfire::{Config, DEFAULT_TOKEN, Emulator};
        let emu = Emulator::start(Config {
            rate: 0.0,
            require_join: true,
            ..Config::default()
        })
        .await
        .unwrap();
        let mut c = ClientConfig::new(DEFAULT_TOKEN, 111);
        c.url = emu.url();
        let mut client = Client::new(c).unwrap();
        // As against the real streaming host without api_url: no REST API to join with.
        client.join_url = None;
        client.recent_url = None;
        client.api_base = None;
        let e = client.connect(None).await.unwrap_err();
        assert!(
            matches!(&e, Error::NotJoined { room: 111, status: 403, body } if body.contains("join")),
            "{e:?}"
        );
        assert!(e.to_string().contains("api_url"), "{e}");
        assert!(!emu.has_joined(DEFAULT_TOKEN, 111));
        let reason = DisconnectReason::from(e);
        assert!(matches!(reason, DisconnectReason::Forbidden(_)), "{reason}");
        emu.stop().await;
    }

    #[test]
    fn debug_hides_the_token() {
        let c = ClientConfig::new("sekrit-token", 1);
        let client = Client::new(c).unwrap();
        assert!(!format!("{client:?}").contains("sekrit"));
    }
}
