//! The sans-IO core of a connection: what each incoming frame means, and when to ping.
//!
//! No sockets and no clock reads: [`Session`] takes frame text and the time it arrived,
//! [`Liveness`] takes instants; the async [`crate::Connection`] drives both.

use std::time::{Duration, Instant};

use chat_model::{SourceItem, Timestamp};

use crate::map;
use crate::wire::{ServerMessage, Status};

/// What one incoming text frame amounted to.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// What to hand the consumer: an event, a keep-alive (nothing to show) or a malformed
    /// notice.
    pub item: SourceItem,
    /// The typed message, when the frame was one.
    pub message: Option<ServerMessage>,
}

/// Per-connection protocol state: the latest status snapshot, and the mapping of frames to
/// items.
#[derive(Clone, Debug)]
pub struct Session {
    source: String,
    stream: u64,
    status: Option<Status>,
    last_emitted: Option<Status>,
    frames: u64,
}

impl Session {
    /// A session for `stream`, naming events with `source`.
    ///
    /// `known_status` is the snapshot already reported (by an earlier connection); an
    /// identical first snapshot is then not emitted again.
    pub fn new(source: impl Into<String>, stream: u64, known_status: Option<Status>) -> Self {
        Session {
            source: source.into(),
            stream,
            status: None,
            last_emitted: known_status,
            frames: 0,
        }
    }

    /// The latest status snapshot this connection received.
    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    /// The stream id.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// Handles one text frame that arrived at `now`.
    ///
    /// Chat, viewer counts, writer results and unknown types become events; a status becomes an
    /// event only when it differs from the last one emitted; anything else is a keep-alive. A
    /// frame that is not a multistreamer message becomes [`SourceItem::Malformed`] naming the
    /// stream and the frame number.
    pub fn on_text(&mut self, text: &str, now: Timestamp) -> Received {
        self.frames += 1;
        let (msg, raw) = match ServerMessage::parse(text) {
            Ok(parsed) => parsed,
            Err(e) => {
                return Received {
                    item: SourceItem::Malformed {
                        error: format!(
                            "multistreamer stream {}: frame {} ({} bytes) skipped: {e}",
                            self.stream,
                            self.frames,
                            text.len()
                        ),
                    },
                    message: None,
                };
            }
        };
        let item = match &msg {
            ServerMessage::Status(s) => {
                self.status = Some(s.clone());
                if self.last_emitted.as_ref() == Some(s) {
                    SourceItem::KeepAlive
                } else {
                    self.last_emitted = Some(s.clone());
                    SourceItem::event(map::to_event(&self.source, self.stream, &msg, &raw, now))
                }
            }
            _ => SourceItem::event(map::to_event(&self.source, self.stream, &msg, &raw, now)),
        };
        Received {
            item,
            message: Some(msg),
        }
    }

    /// Handles a binary frame: the protocol is JSON text, so it is reported and skipped.
    pub fn on_binary(&mut self, len: usize) -> SourceItem {
        self.frames += 1;
        SourceItem::Malformed {
            error: format!(
                "multistreamer stream {}: frame {} is binary ({len} bytes), expected JSON text; skipped",
                self.stream, self.frames
            ),
        }
    }
}

/// What [`Liveness::poll`] asks the driver to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LivenessAction {
    /// Send a WebSocket ping now.
    SendPing,
    /// No frame arrived within the pong deadline: the connection is dead; silent this long.
    Stalled(Duration),
}

/// The ping schedule that fits inside a stall timeout: `(ping_interval, pong_timeout)`.
///
/// A watchdog (the supervisor) replaces a connection that is silent for `stall_timeout`; the
/// client must therefore ping well before that, and give up on an unanswered ping before it
/// too. Ping after a third of the stall timeout, give the pong half of it (so a dead
/// connection is declared at five sixths, inside the timeout), each capped at the defaults
/// ([`crate::DEFAULT_PING_INTERVAL`], [`crate::DEFAULT_PONG_TIMEOUT`]) for long timeouts.
/// Every pong is a keep-alive, so a quiet healthy connection is never silent for longer than
/// the ping interval plus one round trip.
pub fn schedule_for_stall_timeout(stall_timeout: Duration) -> (Duration, Duration) {
    let ping = (stall_timeout / 3).min(crate::DEFAULT_PING_INTERVAL);
    let pong = (stall_timeout / 2).min(crate::DEFAULT_PONG_TIMEOUT);
    (ping, pong)
}

/// Ping-on-silence with a pong deadline.
///
/// After `interval` without any incoming frame a ping is due; if nothing at all (pong or any
/// other frame) arrives within `deadline` of that ping, the connection is declared stalled.
#[derive(Clone, Debug)]
pub struct Liveness {
    interval: Duration,
    deadline: Duration,
    last_rx: Instant,
    ping_sent: Option<Instant>,
}

impl Liveness {
    /// Starts the clock at `now` (the connection just opened).
    pub fn new(interval: Duration, deadline: Duration, now: Instant) -> Self {
        Liveness {
            interval,
            deadline,
            last_rx: now,
            ping_sent: None,
        }
    }

    /// Any frame arrived (text, ping, pong, ...): the connection is alive.
    pub fn on_frame(&mut self, now: Instant) {
        self.last_rx = now;
        self.ping_sent = None;
    }

