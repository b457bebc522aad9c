//! The rules of a change, written once for every backend: validation,
//! reference checks, derived defaults, merge patch, the `previous` diff,
//! version checks, idempotency, and the event and audit entry that go with
//! each change. A backend implements [`RecordTx`] (plain SQL inside an open
//! transaction) and calls [`apply`].

use async_trait::async_trait;
use eventflow_model::event::Action;
use eventflow_model::resource::{FieldKind, SERVER_FIELDS};
use eventflow_model::{
    Event, EventType, Object, ResourceRef, ResourceType, ValidationError, id, patch, time, validate,
};
use serde_json::{Value, json};

use super::{Actor, AuditEntry, Op, WriteKind, WriteOutcome, WriteRequest};
use crate::error::{Result, StoreError};

/// A stored record: its type and its body with server fields.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub rt: ResourceType,
    pub data: Object,
}

/// A stored idempotent response.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub fingerprint: String,
    pub status: u16,
    pub body: Value,
    pub created_at: String,
}

/// The numbers an event takes: its place in its tenant's log and, while
/// the tenant is a member clinic of an organisation (or is one), in the
/// network's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbered {
    pub sequence: i64,
    /// The organisation and the event's `networkSequence` there.
    pub network: Option<(String, i64)>,
}

impl Numbered {
    /// The organisation whose log numbers the event.
    pub fn org(&self) -> Option<&str> {
        self.network.as_ref().map(|(org, _)| org.as_str())
    }

    /// The event's `networkSequence`.
    pub fn network_sequence(&self) -> Option<i64> {
        self.network.as_ref().map(|(_, n)| *n)
    }
}

/// What a backend does inside an open transaction.
#[async_trait]
pub trait RecordTx: Send {
    /// A live record of the tenant by id, whatever its type.
    async fn load(&mut self, tenant: &str, id: &str) -> Result<Option<StoredRecord>>;
    async fn insert_record(&mut self, tenant: &str, rt: ResourceType, data: &Object) -> Result<()>;
    async fn update_record(&mut self, tenant: &str, rt: ResourceType, data: &Object) -> Result<()>;
    async fn delete_record(&mut self, tenant: &str, id: &str) -> Result<()>;
    /// The types of live records whose reference fields name `id`.
    async fn referencing_types(&mut self, tenant: &str, id: &str) -> Result<Vec<String>>;
    /// Takes the tenant's next event sequence and, while it belongs to an
    /// organisation (or is one), the network's. The locks this takes are
    /// held to commit, so sequences commit in order.
    async fn next_sequence(&mut self, tenant: &str) -> Result<Numbered>;
    /// Inserts an event; `writer` is who wrote the change that produced it,
    /// `None` for the server's own operational events; `org` the
    /// organisation whose log numbers it ([`Numbered::network`]).
    async fn insert_event(
        &mut self,
        event: &Event,
        writer: Option<&Actor>,
        org: Option<&str>,
    ) -> Result<()>;
    /// Writes a delivery for every endpoint the event (just inserted)
    /// matches: its tenant's, and its organisation's (`org`) for a member.
    async fn fan_out(&mut self, event: &Event, org: Option<&str>) -> Result<()>;
    async fn insert_audit(&mut self, entry: &AuditEntry) -> Result<()>;
    /// Inserts the audit entries `insert_audit` kept for the group, in
    /// as few statements as their number allows. Called before the group
    /// commits.
    async fn flush_audits(&mut self) -> Result<()>;
    async fn idempotency_get(&mut self, tenant: &str, key: &str) -> Result<Option<StoredResponse>>;
    async fn idempotency_put(
        &mut self,
        tenant: &str,
        key: &str,
        response: &StoredResponse,
    ) -> Result<()>;
    /// Locks the tenant's row until commit, before any record is touched, so
    /// writers on several nodes serialise per tenant without deadlocks.
    async fn lock_tenant(&mut self, tenant: &str) -> Result<()>;
}

