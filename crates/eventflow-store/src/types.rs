//! The requests and rows the [`Store`](crate::Store) trait speaks in.

use eventflow_model::{Object, ResourceType, TypeFilter};
use serde_json::Value;

/// One change to one record.
#[derive(Debug, Clone)]
pub enum Op {
    Create {
        rt: ResourceType,
        body: Value,
    },
    Patch {
        rt: ResourceType,
        id: String,
        patch: Value,
        if_match: Option<i64>,
    },
    Delete {
        rt: ResourceType,
        id: String,
        if_match: Option<i64>,
    },
}

/// A single change, or a batch applied all or nothing.
#[derive(Debug, Clone)]
pub enum WriteKind {
    Single(Op),
    Batch(Vec<Op>),
}

/// An `Idempotency-Key` and a fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 of method, path and body: a reuse with another body is a 409.
    pub fingerprint: String,
}

/// A write, on behalf of an API key.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub tenant: String,
    /// The API key's id (`key_…`), for the audit log.
    pub key_id: String,
    pub kind: WriteKind,
    pub idempotency: Option<Idempotency>,
}

/// The response a write produced (or, for a repeated idempotency key, the
/// stored first response).
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// 200, 201 or 204; for a batch, 200.
    pub status: u16,
    /// The record; `{"results": [...]}` for a batch; null for 204.
    pub body: Value,
    /// True when this is the stored response of an earlier request.
    pub replayed: bool,
}

/// Filters and paging of a record list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub patient_id: Option<String>,
    pub status: Option<String>,
    /// Normalised timestamp (see `eventflow_model::time`).
    pub updated_since: Option<String>,
    pub limit: u32,
    /// The id after which to continue.
    pub cursor: Option<String>,
    /// Rows are read until their data reach this many bytes: the page ends
    /// early, with a cursor (it always holds at least one record).
    pub max_bytes: Option<usize>,
}

/// A page of records.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub data: Vec<Object>,
    pub next_cursor: Option<String>,
}

/// Filters of an event read.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub after: i64,
    pub types: TypeFilter,
    pub resource_type: Option<ResourceType>,
    /// Only the events of this record.
    pub resource_id: Option<String>,
    /// Only events of these types, whatever `types` asks for: the types the
    /// caller's key may see (`None`: every type).
    pub visible: Option<TypeFilter>,
    pub limit: u32,
    /// Rows are read until their bodies reach this many bytes: the page
    /// ends early (it always holds at least one event).
    pub max_bytes: usize,
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: String,
    #[serde(skip)]
    pub tenant: String,
    pub at: String,
    pub key_id: String,
    /// `create`, `read`, `update` or `delete`.
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
}

/// Filters and paging of the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub limit: u32,
    /// The id before which to continue (newest first).
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub data: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// A tenant just created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    pub tenant_id: String,
    pub key_id: String,
}
