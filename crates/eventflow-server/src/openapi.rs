//! The OpenAPI 3.1 description of `/v1`, served at `/openapi.json` and
//! rendered at `/docs` by the vendored Swagger UI (no request leaves the
//! machine).
//!
//! Record schemas and record routes are generated from the same
//! [`FieldSpec`] tables that validate requests and from the same
//! [`ResourceType::ALL`] loop that mounts the routes, so the document cannot
//! drift from what the server does.

use axum::Router;
use eventflow_model::resource::{FieldKind, FieldSpec};
use eventflow_model::{Event, ResourceRef, ResourceType};
use eventflow_store::{Attempt, AuditEntry, Delivery, Disclosure};
use serde_json::{Map, Value, json};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::AppState;
use crate::error::{ErrorBody, ErrorDetail};

pub fn router() -> Router<AppState> {
    // Swagger UI's default `validatorUrl` loads a badge from
    // validator.swagger.io whenever the page is not on localhost: "none"
    // keeps /docs from fetching anything off this server.
    SwaggerUi::new("/docs")
        .external_url_unchecked("/openapi.json", document())
        .config(Config::default().validator_url("none"))
        .into()
}

fn kind_schema(kind: FieldKind) -> Value {
    match kind {
        FieldKind::String => json!({"type": "string", "minLength": 1}),
        FieldKind::Date => json!({"type": "string", "format": "date"}),
        FieldKind::DateTime => json!({"type": "string", "format": "date-time"}),
        FieldKind::Enum(options) => json!({"type": "string", "enum": options}),
        FieldKind::Phone => json!({"type": "string", "pattern": "^\\+[1-9][0-9]{1,14}$"}),
        FieldKind::Email => json!({"type": "string", "format": "email"}),
        FieldKind::Number => json!({"type": "number"}),
        FieldKind::Count => json!({"type": "integer", "minimum": 0}),
        FieldKind::Bool => json!({"type": "boolean"}),
        FieldKind::NumberOrString => json!({"oneOf": [{"type": "number"}, {"type": "string"}]}),
        FieldKind::Ref(rt) => json!({
            "type": "string",
            "pattern": format!("^{}_", rt.id_prefix()),
            "description": format!("The id of a {rt} of the same tenant."),
        }),
        FieldKind::Object(fields) => object_schema(fields, false),
        FieldKind::List(fields) => {
            json!({"type": "array", "items": object_schema(fields, false), "maxItems": 1000})
        }
    }
}

fn object_schema(fields: &[FieldSpec], with_server_fields: bool) -> Value {
    let mut properties = Map::new();
    if with_server_fields {
        properties.insert("id".into(), json!({"type": "string", "readOnly": true}));
    }
    for f in fields {
        let mut schema = kind_schema(f.kind);
        if schema.get("description").is_none() {
            schema["description"] = json!(f.doc);
        }
        properties.insert(f.name.into(), schema);
    }
    if with_server_fields {
        properties.insert(
            "version".into(),
            json!({"type": "integer", "readOnly": true, "description": "Starts at 1; the ETag."}),
        );
        properties.insert(
            "createdAt".into(),
            json!({"type": "string", "format": "date-time", "readOnly": true}),
        );
        properties.insert(
            "updatedAt".into(),
            json!({"type": "string", "format": "date-time", "readOnly": true}),
        );
    }
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name)
        .collect();
    let mut o = json!({"type": "object", "properties": properties, "additionalProperties": false});
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    o
}

/// The JSON Schema utoipa derives for a type.
fn schema_of<T: utoipa::ToSchema>() -> Value {
    serde_json::to_value(T::schema()).unwrap_or_else(|_| json!({"type": "object"}))
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": json_content(schema)})
}

fn errors(codes: &[&str]) -> Map<String, Value> {
    let mut m = Map::new();
    for code in codes {
        m.insert(
            (*code).into(),
            json!({"description": "Error", "content": json_content(schema_ref("Error"))}),
        );
    }
    m
}

