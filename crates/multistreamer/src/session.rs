//! The sans-IO core: the whole plan of one WebSocket connection, quinn-proto style.
//!
//! [`Session`] takes incoming frames with the time they arrived, timer expiries and chat sends,
//! and returns what to write next ([`Session::poll_transmit`]), the items for the consumer
//! ([`Session::poll_item`]), the outcome of each send ([`Session::poll_send`]) and its next
//! deadline ([`Session::poll_timeout`]). It reads no clock and touches no socket: the async
//! [`crate::Connection`] does the IO.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chat_model::{Cursor, Event, SourceItem, Timestamp};

use crate::Error;
use crate::map;
use crate::send::{
    DEFAULT_ECHO_WAIT, SendConfirmation, SendError, SendPlan, SendRequest, plan_send,
};
use crate::wire::{ChatFrame, ClientMessage, ServerMessage, Status, WireError};
use serde_json::Value;

/// Default interval of silence after which the client pings.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(15);
/// Default time a ping may go unanswered before the connection counts as dead.
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(10);

/// The plain settings of one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// The `source` name put on events.
    pub source: String,
    /// The stream id.
    pub stream: u64,
    /// What errors call the connection: the stream and its URL, token redacted.
    pub target: String,
    /// Ping after this much silence.
    pub ping_interval: Duration,
    /// A ping unanswered this long ends the connection as stalled.
    pub pong_timeout: Duration,
    /// Ask for the viewer count this often (never when None).
    pub viewcount_interval: Option<Duration>,
    /// Keep each event's wire JSON in [`Event::raw`].
    pub keep_raw: bool,
}

impl SessionConfig {
    /// The defaults for `stream`: source `multistreamer`, the default ping schedule, no
    /// viewcount requests, `raw` kept.
    pub fn new(stream: u64) -> Self {
        SessionConfig {
            source: "multistreamer".to_owned(),
            stream,
            target: format!("multistreamer stream {stream}"),
            ping_interval: DEFAULT_PING_INTERVAL,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            viewcount_interval: None,
            keep_raw: true,
        }
    }
}

