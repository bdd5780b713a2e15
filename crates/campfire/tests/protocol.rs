//! The client against the Campfire emulator: mapping, keep-alives, faults, resume/backfill.

use std::sync::Arc;
use std::time::Duration;

use campfire::{CampfireCursor, Client, ClientConfig, LiveStream};
use chat_model::{DisconnectReason, Disposition, Event, Kind, SourceItem};
use emulator::campfire::{Config, DEFAULT_ROOM, DEFAULT_TOKEN, Emulator};
use emulator::traffic::PEOPLE;
use emulator::{Fault, FaultPlan};

const ROOM: u64 = DEFAULT_ROOM;
/// Generous bound for "eventually" on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

fn quiet(faults: Vec<Vec<Fault>>) -> Config {
    Config {
        rate: 0.0,
        keepalive: Duration::from_millis(100),
        faults: Arc::new(FaultPlan::script(faults)),
        ..Config::default()
    }
}

fn client(emu: &Emulator) -> Client {
    let mut c = ClientConfig::new(DEFAULT_TOKEN, ROOM);
    c.url = emu.url();
    c.source = "ops".into();
    c.idle_timeout = Some(Duration::from_secs(10));
    Client::new(c).unwrap()
}

fn client_with(emu: &Emulator, f: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut c = ClientConfig::new(DEFAULT_TOKEN, ROOM);
    c.url = emu.url();
    c.source = "ops".into();
    c.idle_timeout = Some(Duration::from_secs(10));
    f(&mut c);
    Client::new(c).unwrap()
}

/// What one connection yielded until `n` events arrived or it ended.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<(Event, Option<CampfireCursor>)>,
    keepalives: usize,
    malformed: Vec<String>,
    cursors: Vec<CampfireCursor>,
    end: Option<DisconnectReason>,
}

async fn read(stream: &mut LiveStream, n: usize) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while seen.events.len() < n {
        let item = match tokio::time::timeout_at(deadline, stream.next_item()).await {
            Ok(item) => item,
            Err(_) => panic!(
                "timed out after {} events (ids {:?}), {} keep-alives, malformed {:?}",
                seen.events.len(),
                native_ids(&seen),
                seen.keepalives,
                seen.malformed
            ),
        };
        match item {
            Ok(SourceItem::Event { event, cursor }) => {
                let c = cursor.map(|c| CampfireCursor::from_cursor(&c).unwrap());
                seen.events.push((event, c));
            }
            Ok(SourceItem::KeepAlive) => seen.keepalives += 1,
            Ok(SourceItem::Malformed { error }) => seen.malformed.push(error),
            Ok(SourceItem::Cursor(c)) => {
                seen.cursors.push(CampfireCursor::from_cursor(&c).unwrap())
            }
            Ok(other) => panic!("unexpected item {other:?}"),
            Err(reason) => {
                seen.end = Some(reason);
                break;
            }
        }
    }
    seen
}

async fn read_until_end(stream: &mut LiveStream) -> Seen {
    read(stream, usize::MAX).await
}

