//! The Ustream Social Stream emulator: the timeslice server.
//!
//! `GET /socialstream/get.json/{channel}/default` answers the recent history and a range
//! `[0, FIRST]`; `GET .../timeslice/{RANGE}/{INTERVAL}` answers every item whose time lies in
//! `[RANGE, RANGE + INTERVAL)`, newest first, with `range: [RANGE, RANGE + INTERVAL]` (never
//! beyond the current second, so a window is only ever answered once it is complete).
//! `FIRST` lags the server clock by [`Config::lag_secs`], as the real service's slices did, so
//! a client on the document's drift-free schedule always asks for complete windows.
//!
//! Traffic mixes twitter, facebook and ustream users, both payload shapes (with and without
//! `type`, `createdAt` as a number or a string), some texts with the generated suffix in both
//! forms seen (` (@channel live at http://ustre.am/XXXX)` and ` (live at http://ustre.am/XXXX)`)
//! and `isSuffixCleaningNeeded`, refresh intervals that change, and control items (`ignMsg`,
//! `ignUser`, `unIgnUser`; `host` every [`Config::host_every`] items; malformed control items
//! at [`Config::malformed_share`]), with quiet periods ([`Config::quiet_every`]).
//!
//! The emulator serves as two hosts (two listeners, one timeline of messages). A `host` item
//! is said by the host a client is on ("move to the other one"): it is served only by the
//! listener that was current when it was committed, only in timeslices (never in a `/default`
//! history), and it makes the other listener current.
//!
//! Message uids start from a time-based base ([`Config::uid_base`]), so a restarted emulator
//! never reissues the uids of an earlier run. [`Config::clock_offset_secs`] sets the server
//! clock apart from the wall clock (a reset server whose range lies behind a client's cursor);
//! a timeslice that starts in the server's future is answered with the server's own position,
//! `range: [now, now]`.
//!
//! Faults come per request from [`Config::faults`]; `success: false` answers from
//! [`Emulator::push_soft_failure`].

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::fault::lock;
use crate::traffic::{PEOPLE, Traffic};
use crate::{Fault, FaultPlan, ServerHandle};

/// Emulator settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address of the primary listener (default `127.0.0.1:0`); the secondary one, the target
    /// of host switches, is always an ephemeral loopback port.
    pub listen: SocketAddr,
    /// Seed for the generated traffic.
    pub seed: u64,
    /// Generated items per second; 0 = none (tests inject their own).
    pub rate: f64,
    /// Faults, one entry per request.
    pub faults: Arc<FaultPlan>,
    /// The channel id served; other channels get 404.
    pub channel: u64,
    /// Refresh intervals handed out, in turn (seconds).
    pub refresh_intervals: Vec<u64>,
    /// Move to the next refresh interval after this many polls (0 = never).
    pub interval_every: u32,
    /// How far the first range value lags the server clock, seconds.
    pub lag_secs: u64,
    /// How many recent items `/default` returns.
    pub history: usize,
    /// Of the generated items, the share that are control items (ignMsg, ignUser, unIgnUser).
    pub control_share: f64,
    /// Every this many generated items, a `host` item moves clients to the other listener
    /// (0 = never; [`Emulator::set_host_every`] changes it while running).
    pub host_every: u32,
    /// Of the generated items, the share that are malformed control items (the document's
    /// own `"host": ""`, `ignMsg` without uid, `ignUser` without network, ...).
    pub malformed_share: f64,
    /// After this much generating, the generator pauses for [`Config::quiet_for`] (zero =
    /// never); polls are still answered, with empty payloads.
    pub quiet_every: Duration,
    /// The length of a quiet period.
    pub quiet_for: Duration,
    /// The first message uid is this plus one; `None`: the start time in microseconds since
    /// the epoch, so a restarted emulator never reissues an earlier run's uids.
    pub uid_base: Option<u64>,
    /// The server clock (range values, `createdAt`) is the wall clock plus this many seconds.
    pub clock_offset_secs: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 1,
            rate: 2.0,
            faults: Arc::new(FaultPlan::none()),
            channel: 1234,
            refresh_intervals: vec![2, 1, 3],
            interval_every: 5,
            lag_secs: 5,
            history: 20,
            control_share: 0.05,
            host_every: 0,
            malformed_share: 0.0,
            quiet_every: Duration::ZERO,
            quiet_for: Duration::ZERO,
            uid_base: None,
            clock_offset_secs: 0,
        }
    }
}

