//! The async client: the IO loop that executes a [`Session`]'s plan over reqwest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chat_model::{DisconnectReason, Secret, SourceItem, lock_ignoring_poison, redact_url};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use stream_frame::Limits;
use url::Url;

use crate::error::{Endpoint, Error};
use crate::session::{
    CampfireCursor, Host, Method, Pager, Purpose, Request, Response, Session, SessionConfig,
};
use crate::wire::Message;

/// The real streaming host.
pub const DEFAULT_STREAMING_URL: &str = "https://streaming.campfirenow.com";

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
    stream_base: Url,
    live_url: Url,
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
        let scheme = url.scheme();
        return Err(invalid(format!(
            "the scheme must be http or https, not {scheme}"
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
        if config.join && api_base.is_none() {
            return Err(Error::InvalidUrl {
                what: "api",
                url: String::new(),
                reason: "joining the room needs the REST API URL (api_url, e.g. https://ACCOUNT.campfirenow.com)".to_owned(),
            });
        }
        if config.backfill && api_base.is_none() {
            let room = config.room;
            tracing::warn!(
                room,
                "no Campfire api_url: reconnects cannot backfill missed messages"
            );
        }
        let live = Request::new(Purpose::Live, config.room).path;
        let live_url = stream_base.join(&live).map_err(|e| Error::InvalidUrl {
            what: "streaming",
            url: redact_url(&config.url),
            reason: e.to_string(),
        })?;
        Ok(Client {
            config,
            http,
            stream_base,
            live_url,
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
        self.session_config().can_backfill()
    }

    /// The streaming URL (it holds no secret).
    pub fn live_url(&self) -> &str {
        self.live_url.as_str()
    }

    /// The start position fixed by the first connect without a resume position, if any.
    pub fn baseline(&self) -> Option<CampfireCursor> {
        *lock_ignoring_poison(&self.baseline)
    }

    /// The settings of a session of this client (with what earlier sessions learned).
    pub fn session_config(&self) -> SessionConfig {
        let c = &self.config;
        SessionConfig {
            source: c.source.clone(),
            room: c.room,
            api: self.api_base.is_some(),
            join: c.join,
            backfill: c.backfill,
            idle_timeout: c.idle_timeout,
            limits: c.limits,
            keep_raw: c.keep_raw,
            resolve_names: c.resolve_names,
            baseline: self.baseline(),
            names: lock_ignoring_poison(&self.names).clone(),
        }
    }

    /// Opens the live stream by running a [`Session`]'s plan (see the
    /// [session docs](crate::session)): the start position, the join when configured,
    /// `GET live.json` (joining and asking again on 403), then the backfill from
    /// `recent.json` of what was posted after `resume` (or after the start).
    ///
    /// The start of the first call without `resume` is fixed for this client (see
    /// [`Client::baseline`]): every later such call starts from it, so a first stream that
    /// never answers or dies before its first message loses nothing. It is the stream's first
    /// item, a [`SourceItem::Cursor`]. With `resume`, when nothing was missed and the room's
    /// latest id is below it (a reset server), the server's position is taken (and yielded
    /// as a [`SourceItem::Cursor`]) instead of dropping every new message as delivered.
    pub async fn connect(&self, resume: Option<CampfireCursor>) -> Result<LiveStream, Error> {
        let mut session = Session::new(self.session_config(), resume);
        let mut body = None;
        while !session.is_streaming() {
            let Some(request) = session.poll_request() else {
                break;
            };
            self.exchange(&mut session, &request, &mut body).await;
            if let Some(e) = session.take_error() {
                return Err(e);
            }
        }
        let client = self.clone();
        Ok(LiveStream {
            client,
            session,
            body,
            inflight: None,
        })
    }

    /// Sends `request`, hands the answer (or the failure) to `session`, and keeps what the
    /// session learned for later sessions. The live body, when opened, goes to `body`.
    async fn exchange(
        &self,
        session: &mut Session,
        request: &Request,
        body: &mut Option<reqwest::Response>,
    ) {
        match self.execute(request).await {
            Ok((response, stream)) => {
                *body = stream.or(body.take());
                session.handle_response(request.purpose, response, Instant::now());
            }
            Err(message) => session.handle_error(request.purpose, message, Instant::now()),
        }
        if let Some(start) = session.baseline() {
            lock_ignoring_poison(&self.baseline).get_or_insert(start);
        }
        if let Purpose::User { id } = request.purpose {
            if let Some(name) = session.names().get(&id) {
                lock_ignoring_poison(&self.names).insert(id, name.clone());
            }
        }
    }

    fn url(&self, request: &Request) -> Option<Url> {
        let base = match request.host {
            Host::Streaming => &self.stream_base,
            Host::Api => self.api_base.as_ref()?,
        };
        let mut url = base.join(&request.path).ok()?;
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.query);
        }
        Some(url)
    }

    /// Sends one request. The answer is read whole, except the body of a live stream that
    /// opened, which is returned for streaming; `Err` says why there is no answer.
    async fn execute(
        &self,
        request: &Request,
    ) -> Result<(Response, Option<reqwest::Response>), String> {
        let url = self
            .url(request)
            .ok_or("no REST API URL configured (api_url)")?;
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut builder = self.http.request(method, url);
        builder = builder.basic_auth(self.config.token.expose(), Some("x"));
        builder = builder.header(
            USER_AGENT,
            concat!("tributary-campfire/", env!("CARGO_PKG_VERSION")),
        );
        for (name, value) in &request.headers {
            builder = builder.header(*name, *value);
        }
        if request.method == Method::Post {
            builder = builder.body("");
        }
        let limit = self.config.request_timeout;
        if let Purpose::User { .. } = request.purpose {
            builder = builder.timeout(limit.min(Duration::from_secs(5)));
        } else if !request.is_stream() {
            builder = builder.timeout(limit);
        }
        let response = match tokio::time::timeout(limit, builder.send()).await {
            Ok(sent) => sent.map_err(network)?,
            Err(_) => return Err(format!("no response within {}s", limit.as_secs_f64())),
        };
        let header = |name| response.headers().get(name)?.to_str().ok();
        let mut head = Response {
            status: response.status().as_u16(),
            retry_after: header(RETRY_AFTER)
                .and_then(|v| chat_model::parse_retry_after(v, SystemTime::now())),
            content_type: header(CONTENT_TYPE).map(str::to_owned),
            body: Vec::new(),
        };
        if response.status().is_success() {
            if request.is_stream() {
                return Ok((head, Some(response)));
            }
            head.body = response.bytes().await.map_err(network)?.into();
        } else {
            // The start of an error's body, for the message; a slow one is not waited for.
            let text = tokio::time::timeout(Duration::from_secs(2), response.bytes()).await;
            head.body = text.ok().and_then(Result::ok).unwrap_or_default().into();
        }
        Ok((head, None))
    }

    /// A standalone REST call (outside a session): the answer, whatever its status.
    async fn rest(&self, request: &Request) -> Result<Response, Error> {
        let (room, endpoint) = (self.config.room, request.purpose.endpoint());
        let no_api = || Error::Protocol {
            room,
            endpoint,
            message: "no REST API URL configured (api_url)".to_owned(),
        };
        self.api_base.as_ref().ok_or_else(no_api)?;
        let (response, _) = self
            .execute(request)
            .await
            .map_err(|message| Error::Network {
                room,
                endpoint,
                message,
            })?;
        Ok(response)
    }

    /// Joins the room over REST (`POST /room/{id}/join.json`).
    pub async fn join(&self) -> Result<(), Error> {
        let room = self.config.room;
        let response = self.rest(&Request::new(Purpose::Join, room)).await?;
        response.check(room, Endpoint::Join)
    }

    /// One page of `recent.json`: up to [`RECENT_LIMIT`](crate::RECENT_LIMIT) messages after
    /// `since` (the wire objects, as the server listed them).
    pub async fn recent_page(&self, since: Option<u64>) -> Result<Vec<serde_json::Value>, Error> {
        let room = self.config.room;
        let response = self
            .rest(&Request::new(Purpose::Recent { since }, room))
            .await?;
        response.recent_messages(room)
    }

    /// Every message after `since`, oldest first, following pages of
    /// [`RECENT_LIMIT`](crate::RECENT_LIMIT) up to [`MAX_BACKFILL_PAGES`](crate::MAX_BACKFILL_PAGES).
    pub async fn recent(&self, since: Option<u64>) -> Result<Vec<Message>, Error> {
        let room = self.config.room;
        let mut pager = Pager::new(room, since);
        while pager.handle(&self.rest(&pager.request()).await?)? {}
        let unreadable = |e: serde_json::Error| Error::Protocol {
            room,
            endpoint: Endpoint::Recent,
            message: format!("unreadable message: {e}"),
        };
        let messages = pager
            .into_messages()
            .into_iter()
            .map(serde_json::from_value::<Message>);
        let mut all = messages
            .collect::<Result<Vec<_>, _>>()
            .map_err(unreadable)?;
        all.sort_by_key(|m| m.id);
        Ok(all)
    }

    /// The name of user `id` from `GET /users/{id}.json` (`{"user": {"name": ...}}`), cached;
    /// `None` when it cannot be had (the failure is logged once and not retried).
    pub async fn user_name(&self, id: u64) -> Option<String> {
        if let Some(known) = lock_ignoring_poison(&self.names).get(&id) {
            return known.clone();
        }
        let room = self.config.room;
        let response = self.rest(&Request::new(Purpose::User { id }, room)).await;
        let name = response
            .and_then(|r| r.user_name(room))
            .unwrap_or_else(|e| {
                tracing::warn!(room, user = id, error = %e, "cannot look up a Campfire user name");
                None
            });
        lock_ignoring_poison(&self.names).insert(id, name.clone());
        name
    }
}

/// What went wrong with a request, on one line, without the URL reqwest adds.
fn network(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "connection lost while reading"
    } else {
        "request failed"
    };
    format!("{kind}: {}", chat_model::error_chain(&e.without_url()))
}