fn native_ids(seen: &Seen) -> Vec<u64> {
    seen.events
        .iter()
        .map(|(e, _)| e.native_id.as_ref().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn every_message_type_is_mapped() {
    let emu = Emulator::start(quiet(vec![])).await.unwrap();
    let mut stream = client(&emu).connect(None).await.unwrap();
    let types = [
        ("TextMessage", Kind::Message),
        ("PasteMessage", Kind::Paste),
        ("SoundMessage", Kind::System),
        ("AdvertisementMessage", Kind::System),
        ("AllowGuestsMessage", Kind::System),
        ("DisallowGuestsMessage", Kind::System),
        ("IdleMessage", Kind::Presence),
        ("KickMessage", Kind::Kick),
        ("LeaveMessage", Kind::Leave),
        ("EnterMessage", Kind::Enter),
        ("SystemMessage", Kind::System),
        ("TimestampMessage", Kind::System),
        ("TopicChangeMessage", Kind::Topic),
        ("UnidleMessage", Kind::Presence),
        ("LockMessage", Kind::System),
        ("UnlockMessage", Kind::System),
        ("UploadMessage", Kind::Upload),
        ("ConferenceCreatedMessage", Kind::System),
        ("ConferenceFinishedMessage", Kind::System),
        ("TweetMessage", Kind::Message),
        ("HologramMessage", Kind::System),
    ];
    for (t, _) in types {
        let (body, user) = match t {
            "TimestampMessage" => (None, None),
            _ => (Some("body"), Some(3)),
        };
        emu.inject(ROOM, t, body, user);
    }
    let seen = read(&mut stream, types.len()).await;
    assert_eq!(seen.end, None);
    let committed = emu.committed();
    for (((event, cursor), (t, kind)), c) in seen.events.iter().zip(types).zip(&committed) {
        assert_eq!(event.kind, kind, "{t}");
        assert_eq!(event.detail.as_ref().unwrap()["type"], t);
        assert_eq!(event.id, format!("campfire:{ROOM}:{}", c.id));
        assert_eq!(event.room, ROOM.to_string());
        assert_eq!(event.source, "ops");
        assert_eq!(cursor.unwrap().last_message_id, c.id);
        assert_eq!(event.raw.as_ref().unwrap()["type"], t);
        // The stream's time has no zone and is read as UTC.
        assert_eq!(event.at.timestamp(), c.created_at.timestamp());
        if t == "TimestampMessage" {
            assert_eq!(event.author.id, None);
            assert_eq!(event.text, "");
        } else {
            assert_eq!(event.author.id.as_deref(), Some("3"));
            assert_eq!(event.author.name.as_deref(), Some(PEOPLE[2]));
            assert_eq!(event.text, "body");
        }
    }
    emu.stop().await;
}

#[tokio::test]
async fn generated_traffic_decodes_without_errors_and_keepalives_flow() {
    let emu = Emulator::start(Config {
        rate: 0.0,
        keepalive: Duration::from_millis(30),
        crlf: true,
        ..Config::default()
    })
    .await
    .unwrap();
    let mut stream = client(&emu).connect(None).await.unwrap();
    for _ in 0..300 {
        emu.inject_generated(ROOM);
    }
    let seen = read(&mut stream, 300).await;
    assert!(seen.malformed.is_empty(), "{:?}", seen.malformed);
    let want: Vec<u64> = emu.committed().iter().map(|c| c.id).collect();
    assert_eq!(native_ids(&seen), want);
    // Some tweets carry their text; uploads their URL.
    for ((e, _), c) in seen.events.iter().zip(emu.committed()) {
        if c.kind == "TweetMessage" {
            assert_eq!(e.text, c.extra["tweet"]["message"].as_str().unwrap());
        }
        if c.kind == "TextMessage" {
            assert_eq!(Some(e.text.as_str()), c.body.as_deref());
            assert_eq!(e.tags.contains(&"starred".to_owned()), c.starred);
        }
    }
    // Keep-alives arrive while the room is quiet.
    let more = tokio::time::timeout(PATIENCE, async {
        let mut n = 0;
        while n < 3 {
            if let Ok(SourceItem::KeepAlive) = stream.next_item().await {
                n += 1;
            }
        }
    })
    .await;
    assert!(more.is_ok(), "no keep-alives");
    emu.stop().await;
}

#[tokio::test]
async fn unauthorized_forbidden_and_missing_rooms_are_clear_errors() {
    let emu = Emulator::start(Config {
        rooms: vec![ROOM, 222],
        restricted_rooms: vec![222],
        ..quiet(vec![])
    })
    .await
    .unwrap();
    let bad = client_with(&emu, |c| c.token = "wrong".into());
    let e = bad.connect(None).await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    let reason = DisconnectReason::from(e);
    assert!(matches!(reason, DisconnectReason::Unauthorized(_)));
    assert!(reason.is_fatal());
    assert!(
        reason.to_string().contains(&format!("room {ROOM}")),
        "{reason}"
    );
    assert!(
        !reason.to_string().contains("wrong"),
        "token leaked: {reason}"
    );

    let forbidden = client_with(&emu, |c| c.room = 222);
    let reason = DisconnectReason::from(forbidden.connect(None).await.unwrap_err());
    assert!(matches!(reason, DisconnectReason::Forbidden(_)), "{reason}");
    assert!(reason.to_string().contains("room 222"));

    let missing = client_with(&emu, |c| c.room = 999);
    let reason = DisconnectReason::from(missing.connect(None).await.unwrap_err());
    assert!(matches!(reason, DisconnectReason::NotFound(_)), "{reason}");
    assert!(reason.to_string().contains("room 999"));
    emu.stop().await;
}

#[tokio::test]
async fn server_statuses_map_to_reasons() {
    let emu = Emulator::start(quiet(vec![
        vec![Fault::Status {
            code: 400,
            retry_after: None,
        }],
        vec![Fault::Status {
            code: 500,
            retry_after: None,
        }],
        vec![Fault::Status {
            code: 503,
            retry_after: Some(4),
        }],
        vec![Fault::Refuse],
        vec![Fault::Delay(Duration::from_millis(200))],
    ]))
    .await
    .unwrap();
    let c = client(&emu);
    let idle = DisconnectReason::from(c.connect(None).await.unwrap_err());
    assert!(matches!(idle, DisconnectReason::IdleClose(_)), "{idle}");
    assert_eq!(idle.disposition(), Disposition::Prompt);
    let err = DisconnectReason::from(c.connect(None).await.unwrap_err());
    assert!(
        matches!(err, DisconnectReason::Server { status: 500, .. }),
        "{err}"
    );
    let busy = DisconnectReason::from(c.connect(None).await.unwrap_err());
    assert_eq!(
        busy.disposition(),
        Disposition::After(Duration::from_secs(4))
    );
    // A refused connection is a network failure, at connect or on the first read.
    match c.connect(None).await {
        Err(e) => assert!(
            matches!(DisconnectReason::from(e), DisconnectReason::Network(_)),
            "refuse"
        ),
        Ok(mut s) => {
            let seen = read_until_end(&mut s).await;
            assert!(
                matches!(seen.end, Some(DisconnectReason::Network(_))),
                "{seen:?}"
            );
        }
    }
    // A slow answer still works.
    let mut s = c.connect(None).await.unwrap();
    emu.inject_text(ROOM, "late but fine");
    let seen = read(&mut s, 1).await;
    assert_eq!(seen.events[0].0.text, "late but fine");
    emu.stop().await;
}

/// Connects again and again, resuming from the last cursor, until `want` messages arrived;
/// returns every event in delivery order.
async fn supervise(client: &Client, want: usize) -> (Vec<Event>, Vec<String>) {
    let mut cursor: Option<CampfireCursor> = None;
    let mut events = Vec::new();
    let mut ends = Vec::new();
    for _attempt in 0..20 {
        let mut stream = match client.connect(cursor).await {
            Ok(s) => s,
            Err(e) => {
                ends.push(e.to_string());
                continue;
            }
        };
        let seen = read(&mut stream, want - events.len()).await;
        eprintln!(
            "connection: cursor {cursor:?}, ids {:?}, end {:?}",
            native_ids(&seen),
            seen.end
        );
        if let Some(c) = seen.cursors.last() {
            cursor = cursor.or(Some(*c));
        }
        for (e, c) in seen.events {
            cursor = c.or(cursor);
            events.push(e);
        }
        if let Some(end) = seen.end {
            ends.push(end.to_string());
        }
        if events.len() >= want {
            return (events, ends);
        }
    }
    panic!(
        "gave up after 20 attempts: {} events, ends {ends:?}",
        events.len()
    );
}

#[tokio::test]
async fn drop_mid_frame_is_closed_by_backfill_exactly_once() {
    // First stream: cut in the middle of the third message; second: healthy.
    let emu = Emulator::start(quiet(vec![])).await.unwrap();
    let c = client(&emu);
    let mut first = c.connect(None).await.unwrap();
    let a = emu.inject_text(ROOM, "one");
    let seen = read(&mut first, 1).await;
    assert_eq!(native_ids(&seen), vec![a]);
    let cursor = seen.events[0].1.unwrap();
    drop(first);
    // Messages posted while disconnected.
    let missed: Vec<u64> = (0..5)
        .map(|i| emu.inject_text(ROOM, &format!("missed {i}")))
        .collect();
    let mut second = c.connect(Some(cursor)).await.unwrap();
    let live = emu.inject_text(ROOM, "live again");
    let seen = read(&mut second, 6).await;
    let mut want = missed.clone();
    want.push(live);
    assert_eq!(native_ids(&seen), want);
    // The first connection asked for the latest id (none: the room was empty) and backfilled
    // from it; the second backfilled from the cursor.
    assert_eq!(emu.since_message_ids(), vec![None, Some(0), Some(a)]);
    assert_eq!(seen.events.last().unwrap().1.unwrap().last_message_id, live);
    emu.stop().await;
}

#[tokio::test]
async fn faults_survived_with_nothing_lost_or_repeated() {
    let emu = Emulator::start(Config {
        rate: 0.0,
        keepalive: Duration::from_millis(100),
        faults: Arc::new(FaultPlan::script([
            vec![Fault::DropAfterBytes(250)],
            vec![Fault::Status {
                code: 400,
                retry_after: None,
            }],
            vec![
                Fault::Malformed,
                Fault::OneByteWrites,
                Fault::DropAfterBytes(700),
            ],
            vec![Fault::Status {
                code: 503,
                retry_after: Some(1),
            }],
            vec![Fault::Oversize(4096)],
        ])),
        ..Config::default()
    })
    .await
    .unwrap();
    let c = client_with(&emu, |c| {
        c.limits = stream_frame::Limits::with_max_frame(2048)
    });
    // A producer posting while the client reconnects.
    let total = 40;
    let inject = async {
        // Start posting once the first stream is open: a fresh client starts "now".
        for _ in 0..2000 {
            if emu.streams_served() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for i in 0..total {
            emu.inject_text(ROOM, &format!("message {i}"));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    let ((events, ends), ()) = tokio::join!(supervise(&c, total), inject);
    let want: Vec<String> = emu
        .committed()
        .iter()
        .map(|m| format!("campfire:{ROOM}:{}", m.id))
        .collect();
    let got: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, want, "ends: {ends:?}");
    assert!(ends.len() >= 3, "faults were not hit: {ends:?}");
    // The first connection learned the latest id; every reconnect resumed from a cursor
    // (a request without one is only ever the one-message look at the latest id).
    let since = emu.since_message_ids();
    assert_eq!(since[0], None, "{since:?}");
    let recent: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/recent.json"))
        .collect();
    assert!(
        recent
            .iter()
            .all(|r| r.since_message_id.is_some() || r.limit == Some(1)),
        "{recent:?}"
    );
    assert!(since.iter().flatten().count() >= 2, "{since:?}");
    assert!(ends.iter().any(|e| e.contains("HTTP 400")), "{ends:?}");
    assert!(ends.iter().any(|e| e.contains("HTTP 503")), "{ends:?}");
    emu.stop().await;
}

#[tokio::test]
async fn malformed_and_oversize_frames_are_skipped_with_offsets() {
    let emu = Emulator::start(quiet(vec![vec![Fault::Malformed, Fault::Oversize(5000)]]))
        .await
        .unwrap();
    let c = client_with(&emu, |c| {
        c.limits = stream_frame::Limits::with_max_frame(1024)
    });
    let mut s = c.connect(None).await.unwrap();
    let id = emu.inject_text(ROOM, "after the junk");
    let seen = read(&mut s, 1).await;
    assert_eq!(native_ids(&seen), vec![id]);
    assert_eq!(seen.malformed.len(), 2, "{:?}", seen.malformed);
    assert!(
        seen.malformed[0].contains("offset 0"),
        "{}",
        seen.malformed[0]
    );
    assert!(seen.malformed[0].contains(&format!("room {ROOM}")));
    assert!(
        seen.malformed[1].contains("1024-byte limit"),
        "{}",
        seen.malformed[1]
    );
    emu.stop().await;
}

#[tokio::test]
async fn stalls_are_detected_and_keepalives_prevent_false_alarms() {
    let emu = Emulator::start(quiet(vec![
        vec![Fault::Stall {
            keepalives: false,
            duration: None,
        }],
        vec![Fault::Stall {
            keepalives: true,
            duration: Some(Duration::from_millis(1500)),
        }],
    ]))
    .await
    .unwrap();
    let c = client_with(&emu, |c| c.idle_timeout = Some(Duration::from_millis(800)));
    let mut dead = c.connect(None).await.unwrap();
    let seen = read_until_end(&mut dead).await;
    assert!(
        matches!(seen.end, Some(DisconnectReason::Stalled { .. })),
        "{seen:?}"
    );
    // Keep-alives every 100 ms keep an 800 ms idle timeout happy through a 1.5 s stall.
    let mut quiet_stream = c.connect(None).await.unwrap();
    let id = emu.inject_text(ROOM, "after the stall");
    let seen = read(&mut quiet_stream, 1).await;
    assert_eq!(seen.end, None);
    assert_eq!(native_ids(&seen), vec![id]);
    assert!(seen.keepalives >= 3, "{}", seen.keepalives);
    emu.stop().await;
}

#[tokio::test]
async fn join_before_streaming_after_the_start_position() {
    // The start position is the room's latest id before joining: the join's own
    // EnterMessage is after the start, so it is delivered like anything else posted since.
    let emu = Emulator::start(Config {
        require_join: true,
        ..quiet(vec![])
    })
    .await
    .unwrap();
    let joining = client_with(&emu, |c| {
        c.join = true;
        c.api_url = Some(emu.url());
    });
    let mut s = joining.connect(None).await.unwrap();
    assert!(emu.has_joined(DEFAULT_TOKEN, ROOM));
    let id = emu.inject_text(ROOM, "after joining");
    let seen = read(&mut s, 2).await;
    let enter = emu.committed()[0].clone();
    assert_eq!(enter.kind, "EnterMessage");
    assert_eq!(native_ids(&seen), vec![enter.id, id]);
    emu.stop().await;
}

#[tokio::test]
async fn a_failed_join_does_not_move_the_start_position() {
    // The first connect's join fails (a 500 on the REST call after the start position was
    // learned); what is posted before the next connect joins is backfilled, not lost.
    let emu = Emulator::start(Config {
        require_join: true,
        rest_faults: Arc::new(FaultPlan::script([
            vec![],
            vec![Fault::Status {
                code: 500,
                retry_after: None,
            }],
        ])),
        ..quiet(vec![])
    })
    .await
    .unwrap();
    let joining = client_with(&emu, |c| c.join = true);
    let before = emu.inject_text(ROOM, "before the start");
    let e = joining.connect(None).await.unwrap_err();
    assert!(
        matches!(e, campfire::Error::Status { status: 500, .. }),
        "{e}"
    );
    let missed = emu.inject_text(ROOM, "while the join failed");
    let mut s = joining.connect(None).await.unwrap();
    let seen = read(&mut s, 2).await;
    let enter = emu
        .committed()
        .into_iter()
        .find(|m| m.kind == "EnterMessage")
        .expect("the second join entered the room");
    assert_eq!(native_ids(&seen), vec![missed, enter.id]);
    assert!(!native_ids(&seen).contains(&before));
    emu.stop().await;
}

#[tokio::test]
async fn a_refused_stream_joins_the_room_and_streams() {
    let emu = Emulator::start(Config {
        require_join: true,
        ..quiet(vec![])
    })
    .await
    .unwrap();
    // `join` is off, but the REST API is known: refused with 403, the client joins and asks
    // again.
    let mut s = client(&emu).connect(None).await.unwrap();
    assert!(emu.has_joined(DEFAULT_TOKEN, ROOM));
    let id = emu.inject_text(ROOM, "after joining");
    // The join's own EnterMessage came after the start: backfilled, then the live message.
    let seen = read(&mut s, 2).await;
    let enter = emu.committed()[0].clone();
    assert_eq!(enter.kind, "EnterMessage");
    assert_eq!(native_ids(&seen), vec![enter.id, id]);
    let calls: Vec<(String, u16)> = emu
        .requests()
        .into_iter()
        .filter(|r| !r.path.ends_with("recent.json") && !r.path.starts_with("/users/"))
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        calls,
        vec![
            (format!("/room/{ROOM}/live.json"), 403),
            (format!("/room/{ROOM}/join.json"), 200),
            (format!("/room/{ROOM}/live.json"), 200),
        ]
    );
    emu.stop().await;

    // Joining itself refused: the join's own error, typed and naming the room.
    let emu = Emulator::start(Config {
        require_join: true,
        rest_faults: Arc::new(FaultPlan::script([
            vec![],
            vec![Fault::Status {
                code: 403,
                retry_after: None,
            }],
        ])),
        ..quiet(vec![])
    })
    .await
    .unwrap();
    let e = client(&emu).connect(None).await.unwrap_err();
    assert!(
        matches!(
            e,
            campfire::Error::Status {
                endpoint: campfire::Endpoint::Join,
                status: 403,
                ..
            }
        ),
        "{e}"
    );
    let reason = DisconnectReason::from(e);
    assert!(matches!(reason, DisconnectReason::Forbidden(_)), "{reason}");
    assert!(
        reason.to_string().contains(&format!("room {ROOM}")),
        "{reason}"
    );
    emu.stop().await;
}

#[tokio::test]
async fn quiet_periods_longer_than_every_timer_keep_the_connection() {
    let emu = Emulator::start(quiet(vec![])).await.unwrap();
    let c = client_with(&emu, |c| c.idle_timeout = Some(Duration::from_millis(600)));
    let mut s = c.connect(None).await.unwrap();
    // Five idle timeouts of keep-alive spaces only.
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut keepalives = 0;
    while tokio::time::Instant::now() < quiet_until {
        match tokio::time::timeout_at(quiet_until, s.next_item()).await {
            Err(_) => break,
            Ok(Ok(SourceItem::KeepAlive)) => keepalives += 1,
            Ok(Ok(SourceItem::Cursor(_))) => {}
            Ok(other) => panic!("a quiet room ended or sent {other:?}"),
        }
    }
    assert!(keepalives >= 10, "{keepalives}");
    let id = emu.inject_text(ROOM, "still here");
    let seen = read(&mut s, 1).await;
    assert_eq!(native_ids(&seen), vec![id]);
    assert_eq!(emu.streams_served(), 1);
    emu.stop().await;
}

#[tokio::test]
async fn a_first_stream_that_never_answers_or_is_refused_keeps_its_start() {
    for first in [
        vec![Fault::Delay(Duration::from_secs(4))],
        vec![Fault::Refuse],
    ] {
        let emu = Emulator::start(quiet(vec![first.clone()])).await.unwrap();
        let before = emu.inject_text(ROOM, "before the start");
        let c = client(&emu);
        // The first stream: no answer within the caller's patience, or refused.
        match tokio::time::timeout(Duration::from_secs(1), c.connect(None)).await {
            Err(_) => {}
            Ok(Err(e)) => assert!(
                matches!(DisconnectReason::from(e), DisconnectReason::Network(_)),
                "{first:?}"
            ),
            Ok(Ok(mut s)) => {
                let seen = read_until_end(&mut s).await;
                assert!(seen.events.is_empty(), "{seen:?}");
            }
        }
        assert_eq!(c.baseline().unwrap().last_message_id, before);
        // Posted while no stream is open.
        let missed: Vec<u64> = (0..9)
            .map(|i| emu.inject_text(ROOM, &format!("meanwhile {i}")))
            .collect();
        let mut s = c.connect(None).await.unwrap();
        let live = emu.inject_text(ROOM, "live");
        let seen = read(&mut s, 10).await;
        let mut want = missed.clone();
        want.push(live);
        assert_eq!(native_ids(&seen), want, "{first:?}");
        // The start came first, as a cursor, on both connections it was handed to.
        assert_eq!(
            seen.cursors,
            vec![CampfireCursor {
                last_message_id: before
            }]
        );
        assert_eq!(
            emu.since_message_ids(),
            vec![None, Some(before)],
            "{first:?}"
        );
        emu.stop().await;
    }
}

#[tokio::test]
async fn ids_that_went_backwards_take_the_servers_position() {
    let emu = Emulator::start(Config {
        first_id: Some(1000),
        ..quiet(vec![])
    })
    .await
    .unwrap();
    let old = emu.inject_text(ROOM, "on the reset server");
    // A cursor saved from the server before its reset, far above its new ids.
    let stale = CampfireCursor {
        last_message_id: 5_000_000,
    };
    let mut s = client(&emu).connect(Some(stale)).await.unwrap();
    let fresh = emu.inject_text(ROOM, "new after the reset");
    let seen = read(&mut s, 1).await;
    assert_eq!(native_ids(&seen), vec![fresh]);
    assert_eq!(
        seen.cursors,
        vec![CampfireCursor {
            last_message_id: old
        }]
    );
    assert_eq!(seen.events[0].1.unwrap().last_message_id, fresh);
    assert_eq!(
        emu.since_message_ids(),
        vec![Some(stale.last_message_id), None]
    );
    // A cursor the server is ahead of needs no such look.
    let mut s = client(&emu)
        .connect(Some(CampfireCursor {
            last_message_id: fresh,
        }))
        .await
        .unwrap();
    let next = emu.inject_text(ROOM, "next");
    let seen = read(&mut s, 1).await;
    assert_eq!(native_ids(&seen), vec![next]);
    assert!(seen.cursors.is_empty());
    emu.stop().await;
}

#[tokio::test]
async fn multi_line_and_crlf_layouts_decode_every_message() {
    use emulator::campfire::Layout;
    for (layout, crlf) in [
        (Layout::Document, false),
        (Layout::Pretty, false),
        (Layout::Pretty, true),
    ] {
        let emu = Emulator::start(Config {
            layout,
            crlf,
            keepalive: Duration::from_millis(20),
            ..quiet(vec![])
        })
        .await
        .unwrap();
        let mut s = client(&emu).connect(None).await.unwrap();
        for _ in 0..120 {
            emu.inject_generated(ROOM);
        }
        let seen = read(&mut s, 120).await;
        assert!(
            seen.malformed.is_empty(),
            "{layout:?}: {:?}",
            seen.malformed
        );
        let want: Vec<u64> = emu.committed().iter().map(|c| c.id).collect();
        assert_eq!(native_ids(&seen), want, "{layout:?}");
        for ((e, _), c) in seen.events.iter().zip(emu.committed()) {
            if c.kind == "PasteMessage" {
                assert!(e.text.contains('\n'), "{:?}", e.text);
                assert_eq!(Some(e.text.as_str()), c.body.as_deref());
            }
        }
        emu.stop().await;
    }
}

#[tokio::test]
async fn backfill_pages_and_failures() {
    let emu = Emulator::start(Config {
        rest_faults: Arc::new(FaultPlan::script([vec![Fault::Status {
            code: 500,
            retry_after: None,
        }]])),
        ..quiet(vec![])
    })
    .await
    .unwrap();
    let first = emu.inject_text(ROOM, "seen");
    let missed: Vec<u64> = (0..250)
        .map(|i| emu.inject_text(ROOM, &format!("m{i}")))
        .collect();
    let c = client(&emu);
    let cursor = CampfireCursor {
        last_message_id: first,
    };
    // The backfill request fails: the connection fails rather than skip the gap.
    let e = c.connect(Some(cursor)).await.unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert!(e.to_string().contains("recent.json"), "{e}");
    // Then: three pages of up to 100, in order, before the live stream.
    let mut s = c.connect(Some(cursor)).await.unwrap();
    let live = emu.inject_text(ROOM, "live");
    let seen = read(&mut s, 251).await;
    let mut want = missed.clone();
    want.push(live);
    assert_eq!(native_ids(&seen), want);
    assert_eq!(
        emu.since_message_ids(),
        vec![
            Some(first),
            Some(first),
            Some(missed[99]),
            Some(missed[199])
        ]
    );
    // The standalone REST helper agrees.
    let recent = c.recent(Some(missed[247])).await.unwrap();
    assert_eq!(
        recent.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![missed[248], missed[249], live]
    );
    emu.stop().await;
}

#[tokio::test]
async fn wrong_content_type_is_a_protocol_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf).await;
        let body = "<html>maintenance</html>";
        let _ = s
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
    });
    let mut cfg = ClientConfig::new("tok", 7);
    cfg.url = format!("http://{addr}");
    let e = Client::new(cfg).unwrap().connect(None).await.unwrap_err();
    let reason = DisconnectReason::from(e);
    assert!(matches!(reason, DisconnectReason::Protocol(_)), "{reason}");
    assert!(reason.to_string().contains("room 7"), "{reason}");
    assert!(reason.to_string().contains("text/html"), "{reason}");
    server.await.unwrap();
}

