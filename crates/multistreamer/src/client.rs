//! The async client: one WebSocket connection to `{url}/ws/{stream}?token=...`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chat_model::{Secret, SourceItem, redact_url};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::Error;
use crate::session::{Liveness, LivenessAction, Session};
use crate::wire::{ClientMessage, ServerMessage, Status};

/// Default interval of silence after which the client pings.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(15);
/// Default time a ping may go unanswered before the connection counts as dead.
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for connecting (TCP, TLS and the WebSocket upgrade together).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default largest message accepted from the server.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

/// Where and how to connect. `Debug` never shows the token.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Base URL: `ws://host`, `wss://host` (`http`/`https` are taken as `ws`/`wss`); a path
    /// prefix is kept.
    pub url: String,
    /// The stream id.
    pub stream: u64,
    /// The access token, sent as the `token` query parameter.
    pub token: Secret,
    /// The `source` name put on events.
    pub source: String,
    /// TLS settings for `wss://` (None: public web roots, `ring` provider).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Ping after this much silence.
    pub ping_interval: Duration,
    /// A ping unanswered this long ends the connection as stalled.
    pub pong_timeout: Duration,
    /// Limit for establishing the connection.
    pub connect_timeout: Duration,
    /// Largest message accepted; a larger one ends the connection with a protocol error.
    pub max_message_size: usize,
    /// Ask for the viewer count this often (never when None).
    pub viewcount_interval: Option<Duration>,
    /// The status snapshot already reported by an earlier connection: an identical first
    /// status is not emitted again.
    pub known_status: Option<Status>,
}

impl ConnectOptions {
    /// Options with the defaults for everything but the URL, stream and token.
    pub fn new(url: impl Into<String>, stream: u64, token: Secret) -> Self {
        ConnectOptions {
            url: url.into(),
            stream,
            token,
            source: "multistreamer".to_owned(),
            tls: None,
            ping_interval: DEFAULT_PING_INTERVAL,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            viewcount_interval: None,
            known_status: None,
        }
    }

    /// Fits the ping schedule inside `stall_timeout` (the watchdog's limit on silence), as
    /// [`crate::schedule_for_stall_timeout`] says: a quiet but healthy connection then always
    /// has a pong (a keep-alive) before the watchdog fires, and a dead one is declared dead
    /// before it.
    pub fn fit_stall_timeout(&mut self, stall_timeout: Duration) {
        let (ping, pong) = crate::schedule_for_stall_timeout(stall_timeout);
        self.ping_interval = ping;
        self.pong_timeout = pong;
    }

    /// The full WebSocket URL, token included: for the wire only, never to print.
    pub fn endpoint(&self) -> Result<url::Url, Error> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact_url(&self.url),
            reason,
        };
        let mut url = url::Url::parse(self.url.trim()).map_err(|e| invalid(e.to_string()))?;
        let scheme = match url.scheme() {
            "ws" | "http" => "ws",
            "wss" | "https" => "wss",
            other => {
                return Err(invalid(format!(
                    "scheme {other:?} is not ws or wss (use ws://host or wss://host)"
                )));
            }
        };
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it has no host".to_owned()));
        }
        url.set_scheme(scheme)
            .map_err(|()| invalid(format!("cannot use scheme {scheme}")))?;
        let path = format!("{}/ws/{}", url.path().trim_end_matches('/'), self.stream);
        url.set_path(&path);
        url.set_fragment(None);
        url.query_pairs_mut()
            .clear()
            .append_pair("token", self.token.expose());
        Ok(url)
    }

    /// "multistreamer stream N at URL" with the token redacted, for messages.
    pub fn target(&self) -> String {
        let shown = match self.endpoint() {
            Ok(url) => redact_url(url.as_str()),
            Err(_) => redact_url(&self.url),
        };
        format!("multistreamer stream {} at {shown}", self.stream)
    }
}

/// A cloneable handle that queues messages for a [`Connection`] to send from its read loop.
#[derive(Clone, Debug)]
pub struct Handle {
    tx: mpsc::Sender<ClientMessage>,
}

