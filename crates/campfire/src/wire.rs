//! Campfire's wire format: the message objects of the streaming API and the REST API.

use std::fmt;

use chat_model::Timestamp;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The `type` of a Campfire message.
///
/// Every type the service was seen to send has its own variant; anything else is kept as
/// [`MessageType::Other`] with the name the server gave, never rejected.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageType {
    /// An ordinary chat line.
    Text,
    /// A pasted, usually multi-line, block of text.
    Paste,
    /// Someone played a sound (`/play trombone`); the body names the sound.
    Sound,
    /// An advertisement the service inserted.
    Advertisement,
    /// Guest access to the room was turned on.
    AllowGuests,
    /// Guest access to the room was turned off.
    DisallowGuests,
    /// A user went idle.
    Idle,
    /// A user was removed from the room (usually after a long idle).
    Kick,
    /// A user left the room.
    Leave,
    /// A user entered the room.
    Enter,
    /// A notice from Campfire itself.
    System,
    /// A periodic clock marker in the transcript (no user, no body).
    Timestamp,
    /// The room's topic changed; the body is the new topic.
    TopicChange,
    /// A user came back from idle.
    Unidle,
    /// The room was locked (transcript recording paused).
    Lock,
    /// The room was unlocked.
    Unlock,
    /// A file was uploaded; the body is the file name.
    Upload,
    /// A conference call started.
    ConferenceCreated,
    /// A conference call ended.
    ConferenceFinished,
    /// A tweet was pasted into the room.
    Tweet,
    /// A type this crate does not know, with the server's name for it.
    Other(String),
}

impl MessageType {
    /// Every known type, in the order NOTES.md lists them.
    pub const KNOWN: &'static [MessageType] = &[
        MessageType::Text,
        MessageType::Paste,
        MessageType::Sound,
        MessageType::Advertisement,
        MessageType::AllowGuests,
        MessageType::DisallowGuests,
        MessageType::Idle,
        MessageType::Kick,
        MessageType::Leave,
        MessageType::Enter,
        MessageType::System,
        MessageType::Timestamp,
        MessageType::TopicChange,
        MessageType::Unidle,
        MessageType::Lock,
        MessageType::Unlock,
        MessageType::Upload,
        MessageType::ConferenceCreated,
        MessageType::ConferenceFinished,
        MessageType::Tweet,
    ];

    /// The name Campfire uses on the wire (`"TextMessage"`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            MessageType::Text => "TextMessage",
            MessageType::Paste => "PasteMessage",
            MessageType::Sound => "SoundMessage",
            MessageType::Advertisement => "AdvertisementMessage",
            MessageType::AllowGuests => "AllowGuestsMessage",
            MessageType::DisallowGuests => "DisallowGuestsMessage",
            MessageType::Idle => "IdleMessage",
            MessageType::Kick => "KickMessage",
            MessageType::Leave => "LeaveMessage",
            MessageType::Enter => "EnterMessage",
            MessageType::System => "SystemMessage",
            MessageType::Timestamp => "TimestampMessage",
            MessageType::TopicChange => "TopicChangeMessage",
            MessageType::Unidle => "UnidleMessage",
            MessageType::Lock => "LockMessage",
            MessageType::Unlock => "UnlockMessage",
            MessageType::Upload => "UploadMessage",
            MessageType::ConferenceCreated => "ConferenceCreatedMessage",
            MessageType::ConferenceFinished => "ConferenceFinishedMessage",
            MessageType::Tweet => "TweetMessage",
            MessageType::Other(name) => name,
        }
    }

    /// Reads a wire name; unknown names become [`MessageType::Other`].
    pub fn parse(name: &str) -> MessageType {
        MessageType::KNOWN
            .iter()
            .find(|t| t.as_str() == name)
            .cloned()
            .unwrap_or_else(|| MessageType::Other(name.to_owned()))
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MessageType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MessageType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor(MessageType::parse))
    }
}

/// Reads a string without copying it (when the input lends it) and maps it with `.0`; any
/// other JSON type is refused as `String`'s own deserializer refuses it.
struct StrVisitor<F>(F);

