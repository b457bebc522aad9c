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
use eventflow_model::scope::Scope;
use eventflow_model::validate::{self, MAX_STRING_CHARS};
use eventflow_model::{Event, ResourceRef, ResourceType};
use eventflow_store::{
    ApiKey, Attempt, AuditEntry, Channel, Delivery, Direction, Disclosure, RunOrigin, RunStatus,
    StepStatus,
};
use serde_json::{Map, Value, json};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::AppState;
use crate::auth::{Need, required};
use crate::error::{ErrorBody, ErrorDetail, ErrorKind};
use crate::routes::records::VERSION_PATTERN;

pub fn router() -> Router<AppState> {
    // Swagger UI's default `validatorUrl` loads a badge from
    // validator.swagger.io whenever the page is not on localhost: "none"
    // keeps /docs from fetching anything off this server.
    let docs: Router<AppState> = SwaggerUi::new("/docs")
        .config(Config::new(["/openapi.json"]).validator_url("none"))
        .into();
    docs.route("/openapi.json", axum::routing::get(openapi))
        .route("/asyncapi.json", axum::routing::get(asyncapi))
}

/// A document written once, on its first request, and then served as is
/// (never held before anyone asks for it).
fn written_once(
    cell: &'static std::sync::OnceLock<String>,
    write: fn() -> Value,
) -> impl axum::response::IntoResponse {
    let body = cell.get_or_init(|| write().to_string());
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.as_str(),
    )
}

/// `GET /openapi.json`: this document (public).
async fn openapi() -> impl axum::response::IntoResponse {
    static BODY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    written_once(&BODY, document)
}

/// `GET /asyncapi.json`: the webhooks as AsyncAPI 3.0 (public, like this
/// document).
async fn asyncapi() -> impl axum::response::IntoResponse {
    static BODY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    written_once(&BODY, crate::catalogue::asyncapi)
}

/// No string may hold a NUL character (`\u0000`).
const NO_NUL: &str = "^[^\\u0000]*$";

/// A record id: a lowercase prefix, `_`, ASCII letters and digits, at most
/// 100 characters ([`eventflow_model::id::is_well_formed`]).
const ANY_ID: &str = "^[a-z]+_[A-Za-z0-9]+$";

pub(crate) fn id_schema(prefix: Option<&str>, description: &str) -> Value {
    let pattern = match prefix {
        Some(p) => format!("^{p}_[A-Za-z0-9]+$"),
        None => ANY_ID.to_string(),
    };
    json!({"type": "string", "pattern": pattern, "maxLength": eventflow_model::id::MAX_ID_LEN, "description": description})
}

/// A string field. No string may hold a NUL character (`\u0000`) either:
/// the document says so once, in its description, rather than with a
/// pattern on every string.
fn text_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_STRING_CHARS})
}

/// Whether a schema is written for a create body (and response), or for a
/// JSON merge patch, where `null` removes a field.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    Create,
    Patch,
}

fn kind_schema(kind: FieldKind, mode: Mode) -> Value {
    match kind {
        FieldKind::String => text_schema(),
        FieldKind::Date => json!({"type": "string", "format": "date"}),
        FieldKind::DateTime => json!({"type": "string", "format": "date-time"}),
        FieldKind::Enum(options) => json!({"type": "string", "enum": options}),
        FieldKind::Phone => json!({"type": "string", "pattern": "^\\+[1-9][0-9]{1,14}$"}),
        FieldKind::Email => {
            json!({"type": "string", "pattern": validate::EMAIL_PATTERN, "maxLength": 254})
        }
        FieldKind::Number => json!({"type": "number"}),
        FieldKind::Count => json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        FieldKind::Bool => json!({"type": "boolean"}),
        FieldKind::NumberOrString => json!({"anyOf": [{"type": "number"}, text_schema()]}),
        FieldKind::Ref(rt) => id_schema(
            Some(rt.id_prefix()),
            &format!(
                "The id of a {rt} of the same tenant; one that names no such record is a 422."
            ),
        ),
        // A merge patch merges into a nested object, so its members may be
        // null too; a list is replaced whole, so its items are as created.
        FieldKind::Object(fields) => object_schema(fields, mode, false),
        FieldKind::List(fields) => {
            json!({"type": "array", "items": object_schema(fields, Mode::Create, false), "maxItems": 1000})
        }
    }
}

/// The schema of one field: `null` is allowed where the server takes it as
/// "absent" (an optional field of a create body) or "remove" (a patch).
fn field_schema(f: &FieldSpec, mode: Mode) -> Value {
    let mut schema = kind_schema(f.kind, mode);
    if schema.get("description").is_none() {
        schema["description"] = json!(f.doc);
    }
    if f.required {
        return schema;
    }
    let description = schema
        .as_object_mut()
        .and_then(|o| o.remove("description"))
        .unwrap_or(Value::Null);
    json!({"anyOf": [schema, {"type": "null"}], "description": description})
}

pub(crate) fn object_schema(fields: &[FieldSpec], mode: Mode, with_server_fields: bool) -> Value {
    let mut properties = Map::new();
    if with_server_fields {
        properties.insert("id".into(), json!({"type": "string", "readOnly": true}));
    }
    for f in fields {
        properties.insert(f.name.into(), field_schema(f, mode));
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
        properties.insert(
            "included".into(),
            json!({"type": "object", "readOnly": true, "description": "With `include=`: the related records, by collection.",
                "additionalProperties": {"type": "array", "items": {"type": "object"}}}),
        );
    }
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required && mode == Mode::Create)
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

/// The responses of an operation that takes an API key: its success, the
/// errors given, and 401 (no or bad key) and 429 (`rate_limited`: too many
/// failed keys from this address) that every such operation can answer.
fn responses(success: (&str, Value), codes: &[&str]) -> Value {
    let mut m = errors(codes);
    m.extend(errors(&["401", "429"]));
    m.insert(success.0.into(), success.1);
    Value::Object(m)
}

/// What any route reading a JSON body can answer besides its own errors:
/// 400 malformed JSON or a key given twice, 408 a body not complete in
/// time, 413 too large, 415 not JSON, 422 invalid (naming the field).
const BODY_ERRORS: [&str; 5] = ["400", "408", "413", "415", "422"];

fn with(extra: &[&'static str], base: &[&'static str]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = base.to_vec();
    v.extend_from_slice(extra);
    v
}

/// A query parameter. A string one given empty is a 422 (only where an
/// empty value means something does its schema say so).
fn query(name: &str, description: &str, mut schema: Value) -> Value {
    if schema["type"] == "string" && schema.get("minLength").is_none() {
        schema["minLength"] = json!(1);
    }
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn header(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "header", "required": false, "description": description, "schema": schema})
}

