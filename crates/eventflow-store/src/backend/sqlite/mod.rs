//! The embedded default backend: one SQLite file in WAL mode with
//! `synchronous=FULL`, so an acknowledged write survives a power loss.
//!
//! All writes go through the group-commit writer (`crate::writer`), which
//! holds the only write connection and commits every waiting request with a
//! single fsync. One writer also makes sequences trivially commit ordered. Reads use a small pool of other connections, which WAL lets run
//! beside the writer.

mod tx;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, SqliteConnection};

use crate::clock::Clock;
use crate::error::Result;
use crate::migrations;
use crate::notify::Notifier;
use crate::writer::WriterHandle;

/// Tuning of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// Connections for reads (the writer has its own).
    pub read_connections: u32,
    /// Most requests committed in one transaction.
    pub max_group: usize,
    /// The budget of one endpoint filter evaluation, in cost units.
    pub cel_cost: u64,
    /// The largest record stored, in bytes of JSON.
    pub max_record_bytes: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            read_connections: 4,
            max_group: 512,
            cel_cost: eventflow_model::filter::DEFAULT_COST_LIMIT,
            max_record_bytes: crate::DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// The SQLite store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    writer: WriterHandle,
    reads: SqlitePool,
    notifier: Arc<Notifier>,
    shared: crate::Shared,
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

/// The database file and its `-wal` and `-shm` companions.
fn database_files(path: &Path) -> [std::path::PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// Makes the database readable by its owner alone, whatever the umask: the
/// file holds patient data and webhook secrets. The file is created 0600
/// before SQLite opens it (SQLite gives `-wal` and `-shm` the mode of the
/// database file), and files of an earlier start are tightened to 0600.
fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let private = std::fs::Permissions::from_mode(0o600);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        for file in database_files(path) {
            match std::fs::metadata(&file) {
                Ok(m) if m.permissions().mode() & 0o777 != 0o600 => {
                    std::fs::set_permissions(&file, private.clone())?
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// A connection to a database whose schema is current (migrating it if
/// needed, refusing one newer than this build).
async fn connect_and_migrate(path: &Path) -> Result<SqliteConnection> {
    make_private(path).map_err(sqlx::Error::Io)?;
    let mut conn = SqliteConnection::connect_with(&options(path)).await?;
    migrations::sqlite()
        .run(&mut conn)
        .await
        .map_err(migrations::explain)?;
    Ok(conn)
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
        let conn = connect_and_migrate(path).await?;
        let reads = SqlitePoolOptions::new()
            .max_connections(config.read_connections.max(1))
            .min_connections(1)
            .connect_with(options(path))
            .await?;
        // The write-ahead log and shared memory exist now: check them too.
        make_private(path).map_err(sqlx::Error::Io)?;
        let notifier = Arc::new(Notifier::default());
        let (shared, fanout) = crate::Shared::new(config.cel_cost, config.max_record_bytes);
        let writer = WriterHandle::start(
            tx::SqliteConn { conn, fanout },
            clock,
            notifier.clone(),
            shared.wake.clone(),
            config.max_group,
        );
        Ok(Arc::new(SqliteStore {
            writer,
            reads,
            notifier,
            shared,
        }))
    }

    /// Applies migrations to the database at `path` and returns.
    pub async fn migrate(path: &Path) -> Result<()> {
        connect_and_migrate(path).await?.close().await?;
        Ok(())
    }
}

crate::records::sql::impl_records!(SqliteStore, Sqlite);

crate::records::sql::impl_event_log!(SqliteStore, Sqlite);

crate::keys::sql::impl_tenants!(SqliteStore, Sqlite);

crate::networks::sql::impl_networks!(SqliteStore);

crate::delivery::sql::impl_deliveries!(SqliteStore, Sqlite);

crate::automation::sql::impl_automations!(SqliteStore, Sqlite);

impl SqliteStore {
    /// One process serves a SQLite file: leases an earlier run left (a
    /// crash mid-attempt) belong to no one; their deliveries are due now.
    /// Leases this process took itself stay with it: the server answers
    /// requests before this runs, and a delivery it has just handed over
    /// would otherwise be claimed again and sent twice.
    pub(crate) async fn release_stale_leases(&self, now: &str) -> crate::error::Result<()> {
        sqlx::query(
            "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL, next_at = $1 \
             WHERE status = 'pending' AND lease_owner IS NOT NULL AND lease_owner <> $3 \
             AND next_at <> $2",
        )
        .bind(now)
        .bind(crate::delivery::sql::PAUSED)
        .bind(&self.shared.node)
        .execute(&self.reads)
        .await?;
        // Runs this process leased itself (it may have started some before
        // this is called) stay with it.
        sqlx::query(
            "UPDATE workflow_runs SET lease_owner = NULL, lease_until = NULL, next_at = $1 \
             WHERE status = 'pending' AND lease_owner IS NOT NULL AND lease_owner <> $2",
        )
        .bind(now)
        .bind(&self.shared.node)
        .execute(&self.reads)
        .await?;
        Ok(())
    }
}
