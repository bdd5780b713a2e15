//! Process test: stop `tributary run` mid-stream and restart it with the same state file.
//! After SIGTERM nothing is lost or repeated; after SIGKILL nothing is lost and the only
//! repeats are the events of the last cursor-save interval.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use emulator::campfire::{Config, Emulator};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const RATE: f64 = 10.0;

fn config(dir: &Path, emu: &Emulator) -> std::path::PathBuf {
    let path = dir.join("tributary.toml");
    let text = format!(
        "state_file = \"state.json\"\n\n[[source]]\nname = \"ops\"\nservice = \"campfire\"\ntoken = {{ env = \"TRIB_TEST_TOKEN\" }}\nurl = \"{url}\"\napi_url = \"{url}\"\nroom = 111\n",
        url = emu.url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["run", "--format", "json", "--config"])
        .arg(config)
        .env("TRIB_TEST_TOKEN", emulator::campfire::DEFAULT_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("tributary starts")
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Reads message ids until `want` arrived, sends `sig`, then reads to the end.
async fn run_until(config: &Path, want: usize, sig: &str) -> (Vec<String>, Option<i32>) {
    let mut child = spawn(config);
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut ids = Vec::new();
    let read = async {
        while ids.len() < want {
            let Some(line) = lines.next_line().await.unwrap() else {
                break;
            };
            push_id(&line, &mut ids);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("enough messages in time");
    signal(&child, sig);
    let rest = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            push_id(&line, &mut ids);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), rest)
        .await
        .expect("output ends after the signal");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    (ids, status.code())
}

fn push_id(line: &str, ids: &mut Vec<String>) {
    let v: serde_json::Value = serde_json::from_str(line).expect("every line is JSON");
    let kind = v["kind"].as_str().unwrap();
    if kind != "gap" && kind != "connection" {
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
}

fn expected(emu: &Emulator, first: &str, last: &str) -> Vec<String> {
    let all: Vec<String> = emu
        .committed()
        .iter()
        .map(|c| format!("campfire:{}:{}", c.room, c.id))
        .collect();
    let a = all
        .iter()
        .position(|i| i == first)
        .expect("first id was committed");
    let b = all
        .iter()
        .position(|i| i == last)
        .expect("last id was committed");
    all[a..=b].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restart_loses_and_repeats_nothing() {
    let emu = Emulator::start(Config {
        rate: RATE,
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu);

    let (first, code) = run_until(&cfg, 15, "-TERM").await;
    assert_eq!(code, Some(0), "SIGTERM exits 0");
    let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(state.contains("ops"), "cursor saved on shutdown: {state}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("state.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Messages keep arriving while it is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (second, code) = run_until(&cfg, 15, "-TERM").await;
    assert_eq!(code, Some(0));

    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "no repeats across a SIGTERM restart"
    );
    let want = expected(&emu, &all[0], all.last().unwrap());
    assert_eq!(
        all, want,
        "every committed message, in order, across the restart"
    );
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restart_loses_nothing_and_repeats_only_the_last_save_interval() {
    let emu = Emulator::start(Config {
        rate: RATE,
        ..Config::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu);

    let (first, _) = run_until(&cfg, 25, "-KILL").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (second, code) = run_until(&cfg, 15, "-TERM").await;
    assert_eq!(code, Some(0));

    // Repeats are allowed only as a suffix of the first run (events after the last save).
    let firsts: HashSet<&String> = first.iter().collect();
    let repeats: Vec<&String> = second.iter().filter(|i| firsts.contains(i)).collect();
    let suffix: Vec<&String> = first.iter().skip(first.len() - repeats.len()).collect();
    assert_eq!(
        repeats, suffix,
        "repeats are exactly the tail of the killed run"
    );
    // The save interval is about a second: allow three seconds of traffic, no more.
    assert!(
        repeats.len() as f64 <= RATE * 3.0,
        "{} repeats",
        repeats.len()
    );

    let mut merged: Vec<String> = first.clone();
    merged.extend(second.iter().filter(|i| !firsts.contains(i)).cloned());
    let want = expected(&emu, &merged[0], merged.last().unwrap());
    assert_eq!(merged, want, "nothing lost across a SIGKILL restart");
    emu.stop().await;
}
