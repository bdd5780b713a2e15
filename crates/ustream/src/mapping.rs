//! Pure mapping of payload items to chat-model events, and the per-response ordering rules.

use chat_model::{Author, Event, Kind, Service, Timestamp};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use crate::wire::{Item, Message, NetworkAccount, created_at_of};

/// Removes the generated `" (... live at http://ustre.am/XXXX)"` suffix from a message text.
///
/// Text without such a suffix is returned unchanged.
pub fn clean_suffix(text: &str) -> &str {
    let trimmed = text.trim_end();
    let Some(body) = trimmed.strip_suffix(')') else {
        return text;
    };
    let Some(live) = body.rfind(" live at ") else {
        return text;
    };
    let link = &body[live + " live at ".len()..];
    let is_link = (link.starts_with("http://") || link.starts_with("https://"))
        && !link.contains(char::is_whitespace)
        && link.contains("ustre.am/");
    if !is_link {
        return text;
    }
    let Some(open) = body[..live].rfind('(') else {
        return text;
    };
    text[..open].trim_end()
}

/// The event id of the message with this uid on this channel: `ustream:<channel>:<uid>`.
pub fn message_id(channel: &str, uid: &str) -> String {
    format!("ustream:{channel}:{uid}")
}

/// The author of a message: id `network:username`, the best display name, the shown network.
pub fn author_of(m: &Message) -> Author {
    let network = m.profile_network.clone().filter(|s| !s.is_empty());
    let shown = network
        .as_deref()
        .and_then(|p| m.network.iter().find(|n| n.provider == p))
        .or_else(|| m.network.first());
    let name = m
        .display_name
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| shown.map(|n| n.display_name.clone()))
        .filter(|s| !s.is_empty())
        .or_else(|| m.profile_user_name.clone());
    let id = match (&network, &m.profile_user_name) {
        (Some(p), Some(u)) if !u.is_empty() => Some(format!("{p}:{u}")),
        _ => shown.map(|n| format!("{}:{}", n.provider, n.display_name)),
    };
    Author {
        id,
        name,
        network: network.or_else(|| shown.map(|n| n.provider.clone())),
    }
}

/// The accounts a message's author is known by, for matching against an ignore list.
pub fn accounts_of(m: &Message) -> Vec<NetworkAccount> {
    let mut v = m.network.clone();
    if let (Some(p), Some(name)) = (&m.profile_network, &m.display_name) {
        v.push(NetworkAccount {
            provider: p.clone(),
            display_name: name.clone(),
        });
    }
    v
}

/// Epoch seconds as a UTC timestamp (the epoch itself when out of range).
pub fn epoch(secs: i64) -> Timestamp {
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or_else(|| Utc.timestamp_opt(0, 0).unwrap())
}

/// Where an event came from: the source name, channel and whether to keep the wire JSON.
#[derive(Clone, Debug)]
pub struct Context {
    /// The configured source name (the `source` field of events).
    pub source: String,
    /// The channel id.
    pub channel: String,
}

impl Context {
    fn event(&self, kind: Kind, id: String, at: Timestamp, raw: &Value) -> Event {
        Event::new(
            self.source.clone(),
            Service::Ustream,
            kind,
            id,
            self.channel.clone(),
            at,
        )
        .with_raw(raw.clone())
    }

    /// A message as a [`Kind::Message`] event; `clean` removes the generated suffix.
    pub fn message(&self, m: &Message, at: i64, clean: bool, raw: &Value) -> Event {
        let text = if clean {
            clean_suffix(&m.text)
        } else {
            &m.text
        };
        let mut e = self
            .event(
                Kind::Message,
                message_id(&self.channel, &m.uid),
                epoch(at),
                raw,
            )
            .with_author(author_of(m))
            .with_text(text);
        e.native_id = Some(m.uid.clone());
        let mut detail = json!({ "type": "msg", "is_owner": m.is_owner });
        if let Some(p) = &m.profile_picture_url {
            detail["profile_picture_url"] = json!(p);
        }
        if !m.network.is_empty() {
            detail["network"] = json!(m.network);
        }
        e.detail = Some(detail);
        e
    }

    /// A retraction of the message with `uid` (an `ignMsg` item).
    pub fn retraction(&self, uid: &str, at: i64, raw: &Value) -> Event {
        let mut e = self
            .event(
                Kind::Retraction,
                format!("ustream:{}:ignMsg:{uid}", self.channel),
                epoch(at),
                raw,
            )
            .refers_to(message_id(&self.channel, uid))
            .with_detail(json!({"type": "ignMsg"}));
        e.native_id = Some(uid.to_owned());
        e
    }

