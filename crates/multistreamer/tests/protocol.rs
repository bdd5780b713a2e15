//! Protocol tests against the multistreamer emulator: every message type mapped, refusals,
//! faults (drop mid-frame, stall, malformed, oversize, one-byte writes), liveness.

use std::sync::Arc;
use std::time::Duration;

use chat_model::{DisconnectReason, Disposition, Event, Kind, Secret, SourceItem};
use emulator::multistreamer::{Config, Emulator};
use emulator::{Fault, FaultPlan};
use multistreamer::{ConnectOptions, Connection, Error, connect, map};
use serde_json::json;

const LONG: Duration = Duration::from_secs(15);

fn quiet() -> Config {
    Config {
        rate: 0.0,
        status_every: None,
        ..Config::default()
    }
}

fn with_faults(faults: Vec<Vec<Fault>>) -> Config {
    Config {
        faults: Arc::new(FaultPlan::script(faults)),
        ..quiet()
    }
}

fn opts(emu: &Emulator) -> ConnectOptions {
    let mut o = ConnectOptions::new(emu.url(), emu.stream(), Secret::new(emu.token()));
    o.source = "ms".into();
    o
}

/// The next event, skipping keep-alives; panics on anything else or after a long wait.
async fn next_event(conn: &mut Connection) -> Event {
    tokio::time::timeout(LONG, async {
        loop {
            match conn.next_item().await.expect("connection ended") {
                SourceItem::Event { event, .. } => return event,
                SourceItem::KeepAlive => continue,
                other => panic!("unexpected item {other:?}"),
            }
        }
    })
    .await
    .expect("no event in time")
}

/// Reads until the connection ends; returns the error.
async fn until_error(conn: &mut Connection) -> Error {
    tokio::time::timeout(LONG, async {
        loop {
            if let Err(e) = conn.next_item().await {
                return e;
            }
        }
    })
    .await
    .expect("the connection did not end in time")
}

#[tokio::test]
async fn sends_status_on_open_and_maps_the_snapshot() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let mut conn = connect(&opts(&emu)).await.unwrap();
    let e = next_event(&mut conn).await;
    assert_eq!(e.kind, Kind::Status);
    assert_eq!(e.room, "21");
    assert_eq!(e.source, "ms");
    let d = e.detail.as_ref().unwrap();
    assert_eq!(d["accounts"]["14"]["live"], true);
    assert_eq!(d["accounts"]["17"]["ready"], false);
    assert_eq!(d["accounts"]["0"]["network"]["name"], "irc");
    assert_eq!(d["status"]["data_pushing"], true);
    assert!(
        e.text
            .starts_with("live: jprjrdev (Twitch), Tributary Live (YouTube)"),
        "{}",
        e.text
    );
    let status = conn.status().unwrap();
    assert!(status.account(14).unwrap().ready);
    assert_eq!(emu.received()[0], json!({"type": "status"}));
    emu.stop().await;
}

#[tokio::test]
async fn status_changes_are_emitted_and_repeats_are_not() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let mut conn = connect(&opts(&emu)).await.unwrap();
    assert_eq!(next_event(&mut conn).await.kind, Kind::Status);
    // The same snapshot again: nothing new to report.
    conn.request_status().await.unwrap();
    let msg = tokio::time::timeout(LONG, conn.next_message())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(msg, multistreamer::ServerMessage::Status(_)),
        "{msg:?}"
    );
    let item = conn.next_item().await.unwrap();
    assert_eq!(
        item,
        SourceItem::KeepAlive,
        "a repeated status must not be emitted"
    );
    // An account goes live: a new status event.
    emu.set_live(17, true);
    let e = next_event(&mut conn).await;
    assert_eq!(e.kind, Kind::Status);
    assert_eq!(e.detail.unwrap()["accounts"]["17"]["live"], true);
    assert!(conn.status().unwrap().account(17).unwrap().live);
    emu.set_live(17, false);
    let e = next_event(&mut conn).await;
    assert_eq!(e.detail.unwrap()["accounts"]["17"]["live"], false);
    emu.stop().await;
}

