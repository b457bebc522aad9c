//! The PostgreSQL backend, for several `eventflow serve` processes sharing
//! one database.
//!
//! Writes go through the same group-commit writer as SQLite, on a dedicated
//! connection. Each request first locks its tenant's row (`FOR UPDATE`),
//! held to commit: one tenant's writes serialise across nodes, so a sequence
//! taken earlier always commits earlier — the outbox trap (a number taken
//! before commit becoming visible after a larger one) cannot happen. Groups
//! are ordered by tenant, so two nodes never wait on each other in a cycle.
//! At commit, `pg_notify` tells every node's listener, which wakes its long
//! polls and streams; a key rotated or revoked is announced the same way,
//! and every node drops its cached keys.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, Postgres};

use crate::clock::Clock;
use crate::error::{Result, StoreError};
use crate::migrations;
use crate::notify::Notifier;
use crate::writer::WriterHandle;

/// The channel commits are announced on.
const CHANNEL: &str = "eventflow_events";
/// The channel key rotations and revocations are announced on.
const KEYS_CHANNEL: &str = "eventflow_keys";

/// Tuning of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// Connections for reads (the writer and the listener have their own).
    pub pool_size: u32,
    /// Most requests committed in one transaction.
    pub max_group: usize,
    /// Longest a statement may run.
    pub statement_timeout: Duration,
    /// The budget of one endpoint filter evaluation, in cost units.
    pub cel_cost: u64,
    /// The largest record stored, in bytes of JSON.
    pub max_record_bytes: usize,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            pool_size: 8,
            max_group: 512,
            statement_timeout: Duration::from_secs(30),
            cel_cost: eventflow_model::filter::DEFAULT_COST_LIMIT,
            max_record_bytes: crate::DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// The PostgreSQL store.
#[derive(Debug)]
pub struct PgStore {
    writer: WriterHandle,
    reads: PgPool,
    notifier: Arc<Notifier>,
    shared: crate::Shared,
}

/// The writer's dedicated connection.
struct PgConn {
    conn: PgConnection,
    fanout: crate::delivery::fanout::Fanout,
    /// To reconnect after the connection is lost.
    options: PgConnectOptions,
}

impl PgConn {
    async fn reopen(&mut self) -> Result<()> {
        self.conn = PgConnection::connect_with(&self.options)
            .await
            .map_err(explain_connect)?;
        Ok(())
    }
}

crate::records::sql::impl_record_tx!(
    PgConn,
    lock_tenant: "SELECT endpoints_version FROM tenants WHERE id = $1 FOR UPDATE",
);

crate::keys::sql::impl_key_conn!(
    PgConn,
    announce_keys: Some("SELECT pg_notify('eventflow_keys', '')"),
);

crate::networks::sql::impl_network_conn!(
    PgConn,
    db: sqlx::Postgres,
    // A membership changes under the rows' locks, like a write's sequence.
    lock: " FOR UPDATE",
);

crate::writer::sql::impl_write_conn!(
    PgConn,
    begin: "BEGIN",
    announce: Some("SELECT pg_notify('eventflow_events', $1)"),
    // Clinic by clinic, each a range of the primary key.
    aged_disclosures: "SELECT d.tenant_id, d.id FROM tenants t CROSS JOIN LATERAL \
                       (SELECT tenant_id, id FROM disclosures WHERE tenant_id = t.id AND id < $1 \
                       ORDER BY id LIMIT $2) d LIMIT $2",
);

crate::delivery::sql::impl_queue_conn!(
    PgConn,
    db: Postgres,
    // Several nodes claim at once: each takes rows no other holds.
    lock_due: " FOR UPDATE OF d SKIP LOCKED",
    // A result is checked against the lease and written under one lock.
    lock_row: " FOR UPDATE",
    append_attempt: "(attempts::jsonb || jsonb_build_array(v.column2::jsonb))::text",
);

crate::automation::sql::impl_auto_conn!(
    PgConn,
    // A result is checked under the run's lock; due rows another node holds are skipped.
    lock_row: " FOR UPDATE",
    lock_due: " FOR UPDATE SKIP LOCKED",
);

crate::records::sql::impl_records!(PgStore, Postgres);

