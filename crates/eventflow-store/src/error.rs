//! What a store operation can fail with. The server maps each variant to one
//! HTTP status; messages never hold field values.

use eventflow_model::ValidationError;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A field is missing, unknown, malformed, or names a record that does
    /// not exist (422).
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// No such record in this tenant (404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with other records (409).
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` named another version (412).
    #[error("the record is at version {current}, not the version in If-Match")]
    PreconditionFailed { current: i64 },
    /// The idempotency key was used with another request (409).
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    /// A record larger than the limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// One operation of a batch failed; nothing of the batch was applied.
    #[error("operation {index}: {source}")]
    Batch {
        index: usize,
        #[source]
        source: Box<StoreError>,
    },
    /// The database failed. Logged by the server, shown to clients as an
    /// opaque 500.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored row could not be read back (a body that does not parse, a
    /// value outside its column's vocabulary). Opaque to clients.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The writer failed inside (a panic in a job, a lost reply). Opaque to
    /// clients.
    #[error("{0}")]
    Internal(String),
    /// The database schema is newer than this build, or migrations failed.
    #[error("{0}")]
    Migration(String),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
    /// The write was rolled back with its whole group after an internal
    /// failure; it may be retried.
    #[error("the write was rolled back after an internal failure")]
    Aborted,
}

impl StoreError {
    /// An error of the request itself (invalid, not found, conflict,
    /// version mismatch), raised before anything was written; not a failure
    /// of the database.
    pub fn is_domain(&self) -> bool {
        match self {
            StoreError::Validation(_)
            | StoreError::NotFound(_)
            | StoreError::Conflict(_)
            | StoreError::PreconditionFailed { .. }
            | StoreError::IdempotencyMismatch
            | StoreError::TooLarge(_) => true,
            StoreError::Batch { source, .. } => source.is_domain(),
            _ => false,
        }
    }

    pub(crate) fn corrupt(what: &str) -> Self {
        StoreError::Corrupt(what.to_string())
    }
}
