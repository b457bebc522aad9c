//! The event catalogue: every event type, topic and operational type, with
//! a JSON Schema (draft 2020-12) of its whole envelope and an example of
//! one, and the AsyncAPI 3.0 document of the webhooks.
//!
//! The schemas are written from the same [`FieldSpec`](eventflow_model::resource::FieldSpec)
//! tables that validate records (through the OpenAPI document's record
//! schemas) and from the topic table that decides topics, so they cannot
//! drift from what the server writes. The examples are the committed
//! envelopes of `docs/envelopes/`: real deliveries, which a test compares
//! with what the server sends, so they cannot drift either.
//!
//! A schema is written once, for a place to find the schemas it shares
//! (`Defs`): its own `$defs` when served alone, `#/components/schemas/`
//! inside the OpenAPI and AsyncAPI documents. The envelope schemas keep to
//! the keywords JSON Schema draft-07 (AsyncAPI's schema format) and 2020-12
//! share.

use eventflow_model::ResourceType;
use eventflow_model::event::{Action, EventType, OPERATIONAL_TYPES};
use eventflow_model::resource::SERVER_FIELDS;
use eventflow_model::topics::{self, TOPICS, Topic};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::openapi::{Mode, endpoint_schema, id_schema, object_schema};

/// What an entry of the catalogue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A record event type: `appointment.updated`.
    Event,
    /// A clinical topic, carried by record events: `appointment.cancelled`.
    Topic,
    /// An event about delivery itself: `endpoint.disabled`.
    Operational,
}

