//! The automation engine's tables (docs/design.md §4): workflow runs (a work
//! queue with leases, like deliveries), durable timers, and the outbox of
//! notifications — the rows, the writer's side of each change, and the SQL,
//! written once for both backends.
//!
//! The engine (in `eventflow-automations`) decides; the store makes each
//! decision durable in one transaction with its effects:
//! - [`StartRuns`]: the runs a batch of events starts, with the tenant's
//!   automation cursor moved past the batch (compare-and-set, so two nodes
//!   never start the same run);
//! - [`StepReport`]: one step's outcome, with its effects inside the same
//!   transaction — a record created or updated (with its own event), a timer
//!   set or cancelled, a message put in the outbox — so an effect inside this
//!   server happens exactly once per (run, step), even across a crash;
//! - timers firing: each due timer is deleted and its run inserted together,
//!   so a timer fires once, also with several nodes.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Result, StoreError};
use crate::ops::{self, WriteConn};
use crate::types::WriteRequest;

/// How long a node holds a run it is executing before another may take it.
pub const RUN_LEASE: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// What started a run.
pub const ORIGIN_EVENT: &str = "event";
pub const ORIGIN_TIMER: &str = "timer";

/// A run to insert.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub tenant_id: String,
    pub workflow: String,
    pub event_id: Option<String>,
    pub origin: &'static str,
    pub timer_key: Option<String>,
    pub path: String,
    pub context: Value,
    /// Workflow writes in the chain that led to this run (0: none).
    pub chain_depth: i64,
}

/// The runs a batch of a tenant's events starts, and the cursor move that
/// goes with them.
#[derive(Debug, Clone)]
pub struct StartRuns {
    pub tenant_id: String,
    /// The cursor as the engine read it; the batch is refused (`None`) when
    /// it moved meanwhile.
    pub from: i64,
    /// The last sequence the batch covers.
    pub to: i64,
    pub runs: Vec<NewRun>,
    /// How many of `runs`, the first ones, the node starts now (it has a
    /// free slot for each): those are leased to it. The others are due at
    /// once for whichever node has a slot first.
    pub lease: usize,
    /// Workflows whose `if` ran out of its budget on an event of the batch
    /// (the last one of each), recorded with the batch.
    pub condition_errors: Vec<ConditionError>,
}

/// A workflow's `if` that stopped without an answer on one of the tenant's
/// events, as `GET /v1/workflows` shows it (`conditionError`) while the
/// workflow's condition is still `condition`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionError {
    pub workflow: String,
    /// The condition's source when it stopped.
    pub condition: String,
    pub error: crate::delivery::FilterError,
}

/// One step's outcome, as the run record shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepOutcome {
    /// The step's place: `1`, `2`, or `2.1` for the first step of step 2's timer.
    pub name: String,
    #[serde(rename = "type")]
    pub step_type: String,
    /// succeeded | failed | retrying | skipped
    pub status: String,
    pub error: Option<String>,
    pub attempts: u32,
    pub at: String,
    /// What the step did: a message's provider id and status, a record's
    /// id, a timer's fire time, a response's status code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// A stored run.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub tenant_id: String,
    pub workflow: String,
    pub event_id: Option<String>,
    pub origin: String,
    pub timer_key: Option<String>,
    pub path: String,
    pub context: Value,
    /// pending | succeeded | failed
    pub status: String,
    pub steps: Vec<StepOutcome>,
    /// The index (0-based) of the step to run next.
    pub next_step: i64,
    pub window_started_at: Option<String>,
    pub next_at: Option<String>,
    pub lease_owner: Option<String>,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    /// Workflow writes in the chain that led to this run (0: none).
    pub chain_depth: i64,
}

impl Run {
    /// The run as `GET /v1/workflow-runs` shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "workflow": self.workflow,
            "eventId": self.event_id,
            "trigger": self.origin,
            "timerKey": self.timer_key,
            "status": self.status,
            "startedAt": self.started_at,
            "updatedAt": self.updated_at,
            "finishedAt": self.finished_at,
            "nextAttemptAt": if self.status == "pending" && self.lease_owner.is_none() { self.next_at.clone() } else { None },
            "steps": self.steps,
        })
    }
}

