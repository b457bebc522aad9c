//! The one timestamp format the API writes: RFC 3339 in UTC with
//! milliseconds (`2026-11-29T17:00:00.123Z`). Fixed width, so text order is
//! time order in every backend.

use jiff::Timestamp;

/// Formats a timestamp the way every API response and stored row shows it.
pub fn format(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Parses an RFC 3339 date-time with an offset (`Z` or `±hh:mm`):
/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1 to 9 digits, then the
/// offset; `T` and `Z` may be lowercase, as RFC 3339 allows.
pub fn parse(s: &str) -> Option<Timestamp> {
    // jiff also accepts RFC 9557 annotations, a missing seconds field, a
    // space for `T` and offsets with seconds; the API promises RFC 3339
    // only, so the shape is checked first.
    if !is_rfc3339_shape(s.as_bytes()) {
        return None;
    }
    s.to_ascii_uppercase().parse().ok()
}

fn is_rfc3339_shape(b: &[u8]) -> bool {
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !matches!(b[10], b'T' | b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&n) {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_fixed_width() {
        let ts = parse("2026-11-29T17:00:00Z").unwrap();
        assert_eq!(format(ts), "2026-11-29T17:00:00.000Z");
        assert_eq!(parse("2026-11-29T18:00:00+01:00").unwrap(), ts);
        assert!(parse("2026-11-29").is_none());
        assert!(parse("2026-11-29T17:00:00").is_none());
        assert!(parse("tomorrow").is_none());
        assert_eq!(
            parse("2026-11-29t17:00:00.5z")
                .unwrap()
                .subsec_millisecond(),
            500
        );
        for bad in [
            "2026-11-29 17:00:00Z",
            "2026-11-29T17:00+01:00",
            "2026-11-29T17:00:00+01:00:00",
            "2026-11-29T17:00:00.Z",
            "2026-11-29T17:00:00Z[UTC]",
            "+2026-11-29T17:00:00Z",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
