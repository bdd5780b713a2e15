//! Delimited JSON decoder: frames, keep-alives, delimiters, limits.

use stream_frame::check::{assert_same_frames, chunks, decode_lines};
use stream_frame::{Delimiter, Frame, FrameErrorKind, Item, JsonLinesDecoder, Limits};

/// Decodes whole, split at every position and byte by byte; all must agree.
fn decode(input: &[u8], delim: Delimiter) -> Vec<Item<Frame>> {
    decode_limited(input, delim, Limits::default())
}

fn decode_limited(input: &[u8], delim: Delimiter, limits: Limits) -> Vec<Item<Frame>> {
    let whole = decode_lines(&[input], delim, limits);
    for cut in 0..=input.len() {
        let (a, b) = input.split_at(cut);
        let split = decode_lines(&[a, b], delim, limits);
        assert_same_frames(&whole, &split, 2, &format!("split at {cut}"));
    }
    let ones = chunks(input, &[1]);
    assert_same_frames(
        &whole,
        &decode_lines(&ones, delim, limits),
        ones.len(),
        "byte by byte",
    );
    whole
}

/// Shorthand view of items: frames as (offset, text), "KA", "ERR@offset".
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
fn lf_frames_and_offsets() {
    let got = decode(b"{\"a\":1}\n{\"b\":2}\n", Delimiter::Lf);
    assert_eq!(view(&got), ["0:{\"a\":1}", "8:{\"b\":2}"]);
}

#[test]
fn strings_containing_braces_and_escaped_quotes_are_untouched() {
    let line = br#"{"t":"a } { \" [ ] \\","n":[1,{"x":"}"}]}"#;
    let input = [line.as_slice(), b"\r"].concat();
    let got = decode(&input, Delimiter::Cr);
    assert_eq!(got.len(), 1);
    match &got[0] {
        Item::Frame(f) => assert_eq!(&f.bytes[..], line),
        other => panic!("{other:?}"),
    }
}

#[test]
fn campfire_single_space_keep_alives() {
    // Frames end in \r; a lone space between them is a keep-alive.
    let got = decode(b"{\"id\":1}\r \r{\"id\":2}\r \r \r", Delimiter::Cr);
    assert_eq!(
        view(&got),
        ["0:{\"id\":1}", "KA", "11:{\"id\":2}", "KA", "KA"]
    );
    // A keep-alive space that is not (yet) followed by a delimiter is reported at once.
    let mut d = JsonLinesDecoder::new(Delimiter::Any, Limits::default());
    let mut out = Vec::new();
    d.feed(b"{\"id\":1}\r", &mut out);
    d.feed(b" ", &mut out);
    assert_eq!(view(&out), ["0:{\"id\":1}", "KA"]);
    // The next space, arriving later in its own chunk, is new proof of life.
    d.feed(b" ", &mut out);
    assert_eq!(view(&out), ["0:{\"id\":1}", "KA", "KA"]);
    d.feed(b"{\"id\":2}\r\n", &mut out);
    assert_eq!(view(&out), ["0:{\"id\":1}", "KA", "KA", "11:{\"id\":2}"]);
}

#[test]
fn flowdock_lf_keep_alives_with_cr_delimiter() {
    let got = decode(b"{\"e\":1}\r\n\n{\"e\":2}\r", Delimiter::Cr);
    assert_eq!(view(&got), ["0:{\"e\":1}", "KA", "10:{\"e\":2}"]);
    // Multi-line object: with \r as the delimiter, \n inside a frame is whitespace.
    let got = decode(b"{\n  \"e\": 1\n}\r", Delimiter::Cr);
    assert_eq!(view(&got), ["0:{\n  \"e\": 1\n}"]);
}

#[test]
fn any_delimiter_treats_crlf_as_one_boundary() {
    let got = decode(
        b"{\"a\":1}\r\n{\"b\":2}\r{\"c\":3}\n\n{\"d\":4}",
        Delimiter::Any,
    );
    assert_eq!(
        view(&got),
        [
            "0:{\"a\":1}",
            "9:{\"b\":2}",
            "17:{\"c\":3}",
            "KA",
            "26:{\"d\":4}"
        ]
    );
    // Split exactly between \r and \n.
    let parts: [&[u8]; 3] = [b"{}\r", b"\n", b"[]\n"];
    let got = decode_lines(&parts, Delimiter::Any, Limits::default());
    assert_eq!(view(&got), ["0:{}", "4:[]"]);
}