/// One open live stream of a room, yielding [`SourceItem`]s until it ends.
#[derive(Debug)]
pub struct LiveStream {
    client: Client,
    session: Session,
    body: Option<reqwest::Response>,
    /// A name lookup the session asked for, kept until answered (a dropped `next_item`
    /// future sends it again).
    inflight: Option<Request>,
}

impl LiveStream {
    /// The next item: backfilled messages first, then live messages, keep-alives and
    /// malformed-frame reports. An `Err` ends the stream ([`DisconnectReason::EndOfStream`]
    /// for a clean end); later calls return the same reason. Cancel safe: dropping the
    /// future loses no item.
    pub async fn next_item(&mut self) -> Result<SourceItem, DisconnectReason> {
        loop {
            if let Some(item) = self.session.poll_item() {
                return Ok(item);
            }
            if self.inflight.is_none() {
                self.inflight = self.session.poll_request();
            }
            if let Some(request) = self.inflight.clone() {
                let (client, session) = (&self.client, &mut self.session);
                client.exchange(session, &request, &mut self.body).await;
                self.inflight = None;
                continue;
            }
            if let Some(reason) = self.session.ended() {
                self.body = None;
                return Err(reason.clone());
            }
            let Some(body) = self.body.as_mut() else {
                self.session.handle_end(Instant::now());
                continue;
            };
            let chunk = match self.session.poll_timeout() {
                Some(at) => tokio::select! {
                    biased;
                    chunk = body.chunk() => Some(chunk),
                    () = tokio::time::sleep_until(at.into()) => None,
                },
                None => Some(body.chunk().await),
            };
            let now = Instant::now();
            match chunk {
                None => self.session.handle_timeout(now),
                Some(Ok(Some(bytes))) => self.session.handle_chunk(&bytes, now),
                Some(Ok(None)) => self.session.handle_end(now),
                Some(Err(e)) => {
                    let message = format!("stream broken: {}", network(e));
                    self.session.handle_error(Purpose::Live, message, now);
                }
            }
        }
    }

    /// The position after the last message delivered so far (or the resume position).
    pub fn cursor(&self) -> Option<CampfireCursor> {
        self.session.cursor()
    }
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
            client
                .url(&Request::new(Purpose::Latest, 111))
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/base/room/111/recent.json?limit=1"
        );
        c.api_url = Some("http://127.0.0.1:8".into());
        let client = Client::new(c.clone()).unwrap();
        assert_eq!(
            client
                .url(&Request::new(Purpose::Join, 111))
                .unwrap()
                .as_str(),
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
        let since = Purpose::Recent { since: Some(7) };
        assert_eq!(
            client.url(&Request::new(since, 1)).unwrap().as_str(),
            "https://acme.campfirenow.com/room/1/recent.json?since_message_id=7&limit=100"
        );
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
