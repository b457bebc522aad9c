//! The delivery queue's SQL, written once for both backends (like the records' SQL):
//! endpoint changes, fan-out inserts, claims with leases, attempt results,
//! retries and replays — everything the writer runs — and the reads the API
//! lists endpoints and deliveries with.
//!
//! A pending delivery is due when `next_at <= now`. Taking one (a claim, or
//! the hand-over of a fresh one to this node's dispatcher) leases it to the
//! node and moves `next_at` to the lease's end: should the node die, the
//! delivery is simply due again then, for any node. Deliveries of a disabled
//! endpoint wait with `next_at` = [`PAUSED`] and resume when it is enabled.

use sqlx::FromRow;

use crate::delivery::{Delivery, DeliveryStatus, EndpointRow, FilterError, Replay};
use crate::error::{Result, StoreError};

/// `next_at` of the deliveries of a disabled endpoint: never due.
pub const PAUSED: &str = "9999-12-31T23:59:59.999Z";

/// The columns every delivery read selects ([`delivery_from_row`] reads them by name).
pub(crate) const DELIVERY_COLUMNS: &str = "d.id, d.tenant_id, d.endpoint_id, d.endpoint_sequence, \
     d.event_sequence, d.event_id, d.event_type, d.resource_id, d.status, d.created_at, d.updated_at, \
     d.next_at, d.attempts, d.window_started_at";

/// What of an endpoint's may be due.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DueAt {
    /// Its verification challenge (`verify_at`).
    Verification,
    /// Its FHIR heartbeat (`heartbeat_at`).
    Heartbeat,
}

impl DueAt {
    pub(crate) fn column(self) -> &'static str {
        match self {
            DueAt::Verification => "verify_at",
            DueAt::Heartbeat => "heartbeat_at",
        }
    }
}

/// The columns every endpoint read selects ([`endpoint_from_row`] reads them by name).
pub(crate) const ENDPOINT_COLUMNS: &str = "id, tenant_id, revision, created_at, updated_at, disabled, \
     disabled_reason, config, secrets, last_sequence, failure_streak, failing_since, filter_error, \
     verification, verify_at";

/// The columns every replay read selects ([`replay_from_row`] reads them by name).
pub(crate) const REPLAY_COLUMNS: &str =
    "id, tenant_id, endpoint_id, status, queued, cursor, up_to, since, created_at, updated_at";

/// The patient whose data an event carries: its `patientId`, or, for an
/// event written before envelopes named it, the same rule applied to its
/// record ([`eventflow_model::topics::patient_of`]).
pub fn patient_of(event: &eventflow_model::Event) -> Option<String> {
    if event.patient_id.is_some() {
        return event.patient_id.clone();
    }
    let rt = event.resource.resource_type.parse().ok()?;
    eventflow_model::topics::patient_of(rt, &event.data)
}

/// A delivery as its columns hold it ([`DELIVERY_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryColumns {
    id: String,
    tenant_id: String,
    endpoint_id: String,
    endpoint_sequence: i64,
    event_sequence: i64,
    event_id: String,
    event_type: String,
    resource_id: String,
    status: String,
    created_at: String,
    updated_at: String,
    next_at: Option<String>,
    attempts: String,
    window_started_at: Option<String>,
}

/// A delivery read back, by column name (on either backend).
pub(crate) fn delivery_from_row<'r, R: sqlx::Row>(row: &'r R) -> Result<Delivery>
where
    DeliveryColumns: sqlx::FromRow<'r, R>,
{
    let c = DeliveryColumns::from_row(row)?;
    let status = c.status.parse::<DeliveryStatus>()?;
    Ok(Delivery {
        id: c.id,
        tenant_id: c.tenant_id,
        endpoint_id: c.endpoint_id,
        endpoint_sequence: c.endpoint_sequence,
        event_sequence: c.event_sequence,
        event_id: c.event_id,
        event_type: c.event_type,
        resource_id: c.resource_id,
        status,
        created_at: c.created_at,
        updated_at: c.updated_at,
        next_attempt_at: c
            .next_at
            .filter(|n| status == DeliveryStatus::Pending && n.as_str() != PAUSED),
        attempts: serde_json::from_str(&c.attempts)
            .map_err(|_| StoreError::corrupt("delivery attempts"))?,
        window_started_at: c.window_started_at,
    })
}

/// A replay read back, by column name ([`REPLAY_COLUMNS`]).
pub(crate) fn replay_from_row<'r, R: sqlx::Row>(row: &'r R) -> Result<Replay>
where
    Replay: sqlx::FromRow<'r, R>,
{
    Ok(Replay::from_row(row)?)
}

/// An endpoint as its columns hold it ([`ENDPOINT_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(crate) struct EndpointColumns {
    id: String,
    tenant_id: String,
    revision: i64,
    created_at: String,
    updated_at: String,
    disabled: i64,
    disabled_reason: Option<String>,
    config: String,
    secrets: String,
    last_sequence: i64,
    failure_streak: i64,
    failing_since: Option<String>,
    filter_error: Option<String>,
    verification: Option<String>,
    verify_at: Option<String>,
}

/// An endpoint read back, by column name (on either backend).
pub(crate) fn endpoint_from_row<'r, R: sqlx::Row>(row: &'r R) -> Result<EndpointRow>
where
    EndpointColumns: sqlx::FromRow<'r, R>,
{
    let c = EndpointColumns::from_row(row)?;
    Ok(EndpointRow {
        id: c.id,
        tenant_id: c.tenant_id,
        revision: c.revision,
        created_at: c.created_at,
        updated_at: c.updated_at,
        disabled: c.disabled != 0,
        disabled_reason: c.disabled_reason,
        config: serde_json::from_str(&c.config)
            .map_err(|_| StoreError::corrupt("endpoint config"))?,
        secrets: serde_json::from_str(&c.secrets)
            .map_err(|_| StoreError::corrupt("endpoint secrets"))?,
        last_sequence: c.last_sequence,
        failure_streak: c.failure_streak,
        failing_since: c.failing_since,
        filter_error: c.filter_error.and_then(|t| serde_json::from_str(&t).ok()),
        verification: match c.verification {
            None => crate::delivery::Verification::default(),
            Some(t) => serde_json::from_str(&t)
                .map_err(|_| StoreError::corrupt("endpoint verification"))?,
        },
        verify_at: c.verify_at,
    })
}

