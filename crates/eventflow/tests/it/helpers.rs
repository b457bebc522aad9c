//! Helpers the behaviour files share: the records a test starts from, the
//! bodies of each record type, reading the whole event log, and the checks
//! of the error shape. Helpers that are one API call live on the testkit's
//! `Api`; a behaviour file exports nothing.

use std::pin::Pin;
use std::time::Duration;

use eventflow_server::auth;
use eventflow_testkit::{Api, Backend, Options, Reply, TestServer};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Records.

/// Ids of a small connected set of records in one tenant.
pub struct World {
    pub patient: String,
    pub practitioner: String,
    pub appointment: String,
    pub encounter: String,
}

/// A patient (with phone), a practitioner (with email), an appointment and
/// an encounter that reference them.
pub async fn world(api: &Api) -> World {
    let patient = api.patient().await;
    let practitioner = api
        .create(
            "practitioners",
            json!({"firstName": "Gregory", "lastName": "House", "email": "house@example.com"}),
        )
        .await;
    let appointment = api
        .create(
            "appointments",
            json!({"patientId": patient, "practitionerId": practitioner, "start": "2026-12-01T09:00:00Z"}),
        )
        .await;
    let encounter = api
        .create(
            "encounters",
            json!({"patientId": patient, "practitionerId": practitioner, "appointmentId": appointment}),
        )
        .await;
    World {
        patient,
        practitioner,
        appointment,
        encounter,
    }
}

/// A valid create body with only the required fields, for each collection.
pub fn minimal_body(collection: &str, w: &World) -> Value {
    let p = &w.patient;
    match collection {
        "patients" => json!({"firstName": "Ada", "lastName": "Lovelace"}),
        "practitioners" => json!({"firstName": "Gregory", "lastName": "House"}),
        "appointments" => json!({"patientId": p, "start": "2026-12-01T09:00:00Z"}),
        "encounters" => json!({"patientId": p}),
        "observations" => json!({"patientId": p, "code": "2345-7", "value": 90}),
        "prescriptions" => json!({"patientId": p, "medication": "Metformin 500 mg"}),
        "consents" => json!({"patientId": p}),
        "intakes" => json!({"patientId": p}),
        "notes" => json!({"patientId": p, "text": "Doing well."}),
        "labs" => json!({"patientId": p, "code": "24323-8"}),
        other => panic!("no such collection {other}"),
    }
}

/// The ten collections, with their id prefixes and event prefixes.
pub const COLLECTIONS: [(&str, &str, &str); 10] = [
    ("patients", "pat_", "patient"),
    ("practitioners", "prac_", "practitioner"),
    ("appointments", "appt_", "appointment"),
    ("encounters", "enc_", "encounter"),
    ("observations", "obs_", "observation"),
    ("prescriptions", "rx_", "prescription"),
    ("consents", "cons_", "consent"),
    ("intakes", "intk_", "intake"),
    ("notes", "note_", "note"),
    ("labs", "lab_", "lab"),
];

