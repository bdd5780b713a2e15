//! Black-box tests of the `tributary` command line against the in-process emulators: exit
//! statuses, error messages, `send`, `check`, `--metrics`, `demo` and `completions`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

mod common;

use common::http_get;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tributary"));
    c.env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    c
}

async fn run(args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(120), bin().args(args).output())
        .await
        .expect("tributary finishes in time")
        .expect("tributary starts")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[tokio::test]
async fn help_lists_every_command_and_completions_work() {
    let out = run(&["--help"]).await;
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in [
        "run",
        "send",
        "check",
        "decode",
        "emulate",
        "demo",
        "completions",
    ] {
        assert!(help.contains(cmd), "--help lists {cmd}:\n{help}");
    }
    let out = run(&["completions", "bash"]).await;
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("tributary"));
    let out = run(&["run", "--format", "yaml"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad flag value is a usage error"
    );
}

#[tokio::test]
async fn config_errors_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = run(&["run", "--config", missing.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nope.toml"),
        "{}",
        text(&out.stderr)
    );

    let cfg = write(
        dir.path(),
        "bad.toml",
        "[[source]]\nname = \"x\"\nservice = \"irc\"\n",
    );
    let out = run(&["run", "--config", cfg.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.toml:3:") && err.contains("unknown `service`"),
        "{err}"
    );

    let cfg = write(
        dir.path(),
        "env.toml",
        "[[source]]\nname = \"x\"\nservice = \"campfire\"\nroom = 1\ntoken = { env = \"TRIBUTARY_TEST_UNSET_VAR\" }\n",
    );
    let out = run(&["run", "--config", cfg.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("TRIBUTARY_TEST_UNSET_VAR is not set"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_failing_exits_1_with_reasons_and_metrics_are_served() {
    let emu = emulator::campfire::Emulator::start(emulator::campfire::Config::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "t.toml",
        &format!(
            "[[source]]\nname = \"ops\"\nservice = \"campfire\"\ntoken = {{ env = \"T\" }}\nurl = \"{}\"\nroom = 111\n",
            emu.url()
        ),
    );
    let out = bin()
        .args(["run", "--config", cfg.to_str().unwrap(), "--state"])
        .arg(dir.path().join("s.json"))
        .env("T", "wrong-token")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("ops") && err.contains("401"), "{err}");
    assert!(
        !err.contains("wrong-token"),
        "the token never reaches the output"
    );

    // A healthy run serves metrics while it runs.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut child = bin()
        .args([
            "run",
            "--format",
            "json",
            "--duration",
            "20s",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .args(["--metrics", &addr, "--state"])
        .arg(dir.path().join("s2.json"))
        .env("T", emulator::campfire::DEFAULT_TOKEN)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(b) = http_get(&addr, "/metrics").await {
            if b.contains("tributary_source_state{source=\"ops\",state=\"connected\"} 1") {
                body = b;
                break;
            }
        }
    }
    assert!(body.contains("tributary_events_delivered_total"), "{body}");
    assert!(
        body.contains("tributary_reconnects_total{source=\"ops\",service=\"campfire\"}"),
        "{body}"
    );
    let health = http_get(&addr, "/healthz").await.unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    child.kill().await.unwrap();
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_multistreamer_each_outcome() {
    let emu = emulator::multistreamer::Emulator::start(emulator::multistreamer::Config {
        rate: 0.0,
        broken_writers: vec![17],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "t.toml", &emu.config_snippet("live"));
    let cfg = cfg.to_str().unwrap();

    let out = run(&[
        "send",
        "--config",
        cfg,
        "--to",
        "live",
        "--account",
        "14",
        "hello chat",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let confirmed = text(&out.stdout);
    assert!(
        confirmed.contains("jprjrdev") && confirmed.contains("hello chat"),
        "{confirmed}"
    );
    assert!(emu.received().iter().any(|m| m["text"] == "hello chat"));

    let out = run(&[
        "send",
        "--config",
        cfg,
        "--to",
        "live",
        "--account",
        "0",
        "--emote",
        "waves",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("emote"));

    for (account, expect) in [("99", "account 99"), ("25", "writable")] {
        let out = run(&[
            "send",
            "--config",
            cfg,
            "--to",
            "live",
            "--account",
            account,
            "x",
        ])
        .await;
        assert_eq!(out.status.code(), Some(1), "account {account}");
        let err = text(&out.stderr);
        assert!(err.contains(expect), "account {account}: {err}");
        assert!(!err.contains(emu.token()), "no token in errors");
    }
    let out = run(&[
        "send",
        "--config",
        cfg,
        "--to",
        "live",
        "--account",
        "17",
        "--timeout",
        "2s",
        "x",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).to_lowercase().contains("writer"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["send", "--config", cfg, "--to", "nobody", "x"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("writable: live"));

    let url = emu.url();
    emu.stop().await;
    let out = run(&["send", "--config", cfg, "--to", "live", "x"]).await;
    assert_eq!(out.status.code(), Some(1), "connection failure");
    assert!(
        text(&out.stderr).contains("failed"),
        "{} (server was {url})",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_check_streamin_with_every_error_code() {
    let emu = emulator::streamin::Emulator::start(emulator::streamin::Config::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "key", &emu.api_key());
    let _ = key;
    let cfg = write(
        dir.path(),
        "t.toml",
        &format!(
            "[[target]]\nname = \"notify\"\nservice = \"streamin\"\napi_key = {{ file = \"key\" }}\nurl = \"{}\"\n",
            emu.url()
        ),
    );
    let cfg = cfg.to_str().unwrap();

    let out = run(&[
        "send",
        "--config",
        cfg,
        "--to",
        "notify",
        "--external-id",
        "m1",
        "**deploy** done",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("external_id=m1"),
        "{}",
        text(&out.stdout)
    );
    let got = emu.committed();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].content, "'''deploy''' done",
        "markdown converted to wiki markup"
    );

    let out = run(&["check", "--config", cfg]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("target notify (streamin): ok"));

    let long = "x".repeat(1001);
    let out = run(&["send", "--config", cfg, "--to", "notify", &long]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("1000"), "{}", text(&out.stderr));
    assert_eq!(emu.committed().len(), 1, "refused before sending");

    for code in [0i64, 101, 102, 103, 104, 105, 201, -201] {
        emu.force_status(Some(code));
        let out = run(&["send", "--config", cfg, "--to", "notify", "hello"]).await;
        assert_eq!(out.status.code(), Some(1), "status {code}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("status {code}")),
            "status {code}: {err}"
        );
        assert!(
            !err.contains(&emu.api_key()),
            "the key never reaches errors"
        );
    }
    emu.force_status(Some(101));
    let out = run(&["check", "--config", cfg]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("FAILED"));
    emu.force_status(None);

    let out = run(&["send", "--config", cfg, "--to", "notify", "--emote", "x"]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "--emote is a usage error for streamin"
    );
    emu.stop().await;
}

#[tokio::test]
async fn demo_runs_every_service_and_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        bin()
            .current_dir(dir.path())
            .args([
                "demo",
                "--duration",
                "6s",
                "--format",
                "json",
                "--rate",
                "4",
            ])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut services = std::collections::HashSet::new();
    for line in text(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("stdout is NDJSON");
        services.insert(v["source"].as_str().unwrap().to_owned());
    }
    for s in [
        "campfire",
        "flowdock-sse",
        "flowdock-json",
        "multistreamer",
        "ustream",
    ] {
        assert!(services.contains(s), "events from {s}: {services:?}");
    }
    let summary = text(&out.stderr);
    assert!(summary.contains("── summary"), "{summary}");
    assert!(summary.contains("StreamIn emulator received"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_key_rewrites_the_key_file_once_a_day() {
    let emu = emulator::streamin::Emulator::start(emulator::streamin::Config::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old = emu.api_key();
    write(dir.path(), "key", &format!("{old}\n"));
    let cfg = write(
        dir.path(),
        "t.toml",
        &format!(
            "[[target]]\nname = \"notify\"\nservice = \"streamin\"\napi_key = {{ file = \"key\" }}\nurl = \"{}\"\n",
            emu.url()
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let out = run(&["refresh-key", "--config", cfg, "--to", "notify"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stored = std::fs::read_to_string(dir.path().join("key")).unwrap();
    assert_eq!(
        stored.trim(),
        emu.api_key(),
        "the new key is stored in the key file"
    );
    assert_ne!(stored.trim(), old);
    assert!(
        !text(&out.stdout).contains(stored.trim()),
        "the key is not printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The new key works, and a second refresh today is refused before asking the server.
    let out = run(&["send", "--config", cfg, "--to", "notify", "after refresh"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let asked = emu
        .requests()
        .iter()
        .filter(|r| r.as_str() == "refresh_api_key")
        .count();
    let out = run(&["refresh-key", "--config", cfg, "--to", "notify"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("once") || text(&out.stderr).contains("per day"),
        "{}",
        text(&out.stderr)
    );
    let asked_again = emu
        .requests()
        .iter()
        .filter(|r| r.as_str() == "refresh_api_key")
        .count();
    assert_eq!(asked, asked_again, "refused without asking the server");

    // A key from the environment cannot be stored: a usage error.
    let env_cfg = write(
        dir.path(),
        "env.toml",
        &format!(
            "[[target]]\nname = \"notify\"\nservice = \"streamin\"\napi_key = {{ env = \"K\" }}\nurl = \"{}\"\n",
            emu.url()
        ),
    );
    let out = bin()
        .args([
            "refresh-key",
            "--config",
            env_cfg.to_str().unwrap(),
            "--to",
            "notify",
        ])
        .env("K", emu.api_key())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("file"));
    emu.stop().await;
}