fn if_match_header(what: &str) -> Value {
    header(
        "If-Match",
        &format!(
            "The version the {what} is based on: 3, \"3\" or W/\"3\" (* or none: any). Another form is a 400; a stale version a 412."
        ),
        json!({"type": "string", "pattern": format!("^(\\*|{})$", &VERSION_PATTERN[1..VERSION_PATTERN.len() - 1])}),
    )
}

fn idempotency_header(description: &str) -> Value {
    header(
        "Idempotency-Key",
        &format!("{description} 1 to 255 visible ASCII characters; another is a 400."),
        json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([\t -~]*[!-~])?$"}),
    )
}

/// A path id: one that cannot be an id is a 404, like one that names no
/// record.
fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}})
}

/// The query parameters every list takes in the same shape.
fn limit_param(max: i64, default: i64) -> Value {
    query(
        "limit",
        &format!("Page size, 1 to {max} (default {default})."),
        json!({"type": "integer", "minimum": 1, "maximum": max}),
    )
}

fn cursor_param(prefix: Option<&str>) -> Value {
    query(
        "cursor",
        "The `nextCursor` of the previous page.",
        id_schema(prefix, "An id, as nextCursor gives it."),
    )
}

/// A comma-separated list of names, each may be surrounded by spaces, empty
/// items ignored: `observations, labs`.
fn name_list_pattern(names: &[&str]) -> String {
    let item = format!("(?:{})", names.join("|"));
    format!("^ *(?:{item} *)?(?:, *(?:{item} *)?)*$")
}

fn record_paths(paths: &mut Map<String, Value>, rt: ResourceType) {
    let t = rt.title();
    let c = rt.collection();
    let mut list_params = vec![
        limit_param(500, 50),
        cursor_param(Some(rt.id_prefix())),
        query(
            "updatedSince",
            "Only records updated at or after this time (RFC 3339).",
            json!({"type": "string", "format": "date-time"}),
        ),
    ];
    if rt.field("patientId").is_some() {
        list_params.push(query(
            "patientId",
            "Only this patient's records.",
            id_schema(Some(ResourceType::Patient.id_prefix()), "A patient id."),
        ));
    }
    if rt == ResourceType::Patient {
        list_params.push(query(
            "mrn",
            "Only the patients with this medical record number (across the network, with an organisation key).",
            json!({"type": "string", "maxLength": crate::routes::records::MAX_MRN_CHARS}),
        ));
    }
    if let Some(FieldKind::Enum(options)) = rt.field("status").map(|f| f.kind) {
        list_params.push(query(
            "status",
            "Only records with this status.",
            json!({"type": "string", "enum": options}),
        ));
    }
    // Each id names a record type by its prefix: a reference to a record
    // that does not exist is a 422 naming the field.
    let referential = if rt
        .fields()
        .iter()
        .any(|f| matches!(f.kind, FieldKind::Ref(_)))
    {
        " A reference (`patientId`, …) to a record that does not exist is a 422 naming it."
    } else {
        ""
    };
    paths.insert(
        format!("/v1/{c}"),
        json!({
            "post": {
                "tags": [t], "operationId": format!("create{t}"), "summary": format!("Create a {rt}; writes `{rt}.created`."),
                "description": format!("Fields given `null` are absent. A record whose JSON is larger than limits.max_record_bytes is a 413.{referential}"),
                "parameters": [idempotency_header("Same key and body within 24 h returns the first response and creates nothing; the same key with another body is a 409.")],
                "requestBody": {"required": true, "content": json_content(schema_ref(t))},
                "responses": responses(("201", ok("Created", schema_ref(t))), &with(&["409"], &BODY_ERRORS)),
            },
            "get": {
                "tags": [t], "operationId": format!("list{t}s"), "summary": format!("List {c}, oldest first."),
                "description": "A parameter given empty (`?status=`) or unknown is a 422 naming it.",
                "parameters": list_params,
                "responses": responses(("200", ok("A page", json!({"type": "object", "properties": {
                    "data": {"type": "array", "items": schema_ref(t)},
                    "nextCursor": {"type": ["string", "null"]}}}))), &["422"]),
            },
        }),
    );
    let mut read_params = vec![id_param()];
    if !rt.includable().is_empty() {
        let names: Vec<&str> = rt.includable().iter().map(|r| r.collection()).collect();
        let mut accepted: Vec<&str> = names.clone();
        accepted.extend(rt.includable().iter().map(|r| r.fhir_name()));
        read_params.push(query(
            "include",
            &format!(
                "Comma-separated related records to add under `included`: {} (or FHIR names).",
                names.join(", ")
            ),
            json!({"type": "string", "pattern": name_list_pattern(&accepted)}),
        ));
    }
    let patch_schema = format!("{t}Patch");
    paths.insert(
        format!("/v1/{c}/{{id}}"),
        json!({
            "get": {
                "tags": [t], "operationId": format!("get{t}"), "summary": format!("Read a {rt}."),
                "parameters": read_params,
                "responses": responses(("200", ok("The record; ETag is its version", schema_ref(t))), &["404", "422"]),
            },
            "patch": {
                "tags": [t], "operationId": format!("update{t}"),
                "summary": format!("JSON merge patch (RFC 7396); writes `{rt}.updated` unless nothing changed."),
                "description": format!("`null` removes a field (not a required one). Server fields (`id`, `version`, `createdAt`, `updatedAt`) are accepted only unchanged.{referential}"),
                "parameters": [id_param(), if_match_header("change")],
                "requestBody": {"required": true, "content": {
                    "application/merge-patch+json": {"schema": schema_ref(&patch_schema)},
                    "application/json": {"schema": schema_ref(&patch_schema)}}},
                "responses": responses(("200", ok("The record after the change", schema_ref(t))), &with(&["404", "412"], &BODY_ERRORS)),
            },
            "delete": {
                "tags": [t], "operationId": format!("delete{t}"), "summary": format!("Delete a {rt}; writes `{rt}.deleted` with its last state."),
                "description": "A record that other records still reference is a 409.",
                "parameters": [id_param(), if_match_header("deletion")],
                "responses": responses(("204", json!({"description": "Deleted"})), &["400", "404", "409", "412"]),
            },
        }),
    );
}

