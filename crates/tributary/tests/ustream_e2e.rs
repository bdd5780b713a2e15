//! End to end: `tributary run` with `service = "ustream"` sources against the in-process
//! Social Stream emulator — every visible message exactly once and in order across failed and
//! slow polls, interval changes and a host switch, with retractions and ignores applied; a
//! restart resuming from the state file with a widened timeslice; an unknown channel ending
//! only its own source.

use std::sync::Arc;
use std::time::Duration;

use common::{events_of, run_tributary, write_config};
use emulator::ustream::{Config, Emulator};
use emulator::{Fault, FaultPlan};
use serde_json::Value;

mod common;

fn message_ids(events: &[Value]) -> Vec<String> {
    common::ids(events, |k| k == "message")
}

fn expected_ids(emu: &Emulator) -> Vec<String> {
    emu.visible_messages()
        .iter()
        .map(|m| format!("ustream:{}:{}", emu.channel(), m.uid))
        .collect()
}

fn source_table(emu: &Emulator, name: &str, channel: u64) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\nservice = \"ustream\"\nurl = \"{}\"\nchannel = {channel}\n\
         backoff = {{ initial = \"200ms\", max = \"1s\" }}\n",
        emu.url()
    )
}

async fn wait_for_first_poll(emu: &Emulator) {
    assert!(
        common::eventually(|| !emu.requests().is_empty()).await,
        "tributary never polled the emulator"
    );
}

const PEOPLE: &[(&str, &str)] = &[
    ("twitter", "Ada"),
    ("ustream", "Grace"),
    ("twitter", "Linus"),
    ("facebook", "Margaret"),
];

async fn post(emu: &Emulator, from: usize, n: usize, every: Duration) -> Vec<String> {
    let mut uids = Vec::new();
    for i in from..from + n {
        let (p, who) = PEOPLE[i % PEOPLE.len()];
        uids.push(emu.inject_message(p, who, &format!("e2e message {i} from {who} ☃")));
        tokio::time::sleep(every).await;
    }
    uids
}

