//! Typed wire format of the Social Stream: the response envelope and its payload items.
//!
//! Both shapes seen in the wild are accepted: `type` may be missing (a message), `createdAt`
//! may be a number or a numeric string, `isOwner` a number or a boolean, `uid` a string or a
//! number. Unknown item types are kept as [`Item::Unknown`], never an error.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The JSON body of one `/default` or `/timeslice/...` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Whether the request succeeded; `false` comes with a `message`.
    #[serde(default = "yes", deserialize_with = "de_bool")]
    pub success: bool,
    /// Seconds until the next timeslice request; also the next timeslice's length.
    #[serde(default, deserialize_with = "de_opt_u64")]
    pub refresh_interval: Option<u64>,
    /// `[from, to]` in server epoch seconds; `to` is the `RANGE` of the next timeslice.
    #[serde(default, deserialize_with = "de_range")]
    pub range: Option<[i64; 2]>,
    /// The items, newest first, kept as JSON so one odd item cannot spoil the others
    /// (`null` reads as no items).
    #[serde(default, deserialize_with = "de_payload")]
    pub payload: Vec<Value>,
    /// An opaque status update the real service sent along.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_update: Option<Value>,
    /// Whether message texts carry the generated `" (... live at http://ustre.am/XXXX)"` suffix.
    #[serde(default, deserialize_with = "de_bool")]
    pub is_suffix_cleaning_needed: bool,
    /// The error description of a failed request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn yes() -> bool {
    true
}

/// A social network account of a user: `{"provider": "twitter", "displayName": "Gyula"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAccount {
    /// The social network: "twitter", "facebook", "ustream" (others pass through).
    #[serde(default, deserialize_with = "de_string")]
    pub provider: String,
    /// The user's name on that network.
    #[serde(default, deserialize_with = "de_string")]
    pub display_name: String,
}

/// A social stream message (`type` "msg" or absent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Unique identifier of the message.
    #[serde(deserialize_with = "de_string")]
    pub uid: String,
    /// UTC epoch seconds (a number or a numeric string on the wire).
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub created_at: Option<i64>,
    /// Whether the channel's owner sent it (1/0 or a boolean on the wire).
    #[serde(default, deserialize_with = "de_bool")]
    pub is_owner: bool,
    /// Profile picture of the sender.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub profile_picture_url: Option<String>,
    /// The network shown for the message: "twitter", "facebook", "ustream".
    #[serde(default, deserialize_with = "de_opt_string")]
    pub profile_network: Option<String>,
    /// Sender user name on `profile_network`.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub profile_user_name: Option<String>,
    /// The networks the user belongs to.
    #[serde(default, deserialize_with = "de_networks")]
    pub network: Vec<NetworkAccount>,
    /// The sender's display name, where the item carries one.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub display_name: Option<String>,
    /// The message text.
    #[serde(default, deserialize_with = "de_string")]
    pub text: String,
    /// A moderation flag the real service sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<Value>,
    /// A human "time elapsed" hint the real service sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_elapsed: Option<Value>,
}

/// One payload item, by its `type`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Item {
    /// A social stream message.
    Msg(Box<Message>),
    /// Continue on another server, starting again with `/default`.
    Host {
        /// The new server (a host name, `host:port`, or a full base URL).
        host: String,
    },
    /// Remove the message with this uid.
    IgnMsg {
        /// The uid of the message to remove.
        uid: String,
    },
    /// Hide every message of these accounts, earlier and later.
    IgnUser {
        /// The accounts to ignore.
        network: Vec<NetworkAccount>,
    },
    /// Show later messages of these accounts again.
    UnIgnUser {
        /// The accounts no longer ignored.
        network: Vec<NetworkAccount>,
    },
    /// A type this crate does not know; passed through.
    Unknown {
        /// The item's `type`.
        kind: String,
    },
}

/// Why a payload item could not be read.
#[derive(Debug, thiserror::Error)]
#[error("payload item of type {kind:?} is malformed: {source}")]
pub struct ItemError {
    /// The item's type ("msg" when absent).
    pub kind: String,
    /// What serde said.
    #[source]
    pub source: serde_json::Error,
}

