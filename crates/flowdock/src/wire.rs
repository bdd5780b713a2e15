//! Typed wire messages of the Flowdock streaming and REST APIs.
//!
//! Every message on both transports (and in the REST `messages` array) is one JSON object with
//! a common envelope ([`WireMessage`]) whose `content` depends on `event`. The envelope is read
//! leniently — real traffic has numeric and string ids, `user` as `"1"` or `1`, `sent` as epoch
//! milliseconds or an RFC 3339 string — and [`WireMessage::payload`] gives the typed content.
//! Unknown event types are [`Payload::Other`], never an error.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A value the service sends sometimes as a JSON number and sometimes as a string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumOrStr {
    /// A JSON number (integers only are meaningful here).
    Num(serde_json::Number),
    /// A JSON string.
    Str(String),
}

impl NumOrStr {
    /// The value as text (`1` and `"1"` both give `"1"`).
    pub fn as_string(&self) -> String {
        match self {
            NumOrStr::Num(n) => n.to_string(),
            NumOrStr::Str(s) => s.clone(),
        }
    }

    /// The value as an unsigned integer, when it is one (also a numeric string).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            NumOrStr::Num(n) => n.as_u64(),
            NumOrStr::Str(s) => s.trim().parse().ok(),
        }
    }
}

/// The envelope every Flowdock message shares.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    /// Message id (per flow); absent on events that are not stored (`activity.user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<NumOrStr>,
    /// Client-generated id that lets a sender recognise its own messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The event type (`message`, `comment`, `action`, ...).
    #[serde(default)]
    pub event: String,
    /// The flow the message belongs to (absent for private messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// The event-specific content (a string, an object or null).
    #[serde(default)]
    pub content: Value,
    /// Tags (`influx:ID` marks a comment's parent; `:file`, `:url`, user tags).
    #[serde(default, deserialize_with = "lenient_tags")]
    pub tags: Vec<String>,
    /// When it was sent: epoch milliseconds (older integrations sent RFC 3339 strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<Value>,
    /// RFC 3339 creation time, where given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The sending user's id; `"0"` means no user (integrations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<NumOrStr>,
    /// The recipient's user id, on private messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<NumOrStr>,
    /// Attached files.
    #[serde(default, deserialize_with = "lenient_vec")]
    pub attachments: Vec<Value>,
    /// The application that produced it (`chat`, `influx`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The thread the message belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// The thread object (activity and discussion events, threaded messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<Value>,
    /// When the message was last edited (epoch ms), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<Value>,
    /// Title of an activity or discussion event (may contain HTML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Body of a discussion event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// External author of an activity or discussion event (`{ "name": ... }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Value>,
    /// Name of an external (non-Flowdock) sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_user_name: Option<String>,
}

fn lenient_tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Option::<Vec<Value>>::deserialize(d)?.unwrap_or_default();
    Ok(v.into_iter()
        .filter_map(|t| match t {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect())
}

fn lenient_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    Ok(Option::<Vec<Value>>::deserialize(d)?.unwrap_or_default())
}

/// The `content` of a `comment` event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentContent {
    /// The title of the item commented on.
    #[serde(default)]
    pub title: String,
    /// The comment itself.
    #[serde(default)]
    pub text: String,
}

/// The `content` of a `message-edit` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEditContent {
    /// The id of the edited message.
    pub message: NumOrStr,
    /// The new text.
    #[serde(default)]
    pub updated_content: String,
}

/// The `content` of a `tag-change` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagChangeContent {
    /// The id of the message whose tags changed.
    pub message: NumOrStr,
    /// Tags added.
    #[serde(default)]
    pub add: Vec<String>,
    /// Tags removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// The `content` of a `file` event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileContent {
    /// MIME type.
    #[serde(default)]
    pub content_type: String,
    /// File name.
    #[serde(default)]
    pub file_name: String,
    /// Size in bytes.
    #[serde(default)]
    pub file_size: u64,
    /// Path of the file on the API host.
    #[serde(default)]
    pub path: String,
}

/// The `content` of an `action` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionContent {
    /// The action (`add_people`, `join`, `block`, `invite`, `decline`, `uninvite`,
    /// `add_rss_feed`, `remove_rss_feed`, or one this crate does not know).
    #[serde(rename = "type")]
    pub kind: String,
    /// Everything else the action carries (`message`, `user`, `email`, `url`, `id`, ...).
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

