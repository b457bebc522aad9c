//! The clock every timestamp comes from, and every wait for a time. Injected,
//! so tests of "72 hours" or "24 hours before" run in milliseconds.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

/// A future that ends at a time of a [`Clock`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of the current time.
pub trait Clock: Send + Sync + Debug + 'static {
    fn now(&self) -> Timestamp;

    /// Ends once `now() >= at`.
    fn sleep_until(&self, at: Timestamp) -> Sleep;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let wait = at.duration_since(Timestamp::now());
        let wait = std::time::Duration::try_from(wait).unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told to (tests). Sleepers wake when it
/// passes their time.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<Timestamp>,
    /// The times sleepers asked for, the latest last (a bounded list).
    asked: std::sync::Mutex<std::collections::VecDeque<Timestamp>>,
}

/// How many asked-for times a [`ManualClock`] remembers.
const ASKED: usize = 1024;

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now: watch::Sender::new(start),
            asked: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Whether something has gone to sleep until `at` (among the last
    /// thousand sleeps): a test waits on it before moving the clock past
    /// a time it expects the server to have chosen.
    pub fn slept_until(&self, at: Timestamp) -> bool {
        self.asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&at)
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: SignedDuration) {
        self.now
            .send_modify(|now| *now = now.checked_add(by).unwrap_or(*now));
    }

    pub fn set(&self, to: Timestamp) {
        self.now.send_replace(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        {
            let mut asked = self
                .asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if asked.len() == ASKED {
                asked.pop_front();
            }
            asked.push_back(at);
        }
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // An error means the clock is gone: never wake.
            if rx.wait_for(|now| *now >= at).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleep_ends_when_the_clock_passes_its_time() {
        let clock = std::sync::Arc::new(ManualClock::new(Timestamp::UNIX_EPOCH));
        let at = Timestamp::UNIX_EPOCH + SignedDuration::from_hours(72);
        let sleep = tokio::spawn(clock.sleep_until(at));
        clock.advance(SignedDuration::from_hours(71));
        tokio::task::yield_now().await;
        assert!(!sleep.is_finished());
        clock.advance(SignedDuration::from_hours(1));
        tokio::time::timeout(std::time::Duration::from_secs(5), sleep)
            .await
            .expect("woke")
            .unwrap();
    }
}