#[tokio::test]
async fn every_message_type_is_mapped() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let mut conn = connect(&opts(&emu)).await.unwrap();
    assert_eq!(next_event(&mut conn).await.kind, Kind::Status);

    let twitch = emu.inject_chat(
        false,
        14,
        json!("146521877"),
        "gamethattunedev",
        None,
        "Kappa hi",
    );
    let emote = emu.inject_chat(
        true,
        14,
        json!("146521877"),
        "gamethattunedev",
        None,
        "is loving this",
    );
    let private = emu.inject_chat(false, 0, json!(2), "test", Some("john"), "hey ban this guy");
    let youtube = emu.inject_chat(false, 25, json!("UCx"), "Ada", None, "hello from youtube");
    emu.inject_json(json!({"type": "hostmode", "text": "now hosting someone"}));

    let e = next_event(&mut conn).await;
    assert_eq!(e.kind, Kind::Message);
    assert_eq!(e.text, "Kappa hi");
    assert_eq!(e.author.id.as_deref(), Some("146521877"));
    assert_eq!(e.author.network.as_deref(), Some("twitch"));
    assert_eq!(
        e.at.timestamp_millis(),
        twitch.json["timestamp"].as_i64().unwrap()
    );
    assert_eq!(e.raw.as_ref().unwrap(), &twitch.json);
    let wire: multistreamer::wire::ChatMessage =
        serde_json::from_value(twitch.json.clone()).unwrap();
    assert_eq!(
        e.id,
        map::chat_id(21, false, &wire, 0),
        "the id derives from the message"
    );

    let e = next_event(&mut conn).await;
    assert_eq!(e.kind, Kind::Emote);
    assert_eq!(e.text, emote.text);

    let e = next_event(&mut conn).await;
    assert!(e.private);
    assert_eq!(e.to.as_ref().unwrap().name.as_deref(), Some("john"));
    assert_eq!(
        e.author.id.as_deref(),
        Some("2"),
        "numeric IRC ids become strings"
    );
    assert_eq!(e.author.network.as_deref(), Some("irc"));
    assert_eq!(e.text, private.text);

    let e = next_event(&mut conn).await;
    assert_eq!(e.author.network.as_deref(), Some("youtube"));
    assert_eq!(e.text, youtube.text);

    let e = next_event(&mut conn).await;
    assert_eq!(e.kind, Kind::System);
    assert_eq!(e.detail.unwrap()["type"], "hostmode");
    assert_eq!(e.text, "now hosting someone");

    // viewcount → one viewcountresult per live account (14 and 25).
    conn.request_viewcount().await.unwrap();
    let mut accounts = Vec::new();
    for _ in 0..2 {
        let e = next_event(&mut conn).await;
        assert_eq!(e.kind, Kind::Viewers);
        assert!(e.viewers.is_some());
        accounts.push(e.detail.unwrap()["account_id"].as_u64().unwrap());
    }
    accounts.sort();
    assert_eq!(accounts, vec![14, 25]);
    emu.stop().await;
}

#[tokio::test]
async fn generated_traffic_arrives_in_order_with_unique_ids() {
    let emu = Emulator::start(Config {
        rate: 100.0,
        status_every: None,
        ..Config::default()
    })
    .await
    .unwrap();
    let mut conn = connect(&opts(&emu)).await.unwrap();
    let mut chat = Vec::new();
    while chat.len() < 60 {
        let e = next_event(&mut conn).await;
        if e.kind.is_chat() {
            chat.push(e);
        }
    }
    let committed = emu.committed_chat();
    // The first chat this client saw is somewhere in the committed log; from there on, the
    // sequence matches one to one.
    let start = committed
        .iter()
        .position(|c| c.json == *chat[0].raw.as_ref().unwrap())
        .expect("first event was committed");
    for (e, c) in chat.iter().zip(&committed[start..]) {
        assert_eq!(e.raw.as_ref().unwrap(), &c.json);
    }
    let mut ids: Vec<&str> = chat.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), chat.len(), "ids are unique");
    emu.stop().await;
}

#[tokio::test]
async fn handle_queues_requests_and_viewcount_interval_polls() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let mut o = opts(&emu);
    o.viewcount_interval = Some(Duration::from_millis(200));
    let mut conn = connect(&o).await.unwrap();
    let handle = conn.handle();
    let mut viewers = 0;
    while viewers < 4 {
        if next_event(&mut conn).await.kind == Kind::Viewers {
            viewers += 1;
        }
    }
    handle
        .send(multistreamer::ClientMessage::Status)
        .await
        .unwrap();
    // The queued request goes out from the read loop and is answered.
    tokio::time::timeout(LONG, async {
        while !matches!(
            conn.next_message().await.unwrap(),
            multistreamer::ServerMessage::Status(_)
        ) {}
    })
    .await
    .unwrap();
    let received = emu.received();
    assert!(received.iter().filter(|m| m["type"] == "viewcount").count() >= 2);
    assert!(received.iter().filter(|m| m["type"] == "status").count() >= 2);
    drop(conn);
    assert!(
        handle.request_viewcount().await.is_err(),
        "the connection is gone"
    );
    emu.stop().await;
}