fn responses(success: (&str, Value), codes: &[&str]) -> Value {
    let mut m = errors(codes);
    m.insert(success.0.into(), success.1);
    Value::Object(m)
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn header(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "header", "required": false, "description": description, "schema": {"type": "string"}})
}

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}})
}

fn record_paths(paths: &mut Map<String, Value>, rt: ResourceType) {
    let t = rt.title();
    let c = rt.collection();
    let mut list_params = vec![
        query(
            "limit",
            "Page size, 1 to 500 (default 50).",
            json!({"type": "integer", "minimum": 1, "maximum": 500}),
        ),
        query(
            "cursor",
            "The `nextCursor` of the previous page.",
            json!({"type": "string"}),
        ),
        query(
            "updatedSince",
            "Only records updated at or after this time.",
            json!({"type": "string", "format": "date-time"}),
        ),
    ];
    if rt.field("patientId").is_some() {
        list_params.push(query(
            "patientId",
            "Only this patient's records.",
            json!({"type": "string"}),
        ));
    }
    if let Some(FieldKind::Enum(options)) = rt.field("status").map(|f| f.kind) {
        list_params.push(query(
            "status",
            "Only records with this status.",
            json!({"type": "string", "enum": options}),
        ));
    }
    paths.insert(
        format!("/v1/{c}"),
        json!({
            "post": {
                "tags": [t], "operationId": format!("create{t}"), "summary": format!("Create a {rt}; writes `{rt}.created`."),
                "parameters": [header("Idempotency-Key", "Same key and body within 24 h returns the first response and creates nothing.")],
                "requestBody": {"required": true, "content": json_content(schema_ref(t))},
                "responses": responses(("201", ok("Created", schema_ref(t))), &["400", "401", "409", "413", "422"]),
            },
            "get": {
                "tags": [t], "operationId": format!("list{t}s"), "summary": format!("List {c}, oldest first."),
                "parameters": list_params,
                "responses": responses(("200", ok("A page", json!({"type": "object", "properties": {
                    "data": {"type": "array", "items": schema_ref(t)},
                    "nextCursor": {"type": ["string", "null"]}}}))), &["401", "422"]),
            },
        }),
    );
    let mut read_params = vec![id_param()];
    if !rt.includable().is_empty() {
        let names: Vec<&str> = rt.includable().iter().map(|r| r.collection()).collect();
        read_params.push(query(
            "include",
            &format!(
                "Comma-separated related records to add under `included`: {} (or FHIR names).",
                names.join(", ")
            ),
            json!({"type": "string"}),
        ));
    }
    paths.insert(
        format!("/v1/{c}/{{id}}"),
        json!({
            "get": {
                "tags": [t], "operationId": format!("get{t}"), "summary": format!("Read a {rt}."),
                "parameters": read_params,
                "responses": responses(("200", ok("The record; ETag is its version", schema_ref(t))), &["401", "404", "422"]),
            },
            "patch": {
                "tags": [t], "operationId": format!("update{t}"),
                "summary": format!("JSON merge patch (RFC 7396); writes `{rt}.updated` unless nothing changed."),
                "parameters": [id_param(), header("If-Match", "The version the change is based on: 3, \"3\" or W/\"3\".")],
                "requestBody": {"required": true, "content": {
                    "application/merge-patch+json": {"schema": {"type": "object"}},
                    "application/json": {"schema": {"type": "object"}}}},
                "responses": responses(("200", ok("The record after the change", schema_ref(t))), &["400", "401", "404", "412", "422"]),
            },
            "delete": {
                "tags": [t], "operationId": format!("delete{t}"), "summary": format!("Delete a {rt}; writes `{rt}.deleted` with its last state."),
                "parameters": [id_param(), header("If-Match", "The version the deletion is based on.")],
                "responses": responses(("204", json!({"description": "Deleted"})), &["401", "404", "409", "412"]),
            },
        }),
    );
}

