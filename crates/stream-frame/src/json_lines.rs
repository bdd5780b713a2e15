//! Delimited JSON: one JSON text per frame, frames separated by `\r`, `\n` or `\r\n`.

use bytes::Bytes;

use crate::scan::{CR, LF, LINE_ENDS, Pair};
use crate::{Chunk, Frame, FrameError, Item, Limits, is_ws};

/// What separates frames in a delimited JSON stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delimiter {
    /// A carriage return `\r` (Campfire, Flowdock's JSON stream); a `\n` is then whitespace.
    Cr,
    /// A line feed `\n` (JSON Lines / NDJSON); a `\r` is then whitespace.
    Lf,
    /// The two bytes `\r\n`; a lone `\r` or `\n` is then whitespace.
    CrLf,
    /// Any of `\r`, `\n` or `\r\n` (`\r\n` is one boundary, also across chunks).
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    /// Only whitespace (or nothing) seen since the last boundary.
    Start,
    /// Inside a frame; its bytes are in `buf` (up to the limit).
    InFrame,
    /// Inside an oversize frame that was reported; discarding up to the next boundary.
    Skip,
}

/// Incremental decoder for delimited JSON (one JSON text per delimiter-separated segment).
///
/// A *segment* is the bytes between two boundaries (or the stream start and a boundary).
/// * A segment holding any non-whitespace byte yields one [`Item::Frame`]: the segment with
///   surrounding JSON whitespace (space, tab, `\r`, `\n`) trimmed. The bytes are not parsed.
/// * Whitespace that is not part of a frame is a keep-alive: a segment's leading whitespace
///   yields one [`Item::KeepAlive`] per `feed` call that adds to it, as soon as it arrives (so
///   a watchdog sees every one of Campfire's `" "` keep-alives, arriving seconds apart, or
///   Flowdock's `"\n"` at once; `"   "` in one chunk is one keep-alive), and an empty segment
///   (two boundaries in a row, e.g. a blank line) yields one [`Item::KeepAlive`]. How many
///   keep-alives a run yields therefore depends on how it was chunked; frames and errors never
///   do. Whitespace after a frame's last
///   byte and before its boundary belongs to the frame and is trimmed silently. Note that with
///   [`Delimiter::Cr`] a `\r\n` ending is a frame followed by a keep-alive (that `\n` is
///   exactly Flowdock's keep-alive), and that with [`Delimiter::Any`] a `\n` right after a
///   `\r` is part of the boundary, not a keep-alive.
/// * A frame whose trimmed length exceeds [`Limits::max_frame`] yields one [`Item::Error`]
///   (`Oversize`, offset of the frame's first byte) as soon as that is known; the rest of the
///   segment is discarded without being buffered.
/// * At [`finish`](Self::finish) a final frame without a trailing delimiter is still a frame.
#[derive(Debug, Clone)]
pub struct JsonLinesDecoder {
    delim: Delimiter,
    limits: Limits,
    /// Stream offset of the next byte fed.
    pos: u64,
    state: Seg,
    /// A keep-alive was already reported for the current segment.
    ka_sent: bool,
    /// The last byte fed was `\r`.
    last_cr: bool,
    /// Stored bytes of the current frame (at most `limits.max_frame`).
    buf: Vec<u8>,
    frame_start: u64,
    /// Logical length of the current frame so far (may exceed `buf.len()` by trailing whitespace).
    seg_len: usize,
    /// Logical length of the current frame up to and including its last non-whitespace byte.
    trim_len: usize,
    /// The search for the delimiter's line end (`\n` for `CrLf`).
    ends: &'static Pair,
}

impl JsonLinesDecoder {
    /// A decoder splitting on `delim` and refusing frames larger than `limits.max_frame`.
    pub fn new(delim: Delimiter, limits: Limits) -> Self {
        JsonLinesDecoder {
            delim,
            limits: Limits::with_max_frame(limits.max_frame),
            pos: 0,
            state: Seg::Start,
            ka_sent: false,
            last_cr: false,
            buf: Vec::new(),
            frame_start: 0,
            seg_len: 0,
            trim_len: 0,
            ends: match delim {
                Delimiter::Cr => &CR,
                Delimiter::Any => &LINE_ENDS,
                Delimiter::Lf | Delimiter::CrLf => &LF,
            },
        }
    }

