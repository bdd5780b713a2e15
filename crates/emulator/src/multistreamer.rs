//! The multistreamer emulator: the WebSocket API of `multistreamer-websocket.txt`.
//!
//! - `GET /ws/:id?token=...` upgrades to a WebSocket. A missing token is refused with HTTP 401,
//!   a wrong one with 403, an unknown stream with 404 — all before the upgrade.
//! - `{"type":"status"}` is answered with a status snapshot (to the asker); every change (an
//!   account going live or offline, a writer becoming ready) is broadcast to every client.
//! - `writer` creates a chat writer after [`Config::writer_delay`] and broadcasts
//!   `writerresult` (only on success, as the document says); the account becomes ready.
//! - `viewcount` is answered with one `viewcountresult` per live account.
//! - `text`/`emote` from a writable, ready account are delivered ([`Emulator::delivered`]) and
//!   echoed to every connected client, as the real server does; `/msg user ...` becomes a
//!   private message with `to`. The document promises no acknowledgement: with
//!   [`Config::echo_writer_messages`] off, messages sent through a chat writer created by a
//!   `writer` request are delivered but never echoed ([`Config::echo`] off: none is).
//! - Seeded chat from twitch, youtube and irc, with emotes and private messages, at
//!   [`Config::rate`]; incoming text/emote carry `timestamp`, `stream_id`, `from.picture`.
//! - The server pings after [`Config::ping_interval`] (30 s, as NOTES.md says) without an
//!   incoming frame ([`Emulator::server_pings`] counts them), and answers every ping.
//! - Quiet for as long as asked ([`Config::quiet`]: no chat, no status changes, pings still
//!   answered), longer than any client timer.
//! - A dead peer on demand: after [`Emulator::play_dead`] every open connection stops reading
//!   and writing (pings go unanswered, the TCP connection stays open); later connections are
//!   served normally.
//! - Faults per connection from [`Config::faults`]: `Refuse` (close the TCP connection at once),
//!   `Status` (an HTTP error instead of the upgrade), `Delay`, `DropAfterBytes` (cut the TCP
//!   connection after N bytes of WebSocket traffic, mid-frame), `OneByteWrites`, `Stall` (stop
//!   sending and stop reading, so pings go unanswered; with keep-alives the server still pings),
//!   `Malformed` and `Oversize` (a bad frame first).
//!
//! It records every message it broadcast ([`Emulator::committed`]) and every client message
//! it received ([`Emulator::received`]).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::fault::lock;
use crate::server::stopped;
use crate::traffic::{PEOPLE, Traffic};
use crate::{Fault, FaultPlan, ServerHandle};

/// One account attached to the emulated stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSpec {
    /// The account id (`0` is the IRC pseudo-account).
    pub id: u64,
    /// The account's name on its network.
    pub name: String,
    /// The network's machine name (`twitch`, `youtube`, `irc`).
    pub network: String,
    /// The network's display name.
    pub display_name: String,
    /// Streaming now.
    pub live: bool,
    /// Chat can be written through it.
    pub writable: bool,
    /// A chat writer exists.
    pub ready: bool,
    /// The account's user id on its network (the `from.id` of what it says).
    pub user_id: String,
}

impl AccountSpec {
    fn new(id: u64, name: &str, network: &str, display: &str, user_id: &str) -> Self {
        AccountSpec {
            id,
            name: name.to_owned(),
            network: network.to_owned(),
            display_name: display.to_owned(),
            live: false,
            writable: false,
            ready: false,
            user_id: user_id.to_owned(),
        }
    }

    fn http_url(&self) -> Option<String> {
        if !self.live {
            return None;
        }
        Some(match self.network.as_str() {
            "twitch" => format!("https://twitch.tv/{}", self.name),
            "youtube" => format!("https://youtube.com/channel/{}/live", self.user_id),
            _ => return None,
        })
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "live": self.live,
            "writable": self.writable,
            "ready": self.ready,
            "name": self.name,
            "network": { "name": self.network, "displayName": self.display_name },
        });
        if let Some(u) = self.http_url() {
            v["http_url"] = json!(u);
        }
        v
    }

    /// `from.id` as the network sends it: a number on IRC, a string elsewhere.
    fn wire_user_id(&self) -> Value {
        wire_id(&self.network, &self.user_id)
    }
}

fn wire_id(network: &str, id: &str) -> Value {
    if network == "irc" {
        id.parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(id))
    } else {
        json!(id)
    }
}

