//! The dispatcher: takes deliveries from the store and makes the HTTP
//! attempts.
//!
//! Deliveries reach it two ways. The writer hands over the ones it just
//! committed (already leased to this node), so the first attempt starts
//! within a millisecond of the commit. Everything else — retries that come
//! due, deliveries another node's lease gave up, replays, manual retries,
//! per-resource ordered endpoints — is claimed from the table with a lease
//! when a wake-up says so, when the next due time arrives on the injected
//! clock, or every few seconds as the safety net.
//!
//! Per endpoint: a concurrency limit, the `rateLimit`, and the circuit
//! breaker (after 5 consecutive failures one attempt at a time, the others
//! wait for its next scheduled retry; a success drains the backlog).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventflow_model::id::{DeliveryId, EndpointId, TenantId};
use eventflow_model::{Event, time};
use eventflow_store::{
    Attempt, AttemptRecord, AttemptVerdict, Clock, Deliveries, Delivery, EndpointRow, PayloadMode,
    Signing,
};
use eventflow_webhook::{Ed25519Key, HmacSecret, Signer, sign_headers};
use jiff::{SignedDuration, Timestamp};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::policy::{Next, RetryPolicy, parse_retry_after};

/// The most of a response body kept per attempt.
pub const MAX_RESPONSE_BODY: usize = 4096;
/// Consecutive failures that open an endpoint's circuit breaker.
pub const BREAKER_THRESHOLD: i64 = eventflow_store::BREAKER_THRESHOLD;
/// How often the table is read without a wake-up (the safety net).
const SAFETY_NET: Duration = Duration::from_secs(5);

/// Settings of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Connect to private, loopback and link-local addresses.
    pub allow_private: bool,
    /// A response must complete within this.
    pub timeout: Duration,
    /// Attempts in flight per endpoint.
    pub per_endpoint_concurrency: usize,
    /// Deliveries held in memory at once (in flight or waiting their turn).
    pub max_held: usize,
    pub policy: RetryPolicy,
    /// Wakes the verifier: a challenge was made due (an endpoint created,
    /// its URL changed, verify again).
    pub verify_wake: Arc<tokio::sync::Notify>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            allow_private: true,
            timeout: Duration::from_secs(15),
            per_endpoint_concurrency: 16,
            max_held: 10_000,
            policy: RetryPolicy::default(),
            verify_wake: Arc::default(),
        }
    }
}

/// One delivery to attempt.
struct Job {
    delivery: Delivery,
    event: Option<Arc<Event>>,
    endpoint: Option<Arc<EndpointRow>>,
    endpoint_revision: i64,
}

/// What the dispatcher knows of one endpoint.
struct EndpointState {
    row: Mutex<Arc<EndpointRow>>,
    permits: Arc<Semaphore>,
    /// Next instant a delivery may start under `rateLimit`.
    next_slot: tokio::sync::Mutex<Instant>,
    streak: AtomicI64,
    probing: AtomicBool,
    /// Signalled when a probe's outcome is known.
    probe_done: tokio::sync::Notify,
    /// Deferred deliveries wait until then while the breaker is open (ms since epoch).
    resume_at_ms: AtomicI64,
}

struct Inner {
    store: Arc<dyn Deliveries>,
    clock: Arc<dyn Clock>,
    config: DispatchConfig,
    client: reqwest::Client,
    endpoints: Mutex<HashMap<String, Arc<EndpointState>>>,
    held: AtomicUsize,
    /// Deliveries an attempt of this node holds, each with whether it was
    /// claimed again meanwhile.
    in_hand: Mutex<HashMap<String, bool>>,
    /// Set when a result makes deliveries due at once (a drain after recovery).
    look_again: tokio::sync::Notify,
    /// Successes of healthy endpoints, recorded in batches.
    successes: tokio::sync::mpsc::Sender<AttemptRecord>,
    /// The earliest retry scheduled since the last claim (ms since the
    /// epoch; `i64::MAX`: none), so the loop wakes for it.
    next_retry_ms: AtomicI64,
    /// Wakes the loop to look at `next_retry_ms` (no claim).
    rescheduled: tokio::sync::Notify,
    /// True once the server stops: no attempt starts after it.
    shutdown: watch::Receiver<bool>,
    /// Successes sent to be recorded and not yet written.
    unrecorded: AtomicUsize,
    /// Signalled whenever an attempt ends or successes are written.
    settled: tokio::sync::Notify,
}

