//! The sans-IO core of a Flowdock stream: bytes in, [`SourceItem`]s out, cursor kept.
//!
//! [`StreamDecoder`] frames either transport with `stream-frame`, parses each message, maps
//! it to an event and advances the resume cursor. It does no IO and reads no clock (the caller
//! passes the time), so every protocol rule is testable without a socket.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use chat_model::{Cursor, SourceItem, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stream_frame::{Chunk, Delimiter, Frame, Item, JsonLinesDecoder, Limits, SseDecoder, SseItem};

use crate::mapping::{normalize_flow, room_of, to_event};
use crate::wire::WireMessage;

/// Which of the two streaming content types to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// `text/event-stream`: Server-Sent Events, resumed with `Last-Event-ID` (the default).
    #[default]
    EventStream,
    /// `application/json`: `\r`-delimited JSON objects, gaps closed by REST backfill.
    Json,
}

impl Transport {
    /// The `Accept` header value that selects this transport.
    pub fn accept(self) -> &'static str {
        match self {
            Transport::EventStream => "text/event-stream",
            Transport::Json => "application/json",
        }
    }
}

/// Where a Flowdock connection resumes: stored in a [`chat_model::Cursor`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowdockCursor {
    /// The last SSE event id seen (sent as `Last-Event-ID` on reconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_id: Option<String>,
    /// The highest message id delivered per flow (`org/flow`), for REST backfill.
    #[serde(default)]
    pub last_message_id: BTreeMap<String, u64>,
}

impl FlowdockCursor {
    /// Wraps the cursor for the supervisor.
    pub fn to_cursor(&self) -> Cursor {
        Cursor::from_typed(self)
    }

    /// Reads a cursor stored by [`FlowdockCursor::to_cursor`].
    pub fn from_cursor(cursor: &Cursor) -> Result<Self, chat_model::CursorError> {
        cursor.to_typed()
    }

    /// Records that message `id` of `room` was delivered; returns false when it was not newer
    /// than what the cursor already holds.
    pub fn advance(&mut self, room: &str, id: u64) -> bool {
        let last = self.last_message_id.entry(room.to_owned()).or_insert(0);
        if id > *last {
            *last = id;
            true
        } else {
            false
        }
    }
}

enum Framer {
    Json(JsonLinesDecoder, Vec<Item<Frame>>),
    Sse(Box<SseDecoder>, Vec<Item<SseItem>>),
}

/// Decodes one connection's bytes into [`SourceItem`]s, keeping the resume cursor.
pub struct StreamDecoder {
    source: String,
    transport: Transport,
    framer: Framer,
    cursor: FlowdockCursor,
    /// Bytes fed so far (for error offsets of SSE events).
    fed: u64,
    /// Skip messages whose id is not newer than the cursor (overlap of backfill or replay and
    /// the live stream; Flowdock message ids grow within a flow).
    skip_delivered: bool,
    /// Other references to the configured flows (a flow id, as the REST answers for that
    /// flow name it), each to the configured `org/flow`.
    aliases: HashMap<String, String>,
    /// The flow a message that names none belongs to (a single-flow stream).
    only_flow: Option<String>,
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder")
            .field("source", &self.source)
            .field("transport", &self.transport)
            .field("cursor", &self.cursor)
            .field("fed", &self.fed)
            .finish_non_exhaustive()
    }
}

impl StreamDecoder {
    /// A decoder for `transport`, naming events with `source`, resuming from `cursor`, and
    /// refusing frames larger than `max_frame` bytes.
    pub fn new(
        source: impl Into<String>,
        transport: Transport,
        cursor: FlowdockCursor,
        max_frame: usize,
    ) -> Self {
        let limits = Limits::with_max_frame(max_frame);
        let framer = match transport {
            // The document: objects "delimited by carriage return (\r). Newline characters
            // (\n) may occur in messages, but carriage returns should not." So only `\r`
            // ends a frame: a pretty-printed object with raw newlines between its members is
            // one message, `\n` (or other whitespace) between frames is a keep-alive, and a
            // `\r\n` ending is a frame followed by a keep-alive.
            Transport::Json => Framer::Json(JsonLinesDecoder::new(Delimiter::Cr, limits), vec![]),
            Transport::EventStream => {
                let mut dec = SseDecoder::new(limits);
                if let Some(id) = &cursor.last_event_id {
                    dec.set_last_event_id(id);
                }
                Framer::Sse(Box::new(dec), vec![])
            }
        };
        StreamDecoder {
            source: source.into(),
            transport,
            framer,
            cursor,
            fed: 0,
            skip_delivered: true,
            aliases: HashMap::new(),
            only_flow: None,
        }
    }

