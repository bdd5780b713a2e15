//! Consistency checks shared by the fuzz targets and the corpus-replay test (not public API).
//!
//! Each `check_*` function decodes its input whole, in chunks chosen by the input's first
//! bytes, and byte by byte, panics if the results differ, and checks invariants every decoder
//! promises: bounded buffering, offsets in order and pointing at the frame's bytes, frames
//! within the limit.

use crate::{
    Decode, Delimiter, Frame, Item, JsonLinesDecoder, JsonSeqDecoder, Limits, SseDecoder, SseItem,
};

/// Number of leading control bytes taken from a fuzz input.
pub const CONTROL_BYTES: usize = 4;

/// Splits a fuzz input into (limits, chunk sizes, body): byte 0 picks the limit (small limits
/// exercise the oversize paths), bytes 1..4 give a cycle of chunk sizes (1..=64).
pub fn split_input(input: &[u8]) -> (Limits, Vec<usize>, &[u8]) {
    if input.len() < CONTROL_BYTES {
        return (Limits::default(), vec![1], input);
    }
    let (ctrl, body) = input.split_at(CONTROL_BYTES);
    let limits = match ctrl[0] {
        b @ 0..=191 => Limits::with_max_frame(1 + usize::from(b) * 2),
        _ => Limits::default(),
    };
    let sizes = ctrl[1..].iter().map(|&b| usize::from(b % 64) + 1).collect();
    (limits, sizes, body)
}

/// Splits `body` into chunks whose sizes cycle through `sizes` (zero sizes count as 1).
pub fn chunks<'a>(body: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut k = 0;
    while !rest.is_empty() {
        let size = sizes
            .get(k % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        let (a, b) = rest.split_at(size.min(rest.len()));
        out.push(a);
        rest = b;
        k += 1;
    }
    out
}

/// Decodes `chunks` with `decoder`, checking the buffering bound after every chunk.
pub fn decode_all<D: Decode>(mut decoder: D, chunks: &[&[u8]]) -> Vec<Item<D::Output>> {
    let limit = decoder.limits().max_frame.max(1);
    let mut out = Vec::new();
    for c in chunks {
        decoder.feed_chunk((*c).into(), &mut out);
        assert!(decoder.buffered_len() <= limit, "buffered past the limit");
    }
    decoder.finish_stream(&mut out);
    out
}

/// Decodes `chunks` as SSE, checking the buffering bound after every chunk.
pub fn decode_sse(chunks: &[&[u8]], limits: Limits) -> Vec<Item<SseItem>> {
    decode_all(SseDecoder::new(limits), chunks)
}

/// Decodes `chunks` as delimited JSON, checking the buffering bound after every chunk.
pub fn decode_lines(chunks: &[&[u8]], delim: Delimiter, limits: Limits) -> Vec<Item<Frame>> {
    decode_all(JsonLinesDecoder::new(delim, limits), chunks)
}

/// Decodes `chunks` as concatenated JSON, checking the buffering bound after every chunk.
pub fn decode_seq(chunks: &[&[u8]], limits: Limits) -> Vec<Item<Frame>> {
    decode_all(JsonSeqDecoder::new(limits), chunks)
}

/// SSE: whole == chunked == byte by byte, plus invariants.
pub fn check_sse_with(body: &[u8], limits: Limits, sizes: &[usize]) {
    let whole = decode_sse(&[body], limits);
    let split = decode_sse(&chunks(body, sizes), limits);
    assert_eq!(whole, split, "SSE: chunking changed the result");
    // Each item is detached from the decoder's text windows as it arrives, so the decoder
    // reuses them (in place, or from its pool) as it would for a consumer that drops events.
    // Beside it the same stream is fed byte by byte, and the last event ids are compared
    // after every chunk.
    let mut each = Vec::new();
    let mut d = SseDecoder::new(limits);
    let mut bytes = Vec::new();
    let mut by_byte = SseDecoder::new(limits);
    for c in chunks(body, sizes) {
        d.feed_each(c, |item| each.push(detach(item)));
        for b in c.chunks(1) {
            by_byte.feed(b, &mut bytes);
            assert!(
                by_byte.buffered_len() <= limits.max_frame.max(1),
                "SSE buffered past the limit"
            );
        }
        assert_eq!(
            d.last_event_id(),
            by_byte.last_event_id(),
            "SSE: chunking changed the last event id"
        );
    }
    d.finish(&mut each);
    by_byte.finish(&mut bytes);
    assert_eq!(d.last_event_id(), by_byte.last_event_id());
    assert_eq!(whole, bytes, "SSE: byte-by-byte feeding changed the result");
    assert_eq!(whole, each, "SSE: feed_each changed the result");
    let mut last = None;
    for item in &whole {
        match item {
            Item::Error(e) => {
                assert!(
                    e.offset < body.len() as u64,
                    "SSE error offset past the input"
                );
                assert!(
                    last.is_none_or(|l| e.offset > l),
                    "SSE error offsets out of order"
                );
                last = Some(e.offset);
            }
            Item::Frame(SseItem::Event(ev)) => {
                assert!(
                    ev.data.len() <= limits.max_frame * 3,
                    "SSE event data past the limit"
                );
            }
            Item::KeepAlive => panic!("SSE never yields KeepAlive"),
            Item::Frame(_) => {}
        }
    }
}

