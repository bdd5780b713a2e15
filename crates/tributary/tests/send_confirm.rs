//! `tributary send` through multistreamer, which has no acknowledgement: an echo confirms a
//! message when it comes; without one the message is "sent (not confirmed)" and the exit is
//! 0, unless `--confirm` makes the echo required (exit 1). `/msg user ...` without
//! `--account` goes from the internal IRC account 0 to account 0.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use emulator::multistreamer::{Config, Emulator};

mod common;

async fn send(config: &Path, args: &[&str]) -> (Output, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tributary"));
    cmd.args(["send", "--config"])
        .arg(config)
        .args(["--to", "live"])
        .args(args)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1");
    let started = Instant::now();
    let out = common::output_of(cmd).await;
    (out, started.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An emulator that does not echo messages sent through a chat writer a `writer` request
/// created (account 17 needs one), and a config with its source `live`.
async fn setup(dir: &Path) -> (Emulator, std::path::PathBuf) {
    let emu = Emulator::start(Config {
        echo_writer_messages: false,
        ..Config::quiet()
    })
    .await
    .unwrap();
    let config = dir.join("tributary.toml");
    std::fs::write(&config, emu.config_snippet("live")).unwrap();
    (emu, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_but_unechoed_message_is_sent_not_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, config) = setup(dir.path()).await;
    let (out, took) = send(&config, &["--account", "17", "through a new writer"]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("sent (not confirmed)"), "{stdout}");
    assert!(stdout.contains("through a new writer"), "{stdout}");
    assert!(
        took < Duration::from_secs(12),
        "waited {took:?}: the echo is not awaited for the whole --timeout"
    );
    let delivered = emu.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(
        (delivered[0].account_id, delivered[0].cur_stream_account_id),
        (17, 14)
    );
    assert!(!delivered[0].echoed);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_requires_the_echo() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, config) = setup(dir.path()).await;
    // No echo: a failure with --confirm, though the message was delivered.
    let (out, _) = send(
        &config,
        &[
            "--account",
            "17",
            "--confirm",
            "--timeout",
            "3s",
            "must be echoed",
        ],
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("did not echo"), "{stderr}");
    assert!(!stderr.contains(emu.token()), "the token leaked: {stderr}");
    assert_eq!(emu.delivered().len(), 1);
    // Echoed: confirmed, exit 0.
    let (out, _) = send(&config, &["--account", "14", "--confirm", "echoed"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.starts_with("sent text as jprjrdev"), "{stdout}");
    assert!(!stdout.contains("not confirmed"), "{stdout}");
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_without_account_is_sent_from_irc_account_0() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, config) = setup(dir.path()).await;
    let (out, _) = send(&config, &["/msg somebody hey this is a private message"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("private message to somebody"), "{stdout}");
    assert!(stdout.contains("account 0 → 0"), "{stdout}");
    // `send` may exit before the emulator has read the frame off the socket, and its status
    // and viewcount requests may come in any order around it: the text must be there once.
    let want = serde_json::json!({"type": "text", "account_id": 0, "cur_stream_account_id": 0,
                                  "text": "/msg somebody hey this is a private message"});
    let texts = || {
        emu.received()
            .iter()
            .filter(|m| m["type"] == "text")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        common::eventually(|| !texts().is_empty()).await,
        "the emulator received {:?}",
        emu.received()
    );
    assert_eq!(texts(), vec![want], "received {:?}", emu.received());
    emu.stop().await;
}
