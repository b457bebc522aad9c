//! The webhook envelope of every event type and topic, as a receiver gets
//! it, against its committed example in `docs/envelopes/` (one `{name}.json`
//! per entry of `GET /v1/event-types`; for a topic, the first envelope to
//! carry it), which the server also serves as the entry's example: a change to what receivers are sent shows as a
//! diff of those files, to be reviewed. After a deliberate change,
//! `EVENTFLOW_UPDATE_SNAPSHOTS=1 cargo test -p eventflow --test it -- envelopes`
//! writes them anew (from the SQLite run).
//!
//! The envelopes are the real deliveries of a server on a manual clock, so
//! every timestamp is fixed; the ids the server draws (`pat_…`, `evt_…`,
//! the tenant's) and the receivers' loopback addresses are replaced by
//! placeholders, numbered in each envelope in order of first appearance.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use eventflow_testkit::{Answer, Api, Backend, Receiver, backend_tests, wait_for};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::helpers::{SchemaCase, SseReader, World, all_events, check_schemas, full_body};

backend_tests!(every_event_type_is_delivered_in_the_envelope_of_its_committed_example);

const LONG: Duration = Duration::from_secs(30);

/// The collections in the order their references need, each with a patch
/// that changes one field (for `updated`, with `previous`).
const CHANGES: [(&str, &str, &str); 10] = [
    ("patients", "email", "ada.lovelace@example.com"),
    ("practitioners", "specialty", "Nephrology"),
    ("appointments", "reason", "Follow-up"),
    ("encounters", "end", "2026-12-01T09:40:00Z"),
    ("observations", "display", "Glucose (fasting)"),
    ("prescriptions", "dosage", "1 tablet daily"),
    ("consents", "document", "https://example.com/consent-v2.pdf"),
    ("intakes", "form", "annual-update"),
    ("notes", "text", "Patient doing better."),
    ("labs", "display", "Basic metabolic panel"),
];

/// Changes, in order, after which every topic has been written at least
/// once (the records' first state is [`full_body`]'s: among them an
/// observation and a lab report created critical).
fn transitions() -> Vec<(&'static str, Value)> {
    vec![
        ("appointments", json!({"status": "booked"})),
        (
            "appointments",
            json!({"start": "2026-12-02T09:00:00Z", "end": "2026-12-02T09:30:00Z"}),
        ),
        ("appointments", json!({"status": "noshow"})),
        ("appointments", json!({"status": "booked"})),
        ("appointments", json!({"status": "cancelled"})),
        ("appointments", json!({"status": "booked"})),
        ("appointments", json!({"status": "arrived"})),
        ("appointments", json!({"status": "fulfilled"})),
        ("encounters", json!({"status": "planned"})),
        ("encounters", json!({"status": "in-progress"})),
        ("encounters", json!({"status": "finished"})),
        ("prescriptions", json!({"status": "stopped"})),
        ("consents", json!({"status": "active"})),
        ("consents", json!({"status": "inactive"})),
        ("intakes", json!({"status": "in-progress"})),
        ("intakes", json!({"status": "completed"})),
        ("labs", json!({"status": "final"})),
        ("labs", json!({"status": "amended"})),
        ("patients", json!({"active": true})),
        ("patients", json!({"active": false})),
    ]
}

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/envelopes")
}