impl<T, F: FnOnce(&str) -> T> Visitor<'_> for StrVisitor<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<T, E> {
        match std::str::from_utf8(v) {
            Ok(s) => Ok((self.0)(s)),
            Err(_) => Err(E::invalid_value(de::Unexpected::Bytes(v), &self)),
        }
    }
}

/// A tweet attached to a [`MessageType::Tweet`] message (REST and streaming APIs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tweet {
    /// The tweet's id on Twitter.
    #[serde(default, deserialize_with = "opt_id_string")]
    pub id: Option<String>,
    /// The tweet's text.
    #[serde(default)]
    pub message: Option<String>,
    /// The author's Twitter user name.
    #[serde(default)]
    pub author_username: Option<String>,
    /// The author's avatar URL.
    #[serde(default)]
    pub author_avatar_url: Option<String>,
}

/// One Campfire message, as the streaming API (`live.json`) and the REST API (`recent.json`)
/// send it.
///
/// Fields beyond the documented ones (a sound's `url`, an upload's `full_url`, ...) are kept in
/// [`Message::extra`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The message id: unique and increasing across the account.
    #[serde(deserialize_with = "id_u64")]
    pub id: u64,
    /// The room the message was posted in.
    #[serde(default, deserialize_with = "opt_id_u64")]
    pub room_id: Option<u64>,
    /// The author; `null` for service notices such as timestamps.
    #[serde(default, deserialize_with = "opt_id_u64")]
    pub user_id: Option<u64>,
    /// The message type.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// The text; `null` for timestamps and most notices.
    #[serde(default)]
    pub body: Option<String>,
    /// When it was posted (Campfire sends UTC without a zone).
    #[serde(with = "created_at")]
    pub created_at: Timestamp,
    /// Whether the message was starred (highlighted) in the transcript.
    #[serde(default, deserialize_with = "starred")]
    pub starred: bool,
    /// The tweet of a [`MessageType::Tweet`] message, when the server sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tweet: Option<Tweet>,
    /// Every other field the server sent.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The REST API's answer to `recent.json`: `{"messages": [...]}` (a bare array is accepted too).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecentMessages {
    /// The messages, as the server listed them.
    pub messages: Vec<serde_json::Value>,
}

impl<'de> Deserialize<'de> for RecentMessages {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Wrapped { messages: Vec<serde_json::Value> },
            Bare(Vec<serde_json::Value>),
        }
        match Shape::deserialize(d) {
            Ok(Shape::Wrapped { messages }) | Ok(Shape::Bare(messages)) => {
                Ok(RecentMessages { messages })
            }
            Err(_) => Err(de::Error::custom(
                "expected {\"messages\": [...]} or a JSON array of messages",
            )),
        }
    }
}

/// Parses Campfire's `created_at` in any shape it was seen in: `2009-12-01 23:44:40` (UTC, no
/// zone; the streaming API), `2009/12/01 23:44:40 +0000` (the REST API), or RFC 3339.
pub fn parse_created_at(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    parse_common_time(text.as_bytes()).or_else(|| parse_any_time(text))
}

/// [`parse_created_at`] with chrono's format parsers only.
fn parse_any_time(text: &str) -> Option<Timestamp> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y/%m/%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S %z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y/%m/%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    let zulu = text
        .strip_suffix(" UTC")
        .or_else(|| text.strip_suffix('Z'))?;
    parse_created_at(zulu)
}

/// The two shapes Campfire sends, read without chrono's format parser:
/// `2009-12-01 23:44:40` (UTC) and `2009/12/01 23:44:40 +0000`. `None` for anything else
/// (then the general parser decides), including a leap second or an impossible date.
fn parse_common_time(b: &[u8]) -> Option<Timestamp> {
    let (date_sep, rest) = match b.len() {
        19 => (b'-', &b[19..]),
        25 => (b'/', &b[19..]),
        _ => return None,
    };
    if rest != b"" && rest != b" +0000" {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let shape =
        b[4] == date_sep && b[7] == date_sep && b[10] == b' ' && b[13] == b':' && b[16] == b':';
    if !shape {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, mi, s) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if s > 59 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, mo, d)?;
    let time = chrono::NaiveTime::from_hms_opt(h, mi, s)?;
    Some(Utc.from_utc_datetime(&date.and_time(time)))
}

