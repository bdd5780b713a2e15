//! Typed WebSocket messages, both directions, exactly as the multistreamer wiki documents them
//! (plus the fields NOTES.md says the real server sent: `timestamp`, `stream_id`,
//! `from.picture`).
//!
//! Every object carries a `type`. Server messages of a type this crate does not know pass
//! through as [`ServerMessage::Unknown`]; they are never an error.

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

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<StrOrNum>::deserialize(d)? {
        None => None,
        Some(StrOrNum::Str(s)) => Some(s),
        Some(StrOrNum::Int(i)) => Some(i.to_string()),
        Some(StrOrNum::UInt(u)) => Some(u.to_string()),
        Some(StrOrNum::Float(f)) => Some(f.to_string()),
    })
}

fn to_id<E: de::Error>(v: StrOrNum) -> Result<u64, E> {
    match v {
        StrOrNum::UInt(u) => Ok(u),
        StrOrNum::Int(i) => u64::try_from(i).map_err(|_| E::custom(format!("negative id {i}"))),
        StrOrNum::Float(f) if f >= 0.0 && f.fract() == 0.0 && f < 1.8e19 => Ok(f as u64),
        StrOrNum::Float(f) => Err(E::custom(format!("id {f} is not a whole number"))),
        StrOrNum::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| E::custom(format!("id {s:?} is not a number"))),
    }
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    to_id(StrOrNum::deserialize(d)?)
}

fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<StrOrNum>::deserialize(d)?.map(to_id).transpose()
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
    Ok(match Option::<StrOrNum>::deserialize(d)? {
        None => None,
        Some(StrOrNum::Int(i)) => Some(i),
        Some(StrOrNum::UInt(u)) => Some(i64::try_from(u).map_err(de::Error::custom)?),
        Some(StrOrNum::Float(f)) if f.is_finite() => Some(f as i64),
        Some(StrOrNum::Float(f)) => return Err(de::Error::custom(format!("bad timestamp {f}"))),
        Some(StrOrNum::Str(s)) => Some(
            s.trim()
                .parse::<f64>()
                .map_err(|_| de::Error::custom(format!("timestamp {s:?} is not a number")))?
                as i64,
        ),
    })
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
