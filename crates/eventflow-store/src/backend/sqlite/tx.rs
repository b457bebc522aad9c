//! The writer's SQLite connection.

use sqlx::SqliteConnection;

/// The one write connection, owned by the writer task.
pub(super) struct SqliteConn {
    pub conn: SqliteConnection,
    pub fanout: crate::delivery::fanout::Fanout,
}

impl SqliteConn {
    /// A local file does not drop its connection; a failure is real.
    async fn reopen(&mut self) -> crate::error::Result<()> {
        Err(crate::error::StoreError::Closed)
    }
}

crate::records::sql::impl_record_tx!(
    SqliteConn,
    // The single writer already holds SQLite's database-wide write lock;
    // this only reads the endpoints version.
    lock_tenant: "SELECT endpoints_version FROM tenants WHERE id = $1",
);

crate::keys::sql::impl_key_conn!(
    SqliteConn,
    // One process serves each SQLite file; the in-process notifier suffices.
    announce_keys: None,
);

crate::networks::sql::impl_network_conn!(
    SqliteConn,
    db: sqlx::Sqlite,
    // The single writer already holds SQLite's database-wide write lock.
    lock: "",
);

crate::writer::sql::impl_write_conn!(
    SqliteConn,
    // IMMEDIATE takes the write lock now: another process (a `tenants
    // create` beside the server) waits for the busy timeout instead of
    // failing half-way.
    begin: "BEGIN IMMEDIATE",
    // One process serves each SQLite file; the in-process notifier suffices.
    announce: None,
    // Clinic by clinic (CROSS JOIN keeps tenants the outer loop), each a
    // range of the primary key.
    aged_disclosures: "SELECT d.tenant_id, d.id FROM tenants t CROSS JOIN disclosures d \
                       ON d.tenant_id = t.id WHERE d.id < $1 LIMIT $2",
);

crate::delivery::sql::impl_queue_conn!(
    SqliteConn,
    db: sqlx::Sqlite,
    // One process: nothing to skip.
    lock_due: "",
    lock_row: "",
    append_attempt: "json_insert(attempts, '$[#]', json(v.column2))",
);

crate::automation::sql::impl_auto_conn!(
    SqliteConn,
    lock_row: "",
    lock_due: "",
);
