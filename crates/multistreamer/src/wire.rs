//! Typed WebSocket messages, both directions, exactly as the multistreamer wiki documents them
//! (plus the fields NOTES.md says the real server sent: `timestamp`, `stream_id`,
//! `from.picture`).
//!
//! Every object carries a `type`. Server messages of a type this crate does not know pass
//! through as [`ServerMessage::Unknown`]; they are never an error.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, de};
use serde_json::Value;

/// A multistreamer account id (`0` is the local IRC pseudo-account).
pub type AccountId = u64;

/// The stream-level flags of a status message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamFlags {
    /// Whether the server is pulling video from a source.
    #[serde(default)]
    pub data_pulling: bool,
    /// Whether the server is pushing video to the networks.
    #[serde(default)]
    pub data_pushing: bool,
    /// Whether video is coming in.
    #[serde(default)]
    pub data_incoming: bool,
}

/// The network an account belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Network {
    /// The machine name (`twitch`, `irc`, `youtube`).
    #[serde(default)]
    pub name: String,
    /// The human name (`Twitch`, `IRC`).
    #[serde(default, rename = "displayName")]
    pub display_name: String,
}

/// One account in a status message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Account {
    /// Whether the account is streaming now.
    #[serde(default)]
    pub live: bool,
    /// Whether chat messages can be written through it.
    #[serde(default)]
    pub writable: bool,
    /// Whether a chat writer exists, so a message can be sent right away.
    #[serde(default)]
    pub ready: bool,
    /// The account's name on its network.
    #[serde(default)]
    pub name: String,
    /// The account's network.
    #[serde(default)]
    pub network: Network,
    /// The public page of the live stream, when live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_url: Option<String>,
}

/// A `status` message from the server: the stream's flags and its accounts by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Status {
    /// The stream-level flags.
    #[serde(default)]
    pub status: StreamFlags,
    /// The accounts attached to the stream, by id.
    #[serde(default, deserialize_with = "accounts")]
    pub accounts: BTreeMap<AccountId, Account>,
}

impl Status {
    /// The account with this id.
    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(&id)
    }

    /// Whether any account is live.
    pub fn any_live(&self) -> bool {
        self.accounts.values().any(|a| a.live)
    }

    /// A one-line human summary ("live: jprjrdev (Twitch); pushing, incoming").
    pub fn summary(&self) -> String {
        let live: Vec<String> = self
            .accounts
            .values()
            .filter(|a| a.live)
            .map(|a| format!("{} ({})", a.name, display_network(&a.network)))
            .collect();
        let mut flags = Vec::new();
        if self.status.data_pulling {
            flags.push("pulling");
        }
        if self.status.data_pushing {
            flags.push("pushing");
        }
        if self.status.data_incoming {
            flags.push("incoming");
        }
        let head = if live.is_empty() {
            "offline".to_owned()
        } else {
            format!("live: {}", live.join(", "))
        };
        if flags.is_empty() {
            format!("{head}; {} accounts", self.accounts.len())
        } else {
            format!(
                "{head}; {}; {} accounts",
                flags.join(", "),
                self.accounts.len()
            )
        }
    }
}

fn display_network(n: &Network) -> &str {
    if n.display_name.is_empty() {
        &n.name
    } else {
        &n.display_name
    }
}

/// A user in a chat message (`from`, or `to` of a private message).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct User {
    /// The user's id on its network; the server sends a number or a string.
    #[serde(default, deserialize_with = "opt_string_or_number")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The user's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An avatar URL, when the network gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
}

/// An incoming `text` or `emote` message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The stream account the message arrived on.
    #[serde(
        default,
        deserialize_with = "opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub account_id: Option<AccountId>,
    /// The network it came from (`twitch`, `irc`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Who said it.
    #[serde(default)]
    pub from: User,
    /// The recipient of a private message; absent for public messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<User>,
    /// The plain text.
    #[serde(default)]
    pub text: String,
    /// The markdown rendering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    /// The stream id.
    #[serde(
        default,
        deserialize_with = "opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub stream_id: Option<u64>,
    /// When it was said, in milliseconds since the epoch.
    #[serde(
        default,
        deserialize_with = "opt_millis",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<i64>,
}

impl ChatMessage {
    /// Whether this is a private message (`to` is present).
    pub fn is_private(&self) -> bool {
        self.to.is_some()
    }
}

/// A `writerresult` message: a chat writer now exists for `account_id` → `cur_stream_account_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterResult {
    /// The account that can now write.
    #[serde(deserialize_with = "id")]
    pub account_id: AccountId,
    /// The stream account it writes to.
    #[serde(deserialize_with = "id")]
    pub cur_stream_account_id: AccountId,
}

