//! `cargo xtask bench e2e`: the whole `tributary run` path per transport, beside the loopback
//! limit measured in the same run.
//!
//! For each transport (Flowdock SSE, Flowdock JSON stream, Campfire, Multistreamer WebSocket,
//! Ustream timeslices) the bench pre-generates N realistic events as wire bytes (unique ids,
//! deterministic), starts an in-process loopback server (std threads and sockets) that answers
//! what the real client asks in its connect plan (REST baselines, join, backfill, user lists,
//! the WebSocket handshake) and then writes the pre-generated stream body as fast as the socket
//! takes it, and keeps the connection open and idle (a second stream request would get no
//! events, so nothing is delivered twice).
//!
//! Two consumers read the same bytes from their own server instance:
//! - **loopback**: a plain TCP reader in this process that sends the same request and only
//!   counts bytes (64 KiB reads) until the whole response arrived: the limit of the socket
//!   (the fastest of three reads).
//! - **tributary**: the real binary, `tributary run --config .. --format json --state ..`,
//!   stdout a pipe read by a thread that only counts newlines. The clock starts when the server
//!   starts writing the stream body (Ustream: the first poll response) and stops when the N-th
//!   line was read. At that moment the bench reads the child's CPU time (utime + stime from
//!   `/proc/PID/stat`) and peak RSS (`VmHWM` from `/proc/PID/status`), waits briefly for lines
//!   beyond N (an error), stops it with SIGTERM and reads the allocation count the
//!   `count-allocs` build prints at exit (the whole process: start-up and shutdown included).
//!
//! Ustream polls on a schedule (one timeslice per refresh interval), so a live channel can
//! never be read faster than the server's clock. What can be fast is catching up: the bench
//! starts the source from a saved cursor whose schedule anchor lies K hours in the past, so the
//! client asks back to back for K timeslices of the maximum width (3600 s), each answered at
//! once with a large payload (a few thousand messages); timing runs from the first timeslice
//! response to the last line. The loopback reader asks for the same K timeslices one after the
//! other on one connection.
//!
//! Options: `--events N` (default 300000), `--transport NAME` (repeatable; default all:
//! flowdock-sse, flowdock-json, campfire, multistreamer, ustream), `--keep-raw` (passes
//! `--raw`), `--bin PATH` (another tributary binary). Output: one markdown table, with the
//! machine and the time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The events per transport when `--events` is not given (a few seconds per transport today).
const DEFAULT_EVENTS: usize = 300_000;
/// Ustream: messages per timeslice response (about 2 MB of JSON, below the 8 MiB limit).
const USTREAM_PER_SLICE: usize = 5_000;
/// Ustream: the widest timeslice the client asks for while catching up (its default cap).
const USTREAM_WIDTH: i64 = 3_600;
/// Ustream: the range value the saved cursor resumes from.
const USTREAM_RANGE0: i64 = 1_700_000_000;
/// How long the server waits after the last request of the connect plan before it writes the
/// stream body (so the body is not held while the client still backfills).
const SETTLE: Duration = Duration::from_millis(300);
/// How long the bench waits after the N-th line for lines that should not come.
const GRACE: Duration = Duration::from_millis(300);
/// The loopback reader runs this often per transport; the fastest run is the limit (one read
/// of the whole body takes well under a second, so one run is at the mercy of the scheduler).
const LOOPBACK_TRIES: usize = 3;
/// The users the generated events come from.
const USERS: u64 = 16;

type Error = String;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Error> {
    let args = Args::parse(std::env::args().skip(1))?;
    let Some(args) = args else {
        println!("{HELP}");
        return Ok(());
    };
    assert_eq!(
        ws_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        "the RFC 6455 example handshake"
    );
    let clk_tck = clock_ticks();
    let started = chrono::Utc::now();
    let load_before = load_average();
    let mut rows = Vec::new();
    for &transport in &args.transports {
        eprintln!(
            "e2e bench: {}: generating {} events",
            transport.name(),
            args.events
        );
        let plan = Arc::new(Plan::generate(transport, args.events));
        let mut loopback = Duration::MAX;
        for _ in 0..LOOPBACK_TRIES {
            let t = reference_read(&plan)
                .map_err(|e| format!("{}: the loopback reader: {e}", transport.name()))?;
            loopback = loopback.min(t);
        }
        let measured = run_tributary(&plan, &args, clk_tck.0)
            .map_err(|e| format!("{}: {e}", transport.name()))?;
        eprintln!(
            "e2e bench: {}: {:.0} events/s (loopback {:.0} events/s)",
            transport.name(),
            measured.events_per_s(args.events),
            args.events as f64 / loopback.as_secs_f64()
        );
        rows.push(Row {
            transport,
            wire_bytes: plan.wire_bytes() as f64 / args.events as f64,
            measured,
            loopback,
        });
    }
    print_table(&args, &rows, started, &load_before, clk_tck);
    Ok(())
}