/// One entry of `GET /v1/event-types`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    #[serde(rename = "type")]
    pub name: String,
    pub kind: Kind,
    /// The record type (`appointment`), or for an operational type what its
    /// `resource.type` is (`endpoint`, `delivery`).
    pub resource_type: &'static str,
    pub description: String,
    #[serde(skip)]
    what: What,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum What {
    Event(EventType),
    Topic(&'static Topic),
    Operational(&'static str),
}

/// Every entry: each record type's three event types and its topics, in
/// the order of the record types, then the operational types.
pub fn entries() -> Vec<Entry> {
    let mut out = Vec::new();
    for rt in ResourceType::ALL {
        for action in Action::ALL {
            let t = EventType::new(rt, action);
            out.push(Entry {
                name: t.name(),
                kind: Kind::Event,
                resource_type: rt.name(),
                description: t.description(),
                what: What::Event(t),
            });
        }
        for topic in TOPICS.iter().filter(|t| t.resource == rt) {
            out.push(Entry {
                name: topic.name.to_string(),
                kind: Kind::Topic,
                resource_type: rt.name(),
                description: topic.description.to_string(),
                what: What::Topic(topic),
            });
        }
    }
    for (name, description) in OPERATIONAL_TYPES {
        out.push(Entry {
            name: name.to_string(),
            kind: Kind::Operational,
            resource_type: operational_resource(name),
            description: description.to_string(),
            what: What::Operational(name),
        });
    }
    out
}

/// The entry named `name`.
pub fn entry(name: &str) -> Option<Entry> {
    entries().into_iter().find(|e| e.name == name)
}

/// What an operational event's `resource.type` is: the part of its type
/// before the dot.
fn operational_resource(name: &'static str) -> &'static str {
    name.split_once('.').map_or(name, |(r, _)| r)
}

/// Where the schemas a schema shares are found.
#[derive(Debug, Clone, Copy)]
enum Defs {
    /// `#/$defs/…`: a schema served alone.
    Own,
    /// `#/components/schemas/…`: inside the OpenAPI or AsyncAPI document.
    Components,
}

impl Defs {
    fn to(self, name: &str) -> Value {
        match self {
            Defs::Own => json!({"$ref": format!("#/$defs/{name}")}),
            Defs::Components => json!({"$ref": format!("#/components/schemas/{name}")}),
        }
    }
}

/// The schemas of a record type that its envelopes refer to: the record
/// (as the API returns it) and its merge patch (the shape of `previous`).
fn record_defs(rt: ResourceType) -> [(String, Value); 2] {
    [
        (
            rt.title().to_string(),
            object_schema(rt.fields(), Mode::Create, true),
        ),
        (
            format!("{}Patch", rt.title()),
            object_schema(rt.fields(), Mode::Patch, false),
        ),
    ]
}

/// The members every envelope has, thin or full, whatever its type.
const ALWAYS: [&str; 6] = [
    "id",
    "type",
    "sequence",
    "createdAt",
    "tenantId",
    "resource",
];

/// The schemas of the members every envelope has, whatever its type.
fn common(name: &str, resource_type: &str, resource_id: Value) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert(
        "id".into(),
        id_schema(
            Some("evt"),
            "The event id; the same in every delivery of it: receivers deduplicate on it.",
        ),
    );
    p.insert("type".into(), json!({"const": name}));
    p.insert(
        "sequence".into(),
        json!({"type": "integer", "minimum": 0, "description": "Per tenant, gap-free, in commit order; 0 only in a test send."}),
    );
    p.insert(
        "networkSequence".into(),
        json!({"type": "integer", "minimum": 1, "description": "While the clinic is a member of an organisation: the event's number in the network's log, per organisation, gap-free, in commit order."}),
    );
    p.insert(
        "createdAt".into(),
        json!({"type": "string", "format": "date-time"}),
    );
    p.insert(
        "tenantId".into(),
        json!({"type": "string", "pattern": "^(ten|org)_[A-Za-z0-9]+$", "maxLength": eventflow_model::id::MAX_ID_LEN,
            "description": "The clinic (ten_…), or for an organisation's own operational events the organisation (org_…)."}),
    );
    p.insert(
        "resource".into(),
        json!({"type": "object", "additionalProperties": false, "required": ["type", "id", "version"], "properties": {
            "type": {"const": resource_type},
            "id": resource_id,
            "version": {"type": "integer", "minimum": 1, "description": "The record's version after the change (its last, for a delete)."}}}),
    );
    p
}

/// The schema of `topics` for events that can carry `names`.
fn topics_schema(names: &[&str]) -> Value {
    let description =
        "What the change means clinically (README, \"Clinical topics\"); may be empty.";
    if names.is_empty() {
        return json!({"type": "array", "maxItems": 0, "description": description});
    }
    json!({"type": "array", "uniqueItems": true, "items": {"type": "string", "enum": names}, "description": description})
}

fn envelope_of(required: &[&str], properties: Map<String, Value>) -> Value {
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": properties})
}

/// The envelope of a record event type.
fn record_envelope(t: EventType, defs: Defs) -> Value {
    let rt = t.resource;
    let mut p = common(
        &t.name(),
        rt.name(),
        id_schema(Some(rt.id_prefix()), "The record's id."),
    );
    let what = match t.action {
        Action::Deleted => "The record's last state",
        _ => "The record after the change",
    };
    p.insert(
        "data".into(),
        json!({"allOf": [defs.to(rt.title())], "required": SERVER_FIELDS,
            "description": format!("{what}; absent in a thin payload.")}),
    );
    let mut required = ALWAYS.to_vec();
    let patient = match rt {
        ResourceType::Patient => Some(true),
        _ => rt.field("patientId").map(|f| f.required),
    };
    if let Some(always) = patient {
        p.insert(
            "patientId".into(),
            id_schema(
                Some(ResourceType::Patient.id_prefix()),
                "The patient whose data the record holds: the record's own id for a patient, its patientId otherwise.",
            ),
        );
        if always {
            required.push("patientId");
        }
    }
    let names: Vec<&str> = topics::topics_of(rt, t.action).map(|t| t.name).collect();
    p.insert("topics".into(), topics_schema(&names));
    required.push("topics");
    let mut schema = if t.action == Action::Updated {
        let fields: Vec<&str> = rt.fields().iter().map(|f| f.name).collect();
        p.insert(
            "previous".into(),
            json!({"allOf": [defs.to(&format!("{}Patch", rt.title()))], "minProperties": 1,
                "description": "The prior value of each changed top-level field (null: it was absent); absent in a thin payload."}),
        );
        p.insert(
            "changedFields".into(),
            json!({"type": "array", "minItems": 1, "uniqueItems": true, "items": {"type": "string", "enum": fields},
                "description": "The names of the changed top-level fields."}),
        );
        required.push("changedFields");
        let mut s = envelope_of(&required, p);
        // A full payload has both; a thin one neither.
        s["allOf"] = json!([
            {"if": {"required": ["data"]}, "then": {"required": ["previous"]}},
            {"if": {"required": ["previous"]}, "then": {"required": ["data"]}},
        ]);
        s
    } else {
        envelope_of(&required, p)
    };
    schema["description"] = json!(t.description());
    schema
}

/// What a delivery's operational event carries in `data`.
fn delivery_data(with_failures_before: bool) -> Value {
    let mut p = json!({
        "id": id_schema(Some("dlv"), "The delivery."),
        "endpointId": id_schema(Some("ep"), "The endpoint."),
        "eventId": id_schema(Some("evt"), "The event delivered."),
        "eventType": {"type": "string"},
        "endpointSequence": {"type": "integer", "minimum": 1},
        "status": {"type": "string", "enum": eventflow_store::DeliveryStatus::NAMES},
        "attemptCount": {"type": "integer", "minimum": 0},
        "lastStatusCode": {"type": ["integer", "null"], "description": "The last attempt's HTTP status, if it got one."},
        "lastError": {"type": ["string", "null"], "description": "Why the last attempt got no answer, if it did not."},
    });
    let mut required = vec![
        "id",
        "endpointId",
        "eventId",
        "eventType",
        "endpointSequence",
        "status",
        "attemptCount",
        "lastStatusCode",
        "lastError",
    ];
    if with_failures_before {
        p["failuresBefore"] = json!({"type": "integer", "minimum": 1, "description": "How many failures in a row came before this success."});
        required.push("failuresBefore");
    }
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": p})
}

/// What `endpoint.disabled` carries in `data`: the endpoint as the API shows
/// it, without its secret and custom headers, its URL cut to its origin.
fn endpoint_data() -> Value {
    let mut schema = endpoint_schema(false);
    if let Some(p) = schema["properties"].as_object_mut() {
        p.remove("secret");
        p.remove("headers");
    }
    schema["additionalProperties"] = json!(false);
    // Every field the API's endpoint always has, but the headers.
    if let Some(required) = schema["required"].as_array_mut() {
        required.retain(|f| f != "headers");
    }
    schema
}

/// The envelope of an operational type.
fn operational_envelope(name: &'static str, description: &str) -> Value {
    let resource = operational_resource(name);
    let (prefix, data) = match name {
        "endpoint.disabled" => ("ep", endpoint_data()),
        _ => ("dlv", delivery_data(name == "delivery.recovered")),
    };
    let mut p = common(name, resource, id_schema(Some(prefix), "Its id."));
    let mut data = data;
    data["description"] = json!("Absent in a thin payload.");
    p.insert("data".into(), data);
    p.insert("topics".into(), topics_schema(&[]));
    let required: Vec<&str> = ALWAYS.iter().copied().chain(["topics"]).collect();
    let mut schema = envelope_of(&required, p);
    schema["description"] = json!(description);
    schema
}

/// The envelope schema of an event type or operational type (a topic has
/// none of its own: its events are of its record type's types).
fn envelope(what: What, defs: Defs) -> Option<Value> {
    match what {
        What::Event(t) => Some(record_envelope(t, defs)),
        What::Operational(name) => OPERATIONAL_TYPES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| operational_envelope(name, d)),
        What::Topic(_) => None,
    }
}

const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The JSON Schema (draft 2020-12) of the whole envelope of an entry, to
/// serve alone. A topic's is its record events' that can carry it, with
/// the topic among `topics`.
pub fn schema(entry: &Entry) -> Value {
    let mut defs = Map::new();
    let resource = match entry.what {
        What::Event(t) => Some(t.resource),
        What::Topic(t) => Some(t.resource),
        What::Operational(_) => None,
    };
    if let Some(rt) = resource {
        defs.extend(record_defs(rt));
    }
    let mut schema = match entry.what {
        What::Topic(topic) => {
            let mut options = Vec::new();
            for action in topic.actions {
                let t = EventType::new(topic.resource, *action);
                defs.insert(t.name(), record_envelope(t, Defs::Own));
                options.push(Defs::Own.to(&t.name()));
            }
            json!({
                "anyOf": options,
                "required": ["topics"],
                "properties": {"topics": {"contains": {"const": topic.name}}},
            })
        }
        what => envelope(what, Defs::Own).unwrap_or(Value::Null),
    };
    schema["$schema"] = json!(DIALECT);
    schema["title"] = json!(entry.name);
    schema["description"] = json!(entry.description);
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    schema
}

/// The committed example of each entry (`docs/envelopes/{name}.json`).
macro_rules! examples {
    ($($name:literal),+ $(,)?) => {
        const EXAMPLES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../../docs/envelopes/", $name, ".json")))),+
        ];
    };
}

