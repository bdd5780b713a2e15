//! User names: Flowdock events carry user ids only (`user`, `to`, an action's `user`); the
//! names come from the REST users API on the API host.
//!
//! * `GET /flows/:org/:flow/users`: the users of a flow, fetched once per connection.
//! * `GET /users/:id`: one user, looked up when an event names an id the cache does not know.
//!
//! [`UserCache`] is the sans-IO part: which ids are known, which need a lookup now, and what a
//! lookup's outcome means (a name, no such user, or a failure that pauses lookups for a
//! while). It reads no clock: every call takes `now`. It also decides how long an event may
//! wait: [`UserCache::round_for`] gives the ids to look up and a deadline one lookup timeout
//! ([`ClientConfig::user_lookup_timeout`](crate::ClientConfig::user_lookup_timeout)) away, and
//! [`UserCache::finish_round`] records the [`RoundOutcome`]. [`Names`] is the thin async driver
//! the client uses: it makes the round's calls until its deadline, and when the API fails the
//! event goes out with its ids only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chat_model::{Event, Secret, SourceItem, lock_ignoring_poison, redact_url};
use reqwest::header::ACCEPT;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::wire::NumOrStr;

/// One user as the REST users API returns it (other fields are ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user id (a number on the real API; the streams send it as a string).
    pub id: NumOrStr,
    /// The nick shown in the chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nick: Option<String>,
    /// The full name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl User {
    /// The name to show: the nick, else the full name (blank ones skipped).
    pub fn display_name(&self) -> Option<String> {
        [&self.nick, &self.name]
            .into_iter()
            .flatten()
            .map(|s| s.trim())
            .find(|s| !s.is_empty())
            .map(str::to_owned)
    }
}

/// Whether `id` names a user that can be looked up: a decimal id other than `"0"` (which
/// means no user).
pub fn is_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 20
        && id.bytes().all(|b| b.is_ascii_digit())
        && id.bytes().any(|b| b != b'0')
}

/// How long the cache trusts what it learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSettings {
    /// A known name is refreshed (looked up again) after this long.
    pub ttl: Duration,
    /// An id the API does not know (404) is asked for again after this long.
    pub missing_ttl: Duration,
    /// After a failed lookup (network, timeout, 5xx), no lookups for this long.
    pub failure_pause: Duration,
    /// A flow's user list is not fetched again within this long (reconnect storms).
    pub flow_refetch: Duration,
    /// The most ids kept; the oldest entry is dropped beyond it.
    pub max_entries: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            ttl: Duration::from_secs(3600),
            missing_ttl: Duration::from_secs(600),
            failure_pause: Duration::from_secs(30),
            flow_refetch: Duration::from_secs(30),
            max_entries: 10_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// The display name; None when the API does not know the id (or gave no name).
    name: Option<String>,
    /// When this was learnt.
    at: Instant,
}

/// The sans-IO user cache: ids to names, and when to ask the API.
#[derive(Clone, Debug)]
pub struct UserCache {
    settings: CacheSettings,
    entries: HashMap<String, Entry>,
    /// No lookups before this instant (after a failure).
    paused_until: Option<Instant>,
    /// When each flow's user list was last fetched.
    flows_fetched: HashMap<String, Instant>,
}

impl Default for UserCache {
    fn default() -> Self {
        UserCache::new(CacheSettings::default())
    }
}

impl UserCache {
    /// An empty cache.
    pub fn new(settings: CacheSettings) -> Self {
        UserCache {
            settings,
            entries: HashMap::new(),
            paused_until: None,
            flows_fetched: HashMap::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// How many ids the cache holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds no id.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The known name of `id` (also a stale one, until it is replaced).
    pub fn name(&self, id: &str) -> Option<&str> {
        self.entries.get(id)?.name.as_deref()
    }

    /// Whether lookups are paused at `now` after a failure.
    pub fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| now < until)
    }

    /// Whether `id` should be looked up at `now`: a user id that is unknown, or whose entry
    /// expired, while lookups are not paused.
    pub fn needs_lookup(&self, id: &str, now: Instant) -> bool {
        if !is_user_id(id) || self.paused(now) {
            return false;
        }
        match self.entries.get(id) {
            None => true,
            Some(e) => {
                let ttl = if e.name.is_some() {
                    self.settings.ttl
                } else {
                    self.settings.missing_ttl
                };
                now.saturating_duration_since(e.at) >= ttl
            }
        }
    }