async fn every_event_type_is_delivered_in_the_envelope_of_its_committed_example(backend: Backend) {
    let start: Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
    let (server, clock) = backend.spawn_with_clock(start).await;
    let api = server.api();
    // Every event reaches this receiver, in full.
    let rx = Receiver::start().await;
    api.create_endpoint(json!({"url": rx.url("/envelopes")}))
        .await;
    // And this one, thin.
    let thin = Receiver::start().await;
    api.create_endpoint(json!({"url": thin.url("/thin"), "payload": "thin"}))
        .await;

    // Each record type created with every field, changed, and deleted.
    let mut w = World {
        patient: String::new(),
        practitioner: String::new(),
        appointment: String::new(),
        encounter: String::new(),
    };
    let mut created = Vec::new();
    for (collection, _, _) in CHANGES {
        let id = api.create(collection, full_body(collection, &w)).await;
        match collection {
            "patients" => w.patient = id.clone(),
            "practitioners" => w.practitioner = id.clone(),
            "appointments" => w.appointment = id.clone(),
            "encounters" => w.encounter = id.clone(),
            _ => {}
        }
        created.push((collection, id));
    }
    for ((collection, id), (_, field, value)) in created.iter().zip(CHANGES) {
        let mut change = serde_json::Map::new();
        change.insert(field.to_string(), json!(value));
        let r = api
            .patch(&format!("/v1/{collection}/{id}"), Value::Object(change))
            .await;
        assert_eq!(r.status, 200, "patch {collection}: {}", r.body);
    }
    // Then the changes that mean something clinically: every topic.
    let id_of = |collection: &str| {
        created
            .iter()
            .find(|(c, _)| *c == collection)
            .map(|(_, id)| id.clone())
            .unwrap()
    };
    for (collection, change) in transitions() {
        let path = format!("/v1/{collection}/{}", id_of(collection));
        let r = api.patch(&path, change).await;
        assert_eq!(r.status, 200, "patch {collection}: {}", r.body);
    }
    for (collection, id) in created.iter().rev() {
        let r = api.delete(&format!("/v1/{collection}/{id}")).await;
        assert_eq!(r.status, 204, "delete {collection}: {}", r.body);
    }

    // endpoint.disabled: an endpoint whose receiver answers 410 Gone.
    let gone = Receiver::start().await;
    gone.answer(Answer::Status(410));
    api.create_endpoint(json!({"url": gone.url("/gone"), "eventTypes": ["patient.created"]}))
        .await;
    api.patient().await;
    of_type(&rx, "endpoint.disabled").await;

    // delivery.recovered: one delivery fails five times in a row (the
    // circuit breaker opens), then succeeds. Each step of the clock passes
    // the retry's latest due time (its schedule plus 20 % jitter), so the
    // attempts happen at fixed times.
    let flaky = Receiver::start().await;
    flaky.script(std::iter::repeat_n(Answer::Status(500), 5));
    let ep = api
        .create_endpoint(json!({"url": flaky.url("/flaky"), "eventTypes": ["patient.created"]}))
        .await;
    api.patient().await;
    let delivery = api.first_delivery(ep["id"].as_str().unwrap()).await;
    let delivery = delivery["id"].as_str().unwrap().to_string();
    for (attempts, step) in [(1, 10), (2, 40), (3, 150), (4, 750), (5, 2200)] {
        api.delivery_with_attempts(&delivery, attempts).await;
        clock.advance(SignedDuration::from_secs(step));
    }
    of_type(&rx, "delivery.recovered").await;

    // delivery.failed: a delivery whose retry comes after its 72 hours.
    let failing = Receiver::start().await;
    failing.answer(Answer::Status(500));
    let ep = api
        .create_endpoint(json!({"url": failing.url("/failing"), "eventTypes": ["patient.created"]}))
        .await;
    api.patient().await;
    let delivery = api.first_delivery(ep["id"].as_str().unwrap()).await;
    api.delivery_with_attempts(delivery["id"].as_str().unwrap(), 1)
        .await;
    clock.advance(SignedDuration::from_hours(100));
    of_type(&rx, "delivery.failed").await;

    // The first envelope of each type, and the first to carry each topic.
    let types: Vec<String> = eventflow_model::event::all_types()
        .map(|(t, _)| t)
        .chain(
            eventflow_model::topics::TOPICS
                .iter()
                .map(|t| t.name.to_string()),
        )
        .collect();
    let received = wait_for(LONG, "an envelope of every type and topic", || {
        let mut first: BTreeMap<String, Value> = BTreeMap::new();
        for r in rx.received() {
            let body = r.json();
            let topics = body["topics"].as_array().cloned().unwrap_or_default();
            let names = topics
                .iter()
                .filter_map(Value::as_str)
                .chain(body["type"].as_str())
                .map(str::to_string);
            for t in names.collect::<Vec<_>>() {
                let earlier = first
                    .get(&t)
                    .is_some_and(|e| e["sequence"].as_i64() <= body["sequence"].as_i64());
                if !earlier {
                    first.insert(t, body.clone());
                }
            }
        }
        let all = types.iter().all(|t| first.contains_key(t));
        async move { all.then_some(first) }
    })
    .await;
    every_envelope_is_valid_against_its_schemas(&api, &rx, &thin).await;

    let origins: Vec<String> = [&rx, &gone, &flaky, &failing]
        .iter()
        .map(|r| r.url(""))
        .collect();
    let envelopes: BTreeMap<String, Value> = received
        .into_iter()
        .map(|(t, e)| (t, placeholders(&e, &origins)))
        .collect();
    assert_eq!(
        envelopes.keys().collect::<Vec<_>>(),
        {
            let mut sorted: Vec<&String> = types.iter().collect();
            sorted.sort();
            sorted
        },
        "an envelope of each type and topic, and no other"
    );

    let dir = snapshot_dir();
    if std::env::var_os("EVENTFLOW_UPDATE_SNAPSHOTS").is_some() {
        // One writer: both backends send the same envelopes.
        if matches!(backend, Backend::Sqlite) {
            write_snapshots(&dir, &envelopes);
        }
        return;
    }
    let mut differ = Vec::new();
    for (t, envelope) in &envelopes {
        let committed = std::fs::read_to_string(dir.join(format!("{t}.json")))
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok());
        // Compared as JSON: members in another order are the same envelope.
        if committed.as_ref() != Some(envelope) {
            differ.push(format!(
                "{t}: delivered\n{}",
                serde_json::to_string_pretty(envelope).unwrap()
            ));
        }
    }
    let extra: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| {
                    n.strip_suffix(".json")
                        .is_none_or(|t| !envelopes.contains_key(t))
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        differ.is_empty() && extra.is_empty(),
        "the envelopes differ from docs/envelopes/ ({} differ; files of no type: {extra:?}): \
         review the change, then run \
         EVENTFLOW_UPDATE_SNAPSHOTS=1 cargo test -p eventflow --test it -- envelopes\n{}",
        differ.len(),
        differ.join("\n")
    );
}