/// Something the emulator committed to its timeline, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The item's uid (messages) or a synthetic id (control items).
    pub uid: String,
    /// The wire type: "msg", "ignMsg", "ignUser", "unIgnUser", "host".
    pub kind: String,
    /// Server epoch second of the item (its `createdAt`).
    pub created_at: i64,
    /// The author's (or ignored user's) network.
    pub provider: String,
    /// The author's (or ignored user's) display name.
    pub display_name: String,
    /// The message text without any generated suffix (empty for control items).
    pub text: String,
    /// For a message: false when its author was ignored when it was sent, so a client hides it.
    pub visible: bool,
    /// The uid an `ignMsg` retracts, or the host a `host` item names.
    pub target: Option<String>,
    /// A malformed item a client must skip (and go on).
    pub malformed: bool,
}

/// Which generated suffix a message text carries on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suffix {
    /// None.
    None,
    /// ` (@chanCHANNEL live at http://ustre.am/XXXX)`.
    Channel,
    /// ` (live at http://ustre.am/XXXX)`: nothing before "live at".
    Bare,
}

/// One request the emulator received.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// 0 for the primary listener, 1 for the secondary one.
    pub listener: usize,
    /// The request path.
    pub path: String,
    /// Whether an `Authorization` header was sent (the document says it must not be).
    pub authorization: bool,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Debug)]
struct Entry {
    key: i64,
    wire: Value,
    suffixed: bool,
    /// Served only by this listener, and only in timeslices (a `host` item).
    only_on: Option<usize>,
}

#[derive(Debug)]
struct State {
    timeline: Vec<Entry>,
    committed: Vec<Committed>,
    next_uid: u64,
    polls: u64,
    interval_idx: usize,
    requests: Vec<RequestRecord>,
    soft_failures: VecDeque<String>,
    traffic: Traffic,
    ignored: HashSet<(String, String)>,
    addrs: [Option<SocketAddr>; 2],
    /// The listener `host` items are said by (the one clients are sent away from).
    current: usize,
    uid_base: u64,
    generated: u64,
    host_every: u32,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    start: Instant,
    base_epoch: i64,
    state: Mutex<State>,
    shutdown: watch::Receiver<bool>,
}

const PROVIDERS: &[&str] = &["twitter", "facebook", "ustream"];

/// Malformed items of every control type (and a message without uid) a client must skip.
pub const MALFORMED: &[&str] = &[
    r#"{"type": "host", "host": ""}"#,
    r#"{"type": "host", "host": "not a host name"}"#,
    r#"{"type": "host"}"#,
    r#"{"type": "ignMsg"}"#,
    r#"{"type": "ignMsg", "uid": ""}"#,
    r#"{"type": "ignUser"}"#,
    r#"{"type": "ignUser", "network": []}"#,
    r#"{"type": "unIgnUser", "network": [{"provider": "twitter"}]}"#,
    r#"{"type": "msg", "text": "a message without uid"}"#,
    r#"{"uid": null, "text": "a message with a null uid"}"#,
];

impl Shared {
    fn now_key(&self) -> i64 {
        self.base_epoch + i64::try_from(self.start.elapsed().as_secs()).unwrap_or(0)
    }

    fn commit(&self, st: &mut State, wire: Value, suffixed: bool, rec: Committed) {
        self.commit_on(st, wire, suffixed, rec, None);
    }

    fn commit_on(
        &self,
        st: &mut State,
        wire: Value,
        suffixed: bool,
        rec: Committed,
        only_on: Option<usize>,
    ) {
        let key = rec.created_at;
        st.timeline.push(Entry {
            key,
            wire,
            suffixed,
            only_on,
        });
        st.committed.push(rec);
    }

    fn random_suffix(&self, st: &mut State, provider: &str) -> Suffix {
        if provider == "ustream" || !st.traffic.chance(0.3) {
            Suffix::None
        } else if st.traffic.chance(0.5) {
            Suffix::Channel
        } else {
            Suffix::Bare
        }
    }