/// A timer to set (replacing the tenant's timer of the same key).
#[derive(Debug, Clone)]
pub struct Timer {
    pub tenant_id: String,
    pub key: String,
    pub fire_at: String,
    pub workflow: String,
    pub path: String,
    pub context: Value,
    pub event_id: Option<String>,
    pub run_id: Option<String>,
    pub created_at: String,
    /// The chain depth of the run that set it; its run goes on at it (set
    /// when the step is recorded).
    pub chain_depth: i64,
}

impl Timer {
    /// The timer as `GET /v1/timers` shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "key": self.key,
            "fireAt": self.fire_at,
            "workflow": self.workflow,
            "eventId": self.event_id,
            "runId": self.run_id,
            "createdAt": self.created_at,
        })
    }
}

/// A message in the outbox (sent through a provider or not).
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub id: String,
    pub tenant_id: String,
    pub channel: String,
    pub direction: String,
    pub to: String,
    pub subject: Option<String>,
    pub body: String,
    pub workflow: Option<String>,
    pub run_id: Option<String>,
    pub step: Option<String>,
    /// `outbox` when no provider is configured, else the provider's name.
    pub provider: String,
    pub provider_id: Option<String>,
    pub provider_status: Option<String>,
    pub created_at: String,
}

impl Notification {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "channel": self.channel,
            "direction": self.direction,
            "to": self.to,
            "subject": self.subject,
            "body": self.body,
            "workflow": self.workflow,
            "runId": self.run_id,
            "step": self.step,
            "provider": self.provider,
            "providerId": self.provider_id,
            "providerStatus": self.provider_status,
            "createdAt": self.created_at,
        })
    }
}

/// Something a step does inside this server, in the transaction that
/// records the step.
#[derive(Debug, Clone)]
pub enum Effect {
    /// A record created or updated (with its event).
    Write(Box<WriteRequest>),
    Schedule(Timer),
    Cancel {
        key: String,
    },
    Notify(Notification),
}

/// Longest timer key stored (an index entry must stay small).
pub const MAX_TIMER_KEY: usize = 1024;

/// Why an effect cannot be stored, if it cannot.
fn unstorable(effect: &Effect) -> Option<String> {
    let nul = |what: &str| Some(format!("{what} contains a NUL character (\\u0000)"));
    let has = |s: &str| s.contains('\0');
    match effect {
        // Records are validated by `ops::apply`, which refuses NUL.
        Effect::Write(_) => None,
        Effect::Schedule(Timer { key, .. }) | Effect::Cancel { key }
            if key.len() > MAX_TIMER_KEY =>
        {
            Some(format!(
                "the timer key is longer than {MAX_TIMER_KEY} bytes"
            ))
        }
        Effect::Schedule(t) if has(&t.key) => nul("the timer key"),
        Effect::Schedule(t) if eventflow_model::validate::find_nul(&t.context).is_some() => {
            nul("the timer's context")
        }
        Effect::Cancel { key } if has(key) => nul("the timer key"),
        Effect::Notify(n) if has(&n.to) => nul("the recipient"),
        Effect::Notify(n) if n.subject.as_deref().is_some_and(has) => nul("the subject"),
        Effect::Notify(n) if has(&n.body) => nul("the message"),
        _ => None,
    }
}

/// What happens to the run after the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunNext {
    /// On to the next step (or done when this was the last).
    Advance,
    /// The step failed for now: again at this time.
    RetryAt(String),
    /// The step failed for good: so does the run.
    Fail,
}

/// One step's outcome from the node that holds the run.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub run_id: String,
    pub tenant_id: String,
    /// The step's index in the run (0-based).
    pub index: i64,
    /// How many steps the run has in all.
    pub total: i64,
    pub outcome: StepOutcome,
    pub effects: Vec<Effect>,
    pub next: RunNext,
    /// When the failing step's retry window opened (kept across retries).
    pub window_started_at: Option<String>,
}

impl StepReport {
    /// This report as a failure with no effects: what is recorded when the
    /// database refuses the step's effects.
    pub(crate) fn failed_unstored(&self) -> StepReport {
        let mut outcome = self.outcome.clone();
        outcome.status = "failed".into();
        outcome.error = Some("the step's outcome could not be stored".into());
        StepReport {
            outcome,
            effects: Vec::new(),
            next: RunNext::Fail,
            ..self.clone()
        }
    }
}