const HELP: &str =
    "cargo xtask bench e2e [--events N] [--transport NAME]... [--keep-raw] [--bin PATH]

  --events N          events per transport (default 300000)
  --transport NAME    flowdock-sse, flowdock-json, campfire, multistreamer, ustream
                      (repeatable; default all)
  --keep-raw          run tributary with --raw (keep each event's wire object)
  --bin PATH          run this tributary binary instead of the one cargo built
                      (e.g. a saved copy of main's, for a before/after in one session)";

// ---- Arguments ----

struct Args {
    events: usize,
    transports: Vec<Transport>,
    keep_raw: bool,
    /// The tributary binary to run (default: the one cargo built for this bench).
    bin: PathBuf,
}

impl Args {
    /// The parsed arguments; None for `--help`.
    fn parse(args: impl Iterator<Item = String>) -> Result<Option<Args>, Error> {
        let mut parsed = Args {
            events: DEFAULT_EVENTS,
            transports: Vec::new(),
            keep_raw: false,
            bin: PathBuf::from(env!("CARGO_BIN_EXE_tributary")),
        };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = |what: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs {what}\n\n{HELP}"))
            };
            match name.as_str() {
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "-h" | "--help" => return Ok(None),
                "--keep-raw" => parsed.keep_raw = true,
                "--bin" => {
                    let v = value("a path")?;
                    parsed.bin = PathBuf::from(&v);
                    if !parsed.bin.is_file() {
                        return Err(format!("--bin {v}: no such file"));
                    }
                }
                "--events" => {
                    let v = value("a number")?;
                    parsed.events = match v.replace('_', "").parse::<usize>() {
                        Ok(n) if n > 0 => n,
                        _ => return Err(format!("--events {v}: not a positive number")),
                    };
                }
                "--transport" => {
                    let v = value("a name")?;
                    let t = Transport::ALL
                        .into_iter()
                        .find(|t| t.name() == v)
                        .ok_or_else(|| {
                            format!(
                                "--transport {v}: unknown; valid: {}",
                                Transport::ALL.map(Transport::name).join(", ")
                            )
                        })?;
                    if !parsed.transports.contains(&t) {
                        parsed.transports.push(t);
                    }
                }
                other => return Err(format!("unknown argument `{other}`\n\n{HELP}")),
            }
        }
        if parsed.transports.is_empty() {
            parsed.transports = Transport::ALL.to_vec();
        }
        Ok(Some(parsed))
    }
}

// ---- Transports and their pre-generated bytes ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    FlowdockSse,
    FlowdockJson,
    Campfire,
    Multistreamer,
    Ustream,
}

impl Transport {
    const ALL: [Transport; 5] = [
        Transport::FlowdockSse,
        Transport::FlowdockJson,
        Transport::Campfire,
        Transport::Multistreamer,
        Transport::Ustream,
    ];

    fn name(self) -> &'static str {
        match self {
            Transport::FlowdockSse => "flowdock-sse",
            Transport::FlowdockJson => "flowdock-json",
            Transport::Campfire => "campfire",
            Transport::Multistreamer => "multistreamer",
            Transport::Ustream => "ustream",
        }
    }

    /// The config table of the bench's one source, reading the server at `addr`.
    fn config(self, addr: SocketAddr) -> String {
        let head = "[[source]]\nname = \"bench\"\ntoken = { env = \"BENCH_TOKEN\" }\n";
        match self {
            Transport::FlowdockSse | Transport::FlowdockJson => format!(
                "{head}service = \"flowdock\"\nurl = \"http://{addr}\"\nflows = [\"acme/main\"]\ntransport = \"{}\"\n",
                if self == Transport::FlowdockSse {
                    "sse"
                } else {
                    "json"
                }
            ),
            Transport::Campfire => format!(
                "{head}service = \"campfire\"\nurl = \"http://{addr}\"\napi_url = \"http://{addr}\"\nroom = 1\njoin = true\n"
            ),
            Transport::Multistreamer => {
                format!("{head}service = \"multistreamer\"\nurl = \"ws://{addr}\"\nstream = 1\n")
            }
            // Ustream takes no token.
            Transport::Ustream => format!(
                "[[source]]\nname = \"bench\"\nservice = \"ustream\"\nurl = \"http://{addr}\"\nchannel = 7\n"
            ),
        }
    }
}

