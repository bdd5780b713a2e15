//! Relays end to end: events from a Campfire source are relayed into the StreamIn emulator,
//! each exactly once, also across a restart with the same state file.

use std::collections::HashSet;
use std::time::Duration;

use tokio::process::Command;

async fn run(config: &std::path::Path, state: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["run", "--format", "json", "--duration", "4s", "--config"])
        .arg(config)
        .arg("--state")
        .arg(state)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_once_even_across_a_restart() {
    let campfire = emulator::campfire::Emulator::start(emulator::campfire::Config {
        rate: 8.0,
        ..Default::default()
    })
    .await
    .unwrap();
    let streamin = emulator::streamin::Emulator::start(emulator::streamin::Config::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n{}\n[[relay]]\nfrom = [\"ops\"]\nto = \"notify\"\nkinds = [\"message\"]\ntemplate = \"{{author}}: **{{text}}**\"\n",
            campfire.config_snippet("ops"),
            streamin.config_snippet("notify")
        ),
    )
    .unwrap();
    let state = dir.path().join("state.json");

    let mut events = run(&config, &state).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    events.extend(run(&config, &state).await);

    let messages: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] == "message")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(messages.len() >= 10, "enough traffic: {}", messages.len());
    let received = streamin.committed();
    let ids: Vec<&str> = received.iter().map(|r| r.external_id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no message relayed twice: {ids:?}");
    assert_eq!(ids, messages, "every relayed message, in order");
    assert!(
        received.iter().all(|r| r.content.contains("'''")),
        "markdown became wiki markup"
    );
    assert!(
        dir.path().join("state.relays.json").exists(),
        "relayed ids are persisted"
    );
    campfire.stop().await;
    streamin.stop().await;
}
