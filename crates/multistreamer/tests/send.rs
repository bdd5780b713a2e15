//! Every outcome of sending, against the emulator: confirmed by the server's echo (text,
//! emote, private, through the writer flow), sent but not confirmed (a writer's message the
//! server does not echo), unknown account, not writable, writer timeout, a required echo that
//! never comes, `/msg` from the IRC account 0, connection failures.

use std::time::Duration;

use chat_model::{Kind, Secret, SourceItem};
use emulator::multistreamer::{Config, Emulator};
use multistreamer::{ConnectOptions, Error, SendError, SendRequest, connect, send_once};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);

fn quiet() -> Config {
    Config {
        rate: 0.0,
        status_every: None,
        ..Config::default()
    }
}

fn opts(emu: &Emulator) -> ConnectOptions {
    ConnectOptions::new(emu.url(), emu.stream(), Secret::new(emu.token()))
}

fn req(account: Option<u64>, to: Option<u64>, text: &str, emote: bool) -> SendRequest {
    SendRequest {
        account,
        to_account: to,
        text: text.into(),
        emote,
        require_echo: false,
    }
}

/// The echo event of a confirmed send.
fn echo(c: &multistreamer::SendConfirmation) -> &chat_model::Event {
    c.echo.as_ref().expect("confirmed by the echo")
}

#[tokio::test]
async fn default_account_text_is_confirmed_by_the_echo() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let c = send_once(
        &opts(&emu),
        &req(None, None, "Sending a message!!!", false),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!((c.account_id, c.cur_stream_account_id), (14, 14));
    assert_eq!(c.account_name, "jprjrdev");
    assert_eq!(c.network, "twitch");
    assert!(!c.writer_created && !c.emote);
    assert_eq!(c.text, "Sending a message!!!");
    assert_eq!(echo(&c).kind, Kind::Message);
    assert_eq!(echo(&c).author.name.as_deref(), Some("jprjrdev"));
    assert!(
        c.summary()
            .contains("as jprjrdev (twitch, account 14 → 14)"),
        "{}",
        c.summary()
    );
    // What went over the wire is exactly the document's shape.
    let sent: Vec<_> = emu.received();
    assert_eq!(sent[0], json!({"type": "status"}));
    assert_eq!(
        sent[1],
        json!({"type": "text", "account_id": 14, "cur_stream_account_id": 14, "text": "Sending a message!!!"})
    );
    let committed = emu.committed_chat();
    assert_eq!(committed.len(), 1);
    assert_eq!(echo(&c).raw.as_ref().unwrap(), &committed[0].json);
    emu.stop().await;
}

#[tokio::test]
async fn emote_and_irc_private_message() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let c = send_once(&opts(&emu), &req(Some(14), None, "waves", true), TIMEOUT)
        .await
        .unwrap();
    assert!(c.emote);
    assert_eq!(echo(&c).kind, Kind::Emote);

    let c = send_once(
        &opts(&emu),
        &req(
            Some(0),
            Some(0),
            "/msg somebody hey this is a private message",
            false,
        ),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert_eq!(c.private_to.as_deref(), Some("somebody"));
    assert_eq!(c.text, "hey this is a private message");
    assert!(echo(&c).private);
    assert_eq!(
        echo(&c).to.as_ref().unwrap().name.as_deref(),
        Some("somebody")
    );
    assert_eq!(c.network, "irc");
    assert!(c.summary().contains("private message to somebody"));
    let last = emu.received().last().cloned().unwrap();
    assert_eq!(
        last,
        json!({"type": "text", "account_id": 0, "cur_stream_account_id": 0,
               "text": "/msg somebody hey this is a private message"})
    );
    emu.stop().await;
}