/// The accounts of the document's example, plus a live YouTube account that cannot write:
/// 14 twitch (live, writable, ready), 17 twitch (writable, not ready), 25 youtube (live,
/// read-only), 0 IRC (writable, ready).
pub fn default_accounts() -> Vec<AccountSpec> {
    let mut a14 = AccountSpec::new(14, "jprjrdev", "twitch", "Twitch", "40000014");
    a14.live = true;
    a14.writable = true;
    a14.ready = true;
    let mut a17 = AccountSpec::new(17, "gamethattunedev", "twitch", "Twitch", "146521877");
    a17.writable = true;
    let mut a25 = AccountSpec::new(25, "Tributary Live", "youtube", "YouTube", "UCtributary25");
    a25.live = true;
    let mut a0 = AccountSpec::new(0, "john", "irc", "IRC", "1");
    a0.writable = true;
    a0.ready = true;
    vec![a14, a17, a25, a0]
}

/// Emulator settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// Seed for the generated traffic.
    pub seed: u64,
    /// Generated chat messages per second (0: none).
    pub rate: f64,
    /// Faults per connection.
    pub faults: Arc<FaultPlan>,
    /// The access token clients must present.
    pub token: String,
    /// The stream id served at `/ws/{stream}`.
    pub stream: u64,
    /// The stream's accounts.
    pub accounts: Vec<AccountSpec>,
    /// The server pings after this long without an incoming frame (30 s, as the real one).
    pub ping_interval: Duration,
    /// Every this long, account 17 (or the second account) goes live or offline and a status is
    /// broadcast (never when None).
    pub status_every: Option<Duration>,
    /// How long creating a chat writer takes.
    pub writer_delay: Duration,
    /// Accounts whose chat writer is never created (to test writer timeouts).
    pub broken_writers: Vec<u64>,
    /// Echo sent messages to every client (the real server does).
    pub echo: bool,
    /// Echo messages sent from an account whose chat writer was created by a `writer` request
    /// (default true). False: they are delivered ([`Emulator::delivered`]) but not echoed.
    pub echo_writer_messages: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 5,
            rate: 2.0,
            faults: Arc::new(FaultPlan::none()),
            token: "ms-emulator-token".to_owned(),
            stream: 21,
            accounts: default_accounts(),
            ping_interval: Duration::from_secs(30),
            status_every: Some(Duration::from_secs(20)),
            writer_delay: Duration::from_millis(50),
            broken_writers: Vec::new(),
            echo: true,
            echo_writer_messages: true,
        }
    }
}

impl Config {
    /// A silent stream: no generated chat, no periodic status change; pings still answered.
    pub fn quiet() -> Config {
        Config {
            rate: 0.0,
            status_every: None,
            ..Config::default()
        }
    }
}

/// One chat message a client sent and the server accepted (a writable, ready sender).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The sending account.
    pub account_id: u64,
    /// The stream account it went to.
    pub cur_stream_account_id: u64,
    /// Whether it was an emote.
    pub emote: bool,
    /// The text as the client sent it (with any `/msg user` prefix).
    pub text: String,
    /// Whether the server echoed it to every client.
    pub echoed: bool,
}

/// One message the emulator broadcast to every client, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    /// Position in the broadcast order, from 1.
    pub seq: u64,
    /// The message's `type`.
    pub kind: String,
    /// The text of a chat message (empty for others).
    pub text: String,
    /// The full wire object.
    pub json: Value,
}

impl Committed {
    /// Whether it is a `text` or `emote` message.
    pub fn is_chat(&self) -> bool {
        self.kind == "text" || self.kind == "emote"
    }
}

/// The parts of one chat message to build.
struct Chat<'a> {
    emote: bool,
    account: u64,
    network: &'a str,
    from: Value,
    to: Option<Value>,
    text: &'a str,
}

#[derive(Debug)]
struct State {
    accounts: BTreeMap<u64, AccountSpec>,
    committed: Vec<Committed>,
    received: Vec<Value>,
    delivered: Vec<Delivered>,
    /// Accounts whose chat writer a `writer` request created.
    created_writers: std::collections::BTreeSet<u64>,
    server_pings: u64,
    traffic: Traffic,
    last_ts: i64,
    upgrades: u64,
    refused: u64,
    viewers: u64,
}

#[derive(Debug)]
struct Shared {
    config: Config,
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<str>>,
    /// Bumped by [`Emulator::play_dead`]: connections opened before the bump go dead.
    dead: watch::Sender<u64>,
}