/// What a server instance serves: the stream body (or the Ustream poll responses).
struct Plan {
    transport: Transport,
    /// The stream body: SSE, `\r`-delimited JSON or WebSocket frames (empty for Ustream).
    body: Vec<u8>,
    /// Ustream: the JSON body of each timeslice response, in order.
    polls: Vec<Vec<u8>>,
}

impl Plan {
    fn generate(transport: Transport, n: usize) -> Plan {
        let mut body = Vec::new();
        let mut polls = Vec::new();
        match transport {
            Transport::FlowdockSse => {
                for i in 0..n {
                    let json = flowdock_message(i);
                    body.extend_from_slice(format!("id: {}\ndata: ", i + 1).as_bytes());
                    body.extend_from_slice(json.as_bytes());
                    body.extend_from_slice(b"\n\n");
                }
            }
            Transport::FlowdockJson => {
                // The documents' own examples end objects with `\r\n`.
                for i in 0..n {
                    body.extend_from_slice(flowdock_message(i).as_bytes());
                    body.extend_from_slice(b"\r\n");
                }
            }
            Transport::Campfire => {
                for i in 0..n {
                    body.extend_from_slice(campfire_message(i).as_bytes());
                    body.push(b'\r');
                }
            }
            Transport::Multistreamer => {
                for i in 0..n {
                    ws_text_frame(&mut body, multistreamer_message(i).as_bytes());
                }
            }
            Transport::Ustream => {
                let mut first = 0;
                while first < n {
                    let count = USTREAM_PER_SLICE.min(n - first);
                    polls.push(ustream_slice(polls.len(), first, count).into_bytes());
                    first += count;
                }
            }
        }
        Plan {
            transport,
            body,
            polls,
        }
    }

    fn wire_bytes(&self) -> usize {
        self.body.len() + self.polls.iter().map(Vec::len).sum::<usize>()
    }

    /// Ustream: the range a timeslice starts at.
    fn slice_from(index: usize) -> i64 {
        USTREAM_RANGE0 + index as i64 * USTREAM_WIDTH
    }
}

const WORDS: &[&str] = &[
    "deploy", "the", "build", "is", "green", "again", "after", "we", "fixed", "flaky", "test",
    "in", "staging", "can", "someone", "review", "my", "pull", "request", "please", "lunch", "at",
    "noon", "café", "release", "notes", "are", "ready", "for", "tomorrow", "rollback", "done",
    "metrics", "look", "normal", "now", "thanks", "everyone", "ship", "it", "über", "latency",
    "dropped", "by", "half", "🚀", "on-call", "handover",
];

/// A deterministic chat line of 40 to 160 bytes for event `i`.
fn text(i: usize) -> String {
    let mut x = (i as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51afd7ed558ccd);
        x ^= x >> 29;
        x
    };
    let target = 40 + (next() % 120) as usize;
    let mut s = String::with_capacity(target + 16);
    while s.len() < target {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
    }
    s
}

fn user_of(i: usize) -> u64 {
    (i as u64 * 7) % USERS + 1
}

/// A Flowdock chat message (about 330 bytes), id `i + 1`.
fn flowdock_message(i: usize) -> String {
    let sent = 1_764_547_200_000 + i as u64 * 10;
    let created = chrono::DateTime::from_timestamp_millis(sent as i64)
        .expect("in range")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ");
    format!(
        r#"{{"event":"message","content":"{}","tags":[],"sent":{sent},"attachments":[],"app":"chat","user":"{}","id":{},"uuid":"bnch{i:012}","flow":"acme:main","created_at":"{created}","thread_id":"thr{:024}"}}"#,
        text(i),
        user_of(i),
        i + 1,
        i / 4
    )
}