/// Every envelope the server gives out, against the catalogue's schema of
/// its type and of each topic it carries: each event as polled, fetched
/// alone, streamed, and delivered in full and thin, and a test send of
/// every type and topic.
async fn every_envelope_is_valid_against_its_schemas(api: &Api, full: &Receiver, thin: &Receiver) {
    let events = all_events(api, 0).await;
    let n = events.len();
    let full = full.wait_for(n, LONG).await;
    let thin = thin.wait_for(n, LONG).await;
    let mut sources: Vec<(String, Value)> = Vec::new();
    for e in &events {
        sources.push(("polled".into(), e.clone()));
        let id = e["id"].as_str().unwrap();
        let r = api.get(&format!("/v1/events/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        sources.push(("fetched".into(), r.body));
    }
    let mut stream = SseReader::open(api, "/v1/events/stream?after=0", None).await;
    for e in stream.take(n).await {
        sources.push(("streamed".into(), e.data));
    }
    sources.extend(
        full.iter()
            .map(|r| ("delivered in full".to_string(), r.json())),
    );
    for r in &thin {
        let body = r.json();
        assert!(
            body.get("data").is_none() && body.get("previous").is_none(),
            "a thin payload holds no record: {body}"
        );
        sources.push(("delivered thin".into(), body));
    }
    // A test send of every entry of the catalogue.
    let test_rx = Receiver::start().await;
    let ep = api
        .create_endpoint(json!({"url": test_rx.url("/test"), "disabled": true}))
        .await;
    let ep = ep["id"].as_str().unwrap();
    let catalogue = api.get("/v1/event-types").await;
    let names: Vec<String> = catalogue.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    for name in &names {
        let r = api
            .post(&format!("/v1/endpoints/{ep}/test"), json!({"type": name}))
            .await;
        assert_eq!(r.status, 200, "test send of {name}: {}", r.body);
    }
    for r in test_rx.wait_for(names.len(), LONG).await {
        sources.push(("test send".into(), r.json()));
    }

    let mut schemas = BTreeMap::new();
    for name in &names {
        let r = api.get(&format!("/v1/event-types/{name}/schema")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        schemas.insert(name.clone(), r.body);
    }
    let mut cases = Vec::new();
    for (source, envelope) in sources {
        let label = format!("{source} {} #{}", envelope["type"], envelope["sequence"]);
        let topics = envelope["topics"].as_array().cloned().unwrap_or_default();
        let of = topics
            .iter()
            .filter_map(Value::as_str)
            .chain(envelope["type"].as_str())
            .map(str::to_string);
        for schema in of.collect::<Vec<_>>() {
            cases.push(SchemaCase {
                label: label.clone(),
                schema,
                instance: envelope.clone(),
                valid: true,
            });
        }
    }
    check_schemas(
        "every_event_type_is_delivered_in_the_envelope_of_its_committed_example",
        &schemas,
        &cases,
    );
}

/// Waits until the receiver got an envelope of this type.
async fn of_type(rx: &Receiver, event_type: &str) {
    wait_for(LONG, event_type, || {
        let got = rx.received().iter().any(|r| r.json()["type"] == event_type);
        async move { got.then_some(()) }
    })
    .await;
}

/// The envelope with each id the server drew replaced by `{prefix}_` and a
/// number (per prefix, in order of first appearance, members visited in
/// sorted order so that the numbering does not depend on their order), and
/// each receiver's address by `http://127.0.0.1:{port}`.
fn placeholders(envelope: &Value, origins: &[String]) -> Value {
    fn collect(v: &Value, ids: &mut HashMap<String, String>, counts: &mut HashMap<String, u32>) {
        match v {
            Value::String(s) => {
                if let Some(prefix) = drawn_id_prefix(s)
                    && !ids.contains_key(s)
                {
                    let n = counts.entry(prefix.to_string()).or_default();
                    *n += 1;
                    ids.insert(s.clone(), format!("{prefix}_{:032x}", *n));
                }
            }
            Value::Array(a) => a.iter().for_each(|x| collect(x, ids, counts)),
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                for k in keys {
                    collect(&o[k], ids, counts);
                }
            }
            _ => {}
        }
    }
    fn replace(v: &Value, ids: &HashMap<String, String>, origins: &[String]) -> Value {
        match v {
            Value::String(s) => {
                if let Some(id) = ids.get(s) {
                    return json!(id);
                }
                let mut s = s.clone();
                for origin in origins {
                    s = s.replace(origin.as_str(), "http://127.0.0.1:{port}");
                    // An endpoint's recipient: by default the URL's host.
                    if let Some(host) = origin.strip_prefix("http://")
                        && s == host
                    {
                        s = "127.0.0.1:{port}".into();
                    }
                }
                json!(s)
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| replace(x, ids, origins)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), replace(x, ids, origins)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let mut ids = HashMap::new();
    collect(envelope, &mut ids, &mut HashMap::new());
    replace(envelope, &ids, origins)
}

/// The prefix of an id the server drew (`pat_` and 32 hex digits of a
/// UUID v7), or `None`.
fn drawn_id_prefix(s: &str) -> Option<&str> {
    let (prefix, rest) = s.split_once('_')?;
    let drawn = !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_lowercase())
        && rest.len() == 32
        && rest.bytes().all(|b| b.is_ascii_hexdigit());
    drawn.then_some(prefix)
}

/// Writes one `{type}.json` per envelope and removes files of no type.
fn write_snapshots(dir: &Path, envelopes: &BTreeMap<String, Value>) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let stale = path
            .file_stem()
            .and_then(|s| s.to_str())
            .is_none_or(|t| !envelopes.contains_key(t));
        if stale && path.extension().is_some_and(|e| e == "json") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    for (t, envelope) in envelopes {
        let text = serde_json::to_string_pretty(envelope).unwrap() + "\n";
        std::fs::write(dir.join(format!("{t}.json")), text).unwrap();
    }
}

#[test]
fn drawn_ids_and_receiver_addresses_become_placeholders() {
    let a = "pat_0193a1b2c3d4e5f60718293a4b5c6d7e";
    let b = "pat_0193a1b2c3d4e5f60718293a4b5c6d7f";
    let e = json!({
        "id": "evt_0193a1b2c3d4e5f60718293a4b5c6d7e",
        "data": {"z": b, "a": a, "again": a, "locationId": "loc_main",
                 "url": "http://127.0.0.1:4321"},
    });
    let got = placeholders(&e, &["http://127.0.0.1:4321".to_string()]);
    assert_eq!(
        got,
        json!({
            "id": format!("evt_{:032x}", 1),
            "data": {"z": format!("pat_{:032x}", 2), "a": format!("pat_{:032x}", 1),
                     "again": format!("pat_{:032x}", 1), "locationId": "loc_main",
                     "url": "http://127.0.0.1:{port}"},
        })
    );
}