/// One incoming WebSocket frame, as the IO layer read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text frame: one JSON message.
    Text(&'a str),
    /// A binary frame (not part of the protocol).
    Binary(&'a [u8]),
    /// A ping from the server (the WebSocket library answers it).
    Ping(&'a [u8]),
    /// A pong, the answer to our ping.
    Pong(&'a [u8]),
    /// The server closes the connection.
    Close {
        /// The close code, when the frame had one.
        code: Option<u16>,
        /// The close reason (may be empty).
        reason: &'a str,
    },
}

/// What to write to the WebSocket next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// A text frame carrying this message's JSON ([`ClientMessage::to_json`]).
    Message(ClientMessage),
    /// A WebSocket ping (empty payload).
    Ping,
}

/// Names a chat send started with [`Session::send_chat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SendId(u64);

/// What a send waits for.
#[derive(Clone, Debug)]
enum Stage {
    /// The accounts are unknown until a status arrives.
    Status,
    /// A `writer` request went out; waiting for its `writerresult`.
    Writer(SendPlan),
    /// The message went out at `sent_at`; waiting for the echo until `echo_deadline`.
    Echo {
        plan: SendPlan,
        sent_at: Instant,
        echo_deadline: Instant,
    },
}

/// One chat send in progress.
#[derive(Clone, Debug)]
struct PendingSend {
    id: SendId,
    request: SendRequest,
    timeout: Duration,
    deadline: Instant,
    writer_created: bool,
    stage: Stage,
}

impl PendingSend {
    /// When this send next times out.
    fn next_deadline(&self) -> Instant {
        match &self.stage {
            Stage::Echo { echo_deadline, .. } => *echo_deadline,
            Stage::Status | Stage::Writer(_) => self.deadline,
        }
    }

    /// The outcome for the plan and whatever echo came (`None`: sent, not confirmed).
    fn confirmation(
        &self,
        plan: &SendPlan,
        echo: Option<Event>,
        echo_wait: Duration,
    ) -> SendConfirmation {
        SendConfirmation {
            account_id: plan.account,
            cur_stream_account_id: plan.to_account,
            account_name: plan.account_name.clone(),
            network: plan.network.clone(),
            emote: plan.emote,
            private_to: plan.private_to.clone(),
            text: echo
                .as_ref()
                .map_or_else(|| plan.body.clone(), |e| e.text.clone()),
            writer_created: self.writer_created,
            echo,
            echo_wait,
        }
    }
}

/// The state of one connection to a stream: frame meaning, the status snapshot, ping/pong
/// liveness, periodic viewcount requests and chat sends with their writer flow and echo.
///
/// Drive it with [`Session::handle_open`] once the WebSocket is up, then with every frame
/// ([`Session::handle_frame`]), the end of the stream ([`Session::handle_end`]) and each
/// expiry of [`Session::poll_timeout`] ([`Session::handle_timeout`]); after each call, write
/// what [`Session::poll_transmit`] returns and hand on what [`Session::poll_item`] returns.
/// Once the connection has ended, [`Session::error`] says why, for good.
#[derive(Clone, Debug)]
pub struct Session {
    config: SessionConfig,
    status: Option<Status>,
    last_emitted: Option<Status>,
    frames: u64,
    items: VecDeque<SourceItem>,
    transmits: VecDeque<Transmit>,
    /// When the last frame arrived (the open counts as one); None before the open.
    last_rx: Option<Instant>,
    /// When our unanswered ping went out.
    ping_sent: Option<Instant>,
    next_viewcount: Option<Instant>,
    sends: Vec<PendingSend>,
    outcomes: Vec<(SendId, Result<SendConfirmation, SendError>)>,
    next_send_id: u64,
    failed: Option<Error>,
}

impl Session {
    /// A session for `config.stream`; the first transmit is the `{"type":"status"}` request
    /// the web client sends on connecting.
    ///
    /// `known_status` is the snapshot already reported (by an earlier connection); an
    /// identical first snapshot is then not emitted again.
    pub fn new(config: SessionConfig, known_status: Option<Status>) -> Self {
        Session {
            config,
            status: None,
            last_emitted: known_status,
            frames: 0,
            items: VecDeque::new(),
            transmits: VecDeque::from([Transmit::Message(ClientMessage::Status)]),
            last_rx: None,
            ping_sent: None,
            next_viewcount: None,
            sends: Vec::new(),
            outcomes: Vec::new(),
            next_send_id: 0,
            failed: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The stream id.
    pub fn stream(&self) -> u64 {
        self.config.stream
    }

    /// The latest status snapshot this connection received.
    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    /// Where a new connection could resume: never, multistreamer cannot replay.
    pub fn cursor(&self) -> Option<Cursor> {
        None
    }

    /// Why the connection ended, once it has; the same error from then on.
    pub fn error(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    /// Whether a ping of ours awaits its pong.
    pub fn awaiting_pong(&self) -> bool {
        self.ping_sent.is_some()
    }

    /// The WebSocket opened at `now`: starts the ping clock, and the viewcount schedule with
    /// a first request. Later calls change nothing.
    pub fn handle_open(&mut self, now: Instant) {
        if self.last_rx.is_some() {
            return;
        }
        self.last_rx = Some(now);
        if let Some(every) = self.config.viewcount_interval {
            self.queue(ClientMessage::ViewCount);
            self.next_viewcount = Some(now + every);
        }
    }

    /// Queues a message for [`Session::poll_transmit`] (ignored once the connection ended).
    pub fn queue(&mut self, msg: ClientMessage) {
        if self.failed.is_none() {
            self.transmits.push_back(Transmit::Message(msg));
        }
    }

    /// The next thing to write, in order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next item for the consumer, in frame order.
    pub fn poll_item(&mut self) -> Option<SourceItem> {
        self.items.pop_front()
    }

    /// When [`Session::handle_timeout`] is next due: a ping, the pong deadline, a viewcount
    /// request or a send's deadline. None once the connection ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed.is_some() {
            return None;
        }
        let liveness = self.last_rx.map(|rx| match self.ping_sent {
            Some(sent) => sent + self.config.pong_timeout,
            None => rx + self.config.ping_interval,
        });
        let sends = self.sends.iter().map(PendingSend::next_deadline);
        liveness
            .into_iter()
            .chain(self.next_viewcount)
            .chain(sends)
            .min()
    }

    /// One frame arrived at `now` (`wall`: the same moment on the wall clock, for events).
    ///
    /// Any frame proves the connection alive. A text frame yields exactly one item: an event
    /// (chat, viewer count, writer result, unknown type, a status that changed), a keep-alive
    /// (a repeated status) or [`SourceItem::Malformed`] naming the stream and the frame number;
    /// it also moves sends along (status, `writerresult`, echo). A binary frame is reported and
    /// skipped; pings and pongs are keep-alives; a close frame ends the connection. Returns the
    /// typed message the frame carried, if any. Frames after the end are ignored.
    pub fn handle_frame(
        &mut self,
        frame: Frame<'_>,
        now: Instant,
        wall: Timestamp,
    ) -> Option<ServerMessage> {
        self.on_frame(frame, now, wall, true)
    }

    /// [`Session::handle_frame`] without handing back the typed message: the same items and
    /// effects, without copying a chat message's strings a second time.
    pub fn receive(&mut self, frame: Frame<'_>, now: Instant, wall: Timestamp) {
        self.on_frame(frame, now, wall, false);
    }

    fn on_frame(
        &mut self,
        frame: Frame<'_>,
        now: Instant,
        wall: Timestamp,
        want_message: bool,
    ) -> Option<ServerMessage> {
        if self.failed.is_some() {
            return None;
        }
        self.handle_open(now);
        self.last_rx = Some(now);
        self.ping_sent = None;
        match frame {
            Frame::Text(text) => return self.on_text(text, now, wall, want_message),
            Frame::Binary(bytes) => {
                self.frames += 1;
                self.items.push_back(SourceItem::Malformed {
                    error: format!(
                        "multistreamer stream {}: frame {} is binary ({} bytes), expected JSON text; skipped",
                        self.config.stream,
                        self.frames,
                        bytes.len()
                    ),
                });
            }
            Frame::Ping(_) | Frame::Pong(_) => self.items.push_back(SourceItem::KeepAlive),
            Frame::Close { code, reason } => self.fail(Error::Closed {
                target: self.config.target.clone(),
                code,
                reason: reason.to_owned(),
            }),
        }
        None
    }

    /// The stream of frames ended without a close frame.
    pub fn handle_end(&mut self, _now: Instant) {
        self.fail(Error::Closed {
            target: self.config.target.clone(),
            code: None,
            reason: String::new(),
        });
    }

    /// Reading or writing failed (the driver says how): the connection has ended.
    pub fn handle_failure(&mut self, error: Error) {
        self.fail(error);
    }

    /// Time passed to `now`: pings on silence, ends the connection as
    /// [`Error::Stalled`] when a ping went unanswered for the pong timeout, requests the
    /// viewer count when due, and times out sends.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed.is_some() {
            return;
        }
        self.handle_open(now);
        let last_rx = self.last_rx.unwrap_or(now);
        match self.ping_sent {
            Some(sent) if now >= sent + self.config.pong_timeout => {
                self.fail(Error::Stalled {
                    target: self.config.target.clone(),
                    idle: now.saturating_duration_since(last_rx),
                    deadline: self.config.pong_timeout,
                });
                return;
            }
            None if now >= last_rx + self.config.ping_interval => {
                self.transmits.push_back(Transmit::Ping);
                self.ping_sent = Some(now);
            }
            _ => {}
        }
        if let (Some(at), Some(every)) = (self.next_viewcount, self.config.viewcount_interval) {
            if now >= at {
                self.queue(ClientMessage::ViewCount);
                self.next_viewcount = Some(now + every);
            }
        }
        self.time_out_sends(now);
    }

    /// Starts sending one chat message at `now`, all within `timeout`; the outcome comes from
    /// [`Session::poll_send`].
    ///
    /// Waits for a status if none arrived yet ([`SendError::NoStatus`]), picks the accounts
    /// ([`plan_send`]), requests a chat writer when the account is writable but not ready and
    /// waits for its `writerresult` ([`SendError::WriterTimeout`]), sends, then waits for the
    /// echo the server sends every client: up to `timeout` when
    /// [`SendRequest::require_echo`] (else [`SendError::NotConfirmed`]), else up to
    /// [`DEFAULT_ECHO_WAIT`] (within `timeout`), after which the message counts as sent, not
    /// confirmed. One echo confirms one send: the oldest waiting one it matches.
    pub fn send_chat(&mut self, request: SendRequest, timeout: Duration, now: Instant) -> SendId {
        let id = SendId(self.next_send_id);
        self.next_send_id += 1;
        self.sends.push(PendingSend {
            id,
            request,
            timeout,
            deadline: now + timeout,
            writer_created: false,
            stage: Stage::Status,
        });
        if self.failed.is_none() && self.status.is_some() {
            let index = self.sends.len() - 1;
            self.plan(index, now);
        }
        id
    }

    /// The outcome of a send, once: `None` while it is in progress (or after it was taken).
    /// A send cut short by the end of the connection fails with [`SendError::Connection`].
    pub fn poll_send(&mut self, id: SendId) -> Option<Result<SendConfirmation, SendError>> {
        if let Some(i) = self.outcomes.iter().position(|(done, _)| *done == id) {
            return Some(self.outcomes.remove(i).1);
        }
        let error = self.failed.clone()?;
        let i = self.sends.iter().position(|s| s.id == id)?;
        self.sends.remove(i);
        Some(Err(SendError::Connection(error)))
    }

    fn fail(&mut self, error: Error) {
        if self.failed.is_none() {
            self.failed = Some(error);
            self.transmits.clear();
        }
    }

    fn on_text(
        &mut self,
        text: &str,
        now: Instant,
        wall: Timestamp,
        want_message: bool,
    ) -> Option<ServerMessage> {
        self.frames += 1;
        let (source, stream) = (self.config.source.as_str(), self.config.stream);
        // A chat frame is read straight into its event's fields; anything else (or a chat
        // frame the fast path declines) takes the general path, which reads it the same way.
        let want_typed = want_message || !self.sends.is_empty();
        let parsed = if self.config.keep_raw {
            match serde_json::from_str::<Value>(text) {
                Err(e) => Err(WireError::NotJson(e.to_string())),
                Ok(raw) => match ChatFrame::from_value(&raw) {
                    Some(chat) => {
                        let msg = want_typed.then(|| chat.to_message());
                        let mut event = map::frame_event(source, stream, chat, wall);
                        event.raw = Some(raw);
                        return self.on_chat(msg, event, now, want_message);
                    }
                    None => ServerMessage::from_value(&raw).map(|msg| (msg, raw)),
                },
            }
        } else {
            if let Some(chat) = ChatFrame::parse(text) {
                let msg = want_typed.then(|| chat.to_message());
                let event = map::frame_event(source, stream, chat, wall);
                return self.on_chat(msg, event, now, want_message);
            }
            ServerMessage::parse(text)
        };
        let (msg, raw) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                self.items.push_back(SourceItem::Malformed {
                    error: format!(
                        "multistreamer stream {}: frame {} ({} bytes) skipped: {e}",
                        self.config.stream,
                        self.frames,
                        text.len()
                    ),
                });
                return None;
            }
        };
        let (source, stream) = (self.config.source.as_str(), self.config.stream);
        let event = match &msg {
            ServerMessage::Status(s) if self.last_emitted.as_ref() == Some(s) => None,
            _ => Some(map::to_event(
                source,
                stream,
                &msg,
                &raw,
                self.config.keep_raw,
                wall,
            )),
        };
        if let ServerMessage::Status(s) = &msg {
            self.status = Some(s.clone());
            if event.is_some() {
                self.last_emitted = Some(s.clone());
            }
        }
        self.advance_sends(&msg, event.as_ref(), now);
        self.items
            .push_back(event.map_or(SourceItem::KeepAlive, SourceItem::event));
        Some(msg)
    }

    /// A chat frame became `event`; `msg` is its typed message when a caller or a send wants it.
    fn on_chat(
        &mut self,
        msg: Option<ServerMessage>,
        event: Event,
        now: Instant,
        want_message: bool,
    ) -> Option<ServerMessage> {
        if let Some(msg) = &msg {
            self.advance_sends(msg, Some(&event), now);
        }
        self.items.push_back(SourceItem::event(event));
        msg.filter(|_| want_message)
    }

    /// Moves sends along on a message: a status lets waiting sends plan, a `writerresult`
    /// releases the sends waiting for that writer, an echo confirms the oldest send it matches.
    fn advance_sends(&mut self, msg: &ServerMessage, event: Option<&Event>, now: Instant) {
        if let ServerMessage::Status(_) = msg {
            let mut i = 0;
            while i < self.sends.len() {
                let before = self.sends.len();
                if matches!(self.sends[i].stage, Stage::Status) {
                    self.plan(i, now);
                }
                // plan() removes a send it refused.
                if self.sends.len() == before {
                    i += 1;
                }
            }
            return;
        }
        for i in 0..self.sends.len() {
            if let Stage::Writer(plan) = &self.sends[i].stage {
                if plan.is_writer_result(msg) {
                    let plan = plan.clone();
                    self.sends[i].writer_created = true;
                    self.transmit_chat(i, plan, now);
                }
            }
        }
        let echo = self
            .sends
            .iter()
            .position(|s| matches!(&s.stage, Stage::Echo { plan, .. } if plan.is_echo(msg)));
        if let (Some(i), Some(event)) = (echo, event) {
            let send = self.sends.remove(i);
            if let Stage::Echo { plan, sent_at, .. } = &send.stage {
                let wait = now.saturating_duration_since(*sent_at);
                let confirmation = send.confirmation(plan, Some(event.clone()), wait);
                self.outcomes.push((send.id, Ok(confirmation)));
            }
        }
    }

    /// Plans send `i` from the current status: refused (removed, with its error), waiting for
    /// a writer, or sent.
    fn plan(&mut self, i: usize, now: Instant) {
        let Some(status) = &self.status else { return };
        match plan_send(status, self.config.stream, &self.sends[i].request) {
            Err(e) => {
                let send = self.sends.remove(i);
                self.outcomes.push((send.id, Err(e)));
            }
            Ok(plan) if plan.needs_writer => {
                tracing::debug!(
                    account = plan.account,
                    to = plan.to_account,
                    "requesting a chat writer"
                );
                self.queue(plan.writer_request());
                self.sends[i].stage = Stage::Writer(plan);
            }
            Ok(plan) => self.transmit_chat(i, plan, now),
        }
    }

    fn transmit_chat(&mut self, i: usize, plan: SendPlan, now: Instant) {
        self.queue(plan.message.clone());
        let send = &mut self.sends[i];
        let echo_deadline = if send.request.require_echo {
            send.deadline
        } else {
            send.deadline.min(now + DEFAULT_ECHO_WAIT)
        };
        send.stage = Stage::Echo {
            plan,
            sent_at: now,
            echo_deadline,
        };
    }

    fn time_out_sends(&mut self, now: Instant) {
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sends)
            .into_iter()
            .partition(|s| now >= s.next_deadline());
        self.sends = waiting;
        for send in due {
            let outcome = match &send.stage {
                Stage::Status => Err(SendError::NoStatus {
                    target: self.config.target.clone(),
                    timeout: send.timeout,
                }),
                Stage::Writer(plan) => Err(SendError::WriterTimeout {
                    account: plan.account,
                    to_account: plan.to_account,
                    timeout: send.timeout,
                }),
                Stage::Echo { plan, .. } if send.request.require_echo => {
                    Err(SendError::NotConfirmed {
                        account: plan.account,
                        to_account: plan.to_account,
                        timeout: send.timeout,
                    })
                }
                Stage::Echo {
                    plan,
                    sent_at,
                    echo_deadline,
                } => {
                    let wait = echo_deadline.saturating_duration_since(*sent_at);
                    tracing::debug!(
                        account = plan.account,
                        to = plan.to_account,
                        "no echo within {}s: sent, not confirmed",
                        wait.as_secs_f64()
                    );
                    Ok(send.confirmation(plan, None, wait))
                }
            };
            self.outcomes.push((send.id, outcome));
        }
    }
}

