//! Storage for Event Flow: the [`Store`] trait and its backends.
//!
//! A record change and its event are written in one database transaction
//! (the transactional outbox): no event for a change that rolled back, no
//! committed change without its event. The rules of a change (validation,
//! references, merge patch, the `previous` diff, idempotency) live once, in
//! [`ops`], over the small [`ops::RecordTx`] interface; a backend supplies
//! only SQL.
//!
//! # Layout
//! - [`clock`]: the injectable clock (`SystemClock`, `ManualClock` for tests).
//! - [`error`]: [`StoreError`], what a change can fail with.
//! - [`notify`]: in-process wake-ups when a tenant's events commit.
//! - [`ops`]: the backend-independent logic of creates, patches, deletes and batches.
//! - [`types`]: requests and rows the trait speaks in.
//! - `writer`: the group-commit writer every backend's writes go through.
//! - `sql`: the SQL both backends share, written once (what differs is passed in as SQL).
//! - `query`: the read queries, built once with sqlx's `QueryBuilder`.
//! - [`fanout`]: which endpoints an event goes to, decided inside the writing transaction.
//! - [`delivery`]: webhook endpoints and deliveries as rows.
//! - [`outbox`]: the writer's side of the delivery queue: fan-out, claims,
//!   attempt results, retries, replays.
//! - [`queue`]: the delivery queue's SQL, once for both backends.
//! - [`automation`]: workflow runs, durable timers, the notifications outbox
//!   and provider quotas: rows, the writer's side, and their SQL.
//! - [`keys`]: API keys as stored (hashes only), and their changes.
//! - [`migrations`]: the versioned schema of each backend, embedded.
//! - [`sqlite`]: the embedded default backend.
//! - [`postgres`]: PostgreSQL, for several nodes on one database.

pub mod automation;
pub mod clock;
pub mod delivery;
pub mod error;
pub mod fanout;
pub mod keys;
pub mod migrations;
pub mod notify;
pub mod ops;
pub mod outbox;
pub mod postgres;
mod query;
pub mod queue;
mod sql;
pub mod sqlite;
pub mod types;
mod writer;

use async_trait::async_trait;
use eventflow_model::{Event, Object, ResourceType};

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Result, StoreError};
pub use notify::Notifier;
pub use types::*;

pub use delivery::*;
pub use keys::{ApiKey, KeyChange, Principal, Secret};
pub use outbox::EndpointChange;

/// What this node's dispatcher receives from the store: deliveries leased
/// to it at commit, and a nudge when due deliveries wait in the table.
#[derive(Debug)]
pub struct DispatchLink {
    pub fresh: tokio::sync::mpsc::Receiver<Vec<FreshDelivery>>,
    pub wake: std::sync::Arc<tokio::sync::Notify>,
}

/// The parts of a store the writer and the dispatcher share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub node: String,
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    pub link: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Vec<FreshDelivery>>>>,
}

impl Shared {
    /// A node name, the wake-up, and the fan-out state for the writer.
    pub(crate) fn new(cel_cost: u64, max_record_bytes: usize) -> (Shared, fanout::Fanout) {
        let node = eventflow_model::id::new_id("node");
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let shared = Shared {
            node: node.clone(),
            wake: std::sync::Arc::new(tokio::sync::Notify::new()),
            link: std::sync::Mutex::new(Some(rx)),
        };
        (
            shared,
            fanout::Fanout::new(node, Some(tx), cel_cost, max_record_bytes),
        )
    }

    pub(crate) fn take_link(&self) -> Option<DispatchLink> {
        let rx = self.link.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        Some(DispatchLink {
            fresh: rx,
            wake: self.wake.clone(),
        })
    }
}

/// The largest page of events read by default, in bytes of their bodies.
pub const DEFAULT_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// The largest record stored by default, in bytes of JSON.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 256 * 1024;

