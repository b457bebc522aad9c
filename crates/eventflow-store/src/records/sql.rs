//! The records' SQL, once for both backends: the writer's side
//! ([`RecordTx`](crate::records::RecordTx)) and the reads of records, events
//! and audit entries. SQLite (through sqlx) and PostgreSQL both accept
//! `$1`-style parameters, so the statements are the same text; what differs
//! (the tenant lock) is passed in as SQL.
//!
//! The macros expand to impls for a backend's concrete connection and store
//! types: sqlx's executor bounds make one generic impl far harder to read.

/// [`RecordTx`](crate::records::RecordTx) for a backend's write connection (a
/// struct with `conn` and `fanout` fields).
/// Audit entries one insert writes at most (seven values each).
pub(crate) const AUDIT_ROWS: usize = 500;

macro_rules! impl_record_tx {
    ($conn:ty, lock_tenant: $lock_tenant:expr $(,)?) => {
        const _: () = {
            use async_trait::async_trait;
            use eventflow_model::{Event, Object, ResourceType};
            use serde_json::Value;
            use sqlx::Row;

            use crate::codec::json_text;

            use crate::error::{Result, StoreError};


            use crate::records::*;
            use crate::records::rules::{date_columns, reference_columns};

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
                let (date_start, date_end) = date_columns(rt, data);
                sqlx::query(
                    "INSERT INTO records (tenant_id, id, resource_type, version, patient_id, practitioner_id, \
                     encounter_id, appointment_id, status, updated_at, data, mrn, date_at, date_end) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
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
                .bind(data.get("mrn").and_then(Value::as_str))
                .bind(date_start)
                .bind(date_end)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }

            async fn update_record(
                &mut self,
                tenant: &str,
                rt: ResourceType,
                data: &Object,
            ) -> Result<()> {
                let [patient, practitioner, encounter, appointment] = reference_columns(data);
                let (date_start, date_end) = date_columns(rt, data);
                sqlx::query(
                    "UPDATE records SET version = $1, patient_id = $2, practitioner_id = $3, encounter_id = $4, \
                     appointment_id = $5, status = $6, updated_at = $7, data = $8, mrn = $11, date_at = $12, date_end = $13 \
                     WHERE tenant_id = $9 AND id = $10",
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
                .bind(data.get("mrn").and_then(Value::as_str))
                .bind(date_start)
                .bind(date_end)
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

            async fn next_sequence(
                &mut self,
                tenant: &str,
            ) -> Result<crate::records::rules::Numbered> {
                let missing = || StoreError::corrupt("the tenant row is missing");
                let row = sqlx::query(
                    "UPDATE tenants SET last_sequence = last_sequence + 1 WHERE id = $1 \
                     RETURNING last_sequence, org_id",
                )
                .bind(tenant)
                .fetch_optional(&mut self.conn)
                .await?
                .ok_or_else(missing)?;
                let sequence: i64 = row.try_get(0)?;
                let org: Option<String> = row.try_get(1)?;
                let network = match org {
                    // An organisation's own events: its sequence is the network's.
                    Some(org) if org == tenant => Some((org, sequence)),
                    // A member clinic's: the organisation's row is locked
                    // too, to commit, so the network's log commits in order.
                    Some(org) => {
                        let row = sqlx::query(
                            "UPDATE tenants SET last_sequence = last_sequence + 1 WHERE id = $1 \
                             RETURNING last_sequence, endpoints_version",
                        )
                        .bind(&org)
                        .fetch_optional(&mut self.conn)
                        .await?
                        .ok_or_else(missing)?;
                        let n: i64 = row.try_get(0)?;
                        // The organisation's endpoints the event fans out
                        // to are the committed ones, read under its lock
                        // (as `lock_tenant` does for a tenant's).
                        let version: i64 = row.try_get(1)?;
                        if !self.fanout.current(&org, version) {
                            let endpoints = crate::delivery::sql::QueueConn::load_endpoints(self, &org).await?;
                            self.fanout.load(&org, version, endpoints);
                        }
                        Some((org, n))
                    }
                    None => None,
                };
                Ok(crate::records::rules::Numbered { sequence, network })
            }

            async fn fan_out(&mut self, event: &Event, org: Option<&str>) -> Result<()> {
                crate::delivery::rules::fan_out(self, event, org).await
            }

            async fn insert_event(
                &mut self,
                event: &Event,
                writer: Option<&crate::records::Actor>,
                org: Option<&str>,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO events (tenant_id, sequence, id, type, resource_type, resource_id, created_at, body, written_by, topics, org_id, network_sequence) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(&event.tenant_id)
                .bind(event.sequence)
                .bind(&event.id)
                .bind(&event.event_type)
                .bind(&event.resource.resource_type)
                .bind(&event.resource.id)
                .bind(&event.created_at)
                .bind(json_text(event)?)
                .bind(writer.map(ToString::to_string))
                .bind(crate::records::query::topics_column(&event.topics))
                .bind(org)
                .bind(event.network_sequence)
                .execute(&mut self.conn)
                .await?;
                self.fanout.note_event(&event.tenant_id, event.sequence, &event.event_type);
                if let (Some(org), Some(n)) = (org, event.network_sequence)
                    && org != event.tenant_id
                {
                    // The network's readers wake on the organisation's log.
                    self.fanout.note_event(org, n, &event.event_type);
                }
                Ok(())
            }

            async fn insert_audit(&mut self, e: &AuditEntry) -> Result<()> {
                // Inserted with the group's others before it commits.
                self.fanout.defer_audit(e.clone());
                Ok(())
            }

            async fn flush_audits(&mut self) -> Result<()> {
                let entries = self.fanout.take_audits();
                for chunk in entries.chunks(crate::records::sql::AUDIT_ROWS) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO audit_log (id, tenant_id, at, key_id, action, resource_type, resource_id) ",
                    );
                    qb.push_values(chunk, |mut row, e| {
                        row.push_bind(&e.id)
                            .push_bind(&e.tenant)
                            .push_bind(&e.at)
                            .push_bind(&e.key_id)
                            .push_bind(&e.action)
                            .push_bind(&e.resource_type)
                            .push_bind(&e.resource_id);
                    });
                    // One entry (a group of one write, the usual case at a
                    // low rate) is one statement, kept prepared; a statement
                    // of each other size would otherwise stay in the
                    // connection's cache.
                    qb.build().persistent(chunk.len() == 1).execute(&mut self.conn).await?;
                }
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
            async fn lock_tenant(&mut self, tenant: &str) -> Result<()> {
                if self.fanout.holds_lock(tenant) {
                    return Ok(());
                }
                let sql: &'static str = $lock_tenant;
                let row = sqlx::query(sql).bind(tenant).fetch_optional(&mut self.conn).await?;
                if let Some(row) = row {
                    // The endpoints this writer fans out to must be the
                    // committed ones: reload when another change (here or on
                    // another node) bumped the version.
                    let version: i64 = row.get(0);
                    if !self.fanout.current(tenant, version) {
                        let endpoints = crate::delivery::sql::QueueConn::load_endpoints(self, tenant).await?;
                        self.fanout.load(tenant, version, endpoints);
                    }
                    self.fanout.note_lock(tenant);
                }
                Ok(())
            }
        }
        };
    };
}
pub(crate) use impl_record_tx;