/// A Campfire `TextMessage` as the streaming API sends it, id `i + 1`.
fn campfire_message(i: usize) -> String {
    let created = chrono::DateTime::from_timestamp(1_764_547_200 + i as i64 / 100, 0)
        .expect("in range")
        .format("%Y-%m-%d %H:%M:%S");
    format!(
        r#"{{"room_id":1,"created_at":"{created}","body":"{}","id":{},"user_id":{},"type":"TextMessage","starred":"false"}}"#,
        text(i),
        i + 1,
        user_of(i)
    )
}

/// A Multistreamer incoming `text` message (unique by its timestamp).
fn multistreamer_message(i: usize) -> String {
    let u = user_of(i);
    let t = text(i);
    format!(
        r#"{{"type":"text","account_id":1,"network":"twitch","from":{{"id":"{}","name":"viewer{u}","picture":"https://static.example.com/avatars/{u}.png"}},"text":"{t}","markdown":"{t}","stream_id":1,"timestamp":{}}}"#,
        1000 + u,
        1_764_547_200_000u64 + i as u64
    )
}

/// The JSON body of Ustream timeslice `index`: messages `first..first + count`, newest first.
fn ustream_slice(index: usize, first: usize, count: usize) -> String {
    let from = Plan::slice_from(index);
    let mut payload = Vec::with_capacity(count);
    for k in (0..count).rev() {
        let i = first + k;
        let u = user_of(i);
        let at = from + (k as i64 * USTREAM_WIDTH) / count as i64;
        payload.push(format!(
            r#"{{"type":"msg","uid":"m{i}","createdAt":{at},"text":"{}","flag":"","timeElapsed":"1 min ago","profileNetwork":"twitter","profileUserName":"viewer{u}","network":[{{"provider":"twitter","displayName":"viewer{u}"}}],"profilePictureUrl":"http://a0.twimg.com/profile_images/{u}/avatar_normal.png","isOwner":0}}"#,
            text(i)
        ));
    }
    format!(
        r#"{{"success":true,"refreshInterval":10,"range":[{from},{}],"payload":[{}],"isSuffixCleaningNeeded":false}}"#,
        from + USTREAM_WIDTH,
        payload.join(",")
    )
}

/// Ustream: the state file resuming channel 7 at [`USTREAM_RANGE0`] with the schedule anchor
/// `slices` hours (plus a minute) in the past, so `slices` full-width timeslices are due at once.
fn ustream_state(addr: SocketAddr, slices: usize) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let ago_ms = (slices as i64 * USTREAM_WIDTH + 60) * 1000;
    serde_json::json!({
        "version": 1,
        "sources": {"bench": {
            "service": "ustream",
            "identity": format!("ustream http://{addr} channel 7"),
            "cursor": {
                "host": null,
                "schedule": {
                    "range_end": USTREAM_RANGE0,
                    "refresh_interval": 10,
                    "anchor_range": USTREAM_RANGE0,
                    "anchor_unix_ms": now_ms - ago_ms,
                    "needs_default": false
                },
                "ignored": [],
                "recent_ids": []
            }
        }}
    })
    .to_string()
}

// ---- The loopback server ----

/// One server instance: serves its plan's stream once.
struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    plan: Arc<Plan>,
    /// When the server started writing the stream body (or the first poll response).
    started: Mutex<Option<Instant>>,
    /// When the last request arrived.
    last_request: Mutex<Instant>,
    /// Streams opened (a second one is a reconnect: served without events).
    streams: AtomicUsize,
    /// Ustream: timeslice responses served.
    polls: AtomicUsize,
    /// Requests the plan does not expect, and other surprises.
    problems: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// One parsed request head.