/// The whole document.
pub fn document() -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    for rt in ResourceType::ALL {
        schemas.insert(
            rt.title().into(),
            object_schema(rt.fields(), Mode::Create, true),
        );
        schemas.insert(
            format!("{}Patch", rt.title()),
            object_schema(rt.fields(), Mode::Patch, false),
        );
        record_paths(&mut paths, rt);
    }
    // The envelope, the error body and the audit entry come from the very
    // types the handlers serialise.
    schemas.insert("Error".into(), schema_of::<ErrorBody>());
    schemas.insert("ErrorDetail".into(), schema_of::<ErrorDetail>());
    schemas.insert("ErrorKind".into(), schema_of::<ErrorKind>());
    schemas.insert("Event".into(), schema_of::<Event>());
    schemas.insert("ResourceRef".into(), schema_of::<ResourceRef>());
    schemas.insert("AuditEntry".into(), schema_of::<AuditEntry>());
    schemas.insert("Delivery".into(), schema_of::<Delivery>());
    schemas.insert("Attempt".into(), schema_of::<Attempt>());
    schemas.insert("Disclosure".into(), schema_of::<Disclosure>());
    schemas.insert("Endpoint".into(), endpoint_schema(false));
    schemas.insert("EndpointInput".into(), endpoint_schema(true));
    // One shape per method and collection, so that each operation's body
    // is the record's own schema.
    let if_match_prop = json!({"anyOf": [
        {"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX},
        {"type": "string", "pattern": VERSION_PATTERN},
        {"type": "null"}], "description": "As If-Match: the version the change is based on."});
    let mut operation_shapes = Vec::new();
    for rt in ResourceType::ALL {
        let c = rt.collection();
        let record_path = format!("^/v1/{c}/[a-z]+_[A-Za-z0-9]+$");
        operation_shapes.push(json!({"type": "object", "required": ["method", "path", "body"], "additionalProperties": false, "properties": {
            "method": {"type": "string", "enum": ["POST"]}, "path": {"type": "string", "pattern": format!("^/v1/{c}/?$")},
            "body": schema_ref(rt.title()), "ifMatch": if_match_prop.clone()}}));
        operation_shapes.push(json!({"type": "object", "required": ["method", "path", "body"], "additionalProperties": false, "properties": {
            "method": {"type": "string", "enum": ["PATCH"]}, "path": {"type": "string", "pattern": record_path},
            "body": schema_ref(&format!("{}Patch", rt.title())), "ifMatch": if_match_prop.clone()}}));
        operation_shapes.push(json!({"type": "object", "required": ["method", "path"], "additionalProperties": false, "properties": {
            "method": {"type": "string", "enum": ["DELETE"]}, "path": {"type": "string", "pattern": record_path},
            "body": {"description": "Ignored."}, "ifMatch": if_match_prop.clone()}}));
    }
    paths.insert("/v1/batch".into(), json!({"post": {
        "tags": ["Batch"], "operationId": "batch", "summary": "Up to 1,000 operations, all or nothing, in one transaction.",
        "description": "The first operation that fails fails the batch, with its `index`: 404 a record that does not exist, 409, 412 a stale ifMatch, 413, 422 (also a reference to a record that does not exist). Up to 16 MiB.",
        "parameters": [idempotency_header("As on any POST.")],
        "requestBody": {"required": true, "content": json_content(json!({"type": "object", "required": ["operations"], "additionalProperties": false, "properties": {
            "operations": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"oneOf": operation_shapes}}}}))},
        "responses": responses(("200", ok("One result per operation", json!({"type": "object", "properties": {"results": {"type": "array", "items": {
            "type": "object", "properties": {"status": {"type": "integer"}, "body": {}}}}}}))), &with(&["404", "409", "412"], &BODY_ERRORS)),
    }}));
    let filter_params = [
        query(
            "after",
            "Only events with a larger sequence (default 0).",
            json!({"type": "integer", "minimum": 0}),
        ),
        query(
            "types",
            "Comma-separated event types or globs: appointment.*,encounter.updated (a `*` only at the end; each at most 100 characters, at most 50).",
            json!({"type": "string", "pattern": "^ *(?:(?:[a-z0-9._-]*\\*|[a-z0-9_-]*\\.[a-z0-9._-]*) *)?(?:, *(?:(?:[a-z0-9._-]*\\*|[a-z0-9_-]*\\.[a-z0-9._-]*) *)?)*$"}),
        ),
        query(
            "resourceType",
            "Only events about this record type.",
            json!({"type": "string", "enum": ResourceType::ALL.map(ResourceType::name)}),
        ),
        query(
            "resourceId",
            "Only events about this record.",
            id_schema(None, "A record id."),
        ),
    ];
    let mut poll_params = filter_params.to_vec();
    poll_params.push(limit_param(1000, 100));
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
            "nextAfter": {"type": "integer", "description": "The last sequence returned, or the after given."}}}))), &["422"]),
        "description": "A long poll (wait > 0) counts against the key's open streams: past limits.streams_per_key it is a 429 `too_many_streams` with Retry-After.",
    }}));
    let mut stream_params = filter_params.to_vec();
    stream_params.push(header(
        "Last-Event-ID",
        "Resume after this sequence (set by EventSource on reconnect); overrides after. Another value is a 400.",
        json!({"type": "string", "pattern": "^[0-9]{1,18}$"}),
    ));
    paths.insert("/v1/events/stream".into(), json!({"get": {
        "tags": ["Events"], "operationId": "streamEvents", "summary": "Server-Sent Events; id: is the sequence.",
        "parameters": stream_params,
        "description": "Past limits.streams_per_key open streams and long polls of one key, a 429 `too_many_streams` with Retry-After.",
        "responses": responses(("200", json!({"description": "An event stream: each event's id is its sequence, its data the event's JSON; a comment every 15 s keeps the connection open.",
            "content": {"text/event-stream": {"schema": {"type": "object", "required": ["data"], "properties": {
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "event": {"type": "string"},
                "data": {"type": "string", "contentMediaType": "application/json"}}}}}})), &["400", "422"]),
    }}));
    paths.insert(
        "/v1/events/{id}".into(),
        json!({"get": {
            "tags": ["Events"], "operationId": "getEvent", "summary": "One event.",
            "parameters": [id_param()],
            "responses": responses(("200", ok("The event", schema_ref("Event"))), &["404"]),
        }}),
    );
    paths.insert(
        "/v1/events/{id}/deliveries".into(),
        json!({"get": {
            "tags": ["Events"], "operationId": "listEventDeliveries",
            "summary": "Which endpoints the event went to, each delivery with every attempt.",
            "parameters": [id_param()],
            "responses": responses(("200", ok("Deliveries", json!({"type": "object", "properties": {
                "data": {"type": "array", "items": schema_ref("Delivery")}}}))), &["404"]),
        }}),
    );
    let names: Vec<String> = crate::catalogue::entries()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let type_param = json!({"name": "type", "in": "path", "required": true,
        "description": "An event type, topic or operational type; another name is a 404.",
        "schema": {"type": "string"}, "examples": {"topic": {"value": "appointment.cancelled"}, "event": {"value": "encounter.updated"}}});
    paths.insert("/v1/event-types".into(), json!({"get": {
        "tags": ["Events"], "operationId": "listEventTypes",
        "summary": "The event catalogue: every event type, clinical topic and operational type, with a one-line description.",
        "responses": responses(("200", ok("The catalogue", json!({"type": "object", "required": ["data"], "properties": {"data": {"type": "array", "items": {
            "type": "object", "required": ["type", "kind", "resourceType", "description"], "properties": {
                "type": {"type": "string", "enum": names},
                "kind": {"type": "string", "enum": ["event", "topic", "operational"], "description": "event: a record event type; topic: a clinical topic, carried by record events; operational: an event about delivery."},
                "resourceType": {"type": "string", "description": "The record type, or for an operational type its resource.type (endpoint, delivery)."},
                "description": {"type": "string"}}}}}}))), &[]),
    }}));
    paths.insert("/v1/event-types/{type}/schema".into(), json!({"get": {
        "tags": ["Events"], "operationId": "getEventTypeSchema",
        "summary": "The JSON Schema (draft 2020-12) of the whole envelope of a type; of a topic, of the envelopes that carry it.",
        "parameters": [type_param],
        "responses": responses(("200", {
            let mut r = ok("A JSON Schema", json!({"type": "object"}));
            r["content"] = json!({"application/schema+json": {"schema": {"type": "object"}}});
            r
        }), &["404"]),
    }}));
    paths.insert("/v1/event-types/{type}/example".into(), json!({"get": {
        "tags": ["Events"], "operationId": "getEventTypeExample",
        "summary": "An envelope of a type (of a topic: one that carries it), valid against its schema.",
        "parameters": [type_param],
        "responses": responses(("200", ok("An envelope", schema_ref("Event"))), &["404"]),
    }}));
    paths.insert("/v1/audit-log".into(), json!({"get": {
        "tags": ["Audit"], "operationId": "listAuditLog", "summary": "Every read and write of a record, newest first.",
        "parameters": [
            query("resourceType", "Only this record type.", json!({"type": "string", "enum": ResourceType::ALL.map(ResourceType::name)})),
            query("resourceId", "Only this record.", id_schema(None, "A record id.")),
            limit_param(1000, 100),
            cursor_param(None)],
        "responses": responses(("200", ok("A page", json!({"type": "object", "properties": {
            "data": {"type": "array", "items": schema_ref("AuditEntry")},
            "nextCursor": {"type": ["string", "null"]}}}))), &["422"]),
    }}));
    webhook_paths(&mut paths);
    key_paths(&mut paths);
    clinic_paths(&mut paths);
    schemas.insert("ApiKey".into(), schema_of::<ApiKey>());
    with_scopes(&mut paths);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Event Flow",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Clinical records whose every change becomes an event: poll it, stream it, or receive it as a signed webhook.\n\nNo string may hold a NUL character (`\\u0000`), in a body (a value or a member name) or a query parameter: a 422 naming the field. Errors are `{\"error\": {\"type\", \"message\", \"field\"?, \"index\"?}}`.\n\nClinic networks (README, \"Clinic networks\"): an organisation key sends `Eventflow-Clinic: ten_…` to act on one member clinic (a clinic that is not its member is a 404; a clinic key may name only itself). Without it, an organisation key reads its network: `/v1/events` is the network's log numbered by `networkSequence`, record lists span every member clinic with `tenantId` on each record, and what acts on one clinic is a 422 naming `Eventflow-Clinic`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "webhooks": crate::catalogue::openapi_webhooks(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <api key>. Each operation's security requirement lists the scope its key needs (README, \"Keys and scopes\"); a key without it gets a 403 `forbidden` naming the scope."}},
        },
    })
}

