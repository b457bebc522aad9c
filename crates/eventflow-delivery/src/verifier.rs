//! Endpoint verification: before an endpoint that needs it gets patient
//! data, it proves it controls its URL by answering a challenge. The
//! challenge is posted signed like any delivery:
//! `{"type": "endpoint.verification", "endpointId", "challenge"}`; a 2xx
//! answer whose body is `{"challenge": "<the same>"}` (or the bare
//! challenge) verifies it. Any other answer is tried again on the
//! delivery schedule; 72 hours after the challenge started the writer
//! disables the endpoint (`unverified`).

use std::sync::Arc;
use std::time::Duration;

use eventflow_model::time;
use eventflow_store::{Clock, Deliveries, EndpointRow, VerifyOutcome, VerifyRecord};
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::dispatcher::post_signed;
use crate::policy::{Next, RetryPolicy};

/// The `type` of a challenge's body (and its `x-eventflow-event-type`).
pub const CHALLENGE_TYPE: &str = "endpoint.verification";
/// Endpoints one claim takes.
const CLAIM: i64 = 50;
/// How often the table is read without a wake-up.
const SAFETY_NET: Duration = Duration::from_secs(30);

/// Whether a receiver's answer body returns `challenge`: a JSON object
/// whose `challenge` is it, or the bare challenge (surrounding white space
/// ignored). The challenge's own body sent back (a service that echoes
/// what it gets, at a mistyped URL) proves nothing and is no answer.
pub fn answers(body: Option<&str>, challenge: &str) -> bool {
    let Some(body) = body.map(str::trim) else {
        return false;
    };
    if body == challenge {
        return true;
    }
    let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    let echoed = o.contains_key("type") || o.contains_key("endpointId");
    !echoed && o.get("challenge").and_then(|c| c.as_str()) == Some(challenge)
}

/// What the verifier needs.
pub(crate) struct Verifier {
    pub store: Arc<dyn Deliveries>,
    pub clock: Arc<dyn Clock>,
    pub client: reqwest::Client,
    pub allow_private: bool,
    pub policy: RetryPolicy,
    pub wake: Arc<Notify>,
    /// Told when a subscription's handshake succeeds: its heartbeats start.
    pub heartbeats: Arc<Notify>,
    pub shutdown: watch::Receiver<bool>,
}

/// Sends due challenges and records their outcomes until shutdown.
pub(crate) async fn run(v: Arc<Verifier>) {
    let due = Due {
        clock: &*v.clock,
        wake: &v.wake,
        shutdown: v.shutdown.clone(),
    };
    let v = &v;
    due.run(
        move || async move {
            let claimed = match v.store.claim_verifications(CLAIM).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim endpoint verifications");
                    Vec::new()
                }
            };
            let full = claimed.len() as i64 == CLAIM;
            for row in claimed {
                tokio::spawn(challenge(v.clone(), row));
            }
            full
        },
        || v.store.next_verification(),
        // An endpoint changed: its heartbeats may be due as well.
        || v.heartbeats.notify_one(),
    )
    .await;
}

/// A loop over work the store keeps due times of (challenges,
/// heartbeats): take what is due, then sleep until the next is, a
/// wake-up, or a safety net; until shutdown.
pub(crate) struct Due<'a> {
    pub clock: &'a dyn Clock,
    pub wake: &'a Notify,
    pub shutdown: watch::Receiver<bool>,
}

impl Due<'_> {
    /// `take` takes and starts what is due, saying whether it took a
    /// whole claim (then it is called again at once); `next` reads when
    /// the next is due; `woken` runs on each wake-up.
    pub async fn run<T, TF, N, NF, W>(mut self, mut take: T, mut next: N, woken: W)
    where
        T: FnMut() -> TF,
        TF: std::future::Future<Output = bool>,
        N: FnMut() -> NF,
        NF: std::future::Future<Output = eventflow_store::Result<Option<jiff::Timestamp>>>,
        W: Fn(),
    {
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            if take().await {
                continue;
            }
            let now = self.clock.now();
            let sleep = match next().await {
                Ok(Some(at)) if at > now => self.clock.sleep_until(at),
                // Due, yet another node holds it: look again shortly.
                Ok(Some(_)) => Box::pin(tokio::time::sleep(Duration::from_secs(1))),
                _ => Box::pin(std::future::pending()),
            };
            tokio::select! {
                () = self.wake.notified() => woken(),
                () = sleep => {}
                () = tokio::time::sleep(SAFETY_NET) => {}
                _ = self.shutdown.changed() => return,
            }
        }
    }
}

