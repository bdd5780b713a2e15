//! The async client: a thin reqwest driver around [`StreamDecoder`].

use std::collections::VecDeque;
use std::time::Duration;

use chat_model::{DisconnectReason, Secret, SourceItem, redact_url};
use reqwest::header::ACCEPT;
use serde_json::Value;

use crate::error::Error;
use crate::http::{check_response, encode_query, encode_segment};
use crate::mapping::normalize_flow;
use crate::session::{FlowdockCursor, StreamDecoder, Transport};
use crate::users::Names;
use crate::wire::WireMessage;
use chat_model::error_chain;

/// The real streaming host.
pub const DEFAULT_STREAM_URL: &str = "https://stream.flowdock.com";
/// The real REST host (backfill).
pub const DEFAULT_API_URL: &str = "https://api.flowdock.com";
/// The most messages the REST API returns per request (its `limit` is 1-100).
pub const MAX_BACKFILL_LIMIT: u32 = 100;
/// How many backfill pages one reconnect fetches at most per flow.
pub const MAX_BACKFILL_PAGES: usize = 50;

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

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The `source` name put on every event.
    pub source: String,
    /// Streaming base URL (default [`DEFAULT_STREAM_URL`]).
    pub url: String,
    /// REST base URL for backfill (None: [`DEFAULT_API_URL`] for the real host, else `url`).
    pub api_url: Option<String>,
    /// The access token (HTTP basic user, empty password).
    pub token: Secret,
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
            source: source.into(),
            url: DEFAULT_STREAM_URL.to_owned(),
            api_url: None,
            token,
            flows,
            private: false,
            active: None,
            transport: Transport::EventStream,
            max_frame: 1024 * 1024,
            backfill_limit: MAX_BACKFILL_LIMIT,
            resolve_names: true,
            user_lookup_timeout: Duration::from_secs(5),
        }
    }
}

