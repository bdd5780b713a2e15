//! Protocol tests of the client against the Flowdock emulator: both transports, every event
//! type, resume (Last-Event-ID and REST backfill), faults and bad input.

use std::sync::Arc;
use std::time::Duration;

use chat_model::{DisconnectReason, Event, Kind, Secret, SourceItem};
use emulator::flowdock::{Committed, Config, Emulator};
use emulator::{Fault, FaultPlan};
use flowdock::{Client, ClientConfig, FlowdockCursor, FlowdockStream, Transport};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

fn quiet(faults: Vec<Vec<Fault>>) -> Config {
    Config {
        rate: 0.0,
        history: 3,
        keepalive: Duration::from_millis(200),
        faults: Arc::new(FaultPlan::script(faults)),
        ..Config::default()
    }
}

fn client(emu: &Emulator, transport: Transport, flows: &[&str]) -> Client {
    let mut cfg = ClientConfig::new(
        "fd",
        Secret::new("flowdock-token"),
        flows.iter().map(|s| s.to_string()).collect(),
    );
    cfg.settings.url = emu.url();
    cfg.settings.transport = transport;
    Client::new(cfg).unwrap()
}

/// A quiet emulator following `faults`, and a client stream on `flows` connected to it.
async fn open(
    faults: Vec<Vec<Fault>>,
    transport: Transport,
    flows: &[&str],
) -> (Emulator, FlowdockStream) {
    let emu = Emulator::start(quiet(faults)).await.unwrap();
    let mut stream = client(&emu, transport, flows).connect(None).await.unwrap();
    // A fresh start fixes its position (the REST baseline) before anything else.
    let first = tokio::time::timeout(WAIT, stream.next_item())
        .await
        .unwrap()
        .unwrap();
    let SourceItem::Cursor(c) = first else {
        panic!("the baseline cursor comes first: {first:?}")
    };
    let c = FlowdockCursor::from_cursor(&c).unwrap();
    for flow in flows {
        assert!(c.last_message_id.contains_key(*flow), "{c:?}");
    }
    (emu, stream)
}

/// A script whose first connection stalls for ever, with or without keep-alives.
fn stall_for_ever(keepalives: bool) -> Vec<Vec<Fault>> {
    vec![vec![Fault::Stall {
        keepalives,
        duration: None,
    }]]
}