/// A `viewcountresult` message: the viewers of one account's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewCountResult {
    /// The number of viewers.
    #[serde(deserialize_with = "id")]
    pub viewer_count: u64,
    /// The stream id.
    #[serde(
        default,
        deserialize_with = "opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub stream_id: Option<u64>,
    /// The account whose viewers these are.
    #[serde(
        default,
        deserialize_with = "opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub account_id: Option<AccountId>,
}

/// The message types a server sends that this crate knows, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum KnownServerMessage {
    /// A status snapshot.
    Status(Status),
    /// A chat writer was created.
    #[serde(rename = "writerresult")]
    WriterResult(WriterResult),
    /// A viewer count.
    #[serde(rename = "viewcountresult")]
    ViewCountResult(ViewCountResult),
    /// A chat message.
    Text(ChatMessage),
    /// An emote.
    Emote(ChatMessage),
}

/// Anything a server sends.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMessage {
    /// A status snapshot.
    Status(Status),
    /// A chat writer was created.
    WriterResult(WriterResult),
    /// A viewer count.
    ViewCountResult(ViewCountResult),
    /// A chat message.
    Text(ChatMessage),
    /// An emote.
    Emote(ChatMessage),
    /// A type this crate does not know, passed through untouched.
    Unknown {
        /// The message's `type`.
        kind: String,
    },
}

/// Why a server frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame is not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// The frame is JSON but not an object with a string `type`.
    #[error("not a multistreamer message: {0}")]
    NoType(String),
    /// A known type whose fields have the wrong shape.
    #[error("malformed {kind} message: {error}")]
    BadFields {
        /// The message type.
        kind: String,
        /// What serde said.
        error: String,
    },
}

impl ServerMessage {
    /// Reads one text frame; returns the typed message and the wire JSON.
    pub fn parse(text: &str) -> Result<(ServerMessage, Value), WireError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| WireError::NotJson(e.to_string()))?;
        let msg = ServerMessage::from_value(&value)?;
        Ok((msg, value))
    }

    /// Reads one message from its JSON value.
    pub fn from_value(value: &Value) -> Result<ServerMessage, WireError> {
        let Some(kind) = value.get("type").and_then(Value::as_str) else {
            return Err(WireError::NoType(if value.is_object() {
                "the object has no string \"type\"".to_owned()
            } else {
                format!("expected an object, got {}", json_kind(value))
            }));
        };
        match kind {
            "status" | "writerresult" | "viewcountresult" | "text" | "emote" => {
                let known =
                    KnownServerMessage::deserialize(value).map_err(|e| WireError::BadFields {
                        kind: kind.to_owned(),
                        error: e.to_string(),
                    })?;
                Ok(match known {
                    KnownServerMessage::Status(s) => ServerMessage::Status(s),
                    KnownServerMessage::WriterResult(w) => ServerMessage::WriterResult(w),
                    KnownServerMessage::ViewCountResult(v) => ServerMessage::ViewCountResult(v),
                    KnownServerMessage::Text(m) => ServerMessage::Text(m),
                    KnownServerMessage::Emote(m) => ServerMessage::Emote(m),
                })
            }
            other => Ok(ServerMessage::Unknown {
                kind: other.to_owned(),
            }),
        }
    }

    /// The message's `type` on the wire.
    pub fn type_name(&self) -> &str {
        match self {
            ServerMessage::Status(_) => "status",
            ServerMessage::WriterResult(_) => "writerresult",
            ServerMessage::ViewCountResult(_) => "viewcountresult",
            ServerMessage::Text(_) => "text",
            ServerMessage::Emote(_) => "emote",
            ServerMessage::Unknown { kind } => kind,
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An outgoing `text` or `emote` message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingChat {
    /// The account to send from.
    pub account_id: AccountId,
    /// The stream account to send to.
    pub cur_stream_account_id: AccountId,
    /// The text; `/msg user ...` sends a private message.
    pub text: String,
}

/// An outgoing `writer` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterRequest {
    /// The account you want to send messages from.
    pub account_id: AccountId,
    /// The account you want to send messages to.
    pub cur_stream_account_id: AccountId,
}

/// Anything a client sends, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    /// Ask for a status message (`{"type":"status"}`).
    Status,
    /// Ask for a chat writer.
    Writer(WriterRequest),
    /// Ask for the viewer count (`{"type":"viewcount"}`).
    #[serde(rename = "viewcount")]
    ViewCount,
    /// Send a chat message.
    Text(OutgoingChat),
    /// Send an emote.
    Emote(OutgoingChat),
}

