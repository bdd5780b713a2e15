//! Property tests: chunking never changes the result (all three decoders), the SSE decoder
//! matches a straightforward reference reading of the WHATWG rules, JSON frames round-trip,
//! and arbitrary bytes never panic.

use proptest::prelude::*;
use stream_frame::check::{
    check_lines_with, check_seq_with, check_sse, check_sse_with, decode_lines, decode_seq,
    decode_sse,
};
use stream_frame::{Delimiter, Item, Limits, SseEvent, SseItem};

const SSE_TOKENS: &[&[u8]] = &[
    b"data",
    b"event",
    b"id",
    b"retry",
    b"Data",
    b":",
    b": ",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n",
    b"\xEF\xBB\xBF",
    b"x",
    b"hello",
    b"\0",
    b"\xFF",
    b"\xC3\xA9",
    b"\xE2\x82",
    b"12",
    b"0",
    b"\t",
    b"{\"a\":1}",
];

/// Pieces of the common event shapes (`id: X\ndata: Y\n\n`, `data: Y\n\n`) and their near
/// misses, so that the decoder's whole-event fast path and its fallbacks are both exercised.
const SSE_SHAPE_TOKENS: &[&[u8]] = &[
    b"id: 7\ndata: hello\n\n",
    b"data: {\"a\":1}\n\n",
    b"id: 12345678901234567890123456789\ndata: x\n\n",
    b"data: a long value of more than twenty-three bytes\n\n",
    b"id: ",
    b"data: ",
    b"event: e\n",
    b"id:8\n",
    b"retry: 5\n",
    b":\n\n",
    b"\n",
    b"\n\n",
    b"\r",
    b"\r\n",
    b"\0",
    b"\xFF",
    b"\xC3\xA9",
    b"x",
];

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b"\\\"",
    b"\\\\",
    b":",
    b",",
    b"1",
    b"true",
    b" ",
    b"\r",
    b"\n",
    b"\r\n",
    b"\t",
    b"a",
    b"\xC3\xA9",
    b"{\"k\":\"v\"}",
];

fn tokens(set: &'static [&'static [u8]], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(set), 0..max).prop_map(|v| v.concat())
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        (1usize..64).prop_map(Limits::with_max_frame),
    ]
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..40, 1..6)
}

