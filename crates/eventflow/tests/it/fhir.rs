//! The FHIR R4B facade: every record type read as a resource that PyPI's
//! `fhir.resources` R4B models accept, searches as `searchset` Bundles
//! with paging, version reads from the event log, the CapabilityStatement,
//! and every error as an `OperationOutcome`.

use base64::Engine;
use eventflow_testkit::python::{python, python_has, skipped};
use eventflow_testkit::{Answer, Api, Backend, Receiver, Reply, backend_tests, wait_for};
use serde_json::{Value, json};

use crate::helpers::{
    COLLECTIONS, IG, full_body, heartbeat_period, minimal_body, subscription, topic_url,
    with_heartbeat, world,
};

backend_tests!(
    every_record_type_reads_as_a_valid_r4b_resource,
    searches_are_valid_searchsets_that_page_and_filter,
    a_search_that_matches_too_many_to_count_leaves_out_its_total,
    appointments_and_encounters_are_found_by_date,
    records_written_before_date_search_get_their_dates,
    a_version_is_read_from_the_event_log,
    metadata_is_a_valid_capability_statement,
    every_fhir_error_is_an_operation_outcome,
    fhir_clients_create_and_update_patients_appointments_and_observations,
    a_fhir_write_the_server_cannot_keep_is_refused_and_changes_nothing,
    a_fhir_client_library_reads_searches_pages_writes_and_subscribes,
    subscription_topics_name_every_event_type_and_clinical_topic,
    a_subscription_shakes_hands_then_notifies_each_matching_event,
    a_failed_handshake_puts_the_subscription_in_error_and_sends_nothing,
    a_quiet_subscription_is_sent_heartbeats_that_do_not_count,
    a_subscription_the_server_cannot_keep_is_refused,
    the_walk_through_of_the_fhir_docs_works,
);

const VALIDATOR: &str = "fhir.resources.R4B";

/// Whether the validator is installed; prints the skip line when not.
fn validator(test: &str) -> bool {
    let ok = python_has(&[VALIDATOR]);
    if !ok {
        skipped(test, "python3 with PyPI fhir.resources is not installed");
    }
    ok
}

/// Checks each resource against its FHIR R4B model (types, cardinality,
/// required elements, no unknown element, id pattern); returns the type
/// names the models read back, in order.
fn validate(resources: &[Value]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resources.json");
    std::fs::write(&file, serde_json::to_vec(resources).unwrap()).unwrap();
    let script = r#"
import sys, json
from fhir.resources.R4B import get_fhir_model_class
names = []
for r in json.load(open(sys.argv[1])):
    m = get_fhir_model_class(r["resourceType"]).model_validate(r)
    names.append(m.get_resource_type())
print(" ".join(names))
"#;
    python(script, &[file.to_str().unwrap()])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn fhir_id(id: &str) -> String {
    id.replacen('_', "-", 1)
}

fn assert_fhir(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/fhir+json")),
        "{:?}",
        r.header("content-type")
    );
}

/// The FHIR type of each collection.
fn fhir_type(collection: &str) -> &'static str {
    match collection {
        "patients" => "Patient",
        "practitioners" => "Practitioner",
        "appointments" => "Appointment",
        "encounters" => "Encounter",
        "observations" => "Observation",
        "prescriptions" => "MedicationRequest",
        "consents" => "Consent",
        "intakes" => "QuestionnaireResponse",
        "notes" => "DocumentReference",
        "labs" => "DiagnosticReport",
        other => panic!("no such collection {other}"),
    }
}

async fn read(api: &Api, collection: &str, id: &str) -> Value {
    let r = api
        .get(&format!("/fhir/{}/{}", fhir_type(collection), fhir_id(id)))
        .await;
    assert_fhir(&r, 200);
    r.body
}

async fn every_record_type_reads_as_a_valid_r4b_resource(backend: Backend) {
    if !validator("every_record_type_reads_as_a_valid_r4b_resource") {
        return;
    }
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let mut resources = Vec::new();
    let mut expected = Vec::new();
    for (collection, _, _) in COLLECTIONS {
        for body in [full_body(collection, &w), minimal_body(collection, &w)] {
            let id = api.create(collection, body).await;
            let r = api
                .get(&format!("/fhir/{}/{}", fhir_type(collection), fhir_id(&id)))
                .await;
            assert_fhir(&r, 200);
            assert_eq!(r.header("etag"), Some("W/\"1\""));
            assert!(
                r.header("last-modified")
                    .is_some_and(|l| l.ends_with(" GMT"))
            );
            let res = r.body;
            assert_eq!(res["resourceType"], fhir_type(collection));
            assert_eq!(res["id"], fhir_id(&id));
            assert_eq!(res["meta"]["versionId"], "1");
            // Event Flow's own spelling of the id reads the same resource.
            let same = api
                .get(&format!("/fhir/{}/{id}", fhir_type(collection)))
                .await;
            assert_eq!(same.body, res);
            expected.push(fhir_type(collection).to_string());
            resources.push(res);
        }
    }
    assert_eq!(validate(&resources), expected);

    // What each type's fields became (fhir.resources checks shapes, not
    // codes, so the codes are checked here).
    let full = |collection: &str| {
        resources[COLLECTIONS.iter().position(|c| c.0 == collection).unwrap() * 2].clone()
    };
    let patient_ref = json!({"reference": format!("Patient/{}", fhir_id(&w.patient))});
    let p = full("patients");
    assert_eq!(p["name"], json!([{"family": "Lovelace", "given": ["Ada"]}]));
    assert_eq!(p["gender"], "female");
    assert_eq!(p["birthDate"], "1815-12-10");
    assert_eq!(p["active"], false);
    assert_eq!(p["identifier"][0]["type"]["coding"][0]["code"], "MR");
    assert_eq!(p["identifier"][0]["value"], "MRN-0001");
    assert_eq!(p["address"][0]["line"], json!(["12 St James's Square"]));
    assert!(
        p["telecom"]
            .as_array()
            .unwrap()
            .contains(&json!({"system": "phone", "value": "+15551234567", "use": "mobile"}))
    );
    let pr = full("practitioners");
    assert_eq!(
        pr["identifier"][0],
        json!({"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"})
    );
    let a = full("appointments");
    assert_eq!(a["status"], "proposed");
    assert_eq!(a["participant"][0]["actor"], patient_ref);
    assert_eq!(
        a["participant"][1]["actor"]["reference"],
        format!("Practitioner/{}", fhir_id(&w.practitioner))
    );
    assert_eq!(a["start"], "2026-12-01T09:00:00.000Z");
    assert_eq!(a["end"], "2026-12-01T09:30:00.000Z");
    let e = full("encounters");
    assert_eq!(e["status"], "finished");
    assert_eq!(e["class"]["code"], "AMB");
    assert_eq!(
        e["type"][1]["coding"][0],
        json!({"system": "http://www.ama-assn.org/go/cpt", "code": "99213", "display": "Office visit"})
    );
    assert_eq!(
        e["reasonCode"][0]["coding"][0]["system"],
        "http://hl7.org/fhir/sid/icd-10-cm"
    );
    assert_eq!(
        e["appointment"][0]["reference"],
        format!("Appointment/{}", fhir_id(&w.appointment))
    );
    let o = full("observations");
    assert_eq!(o["subject"], patient_ref);
    assert_eq!(o["valueQuantity"], json!({"value": 105, "unit": "mg/dL"}));
    assert_eq!(o["interpretation"][0]["coding"][0]["code"], "AA");
    assert_eq!(o["referenceRange"][0]["high"]["value"], 99);
    let rx = full("prescriptions");
    assert_eq!(rx["status"], "on-hold");
    assert_eq!(rx["intent"], "order");
    assert_eq!(rx["dispenseRequest"]["numberOfRepeatsAllowed"], 2);
    assert_eq!(rx["dispenseRequest"]["performer"]["reference"], "#pharmacy");
    assert_eq!(rx["contained"][0]["name"], "Corner Pharmacy");
    let c = full("consents");
    assert_eq!(c["status"], "rejected");
    assert_eq!(
        c["sourceAttachment"]["url"],
        "https://example.com/consent.pdf"
    );
    let q = full("intakes");
    assert_eq!(q["status"], "completed");
    assert_eq!(q["item"][0]["answer"][0]["valueString"], "None");
    let n = full("notes");
    let text = base64::engine::general_purpose::STANDARD
        .decode(n["content"][0]["attachment"]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(text, b"Patient doing well.");
    let l = full("labs");
    assert_eq!(l["status"], "preliminary");
    assert_eq!(l["result"], json!([{"reference": "#result-1"}]));
    assert_eq!(l["contained"][0]["valueQuantity"]["value"], 105);
    // A minimal intake (status requested) is a response in progress.
    let intake = &resources[COLLECTIONS.iter().position(|c| c.0 == "intakes").unwrap() * 2 + 1];
    assert_eq!(intake["status"], "in-progress");

    // Reads are audited as /v1 reads are.
    read(&api, "patients", &w.patient).await;
    let audit = api
        .get(&format!("/v1/audit-log?resourceId={}", w.patient))
        .await;
    assert!(
        audit.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "read"),
        "{}",
        audit.body
    );
    // Another clinic's record is not found.
    let other = server.new_tenant("other clinic").await;
    let r = other
        .get(&format!("/fhir/Patient/{}", fhir_id(&w.patient)))
        .await;
    assert_fhir(&r, 404);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
}

