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
//!
//! - `rows`: runs, timers, notifications, step reports, quota reservations;
//! - `rules`: what the writer does with each (inside its group transaction);
//! - `sql`: the statements, written once for both backends.

mod rows;
pub(crate) mod rules;
pub(crate) mod sql;

pub use rows::*;

use eventflow_model::id::{RunId, TenantId};

use crate::error::Result;

/// Workflow runs, durable timers and the notifications outbox: what the
/// automation engine keeps.
#[async_trait::async_trait]
pub trait Automations: Send + Sync + 'static {
    /// Every tenant's id.
    async fn tenant_ids(&self) -> Result<Vec<TenantId>>;

    /// The last event sequence of the tenant the automation engine matched.
    async fn automation_cursor(&self, tenant: &TenantId) -> Result<i64>;

    /// Inserts the runs a batch of events starts (leased to this node) and
    /// moves the cursor from `from` to `to`; `None` when the cursor had
    /// moved (another node took the batch).
    async fn start_runs(&self, start: StartRuns) -> Result<Option<Vec<Run>>>;

    /// Leases up to `limit` due runs (retries, and runs a dead node held) to this node.
    async fn claim_runs(&self, limit: i64) -> Result<Vec<Run>>;

    /// Fires up to `limit` due timers: each becomes a run leased to this node.
    async fn fire_timers(&self, limit: i64) -> Result<Vec<Run>>;

    /// Records a step's outcome with its effects; the run as it now stands,
    /// or `None` when this node no longer holds it.
    async fn step_done(&self, report: StepReport) -> Result<Option<Run>>;

    /// Adds a message to the outbox (inbound SMS and their answers);
    /// `false` when an inbound message with the same provider id is there
    /// already (a provider's retry).
    async fn add_notification(&self, n: Notification) -> Result<bool>;

    /// Before a step with an effect outside the server: renews the run's
    /// lease; `false` when this node no longer holds the run at that step.
    async fn begin_step(&self, run_id: &RunId, index: i64) -> Result<bool>;

    /// Before a step of a tenant's own workflow calls a provider with a
    /// daily quota: takes a unit of the tenant's quota for today (UTC, on
    /// the store's clock); `false` when the day's quota is used up. Asking
    /// again for the same (run, step) uses the unit it already has.
    async fn reserve_quota(&self, r: QuotaReservation) -> Result<bool>;

    /// When the next run or timer is due, if any.
    async fn next_automation_due(&self) -> Result<Option<jiff::Timestamp>>;

    /// The chain depths of the events in `from..=to` that workflow steps
    /// wrote: `(sequence, depth of the run that wrote it)`.
    async fn write_depths(&self, tenant: &TenantId, from: i64, to: i64) -> Result<Vec<(i64, i64)>>;

    /// The tenant's workflows whose `if` last ran out of its budget, each
    /// with the condition it ran out with.
    async fn condition_errors(&self, tenant: &TenantId) -> Result<Vec<ConditionError>>;

    async fn workflow_run(&self, tenant: &TenantId, id: &RunId) -> Result<Option<Run>>;

    /// The tenant's runs, newest first.
    async fn workflow_runs(&self, tenant: &TenantId, q: &RunQuery) -> Result<Vec<Run>>;

    /// The tenant's pending timers, soonest first (`key`: that one only).
    async fn timers(&self, tenant: &TenantId, key: Option<&str>, limit: u32) -> Result<Vec<Timer>>;

    /// The tenant's outbox, newest first; `before`: ids below it.
    async fn notifications(
        &self,
        tenant: &TenantId,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Notification>>;
}