/// The item with its text copied out of the decoder's shared windows.
fn detach(item: Item<SseItem>) -> Item<SseItem> {
    match item {
        Item::Frame(SseItem::Event(e)) => Item::Frame(SseItem::Event(crate::SseEvent {
            event: crate::Str::from(e.event.as_str()),
            data: crate::Str::from(e.data.as_str()),
            id: crate::Str::from(e.id.as_str()),
        })),
        other => other,
    }
}

/// Delimited JSON (every delimiter): whole == chunked == byte by byte, plus invariants.
pub fn check_lines_with(body: &[u8], limits: Limits, sizes: &[usize]) {
    for delim in [
        Delimiter::Cr,
        Delimiter::Lf,
        Delimiter::CrLf,
        Delimiter::Any,
    ] {
        let whole = decode_lines(&[body], delim, limits);
        let parts = chunks(body, sizes);
        let split = decode_lines(&parts, delim, limits);
        assert_same_frames(&whole, &split, parts.len(), "delimited JSON, chunked");
        let owned = decode_lines_bytes(&parts, delim, limits);
        assert_eq!(split, owned, "{delim:?}: feed_bytes changed the result");
        let ones = chunks(body, &[1]);
        let bytes = decode_lines(&ones, delim, limits);
        assert_same_frames(&whole, &bytes, ones.len(), "delimited JSON, byte by byte");
        check_frames(body, &whole, limits, |b| {
            assert!(
                !crate::is_ws(b[0]) && !crate::is_ws(b[b.len() - 1]),
                "frame not trimmed"
            );
            let bad = match delim {
                Delimiter::Cr => b.contains(&b'\r'),
                Delimiter::Lf => b.contains(&b'\n'),
                Delimiter::Any => b.contains(&b'\r') || b.contains(&b'\n'),
                Delimiter::CrLf => b.windows(2).any(|w| w == b"\r\n"),
            };
            assert!(!bad, "{delim:?}: frame contains a delimiter");
        });
    }
}

/// Delimited JSON fed as `Bytes` chunks (`feed_bytes`).
pub fn decode_lines_bytes(chunks: &[&[u8]], delim: Delimiter, limits: Limits) -> Vec<Item<Frame>> {
    let mut d = JsonLinesDecoder::new(delim, limits);
    let mut out = Vec::new();
    for c in chunks {
        d.feed_bytes(&bytes::Bytes::copy_from_slice(c), &mut out);
        assert!(
            d.buffered_len() <= limits.max_frame.max(1),
            "buffered past the limit"
        );
    }
    d.finish(&mut out);
    out
}

/// Concatenated JSON fed as `Bytes` chunks (`feed_bytes`).
pub fn decode_seq_bytes(chunks: &[&[u8]], limits: Limits) -> Vec<Item<Frame>> {
    let mut d = JsonSeqDecoder::new(limits);
    let mut out = Vec::new();
    for c in chunks {
        d.feed_bytes(&bytes::Bytes::copy_from_slice(c), &mut out);
        assert!(
            d.buffered_len() <= limits.max_frame.max(1),
            "buffered past the limit"
        );
    }
    d.finish(&mut out);
    out
}

