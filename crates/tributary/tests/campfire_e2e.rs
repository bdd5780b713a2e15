//! End to end: `tributary run` with `service = "campfire"` sources against the in-process
//! Campfire emulator — every committed message exactly once and in order across injected
//! faults (backfill closes the gaps), the resume cursor sent as `since_message_id`, a restart
//! resuming from the state file, and a 401 ending only its own source.

use std::sync::Arc;
use std::time::Duration;

use common::{events_of, ids, run_tributary, write_config};
use emulator::campfire::{Config, DEFAULT_ROOM, DEFAULT_TOKEN, Emulator};
use emulator::{Fault, FaultPlan};

mod common;

/// A quiet emulator (no generated traffic, keep-alives every 300 ms) following `faults`.
async fn start_emulator(faults: FaultPlan) -> Emulator {
    Emulator::start(Config {
        rate: 0.0,
        keepalive: Duration::from_millis(300),
        faults: Arc::new(faults),
        ..Config::default()
    })
    .await
    .unwrap()
}

fn source_table(emu: &Emulator, name: &str, token: &str) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\nservice = \"campfire\"\ntoken = \"{token}\"\n\
         url = \"{url}\"\napi_url = \"{url}\"\nroom = {DEFAULT_ROOM}\njoin = true\n\
         stall_timeout = \"2s\"\nbackoff = {{ initial = \"200ms\", max = \"1s\" }}\n",
        url = emu.url()
    )
}

/// Posts `n` text messages, one every `every`, once the first stream is open; returns their
/// ids.
async fn post_when_streaming(emu: &Emulator, n: usize, every: Duration) -> Vec<u64> {
    assert!(
        common::eventually(|| emu.streams_served() > 0).await,
        "tributary never opened a stream"
    );
    let mut posted = Vec::with_capacity(n);
    for i in 0..n {
        posted.push(emu.inject_text(DEFAULT_ROOM, &format!("e2e message {i} ☃")));
        tokio::time::sleep(every).await;
    }
    posted
}

/// The first message after the source started: the rooms start empty, and the source's own
/// join (its EnterMessage, after its start position) is the first thing committed.
fn start_of(emu: &Emulator, posted: &[u64]) -> u64 {
    let first = emu.committed()[0].clone();
    assert_eq!(first.kind, "EnterMessage", "the source joined first");
    assert!(first.id < posted[0]);
    first.id
}

fn expected_ids(emu: &Emulator, first: u64) -> Vec<String> {
    emu.committed()
        .iter()
        .filter(|m| m.id >= first)
        .map(|m| format!("campfire:{DEFAULT_ROOM}:{}", m.id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_once_and_in_order_across_faults() {
    let faults = FaultPlan::script([
        vec![Fault::DropAfterBytes(420)],
        vec![Fault::Status {
            code: 400,
            retry_after: None,
        }],
        vec![
            Fault::Malformed,
            Fault::OneByteWrites,
            Fault::DropAfterBytes(900),
        ],
        vec![Fault::Stall {
            keepalives: false,
            duration: None,
        }],
        vec![Fault::Status {
            code: 503,
            retry_after: Some(1),
        }],
    ]);
    let emu = start_emulator(faults).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&emu, "ops", DEFAULT_TOKEN));

    let run = run_tributary(&config, &state, "12s");
    let post = post_when_streaming(&emu, 40, Duration::from_millis(100));
    let (out, posted) = tokio::join!(run, post);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        out.status
    );

    let events = events_of(&out, "ops");
    let got = ids(&events, |k| k != "connection" && k != "gap");
    let want = expected_ids(&emu, start_of(&emu, &posted));
    assert_eq!(got, want, "stderr:\n{stderr}");
    // Text arrived intact, and nothing claimed a gap: backfill closed every one.
    assert_eq!(events.iter().filter(|e| e["kind"] == "gap").count(), 0);
    let texts: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "message")
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(texts.contains(&"e2e message 39 ☃"), "{texts:?}");
    // Every fault was hit, and each reconnect resumed from a delivered message's id.
    assert!(emu.streams_served() >= 4, "{}", emu.streams_served());
    let resumed: Vec<u64> = emu.since_message_ids().into_iter().flatten().collect();
    assert!(
        !resumed.is_empty(),
        "no reconnect asked for since_message_id"
    );
    let committed: Vec<u64> = emu.committed().iter().map(|m| m.id).collect();
    for since in &resumed {
        // 0: the start position, taken before the source joined the empty room.
        assert!(
            committed.contains(since) || *since == 0,
            "since_message_id {since} is no message id"
        );
    }
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_state_file() {
    let emu = start_emulator(FaultPlan::none()).await;
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&emu, "ops", DEFAULT_TOKEN));

    let run = run_tributary(&config, &state, "4s");
    let post = post_when_streaming(&emu, 10, Duration::from_millis(100));
    let (first, posted) = tokio::join!(run, post);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let first_ids = ids(&events_of(&first, "ops"), |k| k != "connection");
    let last_delivered: u64 = first_ids
        .last()
        .expect("the first run delivered events")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // Posted while tributary is not running.
    let missed: Vec<u64> = (0..5)
        .map(|i| emu.inject_text(DEFAULT_ROOM, &format!("while away {i}")))
        .collect();
    let second = run_tributary(&config, &state, "3s").await;
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let second_ids = ids(&events_of(&second, "ops"), |k| k != "connection");
    assert_eq!(
        emu.since_message_ids().last().copied().flatten(),
        Some(last_delivered),
        "the restart did not resume from the saved cursor"
    );
    let mut all = first_ids.clone();
    all.extend(second_ids.clone());
    assert_eq!(all, expected_ids(&emu, start_of(&emu, &posted)));
    assert!(second_ids.contains(&format!("campfire:{DEFAULT_ROOM}:{}", missed[4])));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_source_stops_alone() {
    let emu = start_emulator(FaultPlan::none()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n{}",
        source_table(&emu, "good", DEFAULT_TOKEN),
        source_table(&emu, "bad", "not-the-token")
    );
    let (config, state) = write_config(dir.path(), &text);

    let run = run_tributary(&config, &state, "4s");
    let post = post_when_streaming(&emu, 10, Duration::from_millis(100));
    let (out, posted) = tokio::join!(run, post);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "one source still works; exit {:?}\n{stderr}",
        out.status
    );
    let good = ids(&events_of(&out, "good"), |k| k != "connection");
    assert_eq!(
        good,
        expected_ids(&emu, start_of(&emu, &posted)),
        "{stderr}"
    );
    assert!(
        ids(&events_of(&out, "bad"), |k| k != "connection").is_empty(),
        "the bad source delivered events"
    );
    // A clear message naming the source, the room and the cause, and no retry loop.
    let mentions_bad = stderr.lines().any(|l| {
        l.contains("bad") && l.contains("401") && l.contains(&format!("room {DEFAULT_ROOM}"))
    });
    assert!(mentions_bad, "no clear 401 message:\n{stderr}");
    assert!(!stderr.contains("not-the-token"), "token leaked:\n{stderr}");
    let bad_attempts = emu
        .requests()
        .iter()
        .filter(|r| r.user.as_deref() == Some("not-the-token"))
        .count();
    assert_eq!(bad_attempts, 1, "a 401 must not be retried");
    emu.stop().await;
}
