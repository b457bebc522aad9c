//! In-process wake-ups: after a commit, every long poll and stream of the
//! tenant learns the new latest sequence at once (no polling sleep).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// Per-tenant latest committed sequence, as watch channels.
#[derive(Debug, Default)]
pub struct Notifier {
    tenants: Mutex<HashMap<String, watch::Sender<i64>>>,
    /// Tenants with commits not yet taken by [`Notifier::take_changed`],
    /// with their latest sequence.
    changed: Mutex<HashMap<String, i64>>,
    any: tokio::sync::Notify,
}

impl Notifier {
    /// A receiver that changes whenever the tenant commits events. Subscribe
    /// before reading, so a commit between the read and the wait is not missed.
    pub fn subscribe(&self, tenant: &str) -> watch::Receiver<i64> {
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(tenant.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// How many readers (long polls, streams) wait on the tenant's commits.
    pub fn waiting(&self, tenant: &str) -> usize {
        let map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        map.get(tenant).map_or(0, |tx| tx.receiver_count())
    }

    /// Announces that the tenant's events up to `sequence` are committed.
    pub fn publish(&self, tenant: &str, sequence: i64) {
        {
            let mut changed = self.changed.lock().unwrap_or_else(|e| e.into_inner());
            let room = changed.len() < 100_000;
            match changed.get_mut(tenant) {
                Some(latest) => *latest = (*latest).max(sequence),
                None if room => {
                    changed.insert(tenant.to_string(), sequence);
                }
                // Beyond that many tenants at once, the engine's periodic
                // sweep of every tenant picks the rest up.
                None => {}
            }
        }
        self.any.notify_one();
        let map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(tenant) {
            tx.send_if_modified(|latest| {
                if sequence > *latest {
                    *latest = sequence;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// The tenants that committed since the last call, with their latest
    /// sequence (the automation engine's wake-up); waits for one when there
    /// is none.
    pub async fn take_changed(&self) -> Vec<(String, i64)> {
        loop {
            {
                let mut changed = self.changed.lock().unwrap_or_else(|e| e.into_inner());
                if !changed.is_empty() {
                    return changed.drain().collect();
                }
            }
            self.any.notified().await;
        }
    }
}
