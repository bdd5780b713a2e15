//! Mapping wire messages to chat-model [`Event`]s, and the stable ids they get.
//!
//! Multistreamer gives chat messages no id of their own. A chat event's id is derived from what
//! identifies the message — `(stream, type, account_id, from.id, to, timestamp, text)` — hashed
//! with 64-bit FNV-1a into `multistreamer:{stream}:{16 hex digits}`. The same message therefore
//! always gets the same id, and the echo of a message this client sent is recognisable. When the
//! server sent no `timestamp` (older servers, the document's own examples) the receive time in
//! milliseconds takes its place, so a user repeating the same line is not mistaken for a
//! duplicate. Status, viewer-count and other notices get ids from their content and receive
//! time, as they are not messages anyone could see twice.

use std::borrow::Cow;

use chat_model::{Author, Event, Kind, Service, Timestamp};
use serde_json::{Value, json};

use crate::wire::{ChatFrame, ChatMessage, ServerMessage, Status, ViewCountResult, WriterResult};

/// 64-bit FNV-1a of `bytes`: small, stable across Rust versions and platforms.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The stable event id of a chat message (`emote` tells the two types apart).
///
/// `received_ms` is used only when the message carries no `timestamp`.
pub fn chat_id(stream: u64, emote: bool, m: &ChatMessage, received_ms: i64) -> String {
    frame_id(
        stream,
        &stream.to_string(),
        &ChatFrame::of(emote, m),
        received_ms,
    )
}

/// Feeds what is written to it through [`fnv1a64`].
struct Fnv(u64);

impl std::io::Write for Fnv {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`chat_id`] of a borrowed frame: the hash of the compact JSON array
/// `[stream, type, account_id, from.id, from.name, [to.id, to.name] | null, time, text]`,
/// streamed into the hash without building it. `room` is `stream` in decimal.
fn frame_id(stream: u64, room: &str, m: &ChatFrame<'_>, received_ms: i64) -> String {
    let to = m.to.as_ref().map(|t| (t.id.as_deref(), t.name.as_deref()));
    let key = (
        stream,
        if m.emote { "emote" } else { "text" },
        m.account_id,
        m.from.id.as_deref(),
        m.from.name.as_deref(),
        to,
        m.timestamp.unwrap_or(received_ms),
        &*m.text,
    );
    let mut h = Fnv(fnv1a64(b""));
    // Plain data with string keys: serializing into the hasher cannot fail.
    let _ = serde_json::to_writer(&mut h, &key);
    const PREFIX: &str = "multistreamer:";
    let mut id = String::with_capacity(PREFIX.len() + room.len() + 17);
    id.push_str(PREFIX);
    id.push_str(room);
    id.push(':');
    for shift in (0..16).rev() {
        let digit = (h.0 >> (shift * 4)) & 0xf;
        id.push(char::from(b"0123456789abcdef"[digit as usize]));
    }
    id
}

fn ms_to_time(ms: i64) -> Option<Timestamp> {
    chrono::DateTime::from_timestamp_millis(ms)
}

/// Maps a `text` or `emote` message to a [`Kind::Message`] or [`Kind::Emote`] event.
pub fn chat_event(
    source: &str,
    stream: u64,
    emote: bool,
    m: &ChatMessage,
    raw: Option<Value>,
    received: Timestamp,
) -> Event {
    let mut e = frame_event(source, stream, ChatFrame::of(emote, m), received);
    e.raw = raw;
    e
}

