//! Offsets and delays in workflow files: an optional sign, a whole number,
//! and a unit (`s`, `m`, `h`, `d`): `-24h`, `48h`, `30m`.

use jiff::SignedDuration;

/// The longest offset or delay accepted: a year and a day.
const MAX_SECS: u64 = 366 * 86_400;

/// Parses `-24h`; the error says what is accepted. One sign at most, then
/// digits only (no second sign, no spaces), and at most 366 days.
pub fn parse(s: &str) -> Result<SignedDuration, String> {
    let bad = || format!("must be a duration such as 24h, -24h, 30m or 2d, not {s:?}");
    let t = s.trim();
    let (negative, rest) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let Some(unit) = rest.chars().last() else {
        return Err(bad());
    };
    let number = &rest[..rest.len() - unit.len_utf8()];
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let too_long = || format!("must be at most 366 days (8784h), not {s:?}");
    // Digits only: a parse failure is an overflow.
    let n: u64 = number.parse().map_err(|_| too_long())?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        _ => return Err(bad()),
    }
    .filter(|s| *s <= MAX_SECS)
    .ok_or_else(too_long)?;
    // At most MAX_SECS: fits an i64 either way round.
    let secs = secs as i64;
    Ok(SignedDuration::from_secs(if negative {
        -secs
    } else {
        secs
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("-24h").unwrap(), SignedDuration::from_hours(-24));
        assert_eq!(parse("48h").unwrap(), SignedDuration::from_hours(48));
        assert_eq!(parse("30m").unwrap(), SignedDuration::from_mins(30));
        assert_eq!(parse("2d").unwrap(), SignedDuration::from_hours(48));
        assert_eq!(parse("+2d").unwrap(), SignedDuration::from_hours(48));
        assert_eq!(parse("366d").unwrap(), SignedDuration::from_hours(366 * 24));
        assert_eq!(
            parse("-366d").unwrap(),
            SignedDuration::from_hours(-366 * 24)
        );
        for bad in [
            "",
            "h",
            "-",
            "-h",
            "24",
            "24x",
            "1.5h",
            "99999999999d",
            "- 1h",
            "24é",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_second_sign_is_refused() {
        for bad in [
            "--24h",
            "-+24h",
            "+-24h",
            "++24h",
            "+-0s",
            "--9223372036854775808s",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("must be a duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn overflow_is_refused_with_the_bound() {
        for bad in [
            "9223372036854775808s",
            "-9223372036854775808s",
            "18446744073709551616s",
            "153722867280912931m",
            "367d",
            "8785h",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("at most 366 days"), "{bad}: {e}");
        }
    }
}