/// Every event type, the operational ones included.
fn event_type_names() -> Vec<String> {
    eventflow_model::event::all_types()
        .map(|(t, _)| t)
        .collect()
}

/// The scope each operation needs, from [`crate::auth::required`] (the
/// function the server checks with), as its security requirement, and the
/// 403 every operation that needs one can answer.
fn with_scopes(paths: &mut Map<String, Value>) {
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let Ok(m) = method.to_uppercase().parse::<axum::http::Method>() else {
                continue;
            };
            let scopes = match required(&m, path) {
                Need::Public => continue,
                Need::Key => Vec::new(),
                Need::Scope(scope) => vec![scope.name],
            };
            op["security"] = json!([{ "apiKey": scopes }]);
            if let Some(r) = op["responses"].as_object_mut() {
                r.extend(errors(&["403"]));
            }
        }
    }
}

fn clinic_paths(paths: &mut Map<String, Value>) {
    let clinic = json!({"type": "object", "required": ["id", "name", "joinedAt"], "properties": {
        "id": {"type": "string", "description": "ten_…"},
        "name": {"type": "string"},
        "joinedAt": {"type": "string", "format": "date-time"}}});
    let no_org = "An organisation key without Eventflow-Clinic only; to any other key (a 404) there is no organisation.";
    paths.insert("/v1/clinics".into(), json!({
        "get": {"tags": ["Clinics"], "operationId": "listClinics", "summary": "The organisation's member clinics, oldest member first.",
            "description": no_org,
            "responses": responses(("200", ok("Clinics", json!({"type": "object", "properties": {"data": {"type": "array", "items": clinic.clone()}}}))), &["404"])},
        "post": {"tags": ["Clinics"], "operationId": "createClinic",
            "summary": "A new member clinic and its first key (every scope), shown only in this answer.",
            "description": format!("{no_org} A name another tenant has is a 409."),
            "requestBody": {"required": true, "content": json_content(json!({"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": crate::routes::clinics::MAX_NAME_CHARS, "pattern": "[^ ]"}}}))},
            "responses": responses(("201", ok("The clinic, with its first key", json!({"allOf": [clinic, {"type": "object", "required": ["apiKey"], "properties": {
                "apiKey": {"type": "string", "pattern": "^efk_[A-Za-z0-9_-]{43}$"}}}]}))), &with(&["404", "409"], &BODY_ERRORS))},
    }));
    paths.insert("/v1/clinics/{id}".into(), json!({"delete": {"tags": ["Clinics"], "operationId": "removeClinic",
        "summary": "End a membership: the clinic's events are the network's no more from its next write on. The clinic and its data stay.",
        "description": no_org,
        "parameters": [id_param()], "responses": responses(("204", json!({"description": "No longer a member"})), &["404"])}}));
}

