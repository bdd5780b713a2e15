//! The tokio driver against an in-process scripted server, with paused time.

mod logs;
mod scripted;

use std::collections::HashSet;
use std::time::Duration;

use chat_model::{ConnectionState, DisconnectReason, Event, Kind};
use logs::Recorder;
use scripted::*;
use supervisor::{
    EventStream, Options, Outcome, Overrides, SourceState, StateFile, Supervisor, SupervisorError,
};

fn options() -> Options {
    Options {
        seed: Some(42),
        ..Options::default()
    }
}

/// Reads until `done` says so (or a generous virtual-time limit passes); returns everything.
async fn read_until(stream: &mut EventStream, mut done: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let mut out = Vec::new();
    let limit = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(limit);
    for _ in 0..100_000 {
        tokio::select! {
            e = stream.recv() => match e {
                Some(e) => {
                    let stop = done(&e);
                    out.push(e);
                    if stop {
                        return out;
                    }
                }
                None => return out,
            },
            _ = &mut limit => panic!("timed out after {} events: {:?}", out.len(), out.last()),
        }
    }
    panic!("too many events")
}

fn messages<'a>(events: &'a [Event], source: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
    events
        .iter()
        .filter(move |e| e.kind == Kind::Message && e.source == source)
}

fn lifecycle_reasons(
    events: &[Event],
    source: &str,
) -> Vec<(ConnectionState, Option<String>, Option<u64>)> {
    events
        .iter()
        .filter(|e| e.kind == Kind::Connection && e.source == source)
        .map(|e| {
            let c = e.connection.clone().unwrap();
            (c.state, c.reason, c.retry_in_ms)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn every_committed_message_is_delivered_exactly_once_across_faults() {
    let mut server = Server::new(40, Duration::from_millis(200), true);
    server.overlap = 2; // every reconnect replays two already-delivered messages
    let script = vec![
        Step::Stream(3, End::Drop),
        Step::Refuse(DisconnectReason::Server {
            status: 500,
            retry_after: None,
            message: "internal error".into(),
        }),
        Step::Refuse(DisconnectReason::from_http_status(
            503,
            "room 1",
            Some(Duration::from_secs(3)),
        )),
        Step::Stream(4, End::Stall),
        Step::Stream(
            5,
            End::Close(DisconnectReason::IdleClose(
                "HTTP 400 on an idle connection".into(),
            )),
        ),
        Step::Stream(3, End::Close(DisconnectReason::EndOfStream)),
        Step::Refuse(DisconnectReason::Network("connection refused".into())),
        Step::Stream(6, End::Drop),
    ];
    let mut sup = Supervisor::new(options()).unwrap();
    sup.add(Scripted::new("ops", &server, script), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    let events = read_until(&mut stream, |e| e.id == "m40").await;

    let ids: Vec<u64> = messages(&events, "ops").map(num).collect();
    assert_eq!(
        ids,
        (1..=40).collect::<Vec<_>>(),
        "all, in order, none twice"
    );

    let resumes = server.resumes();
    assert_eq!(resumes[0], None, "the first connect has no cursor");
    assert!(resumes.len() >= 9, "{resumes:?}");
    assert!(
        resumes.windows(2).all(|w| w[0] <= w[1]),
        "cursors never go back: {resumes:?}"
    );
    assert_eq!(
        resumes[1],
        Some(3),
        "resumes after the last delivered message"
    );

    let stats = &handle.stats()[0];
    assert!(stats.duplicates >= 8, "replayed overlap dropped: {stats:?}");
    assert_eq!(stats.delivered, 40);
    assert_eq!(stats.state, SourceState::Connected);

    let life = lifecycle_reasons(&events, "ops");
    let reason_has = |s: &str| {
        life.iter().any(|(st, r, _)| {
            *st == ConnectionState::Disconnected && r.as_deref().is_some_and(|r| r.contains(s))
        })
    };
    for s in [
        "in the middle of a frame",
        "server error 500",
        "rate limited",
        "no data or keep-alive",
        "idle connection",
        "ended the stream",
        "refused",
    ] {
        assert!(reason_has(s), "no disconnect for {s:?}: {life:#?}");
    }
    let rate_limited = life
        .iter()
        .find(|(_, r, _)| r.as_deref().is_some_and(|r| r.contains("rate limited")))
        .unwrap();
    assert!(
        rate_limited.2.unwrap() >= 3000,
        "Retry-After honoured: {rate_limited:?}"
    );
    assert!(
        !events.iter().any(|e| e.kind == Kind::Gap),
        "a replaying source has no gaps"
    );

    let report = handle.shutdown().await;
    assert_eq!(report.sources[0].outcome, Outcome::Running);
    assert!(report.state_error.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_fatal_source_stops_while_the_others_go_on() {
    let good = Server::new(10, Duration::from_millis(100), true);
    let bad = Server::new(10, Duration::from_millis(100), true);
    let mut sup = Supervisor::new(options()).unwrap();
    sup.add(
        Scripted::new(
            "bad",
            &bad,
            vec![Step::Refuse(DisconnectReason::from_http_status(
                401, "room 7", None,
            ))],
        ),
        Overrides::default(),
    )
    .unwrap();
    sup.add(
        Scripted::new("good", &good, vec![Step::Stream(4, End::Drop)]),
        Overrides::default(),
    )
    .unwrap();
    let (mut stream, handle) = sup.start();
    let events = read_until(&mut stream, |e| e.id == "m10").await;
    assert_eq!(messages(&events, "good").count(), 10);
    assert_eq!(bad.resumes().len(), 1, "401 is not retried");
    let life = lifecycle_reasons(&events, "bad");
    let gave_up = life
        .iter()
        .find(|(s, _, _)| *s == ConnectionState::GaveUp)
        .unwrap();
    assert!(
        gave_up.1.as_deref().unwrap().contains("room 7"),
        "{gave_up:?}"
    );
    let stats = handle.stats();
    assert_eq!(stats[0].state, SourceState::Failed);
    assert!(stats[0].last_error.as_deref().unwrap().contains("401"));
    assert_eq!(stats[1].state, SourceState::Connected);
    assert!(!handle.all_failed());
    let report = handle.shutdown().await;
    assert!(matches!(
        &report.sources[0].outcome,
        Outcome::Fatal(DisconnectReason::Unauthorized(_))
    ));
    assert_eq!(report.sources[1].outcome, Outcome::Running);
    assert!(!report.all_failed());
}

#[tokio::test(start_paused = true)]
async fn the_stream_ends_when_every_source_has_failed() {
    let a = Server::new(5, Duration::from_millis(100), true);
    let b = Server::new(5, Duration::from_millis(100), true);
    let mut sup = Supervisor::new(options()).unwrap();
    sup.add(
        Scripted::new(
            "a",
            &a,
            vec![Step::Refuse(DisconnectReason::Forbidden("flow x/y".into()))],
        ),
        Overrides::default(),
    )
    .unwrap();
    let refusals = (0..10)
        .map(|_| {
            Step::Refuse(DisconnectReason::Server {
                status: 502,
                retry_after: None,
                message: "bad gateway".into(),
            })
        })
        .collect();
    sup.add(
        Scripted::new("b", &b, refusals),
        Overrides {
            max_retries: Some(2),
            ..Overrides::default()
        },
    )
    .unwrap();
    let (mut stream, handle) = sup.start();
    let events = read_until(&mut stream, |_| false).await;
    assert_eq!(b.resumes().len(), 3, "first attempt + 2 retries");
    let gave_up: Vec<_> = events
        .iter()
        .filter(|e| {
            e.connection
                .as_ref()
                .is_some_and(|c| c.state == ConnectionState::GaveUp)
        })
        .map(|e| e.source.as_str())
        .collect();
    assert_eq!(gave_up.len(), 2, "{gave_up:?}");
    assert!(handle.all_failed());
    let report = handle.shutdown().await;
    assert!(report.all_failed());
    assert!(matches!(
        report.sources[1].outcome,
        Outcome::GaveUp { failures: 3, .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn no_replay_sources_mark_every_hole_with_a_gap() {
    let server = Server::new(60, Duration::from_millis(200), false);
    let script = vec![
        Step::Stream(5, End::Drop),
        Step::Stream(5, End::Stall),
        Step::Stream(5, End::Close(DisconnectReason::EndOfStream)),
    ];
    let mut sup = Supervisor::new(options()).unwrap();
    sup.add(Scripted::new("live", &server, script), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    let events = read_until(&mut stream, |e| e.id == "m60").await;
    let mut last: Option<u64> = None;
    let mut gap_since_last = false;
    let mut missing = 0;
    let mut seen = HashSet::new();
    for e in &events {
        match e.kind {
            Kind::Gap => {
                let span = e.gap.clone().unwrap();
                assert!(span.from <= span.to);
                assert!(e.text.contains("may be missing"), "{}", e.text);
                gap_since_last = true;
            }
            Kind::Message => {
                let n = num(e);
                assert!(seen.insert(n), "m{n} twice");
                if let Some(prev) = last {
                    assert!(n > prev);
                    if n != prev + 1 {
                        missing += n - prev - 1;
                        assert!(gap_since_last, "a hole before m{n} without a gap event");
                    }
                }
                last = Some(n);
                gap_since_last = false;
            }
            _ => {}
        }
    }
    assert!(missing > 0, "the script loses messages while reconnecting");
    let stats = &handle.stats()[0];
    assert_eq!(stats.gaps, 3, "one per reconnect");
    assert_eq!(stats.reconnects, 3);
    assert_eq!(events.iter().filter(|e| e.kind == Kind::Gap).count(), 3);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_slows_the_source_instead_of_queueing() {
    let server = Server::new(1000, Duration::ZERO, true);
    let mut sup = Supervisor::new(Options {
        channel_capacity: 4,
        ..options()
    })
    .unwrap();
    sup.add(Scripted::new("fast", &server, vec![]), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let forwarded = handle.stats()[0].delivered;
    assert!(
        forwarded <= 6,
        "only the channel's capacity is queued: {forwarded}"
    );
    // Read slowly: 10 s (twice the stall timeout) between batches.
    let mut events = Vec::new();
    for _ in 0..10 {
        for _ in 0..100 {
            events.push(stream.recv().await.unwrap());
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    events.extend(read_until(&mut stream, |e| e.id == "m1000").await);
    let ids: Vec<u64> = messages(&events, "fast").map(num).collect();
    assert_eq!(ids, (1..=1000).collect::<Vec<_>>());
    // Waiting for the consumer is not mistaken for a stalled server.
    assert_eq!(handle.stats()[0].attempts, 1, "{:?}", handle.stats()[0]);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_slow_consumer_is_not_mistaken_for_a_stall() {
    // Three messages at once, then keep-alives every second (stall timeout 5 s). With a
    // channel of 4 (two lifecycle events, m1, m2), the source receives m3 and then waits 30 s
    // to hand it over. When the consumer finally reads, the stall clock must restart instead
    // of counting those 30 s as the server's silence.
    let server = Server::new(3, Duration::ZERO, true);
    let mut sup = Supervisor::new(Options {
        channel_capacity: 4,
        ..options()
    })
    .unwrap();
    sup.add(Scripted::new("s", &server, vec![]), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let events = read_until(&mut stream, |e| e.id == "m3").await;
    assert_eq!(messages(&events, "s").count(), 3);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = &handle.stats()[0];
    assert_eq!(stats.attempts, 1, "{stats:?}");
    assert_eq!(stats.state, SourceState::Connected);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_completes_while_a_source_waits_on_a_full_channel() {
    let server = Server::new(1000, Duration::ZERO, true);
    let mut sup = Supervisor::new(Options {
        channel_capacity: 1,
        ..options()
    })
    .unwrap();
    sup.add(Scripted::new("fast", &server, vec![]), Overrides::default())
        .unwrap();
    sup.add(
        Scripted::new(
            "waiting",
            &Server::new(1, Duration::ZERO, true),
            vec![Step::Refuse(DisconnectReason::Network("down".into()))],
        ),
        Overrides {
            backoff_initial: Some(Duration::from_secs(3600)),
            backoff_max: Some(Duration::from_secs(7200)),
            ..Overrides::default()
        },
    )
    .unwrap();
    let (_stream, handle) = sup.start();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = tokio::time::timeout(Duration::from_secs(60), handle.shutdown())
        .await
        .expect("shutdown does not hang");
    assert!(report.sources.iter().all(|s| s.outcome == Outcome::Running));
    assert_eq!(report.sources[1].stats.state, SourceState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn keep_alives_keep_a_quiet_stream_while_a_silent_one_is_replaced() {
    // 3 messages, then keep-alives every second (stall timeout 5 s) for a minute.
    let quiet = Server::new(3, Duration::from_millis(100), true);
    // 2 messages, then silence: replaced after 5 s, resumed from m2.
    let silent = Server::new(6, Duration::from_millis(100), true);
    let mut sup = Supervisor::new(options()).unwrap();
    sup.add(Scripted::new("quiet", &quiet, vec![]), Overrides::default())
        .unwrap();
    sup.add(
        Scripted::new("silent", &silent, vec![Step::Stream(2, End::Stall)]),
        Overrides::default(),
    )
    .unwrap();
    let (mut stream, handle) = sup.start();
    let events = read_until(&mut stream, |e| e.id == "m6").await;
    let life = lifecycle_reasons(&events, "silent");
    assert!(
        life.iter()
            .any(|(s, r, _)| *s == ConnectionState::Disconnected
                && r.as_deref()
                    .is_some_and(|r| r.contains("no data or keep-alive for 5.0s"))),
        "{life:?}"
    );
    assert_eq!(silent.resumes(), [None, Some(2)]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let stats = handle.stats();
    assert_eq!(
        stats[0].attempts, 1,
        "the keep-alive stream was never replaced"
    );
    assert_eq!(stats[0].state, SourceState::Connected);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_source_fails_alone() {
    let good = Server::new(5, Duration::from_millis(100), true);
    let mut sup = Supervisor::new(options()).unwrap();
    sup.add(
        Scripted::new("buggy", &good, vec![Step::Panic]),
        Overrides::default(),
    )
    .unwrap();
    sup.add(Scripted::new("good", &good, vec![]), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    let events = read_until(&mut stream, |e| e.id == "m5" && e.source == "good").await;
    assert_eq!(messages(&events, "good").count(), 5);
    for _ in 0..1000 {
        if handle.stats()[0].state == SourceState::Failed {
            break;
        }
        tokio::task::yield_now().await;
    }
    let stats = handle.stats();
    assert_eq!(stats[0].state, SourceState::Failed);
    assert!(stats[0].last_error.as_deref().unwrap().contains("crashed"));
    let report = handle.shutdown().await;
    assert!(matches!(&report.sources[0].outcome, Outcome::Panicked(m) if m.contains("crashed")));
}

#[tokio::test]
async fn duplicate_names_and_unworkable_policies_are_refused() {
    let server = Server::new(1, Duration::ZERO, true);
    let mut sup = Supervisor::new(options()).unwrap();
    sup.add(Scripted::new("ops", &server, vec![]), Overrides::default())
        .unwrap();
    let err = sup
        .add(Scripted::new("ops", &server, vec![]), Overrides::default())
        .unwrap_err();
    assert!(matches!(err, SupervisorError::DuplicateName { .. }));
    assert!(err.to_string().contains("\"ops\""));
    let err = sup
        .add(
            Scripted::new("other", &server, vec![]),
            Overrides {
                backoff_initial: Some(Duration::from_secs(600)),
                ..Overrides::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, SupervisorError::InvalidPolicy { .. }));
    assert!(
        err.to_string().contains("other") && err.to_string().contains("maximum"),
        "{err}"
    );
}

#[test]
fn the_public_types_can_move_between_tasks() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Supervisor>();
    send::<EventStream>();
    send::<supervisor::SupervisorHandle>();
    sync::<supervisor::SupervisorHandle>();
    send::<supervisor::Report>();
}

fn saved_last_id(path: &std::path::Path, source: &str) -> Option<u64> {
    let (state, _) = StateFile::load(path).ok()?;
    state
        .get(source)?
        .cursor
        .as_ref()
        .and_then(|c| c.as_json()["last_id"].as_u64())
}

/// Polls the state file (real time, bounded) until it holds `last_id` `want` for `source`.
async fn file_holds(path: &std::path::Path, source: &str, want: u64) {
    for _ in 0..300 {
        if path.exists() && saved_last_id(path, source) == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "the state file never held last_id {want}: {:?}",
        saved_last_id(path, source)
    );
}

#[tokio::test(start_paused = true)]
async fn a_start_from_now_baseline_is_durable_at_once_and_later_positions_wait_for_the_saver() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut server = Server::new(40, Duration::from_millis(100), true);
    server.from_now = true;
    server.cursor_only_every = Some(5);
    // Ten messages are published before the source starts: its baseline is after m10.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let mut sup = Supervisor::new(Options {
        state_file: Some(path.clone()),
        save_interval: Duration::from_secs(86_400),
        ..options()
    })
    .unwrap();
    sup.add(Scripted::new("ops", &server, vec![]), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    // Nobody reads or acks yet: the baseline is saved anyway, at once.
    file_holds(&path, "ops", 10).await;

    // Deliveries (and the bare positions after m15 and m20) are saved by the saver, whose
    // interval is a day: the file keeps the baseline meanwhile.
    let events = read_until(&mut stream, |e| e.id == "m24").await;
    let ids: Vec<u64> = messages(&events, "ops").map(num).collect();
    assert_eq!(ids, [11, 12, 13, 14, 16, 17, 18, 19, 21, 22, 23, 24]);
    stream.ack();
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        saved_last_id(&path, "ops"),
        Some(10),
        "no save per position"
    );
    // A clean shutdown saves what was taken (m24, and the bare position m25 after it).
    handle.shutdown().await;
    let last = saved_last_id(&path, "ops").unwrap();
    assert!(last >= 24, "{last}");
    assert_eq!(server.resumes(), [None]);
}

#[tokio::test(start_paused = true)]
async fn a_new_baseline_after_undelivered_events_waits_for_them() {
    // A connection forwards m1..m3 (nobody reads them yet) and drops; the reconnect starts
    // from a new position. That position must not become durable before the consumer has
    // taken m1..m3, and then it is saved without waiting for the interval.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut server = Server::new(100, Duration::from_millis(100), true);
    server.from_now = true;
    server.rebaseline = true;
    let mut sup = Supervisor::new(Options {
        state_file: Some(path.clone()),
        save_interval: Duration::from_secs(86_400),
        ..options()
    })
    .unwrap();
    sup.add(
        Scripted::new(
            "ops",
            &server,
            vec![Step::Stream(3, End::Drop), Step::Stream(1, End::Stall)],
        ),
        Overrides::default(),
    )
    .unwrap();
    let (mut stream, handle) = sup.start();
    file_holds(&path, "ops", 0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.resumes(), [None, Some(3)], "reconnected meanwhile");
    assert_eq!(
        saved_last_id(&path, "ops"),
        Some(0),
        "the new position waits for m1..m3"
    );
    let events = read_until(&mut stream, |e| e.id == "m3").await;
    assert_eq!(
        messages(&events, "ops").map(num).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Taking m3 (the next recv) reaches the new baseline: saved at once.
    let next = read_until(&mut stream, |e| e.kind == Kind::Message).await;
    let first_after = num(next.last().unwrap());
    assert!(
        first_after > 4,
        "the reconnect started from now: m{first_after}"
    );
    file_holds(&path, "ops", first_after - 1).await;
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_server_resending_delivered_events_is_warned_about_once_per_connection() {
    let (logs, _guard) = Recorder::install();
    let mut server = Server::new(60, Duration::from_millis(100), true);
    // Every reconnect resends the last twelve messages already delivered.
    server.overlap = 12;
    let script = vec![Step::Stream(15, End::Drop), Step::Stream(15, End::Drop)];
    let mut sup = Supervisor::new(options()).unwrap();
    sup.add(Scripted::new("ops", &server, script), Overrides::default())
        .unwrap();
    let (mut stream, handle) = sup.start();
    let events = read_until(&mut stream, |e| e.id == "m40").await;
    let ids: Vec<u64> = messages(&events, "ops").map(num).collect();
    assert_eq!(ids, (1..=40).collect::<Vec<_>>());
    let warned = logs.warnings_with("already delivered");
    assert_eq!(warned.len(), 2, "once per reconnect: {warned:#?}");
    assert!(warned.iter().all(|l| l.source.as_deref() == Some("ops")));
    assert!(
        warned[0].message.contains("state file"),
        "says what to do: {}",
        warned[0].message
    );
    handle.shutdown().await;

    // An ordinary overlap (two resent) says nothing.
    let (logs, _guard) = Recorder::install();
    let mut server = Server::new(20, Duration::from_millis(100), true);
    server.overlap = 2;
    let mut sup = Supervisor::new(options()).unwrap();
    sup.add(
        Scripted::new("ops", &server, vec![Step::Stream(5, End::Drop)]),
        Overrides::default(),
    )
    .unwrap();
    let (mut stream, handle) = sup.start();
    read_until(&mut stream, |e| e.id == "m20").await;
    assert!(logs.warnings_with("already delivered").is_empty());
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn absurd_server_delays_are_capped_and_the_cap_is_logged() {
    let (logs, _guard) = Recorder::install();
    let server = Server::new(3, Duration::from_millis(100), true);
    let script = vec![Step::Refuse(DisconnectReason::RateLimited {
        retry_after: Some(Duration::from_secs(999_999)),
    })];
    let mut sup = Supervisor::new(options()).unwrap();
    sup.add(
        Scripted::new("ops", &server, script),
        Overrides {
            max_server_delay: Some(Duration::from_secs(30)),
            ..Overrides::default()
        },
    )
    .unwrap();
    let (mut stream, handle) = sup.start();
    let started = tokio::time::Instant::now();
    let events = read_until(&mut stream, |e| e.id == "m3").await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(40),
        "reconnected after the 30 s cap, not 11.6 days: {waited:?}"
    );
    let life = lifecycle_reasons(&events, "ops");
    let limited = life
        .iter()
        .find(|(_, r, _)| r.as_deref().is_some_and(|r| r.contains("rate limited")))
        .unwrap();
    let ms = limited.2.unwrap();
    assert!((30_000..=31_000).contains(&ms), "{limited:?}");
    let warned = logs.warnings_with("999999.0s");
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert_eq!(warned[0].source.as_deref(), Some("ops"));
    assert!(warned[0].message.contains("30.0s"), "{}", warned[0].message);
    handle.shutdown().await;
}
