//! The drift-free request schedule, sans IO: it takes responses and [`Instant`]s and answers
//! which path to request next and when.
//!
//! The document's rule: remember the first range value (`FIRST`) and the moment it was
//! queried (`START`); the timeslice starting at range value `V` is requested at
//! `START + (V - FIRST)` seconds. Example: first timestamp 1000 queried at `START`, the
//! response to `/timeslice/1100/10` says `refreshInterval: 5` and `range: [1100, 1110]`, so the
//! next request is `/timeslice/1110/5` at `START + 110`.
//!
//! Because request times come from the anchor and the range, never from "now + interval", a
//! slow response or a retry never pushes later requests back. When a request goes out later
//! than its slot (a slow response, a failed poll retried after a backoff, a resume after a
//! restart), its timeslice is widened so that it ends where an on-time schedule would be:
//! it starts at the last successful range end, so nothing in between is lost.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The default window cap: a widened timeslice never spans more than this many seconds; a
/// longer gap is caught up in several back-to-back requests.
pub const DEFAULT_MAX_WINDOW: u64 = 3600;

/// Which request to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// `/default`: the start of a session (or after a host switch).
    Default,
    /// `/timeslice/{from}/{width}`.
    Timeslice {
        /// The range value the slice starts at (the previous range end).
        from: i64,
        /// Its length in seconds: the refresh interval, or more when catching up.
        width: u64,
    },
}

/// The next request: its path (relative to the server's base URL) and when to send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// `/socialstream/get.json/{channel}/default` or `.../timeslice/{from}/{width}`.
    pub path: String,
    /// When to send it; an instant in the past means "now".
    pub at: Instant,
    /// The request, decoded.
    pub kind: RequestKind,
}

/// The resume part of the schedule, stored in the cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The end of the last range received (the next timeslice starts here).
    pub range_end: Option<i64>,
    /// The last refresh interval, seconds.
    pub refresh_interval: u64,
    /// The anchor's range value (the first range value of the session).
    pub anchor_range: Option<i64>,
    /// When the anchor was queried, Unix milliseconds (wall clock, so it survives restarts).
    pub anchor_unix_ms: Option<i64>,
    /// Whether the next request must be `/default` (a session start or a host switch).
    pub needs_default: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Anchor {
    first: i64,
    start: Instant,
}

/// The drift-free poll schedule of one channel.
#[derive(Clone, Debug)]
pub struct Schedule {
    channel: String,
    anchor: Option<Anchor>,
    range_end: Option<i64>,
    interval: u64,
    max_window: u64,
    needs_default: bool,
    not_before: Option<Instant>,
}

/// What a successful response changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The refresh interval differs from the one before (or is the session's first).
    pub interval_changed: bool,
    /// The server's range ended before the slice asked for (a reset server, or a cursor from
    /// another server): the schedule takes the server's position with a new `/default`.
    pub server_behind: bool,
}

impl Schedule {
    /// A new session for `channel` that starts with `/default`; `interval` is used until the
    /// server names one.
    pub fn new(channel: impl Into<String>, interval: u64) -> Self {
        Schedule {
            channel: channel.into(),
            anchor: None,
            range_end: None,
            interval: interval.max(1),
            max_window: DEFAULT_MAX_WINDOW,
            needs_default: true,
            not_before: None,
        }
    }

