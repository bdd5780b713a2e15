//! The reqwest side of the HTTP helpers: a response's head as the session reads it.

use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use crate::error::Error;
use crate::session::Response;

/// What the session reads of a response's head.
pub(crate) struct Head {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<Duration>,
}

impl Head {
    /// The head of `resp`.
    pub(crate) fn of(resp: &reqwest::Response) -> Head {
        Head {
            status: resp.status().as_u16(),
            content_type: resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            retry_after: retry_after(resp.headers()),
        }
    }

    /// This head with `body`, for the session.
    pub(crate) fn response<'a>(&'a self, body: &'a [u8]) -> Response<'a> {
        Response {
            status: self.status,
            content_type: self.content_type.as_deref(),
            retry_after: self.retry_after,
            body,
        }
    }
}

/// Reads a REST answer: its head, and its body when the status is a success (an error
/// status keeps an empty one).
pub(crate) async fn rest_body(resp: reqwest::Response) -> Result<(Head, Vec<u8>), reqwest::Error> {
    let head = Head::of(&resp);
    if !resp.status().is_success() {
        return Ok((head, Vec::new()));
    }
    Ok((head, resp.bytes().await?.to_vec()))
}

/// Checks the status and content type of a response.
pub(crate) fn check_response(
    resp: &reqwest::Response,
    what: &str,
    expected: &'static str,
) -> Result<(), Error> {
    Head::of(resp).response(&[]).check(what, expected)
}

/// Reads a `Retry-After` header against the current time; the parsing is
/// [`chat_model::parse_retry_after`] (delay-seconds or an HTTP-date).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    chat_model::parse_retry_after(value, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Fri, 31 Dec 9999 23:59:59 GMT".parse().unwrap(),
        );
        assert!(retry_after(&h).is_some_and(|d| d > Duration::from_secs(3600)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
