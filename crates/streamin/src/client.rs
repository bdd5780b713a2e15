//! The async API client: `GET {base}/{request}?api_key=...&...`.

use std::time::Duration;

use chat_model::{Secret, redact_url};
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiStatus, Error, Invalid};
use crate::keystore::KeyStore;
use crate::markup::markdown_to_wiki;

/// The real API's base URL.
pub const DEFAULT_BASE_URL: &str = "http://app.streamin.io/api/source";
/// The most characters a message content may have.
pub const MAX_CONTENT_CHARS: usize = 1000;
/// The most characters an external_id may have.
pub const MAX_EXTERNAL_ID_CHARS: usize = 255;

/// Checks the documented key format: 32 ASCII letters or digits.
pub fn validate_api_key(key: &Secret) -> Result<(), Invalid> {
    let k = key.expose();
    let alphanumeric = k.chars().all(|c| c.is_ascii_alphanumeric());
    if k.len() == 32 && alphanumeric {
        Ok(())
    } else {
        Err(Invalid::ApiKey {
            chars: k.chars().count(),
            alphanumeric,
        })
    }
}

/// Cuts `text` to at most `limit` characters (not bytes), ending with "…" when cut.
/// Returns the text and whether it was cut.
pub fn truncate_content(text: &str, limit: usize) -> (String, bool) {
    if text.chars().count() <= limit {
        return (text.to_owned(), false);
    }
    if limit == 0 {
        return (String::new(), true);
    }
    let mut s: String = text.chars().take(limit - 1).collect();
    s.push('…');
    (s, true)
}

/// Converts markdown to wiki markup that fits in `limit` characters, cutting the markdown on a
/// character boundary (with "…") as little as needed. Returns the wiki text and whether it was
/// cut. For relays, which must respect StreamIn's 1000-character limit after conversion.
pub fn fit_markdown(markdown: &str, limit: usize) -> (String, bool) {
    let wiki = markdown_to_wiki(markdown);
    if wiki.chars().count() <= limit {
        return (wiki, false);
    }
    // The longest markdown prefix whose conversion (with the ellipsis) still fits.
    let total = markdown.chars().count();
    let convert = |n: usize| markdown_to_wiki(&truncate_content(markdown, n).0);
    let (mut lo, mut hi) = (0usize, total);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if convert(mid).chars().count() <= limit {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let fitted = convert(lo);
    if fitted.chars().count() <= limit {
        (fitted, true)
    } else {
        (truncate_content(&fitted, limit).0, true)
    }
}

/// The text of a message, in markdown (converted) or already in StreamIn wiki markup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Markdown (`**bold**`, `*italic*`, `***both***`, `[text](url)`), converted before sending.
    Markdown(String),
    /// StreamIn wiki markup, sent as is.
    Wiki(String),
}

/// A message to send with [`Client::new_message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// The text.
    pub content: Content,
    /// Your id for the message (at most 255 characters); a timestamp string when `None`.
    pub external_id: Option<String>,
    /// Ask for delivery confirmation (sent as `0` for yes, `1` for no, as the document says).
    pub delivery_confirmation: bool,
}

impl NewMessage {
    /// A markdown message without external id or delivery confirmation.
    pub fn markdown(text: impl Into<String>) -> Self {
        NewMessage {
            content: Content::Markdown(text.into()),
            external_id: None,
            delivery_confirmation: false,
        }
    }

    /// A wiki-markup message without external id or delivery confirmation.
    pub fn wiki(text: impl Into<String>) -> Self {
        NewMessage {
            content: Content::Wiki(text.into()),
            external_id: None,
            delivery_confirmation: false,
        }
    }

    /// Sets the external id.
    pub fn with_external_id(mut self, id: impl Into<String>) -> Self {
        self.external_id = Some(id.into());
        self
    }

    /// Sets delivery confirmation.
    pub fn with_delivery_confirmation(mut self, yes: bool) -> Self {
        self.delivery_confirmation = yes;
        self
    }