    fn commit_message(
        &self,
        st: &mut State,
        provider: &str,
        name: &str,
        text: &str,
        suffix: Option<Suffix>,
    ) -> String {
        st.next_uid += 1;
        let uid = format!("{}", st.uid_base + st.next_uid);
        let key = self.now_key();
        let user = name.to_lowercase();
        let shape_b = st.traffic.chance(0.4);
        let suffix = match suffix {
            Some(s) => s,
            None => self.random_suffix(st, provider),
        };
        let suffixed = suffix != Suffix::None;
        let wire_text = match suffix {
            Suffix::None => text.to_owned(),
            Suffix::Channel => format!(
                "{text} (@chan{} live at http://ustre.am/{:x})",
                self.config.channel,
                key % 65536
            ),
            Suffix::Bare => format!("{text} (live at http://ustre.am/{:x})", key % 65536),
        };
        let wire = if shape_b {
            json!({
                "uid": uid, "createdAt": key.to_string(), "isOwner": false,
                "profileNetwork": provider, "profileUserName": user,
                "profilePictureUrl": format!("http://static.ustream.tv/pic/{user}.png"),
                "displayName": name, "text": wire_text,
                "network": [{"provider": provider, "displayName": name}]
            })
        } else {
            json!({
                "type": "msg", "uid": uid, "createdAt": key,
                "isOwner": i32::from(name == PEOPLE[0]),
                "profileNetwork": provider, "profileUserName": user,
                "profilePictureUrl": format!("http://static.ustream.tv/pic/{user}.png"),
                "network": [{"provider": provider, "displayName": name}],
                "text": wire_text, "flag": 0, "timeElapsed": "just now"
            })
        };
        let visible = !st.ignored.contains(&(provider.to_owned(), name.to_owned()));
        self.commit(
            st,
            wire,
            suffixed,
            Committed {
                uid: uid.clone(),
                kind: "msg".into(),
                created_at: key,
                provider: provider.into(),
                display_name: name.into(),
                text: text.into(),
                visible,
                target: None,
                malformed: false,
            },
        );
        uid
    }

    /// Commits a control item about the user `who` (provider, display name) or a `target`.
    fn commit_control(
        &self,
        st: &mut State,
        kind: &str,
        wire: Value,
        who: (&str, &str),
        target: Option<String>,
    ) {
        st.next_uid += 1;
        let rec = Committed {
            uid: format!("ctl-{}", st.next_uid),
            kind: kind.into(),
            created_at: self.now_key(),
            provider: who.0.into(),
            display_name: who.1.into(),
            text: String::new(),
            visible: true,
            target,
            malformed: false,
        };
        let only_on = (kind == "host").then_some(st.current);
        self.commit_on(st, wire, false, rec, only_on);
    }

    /// Commits a `host` item said by the current listener, naming the other one, which
    /// becomes current; returns the host named (`127.0.0.1:PORT`).
    fn switch_host(&self, st: &mut State) -> String {
        let to = 1 - st.current;
        let host = st.addrs[to].map(|a| a.to_string()).unwrap_or_default();
        let wire = json!({"type": "host", "host": host});
        self.commit_control(st, "host", wire, ("", ""), Some(host.clone()));
        st.current = to;
        host
    }

    /// Commits a malformed control (or message) item a client must skip.
    fn commit_malformed(&self, st: &mut State, wire: Value) {
        st.next_uid += 1;
        let kind = wire
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("msg")
            .to_owned();
        let rec = Committed {
            uid: format!("bad-{}", st.next_uid),
            kind,
            created_at: self.now_key(),
            provider: String::new(),
            display_name: String::new(),
            text: String::new(),
            visible: false,
            target: None,
            malformed: true,
        };
        self.commit(st, wire, false, rec);
    }

    fn ignore_user(&self, st: &mut State, provider: &str, name: &str, ignore: bool) {
        let kind = if ignore { "ignUser" } else { "unIgnUser" };
        if ignore {
            st.ignored.insert((provider.into(), name.into()));
        } else {
            st.ignored.remove(&(provider.to_owned(), name.to_owned()));
        }
        let wire = json!({"type": kind, "network": [{"provider": provider, "displayName": name}]});
        self.commit_control(st, kind, wire, (provider, name), None);
    }

    fn ignore_message(&self, st: &mut State, uid: &str) {
        let wire = json!({"type": "ignMsg", "uid": uid});
        self.commit_control(st, "ignMsg", wire, ("", ""), Some(uid.to_owned()));
    }

    fn generate(&self) {
        let mut st = lock(&self.state);
        st.generated += 1;
        let every = u64::from(st.host_every);
        if every > 0 && st.generated % every == 0 {
            self.switch_host(&mut st);
            return;
        }
        if self.config.malformed_share > 0.0 && st.traffic.chance(self.config.malformed_share) {
            let bad = MALFORMED[st.traffic.pick(MALFORMED.len())];
            let wire = serde_json::from_str(bad).unwrap_or(Value::Null);
            self.commit_malformed(&mut st, wire);
            return;
        }
        let control =
            self.config.control_share > 0.0 && st.traffic.chance(self.config.control_share);
        if control && !st.committed.is_empty() {
            match st.traffic.pick(3) {
                0 => {
                    let msgs: Vec<String> = st
                        .committed
                        .iter()
                        .rev()
                        .filter(|c| c.kind == "msg")
                        .take(5)
                        .map(|c| c.uid.clone())
                        .collect();
                    if let Some(uid) = msgs.get(st.traffic.pick(msgs.len().max(1))) {
                        let uid = uid.clone();
                        self.ignore_message(&mut st, &uid);
                        return;
                    }
                }
                1 if st.ignored.is_empty() => {
                    let who = PEOPLE[st.traffic.person()];
                    let p = PROVIDERS[st.traffic.pick(PROVIDERS.len())];
                    self.ignore_user(&mut st, p, who, true);
                    return;
                }
                _ => {
                    if let Some((p, n)) = st.ignored.iter().next().cloned() {
                        self.ignore_user(&mut st, &p, &n, false);
                        return;
                    }
                }
            }
        }
        let who = PEOPLE[st.traffic.person()];
        let provider = PROVIDERS[st.traffic.pick(PROVIDERS.len())];
        let text = st.traffic.line();
        self.commit_message(&mut st, provider, who, &text, None);
    }

