//! Helpers the behaviour files share: the records a test starts from, the
//! bodies of each record type, reading the whole event log, and the checks
//! of the error shape. Helpers that are one API call live on the testkit's
//! `Api`; a behaviour file exports nothing.

use eventflow_server::auth;
use eventflow_testkit::{Api, Backend, Options, Reply, TestServer};
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