/// A Flowdock streaming client; cheap to clone, one [`Client::connect`] per connection.
#[derive(Clone, Debug)]
pub struct Client {
    cfg: ClientConfig,
    http: reqwest::Client,
    base: url::Url,
    api: url::Url,
    /// The start position taken by the first connect without a resume cursor, reused by every
    /// later one (shared by clones), so a first connection that dies before it answers does not
    /// move the start.
    start: std::sync::Arc<std::sync::Mutex<Option<FlowdockCursor>>>,
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
            .map_err(Error::Client)?;
        Client::with_http_client(cfg, http)
    }

    /// Checks the settings and uses `http` (shared, or trusting extra roots) for every request.
    pub fn with_http_client(cfg: ClientConfig, http: reqwest::Client) -> Result<Client, Error> {
        if cfg.flows.is_empty() && !cfg.private {
            return Err(Error::NoFlows);
        }
        if let Some(bad) = cfg.flows.iter().find(|f| f.trim().is_empty()) {
            return Err(Error::BadFlow {
                flow: bad.clone(),
                problem: "is empty",
            });
        }
        if cfg.token.is_empty() {
            return Err(Error::EmptyToken);
        }
        let parse = |what: &'static str, s: &str| {
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
        };
        let base = parse("url", &cfg.url)?;
        let api = match &cfg.api_url {
            Some(a) => parse("api_url", a)?,
            None if base.host_str() == Some("stream.flowdock.com") => {
                parse("api_url", DEFAULT_API_URL)?
            }
            None => base.clone(),
        };
        let names = Names::new(
            http.clone(),
            api.clone(),
            cfg.token.clone(),
            cfg.source.clone(),
            cfg.user_lookup_timeout.max(Duration::from_millis(1)),
            cfg.resolve_names,
        );
        Ok(Client {
            cfg,
            http,
            base,
            api,
            start: Default::default(),
            names,
        })
    }

    /// The start position fixed by the first connect without a resume cursor, if any.
    pub fn start_position(&self) -> Option<FlowdockCursor> {
        self.start.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The REST base URL backfill and baselines use.
    pub fn api_url(&self) -> &str {
        self.api.as_str()
    }

    /// The user names of this client (cached across its connections).
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The streaming URL: `/flows/:org/:flow` for exactly one `org/flow` and no private
    /// stream, else `/flows?filter=...` (with `user=1`); plus `active` when set. The token is
    /// never in it.
    pub fn stream_url(&self) -> String {
        let base = self.base.as_str().trim_end_matches('/');
        let mut params = Vec::new();
        let single = match self.cfg.flows.as_slice() {
            [flow] if !self.cfg.private => flow
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
                if !self.cfg.flows.is_empty() {
                    params.push(format!(
                        "filter={}",
                        encode_query(&self.cfg.flows.join(","))
                    ));
                }
                if self.cfg.private {
                    params.push("user=1".to_owned());
                }
                format!("{base}/flows")
            }
        };
        if let Some(active) = self.cfg.active {
            params.push(format!("active={}", active.as_str()));
        }
        if params.is_empty() {
            path
        } else {
            format!("{path}?{}", params.join("&"))
        }
    }

    /// Names what this client streams, for errors: `flows a/b, c/d (+ private) at URL`.
    pub fn describe(&self) -> String {
        let mut what = if self.cfg.flows.is_empty() {
            "private messages".to_owned()
        } else {
            let mut w = format!(
                "flow{} {}",
                if self.cfg.flows.len() == 1 { "" } else { "s" },
                self.cfg.flows.join(", ")
            );
            if self.cfg.private {
                w.push_str(" and private messages");
            }
            w
        };
        what.push_str(&format!(" at {}", redact_url(&self.stream_url())));
        what
    }

    /// Opens the stream, resuming from `resume`.
    ///
    /// Event-Stream: sends `Last-Event-ID` so the server replays what was missed. JSON stream:
    /// takes a per-flow baseline (latest message id) for flows the cursor does not know yet,
    /// opens the stream, then backfills every flow over REST (`since_id`) so missed messages
    /// come first, in order, before the live ones (duplicates dropped by id). Event-Stream
    /// without an event id yet (first connection, or a drop before the first event) does the
    /// same, best effort: REST failures are logged and the live stream goes on.
    ///
    /// The baseline is the position the source starts from, fixed once: when this connect
    /// took one (or moved a position because the server's ids went backwards), the stream
    /// yields the cursor as a [`SourceItem::Cursor`] before anything else, so every later
    /// reconnect resumes from it even when this connection dies before its first event.
    pub async fn connect(&self, resume: Option<FlowdockCursor>) -> Result<FlowdockStream, Error> {
        let fresh = resume.is_none();
        let resumed = match resume {
            Some(r) => r,
            None => self.start_position().unwrap_or_default(),
        };
        let mut cursor = resumed.clone();
        let transport = self.cfg.transport;
        let mut aliases = Vec::new();
        // The server's latest id per flow: the baseline of a flow the cursor does not know
        // yet, and a check of the ones it knows (ids below the cursor: the server reset).
        // The JSON stream needs it (an error fails the connect); Event-Stream uses it for a
        // REST resume while it has no event id yet, and for the check, best effort.
        for flow in self.backfill_flows() {
            let known = cursor.last_message_id.get(&flow).copied();
            let needed = transport == Transport::Json || cursor.last_event_id.is_none();
            match self.messages_raw(&flow, None, 1).await {
                Ok(latest) => {
                    let mut top = None;
                    for raw in latest {
                        if let Ok(m) = serde_json::from_value::<WireMessage>(raw) {
                            if let Some(reference) = m.flow.clone() {
                                aliases.push((reference, flow.clone()));
                            }
                            top = top.max(m.id_u64());
                        }
                    }
                    let top = top.unwrap_or(0);
                    match known {
                        // With an SSE event id, Last-Event-ID replays what was missed: a REST
                        // baseline taken now would mark the replay as already delivered.
                        None if needed => {
                            cursor.last_message_id.insert(flow.clone(), top);
                        }
                        None => {}
                        Some(mine) if top < mine => {
                            tracing::warn!(
                                source = %self.cfg.source,
                                flow = %flow,
                                cursor_id = mine,
                                server_id = top,
                                "flowdock: the server's message ids went backwards in flow {flow} \
                                 (latest {top}, below the {mine} already delivered; server reset?); \
                                 resuming from the server's position"
                            );
                            cursor.last_message_id.insert(flow.clone(), top);
                            // Its event ids are the old server's too.
                            cursor.last_event_id = None;
                        }
                        Some(_) => {}
                    }
                }
                Err(e) if transport == Transport::Json => return Err(e),
                Err(e) if needed => tracing::warn!(
                    source = %self.cfg.source,
                    flow = %flow,
                    error = %e,
                    "flowdock: no REST position for the flow; a drop before the first event may lose messages"
                ),
                Err(e) => tracing::debug!(
                    source = %self.cfg.source,
                    flow = %flow,
                    error = %e,
                    "flowdock: cannot check the flow's REST position; resuming with Last-Event-ID"
                ),
            }
        }
        if fresh {
            let mut start = self.start.lock().unwrap_or_else(|e| e.into_inner());
            if start.is_none() {
                *start = Some(cursor.clone());
            }
        }
        let rest_resume = transport == Transport::Json || cursor.last_event_id.is_none();
        let what = self.describe();
        let mut req = self
            .http
            .get(self.stream_url())
            .basic_auth(self.cfg.token.expose(), Some(""))
            .header(ACCEPT, transport.accept());
        if transport == Transport::EventStream {
            if let Some(id) = cursor.last_event_id.as_deref().filter(|i| !i.is_empty()) {
                req = req.header("Last-Event-ID", id);
            }
        }
        tracing::debug!(url = %redact_url(&self.stream_url()), ?transport, "flowdock: connecting");
        let resp = req.send().await.map_err(|e| Error::Network {
            what: what.clone(),
            detail: error_chain(&e),
        })?;
        check_response(&resp, &what, transport.accept())?;
        let changed = cursor != resumed;
        let mut dec = StreamDecoder::new(
            self.cfg.source.clone(),
            transport,
            cursor,
            self.cfg.max_frame,
        );
        if let ([flow], false) = (self.cfg.flows.as_slice(), self.cfg.private) {
            dec.set_only_flow(Some(normalize_flow(flow)));
        }
        for (reference, flow) in &aliases {
            dec.learn_alias(reference, flow);
        }
        let mut pending = VecDeque::new();
        if changed || fresh {
            // The start position, fixed before any event of this connection.
            pending.push_back(SourceItem::Cursor(dec.cursor().to_cursor()));
        }
        if rest_resume {
            match self.backfill(&mut dec, &mut pending).await {
                Ok(()) => {}
                Err(e) if transport == Transport::Json => return Err(e),
                Err(e) => tracing::warn!(
                    source = %self.cfg.source,
                    error = %e,
                    "flowdock: REST backfill failed; going on with the live stream"
                ),
            }
        }
        // Names of the flows' users, once per connection (best effort, bounded).
        self.names.load_flows(&self.backfill_flows()).await;
        Ok(FlowdockStream {
            resp,
            dec,
            pending,
            what,
            ended: false,
            names: self.names.clone(),
        })
    }

    /// The configured flows that can be backfilled over REST (those written `org/flow`).
    fn backfill_flows(&self) -> Vec<String> {
        self.cfg
            .flows
            .iter()
            .filter(|f| f.split('/').filter(|p| !p.is_empty()).count() == 2)
            .cloned()
            .collect()
    }

    async fn backfill(
        &self,
        dec: &mut StreamDecoder,
        out: &mut VecDeque<SourceItem>,
    ) -> Result<(), Error> {
        let limit = self.cfg.backfill_limit.clamp(1, MAX_BACKFILL_LIMIT);
        for flow in self.backfill_flows() {
            // Only flows with a known position: never replay a whole history.
            let Some(mut since) = dec.cursor().last_message_id.get(&flow).copied() else {
                continue;
            };
            for _page in 0..MAX_BACKFILL_PAGES {
                let page = self.messages_raw(&flow, Some(since), limit).await?;
                let n = page.len();
                let now = chrono::Utc::now();
                let mut msgs: Vec<(WireMessage, Value)> = Vec::with_capacity(n);
                for raw in page {
                    match serde_json::from_value::<WireMessage>(raw.clone()) {
                        Ok(m) => msgs.push((m, raw)),
                        Err(e) => out.push_back(SourceItem::Malformed {
                            error: format!("flowdock backfill of {flow}: bad message ({e})"),
                        }),
                    }
                }
                msgs.sort_by_key(|(m, _)| m.id_u64().unwrap_or(0));
                let delivered = msgs.len();
                // The next page starts after the newest id of this one: the page's own ids,
                // not a lookup that another naming of the flow could leave behind.
                let next = msgs
                    .iter()
                    .filter_map(|(m, _)| m.id_u64())
                    .max()
                    .unwrap_or(since);
                for (m, raw) in msgs {
                    dec.deliver_backfilled(&flow, m, raw, now, out);
                }
                tracing::debug!(flow, since, delivered, "flowdock: backfilled");
                if n < limit as usize || next <= since {
                    break;
                }
                since = next;
            }
        }
        Ok(())
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
        let (org, name) = flow.split_once('/').ok_or_else(|| Error::BadFlow {
            flow: flow.to_owned(),
            problem: "is not written org/flow",
        })?;
        let mut url = format!(
            "{}/flows/{}/{}/messages?limit={}",
            self.api.as_str().trim_end_matches('/'),
            encode_segment(org),
            encode_segment(name),
            limit.clamp(1, MAX_BACKFILL_LIMIT)
        );
        if let Some(since) = since_id {
            url.push_str(&format!("&since_id={since}&sort=asc"));
        }
        let what = format!("messages of flow {flow} at {}", redact_url(&url));
        let resp = self
            .http
            .get(&url)
            .basic_auth(self.cfg.token.expose(), Some(""))
            .header(ACCEPT, "application/json")
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| Error::Network {
                what: what.clone(),
                detail: error_chain(&e),
            })?;
        check_response(&resp, &what, "application/json")?;
        let body = resp.bytes().await.map_err(|e| Error::Network {
            what: what.clone(),
            detail: error_chain(&e),
        })?;
        serde_json::from_slice::<Vec<Value>>(&body).map_err(|e| Error::NotJson {
            what,
            expected: "a JSON array of messages",
            detail: e.to_string(),
        })
    }
}

