//! The writer's side of the delivery queue: fan-out of each new event,
//! endpoint changes, claims, attempt results, retries and replays. Every
//! function runs inside the writer's group transaction (see `writer.rs`), so
//! an attempt's result, the endpoint's failure count and the operational
//! event they cause commit together.

use eventflow_model::filter::Outcome;
use eventflow_model::id::{DeliveryId, EventId, ReplayId};
use eventflow_model::{Event, Object, ResourceRef, time};
use serde_json::{Value, json};

use crate::delivery::fanout::LEASE;
use crate::delivery::sql::{DueAt, NewDelivery, PAUSED, QueueConn, patient_of};
use crate::delivery::{
    AttemptRecord, AttemptVerdict, ClaimedDelivery, Delivery, DeliveryStatus, Disclosure,
    EndpointRow, FreshDelivery, Ordering, PayloadMode, Recorded, Replay, ReplayFrom, Signing,
};
use crate::error::{Result, StoreError};

/// An endpoint as the endpoint events carry it (`endpoint.created`,
/// `endpoint.updated`, `endpoint.disabled`, …): never its secrets nor its
/// custom headers (they may hold the receiver's credentials), and its URL
/// cut to scheme and host (its path or query may carry a token, and the
/// event can reach other receivers). The API's own view of an endpoint is
/// built on this one, by the server.
pub fn endpoint_event_data(row: &EndpointRow) -> Value {
    let c = &row.config;
    let mut o = Object::new();
    o.insert("id".into(), json!(row.id));
    o.insert(
        "kind".into(),
        json!(if c.fhir.is_some() {
            "fhir-subscription"
        } else {
            "webhook"
        }),
    );
    o.insert("url".into(), json!(url_origin(&c.url)));
    o.insert("description".into(), json!(c.description));
    o.insert("eventTypes".into(), json!(c.event_types));
    o.insert("filter".into(), json!(c.filter));
    o.insert("payload".into(), json!(c.payload));
    o.insert("ordering".into(), json!(c.ordering));
    o.insert("rateLimit".into(), json!(c.rate_limit));
    o.insert("signing".into(), json!(c.signing));
    if c.signing == Signing::Ed25519
        && let Some(key) = row
            .secrets
            .first()
            .and_then(|s| eventflow_webhook::Ed25519Key::parse(&s.secret).ok())
    {
        o.insert("publicKey".into(), json!(key.public_key().to_string()));
    }
    o.insert("recipient".into(), json!(c.recipient()));
    o.insert("purpose".into(), json!(c.purpose));
    o.insert("purposeText".into(), json!(c.purpose_text));
    o.insert("owner".into(), json!(c.owner));
    o.insert("verification".into(), json!(row.verification.state));
    o.insert("verifiedAt".into(), json!(row.verification.verified_at));
    o.insert(
        "verificationError".into(),
        json!(row.verification.last_error),
    );
    o.insert("disabled".into(), json!(row.disabled));
    o.insert("disabledReason".into(), json!(row.disabled_reason));
    o.insert("failureStreak".into(), json!(row.failure_streak));
    o.insert("filterError".into(), json!(row.filter_error));
    o.insert("createdAt".into(), json!(row.created_at));
    o.insert("updatedAt".into(), json!(row.updated_at));
    Value::Object(o)
}

/// What a successful send disclosed, as the dispatcher hands it to the
/// writer: the endpoint as it was sent to and the event, shared (an event
/// sent to ten endpoints is one copy), and the record's id. The writer
/// makes the row ([`Disclosed::record`]).
#[derive(Debug, Clone)]
pub struct Disclosed {
    pub id: String,
    pub patient_id: String,
    pub endpoint: std::sync::Arc<EndpointRow>,
    pub event: std::sync::Arc<Event>,
}

/// What sending `event` to the endpoint discloses, when it carries a
/// patient's data; `None` for an event about no patient (a practitioner,
/// an operational event). `at` is when it was sent: the record's id sorts
/// by it, so retention takes the oldest as a range of ids.
pub fn disclosure_of(
    row: &std::sync::Arc<EndpointRow>,
    event: &std::sync::Arc<Event>,
    at: jiff::Timestamp,
) -> Option<Disclosed> {
    Some(Disclosed {
        patient_id: patient_of(event)?,
        id: eventflow_model::id::new_id_at("dsc", at),
        endpoint: row.clone(),
        event: event.clone(),
    })
}

impl Disclosed {
    /// The disclosure record of delivery `delivery_id`: who received the
    /// data, where, which of the record's fields, and why. A thin payload
    /// is a disclosure of the patient's id alone: no fields.
    pub fn record(&self, delivery_id: &str) -> Disclosure {
        let (row, event) = (&*self.endpoint, &*self.event);
        let c = &row.config;
        let fields = match c.payload {
            PayloadMode::Thin => Vec::new(),
            PayloadMode::Full => {
                let mut fields: Vec<String> = event.data.keys().cloned().collect();
                if let Some(previous) = &event.previous {
                    fields.extend(
                        previous
                            .keys()
                            .filter(|k| !event.data.contains_key(*k))
                            .cloned(),
                    );
                }
                fields
            }
        };
        Disclosure {
            id: self.id.clone(),
            tenant_id: event.tenant_id.clone(),
            patient_id: self.patient_id.clone(),
            at: String::new(),
            recipient: c.recipient(),
            endpoint_id: row.id.clone(),
            origin: url_origin(&c.url),
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            resource_type: event.resource.resource_type.clone(),
            resource_id: event.resource.id.clone(),
            fields,
            purpose: c.purpose,
            purpose_text: c.purpose_text.clone(),
            delivery_id: delivery_id.to_string(),
            organisation_id: (row.tenant_id != event.tenant_id).then(|| row.tenant_id.clone()),
        }
    }
}

