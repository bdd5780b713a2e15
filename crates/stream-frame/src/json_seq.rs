//! Concatenated JSON: objects and arrays back to back or separated by whitespace.

use bytes::Bytes;

use crate::json_lines::{Shared, reserve_bounded};
use crate::scan::{OPENS, Pair, QUOTES};
use crate::{Chunk, Frame, FrameError, Item, Limits, is_ws};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between values; `ws` is true inside a whitespace run already reported as a keep-alive.
    Between { ws: bool },
    /// Inside a value whose bytes are buffered (up to the limit).
    InValue,
    /// Inside an oversize value that was reported; tracking its end without storing it.
    SkipValue,
    /// Inside junk outside any value that was reported; skipping to the next `{` or `[`.
    Junk,
}

/// Byte classes for the structural scan outside strings.
const C_NONE: u8 = 0;
const C_OPEN: u8 = 1;
const C_CLOSE: u8 = 2;
const C_QUOTE: u8 = 3;

static CLASS: [u8; 256] = {
    let mut t = [C_NONE; 256];
    t[b'{' as usize] = C_OPEN;
    t[b'[' as usize] = C_OPEN;
    t[b'}' as usize] = C_CLOSE;
    t[b']' as usize] = C_CLOSE;
    t[b'"' as usize] = C_QUOTE;
    t
};

/// Incremental decoder for concatenated JSON: a stream of top-level objects and arrays, back to
/// back or separated by any whitespace, each possibly spanning many lines and chunks.
///
/// Values are delimited by tracking bracket depth, strings and backslash escapes; their
/// contents are not validated (consumers parse [`Frame::bytes`]), and `{`/`[` and `}`/`]` are
/// counted alike, so mismatched brackets surface when the consumer parses the frame.
/// * Each complete top-level object or array yields one [`Item::Frame`] (offset of its `{` or
///   `[`).
/// * Whitespace between values is reported as keep-alives: a whitespace run outside a value
///   yields one [`Item::KeepAlive`] per `feed` call that adds to it, as soon as it arrives (so
///   keep-alives sent seconds apart are each seen; how many a run yields depends on its
///   chunking, frames and errors never do). This lets a
///   liveness watchdog see whitespace heartbeats; a consumer that does not care ignores them.
/// * Anything else outside a value (a scalar, a stray `}`) is junk: one [`Item::Error`]
///   (`Malformed`, offset of the first junk byte) per junk run, then bytes are skipped up to
///   the next `{` or `[`, where decoding resynchronises.
/// * A value longer than [`Limits::max_frame`] yields one `Oversize` error as soon as it is
///   known, and is skipped (still tracking depth and strings, but not stored) to its end.
/// * At [`finish`](Self::finish) an unterminated value yields a `Malformed` error.
#[derive(Debug, Clone)]
pub struct JsonSeqDecoder {
    limits: Limits,
    pos: u64,
    state: State,
    depth: usize,
    in_string: bool,
    /// The previous byte, inside a string, was an unescaped backslash.
    escape: bool,
    buf: Vec<u8>,
    value_start: u64,
    value_len: usize,
    /// The search for the end of a string (`"`) or an escape (`\\`).
    quotes: &'static Pair,
    /// The search for the start of a value after junk (`{` or `[`).
    opens: &'static Pair,
}

impl JsonSeqDecoder {
    /// A decoder refusing values larger than `limits.max_frame`.
    pub fn new(limits: Limits) -> Self {
        JsonSeqDecoder {
            limits: Limits::with_max_frame(limits.max_frame),
            pos: 0,
            state: State::Between { ws: false },
            depth: 0,
            in_string: false,
            escape: false,
            buf: Vec::new(),
            value_start: 0,
            value_len: 0,
            quotes: &QUOTES,
            opens: &OPENS,
        }
    }

