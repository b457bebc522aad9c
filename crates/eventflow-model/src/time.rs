//! The one timestamp format the API writes: RFC 3339 in UTC with
//! milliseconds (`2026-11-29T17:00:00.123Z`). Fixed width, so text order is
//! time order in every backend.

use jiff::Timestamp;

/// Formats a timestamp the way every API response and stored row shows it.
pub fn format(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Parses an RFC 3339 date-time with an offset (`Z` or `±hh:mm`).
pub fn parse(s: &str) -> Option<Timestamp> {
    // jiff also accepts RFC 9557 annotations; the API promises RFC 3339 only.
    if s.contains('[') || s.len() < 20 {
        return None;
    }
    s.parse().ok()
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
    }
}