pub(crate) fn url_origin(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}")
        }
        None => String::new(),
    }
}

/// How long an endpoint may fail, all deliveries failing, before it is disabled.
pub const DISABLE_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_hours(72);
/// Consecutive failures that open an endpoint's circuit breaker.
pub const BREAKER_THRESHOLD: i64 = 5;

/// Writes a delivery for every endpoint the event matches. Called right
/// after the event is inserted, inside the same transaction.
pub(crate) async fn fan_out<C: QueueConn + ?Sized>(
    conn: &mut C,
    event: &Event,
    org: Option<&str>,
) -> Result<()> {
    fan_out_to(conn, &event.tenant_id, event.sequence, event).await?;
    // A member clinic's event goes to its organisation's endpoints too,
    // numbered in the network's log.
    if let (Some(org), Some(n)) = (org, event.network_sequence)
        && org != event.tenant_id
    {
        fan_out_to(conn, org, n, event).await?;
    }
    Ok(())
}

/// Writes a delivery for every endpoint of `owner` the event matches;
/// `number` is the event's number in the owner's log.
async fn fan_out_to<C: QueueConn + ?Sized>(
    conn: &mut C,
    owner: &str,
    number: i64,
    event: &Event,
) -> Result<()> {
    let (targets, filter_errors) = conn.fanout().matching(owner, event);
    for (endpoint, error) in &filter_errors {
        conn.record_filter_error(endpoint, error).await?;
    }
    if targets.is_empty() {
        return Ok(());
    }
    let shared = std::sync::Arc::new(event.clone());
    let patient = patient_of(event);
    let now = conn.fanout().now.clone();
    let lease_until = conn.fanout().lease_until.clone();
    let node = conn.fanout().node.clone();
    let plan: Vec<(std::sync::Arc<EndpointRow>, String, bool)> = targets
        .into_iter()
        .map(|endpoint| {
            // Held for the endpoint's verification: no lease, paused.
            let hand_over = !endpoint.verification.holds() && conn.fanout().hand_over(&endpoint);
            (endpoint, DeliveryId::fresh().into_string(), hand_over)
        })
        .collect();
    let rows: Vec<NewDelivery<'_>> = plan
        .iter()
        .map(|(endpoint, did, hand_over)| NewDelivery {
            id: did,
            tenant_id: owner,
            endpoint_id: &endpoint.id,
            event,
            event_sequence: number,
            patient_id: patient.as_deref(),
            ordered: endpoint.config.ordering == Ordering::Resource,
            now: &now,
            next_at: if endpoint.verification.holds() {
                PAUSED
            } else if *hand_over {
                &lease_until
            } else {
                &now
            },
            lease_owner: hand_over.then_some(node.as_str()),
        })
        .collect();
    let sequences = conn.insert_deliveries(&rows).await?;
    drop(rows);
    for ((endpoint, did, hand_over), endpoint_sequence) in plan.into_iter().zip(sequences) {
        if hand_over {
            conn.fanout().push_fresh(FreshDelivery {
                delivery: Delivery {
                    id: did,
                    tenant_id: owner.to_string(),
                    endpoint_id: endpoint.id.clone(),
                    event_id: event.id.clone(),
                    event_type: event.event_type.clone(),
                    endpoint_sequence,
                    event_sequence: number,
                    resource_id: event.resource.id.clone(),
                    window_started_at: Some(now.clone()),
                    status: DeliveryStatus::Pending,
                    created_at: now.clone(),
                    updated_at: now.clone(),
                    next_attempt_at: None,
                    attempts: Vec::new(),
                },
                event: shared.clone(),
                endpoint,
            });
        }
    }
    Ok(())
}

/// Appends an operational event (`endpoint.disabled`, `delivery.failed`,
/// `delivery.recovered`) to the tenant's log, fanned out like any other.
/// Returns its sequence.
async fn operational_event<C: QueueConn + ?Sized>(
    conn: &mut C,
    tenant: &str,
    event_type: &str,
    resource: ResourceRef,
    data: Value,
) -> Result<i64> {
    let numbered = conn.next_sequence(tenant).await?;
    let sequence = numbered.sequence;
    let event = Event {
        id: EventId::fresh().into_string(),
        event_type: event_type.to_string(),
        sequence,
        network_sequence: numbered.network_sequence(),
        created_at: conn.fanout().now.clone(),
        tenant_id: tenant.to_string(),
        resource,
        data: match data {
            Value::Object(o) => o,
            _ => eventflow_model::Object::new(),
        },
        previous: None,
        patient_id: None,
        topics: Vec::new(),
        changed_fields: None,
    };
    conn.insert_event(&event, None, numbered.org()).await?;
    fan_out(conn, &event, numbered.org()).await?;
    metrics::counter!("eventflow_events_total", "type" => event_type.to_string()).increment(1);
    Ok(sequence)
}

