use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Timestamp;

/// The version of the JSON output schema this crate produces (`docs/event-schema.md`).
pub const SCHEMA_VERSION: u32 = 1;

/// The service a source speaks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Service {
    /// Campfire streaming API.
    Campfire,
    /// Flowdock streaming API.
    Flowdock,
    /// Multistreamer WebSocket API.
    Multistreamer,
    /// Ustream Social Stream.
    Ustream,
    /// StreamIn source API (write only).
    Streamin,
    /// A source a user implemented, named by them.
    Other(String),
}

impl Service {
    /// The lowercase name used in configs and output.
    pub fn as_str(&self) -> &str {
        match self {
            Service::Campfire => "campfire",
            Service::Flowdock => "flowdock",
            Service::Multistreamer => "multistreamer",
            Service::Ustream => "ustream",
            Service::Streamin => "streamin",
            Service::Other(name) => name,
        }
    }

    /// Parses a service name; names Tributary does not know become [`Service::Other`].
    pub fn parse(name: &str) -> Self {
        match name {
            "campfire" => Service::Campfire,
            "flowdock" => Service::Flowdock,
            "multistreamer" => Service::Multistreamer,
            "ustream" => Service::Ustream,
            "streamin" => Service::Streamin,
            other => Service::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Service {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Service {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Service::parse(&name))
    }
}

/// What an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Kind {
    /// An ordinary chat message (also a threaded comment; see `refers_to`).
    Message,
    /// An emote ("/me waves").
    Emote,
    /// A pasted block of text.
    Paste,
    /// A file or upload shared in the room.
    Upload,
    /// Someone entered or joined the room.
    Enter,
    /// Someone left the room.
    Leave,
    /// The room's topic changed; `text` is the new topic.
    Topic,
    /// Someone was removed from the room.
    Kick,
    /// A user's presence or activity changed (not stored by the service).
    Presence,
    /// Any other notice from the service; `detail.type` names the service's own type.
    System,
    /// A stream or account status snapshot; the snapshot is in `detail`.
    Status,
    /// The number of viewers, in `viewers`.
    Viewers,
    /// An earlier message (`refers_to`) was edited; `text` is the new text.
    Edit,
    /// An earlier message (`refers_to`) was retracted and should be hidden.
    Retraction,
    /// The tags of an earlier message (`refers_to`) changed: `tags` were added and
    /// `tags_removed` were removed. Its text is not touched.
    TagChange,
    /// A user (`author`) is to be ignored from now on; consumers may hide earlier messages.
    Ignore,
    /// A user (`author`) is no longer ignored.
    Unignore,
    /// Messages may be missing between `gap.from` and `gap.to` (a reconnect without replay).
    Gap,
    /// A connection lifecycle change of a source (only with `--lifecycle`).
    Connection,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [Kind] = &[
        Kind::Message,
        Kind::Emote,
        Kind::Paste,
        Kind::Upload,
        Kind::Enter,
        Kind::Leave,
        Kind::Topic,
        Kind::Kick,
        Kind::Presence,
        Kind::System,
        Kind::Status,
        Kind::Viewers,
        Kind::Edit,
        Kind::Retraction,
        Kind::TagChange,
        Kind::Ignore,
        Kind::Unignore,
        Kind::Gap,
        Kind::Connection,
    ];

    /// The snake_case name used in the JSON output and in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Emote => "emote",
            Kind::Paste => "paste",
            Kind::Upload => "upload",
            Kind::Enter => "enter",
            Kind::Leave => "leave",
            Kind::Topic => "topic",
            Kind::Kick => "kick",
            Kind::Presence => "presence",
            Kind::System => "system",
            Kind::Status => "status",
            Kind::Viewers => "viewers",
            Kind::Edit => "edit",
            Kind::Retraction => "retraction",
            Kind::TagChange => "tag_change",
            Kind::Ignore => "ignore",
            Kind::Unignore => "unignore",
            Kind::Gap => "gap",
            Kind::Connection => "connection",
        }
    }

    /// Parses a kind name as written in configs.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == name)
    }

    /// Whether this kind carries something a person said (message, emote, paste, upload).
    pub fn is_chat(self) -> bool {
        matches!(
            self,
            Kind::Message | Kind::Emote | Kind::Paste | Kind::Upload
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who said something, or whom an event is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    /// The service's id for the user, when it has one.
    pub id: Option<String>,
    /// The display or user name, when known.
    pub name: Option<String>,
    /// The network the user is on, for services that bridge several (twitch, irc, twitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

impl Author {
    /// An author with an id and a name.
    pub fn new(id: impl Into<Option<String>>, name: impl Into<Option<String>>) -> Self {
        Author {
            id: id.into(),
            name: name.into(),
            network: None,
        }
    }

    /// No known author (service notices).
    pub fn none() -> Self {
        Author::default()
    }

    /// The same author on a network.
    pub fn on_network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into());
        self
    }
}