examples!(
    "patient.created",
    "patient.updated",
    "patient.deleted",
    "patient.deactivated",
    "practitioner.created",
    "practitioner.updated",
    "practitioner.deleted",
    "appointment.created",
    "appointment.updated",
    "appointment.deleted",
    "appointment.booked",
    "appointment.rescheduled",
    "appointment.cancelled",
    "appointment.arrived",
    "appointment.noshow",
    "appointment.fulfilled",
    "encounter.created",
    "encounter.updated",
    "encounter.deleted",
    "encounter.started",
    "encounter.finished",
    "observation.created",
    "observation.updated",
    "observation.deleted",
    "observation.abnormal",
    "observation.critical",
    "prescription.created",
    "prescription.updated",
    "prescription.deleted",
    "prescription.discontinued",
    "consent.created",
    "consent.updated",
    "consent.deleted",
    "consent.signed",
    "consent.revoked",
    "intake.created",
    "intake.updated",
    "intake.deleted",
    "intake.completed",
    "note.created",
    "note.updated",
    "note.deleted",
    "lab.created",
    "lab.updated",
    "lab.deleted",
    "lab.final",
    "lab.amended",
    "lab.abnormal",
    "endpoint.disabled",
    "delivery.failed",
    "delivery.recovered",
);

/// An envelope of the entry, valid against its schema: for a topic, one
/// that carries it.
pub fn example(entry: &Entry) -> Option<Value> {
    EXAMPLES
        .iter()
        .find(|(name, _)| *name == entry.name)
        .and_then(|(_, text)| serde_json::from_str(text).ok())
}

