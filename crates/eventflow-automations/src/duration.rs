//! Offsets and delays in workflow files: an optional sign, a whole number,
//! and a unit (`s`, `m`, `h`, `d`): `-24h`, `48h`, `30m`.

use jiff::SignedDuration;

/// Parses `-24h`; the error says what is accepted.
pub fn parse(s: &str) -> Result<SignedDuration, String> {
    let bad = || format!("must be a duration such as 24h, -24h, 30m or 2d, not {s:?}");
    let t = s.trim();
    let (negative, rest) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if rest.len() < 2 {
        return Err(bad());
    }
    let (number, unit) = rest.split_at(rest.len() - 1);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .filter(|s| *s <= 366 * 86_400)
    .ok_or_else(bad)?;
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
        for bad in ["", "h", "24", "24x", "1.5h", "99999999999d", "- 1h"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
