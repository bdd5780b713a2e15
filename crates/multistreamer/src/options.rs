//! Where and how to connect: plain settings, the endpoint URL and the session's settings.

use std::sync::Arc;
use std::time::Duration;

use chat_model::{Secret, redact_url};

use crate::Error;
use crate::session::{DEFAULT_PING_INTERVAL, DEFAULT_PONG_TIMEOUT, SessionConfig};
use crate::wire::Status;

/// Default limit for connecting (TCP, TLS and the WebSocket upgrade together).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default largest message accepted from the server.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

/// Where and how to connect. `Debug` never shows the token.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Base URL: `ws://host`, `wss://host` (`http`/`https` are taken as `ws`/`wss`); a path
    /// prefix is kept.
    pub url: String,
    /// The stream id.
    pub stream: u64,
    /// The access token, sent as the `token` query parameter.
    pub token: Secret,
    /// The `source` name put on events.
    pub source: String,
    /// TLS settings for `wss://` (None: public web roots, `ring` provider).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Ping after this much silence.
    pub ping_interval: Duration,
    /// A ping unanswered this long ends the connection as stalled.
    pub pong_timeout: Duration,
    /// Limit for establishing the connection.
    pub connect_timeout: Duration,
    /// Largest message accepted; a larger one ends the connection with a protocol error.
    pub max_message_size: usize,
    /// Ask for the viewer count this often (never when None).
    pub viewcount_interval: Option<Duration>,
    /// The status snapshot already reported by an earlier connection: an identical first
    /// status is not emitted again.
    pub known_status: Option<Status>,
    /// Keep each event's wire JSON in [`chat_model::Event::raw`] (default: true).
    pub keep_raw: bool,
}

impl ConnectOptions {
    /// Options with the defaults for everything but the URL, stream and token.
    pub fn new(url: impl Into<String>, stream: u64, token: Secret) -> Self {
        ConnectOptions {
            url: url.into(),
            stream,
            token,
            source: "multistreamer".to_owned(),
            tls: None,
            ping_interval: DEFAULT_PING_INTERVAL,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            viewcount_interval: None,
            known_status: None,
            keep_raw: true,
        }
    }

    /// Fits the ping schedule inside `stall_timeout` (the watchdog's limit on silence), as
    /// [`crate::schedule_for_stall_timeout`] says: a quiet but healthy connection then always
    /// has a pong (a keep-alive) before the watchdog fires, and a dead one is declared dead
    /// before it.
    pub fn fit_stall_timeout(&mut self, stall_timeout: Duration) {
        let (ping, pong) = crate::schedule_for_stall_timeout(stall_timeout);
        self.ping_interval = ping;
        self.pong_timeout = pong;
    }

    /// The full WebSocket URL, token included: for the wire only, never to print.
    pub fn endpoint(&self) -> Result<url::Url, Error> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact_url(&self.url),
            reason,
        };
        let mut url = url::Url::parse(self.url.trim()).map_err(|e| invalid(e.to_string()))?;
        let scheme = match url.scheme() {
            "ws" | "http" => "ws",
            "wss" | "https" => "wss",
            other => {
                return Err(invalid(format!(
                    "scheme {other:?} is not ws or wss (use ws://host or wss://host)"
                )));
            }
        };
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it has no host".to_owned()));
        }
        url.set_scheme(scheme)
            .map_err(|()| invalid(format!("cannot use scheme {scheme}")))?;
        let path = format!("{}/ws/{}", url.path().trim_end_matches('/'), self.stream);
        url.set_path(&path);
        url.set_fragment(None);
        url.query_pairs_mut()
            .clear()
            .append_pair("token", self.token.expose());
        Ok(url)
    }

    /// The sans-IO session's settings.
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig {
            source: self.source.clone(),
            stream: self.stream,
            target: self.target(),
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            viewcount_interval: self.viewcount_interval,
            keep_raw: self.keep_raw,
        }
    }

    /// "multistreamer stream N at URL" with the token redacted, for messages.
    pub fn target(&self) -> String {
        let shown = match self.endpoint() {
            Ok(url) => redact_url(url.as_str()),
            Err(_) => redact_url(&self.url),
        };
        format!("multistreamer stream {} at {shown}", self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_builds_the_documented_url() {
        let o = ConnectOptions::new("ws://example.com", 21, Secret::new("s3cr3t&x"));
        assert_eq!(
            o.endpoint().unwrap().as_str(),
            "ws://example.com/ws/21?token=s3cr3t%26x"
        );
        let o = ConnectOptions::new("https://example.com/ms/", 7, Secret::new("abc"));
        assert_eq!(
            o.endpoint().unwrap().as_str(),
            "wss://example.com/ms/ws/7?token=abc"
        );
        assert_eq!(
            o.target(),
            "multistreamer stream 7 at wss://example.com/ms/ws/7?token=[redacted]"
        );
    }

    #[test]
    fn bad_urls_are_clear_and_redacted() {
        let e = ConnectOptions::new("ftp://h", 1, Secret::new("abcd"))
            .endpoint()
            .unwrap_err();
        assert!(e.to_string().contains("not ws or wss"), "{e}");
        let e = ConnectOptions::new("not a url?token=abcdef", 1, Secret::new("abcdef"))
            .endpoint()
            .unwrap_err();
        assert!(!e.to_string().contains("abcdef"), "{e}");
    }

    #[test]
    fn debug_hides_the_token() {
        let o = ConnectOptions::new("ws://h", 1, Secret::new("topsecret"));
        assert!(!format!("{o:?}").contains("topsecret"));
    }
}
