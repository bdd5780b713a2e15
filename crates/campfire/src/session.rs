//! The sans-IO core of one streaming connection: bytes and backfilled messages in,
//! [`SourceItem`]s out, with the resume cursor and duplicate suppression.
//!
//! Framing follows NOTES.md: one JSON object per frame, frames separated by `\r` only. A
//! `\n` is never a boundary: an object laid out over several lines (as the document's own
//! example response is) or a body with a raw line feed stays one frame, a `\r\n` ending is a
//! boundary followed by whitespace, and whitespace between frames (Campfire's single space
//! every ~3 s) is a keep-alive.

use std::collections::HashSet;

use chat_model::{Cursor, SourceItem};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stream_frame::{Chunk, Delimiter, Frame, Item, JsonLinesDecoder, Limits};

use crate::map::to_event;
use crate::wire::Message;

/// Campfire's resume position: the id of the last message delivered.
///
/// Stored in a [`chat_model::Cursor`] with [`CampfireCursor::to_cursor`]; on reconnect the
/// client backfills every message with a larger id from `recent.json?since_message_id=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampfireCursor {
    /// The id of the last message delivered.
    pub last_message_id: u64,
}

impl CampfireCursor {
    /// Wraps this position in the opaque cursor the supervisor stores.
    pub fn to_cursor(self) -> Cursor {
        Cursor::from_typed(&self)
    }

    /// Reads a position back from a stored cursor.
    pub fn from_cursor(cursor: &Cursor) -> Result<Self, chat_model::CursorError> {
        cursor.to_typed()
    }
}

/// One connection's decoding state: frames the live stream, parses and maps messages, keeps
/// the cursor, and drops messages already delivered (at or below the resume cursor, or already
/// delivered by the backfill).
#[derive(Debug)]
pub struct Session {
    source: String,
    room: u64,
    keep_raw: bool,
    decoder: JsonLinesDecoder,
    frames: Vec<Item<Frame>>,
    resume: Option<u64>,
    last: Option<u64>,
    backfilled: HashSet<u64>,
}

impl Session {
    /// A session for `room`, resuming after `resume` when given; events are attributed to
    /// `source`; `keep_raw` keeps the wire object in each event.
    pub fn new(
        source: impl Into<String>,
        room: u64,
        resume: Option<CampfireCursor>,
        limits: Limits,
        keep_raw: bool,
    ) -> Self {
        let resume = resume.map(|c| c.last_message_id);
        Session {
            source: source.into(),
            room,
            keep_raw,
            // `\r` only: a `\n` may occur inside a frame (see the module docs).
            decoder: JsonLinesDecoder::new(Delimiter::Cr, limits),
            frames: Vec::new(),
            resume,
            last: resume,
            backfilled: HashSet::new(),
        }
    }

    /// The position after the last message delivered (or the resume position).
    pub fn cursor(&self) -> Option<CampfireCursor> {
        self.last
            .map(|last_message_id| CampfireCursor { last_message_id })
    }

    /// The resume position this session started from.
    pub fn resumed_from(&self) -> Option<CampfireCursor> {
        self.resume
            .map(|last_message_id| CampfireCursor { last_message_id })
    }

    /// Takes the server's `position` in place of the resume position, when the server's ids
    /// went backwards (a reset server): no message is dropped as already delivered any more,
    /// and cursors continue from `position`. Call before feeding the live stream.
    pub fn take_position(&mut self, position: CampfireCursor) {
        self.resume = None;
        self.last = Some(position.last_message_id);
    }

