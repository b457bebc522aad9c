//! What a FHIR subscription's endpoint is sent (the HL7 Subscriptions R5
//! Backport IG for R4B): a `history` Bundle whose first entry is a
//! `SubscriptionStatus` — `handshake` when it is made, `event-notification`
//! for each event, numbered by the endpoint's gap-free sequence — followed,
//! as its payload content asks, by the resource or its URL.

use eventflow_model::fhir::{Mapper, fhir_id};
use eventflow_model::{Event, ResourceType};
use eventflow_store::{EndpointRow, FhirContent, FhirSubscription};
use serde_json::{Value, json};

/// The `type` of a handshake's body (and its `x-eventflow-event-type`).
pub const HANDSHAKE_TYPE: &str = "fhir.handshake";
/// The `x-eventflow-event-type` of a heartbeat.
pub const HEARTBEAT_TYPE: &str = "fhir.heartbeat";

/// The subscription's URL (`{base}/fhir/Subscription/ep-…`).
pub fn subscription_url(sub: &FhirSubscription, row: &EndpointRow) -> String {
    format!("{}/fhir/Subscription/{}", base(sub), fhir_id(&row.id))
}

/// The topic's canonical URL.
pub fn topic_url(sub: &FhirSubscription) -> String {
    format!("{}/fhir/SubscriptionTopic/{}", base(sub), sub.topic)
}

fn base(sub: &FhirSubscription) -> &str {
    sub.base.trim_end_matches('/')
}

/// The `SubscriptionStatus` entry that opens every notification.
fn status_entry(
    sub: &FhirSubscription,
    row: &EndpointRow,
    status: &str,
    kind: &str,
    events_since_start: i64,
    events: Vec<Value>,
) -> Value {
    let sub_url = subscription_url(sub, row);
    let mut status = json!({
        "resourceType": "SubscriptionStatus",
        "status": status,
        "type": kind,
        "eventsSinceSubscriptionStart": events_since_start.to_string(),
        "subscription": { "reference": sub_url },
        "topic": topic_url(sub),
    });
    if !events.is_empty() {
        status["notificationEvent"] = json!(events);
    }
    json!({
        "fullUrl": format!("urn:uuid:{}", uuid_like(&row.id, kind, events_since_start)),
        "resource": status,
        "request": { "method": "GET", "url": format!("{sub_url}/$status") },
        "response": { "status": "200" },
    })
}

/// A stable `urn:uuid:` for a notification's status entry: the same
/// notification sent again (a retry, from any node) names its entry the
/// same. A UUID of version 8 made of the SHA-256 of what it names.
fn uuid_like(endpoint: &str, kind: &str, n: i64) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{endpoint}\n{kind}\n{n}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-8{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The handshake a subscription is sent when it is made.
pub fn handshake(sub: &FhirSubscription, row: &EndpointRow, now: &str) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "history",
        "timestamp": now,
        "entry": [status_entry(sub, row, "requested", "handshake", 0, Vec::new())],
    })
}

/// A heartbeat: the subscription is active and has sent `events` events
/// (a heartbeat does not count as one).
pub fn heartbeat(sub: &FhirSubscription, row: &EndpointRow, events: i64, now: &str) -> Value {
    let mut entry = status_entry(sub, row, "active", "heartbeat", events, Vec::new());
    // Each heartbeat is its own notification: its entry is named by when
    // it was sent as well.
    entry["fullUrl"] = json!(format!(
        "urn:uuid:{}",
        uuid_like(&row.id, &format!("heartbeat {now}"), events)
    ));
    json!({
        "resourceType": "Bundle",
        "type": "history",
        "timestamp": now,
        "entry": [entry],
    })
}

/// The notification of `event`, the subscription's `number`th.
pub fn notification(
    sub: &FhirSubscription,
    row: &EndpointRow,
    event: &Event,
    number: i64,
    now: &str,
) -> Value {
    events_bundle(
        sub,
        row,
        Kind::EventNotification,
        "active",
        number,
        &[(number, event)],
        sub.content,
        now,
    )
}