#[tokio::test]
async fn server_stop_ends_the_stream_cleanly() {
    let emu = Emulator::start(quiet(vec![])).await.unwrap();
    let mut s = client(&emu).connect(None).await.unwrap();
    let id = emu.inject_text(ROOM, "last words");
    let seen = read(&mut s, 1).await;
    assert_eq!(native_ids(&seen), vec![id]);
    tokio::time::timeout(PATIENCE, emu.stop()).await.unwrap();
    let seen = read_until_end(&mut s).await;
    assert!(
        matches!(
            seen.end,
            Some(DisconnectReason::EndOfStream | DisconnectReason::Network(_))
        ),
        "{seen:?}"
    );
}

#[tokio::test]
async fn author_names_are_looked_up_once() {
    let emu = Emulator::start(quiet(vec![])).await.unwrap();
    let mut s = client(&emu).connect(None).await.unwrap();
    emu.inject(ROOM, "TextMessage", Some("a"), Some(4));
    emu.inject(ROOM, "TextMessage", Some("b"), Some(4));
    emu.inject(ROOM, "TextMessage", Some("c"), Some(77));
    emu.inject(ROOM, "TextMessage", Some("d"), Some(77));
    let seen = read(&mut s, 4).await;
    let names: Vec<Option<&str>> = seen
        .events
        .iter()
        .map(|(e, _)| e.author.name.as_deref())
        .collect();
    assert_eq!(names, vec![Some(PEOPLE[3]), Some(PEOPLE[3]), None, None]);
    let lookups: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/users/"))
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        lookups,
        vec![
            ("/users/4.json".to_owned(), 200),
            ("/users/77.json".to_owned(), 404)
        ]
    );
    // Off by request: no lookups, no names.
    let plain = client_with(&emu, |c| c.resolve_names = false);
    let mut s = plain.connect(None).await.unwrap();
    emu.inject(ROOM, "TextMessage", Some("e"), Some(5));
    let seen = read(&mut s, 1).await;
    assert_eq!(seen.events[0].0.author.name, None);
    emu.stop().await;
}