    /// Decodes the next chunk of the stream, appending what it completed to `out`.
    ///
    /// `chunk` is a `&[u8]` (or `&[u8; N]`, `&Vec<u8>`, `&str`) or a `&Bytes`. Given a
    /// `&Bytes` (what HTTP clients deliver), values that lie within the chunk are slices of it,
    /// without copying (such a frame keeps the whole chunk alive while it is held). Given
    /// borrowed bytes, values within one chunk of at most 64 KiB share one copy of that chunk.
    pub fn feed<'a>(&mut self, chunk: impl Into<Chunk<'a>>, out: &mut Vec<Item<Frame>>) {
        let shared = match chunk.into() {
            Chunk::Slice(s) => Shared::new(s),
            Chunk::Bytes(b) => Shared::owned(b),
        };
        self.feed_shared(shared, out);
    }

    /// Same as [`feed`](Self::feed) with a `&Bytes` chunk (kept for callers that name it).
    pub fn feed_bytes(&mut self, chunk: &Bytes, out: &mut Vec<Item<Frame>>) {
        self.feed_shared(Shared::owned(chunk), out);
    }

    fn feed_shared(&mut self, mut shared: Shared<'_>, out: &mut Vec<Item<Frame>>) {
        let chunk = shared.chunk;
        let n = chunk.len();
        let base = self.pos;
        if n > 0 && self.state == (State::Between { ws: true }) {
            // Whitespace arriving in a later chunk is new proof of life: report it again.
            self.state = State::Between { ws: false };
        }
        let mut i = 0;
        while i < n {
            match self.state {
                State::Between { ws } => {
                    let b = chunk[i];
                    if is_ws(b) {
                        if !ws {
                            out.push(Item::KeepAlive);
                            self.state = State::Between { ws: true };
                        }
                        i += 1;
                    } else if b == b'{' || b == b'[' {
                        self.start_value(base + i as u64);
                        i = self.value_bytes(&mut shared, i, i + 1, out);
                    } else {
                        out.push(Item::Error(FrameError::malformed(
                            base + i as u64,
                            format!(
                                "unexpected {} outside a JSON object or array; skipped up to \
                                 the next '{{' or '['",
                                describe(b)
                            ),
                        )));
                        self.state = State::Junk;
                        i += 1;
                    }
                }
                State::Junk => match self.opens.find(&chunk[i..]) {
                    Some(k) => {
                        let j = i + k;
                        self.start_value(base + j as u64);
                        i = self.value_bytes(&mut shared, j, j + 1, out);
                    }
                    None => i = n,
                },
                State::InValue | State::SkipValue => {
                    i = self.value_bytes(&mut shared, i, i, out);
                }
            }
        }
        self.pos += n as u64;
    }

    /// Ends the stream: an unterminated value is reported as malformed; the decoder is then
    /// ready for a new stream (offsets restart at 0).
    pub fn finish(&mut self, out: &mut Vec<Item<Frame>>) {
        if self.state == State::InValue {
            out.push(Item::Error(FrameError::malformed(
                self.value_start,
                "unterminated JSON value at end of stream",
            )));
        }
        self.buf.clear();
        self.state = State::Between { ws: false };
        self.depth = 0;
        self.in_string = false;
        self.escape = false;
        self.value_len = 0;
        self.pos = 0;
    }

    /// Bytes currently held for an incomplete value (never more than `max_frame`).
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn start_value(&mut self, at: u64) {
        self.state = State::InValue;
        self.depth = 1;
        self.in_string = false;
        self.escape = false;
        self.value_start = at;
        self.value_len = 0;
        self.buf.clear();
    }

    /// Consumes value bytes of `chunk` from `value_from` (the part of the value in this chunk
    /// starts there), scanning from `scan_from`. Returns the index after the last byte used.
    fn value_bytes(
        &mut self,
        shared: &mut Shared<'_>,
        value_from: usize,
        scan_from: usize,
        out: &mut Vec<Item<Frame>>,
    ) -> usize {
        let chunk = shared.chunk;
        let end = self.scan(chunk, scan_from);
        let (stop, complete) = match end {
            Some(e) => (e + 1, true),
            None => (chunk.len(), false),
        };
        let part = &chunk[value_from..stop];
        let max = self.limits.max_frame;
        if self.state == State::InValue {
            if self.value_len + part.len() > max {
                out.push(Item::Error(FrameError::oversize(self.value_start, max)));
                self.state = State::SkipValue;
                self.buf.clear();
            } else if complete && self.buf.is_empty() {
                // Fast path: the whole value is in this chunk.
                out.push(Item::Frame(Frame {
                    offset: self.value_start,
                    bytes: shared.bytes(value_from, stop),
                }));
            } else {
                reserve_bounded(&mut self.buf, part.len(), max);
                self.buf.extend_from_slice(part);
                if complete {
                    out.push(Item::Frame(Frame {
                        offset: self.value_start,
                        bytes: Bytes::copy_from_slice(&self.buf),
                    }));
                    self.buf.clear();
                }
            }
        }
        self.value_len += part.len();
        if complete {
            self.state = State::Between { ws: false };
            self.value_len = 0;
        }
        stop
    }

    /// Scans value bytes from `from`, updating depth/string/escape state; returns the index of
    /// the byte that closes the top-level value, if it is in this chunk.
    #[inline]
    fn scan(&mut self, chunk: &[u8], from: usize) -> Option<usize> {
        let n = chunk.len();
        let mut i = from;
        while i < n {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                    i += 1;
                    continue;
                }
                match self.quotes.find(&chunk[i..]) {
                    None => return None,
                    Some(k) => {
                        let j = i + k;
                        if chunk[j] == b'\\' {
                            self.escape = true;
                        } else {
                            self.in_string = false;
                        }
                        i = j + 1;
                    }
                }
            } else {
                // Fast skip to the next structural byte. Most bytes outside strings in real JSON
                // are separators, numbers and literals, so a table walk is enough here.
                let c = CLASS[chunk[i] as usize];
                match c {
                    C_NONE => {}
                    C_QUOTE => self.in_string = true,
                    C_OPEN => self.depth += 1,
                    _ => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            return Some(i);
                        }
                    }
                }
                i += 1;
            }
        }
        None
    }
}

fn describe(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("byte '{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}