/// A running dispatcher.
pub struct Dispatcher {
    task: tokio::task::JoinHandle<()>,
    inner: Arc<Inner>,
}

impl Dispatcher {
    /// After the server's shutdown turned true (no attempt starts any
    /// more): waits, at most `grace`, for the attempts under way to end and
    /// their results to be written, so a restart does not send again what
    /// was sent. What is left after `grace` is sent again later (at least
    /// once).
    pub async fn stop(self, grace: Duration) {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let held = inner.held.load(AtomicOrdering::SeqCst);
            let unrecorded = inner.unrecorded.load(AtomicOrdering::SeqCst);
            if held == 0 && unrecorded == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, inner.settled.notified())
                .await
                .is_err()
            {
                tracing::warn!(
                    held,
                    unrecorded,
                    "stopping: deliveries still under way; they will be sent again"
                );
                break;
            }
        }
        self.task.abort();
    }
}

/// Starts the dispatcher of this node; it runs until `shutdown` turns true.
/// Returns `None` when the store's link was already taken.
pub fn start(
    store: Arc<dyn Deliveries>,
    clock: Arc<dyn Clock>,
    config: DispatchConfig,
    shutdown: watch::Receiver<bool>,
) -> Option<Dispatcher> {
    let link = store.dispatch_link()?;
    let client = crate::http::client(config.allow_private, config.timeout);
    let (successes, rx) = tokio::sync::mpsc::channel(config.max_held.max(1));
    let inner = Arc::new(Inner {
        shutdown: shutdown.clone(),
        unrecorded: AtomicUsize::new(0),
        settled: tokio::sync::Notify::new(),
        successes,
        store,
        clock,
        config,
        client,
        endpoints: Mutex::new(HashMap::new()),
        held: AtomicUsize::new(0),
        in_hand: Mutex::new(HashMap::new()),
        look_again: tokio::sync::Notify::new(),
        next_retry_ms: AtomicI64::new(i64::MAX),
        rescheduled: tokio::sync::Notify::new(),
    });
    tokio::spawn(record_successes(inner.clone(), rx));
    let beat = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(crate::verifier::run(Arc::new(crate::verifier::Verifier {
        store: inner.store.clone(),
        clock: inner.clock.clone(),
        client: inner.client.clone(),
        allow_private: inner.config.allow_private,
        policy: inner.config.policy.clone(),
        wake: inner.config.verify_wake.clone(),
        heartbeats: beat.clone(),
        shutdown: shutdown.clone(),
    })));
    tokio::spawn(crate::heartbeat::run(Arc::new(
        crate::heartbeat::Heartbeats {
            store: inner.store.clone(),
            clock: inner.clock.clone(),
            client: inner.client.clone(),
            allow_private: inner.config.allow_private,
            wake: beat,
            shutdown: shutdown.clone(),
        },
    )));
    Some(Dispatcher {
        task: tokio::spawn(run(inner.clone(), link, shutdown)),
        inner,
    })
}

/// Records successes many at a time: one statement for a whole batch.
async fn record_successes(inner: Arc<Inner>, mut rx: tokio::sync::mpsc::Receiver<AttemptRecord>) {
    let mut batch = Vec::with_capacity(512);
    while rx.recv_many(&mut batch, 512).await > 0 {
        let recs = std::mem::take(&mut batch);
        let n = recs.len();
        if let Err(e) = inner.store.record_successes(recs).await {
            // Their leases run out and they are sent again: at least once.
            tracing::warn!(error = %e, "could not record successful deliveries");
        }
        inner.unrecorded.fetch_sub(n, AtomicOrdering::SeqCst);
        inner.settled.notify_one();
    }
}

