//! End to end, Flowdock resume positions: `tributary run` against the Flowdock emulator.
//!
//! * JSON stream backfill resumes from the last *delivered* id of each flow (the first
//!   `/messages?since_id=` of every reconnect names it), across a mid-frame drop and a stall,
//!   with more than one REST page of backlog, and flows named by id on the stream.
//! * A soak: a fault on almost every connection (drops, stalls, 400/500/503, malformed frames,
//!   one-byte writes), and nothing lost or repeated on either transport.
//! * A server whose ids fall below the saved cursor (an emulator restarted from scratch) is
//!   warned about, and its messages are delivered, not swallowed.
//! * Quiet periods longer than the stall timeout: keep-alives keep the connection.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use emulator::flowdock::{Committed, Config, Emulator, RequestRecord};
use emulator::{Fault, FaultPlan};
use serde_json::Value;

mod common;

use common::RunOutput as Output;

/// Runs `tributary run` (warnings logged) with `config` for `duration`, plus `extra` flags,
/// while `during` runs in this process; keeps the events of the source `fd`.
async fn run_tributary(
    dir: &Path,
    config: &str,
    duration: &str,
    extra: &[&str],
    during: impl std::future::Future<Output = ()>,
) -> Output {
    let env = [("RUST_LOG", "warn")];
    let mut out = common::run_during(dir, config, duration, extra, &env, during).await;
    out.events.retain(|e| e["source"] == "fd");
    out
}

fn source_toml(url: &str, flows: &[&str], transport: &str, stall: &str) -> String {
    let flows = flows
        .iter()
        .map(|f| format!("{f:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[source]]\nname = \"fd\"\nservice = \"flowdock\"\ntoken = \"flowdock-token\"\nurl = {url:?}\n\
         flows = [{flows}]\ntransport = {transport:?}\nstall_timeout = {stall:?}\n\
         backoff = {{ initial = \"100ms\", max = \"500ms\" }}\n"
    )
}

/// The stream requests (not REST) the emulator received.
fn stream_requests(emu: &Emulator) -> Vec<RequestRecord> {
    emu.requests()
        .into_iter()
        .filter(|r| !r.path.ends_with("/messages"))
        .collect()
}

/// Waits (bounded) until the emulator has seen `n` stream requests.
async fn until_stream_requests(emu: &Emulator, n: usize) {
    assert!(
        common::eventually(|| stream_requests(emu).len() >= n).await,
        "only {} stream requests: {:?}",
        stream_requests(emu).len(),
        emu.requests()
    );
}

/// The message events (not connection or gap events).
fn messages(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["kind"] != "connection" && e["kind"] != "gap")
        .collect()
}

/// Every message of `sent` delivered exactly once, in order per flow, and nothing else
/// but presence.
fn check_exactly_once(out: &Output, sent: &[Committed], flows: &[&str]) {
    assert_eq!(out.code, Some(0), "stderr:\n{}", out.stderr);
    let ids: Vec<&str> = messages(&out.events)
        .iter()
        .filter(|e| e["kind"] != "presence")
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    let committed: Vec<&str> = sent.iter().map(|c| c.event_id.as_str()).collect();
    common::assert_each_once(&ids, &committed, &out.stderr);
    assert_eq!(ids.len(), sent.len(), "nothing but the committed messages");
    for flow in flows {
        let want: Vec<&str> = sent
            .iter()
            .filter(|c| c.flow == *flow)
            .map(|c| c.event_id.as_str())
            .collect();
        let got: Vec<&str> = ids.iter().copied().filter(|id| want.contains(id)).collect();
        assert_eq!(got, want, "flow {flow}: in order");
    }
    assert_eq!(
        out.events.iter().filter(|e| e["kind"] == "gap").count(),
        0,
        "a replaying source needs no gap"
    );
}

/// The flow (`org/flow`) and message id of an event id `flowdock:<org/flow>:<id>`.
fn flow_and_id(event_id: &str) -> (String, u64) {
    let rest = event_id.strip_prefix("flowdock:").expect("a flowdock id");
    let (flow, id) = rest.rsplit_once(':').expect("flow:id");
    (flow.to_owned(), id.parse().expect("a numeric id"))
}