    /// Records a user learnt at `now` (from a flow's list or a lookup).
    pub fn insert(&mut self, user: &User, now: Instant) {
        let id = user.id.as_string();
        if !is_user_id(&id) {
            return;
        }
        let name = user.display_name();
        self.put(id, name, now);
    }

    /// Records that the API does not know `id` (404) at `now`; a name known before is kept.
    pub fn insert_missing(&mut self, id: &str, now: Instant) {
        if !is_user_id(id) {
            return;
        }
        let name = self.entries.get(id).and_then(|e| e.name.clone());
        self.put(id.to_owned(), name, now);
    }

    /// Records a failed lookup at `now`: no lookups until the pause is over; known names stay.
    pub fn lookup_failed(&mut self, now: Instant) {
        self.paused_until = Some(now + self.settings.failure_pause);
    }

    /// Whether the user list of `flow` should be fetched at `now` (not fetched within
    /// [`CacheSettings::flow_refetch`], lookups not paused).
    pub fn flow_due(&self, flow: &str, now: Instant) -> bool {
        !self.paused(now)
            && self
                .flows_fetched
                .get(flow)
                .is_none_or(|at| now.saturating_duration_since(*at) >= self.settings.flow_refetch)
    }

    /// Records that the user list of `flow` was fetched at `now`.
    pub fn flow_fetched(&mut self, flow: &str, now: Instant) {
        self.flows_fetched.insert(flow.to_owned(), now);
    }

