//! Flowdock through the fault proxy, on both transports: `tributary run` reads the stream
//! through a TCP proxy that swallows the first stream response, or cuts and resets
//! connections at random bytes, while REST (`/messages` backfill) goes straight to the
//! emulator. Flowdock can replay (`Last-Event-ID` on SSE, `since_id` backfill on the JSON
//! stream), so every message committed after the source started is delivered exactly once,
//! in order per flow, with no gap.

use std::sync::Arc;
use std::time::Duration;

use emulator::FaultPlan;
use emulator::flowdock::{Committed, Config, Emulator};
use emulator::proxy::{Ending, FaultKind, Proxy, ProxyFault, ProxyPlan};
use serde_json::Value;

mod common;

const FLOWS: [&str; 2] = ["acme/main", "acme/ops"];

async fn start(plan: ProxyPlan) -> (Emulator, Proxy) {
    let emu = Emulator::start(Config {
        rate: 0.0,
        keepalive: Duration::from_millis(300),
        sse_retry: Some(Duration::from_millis(200)),
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
fn source_table(emu: &Emulator, proxy: &Proxy, transport: &str) -> String {
    format!(
        "[[source]]\nname = \"fd\"\nservice = \"flowdock\"\ntoken = \"flowdock-token\"\n\
         url = \"{stream}\"\napi_url = \"{api}\"\nflows = [\"acme/main\", \"acme/ops\"]\n\
         transport = \"{transport}\"\nstall_timeout = \"1500ms\"\n\
         backoff = {{ initial = \"100ms\", max = \"500ms\" }}\n",
        stream = proxy.url(),
        api = emu.url(),
    )
}

/// Commits `n` messages over both flows, one every `gap`, from the moment the first stream
/// request reached the emulator (the source has started by then).
async fn post_from_first_stream(emu: &Emulator, n: usize, gap: Duration) -> Vec<Committed> {
    assert!(
        common::eventually(|| !emu.last_event_ids().is_empty()).await,
        "tributary never opened a stream: {:?}",
        emu.requests()
    );
    let mut sent = Vec::new();
    for i in 0..n {
        sent.push(emu.inject_message(FLOWS[i % 2], &format!("proxied message {i} ü")));
        tokio::time::sleep(gap).await;
    }
    sent
}

/// Every message in `sent` delivered exactly once, in order per flow, and no gap.
fn check_exactly_once(out: &std::process::Output, sent: &[Committed]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        out.status
    );
    let events: Vec<Value> = common::events_of(out, "fd");
    let ids: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] != "connection" && e["kind"] != "gap")
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    let committed: Vec<&str> = sent.iter().map(|c| c.event_id.as_str()).collect();
    common::assert_each_once(&ids, &committed, &stderr);
    for flow in FLOWS {
        let want: Vec<&str> = sent
            .iter()
            .filter(|c| c.flow == flow)
            .map(|c| c.event_id.as_str())
            .collect();
        let got: Vec<&str> = ids.iter().copied().filter(|id| want.contains(id)).collect();
        assert_eq!(got, want, "flow {flow}: in order");
    }
    assert_eq!(
        events.iter().filter(|e| e["kind"] == "gap").count(),
        0,
        "a replaying source needs no gap"
    );
}

async fn first_stream_response_swallowed(transport: &str) {
    let (emu, proxy) = start(ProxyPlan::script([ProxyFault::Swallow {
        close_after: None,
    }]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = common::write_config(dir.path(), &source_table(&emu, &proxy, transport));

    let run = common::run_tributary(&config, &state, "9s");
    let post = post_from_first_stream(&emu, 20, Duration::from_millis(150));
    let (out, sent) = tokio::join!(run, post);

    let records = proxy.records();
    assert!(records.len() >= 2, "the source reconnected: {records:?}");
    assert!(
        records[0].to_server > 0 && records[0].from_server > 0 && records[0].to_client == 0,
        "the first stream's request reached the emulator and its answer was swallowed: {:?}",
        records[0]
    );
    check_exactly_once(&out, &sent);
    proxy.stop().await;
    emu.stop().await;
}

async fn random_cuts_and_resets(transport: &str, seed: u64) {
    // The first connection lives long enough to deliver a message (the cursor exists);
    // after it, every connection is cut (FIN) or reset (RST) at a random byte.
    let plan = ProxyPlan::random(seed, 1.0)
        .with_kinds(&[FaultKind::CutAtByte, FaultKind::ResetAtByte])
        .with_max_byte(2500);
    plan.push(ProxyFault::CutAfter(Duration::from_millis(1500)));
    let (emu, proxy) = start(plan).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = common::write_config(dir.path(), &source_table(&emu, &proxy, transport));

    let run = common::run_tributary(&config, &state, "14s");
    let post = post_from_first_stream(&emu, 60, Duration::from_millis(150));
    let (out, sent) = tokio::join!(run, post);

    let records = proxy.records();
    let cut = records.iter().filter(|r| r.ending == Ending::Cut).count();
    let reset = records.iter().filter(|r| r.ending == Ending::Reset).count();
    assert!(
        cut + reset >= 4 && reset >= 1,
        "many connections were cut or reset: {records:?}"
    );
    check_exactly_once(&out, &sent);
    proxy.stop().await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_first_stream_response_swallowed_loses_nothing() {
    first_stream_response_swallowed("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_first_stream_response_swallowed_loses_nothing() {
    first_stream_response_swallowed("sse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_random_cuts_and_resets_lose_nothing() {
    random_cuts_and_resets("json", 21).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_random_cuts_and_resets_lose_nothing() {
    random_cuts_and_resets("sse", 22).await;
}
