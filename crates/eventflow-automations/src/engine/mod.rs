//! The automation engine: driven by the event log, never by an HTTP handler.
//!
//! - **Ingest.** For each tenant with new events (a commit wakes it; a 5 s
//!   sweep is the safety net), the engine reads the events after the
//!   tenant's automation cursor, matches them against the workflows the
//!   tenant runs (`on`, then the CEL `if`), and starts the runs in one
//!   transaction with the cursor's move ([`Store::start_runs`]). A crash
//!   before that commit leaves the cursor where it was: the events are
//!   matched again. A batch with no run moves the cursor lazily (every few
//!   seconds), so an idle write path costs no extra transaction.
//! - **Runs.** A run executes its steps in order. Each step's outcome is
//!   recorded with its effects in one transaction ([`Store::step_done`]); a
//!   failed step is retried with the webhook schedule (5 s … 12 h, for 72 h)
//!   and then fails the run. Runs are leased: another node (or, on SQLite,
//!   the next start) takes over a run whose node died.
//! - **Timers.** `schedule` sets a durable timer (same key: replaced);
//!   when it is due, [`Store::fire_timers`] deletes it and starts its run in
//!   one transaction, so it fires once. The engine sleeps until the next due
//!   run or timer on the injected clock, and looks at least once a second.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use eventflow_delivery::policy::{Next, RetryPolicy};
use eventflow_model::filter::{Bound, DEFAULT_COST_LIMIT, Outcome};
use eventflow_model::{Event, Object, ResourceType, id, time};
use eventflow_store::automation::{
    ConditionError, Effect, NewRun, Notification, ORIGIN_EVENT, QuotaReservation, Run, RunNext,
    StartRuns, StepOutcome, StepReport, Timer,
};
use eventflow_store::{Clock, EventQuery, Op, Store, WriteKind, WriteRequest};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::channels::{self, Failure, Sent, Smtp, Twilio};
use crate::registry::Registry;
use crate::workflow::{Step, StepKind};
use crate::{claim, duration, template};

/// What the engine needs from the configuration. `Debug` shows no secret
/// (the Slack webhook URL is one: it carries its token).
#[derive(Clone, Default)]
pub struct Settings {
    pub twilio: Option<Twilio>,
    pub smtp: Option<Smtp>,
    pub slack_webhook_url: Option<String>,
    pub claim_url: Option<String>,
    /// `[vars]`: `{{ vars.name }}` in templates.
    pub vars: BTreeMap<String, String>,
    /// The longest a provider or an `http` step may take.
    pub step_timeout: Duration,
    /// `limits.template_fuel` and `limits.template_output_bytes`.
    pub template: template::Bounds,
    /// `limits.workflow_chain_depth`: a workflow write whose run is that
    /// many workflow writes deep fails the run (0: the default, 8).
    pub workflow_chain_depth: u32,
    /// Per provider, the tenants whose own workflows may use it (the
    /// operator's workflows always may).
    pub provider_tenants: ProviderTenants,
    /// Per provider, `daily_quota`: the most one tenant's own workflows may
    /// send through it per UTC day (`None`: no quota).
    pub provider_quotas: ProviderQuotas,
    /// `limits.cel_cost`: the units one evaluation of a workflow's `if` may
    /// spend (0: the default, 100,000).
    pub cel_cost: u64,
    /// The guard of `http` steps and claims: `allow_private_endpoints` and
    /// `--production`'s https rule, as for webhook endpoints.
    pub url_policy: eventflow_delivery::UrlPolicy,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("twilio", &self.twilio)
            .field("smtp", &self.smtp)
            .field(
                "slack_webhook_url",
                &self.slack_webhook_url.as_ref().map(|_| "[redacted]"),
            )
            .field("claim_url", &self.claim_url)
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("step_timeout", &self.step_timeout)
            .field("template", &self.template)
            .field("url_policy", &self.url_policy)
            .field("provider_tenants", &self.provider_tenants)
            .field("provider_quotas", &self.provider_quotas)
            .field("cel_cost", &self.cel_cost)
            .finish()
    }
}

/// `tenants = [...]` of each `[providers.*]` table and of `[billing]`.
#[derive(Debug, Clone, Default)]
pub struct ProviderTenants {
    pub twilio: Vec<String>,
    pub smtp: Vec<String>,
    pub slack: Vec<String>,
    pub billing: Vec<String>,
}

/// `daily_quota` of each `[providers.*]` table and of `[billing]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProviderQuotas {
    pub twilio: Option<u32>,
    pub smtp: Option<u32>,
    pub slack: Option<u32>,
    pub billing: Option<u32>,
}

/// Runs executing at once on a node.
const MAX_RUNNING: usize = 32;
/// Events matched per batch.
const BATCH: u32 = 500;
/// How often a cursor that only moved past unmatched events is saved.
const CURSOR_SAVE_EVERY: Duration = Duration::from_secs(5);
/// The longest a step may call a provider (a run's lease is 60 s).
const MAX_STEP_TIME: Duration = Duration::from_secs(45);

/// The engine of one node.
pub struct Engine {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    settings: Settings,
    http: reqwest::Client,
    mailer: Option<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>>,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    running: Arc<Semaphore>,
    /// Runs this node executes: a run claimed again while it runs is not
    /// started twice.
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The longest a provider or an `http` step may take: well within a
    /// run's lease, so no other node takes a run while a step is under way.
    timeout: Duration,
    /// Pokes the timer loop (a timer was set, a run was put off or ended).
    look_again: Notify,
    /// Passes of the timer loop so far.
    passes: tokio::sync::watch::Sender<u64>,
    /// Set when the server stops: runs end after the step under way.
    stopping: std::sync::atomic::AtomicBool,
    /// Signalled whenever a run this node executes ends or pauses.
    settled: Notify,
    /// Per tenant, the last event sequence this node has matched.
    progress: std::sync::Mutex<HashMap<String, i64>>,
}