    /// The ids `event` names that should be looked up at `now`, without repeats.
    pub fn lookups_for(&self, event: &Event, now: Instant) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for id in unnamed_ids(event) {
            if self.needs_lookup(&id, now) && !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// The lookups `event` waits for at `now`, at most `timeout` in all (None: it goes out
    /// at once with what the cache knows).
    pub fn round_for(&self, event: &Event, now: Instant, timeout: Duration) -> Option<LookupRound> {
        let ids = self.lookups_for(event, now);
        (!ids.is_empty()).then(|| LookupRound {
            ids,
            deadline: now + timeout,
        })
    }

    /// Records how a round ended at `now`: names and unknown ids learnt, or a pause after a
    /// failure or a timeout (known names stay).
    pub fn finish_round(&mut self, outcome: RoundOutcome, now: Instant) {
        match outcome {
            RoundOutcome::Done(found) => {
                for (id, f) in found {
                    match f {
                        Found::User(u) if u.id.as_string() == id => self.insert(&u, now),
                        // An answer for another id: keep it, and remember this one as unknown.
                        Found::User(u) => {
                            self.insert(&u, now);
                            self.insert_missing(&id, now);
                        }
                        Found::Missing => self.insert_missing(&id, now),
                    }
                }
            }
            RoundOutcome::Failed | RoundOutcome::TimedOut => self.lookup_failed(now),
        }
    }

    /// Puts the known names on `event` when no id it names needs a lookup at `now` (then
    /// [`UserCache::round_for`] gives None) and returns true; else returns false and leaves
    /// `event` as it is. Allocates nothing but the names it puts on.
    pub fn apply_if_settled(&self, event: &mut Event, now: Instant) -> bool {
        let due = |id: Option<&str>| id.is_some_and(|id| self.needs_lookup(id, now));
        if event.author.name.is_none() && due(event.author.id.as_deref()) {
            return false;
        }
        if let Some(to) = event.to.as_ref().filter(|t| t.name.is_none()) {
            if due(to.id.as_deref()) {
                return false;
            }
        }
        let action = event
            .detail
            .as_ref()
            .is_some_and(|d| d.get("type").and_then(Value::as_str) == Some("action"));
        if action
            && event
                .detail
                .as_ref()
                .and_then(|d| d.get("user_name"))
                .is_none()
            && due(action_user(event).as_deref())
        {
            return false;
        }
        self.apply(event);
        true
    }

    /// Puts the known names on `event`: its author, the recipient of a private message, and
    /// the user an action is about (`detail.user_name`; its text names them too).
    pub fn apply(&self, event: &mut Event) {
        if event.author.name.is_none() {
            if let Some(name) = event.author.id.as_deref().and_then(|id| self.name(id)) {
                event.author.name = Some(name.to_owned());
            }
        }
        if let Some(to) = event.to.as_mut().filter(|t| t.name.is_none()) {
            if let Some(name) = to.id.as_deref().and_then(|id| self.name(id)) {
                to.name = Some(name.to_owned());
            }
        }
        let Some((id, name)) =
            action_user(event).and_then(|id| self.name(&id).map(|n| (id, n.to_owned())))
        else {
            return;
        };
        if let Some(detail) = event.detail.as_mut() {
            detail["user_name"] = Value::String(name.clone());
        }
        // `blocked 5` (the mapping's text) becomes `blocked Ada`.
        if let Some(rest) = event.text.strip_suffix(id.as_str()) {
            if rest.ends_with(' ') {
                event.text = format!("{rest}{name}");
            }
        }
    }

    fn put(&mut self, id: String, name: Option<String>, now: Instant) {
        if !self.entries.contains_key(&id) && self.entries.len() >= self.settings.max_entries {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        if self.settings.max_entries > 0 {
            self.entries.insert(id, Entry { name, at: now });
        }
    }
}

/// The user id an `action` event is about (`content.user`, kept in `detail.user`).
fn action_user(event: &Event) -> Option<String> {
    let detail = event.detail.as_ref()?;
    if detail.get("type").and_then(Value::as_str) != Some("action") {
        return None;
    }
    let id = serde_json::from_value::<NumOrStr>(detail.get("user")?.clone()).ok()?;
    Some(id.as_string()).filter(|id| is_user_id(id))
}

/// The user ids `event` names without a name: author, recipient, the user of an action.
fn unnamed_ids(event: &Event) -> Vec<String> {
    let mut ids = Vec::new();
    if event.author.name.is_none() {
        ids.extend(event.author.id.clone());
    }
    if let Some(to) = event.to.as_ref().filter(|t| t.name.is_none()) {
        ids.extend(to.id.clone());
    }
    if event
        .detail
        .as_ref()
        .and_then(|d| d.get("user_name"))
        .is_none()
    {
        ids.extend(action_user(event));
    }
    ids.retain(|id| is_user_id(id));
    ids
}

/// Resolves user names for one client: the shared [`UserCache`] and the REST calls.
/// Cheap to clone (one shared allocation): every connection of a client holds one.
#[derive(Clone)]
pub struct Names {
    shared: Arc<NamesShared>,
}

struct NamesShared {
    http: reqwest::Client,
    api: url::Url,
    token: Secret,
    source: String,
    timeout: Duration,
    enabled: bool,
    cache: Mutex<UserCache>,
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Names")
            .field("api", &redact_url(self.shared.api.as_str()))
            .field("enabled", &self.shared.enabled)
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

/// Counts a lookup that did not finish (its future was dropped, e.g. the caller gave up
/// waiting) as a failure, so the next call does not wait for it again.
struct Unfinished<'a>(Option<&'a Mutex<UserCache>>);

impl Unfinished<'_> {
    fn done(mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(cache) = self.0 {
            lock_ignoring_poison(cache).lookup_failed(Instant::now());
        }
    }
}

/// What one lookup (`GET /users/:id`) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// The user (possibly answered for another id than asked).
    User(User),
    /// The API does not know the id.
    Missing,
}

/// One round of lookups an event waits for: which ids, and the latest it may wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupRound {
    /// The ids to look up, in order, without repeats.
    pub ids: Vec<String>,
    /// When the event stops waiting: the round then counts as failed.
    pub deadline: Instant,
}

/// How a [`LookupRound`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoundOutcome {
    /// Every lookup answered: what each id gave.
    Done(Vec<(String, Found)>),
    /// A lookup failed (network, 5xx, 408, 429, not JSON): lookups pause.
    Failed,
    /// The deadline passed (or the waiting caller gave up): lookups pause.
    TimedOut,
}

impl Names {
    /// A resolver on `api` (the REST host) with the client's HTTP client and token; each
    /// request is bounded by `timeout`; `enabled = false` resolves nothing.
    pub(crate) fn new(
        http: reqwest::Client,
        api: url::Url,
        token: Secret,
        source: String,
        timeout: Duration,
        enabled: bool,
    ) -> Self {
        Names {
            shared: Arc::new(NamesShared {
                http,
                api,
                token,
                source,
                timeout,
                enabled,
                cache: Mutex::new(UserCache::default()),
            }),
        }
    }

