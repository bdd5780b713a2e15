//! Pure mapping of payload items to chat-model events, and the per-response ordering rules.

use chat_model::{Author, Event, Kind, Service, Timestamp};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use crate::wire::{Item, Message, NetworkAccount, created_at_of};

/// Removes the generated suffix from a message text: ` (live at http://ustre.am/XXXX)` or
/// ` (... live at http://ustre.am/XXXX)` (e.g. `(@channel live at ...)`) at its very end.
///
/// The suffix is a last parenthesised group (at the start of the text or after whitespace)
/// that reads `live at LINK`, optionally after a prefix ending in a space, where `LINK` is an
/// `http(s)://ustre.am/...` short link. Anything else is returned unchanged: a text that
/// mentions "live at" elsewhere, a last group that is not such a suffix.
pub fn clean_suffix(text: &str) -> &str {
    const LIVE_AT: &str = "live at ";
    let trimmed = text.trim_end();
    let Some(body) = trimmed.strip_suffix(')') else {
        return text;
    };
    let Some(open) = body.rfind('(') else {
        return text;
    };
    let inner = &body[open + 1..];
    if inner.contains(')') {
        return text;
    }
    let link = if let Some(link) = inner.strip_prefix(LIVE_AT) {
        link
    } else if let Some(at) = inner.rfind(" live at ") {
        &inner[at + 1 + LIVE_AT.len()..]
    } else {
        return text;
    };
    if !is_short_link(link) {
        return text;
    }
    let before = &text[..open];
    if !(before.is_empty() || before.ends_with(char::is_whitespace)) {
        return text;
    }
    before.trim_end()
}

/// Whether `link` is a Ustream short link: `http(s)://ustre.am/PATH`, no whitespace.
fn is_short_link(link: &str) -> bool {
    let Some(rest) = link
        .strip_prefix("http://")
        .or_else(|| link.strip_prefix("https://"))
    else {
        return false;
    };
    let Some((host, path)) = rest.split_once('/') else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    (host == "ustre.am" || host.ends_with(".ustre.am"))
        && !path.is_empty()
        && !link.contains(char::is_whitespace)
}

/// The event id of the message with this uid on this channel: `ustream:<channel>:<uid>`.
pub fn message_id(channel: &str, uid: &str) -> String {
    format!("ustream:{channel}:{uid}")
}

/// The user key of an account: `provider:displayName`, the way the document names a user
/// (`ignUser` / `unIgnUser` carry exactly these two fields).
pub fn account_key(a: &NetworkAccount) -> String {
    format!("{}:{}", a.provider, a.display_name)
}

/// The account a message is shown under: the `network[]` entry of `profileNetwork`, else the
/// `displayName` field on `profileNetwork`, else the first `network[]` entry.
fn shown_account(m: &Message) -> Option<NetworkAccount> {
    let network = m.profile_network.as_deref().filter(|s| !s.is_empty());
    let usable = |n: &&NetworkAccount| !n.provider.is_empty() && !n.display_name.is_empty();
    network
        .and_then(|p| m.network.iter().filter(usable).find(|n| n.provider == p))
        .cloned()
        .or_else(|| match (network, m.display_name.as_deref()) {
            (Some(p), Some(name)) if !name.is_empty() => Some(NetworkAccount {
                provider: p.to_owned(),
                display_name: name.to_owned(),
            }),
            _ => None,
        })
        .or_else(|| m.network.iter().find(usable).cloned())
}

/// The author of a message.
///
/// - `id`: the user key `provider:displayName` of the account the message is shown under
///   (see [`account_key`]), the same id an `ignore`/`unignore` event of that account carries;
///   only when the item names no display name at all, `profileNetwork:profileUserName`.
/// - `name`: the `displayName` field, else the shown account's display name, else
///   `profileUserName`.
/// - `network`: `profileNetwork`, else the shown account's provider.
///
/// `profileUserName` is kept in the event's `detail.profile_user_name`, and every account
/// the user is known by in `detail.accounts` (user keys).
pub fn author_of(m: &Message) -> Author {
    let network = m.profile_network.clone().filter(|s| !s.is_empty());
    let shown = shown_account(m);
    let name = m
        .display_name
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| shown.as_ref().map(|n| n.display_name.clone()))
        .filter(|s| !s.is_empty())
        .or_else(|| m.profile_user_name.clone());
    let id = match (&shown, &network, &m.profile_user_name) {
        (Some(a), _, _) => Some(account_key(a)),
        (None, Some(p), Some(u)) if !u.is_empty() => Some(format!("{p}:{u}")),
        _ => None,
    };
    Author {
        id,
        name,
        network: network.or_else(|| shown.map(|n| n.provider)),
    }
}