    /// Validates and converts into the exact parameters sent; refuses broken limits.
    pub fn prepare(&self) -> Result<PreparedMessage, Invalid> {
        let content = match &self.content {
            Content::Markdown(md) => markdown_to_wiki(md),
            Content::Wiki(w) => w.clone(),
        };
        let chars = content.chars().count();
        if chars == 0 {
            return Err(Invalid::ContentEmpty);
        }
        if chars > MAX_CONTENT_CHARS {
            return Err(Invalid::ContentTooLong { chars });
        }
        let external_id = match &self.external_id {
            Some(id) if id.is_empty() => return Err(Invalid::ExternalIdEmpty),
            Some(id) => {
                let chars = id.chars().count();
                if chars > MAX_EXTERNAL_ID_CHARS {
                    return Err(Invalid::ExternalIdTooLong { chars });
                }
                id.clone()
            }
            None => Utc::now().timestamp_millis().to_string(),
        };
        Ok(PreparedMessage {
            external_id,
            content,
            delivery_confirmation: if self.delivery_confirmation { "0" } else { "1" },
        })
    }
}

/// The parameters of a `new_message` request, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedMessage {
    /// The external id sent.
    pub external_id: String,
    /// The content sent (wiki markup).
    pub content: String,
    /// `"0"` (yes) or `"1"` (no).
    pub delivery_confirmation: &'static str,
}

/// The `message_info` the server confirmed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageInfo {
    /// The external id, as echoed.
    #[serde(default, deserialize_with = "de_string")]
    pub external_id: String,
    /// The content, as echoed.
    #[serde(default, deserialize_with = "de_string")]
    pub content: String,
    /// The creation time, exactly as the server wrote it (e.g. "2013-05-17 12:02:50 +0200").
    #[serde(default, deserialize_with = "de_string")]
    pub created_at: String,
    /// The server's echo of delivery_confirmation, exactly as received (the document's example
    /// echoes `false` for a request that sent `0`).
    #[serde(default)]
    pub delivery_confirmation: Value,
}

fn de_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// The envelope of every answer.
#[derive(Debug, Deserialize)]
struct Envelope {
    status: Value,
    #[serde(default)]
    message: Value,
    #[serde(default)]
    result: Value,
}

/// A StreamIn source API client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Secret,
}