/// [`Records`](crate::Records) for a store (a struct with `writer` and `reads`, the
/// backend's pool).
macro_rules! impl_records {
    ($store:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use eventflow_model::id::TenantId;
            use eventflow_model::{Object, ResourceType};

            use sqlx::Row;

            use crate::codec::parse_object;

            use crate::error::Result;


            use crate::records::{query, *};


        #[async_trait]
        impl crate::Records for $store {
            async fn write(&self, req: WriteRequest) -> Result<WriteOutcome> {
                self.writer.write(req).await
            }

            async fn get_record(&self, tenant: &TenantId, rt: ResourceType, id: &str) -> Result<Option<Object>> {
                let row = sqlx::query(
                    "SELECT data FROM records WHERE tenant_id = $1 AND id = $2 AND resource_type = $3",
                )
                .bind(tenant.as_str())
                .bind(id)
                .bind(rt.name())
                .fetch_optional(&self.reads)
                .await?;
                row.map(|r| parse_object(r.get::<&str, _>(0))).transpose()
            }

            async fn list_records(&self, tenant: &TenantId, rt: ResourceType, q: &ListQuery) -> Result<Page> {
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
                    let mut record = parse_object(body)?;
                    if tenant.is_organisation() {
                        // A network's list says whose each record is.
                        record.insert("tenantId".into(), row.get::<String, _>(2).into());
                    }
                    data.push(record);
                }
                let next_cursor = if more { last_id } else { None };
                Ok(Page { data, next_cursor })
            }

            async fn count_records(
                &self,
                tenant: &TenantId,
                rt: ResourceType,
                q: &ListQuery,
                cap: u32,
            ) -> Result<u64> {
                let row = query::count_records::<$db>(tenant, rt, q, cap)
                    .build()
                    .fetch_one(&self.reads)
                    .await?;
                Ok(u64::try_from(row.get::<i64, _>(0)).unwrap_or(0))
            }

            async fn records_referencing(
                &self,
                tenant: &TenantId,
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

            async fn record_reads(&self, entries: Vec<AuditEntry>) -> Result<()> {
                self.writer.audit(entries).await
            }

            async fn audit_log(&self, tenant: &TenantId, q: &AuditQuery) -> Result<AuditPage> {
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

        }
        };
    };
}
pub(crate) use impl_records;