    /// Messages that name no flow (and are not private) belong to `flow`: the stream reads
    /// that one flow only.
    pub fn set_only_flow(&mut self, flow: Option<String>) {
        self.only_flow = flow;
    }

    /// Learns that `reference` (as a message's `flow` field gives it, e.g. a flow id) is the
    /// configured flow `flow` (`org/flow`): such messages are named and resumed as `flow`.
    pub fn learn_alias(&mut self, reference: &str, flow: &str) {
        let reference = normalize_flow(reference.trim());
        if reference.is_empty() || reference == flow {
            return;
        }
        // Positions recorded under the other name before it was known count for the flow.
        if let Some(id) = self.cursor.last_message_id.remove(&reference) {
            self.cursor.advance(flow, id);
        }
        self.aliases.insert(reference, flow.to_owned());
    }

    /// The configured flow a message belongs to, when it names one (or the stream has one).
    fn flow_of(&self, msg: &WireMessage) -> Option<String> {
        match msg.flow.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) => {
                let f = normalize_flow(f);
                Some(self.aliases.get(&f).cloned().unwrap_or(f))
            }
            None if msg.to.is_none() => self.only_flow.clone(),
            None => None,
        }
    }

    /// Delivers a message fetched over REST for the configured `flow`: it belongs to that
    /// flow whatever its `flow` field says (which, when it differs, is learnt as an alias).
    pub fn deliver_backfilled(
        &mut self,
        flow: &str,
        mut msg: WireMessage,
        raw: Value,
        now: Timestamp,
        out: &mut VecDeque<SourceItem>,
    ) {
        if let Some(reference) = msg.flow.as_deref() {
            let reference = reference.to_owned();
            self.learn_alias(&reference, flow);
        }
        msg.flow = Some(flow.to_owned());
        self.deliver(msg, raw, now, out);
    }

    /// The resume cursor after everything decoded so far.
    pub fn cursor(&self) -> &FlowdockCursor {
        &self.cursor
    }

    /// Bytes buffered inside an incomplete frame (non-zero when a stream was cut mid-frame).
    pub fn buffered_len(&self) -> usize {
        match &self.framer {
            Framer::Json(d, _) => d.buffered_len(),
            Framer::Sse(d, _) => d.buffered_len(),
        }
    }

    /// Feeds one network chunk received at `now`, appending what it completed to `out`.
    ///
    /// `chunk` is a `&Bytes` as the HTTP client delivers it (JSON frames are then slices of
    /// it, without copying) or any `&[u8]`.
    pub fn feed<'a>(
        &mut self,
        chunk: impl Into<Chunk<'a>>,
        now: Timestamp,
        out: &mut VecDeque<SourceItem>,
    ) {
        let chunk = chunk.into();
        let base = self.fed;
        self.fed += chunk.as_slice().len() as u64;
        match &mut self.framer {
            Framer::Json(dec, items) => {
                dec.feed(chunk, items);
                let mut items = std::mem::take(items);
                self.json_items(&mut items, now, out);
                self.give_back_json(items);
            }
            Framer::Sse(dec, items) => {
                // The items of one network chunk are few; collecting them in the reused buffer
                // costs nothing next to parsing each event's JSON.
                dec.feed(chunk, items);
                let mut items = std::mem::take(items);
                self.sse_items(&mut items, base, now, out);
                self.give_back_sse(items);
            }
        }
    }

    /// Ends the stream: a final JSON frame without a delimiter is still delivered.
    pub fn finish(&mut self, now: Timestamp, out: &mut VecDeque<SourceItem>) {
        let base = self.fed;
        match &mut self.framer {
            Framer::Json(dec, items) => {
                dec.finish(items);
                let mut items = std::mem::take(items);
                self.json_items(&mut items, now, out);
                self.give_back_json(items);
            }
            Framer::Sse(dec, items) => {
                dec.finish(items);
                let mut items = std::mem::take(items);
                self.sse_items(&mut items, base, now, out);
                self.give_back_sse(items);
            }
        }
    }

    /// Returns the (drained) item buffer to the framer, so its capacity is reused.
    fn give_back_json(&mut self, items: Vec<Item<Frame>>) {
        if let Framer::Json(_, slot) = &mut self.framer {
            *slot = items;
        }
    }

    /// Returns the (drained) item buffer to the framer, so its capacity is reused.
    fn give_back_sse(&mut self, items: Vec<Item<SseItem>>) {
        if let Framer::Sse(_, slot) = &mut self.framer {
            *slot = items;
        }
    }

    fn json_items(
        &mut self,
        items: &mut Vec<Item<Frame>>,
        now: Timestamp,
        out: &mut VecDeque<SourceItem>,
    ) {
        for item in items.drain(..) {
            match item {
                Item::KeepAlive => out.push_back(SourceItem::KeepAlive),
                Item::Error(e) => out.push_back(SourceItem::Malformed {
                    error: format!("flowdock JSON stream: {e}"),
                }),
                Item::Frame(frame) => match serde_json::from_slice::<Value>(&frame.bytes) {
                    Ok(raw) => {
                        self.message(raw, now, out, || format!("at byte offset {}", frame.offset))
                    }
                    Err(e) => out.push_back(SourceItem::Malformed {
                        error: format!(
                            "flowdock JSON stream: frame is not JSON ({e}) (at byte offset {})",
                            frame.offset
                        ),
                    }),
                },
            }
        }
    }

    fn sse_items(
        &mut self,
        items: &mut Vec<Item<SseItem>>,
        base: u64,
        now: Timestamp,
        out: &mut VecDeque<SourceItem>,
    ) {
        for item in items.drain(..) {
            match item {
                Item::KeepAlive | Item::Frame(SseItem::Comment(_)) => {
                    out.push_back(SourceItem::KeepAlive)
                }
                Item::Error(e) => out.push_back(SourceItem::Malformed {
                    error: format!("flowdock event stream: {e}"),
                }),
                Item::Frame(SseItem::Retry(ms)) => {
                    out.push_back(SourceItem::RetryHint(Duration::from_millis(ms)))
                }
                Item::Frame(SseItem::Event(ev)) => {
                    let id_changed = !ev.id.is_empty()
                        && self.cursor.last_event_id.as_deref() != Some(ev.id.as_str());
                    if !ev.id.is_empty() {
                        self.cursor.last_event_id = Some(ev.id.to_string());
                    }
                    let before = out.len();
                    match serde_json::from_str::<Value>(&ev.data) {
                        Ok(raw) => self.message(raw, now, out, || {
                            format!("event id {:?}, in the chunk at byte offset {base}", ev.id)
                        }),
                        Err(e) => out.push_back(SourceItem::Malformed {
                            error: format!(
                                "flowdock event stream: event data is not JSON ({e}) (event id {:?}, in the chunk at byte offset {base})",
                                ev.id
                            ),
                        }),
                    }
                    // The id advanced but no event carried the cursor: report it alone.
                    let carried = out.iter().skip(before).any(|i| {
                        matches!(
                            i,
                            SourceItem::Event {
                                cursor: Some(_),
                                ..
                            }
                        )
                    });
                    if id_changed && !carried {
                        out.push_back(SourceItem::Cursor(self.cursor.to_cursor()));
                    }
                }
            }
        }
    }

    /// Handles one parsed wire object (also used for REST backfill).
    fn message(
        &mut self,
        raw: Value,
        now: Timestamp,
        out: &mut VecDeque<SourceItem>,
        where_: impl FnOnce() -> String,
    ) {
        if !raw.is_object() {
            out.push_back(SourceItem::Malformed {
                error: format!(
                    "flowdock {}: message is not a JSON object ({})",
                    self.transport_name(),
                    where_()
                ),
            });
            return;
        }
        let msg: WireMessage = match serde_json::from_value(raw.clone()) {
            Ok(m) => m,
            Err(e) => {
                out.push_back(SourceItem::Malformed {
                    error: format!(
                        "flowdock {}: message has an unexpected shape ({e}) ({})",
                        self.transport_name(),
                        where_()
                    ),
                });
                return;
            }
        };
        self.deliver(msg, raw, now, out);
    }

    /// Maps and queues one message, advancing the cursor; drops a message already delivered
    /// (by id, per flow) when replays overlap.
    ///
    /// The position is kept under the configured flow the message belongs to (its `flow`
    /// field, an alias of it, or the stream's only flow), the same key the REST backfill
    /// resumes from: so the cursor attached to each event names the last delivered id of its
    /// flow, whichever form the server used.
    pub fn deliver(
        &mut self,
        mut msg: WireMessage,
        raw: Value,
        now: Timestamp,
        out: &mut VecDeque<SourceItem>,
    ) {
        if let Some(flow) = self.flow_of(&msg) {
            if msg.flow.as_deref() != Some(flow.as_str()) {
                msg.flow = Some(flow);
            }
        }
        let room = room_of(&msg);
        if let (Some(id), true) = (msg.id_u64(), msg.flow.is_some()) {
            let fresh = self.cursor.advance(&room, id);
            if !fresh && self.skip_delivered {
                tracing::debug!(room, id, "flowdock: dropping a message already delivered");
                return;
            }
        }
        let event = to_event(&self.source, &msg, raw, now);
        out.push_back(SourceItem::Event {
            event,
            cursor: Some(self.cursor.to_cursor()),
        });
    }

    fn transport_name(&self) -> &'static str {
        match self.transport {
            Transport::Json => "JSON stream",
            Transport::EventStream => "event stream",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Kind;

    fn now() -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn events(out: &VecDeque<SourceItem>) -> Vec<chat_model::Event> {
        out.iter()
            .filter_map(|i| match i {
                SourceItem::Event { event, .. } => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    const M1: &str =
        r#"{"id":1,"event":"message","flow":"o:f","content":"héllo ü 日本","user":"2","sent":1}"#;
    const M2: &str =
        r#"{"id":2,"event":"message","flow":"o:f","content":"two","user":"2","sent":2}"#;

    #[test]
    fn json_stream_cr_and_crlf_and_keepalives() {
        let mut d = StreamDecoder::new("s", Transport::Json, FlowdockCursor::default(), 1 << 20);
        let mut out = VecDeque::new();
        let input = format!("{M1}\r\n\n{M2}\r");
        d.feed(input.as_bytes(), now(), &mut out);
        let ev = events(&out);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].text, "héllo ü 日本");
        assert!(out.iter().any(|i| matches!(i, SourceItem::KeepAlive)));
        assert_eq!(d.cursor().last_message_id["o/f"], 2);
    }

    #[test]
    fn json_stream_frames_on_cr_only_pretty_printed_is_one_message() {
        let pretty = |id: u64, text: &str| {
            serde_json::to_string_pretty(&serde_json::json!({
                "id": id, "event": "message", "flow": "o:f", "content": text, "user": "2"
            }))
            .unwrap()
        };
        let (a, b) = (pretty(1, "first\nline two"), pretty(2, "second"));
        assert!(a.contains('\n'), "raw newlines between members: {a}");
        for (sep, ka) in [("\r", false), ("\r\n", true), ("\r \t\n\n", true)] {
            let mut d =
                StreamDecoder::new("s", Transport::Json, FlowdockCursor::default(), 1 << 20);
            let mut out = VecDeque::new();
            let input = format!("\n{a}{sep}{b}{sep}");
            d.feed(input.as_bytes(), now(), &mut out);
            assert!(
                !out.iter()
                    .any(|i| matches!(i, SourceItem::Malformed { .. })),
                "{sep:?}: {out:?}"
            );
            let ev = events(&out);
            assert_eq!(ev.len(), 2, "{sep:?}: {out:?}");
            assert_eq!(ev[0].text, "first\nline two");
            assert_eq!(ev[1].text, "second");
            let kas = out
                .iter()
                .filter(|i| matches!(i, SourceItem::KeepAlive))
                .count();
            // The leading `\n`, plus one per separator that has whitespace after its `\r`.
            assert_eq!(kas, if ka { 3 } else { 1 }, "{sep:?}: {out:?}");
        }
    }

    #[test]
    fn utf8_split_across_chunks() {
        let mut d = StreamDecoder::new("s", Transport::Json, FlowdockCursor::default(), 1 << 20);
        let mut out = VecDeque::new();
        let input = format!("{M1}\r");
        for b in input.as_bytes() {
            d.feed(std::slice::from_ref(b), now(), &mut out);
        }
        assert_eq!(events(&out)[0].text, "héllo ü 日本");
    }

    #[test]
    fn malformed_frame_is_reported_with_offset_and_skipped() {
        let mut d = StreamDecoder::new("s", Transport::Json, FlowdockCursor::default(), 1 << 20);
        let mut out = VecDeque::new();
        let input = format!("{{not json\r{M2}\r");
        d.feed(input.as_bytes(), now(), &mut out);
        let SourceItem::Malformed { error } = &out[0] else {
            panic!("{out:?}")
        };
        assert!(error.contains("offset 0"), "{error}");
        assert_eq!(events(&out).len(), 1);
    }

    #[test]
    fn oversize_frame_is_refused() {
        let mut d = StreamDecoder::new("s", Transport::Json, FlowdockCursor::default(), 100);
        let mut out = VecDeque::new();
        let big = format!(r#"{{"event":"message","content":"{}"}}"#, "x".repeat(200));
        d.feed(format!("{big}\r{M2}\r").as_bytes(), now(), &mut out);
        assert!(matches!(&out[0], SourceItem::Malformed { error } if error.contains("limit")));
        assert_eq!(events(&out).len(), 1);
        assert!(d.buffered_len() <= 100);
    }

    #[test]
    fn json_transport_skips_already_delivered() {
        let mut cursor = FlowdockCursor::default();
        cursor.advance("o/f", 1);
        let mut d = StreamDecoder::new("s", Transport::Json, cursor, 1 << 20);
        let mut out = VecDeque::new();
        d.feed(format!("{M1}\r{M2}\r").as_bytes(), now(), &mut out);
        let ev = events(&out);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].id, "flowdock:o/f:2");
    }

    #[test]
    fn sse_events_ids_retry_comments() {
        let mut d = StreamDecoder::new(
            "s",
            Transport::EventStream,
            FlowdockCursor::default(),
            1 << 20,
        );
        let mut out = VecDeque::new();
        let input =
            format!("retry: 3000\n\n: ping\n\nid: 41\ndata: {M1}\n\nid: 42\ndata: {M2}\n\n");
        d.feed(input.as_bytes(), now(), &mut out);
        assert!(matches!(out[0], SourceItem::RetryHint(d) if d == Duration::from_secs(3)));
        assert!(matches!(out[1], SourceItem::KeepAlive));
        let ev = events(&out);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].kind, Kind::Message);
        assert_eq!(d.cursor().last_event_id.as_deref(), Some("42"));
        let SourceItem::Event {
            cursor: Some(c), ..
        } = out.back().unwrap()
        else {
            panic!()
        };
        let c = FlowdockCursor::from_cursor(c).unwrap();
        assert_eq!(c.last_event_id.as_deref(), Some("42"));
    }

    #[test]
    fn sse_bad_data_is_malformed_but_id_advances() {
        let mut d = StreamDecoder::new(
            "s",
            Transport::EventStream,
            FlowdockCursor::default(),
            1 << 20,
        );
        let mut out = VecDeque::new();
        d.feed(b"id: 7\ndata: {oops\n\n", now(), &mut out);
        assert!(matches!(&out[0], SourceItem::Malformed { error } if error.contains("\"7\"")));
        assert!(matches!(&out[1], SourceItem::Cursor(_)));
    }

    #[test]
    fn cursor_round_trips() {
        let mut c = FlowdockCursor {
            last_event_id: Some("9".into()),
            ..Default::default()
        };
        c.advance("a/b", 5);
        let back = FlowdockCursor::from_cursor(&c.to_cursor()).unwrap();
        assert_eq!(back, c);
        assert!(!c.advance("a/b", 5));
    }
}