fn delivery_data(d: &Delivery) -> Value {
    let last = d.attempts.last();
    json!({
        "id": d.id,
        "endpointId": d.endpoint_id,
        "eventId": d.event_id,
        "eventType": d.event_type,
        "endpointSequence": d.endpoint_sequence,
        "status": d.status,
        "attemptCount": d.attempts.len(),
        "lastStatusCode": last.and_then(|a| a.status_code),
        "lastError": last.and_then(|a| a.error.clone()),
    })
}

fn delivery_ref(d: &Delivery) -> ResourceRef {
    ResourceRef {
        resource_type: "delivery".into(),
        id: d.id.clone(),
        version: d.attempts.len() as i64,
    }
}

/// A change to an endpoint, as the API asks for it.
#[derive(Debug, Clone)]
pub enum EndpointChange {
    Create(Box<EndpointRow>),
    /// The new state of an existing endpoint, built from the revision in
    /// `expected`. Re-enabling resets its failures and resumes its deliveries.
    Update {
        row: Box<EndpointRow>,
        expected: i64,
    },
    Delete {
        tenant: String,
        id: String,
    },
}

/// A stored payload mode (`full`, `thin`).
pub(crate) fn payload_mode(s: &str) -> Result<PayloadMode> {
    match s {
        "full" => Ok(PayloadMode::Full),
        "thin" => Ok(PayloadMode::Thin),
        _ => Err(StoreError::corrupt("payload mode")),
    }
}

/// Refuses an endpoint with full payloads when the tenant forbids them, or,
/// for an organisation's, when a member clinic does (its patients' records
/// would reach it). Under the tenant's lock: a settings change cannot slip
/// in between (a clinic's takes its organisation's lock too).
async fn within_policy<C: QueueConn + ?Sized>(conn: &mut C, row: &EndpointRow) -> Result<()> {
    if row.config.payload != PayloadMode::Full {
        return Ok(());
    }
    if payload_mode(&conn.max_payload(&row.tenant_id).await?)? == PayloadMode::Thin {
        return Err(StoreError::Validation(
            eventflow_model::ValidationError::new(
                "payload",
                "must be \"thin\": the tenant's settings forbid full payloads (maxPayload in /v1/settings)",
            ),
        ));
    }
    if eventflow_model::id::is_organisation_id(&row.tenant_id) {
        let thin = conn.thin_members(&row.tenant_id).await?;
        if let Some(first) = thin.first() {
            return Err(StoreError::Validation(
                eventflow_model::ValidationError::new(
                    "payload",
                    format!(
                        "must be \"thin\": member clinic {first} forbids full payloads (maxPayload in its /v1/settings), and this endpoint would get its patients' records"
                    ),
                ),
            ));
        }
    }
    Ok(())
}

/// The ids of the endpoints of `tenant` with full payloads.
async fn full_endpoints<C: QueueConn + ?Sized>(conn: &mut C, tenant: &str) -> Result<Vec<String>> {
    Ok(conn
        .load_endpoints(tenant)
        .await?
        .into_iter()
        .filter(|e| e.config.payload == PayloadMode::Full)
        .map(|e| e.id)
        .collect())
}

/// Up to ten ids, comma-separated.
fn naming(ids: &[String]) -> String {
    let shown: Vec<&str> = ids.iter().take(10).map(String::as_str).collect();
    format!(
        "{}{}",
        shown.join(", "),
        if ids.len() > shown.len() { ", …" } else { "" }
    )
}

/// A clinic that forbids full payloads is reached by no endpoint with full
/// payloads of its organisation: a conflict naming them.
pub(crate) async fn no_full_endpoints_reach<C: QueueConn + ?Sized>(
    conn: &mut C,
    clinic: &str,
    org: &str,
) -> Result<()> {
    if payload_mode(&conn.max_payload(clinic).await?)? != PayloadMode::Thin {
        return Ok(());
    }
    reached_by_none(conn, clinic, org).await
}

/// The organisation has no endpoint with full payloads (which would get
/// the clinic's patients' records): else a conflict naming them.
async fn reached_by_none<C: QueueConn + ?Sized>(
    conn: &mut C,
    clinic: &str,
    org: &str,
) -> Result<()> {
    let full = full_endpoints(conn, org).await?;
    if full.is_empty() {
        return Ok(());
    }
    Err(StoreError::Conflict(format!(
        "{clinic} forbids full payloads, and its organisation {org} has {} endpoint(s) with full payloads ({}) that would get its patients' records; make them thin first",
        full.len(),
        naming(&full)
    )))
}