    /// When [`Liveness::poll`] next has something to do.
    pub fn next_deadline(&self) -> Instant {
        match self.ping_sent {
            Some(sent) => sent + self.deadline,
            None => self.last_rx + self.interval,
        }
    }

    /// Whether a ping is awaiting its pong.
    pub fn awaiting_pong(&self) -> bool {
        self.ping_sent.is_some()
    }

    /// The pong deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// What to do at `now`, if anything.
    pub fn poll(&mut self, now: Instant) -> Option<LivenessAction> {
        match self.ping_sent {
            Some(sent) if now >= sent + self.deadline => Some(LivenessAction::Stalled(
                now.saturating_duration_since(self.last_rx),
            )),
            Some(_) => None,
            None if now >= self.last_rx + self.interval => {
                self.ping_sent = Some(now);
                Some(LivenessAction::SendPing)
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Kind;
    use chrono::TimeZone;

    fn t() -> Timestamp {
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
            .unwrap()
    }

    const LIVE: &str = r#"{"type":"status","status":{"data_pushing":true},"accounts":{"14":{"live":true,"writable":true,"ready":true,"name":"a","network":{"name":"twitch","displayName":"Twitch"}}}}"#;
    const OFF: &str = r#"{"type":"status","status":{},"accounts":{"14":{"live":false,"writable":true,"ready":true,"name":"a","network":{"name":"twitch","displayName":"Twitch"}}}}"#;

    fn kind(item: &SourceItem) -> Option<Kind> {
        match item {
            SourceItem::Event { event, .. } => Some(event.kind),
            _ => None,
        }
    }

    #[test]
    fn status_is_emitted_only_when_it_changes() {
        let mut s = Session::new("ms", 21, None);
        assert_eq!(kind(&s.on_text(LIVE, t()).item), Some(Kind::Status));
        assert_eq!(s.on_text(LIVE, t()).item, SourceItem::KeepAlive);
        assert_eq!(kind(&s.on_text(OFF, t()).item), Some(Kind::Status));
        assert_eq!(kind(&s.on_text(LIVE, t()).item), Some(Kind::Status));
        assert!(s.status().unwrap().any_live());
        // A new connection that already reported this snapshot stays quiet.
        let mut again = Session::new("ms", 21, s.status().cloned());
        assert_eq!(again.on_text(LIVE, t()).item, SourceItem::KeepAlive);
        assert!(again.status().is_some());
    }

    #[test]
    fn malformed_and_binary_frames_are_reported_with_their_number() {
        let mut s = Session::new("ms", 21, None);
        let r = s.on_text(r#"{"type":"text","from":{}}"#, t());
        assert_eq!(kind(&r.item), Some(Kind::Message));
        let r = s.on_text("{\"type\":", t());
        assert!(r.message.is_none());
        let SourceItem::Malformed { error } = r.item else {
            panic!()
        };
        assert!(
            error.contains("stream 21") && error.contains("frame 2"),
            "{error}"
        );
        let SourceItem::Malformed { error } = s.on_binary(4) else {
            panic!()
        };
        assert!(
            error.contains("frame 3") && error.contains("binary"),
            "{error}"
        );
    }

    #[test]
    fn liveness_pings_on_silence_and_stalls_without_pong() {
        let start = Instant::now();
        let s = Duration::from_secs;
        let mut l = Liveness::new(s(15), s(10), start);
        assert_eq!(l.next_deadline(), start + s(15));
        assert_eq!(l.poll(start + s(14)), None);
        assert_eq!(l.poll(start + s(15)), Some(LivenessAction::SendPing));
        assert!(l.awaiting_pong());
        assert_eq!(l.next_deadline(), start + s(25));
        assert_eq!(l.poll(start + s(20)), None);
        // The pong arrives: back to waiting for silence.
        l.on_frame(start + s(21));
        assert!(!l.awaiting_pong());
        assert_eq!(l.next_deadline(), start + s(36));
        assert_eq!(l.poll(start + s(36)), Some(LivenessAction::SendPing));
        assert_eq!(l.poll(start + s(45)), None);
        assert_eq!(l.poll(start + s(46)), Some(LivenessAction::Stalled(s(25))));
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
        assert_eq!(
            schedule_for_stall_timeout(Duration::from_secs(45)),
            (crate::DEFAULT_PING_INTERVAL, crate::DEFAULT_PONG_TIMEOUT)
        );
        assert_eq!(
            schedule_for_stall_timeout(Duration::from_secs(3600)),
            (crate::DEFAULT_PING_INTERVAL, crate::DEFAULT_PONG_TIMEOUT)
        );
        for stall in [
            ms(1),
            ms(10),
            ms(999),
            ms(1000),
            ms(2500),
            ms(7000),
            ms(29_000),
            ms(3_600_000),
        ] {
            let (ping, pong) = schedule_for_stall_timeout(stall);
            assert!(ping + pong < stall, "{stall:?}: {ping:?} + {pong:?}");
            assert!(ping > Duration::ZERO && pong > Duration::ZERO, "{stall:?}");
        }
    }

    #[test]
    fn traffic_defers_pings() {
        let start = Instant::now();
        let s = Duration::from_secs;
        let mut l = Liveness::new(s(15), s(10), start);
        for i in 1..10 {
            l.on_frame(start + s(10 * i));
            assert_eq!(l.poll(start + s(10 * i + 5)), None);
        }
    }
}