/// Everything the server keeps, behind one interface with one implementation
/// per database. Every method is scoped to a tenant where data belongs to one.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies a create, patch, delete or batch, with its events and audit
    /// entries, in one transaction. Honours the idempotency key.
    async fn write(&self, req: WriteRequest) -> Result<WriteOutcome>;

    /// A live record of the tenant, with its server fields.
    async fn get_record(&self, tenant: &str, rt: ResourceType, id: &str) -> Result<Option<Object>>;

    /// One page of a tenant's records of a type.
    async fn list_records(&self, tenant: &str, rt: ResourceType, q: &ListQuery) -> Result<Page>;

    /// Live records of type `rt` whose reference field `field` names `id`
    /// (for `?include=`), oldest first, at most `limit`.
    async fn records_referencing(
        &self,
        tenant: &str,
        rt: ResourceType,
        field: &str,
        id: &str,
        limit: u32,
    ) -> Result<Vec<Object>>;

    /// The tenant's events after a sequence, filtered, in sequence order.
    async fn events(&self, tenant: &str, q: &EventQuery) -> Result<Vec<Event>>;

    /// Like [`Store::events`], with who wrote each event (the API key id, or
    /// `workflow:NAME` for a workflow's step; `None` for operational events).
    async fn events_with_writer(
        &self,
        tenant: &str,
        q: &EventQuery,
    ) -> Result<Vec<(Event, Option<String>)>>;

    /// One event by id.
    async fn event_by_id(&self, tenant: &str, id: &str) -> Result<Option<Event>>;

    /// The largest committed sequence of the tenant (0 when none).
    async fn latest_sequence(&self, tenant: &str) -> Result<i64>;

    /// Writes audit entries for records that were read.
    async fn record_reads(&self, entries: Vec<AuditEntry>) -> Result<()>;

    /// One page of the tenant's audit log, newest first.
    async fn audit_log(&self, tenant: &str, q: &AuditQuery) -> Result<AuditPage>;

    /// The tenant, key and scopes of a live API key, by the SHA-256 hash of
    /// its secret (or of the secret a rotation replaced, still in its grace
    /// period: `valid_until` says until when).
    async fn authenticate(&self, key_hash: &str) -> Result<Option<Principal>>;

    /// Creates, rotates, revokes or touches a key, with its audit entry;
    /// the key as it now stands (`None`: no such live key).
    async fn change_key(&self, change: KeyChange) -> Result<Option<ApiKey>>;

    /// The tenant's live keys, oldest first.
    async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>>;

    /// One live key of the tenant.
    async fn api_key(&self, tenant: &str, id: &str) -> Result<Option<ApiKey>>;

    /// Creates a tenant with one API key (given as its hash). With
    /// `only_if_no_tenants`, does nothing (and returns `None`) unless the
    /// database has no tenant yet: the bootstrap on first start.
    async fn create_tenant(
        &self,
        name: &str,
        key_hash: &str,
        only_if_no_tenants: bool,
    ) -> Result<Option<NewTenant>>;

    /// Deletes events created before `before`, idempotency keys older
    /// than 24 hours, and provider quota counts more than four days old.
    /// Returns how many events went.
    async fn purge(&self, events_before: jiff::Timestamp) -> Result<u64>;

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<()>;

    /// Wake-ups for committed events.
    fn notifier(&self) -> &Notifier;

    // ---- Webhook endpoints and deliveries -------------------------------

    /// Creates, updates or deletes an endpoint (under the tenant's lock, so
    /// every later event sees the change). `None`: no such endpoint.
    async fn change_endpoint(&self, change: EndpointChange) -> Result<Option<EndpointRow>>;

    /// A live (not deleted) endpoint of the tenant.
    async fn endpoint(&self, tenant: &str, id: &str) -> Result<Option<EndpointRow>>;

    /// The tenant's live endpoints, oldest first.
    async fn endpoints(&self, tenant: &str) -> Result<Vec<EndpointRow>>;

    /// Leases up to `limit` due deliveries to this node.
    async fn claim_deliveries(&self, limit: i64) -> Result<Vec<ClaimedDelivery>>;

    /// Records an attempt this node made.
    async fn record_attempt(&self, rec: AttemptRecord) -> Result<Recorded>;

    /// Records successful attempts this node made on endpoints whose
    /// failure streak it knew to be below the breaker's threshold, together.
    async fn record_successes(&self, recs: Vec<AttemptRecord>) -> Result<()>;

    /// Gives leased deliveries back, due again at `next_at`, without an attempt.
    async fn release_deliveries(&self, ids: Vec<String>, next_at: jiff::Timestamp) -> Result<()>;

    /// Makes a delivery due now, whatever its status.
    async fn retry_delivery(&self, tenant: &str, id: &str) -> Result<Option<Delivery>>;

    /// Starts a replay of the events since `from` that the endpoint
    /// matches, and does its first chunk; `None` when there is no such
    /// endpoint. A replay still `running` goes on with [`Store::replay_chunk`].
    async fn replay(
        &self,
        tenant: &str,
        endpoint_id: &str,
        from: ReplayFrom,
    ) -> Result<Option<Replay>>;

    /// Does the next chunk of a running replay (one short write).
    async fn replay_chunk(&self, tenant: &str, id: &str) -> Result<Option<Replay>>;

    /// One replay of an endpoint.
    async fn get_replay(&self, tenant: &str, endpoint_id: &str, id: &str)
    -> Result<Option<Replay>>;

    /// Running replays, oldest first: (tenant, replay id).
    async fn running_replays(&self, limit: i64) -> Result<Vec<(String, String)>>;

    async fn delivery(&self, tenant: &str, id: &str) -> Result<Option<Delivery>>;

    /// The deliveries of one event (to each endpoint it matched), oldest first.
    async fn event_deliveries(&self, tenant: &str, event_id: &str) -> Result<Vec<Delivery>>;

    /// One page of an endpoint's deliveries, newest first.
    async fn deliveries(
        &self,
        tenant: &str,
        endpoint_id: &str,
        q: &DeliveryQuery,
    ) -> Result<(Vec<Delivery>, Option<String>)>;

    /// The events an endpoint matched, by its `endpointSequence`, after `after`.
    async fn endpoint_events(
        &self,
        tenant: &str,
        endpoint_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Event)>>;

    /// Successful deliveries that carried the patient's data, oldest first.
    async fn disclosures(
        &self,
        tenant: &str,
        patient_id: &str,
        since: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Disclosure>>;

    /// When the next pending delivery is due (formatted), if any.
    async fn next_due(&self) -> Result<Option<String>>;

    /// Deliveries by state, for metrics.
    async fn queue_depth(&self, now: jiff::Timestamp) -> Result<QueueDepth>;

    /// This node's name (the owner of its leases).
    fn node(&self) -> &str;

    /// The dispatcher's link; `Some` once per store.
    fn dispatch_link(&self) -> Option<DispatchLink>;

    /// Called once by the dispatcher at start: on SQLite (one process per
    /// file) leases left by an earlier run are released, so deliveries and
    /// workflow runs cut off by a crash go at once (runs this process already
    /// took stay with it); on PostgreSQL leases run out by themselves.
    async fn take_over_leases(&self, now: jiff::Timestamp) -> Result<()>;

    // ---- Automations ----------------------------------------------------

    /// Every tenant's id.
    async fn tenant_ids(&self) -> Result<Vec<String>>;

    /// The last event sequence of the tenant the automation engine matched.
    async fn automation_cursor(&self, tenant: &str) -> Result<i64>;

    /// Inserts the runs a batch of events starts (leased to this node) and
    /// moves the cursor from `from` to `to`; `None` when the cursor had
    /// moved (another node took the batch).
    async fn start_runs(
        &self,
        start: automation::StartRuns,
    ) -> Result<Option<Vec<automation::Run>>>;

    /// Leases up to `limit` due runs (retries, and runs a dead node held) to this node.
    async fn claim_runs(&self, limit: i64) -> Result<Vec<automation::Run>>;

    /// Fires up to `limit` due timers: each becomes a run leased to this node.
    async fn fire_timers(&self, limit: i64) -> Result<Vec<automation::Run>>;

    /// Records a step's outcome with its effects; the run as it now stands,
    /// or `None` when this node no longer holds it.
    async fn step_done(&self, report: automation::StepReport) -> Result<Option<automation::Run>>;

    /// Adds a message to the outbox (inbound SMS and their answers);
    /// `false` when an inbound message with the same provider id is there
    /// already (a provider's retry).
    async fn add_notification(&self, n: automation::Notification) -> Result<bool>;

    /// Before a step with an effect outside the server: renews the run's
    /// lease; `false` when this node no longer holds the run at that step.
    async fn begin_step(&self, run_id: &str, index: i64) -> Result<bool>;

    /// Before a step of a tenant's own workflow calls a provider with a
    /// daily quota: takes a unit of the tenant's quota for today (UTC, on
    /// the store's clock); `false` when the day's quota is used up. Asking
    /// again for the same (run, step) uses the unit it already has.
    async fn reserve_quota(&self, r: automation::QuotaReservation) -> Result<bool>;

    /// When the next run or timer is due, if any.
    async fn next_automation_due(&self) -> Result<Option<String>>;

    /// The chain depths of the events in `from..=to` that workflow steps
    /// wrote: `(sequence, depth of the run that wrote it)`.
    async fn write_depths(&self, tenant: &str, from: i64, to: i64) -> Result<Vec<(i64, i64)>>;

    /// The tenant's workflows whose `if` last ran out of its budget, each
    /// with the condition it ran out with.
    async fn condition_errors(&self, tenant: &str) -> Result<Vec<automation::ConditionError>>;

    async fn workflow_run(&self, tenant: &str, id: &str) -> Result<Option<automation::Run>>;

    /// The tenant's runs, newest first.
    async fn workflow_runs(
        &self,
        tenant: &str,
        q: &automation::RunQuery,
    ) -> Result<Vec<automation::Run>>;

    /// The tenant's pending timers, soonest first (`key`: that one only).
    async fn timers(
        &self,
        tenant: &str,
        key: Option<&str>,
        limit: u32,
    ) -> Result<Vec<automation::Timer>>;

    /// The tenant's outbox, newest first; `before`: ids below it.
    async fn notifications(
        &self,
        tenant: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<automation::Notification>>;
}
