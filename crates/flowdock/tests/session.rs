//! Property tests of the whole connection plan, without sockets: a model server answers the
//! [`Session`]'s requests (REST baselines and backfill pages, the stream) for both
//! transports; streams are split into arbitrary chunks and cut anywhere (in the middle of a
//! message, between a message and its `\r`, inside a keep-alive), and the next session
//! resumes from the cursor. Every message must arrive exactly once, in order.

use std::time::Instant;

use chat_model::SourceItem;
use flowdock::{FlowdockCursor, Request, Response, Session, Settings, Transport};
use proptest::prelude::*;
use serde_json::json;

/// Messages before the test starts (the baseline sees them; they are not expected).
const HISTORY: u64 = 3;
const FLOW: &str = "acme/main";

fn now() -> chat_model::Timestamp {
    chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn text(id: u64) -> String {
    match id % 4 {
        0 => format!("line one of {id}\nline two"),
        1 => format!("日本語 ü 🎉 {id}"),
        2 => format!("quote \" and \\ {id}"),
        _ => format!("m{id}"),
    }
}

fn message(id: u64) -> serde_json::Value {
    json!({"id": id, "event": "message", "flow": "acme:main", "content": text(id), "user": "3",
           "sent": 1_400_000_000_000u64 + id})
}

/// How the stream is written.
#[derive(Clone, Copy, Debug)]
struct Layout {
    crlf: bool,
    pretty: bool,
    keepalive_every: usize,
}

/// One connection of the run.
#[derive(Clone, Debug)]
struct Conn {
    /// Messages committed between the baseline and the stream's opening.
    before_open: u64,
    /// Messages committed between the opening and the backfill (in both: overlap).
    before_backfill: u64,
    /// Where the stream is cut, as a fraction (per mille) of its length.
    cut: u16,
    /// A network error (else a clean end of the body).
    reset: bool,
    /// Chunk boundaries (per mille of the fed length).
    splits: Vec<u16>,
    /// How much of the fed stream (per mille) arrives before the backfill is answered (its
    /// messages are then committed before the backfill: in both).
    early: u16,
}

/// Each frame of a stream body: (message id, first byte, end).
type Frames = Vec<(u64, usize, usize)>;

/// The stream body for messages `ids`: the bytes, and its frames.
fn body(transport: Transport, ids: &[u64], layout: Layout) -> (Vec<u8>, Frames) {
    let mut out = Vec::new();
    let mut frames = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        if layout.keepalive_every > 0 && i % layout.keepalive_every == 0 {
            out.extend_from_slice(match transport {
                Transport::Json => b"\n",
                Transport::EventStream => b": keep-alive\n\n",
            });
        }
        let m = message(id);
        let text = if layout.pretty {
            serde_json::to_string_pretty(&m).unwrap()
        } else {
            m.to_string()
        };
        let start = out.len();
        match transport {
            Transport::Json => {
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(if layout.crlf { b"\r\n" } else { b"\r" });
            }
            Transport::EventStream => {
                out.extend_from_slice(format!("id: {id}\n").as_bytes());
                for line in text.lines() {
                    out.extend_from_slice(format!("data: {line}\n").as_bytes());
                }
                out.extend_from_slice(b"\n");
            }
        }
        frames.push((id, start, out.len()));
    }
    (out, frames)
}

fn ok<'a>(content_type: &'a str, body: &'a [u8]) -> Response<'a> {
    Response::ok(content_type, body)
}

/// Drains the session's items: message ids (and their texts checked) in order.
fn drain(session: &mut Session, got: &mut Vec<u64>) -> Result<(), TestCaseError> {
    while let Some(item) = session.poll_item() {
        match item {
            SourceItem::Event { event, cursor } => {
                prop_assert!(cursor.is_some());
                let id: u64 = event.id.rsplit(':').next().unwrap().parse().unwrap();
                prop_assert_eq!(&event.text, &text(id));
                prop_assert_eq!(event.room.as_str(), FLOW);
                got.push(id);
            }
            SourceItem::Malformed { error } => prop_assert!(false, "malformed: {}", error),
            _ => {}
        }
    }
    Ok(())
}

