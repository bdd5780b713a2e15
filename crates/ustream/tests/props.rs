//! Property tests: payload ordering, item reading, and the session driven without sockets
//! (see `session_props.rs`).

use proptest::prelude::*;
use serde_json::{Value, json};
use ustream::Item;
use ustream::map::order_payload;

fn item() -> impl Strategy<Value = Value> {
    (0u32..1000, prop::option::of(0i64..20), 0u8..4).prop_map(|(uid, at, shape)| {
        match (shape, at) {
            (0, Some(t)) => json!({"uid": uid.to_string(), "createdAt": 1000 + t, "text": "x"}),
            (1, Some(t)) => json!({"type": "msg", "uid": uid, "createdAt": (1000 + t).to_string()}),
            (2, _) => json!({"type": "ignMsg", "uid": uid.to_string()}),
            _ => json!({"type": "whatever", "n": uid}),
        }
    })
}

proptest! {
    #[test]
    fn payload_order_is_a_stable_time_sort_of_the_reversed_payload(
        payload in prop::collection::vec(item(), 0..30)
    ) {
        let out = order_payload(&payload, 5000);
        prop_assert_eq!(out.len(), payload.len());
        // Sorted by time, a permutation, and ties keep the reversed (oldest-first) order.
        for w in out.windows(2) {
            prop_assert!(w[0].at <= w[1].at);
            if w[0].at == w[1].at {
                prop_assert!(w[0].position > w[1].position);
            }
        }
        let mut positions: Vec<usize> = out.iter().map(|o| o.position).collect();
        positions.sort_unstable();
        prop_assert_eq!(positions, (0..payload.len()).collect::<Vec<_>>());
        for o in &out {
            prop_assert_eq!(&o.raw, &payload[o.position]);
        }
    }

    #[test]
    fn any_json_item_reads_or_fails_cleanly(v in any_json()) {
        match Item::from_json(&v) {
            Ok(item) => prop_assert!(!item.kind().is_empty()),
            Err(e) => prop_assert!(e.to_string().contains("malformed")),
        }
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 ]{0,8}".prop_map(Value::String),
        prop::sample::select(&["msg", "host", "ignMsg", "ignUser", "unIgnUser"][..])
            .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop::collection::btree_map(
            prop::sample::select(
                &[
                    "type",
                    "uid",
                    "host",
                    "network",
                    "createdAt",
                    "text",
                    "provider",
                    "displayName",
                    "isOwner",
                ][..],
            )
            .prop_map(str::to_owned),
            inner.clone(),
            0..6,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
    })
}

/// A payload item as the service sends them, or an odd one.
fn wire_item() -> impl Strategy<Value = Value> {
    let user = prop::sample::select(&["Gyula", "Ann", "日本", "é \"q\""][..]);
    prop_oneof![
        10 => (0u32..50, 0i64..20, user.clone(), any::<bool>()).prop_map(|(uid, t, name, b)| if b {
            json!({"uid": uid.to_string(), "createdAt": (1000 + t).to_string(), "isOwner": 1,
                "profileNetwork": "twitter", "profileUserName": name.to_lowercase(),
                "displayName": name, "text": format!("hi {name} (live at http://ustre.am/ab)"),
                "network": [{"provider": "twitter", "displayName": name}], "zzz": [1, {"a": null}]})
        } else {
            json!({"type": "msg", "uid": uid, "createdAt": 1000 + t, "text": "x",
                "network": [{"provider": "facebook", "displayName": name}], "flag": 0})
        }),
        2 => (0u32..50).prop_map(|uid| json!({"type": "ignMsg", "uid": uid.to_string()})),
        3 => (user.clone(), any::<bool>()).prop_map(|(name, ign)| json!({
            "type": if ign { "ignUser" } else { "unIgnUser" },
            "network": [{"provider": "twitter", "displayName": name}]})),
        1 => (0u8..3).prop_map(|n| json!({"type": "poll", "n": n, "text": "vote"})),
        1 => Just(json!({"type": "host", "host": "h9:81"})),
        1 => any_json(),
    ]
}

proptest! {
    /// Keeping `raw` or not changes nothing but `raw`: the same events, ids, order, reports.
    #[test]
    fn raw_or_not_the_same_events(
        responses in prop::collection::vec(prop::collection::vec(wire_item(), 0..12), 1..5),
    ) {
        use std::time::{Duration, Instant};
        use ustream::{Config, Response, Session};
        let run = |keep_raw: bool| {
            let mut config = Config::new("http://h", "42");
            config.keep_raw = keep_raw;
            let t = Instant::now();
            let mut s = Session::new(config, None, t, 1_700_000_000_000).unwrap();
            let mut items = Vec::new();
            for (i, payload) in responses.iter().enumerate() {
                let now = t + Duration::from_secs(10 * i as u64);
                s.handle_timeout(now);
                if s.poll_request().is_none() {
                    break;
                }
                let body = json!({"success": true, "refreshInterval": 10,
                    "range": [1000 + 10 * i as i64, 1010 + 10 * i as i64], "payload": payload});
                s.handle_response(Response::ok(serde_json::to_vec(&body).unwrap()), now, 1_700_000_000_000);
                while let Some(mut item) = s.poll_item() {
                    if let chat_model::SourceItem::Event { event, .. } = &mut item {
                        prop_assert_eq!(event.raw.is_some(), keep_raw);
                        event.raw = None;
                    }
                    items.push(item);
                }
            }
            Ok((items, s.cursor()))
        };
        let kept = run(true)?;
        prop_assert_eq!(run(false)?, kept);
    }
}
