//! The pure mapping from a Campfire [`Message`] to a [`chat_model::Event`].

use chat_model::{Author, Event, Kind, Service};
use serde_json::{Value, json};

use crate::wire::{Message, MessageType};

/// The stable event id of a Campfire message: `campfire:<room>:<message id>`.
///
/// The same message gets the same id whether it came from the live stream or a backfill, so
/// a supervisor can drop repeats after a reconnect.
pub fn event_id(room: u64, message_id: u64) -> String {
    format!("campfire:{room}:{message_id}")
}

/// The [`Kind`] a Campfire message type maps to.
///
/// * `TextMessage` and `TweetMessage` → [`Kind::Message`], `PasteMessage` → [`Kind::Paste`],
///   `UploadMessage` → [`Kind::Upload`];
/// * `EnterMessage` → [`Kind::Enter`], `LeaveMessage` → [`Kind::Leave`], `KickMessage` →
///   [`Kind::Kick`], `TopicChangeMessage` → [`Kind::Topic`], `IdleMessage` and
///   `UnidleMessage` → [`Kind::Presence`];
/// * everything else — sounds, advertisements, guest access, locks, conferences, system
///   notices, `TimestampMessage` clock ticks and unknown types — → [`Kind::System`], with the
///   Campfire type in `detail.type`.
///
/// `TimestampMessage` is a real, stored transcript entry with its own id (Campfire writes one
/// every few minutes of activity), not a keep-alive, so it is delivered as a system event;
/// consumers that do not want clock ticks filter on `detail.type`.
pub fn kind_of(kind: &MessageType) -> Kind {
    match kind {
        MessageType::Text | MessageType::Tweet => Kind::Message,
        MessageType::Paste => Kind::Paste,
        MessageType::Upload => Kind::Upload,
        MessageType::Enter => Kind::Enter,
        MessageType::Leave => Kind::Leave,
        MessageType::Kick => Kind::Kick,
        MessageType::TopicChange => Kind::Topic,
        MessageType::Idle | MessageType::Unidle => Kind::Presence,
        _ => Kind::System,
    }
}

/// Maps one message to an event.
///
/// `source` is the configured source name; `room` is the room the client streams (used when
/// the message carries no `room_id`); `raw` is the wire object, kept in [`Event::raw`].
pub fn to_event(source: &str, room: u64, message: &Message, raw: Option<Value>) -> Event {
    build(source, room, message, message.body.clone(), raw)
}

/// [`to_event`] for a message that is not needed afterwards: its body moves into the event.
pub(crate) fn into_event(
    source: &str,
    room: u64,
    mut message: Message,
    raw: Option<Value>,
) -> Event {
    let body = message.body.take();
    build(source, room, &message, body, raw)
}

