//! Campfire through the fault proxy: `tributary run` reads the stream through a TCP proxy
//! that swallows the first stream response, or cuts and resets connections at random bytes,
//! while REST (join, `recent.json` backfill) goes straight to the emulator. Campfire can
//! replay (`since_message_id`), so every message committed after the source started is
//! delivered exactly once, in order, with no gap.

use std::sync::Arc;
use std::time::Duration;

use common::{events_of, ids, run_tributary, write_config};
use emulator::FaultPlan;
use emulator::campfire::{Config, DEFAULT_ROOM, DEFAULT_TOKEN, Emulator};
use emulator::proxy::{Ending, FaultKind, Proxy, ProxyFault, ProxyPlan};

mod common;

async fn start(plan: ProxyPlan) -> (Emulator, Proxy) {
    let emu = Emulator::start(Config {
        rate: 0.0,
        keepalive: Duration::from_millis(300),
        faults: Arc::new(FaultPlan::none()),
        ..Config::default()
    })
    .await
    .unwrap();
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), emu.addr(), Arc::new(plan))
        .await
        .unwrap();
    (emu, proxy)
}

/// The stream through the proxy, REST direct.
fn source_table(emu: &Emulator, proxy: &Proxy) -> String {
    format!(
        "[[source]]\nname = \"ops\"\nservice = \"campfire\"\ntoken = \"{DEFAULT_TOKEN}\"\n\
         url = \"{stream}\"\napi_url = \"{api}\"\nroom = {DEFAULT_ROOM}\njoin = true\n\
         stall_timeout = \"2s\"\nbackoff = {{ initial = \"200ms\", max = \"1s\" }}\n",
        stream = proxy.url(),
        api = emu.url(),
    )
}

/// Posts `n` messages, one every `every`, from the moment the first stream request reached
/// the emulator (the source has started by then); returns their ids.
async fn post_from_first_stream(emu: &Emulator, n: usize, every: Duration) -> Vec<u64> {
    assert!(
        common::eventually(|| emu.streams_served() > 0).await,
        "tributary never opened a stream"
    );
    let mut posted = Vec::with_capacity(n);
    for i in 0..n {
        posted.push(emu.inject_text(DEFAULT_ROOM, &format!("proxied message {i} ☃")));
        tokio::time::sleep(every).await;
    }
    posted
}

/// The first message after the source started: the room starts empty, and the source's own
/// join (its EnterMessage, after its start position) comes before everything posted.
fn start_of(emu: &Emulator, posted: &[u64]) -> u64 {
    let first = emu.committed()[0].clone();
    assert_eq!(first.kind, "EnterMessage", "the source joined first");
    assert!(first.id < posted[0]);
    first.id
}

/// Every committed message from `first` on delivered exactly once, in order, and no gap.
fn check_exactly_once(emu: &Emulator, out: &std::process::Output, first: u64) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        out.status
    );
    let events = events_of(out, "ops");
    let got = ids(&events, |k| k != "connection" && k != "gap");
    let want: Vec<String> = emu
        .committed()
        .iter()
        .filter(|m| m.id >= first)
        .map(|m| format!("campfire:{DEFAULT_ROOM}:{}", m.id))
        .collect();
    let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} committed messages lost: {missing:?}\nstderr:\n{stderr}",
        missing.len(),
        want.len()
    );
    assert_eq!(got, want, "exactly once, in order; stderr:\n{stderr}");
    assert_eq!(
        events.iter().filter(|e| e["kind"] == "gap").count(),
        0,
        "a replaying source needs no gap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_stream_response_swallowed_loses_nothing() {
    let (emu, proxy) = start(ProxyPlan::script([ProxyFault::Swallow {
        close_after: None,
    }]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&emu, &proxy));

    let run = run_tributary(&config, &state, "10s");
    let post = post_from_first_stream(&emu, 20, Duration::from_millis(150));
    let (out, posted) = tokio::join!(run, post);

    let records = proxy.records();
    assert!(records.len() >= 2, "the source reconnected: {records:?}");
    assert!(
        records[0].to_server > 0 && records[0].from_server > 0 && records[0].to_client == 0,
        "the first stream's request reached the emulator and its answer was swallowed: {:?}",
        records[0]
    );
    check_exactly_once(&emu, &out, start_of(&emu, &posted));
    proxy.stop().await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_cuts_and_resets_lose_nothing() {
    // The first connection lives long enough to deliver a message (the cursor exists);
    // after it, every connection is cut (FIN) or reset (RST) at a random byte.
    let plan = ProxyPlan::random(13, 1.0)
        .with_kinds(&[FaultKind::CutAtByte, FaultKind::ResetAtByte])
        .with_max_byte(2500);
    plan.push(ProxyFault::CutAfter(Duration::from_millis(1500)));
    let (emu, proxy) = start(plan).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&emu, &proxy));

    let run = run_tributary(&config, &state, "14s");
    let post = post_from_first_stream(&emu, 60, Duration::from_millis(150));
    let (out, posted) = tokio::join!(run, post);

    let records = proxy.records();
    let cut = records.iter().filter(|r| r.ending == Ending::Cut).count();
    let reset = records.iter().filter(|r| r.ending == Ending::Reset).count();
    assert!(
        cut + reset >= 4 && reset >= 1,
        "many connections were cut or reset: {records:?}"
    );
    check_exactly_once(&emu, &out, start_of(&emu, &posted));
    proxy.stop().await;
    emu.stop().await;
}