impl Item {
    /// Reads one payload item; a missing (or empty) `type` means a message.
    ///
    /// An item a client cannot act on is an error: a message or `ignMsg` without a uid, a
    /// `host` without a host name, an `ignUser`/`unIgnUser` naming no account (an account
    /// needs both `provider` and `displayName`; incomplete ones are dropped).
    pub fn from_json(value: &Value) -> Result<Item, ItemError> {
        let kind = match value.get("type") {
            None | Some(Value::Null) => "msg".to_owned(),
            Some(Value::String(s)) if s.is_empty() => "msg".to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let err = |source| ItemError {
            kind: kind.clone(),
            source,
        };
        #[derive(Deserialize)]
        struct HostItem {
            #[serde(deserialize_with = "de_string")]
            host: String,
        }
        #[derive(Deserialize)]
        struct UidItem {
            #[serde(deserialize_with = "de_string")]
            uid: String,
        }
        #[derive(Deserialize)]
        struct NetItem {
            #[serde(default, deserialize_with = "de_networks")]
            network: Vec<NetworkAccount>,
        }
        let invalid = |what: &str| err(<serde_json::Error as serde::de::Error>::custom(what));
        let non_empty = |s: String, what: &str| {
            if s.trim().is_empty() {
                Err(invalid(what))
            } else {
                Ok(s)
            }
        };
        let accounts = |v: &Value| {
            let mut network = NetItem::deserialize(v).map_err(err)?.network;
            network.retain(|a| !a.provider.trim().is_empty() && !a.display_name.is_empty());
            if network.is_empty() {
                Err(invalid(
                    "names no account (network entries need provider and displayName)",
                ))
            } else {
                Ok(network)
            }
        };
        if !value.is_object() {
            return Err(invalid("an item must be a JSON object"));
        }
        Ok(match kind.as_str() {
            "msg" => {
                let m = Message::deserialize(value).map_err(err)?;
                non_empty(m.uid.clone(), "uid is empty")?;
                Item::Msg(Box::new(m))
            }
            "host" => Item::Host {
                host: non_empty(
                    HostItem::deserialize(value).map_err(err)?.host,
                    "host is empty",
                )?,
            },
            "ignMsg" => Item::IgnMsg {
                uid: non_empty(
                    UidItem::deserialize(value).map_err(err)?.uid,
                    "uid is empty",
                )?,
            },
            "ignUser" => Item::IgnUser {
                network: accounts(value)?,
            },
            "unIgnUser" => Item::UnIgnUser {
                network: accounts(value)?,
            },
            _ => Item::Unknown { kind },
        })
    }

    /// The wire `type` of this item.
    pub fn kind(&self) -> &str {
        match self {
            Item::Msg(_) => "msg",
            Item::Host { .. } => "host",
            Item::IgnMsg { .. } => "ignMsg",
            Item::IgnUser { .. } => "ignUser",
            Item::UnIgnUser { .. } => "unIgnUser",
            Item::Unknown { kind } => kind,
        }
    }
}

/// Reads `createdAt` of any item (number or numeric string), if present.
pub fn created_at_of(value: &Value) -> Option<i64> {
    value.get("createdAt").and_then(value_to_i64)
}

fn value_to_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
        }
        _ => None,
    }
}

fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => matches!(s.trim(), "1" | "true" | "yes"),
        _ => false,
    })
}

fn de_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(value_to_i64(&v).and_then(|n| u64::try_from(n).ok()))
}

fn de_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(value_to_i64(&v))
}

fn de_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[i64; 2]>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::Array(a) if a.len() == 2 => match (value_to_i64(&a[0]), value_to_i64(&a[1])) {
            (Some(x), Some(y)) => Ok(Some([x, y])),
            _ => Err(serde::de::Error::custom(format!(
                "range must hold two numbers, got {v}"
            ))),
        },
        _ => Err(serde::de::Error::custom(format!(
            "range must be [from, to], got {v}"
        ))),
    }
}

fn de_payload<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => Ok(a),
        other => Err(serde::de::Error::custom(format!(
            "payload must be an array, got {other}"
        ))),
    }
}

fn de_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Null => None,
        other => Some(other.to_string()),
    })
}