fn emulator_config(faults: Vec<Vec<Fault>>) -> Config {
    Config {
        rate: 0.0,
        lag_secs: 2,
        refresh_intervals: vec![1, 2],
        interval_every: 4,
        faults: Arc::new(FaultPlan::script(faults)),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_once_in_order_across_faults_host_switch_and_ignores() {
    let emu = Emulator::start(emulator_config(vec![
        vec![],
        vec![],
        vec![Fault::Status {
            code: 500,
            retry_after: None,
        }],
        vec![],
        vec![Fault::Delay(Duration::from_millis(2500))],
        vec![],
        vec![Fault::DropAfterBytes(30)],
        vec![],
        vec![Fault::Malformed],
    ]))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&emu, "social", emu.channel()));

    let run = run_tributary(&config, &state, "16s");
    let script = async {
        wait_for_first_poll(&emu).await;
        let first = post(&emu, 0, 8, Duration::from_millis(150)).await;
        emu.ignore_message(&first[1]);
        emu.push_soft_failure("the social stream is resting");
        emu.ignore_user("facebook", "Ken");
        emu.inject_message("facebook", "Ken", "hidden while ignored");
        post(&emu, 8, 6, Duration::from_millis(150)).await;
        emu.switch_host();
        post(&emu, 14, 6, Duration::from_millis(150)).await;
        emu.unignore_user("facebook", "Ken");
        emu.inject_message("facebook", "Ken", "Ken is back");
        post(&emu, 20, 6, Duration::from_millis(150)).await;
        first
    };
    let (out, first) = tokio::join!(run, script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        out.status
    );

    let events = events_of(&out, "social");
    assert_eq!(
        message_ids(&events),
        expected_ids(&emu),
        "stderr:\n{stderr}"
    );
    let texts: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "message")
        .map(|e| e["text"].as_str().unwrap_or(""))
        .collect();
    assert!(!texts.contains(&"hidden while ignored"));
    assert!(texts.contains(&"Ken is back"));
    assert!(
        texts
            .iter()
            .all(|t| !t.contains("live at http://ustre.am/")),
        "suffixes removed"
    );
    // Nothing claimed a gap: the timeslices covered every failed poll.
    assert_eq!(events.iter().filter(|e| e["kind"] == "gap").count(), 0);
    let retraction = events
        .iter()
        .find(|e| e["kind"] == "retraction")
        .expect("a retraction");
    assert_eq!(
        retraction["refers_to"],
        format!("ustream:{}:{}", emu.channel(), first[1])
    );
    let ignore = events
        .iter()
        .find(|e| e["kind"] == "ignore")
        .expect("an ignore event");
    assert_eq!(ignore["author"]["name"], "Ken");
    assert!(events.iter().any(|e| e["kind"] == "unignore"));
    // The host switch moved polling to the second server, starting with /default.
    let reqs = emu.requests();
    let moved = reqs
        .iter()
        .position(|r| r.listener == 1)
        .expect("polled the new host");
    assert!(
        reqs[moved].path.ends_with("/default"),
        "{}",
        reqs[moved].path
    );
    assert!(reqs[moved..].iter().all(|r| r.listener == 1));
    assert!(reqs.iter().all(|r| !r.authorization));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_saved_range() {
    let emu = Emulator::start(emulator_config(vec![])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&emu, "social", emu.channel()));

    let run = run_tributary(&config, &state, "7s");
    let script = async {
        wait_for_first_poll(&emu).await;
        post(&emu, 0, 6, Duration::from_millis(200)).await;
    };
    let (out1, ()) = tokio::join!(run, script);
    assert!(
        out1.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out1.stderr)
    );
    let first_run = message_ids(&events_of(&out1, "social"));
    assert!(!first_run.is_empty());
    let before = emu.requests().len();
    // Down for a while; messages keep coming.
    post(&emu, 6, 8, Duration::from_millis(250)).await;

    let out2 = run_tributary(&config, &state, "8s").await;
    let stderr = String::from_utf8_lossy(&out2.stderr);
    assert!(out2.status.success(), "stderr:\n{stderr}");
    let second_run = message_ids(&events_of(&out2, "social"));
    let mut all = first_run.clone();
    all.extend(second_run.iter().cloned());
    assert_eq!(
        all,
        expected_ids(&emu),
        "nothing lost or repeated across the restart"
    );
    // The second run did not start over with /default: it asked for one widened timeslice
    // from where the first run stopped.
    let resumed = &emu.requests()[before];
    assert!(resumed.path.contains("/timeslice/"), "{}", resumed.path);
    let width: u64 = resumed.path.rsplit('/').next().unwrap().parse().unwrap();
    assert!(width > 2, "widened over the downtime: {}", resumed.path);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_channel_ends_only_its_own_source() {
    let emu = Emulator::start(emulator_config(vec![])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}\n{}",
        source_table(&emu, "good", emu.channel()),
        source_table(&emu, "missing", 999)
    );
    let (config, state) = write_config(dir.path(), &toml);
    let run = run_tributary(&config, &state, "8s");
    let script = async {
        wait_for_first_poll(&emu).await;
        post(&emu, 0, 5, Duration::from_millis(200)).await;
    };
    let (out, ()) = tokio::join!(run, script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "one source is still fine; stderr:\n{stderr}"
    );
    assert_eq!(message_ids(&events_of(&out, "good")), expected_ids(&emu));
    assert!(
        stderr.contains("999"),
        "the failed channel is named:\n{stderr}"
    );
    let polls_999 = emu
        .requests()
        .iter()
        .filter(|r| r.path.contains("/999/"))
        .count();
    assert_eq!(polls_999, 1, "a missing channel is not retried");
    emu.stop().await;
}