/// Formats a time the way the streaming API sends it: `2009-12-01 23:44:40`.
pub fn format_stream_time(t: &Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Formats a time the way the REST API sends it: `2009/12/01 23:44:40 +0000`.
pub fn format_rest_time(t: &Timestamp) -> String {
    t.format("%Y/%m/%d %H:%M:%S +0000").to_string()
}

mod created_at {
    use super::*;

    pub(super) fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_stream_time(t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        d.deserialize_str(StrVisitor(|text: &str| {
            parse_created_at(text).ok_or_else(|| {
                de::Error::custom(format!(
                    "created_at {text:?} is not a time like \"2009-12-01 23:44:40\""
                ))
            })
        }))?
    }
}

/// `starred`: the string `"true"`/`"false"` on the wire; a boolean or `null` accepted too.
fn starred<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("\"true\", \"false\", a boolean or null")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            match v.trim() {
                "true" | "1" => Ok(true),
                "false" | "0" | "" => Ok(false),
                other => Err(E::custom(format!("starred {other:?} is not true or false"))),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            Ok(v != 0)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            Ok(v != 0)
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_none<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    d.deserialize_any(V)
}

struct IdVisitor;

impl Visitor<'_> for IdVisitor {
    type Value = Option<u64>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer id (or its decimal string) or null")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map(Some)
            .map_err(|_| E::custom(format!("id {v} is negative")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        v.trim()
            .parse()
            .map(Some)
            .map_err(|_| E::custom(format!("id {v:?} is not a number")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

fn opt_id_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_any(IdVisitor)
}

fn id_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(IdVisitor)?
        .ok_or_else(|| de::Error::custom("message id is null"))
}

fn opt_id_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn documented_examples_decode() {
        let m: Message = serde_json::from_str(
            r#"{"room_id":1,"created_at":"2009-12-01 23:44:40","body":"hello","id":1,
                "user_id":1,"type":"TextMessage","starred":"true"}"#,
        )
        .unwrap();
        assert_eq!(m.id, 1);
        assert_eq!(m.room_id, Some(1));
        assert_eq!(m.user_id, Some(1));
        assert_eq!(m.kind, MessageType::Text);
        assert_eq!(m.body.as_deref(), Some("hello"));
        assert!(m.starred);
        assert_eq!(
            m.created_at,
            Utc.with_ymd_and_hms(2009, 12, 1, 23, 44, 40).unwrap()
        );

        let t: Message = serde_json::from_str(
            r#"{"room_id":1,"created_at":"2009-12-01 23:40:00","body":null,"id":2,
                "user_id":null,"type":"TimestampMessage","starred":"false"}"#,
        )
        .unwrap();
        assert_eq!(t.kind, MessageType::Timestamp);
        assert_eq!(t.user_id, None);
        assert_eq!(t.body, None);
        assert!(!t.starred);
    }

    #[test]
    fn every_type_name_round_trips() {
        for t in MessageType::KNOWN {
            assert_eq!(&MessageType::parse(t.as_str()), t);
            let json = serde_json::to_value(t).unwrap();
            assert_eq!(json, t.as_str());
        }
        assert_eq!(
            MessageType::parse("HologramMessage"),
            MessageType::Other("HologramMessage".into())
        );
    }

    #[test]
    fn time_shapes() {
        let want = Utc.with_ymd_and_hms(2009, 12, 1, 23, 44, 40).unwrap();
        for text in [
            "2009-12-01 23:44:40",
            "2009/12/01 23:44:40 +0000",
            "2009/12/02 00:44:40 +0100",
            "2009-12-01T23:44:40Z",
            "2009-12-01T23:44:40+00:00",
            "2009-12-01 23:44:40 UTC",
            "2009-12-01 23:44:40Z",
        ] {
            assert_eq!(parse_created_at(text), Some(want), "{text}");
        }
        assert_eq!(parse_created_at("yesterday"), None);
        assert_eq!(parse_created_at(""), None);
        assert_eq!(format_stream_time(&want), "2009-12-01 23:44:40");
        assert_eq!(format_rest_time(&want), "2009/12/01 23:44:40 +0000");
    }

    #[test]
    fn starred_shapes_and_lenient_ids() {
        for (starred, want) in [
            (r#""true""#, true),
            (r#""false""#, false),
            ("true", true),
            ("false", false),
            ("null", false),
        ] {
            let m: Message = serde_json::from_str(&format!(
                r#"{{"id":"7","room_id":"3","user_id":null,"type":"TextMessage","body":"x",
                    "created_at":"2009-12-01 23:44:40","starred":{starred}}}"#
            ))
            .unwrap();
            assert_eq!(m.starred, want, "{starred}");
            assert_eq!(m.id, 7);
            assert_eq!(m.room_id, Some(3));
        }
        let bad = serde_json::from_str::<Message>(
            r#"{"id":1,"type":"TextMessage","created_at":"2009-12-01 23:44:40","starred":"maybe"}"#,
        )
        .unwrap_err();
        assert!(bad.to_string().contains("maybe"), "{bad}");
    }

    #[test]
    fn bad_fields_are_named() {
        let e =
            serde_json::from_str::<Message>(r#"{"id":1,"type":"TextMessage","created_at":"soon"}"#)
                .unwrap_err();
        assert!(e.to_string().contains("created_at"), "{e}");
        let e = serde_json::from_str::<Message>(
            r#"{"id":null,"type":"TextMessage","created_at":"2009-12-01 23:44:40"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("id"), "{e}");
    }

    #[test]
    fn extras_and_tweets_are_kept() {
        let m: Message = serde_json::from_str(
            r#"{"id":9,"type":"TweetMessage","created_at":"2009-12-01 23:44:40","user_id":4,
                "body":"http://twitter.com/a/status/1",
                "tweet":{"id":1,"message":"hi","author_username":"a","author_avatar_url":null},
                "url":"http://x"}"#,
        )
        .unwrap();
        let tweet = m.tweet.unwrap();
        assert_eq!(tweet.id.as_deref(), Some("1"));
        assert_eq!(tweet.message.as_deref(), Some("hi"));
        assert_eq!(m.extra["url"], "http://x");
    }

    #[test]
    fn recent_shapes() {
        let a: RecentMessages = serde_json::from_str(r#"{"messages":[{"id":1}]}"#).unwrap();
        let b: RecentMessages = serde_json::from_str(r#"[{"id":1}]"#).unwrap();
        assert_eq!(a, b);
        let e = serde_json::from_str::<RecentMessages>(r#"{"nope":1}"#).unwrap_err();
        assert!(e.to_string().contains("messages"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn stream_time_round_trips(secs in 0i64..4_000_000_000) {
                let t = Utc.timestamp_opt(secs, 0).unwrap();
                prop_assert_eq!(parse_created_at(&format_stream_time(&t)), Some(t));
                prop_assert_eq!(parse_created_at(&format_rest_time(&t)), Some(t));
            }

            #[test]
            fn any_type_name_is_accepted(name in "[A-Za-z]{1,24}") {
                let t = MessageType::parse(&name);
                prop_assert_eq!(t.as_str(), name.as_str());
            }

            /// The quick reading of the two common shapes agrees with chrono's, valid or not.
            #[test]
            fn the_quick_time_reader_agrees_with_chrono(
                y in 0u32..10000, mo in 0u32..14, d in 0u32..33, h in 0u32..26, mi in 0u32..62,
                s in 0u32..62, rest in proptest::sample::select(vec!["", " +0000", " +0100", "Z", " UTC"]),
                slash in any::<bool>(),
            ) {
                let sep = if slash { '/' } else { '-' };
                let text = format!("{y:04}{sep}{mo:02}{sep}{d:02} {h:02}:{mi:02}:{s:02}{rest}");
                prop_assert_eq!(parse_created_at(&text), parse_any_time(&text), "{}", text);
            }

            #[test]
            fn parse_never_panics(text in ".{0,40}") {
                let _ = parse_created_at(&text);
            }
        }
    }
}