async fn searches_are_valid_searchsets_that_page_and_filter(backend: Backend) {
    if !validator("searches_are_valid_searchsets_that_page_and_filter") {
        return;
    }
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let other = api.patient().await;
    let mut mine = Vec::new();
    for value in [90, 95, 100] {
        mine.push(
            api.create(
                "observations",
                json!({"patientId": w.patient, "code": "2345-7", "value": value}),
            )
            .await,
        );
    }
    api.create(
        "observations",
        json!({"patientId": other, "code": "2345-7", "value": 80}),
    )
    .await;
    let mut bundles = Vec::new();

    // Two pages of two and one, through the next link.
    let first = api
        .get(&format!(
            "/fhir/Observation?patient=Patient/{}&_count=2",
            fhir_id(&w.patient)
        ))
        .await;
    assert_fhir(&first, 200);
    assert_eq!(first.body["type"], "searchset");
    let ids = |b: &Value| -> Vec<String> {
        b["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(ids(&first.body), vec![fhir_id(&mine[0]), fhir_id(&mine[1])]);
    let entry = &first.body["entry"][0];
    assert!(
        entry["fullUrl"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/fhir/Observation/{}", fhir_id(&mine[0])))
    );
    assert_eq!(entry["search"]["mode"], "match");
    let next = first.body["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    // Links are absolute, to the address the client used.
    assert!(next.starts_with(&api.url("/fhir/Observation?")), "{next}");
    let path = &next[next.find("/fhir/").unwrap()..];
    let second = api.get(path).await;
    assert_fhir(&second, 200);
    assert_eq!(ids(&second.body), vec![fhir_id(&mine[2])]);
    // Each page says how many the whole search matches.
    assert_eq!(first.body["total"], 3);
    assert_eq!(second.body["total"], 3);
    assert!(
        !second.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["relation"] == "next")
    );
    bundles.push(first.body);
    bundles.push(second.body);

    // One page holds the whole result.
    let all = api
        .get(&format!("/fhir/Observation?patient={}", w.patient))
        .await;
    assert_eq!(all.body["total"], 3);
    bundles.push(all.body);

    // status, _id, identifier, _lastUpdated.
    api.create(
        "appointments",
        json!({"patientId": w.patient, "start": "2026-12-02T09:00:00Z", "status": "cancelled"}),
    )
    .await;
    let cancelled = api.get("/fhir/Appointment?status=cancelled").await;
    assert_eq!(cancelled.body["total"], 1);
    assert_eq!(
        cancelled.body["entry"][0]["resource"]["status"],
        "cancelled"
    );
    bundles.push(cancelled.body);
    let by_id = api
        .get(&format!("/fhir/Observation?_id={}", fhir_id(&mine[1])))
        .await;
    assert_eq!(ids(&by_id.body), vec![fhir_id(&mine[1])]);
    let none = api
        .get(&format!(
            "/fhir/Observation?_id={}&patient=Patient/{}",
            fhir_id(&mine[1]),
            fhir_id(&other)
        ))
        .await;
    assert_eq!(none.body["total"], 0);
    assert!(none.body.get("entry").is_none());
    bundles.push(none.body);
    let mrn = api
        .create(
            "patients",
            json!({"firstName": "Mary", "lastName": "Major", "mrn": "MRN-77"}),
        )
        .await;
    let found = api.get("/fhir/Patient?identifier=MRN-77").await;
    assert_eq!(ids(&found.body), vec![fhir_id(&mrn)]);

    let stamp = |b: &Value| {
        b["entry"][0]["resource"]["meta"]["lastUpdated"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let latest = stamp(&found.body);
    let ge = api
        .get(&format!("/fhir/Patient?_lastUpdated=ge{latest}"))
        .await;
    assert!(ids(&ge.body).contains(&fhir_id(&mrn)), "{}", ge.body);
    let gt = api
        .get(&format!("/fhir/Patient?_lastUpdated=gt{latest}"))
        .await;
    assert!(!ids(&gt.body).contains(&fhir_id(&mrn)), "{}", gt.body);
    let day = api.get("/fhir/Patient?_lastUpdated=ge2000-01-01").await;
    assert_eq!(day.status, 200);
    bundles.push(ge.body);
    bundles.push(gt.body);

    let n = bundles.len();
    assert_eq!(validate(&bundles), vec!["Bundle".to_string(); n]);

    // Bad parameters are refused, naming the parameter.
    for (query, field) in [
        ("/fhir/Observation?subject=x", "subject"),
        ("/fhir/Observation?_count=0", "_count"),
        ("/fhir/Observation?_count=501", "_count"),
        ("/fhir/Observation?patient=Practitioner/x", "patient"),
        (
            "/fhir/Observation?_lastUpdated=lt2026-01-01",
            "_lastUpdated",
        ),
        ("/fhir/Observation?_cursor=pat_01", "_cursor"),
        ("/fhir/Appointment?status=bogus", "status"),
        ("/fhir/Observation?status=final", "status"),
        ("/fhir/Practitioner?patient=pat_01", "patient"),
    ] {
        let r = api.get(query).await;
        assert_fhir(&r, 422);
        assert_eq!(r.body["issue"][0]["code"], "invalid", "{query}");
        assert_eq!(r.body["issue"][0]["expression"], json!([field]), "{query}");
    }
}

async fn a_search_that_matches_too_many_to_count_leaves_out_its_total(backend: Backend) {
    let server = backend
        .spawn_with(eventflow_testkit::Options {
            configure: Some(Box::new(|c| c.limits.fhir_search_total = 3)),
            ..Default::default()
        })
        .await;
    let api = server.api();
    let w = world(&api).await;
    let other = api.patient().await;
    for patient in [&w.patient, &w.patient, &w.patient, &other] {
        api.create(
            "observations",
            json!({"patientId": patient, "code": "2345-7", "value": 90}),
        )
        .await;
    }
    let total = |path: String| {
        let api = api.clone();
        async move {
            let r = api.get(&path).await;
            assert_fhir(&r, 200);
            (
                r.body.get("total").cloned(),
                r.body["entry"].as_array().map_or(0, Vec::len),
            )
        }
    };
    // Four match, one a page: the count stops at three and is left out.
    assert_eq!(total("/fhir/Observation?_count=1".into()).await, (None, 1));
    // Three match: still too many to count.
    let mine = format!("/fhir/Observation?_count=1&patient={}", w.patient);
    assert_eq!(total(mine).await, (None, 1));
    // One matches: counted.
    let theirs = format!("/fhir/Observation?_count=1&patient={other}");
    assert_eq!(total(theirs).await, (Some(json!(1)), 1));
    // A search whose one page holds all it matches counts them, whatever
    // their number.
    let all = format!("/fhir/Observation?patient={}", w.patient);
    assert_eq!(total(all).await, (Some(json!(3)), 3));
}

async fn appointments_and_encounters_are_found_by_date(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let mut appts = Vec::new();
    // The second starts on 5 December in New York, the 6th in UTC.
    for start in [
        "2026-12-05T09:00:00Z",
        "2026-12-05T23:30:00-05:00",
        "2026-12-07T10:00:00Z",
        "2026-12-08T10:00:00.25Z",
    ] {
        appts.push(
            api.create(
                "appointments",
                json!({"patientId": patient, "start": start}),
            )
            .await,
        );
    }
    // Encounters are periods: one on 30 November, one still going on
    // since 2 December, one from 1 to 10 December.
    let mut encounters = Vec::new();
    for body in [
        json!({"date": "2026-11-30T10:00:00Z", "end": "2026-11-30T11:00:00Z"}),
        json!({"date": "2026-12-02T10:00:00.250Z"}),
        json!({"date": "2026-12-01T09:00:00Z", "end": "2026-12-10T09:00:00Z"}),
    ] {
        let mut body = body;
        body["patientId"] = json!(patient);
        encounters.push(api.create("encounters", body).await);
    }
    let mut bundles = Vec::new();
    let mut found = async |path: String| -> Vec<String> {
        let r = api.get(&path).await;
        assert_fhir(&r, 200);
        let ids: Vec<String> = r.body["entry"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|e| e["resource"]["id"].as_str().unwrap().replacen('-', "_", 1))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(r.body["total"], ids.len(), "{path}");
        bundles.push(r.body);
        ids
    };
    let a = |i: &[usize]| i.iter().map(|&i| appts[i].clone()).collect::<Vec<_>>();
    let q = |query: &str| format!("/fhir/Appointment?{query}");
    // A day, in UTC.
    assert_eq!(found(q("date=2026-12-05")).await, a(&[0]));
    assert_eq!(found(q("date=eq2026-12-06")).await, a(&[1]));
    // A range: both values hold.
    assert_eq!(
        found(q("date=ge2026-12-05&date=lt2026-12-07")).await,
        a(&[0, 1])
    );
    assert_eq!(found(q("date=gt2026-12-05")).await, a(&[1, 2, 3]));
    assert_eq!(found(q("date=sa2026-12-05")).await, a(&[1, 2, 3]));
    assert_eq!(found(q("date=2026-12")).await, a(&[0, 1, 2, 3]));
    assert_eq!(found(q("date=2026")).await, a(&[0, 1, 2, 3]));
    assert_eq!(found(q("date=2025")).await, a(&[]));
    // An instant covers its last digit; an offset is understood.
    assert_eq!(found(q("date=le2026-12-05T09:00:00Z")).await, a(&[0]));
    assert_eq!(found(q("date=lt2026-12-05T09:00:00Z")).await, a(&[]));
    assert_eq!(found(q("date=2026-12-06T04:30:00%2B00:00")).await, a(&[1]));
    assert_eq!(found(q("date=eb2026-12-06T04:30:00Z")).await, a(&[0]));
    assert_eq!(found(q("date=2026-12-08T10:00:00Z")).await, a(&[3]));
    assert_eq!(found(q("date=2026-12-08T10:00:00.2Z")).await, a(&[3]));
    assert_eq!(found(q("date=2026-12-08T10:00:00.250Z")).await, a(&[3]));
    assert_eq!(found(q("date=2026-12-08T10:00:00.251Z")).await, a(&[]));
    // Pages of a range keep the whole range in their next links.
    let mut path = q("date=ge2026-12-05&date=lt2026-12-08&_count=1");
    let mut paged = Vec::new();
    loop {
        let r = api.get(&path).await;
        assert_fhir(&r, 200);
        assert_eq!(r.body["total"], 3, "{path}");
        paged.extend(
            r.body["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().replacen('-', "_", 1)),
        );
        let next = r.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
        match next {
            Some(n) => path = n[n.find("/fhir/").unwrap()..].to_string(),
            None => break,
        }
    }
    assert_eq!(paged, a(&[0, 1, 2]));
    // With _id, the record must fall in the range too.
    let one = fhir_id(&appts[2]);
    assert_eq!(
        found(q(&format!("_id={one}&date=2026-12-07"))).await,
        a(&[2])
    );
    assert_eq!(
        found(q(&format!("_id={one}&date=2026-12-05"))).await,
        a(&[])
    );
    // A moved appointment is found at its new time.
    api.patch(
        &format!("/v1/appointments/{}", appts[0]),
        json!({"start": "2026-12-10T08:00:00+01:00"}),
    )
    .await;
    assert_eq!(found(q("date=2026-12-10")).await, a(&[0]));
    assert_eq!(found(q("date=2026-12-05")).await, a(&[]));

    // An encounter's period, as FHIR compares periods: `eq` holds it
    // wholly, `gt`/`ge`/`lt`/`le` overlap after or before, `sa` starts
    // after, `eb` ends before; one still going on has no end.
    let e = |query: &str| format!("/fhir/Encounter?{query}");
    let enc = |i: &[usize]| i.iter().map(|&i| encounters[i].clone()).collect::<Vec<_>>();
    assert_eq!(found(e("date=2026-11-30")).await, enc(&[0]));
    assert_eq!(found(e("date=2026-12-05")).await, enc(&[]));
    assert_eq!(found(e("date=2026-12")).await, enc(&[2]));
    assert_eq!(found(e("date=gt2026-12-05")).await, enc(&[1, 2]));
    assert_eq!(found(e("date=ge2026-12-10")).await, enc(&[1, 2]));
    assert_eq!(found(e("date=lt2026-12-01")).await, enc(&[0]));
    assert_eq!(found(e("date=le2026-12-01")).await, enc(&[0, 2]));
    assert_eq!(found(e("date=sa2026-12-01")).await, enc(&[1]));
    assert_eq!(found(e("date=eb2026-12-01")).await, enc(&[0]));
    // The same through _id.
    let open = fhir_id(&encounters[1]);
    assert_eq!(
        found(e(&format!("_id={open}&date=gt2027-01-01"))).await,
        enc(&[1])
    );
    assert_eq!(
        found(e(&format!("_id={open}&date=2026-12-02"))).await,
        enc(&[])
    );
    if validator("appointments_and_encounters_are_found_by_date") {
        assert_eq!(validate(&bundles).len(), bundles.len());
    }

    // What the server cannot search is refused, naming `date`.
    for bad in [
        q("date=ne2026-12-05"),
        q("date=ap2026-12-05"),
        q("date=2026-13"),
        q("date=05-12-2026"),
        q("date=xx2026-12-05"),
        q("date=2026-12-05T09:00"),
        q("date=%C3%A92026-12"),
        q("date=ge2026-12-01&date=lt2026-12-31&date=2026-12-05"),
        "/fhir/Patient?date=2026-12-05".to_string(),
    ] {
        let r = api.get(&bad).await;
        assert_fhir(&r, 422);
        assert_eq!(
            r.body["issue"][0]["expression"],
            json!(["date"]),
            "{bad}: {}",
            r.body
        );
    }
}

/// Records as the build before date search left them.
const BEFORE_RECORD_DATES: &str = "
INSERT INTO records (tenant_id, id, resource_type, version, patient_id, status, updated_at, data) VALUES
 ('ten_1', 'apt_1', 'appointment', 1, 'pat_1', 'booked', '2026-01-01T00:00:00.000Z',
  '{\"id\":\"apt_1\",\"patientId\":\"pat_1\",\"start\":\"2026-12-05T23:30:00.5-05:00\"}'),
 ('ten_1', 'apt_2', 'appointment', 1, 'pat_1', 'booked', '2026-01-01T00:00:00.000Z',
  '{\"id\":\"apt_2\",\"patientId\":\"pat_1\",\"start\":\"2026-12-07t10:00:00z\"}'),
 ('ten_1', 'apt_3', 'appointment', 1, 'pat_1', 'booked', '2026-01-01T00:00:00.000Z',
  '{\"id\":\"apt_3\",\"patientId\":\"pat_1\",\"start\":\"0000-01-01T00:00:00Z\"}'),
 ('ten_1', 'enc_1', 'encounter', 1, 'pat_1', 'finished', '2026-01-01T00:00:00.000Z',
  '{\"id\":\"enc_1\",\"patientId\":\"pat_1\",\"date\":\"2026-11-30T10:00:00Z\",\"end\":\"2026-11-30T11:00:00+01:00\"}'),
 ('ten_1', 'enc_2', 'encounter', 1, 'pat_1', 'in-progress', '2026-01-01T00:00:00.000Z',
  '{\"id\":\"enc_2\",\"patientId\":\"pat_1\",\"date\":\"2026-12-01T10:00:00Z\"}'),
 ('ten_1', 'pat_1', 'patient', 1, NULL, NULL, '2026-01-01T00:00:00.000Z',
  '{\"id\":\"pat_1\",\"firstName\":\"Ada\"}');
";

async fn records_written_before_date_search_get_their_dates(backend: Backend) {
    let rows: Vec<(String, Option<String>, Option<String>)> = crate::helpers::upgraded(
        &backend,
        18,
        BEFORE_RECORD_DATES,
        "SELECT id, date_at, date_end FROM records ORDER BY id",
    )
    .await
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone(), r[2].clone()))
    .collect();
    let some = |s: &str| Some(s.to_string());
    let row = |id: &str, start: Option<String>, end: Option<String>| (id.to_string(), start, end);
    // The year 0000, which the API takes, is no time to PostgreSQL: that
    // record gets its date when it is next written.
    let year_zero = match backend {
        Backend::Sqlite => some("0000-01-01T00:00:00.000Z"),
        Backend::Postgres(_) => None,
    };
    assert_eq!(
        rows,
        [
            row(
                "apt_1",
                some("2026-12-06T04:30:00.500Z"),
                some("2026-12-06T04:30:00.500Z")
            ),
            row(
                "apt_2",
                some("2026-12-07T10:00:00.000Z"),
                some("2026-12-07T10:00:00.000Z")
            ),
            row("apt_3", year_zero.clone(), year_zero),
            row(
                "enc_1",
                some("2026-11-30T10:00:00.000Z"),
                some("2026-11-30T10:00:00.000Z")
            ),
            row("enc_2", some("2026-12-01T10:00:00.000Z"), None),
            row("pat_1", None, None),
        ]
    );
}

async fn a_version_is_read_from_the_event_log(backend: Backend) {
    if !validator("a_version_is_read_from_the_event_log") {
        return;
    }
    let server = backend.spawn().await;
    let api = server.api();
    let p = api
        .create("patients", json!({"firstName": "Ada", "lastName": "Byron"}))
        .await;
    let r = api
        .patch(
            &format!("/v1/patients/{p}"),
            json!({"lastName": "Lovelace"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let base = format!("/fhir/Patient/{}", fhir_id(&p));
    let v1 = api.get(&format!("{base}/_history/1")).await;
    assert_fhir(&v1, 200);
    assert_eq!(v1.body["name"][0]["family"], "Byron");
    assert_eq!(v1.body["meta"]["versionId"], "1");
    assert_eq!(v1.header("etag"), Some("W/\"1\""));
    let v2 = api.get(&format!("{base}/_history/2")).await;
    assert_eq!(v2.body["name"][0]["family"], "Lovelace");
    assert_eq!(v2.body, read(&api, "patients", &p).await);
    for missing in ["3", "0", "x", "-1"] {
        let r = api.get(&format!("{base}/_history/{missing}")).await;
        assert_fhir(&r, 404);
        assert_eq!(r.body["issue"][0]["code"], "not-found");
    }
    assert_eq!(validate(&[v1.body, v2.body]), vec!["Patient", "Patient"]);
    // The deletion is a version of its own: gone.
    assert_eq!(api.delete(&format!("/v1/patients/{p}")).await.status, 204);
    let gone = api.get(&format!("{base}/_history/3")).await;
    assert_fhir(&gone, 410);
    assert_eq!(api.get(&base).await.status, 404);
}

async fn metadata_is_a_valid_capability_statement(backend: Backend) {
    if !validator("metadata_is_a_valid_capability_statement") {
        return;
    }
    let server = backend.spawn().await;
    // No key needed: clients read it before they authenticate.
    let r = reqwest::get(server.api().url("/fhir/metadata"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/fhir+json")
    );
    let cs: Value = r.json().await.unwrap();
    assert_eq!(cs["fhirVersion"], "4.3.0");
    assert_eq!(cs["kind"], "instance");
    assert_eq!(cs["implementation"]["url"], server.api().url("/fhir"));
    let types: Vec<&str> = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = COLLECTIONS.iter().map(|c| fhir_type(c.0)).collect();
    expected.push("SubscriptionTopic");
    expected.push("Subscription");
    assert_eq!(types, expected);
    let appointment = &cs["rest"][0]["resource"][2];
    let params: Vec<&str> = appointment["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["_id", "_lastUpdated", "patient", "status", "date"]);
    assert_eq!(validate(&[cs]), vec!["CapabilityStatement"]);
}

async fn every_fhir_error_is_an_operation_outcome(backend: Backend) {
    if !validator("every_fhir_error_is_an_operation_outcome") {
        return;
    }
    let server = backend.spawn().await;
    let api = server.api();
    let p = api.patient().await;
    let mut outcomes = Vec::new();
    // No key, a wrong key.
    let anonymous = api.with_key("");
    let r = anonymous
        .get(&format!("/fhir/Patient/{}", fhir_id(&p)))
        .await;
    assert_fhir(&r, 401);
    assert_eq!(r.body["issue"][0]["code"], "login");
    outcomes.push(r.body);
    // A key without the patients' scope.
    let narrow = api
        .post(
            "/v1/api-keys",
            json!({"name": "appointments only", "scopes": ["appointments:read"]}),
        )
        .await;
    assert_eq!(narrow.status, 201, "{}", narrow.body);
    let narrow = api.with_key(narrow.body["key"].as_str().unwrap());
    let r = narrow.get(&format!("/fhir/Patient/{}", fhir_id(&p))).await;
    assert_fhir(&r, 403);
    assert_eq!(r.body["issue"][0]["code"], "forbidden");
    assert!(
        r.body["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("patients:read")
    );
    outcomes.push(r.body);
    assert_eq!(narrow.get("/fhir/Appointment").await.status, 200);
    // Not found: an id of no record, of another type, an unknown type.
    for path in [
        "/fhir/Patient/pat-00000000000000000000000000000000".to_string(),
        format!("/fhir/Appointment/{}", fhir_id(&p)),
        "/fhir/Patient/not..an..id".to_string(),
        "/fhir/Medication/x".to_string(),
    ] {
        let r = api.get(&path).await;
        assert_fhir(&r, 404);
        assert_eq!(r.body["issue"][0]["code"], "not-found", "{path}");
        outcomes.push(r.body);
    }
    // Not supported (yet): a method the route has not.
    let r = api
        .send(api.request(
            reqwest::Method::DELETE,
            &format!("/fhir/Patient/{}", fhir_id(&p)),
        ))
        .await;
    assert_fhir(&r, 405);
    assert_eq!(r.body["issue"][0]["code"], "not-supported");
    outcomes.push(r.body);
    // Only JSON.
    let r = api.get("/fhir/Patient?_format=xml").await;
    assert_fhir(&r, 406);
    outcomes.push(r.body);
    let n = outcomes.len();
    assert_eq!(validate(&outcomes), vec!["OperationOutcome".to_string(); n]);
    // The /v1 API's errors keep their own shape.
    let r = api
        .get("/v1/patients/pat_00000000000000000000000000000000")
        .await;
    assert_eq!(r.body["error"]["type"], "not_found");
}

async fn put(api: &Api, path: &str, body: &Value, if_match: Option<&str>) -> Reply {
    let mut req = api
        .request(reqwest::Method::PUT, path)
        .header("content-type", "application/fhir+json")
        .body(body.to_string());
    if let Some(v) = if_match {
        req = req.header("if-match", v);
    }
    api.send(req).await
}

async fn post(api: &Api, path: &str, body: &Value) -> Reply {
    api.send(
        api.request(reqwest::Method::POST, path)
            .header("content-type", "application/fhir+json")
            .body(body.to_string()),
    )
    .await
}

async fn fhir_clients_create_and_update_patients_appointments_and_observations(backend: Backend) {
    if !validator("fhir_clients_create_and_update_patients_appointments_and_observations") {
        return;
    }
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let before = crate::helpers::last_sequence(&api).await;
    let patient = json!({
        "resourceType": "Patient",
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "value": "MRN-9"}],
        "name": [{"use": "official", "family": "Hopper", "given": ["Grace", "Brewster"]}],
        "telecom": [{"system": "phone", "value": "+15551230000", "use": "mobile"}, {"system": "email", "value": "grace@example.com"}],
        "gender": "female",
        "birthDate": "1906-12-09",
        "address": [{"line": ["1 Navy Way", "Suite 2"], "city": "Arlington", "country": "US"}],
    });
    let r = post(&api, "/fhir/Patient", &patient).await;
    assert_fhir(&r, 201);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("pat-"), "{id}");
    assert_eq!(r.header("etag"), Some("W/\"1\""));
    assert!(
        r.header("location")
            .unwrap()
            .ends_with(&format!("/fhir/Patient/{id}/_history/1"))
    );
    let record = api
        .get(&format!("/v1/patients/{}", id.replacen('-', "_", 1)))
        .await
        .body;
    assert_eq!(record["firstName"], "Grace Brewster");
    assert_eq!(record["lastName"], "Hopper");
    assert_eq!(record["mrn"], "MRN-9");
    assert_eq!(record["sex"], "female");
    assert_eq!(record["phone"], "+15551230000");
    assert_eq!(record["email"], "grace@example.com");
    assert_eq!(
        record["address"],
        json!({"line": "1 Navy Way, Suite 2", "city": "Arlington", "country": "US"})
    );
    // The same write path: an event, with the key as its writer.
    let events = crate::helpers::all_events(&api, before).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "patient.created");

    // An update replaces: what the resource leaves out goes.
    let mut changed = r.body.clone();
    changed["name"][0]["family"] = json!("Murray Hopper");
    changed["telecom"] = json!([{"system": "email", "value": "grace@example.com"}]);
    let r2 = put(
        &api,
        &format!("/fhir/Patient/{id}"),
        &changed,
        Some("W/\"1\""),
    )
    .await;
    assert_fhir(&r2, 200);
    assert_eq!(r2.body["meta"]["versionId"], "2");
    assert_eq!(r2.header("etag"), Some("W/\"2\""));
    let record = api
        .get(&format!("/v1/patients/{}", id.replacen('-', "_", 1)))
        .await
        .body;
    assert_eq!(record["lastName"], "Murray Hopper");
    assert!(record.get("phone").is_none(), "{record}");
    // A stale version is refused.
    let stale = put(
        &api,
        &format!("/fhir/Patient/{id}"),
        &changed,
        Some("W/\"1\""),
    )
    .await;
    assert_fhir(&stale, 412);
    assert_eq!(stale.body["issue"][0]["code"], "conflict");
    // What was read is written back as it was.
    let same = put(&api, &format!("/fhir/Patient/{id}"), &r2.body, None).await;
    assert_fhir(&same, 200);
    let mut a = same.body.clone();
    let mut b = r2.body.clone();
    for x in [&mut a, &mut b] {
        x.as_object_mut().unwrap().remove("meta");
    }
    assert_eq!(a, b);

    let appointment = json!({
        "resourceType": "Appointment",
        "status": "booked",
        "start": "2026-12-03T10:00:00Z",
        "end": "2026-12-03T10:30:00Z",
        "reasonCode": [{"text": "Follow-up"}],
        "participant": [
            {"actor": {"reference": format!("Patient/{id}")}, "status": "accepted"},
            {"actor": {"reference": format!("Practitioner/{}", fhir_id(&w.practitioner))}, "status": "accepted"},
        ],
    });
    let ra = post(&api, "/fhir/Appointment", &appointment).await;
    assert_fhir(&ra, 201);
    let appt = api
        .get(&format!(
            "/v1/appointments/{}",
            ra.body["id"].as_str().unwrap().replacen('-', "_", 1)
        ))
        .await
        .body;
    assert_eq!(appt["patientId"], id.replacen('-', "_", 1));
    assert_eq!(appt["practitionerId"], w.practitioner);
    assert_eq!(appt["reason"], "Follow-up");
    let mut cancelled = ra.body.clone();
    cancelled["status"] = json!("cancelled");
    let rc = put(
        &api,
        &format!("/fhir/Appointment/{}", ra.body["id"].as_str().unwrap()),
        &cancelled,
        Some("W/\"1\""),
    )
    .await;
    assert_fhir(&rc, 200);
    // The clinical topic of the change, as for a /v1 write.
    let events = crate::helpers::all_events(&api, before).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "appointment.updated");
    assert!(
        last["topics"]
            .as_array()
            .unwrap()
            .contains(&json!("appointment.cancelled")),
        "{last}"
    );

    let observation = json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": format!("Patient/{id}")},
        "encounter": {"reference": format!("Encounter/{}", fhir_id(&w.encounter))},
        "effectiveDateTime": "2026-12-03T10:05:00Z",
        "valueQuantity": {"value": 72, "unit": "beats/minute"},
        "interpretation": [{"coding": [{"code": "N"}]}],
        "referenceRange": [{"low": {"value": 60}, "high": {"value": 100}}],
    });
    let ro = post(&api, "/fhir/Observation", &observation).await;
    assert_fhir(&ro, 201);
    let obs = api
        .get(&format!(
            "/v1/observations/{}",
            ro.body["id"].as_str().unwrap().replacen('-', "_", 1)
        ))
        .await
        .body;
    assert_eq!(obs["code"], "8867-4");
    assert_eq!(obs["display"], "Heart rate");
    assert_eq!(obs["value"], 72);
    assert_eq!(obs["unit"], "beats/minute");
    assert_eq!(obs["flag"], "normal");
    assert_eq!(obs["encounterId"], w.encounter);
    assert_eq!(obs["referenceRange"], json!({"low": 60, "high": 100}));
    assert_eq!(
        validate(&[r.body, r2.body, ra.body, rc.body, ro.body]),
        vec![
            "Patient",
            "Patient",
            "Appointment",
            "Appointment",
            "Observation"
        ]
    );
}

async fn a_fhir_write_the_server_cannot_keep_is_refused_and_changes_nothing(backend: Backend) {
    if !validator("a_fhir_write_the_server_cannot_keep_is_refused_and_changes_nothing") {
        return;
    }
    let server = backend.spawn().await;
    let api = server.api();
    let p = api.patient().await;
    let before = crate::helpers::last_sequence(&api).await;
    let patient = |extra: Value| {
        let mut b =
            json!({"resourceType": "Patient", "name": [{"family": "Doe", "given": ["Jo"]}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let mut outcomes = Vec::new();
    for (path, body, status, expression) in [
        (
            "/fhir/Patient",
            patient(json!({"photo": []})),
            422,
            "Patient.photo",
        ),
        (
            "/fhir/Patient",
            patient(json!({"name": [{"family": "Doe"}]})),
            422,
            "Patient.name.given",
        ),
        (
            "/fhir/Patient",
            patient(json!({"gender": "robot"})),
            422,
            "Patient.gender",
        ),
        (
            "/fhir/Patient",
            patient(
                json!({"name": [{"family": "A", "given": ["B"]}, {"family": "C", "given": ["D"]}]}),
            ),
            422,
            "Patient.name",
        ),
        (
            "/fhir/Patient",
            patient(json!({"telecom": [{"system": "fax", "value": "1"}]})),
            422,
            "Patient.telecom.system",
        ),
        (
            "/fhir/Patient",
            patient(json!({"extension": [{"url": "http://example.com/x", "valueString": "y"}]})),
            422,
            "Patient.extension.url",
        ),
        (
            "/fhir/Patient",
            patient(json!({"resourceType": "Practitioner"})),
            422,
            "resourceType",
        ),
        (
            "/fhir/Appointment",
            json!({"resourceType": "Appointment", "status": "waitlist", "start": "2026-12-03T10:00:00Z",
            "participant": [{"actor": {"reference": format!("Patient/{}", fhir_id(&p))}, "status": "accepted"}]}),
            422,
            "Appointment.status",
        ),
        (
            "/fhir/Appointment",
            json!({"resourceType": "Appointment", "status": "booked", "start": "2026-12-03T10:00:00Z",
            "participant": [{"actor": {"reference": "Patient/pat-00000000000000000000000000000000"}, "status": "accepted"}]}),
            422,
            "Appointment.participant.actor",
        ),
        (
            "/fhir/Observation",
            json!({"resourceType": "Observation", "status": "preliminary", "code": {"coding": [{"code": "x"}]},
            "subject": {"reference": format!("Patient/{}", fhir_id(&p))}, "valueString": "y"}),
            422,
            "Observation.status",
        ),
        (
            "/fhir/Observation",
            json!({"resourceType": "Observation", "status": "final", "code": {"coding": [{"code": "x"}]},
            "subject": {"reference": "Practitioner/prac-1"}, "valueString": "y"}),
            422,
            "Observation.subject.reference",
        ),
    ] {
        let r = post(&api, path, &body).await;
        assert_fhir(&r, status);
        assert_eq!(
            r.body["issue"][0]["expression"],
            json!([expression]),
            "{body}: {}",
            r.body
        );
        outcomes.push(r.body);
    }
    // An update must name the resource it replaces.
    let read = read(&api, "patients", &p).await;
    let mut other = read.clone();
    other["id"] = json!("pat-00000000000000000000000000000000");
    let r = put(
        &api,
        &format!("/fhir/Patient/{}", fhir_id(&p)),
        &other,
        None,
    )
    .await;
    assert_fhir(&r, 422);
    assert_eq!(r.body["issue"][0]["expression"], json!(["id"]));
    outcomes.push(r.body);
    // Types not written through FHIR, and a key without the write scope.
    let r = post(
        &api,
        "/fhir/Practitioner",
        &json!({"resourceType": "Practitioner"}),
    )
    .await;
    assert_fhir(&r, 405);
    outcomes.push(r.body);
    let reader = api
        .post(
            "/v1/api-keys",
            json!({"name": "reader", "scopes": ["patients:read"]}),
        )
        .await;
    let reader = api.with_key(reader.body["key"].as_str().unwrap());
    let r = post(&reader, "/fhir/Patient", &patient(json!({}))).await;
    assert_fhir(&r, 403);
    outcomes.push(r.body);
    let n = outcomes.len();
    assert_eq!(validate(&outcomes), vec!["OperationOutcome".to_string(); n]);
    // Nothing was written.
    assert_eq!(crate::helpers::last_sequence(&api).await, before);
}

async fn a_fhir_client_library_reads_searches_pages_writes_and_subscribes(backend: Backend) {
    if !python_has(&["fhirclient"]) {
        return skipped(
            "a_fhir_client_library_reads_searches_pages_writes_and_subscribes",
            "python3 with PyPI fhirclient is not installed",
        );
    }
    let server = backend.spawn().await;
    let api = server.api();
    // SMART's Python client, as an EHR integration would use it: it reads
    // the CapabilityStatement first, creates through POST, follows the
    // search's next links, and updates through PUT.
    let script = r#"
import sys, json
from fhirclient import client
import fhirclient.models.patient as P
import fhirclient.models.observation as O
smart = client.FHIRClient(settings={"app_id": "eventflow-test", "api_base": sys.argv[1]})
smart.server.session.headers.update({"Authorization": "Bearer " + sys.argv[2]})
smart.prepare()
created = P.Patient({"name": [{"family": "Hopper", "given": ["Grace"]}], "gender": "female",
                     "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "MRN-42"}]}).create(smart.server)
pid = created["id"]
for v in (60, 70, 80):
    O.Observation({"status": "final", "code": {"coding": [{"code": "8867-4"}]},
                   "subject": {"reference": "Patient/" + pid}, "valueQuantity": {"value": v}}).create(smart.server)
found = P.Patient.where(struct={"identifier": "MRN-42"}).perform(smart.server)
search = O.Observation.where(struct={"patient": "Patient/" + pid, "_count": "2"})
values = [o.valueQuantity.value for o in search.perform_resources_iter(smart.server)]
p = P.Patient.read(pid, smart.server)
p.name[0].family = "Murray Hopper"
p.update(smart.server)
print(json.dumps({
    "fhirVersion": smart.server.capabilityStatement.fhirVersion,
    "id": pid,
    "found": [e.resource.id for e in found.entry],
    "values": values,
    "family": P.Patient.read(pid, smart.server).name[0].family,
}))
"#;
    let base = api.url("/fhir/");
    let key = api.key.clone().unwrap();
    let out = tokio::task::spawn_blocking(move || python(script, &[&base, &key]))
        .await
        .unwrap();
    let got: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(got["fhirVersion"], "4.3.0");
    let id = got["id"].as_str().unwrap();
    assert_eq!(got["found"], json!([id]));
    assert_eq!(got["values"], json!([60, 70, 80]));
    assert_eq!(got["family"], "Murray Hopper");
    let record = api
        .get(&format!("/v1/patients/{}", id.replacen('-', "_", 1)))
        .await;
    assert_eq!(record.body["lastName"], "Murray Hopper");
    assert_eq!(record.body["version"], 2);

    // Subscribing through the library's Subscription model: it posts the
    // resource; once the handshake has made it active, the library reads
    // it back, finds it by a search, then writes a patient the topic is
    // about.
    let rx = Receiver::start().await;
    let topic = topic_url(&api, "patient.created").await;
    let prelude = r#"
import sys, json
from fhirclient import client
import fhirclient.models.patient as P
import fhirclient.models.subscription as S
smart = client.FHIRClient(settings={"app_id": "eventflow-test", "api_base": sys.argv[1]})
smart.server.session.headers.update({"Authorization": "Bearer " + sys.argv[2]})
"#;
    let subscribe = format!(
        r#"{prelude}
ig = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
made = S.Subscription({{"status": "requested", "reason": "New patients, for the front desk",
    "criteria": sys.argv[3],
    "channel": {{"type": "rest-hook", "endpoint": sys.argv[4], "payload": "application/fhir+json",
                "extension": [{{"url": ig + "backport-max-count", "valuePositiveInt": 1}}]}}}}).create(smart.server)
print(made["id"])
"#
    );
    let read_back = format!(
        r#"{prelude}
sub = S.Subscription.read(sys.argv[3], smart.server)
found = S.Subscription.where(struct={{"status": "active"}}).perform(smart.server)
pid = P.Patient({{"name": [{{"family": "Lovelace", "given": ["Ada"]}}]}}).create(smart.server)["id"]
print(json.dumps({{"status": sub.status, "criteria": sub.criteria,
                  "found": [e.resource.id for e in found.entry], "patient": pid}}))
"#
    );
    let base = api.url("/fhir/");
    let key = api.key.clone().unwrap();
    let url = rx.url("/front-desk");
    let (b, k, t) = (base.clone(), key.clone(), topic.clone());
    let sid = tokio::task::spawn_blocking(move || python(&subscribe, &[&b, &k, &t, &url]))
        .await
        .unwrap()
        .trim()
        .to_string();
    // The handshake makes it active.
    until_status(&api, &sid, "active").await;
    let s = sid.clone();
    let out = tokio::task::spawn_blocking(move || python(&read_back, &[&base, &key, &s]))
        .await
        .unwrap();
    let got: Value = serde_json::from_str(out.trim()).unwrap();
    let sid = sid.as_str();
    assert_eq!(got["status"], "active");
    assert_eq!(got["criteria"], topic);
    assert_eq!(got["found"], json!([sid]));
    // The handshake, then the new patient's notification.
    let received = rx.wait_for(2, std::time::Duration::from_secs(20)).await;
    let kinds: Vec<Value> = received
        .iter()
        .map(|r| r.json()["entry"][0]["resource"]["type"].clone())
        .collect();
    assert_eq!(kinds, [json!("handshake"), json!("event-notification")]);
    let event = &received[1].json()["entry"][0]["resource"]["notificationEvent"][0];
    assert!(
        event["focus"]["reference"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/Patient/{}", got["patient"].as_str().unwrap())),
        "{event}"
    );
}

async fn subscription_topics_name_every_event_type_and_clinical_topic(backend: Backend) {
    if !validator("subscription_topics_name_every_event_type_and_clinical_topic") {
        return;
    }
    let server = backend.spawn().await;
    let api = server.api();
    let all = api.get("/fhir/SubscriptionTopic").await;
    assert_fhir(&all, 200);
    // Ten record types by three actions, and the eighteen clinical topics.
    assert_eq!(all.body["total"], 48);
    let topics: Vec<Value> = all.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .collect();
    let ids: Vec<&str> = topics.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"patient.created"));
    assert!(ids.contains(&"lab.deleted"));
    assert!(ids.contains(&"observation.critical"));
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 48);
    // Every topic's canonical URL is where it is read.
    for t in &topics {
        let url = t["url"].as_str().unwrap();
        assert!(
            url.ends_with(&format!(
                "/fhir/SubscriptionTopic/{}",
                t["id"].as_str().unwrap()
            )),
            "{url}"
        );
    }
    let r = api
        .get("/fhir/SubscriptionTopic/appointment.cancelled")
        .await;
    assert_fhir(&r, 200);
    let t = r.body;
    assert_eq!(t["status"], "active");
    assert_eq!(
        t["resourceTrigger"][0]["resource"],
        "http://hl7.org/fhir/StructureDefinition/Appointment"
    );
    assert_eq!(
        t["resourceTrigger"][0]["supportedInteraction"],
        json!(["update", "delete"])
    );
    let filters: Vec<&str> = t["canFilterBy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filterParameter"].as_str().unwrap())
        .collect();
    assert_eq!(filters, ["patient", "status"]);
    let p = api
        .get("/fhir/SubscriptionTopic/patient.updated")
        .await
        .body;
    assert_eq!(p["canFilterBy"][0]["filterParameter"], "_id");
    // Found by its canonical URL.
    let by_url = api
        .get(&format!(
            "/fhir/SubscriptionTopic?url={}",
            t["url"].as_str().unwrap()
        ))
        .await;
    assert_eq!(by_url.body["total"], 1);
    assert_eq!(
        by_url.body["entry"][0]["resource"]["id"],
        "appointment.cancelled"
    );
    let none = api
        .get("/fhir/SubscriptionTopic?url=http://example.com/x")
        .await;
    assert_eq!(none.body["total"], 0);
    // Any key reads them; no key does not.
    let narrow = api
        .post(
            "/v1/api-keys",
            json!({"name": "n", "scopes": ["appointments:read"]}),
        )
        .await;
    let narrow = api.with_key(narrow.body["key"].as_str().unwrap());
    assert_eq!(
        narrow
            .get("/fhir/SubscriptionTopic/appointment.cancelled")
            .await
            .status,
        200
    );
    let anonymous = api.with_key("");
    assert_fhir(&anonymous.get("/fhir/SubscriptionTopic").await, 401);
    let missing = api
        .get("/fhir/SubscriptionTopic/appointment.exploded")
        .await;
    assert_fhir(&missing, 404);
    let mut checked = topics.clone();
    checked.push(all.body.clone());
    checked.push(none.body.clone());
    let n = checked.len();
    let mut expected = vec!["SubscriptionTopic".to_string(); n - 2];
    expected.extend(["Bundle".to_string(), "Bundle".to_string()]);
    assert_eq!(validate(&checked), expected);
}

async fn until_status(api: &Api, id: &str, status: &str) -> Value {
    wait_for(
        std::time::Duration::from_secs(20),
        &format!("subscription {status}"),
        || async {
            let r = api.get(&format!("/fhir/Subscription/{id}")).await;
            (r.body["status"] == status).then_some(r.body)
        },
    )
    .await
}

async fn a_subscription_shakes_hands_then_notifies_each_matching_event(backend: Backend) {
    if !validator("a_subscription_shakes_hands_then_notifies_each_matching_event") {
        return;
    }
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let other = api.patient().await;
    let topic = topic_url(&api, "appointment.cancelled").await;
    let rx = Receiver::start().await;
    let full = post(
        &api,
        "/fhir/Subscription",
        &subscription(
            &topic,
            &rx.url("/full"),
            "full-resource",
            Some(&format!(
                "Appointment?patient=Patient/{}",
                fhir_id(&w.patient)
            )),
        ),
    )
    .await;
    assert_fhir(&full, 201);
    assert_eq!(full.body["status"], "requested");
    let id = full.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("ep-"), "{id}");
    assert!(
        full.header("location")
            .unwrap()
            .ends_with(&format!("/fhir/Subscription/{id}"))
    );
    // The handshake, at once; a 2xx makes the subscription active.
    let got = rx.wait_for(1, std::time::Duration::from_secs(20)).await;
    let handshake = &got[0];
    assert_eq!(handshake.path, "/full");
    assert_eq!(
        handshake.header("content-type"),
        Some("application/fhir+json")
    );
    assert_eq!(
        handshake.header("authorization"),
        Some("Bearer receiver-token")
    );
    assert!(handshake.header("webhook-signature").is_some());
    let hs = handshake.json();
    assert_eq!(hs["type"], "history");
    let status = &hs["entry"][0]["resource"];
    assert_eq!(status["resourceType"], "SubscriptionStatus");
    assert_eq!(status["type"], "handshake");
    assert_eq!(status["eventsSinceSubscriptionStart"], "0");
    assert_eq!(status["topic"], topic);
    assert!(
        status["subscription"]["reference"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/fhir/Subscription/{id}"))
    );
    let active = until_status(&api, &id, "active").await;

    let thin = post(
        &api,
        "/fhir/Subscription",
        &subscription(&topic, &rx.url("/thin"), "id-only", None),
    )
    .await;
    assert_fhir(&thin, 201);
    let thin_id = thin.body["id"].as_str().unwrap().to_string();
    until_status(&api, &thin_id, "active").await;

    // Not cancelled, another patient's: no notification for `full`.
    api.patch(
        &format!("/v1/appointments/{}", w.appointment),
        json!({"reason": "moved"}),
    )
    .await;
    let theirs = api
        .create(
            "appointments",
            json!({"patientId": other, "start": "2026-12-05T09:00:00Z"}),
        )
        .await;
    api.patch(
        &format!("/v1/appointments/{theirs}"),
        json!({"status": "cancelled"}),
    )
    .await;
    api.patch(
        &format!("/v1/appointments/{}", w.appointment),
        json!({"status": "cancelled"}),
    )
    .await;
    // `thin` gets both cancellations; `full` only its patient's.
    let got = rx.wait_for(5, std::time::Duration::from_secs(20)).await;
    let to = |p: &str| {
        got.iter()
            .filter(|r| r.path == p)
            .map(|r| r.json())
            .collect::<Vec<_>>()
    };
    let fulls = to("/full");
    let thins = to("/thin");
    assert_eq!(fulls.len(), 2, "{fulls:?}");
    assert_eq!(thins.len(), 3, "{thins:?}");
    let n = &fulls[1];
    assert_eq!(n["type"], "history");
    let st = &n["entry"][0]["resource"];
    assert_eq!(st["type"], "event-notification");
    assert_eq!(st["status"], "active");
    assert_eq!(st["eventsSinceSubscriptionStart"], "1");
    assert_eq!(st["notificationEvent"][0]["eventNumber"], "1");
    let focus = st["notificationEvent"][0]["focus"]["reference"]
        .as_str()
        .unwrap();
    assert!(
        focus.ends_with(&format!("/fhir/Appointment/{}", fhir_id(&w.appointment))),
        "{focus}"
    );
    assert_eq!(n["entry"][1]["fullUrl"], focus);
    assert_eq!(n["entry"][1]["request"]["method"], "PUT");
    assert_eq!(n["entry"][1]["resource"]["resourceType"], "Appointment");
    assert_eq!(n["entry"][1]["resource"]["status"], "cancelled");
    // id-only: the reference, not the resource; numbered on its own.
    let last = &thins[2];
    assert_eq!(
        last["entry"][0]["resource"]["eventsSinceSubscriptionStart"],
        "2"
    );
    assert!(last["entry"][1].get("resource").is_none());
    assert!(last["entry"][1]["fullUrl"].is_string());

    // An endpoint underneath: the same deliveries, disclosures, list.
    let ep = id.replacen('-', "_", 1);
    let endpoint = api.get(&format!("/v1/endpoints/{ep}")).await.body;
    assert_eq!(endpoint["kind"], "fhir-subscription");
    crate::helpers::wait_for_disclosure(&api, &w.patient, &ep).await;
    let r = api
        .patch(
            &format!("/v1/endpoints/{ep}"),
            json!({"url": rx.url("/elsewhere")}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["error"]["field"], "url");
    // A made-up event would break the count: no test send.
    assert_eq!(
        api.post(&format!("/v1/endpoints/{ep}/test"), json!({}))
            .await
            .status,
        409
    );
    // A key that may read but not change subscriptions sees no header value.
    let reader = api
        .post(
            "/v1/api-keys",
            json!({"name": "r", "scopes": ["endpoints:read"]}),
        )
        .await;
    let reader = api.with_key(reader.body["key"].as_str().unwrap());
    let seen = reader.get(&format!("/fhir/Subscription/{id}")).await.body;
    assert_eq!(
        seen["channel"]["header"],
        json!(["Authorization: (hidden: needs endpoints:write)"])
    );
    assert_eq!(
        active["channel"]["header"],
        json!(["Authorization: Bearer receiver-token"])
    );
    let listed = api.get("/fhir/Subscription?status=active").await;
    assert_fhir(&listed, 200);
    assert_eq!(listed.body["total"], 2);
    let by_url = api
        .get(&format!("/fhir/Subscription?url={}", rx.url("/thin")))
        .await;
    assert_eq!(by_url.body["total"], 1);
    assert_eq!(by_url.body["entry"][0]["resource"]["id"], thin_id.as_str());

    assert_eq!(
        validate(&[
            hs.clone(),
            n.clone(),
            last.clone(),
            active.clone(),
            listed.body.clone()
        ]),
        vec!["Bundle", "Bundle", "Bundle", "Subscription", "Bundle"]
    );

    // $status: the count so far; $events: the events again, by number.
    let st = api.get(&format!("/fhir/Subscription/{id}/$status")).await;
    assert_fhir(&st, 200);
    assert_eq!(st.body["type"], "searchset");
    let s0 = &st.body["entry"][0]["resource"];
    assert_eq!(s0["type"], "query-status");
    assert_eq!(s0["status"], "active");
    assert_eq!(s0["eventsSinceSubscriptionStart"], "1");
    let ev = api
        .get(&format!(
            "/fhir/Subscription/{thin_id}/$events?content=full-resource"
        ))
        .await;
    assert_fhir(&ev, 200);
    let e0 = &ev.body["entry"][0]["resource"];
    assert_eq!(e0["type"], "query-event");
    assert_eq!(e0["eventsSinceSubscriptionStart"], "2");
    let numbers: Vec<&str> = e0["notificationEvent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["eventNumber"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, ["1", "2"]);
    assert_eq!(ev.body["entry"][2]["resource"]["status"], "cancelled");
    let second = api
        .get(&format!(
            "/fhir/Subscription/{thin_id}/$events?eventsSinceNumber=2"
        ))
        .await;
    let s2 = &second.body["entry"][0]["resource"];
    assert_eq!(s2["notificationEvent"].as_array().unwrap().len(), 1);
    assert_eq!(s2["notificationEvent"][0]["eventNumber"], "2");
    assert!(
        second.body["entry"][1].get("resource").is_none(),
        "id-only by default"
    );
    let bad = api
        .get(&format!(
            "/fhir/Subscription/{thin_id}/$events?eventsSinceNumber=3&eventsUntilNumber=2"
        ))
        .await;
    assert_fhir(&bad, 422);
    // The events are records: reading them needs the records' scope.
    assert_fhir(
        &reader
            .get(&format!("/fhir/Subscription/{thin_id}/$events"))
            .await,
        403,
    );
    assert_eq!(
        reader
            .get(&format!("/fhir/Subscription/{id}/$status"))
            .await
            .status,
        200
    );
    assert_eq!(
        validate(&[st.body.clone(), ev.body.clone(), second.body.clone()]),
        vec!["Bundle", "Bundle", "Bundle"]
    );

    // Deleted: gone from FHIR and from /v1.
    let r = api
        .send(api.request(reqwest::Method::DELETE, &format!("/fhir/Subscription/{id}")))
        .await;
    assert_eq!(r.status, 204);
    assert_fhir(&api.get(&format!("/fhir/Subscription/{id}")).await, 404);
    assert_eq!(api.get(&format!("/v1/endpoints/{ep}")).await.status, 404);
}

async fn a_quiet_subscription_is_sent_heartbeats_that_do_not_count(backend: Backend) {
    let start: jiff::Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
    let (server, clock) = backend.spawn_with_clock(start).await;
    let api = server.api();
    let w = world(&api).await;
    let topic = topic_url(&api, "appointment.cancelled").await;
    let rx = Receiver::start().await;
    let body = with_heartbeat(subscription(&topic, &rx.url("/beat"), "id-only", None), 60);
    let period = heartbeat_period(60);
    let made = post(&api, "/fhir/Subscription", &body).await;
    assert_fhir(&made, 201);
    assert!(
        made.body["channel"]["extension"]
            .as_array()
            .unwrap()
            .contains(&period),
        "{}",
        made.body
    );
    let id = made.body["id"].as_str().unwrap().to_string();
    rx.wait_for(1, std::time::Duration::from_secs(20)).await;
    until_status(&api, &id, "active").await;
    let at = |s: i64| time_after(start, s);

    // A period without a notification: a heartbeat, counting no event.
    clock.advance(jiff::SignedDuration::from_secs(61));
    let got = rx.wait_for(2, std::time::Duration::from_secs(20)).await;
    let beat = &got[1];
    assert_eq!(
        beat.header("x-eventflow-event-type"),
        Some("fhir.heartbeat")
    );
    assert_eq!(beat.header("content-type"), Some("application/fhir+json"));
    assert!(beat.header("webhook-signature").is_some());
    assert_eq!(
        beat.header("authorization"),
        Some("Bearer receiver-token"),
        "a heartbeat carries the subscription's headers"
    );
    let first = beat.json();
    assert_eq!(first["type"], "history");
    assert_eq!(first["timestamp"], at(61));
    let status = &first["entry"][0]["resource"];
    assert_eq!(status["type"], "heartbeat");
    assert_eq!(status["status"], "active");
    assert_eq!(status["eventsSinceSubscriptionStart"], "0");
    assert!(status.get("notificationEvent").is_none());
    assert_eq!(first["entry"].as_array().unwrap().len(), 1);

    // An event half a period later: its notification is number 1.
    clock.advance(jiff::SignedDuration::from_secs(30));
    api.patch(
        &format!("/v1/appointments/{}", w.appointment),
        json!({"status": "cancelled"}),
    )
    .await;
    let got = rx.wait_for(3, std::time::Duration::from_secs(20)).await;
    let note = got[2].json();
    assert_eq!(
        note["entry"][0]["resource"]["notificationEvent"][0]["eventNumber"],
        "1"
    );
    // A period after the last heartbeat, but not after the notification:
    // no heartbeat is due yet; the next is a period after the notification.
    clock.advance(jiff::SignedDuration::from_secs(31));
    let next: jiff::Timestamp = at(151).parse().unwrap();
    wait_for(
        std::time::Duration::from_secs(20),
        "the next heartbeat a period after the notification",
        || async { clock.slept_until(next).then_some(()) },
    )
    .await;
    // A period after the notification: the next heartbeat. It says one
    // event has been sent (heartbeats do not count).
    clock.advance(jiff::SignedDuration::from_secs(30));
    let got = rx.wait_for(4, std::time::Duration::from_secs(20)).await;
    let second = got[3].json();
    assert_eq!(
        second["timestamp"],
        at(152),
        "a heartbeat went out less than a period after a notification"
    );
    let status = &second["entry"][0]["resource"];
    assert_eq!(status["type"], "heartbeat");
    assert_eq!(status["eventsSinceSubscriptionStart"], "1");
    assert_ne!(
        first["entry"][0]["fullUrl"], second["entry"][0]["fullUrl"],
        "each heartbeat is its own notification"
    );
    assert_eq!(rx.count(), 4);

    // Off: no heartbeats, while another subscription of the same period,
    // made now, gets its own (so the heartbeats were looked for).
    let control = Receiver::start().await;
    let body = with_heartbeat(
        subscription(&topic, &control.url("/control"), "id-only", None),
        60,
    );
    let made_control = post(&api, "/fhir/Subscription", &body).await;
    assert_fhir(&made_control, 201);
    control
        .wait_for(1, std::time::Duration::from_secs(20))
        .await;
    until_status(&api, made_control.body["id"].as_str().unwrap(), "active").await;
    let endpoint = format!("/v1/endpoints/{}", id.replacen('-', "_", 1));
    let off = api.patch(&endpoint, json!({"disabled": true})).await;
    assert_eq!(off.status, 200, "{}", off.body);
    let s = api.get(&format!("/fhir/Subscription/{id}")).await;
    assert_eq!(s.body["status"], "off");
    for n in 2..=3 {
        clock.advance(jiff::SignedDuration::from_secs(61));
        control
            .wait_for(n, std::time::Duration::from_secs(20))
            .await;
    }
    assert_eq!(
        rx.count(),
        4,
        "a subscription that is off was sent a heartbeat"
    );
    // On again: its heartbeat, long due, goes at once, still counting one
    // event.
    let on = api.patch(&endpoint, json!({"disabled": false})).await;
    assert_eq!(on.status, 200, "{}", on.body);
    until_status(&api, &id, "active").await;
    let got = rx.wait_for(5, std::time::Duration::from_secs(20)).await;
    let resumed = got[4].json();
    assert_eq!(resumed["timestamp"], at(274));
    assert_eq!(resumed["entry"][0]["resource"]["type"], "heartbeat");
    assert_eq!(
        resumed["entry"][0]["resource"]["eventsSinceSubscriptionStart"],
        "1"
    );

    if validator("a_quiet_subscription_is_sent_heartbeats_that_do_not_count") {
        assert_eq!(
            validate(&[first, note, second, resumed, made.body.clone()]),
            ["Bundle", "Bundle", "Bundle", "Bundle", "Subscription"]
        );
    }
}

/// `start` plus `secs` seconds, as the server writes an instant.
fn time_after(start: jiff::Timestamp, secs: i64) -> String {
    let t = start
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap();
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

async fn a_failed_handshake_puts_the_subscription_in_error_and_sends_nothing(backend: Backend) {
    if !validator("a_failed_handshake_puts_the_subscription_in_error_and_sends_nothing") {
        return;
    }
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let topic = topic_url(&api, "appointment.cancelled").await;
    let rx = Receiver::start().await;
    rx.answer(Answer::Status(500));
    let r = post(
        &api,
        "/fhir/Subscription",
        &subscription(&topic, &rx.url("/"), "full-resource", None),
    )
    .await;
    assert_fhir(&r, 201);
    let id = r.body["id"].as_str().unwrap().to_string();
    let failed = until_status(&api, &id, "error").await;
    assert!(
        failed["error"].as_str().unwrap().contains("500"),
        "{failed}"
    );
    assert_eq!(validate(&[failed]), vec!["Subscription"]);
    // Tried once, and nothing of the patient's goes to it.
    api.patch(
        &format!("/v1/appointments/{}", w.appointment),
        json!({"status": "cancelled"}),
    )
    .await;
    let ep = id.replacen('-', "_", 1);
    let deliveries = api
        .get(&format!("/v1/endpoints/{ep}/deliveries"))
        .await
        .body;
    assert_eq!(
        deliveries["data"].as_array().map_or(0, Vec::len),
        0,
        "{deliveries}"
    );
    assert_eq!(rx.count(), 1);
    // Enabled again, it shakes hands again before anything is sent.
    rx.answer(Answer::Status(200));
    let r = api
        .patch(&format!("/v1/endpoints/{ep}"), json!({"disabled": false}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = rx.wait_for(2, std::time::Duration::from_secs(20)).await;
    assert_eq!(got[1].json()["entry"][0]["resource"]["type"], "handshake");
    until_status(&api, &id, "active").await;
}

async fn a_subscription_the_server_cannot_keep_is_refused(backend: Backend) {
    if !validator("a_subscription_the_server_cannot_keep_is_refused") {
        return;
    }
    let server = backend.spawn().await;
    let api = server.api();
    let topic = topic_url(&api, "appointment.cancelled").await;
    let url = "http://127.0.0.1:9/hook";
    let base = subscription(&topic, url, "id-only", None);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut s = base.clone();
        f(&mut s);
        s
    };
    let mut outcomes = Vec::new();
    for (body, expression) in [
        (
            with(&|s| s["channel"]["type"] = json!("websocket")),
            "Subscription.channel.type",
        ),
        (
            with(&|s| s["channel"]["payload"] = json!("application/fhir+xml")),
            "Subscription.channel.payload",
        ),
        (
            with(&|s| {
                // Below the shortest period this server sends.
                s["channel"]["extension"] = json!([{"url": format!("{IG}backport-heartbeat-period"), "valueUnsignedInt": 5}])
            }),
            "Subscription.channel.extension",
        ),
        (
            with(&|s| {
                s["channel"]["extension"] =
                    json!([{"url": format!("{IG}backport-max-count"), "valuePositiveInt": 5}])
            }),
            "Subscription.channel.extension",
        ),
        (
            with(&|s| s["criteria"] = json!("http://example.com/fhir/SubscriptionTopic/nope")),
            "Subscription.criteria",
        ),
        (
            with(
                &|s| s["_criteria"] = json!({"extension": [{"url": format!("{IG}backport-filter-criteria"), "valueString": "Appointment?practitioner=Practitioner/x"}]}),
            ),
            "Subscription.criteria.extension",
        ),
        (
            with(
                &|s| s["_criteria"] = json!({"extension": [{"url": format!("{IG}backport-filter-criteria"), "valueString": "Patient?_id=pat-1"}]}),
            ),
            "Subscription.criteria.extension",
        ),
        (with(&|s| s["status"] = json!("off")), "Subscription.status"),
        (
            with(&|s| {
                s.as_object_mut().unwrap().remove("reason");
            }),
            "Subscription.reason",
        ),
        (
            with(&|s| s["end"] = json!("2027-01-01T00:00:00Z")),
            "Subscription.end",
        ),
        (
            with(&|s| s["channel"]["endpoint"] = json!("ftp://example.com")),
            "Subscription.channel.endpoint",
        ),
        (
            with(&|s| {
                s["criteria"] =
                    json!("https://elsewhere.example/fhir/SubscriptionTopic/appointment.cancelled")
            }),
            "Subscription.criteria",
        ),
        (
            with(&|s| s["channel"]["header"] = json!(["Content-Type: text/plain"])),
            "Subscription.channel.header",
        ),
        (
            with(&|s| s["channel"]["header"] = json!(["X-A: 1", "x-a: 2"])),
            "Subscription.channel.header",
        ),
        (
            with(&|s| s["contact"] = json!([{"system": "email", "value": "a@example.com"}])),
            "Subscription.contact",
        ),
    ] {
        let r = post(&api, "/fhir/Subscription", &body).await;
        assert_fhir(&r, 422);
        assert_eq!(
            r.body["issue"][0]["expression"],
            json!([expression]),
            "{}",
            r.body
        );
        outcomes.push(r.body);
    }
    // A key that may not make endpoints, or read what the topic is about.
    let reader = api
        .post(
            "/v1/api-keys",
            json!({"name": "r", "scopes": ["endpoints:read"]}),
        )
        .await;
    let reader = api.with_key(reader.body["key"].as_str().unwrap());
    assert_fhir(&post(&reader, "/fhir/Subscription", &base).await, 403);
    let blind = api
        .post(
            "/v1/api-keys",
            json!({"name": "b", "scopes": ["endpoints:read", "endpoints:write", "patients:read"]}),
        )
        .await;
    let blind = api.with_key(blind.body["key"].as_str().unwrap());
    let r = post(&blind, "/fhir/Subscription", &base).await;
    assert_fhir(&r, 422);
    assert_eq!(
        r.body["issue"][0]["expression"],
        json!(["Subscription.criteria"])
    );
    outcomes.push(r.body);
    let n = outcomes.len();
    assert_eq!(validate(&outcomes), vec!["OperationOutcome".to_string(); n]);
    // Nothing was made.
    assert_eq!(api.get("/fhir/Subscription").await.body["total"], 0);
    assert_eq!(
        api.get("/v1/endpoints").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// The `sh` blocks of docs/fhir.md's walk-through, in order.
fn walk_through() -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/fhir.md"),
    )
    .unwrap();
    let start = doc.find("## A walk-through").unwrap();
    let end = doc[start..].find("## How it is checked").unwrap() + start;
    let mut blocks = String::new();
    let mut inside = false;
    for line in doc[start..end].lines() {
        match (inside, line.starts_with("```")) {
            (false, true) if line.starts_with("```sh") => inside = true,
            (true, true) => inside = false,
            (true, false) => {
                blocks.push_str(line);
                blocks.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

async fn the_walk_through_of_the_fhir_docs_works(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let port = eventflow_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "exec > walk.out 2>&1\nset -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{}",
        walk_through()
    );
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("API", &api.base)
        .env("KEY", api.key.clone().unwrap())
        .env("PORT", port.to_string())
        .kill_on_drop(true);
    let status = tokio::time::timeout(std::time::Duration::from_secs(120), cmd.status())
        .await
        .expect("the walk-through ends")
        .unwrap();
    let out = std::fs::read_to_string(dir.path().join("walk.out")).unwrap_or_default();
    assert!(status.success(), "{out}");
    assert!(out.starts_with("4.3.0\n"), "{out}");
    let lines: Vec<Value> = std::fs::read_to_string(dir.path().join("notifications.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["entry"][0]["resource"]["type"], "handshake");
    assert_eq!(
        lines[1]["entry"][0]["resource"]["type"],
        "event-notification"
    );
    assert_eq!(lines[1]["entry"][1]["resource"]["status"], "cancelled");
    assert!(out.contains("event-notification 1 ['cancelled']"), "{out}");
    let status: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("status.json")).unwrap())
            .unwrap();
    assert_eq!(
        status["entry"][0]["resource"]["eventsSinceSubscriptionStart"],
        "1"
    );
}