    /// Decodes the next chunk of the stream, appending what it completed to `out`.
    ///
    /// `chunk` is a `&[u8]` (or `&[u8; N]`, `&Vec<u8>`, `&str`) or a `&Bytes`. Given a
    /// `&Bytes` (what HTTP clients deliver), frames that lie within the chunk are slices of it,
    /// without copying (such a frame keeps the whole chunk alive while it is held): the fast
    /// path. Given borrowed bytes, frames within one chunk of at most 64 KiB share one copy of
    /// that chunk.
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
        if n == 0 {
            return;
        }
        let base = self.pos;
        // Each call may report one keep-alive for the segment it continues: whitespace that
        // arrives in a later chunk is new proof of life.
        self.ka_sent = false;
        let mut i = 0;
        if self.delim == Delimiter::Any && self.last_cr && chunk[0] == b'\n' {
            // Second half of a `\r\n` boundary split across chunks.
            i = 1;
        }
        while i < n {
            match self.find_boundary(chunk, i) {
                Some((end, next)) => {
                    self.piece(&mut shared, i, end, base, true, out);
                    i = next;
                }
                None => {
                    self.piece(&mut shared, i, n, base, false, out);
                    break;
                }
            }
        }
        self.last_cr = chunk[n - 1] == b'\r';
        self.pos += n as u64;
    }

    /// Ends the stream: a final unterminated frame is emitted; the decoder is then ready for
    /// a new stream (offsets restart at 0).
    pub fn finish(&mut self, out: &mut Vec<Item<Frame>>) {
        if self.state == Seg::InFrame {
            self.emit_buffered(out);
        }
        self.reset_segment();
        self.pos = 0;
        self.last_cr = false;
    }

    /// Bytes currently held for an incomplete frame (never more than `max_frame`).
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Finds the next boundary at or after `from`: (end of the segment, index after the boundary).
    #[inline]
    fn find_boundary(&self, chunk: &[u8], from: usize) -> Option<(usize, usize)> {
        let hay = &chunk[from..];
        match self.delim {
            Delimiter::Lf | Delimiter::Cr => self.ends.find(hay).map(|k| (from + k, from + k + 1)),
            Delimiter::Any => self.ends.find(hay).map(|k| {
                let j = from + k;
                if chunk[j] == b'\r' && chunk.get(j + 1) == Some(&b'\n') {
                    (j, j + 2)
                } else {
                    (j, j + 1)
                }
            }),
            Delimiter::CrLf => {
                let mut s = from;
                loop {
                    let j = s + self.ends.find(&chunk[s..])?;
                    let prev_cr = if j > 0 {
                        chunk[j - 1] == b'\r'
                    } else {
                        self.last_cr
                    };
                    if prev_cr {
                        // The `\r` stays in the segment as trailing whitespace and is trimmed.
                        return Some((j, j + 1));
                    }
                    s = j + 1;
                }
            }
        }
    }

    /// Handles the bytes `start..end` of the chunk, part of a segment that ends there at a
    /// boundary (`terminated`) or continues in the next chunk.
    #[inline]
    fn piece(
        &mut self,
        shared: &mut Shared<'_>,
        start: usize,
        end: usize,
        base: u64,
        terminated: bool,
        out: &mut Vec<Item<Frame>>,
    ) {
        let piece = &shared.chunk[start..end];
        let off = base + start as u64;
        match self.state {
            Seg::Skip => {}
            Seg::Start => match piece.iter().position(|&b| !is_ws(b)) {
                None => {
                    if (terminated || !piece.is_empty()) && !self.ka_sent {
                        self.ka_sent = true;
                        out.push(Item::KeepAlive);
                    }
                }
                Some(k) => {
                    if k > 0 && !self.ka_sent {
                        self.ka_sent = true;
                        out.push(Item::KeepAlive);
                    }
                    self.frame_start = off + k as u64;
                    let rest = &piece[k..];
                    if terminated {
                        // Fast path: the whole frame is in this chunk; no copy into `buf`.
                        let t = trimmed_len(rest);
                        if t > self.limits.max_frame {
                            out.push(Item::Error(FrameError::oversize(
                                self.frame_start,
                                self.limits.max_frame,
                            )));
                        } else {
                            let from = start + k;
                            out.push(Item::Frame(Frame {
                                offset: self.frame_start,
                                bytes: shared.bytes(from, from + t),
                            }));
                        }
                    } else {
                        self.state = Seg::InFrame;
                        self.seg_len = 0;
                        self.trim_len = 0;
                        self.append(rest, out);
                    }
                }
            },
            Seg::InFrame => {
                self.append(piece, out);
                if terminated && self.state == Seg::InFrame {
                    self.emit_buffered(out);
                }
            }
        }
        if terminated {
            self.reset_segment();
        }
    }

    /// Appends frame bytes to the buffer, refusing the frame once it is known to be oversize.
    fn append(&mut self, bytes: &[u8], out: &mut Vec<Item<Frame>>) {
        let t = trimmed_len(bytes);
        let new_trim = if t > 0 {
            self.seg_len + t
        } else {
            self.trim_len
        };
        let max = self.limits.max_frame;
        if new_trim > max {
            out.push(Item::Error(FrameError::oversize(self.frame_start, max)));
            self.state = Seg::Skip;
            self.buf.clear();
            return;
        }
        // Only trailing whitespace can go past the limit; it is counted but not stored.
        let take = bytes.len().min(max - self.buf.len());
        reserve_bounded(&mut self.buf, take, max);
        self.buf.extend_from_slice(&bytes[..take]);
        self.seg_len += bytes.len();
        self.trim_len = new_trim;
    }

    fn emit_buffered(&mut self, out: &mut Vec<Item<Frame>>) {
        out.push(Item::Frame(Frame {
            offset: self.frame_start,
            bytes: Bytes::copy_from_slice(&self.buf[..self.trim_len]),
        }));
        self.buf.clear();
        self.state = Seg::Start;
    }

    fn reset_segment(&mut self) {
        self.state = Seg::Start;
        self.ka_sent = false;
        self.seg_len = 0;
        self.trim_len = 0;
        self.buf.clear();
    }
}