async fn run(
    inner: Arc<Inner>,
    mut link: eventflow_store::DispatchLink,
    mut shutdown: watch::Receiver<bool>,
) {
    // Whatever was due before this start (a crash, a restart) goes first.
    if let Err(e) = inner.store.take_over_leases(inner.clock.now()).await {
        tracing::warn!(error = %e, "could not release the leases of an earlier run");
    }
    let mut claim_now = true;
    let mut next_due: Option<Timestamp> = None;
    // Report the queue's depth at once, then every 10 s.
    let mut metrics_at = Instant::now()
        .checked_sub(Duration::from_secs(11))
        .unwrap_or_else(Instant::now);
    let mut safety_net = tokio::time::Instant::now() + SAFETY_NET;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if claim_now {
            claim_now = false;
            inner.next_retry_ms.store(i64::MAX, AtomicOrdering::Relaxed);
            next_due = claim_all(&inner).await;
            safety_net = tokio::time::Instant::now() + SAFETY_NET;
        }
        // A retry scheduled since the claim (under steady fresh traffic the
        // loop never idles) must wake it too.
        let retry = inner.next_retry_ms.load(AtomicOrdering::Relaxed);
        if retry != i64::MAX
            && let Ok(at) = Timestamp::from_millisecond(retry)
            && next_due.is_none_or(|n| at < n)
        {
            next_due = Some(at);
        }
        if metrics_at.elapsed() > Duration::from_secs(10) {
            metrics_at = Instant::now();
            report_depth(&inner).await;
        }
        let sleep = match next_due {
            Some(at) => inner.clock.sleep_until(at),
            None => Box::pin(std::future::pending()),
        };
        tokio::select! {
            batch = link.fresh.recv() => match batch {
                Some(batch) if inner.held.load(AtomicOrdering::Relaxed) >= inner.config.max_held => {
                    // Full: give them back, due now; claims take them when
                    // there is room.
                    let ids = batch
                        .into_iter()
                        .map(|f| DeliveryId::from_stored(f.delivery.id))
                        .collect();
                    let _ = inner.store.release_deliveries(ids, inner.clock.now()).await;
                }
                Some(batch) => {
                    for f in batch {
                        submit(&inner, Job {
                            endpoint_revision: f.endpoint.revision,
                            delivery: f.delivery,
                            event: Some(f.event),
                            endpoint: Some(f.endpoint),
                        });
                    }
                }
                None => return,
            },
            () = link.wake.notified() => claim_now = true,
            () = inner.look_again.notified() => claim_now = true,
            () = inner.rescheduled.notified() => {}
            () = sleep => claim_now = true,
            () = tokio::time::sleep_until(safety_net) => claim_now = true,
            _ = shutdown.changed() => return,
        }
    }
}

/// Claims due deliveries while there is room; returns when the next one
/// is due.
async fn claim_all(inner: &Arc<Inner>) -> Option<Timestamp> {
    loop {
        let room = inner
            .config
            .max_held
            .saturating_sub(inner.held.load(AtomicOrdering::Relaxed));
        if room == 0 {
            // Full: look again soon; results free room.
            return Some(inner.clock.now() + SignedDuration::from_millis(50));
        }
        let limit = room.min(500) as i64;
        let claimed = match inner.store.claim_deliveries(limit).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim deliveries; trying again shortly");
                return Some(inner.clock.now() + SignedDuration::from_secs(1));
            }
        };
        let n = claimed.len() as i64;
        for c in claimed {
            submit(
                inner,
                Job {
                    delivery: c.delivery,
                    event: c.event,
                    endpoint: None,
                    endpoint_revision: c.endpoint_revision,
                },
            );
        }
        if n < limit {
            break;
        }
    }
    let now = inner.clock.now();
    match inner.store.next_due().await {
        // Due already, yet not claimable (an ordered delivery behind a
        // retrying one, an endpoint being disabled): look again in a second
        // rather than spin.
        Ok(next) => next.map(|at| {
            if at <= now {
                now + SignedDuration::from_secs(1)
            } else {
                at
            }
        }),
        Err(_) => None,
    }
}