impl ClientMessage {
    /// The JSON text to put in a WebSocket frame.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Splits `/msg user rest` into `(user, rest)`; `None` for an ordinary message.
pub fn private_target(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("/msg ")?;
    let rest = rest.trim_start();
    let (user, body) = rest.split_once(char::is_whitespace)?;
    if user.is_empty() {
        return None;
    }
    Some((user, body.trim_start()))
}

/// A chat frame (`text` or `emote`) read straight from its JSON text, borrowing the strings
/// that need no unescaping: the per-event fast path.
///
/// [`ChatFrame::parse`] accepts exactly what [`ServerMessage::parse`] reads as a text or emote
/// message, with the same values, or declines (`None`); it declines anything unusual (another
/// type, a repeated key, a `from` given as an array, any error) so that the general path decides
/// it and reports it in its own words.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChatFrame<'a> {
    /// `emote` rather than `text`.
    pub emote: bool,
    pub account_id: Option<AccountId>,
    pub network: Option<Cow<'a, str>>,
    pub from: UserFrame<'a>,
    pub to: Option<UserFrame<'a>>,
    pub text: Cow<'a, str>,
    pub markdown: Option<Cow<'a, str>>,
    pub stream_id: Option<u64>,
    pub timestamp: Option<i64>,
}

/// [`User`] borrowing its strings.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct UserFrame<'a> {
    pub id: Option<Cow<'a, str>>,
    pub name: Option<Cow<'a, str>>,
    pub picture: Option<Cow<'a, str>>,
}

impl<'a> ChatFrame<'a> {
    /// The chat message in `text`, when it is a well-formed `text` or `emote` message this
    /// fast path can read; `None` for anything else.
    pub(crate) fn parse(text: &'a str) -> Option<ChatFrame<'a>> {
        let frame: Option<ChatFrame<'a>> =
            serde_json::from_str::<ChatFrameOrOther<'a>>(text).ok()?.0;
        frame
    }

    /// [`ChatFrame::parse`] of a frame already read into a [`Value`], borrowing from it.
    pub(crate) fn from_value(value: &'a Value) -> Option<ChatFrame<'a>> {
        ChatFrameOrOther::deserialize(value).ok()?.0
    }

    /// The owned message, for the callers that want the typed message.
    pub(crate) fn to_message(&self) -> ServerMessage {
        let m = ChatMessage {
            account_id: self.account_id,
            network: owned(&self.network),
            from: self.from.to_user(),
            to: self.to.as_ref().map(UserFrame::to_user),
            text: self.text.clone().into_owned(),
            markdown: owned(&self.markdown),
            stream_id: self.stream_id,
            timestamp: self.timestamp,
        };
        if self.emote {
            ServerMessage::Emote(m)
        } else {
            ServerMessage::Text(m)
        }
    }

    /// A borrowed view of an owned message.
    pub(crate) fn of(emote: bool, m: &'a ChatMessage) -> ChatFrame<'a> {
        ChatFrame {
            emote,
            account_id: m.account_id,
            network: borrowed(&m.network),
            from: UserFrame::of(&m.from),
            to: m.to.as_ref().map(UserFrame::of),
            text: Cow::Borrowed(&m.text),
            markdown: borrowed(&m.markdown),
            stream_id: m.stream_id,
            timestamp: m.timestamp,
        }
    }
}

impl<'a> UserFrame<'a> {
    fn to_user(&self) -> User {
        User {
            id: owned(&self.id),
            name: owned(&self.name),
            picture: owned(&self.picture),
        }
    }

    fn of(u: &'a User) -> UserFrame<'a> {
        UserFrame {
            id: borrowed(&u.id),
            name: borrowed(&u.name),
            picture: borrowed(&u.picture),
        }
    }
}

fn owned(s: &Option<Cow<'_, str>>) -> Option<String> {
    s.as_deref().map(str::to_owned)
}

fn borrowed(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

/// A top-level object: `Some` chat frame, or `None` for an object of another `type`.
struct ChatFrameOrOther<'a>(Option<ChatFrame<'a>>);

/// A JSON string, borrowed from the input when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Any JSON value, checked exactly as parsing it into a [`Value`] would check it (nesting
/// limit, number range, escapes) but kept nowhere.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Checked;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
                while seq.next_element::<Checked>()?.is_some() {}
                Ok(Checked)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
                while map.next_entry::<Checked, Checked>()?.is_some() {}
                Ok(Checked)
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or a number, as [`StrOrNum`] reads it (the same variant for the same input),
/// borrowing the string.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                // The untagged StrOrNum tries Int before UInt.
                Ok(i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
        }
        d.deserialize_any(V)
    }
}

impl From<StrOrNum> for Scalar<'_> {
    fn from(v: StrOrNum) -> Self {
        match v {
            StrOrNum::Str(s) => Scalar::Str(Cow::Owned(s)),
            StrOrNum::Int(i) => Scalar::Int(i),
            StrOrNum::UInt(u) => Scalar::UInt(u),
            StrOrNum::Float(f) => Scalar::Float(f),
        }
    }
}

impl<'a> Scalar<'a> {
    /// As a user id: a string as it is, a number in decimal.
    fn into_text(self) -> Cow<'a, str> {
        match self {
            Scalar::Str(s) => s,
            Scalar::Int(i) => Cow::Owned(i.to_string()),
            Scalar::UInt(u) => Cow::Owned(u.to_string()),
            Scalar::Float(f) => Cow::Owned(f.to_string()),
        }
    }

