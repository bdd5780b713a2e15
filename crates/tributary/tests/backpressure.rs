//! Back-pressure, end to end: while nobody reads `tributary run`'s stdout its memory stays
//! bounded (the source stops reading, so the server's writes wait on TCP), and once the reader
//! resumes every message arrives, exactly once and in order.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use emulator::flowdock::{Config, Emulator};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

mod common;

/// Messages sent while the reader is stalled, and the size of each one's text.
const MESSAGES: usize = 10_000;
const TEXT_BYTES: usize = 4096;

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_keeps_memory_bounded_and_loses_nothing() {
    let emu = Emulator::start(Config {
        rate: 0.0,
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = common::write_config(
        dir.path(),
        &format!("{}stall_timeout = \"120s\"\n", emu.config_snippet("fd")),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["run", "--format", "json", "--config"])
        .arg(&config)
        .arg("--state")
        .arg(&state)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("tributary starts");
    let pid = child.id().unwrap();
    assert!(
        common::eventually(|| !emu.last_event_ids().is_empty()).await,
        "tributary never opened the stream: {:?}",
        emu.requests()
    );
    // The stream is open: what is committed from now on is delivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);

    // Nobody reads stdout while far more is sent than any buffer could hold.
    let text = "x".repeat(TEXT_BYTES);
    let mut sent = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        sent.push(
            emu.inject_message("acme/main", &format!("{i} {text}"))
                .event_id,
        );
    }
    let mut peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        peak = peak.max(rss_kib(pid));
    }
    let sent_mib = (MESSAGES * TEXT_BYTES) >> 20;
    let grown_mib = peak.saturating_sub(before) >> 10;
    eprintln!(
        "stdout unread: grew {grown_mib} MiB from {before} KiB while {sent_mib} MiB were sent"
    );
    assert!(
        grown_mib < 24,
        "with stdout unread, tributary grew by {grown_mib} MiB (from {before} KiB) while \
         {sent_mib} MiB were sent: it kept reading instead of pushing back"
    );

    // The reader resumes: everything arrives, once, in order.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::with_capacity(MESSAGES);
    let read = async {
        while got.len() < MESSAGES {
            let line = lines.next_line().await.unwrap().expect("output goes on");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["kind"] == "message" {
                got.push(v["id"].as_str().unwrap().to_owned());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("every message arrives once the reader resumes");
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no message twice");
    assert_eq!(got, sent, "every message, in order");
    let _ = child.kill().await;
}