/// What a `history` Bundle of events is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sent as an event happens.
    EventNotification,
    /// The answer to `$events`: events asked for again.
    QueryEvent,
}

/// A `history` Bundle of `events` (each with its event number): the
/// `SubscriptionStatus` (`status`, `events_since_start`), then each
/// event's resource entry as `content` asks.
#[allow(clippy::too_many_arguments)]
pub fn events_bundle(
    sub: &FhirSubscription,
    row: &EndpointRow,
    kind: Kind,
    status: &str,
    events_since_start: i64,
    events: &[(i64, &Event)],
    content: FhirContent,
    now: &str,
) -> Value {
    let mut notified = Vec::with_capacity(events.len());
    let mut entries = Vec::with_capacity(events.len() + 1);
    for (number, event) in events {
        let rt = event.resource.resource_type.parse::<ResourceType>().ok();
        let resource_url = rt.map(|rt| {
            format!(
                "{}/fhir/{}/{}",
                base(sub),
                rt.fhir_name(),
                fhir_id(&event.resource.id)
            )
        });
        let mut ev = json!({ "eventNumber": number.to_string(), "timestamp": event.created_at });
        if content != FhirContent::Empty
            && let Some(url) = &resource_url
        {
            ev["focus"] = json!({ "reference": url });
        }
        notified.push(ev);
        if content != FhirContent::Empty
            && let (Some(rt), Some(url)) = (rt, resource_url)
        {
            let (method, code) = match event.event_type.rsplit('.').next() {
                Some("created") => ("POST", "201"),
                Some("deleted") => ("DELETE", "204"),
                _ => ("PUT", "200"),
            };
            let request_url = if method == "POST" {
                rt.fhir_name().to_string()
            } else {
                format!("{}/{}", rt.fhir_name(), fhir_id(&event.resource.id))
            };
            let mut entry = json!({
                "fullUrl": url,
                "request": { "method": method, "url": request_url },
                "response": { "status": code },
            });
            if content == FhirContent::FullResource && method != "DELETE" {
                entry["resource"] = Mapper::new(base(sub)).resource(rt, &event.data);
            }
            entries.push(entry);
        }
    }
    let kind = match kind {
        Kind::EventNotification => "event-notification",
        Kind::QueryEvent => "query-event",
    };
    entries.insert(
        0,
        status_entry(sub, row, status, kind, events_since_start, notified),
    );
    json!({
        "resourceType": "Bundle",
        "type": "history",
        "timestamp": now,
        "entry": entries,
    })
}

/// The subscription's status as `$status` answers it: a `searchset`
/// Bundle of one `SubscriptionStatus` (`query-status`).
pub fn status_bundle(
    sub: &FhirSubscription,
    row: &EndpointRow,
    status: &str,
    events_since_start: i64,
    error: Option<&str>,
    now: &str,
) -> Value {
    let mut entry = status_entry(
        sub,
        row,
        status,
        "query-status",
        events_since_start,
        Vec::new(),
    );
    if let Some(e) = error {
        entry["resource"]["error"] = json!([{ "text": e }]);
    }
    // A searchset's entries are matches, not history: no request/response.
    if let Some(o) = entry.as_object_mut() {
        o.remove("request");
        o.remove("response");
        o.insert("search".into(), json!({ "mode": "match" }));
    }
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": now,
        "total": 1,
        "entry": [entry],
    })
}

#[cfg(test)]
mod tests {
    use super::uuid_like;

    #[test]
    fn entry_ids_are_uuids_and_stable() {
        let a = uuid_like("ep_1", "event-notification", 3);
        assert_eq!(a, uuid_like("ep_1", "event-notification", 3));
        assert_ne!(a, uuid_like("ep_1", "event-notification", 4));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }
}