/// The headers of every delivery.
fn headers_schema() -> Value {
    json!({"type": "object", "required": [
        "webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
        "x-eventflow-event-type", "x-eventflow-topics", "x-eventflow-attempt", "x-eventflow-endpoint-sequence"],
    "properties": {
        "webhook-id": {"type": "string", "description": "The event id (evt_…), the same on every attempt: deduplicate on it."},
        "webhook-timestamp": {"type": "string", "pattern": "^[0-9]+$", "description": "When this attempt was signed, in Unix seconds; reject one far from now."},
        "webhook-signature": {"type": "string", "pattern": "^v1a?,[A-Za-z0-9+/=]+( v1a?,[A-Za-z0-9+/=]+)*$",
            "description": "Standard Webhooks signatures of `{webhook-id}.{webhook-timestamp}.{body}`, space-separated: `v1,<base64 HMAC-SHA256>` (an hmac endpoint, keyed with its whsec_ secret) or `v1a,<base64 Ed25519>` (an ed25519 endpoint, checked with its whpk_ public key). Two while a rotated secret still signs; one matching is enough."},
        "x-clinikapi-signature": {"type": "string", "pattern": "^t=[0-9]+(,v1=[0-9a-f]{64})+$",
            "description": "HMAC endpoints only: `t=<timestamp>,v1=<hex HMAC-SHA256 of {timestamp}.{body}>`."},
        "content-type": {"type": "string", "const": "application/json"},
        "x-eventflow-event-type": {"type": "string", "description": "The envelope's type."},
        "x-eventflow-topics": {"type": "string", "pattern": "^([a-z]+\\.[a-z-]+(,[a-z]+\\.[a-z-]+)*)?$", "description": "The envelope's topics, comma-separated; empty when none."},
        "x-eventflow-attempt": {"type": "string", "pattern": "^[1-9][0-9]*$", "description": "1 for the first attempt of this delivery."},
        "x-eventflow-endpoint-sequence": {"type": "string", "pattern": "^[0-9]+$", "description": "The delivery's number among the endpoint's deliveries, gap-free (0 for a test send)."},
    }})
}

/// The message of each event type and operational type (topics are not
/// messages of their own: they are carried by their record type's events).
fn messages() -> Vec<(Entry, Value)> {
    entries()
        .into_iter()
        .filter_map(|e| envelope(e.what, Defs::Components).map(|payload| (e, payload)))
        .collect()
}

/// The schemas the envelopes of the OpenAPI and AsyncAPI documents refer
/// to: each record type's and its merge patch's.
pub fn shared_schemas() -> Map<String, Value> {
    ResourceType::ALL
        .into_iter()
        .flat_map(record_defs)
        .collect()
}

/// A message's summary: its description, and the topics it can carry.
fn message_description(e: &Entry) -> String {
    let carried: Vec<&str> = match e.what {
        What::Event(t) => topics::topics_of(t.resource, t.action)
            .map(|t| t.name)
            .collect(),
        _ => Vec::new(),
    };
    if carried.is_empty() {
        e.description.clone()
    } else {
        format!(
            "{} Topics it can carry: {}.",
            e.description,
            carried.join(", ")
        )
    }
}