fn de_networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NetworkAccount>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(a) => a
            .into_iter()
            .filter_map(|v| NetworkAccount::deserialize(v).ok())
            .collect(),
        v @ Value::Object(_) => NetworkAccount::deserialize(v).into_iter().collect(),
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn response_envelope_both_shapes() {
        let r: Envelope = serde_json::from_value(json!({
            "success": true, "refreshInterval": 10, "range": [0, 1302176480],
            "payload": [], "statusUpdate": {"x": 1}, "isSuffixCleaningNeeded": 1
        }))
        .unwrap();
        assert!(r.success);
        assert_eq!(r.refresh_interval, Some(10));
        assert_eq!(r.range, Some([0, 1302176480]));
        assert!(r.is_suffix_cleaning_needed);
        let r: Envelope = serde_json::from_value(json!({
            "success": false, "message": "channel offline"
        }))
        .unwrap();
        assert!(!r.success);
        assert_eq!(r.message.as_deref(), Some("channel offline"));
        let r: Envelope = serde_json::from_value(json!({
            "refreshInterval": "5", "range": ["10", 20]
        }))
        .unwrap();
        assert_eq!(r.refresh_interval, Some(5));
        assert_eq!(r.range, Some([10, 20]));
        assert!(serde_json::from_value::<Envelope>(json!({"range": [1]})).is_err());
    }

    #[test]
    fn message_both_shapes() {
        let a = Item::from_json(&json!({
            "uid": 17, "createdAt": "1302176481", "isOwner": 1, "text": "hi",
            "profileNetwork": "twitter", "profileUserName": "gyula",
            "network": [{"provider": "twitter", "displayName": "Gyula"}]
        }))
        .unwrap();
        let Item::Msg(m) = a else { panic!() };
        assert_eq!(m.uid, "17");
        assert_eq!(m.created_at, Some(1302176481));
        assert!(m.is_owner);
        assert_eq!(m.network[0].display_name, "Gyula");
        let b = Item::from_json(&json!({
            "type": "msg", "uid": "18", "createdAt": 1302176482, "isOwner": false,
            "text": "yo", "displayName": "Ann"
        }))
        .unwrap();
        let Item::Msg(m) = b else { panic!() };
        assert_eq!(m.created_at, Some(1302176482));
        assert!(!m.is_owner);
        assert_eq!(m.display_name.as_deref(), Some("Ann"));
    }

    #[test]
    fn control_items() {
        assert_eq!(
            Item::from_json(&json!({"type": "host", "host": "h2:80"})).unwrap(),
            Item::Host {
                host: "h2:80".into()
            }
        );
        assert_eq!(
            Item::from_json(&json!({"type": "ignMsg", "uid": "123456"})).unwrap(),
            Item::IgnMsg {
                uid: "123456".into()
            }
        );
        let net = vec![NetworkAccount {
            provider: "twitter".into(),
            display_name: "Gyula".into(),
        }];
        assert_eq!(
            Item::from_json(
                &json!({"type": "ignUser", "network": [{"provider":"twitter", "displayName":"Gyula"}]})
            )
            .unwrap(),
            Item::IgnUser {
                network: net.clone()
            }
        );
        assert_eq!(
            Item::from_json(
                &json!({"type": "unIgnUser", "network": [{"provider":"twitter", "displayName":"Gyula"}]})
            )
            .unwrap(),
            Item::UnIgnUser { network: net }
        );
        let u = Item::from_json(&json!({"type": "poll", "q": 1})).unwrap();
        assert_eq!(u.kind(), "poll");
        assert!(Item::from_json(&json!({"type": "host"})).is_err());
        assert!(Item::from_json(&json!({"text": "no uid"})).is_err());
    }

    #[test]
    fn control_items_a_client_cannot_act_on_are_malformed() {
        for bad in [
            // The document's own literal.
            json!({"type": "host", "host": ""}),
            json!({"type": "host", "host": "  "}),
            json!({"type": "host", "host": null}),
            json!({"type": "ignMsg"}),
            json!({"type": "ignMsg", "uid": ""}),
            json!({"type": "ignMsg", "uid": null}),
            json!({"type": "ignUser"}),
            json!({"type": "ignUser", "network": []}),
            json!({"type": "ignUser", "network": [{"provider": "twitter"}]}),
            json!({"type": "unIgnUser", "network": [{"displayName": "Gyula"}]}),
            json!({"type": "unIgnUser", "network": "twitter"}),
            json!({"type": "msg", "uid": "", "text": "x"}),
            json!({"uid": null, "text": "x"}),
            json!("just a string"),
            json!([1, 2]),
        ] {
            let e = Item::from_json(&bad).unwrap_err();
            assert!(e.to_string().contains("malformed"), "{bad}: {e}");
        }
        // Incomplete accounts are dropped, complete ones kept.
        let Item::IgnUser { network } = Item::from_json(&json!({"type": "ignUser",
            "network": [{"provider": "twitter"}, {"provider": "facebook", "displayName": "G"}]}))
        .unwrap() else {
            panic!()
        };
        assert_eq!(network.len(), 1);
        let r: Envelope =
            serde_json::from_value(json!({"range": [1, 2], "payload": null})).unwrap();
        assert!(r.payload.is_empty());
    }
}