    /// Whether the generator is in a quiet period now.
    fn is_quiet(&self) -> bool {
        let (every, len) = (self.config.quiet_every, self.config.quiet_for);
        if every.is_zero() || len.is_zero() {
            return false;
        }
        let cycle = (every + len).as_millis().max(1);
        self.start.elapsed().as_millis() % cycle >= every.as_millis()
    }

    fn next_interval(&self, st: &mut State) -> u64 {
        st.polls += 1;
        let every = u64::from(self.config.interval_every);
        if every > 0 && st.polls % every == 0 {
            st.interval_idx += 1;
        }
        let list = &self.config.refresh_intervals;
        if list.is_empty() {
            10
        } else {
            list[st.interval_idx % list.len()].max(1)
        }
    }

    fn respond(&self, from: i64, to: i64, items: Vec<Value>, suffix: bool, interval: u64) -> Value {
        json!({
            "success": true,
            "refreshInterval": interval,
            "range": [from, to],
            "payload": items,
            "statusUpdate": {"online": true, "viewers": 40 + (to % 17)},
            "isSuffixCleaningNeeded": suffix,
        })
    }

    fn default_body(&self) -> Value {
        let mut st = lock(&self.state);
        let first = self.now_key() - i64::try_from(self.config.lag_secs).unwrap_or(0);
        let recent: Vec<&Entry> = st
            .timeline
            .iter()
            .filter(|e| e.key < first && e.only_on.is_none())
            .rev()
            .take(self.config.history)
            .collect();
        let suffix = recent.iter().any(|e| e.suffixed);
        let items: Vec<Value> = recent.into_iter().map(|e| e.wire.clone()).collect();
        let interval = self.next_interval(&mut st);
        self.respond(0, first, items, suffix, interval)
    }

    fn timeslice_body(&self, listener: usize, from: i64, width: u64) -> Value {
        let mut st = lock(&self.state);
        let now = self.now_key();
        if from > now + 1 {
            // A slice in this server's future (a cursor from another server, or from before a
            // reset): answer with the server's own position.
            let interval = self.next_interval(&mut st);
            return self.respond(now, now, Vec::new(), false, interval);
        }
        let to = from
            .saturating_add(i64::try_from(width).unwrap_or(i64::MAX / 4))
            .min(now)
            .max(from);
        let hits: Vec<&Entry> = st
            .timeline
            .iter()
            .filter(|e| e.key >= from && e.key < to)
            .filter(|e| e.only_on.is_none_or(|l| l == listener))
            .rev()
            .collect();
        let suffix = hits.iter().any(|e| e.suffixed);
        let items: Vec<Value> = hits.into_iter().map(|e| e.wire.clone()).collect();
        let interval = self.next_interval(&mut st);
        self.respond(from, to, items, suffix, interval)
    }
}

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    listener: usize,
}

