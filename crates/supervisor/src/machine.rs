//! The sans-IO core: one deterministic state machine per source.
//!
//! [`SourceMachine`] never reads a clock, sleeps or does IO. A driver feeds it what happened
//! (a connection came up, an item arrived, the connection ended) together with the current
//! monotonic time ([`Instant`]) and wall-clock time ([`Timestamp`], used only to stamp the
//! events it produces), then drains [`Action`]s with [`SourceMachine::poll_action`] and
//! sleeps until [`SourceMachine::poll_timeout`], calling [`SourceMachine::handle_timeout`]
//! when it passes. The tokio driver in this crate is one such driver; tests drive it by hand.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use chat_model::{DisconnectReason, Service};
//! use supervisor::{Action, MachineConfig, Policy, SourceMachine};
//!
//! let mut m = SourceMachine::new("ops", Service::Campfire, Policy::default(), MachineConfig::default());
//! let (t0, wall) = (Instant::now(), chrono::Utc::now());
//! m.start(t0, wall);
//! let actions: Vec<Action> = std::iter::from_fn(|| m.poll_action()).collect();
//! assert!(matches!(actions.last(), Some(Action::Connect { resume: None })));
//!
//! // The connect failed: the machine picks a jittered delay in [2 s, 4 s] (the defaults).
//! m.on_disconnect(t0, wall, DisconnectReason::Network("connection refused".into()));
//! let retry_at = m.poll_timeout().unwrap();
//! assert!(retry_at >= t0 + Duration::from_secs(2) && retry_at <= t0 + Duration::from_secs(4));
//! while m.poll_action().is_some() {} // a `disconnected` lifecycle event, then WaitUntil
//!
//! // Time passes (the driver sleeps); at the deadline it connects again.
//! m.handle_timeout(retry_at, wall);
//! let actions: Vec<Action> = std::iter::from_fn(|| m.poll_action()).collect();
//! assert!(matches!(actions.last(), Some(Action::Connect { .. })));
//! ```
//!
//! # Rules
//!
//! * **Backoff** (a [`Disposition::Backoff`] disconnect): the `n`-th consecutive failure waits
//!   a delay drawn uniformly from `[initial, min(max, initial × multiplier^n)]` ("full jitter"
//!   with a floor: the window doubles, the floor stays). With [`Jitter::None`] it waits exactly
//!   `min(max, initial × multiplier^(n-1))`.
//! * Failures count as consecutive until a connection stays up for
//!   [`Backoff::healthy_after`](crate::Backoff::healthy_after); only then does the backoff
//!   (and the `max_retries` / `max_elapsed` budget) reset.
//! * **Prompt** ([`Disposition::Prompt`]: a clean end of stream, an idle close) reconnects after
//!   a delay drawn from [`Policy::prompt_delay`](crate::Policy::prompt_delay) (by default
//!   `[0, PROMPT_MAX_DELAY]`) without counting a failure, provided the
//!   connection had been up for at least [`QUICK_CLOSE`]. A second prompt close in a row of a
//!   connection that lived shorter than that counts as a failure and backs off, so a server
//!   that closes every connection at once cannot make a tight loop.
//! * **After** ([`Disposition::After`], an HTTP `Retry-After`) counts as a failure and waits
//!   at least the server's delay: the larger of it and the backoff delay; when the server's is
//!   larger a spread of up to a tenth of it (at most 1 s) is added so clients told the same
//!   delay do not return together.
//! * An SSE `retry:` ([`SourceItem::RetryHint`]) is the least delay of every later reconnect of
//!   this source, prompt ones included.
//! * **Server delays are capped**: a `Retry-After` or `retry:` longer than
//!   [`Policy::server_delay_cap`](crate::Policy::server_delay_cap) (the larger of
//!   [`Policy::max_server_delay`](crate::Policy::max_server_delay), 5 min by default, and the
//!   backoff maximum) is cut to it, and [`Action::ServerDelayCapped`] says so; a capped
//!   `retry:` is the floor of later reconnects at the cap, not at the server's value.
//! * **Fatal** ([`Disposition::Fatal`]) stops the source at once: no further connect.
//! * `max_retries = n` gives up at the `n+1`-th consecutive failure; `max_elapsed = d` gives up
//!   when the next attempt would start more than `d` after the first failure of the streak.
//! * **Liveness**: a connection (or connection attempt) that yields nothing — no event, no
//!   keep-alive, no cursor — for the stall timeout is closed with
//!   [`DisconnectReason::Stalled`]. [`SourceItem::StallTimeout`] changes the timeout for the
//!   rest of the source's life.
//! * **Resume**: the cursor of the last forwarded event (or [`SourceItem::Cursor`]) is handed
//!   to every reconnect. Events whose id is in the recent-id window are dropped. When the first
//!   [`REPLAY_WARN_AFTER`] events of a connection are all dropped so, with nothing new
//!   delivered, [`Action::OnlyDuplicates`] says so once per connection (a server whose history
//!   was reset reissues ids already delivered).
//! * **Gaps**: for [`Resume::NoReplay`] sources every successful reconnect (and the first
//!   connect after a restart with a saved delivery time) emits a [`Kind::Gap`] event spanning
//!   from the last moment the source was known to deliver to the reconnect; a first connect
//!   after failed attempts, one from the source's start.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chat_model::{
    ConnectionInfo, ConnectionState, Cursor, DisconnectReason, Disposition, Event, GapSpan, Kind,
    Service, SourceItem, Timestamp,
};
use chrono::SecondsFormat;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::dedup::RecentIds;
pub use crate::source::PROMPT_MAX_DELAY;
use crate::source::{Policy, Resume};

