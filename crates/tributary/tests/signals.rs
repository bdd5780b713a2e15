//! Process test: SIGINT at random moments of a flood always stops `tributary run` cleanly.
//!
//! `tributary run` reads a Campfire emulator that generates about a thousand messages a
//! second into a pipe; SIGINT is sent at a random moment after the first event, 200 times (4
//! runs at a time). Each run must exit 0 within 2 s of the signal, and its stdout must be whole
//! NDJSON lines. A signal that arrives while an event is being written must not be lost.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use emulator::campfire::{Config, Emulator};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// Tries in all, and how many run at once.
const TRIES: usize = 200;
const PARALLEL: usize = 4;
/// How long a run may take to exit after the signal.
const EXIT_LIMIT: Duration = Duration::from_secs(2);
/// The signal is sent up to this long after the first event.
const MAX_DELAY_MS: u64 = 400;

/// A small deterministic generator (xorshift64*), seeded per try.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn config(dir: &Path, emu: &Emulator) -> std::path::PathBuf {
    let path = dir.join("tributary.toml");
    let text = format!(
        "[[source]]\nname = \"flood\"\nservice = \"campfire\"\ntoken = {{ env = \"TRIB_TEST_TOKEN\" }}\nurl = \"{url}\"\napi_url = \"{url}\"\nroom = 111\n",
        url = emu.url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(config: &Path, state: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["run", "--format", "json", "--config"])
        .arg(config)
        .arg("--state")
        .arg(state)
        .env("TRIB_TEST_TOKEN", emulator::campfire::DEFAULT_TOKEN)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tributary starts")
}

fn send_signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

/// One try: start, wait for the first event, wait `delay`, SIGINT, check the exit and output.
async fn one_try(config: &Path, state: &Path, delay: Duration) -> Result<(), String> {
    let mut child = spawn(config, state);
    let pid = child.id().expect("running");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    // The first event: the run is streaming and its listeners are in place.
    let mut first = Vec::new();
    match tokio::time::timeout(
        Duration::from_secs(60),
        stdout.read_until(b'\n', &mut first),
    )
    .await
    {
        Ok(Ok(n)) if n > 0 => {}
        other => {
            let _ = child.kill().await;
            return Err(format!(
                "no first event ({other:?}); stderr: {}",
                errors.await.unwrap_or_default()
            ));
        }
    }
    // Keep draining stdout so the run never blocks on a full pipe.
    let reader = tokio::spawn(async move {
        let mut rest = Vec::new();
        let _ = stdout.read_to_end(&mut rest).await;
        first.extend_from_slice(&rest);
        first
    });
    tokio::time::sleep(delay).await;
    send_signal(pid, "-INT");
    let sent = Instant::now();
    let status = match tokio::time::timeout(EXIT_LIMIT, child.wait()).await {
        Ok(status) => status.expect("wait works"),
        Err(_) => {
            let _ = child.kill().await;
            let _ = child.wait().await;
            return Err(format!(
                "still running {EXIT_LIMIT:?} after SIGINT (sent {delay:?} after the first event)"
            ));
        }
    };
    let took = sent.elapsed();
    let out = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .map_err(|_| "stdout stayed open after the exit".to_owned())?
        .expect("reader finishes");
    let stderr = errors.await.unwrap_or_default();
    if status.code() != Some(0) {
        return Err(format!(
            "exit {status} after SIGINT (sent {delay:?} after the first event); stderr: {stderr}"
        ));
    }
    if out.last() != Some(&b'\n') {
        return Err(format!("stdout ends inside a line ({} bytes)", out.len()));
    }
    let text = String::from_utf8(out).map_err(|e| format!("stdout is not UTF-8: {e}"))?;
    for (i, line) in text.lines().enumerate() {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(line) {
            return Err(format!("stdout line {} is not JSON ({e}): {line}", i + 1));
        }
    }
    if took > EXIT_LIMIT {
        return Err(format!("exit took {took:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_at_random_moments_of_a_flood_always_exits_0_with_whole_lines() {
    // Sleep granularity caps the generator near 1000 messages a second.
    let emu = Emulator::start(Config {
        rate: 2000.0,
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu);
    let seed: u64 = std::env::var("TRIB_SIGNAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed {seed} (rerun with TRIB_SIGNAL_SEED={seed})");

    let mut workers = tokio::task::JoinSet::new();
    for w in 0..PARALLEL {
        let cfg = cfg.clone();
        let dir = dir.path().to_path_buf();
        workers.spawn(async move {
            let mut rng = Rng(seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut failures = Vec::new();
            for t in (w..TRIES).step_by(PARALLEL) {
                let delay = Duration::from_millis(rng.next() % (MAX_DELAY_MS + 1));
                let state = dir.join(format!("state-{w}.json"));
                if let Err(e) = one_try(&cfg, &state, delay).await {
                    failures.push(format!("try {t}: {e}"));
                }
            }
            failures
        });
    }
    let mut failures = Vec::new();
    while let Some(r) = workers.join_next().await {
        failures.extend(r.expect("worker finishes"));
    }
    emu.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {TRIES} SIGINTs did not stop the run cleanly (seed {seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
