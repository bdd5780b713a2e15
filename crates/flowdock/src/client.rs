//! The async client: the thin reqwest/tokio IO loop around a [`Session`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_model::{DisconnectReason, Secret, SourceItem, error_chain, lock_ignoring_poison};
use serde_json::Value;

use crate::error::Error;
use crate::http::{Head, rest_body};
use crate::session::{Request, Session, Settings};
use crate::users::Names;
use crate::wire::WireMessage;

pub use crate::session::{
    Active, DEFAULT_API_URL, DEFAULT_STREAM_URL, FlowdockCursor, MAX_BACKFILL_LIMIT,
    MAX_BACKFILL_PAGES, Transport,
};

/// Settings of a [`Client`]: the session's [`Settings`] plus what only the IO loop needs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// What to stream and how (flows, URLs, transport, limits).
    pub settings: Settings,
    /// The access token (HTTP basic user, empty password).
    pub token: Secret,
    /// Resolve authors' names over the REST users API (default true).
    pub resolve_names: bool,
    /// The longest an event waits for a user lookup (default 5 s); then it goes out with
    /// the user id only.
    pub user_lookup_timeout: Duration,
}

impl ClientConfig {
    /// Settings for `flows` with `token`, the SSE transport and the real hosts.
    pub fn new(source: impl Into<String>, token: Secret, flows: Vec<String>) -> Self {
        ClientConfig {
            settings: Settings::new(source, flows),
            token,
            resolve_names: true,
            user_lookup_timeout: Duration::from_secs(5),
        }
    }
}

/// A Flowdock streaming client; cheap to clone, one [`Client::connect`] per connection.
#[derive(Clone, Debug)]
pub struct Client {
    cfg: ClientConfig,
    /// The checked session settings (both base URLs resolved).
    settings: Settings,
    http: reqwest::Client,
    /// The start position taken by the first connect without a resume cursor, reused by every
    /// later one (shared by clones), so a first connection that dies before it answers does not
    /// move the start.
    start: Arc<Mutex<Option<FlowdockCursor>>>,
    /// User names, cached across connections.
    names: Names,
}

