//! Heartbeats: a FHIR subscription that asked for them
//! (`backport-heartbeat-period`) is sent a `heartbeat` notification after
//! each period without a notification, so its receiver can tell a quiet
//! topic from a broken link. The store says which are due and takes each
//! for one node; a heartbeat is sent once, signed like a delivery, and
//! not retried: the next period brings the next.

use std::sync::Arc;

use eventflow_model::time;
use eventflow_store::{Clock, Deliveries, Heartbeat};
use tokio::sync::{Notify, watch};

use crate::dispatcher::post_signed;

/// Heartbeats one claim takes (each is two statements in the writer).
const CLAIM: i64 = 20;
/// Heartbeats in flight at once, on this node.
const IN_FLIGHT: usize = 32;

/// What the heartbeat task needs.
pub(crate) struct Heartbeats {
    pub store: Arc<dyn Deliveries>,
    pub clock: Arc<dyn Clock>,
    pub client: reqwest::Client,
    pub allow_private: bool,
    /// Notified when a subscription's handshake succeeds (its first
    /// heartbeat is then due) or an endpoint changes (one enabled again
    /// may be due at once).
    pub wake: Arc<Notify>,
    pub shutdown: watch::Receiver<bool>,
}

/// Sends due heartbeats until shutdown.
pub(crate) async fn run(h: Arc<Heartbeats>) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let due = crate::verifier::Due {
        clock: &*h.clock,
        wake: &h.wake,
        shutdown: h.shutdown.clone(),
    };
    let (h, in_flight) = (&h, &in_flight);
    due.run(
        move || async move {
            let due = match h.store.claim_heartbeats(CLAIM).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim heartbeats");
                    Vec::new()
                }
            };
            let full = due.len() as i64 == CLAIM;
            for beat in due {
                // Closed only when this task ends.
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return false;
                };
                let h = h.clone();
                tokio::spawn(async move {
                    send(h, beat).await;
                    drop(permit);
                });
            }
            full
        },
        || h.store.next_heartbeat(),
        || {},
    )
    .await;
}

/// Sends one heartbeat.
async fn send(h: Arc<Heartbeats>, beat: Heartbeat) {
    let row = &beat.endpoint;
    let Some(sub) = row.config.fhir.as_ref() else {
        return;
    };
    let now = h.clock.now();
    let body = crate::fhir::heartbeat(sub, row, beat.events, &time::format(now));
    let headers = [
        (
            "x-eventflow-event-type",
            crate::fhir::HEARTBEAT_TYPE.to_string(),
        ),
        ("x-eventflow-attempt", "1".to_string()),
    ];
    let msg_id = format!(
        "hb_{}_{}",
        row.id.trim_start_matches("ep_"),
        now.as_millisecond()
    );
    let (attempt, _, status) = post_signed(
        &h.client,
        h.allow_private,
        &*h.clock,
        row,
        &msg_id,
        serde_json::to_vec(&body).unwrap_or_default(),
        &headers,
        1,
    )
    .await;
    if !status.is_some_and(|s| (200..300).contains(&s)) {
        let error = attempt
            .error
            .unwrap_or_else(|| status.map_or("no answer".into(), |s| format!("answered {s}")));
        tracing::warn!(endpoint = %row.id, error = %error, "a heartbeat was not acknowledged");
    }
}