    /// The cache (shared by every connection of the client).
    pub fn cache(&self) -> MutexGuard<'_, UserCache> {
        lock_ignoring_poison(&self.shared.cache)
    }

    /// Fetches the user lists of `flows` (`org/flow`) into the cache; failures are logged
    /// (and pause lookups), never returned. Bounded: at most one timeout in all, since a
    /// failure pauses the rest.
    pub(crate) async fn load_flows(&self, flows: &[String]) {
        if !self.shared.enabled {
            return;
        }
        for flow in flows {
            if !self.cache().flow_due(flow, Instant::now()) {
                continue;
            }
            let Some((org, name)) = flow.split_once('/') else {
                continue;
            };
            let url = format!(
                "{}/flows/{}/{}/users",
                self.shared.api.as_str().trim_end_matches('/'),
                crate::session::encode_segment(org),
                crate::session::encode_segment(name)
            );
            let what = format!("the users of flow {flow}");
            let guard = Unfinished(Some(&self.shared.cache));
            let got = self.get_json(&url, &what).await;
            guard.done();
            let now = Instant::now();
            match got.and_then(|v| users_of(v, &what)) {
                Ok(users) => {
                    let mut cache = self.cache();
                    for u in &users {
                        cache.insert(u, now);
                    }
                    cache.flow_fetched(flow, now);
                    tracing::debug!(source = %self.shared.source, flow, users = users.len(), "flowdock: flow users");
                }
                Err(e) => {
                    let pauses = pauses_lookups(&e);
                    let mut cache = self.cache();
                    cache.flow_fetched(flow, now);
                    if pauses {
                        cache.lookup_failed(now);
                    }
                    drop(cache);
                    tracing::warn!(source = %self.shared.source, error = %e, "flowdock: cannot list the users of flow {flow}; authors are shown by id until their names are found");
                }
            }
        }
    }

    /// Looks up the ids `item` names that the cache does not know yet; bounded by one
    /// timeout in all. Cancel-safe: nothing is taken from `item`, and a lookup cut short
    /// counts as a failure.
    pub(crate) async fn prepare(&self, item: &SourceItem) {
        let SourceItem::Event { event, .. } = item else {
            return;
        };
        if !self.shared.enabled {
            return;
        }
        let Some(round) = self
            .cache()
            .round_for(event, Instant::now(), self.shared.timeout)
        else {
            return;
        };
        let guard = Unfinished(Some(&self.shared.cache));
        let all = tokio::time::timeout_at(round.deadline.into(), async {
            let mut found = Vec::with_capacity(round.ids.len());
            for id in &round.ids {
                found.push((id.clone(), self.fetch_user(id).await?));
            }
            Ok::<_, Error>(found)
        })
        .await;
        guard.done();
        let outcome = match all {
            Ok(Ok(found)) => RoundOutcome::Done(found),
            Ok(Err(e)) => {
                tracing::warn!(source = %self.shared.source, error = %e, "flowdock: user lookup failed; events show user ids until it works again");
                RoundOutcome::Failed
            }
            Err(_) => {
                tracing::warn!(
                    source = %self.shared.source,
                    "flowdock: user lookup of {} timed out after {:?}; events show user ids until it works again",
                    round.ids.join(", "),
                    self.shared.timeout
                );
                RoundOutcome::TimedOut
            }
        };
        self.cache().finish_round(outcome, Instant::now());
    }

    /// Puts the names on `item` at once when none needs a lookup at `now` (one lock, no
    /// allocation but the names) and returns true; false when a lookup is due (then
    /// [`Names::prepare`] and [`Names::apply`]).
    pub(crate) fn apply_settled(&self, item: &mut SourceItem, now: Instant) -> bool {
        match item {
            SourceItem::Event { event, .. } if self.shared.enabled => {
                self.cache().apply_if_settled(event, now)
            }
            _ => true,
        }
    }

    /// Puts the names the cache knows on `item`'s event.
    pub(crate) fn apply(&self, item: &mut SourceItem) {
        if let (true, SourceItem::Event { event, .. }) = (self.shared.enabled, item) {
            self.cache().apply(event);
        }
    }

    async fn fetch_user(&self, id: &str) -> Result<Found, Error> {
        let url = format!(
            "{}/users/{}",
            self.shared.api.as_str().trim_end_matches('/'),
            crate::session::encode_segment(id)
        );
        let what = format!("user {id}");
        match self.get_json(&url, &what).await {
            Ok(v) => serde_json::from_value::<User>(v)
                .map(Found::User)
                .map_err(|e| Error::NotJson {
                    what,
                    expected: "a user object",
                    detail: e.to_string(),
                }),
            Err(e) if !pauses_lookups(&e) => {
                tracing::debug!(source = %self.shared.source, error = %e, "flowdock: no such user {id}");
                Ok(Found::Missing)
            }
            Err(e) => Err(e),
        }
    }

    async fn get_json(&self, url: &str, what: &str) -> Result<Value, Error> {
        let what = format!("{what} at {}", redact_url(url));
        let network = |e: reqwest::Error| Error::Network {
            what: what.clone(),
            detail: chat_model::error_chain(&e),
        };
        let resp = self
            .shared
            .http
            .get(url)
            .basic_auth(self.shared.token.expose(), Some(""))
            .header(ACCEPT, "application/json")
            .timeout(self.shared.timeout)
            .send()
            .await
            .map_err(network)?;
        crate::http::check_response(&resp, &what, "application/json")?;
        let body = resp.bytes().await.map_err(network)?;
        serde_json::from_slice(&body).map_err(|e| Error::NotJson {
            what,
            expected: "JSON",
            detail: e.to_string(),
        })
    }
}