/// A create body with every field the type has, for each collection.
pub fn full_body(collection: &str, w: &World) -> Value {
    let p = &w.patient;
    let pr = &w.practitioner;
    let e = &w.encounter;
    match collection {
        "patients" => json!({
            "firstName": "Ada", "lastName": "Lovelace", "birthDate": "1815-12-10",
            "sex": "female", "email": "ada@example.com", "phone": "+15551234567",
            "address": {"line": "12 St James's Square", "city": "London", "state": "LND",
                        "postalCode": "SW1Y 4JH", "country": "GB"},
            "mrn": "MRN-0001", "locationId": "loc_main", "active": false
        }),
        "practitioners" => json!({
            "firstName": "Gregory", "lastName": "House", "email": "house@example.com",
            "phone": "+15557654321", "npi": "1234567893", "specialty": "Diagnostics"
        }),
        "appointments" => json!({
            "patientId": p, "practitionerId": pr, "start": "2026-12-01T09:00:00Z",
            "end": "2026-12-01T09:30:00Z", "status": "proposed", "reason": "Annual checkup",
            "locationId": "loc_main", "patientPhone": "+15550000001"
        }),
        "encounters" => json!({
            "patientId": p, "practitionerId": pr, "appointmentId": w.appointment,
            "status": "finished", "date": "2026-12-01T09:05:00Z", "end": "2026-12-01T09:25:00Z",
            "type": "office-visit",
            "serviceCodes": [{"system": "CPT", "code": "99213", "display": "Office visit"}],
            "diagnoses": [{"system": "ICD-10", "code": "E11.9", "display": "Type 2 diabetes"}]
        }),
        "observations" => json!({
            "patientId": p, "encounterId": e, "practitionerId": pr, "code": "2345-7",
            "display": "Glucose", "value": 105, "unit": "mg/dL",
            "referenceRange": {"low": 70, "high": 99}, "flag": "critical",
            "effectiveAt": "2026-12-01T09:10:00Z", "providerEmail": "alerts@example.com"
        }),
        "prescriptions" => json!({
            "patientId": p, "practitionerId": pr, "encounterId": e,
            "medication": "Metformin 500 mg", "dosage": "1 tablet twice daily",
            "quantity": 60, "refills": 2, "status": "on-hold",
            "pharmacy": {"name": "Corner Pharmacy", "phone": "+15559998888", "ncpdpId": "1234567"},
            "patientPhone": "+15550000002"
        }),
        "consents" => json!({
            "patientId": p, "scope": "treatment", "status": "rejected",
            "signedAt": "2026-12-01T08:55:00Z", "document": "https://example.com/consent.pdf"
        }),
        "intakes" => json!({
            "patientId": p, "form": "new-patient", "status": "completed",
            "responses": [{"question": "Allergies?", "answer": "None"}]
        }),
        "notes" => json!({
            "patientId": p, "encounterId": e, "authorId": pr, "kind": "progress",
            "text": "Patient doing well."
        }),
        "labs" => json!({
            "patientId": p, "encounterId": e, "code": "24323-8",
            "display": "Comprehensive metabolic panel", "status": "preliminary",
            "results": [{"code": "2345-7", "display": "Glucose", "value": 105, "unit": "mg/dL",
                         "referenceRange": {"low": 70, "high": 99}, "flag": "critical"}],
            "issuedAt": "2026-12-01T12:00:00Z"
        }),
        other => panic!("no such collection {other}"),
    }
}

/// The sequence of the tenant's latest event (0 when none).
pub async fn last_sequence(api: &Api) -> i64 {
    api.events_after(0)
        .await
        .last()
        .map(|e| e["sequence"].as_i64().expect("sequence"))
        .unwrap_or(0)
}

/// The ids in a list response's `data`.
pub fn ids(r: &Reply) -> Vec<String> {
    r.body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {}", r.body))
        .iter()
        .map(|x| x["id"].as_str().expect("id").to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// The event log.

/// The tenant id and key id of the server's `default` key.
pub async fn principal(server: &TestServer) -> eventflow_store::Principal {
    server
        .state
        .store
        .authenticate(&auth::hash_key(&server.key))
        .await
        .expect("authenticate")
        .expect("the default key is known")
}

/// The first disclosure of the patient by the endpoint, once its delivery
/// has succeeded.
pub async fn wait_for_disclosure(api: &Api, patient: &str, endpoint: &str) -> Value {
    let path = format!("/v1/disclosures?patientId={patient}");
    eventflow_testkit::wait_for(
        std::time::Duration::from_secs(20),
        "a disclosure",
        || async {
            let r = api.get(&path).await;
            r.body["data"]
                .as_array()
                .and_then(|d| d.iter().find(|x| x["endpointId"] == endpoint).cloned())
        },
    )
    .await
}

/// Waits until the endpoint's `failureStreak` is `n`.
pub async fn wait_for_failure_streak(api: &Api, endpoint: &str, n: i64) {
    let path = format!("/v1/endpoints/{endpoint}");
    eventflow_testkit::wait_for(
        std::time::Duration::from_secs(20),
        "the endpoint's failure streak",
        || async { (api.get(&path).await.body["failureStreak"] == n).then_some(()) },
    )
    .await
}

/// The tenant, key and scopes of a client's key.
pub async fn principal_of(server: &TestServer, api: &Api) -> eventflow_store::Principal {
    server
        .state
        .store
        .authenticate(&auth::hash_key(api.key.as_deref().expect("a key")))
        .await
        .expect("authenticate")
        .expect("the key is known")
}

/// `2026-11-29T17:00:00.123Z`: RFC 3339, UTC, milliseconds.
pub fn assert_timestamp(s: &str) {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b[i].is_ascii_digit());
    assert!(
        b.len() == 24
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19)
            && b[19] == b'.'
            && digits(20..23)
            && b[23] == b'Z',
        "not an RFC 3339 UTC timestamp with milliseconds: {s}"
    );
}