#[tokio::test]
async fn refusals_are_typed_and_never_show_the_token() {
    let emu = Emulator::start(quiet()).await.unwrap();

    let mut o = opts(&emu);
    o.token = Secret::new("wrong-token-value");
    let e = connect(&o).await.unwrap_err();
    assert!(matches!(e, Error::Http { status: 403, .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("stream 21") && text.contains("token=[redacted]"),
        "{text}"
    );
    assert!(!text.contains("wrong-token-value") && !format!("{e:?}").contains("wrong-token-value"));
    let reason = DisconnectReason::from(e);
    assert_eq!(reason.disposition(), Disposition::Fatal);
    assert_eq!(reason.code(), "unauthorized");

    let mut o = opts(&emu);
    o.token = Secret::new("");
    let e = connect(&o).await.unwrap_err();
    assert!(matches!(e, Error::Http { status: 401, .. }), "{e}");
    assert!(e.to_string().contains("check the token"), "{e}");

    let mut o = opts(&emu);
    o.stream = 99;
    let e = connect(&o).await.unwrap_err();
    assert!(matches!(e, Error::Http { status: 404, .. }), "{e}");
    assert_eq!(emu.refused(), 3);
    assert_eq!(DisconnectReason::from(e).code(), "not_found");

    let e = connect(&ConnectOptions::new("ftp://x", 1, Secret::new("t")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidUrl { .. }), "{e}");
    assert!(DisconnectReason::from(e).is_fatal());
    emu.stop().await;
}

#[tokio::test]
async fn injected_status_refuse_and_delay() {
    let emu = Emulator::start(with_faults(vec![
        vec![Fault::Status {
            code: 503,
            retry_after: Some(7),
        }],
        vec![Fault::Status {
            code: 500,
            retry_after: None,
        }],
        vec![Fault::Refuse],
        vec![Fault::Delay(Duration::from_millis(300))],
    ]))
    .await
    .unwrap();
    let e = connect(&opts(&emu)).await.unwrap_err();
    assert!(
        matches!(e, Error::Http { status: 503, retry_after: Some(d), .. } if d == Duration::from_secs(7)),
        "{e}"
    );
    assert_eq!(
        DisconnectReason::from(e).disposition(),
        Disposition::After(Duration::from_secs(7))
    );
    let e = connect(&opts(&emu)).await.unwrap_err();
    assert_eq!(
        DisconnectReason::from(e).disposition(),
        Disposition::Backoff
    );
    let e = connect(&opts(&emu)).await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e}");
    assert_eq!(DisconnectReason::from(e).code(), "network");
    // A slow server still connects.
    let mut conn = connect(&opts(&emu)).await.unwrap();
    assert_eq!(next_event(&mut conn).await.kind, Kind::Status);
    emu.stop().await;
}

#[tokio::test]
async fn connect_timeout_and_refused_port() {
    let emu = Emulator::start(with_faults(vec![vec![Fault::Delay(Duration::from_secs(
        5,
    ))]]))
    .await
    .unwrap();
    let mut o = opts(&emu);
    o.connect_timeout = Duration::from_millis(200);
    let e = connect(&o).await.unwrap_err();
    assert!(matches!(e, Error::ConnectTimeout { .. }), "{e}");
    // A port nobody listens on.
    let addr = emu.addr();
    emu.stop().await;
    let o = ConnectOptions::new(format!("ws://{addr}"), 21, Secret::new("whatever-token"));
    let e = connect(&o).await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e}");
    assert!(!e.to_string().contains("whatever-token"), "{e}");
}

#[tokio::test]
async fn drop_mid_frame_ends_the_connection_and_the_next_one_works() {
    let emu = Emulator::start(Config {
        rate: 50.0,
        status_every: None,
        faults: Arc::new(FaultPlan::script([vec![Fault::DropAfterBytes(1500)]])),
        ..Config::default()
    })
    .await
    .unwrap();
    let mut conn = connect(&opts(&emu)).await.unwrap();
    let e = until_error(&mut conn).await;
    assert!(matches!(e, Error::Network { .. }), "{e}");
    let reason = DisconnectReason::from(e);
    assert_eq!(reason.disposition(), Disposition::Backoff);
    // The error repeats; the connection stays ended.
    assert!(conn.next_item().await.is_err());

    let mut conn = connect(&opts(&emu)).await.unwrap();
    let mut chat = 0;
    while chat < 5 {
        if next_event(&mut conn).await.kind.is_chat() {
            chat += 1;
        }
    }
    emu.stop().await;
}

