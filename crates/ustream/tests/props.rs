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
