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

/// The typed reading of a response: the envelope and its payload items read straight from
/// the body, without a JSON tree per item. It covers the common shapes only; anything else
/// (a compound value where a scalar belongs, a duplicate field, an item of an unknown type,
/// which keeps its wire JSON) is refused, and the caller reads the body as [`Envelope`] then.
pub(crate) mod typed {
    use std::borrow::Cow;
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde_json::Value;

    use super::{Item, ItemError, Message, NetworkAccount, value_to_i64};

    /// A scalar field as the wire has it.
    #[derive(Debug, Default)]
    pub(crate) enum Leaf<'a> {
        /// Not in the item.
        #[default]
        Absent,
        Null,
        Str(Cow<'a, str>),
        /// A number or a boolean.
        Other(Value),
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Leaf<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = Leaf<'a>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a scalar")
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Leaf<'a>, E> {
                    Ok(Leaf::Str(Cow::Borrowed(v)))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Leaf<'a>, E> {
                    Ok(Leaf::Str(Cow::Owned(v.to_owned())))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<Leaf<'a>, E> {
                    Ok(Leaf::Str(Cow::Owned(v)))
                }
                fn visit_unit<E: de::Error>(self) -> Result<Leaf<'a>, E> {
                    Ok(Leaf::Null)
                }
                fn visit_none<E: de::Error>(self) -> Result<Leaf<'a>, E> {
                    Ok(Leaf::Null)
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<Leaf<'a>, E> {
                    Ok(Leaf::Other(Value::Bool(v)))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Leaf<'a>, E> {
                    Ok(Leaf::Other(Value::from(v)))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Leaf<'a>, E> {
                    Ok(Leaf::Other(Value::from(v)))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Leaf<'a>, E> {
                    Ok(Leaf::Other(Value::from(v)))
                }
            }
            d.deserialize_any(V(std::marker::PhantomData))
        }
    }

    impl Leaf<'_> {
        /// As `de_string` reads it.
        fn string(self) -> String {
            match self {
                Leaf::Absent | Leaf::Null => String::new(),
                Leaf::Str(s) => s.into_owned(),
                Leaf::Other(v) => v.to_string(),
            }
        }
        /// As `de_opt_string` reads it.
        fn opt_string(self) -> Option<String> {
            match self {
                Leaf::Absent | Leaf::Null => None,
                Leaf::Str(s) => Some(s.into_owned()),
                Leaf::Other(v) => Some(v.to_string()),
            }
        }
        /// As `value_to_i64` reads it.
        fn i64(&self) -> Option<i64> {
            match self {
                Leaf::Absent | Leaf::Null => None,
                Leaf::Str(s) => {
                    let s = s.trim();
                    s.parse::<i64>()
                        .ok()
                        .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
                }
                Leaf::Other(v) => value_to_i64(v),
            }
        }
        /// As `de_bool` reads it.
        fn bool(&self) -> bool {
            match self {
                Leaf::Absent | Leaf::Null => false,
                Leaf::Str(s) => matches!(s.trim(), "1" | "true" | "yes"),
                Leaf::Other(Value::Bool(b)) => *b,
                Leaf::Other(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
                Leaf::Other(_) => false,
            }
        }
    }

    /// Reads `T` only from a JSON object (a derived struct would take an array too).
    pub(crate) struct Obj<T>(pub(crate) T);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(std::marker::PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = Obj<T>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                    T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj)
                }
            }
            d.deserialize_map(V(std::marker::PhantomData))
        }
    }

    /// One `network[]` entry.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct Account<'a> {
        #[serde(borrow, default)]
        provider: Leaf<'a>,
        #[serde(borrow, default)]
        display_name: Leaf<'a>,
    }

    /// A payload item's fields, whatever its type.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct Fields<'a> {
        #[serde(borrow, default, rename = "type")]
        kind: Leaf<'a>,
        #[serde(borrow, default)]
        uid: Leaf<'a>,
        #[serde(borrow, default)]
        created_at: Leaf<'a>,
        #[serde(borrow, default)]
        is_owner: Leaf<'a>,
        #[serde(borrow, default)]
        profile_picture_url: Leaf<'a>,
        #[serde(borrow, default)]
        profile_network: Leaf<'a>,
        #[serde(borrow, default)]
        profile_user_name: Leaf<'a>,
        #[serde(borrow, default)]
        display_name: Leaf<'a>,
        #[serde(borrow, default)]
        text: Leaf<'a>,
        #[serde(borrow, default)]
        host: Leaf<'a>,
        #[serde(borrow)]
        network: Option<Vec<Obj<Account<'a>>>>,
    }

    /// The envelope, its payload read as [`Fields`].
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct Envelope<'a> {
        #[serde(default = "super::yes", deserialize_with = "super::de_bool")]
        pub(crate) success: bool,
        #[serde(default, deserialize_with = "super::de_opt_u64")]
        pub(crate) refresh_interval: Option<u64>,
        #[serde(default, deserialize_with = "super::de_range")]
        pub(crate) range: Option<[i64; 2]>,
        #[serde(borrow)]
        pub(crate) payload: Option<Vec<Obj<Fields<'a>>>>,
        #[serde(default, deserialize_with = "super::de_bool")]
        pub(crate) is_suffix_cleaning_needed: bool,
        // Read (not used: a failure is read as an [`Envelope`]) so that a body the typed
        // reading takes is one the [`Envelope`] reading takes too.
        #[serde(default)]
        #[allow(dead_code)]
        message: Option<String>,
        #[serde(default)]
        #[allow(dead_code)]
        status_update: Option<IgnoredAny>,
    }

    /// What [`Item::from_json`] makes of an item with these fields, with its `createdAt`;
    /// `None` for an item of a type this reading does not cover.
    pub(crate) fn item(f: Fields<'_>) -> Option<(Result<Item, ItemError>, Option<i64>)> {
        let at = f.created_at.i64();
        let kind = match f.kind {
            Leaf::Absent | Leaf::Null => "msg".to_owned(),
            Leaf::Str(s) if s.is_empty() => "msg".to_owned(),
            Leaf::Str(s) => s.into_owned(),
            Leaf::Other(v) => v.to_string(),
        };
        let err = |source: serde_json::Error| ItemError {
            kind: kind.clone(),
            source,
        };
        let invalid = |what: &str| err(<serde_json::Error as de::Error>::custom(what));
        let missing =
            |field: &'static str| err(<serde_json::Error as de::Error>::missing_field(field));
        let non_empty = |s: String, what: &str| {
            if s.trim().is_empty() {
                Err(invalid(what))
            } else {
                Ok(s)
            }
        };
        let network = || -> Vec<NetworkAccount> {
            f.network
                .into_iter()
                .flatten()
                .map(|Obj(a)| NetworkAccount {
                    provider: a.provider.string(),
                    display_name: a.display_name.string(),
                })
                .collect()
        };
        let result = match kind.as_str() {
            "msg" => match f.uid {
                Leaf::Absent => Err(missing("uid")),
                uid => {
                    let m = Message {
                        uid: uid.string(),
                        created_at: at,
                        is_owner: f.is_owner.bool(),
                        profile_picture_url: f.profile_picture_url.opt_string(),
                        profile_network: f.profile_network.opt_string(),
                        profile_user_name: f.profile_user_name.opt_string(),
                        display_name: f.display_name.opt_string(),
                        text: f.text.string(),
                        network: network(),
                        flag: None,
                        time_elapsed: None,
                    };
                    if m.uid.trim().is_empty() {
                        Err(invalid("uid is empty"))
                    } else {
                        Ok(Item::Msg(Box::new(m)))
                    }
                }
            },
            "host" => match f.host {
                Leaf::Absent => Err(missing("host")),
                h => non_empty(h.string(), "host is empty").map(|host| Item::Host { host }),
            },
            "ignMsg" => match f.uid {
                Leaf::Absent => Err(missing("uid")),
                u => non_empty(u.string(), "uid is empty").map(|uid| Item::IgnMsg { uid }),
            },
            "ignUser" | "unIgnUser" => {
                let mut accounts = network();
                accounts.retain(|a| !a.provider.trim().is_empty() && !a.display_name.is_empty());
                if accounts.is_empty() {
                    Err(invalid(
                        "names no account (network entries need provider and displayName)",
                    ))
                } else if kind == "ignUser" {
                    Ok(Item::IgnUser { network: accounts })
                } else {
                    Ok(Item::UnIgnUser { network: accounts })
                }
            }
            _ => return None,
        };
        Some((result, at))
    }
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