/// The accounts a message's author is known by (`network[]`, and the `displayName` field on
/// `profileNetwork`), for matching against an ignore list: the document matches users by
/// network provider + displayName.
pub fn accounts_of(m: &Message) -> Vec<NetworkAccount> {
    let mut v: Vec<NetworkAccount> = m
        .network
        .iter()
        .filter(|n| !n.provider.is_empty() && !n.display_name.is_empty())
        .cloned()
        .collect();
    if let (Some(p), Some(name)) = (&m.profile_network, &m.display_name) {
        let a = NetworkAccount {
            provider: p.clone(),
            display_name: name.clone(),
        };
        if !p.is_empty() && !name.is_empty() && !v.contains(&a) {
            v.push(a);
        }
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
    /// Keep the wire JSON in `Event::raw`.
    pub keep_raw: bool,
}

impl Context {
    fn event(&self, kind: Kind, id: String, at: Timestamp, raw: &Value) -> Event {
        let mut e = Event::new(
            self.source.clone(),
            Service::Ustream,
            kind,
            id,
            self.channel.clone(),
            at,
        );
        if self.keep_raw {
            e.raw = Some(raw.clone());
        }
        e
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
        if let Some(u) = m.profile_user_name.as_deref().filter(|u| !u.is_empty()) {
            detail["profile_user_name"] = json!(u);
        }
        let accounts: Vec<String> = accounts_of(m).iter().map(account_key).collect();
        if !accounts.is_empty() {
            detail["accounts"] = json!(accounts);
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

    /// A retraction of an earlier message of a user an `ignUser` item (whose event id is
    /// `ignore_id`) ignores: the document says to remove all of that user's messages.
    pub fn user_retraction(
        &self,
        uid: &str,
        ignore_id: &str,
        network: &[NetworkAccount],
        at: i64,
        raw: &Value,
    ) -> Event {
        let mut e = self
            .event(
                Kind::Retraction,
                format!("{ignore_id}/{uid}"),
                epoch(at),
                raw,
            )
            .refers_to(message_id(&self.channel, uid))
            .with_detail(json!({"type": "ignUser", "ignore": ignore_id, "network": network}));
        e.native_id = Some(uid.to_owned());
        e
    }

    /// An ignore ([`Kind::Ignore`]) or unignore event for these accounts; `stamp` makes the id
    /// unique per occurrence (the window it arrived in). Its author id is the first account's
    /// user key, as a message's is ([`author_of`]); `detail.accounts` lists every account.
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
        let author = Author::new(Some(account_key(&first)), Some(first.display_name.clone()))
            .on_network(first.provider.clone());
        let accounts: Vec<String> = network.iter().map(account_key).collect();
        self.event(
            kind,
            format!("ustream:{}:{ty}:{}@{stamp}", self.channel, who.join(",")),
            epoch(at),
            raw,
        )
        .with_author(author)
        .with_detail(json!({"type": ty, "network": network, "accounts": accounts}))
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
    order_owned_payload(payload.to_vec(), fallback_at)
}

/// [`order_payload`] of a payload that is not needed afterwards (its items move, uncopied).
pub(crate) fn order_owned_payload(payload: Vec<Value>, fallback_at: i64) -> Vec<Ordered> {
    let items = payload.into_iter().map(|raw| {
        let item = Item::from_json(&raw).map_err(|e| e.to_string());
        (item, created_at_of(&raw), raw)
    });
    order_items(items.collect(), fallback_at)
}

/// [`order_payload`] of items read already: `(item, createdAt, wire JSON)`, newest first.
pub(crate) fn order_items(
    payload: Vec<(Result<Item, String>, Option<i64>, Value)>,
    fallback_at: i64,
) -> Vec<Ordered> {
    let mut out: Vec<Ordered> = Vec::with_capacity(payload.len());
    let mut last: Option<i64> = None;
    for (position, (item, at, raw)) in payload.into_iter().enumerate().rev() {
        let at = at.or(last);
        last = at.or(last);
        out.push(Ordered {
            item,
            at: at.unwrap_or(i64::MIN),
            raw,
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

    #[test]
    fn both_suffix_forms_are_cleaned_and_nothing_else() {
        // Nothing before "live at" (seen on the wire besides the "@channel" form).
        assert_eq!(
            clean_suffix("great show (live at http://ustre.am/2b5Xq)"),
            "great show"
        );
        assert_eq!(
            clean_suffix("great show (@chan1234 live at http://ustre.am/2b5Xq)"),
            "great show"
        );
        assert_eq!(clean_suffix("(live at http://ustre.am/1)"), "");
        assert_eq!(clean_suffix("hi\n(live at https://ustre.am/1)  "), "hi");
        // Mentions, look-alikes and other last groups stay.
        for t in [
            "we are live at http://ustre.am/x tonight",
            "we are (live at http://ustre.am/x) tonight",
            "see (live at http://ustre.am/x) (again)",
            "x(live at http://ustre.am/1)",
            "x (live at http://example.com/1)",
            "x (live at http://ustre.am/)",
            "x (live at http://ustre.am/a b)",
            "x (alive at http://ustre.am/1)",
            "x (I was live at)",
            "x (live at http://notustre.am/1)",
        ] {
            assert_eq!(clean_suffix(t), t);
        }
    }

    fn token() -> impl proptest::strategy::Strategy<Value = &'static str> {
        proptest::sample::select(
            &[
                "live at ",
                "live at",
                " ",
                "(",
                ")",
                "http://ustre.am/ab",
                "@chan7",
                "x",
                "é",
                "\n",
                "...",
                " (again)",
                "ustre.am/",
                "https://",
                "日本",
            ][..],
        )
    }

    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy;
        proptest::collection::vec(token(), 0..12).prop_map(|v| v.concat())
    }

    proptest::proptest! {
        /// Either suffix form at the end of any text goes, and only it.
        #[test]
        fn any_generated_suffix_goes_and_nothing_else(
            body in text(),
            form in 0u8..3,
            channel in "[a-z0-9]{1,8}",
            code in "[a-zA-Z0-9]{1,6}",
            trailing in "[ ]{0,2}",
        ) {
            let prefix = match form {
                0 => String::new(),
                1 => format!("@{channel} "),
                _ => "... ".to_owned(),
            };
            let t = format!("{body} ({prefix}live at http://ustre.am/{code}){trailing}");
            proptest::prop_assert_eq!(clean_suffix(&t), body.trim_end());
        }

        /// A text that mentions "live at" (even with a short link) anywhere but in a final
        /// suffix group is left alone; cleaning never does more than cut the end.
        #[test]
        fn a_mention_in_the_middle_stays(
            before in text(),
            after in text(),
            code in "[a-zA-Z0-9]{1,6}",
        ) {
            let t = format!("{before} (live at http://ustre.am/{code}) {after}x");
            proptest::prop_assert_eq!(clean_suffix(&t), t.as_str());
            let u = format!("{before} live at http://ustre.am/{code} {after}x");
            proptest::prop_assert_eq!(clean_suffix(&u), u.as_str());
        }

        /// Whatever the text, the result is the text or a prefix of it.
        #[test]
        fn cleaning_only_cuts_the_end(t in text()) {
            let c = clean_suffix(&t);
            proptest::prop_assert!(t.starts_with(c));
        }
    }

    fn ctx() -> Context {
        Context {
            source: "us".into(),
            channel: "42".into(),
            keep_raw: true,
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
        // The user key (provider + displayName, as ignUser names users), not the username.
        assert_eq!(e.author.id.as_deref(), Some("twitter:Gyula"));
        assert_eq!(e.detail.as_ref().unwrap()["profile_user_name"], "gy");
        assert_eq!(
            e.detail.as_ref().unwrap()["accounts"],
            json!(["facebook:G F", "twitter:Gyula"])
        );
        assert_eq!(e.author.name.as_deref(), Some("Gyula"));
        assert_eq!(e.author.network.as_deref(), Some("twitter"));
        assert_eq!(e.at.timestamp(), 1302176481);
        assert_eq!(e.detail.as_ref().unwrap()["is_owner"], true);
        assert_eq!(e.raw.as_ref().unwrap(), &raw);
        let kept = ctx().message(&m, 1302176481, false, &raw);
        assert!(kept.text.ends_with("ustre.am/q1)"));
    }

    #[test]
    fn a_messages_author_id_equals_the_ignore_events_for_the_same_user() {
        // The document's own example: ignUser names {"provider":"twitter", "displayName":"Gyula"}.
        let raw = json!({"uid": "9", "text": "a", "profileNetwork": "twitter",
            "profileUserName": "gyula_x", "network": [{"provider": "twitter", "displayName": "Gyula"}]});
        let Item::Msg(m) = Item::from_json(&raw).unwrap() else {
            panic!()
        };
        let net = vec![NetworkAccount {
            provider: "twitter".into(),
            display_name: "Gyula".into(),
        }];
        let ignore = ctx().ignore(true, &net, 5, "1.1", &json!({}));
        assert_eq!(author_of(&m).id, ignore.author.id);
        assert_eq!(author_of(&m).id.as_deref(), Some("twitter:Gyula"));
        // Without any display name, the username is all there is.
        let raw = json!({"uid": "10", "text": "a", "profileNetwork": "twitter", "profileUserName": "gyula_x"});
        let Item::Msg(m) = Item::from_json(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(author_of(&m).id.as_deref(), Some("twitter:gyula_x"));
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
        assert_eq!(i.author.id.as_deref(), Some("twitter:Gyula"));
        assert_eq!(
            i.detail.as_ref().unwrap()["accounts"],
            json!(["twitter:Gyula"])
        );
        let r = c.user_retraction("77", &i.id, &net, 6, &json!({}));
        assert_eq!(r.kind, Kind::Retraction);
        assert_eq!(r.refers_to.as_deref(), Some("ustream:42:77"));
        assert!(r.id.starts_with(&i.id) && r.id.ends_with("/77"));
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
