//! End to end, `tributary run` against the Campfire emulator switched into the cases issue 13
//! found: a first stream that never answers or stalls before its first message, the wait
//! before a prompt reconnect (idle HTTP 400, clean end of stream), a room that must be joined
//! before streaming, and quiet periods longer than every timer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{events_of, ids, run_tributary, write_config};
use emulator::campfire::{Config, DEFAULT_ROOM, DEFAULT_TOKEN, Emulator};
use emulator::{Fault, FaultPlan};

mod common;

fn table(emu: &Emulator, extra: &str) -> String {
    format!(
        "[[source]]\nname = \"ops\"\nservice = \"campfire\"\ntoken = \"{DEFAULT_TOKEN}\"\n\
         url = \"{url}\"\napi_url = \"{url}\"\nroom = {DEFAULT_ROOM}\n{extra}",
        url = emu.url()
    )
}

fn message_ids(emu: &Emulator, from: u64) -> Vec<String> {
    emu.committed()
        .iter()
        .filter(|m| m.id >= from)
        .map(|m| format!("campfire:{DEFAULT_ROOM}:{}", m.id))
        .collect()
}

/// The `live.json` requests so far: (when answered, status).
fn live_requests(emu: &Emulator) -> Vec<(Instant, u16)> {
    emu.requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/live.json"))
        .map(|r| (r.at, r.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_stream_that_never_answers_or_stalls_loses_nothing() {
    let emu = Emulator::start(Config {
        rate: 0.0,
        keepalive: Duration::from_millis(300),
        faults: Arc::new(FaultPlan::script([
            // The first response never comes (the watchdog gives up on it)...
            vec![Fault::Delay(Duration::from_secs(30))],
            // ...and the second stalls, silent, before its first message.
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
    let (config, state) = write_config(
        dir.path(),
        &table(
            &emu,
            "stall_timeout = \"2s\"\nbackoff = { initial = \"200ms\", max = \"1s\" }\n",
        ),
    );
    let run = run_tributary(&config, &state, "12s");
    let post = async {
        // Post from the moment the start position is taken (recent.json?limit=1).
        assert!(
            common::eventually(|| !emu.since_message_ids().is_empty()).await,
            "tributary never asked for the room's latest id"
        );
        let mut posted = Vec::new();
        for i in 0..30 {
            posted.push(emu.inject_text(DEFAULT_ROOM, &format!("meanwhile {i}")));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        posted
    };
    let (out, posted) = tokio::join!(run, post);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events = events_of(&out, "ops");
    let got = ids(&events, |k| k != "connection" && k != "gap");
    assert_eq!(got, message_ids(&emu, posted[0]), "stderr:\n{stderr}");
    assert_eq!(events.iter().filter(|e| e["kind"] == "gap").count(), 0);
    // Both faults were hit, and only the first connect took a start position.
    assert!(live_requests(&emu).len() >= 2, "{:?}", emu.requests());
    let since = emu.since_message_ids();
    assert_eq!(since.iter().filter(|s| s.is_none()).count(), 1, "{since:?}");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_clean_end_or_an_idle_400_wait_two_to_four_seconds() {
    let emu = Emulator::start(Config {
        rate: 0.0,
        keepalive: Duration::from_millis(300),
        faults: Arc::new(FaultPlan::script([
            vec![],
            vec![Fault::Status {
                code: 400,
                retry_after: None,
            }],
        ])),
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The source's own policy: no backoff override.
    let (config, state) = write_config(dir.path(), &table(&emu, ""));
    let run = run_tributary(&config, &state, "14s");
    let drive = async {
        assert!(common::eventually(|| emu.open_streams() == 1).await);
        // Up long enough that its end is not a quick close.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let first = emu.inject_text(DEFAULT_ROOM, "before the end");
        let ended = Instant::now();
        emu.end_streams();
        assert!(common::eventually(|| live_requests(&emu).len() >= 3).await);
        let second = emu.inject_text(DEFAULT_ROOM, "after the reconnects");
        (first, second, ended)
    };
    let (out, (first, second, ended)) = tokio::join!(run, drive);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let live = live_requests(&emu);
    assert_eq!(
        live.iter().map(|(_, s)| *s).take(3).collect::<Vec<_>>(),
        vec![200, 400, 200],
        "{stderr}"
    );
    let after_end = live[1].0 - ended;
    let after_400 = live[2].0 - live[1].0;
    for (what, wait) in [("clean end", after_end), ("HTTP 400", after_400)] {
        assert!(
            wait >= Duration::from_secs(2) && wait <= Duration::from_secs(4),
            "the reconnect after the {what} came {wait:?} later\n{stderr}"
        );
    }
    let got = ids(&events_of(&out, "ops"), |k| k != "connection" && k != "gap");
    let want: Vec<String> = [first, second]
        .iter()
        .map(|id| format!("campfire:{DEFAULT_ROOM}:{id}"))
        .collect();
    assert_eq!(got, want, "{stderr}");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_a_room_it_must_join_and_keeps_a_quiet_connection() {
    let emu = Emulator::start(Config {
        rate: 0.0,
        keepalive: Duration::from_millis(300),
        require_join: true,
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // `join` left off; a stall timeout well below the quiet period.
    let (config, state) = write_config(
        dir.path(),
        &table(&emu, "join = false\nstall_timeout = \"1s\"\n"),
    );
    let run = run_tributary(&config, &state, "9s");
    let post = async {
        assert!(
            common::eventually(|| emu.open_streams() == 1).await,
            "{:?}",
            emu.requests()
        );
        // Six stall timeouts of keep-alive spaces only.
        tokio::time::sleep(Duration::from_secs(6)).await;
        emu.inject_text(DEFAULT_ROOM, "after a quiet while")
    };
    let (out, last) = tokio::join!(run, post);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(emu.has_joined(DEFAULT_TOKEN, DEFAULT_ROOM));
    let events = events_of(&out, "ops");
    let got = ids(&events, |k| k != "connection" && k != "gap");
    assert!(
        got.last() == Some(&format!("campfire:{DEFAULT_ROOM}:{last}")),
        "{got:?}\n{stderr}"
    );
    // One stream the whole time: the quiet room was never mistaken for a dead one.
    assert_eq!(emu.streams_served(), 1, "{stderr}");
    emu.stop().await;
}