/// [`EventLog`](crate::EventLog) for a store.
macro_rules! impl_event_log {
    ($store:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use eventflow_model::Event;
            use eventflow_model::id::{EventId, TenantId};

            use sqlx::Row;

            use crate::codec::parse_event;

            use crate::error::Result;

            use crate::notify::Notifier;

            use crate::records::{query, *};

            #[async_trait]
            impl crate::EventLog for $store {
                async fn events(&self, tenant: &TenantId, q: &EventQuery) -> Result<Vec<Event>> {
                    Ok(self
                        .events_with_writer(tenant, q)
                        .await?
                        .into_iter()
                        .map(|(e, _)| e)
                        .collect())
                }

                async fn events_with_writer(
                    &self,
                    tenant: &TenantId,
                    q: &EventQuery,
                ) -> Result<Vec<(Event, Option<Actor>)>> {
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
                        let writer = r.get::<Option<&str>, _>(1).map(Actor::from);
                        page.push((parse_event(body)?, writer));
                    }
                    Ok(page)
                }

                async fn event_by_id(
                    &self,
                    tenant: &TenantId,
                    id: &EventId,
                ) -> Result<Option<Event>> {
                    let row =
                        // An organisation's log holds its network's events.
                        sqlx::query("SELECT body FROM events WHERE id = $1 AND (tenant_id = $2 OR org_id = $2)")
                            .bind(id.as_str())
                            .bind(tenant.as_str())
                            .fetch_optional(&self.reads)
                            .await?;
                    row.map(|r| parse_event(r.get::<&str, _>(0))).transpose()
                }

                async fn latest_sequence(&self, tenant: &TenantId) -> Result<i64> {
                    let row = sqlx::query("SELECT last_sequence FROM tenants WHERE id = $1")
                        .bind(tenant.as_str())
                        .fetch_optional(&self.reads)
                        .await?;
                    Ok(row.map(|r| r.get::<i64, _>(0)).unwrap_or(0))
                }

                fn notifier(&self) -> &Notifier {
                    &self.notifier
                }
            }
        };
    };
}
pub(crate) use impl_event_log;
