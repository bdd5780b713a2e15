//! Every real Flowdock event in `tests/fixtures/` (copied from the public Flowdock fixtures,
//! MIT licence in `tests/fixtures/LICENSE-oulu.txt`) decodes into a sensible event.

use std::path::PathBuf;

use chat_model::Kind;
use flowdock::{WireMessage, to_event};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_all() -> Vec<(String, Value)> {
    let dir = fixtures_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the Flowdock fixtures folder {} is missing or unreadable ({e}); \
             it is part of the repository (crates/flowdock/tests/fixtures)",
            dir.display()
        )
    });
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.expect("read fixture dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("read {name}: {e}"));
        let value: Value =
            serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
        out.push((name, value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 40,
        "expected the ~48 Flowdock fixtures in {}, found {}",
        dir.display(),
        out.len()
    );
    out
}

#[test]
fn every_fixture_decodes_into_a_sensible_event() {
    let received = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    for (name, raw) in load_all() {
        let msg: WireMessage = serde_json::from_value(raw.clone())
            .unwrap_or_else(|e| panic!("{name}: envelope does not decode: {e}"));
        let ev = to_event("fd", &msg, raw.clone(), received);
        assert!(ev.id.starts_with("flowdock:"), "{name}: id {}", ev.id);
        assert!(!ev.room.is_empty(), "{name}: empty room");
        assert!(
            !matches!(ev.kind, Kind::Gap | Kind::Connection),
            "{name}: kind {}",
            ev.kind
        );
        let detail = ev.detail.as_ref().expect("detail");
        assert_eq!(detail["type"], msg.event.as_str(), "{name}: detail.type");
        assert_eq!(ev.raw.as_ref(), Some(&raw), "{name}: raw kept");
        // A timestamp from the message itself whenever the fixture has one.
        if raw.get("sent").is_some() {
            assert_ne!(ev.at, received, "{name}: sent not read");
            assert!(ev.at.timestamp() > 1_300_000_000, "{name}: at {}", ev.at);
        }
        // Something readable for every event but presence.
        if ev.kind != Kind::Presence {
            assert!(!ev.text.trim().is_empty(), "{name}: empty text");
        }
        let expected = match msg.event.as_str() {
            "message" | "line" | "comment" | "discussion" => Kind::Message,
            "message-edit" => Kind::Edit,
            "tag-change" => Kind::TagChange,
            "file" => Kind::Upload,
            "status" => Kind::Status,
            "activity.user" => Kind::Presence,
            "action" => match raw["content"]["type"].as_str() {
                Some("join") | Some("add_people") => Kind::Enter,
                Some("block") | Some("uninvite") => Kind::Kick,
                _ => Kind::System,
            },
            _ => Kind::System,
        };
        assert_eq!(ev.kind, expected, "{name}");
        // The mapping is stable: mapping again gives the same id.
        assert_eq!(to_event("fd", &msg, raw, received).id, ev.id, "{name}");
    }
}

#[test]
fn specific_fixtures() {
    let all = load_all();
    let get = |n: &str| {
        let raw = all
            .iter()
            .find(|(name, _)| name == n)
            .unwrap_or_else(|| panic!("fixture {n} missing"))
            .1
            .clone();
        let msg: WireMessage = serde_json::from_value(raw.clone()).unwrap();
        to_event("fd", &msg, raw, chrono::Utc::now())
    };
    let c = get("comment_event.json");
    assert_eq!(c.refers_to.as_deref(), Some("flowdock:irc/ottotest:12931"));
    assert_eq!(c.text, "test");
    let e = get("message_edit_event_for_message.json");
    assert_eq!(e.refers_to.as_deref(), Some("flowdock:irc/ottotest:374"));
    assert_eq!(e.text, "updated test message");
    let f = get("file_event.json");
    assert_eq!(f.text, "globe.rb");
    let m = get("message_event.json");
    assert_eq!(m.id, "flowdock:irc/ottotest:907");
    assert_eq!(m.author.id.as_deref(), Some("1"));
    let x = get("message_from_external_user_event.json");
    assert_eq!(x.author.name.as_deref(), Some("Robot"));
    let d = get("discussion_event.json");
    assert_eq!(d.text, "This food is delicious!");
    assert_eq!(d.author.name.as_deref(), Some("Oskari Virtanen"));
    assert_eq!(d.refers_to.as_deref(), Some("flowdock:irc/ottotest:388467"));
    let a = get("activity_event.json");
    assert_eq!(a.text, "Test message with link");
    assert_eq!(a.author.id, None, "user \"0\" is no user");
    let s = get("status_event.json");
    assert_eq!(s.text, "uusin status");
    let j = get("join_event.json");
    assert_eq!(j.author.id.as_deref(), Some("99999"));
    let p = get("add_people_event.json");
    assert_eq!(p.text, "added test, foobar");
    let g = get("github_pull_request_close_event.json");
    assert_eq!(g.at.to_rfc3339(), "2012-04-20T18:11:05.446+00:00");
}

#[test]
#[ignore = "prints the mapping of every fixture for a human to read"]
fn print_all() {
    for (name, raw) in load_all() {
        let msg: WireMessage = serde_json::from_value(raw.clone()).unwrap();
        let ev = to_event("fd", &msg, raw, chrono::Utc::now());
        println!("{name:50} {:8} {:28} {:?}", ev.kind, ev.id, ev.text);
    }
}
