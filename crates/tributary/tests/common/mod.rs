//! The harness the end-to-end tests share: run `tributary run` on a config in a temp dir,
//! read its NDJSON output, wait (bounded) for an emulator to see the client.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

/// How long one `tributary run` may take, well past any `--duration` the tests pass.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Writes `text` as `tributary.toml` in `dir`; returns its path and the state file's path.
pub fn write_config(dir: &Path, text: &str) -> (PathBuf, PathBuf) {
    let config = dir.join("tributary.toml");
    std::fs::write(&config, text).unwrap();
    (config, dir.join("state.json"))
}

/// `tributary run --config <config> --format json --duration <duration> --state <state>`.
pub fn run_command(config: &Path, state: &Path, duration: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tributary"));
    cmd.args(["run", "--config"])
        .arg(config)
        .args(["--format", "json", "--duration", duration, "--state"])
        .arg(state);
    cmd
}

/// Runs `cmd` to its end off the async runtime (stdin closed, stdout and stderr captured);
/// panics when it takes longer than [`RUN_LIMIT`].
pub async fn output_of(mut cmd: Command) -> Output {
    let run = tokio::task::spawn_blocking(move || cmd.output().expect("tributary runs"));
    tokio::time::timeout(RUN_LIMIT, run)
        .await
        .expect("tributary did not stop after its --duration")
        .expect("the runner thread finishes")
}

/// Runs `tributary run` on a config for `duration` with warnings logged, off the async
/// runtime.
pub async fn run_tributary(config: &Path, state: &Path, duration: &str) -> Output {
    let mut cmd = run_command(config, state, duration);
    cmd.env("RUST_LOG", "warn");
    output_of(cmd).await
}

/// What one `tributary run` printed and how it ended.
pub struct RunOutput {
    /// Every NDJSON line of stdout, in output order.
    pub events: Vec<Value>,
    /// Everything it logged.
    pub stderr: String,
    /// Its exit code (None when killed by a signal).
    pub code: Option<i32>,
}

/// Runs `tributary run` with `config` (written into `dir`) for `duration`, plus `extra` flags
/// and `env`, while `during` runs in this process.
pub async fn run_during(
    dir: &Path,
    config: &str,
    duration: &str,
    extra: &[&str],
    env: &[(&str, &str)],
    during: impl std::future::Future<Output = ()>,
) -> RunOutput {
    let (cfg, state) = write_config(dir, config);
    let mut cmd = run_command(&cfg, &state, duration);
    cmd.args(extra).envs(env.iter().copied());
    let (out, ()) = tokio::join!(output_of(cmd), during);
    RunOutput {
        events: ndjson(&out.stdout),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

/// Asserts that `delivered` holds every id of `committed` exactly once; `stderr` goes into the
/// failure message.
pub fn assert_each_once(delivered: &[&str], committed: &[&str], stderr: &str) {
    let mut seen = std::collections::HashSet::new();
    for id in delivered {
        assert!(seen.insert(*id), "{id} delivered twice");
    }
    let missing: Vec<&str> = committed
        .iter()
        .copied()
        .filter(|id| !seen.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} committed messages lost: {missing:?}\nstderr:\n{stderr}",
        missing.len(),
        committed.len()
    );
}

/// Every line of NDJSON output, parsed; panics on a line that is not JSON.
pub fn ndjson(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// The events of `source` in the NDJSON output, in output order.
pub fn events_of(out: &Output, source: &str) -> Vec<Value> {
    ndjson(&out.stdout)
        .into_iter()
        .filter(|v| v["source"] == source)
        .collect()
}

/// The ids of the events whose kind passes `kind_filter`, in order.
pub fn ids(events: &[Value], kind_filter: impl Fn(&str) -> bool) -> Vec<String> {
    events
        .iter()
        .filter(|e| kind_filter(e["kind"].as_str().unwrap_or("")))
        .map(|e| e["id"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Checks `cond` every 10 ms for up to 30 s; whether it came to hold.
pub async fn eventually(cond: impl Fn() -> bool) -> bool {
    for _ in 0..3000 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// A plain HTTP/1.1 GET on loopback; returns the whole response (status line, headers, body).
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