/// A plain reading of the WHATWG event-stream rules on the whole input (no limits).
fn sse_reference(input: &[u8]) -> Vec<Item<SseItem>> {
    let text = String::from_utf8_lossy(input);
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    let mut lines = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                lines.push(std::mem::take(&mut cur));
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
            }
            '\n' => lines.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    let (mut data, mut event, mut id_buf) = (String::new(), String::new(), String::new());
    let mut out = Vec::new();
    for line in lines {
        if line.is_empty() {
            let last_id = id_buf.clone();
            if data.is_empty() {
                event.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            let ev = if event.is_empty() {
                "message".to_string()
            } else {
                event.clone()
            };
            out.push(Item::Frame(SseItem::Event(SseEvent {
                event: ev.into(),
                data: std::mem::take(&mut data).into(),
                id: last_id.as_str().into(),
            })));
            event.clear();
            continue;
        }
        if let Some(c) = line.strip_prefix(':') {
            out.push(Item::Frame(SseItem::Comment(
                c.strip_prefix(' ').unwrap_or(c).to_string(),
            )));
            continue;
        }
        let (name, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line.as_str(), ""),
        };
        match name {
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "event" => event = value.to_string(),
            "id" if !value.contains('\0') => id_buf = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                let ms = value.bytes().fold(0u64, |a, d| {
                    a.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                out.push(Item::Frame(SseItem::Retry(ms)));
            }
            _ => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn sse_any_split_gives_the_same_items(body in tokens(SSE_TOKENS, 80), l in limits(), s in sizes()) {
        check_sse_with(&body, l, &s);
    }

    #[test]
    fn sse_matches_the_reference_reading_of_the_standard(body in tokens(SSE_TOKENS, 80), s in sizes()) {
        let expected = sse_reference(&body);
        prop_assert_eq!(decode_sse(&[&body], Limits::default()), expected.clone());
        let chunks = stream_frame::check::chunks(&body, &s);
        prop_assert_eq!(decode_sse(&chunks, Limits::default()), expected);
    }

    #[test]
    fn sse_large_chunks_match_the_reference(
        body in tokens(SSE_TOKENS, 400),
        s in prop::collection::vec(200usize..3000, 1..4),
    ) {
        // Chunks of 256 bytes and more take the windowed UTF-8 validation path.
        let expected = sse_reference(&body);
        prop_assert_eq!(decode_sse(&[&body], Limits::default()), expected.clone());
        let chunks = stream_frame::check::chunks(&body, &s);
        prop_assert_eq!(decode_sse(&chunks, Limits::default()), expected);
    }

    #[test]
    fn sse_event_shaped_streams_match_the_reference(
        body in tokens(SSE_SHAPE_TOKENS, 200),
        l in prop_oneof![Just(Limits::default()), (1usize..64).prop_map(Limits::with_max_frame)],
        s in prop::collection::vec(200usize..3000, 1..4),
    ) {
        // Whole events in large chunks take the fused fast path; anything else falls back.
        let expected = sse_reference(&body);
        let chunks = stream_frame::check::chunks(&body, &s);
        prop_assert_eq!(decode_sse(&chunks, Limits::default()), expected);
        check_sse_with(&body, l, &s);
    }

    #[test]
    fn sse_lines_carried_into_large_chunks_split_consistently(
        body in tokens(SSE_TOKENS, 600),
        l in prop_oneof![Just(Limits::default()), (1usize..400).prop_map(Limits::with_max_frame)],
        s in prop::collection::vec(1usize..1500, 1..5),
    ) {
        // A line left incomplete by one chunk continues in a chunk of 256 bytes or more: it is
        // joined into that chunk's first validated window (or, when the tail was already
        // validated text, carried as text into that window; a small chunk spills it back).
        check_sse_with(&body, l, &s);
    }

    #[test]
    fn json_lines_any_split_gives_the_same_items(body in tokens(JSON_TOKENS, 80), l in limits(), s in sizes()) {
        check_lines_with(&body, l, &s);
    }

    #[test]
    fn json_seq_any_split_gives_the_same_items(body in tokens(JSON_TOKENS, 80), l in limits(), s in sizes()) {
        check_seq_with(&body, l, &s);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_consistently(body in prop::collection::vec(any::<u8>(), 0..400)) {
        check_sse(&body);
        stream_frame::check::check_lines(&body);
        stream_frame::check::check_seq(&body);
    }

    #[test]
    fn json_lines_frames_round_trip(
        frames in prop::collection::vec("[{\\[][a-z0-9\":, {}\\[\\]]{0,20}[}\\]]", 0..12),
        seps in prop::collection::vec(prop::sample::select(vec!["\r\n", "\n", "\r", "\r\n \r\n"]), 12),
    ) {
        let mut body = String::new();
        for (f, sep) in frames.iter().zip(&seps) {
            body.push_str(f);
            body.push_str(sep);
        }
        let got: Vec<String> = decode_lines(&[body.as_bytes()], Delimiter::Any, Limits::default())
            .into_iter()
            .filter_map(|i| match i {
                Item::Frame(f) => Some(String::from_utf8(f.bytes.to_vec()).unwrap()),
                Item::KeepAlive => None,
                Item::Error(e) => panic!("{e}"),
            })
            .collect();
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn json_seq_values_round_trip(values in prop::collection::vec(json_value(), 0..8), ws in "[ \n\r\t]{0,3}") {
        let body = values.join(&ws);
        let got: Vec<String> = decode_seq(&[body.as_bytes()], Limits::default())
            .into_iter()
            .filter_map(|i| match i {
                Item::Frame(f) => Some(String::from_utf8(f.bytes.to_vec()).unwrap()),
                Item::KeepAlive => None,
                Item::Error(e) => panic!("{e}"),
            })
            .collect();
        prop_assert_eq!(got, values);
    }
}

/// Valid JSON objects/arrays with nesting and strings full of brackets, quotes and escapes.
fn json_value() -> impl Strategy<Value = String> {
    let string = r#"[a-z{}\[\] ]{0,6}(\\"|\\\\)?[a-z{}]{0,3}"#.prop_map(|s| format!("\"{s}\""));
    let leaf = prop_oneof![string, Just("1".to_string()), Just("null".to_string())];
    let container = leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(inner, 0..4).prop_map(|v| {
                let fields: Vec<String> = v
                    .iter()
                    .enumerate()
                    .map(|(i, x)| format!("\"k{i}\":{x}"))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }),
        ]
    });
    prop_oneof![
        prop::collection::vec(container.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(","))),
        prop::collection::vec(container, 0..3).prop_map(|v| {
            let fields: Vec<String> = v
                .iter()
                .enumerate()
                .map(|(i, x)| format!("\"f{i}\" : {x}"))
                .collect();
            format!("{{{}}}", fields.join(",\n"))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sse_chunks_of_several_windows_match_the_reference(
        body in prop::collection::vec(
            prop_oneof![
                8 => prop::sample::select(&SSE_SHAPE_TOKENS[..4]),
                1 => prop::sample::select(SSE_SHAPE_TOKENS),
            ],
            1500..4000,
        )
        .prop_map(|v| v.concat()),
        s in prop::collection::vec(33_000usize..70_000, 1..3),
        l in prop_oneof![Just(Limits::default()), (1usize..400).prop_map(Limits::with_max_frame)],
    ) {
        // Chunks over two windows (32 KiB) are validated window by window; an event a window
        // ends in starts the next one. Whole events, carried events and their fallbacks.
        let expected = sse_reference(&body);
        let chunks = stream_frame::check::chunks(&body, &s);
        prop_assert_eq!(decode_sse(&chunks, Limits::default()), expected);
        check_sse_with(&body, l, &s);
    }
}
