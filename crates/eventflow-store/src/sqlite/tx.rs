//! [`RecordTx`] over the writer's open SQLite transaction.

use async_trait::async_trait;
use eventflow_model::{Event, Object, ResourceType};
use serde_json::Value;
use sqlx::{Row, SqliteConnection};

use crate::error::{Result, StoreError};
use crate::ops::{RecordTx, StoredRecord, StoredResponse, reference_columns};
use crate::types::AuditEntry;

pub(super) struct SqliteTx<'c> {
    pub conn: &'c mut SqliteConnection,
}

fn text(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|_| StoreError::corrupt("json"))
}

#[async_trait]
impl RecordTx for SqliteTx<'_> {
    async fn load(&mut self, tenant: &str, id: &str) -> Result<Option<StoredRecord>> {
        let row =
            sqlx::query("SELECT resource_type, data FROM records WHERE tenant_id = ? AND id = ?")
                .bind(tenant)
                .bind(id)
                .fetch_optional(&mut *self.conn)
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
             encounter_id, appointment_id, status, updated_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(text(data)?)
        .execute(&mut *self.conn)
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
            "UPDATE records SET version = ?, patient_id = ?, practitioner_id = ?, encounter_id = ?, \
             appointment_id = ?, status = ?, updated_at = ?, data = ? WHERE tenant_id = ? AND id = ?",
        )
        .bind(data.get("version").and_then(Value::as_i64))
        .bind(patient)
        .bind(practitioner)
        .bind(encounter)
        .bind(appointment)
        .bind(data.get("status").and_then(Value::as_str))
        .bind(data.get("updatedAt").and_then(Value::as_str))
        .bind(text(data)?)
        .bind(tenant)
        .bind(data.get("id").and_then(Value::as_str))
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    async fn delete_record(&mut self, tenant: &str, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM records WHERE tenant_id = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }

    async fn referencing_types(&mut self, tenant: &str, id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT resource_type FROM records WHERE tenant_id = ?1 AND \
             (patient_id = ?2 OR practitioner_id = ?2 OR encounter_id = ?2 OR appointment_id = ?2) \
             ORDER BY resource_type",
        )
        .bind(tenant)
        .bind(id)
        .fetch_all(&mut *self.conn)
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn next_sequence(&mut self, tenant: &str) -> Result<i64> {
        let row = sqlx::query(
            "UPDATE tenants SET last_sequence = last_sequence + 1 WHERE id = ? RETURNING last_sequence",
        )
        .bind(tenant)
        .fetch_optional(&mut *self.conn)
        .await?;
        row.map(|r| r.get(0))
            .ok_or_else(|| StoreError::NotFound("no such tenant".into()))
    }

    async fn insert_event(&mut self, event: &Event) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (tenant_id, sequence, id, type, resource_type, resource_id, created_at, body) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&event.tenant_id)
        .bind(event.sequence)
        .bind(&event.id)
        .bind(&event.event_type)
        .bind(&event.resource.resource_type)
        .bind(&event.resource.id)
        .bind(&event.created_at)
        .bind(text(event)?)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    async fn insert_audit(&mut self, e: &AuditEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (id, tenant_id, at, key_id, action, resource_type, resource_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.id)
        .bind(&e.tenant)
        .bind(&e.at)
        .bind(&e.key_id)
        .bind(&e.action)
        .bind(&e.resource_type)
        .bind(&e.resource_id)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    async fn idempotency_get(&mut self, tenant: &str, key: &str) -> Result<Option<StoredResponse>> {
        let row = sqlx::query(
            "SELECT fingerprint, status, body, created_at FROM idempotency_keys WHERE tenant_id = ? AND key = ?",
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(&mut *self.conn)
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
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, key) DO UPDATE SET \
             fingerprint = excluded.fingerprint, status = excluded.status, body = excluded.body, \
             created_at = excluded.created_at",
        )
        .bind(tenant)
        .bind(key)
        .bind(&r.fingerprint)
        .bind(i64::from(r.status))
        .bind(text(&r.body)?)
        .bind(&r.created_at)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }
}