/// The typed content of a message, by event type.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Payload {
    /// `message`: a chat message.
    Message(String),
    /// `line`: the legacy name of a chat message.
    Line(String),
    /// `comment`: a comment on an item; the parent is in the `influx:ID` tag.
    Comment(CommentContent),
    /// `message-edit`: an earlier message got new text.
    MessageEdit(MessageEditContent),
    /// `tag-change`: an earlier message's tags changed.
    TagChange(TagChangeContent),
    /// `action`: membership and feed changes.
    Action(ActionContent),
    /// `status`: a user's status text.
    Status(String),
    /// `file`: an upload.
    File(FileContent),
    /// `activity.user`: presence (not stored by the service); the raw content.
    UserActivity(Value),
    /// `activity`: an integration's activity on a thread.
    Activity,
    /// `discussion`: an external comment on a thread.
    Discussion,
    /// Any other type (integrations such as `vcs`, `jira`, `rss`, `mail`; internal types such
    /// as `backend.user.block`, `flow-add`); the raw content.
    Other(Value),
}

impl WireMessage {
    /// Parses one message from JSON bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The message id as a number, when it has one.
    pub fn id_u64(&self) -> Option<u64> {
        self.id.as_ref().and_then(NumOrStr::as_u64)
    }

    /// The sender's user id; `None` for `"0"` (no user) or when absent.
    pub fn user_id(&self) -> Option<String> {
        let u = self.user.as_ref()?.as_string();
        (!u.is_empty() && u != "0").then_some(u)
    }

    /// The parent message id of a comment, from its `influx:ID` tag.
    pub fn influx_parent(&self) -> Option<String> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix("influx:"))
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
    }

    /// The typed content. A known event whose content has an unexpected shape falls back to
    /// [`Payload::Other`] rather than failing.
    pub fn payload(&self) -> Payload {
        self.view().take_payload()
    }
}

/// A content value as text: strings as they are, null as empty, anything else as JSON.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The streaming hot path: a message read straight from a frame's text, strings borrowed from it
// where they have no escapes. It accepts exactly what `serde_json::Value` followed by
// `WireMessage` accepts (every value, unknown fields included, goes through the same
// deserializer calls a `Value` would make, so the same syntax, UTF-8, escape and nesting
// checks apply; duplicate keys keep the last value, as a `Value` does); anything it does not
// take is left to that slower path, which then gives the same answer as before.
// ---------------------------------------------------------------------------------------------

/// Text borrowed from the frame when it has no escapes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Text<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// [`NumOrStr`] borrowing its text.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum NumOrStrRef<'a> {
    Num(serde_json::Number),
    Str(Cow<'a, str>),
}

impl NumOrStrRef<'_> {
    /// The value as text (`1` and `"1"` both give `"1"`).
    pub(crate) fn as_text(&self) -> Cow<'_, str> {
        match self {
            NumOrStrRef::Num(n) => Cow::Owned(n.to_string()),
            NumOrStrRef::Str(s) => Cow::Borrowed(s),
        }
    }

    /// The value as an unsigned integer, when it is one (also a numeric string).
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            NumOrStrRef::Num(n) => n.as_u64(),
            NumOrStrRef::Str(s) => s.trim().parse().ok(),
        }
    }

    fn of(v: &NumOrStr) -> NumOrStrRef<'_> {
        match v {
            NumOrStr::Num(n) => NumOrStrRef::Num(n.clone()),
            NumOrStr::Str(s) => NumOrStrRef::Str(Cow::Borrowed(s)),
        }
    }

    /// A `NumOrStr` as a JSON value gives it (a number or a string), else None.
    fn of_value(v: &Value) -> Option<NumOrStrRef<'_>> {
        match v {
            Value::Number(n) => Some(NumOrStrRef::Num(n.clone())),
            Value::String(s) => Some(NumOrStrRef::Str(Cow::Borrowed(s))),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for NumOrStrRef<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(JsonVisitor)? {
            Json::Str(s) => Ok(NumOrStrRef::Str(s)),
            Json::Other(v) => match v.into_owned() {
                Value::Number(n) => Ok(NumOrStrRef::Num(n)),
                _ => Err(de::Error::custom("expected a number or a string")),
            },
        }
    }
}

/// A JSON value whose top-level string is borrowed from the frame.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Json<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// Anything else (null included).
    Other(Cow<'a, Value>),
}

