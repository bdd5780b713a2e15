use std::time::Duration;

use crate::http::StatusClass;

/// Why a connection to a source ended, as the protocol understood it.
///
/// Protocol crates translate their transport's failures into these (Campfire's 400 on an idle
/// connection is [`DisconnectReason::IdleClose`], Flowdock's 401 is
/// [`DisconnectReason::Unauthorized`]); the supervisor decides what to do from
/// [`DisconnectReason::disposition`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The server ended the stream cleanly.
    #[error("the server ended the stream")]
    EndOfStream,
    /// The server closed a connection it considered idle (Campfire answers HTTP 400).
    #[error("the server closed an idle connection: {0}")]
    IdleClose(String),
    /// A network or transport failure: refused, reset, timed out, TLS, cut mid-frame.
    #[error("network error: {0}")]
    Network(String),
    /// Neither frames nor keep-alives arrived within the stall timeout.
    #[error("no data or keep-alive for {:.1}s; the connection is presumed dead", idle.as_secs_f64())]
    Stalled {
        /// How long the stream was silent.
        idle: Duration,
    },
    /// The credentials were refused (HTTP 401 or a WebSocket refusal).
    #[error("credentials refused: {0}")]
    Unauthorized(String),
    /// The credentials are valid but may not read this room or flow (HTTP 403).
    #[error("access forbidden: {0}")]
    Forbidden(String),
    /// The room, flow, stream or channel does not exist (HTTP 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The server asked to slow down (HTTP 429, or 503 with `Retry-After`).
    #[error("rate limited{}", retry_after.map(|d| format!("; retry after {}s", d.as_secs_f64())).unwrap_or_default())]
    RateLimited {
        /// How long the server asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The server failed (HTTP 5xx).
    #[error("server error {status}: {message}")]
    Server {
        /// The HTTP status code.
        status: u16,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// What the server said, shortened.
        message: String,
    },
    /// The server answered something this protocol cannot read (wrong content type, not JSON,
    /// an unexpected status code).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The source is configured in a way that can never work (bad URL, missing setting).
    #[error("configuration error: {0}")]
    Config(String),
    /// The process is shutting down.
    #[error("shutting down")]
    Shutdown,
}

/// What a supervisor should do after a disconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Stop this source: retrying cannot help.
    Fatal,
    /// Reconnect promptly (after the minimum delay), without growing the backoff.
    Prompt,
    /// Reconnect after an exponential, jittered backoff.
    Backoff,
    /// Reconnect no sooner than this, as the server asked.
    After(Duration),
}

impl DisconnectReason {
    /// How a supervisor should treat this disconnect.
    pub fn disposition(&self) -> Disposition {
        match self {
            DisconnectReason::Unauthorized(_)
            | DisconnectReason::Forbidden(_)
            | DisconnectReason::NotFound(_)
            | DisconnectReason::Config(_)
            | DisconnectReason::Shutdown => Disposition::Fatal,
            DisconnectReason::EndOfStream | DisconnectReason::IdleClose(_) => Disposition::Prompt,
            DisconnectReason::RateLimited {
                retry_after: Some(d),
            }
            | DisconnectReason::Server {
                retry_after: Some(d),
                ..
            } => Disposition::After(*d),
            DisconnectReason::RateLimited { retry_after: None }
            | DisconnectReason::Server {
                retry_after: None, ..
            }
            | DisconnectReason::Network(_)
            | DisconnectReason::Stalled { .. }
            | DisconnectReason::Protocol(_) => Disposition::Backoff,
        }
    }

    /// Whether retrying can never help.
    pub fn is_fatal(&self) -> bool {
        self.disposition() == Disposition::Fatal
    }

    /// A short machine-readable name for metrics and lifecycle events.
    pub fn code(&self) -> &'static str {
        match self {
            DisconnectReason::EndOfStream => "end_of_stream",
            DisconnectReason::IdleClose(_) => "idle_close",
            DisconnectReason::Network(_) => "network",
            DisconnectReason::Stalled { .. } => "stalled",
            DisconnectReason::Unauthorized(_) => "unauthorized",
            DisconnectReason::Forbidden(_) => "forbidden",
            DisconnectReason::NotFound(_) => "not_found",
            DisconnectReason::RateLimited { .. } => "rate_limited",
            DisconnectReason::Server { .. } => "server_error",
            DisconnectReason::Protocol(_) => "protocol",
            DisconnectReason::Config(_) => "config",
            DisconnectReason::Shutdown => "shutdown",
        }
    }

    /// Maps an HTTP status code that ended (or refused) a stream to a reason.
    ///
    /// `what` names the room, flow or channel for the message; `retry_after` is the parsed
    /// `Retry-After` header ([`crate::parse_retry_after`]). The classes come from
    /// [`StatusClass`], which says why 410 is retried. A 503 with `Retry-After` is a rate
    /// limit. Protocol crates handle their own special cases (Campfire's 400) before falling
    /// back to this.
    pub fn from_http_status(status: u16, what: &str, retry_after: Option<Duration>) -> Self {
        match StatusClass::of(status) {
            StatusClass::Unauthorized => {
                DisconnectReason::Unauthorized(format!("HTTP 401 for {what}: check the token"))
            }
            StatusClass::Forbidden => DisconnectReason::Forbidden(format!(
                "HTTP 403 for {what}: the token may not read it"
            )),
            StatusClass::NotFound => {
                DisconnectReason::NotFound(format!("HTTP 404 for {what}: it does not exist"))
            }
            StatusClass::RateLimited => DisconnectReason::RateLimited { retry_after },
            StatusClass::Server if status == 503 && retry_after.is_some() => {
                DisconnectReason::RateLimited { retry_after }
            }
            StatusClass::Server => DisconnectReason::Server {
                status,
                retry_after,
                message: format!("for {what}"),
            },
            StatusClass::Success | StatusClass::Unexpected => {
                DisconnectReason::Protocol(format!("unexpected HTTP {status} for {what}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(
            DisconnectReason::from_http_status(401, "room 1", None).disposition(),
            Disposition::Fatal
        );
        assert_eq!(
            DisconnectReason::from_http_status(403, "room 1", None).disposition(),
            Disposition::Fatal
        );
        assert_eq!(
            DisconnectReason::from_http_status(500, "room 1", None).disposition(),
            Disposition::Backoff
        );
        assert_eq!(
            DisconnectReason::from_http_status(503, "room 1", Some(Duration::from_secs(7)))
                .disposition(),
            Disposition::After(Duration::from_secs(7))
        );
        assert_eq!(
            DisconnectReason::EndOfStream.disposition(),
            Disposition::Prompt
        );
        assert_eq!(
            DisconnectReason::IdleClose("400".into()).disposition(),
            Disposition::Prompt
        );
        assert_eq!(
            DisconnectReason::from_http_status(410, "flow a/b", None).disposition(),
            Disposition::Backoff
        );
        assert!(
            DisconnectReason::from_http_status(404, "flow a/b", None)
                .to_string()
                .contains("flow a/b")
        );
    }
}
