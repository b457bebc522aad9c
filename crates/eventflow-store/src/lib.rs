//! Storage for Event Flow: the [`Store`] trait and its backends.
//!
//! A record change and its event are written in one database transaction
//! (the transactional outbox): no event for a change that rolled back, no
//! committed change without its event. The rules of a change (validation,
//! references, merge patch, the `previous` diff, idempotency) live once, in
//! `records::rules`, over the small `RecordTx` interface; a backend
//! supplies only SQL.
//!
//! [`Store`] is the sum of six role traits, so a part of the server takes
//! only what it uses: [`Records`], [`EventLog`], [`Deliveries`],
//! [`Automations`], [`Tenants`] and [`Networks`]: the dispatcher takes
//! `Arc<dyn Deliveries>`, the automation engine `Arc<dyn AutomationStore>`
//! (records, the event log and automations). The traits take and return the ids the
//! server makes as the model's prefixed id types
//! ([`TenantId`](eventflow_model::id::TenantId),
//! [`EndpointId`](eventflow_model::id::EndpointId), …) and times as
//! [`jiff::Timestamp`]; a backend binds them as text.
//!
//! # Layout
//! The crate is cut by feature; each feature keeps its rows, its rules (what
//! the writer does inside its group transaction) and its SQL together, and
//! no feature imports a module above it.
//! - [`codec`]: JSON in and out of the TEXT columns, and the vocabularies
//!   stored in them as enums (`text_enum!`, [`UnknownValue`]) (the bottom).
//! - [`clock`]: the injectable clock (`SystemClock`, `ManualClock` for tests).
//! - [`error`]: [`StoreError`], what a change can fail with.
//! - [`notify`]: in-process wake-ups when a tenant's events commit.
//! - `records`: records, events and audit entries: requests and rows, the
//!   rules of a change (`records::rules`), the read queries
//!   (`records::query`) and the SQL (`records::sql`); the [`Records`] and
//!   [`EventLog`] roles.
//! - `keys`: tenants and their API keys (hashes only), their changes and
//!   SQL; the [`Tenants`] role.
//! - `networks`: organisations and their member clinics (an organisation
//!   is a tenant row of its own kind), the changes of who belongs and
//!   their SQL; the [`Networks`] role. The network's log is numbered where
//!   a tenant's is, in `records::sql`.
//! - `delivery`: webhook endpoints and deliveries: rows, fan-out
//!   (`delivery::fanout`), the writer's rules (`delivery::rules`) and the
//!   queue's SQL (`delivery::sql`); the [`Deliveries`] role.
//! - `automation`: workflow runs, durable timers, the notifications outbox
//!   and provider quotas: rows, rules and SQL; the [`Automations`] role.
//! - `writer`: the group-commit writer every backend's writes go through,
//!   and its connection interface (`WriteConn`, which every feature's
//!   statements add to).
//! - [`migrations`]: the versioned schema of each backend, embedded.
//! - `backend`: the two backends, [`SqliteStore`] (the embedded default)
//!   and [`PgStore`] (PostgreSQL, for several nodes on one database); each
//!   invokes every feature's SQL macros for its connection and store types.

mod automation;
mod backend;
pub mod clock;
pub mod codec;
mod delivery;
pub mod error;
mod keys;
pub mod migrations;
mod networks;
pub mod notify;
mod records;
mod writer;

pub use automation::{
    Automations, Channel, ConditionError, Direction, Effect, MAX_TIMER_KEY, NewRun, Notification,
    QuotaReservation, RUN_LEASE, Run, RunNext, RunOrigin, RunQuery, RunStatus, StartRuns,
    StepOutcome, StepReport, StepStatus, Timer, quota_day,
};
pub use backend::postgres::{PgConfig, PgStore};
pub use backend::sqlite::{SqliteConfig, SqliteStore};
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::UnknownValue;
pub use delivery::{
    Attempt, AttemptRecord, AttemptVerdict, BREAKER_THRESHOLD, ClaimedDelivery, DISABLE_AFTER,
    Deliveries, Delivery, DeliveryQuery, DeliveryStatus, Disclosed, Disclosure, DisclosureQuery,
    EndpointChange, EndpointConfig, EndpointRow, FhirContent, FhirSubscription, FilterError,
    FreshDelivery, Heartbeat, Ordering, PAUSED, PayloadMode, Purpose, QueueDepth, REPLAY_CHUNK,
    Recorded, Replay, ReplayFrom, Signing, StoredSecret, Verification, VerificationState,
    VerifyOutcome, VerifyRecord, disclosure_of, endpoint_event_data, lease, patient_of,
};
pub use error::{Result, StoreError};
pub use keys::{
    ApiKey, KeyChange, NewTenant, PortalLink, Principal, Secret, TenantSettings, Tenants,
};
pub use networks::{Clinic, NetworkChange, NetworkDone, Networks};
pub use notify::Notifier;
pub use records::{
    Actor, AuditEntry, AuditPage, AuditQuery, DateCondition, DatePrefix, EventLog, EventQuery,
    Idempotency, ListQuery, Op, Page, Records, WriteKind, WriteOutcome, WriteRequest, date_columns,
};
pub use writer::{PURGE_BATCH, Purged, Retention};

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
    pub(crate) fn new(
        cel_cost: u64,
        max_record_bytes: usize,
    ) -> (Shared, delivery::fanout::Fanout) {
        let node = eventflow_model::id::new_id("node");
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let shared = Shared {
            node: node.clone(),
            wake: std::sync::Arc::new(tokio::sync::Notify::new()),
            link: std::sync::Mutex::new(Some(rx)),
        };
        (
            shared,
            delivery::fanout::Fanout::new(node, Some(tx), cel_cost, max_record_bytes),
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
/// per database: the sum of the role traits. Every method is scoped to a
/// tenant where data belongs to one.
pub trait Store: AutomationStore + Deliveries + Tenants + Networks {}

impl<T: AutomationStore + Deliveries + Tenants + Networks> Store for T {}

/// The roles the automation engine uses: it follows the event log, keeps
/// its runs, timers and outbox, and reads records (a claim's encounter).
/// A part of [`Store`], so a store coerces to it.
pub trait AutomationStore: Records + EventLog + Automations {}

impl<T: Records + EventLog + Automations> AutomationStore for T {}
