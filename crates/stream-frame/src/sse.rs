//! Server-Sent Events (`text/event-stream`), parsed exactly as the WHATWG HTML standard says.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use memchr::{memchr, memrchr2};

use crate::scan::{LINE_ENDS, Pair};
use crate::{Chunk, FrameError, Item, Limits, Str};

/// The default event type.
const MESSAGE: Str = Str::from_static("message");

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One thing an SSE stream delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A dispatched event.
    Event(SseEvent),
    /// A valid `retry:` field: the reconnection time the server asks for, in milliseconds.
    Retry(u64),
    /// A comment line (`:` ...), text after the colon with one leading space removed.
    /// Servers send comments as keep-alives; consumers should treat them as such.
    Comment(String),
}

/// A dispatched Server-Sent Event.
///
/// The fields are [`Str`]s (use them as `&str`): the decoder builds events without a heap
/// allocation of their own; values share the text buffer of the chunk they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type: the last `event:` field of the event, or `"message"` when none (or empty).
    pub event: Str,
    /// The data: the event's `data:` values joined with `\n`.
    pub data: Str,
    /// The last event id at dispatch time (`""` when none was ever set).
    pub id: Str,
}

/// The data of the event being built.
#[derive(Debug, Clone)]
enum Data {
    /// No `data` field yet.
    None,
    /// One `data` value (the common case: a slice of the chunk's text, no copy).
    One(Str),
    /// Several values, joined in the decoder's `buf`.
    Buf,
}

/// Incremental Server-Sent Events decoder following the WHATWG HTML event-stream rules.
///
/// * One UTF-8 BOM at the very start of the stream is skipped (also when split across
///   chunks); any later BOM is data.
/// * Lines end in `\r\n`, `\n` or `\r` (a `\r` and the `\n` after it count once, also when they
///   arrive in different chunks).
/// * A line starting with `:` is a comment, reported as [`SseItem::Comment`] (consumers treat
///   comments as keep-alives); the decoder never yields [`Item::KeepAlive`].
/// * Otherwise the line is split at its first colon into field name and value (one leading
///   space of the value removed); a line without a colon is a field with an empty value.
///   `event` sets the event type, `data` appends to the data, `id` sets the last event id
///   buffer unless the value contains NUL, `retry` yields [`SseItem::Retry`] when the value is
///   non-empty and all ASCII digits (saturating at `u64::MAX`); other fields are ignored.
/// * A blank line dispatches: the last event id is set from the id buffer (even when nothing is
///   dispatched); if no `data` field arrived nothing is dispatched, otherwise an
///   [`SseItem::Event`] is; either way the event type and data are reset.
/// * Invalid UTF-8 in values becomes U+FFFD (as `String::from_utf8_lossy`).
/// * At [`finish`](Self::finish) an unterminated line and an undispatched event are discarded.
/// * Limit: the event being built (its data so far plus the current line) may not exceed
///   [`Limits::max_frame`]. Past that, one [`Item::Error`] (`Oversize`, offset of the line's
///   first byte) is reported as soon as it is known, the event being built and the line are
///   discarded, and every further line is ignored up to and including the next blank line
///   (that event's `id` and `retry` fields too).
#[derive(Debug, Clone)]
pub struct SseDecoder {
    limits: Limits,
    /// Stream offset of the next byte given to `feed_data`.
    pos: u64,
    /// BOM bytes matched so far while the start of the stream is being examined.
    bom: Option<u8>,
    /// The last byte was a `\r` ending a line: a `\n` right after it is part of that ending.
    after_cr: bool,
    /// An incomplete line spanning chunks.
    line: Vec<u8>,
    /// Instead of `line`: an incomplete line already known to be valid text (the tail of the
    /// last chunk's window), completed by the next chunk without a second validation.
    carry: Option<Carry>,
    line_start: u64,
    /// Discarding the rest of an oversize line (or a line of a skipped event).
    skip_line: bool,
    /// Discarding lines up to the next blank line after an oversize error.
    skip_event: bool,
    /// The event's data so far.
    data: Data,
    /// The joined data of a multi-line event (reused between events).
    buf: String,
    /// The event type, when an `event` field set a non-empty one.
    event_type: Option<Str>,
    /// The last non-empty event type seen, reused while the server repeats it.
    last_type: Str,
    /// The last event id buffer; only meaningful while `id_dirty` (otherwise it is `last_id`).
    id_buf: Str,
    /// `id_buf` was set since the last dispatch.
    id_dirty: bool,
    /// The last event id (a plain copy: events get `id_buf` itself, without another count).
    last_id: String,
    /// `last_id` as a `Str`, made when an event without an `id` field needs it.
    last_id_str: Option<Str>,
    /// Instead of `last_id`: the last event id is this range of the carried window, not yet
    /// copied (the window's text before its end does not change while it is carried).
    lazy_id: Option<(usize, usize)>,
    /// Text windows the decoder is done with, reused once no event holds them any more (then
    /// a window costs no allocation).
    pool: Pool,
    /// Size of the windows of the current call (`STREAM_WINDOW` or `COLLECT_WINDOW`).
    window: usize,
    /// The search for line ends.
    ends: &'static Pair,
}