/// Sets the tenant's largest payload; `thin` while one of its endpoints
/// has full payloads is a conflict naming them.
pub(crate) async fn change_settings<C: QueueConn + ?Sized>(
    conn: &mut C,
    tenant: &str,
    to: crate::keys::TenantSettings,
) -> Result<crate::keys::TenantSettings> {
    if to.max_payload == PayloadMode::Thin {
        let full = full_endpoints(conn, tenant).await?;
        if !full.is_empty() {
            return Err(StoreError::Conflict(format!(
                "{} endpoint(s) have full payloads ({}); make them thin or delete them first",
                full.len(),
                naming(&full)
            )));
        }
        // A member clinic: its organisation's endpoints get its records too.
        // Its row (locked by the writer), then the organisation's, the order
        // a write takes them.
        // (Checked before anything is written: a refused change leaves
        // nothing behind.)
        if let Some((_, Some(org))) = conn.tenant_membership(tenant).await?
            && org != tenant
        {
            conn.lock_tenant_row(&org).await?;
            reached_by_none(conn, tenant, &org).await?;
        }
    }
    let mode = match to.max_payload {
        PayloadMode::Full => "full",
        PayloadMode::Thin => "thin",
    };
    conn.set_max_payload(tenant, mode).await?;
    Ok(to)
}

/// Applies an endpoint change; `Ok(None)` when the endpoint does not exist
/// (or changed meanwhile: the caller reads it again and retries).
pub(crate) async fn change_endpoint<C: QueueConn + ?Sized>(
    conn: &mut C,
    change: &EndpointChange,
) -> Result<Option<EndpointRow>> {
    let now = conn.fanout().now.clone();
    match change {
        EndpointChange::Create(row) => {
            within_policy(conn, row).await?;
            conn.insert_endpoint(row).await?;
            conn.bump_endpoints_version(&row.tenant_id).await?;
            Ok(Some((**row).clone()))
        }
        EndpointChange::Update { row, expected } => {
            let Some(before) = conn.endpoint(&row.tenant_id, &row.id).await? else {
                return Ok(None);
            };
            if before.revision != *expected {
                return Err(StoreError::Conflict(
                    "the endpoint changed meanwhile; read it again".into(),
                ));
            }
            within_policy(conn, row).await?;
            if !conn.update_endpoint(row, *expected).await? {
                return Ok(None);
            }
            let (held_before, held) = (before.verification.holds(), row.verification.holds());
            if before.disabled && !row.disabled {
                conn.reset_failures(&row.id).await?;
                // Still held for its verification: its deliveries wait on.
                if !held {
                    conn.reschedule_pending(&row.id, &now, &now).await?;
                }
            } else if (!before.disabled && row.disabled) || (held && !held_before) {
                conn.reschedule_pending(&row.id, PAUSED, &now).await?;
            } else if held_before && !held && !row.disabled && conn.release_held(&row.id).await? > 0
            {
                conn.fanout().wake_dispatcher = true;
            }
            conn.bump_endpoints_version(&row.tenant_id).await?;
            conn.endpoint(&row.tenant_id, &row.id).await
        }
        EndpointChange::Delete { tenant, id } => {
            let Some(before) = conn.endpoint(tenant, id).await? else {
                return Ok(None);
            };
            conn.soft_delete_endpoint(tenant, id, &now).await?;
            // Its waiting deliveries will never go; they stay listed as paused.
            conn.reschedule_pending(id, PAUSED, &now).await?;
            conn.bump_endpoints_version(tenant).await?;
            Ok(Some(before))
        }
    }
}

/// Leases up to `limit` due deliveries to `node`.
pub(crate) async fn claim<C: QueueConn + ?Sized>(
    conn: &mut C,
    node: &str,
    limit: i64,
) -> Result<Vec<ClaimedDelivery>> {
    let now = conn.fanout().now.clone();
    let until = conn.fanout().lease_until.clone();
    let due = conn.due(&now, limit).await?;
    let mut out = Vec::with_capacity(due.len());
    for (delivery, endpoint_revision, body) in due {
        conn.lease(&delivery.id, node, &until).await?;
        let event = match body {
            Some(b) => Some(std::sync::Arc::new(crate::codec::parse_event(&b)?)),
            None => None,
        };
        out.push(ClaimedDelivery {
            delivery,
            event,
            endpoint_revision,
        });
    }
    Ok(out)
}

/// Gives leased deliveries back, due again at `next_at` (no attempt made).
pub(crate) async fn release<C: QueueConn + ?Sized>(
    conn: &mut C,
    ids: &[String],
    node: &str,
    next_at: Option<&str>,
) -> Result<()> {
    let now = conn.fanout().now.clone();
    for id in ids {
        match next_at {
            Some(at) => conn.release(id, node, at, &now).await?,
            None => conn.hold(id, node, &now).await?,
        }
    }
    Ok(())
}