    /// An ignore ([`Kind::Ignore`]) or unignore event for these accounts; `stamp` makes the id
    /// unique per occurrence (the window it arrived in).
    pub fn ignore(
        &self,
        ignore: bool,
        network: &[NetworkAccount],
        at: i64,
        stamp: &str,
        raw: &Value,
    ) -> Event {
        let (kind, ty) = if ignore {
            (Kind::Ignore, "ignUser")
        } else {
            (Kind::Unignore, "unIgnUser")
        };
        let first = network.first().cloned().unwrap_or_default();
        let who: Vec<String> = network
            .iter()
            .map(|n| format!("{}/{}", n.provider, n.display_name))
            .collect();
        let author = Author::new(
            Some(format!("{}:{}", first.provider, first.display_name)),
            Some(first.display_name.clone()),
        )
        .on_network(first.provider.clone());
        self.event(
            kind,
            format!("ustream:{}:{ty}:{}@{stamp}", self.channel, who.join(",")),
            epoch(at),
            raw,
        )
        .with_author(author)
        .with_detail(json!({"type": ty, "network": network}))
    }

    /// A host switch notice ([`Kind::System`], `detail.type` = "host").
    pub fn host(&self, host: &str, at: i64, stamp: &str, raw: &Value) -> Event {
        self.event(
            Kind::System,
            format!("ustream:{}:host:{host}@{stamp}", self.channel),
            epoch(at),
            raw,
        )
        .with_text(format!("social stream moved to {host}"))
        .with_detail(json!({"type": "host", "host": host}))
    }

    /// An item of a type this crate does not know ([`Kind::System`], `detail.type` = its type).
    pub fn unknown(&self, kind: &str, index_key: &str, at: i64, raw: &Value) -> Event {
        let id = match raw.get("uid") {
            Some(Value::String(s)) => format!("ustream:{}:{kind}:{s}", self.channel),
            Some(v) if !v.is_null() => format!("ustream:{}:{kind}:{v}", self.channel),
            _ => format!("ustream:{}:{kind}@{index_key}", self.channel),
        };
        let text = raw
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.event(Kind::System, id, epoch(at), raw)
            .with_text(text)
            .with_detail(json!({"type": kind}))
    }
}

/// A payload item read and placed in time: the oldest first after [`order_payload`].
#[derive(Clone, Debug)]
pub struct Ordered {
    /// The parsed item, or why it could not be read.
    pub item: Result<Item, String>,
    /// Its time in epoch seconds (inherited from the item before it when it has none).
    pub at: i64,
    /// The wire JSON.
    pub raw: Value,
    /// Position in the server's (newest-first) payload, for stable ids of untimed items.
    pub position: usize,
}