impl Client {
    /// Checks the settings and builds its own HTTP client (rustls, the public web roots).
    pub fn new(cfg: ClientConfig) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Client(Arc::new(e)))?;
        Client::with_http_client(cfg, http)
    }

    /// Checks the settings and uses `http` (shared, or trusting extra roots) for every request.
    pub fn with_http_client(cfg: ClientConfig, http: reqwest::Client) -> Result<Client, Error> {
        let settings = cfg.settings.clone();
        settings.check_flows()?;
        if cfg.token.is_empty() {
            return Err(Error::EmptyToken);
        }
        let settings = settings.resolve()?;
        let api = url::Url::parse(settings.api_base()).map_err(|e| Error::InvalidUrl {
            what: "api_url",
            url: chat_model::redact_url(settings.api_base()),
            reason: e.to_string(),
        })?;
        let names = Names::new(
            http.clone(),
            api,
            cfg.token.clone(),
            cfg.settings.source.clone(),
            cfg.user_lookup_timeout.max(Duration::from_millis(1)),
            cfg.resolve_names,
        );
        Ok(Client {
            cfg,
            settings,
            http,
            start: Default::default(),
            names,
        })
    }

    /// The start position fixed by the first connect without a resume cursor, if any.
    pub fn start_position(&self) -> Option<FlowdockCursor> {
        lock_ignoring_poison(&self.start).clone()
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The REST base URL backfill and baselines use.
    pub fn api_url(&self) -> &str {
        self.settings.api_base()
    }

    /// The user names of this client (cached across its connections).
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The streaming URL (see [`Settings::stream_url`]); the token is never in it.
    pub fn stream_url(&self) -> String {
        self.settings.stream_url()
    }

    /// Names what this client streams, for errors: `flows a/b, c/d (+ private) at URL`.
    pub fn describe(&self) -> String {
        self.settings.describe()
    }

    /// A [`Session`] for one connection resuming from `resume` (a fresh one starts where the
    /// first fresh connection of this client started).
    pub fn session(&self, resume: Option<FlowdockCursor>) -> Session {
        Session::new(self.settings.clone(), resume).with_start(self.start_position())
    }

    /// Opens the stream, resuming from `resume`, following the [`Session`]'s plan: REST
    /// baselines, the stream (`Last-Event-ID` on Event-Stream), REST backfill (JSON stream,
    /// or Event-Stream without an event id yet), then the flows' user lists.
    ///
    /// The baseline is the position the source starts from, fixed once: when this connect
    /// took one (or moved a position because the server's ids went backwards), the stream
    /// yields the cursor as a [`SourceItem::Cursor`] before anything else, so every later
    /// reconnect resumes from it even when this connection dies before its first event.
    pub async fn connect(&self, resume: Option<FlowdockCursor>) -> Result<FlowdockStream, Error> {
        let mut session = self.session(resume);
        let mut stream = None;
        while let Some(request) = session.poll_request() {
            tracing::debug!(url = %chat_model::redact_url(request.url()), "flowdock: request");
            match self.send(&request).await {
                Err(e) => session.handle_network_error(error_chain(&e)),
                Ok(resp) if request.is_stream() => {
                    session.handle_response(Head::of(&resp).response(&[]), chrono::Utc::now());
                    stream = Some(resp);
                }
                Ok(resp) => match rest_body(resp).await {
                    Ok((head, body)) => {
                        session.handle_response(head.response(&body), chrono::Utc::now())
                    }
                    Err(e) => session.handle_network_error(error_chain(&e)),
                },
            }
            if let Some(start) = session.start_position() {
                lock_ignoring_poison(&self.start).get_or_insert_with(|| start.clone());
            }
        }
        let (Some(resp), None) = (stream, session.error()) else {
            return Err(session.error().cloned().unwrap_or_else(|| Error::Network {
                what: self.describe(),
                detail: "the connection plan ended without opening the stream".to_owned(),
            }));
        };
        // Names of the flows' users, once per connection (best effort, bounded).
        self.names.load_flows(&self.settings.backfill_flows()).await;
        Ok(FlowdockStream {
            resp,
            session,
            names: self.names.clone(),
            read_at: Instant::now(),
        })
    }

    /// Sends one request of the session's plan, authenticated.
    async fn send(&self, request: &Request) -> Result<reqwest::Response, reqwest::Error> {
        let mut req = self
            .http
            .get(request.url())
            .basic_auth(self.cfg.token.expose(), Some(""));
        for (name, value) in request.headers() {
            req = req.header(name, value);
        }
        if let Some(t) = request.timeout() {
            req = req.timeout(t);
        }
        req.send().await
    }

    /// Fetches messages of `flow` (`org/flow`) over REST: those after `since_id` (oldest
    /// first), or the latest `limit` when `since_id` is `None`.
    pub async fn messages(
        &self,
        flow: &str,
        since_id: Option<u64>,
        limit: u32,
    ) -> Result<Vec<WireMessage>, Error> {
        let what = format!("messages of flow {flow}");
        self.messages_raw(flow, since_id, limit)
            .await?
            .into_iter()
            .map(|v| {
                serde_json::from_value(v).map_err(|e| Error::NotJson {
                    what: what.clone(),
                    expected: "a JSON array of messages",
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    /// Like [`Client::messages`], as the JSON objects the server sent.
    pub async fn messages_raw(
        &self,
        flow: &str,
        since_id: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Value>, Error> {
        let url = self.settings.messages_url(flow, since_id, limit)?;
        let request = Request::Backfill {
            flow: flow.to_owned(),
            url,
            since_id,
            limit,
        };
        let what = format!(
            "messages of flow {flow} at {}",
            chat_model::redact_url(request.url())
        );
        let network = |e: reqwest::Error| Error::Network {
            what: what.clone(),
            detail: error_chain(&e),
        };
        let (head, body) = rest_body(self.send(&request).await.map_err(network)?)
            .await
            .map_err(network)?;
        head.response(&body).messages(&what)
    }
}

/// One live Flowdock stream: yields [`SourceItem`]s until it ends with a
/// [`DisconnectReason`].
#[derive(Debug)]
pub struct FlowdockStream {
    resp: reqwest::Response,
    session: Session,
    names: Names,
    /// When the last chunk was read (the time the names of its events are checked at).
    read_at: Instant,
}

impl FlowdockStream {
    /// The next item: backfilled events first, then live events, keep-alives, retry hints
    /// and malformed-frame reports. An error ends the stream
    /// ([`DisconnectReason::EndOfStream`] for a clean end) and is sticky: asking again
    /// returns it again.
    pub async fn next_item(&mut self) -> Result<SourceItem, DisconnectReason> {
        // Bounded: every turn either returns or consumes one chunk of the response.
        loop {
            if let Some(front) = self.session.peek_item_mut() {
                // Names first: put on at once when the cache knows them (the common case),
                // else after at most one lookup, the item staying queued while it waits.
                if !self.names.apply_settled(front, self.read_at) {
                    self.names.prepare(front).await;
                    self.names.apply(front);
                }
                return Ok(self.session.poll_item().expect("the front item"));
            }
            if let Some(e) = self.session.error() {
                return Err(e.to_disconnect_reason());
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => {
                    self.read_at = Instant::now();
                    self.session
                        .handle_chunk(&chunk, self.read_at, chrono::Utc::now())
                }
                Ok(None) => self.session.handle_end(Instant::now()),
                Err(e) => self.session.handle_network_error(error_chain(&e)),
            }
        }
    }

    /// The resume cursor after everything yielded so far.
    pub fn cursor(&self) -> &FlowdockCursor {
        self.session.cursor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(flows: &[&str], private: bool, active: Option<Active>) -> Client {
        let mut cfg = ClientConfig::new(
            "s",
            Secret::new("tok"),
            flows.iter().map(|s| s.to_string()).collect(),
        );
        cfg.settings.url = "http://127.0.0.1:9/".into();
        cfg.settings.private = private;
        cfg.settings.active = active;
        Client::new(cfg).unwrap()
    }

    #[test]
    fn stream_urls() {
        assert_eq!(
            client(&["a/b"], false, None).stream_url(),
            "http://127.0.0.1:9/flows/a/b"
        );
        assert_eq!(
            client(&["a/b", "c/d"], false, Some(Active::Idle)).stream_url(),
            "http://127.0.0.1:9/flows?filter=a/b,c/d&active=idle"
        );
        assert_eq!(
            client(&["a/b"], true, None).stream_url(),
            "http://127.0.0.1:9/flows?filter=a/b&user=1"
        );
        assert_eq!(
            client(&[], true, Some(Active::True)).stream_url(),
            "http://127.0.0.1:9/flows?user=1&active=true"
        );
        assert_eq!(
            client(&["0f8b0c5e-flow-id"], false, None).stream_url(),
            "http://127.0.0.1:9/flows?filter=0f8b0c5e-flow-id"
        );
    }

    #[test]
    fn config_errors() {
        let cfg = ClientConfig::new("s", Secret::new("t"), vec![]);
        assert!(matches!(Client::new(cfg), Err(Error::NoFlows)));
        let cfg = ClientConfig::new("s", Secret::new("t"), vec![" ".into()]);
        assert!(matches!(Client::new(cfg), Err(Error::BadFlow { flow, .. }) if flow == " "));
        let cfg = ClientConfig::new("s", Secret::new(""), vec!["a/b".into()]);
        assert!(matches!(Client::new(cfg), Err(Error::EmptyToken)));
        let mut cfg = ClientConfig::new("s", Secret::new("t"), vec!["a/b".into()]);
        cfg.settings.url = "ftp://x".into();
        let e = Client::new(cfg).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidUrl { what: "url", reason, .. } if reason.contains("scheme")),
            "{e}"
        );
    }

    #[test]
    fn real_api_host_is_derived() {
        let c = Client::new(ClientConfig::new("s", Secret::new("t"), vec!["a/b".into()])).unwrap();
        assert_eq!(c.api_url(), "https://api.flowdock.com/");
        assert!(c.describe().contains("flow a/b"));
    }
}