/// The connection behind a [`Handle`] is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the multistreamer connection is closed")]
pub struct HandleClosed;

impl Handle {
    /// Queues a message; it is sent the next time the connection is polled.
    pub async fn send(&self, msg: ClientMessage) -> Result<(), HandleClosed> {
        self.tx.send(msg).await.map_err(|_| HandleClosed)
    }

    /// Queues a `viewcount` request.
    pub async fn request_viewcount(&self) -> Result<(), HandleClosed> {
        self.send(ClientMessage::ViewCount).await
    }

    /// Queues a `status` request.
    pub async fn request_status(&self) -> Result<(), HandleClosed> {
        self.send(ClientMessage::Status).await
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One open WebSocket connection to a stream, yielding [`SourceItem`]s.
///
/// It answers server pings (by reading), pings after [`ConnectOptions::ping_interval`] of
/// silence and fails with [`Error::Stalled`] when no frame follows within
/// [`ConnectOptions::pong_timeout`]. Keep calling [`Connection::next_item`].
pub struct Connection {
    ws: Ws,
    session: Session,
    liveness: Liveness,
    queue: VecDeque<SourceItem>,
    commands: mpsc::Receiver<ClientMessage>,
    handle: Handle,
    target: String,
    secret: Secret,
    failed: Option<Error>,
    viewcount_interval: Option<Duration>,
    next_viewcount: Option<Instant>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target)
            .field("status", &self.session.status())
            .field("queued", &self.queue.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Connects, and sends `{"type":"status"}` as the web client does.
pub async fn connect(opts: &ConnectOptions) -> Result<Connection, Error> {
    let url = opts.endpoint()?;
    let target = opts.target();
    let connector = if url.scheme() == "wss" {
        Connector::Rustls(match &opts.tls {
            Some(c) => c.clone(),
            None => crate::tls::client_config(&[]).map_err(|e| Error::Tls(e.to_string()))?,
        })
    } else {
        Connector::Plain
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(opts.max_message_size))
        .max_frame_size(Some(opts.max_message_size));
    tracing::debug!(target = %target, "connecting");
    let attempt = tokio_tungstenite::connect_async_tls_with_config(
        url.as_str(),
        Some(config),
        true,
        Some(connector),
    );
    let ws = match tokio::time::timeout(opts.connect_timeout, attempt).await {
        Err(_) => {
            return Err(Error::ConnectTimeout {
                target,
                timeout: opts.connect_timeout,
            });
        }
        Ok(Err(e)) => return Err(handshake_error(e, &target, &opts.token)),
        Ok(Ok((ws, _response))) => ws,
    };
    let (tx, rx) = mpsc::channel(32);
    let now = Instant::now();
    let mut conn = Connection {
        ws,
        session: Session::new(opts.source.clone(), opts.stream, opts.known_status.clone()),
        liveness: Liveness::new(opts.ping_interval, opts.pong_timeout, now.into_std()),
        queue: VecDeque::new(),
        commands: rx,
        handle: Handle { tx },
        target,
        secret: opts.token.clone(),
        failed: None,
        viewcount_interval: opts.viewcount_interval,
        next_viewcount: opts.viewcount_interval.map(|_| now),
    };
    conn.send(&ClientMessage::Status).await?;
    tracing::debug!(target = %conn.target, "connected");
    Ok(conn)
}

fn scrub(message: String, token: &Secret) -> String {
    let t = token.expose();
    if t.len() >= 4 && message.contains(t) {
        message.replace(t, "[redacted]")
    } else {
        message
    }
}

fn handshake_error(e: tungstenite::Error, target: &str, token: &Secret) -> Error {
    match e {
        tungstenite::Error::Http(response) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| chat_model::parse_retry_after(v, std::time::SystemTime::now()));
            Error::Http {
                target: target.to_owned(),
                status: response.status().as_u16(),
                retry_after,
            }
        }
        other => Error::Connect {
            target: target.to_owned(),
            message: scrub(describe(&other), token),
        },
    }
}

fn describe(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Io(io) => format!("{} ({:?})", io, io.kind()),
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::HandshakeIncomplete) => {
            "the server closed the connection during the WebSocket handshake".to_owned()
        }
        other => other.to_string(),
    }
}