/// One live Flowdock stream: yields [`SourceItem`]s until it ends with a
/// [`DisconnectReason`].
#[derive(Debug)]
pub struct FlowdockStream {
    resp: reqwest::Response,
    dec: StreamDecoder,
    pending: VecDeque<SourceItem>,
    what: String,
    ended: bool,
    names: Names,
}

impl FlowdockStream {
    /// The next item: backfilled events first, then live events, keep-alives, retry hints
    /// and malformed-frame reports. An error ends the stream
    /// ([`DisconnectReason::EndOfStream`] for a clean end).
    pub async fn next_item(&mut self) -> Result<SourceItem, DisconnectReason> {
        // Bounded: every turn either returns or consumes one chunk of the response.
        loop {
            if let Some(front) = self.pending.front() {
                // Names first (at most one lookup); the item stays queued while it waits.
                self.names.prepare(front).await;
                let mut item = self.pending.pop_front().expect("the front item");
                self.names.apply(&mut item);
                return Ok(item);
            }
            if self.ended {
                return Err(DisconnectReason::EndOfStream);
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.dec.feed(&chunk, chrono::Utc::now(), &mut self.pending),
                Ok(None) => {
                    self.ended = true;
                    let partial = self.dec.buffered_len();
                    if partial > 0 {
                        return Err(DisconnectReason::Network(format!(
                            "the stream of {} ended in the middle of a frame ({partial} bytes unfinished)",
                            self.what
                        )));
                    }
                    self.dec.finish(chrono::Utc::now(), &mut self.pending);
                }
                Err(e) => {
                    self.ended = true;
                    return Err(DisconnectReason::Network(format!(
                        "the stream of {} was cut: {}",
                        self.what,
                        error_chain(&e)
                    )));
                }
            }
        }
    }

    /// The resume cursor after everything yielded so far.
    pub fn cursor(&self) -> &FlowdockCursor {
        self.dec.cursor()
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
        cfg.url = "http://127.0.0.1:9/".into();
        cfg.private = private;
        cfg.active = active;
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
        cfg.url = "ftp://x".into();
        let e = Client::new(cfg).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidUrl { what: "url", reason, .. } if reason.contains("scheme")),
            "{e}"
        );
    }

    #[test]
    fn real_api_host_is_derived() {
        let c = Client::new(ClientConfig::new("s", Secret::new("t"), vec!["a/b".into()])).unwrap();
        assert_eq!(c.api.as_str(), "https://api.flowdock.com/");
        assert!(c.describe().contains("flow a/b"));
    }
}