/// A unit of a tenant's daily quota of a provider, asked for before a step
/// of one of the tenant's own workflows calls the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaReservation {
    pub tenant_id: String,
    /// `twilio`, `smtp`, `slack` or `billing`.
    pub provider: String,
    /// The most the tenant may use on one UTC day.
    pub limit: i64,
    /// The run and step the unit is for: asking again for the same step
    /// (a retry, a run taken over) uses the unit it already has.
    pub run_id: String,
    pub step: String,
}

/// The UTC day (`2026-12-01`) of a timestamp: a quota's counting period.
pub fn quota_day(at: jiff::Timestamp) -> String {
    let stamp = eventflow_model::time::format(at);
    stamp.split('T').next().unwrap_or_default().to_string()
}

/// Takes a unit of the tenant's quota for the UTC day of `now`, if the
/// step has none yet and the day's count is below the limit; whether the
/// step may send. One conditional upsert, so concurrent writers (several
/// nodes on PostgreSQL) never take more than the limit between them.
pub(crate) async fn reserve_quota<C: AutoConn>(
    conn: &mut C,
    r: &QuotaReservation,
    now: jiff::Timestamp,
) -> Result<bool> {
    if conn.quota_reserved(&r.run_id, &r.step).await? {
        return Ok(true);
    }
    let day = quota_day(now);
    if !conn.count_quota_use(r, &day).await? {
        return Ok(false);
    }
    conn.insert_quota_use(r, &day).await?;
    Ok(true)
}

/// Filters of `GET /v1/workflow-runs`.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub workflow: Option<String>,
    pub status: Option<String>,
    pub event_id: Option<String>,
    /// Runs with an id below this (newest first paging).
    pub before: Option<String>,
    pub limit: u32,
}

/// The SQL the writer's connection runs for automations.
#[async_trait::async_trait]
pub(crate) trait AutoConn: WriteConn {
    async fn automation_cursor(&mut self, tenant: &str) -> Result<i64>;
    async fn set_automation_cursor(&mut self, tenant: &str, to: i64) -> Result<()>;
    async fn insert_run(&mut self, run: &Run, lease_until: Option<&str>) -> Result<()>;
    /// A run, locked.
    async fn run_for_update(&mut self, id: &str) -> Result<Option<Run>>;
    async fn update_run(&mut self, run: &Run, lease_until: Option<&str>) -> Result<()>;
    /// Due runs, locked (skipping rows other nodes hold).
    async fn due_runs(&mut self, now: &str, limit: i64) -> Result<Vec<Run>>;
    async fn upsert_timer(&mut self, t: &Timer) -> Result<()>;
    async fn delete_timer(&mut self, tenant: &str, key: &str) -> Result<bool>;
    /// Due timers, locked (skipping rows other nodes hold).
    async fn due_timers(&mut self, now: &str, limit: i64) -> Result<Vec<Timer>>;
    /// Inserts a message; `false` when the (run, step) already has one.
    async fn insert_notification(&mut self, n: &Notification) -> Result<bool>;
    /// Records the chain depth of the run that wrote the event `sequence`.
    async fn record_write_depth(&mut self, tenant: &str, sequence: i64, depth: i64) -> Result<()>;
    /// Keeps the latest condition error of a tenant's workflow.
    async fn record_condition_error(&mut self, tenant: &str, e: &ConditionError) -> Result<()>;
    /// Whether a quota unit was reserved for the (run, step).
    async fn quota_reserved(&mut self, run_id: &str, step: &str) -> Result<bool>;
    /// Adds one to the tenant's count of the day if it is below the limit;
    /// `false` when it is not.
    async fn count_quota_use(&mut self, r: &QuotaReservation, day: &str) -> Result<bool>;
    /// Notes the (run, step) the unit was reserved for.
    async fn insert_quota_use(&mut self, r: &QuotaReservation, day: &str) -> Result<()>;
    /// Renews the lease of a run `node` holds whose next step is `index`;
    /// `false` when it no longer does.
    async fn renew_run_lease(
        &mut self,
        id: &str,
        node: &str,
        index: i64,
        until: &str,
    ) -> Result<bool>;
}