/// The ping schedule that fits inside a stall timeout: `(ping_interval, pong_timeout)`.
///
/// A watchdog (the supervisor) replaces a connection that is silent for `stall_timeout`; the
/// client must therefore ping well before that, and give up on an unanswered ping before it
/// too. Ping after a third of the stall timeout, give the pong half of it (so a dead
/// connection is declared at five sixths, inside the timeout), each capped at the defaults
/// ([`DEFAULT_PING_INTERVAL`], [`DEFAULT_PONG_TIMEOUT`]) for long timeouts. Every pong is a
/// keep-alive, so a quiet healthy connection is never silent for longer than the ping interval
/// plus one round trip.
pub fn schedule_for_stall_timeout(stall_timeout: Duration) -> (Duration, Duration) {
    let ping = (stall_timeout / 3).min(DEFAULT_PING_INTERVAL);
    let pong = (stall_timeout / 2).min(DEFAULT_PONG_TIMEOUT);
    (ping, pong)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Kind;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn wall() -> Timestamp {
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
            .unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    const LIVE: &str = r#"{"type":"status","status":{"data_pushing":true},"accounts":{"14":{"live":true,"writable":true,"ready":true,"name":"a","network":{"name":"twitch","displayName":"Twitch"}}}}"#;
    const OFF: &str = r#"{"type":"status","status":{},"accounts":{"14":{"live":false,"writable":true,"ready":true,"name":"a","network":{"name":"twitch","displayName":"Twitch"}}}}"#;
    /// The document's accounts: 14 live and ready, 17 writable but not ready, 0 IRC.
    const DOC: &str = r#"{"type":"status","status":{"data_pushing":true},"accounts":{
        "14":{"live":true,"writable":true,"ready":true,"name":"jprjrdev","network":{"name":"twitch"}},
        "17":{"live":false,"writable":true,"ready":false,"name":"gamethattunedev","network":{"name":"twitch"}},
        "0":{"live":false,"writable":true,"ready":true,"name":"john","network":{"name":"irc"}}}}"#;
    const VIEWERS: &str =
        r#"{"type":"viewcountresult","viewer_count":3,"stream_id":21,"account_id":14}"#;
    const WRITER_17: &str = r#"{"type":"writerresult","account_id":17,"cur_stream_account_id":14}"#;

    fn chat_frame(account: u64, from: &str, text: &str) -> String {
        serde_json::json!({"type":"text","account_id":account,"network":"twitch",
            "from":{"id":"1","name":from},"text":text})
        .to_string()
    }

    fn kind(item: &SourceItem) -> Option<Kind> {
        match item {
            SourceItem::Event { event, .. } => Some(event.kind),
            _ => None,
        }
    }

    fn config() -> SessionConfig {
        SessionConfig {
            source: "ms".into(),
            ..SessionConfig::new(21)
        }
    }

    /// A session opened at `start` whose initial status request was taken.
    fn opened(start: Instant) -> Session {
        let mut s = Session::new(config(), None);
        s.handle_open(start);
        assert_eq!(
            s.poll_transmit(),
            Some(Transmit::Message(ClientMessage::Status))
        );
        s
    }

    fn text(s: &mut Session, frame: &str, now: Instant) -> SourceItem {
        s.handle_frame(Frame::Text(frame), now, wall());
        s.poll_item().expect("one item per text frame")
    }

    fn transmits(s: &mut Session) -> Vec<Transmit> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    #[test]
    fn status_is_emitted_only_when_it_changes() {
        let now = Instant::now();
        let mut s = opened(now);
        assert_eq!(kind(&text(&mut s, LIVE, now)), Some(Kind::Status));
        assert_eq!(text(&mut s, LIVE, now), SourceItem::KeepAlive);
        assert_eq!(kind(&text(&mut s, OFF, now)), Some(Kind::Status));
        assert_eq!(kind(&text(&mut s, LIVE, now)), Some(Kind::Status));
        assert!(s.status().unwrap().any_live());
        // A new connection that already reported this snapshot stays quiet.
        let mut again = Session::new(config(), s.status().cloned());
        assert_eq!(text(&mut again, LIVE, now), SourceItem::KeepAlive);
        assert!(again.status().is_some());
        assert!(again.cursor().is_none());
    }

    #[test]
    fn malformed_and_binary_frames_are_reported_with_their_number() {
        let now = Instant::now();
        let mut s = opened(now);
        let item = text(&mut s, r#"{"type":"text","from":{}}"#, now);
        assert_eq!(kind(&item), Some(Kind::Message));
        assert_eq!(s.handle_frame(Frame::Text("{\"type\":"), now, wall()), None);
        let Some(SourceItem::Malformed { error }) = s.poll_item() else {
            panic!()
        };
        assert!(
            error.contains("stream 21") && error.contains("frame 2"),
            "{error}"
        );
        s.handle_frame(Frame::Binary(b"abcd"), now, wall());
        let Some(SourceItem::Malformed { error }) = s.poll_item() else {
            panic!()
        };
        assert!(
            error.contains("frame 3") && error.contains("binary"),
            "{error}"
        );
        // Pings and pongs are keep-alives and not numbered.
        s.handle_frame(Frame::Ping(b""), now, wall());
        s.handle_frame(Frame::Pong(b""), now, wall());
        assert_eq!(s.poll_item(), Some(SourceItem::KeepAlive));
        assert_eq!(s.poll_item(), Some(SourceItem::KeepAlive));
        s.handle_frame(Frame::Text("[]"), now, wall());
        let Some(SourceItem::Malformed { error }) = s.poll_item() else {
            panic!()
        };
        assert!(error.contains("frame 4"), "{error}");
    }

    #[test]
    fn pings_on_silence_and_stalls_without_pong() {
        let start = Instant::now();
        let mut s = opened(start);
        assert_eq!(s.poll_timeout(), Some(start + secs(15)));
        s.handle_timeout(start + secs(14));
        assert_eq!(s.poll_transmit(), None);
        s.handle_timeout(start + secs(15));
        assert_eq!(s.poll_transmit(), Some(Transmit::Ping));
        assert!(s.awaiting_pong());
        assert_eq!(s.poll_timeout(), Some(start + secs(25)));
        s.handle_timeout(start + secs(20));
        assert_eq!(s.poll_transmit(), None);
        // The pong arrives: back to waiting for silence.
        s.handle_frame(Frame::Pong(b""), start + secs(21), wall());
        assert!(!s.awaiting_pong());
        assert_eq!(s.poll_timeout(), Some(start + secs(36)));
        s.handle_timeout(start + secs(36));
        assert_eq!(s.poll_transmit(), Some(Transmit::Ping));
        s.handle_timeout(start + secs(45));
        assert!(s.error().is_none());
        s.handle_timeout(start + secs(46));
        let Some(Error::Stalled { idle, deadline, .. }) = s.error().cloned() else {
            panic!("{:?}", s.error())
        };
        assert_eq!((idle, deadline), (secs(25), secs(10)));
        assert_eq!(s.poll_timeout(), None);
        // Sticky: later frames and timers change nothing.
        s.handle_frame(Frame::Text(LIVE), start + secs(47), wall());
        s.handle_timeout(start + secs(99));
        assert_eq!(s.poll_item(), Some(SourceItem::KeepAlive));
        assert_eq!(s.poll_item(), None);
        assert!(matches!(s.error(), Some(Error::Stalled { .. })));
    }

    #[test]
    fn the_schedule_fits_inside_the_stall_timeout() {
        let ms = Duration::from_millis;
        assert_eq!(
            schedule_for_stall_timeout(ms(1000)),
            (Duration::from_nanos(333_333_333), ms(500))
        );
        assert_eq!(schedule_for_stall_timeout(ms(3000)), (ms(1000), ms(1500)));
        // Long timeouts keep the defaults.
        for long in [secs(45), secs(3600)] {
            assert_eq!(
                schedule_for_stall_timeout(long),
                (DEFAULT_PING_INTERVAL, DEFAULT_PONG_TIMEOUT)
            );
        }
        for stall in [1, 10, 999, 1000, 2500, 7000, 29_000, 3_600_000].map(ms) {
            let (ping, pong) = schedule_for_stall_timeout(stall);
            assert!(ping + pong < stall, "{stall:?}: {ping:?} + {pong:?}");
            assert!(ping > Duration::ZERO && pong > Duration::ZERO, "{stall:?}");
        }
    }

    #[test]
    fn traffic_defers_pings() {
        let start = Instant::now();
        let mut s = opened(start);
        for i in 1..10 {
            s.handle_frame(Frame::Text(VIEWERS), start + secs(10 * i), wall());
            s.handle_timeout(start + secs(10 * i + 5));
            assert_eq!(s.poll_transmit(), None);
        }
    }

    #[test]
    fn viewcount_is_requested_on_open_and_on_its_interval() {
        let start = Instant::now();
        let mut s = Session::new(
            SessionConfig {
                viewcount_interval: Some(secs(60)),
                ..config()
            },
            None,
        );
        s.handle_open(start);
        s.handle_open(start + secs(1));
        let vc = Transmit::Message(ClientMessage::ViewCount);
        let status = Transmit::Message(ClientMessage::Status);
        assert_eq!(transmits(&mut s), [status, vc.clone()]);
        // Traffic keeps pings away; the viewcount comes on its interval regardless.
        for i in 1..=12 {
            s.handle_frame(Frame::Text(VIEWERS), start + secs(10 * i), wall());
            s.handle_timeout(start + secs(10 * i));
        }
        assert_eq!(transmits(&mut s), [vc.clone(), vc]);
        assert_eq!(s.poll_timeout(), Some(start + secs(120 + 15)));
    }

    #[test]
    fn close_and_end_are_sticky_and_keep_the_first_reason() {
        let now = Instant::now();
        let mut s = opened(now);
        s.queue(ClientMessage::ViewCount);
        s.handle_frame(
            Frame::Close {
                code: Some(1001),
                reason: "going away",
            },
            now,
            wall(),
        );
        s.handle_end(now);
        s.queue(ClientMessage::Status);
        assert_eq!(s.poll_transmit(), None, "nothing is written after the end");
        let Some(Error::Closed { code, reason, .. }) = s.error() else {
            panic!()
        };
        assert_eq!((*code, reason.as_str()), (Some(1001), "going away"));
        let mut s = opened(now);
        s.handle_end(now);
        assert!(matches!(s.error(), Some(Error::Closed { code: None, .. })));
        let id = s.send_chat(SendRequest::default(), secs(1), now);
        assert!(matches!(
            s.poll_send(id),
            Some(Err(SendError::Connection(Error::Closed { .. })))
        ));
        assert_eq!(s.poll_send(id), None);
    }

    fn send_req(account: Option<u64>, text: &str) -> SendRequest {
        SendRequest {
            account,
            text: text.into(),
            ..SendRequest::default()
        }
    }

    #[test]
    fn a_send_waits_for_the_status_then_is_confirmed_by_its_echo() {
        let start = Instant::now();
        let mut s = opened(start);
        let id = s.send_chat(send_req(None, "hello"), secs(10), start);
        assert_eq!(s.poll_send(id), None);
        assert_eq!(s.poll_transmit(), None, "the accounts are not known yet");
        assert_eq!(s.poll_timeout(), Some(start + secs(10)));
        text(&mut s, DOC, start + secs(1));
        let Some(Transmit::Message(ClientMessage::Text(out))) = s.poll_transmit() else {
            panic!()
        };
        assert_eq!((out.account_id, out.cur_stream_account_id), (14, 14));
        // Someone else's message with the same text is no echo.
        text(&mut s, &chat_frame(14, "someone", "hello"), start + secs(2));
        assert_eq!(s.poll_send(id), None);
        let item = text(
            &mut s,
            &chat_frame(14, "jprjrdev", "hello"),
            start + secs(3),
        );
        let c = s.poll_send(id).unwrap().unwrap();
        let SourceItem::Event { event, .. } = item else {
            panic!()
        };
        assert_eq!(c.echo.as_ref(), Some(&event), "the echo is also an item");
        assert_eq!(c.echo_wait, secs(2));
        assert!(!c.writer_created);
        assert_eq!(s.poll_send(id), None);
    }

    #[test]
    fn the_writer_flow_requests_a_writer_and_sends_on_its_result() {
        let start = Instant::now();
        let mut s = opened(start);
        text(&mut s, DOC, start);
        let id = s.send_chat(send_req(Some(17), "via writer"), secs(10), start);
        let writer = ClientMessage::Writer(crate::wire::WriterRequest {
            account_id: 17,
            cur_stream_account_id: 14,
        });
        assert_eq!(transmits(&mut s), [Transmit::Message(writer)]);
        text(&mut s, VIEWERS, start + secs(1));
        assert_eq!(s.poll_transmit(), None);
        text(&mut s, WRITER_17, start + secs(1));
        let sent = transmits(&mut s);
        assert!(
            matches!(&sent[..], [Transmit::Message(ClientMessage::Text(o))] if o.account_id == 17),
            "{sent:?}"
        );
        // No echo (the server need not echo a writer's message): sent, not confirmed, after
        // the echo wait.
        assert_eq!(s.poll_timeout(), Some(start + secs(1) + DEFAULT_ECHO_WAIT));
        s.handle_timeout(start + secs(1) + DEFAULT_ECHO_WAIT);
        let c = s.poll_send(id).unwrap().unwrap();
        assert!(c.writer_created && !c.confirmed());
        assert_eq!(c.echo_wait, DEFAULT_ECHO_WAIT);
        assert_eq!(c.text, "via writer");
    }

    #[test]
    fn send_timeouts_and_refusals_are_typed() {
        let start = Instant::now();
        let mut s = opened(start);
        let no_status = s.send_chat(send_req(None, "x"), secs(2), start);
        s.handle_timeout(start + secs(2));
        assert!(matches!(
            s.poll_send(no_status),
            Some(Err(SendError::NoStatus { timeout, .. })) if timeout == secs(2)
        ));
        // Refused at planning, nothing written.
        let unknown = s.send_chat(send_req(Some(99), "x"), secs(2), start);
        text(&mut s, DOC, start + secs(3));
        assert!(matches!(
            s.poll_send(unknown),
            Some(Err(SendError::UnknownAccount { account: 99, .. }))
        ));
        assert_eq!(s.poll_transmit(), None);
        let writer = s.send_chat(send_req(Some(17), "x"), secs(2), start + secs(3));
        transmits(&mut s);
        s.handle_timeout(start + secs(5));
        assert!(matches!(
            s.poll_send(writer),
            Some(Err(SendError::WriterTimeout {
                account: 17,
                to_account: 14,
                ..
            }))
        ));
        let required = s.send_chat(
            SendRequest {
                require_echo: true,
                ..send_req(None, "x")
            },
            secs(5),
            start + secs(5),
        );
        assert_eq!(transmits(&mut s).len(), 1);
        s.handle_timeout(start + secs(5) + DEFAULT_ECHO_WAIT);
        assert_eq!(s.poll_send(required), None, "required: the whole timeout");
        s.handle_timeout(start + secs(10));
        assert!(matches!(
            s.poll_send(required),
            Some(Err(SendError::NotConfirmed { account: 14, .. }))
        ));
    }

    #[test]
    fn one_echo_confirms_one_send() {
        let start = Instant::now();
        let mut s = opened(start);
        text(&mut s, DOC, start);
        let a = s.send_chat(send_req(None, "same"), secs(10), start);
        let b = s.send_chat(send_req(None, "same"), secs(10), start);
        text(&mut s, &chat_frame(14, "jprjrdev", "same"), start + secs(1));
        assert!(s.poll_send(a).unwrap().unwrap().confirmed());
        assert_eq!(s.poll_send(b), None);
        text(&mut s, &chat_frame(14, "jprjrdev", "same"), start + secs(1));
        assert!(s.poll_send(b).unwrap().unwrap().confirmed());
    }

    #[test]
    fn raw_is_kept_only_when_asked_and_nothing_else_changes() {
        let start = Instant::now();
        let frames = [
            DOC.to_owned(),
            chat_frame(14, "jprjrdev", "hello \"there\" 日"),
            VIEWERS.to_owned(),
            WRITER_17.to_owned(),
            r#"{"type":"hostmode","text":"now hosting"}"#.to_owned(),
            r#"{"type":"emote","text":"waves","text":"dup"}"#.to_owned(),
        ];
        let run = |keep_raw: bool| {
            let mut s = Session::new(
                SessionConfig {
                    keep_raw,
                    ..config()
                },
                None,
            );
            s.handle_open(start);
            frames
                .iter()
                .map(|f| {
                    s.receive(Frame::Text(f), start, wall());
                    s.poll_item().unwrap()
                })
                .collect::<Vec<_>>()
        };
        let (kept, bare) = (run(true), run(false));
        assert_eq!(kept.len(), frames.len());
        for ((f, kept), bare) in frames.iter().zip(kept).zip(bare) {
            let (
                SourceItem::Event {
                    event: mut kept, ..
                },
                SourceItem::Event { event: bare, .. },
            ) = (kept, bare)
            else {
                panic!("{f}: not events")
            };
            let wire: Value = serde_json::from_str(f).unwrap();
            assert_eq!(kept.raw.take(), Some(wire), "{f}");
            assert_eq!(bare.raw, None, "{f}");
            assert_eq!(kept, bare, "{f}");
        }
    }

    #[test]
    fn receive_and_handle_frame_yield_the_same_items_and_sends() {
        let start = Instant::now();
        let run = |typed: bool| {
            let mut s = opened(start);
            let id = s.send_chat(send_req(None, "hello"), secs(10), start);
            let mut items = Vec::new();
            let mut messages = Vec::new();
            for f in [
                DOC.to_owned(),
                chat_frame(14, "jprjrdev", "hello"),
                VIEWERS.to_owned(),
            ] {
                if typed {
                    messages.extend(s.handle_frame(Frame::Text(&f), start + secs(1), wall()));
                } else {
                    s.receive(Frame::Text(&f), start + secs(1), wall());
                }
                items.extend(std::iter::from_fn(|| s.poll_item()));
            }
            (items, s.poll_send(id), messages.len(), transmits(&mut s))
        };
        let (typed, untyped) = (run(true), run(false));
        assert_eq!(typed.2, 3, "handle_frame hands back every typed message");
        assert_eq!(untyped.2, 0);
        assert!(typed.1.as_ref().unwrap().as_ref().unwrap().confirmed());
        assert_eq!(
            (&typed.0, &typed.1, &typed.3),
            (&untyped.0, &untyped.1, &untyped.3)
        );
    }

    /// A frame for the arbitrary-sequence test.
    #[derive(Clone, Debug)]
    enum Arb {
        Status(bool),
        Writer,
        Viewers,
        Chat { emote: bool, text: String },
        Unknown(String),
        Garbage(String),
        Binary(Vec<u8>),
        Ping,
        Pong,
    }

    fn arb_frame() -> impl Strategy<Value = Arb> {
        prop_oneof![
            any::<bool>().prop_map(Arb::Status),
            Just(Arb::Writer),
            Just(Arb::Viewers),
            (any::<bool>(), "[a-zA-Z0-9 ü]{0,20}")
                .prop_map(|(emote, text)| Arb::Chat { emote, text }),
            "[a-z]{1,12}".prop_map(Arb::Unknown),
            ".{0,40}".prop_map(Arb::Garbage),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Arb::Binary),
            Just(Arb::Ping),
            Just(Arb::Pong),
        ]
    }

    fn wire_text(f: &Arb) -> Option<String> {
        Some(match f {
            Arb::Status(live) => (if *live { LIVE } else { OFF }).to_owned(),
            Arb::Writer => WRITER_17.to_owned(),
            Arb::Viewers => VIEWERS.to_owned(),
            Arb::Chat { emote, text } => serde_json::json!({
                "type": if *emote { "emote" } else { "text" },
                "account_id": 14, "from": {"name": "x"}, "text": text})
            .to_string(),
            Arb::Unknown(kind) => {
                // Never one of the known types.
                serde_json::json!({"type": format!("x-{kind}"), "text": "t"}).to_string()
            }
            Arb::Garbage(g) => g.clone(),
            Arb::Binary(_) | Arb::Ping | Arb::Pong => return None,
        })
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic_and_map_each_text_once(
            frames in proptest::collection::vec(arb_frame(), 0..40),
        ) {
            let start = Instant::now();
            let mut s = opened(start);
            let mut items = Vec::new();
            for (i, f) in frames.iter().enumerate() {
                let now = start + Duration::from_millis(i as u64);
                let text = wire_text(f);
                let frame = match (f, &text) {
                    (_, Some(t)) => Frame::Text(t),
                    (Arb::Binary(b), None) => Frame::Binary(b),
                    (Arb::Ping, None) => Frame::Ping(b""),
                    _ => Frame::Pong(b""),
                };
                s.handle_frame(frame, now, wall());
                let got: Vec<_> = std::iter::from_fn(|| s.poll_item()).collect();
                prop_assert_eq!(got.len(), 1, "one item per frame: {:?} -> {:?}", f, got);
                items.push(got.into_iter().next().unwrap());
            }
            prop_assert!(s.error().is_none());
            prop_assert_eq!(s.poll_transmit(), None);
            for (f, item) in frames.iter().zip(&items) {
                match f {
                    Arb::Chat { emote, text } => {
                        let SourceItem::Event { event, .. } = item else {
                            return Err(TestCaseError::fail(format!("{f:?} -> {item:?}")));
                        };
                        prop_assert_eq!(event.kind, if *emote { Kind::Emote } else { Kind::Message });
                        prop_assert_eq!(&event.text, text);
                    }
                    Arb::Writer | Arb::Viewers | Arb::Unknown(_) => {
                        prop_assert!(matches!(item, SourceItem::Event { .. }), "{:?}", item);
                    }
                    Arb::Binary(_) => {
                        prop_assert!(matches!(item, SourceItem::Malformed { .. }), "{:?}", item);
                    }
                    Arb::Ping | Arb::Pong => prop_assert_eq!(item, &SourceItem::KeepAlive),
                    Arb::Status(_) | Arb::Garbage(_) => {}
                }
            }
            // A status is emitted exactly when it differs from the previous one.
            let statuses: Vec<_> = frames.iter().zip(&items)
                .filter_map(|(f, item)| match f { Arb::Status(l) => Some((*l, kind(item))), _ => None })
                .collect();
            let mut previous = None;
            for (live, k) in statuses {
                let changed = previous != Some(live);
                prop_assert_eq!(k, changed.then_some(Kind::Status));
                previous = Some(live);
            }
        }

        #[test]
        fn pongs_keep_a_quiet_connection_alive_and_silence_ends_it_in_time(
            stall_ms in 30u64..120_000,
            // Round trips of the pongs, as fractions of the pong timeout (below 1: answered).
            rtts in proptest::collection::vec(0.0f64..0.99, 1..30),
            dead_after in 0usize..30,
        ) {
            let (ping, pong) = schedule_for_stall_timeout(Duration::from_millis(stall_ms));
            let start = Instant::now();
            let mut s = Session::new(SessionConfig { ping_interval: ping, pong_timeout: pong, ..config() }, None);
            s.handle_open(start);
            transmits(&mut s);
            let mut last_rx = start;
            let mut answered = 0;
            loop {
                let at = s.poll_timeout().expect("a deadline while alive");
                s.handle_timeout(at);
                if let Some(e) = s.error() {
                    let Error::Stalled { idle, deadline, .. } = e else {
                        return Err(TestCaseError::fail(format!("{e}")));
                    };
                    prop_assert_eq!(answered, dead_after.min(rtts.len()));
                    prop_assert_eq!(*deadline, pong);
                    prop_assert_eq!(*idle, ping + pong);
                    prop_assert!(*idle < Duration::from_millis(stall_ms), "declared dead inside the stall timeout");
                    break;
                }
                match s.poll_transmit() {
                    Some(Transmit::Ping) => {
                        prop_assert_eq!(at, last_rx + ping, "a ping after exactly the interval of silence");
                        if answered < dead_after.min(rtts.len()) {
                            let pong_at = at + pong.mul_f64(rtts[answered]);
                            s.handle_timeout(pong_at);
                            prop_assert!(s.error().is_none());
                            s.handle_frame(Frame::Pong(b""), pong_at, wall());
                            prop_assert_eq!(s.poll_item(), Some(SourceItem::KeepAlive));
                            // A watchdog of `stall` never sees this much silence.
                            prop_assert!(pong_at - last_rx < Duration::from_millis(stall_ms));
                            last_rx = pong_at;
                            answered += 1;
                        }
                    }
                    other => prop_assert_eq!(other, None),
                }
            }
        }

        #[test]
        fn a_send_is_confirmed_by_its_echo_exactly_once_whatever_surrounds_it(
            before in proptest::collection::vec(0u8..4, 0..6),
            after in proptest::collection::vec(0u8..4, 0..6),
            echoes in 1usize..3,
            send_first in any::<bool>(),
        ) {
            // 0: the doc status, 1: another status, 2: a viewer count, 3: someone's chat.
            let other = DOC.replace("\"data_pushing\":true", "\"data_pushing\":false");
            let noise = |n: u8| match n {
                0 => DOC.to_owned(),
                1 => other.clone(),
                2 => VIEWERS.to_owned(),
                _ => chat_frame(14, "someone", "/msg bob hi"),
            };
            let start = Instant::now();
            let mut s = opened(start);
            let req = send_req(None, "/msg bob hi");
            let mut id = None;
            if send_first {
                id = Some(s.send_chat(req.clone(), secs(10), start));
            }
            let mut frames: Vec<String> = before.iter().map(|n| noise(*n)).collect();
            frames.push(DOC.to_owned());
            frames.extend(after.iter().map(|n| noise(*n)));
            let (mut fed, mut items) = (0, 0);
            for f in &frames {
                s.handle_frame(Frame::Text(f), start, wall());
                fed += 1;
                items += std::iter::from_fn(|| s.poll_item()).count();
            }
            let id = id.unwrap_or_else(|| s.send_chat(req.clone(), secs(10), start));
            let texts: Vec<_> = transmits(&mut s).into_iter()
                .filter(|t| matches!(t, Transmit::Message(ClientMessage::Text(_))))
                .collect();
            prop_assert_eq!(texts.len(), 1, "the text is sent once");
            prop_assert_eq!(s.poll_send(id), None);
            let echo = serde_json::json!({"type":"text","account_id":0,"network":"irc",
                "from":{"name":"john"},"to":{"name":"bob"},"text":"hi"}).to_string();
            let mut outcomes = Vec::new();
            for (i, n) in after.iter().chain(&before).enumerate() {
                if i < echoes {
                    s.handle_frame(Frame::Text(&echo), start + secs(1), wall());
                    fed += 1;
                    items += std::iter::from_fn(|| s.poll_item()).count();
                    outcomes.extend(s.poll_send(id));
                }
                s.handle_frame(Frame::Text(&noise(*n)), start + secs(1), wall());
                fed += 1;
                items += std::iter::from_fn(|| s.poll_item()).count();
                outcomes.extend(s.poll_send(id));
            }
            if outcomes.is_empty() {
                s.handle_frame(Frame::Text(&echo), start + secs(1), wall());
                fed += 1;
                items += std::iter::from_fn(|| s.poll_item()).count();
                outcomes.extend(s.poll_send(id));
            }
            s.handle_timeout(start + secs(20));
            outcomes.extend(s.poll_send(id));
            prop_assert_eq!(outcomes.len(), 1, "{:?}", outcomes);
            let c = outcomes.pop().unwrap().unwrap();
            prop_assert!(c.confirmed());
            prop_assert_eq!(c.private_to.as_deref(), Some("bob"));
            prop_assert_eq!((c.account_id, c.cur_stream_account_id), (0, 0));
            prop_assert_eq!(c.echo_wait, secs(1));
            prop_assert_eq!(items, fed, "every frame still became one item");
        }
    }
}
