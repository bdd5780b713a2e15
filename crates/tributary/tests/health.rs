//! `/healthz` against a source that never connects: 503 once the grace has passed, naming
//! the source and since when.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

mod common;

use common::{free_port, http_get};

fn config(dir: &Path, refused_port: u16) -> std::path::PathBuf {
    let p = dir.join("t.toml");
    std::fs::write(
        &p,
        format!(
            "[[source]]\nname = \"ops\"\nservice = \"campfire\"\ntoken = {{ env = \"T\" }}\n\
             url = \"http://127.0.0.1:{refused_port}\"\nroom = 111\nbackoff = {{ initial = \"200ms\", max = \"1s\" }}\n"
        ),
    )
    .unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_turns_503_when_a_source_stays_refused_past_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: every attempt is refused, and retries are unlimited.
    let refused = free_port();
    let cfg = config(dir.path(), refused);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .env("RUST_LOG", "error")
        .env("NO_COLOR", "1")
        .env("T", "tok")
        .args(["run", "--format", "json", "--duration", "60s", "--config"])
        .arg(&cfg)
        .args(["--metrics", &addr, "--health-grace", "1s", "--state"])
        .arg(dir.path().join("s.json"))
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut last = String::new();
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(r) = http_get(&addr, "/healthz").await {
            last = r;
            if last.starts_with("HTTP/1.1 503") {
                break;
            }
        }
    }
    assert!(last.starts_with("HTTP/1.1 503"), "{last}");
    assert!(last.contains("ops "), "names the source: {last}");
    assert!(
        last.contains("not connected since 20"),
        "says since when: {last}"
    );
    assert!(!last.contains("tok\n"), "{last}");
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_stays_200_for_a_retrying_source_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), free_port());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .env("RUST_LOG", "error")
        .env("T", "tok")
        .args(["run", "--format", "json", "--duration", "60s", "--config"])
        .arg(&cfg)
        .args(["--metrics", &addr, "--health-grace", "1h", "--state"])
        .arg(dir.path().join("s.json"))
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut answered = None;
    for _ in 0..150 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(r) = http_get(&addr, "/healthz").await {
            answered = Some(r);
            break;
        }
    }
    // Give it a few refused attempts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = http_get(&addr, "/healthz").await.unwrap();
    assert!(answered.is_some());
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("ops "), "{r}");
    child.kill().await.unwrap();
}