fn new_run_row(n: NewRun, node: Option<&str>, now: &str, next_at: &str) -> Run {
    Run {
        id: n.id,
        tenant_id: n.tenant_id,
        workflow: n.workflow,
        event_id: n.event_id,
        origin: n.origin.to_string(),
        timer_key: n.timer_key,
        path: n.path,
        context: n.context,
        status: "pending".into(),
        steps: Vec::new(),
        next_step: 0,
        window_started_at: None,
        next_at: Some(next_at.to_string()),
        lease_owner: node.map(str::to_string),
        started_at: now.to_string(),
        updated_at: now.to_string(),
        finished_at: None,
        chain_depth: n.chain_depth,
    }
}

/// Inserts a batch's runs, the first `lease` leased to `node`, and moves the cursor; `None`
/// when the cursor is no longer at `from` (another node took the batch).
pub(crate) async fn start_runs<C: AutoConn>(
    conn: &mut C,
    start: &StartRuns,
    node: &str,
    now: jiff::Timestamp,
) -> Result<Option<Vec<Run>>> {
    let cursor = conn.automation_cursor(&start.tenant_id).await?;
    if cursor != start.from {
        return Ok(None);
    }
    conn.set_automation_cursor(&start.tenant_id, start.to)
        .await?;
    for e in &start.condition_errors {
        conn.record_condition_error(&start.tenant_id, e).await?;
    }
    let now_s = eventflow_model::time::format(now);
    let until = eventflow_model::time::format(now + RUN_LEASE);
    let mut runs = Vec::with_capacity(start.runs.len());
    for (i, n) in start.runs.iter().enumerate() {
        let run = if i < start.lease {
            let run = new_run_row(n.clone(), Some(node), &now_s, &until);
            conn.insert_run(&run, Some(&until)).await?;
            run
        } else {
            let run = new_run_row(n.clone(), None, &now_s, &now_s);
            conn.insert_run(&run, None).await?;
            run
        };
        runs.push(run);
    }
    Ok(Some(runs))
}

/// Leases up to `limit` due runs to `node`.
pub(crate) async fn claim_runs<C: AutoConn>(
    conn: &mut C,
    node: &str,
    limit: i64,
    now: jiff::Timestamp,
) -> Result<Vec<Run>> {
    let now_s = eventflow_model::time::format(now);
    let until = eventflow_model::time::format(now + RUN_LEASE);
    let mut runs = conn.due_runs(&now_s, limit).await?;
    for run in &mut runs {
        run.lease_owner = Some(node.to_string());
        run.next_at = Some(until.clone());
        conn.update_run(run, Some(&until)).await?;
    }
    Ok(runs)
}

/// Fires up to `limit` due timers: each is deleted and its run inserted,
/// leased to `node`.
pub(crate) async fn fire_timers<C: AutoConn>(
    conn: &mut C,
    node: &str,
    limit: i64,
    now: jiff::Timestamp,
) -> Result<Vec<Run>> {
    let now_s = eventflow_model::time::format(now);
    let until = eventflow_model::time::format(now + RUN_LEASE);
    let timers = conn.due_timers(&now_s, limit).await?;
    let mut runs = Vec::with_capacity(timers.len());
    for t in timers {
        conn.delete_timer(&t.tenant_id, &t.key).await?;
        let run = new_run_row(
            NewRun {
                id: eventflow_model::id::new_id("run"),
                tenant_id: t.tenant_id,
                workflow: t.workflow,
                event_id: t.event_id,
                origin: ORIGIN_TIMER,
                timer_key: Some(t.key),
                path: t.path,
                context: t.context,
                chain_depth: t.chain_depth,
            },
            Some(node),
            &now_s,
            &until,
        );
        conn.insert_run(&run, Some(&until)).await?;
        runs.push(run);
    }
    Ok(runs)
}

/// Before a step with an effect outside the server: renews the run's lease
/// if `node` still holds it at step `index`, so no other node can take the
/// run while the provider is called (steps time out well within a lease).
pub(crate) async fn begin_step<C: AutoConn>(
    conn: &mut C,
    run_id: &str,
    index: i64,
    node: &str,
    now: jiff::Timestamp,
) -> Result<bool> {
    let until = eventflow_model::time::format(now + RUN_LEASE);
    conn.renew_run_lease(run_id, node, index, &until).await
}