struct HttpRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Server {
    fn start(plan: Arc<Plan>) -> Result<Server, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            plan,
            started: Mutex::new(None),
            last_request: Mutex::new(Instant::now()),
            streams: AtomicUsize::new(0),
            polls: AtomicUsize::new(0),
            problems: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || {
                    if let Err(e) = serve(conn, &s) {
                        if !s.stop.load(Ordering::Relaxed) {
                            note(&s, format!("connection: {e}"));
                        }
                    }
                });
            }
        });
        Ok(Server { addr, shared })
    }

    fn started(&self) -> Option<Instant> {
        *self.shared.started.lock().expect("lock")
    }

    fn problems(&self) -> Vec<String> {
        self.shared.problems.lock().expect("lock").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Records a surprise (reported only when the run fails or the server saw a reconnect).
fn note(s: &Shared, what: String) {
    s.problems.lock().expect("lock").push(what);
}

/// Serves one connection: REST answers until the stream request, then the stream.
fn serve(conn: TcpStream, s: &Shared) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut out = conn.try_clone()?;
    let mut input = BufReader::new(conn);
    while let Some(req) = read_request(&mut input)? {
        *s.last_request.lock().expect("lock") = Instant::now();
        match s.plan.transport {
            Transport::FlowdockSse | Transport::FlowdockJson => {
                if req.path.split('?').next() == Some("/flows/acme/main") {
                    let ct = if s.plan.transport == Transport::FlowdockSse {
                        "text/event-stream"
                    } else {
                        "application/json"
                    };
                    return stream(&mut out, s, stream_head(ct).as_bytes());
                }
                flowdock_rest(&mut out, s, &req)?;
            }
            Transport::Campfire => {
                if req.path.split('?').next() == Some("/room/1/live.json") {
                    return stream(&mut out, s, stream_head("application/json").as_bytes());
                }
                campfire_rest(&mut out, s, &req)?;
            }
            Transport::Multistreamer => {
                let key = req.header("sec-websocket-key").unwrap_or_default();
                if req.path.starts_with("/ws/1?") && !key.is_empty() {
                    return stream(&mut out, s, ws_head(key).as_bytes());
                }
                note(s, format!("unexpected {} {}", req.method, req.path));
                respond(&mut out, 404, "text/plain", b"not found")?;
            }
            Transport::Ustream => ustream_poll(&mut out, s, &req)?,
        }
    }
    Ok(())
}

/// Writes the stream head, waits until the connect plan is done, writes the body (once per
/// server; a reconnect gets none) and then keeps the connection open and idle.
fn stream(out: &mut TcpStream, s: &Shared, head: &[u8]) -> std::io::Result<()> {
    out.write_all(head)?;
    let first = s.streams.fetch_add(1, Ordering::SeqCst) == 0;
    if first {
        while s.last_request.lock().expect("lock").elapsed() < SETTLE {
            thread::sleep(Duration::from_millis(10));
        }
        *s.started.lock().expect("lock") = Some(Instant::now());
        out.write_all(&s.plan.body)?;
    } else {
        note(
            s,
            "the client opened the stream again (a reconnect)".to_owned(),
        );
    }
    while !s.stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn stream_head(content_type: &str) -> String {
    // No length and no chunked coding: the body runs until the connection closes.
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
    )
}

fn ws_head(key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        ws_accept(key)
    )
}

fn rest_head(status: u16, content_type: &str, len: usize) -> String {
    let reason = if status == 200 { "OK" } else { "Not Found" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: keep-alive\r\n\r\n"
    )
}

fn respond(out: &mut TcpStream, status: u16, ct: &str, body: &[u8]) -> std::io::Result<()> {
    let mut r = rest_head(status, ct, body.len()).into_bytes();
    r.extend_from_slice(body);
    out.write_all(&r)
}

/// Flowdock REST: baselines and backfill (no messages), the flow's users, single users.
fn flowdock_rest(out: &mut TcpStream, s: &Shared, req: &HttpRequest) -> std::io::Result<()> {
    let path = req.path.split('?').next().unwrap_or_default();
    let user = |id: u64| {
        format!(
            r#"{{"id":{id},"nick":"user{id}","name":"User {id}","email":"user{id}@example.com"}}"#
        )
    };
    if path == "/flows/acme/main/messages" {
        respond(out, 200, "application/json", b"[]")
    } else if path == "/flows/acme/main/users" {
        let all: Vec<String> = (1..=USERS).map(user).collect();
        respond(
            out,
            200,
            "application/json",
            format!("[{}]", all.join(",")).as_bytes(),
        )
    } else if let Some(id) = path.strip_prefix("/users/").and_then(|i| i.parse().ok()) {
        respond(out, 200, "application/json", user(id).as_bytes())
    } else {
        note(s, format!("unexpected {} {}", req.method, req.path));
        respond(out, 404, "application/json", b"{}")
    }
}