    /// As an id: a whole non-negative number, or a string holding one.
    fn into_id<E: de::Error>(self) -> Result<u64, E> {
        match self {
            Scalar::UInt(u) => Ok(u),
            Scalar::Int(i) => u64::try_from(i).map_err(|_| E::custom(format!("negative id {i}"))),
            Scalar::Float(f) if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => Ok(f as u64),
            Scalar::Float(f) => Err(E::custom(format!("id {f} is not a whole number"))),
            Scalar::Str(s) => s
                .trim()
                .parse()
                .map_err(|_| E::custom(format!("id {s:?} is not a number"))),
        }
    }

    /// As milliseconds since the epoch.
    fn into_millis<E: de::Error>(self) -> Result<i64, E> {
        Ok(match self {
            Scalar::Int(i) => i,
            Scalar::UInt(u) => i64::try_from(u).map_err(E::custom)?,
            Scalar::Float(f) if f.is_finite() => f as i64,
            Scalar::Float(f) => return Err(E::custom(format!("bad timestamp {f}"))),
            Scalar::Str(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| E::custom(format!("timestamp {s:?} is not a number")))?
                as i64,
        })
    }
}

/// Fails on a key seen before: the general path then decides (the last one wins there).
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, key: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(key));
    }
    *slot = Some(value);
    Ok(())
}

/// `Option<Scalar>` as `Option<StrOrNum>` reads it (`null` is `None`).
fn opt_scalar<'de, A: de::MapAccess<'de>>(map: &mut A) -> Result<Option<Scalar<'de>>, A::Error> {
    map.next_value::<Option<Scalar<'de>>>()
}

fn opt_str<'de, A: de::MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    Ok(map.next_value::<Option<Str<'de>>>()?.map(|s| s.0))
}

impl<'de> Deserialize<'de> for UserFrame<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = UserFrame<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a user object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut id, mut name, mut picture) = (None, None, None);
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key.0 {
                        "id" => once(&mut id, opt_scalar(&mut map)?, "id")?,
                        "name" => once(&mut name, opt_str(&mut map)?, "name")?,
                        "picture" => once(&mut picture, opt_str(&mut map)?, "picture")?,
                        _ => {
                            map.next_value::<Checked>()?;
                        }
                    }
                }
                Ok(UserFrame {
                    id: id.flatten().map(Scalar::into_text),
                    name: name.flatten(),
                    picture: picture.flatten(),
                })
            }
        }
        d.deserialize_struct("User", &["id", "name", "picture"], V)
    }
}

impl<'de> Deserialize<'de> for ChatFrameOrOther<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ChatFrameOrOther<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a multistreamer message object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut kind: Option<Cow<'de, str>> = None;
                let (mut account_id, mut network, mut from, mut to) = (None, None, None, None);
                let (mut text, mut markdown, mut stream_id, mut timestamp) =
                    (None, None, None, None);
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key.0 {
                        "type" => once(&mut kind, map.next_value::<Str<'de>>()?.0, "type")?,
                        "account_id" => {
                            once(&mut account_id, opt_scalar(&mut map)?, "account_id")?;
                        }
                        "network" => once(&mut network, opt_str(&mut map)?, "network")?,
                        "from" => once(&mut from, map.next_value::<UserFrame<'de>>()?, "from")?,
                        "to" => once(&mut to, map.next_value::<Option<UserFrame<'de>>>()?, "to")?,
                        "text" => once(&mut text, map.next_value::<Str<'de>>()?.0, "text")?,
                        "markdown" => once(&mut markdown, opt_str(&mut map)?, "markdown")?,
                        "stream_id" => once(&mut stream_id, opt_scalar(&mut map)?, "stream_id")?,
                        "timestamp" => once(&mut timestamp, opt_scalar(&mut map)?, "timestamp")?,
                        _ => {
                            map.next_value::<Checked>()?;
                        }
                    }
                }
                let emote = match kind.as_deref() {
                    Some("text") => false,
                    Some("emote") => true,
                    Some(_) => return Ok(ChatFrameOrOther(None)),
                    None => return Err(de::Error::missing_field("type")),
                };
                Ok(ChatFrameOrOther(Some(ChatFrame {
                    emote,
                    account_id: account_id.flatten().map(Scalar::into_id).transpose()?,
                    network: network.flatten(),
                    from: from.unwrap_or_default(),
                    to: to.flatten(),
                    text: text.unwrap_or_default(),
                    markdown: markdown.flatten(),
                    stream_id: stream_id.flatten().map(Scalar::into_id).transpose()?,
                    timestamp: timestamp.flatten().map(Scalar::into_millis).transpose()?,
                })))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<StrOrNum>::deserialize(d)?.map(|v| Scalar::from(v).into_text().into_owned()))
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Scalar::from(StrOrNum::deserialize(d)?).into_id()
}

fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<StrOrNum>::deserialize(d)?
        .map(|v| Scalar::from(v).into_id())
        .transpose()
}