/// What [`step_done`] did: the run as it now stands (`None` when this node
/// no longer holds it), and the sequence of an event a write produced.
pub(crate) struct StepRecorded {
    pub run: Option<Run>,
    pub sequence: Option<i64>,
    pub event_types: Vec<String>,
}

/// Records a step's outcome and applies its effects, if `node` still holds
/// the run and the step is the one due.
pub(crate) async fn step_done<C: AutoConn>(
    conn: &mut C,
    report: &StepReport,
    node: &str,
    now: jiff::Timestamp,
) -> Result<StepRecorded> {
    let mut recorded = StepRecorded {
        run: None,
        sequence: None,
        event_types: Vec::new(),
    };
    let Some(mut run) = conn.run_for_update(&report.run_id).await? else {
        return Ok(recorded);
    };
    if run.tenant_id != report.tenant_id
        || run.status != "pending"
        || run.lease_owner.as_deref() != Some(node)
        || run.next_step != report.index
    {
        return Ok(recorded);
    }
    let now_s = eventflow_model::time::format(now);
    let mut outcome = report.outcome.clone();
    let mut next = report.next.clone();
    // What the database cannot store fails the step, once, with the reason,
    // instead of failing the write (and the step again at every lease).
    let unstorable = report.effects.iter().find_map(unstorable);
    if let Some(why) = &unstorable {
        outcome.status = "failed".into();
        outcome.error = Some(format!("{why}; it cannot be stored"));
        next = RunNext::Fail;
    }
    for effect in report.effects.iter().filter(|_| unstorable.is_none()) {
        match effect {
            Effect::Write(req) => match ops::apply(conn, req, now).await {
                Ok(applied) => {
                    // The events this write made carry the run's depth on
                    // to the runs they start.
                    if let Some(last) = applied.last_sequence {
                        let n = applied.event_types.len() as i64;
                        for sequence in (last - n + 1)..=last {
                            conn.record_write_depth(&run.tenant_id, sequence, run.chain_depth)
                                .await?;
                        }
                    }
                    recorded.sequence = applied.last_sequence;
                    recorded.event_types.extend(applied.event_types);
                    let id = applied.outcome.body.get("id").cloned();
                    let version = applied.outcome.body.get("version").cloned();
                    outcome.detail = Some(json!({"id": id, "version": version}));
                }
                // Nothing was written: the step fails with the reason.
                Err(e) if e.is_domain() => {
                    outcome.status = "failed".into();
                    outcome.error = Some(e.to_string());
                    next = RunNext::Fail;
                    break;
                }
                Err(e) => return Err(e),
            },
            Effect::Schedule(t) => {
                let t = Timer {
                    chain_depth: run.chain_depth,
                    ..t.clone()
                };
                conn.upsert_timer(&t).await?;
            }
            Effect::Cancel { key } => {
                let found = conn.delete_timer(&run.tenant_id, key).await?;
                let detail = outcome.detail.get_or_insert_with(|| json!({}));
                if let Some(d) = detail.as_object_mut() {
                    d.insert("key".into(), json!(key));
                    d.insert("cancelled".into(), json!(found));
                }
            }
            Effect::Notify(n) => {
                conn.insert_notification(n).await?;
            }
        }
    }
    let index = usize::try_from(report.index).map_err(|_| StoreError::corrupt("step index"))?;
    if index < run.steps.len() {
        run.steps[index] = outcome;
    } else {
        run.steps.push(outcome);
    }
    run.updated_at = now_s.clone();
    let lease = eventflow_model::time::format(now + RUN_LEASE);
    let mut lease_until = None;
    match next {
        RunNext::Advance => {
            run.next_step += 1;
            run.window_started_at = None;
            if run.next_step >= report.total {
                run.status = "succeeded".into();
                run.finished_at = Some(now_s);
                run.next_at = None;
                run.lease_owner = None;
            } else {
                run.next_at = Some(lease.clone());
                lease_until = Some(lease.as_str());
            }
        }
        RunNext::RetryAt(at) => {
            run.window_started_at = report
                .window_started_at
                .clone()
                .or_else(|| Some(now_s.clone()));
            run.next_at = Some(at);
            run.lease_owner = None;
        }
        RunNext::Fail => {
            run.status = "failed".into();
            run.finished_at = Some(now_s);
            run.next_at = None;
            run.lease_owner = None;
        }
    }
    conn.update_run(&run, lease_until).await?;
    recorded.run = Some(run);
    Ok(recorded)
}