/// The result of [`apply`]: the response and the largest sequence written.
#[derive(Debug)]
pub struct Applied {
    pub outcome: WriteOutcome,
    pub last_sequence: Option<i64>,
    /// The type of each event written, for metrics.
    pub event_types: Vec<String>,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// Applies one write request inside an open transaction. On error the caller
/// rolls the transaction (or its savepoint) back.
pub async fn apply(
    tx: &mut dyn RecordTx,
    req: &WriteRequest,
    now: jiff::Timestamp,
) -> Result<Applied> {
    let now_s = time::format(now);
    if let Some(idem) = &req.idempotency
        && let Some(stored) = tx.idempotency_get(&req.tenant, &idem.key).await?
    {
        let fresh = time::parse(&stored.created_at).is_some_and(|at| at + IDEMPOTENCY_WINDOW > now);
        if fresh {
            if stored.fingerprint != idem.fingerprint {
                return Err(StoreError::IdempotencyMismatch);
            }
            return Ok(Applied {
                outcome: WriteOutcome {
                    status: stored.status,
                    body: stored.body,
                    replayed: true,
                },
                last_sequence: None,
                event_types: Vec::new(),
            });
        }
    }
    let mut ctx = Ctx {
        tenant: &req.tenant,
        actor: &req.actor,
        now: &now_s,
        last_sequence: None,
        event_types: Vec::new(),
    };
    let outcome = match &req.kind {
        WriteKind::Single(op) => ctx.op(tx, op).await?,
        WriteKind::Batch(ops) => {
            let mut results = Vec::with_capacity(ops.len());
            for (index, op) in ops.iter().enumerate() {
                let out = ctx.op(tx, op).await.map_err(|e| StoreError::Batch {
                    index,
                    source: Box::new(e),
                })?;
                results.push(json!({"status": out.status, "body": out.body}));
            }
            WriteOutcome {
                status: 200,
                body: json!({ "results": results }),
                replayed: false,
            }
        }
    };
    if let Some(idem) = &req.idempotency {
        tx.idempotency_put(
            &req.tenant,
            &idem.key,
            &StoredResponse {
                fingerprint: idem.fingerprint.clone(),
                status: outcome.status,
                body: outcome.body.clone(),
                created_at: now_s.clone(),
            },
        )
        .await?;
    }
    Ok(Applied {
        outcome,
        last_sequence: ctx.last_sequence,
        event_types: ctx.event_types,
    })
}

struct Ctx<'a> {
    tenant: &'a str,
    actor: &'a Actor,
    now: &'a str,
    last_sequence: Option<i64>,
    event_types: Vec<String>,
}

fn body_object(v: &Value) -> Result<Object> {
    match v {
        Value::Object(o) => Ok(o.clone()),
        _ => Err(ValidationError::new("body", "must be a JSON object").into()),
    }
}

fn not_found(rt: ResourceType, id: &str) -> StoreError {
    // Ids are not patient data; naming it helps the caller (when it is one).
    if id::is_well_formed(id) {
        StoreError::NotFound(format!("no {rt} with id {id}"))
    } else {
        StoreError::NotFound(format!("no {rt} with that id"))
    }
}

fn version_of(data: &Object) -> i64 {
    data.get("version").and_then(Value::as_i64).unwrap_or(0)
}

fn without_server_fields(data: &Object) -> Object {
    let mut o = data.clone();
    for f in SERVER_FIELDS {
        o.remove(*f);
    }
    o
}