async fn report_depth(inner: &Inner) {
    if let Ok(depth) = inner.store.queue_depth(inner.clock.now()).await {
        metrics::gauge!("eventflow_delivery_queue_depth", "state" => "due")
            .set(depth.pending_due as f64);
        metrics::gauge!("eventflow_delivery_queue_depth", "state" => "scheduled")
            .set(depth.pending_later as f64);
        metrics::gauge!("eventflow_delivery_queue_depth", "state" => "failed")
            .set(depth.failed as f64);
        // Endpoints in aggregate, never one series per endpoint: ids come
        // and go with tenants' requests, and a series is never forgotten.
        metrics::gauge!("eventflow_endpoints_failing").set(depth.failing_endpoints as f64);
        metrics::gauge!("eventflow_endpoint_failure_streak_max")
            .set(depth.max_failure_streak as f64);
    }
    metrics::gauge!("eventflow_delivery_in_memory")
        .set(inner.held.load(AtomicOrdering::Relaxed) as f64);
}

fn submit(inner: &Arc<Inner>, job: Job) {
    {
        let mut in_hand = inner.in_hand.lock().unwrap_or_else(|e| e.into_inner());
        // One attempt at a time. The delivery can come back while its
        // attempt is still going (its lease ran out), or just after that
        // attempt gave it back and before it ended here: noted, and given
        // back again, due now, when it ends.
        if let Some(again) = in_hand.get_mut(&job.delivery.id) {
            *again = true;
            return;
        }
        in_hand.insert(job.delivery.id.clone(), false);
    }
    inner.held.fetch_add(1, AtomicOrdering::Relaxed);
    let inner = inner.clone();
    // Ids only: an operator can follow one delivery through the logs.
    let span = tracing::info_span!(
        "delivery",
        delivery = %job.delivery.id,
        endpoint = %job.delivery.endpoint_id,
        event = %job.delivery.event_id,
        tenant = %job.delivery.tenant_id,
    );
    tokio::spawn(
        async move {
            let id = job.delivery.id.clone();
            handle(&inner, job).await;
            let again = inner
                .in_hand
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id)
                .unwrap_or(false);
            if again {
                // The later claim's lease is this node's: due now, it is
                // claimed afresh if it is still pending.
                let _ = inner
                    .store
                    .release_deliveries(vec![DeliveryId::from_stored(id)], inner.clock.now())
                    .await;
                inner.look_again.notify_one();
            }
            inner.held.fetch_sub(1, AtomicOrdering::SeqCst);
            inner.settled.notify_one();
        }
        .instrument(span),
    );
}

/// The endpoint's state, loaded or refreshed to `revision`.
async fn endpoint_state(
    inner: &Inner,
    tenant: &str,
    id: &str,
    given: Option<Arc<EndpointRow>>,
    revision: i64,
) -> Option<Arc<EndpointState>> {
    let cached = inner
        .endpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(id)
        .cloned();
    if let Some(state) = &cached {
        let current = state.row.lock().unwrap_or_else(|e| e.into_inner()).revision;
        if current >= revision {
            return cached;
        }
    }
    let row = match given {
        Some(row) if row.revision >= revision => row,
        _ => Arc::new(
            inner
                .store
                .endpoint(
                    &TenantId::from_stored(tenant.to_owned()),
                    &EndpointId::from_stored(id.to_owned()),
                )
                .await
                .ok()??,
        ),
    };
    if let Some(state) = cached {
        *state.row.lock().unwrap_or_else(|e| e.into_inner()) = row;
        return Some(state);
    }
    let state = Arc::new(EndpointState {
        permits: Arc::new(Semaphore::new(inner.config.per_endpoint_concurrency.max(1))),
        next_slot: tokio::sync::Mutex::new(Instant::now()),
        streak: AtomicI64::new(row.failure_streak),
        probing: AtomicBool::new(false),
        probe_done: tokio::sync::Notify::new(),
        resume_at_ms: AtomicI64::new(0),
        row: Mutex::new(row),
    });
    let mut map = inner.endpoints.lock().unwrap_or_else(|e| e.into_inner());
    Some(map.entry(id.to_string()).or_insert(state).clone())
}