/// A step's result before it is recorded.
enum Done {
    Ok {
        detail: Option<Value>,
        effects: Vec<Effect>,
    },
    Skipped {
        reason: String,
        effects: Vec<Effect>,
    },
    Retry(String, Option<Duration>),
    Fail(String),
}

impl Done {
    fn kind(&self) -> &'static str {
        match self {
            Done::Ok { .. } => "succeeded",
            Done::Skipped { .. } => "skipped",
            Done::Retry(..) => "retrying",
            Done::Fail(_) => "failed",
        }
    }
}

impl From<Failure> for Done {
    fn from(f: Failure) -> Done {
        match f {
            Failure::Retry(e, wait) => Done::Retry(e, wait),
            Failure::Permanent(e) => Done::Fail(e),
        }
    }
}

/// The per-tenant ingest state: the saved cursor and how far this node matched.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    saved: i64,
    scanned: i64,
    since_save: Option<std::time::Instant>,
}

impl Engine {
    /// An engine over the store and the workflows. Fails only when the SMTP
    /// settings cannot make a client (a host name that is not one).
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        settings: Settings,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Engine>, String> {
        let timeout = if settings.step_timeout.is_zero() {
            Duration::from_secs(15)
        } else {
            settings.step_timeout.min(MAX_STEP_TIME)
        };
        let mailer = settings
            .smtp
            .as_ref()
            .map(|s| channels::mailer(s, timeout))
            .transpose()?;
        Ok(Arc::new(Engine {
            store,
            registry,
            settings,
            http,
            mailer,
            clock,
            policy: RetryPolicy::default(),
            running: Arc::new(Semaphore::new(MAX_RUNNING)),
            in_flight: Default::default(),
            timeout,
            look_again: Notify::new(),
            passes: tokio::sync::watch::Sender::new(0),
            progress: Default::default(),
            stopping: Default::default(),
            settled: Notify::new(),
        }))
    }

