//! Throughput of the stream-frame decoders on realistic streams, beside two baselines measured
//! in the same run: a plain `memchr` scan for the delimiter and the `eventsource-stream` crate.
//!
//! Inputs: 64 MiB streams of Flowdock-like events (`id: N`, `data: {json of 300-600 bytes}`),
//! fed in 16 KiB chunks, in a sweep of chunk sizes from 1 KiB to 1 MiB, and (on a 4 MiB prefix,
//! to keep the run short) in 1-byte chunks. Run with `cargo bench -p stream-frame`.
//! Consumers drop the items after each `feed` (or, with `feed_each`, as each one arrives).
#![allow(missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventsource_stream::Eventsource;
use futures_util::Stream;
use stream_frame::{Delimiter, JsonLinesDecoder, JsonSeqDecoder, Limits, SseDecoder};

const STREAM: usize = 64 << 20;
const SMALL: usize = 4 << 20;
const KIB: usize = 1024;

/// A small deterministic generator (xorshift) so the inputs are the same in every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "deploy", "the", "build", "is", "green", "again", "who", "broke", "staging", "lunch?", "ship",
    "it", "review", "please", "merged", "on", "prod", "@team", "rollback", "#ops",
];

/// Non-ASCII words; one message in eight carries one. (The real Flowdock fixtures in
/// `crates/flowdock/tests/fixtures` contain no non-ASCII byte at all, so this is on the heavy side.)
const INTL: &[&str] = &[
    "p\u{e4}ivitys",
    "caf\u{e9}",
    "\u{1F680}",
    "na\u{ef}ve",
    "\u{5b8c}\u{4e86}",
];

/// One Flowdock-like message event as JSON, 300-600 bytes.
fn json_event(rng: &mut Rng, id: usize) -> String {
    let target = rng.range(300, 600);
    let mut content = String::new();
    let head = format!(
        "{{\"event\":\"message\",\"tags\":[\"#deploy\",\":thread\"],\"uuid\":\"{:016x}\",\
         \"id\":{id},\"flow\":\"0a1b2c3d-4e5f-6789-abcd-ef0123456789\",\"sent\":{},\
         \"app\":\"chat\",\"attachments\":[],\"user\":\"{}\",\"content\":\"",
        rng.next(),
        1_700_000_000_000u64 + id as u64 * 1000,
        rng.range(1, 99_999),
    );
    let tail = "\"}";
    if rng.range(0, 8) == 0 {
        content.push_str(INTL[rng.range(0, INTL.len())]);
        content.push(' ');
    }
    while head.len() + content.len() + tail.len() < target {
        content.push_str(WORDS[rng.range(0, WORDS.len())]);
        content.push(' ');
    }
    format!("{head}{content}{tail}")
}

/// A `text/event-stream` of about `size` bytes: `id: N\ndata: {json}\n\n`, with an occasional
/// `:` keep-alive comment.
fn sse_stream(size: usize) -> Vec<u8> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(size + 1024);
    let mut id = 1;
    while out.len() < size {
        out.extend_from_slice(
            format!("id: {id}\ndata: {}\n\n", json_event(&mut rng, id)).as_bytes(),
        );
        if id % 50 == 0 {
            out.extend_from_slice(b":\n\n");
        }
        id += 1;
    }
    out
}

/// A delimited JSON stream (`\n` after each frame, the occasional blank keep-alive line).
fn lines_stream(size: usize) -> Vec<u8> {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut out = Vec::with_capacity(size + 1024);
    let mut id = 1;
    while out.len() < size {
        out.extend_from_slice(json_event(&mut rng, id).as_bytes());
        out.push(b'\n');
        if id % 50 == 0 {
            out.push(b'\n');
        }
        id += 1;
    }
    out
}

/// A concatenated JSON stream: values separated by `\r\n` or nothing.
fn seq_stream(size: usize) -> Vec<u8> {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut out = Vec::with_capacity(size + 1024);
    let mut id = 1;
    while out.len() < size {
        out.extend_from_slice(json_event(&mut rng, id).as_bytes());
        if id % 2 == 0 {
            out.extend_from_slice(b"\r\n");
        }
        id += 1;
    }
    out
}

fn run_sse(input: &[u8], chunk: usize) -> usize {
    let mut d = SseDecoder::new(Limits::default());
    let mut out = Vec::with_capacity(256);
    let mut n = 0;
    for c in input.chunks(chunk) {
        d.feed(c, &mut out);
        n += out.len();
        out.clear();
    }
    d.finish(&mut out);
    n + out.len()
}

/// Same, with `feed_each`: each item is consumed (dropped) as soon as it is decoded.
fn run_sse_each(input: &[u8], chunk: usize) -> usize {
    let mut d = SseDecoder::new(Limits::default());
    let mut n = 0;
    for c in input.chunks(chunk) {
        d.feed_each(c, |item| {
            n += 1;
            drop(black_box(item));
        });
    }
    n
}