crate::records::sql::impl_event_log!(PgStore, Postgres);

crate::keys::sql::impl_tenants!(PgStore, Postgres);

crate::networks::sql::impl_networks!(PgStore);

crate::delivery::sql::impl_deliveries!(PgStore, Postgres);

crate::automation::sql::impl_automations!(PgStore, Postgres);

impl PgStore {
    /// Several nodes share the database: another node may hold a lease, so
    /// leases are left to run out.
    pub(crate) async fn release_stale_leases(&self, _now: &str) -> crate::error::Result<()> {
        Ok(())
    }
}

/// Turns a connection failure into a message naming what is wrong, without
/// the URL (it may hold a password).
fn explain_connect(e: sqlx::Error) -> StoreError {
    let what = match &e {
        sqlx::Error::Io(io) => format!("the server is unreachable ({io})"),
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Configuration(c) => format!("the URL is not valid ({c})"),
        other => other.to_string(),
    };
    StoreError::Migration(format!(
        "database_url: cannot connect to PostgreSQL: {what}"
    ))
}

fn connect_options(url: &str, config: &PgConfig) -> Result<PgConnectOptions> {
    let options: PgConnectOptions = url.parse().map_err(explain_connect)?;
    let timeout_ms = config.statement_timeout.as_millis().to_string();
    Ok(options
        .options([("statement_timeout", timeout_ms.as_str())])
        .disable_statement_logging())
}

/// A connection to a database whose schema is current (migrating it if
/// needed, refusing one newer than this build).
async fn connect_and_migrate(options: &PgConnectOptions) -> Result<PgConnection> {
    let mut conn = PgConnection::connect_with(options)
        .await
        .map_err(explain_connect)?;
    migrations::postgres()
        .run(&mut conn)
        .await
        .map_err(migrations::explain)?;
    Ok(conn)
}

impl PgStore {
    /// Connects, applies migrations (refusing a newer schema), starts the
    /// writer and the commit listener.
    pub async fn open(url: &str, clock: Arc<dyn Clock>, config: PgConfig) -> Result<Arc<PgStore>> {
        let options = connect_options(url, &config)?;
        let conn = connect_and_migrate(&options).await?;
        let reads = PgPoolOptions::new()
            .max_connections(config.pool_size.max(1))
            .connect_with(options.clone())
            .await
            .map_err(explain_connect)?;
        let notifier = Arc::new(Notifier::default());
        // A pool of its own: the listener holds its connection for good.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(explain_connect)?;
        let mut listener = PgListener::connect_with(&listen_pool).await?;
        listener.listen_all([CHANNEL, KEYS_CHANNEL]).await?;
        tokio::spawn(listen(listener, notifier.clone()));
        let (shared, fanout) = crate::Shared::new(config.cel_cost, config.max_record_bytes);
        let writer = WriterHandle::start(
            PgConn {
                conn,
                options,
                fanout,
            },
            clock,
            notifier.clone(),
            shared.wake.clone(),
            config.max_group,
        );
        Ok(Arc::new(PgStore {
            writer,
            reads,
            notifier,
            shared,
        }))
    }

    /// Applies migrations and returns.
    pub async fn migrate(url: &str) -> Result<()> {
        let options = connect_options(url, &PgConfig::default())?;
        connect_and_migrate(&options).await?.close().await?;
        Ok(())
    }
}

/// Wakes this node's readers when any node commits events.
async fn listen(mut listener: PgListener, notifier: Arc<Notifier>) {
    loop {
        match listener.try_recv().await {
            // The connection was lost and is being made again: a key change
            // announced meanwhile may be missed, so every cached key goes.
            Ok(None) => notifier.keys_changed(),
            Ok(Some(n)) if n.channel() == KEYS_CHANNEL => notifier.keys_changed(),
            Ok(Some(n)) => {
                if let Some((tenant, seq)) = n.payload().split_once(' ')
                    && let Ok(seq) = seq.parse()
                {
                    notifier.publish(tenant, seq);
                }
            }
            Err(e) => {
                // A key change may have been missed while disconnected.
                notifier.keys_changed();
                // PgListener reconnects on the next recv; don't spin.
                tracing::warn!(error = %e, "commit listener lost its connection; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