/// Records an attempt: the delivery's new state, the endpoint's failure
/// streak, and the operational events they cause. Returns what happened and
/// the largest event sequence written.
pub(crate) async fn record_attempt<C: QueueConn + ?Sized>(
    conn: &mut C,
    rec: &AttemptRecord,
) -> Result<(Recorded, Option<i64>)> {
    let now = conn.fanout().now.clone();
    // The data went out, whether or not this node still holds the lease:
    // a disclosure either way.
    if rec.verdict == AttemptVerdict::Succeeded
        && let Some(disclosed) = rec.disclosure.as_ref().map(|d| d.record(&rec.delivery_id))
    {
        conn.insert_disclosures(&[&disclosed], &now).await?;
    }
    let Some((mut d, owner)) = conn
        .delivery(Some(&rec.tenant_id), &rec.delivery_id)
        .await?
    else {
        return Ok((Recorded::default(), None));
    };
    if owner.as_deref() != Some(rec.node.as_str()) || d.status != DeliveryStatus::Pending {
        // The lease passed to another node (or a person retried it): what
        // that node records counts, not this.
        return Ok((Recorded::default(), None));
    }
    let mut last_sequence = None;
    let mut recorded = Recorded {
        applied: true,
        ..Recorded::default()
    };
    d.attempts.push(rec.attempt.clone());
    d.updated_at = now.clone();
    if rec.verdict == AttemptVerdict::Succeeded {
        d.status = DeliveryStatus::Succeeded;
        conn.update_delivery(&d, None, Some(&now)).await?;
        let streak = conn.endpoint_succeeded(&rec.endpoint_id).await?;
        if streak >= BREAKER_THRESHOLD {
            recorded.recovered = true;
            // The breaker closes: the backlog held back drains now.
            conn.drain(&rec.endpoint_id, &now).await?;
            conn.fanout().wake_dispatcher = true;
            let mut data = delivery_data(&d);
            data["failuresBefore"] = json!(streak);
            let seq = operational_event(
                conn,
                &rec.tenant_id,
                "delivery.recovered",
                delivery_ref(&d),
                data,
            )
            .await?;
            last_sequence = Some(seq);
        }
        return Ok((recorded, last_sequence));
    }
    // A failure. The endpoint's health first: a delivery of an endpoint that
    // is (or is now) disabled waits paused, never due.
    let counted = if matches!(rec.verdict, AttemptVerdict::Expired) {
        None
    } else {
        conn.endpoint_failed(&rec.endpoint_id, &now).await?
    };
    let already_disabled = counted.as_ref().is_some_and(|(_, _, disabled)| *disabled);
    match &rec.verdict {
        AttemptVerdict::RetryAt(at) => {
            let at = time::format(*at);
            let next = if already_disabled {
                PAUSED
            } else {
                at.as_str()
            };
            conn.update_delivery(&d, Some(next), None).await?;
        }
        AttemptVerdict::Gone => {
            // Waits, paused, for the endpoint to be enabled again.
            conn.update_delivery(&d, Some(PAUSED), None).await?;
        }
        AttemptVerdict::GiveUp | AttemptVerdict::Expired => {
            d.status = DeliveryStatus::Failed;
            conn.update_delivery(&d, None, None).await?;
            // Not for an operational event's own delivery: a failing
            // endpoint subscribed to `delivery.failed` would feed itself.
            if !eventflow_model::event::is_operational(&d.event_type) {
                let seq = operational_event(
                    conn,
                    &rec.tenant_id,
                    "delivery.failed",
                    delivery_ref(&d),
                    delivery_data(&d),
                )
                .await?;
                last_sequence = Some(seq);
            }
        }
        AttemptVerdict::Succeeded => {}
    }
    let Some((streak, failing_since, disabled)) = counted else {
        return Ok((recorded, last_sequence));
    };
    recorded.failure_streak = streak;
    recorded.endpoint_disabled = disabled;
    if disabled {
        return Ok((recorded, last_sequence));
    }
    let failing_long = failing_since
        .as_deref()
        .and_then(time::parse)
        .zip(time::parse(&now))
        .is_some_and(|(since, now)| since + DISABLE_AFTER <= now);
    // A delivery that gave up has failed for 72 h; if the endpoint has
    // not succeeded since that delivery's retry window began, all its
    // deliveries failed for as long.
    let failing_since_first = matches!(rec.verdict, AttemptVerdict::GiveUp)
        && failing_since
            .as_deref()
            .zip(d.window_started_at.as_deref())
            .is_some_and(|(since, first)| since <= first);
    let reason = match rec.verdict {
        AttemptVerdict::Gone => Some("gone"),
        _ if failing_long || failing_since_first => Some("failing"),
        _ => None,
    };
    if let Some(reason) = reason {
        recorded.endpoint_disabled = true;
        if let Some(seq) = disable(conn, &rec.tenant_id, &rec.endpoint_id, reason).await? {
            last_sequence = Some(seq);
        }
    }
    Ok((recorded, last_sequence))
}

