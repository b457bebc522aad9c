//! In-process wake-ups: after a commit, every long poll and stream of the
//! tenant learns the new latest sequence at once (no polling sleep).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// Commits remembered per tenant for [`Notifier::nothing_for`].
const RECENT: usize = 64;

/// One commit of a tenant's events.
#[derive(Debug, Clone, Copy)]
struct Committed {
    first: i64,
    last: i64,
    types: u64,
}

/// Per-tenant latest committed sequence, as watch channels.
#[derive(Debug, Default)]
pub struct Notifier {
    tenants: Mutex<HashMap<String, watch::Sender<i64>>>,
    /// Per tenant, this node's recent commits: the sequences each wrote and
    /// the [`type_bit`](eventflow_model::event::type_bit)s of their events,
    /// oldest first, at most [`RECENT`]. A reader filtering by type skips a
    /// read when the commits since its last read are all here and none has
    /// a type it wants.
    recent: Mutex<HashMap<String, std::collections::VecDeque<Committed>>>,
    /// Tenants with commits not yet taken by [`Notifier::take_changed`],
    /// with their latest sequence.
    changed: Mutex<HashMap<String, i64>>,
    any: tokio::sync::Notify,
    /// Bumped whenever a key is rotated or revoked (here, or on another
    /// node): caches of keys made before are stale.
    keys_epoch: std::sync::atomic::AtomicU64,
}

impl Notifier {
    /// Says that a key was rotated or revoked: every cached key is stale.
    pub fn keys_changed(&self) {
        self.keys_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Changes whenever [`Notifier::keys_changed`] is called.
    pub fn keys_epoch(&self) -> u64 {
        self.keys_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

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

    /// Announces that this node committed the tenant's events `first` to
    /// `last`, whose types have the bits `types`.
    pub fn publish_commit(&self, tenant: &str, first: i64, last: i64, types: u64) {
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() < 10_000 || recent.contains_key(tenant) {
                let list = recent.entry(tenant.to_string()).or_default();
                if list.len() == RECENT {
                    list.pop_front();
                }
                list.push_back(Committed { first, last, types });
            }
        }
        self.publish(tenant, last);
    }

    /// Whether every event of the tenant in `(after, latest]` was committed
    /// by this node in a commit known here, and none has a type among
    /// `bits`: then a reader with those bits has nothing new to read.
    pub fn nothing_for(&self, tenant: &str, after: i64, latest: i64, bits: u64) -> bool {
        if bits == u64::MAX || latest <= after {
            return latest <= after;
        }
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = recent.get(tenant) else {
            return false;
        };
        let mut covered = after;
        for c in list.iter().filter(|c| c.last > after) {
            if c.first > covered + 1 || c.types & bits != 0 {
                return false;
            }
            covered = covered.max(c.last);
        }
        covered >= latest
    }

    /// Announces that the tenant's events up to `sequence` are committed
    /// (by this node or, on PostgreSQL, another).
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

#[cfg(test)]
mod tests {
    use super::*;
    use eventflow_model::event::type_bit;

    #[test]
    fn a_reader_skips_only_commits_it_knows_hold_nothing_for_it() {
        let n = Notifier::default();
        let patient = type_bit("patient.created");
        let appointment = type_bit("appointment.created");
        assert_ne!(patient, appointment);
        n.publish_commit("t", 1, 3, patient);
        n.publish_commit("t", 4, 4, patient);
        // A reader of appointments after 0 (or 2) has nothing in 1..=4.
        assert!(n.nothing_for("t", 0, 4, appointment));
        assert!(n.nothing_for("t", 2, 4, appointment));
        // A reader of patients has.
        assert!(!n.nothing_for("t", 0, 4, patient));
        // Every type: always read.
        assert!(!n.nothing_for("t", 0, 4, u64::MAX));
        // A commit this node did not see the types of (another node's):
        // read.
        n.publish("t", 6);
        assert!(!n.nothing_for("t", 4, 6, appointment));
        n.publish_commit("t", 7, 7, patient);
        assert!(
            !n.nothing_for("t", 4, 7, appointment),
            "5 and 6 are unknown"
        );
        assert!(n.nothing_for("t", 6, 7, appointment));
        // Another tenant, or nothing new.
        assert!(!n.nothing_for("u", 0, 1, appointment));
        assert!(n.nothing_for("t", 7, 7, appointment));
    }

    #[test]
    fn only_the_latest_commits_are_kept() {
        let n = Notifier::default();
        let bit = type_bit("patient.created");
        for s in 1..=(RECENT as i64 + 10) {
            n.publish_commit("t", s, s, bit);
        }
        assert!(
            !n.nothing_for("t", 0, 74, type_bit("lab.created")),
            "forgotten: read"
        );
        assert!(n.nothing_for("t", 20, 74, type_bit("lab.created")));
    }
}