/// [`chat_event`] of a borrowed frame, taking its strings over; no `raw`.
pub(crate) fn frame_event(
    source: &str,
    stream: u64,
    m: ChatFrame<'_>,
    received: Timestamp,
) -> Event {
    let room = stream.to_string();
    let id = frame_id(stream, &room, &m, received.timestamp_millis());
    let kind = if m.emote { Kind::Emote } else { Kind::Message };
    let at = m.timestamp.and_then(ms_to_time).unwrap_or(received);
    let mut detail = serde_json::Map::new();
    detail.insert("type".into(), json!(if m.emote { "emote" } else { "text" }));
    if let Some(a) = m.account_id {
        detail.insert("account_id".into(), json!(a));
    }
    if let Some(s) = m.stream_id {
        detail.insert("stream_id".into(), json!(s));
    }
    if let Some(p) = m.from.picture {
        detail.insert("picture".into(), Value::String(p.into_owned()));
    }
    let network = m.network.map(Cow::into_owned);
    let mut author = Author::new(
        m.from.id.map(Cow::into_owned),
        m.from.name.map(Cow::into_owned),
    );
    let mut e = Event::new(source, Service::Multistreamer, kind, id, room, at);
    e.text = m.text.into_owned();
    e.markdown = m.markdown.map(Cow::into_owned);
    if let Some(to) = m.to {
        e.private = true;
        let mut recipient = Author::new(to.id.map(Cow::into_owned), to.name.map(Cow::into_owned));
        recipient.network = network.clone();
        e.to = Some(recipient);
    }
    author.network = network;
    e.author = author;
    e.detail = Some(Value::Object(detail));
    e
}

/// Maps a status snapshot to a [`Kind::Status`] event; `detail` is the snapshot.
pub fn status_event(
    source: &str,
    stream: u64,
    s: &Status,
    raw: Option<Value>,
    received: Timestamp,
) -> Event {
    let snapshot = serde_json::to_value(s).unwrap_or(Value::Null);
    let id = format!(
        "multistreamer:{stream}:status:{}:{:08x}",
        received.timestamp_millis(),
        fnv1a64(snapshot.to_string().as_bytes()) as u32
    );
    let mut e = Event::new(
        source,
        Service::Multistreamer,
        Kind::Status,
        id,
        stream.to_string(),
        received,
    )
    .with_text(s.summary())
    .with_detail(snapshot);
    e.raw = raw;
    e
}

/// Maps a `viewcountresult` to a [`Kind::Viewers`] event.
pub fn viewers_event(
    source: &str,
    stream: u64,
    v: &ViewCountResult,
    raw: Option<Value>,
    received: Timestamp,
) -> Event {
    let account = v
        .account_id
        .map(|a| a.to_string())
        .unwrap_or_else(|| "-".into());
    let id = format!(
        "multistreamer:{stream}:viewers:{account}:{}:{}",
        received.timestamp_millis(),
        v.viewer_count
    );
    let mut e = Event::new(
        source,
        Service::Multistreamer,
        Kind::Viewers,
        id,
        stream.to_string(),
        received,
    )
    .with_text(format!(
        "{} viewer{}",
        v.viewer_count,
        if v.viewer_count == 1 { "" } else { "s" }
    ))
    .with_detail(json!({
        "type": "viewcountresult",
        "account_id": v.account_id,
        "stream_id": v.stream_id,
    }));
    e.viewers = Some(v.viewer_count);
    e.raw = raw;
    e
}

/// Maps a `writerresult` to a [`Kind::System`] event (`detail.type = "writerresult"`).
pub fn writer_event(
    source: &str,
    stream: u64,
    w: &WriterResult,
    raw: Option<Value>,
    received: Timestamp,
) -> Event {
    let id = format!(
        "multistreamer:{stream}:writerresult:{}:{}:{}",
        w.account_id,
        w.cur_stream_account_id,
        received.timestamp_millis()
    );
    let mut e = Event::new(
        source,
        Service::Multistreamer,
        Kind::System,
        id,
        stream.to_string(),
        received,
    )
    .with_text(format!(
        "chat writer ready: account {} can write to account {}",
        w.account_id, w.cur_stream_account_id
    ))
    .with_detail(json!({
        "type": "writerresult",
        "account_id": w.account_id,
        "cur_stream_account_id": w.cur_stream_account_id,
    }));
    e.raw = raw;
    e
}