/// Campfire REST: latest/backfill (no messages), join, users.
fn campfire_rest(out: &mut TcpStream, s: &Shared, req: &HttpRequest) -> std::io::Result<()> {
    let path = req.path.split('?').next().unwrap_or_default();
    if path == "/room/1/recent.json" {
        respond(out, 200, "application/json", br#"{"messages":[]}"#)
    } else if path == "/room/1/join.json" && req.method == "POST" {
        respond(out, 200, "application/json", b"")
    } else if let Some(id) = path
        .strip_prefix("/users/")
        .and_then(|p| p.strip_suffix(".json"))
        .and_then(|i| i.parse::<u64>().ok())
    {
        let body = format!(
            r#"{{"user":{{"id":{id},"name":"User {id}","email_address":"user{id}@example.com","admin":false,"type":"Member"}}}}"#
        );
        respond(out, 200, "application/json", body.as_bytes())
    } else {
        note(s, format!("unexpected {} {}", req.method, req.path));
        respond(out, 404, "application/json", b"{}")
    }
}

/// Ustream: each timeslice gets the next pre-generated response, then empty ones.
fn ustream_poll(out: &mut TcpStream, s: &Shared, req: &HttpRequest) -> std::io::Result<()> {
    let rest = req
        .path
        .strip_prefix("/socialstream/get.json/7/timeslice/")
        .and_then(|r| r.split_once('/'))
        .and_then(|(f, w)| Some((f.parse::<i64>().ok()?, w.parse::<i64>().ok()?)));
    let Some((from, width)) = rest else {
        note(
            s,
            format!(
                "unexpected {} {} (the saved cursor was not resumed?)",
                req.method, req.path
            ),
        );
        let body = format!(
            r#"{{"success":true,"refreshInterval":10,"range":[0,{}],"payload":[]}}"#,
            USTREAM_RANGE0
        );
        return respond(out, 200, "application/json", body.as_bytes());
    };
    let index = s.polls.fetch_add(1, Ordering::SeqCst);
    match s.plan.polls.get(index) {
        Some(body) => {
            if from != Plan::slice_from(index) || width != USTREAM_WIDTH {
                note(
                    s,
                    format!(
                        "timeslice {index} asked for {from}/{width}, expected {}/{USTREAM_WIDTH}",
                        Plan::slice_from(index)
                    ),
                );
            }
            if index == 0 {
                *s.started.lock().expect("lock") = Some(Instant::now());
            }
            respond(out, 200, "application/json", body)
        }
        None => {
            let body = format!(
                r#"{{"success":true,"refreshInterval":10,"range":[{from},{}],"payload":[]}}"#,
                from + width
            );
            respond(out, 200, "application/json", body.as_bytes())
        }
    }
}

/// Reads one request head (and discards its body); None at the end of the connection.
fn read_request(input: &mut BufReader<TcpStream>) -> std::io::Result<Option<HttpRequest>> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let req = HttpRequest {
        method,
        path,
        headers,
    };
    let len: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::io::copy(&mut input.by_ref().take(len as u64), &mut std::io::sink())?;
    Ok(Some(req))
}

// ---- WebSocket bits (server side: unmasked frames, the accept key) ----