/// The event of `message`, whose body (taken out of it, or cloned) is `body`.
fn build(
    source: &str,
    room: u64,
    message: &Message,
    body: Option<String>,
    raw: Option<Value>,
) -> Event {
    let room = message.room_id.unwrap_or(room);
    let kind = kind_of(&message.kind);
    let mut d = serde_json::Map::new();
    d.insert(
        "type".into(),
        Value::String(message.kind.as_str().to_owned()),
    );
    match &message.kind {
        MessageType::Idle => {
            d.insert("presence".into(), json!("idle"));
        }
        MessageType::Unidle => {
            d.insert("presence".into(), json!("active"));
        }
        MessageType::Sound => {
            if let Some(sound) = &body {
                d.insert("sound".into(), json!(sound));
            }
        }
        MessageType::Tweet => {
            if let Some(t) = &message.tweet {
                d.insert("tweet".into(), json!(t));
            }
            if let Some(url) = &body {
                d.insert("url".into(), json!(url));
            }
        }
        _ => {}
    }
    let tweet_text = match &message.kind {
        MessageType::Tweet => message.tweet.as_ref().and_then(|t| t.message.clone()),
        _ => None,
    };
    let text = tweet_text.or(body).unwrap_or_default();
    if message.starred {
        d.insert("starred".into(), json!(true));
    }
    if !message.extra.is_empty() {
        for key in [
            "url",
            "full_url",
            "description",
            "content_type",
            "byte_size",
        ] {
            if let Some(v) = message.extra.get(key).filter(|v| !v.is_null()) {
                d.entry(key).or_insert_with(|| v.clone());
            }
        }
    }
    let author = match message.user_id {
        Some(id) => Author::new(Some(id.to_string()), None),
        None => Author::none(),
    };
    let mut event = Event::new(
        source,
        Service::Campfire,
        kind,
        event_id(room, message.id),
        room.to_string(),
        message.created_at,
    )
    .with_author(author)
    .with_text(text)
    .with_detail(Value::Object(d));
    event.native_id = Some(message.id.to_string());
    if message.starred {
        event.tags.push("starred".to_owned());
    }
    event.raw = raw;
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: &str, body: Option<&str>, user: Option<u64>) -> (Message, Value) {
        let raw = json!({
            "room_id": 5, "created_at": "2009-12-01 23:44:40", "body": body, "id": 42,
            "user_id": user, "type": kind, "starred": "false"
        });
        (serde_json::from_value(raw.clone()).unwrap(), raw)
    }

    #[test]
    fn every_known_type_maps() {
        let want = [
            ("TextMessage", Kind::Message),
            ("PasteMessage", Kind::Paste),
            ("SoundMessage", Kind::System),
            ("AdvertisementMessage", Kind::System),
            ("AllowGuestsMessage", Kind::System),
            ("DisallowGuestsMessage", Kind::System),
            ("IdleMessage", Kind::Presence),
            ("KickMessage", Kind::Kick),
            ("LeaveMessage", Kind::Leave),
            ("EnterMessage", Kind::Enter),
            ("SystemMessage", Kind::System),
            ("TimestampMessage", Kind::System),
            ("TopicChangeMessage", Kind::Topic),
            ("UnidleMessage", Kind::Presence),
            ("LockMessage", Kind::System),
            ("UnlockMessage", Kind::System),
            ("UploadMessage", Kind::Upload),
            ("ConferenceCreatedMessage", Kind::System),
            ("ConferenceFinishedMessage", Kind::System),
            ("TweetMessage", Kind::Message),
        ];
        assert_eq!(want.len(), MessageType::KNOWN.len());
        for (name, kind) in want {
            let (m, raw) = message(name, Some("b"), Some(3));
            let e = to_event("ops", 1, &m, Some(raw.clone()));
            assert_eq!(e.kind, kind, "{name}");
            assert_eq!(e.detail.as_ref().unwrap()["type"], name);
            assert_eq!(e.id, "campfire:5:42");
            assert_eq!(e.room, "5");
            assert_eq!(e.native_id.as_deref(), Some("42"));
            assert_eq!(e.raw, Some(raw));
            assert_eq!(e.service, Service::Campfire);
            assert_eq!(e.source, "ops");
        }
    }

    #[test]
    fn unknown_types_pass_through_as_system() {
        let (m, _) = message("HologramMessage", None, None);
        let e = to_event("ops", 1, &m, None);
        assert_eq!(e.kind, Kind::System);
        assert_eq!(e.detail.unwrap()["type"], "HologramMessage");
        assert_eq!(e.text, "");
        assert_eq!(e.author, Author::none());
    }

    #[test]
    fn text_author_time_and_star() {
        let raw = json!({"room_id":1,"created_at":"2009-12-01 23:44:40","body":"hello","id":1,
                         "user_id":1,"type":"TextMessage","starred":"true"});
        let m: Message = serde_json::from_value(raw).unwrap();
        let e = to_event("ops", 1, &m, None);
        assert_eq!(e.text, "hello");
        assert_eq!(e.author.id.as_deref(), Some("1"));
        assert_eq!(e.at.to_rfc3339(), "2009-12-01T23:44:40+00:00");
        assert_eq!(e.tags, vec!["starred".to_owned()]);
        assert_eq!(e.detail.unwrap()["starred"], true);
    }

    #[test]
    fn timestamp_without_user_or_body() {
        let (m, _) = message("TimestampMessage", None, None);
        let e = to_event("ops", 1, &m, None);
        assert_eq!(e.kind, Kind::System);
        assert_eq!(e.author.id, None);
        assert_eq!(e.text, "");
    }

    #[test]
    fn presence_topic_tweet_and_room_fallback() {
        let (m, _) = message("IdleMessage", None, Some(2));
        assert_eq!(
            to_event("s", 1, &m, None).detail.unwrap()["presence"],
            "idle"
        );
        let (m, _) = message("UnidleMessage", None, Some(2));
        assert_eq!(
            to_event("s", 1, &m, None).detail.unwrap()["presence"],
            "active"
        );
        let (m, _) = message("TopicChangeMessage", Some("Release day"), Some(2));
        assert_eq!(to_event("s", 1, &m, None).text, "Release day");

        let m: Message = serde_json::from_value(json!({
            "id": 3, "type": "TweetMessage", "created_at": "2009-12-01 23:44:40",
            "body": "http://twitter.com/x/status/9",
            "tweet": {"id": "9", "message": "shipping!", "author_username": "x"}
        }))
        .unwrap();
        let e = to_event("s", 77, &m, None);
        assert_eq!(e.text, "shipping!");
        assert_eq!(e.room, "77");
        assert_eq!(e.id, "campfire:77:3");
        let d = e.detail.unwrap();
        assert_eq!(d["tweet"]["author_username"], "x");
        assert_eq!(d["url"], "http://twitter.com/x/status/9");
    }

    #[test]
    fn upload_keeps_its_url() {
        let m: Message = serde_json::from_value(json!({
            "id": 3, "type": "UploadMessage", "created_at": "2009-12-01 23:44:40",
            "body": "report.pdf", "user_id": 1, "full_url": "http://h/uploads/report.pdf"
        }))
        .unwrap();
        let e = to_event("s", 1, &m, None);
        assert_eq!(e.kind, Kind::Upload);
        assert_eq!(e.text, "report.pdf");
        assert_eq!(e.detail.unwrap()["full_url"], "http://h/uploads/report.pdf");
    }
}
