//! Tenants (docs/design.md §3): every record belongs to the key's tenant, and no
//! request can read or change another tenant's data — 404, never 403, never
//! the data.

use eventflow_testkit::{Api, Backend, Reply, backend_tests};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{COLLECTIONS, World, assert_error, full_body, ids, last_sequence, world};

backend_tests!(
    another_tenant_gets_404_for_every_record_on_get_patch_and_delete,
    another_tenants_patch_and_delete_change_nothing,
    another_tenant_cannot_include_through_a_foreign_record,
    lists_show_only_the_tenants_own_records,
    events_of_one_tenant_are_invisible_to_another,
    the_audit_log_shows_only_the_tenants_own_entries,
    a_record_may_not_reference_another_tenants_record,
    a_batch_cannot_touch_another_tenants_records,
    a_long_poll_is_not_answered_with_another_tenants_events,
);

/// Tenant A with one record of each type, and a client for tenant B.
/// Returns A's client, B's client, A's world, and (collection, id, record)
/// for each of A's ten types.
async fn two_tenants(
    server: &eventflow_testkit::TestServer,
) -> (Api, Api, World, Vec<(&'static str, String, Value)>) {
    let a = server.api();
    let b = server.new_tenant("b").await;
    let w = world(&a).await;
    let mut records = Vec::new();
    for (collection, _, _) in COLLECTIONS {
        let r = a
            .post(&format!("/v1/{collection}"), full_body(collection, &w))
            .await;
        assert_eq!(r.status, 201, "{collection}: {}", r.body);
        records.push((collection, r.id(), r.body.clone()));
    }
    (a, b, w, records)
}

fn assert_not_found_without_data(r: &Reply, record: &Value) {
    assert_error(r, 404, "not_found", None);
    let text = r.body.to_string();
    for (k, v) in record.as_object().unwrap() {
        if k == "id" {
            continue; // the id is what B asked for
        }
        if let Some(s) = v.as_str().filter(|s| s.len() > 3) {
            assert!(!text.contains(s), "the 404 shows {k}: {text}");
        }
    }
}

async fn another_tenant_gets_404_for_every_record_on_get_patch_and_delete(backend: Backend) {
    let server = backend.spawn().await;
    let (_a, b, _w, records) = two_tenants(&server).await;
    for (collection, id, record) in &records {
        let path = format!("/v1/{collection}/{id}");
        assert_not_found_without_data(&b.get(&path).await, record);
        assert_not_found_without_data(&b.patch(&path, json!({})).await, record);
        assert_not_found_without_data(&b.patch(&path, json!({"status": null})).await, record);
        assert_not_found_without_data(&b.delete(&path).await, record);
        let r = b
            .send(b.request(Method::DELETE, &path).header("If-Match", "1"))
            .await;
        assert_not_found_without_data(&r, record);
    }
}

async fn another_tenants_patch_and_delete_change_nothing(backend: Backend) {
    let server = backend.spawn().await;
    let (a, b, _w, records) = two_tenants(&server).await;
    let seq = last_sequence(&a).await;
    for (collection, id, _) in &records {
        let path = format!("/v1/{collection}/{id}");
        let patch = match *collection {
            "patients" | "practitioners" => json!({"firstName": "Mallory"}),
            "notes" => json!({"text": "overwritten"}),
            _ => json!({"patientId": null}),
        };
        assert_eq!(b.patch(&path, patch).await.status, 404);
        let r = b
            .send(
                b.request(Method::PATCH, &path)
                    .header("If-Match", "\"1\"")
                    .json(&json!({"firstName": "Mallory"})),
            )
            .await;
        assert_eq!(r.status, 404);
        assert_eq!(b.delete(&path).await.status, 404);
    }
    for (collection, id, record) in &records {
        let r = a.get(&format!("/v1/{collection}/{id}")).await;
        assert_eq!(r.status, 200, "{collection}");
        assert_eq!(&r.body, record, "{collection}");
        assert_eq!(r.header("etag"), Some("\"1\""));
    }
    assert!(a.events_after(seq).await.is_empty());
    assert!(b.events_after(0).await.is_empty());
}

async fn another_tenant_cannot_include_through_a_foreign_record(backend: Backend) {
    let server = backend.spawn().await;
    let (a, b, w, _) = two_tenants(&server).await;
    let r = b
        .get(&format!(
            "/v1/encounters/{}?include=observations,prescriptions,notes,labs",
            w.encounter
        ))
        .await;
    assert_error(&r, 404, "not_found", None);
    let r = b
        .get(&format!(
            "/v1/patients/{}?include=Observation,MedicationRequest,Appointment,Encounter",
            w.patient
        ))
        .await;
    assert_error(&r, 404, "not_found", None);
    // A's include still shows A's records.
    let r = a
        .get(&format!("/v1/patients/{}?include=observations", w.patient))
        .await;
    assert_eq!(
        r.body["included"]["observations"].as_array().unwrap().len(),
        1
    );
    // B's own patient includes nothing of A's.
    let bp = b.patient().await;
    let r = b
        .get(&format!(
            "/v1/patients/{bp}?include=observations,prescriptions,notes,labs,appointments,encounters,consents,intakes"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (key, list) in r.body["included"].as_object().unwrap() {
        assert!(list.as_array().unwrap().is_empty(), "{key}: {list}");
    }
}

async fn lists_show_only_the_tenants_own_records(backend: Backend) {
    let server = backend.spawn().await;
    let (a, b, w, records) = two_tenants(&server).await;
    let b_patient = b.patient().await;
    for (collection, _, _) in COLLECTIONS {
        let r = b.get(&format!("/v1/{collection}?limit=500")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let got = ids(&r);
        if collection == "patients" {
            assert_eq!(got, vec![b_patient.clone()]);
        } else {
            assert!(got.is_empty(), "{collection}: {got:?}");
        }
        assert!(r.body["nextCursor"].is_null());
        // A sees its own.
        let mine = ids(&a.get(&format!("/v1/{collection}?limit=500")).await);
        assert!(!mine.is_empty());
        assert!(!mine.contains(&b_patient));
    }
    // Filtering B's lists by A's patient gives nothing.
    for collection in [
        "appointments",
        "encounters",
        "observations",
        "notes",
        "labs",
    ] {
        let r = b
            .get(&format!("/v1/{collection}?patientId={}", w.patient))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(ids(&r).is_empty(), "{collection}");
    }
    // A's ids as cursors in B show nothing of A.
    for (collection, id, _) in &records {
        let r = b.get(&format!("/v1/{collection}?cursor={id}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let got = ids(&r);
        assert!(got.iter().all(|x| x == &b_patient), "{collection}: {got:?}");
    }
}

async fn events_of_one_tenant_are_invisible_to_another(backend: Backend) {
    let server = backend.spawn().await;
    let (a, b, _w, _) = two_tenants(&server).await;
    let a_events = a.events_after(0).await;
    assert!(a_events.len() >= 14);
    assert!(b.events_after(0).await.is_empty());
    for event in &a_events {
        let id = event["id"].as_str().unwrap();
        let r = b.get(&format!("/v1/events/{id}")).await;
        assert_error(&r, 404, "not_found", None);
        assert_eq!(a.get(&format!("/v1/events/{id}")).await.status, 200);
    }
    // Filters and long polls see nothing of A either.
    for query in [
        "types=patient.*",
        "resourceType=patient",
        "after=0&limit=1000",
    ] {
        let r = b.get(&format!("/v1/events?{query}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body["data"].as_array().unwrap().is_empty(), "{query}");
    }
    // B's own sequence starts at 1, whatever A wrote.
    let p = b.patient().await;
    let events = b.events_after(0).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["sequence"], 1);
    assert_eq!(events[0]["resource"]["id"], p.as_str());
    assert_ne!(events[0]["tenantId"], a_events[0]["tenantId"]);
    // And A's log did not gain B's event.
    assert_eq!(a.events_after(0).await.len(), a_events.len());
}

async fn the_audit_log_shows_only_the_tenants_own_entries(backend: Backend) {
    let server = backend.spawn().await;
    let (a, b, w, records) = two_tenants(&server).await;
    // Some reads and failed attempts by B on A's records.
    for (collection, id, _) in &records {
        b.get(&format!("/v1/{collection}/{id}")).await;
    }
    let a_ids: Vec<&String> = records.iter().map(|(_, id, _)| id).collect();
    let r = b.get("/v1/audit-log?limit=1000").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["data"].as_array().unwrap().is_empty(), "{}", r.body);
    let r = b
        .get(&format!("/v1/audit-log?resourceId={}", w.patient))
        .await;
    assert!(r.body["data"].as_array().unwrap().is_empty());
    // B's own actions are in B's log, not in A's.
    let bp = b.patient().await;
    b.get(&format!("/v1/patients/{bp}")).await;
    let r = b.get("/v1/audit-log?limit=1000").await;
    let entries = r.body["data"].as_array().unwrap();
    assert!(!entries.is_empty());
    for e in entries {
        assert_eq!(e["resourceId"], bp.as_str(), "{e}");
    }
    let r = a.get("/v1/audit-log?limit=1000").await;
    let entries = r.body["data"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| a_ids.contains(&&e["resourceId"].as_str().unwrap().to_string()))
    );
    assert!(entries.iter().all(|e| e["resourceId"] != bp.as_str()));
}

async fn a_record_may_not_reference_another_tenants_record(backend: Backend) {
    let server = backend.spawn().await;
    let (a, b, w, _) = two_tenants(&server).await;
    let b_patient = b.patient().await;
    let before_b = b.events_after(0).await.len();
    let cases = [
        (
            "appointments",
            json!({"patientId": w.patient, "start": "2026-12-01T09:00:00Z"}),
            "patientId",
        ),
        (
            "appointments",
            json!({"patientId": b_patient, "practitionerId": w.practitioner, "start": "2026-12-01T09:00:00Z"}),
            "practitionerId",
        ),
        (
            "encounters",
            json!({"patientId": b_patient, "appointmentId": w.appointment}),
            "appointmentId",
        ),
        (
            "observations",
            json!({"patientId": b_patient, "encounterId": w.encounter, "code": "x", "value": 1}),
            "encounterId",
        ),
        (
            "notes",
            json!({"patientId": w.patient, "text": "x"}),
            "patientId",
        ),
    ];
    for (collection, body, field) in cases {
        let r = b.post(&format!("/v1/{collection}"), body).await;
        assert_error(&r, 422, "validation_error", Some(field));
        // No phone or email leaks from A's records into the message.
        assert!(!r.body.to_string().contains("+1555"), "{}", r.body);
        assert!(!r.body.to_string().contains("house@"), "{}", r.body);
    }
    // Nor by a patch of B's own record.
    let note = b
        .create("notes", json!({"patientId": b_patient, "text": "x"}))
        .await;
    let r = b
        .patch(
            &format!("/v1/notes/{note}"),
            json!({"patientId": w.patient}),
        )
        .await;
    assert_error(&r, 422, "validation_error", Some("patientId"));
    assert_eq!(
        b.get(&format!("/v1/notes/{note}")).await.body["patientId"],
        b_patient.as_str()
    );
    assert_eq!(b.events_after(0).await.len(), before_b + 1);
    // A's patient gained no reference: it can still be found only in A.
    let r = a
        .get(&format!(
            "/v1/patients/{}?include=notes,appointments",
            w.patient
        ))
        .await;
    for list in r.body["included"].as_object().unwrap().values() {
        for x in list.as_array().unwrap() {
            assert_eq!(x["patientId"], w.patient.as_str());
            assert_ne!(x["id"], note.as_str());
        }
    }
}

async fn a_batch_cannot_touch_another_tenants_records(backend: Backend) {
    let server = backend.spawn().await;
    let (a, b, w, records) = two_tenants(&server).await;
    let seq = last_sequence(&a).await;
    let (_, note_id, note) = records.iter().find(|(c, _, _)| *c == "notes").unwrap();
    for bad in [
        json!({"method": "PATCH", "path": format!("/v1/notes/{note_id}"), "body": {"text": "x"}}),
        json!({"method": "DELETE", "path": format!("/v1/notes/{note_id}")}),
    ] {
        let r = b
            .post(
                "/v1/batch",
                json!({"operations": [
                    {"method": "POST", "path": "/v1/patients", "body": {"firstName": "A", "lastName": "B"}},
                    bad
                ]}),
            )
            .await;
        assert_eq!(r.status, 404, "{}", r.body);
        assert_eq!(r.body["error"]["index"], 1);
        assert!(!r.body.to_string().contains("Patient doing well"));
    }
    let r = b
        .post(
            "/v1/batch",
            json!({"operations": [
                {"method": "POST", "path": "/v1/notes", "body": {"patientId": w.patient, "text": "x"}}
            ]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["index"], 0);
    assert_eq!(&a.get(&format!("/v1/notes/{note_id}")).await.body, note);
    assert!(a.events_after(seq).await.is_empty());
    assert!(b.events_after(0).await.is_empty());
    assert!(ids(&b.get("/v1/patients").await).is_empty());
}

async fn a_long_poll_is_not_answered_with_another_tenants_events(backend: Backend) {
    let server = backend.spawn().await;
    let a = server.api();
    let b = server.new_tenant("b").await;
    // B waits; A writes; then B writes. B's poll answers with B's event only.
    let poll = {
        let b = b.clone();
        tokio::spawn(async move { b.get("/v1/events?after=0&wait=30").await })
    };
    for _ in 0..3 {
        a.patient().await;
    }
    let mine = b.patient().await;
    let r = tokio::time::timeout(std::time::Duration::from_secs(30), poll)
        .await
        .expect("the long poll answers")
        .expect("the poll task");
    assert_eq!(r.status, 200, "{}", r.body);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{data:?}");
    assert_eq!(data[0]["resource"]["id"], mine.as_str());
    assert_eq!(data[0]["sequence"], 1);
    assert_eq!(r.body["nextAfter"], 1);
}
