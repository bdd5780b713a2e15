//! Concatenated JSON decoder: values found by depth, strings and escapes.

use stream_frame::check::{assert_same_frames, chunks, decode_seq};
use stream_frame::{Frame, FrameErrorKind, Item, JsonSeqDecoder, Limits};

fn decode_limited(input: &[u8], limits: Limits) -> Vec<Item<Frame>> {
    let whole = decode_seq(&[input], limits);
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        let split = decode_seq(&[a, b], limits);
        assert_same_frames(&whole, &split, 2, &format!("split at {cut}"));
    }
    let ones = chunks(input, &[1]);
    assert_same_frames(
        &whole,
        &decode_seq(&ones, limits),
        ones.len(),
        "byte by byte",
    );
    whole
}

fn decode(input: &[u8]) -> Vec<Item<Frame>> {
    decode_limited(input, Limits::default())
}

fn view(items: &[Item<Frame>]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            Item::Frame(f) => format!("{}:{}", f.offset, String::from_utf8_lossy(&f.bytes)),
            Item::KeepAlive => "KA".to_string(),
            Item::Error(e) => format!("ERR@{}", e.offset),
        })
        .collect()
}

#[test]
fn back_to_back_values() {
    assert_eq!(
        view(&decode(b"{\"a\":1}{\"b\":2}[3]")),
        ["0:{\"a\":1}", "7:{\"b\":2}", "14:[3]"]
    );
}

#[test]
fn whitespace_between_values_is_one_keep_alive_per_run() {
    assert_eq!(
        view(&decode(b" \n{}\r\n\t[]  ")),
        ["KA", "2:{}", "KA", "7:[]", "KA"]
    );
}

#[test]
fn objects_spanning_lines_nested_with_tricky_strings() {
    let v = b"{\n  \"a\": [1, {\"b\": \"}]\\\"{[\"}],\n  \"c\": \"\\\\\"\n}";
    let input = [v.as_slice(), b"\n", b"[[],{}]"].concat();
    let got = decode(&input);
    assert_eq!(got.len(), 3, "{:?}", view(&got));
    match &got[0] {
        Item::Frame(f) => assert_eq!(&f.bytes[..], v),
        other => panic!("{other:?}"),
    }
    assert_eq!(view(&got)[2], format!("{}:[[],{{}}]", v.len() + 1));
}

#[test]
fn escaped_backslash_before_quote_ends_the_string() {
    // "\\" is a complete string; the following } closes the object.
    assert_eq!(
        view(&decode(br#"{"k":"\\"}{}"#)),
        [r#"0:{"k":"\\"}"#, "10:{}"]
    );
}

#[test]
fn junk_outside_values_is_reported_once_then_resynced() {
    let got = decode(b"{}123 true \"s\" {\"ok\":1} ] []");
    assert_eq!(
        view(&got),
        ["0:{}", "ERR@2", "15:{\"ok\":1}", "KA", "ERR@24", "26:[]"]
    );
    match &got[1] {
        Item::Error(e) => {
            assert!(matches!(e.kind, FrameErrorKind::Malformed(_)));
            assert!(e.to_string().contains("'1'"), "{e}");
            assert!(e.to_string().contains("offset 2"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unterminated_value_at_end_is_malformed() {
    let got = decode(b"{\"a\":1} {\"b\":");
    assert_eq!(view(&got), ["0:{\"a\":1}", "KA", "ERR@8"]);
    assert!(matches!(&got[2], Item::Error(e) if e.to_string().contains("unterminated")));
}

#[test]
fn oversize_value_is_refused_and_skipped_to_its_end() {
    let limits = Limits::with_max_frame(10);
    let got = decode_limited(b"[1]{\"long\":\"}}}}}}}}}}}}\"}[2]", limits);
    assert_eq!(view(&got), ["0:[1]", "ERR@3", "26:[2]"]);
    assert!(matches!(&got[1], Item::Error(e) if e.kind == FrameErrorKind::Oversize { limit: 10 }));
}

#[test]
fn oversize_value_fed_byte_by_byte_never_buffers_past_the_limit() {
    let mut d = JsonSeqDecoder::new(Limits::with_max_frame(100));
    let mut out = Vec::new();
    d.feed(b"{\"k\":[", &mut out);
    for _ in 0..50_000 {
        d.feed(b"{},", &mut out);
        assert!(d.buffered_len() <= 100);
    }
    d.feed(b"{}]}[]", &mut out);
    d.finish(&mut out);
    assert_eq!(view(&out), ["ERR@0", "150010:[]"]);
}

#[test]
fn every_feed_of_whitespace_between_values_is_reported_once() {
    let mut d = JsonSeqDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(b"{}", &mut out);
    for _ in 0..3 {
        d.feed(b" ", &mut out);
    }
    assert_eq!(view(&out), ["0:{}", "KA", "KA", "KA"]);
    let mut d = JsonSeqDecoder::new(Limits::default());
    let mut out = Vec::new();
    d.feed(b"{}   ", &mut out);
    d.feed(b"[1, 2]", &mut out);
    assert_eq!(view(&out), ["0:{}", "KA", "5:[1, 2]"]);
}