fn key_paths(paths: &mut Map<String, Value>) {
    let scope_names: Vec<&str> = Scope::all().into_iter().map(|s| s.name).collect();
    let with_secret = json!({"allOf": [schema_ref("ApiKey"), {"type": "object", "required": ["key"], "properties": {
        "key": {"type": "string", "pattern": "^efk_[A-Za-z0-9_-]{43}$", "description": "The secret: shown only in this answer."}}}]});
    paths.insert("/v1/api-keys".into(), json!({
        "post": {"tags": ["Keys"], "operationId": "createApiKey",
            "summary": "A new key with the scopes given (at most the caller's own); the secret is in this answer only.",
            "description": "A scope the calling key does not hold is a 403 naming it; an unknown scope a 422 naming it. More than limits.keys_per_tenant live keys is a 409.",
            "requestBody": {"required": true, "content": json_content(json!({"type": "object", "required": ["name", "scopes"], "additionalProperties": false, "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": crate::routes::keys::MAX_NAME_CHARS},
                "scopes": {"type": "array", "minItems": 1, "maxItems": eventflow_model::scope::MAX_SCOPES, "items": {"type": "string", "enum": scope_names}},
                "expiresAt": {"type": ["string", "null"], "format": "date-time", "description": "After this the key is a 401; must be in the future."}}}))},
            "responses": responses(("201", ok("The key, with its secret", with_secret.clone())), &with(&["409"], &BODY_ERRORS))},
        "get": {"tags": ["Keys"], "operationId": "listApiKeys", "summary": "The tenant's live keys, oldest first, without secrets.",
            "responses": responses(("200", ok("Keys", json!({"type": "object", "properties": {"data": {"type": "array", "items": schema_ref("ApiKey")}}}))), &[])},
    }));
    paths.insert("/v1/api-keys/{id}".into(), json!({
        "get": {"tags": ["Keys"], "operationId": "getApiKey", "summary": "One live key, without its secret.", "parameters": [id_param()],
            "responses": responses(("200", ok("The key", schema_ref("ApiKey"))), &["404"])},
        "delete": {"tags": ["Keys"], "operationId": "revokeApiKey",
            "summary": "Revoke a key: a 401 on every node within a second. Only a key holding all its scopes may.",
            "parameters": [id_param()], "responses": responses(("204", json!({"description": "Revoked"})), &["404"])},
    }));
    paths.insert("/v1/api-keys/{id}/rotate".into(), json!({"post": {"tags": ["Keys"], "operationId": "rotateApiKey",
        "summary": "A new secret for the same key; the old one works graceSeconds more (default 0). Only a key holding all its scopes may.",
        "parameters": [id_param()],
        "requestBody": {"required": false, "content": json_content(json!({"type": ["object", "null"], "additionalProperties": false, "properties": {
            "graceSeconds": {"type": ["integer", "null"], "minimum": 0, "maximum": crate::routes::keys::MAX_GRACE_SECONDS, "description": "Seconds the old secret keeps working; null or absent: 0."}}}))},
        "responses": responses(("200", ok("The key, with its new secret", with_secret)), &with(&["404"], &BODY_ERRORS))}}));
}

/// An endpoint as returned (`input`: as sent to create or patch it).
pub(crate) fn endpoint_schema(input: bool) -> Value {
    let event_type_or_glob = json!({"anyOf": [
        {"type": "string", "enum": event_type_names()},
        {"type": "string", "pattern": "^[a-z0-9._-]*\\*$", "maxLength": 100}]});
    let mut props = json!({
        "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\u0000-\\u0020]+$", "description": "An absolute http(s) URL; https only with --production; no private addresses unless allow_private_endpoints. A URL the server cannot send to is a 422 naming url."},
        "description": {"type": ["string", "null"], "maxLength": 1000},
        "eventTypes": {"type": ["array", "null"], "items": event_type_or_glob, "maxItems": eventflow_model::event::MAX_PATTERNS, "description": "Event types and globs (appointment.*); empty: every event."},
        "filter": {"type": ["string", "null"], "description": "A CEL expression over the envelope, e.g. data.status == 'finished' && has(previous.status). Each evaluation has a cost budget (limits.cel_cost); one that can never fit is a 422."},
        "payload": {"type": "string", "enum": ["full", "thin"]},
        "ordering": {"type": "string", "enum": ["none", "resource"]},
        "rateLimit": {"type": ["integer", "null"], "minimum": 1, "maximum": 10000, "description": "Deliveries per second."},
        "headers": {"type": ["object", "null"], "maxProperties": 20, "description": "Sent with every delivery: names are HTTP tokens of at most 100 characters; a delivery's own headers (webhook-*, content-type, x-eventflow-*, …) cannot be given (422).",
            "additionalProperties": {"type": "string", "pattern": "^[\\t -~]*$", "maxLength": 4096}},
        "disabled": {"type": "boolean"},
        "signing": {"type": "string", "enum": ["hmac", "ed25519"], "description": "Set at creation only."},
        "recipient": {"type": ["string", "null"], "minLength": 1, "maxLength": 200, "description": "Who receives the data (an organisation's name), as disclosures record it; null: the URL's host."},
        "purpose": {"type": "string", "enum": ["treatment", "payment", "operations", "other"], "description": "Why the recipient receives patient data, as disclosures record it (default operations). A patient's disclosure accounting lists only other."},
        "purposeText": {"type": ["string", "null"], "minLength": 1, "maxLength": 200, "description": "What the data is for: required with purpose other, refused with any other purpose."},
        "owner": {"type": ["string", "null"], "minLength": 1, "maxLength": 200, "description": "Who manages the endpoint (a vendor's name): a portal link for that owner sees and manages only the endpoints it owns."},
    });
    if !input && let Some(o) = props.as_object_mut() {
        o.insert(
            "id".into(),
            json!({"type": "string", "description": "ep_…"}),
        );
        o.insert(
            "kind".into(),
            json!({"type": "string", "enum": ["webhook", "fhir-subscription"], "description": "fhir-subscription: made by POST /fhir/Subscription (docs/fhir.md); its notifications are FHIR Bundles and its handshake is its verification. Its url, eventTypes, filter, payload, headers and ordering are changed only through FHIR, and it has no test send."}),
        );
        o.insert(
            "disabledReason".into(),
            json!({"type": ["string", "null"], "enum": ["manual", "gone", "failing", "unverified", null]}),
        );
        o.insert("failureStreak".into(), json!({"type": "integer"}));
        o.insert(
            "verification".into(),
            json!({"type": "string", "enum": ["pending", "verified", "skipped"], "description": "pending: a challenge is out and deliveries wait for its answer; verified: it answered at its current URL; skipped: never challenged (not required by endpoint_verification when made, or made before verification existed)."}),
        );
        o.insert(
            "verifiedAt".into(),
            json!({"type": ["string", "null"], "format": "date-time"}),
        );
        o.insert(
            "verificationError".into(),
            json!({"type": ["string", "null"], "description": "Why the last challenge was not answered, while pending."}),
        );
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
    // Every endpoint shown has every field (null when unset) but publicKey
    // (an Ed25519 one only) and secret (the answer to a create only).
    let required: Vec<String> = props
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .filter(|k| *k != "publicKey" && *k != "secret")
        .cloned()
        .collect();
    let mut schema = json!({"type": "object", "properties": props});
    if input {
        schema["additionalProperties"] = json!(false);
    } else {
        schema["required"] = json!(required);
    }
    schema
}