/// A connection that ends (promptly) sooner than this after it came up counts as closed at
/// once; two such in a row are treated as a failure and back off.
pub const QUICK_CLOSE: Duration = Duration::from_secs(1);

/// The default size of the recent-id window per source.
pub const DEFAULT_DEDUP_WINDOW: usize = 4096;

/// How many events in a row, right after a connect and with nothing new delivered, must be
/// duplicates before the machine says so ([`Action::OnlyDuplicates`]).
pub const REPLAY_WARN_AFTER: u64 = 10;

/// `t + d`, saturating far in the future instead of overflowing (a server may ask for an
/// absurd `Retry-After`).
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(t)
}

/// How reconnect delays are randomised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Jitter {
    /// Full jitter with a floor: uniform in `[initial, min(max, initial × multiplier^n)]`.
    #[default]
    Full,
    /// No randomness: `min(max, initial × multiplier^(n-1))`, prompt reconnects at once. For
    /// comparisons and tests; many clients would reconnect in lockstep.
    None,
}

/// Settings of a [`SourceMachine`] that are not part of a source's [`Policy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineConfig {
    /// How many recent event ids are remembered for deduplication (0 disables it).
    pub dedup_window: usize,
    /// How delays are randomised.
    pub jitter: Jitter,
    /// The seed of the machine's random number generator.
    pub seed: u64,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            dedup_window: DEFAULT_DEDUP_WINDOW,
            jitter: Jitter::Full,
            seed: 0,
        }
    }
}