impl Client {
    /// A client for `base_url` (e.g. [`DEFAULT_BASE_URL`]) with its own HTTP client; refuses
    /// a key that is not 32 ASCII letters or digits.
    pub fn new(base_url: impl Into<String>, api_key: Secret) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Client::with_http_client(http, base_url, api_key)
    }

    /// A client using `http` (e.g. one trusting an extra CA).
    pub fn with_http_client(
        http: reqwest::Client,
        base_url: impl Into<String>,
        api_key: Secret,
    ) -> Result<Client, Error> {
        let base = base_url.into().trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base)
            .map_err(|e| Error::Config(format!("bad StreamIn url {:?}: {e}", redact_url(&base))))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "StreamIn url {:?} must be http:// or https://",
                redact_url(&base)
            )));
        }
        validate_api_key(&api_key)?;
        Ok(Client {
            http,
            base,
            api_key,
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The key in use.
    pub fn api_key(&self) -> &Secret {
        &self.api_key
    }

    /// Uses another key (another source); refuses a malformed one.
    pub fn set_api_key(&mut self, key: Secret) -> Result<(), Error> {
        validate_api_key(&key)?;
        self.api_key = key;
        Ok(())
    }

    async fn call(&self, request: &'static str, params: &[(&str, &str)]) -> Result<Value, Error> {
        validate_api_key(&self.api_key)?;
        let mut query: Vec<(&str, &str)> = vec![("api_key", self.api_key.expose())];
        query.extend_from_slice(params);
        let req = self
            .http
            .get(format!("{}/{request}", self.base))
            .header(reqwest::header::ACCEPT, "application/json")
            .query(&query)
            .build()
            .map_err(|e| {
                Error::Config(format!(
                    "cannot build the {request} request: {}",
                    e.without_url()
                ))
            })?;
        let url = redact_url(req.url().as_str());
        tracing::debug!(%url, "StreamIn request");
        let resp = self.http.execute(req).await.map_err(|e| Error::Network {
            request,
            url: url.clone(),
            detail: e.without_url().to_string(),
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| Error::Network {
            request,
            url: url.clone(),
            detail: format!("answer cut short: {}", e.without_url()),
        })?;
        let envelope = serde_json::from_slice::<Envelope>(&body);
        let envelope = match (status, envelope) {
            (200, Ok(env)) => env,
            // A non-200 answer that still carries an API status is reported by that status.
            (_, Ok(env)) if status_code(&env.status).is_some_and(|c| c != 1) => env,
            (200, Err(e)) => {
                return Err(Error::Protocol {
                    request,
                    url,
                    detail: format!("not the documented JSON answer: {e}"),
                });
            }
            _ => {
                return Err(Error::Http {
                    request,
                    status,
                    url,
                });
            }
        };
        let Some(code) = status_code(&envelope.status) else {
            return Err(Error::Protocol {
                request,
                url,
                detail: format!("status is not a number: {}", envelope.status),
            });
        };
        if code != 1 {
            let message = match envelope.message {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            return Err(Error::Api {
                request,
                status: ApiStatus::from_code(code),
                message,
            });
        }
        Ok(envelope.result)
    }

    /// `ping`: checks the key and that the API is up; returns the server's greeting.
    pub async fn ping(&self) -> Result<String, Error> {
        let result = self.call("ping", &[]).await?;
        Ok(result
            .get("success")
            .and_then(Value::as_str)
            .unwrap_or("pong")
            .to_owned())
    }

    /// `new_message`: validates (refusing broken limits before sending), converts markdown,
    /// sends, and returns the message info the server confirmed.
    pub async fn new_message(&self, message: &NewMessage) -> Result<MessageInfo, Error> {
        let p = message.prepare()?;
        self.send_prepared(&p).await
    }

    /// Sends an already prepared message.
    pub async fn send_prepared(&self, p: &PreparedMessage) -> Result<MessageInfo, Error> {
        let result = self
            .call(
                "new_message",
                &[
                    ("external_id", &p.external_id),
                    ("content", &p.content),
                    ("delivery_confirmation", p.delivery_confirmation),
                ],
            )
            .await?;
        let info = result.get("message_info").cloned().unwrap_or(Value::Null);
        serde_json::from_value::<MessageInfo>(info).map_err(|e| Error::Protocol {
            request: "new_message",
            url: redact_url(&format!("{}/new_message", self.base)),
            detail: format!("result.message_info is missing or malformed: {e}"),
        })
    }

    /// `refresh_api_key` today (UTC): see [`Client::refresh_api_key_on`].
    pub async fn refresh_api_key(&mut self, store: &dyn KeyStore) -> Result<Secret, Error> {
        self.refresh_api_key_on(store, Utc::now().date_naive())
            .await
    }

    /// `refresh_api_key` as if it were `today` (UTC): refuses before asking the server when the
    /// store remembers a refresh that day; on success stores the new key, remembers the day,
    /// switches this client to the new key and returns it. A server refusal for the daily
    /// limit is remembered too.
    pub async fn refresh_api_key_on(
        &mut self,
        store: &dyn KeyStore,
        today: NaiveDate,
    ) -> Result<Secret, Error> {
        if let Some(date) = store.last_refresh()? {
            if date >= today {
                return Err(Error::RefreshLimit { date });
            }
        }
        let result = match self.call("refresh_api_key", &[]).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e.api_status(), Some(ApiStatus::OverRefreshLimit(_))) {
                    store.record_refresh(today)?;
                }
                return Err(e);
            }
        };
        let Some(new_key) = result.get("api_key").and_then(Value::as_str) else {
            return Err(Error::Protocol {
                request: "refresh_api_key",
                url: redact_url(&format!("{}/refresh_api_key", self.base)),
                detail: "result.api_key is missing".to_owned(),
            });
        };
        let new_key = Secret::new(new_key);
        // The old key is dead now: keep the new one whatever else happens.
        store.store_key(&new_key)?;
        store.record_refresh(today)?;
        if let Err(e) = validate_api_key(&new_key) {
            return Err(Error::Protocol {
                request: "refresh_api_key",
                url: redact_url(&format!("{}/refresh_api_key", self.base)),
                detail: format!("the new key was stored, but {e}"),
            });
        }
        self.api_key = new_key.clone();
        tracing::info!(base = %redact_url(&self.base), "StreamIn API key refreshed and stored");
        Ok(new_key)
    }
}