impl Connection {
    /// The next item: an event, a keep-alive (any frame, ping or pong that carried no event)
    /// or a malformed-frame notice. An error ends the connection; later calls repeat it.
    pub async fn next_item(&mut self) -> Result<SourceItem, Error> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Ok(item);
            }
            self.pump().await?;
        }
    }

    /// Reads until the next typed server message (the item it produced stays queued for
    /// [`Connection::next_item`]).
    pub async fn next_message(&mut self) -> Result<ServerMessage, Error> {
        loop {
            if let Some(msg) = self.pump().await? {
                return Ok(msg);
            }
        }
    }

    /// The latest status snapshot received on this connection.
    pub fn status(&self) -> Option<&Status> {
        self.session.status()
    }

    /// A handle that can queue messages from other tasks.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The stream and its redacted URL, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The stream id.
    pub fn stream(&self) -> u64 {
        self.session.stream()
    }

    /// Sends one message now.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.ws.send(Message::Text(msg.to_json().into())).await;
        if let Err(e) = r {
            let err = self.read_error(e);
            self.failed = Some(err.clone());
            return Err(err);
        }
        Ok(())
    }

    /// Asks for the viewer count; the answers arrive as [`chat_model::Kind::Viewers`] events.
    pub async fn request_viewcount(&mut self) -> Result<(), Error> {
        self.send(&ClientMessage::ViewCount).await
    }

    /// Asks for a status message.
    pub async fn request_status(&mut self) -> Result<(), Error> {
        self.send(&ClientMessage::Status).await
    }

    /// Waits up to `timeout` for a status snapshot (returns at once when one was received).
    pub async fn wait_status(&mut self, timeout: Duration) -> Result<Status, crate::SendError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status() {
                return Ok(s.clone());
            }
            match tokio::time::timeout_at(deadline, self.pump()).await {
                Err(_) => {
                    return Err(crate::SendError::NoStatus {
                        target: self.target.clone(),
                        timeout,
                    });
                }
                Ok(r) => {
                    r?;
                }
            }
        }
    }

    /// Closes the connection politely (bounded to one second).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }

    pub(crate) fn last_queued(&self) -> Option<&SourceItem> {
        self.queue.back()
    }

    /// One step: a frame, a queued command, a ping or a periodic request.
    pub(crate) async fn pump(&mut self) -> Result<Option<ServerMessage>, Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.step().await;
        if let Err(e) = &r {
            tracing::debug!(target = %self.target, error = %e, "connection ended");
            self.failed = Some(e.clone());
        }
        r
    }

    async fn step(&mut self) -> Result<Option<ServerMessage>, Error> {
        let ping_at = Instant::from_std(self.liveness.next_deadline());
        let viewcount_at = self.next_viewcount;
        tokio::select! {
            biased;
            frame = self.ws.next() => self.on_frame(frame),
            Some(cmd) = self.commands.recv() => {
                self.send(&cmd).await?;
                Ok(None)
            }
            _ = tokio::time::sleep_until(ping_at) => {
                match self.liveness.poll(Instant::now().into_std()) {
                    Some(LivenessAction::SendPing) => {
                        tracing::trace!(target = %self.target, "ping");
                        if let Err(e) = self.ws.send(Message::Ping(Vec::new().into())).await {
                            return Err(self.read_error(e));
                        }
                        Ok(None)
                    }
                    Some(LivenessAction::Stalled(idle)) => Err(Error::Stalled {
                        target: self.target.clone(),
                        idle,
                        deadline: self.liveness.deadline(),
                    }),
                    None => Ok(None),
                }
            }
            _ = sleep_until_opt(viewcount_at) => {
                self.next_viewcount = self.viewcount_interval.map(|d| Instant::now() + d);
                self.send(&ClientMessage::ViewCount).await?;
                Ok(None)
            }
        }
    }

    fn on_frame(
        &mut self,
        frame: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<Option<ServerMessage>, Error> {
        let msg = match frame {
            None => {
                return Err(Error::Closed {
                    target: self.target.clone(),
                    code: None,
                    reason: String::new(),
                });
            }
            Some(Err(e)) => return Err(self.read_error(e)),
            Some(Ok(m)) => m,
        };
        self.liveness.on_frame(Instant::now().into_std());
        match msg {
            Message::Text(text) => {
                let received = self.session.on_text(text.as_str(), chrono::Utc::now());
                if let SourceItem::Malformed { error } = &received.item {
                    tracing::debug!(target = %self.target, "{error}");
                }
                self.queue.push_back(received.item);
                Ok(received.message)
            }
            Message::Binary(b) => {
                let item = self.session.on_binary(b.len());
                if let SourceItem::Malformed { error } = &item {
                    tracing::debug!(target = %self.target, "{error}");
                }
                self.queue.push_back(item);
                Ok(None)
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                self.queue.push_back(SourceItem::KeepAlive);
                Ok(None)
            }
            Message::Close(frame) => Err(Error::Closed {
                target: self.target.clone(),
                code: frame.as_ref().map(|f| u16::from(f.code)),
                reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            }),
        }
    }

    fn read_error(&self, e: tungstenite::Error) -> Error {
        use tungstenite::Error as E;
        use tungstenite::error::ProtocolError as P;
        let target = self.target.clone();
        match e {
            E::ConnectionClosed | E::AlreadyClosed => Error::Closed {
                target,
                code: None,
                reason: String::new(),
            },
            E::Io(io) => Error::Network {
                target,
                message: scrub(format!("{io} ({:?})", io.kind()), &self.secret),
            },
            E::Protocol(P::ResetWithoutClosingHandshake) => Error::Network {
                target,
                message: "the connection was cut without a closing handshake".to_owned(),
            },
            E::Capacity(c) => Error::Protocol {
                target,
                message: format!("message over the size limit: {c}"),
            },
            other => Error::Protocol {
                target,
                message: scrub(other.to_string(), &self.secret),
            },
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_builds_the_documented_url() {
        let o = ConnectOptions::new("ws://example.com", 21, Secret::new("s3cr3t&x"));
        assert_eq!(
            o.endpoint().unwrap().as_str(),
            "ws://example.com/ws/21?token=s3cr3t%26x"
        );
        let o = ConnectOptions::new("https://example.com/ms/", 7, Secret::new("abc"));
        assert_eq!(
            o.endpoint().unwrap().as_str(),
            "wss://example.com/ms/ws/7?token=abc"
        );
        assert_eq!(
            o.target(),
            "multistreamer stream 7 at wss://example.com/ms/ws/7?token=[redacted]"
        );
    }

    #[test]
    fn bad_urls_are_clear_and_redacted() {
        let e = ConnectOptions::new("ftp://h", 1, Secret::new("abcd"))
            .endpoint()
            .unwrap_err();
        assert!(e.to_string().contains("not ws or wss"), "{e}");
        let e = ConnectOptions::new("not a url?token=abcdef", 1, Secret::new("abcdef"))
            .endpoint()
            .unwrap_err();
        assert!(!e.to_string().contains("abcdef"), "{e}");
    }

    #[test]
    fn debug_hides_the_token() {
        let o = ConnectOptions::new("ws://h", 1, Secret::new("topsecret"));
        assert!(!format!("{o:?}").contains("topsecret"));
    }

    #[test]
    fn scrub_removes_the_token() {
        let s = Secret::new("topsecret");
        assert_eq!(
            scrub("GET /ws/1?token=topsecret failed".into(), &s),
            "GET /ws/1?token=[redacted] failed"
        );
    }
}
