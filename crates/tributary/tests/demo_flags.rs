//! Process tests of `tributary demo`: the flags of `run` that make sense for it (`--raw`,
//! `--lifecycle`, `--state`, `--metrics`), its own state (never the user's default state
//! file) and a clean stop on SIGINT.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

mod common;

use common::{free_port, http_get};

fn bin(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tributary"));
    // Every place a default state file could be is inside the test's folder.
    c.env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env("HOME", home.join("home"))
        .env("XDG_STATE_HOME", home.join("xdg"))
        .env("TMPDIR", home.join("tmp"))
        .current_dir(home)
        .kill_on_drop(true);
    for d in ["home", "xdg", "tmp"] {
        std::fs::create_dir_all(home.join(d)).unwrap();
    }
    c
}

async fn output(mut cmd: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("tributary finishes in time")
        .expect("tributary starts")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn demo_help_lists_the_run_flags_it_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = bin(dir.path());
    cmd.args(["demo", "--help"]);
    let out = output(cmd).await;
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in ["--metrics", "--state", "--raw", "--lifecycle"] {
        assert!(help.contains(flag), "demo --help lists {flag}:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_accepts_raw_lifecycle_state_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo-state.json");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = bin(dir.path());
    cmd.args([
        "demo",
        "--duration",
        "8s",
        "--format",
        "json",
        "--rate",
        "4",
        "--raw",
        "--lifecycle",
        "--metrics",
        &addr,
        "--state",
    ])
    .arg(&state);
    let run = tokio::spawn(output(cmd));

    // Metrics and health are served while the demo runs.
    let mut body = String::new();
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(b) = http_get(&addr, "/metrics").await {
            if b.contains("tributary_source_state{source=\"campfire\",state=\"connected\"} 1") {
                body = b;
                break;
            }
        }
    }
    assert!(
        body.contains("tributary_events_delivered_total"),
        "metrics served on {addr}: {body}"
    );
    let health = http_get(&addr, "/healthz").await.unwrap();
    assert!(health.starts_with("HTTP/1.1 "), "{health}");

    let out = run.await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = lines(&out);
    assert!(
        events.iter().any(|e| e["kind"] == "connection"),
        "--lifecycle prints connection events"
    );
    let chat: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "message" && e["source"] == "campfire")
        .collect();
    assert!(!chat.is_empty(), "campfire messages arrive");
    assert!(
        chat.iter()
            .all(|e| e.get("raw").is_some_and(|r| !r.is_null())),
        "--raw keeps the wire object of every message"
    );
    let saved = std::fs::read_to_string(&state).expect("--state is where the cursors go");
    let saved: serde_json::Value = serde_json::from_str(&saved).expect("the state is JSON");
    assert!(saved.to_string().contains("campfire"), "{saved}");
    assert!(
        !dir.path().join("xdg/tributary").exists(),
        "with --state the default state folder stays untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_never_touches_the_default_state_file_of_run() {
    let emu = emulator::ustream::Emulator::start(emulator::ustream::Config {
        rate: 4.0,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let default_state = dir.path().join("xdg/tributary/state.json");

    // What `run` uses by default: $XDG_STATE_HOME/tributary/state.json.
    let cfg = dir.path().join("tributary.toml");
    std::fs::write(&cfg, emu.config_snippet("ustream")).unwrap();
    let mut cmd = bin(dir.path());
    cmd.args(["run", "--format", "json", "--duration", "3s"]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        default_state.is_file(),
        "run keeps its cursors in $XDG_STATE_HOME/tributary/state.json"
    );
    emu.stop().await;

    // A demo, with `run`'s state present, neither reads nor writes it, and leaves no
    // temporary state behind.
    let before = std::fs::read(&default_state).unwrap();
    let modified = std::fs::metadata(&default_state)
        .unwrap()
        .modified()
        .unwrap();
    let mut cmd = bin(dir.path());
    cmd.args([
        "demo",
        "--duration",
        "5s",
        "--format",
        "json",
        "--rate",
        "4",
    ]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        lines(&out).iter().any(|e| e["source"] == "ustream"),
        "the demo's ustream source delivers"
    );
    assert_eq!(std::fs::read(&default_state).unwrap(), before);
    assert_eq!(
        std::fs::metadata(&default_state)
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );
    let others: Vec<_> = std::fs::read_dir(dir.path().join("xdg/tributary"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "state.json")
        .collect();
    assert!(
        others.is_empty(),
        "nothing else in run's state folder: {others:?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "the temporary state is removed: {leftovers:?}"
    );

    // Without any state of `run`, a demo creates none.
    std::fs::remove_dir_all(dir.path().join("xdg")).unwrap();
    let mut cmd = bin(dir.path());
    cmd.args([
        "demo",
        "--duration",
        "3s",
        "--format",
        "json",
        "--rate",
        "4",
    ]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !dir.path().join("xdg/tributary").exists(),
        "the demo created no state for run"
    );
    assert!(!dir.path().join("home/.local/state/tributary").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_stops_on_sigint_during_a_flood_with_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    for (i, delay_ms) in [0u64, 37, 150, 290, 420].into_iter().enumerate() {
        let mut cmd = bin(dir.path());
        cmd.args([
            "demo",
            "--duration",
            "120s",
            "--format",
            "json",
            "--rate",
            "500",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut stderr = child.stderr.take().unwrap();
        let errors = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });
        let mut first = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(60),
            stdout.read_until(b'\n', &mut first),
        )
        .await
        .expect("a first event")
        .unwrap();
        let reader = tokio::spawn(async move {
            let mut rest = Vec::new();
            let _ = stdout.read_to_end(&mut rest).await;
            first.extend_from_slice(&rest);
            first
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let killed = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .unwrap_or_else(|_| panic!("try {i}: demo still running 5 s after SIGINT"))
            .unwrap();
        let out = reader.await.unwrap();
        let err = errors.await.unwrap();
        assert_eq!(status.code(), Some(0), "try {i}: {err}");
        assert!(err.contains("summary (interrupted)"), "try {i}: {err}");
        assert_eq!(out.last(), Some(&b'\n'), "try {i}: whole lines");
        for line in text(&out).lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("try {i}: not JSON ({e}): {line}"));
        }
    }
}