/// The time span a [`Kind::Gap`] event says may be missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapSpan {
    /// The last moment the source was known to be delivering.
    pub from: Timestamp,
    /// When the new connection was established.
    pub to: Timestamp,
}

/// The state of a source in a [`Kind::Connection`] event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConnectionState {
    /// A connection attempt started.
    Connecting,
    /// The connection is up.
    Connected,
    /// The connection ended; `reason` and `retry_in_ms` say why and when the next try is.
    Disconnected,
    /// The source stopped for good; `reason` says why.
    GaveUp,
}

/// Details of a [`Kind::Connection`] event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// What happened.
    pub state: ConnectionState,
    /// Which attempt this is (1 for the first connection).
    pub attempt: u32,
    /// Why the connection ended, for `disconnected` and `gave_up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The delay before the next attempt, for `disconnected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
}

/// One normalized event from any source: the unit of Tributary's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The configured name of the source that produced it.
    pub source: String,
    /// The service of that source.
    pub service: Service,
    /// What the event is.
    pub kind: Kind,
    /// Stable id, unique within the source; the same message always gets the same id.
    pub id: String,
    /// The room, flow, stream or channel it happened in.
    pub room: String,
    /// Who said it or whom it is about.
    pub author: Author,
    /// Plain text (may be empty).
    pub text: String,
    /// Markdown rendering, where the service gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    /// When it happened, in UTC.
    #[serde(serialize_with = "crate::time::serialize")]
    pub at: Timestamp,
    /// Whether it was a private message.
    #[serde(default, skip_serializing_if = "is_false")]
    pub private: bool,
    /// The recipient of a private message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Author>,
    /// The id of the message this one edits, retracts or replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refers_to: Option<String>,
    /// Tags attached to the message (for a [`Kind::TagChange`]: the tags added).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The tags a [`Kind::TagChange`] removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_removed: Vec<String>,
    /// The viewer count of a [`Kind::Viewers`] event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewers: Option<u64>,
    /// The span of a [`Kind::Gap`] event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<GapSpan>,
    /// The lifecycle details of a [`Kind::Connection`] event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionInfo>,
    /// Service-specific structured details (the service's own type, a status snapshot, a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// The message's id on the service, when it differs from `id` or is useful on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_id: Option<String>,
    /// The original wire object; kept only when the user asks for it (`--raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<serde_json::Value>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Event {
    /// A new event with the required fields; the optional ones start empty.
    pub fn new(
        source: impl Into<String>,
        service: Service,
        kind: Kind,
        id: impl Into<String>,
        room: impl Into<String>,
        at: Timestamp,
    ) -> Self {
        Event {
            source: source.into(),
            service,
            kind,
            id: id.into(),
            room: room.into(),
            author: Author::none(),
            text: String::new(),
            markdown: None,
            at,
            private: false,
            to: None,
            refers_to: None,
            tags: Vec::new(),
            tags_removed: Vec::new(),
            viewers: None,
            gap: None,
            connection: None,
            detail: None,
            native_id: None,
            raw: None,
        }
    }

    /// Sets the author.
    pub fn with_author(mut self, author: Author) -> Self {
        self.author = author;
        self
    }

    /// Sets the text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = text.into();
        self
    }

    /// Sets the original wire object.
    pub fn with_raw(mut self, raw: serde_json::Value) -> Self {
        self.raw = Some(raw);
        self
    }

    /// Sets the service-specific details.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Sets the id of the message this one refers to.
    pub fn refers_to(mut self, id: impl Into<String>) -> Self {
        self.refers_to = Some(id.into());
        self
    }

    /// Serializes to one line of the output schema (no trailing newline).
    pub fn to_json_line(&self) -> String {
        // Every field is plain data with string keys; serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> Timestamp {
        chrono::Utc
            .with_ymd_and_hms(2009, 12, 1, 23, 44, 40)
            .unwrap()
    }

    fn sample(kind: Kind) -> Event {
        let mut e = Event::new("ops", Service::Campfire, kind, "campfire:1:5", "1", at())
            .with_author(Author::new(Some("7".to_owned()), Some("Jane".to_owned())))
            .with_text("hello");
        match kind {
            Kind::Viewers => e.viewers = Some(12),
            Kind::Gap => {
                e.gap = Some(GapSpan {
                    from: at(),
                    to: at(),
                })
            }
            Kind::Connection => {
                e.connection = Some(ConnectionInfo {
                    state: ConnectionState::Disconnected,
                    attempt: 2,
                    reason: Some("network error: reset".into()),
                    retry_in_ms: Some(1500),
                })
            }
            Kind::Edit | Kind::Retraction => e.refers_to = Some("campfire:1:4".into()),
            Kind::TagChange => {
                e.refers_to = Some("campfire:1:4".into());
                e.tags = vec!["added".into()];
                e.tags_removed = vec!["removed".into()];
            }
            _ => {}
        }
        e
    }

    /// Every kind serializes to the documented schema v1: the required fields with their types.
    #[test]
    fn every_kind_serializes_to_schema_v1() {
        for &kind in Kind::ALL {
            let e = sample(kind);
            let v: serde_json::Value = serde_json::from_str(&e.to_json_line()).unwrap();
            let o = v.as_object().unwrap();
            for key in [
                "source", "service", "kind", "id", "room", "author", "text", "at",
            ] {
                assert!(o.contains_key(key), "{kind}: missing {key}");
            }
            assert_eq!(o["kind"], kind.as_str());
            assert_eq!(o["service"], "campfire");
            assert_eq!(o["at"], "2009-12-01T23:44:40Z", "RFC 3339 UTC");
            let author = o["author"].as_object().unwrap();
            assert!(author.contains_key("id") && author.contains_key("name"));
            assert!(!o.contains_key("private"), "private only when true");
            assert!(!o.contains_key("raw"), "raw only on request");
            match kind {
                Kind::Viewers => assert_eq!(o["viewers"], 12),
                Kind::Gap => assert!(o["gap"]["from"].is_string() && o["gap"]["to"].is_string()),
                Kind::Connection => {
                    assert_eq!(o["connection"]["state"], "disconnected");
                    assert_eq!(o["connection"]["retry_in_ms"], 1500);
                }
                Kind::Edit | Kind::Retraction => assert_eq!(o["refers_to"], "campfire:1:4"),
                Kind::TagChange => {
                    assert_eq!(o["refers_to"], "campfire:1:4");
                    assert_eq!(o["tags"], serde_json::json!(["added"]));
                    assert_eq!(o["tags_removed"], serde_json::json!(["removed"]));
                }
                _ => assert!(!o.contains_key("tags_removed")),
            }
            // And it reads back to the same event.
            let back: Event = serde_json::from_value(v).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn private_and_raw_appear_when_set() {
        let mut e = sample(Kind::Message);
        e.private = true;
        e.to = Some(Author::new(Some("1".to_owned()), Some("john".to_owned())));
        e.raw = Some(serde_json::json!({"type": "TextMessage"}));
        let v: serde_json::Value = serde_json::from_str(&e.to_json_line()).unwrap();
        assert_eq!(v["private"], true);
        assert_eq!(v["to"]["name"], "john");
        assert_eq!(v["raw"]["type"], "TextMessage");
    }

    #[test]
    fn kind_and_service_names_round_trip() {
        for &k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(Kind::parse("nope"), None);
        for s in [
            "campfire",
            "flowdock",
            "multistreamer",
            "ustream",
            "streamin",
            "mine",
        ] {
            assert_eq!(Service::parse(s).as_str(), s);
        }
    }
}
