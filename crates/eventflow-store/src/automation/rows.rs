//! The automation engine's rows: workflow runs, durable timers, messages in
//! the notifications outbox, and what a step reports.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codec::text_enum;
use crate::records::WriteRequest;

/// How long a node holds a run it is executing before another may take it.
pub const RUN_LEASE: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

text_enum! {
    /// What started a run (the API shows it as the run's `trigger`).
    pub enum RunOrigin("run origin") {
        /// An event its workflow listens to.
        Event = "event",
        /// A timer a step of its workflow set.
        Timer = "timer",
    }
}

/// A run to insert.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub tenant_id: String,
    pub workflow: String,
    pub event_id: Option<String>,
    pub origin: RunOrigin,
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

text_enum! {
    /// How a step went, as the run record shows it.
    pub enum StepStatus("step status") {
        Succeeded = "succeeded",
        Failed = "failed",
        /// It failed for now and is tried again at `detail.nextAttemptAt`.
        Retrying = "retrying",
        /// It had nothing to do (`detail.reason` says why).
        Skipped = "skipped",
    }
}

/// One step's outcome, as the run record shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepOutcome {
    /// The step's place: `1`, `2`, or `2.1` for the first step of step 2's timer.
    pub name: String,
    #[serde(rename = "type")]
    pub step_type: String,
    pub status: StepStatus,
    pub error: Option<String>,
    pub attempts: u32,
    pub at: String,
    /// What the step did: a message's provider id and status, a record's
    /// id, a timer's fire time, a response's status code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

text_enum! {
    /// Where a run stands.
    pub enum RunStatus("run status") {
        /// Steps remain: due at `next_at`, or under way on the node that
        /// holds its lease.
        Pending = "pending",
        /// Every step succeeded or was skipped.
        Succeeded = "succeeded",
        /// A step failed for good.
        Failed = "failed",
    }
}

/// A stored run.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub tenant_id: String,
    pub workflow: String,
    pub event_id: Option<String>,
    pub origin: RunOrigin,
    pub timer_key: Option<String>,
    pub path: String,
    pub context: Value,
    pub status: RunStatus,
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

text_enum! {
    /// How a message of the outbox travels.
    pub enum Channel("notification channel") {
        Sms = "sms",
        Email = "email",
        Slack = "slack",
        /// An `http` step's request.
        Http = "http",
        /// A `claim` step's claim to the billing server.
        Claim = "claim",
    }
}

text_enum! {
    /// Whether a message of the outbox was sent or received.
    pub enum Direction("notification direction") {
        Outbound = "outbound",
        /// A message received (an inbound SMS).
        Inbound = "inbound",
    }
}

/// A message in the outbox (sent through a provider or not).
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub id: String,
    pub tenant_id: String,
    pub channel: Channel,
    pub direction: Direction,
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
        outcome.status = StepStatus::Failed;
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

/// Filters of `GET /v1/workflow-runs`.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub workflow: Option<String>,
    pub status: Option<RunStatus>,
    pub event_id: Option<String>,
    /// Runs with an id below this (newest first paging).
    pub before: Option<String>,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each value's text round-trips through `FromStr` and serde, and a
    /// text outside the vocabulary is refused without being quoted.
    fn round_trips<T>(all: &[T], names: &[&str])
    where
        T: Copy + PartialEq + std::fmt::Debug + std::fmt::Display,
        T: std::str::FromStr<Err = crate::codec::UnknownValue>,
        T: Serialize + serde::de::DeserializeOwned,
    {
        assert_eq!(all.len(), names.len());
        for (value, name) in all.iter().zip(names) {
            assert_eq!(value.to_string(), *name);
            assert_eq!(name.parse::<T>().ok(), Some(*value));
            assert_eq!(serde_json::to_value(value).ok(), Some(Value::from(*name)));
            assert_eq!(
                serde_json::from_value::<T>(Value::from(*name)).ok(),
                Some(*value)
            );
        }
        let unknown = "Pending\u{1f600}";
        let e = unknown.parse::<T>().expect_err("not in the vocabulary");
        assert!(!e.to_string().contains(unknown), "{e}");
        assert!(serde_json::from_value::<T>(Value::from(unknown)).is_err());
        // Read back from a row, it is a corrupt row.
        let e = crate::error::StoreError::from(e);
        assert!(matches!(e, crate::error::StoreError::Corrupt(_)), "{e}");
    }

    #[test]
    fn each_vocabulary_keeps_its_spelling() {
        round_trips(RunStatus::ALL, &["pending", "succeeded", "failed"]);
        round_trips(
            StepStatus::ALL,
            &["succeeded", "failed", "retrying", "skipped"],
        );
        round_trips(RunOrigin::ALL, &["event", "timer"]);
        round_trips(Channel::ALL, &["sms", "email", "slack", "http", "claim"]);
        round_trips(Direction::ALL, &["outbound", "inbound"]);
        assert_eq!(Channel::NAMES, &["sms", "email", "slack", "http", "claim"]);
    }

    #[test]
    fn a_step_outcome_keeps_its_json() {
        let outcome = StepOutcome {
            name: "1".into(),
            step_type: "sms".into(),
            status: StepStatus::Retrying,
            error: Some("busy".into()),
            attempts: 2,
            at: "2026-01-01T00:00:00.000Z".into(),
            detail: None,
        };
        let json = serde_json::to_value(&outcome).ok();
        assert_eq!(
            json,
            Some(
                serde_json::json!({"name": "1", "type": "sms", "status": "retrying",
                "error": "busy", "attempts": 2, "at": "2026-01-01T00:00:00.000Z"})
            )
        );
    }
}
