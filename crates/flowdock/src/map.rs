//! The pure mapping from a Flowdock wire message to a [`chat_model::Event`].

use std::borrow::Cow;

use chat_model::{Author, Event, Kind, Service, Timestamp};
use chrono::TimeZone;
use serde_json::{Value, json};

use crate::wire::{Json, NumOrStrRef, Payload, Sent, WireMessage, WireRef};

/// The room name of private messages (streamed with `user=1`; they have no flow).
pub const PRIVATE_ROOM: &str = "private";

/// The room a message belongs to: its flow as `org/flow` (the stream's `org:flow` form is
/// rewritten), [`PRIVATE_ROOM`] for private messages, or `"-"` when the message names none.
pub fn room_of(msg: &WireMessage) -> String {
    room_of_parts(msg.flow.as_deref(), msg.to.is_some()).into_owned()
}

/// [`room_of`] of a message's `flow` and whether it has a recipient (`to`).
pub(crate) fn room_of_parts(flow: Option<&str>, private: bool) -> Cow<'_, str> {
    match flow.map(str::trim) {
        Some(flow) if !flow.is_empty() => normalize_flow_cow(flow),
        _ if private => Cow::Borrowed(PRIVATE_ROOM),
        _ => Cow::Borrowed("-"),
    }
}

/// Rewrites a flow reference to `org/flow`: `org:flow` becomes `org/flow`; flow ids and
/// `org/flow` stay as they are.
pub fn normalize_flow(flow: &str) -> String {
    normalize_flow_cow(flow).into_owned()
}

/// [`normalize_flow`], borrowing what needs no rewrite.
pub(crate) fn normalize_flow_cow(flow: &str) -> Cow<'_, str> {
    if !flow.contains('/') {
        if let Some((org, name)) = flow.split_once(':') {
            if !org.is_empty() && !name.is_empty() {
                return Cow::Owned(format!("{org}/{name}"));
            }
        }
    }
    Cow::Borrowed(flow)
}

/// The stable event id of a message with native id `native` in `room`:
/// `flowdock:<room>:<native id>`.
pub fn event_id(room: &str, native: &str) -> String {
    format!("flowdock:{room}:{native}")
}

/// The stable event id of a message: from its native id; else from its `uuid`; else from a
/// hash of its wire bytes (presence events, which the service does not store).
pub fn stable_id(msg: &WireMessage, room: &str, raw: &Value) -> String {
    stable_id_of(&msg.view(), room, || raw.to_string())
}

/// [`stable_id`]: `raw_text` gives the wire object as compact JSON (sorted keys), needed only
/// for a message with neither an id nor a uuid.
pub(crate) fn stable_id_of(
    msg: &WireRef<'_>,
    room: &str,
    raw_text: impl FnOnce() -> String,
) -> String {
    match &msg.id {
        Some(NumOrStrRef::Num(n)) => return format!("flowdock:{room}:{n}"),
        Some(NumOrStrRef::Str(s)) => return event_id(room, s),
        None => {}
    }
    if let Some(uuid) = msg.uuid.as_deref().filter(|u| !u.is_empty()) {
        return format!("flowdock:{room}:{}:{uuid}", msg.event);
    }
    format!(
        "flowdock:{room}:{}:{:016x}",
        msg.event,
        fnv1a(raw_text().as_bytes())
    )
}