impl SseDecoder {
    /// A decoder refusing events and lines larger than `limits.max_frame`.
    pub fn new(limits: Limits) -> Self {
        SseDecoder {
            limits: Limits::with_max_frame(limits.max_frame),
            pos: 0,
            bom: Some(0),
            after_cr: false,
            line: Vec::new(),
            carry: None,
            line_start: 0,
            skip_line: false,
            skip_event: false,
            data: Data::None,
            buf: String::new(),
            event_type: None,
            last_type: MESSAGE,
            id_buf: Str::default(),
            id_dirty: false,
            last_id: String::new(),
            last_id_str: None,
            lazy_id: None,
            pool: Pool::default(),
            window: STREAM_WINDOW,
            ends: &LINE_ENDS,
        }
    }

    /// The last event id: set at each dispatch (blank line) from the last valid `id:` field.
    pub fn last_event_id(&self) -> &str {
        match (self.lazy_id, &self.carry) {
            (Some((start, end)), Some(c)) => &c.buf[start..end],
            _ => &self.last_id,
        }
    }

    /// Sets the last event id (and the id buffer), e.g. when resuming after a reconnect with
    /// the `Last-Event-ID` that was sent; events keep it until the server sends another id.
    pub fn set_last_event_id(&mut self, id: &str) {
        if let Some(c) = &mut self.carry {
            // A carried `id` line came before this call: it is overridden.
            c.start += std::mem::take(&mut c.pending);
        }
        self.lazy_id = None;
        self.last_id.clear();
        self.last_id.push_str(id);
        self.last_id_str = None;
        self.id_buf = Str::default();
        self.id_dirty = false;
    }

    /// Bytes currently held for the event being built (partial line plus data; never more
    /// than `max_frame`).
    pub fn buffered_len(&self) -> usize {
        self.line.len() + self.carry.as_ref().map_or(0, |c| c.text().len()) + self.data_len()
    }