/// Every event after `after`, paging through with `limit=1000`. Unlike a
/// plain loop it cannot spin: each page must move `nextAfter` forward past
/// `after`, and 100 pages is the most it reads.
pub async fn all_events(api: &Api, after: i64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = after;
    for _ in 0..100 {
        let r = api
            .get(&format!("/v1/events?after={after}&limit=1000"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let data = r.body["data"].as_array().expect("data").clone();
        let next = r.body["nextAfter"].as_i64().expect("nextAfter");
        if data.is_empty() {
            assert_eq!(next, after, "nextAfter is the after given when none");
            return out;
        }
        assert!(
            data.iter()
                .all(|e| e["sequence"].as_i64().expect("sequence") > after),
            "after={after} returned an event at or before it"
        );
        assert!(next > after, "nextAfter must move forward");
        after = next;
        out.extend(data);
    }
    panic!("more than 100 pages of events");
}

/// The `sequence` of each event, in order.
pub fn sequences(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["sequence"].as_i64().expect("sequence"))
        .collect()
}

// ---------------------------------------------------------------------------
// Errors.

/// Checks that `r` is an error with exactly the shape
/// `{"error": {"type", "message", "field"?}}` (plus `index` when
/// `allow_index`), and a JSON content type.
pub fn assert_error_shape(r: &Reply, allow_index: bool) {
    let top = r
        .body
        .as_object()
        .unwrap_or_else(|| panic!("{} error body is not an object: {}", r.status, r.body));
    assert_eq!(
        top.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["error"],
        "{}",
        r.body
    );
    let error = top["error"].as_object().expect("error is an object");
    for key in error.keys() {
        let allowed =
            ["type", "message", "field"].contains(&key.as_str()) || (allow_index && key == "index");
        assert!(allowed, "unexpected error member {key}: {}", r.body);
    }
    assert!(
        error
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty()),
        "{}",
        r.body
    );
    assert!(
        error
            .get("message")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty()),
        "{}",
        r.body
    );
    if let Some(field) = error.get("field") {
        assert!(field.as_str().is_some_and(|s| !s.is_empty()), "{}", r.body);
    }
    if let Some(index) = error.get("index") {
        assert!(index.is_u64(), "{}", r.body);
    }
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
}

/// Checks status, error shape, `error.type` and `error.field` (`None`: no field).
pub fn assert_error(r: &Reply, status: u16, kind: &str, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_error_shape(r, false);
    assert_eq!(r.body["error"]["type"], kind, "{}", r.body);
    assert_eq!(r.error_field(), field, "{}", r.body);
}

