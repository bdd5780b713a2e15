//! Multistreamer through the fault proxy: `tributary run` reads the WebSocket through a TCP
//! proxy that swallows the first connection's answer or cuts a connection mid-stream.
//! Multistreamer cannot replay, so what a broken connection missed is lost; the promise is
//! that nothing is repeated, order is kept, and every loss (also before the first working
//! connection) is announced by a `gap` event before the next message.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::{events_of, run_tributary, write_config};
use emulator::FaultPlan;
use emulator::multistreamer::{Config, Emulator};
use emulator::proxy::{Proxy, ProxyFault, ProxyPlan};
use multistreamer::map::chat_id;
use multistreamer::wire::ChatMessage;
use serde_json::Value;

mod common;

async fn start(plan: ProxyPlan) -> (Emulator, Proxy) {
    let emu = Emulator::start(Config {
        rate: 0.0,
        status_every: None,
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

fn source_table(emu: &Emulator, proxy: &Proxy) -> String {
    format!(
        "[[source]]\nname = \"live\"\nservice = \"multistreamer\"\ntoken = \"{token}\"\n\
         url = \"{url}\"\nstream = {stream}\n\
         stall_timeout = \"1500ms\"\nbackoff = {{ initial = \"100ms\", max = \"500ms\" }}\n",
        token = emu.token(),
        url = proxy.url_with_scheme("ws"),
        stream = emu.stream(),
    )
}

/// Posts a chat message every `every` for `total`, from the moment the first connection's
/// request reached the emulator (the source has started by then).
async fn post_from_first_connection(emu: &Emulator, total: Duration, every: Duration) -> usize {
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

/// Checks the output of source `live`: every delivered chat message was committed, none
/// twice, in order, and every committed message not delivered (from the first one posted on)
/// lies behind a gap event printed before the next delivered one. Returns (delivered, gaps
/// that covered a loss).
fn check(emu: &Emulator, events: &[Value], stderr: &str) -> (usize, usize) {
    let committed = emu.committed_chat();
    let index: HashMap<String, usize> = committed
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let m: ChatMessage = serde_json::from_value(c.json.clone()).unwrap();
            (chat_id(emu.stream(), c.kind == "emote", &m, 0), i)
        })
        .collect();
    let mut seen = HashSet::new();
    // The next committed message expected: from the first, as the source started before.
    let mut next = 0usize;
    let mut gap_pending = false;
    let mut covered = 0;
    for e in events {
        match e["kind"].as_str().unwrap_or_default() {
            "gap" => gap_pending = true,
            "message" | "emote" => {
                let id = e["id"].as_str().unwrap().to_owned();
                let i = *index
                    .get(&id)
                    .unwrap_or_else(|| panic!("delivered a message never committed: {e}"));
                assert!(seen.insert(id), "delivered twice: {e}\n{stderr}");
                assert!(i >= next, "out of order: {i} after {}\n{stderr}", next - 1);
                if i > next {
                    assert!(
                        gap_pending,
                        "messages {next}..{i} lost without a gap event\n{stderr}"
                    );
                    covered += 1;
                }
                gap_pending = false;
                next = i + 1;
                assert_eq!(e["text"], committed[i].text);
            }
            _ => {}
        }
    }
    (seen.len(), covered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_connection_swallowed_is_a_gap_not_a_silent_loss() {
    let (emu, proxy) = start(ProxyPlan::script([ProxyFault::Swallow {
        close_after: None,
    }]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&emu, &proxy));

    let run = run_tributary(&config, &state, "8s");
    let post = post_from_first_connection(&emu, Duration::from_secs(6), Duration::from_millis(100));
    let (out, posted) = tokio::join!(run, post);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);

    let records = proxy.records();
    assert!(records.len() >= 2, "the source reconnected: {records:?}");
    assert_eq!(
        records[0].to_client, 0,
        "the first answer was swallowed: {:?}",
        records[0]
    );
    assert!(records[0].from_server > 0, "{:?}", records[0]);
    let (delivered, covered) = check(&emu, &events_of(&out, "live"), &stderr);
    assert!(
        delivered > 0 && delivered < posted,
        "{delivered} of {posted} delivered\n{stderr}"
    );
    assert!(covered >= 1, "the loss was announced\n{stderr}");
    proxy.stop().await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_stream_is_a_gap_and_nothing_repeats() {
    // The first connection carries messages for a while, then is cut (FIN) mid-stream;
    // the next one is reset (RST) after some bytes; later ones pass.
    let (emu, proxy) = start(ProxyPlan::script([
        ProxyFault::CutAfter(Duration::from_millis(1500)),
        ProxyFault::ResetAtByte(1200),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&emu, &proxy));

    let run = run_tributary(&config, &state, "8s");
    let post = post_from_first_connection(&emu, Duration::from_secs(6), Duration::from_millis(50));
    let (out, posted) = tokio::join!(run, post);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);

    assert!(
        proxy.records().len() >= 3,
        "cut, reset, then a lasting connection: {:?}",
        proxy.records()
    );
    let (delivered, covered) = check(&emu, &events_of(&out, "live"), &stderr);
    assert!(
        delivered > posted / 2 && delivered < posted,
        "{delivered} of {posted} delivered\n{stderr}"
    );
    assert!(covered >= 1, "the losses were announced\n{stderr}");
    proxy.stop().await;
    emu.stop().await;
}