/// The running emulator.
#[derive(Debug)]
pub struct Emulator {
    primary: ServerHandle,
    secondary: ServerHandle,
    shared: Arc<Shared>,
    generator: Option<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    /// Starts both listeners (and the traffic generator when `rate > 0`).
    pub async fn start(config: Config) -> std::io::Result<Emulator> {
        let l1 = crate::server::bind(config.listen).await?;
        let l2 = crate::server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let (tx1, rx) = watch::channel(false);
        let (tx2, _) = watch::channel(false);
        let uid_base = config.uid_base.unwrap_or_else(|| {
            u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or_default()
        });
        let shared = Arc::new(Shared {
            start: Instant::now(),
            base_epoch: chrono::Utc::now().timestamp() + config.clock_offset_secs,
            state: Mutex::new(State {
                timeline: Vec::new(),
                committed: Vec::new(),
                next_uid: 0,
                polls: 0,
                interval_idx: 0,
                requests: Vec::new(),
                soft_failures: VecDeque::new(),
                traffic: Traffic::new(config.seed),
                ignored: HashSet::new(),
                addrs: [Some(l1.local_addr()?), Some(l2.local_addr()?)],
                current: 0,
                uid_base,
                generated: 0,
                host_every: config.host_every,
            }),
            shutdown: rx,
            config,
        });
        let router = |listener| {
            Router::new()
                .route(
                    "/socialstream/get.json/{channel}/default",
                    get(default_handler),
                )
                .route(
                    "/socialstream/get.json/{channel}/timeslice/{range}/{interval}",
                    get(timeslice_handler),
                )
                .fallback(fallback)
                .with_state(Ctx {
                    shared: shared.clone(),
                    listener,
                })
        };
        let primary = crate::server::serve_router(l1, router(0), tx1)?;
        let secondary = crate::server::serve_router(l2, router(1), tx2)?;
        let generator = (shared.config.rate > 0.0).then(|| {
            let s = shared.clone();
            let period = Duration::from_secs_f64(1.0 / shared.config.rate.max(0.001));
            let mut stop = primary.shutdown_signal();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tick.tick() => if !s.is_quiet() { s.generate() },
                    }
                }
            })
        });
        Ok(Emulator {
            primary,
            secondary,
            shared,
            generator,
        })
    }

    /// Base URL of the primary server (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.primary.url()
    }

    /// Base URL of the secondary server that `host` items point to.
    pub fn secondary_url(&self) -> String {
        self.secondary.url()
    }

    /// The channel served.
    pub fn channel(&self) -> u64 {
        self.shared.config.channel
    }

    /// A `[[source]]` table connecting `tributary run` to this emulator.
    pub fn config_snippet(&self, source_name: &str) -> String {
        format!(
            "[[source]]\nname = \"{source_name}\"\nservice = \"ustream\"\nurl = \"{}\"\nchannel = {}\n",
            self.url(),
            self.shared.config.channel
        )
    }

    /// Everything committed to the timeline, in order.
    pub fn committed(&self) -> Vec<Committed> {
        lock(&self.shared.state).committed.clone()
    }

    /// The committed messages a client should show (authors not ignored at the time), in order.
    pub fn visible_messages(&self) -> Vec<Committed> {
        self.committed()
            .into_iter()
            .filter(|c| c.kind == "msg" && c.visible)
            .collect()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.state).requests.clone()
    }

    /// The server clock in epoch seconds (the `createdAt` a message committed now gets).
    pub fn now_key(&self) -> i64 {
        self.shared.now_key()
    }

    /// Commits a message now and returns its uid (some texts get a generated suffix).
    pub fn inject_message(&self, provider: &str, display_name: &str, text: &str) -> String {
        let mut st = lock(&self.shared.state);
        self.shared
            .commit_message(&mut st, provider, display_name, text, None)
    }

    /// Commits a message now whose wire text carries `suffix`; returns its uid.
    pub fn inject_message_with_suffix(
        &self,
        provider: &str,
        display_name: &str,
        text: &str,
        suffix: Suffix,
    ) -> String {
        let mut st = lock(&self.shared.state);
        self.shared
            .commit_message(&mut st, provider, display_name, text, Some(suffix))
    }

    /// Commits a malformed item now (e.g. one of [`MALFORMED`]); a client must skip it.
    pub fn inject_malformed(&self, wire: Value) {
        let mut st = lock(&self.shared.state);
        self.shared.commit_malformed(&mut st, wire);
    }

    /// Makes every `n`-th generated item a `host` switch (0 = never), while running: what
    /// `demo` uses to show host switches (generated texts carry both suffix forms anyway).
    pub fn set_host_every(&self, n: u32) {
        lock(&self.shared.state).host_every = n;
    }

    /// The uid the next message gets.
    pub fn next_message_uid(&self) -> String {
        let st = lock(&self.shared.state);
        (st.uid_base + st.next_uid + 1).to_string()
    }

    /// Commits an arbitrary payload item now (unknown types, malformed items); its
    /// `createdAt`, when it has one, is set to the current server second.
    pub fn inject_raw(&self, mut wire: Value) {
        let mut st = lock(&self.shared.state);
        let key = self.shared.now_key();
        if wire.get("createdAt").is_some() {
            wire["createdAt"] = json!(key);
        }
        let kind = wire
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("msg")
            .to_owned();
        let uid = wire
            .get("uid")
            .map(|u| {
                u.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| u.to_string())
            })
            .unwrap_or_default();
        self.shared.commit(
            &mut st,
            wire,
            false,
            Committed {
                uid,
                kind,
                created_at: key,
                provider: String::new(),
                display_name: String::new(),
                text: String::new(),
                visible: false,
                target: None,
                malformed: false,
            },
        );
    }

    /// Commits one generated item now (a message, or sometimes a control item).
    pub fn inject_generated(&self) {
        self.shared.generate();
    }

    /// Commits an `ignMsg` for `uid`.
    pub fn ignore_message(&self, uid: &str) {
        let mut st = lock(&self.shared.state);
        self.shared.ignore_message(&mut st, uid);
    }

    /// Commits an `ignUser` for the account.
    pub fn ignore_user(&self, provider: &str, display_name: &str) {
        let mut st = lock(&self.shared.state);
        self.shared
            .ignore_user(&mut st, provider, display_name, true);
    }

    /// Commits an `unIgnUser` for the account.
    pub fn unignore_user(&self, provider: &str, display_name: &str) {
        let mut st = lock(&self.shared.state);
        self.shared
            .ignore_user(&mut st, provider, display_name, false);
    }

    /// Commits a `host` item, said by the current listener, naming the other one
    /// (`127.0.0.1:PORT`, the secondary at first) and returns it.
    pub fn switch_host(&self) -> String {
        let mut st = lock(&self.shared.state);
        self.shared.switch_host(&mut st)
    }

    /// Base URL of the listener `host` items currently send clients to (where clients that
    /// followed every switch poll now).
    pub fn current_url(&self) -> String {
        if lock(&self.shared.state).current == 0 {
            self.url()
        } else {
            self.secondary_url()
        }
    }

    /// Makes the next poll answer `{"success": false, "message": message}`.
    pub fn push_soft_failure(&self, message: &str) {
        lock(&self.shared.state)
            .soft_failures
            .push_back(message.to_owned());
    }

    /// The fault plan (push more faults while running).
    pub fn faults(&self) -> &Arc<FaultPlan> {
        &self.shared.config.faults
    }

    /// Stops both listeners and the generator.
    pub async fn stop(mut self) {
        if let Some(g) = self.generator.take() {
            g.abort();
        }
        self.secondary.stop().await;
        self.primary.stop().await;
    }
}