/// Whether [`stable_id_of`] needs the wire object's text (no id, no uuid).
pub(crate) fn id_needs_raw(msg: &WireRef<'_>) -> bool {
    msg.id.is_none() && msg.uuid.as_deref().is_none_or(str::is_empty)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// When a message was sent: `sent` (epoch ms, also as a numeric string, or RFC 3339), else
/// `created_at`, else `received_at`.
pub fn sent_at(msg: &WireMessage, received_at: Timestamp) -> Timestamp {
    sent_at_of(&msg.view(), received_at)
}

fn sent_at_of(msg: &WireRef<'_>, received_at: Timestamp) -> Timestamp {
    let from_ms = |ms: i64| chrono::Utc.timestamp_millis_opt(ms).single();
    let from_text = |s: &str| {
        s.trim().parse::<i64>().ok().and_then(from_ms).or_else(|| {
            chrono::DateTime::parse_from_rfc3339(s.trim())
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc))
        })
    };
    let sent = match &msg.sent {
        Some(Sent::Num(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .and_then(from_ms),
        Some(Sent::Str(s)) => from_text(s),
        _ => None,
    };
    sent.or_else(|| msg.created_at.as_deref().and_then(from_text))
        .unwrap_or(received_at)
}

/// Maps one wire message to an event of source `source`.
///
/// Never fails: unknown types become [`Kind::System`] with `detail.type` set to the Flowdock
/// event type. `raw` (the wire object) is kept on the event; `received_at` stands in for a
/// missing timestamp. Ids are stable (`flowdock:<room>:<id>`), so a replayed or backfilled
/// message maps to the same id as the live one.
pub fn to_event(source: &str, msg: &WireMessage, raw: Value, received_at: Timestamp) -> Event {
    let view = msg.view();
    let room = room_of(msg);
    let id = stable_id_of(&view, &room, || raw.to_string());
    let mut event = event_of(source, view, room, id, received_at);
    event.raw = Some(raw);
    event
}

/// Maps a message of `room` with stable id `id` (see [`to_event`]); `raw` is not set.
pub(crate) fn event_of(
    source: &str,
    mut msg: WireRef<'_>,
    room: String,
    id: String,
    received_at: Timestamp,
) -> Event {
    let at = sent_at_of(&msg, received_at);
    let author_name = msg
        .external_user_name
        .take()
        .or_else(|| msg.author_name.take())
        .map(Cow::into_owned);
    let author = Author::new(msg.user_id(), author_name);
    let native_id = msg.id.as_ref().map(|n| n.as_text().into_owned());

    let mut event =
        Event::new(source, Service::Flowdock, Kind::System, id, room, at).with_author(author);
    event.native_id = native_id;
    event.tags = msg.tags.iter().map(|t| t.as_ref().to_owned()).collect();
    if let Some(to) = &msg.to {
        event.private = true;
        event.to = Some(Author::new(Some(to.as_text().into_owned()), None));
    }
    let mut detail = json!({ "type": msg.event.as_ref() });
    if let Some(t) = &msg.thread_id {
        detail["thread_id"] = json!(t.as_ref());
    }

    match msg.take_payload() {
        Payload::Message(text) | Payload::Line(text) => {
            event.kind = Kind::Message;
            event.text = text;
        }
        Payload::Comment(c) => {
            event.kind = Kind::Message;
            event.text = c.text;
            detail["title"] = json!(c.title);
            if let Some(parent) = msg.influx_parent() {
                event.refers_to = Some(event_id(&event.room, parent));
            }
        }
        Payload::MessageEdit(e) => {
            event.kind = Kind::Edit;
            event.text = e.updated_content;
            event.refers_to = Some(event_id(&event.room, &e.message.as_string()));
        }
        Payload::TagChange(t) => {
            // Not a text edit: the tagged message keeps its text.
            event.kind = Kind::TagChange;
            event.refers_to = Some(event_id(&event.room, &t.message.as_string()));
            event.tags = t.add.clone();
            event.tags_removed = t.remove.clone();
            detail["add"] = json!(t.add);
            detail["remove"] = json!(t.remove);
        }
        Payload::Action(a) => {
            let (kind, text) = action_kind_text(&a.kind, &a.rest);
            event.kind = kind;
            event.text = text;
            detail["action"] = json!(a.kind);
            for (k, v) in a.rest {
                detail[k.as_str()] = v;
            }
        }
        Payload::Status(text) => {
            event.kind = Kind::Status;
            event.text = text;
        }
        Payload::File(f) => {
            event.kind = Kind::Upload;
            event.text = f.file_name.clone();
            detail["file_name"] = json!(f.file_name);
            detail["content_type"] = json!(f.content_type);
            detail["file_size"] = json!(f.file_size);
            detail["path"] = json!(f.path);
        }
        Payload::UserActivity(content) => {
            event.kind = Kind::Presence;
            if let Value::Object(map) = content {
                for (k, v) in map {
                    detail[k.as_str()] = v;
                }
            }
        }
        Payload::Activity => {
            event.kind = Kind::System;
            event.text = strip_html(msg.title.as_deref().unwrap_or_default());
            add_thread(&mut detail, &msg);
        }
        Payload::Discussion => {
            event.kind = Kind::Message;
            let title = strip_html(msg.title.as_deref().unwrap_or_default());
            event.text = msg
                .body
                .as_deref()
                .filter(|b| !b.is_empty())
                .map_or_else(|| title.clone(), str::to_owned);
            detail["title"] = json!(title);
            add_thread(&mut detail, &msg);
            if let Some(initial) = msg
                .thread
                .as_ref()
                .and_then(|t| t.initial_message.as_ref())
                .and_then(Json::num_or_str)
            {
                event.refers_to = Some(event_id(&event.room, &initial.as_text()));
            }
        }
        Payload::Other(content) => {
            event.kind = Kind::System;
            event.text = summary(&msg.event, &content);
        } // `Payload` is non-exhaustive for users of the crate, not for the crate itself.
    }
    event.detail = Some(detail);
    event
}

fn add_thread(detail: &mut Value, msg: &WireRef<'_>) {
    if let Some(thread) = &msg.thread {
        for (key, v) in [
            ("title", &thread.title),
            ("id", &thread.id),
            ("initial_message", &thread.initial_message),
        ] {
            if let Some(v) = v {
                detail[format!("thread_{key}")] = v.clone().into_value();
            }
        }
    }
}

/// The kind and text of an `action` event.
fn action_kind_text(action: &str, rest: &serde_json::Map<String, Value>) -> (Kind, String) {
    let arg = |key: &str| -> String {
        match rest.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    };
    let first = |keys: &[&str]| {
        keys.iter()
            .map(|k| arg(k))
            .find(|s| !s.is_empty())
            .unwrap_or_default()
    };
    match action {
        "join" => (Kind::Enter, "joined the flow".to_owned()),
        "add_people" => (Kind::Enter, format!("added {}", arg("message"))),
        "block" => (
            Kind::Kick,
            format!("blocked {}", first(&["user", "message"])),
        ),
        "uninvite" => (
            Kind::Kick,
            format!(
                "cancelled the invitation of {}",
                first(&["email", "message"])
            ),
        ),
        "invite" => (
            Kind::System,
            format!("invited {}", first(&["email", "message"])),
        ),
        "decline" => (
            Kind::System,
            format!(
                "declined the invitation{}",
                with_space(&first(&["email", "message"]))
            ),
        ),
        "add_rss_feed" => (
            Kind::System,
            format!("added RSS feed {}", first(&["url", "message"])),
        ),
        "remove_rss_feed" => (
            Kind::System,
            format!("removed RSS feed {}", first(&["url", "message"])),
        ),
        other => (
            Kind::System,
            format!("{other}{}", with_space(&first(&["message", "description"]))),
        ),
    }
}

fn with_space(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" {s}")
    }
}