fn accounts<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<AccountId, Account>, D::Error> {
    let by_key = Option::<BTreeMap<String, Account>>::deserialize(d)?.unwrap_or_default();
    by_key
        .into_iter()
        .map(|(k, a)| {
            let id = k
                .trim()
                .parse::<AccountId>()
                .map_err(|_| de::Error::custom(format!("account id {k:?} is not a number")))?;
            Ok((id, a))
        })
        .collect()
}

fn opt_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<StrOrNum>::deserialize(d)?
        .map(|v| Scalar::from(v).into_millis())
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const STREAM_GOES_LIVE: &str = r#"{
"type" : "status",
"status" : { "data_pulling" : false, "data_pushing" : true, "data_incoming" : true },
"accounts" : {
"14" : { "live" : true, "writable" : true, "name" : "jprjrdev",
  "network" : { "displayName" : "Twitch", "name" : "twitch" }, "ready" : true,
  "http_url" : "https://twitch.tv/jprjrdev" },
"17" : { "network" : { "displayName" : "Twitch", "name" : "twitch" }, "writable" : true,
  "name" : "gamethattunedev", "ready" : false, "live" : false },
"0" : { "name" : "john", "ready" : true, "network" : { "displayName" : "IRC", "name" : "irc" },
  "live" : false, "writable" : true }
}}"#;

    #[test]
    fn documented_status_parses() {
        let (msg, raw) = ServerMessage::parse(STREAM_GOES_LIVE).unwrap();
        let ServerMessage::Status(s) = msg else {
            panic!("not a status: {msg:?}")
        };
        assert_eq!(raw["type"], "status");
        assert!(s.status.data_pushing && s.status.data_incoming && !s.status.data_pulling);
        assert_eq!(s.accounts.len(), 3);
        let a14 = s.account(14).unwrap();
        assert!(a14.live && a14.writable && a14.ready);
        assert_eq!(a14.network.display_name, "Twitch");
        assert_eq!(a14.http_url.as_deref(), Some("https://twitch.tv/jprjrdev"));
        let a17 = s.account(17).unwrap();
        assert!(a17.writable && !a17.ready && !a17.live);
        assert_eq!(a17.http_url, None);
        assert_eq!(s.account(0).unwrap().network.name, "irc");
        assert_eq!(
            s.summary(),
            "live: jprjrdev (Twitch); pushing, incoming; 3 accounts"
        );
    }

    #[test]
    fn documented_chat_messages_parse() {
        let (m, _) = ServerMessage::parse(
            r#"{"type":"text","account_id":0,"network":"irc","from":{"id":2,"name":"test"},
            "to":{"name":"john","id":1},"text":"hey ban this guy","markdown":"hey ban this guy"}"#,
        )
        .unwrap();
        let ServerMessage::Text(m) = m else { panic!() };
        assert!(m.is_private());
        assert_eq!(m.from.id.as_deref(), Some("2"));
        assert_eq!(m.to.as_ref().unwrap().id.as_deref(), Some("1"));
        assert_eq!(m.account_id, Some(0));

        let (m, _) = ServerMessage::parse(
            r#"{"type":"emote","stream_id":21,"account_id":14,"network":"twitch",
            "text":"is loving this","markdown":"is loving this",
            "from":{"name":"gamethattunedev","id":"146521877"},"timestamp":1500000000123}"#,
        )
        .unwrap();
        let ServerMessage::Emote(m) = m else { panic!() };
        assert!(!m.is_private());
        assert_eq!(m.from.id.as_deref(), Some("146521877"));
        assert_eq!(m.stream_id, Some(21));
        assert_eq!(m.timestamp, Some(1_500_000_000_123));
    }

    #[test]
    fn writer_and_viewcount_parse() {
        let (m, _) = ServerMessage::parse(
            r#"{"type":"writerresult","account_id":17,"cur_stream_account_id":14}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            ServerMessage::WriterResult(WriterResult {
                account_id: 17,
                cur_stream_account_id: 14
            })
        );
        let (m, _) = ServerMessage::parse(
            r#"{"type":"viewcountresult","viewer_count":0,"stream_id":21,"account_id":14}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            ServerMessage::ViewCountResult(ViewCountResult {
                viewer_count: 0,
                stream_id: Some(21),
                account_id: Some(14)
            })
        );
    }

    #[test]
    fn unknown_types_pass_through() {
        let (m, raw) = ServerMessage::parse(r#"{"type":"hostmode","x":1}"#).unwrap();
        assert_eq!(
            m,
            ServerMessage::Unknown {
                kind: "hostmode".into()
            }
        );
        assert_eq!(raw["x"], 1);
        assert_eq!(m.type_name(), "hostmode");
    }

    #[test]
    fn bad_frames_are_clear_errors() {
        let e = ServerMessage::parse("{\"type\":\"text\",").unwrap_err();
        assert!(matches!(e, WireError::NotJson(_)), "{e}");
        let e = ServerMessage::parse("[1,2]").unwrap_err();
        assert!(
            e.to_string().contains("expected an object, got an array"),
            "{e}"
        );
        let e = ServerMessage::parse("{\"kind\":1}").unwrap_err();
        assert!(e.to_string().contains("no string \"type\""), "{e}");
        let e = ServerMessage::parse(r#"{"type":"writerresult","account_id":"x"}"#).unwrap_err();
        assert!(
            e.to_string().starts_with("malformed writerresult message"),
            "{e}"
        );
    }

    #[test]
    fn client_messages_match_the_document() {
        assert_eq!(ClientMessage::Status.to_json(), r#"{"type":"status"}"#);
        assert_eq!(
            ClientMessage::ViewCount.to_json(),
            r#"{"type":"viewcount"}"#
        );
        let w: Value = serde_json::from_str(
            &ClientMessage::Writer(WriterRequest {
                account_id: 17,
                cur_stream_account_id: 14,
            })
            .to_json(),
        )
        .unwrap();
        assert_eq!(
            w,
            json!({"type":"writer","account_id":17,"cur_stream_account_id":14})
        );
        let t: Value = serde_json::from_str(
            &ClientMessage::Emote(OutgoingChat {
                account_id: 0,
                cur_stream_account_id: 0,
                text: "waves".into(),
            })
            .to_json(),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"type":"emote","account_id":0,"cur_stream_account_id":0,"text":"waves"})
        );
        // And they read back.
        let back: ClientMessage = serde_json::from_value(
            json!({"type":"text","account_id":0,"cur_stream_account_id":0,"text":"x"}),
        )
        .unwrap();
        assert!(matches!(back, ClientMessage::Text(_)));
    }

    #[test]
    fn private_target_splits_msg_commands() {
        assert_eq!(
            private_target("/msg somebody hey this is a private message"),
            Some(("somebody", "hey this is a private message"))
        );
        assert_eq!(private_target("hello"), None);
        assert_eq!(private_target("/msg nobody"), None);
        assert_eq!(private_target("/msgx a b"), None);
    }

    #[test]
    fn ids_accept_strings_and_numbers() {
        let m: ChatMessage = serde_json::from_value(
            json!({"account_id":"14","stream_id":21.0,"timestamp":"1500000000000","from":{"id":7}}),
        )
        .unwrap();
        assert_eq!(m.account_id, Some(14));
        assert_eq!(m.stream_id, Some(21));
        assert_eq!(m.timestamp, Some(1_500_000_000_000));
        assert_eq!(m.from.id.as_deref(), Some("7"));
    }

    /// A JSON string literal of `s`, escaping some characters that need no escape (`\u`
    /// forms, `\/`) when `odd`.
    fn lit(s: &str, odd: bool) -> String {
        if !odd {
            return serde_json::to_string(s).unwrap();
        }
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                'a' | 'é' => out.push_str(&format!("\\u{:04x}", c as u32)),
                '/' => out.push_str("\\/"),
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    fn text_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-zA-Z0-9 ]{0,12}",
            ".{0,16}",
            "[aé/\"\\\\\t\n日🦊 ]{0,10}",
            Just("text".to_owned()),
        ]
    }

    /// A JSON value of some shape: mostly what a field could plausibly hold, sometimes what
    /// it could not.
    fn value_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            (text_strategy(), any::<bool>()).prop_map(|(s, odd)| lit(&s, odd)),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (0u64..100).prop_map(|n| n.to_string()),
            prop_oneof![
                Just("21.0"),
                Just("-0"),
                Just("1.5"),
                Just("1e3"),
                Just("1e400"),
                Just("-1e400"),
                Just("18446744073709551616"),
                Just("1.8e19"),
                Just("0.0"),
                Just("\"14\""),
                Just("\" 14 \""),
                Just("\"-3\""),
                Just("\"1.5e12\""),
                Just("\"x\""),
                Just("\"\\ud800\""),
                Just("null"),
                Just("true"),
                Just("false"),
                Just("[]"),
                Just("{}"),
            ]
            .prop_map(str::to_owned),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("id"),
                            Just("name"),
                            Just("picture"),
                            Just("x"),
                            Just("日")
                        ],
                        inner
                    ),
                    0..4
                )
                .prop_map(|kv| format!(
                    "{{{}}}",
                    kv.iter()
                        .map(|(k, v)| format!("\"{k}\":{v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                )),
            ]
        })
    }

    /// A user object (or something else where one is expected).
    fn user_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let field = prop_oneof![
            value_strategy().prop_map(|v| format!("\"id\":{v}")),
            (text_strategy(), any::<bool>()).prop_map(|(s, o)| format!("\"id\":{}", lit(&s, o))),
            (0u64..1000).prop_map(|n| format!("\"id\":{n}")),
            (text_strategy(), any::<bool>()).prop_map(|(s, o)| format!("\"name\":{}", lit(&s, o))),
            (text_strategy(), any::<bool>())
                .prop_map(|(s, o)| format!("\"picture\":{}", lit(&s, o))),
            value_strategy().prop_map(|v| format!("\"name\":{v}")),
            value_strategy().prop_map(|v| format!("\"extra\":{v}")),
            Just("\"n\\u0061me\":\"escaped key\"".to_owned()),
        ];
        prop_oneof![
            8 => proptest::collection::vec(field, 0..5).prop_map(|f| format!("{{{}}}", f.join(","))),
            1 => value_strategy(),
        ]
    }

    /// A message object as text: chat fields of many shapes, unknown fields, repeated keys,
    /// odd whitespace.
    fn message_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let kind = prop_oneof![
            6 => Just("\"text\""), 4 => Just("\"emote\""), 1 => Just("\"t\\u0065xt\""),
            1 => Just("\"status\""), 1 => Just("\"hostmode\""), 1 => Just("7"), 1 => Just("null"),
        ];
        let field = prop_oneof![
            (text_strategy(), any::<bool>()).prop_map(|(s, o)| format!("\"text\":{}", lit(&s, o))),
            (text_strategy(), any::<bool>())
                .prop_map(|(s, o)| format!("\"markdown\":{}", lit(&s, o))),
            (text_strategy(), any::<bool>())
                .prop_map(|(s, o)| format!("\"network\":{}", lit(&s, o))),
            (0u64..100).prop_map(|n| format!("\"account_id\":{n}")),
            (0u64..100).prop_map(|n| format!("\"stream_id\":{n}")),
            (0i64..4_000_000_000_000).prop_map(|n| format!("\"timestamp\":{n}")),
            user_strategy().prop_map(|u| format!("\"from\":{u}")),
            user_strategy().prop_map(|u| format!("\"to\":{u}")),
            Just("\"to\":null".to_owned()),
            prop_oneof![
                Just("text"),
                Just("markdown"),
                Just("network"),
                Just("account_id"),
                Just("stream_id"),
                Just("timestamp"),
                Just("from"),
                Just("to"),
                Just("status"),
                Just("accounts"),
                Just("viewer_count"),
                Just("cur_stream_account_id"),
                Just("unknown"),
                Just("日本")
            ]
            .prop_flat_map(|k| value_strategy().prop_map(move |v| format!("\"{k}\":{v}"))),
        ];
        (
            kind,
            proptest::collection::vec(field, 0..9),
            0usize..10,
            prop_oneof![Just(""), Just(" "), Just("\n\t")],
        )
            .prop_map(|(kind, mut fields, at, ws)| {
                let at = at.min(fields.len());
                fields.insert(at, format!("\"type\":{kind}"));
                format!("{ws}{{{ws}{}{ws}}}{ws}", fields.join(&format!(",{ws}")))
            })
    }

    /// The id as `chat_id` computed it before it streamed the key into the hash.
    fn chat_id_reference(stream: u64, emote: bool, m: &ChatMessage, received_ms: i64) -> String {
        let to = m.to.as_ref().map(|t| json!([t.id, t.name]));
        let key = json!([
            stream,
            if emote { "emote" } else { "text" },
            m.account_id,
            m.from.id,
            m.from.name,
            to,
            m.timestamp.unwrap_or(received_ms),
            m.text,
        ]);
        format!(
            "multistreamer:{stream}:{:016x}",
            crate::map::fnv1a64(key.to_string().as_bytes())
        )
    }

    #[test]
    fn the_fast_path_reads_the_documented_messages_and_declines_the_rest() {
        let m = ChatFrame::parse(
            r#"{"type":"emote","stream_id":21,"account_id":"14","network":"twitch",
            "text":"is \"loving\" this 日","from":{"name":"g","id":146521877,"x":[1,{"y":null}]},
            "timestamp":1500000000123.0,"future":{"a":[1e300]}}"#,
        )
        .unwrap();
        assert!(m.emote);
        assert_eq!(m.text, "is \"loving\" this 日");
        assert!(matches!(m.text, Cow::Owned(_)), "unescaped: owned");
        assert!(
            matches!(m.network, Some(Cow::Borrowed("twitch"))),
            "plain: borrowed"
        );
        assert_eq!(m.from.id.as_deref(), Some("146521877"));
        assert_eq!(m.timestamp, Some(1_500_000_000_123));
        for declined in [
            r#"{"type":"status","status":{}}"#,
            r#"{"type":"text","text":"a","text":"b"}"#,
            r#"{"type":"text","from":["1","a"]}"#,
            r#"{"type":"text","x":1e400}"#,
            r#"["text"]"#,
            r#"{"text":"no type"}"#,
            "{\"type\":\"text\",",
        ] {
            assert_eq!(ChatFrame::parse(declined), None, "{declined}");
        }
        let deep = format!(
            r#"{{"type":"text","x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(
            ChatFrame::parse(&deep),
            None,
            "too deep for a Value: declined"
        );
        assert!(ServerMessage::parse(&deep).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = ServerMessage::parse(&s);
        }

        #[test]
        fn msg_commands_split(user in "[A-Za-z0-9_]{1,20}", body in "[A-Za-z0-9][A-Za-z0-9 .,!?é日]{0,60}") {
            let text = format!("/msg {user} {body}");
            proptest::prop_assert_eq!(private_target(&text), Some((user.as_str(), body.as_str())));
            // Ordinary text is never a private message.
            proptest::prop_assert_eq!(private_target(&body), None);
        }

        #[test]
        fn the_fast_path_agrees_with_the_general_one(text in message_strategy()) {
            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                if let Some(fast) = ChatFrame::from_value(&value) {
                    let general = ServerMessage::from_value(&value);
                    proptest::prop_assert_eq!(Ok(fast.to_message()), general, "{}", text);
                }
            }
            let fast = ChatFrame::parse(&text);
            let general = ServerMessage::parse(&text);
            if let Some(fast) = fast {
                let Ok((general, _)) = general else {
                    return Err(proptest::test_runner::TestCaseError::fail(format!(
                        "the fast path read {text} as {fast:?}, the general one refused it: {general:?}"
                    )));
                };
                proptest::prop_assert_eq!(fast.to_message(), general, "{}", text);
            }
        }

        #[test]
        fn plain_chat_frames_take_the_fast_path(
            emote in proptest::bool::ANY,
            text in text_strategy(),
            name in text_strategy(),
            odd in proptest::bool::ANY,
            account in proptest::option::of(0u64..100),
            ts in proptest::option::of(0i64..4_000_000_000_000),
        ) {
            let mut fields = vec![
                format!("\"type\":\"{}\"", if emote { "emote" } else { "text" }),
                format!("\"text\":{}", lit(&text, odd)),
                format!("\"from\":{{\"name\":{},\"id\":7}}", lit(&name, odd)),
            ];
            fields.extend(account.map(|a| format!("\"account_id\":{a}")));
            fields.extend(ts.map(|t| format!("\"timestamp\":{t}")));
            let json = format!("{{{}}}", fields.join(","));
            let fast = ChatFrame::parse(&json);
            proptest::prop_assert!(fast.is_some(), "{}", json);
            let (general, _) = ServerMessage::parse(&json).unwrap();
            proptest::prop_assert_eq!(fast.unwrap().to_message(), general);
        }

        #[test]
        fn chat_ids_are_what_they_were(
            stream in 0u64..1_000_000,
            emote in proptest::bool::ANY,
            text in ".{0,40}",
            from_id in proptest::option::of(".{0,8}"),
            from_name in proptest::option::of(".{0,8}"),
            to in proptest::option::of((proptest::option::of("[a-z0-9]{0,6}"), proptest::option::of(".{0,6}"))),
            account_id in proptest::option::of(proptest::num::u64::ANY),
            ts in proptest::option::of(proptest::num::i64::ANY),
            received in proptest::num::i64::ANY,
        ) {
            let m = ChatMessage {
                account_id,
                network: None,
                from: User { id: from_id, name: from_name, picture: None },
                to: to.map(|(id, name)| User { id, name, picture: None }),
                text,
                markdown: None,
                stream_id: None,
                timestamp: ts,
            };
            proptest::prop_assert_eq!(
                crate::map::chat_id(stream, emote, &m, received),
                chat_id_reference(stream, emote, &m, received)
            );
        }

        #[test]
        fn chat_round_trips(text in ".{0,80}", id in proptest::option::of("[a-z0-9]{1,10}"),
                            ts in proptest::option::of(0i64..4_000_000_000_000), acct in 0u64..1000) {
            let m = ChatMessage {
                account_id: Some(acct),
                network: Some("twitch".into()),
                from: User { id, name: Some("n".into()), picture: None },
                to: None,
                text,
                markdown: None,
                stream_id: Some(21),
                timestamp: ts,
            };
            let json = serde_json::to_string(&KnownServerMessage::Text(m.clone())).unwrap();
            let (back, _) = ServerMessage::parse(&json).unwrap();
            proptest::prop_assert_eq!(back, ServerMessage::Text(m));
        }
    }
}