impl Default for Json<'_> {
    fn default() -> Self {
        Json::Other(Cow::Owned(Value::Null))
    }
}

impl<'a> Json<'a> {
    pub(crate) fn of(v: &'a Value) -> Json<'a> {
        match v {
            Value::String(s) => Json::Str(Cow::Borrowed(s)),
            other => Json::Other(Cow::Borrowed(other)),
        }
    }

    /// The owned value.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Json::Str(s) => Value::String(s.into_owned()),
            Json::Other(v) => v.into_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

/// Builds a [`Json`] with the same calls a `Value` makes.
struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Json::Other(Cow::Owned(Value::Bool(v))))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Json::Other(Cow::Owned(Value::Number(v.into()))))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Json::Other(Cow::Owned(Value::Number(v.into()))))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Json::Other(Cow::Owned(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        )))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Json::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Json::default())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Json::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(de::value::SeqAccessDeserializer::new(seq))
            .map(|v| Json::Other(Cow::Owned(v)))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(de::value::MapAccessDeserializer::new(map))
            .map(|v| Json::Other(Cow::Owned(v)))
    }
}

/// Any JSON value, checked as a `Value` would be and dropped (nothing is built).
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
        Skip::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// A JSON array (its items checked and dropped); `attachments`.
struct SkipSeq;

impl<'de> Deserialize<'de> for SkipSeq {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SkipSeq;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SkipSeq, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(SkipSeq)
            }
        }
        d.deserialize_seq(V)
    }
}

/// The `tags` array, read leniently: strings, and numbers as text; other items dropped.
struct Tags<'a>(Vec<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Tags<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tags<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tags<'de>, A::Error> {
                let mut tags = Vec::new();
                while let Some(t) = seq.next_element::<Json<'de>>()? {
                    match t {
                        Json::Str(s) => tags.push(s),
                        Json::Other(v) => {
                            if let Value::Number(n) = v.as_ref() {
                                tags.push(Cow::Owned(n.to_string()));
                            }
                        }
                    }
                }
                Ok(Tags(tags))
            }
        }
        d.deserialize_seq(V)
    }
}

/// `sent`: epoch milliseconds, or text; anything else means unknown.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Sent<'a> {
    Num(serde_json::Number),
    Str(Cow<'a, str>),
    Other,
}

impl<'a> Sent<'a> {
    fn of(v: &'a Value) -> Sent<'a> {
        match v {
            Value::Number(n) => Sent::Num(n.clone()),
            Value::String(s) => Sent::Str(Cow::Borrowed(s)),
            _ => Sent::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Sent<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(JsonVisitor)? {
            Json::Str(s) => Sent::Str(s),
            Json::Other(v) => match v.into_owned() {
                Value::Number(n) => Sent::Num(n),
                _ => Sent::Other,
            },
        })
    }
}

/// What the mapping reads of a `thread` object (absent keys, or a thread that is not an
/// object: None).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ThreadRef<'a> {
    pub(crate) title: Option<Json<'a>>,
    pub(crate) id: Option<Json<'a>>,
    pub(crate) initial_message: Option<Json<'a>>,
}