/// A delivery to insert at fan-out or replay.
#[derive(Debug, Clone)]
pub(crate) struct NewDelivery<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub endpoint_id: &'a str,
    pub event: &'a eventflow_model::Event,
    /// The event's number in the log of the endpoint's owner: its
    /// `sequence`, or for an organisation's endpoint its `networkSequence`.
    pub event_sequence: i64,
    pub patient_id: Option<&'a str>,
    pub ordered: bool,
    pub now: &'a str,
    pub next_at: &'a str,
    pub lease_owner: Option<&'a str>,
}

/// What the writer's connection does for the delivery queue, inside the
/// group's transaction. The rules using these live in [`crate::dispatch`]
/// (the writer's side of delivery); here is only SQL.
#[async_trait::async_trait]
pub(crate) trait QueueConn: crate::records::rules::RecordTx {
    fn fanout(&mut self) -> &mut crate::delivery::fanout::Fanout;
    /// Live (not deleted) endpoints of a tenant, enabled or not.
    async fn load_endpoints(&mut self, tenant: &str) -> crate::Result<Vec<EndpointRow>>;
    async fn endpoint(&mut self, tenant: &str, id: &str) -> crate::Result<Option<EndpointRow>>;
    async fn insert_endpoint(&mut self, row: &EndpointRow) -> crate::Result<()>;
    /// Writes the client's settings, secrets and disabled state; `false`
    /// when the revision is not `expected` (a concurrent change).
    async fn update_endpoint(&mut self, row: &EndpointRow, expected: i64) -> crate::Result<bool>;
    async fn reset_failures(&mut self, id: &str) -> crate::Result<()>;
    /// The deliveries of the endpoint for events with a sequence in
    /// `(after, up_to]`: one range read of `deliveries_by_event`.
    async fn deliveries_between(
        &mut self,
        endpoint_id: &str,
        after: i64,
        up_to: i64,
    ) -> crate::Result<Vec<crate::delivery::Delivery>>;
    /// The tenant's largest event sequence (0 when none).
    async fn latest_sequence(&mut self, tenant: &str) -> crate::Result<i64>;
    async fn insert_replay(&mut self, r: &crate::delivery::Replay) -> crate::Result<()>;
    async fn update_replay(&mut self, r: &crate::delivery::Replay) -> crate::Result<()>;
    async fn replay_row(&mut self, id: &str) -> crate::Result<Option<crate::delivery::Replay>>;
    /// Records why the endpoint's filter stopped without an answer.
    async fn record_filter_error(&mut self, id: &str, error: &FilterError) -> crate::Result<()>;
    /// The tenant's `max_payload` setting (`full` or `thin`).
    async fn max_payload(&mut self, tenant: &str) -> crate::Result<String>;
    async fn set_max_payload(&mut self, tenant: &str, mode: &str) -> crate::Result<()>;
    /// An organisation's member clinics that forbid full payloads (ten at most).
    async fn thin_members(&mut self, org: &str) -> crate::Result<Vec<String>>;
    /// A tenant's kind and organisation.
    async fn tenant_membership(
        &mut self,
        tenant: &str,
    ) -> crate::Result<Option<(String, Option<String>)>>;
    /// Locks a tenant's row until commit.
    async fn lock_tenant_row(&mut self, tenant: &str) -> crate::Result<()>;
    /// Writes disclosure records, each stamped `at`.
    async fn insert_disclosures(
        &mut self,
        rows: &[&crate::delivery::Disclosure],
        at: &str,
    ) -> crate::Result<()>;
    async fn bump_endpoints_version(&mut self, tenant: &str) -> crate::Result<()>;
    async fn endpoints_version(&mut self, tenant: &str) -> crate::Result<i64>;
    async fn soft_delete_endpoint(
        &mut self,
        tenant: &str,
        id: &str,
        now: &str,
    ) -> crate::Result<bool>;
    /// Moves the due time of every pending delivery of an endpoint.
    async fn reschedule_pending(
        &mut self,
        endpoint_id: &str,
        next_at: &str,
        now: &str,
    ) -> crate::Result<u64>;
    /// Endpoints whose challenge or heartbeat is due (enabled, not
    /// deleted), oldest due first, locked (on PostgreSQL skipping rows
    /// other nodes hold).
    async fn due_endpoints(
        &mut self,
        due: DueAt,
        now: &str,
        limit: i64,
    ) -> crate::Result<Vec<EndpointRow>>;
    /// Writes an endpoint's verification and when its challenge is next
    /// sent, bumping its revision (cached copies read it again).
    async fn set_verification(
        &mut self,
        id: &str,
        v: &crate::delivery::Verification,
        verify_at: Option<&str>,
        now: &str,
    ) -> crate::Result<()>;
    /// Leases a pending endpoint's challenge until `until` (its revision
    /// unchanged: a client's change in between is not turned away).
    async fn lease_verification(&mut self, id: &str, until: &str) -> crate::Result<()>;
    /// When the endpoint's next heartbeat is due (`None`: none is).
    async fn set_heartbeat(&mut self, id: &str, at: Option<&str>) -> crate::Result<()>;
    /// The endpoint's last delivery: its `endpointSequence` and when it
    /// was made.
    async fn last_delivery(&mut self, endpoint_id: &str) -> crate::Result<Option<(i64, String)>>;
    /// Makes the deliveries held for the endpoint's verification due, each
    /// at the time it was made (so they are taken in that order).
    async fn release_held(&mut self, endpoint_id: &str) -> crate::Result<u64>;
    /// Makes the endpoint's waiting (wake_dispatcher) deliveries due now.
    async fn drain(&mut self, endpoint_id: &str, now: &str) -> crate::Result<u64>;
    /// Inserts deliveries (of distinct endpoints), each numbered one past
    /// its endpoint's last `endpointSequence`, in one statement; returns
    /// the numbers in `rows` order. The caller holds the tenant's lock, so
    /// no other writer numbers these endpoints meanwhile.
    async fn insert_deliveries(&mut self, rows: &[NewDelivery<'_>]) -> crate::Result<Vec<i64>>;
    /// Records successful attempts of deliveries leased to `node`, in one
    /// statement, and ends the failure streak (below the breaker's
    /// threshold) of their endpoints.
    async fn succeed_many(
        &mut self,
        recs: &[crate::delivery::AttemptRecord],
        node: &str,
        now: &str,
    ) -> crate::Result<()>;
    /// Due deliveries of enabled endpoints, oldest due first, locked (and on
    /// PostgreSQL skipping rows other nodes hold), with the endpoint's
    /// revision and the event's body.
    async fn due(
        &mut self,
        now: &str,
        limit: i64,
    ) -> crate::Result<Vec<(crate::delivery::Delivery, i64, Option<String>)>>;
    async fn lease(&mut self, id: &str, node: &str, until: &str) -> crate::Result<()>;
    async fn release(
        &mut self,
        id: &str,
        node: &str,
        next_at: &str,
        now: &str,
    ) -> crate::Result<()>;
    /// Gives a leased delivery back paused while its endpoint holds it
    /// (waits for its verification, or is disabled or deleted), else due now.
    async fn hold(&mut self, id: &str, node: &str, now: &str) -> crate::Result<()>;
    /// A delivery and its lease owner, locked.
    async fn delivery(
        &mut self,
        tenant: Option<&str>,
        id: &str,
    ) -> crate::Result<Option<(crate::delivery::Delivery, Option<String>)>>;
    /// Writes status, attempts and due time; clears the lease.
    async fn update_delivery(
        &mut self,
        d: &crate::delivery::Delivery,
        next_at: Option<&str>,
        succeeded_at: Option<&str>,
    ) -> crate::Result<()>;
    /// Counts a failure: the new streak, since when the endpoint fails, and
    /// whether it is disabled.
    async fn endpoint_failed(
        &mut self,
        id: &str,
        now: &str,
    ) -> crate::Result<Option<(i64, Option<String>, bool)>>;
    /// Ends a failure streak; returns the streak it ended (0: none).
    async fn endpoint_succeeded(&mut self, id: &str) -> crate::Result<i64>;
    async fn disable_endpoint(&mut self, id: &str, reason: &str, now: &str) -> crate::Result<()>;
    /// Events of a tenant in sequence order, for a replay.
    async fn events_from(
        &mut self,
        tenant: &str,
        after: i64,
        since: Option<&str>,
        limit: i64,
    ) -> crate::Result<Vec<eventflow_model::Event>>;
}

macro_rules! impl_queue_conn {
    ($conn:ty, db: $db:ty, lock_due: $lock_due:expr, lock_row: $lock_row:expr, append_attempt: $append:expr $(,)?) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::Row;

            use crate::delivery::{Delivery, EndpointRow};
            use crate::error::{Result, StoreError};
            use crate::delivery::sql::{DELIVERY_COLUMNS, DueAt, ENDPOINT_COLUMNS, NewDelivery, QueueConn, REPLAY_COLUMNS};
            use crate::codec::json_text;

            #[async_trait]
            impl QueueConn for $conn {
                fn fanout(&mut self) -> &mut crate::delivery::fanout::Fanout {
                    &mut self.fanout
                }

                async fn load_endpoints(&mut self, tenant: &str) -> Result<Vec<EndpointRow>> {
                    let sql = format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id"
                    );
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(tenant)
                        .fetch_all(&mut self.conn)
                        .await?;
                    rows.iter().map(crate::delivery::sql::endpoint_from_row).collect()
                }

                async fn endpoint(&mut self, tenant: &str, id: &str) -> Result<Option<EndpointRow>> {
                    let sql = format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
                    );
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(tenant)
                        .bind(id)
                        .fetch_optional(&mut self.conn)
                        .await?;
                    row.as_ref().map(crate::delivery::sql::endpoint_from_row).transpose()
                }

                async fn insert_endpoint(&mut self, r: &EndpointRow) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO endpoints (id, tenant_id, revision, created_at, updated_at, disabled, \
                         disabled_reason, config, secrets, verification, verify_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .bind(&r.id)
                    .bind(&r.tenant_id)
                    .bind(r.revision)
                    .bind(&r.created_at)
                    .bind(&r.updated_at)
                    .bind(i64::from(r.disabled))
                    .bind(&r.disabled_reason)
                    .bind(json_text(&r.config)?)
                    .bind(json_text(&r.secrets)?)
                    .bind(json_text(&r.verification)?)
                    .bind(&r.verify_at)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn update_endpoint(&mut self, r: &EndpointRow, expected: i64) -> Result<bool> {
                    let done = sqlx::query(
                        "UPDATE endpoints SET revision = $1, updated_at = $2, disabled = $3, disabled_reason = $4, \
                         config = $5, secrets = $6, filter_error = $10, verification = $11, verify_at = $12 \
                         WHERE id = $7 AND tenant_id = $8 AND revision = $9 AND deleted_at IS NULL",
                    )
                    .bind(r.revision)
                    .bind(&r.updated_at)
                    .bind(i64::from(r.disabled))
                    .bind(&r.disabled_reason)
                    .bind(json_text(&r.config)?)
                    .bind(json_text(&r.secrets)?)
                    .bind(&r.id)
                    .bind(&r.tenant_id)
                    .bind(expected)
                    .bind(r.filter_error.as_ref().map(json_text).transpose()?)
                    .bind(json_text(&r.verification)?)
                    .bind(&r.verify_at)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn deliveries_between(&mut self, endpoint_id: &str, after: i64, up_to: i64) -> Result<Vec<Delivery>> {
                    // No ORDER BY: sorting by endpoint_sequence would make
                    // SQLite walk deliveries_by_endpoint_sequence instead.
                    let sql = format!(
                        "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.endpoint_id = $1 \
                         AND d.event_sequence > $2 AND d.event_sequence <= $3"
                    );
                    let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(endpoint_id)
                        .bind(after)
                        .bind(up_to)
                        .fetch_all(&mut self.conn)
                        .await?;
                    found.iter().map(crate::delivery::sql::delivery_from_row).collect()
                }

                async fn latest_sequence(&mut self, tenant: &str) -> Result<i64> {
                    let (owner, number) = crate::records::query::log_columns(tenant);
                    let sql = format!("SELECT COALESCE(MAX({number}), 0) FROM events WHERE {owner} = $1");
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(tenant)
                        .fetch_one(&mut self.conn)
                        .await?;
                    Ok(row.get::<i64, _>(0))
                }

                async fn insert_replay(&mut self, r: &crate::delivery::Replay) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO replays (id, tenant_id, endpoint_id, cursor, since, up_to, queued, status, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(&r.id)
                    .bind(&r.tenant_id)
                    .bind(&r.endpoint_id)
                    .bind(r.cursor)
                    .bind(&r.since)
                    .bind(r.up_to)
                    .bind(r.queued)
                    .bind(&r.status)
                    .bind(&r.created_at)
                    .bind(&r.updated_at)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn update_replay(&mut self, r: &crate::delivery::Replay) -> Result<()> {
                    sqlx::query("UPDATE replays SET cursor = $1, queued = $2, status = $3, updated_at = $4 WHERE id = $5")
                        .bind(r.cursor)
                        .bind(r.queued)
                        .bind(&r.status)
                        .bind(&r.updated_at)
                        .bind(&r.id)
                        .execute(&mut self.conn)
                        .await?;
                    Ok(())
                }

                async fn replay_row(&mut self, id: &str) -> Result<Option<crate::delivery::Replay>> {
                    let sql = format!("SELECT {REPLAY_COLUMNS} FROM replays WHERE id = $1");
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(id)
                        .fetch_optional(&mut self.conn)
                        .await?;
                    row.as_ref().map(crate::delivery::sql::replay_from_row).transpose()
                }

                async fn record_filter_error(&mut self, id: &str, error: &crate::delivery::FilterError) -> Result<()> {
                    sqlx::query("UPDATE endpoints SET filter_error = $1 WHERE id = $2")
                        .bind(json_text(error)?)
                        .bind(id)
                        .execute(&mut self.conn)
                        .await?;
                    Ok(())
                }

                async fn max_payload(&mut self, tenant: &str) -> Result<String> {
                    let row = sqlx::query("SELECT max_payload FROM tenants WHERE id = $1")
                        .bind(tenant)
                        .fetch_optional(&mut self.conn)
                        .await?;
                    Ok(row.map(|r| r.get::<String, _>(0)).unwrap_or_else(|| "full".into()))
                }

                async fn thin_members(&mut self, org: &str) -> Result<Vec<String>> {
                    let rows = sqlx::query(
                        "SELECT id FROM tenants WHERE org_id = $1 AND id <> $1 AND max_payload = 'thin' ORDER BY id LIMIT 10",
                    )
                    .bind(org)
                    .fetch_all(&mut self.conn)
                    .await?;
                    Ok(rows.iter().map(|r| r.get(0)).collect())
                }

                async fn tenant_membership(&mut self, tenant: &str) -> Result<Option<(String, Option<String>)>> {
                    crate::networks::NetworkConn::membership(self, tenant).await
                }

                async fn lock_tenant_row(&mut self, tenant: &str) -> Result<()> {
                    crate::records::rules::RecordTx::lock_tenant(self, tenant).await
                }

                async fn set_max_payload(&mut self, tenant: &str, mode: &str) -> Result<()> {
                    sqlx::query("UPDATE tenants SET max_payload = $1 WHERE id = $2")
                        .bind(mode)
                        .bind(tenant)
                        .execute(&mut self.conn)
                        .await?;
                    Ok(())
                }

                async fn insert_disclosures(
                    &mut self,
                    rows: &[&crate::delivery::Disclosure],
                    at: &str,
                ) -> Result<()> {
                    // 16 columns a row: well within either backend's limit
                    // of bound values per statement.
                    for chunk in rows.chunks(500) {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO disclosures (id, tenant_id, patient_id, at, recipient, endpoint_id, \
                             organisation_id, origin, delivery_id, event_id, event_type, resource_type, \
                             resource_id, fields, purpose, purpose_text) ",
                        );
                        qb.push_values(chunk, |mut b, d| {
                            b.push_bind(d.id.clone())
                                .push_bind(d.tenant_id.clone())
                                .push_bind(d.patient_id.clone())
                                .push_bind(at.to_string())
                                .push_bind(d.recipient.clone())
                                .push_bind(d.endpoint_id.clone())
                                .push_bind(d.organisation_id.clone())
                                .push_bind(d.origin.clone())
                                .push_bind(d.delivery_id.clone())
                                .push_bind(d.event_id.clone())
                                .push_bind(d.event_type.clone())
                                .push_bind(d.resource_type.clone())
                                .push_bind(d.resource_id.clone())
                                .push_bind(json_text(&d.fields).unwrap_or_else(|_| "[]".into()))
                                .push_bind(d.purpose.as_str())
                                .push_bind(d.purpose_text.clone());
                        });
                        // A success recorded twice (a lease that ran out
                        // mid-record) is one disclosure.
                        qb.push(" ON CONFLICT (tenant_id, id) DO NOTHING");
                        // One row (a success recorded alone, the usual case
                        // at a low rate) is one statement, kept prepared; a
                        // statement of each other batch size would otherwise
                        // stay in the connection's cache, each as large as
                        // its batch.
                        qb.build().persistent(chunk.len() == 1).execute(&mut self.conn).await?;
                    }
                    Ok(())
                }

                async fn reset_failures(&mut self, id: &str) -> Result<()> {
                    sqlx::query("UPDATE endpoints SET failure_streak = 0, failing_since = NULL WHERE id = $1")
                        .bind(id)
                        .execute(&mut self.conn)
                        .await?;
                    Ok(())
                }

                async fn bump_endpoints_version(&mut self, tenant: &str) -> Result<()> {
                    sqlx::query("UPDATE tenants SET endpoints_version = endpoints_version + 1 WHERE id = $1")
                        .bind(tenant)
                        .execute(&mut self.conn)
                        .await?;
                    self.fanout.endpoints_changed(tenant);
                    Ok(())
                }

                async fn endpoints_version(&mut self, tenant: &str) -> Result<i64> {
                    let row = sqlx::query("SELECT endpoints_version FROM tenants WHERE id = $1")
                        .bind(tenant)
                        .fetch_optional(&mut self.conn)
                        .await?;
                    Ok(row.map(|r| r.get(0)).unwrap_or(0))
                }

                async fn soft_delete_endpoint(&mut self, tenant: &str, id: &str, now: &str) -> Result<bool> {
                    let done = sqlx::query(
                        "UPDATE endpoints SET deleted_at = $1, disabled = 1, revision = revision + 1, updated_at = $1 \
                         WHERE id = $2 AND tenant_id = $3 AND deleted_at IS NULL",
                    )
                    .bind(now)
                    .bind(id)
                    .bind(tenant)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn reschedule_pending(&mut self, endpoint_id: &str, next_at: &str, now: &str) -> Result<u64> {
                    let done = sqlx::query(
                        "UPDATE deliveries SET next_at = $1, updated_at = $2 WHERE endpoint_id = $3 AND status = 'pending'",
                    )
                    .bind(next_at)
                    .bind(now)
                    .bind(endpoint_id)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(done.rows_affected())
                }

                async fn due_endpoints(&mut self, due: DueAt, now: &str, limit: i64) -> Result<Vec<EndpointRow>> {
                    let lock: &str = $lock_row;
                    let skip = if lock.is_empty() { "" } else { " SKIP LOCKED" };
                    let at = due.column();
                    let sql = format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE {at} IS NOT NULL AND {at} <= $1 \
                         AND disabled = 0 AND deleted_at IS NULL ORDER BY {at} LIMIT $2{lock}{skip}"
                    );
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(now)
                        .bind(limit)
                        .fetch_all(&mut self.conn)
                        .await?;
                    rows.iter().map(crate::delivery::sql::endpoint_from_row).collect()
                }

                async fn set_verification(
                    &mut self,
                    id: &str,
                    v: &crate::delivery::Verification,
                    verify_at: Option<&str>,
                    now: &str,
                ) -> Result<()> {
                    sqlx::query(
                        "UPDATE endpoints SET verification = $1, verify_at = $2, revision = revision + 1, \
                         updated_at = $3 WHERE id = $4",
                    )
                    .bind(json_text(v)?)
                    .bind(verify_at)
                    .bind(now)
                    .bind(id)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn lease_verification(&mut self, id: &str, until: &str) -> Result<()> {
                    sqlx::query("UPDATE endpoints SET verify_at = $1 WHERE id = $2")
                        .bind(until)
                        .bind(id)
                        .execute(&mut self.conn)
                        .await?;
                    Ok(())
                }

                async fn set_heartbeat(&mut self, id: &str, at: Option<&str>) -> Result<()> {
                    sqlx::query("UPDATE endpoints SET heartbeat_at = $1 WHERE id = $2")
                        .bind(at)
                        .bind(id)
                        .execute(&mut self.conn)
                        .await?;
                    Ok(())
                }

                async fn last_delivery(&mut self, endpoint_id: &str) -> Result<Option<(i64, String)>> {
                    let row = sqlx::query(
                        "SELECT endpoint_sequence, created_at FROM deliveries WHERE endpoint_id = $1 \
                         ORDER BY endpoint_sequence DESC LIMIT 1",
                    )
                    .bind(endpoint_id)
                    .fetch_optional(&mut self.conn)
                    .await?;
                    Ok(row.map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1))))
                }

                async fn release_held(&mut self, endpoint_id: &str) -> Result<u64> {
                    let done = sqlx::query(
                        "UPDATE deliveries SET next_at = created_at \
                         WHERE endpoint_id = $1 AND status = 'pending' AND next_at = $2",
                    )
                    .bind(endpoint_id)
                    .bind(crate::delivery::sql::PAUSED)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(done.rows_affected())
                }

                async fn drain(&mut self, endpoint_id: &str, now: &str) -> Result<u64> {
                    let done = sqlx::query(
                        "UPDATE deliveries SET next_at = $1, updated_at = $1 \
                         WHERE endpoint_id = $2 AND status = 'pending' AND lease_owner IS NULL AND next_at > $1",
                    )
                    .bind(now)
                    .bind(endpoint_id)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(done.rows_affected())
                }

                async fn insert_deliveries(&mut self, rows: &[NewDelivery<'_>]) -> Result<Vec<i64>> {
                    if rows.is_empty() {
                        return Ok(Vec::new());
                    }
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO deliveries (id, tenant_id, endpoint_id, endpoint_sequence, event_sequence, event_id, \
                         event_type, resource_id, patient_id, ordered, status, created_at, updated_at, next_at, \
                         lease_owner, lease_until, window_started_at) ",
                    );
                    qb.push_values(rows, |mut b, d| {
                        b.push_bind(d.id.to_string())
                            .push_bind(d.tenant_id.to_string())
                            .push_bind(d.endpoint_id.to_string())
                            .push("(SELECT COALESCE(MAX(endpoint_sequence), 0) + 1 FROM deliveries WHERE endpoint_id = ")
                            .push_bind_unseparated(d.endpoint_id.to_string())
                            .push_unseparated(")")
                            .push_bind(d.event_sequence)
                            .push_bind(d.event.id.clone())
                            .push_bind(d.event.event_type.clone())
                            .push_bind(d.event.resource.id.clone())
                            .push_bind(d.patient_id.map(str::to_string))
                            .push_bind(i64::from(d.ordered))
                            .push("'pending'")
                            .push_bind(d.now.to_string())
                            .push_bind(d.now.to_string())
                            .push_bind(d.next_at.to_string())
                            .push_bind(d.lease_owner.map(str::to_string))
                            .push_bind(d.lease_owner.map(|_| d.next_at.to_string()))
                            .push_bind(d.now.to_string());
                    });
                    qb.push(" RETURNING id, endpoint_sequence");
                    let found = qb.build().fetch_all(&mut self.conn).await?;
                    let by_id: std::collections::HashMap<String, i64> =
                        found.iter().map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))).collect();
                    rows.iter()
                        .map(|d| by_id.get(d.id).copied().ok_or_else(|| StoreError::corrupt("delivery insert")))
                        .collect()
                }

                async fn succeed_many(
                    &mut self,
                    recs: &[crate::delivery::AttemptRecord],
                    node: &str,
                    now: &str,
                ) -> Result<()> {
                    if recs.is_empty() {
                        return Ok(());
                    }
                    let append: &str = $append;
                    let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE deliveries SET status = 'succeeded', updated_at = ");
                    qb.push_bind(now.to_string())
                        .push(", succeeded_at = ")
                        .push_bind(now.to_string())
                        .push(", next_at = NULL, lease_owner = NULL, lease_until = NULL, attempt_count = attempt_count + 1, attempts = ")
                        .push(append)
                        .push(" FROM (");
                    qb.push_values(recs, |mut b, r| {
                        b.push_bind(r.delivery_id.clone())
                            .push_bind(json_text(&r.attempt).unwrap_or_default());
                    });
                    qb.push(") AS v WHERE deliveries.id = v.column1 AND deliveries.status = 'pending' AND deliveries.lease_owner = ")
                        .push_bind(node.to_string());
                    qb.build().execute(&mut self.conn).await?;
                    let mut endpoints: Vec<&str> = recs.iter().map(|r| r.endpoint_id.as_str()).collect();
                    endpoints.sort_unstable();
                    endpoints.dedup();
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE endpoints SET failure_streak = 0, failing_since = NULL WHERE failure_streak > 0 AND failure_streak < ",
                    );
                    qb.push_bind(crate::delivery::rules::BREAKER_THRESHOLD).push(" AND id IN (");
                    let mut sep = qb.separated(", ");
                    for e in endpoints {
                        sep.push_bind(e.to_string());
                    }
                    qb.push(")");
                    qb.build().execute(&mut self.conn).await?;
                    Ok(())
                }

                async fn due(&mut self, now: &str, limit: i64) -> Result<Vec<(Delivery, i64, Option<String>)>> {
                    let lock: &str = $lock_due;
                    let sql = format!(
                        "SELECT {DELIVERY_COLUMNS}, e.revision, ev.body FROM deliveries d \
                         JOIN endpoints e ON e.id = d.endpoint_id \
                         LEFT JOIN events ev ON ev.id = d.event_id \
                         WHERE d.status = 'pending' AND d.next_at <= $1 AND e.disabled = 0 AND e.deleted_at IS NULL \
                         AND (d.ordered = 0 OR NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.endpoint_id = d.endpoint_id \
                         AND p.resource_id = d.resource_id AND p.status = 'pending' AND p.ordered = 1 \
                         AND p.endpoint_sequence < d.endpoint_sequence)) \
                         ORDER BY d.next_at LIMIT $2{lock}"
                    );
                    let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(now)
                        .bind(limit)
                        .fetch_all(&mut self.conn)
                        .await?;
                    found
                        .iter()
                        .map(|r| Ok((crate::delivery::sql::delivery_from_row(r)?, r.get(14), r.get(15))))
                        .collect()
                }

                async fn lease(&mut self, id: &str, node: &str, until: &str) -> Result<()> {
                    sqlx::query("UPDATE deliveries SET lease_owner = $1, lease_until = $2, next_at = $2 WHERE id = $3")
                        .bind(node)
                        .bind(until)
                        .bind(id)
                        .execute(&mut self.conn)
                        .await?;
                    Ok(())
                }

                async fn release(&mut self, id: &str, node: &str, next_at: &str, now: &str) -> Result<()> {
                    sqlx::query(
                        "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL, next_at = $1, updated_at = $2 \
                         WHERE id = $3 AND lease_owner = $4 AND status = 'pending'",
                    )
                    .bind(next_at)
                    .bind(now)
                    .bind(id)
                    .bind(node)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn hold(&mut self, id: &str, node: &str, now: &str) -> Result<()> {
                    // Decided in the statement, against the endpoint as it
                    // is now: one verified meanwhile makes it due at once,
                    // so a delivery held after its endpoint's held ones
                    // were released is not left behind.
                    sqlx::query(
                        "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL, updated_at = $2, \
                         next_at = CASE WHEN EXISTS (SELECT 1 FROM endpoints e \
                         WHERE e.id = deliveries.endpoint_id AND (e.verify_at IS NOT NULL OR e.disabled <> 0 \
                         OR e.deleted_at IS NOT NULL)) THEN $1 ELSE $2 END \
                         WHERE id = $3 AND lease_owner = $4 AND status = 'pending'",
                    )
                    .bind(crate::delivery::sql::PAUSED)
                    .bind(now)
                    .bind(id)
                    .bind(node)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn delivery(&mut self, tenant: Option<&str>, id: &str) -> Result<Option<(Delivery, Option<String>)>> {
                    let lock: &str = $lock_row;
                    let sql = format!(
                        "SELECT {DELIVERY_COLUMNS}, d.lease_owner FROM deliveries d WHERE d.id = $1 AND ($2 IS NULL OR d.tenant_id = $2){lock}"
                    );
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(id)
                        .bind(tenant)
                        .fetch_optional(&mut self.conn)
                        .await?;
                    row.map(|r| Ok((crate::delivery::sql::delivery_from_row(&r)?, r.get(14)))).transpose()
                }

                async fn update_delivery(&mut self, d: &Delivery, next_at: Option<&str>, succeeded_at: Option<&str>) -> Result<()> {
                    sqlx::query(
                        "UPDATE deliveries SET status = $1, updated_at = $2, next_at = $3, attempt_count = $4, \
                         attempts = $5, succeeded_at = COALESCE($6, succeeded_at), lease_owner = NULL, lease_until = NULL, \
                         window_started_at = $8 WHERE id = $7",
                    )
                    .bind(d.status.as_str())
                    .bind(&d.updated_at)
                    .bind(next_at)
                    .bind(d.attempts.len() as i64)
                    .bind(json_text(&d.attempts)?)
                    .bind(succeeded_at)
                    .bind(&d.id)
                    .bind(&d.window_started_at)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn endpoint_failed(&mut self, id: &str, now: &str) -> Result<Option<(i64, Option<String>, bool)>> {
                    let row = sqlx::query(
                        "UPDATE endpoints SET failure_streak = failure_streak + 1, failing_since = COALESCE(failing_since, $1) \
                         WHERE id = $2 RETURNING failure_streak, failing_since, disabled",
                    )
                    .bind(now)
                    .bind(id)
                    .fetch_optional(&mut self.conn)
                    .await?;
                    Ok(row.map(|r| (r.get(0), r.get(1), r.get::<i64, _>(2) != 0)))
                }

                async fn endpoint_succeeded(&mut self, id: &str) -> Result<i64> {
                    let row = sqlx::query("SELECT failure_streak FROM endpoints WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut self.conn)
                        .await?;
                    let streak: i64 = row.map(|r| r.get(0)).unwrap_or(0);
                    if streak > 0 {
                        self.reset_failures(id).await?;
                    }
                    Ok(streak)
                }

                async fn disable_endpoint(&mut self, id: &str, reason: &str, now: &str) -> Result<()> {
                    sqlx::query(
                        "UPDATE endpoints SET disabled = 1, disabled_reason = $1, revision = revision + 1, updated_at = $2 \
                         WHERE id = $3",
                    )
                    .bind(reason)
                    .bind(now)
                    .bind(id)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(())
                }

                async fn events_from(
                    &mut self,
                    tenant: &str,
                    after: i64,
                    since: Option<&str>,
                    limit: i64,
                ) -> Result<Vec<eventflow_model::Event>> {
                    let (owner, number) = crate::records::query::log_columns(tenant);
                    let sql = format!(
                        "SELECT body FROM events WHERE {owner} = $1 AND {number} > $2 AND ($3 IS NULL OR created_at >= $3) \
                         ORDER BY {number} LIMIT $4"
                    );
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .bind(after)
                    .bind(since)
                    .bind(limit)
                    .fetch_all(&mut self.conn)
                    .await?;
                    rows.iter().map(|r| crate::codec::parse_event(r.get::<&str, _>(0))).collect()
                }
            }
        };
    };
}