/// Maps a message of a type this crate does not know to a [`Kind::System`] event whose
/// `detail.type` is the wire type; `text` is the message's `text` field when it has one.
/// `wire` is the message's JSON; `raw` gets a copy of it when `keep_raw`.
pub fn unknown_event(
    source: &str,
    stream: u64,
    kind: &str,
    wire: &Value,
    keep_raw: bool,
    received: Timestamp,
) -> Event {
    let id = format!(
        "multistreamer:{stream}:{kind}:{}:{:08x}",
        received.timestamp_millis(),
        fnv1a64(wire.to_string().as_bytes()) as u32
    );
    let text = wire
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut e = Event::new(
        source,
        Service::Multistreamer,
        Kind::System,
        id,
        stream.to_string(),
        received,
    )
    .with_text(text)
    .with_detail(json!({ "type": kind }));
    e.raw = keep_raw.then(|| wire.clone());
    e
}

/// Maps any server message to its event (status messages always map; deciding whether a
/// status *changed* is [`crate::Session`]'s job). `wire` is the message's JSON; the event's
/// `raw` gets a copy of it when `keep_raw`.
pub fn to_event(
    source: &str,
    stream: u64,
    msg: &ServerMessage,
    wire: &Value,
    keep_raw: bool,
    received: Timestamp,
) -> Event {
    let raw = || keep_raw.then(|| wire.clone());
    match msg {
        ServerMessage::Status(s) => status_event(source, stream, s, raw(), received),
        ServerMessage::WriterResult(w) => writer_event(source, stream, w, raw(), received),
        ServerMessage::ViewCountResult(v) => viewers_event(source, stream, v, raw(), received),
        ServerMessage::Text(m) => chat_event(source, stream, false, m, raw(), received),
        ServerMessage::Emote(m) => chat_event(source, stream, true, m, raw(), received),
        ServerMessage::Unknown { kind } => {
            unknown_event(source, stream, kind, wire, keep_raw, received)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> Timestamp {
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
            .unwrap()
    }

    fn parse(s: &str) -> (ServerMessage, Value) {
        ServerMessage::parse(s).unwrap()
    }

    #[test]
    fn twitch_text_maps_with_author_network_and_time() {
        let (m, raw) = parse(
            r#"{"type":"text","stream_id":21,"account_id":14,"network":"twitch",
            "text":"here's a message from twitch Kappa","markdown":"here's a message from twitch ",
            "from":{"id":"146521877","name":"gamethattunedev","picture":"https://p/x.png"},
            "timestamp":1764504000123}"#,
        );
        let e = to_event("ms", 21, &m, &raw, true, now());
        assert_eq!(e.kind, Kind::Message);
        assert_eq!(e.room, "21");
        assert_eq!(e.author.id.as_deref(), Some("146521877"));
        assert_eq!(e.author.name.as_deref(), Some("gamethattunedev"));
        assert_eq!(e.author.network.as_deref(), Some("twitch"));
        assert_eq!(e.text, "here's a message from twitch Kappa");
        assert_eq!(e.markdown.as_deref(), Some("here's a message from twitch "));
        assert_eq!(e.at.timestamp_millis(), 1_764_504_000_123);
        assert!(!e.private);
        assert_eq!(e.detail.as_ref().unwrap()["picture"], "https://p/x.png");
        assert_eq!(e.raw.as_ref().unwrap(), &raw);
        assert!(e.id.starts_with("multistreamer:21:"));
        assert_eq!(e.id.len(), "multistreamer:21:".len() + 16);
        // Stable: the same frame received later maps to the same id.
        let later = to_event(
            "ms",
            21,
            &m,
            &raw,
            true,
            now() + chrono::Duration::seconds(90),
        );
        assert_eq!(later.id, e.id);
    }

    #[test]
    fn private_irc_message_has_recipient() {
        let (m, raw) = parse(
            r#"{"type":"text","account_id":0,"network":"irc","from":{"id":2,"name":"test"},
            "to":{"name":"john","id":1},"text":"hey ban this guy","markdown":"hey ban this guy"}"#,
        );
        let e = to_event("ms", 21, &m, &raw, true, now());
        assert!(e.private);
        let to = e.to.unwrap();
        assert_eq!(to.name.as_deref(), Some("john"));
        assert_eq!(to.id.as_deref(), Some("1"));
        assert_eq!(to.network.as_deref(), Some("irc"));
        assert_eq!(e.at, now(), "no timestamp: the receive time");
    }

    #[test]
    fn ids_differ_by_type_text_author_time_and_recipient() {
        let base = r#"{"account_id":14,"network":"twitch","from":{"id":"1","name":"a"},"text":"hi","timestamp":5}"#;
        let mk = |patch: &str| {
            let mut v: Value = serde_json::from_str(base).unwrap();
            let p: Value = serde_json::from_str(patch).unwrap();
            for (k, val) in p.as_object().unwrap() {
                v[k] = val.clone();
            }
            let m: ChatMessage = serde_json::from_value(v).unwrap();
            m
        };
        let a = chat_id(21, false, &mk("{}"), 0);
        assert_eq!(
            a,
            chat_id(21, false, &mk("{}"), 999),
            "timestamp wins over receive time"
        );
        assert_ne!(a, chat_id(21, true, &mk("{}"), 0));
        assert_ne!(a, chat_id(22, false, &mk("{}"), 0));
        assert_ne!(a, chat_id(21, false, &mk(r#"{"text":"hi!"}"#), 0));
        assert_ne!(a, chat_id(21, false, &mk(r#"{"timestamp":6}"#), 0));
        assert_ne!(
            a,
            chat_id(21, false, &mk(r#"{"from":{"id":"2","name":"a"}}"#), 0)
        );
        assert_ne!(a, chat_id(21, false, &mk(r#"{"to":{"name":"john"}}"#), 0));
        assert_ne!(a, chat_id(21, false, &mk(r#"{"account_id":0}"#), 0));
        // Without a timestamp, the receive time tells repeats apart.
        let no_ts = mk(r#"{"timestamp":null}"#);
        assert_ne!(chat_id(21, false, &no_ts, 1), chat_id(21, false, &no_ts, 2));
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn emote_status_viewers_writer_unknown() {
        let (m, raw) = parse(
            r#"{"type":"emote","stream_id":21,"account_id":14,"network":"twitch","text":"is loving this","from":{"name":"g","id":"1"}}"#,
        );
        assert_eq!(to_event("ms", 21, &m, &raw, true, now()).kind, Kind::Emote);

        let (m, raw) = parse(
            r#"{"type":"status","status":{"data_pulling":false,"data_pushing":false,"data_incoming":false},
            "accounts":{"0":{"writable":true,"name":"john","live":false,"ready":true,"network":{"name":"irc","displayName":"IRC"}}}}"#,
        );
        let e = to_event("ms", 21, &m, &raw, true, now());
        assert_eq!(e.kind, Kind::Status);
        assert_eq!(e.text, "offline; 1 accounts");
        let d = e.detail.unwrap();
        assert_eq!(d["accounts"]["0"]["name"], "john");
        assert_eq!(d["status"]["data_pushing"], false);

        let (m, raw) =
            parse(r#"{"type":"viewcountresult","viewer_count":3,"stream_id":21,"account_id":14}"#);
        let e = to_event("ms", 21, &m, &raw, true, now());
        assert_eq!(e.kind, Kind::Viewers);
        assert_eq!(e.viewers, Some(3));
        assert_eq!(e.text, "3 viewers");
        assert_eq!(e.detail.unwrap()["account_id"], 14);

        let (m, raw) =
            parse(r#"{"type":"writerresult","account_id":17,"cur_stream_account_id":14}"#);
        let e = to_event("ms", 21, &m, &raw, true, now());
        assert_eq!(e.kind, Kind::System);
        assert_eq!(e.detail.unwrap()["type"], "writerresult");

        let (m, raw) = parse(r#"{"type":"hostmode","text":"now hosting"}"#);
        let e = to_event("ms", 21, &m, &raw, true, now());
        assert_eq!(e.kind, Kind::System);
        assert_eq!(e.text, "now hosting");
        assert_eq!(e.detail.unwrap()["type"], "hostmode");
    }
}
