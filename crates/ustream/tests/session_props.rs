//! The session driven without sockets by a model server on a hand clock: long runs with
//! random latencies, interval changes, host switches, failures and resumes, ignore lists.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chat_model::{Event, Kind, SourceItem};
use proptest::prelude::*;
use serde_json::{Value, json};
use ustream::{
    Config, Error, MessageMemory, Request, RequestKind, Response, Session, UstreamCursor,
};

/// The server's range value when the run starts.
const FIRST: i64 = 100_000;
/// The wall clock (Unix ms) when the run starts.
const WALL: i64 = 1_700_000_000_000;
const CH: &str = "7";

fn config() -> Config {
    let mut c = Config::new("http://h0", CH);
    c.max_window = 600;
    c
}

/// A model server: entries of the timeline at whole seconds, the same on every host.
struct Server {
    /// `(createdAt, item)`, oldest first.
    timeline: Vec<(i64, Value)>,
    interval: u64,
}

impl Server {
    /// The answer to `r` when the server's clock reads `now_key`: `/default` gives the last
    /// 30 s of history and `[0, now_key]`; a timeslice gives `[from, from + width]` and what
    /// lies in it.
    fn answer(&self, r: &Request, now_key: i64, extra: Option<Value>) -> Response {
        let (range, lo, hi) = match r.kind {
            RequestKind::Default => ([0, now_key], now_key - 30, now_key),
            RequestKind::Timeslice { from, width } => {
                let end = from + width as i64;
                ([from, end], from, end)
            }
        };
        let mut payload: Vec<Value> = self
            .timeline
            .iter()
            .filter(|(t, _)| *t >= lo && *t < hi)
            .map(|(_, v)| v.clone())
            .collect();
        payload.extend(extra);
        payload.reverse(); // newest first
        let body = json!({"success": true, "refreshInterval": self.interval, "range": range,
            "payload": payload});
        Response::ok(serde_json::to_vec(&body).unwrap())
    }
}

fn message(uid: usize, t: i64, user: &str) -> Value {
    json!({"uid": uid.to_string(), "createdAt": t, "text": format!("m{uid}"),
        "profileNetwork": "twitter", "network": [{"provider": "twitter", "displayName": user}]})
}

/// The events among `items`.
fn events(items: &[SourceItem]) -> Vec<&Event> {
    items.iter().filter_map(SourceItem::as_event).collect()
}

fn message_uids(items: &[SourceItem]) -> Vec<String> {
    events(items)
        .into_iter()
        .filter(|e| e.kind == Kind::Message)
        .filter_map(|e| e.native_id.clone())
        .collect()
}

fn last_cursor(items: &[SourceItem]) -> Option<UstreamCursor> {
    items.iter().rev().find_map(|i| match i {
        SourceItem::Cursor(c) => Some(UstreamCursor::from_cursor(c).unwrap()),
        _ => None,
    })
}

/// How a request is answered.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Ok,
    /// With a `host` item naming the next server.
    SwitchHost,
    Http500,
    Network,
    Garbage,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => Just(Outcome::Ok),
        1 => Just(Outcome::SwitchHost),
        1 => Just(Outcome::Http500),
        1 => Just(Outcome::Network),
        1 => Just(Outcome::Garbage),
    ]
}

/// A run on the hand clock: the session, the clock and what was delivered.
struct Run {
    start: Instant,
    now: Instant,
    session: Session,
    items: Vec<SourceItem>,
    memory: MessageMemory,
    reconnects: usize,
}

impl Run {
    fn new(config: Config) -> Run {
        let start = Instant::now();
        let memory = MessageMemory::new();
        let session = Session::new(config, None, start, WALL)
            .unwrap()
            .with_memory(memory.clone());
        Run {
            start,
            now: start,
            session,
            items: Vec::new(),
            memory,
            reconnects: 0,
        }
    }

    fn wall(&self) -> i64 {
        WALL + self.now.duration_since(self.start).as_millis() as i64
    }

    /// The server's clock: whole seconds since the start.
    fn now_key(&self) -> i64 {
        FIRST + self.now.duration_since(self.start).as_secs() as i64
    }

    /// Waits for the next slot and takes its request.
    fn next_request(&mut self) -> Request {
        let due = self.session.poll_timeout().expect("a next poll is planned");
        self.now = self.now.max(due);
        self.session.handle_timeout(self.now);
        self.session.poll_request().expect("due now")
    }

    fn drain(&mut self) {
        while let Some(i) = self.session.poll_item() {
            self.items.push(i);
        }
    }