    /// Picks up a saved schedule; `now` and `now_unix_ms` are the same moment on the monotonic
    /// and the wall clock, so the saved anchor maps onto this process's clock.
    pub fn resume(
        channel: impl Into<String>,
        state: &ScheduleState,
        now: Instant,
        now_unix_ms: i64,
    ) -> Self {
        let mut s = Schedule::new(channel, state.refresh_interval);
        s.range_end = state.range_end;
        s.needs_default = state.needs_default || state.range_end.is_none();
        if let (Some(first), Some(at_ms)) = (state.anchor_range, state.anchor_unix_ms) {
            let ago = Duration::from_millis(u64::try_from(now_unix_ms - at_ms).unwrap_or(0));
            s.anchor = Some(match now.checked_sub(ago) {
                Some(start) => Anchor { first, start },
                // Too far back for this clock: move the anchor forward by whole seconds.
                None => Anchor {
                    first: first + i64::try_from(ago.as_secs()).unwrap_or(i64::MAX / 2),
                    start: now,
                },
            });
        } else if s.range_end.is_some() {
            s.anchor = Some(Anchor {
                first: s.range_end.unwrap_or(0),
                start: now,
            });
        }
        s
    }

    /// Caps how many seconds one widened timeslice may span.
    pub fn with_max_window(mut self, seconds: u64) -> Self {
        self.max_window = seconds.max(1);
        self
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The current refresh interval in seconds.
    pub fn refresh_interval(&self) -> u64 {
        self.interval
    }

    /// The end of the last range received.
    pub fn range_end(&self) -> Option<i64> {
        self.range_end
    }

    /// The state to save in a cursor; `now`/`now_unix_ms` as for [`Schedule::resume`].
    pub fn state(&self, now: Instant, now_unix_ms: i64) -> ScheduleState {
        let (anchor_range, anchor_unix_ms) = match self.anchor {
            Some(a) => {
                let since = now.saturating_duration_since(a.start).as_millis();
                let since = i64::try_from(since).unwrap_or(i64::MAX / 2);
                let before =
                    i64::try_from(a.start.saturating_duration_since(now).as_millis()).unwrap_or(0);
                (Some(a.first), Some(now_unix_ms - since + before))
            }
            None => (None, None),
        };
        ScheduleState {
            range_end: self.range_end,
            refresh_interval: self.interval,
            anchor_range,
            anchor_unix_ms,
            needs_default: self.needs_default,
        }
    }

    /// The range value an on-time schedule has reached at `t`.
    fn current_value(&self, a: Anchor, t: Instant) -> i64 {
        let secs = t.saturating_duration_since(a.start).as_secs();
        a.first + i64::try_from(secs).unwrap_or(i64::MAX / 2)
    }

    /// When the timeslice starting at `v` is due: `START + (v - FIRST)`.
    fn due(&self, a: Anchor, v: i64) -> Instant {
        let offset = v - a.first;
        if offset >= 0 {
            a.start + Duration::from_secs(offset.unsigned_abs())
        } else {
            a.start
                .checked_sub(Duration::from_secs(offset.unsigned_abs()))
                .unwrap_or(a.start)
        }
    }

    /// The next request and when to send it, if sent no earlier than `now`.
    pub fn next(&self, now: Instant) -> Planned {
        let base = format!("/socialstream/get.json/{}", self.channel);
        let (anchor, from) = match (self.needs_default, self.anchor, self.range_end) {
            (false, Some(a), Some(v)) => (a, v),
            _ => {
                return Planned {
                    path: format!("{base}/default"),
                    at: self.not_before.unwrap_or(now),
                    kind: RequestKind::Default,
                };
            }
        };
        let mut at = self.due(anchor, from);
        if let Some(nb) = self.not_before {
            at = at.max(nb);
        }
        let send = at.max(now);
        let on_time_end =
            self.current_value(anchor, send) + i64::try_from(self.interval).unwrap_or(1);
        let wanted = u64::try_from(on_time_end - from).unwrap_or(0);
        let width = wanted.clamp(self.interval, self.max_window.max(self.interval));
        Planned {
            path: format!("{base}/timeslice/{from}/{width}"),
            at,
            kind: RequestKind::Timeslice { from, width },
        }
    }

    /// Records a successful response to `planned`, which was sent at `sent_at`.
    ///
    /// A timeslice answered with a range that ends before the slice's start means the
    /// server's position lies behind the cursor: waiting for it to catch up would swallow
    /// everything it sends meanwhile, so the session starts over with `/default` (the range
    /// end is kept for the cursor until then) and [`Applied::server_behind`] says so.
    pub fn on_success(
        &mut self,
        planned: &Planned,
        sent_at: Instant,
        range: [i64; 2],
        refresh_interval: Option<u64>,
    ) -> Applied {
        let first_of_session = matches!(planned.kind, RequestKind::Default);
        let new_interval = refresh_interval.unwrap_or(self.interval).max(1);
        let interval_changed = first_of_session || new_interval != self.interval;
        self.interval = new_interval;
        self.not_before = None;
        let mut server_behind = false;
        match planned.kind {
            RequestKind::Default => {
                self.anchor = Some(Anchor {
                    first: range[1],
                    start: sent_at,
                });
                self.range_end = Some(range[1]);
                self.needs_default = false;
            }
            RequestKind::Timeslice { from, .. } => {
                if range[1] < from {
                    server_behind = true;
                    self.restart_with_default();
                } else if range[1] == from {
                    // No progress: do not spin; ask again one interval later.
                    self.not_before = Some(sent_at + Duration::from_secs(self.interval));
                } else {
                    self.range_end = Some(range[1]);
                }
            }
        }
        Applied {
            interval_changed,
            server_behind,
        }
    }

    /// Records a failed request; the next one goes out no earlier than `retry_at` and covers
    /// everything since the last successful range end.
    pub fn on_failure(&mut self, retry_at: Instant) {
        self.not_before = Some(retry_at);
    }

    /// Starts over with `/default` (after a host switch); the range end is kept for the cursor.
    pub fn restart_with_default(&mut self) {
        self.needs_default = true;
        self.anchor = None;
        self.not_before = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH: &str = "1234";

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Answers `planned` as an on-time server would: `[from, from + width]`.
    fn answer(s: &mut Schedule, p: &Planned, sent: Instant, interval: u64) -> Applied {
        let range = match p.kind {
            RequestKind::Default => [0, 1000],
            RequestKind::Timeslice { from, width } => [from, from + width as i64],
        };
        s.on_success(p, sent, range, Some(interval))
    }

    #[test]
    fn the_documents_example() {
        let start = Instant::now();
        let mut s = Schedule::new(CH, 10);
        let p = s.next(start);
        assert_eq!(p.path, "/socialstream/get.json/1234/default");
        assert_eq!(p.at, start);
        answer(&mut s, &p, start, 10);
        // Walk the hand clock through the slices 1000..1100, each sent exactly on time.
        for k in 0..10u64 {
            let p = s.next(start);
            let v = 1000 + 10 * k as i64;
            assert_eq!(
                p.path,
                format!("/socialstream/get.json/1234/timeslice/{v}/10")
            );
            assert_eq!(p.at, start + secs(10 * k));
            answer(&mut s, &p, p.at, 10);
        }
        let p = s.next(start);
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/1100/10");
        assert_eq!(p.at, start + secs(100));
        // The response to /timeslice/1100/10 says refreshInterval=5.
        let applied = s.on_success(&p, p.at, [1100, 1110], Some(5));
        assert!(applied.interval_changed);
        let p = s.next(start + secs(100));
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/1110/5");
        assert_eq!(p.at, start + secs(110));
        // And the one after that is 5 s later.
        s.on_success(&p, p.at, [1110, 1115], Some(5));
        let p = s.next(start + secs(111));
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/1115/5");
        assert_eq!(p.at, start + secs(115));
    }

    #[test]
    fn slow_responses_do_not_accumulate_delay() {
        let start = Instant::now();
        let mut s = Schedule::new(CH, 2);
        let p = s.next(start);
        s.on_success(&p, start, [0, 500], Some(2));
        let mut now = start;
        for round in 0..20u64 {
            let p = s.next(now);
            let send = p.at.max(now);
            // Every response takes 3.5 s, longer than the 2 s interval.
            now = send + Duration::from_millis(3500);
            let RequestKind::Timeslice { from, width } = p.kind else {
                panic!()
            };
            // The slice always ends where an on-time schedule would be at its send time.
            let on_time = 500 + send.duration_since(start).as_secs() as i64 + 2;
            assert_eq!(from + width as i64, on_time, "round {round}");
            s.on_success(&p, send, [from, from + width as i64], Some(2));
        }
        // Every request is due on the original grid: START + (from - FIRST).
        let p = s.next(now);
        let RequestKind::Timeslice { from, .. } = p.kind else {
            panic!()
        };
        assert_eq!(p.at, start + secs((from - 500) as u64));
        assert!(p.at <= now, "still behind, so it goes out at once");
    }

    #[test]
    fn on_time_grid_after_a_single_slow_response() {
        let start = Instant::now();
        let mut s = Schedule::new(CH, 5);
        let p = s.next(start);
        s.on_success(&p, start, [0, 1000], Some(5));
        let p = s.next(start); // /timeslice/1000/5 at START
        s.on_success(&p, start, [1000, 1005], Some(5));
        let p = s.next(start); // due at START+5
        assert_eq!(p.at, start + secs(5));
        // It is answered 7 s late (at START+12): the next one goes out at once, widened to
        // end at 1012 + 5 ...
        s.on_success(&p, p.at, [1005, 1010], Some(5));
        let now = start + secs(12);
        let p = s.next(now);
        assert_eq!(p.at, start + secs(10));
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/1010/7");
        s.on_success(&p, now, [1010, 1017], Some(5));
        // ... and the following one is back on the grid: START + 17.
        let p = s.next(now);
        assert_eq!(p.at, start + secs(17));
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/1017/5");
    }

    #[test]
    fn failures_widen_the_next_slice_from_the_last_good_end() {
        let start = Instant::now();
        let mut s = Schedule::new(CH, 2);
        let p = s.next(start);
        s.on_success(&p, start, [0, 100], Some(2));
        let p = s.next(start);
        s.on_success(&p, start, [100, 102], Some(2));
        // The poll due at START+2 fails; retry after 3 s, and that one fails too.
        let p = s.next(start);
        assert_eq!(p.at, start + secs(2));
        s.on_failure(start + secs(5));
        let p = s.next(start + secs(2));
        assert_eq!(p.at, start + secs(5));
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/102/5");
        s.on_failure(start + secs(9));
        let p = s.next(start + secs(5));
        assert_eq!(p.at, start + secs(9));
        // From the last good end (102) to the on-time end at START+9 (109 + 2).
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/102/9");
        s.on_success(&p, p.at, [102, 111], Some(2));
        let p = s.next(start + secs(9));
        assert_eq!(p.at, start + secs(11));
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/111/2");
    }

    #[test]
    fn interval_change_applies_immediately() {
        let start = Instant::now();
        let mut s = Schedule::new(CH, 10);
        let p = s.next(start);
        assert!(s.on_success(&p, start, [0, 50], Some(3)).interval_changed);
        let p = s.next(start);
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/50/3");
        assert!(!s.on_success(&p, start, [50, 53], Some(3)).interval_changed);
        let p = s.next(start);
        assert_eq!(p.at, start + secs(3));
        assert!(s.on_success(&p, p.at, [53, 56], Some(1)).interval_changed);
        let p = s.next(start + secs(3));
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/56/1");
        assert_eq!(p.at, start + secs(6));
        assert_eq!(s.refresh_interval(), 1);
    }

    #[test]
    fn host_switch_restarts_with_default() {
        let start = Instant::now();
        let mut s = Schedule::new(CH, 2);
        let p = s.next(start);
        s.on_success(&p, start, [0, 100], Some(2));
        s.restart_with_default();
        let p = s.next(start + secs(1));
        assert_eq!(p.kind, RequestKind::Default);
        assert_eq!(p.at, start + secs(1));
        // The new server has its own clock: a new anchor.
        s.on_success(&p, start + secs(1), [0, 5000], Some(2));
        let p = s.next(start + secs(1));
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/5000/2");
        assert_eq!(p.at, start + secs(1));
    }

    #[test]
    fn no_progress_does_not_spin() {
        let start = Instant::now();
        let mut s = Schedule::new(CH, 2);
        let p = s.next(start);
        s.on_success(&p, start, [0, 100], Some(2));
        let p = s.next(start);
        s.on_success(&p, start, [100, 100], Some(2));
        let p = s.next(start);
        assert_eq!(p.at, start + secs(2));
    }

    #[test]
    fn a_server_behind_the_cursor_is_followed_with_default() {
        let start = Instant::now();
        // Resumed from a cursor at range 1000 against a server whose clock says 400.
        let st = ScheduleState {
            range_end: Some(1000),
            refresh_interval: 2,
            anchor_range: Some(990),
            anchor_unix_ms: Some(1_000_000),
            needs_default: false,
        };
        let mut s = Schedule::resume(CH, &st, start, 1_010_000);
        let p = s.next(start);
        assert!(p.path.contains("/timeslice/1000/"), "{}", p.path);
        let applied = s.on_success(&p, start, [400, 400], Some(2));
        assert!(applied.server_behind);
        let p = s.next(start);
        assert_eq!(p.kind, RequestKind::Default);
        assert_eq!(
            p.at, start,
            "at once, not when the server's clock reaches 1000"
        );
        assert!(s.state(start, 0).needs_default);
        assert_eq!(
            s.range_end(),
            Some(1000),
            "kept for the cursor until /default answers"
        );
        s.on_success(&p, start, [0, 398], Some(2));
        let p = s.next(start);
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/398/2");
        // No progress (range end at the start) is not a reset.
        let a = s.on_success(&p, start, [398, 398], Some(2));
        assert!(!a.server_behind);
        assert!(matches!(
            s.next(start).kind,
            RequestKind::Timeslice { from: 398, .. }
        ));
    }

    #[test]
    fn widening_is_capped_and_catches_up_in_steps() {
        let start = Instant::now();
        let mut s = Schedule::new(CH, 2).with_max_window(10);
        let p = s.next(start);
        s.on_success(&p, start, [0, 100], Some(2));
        let now = start + secs(25);
        let p = s.next(now);
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/100/10");
        s.on_success(&p, now, [100, 110], Some(2));
        let p = s.next(now);
        assert!(p.at <= now, "behind schedule: send at once");
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/110/10");
        s.on_success(&p, now, [110, 120], Some(2));
        let p = s.next(now);
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/120/7");
    }

    #[test]
    fn state_round_trips_across_a_restart() {
        let start = Instant::now();
        let mut s = Schedule::new(CH, 2);
        let p = s.next(start);
        s.on_success(&p, start, [0, 100], Some(2));
        let p = s.next(start);
        s.on_success(&p, start, [100, 102], Some(2));
        let unix_at_start = 1_700_000_000_000i64;
        let st = s.state(start + secs(1), unix_at_start + 1000);
        assert_eq!(st.anchor_range, Some(100));
        assert_eq!(st.anchor_unix_ms, Some(unix_at_start));
        assert_eq!(st.range_end, Some(102));
        // A new process, 30 s later on the wall clock.
        let later = start + secs(3);
        let r = Schedule::resume(CH, &st, later, unix_at_start + 30_000);
        let p = r.next(later);
        assert!(p.at <= later);
        assert_eq!(p.path, "/socialstream/get.json/1234/timeslice/102/30");
        let json = serde_json::to_string(&st).unwrap();
        let back: ScheduleState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);
        // A fresh state starts with /default.
        let fresh = Schedule::resume(CH, &Schedule::new(CH, 2).state(later, 0), later, 0);
        assert_eq!(fresh.next(later).kind, RequestKind::Default);
    }
}