/// Disables an endpoint (`gone`, `failing`, `unverified`): its waiting
/// deliveries pause, and `endpoint.disabled` is logged (fanned out without
/// it). Returns that event's sequence.
async fn disable<C: QueueConn + ?Sized>(
    conn: &mut C,
    tenant: &str,
    endpoint_id: &str,
    reason: &str,
) -> Result<Option<i64>> {
    let now = conn.fanout().now.clone();
    conn.disable_endpoint(endpoint_id, reason, &now).await?;
    conn.reschedule_pending(endpoint_id, PAUSED, &now).await?;
    conn.bump_endpoints_version(tenant).await?;
    // The operational event below must not fan out to the endpoint just
    // disabled: reload the tenant's list under the lock we hold.
    let version = conn.endpoints_version(tenant).await?;
    let endpoints = conn.load_endpoints(tenant).await?;
    conn.fanout().load(tenant, version, endpoints);
    let Some(row) = conn.endpoint(tenant, endpoint_id).await? else {
        return Ok(None);
    };
    let seq = operational_event(
        conn,
        tenant,
        "endpoint.disabled",
        ResourceRef {
            resource_type: "endpoint".into(),
            id: row.id.clone(),
            version: row.revision,
        },
        endpoint_event_data(&row),
    )
    .await?;
    Ok(Some(seq))
}

