//! Clinical records and the events and audit entries written with them.
//!
//! - this module: the requests and rows the record side speaks in (a write,
//!   a page of records, an event query, audit entries);
//! - `rules`: the rules of a change, written once for every backend, over
//!   the small [`RecordTx`] interface a backend's transaction implements;
//! - `query`: the read queries, built once with sqlx's `QueryBuilder`.

pub(crate) mod query;
pub(crate) mod rules;
pub(crate) mod sql;

pub use rules::{RecordTx, StoredRecord, StoredResponse, date_columns};

use eventflow_model::{Event, Object, ResourceType, TypeFilter};
use serde_json::Value;

use eventflow_model::id::{EventId, TenantId};

use crate::error::Result;
use crate::notify::Notifier;

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

/// Who wrote an event (and the audit entries of its change). Stored, and
/// shown as the audit entry's `keyId`, as the key's id, `workflow:NAME`, or
/// `inbound-sms`: its `Display` and `From<&str>` are the only places that
/// spell these.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Actor {
    /// An API key, by its id (`key_…`).
    Key(String),
    /// A step of the workflow of this name.
    Workflow(String),
    /// The answer to an inbound SMS (`POST /v1/inbound/twilio/{tenantId}`),
    /// which carries no API key.
    InboundSms,
}

impl Actor {
    const WORKFLOW_PREFIX: &'static str = "workflow:";
    const INBOUND_SMS: &'static str = "inbound-sms";

    /// The workflow's name when a workflow's step is the writer.
    pub fn workflow(&self) -> Option<&str> {
        match self {
            Actor::Workflow(name) => Some(name),
            Actor::Key(_) | Actor::InboundSms => None,
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Key(id) => f.write_str(id),
            Actor::Workflow(name) => write!(f, "{}{name}", Actor::WORKFLOW_PREFIX),
            Actor::InboundSms => f.write_str(Actor::INBOUND_SMS),
        }
    }
}

impl From<&str> for Actor {
    /// The writer a stored text names; any text that is not a workflow's or
    /// the inbound SMS's is a key's id.
    fn from(stored: &str) -> Actor {
        if let Some(name) = stored.strip_prefix(Actor::WORKFLOW_PREFIX) {
            Actor::Workflow(name.to_string())
        } else if stored == Actor::INBOUND_SMS {
            Actor::InboundSms
        } else {
            Actor::Key(stored.to_string())
        }
    }
}

/// A write, on behalf of an API key or a workflow's step.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub tenant: String,
    /// Who writes: the events' writer and the audit entries' `keyId`.
    pub actor: Actor,
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
    /// A patient's medical record number.
    pub mrn: Option<String>,
    /// Normalised timestamp (see `eventflow_model::time`).
    pub updated_since: Option<String>,
    /// Conditions on when an appointment is or an encounter was (all
    /// must hold).
    pub dates: Vec<DateCondition>,
    pub limit: u32,
    /// The id after which to continue.
    pub cursor: Option<String>,
    /// Rows are read until their data reach this many bytes: the page ends
    /// early, with a cursor (it always holds at least one record).
    pub max_bytes: Option<usize>,
}

/// A date search's prefix (FHIR's `eq`, `gt`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePrefix {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
    Sa,
    Eb,
}

/// One value of a date search: a prefix and the instants its value covers,
/// `[lo, hi)`, as normalised timestamps. A record's period is
/// `[start, end]`: an appointment's start (both ends), an encounter's
/// date and end (no end: still going on). The prefixes mean what FHIR
/// says of a period: `eq` holds it wholly inside the value; `gt` and
/// `ge` have some of it after the value (`ge`: or in it), `lt` and `le`
/// before (`le`: or in it); `sa` starts after the value, `eb` ends before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateCondition {
    pub prefix: DatePrefix,
    pub lo: String,
    pub hi: String,
}