/// Appends one unmasked text frame.
fn ws_text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455: base64 of the SHA-1 of key + GUID).
fn ws_accept(key: &str) -> String {
    let digest = sha1(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes());
    base64(&digest)
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (o, x) in out.chunks_mut(4).zip(h) {
        o.copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(A[(n >> shift) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

// ---- The reference reader (the loopback limit) ----

/// Reads the whole stream (or every Ustream poll) from a fresh server, counting bytes only;
/// returns the time from the first body byte written to the last byte read.
fn reference_read(plan: &Arc<Plan>) -> Result<Duration, Error> {
    let server = Server::start(plan.clone())?;
    let mut conn = TcpStream::connect(server.addr).map_err(|e| format!("connect: {e}"))?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut read_exactly = |conn: &mut TcpStream, mut left: usize| -> Result<(), Error> {
        while left > 0 {
            let n = conn.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!("the server closed with {left} bytes to go"));
            }
            left = left.saturating_sub(n);
        }
        Ok(())
    };
    let host = server.addr;
    match plan.transport {
        Transport::Ustream => {
            for (i, body) in plan.polls.iter().enumerate() {
                let req = format!(
                    "GET /socialstream/get.json/7/timeslice/{}/{USTREAM_WIDTH} HTTP/1.1\r\nHost: {host}\r\n\r\n",
                    Plan::slice_from(i)
                );
                conn.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
                let total = rest_head(200, "application/json", body.len()).len() + body.len();
                read_exactly(&mut conn, total)?;
            }
        }
        Transport::Multistreamer => {
            let key = "dGhlIHNhbXBsZSBub25jZQ==";
            let req = format!(
                "GET /ws/1?token=bench-token HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            conn.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
            read_exactly(&mut conn, ws_head(key).len() + plan.body.len())?;
        }
        t => {
            let (path, ct) = match t {
                Transport::FlowdockSse => ("/flows/acme/main", "text/event-stream"),
                Transport::FlowdockJson => ("/flows/acme/main", "application/json"),
                _ => ("/room/1/live.json", "application/json"),
            };
            let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {ct}\r\n\r\n");
            conn.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
            read_exactly(&mut conn, stream_head(ct).len() + plan.body.len())?;
        }
    }
    let end = Instant::now();
    let start = server
        .started()
        .ok_or("the server never started the body")?;
    Ok(end - start)
}

// ---- The real binary ----

/// What one `tributary run` measured.
struct Measured {
    elapsed: Duration,
    cpu: Duration,
    peak_rss_kib: u64,
    allocations: Option<u64>,
}

impl Measured {
    fn events_per_s(&self, n: usize) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `tributary run` against a fresh server until it printed N lines; see the module doc.
fn run_tributary(plan: &Arc<Plan>, args: &Args, clk_tck: u64) -> Result<Measured, Error> {
    let n = args.events;
    let server = Server::start(plan.clone())?;
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let config = dir.path().join("t.toml");
    let state = dir.path().join("state.json");
    std::fs::write(&config, plan.transport.config(server.addr)).map_err(|e| e.to_string())?;
    if plan.transport == Transport::Ustream {
        std::fs::write(&state, ustream_state(server.addr, plan.polls.len()))
            .map_err(|e| e.to_string())?;
    }
    let mut child = spawn(&args.bin, &config, &state, args.keep_raw)?;
    let pid = child.id();
    let lines = Arc::new(AtomicUsize::new(0));
    let (reached_tx, reached) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let counted = lines.clone();
    let out_thread = thread::spawn(move || count_lines(stdout, n, &counted, reached_tx));
    let mut stderr = child.stderr.take().expect("piped");
    let err_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let timeout = Duration::from_secs(30) + Duration::from_micros(100) * n as u32;
    let deadline = Instant::now() + timeout;
    let outcome = loop {
        match reached.recv_timeout(Duration::from_millis(50)) {
            Ok(at) => {
                // The child is still running: its CPU and peak RSS up to the N-th line.
                let usage = proc_usage(pid, clk_tck);
                break Ok((at, usage));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err("its stdout closed before the last event".to_owned());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("tributary exited early ({status})"));
        }
        if Instant::now() > deadline {
            break Err(format!("no {n}th event line within {timeout:?}"));
        }
    };
    if outcome.is_ok() {
        thread::sleep(GRACE);
    }
    let got = lines.load(Ordering::SeqCst);
    // Before the child goes: its connections closing are no surprise.
    let problems = server.problems();
    stop(&mut child, pid);
    let _ = out_thread.join();
    let stderr = err_thread.join().unwrap_or_default();
    let fail = |why: String| {
        let mut msg = format!("{why} ({got} event lines arrived, {n} expected)");
        if !problems.is_empty() {
            msg.push_str(&format!("\nserver: {}", problems.join("\nserver: ")));
        }
        msg.push_str(&format!("\ntributary stderr:\n{}", stderr.trim_end()));
        msg
    };
    let (at, usage) = outcome.map_err(fail)?;
    let (cpu, peak_rss_kib) = usage.map_err(fail)?;
    if got != n {
        return Err(fail("not exactly the events served".to_owned()));
    }
    if !problems.is_empty() {
        return Err(fail("the server saw requests outside the plan".to_owned()));
    }
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("tributary: count-allocs:"))
        .collect();
    if !notes.is_empty() {
        eprintln!(
            "e2e bench: {}: tributary wrote to stderr:\n  {}",
            plan.transport.name(),
            notes.join("\n  ")
        );
    }
    let start = server
        .started()
        .ok_or_else(|| fail("the server never started the body".to_owned()))?;
    Ok(Measured {
        elapsed: at.saturating_duration_since(start),
        cpu,
        peak_rss_kib,
        allocations: parse_allocations(&stderr),
    })
}

fn spawn(bin: &Path, config: &Path, state: &Path, keep_raw: bool) -> Result<Child, Error> {
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .args(["--format", "json", "--state"])
        .arg(state);
    if keep_raw {
        cmd.arg("--raw");
    }
    cmd.env("BENCH_TOKEN", "bench-token")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

/// Counts newlines on the child's stdout; sends the moment the `n`-th one was read, then keeps
/// counting (extra lines are an error) until the pipe closes.
fn count_lines(mut out: impl Read, n: usize, lines: &AtomicUsize, reached: mpsc::Sender<Instant>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut count = 0;
    let mut reached = Some(reached);
    loop {
        let k = match out.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(k) => k,
        };
        count += buf[..k].iter().filter(|&&b| b == b'\n').count();
        lines.store(count, Ordering::SeqCst);
        if count >= n {
            if let Some(tx) = reached.take() {
                let _ = tx.send(Instant::now());
            }
        }
    }
}

/// SIGTERM, then up to 10 s for a clean exit (which prints the allocation count), then SIGKILL.
fn stop(child: &mut Child, pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("e2e bench: tributary did not stop within 10 s of SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// The child's CPU time (user + system) and peak RSS (`VmHWM`, KiB) so far.
fn proc_usage(pid: u32, clk_tck: u64) -> Result<(Duration, u64), Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
        return Err(format!("cannot read utime/stime from /proc/{pid}/stat"));
    };
    let cpu = Duration::from_secs_f64((utime + stime) as f64 / clk_tck as f64);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no VmHWM in /proc/{pid}/status"))?;
    Ok((cpu, hwm))
}

/// The count of `tributary: count-allocs: allocations=N bytes=B`, when the build printed one.
fn parse_allocations(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        l.strip_prefix("tributary: count-allocs: allocations=")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// `getconf CLK_TCK`, else 100 (and whether it was assumed).
fn clock_ticks() -> (u64, bool) {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .map_or((100, true), |t| (t, false))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

// ---- The report ----

struct Row {
    transport: Transport,
    wire_bytes: f64,
    measured: Measured,
    loopback: Duration,
}

fn print_table(
    args: &Args,
    rows: &[Row],
    started: chrono::DateTime<chrono::Utc>,
    load_before: &str,
    (clk_tck, assumed): (u64, bool),
) {
    let n = args.events;
    let nproc = thread::available_parallelism().map_or(0, |p| p.get());
    println!(
        "\n`tributary run` end to end, {n} events per transport{}, stdout into a pipe; {}",
        if args.keep_raw { ", with --raw" } else { "" },
        started.format("%Y-%m-%d %H:%M UTC")
    );
    println!(
        "machine: {nproc} cores; load average {load_before} before, {} after; CLK_TCK {clk_tck}{}\n",
        load_average(),
        if assumed { " (assumed)" } else { "" }
    );
    if args.bin != Path::new(env!("CARGO_BIN_EXE_tributary")) {
        println!("binary: {}\n", args.bin.display());
    }
    println!(
        "| transport | events | wire B/event | events/s | CPU µs/event | allocs/event | peak RSS MiB | loopback events/s | % of loopback |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let rate = r.measured.events_per_s(n);
        let loopback = n as f64 / r.loopback.as_secs_f64();
        let allocs = r
            .measured
            .allocations
            .map_or("n/a".to_owned(), |a| format!("{:.1}", a as f64 / n as f64));
        println!(
            "| {} | {n} | {:.0} | {} | {:.1} | {allocs} | {:.1} | {} | {:.1} % |",
            r.transport.name(),
            r.wire_bytes,
            thousands(rate),
            r.measured.cpu.as_secs_f64() * 1e6 / n as f64,
            r.measured.peak_rss_kib as f64 / 1024.0,
            thousands(loopback),
            rate / loopback * 100.0
        );
    }
    if rows.iter().any(|r| r.measured.allocations.is_none()) {
        println!(
            "\n(allocs/event n/a: the binary was built without `--features count-allocs`; use `cargo xtask bench e2e`)"
        );
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