/// A new verification challenge: 32 random bytes, hex.
pub(crate) fn new_challenge() -> String {
    format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

/// Leases up to `limit` pending endpoints whose challenge is due to this
/// node: each is due again when the lease runs out, should the node stop
/// before it records the outcome.
pub(crate) async fn claim_verifications<C: QueueConn + ?Sized>(
    conn: &mut C,
    limit: i64,
) -> Result<Vec<EndpointRow>> {
    let now = conn.fanout().now.clone();
    let until = conn.fanout().lease_until.clone();
    let mut due = conn.due_endpoints(DueAt::Verification, &now, limit).await?;
    for row in &mut due {
        conn.lease_verification(&row.id, &until).await?;
        row.verify_at = Some(until.clone());
    }
    Ok(due)
}

/// Takes up to `limit` FHIR subscriptions whose heartbeat is due. One
/// whose last notification is less than a period old is due a period
/// after it instead; one still waiting for its handshake has none due
/// (the handshake's success makes the first due). Each taken is due
/// again a period from now: the row's update is the claim, so of several
/// nodes one sends it.
pub(crate) async fn claim_heartbeats<C: QueueConn + ?Sized>(
    conn: &mut C,
    limit: i64,
) -> Result<Vec<crate::delivery::Heartbeat>> {
    let now_s = conn.fanout().now.clone();
    let now = time::parse(&now_s).ok_or_else(|| StoreError::corrupt("writer clock"))?;
    let mut taken = Vec::new();
    for row in conn.due_endpoints(DueAt::Heartbeat, &now_s, limit).await? {
        let period = row.config.fhir.as_ref().and_then(|f| f.heartbeat);
        let Some(period) = period.map(|p| jiff::SignedDuration::from_secs(i64::from(p))) else {
            conn.set_heartbeat(&row.id, None).await?;
            continue;
        };
        if row.verification.holds() {
            conn.set_heartbeat(&row.id, None).await?;
            continue;
        }
        let last = conn.last_delivery(&row.id).await?;
        let events = last.as_ref().map_or(0, |(n, _)| *n);
        let next_after_last = last
            .as_ref()
            .and_then(|(_, at)| time::parse(at))
            .and_then(|at| at.checked_add(period).ok())
            .filter(|due| *due > now);
        if let Some(due) = next_after_last {
            conn.set_heartbeat(&row.id, Some(&time::format(due)))
                .await?;
            continue;
        }
        let next = now.checked_add(period).unwrap_or(now);
        conn.set_heartbeat(&row.id, Some(&time::format(next)))
            .await?;
        taken.push(crate::delivery::Heartbeat {
            endpoint: row,
            events,
        });
    }
    Ok(taken)
}

/// What a challenge came to.
#[derive(Debug, Clone, PartialEq)]
pub enum VerifyOutcome {
    /// The endpoint answered with the challenge.
    Verified,
    /// It did not; send again at this time.
    RetryAt { at: jiff::Timestamp, error: String },
    /// It did not, and 72 h have passed since the challenge started.
    GiveUp { error: String },
}

/// The outcome of one challenge, for the writer to record.
#[derive(Debug, Clone)]
pub struct VerifyRecord {
    pub tenant_id: String,
    pub endpoint_id: String,
    /// The challenge sent: an outcome for an older one is ignored.
    pub challenge: String,
    pub outcome: VerifyOutcome,
}

/// Records a challenge's outcome: verified (the held deliveries go, in
/// the order they were made), another attempt later, or the endpoint
/// disabled as `unverified`. Returns the sequence of an event it logged.
pub(crate) async fn record_verification<C: QueueConn + ?Sized>(
    conn: &mut C,
    rec: &VerifyRecord,
) -> Result<Option<i64>> {
    let now = conn.fanout().now.clone();
    let Some(row) = conn.endpoint(&rec.tenant_id, &rec.endpoint_id).await? else {
        return Ok(None);
    };
    let mut v = row.verification.clone();
    if !v.holds() || v.challenge.as_deref() != Some(rec.challenge.as_str()) {
        // Another challenge is out since (the URL changed, or verify again).
        return Ok(None);
    }
    match &rec.outcome {
        VerifyOutcome::Verified => {
            v.state = crate::delivery::VerificationState::Verified;
            v.challenge = None;
            v.verified_at = Some(now.clone());
            v.last_error = None;
            v.attempts += 1;
            conn.set_verification(&row.id, &v, None, &now).await?;
            // A FHIR subscription's heartbeats start with its handshake.
            if let Some(period) = row.config.fhir.as_ref().and_then(|f| f.heartbeat) {
                let first = time::parse(&now)
                    .and_then(|t| {
                        t.checked_add(jiff::SignedDuration::from_secs(i64::from(period)))
                            .ok()
                    })
                    .map(time::format);
                conn.set_heartbeat(&row.id, first.as_deref()).await?;
            }
            if !row.disabled && conn.release_held(&row.id).await? > 0 {
                conn.fanout().wake_dispatcher = true;
            }
            // New events fan out to it unheld from now on.
            conn.bump_endpoints_version(&rec.tenant_id).await?;
            Ok(None)
        }
        VerifyOutcome::RetryAt { at, error } => {
            v.attempts += 1;
            v.last_error = Some(error.clone());
            conn.set_verification(&row.id, &v, Some(&time::format(*at)), &now)
                .await?;
            Ok(None)
        }
        VerifyOutcome::GiveUp { error } => {
            v.attempts += 1;
            v.last_error = Some(error.clone());
            conn.set_verification(&row.id, &v, None, &now).await?;
            disable(conn, &rec.tenant_id, &rec.endpoint_id, "unverified").await
        }
    }
}

/// Records successful attempts made with the endpoint's failure streak
/// below the breaker's threshold: the common case, in two statements.
pub(crate) async fn succeed_many<C: QueueConn + ?Sized>(
    conn: &mut C,
    recs: &[AttemptRecord],
) -> Result<()> {
    let now = conn.fanout().now.clone();
    let node = recs.first().map(|r| r.node.clone()).unwrap_or_default();
    let disclosed: Vec<Disclosure> = recs
        .iter()
        .filter_map(|r| Some(r.disclosure.as_ref()?.record(&r.delivery_id)))
        .collect();
    if !disclosed.is_empty() {
        let rows: Vec<&Disclosure> = disclosed.iter().collect();
        conn.insert_disclosures(&rows, &now).await?;
    }
    conn.succeed_many(recs, &node, &now).await
}

/// Queues a delivery again now (whatever its status). `None`: no such delivery.
pub(crate) async fn retry<C: QueueConn + ?Sized>(
    conn: &mut C,
    tenant: &str,
    id: &str,
) -> Result<Option<Delivery>> {
    let now = conn.fanout().now.clone();
    let Some((mut d, _)) = conn.delivery(Some(tenant), id).await? else {
        return Ok(None);
    };
    d.status = DeliveryStatus::Pending;
    d.updated_at = now.clone();
    // A new retry window of 72 h starts now.
    d.window_started_at = Some(now.clone());
    // A disabled endpoint's, or one waiting for its verification, waits on.
    let live = conn
        .endpoint(tenant, &d.endpoint_id)
        .await?
        .is_some_and(|e| !e.disabled && !e.verification.holds());
    let next = if live {
        now.clone()
    } else {
        PAUSED.to_string()
    };
    conn.update_delivery(&d, Some(&next), None).await?;
    d.next_attempt_at = live.then_some(now);
    Ok(Some(d))
}

/// Events one replay chunk reads: one short write of the shared writer.
pub const REPLAY_CHUNK: i64 = 500;

/// Starts a replay of every event since `from` that the endpoint matches
/// now, and does its first chunk. `None` when the endpoint does not exist.
pub(crate) async fn start_replay<C: QueueConn + ?Sized>(
    conn: &mut C,
    tenant: &str,
    endpoint_id: &str,
    from: &ReplayFrom,
) -> Result<Option<Replay>> {
    if conn.endpoint(tenant, endpoint_id).await?.is_none() {
        return Ok(None);
    }
    let now = conn.fanout().now.clone();
    let (cursor, since) = match from {
        ReplayFrom::After(seq) => (*seq, None),
        ReplayFrom::Since(t) => (0, Some(t.clone())),
    };
    let mut replay = Replay {
        id: ReplayId::fresh().into_string(),
        tenant_id: tenant.to_string(),
        endpoint_id: endpoint_id.to_string(),
        status: "running".into(),
        queued: 0,
        cursor,
        up_to: conn.latest_sequence(tenant).await?,
        since,
        created_at: now.clone(),
        updated_at: now,
    };
    conn.insert_replay(&replay).await?;
    replay_chunk(conn, &mut replay).await?;
    Ok(Some(replay))
}

/// Does the next chunk of a running replay. `None` when there is no such
/// replay of the tenant.
pub(crate) async fn continue_replay<C: QueueConn + ?Sized>(
    conn: &mut C,
    tenant: &str,
    id: &str,
) -> Result<Option<Replay>> {
    let Some(mut replay) = conn.replay_row(id).await?.filter(|r| r.tenant_id == tenant) else {
        return Ok(None);
    };
    if replay.running() {
        replay_chunk(conn, &mut replay).await?;
    }
    Ok(Some(replay))
}

/// Queues again up to [`REPLAY_CHUNK`] events after the replay's cursor: a
/// delivery the endpoint already has for an event is made due now (keeping
/// its `endpointSequence`); an event it had none for gets a new one,
/// numbered after the endpoint's last. One range read of the events and one
/// of the deliveries, whatever the endpoint's history.
async fn replay_chunk<C: QueueConn + ?Sized>(conn: &mut C, replay: &mut Replay) -> Result<()> {
    let now = conn.fanout().now.clone();
    replay.updated_at = now.clone();
    let Some(row) = conn
        .endpoint(&replay.tenant_id, &replay.endpoint_id)
        .await?
    else {
        // Deleted meanwhile: nothing more to queue.
        replay.status = "done".into();
        conn.update_replay(replay).await?;
        return Ok(());
    };
    let matcher = crate::delivery::fanout::Matcher::new(row);
    let cel_cost = conn.fanout().cel_cost;
    let events = conn
        .events_from(
            &replay.tenant_id,
            replay.cursor,
            replay.since.as_deref(),
            REPLAY_CHUNK,
        )
        .await?;
    let mut read_all = (events.len() as i64) < REPLAY_CHUNK;
    let mut truncated = false;
    // Numbers in the endpoint owner's log: an organisation's is its network's.
    let network = eventflow_model::id::is_organisation_id(&replay.tenant_id);
    let mut events: Vec<&Event> = events
        .iter()
        .filter(|e| e.number_in(network) <= replay.up_to)
        .collect();
    // The filter's evaluations of one chunk share the budget of one write's
    // filters: a costly filter makes the chunk shorter, not longer. Each
    // evaluation has its whole budget: the chunk ends before an event the
    // rest could not pay for, and the next chunk starts with it.
    let mut budget = cel_cost.saturating_mul(crate::delivery::fanout::REQUEST_BUDGET);
    let mut outcomes = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        if i > 0 && budget < cel_cost {
            events.truncate(i);
            read_all = false;
            truncated = true;
            break;
        }
        let (outcome, used) = matcher.matches_event_counted(event, cel_cost);
        budget -= used.min(budget);
        outcomes.push(outcome);
    }
    let last = match events.last() {
        Some(e) => e.number_in(network),
        // Nothing left up to `up_to`.
        None if !truncated => replay.up_to,
        None => replay.cursor,
    };
    let mut existing: std::collections::HashMap<i64, Delivery> = std::collections::HashMap::new();
    if !events.is_empty() {
        for d in conn
            .deliveries_between(&replay.endpoint_id, replay.cursor, last)
            .await?
        {
            // An event replayed twice keeps its latest delivery.
            match existing.get(&d.event_sequence) {
                Some(kept) if kept.endpoint_sequence > d.endpoint_sequence => {}
                _ => {
                    existing.insert(d.event_sequence, d);
                }
            }
        }
    }
    let mut fresh = Vec::new();
    let mut queued = 0i64;
    for (event, outcome) in events.iter().zip(outcomes) {
        match outcome {
            Outcome::Match => {}
            Outcome::NoMatch => continue,
            Outcome::OverBudget => {
                let message = crate::delivery::fanout::own_budget_spent(cel_cost);
                if let Some(e) = matcher.over_budget(event, message, &now) {
                    conn.record_filter_error(&replay.endpoint_id, &e).await?;
                }
                continue;
            }
        }
        queued += 1;
        match existing.remove(&event.number_in(network)) {
            Some(mut d) => {
                d.status = DeliveryStatus::Pending;
                d.updated_at = now.clone();
                d.window_started_at = Some(now.clone());
                conn.update_delivery(&d, Some(&now), None).await?;
            }
            None => fresh.push((DeliveryId::fresh().into_string(), *event, patient_of(event))),
        }
    }
    let rows: Vec<NewDelivery<'_>> = fresh
        .iter()
        .map(|(did, event, patient)| NewDelivery {
            id: did,
            tenant_id: &replay.tenant_id,
            endpoint_id: &replay.endpoint_id,
            event,
            event_sequence: event.number_in(network),
            patient_id: patient.as_deref(),
            ordered: matcher.ordered(),
            now: &now,
            next_at: &now,
            lease_owner: None,
        })
        .collect();
    // One row per statement: the insert numbers a row after the endpoint's
    // last, which rows of one statement would all see alike.
    for row in rows.chunks(1) {
        conn.insert_deliveries(row).await?;
    }
    if (matcher.row.disabled || matcher.row.verification.holds()) && queued > 0 {
        conn.reschedule_pending(&replay.endpoint_id, PAUSED, &now)
            .await?;
    }
    replay.queued += queued;
    replay.cursor = last.max(replay.cursor);
    if read_all || replay.cursor >= replay.up_to {
        replay.status = "done".into();
        replay.cursor = replay.up_to.max(replay.cursor);
    }
    conn.update_replay(replay).await?;
    Ok(())
}

/// How long a fresh lease lasts, for the dispatcher's bookkeeping.
pub fn lease() -> jiff::SignedDuration {
    LEASE
}
