//! `cargo xtask bench idle [--streams N] [--idle-seconds S]`: N idle Flowdock SSE streams.
//!
//! An in-process HTTP/1.1 server answers the Flowdock client's connection plan for each of N
//! `[[source]]`s (REST baseline `messages?limit=1`, REST backfill `messages?since_id=`, the
//! flow's `users`, all `[]`; then the `text/event-stream` stream, which sends only a comment
//! every 5 s). The real `tributary run` binary is spawned against it (stdout piped and
//! drained). Measured, of the child process only (the server's own CPU and memory are in
//! this process and not counted):
//!
//! * the time from spawning until the server counts N open streams;
//! * then, over the following S idle seconds (default 20): the child's CPU time
//!   (utime + stime of `/proc/PID/stat`), and its RSS (`VmRSS` of `/proc/PID/status`) at the
//!   end, divided by N.
//!
//! `IDLE_BENCH_WRAP="CMD ARGS"` runs tributary under a profiler such as heaptrack (then the
//! figures printed are the wrapper process's, not tributary's).
//!
//! The result is one markdown table row. Each open stream costs the child one fd and the
//! bench one fd (plus those of the REST connections): the bench raises the soft fd limit of
//! itself and of the child to the hard limit (`prlimit`), and says so when that is not enough.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How often each stream sends its keep-alive comment.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// The longest the bench waits for every stream to connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(180);
/// The token the sources send (the server does not check it).
const TOKEN_VAR: &str = "T";

struct Args {
    streams: usize,
    idle: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        streams: 10_000,
        idle: Duration::from_secs(20),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value"))?
                .parse::<u64>()
                .map_err(|e| format!("{name}: {e}"))
        };
        match a.as_str() {
            "--streams" => args.streams = value("--streams")? as usize,
            "--idle-seconds" => args.idle = Duration::from_secs(value("--idle-seconds")?),
            // Passed by `cargo bench` to every bench binary.
            "--bench" => {}
            other => {
                return Err(format!(
                    "unknown argument {other:?} (use --streams N, --idle-seconds S)"
                ));
            }
        }
    }
    if args.streams == 0 {
        return Err("--streams must be at least 1".into());
    }
    Ok(args)
}

/// Open streams and the REST requests answered, as the server counts them.
#[derive(Default)]
struct Counters {
    open: AtomicUsize,
    rest: AtomicUsize,
    connections: AtomicUsize,
}