/// OpenAPI 3.1's `webhooks`: what a webhook endpoint receives, one entry per
/// message.
pub fn openapi_webhooks() -> Value {
    let headers = headers_schema();
    let required: Vec<&str> = headers["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let parameters: Vec<Value> = headers["properties"]
        .as_object()
        .map(|p| {
            p.iter()
                .map(|(name, schema)| {
                    let mut schema = schema.clone();
                    let description = schema
                        .as_object_mut()
                        .and_then(|o| o.remove("description"))
                        .unwrap_or(json!(""));
                    json!({"name": name, "in": "header", "required": required.contains(&name.as_str()),
                        "description": description, "schema": schema})
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Map::new();
    for (e, payload) in messages() {
        out.insert(
            e.name.clone(),
            json!({"post": {
                "tags": ["Webhooks"],
                "operationId": format!("on_{}", e.name.replace('.', "_")),
                "summary": format!("{} ({})", e.name, match e.kind { Kind::Operational => "operational", _ => "record event" }),
                "description": message_description(&e),
                "parameters": parameters,
                "requestBody": {"required": true, "content": {"application/json": {"schema": payload}}},
                "responses": {
                    "2XX": {"description": "Received: the delivery succeeded."},
                    "410": {"description": "Gone: the endpoint is disabled (endpoint.disabled)."},
                    "default": {"description": "Any other answer, or none in 30 s: retried for 72 hours."},
                },
            }}),
        );
    }
    Value::Object(out)
}

/// The AsyncAPI 3.0 document of the webhooks: one channel (each endpoint's
/// own URL), one message per event type, and the send operation.
pub fn asyncapi() -> Value {
    let mut messages_map = Map::new();
    let mut channel_messages = Map::new();
    let mut operation_messages = Vec::new();
    for (e, payload) in messages() {
        let mut message = json!({
            "name": e.name,
            "title": e.name,
            "summary": e.description,
            "description": message_description(&e),
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/WebhookHeaders"},
            "payload": payload,
        });
        if let Some(example) = example(&e) {
            message["examples"] = json!([{"name": "example", "payload": example}]);
        }
        messages_map.insert(e.name.clone(), message);
        channel_messages.insert(
            e.name.clone(),
            json!({"$ref": format!("#/components/messages/{}", e.name)}),
        );
        operation_messages
            .push(json!({"$ref": format!("#/channels/webhooks/messages/{}", e.name)}));
    }
    let mut schemas = shared_schemas();
    schemas.insert("WebhookHeaders".into(), headers_schema());
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Event Flow webhooks",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "What Event Flow sends to a webhook endpoint: every event a tenant's endpoint matches (by type, topic or filter) as an HTTP POST of its envelope, signed (Standard Webhooks), retried for 72 hours. A thin endpoint gets the envelope without `data` and `previous`. The REST API is described at /openapi.json.",
        },
        "defaultContentType": "application/json",
        "channels": {
            "webhooks": {
                "address": null,
                "title": "A webhook endpoint",
                "description": "The URL of an endpoint registered with POST /v1/endpoints; each gets the events its eventTypes and filter match.",
                "messages": channel_messages,
            },
        },
        "operations": {
            "deliver": {
                "action": "send",
                "channel": {"$ref": "#/channels/webhooks"},
                "title": "Deliver an event",
                "summary": "POST one envelope to an endpoint; a 2xx answer is success.",
                "bindings": {"http": {"method": "POST"}},
                "messages": operation_messages,
            },
        },
        "components": {
            "schemas": schemas,
            "messages": messages_map,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_and_topic_is_listed_once_with_an_example_of_it() {
        let all = entries();
        let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(all.len(), 30 + TOPICS.len() + OPERATIONAL_TYPES.len());
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert_eq!(EXAMPLES.len(), all.len());
        for e in &all {
            let example = example(e).unwrap_or_else(|| panic!("an example of {}", e.name));
            match e.kind {
                Kind::Topic => {
                    assert!(
                        example["topics"]
                            .as_array()
                            .unwrap()
                            .contains(&json!(e.name))
                    );
                }
                _ => assert_eq!(example["type"], json!(e.name)),
            }
            assert_eq!(example["resource"]["type"], json!(e.resource_type));
        }
    }
}
