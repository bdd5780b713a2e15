//! The crate's error type, convertible into a [`DisconnectReason`] for a supervisor.

use std::sync::Arc;
use std::time::Duration;

use chat_model::{DisconnectReason, StatusClass};

/// Why a poll (or setting up the client) failed. URLs in messages carry no secrets (the
/// Social Stream needs none) but are still passed through [`chat_model::redact_url`].
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request could not be sent or its response not read (refused, reset, cut short).
    #[error("network error polling ustream channel {channel} at {url}: {detail}")]
    Network {
        /// The channel polled.
        channel: String,
        /// The request URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// No complete response within the request timeout.
    #[error("ustream channel {channel}: no response from {url} within {}s", timeout.as_secs_f64())]
    Timeout {
        /// The channel polled.
        channel: String,
        /// The request URL.
        url: String,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The server answered with an HTTP status other than 200.
    #[error("ustream channel {channel}: HTTP {status} from {url}")]
    Http {
        /// The channel polled.
        channel: String,
        /// The request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header, when sent.
        retry_after: Option<Duration>,
    },
    /// The server answered `"success": false`.
    #[error("ustream channel {channel}: the social stream answered success=false: {message}")]
    Failed {
        /// The channel polled.
        channel: String,
        /// The server's `message` (or a note that it sent none).
        message: String,
    },
    /// The response is not a Social Stream response (not JSON, wrong shape, no range).
    #[error("ustream channel {channel}: unreadable response from {url}: {detail}")]
    Protocol {
        /// The channel polled.
        channel: String,
        /// The request URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The response body exceeded the configured limit and was not read further.
    #[error("ustream channel {channel}: response from {url} exceeds {limit} bytes")]
    TooLarge {
        /// The channel polled.
        channel: String,
        /// The request URL.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The configured base URL is not an `http://` or `https://` URL.
    #[error(
        "ustream url {url:?} is unusable ({detail}): give an http:// or https:// base URL such as {}",
        crate::DEFAULT_BASE_URL
    )]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The channel id is empty or holds a `/`.
    #[error(
        "bad ustream channel id {channel:?}: give the channel's numeric id (the \"id\" field of the channel list)"
    )]
    BadChannel {
        /// The channel id given.
        channel: String,
    },
    /// A `host` item names no usable server (the item is skipped).
    #[error("the social stream sent an unusable host {host:?}: {detail}")]
    BadHost {
        /// The host named.
        host: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The client's own HTTP client could not be built (pass one with
    /// [`Client::with_http_client`](crate::Client::with_http_client) instead).
    #[error("cannot build the HTTP client for ustream: {source}")]
    HttpClient {
        /// What reqwest said.
        #[source]
        source: Arc<reqwest::Error>,
    },
}

impl Error {
    /// Whether trying again later can help (network trouble, 5xx, 429, `success: false`,
    /// an unreadable response); 401/403/404 and configuration errors cannot. HTTP codes are
    /// read by [`StatusClass`], the same reading the supervisor's [`DisconnectReason`] gets, so
    /// 410 is retried (see [`StatusClass`] for why).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Network { .. }
            | Error::Timeout { .. }
            | Error::Failed { .. }
            | Error::Protocol { .. }
            | Error::TooLarge { .. } => true,
            Error::Http { status, .. } => !StatusClass::of(*status).is_fatal(),
            Error::BadUrl { .. }
            | Error::BadChannel { .. }
            | Error::BadHost { .. }
            | Error::HttpClient { .. } => false,
        }
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<Error> for DisconnectReason {
    fn from(e: Error) -> Self {
        match e {
            Error::Network { .. } | Error::Timeout { .. } => {
                DisconnectReason::Network(e.to_string())
            }
            Error::Http {
                ref channel,
                status,
                retry_after,
                ..
            } => DisconnectReason::from_http_status(
                status,
                &format!("ustream channel {channel}"),
                retry_after,
            ),
            Error::Failed { .. } | Error::Protocol { .. } | Error::TooLarge { .. } => {
                DisconnectReason::Protocol(e.to_string())
            }
            Error::BadUrl { .. }
            | Error::BadChannel { .. }
            | Error::BadHost { .. }
            | Error::HttpClient { .. } => DisconnectReason::Config(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Disposition;

    #[test]
    fn classification() {
        let http = |status| Error::Http {
            channel: "1".into(),
            url: "http://h/x".into(),
            status,
            retry_after: None,
        };
        assert!(http(500).is_retryable());
        assert!(!http(404).is_retryable());
        // The client and the supervisor read every status alike (410 included).
        for status in [400, 401, 403, 404, 408, 410, 429, 500, 503] {
            let r: DisconnectReason = http(status).into();
            assert_eq!(http(status).is_retryable(), !r.is_fatal(), "HTTP {status}");
        }
        let r: DisconnectReason = http(404).into();
        assert_eq!(r.disposition(), Disposition::Fatal);
        assert!(r.to_string().contains("ustream channel 1"));
        let r: DisconnectReason = Error::Failed {
            channel: "1".into(),
            message: "boom".into(),
        }
        .into();
        assert_eq!(r.disposition(), Disposition::Backoff);
        assert!(r.to_string().contains("boom"));
        let r: DisconnectReason = Error::BadChannel {
            channel: "a/b".into(),
        }
        .into();
        assert!(r.is_fatal());
    }
}
