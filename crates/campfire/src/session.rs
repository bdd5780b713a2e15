//! The sans-IO core of one streaming connection: bytes and backfilled messages in,
//! [`SourceItem`]s out, with the resume cursor and duplicate suppression.

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
            decoder: JsonLinesDecoder::new(Delimiter::Any, limits),
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
        let parsed = serde_json::from_slice::<Value>(&frame.bytes)
            .map_err(|e| e.to_string())
            .and_then(|raw| match raw {
                Value::Object(_) => Message::deserialize(&raw)
                    .map(|m| (m, raw))
                    .map_err(|e| e.to_string()),
                other => Err(format!(
                    "expected a message object, got {}",
                    kind_name(&other)
                )),
            });
        match parsed {
            Ok((message, raw)) => {
                if self.resume.is_some_and(|r| message.id <= r)
                    || self.backfilled.contains(&message.id)
                {
                    tracing::debug!(room = self.room, id = message.id, "already delivered");
                    return;
                }
                self.deliver(message, raw, out);
            }
            Err(e) => out.push(SourceItem::Malformed {
                error: format!(
                    "Campfire room {}: malformed message skipped (at byte offset {}): {e}",
                    self.room, frame.offset
                ),
            }),
        }
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
        assert_eq!(
            out.iter()
                .filter(|i| matches!(i, SourceItem::KeepAlive))
                .count(),
            2
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
            ) {
                let sep = if crlf { "\r\n" } else { "\r" };
                let mut stream = String::from(" ");
                for i in 1..=n {
                    stream.push_str(&line(i as u64, "TextMessage", "héllo ☃"));
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
            }
        }
    }
}