fn run_lines(input: &[u8], chunk: usize) -> usize {
    let mut d = JsonLinesDecoder::new(Delimiter::Lf, Limits::default());
    let mut out = Vec::with_capacity(256);
    let mut n = 0;
    for c in input.chunks(chunk) {
        d.feed(c, &mut out);
        n += out.len();
        out.clear();
    }
    d.finish(&mut out);
    n + out.len()
}

/// `feed` given the `Bytes` chunks an HTTP client delivers (the recommended path).
fn run_lines_bytes(chunks: &[Bytes]) -> usize {
    let mut d = JsonLinesDecoder::new(Delimiter::Lf, Limits::default());
    let mut out = Vec::with_capacity(256);
    let mut n = 0;
    for c in chunks {
        d.feed(c, &mut out);
        n += out.len();
        out.clear();
    }
    d.finish(&mut out);
    n + out.len()
}

fn run_seq_bytes(chunks: &[Bytes]) -> usize {
    let mut d = JsonSeqDecoder::new(Limits::default());
    let mut out = Vec::with_capacity(256);
    let mut n = 0;
    for c in chunks {
        d.feed(c, &mut out);
        n += out.len();
        out.clear();
    }
    d.finish(&mut out);
    n + out.len()
}

/// The input split into `Bytes` chunks, as an HTTP client hands them over.
fn bytes_chunks(input: &[u8], chunk: usize) -> Vec<Bytes> {
    let shared = Bytes::copy_from_slice(input);
    (0..shared.len())
        .step_by(chunk)
        .map(|i| shared.slice(i..(i + chunk).min(shared.len())))
        .collect()
}

fn run_seq(input: &[u8], chunk: usize) -> usize {
    let mut d = JsonSeqDecoder::new(Limits::default());
    let mut out = Vec::with_capacity(256);
    let mut n = 0;
    for c in input.chunks(chunk) {
        d.feed(c, &mut out);
        n += out.len();
        out.clear();
    }
    d.finish(&mut out);
    n + out.len()
}

fn run_memchr(input: &[u8], chunk: usize) -> usize {
    input
        .chunks(chunk)
        .map(|c| memchr::memchr_iter(b'\n', c).count())
        .sum()
}

/// Drives `eventsource-stream` over in-memory chunks. The source stream is always ready, so
/// polling with a no-op waker is a complete executor (no runtime overhead is measured).
fn run_eventsource_stream(chunks: &[Bytes]) -> usize {
    let stream = futures_util::stream::iter(chunks.iter().cloned().map(Ok::<Bytes, Infallible>));
    let mut events = std::pin::pin!(stream.eventsource());
    let mut cx = Context::from_waker(Waker::noop());
    let mut n = 0;
    loop {
        match events.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(ev)) => n += ev.map(|e| e.data.len()).unwrap_or(0),
            Poll::Ready(None) => return n,
            Poll::Pending => unreachable!("in-memory stream is always ready"),
        }
    }
}