/// What the machine asks its driver to do, in order.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Open a connection, resuming after this cursor.
    Connect {
        /// The resume position to hand to [`Source::connect`](crate::Source::connect).
        resume: Option<Cursor>,
    },
    /// Drop the current connection or connection attempt (it stalled). The machine has already
    /// accounted for the disconnect: do not report it again.
    Close {
        /// Why it is closed.
        reason: DisconnectReason,
    },
    /// Nothing to do until this instant (the same as [`SourceMachine::poll_timeout`]).
    WaitUntil(Instant),
    /// Forward this event to the consumer; once the consumer has taken it, `cursor` (when
    /// present) is the position to persist.
    Deliver {
        /// The event, with `source` and `service` set to the machine's.
        event: Event,
        /// The cursor that becomes durable once the event is delivered.
        cursor: Option<Cursor>,
        /// When it was received (the wall-clock time passed with it): the source's last
        /// delivery time once it is taken.
        at: Timestamp,
    },
    /// The resume position advanced without an event; persist it once everything forwarded
    /// before it has been delivered.
    Checkpoint {
        /// The new resume position.
        cursor: Cursor,
        /// When it was received (the wall-clock time passed with it).
        at: Timestamp,
        /// Whether it is the first item since the connection was asked for (a "start from
        /// now" baseline, saved at once when it changes the saved position).
        baseline: bool,
    },
    /// An event was dropped as a duplicate of one delivered recently.
    Drop {
        /// Its id.
        id: String,
    },
    /// Since the connection came up the server has sent only events already delivered:
    /// [`REPLAY_WARN_AFTER`] in a row and nothing new. Its history may have been reset (ids
    /// reissued), so new messages are being dropped as old ones; removing the source's saved
    /// state is the fix. Emitted at most once per connection; the driver logs it.
    OnlyDuplicates {
        /// How many were dropped in a row.
        dropped: u64,
    },
    /// A server asked for a longer delay than the policy allows
    /// ([`Policy::server_delay_cap`](crate::Policy::server_delay_cap)); the cap is used
    /// instead. The driver logs it.
    ServerDelayCapped {
        /// Where the delay came from.
        from: ServerDelay,
        /// What the server asked for.
        asked: Duration,
        /// What is used instead.
        cap: Duration,
    },
    /// Forward this lifecycle ([`Kind::Connection`]) or [`Kind::Gap`] event.
    Emit(Event),
    /// The source has stopped for good; no further action follows.
    GiveUp(Outcome),
}

/// Where a server-given delay came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerDelay {
    /// An HTTP `Retry-After` ([`Disposition::After`]).
    RetryAfter,
    /// An SSE `retry:` field ([`SourceItem::RetryHint`]).
    RetryHint,
}

impl std::fmt::Display for ServerDelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerDelay::RetryAfter => "Retry-After",
            ServerDelay::RetryHint => "retry:",
        })
    }
}

/// How a source ended.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// It was still running when the supervisor shut down.
    Running,
    /// A fatal error (bad credentials, forbidden, not found, bad configuration).
    Fatal(DisconnectReason),
    /// Retries or time ran out; `reason` ended the last attempt.
    GaveUp {
        /// The reason of the last failure.
        reason: DisconnectReason,
        /// How many consecutive failures there were.
        failures: u32,
    },
    /// The source's task panicked (a bug in the source).
    Panicked(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Running => f.write_str("still running at shutdown"),
            Outcome::Fatal(reason) => write!(f, "stopped: {reason}"),
            Outcome::GaveUp { reason, failures } => {
                write!(f, "gave up after {failures} failed attempts: {reason}")
            }
            Outcome::Panicked(msg) => write!(f, "crashed: {msg}"),
        }
    }
}

/// Where a source is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SourceState {
    /// Not started yet.
    Idle,
    /// A connection attempt is under way.
    Connecting,
    /// Connected and reading.
    Connected,
    /// Waiting before the next attempt.
    BackingOff,
    /// Stopped after running out of retries or time.
    GaveUp,
    /// Stopped by a fatal error.
    Failed,
    /// Stopped by a shutdown.
    Stopped,
}

impl SourceState {
    /// The kebab-case name (`backing-off`), as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Idle => "idle",
            SourceState::Connecting => "connecting",
            SourceState::Connected => "connected",
            SourceState::BackingOff => "backing-off",
            SourceState::GaveUp => "gave-up",
            SourceState::Failed => "failed",
            SourceState::Stopped => "stopped",
        }
    }

    /// Whether the source has ended by failing (gave up or fatal).
    pub fn has_failed(self) -> bool {
        matches!(self, SourceState::GaveUp | SourceState::Failed)
    }
}

