//! `GET /fhir/metadata`: what this server does in FHIR, stated from the
//! same tables the routes are made of.

use eventflow_model::ResourceType;
use serde_json::{Value, json};

/// A search parameter: its name, FHIR type and what it does.
fn param(name: &str, kind: &str, doc: &str) -> Value {
    json!({ "name": name, "type": kind, "documentation": doc })
}

fn resource(rt: ResourceType) -> Value {
    let mut params = vec![
        param(
            "_id",
            "token",
            "The resource's id (`pat-…`, or Event Flow's `pat_…`).",
        ),
        param(
            "_lastUpdated",
            "date",
            "`ge` or `gt` a date or an instant: changed since then.",
        ),
    ];
    for name in super::search_params(rt) {
        match name {
            "patient" => params.push(param(
                "patient",
                "reference",
                "The patient: `Patient/pat-…`.",
            )),
            "status" => params.push(param("status", "token", "The status code.")),
            "identifier" => params.push(param(
                "identifier",
                "token",
                "The medical record number (`value` or `system|value`).",
            )),
            "date" => params.push(param(
                "date",
                "date",
                if rt == ResourceType::Appointment {
                    "When it starts: a date or an instant, with eq, gt, ge, lt, le, sa or eb; given twice, both hold."
                } else {
                    "Its period (date to end; no end: going on), compared as FHIR compares periods: a date or an instant, with eq, gt, ge, lt, le, sa or eb; given twice, both hold."
                },
            )),
            _ => {}
        }
    }
    let mut interactions = vec![
        json!({ "code": "read" }),
        json!({ "code": "vread" }),
        json!({ "code": "search-type" }),
    ];
    if super::write::WRITABLE.contains(&rt) {
        interactions.push(json!({ "code": "create" }));
        interactions.push(json!({ "code": "update" }));
    }
    json!({
        "type": rt.fhir_name(),
        "profile": format!("http://hl7.org/fhir/StructureDefinition/{}", rt.fhir_name()),
        "interaction": interactions,
        "versioning": "versioned",
        "documentation": "vread: the current version, and earlier ones while the event log holds the record's events (event_retention_days).",
        "readHistory": true,
        "updateCreate": false,
        "conditionalCreate": false,
        "conditionalUpdate": false,
        "searchParam": params,
    })
}

/// The CapabilityStatement of the server whose FHIR base is `base`, dated `now`.
pub fn statement(base: &str, now: &str) -> Value {
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now,
        "publisher": "Event Flow",
        "kind": "instance",
        "software": { "name": "Event Flow", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "Event Flow's FHIR facade over its clinical records", "url": base },
        // Builds on the Subscriptions Backport IG's R4B server statement
        // (docs/fhir.md says what of it is not served).
        "instantiates": ["http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server"],
        "fhirVersion": "4.3.0",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "documentation": "The records of the clinic the API key belongs to.",
            "security": {
                "description": "An Event Flow API key as a bearer token (Authorization: Bearer efk_…), with the scopes of the record types it reads.",
            },
            "resource": ResourceType::ALL
                .into_iter()
                .map(resource)
                .chain(std::iter::once(json!({
                    "type": "SubscriptionTopic",
                    "profile": "http://hl7.org/fhir/StructureDefinition/SubscriptionTopic",
                    "documentation": "What can be subscribed to: each record event type and each clinical topic. Any API key reads them.",
                    "interaction": [{ "code": "read" }, { "code": "search-type" }],
                    "searchParam": [
                        param("url", "uri", "The topic's canonical URL."),
                        param("_id", "token", "The topic's name, e.g. appointment.cancelled."),
                    ],
                })))
                .chain(std::iter::once(json!({
                    "type": "Subscription",
                    "profile": "http://hl7.org/fhir/StructureDefinition/Subscription",
                    "supportedProfile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"],
                    "documentation": "Topic-based subscriptions (the Subscriptions Backport IG), rest-hook only; each is an endpoint. Needs endpoints:read and endpoints:write.",
                    "interaction": [{ "code": "read" }, { "code": "search-type" }, { "code": "create" }, { "code": "delete" }],
                    "searchParam": [
                        param("status", "token", "requested, active, error or off."),
                        param("url", "uri", "The channel's endpoint URL."),
                    ],
                    "operation": [
                        { "name": "status", "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status" },
                        { "name": "events", "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events" },
                    ],
                })))
                .collect::<Vec<_>>(),
        }],
    })
}
