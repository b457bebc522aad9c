//! The SQL both backends share, written once. SQLite (through sqlx) and
//! PostgreSQL both accept `$1`-style parameters, so the statements are the
//! same text; what differs per backend — how a transaction begins, the
//! tenant lock, the cross-node announcement — is passed in as SQL too.
//!
//! The macros expand to trait impls for a backend's concrete types; sqlx's
//! executor bounds make a generic impl far harder to read than this.

use crate::error::{Result, StoreError};

pub(crate) fn json_text(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|_| StoreError::corrupt("json"))
}

pub(crate) fn parse_object(text: &str) -> Result<eventflow_model::Object> {
    serde_json::from_str(text).map_err(|_| StoreError::corrupt("record body"))
}

pub(crate) fn parse_event(text: &str) -> Result<eventflow_model::Event> {
    serde_json::from_str(text).map_err(|_| StoreError::corrupt("event body"))
}

/// `RecordTx` and `WriteConn` for a struct with a `conn` field holding the
/// backend's connection.
macro_rules! impl_write_conn {
    ($conn:ty, begin: $begin:expr, lock_tenant: $lock_tenant:expr, announce: $announce:expr, announce_keys: $announce_keys:expr $(,)?) => {
        const _: () = {
            use async_trait::async_trait;
            use eventflow_model::{Event, Object, ResourceType};
            use serde_json::Value;
            use sqlx::{Executor, Row};

            use crate::error::{Result, StoreError};
            use crate::ops::{RecordTx, StoredRecord, StoredResponse, WriteConn, reference_columns};
            use crate::sql::json_text;
            use crate::types::AuditEntry;

        impl $conn {
            /// A record as stored, refused when over the record size limit.
            fn record_text(&self, data: &Object) -> Result<String> {
                let text = json_text(data)?;
                let max = self.fanout.max_record_bytes;
                if text.len() > max {
                    return Err(StoreError::TooLarge(format!(
                        "the record would be {} bytes; a record may be at most {max} bytes (limits.max_record_bytes)",
                        text.len()
                    )));
                }
                Ok(text)
            }
        }

        #[async_trait]
        impl RecordTx for $conn {
            async fn load(&mut self, tenant: &str, id: &str) -> Result<Option<StoredRecord>> {
                let row =
                    sqlx::query("SELECT resource_type, data FROM records WHERE tenant_id = $1 AND id = $2")
                        .bind(tenant)
                        .bind(id)
                        .fetch_optional(&mut self.conn)
                        .await?;
                let Some(row) = row else { return Ok(None) };
                let rt: ResourceType = row
                    .get::<&str, _>(0)
                    .parse()
                    .map_err(|_| StoreError::corrupt("resource type"))?;
                let data = serde_json::from_str(row.get::<&str, _>(1))
                    .map_err(|_| StoreError::corrupt("record body"))?;
                Ok(Some(StoredRecord { rt, data }))
            }

            async fn insert_record(&mut self, tenant: &str, rt: ResourceType, data: &Object) -> Result<()> {
                let [patient, practitioner, encounter, appointment] = reference_columns(data);
                sqlx::query(
                    "INSERT INTO records (tenant_id, id, resource_type, version, patient_id, practitioner_id, \
                     encounter_id, appointment_id, status, updated_at, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(tenant)
                .bind(data.get("id").and_then(Value::as_str))
                .bind(rt.name())
                .bind(data.get("version").and_then(Value::as_i64))
                .bind(patient)
                .bind(practitioner)
                .bind(encounter)
                .bind(appointment)
                .bind(data.get("status").and_then(Value::as_str))
                .bind(data.get("updatedAt").and_then(Value::as_str))
                .bind(self.record_text(data)?)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }

            async fn update_record(
                &mut self,
                tenant: &str,
                _rt: ResourceType,
                data: &Object,
            ) -> Result<()> {
                let [patient, practitioner, encounter, appointment] = reference_columns(data);
                sqlx::query(
                    "UPDATE records SET version = $1, patient_id = $2, practitioner_id = $3, encounter_id = $4, \
                     appointment_id = $5, status = $6, updated_at = $7, data = $8 WHERE tenant_id = $9 AND id = $10",
                )
                .bind(data.get("version").and_then(Value::as_i64))
                .bind(patient)
                .bind(practitioner)
                .bind(encounter)
                .bind(appointment)
                .bind(data.get("status").and_then(Value::as_str))
                .bind(data.get("updatedAt").and_then(Value::as_str))
                .bind(self.record_text(data)?)
                .bind(tenant)
                .bind(data.get("id").and_then(Value::as_str))
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }

            async fn delete_record(&mut self, tenant: &str, id: &str) -> Result<()> {
                sqlx::query("DELETE FROM records WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant)
                    .bind(id)
                    .execute(&mut self.conn)
                    .await?;
                Ok(())
            }

            async fn referencing_types(&mut self, tenant: &str, id: &str) -> Result<Vec<String>> {
                let rows = sqlx::query(
                    "SELECT DISTINCT resource_type FROM records WHERE tenant_id = $1 AND \
                     (patient_id = $2 OR practitioner_id = $2 OR encounter_id = $2 OR appointment_id = $2) \
                     ORDER BY resource_type",
                )
                .bind(tenant)
                .bind(id)
                .fetch_all(&mut self.conn)
                .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            }

            async fn next_sequence(&mut self, tenant: &str) -> Result<i64> {
                let row = sqlx::query(
                    "UPDATE tenants SET last_sequence = last_sequence + 1 WHERE id = $1 RETURNING last_sequence",
                )
                .bind(tenant)
                .fetch_optional(&mut self.conn)
                .await?;
                row.map(|r| r.get(0))
                    .ok_or_else(|| StoreError::corrupt("the tenant row is missing"))
            }

            async fn fan_out(&mut self, event: &Event) -> Result<()> {
                crate::outbox::fan_out(self, event).await
            }

            async fn insert_event(&mut self, event: &Event, writer: Option<&str>) -> Result<()> {
                sqlx::query(
                    "INSERT INTO events (tenant_id, sequence, id, type, resource_type, resource_id, created_at, body, written_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&event.tenant_id)
                .bind(event.sequence)
                .bind(&event.id)
                .bind(&event.event_type)
                .bind(&event.resource.resource_type)
                .bind(&event.resource.id)
                .bind(&event.created_at)
                .bind(json_text(event)?)
                .bind(writer)
                .execute(&mut self.conn)
                .await?;
                self.fanout.note_event(&event.tenant_id, event.sequence, &event.event_type);
                Ok(())
            }

            async fn insert_audit(&mut self, e: &AuditEntry) -> Result<()> {
                sqlx::query(
                    "INSERT INTO audit_log (id, tenant_id, at, key_id, action, resource_type, resource_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&e.id)
                .bind(&e.tenant)
                .bind(&e.at)
                .bind(&e.key_id)
                .bind(&e.action)
                .bind(&e.resource_type)
                .bind(&e.resource_id)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }

            async fn idempotency_get(&mut self, tenant: &str, key: &str) -> Result<Option<StoredResponse>> {
                let row = sqlx::query(
                    "SELECT fingerprint, status, body, created_at FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
                )
                .bind(tenant)
                .bind(key)
                .fetch_optional(&mut self.conn)
                .await?;
                let Some(row) = row else { return Ok(None) };
                Ok(Some(StoredResponse {
                    fingerprint: row.get(0),
                    status: row.get::<i64, _>(1) as u16,
                    body: serde_json::from_str(row.get::<&str, _>(2))
                        .map_err(|_| StoreError::corrupt("idempotent response"))?,
                    created_at: row.get(3),
                }))
            }

            async fn idempotency_put(&mut self, tenant: &str, key: &str, r: &StoredResponse) -> Result<()> {
                sqlx::query(
                    "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, status, body, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, key) DO UPDATE SET \
                     fingerprint = excluded.fingerprint, status = excluded.status, body = excluded.body, \
                     created_at = excluded.created_at",
                )
                .bind(tenant)
                .bind(key)
                .bind(&r.fingerprint)
                .bind(i64::from(r.status))
                .bind(json_text(&r.body)?)
                .bind(&r.created_at)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }
        }

        #[async_trait]
        impl WriteConn for $conn {
            async fn begin(&mut self) -> Result<()> {
                if let Err(e) = self.conn.execute($begin).await {
                    // The connection may have been lost (a database restart,
                    // a network blip): open a new one and try once more.
                    tracing::warn!(error = %e, "write connection failed; reconnecting");
                    self.reconnect().await?;
                    self.conn.execute($begin).await?;
                }
                Ok(())
            }
            async fn execute(&mut self, sql: &'static str) -> Result<()> {
                self.conn.execute(sql).await?;
                Ok(())
            }
            async fn reconnect(&mut self) -> Result<()> {
                self.reopen().await
            }
            async fn lock_tenant(&mut self, tenant: &str) -> Result<()> {
                let sql: &'static str = $lock_tenant;
                let row = sqlx::query(sql).bind(tenant).fetch_optional(&mut self.conn).await?;
                if let Some(row) = row {
                    // The endpoints this writer fans out to must be the
                    // committed ones: reload when another change (here or on
                    // another node) bumped the version.
                    let version: i64 = row.get(0);
                    if !self.fanout.current(tenant, version) {
                        let endpoints = crate::queue::QueueConn::load_endpoints(self, tenant).await?;
                        self.fanout.load(tenant, version, endpoints);
                    }
                }
                Ok(())
            }
            async fn announce(&mut self, tenant: &str, sequence: i64) -> Result<()> {
                let sql: Option<&'static str> = $announce;
                if let Some(sql) = sql {
                    sqlx::query(sql)
                        .bind(format!("{tenant} {sequence}"))
                        .execute(&mut self.conn)
                        .await?;
                }
                Ok(())
            }
            async fn count_tenants(&mut self) -> Result<i64> {
                Ok(sqlx::query("SELECT count(*) FROM tenants")
                    .fetch_one(&mut self.conn)
                    .await?
                    .get(0))
            }
            async fn tenant_name_taken(&mut self, name: &str) -> Result<bool> {
                Ok(sqlx::query("SELECT 1 FROM tenants WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut self.conn)
                    .await?
                    .is_some())
            }
            async fn insert_tenant(&mut self, id: &str, name: &str, now: &str) -> Result<bool> {
                // ON CONFLICT: two nodes bootstrapping one new database at
                // once must not fail; the second learns the name is taken.
                let done = sqlx::query(
                    "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(id)
                .bind(name)
                .bind(now)
                .execute(&mut self.conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }
            async fn insert_api_key(&mut self, id: &str, tenant: &str, key_hash: &str, name: &str, now: &str) -> Result<()> {
                sqlx::query("INSERT INTO api_keys (id, tenant_id, key_hash, created_at, name) VALUES ($1, $2, $3, $4, $5)")
                    .bind(id)
                    .bind(tenant)
                    .bind(key_hash)
                    .bind(now)
                    .bind(name)
                    .execute(&mut self.conn)
                    .await?;
                Ok(())
            }
            async fn count_live_keys(&mut self, tenant: &str) -> Result<i64> {
                Ok(sqlx::query("SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL")
                    .bind(tenant)
                    .fetch_one(&mut self.conn)
                    .await?
                    .get(0))
            }
            async fn insert_scoped_key(&mut self, tenant: &str, key: &crate::keys::ApiKey, key_hash: &str) -> Result<()> {
                sqlx::query(
                    "INSERT INTO api_keys (id, tenant_id, key_hash, created_at, name, scopes, prefix, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&key.id)
                .bind(tenant)
                .bind(key_hash)
                .bind(&key.created_at)
                .bind(&key.name)
                .bind(json_text(&key.scopes)?)
                .bind(&key.prefix)
                .bind(&key.expires_at)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }
            async fn load_key(&mut self, tenant: &str, id: &str) -> Result<Option<crate::keys::ApiKey>> {
                let row = sqlx::query(sqlx::AssertSqlSafe(crate::keys::live_key_sql()))
                    .bind(tenant)
                    .bind(id)
                    .fetch_optional(&mut self.conn)
                    .await?;
                row.as_ref().map(crate::keys::key_from_row).transpose()
            }
            async fn rotate_key(
                &mut self,
                tenant: &str,
                id: &str,
                secret: &crate::keys::Secret,
                grace_until: Option<&str>,
            ) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE api_keys SET \
                     previous_hash = CASE WHEN $4 IS NULL THEN NULL ELSE key_hash END, \
                     previous_until = $4, key_hash = $3, prefix = $5 \
                     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
                )
                .bind(tenant)
                .bind(id)
                .bind(&secret.hash)
                .bind(grace_until)
                .bind(&secret.prefix)
                .execute(&mut self.conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }
            async fn revoke_key(&mut self, tenant: &str, id: &str, now: &str) -> Result<()> {
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = $3, previous_hash = NULL, previous_until = NULL \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant)
                .bind(id)
                .bind(now)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }
            async fn touch_key(&mut self, id: &str, at: &str) -> Result<()> {
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 \
                     AND (last_used_at IS NULL OR last_used_at < $2)",
                )
                .bind(id)
                .bind(at)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }
            async fn announce_keys(&mut self) -> Result<()> {
                let sql: Option<&'static str> = $announce_keys;
                if let Some(sql) = sql {
                    sqlx::query(sql).execute(&mut self.conn).await?;
                }
                Ok(())
            }
            async fn purge_events(&mut self, events_before: &str, limit: i64) -> Result<u64> {
                let ids: Vec<String> = sqlx::query(
                    "SELECT id FROM events WHERE created_at < $1 ORDER BY created_at LIMIT $2",
                )
                .bind(events_before)
                .bind(limit)
                .fetch_all(&mut self.conn)
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
                if ids.is_empty() {
                    return Ok(0);
                }
                // A delivery may hold up to 4 KiB of each response (which may
                // echo patient data): it goes with its event.
                for (table, column) in [("deliveries", "event_id"), ("events", "id")] {
                    for chunk in ids.chunks(500) {
                        let mut qb = sqlx::QueryBuilder::new(format!("DELETE FROM {table} WHERE {column} IN ("));
                        let mut list = qb.separated(", ");
                        for id in chunk {
                            list.push_bind(id.as_str());
                        }
                        qb.push(")");
                        qb.build().execute(&mut self.conn).await?;
                    }
                }
                Ok(ids.len() as u64)
            }

            async fn purge(&mut self, events_before: &str, keys_before: &str, quota_before: &str) -> Result<()> {
                for (sql, before) in [
                    ("DELETE FROM idempotency_keys WHERE created_at < $1", keys_before),
                    // Automations keep their record as long as the events that
                    // started them: finished runs and outbox entries. Pending
                    // runs and timers stay, whatever their age.
                    ("DELETE FROM workflow_runs WHERE status <> 'pending' AND finished_at < $1", events_before),
                    ("DELETE FROM notifications WHERE created_at < $1", events_before),
                    ("DELETE FROM provider_quota_counts WHERE day < $1", quota_before),
                    ("DELETE FROM provider_quota_uses WHERE day < $1", quota_before),
                ] {
                    sqlx::query(sql).bind(before).execute(&mut self.conn).await?;
                }
                // A write's chain depth is needed until the engine has
                // matched its event.
                sqlx::query(
                    "DELETE FROM workflow_write_depths WHERE sequence <= \
                     (SELECT automation_cursor FROM tenants WHERE tenants.id = workflow_write_depths.tenant_id)",
                )
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }
        }
        };
    };
}

/// `Store` for a struct with `writer`, `reads` (the backend's pool) and
/// `notifier` fields.
macro_rules! impl_store {
    ($store:ty, $db:ty, $rows:path, $auto_rows:path) => {
        const _: () = {
            use async_trait::async_trait;
            use eventflow_model::{Event, Object, ResourceType};
            use sqlx::Row;

            use crate::error::Result;
            use crate::notify::Notifier;
            use crate::query;
            use crate::sql::{parse_event, parse_object};
            use crate::types::*;
            use crate::delivery::*;

        #[async_trait]
        impl crate::Store for $store {
            async fn write(&self, req: WriteRequest) -> Result<WriteOutcome> {
                self.writer.write(req).await
            }

            async fn get_record(&self, tenant: &str, rt: ResourceType, id: &str) -> Result<Option<Object>> {
                let row = sqlx::query(
                    "SELECT data FROM records WHERE tenant_id = $1 AND id = $2 AND resource_type = $3",
                )
                .bind(tenant)
                .bind(id)
                .bind(rt.name())
                .fetch_optional(&self.reads)
                .await?;
                row.map(|r| parse_object(r.get::<&str, _>(0))).transpose()
            }

            async fn list_records(&self, tenant: &str, rt: ResourceType, q: &ListQuery) -> Result<Page> {
                use futures::TryStreamExt;
                let mut query = query::list_records::<$db>(tenant, rt, q);
                let mut rows = query.build().fetch(&self.reads);
                let max_bytes = q.max_bytes.unwrap_or(usize::MAX);
                let mut data = Vec::new();
                let mut last_id = None;
                let mut bytes = 0usize;
                let mut more = false;
                while let Some(row) = rows.try_next().await? {
                    let body = row.get::<&str, _>(1);
                    bytes = bytes.saturating_add(body.len());
                    // The row past the limit only says there is more.
                    if data.len() == q.limit as usize || (bytes > max_bytes && !data.is_empty()) {
                        more = true;
                        break;
                    }
                    last_id = Some(row.get::<String, _>(0));
                    data.push(parse_object(body)?);
                }
                let next_cursor = if more { last_id } else { None };
                Ok(Page { data, next_cursor })
            }

            async fn records_referencing(
                &self,
                tenant: &str,
                rt: ResourceType,
                field: &str,
                id: &str,
                limit: u32,
            ) -> Result<Vec<Object>> {
                let Some(column) = query::reference_column(field) else {
                    return Ok(Vec::new());
                };
                let rows = query::records_referencing::<$db>(tenant, rt, column, id, limit)
                    .build()
                    .fetch_all(&self.reads)
                    .await?;
                rows.iter().map(|r| parse_object(r.get::<&str, _>(0))).collect()
            }

            async fn events(&self, tenant: &str, q: &EventQuery) -> Result<Vec<Event>> {
                Ok(self.events_with_writer(tenant, q).await?.into_iter().map(|(e, _)| e).collect())
            }

            async fn events_with_writer(&self, tenant: &str, q: &EventQuery) -> Result<Vec<(Event, Option<String>)>> {
                use futures::TryStreamExt;
                let mut query = query::events::<$db>(tenant, q);
                let mut rows = query.build().fetch(&self.reads);
                let mut page = Vec::new();
                let mut bytes = 0usize;
                while let Some(r) = rows.try_next().await? {
                    let body = r.get::<&str, _>(0);
                    bytes += body.len();
                    if bytes > q.max_bytes && !page.is_empty() {
                        break;
                    }
                    page.push((parse_event(body)?, r.get::<Option<String>, _>(1)));
                }
                Ok(page)
            }

            async fn event_by_id(&self, tenant: &str, id: &str) -> Result<Option<Event>> {
                let row = sqlx::query("SELECT body FROM events WHERE id = $1 AND tenant_id = $2")
                    .bind(id)
                    .bind(tenant)
                    .fetch_optional(&self.reads)
                    .await?;
                row.map(|r| parse_event(r.get::<&str, _>(0))).transpose()
            }

            async fn latest_sequence(&self, tenant: &str) -> Result<i64> {
                let row = sqlx::query("SELECT last_sequence FROM tenants WHERE id = $1")
                    .bind(tenant)
                    .fetch_optional(&self.reads)
                    .await?;
                Ok(row.map(|r| r.get::<i64, _>(0)).unwrap_or(0))
            }

            async fn record_reads(&self, entries: Vec<AuditEntry>) -> Result<()> {
                self.writer.audit(entries).await
            }

            async fn audit_log(&self, tenant: &str, q: &AuditQuery) -> Result<AuditPage> {
                let rows = query::audit_log::<$db>(tenant, q)
                    .build()
                    .fetch_all(&self.reads)
                    .await?;
                let mut data: Vec<AuditEntry> = rows
                    .iter()
                    .map(|r| AuditEntry {
                        id: r.get(0),
                        tenant: tenant.to_string(),
                        at: r.get(1),
                        key_id: r.get(2),
                        action: r.get(3),
                        resource_type: r.get(4),
                        resource_id: r.get(5),
                    })
                    .collect();
                let next_cursor = if data.len() > q.limit as usize {
                    data.truncate(q.limit as usize);
                    data.last().map(|e| e.id.clone())
                } else {
                    None
                };
                Ok(AuditPage { data, next_cursor })
            }

            async fn authenticate(&self, key_hash: &str) -> Result<Option<crate::keys::Principal>> {
                let row = sqlx::query(
                    "SELECT tenant_id, id, scopes, expires_at, last_used_at, previous_until, \
                     key_hash = $1 FROM api_keys \
                     WHERE (key_hash = $1 OR previous_hash = $1) AND revoked_at IS NULL",
                )
                .bind(key_hash)
                .fetch_optional(&self.reads)
                .await?;
                let Some(r) = row else { return Ok(None) };
                let scopes: Vec<String> = serde_json::from_str(r.try_get::<&str, _>(2)?)
                    .map_err(|_| crate::error::StoreError::corrupt("key scopes"))?;
                let scopes = eventflow_model::scope::Scopes::parse(scopes.iter().map(String::as_str))
                    .map_err(|_| crate::error::StoreError::corrupt("key scopes"))?;
                let stamp = |i: usize| -> Result<Option<jiff::Timestamp>> {
                    r.try_get::<Option<String>, _>(i)?
                        .map(|s| s.parse().map_err(|_| crate::error::StoreError::corrupt("key time")))
                        .transpose()
                };
                let expires = stamp(3)?;
                let current: bool = r.try_get(6)?;
                let grace = if current { None } else { stamp(5)?.or(Some(jiff::Timestamp::MIN)) };
                let valid_until = match (expires, grace) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                Ok(Some(crate::keys::Principal {
                    tenant_id: r.try_get(0)?,
                    key_id: r.try_get(1)?,
                    key_hash: key_hash.to_string(),
                    scopes,
                    valid_until,
                    last_used_at: stamp(4)?,
                    keys_epoch: 0,
                }))
            }

            async fn change_key(&self, change: crate::keys::KeyChange) -> Result<Option<crate::keys::ApiKey>> {
                self.writer.key(change).await
            }

            async fn api_keys(&self, tenant: &str) -> Result<Vec<crate::keys::ApiKey>> {
                let sql = format!(
                    "SELECT {} FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL ORDER BY id",
                    crate::keys::KEY_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .fetch_all(&self.reads)
                    .await?;
                rows.iter().map(crate::keys::key_from_row).collect()
            }

            async fn api_key(&self, tenant: &str, id: &str) -> Result<Option<crate::keys::ApiKey>> {
                let row = sqlx::query(sqlx::AssertSqlSafe(crate::keys::live_key_sql()))
                    .bind(tenant)
                    .bind(id)
                    .fetch_optional(&self.reads)
                    .await?;
                row.as_ref().map(crate::keys::key_from_row).transpose()
            }

            async fn create_tenant(
                &self,
                name: &str,
                key_hash: &str,
                only_if_no_tenants: bool,
            ) -> Result<Option<NewTenant>> {
                self.writer
                    .create_tenant(name, key_hash, only_if_no_tenants)
                    .await
            }

            async fn purge(&self, events_before: jiff::Timestamp) -> Result<u64> {
                self.writer.purge(events_before).await
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.reads).await?;
                // The writer's connection too: without it nothing can change.
                self.writer.ping().await
            }

            fn notifier(&self) -> &Notifier {
                &self.notifier
            }

            async fn change_endpoint(&self, change: crate::EndpointChange) -> Result<Option<EndpointRow>> {
                self.writer.endpoint(change).await
            }

            async fn endpoint(&self, tenant: &str, id: &str) -> Result<Option<EndpointRow>> {
                use $rows as rows;
                let sql = format!(
                    "SELECT {} FROM endpoints WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
                    crate::queue::ENDPOINT_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .bind(id)
                    .fetch_optional(&self.reads)
                    .await?;
                row.as_ref().map(rows::endpoint_from_row).transpose()
            }

            async fn endpoints(&self, tenant: &str) -> Result<Vec<EndpointRow>> {
                use $rows as rows;
                let sql = format!(
                    "SELECT {} FROM endpoints WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id LIMIT 1000",
                    crate::queue::ENDPOINT_COLUMNS
                );
                let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .fetch_all(&self.reads)
                    .await?;
                found.iter().map(rows::endpoint_from_row).collect()
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

            async fn release_deliveries(&self, ids: Vec<String>, next_at: jiff::Timestamp) -> Result<()> {
                self.writer.release(ids, next_at).await
            }

            async fn retry_delivery(&self, tenant: &str, id: &str) -> Result<Option<Delivery>> {
                self.writer.retry(tenant, id).await
            }

            async fn replay(&self, tenant: &str, endpoint_id: &str, from: ReplayFrom) -> Result<Option<Replay>> {
                self.writer.replay(tenant, endpoint_id, from).await
            }

            async fn replay_chunk(&self, tenant: &str, id: &str) -> Result<Option<Replay>> {
                self.writer.replay_chunk(tenant, id).await
            }

            async fn get_replay(&self, tenant: &str, endpoint_id: &str, id: &str) -> Result<Option<Replay>> {
                use $rows as rows;
                let sql = format!(
                    "SELECT {} FROM replays WHERE id = $1 AND tenant_id = $2 AND endpoint_id = $3",
                    crate::queue::REPLAY_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(tenant)
                    .bind(endpoint_id)
                    .fetch_optional(&self.reads)
                    .await?;
                Ok(row.as_ref().map(rows::replay_from_row))
            }

            async fn running_replays(&self, limit: i64) -> Result<Vec<(String, String)>> {
                let found = sqlx::query(
                    "SELECT tenant_id, id FROM replays WHERE status = 'running' ORDER BY id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.reads)
                .await?;
                Ok(found.iter().map(|r| (r.get(0), r.get(1))).collect())
            }

            async fn delivery(&self, tenant: &str, id: &str) -> Result<Option<Delivery>> {
                use $rows as rows;
                let sql = format!(
                    "SELECT {} FROM deliveries d WHERE d.id = $1 AND d.tenant_id = $2",
                    crate::queue::DELIVERY_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(tenant)
                    .fetch_optional(&self.reads)
                    .await?;
                row.as_ref().map(rows::delivery_from_row).transpose()
            }

            async fn event_deliveries(&self, tenant: &str, event_id: &str) -> Result<Vec<Delivery>> {
                use $rows as rows;
                let sql = format!(
                    "SELECT {} FROM deliveries d WHERE d.event_id = $1 AND d.tenant_id = $2 ORDER BY d.id LIMIT 10000",
                    crate::queue::DELIVERY_COLUMNS
                );
                let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(event_id)
                    .bind(tenant)
                    .fetch_all(&self.reads)
                    .await?;
                found.iter().map(rows::delivery_from_row).collect()
            }

            async fn deliveries(
                &self,
                tenant: &str,
                endpoint_id: &str,
                q: &DeliveryQuery,
            ) -> Result<(Vec<Delivery>, Option<String>)> {
                use $rows as rows;
                let sql = format!(
                    "SELECT {} FROM deliveries d WHERE d.tenant_id = $1 AND d.endpoint_id = $2 \
                     AND ($3 IS NULL OR d.status = $3) AND ($4 IS NULL OR d.id < $4) ORDER BY d.id DESC LIMIT $5",
                    crate::queue::DELIVERY_COLUMNS
                );
                let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .bind(endpoint_id)
                    .bind(q.status.map(|s| s.as_str()))
                    .bind(q.cursor.as_deref())
                    .bind(i64::from(q.limit) + 1)
                    .fetch_all(&self.reads)
                    .await?;
                let mut data: Vec<Delivery> = found
                    .iter()
                    .map(rows::delivery_from_row)
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
                tenant: &str,
                endpoint_id: &str,
                after: i64,
                limit: u32,
            ) -> Result<Vec<(i64, Event)>> {
                let found = sqlx::query(
                    "SELECT d.endpoint_sequence, e.body FROM deliveries d JOIN events e \
                     ON e.tenant_id = d.tenant_id AND e.sequence = d.event_sequence \
                     WHERE d.tenant_id = $1 AND d.endpoint_id = $2 AND d.endpoint_sequence > $3 \
                     ORDER BY d.endpoint_sequence LIMIT $4",
                )
                .bind(tenant)
                .bind(endpoint_id)
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
                tenant: &str,
                patient_id: &str,
                since: Option<&str>,
                limit: u32,
            ) -> Result<Vec<Disclosure>> {
                let found = sqlx::query(
                    "SELECT d.id, d.endpoint_id, e.config, d.event_id, d.event_type, d.succeeded_at \
                     FROM deliveries d LEFT JOIN endpoints e ON e.id = d.endpoint_id \
                     WHERE d.tenant_id = $1 AND d.patient_id = $2 AND d.succeeded_at IS NOT NULL \
                     AND ($3 IS NULL OR d.succeeded_at >= $3) ORDER BY d.succeeded_at, d.id LIMIT $4",
                )
                .bind(tenant)
                .bind(patient_id)
                .bind(since)
                .bind(i64::from(limit))
                .fetch_all(&self.reads)
                .await?;
                Ok(found
                    .iter()
                    .map(|r| Disclosure {
                        delivery_id: r.get(0),
                        endpoint_id: r.get(1),
                        endpoint_url: r
                            .get::<Option<&str>, _>(2)
                            .and_then(|c| serde_json::from_str::<crate::delivery::EndpointConfig>(c).ok())
                            .map(|c| c.url),
                        event_id: r.get(3),
                        event_type: r.get(4),
                        patient_id: patient_id.to_string(),
                        at: r.get::<Option<String>, _>(5).unwrap_or_default(),
                    })
                    .collect())
            }

            async fn next_due(&self) -> Result<Option<String>> {
                let row = sqlx::query("SELECT MIN(next_at) FROM deliveries WHERE status = 'pending'")
                    .fetch_one(&self.reads)
                    .await?;
                Ok(row.get::<Option<String>, _>(0).filter(|n| n.as_str() != crate::queue::PAUSED))
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

            async fn tenant_ids(&self) -> Result<Vec<String>> {
                let rows = sqlx::query("SELECT id FROM tenants ORDER BY id")
                    .fetch_all(&self.reads)
                    .await?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            }

            async fn automation_cursor(&self, tenant: &str) -> Result<i64> {
                let row = sqlx::query("SELECT automation_cursor FROM tenants WHERE id = $1")
                    .bind(tenant)
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

            async fn begin_step(&self, run_id: &str, index: i64) -> Result<bool> {
                self.writer.begin_step(run_id, index).await
            }

            async fn condition_errors(&self, tenant: &str) -> Result<Vec<crate::automation::ConditionError>> {
                let rows = sqlx::query(
                    "SELECT workflow, condition_source, message, event_id, at FROM workflow_condition_errors \
                     WHERE tenant_id = $1 ORDER BY workflow LIMIT 10000",
                )
                .bind(tenant)
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

            async fn write_depths(&self, tenant: &str, from: i64, to: i64) -> Result<Vec<(i64, i64)>> {
                let rows = sqlx::query(
                    "SELECT sequence, chain_depth FROM workflow_write_depths \
                     WHERE tenant_id = $1 AND sequence >= $2 AND sequence <= $3",
                )
                .bind(tenant)
                .bind(from)
                .bind(to)
                .fetch_all(&self.reads)
                .await?;
                Ok(rows.iter().map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1))).collect())
            }

            async fn next_automation_due(&self) -> Result<Option<String>> {
                let row = sqlx::query(
                    "SELECT (SELECT MIN(next_at) FROM workflow_runs WHERE status = 'pending'), \
                     (SELECT MIN(fire_at) FROM timers)",
                )
                .fetch_one(&self.reads)
                .await?;
                let a: Option<String> = row.get(0);
                let b: Option<String> = row.get(1);
                Ok(match (a, b) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                })
            }

            async fn workflow_run(&self, tenant: &str, id: &str) -> Result<Option<crate::automation::Run>> {
                use $auto_rows as auto_rows;
                let sql = format!(
                    "SELECT {} FROM workflow_runs WHERE tenant_id = $1 AND id = $2",
                    crate::automation::RUN_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .bind(id)
                    .fetch_optional(&self.reads)
                    .await?;
                row.as_ref().map(auto_rows::run_from_row).transpose()
            }

            async fn workflow_runs(&self, tenant: &str, q: &crate::automation::RunQuery) -> Result<Vec<crate::automation::Run>> {
                use $auto_rows as auto_rows;
                let sql = format!(
                    "SELECT {} FROM workflow_runs WHERE tenant_id = $1 AND ($2 IS NULL OR workflow = $2) \
                     AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR event_id = $4) AND ($5 IS NULL OR id < $5) \
                     ORDER BY id DESC LIMIT $6",
                    crate::automation::RUN_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .bind(&q.workflow)
                    .bind(&q.status)
                    .bind(&q.event_id)
                    .bind(&q.before)
                    .bind(i64::from(q.limit))
                    .fetch_all(&self.reads)
                    .await?;
                rows.iter().map(auto_rows::run_from_row).collect()
            }

            async fn timers(&self, tenant: &str, key: Option<&str>, limit: u32) -> Result<Vec<crate::automation::Timer>> {
                use $auto_rows as auto_rows;
                let sql = format!(
                    "SELECT {} FROM timers WHERE tenant_id = $1 AND ($2 IS NULL OR timer_key = $2) \
                     ORDER BY fire_at, timer_key LIMIT $3",
                    crate::automation::TIMER_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .bind(key)
                    .bind(i64::from(limit))
                    .fetch_all(&self.reads)
                    .await?;
                rows.iter().map(auto_rows::timer_from_row).collect()
            }

            async fn notifications(
                &self,
                tenant: &str,
                before: Option<&str>,
                limit: u32,
            ) -> Result<Vec<crate::automation::Notification>> {
                use $auto_rows as auto_rows;
                let sql = format!(
                    "SELECT {} FROM notifications WHERE tenant_id = $1 AND ($2 IS NULL OR id < $2) \
                     ORDER BY id DESC LIMIT $3",
                    crate::automation::NOTIFICATION_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&self.reads)
                    .await?;
                Ok(rows.iter().map(auto_rows::notification_from_row).collect())
            }
        }
        };
    };
}

pub(crate) use {impl_store, impl_write_conn};