/// Puts a newest-first payload into time order: reversed, then stably sorted by `createdAt`;
/// items without a time keep their place after the item before them.
pub fn order_payload(payload: &[Value], fallback_at: i64) -> Vec<Ordered> {
    let mut out: Vec<Ordered> = Vec::with_capacity(payload.len());
    let mut last: Option<i64> = None;
    for (position, raw) in payload.iter().enumerate().rev() {
        let at = created_at_of(raw).or(last);
        last = at.or(last);
        out.push(Ordered {
            item: Item::from_json(raw).map_err(|e| e.to_string()),
            at: at.unwrap_or(i64::MIN),
            raw: raw.clone(),
            position,
        });
    }
    // Items before the first timed one take the first time seen (or the window's time).
    let first = out
        .iter()
        .map(|o| o.at)
        .find(|&a| a != i64::MIN)
        .unwrap_or(fallback_at);
    for o in &mut out {
        if o.at == i64::MIN {
            o.at = first;
        }
    }
    out.sort_by_key(|o| o.at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn suffix_cleaning() {
        assert_eq!(
            clean_suffix("great show (@chan live at http://ustre.am/abcd)"),
            "great show"
        );
        assert_eq!(
            clean_suffix("great show (... live at http://ustre.am/XXXX) "),
            "great show"
        );
        assert_eq!(clean_suffix("no suffix (here)"), "no suffix (here)");
        assert_eq!(clean_suffix("(live at home)"), "(live at home)");
        assert_eq!(clean_suffix("plain"), "plain");
        assert_eq!(clean_suffix("x (a) (b live at http://ustre.am/1)"), "x (a)");
    }

    fn ctx() -> Context {
        Context {
            source: "us".into(),
            channel: "42".into(),
        }
    }

    #[test]
    fn message_maps() {
        let raw = json!({"uid": "7", "createdAt": 1302176481, "isOwner": 1, "text": "hi (x live at http://ustre.am/q1)",
            "profileNetwork": "twitter", "profileUserName": "gy", "profilePictureUrl": "http://p/1.png",
            "network": [{"provider": "facebook", "displayName": "G F"}, {"provider": "twitter", "displayName": "Gyula"}]});
        let Item::Msg(m) = Item::from_json(&raw).unwrap() else {
            panic!()
        };
        let e = ctx().message(&m, 1302176481, true, &raw);
        assert_eq!(e.id, "ustream:42:7");
        assert_eq!(e.kind, Kind::Message);
        assert_eq!(e.room, "42");
        assert_eq!(e.text, "hi");
        assert_eq!(e.author.id.as_deref(), Some("twitter:gy"));
        assert_eq!(e.author.name.as_deref(), Some("Gyula"));
        assert_eq!(e.author.network.as_deref(), Some("twitter"));
        assert_eq!(e.at.timestamp(), 1302176481);
        assert_eq!(e.detail.as_ref().unwrap()["is_owner"], true);
        assert_eq!(e.raw.as_ref().unwrap(), &raw);
        let kept = ctx().message(&m, 1302176481, false, &raw);
        assert!(kept.text.ends_with("ustre.am/q1)"));
    }

    #[test]
    fn display_name_field_wins() {
        let raw =
            json!({"uid": "8", "text": "a", "displayName": "Ann", "profileNetwork": "ustream"});
        let Item::Msg(m) = Item::from_json(&raw).unwrap() else {
            panic!()
        };
        let a = author_of(&m);
        assert_eq!(a.name.as_deref(), Some("Ann"));
        assert_eq!(a.network.as_deref(), Some("ustream"));
        assert!(accounts_of(&m).contains(&NetworkAccount {
            provider: "ustream".into(),
            display_name: "Ann".into()
        }));
    }

    #[test]
    fn control_events_map() {
        let c = ctx();
        let r = c.retraction("123456", 5, &json!({}));
        assert_eq!(r.kind, Kind::Retraction);
        assert_eq!(r.refers_to.as_deref(), Some("ustream:42:123456"));
        let net = vec![NetworkAccount {
            provider: "twitter".into(),
            display_name: "Gyula".into(),
        }];
        let i = c.ignore(true, &net, 5, "100-110", &json!({}));
        assert_eq!(i.kind, Kind::Ignore);
        assert_eq!(i.author.name.as_deref(), Some("Gyula"));
        assert_eq!(i.author.network.as_deref(), Some("twitter"));
        let u = c.ignore(false, &net, 5, "100-110", &json!({}));
        assert_eq!(u.kind, Kind::Unignore);
        assert_ne!(i.id, u.id);
        let h = c.host("h2", 5, "1", &json!({}));
        assert_eq!(h.detail.unwrap()["type"], "host");
        let x = c.unknown("poll", "1:0", 5, &json!({"type": "poll"}));
        assert_eq!(x.kind, Kind::System);
        assert_eq!(x.detail.unwrap()["type"], "poll");
    }

    #[test]
    fn payload_is_put_in_time_order() {
        let payload = vec![
            json!({"uid": "c", "createdAt": 30, "text": "3"}),
            json!({"type": "ignMsg", "uid": "a"}),
            json!({"uid": "b", "createdAt": "20", "text": "2"}),
            json!({"uid": "b2", "createdAt": 20, "text": "2b"}),
            json!({"uid": "a", "createdAt": 10, "text": "1"}),
        ];
        let o = order_payload(&payload, 99);
        let uids: Vec<String> = o
            .iter()
            .map(|o| o.raw["uid"].as_str().unwrap().to_owned())
            .collect();
        // reversed: a(10), b2(20), b(20), ignMsg(inherits 20), c(30)
        assert_eq!(uids, ["a", "b2", "b", "a", "c"]);
        assert_eq!(o[3].at, 20);
        assert!(matches!(o[3].item, Ok(Item::IgnMsg { .. })));
        let only_control = order_payload(&[json!({"type": "host", "host": "x"})], 99);
        assert_eq!(only_control[0].at, 99);
    }
}