/// A one-line summary of an integration's content, for `text`.
fn summary(event: &str, content: &Value) -> String {
    let at = |path: &[&str]| -> Option<String> {
        let mut v = content;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    if let Value::String(s) = content {
        return s.clone();
    }
    const PATHS: &[&[&str]] = &[
        &["title"],
        &["subject"],
        &["issue_summary"],
        &["pull_request", "title"],
        &["issue", "title"],
        &["page_title"],
        &["description"],
        &["message"],
        &["text"],
        &["comment", "body"],
        &["comment", "text"],
        &["forum", "name"],
        &["kudo", "message"],
        &["audit_status", "suggestion", "title"],
        &["article", "question"],
        &["suggestion", "title"],
        &["ticket", "subject"],
        &["ref"],
    ];
    let found = if content.get("pusher").is_some() && content.get("ref").is_some() {
        let who = at(&["pusher", "name"]).unwrap_or_else(|| "someone".to_owned());
        at(&["ref"]).map(|r| format!("{who} pushed to {r}"))
    } else {
        PATHS.iter().find_map(|p| at(p))
    };
    let text = found.unwrap_or_else(|| event.to_owned());
    // Keep one short line: the first line (also of text with escaped `\n`), at most 200 chars.
    let first = text.split("\\n").next().unwrap_or_default();
    let first = first.lines().next().unwrap_or_default().trim();
    match first.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &first[..cut]),
        None => first.to_owned(),
    }
}