/// Runs `conns` connections (then one that is not cut) against a model server holding
/// `total` new messages; returns the ids delivered.
fn run(
    transport: Transport,
    total: u64,
    limit: u32,
    layout: Layout,
    conns: &[Conn],
) -> Result<Vec<u64>, TestCaseError> {
    let last = HISTORY + total;
    let mut settings = Settings::new("p", vec![FLOW.to_owned()]);
    settings.url = "http://flowdock.test".into();
    settings.transport = transport;
    settings.backfill_limit = limit;
    let settings = settings.resolve().unwrap();
    let mut committed = HISTORY;
    let mut got = Vec::new();
    let mut cursor: Option<FlowdockCursor> = None;
    // The id of the last SSE event received whole: what `Last-Event-ID` must carry.
    let mut last_event: Option<u64> = None;
    let final_conn = Conn {
        before_open: total,
        before_backfill: 0,
        cut: 1000,
        reset: false,
        splits: vec![],
        early: 0,
    };
    for (n, conn) in conns.iter().chain([&final_conn]).enumerate() {
        let mut session = Session::new(settings.clone(), cursor.clone());
        let mut stream_from = None;
        // The stream's bytes and frames, where it is cut, and how much was fed.
        let mut stream: Option<(Vec<u8>, Frames, usize)> = None;
        let mut start = 0;
        let mut backfilled_once = false;
        let mut pages = 0;
        while let Some(request) = session.poll_request() {
            match request {
                Request::Backfill {
                    since_id: None,
                    flow,
                    limit: 1,
                    ..
                } => {
                    prop_assert_eq!(flow.as_str(), FLOW);
                    prop_assert!(stream_from.is_none(), "baselines come first");
                    let latest = if committed > 0 {
                        vec![message(committed)]
                    } else {
                        vec![]
                    };
                    let body = serde_json::to_vec(&latest).unwrap();
                    session.handle_response(ok("application/json", &body), now());
                }
                Request::Stream {
                    last_event_id,
                    accept,
                    ..
                } => {
                    prop_assert_eq!(accept, transport.accept());
                    match transport {
                        Transport::Json => prop_assert_eq!(last_event_id.clone(), None),
                        Transport::EventStream => prop_assert_eq!(
                            last_event_id.clone(),
                            last_event.map(|id| id.to_string()),
                            "connection {} resumes after the last whole event",
                            n
                        ),
                    }
                    committed = (committed + conn.before_open).min(last);
                    // The server replays after `Last-Event-ID`; else the stream is live only.
                    let from = match last_event_id {
                        Some(id) => id.parse::<u64>().unwrap(),
                        None => committed,
                    };
                    stream_from = Some(from);
                    session.handle_response(ok(transport.accept(), b""), now());
                    let ids: Vec<u64> = (from + 1..=last).collect();
                    let (bytes, frames) = body(transport, &ids, layout);
                    let cut = bytes.len() * usize::from(conn.cut.min(1000)) / 1000;
                    start = cut * usize::from(conn.early.min(1000)) / 1000;
                    session.handle_chunk(&bytes[..start], Instant::now(), now());
                    for &(id, begin, _) in &frames {
                        if begin < start {
                            committed = committed.max(id);
                        }
                    }
                    stream = Some((bytes, frames, cut));
                }
                Request::Backfill {
                    since_id: Some(since),
                    limit: page_limit,
                    ..
                } => {
                    prop_assert!(stream_from.is_some(), "backfill after the stream opened");
                    prop_assert!(
                        transport == Transport::Json || last_event.is_none(),
                        "SSE backfills only without an event id"
                    );
                    pages += 1;
                    prop_assert!(pages <= 50);
                    if !backfilled_once {
                        committed = (committed + conn.before_backfill).min(last);
                        backfilled_once = true;
                    }
                    let page: Vec<_> = (since + 1..=committed)
                        .take(page_limit as usize)
                        .map(message)
                        .collect();
                    let body = serde_json::to_vec(&page).unwrap();
                    session.handle_response(ok("application/json", &body), now());
                }
                other => prop_assert!(false, "unexpected request {:?}", other),
            }
            drain(&mut session, &mut got)?;
        }
        prop_assert!(session.error().is_none(), "{:?}", session.error());
        prop_assert!(session.is_live());
        let (bytes, frames, cut) = stream.expect("a stream was opened");
        let mut cuts: Vec<usize> = conn
            .splits
            .iter()
            .map(|s| cut * usize::from(*s.min(&1000)) / 1000)
            .collect();
        cuts.sort_unstable();
        for c in cuts.into_iter().chain([cut]) {
            if c > start {
                session.handle_chunk(&bytes[start..c], Instant::now(), now());
                drain(&mut session, &mut got)?;
                start = c;
            }
        }
        if conn.reset {
            session.handle_network_error("connection reset by peer");
        } else {
            session.handle_end(Instant::now());
        }
        drain(&mut session, &mut got)?;
        // Over, for good, whatever comes after.
        let error = session.error().expect("the stream ended").to_string();
        session.handle_chunk(&bytes[cut..], Instant::now(), now());
        session.handle_end(Instant::now());
        prop_assert!(session.poll_item().is_none());
        prop_assert_eq!(session.error().unwrap().to_string(), error);
        // The server committed what it began to send.
        for &(id, begin, end) in &frames {
            if begin < cut {
                committed = committed.max(id);
            }
            if end <= cut && transport == Transport::EventStream {
                last_event = Some(id);
            }
        }
        cursor = Some(session.cursor().clone());
    }
    Ok(got)
}

