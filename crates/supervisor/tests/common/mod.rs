//! Helpers for driving a `SourceMachine` by hand.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use chat_model::{
    ConnectionState, Cursor, DisconnectReason, Event, Kind, Service, SourceItem, Timestamp,
};
use chrono::TimeZone;
use supervisor::{Action, Backoff, Jitter, MachineConfig, Policy, Resume, SourceMachine};

pub const SECOND: Duration = Duration::from_secs(1);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A policy with round numbers: backoff 2 s .. 64 s, ×2, healthy after 30 s, stall 60 s.
pub fn policy(resume: Resume) -> Policy {
    Policy {
        backoff: Backoff {
            initial: secs(2),
            max: secs(64),
            multiplier: 2.0,
            healthy_after: secs(30),
        },
        stall_timeout: secs(60),
        resume,
        max_retries: None,
        max_elapsed: None,
        prompt_delay: Default::default(),
        max_server_delay: supervisor::DEFAULT_MAX_SERVER_DELAY,
    }
}

pub fn wall0() -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
        .unwrap()
}

/// A machine with a hand-driven clock.
pub struct Sim {
    pub m: SourceMachine,
    pub t0: Instant,
    pub now: Instant,
}

impl Sim {
    pub fn new(policy: Policy) -> Self {
        Sim::with(policy, Jitter::Full, 7, 4096)
    }

    pub fn with(policy: Policy, jitter: Jitter, seed: u64, window: usize) -> Self {
        let m = SourceMachine::new(
            "src",
            Service::Other("test".into()),
            policy,
            MachineConfig {
                dedup_window: window,
                jitter,
                seed,
            },
        );
        let t0 = Instant::now();
        Sim { m, t0, now: t0 }
    }

    pub fn wall(&self) -> Timestamp {
        wall0() + chrono::Duration::from_std(self.now - self.t0).unwrap()
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Advances to the machine's deadline and fires it.
    pub fn fire(&mut self) -> Vec<Action> {
        let deadline = self.m.poll_timeout().expect("a deadline");
        if deadline > self.now {
            self.now = deadline;
        }
        let (now, wall) = (self.now, self.wall());
        self.m.handle_timeout(now, wall);
        self.drain()
    }

    pub fn drain(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.m.poll_action()).collect()
    }

    pub fn start(&mut self) -> Vec<Action> {
        let (now, wall) = (self.now, self.wall());
        self.m.start(now, wall);
        self.drain()
    }

    pub fn connected(&mut self) -> Vec<Action> {
        let (now, wall) = (self.now, self.wall());
        self.m.on_connected(now, wall);
        self.drain()
    }

    pub fn item(&mut self, item: SourceItem) -> Vec<Action> {
        let (now, wall) = (self.now, self.wall());
        self.m.on_item(now, wall, item);
        self.drain()
    }

    pub fn disconnect(&mut self, reason: DisconnectReason) -> Vec<Action> {
        let (now, wall) = (self.now, self.wall());
        self.m.on_disconnect(now, wall, reason);
        self.drain()
    }

    /// Disconnects and returns the delay the machine chose (panics if it stopped instead).
    pub fn fail(&mut self, reason: DisconnectReason) -> Duration {
        let actions = self.disconnect(reason);
        delay_of(&actions, self.now).expect("a wait")
    }

    /// Fires the wait and expects a connect; returns its resume cursor.
    pub fn reconnect(&mut self) -> Option<Cursor> {
        let actions = self.fire();
        connect_of(&actions).expect("a connect")
    }
}

pub fn delay_of(actions: &[Action], now: Instant) -> Option<Duration> {
    actions.iter().find_map(|a| match a {
        Action::WaitUntil(t) => Some(*t - now),
        _ => None,
    })
}

pub fn connect_of(actions: &[Action]) -> Option<Option<Cursor>> {
    actions.iter().find_map(|a| match a {
        Action::Connect { resume } => Some(resume.clone()),
        _ => None,
    })
}

pub fn emitted(actions: &[Action]) -> Vec<&Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(e) => Some(e),
            _ => None,
        })
        .collect()
}

pub fn lifecycle(actions: &[Action]) -> Vec<ConnectionState> {
    emitted(actions)
        .into_iter()
        .filter(|e| e.kind == Kind::Connection)
        .map(|e| e.connection.as_ref().unwrap().state)
        .collect()
}

pub fn gaps(actions: &[Action]) -> Vec<&Event> {
    emitted(actions)
        .into_iter()
        .filter(|e| e.kind == Kind::Gap)
        .collect()
}

pub fn delivered(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Deliver { event, .. } => Some(event.id.clone()),
            _ => None,
        })
        .collect()
}

pub fn event(id: &str) -> Event {
    Event::new(
        "whatever",
        Service::Campfire,
        Kind::Message,
        id,
        "room",
        wall0(),
    )
}

pub fn msg(id: &str) -> SourceItem {
    SourceItem::event(event(id))
}

pub fn msg_at(id: &str, cursor: u64) -> SourceItem {
    SourceItem::Event {
        event: event(id),
        cursor: Some(cursor_of(cursor)),
    }
}

pub fn cursor_of(n: u64) -> Cursor {
    Cursor::from_json(serde_json::json!({ "last_id": n }))
}

pub fn network() -> DisconnectReason {
    DisconnectReason::Network("connection reset".into())
}