impl Shared {
    fn now_ms(state: &mut State) -> i64 {
        let now = chrono::Utc::now().timestamp_millis();
        state.last_ts = now.max(state.last_ts + 1);
        state.last_ts
    }

    fn status_json(&self, state: &State) -> Value {
        let live = state.accounts.values().any(|a| a.live);
        let accounts: serde_json::Map<String, Value> = state
            .accounts
            .values()
            .map(|a| (a.id.to_string(), a.to_json()))
            .collect();
        json!({
            "type": "status",
            "status": { "data_pulling": false, "data_pushing": live, "data_incoming": live },
            "accounts": accounts,
        })
    }

    /// Records and broadcasts one message, under the state lock so order is global.
    fn commit(&self, state: &mut State, json: Value) -> Committed {
        let c = Committed {
            seq: state.committed.len() as u64 + 1,
            kind: json["type"].as_str().unwrap_or_default().to_owned(),
            text: json["text"].as_str().unwrap_or_default().to_owned(),
            json,
        };
        state.committed.push(c.clone());
        let _ = self.tx.send(Arc::from(c.json.to_string()));
        c
    }

    fn commit_status(&self, state: &mut State) -> Committed {
        let s = self.status_json(state);
        self.commit(state, s)
    }

    fn chat_json(&self, state: &mut State, c: Chat<'_>) -> Value {
        let Chat {
            emote,
            account,
            network,
            from,
            to,
            text,
        } = c;
        let ts = Shared::now_ms(state);
        let mut v = json!({
            "type": if emote { "emote" } else { "text" },
            "stream_id": self.config.stream,
            "account_id": account,
            "network": network,
            "from": from,
            "text": text,
            "markdown": text.replace('*', "\\*"),
            "timestamp": ts,
        });
        if let Some(to) = to {
            v["to"] = to;
        }
        v
    }

    /// One generated chat message from a live network (IRC always counts as live).
    fn generate(&self, state: &mut State) -> Committed {
        let sources: Vec<AccountSpec> = state
            .accounts
            .values()
            .filter(|a| a.live || a.network == "irc")
            .cloned()
            .collect();
        let pick = state.traffic.pick(sources.len());
        let person = state.traffic.person();
        let text = state.traffic.line();
        let emote = state.traffic.chance(0.1);
        let private = !emote && state.traffic.chance(0.05);
        let Some(acct) = sources.get(pick).cloned() else {
            let v = json!({"type": "text", "stream_id": self.config.stream, "text": text,
                "from": {"name": PEOPLE[person]}, "timestamp": Shared::now_ms(state)});
            return self.commit(state, v);
        };
        let name = PEOPLE[person];
        let (uid, picture) = match acct.network.as_str() {
            "irc" => (json!(100 + person as u64), None),
            "youtube" => (
                json!(format!("UC{:04}{}", person, name.to_lowercase())),
                Some(format!("https://yt.example/avatar/{person}.jpg")),
            ),
            _ => (
                json!(format!("{}", 90_000_000 + person as u64 * 7919)),
                Some(format!(
                    "https://static-cdn.example/{}.png",
                    name.to_lowercase()
                )),
            ),
        };
        let mut from = json!({ "id": uid, "name": name });
        if let Some(p) = picture {
            from["picture"] = json!(p);
        }
        let to = private.then(|| json!({ "name": acct.name, "id": acct.wire_user_id() }));
        let text = if emote {
            format!("is {}", text.to_lowercase())
        } else {
            text
        };
        let v = self.chat_json(
            state,
            Chat {
                emote,
                account: acct.id,
                network: &acct.network,
                from,
                to,
                text: &text,
            },
        );
        self.commit(state, v)
    }

    fn toggle_status(&self, state: &mut State) -> Committed {
        let id = if state.accounts.contains_key(&17) {
            Some(17)
        } else {
            state.accounts.keys().nth(1).copied()
        };
        if let Some(a) = id.and_then(|id| state.accounts.get_mut(&id)) {
            a.live = !a.live;
        }
        self.commit_status(state)
    }