#[test]
fn crlf_delimiter_keeps_lone_cr_and_lf_inside_frames() {
    let got = decode(b"{\"a\":\n1}\r\n{\"b\":\r2}\r\n\r\n", Delimiter::CrLf);
    assert_eq!(view(&got), ["0:{\"a\":\n1}", "10:{\"b\":\r2}", "KA"]);
}

#[test]
fn surrounding_whitespace_is_trimmed_and_blank_lines_are_keep_alives() {
    let got = decode(b"  {\"a\":1} \t\n\n\n[1]\n", Delimiter::Lf);
    assert_eq!(view(&got), ["KA", "2:{\"a\":1}", "KA", "KA", "14:[1]"]);
}

#[test]
fn not_json_is_still_a_frame_decoder_does_not_parse() {
    let got = decode(b"hello world\n", Delimiter::Lf);
    assert_eq!(view(&got), ["0:hello world"]);
}

#[test]
fn final_frame_without_delimiter_is_emitted_at_finish() {
    let got = decode(b"{\"a\":1}\n{\"b\":2}", Delimiter::Lf);
    assert_eq!(view(&got), ["0:{\"a\":1}", "8:{\"b\":2}"]);
}

#[test]
fn oversize_frame_is_refused_and_skipped_to_the_next_boundary() {
    let limits = Limits::with_max_frame(8);
    let got = decode_limited(b"[1]\n[1,2,3,4,5,6]\n[2]\n", Delimiter::Lf, limits);
    assert_eq!(view(&got), ["0:[1]", "ERR@4", "18:[2]"]);
    match &got[1] {
        Item::Error(e) => {
            assert_eq!(e.kind, FrameErrorKind::Oversize { limit: 8 });
            assert_eq!(
                e.to_string(),
                "frame larger than the 8-byte limit, skipped (at byte offset 4)"
            );
        }
        other => panic!("{other:?}"),
    }
    // Exactly at the limit is fine, trailing whitespace does not count.
    let got = decode_limited(b"[1,2,34]          \n", Delimiter::Lf, limits);
    assert_eq!(view(&got), ["0:[1,2,34]"]);
}

#[test]
fn oversize_frame_fed_byte_by_byte_never_buffers_past_the_limit() {
    let limits = Limits::with_max_frame(64);
    let mut d = JsonLinesDecoder::new(Delimiter::Lf, limits);
    let mut out = Vec::new();
    d.feed(b"[", &mut out);
    for _ in 0..100_000 {
        d.feed(b"1,", &mut out);
        assert!(d.buffered_len() <= 64);
    }
    assert_eq!(out.len(), 1, "refused before the end of the frame arrived");
    d.feed(b"1]\n{}\n", &mut out);
    d.finish(&mut out);
    assert_eq!(view(&out), ["ERR@0", "200004:{}"]);
    assert_eq!(d.buffered_len(), 0);
}

#[test]
fn offsets_restart_after_finish() {
    let mut d = JsonLinesDecoder::new(Delimiter::Lf, Limits::default());
    let mut out = Vec::new();
    d.feed(b"{}\n[]", &mut out);
    d.finish(&mut out);
    d.feed(b"[1]\n", &mut out);
    assert_eq!(view(&out), ["0:{}", "3:[]", "0:[1]"]);
}

#[test]
fn every_feed_of_keep_alive_whitespace_is_reported_once() {
    for delim in [
        Delimiter::Cr,
        Delimiter::Lf,
        Delimiter::Any,
        Delimiter::CrLf,
    ] {
        // Campfire: a single space every few seconds, each in its own chunk, before the next
        // message of a quiet room.
        let mut d = JsonLinesDecoder::new(delim, Limits::default());
        let mut out = Vec::new();
        for _ in 0..3 {
            d.feed(b" ", &mut out);
        }
        assert_eq!(view(&out), ["KA", "KA", "KA"], "{delim:?}");
        d.feed(b"{\"id\":1}\r\n", &mut out);
        assert_eq!(view(&out)[3], "3:{\"id\":1}", "{delim:?}");
        // The same whitespace in one chunk is one keep-alive.
        let mut d = JsonLinesDecoder::new(delim, Limits::default());
        let mut out = Vec::new();
        d.feed(b"   ", &mut out);
        assert_eq!(view(&out), ["KA"], "{delim:?}");
        // Whitespace inside or after a frame is not a keep-alive.
        d.feed(b"{\"a\": 1", &mut out);
        d.feed(b"  ", &mut out);
        assert_eq!(view(&out), ["KA"], "{delim:?}");
    }
}