const THREE: [&str; 3] = ["acme/main", "acme/ops", "acme/dev"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_backfill_resumes_from_the_last_delivered_id_per_flow() {
    // Connection 1 is cut mid-frame, connection 2 stalls without a byte (while more than one
    // REST page of each flow piles up), connection 3 is healthy. Messages name their flow by
    // id, the configuration by `org/flow`.
    let emu = Emulator::start(Config {
        rate: 0.0,
        history: 3,
        flow_ids: true,
        flows: THREE.iter().map(|f| (*f).to_owned()).collect(),
        keepalive: Duration::from_millis(300),
        faults: Arc::new(FaultPlan::script([
            vec![Fault::DropAfterBytes(2500)],
            vec![Fault::Stall {
                keepalives: false,
                duration: None,
            }],
        ])),
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = source_toml(&emu.url(), &THREE, "json", "1500ms");
    let mut sent: Vec<Committed> = Vec::new();
    let out = run_tributary(dir.path(), &config, "9s", &["--lifecycle"], async {
        until_stream_requests(&emu, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Live traffic until the cut ends connection 1 (a few more while it reconnects).
        let mut i = 0;
        while stream_requests(&emu).len() < 2 && i < 200 {
            sent.push(emu.inject_message(THREE[i % 3], &format!("live {i} ü")));
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Connection 2 stalls: everything from now on is backlog, over one REST page (100)
        // in every flow.
        until_stream_requests(&emu, 2).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        for j in 0..3 * 110 {
            sent.push(emu.inject_message(THREE[j % 3], &format!("backlog {j}")));
        }
        until_stream_requests(&emu, 3).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        for j in 0..6 {
            sent.push(emu.inject_message(THREE[j % 3], &format!("after {j}")));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    check_exactly_once(&out, &sent, &THREE);

    // What had been delivered, per flow, when each connection attempt began.
    let mut delivered: BTreeMap<String, u64> = BTreeMap::new();
    let mut at_attempt: Vec<BTreeMap<String, u64>> = Vec::new();
    for e in &out.events {
        if e["kind"] == "connection" && e["connection"]["state"] == "connecting" {
            at_attempt.push(delivered.clone());
        } else if e["kind"] != "connection" && e["kind"] != "presence" {
            let (flow, id) = flow_and_id(e["id"].as_str().unwrap());
            delivered.insert(flow, id);
        }
    }
    // The REST requests of each connection: those after its stream request.
    let mut per_connection: Vec<Vec<RequestRecord>> = Vec::new();
    for r in emu.requests() {
        if r.path.ends_with("/messages") {
            if let Some(last) = per_connection.last_mut() {
                last.push(r);
            }
        } else {
            per_connection.push(Vec::new());
        }
    }
    assert!(
        per_connection.len() >= 3 && at_attempt.len() >= per_connection.len(),
        "a connection per fault: {} stream requests, {} attempts",
        per_connection.len(),
        at_attempt.len()
    );
    for (k, rest) in per_connection.iter().enumerate().skip(1) {
        for flow in THREE {
            let path = format!("/flows/{flow}/messages");
            let first = rest
                .iter()
                .find(|r| r.path == path && r.since_id.is_some())
                .unwrap_or_else(|| panic!("connection {}: no backfill of {flow}", k + 1));
            let want = at_attempt[k].get(flow).copied();
            assert!(
                want.is_some(),
                "connection {}: {flow} delivered before",
                k + 1
            );
            assert_eq!(
                first.since_id,
                want,
                "connection {}: the backfill of {flow} starts after its last delivered id",
                k + 1
            );
        }
    }
    // The stalled connection's backlog took more than one page in every flow.
    for flow in THREE {
        let path = format!("/flows/{flow}/messages");
        let pages = per_connection[2]
            .iter()
            .filter(|r| r.path == path && r.since_id.is_some())
            .count();
        assert!(pages >= 2, "{flow}: {pages} backfill pages");
    }
    emu.stop().await;
}

/// A fault on almost every connection: drawn from [`FaultPlan::random`] with a seed (drops,
/// stalls with and without keep-alives, 500, 503, malformed frames), with a 400 or one-byte
/// writes mixed in, and every connection that does not fail at once cut after some bytes.
/// After the script, connections behave, so the end is certain: on Event-Stream a faulty
/// connection replays only what its bytes allow, so the backlog is caught up by the first
/// healthy connection.
fn soak_plan(seed: u64, connections: usize) -> FaultPlan {
    let draw = FaultPlan::random(seed, 0.95);
    let plan = FaultPlan::none();
    for i in 0..connections {
        let mut faults = if i % 5 == 4 {
            vec![Fault::Status {
                code: 400,
                retry_after: None,
            }]
        } else {
            draw.next_connection()
        };
        if i % 4 == 1 {
            faults.insert(0, Fault::OneByteWrites);
        }
        if !faults.iter().any(|f| matches!(f, Fault::Status { .. })) {
            faults.push(Fault::DropAfterBytes(300 + (i * 733) % 3700));
        }
        plan.push(faults);
    }
    plan
}

/// Messages name their flow by id, the configuration by `org/flow`.
async fn soak(transport: &str) {
    let emu = Emulator::start(Config {
        rate: 0.0,
        history: 3,
        flow_ids: true,
        flows: THREE.iter().map(|f| (*f).to_owned()).collect(),
        keepalive: Duration::from_millis(250),
        sse_retry: Some(Duration::from_millis(100)),
        faults: Arc::new(soak_plan(2026, 12)),
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = source_toml(&emu.url(), &THREE, transport, "1s");
    let mut sent: Vec<Committed> = Vec::new();
    let out = run_tributary(dir.path(), &config, "16s", &[], async {
        until_stream_requests(&emu, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..240 {
            sent.push(emu.inject_message(THREE[i % 3], &format!("soak {i} ü 日本")));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The emulator's own record: what was committed after the history.
    let committed: Vec<Committed> = emu
        .committed()
        .into_iter()
        .filter(|c| c.text.starts_with("soak "))
        .collect();
    assert_eq!(committed, sent);
    check_exactly_once(&out, &committed, &THREE);
    // Every one of the first 12 connections had a fault (a drop only fires once its bytes
    // are sent, so a quiet tail may end the run inside the script).
    let connections = stream_requests(&emu).len();
    assert!(
        connections >= 8,
        "the faults cost a connection each: only {connections}"
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_stream_soak_under_faults_loses_and_repeats_nothing() {
    soak("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_soak_under_faults_loses_and_repeats_nothing() {
    soak("sse").await;
}

/// Two runs sharing a state file, against a server that starts again from scratch on the
/// same address in between.
async fn reset_server(transport: &str) {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let flows = ["acme/main", "acme/ops"];
    let config = source_toml(&format!("http://{addr}"), &flows, transport, "1500ms");
    let emu_config = |id_base| Config {
        listen: addr,
        rate: 0.0,
        history: 2,
        id_base,
        keepalive: Duration::from_millis(300),
        ..Config::default()
    };
    // First run: ids from a time-based base (large), saved in the state file.
    let first = Emulator::start(emu_config(None)).await.unwrap();
    let mut sent = Vec::new();
    let out = run_tributary(dir.path(), &config, "3s", &[], async {
        until_stream_requests(&first, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..4 {
            sent.push(first.inject_message(flows[i % 2], &format!("first run {i}")));
        }
    })
    .await;
    check_exactly_once(&out, &sent, &flows);
    first.stop().await;

    // The server starts again from scratch on the same address: its ids are far below the
    // saved cursor.
    let second = Emulator::start(emu_config(Some(100))).await.unwrap();
    let mut sent = Vec::new();
    let out = run_tributary(dir.path(), &config, "4s", &[], async {
        until_stream_requests(&second, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..6 {
            sent.push(second.inject_message(flows[i % 2], &format!("second run {i}")));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        out.stderr.contains("went backwards") && out.stderr.contains("server reset"),
        "the reset is warned about:\n{}",
        out.stderr
    );
    for flow in flows {
        assert!(
            out.stderr.contains(&format!("in flow {flow}")),
            "the warning names {flow}:\n{}",
            out.stderr
        );
    }
    check_exactly_once(&out, &sent, &flows);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_server_ids_below_the_cursor_are_warned_about_and_delivered() {
    reset_server("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_server_ids_below_the_cursor_are_warned_about_and_delivered() {
    reset_server("sse").await;
}

async fn quiet_periods(transport: &str) {
    // Traffic for 1 s, then 2.5 s of keep-alives only, repeating: the silences outlast the
    // 1.5 s stall timeout, and the keep-alives (every 300 ms) keep the connection.
    let emu = Emulator::start(Config {
        rate: 10.0,
        history: 0,
        quiet: Some((Duration::from_secs(1), Duration::from_millis(2500))),
        keepalive: Duration::from_millis(300),
        sse_retry: None,
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flows = ["acme/main", "acme/ops"];
    let config = source_toml(&emu.url(), &flows, transport, "1500ms");
    let out = run_tributary(dir.path(), &config, "6s", &["--lifecycle"], async {}).await;
    assert_eq!(out.code, Some(0), "stderr:\n{}", out.stderr);
    let requests = stream_requests(&emu);
    assert_eq!(requests.len(), 1, "no reconnect: {requests:?}");
    let states: Vec<&str> = out
        .events
        .iter()
        .filter(|e| e["kind"] == "connection")
        .filter_map(|e| e["connection"]["state"].as_str())
        .collect();
    assert!(!states.contains(&"disconnected"), "{states:?}");
    // Messages came on both sides of a silence longer than the stall timeout.
    let at: Vec<chrono::DateTime<chrono::Utc>> = messages(&out.events)
        .iter()
        .filter(|e| e["kind"] != "presence")
        .map(|e| e["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(at.len() >= 10, "{} messages", at.len());
    let longest = at
        .windows(2)
        .map(|w| (w[1] - w[0]).to_std().unwrap_or_default())
        .max()
        .unwrap();
    assert!(
        longest > Duration::from_millis(1500),
        "a silence longer than the stall timeout: {longest:?}"
    );
    // And nothing of what the server committed while connected was lost.
    let ids: HashSet<String> = messages(&out.events)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let committed: Vec<Committed> = emu
        .committed()
        .into_iter()
        .filter(|c| flows.contains(&c.flow.as_str()))
        .collect();
    let first = committed
        .iter()
        .position(|c| ids.contains(&c.event_id))
        .unwrap();
    let last = committed
        .iter()
        .rposition(|c| ids.contains(&c.event_id))
        .unwrap();
    for c in &committed[first..=last] {
        assert!(ids.contains(&c.event_id), "{} lost", c.event_id);
    }
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_quiet_periods_longer_than_the_stall_timeout_keep_the_connection() {
    quiet_periods("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_quiet_periods_longer_than_the_stall_timeout_keep_the_connection() {
    quiet_periods("sse").await;
}