/// Counts of records in every collection (up to 500 each).
pub async fn counts(api: &Api) -> Vec<usize> {
    let mut out = Vec::new();
    for (collection, _, _) in COLLECTIONS {
        let r = api.get(&format!("/v1/{collection}?limit=500")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        out.push(r.body["data"].as_array().unwrap().len());
    }
    out
}

/// A server whose waiting readers read again only once an hour
/// (`reader_recheck_secs`): a long poll or stream answered within a test's
/// hang guard was woken by the commit itself, not by the safety net.
pub async fn woken_by_commits_only(backend: Backend) -> TestServer {
    backend
        .spawn_with(Options {
            clock: None,
            configure: Some(Box::new(|c| c.reader_recheck_secs = 3600)),
        })
        .await
}

// ---------------------------------------------------------------------------
// The event stream.

type Bytes = Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

/// One Server-Sent Event: its `id:` and its `data:` parsed as JSON.
#[derive(Debug)]
pub struct Sse {
    pub id: String,
    pub data: Value,
}

/// Reads frames from an open `text/event-stream` response.
pub struct SseReader {
    bytes: Bytes,
    buf: String,
}

impl SseReader {
    pub async fn open(api: &Api, path: &str, last_event_id: Option<&str>) -> SseReader {
        let mut req = api.request(reqwest::Method::GET, path);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = tokio::time::timeout(Duration::from_secs(10), req.send())
            .await
            .expect("the stream answers")
            .expect("request sent");
        assert_eq!(resp.status(), 200, "{path}");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        SseReader {
            bytes: Box::pin(resp.bytes_stream().map(|r| r.map(|b| b.to_vec()))),
            buf: String::new(),
        }
    }

    /// The next event (skipping comments such as keep-alives), or `None`
    /// when none arrives within `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.strip_prefix(' ').unwrap_or(v).to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue; // a comment or keep-alive
                }
                let data: Value = serde_json::from_str(&data).expect("data: is JSON");
                return Some(Sse {
                    id: id.expect("every event has an id:"),
                    data,
                });
            }
            match tokio::time::timeout_at(deadline, self.bytes.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Some(Err(e))) => panic!("the stream broke: {e}"),
                Ok(None) => panic!("the stream ended"),
                Err(_) => return None,
            }
        }
    }

    /// Whether the server ends the stream (its body ends or breaks off)
    /// within `within`, reading past whatever it still sends.
    pub async fn ends_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.bytes.next()).await {
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => return true,
                Err(_) => return false,
            }
        }
    }

    /// The next event; panics when none arrives within 10 s.
    pub async fn next(&mut self) -> Sse {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("an event within 10 s")
    }

    /// The next `n` events' sequences, checking `id:` = sequence.
    pub async fn take(&mut self, n: usize) -> Vec<Sse> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let e = self.next().await;
            assert_eq!(
                e.id,
                e.data["sequence"].as_i64().expect("sequence").to_string(),
                "id: is the sequence"
            );
            out.push(e);
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Outside checkers.

/// A `node_modules` holding `package` (installed as `spec` with npm when
/// missing): under `$var`, or `~/.cache/{dir}` when it is not set. `None`
/// without Node.js and npm.
pub fn npm_modules(var: &str, dir: &str, package: &str, spec: &str) -> Option<std::path::PathBuf> {
    let dir = match std::env::var(var) {
        Ok(d) => std::path::PathBuf::from(d),
        Err(_) => std::path::PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
            .join(".cache")
            .join(dir),
    };
    let modules = dir.join("node_modules");
    if !modules.join(package).exists() {
        let ok = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg(spec)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return None;
        }
    }
    let node = std::process::Command::new("node").arg("--version").output();
    (node.is_ok_and(|o| o.status.success()) && modules.join(package).exists()).then_some(modules)
}

/// One instance to check against a JSON Schema (named), and whether it
/// should pass.
pub struct SchemaCase {
    pub label: String,
    pub schema: String,
    pub instance: Value,
    pub valid: bool,
}