#[tokio::test]
async fn a_stalled_server_is_detected_by_the_pong_deadline() {
    let emu = Emulator::start(with_faults(vec![vec![Fault::Stall {
        keepalives: false,
        duration: None,
    }]]))
    .await
    .unwrap();
    let mut o = opts(&emu);
    o.ping_interval = Duration::from_millis(200);
    o.pong_timeout = Duration::from_millis(300);
    let mut conn = connect(&o).await.unwrap();
    let e = until_error(&mut conn).await;
    let Error::Stalled { idle, deadline, .. } = &e else {
        panic!("expected a stall, got {e}");
    };
    assert_eq!(*deadline, Duration::from_millis(300));
    assert!(*idle >= Duration::from_millis(500), "{idle:?}");
    assert_eq!(DisconnectReason::from(e).code(), "stalled");
    emu.stop().await;
}

#[tokio::test]
async fn pongs_keep_a_quiet_connection_alive() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let mut o = opts(&emu);
    o.ping_interval = Duration::from_millis(100);
    o.pong_timeout = Duration::from_millis(2000);
    let mut conn = connect(&o).await.unwrap();
    assert_eq!(next_event(&mut conn).await.kind, Kind::Status);
    // Nothing but pongs for a while: keep-alives, never a stall.
    let mut keepalives = 0;
    while keepalives < 5 {
        match tokio::time::timeout(LONG, conn.next_item())
            .await
            .unwrap()
            .unwrap()
        {
            SourceItem::KeepAlive => keepalives += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    emu.stop().await;
}

#[tokio::test]
async fn server_pings_are_keep_alives_and_are_answered() {
    let emu = Emulator::start(Config {
        ping_interval: Duration::from_millis(100),
        faults: Arc::new(FaultPlan::script([vec![Fault::Stall {
            keepalives: true,
            duration: Some(Duration::from_millis(1500)),
        }]])),
        ..quiet()
    })
    .await
    .unwrap();
    let mut o = opts(&emu);
    // Our own pings are far off: only the server's pings keep this connection alive.
    o.ping_interval = Duration::from_secs(60);
    let mut conn = connect(&o).await.unwrap();
    let mut keepalives = 0;
    loop {
        match tokio::time::timeout(LONG, conn.next_item())
            .await
            .unwrap()
            .unwrap()
        {
            SourceItem::KeepAlive => keepalives += 1,
            SourceItem::Event { event, .. } => {
                // After the stall the status request is finally read and answered.
                assert_eq!(event.kind, Kind::Status);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        keepalives >= 3,
        "server pings arrive as keep-alives: {keepalives}"
    );
    emu.stop().await;
}

#[tokio::test]
async fn malformed_and_binary_frames_are_skipped() {
    let emu = Emulator::start(with_faults(vec![vec![Fault::Malformed]]))
        .await
        .unwrap();
    let mut conn = connect(&opts(&emu)).await.unwrap();
    let first = tokio::time::timeout(LONG, conn.next_item())
        .await
        .unwrap()
        .unwrap();
    let SourceItem::Malformed { error } = first else {
        panic!("expected a malformed notice, got {first:?}");
    };
    assert!(
        error.contains("stream 21") && error.contains("frame 1"),
        "{error}"
    );
    assert_eq!(next_event(&mut conn).await.kind, Kind::Status);
    emu.inject_raw("[\"not\", \"an object\"]");
    emu.inject_chat(false, 0, json!(1), "x", None, "still here");
    let item = tokio::time::timeout(LONG, conn.next_item())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(item, SourceItem::Malformed { .. }), "{item:?}");
    assert_eq!(next_event(&mut conn).await.text, "still here");
    emu.stop().await;
}

#[tokio::test]
async fn oversize_messages_are_refused() {
    let emu = Emulator::start(with_faults(vec![vec![Fault::Oversize(64 * 1024)]]))
        .await
        .unwrap();
    let mut o = opts(&emu);
    o.max_message_size = 16 * 1024;
    let mut conn = connect(&o).await.unwrap();
    let e = until_error(&mut conn).await;
    assert!(matches!(e, Error::Protocol { .. }), "{e}");
    assert!(e.to_string().contains("size limit"), "{e}");
    emu.stop().await;
}

#[tokio::test]
async fn one_byte_writes_are_reassembled() {
    let emu = Emulator::start(with_faults(vec![vec![Fault::OneByteWrites]]))
        .await
        .unwrap();
    let mut conn = connect(&opts(&emu)).await.unwrap();
    assert_eq!(next_event(&mut conn).await.kind, Kind::Status);
    emu.inject_chat(false, 14, json!("1"), "a", None, "byte by byte ü 日本語");
    assert_eq!(next_event(&mut conn).await.text, "byte by byte ü 日本語");
    emu.stop().await;
}

#[tokio::test]
async fn server_shutdown_closes_the_connection() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let mut conn = connect(&opts(&emu)).await.unwrap();
    assert_eq!(next_event(&mut conn).await.kind, Kind::Status);
    emu.stop().await;
    let e = until_error(&mut conn).await;
    assert!(
        matches!(
            e,
            Error::Closed {
                code: Some(1001),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(DisconnectReason::from(e), DisconnectReason::EndOfStream);
}

/// Reads items for `period`; the longest silence between two items (or since the start).
async fn longest_silence(conn: &mut Connection, period: Duration) -> Duration {
    let start = tokio::time::Instant::now();
    let mut last = start;
    let mut longest = Duration::ZERO;
    while start.elapsed() < period {
        let left = period.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, conn.next_item()).await {
            Err(_) => break,
            Ok(item) => {
                item.expect("a quiet, healthy connection must not end");
                longest = longest.max(last.elapsed());
                last = tokio::time::Instant::now();
            }
        }
    }
    longest.max(last.elapsed().min(period))
}

#[tokio::test]
async fn with_a_one_second_stall_timeout_a_quiet_connection_is_never_silent_that_long() {
    let emu = Emulator::start(Config::quiet()).await.unwrap();
    let mut o = opts(&emu);
    let stall = Duration::from_secs(1);
    o.fit_stall_timeout(stall);
    let mut conn = connect(&o).await.unwrap();
    // Several stall timeouts without chat: the pongs alone keep the items coming.
    let longest = longest_silence(&mut conn, Duration::from_secs(5)).await;
    assert!(
        longest < stall,
        "silent for {longest:?}, a watchdog of {stall:?} would have fired"
    );
    assert_eq!(emu.connections(), 1);
    emu.stop().await;
}

#[tokio::test]
async fn a_peer_that_goes_dead_is_declared_stalled_inside_the_stall_timeout() {
    let emu = Emulator::start(Config::quiet()).await.unwrap();
    let mut o = opts(&emu);
    let stall = Duration::from_secs(1);
    o.fit_stall_timeout(stall);
    let mut conn = connect(&o).await.unwrap();
    assert_eq!(next_event(&mut conn).await.kind, Kind::Status);
    // Healthy first: pongs arrive.
    let longest = longest_silence(&mut conn, Duration::from_secs(2)).await;
    assert!(longest < stall, "{longest:?}");
    emu.play_dead();
    let e = until_error(&mut conn).await;
    let Error::Stalled { idle, deadline, .. } = &e else {
        panic!("expected a stall, got {e}");
    };
    assert!(
        *idle < stall,
        "declared dead only after {idle:?} of silence"
    );
    assert_eq!(*deadline, Duration::from_millis(500));
    // A new connection is served normally.
    let mut again = connect(&o).await.unwrap();
    assert_eq!(next_event(&mut again).await.kind, Kind::Status);
    emu.stop().await;
}

#[tokio::test]
async fn the_server_pings_after_its_interval_without_an_incoming_frame() {
    assert_eq!(
        Config::default().ping_interval,
        Duration::from_secs(30),
        "NOTES.md: the server pings after 30 s without an incoming frame"
    );
    let emu = Emulator::start(Config {
        ping_interval: Duration::from_millis(300),
        ..Config::quiet()
    })
    .await
    .unwrap();
    // A client that never pings: only the server's pings (answered) arrive.
    let mut o = opts(&emu);
    o.ping_interval = Duration::from_secs(600);
    let mut silent = connect(&o).await.unwrap();
    assert_eq!(next_event(&mut silent).await.kind, Kind::Status);
    let longest = longest_silence(&mut silent, Duration::from_secs(3)).await;
    let pings = emu.server_pings();
    assert!(pings >= 4, "server pings in 3 s at 300 ms: {pings}");
    assert!(longest < Duration::from_secs(2), "{longest:?}");
    drop(silent);

    // A client that pings every 100 ms sends a frame before the server's interval runs out:
    // the server does not ping it.
    let emu = Emulator::start(Config {
        ping_interval: Duration::from_millis(1000),
        ..Config::quiet()
    })
    .await
    .unwrap();
    let mut o = opts(&emu);
    o.ping_interval = Duration::from_millis(100);
    o.pong_timeout = Duration::from_secs(5);
    let mut chatty = connect(&o).await.unwrap();
    longest_silence(&mut chatty, Duration::from_secs(3)).await;
    assert_eq!(emu.server_pings(), 0);
    emu.stop().await;
}
