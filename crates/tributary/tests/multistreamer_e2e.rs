//! End to end: `tributary run` with `service = "multistreamer"` sources against the in-process
//! multistreamer emulator — chat delivered in order and never twice across injected drops,
//! stalls, refusals and malformed frames; every loss covered by an explicit gap event (the
//! protocol cannot replay); a refused token ending only its own source; the token never
//! printed.

use std::sync::Arc;
use std::time::Duration;

use common::{events_of, run_tributary, write_config};
use emulator::multistreamer::{Config, Emulator};
use emulator::{Fault, FaultPlan};
use multistreamer::map::chat_id;
use multistreamer::wire::ChatMessage;

mod common;

fn source_table(emu: &Emulator, name: &str, token: &str) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\nservice = \"multistreamer\"\ntoken = \"{token}\"\n\
         url = \"{url}\"\nstream = {stream}\n\
         stall_timeout = \"2s\"\nbackoff = {{ initial = \"200ms\", max = \"1s\" }}\n",
        url = emu.url(),
        stream = emu.stream(),
    )
}

/// The id the client derives for a committed chat message.
fn expected_id(stream: u64, c: &emulator::multistreamer::Committed) -> String {
    let m: ChatMessage = serde_json::from_value(c.json.clone()).unwrap();
    chat_id(stream, c.kind == "emote", &m, 0)
}

/// Posts chat messages every `every` for `total`, once the first connection is up.
async fn post_while_running(emu: &Emulator, total: Duration, every: Duration) -> usize {
    assert!(
        common::eventually(|| emu.connections() > 0).await,
        "tributary never connected"
    );
    let start = tokio::time::Instant::now();
    let mut n = 0;
    while start.elapsed() < total {
        emu.generate_one();
        n += 1;
        tokio::time::sleep(every).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_order_never_twice_and_every_loss_is_a_gap() {
    let faults = FaultPlan::script([
        vec![Fault::DropAfterBytes(2500)],
        vec![Fault::Malformed, Fault::DropAfterBytes(1800)],
        vec![Fault::Stall {
            keepalives: false,
            duration: None,
        }],
        vec![Fault::Status {
            code: 503,
            retry_after: Some(1),
        }],
        vec![Fault::Refuse],
        vec![Fault::OneByteWrites],
    ]);
    let emu = Emulator::start(Config {
        rate: 0.0,
        status_every: None,
        faults: Arc::new(faults),
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&emu, "live", emu.token()));

    let run = run_tributary(&config, &state, "11s");
    let post = post_while_running(&emu, Duration::from_secs(9), Duration::from_millis(60));
    let (out, posted) = tokio::join!(run, post);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains(emu.token()) && !stderr.contains(emu.token()),
        "the token leaked"
    );

    let committed = emu.committed_chat();
    assert_eq!(committed.len(), posted);
    let index: std::collections::HashMap<String, usize> = committed
        .iter()
        .enumerate()
        .map(|(i, c)| (expected_id(emu.stream(), c), i))
        .collect();

    let events = events_of(&out, "live");
    assert!(
        events.iter().any(|e| e["kind"] == "status"),
        "no status event; stderr:\n{stderr}"
    );
    let mut seen = std::collections::HashSet::new();
    let mut last: Option<usize> = None;
    let mut gap_since_last = false;
    let mut delivered = 0;
    let mut gaps = 0;
    for e in &events {
        match e["kind"].as_str().unwrap_or_default() {
            "gap" => {
                gaps += 1;
                gap_since_last = true;
            }
            "message" | "emote" => {
                let id = e["id"].as_str().unwrap().to_owned();
                let i = *index
                    .get(&id)
                    .unwrap_or_else(|| panic!("delivered a message never committed: {e}"));
                assert!(seen.insert(id), "delivered twice: {e}");
                if let Some(prev) = last {
                    assert!(i > prev, "out of order: {i} after {prev}");
                    assert!(
                        i == prev + 1 || gap_since_last,
                        "messages {}..{i} lost without a gap event",
                        prev + 1
                    );
                }
                last = Some(i);
                gap_since_last = false;
                delivered += 1;
                assert_eq!(e["text"], committed[i].text);
            }
            _ => {}
        }
    }
    // Every scripted fault was met: several reconnects, each announced by a gap.
    assert!(emu.connections() >= 4, "connections: {}", emu.connections());
    assert!(gaps >= 3, "gaps: {gaps}; stderr:\n{stderr}");
    assert!(
        delivered >= posted / 4,
        "only {delivered} of {posted} delivered; stderr:\n{stderr}"
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_ends_only_its_own_source() {
    let emu = Emulator::start(Config {
        rate: 20.0,
        status_every: None,
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad_token = "definitely-not-the-token";
    let (config, state) = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            source_table(&emu, "good", emu.token()),
            source_table(&emu, "bad", bad_token)
        ),
    );
    let out = run_tributary(&config, &state, "4s").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        out.status
    );
    assert!(
        !stdout.contains(bad_token) && !stderr.contains(bad_token),
        "the token leaked"
    );
    assert!(
        !stdout.contains(emu.token()) && !stderr.contains(emu.token()),
        "the token leaked"
    );
    let good = events_of(&out, "good");
    assert!(
        good.iter().filter(|e| e["kind"] == "message").count() >= 5,
        "the good source delivered too little; stderr:\n{stderr}"
    );
    // The bad source was refused once and not retried (a 403 is fatal).
    assert_eq!(emu.refused(), 1, "stderr:\n{stderr}");
    let all = format!("{stdout}\n{stderr}");
    assert!(
        all.contains("bad") && (all.contains("403") || all.contains("credentials")),
        "no clear message for the refused source:\n{all}"
    );
    emu.stop().await;
}