/// The columns every run read selects, in `run_from_row` order.
pub(crate) const RUN_COLUMNS: &str = "id, tenant_id, workflow, event_id, origin, timer_key, path, context, \
     status, steps, next_step, window_started_at, next_at, lease_owner, started_at, updated_at, finished_at, \
     chain_depth";

pub(crate) const TIMER_COLUMNS: &str = "tenant_id, timer_key, fire_at, workflow, path, context, event_id, run_id, created_at, chain_depth";

pub(crate) const NOTIFICATION_COLUMNS: &str = "id, tenant_id, channel, direction, recipient, subject, body, \
     workflow, run_id, step, provider, provider_id, provider_status, created_at";

macro_rules! impl_auto_rows {
    ($row:ty) => {
        pub(crate) fn run_from_row(row: &$row) -> crate::error::Result<crate::automation::Run> {
            use sqlx::Row;
            let bad = |what| crate::error::StoreError::corrupt(what);
            Ok(crate::automation::Run {
                id: row.get(0),
                tenant_id: row.get(1),
                workflow: row.get(2),
                event_id: row.get(3),
                origin: row.get(4),
                timer_key: row.get(5),
                path: row.get(6),
                context: serde_json::from_str(row.get::<&str, _>(7))
                    .map_err(|_| bad("run context"))?,
                status: row.get(8),
                steps: serde_json::from_str(row.get::<&str, _>(9)).map_err(|_| bad("run steps"))?,
                next_step: row.get(10),
                window_started_at: row.get(11),
                next_at: row.get(12),
                lease_owner: row.get(13),
                started_at: row.get(14),
                updated_at: row.get(15),
                finished_at: row.get(16),
                chain_depth: row.get(17),
            })
        }

        pub(crate) fn timer_from_row(row: &$row) -> crate::error::Result<crate::automation::Timer> {
            use sqlx::Row;
            Ok(crate::automation::Timer {
                tenant_id: row.get(0),
                key: row.get(1),
                fire_at: row.get(2),
                workflow: row.get(3),
                path: row.get(4),
                context: serde_json::from_str(row.get::<&str, _>(5))
                    .map_err(|_| crate::error::StoreError::corrupt("timer context"))?,
                event_id: row.get(6),
                run_id: row.get(7),
                created_at: row.get(8),
                chain_depth: row.get(9),
            })
        }

        pub(crate) fn notification_from_row(row: &$row) -> crate::automation::Notification {
            use sqlx::Row;
            crate::automation::Notification {
                id: row.get(0),
                tenant_id: row.get(1),
                channel: row.get(2),
                direction: row.get(3),
                to: row.get(4),
                subject: row.get(5),
                body: row.get(6),
                workflow: row.get(7),
                run_id: row.get(8),
                step: row.get(9),
                provider: row.get(10),
                provider_id: row.get(11),
                provider_status: row.get(12),
                created_at: row.get(13),
            }
        }
    };
}

pub(crate) mod sqlite_rows {
    impl_auto_rows!(sqlx::sqlite::SqliteRow);
}
pub(crate) mod pg_rows {
    impl_auto_rows!(sqlx::postgres::PgRow);
}