    /// Handles one client message; returns frames for this client only.
    fn on_client(self: &Arc<Self>, text: &str) -> Vec<String> {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            lock(&self.state).received.push(json!({ "unparsed": text }));
            return Vec::new();
        };
        let mut state = lock(&self.state);
        state.received.push(v.clone());
        let kind = v["type"].as_str().unwrap_or_default().to_owned();
        let id = |k: &str| match &v[k] {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        match kind.as_str() {
            "status" => vec![self.status_json(&state).to_string()],
            "viewcount" => {
                state.viewers += 1;
                let base = state.viewers;
                state
                    .accounts
                    .values()
                    .filter(|a| a.live)
                    .map(|a| {
                        json!({"type": "viewcountresult", "viewer_count": base * 3 + a.id % 7,
                               "stream_id": self.config.stream, "account_id": a.id})
                        .to_string()
                    })
                    .collect()
            }
            "writer" => {
                let (Some(account), Some(to)) = (id("account_id"), id("cur_stream_account_id"))
                else {
                    return Vec::new();
                };
                let ok = state.accounts.get(&account).is_some_and(|a| a.writable)
                    && state.accounts.contains_key(&to)
                    && !self.config.broken_writers.contains(&account);
                if ok {
                    let shared = Arc::clone(self);
                    tokio::spawn(async move {
                        tokio::time::sleep(shared.config.writer_delay).await;
                        let mut state = lock(&shared.state);
                        if let Some(a) = state.accounts.get_mut(&account) {
                            a.ready = true;
                        }
                        state.created_writers.insert(account);
                        shared.commit(
                            &mut state,
                            json!({"type": "writerresult", "account_id": account,
                                   "cur_stream_account_id": to}),
                        );
                        shared.commit_status(&mut state);
                    });
                }
                Vec::new()
            }
            "text" | "emote" => {
                let (Some(account), Some(to_id)) = (id("account_id"), id("cur_stream_account_id"))
                else {
                    return Vec::new();
                };
                let Some(text) = v["text"].as_str() else {
                    return Vec::new();
                };
                let Some(sender) = state.accounts.get(&account).cloned() else {
                    return Vec::new();
                };
                let Some(target) = state.accounts.get(&to_id).cloned() else {
                    return Vec::new();
                };
                if !(sender.writable && sender.ready) {
                    return Vec::new();
                }
                let echoed = self.config.echo
                    && (self.config.echo_writer_messages
                        || !state.created_writers.contains(&account));
                state.delivered.push(Delivered {
                    account_id: account,
                    cur_stream_account_id: to_id,
                    emote: kind == "emote",
                    text: text.to_owned(),
                    echoed,
                });
                if !echoed {
                    return Vec::new();
                }
                let (to, body) = match text
                    .strip_prefix("/msg ")
                    .and_then(|r| r.trim_start().split_once(' '))
                {
                    Some((user, body)) => (Some(json!({ "name": user })), body.trim_start()),
                    None => (None, text),
                };
                let from = json!({ "id": sender.wire_user_id(), "name": sender.name });
                let echo = self.chat_json(
                    &mut state,
                    Chat {
                        emote: kind == "emote",
                        account: to_id,
                        network: &target.network,
                        from,
                        to,
                        text: body,
                    },
                );
                self.commit(&mut state, echo);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

/// A running multistreamer emulator.
#[derive(Debug)]
pub struct Emulator {
    handle: ServerHandle,
    shared: Arc<Shared>,
    generator: Option<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    /// Binds, starts serving and (with a rate) generating traffic.
    pub async fn start(config: Config) -> io::Result<Emulator> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (tx, _) = broadcast::channel(16_384);
        let state = State {
            accounts: config.accounts.iter().map(|a| (a.id, a.clone())).collect(),
            committed: Vec::new(),
            received: Vec::new(),
            delivered: Vec::new(),
            created_writers: Default::default(),
            server_pings: 0,
            traffic: Traffic::new(config.seed),
            last_ts: 0,
            upgrades: 0,
            refused: 0,
            viewers: 0,
        };
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(state),
            tx,
            dead: watch::channel(0).0,
        });
        let (shutdown, _) = watch::channel(false);
        let task = tokio::spawn(serve(listener, Arc::clone(&shared), shutdown.subscribe()));
        let handle = ServerHandle::new(addr, shutdown, task);
        let generator = (shared.config.rate > 0.0 || shared.config.status_every.is_some())
            .then(|| tokio::spawn(generate(Arc::clone(&shared), handle.shutdown_signal())));
        Ok(Emulator {
            handle,
            shared,
            generator,
        })
    }

    /// The base URL (`ws://127.0.0.1:PORT`); clients connect to `{url}/ws/{stream}?token=`.
    pub fn url(&self) -> String {
        self.handle.url_with_scheme("ws")
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// The token clients must present.
    pub fn token(&self) -> &str {
        &self.shared.config.token
    }

    /// The stream id served.
    pub fn stream(&self) -> u64 {
        self.shared.config.stream
    }

    /// A `[[source]]` table connecting `tributary run` to this emulator.
    pub fn config_snippet(&self, source_name: &str) -> String {
        format!(
            "[[source]]\nname = \"{source_name}\"\nservice = \"multistreamer\"\nurl = \"{}\"\nstream = {}\ntoken = \"{}\"\n",
            self.url(),
            self.stream(),
            self.token()
        )
    }

    /// Every message broadcast to all clients, in order (chat, echoes, status changes,
    /// writer results).
    pub fn committed(&self) -> Vec<Committed> {
        lock(&self.shared.state).committed.clone()
    }

    /// The committed `text`/`emote` messages, in order.
    pub fn committed_chat(&self) -> Vec<Committed> {
        lock(&self.shared.state)
            .committed
            .iter()
            .filter(|c| c.is_chat())
            .cloned()
            .collect()
    }

    /// Every message clients sent, in order of arrival (unparseable ones as
    /// `{"unparsed": text}`).
    pub fn received(&self) -> Vec<Value> {
        lock(&self.shared.state).received.clone()
    }

    /// Every chat message a client sent that the server accepted, echoed or not, in order.
    pub fn delivered(&self) -> Vec<Delivered> {
        lock(&self.shared.state).delivered.clone()
    }

    /// How many pings the server sent (after [`Config::ping_interval`] without an incoming
    /// frame, or while stalled with keep-alives).
    pub fn server_pings(&self) -> u64 {
        lock(&self.shared.state).server_pings
    }

    /// Every connection open now becomes a dead peer: it stops reading and writing, so pings
    /// go unanswered and nothing arrives, while the TCP connection stays open. Connections
    /// opened later are served normally.
    pub fn play_dead(&self) {
        self.shared.dead.send_modify(|epoch| *epoch += 1);
    }

    /// How many WebSocket upgrades succeeded.
    pub fn connections(&self) -> u64 {
        lock(&self.shared.state).upgrades
    }

    /// How many upgrade requests were refused with an HTTP error (bad token, unknown stream,
    /// injected status).
    pub fn refused(&self) -> u64 {
        lock(&self.shared.state).refused
    }

    /// The current status message.
    pub fn status(&self) -> Value {
        let state = lock(&self.shared.state);
        self.shared.status_json(&state)
    }

    /// Commits and broadcasts one chat message now.
    pub fn inject_chat(
        &self,
        emote: bool,
        account: u64,
        from_id: Value,
        from_name: &str,
        to: Option<&str>,
        text: &str,
    ) -> Committed {
        let mut state = lock(&self.shared.state);
        let network = state
            .accounts
            .get(&account)
            .map(|a| a.network.clone())
            .unwrap_or_else(|| "irc".to_owned());
        let to = to.map(|name| json!({ "name": name }));
        let from = json!({ "id": from_id, "name": from_name });
        let v = self.shared.chat_json(
            &mut state,
            Chat {
                emote,
                account,
                network: &network,
                from,
                to,
                text,
            },
        );
        self.shared.commit(&mut state, v)
    }

    /// Commits and broadcasts any JSON object now (e.g. an unknown type).
    pub fn inject_json(&self, json: Value) -> Committed {
        let mut state = lock(&self.shared.state);
        self.shared.commit(&mut state, json)
    }

    /// Broadcasts a raw text frame without committing it (e.g. malformed JSON).
    pub fn inject_raw(&self, frame: &str) {
        let _ = self.shared.tx.send(Arc::from(frame));
    }

    /// Sets whether an account is live, and broadcasts the new status.
    pub fn set_live(&self, account: u64, live: bool) -> Committed {
        let mut state = lock(&self.shared.state);
        if let Some(a) = state.accounts.get_mut(&account) {
            a.live = live;
        }
        self.shared.commit_status(&mut state)
    }

    /// Generates one chat message now (as the traffic generator does).
    pub fn generate_one(&self) -> Committed {
        let mut state = lock(&self.shared.state);
        self.shared.generate(&mut state)
    }

    /// Stops the traffic generator (chat and status changes) for good; connections stay open.
    pub fn stop_traffic(&mut self) {
        if let Some(g) = self.generator.take() {
            g.abort();
        }
    }

    /// Stops the server and ends every open connection.
    pub async fn stop(mut self) {
        self.stop_traffic();
        self.handle.stop().await;
    }
}

async fn generate(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let rate = shared.config.rate;
    let chat_period = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let start = Instant::now();
    let mut next_chat = chat_period.map(|p| start + p);
    let mut next_status = shared.config.status_every.map(|p| start + p);
    loop {
        let wake = match (next_chat, next_status) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return,
        };
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        let mut state = lock(&shared.state);
        if let (Some(at), Some(p)) = (next_chat, chat_period) {
            if now >= at {
                shared.generate(&mut state);
                next_chat = Some(at + p);
            }
        }
        if let (Some(at), Some(p)) = (next_status, shared.config.status_every) {
            if now >= at {
                shared.toggle_status(&mut state);
                next_status = Some(at + p);
            }
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stopped(&mut shutdown) => return,
            a = listener.accept() => a,
        };
        let Ok((tcp, _peer)) = accepted else {
            continue;
        };
        let faults = shared.config.faults.next_connection();
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection(shared, tcp, faults, shutdown).await;
        });
    }
}

