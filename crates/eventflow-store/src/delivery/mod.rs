//! Webhook endpoints and deliveries (docs/design.md §3.3, §3.4). The rules of
//! what to send and when live in `eventflow-delivery`; here is what the
//! store keeps and what the writer does with it.
//!
//! - `rows`: endpoints, deliveries, attempts, replays, as stored;
//! - `fanout`: which endpoints an event goes to, decided inside the writing
//!   transaction (compiled type globs and CEL filters, per tenant);
//! - `rules`: the writer's side of the queue: fan-out of each new event,
//!   endpoint changes, claims, attempt results, retries and replays;
//! - `sql`: the queue's statements and reads, once for both backends.

pub(crate) mod fanout;
mod rows;
pub(crate) mod rules;
pub(crate) mod sql;

use eventflow_model::Event;

use eventflow_model::id::{DeliveryId, EndpointId, EventId, ReplayId, TenantId};

use crate::error::Result;

pub use rows::*;
pub use rules::{
    BREAKER_THRESHOLD, DISABLE_AFTER, Disclosed, EndpointChange, REPLAY_CHUNK, VerifyOutcome,
    VerifyRecord, disclosure_of, endpoint_event_data, lease,
};
pub use sql::{PAUSED, patient_of};

/// Webhook endpoints and their deliveries: the queue the dispatcher works.
#[async_trait::async_trait]
pub trait Deliveries: Send + Sync + 'static {
    /// Creates, updates or deletes an endpoint (under the tenant's lock, so
    /// every later event sees the change). `None`: no such endpoint.
    async fn change_endpoint(&self, change: EndpointChange) -> Result<Option<EndpointRow>>;

    /// A live (not deleted) endpoint of the tenant.
    async fn endpoint(&self, tenant: &TenantId, id: &EndpointId) -> Result<Option<EndpointRow>>;

    /// The tenant's live endpoints, oldest first.
    async fn endpoints(&self, tenant: &TenantId) -> Result<Vec<EndpointRow>>;

    /// Leases up to `limit` due deliveries to this node.
    async fn claim_deliveries(&self, limit: i64) -> Result<Vec<ClaimedDelivery>>;

    /// Records an attempt this node made.
    async fn record_attempt(&self, rec: AttemptRecord) -> Result<Recorded>;

    /// Records successful attempts this node made on endpoints whose
    /// failure streak it knew to be below the breaker's threshold, together.
    async fn record_successes(&self, recs: Vec<AttemptRecord>) -> Result<()>;

    /// Gives leased deliveries back, due again at `next_at`, without an attempt.
    async fn release_deliveries(
        &self,
        ids: Vec<DeliveryId>,
        next_at: jiff::Timestamp,
    ) -> Result<()>;

    /// Gives leased deliveries back without an attempt, paused while their
    /// endpoint holds them (waits for its verification, or is disabled).
    async fn hold_deliveries(&self, ids: Vec<DeliveryId>) -> Result<()>;

    /// Makes a delivery due now, whatever its status.
    async fn retry_delivery(&self, tenant: &TenantId, id: &DeliveryId) -> Result<Option<Delivery>>;

    /// Starts a replay of the events since `from` that the endpoint
    /// matches, and does its first chunk; `None` when there is no such
    /// endpoint. A replay still `running` goes on with [`Deliveries::replay_chunk`].
    async fn replay(
        &self,
        tenant: &TenantId,
        endpoint_id: &EndpointId,
        from: ReplayFrom,
    ) -> Result<Option<Replay>>;

    /// Does the next chunk of a running replay (one short write).
    async fn replay_chunk(&self, tenant: &TenantId, id: &ReplayId) -> Result<Option<Replay>>;

    /// One replay of an endpoint.
    async fn get_replay(
        &self,
        tenant: &TenantId,
        endpoint_id: &EndpointId,
        id: &ReplayId,
    ) -> Result<Option<Replay>>;

    /// Running replays, oldest first: (tenant, replay id).
    async fn running_replays(&self, limit: i64) -> Result<Vec<(TenantId, ReplayId)>>;

    async fn delivery(&self, tenant: &TenantId, id: &DeliveryId) -> Result<Option<Delivery>>;

    /// The deliveries of one event (to each endpoint it matched), oldest first.
    async fn event_deliveries(
        &self,
        tenant: &TenantId,
        event_id: &EventId,
    ) -> Result<Vec<Delivery>>;

    /// One page of an endpoint's deliveries, newest first.
    async fn deliveries(
        &self,
        tenant: &TenantId,
        endpoint_id: &EndpointId,
        q: &DeliveryQuery,
    ) -> Result<(Vec<Delivery>, Option<String>)>;

    /// The events an endpoint matched, by its `endpointSequence`, after `after`.
    async fn endpoint_events(
        &self,
        tenant: &TenantId,
        endpoint_id: &EndpointId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Event)>>;

    /// One page of the disclosure records of the tenant (the clinic whose
    /// patients they are, or the organisation whose endpoint received
    /// them), oldest first, with the cursor of the next page.
    async fn disclosures(
        &self,
        tenant: &TenantId,
        q: &DisclosureQuery,
    ) -> Result<(Vec<Disclosure>, Option<String>)>;

    /// Leases up to `limit` pending endpoints whose challenge is due to
    /// this node.
    async fn claim_verifications(&self, limit: i64) -> Result<Vec<EndpointRow>>;

    /// Records a challenge's outcome.
    async fn record_verification(&self, rec: VerifyRecord) -> Result<()>;

    /// When the next challenge is due, if any.
    async fn next_verification(&self) -> Result<Option<jiff::Timestamp>>;

    /// The FHIR subscriptions (at most `limit`) owed a heartbeat now: a
    /// heartbeat period has passed since their last notification. Each is
    /// due again a period from now, so one node sends each heartbeat.
    async fn claim_heartbeats(&self, limit: i64) -> Result<Vec<Heartbeat>>;

    /// When the next heartbeat may be due, if any.
    async fn next_heartbeat(&self) -> Result<Option<jiff::Timestamp>>;

    /// When the next pending delivery is due, if any.
    async fn next_due(&self) -> Result<Option<jiff::Timestamp>>;

    /// Deliveries by state, for metrics.
    async fn queue_depth(&self, now: jiff::Timestamp) -> Result<QueueDepth>;

    /// This node's name (the owner of its leases).
    fn node(&self) -> &str;

    /// The dispatcher's link; `Some` once per store.
    fn dispatch_link(&self) -> Option<crate::DispatchLink>;

    /// Called once by the dispatcher at start: on SQLite (one process per
    /// file) leases left by an earlier run are released, so deliveries and
    /// workflow runs cut off by a crash go at once (runs this process already
    /// took stay with it); on PostgreSQL leases run out by themselves.
    async fn take_over_leases(&self, now: jiff::Timestamp) -> Result<()>;
}