/// FNV-1a over an event's type, data and id (fields separated so they cannot run together).
fn fnv(h: &mut u64, event: &str, data: &str, id: &str) {
    for part in [event, data, id] {
        for &b in part.as_bytes().iter().chain(&[0xFF]) {
            *h ^= u64::from(b);
            *h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Setup check: (events, checksum) of the stream as each side decodes it; they must agree, so
/// both benchmarks do the same work.
fn sse_checksums(input: &[u8], chunks: &[Bytes]) -> ((usize, u64), (usize, u64)) {
    let mut ours = (0, 0xcbf2_9ce4_8422_2325);
    let mut d = SseDecoder::new(Limits::default());
    for c in chunks {
        d.feed_each(c, |item| {
            if let stream_frame::Item::Frame(stream_frame::SseItem::Event(e)) = item {
                ours.0 += 1;
                fnv(&mut ours.1, &e.event, &e.data, &e.id);
            }
        });
    }
    assert!(!input.is_empty());
    let stream = futures_util::stream::iter(chunks.iter().cloned().map(Ok::<Bytes, Infallible>));
    let mut events = std::pin::pin!(stream.eventsource());
    let mut cx = Context::from_waker(Waker::noop());
    let mut theirs = (0, 0xcbf2_9ce4_8422_2325);
    while let Poll::Ready(Some(ev)) = events.as_mut().poll_next(&mut cx) {
        let e = ev.expect("in-memory stream cannot fail");
        theirs.0 += 1;
        fnv(&mut theirs.1, &e.event, &e.data, &e.id);
    }
    (ours, theirs)
}

fn sse(c: &mut Criterion) {
    let input = sse_stream(STREAM);
    let small = &input[..SMALL];
    let chunks = bytes_chunks(&input, 16 * KIB);
    let (ours, theirs) = sse_checksums(&input, &chunks);
    assert_eq!(
        ours, theirs,
        "stream-frame and eventsource-stream must decode the same events"
    );
    assert!(ours.0 > 100_000, "{ours:?}");
    let mut g = c.benchmark_group("sse");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("stream-frame/16KiB", |b| {
        b.iter(|| black_box(run_sse(black_box(&input), 16 * KIB)))
    });
    g.bench_function("stream-frame-feed_each/16KiB", |b| {
        b.iter(|| black_box(run_sse_each(black_box(&input), 16 * KIB)))
    });
    g.bench_function("eventsource-stream/16KiB", |b| {
        b.iter(|| black_box(run_eventsource_stream(black_box(&chunks))))
    });
    g.bench_function("memchr-baseline/16KiB", |b| {
        b.iter(|| black_box(run_memchr(black_box(&input), 16 * KIB)))
    });
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function("stream-frame/1B (4 MiB)", |b| {
        b.iter(|| black_box(run_sse(black_box(small), 1)))
    });
    g.finish();

    let mut g = c.benchmark_group("sse-chunk-sweep");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(input.len() as u64));
    for size in [KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, 1024 * KIB] {
        g.bench_function(format!("feed/{}KiB", size / KIB), |b| {
            b.iter(|| black_box(run_sse(black_box(&input), size)))
        });
        g.bench_function(format!("feed_each/{}KiB", size / KIB), |b| {
            b.iter(|| black_box(run_sse_each(black_box(&input), size)))
        });
    }
    g.finish();
}

fn json(c: &mut Criterion) {
    let input = lines_stream(STREAM);
    let mut g = c.benchmark_group("json-lines");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(input.len() as u64));
    let chunks = bytes_chunks(&input, 16 * KIB);
    g.bench_function("stream-frame-feed(Bytes)/16KiB", |b| {
        b.iter(|| black_box(run_lines_bytes(black_box(&chunks))))
    });
    g.bench_function("stream-frame-feed(slice)/16KiB", |b| {
        b.iter(|| black_box(run_lines(black_box(&input), 16 * KIB)))
    });
    drop(chunks);
    g.bench_function("memchr-baseline/16KiB", |b| {
        b.iter(|| black_box(run_memchr(black_box(&input), 16 * KIB)))
    });
    let small = &input[..SMALL];
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function("stream-frame/1B (4 MiB)", |b| {
        b.iter(|| black_box(run_lines(black_box(small), 1)))
    });
    g.finish();
    drop(input);

    let input = seq_stream(STREAM);
    let mut g = c.benchmark_group("json-seq");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("stream-frame-feed(slice)/16KiB", |b| {
        b.iter(|| black_box(run_seq(black_box(&input), 16 * KIB)))
    });
    let chunks = bytes_chunks(&input, 16 * KIB);
    g.bench_function("stream-frame-feed(Bytes)/16KiB", |b| {
        b.iter(|| black_box(run_seq_bytes(black_box(&chunks))))
    });
    drop(chunks);
    let small = &input[..SMALL];
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function("stream-frame/1B (4 MiB)", |b| {
        b.iter(|| black_box(run_seq(black_box(small), 1)))
    });
    g.finish();
}

/// Linearity: one 16 MiB line fed in one piece and one byte at a time (limit raised to fit).
fn long_line(c: &mut Criterion) {
    const LINE: usize = 16 << 20;
    let mut sse = Vec::with_capacity(LINE + 16);
    sse.extend_from_slice(b"data: ");
    sse.resize(LINE, b'x');
    sse.extend_from_slice(b"\n\n");
    let mut json = Vec::with_capacity(LINE + 16);
    json.extend_from_slice(b"{\"k\":\"");
    json.resize(LINE, b'x');
    json.extend_from_slice(b"\"}\n");
    let limits = Limits::with_max_frame(32 << 20);
    let mut g = c.benchmark_group("16MiB-line");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(LINE as u64));
    for (name, chunk) in [("one piece", LINE + 16), ("1B", 1)] {
        g.bench_function(format!("sse/{name}"), |b| {
            b.iter(|| {
                let mut d = SseDecoder::new(limits);
                let mut out = Vec::new();
                for c in sse.chunks(chunk) {
                    d.feed(c, &mut out);
                }
                black_box(out.len())
            })
        });
        g.bench_function(format!("json-lines/{name}"), |b| {
            b.iter(|| {
                let mut d = JsonLinesDecoder::new(Delimiter::Lf, limits);
                let mut out = Vec::new();
                for c in json.chunks(chunk) {
                    d.feed(c, &mut out);
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, sse, json, long_line);
criterion_main!(benches);