impl DateCondition {
    /// Whether a period (normalised timestamps; `end` `None`: open)
    /// meets the condition. The stores' queries say the same in SQL.
    pub fn holds(&self, start: &str, end: Option<&str>) -> bool {
        let (lo, hi) = (self.lo.as_str(), self.hi.as_str());
        match self.prefix {
            DatePrefix::Eq => start >= lo && end.is_some_and(|e| e < hi),
            DatePrefix::Gt => end.is_none_or(|e| e >= hi),
            DatePrefix::Ge => end.is_none_or(|e| e >= lo),
            DatePrefix::Lt => start < lo,
            DatePrefix::Le => start < hi,
            DatePrefix::Sa => start >= hi,
            DatePrefix::Eb => end.is_some_and(|e| e < lo),
        }
    }
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

/// Clinical records: writes (each with its events and audit entries, in one
/// transaction) and reads, and the audit log.
#[async_trait::async_trait]
pub trait Records: Send + Sync + 'static {
    /// Applies a create, patch, delete or batch, with its events and audit
    /// entries, in one transaction. Honours the idempotency key.
    async fn write(&self, req: WriteRequest) -> Result<WriteOutcome>;

    /// A live record of the tenant, with its server fields.
    async fn get_record(
        &self,
        tenant: &TenantId,
        rt: ResourceType,
        id: &str,
    ) -> Result<Option<Object>>;

    /// One page of a tenant's records of a type.
    async fn list_records(
        &self,
        tenant: &TenantId,
        rt: ResourceType,
        q: &ListQuery,
    ) -> Result<Page>;

    /// How many records a list matches (its cursor and page size aside),
    /// counting at most `cap`: `cap` means "`cap` or more".
    async fn count_records(
        &self,
        tenant: &TenantId,
        rt: ResourceType,
        q: &ListQuery,
        cap: u32,
    ) -> Result<u64>;

    /// Live records of type `rt` whose reference field `field` names `id`
    /// (for `?include=`), oldest first, at most `limit`.
    async fn records_referencing(
        &self,
        tenant: &TenantId,
        rt: ResourceType,
        field: &str,
        id: &str,
        limit: u32,
    ) -> Result<Vec<Object>>;

    /// Writes audit entries for records that were read.
    async fn record_reads(&self, entries: Vec<AuditEntry>) -> Result<()>;

    /// One page of the tenant's audit log, newest first.
    async fn audit_log(&self, tenant: &TenantId, q: &AuditQuery) -> Result<AuditPage>;
}

/// The tenant's event log: pages of events, one event, and wake-ups when new
/// ones commit.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The tenant's events after a sequence, filtered, in sequence order.
    async fn events(&self, tenant: &TenantId, q: &EventQuery) -> Result<Vec<Event>>;

    /// Like [`EventLog::events`], with who wrote each event (`None` for
    /// operational events).
    async fn events_with_writer(
        &self,
        tenant: &TenantId,
        q: &EventQuery,
    ) -> Result<Vec<(Event, Option<Actor>)>>;

    /// One event by id.
    async fn event_by_id(&self, tenant: &TenantId, id: &EventId) -> Result<Option<Event>>;

    /// The largest committed sequence of the tenant (0 when none).
    async fn latest_sequence(&self, tenant: &TenantId) -> Result<i64>;

    /// Wake-ups for committed events.
    fn notifier(&self) -> &Notifier;
}

#[cfg(test)]
mod tests {
    use super::Actor;

    #[test]
    fn an_actor_is_stored_as_before_and_read_back() {
        for (actor, stored) in [
            (Actor::Key("key_01abc".into()), "key_01abc"),
            (Actor::Workflow("reminders".into()), "workflow:reminders"),
            (Actor::InboundSms, "inbound-sms"),
        ] {
            assert_eq!(actor.to_string(), stored);
            assert_eq!(Actor::from(stored), actor);
        }
        assert_eq!(
            Actor::from("workflow:reminders").workflow(),
            Some("reminders")
        );
        assert_eq!(Actor::from("key_01abc").workflow(), None);
    }
}