fn conn() -> impl Strategy<Value = Conn> {
    (
        0u64..4,
        0u64..4,
        0u16..=1000,
        any::<bool>(),
        proptest::collection::vec(0u16..=1000, 0..12),
        prop_oneof![Just(0u16), 0u16..=1000],
    )
        .prop_map(
            |(before_open, before_backfill, cut, reset, splits, early)| Conn {
                before_open,
                before_backfill,
                cut,
                reset,
                splits,
                early,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn every_message_once_in_order_through_drops_and_resumes(
        sse in any::<bool>(),
        total in 1u64..16,
        limit in 1u32..5,
        crlf in any::<bool>(),
        pretty in any::<bool>(),
        keepalive_every in 0usize..3,
        conns in proptest::collection::vec(conn(), 0..5),
    ) {
        let transport = if sse { Transport::EventStream } else { Transport::Json };
        let layout = Layout { crlf, pretty, keepalive_every };
        let got = run(transport, total, limit, layout, &conns)?;
        let want: Vec<u64> = (HISTORY + 1..=HISTORY + total).collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn a_cut_between_a_message_and_its_cr_resumes_without_a_duplicate() {
    // The whole object arrived, its `\r` did not: it is not delivered (it might be cut short),
    // and the resumed session backfills it, once.
    let layout = Layout {
        crlf: false,
        pretty: false,
        keepalive_every: 0,
    };
    let (bytes, _) = body(Transport::Json, &[HISTORY + 1], layout);
    let len = bytes.len();
    let cut = (0..=1000u16)
        .find(|c| len * usize::from(*c) / 1000 == len - 1)
        .expect("a cut before the last byte");
    for reset in [false, true] {
        let conns = [Conn {
            before_open: 0,
            before_backfill: 0,
            cut,
            reset,
            splits: vec![],
            early: 0,
        }];
        let got = run(Transport::Json, 1, 3, layout, &conns).unwrap();
        assert_eq!(got, [HISTORY + 1], "reset: {reset}");
    }
}