/// Checks every case with the `jsonschema` Python library (draft 2020-12,
/// formats checked) against the schema it names in `schemas`: each schema
/// must be a valid schema, and each instance valid or invalid as the case
/// says. Panics naming the cases that were not. Without the library,
/// prints the `SKIPPED` line `.ci/run` fails on.
pub fn check_schemas(
    test: &str,
    schemas: &std::collections::BTreeMap<String, Value>,
    cases: &[SchemaCase],
) {
    if !eventflow_testkit::python_has(&["jsonschema", "rfc3339_validator"]) {
        eventflow_testkit::skipped(
            test,
            "the envelope schemas need the jsonschema and rfc3339-validator Python packages",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("cases.json");
    let cases_json: Vec<Value> = cases
        .iter()
        .map(|c| json!({"label": c.label, "schema": c.schema, "instance": c.instance, "valid": c.valid}))
        .collect();
    let input = json!({"schemas": schemas, "cases": cases_json});
    std::fs::write(&path, serde_json::to_vec(&input).expect("JSON")).expect("written");
    let out = eventflow_testkit::python(VALIDATE, &[path.to_str().expect("a UTF-8 path")]);
    let failures: Vec<Value> = serde_json::from_str(&out).expect("the checker prints JSON");
    assert!(
        failures.is_empty(),
        "{} of {} cases were not as expected:\n{}",
        failures.len(),
        cases.len(),
        serde_json::to_string_pretty(&failures).expect("JSON")
    );
}

const VALIDATE: &str = r#"
import json, sys
from jsonschema import Draft202012Validator, FormatChecker
formats = FormatChecker()
# Without rfc3339-validator the date-time format would pass anything.
assert not formats.conforms("yesterday", "date-time")
given = json.load(open(sys.argv[1]))
validators = {}
for name, schema in given["schemas"].items():
    Draft202012Validator.check_schema(schema)
    validators[name] = Draft202012Validator(schema, format_checker=formats)
failures = []
for c in given["cases"]:
    errors = sorted(validators[c["schema"]].iter_errors(c["instance"]), key=lambda e: list(e.absolute_path))
    if (not errors) != c["valid"]:
        failures.append({"label": c["label"], "schema": c["schema"], "expected valid": c["valid"],
                         "errors": ["/".join(map(str, e.absolute_path)) + ": " + e.message[:300] for e in errors[:5]]})
print(json.dumps(failures))
"#;

/// Runs `sql` on the server's own database, beside the server: how a test
/// stands in for what another node wrote.
pub async fn execute(server: &TestServer, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    match &server.database {
        Some(db) => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        None => {
            let path = eventflow_server::sqlite_path(server.dir.path());
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// A database of `backend` migrated up to `version`, filled by `fill`,
/// then migrated to the newest: the rows `read` selects, each column as
/// text (NULL as `None`). How a test checks what a migration makes of
/// data an older build left.
pub async fn upgraded(
    backend: &Backend,
    version: i64,
    fill: &str,
    read: &str,
) -> Vec<Vec<Option<String>>> {
    let (url, _db) = backend.database_url().await;
    let dir = tempfile::tempdir().unwrap();
    macro_rules! upgrade {
        ($pool:expr, $postgres:expr, $newest:expr) => {{
            use sqlx::Row;
            let pool = $pool;
            eventflow_store::migrations::up_to($postgres, version)
                .run(&pool)
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(fill.to_string()))
                .execute(&pool)
                .await
                .unwrap();
            $newest.run(&pool).await.unwrap();
            let found = sqlx::query(sqlx::AssertSqlSafe(read.to_string()))
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.get::<Option<String>, _>(i))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>();
            pool.close().await;
            found
        }};
    }
    match backend {
        Backend::Sqlite => {
            let path = dir.path().join("upgrade.db");
            upgrade!(
                sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                    .await
                    .unwrap(),
                false,
                eventflow_store::migrations::sqlite()
            )
        }
        Backend::Postgres(_) => upgrade!(
            sqlx::PgPool::connect(&url).await.unwrap(),
            true,
            eventflow_store::migrations::postgres()
        ),
    }
}

pub const IG: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";

/// A `Subscription` to `topic` (a canonical URL) at `url`.
pub fn subscription(topic: &str, url: &str, content: &str, filter: Option<&str>) -> Value {
    let mut s = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Cancelled appointments, for the scheduling system",
        "criteria": topic,
        "channel": {
            "type": "rest-hook",
            "endpoint": url,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": format!("{IG}backport-payload-content"), "valueCode": content}]},
            "header": ["Authorization: Bearer receiver-token"],
            "extension": [
                {"url": format!("{IG}backport-timeout"), "valueUnsignedInt": 10},
                {"url": format!("{IG}backport-max-count"), "valuePositiveInt": 1},
            ],
        },
    });
    if let Some(f) = filter {
        s["_criteria"] = json!({"extension": [{"url": format!("{IG}backport-filter-criteria"), "valueString": f}]});
    }
    s
}

/// `body` (a `Subscription`) asking for a heartbeat every `secs` seconds.
pub fn with_heartbeat(mut body: Value, secs: u32) -> Value {
    if let Some(ext) = body["channel"]["extension"].as_array_mut() {
        ext.push(heartbeat_period(secs));
    }
    body
}

/// The `backport-heartbeat-period` extension.
pub fn heartbeat_period(secs: u32) -> Value {
    json!({"url": format!("{IG}backport-heartbeat-period"), "valueUnsignedInt": secs})
}

/// The canonical URL of the server's SubscriptionTopic `name`.
pub async fn topic_url(api: &Api, name: &str) -> String {
    let r = api.get(&format!("/fhir/SubscriptionTopic/{name}")).await;
    r.body["url"].as_str().unwrap().to_string()
}