/// Sends one endpoint its challenge and records the outcome.
async fn challenge(v: Arc<Verifier>, row: EndpointRow) {
    let Some(challenge) = row.verification.challenge.clone() else {
        return;
    };
    let number = row.verification.attempts + 1;
    // A FHIR subscription's challenge is its handshake: any 2xx answers it.
    let handshake = row
        .config
        .fhir
        .as_ref()
        .map(|sub| crate::fhir::handshake(sub, &row, &time::format(v.clock.now())));
    let (body, kind) = match &handshake {
        Some(h) => (h.clone(), crate::fhir::HANDSHAKE_TYPE),
        None => (
            json!({"type": CHALLENGE_TYPE, "endpointId": row.id, "challenge": challenge}),
            CHALLENGE_TYPE,
        ),
    };
    let headers = [
        ("x-eventflow-event-type", kind.to_string()),
        ("x-eventflow-attempt", number.to_string()),
    ];
    // One message id per challenge: its retries are the same message.
    let msg_id = format!("vrf_{}", &challenge[..challenge.len().min(32)]);
    let (attempt, retry_after, status) = post_signed(
        &v.client,
        v.allow_private,
        &*v.clock,
        &row,
        &msg_id,
        serde_json::to_vec(&body).unwrap_or_default(),
        &headers,
        number,
    )
    .await;
    let ok = status.is_some_and(|s| (200..300).contains(&s))
        && (handshake.is_some() || answers(attempt.response_body.as_deref(), &challenge));
    let outcome = if ok {
        tracing::info!(endpoint = %row.id, "endpoint verified");
        VerifyOutcome::Verified
    } else {
        let error = match (&attempt.error, status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) if (200..300).contains(&s) => {
                format!("answered {s} without the challenge in its body")
            }
            (None, Some(s)) => format!("answered {s}"),
            (None, None) => "no answer".to_string(),
        };
        let now = v.clock.now();
        let first = row
            .verification
            .started_at
            .as_deref()
            .and_then(time::parse)
            .unwrap_or(now);
        match v.policy.after_failure(
            number as u32,
            first,
            now,
            retry_after,
            rand::random::<f64>(),
        ) {
            // A failed handshake puts the subscription in error at once
            // (the Backport IG): it is not tried again.
            _ if handshake.is_some() => VerifyOutcome::GiveUp { error },
            Next::RetryAt(at) => VerifyOutcome::RetryAt { at, error },
            Next::GiveUp => VerifyOutcome::GiveUp { error },
        }
    };
    let rec = VerifyRecord {
        tenant_id: row.tenant_id.clone(),
        endpoint_id: row.id.clone(),
        challenge,
        outcome,
    };
    let verified = rec.outcome == VerifyOutcome::Verified;
    if let Err(e) = v.store.record_verification(rec).await {
        // The lease runs out and the challenge is sent again.
        tracing::warn!(error = %e, endpoint = %row.id, "could not record a verification");
    } else if verified
        && row
            .config
            .fhir
            .as_ref()
            .is_some_and(|f| f.heartbeat.is_some())
    {
        v.heartbeats.notify_one();
    }
    // The loop reads when the next challenge is due again: this one's retry.
    v.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::answers;

    #[test]
    fn an_answer_returns_the_challenge_as_json_or_bare() {
        assert!(answers(Some(r#"{"challenge":"abc"}"#), "abc"));
        assert!(answers(Some(" abc\n"), "abc"));
        assert!(!answers(Some(r#"{"challenge":"abd"}"#), "abc"));
        assert!(!answers(Some("ok"), "abc"));
        assert!(!answers(Some(r#"{"challenge":1}"#), "abc"));
        assert!(!answers(None, "abc"));
        // An echo of the challenge's body is no answer.
        assert!(!answers(
            Some(r#"{"type":"endpoint.verification","endpointId":"ep_1","challenge":"abc"}"#),
            "abc"
        ));
    }
}