/// Frames of one chunk share a single copy of it (one allocation per chunk instead of one per
/// frame) when the chunk is at most this large; frames of larger chunks get their own copy, so
/// a frame kept alive never pins more than this much memory.
pub(crate) const SHARE_MAX: usize = 64 * 1024;

/// The chunk being decoded and, once a frame needs it, its shared copy.
pub(crate) struct Shared<'a> {
    pub(crate) chunk: &'a [u8],
    copy: Option<Bytes>,
    /// Slice `copy` whatever the chunk's size (the caller handed over a `Bytes`).
    owned: bool,
}

impl<'a> Shared<'a> {
    pub(crate) fn new(chunk: &'a [u8]) -> Self {
        Shared {
            chunk,
            copy: None,
            owned: false,
        }
    }

    pub(crate) fn owned(chunk: &'a Bytes) -> Self {
        Shared {
            chunk,
            copy: Some(chunk.clone()),
            owned: true,
        }
    }

    /// The bytes `from..to` of the chunk as an owned `Bytes`.
    #[inline]
    pub(crate) fn bytes(&mut self, from: usize, to: usize) -> Bytes {
        if !self.owned && self.chunk.len() > SHARE_MAX {
            return Bytes::copy_from_slice(&self.chunk[from..to]);
        }
        let chunk = self.chunk;
        self.copy
            .get_or_insert_with(|| Bytes::copy_from_slice(chunk))
            .slice(from..to)
    }
}

/// Length of `bytes` without trailing JSON whitespace.
#[inline]
fn trimmed_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| !is_ws(b)).map_or(0, |p| p + 1)
}

/// Reserves room for `add` more bytes without letting the capacity grow past `max`
/// (amortized doubling would otherwise overshoot the limit).
#[inline]
pub(crate) fn reserve_bounded(buf: &mut Vec<u8>, add: usize, max: usize) {
    let need = buf.len() + add;
    if need > buf.capacity() {
        let want = (buf.capacity() * 2).max(need).min(max.max(need));
        buf.reserve_exact(want - buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_len_drops_only_trailing_json_whitespace() {
        assert_eq!(trimmed_len(b"{} \t\r\n"), 2);
        assert_eq!(trimmed_len(b" \n"), 0);
        assert_eq!(
            trimmed_len(b"a\x0cb"),
            3,
            "form feed is not JSON whitespace"
        );
    }

    #[test]
    fn reserve_bounded_never_grows_past_the_limit() {
        let mut buf = Vec::with_capacity(600);
        buf.extend_from_slice(&[0; 600]);
        reserve_bounded(&mut buf, 300, 1000);
        assert!(
            buf.capacity() >= 900 && buf.capacity() <= 1000,
            "{}",
            buf.capacity()
        );
    }

    #[test]
    fn small_chunks_share_one_copy_large_ones_do_not() {
        let small = vec![b'x'; 100];
        let mut shared = Shared::new(&small);
        let (a, b) = (shared.bytes(0, 10), shared.bytes(20, 30));
        assert_eq!(a.len() + b.len(), 20);
        assert!(shared.copy.is_some());
        let large = vec![b'x'; SHARE_MAX + 1];
        let mut shared = Shared::new(&large);
        assert_eq!(shared.bytes(5, 10).len(), 5);
        assert!(
            shared.copy.is_none(),
            "a frame of a large chunk must not pin the whole chunk"
        );
    }
}
