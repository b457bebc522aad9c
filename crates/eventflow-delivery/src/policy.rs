//! The retry policy of docs/design.md §3.4: after the first attempt, 5 s, 30 s,
//! 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, then every 12 h, until 72 h
//! after the first attempt; ±20 % jitter; a `Retry-After` on 429 or 503 is
//! honoured. Pure: the caller passes the time and the random draw, so tests
//! of "72 hours" take no time.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// When to try again, and when to give up.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The wait after the 1st, 2nd, … failed attempt.
    pub schedule: Vec<Duration>,
    /// The wait once the schedule is used up.
    pub then_every: Duration,
    /// No attempt later than this after the first.
    pub give_up_after: Duration,
    /// ± this fraction of each wait, drawn at random (0.2 = ±20 %).
    pub jitter: f64,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        RetryPolicy {
            schedule: vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                m(2),
                m(10),
                m(30),
                m(60),
                m(120),
                m(240),
                m(480),
            ],
            then_every: m(720),
            give_up_after: m(72 * 60),
            jitter: 0.2,
            max_retry_after: m(720),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Attempt again at this time.
    RetryAt(Timestamp),
    /// Retries are exhausted: the delivery is `failed`.
    GiveUp,
}

impl RetryPolicy {
    /// After `attempts` failed attempts (the first made at `first_attempt`,
    /// the last failing at `now`): when to try again. `draw` is uniform in
    /// [0, 1) (the jitter); `retry_after` is the server's `Retry-After` on a
    /// 429 or 503.
    pub fn after_failure(
        &self,
        attempts: u32,
        first_attempt: Timestamp,
        now: Timestamp,
        retry_after: Option<Duration>,
        draw: f64,
    ) -> Next {
        let base = attempts
            .checked_sub(1)
            .and_then(|i| self.schedule.get(i as usize))
            .copied()
            .unwrap_or(self.then_every);
        let factor = 1.0 + self.jitter * (2.0 * draw.clamp(0.0, 1.0) - 1.0);
        let mut wait = base.mul_f64(factor.max(0.0));
        if let Some(asked) = retry_after {
            wait = wait.max(asked.min(self.max_retry_after));
        }
        let wait = SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX);
        let limit = SignedDuration::try_from(self.give_up_after).unwrap_or(SignedDuration::MAX);
        let (Ok(at), Ok(last)) = (now.checked_add(wait), first_attempt.checked_add(limit)) else {
            return Next::GiveUp;
        };
        if at > last {
            Next::GiveUp
        } else {
            Next::RetryAt(at)
        }
    }
}

/// Parses a `Retry-After` value: seconds, or an HTTP date (relative to `now`).
/// A date in the past is no wait; anything else unreadable is `None`.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    Some(Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        "2026-11-29T12:00:00Z".parse().unwrap()
    }

    fn secs(n: i64) -> SignedDuration {
        SignedDuration::from_secs(n)
    }

    #[test]
    fn the_schedule_without_jitter() {
        let p = RetryPolicy::default();
        let mid = 0.5; // no jitter
        let expect = [
            5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 43200, 43200,
        ];
        for (i, want) in expect.iter().enumerate() {
            let attempts = i as u32 + 1;
            assert_eq!(
                p.after_failure(attempts, t0(), t0(), None, mid),
                Next::RetryAt(t0() + secs(*want)),
                "after attempt {attempts}"
            );
        }
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = RetryPolicy::default();
        let Next::RetryAt(low) = p.after_failure(4, t0(), t0(), None, 0.0) else {
            panic!()
        };
        let Next::RetryAt(high) = p.after_failure(4, t0(), t0(), None, 0.999_999) else {
            panic!()
        };
        assert_eq!(low, t0() + secs(480));
        assert!(high <= t0() + secs(720) && high > t0() + secs(719));
    }

    #[test]
    fn walking_the_whole_schedule_gives_up_after_72_hours() {
        let p = RetryPolicy::default();
        let mut now = t0();
        let mut attempts = 1;
        while let Next::RetryAt(at) = p.after_failure(attempts, t0(), now, None, 0.5) {
            assert!(at <= t0() + secs(72 * 3600));
            now = at;
            attempts += 1;
        }
        // 9 scheduled waits (~15 h) then every 12 h up to 72 h: 14 attempts.
        assert_eq!(attempts, 14);
        assert!(now > t0() + secs(60 * 3600));
    }

    #[test]
    fn retry_after_is_honoured_up_to_a_bound() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.after_failure(1, t0(), t0(), Some(Duration::from_secs(90)), 0.5),
            Next::RetryAt(t0() + secs(90))
        );
        // A shorter Retry-After does not shorten the schedule.
        assert_eq!(
            p.after_failure(3, t0(), t0(), Some(Duration::from_secs(1)), 0.5),
            Next::RetryAt(t0() + secs(120))
        );
        // An absurd one is capped at 12 h.
        assert_eq!(
            p.after_failure(1, t0(), t0(), Some(Duration::from_secs(10_000_000)), 0.5),
            Next::RetryAt(t0() + secs(43_200))
        );
    }

    #[test]
    fn retry_after_values() {
        let now = t0();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