/// Concatenated JSON: whole == chunked == byte by byte, plus invariants.
pub fn check_seq_with(body: &[u8], limits: Limits, sizes: &[usize]) {
    let whole = decode_seq(&[body], limits);
    let parts = chunks(body, sizes);
    let split = decode_seq(&parts, limits);
    assert_same_frames(&whole, &split, parts.len(), "json-seq, chunked");
    let owned = decode_seq_bytes(&parts, limits);
    assert_eq!(split, owned, "json-seq: feed_bytes changed the result");
    let ones = chunks(body, &[1]);
    let bytes = decode_seq(&ones, limits);
    assert_same_frames(&whole, &bytes, ones.len(), "json-seq, byte by byte");
    check_frames(body, &whole, limits, |b| {
        assert!(
            matches!(b[0], b'{' | b'['),
            "value does not start with {{ or ["
        );
        assert!(
            matches!(b[b.len() - 1], b'}' | b']'),
            "value does not end with }} or ]"
        );
    });
}

/// Asserts that `split` (the stream fed in `n_chunks` chunks) has exactly the frames and errors
/// of `whole` (the stream fed at once), in order, and keep-alives as the JSON decoders promise:
/// between two frames at least as many as `whole` has there (whitespace continued in a later
/// chunk is reported again), and in all no more than one more per chunk.
pub fn assert_same_frames(
    whole: &[Item<Frame>],
    split: &[Item<Frame>],
    n_chunks: usize,
    what: &str,
) {
    /// Non-keep-alive items, each with the number of keep-alives before it (the last entry
    /// counts the keep-alives at the end).
    fn gaps(items: &[Item<Frame>]) -> (Vec<&Item<Frame>>, Vec<usize>) {
        let (mut frames, mut counts, mut ka) = (Vec::new(), Vec::new(), 0);
        for item in items {
            if matches!(item, Item::KeepAlive) {
                ka += 1;
            } else {
                frames.push(item);
                counts.push(ka);
                ka = 0;
            }
        }
        counts.push(ka);
        (frames, counts)
    }
    let (wf, wk) = gaps(whole);
    let (sf, sk) = gaps(split);
    assert_eq!(wf, sf, "{what}: chunking changed the frames");
    for (k, (w, s)) in wk.iter().zip(&sk).enumerate() {
        assert!(s >= w, "{what}: gap {k} lost keep-alives ({s} < {w})");
    }
    let (wt, st) = (wk.iter().sum::<usize>(), sk.iter().sum::<usize>());
    assert!(
        st <= wt + n_chunks,
        "{what}: {st} keep-alives from {n_chunks} chunks, {wt} unsplit"
    );
}

/// Fuzz entry point for SSE.
pub fn check_sse(input: &[u8]) {
    let (limits, sizes, body) = split_input(input);
    check_sse_with(body, limits, &sizes);
}

/// Fuzz entry point for delimited JSON.
pub fn check_lines(input: &[u8]) {
    let (limits, sizes, body) = split_input(input);
    check_lines_with(body, limits, &sizes);
}

/// Fuzz entry point for concatenated JSON.
pub fn check_seq(input: &[u8]) {
    let (limits, sizes, body) = split_input(input);
    check_seq_with(body, limits, &sizes);
}

fn check_frames(body: &[u8], items: &[Item<Frame>], limits: Limits, each: impl Fn(&[u8])) {
    let mut last_end: Option<u64> = None;
    for item in items {
        match item {
            Item::Frame(f) => {
                let b = &f.bytes[..];
                assert!(!b.is_empty(), "empty frame");
                assert!(b.len() <= limits.max_frame, "frame past the limit");
                let start = usize::try_from(f.offset).expect("offset fits");
                assert_eq!(
                    body.get(start..start + b.len()),
                    Some(b),
                    "frame bytes are not at their offset"
                );
                assert!(
                    last_end.is_none_or(|e| f.offset >= e),
                    "offsets out of order"
                );
                last_end = Some(f.offset + b.len() as u64);
                each(b);
            }
            Item::Error(e) => {
                assert!(e.offset < body.len() as u64, "error offset past the input");
                assert!(
                    last_end.is_none_or(|l| e.offset >= l),
                    "offsets out of order"
                );
                last_end = Some(e.offset + 1);
            }
            Item::KeepAlive => {}
        }
    }
}