    /// Delivers the messages of a `recent.json` answer: those after the resume position, in id
    /// order; unreadable ones are reported as malformed. Call before feeding the live stream.
    pub fn backfill(&mut self, messages: Vec<Value>, out: &mut Vec<SourceItem>) {
        let mut parsed = Vec::with_capacity(messages.len());
        for (index, raw) in messages.into_iter().enumerate() {
            match Message::deserialize(&raw) {
                Ok(m) => parsed.push((m, raw)),
                Err(e) => out.push(SourceItem::Malformed {
                    error: format!(
                        "Campfire room {}: backfilled message #{index} from recent.json skipped: {e}",
                        self.room
                    ),
                }),
            }
        }
        parsed.sort_by_key(|(m, _)| m.id);
        for (message, raw) in parsed {
            if self.resume.is_some_and(|r| message.id <= r) || !self.backfilled.insert(message.id) {
                continue;
            }
            self.deliver(message, raw, out);
        }
    }

    /// Decodes the next chunk of the live stream: a `&Bytes` as the HTTP client delivers it
    /// (frames are then slices of it, without copying) or any `&[u8]`.
    ///
    /// Any bytes are proof of life. The decoder reports every chunk of keep-alive whitespace
    /// (each of Campfire's single spaces, seconds apart, is one [`SourceItem::KeepAlive`]);
    /// a chunk that only continues a frame (part of a long message) completes nothing, so it
    /// yields one here, and a watchdog never mistakes a quiet room or a slow long frame for a
    /// dead stream.
    pub fn feed<'a>(&mut self, chunk: impl Into<Chunk<'a>>, out: &mut Vec<SourceItem>) {
        let chunk = chunk.into();
        let before = out.len();
        self.decoder.feed(chunk, &mut self.frames);
        self.drain(out);
        let alive = out[before..]
            .iter()
            .any(|i| matches!(i, SourceItem::KeepAlive | SourceItem::Event { .. }));
        if !chunk.as_slice().is_empty() && !alive {
            out.push(SourceItem::KeepAlive);
        }
    }

    /// Ends the live stream cleanly: a last unterminated frame is still decoded.
    pub fn finish(&mut self, out: &mut Vec<SourceItem>) {
        self.decoder.finish(&mut self.frames);
        self.drain(out);
    }

    fn drain(&mut self, out: &mut Vec<SourceItem>) {
        let mut frames = std::mem::take(&mut self.frames);
        for item in frames.drain(..) {
            match item {
                Item::KeepAlive => out.push(SourceItem::KeepAlive),
                Item::Error(e) => out.push(SourceItem::Malformed {
                    error: format!("Campfire room {}: {e}", self.room),
                }),
                Item::Frame(frame) => self.frame(frame, out),
            }
        }
        self.frames = frames;
    }

    fn frame(&mut self, frame: Frame, out: &mut Vec<SourceItem>) {
        let values = match parse_lenient(&frame.bytes) {
            Ok(values) => values,
            Err(e) => return self.malformed(frame.offset, &e.to_string(), out),
        };
        for raw in values {
            let parsed = match raw {
                Value::Object(_) => Message::deserialize(&raw)
                    .map(|m| (m, raw))
                    .map_err(|e| e.to_string()),
                other => Err(format!(
                    "expected a message object, got {}",
                    kind_name(&other)
                )),
            };
            match parsed {
                Ok((message, raw)) => {
                    if self.resume.is_some_and(|r| message.id <= r)
                        || self.backfilled.contains(&message.id)
                    {
                        tracing::debug!(room = self.room, id = message.id, "already delivered");
                        continue;
                    }
                    self.deliver(message, raw, out);
                }
                Err(e) => self.malformed(frame.offset, &e, out),
            }
        }
    }

    fn malformed(&self, offset: u64, error: &str, out: &mut Vec<SourceItem>) {
        out.push(SourceItem::Malformed {
            error: format!(
                "Campfire room {}: malformed message skipped (at byte offset {offset}): {error}",
                self.room
            ),
        });
    }

    fn deliver(&mut self, message: Message, raw: Value, out: &mut Vec<SourceItem>) {
        let id = message.id;
        let last = self.last.map_or(id, |l| l.max(id));
        self.last = Some(last);
        let event = to_event(
            &self.source,
            self.room,
            &message,
            self.keep_raw.then_some(raw),
        );
        out.push(SourceItem::Event {
            event,
            cursor: Some(
                CampfireCursor {
                    last_message_id: last,
                }
                .to_cursor(),
            ),
        });
    }
}

