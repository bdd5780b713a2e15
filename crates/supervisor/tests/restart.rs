//! Durable cursors: the state file written by the driver, and restarts that resume from it.

mod scripted;

use std::path::Path;
use std::time::Duration;

use chat_model::{Event, Kind};
use scripted::*;
use supervisor::{EventStream, Options, Overrides, SavedSource, StateFile, Supervisor};

fn options(path: &Path) -> Options {
    Options {
        state_file: Some(path.to_path_buf()),
        seed: Some(7),
        ..Options::default()
    }
}

/// The next message event (skipping lifecycle events), within a generous virtual limit.
async fn next_message(stream: &mut EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            let e = stream.recv().await.expect("stream open");
            if e.kind == Kind::Message {
                return e;
            }
        }
    })
    .await
    .expect("a message in time")
}

fn saved_last_id(path: &Path, source: &str) -> Option<u64> {
    let (state, _) = StateFile::load(path).unwrap();
    state
        .get(source)?
        .cursor
        .as_ref()
        .and_then(|c| c.as_json()["last_id"].as_u64())
}

/// Waits (in real time, bounded) for the saver's blocking write to land.
async fn eventually_saved(path: &Path, source: &str, want: u64) {
    for _ in 0..500 {
        if path.exists() && saved_last_id(path, source) == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "state file never held last_id {want}: {:?}",
        saved_last_id(path, source)
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_from_the_saved_cursor_without_loss_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let server = Server::new(50, Duration::from_millis(100), true);

    // First run: read 20 messages, write them, ack, shut down.
    let mut sup = Supervisor::new(options(&path)).unwrap();
    assert!(sup.warnings().is_empty());
    sup.add(Scripted::new("ops", &server, vec![]), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    let mut first = Vec::new();
    for _ in 0..20 {
        first.push(num(&next_message(&mut stream).await));
    }
    stream.ack();
    let report = handle.shutdown().await;
    assert!(report.state_error.is_none());
    assert_eq!(saved_last_id(&path, "ops"), Some(20));
    let saved = StateFile::load(&path)
        .unwrap()
        .0
        .get("ops")
        .cloned()
        .unwrap();
    assert_eq!(saved.service, "scripted");
    assert_eq!(saved.recent_ids.last().map(String::as_str), Some("m20"));
    assert!(saved.last_delivery_at.is_some());

    // Second run: resumes after m20.
    let mut sup = Supervisor::new(options(&path)).unwrap();
    sup.add(Scripted::new("ops", &server, vec![]), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    let mut second = Vec::new();
    for _ in 0..30 {
        second.push(num(&next_message(&mut stream).await));
    }
    handle.shutdown().await;
    assert_eq!(server.resumes(), [None, Some(20)]);
    first.extend(second);
    assert_eq!(first, (1..=50).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn only_events_the_consumer_took_are_saved() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let server = Server::new(50, Duration::from_millis(100), true);
    let mut sup = Supervisor::new(options(&path)).unwrap();
    sup.add(Scripted::new("ops", &server, vec![]), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    for _ in 0..10 {
        next_message(&mut stream).await;
    }
    // m10 was returned but not acked (the consumer may not have written it), and the source
    // has forwarded more that nobody read: the saved cursor is m9's.
    tokio::time::sleep(Duration::from_secs(2)).await;
    handle.shutdown().await;
    assert_eq!(saved_last_id(&path, "ops"), Some(9));
}

#[tokio::test(start_paused = true)]
async fn events_taken_without_waiting_are_saved_only_once_acked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let server = Server::new(50, Duration::from_millis(100), true);
    let mut sup = Supervisor::new(options(&path)).unwrap();
    sup.add(Scripted::new("ops", &server, vec![]), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    let mut taken = vec![num(&next_message(&mut stream).await)];
    // Let more queue up, then take everything queued without waiting (a batch a consumer
    // writes and flushes at once).
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Some(e) = stream.try_recv() {
        if e.kind == Kind::Message {
            taken.push(num(&e));
        }
    }
    assert!(taken.len() > 5, "{taken:?}");
    assert_eq!(taken, (1..=taken.len() as u64).collect::<Vec<_>>());
    assert!(stream.try_recv().is_none(), "nothing more is queued");
    // Nothing is acked yet (recv returned m1, try_recv the rest): the saver keeps none of it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::thread::sleep(Duration::from_millis(200));
    let before = saved_last_id(&path, "ops");
    assert!(
        before.is_none_or(|n| n == 0),
        "saved before the ack: {before:?}"
    );
    stream.ack();
    handle.shutdown().await;
    assert_eq!(saved_last_id(&path, "ops"), taken.last().copied());
}

#[tokio::test(start_paused = true)]
async fn cursors_are_saved_about_a_second_after_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let server = Server::new(10, Duration::from_millis(100), true);
    let mut sup = Supervisor::new(options(&path)).unwrap();
    sup.add(Scripted::new("ops", &server, vec![]), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    for _ in 0..10 {
        next_message(&mut stream).await;
    }
    stream.ack();
    // No shutdown: the periodic saver writes it.
    eventually_saved(&path, "ops", 10).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_no_replay_source_reports_the_restart_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let server = Server::new(100, Duration::from_millis(100), false);
    let mut sup = Supervisor::new(options(&path)).unwrap();
    sup.add(Scripted::new("live", &server, vec![]), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    for _ in 0..5 {
        next_message(&mut stream).await;
    }
    stream.ack();
    handle.shutdown().await;
    let saved_at = StateFile::load(&path)
        .unwrap()
        .0
        .get("live")
        .unwrap()
        .last_delivery_at;
    assert!(saved_at.is_some());

    let mut sup = Supervisor::new(options(&path)).unwrap();
    sup.add(Scripted::new("live", &server, vec![]), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    let gap = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let e = stream.recv().await.unwrap();
            assert_ne!(e.kind, Kind::Message, "the gap comes before any message");
            if e.kind == Kind::Gap {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(gap.gap.unwrap().from, saved_at.unwrap());
    assert!(gap.text.contains("previous run"), "{}", gap.text);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_state_file_is_set_aside_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::write(&path, "{\"version\": 1, \"sources\": {\"ops\": 12").unwrap();
    let sup = Supervisor::new(options(&path)).unwrap();
    assert_eq!(sup.warnings().len(), 1);
    assert!(
        sup.warnings()[0].contains("set aside"),
        "{:?}",
        sup.warnings()
    );
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].starts_with("state.json.corrupt-"), "{names:?}");
    // And it runs from scratch.
    let server = Server::new(3, Duration::from_millis(100), true);
    let mut sup = sup;
    sup.add(Scripted::new("ops", &server, vec![]), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    assert_eq!(num(&next_message(&mut stream).await), 1);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn unconfigured_sources_keep_their_state_and_foreign_cursors_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut state = StateFile::empty(&path);
    state.set(
        "retired",
        SavedSource {
            service: "campfire".into(),
            cursor: Some(cursor(99)),
            ..SavedSource::default()
        },
    );
    state.set(
        "ops",
        SavedSource {
            service: "flowdock".into(), // not what "ops" speaks now
            cursor: Some(cursor(30)),
            ..SavedSource::default()
        },
    );
    state.save().unwrap();

    let server = Server::new(5, Duration::from_millis(100), true);
    let mut sup = Supervisor::new(options(&path)).unwrap();
    sup.add(Scripted::new("ops", &server, vec![]), Overrides::default())
        .unwrap();
    assert_eq!(sup.warnings().len(), 1);
    assert!(
        sup.warnings()[0].contains("flowdock"),
        "{:?}",
        sup.warnings()
    );
    let (mut stream, handle) = sup.start();
    for _ in 0..5 {
        next_message(&mut stream).await;
    }
    stream.ack();
    handle.shutdown().await;
    assert_eq!(server.resumes()[0], None, "the foreign cursor was not used");
    assert_eq!(saved_last_id(&path, "retired"), Some(99), "kept");
    assert_eq!(saved_last_id(&path, "ops"), Some(5));
}

/// Runs `f` on a runtime of its own and then drops the runtime with whatever `f` returned
/// still alive: every task stops where it is, with no final save, like a killed process.
fn run_then_kill<T>(f: impl std::future::Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let kept = rt.block_on(f);
    drop(rt);
    kept
}

#[test]
fn a_process_killed_before_its_first_save_resumes_from_where_the_source_started() {
    // Real time, two runtimes: the first "process" is killed (its runtime dropped) after
    // delivering three messages, long before its first periodic save.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut server = Server::new(200, Duration::from_millis(50), true);
    server.from_now = true;
    let opts = Options {
        save_interval: Duration::from_secs(86_400),
        ..options(&path)
    };
    let (first, kept) = run_then_kill(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut sup = Supervisor::new(opts.clone()).unwrap();
        sup.add(Scripted::new("ops", &server, vec![]), Overrides::default())
            .unwrap();
        let (mut stream, handle) = sup.start();
        let mut first = Vec::new();
        for _ in 0..3 {
            first.push(num(&next_message(&mut stream).await));
        }
        stream.ack();
        (first, (stream, handle))
    });
    drop(kept);
    let baseline = first[0] - 1;
    assert!(baseline >= 1, "messages were published before the start");
    assert_eq!(
        saved_last_id(&path, "ops"),
        Some(baseline),
        "the baseline was durable at once"
    );
    // Down for a while: more messages are published meanwhile.
    std::thread::sleep(Duration::from_millis(400));
    let second = run_then_kill(async {
        let mut sup = Supervisor::new(opts.clone()).unwrap();
        sup.add(Scripted::new("ops", &server, vec![]), Overrides::default())
            .unwrap();
        let (mut stream, handle) = sup.start();
        let mut second = Vec::new();
        while second.last().is_none_or(|&n| n < first[2] + 10) {
            second.push(num(&next_message(&mut stream).await));
        }
        handle.shutdown().await;
        second
    });
    assert_eq!(server.resumes(), [None, Some(baseline)]);
    // At least once: the three delivered before the kill come again, nothing is missing.
    let want: Vec<u64> = (baseline + 1..=first[2] + 10).collect();
    assert_eq!(second, want, "first run: {first:?}");
}

#[tokio::test(start_paused = true)]
async fn a_cursor_saved_for_another_identity_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut state = StateFile::empty(&path);
    state.set(
        "ops",
        SavedSource {
            service: "scripted".into(),
            identity: "scripted http://old.example/ room 1".into(),
            cursor: Some(cursor(30)),
            recent_ids: (1..=5).map(|i| format!("m{i}")).collect(),
            ..SavedSource::default()
        },
    );
    state.save().unwrap();

    // The emulator behind "ops" was replaced (ids start again) and the room changed.
    let server = Server::new(5, Duration::from_millis(100), true);
    let mut sup = Supervisor::new(options(&path)).unwrap();
    sup.add(
        Scripted::new("ops", &server, vec![]).with_identity("scripted http://new.example/ room 2"),
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(sup.warnings().len(), 1, "{:?}", sup.warnings());
    let w = &sup.warnings()[0];
    assert!(
        w.contains("\"ops\"") && w.contains("old.example") && w.contains("new.example"),
        "{w}"
    );
    let (mut stream, handle) = sup.start();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(num(&next_message(&mut stream).await));
    }
    stream.ack();
    handle.shutdown().await;
    assert_eq!(server.resumes()[0], None, "the stale cursor was not used");
    assert_eq!(got, [1, 2, 3, 4, 5], "the old recent ids swallow nothing");
    let saved = StateFile::load(&path)
        .unwrap()
        .0
        .get("ops")
        .cloned()
        .unwrap();
    assert_eq!(saved.identity, "scripted http://new.example/ room 2");
    assert_eq!(saved_last_id(&path, "ops"), Some(5));
}

#[tokio::test(start_paused = true)]
async fn a_state_file_without_identities_is_reused_and_then_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    // As written before identities were kept.
    std::fs::write(
        &path,
        r#"{"version":1,"sources":{"ops":{"service":"scripted","cursor":{"last_id":20},"recent_ids":["m20"]}}}"#,
    )
    .unwrap();
    let server = Server::new(30, Duration::from_millis(100), true);
    let identity = "scripted room 1";
    for round in 0..2 {
        let mut sup = Supervisor::new(options(&path)).unwrap();
        sup.add(
            Scripted::new("ops", &server, vec![]).with_identity(identity),
            Overrides::default(),
        )
        .unwrap();
        assert!(sup.warnings().is_empty(), "{:?}", sup.warnings());
        let (mut stream, handle) = sup.start();
        let first = num(&next_message(&mut stream).await);
        assert_eq!(
            first,
            21 + round,
            "round {round} resumes after the saved cursor"
        );
        stream.ack();
        handle.shutdown().await;
        let saved = StateFile::load(&path)
            .unwrap()
            .0
            .get("ops")
            .cloned()
            .unwrap();
        assert_eq!(saved.identity, identity, "recorded at the save");
    }
    assert_eq!(server.resumes(), [Some(20), Some(21)]);
}