impl std::fmt::Display for SourceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters and status of one source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceStats {
    /// The source's name.
    pub name: String,
    /// Its service.
    pub service: Service,
    /// Where it is in its life.
    pub state: SourceState,
    /// Connection attempts started.
    pub attempts: u32,
    /// Successful connections after the first.
    pub reconnects: u64,
    /// Events forwarded to the stream (after deduplication).
    pub delivered: u64,
    /// Events dropped as duplicates.
    pub duplicates: u64,
    /// Gap events emitted.
    pub gaps: u64,
    /// Malformed frames the source reported and skipped.
    pub malformed: u64,
    /// When the last event was forwarded (wall clock).
    pub last_event_at: Option<Timestamp>,
    /// The last disconnect reason or malformed-frame error.
    pub last_error: Option<String>,
    /// Since when the source has not been connected (wall clock): set when it starts and
    /// at each disconnect of a live connection, kept through failed attempts, cleared when a
    /// connection comes up. `None` while connected.
    pub disconnected_since: Option<Timestamp>,
}

/// What a machine knows from a previous run (the state file).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restored {
    /// The last durable resume cursor.
    pub cursor: Option<Cursor>,
    /// When the source was last known to deliver.
    pub last_delivery_at: Option<Timestamp>,
    /// The ids delivered last, oldest first.
    pub recent_ids: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Idle,
    Connecting {
        since: Instant,
    },
    Connected {
        since: Instant,
        last_activity: Instant,
    },
    Waiting {
        until: Instant,
    },
    Stopped,
}

/// The deterministic supervisor of one source. See the [module docs](self) for the rules.
#[derive(Debug)]
pub struct SourceMachine {
    policy: Policy,
    jitter: Jitter,
    rng: StdRng,
    phase: Phase,
    actions: VecDeque<Action>,
    cursor: Option<Cursor>,
    dedup: RecentIds,
    failures: u32,
    failing_since: Option<Instant>,
    quick_closes: u32,
    retry_hint: Option<Duration>,
    stall_timeout: Duration,
    last_alive_wall: Option<Timestamp>,
    gap_reason: Option<String>,
    restart_gap_from: Option<Timestamp>,
    /// When the source started (its first attempt): for [`Resume::NoReplay`] sources, what a
    /// failed first attempt may have missed is a gap from here.
    started_wall: Option<Timestamp>,
    ever_connected: bool,
    /// Duplicates dropped in a row since the connection came up, before anything new.
    replayed_in_a_row: u64,
    /// Whether the current connection delivered something new or was already warned about.
    replay_settled: bool,
    /// Whether nothing has been delivered since the last connect was asked for (its first
    /// checkpoint is a baseline).
    fresh_connection: bool,
    gap_seq: u64,
    lifecycle_seq: u64,
    stats: SourceStats,
}

impl SourceMachine {
    /// A machine for the source `name` of `service`, supervised by `policy`.
    pub fn new(
        name: impl Into<String>,
        service: Service,
        policy: Policy,
        config: MachineConfig,
    ) -> Self {
        let stall_timeout = policy.stall_timeout;
        SourceMachine {
            jitter: config.jitter,
            rng: StdRng::seed_from_u64(config.seed),
            phase: Phase::Idle,
            actions: VecDeque::new(),
            cursor: None,
            dedup: RecentIds::new(config.dedup_window),
            failures: 0,
            failing_since: None,
            quick_closes: 0,
            retry_hint: None,
            stall_timeout,
            last_alive_wall: None,
            gap_reason: None,
            restart_gap_from: None,
            started_wall: None,
            ever_connected: false,
            replayed_in_a_row: 0,
            replay_settled: false,
            fresh_connection: false,
            gap_seq: 0,
            lifecycle_seq: 0,
            stats: SourceStats {
                name: name.into(),
                service,
                state: SourceState::Idle,
                attempts: 0,
                reconnects: 0,
                delivered: 0,
                duplicates: 0,
                gaps: 0,
                malformed: 0,
                last_event_at: None,
                last_error: None,
                disconnected_since: None,
            },
            policy,
        }
    }