async fn handle(inner: &Arc<Inner>, job: Job) {
    let d = &job.delivery;
    let Some(state) = endpoint_state(
        inner,
        &d.tenant_id,
        &d.endpoint_id,
        job.endpoint.clone(),
        job.endpoint_revision,
    )
    .await
    else {
        // Deleted meanwhile: its deliveries were paused with it.
        return;
    };
    let row = state.row.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if row.disabled {
        return;
    }
    if row.verification.holds() {
        // Not yet verified: it waits, paused, until it is (a claim that
        // raced the URL change that made it pending).
        let _ = inner
            .store
            .hold_deliveries(vec![DeliveryId::from_stored(d.id.clone())])
            .await;
        return;
    }
    let Some(event) = job.event.clone() else {
        // The event is past retention: nothing left to send.
        give_up_expired(inner, d).await;
        return;
    };
    // The circuit breaker: while open, one attempt (the probe) at a time.
    let mut probe = false;
    while state.streak.load(AtomicOrdering::Relaxed) >= BREAKER_THRESHOLD {
        let now_ms = inner.clock.now().as_millisecond();
        let resume = state.resume_at_ms.load(AtomicOrdering::Relaxed);
        // Registered before the flag is read, so a probe ending in between
        // is not missed.
        let probe_done = state.probe_done.notified();
        let busy = state.probing.swap(true, AtomicOrdering::AcqRel);
        if busy {
            // Another attempt is the probe: wait for its outcome here (the
            // lease outlasts the request timeout), then look again.
            let _ = tokio::time::timeout(inner.config.timeout + Duration::from_secs(5), probe_done)
                .await;
            continue;
        }
        if now_ms < resume {
            // The probe failed: wait for its next scheduled retry.
            state.probing.store(false, AtomicOrdering::Release);
            state.probe_done.notify_waiters();
            let until = Timestamp::from_millisecond(resume).unwrap_or_else(|_| inner.clock.now());
            let _ = inner
                .store
                .release_deliveries(vec![DeliveryId::from_stored(d.id.clone())], until)
                .await;
            // Another attempt may have succeeded meanwhile and closed the
            // breaker (making every delivery due): this one is due now too,
            // not at the retry time read before.
            if state.resume_at_ms.load(AtomicOrdering::SeqCst) != resume
                || state.streak.load(AtomicOrdering::SeqCst) < BREAKER_THRESHOLD
            {
                let _ = inner
                    .store
                    .release_deliveries(
                        vec![DeliveryId::from_stored(d.id.clone())],
                        inner.clock.now(),
                    )
                    .await;
                inner.look_again.notify_one();
            }
            return;
        }
        probe = true;
        break;
    }
    let Ok(_permit) = state.permits.clone().acquire_owned().await else {
        return;
    };
    if let Some(rate) = row.config.rate_limit.filter(|r| *r > 0) {
        let wait = {
            let mut slot = state.next_slot.lock().await;
            let now = Instant::now();
            let start = (*slot).max(now);
            *slot = start + Duration::from_secs_f64(1.0 / f64::from(rate));
            start - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    if *inner.shutdown.borrow() {
        // Stopping, and this attempt has not started: it is made after the
        // restart, or by another node.
        if probe {
            state.probing.store(false, AtomicOrdering::Release);
            state.probe_done.notify_waiters();
        }
        let _ = inner
            .store
            .release_deliveries(
                vec![DeliveryId::from_stored(d.id.clone())],
                inner.clock.now(),
            )
            .await;
        return;
    }
    let attempt_no = d.attempts.len() as i64 + 1;
    let (attempt, retry_after, status) = send(
        &inner.client,
        inner.config.allow_private,
        &*inner.clock,
        &row,
        &event,
        d.endpoint_sequence,
        attempt_no,
    )
    .await;
    let now = inner.clock.now();
    let verdict = match status {
        Some(s) if (200..300).contains(&s) => AttemptVerdict::Succeeded,
        Some(410) => AttemptVerdict::Gone,
        _ => {
            // 72 h from the start of the retry window: the first attempt,
            // or the last manual retry or replay.
            let first = d
                .window_started_at
                .as_deref()
                .and_then(time::parse)
                .or_else(|| d.attempts.first().and_then(|a| time::parse(&a.at)))
                .unwrap_or_else(|| time::parse(&attempt.at).unwrap_or(now));
            match inner.config.policy.after_failure(
                attempt_no as u32,
                first,
                now,
                retry_after,
                rand::random::<f64>(),
            ) {
                Next::RetryAt(at) => AttemptVerdict::RetryAt(at),
                Next::GiveUp => AttemptVerdict::GiveUp,
            }
        }
    };
    let outcome = match &verdict {
        AttemptVerdict::Succeeded => "succeeded",
        AttemptVerdict::RetryAt(_) => "retrying",
        AttemptVerdict::GiveUp | AttemptVerdict::Expired => "failed",
        AttemptVerdict::Gone => "gone",
    };
    tracing::debug!(
        attempt = attempt_no,
        status = ?status,
        duration_ms = attempt.duration_ms,
        outcome,
        "delivery attempt"
    );
    metrics::counter!("eventflow_deliveries_total", "outcome" => outcome).increment(1);
    metrics::histogram!("eventflow_delivery_attempt_duration_seconds")
        .record(attempt.duration_ms as f64 / 1000.0);
    if matches!(verdict, AttemptVerdict::Succeeded)
        && let Some(created) = time::parse(&event.created_at)
    {
        let latency = now.duration_since(created).as_secs_f64().max(0.0);
        metrics::histogram!("eventflow_delivery_latency_seconds").record(latency);
    }
    let retry_at = match &verdict {
        AttemptVerdict::RetryAt(at) => Some(*at),
        _ => None,
    };

    let healthy = state.streak.load(AtomicOrdering::Relaxed) == 0;
    let disclosure = match verdict {
        AttemptVerdict::Succeeded => eventflow_store::disclosure_of(&row, &event, now),
        _ => None,
    };
    let rec = AttemptRecord {
        tenant_id: d.tenant_id.clone(),
        delivery_id: d.id.clone(),
        endpoint_id: d.endpoint_id.clone(),
        node: inner.store.node().to_string(),
        attempt,
        verdict,
        disclosure,
    };
    let ordered = row.config.ordering == eventflow_store::Ordering::Resource;
    if healthy && rec.verdict == AttemptVerdict::Succeeded && !probe && !ordered {
        // The common case, batched with others. (An ordered endpoint's next
        // delivery waits for this one's record, so those go one by one.)
        inner.unrecorded.fetch_add(1, AtomicOrdering::SeqCst);
        if inner.successes.send(rec).await.is_err() {
            inner.unrecorded.fetch_sub(1, AtomicOrdering::SeqCst);
        }
        return;
    }
    match inner.store.record_attempt(rec).await {
        Ok(recorded) if recorded.applied => {
            state
                .streak
                .store(recorded.failure_streak, AtomicOrdering::Relaxed);
            if recorded.endpoint_disabled {
                let mut r = (*row).clone();
                r.disabled = true;
                *state.row.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(r);
            }
            if let Some(at) = retry_at
                && recorded.failure_streak >= BREAKER_THRESHOLD
            {
                state
                    .resume_at_ms
                    .store(at.as_millisecond(), AtomicOrdering::Relaxed);
            }
            if recorded.recovered {
                state.resume_at_ms.store(0, AtomicOrdering::Relaxed);
                inner.look_again.notify_one();
            }
        }
        Ok(_) => {}
        Err(e) => {
            // The lease runs out and the delivery is attempted again: at
            // least once, never lost.
            tracing::warn!(error = %e, delivery = %d.id, "could not record an attempt");
        }
    }
    if let Some(at) = retry_at {
        // Recorded: make sure the loop wakes when it comes due.
        inner
            .next_retry_ms
            .fetch_min(at.as_millisecond(), AtomicOrdering::Relaxed);
        inner.rescheduled.notify_one();
    }
    if probe {
        state.probing.store(false, AtomicOrdering::Release);
        state.probe_done.notify_waiters();
    }
    if row.config.ordering == eventflow_store::Ordering::Resource {
        // The next delivery of this record may now go.
        inner.look_again.notify_one();
    }
}

async fn give_up_expired(inner: &Inner, d: &Delivery) {
    let rec = AttemptRecord {
        tenant_id: d.tenant_id.clone(),
        delivery_id: d.id.clone(),
        endpoint_id: d.endpoint_id.clone(),
        node: inner.store.node().to_string(),
        attempt: Attempt {
            attempt: d.attempts.len() as i64 + 1,
            at: time::format(inner.clock.now()),
            status_code: None,
            duration_ms: 0,
            response_body: None,
            error: Some("the event is past its retention and can no longer be sent".into()),
        },
        verdict: AttemptVerdict::Expired,
        disclosure: None,
    };
    let _ = inner.store.record_attempt(rec).await;
}

/// The body an endpoint is sent for an event, its `endpoint_sequence`th:
/// the envelope, or for `thin` the envelope without its record; for a FHIR
/// subscription, its notification Bundle.
pub fn payload(
    row: &EndpointRow,
    event: &Event,
    endpoint_sequence: i64,
    now: Timestamp,
) -> Vec<u8> {
    match (&row.config.fhir, row.config.payload) {
        (Some(sub), _) => serde_json::to_vec(&crate::fhir::notification(
            sub,
            row,
            event,
            endpoint_sequence,
            &time::format(now),
        )),
        (None, PayloadMode::Full) => serde_json::to_vec(event),
        (None, PayloadMode::Thin) => serde_json::to_vec(&event.thin()),
    }
    .unwrap_or_default()
}

/// The keys that sign for an endpoint now.
pub fn signers(row: &EndpointRow, now: Timestamp) -> Vec<Signer> {
    let now = time::format(now);
    row.active_secrets(&now)
        .filter_map(|s| match row.config.signing {
            Signing::Hmac => HmacSecret::parse(&s.secret).ok().map(Signer::Hmac),
            Signing::Ed25519 => Ed25519Key::parse(&s.secret).ok().map(Signer::Ed25519),
        })
        .collect()
}

/// Sends an event to an endpoint once, signed, and describes what happened:
/// the attempt, a `Retry-After` (on 429/503) and the status.
/// Also used by the test send of `POST /v1/endpoints/{id}/test`.
pub async fn send(
    client: &reqwest::Client,
    allow_private: bool,
    clock: &dyn Clock,
    row: &EndpointRow,
    event: &Event,
    endpoint_sequence: i64,
    number: i64,
) -> (Attempt, Option<Duration>, Option<u16>) {
    let headers = [
        ("x-eventflow-event-type", event.event_type.clone()),
        ("x-eventflow-topics", event.topics.join(",")),
        ("x-eventflow-attempt", number.to_string()),
        (
            "x-eventflow-endpoint-sequence",
            endpoint_sequence.to_string(),
        ),
    ];
    let body = payload(row, event, endpoint_sequence, clock.now());
    post_signed(
        client,
        allow_private,
        clock,
        row,
        &event.id,
        body,
        &headers,
        number,
    )
    .await
}

/// Posts `body` to the endpoint, signed for message `msg_id` (Standard
/// Webhooks headers, and `x-clinikapi-signature` for HMAC), with the
/// endpoint's custom headers and `headers`; describes what happened: the
/// attempt (with up to [`MAX_RESPONSE_BODY`] of the answer), a
/// `Retry-After` (on 429/503) and the status.
#[allow(clippy::too_many_arguments)]
pub async fn post_signed(
    client: &reqwest::Client,
    allow_private: bool,
    clock: &dyn Clock,
    row: &EndpointRow,
    msg_id: &str,
    body: Vec<u8>,
    headers: &[(&'static str, String)],
    number: i64,
) -> (Attempt, Option<Duration>, Option<u16>) {
    let now = clock.now();
    let at = time::format(now);
    let started = Instant::now();
    let fail = |error: SendError, started: Instant| {
        (
            Attempt {
                attempt: number,
                at: at.clone(),
                status_code: None,
                duration_ms: started.elapsed().as_millis() as u64,
                response_body: None,
                error: Some(error.to_string()),
            },
            None,
            None,
        )
    };
    let url = match reqwest::Url::parse(&row.config.url) {
        Ok(u) => u,
        Err(_) => return fail(SendError::InvalidUrl, started),
    };
    if !allow_private && let Some(why) = crate::http::literal_forbidden(&url) {
        return fail(SendError::Refused(why), started);
    }
    let signed = sign_headers(&signers(row, now), msg_id, now.as_second(), &body);
    let mut request = client.post(url);
    for (k, v) in &row.config.headers {
        request = request.header(k.as_str(), v.as_str());
    }
    for (k, v) in signed.pairs() {
        request = request.header(k, v);
    }
    // A FHIR subscription is sent FHIR, within its own timeout if it set
    // one (the client's is the most).
    let mut request = match &row.config.fhir {
        Some(sub) => {
            let r = request.header("content-type", "application/fhir+json");
            match sub.timeout {
                Some(t) => r.timeout(Duration::from_secs(u64::from(t))),
                None => r,
            }
        }
        None => request.header("content-type", "application/json"),
    };
    for (k, v) in headers {
        request = request.header(*k, v.as_str());
    }
    let request = request.body(body);
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => return fail(SendError::of(&e), started),
    };
    let status = response.status().as_u16();
    let retry_after = if status == 429 || status == 503 {
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now))
    } else {
        None
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut error = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BODY.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if kept.len() >= MAX_RESPONSE_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(SendError::of(&e).to_string());
                break;
            }
        }
    }
    let ok = (200..300).contains(&status) && error.is_none();
    let attempt = Attempt {
        attempt: number,
        at,
        status_code: Some(status),
        duration_ms: started.elapsed().as_millis() as u64,
        response_body: (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned()),
        error: if ok { None } else { error },
    };
    // A 2xx whose body broke off still counts: the receiver said yes.
    (attempt, retry_after, Some(status))
}

