//! SSE conformance table, modelled on the web-platform-tests `eventsource/format-*` cases, plus
//! one test per WHATWG event-stream rule. Every case is also decoded split at every byte
//! position and byte by byte, and must give the same items.

use stream_frame::check::{chunks, decode_sse};
use stream_frame::{FrameErrorKind, Item, Limits, SseDecoder, SseEvent, SseItem};

fn ev(event: &str, data: &str, id: &str) -> Item<SseItem> {
    Item::Frame(SseItem::Event(SseEvent {
        event: event.into(),
        data: data.into(),
        id: id.into(),
    }))
}

fn msg(data: &str) -> Item<SseItem> {
    ev("message", data, "")
}

fn retry(ms: u64) -> Item<SseItem> {
    Item::Frame(SseItem::Retry(ms))
}

fn comment(text: &str) -> Item<SseItem> {
    Item::Frame(SseItem::Comment(text.into()))
}

/// Decodes `input` whole, then split in two at every position, then byte by byte; all must
/// agree. Returns the items of the whole decode.
fn decode(input: &[u8]) -> Vec<Item<SseItem>> {
    let limits = Limits::default();
    let whole = decode_sse(&[input], limits);
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        assert_eq!(decode_sse(&[a, b], limits), whole, "split at {cut}");
    }
    assert_eq!(
        decode_sse(&chunks(input, &[1]), limits),
        whole,
        "byte by byte"
    );
    whole
}

