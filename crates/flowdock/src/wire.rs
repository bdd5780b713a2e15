//! Typed wire messages of the Flowdock streaming and REST APIs.
//!
//! Every message on both transports (and in the REST `messages` array) is one JSON object with
//! a common envelope ([`WireMessage`]) whose `content` depends on `event`. The envelope is read
//! leniently — real traffic has numeric and string ids, `user` as `"1"` or `1`, `sent` as epoch
//! milliseconds or an RFC 3339 string — and [`WireMessage::payload`] gives the typed content.
//! Unknown event types are [`Payload::Other`], never an error.

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
        let c = &self.content;
        let typed = match self.event.as_str() {
            "message" => Some(Payload::Message(text_of(c))),
            "line" => Some(Payload::Line(text_of(c))),
            "status" => Some(Payload::Status(text_of(c))),
            "comment" => serde_json::from_value(c.clone()).ok().map(Payload::Comment),
            "message-edit" => serde_json::from_value(c.clone())
                .ok()
                .map(Payload::MessageEdit),
            "tag-change" => serde_json::from_value(c.clone())
                .ok()
                .map(Payload::TagChange),
            "action" => serde_json::from_value(c.clone()).ok().map(Payload::Action),
            "file" => serde_json::from_value(c.clone()).ok().map(Payload::File),
            "activity.user" => Some(Payload::UserActivity(c.clone())),
            "activity" => Some(Payload::Activity),
            "discussion" => Some(Payload::Discussion),
            _ => None,
        };
        typed.unwrap_or_else(|| Payload::Other(c.clone()))
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