impl<'a> ThreadRef<'a> {
    fn of(v: &'a Value) -> ThreadRef<'a> {
        ThreadRef {
            title: v.get("title").map(Json::of),
            id: v.get("id").map(Json::of),
            initial_message: v.get("initial_message").map(Json::of),
        }
    }
}

impl<'de> Deserialize<'de> for ThreadRef<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ThreadRef<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut t = ThreadRef::default();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    let slot = match key.0.as_ref() {
                        "title" => &mut t.title,
                        "id" => &mut t.id,
                        "initial_message" => &mut t.initial_message,
                        _ => {
                            map.next_value::<Skip>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<Json<'de>>()?);
                }
                Ok(t)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                SkipVisitor.visit_seq(seq).map(|_| ThreadRef::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                ThreadRef::deserialize(d)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ThreadRef::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ThreadRef::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ThreadRef::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ThreadRef::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(ThreadRef::default())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(ThreadRef::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// `author`: its `name`, when it is an object with a string `name` (all the mapping reads).
struct AuthorName<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for AuthorName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AuthorName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut name = None;
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    if key.0 == "name" {
                        name = match map.next_value::<Json<'de>>()? {
                            Json::Str(s) => Some(s),
                            Json::Other(_) => None,
                        };
                    } else {
                        map.next_value::<Skip>()?;
                    }
                }
                Ok(AuthorName(name))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                SkipVisitor.visit_seq(seq).map(|_| AuthorName(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                AuthorName::deserialize(d)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(AuthorName(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(AuthorName(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(AuthorName(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(AuthorName(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(AuthorName(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(AuthorName(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A wire message as the mapping reads it, borrowing its text from the frame (or from a
/// [`WireMessage`], see [`WireMessage::view`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct WireRef<'a> {
    pub(crate) id: Option<NumOrStrRef<'a>>,
    pub(crate) uuid: Option<Cow<'a, str>>,
    pub(crate) event: Cow<'a, str>,
    pub(crate) flow: Option<Cow<'a, str>>,
    pub(crate) content: Json<'a>,
    pub(crate) tags: Vec<Cow<'a, str>>,
    pub(crate) sent: Option<Sent<'a>>,
    pub(crate) created_at: Option<Cow<'a, str>>,
    pub(crate) user: Option<NumOrStrRef<'a>>,
    pub(crate) to: Option<NumOrStrRef<'a>>,
    pub(crate) thread_id: Option<Cow<'a, str>>,
    pub(crate) thread: Option<ThreadRef<'a>>,
    pub(crate) title: Option<Cow<'a, str>>,
    pub(crate) body: Option<Cow<'a, str>>,
    /// `author.name`, when a string.
    pub(crate) author_name: Option<Cow<'a, str>>,
    pub(crate) external_user_name: Option<Cow<'a, str>>,
}

fn text<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    Ok(map.next_value::<Option<Text<'de>>>()?.map(|t| t.0))
}

impl<'de> Deserialize<'de> for WireRef<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireRef<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Flowdock message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut m = WireRef::default();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    // A repeated key keeps its last value (as a `Value` does).
                    match key.0.as_ref() {
                        "id" => m.id = map.next_value()?,
                        "uuid" => m.uuid = text(&mut map)?,
                        "event" => m.event = map.next_value::<Text<'de>>()?.0,
                        "flow" => m.flow = text(&mut map)?,
                        "content" => m.content = map.next_value()?,
                        "tags" => {
                            m.tags = map
                                .next_value::<Option<Tags<'de>>>()?
                                .map(|t| t.0)
                                .unwrap_or_default()
                        }
                        "sent" => m.sent = map.next_value()?,
                        "created_at" => m.created_at = text(&mut map)?,
                        "user" => m.user = map.next_value()?,
                        "to" => m.to = map.next_value()?,
                        "attachments" => {
                            map.next_value::<Option<SkipSeq>>()?;
                        }
                        "app" => {
                            text(&mut map)?;
                        }
                        "thread_id" => m.thread_id = text(&mut map)?,
                        "thread" => m.thread = map.next_value()?,
                        "edited" => {
                            map.next_value::<Skip>()?;
                        }
                        "title" => m.title = text(&mut map)?,
                        "body" => m.body = text(&mut map)?,
                        "author" => {
                            m.author_name = map
                                .next_value::<Option<AuthorName<'de>>>()?
                                .and_then(|a| a.0)
                        }
                        "external_user_name" => m.external_user_name = text(&mut map)?,
                        _ => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

impl WireRef<'_> {
    /// Reads one message object from JSON text, borrowing from it; None when the text is not
    /// a message object this path takes (the `Value` path then says why, or takes it).
    pub(crate) fn parse(bytes: &[u8]) -> Option<WireRef<'_>> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
        if *first != b'{' {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }

    /// Like [`WireRef::parse`], of text already known to be UTF-8.
    pub(crate) fn parse_str(text: &str) -> Option<WireRef<'_>> {
        let first = text.bytes().find(|b| !b.is_ascii_whitespace())?;
        if first != b'{' {
            return None;
        }
        serde_json::from_str(text).ok()
    }

    /// The message id as a number, when it has one.
    pub(crate) fn id_u64(&self) -> Option<u64> {
        self.id.as_ref().and_then(NumOrStrRef::as_u64)
    }

    /// The sender's user id; `None` for `"0"` (no user) or when absent.
    pub(crate) fn user_id(&self) -> Option<String> {
        let u = self.user.as_ref()?.as_text();
        (!u.is_empty() && u != "0").then(|| u.into_owned())
    }

    /// The parent message id of a comment, from its `influx:ID` tag.
    pub(crate) fn influx_parent(&self) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix("influx:"))
            .filter(|id| !id.is_empty())
    }

    /// Takes the typed content out (the message keeps a null content).
    pub(crate) fn take_payload(&mut self) -> Payload {
        let c = std::mem::take(&mut self.content);
        fn typed<T: serde::de::DeserializeOwned>(c: &Json<'_>) -> Option<T> {
            match c {
                Json::Other(v) => T::deserialize(v.as_ref()).ok(),
                // None of the typed contents is a string.
                Json::Str(_) => None,
            }
        }
        let typed = match self.event.as_ref() {
            "message" => return Payload::Message(text_of_json(c)),
            "line" => return Payload::Line(text_of_json(c)),
            "status" => return Payload::Status(text_of_json(c)),
            "comment" => typed(&c).map(Payload::Comment),
            "message-edit" => typed(&c).map(Payload::MessageEdit),
            "tag-change" => typed(&c).map(Payload::TagChange),
            "action" => typed(&c).map(Payload::Action),
            "file" => typed(&c).map(Payload::File),
            "activity.user" => return Payload::UserActivity(c.into_value()),
            "activity" => Some(Payload::Activity),
            "discussion" => Some(Payload::Discussion),
            _ => None,
        };
        typed.unwrap_or_else(|| Payload::Other(c.into_value()))
    }
}

/// A content value as text: strings as they are, null as empty, anything else as JSON.
fn text_of_json(c: Json<'_>) -> String {
    match c {
        Json::Str(s) => s.into_owned(),
        Json::Other(v) => text_of(&v),
    }
}

impl WireMessage {
    /// The message as the mapping reads it, borrowing from `self`.
    pub(crate) fn view(&self) -> WireRef<'_> {
        fn b(s: &Option<String>) -> Option<Cow<'_, str>> {
            s.as_deref().map(Cow::Borrowed)
        }
        WireRef {
            id: self.id.as_ref().map(NumOrStrRef::of),
            uuid: b(&self.uuid),
            event: Cow::Borrowed(&self.event),
            flow: b(&self.flow),
            content: Json::of(&self.content),
            tags: self
                .tags
                .iter()
                .map(|t| Cow::Borrowed(t.as_str()))
                .collect(),
            sent: self.sent.as_ref().map(Sent::of),
            created_at: b(&self.created_at),
            user: self.user.as_ref().map(NumOrStrRef::of),
            to: self.to.as_ref().map(NumOrStrRef::of),
            thread_id: b(&self.thread_id),
            thread: self.thread.as_ref().map(ThreadRef::of),
            title: b(&self.title),
            body: b(&self.body),
            author_name: self
                .author
                .as_ref()
                .and_then(|a| a.get("name"))
                .and_then(Value::as_str)
                .map(Cow::Borrowed),
            external_user_name: b(&self.external_user_name),
        }
    }
}

impl<'a> Json<'a> {
    /// A `NumOrStr` this value gives (a number or a string).
    pub(crate) fn num_or_str(&self) -> Option<NumOrStrRef<'_>> {
        match self {
            Json::Str(s) => Some(NumOrStrRef::Str(Cow::Borrowed(s))),
            Json::Other(v) => NumOrStrRef::of_value(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_envelope() {
        let m: WireMessage = serde_json::from_str(
            r#"{"id":"12","user":0,"sent":"2012-04-20T18:11:05.446Z","tags":null,"event":"vcs","content":{}}"#,
        )
        .unwrap();
        assert_eq!(m.id_u64(), Some(12));
        assert_eq!(m.user_id(), None);
        assert!(m.tags.is_empty());
        assert!(matches!(m.payload(), Payload::Other(_)));
    }

    #[test]
    fn influx_parent_from_tags() {
        let m: WireMessage = serde_json::from_str(
            r#"{"event":"comment","tags":["x","influx:12931"],"content":{"title":"t","text":"c"}}"#,
        )
        .unwrap();
        assert_eq!(m.influx_parent().as_deref(), Some("12931"));
        match m.payload() {
            Payload::Comment(c) => assert_eq!((c.title.as_str(), c.text.as_str()), ("t", "c")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_known_content_falls_back() {
        let m: WireMessage =
            serde_json::from_str(r#"{"event":"message-edit","content":"oops"}"#).unwrap();
        assert!(matches!(m.payload(), Payload::Other(_)));
    }
}