/// One conformance case: name, input, expected items.
type Case = (&'static str, Vec<u8>, Vec<Item<SseItem>>);

/// The conformance table.
fn table() -> Vec<Case> {
    let long_comment = ":".to_string() + &"x".repeat(2049);
    vec![
        // format-bom: the first BOM is stripped, a second one is part of a field name.
        (
            "format-bom",
            b"\xEF\xBB\xBFdata:1\n\n\xEF\xBB\xBFdata:2\n\ndata:3\n\n".to_vec(),
            vec![msg("1"), msg("3")],
        ),
        // format-bom-2: only one BOM is stripped.
        (
            "format-bom-2",
            b"\xEF\xBB\xBF\xEF\xBB\xBFdata:1\n\ndata:2\n\ndata:3\n\n".to_vec(),
            vec![msg("2"), msg("3")],
        ),
        // A BOM-like prefix that is not a full BOM is data (becomes U+FFFD in a name here).
        (
            "partial-bom-is-data",
            b"\xEF\xBBdata:1\n\ndata:2\n\n".to_vec(),
            vec![msg("2")],
        ),
        (
            "format-comments",
            [
                b"data:1\r:\0\n:\r\ndata:2\n".as_slice(),
                long_comment.as_bytes(),
                b"\rdata:3\n:data:fail\r:\ndata:4\n\n",
            ]
            .concat(),
            vec![
                comment("\0"),
                comment(""),
                comment(&"x".repeat(2049)),
                comment("data:fail"),
                comment(""),
                msg("1\n2\n3\n4"),
            ],
        ),
        (
            "format-data-before-final-empty-line",
            b"retry:1000\ndata:test1\n\nid:test\ndata:test2".to_vec(),
            vec![retry(1000), msg("test1")],
        ),
        (
            "format-field-data",
            b"data:\n\ndata\ndata\n\ndata:test\n\n".to_vec(),
            vec![msg(""), msg("\n"), msg("test")],
        ),
        (
            "format-field-event",
            b"event:test\ndata:x\n\ndata:x\n\n".to_vec(),
            vec![ev("test", "x", ""), msg("x")],
        ),
        (
            "format-field-event-empty",
            b"event: \ndata:data\n\n".to_vec(),
            vec![msg("data")],
        ),
        (
            "format-field-id",
            b"id: 1\ndata: x\n\ndata: y\n\n".to_vec(),
            vec![ev("message", "x", "1"), ev("message", "y", "1")],
        ),
        (
            "format-field-id-2 (empty id resets)",
            b"id:1\ndata:x\n\nid:\ndata:y\n\nid\ndata:z\n\n".to_vec(),
            vec![ev("message", "x", "1"), msg("y"), msg("z")],
        ),
        (
            "format-field-id-null",
            b"id:1\ndata:a\n\nid:2\x003\ndata:b\n\n".to_vec(),
            vec![ev("message", "a", "1"), ev("message", "b", "1")],
        ),
        (
            "format-field-parsing",
            b"data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n\n"
                .to_vec(),
            vec![msg("\0\n 2\n1\n3\n\n4")],
        ),
        (
            "format-field-retry",
            b"retry:03000\ndata:x\n\n".to_vec(),
            vec![retry(3000), msg("x")],
        ),
        (
            "format-field-retry-bogus",
            b"retry:3000\nretry:1000x\nretry: 500\nretry:-1\nretry:1.5\ndata:x\n\n".to_vec(),
            vec![retry(3000), retry(500), msg("x")],
        ),
        (
            "format-field-retry-empty",
            b"retry\nretry:\ndata:test\n\n".to_vec(),
            vec![msg("test")],
        ),
        (
            "format-field-retry-huge-saturates",
            b"retry:99999999999999999999999\n".to_vec(),
            vec![retry(u64::MAX)],
        ),
        (
            "format-field-unknown",
            b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n"
                .to_vec(),
            vec![comment("thisisacommentyay"), msg("test\n\ntest")],
        ),
        (
            "format-leading-space",
            b"data:\ttest\rdata: \ndata:test\n\n".to_vec(),
            vec![msg("\ttest\n\ntest")],
        ),
        (
            "only-one-leading-space-removed",
            b"data:  two\nevent:  t\n\n".to_vec(),
            vec![ev(" t", " two", "")],
        ),
        (
            "format-newlines",
            b"data:test\r\ndata\ndata:test\r\n\r".to_vec(),
            vec![msg("test\n\ntest")],
        ),
        ("newlines-cr-only", b"data:a\rdata:b\r\r".to_vec(), vec![msg("a\nb")]),
        (
            "newlines-crlf-is-one-ending",
            b"data:a\r\n\r\ndata:b\n\r\n".to_vec(),
            vec![msg("a"), msg("b")],
        ),
        (
            "newlines-lf-cr-is-two-endings",
            b"data:a\n\rdata:b\n\n".to_vec(),
            vec![msg("a"), msg("b")],
        ),
        ("format-null-character", b"data:\0\n\n\n\n".to_vec(), vec![msg("\0")]),
        (
            "format-utf-8",
            "data:ok\u{2026}\u{1F600}\n\n".as_bytes().to_vec(),
            vec![msg("ok\u{2026}\u{1F600}")],
        ),
        (
            "utf-8-invalid-becomes-replacement",
            b"data:\xFF\xFEx\ndata:\xE2\x82\n\n".to_vec(),
            vec![msg("\u{FFFD}\u{FFFD}x\n\u{FFFD}")],
        ),
        (
            "utf-8-invalid-in-event-and-id",
            b"event:a\xFF\nid:\xC3\ndata:x\n\n".to_vec(),
            vec![ev("a\u{FFFD}", "x", "\u{FFFD}")],
        ),
        (
            "empty-data-resets-type-without-dispatch",
            b"event:foo\n\ndata:x\n\n".to_vec(),
            vec![msg("x")],
        ),
        (
            "last-event-id-updates-without-dispatch",
            b"id:7\n\ndata:x\n\n".to_vec(),
            vec![ev("message", "x", "7")],
        ),
        (
            "last-event-id-persists",
            b"id:1\ndata:a\n\ndata:b\n\nevent:e\ndata:c\n\n".to_vec(),
            vec![ev("message", "a", "1"), ev("message", "b", "1"), ev("e", "c", "1")],
        ),
        (
            "line-without-colon-is-field-with-empty-value",
            b"data\nevent\n\n".to_vec(),
            vec![msg("")],
        ),
        (
            "colon-in-value-kept",
            b"data: a: b:c\n\n".to_vec(),
            vec![msg("a: b:c")],
        ),
        (
            "unterminated-line-at-eof-ignored",
            b"data:x\n\nretry:5".to_vec(),
            vec![msg("x")],
        ),
        (
            "flowdock-like",
            b"id: 1\ndata: {\"event\":\"message\",\"content\":\"hi\"}\n\n:\n\nid: 2\ndata: {}\n\n"
                .to_vec(),
            vec![
                ev("message", "{\"event\":\"message\",\"content\":\"hi\"}", "1"),
                comment(""),
                ev("message", "{}", "2"),
            ],
        ),
    ]
}

#[test]
fn conformance_table() {
    let mut failures = Vec::new();
    for (name, input, expected) in table() {
        let got = decode(&input);
        if got != expected {
            failures.push(format!(
                "{name}:\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bom_split_across_chunks_is_stripped_once() {
    let limits = Limits::default();
    let parts: [&[u8]; 4] = [b"\xEF", b"\xBB", b"\xBF", b"data:x\n\n"];
    assert_eq!(decode_sse(&parts, limits), vec![msg("x")]);
    let parts: [&[u8]; 3] = [b"\xEF\xBB", b"\xBF\xEF\xBB\xBF", b"data:x\n\ndata:y\n\n"];
    assert_eq!(decode_sse(&parts, limits), vec![msg("y")]);
}

#[test]
fn cr_and_lf_in_different_chunks_are_one_line_ending() {
    let parts: [&[u8]; 4] = [b"data:a\r", b"\n", b"\r", b"\ndata:b\r\r"];
    assert_eq!(
        decode_sse(&parts, Limits::default()),
        vec![msg("a"), msg("b")]
    );
}

#[test]
fn multibyte_character_split_across_chunks_is_kept() {
    let s = "data:\u{1F600}\u{e9}\n\n".as_bytes();
    for cut in 0..s.len() {
        let (a, b) = s.split_at(cut);
        assert_eq!(
            decode_sse(&[a, b], Limits::default()),
            vec![msg("\u{1F600}\u{e9}")]
        );
    }
}

#[test]
fn last_event_id_accessor_and_resume() {
    let mut d = SseDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(b"id: 41\ndata: a\n\nid: 42\n", &mut out);
    assert_eq!(
        d.last_event_id(),
        "41",
        "id buffer only becomes the last id at dispatch"
    );
    d.feed(b"\n", &mut out);
    assert_eq!(
        d.last_event_id(),
        "42",
        "updated by a blank line even without data"
    );
    d.finish(&mut out);
    assert_eq!(d.last_event_id(), "42", "kept across the end of a stream");
    // A new connection: events without an id keep the resumed id.
    d.feed(b"data: b\n\n", &mut out);
    assert_eq!(out.last(), Some(&ev("message", "b", "42")));

    let mut fresh = SseDecoder::new(Limits::default());
    fresh.set_last_event_id("99");
    let mut out = Vec::new();
    fresh.feed(b"data: c\n\nid: 100\ndata: d\n\n", &mut out);
    assert_eq!(
        out,
        vec![ev("message", "c", "99"), ev("message", "d", "100")]
    );
    assert_eq!(fresh.last_event_id(), "100");
}

#[test]
fn an_event_cut_by_the_chunk_end_keeps_its_id_unless_overridden() {
    // A chunk large enough for the windowed path ends inside an event's `data` line, after its
    // `id` line: the event is carried whole to the next chunk.
    let mut head = "data: filler\n\n".repeat(30);
    head.push_str("id: 5\ndata: par");
    let tail = format!("tial\n\n{}", "data: more\n\n".repeat(30));
    for override_id in [None, Some("9")] {
        let mut d = SseDecoder::new(Limits::default());
        let mut out = Vec::new();
        d.feed(head.as_bytes(), &mut out);
        assert_eq!(out.len(), 30);
        assert_eq!(
            d.last_event_id(),
            "",
            "the id is not the last event id before dispatch"
        );
        if let Some(id) = override_id {
            d.set_last_event_id(id);
        }
        out.clear();
        d.feed(tail.as_bytes(), &mut out);
        let id = override_id.unwrap_or("5");
        assert_eq!(out[0], ev("message", "partial", id));
        assert_eq!(out[1], ev("message", "more", id));
        assert_eq!(d.last_event_id(), id);
    }
}

#[test]
fn the_last_event_id_holds_while_the_next_event_is_cut_by_the_chunk_end() {
    // The chunk's last whole event set the last event id; the event after it is cut by the
    // chunk's end, after its own `id` line. The next chunk (small, medium or large: the window
    // is appended to, reused from its start, or replaced) completes the cut line and then
    // dispatches the event or not; or the id is overridden first; or the stream ends.
    let mut head: String = (1..=30)
        .map(|i| format!("id: {i}\ndata: filler\n\n"))
        .collect();
    head.push_str("id: 31\ndata: par");
    for (lines, dispatch, override_id, end) in [
        (0, true, None, false),
        (30, true, None, false),
        (330, true, None, false),
        (1000, true, None, false),
        (0, false, None, false),
        (30, false, None, false),
        (330, false, None, false),
        (1000, false, None, false),
        (330, true, Some("x"), false),
        (0, true, Some("x"), false),
        (0, false, None, true),
    ] {
        let what = format!("{lines} lines, dispatch {dispatch}, override {override_id:?}");
        let mut d = SseDecoder::new(Limits::default());
        let mut out = Vec::new();
        d.feed(head.as_bytes(), &mut out);
        assert_eq!(out.len(), 30);
        out.clear();
        assert_eq!(d.last_event_id(), "30");
        if end {
            d.finish(&mut out);
            assert!(out.is_empty());
            assert_eq!(d.last_event_id(), "30", "kept at the end of the stream");
            continue;
        }
        if let Some(id) = override_id {
            d.set_last_event_id(id);
        }
        let tail = if dispatch {
            format!("tial\n\n{}", "data: more\n\n".repeat(lines))
        } else {
            format!("tial\n{}", "data: more\n".repeat(lines))
        };
        d.feed(tail.as_bytes(), &mut out);
        match override_id {
            Some(id) => {
                assert_eq!(out[0], ev("message", "partial", id), "{what}");
                assert_eq!(d.last_event_id(), id, "{what}");
            }
            None if dispatch => {
                assert_eq!(out.len(), 1 + lines, "{what}");
                assert_eq!(out[0], ev("message", "partial", "31"), "{what}");
                assert_eq!(d.last_event_id(), "31", "{what}");
            }
            None => {
                assert!(out.is_empty(), "{what}");
                assert_eq!(d.last_event_id(), "30", "{what}: not dispatched yet");
                d.feed(b"\n", &mut out);
                assert_eq!(out.len(), 1, "{what}");
                assert_eq!(d.last_event_id(), "31", "{what}");
            }
        }
    }
}

#[test]
fn id_with_nul_does_not_change_last_event_id() {
    let mut d = SseDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(b"id: 5\n\nid: 6\0\n\n", &mut out);
    assert!(out.is_empty());
    assert_eq!(d.last_event_id(), "5");
}

#[test]
fn unterminated_event_is_discarded_at_finish() {
    let mut d = SseDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(b"id: 3\ndata: lost\n", &mut out);
    d.finish(&mut out);
    assert!(out.is_empty());
    assert_eq!(
        d.last_event_id(),
        "",
        "an undispatched id is not the last event id"
    );
    assert_eq!(d.buffered_len(), 0);
}

#[test]
fn oversize_line_is_refused_with_offset_and_event_skipped() {
    let limits = Limits::with_max_frame(16);
    let input = b"data: ok\n\ndata: aaaaaaaaaaaaaaaaaaaaaaaa\nid: 9\ndata: tail\n\ndata: next\n\n";
    let items = decode_sse(&[input], limits);
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0], msg("ok"));
    match &items[1] {
        Item::Error(e) => {
            assert_eq!(e.offset, 10);
            assert_eq!(e.kind, FrameErrorKind::Oversize { limit: 16 });
            assert!(e.to_string().contains("offset 10"), "{e}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(
        items[2],
        msg("next"),
        "the rest of the oversize event is skipped"
    );
    for size in 1..input.len() {
        assert_eq!(
            decode_sse(&chunks(input, &[size]), limits),
            items,
            "chunks of {size}"
        );
    }
}

#[test]
fn oversize_event_over_many_lines_is_refused() {
    let limits = Limits::with_max_frame(20);
    let input = b"data: 0123456789\ndata: 0123456789\ndata: x\n\ndata: y\n\n";
    let items = decode_sse(&[input], limits);
    assert!(
        matches!(&items[0], Item::Error(e) if e.offset == 17),
        "{items:?}"
    );
    assert_eq!(&items[1..], &[msg("y")]);
}

#[test]
fn huge_line_fed_byte_by_byte_never_buffers_past_the_limit() {
    let limits = Limits::with_max_frame(1000);
    let mut d = SseDecoder::new(limits);
    let mut out = Vec::new();
    d.feed(b"data: ", &mut out);
    for _ in 0..100_000 {
        d.feed(b"x", &mut out);
        assert!(d.buffered_len() <= 1000);
    }
    d.feed(b"\n\ndata: after\n\n", &mut out);
    assert_eq!(out.len(), 2, "{:?}", &out[..out.len().min(3)]);
    assert!(matches!(&out[0], Item::Error(e) if e.offset == 0));
    assert_eq!(out[1], msg("after"));
}

#[test]
fn a_line_carried_into_a_large_chunk_keeps_split_characters_and_ids() {
    // Long lines of two-byte characters, cut inside a character, continued in large chunks.
    let data = "\u{e9}".repeat(700);
    let input = format!("id: first\ndata: {data}\n\nid: second\ndata: x{data}\r\n\r\n");
    let bytes = input.as_bytes();
    let expected = vec![
        ev("message", &data, "first"),
        ev("message", &format!("x{data}"), "second"),
    ];
    for cut in [1, 9, 17, 18, 300, 301, 1000, 1415, 1416, 1417] {
        let (a, b) = bytes.split_at(cut);
        assert_eq!(
            decode_sse(&[a, b], Limits::default()),
            expected,
            "cut at {cut}"
        );
        for size in [255, 256, 257, 999] {
            let parts = chunks(bytes, &[cut, size]);
            assert_eq!(
                decode_sse(&parts, Limits::default()),
                expected,
                "{cut}/{size}"
            );
        }
    }
}

#[test]
fn line_carried_as_text_across_large_and_small_chunks() {
    // Long lines (with a multibyte character) split by 300-byte chunks are carried to the next
    // chunk as validated text; a small chunk after one falls back to bytes. Every split must
    // give the same events, with the data intact.
    let value = format!("{}caf\u{e9}{}", "a".repeat(400), "b".repeat(400));
    let body = format!("id: 1\ndata: {value}\n\nid: 2\ndata: {value}\ndata: x\n\n");
    let body = body.as_bytes();
    let expected = vec![
        ev("message", &value, "1"),
        ev("message", &format!("{value}\nx"), "2"),
    ];
    assert_eq!(decode(body), expected);
    for sizes in [
        &[300][..],
        &[300, 5],
        &[300, 300, 1, 2],
        &[700, 3, 400],
        &[512, 256],
    ] {
        assert_eq!(
            decode_sse(&chunks(body, sizes), Limits::default()),
            expected,
            "{sizes:?}"
        );
    }
    // The carried line counts towards the limit: the event is refused whichever way it is split.
    let mut d = SseDecoder::new(Limits::with_max_frame(500));
    let mut out = Vec::new();
    d.feed(&body[..300], &mut out);
    assert!(out.is_empty());
    assert!(d.buffered_len() > 0);
    d.feed(&body[300..700], &mut out);
    assert!(
        matches!(&out[..], [Item::Error(e)] if e.kind == FrameErrorKind::Oversize { limit: 500 }),
        "{out:?}"
    );
}
