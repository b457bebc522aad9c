//! The SQL the writer's connection runs for automations, once for both
//! backends (the macro expands to an impl per backend's connection).

use super::rows::*;
use crate::error::{Result, StoreError};
use crate::records::RecordTx;

/// The SQL the writer's connection runs for automations.
#[async_trait::async_trait]
pub(crate) trait AutoConn: RecordTx {
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

/// The columns every run read selects ([`run_from_row`] reads them by name).
pub(crate) const RUN_COLUMNS: &str = "id, tenant_id, workflow, event_id, origin, timer_key, path, context, \
     status, steps, next_step, window_started_at, next_at, lease_owner, started_at, updated_at, finished_at, \
     chain_depth";

pub(crate) const TIMER_COLUMNS: &str = "tenant_id, timer_key, fire_at, workflow, path, context, event_id, run_id, created_at, chain_depth";

pub(crate) const NOTIFICATION_COLUMNS: &str = "id, tenant_id, channel, direction, recipient, subject, body, \
     workflow, run_id, step, provider, provider_id, provider_status, created_at";

/// A run as its columns hold it ([`RUN_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(crate) struct RunColumns {
    id: String,
    tenant_id: String,
    workflow: String,
    event_id: Option<String>,
    origin: String,
    timer_key: Option<String>,
    path: String,
    context: String,
    status: String,
    steps: String,
    next_step: i64,
    window_started_at: Option<String>,
    next_at: Option<String>,
    lease_owner: Option<String>,
    started_at: String,
    updated_at: String,
    finished_at: Option<String>,
    chain_depth: i64,
}

/// A run read back, by column name (on either backend).
pub(crate) fn run_from_row<'r, R: sqlx::Row>(row: &'r R) -> Result<Run>
where
    RunColumns: sqlx::FromRow<'r, R>,
{
    let c = <RunColumns as sqlx::FromRow<R>>::from_row(row)?;
    Ok(Run {
        id: c.id,
        tenant_id: c.tenant_id,
        workflow: c.workflow,
        event_id: c.event_id,
        origin: c.origin.parse()?,
        timer_key: c.timer_key,
        path: c.path,
        context: serde_json::from_str(&c.context)
            .map_err(|_| StoreError::corrupt("run context"))?,
        status: c.status.parse()?,
        steps: serde_json::from_str(&c.steps).map_err(|_| StoreError::corrupt("run steps"))?,
        next_step: c.next_step,
        window_started_at: c.window_started_at,
        next_at: c.next_at,
        lease_owner: c.lease_owner,
        started_at: c.started_at,
        updated_at: c.updated_at,
        finished_at: c.finished_at,
        chain_depth: c.chain_depth,
    })
}

/// A timer as its columns hold it ([`TIMER_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(crate) struct TimerColumns {
    tenant_id: String,
    timer_key: String,
    fire_at: String,
    workflow: String,
    path: String,
    context: String,
    event_id: Option<String>,
    run_id: Option<String>,
    created_at: String,
    chain_depth: i64,
}

/// A timer read back, by column name (on either backend).
pub(crate) fn timer_from_row<'r, R: sqlx::Row>(row: &'r R) -> Result<Timer>
where
    TimerColumns: sqlx::FromRow<'r, R>,
{
    let c = <TimerColumns as sqlx::FromRow<R>>::from_row(row)?;
    Ok(Timer {
        tenant_id: c.tenant_id,
        key: c.timer_key,
        fire_at: c.fire_at,
        workflow: c.workflow,
        path: c.path,
        context: serde_json::from_str(&c.context)
            .map_err(|_| StoreError::corrupt("timer context"))?,
        event_id: c.event_id,
        run_id: c.run_id,
        created_at: c.created_at,
        chain_depth: c.chain_depth,
    })
}

/// A message of the outbox as its columns hold it ([`NOTIFICATION_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(crate) struct NotificationColumns {
    id: String,
    tenant_id: String,
    channel: String,
    direction: String,
    recipient: String,
    subject: Option<String>,
    body: String,
    workflow: Option<String>,
    run_id: Option<String>,
    step: Option<String>,
    provider: String,
    provider_id: Option<String>,
    provider_status: Option<String>,
    created_at: String,
}