/// The whole document.
pub fn document() -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for rt in ResourceType::ALL {
        schemas.insert(rt.title().into(), object_schema(rt.fields(), true));
        record_paths(&mut paths, rt);
    }
    // The envelope, the error body and the audit entry come from the very
    // types the handlers serialise.
    schemas.insert("Error".into(), schema_of::<ErrorBody>());
    schemas.insert("ErrorDetail".into(), schema_of::<ErrorDetail>());
    schemas.insert("Event".into(), schema_of::<Event>());
    schemas.insert("ResourceRef".into(), schema_of::<ResourceRef>());
    schemas.insert("AuditEntry".into(), schema_of::<AuditEntry>());
    schemas.insert("Delivery".into(), schema_of::<Delivery>());
    schemas.insert("Attempt".into(), schema_of::<Attempt>());
    schemas.insert("Disclosure".into(), schema_of::<Disclosure>());
    schemas.insert("Endpoint".into(), endpoint_schema(false));
    schemas.insert("EndpointInput".into(), endpoint_schema(true));
    paths.insert("/v1/batch".into(), json!({"post": {
        "tags": ["Batch"], "operationId": "batch", "summary": "Up to 1,000 operations, all or nothing, in one transaction.",
        "parameters": [header("Idempotency-Key", "As on any POST.")],
        "requestBody": {"required": true, "content": json_content(json!({"type": "object", "required": ["operations"], "properties": {
            "operations": {"type": "array", "maxItems": 1000, "items": {"type": "object", "required": ["method", "path"], "properties": {
                "method": {"type": "string", "enum": ["POST", "PATCH", "DELETE"]},
                "path": {"type": "string", "examples": ["/v1/patients", "/v1/appointments/appt_…"]},
                "body": {"type": "object"},
                "ifMatch": {"type": "integer"}}}}}}))},
        "responses": responses(("200", ok("One result per operation", json!({"type": "object", "properties": {"results": {"type": "array", "items": {
            "type": "object", "properties": {"status": {"type": "integer"}, "body": {}}}}}}))), &["400", "401", "404", "409", "412", "413", "422"]),
    }}));
    let filter_params = [
        query(
            "after",
            "Only events with a larger sequence (default 0).",
            json!({"type": "integer", "minimum": 0}),
        ),
        query(
            "types",
            "Comma-separated event types or globs: appointment.*,encounter.updated",
            json!({"type": "string"}),
        ),
        query(
            "resourceType",
            "Only events about this record type.",
            json!({"type": "string"}),
        ),
        query(
            "resourceId",
            "Only events about this record.",
            json!({"type": "string"}),
        ),
    ];
    let mut poll_params = filter_params.to_vec();
    poll_params.push(query(
        "limit",
        "1 to 1000 (default 100).",
        json!({"type": "integer", "minimum": 1, "maximum": 1000}),
    ));
    poll_params.push(query(
        "wait",
        "Long poll: hold up to this many seconds (≤ 60) for the first event.",
        json!({"type": "integer", "minimum": 0, "maximum": 60}),
    ));
    paths.insert("/v1/events".into(), json!({"get": {
        "tags": ["Events"], "operationId": "listEvents", "summary": "Poll the event log; long poll with wait.",
        "parameters": poll_params,
        "responses": responses(("200", ok("Events in sequence order", json!({"type": "object", "properties": {
            "data": {"type": "array", "items": schema_ref("Event")},
            "nextAfter": {"type": "integer", "description": "The last sequence returned, or the after given."}}}))), &["401", "422"]),
    }}));
    let mut stream_params = filter_params.to_vec();
    stream_params.push(header(
        "Last-Event-ID",
        "Resume after this sequence (set by EventSource on reconnect).",
    ));
    paths.insert("/v1/events/stream".into(), json!({"get": {
        "tags": ["Events"], "operationId": "streamEvents", "summary": "Server-Sent Events; id: is the sequence.",
        "parameters": stream_params,
        "responses": {"200": {"description": "An event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    }}));
    paths.insert(
        "/v1/events/{id}".into(),
        json!({"get": {
            "tags": ["Events"], "operationId": "getEvent", "summary": "One event.",
            "parameters": [id_param()],
            "responses": responses(("200", ok("The event", schema_ref("Event"))), &["401", "404"]),
        }}),
    );
    paths.insert(
        "/v1/events/{id}/deliveries".into(),
        json!({"get": {
            "tags": ["Events"], "operationId": "listEventDeliveries",
            "summary": "Which endpoints the event went to, each delivery with every attempt.",
            "parameters": [id_param()],
            "responses": responses(("200", ok("Deliveries", json!({"type": "object", "properties": {
                "data": {"type": "array", "items": schema_ref("Delivery")}}}))), &["401", "404"]),
        }}),
    );
    paths.insert("/v1/event-types".into(), json!({"get": {
        "tags": ["Events"], "operationId": "listEventTypes", "summary": "Every event type with a one-line description.",
        "responses": responses(("200", ok("Event types", json!({"type": "object", "properties": {"data": {"type": "array", "items": {
            "type": "object", "properties": {"type": {"type": "string"}, "description": {"type": "string"}}}}}}))), &["401"]),
    }}));
    paths.insert("/v1/audit-log".into(), json!({"get": {
        "tags": ["Audit"], "operationId": "listAuditLog", "summary": "Every read and write of a record, newest first.",
        "parameters": [
            query("resourceType", "Only this record type.", json!({"type": "string"})),
            query("resourceId", "Only this record.", json!({"type": "string"})),
            query("limit", "1 to 1000 (default 100).", json!({"type": "integer"})),
            query("cursor", "The nextCursor of the previous page.", json!({"type": "string"}))],
        "responses": responses(("200", ok("A page", json!({"type": "object", "properties": {
            "data": {"type": "array", "items": schema_ref("AuditEntry")},
            "nextCursor": {"type": ["string", "null"]}}}))), &["401", "422"]),
    }}));
    webhook_paths(&mut paths);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Event Flow",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Clinical records whose every change becomes an event: poll it, stream it, or receive it as a signed webhook.",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <api key>"}},
        },
    })
}

/// An endpoint as returned (`input`: as sent to create or patch it).
fn endpoint_schema(input: bool) -> Value {
    let mut props = json!({
        "url": {"type": "string", "description": "http(s) URL; https only with --production; no private addresses unless allow_private_endpoints."},
        "description": {"type": ["string", "null"]},
        "eventTypes": {"type": "array", "items": {"type": "string"}, "description": "Event types and globs (appointment.*); empty: every event."},
        "filter": {"type": ["string", "null"], "description": "A CEL expression over the envelope, e.g. data.status == 'finished' && has(previous.status). Each evaluation has a cost budget (limits.cel_cost); one that can never fit is a 422."},
        "payload": {"type": "string", "enum": ["full", "thin"]},
        "ordering": {"type": "string", "enum": ["none", "resource"]},
        "rateLimit": {"type": ["integer", "null"], "minimum": 1, "maximum": 10000, "description": "Deliveries per second."},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "disabled": {"type": "boolean"},
        "signing": {"type": "string", "enum": ["hmac", "ed25519"], "description": "Set at creation only."},
    });
    if !input && let Some(o) = props.as_object_mut() {
        o.insert(
            "id".into(),
            json!({"type": "string", "description": "ep_…"}),
        );
        o.insert(
            "disabledReason".into(),
            json!({"type": ["string", "null"], "enum": ["manual", "gone", "failing", null]}),
        );
        o.insert("failureStreak".into(), json!({"type": "integer"}));
        o.insert(
            "filterError".into(),
            json!({
                "type": ["object", "null"],
                "description": "Set when the filter last ran out of its cost budget (limits.cel_cost): that event did not match. Cleared when the filter changes.",
                "properties": {
                    "message": {"type": "string"},
                    "eventId": {"type": "string"},
                    "at": {"type": "string", "format": "date-time"},
                },
                "required": ["message", "eventId", "at"],
            }),
        );
        o.insert(
            "publicKey".into(),
            json!({"type": "string", "description": "whpk_… (Ed25519 endpoints)"}),
        );
        o.insert(
            "secret".into(),
            json!({"type": "string", "description": "whsec_…: in the response to a create only"}),
        );
        o.insert(
            "createdAt".into(),
            json!({"type": "string", "format": "date-time"}),
        );
        o.insert(
            "updatedAt".into(),
            json!({"type": "string", "format": "date-time"}),
        );
    }
    let mut schema = json!({"type": "object", "properties": props});
    if input {
        schema["additionalProperties"] = json!(false);
    }
    schema
}

fn webhook_paths(paths: &mut Map<String, Value>) {
    let endpoint = || schema_ref("Endpoint");
    let list = |items: Value| json!({"type": "object", "properties": {"data": {"type": "array", "items": items}}});
    paths.insert("/v1/endpoints".into(), json!({
        "post": {"tags": ["Webhooks"], "operationId": "createEndpoint", "summary": "Register a webhook endpoint; the response holds its secret.",
            "requestBody": {"required": true, "content": json_content(schema_ref("EndpointInput"))},
            "responses": responses(("201", ok("The endpoint, with secret", endpoint())), &["400", "401", "413", "415", "422"])},
        "get": {"tags": ["Webhooks"], "operationId": "listEndpoints", "summary": "The tenant's endpoints.",
            "responses": responses(("200", ok("Endpoints", list(endpoint()))), &["401"])},
    }));
    paths.insert("/v1/endpoints/{id}".into(), json!({
        "get": {"tags": ["Webhooks"], "operationId": "getEndpoint", "summary": "One endpoint.", "parameters": [id_param()],
            "responses": responses(("200", ok("The endpoint", endpoint())), &["401", "404"])},
        "patch": {"tags": ["Webhooks"], "operationId": "updateEndpoint", "summary": "Change fields; null clears one; disabled: false re-enables.",
            "parameters": [id_param()],
            "requestBody": {"required": true, "content": json_content(schema_ref("EndpointInput"))},
            "responses": responses(("200", ok("The endpoint", endpoint())), &["400", "401", "404", "409", "422"])},
        "delete": {"tags": ["Webhooks"], "operationId": "deleteEndpoint", "summary": "Remove an endpoint (its delivery history stays).",
            "parameters": [id_param()], "responses": responses(("204", json!({"description": "Deleted"})), &["401", "404"])},
    }));
    let secret = json!({"type": "object", "properties": {
        "secret": {"type": "string"}, "publicKey": {"type": "string"},
        "previous": {"type": "array", "items": {"type": "object"}}}});
    paths.insert("/v1/endpoints/{id}/secret".into(), json!({"get": {"tags": ["Webhooks"], "operationId": "getEndpointSecret",
        "summary": "The signing secret (Ed25519: the public key), and any older one still signing.", "parameters": [id_param()],
        "responses": responses(("200", ok("The secret", secret.clone())), &["401", "404"])}}));
    paths.insert("/v1/endpoints/{id}/secret/rotate".into(), json!({"post": {"tags": ["Webhooks"], "operationId": "rotateEndpointSecret",
        "summary": "A new secret; the old one keeps signing for 24 hours.", "parameters": [id_param()],
        "responses": responses(("200", ok("The new secret", secret)), &["401", "404"])}}));
    paths.insert("/v1/endpoints/{id}/test".into(), json!({"post": {"tags": ["Webhooks"], "operationId": "testEndpoint",
        "summary": "Send a made-up event of a type now; returns the attempt.", "parameters": [id_param()],
        "requestBody": {"required": false, "content": json_content(json!({"type": "object", "properties": {"type": {"type": "string"}}}))},
        "responses": responses(("200", ok("The attempt", schema_ref("Attempt"))), &["400", "401", "404", "422"])}}));
    let replay = json!({"type": "object", "required": ["id", "endpointId", "status", "queued", "cursor", "upTo", "createdAt", "updatedAt"], "properties": {
        "id": {"type": "string", "description": "rpl_…"},
        "endpointId": {"type": "string"},
        "status": {"type": "string", "enum": ["running", "done"]},
        "queued": {"type": "integer", "description": "Events queued again so far."},
        "cursor": {"type": "integer", "description": "The last event sequence looked at."},
        "upTo": {"type": "integer", "description": "The tenant's latest sequence when the replay was asked for: it ends there."},
        "since": {"type": "string", "format": "date-time"},
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"}}});
    paths.insert("/v1/endpoints/{id}/replay".into(), json!({"post": {"tags": ["Webhooks"], "operationId": "replayEndpoint",
        "summary": "Queue again every matching event after a sequence or since a time.", "parameters": [id_param()],
        "requestBody": {"required": true, "content": json_content(json!({"type": "object", "properties": {
            "after": {"type": "integer"}, "since": {"type": "string", "format": "date-time"}}}))},
        "responses": responses(("202", ok("The replay: done, or running in the background", replay.clone())), &["400", "401", "404", "422"])}}));
    paths.insert("/v1/endpoints/{id}/replays/{replay}".into(), json!({"get": {"tags": ["Webhooks"], "operationId": "getReplay",
        "summary": "How far a replay has come.",
        "parameters": [id_param(), {"name": "replay", "in": "path", "required": true, "schema": {"type": "string"}, "description": "rpl_…"}],
        "responses": responses(("200", ok("The replay", replay)), &["401", "404"])}}));
    paths.insert("/v1/endpoints/{id}/deliveries".into(), json!({"get": {"tags": ["Webhooks"], "operationId": "listEndpointDeliveries",
        "summary": "An endpoint's deliveries, newest first.",
        "parameters": [id_param(),
            query("status", "pending, succeeded or failed.", json!({"type": "string", "enum": ["pending", "succeeded", "failed"]})),
            query("limit", "1 to 1000 (default 100).", json!({"type": "integer"})),
            query("cursor", "The nextCursor of the previous page.", json!({"type": "string"}))],
        "responses": responses(("200", ok("A page", json!({"type": "object", "properties": {
            "data": {"type": "array", "items": schema_ref("Delivery")}, "nextCursor": {"type": ["string", "null"]}}}))), &["401", "404", "422"])}}));
    paths.insert("/v1/endpoints/{id}/events".into(), json!({"get": {"tags": ["Webhooks"], "operationId": "listEndpointEvents",
        "summary": "The events an endpoint matched, by endpointSequence, after N.",
        "parameters": [id_param(),
            query("after", "An endpointSequence (default 0).", json!({"type": "integer"})),
            query("limit", "1 to 1000 (default 100).", json!({"type": "integer"}))],
        "responses": responses(("200", ok("Events with their endpointSequence", json!({"type": "object", "properties": {
            "data": {"type": "array", "items": schema_ref("Event")}, "nextAfter": {"type": "integer"}}}))), &["401", "404", "422"])}}));
    paths.insert("/v1/deliveries/{id}".into(), json!({"get": {"tags": ["Webhooks"], "operationId": "getDelivery",
        "summary": "One delivery with every attempt.", "parameters": [id_param()],
        "responses": responses(("200", ok("The delivery", schema_ref("Delivery"))), &["401", "404"])}}));
    paths.insert("/v1/deliveries/{id}/retry".into(), json!({"post": {"tags": ["Webhooks"], "operationId": "retryDelivery",
        "summary": "Attempt a delivery again now, whatever its status.", "parameters": [id_param()],
        "responses": responses(("202", ok("The delivery, pending", schema_ref("Delivery"))), &["401", "404"])}}));
    automation_paths(paths);
    paths.insert("/v1/disclosures".into(), json!({"get": {"tags": ["Webhooks"], "operationId": "listDisclosures",
        "summary": "Every successful delivery that carried a patient's data: who received it, when.",
        "parameters": [
            json!({"name": "patientId", "in": "query", "required": true, "schema": {"type": "string"}}),
            query("since", "Only deliveries at or after this time.", json!({"type": "string", "format": "date-time"})),
            query("limit", "1 to 10000 (default 1000).", json!({"type": "integer"}))],
        "responses": responses(("200", ok("Disclosures, oldest first", list(schema_ref("Disclosure")))), &["401", "422"])}}));
}

fn automation_paths(paths: &mut Map<String, Value>) {
    let list = |items: Value| json!({"type": "object", "properties": {"data": {"type": "array", "items": items}}});
    let page = |items: Value| {
        json!({"type": "object", "properties": {
        "data": {"type": "array", "items": items}, "nextCursor": {"type": ["string", "null"]}}})
    };
    let name_param =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let workflow = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "file": {"type": "string"},
        "status": {"type": "string", "enum": ["loaded", "error"]},
        "error": {"type": ["string", "null"]},
        "scope": {"type": "string", "enum": ["server", "tenant"]},
        "on": {"type": "array", "items": {"type": "string"}},
        "if": {"type": ["string", "null"]},
        "source": {"type": "string"}}});
    let yaml = json!({"application/yaml": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}});
    paths.insert("/v1/workflows".into(), json!({
        "get": {"tags": ["Automations"], "operationId": "listWorkflows",
            "summary": "The workflows the tenant runs (the server's and its own), each loaded or refused with the reason (file, step, field).",
            "responses": responses(("200", ok("Workflows", list(workflow.clone()))), &["401"])},
        "post": {"tags": ["Automations"], "operationId": "createWorkflow",
            "summary": "Create a workflow of the tenant from its YAML; a broken one is 422 with the file's error.",
            "requestBody": {"required": true, "content": yaml.clone()},
            "responses": responses(("201", ok("The workflow, loaded", workflow.clone())), &["401", "409", "413", "415", "422"])},
    }));
    paths.insert("/v1/workflows/{name}".into(), json!({
        "get": {"tags": ["Automations"], "operationId": "getWorkflow", "summary": "One workflow (with its source when it is the tenant's).",
            "parameters": [name_param.clone()],
            "responses": responses(("200", ok("The workflow", workflow.clone())), &["401", "404"])},
        "put": {"tags": ["Automations"], "operationId": "putWorkflow", "summary": "Create or replace the tenant's workflow of this name.",
            "parameters": [name_param.clone()], "requestBody": {"required": true, "content": yaml},
            "responses": responses(("200", ok("The workflow, replaced (201: created)", workflow)), &["401", "409", "413", "415", "422"])},
        "delete": {"tags": ["Automations"], "operationId": "deleteWorkflow", "summary": "Delete the tenant's workflow (the server's own: 409).",
            "parameters": [name_param], "responses": responses(("204", json!({"description": "Deleted"})), &["401", "404", "409"])},
    }));
    let step = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "type": {"type": "string"},
        "status": {"type": "string", "enum": ["succeeded", "failed", "retrying", "skipped"]},
        "error": {"type": ["string", "null"]}, "attempts": {"type": "integer"},
        "at": {"type": "string", "format": "date-time"}, "detail": {"type": "object"}}});
    let run = json!({"type": "object", "properties": {
        "id": {"type": "string"}, "workflow": {"type": "string"}, "eventId": {"type": ["string", "null"]},
        "trigger": {"type": "string", "enum": ["event", "timer"]}, "timerKey": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
        "startedAt": {"type": "string"}, "updatedAt": {"type": "string"}, "finishedAt": {"type": ["string", "null"]},
        "nextAttemptAt": {"type": ["string", "null"]}, "steps": {"type": "array", "items": step}}});
    paths.insert("/v1/workflow-runs".into(), json!({"get": {"tags": ["Automations"], "operationId": "listWorkflowRuns",
        "summary": "Workflow runs with each step's outcome, newest first.",
        "parameters": [
            query("workflow", "Runs of this workflow.", json!({"type": "string"})),
            query("status", "pending, succeeded or failed.", json!({"type": "string", "enum": ["pending", "succeeded", "failed"]})),
            query("eventId", "Runs started by this event.", json!({"type": "string"})),
            query("limit", "1 to 1000 (default 100).", json!({"type": "integer"})),
            query("cursor", "The nextCursor of the previous page.", json!({"type": "string"}))],
        "responses": responses(("200", ok("A page", page(run.clone()))), &["401", "422"])}}));
    paths.insert(
        "/v1/workflow-runs/{id}".into(),
        json!({"get": {"tags": ["Automations"], "operationId": "getWorkflowRun",
        "summary": "One run.", "parameters": [id_param()],
        "responses": responses(("200", ok("The run", run)), &["401", "404"])}}),
    );
    let notification = json!({"type": "object", "properties": {
        "id": {"type": "string"}, "channel": {"type": "string", "enum": ["sms", "email", "slack", "http", "claim"]},
        "direction": {"type": "string", "enum": ["outbound", "inbound"]}, "to": {"type": "string"},
        "subject": {"type": ["string", "null"]}, "body": {"type": "string"}, "workflow": {"type": ["string", "null"]},
        "runId": {"type": ["string", "null"]}, "step": {"type": ["string", "null"]}, "provider": {"type": "string"},
        "providerId": {"type": ["string", "null"]}, "providerStatus": {"type": ["string", "null"]},
        "createdAt": {"type": "string"}}});
    paths.insert("/v1/notifications".into(), json!({"get": {"tags": ["Automations"], "operationId": "listNotifications",
        "summary": "The outbox: every message automations sent (or, with no provider configured, would have sent), newest first.",
        "parameters": [
            query("limit", "1 to 1000 (default 100).", json!({"type": "integer"})),
            query("cursor", "The nextCursor of the previous page.", json!({"type": "string"}))],
        "responses": responses(("200", ok("A page", page(notification))), &["401", "422"])}}));
    paths.insert(
        "/v1/timers".into(),
        json!({"get": {"tags": ["Automations"], "operationId": "listTimers",
        "summary": "Pending timers, soonest first.",
        "parameters": [
            query("key", "This key only (exact match).", json!({"type": "string"})),
            query("limit", "1 to 10000 (default 1000).", json!({"type": "integer"}))],
        "responses": responses(("200", ok("Timers", list(json!({"type": "object", "properties": {
            "key": {"type": "string"}, "fireAt": {"type": "string"}, "workflow": {"type": "string"},
            "eventId": {"type": ["string", "null"]}, "runId": {"type": ["string", "null"]},
            "createdAt": {"type": "string"}}})))), &["401", "422"])}}),
    );
    paths.insert("/v1/inbound/twilio/{tenantId}".into(), json!({"post": {"tags": ["Automations"], "operationId": "inboundTwilioSms",
        "summary": "Twilio's incoming-message webhook: no API key; X-Twilio-Signature must match. C cancels the sender's next booked appointment, R answers with rescheduling instructions. Answers TwiML.",
        "security": [],
        "parameters": [
            json!({"name": "tenantId", "in": "path", "required": true, "schema": {"type": "string"}}),
            json!({"name": "X-Twilio-Signature", "in": "header", "required": true, "schema": {"type": "string"}})],
        "requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
            "From": {"type": "string"}, "To": {"type": "string"}, "Body": {"type": "string"}, "MessageSid": {"type": "string"}}}}}},
        "responses": responses(("200", json!({"description": "TwiML with the answer", "content": {"text/xml": {"schema": {"type": "string"}}}})), &["403", "404"])}}));
}