macro_rules! impl_auto_conn {
    ($conn:ty, rows: $rows:path, lock_row: $lock_row:expr, lock_due: $lock_due:expr $(,)?) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::Row;
            use $rows as rows;

            use crate::automation::{
                AutoConn, ConditionError, NOTIFICATION_COLUMNS, Notification, QuotaReservation,
                RUN_COLUMNS, Run, TIMER_COLUMNS, Timer,
            };
            use crate::error::Result;
            use crate::sql::json_text;

            #[async_trait]
            impl AutoConn for $conn {
                async fn automation_cursor(&mut self, tenant: &str) -> Result<i64> {
                    let row = sqlx::query("SELECT automation_cursor FROM tenants WHERE id = $1")
                        .bind(tenant)
                        .fetch_optional(&mut self.conn)
                        .await?;
                    Ok(row.map(|r| r.get(0)).unwrap_or(0))
                }

                async fn set_automation_cursor(&mut self, tenant: &str, to: i64) -> Result<()> {
                    sqlx::query("UPDATE tenants SET automation_cursor = $1 WHERE id = $2")
                        .bind(to)
                        .bind(tenant)
                        .execute(&mut self.conn)
                        .await?;
                    Ok(())
                }

                async fn insert_run(&mut self, r: &Run, lease_until: Option<&str>) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO workflow_runs (id, tenant_id, workflow, event_id, origin, timer_key, path, context, \
                         status, steps, next_step, window_started_at, next_at, lease_owner, lease_until, started_at, \
                         updated_at, finished_at, chain_depth) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                         $13, $14, $15, $16, $17, $18, $19)",
                    )
                    .bind(&r.id)
                    .bind(&r.tenant_id)
                    .bind(&r.workflow)
                    .bind(&r.event_id)
                    .bind(&r.origin)
                    .bind(&r.timer_key)
                    .bind(&r.path)
                    .bind(json_text(&r.context)?)
                    .bind(&r.status)
                    .bind(json_text(&r.steps)?)
                    .bind(r.next_step)
                    .bind(&r.window_started_at)
                    .bind(&r.next_at)
                    .bind(&r.lease_owner)
                    .bind(lease_until)
                    .bind(&r.started_at)
                    .bind(&r.updated_at)
                    .bind(&r.finished_at)
                    .bind(r.chain_depth)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn record_write_depth(&mut self, tenant: &str, sequence: i64, depth: i64) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO workflow_write_depths (tenant_id, sequence, chain_depth) VALUES ($1, $2, $3) \
                         ON CONFLICT (tenant_id, sequence) DO NOTHING",
                    )
                    .bind(tenant)
                    .bind(sequence)
                    .bind(depth)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn run_for_update(&mut self, id: &str) -> Result<Option<Run>> {
                    let lock: &str = $lock_row;
                    let sql = format!("SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = $1{lock}");
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(id)
                        .fetch_optional(&mut self.conn)
                        .await?;
                    row.as_ref().map(rows::run_from_row).transpose()
                }

                async fn update_run(&mut self, r: &Run, lease_until: Option<&str>) -> Result<()> {
                    sqlx::query(
                        "UPDATE workflow_runs SET status = $1, steps = $2, next_step = $3, window_started_at = $4, \
                         next_at = $5, lease_owner = $6, lease_until = $7, updated_at = $8, finished_at = $9 WHERE id = $10",
                    )
                    .bind(&r.status)
                    .bind(json_text(&r.steps)?)
                    .bind(r.next_step)
                    .bind(&r.window_started_at)
                    .bind(&r.next_at)
                    .bind(&r.lease_owner)
                    .bind(lease_until)
                    .bind(&r.updated_at)
                    .bind(&r.finished_at)
                    .bind(&r.id)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn due_runs(&mut self, now: &str, limit: i64) -> Result<Vec<Run>> {
                    let lock: &str = $lock_due;
                    let sql = format!(
                        "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE status = 'pending' AND next_at <= $1 \
                         ORDER BY next_at LIMIT $2{lock}"
                    );
                    let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(now)
                        .bind(limit)
                        .fetch_all(&mut self.conn)
                        .await?;
                    found.iter().map(rows::run_from_row).collect()
                }

                async fn upsert_timer(&mut self, t: &Timer) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO timers (tenant_id, timer_key, fire_at, workflow, path, context, event_id, run_id, created_at, \
                         chain_depth) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (tenant_id, timer_key) DO UPDATE SET \
                         fire_at = excluded.fire_at, workflow = excluded.workflow, path = excluded.path, \
                         context = excluded.context, event_id = excluded.event_id, run_id = excluded.run_id, \
                         created_at = excluded.created_at, chain_depth = excluded.chain_depth",
                    )
                    .bind(&t.tenant_id)
                    .bind(&t.key)
                    .bind(&t.fire_at)
                    .bind(&t.workflow)
                    .bind(&t.path)
                    .bind(json_text(&t.context)?)
                    .bind(&t.event_id)
                    .bind(&t.run_id)
                    .bind(&t.created_at)
                    .bind(t.chain_depth)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn delete_timer(&mut self, tenant: &str, key: &str) -> Result<bool> {
                    let done = sqlx::query("DELETE FROM timers WHERE tenant_id = $1 AND timer_key = $2")
                        .bind(tenant)
                        .bind(key)
                        .execute(&mut self.conn)
                        .await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn due_timers(&mut self, now: &str, limit: i64) -> Result<Vec<Timer>> {
                    let lock: &str = $lock_due;
                    let sql = format!(
                        "SELECT {TIMER_COLUMNS} FROM timers WHERE fire_at <= $1 ORDER BY fire_at LIMIT $2{lock}"
                    );
                    let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(now)
                        .bind(limit)
                        .fetch_all(&mut self.conn)
                        .await?;
                    found.iter().map(rows::timer_from_row).collect()
                }

                async fn renew_run_lease(&mut self, id: &str, node: &str, index: i64, until: &str) -> Result<bool> {
                    let done = sqlx::query(
                        "UPDATE workflow_runs SET lease_until = $1, next_at = $1 WHERE id = $2 AND lease_owner = $3 \
                         AND next_step = $4 AND status = 'pending'",
                    )
                    .bind(until)
                    .bind(id)
                    .bind(node)
                    .bind(index)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn record_condition_error(&mut self, tenant: &str, e: &ConditionError) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO workflow_condition_errors (tenant_id, workflow, condition_source, message, event_id, at) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, workflow) DO UPDATE SET \
                         condition_source = excluded.condition_source, message = excluded.message, \
                         event_id = excluded.event_id, at = excluded.at",
                    )
                    .bind(tenant)
                    .bind(&e.workflow)
                    .bind(&e.condition)
                    .bind(&e.error.message)
                    .bind(&e.error.event_id)
                    .bind(&e.error.at)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn quota_reserved(&mut self, run_id: &str, step: &str) -> Result<bool> {
                    let row = sqlx::query("SELECT 1 FROM provider_quota_uses WHERE run_id = $1 AND step = $2")
                        .bind(run_id)
                        .bind(step)
                        .fetch_optional(&mut self.conn)
                        .await?;
                    Ok(row.is_some())
                }

                async fn count_quota_use(&mut self, r: &QuotaReservation, day: &str) -> Result<bool> {
                    let done = sqlx::query(
                        "INSERT INTO provider_quota_counts (tenant_id, provider, day, used) VALUES ($1, $2, $3, 1) \
                         ON CONFLICT (tenant_id, provider, day) DO UPDATE SET used = provider_quota_counts.used + 1 \
                         WHERE provider_quota_counts.used < $4",
                    )
                    .bind(&r.tenant_id)
                    .bind(&r.provider)
                    .bind(day)
                    .bind(r.limit)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn insert_quota_use(&mut self, r: &QuotaReservation, day: &str) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO provider_quota_uses (run_id, step, tenant_id, provider, day) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (run_id, step) DO NOTHING",
                    )
                    .bind(&r.run_id)
                    .bind(&r.step)
                    .bind(&r.tenant_id)
                    .bind(&r.provider)
                    .bind(day)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn insert_notification(&mut self, n: &Notification) -> Result<bool> {
                    let sql = format!(
                        "INSERT INTO notifications ({NOTIFICATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                         $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING"
                    );
                    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(&n.id)
                        .bind(&n.tenant_id)
                        .bind(&n.channel)
                        .bind(&n.direction)
                        .bind(&n.to)
                        .bind(&n.subject)
                        .bind(&n.body)
                        .bind(&n.workflow)
                        .bind(&n.run_id)
                        .bind(&n.step)
                        .bind(&n.provider)
                        .bind(&n.provider_id)
                        .bind(&n.provider_status)
                        .bind(&n.created_at)
                        .execute(&mut self.conn)
                        .await?;
                    Ok(done.rows_affected() > 0)
                }
            }
        };
    };
}

pub(crate) use impl_auto_conn;