/// A message of the outbox read back, by column name (on either backend).
pub(crate) fn notification_from_row<'r, R: sqlx::Row>(row: &'r R) -> Result<Notification>
where
    NotificationColumns: sqlx::FromRow<'r, R>,
{
    let c = <NotificationColumns as sqlx::FromRow<R>>::from_row(row)?;
    Ok(Notification {
        id: c.id,
        tenant_id: c.tenant_id,
        channel: c.channel.parse()?,
        direction: c.direction.parse()?,
        to: c.recipient,
        subject: c.subject,
        body: c.body,
        workflow: c.workflow,
        run_id: c.run_id,
        step: c.step,
        provider: c.provider,
        provider_id: c.provider_id,
        provider_status: c.provider_status,
        created_at: c.created_at,
    })
}

macro_rules! impl_auto_conn {
    ($conn:ty, lock_row: $lock_row:expr, lock_due: $lock_due:expr $(,)?) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::Row;
            use crate::automation::sql::{AutoConn, NOTIFICATION_COLUMNS, RUN_COLUMNS, TIMER_COLUMNS};
            use crate::automation::{ConditionError, Notification, QuotaReservation, Run, Timer};
            use crate::error::Result;
            use crate::codec::json_text;

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
                    .bind(r.origin.as_str())
                    .bind(&r.timer_key)
                    .bind(&r.path)
                    .bind(json_text(&r.context)?)
                    .bind(r.status.as_str())
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
                    row.as_ref().map(crate::automation::sql::run_from_row).transpose()
                }

                async fn update_run(&mut self, r: &Run, lease_until: Option<&str>) -> Result<()> {
                    sqlx::query(
                        "UPDATE workflow_runs SET status = $1, steps = $2, next_step = $3, window_started_at = $4, \
                         next_at = $5, lease_owner = $6, lease_until = $7, updated_at = $8, finished_at = $9 WHERE id = $10",
                    )
                    .bind(r.status.as_str())
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
                    found.iter().map(crate::automation::sql::run_from_row).collect()
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
                    found.iter().map(crate::automation::sql::timer_from_row).collect()
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
                        .bind(n.channel.as_str())
                        .bind(n.direction.as_str())
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

/// [`Automations`](crate::Automations) for a store.
macro_rules! impl_automations {
    ($store:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use eventflow_model::id::{RunId, TenantId};


            use sqlx::Row;



            use crate::error::Result;





        #[async_trait]
        impl crate::Automations for $store {
            async fn tenant_ids(&self) -> Result<Vec<TenantId>> {
                let rows = sqlx::query("SELECT id FROM tenants ORDER BY id")
                    .fetch_all(&self.reads)
                    .await?;
                Ok(rows.iter().map(|r| TenantId::from_stored(r.get(0))).collect())
            }

            async fn automation_cursor(&self, tenant: &TenantId) -> Result<i64> {
                let row = sqlx::query("SELECT automation_cursor FROM tenants WHERE id = $1")
                    .bind(tenant.as_str())
                    .fetch_optional(&self.reads)
                    .await?;
                Ok(row.map(|r| r.get(0)).unwrap_or(0))
            }

            async fn start_runs(&self, start: crate::automation::StartRuns) -> Result<Option<Vec<crate::automation::Run>>> {
                self.writer.start_runs(start).await
            }

            async fn claim_runs(&self, limit: i64) -> Result<Vec<crate::automation::Run>> {
                self.writer.claim_runs(limit).await
            }

            async fn fire_timers(&self, limit: i64) -> Result<Vec<crate::automation::Run>> {
                self.writer.fire_timers(limit).await
            }

            async fn step_done(&self, report: crate::automation::StepReport) -> Result<Option<crate::automation::Run>> {
                self.writer.step_done(report).await
            }

            async fn add_notification(&self, n: crate::automation::Notification) -> Result<bool> {
                self.writer.notify(n).await
            }

            async fn reserve_quota(&self, r: crate::automation::QuotaReservation) -> Result<bool> {
                self.writer.reserve_quota(r).await
            }

            async fn begin_step(&self, run_id: &RunId, index: i64) -> Result<bool> {
                self.writer.begin_step(run_id, index).await
            }

            async fn condition_errors(&self, tenant: &TenantId) -> Result<Vec<crate::automation::ConditionError>> {
                let rows = sqlx::query(
                    "SELECT workflow, condition_source, message, event_id, at FROM workflow_condition_errors \
                     WHERE tenant_id = $1 ORDER BY workflow LIMIT 10000",
                )
                .bind(tenant.as_str())
                .fetch_all(&self.reads)
                .await?;
                Ok(rows
                    .iter()
                    .map(|r| crate::automation::ConditionError {
                        workflow: r.get(0),
                        condition: r.get(1),
                        error: crate::delivery::FilterError {
                            message: r.get(2),
                            event_id: r.get(3),
                            at: r.get(4),
                        },
                    })
                    .collect())
            }

            async fn write_depths(&self, tenant: &TenantId, from: i64, to: i64) -> Result<Vec<(i64, i64)>> {
                let rows = sqlx::query(
                    "SELECT sequence, chain_depth FROM workflow_write_depths \
                     WHERE tenant_id = $1 AND sequence >= $2 AND sequence <= $3",
                )
                .bind(tenant.as_str())
                .bind(from)
                .bind(to)
                .fetch_all(&self.reads)
                .await?;
                Ok(rows.iter().map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1))).collect())
            }

            async fn next_automation_due(&self) -> Result<Option<jiff::Timestamp>> {
                let row = sqlx::query(
                    "SELECT (SELECT MIN(next_at) FROM workflow_runs WHERE status = 'pending'), \
                     (SELECT MIN(fire_at) FROM timers)",
                )
                .fetch_one(&self.reads)
                .await?;
                let a: Option<String> = row.get(0);
                let b: Option<String> = row.get(1);
                let next = match (a, b) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                Ok(next.and_then(|n| eventflow_model::time::parse(&n)))
            }

            async fn workflow_run(&self, tenant: &TenantId, id: &RunId) -> Result<Option<crate::automation::Run>> {
                    let sql = format!(
                    "SELECT {} FROM workflow_runs WHERE tenant_id = $1 AND id = $2",
                    crate::automation::sql::RUN_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant.as_str())
                    .bind(id.as_str())
                    .fetch_optional(&self.reads)
                    .await?;
                row.as_ref().map(crate::automation::sql::run_from_row).transpose()
            }

            async fn workflow_runs(&self, tenant: &TenantId, q: &crate::automation::RunQuery) -> Result<Vec<crate::automation::Run>> {
                    let sql = format!(
                    "SELECT {} FROM workflow_runs WHERE tenant_id = $1 AND ($2 IS NULL OR workflow = $2) \
                     AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR event_id = $4) AND ($5 IS NULL OR id < $5) \
                     ORDER BY id DESC LIMIT $6",
                    crate::automation::sql::RUN_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant.as_str())
                    .bind(&q.workflow)
                    .bind(q.status.map(crate::automation::RunStatus::as_str))
                    .bind(&q.event_id)
                    .bind(&q.before)
                    .bind(i64::from(q.limit))
                    .fetch_all(&self.reads)
                    .await?;
                rows.iter().map(crate::automation::sql::run_from_row).collect()
            }

            async fn timers(&self, tenant: &TenantId, key: Option<&str>, limit: u32) -> Result<Vec<crate::automation::Timer>> {
                    let sql = format!(
                    "SELECT {} FROM timers WHERE tenant_id = $1 AND ($2 IS NULL OR timer_key = $2) \
                     ORDER BY fire_at, timer_key LIMIT $3",
                    crate::automation::sql::TIMER_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant.as_str())
                    .bind(key)
                    .bind(i64::from(limit))
                    .fetch_all(&self.reads)
                    .await?;
                rows.iter().map(crate::automation::sql::timer_from_row).collect()
            }

            async fn notifications(
                &self,
                tenant: &TenantId,
                before: Option<&str>,
                limit: u32,
            ) -> Result<Vec<crate::automation::Notification>> {
                    let sql = format!(
                    "SELECT {} FROM notifications WHERE tenant_id = $1 AND ($2 IS NULL OR id < $2) \
                     ORDER BY id DESC LIMIT $3",
                    crate::automation::sql::NOTIFICATION_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant.as_str())
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&self.reads)
                    .await?;
                rows.iter().map(crate::automation::sql::notification_from_row).collect()
            }
        }
        };
    };
}
pub(crate) use impl_automations;