/// The saved cursor belongs to the server and channel it was read from (item 9): after the
/// URL in the config changes, the source starts fresh on the new server instead of resuming
/// the old session (whose saved host, after a switch, is the old server's other host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_url_starts_fresh_instead_of_resuming_the_old_server() {
    let old = Emulator::start(emulator_config(vec![])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&old, "social", old.channel()));
    let run = run_tributary(&config, &state, "7s");
    let script = async {
        wait_for_first_poll(&old).await;
        post(&old, 0, 2, Duration::from_millis(200)).await;
        old.switch_host();
        post(&old, 2, 3, Duration::from_millis(200)).await;
    };
    let (out1, ()) = tokio::join!(run, script);
    assert!(
        out1.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out1.stderr)
    );
    assert_eq!(message_ids(&events_of(&out1, "social")), expected_ids(&old));
    assert!(
        old.requests().iter().any(|r| r.listener == 1),
        "the first run followed the host switch"
    );
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains(&old.secondary_url()), "{saved}");
    old.stop().await;

    // The same source name, now reading another server.
    let new = Emulator::start(emulator_config(vec![])).await.unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&new, "social", new.channel()));
    let run = run_tributary(&config, &state, "7s");
    let script = async {
        wait_for_first_poll(&new).await;
        post(&new, 0, 4, Duration::from_millis(200)).await;
    };
    let (out2, ()) = tokio::join!(run, script);
    let stderr = String::from_utf8_lossy(&out2.stderr);
    assert!(out2.status.success(), "stderr:\n{stderr}");
    assert_eq!(
        message_ids(&events_of(&out2, "social")),
        expected_ids(&new),
        "stderr:\n{stderr}"
    );
    assert!(
        new.requests()[0].path.ends_with("/default"),
        "a fresh session: {:?}",
        new.requests()[0].path
    );
    assert!(stderr.contains("starting fresh"), "warned:\n{stderr}");
    new.stop().await;
}

/// Items 5 and 7 through `tributary run`: the `ignore` event names the user with the same
/// author id as the user's messages and is followed by a retraction of each earlier one;
/// the document's literal `"host": ""` and the other malformed control items are skipped
/// with a warning each (counted as malformed) while the rest of the response and every later
/// poll is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ign_user_retracts_earlier_messages_and_malformed_items_are_skipped() {
    let emu = Emulator::start(emulator_config(vec![])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&emu, "social", emu.channel()));
    let run = run_tributary(&config, &state, "10s");
    let script = async {
        wait_for_first_poll(&emu).await;
        let g1 = emu.inject_message("twitter", "Gyula", "hello");
        post(&emu, 0, 2, Duration::from_millis(100)).await;
        let g2 = emu.inject_message("twitter", "Gyula", "again");
        for bad in emulator::ustream::MALFORMED {
            emu.inject_malformed(serde_json::from_str(bad).unwrap());
        }
        post(&emu, 2, 2, Duration::from_millis(100)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        emu.ignore_user("twitter", "Gyula");
        emu.inject_message("twitter", "Gyula", "hidden while ignored");
        post(&emu, 4, 3, Duration::from_millis(300)).await;
        (g1, g2)
    };
    let (out, (g1, g2)) = tokio::join!(run, script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr:\n{stderr}");
    let events = events_of(&out, "social");
    assert_eq!(
        message_ids(&events),
        expected_ids(&emu),
        "stderr:\n{stderr}"
    );
    let ch = emu.channel();
    let ignore = events
        .iter()
        .find(|e| e["kind"] == "ignore")
        .expect("an ignore event");
    assert_eq!(ignore["author"]["id"], "twitter:Gyula");
    let of_gyula: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "message" && e["author"]["id"] == ignore["author"]["id"])
        .filter_map(|e| e["id"].as_str())
        .collect();
    let (g1, g2) = (format!("ustream:{ch}:{g1}"), format!("ustream:{ch}:{g2}"));
    assert_eq!(of_gyula, [g1.as_str(), g2.as_str()]);
    let retracted: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "retraction")
        .filter_map(|e| e["refers_to"].as_str())
        .collect();
    assert_eq!(retracted, [g1.as_str(), g2.as_str()], "stderr:\n{stderr}");
    let skipped = stderr.matches("malformed frame skipped").count();
    assert_eq!(
        skipped,
        emulator::ustream::MALFORMED.len(),
        "stderr:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("malformed frame skipped") && l.contains("host is empty")),
        "the document's own `\"host\": \"\"` is named:\n{stderr}"
    );
    emu.stop().await;
}