    /// Loads what a previous run saved: the cursor for the first connect, the recent ids, and
    /// (for [`Resume::NoReplay`] sources) the delivery time the first connect's gap starts at.
    /// Call before [`start`](Self::start).
    pub fn restore(&mut self, restored: Restored) {
        if restored.cursor.is_some() {
            self.cursor = restored.cursor;
        }
        for id in &restored.recent_ids {
            self.dedup.insert(id);
        }
        self.restart_gap_from = restored.last_delivery_at;
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.stats.name
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Where the source is in its life.
    pub fn state(&self) -> SourceState {
        self.stats.state
    }

    /// Counters and status.
    pub fn stats(&self) -> &SourceStats {
        &self.stats
    }

    /// The cursor the next connect would resume after.
    pub fn cursor(&self) -> Option<&Cursor> {
        self.cursor.as_ref()
    }

    /// The stall timeout in force.
    pub fn stall_timeout(&self) -> Duration {
        self.stall_timeout
    }

    /// Consecutive failures since the last healthy connection.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// The recent-id window.
    pub fn recent_ids(&self) -> &RecentIds {
        &self.dedup
    }

    /// Starts the source: asks for the first connection.
    pub fn start(&mut self, now: Instant, wall: Timestamp) {
        if matches!(self.phase, Phase::Idle) {
            self.stats.disconnected_since = Some(wall);
            self.started_wall = Some(wall);
            self.begin_attempt(now, wall);
        }
    }

    /// The next action to carry out, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next (a stall deadline or
    /// the end of a backoff wait); `None` when nothing is timed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle | Phase::Stopped => None,
            Phase::Connecting { since } => Some(later(since, self.stall_timeout)),
            Phase::Connected { last_activity, .. } => {
                Some(later(last_activity, self.stall_timeout))
            }
            Phase::Waiting { until } => Some(until),
        }
    }

    /// Time has reached `now`: detect a stall or end a wait. Harmless when nothing is due.
    pub fn handle_timeout(&mut self, now: Instant, wall: Timestamp) {
        match self.phase {
            Phase::Connecting { since } if now >= later(since, self.stall_timeout) => {
                self.close_stalled(now, wall, now - since)
            }
            Phase::Connected { last_activity, .. }
                if now >= later(last_activity, self.stall_timeout) =>
            {
                self.close_stalled(now, wall, now - last_activity)
            }
            Phase::Waiting { until } if now >= until => self.begin_attempt(now, wall),
            _ => {}
        }
    }

    /// The connection asked for by the last [`Action::Connect`] is up.
    pub fn on_connected(&mut self, now: Instant, wall: Timestamp) {
        if !matches!(self.phase, Phase::Connecting { .. }) {
            return;
        }
        let reconnect = self.ever_connected;
        self.phase = Phase::Connected {
            since: now,
            last_activity: now,
        };
        self.stats.state = SourceState::Connected;
        self.stats.disconnected_since = None;
        self.replayed_in_a_row = 0;
        self.replay_settled = false;
        if reconnect {
            self.stats.reconnects += 1;
        }
        let attempt = self.stats.attempts;
        self.emit_lifecycle(
            wall,
            ConnectionState::Connected,
            attempt,
            None,
            None,
            "connected".to_owned(),
        );
        if self.policy.resume == Resume::NoReplay {
            let span = if reconnect {
                self.last_alive_wall.map(|from| {
                    (
                        from,
                        format!("reconnected after: {}", self.gap_reason_text()),
                    )
                })
            } else if let Some(from) = self.restart_gap_from {
                Some((from, "the previous run ended".to_owned()))
            } else if self.stats.attempts > 1 {
                // The first attempts failed (a swallowed or stalled answer, a refusal): what
                // was said since the source started cannot be replayed.
                self.started_wall.map(|from| {
                    (
                        from,
                        format!(
                            "the first connection attempts failed: {}",
                            self.stats
                                .last_error
                                .clone()
                                .unwrap_or_else(|| "unknown reason".to_owned())
                        ),
                    )
                })
            } else {
                None
            };
            if let Some((from, why)) = span {
                self.emit_gap(from, wall, &why);
            }
        }
        self.restart_gap_from = None;
        self.last_alive_wall = Some(wall);
        self.ever_connected = true;
    }

    /// The current connection produced an item.
    pub fn on_item(&mut self, now: Instant, wall: Timestamp, item: SourceItem) {
        let Phase::Connected { since, .. } = self.phase else {
            return;
        };
        self.phase = Phase::Connected {
            since,
            last_activity: now,
        };
        self.last_alive_wall = Some(wall);
        match item {
            SourceItem::Event { mut event, cursor } => {
                event.source.clone_from(&self.stats.name);
                event.service.clone_from(&self.stats.service);
                if !event.id.is_empty() && !self.dedup.insert(&event.id) {
                    self.stats.duplicates += 1;
                    self.actions.push_back(Action::Drop { id: event.id });
                    if !self.replay_settled {
                        self.replayed_in_a_row += 1;
                        if self.replayed_in_a_row >= REPLAY_WARN_AFTER {
                            self.replay_settled = true;
                            self.actions.push_back(Action::OnlyDuplicates {
                                dropped: self.replayed_in_a_row,
                            });
                        }
                    }
                    return;
                }
                self.replay_settled = true;
                if let Some(c) = &cursor {
                    self.cursor = Some(c.clone());
                }
                self.stats.delivered += 1;
                self.stats.last_event_at = Some(wall);
                self.fresh_connection = false;
                self.actions.push_back(Action::Deliver {
                    event,
                    cursor,
                    at: wall,
                });
            }
            SourceItem::Cursor(c) => {
                self.cursor = Some(c.clone());
                self.actions.push_back(Action::Checkpoint {
                    cursor: c,
                    at: wall,
                    baseline: std::mem::take(&mut self.fresh_connection),
                });
            }
            SourceItem::RetryHint(d) => {
                self.retry_hint = Some(self.cap_server_delay(ServerDelay::RetryHint, d))
            }
            SourceItem::StallTimeout(d) if !d.is_zero() => self.stall_timeout = d,
            SourceItem::Malformed { error } => {
                self.stats.malformed += 1;
                self.stats.last_error = Some(format!("malformed frame skipped: {error}"));
            }
            // KeepAlive, and anything later versions add, is proof of life only.
            _ => {}
        }
    }

    /// The driver could not read the connection until `now` (it was waiting for a slow
    /// consumer): the stall clock restarts, since the silence was not the server's.
    pub fn on_reading_resumed(&mut self, now: Instant) {
        if let Phase::Connected {
            since,
            last_activity,
        } = self.phase
        {
            self.phase = Phase::Connected {
                since,
                last_activity: last_activity.max(now),
            };
        }
    }

    /// The current connection (or connection attempt) ended.
    pub fn on_disconnect(&mut self, now: Instant, wall: Timestamp, reason: DisconnectReason) {
        self.disconnected(now, wall, reason);
    }

    /// The driver is shutting down: stop without further actions.
    pub fn on_shutdown(&mut self) {
        if !matches!(self.phase, Phase::Stopped) {
            self.phase = Phase::Stopped;
            self.stats.state = SourceState::Stopped;
        }
    }

    fn gap_reason_text(&self) -> String {
        self.gap_reason
            .clone()
            .unwrap_or_else(|| "unknown reason".to_owned())
    }

    fn close_stalled(&mut self, now: Instant, wall: Timestamp, idle: Duration) {
        let reason = DisconnectReason::Stalled { idle };
        self.actions.push_back(Action::Close {
            reason: reason.clone(),
        });
        self.disconnected(now, wall, reason);
    }

    fn begin_attempt(&mut self, now: Instant, wall: Timestamp) {
        self.stats.attempts += 1;
        self.phase = Phase::Connecting { since: now };
        self.stats.state = SourceState::Connecting;
        let attempt = self.stats.attempts;
        self.emit_lifecycle(
            wall,
            ConnectionState::Connecting,
            attempt,
            None,
            None,
            format!("connecting (attempt {attempt})"),
        );
        self.fresh_connection = true;
        self.actions.push_back(Action::Connect {
            resume: self.cursor.clone(),
        });
    }

    fn disconnected(&mut self, now: Instant, wall: Timestamp, reason: DisconnectReason) {
        let (was_connected, up_for) = match self.phase {
            Phase::Connected { since, .. } => (true, now.saturating_duration_since(since)),
            Phase::Connecting { .. } => (false, Duration::ZERO),
            _ => return,
        };
        let text = reason.to_string();
        self.stats.last_error = Some(text.clone());
        if was_connected {
            self.stats.disconnected_since = Some(wall);
            self.gap_reason = Some(text);
            if up_for >= self.policy.backoff.healthy_after {
                self.failures = 0;
                self.failing_since = None;
            }
        }
        if up_for >= QUICK_CLOSE {
            self.quick_closes = 0;
        }

        let delay = match reason.disposition() {
            Disposition::Fatal => {
                self.stop(wall, SourceState::Failed, Outcome::Fatal(reason));
                return;
            }
            Disposition::Prompt => {
                if was_connected && up_for >= QUICK_CLOSE {
                    self.prompt_delay()
                } else {
                    self.quick_closes += 1;
                    if self.quick_closes <= 1 {
                        self.prompt_delay()
                    } else {
                        self.fail(now);
                        self.backoff_delay()
                    }
                }
            }
            Disposition::After(server) => {
                let server = self.cap_server_delay(ServerDelay::RetryAfter, server);
                self.fail(now);
                let backoff = self.backoff_delay();
                if backoff >= server {
                    backoff
                } else {
                    server.saturating_add(self.server_spread(server))
                }
            }
            // Backoff, and anything later versions add.
            _ => {
                self.fail(now);
                self.backoff_delay()
            }
        };
        let delay = match self.retry_hint {
            Some(hint) => delay.max(hint),
            None => delay,
        };

        if self.failures > 0 {
            let out_of_retries = self.policy.max_retries.is_some_and(|n| self.failures > n);
            let out_of_time = match (self.policy.max_elapsed, self.failing_since) {
                (Some(budget), Some(since)) => {
                    later(now, delay).saturating_duration_since(since) > budget
                }
                _ => false,
            };
            if out_of_retries || out_of_time {
                let failures = self.failures;
                self.stop(
                    wall,
                    SourceState::GaveUp,
                    Outcome::GaveUp { reason, failures },
                );
                return;
            }
        }

        let until = later(now, delay);
        self.phase = Phase::Waiting { until };
        self.stats.state = SourceState::BackingOff;
        let attempt = self.stats.attempts;
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.emit_lifecycle(
            wall,
            ConnectionState::Disconnected,
            attempt,
            Some(reason.to_string()),
            Some(ms),
            format!(
                "disconnected: {reason}; next attempt in {:.1}s",
                delay.as_secs_f64()
            ),
        );
        self.actions.push_back(Action::WaitUntil(until));
    }

    /// `asked`, cut to the policy's cap (saying so with [`Action::ServerDelayCapped`]).
    fn cap_server_delay(&mut self, from: ServerDelay, asked: Duration) -> Duration {
        let cap = self.policy.server_delay_cap();
        if asked <= cap {
            return asked;
        }
        self.actions
            .push_back(Action::ServerDelayCapped { from, asked, cap });
        cap
    }

    fn fail(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.failing_since.is_none() {
            self.failing_since = Some(now);
        }
    }

    fn stop(&mut self, wall: Timestamp, state: SourceState, outcome: Outcome) {
        let reason = match &outcome {
            Outcome::Fatal(r) | Outcome::GaveUp { reason: r, .. } => r.to_string(),
            other => other.to_string(),
        };
        let attempt = self.stats.attempts;
        self.phase = Phase::Stopped;
        self.stats.state = state;
        self.emit_lifecycle(
            wall,
            ConnectionState::Disconnected,
            attempt,
            Some(reason.clone()),
            None,
            format!("disconnected: {reason}; not retrying"),
        );
        self.emit_lifecycle(
            wall,
            ConnectionState::GaveUp,
            attempt,
            Some(reason),
            None,
            format!("gave up: {outcome}"),
        );
        self.actions.push_back(Action::GiveUp(outcome));
    }

    /// The delay after the current (`self.failures`-th) consecutive failure.
    fn backoff_delay(&mut self) -> Duration {
        let b = &self.policy.backoff;
        let cap = b.max;
        let floor = b.initial.min(cap);
        let n = self.failures.max(1);
        let grow = |exp: u32| -> Duration {
            let secs = b.initial.as_secs_f64() * b.multiplier.max(1.0).powi(exp.min(1024) as i32);
            if !secs.is_finite() || secs >= cap.as_secs_f64() {
                cap
            } else {
                Duration::from_secs_f64(secs).clamp(floor, cap)
            }
        };
        match self.jitter {
            Jitter::None => grow(n - 1),
            _ => {
                let ceiling = grow(n);
                self.rng.random_range(floor..=ceiling)
            }
        }
    }

    fn prompt_delay(&mut self) -> Duration {
        let range = self.policy.prompt_delay;
        match self.jitter {
            Jitter::None => range.min,
            _ => {
                let max = range.max.min(self.policy.backoff.max).max(range.min);
                self.rng.random_range(range.min..=max)
            }
        }
    }

    fn server_spread(&mut self, server: Duration) -> Duration {
        match self.jitter {
            Jitter::None => Duration::ZERO,
            _ => {
                let max = (server / 10).min(Duration::from_secs(1));
                self.rng.random_range(Duration::ZERO..=max)
            }
        }
    }

    fn emit_gap(&mut self, from: Timestamp, to: Timestamp, why: &str) {
        self.gap_seq += 1;
        self.stats.gaps += 1;
        let id = format!(
            "gap:{}:{}:{}",
            self.stats.name,
            self.gap_seq,
            to.timestamp_millis()
        );
        let mut event = Event::new(
            self.stats.name.clone(),
            self.stats.service.clone(),
            Kind::Gap,
            id,
            "",
            to,
        )
        .with_text(format!(
            "messages between {} and {} may be missing ({why})",
            from.to_rfc3339_opts(SecondsFormat::Millis, true),
            to.to_rfc3339_opts(SecondsFormat::Millis, true),
        ));
        event.gap = Some(GapSpan { from, to });
        self.actions.push_back(Action::Emit(event));
    }

    fn emit_lifecycle(
        &mut self,
        wall: Timestamp,
        state: ConnectionState,
        attempt: u32,
        reason: Option<String>,
        retry_in_ms: Option<u64>,
        text: String,
    ) {
        self.lifecycle_seq += 1;
        let id = format!(
            "connection:{}:{}:{}",
            self.stats.name,
            self.lifecycle_seq,
            wall.timestamp_millis()
        );
        let mut event = Event::new(
            self.stats.name.clone(),
            self.stats.service.clone(),
            Kind::Connection,
            id,
            "",
            wall,
        )
        .with_text(text);
        event.connection = Some(ConnectionInfo {
            state,
            attempt,
            reason,
            retry_in_ms,
        });
        self.actions.push_back(Action::Emit(event));
    }
}
