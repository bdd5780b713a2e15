//! The error type of this crate's public API.

use std::sync::Arc;
use std::time::Duration;

use chat_model::DisconnectReason;

/// What went wrong talking to Flowdock. Every variant names the flow(s) concerned.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither a flow nor the private stream was asked for.
    #[error(
        "flowdock configuration: no flows to stream: set at least one flow (org/flow) or private = true"
    )]
    NoFlows,
    /// A flow name is empty or not written `org/flow` where that form is needed.
    #[error("flowdock configuration: flow {flow:?} {problem}")]
    BadFlow {
        /// The flow as configured.
        flow: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The access token is empty.
    #[error("flowdock configuration: the access token is empty")]
    EmptyToken,
    /// A configured URL cannot be used.
    #[error("flowdock configuration: bad {what} {url:?}: {reason}")]
    InvalidUrl {
        /// Which setting (`url` or `api_url`).
        what: &'static str,
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("flowdock configuration: cannot build the HTTP client: {0}")]
    Client(#[source] Arc<reqwest::Error>),
    /// The server answered with an HTTP error status.
    #[error("flowdock answered HTTP {status} for {what}{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Http {
        /// The status code.
        status: u16,
        /// The flows (and URL, redacted) the request was for.
        what: String,
        /// The `Retry-After` header, when sent.
        retry_after: Option<Duration>,
    },
    /// The response had the wrong content type for the transport asked for.
    #[error("flowdock answered {what} with content type {got:?}, expected {expected}")]
    ContentType {
        /// The flows (and URL, redacted) the request was for.
        what: String,
        /// The content type received.
        got: String,
        /// The content type expected.
        expected: &'static str,
    },
    /// A REST response was not the JSON expected.
    #[error("flowdock answered {what} with something that is not {expected}: {detail}")]
    NotJson {
        /// The flow (and URL, redacted) the request was for.
        what: String,
        /// What was expected (e.g. "a JSON array of messages").
        expected: &'static str,
        /// The parse error.
        detail: String,
    },
    /// A network or transport failure.
    #[error("network error talking to flowdock for {what}: {detail}")]
    Network {
        /// The flows (and URL, redacted) the request was for.
        what: String,
        /// What failed.
        detail: String,
    },
    /// The live stream was cut by a network failure (reconnect to resume).
    #[error("the stream of {what} was cut: {detail}")]
    Cut {
        /// The flows (and URL, redacted) streamed.
        what: String,
        /// What failed.
        detail: String,
    },
    /// The stream ended in the middle of a frame (reconnect to resume).
    #[error("the stream of {what} ended in the middle of a frame ({partial} bytes unfinished)")]
    Truncated {
        /// The flows (and URL, redacted) streamed.
        what: String,
        /// The bytes of the unfinished frame.
        partial: usize,
    },
    /// The server ended the stream cleanly (reconnect to go on).
    #[error("flowdock ended the stream of {what}")]
    Ended {
        /// The flows (and URL, redacted) streamed.
        what: String,
    },
}

impl Error {
    /// The reason a supervisor should see for this error.
    pub fn to_disconnect_reason(&self) -> DisconnectReason {
        match self {
            Error::NoFlows
            | Error::BadFlow { .. }
            | Error::EmptyToken
            | Error::InvalidUrl { .. }
            | Error::Client(_) => DisconnectReason::Config(self.to_string()),
            Error::Http {
                status,
                what,
                retry_after,
            } => DisconnectReason::from_http_status(*status, what, *retry_after),
            Error::ContentType { .. } | Error::NotJson { .. } => {
                DisconnectReason::Protocol(self.to_string())
            }
            Error::Network { .. } | Error::Cut { .. } | Error::Truncated { .. } => {
                DisconnectReason::Network(self.to_string())
            }
            Error::Ended { .. } => DisconnectReason::EndOfStream,
        }
    }
}

impl From<Error> for DisconnectReason {
    fn from(e: Error) -> Self {
        e.to_disconnect_reason()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Disposition;

    #[test]
    fn statuses_classify() {
        let e = |status| Error::Http {
            status,
            what: "flows a/b".into(),
            retry_after: None,
        };
        let r: DisconnectReason = e(401).into();
        assert!(r.is_fatal());
        assert!(r.to_string().contains("flows a/b"));
        assert!(DisconnectReason::from(e(403)).is_fatal());
        assert!(DisconnectReason::from(e(404)).is_fatal());
        assert_eq!(
            DisconnectReason::from(e(500)).disposition(),
            Disposition::Backoff
        );
        let ct = Error::ContentType {
            what: "flows a/b".into(),
            got: "text/html".into(),
            expected: "text/event-stream",
        };
        let r = DisconnectReason::from(ct);
        assert_eq!(r.code(), "protocol");
        assert!(r.to_string().contains("text/html") && r.to_string().contains("a/b"));
    }
}