/// Decrements the open-stream count when a stream ends.
struct OpenStream(Arc<Counters>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// One client connection: REST answers (keep-alive) until a stream request, then the stream.
async fn serve(mut sock: TcpStream, counters: Arc<Counters>) -> std::io::Result<()> {
    let _ = sock.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    loop {
        let end = loop {
            if let Some(end) = find_head_end(&buf) {
                break end;
            }
            if buf.len() > 64 * 1024 || sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split_whitespace().nth(1).unwrap_or("");
        let path = path.split('?').next().unwrap_or("");
        let rest = path.ends_with("/messages") || path.ends_with("/users");
        if rest {
            counters.rest.fetch_add(1, Relaxed);
            sock.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]",
            )
            .await?;
            continue;
        }
        if !path.starts_with("/flows/") {
            sock.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await?;
            continue;
        }
        sock.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .await?;
        counters.open.fetch_add(1, Relaxed);
        let _open = OpenStream(counters.clone());
        let mut tick = tokio::time::interval(KEEPALIVE);
        let mut scratch = [0u8; 64];
        loop {
            tokio::select! {
                _ = tick.tick() => sock.write_all(b"E\r\n: keep-alive\n\n\r\n").await?,
                // The client sends nothing on a stream: any read ends it (0: closed).
                _ = sock.read(&mut scratch) => return Ok(()),
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, counters: Arc<Counters>, errors: Arc<Mutex<String>>) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                counters.connections.fetch_add(1, Relaxed);
                tokio::spawn(serve(sock, counters.clone()));
            }
            Err(e) => {
                *errors.lock().unwrap() = format!("the bench server cannot accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The soft and hard `Max open files` of `pid` (`self` for this process).
fn fd_limits(pid: &str) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut f = line["Max open files".len()..].split_whitespace();
    let num = |s: Option<&str>| match s? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    Some((num(f.next())?, num(f.next())?))
}

/// Raises the soft fd limit of `pid` to its hard limit with `prlimit`; returns the soft limit.
fn raise_fd_limit(pid: &str) -> Option<u64> {
    let (soft, hard) = fd_limits(pid)?;
    if soft < hard {
        let real = if pid == "self" {
            std::process::id().to_string()
        } else {
            pid.to_owned()
        };
        let _ = Command::new("prlimit")
            .args(["--pid", &real, &format!("--nofile={hard}:{hard}")])
            .status();
    }
    fd_limits(pid).map(|(soft, _)| soft)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name in parentheses (which may hold spaces).
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks() as f64)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`, nearly always 100).
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// `VmRSS` of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Writes the config: one `[[source]]` per stream, as compact as TOML allows (tributary reads
/// at most 1 MiB of config: about 10,000 sources). Names and flows count in base 36.
fn write_config(dir: &std::path::Path, url: &str, streams: usize) -> Result<(), String> {
    use std::fmt::Write as _;
    let mut toml = String::with_capacity(streams * 110);
    for i in 0..streams {
        let id = base36(i);
        // `transport` is left at its default, "sse".
        let _ = write!(
            toml,
            "[[source]]\nname=\"s{id}\"\nservice=\"flowdock\"\ntoken={{env=\"{TOKEN_VAR}\"}}\n\
             url=\"{url}\"\nflows=[\"o/{id}\"]\n"
        );
    }
    if toml.len() > 1024 * 1024 {
        return Err(format!(
            "the config for {streams} sources is {} bytes, over tributary's 1 MiB config \
             limit; pass a smaller --streams",
            toml.len()
        ));
    }
    std::fs::write(dir.join("t.toml"), toml).map_err(|e| format!("cannot write the config: {e}"))
}

fn base36(mut i: usize) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[i % 36]);
        i /= 36;
        if i == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).expect("ascii")
}

/// Reads a child's stream to the end on a thread, keeping the last lines it printed.
fn drain(r: impl Read + Send + 'static, keep: usize) -> Arc<Mutex<Vec<String>>> {
    let tail = Arc::new(Mutex::new(Vec::new()));
    let t = tail.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if keep == 0 {
                continue;
            }
            let mut t = t.lock().unwrap();
            if t.len() == keep {
                t.remove(0);
            }
            t.push(line);
        }
    });
    tail
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("idle: tributary did not stop within 30 s of SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("idle: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idle: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let n = args.streams;
    // The child needs an fd per stream plus the REST connections and its own; so does the
    // server in this process.
    let needed = n as u64 + 1024;
    let soft = raise_fd_limit("self").unwrap_or(0);
    if soft < needed {
        return Err(format!(
            "the fd limit is {soft} (ulimit -n) and its hard limit no higher, but {n} streams \
             need about {needed} open files here and in tributary; raise it \
             (`ulimit -n {needed}`, or the hard limit in /etc/security/limits.conf) or pass a \
             smaller --streams"
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the bench server's runtime: {e}"))?;
    let counters = Arc::new(Counters::default());
    let server_error = Arc::new(Mutex::new(String::new()));
    let listener = rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("the bench server cannot listen on 127.0.0.1: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    rt.spawn(accept_loop(
        listener,
        counters.clone(),
        server_error.clone(),
    ));

    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temporary dir: {e}"))?;
    write_config(dir.path(), &format!("http://{addr}"), n)?;
    let started = Instant::now();
    // Profiling only (e.g. `IDLE_BENCH_WRAP="heaptrack -o /tmp/idle"`): tributary runs under
    // the wrapper, and the figures printed are then the wrapper's, not tributary's.
    let wrap = std::env::var("IDLE_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut cmd = match words.next() {
        Some(wrapper) => {
            let mut c = Command::new(wrapper);
            c.args(words).arg(env!("CARGO_BIN_EXE_tributary"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_tributary")),
    };
    let mut child = cmd
        .arg("run")
        .arg("--config")
        .arg(dir.path().join("t.toml"))
        .args(["--format", "json", "--state"])
        .arg(dir.path().join("state.json"))
        .env(TOKEN_VAR, "idle-bench-token")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", env!("CARGO_BIN_EXE_tributary")))?;
    let pid = child.id();
    eprintln!("idle: tributary runs as pid {pid} with {n} Flowdock SSE sources at http://{addr}");
    let child_soft = raise_fd_limit(&pid.to_string()).unwrap_or(0);
    if child_soft < needed {
        eprintln!(
            "idle: warning: tributary's fd limit is {child_soft}, below the ~{needed} it needs"
        );
    }
    let _stdout = drain(child.stdout.take().expect("piped"), 0);
    let stderr = drain(child.stderr.take().expect("piped"), 20);
    let result = measure(args, &mut child, &counters, started, &server_error, &stderr);
    stop(&mut child);
    rt.shutdown_timeout(Duration::from_secs(1));
    let row = result?;
    println!(
        "| streams | all connected in | RSS | per stream | CPU over {} idle s |",
        args.idle.as_secs()
    );
    println!("|---:|---:|---:|---:|---:|");
    println!("{row}");
    Ok(())
}

fn measure(
    args: &Args,
    child: &mut Child,
    counters: &Counters,
    started: Instant,
    server_error: &Mutex<String>,
    stderr: &Mutex<Vec<String>>,
) -> Result<String, String> {
    let n = args.streams;
    let pid = child.id();
    let tail = || {
        let t = stderr.lock().unwrap();
        if t.is_empty() {
            String::new()
        } else {
            format!("; its stderr ended with:\n{}", t.join("\n"))
        }
    };
    let mut last_report = Instant::now();
    let connected = loop {
        let open = counters.open.load(Relaxed);
        if open >= n {
            break started.elapsed();
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "tributary exited ({status}) with {open} of {n} streams open{}",
                tail()
            ));
        }
        let e = server_error.lock().unwrap().clone();
        if started.elapsed() > CONNECT_LIMIT {
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
            return Err(format!(
                "only {open} of {n} streams were open after {} s ({} REST requests answered, \
                 tributary holds {fds} fds){}{}",
                CONNECT_LIMIT.as_secs(),
                counters.rest.load(Relaxed),
                if e.is_empty() {
                    String::new()
                } else {
                    format!("; {e}")
                },
                tail()
            ));
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "idle: {open} of {n} streams open after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "idle: all {n} streams open after {:.2} s ({} connections, {} REST requests); idling {} s",
        connected.as_secs_f64(),
        counters.connections.load(Relaxed),
        counters.rest.load(Relaxed),
        args.idle.as_secs()
    );
    let gone = |what: &str| format!("cannot read {what} of tributary (pid {pid}): did it exit?");
    let cpu0 = cpu_seconds(pid).ok_or_else(|| gone("/proc/PID/stat"))?;
    let rss0 = rss_kib(pid).ok_or_else(|| gone("VmRSS"))?;
    std::thread::sleep(args.idle);
    let cpu1 = cpu_seconds(pid).ok_or_else(|| gone("/proc/PID/stat"))?;
    let rss = rss_kib(pid).ok_or_else(|| gone("VmRSS"))?;
    let open = counters.open.load(Relaxed);
    if open < n {
        return Err(format!(
            "{} of {n} streams closed while idle{}",
            n - open,
            tail()
        ));
    }
    eprintln!(
        "idle: RSS {:.0} MiB when connected, {:.0} MiB after idling",
        rss0 as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    Ok(format!(
        "| {n} | {:.1} s | {:.0} MiB | {:.1} KiB | {:.2} s |",
        connected.as_secs_f64(),
        rss as f64 / 1024.0,
        rss as f64 / n as f64,
        cpu1 - cpu0
    ))
}
