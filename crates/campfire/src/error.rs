//! The crate's error type.

use std::fmt;
use std::time::Duration;

use chat_model::DisconnectReason;

/// Which Campfire endpoint a request went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// The streaming endpoint `GET /room/{id}/live.json`.
    Live,
    /// The REST endpoint `POST /room/{id}/join.json`.
    Join,
    /// The REST endpoint `GET /room/{id}/recent.json`.
    Recent,
    /// The REST endpoint `GET /users/{id}.json`.
    User,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Endpoint::Live => "live.json",
            Endpoint::Join => "join.json",
            Endpoint::Recent => "recent.json",
            Endpoint::User => "users/{id}.json",
        })
    }
}

/// Everything that can go wrong talking to Campfire.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configured URL cannot be used.
    #[error("invalid Campfire {what} URL {url:?}: {reason}")]
    InvalidUrl {
        /// Which URL (`streaming` or `api`).
        what: &'static str,
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The server answered with an HTTP error status.
    #[error(
        "{endpoint} for Campfire room {room} answered HTTP {status}{}",
        detail(body)
    )]
    Status {
        /// The room.
        room: u64,
        /// The endpoint that answered.
        endpoint: Endpoint,
        /// The status code.
        status: u16,
        /// The `Retry-After` the server sent, if any.
        retry_after: Option<Duration>,
        /// The start of the response body.
        body: String,
    },
    /// The streaming API refused the room (the user must have joined it) and the client
    /// cannot join it: no REST API URL is known.
    #[error(
        "live.json for Campfire room {room} answered HTTP {status}{}: the streaming API serves only rooms the user has joined, and without the REST API URL (api_url, e.g. https://ACCOUNT.campfirenow.com) this client cannot join it; set api_url, or join the room in Campfire first",
        detail(body)
    )]
    NotJoined {
        /// The room.
        room: u64,
        /// The status code of the refusal.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The connection failed or broke.
    #[error("network error on {endpoint} for Campfire room {room}: {message}")]
    Network {
        /// The room.
        room: u64,
        /// The endpoint.
        endpoint: Endpoint,
        /// What happened.
        message: String,
    },
    /// The server answered something that is not Campfire's protocol.
    #[error("{endpoint} for Campfire room {room}: {message}")]
    Protocol {
        /// The room.
        room: u64,
        /// The endpoint.
        endpoint: Endpoint,
        /// What was wrong.
        message: String,
    },
    /// The stream sent neither messages nor keep-alives for too long.
    #[error("Campfire room {room} sent nothing, not even a keep-alive, for {}s", idle.as_secs_f64())]
    Stalled {
        /// The room.
        room: u64,
        /// How long it was silent.
        idle: Duration,
    },
}

fn detail(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl Error {
    /// The HTTP status code, when the server answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } | Error::NotJoined { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How a supervisor should see this error (see [`DisconnectReason`]).
    pub fn to_reason(&self) -> DisconnectReason {
        match self {
            Error::InvalidUrl { .. } | Error::Client(_) => {
                DisconnectReason::Config(self.to_string())
            }
            Error::Status {
                room,
                endpoint: Endpoint::Live,
                status: 400,
                ..
            } => DisconnectReason::IdleClose(format!(
                "live.json for Campfire room {room} answered HTTP 400 (Campfire closes idle streams this way)"
            )),
            Error::Status {
                room,
                endpoint,
                status: 401,
                ..
            } => DisconnectReason::Unauthorized(format!(
                "HTTP 401 from {endpoint} for Campfire room {room}: check the API token (basic auth token:x)"
            )),
            Error::Status {
                room,
                endpoint,
                status,
                retry_after,
                ..
            } => DisconnectReason::from_http_status(
                *status,
                &format!("Campfire room {room} ({endpoint})"),
                *retry_after,
            ),
            Error::NotJoined { .. } => DisconnectReason::Forbidden(self.to_string()),
            Error::Network { .. } => DisconnectReason::Network(self.to_string()),
            Error::Protocol { .. } => DisconnectReason::Protocol(self.to_string()),
            Error::Stalled { idle, .. } => DisconnectReason::Stalled { idle: *idle },
        }
    }
}

impl From<Error> for DisconnectReason {
    fn from(e: Error) -> Self {
        e.to_reason()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::Disposition;

    fn status(endpoint: Endpoint, status: u16, retry_after: Option<u64>) -> Error {
        Error::Status {
            room: 111,
            endpoint,
            status,
            retry_after: retry_after.map(Duration::from_secs),
            body: String::new(),
        }
    }

    #[test]
    fn campfire_status_classification() {
        let idle = DisconnectReason::from(status(Endpoint::Live, 400, None));
        assert!(matches!(idle, DisconnectReason::IdleClose(_)));
        assert_eq!(idle.disposition(), Disposition::Prompt);

        let bad = DisconnectReason::from(status(Endpoint::Recent, 400, None));
        assert!(matches!(bad, DisconnectReason::Protocol(_)));

        let unauth = DisconnectReason::from(status(Endpoint::Live, 401, None));
        assert!(unauth.is_fatal());
        assert!(unauth.to_string().contains("room 111"), "{unauth}");

        let forbidden = DisconnectReason::from(status(Endpoint::Join, 403, None));
        assert!(matches!(forbidden, DisconnectReason::Forbidden(_)));
        assert!(forbidden.to_string().contains("room 111"));

        let missing = DisconnectReason::from(status(Endpoint::Live, 404, None));
        assert!(matches!(missing, DisconnectReason::NotFound(_)));

        let busy = DisconnectReason::from(status(Endpoint::Live, 503, Some(7)));
        assert_eq!(
            busy.disposition(),
            Disposition::After(Duration::from_secs(7))
        );

        let err = DisconnectReason::from(status(Endpoint::Live, 500, None));
        assert_eq!(err.disposition(), Disposition::Backoff);
    }

    #[test]
    fn not_joined_says_what_to_do() {
        let e = Error::NotJoined {
            room: 9,
            status: 403,
            body: "You must join the room".into(),
        };
        assert_eq!(e.status(), Some(403));
        let text = e.to_string();
        assert!(
            text.contains("room 9") && text.contains("HTTP 403"),
            "{text}"
        );
        assert!(
            text.contains("api_url") && text.contains("joined"),
            "{text}"
        );
        let reason = DisconnectReason::from(e);
        assert!(matches!(reason, DisconnectReason::Forbidden(_)), "{reason}");
        assert!(reason.is_fatal());
    }

    #[test]
    fn messages_name_the_room_and_endpoint() {
        let e = Error::Status {
            room: 5,
            endpoint: Endpoint::Recent,
            status: 500,
            retry_after: None,
            body: "boom".into(),
        };
        assert_eq!(
            e.to_string(),
            "recent.json for Campfire room 5 answered HTTP 500: boom"
        );
        assert_eq!(e.status(), Some(500));
        let s = Error::Stalled {
            room: 5,
            idle: Duration::from_secs(20),
        };
        assert!(matches!(
            DisconnectReason::from(s),
            DisconnectReason::Stalled { .. }
        ));
    }
}