/// Reads items until `n` events arrived (bounded by a timeout); returns events and all items.
async fn events(stream: &mut FlowdockStream, n: usize) -> (Vec<Event>, Vec<SourceItem>) {
    let mut evs = Vec::new();
    let mut items = Vec::new();
    let r = tokio::time::timeout(WAIT, async {
        while evs.len() < n {
            let item = stream.next_item().await.expect("stream item");
            if let SourceItem::Event { event, .. } = &item {
                evs.push(event.clone());
            }
            items.push(item);
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "timed out after {} of {n} events: {items:?}",
        evs.len()
    );
    (evs, items)
}

/// Reads until the stream ends; returns the events before and the reason.
async fn until_end(stream: &mut FlowdockStream) -> (Vec<Event>, DisconnectReason) {
    let mut evs = Vec::new();
    let r = tokio::time::timeout(WAIT, async {
        loop {
            match stream.next_item().await {
                Ok(SourceItem::Event { event, .. }) => evs.push(event),
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("stream did not end");
    (evs, r)
}

fn stream_requests(emu: &Emulator) -> Vec<emulator::flowdock::RequestRecord> {
    emu.requests()
        .into_iter()
        .filter(|r| !r.path.ends_with("/messages"))
        .collect()
}

fn inject_every_type(emu: &Emulator) -> Vec<(Committed, Kind)> {
    let f = "acme/main";
    let m = emu.inject_message(f, "deploy of staging 🎉 ü");
    let c = emu.inject(
        f,
        "comment",
        json!({"title": "deploy", "text": "looks good"}),
        vec![format!("influx:{}", m.id)],
    );
    let e = emu.inject(
        f,
        "message-edit",
        json!({"message": m.id, "updated_content": "deploy of prod"}),
        vec![],
    );
    let t = emu.inject(
        f,
        "tag-change",
        json!({"message": m.id, "add": ["#ops"], "remove": []}),
        vec![],
    );
    let file = emu.inject(
        f,
        "file",
        json!({"content_type": "text/plain", "file_name": "log.txt", "file_size": 12, "path": "/p/log.txt"}),
        vec![],
    );
    let join = emu.inject(f, "action", json!({"type": "join"}), vec![]);
    let block = emu.inject(f, "action", json!({"type": "block", "user": "9"}), vec![]);
    let status = emu.inject(f, "status", json!("at lunch"), vec![]);
    let disc = emu.inject_thread_event(f, "discussion", "nice build");
    let act = emu.inject_thread_event(f, "activity", "build 42 green");
    let unknown = emu.inject(f, "backend.user.block", json!("50000"), vec![]);
    vec![
        (m, Kind::Message),
        (c, Kind::Message),
        (e, Kind::Edit),
        (t, Kind::TagChange),
        (file, Kind::Upload),
        (join, Kind::Enter),
        (block, Kind::Kick),
        (status, Kind::Status),
        (disc, Kind::Message),
        (act, Kind::System),
        (unknown, Kind::System),
    ]
}

async fn every_type(transport: Transport, crlf: bool, pretty: bool) {
    let emu = Emulator::start(Config {
        crlf,
        pretty,
        ..quiet(vec![])
    })
    .await
    .unwrap();
    let client = client(&emu, transport, &["acme/main"]);
    let mut stream = client.connect(None).await.unwrap();
    // Give the server a moment to register the stream, then commit one of each type.
    tokio::time::sleep(Duration::from_millis(200)).await;
    emu.inject_presence("acme/main", "12");
    let expected = inject_every_type(&emu);
    let (evs, items) = events(&mut stream, expected.len() + 1).await;
    assert!(
        !items
            .iter()
            .any(|i| matches!(i, SourceItem::Malformed { .. })),
        "every frame is a message: {items:?}"
    );
    let presence = &evs[0];
    assert_eq!(presence.kind, Kind::Presence);
    assert_eq!(presence.author.id.as_deref(), Some("12"));
    for ((c, kind), ev) in expected.iter().zip(&evs[1..]) {
        assert_eq!(ev.id, c.event_id, "{c:?}");
        assert_eq!(ev.kind, *kind, "{c:?} -> {ev:?}");
        assert_eq!(ev.room, "acme/main");
        assert!(ev.raw.is_some());
    }
    let m = &expected[0].0;
    assert_eq!(evs[1].text, "deploy of staging 🎉 ü");
    assert_eq!(evs[2].refers_to.as_deref(), Some(m.event_id.as_str()));
    assert_eq!(evs[3].refers_to.as_deref(), Some(m.event_id.as_str()));
    assert_eq!(evs[3].text, "deploy of prod");
    assert_eq!(evs[4].refers_to.as_deref(), Some(m.event_id.as_str()));
    assert_eq!(evs[4].tags, vec!["#ops"]);
    assert_eq!(evs[5].text, "log.txt");
    assert_eq!(evs[8].text, "at lunch");
    assert_eq!(evs[9].text, "nice build");
    assert_eq!(evs[10].text, "Updated build 42 green");
    emu.stop().await;
}

#[tokio::test]
async fn sse_maps_every_event_type() {
    every_type(Transport::EventStream, false, false).await;
}

#[tokio::test]
async fn sse_maps_every_event_type_pretty_printed() {
    // One `data:` line per line of the object, joined again with `\n`.
    every_type(Transport::EventStream, false, true).await;
}

#[tokio::test]
async fn json_stream_maps_every_event_type_pretty_printed() {
    // Raw newlines between the members: only `\r` ends a message.
    every_type(Transport::Json, false, true).await;
}

#[tokio::test]
async fn json_stream_maps_every_event_type_pretty_printed_crlf() {
    every_type(Transport::Json, true, true).await;
}

#[tokio::test]
async fn json_stream_maps_every_event_type_cr() {
    every_type(Transport::Json, false, false).await;
}

#[tokio::test]
async fn json_stream_maps_every_event_type_crlf() {
    every_type(Transport::Json, true, false).await;
}

#[tokio::test]
async fn json_stream_keepalives_and_single_flow_path() {
    let (emu, mut stream) = open(vec![], Transport::Json, &["acme/main"]).await;
    let item = tokio::time::timeout(WAIT, stream.next_item())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item, SourceItem::KeepAlive);
    let stream_req = stream_requests(&emu).remove(0);
    assert_eq!(stream_req.path, "/flows/acme/main");
    assert_eq!(stream_req.accept.as_deref(), Some("application/json"));
    assert!(stream_req.authorized && !stream_req.token_in_query);
    emu.stop().await;
}

#[tokio::test]
async fn sse_retry_hint_and_comment_keepalives() {
    let (emu, mut stream) = open(vec![], Transport::EventStream, &["acme/main", "acme/ops"]).await;
    let first = tokio::time::timeout(WAIT, stream.next_item())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, SourceItem::RetryHint(Duration::from_secs(2)));
    let second = tokio::time::timeout(WAIT, stream.next_item())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second, SourceItem::KeepAlive);
    let r = &stream_requests(&emu)[0];
    assert_eq!(r.path, "/flows");
    assert_eq!(r.query, "filter=acme/main,acme/ops");
    assert_eq!(r.accept.as_deref(), Some("text/event-stream"));
    emu.stop().await;
}

#[tokio::test]
async fn sse_resume_sends_last_event_id_and_replays_exactly_the_missed() {
    let emu = Emulator::start(quiet(vec![])).await.unwrap();
    let client = client(&emu, Transport::EventStream, &["acme/main", "acme/ops"]);
    let mut stream = client.connect(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = emu.inject_message("acme/main", "one");
    let b = emu.inject_message("acme/ops", "two");
    let (evs, _) = events(&mut stream, 2).await;
    assert_eq!(
        evs.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        vec![a.event_id.clone(), b.event_id.clone()]
    );
    let cursor = stream.cursor().clone();
    assert_eq!(cursor.last_event_id, Some(b.seq.to_string()));
    drop(stream);
    // Missed while disconnected.
    let c = emu.inject_message("acme/main", "three");
    let d = emu.inject_message("acme/ops", "four");
    let mut stream = client.connect(Some(cursor)).await.unwrap();
    let (evs, _) = events(&mut stream, 2).await;
    assert_eq!(
        evs.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        vec![c.event_id, d.event_id]
    );
    assert_eq!(
        emu.last_event_ids(),
        vec![None, Some(b.seq.to_string())],
        "the right Last-Event-ID was sent"
    );
    emu.stop().await;
}

#[tokio::test]
async fn json_backfill_on_reconnect_in_order_before_live() {
    let emu = Emulator::start(quiet(vec![])).await.unwrap();
    let client = client(&emu, Transport::Json, &["acme/main", "acme/ops"]);
    let mut stream = client.connect(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = emu.inject_message("acme/main", "one");
    let (evs, _) = events(&mut stream, 1).await;
    assert_eq!(evs[0].id, a.event_id);
    let cursor = stream.cursor().clone();
    assert_eq!(cursor.last_message_id["acme/main"], a.id);
    let ops_baseline = cursor.last_message_id["acme/ops"];
    drop(stream);
    let missed: Vec<Committed> = (0..5)
        .map(|i| {
            emu.inject_message(
                if i % 2 == 0 { "acme/main" } else { "acme/ops" },
                &format!("missed {i}"),
            )
        })
        .collect();
    let mut stream = client.connect(Some(cursor)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live = emu.inject_message("acme/main", "live");
    let (evs, _) = events(&mut stream, 6).await;
    let got: Vec<String> = evs.iter().map(|e| e.id.clone()).collect();
    let mut want: Vec<String> = missed
        .iter()
        .filter(|c| c.flow == "acme/main")
        .chain(missed.iter().filter(|c| c.flow == "acme/ops"))
        .map(|c| c.event_id.clone())
        .collect();
    want.push(live.event_id);
    assert_eq!(
        got, want,
        "backfill per flow in order, then live, none twice"
    );
    let since = emu.since_ids();
    assert!(since.contains(&a.id), "since_id={} sent: {since:?}", a.id);
    assert!(since.contains(&ops_baseline), "{since:?}");
    emu.stop().await;
}

#[tokio::test]
async fn json_backfill_pages_through_more_than_one_limit() {
    let emu = Emulator::start(quiet(vec![])).await.unwrap();
    let mut cfg = ClientConfig::new(
        "fd",
        Secret::new("flowdock-token"),
        vec!["acme/main".into()],
    );
    cfg.settings.url = emu.url();
    cfg.settings.transport = Transport::Json;
    cfg.settings.backfill_limit = 3;
    let client = Client::new(cfg).unwrap();
    let first = emu.committed().last().unwrap().clone();
    let mut cursor = FlowdockCursor::default();
    cursor.advance("acme/main", first.id);
    let missed: Vec<Committed> = (0..8)
        .map(|i| emu.inject_message("acme/main", &format!("m{i}")))
        .collect();
    let mut stream = client.connect(Some(cursor)).await.unwrap();
    let (evs, _) = events(&mut stream, 8).await;
    assert_eq!(
        evs.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        missed
            .iter()
            .map(|c| c.event_id.clone())
            .collect::<Vec<_>>()
    );
    assert!(emu.since_ids().len() >= 3, "{:?}", emu.since_ids());
    emu.stop().await;
}

async fn survives_drop(transport: Transport, after: usize) {
    let emu = Emulator::start(quiet(vec![vec![Fault::DropAfterBytes(after)]]))
        .await
        .unwrap();
    let client = client(&emu, transport, &["acme/main"]);
    let mut stream = client.connect(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent: Vec<Committed> = (0..6)
        .map(|i| {
            emu.inject_message(
                "acme/main",
                &format!("message number {i} with some padding"),
            )
        })
        .collect();
    let (before, reason) = until_end(&mut stream).await;
    assert!(matches!(reason, DisconnectReason::Network(_)), "{reason:?}");
    assert!(before.len() < sent.len(), "the drop cut the stream short");
    if after < 100 {
        assert!(before.is_empty() && stream.cursor().last_event_id.is_none());
    }
    let cursor = stream.cursor().clone();
    let mut stream = client.connect(Some(cursor)).await.unwrap();
    let (after, _) = events(&mut stream, sent.len() - before.len()).await;
    let all: Vec<String> = before.iter().chain(&after).map(|e| e.id.clone()).collect();
    assert_eq!(
        all,
        sent.iter().map(|c| c.event_id.clone()).collect::<Vec<_>>(),
        "every committed message exactly once, in order"
    );
    emu.stop().await;
}

#[tokio::test]
async fn sse_survives_drop_mid_frame() {
    survives_drop(Transport::EventStream, 700).await;
}

#[tokio::test]
async fn sse_drop_before_the_first_event_is_backfilled_over_rest() {
    // The cut falls inside the first event: no event id was seen, so the REST baseline taken
    // at connect time closes the gap.
    survives_drop(Transport::EventStream, 40).await;
}

#[tokio::test]
async fn json_survives_drop_mid_frame() {
    survives_drop(Transport::Json, 700).await;
}

#[tokio::test]
async fn http_errors_are_classified_and_name_the_flow() {
    let emu = Emulator::start(quiet(vec![
        vec![Fault::Status {
            code: 500,
            retry_after: None,
        }],
        vec![Fault::Status {
            code: 503,
            retry_after: Some(7),
        }],
    ]))
    .await
    .unwrap();
    let c = client(&emu, Transport::EventStream, &["acme/main"]);
    let e500 = DisconnectReason::from(c.connect(None).await.unwrap_err());
    assert!(
        matches!(e500, DisconnectReason::Server { status: 500, .. }),
        "{e500:?}"
    );
    assert!(e500.to_string().contains("acme/main"), "{e500}");
    let e503 = DisconnectReason::from(c.connect(None).await.unwrap_err());
    assert_eq!(
        e503,
        DisconnectReason::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    // Healthy after the faults.
    assert!(c.connect(None).await.is_ok());

    let mut bad = ClientConfig::new("fd", Secret::new("wrong"), vec!["acme/main".into()]);
    bad.settings.url = emu.url();
    let e401 = DisconnectReason::from(Client::new(bad).unwrap().connect(None).await.unwrap_err());
    assert!(
        matches!(e401, DisconnectReason::Unauthorized(_)),
        "{e401:?}"
    );
    assert!(
        e401.to_string().contains("acme/main") && e401.is_fatal(),
        "{e401}"
    );
    assert!(!e401.to_string().contains("wrong"), "token never in errors");

    let forbidden = client(&emu, Transport::Json, &["acme/main", "acme/secret"]);
    let e403 = DisconnectReason::from(forbidden.connect(None).await.unwrap_err());
    assert!(matches!(e403, DisconnectReason::Forbidden(_)), "{e403:?}");
    assert!(e403.to_string().contains("acme/secret"), "{e403}");

    let missing = client(&emu, Transport::EventStream, &["acme/nope", "acme/main"]);
    let e404 = DisconnectReason::from(missing.connect(None).await.unwrap_err());
    assert!(matches!(e404, DisconnectReason::NotFound(_)), "{e404:?}");
    assert!(e404.to_string().contains("acme/nope"), "{e404}");
    emu.stop().await;
}

async fn malformed_skipped(transport: Transport) {
    let emu = Emulator::start(quiet(vec![vec![Fault::Malformed, Fault::Oversize(4096)]]))
        .await
        .unwrap();
    let mut cfg = ClientConfig::new(
        "fd",
        Secret::new("flowdock-token"),
        vec!["acme/main".into()],
    );
    cfg.settings.url = emu.url();
    cfg.settings.transport = transport;
    cfg.settings.max_frame = 2048;
    let client = Client::new(cfg).unwrap();
    let mut stream = client.connect(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = emu.inject_message("acme/main", "after the junk");
    let (evs, items) = events(&mut stream, 1).await;
    assert_eq!(evs[0].id, m.event_id);
    let errors: Vec<&String> = items
        .iter()
        .filter_map(|i| match i {
            SourceItem::Malformed { error } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2, "{items:?}");
    assert!(errors.iter().all(|e| e.contains("offset")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("limit")), "{errors:?}");
    emu.stop().await;
}

#[tokio::test]
async fn json_malformed_and_oversize_frames_are_skipped() {
    malformed_skipped(Transport::Json).await;
}

#[tokio::test]
async fn sse_malformed_and_oversize_frames_are_skipped() {
    malformed_skipped(Transport::EventStream).await;
}

#[tokio::test]
async fn one_byte_writes_keep_utf8_intact() {
    for transport in [Transport::Json, Transport::EventStream] {
        let (emu, mut stream) =
            open(vec![vec![Fault::OneByteWrites]], transport, &["acme/main"]).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = "日本語 ü ¯\\_(ツ)_/¯ 🎉\nsecond line";
        emu.inject_message("acme/main", text);
        let (evs, _) = events(&mut stream, 1).await;
        assert_eq!(evs[0].text, text, "{transport:?}");
        emu.stop().await;
    }
}

#[tokio::test]
async fn stall_with_keepalives_yields_only_keepalives() {
    let (emu, mut stream) = open(stall_for_ever(true), Transport::Json, &["acme/main"]).await;
    emu.inject_message("acme/main", "held back");
    for _ in 0..3 {
        let item = tokio::time::timeout(WAIT, stream.next_item())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(item, SourceItem::KeepAlive);
    }
    emu.stop().await;
}

#[tokio::test]
async fn stall_without_keepalives_is_silent() {
    let (emu, mut stream) = open(
        stall_for_ever(false),
        Transport::EventStream,
        &["acme/main"],
    )
    .await;
    emu.inject_message("acme/main", "held back");
    // The stall silences everything; the supervisor's watchdog would replace the connection.
    let r = tokio::time::timeout(Duration::from_millis(1200), stream.next_item()).await;
    assert!(r.is_err(), "expected silence, got {r:?}");
    emu.stop().await;
}

#[tokio::test]
async fn private_messages_with_user_1() {
    let emu = Emulator::start(quiet(vec![])).await.unwrap();
    let mut cfg = ClientConfig::new(
        "fd",
        Secret::new("flowdock-token"),
        vec!["acme/main".into()],
    );
    cfg.settings.url = emu.url();
    cfg.settings.private = true;
    cfg.settings.active = flowdock::Active::parse("idle");
    let client = Client::new(cfg).unwrap();
    let mut stream = client.connect(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p = emu.inject_private("psst");
    let (evs, _) = events(&mut stream, 1).await;
    assert!(evs[0].private);
    assert_eq!(evs[0].id, p.event_id);
    assert_eq!(evs[0].to.as_ref().unwrap().id.as_deref(), Some("1"));
    assert_eq!(
        stream_requests(&emu)[0].query,
        "filter=acme/main&user=1&active=idle"
    );
    emu.stop().await;
}

/// A one-shot HTTP server answering every request with `response` (wrong content types).
async fn fake_server(response: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(response.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn wrong_content_type_and_non_json_rest_are_clear_errors() {
    let url = fake_server(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 6\r\nconnection: close\r\n\r\n<html>",
    )
    .await;
    let mut cfg = ClientConfig::new("fd", Secret::new("t"), vec!["acme/main".into()]);
    cfg.settings.url = url.clone();
    let e = Client::new(cfg.clone())
        .unwrap()
        .connect(None)
        .await
        .unwrap_err();
    let reason = DisconnectReason::from(e);
    assert_eq!(reason.code(), "protocol");
    let text = reason.to_string();
    assert!(
        text.contains("text/html") && text.contains("acme/main"),
        "{text}"
    );

    let json_url = fake_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot json!",
    )
    .await;
    cfg.settings.url = json_url;
    cfg.settings.transport = Transport::Json;
    let e = Client::new(cfg).unwrap().connect(None).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, flowdock::Error::NotJson { .. }), "{e:?}");
    assert!(text.contains("acme/main"), "{text}");
}

#[tokio::test]
async fn refused_connection_is_a_network_error_then_recovers() {
    let emu = Emulator::start(quiet(vec![
        vec![Fault::Refuse],
        vec![Fault::Delay(Duration::from_millis(300))],
    ]))
    .await
    .unwrap();
    let client = client(&emu, Transport::EventStream, &["acme/main"]);
    let reason = match client.connect(None).await {
        Err(e) => DisconnectReason::from(e),
        Ok(mut stream) => until_end(&mut stream).await.1,
    };
    assert!(matches!(reason, DisconnectReason::Network(_)), "{reason:?}");
    assert!(reason.to_string().contains("acme/main"), "{reason}");
    // A slow server is still a server.
    let mut stream = client.connect(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = emu.inject_message("acme/main", "after refusal");
    let (evs, _) = events(&mut stream, 1).await;
    assert_eq!(evs[0].id, m.event_id);
    emu.stop().await;
}

#[tokio::test]
async fn sse_presence_is_not_replayed_after_last_event_id() {
    let emu = Emulator::start(quiet(vec![])).await.unwrap();
    let client = client(&emu, Transport::EventStream, &["acme/main"]);
    let mut stream = client.connect(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = emu.inject_message("acme/main", "before the drop");
    emu.inject_presence("acme/main", "12");
    let (evs, _) = events(&mut stream, 2).await;
    assert_eq!(evs[0].id, a.event_id);
    assert_eq!(evs[1].kind, Kind::Presence, "live presence is streamed");
    let cursor = stream.cursor().clone();
    assert_eq!(
        cursor.last_event_id,
        Some(a.seq.to_string()),
        "presence has no id"
    );
    drop(stream);
    // While disconnected: presence (not stored) between stored messages.
    emu.inject_presence("acme/main", "13");
    let b = emu.inject_message("acme/main", "missed one");
    emu.inject_presence("acme/main", "14");
    let c = emu.inject_message("acme/main", "missed two");
    let mut stream = client.connect(Some(cursor)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    emu.inject_presence("acme/main", "15");
    let (evs, _) = events(&mut stream, 3).await;
    let got: Vec<(Kind, String, Option<String>)> = evs
        .iter()
        .map(|e| (e.kind, e.id.clone(), e.author.id.clone()))
        .collect();
    assert_eq!(got[0].1, b.event_id, "{got:?}");
    assert_eq!(got[1].1, c.event_id, "{got:?}");
    assert_eq!(
        (got[2].0, got[2].2.as_deref()),
        (Kind::Presence, Some("15")),
        "only the live presence, none replayed: {got:?}"
    );
    assert_eq!(
        emu.last_event_ids(),
        vec![None, Some(a.seq.to_string())],
        "resumed with Last-Event-ID"
    );
    emu.stop().await;
}

/// Reads events until one with each id of `until` arrived (bounded); returns them all.
async fn events_until(stream: &mut FlowdockStream, until: &[String]) -> Vec<Event> {
    let mut evs: Vec<Event> = Vec::new();
    let r = tokio::time::timeout(WAIT, async {
        while !until.iter().all(|id| evs.iter().any(|e| &e.id == id)) {
            match stream.next_item().await.expect("stream item") {
                SourceItem::Event { event, .. } => evs.push(event),
                SourceItem::Malformed { error } => panic!("malformed: {error}"),
                _ => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "timed out after {} events", evs.len());
    evs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_transports_agree_on_every_message_including_thread_events() {
    // Generated traffic (every event type, thread events among them) and both transports
    // reading the same emulator at once: each message id maps to the same event.
    let emu = Emulator::start(Config {
        rate: 150.0,
        seed: 13,
        history: 0,
        keepalive: Duration::from_millis(200),
        ..Config::default()
    })
    .await
    .unwrap();
    let flows = ["acme/main", "acme/ops"];
    let json = client(&emu, Transport::Json, &flows);
    let sse = client(&emu, Transport::EventStream, &flows);
    let (json_stream, sse_stream) = tokio::join!(json.connect(None), sse.connect(None));
    let (mut json_stream, mut sse_stream) = (json_stream.unwrap(), sse_stream.unwrap());
    // The traffic runs for a while (both responses buffer it), then each flow gets an end
    // marker, and each side reads up to both markers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ends: Vec<String> = flows
        .iter()
        .map(|flow| {
            emu.inject_thread_event(flow, "discussion", "end of test")
                .event_id
        })
        .collect();
    let json_evs = events_until(&mut json_stream, &ends).await;
    let sse_evs = events_until(&mut sse_stream, &ends).await;
    let by_id = |evs: &[Event]| -> std::collections::HashMap<String, Event> {
        evs.iter()
            .filter(|e| e.kind != Kind::Presence)
            .map(|e| (e.id.clone(), e.clone()))
            .collect()
    };
    let (json_by_id, sse_by_id) = (by_id(&json_evs), by_id(&sse_evs));
    // Both connected before the traffic they compare; the first moments may differ by when
    // each connection was registered, so compare from the first id both have, per flow.
    let committed = emu.committed();
    let mut compared = 0;
    let mut threads = 0;
    for flow in flows {
        let ids: Vec<&Committed> = committed.iter().filter(|c| c.flow == flow).collect();
        let first = ids
            .iter()
            .position(|c| {
                json_by_id.contains_key(&c.event_id) && sse_by_id.contains_key(&c.event_id)
            })
            .expect("a message both saw");
        let last = ids
            .iter()
            .position(|c| ends.contains(&c.event_id))
            .expect("the end marker");
        for c in &ids[first..=last] {
            let (Some(j), Some(s)) = (json_by_id.get(&c.event_id), sse_by_id.get(&c.event_id))
            else {
                panic!(
                    "{} ({}) missing on {}",
                    c.event_id,
                    c.event,
                    if json_by_id.contains_key(&c.event_id) {
                        "sse"
                    } else {
                        "json"
                    }
                )
            };
            assert_eq!(
                j, s,
                "{} ({}): the transports disagree",
                c.event_id, c.event
            );
            if c.event == "discussion" || c.event == "activity" {
                threads += 1;
                let raw = j.raw.as_ref().expect("raw");
                assert_eq!(raw["author"]["name"], "CI Bot", "{raw}");
                assert!(
                    raw["title"].as_str().is_some_and(|t| !t.is_empty()),
                    "{raw}"
                );
                assert!(!j.text.is_empty(), "{j:?}");
                if c.event == "discussion" {
                    assert_eq!(raw["body"].as_str(), Some(c.text.as_str()), "{raw}");
                }
            }
            compared += 1;
        }
    }
    assert!(compared > 100, "compared {compared} messages");
    assert!(threads >= 5, "compared {threads} thread events");
    emu.stop().await;
}

#[tokio::test]
async fn a_failed_stream_stays_failed() {
    for transport in [Transport::Json, Transport::EventStream] {
        let (emu, mut stream) = open(
            vec![vec![Fault::DropAfterBytes(40)]],
            transport,
            &["acme/main"],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        emu.inject_message("acme/main", "a message long enough to pass the cut");
        let (_, reason) = until_end(&mut stream).await;
        assert!(matches!(reason, DisconnectReason::Network(_)), "{reason:?}");
        for _ in 0..2 {
            let again = tokio::time::timeout(WAIT, stream.next_item())
                .await
                .expect("answers at once");
            assert_eq!(again, Err(reason.clone()), "{transport:?}: the same error");
        }
        emu.stop().await;
    }
}