/// Whether an error means the users API is failing (pause lookups) rather than that it has
/// no such user or flow for this token (400-499 but 408 and 429).
fn pauses_lookups(e: &Error) -> bool {
    !matches!(e, Error::Http { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429)
}

/// The users of a flow's list; items that are not users are skipped.
fn users_of(v: Value, what: &str) -> Result<Vec<User>, Error> {
    match v {
        Value::Array(items) => Ok(items
            .into_iter()
            .filter_map(|u| serde_json::from_value::<User>(u).ok())
            .collect()),
        _ => Err(Error::NotJson {
            what: what.to_owned(),
            expected: "a JSON array of users",
            detail: "not an array".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::{Author, Kind, Service};
    use proptest::prelude::*;
    use serde_json::json;

    fn user(id: &str, nick: Option<&str>, name: Option<&str>) -> User {
        User {
            id: NumOrStr::Str(id.to_owned()),
            nick: nick.map(str::to_owned),
            name: name.map(str::to_owned),
            email: None,
        }
    }

    fn event(author: Option<&str>) -> Event {
        Event::new(
            "fd",
            Service::Flowdock,
            Kind::Message,
            "flowdock:o/f:1",
            "o/f",
            chrono::Utc::now(),
        )
        .with_author(Author::new(author.map(str::to_owned), None))
    }

    #[test]
    fn users_parse_from_the_documented_shape() {
        let v = json!([
            {"id": 9, "email": "john@example.com", "name": "John Smith", "nick": "John",
             "avatar": "https://d2cxspbh1aoie1.cloudfront.net/avatars/f0b4/", "website": "http://www.example.com/"},
            {"id": "10", "name": "Only Name", "nick": " "},
            {"nick": "no id"},
        ]);
        let users = users_of(v, "x").unwrap();
        assert_eq!(users.len(), 2, "the item without an id is skipped");
        assert_eq!(users[0].id.as_string(), "9");
        assert_eq!(users[0].display_name().as_deref(), Some("John"));
        assert_eq!(users[1].display_name().as_deref(), Some("Only Name"));
        assert!(users_of(json!({"message": "x"}), "x").is_err());
    }

    #[test]
    fn user_ids() {
        for ok in ["1", "19", "0010", "123456789"] {
            assert!(is_user_id(ok), "{ok}");
        }
        for bad in [
            "",
            "0",
            "00",
            "-1",
            "a1",
            "1/2",
            "../x",
            "1 ",
            &"9".repeat(21),
        ] {
            assert!(!is_user_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn unknown_then_known_then_stale() {
        let t0 = Instant::now();
        let mut c = UserCache::default();
        let mut e = event(Some("19"));
        assert_eq!(c.lookups_for(&e, t0), vec!["19"]);
        c.insert(&user("19", Some("Radia"), Some("Radia Perlman")), t0);
        assert!(c.lookups_for(&e, t0).is_empty());
        c.apply(&mut e);
        assert_eq!(e.author.name.as_deref(), Some("Radia"));
        // Refreshed after the TTL; a failure then keeps the old name and pauses lookups.
        let later = t0 + c.settings().ttl;
        assert_eq!(c.lookups_for(&event(Some("19")), later), vec!["19"]);
        c.lookup_failed(later);
        assert!(c.lookups_for(&event(Some("19")), later).is_empty());
        assert!(!c.needs_lookup("20", later), "paused for every id");
        assert!(c.needs_lookup("20", later + c.settings().failure_pause));
        assert_eq!(c.name("19"), Some("Radia"));
    }

    #[test]
    fn missing_ids_wait_for_their_ttl() {
        let t0 = Instant::now();
        let mut c = UserCache::default();
        c.insert_missing("5", t0);
        assert!(!c.needs_lookup("5", t0 + Duration::from_secs(1)));
        assert!(c.needs_lookup("5", t0 + c.settings().missing_ttl));
        assert_eq!(c.name("5"), None);
        // A name known before survives a later 404.
        c.insert(&user("6", Some("Ken"), None), t0);
        c.insert_missing("6", t0);
        assert_eq!(c.name("6"), Some("Ken"));
    }

    #[test]
    fn no_user_and_named_authors_are_never_looked_up() {
        let t0 = Instant::now();
        let c = UserCache::default();
        assert!(c.lookups_for(&event(Some("0")), t0).is_empty());
        assert!(c.lookups_for(&event(None), t0).is_empty());
        let mut named = event(Some("3"));
        named.author.name = Some("CI Bot".into());
        assert!(c.lookups_for(&named, t0).is_empty());
    }

    #[test]
    fn recipients_and_action_users_get_names() {
        let t0 = Instant::now();
        let mut c = UserCache::default();
        let mut pm = event(Some("7"));
        pm.private = true;
        pm.to = Some(Author::new(Some("1".to_owned()), None));
        assert_eq!(c.lookups_for(&pm, t0), vec!["7", "1"]);
        c.insert(&user("7", Some("Sam"), None), t0);
        c.insert(&user("1", Some("Otto"), None), t0);
        c.apply(&mut pm);
        assert_eq!(pm.author.name.as_deref(), Some("Sam"));
        assert_eq!(pm.to.as_ref().unwrap().name.as_deref(), Some("Otto"));

        let mut block = event(Some("1"));
        block.kind = Kind::Kick;
        block.text = "blocked 9".into();
        block.detail = Some(json!({"type": "action", "action": "block", "user": "9"}));
        assert_eq!(c.lookups_for(&block, t0), vec!["9"]);
        c.insert(&user("9", Some("Mallory"), None), t0);
        c.apply(&mut block);
        assert_eq!(block.text, "blocked Mallory");
        assert_eq!(block.detail.as_ref().unwrap()["user_name"], "Mallory");
        assert_eq!(block.author.name.as_deref(), Some("Otto"));
        assert!(c.lookups_for(&block, t0).is_empty());
    }

    #[test]
    fn a_round_is_bounded_and_its_outcome_recorded() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(5);
        let mut c = UserCache::default();
        let mut pm = event(Some("7"));
        pm.to = Some(Author::new(Some("1".to_owned()), None));
        assert_eq!(c.round_for(&event(Some("0")), t0, timeout), None);
        let round = c.round_for(&pm, t0, timeout).unwrap();
        assert_eq!(round.ids, ["7", "1"]);
        assert_eq!(
            round.deadline,
            t0 + timeout,
            "the event waits one timeout at most"
        );
        c.finish_round(
            RoundOutcome::Done(vec![
                ("7".into(), Found::User(user("7", Some("Sam"), None))),
                ("1".into(), Found::User(user("2", Some("Mia"), None))),
            ]),
            t0,
        );
        assert_eq!(c.name("7"), Some("Sam"));
        assert_eq!(c.name("2"), Some("Mia"), "an answer for another id is kept");
        assert_eq!(c.name("1"), None);
        assert_eq!(
            c.round_for(&pm, t0, timeout),
            None,
            "1 is remembered as unknown"
        );
        // A timed-out round pauses every lookup, and the next event does not wait.
        let later = t0 + c.settings().missing_ttl;
        assert!(c.round_for(&pm, later, timeout).is_some());
        c.finish_round(RoundOutcome::TimedOut, later);
        assert_eq!(c.round_for(&event(Some("30")), later, timeout), None);
        assert!(
            c.round_for(
                &event(Some("30")),
                later + c.settings().failure_pause,
                timeout
            )
            .is_some()
        );
    }

    #[test]
    fn flow_lists_are_not_refetched_in_a_reconnect_storm() {
        let t0 = Instant::now();
        let mut c = UserCache::default();
        assert!(c.flow_due("o/f", t0));
        c.flow_fetched("o/f", t0);
        assert!(!c.flow_due("o/f", t0 + Duration::from_secs(1)));
        assert!(c.flow_due("o/g", t0));
        assert!(c.flow_due("o/f", t0 + c.settings().flow_refetch));
    }

    #[test]
    fn the_cache_is_bounded() {
        let t0 = Instant::now();
        let mut c = UserCache::new(CacheSettings {
            max_entries: 3,
            ..CacheSettings::default()
        });
        for i in 1..=5u64 {
            c.insert(
                &user(&i.to_string(), Some(&format!("u{i}")), None),
                t0 + Duration::from_secs(i),
            );
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.name("1"), None, "the oldest went first");
        assert_eq!(c.name("5"), Some("u5"));
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// An event by this author arrives; the server answers its lookups like this.
        Event(u8, Answer),
        /// A flow's list with these users arrives.
        List(Vec<u8>),
        /// Time passes (seconds).
        Wait(u16),
    }

    #[derive(Clone, Copy, Debug)]
    enum Answer {
        Found,
        Missing,
        Fail,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let answer = prop_oneof![
            Just(Answer::Found),
            Just(Answer::Missing),
            Just(Answer::Fail)
        ];
        let op = prop_oneof![
            4 => (0u8..12, answer).prop_map(|(u, a)| Op::Event(u, a)),
            1 => proptest::collection::vec(0u8..12, 0..6).prop_map(Op::List),
            2 => (0u16..4000).prop_map(Op::Wait),
        ];
        proptest::collection::vec(op, 0..60)
    }

    proptest! {
        /// Driving the cache as the client does: every event waits for at most one round of
        /// lookups, an id is never looked up twice at the same instant whatever the answer,
        /// a name once learnt is never lost by a failure, "0" is never asked for, and the
        /// cache stays within its bound.
        #[test]
        fn cache_drives_lookups_sanely(ops in ops(), max in 1usize..8) {
            let settings = CacheSettings { max_entries: max, ..CacheSettings::default() };
            let mut c = UserCache::new(settings);
            let mut now = Instant::now();
            for op in ops {
                match op {
                    Op::Wait(s) => now += Duration::from_secs(u64::from(s)),
                    Op::List(ids) => {
                        for id in ids {
                            c.insert(&user(&id.to_string(), Some(&format!("n{id}")), None), now);
                        }
                    }
                    Op::Event(id, answer) => {
                        let id = id.to_string();
                        let mut e = event(Some(&id));
                        let before = c.name(&id).map(str::to_owned);
                        let lookups = c.lookups_for(&e, now);
                        prop_assert!(lookups.len() <= 1);
                        prop_assert!(!lookups.contains(&"0".to_owned()));
                        for l in &lookups {
                            match answer {
                                Answer::Found => c.insert(&user(l, Some(&format!("n{l}")), None), now),
                                Answer::Missing => c.insert_missing(l, now),
                                Answer::Fail => c.lookup_failed(now),
                            }
                        }
                        // Asked once: not asked again at the same instant, whatever the answer.
                        prop_assert!(c.lookups_for(&e, now).is_empty());
                        if matches!(answer, Answer::Fail) {
                            prop_assert_eq!(c.name(&id).map(str::to_owned), before);
                        }
                        c.apply(&mut e);
                        if let Some(name) = c.name(&id) {
                            prop_assert_eq!(e.author.name.as_deref(), Some(name));
                        }
                        if id == "0" {
                            prop_assert_eq!(e.author.name, None);
                        }
                    }
                }
                prop_assert!(c.len() <= max);
            }
        }
    }
}
