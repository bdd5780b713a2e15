//! Writing timestamps fast: the same RFC 3339 text chrono's serde support writes, without the
//! formatting machinery (it was about half the cost of writing an event as JSON).

use chrono::{Datelike, Timelike};

use crate::Timestamp;

/// The longest text [`write_rfc3339`] produces: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const MAX_LEN: usize = 30;

/// Serializes `at` exactly as chrono's `Serialize` for `DateTime<Utc>` does (RFC 3339, `Z`,
/// as many fraction digits as needed: none, 3, 6 or 9).
pub(crate) fn serialize<S: serde::Serializer>(at: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match write_rfc3339(at, &mut buf) {
        // Only ASCII digits and separators are written.
        Some(len) => s.serialize_str(std::str::from_utf8(&buf[..len]).unwrap_or_default()),
        None => serde::Serialize::serialize(at, s),
    }
}

/// Writes `at` into `buf` and returns the length; `None` for what the fast path does not
/// cover (years outside 0–9999, a leap second), which chrono then writes.
fn write_rfc3339(at: &Timestamp, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    let year = at.year();
    let nano = at.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut v = value;
        for i in (0..digits).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, at.month(), 2);
    put(8, at.day(), 2);
    put(11, at.hour(), 2);
    put(14, at.minute(), 2);
    put(17, at.second(), 2);
    let fraction = if nano == 0 {
        0
    } else if nano % 1_000_000 == 0 {
        put(20, nano / 1_000_000, 3);
        4
    } else if nano % 1_000 == 0 {
        put(20, nano / 1_000, 6);
        7
    } else {
        put(20, nano, 9);
        10
    };
    for (i, sep) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        buf[i] = sep;
    }
    if fraction > 0 {
        buf[19] = b'.';
    }
    buf[19 + fraction] = b'Z';
    Some(20 + fraction)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn fast(at: &Timestamp) -> String {
        let mut out = Vec::new();
        serialize(at, &mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn matches_chrono_on_every_fraction_width_and_outside_the_fast_range() {
        let base = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        for nanos in [
            0,
            7_000_000,
            7_000,
            7,
            999_999_999,
            120_000_000,
            123_456_000,
        ] {
            let at = base + chrono::Duration::nanoseconds(nanos);
            assert_eq!(fast(&at), serde_json::to_string(&at).unwrap(), "{nanos}");
        }
        let far = chrono::Utc.with_ymd_and_hms(12_000, 1, 1, 0, 0, 0).unwrap();
        let before = chrono::Utc.with_ymd_and_hms(-5, 1, 1, 0, 0, 0).unwrap();
        for at in [far, before] {
            assert_eq!(fast(&at), serde_json::to_string(&at).unwrap());
        }
    }

    proptest! {
        #[test]
        fn the_same_text_as_chrono(secs in -70_000_000_000i64..300_000_000_000, nanos in 0u32..1_000_000_000, width in 0usize..4) {
            // Fractions of every width, not only the nine-digit ones random nanos give.
            let nanos = [0, nanos - nanos % 1_000_000, nanos - nanos % 1_000, nanos][width];
            let at = chrono::Utc.timestamp_opt(secs, nanos).unwrap();
            prop_assert_eq!(fast(&at), serde_json::to_string(&at).unwrap());
        }
    }
}
