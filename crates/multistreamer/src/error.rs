//! The client's typed errors.

use std::time::Duration;

use chat_model::DisconnectReason;

/// Why connecting to, or staying connected to, a multistreamer stream failed.
///
/// Every message names the stream and its URL with the token redacted.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured URL cannot be used.
    #[error("invalid multistreamer URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS configuration could not be built.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The TCP, TLS or WebSocket handshake failed.
    #[error("could not connect to {target}: {message}")]
    Connect {
        /// The stream and its redacted URL.
        target: String,
        /// What failed.
        message: String,
    },
    /// Connecting took longer than the connect timeout.
    #[error("timed out after {}s connecting to {target}", timeout.as_secs_f64())]
    ConnectTimeout {
        /// The stream and its redacted URL.
        target: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The server answered the upgrade request with an HTTP error instead of a WebSocket.
    #[error("{target} refused the WebSocket upgrade with HTTP {status}{}", http_hint(*status))]
    Http {
        /// The stream and its redacted URL.
        target: String,
        /// The HTTP status code.
        status: u16,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The connection broke (reset, cut mid-frame, write failure).
    #[error("connection to {target} failed: {message}")]
    Network {
        /// The stream and its redacted URL.
        target: String,
        /// What failed.
        message: String,
    },
    /// The server closed the WebSocket.
    #[error("{target} closed the connection{}", close_detail(*code, reason))]
    Closed {
        /// The stream and its redacted URL.
        target: String,
        /// The close code, when the server sent a close frame.
        code: Option<u16>,
        /// The close reason, when given.
        reason: String,
    },
    /// A ping went unanswered: nothing arrived within the pong deadline.
    #[error("no pong from {target} within {}s of a ping (silent for {}s); the connection is presumed dead", deadline.as_secs_f64(), idle.as_secs_f64())]
    Stalled {
        /// The stream and its redacted URL.
        target: String,
        /// How long the connection was silent.
        idle: Duration,
        /// The pong deadline.
        deadline: Duration,
    },
    /// The server broke the WebSocket protocol (or sent a message over the size limit).
    #[error("protocol error on {target}: {message}")]
    Protocol {
        /// The stream and its redacted URL.
        target: String,
        /// What was wrong.
        message: String,
    },
}

fn http_hint(status: u16) -> &'static str {
    match status {
        401 => ": the token is missing or was not accepted; check the token",
        403 => ": the token was refused for this stream; check the token",
        404 => ": no such stream; check the stream id and URL",
        500..=599 => ": server error",
        _ => "",
    }
}

fn close_detail(code: Option<u16>, reason: &str) -> String {
    match (code, reason.is_empty()) {
        (Some(c), false) => format!(" (code {c}: {reason})"),
        (Some(c), true) => format!(" (code {c})"),
        (None, _) => " without a close frame".to_owned(),
    }
}

impl From<Error> for DisconnectReason {
    fn from(e: Error) -> Self {
        match &e {
            Error::InvalidUrl { .. } | Error::Tls(_) => DisconnectReason::Config(e.to_string()),
            Error::Connect { .. } | Error::ConnectTimeout { .. } | Error::Network { .. } => {
                DisconnectReason::Network(e.to_string())
            }
            Error::Http {
                target,
                status,
                retry_after,
            } => match status {
                // Multistreamer answers a bad or missing token with 401 or 403: both are
                // credentials problems that retrying cannot fix.
                401 | 403 => DisconnectReason::Unauthorized(e.to_string()),
                404 => DisconnectReason::NotFound(e.to_string()),
                _ => DisconnectReason::from_http_status(*status, target, *retry_after),
            },
            Error::Closed { .. } => DisconnectReason::EndOfStream,
            Error::Stalled { idle, .. } => DisconnectReason::Stalled { idle: *idle },
            Error::Protocol { .. } => DisconnectReason::Protocol(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Disposition;

    fn t() -> String {
        "multistreamer stream 21 at ws://h/ws/21?token=[redacted]".into()
    }

    #[test]
    fn http_refusals_classify() {
        let e = Error::Http {
            target: t(),
            status: 401,
            retry_after: None,
        };
        assert!(e.to_string().contains("check the token"), "{e}");
        assert!(e.to_string().contains("stream 21"), "{e}");
        let r = DisconnectReason::from(e);
        assert_eq!(r.disposition(), Disposition::Fatal);
        assert_eq!(r.code(), "unauthorized");
        let r = DisconnectReason::from(Error::Http {
            target: t(),
            status: 403,
            retry_after: None,
        });
        assert_eq!(r.code(), "unauthorized");
        let r = DisconnectReason::from(Error::Http {
            target: t(),
            status: 404,
            retry_after: None,
        });
        assert_eq!(r.code(), "not_found");
        let r = DisconnectReason::from(Error::Http {
            target: t(),
            status: 503,
            retry_after: Some(Duration::from_secs(3)),
        });
        assert_eq!(r.disposition(), Disposition::After(Duration::from_secs(3)));
        let r = DisconnectReason::from(Error::Http {
            target: t(),
            status: 500,
            retry_after: None,
        });
        assert_eq!(r.disposition(), Disposition::Backoff);
    }

    #[test]
    fn transport_failures_classify() {
        let stalled = Error::Stalled {
            target: t(),
            idle: Duration::from_secs(25),
            deadline: Duration::from_secs(10),
        };
        assert!(stalled.to_string().contains("no pong"), "{stalled}");
        assert_eq!(DisconnectReason::from(stalled).code(), "stalled");
        let closed = Error::Closed {
            target: t(),
            code: Some(1001),
            reason: "going away".into(),
        };
        assert!(closed.to_string().ends_with("(code 1001: going away)"));
        assert_eq!(DisconnectReason::from(closed).code(), "end_of_stream");
        let net = Error::Network {
            target: t(),
            message: "reset".into(),
        };
        assert_eq!(DisconnectReason::from(net).code(), "network");
        let tls = Error::Tls("bad CA file".into());
        assert!(DisconnectReason::from(tls).is_fatal());
    }
}
