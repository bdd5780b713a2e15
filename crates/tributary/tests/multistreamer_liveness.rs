//! End to end: the multistreamer client's pings follow the source's `stall_timeout`.
//!
//! A quiet but healthy connection (no chat, pings answered) must last through many stall
//! timeouts: exactly one connection and no gap. A dead one (the server stops answering pings
//! and sends nothing) must still be replaced within the stall timeout.

use std::time::Duration;

use common::{events_of, run_command, write_config};
use emulator::multistreamer::{Config, Emulator};

mod common;

/// A silent emulator: no generated chat, no periodic status; it still answers pings.
async fn quiet_emulator() -> Emulator {
    Emulator::start(Config {
        rate: 0.0,
        status_every: None,
        ..Config::default()
    })
    .await
    .unwrap()
}

fn source_table(emu: &Emulator, stall: &str) -> String {
    format!(
        "[[source]]\nname = \"quiet\"\nservice = \"multistreamer\"\ntoken = \"{token}\"\n\
         url = \"{url}\"\nstream = {stream}\n\
         stall_timeout = \"{stall}\"\nbackoff = {{ initial = \"200ms\", max = \"1s\" }}\n",
        token = emu.token(),
        url = emu.url(),
        stream = emu.stream(),
    )
}

/// Runs `tributary run --lifecycle` for `duration` on a quiet stream with `stall` and checks
/// that one connection lasted the whole time.
async fn one_connection_for(stall: &str, duration: &str) {
    let emu = quiet_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&emu, stall));
    let mut cmd = run_command(&config, &state, duration);
    cmd.arg("--lifecycle").env("RUST_LOG", "warn");
    let out = common::output_of(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        out.status
    );
    let events = events_of(&out, "quiet");
    let gaps: Vec<_> = events.iter().filter(|e| e["kind"] == "gap").collect();
    assert_eq!(
        emu.connections(),
        1,
        "stall_timeout {stall}: a quiet, healthy connection was replaced; gaps {gaps:?}; stderr:\n{stderr}"
    );
    assert!(gaps.is_empty(), "stall_timeout {stall}: {gaps:?}");
    // The client pinged (the emulator answered): the keep-alives carried the connection.
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_healthy_connection_lasts_with_a_one_second_stall_timeout() {
    one_connection_for("1s", "7s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_healthy_connection_lasts_with_a_three_second_stall_timeout() {
    one_connection_for("3s", "13s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_connection_is_replaced_within_the_stall_timeout() {
    let stall = Duration::from_secs(3);
    let emu = quiet_emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, state) = write_config(dir.path(), &source_table(&emu, "3s"));
    let mut cmd = run_command(&config, &state, "16s");
    cmd.arg("--lifecycle").env("RUST_LOG", "warn");
    let run = common::output_of(cmd);
    let script = async {
        assert!(
            common::eventually(|| emu.connections() == 1).await,
            "tributary never connected"
        );
        // Quiet and healthy for longer than the stall timeout: still the first connection.
        tokio::time::sleep(stall + Duration::from_secs(1)).await;
        assert_eq!(emu.connections(), 1, "a healthy connection was replaced");
        // The server stops answering pings and sends nothing: a dead peer.
        emu.play_dead();
        let died = tokio::time::Instant::now();
        assert!(
            common::eventually(|| emu.connections() >= 2).await,
            "the dead connection was never replaced"
        );
        died.elapsed()
    };
    let (out, replaced_after) = tokio::join!(run, script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        out.status
    );
    // Detected inside the stall timeout (the client's pong deadline), then one short backoff
    // (200 ms to 1 s) before the replacement: generous slack for a loaded machine.
    assert!(
        replaced_after < stall + Duration::from_secs(2),
        "replaced only after {replaced_after:?}; stderr:\n{stderr}"
    );
    // The replacement is healthy and quiet too: it lasts to the end.
    assert_eq!(emu.connections(), 2, "stderr:\n{stderr}");
    let gaps = events_of(&out, "quiet")
        .into_iter()
        .filter(|e| e["kind"] == "gap")
        .count();
    assert_eq!(
        gaps, 1,
        "one reconnect, announced by one gap; stderr:\n{stderr}"
    );
    emu.stop().await;
}