#[tokio::test]
async fn writable_but_not_ready_goes_through_the_writer_flow() {
    let emu = Emulator::start(Config {
        writer_delay: Duration::from_millis(200),
        ..quiet()
    })
    .await
    .unwrap();
    let c = send_once(
        &opts(&emu),
        &req(
            Some(17),
            None,
            "Here's one where I'm not the streaming account",
            false,
        ),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert!(c.writer_created);
    assert_eq!((c.account_id, c.cur_stream_account_id), (17, 14));
    assert_eq!(c.account_name, "gamethattunedev");
    let types: Vec<String> = emu
        .received()
        .iter()
        .map(|m| m["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["status", "writer", "text"]);
    assert_eq!(
        emu.received()[1],
        json!({"type": "writer", "account_id": 17, "cur_stream_account_id": 14})
    );
    // Now the account is ready: the next send needs no writer.
    let c = send_once(
        &opts(&emu),
        &req(Some(17), Some(14), "again", false),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert!(!c.writer_created);
    emu.stop().await;
}

#[tokio::test]
async fn every_connected_client_sees_the_echo() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let mut watcher = connect(&opts(&emu)).await.unwrap();
    let c = send_once(
        &opts(&emu),
        &req(Some(0), None, "hello everyone", false),
        TIMEOUT,
    )
    .await
    .unwrap();
    let seen = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let SourceItem::Event { event, .. } = watcher.next_item().await.unwrap() {
                if event.kind == Kind::Message {
                    return event;
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        seen.id,
        echo(&c).id,
        "both clients derive the same id for the echo"
    );
    emu.stop().await;
}

#[tokio::test]
async fn send_chat_keeps_events_for_the_reader() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let mut conn = connect(&opts(&emu)).await.unwrap();
    let c = conn
        .send_chat(
            &req(Some(0), None, "from a live connection", false),
            TIMEOUT,
        )
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        if let SourceItem::Event { event, .. } = conn.next_item().await.unwrap() {
            if event.kind == Kind::Message {
                assert_eq!(event.id, echo(&c).id);
            }
            kinds.push(event.kind);
        }
    }
    assert_eq!(kinds, [Kind::Status, Kind::Message]);
    emu.stop().await;
}

#[tokio::test]
async fn unknown_and_read_only_accounts_are_refused_before_sending() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let e = send_once(&opts(&emu), &req(Some(99), None, "hi", false), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            SendError::UnknownAccount {
                account: 99,
                stream: 21,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("17 gamethattunedev on twitch"),
        "{e}"
    );
    let e = send_once(&opts(&emu), &req(Some(25), None, "hi", false), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::NotWritable { account: 25, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("not writable"), "{e}");
    let e = send_once(&opts(&emu), &req(Some(14), Some(42), "hi", false), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::UnknownTargetAccount { account: 42, .. }),
        "{e}"
    );
    // Nothing but status requests reached the server.
    assert!(emu.received().iter().all(|m| m["type"] == "status"));
    emu.stop().await;
}

#[tokio::test]
async fn a_writer_that_never_comes_is_a_timeout() {
    let emu = Emulator::start(Config {
        broken_writers: vec![17],
        ..quiet()
    })
    .await
    .unwrap();
    let e = send_once(
        &opts(&emu),
        &req(Some(17), None, "hi", false),
        Duration::from_millis(1500),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            SendError::WriterTimeout {
                account: 17,
                to_account: 14,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("did not become ready within 1.5s"),
        "{e}"
    );
    // The text itself was never sent.
    assert!(emu.received().iter().all(|m| m["type"] != "text"));
    emu.stop().await;
}

#[tokio::test]
async fn no_echo_fails_only_when_the_echo_is_required() {
    let emu = Emulator::start(Config {
        echo: false,
        ..quiet()
    })
    .await
    .unwrap();
    let required = SendRequest {
        require_echo: true,
        ..req(None, None, "into the void", false)
    };
    let e = send_once(&opts(&emu), &required, Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::NotConfirmed { account: 14, .. }),
        "{e}"
    );
    assert!(emu.received().iter().any(|m| m["text"] == "into the void"));
    assert!(e.to_string().contains("required"), "{e}");
    // Not required: sent, not confirmed, after at most the echo wait.
    let started = std::time::Instant::now();
    let c = send_once(
        &opts(&emu),
        &req(None, None, "into the void again", false),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert!(!c.confirmed());
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    assert_eq!(c.echo_wait, multistreamer::DEFAULT_ECHO_WAIT);
    assert!(
        c.summary()
            .starts_with("sent (not confirmed) text as jprjrdev"),
        "{}",
        c.summary()
    );
    emu.stop().await;
}

#[tokio::test]
async fn a_created_writers_message_without_echo_is_sent_not_confirmed() {
    let emu = Emulator::start(Config {
        echo_writer_messages: false,
        writer_delay: Duration::from_millis(100),
        ..quiet()
    })
    .await
    .unwrap();
    let c = send_once(
        &opts(&emu),
        &req(Some(17), None, "via a writer", false),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert!(c.writer_created);
    assert!(!c.confirmed(), "the emulator did not echo it: {c:?}");
    assert_eq!(c.text, "via a writer");
    assert_eq!((c.account_id, c.cur_stream_account_id), (17, 14));
    assert!(
        c.summary().contains("sent (not confirmed)"),
        "{}",
        c.summary()
    );
    let delivered = emu.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].text, "via a writer");
    assert!(!delivered[0].echoed);
    assert!(emu.committed_chat().is_empty(), "no echo was broadcast");
    // Required: the missing echo is a failure, and the message was still delivered.
    let required = SendRequest {
        require_echo: true,
        ..req(Some(17), None, "again via a writer", false)
    };
    let e = send_once(&opts(&emu), &required, Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::NotConfirmed { account: 17, .. }),
        "{e}"
    );
    assert_eq!(emu.delivered().len(), 2);
    // An account whose writer existed from the start is still echoed.
    let c = send_once(&opts(&emu), &req(Some(14), None, "echoed", false), TIMEOUT)
        .await
        .unwrap();
    assert!(c.confirmed());
    emu.stop().await;
}

#[tokio::test]
async fn msg_without_an_account_is_sent_from_irc_account_0() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let c = send_once(
        &opts(&emu),
        &req(
            None,
            None,
            "/msg somebody hey this is a private message",
            false,
        ),
        TIMEOUT,
    )
    .await
    .unwrap();
    assert!(c.confirmed());
    assert_eq!((c.account_id, c.cur_stream_account_id), (0, 0));
    assert_eq!(c.private_to.as_deref(), Some("somebody"));
    assert!(echo(&c).private);
    assert_eq!(
        emu.received().last().cloned().unwrap(),
        json!({"type": "text", "account_id": 0, "cur_stream_account_id": 0,
               "text": "/msg somebody hey this is a private message"})
    );
    emu.stop().await;
}

#[tokio::test]
async fn connection_failures_are_typed() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let mut o = opts(&emu);
    o.token = Secret::new("not-the-token");
    let e = send_once(&o, &req(None, None, "hi", false), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::Connection(Error::Http { status: 403, .. })),
        "{e}"
    );
    assert!(e.to_string().starts_with("connection failed:"), "{e}");
    assert!(!e.to_string().contains("not-the-token"), "{e}");
    let addr = emu.addr();
    emu.stop().await;
    let o = ConnectOptions::new(format!("ws://{addr}"), 21, Secret::new("x"));
    let e = send_once(&o, &req(None, None, "hi", false), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(e, SendError::Connection(Error::Connect { .. })),
        "{e}"
    );
}

#[tokio::test]
async fn empty_text_is_refused() {
    let emu = Emulator::start(quiet()).await.unwrap();
    let e = send_once(&opts(&emu), &req(None, None, "   ", false), TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(e, SendError::EmptyText);
    emu.stop().await;
}