impl Ctx<'_> {
    async fn op(&mut self, tx: &mut dyn RecordTx, op: &Op) -> Result<WriteOutcome> {
        match op {
            Op::Create { rt, body } => self.create(tx, *rt, body).await,
            Op::Patch {
                rt,
                id,
                patch,
                if_match,
            } => self.patch(tx, *rt, id, patch, *if_match).await,
            Op::Delete { rt, id, if_match } => self.delete(tx, *rt, id, *if_match).await,
        }
    }

    async fn load(&self, tx: &mut dyn RecordTx, rt: ResourceType, id: &str) -> Result<Object> {
        if ResourceType::from_id(id) != Some(rt) {
            return Err(not_found(rt, id));
        }
        match tx.load(self.tenant, id).await? {
            Some(r) if r.rt == rt => Ok(r.data),
            _ => Err(not_found(rt, id)),
        }
    }

    /// Checks that every reference names a live record of the right type,
    /// and fills `patientPhone` / `providerEmail` from the referenced records.
    async fn resolve_references(
        &self,
        tx: &mut dyn RecordTx,
        rt: ResourceType,
        body: &mut Object,
        before: Option<&Object>,
    ) -> Result<()> {
        let mut patient_phone = None;
        let mut practitioner_email = None;
        for field in rt.fields() {
            let FieldKind::Ref(target) = field.kind else {
                continue;
            };
            let Some(id) = body.get(field.name).and_then(Value::as_str) else {
                continue;
            };
            let unchanged = before
                .and_then(|b| b.get(field.name))
                .and_then(Value::as_str)
                == Some(id);
            let wants_phone = target == ResourceType::Patient
                && rt.field("patientPhone").is_some()
                && !body.contains_key("patientPhone");
            let wants_email = target == ResourceType::Practitioner
                && rt.field("providerEmail").is_some()
                && !body.contains_key("providerEmail");
            // An unchanged reference was checked when it was set, and what
            // was derived from it then stays: a patch that changes nothing
            // must not pick up a phone the patient gained since.
            if unchanged {
                continue;
            }
            let referenced = match tx.load(self.tenant, id).await? {
                Some(r) if r.rt == target => r.data,
                _ => {
                    return Err(ValidationError::new(
                        field.name,
                        format!("no {target} with this id"),
                    )
                    .into());
                }
            };
            if wants_phone {
                patient_phone = referenced.get("phone").cloned();
            }
            if wants_email {
                practitioner_email = referenced.get("email").cloned();
            }
        }
        if let Some(phone) = patient_phone {
            body.insert("patientPhone".into(), phone);
        }
        if let Some(email) = practitioner_email {
            body.insert("providerEmail".into(), email);
        }
        Ok(())
    }

    async fn create(
        &mut self,
        tx: &mut dyn RecordTx,
        rt: ResourceType,
        body: &Value,
    ) -> Result<WriteOutcome> {
        let mut body = body_object(body)?;
        validate::reject_server_fields(&body)?;
        validate::strip_nulls(&mut body);
        validate::check(rt, &body)?;
        validate::apply_defaults(rt, &mut body, self.now);
        self.resolve_references(tx, rt, &mut body, None).await?;
        validate::compute_flags(rt, &mut body, false);
        let rid = id::new_id(rt.id_prefix());
        body.insert("id".into(), Value::String(rid.clone()));
        body.insert("version".into(), json!(1));
        body.insert("createdAt".into(), Value::String(self.now.into()));
        body.insert("updatedAt".into(), Value::String(self.now.into()));
        let data = validate::normalize(rt, body);
        tx.insert_record(self.tenant, rt, &data).await?;
        self.event(tx, rt, Action::Created, &rid, 1, &data, None)
            .await?;
        self.audit(tx, "create", rt, &rid).await?;
        Ok(WriteOutcome {
            status: 201,
            body: Value::Object(data),
            replayed: false,
        })
    }

    async fn patch(
        &mut self,
        tx: &mut dyn RecordTx,
        rt: ResourceType,
        rid: &str,
        patch_body: &Value,
        if_match: Option<i64>,
    ) -> Result<WriteOutcome> {
        let mut patch_obj = body_object(patch_body)?;
        let current = self.load(tx, rt, rid).await?;
        let version = version_of(&current);
        if let Some(expected) = if_match
            && expected != version
        {
            return Err(StoreError::PreconditionFailed { current: version });
        }
        for name in SERVER_FIELDS {
            if let Some(v) = patch_obj.remove(*name)
                && current.get(*name) != Some(&v)
            {
                return Err(ValidationError::new(
                    *name,
                    "is set by the server and cannot be written",
                )
                .into());
            }
        }
        let before = without_server_fields(&current);
        let mut working = Value::Object(before.clone());
        patch::merge_patch(&mut working, &Value::Object(patch_obj.clone()));
        let Value::Object(mut after) = working else {
            return Err(StoreError::corrupt("merge patch result"));
        };
        validate::strip_nulls(&mut after);
        validate::check(rt, &after)?;
        // A value defaulted from a referenced record follows the reference:
        // a new patient brings their phone, unless the patch sets one.
        for (reference, derived) in [
            ("patientId", "patientPhone"),
            ("practitionerId", "providerEmail"),
        ] {
            if rt.field(derived).is_some()
                && before.get(reference) != after.get(reference)
                && !patch_obj.contains_key(derived)
            {
                after.remove(derived);
            }
        }
        self.resolve_references(tx, rt, &mut after, Some(&before))
            .await?;
        // Recompute the flag only when the patch changed what it derives
        // from: re-sending the current value keeps a flag the client gave.
        let recompute = !patch_obj.contains_key("flag")
            && ["value", "referenceRange"]
                .iter()
                .any(|k| before.get(*k) != after.get(*k));
        validate::compute_flags(rt, &mut after, recompute);
        let previous = patch::changed_fields(&before, &after, &[]);
        if previous.is_empty() {
            self.audit(tx, "update", rt, rid).await?;
            return Ok(WriteOutcome {
                status: 200,
                body: Value::Object(current),
                replayed: false,
            });
        }
        let new_version = version + 1;
        after.insert("id".into(), Value::String(rid.into()));
        after.insert("version".into(), json!(new_version));
        after.insert(
            "createdAt".into(),
            current.get("createdAt").cloned().unwrap_or(Value::Null),
        );
        after.insert("updatedAt".into(), Value::String(self.now.into()));
        let data = validate::normalize(rt, after);
        tx.update_record(self.tenant, rt, &data).await?;
        self.event(
            tx,
            rt,
            Action::Updated,
            rid,
            new_version,
            &data,
            Some(previous),
        )
        .await?;
        self.audit(tx, "update", rt, rid).await?;
        Ok(WriteOutcome {
            status: 200,
            body: Value::Object(data),
            replayed: false,
        })
    }

    async fn delete(
        &mut self,
        tx: &mut dyn RecordTx,
        rt: ResourceType,
        rid: &str,
        if_match: Option<i64>,
    ) -> Result<WriteOutcome> {
        let current = self.load(tx, rt, rid).await?;
        let version = version_of(&current);
        if let Some(expected) = if_match
            && expected != version
        {
            return Err(StoreError::PreconditionFailed { current: version });
        }
        let referencing = tx.referencing_types(self.tenant, rid).await?;
        if !referencing.is_empty() {
            let names: Vec<String> = referencing
                .iter()
                .map(|t| {
                    t.parse::<ResourceType>()
                        .map(|r| r.collection().to_string())
                        .unwrap_or_else(|_| t.clone())
                })
                .collect();
            return Err(StoreError::Conflict(format!(
                "this {rt} is referenced by live {}; delete those first",
                names.join(", ")
            )));
        }
        tx.delete_record(self.tenant, rid).await?;
        self.event(tx, rt, Action::Deleted, rid, version + 1, &current, None)
            .await?;
        self.audit(tx, "delete", rt, rid).await?;
        Ok(WriteOutcome {
            status: 204,
            body: Value::Null,
            replayed: false,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn event(
        &mut self,
        tx: &mut dyn RecordTx,
        rt: ResourceType,
        action: Action,
        rid: &str,
        version: i64,
        data: &Object,
        previous: Option<Object>,
    ) -> Result<()> {
        let numbered = tx.next_sequence(self.tenant).await?;
        let sequence = numbered.sequence;
        let event = Event {
            id: eventflow_model::id::EventId::fresh().into_string(),
            event_type: EventType::new(rt, action).name(),
            sequence,
            network_sequence: numbered.network_sequence(),
            created_at: self.now.to_string(),
            tenant_id: self.tenant.to_string(),
            resource: ResourceRef {
                resource_type: rt.name().to_string(),
                id: rid.to_string(),
                version,
            },
            topics: eventflow_model::topics::topics(rt, action, data, previous.as_ref()),
            patient_id: eventflow_model::topics::patient_of(rt, data),
            changed_fields: previous.as_ref().map(|p| p.keys().cloned().collect()),
            data: data.clone(),
            previous,
        };
        tx.insert_event(&event, Some(self.actor), numbered.org())
            .await?;
        tx.fan_out(&event, numbered.org()).await?;
        self.last_sequence = Some(sequence);
        self.event_types.push(event.event_type);
        Ok(())
    }

    async fn audit(
        &self,
        tx: &mut dyn RecordTx,
        action: &str,
        rt: ResourceType,
        rid: &str,
    ) -> Result<()> {
        tx.insert_audit(&AuditEntry {
            id: id::new_id("aud"),
            tenant: self.tenant.to_string(),
            at: self.now.to_string(),
            key_id: self.actor.to_string(),
            action: action.to_string(),
            resource_type: rt.name().to_string(),
            resource_id: rid.to_string(),
        })
        .await
    }
}

/// The indexed reference columns of a record body, in
/// [`REFERENCE_FIELDS`](eventflow_model::resource::REFERENCE_FIELDS) order.
/// The record's period for date searches, its `date_at` and `date_end`
/// columns: an appointment's start (a moment: both), an encounter's date
/// and end (none: still going on); in UTC as `eventflow_model::time`
/// writes instants (so that text order is time order).
pub fn date_columns(rt: ResourceType, data: &Object) -> (Option<String>, Option<String>) {
    let at = |field: &str| {
        let v = data.get(field).and_then(Value::as_str)?;
        eventflow_model::time::parse(v).map(eventflow_model::time::format)
    };
    match rt {
        ResourceType::Appointment => (at("start"), at("start")),
        ResourceType::Encounter => (at("date"), at("end")),
        _ => (None, None),
    }
}

pub fn reference_columns(data: &Object) -> [Option<&str>; 4] {
    let get = |k: &str| data.get(k).and_then(Value::as_str);
    [
        get("patientId"),
        get("practitionerId"),
        get("encounterId"),
        get("appointmentId"),
    ]
}