/// Why an attempt got no answer, or not a whole one: the attempt's `error`
/// line. It never holds the URL (it may carry a token); `cause` is the
/// innermost error the client reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the endpoint URL is not valid")]
    InvalidUrl,
    /// Refused before anything was sent.
    #[error("{0}")]
    Refused(crate::http::Refusal),
    #[error("timed out{}", colon(.cause))]
    TimedOut { cause: Option<String> },
    #[error("could not connect{}", colon(.cause))]
    Connect { cause: Option<String> },
    #[error("the response broke off{}", colon(.cause))]
    BrokeOff { cause: Option<String> },
    #[error("the request failed{}", colon(.cause))]
    Failed { cause: Option<String> },
}

fn colon(cause: &Option<String>) -> String {
    cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default()
}

impl SendError {
    /// The kind of a client error, with its innermost cause.
    pub fn of(e: &reqwest::Error) -> SendError {
        let mut cause = None;
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            cause = Some(s.to_string()).filter(|c| !c.is_empty());
            source = s.source();
        }
        if e.is_timeout() {
            SendError::TimedOut { cause }
        } else if e.is_connect() {
            SendError::Connect { cause }
        } else if e.is_body() || e.is_decode() {
            SendError::BrokeOff { cause }
        } else {
            SendError::Failed { cause }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SendError;
    use crate::http::Refusal;
    use crate::ssrf::Forbidden;

    #[test]
    fn an_attempt_error_names_the_kind_then_the_cause_and_never_a_url() {
        let e = SendError::Connect {
            cause: Some("connection refused".into()),
        };
        assert_eq!(e.to_string(), "could not connect: connection refused");
        assert_eq!(SendError::TimedOut { cause: None }.to_string(), "timed out");
        let refused = SendError::Refused(Refusal::Named(Forbidden::Loopback)).to_string();
        assert!(
            refused.starts_with("the URL names a loopback address"),
            "{refused}"
        );
        assert!(refused.ends_with("unless allow_private_endpoints is on"));
        assert_eq!(Refusal::NoAddress.to_string(), "the host has no address");
    }
}
