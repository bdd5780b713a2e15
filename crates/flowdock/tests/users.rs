//! Protocol tests of author names: the client resolves user ids through the REST users API
//! of the emulator (`GET /flows/:org/:flow/users` once per connection, `GET /users/:id` for an
//! id it does not know), on both transports, and never loses or holds back a message when
//! that API fails.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_model::{Event, Kind, Secret, SourceItem};
use emulator::flowdock::{Config, Emulator};
use emulator::{Fault, FaultPlan};
use flowdock::{Client, ClientConfig, FlowdockStream, Transport};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn quiet() -> Config {
    Config {
        rate: 0.0,
        history: 3,
        keepalive: Duration::from_millis(200),
        faults: Arc::new(FaultPlan::none()),
        ..Config::default()
    }
}

fn client(emu: &Emulator, transport: Transport, lookup_timeout: Duration) -> Client {
    let mut cfg = ClientConfig::new(
        "fd",
        Secret::new("flowdock-token"),
        vec!["acme/main".to_owned()],
    );
    cfg.settings.url = emu.url();
    cfg.settings.transport = transport;
    cfg.settings.private = true;
    cfg.user_lookup_timeout = lookup_timeout;
    Client::new(cfg).unwrap()
}

/// Connects and gives the server a moment to register the stream.
async fn open(emu: &Emulator, transport: Transport, lookup_timeout: Duration) -> FlowdockStream {
    let stream = client(emu, transport, lookup_timeout)
        .connect(None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream
}

/// Reads until `n` events arrived (bounded by a timeout).
async fn events(stream: &mut FlowdockStream, n: usize) -> Vec<Event> {
    let mut evs = Vec::new();
    let r = tokio::time::timeout(WAIT, async {
        while evs.len() < n {
            if let SourceItem::Event { event, .. } = stream.next_item().await.expect("item") {
                evs.push(event);
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "timed out after {} of {n} events: {evs:?}",
        evs.len()
    );
    evs
}

fn user_paths(emu: &Emulator) -> Vec<String> {
    emu.user_requests().into_iter().map(|r| r.path).collect()
}

async fn names_on(transport: Transport) {
    let emu = Emulator::start(quiet()).await.unwrap();
    let mut stream = open(&emu, transport, Duration::from_secs(10)).await;
    assert_eq!(
        user_paths(&emu),
        ["/flows/acme/main/users"],
        "the flow's users, once per connection"
    );
    let m = emu.inject_as("acme/main", "10", "message", json!("deploy done"), vec![]);
    emu.inject_message("acme/main", "from the inject author"); // user 2
    emu.inject_presence("acme/main", "12");
    emu.inject_private_from("7", "psst"); // 7 is in no flow: looked up by id
    emu.inject_private_from("7", "psst again");
    emu.inject_as(
        "acme/main",
        "2",
        "action",
        json!({"type": "block", "user": "9"}),
        vec![],
    );
    emu.inject_as(
        "acme/main",
        "0",
        "message",
        json!("from an integration"),
        vec![],
    );
    let evs = events(&mut stream, 7).await;
    let names: Vec<(Option<&str>, Option<&str>)> = evs
        .iter()
        .map(|e| (e.author.id.as_deref(), e.author.name.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            (Some("10"), Some("Ada")),
            (Some("2"), Some("Mia")),
            (Some("12"), Some("Linus")),
            (Some("7"), Some("Sam")),
            (Some("7"), Some("Sam")),
            (Some("2"), Some("Mia")),
            (None, None),
        ],
        "{evs:?}"
    );
    assert_eq!(evs[0].id, m.event_id);
    assert_eq!(evs[2].kind, Kind::Presence);
    let pm = &evs[3];
    assert!(pm.private);
    assert_eq!(pm.to.as_ref().unwrap().id.as_deref(), Some("1"));
    assert_eq!(
        pm.to.as_ref().unwrap().name.as_deref(),
        Some("Joe"),
        "the recipient is named too"
    );
    assert_eq!(evs[5].kind, Kind::Kick);
    assert_eq!(evs[5].text, "blocked Spammy");
    assert_eq!(evs[5].detail.as_ref().unwrap()["user_name"], "Spammy");
    // Cached: one lookup per unknown id, none for members, none for "0".
    assert_eq!(
        user_paths(&emu),
        ["/flows/acme/main/users", "/users/7", "/users/9"]
    );
    assert!(emu.user_requests().iter().all(|r| r.authorized));
    emu.stop().await;
}

#[tokio::test]
async fn sse_events_carry_author_names() {
    names_on(Transport::EventStream).await;
}

#[tokio::test]
async fn json_stream_events_carry_author_names() {
    names_on(Transport::Json).await;
}

async fn failing_users_api(transport: Transport, fault: Fault) {
    let emu = Emulator::start(quiet()).await.unwrap();
    emu.set_users_fault(Some(fault));
    let started = Instant::now();
    let mut stream = open(&emu, transport, Duration::from_secs(1)).await;
    let mut sent = Vec::new();
    for i in 0..20 {
        let user = (10 + i % 10).to_string();
        sent.push(emu.inject_as(
            "acme/main",
            &user,
            "message",
            json!(format!("m{i}")),
            vec![],
        ));
    }
    emu.inject_private_from("7", "psst");
    emu.inject_as("acme/main", "31", "message", json!("stranger"), vec![]);
    let evs = events(&mut stream, 22).await;
    let ids: Vec<&str> = evs[..20].iter().map(|e| e.id.as_str()).collect();
    let want: Vec<&str> = sent.iter().map(|c| c.event_id.as_str()).collect();
    assert_eq!(ids, want, "every message, in order");
    for e in &evs {
        assert!(e.author.id.is_some(), "{e:?}");
        assert_eq!(e.author.name, None, "ids only: {e:?}");
    }
    assert_eq!(evs[21].text, "stranger");
    // A failure pauses lookups: not one per event, and no long wait (one timeout at most).
    assert!(emu.user_requests().len() <= 2, "{:?}", user_paths(&emu));
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "held back for {:?}",
        started.elapsed()
    );
    emu.stop().await;
}

#[tokio::test]
async fn sse_failing_users_api_still_delivers_every_message() {
    failing_users_api(
        Transport::EventStream,
        Fault::Status {
            code: 500,
            retry_after: None,
        },
    )
    .await;
}

#[tokio::test]
async fn json_failing_users_api_still_delivers_every_message() {
    failing_users_api(
        Transport::Json,
        Fault::Status {
            code: 503,
            retry_after: Some(1),
        },
    )
    .await;
}

#[tokio::test]
async fn stalling_users_api_delays_delivery_by_one_timeout_at_most() {
    failing_users_api(
        Transport::EventStream,
        Fault::Delay(Duration::from_secs(60)),
    )
    .await;
}

#[tokio::test]
async fn a_user_who_appears_later_gets_resolved() {
    for transport in [Transport::EventStream, Transport::Json] {
        let emu = Emulator::start(quiet()).await.unwrap();
        let mut stream = open(&emu, transport, Duration::from_secs(10)).await;
        // Unknown at connect: not in the flow's list the client fetched.
        emu.add_user("30", "Newbie", "New Person", &["acme/main"]);
        emu.inject_as("acme/main", "30", "message", json!("hi all"), vec![]);
        emu.inject_as("acme/main", "30", "message", json!("again"), vec![]);
        emu.inject_as(
            "acme/main",
            "44",
            "message",
            json!("nobody knows me"),
            vec![],
        );
        emu.inject_as("acme/main", "44", "message", json!("still nobody"), vec![]);
        let evs = events(&mut stream, 4).await;
        assert_eq!(
            evs[0].author.name.as_deref(),
            Some("Newbie"),
            "{transport:?}"
        );
        assert_eq!(evs[1].author.name.as_deref(), Some("Newbie"));
        assert_eq!(evs[2].author.name, None, "404: the id only");
        assert_eq!(evs[3].author.name, None);
        assert_eq!(
            user_paths(&emu),
            ["/flows/acme/main/users", "/users/30", "/users/44"],
            "{transport:?}: one lookup per unknown id, a 404 remembered"
        );
        emu.stop().await;
    }
}

#[tokio::test]
async fn an_abandoned_lookup_loses_nothing_and_is_not_waited_for_again() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let mut stream = open(&emu, Transport::EventStream, Duration::from_secs(30)).await;
    emu.set_users_fault(Some(Fault::Delay(Duration::from_secs(60))));
    let c = emu.inject_private_from("7", "psst");
    // The caller gives up while the event waits for its lookup (a supervisor's timer).
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "never waited for the lookup");
        match tokio::time::timeout(Duration::from_millis(1500), stream.next_item()).await {
            Err(_) => break,
            Ok(Ok(SourceItem::Event { event, .. })) => panic!("not waiting: {event:?}"),
            Ok(Ok(_)) => {} // a retry hint or a keep-alive before the event
            Ok(Err(e)) => panic!("stream ended: {e}"),
        }
    }
    // (1.5 s without an item while keep-alives come every 200 ms: it was waiting for /users/7.)
    // The event is still there, and goes out at once with its id only.
    let started = Instant::now();
    let evs = events(&mut stream, 1).await;
    assert_eq!(evs[0].id, c.event_id);
    assert_eq!(evs[0].author.id.as_deref(), Some("7"));
    assert_eq!(evs[0].author.name, None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    emu.stop().await;
}

#[tokio::test]
async fn names_can_be_switched_off() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let mut cfg = ClientConfig::new(
        "fd",
        Secret::new("flowdock-token"),
        vec!["acme/main".into()],
    );
    cfg.settings.url = emu.url();
    cfg.resolve_names = false;
    let mut stream = Client::new(cfg).unwrap().connect(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    emu.inject_as("acme/main", "10", "message", json!("x"), vec![]);
    let evs = events(&mut stream, 1).await;
    assert_eq!(evs[0].author.name, None);
    assert!(emu.user_requests().is_empty());
    emu.stop().await;
}
