//! End to end: `tributary run` with `service = "flowdock"` sources against the in-process
//! Flowdock emulator, on both transports, across injected faults.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use emulator::flowdock::{Committed, Config, Emulator};
use emulator::{Fault, FaultPlan};
use serde_json::Value;

mod common;

const FLOWS: [&str; 2] = ["acme/main", "acme/ops"];

use common::RunOutput as Output;

/// Runs `tributary run` with `config` for `duration` while `during` runs in this process.
async fn run_tributary(
    dir: &Path,
    config: &str,
    duration: &str,
    extra: &[&str],
    during: impl std::future::Future<Output = ()>,
) -> Output {
    common::run_during(dir, config, duration, extra, &[], during).await
}

fn source_toml(name: &str, token: &str, url: &str, transport: &str) -> String {
    format!(
        "[[source]]\nname = {name:?}\nservice = \"flowdock\"\ntoken = {token:?}\nurl = {url:?}\n\
         flows = [\"acme/main\", \"acme/ops\"]\ntransport = {transport:?}\nstall_timeout = \"1500ms\"\n\
         backoff = {{ initial = \"100ms\", max = \"500ms\" }}\n"
    )
}

/// Waits (bounded) until the emulator has seen `n` stream requests.
async fn stream_requests(emu: &Emulator, n: usize) {
    if common::eventually(|| emu.last_event_ids().len() >= n).await {
        return;
    }
    panic!(
        "tributary never connected to the emulator: {:?}",
        emu.requests()
    );
}

/// Commits `n` messages over both flows, one every `gap`.
async fn inject(emu: &Emulator, n: usize, gap: Duration) -> Vec<Committed> {
    let mut sent = Vec::new();
    for i in 0..n {
        sent.push(emu.inject_message(FLOWS[i % 2], &format!("e2e message {i} ü 日本")));
        tokio::time::sleep(gap).await;
    }
    sent
}

/// Every committed message delivered, exactly once, in order per flow.
fn check_exactly_once(events: &[Value], source: &str, sent: &[Committed]) {
    let ids: Vec<&str> = events
        .iter()
        .filter(|e| e["source"] == source && e["kind"] != "connection")
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    let mut seen = HashSet::new();
    for id in &ids {
        assert!(seen.insert(*id), "{id} delivered twice: {ids:?}");
    }
    for flow in FLOWS {
        let want: Vec<&str> = sent
            .iter()
            .filter(|c| c.flow == flow)
            .map(|c| c.event_id.as_str())
            .collect();
        let got: Vec<&str> = ids.iter().copied().filter(|id| want.contains(id)).collect();
        assert_eq!(got, want, "flow {flow}: every committed message, in order");
    }
    for e in events
        .iter()
        .filter(|e| e["source"] == source && e["kind"] == "message")
    {
        assert_eq!(e["service"], "flowdock");
        assert!(e["at"].is_string() && e["room"].is_string());
    }
}

fn faults() -> Arc<FaultPlan> {
    Arc::new(FaultPlan::script([
        vec![Fault::DropAfterBytes(1200)],
        vec![Fault::Status {
            code: 500,
            retry_after: None,
        }],
        vec![Fault::Stall {
            keepalives: false,
            duration: None,
        }],
        vec![Fault::Status {
            code: 503,
            retry_after: Some(1),
        }],
    ]))
}

async fn exactly_once_across_faults(transport: &str) -> (Emulator, Output, Vec<Committed>) {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Config {
        rate: 0.0,
        keepalive: Duration::from_millis(300),
        sse_retry: Some(Duration::from_millis(200)),
        faults: faults(),
        ..Config::default()
    })
    .await
    .unwrap();
    let config = source_toml("fd", "flowdock-token", &emu.url(), transport);
    let mut sent = Vec::new();
    let out = run_tributary(dir.path(), &config, "12s", &[], async {
        stream_requests(&emu, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        sent = inject(&emu, 30, Duration::from_millis(150)).await;
    })
    .await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    check_exactly_once(&out.events, "fd", &sent);
    assert!(
        emu.last_event_ids().len() >= 5,
        "every scripted fault cost a connection: {:?}",
        emu.requests()
    );
    (emu, out, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_every_message_once_across_faults() {
    let (emu, _, _) = exactly_once_across_faults("sse").await;
    let ids = emu.last_event_ids();
    assert_eq!(ids[0], None, "the first connection starts live");
    assert!(
        ids[1..]
            .iter()
            .all(|id| id.as_deref().is_some_and(|i| !i.is_empty())),
        "every reconnect sends Last-Event-ID: {ids:?}"
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_stream_backfills_every_message_once_across_faults() {
    let (emu, _, sent) = exactly_once_across_faults("json").await;
    let since = emu.since_ids();
    assert!(!since.is_empty(), "backfill used since_id");
    // After the drop, the backfill asked for messages after one that was delivered.
    assert!(
        since.iter().any(|s| sent.iter().any(|c| c.id == *s)),
        "since_id {since:?} names a delivered message"
    );
    assert!(
        emu.requests().iter().all(|r| r.last_event_id.is_none()),
        "no Last-Event-ID on the JSON stream"
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_ends_that_source_while_the_other_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(Config {
        rate: 0.0,
        keepalive: Duration::from_millis(300),
        ..Config::default()
    })
    .await
    .unwrap();
    let config = format!(
        "{}\n{}",
        emu.config_snippet("good"),
        source_toml("bad", "wrong-token", &emu.url(), "sse")
    );
    let mut sent = Vec::new();
    let out = run_tributary(dir.path(), &config, "5s", &["--lifecycle"], async {
        stream_requests(&emu, 2).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        sent = inject(&emu, 10, Duration::from_millis(100)).await;
    })
    .await;
    assert_eq!(out.code, Some(0), "one source still ran: {}", out.stderr);
    check_exactly_once(&out.events, "good", &sent);
    let bad: Vec<&Value> = out.events.iter().filter(|e| e["source"] == "bad").collect();
    assert!(
        bad.iter().all(|e| e["kind"] == "connection"),
        "the bad source delivered nothing: {bad:?}"
    );
    let gave_up = bad
        .iter()
        .find(|e| e["connection"]["state"] == "gave_up")
        .unwrap_or_else(|| {
            panic!(
                "no gave_up event for `bad`: {bad:?}\nstderr: {}",
                out.stderr
            )
        });
    let reason = gave_up["connection"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("401") && reason.contains("acme/main"),
        "clear reason naming the flows: {reason}"
    );
    assert!(!out.stderr.contains("wrong-token"), "the token never shows");
    // Fatal: tried once, not retried in a loop.
    let bad_stream_requests = emu
        .requests()
        .iter()
        .filter(|r| !r.authorized && !r.path.ends_with("/messages"))
        .count();
    assert!(
        bad_stream_requests <= 2,
        "401 retried: {bad_stream_requests}"
    );
    emu.stop().await;
}
