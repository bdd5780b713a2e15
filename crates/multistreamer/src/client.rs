//! The async client: the IO loop of one WebSocket connection to `{url}/ws/{stream}?token=...`
//! over tokio-tungstenite, driving a [`Session`].

use std::pin::Pin;
use std::time::Duration;

use chat_model::{Secret, SourceItem};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::session::{Frame, Session, Transmit};
use crate::wire::{ClientMessage, ServerMessage, Status};
use crate::{ConnectOptions, Error, SendConfirmation, SendError, SendRequest};

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

/// How much one read from the socket may take.
const READ_BUFFER: usize = 128 * 1024;

/// One open WebSocket connection to a stream, yielding [`SourceItem`]s: the IO loop around a
/// [`Session`].
///
/// It answers server pings (by reading), pings after [`ConnectOptions::ping_interval`] of
/// silence and fails with [`Error::Stalled`] when no frame follows within
/// [`ConnectOptions::pong_timeout`]. Keep calling [`Connection::next_item`].
pub struct Connection {
    ws: Ws,
    session: Session,
    commands: mpsc::Receiver<ClientMessage>,
    handle: Handle,
    secret: Secret,
    /// The one timer of the connection, armed for `armed`.
    timer: Pin<Box<Sleep>>,
    /// When `timer` fires, if it is armed. It is moved only to an earlier deadline: when the
    /// session's deadline moves later (every frame moves the ping deadline), the timer fires
    /// early, finds nothing due and is armed again.
    armed: Option<Instant>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target())
            .field("status", &self.session.status())
            .field("failed", &self.session.error())
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
    // Reads of up to READ_BUFFER bytes take hundreds of chat frames per system call; the
    // buffer grows past that only for a message that is larger, within the size limit.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
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
    let mut session = Session::new(opts.session_config(), opts.known_status.clone());
    session.handle_open(now());
    let mut conn = Connection {
        ws,
        session,
        commands: rx,
        handle: Handle { tx },
        secret: opts.token.clone(),
        timer: Box::pin(tokio::time::sleep_until(Instant::now())),
        armed: None,
    };
    conn.flush().await?;
    tracing::debug!(target = %conn.target(), "connected");
    Ok(conn)
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
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
            if let Some(item) = self.session.poll_item() {
                if let SourceItem::Malformed { error } = &item {
                    tracing::debug!(target = %self.target(), "{error}");
                }
                return Ok(item);
            }
            self.pump(false).await?;
        }
    }

    /// Reads until the next typed server message (the item it produced stays queued for
    /// [`Connection::next_item`]).
    pub async fn next_message(&mut self) -> Result<ServerMessage, Error> {
        loop {
            if let Some(msg) = self.pump(true).await? {
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
        &self.session.config().target
    }

    /// The stream id.
    pub fn stream(&self) -> u64 {
        self.session.stream()
    }

    /// Sends one message now.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), Error> {
        self.session.queue(msg.clone());
        self.flush().await
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
            match tokio::time::timeout_at(deadline, self.pump(false)).await {
                Err(_) => {
                    return Err(crate::SendError::NoStatus {
                        target: self.target().to_owned(),
                        timeout,
                    });
                }
                Ok(r) => {
                    r?;
                }
            }
        }
    }

    /// Sends one chat message and waits for its outcome, all within `timeout`, as
    /// [`Session::send_chat`] describes. Events read meanwhile stay queued for
    /// [`Connection::next_item`].
    pub async fn send_chat(
        &mut self,
        req: &SendRequest,
        timeout: Duration,
    ) -> Result<SendConfirmation, SendError> {
        let id = self.session.send_chat(req.clone(), timeout, now());
        loop {
            if let Some(outcome) = self.session.poll_send(id) {
                return outcome;
            }
            if let Err(e) = self.pump(false).await {
                return self.session.poll_send(id).unwrap_or(Err(e.into()));
            }
        }
    }

    /// Closes the connection politely (bounded to one second).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }

    /// Writes everything the session has to send.
    async fn flush(&mut self) -> Result<(), Error> {
        while let Some(t) = self.session.poll_transmit() {
            let msg = match t {
                Transmit::Message(m) => Message::Text(m.to_json().into()),
                Transmit::Ping => Message::Ping(Vec::new().into()),
            };
            if let Err(e) = self.ws.send(msg).await {
                let e = self.io_error(e);
                self.session.handle_failure(e);
            }
        }
        self.session.error().map_or(Ok(()), |e| Err(e.clone()))
    }

    /// One step of IO: a frame, a queued command or a timer, then the writes it caused.
    /// Returns the typed message a frame carried when `want_message`.
    async fn pump(&mut self, want_message: bool) -> Result<Option<ServerMessage>, Error> {
        self.flush().await?;
        self.arm();
        let mut message = None;
        tokio::select! {
            biased;
            frame = self.ws.next() => match frame {
                None => self.session.handle_end(now()),
                Some(Err(e)) => {
                    let e = self.io_error(e);
                    self.session.handle_failure(e);
                }
                Some(Ok(m)) => {
                    let frame = match &m {
                        Message::Text(t) => Frame::Text(t.as_str()),
                        Message::Binary(b) => Frame::Binary(b),
                        Message::Ping(p) => Frame::Ping(p),
                        Message::Pong(p) => Frame::Pong(p),
                        // Raw frames are never read; count them as pongs.
                        Message::Frame(_) => Frame::Pong(&[]),
                        Message::Close(c) => Frame::Close {
                            code: c.as_ref().map(|f| u16::from(f.code)),
                            reason: c.as_ref().map_or("", |f| f.reason.as_str()),
                        },
                    };
                    if want_message {
                        message = self.session.handle_frame(frame, now(), chrono::Utc::now());
                    } else {
                        self.session.receive(frame, now(), chrono::Utc::now());
                    }
                }
            },
            Some(cmd) = self.commands.recv() => self.session.queue(cmd),
            () = &mut self.timer, if self.armed.is_some() => {
                self.armed = None;
                let now = now();
                // An early wake-up (the deadline moved later) is a no-op; `arm` sets the timer
                // again on the next step.
                if self.session.poll_timeout().is_some_and(|due| due <= now) {
                    self.session.handle_timeout(now);
                }
            }
        }
        let r = self.flush().await;
        if let Err(e) = &r {
            tracing::debug!(target = %self.target(), error = %e, "connection ended");
        }
        r.map(|()| message)
    }

    /// Arms the timer for the session's deadline when it is unarmed or set later than that.
    fn arm(&mut self) {
        let Some(due) = self.session.poll_timeout().map(Instant::from_std) else {
            return;
        };
        if self.armed.is_none_or(|at| due < at) {
            self.timer.as_mut().reset(due);
            self.armed = Some(due);
        }
    }

    fn io_error(&self, e: tungstenite::Error) -> Error {
        use tungstenite::Error as E;
        use tungstenite::error::ProtocolError as P;
        let target = self.target().to_owned();
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

/// Connects, sends one message as [`Connection::send_chat`] does, and closes.
///
/// `timeout` bounds everything after the connection is up (status, writer, echo); connecting
/// is bounded by [`ConnectOptions::connect_timeout`].
pub async fn send_once(
    opts: &ConnectOptions,
    req: &SendRequest,
    timeout: Duration,
) -> Result<SendConfirmation, SendError> {
    let mut conn = connect(opts).await?;
    let result = conn.send_chat(req, timeout).await;
    conn.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_the_token() {
        let s = Secret::new("topsecret");
        assert_eq!(
            scrub("GET /ws/1?token=topsecret failed".into(), &s),
            "GET /ws/1?token=[redacted] failed"
        );
    }
}