/// Removes HTML tags and decodes the few entities Flowdock titles use.
pub fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(json: &str) -> Event {
        let raw: Value = serde_json::from_str(json).unwrap();
        let msg: WireMessage = serde_json::from_value(raw.clone()).unwrap();
        to_event("fd", &msg, raw, chrono::Utc.timestamp_opt(0, 0).unwrap())
    }

    #[test]
    fn message_maps_to_message() {
        let e = map(
            r#"{"id":907,"app":"chat","flow":"irc:ottotest","event":"message","sent":1334660642345,"user":"1","content":"test","tags":["a"]}"#,
        );
        assert_eq!(e.kind, Kind::Message);
        assert_eq!(e.id, "flowdock:irc/ottotest:907");
        assert_eq!(e.room, "irc/ottotest");
        assert_eq!(e.text, "test");
        assert_eq!(e.author.id.as_deref(), Some("1"));
        assert_eq!(e.at.timestamp_millis(), 1334660642345);
        assert_eq!(e.tags, vec!["a"]);
        assert_eq!(e.native_id.as_deref(), Some("907"));
        assert!(e.raw.is_some());
    }

    #[test]
    fn comment_refers_to_influx_parent() {
        let e = map(
            r#"{"id":17080,"flow":"o:f","event":"comment","sent":1,"user":"1","content":{"text":"test","title":"T"},"tags":["influx:12931"]}"#,
        );
        assert_eq!(e.kind, Kind::Message);
        assert_eq!(e.refers_to.as_deref(), Some("flowdock:o/f:12931"));
        assert_eq!(e.text, "test");
        assert_eq!(e.detail.unwrap()["title"], "T");
    }

    #[test]
    fn edit_and_tag_change_refer_to_their_message() {
        let e = map(
            r#"{"event":"message-edit","id":389,"flow":"o:f","content":{"message":374,"updated_content":"new"},"sent":1,"user":"1"}"#,
        );
        assert_eq!(e.kind, Kind::Edit);
        assert_eq!(e.refers_to.as_deref(), Some("flowdock:o/f:374"));
        assert_eq!(e.text, "new");
        let t = map(
            r#"{"event":"tag-change","id":390,"flow":"o/f","content":{"message":"374","add":["x"],"remove":["y"]},"sent":1,"user":"1"}"#,
        );
        // A tag change is not a text edit: its own kind, never an empty edit.
        assert_eq!(t.kind, Kind::TagChange);
        assert_eq!(t.refers_to.as_deref(), Some("flowdock:o/f:374"));
        assert_eq!(t.tags, vec!["x"]);
        assert_eq!(t.tags_removed, vec!["y"]);
        assert_eq!(t.detail.unwrap()["remove"][0], "y");
        let only_removed = map(
            r#"{"event":"tag-change","id":391,"flow":"o:f","content":{"message":374,"remove":[":unread:1"]},"tags":["kept"],"sent":1,"user":"1"}"#,
        );
        assert_eq!(only_removed.kind, Kind::TagChange);
        assert!(only_removed.tags.is_empty(), "tags are the added ones only");
        assert_eq!(only_removed.tags_removed, vec![":unread:1"]);
    }

    #[test]
    fn actions() {
        let cases = [
            (r#"{"type":"join"}"#, Kind::Enter, "joined the flow"),
            (
                r#"{"type":"add_people","message":["a","b"]}"#,
                Kind::Enter,
                "added a, b",
            ),
            (r#"{"type":"block","user":"5"}"#, Kind::Kick, "blocked 5"),
            (
                r#"{"type":"invite","email":"x@y"}"#,
                Kind::System,
                "invited x@y",
            ),
            (
                r#"{"type":"uninvite","email":"x@y"}"#,
                Kind::Kick,
                "cancelled the invitation of x@y",
            ),
            (
                r#"{"type":"decline"}"#,
                Kind::System,
                "declined the invitation",
            ),
            (
                r#"{"type":"add_rss_feed","url":"http://f"}"#,
                Kind::System,
                "added RSS feed http://f",
            ),
            (
                r#"{"type":"remove_rss_feed","url":"http://f"}"#,
                Kind::System,
                "removed RSS feed http://f",
            ),
            (r#"{"type":"new_thing"}"#, Kind::System, "new_thing"),
        ];
        for (content, kind, text) in cases {
            let e = map(&format!(
                r#"{{"id":1,"flow":"o:f","event":"action","user":"2","sent":1,"content":{content}}}"#
            ));
            assert_eq!((e.kind, e.text.as_str()), (kind, text), "{content}");
            assert_eq!(e.detail.unwrap()["type"], "action");
        }
    }

    #[test]
    fn status_file_presence() {
        let s = map(r#"{"id":560,"flow":"o:f","event":"status","user":"1","content":"lunch"}"#);
        assert_eq!((s.kind, s.text.as_str()), (Kind::Status, "lunch"));
        let f = map(
            r#"{"id":5,"flow":"o:f","event":"file","user":"1","content":{"content_type":"text/plain","file_name":"a.txt","file_size":3,"path":"/p"}}"#,
        );
        assert_eq!((f.kind, f.text.as_str()), (Kind::Upload, "a.txt"));
        assert_eq!(f.detail.unwrap()["file_size"], 3);
        let p = map(
            r#"{"flow":"o:f","event":"activity.user","user":"3","sent":5,"content":{"last_activity":5}}"#,
        );
        assert_eq!(p.kind, Kind::Presence);
        assert!(p.id.starts_with("flowdock:o/f:activity.user:"));
        // Stable: the same bytes give the same id.
        let p2 = map(
            r#"{"flow":"o:f","event":"activity.user","user":"3","sent":5,"content":{"last_activity":5}}"#,
        );
        assert_eq!(p.id, p2.id);
    }

    #[test]
    fn unknown_types_pass_through() {
        let e = map(
            r#"{"id":12992,"flow":"irc:ottotest","event":"backend.user.block","user":"1","content":"50000"}"#,
        );
        assert_eq!(e.kind, Kind::System);
        assert_eq!(e.detail.unwrap()["type"], "backend.user.block");
        let r = map(r#"{"user":1,"event":"flow-remove","content":{"id":"irc:ottotest"}}"#);
        assert_eq!(r.kind, Kind::System);
        assert_eq!(r.room, "-");
        assert_eq!(r.at.timestamp(), 0, "received_at stands in");
    }

    #[test]
    fn private_message() {
        let e = map(r#"{"id":3,"event":"message","user":"1","to":"2","content":"psst"}"#);
        assert!(e.private);
        assert_eq!(e.room, PRIVATE_ROOM);
        assert_eq!(e.to.unwrap().id.as_deref(), Some("2"));
    }

    #[test]
    fn strips_html() {
        assert_eq!(
            strip_html(r#"Test <a href="x">with &amp; link</a>"#),
            "Test with & link"
        );
    }
}
