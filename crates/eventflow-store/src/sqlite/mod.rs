//! The embedded default backend: one SQLite file in WAL mode with
//! `synchronous=FULL`, so an acknowledged write survives a power loss.
//!
//! All writes go through one writer task that holds the only write
//! connection. It takes every request waiting in its queue, applies each in
//! its own savepoint inside one transaction, and commits them with a single
//! fsync (group commit). One writer also makes sequences trivially commit
//! ordered. Reads use a small pool of other connections, which WAL lets run
//! beside the writer.

mod tx;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventflow_model::{Event, Object, ResourceType, time};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::error::{Result, StoreError};
use crate::notify::Notifier;
use crate::types::*;
use crate::{Store, migrations};

use writer::{Command, Job, Reply};

/// Tuning of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// Connections for reads (the writer has its own).
    pub read_connections: u32,
    /// Most requests committed in one transaction.
    pub max_group: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            read_connections: 4,
            max_group: 512,
        }
    }
}

/// The SQLite store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    reads: SqlitePool,
    notifier: Arc<Notifier>,
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(false)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, applies migrations, and
    /// starts the writer task. Refuses a database whose schema is newer than
    /// this build knows.
    pub async fn open(
        path: &Path,
        clock: Arc<dyn Clock>,
        config: SqliteConfig,
    ) -> Result<Arc<SqliteStore>> {
        let mut conn = SqliteConnection::connect_with(&options(path)).await?;
        migrations::sqlite()
            .run(&mut conn)
            .await
            .map_err(migrations::explain)?;
        let reads = SqlitePoolOptions::new()
            .max_connections(config.read_connections.max(1))
            .min_connections(1)
            .connect_with(options(path))
            .await?;
        let notifier = Arc::new(Notifier::default());
        let (jobs, rx) = mpsc::channel(4096);
        tokio::spawn(writer::run(
            conn,
            rx,
            clock,
            notifier.clone(),
            config.max_group,
        ));
        Ok(Arc::new(SqliteStore {
            jobs,
            reads,
            notifier,
        }))
    }

    /// Applies migrations to the database at `path` and returns.
    pub async fn migrate(path: &Path) -> Result<()> {
        let mut conn = SqliteConnection::connect_with(&options(path)).await?;
        migrations::sqlite()
            .run(&mut conn)
            .await
            .map_err(migrations::explain)?;
        conn.close().await?;
        Ok(())
    }

    async fn send(&self, command: Command) -> Result<Reply> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job { command, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn parse_object(text: &str) -> Result<Object> {
    serde_json::from_str(text).map_err(|_| StoreError::corrupt("record body"))
}

fn parse_event(text: &str) -> Result<Event> {
    serde_json::from_str(text).map_err(|_| StoreError::corrupt("event body"))
}

#[async_trait]
impl Store for SqliteStore {
    async fn write(&self, req: WriteRequest) -> Result<WriteOutcome> {
        match self.send(Command::Write(Box::new(req))).await? {
            Reply::Written(outcome) => Ok(outcome),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    async fn get_record(&self, tenant: &str, rt: ResourceType, id: &str) -> Result<Option<Object>> {
        let row = sqlx::query(
            "SELECT data FROM records WHERE tenant_id = ? AND id = ? AND resource_type = ?",
        )
        .bind(tenant)
        .bind(id)
        .bind(rt.name())
        .fetch_optional(&self.reads)
        .await?;
        row.map(|r| parse_object(r.get::<&str, _>(0))).transpose()
    }

    async fn list_records(&self, tenant: &str, rt: ResourceType, q: &ListQuery) -> Result<Page> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT id, data FROM records WHERE tenant_id = ");
        qb.push_bind(tenant);
        qb.push(" AND resource_type = ").push_bind(rt.name());
        if let Some(p) = &q.patient_id {
            qb.push(" AND patient_id = ").push_bind(p);
        }
        if let Some(s) = &q.status {
            qb.push(" AND status = ").push_bind(s);
        }
        if let Some(u) = &q.updated_since {
            qb.push(" AND updated_at >= ").push_bind(u);
        }
        if let Some(c) = &q.cursor {
            qb.push(" AND id > ").push_bind(c);
        }
        qb.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(q.limit) + 1);
        let rows = qb.build().fetch_all(&self.reads).await?;
        let mut data = Vec::with_capacity(rows.len());
        let mut last_id = None;
        for row in rows.iter().take(q.limit as usize) {
            last_id = Some(row.get::<String, _>(0));
            data.push(parse_object(row.get::<&str, _>(1))?);
        }
        let next_cursor = if rows.len() > q.limit as usize {
            last_id
        } else {
            None
        };
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
        let column = match field {
            "patientId" => "patient_id",
            "practitionerId" => "practitioner_id",
            "encounterId" => "encounter_id",
            "appointmentId" => "appointment_id",
            _ => return Ok(Vec::new()),
        };
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT data FROM records WHERE tenant_id = ");
        qb.push_bind(tenant);
        qb.push(" AND resource_type = ").push_bind(rt.name());
        qb.push(format_args!(" AND {column} = ")).push_bind(id);
        qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
        let rows = qb.build().fetch_all(&self.reads).await?;
        rows.iter()
            .map(|r| parse_object(r.get::<&str, _>(0)))
            .collect()
    }

    async fn events(&self, tenant: &str, q: &EventQuery) -> Result<Vec<Event>> {
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT body FROM events WHERE tenant_id = ");
        qb.push_bind(tenant);
        qb.push(" AND sequence > ").push_bind(q.after);
        if let Some(rt) = q.resource_type {
            qb.push(" AND resource_type = ").push_bind(rt.name());
        }
        if !q.types.is_all() {
            let (exact, prefixes) = q.types.split();
            qb.push(" AND (0");
            for t in exact {
                qb.push(" OR type = ").push_bind(t.to_string());
            }
            for p in prefixes {
                qb.push(" OR substr(type, 1, ")
                    .push_bind(p.len() as i64)
                    .push(") = ")
                    .push_bind(p.to_string());
            }
            qb.push(")");
        }
        qb.push(" ORDER BY sequence LIMIT ")
            .push_bind(i64::from(q.limit));
        let rows = qb.build().fetch_all(&self.reads).await?;
        rows.iter()
            .map(|r| parse_event(r.get::<&str, _>(0)))
            .collect()
    }

    async fn event_by_id(&self, tenant: &str, id: &str) -> Result<Option<Event>> {
        let row = sqlx::query("SELECT body FROM events WHERE id = ? AND tenant_id = ?")
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.reads)
            .await?;
        row.map(|r| parse_event(r.get::<&str, _>(0))).transpose()
    }

    async fn latest_sequence(&self, tenant: &str) -> Result<i64> {
        let row = sqlx::query("SELECT last_sequence FROM tenants WHERE id = ?")
            .bind(tenant)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0)).unwrap_or(0))
    }

    async fn record_reads(&self, entries: Vec<AuditEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.send(Command::Audit(entries)).await.map(|_| ())
    }

    async fn audit_log(&self, tenant: &str, q: &AuditQuery) -> Result<AuditPage> {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT id, at, key_id, action, resource_type, resource_id FROM audit_log WHERE tenant_id = ",
        );
        qb.push_bind(tenant);
        if let Some(t) = &q.resource_type {
            qb.push(" AND resource_type = ").push_bind(t);
        }
        if let Some(r) = &q.resource_id {
            qb.push(" AND resource_id = ").push_bind(r);
        }
        if let Some(c) = &q.cursor {
            qb.push(" AND id < ").push_bind(c);
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(q.limit) + 1);
        let rows = qb.build().fetch_all(&self.reads).await?;
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

    async fn authenticate(&self, key_hash: &str) -> Result<Option<Principal>> {
        let row = sqlx::query("SELECT tenant_id, id FROM api_keys WHERE key_hash = ?")
            .bind(key_hash)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.map(|r| Principal {
            tenant_id: r.get(0),
            key_id: r.get(1),
        }))
    }

    async fn create_tenant(
        &self,
        name: &str,
        key_hash: &str,
        only_if_no_tenants: bool,
    ) -> Result<Option<NewTenant>> {
        match self
            .send(Command::CreateTenant {
                name: name.to_string(),
                key_hash: key_hash.to_string(),
                only_if_no_tenants,
            })
            .await?
        {
            Reply::Tenant(t) => Ok(t),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    async fn purge(&self, events_before: jiff::Timestamp) -> Result<u64> {
        match self
            .send(Command::Purge {
                events_before: time::format(events_before),
            })
            .await?
        {
            Reply::Purged(n) => Ok(n),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reads).await?;
        Ok(())
    }

    fn notifier(&self) -> &Notifier {
        &self.notifier
    }
}