    /// Length of the event's data so far.
    #[inline]
    fn data_len(&self) -> usize {
        match &self.data {
            Data::None => 0,
            Data::One(s) => s.len(),
            Data::Buf => self.buf.len(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Decodes the next chunk of the stream (`&[u8]`, `&[u8; N]`, `&Vec<u8>`, `&str` or
    /// `&Bytes`), appending what it completed to `out`.
    pub fn feed<'a>(&mut self, chunk: impl Into<Chunk<'a>>, out: &mut Vec<Item<SseItem>>) {
        self.decode(chunk.into(), COLLECT_WINDOW, |item| out.push(item));
    }

    /// Like [`feed`](Self::feed), handing each item to `f` as soon as it is decoded instead of
    /// collecting them: with large chunks the items never pile up (less memory, warmer caches).
    pub fn feed_each<'a>(&mut self, chunk: impl Into<Chunk<'a>>, f: impl FnMut(Item<SseItem>)) {
        self.decode(chunk.into(), STREAM_WINDOW, f);
    }

    /// Decodes a chunk, validating it in windows of about `window` bytes.
    fn decode(&mut self, chunk: Chunk<'_>, window: usize, mut f: impl FnMut(Item<SseItem>)) {
        self.window = window;
        let out = &mut f;
        let mut chunk = chunk.as_slice();
        if let Some(matched) = self.bom {
            let mut m = matched as usize;
            let mut i = 0;
            loop {
                if m == BOM.len() {
                    self.bom = None;
                    self.pos = BOM.len() as u64;
                    chunk = &chunk[i..];
                    break;
                }
                if i == chunk.len() {
                    self.bom = Some(m as u8);
                    return;
                }
                if chunk[i] == BOM[m] {
                    m += 1;
                    i += 1;
                } else {
                    // Not a BOM: the bytes matched so far are ordinary data.
                    self.bom = None;
                    self.feed_data(&BOM[..m], out);
                    chunk = &chunk[i..];
                    break;
                }
            }
        }
        self.feed_data(chunk, out);
    }

    /// Ends the stream: an unterminated line and an undispatched event are discarded (as the
    /// standard says). The last event id is kept; the decoder is then ready for a new stream
    /// (BOM check again, offsets restart at 0), with the id buffer set to the last event id.
    pub fn finish(&mut self, out: &mut Vec<Item<SseItem>>) {
        let _ = out;
        // What the carried window still held is settled (the last event id may be there).
        let _ = self.take_carry();
        self.pos = 0;
        self.bom = Some(0);
        self.after_cr = false;
        self.line.clear();
        self.carry = None;
        self.skip_line = false;
        self.skip_event = false;
        self.data = Data::None;
        self.buf = String::new();
        self.event_type = None;
        self.id_buf = Str::default();
        self.id_dirty = false;
    }

    fn feed_data(&mut self, chunk: &[u8], out: &mut impl FnMut(Item<SseItem>)) {
        let n = chunk.len();
        if n == 0 {
            return;
        }
        if n < 16 && !self.after_cr && !chunk.iter().any(|&b| b == b'\n' || b == b'\r') {
            // A tiny chunk inside a line (e.g. byte-by-byte feeding): just keep it.
            self.partial(chunk, self.pos, out);
            self.pos += n as u64;
            return;
        }
        self.feed_lines(chunk, out);
    }

    /// Moves a carried line into `line` (for the paths that work on bytes).
    #[cold]
    #[inline(never)]
    fn spill_carry(&mut self) {
        if let Some(c) = self.take_carry() {
            self.line.extend_from_slice(c.text().as_bytes());
        }
    }

    /// Takes the carried line, settling first what its window still holds (the last event id,
    /// the `id` line carried with it).
    fn take_carry(&mut self) -> Option<Carry> {
        let mut c = self.carry.take()?;
        let mut lazy = self.lazy_id.take();
        self.settle_carry(&mut lazy, &c.buf, c.start, c.pending);
        c.start += std::mem::take(&mut c.pending);
        Some(c)
    }

    /// Settles, in stream order, what a carried window `buf` still holds for the decoder: the
    /// last event id `lazy` (if any), then the carried `id: X\n` line of `pending` bytes at
    /// `start` (if any; it was checked when carried: no NUL, within the limit, no event being
    /// built).
    fn settle_carry(
        &mut self,
        lazy: &mut Option<(usize, usize)>,
        buf: &Arc<String>,
        start: usize,
        pending: usize,
    ) {
        self.resolve_lazy(lazy, buf);
        if pending > 0 {
            self.pending_id(buf, start, pending);
        }
    }

    /// Makes the range `lazy` of the carried window `buf` (if any) the last event id.
    #[inline(always)]
    fn resolve_lazy(&mut self, lazy: &mut Option<(usize, usize)>, buf: &str) {
        if let Some((start, end)) = lazy.take() {
            self.set_id_from(buf, start, end);
        }
    }

    /// Makes `buf[start..end]` the last event id (the cold part of `resolve_lazy`).
    #[cold]
    #[inline(never)]
    fn set_id_from(&mut self, buf: &str, start: usize, end: usize) {
        self.set_new_id(&buf[start..end]);
    }

    /// Processes a carried `id: X\n` line of `len` bytes at `start` of `buf`.
    #[cold]
    fn pending_id(&mut self, buf: &Arc<String>, start: usize, len: usize) {
        let line = &buf.as_bytes()[start..start + len - 1];
        let done = self.fast_field(line, buf, start);
        debug_assert!(done, "a carried id line is always valid");
    }

    #[inline(never)]
    fn feed_lines(&mut self, chunk: &[u8], out: &mut impl FnMut(Item<SseItem>)) {
        let n = chunk.len();
        let base = self.pos;
        let mut i = 0;
        if self.after_cr {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                i = 1;
            }
        }
        // The complete lines of a large chunk are validated as UTF-8 in windows of about
        // `self.window` bytes (one pass, cheaper than one validation per value, and small
        // enough to stay in cache) and copied into one shared text buffer per window; the
        // values inside a window are then `Str` slices of that buffer (no allocation per value).
        // A region is (chunk index where the window's chunk part starts, offset of that index
        // in the window, window).
        let mut region: Option<(usize, usize, Arc<String>)> = None;
        let mut region_end = 0;
        // No whole-event fast path before this index (it already scanned that far and failed).
        let mut fused_from = 0;
        // The chunk has no line end from this index on (found by the fast path).
        let mut no_end_from = usize::MAX;
        // The last event, when it is carried whole: (window offset, `id` line length, stream
        // offset of its incomplete line, window range of the new last event id).
        let mut carry_event = None;
        // The id of an event dispatched from a carried line, not yet the last event id.
        let mut carried_id = None;
        let use_regions = n >= REGION_MIN;
        if !use_regions && self.carry.is_some() {
            // Small chunks work on bytes.
            self.spill_carry();
        }
        if let Some(Carry {
            buf: mut carry,
            start: event_start,
            pending,
        }) = self.carry.take()
        {
            // The last event id, when still in the carried window (kept there while the window
            // is appended to in place).
            let mut lazy = self.lazy_id.take();
            let start = event_start + pending;
            // The carried line is valid text ending on a character boundary, so this chunk's
            // window is validated in one piece and appended to it. While no event holds the
            // window the line came from any more, that window is reused: appended to in place
            // while it stays small (then small chunks cost no copy beyond their own), else
            // from its start (the line moved to the front); otherwise the line and the chunk
            // are copied into a pooled window.
            let t = carry.len() - start;
            // A chunk of up to two windows is validated first (its first pass over memory).
            let whole_chunk = (n <= 2 * self.window).then(|| simdutf8::basic::from_utf8(chunk));
            let k = self.ends.find(chunk);
            let text = k.and_then(|k| {
                if t + k + self.data_len() > self.limits.max_frame {
                    return None;
                }
                match whole_chunk {
                    Some(valid) => valid.ok(),
                    None => simdutf8::basic::from_utf8(&chunk[..self.window_end(n, 0, k + 1)]).ok(),
                }
            });
            match (k, text) {
                (Some(k), Some(text)) => {
                    let (window, e) = match Arc::get_mut(&mut carry) {
                        Some(buf) if buf.len() + text.len() <= buf.capacity().min(APPEND_MAX) => {
                            buf.push_str(text);
                            (carry, event_start)
                        }
                        Some(buf)
                            if buf.len() - event_start + text.len() <= buf.capacity()
                                && buf.capacity() <= SPARE_MAX =>
                        {
                            // Reused from its start: the carried text moves to the front.
                            self.resolve_lazy(&mut lazy, buf);
                            buf.drain(..event_start);
                            buf.push_str(text);
                            (carry, 0)
                        }
                        _ => {
                            self.resolve_lazy(&mut lazy, &carry);
                            let window = self.pool.window(&carry[event_start..], text);
                            self.pool.put(carry);
                            (window, 0)
                        }
                    };
                    debug_assert!(lazy.is_none() || pending > 0, "set only with a carried id");
                    // The carried line starts at `s`, after the carried `id` line (if any).
                    let s = e + pending;
                    region_end = text.len();
                    let line = &window.as_bytes()[s..s + t + k];
                    // The carried line is usually the `data:` line of an event of the common
                    // shape: dispatched directly when the blank line follows it.
                    let id = (pending > 0).then(|| (e + 4, s - 1));
                    let mut new_id = None;
                    let whole = matches!(self.data, Data::None)
                        && !self.skip_event
                        && line.starts_with(b"data: ")
                        && chunk[k] == b'\n'
                        && chunk.get(k + 1) == Some(&b'\n')
                        && self
                            .emit_fused(&window, (s + 6, s + t + k), id, &mut new_id, out)
                            .is_ok();
                    if whole {
                        i = k + 2;
                        if i < region_end {
                            // Made the last event id by the fast path, which runs next.
                            carried_id = new_id;
                        } else if let Some((a, b)) = new_id {
                            self.set_new_id(&window[a..b]);
                        }
                    } else {
                        self.settle_carry(&mut lazy, &window, e, pending);
                        if !self.fast_field(line, &window, s) {
                            self.line_done(line, Some((&window, s)), self.line_start, out);
                        }
                        i = self.after_line_end(chunk, k);
                    }
                    region = Some((0, s + t, window));
                }
                _ => {
                    self.settle_carry(&mut lazy, &carry, event_start, pending);
                    self.line.extend_from_slice(carry[start..].as_bytes());
                }
            }
        }
        if use_regions && !self.line.is_empty() && !self.skip_line && !self.skip_event {
            // A line carried over from the previous chunk becomes the start of this chunk's
            // first window, so it is handled like any other line (no copy of its own).
            if let Some(k) = self.ends.find(chunk) {
                if self.line.len() + k + self.data_len() <= self.limits.max_frame {
                    self.line.extend_from_slice(&chunk[..k]);
                    match simdutf8::basic::from_utf8(&self.line) {
                        Ok(text) => {
                            let wend = self.window_end(n, 0, k + 1);
                            let l = text.len();
                            let (rest, rest_end) = match simdutf8::basic::from_utf8(&chunk[k..wend])
                            {
                                Ok(rest) => (rest, wend),
                                Err(_) => {
                                    let last = memrchr2(b'\n', b'\r', &chunk[k..wend]);
                                    let cut = k + last.unwrap_or(0);
                                    match simdutf8::basic::from_utf8(&chunk[k..cut]) {
                                        Ok(rest) => (rest, cut),
                                        Err(_) => ("", k),
                                    }
                                }
                            };
                            region_end = rest_end;
                            let window = self.pool.window(text, rest);
                            let line = &window.as_bytes()[..l];
                            if !self.fast_field(line, &window, 0) {
                                self.line_done(line, Some((&window, 0)), self.line_start, out);
                            }
                            self.line.clear();
                            region = Some((k, l, window));
                        }
                        Err(_) => self.buffered_line_done(out),
                    }
                    i = self.after_line_end(chunk, k);
                }
            }
        }
        // The event the window ended in, when the next window starts with it.
        let mut handoff = None;
        while i < n {
            // The event shape of nearly every stream, `id: X\ndata: Y\n\n` or `data: Y\n\n`,
            // inside the validated window: recognised in one pass and dispatched directly.
            if let Some((rb, wo, w)) = &region {
                if i >= *rb
                    && i >= fused_from
                    && i < region_end
                    && matches!(self.data, Data::None)
                    && self.line.is_empty()
                    && !self.skip_line
                    && !self.skip_event
                {
                    let at = wo + i - rb;
                    let (len, no_end, new_id) =
                        self.fused_events(&chunk[i..region_end], w, at, carried_id.take(), out);
                    fused_from = i + len;
                    if let Some(p) = no_end.filter(|&p| {
                        p > len && region_end == n && n - i - p <= self.limits.max_frame
                    }) {
                        // The last event lacks only the end of its `data` line: it is carried
                        // whole, its `id` line unprocessed, to the next chunk's fast path, and
                        // the new last event id stays in its window until needed.
                        carry_event = Some((at + len, p - len, base + (i + p) as u64, new_id));
                        break;
                    }
                    if let Some((a, b)) = new_id {
                        self.set_new_id(&w[a..b]);
                    }
                    if let Some(p) = no_end {
                        fused_from = region_end;
                        if region_end == n {
                            no_end_from = i + p;
                        } else if i + len > *rb {
                            // The window ends inside this event: the next one starts with it.
                            handoff = Some(i + len);
                        }
                    }
                    if len > 0 && handoff.is_none() {
                        i += len;
                        continue;
                    }
                }
            }
            if let Some(start) = handoff.take() {
                i = start;
                fused_from = start;
                self.open_window(chunk, i, &mut region, &mut region_end);
                continue;
            }
            // Blank lines (a third of all lines) are checked without a memchr call, and short
            // remainders (tiny chunks) with a plain loop.
            let found = if matches!(chunk[i], b'\n' | b'\r') {
                Some(0)
            } else if i >= no_end_from {
                None
            } else if n - i < 16 {
                chunk[i..].iter().position(|&b| b == b'\n' || b == b'\r')
            } else {
                self.ends.find(&chunk[i..])
            };
            match found {
                Some(k) => {
                    let end = i + k;
                    if self.line.is_empty() && !self.skip_line {
                        // Fast path: the whole line is in this chunk, no copy.
                        if use_regions && end > region_end {
                            self.open_window(chunk, i, &mut region, &mut region_end);
                        }
                        let src = match &region {
                            Some((rb, wo, s)) if end <= region_end && i >= *rb => {
                                Some((s, wo + i - rb))
                            }
                            _ => None,
                        };
                        let line = &chunk[i..end];
                        if line.is_empty() && !self.skip_event {
                            self.dispatch(out);
                        } else if !src.is_some_and(|(buf, at)| self.fast_field(line, buf, at)) {
                            self.line_done(line, src, base + i as u64, out);
                        }
                    } else {
                        self.partial(&chunk[i..end], base + i as u64, out);
                        self.buffered_line_done(out);
                    }
                    i = self.after_line_end(chunk, end);
                }
                None => {
                    // A tail inside the validated window is kept as text for the next chunk.
                    match region.take() {
                        Some((rb, wo, buf))
                            if region_end == n
                                && i >= rb
                                && self.line.is_empty()
                                && !self.skip_line
                                && !self.skip_event
                                && n - i + self.data_len() <= self.limits.max_frame
                                && buf.is_char_boundary(wo + i - rb) =>
                        {
                            self.line_start = base + i as u64;
                            self.carry = Some(Carry {
                                start: wo + i - rb,
                                pending: 0,
                                buf,
                            });
                        }
                        r => {
                            region = r;
                            self.partial(&chunk[i..], base + i as u64, out);
                        }
                    }
                    break;
                }
            }
        }
        debug_assert!(carried_id.is_none(), "the fast path took the carried id");
        match (region, carry_event) {
            (Some((_, _, buf)), Some((start, pending, line_start, new_id))) => {
                self.line_start = line_start;
                self.lazy_id = new_id;
                self.carry = Some(Carry {
                    buf,
                    start,
                    pending,
                });
            }
            (Some((_, _, window)), None) => self.pool.put(window),
            (None, _) => {}
        }
        self.pos += n as u64;
    }

    /// The end of a window starting at `from` in a chunk of `n` bytes and reaching at least
    /// `min_end`: the chunk's end when at most two windows remain, else one window on.
    #[inline]
    fn window_end(&self, n: usize, from: usize, min_end: usize) -> usize {
        if n - from <= 2 * self.window {
            n
        } else {
            (from + self.window).max(min_end)
        }
    }

    /// Validates the next window of `chunk` from `i` (a line start) and makes it the region.
    /// Lines start and end at ASCII bytes, so every line inside a valid window is valid text
    /// on its own. The window normally runs to the chunk's end (or `self.window` bytes, in a
    /// larger chunk); only when that fails (a character split by the chunk's end, or invalid
    /// bytes) is it cut back to the last line ending.
    fn open_window(
        &mut self,
        chunk: &[u8],
        i: usize,
        region: &mut Option<(usize, usize, Arc<String>)>,
        region_end: &mut usize,
    ) {
        let n = chunk.len();
        let wend = self.window_end(n, i, i);
        if let Some((_, _, old)) = region.take() {
            self.pool.put(old);
        }
        match simdutf8::basic::from_utf8(&chunk[i..wend]) {
            Ok(s) => {
                *region_end = wend;
                *region = Some((i, 0, self.pool.window(s, "")));
            }
            Err(_) => {
                let last = memrchr2(b'\n', b'\r', &chunk[i..wend]);
                *region_end = i + last.unwrap_or(0);
                *region = simdutf8::basic::from_utf8(&chunk[i..*region_end])
                    .ok()
                    .map(|s| (i, 0, self.pool.window(s, "")));
            }
        }
    }

    /// The index after the line ending at `end` (a `\r` at the chunk's end may be followed by
    /// a `\n` in the next chunk: remembered in `after_cr`).
    #[inline]
    fn after_line_end(&mut self, chunk: &[u8], end: usize) -> usize {
        let n = chunk.len();
        if chunk[end] == b'\r' {
            if end + 1 < n {
                if chunk[end + 1] == b'\n' {
                    end + 2
                } else {
                    end + 1
                }
            } else {
                self.after_cr = true;
                n
            }
        } else {
            end + 1
        }
    }

    /// Adds the bytes of an incomplete line, refusing it once the event would be oversize.
    #[inline]
    fn partial(&mut self, bytes: &[u8], off: u64, out: &mut impl FnMut(Item<SseItem>)) {
        if bytes.is_empty() || self.skip_line {
            return;
        }
        if self.line.is_empty() {
            if self.carry.is_some() {
                // A carried line continues (`line_start` is set); from here on it is bytes.
                self.spill_carry();
            } else {
                self.line_start = off;
            }
        }
        if self.skip_event {
            // The line belongs to a skipped event: only its end matters.
            self.skip_line = true;
            return;
        }
        if self.line.len() + bytes.len() + self.data_len() > self.limits.max_frame {
            self.oversize(self.line_start, out);
            self.skip_line = true;
            self.line.clear();
            return;
        }
        if let [b] = bytes {
            self.line.push(*b);
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn buffered_line_done(&mut self, out: &mut impl FnMut(Item<SseItem>)) {
        if self.skip_line {
            // A non-empty line that was discarded.
            self.skip_line = false;
            self.line.clear();
            return;
        }
        let line = std::mem::take(&mut self.line);
        self.line_done(&line, None, self.line_start, out);
        self.line = line;
        self.line.clear();
    }

    fn oversize(&mut self, off: u64, out: &mut impl FnMut(Item<SseItem>)) {
        out(Item::Error(FrameError::oversize(
            off,
            self.limits.max_frame,
        )));
        self.skip_event = true;
        self.data = Data::None;
        self.buf.clear();
        self.event_type = None;
    }

    /// Processes one complete line (without its ending); `src` is the shared text buffer the
    /// line lies in and the line's offset in it, when the line is already known to be valid
    /// UTF-8.
    #[inline]
    fn line_done(
        &mut self,
        line: &[u8],
        src: Option<(&Arc<String>, usize)>,
        off: u64,
        out: &mut impl FnMut(Item<SseItem>),
    ) {
        if line.is_empty() {
            if self.skip_event {
                self.skip_event = false;
            } else {
                self.dispatch(out);
            }
            return;
        }
        if self.skip_event {
            return;
        }
        let max = self.limits.max_frame;
        if line.len() + self.data_len() > max {
            self.oversize(off, out);
            return;
        }
        // The common field names are recognised by prefix, without searching for the colon.
        let colon = if line.starts_with(b"data:") {
            Some(4)
        } else if line.starts_with(b"id:") {
            Some(2)
        } else {
            memchr(b':', line)
        };
        let (name, vstart) = match colon {
            Some(c) => {
                let v = c + 1;
                (
                    &line[..c],
                    if line.get(v) == Some(&b' ') { v + 1 } else { v },
                )
            }
            None => (line, line.len()),
        };
        // Field values start after an ASCII byte and end at the line end: char boundaries.
        let value = &line[vstart..];
        let value_src = src.map(|(buf, at)| (buf, at + vstart, at + line.len()));
        match name {
            b"data" => {
                let sep = usize::from(!matches!(self.data, Data::None));
                match std::mem::replace(&mut self.data, Data::Buf) {
                    Data::None => match value_src.and_then(|(b, s, e)| Str::slice_of(b, s, e)) {
                        Some(v) => self.data = Data::One(v),
                        None => {
                            let v = to_str(value);
                            if v.len() > max {
                                // Only possible when U+FFFD replacements made the text longer.
                                self.oversize(off, out);
                                return;
                            }
                            self.buf.clear();
                            self.buf.push_str(&v);
                        }
                    },
                    Data::One(first) => {
                        self.buf.clear();
                        self.buf.push_str(&first);
                        self.push_data(value_src, value, sep, off, out);
                    }
                    Data::Buf => self.push_data(value_src, value, sep, off, out),
                }
            }
            b"" => out(Item::Frame(SseItem::Comment(
                value_text(value_src, value).into_owned(),
            ))),
            b"id" if !value.contains(&0) => {
                let v = value_text(value_src, value);
                let current = if self.id_dirty {
                    self.id_buf.as_str()
                } else {
                    self.last_id.as_str()
                };
                if current != v {
                    self.id_buf = make_str(value_src, v);
                } else if !self.id_dirty {
                    self.id_buf = self.last_id_str();
                }
                self.id_dirty = true;
            }
            b"event" => {
                let v = value_text(value_src, value);
                self.event_type = if v.is_empty() {
                    None
                } else if self.last_type.as_str() == v {
                    Some(self.last_type.clone())
                } else {
                    self.last_type = make_str(value_src, v);
                    Some(self.last_type.clone())
                };
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let ms = value.iter().fold(0u64, |acc, d| {
                    acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                out(Item::Frame(SseItem::Retry(ms)));
            }
            _ => {}
        }
    }

    /// Handles the two fields of nearly every event, `data` (the event's first) and `id`, when
    /// the line is already text in a shared buffer (at `at`): the value becomes a slice of it.
    /// Returns false, having done nothing, for any other line.
    #[inline(always)]
    fn fast_field(&mut self, line: &[u8], buf: &Arc<String>, at: usize) -> bool {
        if self.skip_event || line.len() + self.data_len() > self.limits.max_frame {
            return false;
        }
        let end = at + line.len();
        if let Some(rest) = line.strip_prefix(b"data:") {
            if matches!(self.data, Data::None) {
                let v = 5 + usize::from(rest.first() == Some(&b' '));
                if let Some(s) = Str::slice_of(buf, at + v, end) {
                    self.data = Data::One(s);
                    return true;
                }
            }
        } else if let Some(rest) = line.strip_prefix(b"id:") {
            let v = 3 + usize::from(rest.first() == Some(&b' '));
            if !line[v..].contains(&0) {
                if let Some(s) = Str::slice_of(buf, at + v, end) {
                    self.id_buf = s;
                    self.id_dirty = true;
                    return true;
                }
            }
        }
        false
    }

    /// Decodes the events at the start of `s` that [`fused_event`](Self::fused_event) handles,
    /// returning how many bytes they took, when known the index from which `s` holds no line
    /// end, and the window range of the new last event id (for the caller to set; `new_id` is
    /// the one before these events).
    #[inline]
    fn fused_events(
        &mut self,
        s: &[u8],
        w: &Arc<String>,
        at: usize,
        mut new_id: Option<(usize, usize)>,
        out: &mut impl FnMut(Item<SseItem>),
    ) -> (usize, Option<usize>, Option<(usize, usize)>) {
        // The newest id is made the last event id once at the end (not copied per event).
        let mut i = 0;
        let no_end = loop {
            match self.fused_event(&s[i..], w, at + i, &mut new_id, out) {
                Ok(len) => i += len,
                Err(no_end) => break no_end.map(|p| i + p),
            }
        };
        (i, no_end, new_id)
    }

    /// Decodes a whole `id: X\ndata: Y\n\n` or `data: Y\n\n` event at the start of `s`
    /// (valid text, at offset `at` of the window `w`; no event is being built) and dispatches
    /// it, returning its length. For any other input it does nothing and returns, when it
    /// found that, the index from which `s` holds no line end.
    #[inline(always)]
    fn fused_event(
        &mut self,
        s: &[u8],
        w: &Arc<String>,
        at: usize,
        new_id: &mut Option<(usize, usize)>,
        out: &mut impl FnMut(Item<SseItem>),
    ) -> Result<usize, Option<usize>> {
        let max = self.limits.max_frame;
        let (id_end, d) = if s.starts_with(b"id: ") {
            let Some(k) = self.ends.find(&s[4..]) else {
                return Err(Some(0));
            };
            let e = 4 + k;
            if s[e] != b'\n' || e > max || s[4..e].contains(&0) {
                return Err(None);
            }
            (e, e + 1)
        } else {
            (0, 0)
        };
        if !s.get(d..).is_some_and(|l| l.starts_with(b"data: ")) {
            return Err(None);
        }
        let Some(k) = self.ends.find(&s[d + 6..]) else {
            return Err(Some(d));
        };
        let e = d + 6 + k;
        if s[e] != b'\n' || s.get(e + 1) != Some(&b'\n') || e - d > max {
            return Err(None);
        }
        let id = (id_end > 0).then_some((at + 4, at + id_end));
        self.emit_fused(w, (at + d + 6, at + e), id, new_id, out)?;
        Ok(e + 2)
    }

    /// Dispatches an event whose data is the range `data` of the window `w` and whose `id`
    /// field, when it had one, is the range `id` (no event is being built). `new_id` is the
    /// newest id of the current run of such events (made the last event id when it ends).
    #[inline(always)]
    fn emit_fused(
        &mut self,
        w: &Arc<String>,
        data: (usize, usize),
        id: Option<(usize, usize)>,
        new_id: &mut Option<(usize, usize)>,
        out: &mut impl FnMut(Item<SseItem>),
    ) -> Result<(), Option<usize>> {
        // Built in place, without the general dispatcher (moving values through `self.data`
        // cost a store-forwarding stall per event).
        let data = Str::slice_of(w, data.0, data.1).ok_or(None)?;
        let id = if let Some((start, end)) = id {
            let id = Str::shared_of(w, start, end).ok_or(None)?;
            *new_id = Some((start, end));
            id
        } else if let Some((start, end)) = *new_id {
            Str::shared_of(w, start, end).ok_or(None)?
        } else if self.id_dirty {
            let id = std::mem::take(&mut self.id_buf);
            self.set_new_id(&id);
            id
        } else {
            self.last_id_str()
        };
        out(Item::Frame(SseItem::Event(SseEvent {
            event: self.event_type.take().unwrap_or(MESSAGE),
            data,
            id,
        })));
        Ok(())
    }

    /// Makes `id` the last event id at a dispatch (clearing the id buffer).
    #[inline]
    fn set_new_id(&mut self, id: &str) {
        self.id_dirty = false;
        self.id_buf = Str::default();
        self.last_id.clear();
        self.last_id.push_str(id);
        self.last_id_str = None;
    }

    /// Appends one more data value to the joined data in `buf` (`self.data` is `Data::Buf`).
    fn push_data(
        &mut self,
        value_src: Option<(&Arc<String>, usize, usize)>,
        value: &[u8],
        sep: usize,
        off: u64,
        out: &mut impl FnMut(Item<SseItem>),
    ) {
        let v = value_text(value_src, value);
        if self.buf.len() + sep + v.len() > self.limits.max_frame {
            // Only possible when U+FFFD replacements made the text longer.
            self.oversize(off, out);
            return;
        }
        if sep == 1 {
            self.buf.push('\n');
        }
        self.buf.push_str(&v);
    }

    #[inline]
    fn dispatch(&mut self, out: &mut impl FnMut(Item<SseItem>)) {
        let new_id = if self.id_dirty {
            self.id_dirty = false;
            let id = std::mem::take(&mut self.id_buf);
            self.last_id.clear();
            self.last_id.push_str(&id);
            self.last_id_str = None;
            Some(id)
        } else {
            None
        };
        let data = match std::mem::replace(&mut self.data, Data::None) {
            Data::None => {
                self.event_type = None;
                self.last_id_str = new_id;
                return;
            }
            Data::One(s) => s,
            Data::Buf => Str::from(std::mem::take(&mut self.buf)),
        };
        // A new id goes to the event as is (the decoder keeps a plain copy), so an event costs
        // no reference count beyond its data's and its id's.
        let id = match new_id {
            Some(id) => id,
            None => self.last_id_str(),
        };
        out(Item::Frame(SseItem::Event(SseEvent {
            event: self.event_type.take().unwrap_or(MESSAGE),
            data,
            id,
        })));
    }

    /// The last event id as a `Str` (made once per id, then shared).
    fn last_id_str(&mut self) -> Str {
        if self.last_id.is_empty() {
            return Str::default();
        }
        let id = &self.last_id;
        self.last_id_str
            .get_or_insert_with(|| Str::from(id.as_str()))
            .clone()
    }
}

/// Chunks shorter than this are not validated in windows (per-value validation is cheaper).
const REGION_MIN: usize = 256;
/// Size of the windows validated at once in larger chunks by `feed_each`, whose consumers
/// usually drop each event at once: the window is then reused while still in the L1 cache.
const STREAM_WINDOW: usize = 4 * 1024;
/// Size of the windows of `feed`, whose items (and so windows) all live until the call ends:
/// fewer, larger windows are cheaper to hand out.
const COLLECT_WINDOW: usize = 16 * 1024;

/// A carried line's window takes the next chunk's text in place while it stays this small.
const APPEND_MAX: usize = 4 * 1024;

/// An incomplete line known to be valid text: the end of a window, from `start`. When
/// `pending` is not 0, the text starts with a complete `id: X\n` line of that length, not yet
/// processed: the whole event goes to the next chunk's fast path.
#[derive(Debug, Clone)]
struct Carry {
    buf: Arc<String>,
    start: usize,
    pending: usize,
}

impl Carry {
    /// The incomplete line so far.
    fn text(&self) -> &str {
        &self.buf[self.start + self.pending..]
    }
}

/// Room a new window leaves for a carried line (events are usually shorter).
const CARRY_ROOM: usize = 2 * 1024;

/// Windows larger than this are not kept for reuse (a long line's window would pin memory).
const SPARE_MAX: usize = 64 * 1024;

/// The pool keeps windows of at most this many bytes in all: enough for the windows of a
/// 1 MiB chunk, which `feed` callers hold (in the items) until they clear them.
const POOL_MAX: usize = 2 << 20;

/// Text windows waiting to be reused, oldest first.
#[derive(Debug, Clone, Default)]
struct Pool {
    windows: VecDeque<Arc<String>>,
    /// Their capacity in all.
    bytes: usize,
}

impl Pool {
    /// A shared text buffer holding `a` then `b`: the oldest pooled one when no event holds
    /// it any more, else a new one.
    fn window(&mut self, a: &str, b: &str) -> Arc<String> {
        if let Some(mut w) = self.windows.pop_front() {
            self.bytes -= w.capacity();
            if let Some(text) = Arc::get_mut(&mut w) {
                text.clear();
                text.push_str(a);
                text.push_str(b);
                return w;
            }
            // Still held by an event: tried again after the others.
            self.put(w);
        }
        // Room for small chunks to be appended in place, and for the next chunk's text with
        // a line carried before it when the window is reused from its start.
        let mut text = String::with_capacity((a.len() + b.len() + CARRY_ROOM).max(APPEND_MAX));
        text.push_str(a);
        text.push_str(b);
        Arc::new(text)
    }

    /// Keeps a window the decoder is done with (events may still hold it).
    fn put(&mut self, w: Arc<String>) {
        if w.capacity() > SPARE_MAX {
            return;
        }
        self.bytes += w.capacity();
        self.windows.push_back(w);
        while self.bytes > POOL_MAX {
            match self.windows.pop_front() {
                Some(old) => self.bytes -= old.capacity(),
                None => break,
            }
        }
    }
}

/// A field value as text: a slice of the shared buffer when known, else `to_str` of the bytes.
#[inline]
fn value_text<'a>(src: Option<(&'a Arc<String>, usize, usize)>, value: &'a [u8]) -> Cow<'a, str> {
    match src.and_then(|(b, s, e)| b.get(s..e)) {
        Some(s) => Cow::Borrowed(s),
        None => to_str(value),
    }
}

/// A field value as a `Str`: a slice of the shared buffer when there is one, else a copy.
#[inline]
fn make_str(src: Option<(&Arc<String>, usize, usize)>, text: Cow<'_, str>) -> Str {
    match src.and_then(|(b, s, e)| Str::slice_of(b, s, e)) {
        Some(s) => s,
        None => match text {
            Cow::Borrowed(t) => Str::from(t),
            Cow::Owned(t) => Str::from(t),
        },
    }
}

/// Bytes as text: borrowed when valid UTF-8, invalid sequences replaced by U+FFFD otherwise.
fn to_str(bytes: &[u8]) -> Cow<'_, str> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}
