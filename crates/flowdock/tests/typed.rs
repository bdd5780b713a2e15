//! The typed read of a frame (no `raw` kept: straight from the frame's text into typed
//! fields) gives exactly what the `serde_json::Value` read gives (with `raw` kept): the same
//! items, events, ids, cursors and malformed-frame reports, on generated messages with
//! unknown, repeated, missing and wrongly typed fields, unicode and escapes (valid and not),
//! nesting, and frames that are not objects.

use std::time::Instant;

use chat_model::SourceItem;
use flowdock::{FlowdockCursor, Response, Session, Settings, Transport};
use proptest::prelude::*;

fn now() -> chat_model::Timestamp {
    chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

/// The items of a live stream (no REST) with `keep_raw`, fed `body` at once.
fn items(transport: Transport, keep_raw: bool, flows: &[&str], body: &[u8]) -> Vec<SourceItem> {
    let mut settings = Settings::new("p", flows.iter().map(|f| f.to_string()).collect());
    // No `org/flow` flow: no REST requests. One flow (`o:f`): the stream's only flow.
    settings.private = flows.is_empty();
    settings.transport = transport;
    settings.keep_raw = keep_raw;
    let mut s = Session::new(settings, Some(FlowdockCursor::default()));
    let req = s.poll_request().expect("the stream request");
    assert!(req.is_stream(), "{req:?}");
    s.handle_response(Response::ok(transport.accept(), b""), now());
    s.handle_chunk(body, Instant::now(), now());
    s.handle_end(Instant::now());
    std::iter::from_fn(|| s.poll_item()).collect()
}

/// Both reads of `frames`, `raw` dropped from the kept one; asserts the typed one kept none.
fn both(
    transport: Transport,
    flows: &[&str],
    frames: &[String],
) -> (Vec<SourceItem>, Vec<SourceItem>) {
    let mut body = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        match transport {
            Transport::Json => {
                body.extend_from_slice(f.as_bytes());
                body.push(b'\r');
            }
            Transport::EventStream => {
                body.extend_from_slice(format!("id: {i}\ndata: {f}\n\n").as_bytes())
            }
        }
    }
    let typed = items(transport, false, flows, &body);
    let mut kept = items(transport, true, flows, &body);
    for item in &typed {
        if let SourceItem::Event { event, .. } = item {
            assert!(event.raw.is_none(), "keep_raw false keeps no raw");
        }
    }
    for item in &mut kept {
        if let SourceItem::Event { event, .. } = item {
            assert!(event.raw.is_some());
            event.raw = None;
        }
    }
    (typed, kept)
}

fn string_part() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("a"),
        Just("x y"),
        Just("é"),
        Just("日本"),
        Just("🚀"),
        Just("\\n"),
        Just("\\\""),
        Just("\\\\"),
        Just("\\/"),
        Just("\\u00e9"),
        Just("\\ud83d\\ude00"),
        // Not valid: a lone surrogate, a bad escape.
        Just("\\ud800"),
        Just("\\q"),
        Just("influx:12"),
        Just("0"),
        Just("12"),
        Just(" "),
        Just("o:f"),
        Just("o/f"),
        Just("<b>t</b> &amp;"),
        Just("2012-04-20T18:11:05.446Z"),
    ]
}

fn json_string() -> impl Strategy<Value = String> {
    prop::collection::vec(string_part(), 0..4).prop_map(|p| format!("\"{}\"", p.concat()))
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop_oneof![
            Just("name"), Just("title"), Just("id"), Just("initial_message"), Just("type"),
            Just("text"), Just("message"), Just("user"), Just("updated_content"), Just("add"),
            Just("remove"), Just("file_name"), Just("file_size"), Just("x"), Just("email"),
        ]
        .prop_map(|k| format!("\"{k}\"")),
        1 => json_string(),
    ]
}

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("1.5".to_owned()),
        Just("-0".to_owned()),
        Just("1e3".to_owned()),
        Just("18446744073709551616".to_owned()),
        json_string(),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|kv| {
                let kv: Vec<String> = kv.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", kv.join(","))
            }),
        ]
    })
}

