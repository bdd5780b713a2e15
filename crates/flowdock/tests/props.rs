//! Property tests: chunking never changes what the decoder yields (JSON stream framed on
//! `\r` only: `\r` or `\r\n` endings, pretty-printed objects with raw newlines, any
//! whitespace keep-alives between frames), and the mapping never fails on any message shape.

use std::time::Instant;

use chat_model::{Event, SourceItem};
use flowdock::{FlowdockCursor, Response, Session, Settings, Transport, WireMessage, to_event};
use proptest::prelude::*;
use serde_json::{Value, json};

fn now() -> chat_model::Timestamp {
    chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn message(id: u64, flow: &str, text: &str) -> Value {
    json!({"id": id, "event": "message", "flow": flow, "content": text, "user": "3", "sent": 1_400_000_000_000u64 + id})
}

/// How a JSON-stream body is laid out: the frame ending, pretty-printing, and the
/// keep-alive whitespace put between frames.
#[derive(Clone, Copy, Debug)]
struct Layout {
    crlf: bool,
    pretty: bool,
    keepalive: &'static str,
}

/// A stream body for `transport` holding `msgs`, with keep-alives between some of them.
fn body(transport: Transport, msgs: &[Value], layout: Layout, keepalive_every: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if keepalive_every > 0 && i % keepalive_every == 0 {
            out.extend_from_slice(match transport {
                Transport::Json => layout.keepalive.as_bytes(),
                Transport::EventStream => b": ka\n\n",
            });
        }
        match transport {
            Transport::Json => {
                let text = if layout.pretty {
                    serde_json::to_string_pretty(m).unwrap()
                } else {
                    m.to_string()
                };
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(if layout.crlf { b"\r\n" } else { b"\r" });
            }
            Transport::EventStream => {
                out.extend_from_slice(format!("id: {i}\ndata: {m}\n\n").as_bytes());
            }
        }
    }
    out
}

fn decode(
    transport: Transport,
    bytes: &[u8],
    cuts: &[usize],
) -> (Vec<Event>, usize, FlowdockCursor) {
    // The private stream alone: no REST requests, straight to the stream.
    let mut settings = Settings::new("p", vec![]);
    settings.private = true;
    settings.transport = transport;
    settings.max_frame = 1 << 20;
    let mut d = Session::new(settings, Some(FlowdockCursor::default()));
    let stream = d.poll_request().expect("the stream request");
    assert_eq!(stream.accept(), transport.accept());
    d.handle_response(
        Response {
            status: 200,
            content_type: Some(transport.accept()),
            retry_after: None,
            body: b"",
        },
        now(),
    );
    assert!(d.poll_request().is_none() && d.is_live());
    let mut start = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts.into_iter().chain([bytes.len()]) {
        if c >= start {
            d.handle_chunk(&bytes[start..c], Instant::now(), now());
            start = c;
        }
    }
    d.handle_end(Instant::now());
    let mut events = Vec::new();
    let mut keepalives = 0;
    while let Some(i) = d.poll_item() {
        match i {
            SourceItem::Event { event, .. } => events.push(event),
            SourceItem::KeepAlive => keepalives += 1,
            SourceItem::Malformed { error } => panic!("unexpected malformed: {error}"),
            _ => {}
        }
    }
    (events, keepalives, d.cursor().clone())
}

fn text_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,20}",
        Just("日本語 ü 🎉".to_owned()),
        Just("two\nlines".to_owned()),
        Just("quote \" and \\ backslash".to_owned()),
    ]
}

proptest! {
    #[test]
    fn any_chunking_yields_the_same_events(
        texts in proptest::collection::vec(text_strategy(), 1..12),
        cuts in proptest::collection::vec(0usize..10_000, 0..20),
        crlf in any::<bool>(),
        pretty in any::<bool>(),
        keepalive in prop_oneof![Just("\n"), Just(" "), Just("\n\n"), Just("\t\n "), Just("\r\n")],
        sse in any::<bool>(),
        keepalive_every in 0usize..4,
    ) {
        let transport = if sse { Transport::EventStream } else { Transport::Json };
        let layout = Layout { crlf, pretty, keepalive };
        let msgs: Vec<Value> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| message(i as u64 + 1, if i % 2 == 0 { "o:a" } else { "o:b" }, t))
            .collect();
        let bytes = body(transport, &msgs, layout, keepalive_every);
        let (whole, ka_whole, cur_whole) = decode(transport, &bytes, &[]);
        let (split, ka_split, cur_split) = decode(transport, &bytes, &cuts);
        prop_assert_eq!(&whole, &split);
        // Keep-alives are proof of life: a run of whitespace split over several chunks is
        // reported once per chunk, so splitting never yields fewer (frames never change).
        prop_assert!(ka_split >= ka_whole, "{} < {}", ka_split, ka_whole);
        prop_assert!(keepalive_every == 0 || ka_whole > 0);
        prop_assert_eq!(cur_whole, cur_split);
        prop_assert_eq!(whole.len(), texts.len());
        for (e, t) in whole.iter().zip(&texts) {
            prop_assert_eq!(&e.text, t);
        }
    }

    #[test]
    fn mapping_never_fails_on_any_shape(
        event in prop_oneof![
            Just("message"), Just("comment"), Just("message-edit"), Just("tag-change"),
            Just("action"), Just("status"), Just("file"), Just("activity.user"),
            Just("activity"), Just("discussion"), Just("vcs"), Just("flow-add"), Just("")
        ],
        content in prop_oneof![
            Just(Value::Null),
            "[a-z]{0,8}".prop_map(Value::String),
            any::<i64>().prop_map(|n| json!(n)),
            Just(json!({"type": "join"})),
            Just(json!({"message": 3, "updated_content": "x"})),
            Just(json!({"message": "3", "add": ["a"], "remove": []})),
            Just(json!({"text": "t", "title": "x"})),
            Just(json!([1, 2])),
        ],
        id in prop_oneof![Just(Value::Null), any::<u32>().prop_map(|n| json!(n)), "[0-9a-z]{0,6}".prop_map(Value::String)],
        user in prop_oneof![Just(Value::Null), Just(json!(0)), Just(json!("0")), Just(json!("7"))],
        sent in prop_oneof![Just(Value::Null), any::<i64>().prop_map(|n| json!(n)), Just(json!("2012-04-20T18:11:05.446Z")), Just(json!("garbage"))],
        tags in proptest::collection::vec("[a-z:0-9]{0,10}", 0..4),
    ) {
        let raw = json!({"event": event, "content": content, "id": id, "user": user, "sent": sent, "tags": tags, "flow": "o:f"});
        let msg: WireMessage = serde_json::from_value(raw.clone()).unwrap();
        let e = to_event("p", &msg, raw, now());
        prop_assert!(e.id.starts_with("flowdock:o/f:"));
    }
}