fn status_code(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c197a6f761adb8ce1a47cdf9f22d705c";

    #[test]
    fn key_format() {
        assert!(validate_api_key(&Secret::new(KEY)).is_ok());
        assert!(validate_api_key(&Secret::new("short")).is_err());
        let e = validate_api_key(&Secret::new("c197a6f761adb8ce1a47cdf9f22d705!")).unwrap_err();
        assert!(e.to_string().contains("other symbols"));
        assert!(!e.to_string().contains("c197"));
        let e = Client::new(DEFAULT_BASE_URL, Secret::new("x".repeat(33))).unwrap_err();
        assert!(e.to_string().contains("33 characters"), "{e}");
        assert!(Client::new("ftp://x", Secret::new(KEY)).is_err());
    }

    #[test]
    fn debug_hides_the_key() {
        let c = Client::new(DEFAULT_BASE_URL, Secret::new(KEY)).unwrap();
        assert!(!format!("{c:?}").contains(KEY));
    }

    #[test]
    fn limits_and_defaults() {
        let p = NewMessage::markdown("**hi**").prepare().unwrap();
        assert_eq!(p.content, "'''hi'''");
        assert_eq!(p.delivery_confirmation, "1");
        assert!(p.external_id.parse::<i64>().is_ok(), "timestamp id");
        let p = NewMessage::wiki("x")
            .with_external_id("m1")
            .with_delivery_confirmation(true)
            .prepare()
            .unwrap();
        assert_eq!(
            (p.external_id.as_str(), p.delivery_confirmation),
            ("m1", "0")
        );
        // 1000 characters, multi-byte, are fine; 1001 are not.
        assert!(NewMessage::wiki("日".repeat(1000)).prepare().is_ok());
        assert_eq!(
            NewMessage::wiki("日".repeat(1001)).prepare().unwrap_err(),
            Invalid::ContentTooLong { chars: 1001 }
        );
        assert!(
            NewMessage::wiki("x")
                .with_external_id("é".repeat(255))
                .prepare()
                .is_ok()
        );
        assert_eq!(
            NewMessage::wiki("x")
                .with_external_id("é".repeat(256))
                .prepare()
                .unwrap_err(),
            Invalid::ExternalIdTooLong { chars: 256 }
        );
        assert_eq!(
            NewMessage::wiki("").prepare().unwrap_err(),
            Invalid::ContentEmpty
        );
    }

    #[test]
    fn truncation_on_char_boundaries() {
        assert_eq!(truncate_content("short", 10), ("short".to_owned(), false));
        let (t, cut) = truncate_content(&"日本".repeat(600), 1000);
        assert!(cut);
        assert_eq!(t.chars().count(), 1000);
        assert!(t.ends_with('…'));
        assert_eq!(truncate_content("abc", 0), (String::new(), true));
        assert_eq!(truncate_content("abcd", 3), ("ab…".to_owned(), true));
    }

    #[test]
    fn fitting_markdown_after_conversion() {
        assert_eq!(fit_markdown("**hi**", 1000), ("'''hi'''".to_owned(), false));
        // Each `''` grows to `<nowiki>''</nowiki>` in wiki: cut the markdown, not the markup.
        let md = "a'' ".repeat(100);
        let (wiki, cut) = fit_markdown(&md, 1000);
        assert!(cut);
        assert!(wiki.chars().count() <= 1000);
        assert!(wiki.ends_with('…'));
        assert!(wiki.chars().count() > 950, "cut as little as needed");
        assert_eq!(
            fit_markdown(&"x".repeat(1200), 1000).0.chars().count(),
            1000
        );
    }

    #[test]
    fn message_info_as_received() {
        let v = serde_json::json!({"external_id": "message_345185", "content": "This is a test message",
            "created_at": "2013-05017 12:02:50 +0200", "delivery_confirmation": false});
        let m: MessageInfo = serde_json::from_value(v).unwrap();
        assert_eq!(m.created_at, "2013-05017 12:02:50 +0200");
        assert_eq!(m.delivery_confirmation, Value::Bool(false));
    }
}
