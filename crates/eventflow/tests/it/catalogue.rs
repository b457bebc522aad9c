//! The event catalogue (README, "The event catalogue"): `GET /v1/event-types` with
//! kinds, each entry's JSON Schema and example, and the AsyncAPI document
//! of the webhooks, checked by the official AsyncAPI parser. That every
//! envelope the server gives out is valid against its schema is checked
//! where every type is produced, in `envelopes`.

use std::collections::BTreeMap;

use eventflow_testkit::{Backend, TestServer, backend_tests, python, python_has, skipped};
use serde_json::{Value, json};

use crate::helpers::{SchemaCase, assert_error, check_schemas, npm_modules};

backend_tests!(the_catalogue_lists_every_type_and_topic_with_a_schema_and_an_example);

async fn the_catalogue_lists_every_type_and_topic_with_a_schema_and_an_example(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let r = api.get("/v1/event-types").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let entries = r.body["data"].as_array().unwrap().clone();
    let count = |kind: &str| entries.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(
        (count("event"), count("topic"), count("operational")),
        (30, 18, 3)
    );
    let cancelled = entries
        .iter()
        .find(|e| e["type"] == "appointment.cancelled")
        .unwrap();
    assert_eq!(cancelled["kind"], "topic");
    assert_eq!(cancelled["resourceType"], "appointment");
    assert!(
        cancelled["description"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    let disabled = entries
        .iter()
        .find(|e| e["type"] == "endpoint.disabled")
        .unwrap();
    assert_eq!(
        (&disabled["kind"], &disabled["resourceType"]),
        (&json!("operational"), &json!("endpoint"))
    );

    let mut schemas = BTreeMap::new();
    let mut examples = BTreeMap::new();
    for e in &entries {
        let name = e["type"].as_str().unwrap();
        let r = api.get(&format!("/v1/event-types/{name}/schema")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("content-type"), Some("application/schema+json"));
        assert_eq!(
            r.body["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        schemas.insert(name.to_string(), r.body);
        let r = api.get(&format!("/v1/event-types/{name}/example")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        examples.insert(name.to_string(), r.body);
    }
    for path in [
        "/v1/event-types/appointment.exploded/schema",
        "/v1/event-types/appointment.exploded/example",
        "/v1/event-types/%FF/schema",
    ] {
        assert_error(&api.get(path).await, 404, "not_found", None);
    }
    let anonymous = server.anonymous();
    assert_eq!(
        anonymous
            .get("/v1/event-types/appointment.created/schema")
            .await
            .status,
        401
    );

    // Each example is valid against its own schema; and the schemas say no
    // where an envelope is wrong.
    let mut cases: Vec<SchemaCase> = examples
        .iter()
        .map(|(name, example)| SchemaCase {
            label: format!("the example of {name}"),
            schema: name.clone(),
            instance: example.clone(),
            valid: true,
        })
        .collect();
    let changed = |name: &str, change: &dyn Fn(&mut Value)| {
        let mut e = examples[name].clone();
        change(&mut e);
        e
    };
    let mut case = |label: &str, schema: &str, instance: Value, valid: bool| {
        cases.push(SchemaCase {
            label: label.to_string(),
            schema: schema.to_string(),
            instance,
            valid,
        });
    };
    case(
        "a status outside the record's",
        "appointment.created",
        changed("appointment.created", &|e| {
            e["data"]["status"] = json!("exploded")
        }),
        false,
    );
    case(
        "a field the record type does not have",
        "appointment.created",
        changed("appointment.created", &|e| {
            e["data"]["mood"] = json!("calm")
        }),
        false,
    );
    case(
        "a topic a create never carries",
        "appointment.created",
        changed("appointment.created", &|e| {
            e["topics"] = json!(["appointment.cancelled"])
        }),
        false,
    );
    case(
        "an update without changedFields",
        "appointment.updated",
        changed("appointment.updated", &|e| {
            e.as_object_mut().unwrap().remove("changedFields");
        }),
        false,
    );
    case(
        "previous without data",
        "appointment.updated",
        changed("appointment.updated", &|e| {
            e.as_object_mut().unwrap().remove("data");
        }),
        false,
    );
    case(
        "a thin update",
        "appointment.updated",
        changed("appointment.updated", &|e| {
            let o = e.as_object_mut().unwrap();
            o.remove("data");
            o.remove("previous");
        }),
        true,
    );
    case(
        "another type",
        "appointment.updated",
        examples["encounter.updated"].clone(),
        false,
    );
    case(
        "an update that does not carry the topic",
        "appointment.cancelled",
        examples["appointment.updated"].clone(),
        false,
    );
    case(
        "a patient event without its patientId",
        "patient.created",
        changed("patient.created", &|e| {
            e.as_object_mut().unwrap().remove("patientId");
        }),
        false,
    );
    case(
        "a recovery without failuresBefore",
        "delivery.recovered",
        changed("delivery.recovered", &|e| {
            e["data"].as_object_mut().unwrap().remove("failuresBefore");
        }),
        false,
    );
    case(
        "a time that is not RFC 3339",
        "note.created",
        changed("note.created", &|e| e["createdAt"] = json!("yesterday")),
        false,
    );
    check_schemas(
        "the_catalogue_lists_every_type_and_topic_with_a_schema_and_an_example",
        &schemas,
        &cases,
    );
}

/// Checks the document with `@asyncapi/parser` and prints its verdict as
/// JSON: the errors, the warnings and hints, and the messages it found.
const PARSE: &str = r#"
const fs = require('fs');
const { Parser } = require('@asyncapi/parser');
(async () => {
  const { document, diagnostics } = await new Parser().parse(fs.readFileSync(process.argv[1], 'utf8'));
  const errors = diagnostics.filter(d => d.severity === 0).map(d => `${d.path.join('/')}: ${d.message}`);
  const messages = document ? document.allMessages().all().map(m => m.name()).sort() : null;
  // Its one note is that AsyncAPI 3.1 exists; this document is 3.0.
  const warnings = diagnostics.filter(d => d.severity > 0 && d.code !== 'asyncapi-latest-version').map(d => `${d.severity} ${d.code} ${d.path.join('/')}: ${d.message}`);
  console.log(JSON.stringify({ errors, messages, warnings }));
})().catch(e => { console.error(e); process.exit(1); });
"#;

#[tokio::test]
async fn the_asyncapi_document_passes_the_asyncapi_parser_and_lists_the_openapi_webhooks() {
    let test = "the_asyncapi_document_passes_the_asyncapi_parser_and_lists_the_openapi_webhooks";
    let server = TestServer::spawn().await;
    let anonymous = server.anonymous();
    let asyncapi = anonymous.get("/asyncapi.json").await;
    assert_eq!(asyncapi.status, 200);
    let openapi = anonymous.get("/openapi.json").await;
    assert_eq!(openapi.status, 200);
    assert_eq!(asyncapi.body["asyncapi"], "3.0.0");

    // One message per event type and operational type; OpenAPI's webhooks
    // are the same, with the same payloads.
    let mut types: Vec<String> = eventflow_model::event::all_types()
        .map(|(t, _)| t)
        .collect();
    types.sort();
    let messages = asyncapi.body["components"]["messages"].as_object().unwrap();
    let webhooks = openapi.body["webhooks"].as_object().unwrap();
    let keys = |m: &serde_json::Map<String, Value>| {
        let mut k: Vec<String> = m.keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(messages), types);
    assert_eq!(keys(webhooks), types);
    for t in &types {
        assert_eq!(
            messages[t]["payload"],
            webhooks[t]["post"]["requestBody"]["content"]["application/json"]["schema"],
            "{t}"
        );
    }
    let headers = &asyncapi.body["components"]["schemas"]["WebhookHeaders"]["properties"];
    for h in [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-eventflow-topics",
    ] {
        assert!(headers.get(h).is_some(), "{h}");
    }

    let Some(modules) = npm_modules(
        "EVENTFLOW_ASYNCAPI_DIR",
        "eventflow-asyncapi",
        "@asyncapi/parser",
        "@asyncapi/parser@3",
    ) else {
        skipped(test, "Node.js and npm are needed for @asyncapi/parser");
        return;
    };
    let verdict = parse(&modules, &asyncapi.body);
    assert_eq!(verdict["errors"], json!([]), "the parser's errors");
    assert_eq!(verdict["warnings"], json!([]), "the parser's warnings");
    assert_eq!(verdict["messages"], json!(types), "the messages it read");
    // The parser does check what it is given: a payload that is no schema
    // is an error.
    let mut broken = asyncapi.body.clone();
    broken["components"]["messages"]["patient.created"]["payload"]["type"] = json!(5);
    let verdict = parse(&modules, &broken);
    assert_ne!(verdict["errors"], json!([]), "a broken payload is an error");
}

/// `@asyncapi/parser`'s verdict on a document (see [`PARSE`]).
fn parse(modules: &std::path::Path, document: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("asyncapi.json");
    std::fs::write(&doc, serde_json::to_vec(document).unwrap()).unwrap();
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg(PARSE)
        .arg(&doc)
        .env("NODE_PATH", modules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the parser ran: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Checks an OpenAPI document with `openapi-spec-validator` (the OpenAPI
/// 3.1 schema, and each schema in it as JSON Schema 2020-12); prints the
/// error, or nothing.
const VALIDATE_OPENAPI: &str = r#"
import json, sys
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
try:
    validate(json.load(open(sys.argv[1])))
except OpenAPIValidationError as e:
    print(str(e)[:2000])
"#;

#[tokio::test]
async fn the_openapi_document_with_its_webhooks_passes_openapi_spec_validator() {
    let test = "the_openapi_document_with_its_webhooks_passes_openapi_spec_validator";
    if !python_has(&["openapi_spec_validator"]) {
        return skipped(test, "the openapi-spec-validator Python package is needed");
    }
    let server = TestServer::spawn().await;
    let openapi = server.anonymous().get("/openapi.json").await;
    assert_eq!(openapi.status, 200);
    let check = |doc: &Value| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("openapi.json");
        std::fs::write(&path, serde_json::to_vec(doc).unwrap()).unwrap();
        python(VALIDATE_OPENAPI, &[path.to_str().unwrap()])
    };
    assert_eq!(check(&openapi.body), "", "the document is OpenAPI 3.1");
    // The validator does look into the webhooks (their schemas are checked
    // as JSON Schema where the envelopes are, in `envelopes`).
    let mut broken = openapi.body.clone();
    broken["webhooks"]["patient.created"]["post"]["requestBody"] = json!({"required": true});
    assert_ne!(
        check(&broken),
        "",
        "a webhook without its content is an error"
    );
}
