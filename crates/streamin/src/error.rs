//! Typed errors: one for every documented API status code, plus transport, validation and
//! key-store failures. No error ever contains the API key.

use chrono::NaiveDate;

/// A StreamIn API status code other than success (1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiStatus {
    /// 0: request failure.
    RequestFailure,
    /// 101: invalid API key.
    InvalidApiKey,
    /// 102: no API key.
    NoApiKey,
    /// 103: request not supported.
    RequestNotSupported,
    /// 104: invalid API call structure.
    InvalidCallStructure,
    /// 105: unknown API request.
    UnknownRequest,
    /// 201 or -201 (the document uses both): over the once-a-day refresh limit.
    OverRefreshLimit(i64),
    /// A code the document does not list.
    Other(i64),
}

impl ApiStatus {
    /// The status for a code (never called with 1, success).
    pub fn from_code(code: i64) -> ApiStatus {
        match code {
            0 => ApiStatus::RequestFailure,
            101 => ApiStatus::InvalidApiKey,
            102 => ApiStatus::NoApiKey,
            103 => ApiStatus::RequestNotSupported,
            104 => ApiStatus::InvalidCallStructure,
            105 => ApiStatus::UnknownRequest,
            201 | -201 => ApiStatus::OverRefreshLimit(code),
            other => ApiStatus::Other(other),
        }
    }

    /// The numeric code as the server sent it.
    pub fn code(&self) -> i64 {
        match self {
            ApiStatus::RequestFailure => 0,
            ApiStatus::InvalidApiKey => 101,
            ApiStatus::NoApiKey => 102,
            ApiStatus::RequestNotSupported => 103,
            ApiStatus::InvalidCallStructure => 104,
            ApiStatus::UnknownRequest => 105,
            ApiStatus::OverRefreshLimit(c) | ApiStatus::Other(c) => *c,
        }
    }

    /// What the document says the code means.
    pub fn describe(&self) -> &'static str {
        match self {
            ApiStatus::RequestFailure => "request failure",
            ApiStatus::InvalidApiKey => "invalid API key",
            ApiStatus::NoApiKey => "no API key",
            ApiStatus::RequestNotSupported => "request not supported",
            ApiStatus::InvalidCallStructure => "invalid API call structure",
            ApiStatus::UnknownRequest => "unknown API request",
            ApiStatus::OverRefreshLimit(_) => "over refresh limit (one refresh per day)",
            ApiStatus::Other(_) => "undocumented status",
        }
    }
}

/// A request refused before sending because it breaks a documented limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// The API key is not 32 ASCII letters and digits.
    #[error("the API key must be 32 ASCII letters or digits; this one has {chars} characters{}", if *.alphanumeric { "" } else { " and other symbols" })]
    ApiKey {
        /// Its length in characters.
        chars: usize,
        /// Whether it holds only ASCII letters and digits.
        alphanumeric: bool,
    },
    /// external_id longer than 255 characters.
    #[error("external_id has {chars} characters; StreamIn allows at most 255")]
    ExternalIdTooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// external_id given but empty.
    #[error("external_id is empty; leave it out to get a timestamp id")]
    ExternalIdEmpty,
    /// Content longer than 1000 characters (after conversion to wiki markup).
    #[error(
        "content has {chars} characters (as wiki markup); StreamIn allows at most 1000 — use truncate_content"
    )]
    ContentTooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// Content empty.
    #[error("content is empty; StreamIn requires a message text")]
    ContentEmpty,
}

/// Why a key store could not read or write.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}")]
pub struct KeyStoreError {
    /// What was being done ("write the API key file", "read the refresh date file", ...).
    pub action: &'static str,
    /// The file involved.
    pub path: String,
    /// The IO error.
    #[source]
    pub source: std::io::Error,
}

/// Everything a StreamIn call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API answered with a status other than 1; `message` is the server's own.
    #[error("StreamIn {request} failed: status {} ({}): {message}", status.code(), status.describe())]
    Api {
        /// The request: "ping", "refresh_api_key", "new_message".
        request: &'static str,
        /// The status.
        status: ApiStatus,
        /// The server's message.
        message: String,
    },
    /// An HTTP status other than 200 without an API status in the body.
    #[error("StreamIn {request}: HTTP {status} from {url}")]
    Http {
        /// The request.
        request: &'static str,
        /// The HTTP status.
        status: u16,
        /// The URL, with the key redacted.
        url: String,
    },
    /// The request could not be sent or the answer not read.
    #[error("StreamIn {request}: network error at {url}: {detail}")]
    Network {
        /// The request.
        request: &'static str,
        /// The URL, with the key redacted.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The answer is not the documented JSON.
    #[error("StreamIn {request}: unreadable answer from {url}: {detail}")]
    Protocol {
        /// The request.
        request: &'static str,
        /// The URL, with the key redacted.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// Refused before sending: a documented limit would be broken.
    #[error("StreamIn request refused before sending: {0}")]
    Invalid(#[from] Invalid),
    /// A second key refresh on the same UTC day, refused before asking the server.
    #[error(
        "StreamIn refresh_api_key refused before asking the server: the key was already refreshed on {date} (UTC), and StreamIn allows one refresh per day"
    )]
    RefreshLimit {
        /// The day of the last refresh.
        date: NaiveDate,
    },
    /// The key store failed.
    #[error("StreamIn key store: {0}")]
    KeyStore(#[from] KeyStoreError),
    /// The client is configured in a way that cannot work (bad base URL).
    #[error("StreamIn configuration error: {0}")]
    Config(String),
}

impl Error {
    /// The API status, when the server answered with one.
    pub fn api_status(&self) -> Option<ApiStatus> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying the same request later may succeed (network trouble, 5xx, status 0).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Network { .. } => true,
            Error::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Error::Api { status, .. } => *status == ApiStatus::RequestFailure,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in [0, 101, 102, 103, 104, 105, 201, -201, 999] {
            assert_eq!(ApiStatus::from_code(code).code(), code);
        }
        assert_eq!(ApiStatus::from_code(201), ApiStatus::OverRefreshLimit(201));
        assert_eq!(
            ApiStatus::from_code(-201),
            ApiStatus::OverRefreshLimit(-201)
        );
        let e = Error::Api {
            request: "ping",
            status: ApiStatus::InvalidApiKey,
            message: "Invalid API key".into(),
        };
        assert_eq!(
            e.to_string(),
            "StreamIn ping failed: status 101 (invalid API key): Invalid API key"
        );
    }
}