pub(crate) use impl_queue_conn;

/// [`Deliveries`](crate::Deliveries) for a store.
macro_rules! impl_deliveries {
    ($store:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use eventflow_model::id::{DeliveryId, EndpointId, EventId, ReplayId, TenantId};
            use eventflow_model::Event;

            use sqlx::Row;

            use crate::codec::parse_event;
            use crate::delivery::*;
            use crate::error::Result;





        impl $store {
            /// When the first endpoint's challenge or heartbeat (`due`) is
            /// due, among enabled endpoints.
            async fn next_endpoint_due(&self, due: crate::delivery::sql::DueAt) -> Result<Option<jiff::Timestamp>> {
                let at = due.column();
                let sql = format!(
                    "SELECT MIN({at}) FROM endpoints WHERE {at} IS NOT NULL AND disabled = 0 AND deleted_at IS NULL"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(&self.reads).await?;
                Ok(row
                    .get::<Option<String>, _>(0)
                    .and_then(|n| eventflow_model::time::parse(&n)))
            }
        }

        #[async_trait]
        impl crate::Deliveries for $store {
            async fn change_endpoint(&self, change: crate::EndpointChange) -> Result<Option<EndpointRow>> {
                self.writer.endpoint(change).await
            }

            async fn endpoint(&self, tenant: &TenantId, id: &EndpointId) -> Result<Option<EndpointRow>> {
                    let sql = format!(
                    "SELECT {} FROM endpoints WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
                    crate::delivery::sql::ENDPOINT_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant.as_str())
                    .bind(id.as_str())
                    .fetch_optional(&self.reads)
                    .await?;
                row.as_ref().map(crate::delivery::sql::endpoint_from_row).transpose()
            }

            async fn endpoints(&self, tenant: &TenantId) -> Result<Vec<EndpointRow>> {
                    let sql = format!(
                    "SELECT {} FROM endpoints WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id LIMIT 1000",
                    crate::delivery::sql::ENDPOINT_COLUMNS
                );
                let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant.as_str())
                    .fetch_all(&self.reads)
                    .await?;
                found.iter().map(crate::delivery::sql::endpoint_from_row).collect()
            }

            async fn claim_deliveries(&self, limit: i64) -> Result<Vec<ClaimedDelivery>> {
                self.writer.claim(limit).await
            }

            async fn record_attempt(&self, rec: AttemptRecord) -> Result<Recorded> {
                self.writer.attempted(rec).await
            }

            async fn record_successes(&self, recs: Vec<AttemptRecord>) -> Result<()> {
                self.writer.succeeded(recs).await
            }

            async fn hold_deliveries(&self, ids: Vec<DeliveryId>) -> Result<()> {
                self.writer.hold(ids.into_iter().map(DeliveryId::into_string).collect()).await
            }

            async fn release_deliveries(&self, ids: Vec<DeliveryId>, next_at: jiff::Timestamp) -> Result<()> {
                self.writer.release(ids.into_iter().map(DeliveryId::into_string).collect(), next_at).await
            }

            async fn retry_delivery(&self, tenant: &TenantId, id: &DeliveryId) -> Result<Option<Delivery>> {
                self.writer.retry(tenant, id).await
            }

            async fn replay(&self, tenant: &TenantId, endpoint_id: &EndpointId, from: ReplayFrom) -> Result<Option<Replay>> {
                self.writer.replay(tenant, endpoint_id, from).await
            }

            async fn replay_chunk(&self, tenant: &TenantId, id: &ReplayId) -> Result<Option<Replay>> {
                self.writer.replay_chunk(tenant, id).await
            }

            async fn get_replay(&self, tenant: &TenantId, endpoint_id: &EndpointId, id: &ReplayId) -> Result<Option<Replay>> {
                    let sql = format!(
                    "SELECT {} FROM replays WHERE id = $1 AND tenant_id = $2 AND endpoint_id = $3",
                    crate::delivery::sql::REPLAY_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.as_str())
                    .bind(tenant.as_str())
                    .bind(endpoint_id.as_str())
                    .fetch_optional(&self.reads)
                    .await?;
                row.as_ref().map(crate::delivery::sql::replay_from_row).transpose()
            }

            async fn running_replays(&self, limit: i64) -> Result<Vec<(TenantId, ReplayId)>> {
                let found = sqlx::query(
                    "SELECT tenant_id, id FROM replays WHERE status = 'running' ORDER BY id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.reads)
                .await?;
                Ok(found
                    .iter()
                    .map(|r| (TenantId::from_stored(r.get(0)), ReplayId::from_stored(r.get(1))))
                    .collect())
            }

            async fn delivery(&self, tenant: &TenantId, id: &DeliveryId) -> Result<Option<Delivery>> {
                    let sql = format!(
                    "SELECT {} FROM deliveries d WHERE d.id = $1 AND d.tenant_id = $2",
                    crate::delivery::sql::DELIVERY_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.as_str())
                    .bind(tenant.as_str())
                    .fetch_optional(&self.reads)
                    .await?;
                row.as_ref().map(crate::delivery::sql::delivery_from_row).transpose()
            }

            async fn event_deliveries(&self, tenant: &TenantId, event_id: &EventId) -> Result<Vec<Delivery>> {
                    let sql = format!(
                    "SELECT {} FROM deliveries d WHERE d.event_id = $1 AND d.tenant_id = $2 ORDER BY d.id LIMIT 10000",
                    crate::delivery::sql::DELIVERY_COLUMNS
                );
                let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(event_id.as_str())
                    .bind(tenant.as_str())
                    .fetch_all(&self.reads)
                    .await?;
                found.iter().map(crate::delivery::sql::delivery_from_row).collect()
            }

            async fn deliveries(
                &self,
                tenant: &TenantId,
                endpoint_id: &EndpointId,
                q: &DeliveryQuery,
            ) -> Result<(Vec<Delivery>, Option<String>)> {
                    let sql = format!(
                    "SELECT {} FROM deliveries d WHERE d.tenant_id = $1 AND d.endpoint_id = $2 \
                     AND ($3 IS NULL OR d.status = $3) AND ($4 IS NULL OR d.id < $4) ORDER BY d.id DESC LIMIT $5",
                    crate::delivery::sql::DELIVERY_COLUMNS
                );
                let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant.as_str())
                    .bind(endpoint_id.as_str())
                    .bind(q.status.map(|s| s.as_str()))
                    .bind(q.cursor.as_deref())
                    .bind(i64::from(q.limit) + 1)
                    .fetch_all(&self.reads)
                    .await?;
                let mut data: Vec<Delivery> = found
                    .iter()
                    .map(crate::delivery::sql::delivery_from_row)
                    .collect::<Result<_>>()?;
                let next = if data.len() > q.limit as usize {
                    data.truncate(q.limit as usize);
                    data.last().map(|d| d.id.clone())
                } else {
                    None
                };
                Ok((data, next))
            }

            async fn endpoint_events(
                &self,
                tenant: &TenantId,
                endpoint_id: &EndpointId,
                after: i64,
                limit: u32,
            ) -> Result<Vec<(i64, Event)>> {
                let found = sqlx::query(
                    "SELECT d.endpoint_sequence, e.body FROM deliveries d JOIN events e \
                     ON e.id = d.event_id \
                     WHERE d.tenant_id = $1 AND d.endpoint_id = $2 AND d.endpoint_sequence > $3 \
                     ORDER BY d.endpoint_sequence LIMIT $4",
                )
                .bind(tenant.as_str())
                .bind(endpoint_id.as_str())
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.reads)
                .await?;
                found
                    .iter()
                    .map(|r| Ok((r.get::<i64, _>(0), parse_event(r.get::<&str, _>(1))?)))
                    .collect()
            }

            async fn disclosures(
                &self,
                tenant: &TenantId,
                q: &crate::delivery::DisclosureQuery,
            ) -> Result<(Vec<Disclosure>, Option<String>)> {
                // One indexed range, in id order: a clinic's (of one
                // patient, or all), or an organisation's endpoints'.
                let column = if tenant.is_organisation() { "organisation_id" } else { "tenant_id" };
                let mut qb = sqlx::QueryBuilder::<$db>::new(
                    "SELECT id, tenant_id, patient_id, at, recipient, endpoint_id, organisation_id, origin, \
                     delivery_id, event_id, event_type, resource_type, resource_id, fields, purpose, purpose_text \
                     FROM disclosures WHERE ",
                );
                qb.push(column).push(" = ").push_bind(tenant.as_str().to_string());
                if let Some(p) = &q.patient_id {
                    qb.push(" AND patient_id = ").push_bind(p.clone());
                }
                if let Some(since) = &q.since {
                    qb.push(" AND at >= ").push_bind(since.clone());
                }
                if let Some(until) = &q.until {
                    qb.push(" AND at < ").push_bind(until.clone());
                }
                if let Some(purpose) = q.purpose {
                    qb.push(" AND purpose = ").push_bind(purpose.as_str());
                }
                if let Some(cursor) = &q.cursor {
                    qb.push(" AND id > ").push_bind(cursor.clone());
                }
                qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(q.limit) + 1);
                let found = qb.build().fetch_all(&self.reads).await?;
                let mut data = found
                    .iter()
                    .map(|r| {
                        Ok(Disclosure {
                            id: r.get(0),
                            tenant_id: r.get(1),
                            patient_id: r.get(2),
                            at: r.get(3),
                            recipient: r.get(4),
                            endpoint_id: r.get(5),
                            organisation_id: r.get(6),
                            origin: r.get(7),
                            delivery_id: r.get(8),
                            event_id: r.get(9),
                            event_type: r.get(10),
                            resource_type: r.get(11),
                            resource_id: r.get(12),
                            fields: serde_json::from_str(r.get::<&str, _>(13))
                                .map_err(|_| crate::StoreError::corrupt("disclosure fields"))?,
                            purpose: crate::delivery::Purpose::parse(r.get::<&str, _>(14))
                                .ok_or_else(|| crate::StoreError::corrupt("disclosure purpose"))?,
                            purpose_text: r.get(15),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let next = if data.len() > q.limit as usize {
                    data.truncate(q.limit as usize);
                    data.last().map(|d| d.id.clone())
                } else {
                    None
                };
                Ok((data, next))
            }

            async fn claim_verifications(&self, limit: i64) -> Result<Vec<EndpointRow>> {
                self.writer.claim_verifications(limit).await
            }

            async fn record_verification(&self, rec: crate::delivery::VerifyRecord) -> Result<()> {
                self.writer.record_verification(rec).await
            }

            async fn claim_heartbeats(&self, limit: i64) -> Result<Vec<crate::delivery::Heartbeat>> {
                self.writer.claim_heartbeats(limit).await
            }

            async fn next_heartbeat(&self) -> Result<Option<jiff::Timestamp>> {
                self.next_endpoint_due(crate::delivery::sql::DueAt::Heartbeat).await
            }

            async fn next_verification(&self) -> Result<Option<jiff::Timestamp>> {
                self.next_endpoint_due(crate::delivery::sql::DueAt::Verification).await
            }

            async fn next_due(&self) -> Result<Option<jiff::Timestamp>> {
                let row = sqlx::query("SELECT MIN(next_at) FROM deliveries WHERE status = 'pending'")
                    .fetch_one(&self.reads)
                    .await?;
                Ok(row
                    .get::<Option<String>, _>(0)
                    .filter(|n| n.as_str() != crate::delivery::sql::PAUSED)
                    .and_then(|n| eventflow_model::time::parse(&n)))
            }

            async fn queue_depth(&self, now: jiff::Timestamp) -> Result<QueueDepth> {
                let now = eventflow_model::time::format(now);
                let row = sqlx::query(
                    "SELECT \
                       (SELECT count(*) FROM deliveries WHERE status = 'pending' AND next_at <= $1), \
                       (SELECT count(*) FROM deliveries WHERE status = 'pending' AND next_at > $1), \
                       (SELECT count(*) FROM deliveries WHERE status = 'failed'), \
                       (SELECT count(*) FROM endpoints WHERE deleted_at IS NULL AND failure_streak > 0), \
                       (SELECT coalesce(max(failure_streak), 0) FROM endpoints WHERE deleted_at IS NULL)",
                )
                .bind(now)
                .fetch_one(&self.reads)
                .await?;
                Ok(QueueDepth {
                    pending_due: row.get(0),
                    pending_later: row.get(1),
                    failed: row.get(2),
                    failing_endpoints: row.get(3),
                    max_failure_streak: row.get(4),
                })
            }

            fn node(&self) -> &str {
                &self.shared.node
            }

            fn dispatch_link(&self) -> Option<crate::DispatchLink> {
                self.shared.take_link()
            }

            async fn take_over_leases(&self, now: jiff::Timestamp) -> Result<()> {
                self.release_stale_leases(&eventflow_model::time::format(now)).await
            }
        }
        };
    };
}
pub(crate) use impl_deliveries;