const FIELDS: &[&str] = &[
    "id",
    "uuid",
    "event",
    "flow",
    "content",
    "tags",
    "sent",
    "created_at",
    "user",
    "to",
    "attachments",
    "app",
    "thread_id",
    "thread",
    "edited",
    "title",
    "body",
    "author",
    "external_user_name",
    "unknown",
    "ünï",
];

/// A value that suits `field` (mostly), or any value.
fn value_for(field: &'static str) -> BoxedStrategy<String> {
    let typical: BoxedStrategy<String> = match field {
        "id" | "user" | "to" => prop_oneof![
            (0u64..20).prop_map(|n| n.to_string()),
            (0u64..20).prop_map(|n| format!("\"{n}\"")),
        ]
        .boxed(),
        "event" => prop_oneof![
            Just("message"),
            Just("line"),
            Just("comment"),
            Just("message-edit"),
            Just("tag-change"),
            Just("action"),
            Just("status"),
            Just("file"),
            Just("activity.user"),
            Just("activity"),
            Just("discussion"),
            Just("vcs"),
        ]
        .prop_map(|e| format!("\"{e}\""))
        .boxed(),
        "flow" => prop_oneof![
            Just("\"o:f\""),
            Just("\"o/f\""),
            Just("\" \""),
            Just("\"id-1\"")
        ]
        .prop_map(str::to_owned)
        .boxed(),
        "content" => prop_oneof![
            json_string(),
            Just(r#"{"type":"block","user":"5"}"#.to_owned()),
            Just(r#"{"message":3,"updated_content":"x"}"#.to_owned()),
            Just(r#"{"message":"3","add":["a",1],"remove":[]}"#.to_owned()),
            Just(r#"{"text":"t","title":"x"}"#.to_owned()),
            Just(r#"{"content_type":"a/b","file_name":"f","file_size":3,"path":"/p"}"#.to_owned()),
            Just(r#"{"last_activity":5,"typing":false}"#.to_owned()),
            Just(r#"{"pusher":{"name":"n"},"ref":"refs/heads/x"}"#.to_owned()),
        ]
        .boxed(),
        "tags" | "attachments" => prop::collection::vec(json_value(), 0..3)
            .prop_map(|v| format!("[{}]", v.join(",")))
            .boxed(),
        "created_at" => Just("\"2012-04-20T18:11:05.446Z\"".to_owned()).boxed(),
        "uuid" => Just("\"u-1\"".to_owned()).boxed(),
        "sent" => prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            Just("1.5e12".to_owned()),
            Just("\"1400000000000\"".to_owned()),
            Just("\"2012-04-20T18:11:05.446Z\"".to_owned()),
        ]
        .boxed(),
        "thread" => prop_oneof![
            Just(r#"{"title":"T","id":"t1","initial_message":7,"body":""}"#.to_owned()),
            Just(r#"{"initial_message":"8"}"#.to_owned()),
        ]
        .boxed(),
        "author" => prop_oneof![
            Just(r#"{"name":"Ada"}"#.to_owned()),
            Just(r#"{"name":1}"#.to_owned()),
            Just(r#"{"name":"A","name":"B"}"#.to_owned()),
        ]
        .boxed(),
        _ => json_string().boxed(),
    };
    prop_oneof![4 => typical, 1 => json_value()].boxed()
}

fn field() -> impl Strategy<Value = String> {
    (0..FIELDS.len()).prop_flat_map(|i| named(FIELDS[i]))
}

fn named(name: &'static str) -> impl Strategy<Value = String> {
    value_for(name).prop_map(move |v| format!("\"{name}\":{v}"))
}

/// Usually the fields of a real message, then any fields (which may repeat them).
fn fields() -> impl Strategy<Value = Vec<String>> {
    let usual = [
        "id",
        "event",
        "content",
        "flow",
        "user",
        "sent",
        "created_at",
        "uuid",
        "tags",
    ]
    .map(|name| prop::option::weighted(0.7, named(name)));
    (
        usual,
        prop::collection::vec(field(), 0..6),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(usual, extra, at)| {
            let mut all: Vec<String> = usual.into_iter().flatten().collect();
            let n = all.len();
            all.rotate_left(at.index(n.max(1)).min(n));
            all.extend(extra);
            all
        })
}

/// A frame: mostly an object of generated fields (repeats possible), sometimes any value.
fn frame() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => (fields(), any::<bool>()).prop_map(|(fields, spaced)| {
            let sep = if spaced { ", " } else { "," };
            format!("{{{}}}", fields.join(sep))
        }),
        1 => json_value(),
        1 => Just("{\"id\": 1, \"event\": \"message\", \"content\": \"cut".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn typed_read_equals_the_value_read(
        frames in prop::collection::vec(frame(), 1..8),
        sse in any::<bool>(),
        single in any::<bool>(),
    ) {
        let transport = if sse { Transport::EventStream } else { Transport::Json };
        let flows: &[&str] = if single { &["o:f"] } else { &[] };
        let (typed, kept) = both(transport, flows, &frames);
        prop_assert_eq!(typed, kept);
    }
}

#[test]
fn a_chat_message_reads_the_same_both_ways() {
    let m = r#"{"app":"chat","attachments":[],"content":"is \"quoted\" 日本語 line\nbreak","created_at":"2026-12-03T13:00:00.000Z","event":"message","flow":"acme:main","id":100003,"sent":1700000000003,"tags":[],"thread_id":"thr0","user":"4","uuid":"emu3","thread":{"title":"T","initial_message":100003}}"#;
    for transport in [Transport::Json, Transport::EventStream] {
        let (typed, kept) = both(transport, &[], &[m.to_owned()]);
        assert_eq!(typed, kept);
        let ev = typed
            .iter()
            .find_map(SourceItem::as_event)
            .expect("an event");
        assert_eq!(ev.id, "flowdock:acme/main:100003");
        assert_eq!(ev.text, "is \"quoted\" 日本語 line\nbreak");
    }
}

#[test]
fn odd_frames_read_the_same_both_ways() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let frames = [
        // Nesting past serde_json's limit in an unknown field: not JSON for a `Value`.
        format!(r#"{{"id":1,"event":"message","content":"a","x":{deep}}}"#),
        // A lone surrogate in an unknown field, and in a known one.
        r#"{"id":2,"event":"message","content":"a","x":"\ud800"}"#.to_owned(),
        r#"{"id":3,"event":"message","content":"\udc00"}"#.to_owned(),
        // Repeated keys: the last one counts.
        r#"{"id":4,"id":5,"event":"status","event":"message","content":"b"}"#.to_owned(),
        // A repeated key whose first value has the wrong type.
        r#"{"uuid":5,"uuid":"u","event":"message","content":"c"}"#.to_owned(),
        // Wrong types of known fields.
        r#"{"id":true,"event":"message"}"#.to_owned(),
        r#"{"id":6,"event":null}"#.to_owned(),
        r#"{"id":7,"tags":"x"}"#.to_owned(),
        r#"{"id":8,"attachments":{}}"#.to_owned(),
        // Not objects.
        "[]".to_owned(),
        r#"["message"]"#.to_owned(),
        "\"text\"".to_owned(),
        "12".to_owned(),
        // No id and no uuid: the id hashes the wire object (sorted keys), both ways.
        r#"{"user":"3","event":"activity.user","flow":"o:f","content":{"typing":true}}"#.to_owned(),
        r#"{"event":"activity.user","flow":"o:f","user":"3","content":{"typing":true}}"#.to_owned(),
    ];
    for transport in [Transport::Json, Transport::EventStream] {
        let (typed, kept) = both(transport, &[], &frames);
        assert_eq!(typed, kept, "{transport:?}");
        let malformed = typed
            .iter()
            .filter(|i| matches!(i, SourceItem::Malformed { .. }))
            .count();
        assert!(malformed >= 9, "{typed:?}");
        let ids: Vec<&str> = typed
            .iter()
            .filter_map(SourceItem::as_event)
            .map(|e| e.id.as_str())
            .collect();
        assert!(ids.contains(&"flowdock:-:5"), "{ids:?}");
        let presence: Vec<&&str> = ids.iter().filter(|i| i.contains("activity.user")).collect();
        assert_eq!(presence.len(), 2);
        assert_eq!(
            presence[0], presence[1],
            "the same object, in another key order"
        );
    }
}