/// A TCP stream that can cut itself after N written bytes or write one byte at a time.
struct FaultyIo {
    inner: TcpStream,
    armed: bool,
    remaining: Option<usize>,
    one_byte: bool,
}

impl AsyncRead for FaultyIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultyIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut n = buf.len();
        if self.one_byte {
            n = n.min(1);
        }
        let limit = if self.armed { self.remaining } else { None };
        if let Some(rem) = limit {
            if rem == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "fault injection: connection dropped",
                )));
            }
            n = n.min(rem);
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, &buf[..n]);
        if let (Poll::Ready(Ok(written)), Some(rem)) = (&r, limit) {
            self.remaining = Some(rem - *written);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn refusal(code: u16, retry_after: Option<u64>, message: &str) -> ErrorResponse {
    let mut b = http::Response::builder()
        .status(code)
        .header("Content-Type", "text/plain");
    if let Some(s) = retry_after {
        b = b.header("Retry-After", s.to_string());
    }
    b.body(Some(message.to_owned()))
        .unwrap_or_else(|_| http::Response::new(Some(message.to_owned())))
}

/// Checks the upgrade request as the real server does.
/// Why an upgrade request is refused: status, `Retry-After`, message.
type Refusal = (u16, Option<u64>, &'static str);

fn check_request(
    req: &Request,
    token: &str,
    stream: u64,
    forced: Option<(u16, Option<u64>)>,
) -> Result<(), Refusal> {
    if let Some((code, retry_after)) = forced {
        return Err((code, retry_after, "injected fault"));
    }
    let path = req.uri().path();
    let Some(id) = path.strip_prefix("/ws/") else {
        return Err((404, None, "not found"));
    };
    let given = req.uri().query().and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == "token").then(|| percent_decode(v))
        })
    });
    match given {
        None => return Err((401, None, "a token is required")),
        Some(t) if t.is_empty() => return Err((401, None, "a token is required")),
        Some(t) if t != token => return Err((403, None, "invalid token")),
        Some(_) => {}
    }
    if id.parse::<u64>().ok() != Some(stream) {
        return Err((404, None, "no such stream"));
    }
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    faults: Vec<Fault>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut io = FaultyIo {
        inner: tcp,
        armed: false,
        remaining: None,
        one_byte: false,
    };
    let mut forced = None;
    let mut stall = None;
    let mut bad_frames = Vec::new();
    for f in &faults {
        match f {
            Fault::Refuse => return,
            Fault::Delay(d) => tokio::time::sleep(*d).await,
            Fault::Status { code, retry_after } => forced = Some((*code, *retry_after)),
            Fault::DropAfterBytes(n) => io.remaining = Some(*n),
            Fault::OneByteWrites => io.one_byte = true,
            Fault::Stall {
                keepalives,
                duration,
            } => stall = Some((*keepalives, *duration)),
            Fault::Malformed => {
                bad_frames.push("{\"type\":\"text\",\"from\":{\"name\":".to_owned())
            }
            Fault::Oversize(n) => bad_frames.push(format!(
                "{{\"type\":\"text\",\"text\":\"{}\"}}",
                "x".repeat(n.saturating_sub(24))
            )),
        }
    }
    let token = shared.config.token.clone();
    let stream = shared.config.stream;
    let counter = Arc::clone(&shared);
    // tungstenite's `Callback` trait fixes the (large) error type of this closure.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        check_request(req, &token, stream, forced)
            .map(|()| resp)
            .map_err(|(code, retry_after, message)| {
                lock(&counter.state).refused += 1;
                refusal(code, retry_after, message)
            })
    };
    let accepted = tokio::select! {
        _ = stopped(&mut shutdown) => return,
        a = tokio_tungstenite::accept_hdr_async(io, callback) => a,
    };
    let Ok(mut ws) = accepted else {
        return;
    };
    ws.get_mut().armed = true;
    // Subscribe right after the upgrade: every later commit reaches this client.
    let mut rx = shared.tx.subscribe();
    let mut dead = shared.dead.subscribe();
    let born = *dead.borrow_and_update();
    lock(&shared.state).upgrades += 1;

    for frame in bad_frames {
        if ws.send(Message::Text(frame.into())).await.is_err() {
            return;
        }
    }

    if let Some((keepalives, duration)) = stall {
        let until = duration.map(|d| Instant::now() + d);
        let mut next_ping = Instant::now() + shared.config.ping_interval;
        loop {
            let wake = match until {
                Some(u) if keepalives => u.min(next_ping),
                Some(u) => u,
                None if keepalives => next_ping,
                None => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                _ = stopped(&mut shutdown) => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                break;
            }
            if keepalives && Instant::now() >= next_ping {
                // Send without reading: the client's pongs go unread.
                lock(&shared.state).server_pings += 1;
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
                next_ping = Instant::now() + shared.config.ping_interval;
            }
        }
    }

    let mut last_rx = Instant::now();
    let mut ping_sent_at_rx: Option<Instant> = None;
    loop {
        let ping_at = last_rx + shared.config.ping_interval;
        let ping_due = ping_sent_at_rx != Some(last_rx);
        tokio::select! {
            _ = stopped(&mut shutdown) => {
                let _ = ws.send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: "server shutting down".into(),
                }))).await;
                return;
            }
            frame = ws.next() => {
                let msg = match frame {
                    None | Some(Err(_)) => return,
                    Some(Ok(m)) => m,
                };
                last_rx = Instant::now();
                match msg {
                    Message::Text(t) => {
                        for reply in shared.on_client(t.as_str()) {
                            if ws.send(Message::Text(reply.into())).await.is_err() {
                                return;
                            }
                        }
                    }
                    Message::Close(_) => return,
                    _ => {}
                }
            }
            out = rx.recv() => {
                match out {
                    Ok(frame) => {
                        if ws.send(Message::Text(frame.as_ref().into())).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // A client this slow loses messages, as on the real server; cut it.
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            _ = tokio::time::sleep_until(ping_at), if ping_due => {
                ping_sent_at_rx = Some(last_rx);
                lock(&shared.state).server_pings += 1;
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
            () = async {
                // Never hold the watch's read guard past this point.
                let _ = dead.wait_for(|epoch| *epoch > born).await;
            } => {
                // A dead peer: neither read (so no pong) nor write, keep the socket open.
                stopped(&mut shutdown).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str) -> Request {
        http::Request::builder().uri(uri).body(()).unwrap()
    }

    #[test]
    fn upgrade_requests_are_checked() {
        let check = |uri: &str| check_request(&req(uri), "tok en", 21, None).map_err(|r| r.0);
        assert_eq!(check("/ws/21?token=tok%20en"), Ok(()));
        assert_eq!(check("/ws/21"), Err(401));
        assert_eq!(check("/ws/21?token="), Err(401));
        assert_eq!(check("/ws/21?token=nope"), Err(403));
        assert_eq!(check("/ws/22?token=tok+en"), Err(404));
        assert_eq!(check("/other?token=tok+en"), Err(404));
        let forced = check_request(
            &req("/ws/21?token=tok+en"),
            "tok en",
            21,
            Some((503, Some(2))),
        )
        .unwrap_err();
        assert_eq!(forced.0, 503);
        let response = refusal(forced.0, forced.1, forced.2);
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers()["retry-after"], "2");
    }

    #[test]
    fn status_follows_the_document_shape() {
        let accounts = default_accounts();
        let a14 = accounts[0].to_json();
        assert_eq!(a14["http_url"], "https://twitch.tv/jprjrdev");
        assert_eq!(a14["network"]["displayName"], "Twitch");
        let a17 = accounts[1].to_json();
        assert!(a17.get("http_url").is_none());
        assert_eq!(a17["ready"], false);
        assert_eq!(accounts[3].wire_user_id(), json!(1));
        assert_eq!(accounts[0].wire_user_id(), json!("40000014"));
    }

    #[tokio::test]
    async fn traffic_is_seeded_and_covers_networks_emotes_and_privates() {
        let config = Config {
            rate: 0.0,
            status_every: None,
            ..Config::default()
        };
        let emu = Emulator::start(config).await.unwrap();
        let mut networks = std::collections::BTreeSet::new();
        let (mut emotes, mut privates) = (0, 0);
        for _ in 0..400 {
            let c = emu.generate_one();
            networks.insert(c.json["network"].as_str().unwrap().to_owned());
            emotes += usize::from(c.kind == "emote");
            privates += usize::from(c.json.get("to").is_some());
            assert!(c.json["timestamp"].as_i64().unwrap() > 0);
            assert_eq!(c.json["stream_id"], 21);
        }
        assert_eq!(
            networks.into_iter().collect::<Vec<_>>(),
            vec!["irc", "twitch", "youtube"]
        );
        assert!(emotes > 0 && privates > 0, "{emotes} {privates}");
        let committed = emu.committed();
        assert_eq!(committed.len(), 400);
        assert!(committed.windows(2).all(|w| w[0].seq + 1 == w[1].seq
            && w[0].json["timestamp"].as_i64() < w[1].json["timestamp"].as_i64()));
        emu.stop().await;
    }

    #[tokio::test]
    async fn writer_and_echo_follow_the_document() {
        let config = Config {
            rate: 0.0,
            status_every: None,
            writer_delay: Duration::from_millis(1),
            ..Config::default()
        };
        let emu = Emulator::start(config).await.unwrap();
        // Not ready yet: a message from 17 is not echoed.
        assert!(
            emu.shared
                .on_client(
                    r#"{"type":"text","account_id":17,"cur_stream_account_id":14,"text":"x"}"#
                )
                .is_empty()
        );
        assert!(emu.committed().is_empty());
        emu.shared
            .on_client(r#"{"type":"writer","account_id":17,"cur_stream_account_id":14}"#);
        for _ in 0..200 {
            if emu.committed().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let c = emu.committed();
        assert_eq!(
            c[0].json,
            json!({"type":"writerresult","account_id":17,"cur_stream_account_id":14})
        );
        assert_eq!(c[1].json["accounts"]["17"]["ready"], true);
        emu.shared.on_client(
            r#"{"type":"text","account_id":17,"cur_stream_account_id":14,"text":"hello"}"#,
        );
        emu.shared.on_client(r#"{"text":"/msg somebody hey there","account_id":0,"cur_stream_account_id":0,"type":"text"}"#);
        let c = emu.committed_chat();
        assert_eq!(c[0].json["from"]["name"], "gamethattunedev");
        assert_eq!(c[0].json["account_id"], 14);
        assert_eq!(c[0].text, "hello");
        assert_eq!(c[1].json["to"]["name"], "somebody");
        assert_eq!(c[1].text, "hey there");
        assert_eq!(c[1].json["from"]["id"], 1);
        let replies = emu.shared.on_client(r#"{"type":"viewcount"}"#);
        assert_eq!(replies.len(), 2, "one per live account: {replies:?}");
        assert_eq!(emu.received().len(), 5);
        emu.stop().await;
    }

    #[tokio::test]
    async fn writer_messages_can_go_unechoed_but_are_delivered() {
        let emu = Emulator::start(Config {
            writer_delay: Duration::from_millis(1),
            echo_writer_messages: false,
            ..Config::quiet()
        })
        .await
        .unwrap();
        emu.shared
            .on_client(r#"{"type":"writer","account_id":17,"cur_stream_account_id":14}"#);
        for _ in 0..200 {
            if emu.committed().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(emu.committed()[0].kind, "writerresult");
        emu.shared.on_client(
            r#"{"type":"text","account_id":17,"cur_stream_account_id":14,"text":"quietly"}"#,
        );
        emu.shared.on_client(
            r#"{"type":"emote","account_id":14,"cur_stream_account_id":14,"text":"waves"}"#,
        );
        // Not ready: neither delivered nor echoed.
        emu.shared.on_client(
            r#"{"type":"text","account_id":99,"cur_stream_account_id":14,"text":"nobody"}"#,
        );
        let chat = emu.committed_chat();
        assert_eq!(
            chat.len(),
            1,
            "only the ready-made writer is echoed: {chat:?}"
        );
        assert_eq!(chat[0].text, "waves");
        let d = emu.delivered();
        assert_eq!(
            d,
            vec![
                Delivered {
                    account_id: 17,
                    cur_stream_account_id: 14,
                    emote: false,
                    text: "quietly".into(),
                    echoed: false,
                },
                Delivered {
                    account_id: 14,
                    cur_stream_account_id: 14,
                    emote: true,
                    text: "waves".into(),
                    echoed: true,
                },
            ]
        );
        emu.stop().await;
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
