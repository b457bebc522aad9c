//! Due work: timers whose time came, and runs due again (a retry, a run
//! whose node died). A due timer is fired by
//! [`Automations::fire_timers`](eventflow_store::Automations::fire_timers)(eventflow_store::Store::fire_timers), which
//! deletes it and starts its run in one transaction, so it fires once. The
//! loop sleeps until the next due run or timer on the injected clock, and
//! looks at least once a second.

use std::sync::Arc;
use std::time::Duration;

use super::{Engine, MAX_RUNNING};

impl Engine {
    pub(super) async fn due_loop(self: Arc<Self>) {
        loop {
            // One read of the next due time per pass.
            let next = match self.store.next_automation_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "automations: could not read the next due time");
                    None
                }
            };
            let due_now = next.is_some_and(|at| at <= self.clock.now());
            let taken = if due_now {
                self.take_due().await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "automations: could not take due runs or timers");
                    0
                })
            } else {
                0
            };
            self.passes.send_modify(|n| *n += 1);
            if taken > 0 {
                continue; // there may be more
            }
            // Due work that could not be taken (no run slot free) waits for a
            // run to end (look_again) or the next second, not for the clock.
            let wait = async {
                match next {
                    Some(at) if !due_now => self.clock.sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = wait => {}
                _ = self.look_again.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Fires due timers and claims due runs (retries; runs a dead node
    /// held); how many runs it started.
    async fn take_due(self: &Arc<Self>) -> eventflow_store::Result<usize> {
        // Only as many as can start now: a run claimed (or a timer fired)
        // without a free slot would hold a lease it does not use.
        let mut taken = 0;
        loop {
            let mut permits = self.free_slots(100);
            if permits.is_empty() {
                return Ok(taken);
            }
            let want = permits.len();
            let fired = self.store.fire_timers(want as i64).await?;
            let n = fired.len();
            taken += n;
            for run in fired {
                metrics::counter!("eventflow_timers_fired_total").increment(1);
                if let Some(permit) = permits.pop() {
                    self.spawn_run(run, permit);
                }
            }
            if n < want {
                break;
            }
        }
        let mut permits = self.free_slots(MAX_RUNNING);
        if !permits.is_empty() {
            let claimed = self.store.claim_runs(permits.len() as i64).await?;
            taken += claimed.len();
            for run in claimed {
                if let Some(permit) = permits.pop() {
                    self.spawn_run(run, permit);
                }
            }
        }
        Ok(taken)
    }
}