async fn fallback() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "no such social stream path")
}

async fn default_handler(
    AxState(ctx): AxState<Ctx>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/socialstream/get.json/{channel}/default");
    serve(ctx, path, headers, channel, None).await
}

async fn timeslice_handler(
    AxState(ctx): AxState<Ctx>,
    Path((channel, range, interval)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/socialstream/get.json/{channel}/timeslice/{range}/{interval}");
    match (range.parse::<i64>(), interval.parse::<u64>()) {
        (Ok(r), Ok(i)) => serve(ctx, path, headers, channel, Some((r, i))).await,
        _ => {
            record(&ctx, path, &headers);
            json_response(json!({"success": false, "message": "bad timeslice parameters"}))
        }
    }
}

fn record(ctx: &Ctx, path: String, headers: &HeaderMap) {
    lock(&ctx.shared.state).requests.push(RequestRecord {
        listener: ctx.listener,
        path,
        authorization: headers.contains_key(header::AUTHORIZATION),
        at: Instant::now(),
    });
}

fn json_response(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn sleep_or_stop(shared: &Shared, d: Option<Duration>) {
    let mut stop = shared.shutdown.clone();
    match d {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        None => {
            let _ = stop.wait_for(|s| *s).await;
        }
    }
}

async fn serve(
    ctx: Ctx,
    path: String,
    headers: HeaderMap,
    channel: String,
    slice: Option<(i64, u64)>,
) -> Response {
    record(&ctx, path, &headers);
    let shared = ctx.shared.clone();
    let faults = shared.config.faults.next_connection();
    let mut drop_after: Option<usize> = None;
    let mut one_byte = false;
    let mut prefix: Option<Bytes> = None;
    for f in &faults {
        match f {
            Fault::Delay(d) => sleep_or_stop(&shared, Some(*d)).await,
            Fault::Stall { duration, .. } => sleep_or_stop(&shared, *duration).await,
            Fault::Status { code, retry_after } => {
                let code = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut r = (code, format!("emulated HTTP {}", code.as_u16())).into_response();
                if let Some(s) = retry_after {
                    if let Ok(v) = s.to_string().parse() {
                        r.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                }
                return r;
            }
            Fault::Refuse => drop_after = Some(0),
            Fault::DropAfterBytes(n) => drop_after = Some(*n),
            Fault::OneByteWrites => one_byte = true,
            Fault::Malformed => {
                return (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    "{\"success\":true,\"range\":[1,",
                )
                    .into_response();
            }
            Fault::Oversize(n) => {
                prefix = Some(Bytes::from(format!(
                    "{{\"success\":true,\"padding\":\"{}\",",
                    "x".repeat(*n)
                )));
            }
        }
    }
    if channel != shared.config.channel.to_string() {
        return (StatusCode::NOT_FOUND, format!("unknown channel {channel}")).into_response();
    }
    if let Some(message) = lock(&shared.state).soft_failures.pop_front() {
        return json_response(json!({"success": false, "message": message}));
    }
    let body = match slice {
        None => shared.default_body(),
        Some((from, width)) => shared.timeslice_body(ctx.listener, from, width),
    };
    let mut bytes = body.to_string().into_bytes();
    if let Some(p) = prefix {
        // A huge (but well-formed) field in front of the real ones.
        let mut v = p.to_vec();
        v.extend_from_slice(&bytes[1..]);
        bytes = v;
    }
    if drop_after.is_none() && !one_byte {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response();
    }
    let cut = drop_after.unwrap_or(bytes.len()).min(bytes.len());
    let chunk = if one_byte { 1 } else { cut.max(1) };
    let mut parts: Vec<Result<Bytes, std::io::Error>> = bytes[..cut]
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    if drop_after.is_some() {
        parts.push(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "emulated drop",
        )));
    }
    let stream = futures_util::stream::iter(parts);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(url: &str) -> (u16, Value) {
        // A tiny HTTP/1.1 client on a raw socket, so the emulator's tests need no HTTP crate.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
        let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf).to_string();
        let status: u16 = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    fn quiet() -> Config {
        Config {
            rate: 0.0,
            lag_secs: 0,
            refresh_intervals: vec![2],
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn default_then_timeslices_newest_first() {
        let emu = Emulator::start(quiet()).await.unwrap();
        let a = emu.inject_message("twitter", "Ada", "one");
        let b = emu.inject_message("facebook", "Ken", "two");
        let now = emu.now_key();
        let (st, v) = get(&format!(
            "{}/socialstream/get.json/1234/timeslice/{}/5",
            emu.url(),
            now - 2
        ))
        .await;
        assert_eq!(st, 200);
        assert_eq!(v["success"], true);
        assert_eq!(v["refreshInterval"], 2);
        // The window is cut at the current second: nothing is answered before it is complete.
        assert_eq!(v["range"][1].as_i64().unwrap(), now);
        assert!(v["payload"].as_array().unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (_, v) = get(&format!(
            "{}/socialstream/get.json/1234/timeslice/{}/5",
            emu.url(),
            now
        ))
        .await;
        let uids: Vec<&str> = v["payload"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["uid"].as_str().unwrap())
            .collect();
        assert_eq!(uids, [b.as_str(), a.as_str()], "newest first");
        let (_, d) = get(&format!("{}/socialstream/get.json/1234/default", emu.url())).await;
        assert_eq!(d["range"][0], 0);
        assert_eq!(d["payload"].as_array().unwrap().len(), 2);
        let (st, _) = get(&format!("{}/socialstream/get.json/999/default", emu.url())).await;
        assert_eq!(st, 404);
        assert!(emu.requests().iter().all(|r| !r.authorization));
        emu.stop().await;
    }

    #[tokio::test]
    async fn faults_and_soft_failures() {
        let cfg = Config {
            faults: Arc::new(FaultPlan::script([
                vec![Fault::Status {
                    code: 500,
                    retry_after: None,
                }],
                vec![Fault::Malformed],
            ])),
            ..quiet()
        };
        let emu = Emulator::start(cfg).await.unwrap();
        let u = format!("{}/socialstream/get.json/1234/default", emu.url());
        assert_eq!(get(&u).await.0, 500);
        assert_eq!(get(&u).await.1, Value::Null);
        emu.push_soft_failure("try later");
        let (st, v) = get(&u).await;
        assert_eq!(st, 200);
        assert_eq!(v["success"], false);
        assert_eq!(v["message"], "try later");
        assert_eq!(get(&u).await.1["success"], true);
        emu.stop().await;
    }

    #[tokio::test]
    async fn controls_hosts_and_generated_traffic() {
        let emu = Emulator::start(Config {
            control_share: 0.3,
            ..quiet()
        })
        .await
        .unwrap();
        let uid = emu.inject_message("twitter", "Ada", "hello");
        emu.ignore_message(&uid);
        emu.ignore_user("twitter", "Ada");
        emu.inject_message("twitter", "Ada", "hidden");
        emu.unignore_user("twitter", "Ada");
        let host = emu.switch_host();
        assert!(emu.secondary_url().ends_with(&host));
        for _ in 0..40 {
            emu.inject_generated();
        }
        let c = emu.committed();
        assert_eq!(c[1].target.as_deref(), Some(uid.as_str()));
        assert!(!c[3].visible);
        assert!(c.iter().any(|c| c.kind == "host"));
        assert!(!emu.visible_messages().iter().any(|m| m.text == "hidden"));
        // The secondary listener serves the same channel.
        let (st, v) = get(&format!(
            "{}/socialstream/get.json/1234/default",
            emu.secondary_url()
        ))
        .await;
        assert_eq!(st, 200);
        assert_eq!(v["success"], true);
        assert_eq!(emu.requests().last().unwrap().listener, 1);
        assert!(emu.config_snippet("us").contains("service = \"ustream\""));
        emu.stop().await;
    }

    fn payload_of(v: &Value) -> Vec<Value> {
        v["payload"].as_array().cloned().unwrap_or_default()
    }

    #[tokio::test]
    async fn host_items_are_said_by_the_current_host_only_in_timeslices() {
        let emu = Emulator::start(quiet()).await.unwrap();
        let start = emu.now_key();
        let to_secondary = emu.switch_host();
        let to_primary = emu.switch_host();
        assert!(emu.secondary_url().ends_with(&to_secondary));
        assert!(emu.url().ends_with(&to_primary));
        assert_eq!(emu.current_url(), emu.url());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let slice = |base: String| format!("{base}/socialstream/get.json/1234/timeslice/{start}/5");
        let (_, p) = get(&slice(emu.url())).await;
        let (_, s) = get(&slice(emu.secondary_url())).await;
        assert_eq!(
            payload_of(&p),
            vec![json!({"type": "host", "host": to_secondary})]
        );
        assert_eq!(
            payload_of(&s),
            vec![json!({"type": "host", "host": to_primary})]
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (_, d) = get(&format!("{}/socialstream/get.json/1234/default", emu.url())).await;
        assert!(
            payload_of(&d).is_empty(),
            "no host item in a /default history"
        );
        emu.stop().await;
    }

    #[tokio::test]
    async fn both_suffix_forms_and_generated_host_and_malformed_items() {
        let emu = Emulator::start(Config {
            host_every: 5,
            malformed_share: 0.2,
            ..quiet()
        })
        .await
        .unwrap();
        emu.inject_message_with_suffix("twitter", "Ada", "one", Suffix::Channel);
        emu.inject_message_with_suffix("twitter", "Ada", "two", Suffix::Bare);
        for _ in 0..200 {
            emu.inject_message("facebook", "Ken", "x");
        }
        for _ in 0..60 {
            emu.inject_generated();
        }
        let c = emu.committed();
        assert!(c.iter().filter(|c| c.kind == "host").count() >= 10);
        assert!(c.iter().any(|c| c.malformed));
        assert!(c.iter().all(|c| !c.malformed || !c.visible));
        {
            let st = lock(&emu.shared.state);
            let texts: Vec<&str> = st
                .timeline
                .iter()
                .filter_map(|e| e.wire.get("text").and_then(Value::as_str))
                .collect();
            assert!(texts[0].starts_with("one (@chan1234 live at http://ustre.am/"));
            assert!(texts[1].starts_with("two (live at http://ustre.am/"));
            let bare = texts.iter().filter(|t| t.contains(" (live at ")).count();
            let chan = texts
                .iter()
                .filter(|t| t.contains(" (@chan1234 live at "))
                .count();
            assert!(bare > 5 && chan > 5, "both forms generated: {bare} {chan}");
        }
        emu.set_host_every(0);
        emu.stop().await;
    }

    #[tokio::test]
    async fn uids_never_repeat_across_restarts_and_a_reset_clock_answers_its_own_position() {
        let a = Emulator::start(quiet()).await.unwrap();
        let ua: u64 = a.inject_message("twitter", "Ada", "a").parse().unwrap();
        a.stop().await;
        let b = Emulator::start(Config {
            clock_offset_secs: -600,
            ..quiet()
        })
        .await
        .unwrap();
        let ub: u64 = b.next_message_uid().parse().unwrap();
        assert!(
            ub > ua,
            "a restarted emulator issues new uids: {ua} then {ub}"
        );
        let now = b.now_key();
        assert!((chrono::Utc::now().timestamp() - 600 - now).abs() <= 1);
        let (_, v) = get(&format!(
            "{}/socialstream/get.json/1234/timeslice/{}/5",
            b.url(),
            now + 600
        ))
        .await;
        assert_eq!(v["success"], true);
        let r = v["range"].as_array().unwrap();
        assert!(r[1].as_i64().unwrap() <= now + 1, "{v}");
        b.stop().await;
        let fixed = Emulator::start(Config {
            uid_base: Some(0),
            ..quiet()
        })
        .await
        .unwrap();
        assert_eq!(fixed.inject_message("twitter", "Ada", "a"), "1");
        fixed.stop().await;
    }

    #[tokio::test]
    async fn quiet_periods_pause_the_generator() {
        let emu = Emulator::start(Config {
            rate: 20.0,
            quiet_every: Duration::from_millis(300),
            quiet_for: Duration::from_secs(60),
            ..quiet()
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let n = emu.committed().len();
        assert!(n > 0);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(emu.committed().len(), n, "nothing generated while quiet");
        emu.stop().await;
    }
}