    /// After the loops were aborted (no run starts any more): lets each run
    /// under way finish the step it is on and record it, then waits, at most
    /// `grace`, for them all, so a restart does not perform a step again that
    /// was performed. Runs resume from their next step after the restart (or
    /// on another node).
    pub async fn stop(&self, grace: Duration) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let running = self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len();
            if running == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, self.settled.notified())
                .await
                .is_err()
            {
                tracing::warn!(
                    running,
                    "stopping: workflow steps still under way; they will be run again"
                );
                return;
            }
        }
    }

    /// Starts the ingest and timer loops; abort the handles to stop.
    pub fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let ingest = self.clone();
        let due = self.clone();
        vec![
            tokio::spawn(async move { ingest.ingest_loop().await }),
            tokio::spawn(async move { due.due_loop().await }),
        ]
    }

    // ---- Ingest: events → runs ------------------------------------------

    async fn ingest_loop(self: Arc<Self>) {
        let mut cursors: HashMap<String, Cursor> = HashMap::new();
        // Tenant → its latest sequence when a commit told it (else read).
        let mut todo: BTreeMap<String, Option<i64>> = BTreeMap::new();
        let notifier_store = self.store.clone();
        let mut sweep = tokio::time::interval(CURSOR_SAVE_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = notifier_store.notifier().take_changed() => {
                    for (tenant, latest) in changed {
                        let entry = todo.entry(tenant).or_insert(Some(latest));
                        if let Some(known) = entry {
                            *known = (*known).max(latest);
                        }
                    }
                }
                // The safety net (the first tick is at once): every tenant,
                // also those whose commits another node made while no
                // wake-up reached us.
                _ = sweep.tick() => {
                    for tenant in self.store.tenant_ids().await.unwrap_or_default() {
                        todo.insert(tenant, None);
                    }
                }
            }
            for (tenant, latest) in std::mem::take(&mut todo) {
                if let Err(e) = self.ingest(&tenant, latest, &mut cursors).await {
                    tracing::warn!(error = %e, "automations: could not match new events; will try again");
                }
            }
        }
    }

    async fn ingest(
        self: &Arc<Self>,
        tenant: &str,
        known_latest: Option<i64>,
        cursors: &mut HashMap<String, Cursor>,
    ) -> eventflow_store::Result<()> {
        let mut c = match cursors.get(tenant) {
            Some(c) => *c,
            None => {
                let saved = self.store.automation_cursor(tenant).await?;
                Cursor {
                    saved,
                    scanned: saved,
                    since_save: None,
                }
            }
        };
        loop {
            // No workflow runs for the tenant: nothing to match, so the
            // events are not read at all (the write path's only cost is
            // this one small query, and the lazy cursor save).
            // (The latest sequence is known or read first: a workflow
            // loaded in between then sees the events after it.)
            let latest = match known_latest {
                Some(l) => l,
                None => self.store.latest_sequence(tenant).await?,
            };
            if self.registry.snapshot().workflows(tenant).next().is_none() {
                if latest > c.scanned {
                    c.scanned = latest;
                    c.since_save.get_or_insert_with(std::time::Instant::now);
                }
                break;
            }
            let events = self
                .store
                .events_with_writer(
                    tenant,
                    &EventQuery {
                        after: c.scanned,
                        types: Default::default(),
                        resource_type: None,
                        resource_id: None,
                        visible: None,
                        limit: BATCH,
                        max_bytes: eventflow_store::DEFAULT_PAGE_BYTES,
                    },
                )
                .await?;
            let Some(last) = events.last().map(|(e, _)| e.sequence) else {
                break;
            };
            let first = events.first().map_or(last, |(e, _)| e.sequence);
            let depths: HashMap<i64, i64> = if events
                .iter()
                .any(|(_, w)| w.as_deref().is_some_and(|w| w.starts_with("workflow:")))
            {
                self.store
                    .write_depths(tenant, first, last)
                    .await?
                    .into_iter()
                    .collect()
            } else {
                HashMap::new()
            };
            let (runs, condition_errors) = self.match_events(tenant, &events, &depths);
            let stale = c
                .since_save
                .is_some_and(|t| t.elapsed() >= CURSOR_SAVE_EVERY);
            if runs.is_empty() && condition_errors.is_empty() && !stale {
                c.scanned = last;
                c.since_save.get_or_insert_with(std::time::Instant::now);
                continue;
            }
            // Only the runs a slot is free for now are leased to this
            // node and started; the others wait in the table, due at once.
            let mut permits = self.free_slots(runs.len());
            let started = self
                .store
                .start_runs(StartRuns {
                    tenant_id: tenant.to_string(),
                    from: c.saved,
                    to: last,
                    lease: permits.len(),
                    runs,
                    condition_errors,
                })
                .await?;
            match started {
                Some(runs) => {
                    c = Cursor {
                        saved: last,
                        scanned: last,
                        since_save: None,
                    };
                    let mut waiting = false;
                    for run in runs {
                        match permits.pop() {
                            Some(permit) if run.lease_owner.is_some() => {
                                self.spawn_run(run, permit)
                            }
                            _ => waiting = true,
                        }
                    }
                    if waiting {
                        self.look_again.notify_one();
                    }
                }
                // Another node matched these events first: start over from
                // where it saved.
                None => {
                    let saved = self.store.automation_cursor(tenant).await?;
                    c = Cursor {
                        saved,
                        scanned: saved,
                        since_save: None,
                    };
                }
            }
        }
        // Save a cursor that only passed unmatched events, once it is old
        // enough, so a restart does not match them all again.
        if c.scanned > c.saved
            && c.since_save
                .is_some_and(|t| t.elapsed() >= CURSOR_SAVE_EVERY)
        {
            match self
                .store
                .start_runs(StartRuns {
                    tenant_id: tenant.to_string(),
                    from: c.saved,
                    to: c.scanned,
                    runs: Vec::new(),
                    lease: 0,
                    condition_errors: Vec::new(),
                })
                .await?
            {
                Some(_) => {
                    c.saved = c.scanned;
                    c.since_save = None;
                }
                None => {
                    let saved = self.store.automation_cursor(tenant).await?;
                    c = Cursor {
                        saved,
                        scanned: saved,
                        since_save: None,
                    };
                }
            }
        }
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.to_string(), c.scanned);
        cursors.insert(tenant.to_string(), c);
        Ok(())
    }

    /// The runs a batch of events starts, and the workflows whose `if` ran
    /// out of its budget (the last event of each). A workflow does not run
    /// on an event one of its own steps wrote (no loop of a workflow that
    /// updates the kind of record it listens to).
    fn match_events(
        &self,
        tenant: &str,
        events: &[(Event, Option<String>)],
        depths: &HashMap<i64, i64>,
    ) -> (Vec<NewRun>, Vec<ConditionError>) {
        let snapshot = self.registry.snapshot();
        let cel_cost = match self.settings.cel_cost {
            0 => DEFAULT_COST_LIMIT,
            n => n,
        };
        let mut runs = Vec::new();
        let mut errors: BTreeMap<String, ConditionError> = BTreeMap::new();
        for (event, writer) in events {
            let mut bound: Option<Bound> = None;
            // A run started by an event a workflow wrote is one deeper in
            // the chain than the run that wrote it.
            let chain_depth = if writer
                .as_deref()
                .is_some_and(|w| w.starts_with("workflow:"))
            {
                depths.get(&event.sequence).copied().unwrap_or(0) + 1
            } else {
                0
            };
            for w in snapshot.workflows(tenant) {
                if !w.on.matches(&event.event_type) {
                    continue;
                }
                if writer
                    .as_deref()
                    .and_then(|k| k.strip_prefix("workflow:"))
                    .is_some_and(|name| name == w.name)
                {
                    continue;
                }
                if let Some(cond) = &w.condition {
                    let b = bound.get_or_insert_with(|| Bound::new(event));
                    match cond.evaluate(b, cel_cost) {
                        Outcome::Match => {}
                        Outcome::NoMatch => continue,
                        // No match, and said where the operator and the
                        // tenant look: the log, the metric, the workflow's
                        // `conditionError`. Never the event's data.
                        Outcome::OverBudget => {
                            tracing::warn!(workflow = %w.name, tenant = %tenant, event = %event.id, "workflow condition ran out of its cost budget; no match");
                            metrics::counter!("eventflow_filter_over_budget_total").increment(1);
                            errors.insert(
                                w.name.clone(),
                                ConditionError {
                                    workflow: w.name.clone(),
                                    condition: w.condition_source.clone().unwrap_or_default(),
                                    error: eventflow_store::FilterError {
                                        message: format!(
                                            "ran out of its cost budget ({cel_cost} units); the \
                                             event did not match"
                                        ),
                                        event_id: event.id.clone(),
                                        at: time::format(self.clock.now()),
                                    },
                                },
                            );
                            continue;
                        }
                    }
                }
                runs.push(NewRun {
                    id: id::new_id("run"),
                    tenant_id: tenant.to_string(),
                    workflow: w.name.clone(),
                    event_id: Some(event.id.clone()),
                    origin: ORIGIN_EVENT,
                    timer_key: None,
                    path: String::new(),
                    context: serde_json::to_value(event).unwrap_or(Value::Null),
                    chain_depth,
                });
            }
        }
        (runs, errors.into_values().collect())
    }

    // ---- Due runs and timers ----------------------------------------------

    async fn due_loop(self: Arc<Self>) {
        loop {
            // One read of the next due time per pass.
            let next = match self.store.next_automation_due().await {
                Ok(n) => n.and_then(|n| time::parse(&n)),
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

    /// Up to `n` run slots that are free now, taken.
    fn free_slots(&self, n: usize) -> Vec<OwnedSemaphorePermit> {
        std::iter::from_fn(|| self.running.clone().try_acquire_owned().ok())
            .take(n)
            .collect()
    }

    /// Whether this node's engine has matched the tenant's events up to
    /// `sequence` and executes no run now. With [`Engine::settle`], what tests
    /// wait on before saying that nothing (more) happened.
    pub fn caught_up(&self, tenant: &str, sequence: i64) -> bool {
        let matched = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .is_some_and(|&p| p >= sequence)
            || sequence == 0;
        matched
            && self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Makes the engine look for due timers and runs now; returns once a
    /// whole pass has run after the call (at most `timeout`; `false` if not).
    pub async fn settle(&self, timeout: Duration) -> bool {
        let mut passes = self.passes.subscribe();
        let settled = async {
            // Two passes: the first may have begun before the call.
            for _ in 0..2 {
                passes.borrow_and_update();
                self.look_again.notify_one();
                if passes.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(timeout, settled)
            .await
            .unwrap_or(false)
    }

    // ---- Executing a run -------------------------------------------------

    /// Executes a run in the slot `permit` holds.
    fn spawn_run(self: &Arc<Self>, run: Run, permit: OwnedSemaphorePermit) {
        let fresh = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.id.clone());
        if !fresh {
            return;
        }
        let engine = self.clone();
        // Ids only: an operator can follow one run through the logs.
        let span = tracing::info_span!(
            "workflow_run",
            run = %run.id,
            workflow = %run.workflow,
            tenant = %run.tenant_id,
        );
        tokio::spawn(
            async move {
                let id = run.id.clone();
                engine.execute(run).await;
                engine
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                drop(permit);
                engine.settled.notify_one();
                // A run slot is free: due runs that waited for one can go.
                engine.look_again.notify_one();
            }
            .instrument(span),
        );
    }

    /// Runs a run's steps from its next one until it ends, waits for a
    /// retry, or is lost to another node.
    pub async fn execute(self: &Arc<Self>, mut run: Run) {
        let snapshot = self.registry.snapshot();
        let found = snapshot.find_scoped(&run.tenant_id, &run.workflow);
        // `[vars]` is the operator's (it may hold a signing secret): only
        // the server's own workflows see it, not those a tenant wrote.
        let tenant_owned = found.is_some_and(|(_, own)| own);
        let steps: Result<Vec<Step>, String> = match found {
            None => Err(format!(
                "workflow {} is not loaded any more (deleted, renamed or broken)",
                run.workflow
            )),
            Some((w, _)) => steps_at(&w.steps, &run.path).map(<[Step]>::to_vec),
        };
        drop(snapshot);
        let mut ctx = run.context.clone();
        if let Some(o) = ctx.as_object_mut() {
            let vars = if tenant_owned {
                json!({})
            } else {
                json!(self.settings.vars)
            };
            o.insert("vars".into(), vars);
            o.insert(
                "run".into(),
                json!({"id": run.id, "workflow": run.workflow, "trigger": run.origin}),
            );
        }
        let ctx = Arc::new(ctx);
        loop {
            if run.status != "pending" {
                return;
            }
            if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                // The server stops: the next step runs after the restart.
                return;
            }
            let index = run.next_step.max(0) as usize;
            let (name, kind, done, total) = match &steps {
                Err(e) => (
                    step_name(&run.path, index + 1),
                    "unknown",
                    Done::Fail(e.clone()),
                    index as i64 + 1,
                ),
                Ok(list) => {
                    match list.get(index) {
                        Some(step) => {
                            // A step that calls a provider first renews the
                            // lease, and stops if another node holds the run
                            // (its lease ran out while this one waited).
                            if step.kind.calls_out() {
                                match self.store.begin_step(&run.id, index as i64).await {
                                    Ok(true) => {}
                                    Ok(false) => return,
                                    Err(e) => {
                                        tracing::warn!(error = %e, run = %run.id, "automations: could not renew a run's lease");
                                        return;
                                    }
                                }
                            }
                            let span = tracing::info_span!("step", index, kind = step.kind.name());
                            let done = self
                                .perform(&run, step, &ctx, tenant_owned)
                                .instrument(span.clone())
                                .await;
                            // The outcome's kind only: its message may quote
                            // a provider's answer.
                            span.in_scope(|| {
                                tracing::debug!(outcome = done.kind(), "workflow step");
                            });
                            (
                                step_name(&run.path, step.number),
                                step.kind.name(),
                                done,
                                list.len() as i64,
                            )
                        }
                        // Fewer steps than the run expected (the file changed).
                        None => {
                            let e = format!(
                                "workflow {} has no step {} any more",
                                run.workflow,
                                index + 1
                            );
                            (
                                step_name(&run.path, index + 1),
                                "unknown",
                                Done::Fail(e),
                                index as i64 + 1,
                            )
                        }
                    }
                }
            };
            let previous = run.steps.get(index);
            let attempts = previous.map_or(0, |p| p.attempts) + 1;
            let now = self.clock.now();
            let mut outcome = StepOutcome {
                name,
                step_type: kind.to_string(),
                status: "succeeded".into(),
                error: None,
                attempts,
                at: time::format(now),
                detail: None,
            };
            let (effects, next) = match done {
                Done::Ok { detail, effects } => {
                    outcome.detail = detail;
                    (effects, RunNext::Advance)
                }
                Done::Skipped { reason, effects } => {
                    outcome.status = "skipped".into();
                    outcome.detail = Some(json!({ "reason": reason }));
                    (effects, RunNext::Advance)
                }
                Done::Fail(e) => {
                    outcome.status = "failed".into();
                    outcome.error = Some(e);
                    (Vec::new(), RunNext::Fail)
                }
                Done::Retry(e, wait) => {
                    let first = run
                        .window_started_at
                        .as_deref()
                        .and_then(time::parse)
                        .unwrap_or(now);
                    match self.policy.after_failure(
                        attempts,
                        first,
                        now,
                        wait,
                        rand::random::<f64>(),
                    ) {
                        Next::RetryAt(at) => {
                            outcome.status = "retrying".into();
                            outcome.error = Some(e);
                            outcome.detail = Some(json!({ "nextAttemptAt": time::format(at) }));
                            (Vec::new(), RunNext::RetryAt(time::format(at)))
                        }
                        Next::GiveUp => {
                            outcome.status = "failed".into();
                            outcome.error = Some(format!("gave up after 72 hours of retries: {e}"));
                            (Vec::new(), RunNext::Fail)
                        }
                    }
                }
            };
            let retrying = matches!(next, RunNext::RetryAt(_));
            let report = StepReport {
                run_id: run.id.clone(),
                tenant_id: run.tenant_id.clone(),
                index: index as i64,
                total,
                outcome,
                effects,
                next,
                window_started_at: run.window_started_at.clone(),
            };
            match self.store.step_done(report).await {
                Ok(Some(updated)) => {
                    if updated.status != "pending" {
                        metrics::counter!("eventflow_workflow_runs_total", "status" => updated.status.clone())
                            .increment(1);
                    }
                    run = updated;
                }
                // Another node holds the run now.
                Ok(None) => return,
                Err(e) => {
                    // The lease runs out and the step is tried again.
                    tracing::warn!(error = %e, run = %run.id, "automations: could not record a step");
                    return;
                }
            }
            if retrying {
                self.look_again.notify_one();
                return;
            }
        }
    }

    /// Does one step.
    async fn perform(&self, run: &Run, step: &Step, ctx: &Arc<Value>, own: bool) -> Done {
        // Off the async workers: a render may take all its fuel.
        let (config, ctx, bounds) = (step.config.clone(), ctx.clone(), self.settings.template);
        let rendered =
            match tokio::task::spawn_blocking(move || render_map(&config, &ctx, bounds)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Done::Fail(e),
                Err(_) => return Done::Fail("the step's templates could not be rendered".into()),
            };
        let text = |k: &str| {
            rendered
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let step_label = step_name(&run.path, step.number);
        let now = time::format(self.clock.now());
        let note = |channel: &str,
                    to: String,
                    subject: Option<String>,
                    body: String,
                    sent: Option<(&str, Sent)>| {
            let (provider, id, status) = match sent {
                Some((p, s)) => (p.to_string(), s.id, Some(s.status)),
                None => ("outbox".to_string(), None, None),
            };
            Notification {
                id: id::new_id("ntf"),
                tenant_id: run.tenant_id.clone(),
                channel: channel.to_string(),
                direction: "outbound".into(),
                to,
                subject,
                body,
                workflow: Some(run.workflow.clone()),
                run_id: Some(run.id.clone()),
                step: Some(step_label.clone()),
                provider,
                provider_id: id,
                provider_status: status,
                created_at: now.clone(),
            }
        };
        let delivered = |n: Notification| {
            let detail = json!({
                "notificationId": n.id,
                "provider": n.provider,
                "providerId": n.provider_id,
                "providerStatus": n.provider_status,
            });
            Done::Ok {
                detail: Some(detail),
                effects: vec![Effect::Notify(n)],
            }
        };
        // A tenant's own workflow uses a provider only when the operator
        // lists the tenant for it.
        let refused = |table: &str, tenants: &[String]| -> Option<Done> {
            (own && !tenants.contains(&run.tenant_id)).then(|| {
                Done::Fail(format!(
                    "{} steps of a tenant's own workflows may not use {table}: the operator has not \
                     listed this tenant in its tenants",
                    step.kind.name()
                ))
            })
        };
        let configured = match step.kind {
            StepKind::Sms => self
                .settings
                .twilio
                .is_some()
                .then_some(("[providers.twilio]", &self.settings.provider_tenants.twilio)),
            StepKind::Email => self
                .settings
                .smtp
                .is_some()
                .then_some(("[providers.smtp]", &self.settings.provider_tenants.smtp)),
            StepKind::Slack => self
                .settings
                .slack_webhook_url
                .is_some()
                .then_some(("[providers.slack]", &self.settings.provider_tenants.slack)),
            StepKind::Claim => self
                .settings
                .claim_url
                .is_some()
                .then_some(("[billing]", &self.settings.provider_tenants.billing)),
            _ => None,
        };
        if let Some((table, tenants)) = configured
            && let Some(no) = refused(table, tenants)
        {
            return no;
        }
        match step.kind {
            StepKind::Sms => {
                let (to, body) = (text("to"), text("body"));
                if to.is_empty() {
                    return Done::Fail("to: is empty (the record has no phone number?)".into());
                }
                match &self.settings.twilio {
                    None => delivered(note("sms", to, None, body, None)),
                    Some(t) => {
                        if let Some(no) = self.take_quota(run, &step_label, step.kind, own).await {
                            return no;
                        }
                        match channels::twilio_sms(&self.http, self.timeout, t, &to, &body).await {
                            Ok(sent) => {
                                delivered(note("sms", to, None, body, Some(("twilio", sent))))
                            }
                            Err(f) => f.into(),
                        }
                    }
                }
            }
            StepKind::Email => {
                let (to, subject, body) = (text("to"), text("subject"), text("body"));
                if to.is_empty() {
                    return Done::Fail("to: is empty".into());
                }
                match (&self.mailer, &self.settings.smtp) {
                    (Some(m), Some(s)) => {
                        if let Some(no) = self.take_quota(run, &step_label, step.kind, own).await {
                            return no;
                        }
                        match channels::email(m, &s.from, &to, &subject, &body).await {
                            Ok(sent) => delivered(note(
                                "email",
                                to,
                                Some(subject),
                                body,
                                Some(("smtp", sent)),
                            )),
                            Err(f) => f.into(),
                        }
                    }
                    _ => delivered(note("email", to, Some(subject), body, None)),
                }
            }
            StepKind::Slack => {
                let text_ = text("text");
                let channel = rendered
                    .get("channel")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let to = channel.clone().unwrap_or_else(|| "slack".into());
                match &self.settings.slack_webhook_url {
                    None => delivered(note("slack", to, None, text_, None)),
                    Some(url) => {
                        if let Some(no) = self.take_quota(run, &step_label, step.kind, own).await {
                            return no;
                        }
                        match channels::slack(
                            &self.http,
                            self.timeout,
                            url,
                            &text_,
                            channel.as_deref(),
                        )
                        .await
                        {
                            Ok(sent) => {
                                delivered(note("slack", to, None, text_, Some(("slack", sent))))
                            }
                            Err(f) => f.into(),
                        }
                    }
                }
            }
            StepKind::Http => {
                if text("url").is_empty() {
                    // No address configured (an unset `vars` entry with a
                    // default of ''): the request goes to the outbox, like a
                    // message with no provider.
                    let method = rendered
                        .get("method")
                        .and_then(Value::as_str)
                        .unwrap_or("POST");
                    let body = rendered
                        .get("body")
                        .map(Value::to_string)
                        .unwrap_or_default();
                    return delivered(note(
                        "http",
                        String::new(),
                        Some(method.to_string()),
                        body,
                        None,
                    ));
                }
                self.http_step(run, &step_label, &rendered).await
            }
            StepKind::Create | StepKind::Update => {
                let limit = match self.settings.workflow_chain_depth {
                    0 => 8,
                    n => i64::from(n),
                };
                if run.chain_depth >= limit {
                    return Done::Fail(format!(
                        "loop: this run was started by a chain of {} workflow writes \
                         (limits.workflow_chain_depth is {limit}); workflows that update each \
                         other need an `if` that stops them",
                        run.chain_depth
                    ));
                }
                let rt: ResourceType = match text("type").parse() {
                    Ok(rt) => rt,
                    Err(_) => return Done::Fail("type: not a record type".into()),
                };
                let body = rendered.get("body").cloned().unwrap_or(json!({}));
                let op = if step.kind == StepKind::Create {
                    Op::Create { rt, body }
                } else {
                    let id = text("id");
                    if id.is_empty() {
                        return Done::Fail("id: is empty".into());
                    }
                    Op::Patch {
                        rt,
                        id,
                        patch: body,
                        if_match: None,
                    }
                };
                Done::Ok {
                    detail: None,
                    effects: vec![Effect::Write(Box::new(WriteRequest {
                        tenant: run.tenant_id.clone(),
                        key_id: format!("workflow:{}", run.workflow),
                        kind: WriteKind::Single(op),
                        idempotency: None,
                    }))],
                }
            }
            StepKind::Schedule => {
                let key = text("key");
                if key.is_empty() {
                    return Done::Fail("key: is empty".into());
                }
                let now_ts = self.clock.now();
                let fire_at = if rendered.contains_key("after") {
                    let after = match duration::parse(&text("after")) {
                        Ok(d) => d,
                        Err(e) => return Done::Fail(format!("after: {e}")),
                    };
                    now_ts.checked_add(after).ok()
                } else {
                    let at = match time::parse(&text("at")) {
                        Some(t) => t,
                        None => {
                            return Done::Fail(
                                "at: is not a time (RFC 3339, e.g. {{ data.start }})".into(),
                            );
                        }
                    };
                    let offset = match rendered.get("offset").and_then(Value::as_str) {
                        None => jiff::SignedDuration::ZERO,
                        Some(o) => match duration::parse(o) {
                            Ok(d) => d,
                            Err(e) => return Done::Fail(format!("offset: {e}")),
                        },
                    };
                    at.checked_add(offset).ok()
                };
                let Some(fire_at) = fire_at else {
                    return Done::Fail("the timer's time is out of range".into());
                };
                if fire_at <= now_ts {
                    // Too late for this timer (a start less than 24 h away):
                    // it is not set, and an earlier one of the key (for a
                    // time since moved) goes.
                    return Done::Skipped {
                        reason: format!("the time {} has passed", time::format(fire_at)),
                        effects: vec![Effect::Cancel { key }],
                    };
                }
                let path = if run.path.is_empty() {
                    step.number.to_string()
                } else {
                    format!("{}.{}", run.path, step.number)
                };
                self.look_again.notify_one();
                Done::Ok {
                    detail: Some(json!({"key": key, "fireAt": time::format(fire_at)})),
                    effects: vec![Effect::Schedule(Timer {
                        tenant_id: run.tenant_id.clone(),
                        key,
                        fire_at: time::format(fire_at),
                        workflow: run.workflow.clone(),
                        path,
                        context: run.context.clone(),
                        event_id: run.event_id.clone(),
                        run_id: Some(run.id.clone()),
                        created_at: now,
                        chain_depth: run.chain_depth,
                    })],
                }
            }
            StepKind::Cancel => {
                let key = text("key");
                Done::Ok {
                    detail: None,
                    effects: vec![Effect::Cancel { key }],
                }
            }
            StepKind::Claim => {
                self.claim_step(run, &step_label, &rendered, note, own)
                    .await
            }
        }
    }

    /// Before a step of a tenant's own workflow calls a provider with a
    /// `daily_quota`: takes a unit of the tenant's quota for today (UTC);
    /// `Some` with the failure when the step may not send. The operator's
    /// workflows are not counted: the quota bounds what a tenant's own
    /// workflows make the operator's accounts send.
    async fn take_quota(
        &self,
        run: &Run,
        step_label: &str,
        kind: StepKind,
        own: bool,
    ) -> Option<Done> {
        if !own {
            return None;
        }
        let q = self.settings.provider_quotas;
        let (provider, table, unit, limit) = match kind {
            StepKind::Sms => ("twilio", "[providers.twilio]", "sms", q.twilio),
            StepKind::Email => ("smtp", "[providers.smtp]", "emails", q.smtp),
            StepKind::Slack => ("slack", "[providers.slack]", "slack messages", q.slack),
            StepKind::Claim => ("billing", "[billing]", "claims", q.billing),
            _ => return None,
        };
        let limit = limit?;
        let reservation = QuotaReservation {
            tenant_id: run.tenant_id.clone(),
            provider: provider.to_string(),
            limit: i64::from(limit),
            run_id: run.id.clone(),
            step: step_label.to_string(),
        };
        match self.store.reserve_quota(reservation).await {
            Ok(true) => None,
            Ok(false) => Some(Done::Fail(format!(
                "daily quota of {limit} {unit} reached for this tenant ({table} daily_quota; \
                 it starts again at midnight UTC)"
            ))),
            Err(e) => Some(Done::Retry(
                format!("could not take a unit of the daily quota: {e}"),
                None,
            )),
        }
    }

    async fn http_step(&self, run: &Run, step_label: &str, rendered: &Map<String, Value>) -> Done {
        let url = rendered.get("url").and_then(Value::as_str).unwrap_or("");
        // The guard, before anything is sent: the literal address, the
        // scheme; the client checks every address a name resolves to.
        let url = match self.settings.url_policy.check(url) {
            Ok(url) => url,
            Err(e) => return Done::Fail(format!("url: {e}")),
        };
        let method = rendered
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("POST");
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let body = rendered.get("body").cloned();
        let bytes = body
            .as_ref()
            .filter(|_| method != reqwest::Method::GET)
            .map(|b| serde_json::to_vec(b).unwrap_or_default());
        let delivery_id = format!("{}:{}", run.id, step_label);
        let mut request = self
            .http
            .request(method, url)
            .timeout(self.timeout)
            .header("idempotency-key", delivery_id.as_str());
        if let Some(headers) = rendered.get("headers").and_then(Value::as_object) {
            for (k, v) in headers {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let (Ok(name), Ok(value)) = (
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                    reqwest::header::HeaderValue::from_str(&v),
                ) else {
                    return Done::Fail(format!("headers.{k}: not a valid header name or value"));
                };
                request = request.header(name, value);
            }
        }
        if let Some(secret) = rendered
            .get("sign")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            let Ok(secret) = eventflow_webhook::HmacSecret::parse(secret) else {
                return Done::Fail("sign: must be a signing secret (whsec_…)".into());
            };
            let signed = eventflow_webhook::sign_headers(
                &[eventflow_webhook::Signer::Hmac(secret)],
                &delivery_id,
                self.clock.now().as_second(),
                bytes.as_deref().unwrap_or(b""),
            );
            for (k, v) in signed.pairs() {
                request = request.header(k, v);
            }
        }
        if let Some(b) = bytes {
            request = request.header("content-type", "application/json").body(b);
        }
        self.post_and_classify(request, "the server").await
    }

    async fn post_and_classify(&self, request: reqwest::RequestBuilder, who: &str) -> Done {
        match channels::send(request, who).await {
            Ok(code) => Done::Ok {
                detail: Some(json!({ "statusCode": code })),
                effects: Vec::new(),
            },
            Err(f) => f.into(),
        }
    }

    async fn claim_step(
        &self,
        run: &Run,
        step_label: &str,
        rendered: &Map<String, Value>,
        note: impl Fn(&str, String, Option<String>, String, Option<(&str, Sent)>) -> Notification,
        own: bool,
    ) -> Done {
        let given = rendered
            .get("encounter")
            .and_then(Value::as_str)
            .unwrap_or("");
        let encounter_id = if given.is_empty() {
            let is_encounter = run
                .context
                .pointer("/resource/type")
                .and_then(Value::as_str)
                == Some("encounter");
            match run.context.pointer("/data/id").and_then(Value::as_str) {
                Some(id) if is_encounter => id.to_string(),
                _ => {
                    return Done::Fail(
                        "encounter: name the encounter (the event is not an encounter's)".into(),
                    );
                }
            }
        } else {
            given.to_string()
        };
        let input = match self.claim_input(&run.tenant_id, &encounter_id).await {
            Ok(Some(i)) => i,
            Ok(None) => return Done::Fail(format!("encounter: {encounter_id} does not exist")),
            Err(e) => return Done::Retry(format!("could not read the encounter: {e}"), None),
        };
        let claim = claim::build(&input, &time::format(self.clock.now()));
        let body = serde_json::to_string(&claim).unwrap_or_default();
        let Some(url) = &self.settings.claim_url else {
            let n = note(
                "claim",
                "billing".into(),
                Some(format!("Claim for encounter {encounter_id}")),
                body,
                None,
            );
            return Done::Ok {
                detail: Some(json!({ "notificationId": n.id, "provider": "outbox" })),
                effects: vec![Effect::Notify(n)],
            };
        };
        let checked = match self.settings.url_policy.check(url) {
            Ok(u) => u,
            Err(e) => return Done::Fail(format!("[billing] claim_url: {e}")),
        };
        if let Some(no) = self.take_quota(run, step_label, StepKind::Claim, own).await {
            return no;
        }
        let origin = checked.origin().ascii_serialization();
        let request = self
            .http
            .post(checked)
            .timeout(self.timeout)
            .header("content-type", "application/fhir+json")
            .header("idempotency-key", format!("{}:{}", run.id, step_label))
            .body(body.clone());
        match self.post_and_classify(request, "the billing server").await {
            Done::Ok { detail, .. } => {
                let status = detail
                    .as_ref()
                    .and_then(|d| d.get("statusCode"))
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                // The billing server by its origin only: the URL's path and
                // query are the operator's (they may carry a token).
                let n = note(
                    "claim",
                    origin,
                    Some(format!("Claim for encounter {encounter_id}")),
                    body,
                    Some(("billing", Sent { id: None, status })),
                );
                Done::Ok {
                    detail,
                    effects: vec![Effect::Notify(n)],
                }
            }
            other => other,
        }
    }

    async fn claim_input(
        &self,
        tenant: &str,
        encounter_id: &str,
    ) -> eventflow_store::Result<Option<claim::ClaimInput>> {
        let Some(encounter) = self
            .store
            .get_record(tenant, ResourceType::Encounter, encounter_id)
            .await?
        else {
            return Ok(None);
        };
        let get = |rt: ResourceType, field: &str| {
            let id = encounter
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_string);
            let store = self.store.clone();
            let tenant = tenant.to_string();
            async move {
                match id {
                    Some(id) => store.get_record(&tenant, rt, &id).await,
                    None => Ok(None),
                }
            }
        };
        let patient: Option<Object> = get(ResourceType::Patient, "patientId").await?;
        let practitioner: Option<Object> =
            get(ResourceType::Practitioner, "practitionerId").await?;
        let observations = self
            .store
            .records_referencing(
                tenant,
                ResourceType::Observation,
                "encounterId",
                encounter_id,
                100,
            )
            .await?;
        let prescriptions = self
            .store
            .records_referencing(
                tenant,
                ResourceType::Prescription,
                "encounterId",
                encounter_id,
                100,
            )
            .await?;
        Ok(Some(claim::ClaimInput {
            encounter,
            patient,
            practitioner,
            observations,
            prescriptions,
        }))
    }
}

/// A step's name in the run record: `2`, or `2.1` inside step 2's timer.
fn step_name(path: &str, number: usize) -> String {
    if path.is_empty() {
        number.to_string()
    } else {
        format!("{path}.{number}")
    }
}

/// The steps at a path: `` the workflow's, `2` those of its step 2.
fn steps_at<'a>(steps: &'a [Step], path: &str) -> Result<&'a [Step], String> {
    let mut here = steps;
    if path.is_empty() {
        return Ok(here);
    }
    for part in path.split('.') {
        let n: usize = part.parse().map_err(|_| format!("bad step path {path}"))?;
        let Some(step) = n.checked_sub(1).and_then(|i| here.get(i)) else {
            return Err(format!("the workflow has no step {path} any more"));
        };
        if step.kind != StepKind::Schedule {
            return Err(format!(
                "step {path} of the workflow is not a schedule any more"
            ));
        }
        here = &step.steps;
    }
    Ok(here)
}

/// Renders every string of a step's settings (nested `steps` are not part
/// of them). An error names the field.
fn render_map(
    config: &Map<String, Value>,
    ctx: &Value,
    bounds: template::Bounds,
) -> Result<Map<String, Value>, String> {
    config
        .iter()
        .map(|(k, v)| Ok((k.clone(), render_value(v, ctx, k, bounds)?)))
        .collect()
}

fn render_value(
    v: &Value,
    ctx: &Value,
    field: &str,
    bounds: template::Bounds,
) -> Result<Value, String> {
    match v {
        Value::String(s) => template::render(s, ctx, bounds)
            .map(Value::String)
            .map_err(|e| format!("{field}: {e}")),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| render_value(item, ctx, &format!("{field}[{i}]"), bounds))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(k, item)| {
                Ok((
                    k.clone(),
                    render_value(item, ctx, &format!("{field}.{k}"), bounds)?,
                ))
            })
            .collect::<Result<Map<_, _>, String>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}