/// Parses one frame into the JSON values it holds: normally exactly one. Accepted as well,
/// so that no message is lost to a server's layout:
/// * a string holding raw control characters (a body with a raw line feed or tab, which
///   strict JSON forbids): read with those characters escaped;
/// * several objects in one frame, separated only by whitespace such as `\n` (the
///   document's example response is laid out that way): each is a value.
///
/// When neither reading works the error is the strict parser's.
fn parse_lenient(bytes: &[u8]) -> Result<Vec<Value>, serde_json::Error> {
    let strict = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => return Ok(vec![v]),
        Err(e) => e,
    };
    let escaped = escape_raw_controls(bytes);
    let text = escaped.as_deref().unwrap_or(bytes);
    let values: Result<Vec<Value>, _> = serde_json::Deserializer::from_slice(text)
        .into_iter::<Value>()
        .collect();
    match values {
        Ok(values) if !values.is_empty() => Ok(values),
        _ => Err(strict),
    }
}

/// `bytes` with every raw control character inside a JSON string escaped (`\n`, `\r`, `\t`
/// or `\u00XX`); `None` when there is none.
fn escape_raw_controls(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let (mut in_string, mut escaped) = (false, false);
    for (i, &b) in bytes.iter().enumerate() {
        let raw_control = in_string && !escaped && b < 0x20;
        if raw_control {
            let o = out.get_or_insert_with(|| bytes[..i].to_vec());
            match b {
                b'\n' => o.extend_from_slice(b"\\n"),
                b'\r' => o.extend_from_slice(b"\\r"),
                b'\t' => o.extend_from_slice(b"\\t"),
                _ => o.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            }
        } else if let Some(o) = out.as_mut() {
            o.push(b);
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        }
    }
    out
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Kind;
    use serde_json::json;

    fn line(id: u64, kind: &str, body: &str) -> String {
        json!({"room_id":1,"created_at":"2009-12-01 23:44:40","body":body,"id":id,
               "user_id":1,"type":kind,"starred":"false"})
        .to_string()
    }

    fn session(resume: Option<u64>) -> Session {
        Session::new(
            "ops",
            1,
            resume.map(|last_message_id| CampfireCursor { last_message_id }),
            Limits::default(),
            true,
        )
    }

    fn ids(items: &[SourceItem]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                SourceItem::Event { event, .. } => event.native_id.as_ref()?.parse().ok(),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn frames_keepalives_and_cursor() {
        let mut s = session(None);
        let mut out = Vec::new();
        let stream = format!(
            " {}\r {}\r\n{}\r",
            line(1, "TextMessage", "a"),
            line(2, "EnterMessage", ""),
            line(3, "TimestampMessage", "")
        );
        s.feed(stream.as_bytes(), &mut out);
        assert_eq!(ids(&out), vec![1, 2, 3]);
        // Two spaces and the `\n` of the `\r\n` ending: whitespace between frames.
        assert_eq!(
            out.iter()
                .filter(|i| matches!(i, SourceItem::KeepAlive))
                .count(),
            3
        );
        match &out.last().unwrap() {
            SourceItem::Event { event, cursor } => {
                assert_eq!(event.kind, Kind::System);
                let c = CampfireCursor::from_cursor(cursor.as_ref().unwrap()).unwrap();
                assert_eq!(c.last_message_id, 3);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.cursor().unwrap().last_message_id, 3);
    }

    fn texts(items: &[SourceItem]) -> Vec<String> {
        items
            .iter()
            .filter_map(|i| match i {
                SourceItem::Event { event, .. } => Some(event.text.clone()),
                _ => None,
            })
            .collect()
    }

    fn malformed(items: &[SourceItem]) -> Vec<String> {
        items
            .iter()
            .filter_map(|i| match i {
                SourceItem::Malformed { error } => Some(error.clone()),
                _ => None,
            })
            .collect()
    }

    /// The document's example response, laid out as the document prints it: each object over
    /// two lines.
    const DOC_FIRST: &str = "{\"room_id\":1,\"created_at\":\"2009-12-01 23:44:40\",\"body\":\"hello\",\"id\":1,\n \"user_id\":1,\"type\":\"TextMessage\",\"starred\":\"true\"}";
    const DOC_SECOND: &str = "{\"room_id\":1,\"created_at\":\"2009-12-01 23:40:00\",\"body\":null,\"id\":2,\n \"user_id\":null,\"type\":\"TimestampMessage\",\"starred\":\"false\"}";

    #[test]
    fn multi_line_objects_are_one_frame_each() {
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<Value>(&line(3, "PasteMessage", "a\nb")).unwrap(),
        )
        .unwrap();
        assert!(pretty.matches('\n').count() > 5, "{pretty}");
        for sep in ["\r", "\r\n"] {
            let stream = format!("{DOC_FIRST}{sep} {DOC_SECOND}{sep} {pretty}{sep}");
            // In one chunk and byte by byte: a `\n` never ends a frame.
            for one_byte in [false, true] {
                let mut s = session(None);
                let mut out = Vec::new();
                if one_byte {
                    for b in stream.as_bytes() {
                        s.feed(std::slice::from_ref(b), &mut out);
                    }
                } else {
                    s.feed(stream.as_bytes(), &mut out);
                }
                assert_eq!(malformed(&out), Vec::<String>::new());
                assert_eq!(ids(&out), vec![1, 2, 3], "{sep:?} {one_byte}");
                assert_eq!(texts(&out), vec!["hello", "", "a\nb"]);
            }
        }
    }

    #[test]
    fn a_raw_line_feed_or_tab_in_a_body_is_kept() {
        let mut s = session(None);
        let mut out = Vec::new();
        let raw = line(7, "PasteMessage", "line one\nline two\tend")
            .replace("\\n", "\n")
            .replace("\\t", "\t");
        assert!(raw.contains('\n') && raw.contains('\t'), "{raw}");
        s.feed(
            format!("{raw}\r {}\r", line(8, "TextMessage", "next")).as_bytes(),
            &mut out,
        );
        assert_eq!(malformed(&out), Vec::<String>::new());
        assert_eq!(ids(&out), vec![7, 8]);
        assert_eq!(texts(&out), vec!["line one\nline two\tend", "next"]);
    }

    #[test]
    fn objects_separated_only_by_line_feeds_are_each_delivered() {
        let mut s = session(None);
        let mut out = Vec::new();
        s.feed(format!("{DOC_FIRST}\n{DOC_SECOND}\r").as_bytes(), &mut out);
        assert_eq!(malformed(&out), Vec::<String>::new());
        assert_eq!(ids(&out), vec![1, 2]);
        // A broken object among them is still reported, with the frame's offset.
        let mut s = session(None);
        let mut out = Vec::new();
        s.feed(format!(" {DOC_FIRST}\n{{\"id\":\r").as_bytes(), &mut out);
        assert_eq!(ids(&out), Vec::<u64>::new());
        let errors = malformed(&out);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("offset 1"), "{errors:?}");
    }

    #[test]
    fn take_position_forgets_the_resume_position() {
        let mut s = session(Some(1_000_000));
        let mut out = Vec::new();
        s.take_position(CampfireCursor {
            last_message_id: 40,
        });
        assert_eq!(s.cursor().unwrap().last_message_id, 40);
        s.feed(
            format!(
                "{}\r{}\r",
                line(39, "TextMessage", "a"),
                line(41, "TextMessage", "b")
            )
            .as_bytes(),
            &mut out,
        );
        assert_eq!(ids(&out), vec![39, 41]);
        assert_eq!(s.cursor().unwrap().last_message_id, 41);
        let cursors: Vec<u64> = out
            .iter()
            .filter_map(|i| match i {
                SourceItem::Event { cursor, .. } => Some(
                    CampfireCursor::from_cursor(cursor.as_ref()?)
                        .ok()?
                        .last_message_id,
                ),
                _ => None,
            })
            .collect();
        assert_eq!(cursors, vec![40, 41]);
    }

    #[test]
    fn every_keepalive_space_is_seen() {
        let mut s = session(None);
        let mut out = Vec::new();
        for _ in 0..4 {
            s.feed(b" ", &mut out);
        }
        assert_eq!(out, vec![SourceItem::KeepAlive; 4]);
        // Part of a long frame is proof of life too; the frame itself is one event.
        let mut out = Vec::new();
        let l = line(1, "TextMessage", "a");
        let (x, y) = l.as_bytes().split_at(10);
        s.feed(x, &mut out);
        assert_eq!(out, vec![SourceItem::KeepAlive]);
        s.feed(y, &mut out);
        s.feed(b"\r", &mut out);
        assert_eq!(ids(&out), vec![1]);
    }

    #[test]
    fn malformed_frame_is_reported_with_offset_and_skipped() {
        let mut s = session(None);
        let mut out = Vec::new();
        let good = line(1, "TextMessage", "a");
        let stream = format!("{good}\r{{\"id\":\r[1]\r{}\r", line(2, "TextMessage", "b"));
        s.feed(stream.as_bytes(), &mut out);
        assert_eq!(ids(&out), vec![1, 2]);
        let errors: Vec<_> = out
            .iter()
            .filter_map(|i| match i {
                SourceItem::Malformed { error } => Some(error.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(errors.len(), 2);
        let offset = good.len() + 1;
        assert!(
            errors[0].contains(&format!("offset {offset}")),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains("room 1"));
        assert!(errors[1].contains("an array"), "{}", errors[1]);
    }

    #[test]
    fn backfill_first_then_live_without_repeats() {
        let mut s = session(Some(10));
        let mut out = Vec::new();
        let backfill = vec![
            serde_json::from_str(&line(13, "TextMessage", "c")).unwrap(),
            serde_json::from_str(&line(9, "TextMessage", "old")).unwrap(),
            serde_json::from_str(&line(11, "TextMessage", "a")).unwrap(),
            json!({"id": "x"}),
            serde_json::from_str(&line(12, "TextMessage", "b")).unwrap(),
        ];
        s.backfill(backfill, &mut out);
        let live = format!(
            "{}\r{}\r{}\r",
            line(10, "TextMessage", "old"),
            line(13, "TextMessage", "c"),
            line(14, "TextMessage", "d")
        );
        s.feed(live.as_bytes(), &mut out);
        assert_eq!(ids(&out), vec![11, 12, 13, 14]);
        assert!(
            out.iter()
                .any(|i| matches!(i, SourceItem::Malformed { error } if error.contains("#3")))
        );
        assert_eq!(s.cursor().unwrap().last_message_id, 14);
        assert_eq!(s.resumed_from().unwrap().last_message_id, 10);
    }

    #[test]
    fn oversize_frame_refused() {
        let mut s = Session::new("ops", 1, None, Limits::with_max_frame(64), false);
        let mut out = Vec::new();
        let big = format!("{{\"body\":\"{}\"}}\r", "x".repeat(200));
        s.feed(big.as_bytes(), &mut out);
        s.feed(
            format!("{}\r", line(1, "TextMessage", "a")).as_bytes(),
            &mut out,
        );
        assert!(matches!(&out[0], SourceItem::Malformed { error } if error.contains("limit")));
        // the second message is itself larger than 64 bytes: also refused.
        assert_eq!(ids(&out), Vec::<u64>::new());
        let mut s = Session::new("ops", 1, None, Limits::with_max_frame(4096), false);
        let mut out = Vec::new();
        s.feed(big.as_bytes(), &mut out);
        s.feed(
            format!("{}\r", line(1, "TextMessage", "a")).as_bytes(),
            &mut out,
        );
        assert_eq!(ids(&out), vec![1]);
        let event = out.iter().find_map(|i| match i {
            SourceItem::Event { event, .. } => Some(event),
            _ => None,
        });
        assert!(event.unwrap().raw.is_none());
    }

    #[test]
    fn finish_decodes_last_unterminated_frame() {
        let mut s = session(None);
        let mut out = Vec::new();
        s.feed(line(5, "TextMessage", "a").as_bytes(), &mut out);
        assert!(ids(&out).is_empty());
        s.finish(&mut out);
        assert_eq!(ids(&out), vec![5]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic_and_every_item_is_accounted_for(
                chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
            ) {
                let mut s = session(None);
                let mut out = Vec::new();
                for c in &chunks {
                    s.feed(c, &mut out);
                }
                s.finish(&mut out);
                // Every event that came out has a cursor no smaller than its own id.
                for item in &out {
                    if let SourceItem::Event { event, cursor } = item {
                        let id: u64 = event.native_id.as_ref().unwrap().parse().unwrap();
                        let c = CampfireCursor::from_cursor(cursor.as_ref().unwrap()).unwrap();
                        prop_assert!(c.last_message_id >= id);
                    }
                }
            }

            #[test]
            fn arbitrary_message_objects_decode_or_are_reported(
                id in proptest::option::of(0u64..u64::MAX),
                kind in "[A-Za-z]{0,20}",
                body in proptest::option::of(".{0,30}"),
                user in proptest::option::of(0u64..1000),
                starred in prop_oneof![Just(json!("true")), Just(json!("false")), Just(json!(true)), Just(json!(null)), Just(json!("x"))],
            ) {
                let raw = json!({"id": id, "type": kind, "body": body, "user_id": user,
                                 "created_at": "2009-12-01 23:44:40", "starred": starred});
                let mut s = session(None);
                let mut out = Vec::new();
                s.feed(format!("{raw}\r").as_bytes(), &mut out);
                let events = ids(&out);
                let malformed = out.iter().filter(|i| matches!(i, SourceItem::Malformed { .. })).count();
                prop_assert_eq!(events.len() + malformed, 1);
                if let Some(id) = id {
                    if starred != json!("x") {
                        prop_assert_eq!(events, vec![id]);
                    }
                }
            }

            #[test]
            fn chunking_never_changes_the_events(
                n in 1usize..12,
                cuts in proptest::collection::vec(0usize..4000, 0..20),
                crlf in any::<bool>(),
                layout in 0u8..3,
            ) {
                let sep = if crlf { "\r\n" } else { "\r" };
                let mut stream = String::from(" ");
                for i in 1..=n {
                    let l = line(i as u64, "TextMessage", "héllo ☃\nzwei");
                    let l = match layout {
                        // Compact, as most servers send it.
                        0 => l,
                        // Pretty-printed: raw line feeds between members.
                        1 => serde_json::to_string_pretty(&serde_json::from_str::<Value>(&l).unwrap()).unwrap(),
                        // A raw line feed inside the body.
                        _ => l.replace("\\n", "\n"),
                    };
                    stream.push_str(&l);
                    stream.push_str(sep);
                    stream.push(' ');
                }
                let bytes = stream.as_bytes();
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
                cuts.sort_unstable();
                let mut s = session(None);
                let mut out = Vec::new();
                let mut prev = 0;
                for c in cuts.into_iter().chain([bytes.len()]) {
                    s.feed(&bytes[prev..c], &mut out);
                    prev = c;
                }
                prop_assert_eq!(ids(&out), (1..=n as u64).collect::<Vec<_>>());
                let malformed = out.iter().any(|i| matches!(i, SourceItem::Malformed { .. }));
                prop_assert!(!malformed);
                prop_assert!(texts(&out).iter().all(|t| t == "héllo ☃\nzwei"));
            }
        }
    }
}