    /// After a failure: what a supervisor does, a new session from the last cursor
    /// delivered, some time later.
    fn reconnect(&mut self, config: Config, downtime: Duration) {
        self.drain();
        assert!(self.session.error().is_some());
        self.now += downtime;
        let cursor = last_cursor(&self.items);
        self.session = Session::new(config, cursor, self.now, self.wall())
            .unwrap()
            .with_memory(self.memory.clone());
        self.reconnects += 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A long run with random response latencies and interval changes: the timeslices are
    /// contiguous from the anchor (no gap, no overlap), each goes out no earlier than its slot
    /// on the original grid (`START + (from - FIRST)`), each ends where an on-time schedule is
    /// at its send time (no drift), and the next slot is never more than one interval (the
    /// old or the new one) after a send, within the stall timeout announced.
    #[test]
    fn long_runs_do_not_drift_and_ask_every_second_once(
        steps in prop::collection::vec((0u64..6000, 1u64..6), 1..200)
    ) {
        let mut run = Run::new(config());
        let r = run.next_request();
        prop_assert_eq!(r.kind, RequestKind::Default);
        let server = Server { timeline: Vec::new(), interval: 2 };
        run.session.handle_response(server.answer(&r, FIRST, None), run.now, run.wall());
        let mut interval = 2u64;
        let mut expected_from = FIRST;
        for (latency_ms, next_interval) in steps {
            let due = run.session.poll_timeout().unwrap();
            let r = run.next_request();
            let RequestKind::Timeslice { from, width } = r.kind else {
                return Err(TestCaseError::fail(format!("expected a timeslice: {r:?}")));
            };
            prop_assert_eq!(from, expected_from, "contiguous");
            prop_assert_eq!(due, run.start + Duration::from_secs((from - FIRST) as u64), "on the grid");
            let sent = run.now;
            let elapsed = sent.duration_since(run.start).as_secs() as i64;
            prop_assert_eq!(from + width as i64, FIRST + elapsed + interval as i64, "no drift");
            run.now += Duration::from_millis(latency_ms);
            let server = Server { timeline: Vec::new(), interval: next_interval };
            run.session.handle_response(server.answer(&r, run.now_key(), None), run.now, run.wall());
            prop_assert!(run.session.error().is_none());
            let longest = interval.max(next_interval);
            interval = next_interval;
            expected_from = from + width as i64;
            let next = run.session.poll_timeout().unwrap();
            prop_assert!(next <= sent + Duration::from_secs(longest), "silence bound");
            // ... which the stall timeout in force covers, with a whole request timeout.
            run.drain();
            let stall = run.items.iter().rev()
                .find_map(|i| match i { SourceItem::StallTimeout(d) => Some(*d), _ => None })
                .unwrap();
            prop_assert!(stall > next.saturating_duration_since(run.now) + config().request_timeout);
        }
        let stalls = run.items.iter().filter(|i| matches!(i, SourceItem::StallTimeout(_))).count();
        prop_assert!(stalls >= 1);
    }

    /// Random failures (HTTP 500, a cut connection, garbage), each followed by a reconnect
    /// from the last cursor delivered after some downtime, host switches and interval
    /// changes mid-session: every message served comes exactly once, in time order; every timeslice
    /// starts where the last answered range ended; a host item is followed by `/default` on
    /// the new host at once.
    #[test]
    fn failures_resumes_host_switches_and_interval_changes_lose_and_repeat_nothing(
        per_second in prop::collection::vec(0usize..3, 400),
        steps in prop::collection::vec(
            (0u64..3000, outcome(), 1u64..5, 0u64..20_000), 1..80),
    ) {
        let mut timeline = Vec::new();
        for (s, n) in per_second.iter().enumerate() {
            for _ in 0..*n {
                let uid = timeline.len();
                timeline.push((FIRST - 30 + s as i64, message(uid, FIRST - 30 + s as i64, "Ada")));
            }
        }
        let mut server = Server { timeline, interval: 2 };
        let mut run = Run::new(config());
        let mut hosts = 0usize;
        let mut last_end: Option<i64> = None;
        let mut switched = false;
        let mut served: BTreeSet<usize> = BTreeSet::new();
        for (latency_ms, outcome, next_interval, downtime_ms) in steps {
            let r = run.next_request();
            prop_assert_eq!(&r.base_url, &format!("http://h{hosts}"));
            match r.kind {
                RequestKind::Default => prop_assert!(last_end.is_none() || switched,
                    "only at the start or after a host switch: {:?}", r),
                RequestKind::Timeslice { from, .. } => {
                    prop_assert!(!switched, "a host switch restarts with /default");
                    prop_assert_eq!(Some(from), last_end, "from the last range end");
                }
            }
            run.now += Duration::from_millis(latency_ms);
            server.interval = next_interval;
            let now_key = run.now_key();
            match outcome {
                Outcome::Ok | Outcome::SwitchHost => {
                    let extra = matches!(outcome, Outcome::SwitchHost)
                        .then(|| json!({"type": "host", "host": format!("h{}", hosts + 1)}));
                    let resp = server.answer(&r, now_key, extra.clone());
                    let body: Value = serde_json::from_slice(&resp.body).unwrap();
                    served.extend(body["payload"].as_array().unwrap().iter()
                        .filter_map(|v| v["uid"].as_str()?.parse::<usize>().ok()));
                    run.session.handle_response(resp, run.now, run.wall());
                    prop_assert!(run.session.error().is_none());
                    last_end = Some(match r.kind {
                        RequestKind::Default => now_key,
                        RequestKind::Timeslice { from, width } => from + width as i64,
                    });
                    switched = extra.is_some();
                    if switched {
                        hosts += 1;
                        prop_assert_eq!(run.session.poll_timeout(), Some(run.now), "at once");
                    }
                    run.drain();
                }
                Outcome::Http500 => {
                    let resp = Response { status: 500, ..Response::default() };
                    run.session.handle_response(resp, run.now, run.wall());
                    run.reconnect(config(), Duration::from_millis(downtime_ms));
                }
                Outcome::Network => {
                    run.session.handle_end(Error::Network {
                        channel: CH.into(), url: r.url(), detail: "reset".into() });
                    run.reconnect(config(), Duration::from_millis(downtime_ms));
                }
                Outcome::Garbage => {
                    run.session.handle_response(Response::ok("<html>"), run.now, run.wall());
                    run.reconnect(config(), Duration::from_millis(downtime_ms));
                }
            }
        }
        let got: Vec<usize> =
            message_uids(&run.items).iter().map(|u| u.parse().unwrap()).collect();
        // Exactly what the answered responses served (contiguous timeslices, checked above,
        // leave gaps only where the protocol restarts with `/default`), once, in time order.
        let want: Vec<usize> = served.into_iter().collect();
        prop_assert_eq!(got, want);
    }

    /// An ignore list applied along a random timeline of messages, `ignUser` and
    /// `unIgnUser` items, through failures and resumes: a message is shown exactly when its
    /// author is not ignored at that point, an `ignUser` retracts the author's messages shown
    /// before it, and an item that changes nothing emits nothing.
    #[test]
    fn ignore_lists_are_applied_across_resumes(
        entries in prop::collection::vec((0u8..3, 0usize..3), 1..120),
        fails in prop::collection::vec(any::<bool>(), 1..50),
    ) {
        let users = ["A", "B", "C"];
        let mut timeline = Vec::new();
        // The model.
        let mut ignored: BTreeSet<&str> = BTreeSet::new();
        let mut shown: Vec<String> = Vec::new();
        let mut retracted: Vec<String> = Vec::new();
        let mut live: HashMap<&str, Vec<String>> = HashMap::new();
        let (mut ignores, mut unignores) = (0, 0);
        for (i, (what, who)) in entries.iter().enumerate() {
            let t = FIRST + i as i64;
            let user = users[*who];
            let net = json!([{"provider": "twitter", "displayName": user}]);
            let item = match what {
                0 => {
                    if !ignored.contains(user) {
                        shown.push(i.to_string());
                        live.entry(user).or_default().push(i.to_string());
                    }
                    message(i, t, user)
                }
                1 => {
                    if ignored.insert(user) {
                        ignores += 1;
                        retracted.extend(live.remove(user).unwrap_or_default());
                    }
                    json!({"type": "ignUser", "createdAt": t, "network": net})
                }
                _ => {
                    if ignored.remove(user) {
                        unignores += 1;
                    }
                    json!({"type": "unIgnUser", "createdAt": t, "network": net})
                }
            };
            timeline.push((t, item));
        }
        let end = FIRST + entries.len() as i64;
        let server = Server { timeline, interval: 3 };
        let mut run = Run::new(config());
        let mut fails = fails.into_iter().cycle();
        let mut failed_last = false;
        let mut covered = FIRST;
        let mut guard = 0;
        while covered < end {
            guard += 1;
            prop_assert!(guard < 2000, "no progress");
            let r = run.next_request();
            run.now += Duration::from_millis(700);
            // Never twice in a row, so a /default that fails is followed by one within
            // its 30 s of history.
            failed_last = !failed_last && fails.next().unwrap_or(false);
            if failed_last {
                run.session.handle_response(Response { status: 503, ..Response::default() }, run.now, run.wall());
                run.reconnect(config(), Duration::from_secs(4));
                continue;
            }
            let now_key = run.now_key();
            run.session.handle_response(server.answer(&r, now_key, None), run.now, run.wall());
            covered = match r.kind {
                RequestKind::Default => now_key,
                RequestKind::Timeslice { from, width } => from + width as i64,
            };
            run.drain();
        }
        prop_assert_eq!(message_uids(&run.items), shown);
        let evs = events(&run.items);
        let got_retracted: Vec<String> = evs.iter()
            .filter(|e| e.kind == Kind::Retraction)
            .filter_map(|e| e.native_id.clone())
            .collect();
        prop_assert_eq!(got_retracted, retracted);
        prop_assert_eq!(evs.iter().filter(|e| e.kind == Kind::Ignore).count(), ignores);
        prop_assert_eq!(evs.iter().filter(|e| e.kind == Kind::Unignore).count(), unignores);
        let now_ignored: BTreeSet<String> =
            run.session.ignored().map(|a| a.display_name.clone()).collect();
        prop_assert_eq!(now_ignored, ignored.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
    }
}
