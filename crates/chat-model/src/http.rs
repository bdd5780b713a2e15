//! The one reading of HTTP answers every protocol crate shares: what a status code means
//! ([`StatusClass`]) and how long a `Retry-After` header asks us to wait
//! ([`parse_retry_after`]). Pure: the caller passes the current time.

use std::time::{Duration, SystemTime};

/// What an HTTP status code that ended (or refused) a request says, as every protocol reads it.
///
/// Only 401, 403 and 404 are fatal. Every other non-success code, 410 included, is worth
/// retrying: none of the services' documents gives 410 (or any code but 401) a meaning, and the
/// Flowdock and Campfire documents say a client that gets an unexpected response code or
/// disconnect should wait a few seconds and try again (`flowdock-streaming.txt`,
/// `campfire-streaming.txt`), so 410 is [`StatusClass::Unexpected`], retried with backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusClass {
    /// 2xx: the request succeeded.
    Success,
    /// 401: the credentials were refused.
    Unauthorized,
    /// 403: the credentials may not read this resource.
    Forbidden,
    /// 404: the resource does not exist.
    NotFound,
    /// 429: the server asked to slow down.
    RateLimited,
    /// 5xx: the server failed.
    Server,
    /// Anything else (1xx, 3xx, other 4xx such as 400 or 410, codes above 599).
    Unexpected,
}

impl StatusClass {
    /// Classifies a status code.
    pub fn of(status: u16) -> Self {
        match status {
            200..=299 => StatusClass::Success,
            401 => StatusClass::Unauthorized,
            403 => StatusClass::Forbidden,
            404 => StatusClass::NotFound,
            429 => StatusClass::RateLimited,
            500..=599 => StatusClass::Server,
            _ => StatusClass::Unexpected,
        }
    }

    /// Whether asking again can never help (401, 403, 404).
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            StatusClass::Unauthorized | StatusClass::Forbidden | StatusClass::NotFound
        )
    }
}

/// Parses a `Retry-After` header value (RFC 9110 §10.2.3) into how long to wait from `now`.
///
/// Accepts delay-seconds (`"120"`) and an HTTP-date in any of its three forms: IMF-fixdate
/// (`"Sun, 06 Nov 1994 08:49:37 GMT"`) and the obsolete RFC 850 and asctime forms. Surrounding
/// whitespace is ignored. A date at or before `now` gives `Some(Duration::ZERO)`: the server's
/// wait is over, retry now. Anything else (empty, negative, fractional, a date in another
/// format) gives `None`. Delay-seconds too large for a `u64` saturate to `u64::MAX` seconds.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 1994-11-06T08:49:37Z, the RFC's example date.
    fn rfc_example() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn delay_seconds() {
        let now = rfc_example();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", " ", "-1", "+5", "1.5", "soon", "7s", "0x10"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn http_date_forms() {
        let now = rfc_example() - Duration::from_secs(30);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(form, now),
                Some(Duration::from_secs(30)),
                "{form}"
            );
        }
        assert_eq!(
            parse_retry_after(
                "Wed, 21 Oct 2015 07:28:00 GMT",
                rfc_example() + Duration::from_secs(1 << 30)
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 +0000", now),
            None
        );
    }

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(200), StatusClass::Success);
        assert_eq!(StatusClass::of(204), StatusClass::Success);
        assert!(StatusClass::of(401).is_fatal());
        assert!(StatusClass::of(403).is_fatal());
        assert!(StatusClass::of(404).is_fatal());
        assert_eq!(StatusClass::of(429), StatusClass::RateLimited);
        assert_eq!(StatusClass::of(503), StatusClass::Server);
        for retried in [301, 400, 408, 410, 429, 500, 503, 600] {
            assert!(!StatusClass::of(retried).is_fatal(), "{retried}");
        }
        assert_eq!(StatusClass::of(410), StatusClass::Unexpected);
    }

    proptest! {
        #[test]
        fn never_panics(value in "\\PC{0,40}", secs in 0u64..=u64::MAX / 4) {
            let _ = parse_retry_after(&value, SystemTime::UNIX_EPOCH + Duration::from_secs(secs % (1 << 40)));
        }

        #[test]
        fn seconds_round_trip(secs: u64, pad in " {0,3}") {
            let v = format!("{pad}{secs}{pad}");
            prop_assert_eq!(parse_retry_after(&v, SystemTime::UNIX_EPOCH), Some(Duration::from_secs(secs)));
        }

        #[test]
        fn dates_round_trip(at in 0u64..253_402_300_799, now in 0u64..253_402_300_799) {
            let at_t = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
            let now_t = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
            let v = httpdate::fmt_http_date(at_t);
            prop_assert_eq!(
                parse_retry_after(&v, now_t),
                Some(Duration::from_secs(at.saturating_sub(now)))
            );
        }
    }
}