fn webhook_paths(paths: &mut Map<String, Value>) {
    let endpoint = || schema_ref("Endpoint");
    let list = |items: Value| json!({"type": "object", "properties": {"data": {"type": "array", "items": items}}});
    paths.insert("/v1/endpoints".into(), json!({
        "post": {"tags": ["Webhooks"], "operationId": "createEndpoint", "summary": "Register a webhook endpoint; the response holds its secret.",
            "requestBody": {"required": true, "content": json_content(schema_ref("EndpointInput"))},
            "responses": responses(("201", ok("The endpoint, with secret", endpoint())), &BODY_ERRORS)},
        "get": {"tags": ["Webhooks"], "operationId": "listEndpoints", "summary": "The tenant's endpoints.",
            "responses": responses(("200", ok("Endpoints", list(endpoint()))), &["422"])},
    }));
    paths.insert("/v1/endpoints/{id}".into(), json!({
        "get": {"tags": ["Webhooks"], "operationId": "getEndpoint", "summary": "One endpoint.", "parameters": [id_param()],
            "responses": responses(("200", ok("The endpoint", endpoint())), &["404"])},
        "patch": {"tags": ["Webhooks"], "operationId": "updateEndpoint", "summary": "Change fields; null clears one; disabled: false re-enables.",
            "parameters": [id_param()],
            "requestBody": {"required": true, "content": json_content(schema_ref("EndpointInput"))},
            "responses": responses(("200", ok("The endpoint", endpoint())), &with(&["404", "409"], &BODY_ERRORS))},
        "delete": {"tags": ["Webhooks"], "operationId": "deleteEndpoint", "summary": "Remove an endpoint (its delivery history stays).",
            "parameters": [id_param()], "responses": responses(("204", json!({"description": "Deleted"})), &["404"])},
    }));
    let secret = json!({"type": "object", "properties": {
        "secret": {"type": "string"}, "publicKey": {"type": "string"},
        "previous": {"type": "array", "items": {"type": "object"}}}});
    paths.insert("/v1/endpoints/{id}/secret".into(), json!({"get": {"tags": ["Webhooks"], "operationId": "getEndpointSecret",
        "summary": "The signing secret (Ed25519: the public key), and any older one still signing.", "parameters": [id_param()],
        "responses": responses(("200", ok("The secret", secret.clone())), &["404"])}}));
    paths.insert("/v1/endpoints/{id}/secret/rotate".into(), json!({"post": {"tags": ["Webhooks"], "operationId": "rotateEndpointSecret",
        "summary": "A new secret; the old one keeps signing for 24 hours.", "parameters": [id_param()],
        "responses": responses(("200", ok("The new secret", secret)), &["404"])}}));
    paths.insert("/v1/endpoints/{id}/test".into(), json!({"post": {"tags": ["Webhooks"], "operationId": "testEndpoint",
        "summary": "Send a made-up event of a type now; returns the attempt.", "parameters": [id_param()],
        "requestBody": {"required": false, "content": json_content(json!({"type": ["object", "null"], "additionalProperties": false, "properties": {
            "type": {"type": "string", "enum": event_type_names(), "description": "The event type to make up (default appointment.created)."}}}))},
        "responses": responses(("200", ok("The attempt", schema_ref("Attempt"))), &with(&["404"], &BODY_ERRORS))}}));
    paths.insert("/v1/portal-links".into(), json!({"post": {"tags": ["Webhooks"], "operationId": "createPortalLink",
        "summary": "A single-use sign-in link to a portal session that sees and manages only the endpoints with this owner (and creates endpoints with it), read-only if asked. Making and using it are audit entries.",
        "requestBody": {"required": true, "content": json_content(json!({"type": "object", "additionalProperties": false, "required": ["owner"], "properties": {
            "owner": {"type": "string", "minLength": 1, "maxLength": 200, "description": "The endpoints' owner (their owner field), e.g. a vendor's name."},
            "readOnly": {"type": ["boolean", "null"], "description": "The session may look, not change (default false)."},
            "expiresInSeconds": {"type": ["integer", "null"], "minimum": 60, "maximum": 86400, "description": "How long the link may be used (default 3600)."}}}))},
        "responses": responses(("201", ok("The link", json!({"type": "object", "required": ["id", "url", "owner", "readOnly", "expiresAt"], "properties": {
            "id": {"type": "string", "description": "plk_…"},
            "url": {"type": "string", "description": "Open it in a browser: it works once."},
            "owner": {"type": "string"},
            "readOnly": {"type": "boolean"},
            "expiresAt": {"type": "string", "format": "date-time"}}}))), &BODY_ERRORS)}}));
    paths.insert("/v1/endpoints/{id}/verify".into(), json!({"post": {"tags": ["Webhooks"], "operationId": "verifyEndpoint",
        "summary": "Send the endpoint a new verification challenge now: it is pending (its deliveries wait) until it answers. A disabled endpoint is a 409: enabling it sends a new challenge when it needs one.",
        "parameters": [id_param()],
        "responses": responses(("202", ok("The endpoint, pending", schema_ref("Endpoint"))), &["404", "409"])}}));
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
        "requestBody": {"required": true, "content": json_content(json!({"oneOf": [
            {"type": "object", "required": ["after"], "additionalProperties": false, "properties": {
                "after": {"type": "integer", "minimum": 0, "maximum": i64::MAX, "description": "Events after this sequence."}}},
            {"type": "object", "required": ["since"], "additionalProperties": false, "properties": {
                "since": {"type": "string", "format": "date-time", "description": "Events at or after this time."}}}]}))},
        "responses": responses(("202", ok("The replay: done, or running in the background", replay.clone())), &with(&["404"], &BODY_ERRORS))}}));
    paths.insert("/v1/endpoints/{id}/replays/{replay}".into(), json!({"get": {"tags": ["Webhooks"], "operationId": "getReplay",
        "summary": "How far a replay has come.",
        "parameters": [id_param(), {"name": "replay", "in": "path", "required": true, "schema": {"type": "string"}, "description": "rpl_…"}],
        "responses": responses(("200", ok("The replay", replay)), &["404"])}}));
    paths.insert("/v1/endpoints/{id}/deliveries".into(), json!({"get": {"tags": ["Webhooks"], "operationId": "listEndpointDeliveries",
        "summary": "An endpoint's deliveries, newest first.",
        "parameters": [id_param(),
            query("status", "pending, succeeded or failed.", json!({"type": "string", "enum": ["pending", "succeeded", "failed"]})),
            limit_param(1000, 100),
            cursor_param(None)],
        "responses": responses(("200", ok("A page", json!({"type": "object", "properties": {
            "data": {"type": "array", "items": schema_ref("Delivery")}, "nextCursor": {"type": ["string", "null"]}}}))), &["404", "422"])}}));
    paths.insert("/v1/endpoints/{id}/events".into(), json!({"get": {"tags": ["Webhooks"], "operationId": "listEndpointEvents",
        "summary": "The events an endpoint matched, by endpointSequence, after N.",
        "parameters": [id_param(),
            query("after", "An endpointSequence (default 0).", json!({"type": "integer", "minimum": 0, "maximum": i64::MAX})),
            limit_param(1000, 100)],
        "responses": responses(("200", ok("Events with their endpointSequence", json!({"type": "object", "properties": {
            "data": {"type": "array", "items": schema_ref("Event")}, "nextAfter": {"type": "integer"}}}))), &["404", "422"])}}));
    paths.insert(
        "/v1/deliveries/{id}".into(),
        json!({"get": {"tags": ["Webhooks"], "operationId": "getDelivery",
        "summary": "One delivery with every attempt.", "parameters": [id_param()],
        "responses": responses(("200", ok("The delivery", schema_ref("Delivery"))), &["404"])}}),
    );
    paths.insert("/v1/deliveries/{id}/retry".into(), json!({"post": {"tags": ["Webhooks"], "operationId": "retryDelivery",
        "summary": "Attempt a delivery again now, whatever its status.", "parameters": [id_param()],
        "responses": responses(("202", ok("The delivery, pending", schema_ref("Delivery"))), &["404"])}}));
    automation_paths(paths);
    let page = |items: Value| {
        json!({"type": "object", "properties": {
        "data": {"type": "array", "items": items},
        "nextCursor": {"type": ["string", "null"], "description": "Pass as cursor for the next page; null on the last."}}})
    };
    let cursor = query(
        "cursor",
        "The nextCursor of the page before.",
        id_schema(Some("dsc"), "A disclosure id (dsc_…)."),
    );
    let settings = json!({"type": "object", "properties": {
        "maxPayload": {"type": "string", "enum": ["full", "thin"], "description": "thin: no endpoint of the tenant may have full payloads (creating or switching one to full is a 422 naming payload)."}},
        "required": ["maxPayload"]});
    let mut settings_input = settings.clone();
    settings_input["additionalProperties"] = json!(false);
    settings_input.as_object_mut().map(|o| o.remove("required"));
    paths.insert("/v1/settings".into(), json!({
        "get": {"tags": ["Patient data"], "operationId": "getSettings", "summary": "The tenant's settings.",
            "responses": responses(("200", ok("The settings", settings.clone())), &["422"])},
        "patch": {"tags": ["Patient data"], "operationId": "changeSettings",
            "summary": "Change the tenant's settings. maxPayload thin while an endpoint has full payloads is a 409 naming them.",
            "requestBody": {"required": true, "content": json_content(settings_input)},
            "responses": responses(("200", ok("The settings", settings)), &with(&["409"], &BODY_ERRORS))}}));
    paths.insert("/v1/disclosures".into(), json!({"get": {"tags": ["Patient data"], "operationId": "listDisclosures",
        "summary": "Disclosure records: every successful delivery that carried a patient's data, who received it, what and why. Kept disclosure_retention_days (six years by default), after the endpoint is deleted too.",
        "parameters": [
            json!({"name": "patientId", "in": "query", "required": false, "schema": id_schema(None, "Only this patient's (pat_…).")}),
            query("since", "Only disclosures at or after this time.", json!({"type": "string", "format": "date-time"})),
            query("until", "Only disclosures before this time.", json!({"type": "string", "format": "date-time"})),
            query("purpose", "Only disclosures for this purpose.", json!({"type": "string", "enum": ["treatment", "payment", "operations", "other"]})),
            cursor.clone(),
            limit_param(1000, 100)],
        "responses": responses(("200", ok("Disclosures, oldest first", page(schema_ref("Disclosure")))), &["422"])}}));
    let entry = json!({"type": "object", "properties": {
        "date": {"type": "string", "format": "date-time"},
        "recipient": {"type": "string"},
        "origin": {"type": "string", "description": "Scheme and host the data went to."},
        "description": {"type": "string", "description": "What was sent: the record type, the event and the fields."},
        "purpose": {"type": "string", "enum": ["other"]},
        "purposeText": {"type": ["string", "null"]},
        "eventType": {"type": "string"},
        "resourceType": {"type": "string"},
        "fields": {"type": "array", "items": {"type": "string"}},
        "disclosureId": {"type": "string"}},
        "required": ["date", "recipient", "origin", "description", "purpose", "eventType", "resourceType", "fields", "disclosureId"]});
    paths.insert("/v1/patients/{id}/disclosure-accounting".into(), json!({"get": {"tags": ["Patient data"], "operationId": "patientDisclosureAccounting",
        "summary": "The accounting of disclosures a patient may request: disclosures of their data for purposes other than treatment, payment and operations, each with date, recipient, description and purpose. JSON, or CSV with Accept: text/csv (the next page's cursor then in the Eventflow-Next-Cursor header).",
        "parameters": [
            id_param(),
            query("since", "From this time (default: six years back).", json!({"type": "string", "format": "date-time"})),
            query("until", "Before this time (default: now).", json!({"type": "string", "format": "date-time"})),
            cursor,
            limit_param(10_000, 1000)],
        "responses": responses(("200", {
            let mut r = ok("The accounting, oldest first", json!({"type": "object", "properties": {
                "patientId": {"type": "string"},
                "since": {"type": "string", "format": "date-time"},
                "until": {"type": "string", "format": "date-time"},
                "data": {"type": "array", "items": entry},
                "nextCursor": {"type": ["string", "null"]}}}));
            r["content"]["text/csv"] = json!({"schema": {"type": "string"}});
            r
        }), &["404", "422"])}}));
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
        "conditionError": {"type": ["object", "null"], "description": "Set when the `if` last ran out of its cost budget (limits.cel_cost) on one of the tenant's events: that event started no run. Cleared when the condition changes.",
            "properties": {"message": {"type": "string"}, "eventId": {"type": "string"}, "at": {"type": "string", "format": "date-time"}}},
        "source": {"type": "string"}}});
    let yaml = json!({"application/yaml": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}});
    paths.insert("/v1/workflows".into(), json!({
        "get": {"tags": ["Automations"], "operationId": "listWorkflows",
            "summary": "The workflows the tenant runs (the server's and its own), each loaded or refused with the reason (file, step, field).",
            "responses": responses(("200", ok("Workflows", list(workflow.clone()))), &["422"])},
        "post": {"tags": ["Automations"], "operationId": "createWorkflow",
            "summary": "Create a workflow of the tenant from its YAML; a broken one is 422 with the file's error.",
            "requestBody": {"required": true, "content": yaml.clone()},
            "responses": responses(("201", ok("The workflow, loaded", workflow.clone())), &with(&["409"], &BODY_ERRORS))},
    }));
    let mut put_responses = responses(
        ("200", ok("The workflow, replaced", workflow.clone())),
        &with(&["409"], &BODY_ERRORS),
    );
    put_responses["201"] = ok("The workflow, created", workflow.clone());
    paths.insert("/v1/workflows/{name}".into(), json!({
        "get": {"tags": ["Automations"], "operationId": "getWorkflow", "summary": "One workflow (with its source when it is the tenant's).",
            "parameters": [name_param.clone()],
            "responses": responses(("200", ok("The workflow", workflow.clone())), &["404"])},
        "put": {"tags": ["Automations"], "operationId": "putWorkflow", "summary": "Create or replace the tenant's workflow of this name.",
            "parameters": [name_param.clone()], "requestBody": {"required": true, "content": yaml},
            "responses": put_responses},
        "delete": {"tags": ["Automations"], "operationId": "deleteWorkflow", "summary": "Delete the tenant's workflow (the server's own: 409).",
            "parameters": [name_param], "responses": responses(("204", json!({"description": "Deleted"})), &["404", "409"])},
    }));
    let step = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "type": {"type": "string"},
        "status": {"type": "string", "enum": StepStatus::NAMES},
        "error": {"type": ["string", "null"]}, "attempts": {"type": "integer"},
        "at": {"type": "string", "format": "date-time"}, "detail": {"type": "object"}}});
    let run = json!({"type": "object", "properties": {
        "id": {"type": "string"}, "workflow": {"type": "string"}, "eventId": {"type": ["string", "null"]},
        "trigger": {"type": "string", "enum": RunOrigin::NAMES}, "timerKey": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": RunStatus::NAMES},
        "startedAt": {"type": "string"}, "updatedAt": {"type": "string"}, "finishedAt": {"type": ["string", "null"]},
        "nextAttemptAt": {"type": ["string", "null"]}, "steps": {"type": "array", "items": step}}});
    paths.insert("/v1/workflow-runs".into(), json!({"get": {"tags": ["Automations"], "operationId": "listWorkflowRuns",
        "summary": "Workflow runs with each step's outcome, newest first.",
        "parameters": [
            query("workflow", "Runs of this workflow.", json!({"type": "string", "pattern": NO_NUL})),
            query("status", "pending, succeeded or failed.", json!({"type": "string", "enum": RunStatus::NAMES})),
            query("eventId", "Runs started by this event.", json!({"type": "string", "pattern": NO_NUL})),
            limit_param(1000, 100),
            cursor_param(Some("run"))],
        "responses": responses(("200", ok("A page", page(run.clone()))), &["422"])}}));
    paths.insert(
        "/v1/workflow-runs/{id}".into(),
        json!({"get": {"tags": ["Automations"], "operationId": "getWorkflowRun",
        "summary": "One run.", "parameters": [id_param()],
        "responses": responses(("200", ok("The run", run)), &["404"])}}),
    );
    let notification = json!({"type": "object", "properties": {
        "id": {"type": "string"}, "channel": {"type": "string", "enum": Channel::NAMES},
        "direction": {"type": "string", "enum": Direction::NAMES}, "to": {"type": "string"},
        "subject": {"type": ["string", "null"]}, "body": {"type": "string"}, "workflow": {"type": ["string", "null"]},
        "runId": {"type": ["string", "null"]}, "step": {"type": ["string", "null"]}, "provider": {"type": "string"},
        "providerId": {"type": ["string", "null"]}, "providerStatus": {"type": ["string", "null"]},
        "createdAt": {"type": "string"}}});
    paths.insert("/v1/notifications".into(), json!({"get": {"tags": ["Automations"], "operationId": "listNotifications",
        "summary": "The outbox: every message automations sent (or, with no provider configured, would have sent), newest first.",
        "parameters": [
            limit_param(1000, 100),
            cursor_param(Some("ntf"))],
        "responses": responses(("200", ok("A page", page(notification))), &["422"])}}));
    paths.insert(
        "/v1/timers".into(),
        json!({"get": {"tags": ["Automations"], "operationId": "listTimers",
        "summary": "Pending timers, soonest first.",
        "parameters": [
            query("key", "This key only (exact match, an empty key too).", json!({"type": "string", "minLength": 0, "pattern": NO_NUL})),
            limit_param(10_000, 1000)],
        "responses": responses(("200", ok("Timers", list(json!({"type": "object", "properties": {
            "key": {"type": "string"}, "fireAt": {"type": "string"}, "workflow": {"type": "string"},
            "eventId": {"type": ["string", "null"]}, "runId": {"type": ["string", "null"]},
            "createdAt": {"type": "string"}}})))), &["422"])}}),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is the document as the server serves it: a change
    /// of the contract shows as a diff of that file, to be reviewed. After a
    /// deliberate change, `EVENTFLOW_UPDATE_SNAPSHOTS=1 cargo test -p
    /// eventflow-server --lib openapi` writes it anew.
    #[test]
    fn the_document_matches_its_committed_snapshot() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let now = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        if std::env::var_os("EVENTFLOW_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &now).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == now,
            "/openapi.json differs from docs/openapi.json: review the change, then run \
             EVENTFLOW_UPDATE_SNAPSHOTS=1 cargo test -p eventflow-server --lib openapi"
        );
    }

    /// Every path item and schema reads as OpenAPI for utoipa, one by one,
    /// so that a failure names the part at fault. The `webhooks` use JSON
    /// Schema keywords utoipa's model has no place for (`const`, `if`);
    /// `openapi-spec-validator` checks the whole document in the
    /// integration tests (`catalogue`).
    #[test]
    fn every_part_of_the_document_is_openapi() {
        let mut doc = document();
        assert!(doc.as_object_mut().unwrap().remove("webhooks").is_some());
        for (path, item) in doc["paths"].as_object().unwrap() {
            serde_json::from_value::<utoipa::openapi::path::PathItem>(item.clone())
                .unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
            serde_json::from_value::<utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>>(
                schema.clone(),
            )
            .unwrap_or_else(|e| {
                let bad: Vec<&String> = schema["properties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, p)| {
                        serde_json::from_value::<
                            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
                        >((*p).clone())
                        .is_err()
                    })
                    .map(|(k, _)| k)
                    .collect();
                panic!("{name}: {e} (properties {bad:?})")
            });
        }
        serde_json::from_value::<utoipa::openapi::OpenApi>(doc).unwrap();
    }
}
