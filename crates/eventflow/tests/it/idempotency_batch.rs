//! `Idempotency-Key` on creates and batches, and `POST /v1/batch`: all or
//! nothing, results in order, the failing operation's status and index
//! (docs/design.md §3.1 and §9).

use eventflow_testkit::{Api, Backend, Reply, backend_tests};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_error, assert_error_shape, counts, ids, last_sequence, world};

backend_tests!(
    a_repeated_key_with_the_same_body_replays_the_first_response,
    a_replay_returns_the_first_response_even_after_the_record_changed,
    a_repeated_key_with_a_different_body_is_409_and_creates_nothing,
    a_repeated_key_on_another_collection_is_409,
    the_same_body_with_members_in_another_order_is_the_same_request,
    idempotency_keys_are_per_tenant,
    an_idempotency_key_is_remembered_for_24_hours,
    a_refused_request_does_not_use_up_its_idempotency_key,
    an_unusable_idempotency_key_is_400,
    a_batch_applies_creates_patches_and_deletes_in_order,
    a_batch_sees_its_own_earlier_operations,
    a_failing_operation_fails_the_batch_with_its_status_and_index,
    a_failing_batch_applies_nothing,
    a_batch_of_more_than_1000_operations_is_422,
    a_batch_of_exactly_1000_operations_is_applied,
    a_bad_path_or_method_in_an_operation_is_422_naming_it,
    a_batch_body_without_a_list_of_operations_is_422,
    an_idempotency_key_on_a_batch_replays_it,
    a_batch_body_may_be_larger_than_one_mebibyte,
    an_operation_if_match_that_is_not_a_version_is_422,
);

async fn post_with_key(api: &Api, path: &str, key: &str, body: &Value) -> Reply {
    api.send(
        api.request(Method::POST, path)
            .header("Idempotency-Key", key)
            .json(body),
    )
    .await
}

/// Checks a failed batch: status, shape with `index`, type and index.
fn assert_batch_error(r: &Reply, status: u16, kind: &str, index: u64) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_error_shape(r, true);
    assert_eq!(r.body["error"]["type"], kind, "{}", r.body);
    assert_eq!(r.body["error"]["index"], index, "{}", r.body);
}

fn op(method: &str, path: &str, body: Value) -> Value {
    if body.is_null() {
        json!({"method": method, "path": path})
    } else {
        json!({"method": method, "path": path, "body": body})
    }
}

async fn a_repeated_key_with_the_same_body_replays_the_first_response(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let body = json!({"firstName": "Ada", "lastName": "Lovelace", "phone": "+15551234567"});
    let seq = last_sequence(&api).await;
    let first = post_with_key(&api, "/v1/patients", "create-ada-1", &body).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    for _ in 0..3 {
        let again = post_with_key(&api, "/v1/patients", "create-ada-1", &body).await;
        assert_eq!(again.status, 201, "{}", again.body);
        assert_eq!(again.body, first.body);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.header("location"), first.header("location"));
        assert_eq!(again.header("etag"), first.header("etag"));
    }
    assert_eq!(ids(&api.get("/v1/patients").await), vec![first.id()]);
    let events = api.events_after(seq).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "patient.created");
    // Without a key, the same body creates another record.
    let other = api.post("/v1/patients", body).await;
    assert_eq!(other.status, 201);
    assert_ne!(other.id(), first.id());
}

async fn a_replay_returns_the_first_response_even_after_the_record_changed(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let body = json!({"firstName": "Ada", "lastName": "Lovelace"});
    let first = post_with_key(&api, "/v1/patients", "k-change", &body).await;
    assert_eq!(first.status, 201);
    let p = api
        .patch(
            &format!("/v1/patients/{}", first.id()),
            json!({"mrn": "M1"}),
        )
        .await;
    assert_eq!(p.body["version"], 2);
    let seq = last_sequence(&api).await;
    let again = post_with_key(&api, "/v1/patients", "k-change", &body).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body);
    assert!(api.events_after(seq).await.is_empty());
    assert_eq!(ids(&api.get("/v1/patients").await).len(), 1);
}

async fn a_repeated_key_with_a_different_body_is_409_and_creates_nothing(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let first = post_with_key(
        &api,
        "/v1/patients",
        "k1",
        &json!({"firstName": "Ada", "lastName": "Lovelace"}),
    )
    .await;
    assert_eq!(first.status, 201);
    let seq = last_sequence(&api).await;
    for body in [
        json!({"firstName": "Grace", "lastName": "Hopper"}),
        json!({"firstName": "Ada", "lastName": "Lovelace", "mrn": "x"}),
        json!({"firstName": "Ada"}),
    ] {
        let r = post_with_key(&api, "/v1/patients", "k1", &body).await;
        assert_error(&r, 409, "idempotency_conflict", Some("Idempotency-Key"));
        assert_eq!(r.header("idempotent-replayed"), None);
    }
    assert_eq!(ids(&api.get("/v1/patients").await), vec![first.id()]);
    assert!(api.events_after(seq).await.is_empty());
    // The first response is still the one replayed.
    let again = post_with_key(
        &api,
        "/v1/patients",
        "k1",
        &json!({"firstName": "Ada", "lastName": "Lovelace"}),
    )
    .await;
    assert_eq!(again.body, first.body);
}

async fn a_repeated_key_on_another_collection_is_409(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let body = json!({"firstName": "Ada", "lastName": "Lovelace"});
    let first = post_with_key(&api, "/v1/patients", "k2", &body).await;
    assert_eq!(first.status, 201);
    let r = post_with_key(&api, "/v1/practitioners", "k2", &body).await;
    assert_error(&r, 409, "idempotency_conflict", Some("Idempotency-Key"));
    assert!(ids(&api.get("/v1/practitioners").await).is_empty());
    let r = post_with_key(
        &api,
        "/v1/batch",
        "k2",
        &json!({"operations": [{"method": "POST", "path": "/v1/patients", "body": body}]}),
    )
    .await;
    assert_error(&r, 409, "idempotency_conflict", Some("Idempotency-Key"));
    assert_eq!(ids(&api.get("/v1/patients").await).len(), 1);
}

async fn the_same_body_with_members_in_another_order_is_the_same_request(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let send = |text: &'static str| {
        api.send(
            api.request(Method::POST, "/v1/patients")
                .header("Idempotency-Key", "k-order")
                .header("Content-Type", "application/json")
                .body(text),
        )
    };
    let first = send(r#"{"firstName": "Ada", "lastName": "Lovelace", "address": {"city": "London", "country": "GB"}}"#).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = send(
        r#"{"address":{"country":"GB","city":"London"},"lastName":"Lovelace","firstName":"Ada"}"#,
    )
    .await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(ids(&api.get("/v1/patients").await).len(), 1);
}

async fn idempotency_keys_are_per_tenant(backend: Backend) {
    let server = backend.spawn().await;
    let a = server.api();
    let b = server.new_tenant("b").await;
    let body = json!({"firstName": "Ada", "lastName": "Lovelace"});
    let ra = post_with_key(&a, "/v1/patients", "shared-key", &body).await;
    let rb = post_with_key(&b, "/v1/patients", "shared-key", &body).await;
    assert_eq!(ra.status, 201);
    assert_eq!(rb.status, 201, "{}", rb.body);
    assert_eq!(rb.header("idempotent-replayed"), None);
    assert_ne!(ra.id(), rb.id());
    assert_eq!(ids(&b.get("/v1/patients").await), vec![rb.id()]);
    assert_eq!(ids(&a.get("/v1/patients").await), vec![ra.id()]);
    // A different body under the same key in B is B's own business.
    let rb2 = post_with_key(&b, "/v1/practitioners", "other-key", &body).await;
    assert_eq!(rb2.status, 201);
    let ra2 = post_with_key(
        &a,
        "/v1/patients",
        "other-key",
        &json!({"firstName": "Grace", "lastName": "Hopper"}),
    )
    .await;
    assert_eq!(ra2.status, 201, "{}", ra2.body);
}

async fn an_idempotency_key_is_remembered_for_24_hours(backend: Backend) {
    let start: jiff::Timestamp = "2026-11-29T17:00:00Z".parse().unwrap();
    let (server, clock) = backend.spawn_with_clock(start).await;
    let api = server.api();
    let body = json!({"firstName": "Ada", "lastName": "Lovelace"});
    let first = post_with_key(&api, "/v1/patients", "k-day", &body).await;
    clock.advance(jiff::SignedDuration::from_hours(23));
    let again = post_with_key(&api, "/v1/patients", "k-day", &body).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.id(), first.id());
    clock.advance(jiff::SignedDuration::from_hours(2));
    let later = post_with_key(&api, "/v1/patients", "k-day", &body).await;
    assert_eq!(later.status, 201);
    assert_eq!(later.header("idempotent-replayed"), None);
    assert_ne!(later.id(), first.id());
    assert_eq!(ids(&api.get("/v1/patients").await).len(), 2);
}

async fn a_refused_request_does_not_use_up_its_idempotency_key(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let r = post_with_key(&api, "/v1/patients", "k-fix", &json!({"firstName": "Ada"})).await;
    assert_error(&r, 422, "validation_error", Some("lastName"));
    let fixed = json!({"firstName": "Ada", "lastName": "Lovelace"});
    let r = post_with_key(&api, "/v1/patients", "k-fix", &fixed).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("idempotent-replayed"), None);
    let again = post_with_key(&api, "/v1/patients", "k-fix", &fixed).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(ids(&api.get("/v1/patients").await).len(), 1);
}

async fn an_unusable_idempotency_key_is_400(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let body = json!({"firstName": "Ada", "lastName": "Lovelace"});
    let r = post_with_key(&api, "/v1/patients", &"k".repeat(256), &body).await;
    assert_error(&r, 400, "invalid_request", Some("Idempotency-Key"));
    let r = post_with_key(&api, "/v1/patients", "", &body).await;
    assert_error(&r, 400, "invalid_request", Some("Idempotency-Key"));
    assert!(ids(&api.get("/v1/patients").await).is_empty());
    let r = post_with_key(&api, "/v1/patients", &"k".repeat(255), &body).await;
    assert_eq!(r.status, 201);
}

async fn a_batch_applies_creates_patches_and_deletes_in_order(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let note = api
        .create("notes", json!({"patientId": w.patient, "text": "old"}))
        .await;
    let seq = last_sequence(&api).await;
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [
                op("POST", "/v1/patients", json!({"firstName": "Grace", "lastName": "Hopper"})),
                op("POST", "/v1/notes", json!({"patientId": w.patient, "text": "new"})),
                op("PATCH", &format!("/v1/appointments/{}", w.appointment), json!({"status": "cancelled"})),
                op("DELETE", &format!("/v1/notes/{note}"), Value::Null),
                {"method": "PATCH", "path": format!("/v1/patients/{}", w.patient),
                 "body": {"mrn": "M-9"}, "ifMatch": "\"1\""},
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 5);
    let statuses: Vec<&Value> = results.iter().map(|x| &x["status"]).collect();
    assert_eq!(
        statuses,
        vec![
            &json!(201),
            &json!(201),
            &json!(200),
            &json!(204),
            &json!(200)
        ]
    );
    let grace = results[0]["body"]["id"].as_str().unwrap().to_string();
    assert!(grace.starts_with("pat_"));
    assert_eq!(results[0]["body"]["firstName"], "Grace");
    assert_eq!(results[0]["body"]["version"], 1);
    let new_note = results[1]["body"]["id"].as_str().unwrap().to_string();
    assert!(new_note.starts_with("note_"));
    assert_eq!(results[2]["body"]["status"], "cancelled");
    assert_eq!(results[2]["body"]["version"], 2);
    assert!(results[3]["body"].is_null(), "{}", results[3]);
    assert_eq!(results[4]["body"]["mrn"], "M-9");

    // Every change is there, each with its event, in operation order.
    assert_eq!(
        api.get(&format!("/v1/patients/{grace}")).await.body,
        results[0]["body"]
    );
    assert_eq!(api.get(&format!("/v1/notes/{new_note}")).await.status, 200);
    assert_eq!(
        api.get(&format!("/v1/appointments/{}", w.appointment))
            .await
            .body["status"],
        "cancelled"
    );
    assert_eq!(api.get(&format!("/v1/notes/{note}")).await.status, 404);
    let events = api.events_after(seq).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        vec![
            "patient.created",
            "note.created",
            "appointment.updated",
            "note.deleted",
            "patient.updated"
        ]
    );
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, ((seq + 1)..=(seq + 5)).collect::<Vec<_>>());
    assert_eq!(events[0]["resource"]["id"], grace.as_str());
    assert_eq!(events[3]["resource"]["id"], note.as_str());
}

async fn a_batch_sees_its_own_earlier_operations(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let p = api.patient().await;
    let appt = api
        .create(
            "appointments",
            json!({"patientId": p, "start": "2026-12-01T09:00:00Z"}),
        )
        .await;
    // The patient cannot go first: the appointment still names it.
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [
                op("DELETE", &format!("/v1/patients/{p}"), Value::Null),
                op("DELETE", &format!("/v1/appointments/{appt}"), Value::Null),
            ]}),
        )
        .await;
    assert_batch_error(&r, 409, "conflict", 0);
    assert_eq!(
        api.get(&format!("/v1/appointments/{appt}")).await.status,
        200
    );
    // In the other order, both go.
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [
                op("DELETE", &format!("/v1/appointments/{appt}"), Value::Null),
                op("DELETE", &format!("/v1/patients/{p}"), Value::Null),
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.get(&format!("/v1/patients/{p}")).await.status, 404);
    // Two patches of one record in one batch: versions 2 then 3.
    let q = api.patient().await;
    let path = format!("/v1/patients/{q}");
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [
                op("PATCH", &path, json!({"mrn": "A"})),
                {"method": "PATCH", "path": path, "body": {"mrn": "B"}, "ifMatch": 2},
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["results"][1]["body"]["version"], 3);
    assert_eq!(api.get(&path).await.body["mrn"], "B");
}

async fn a_failing_operation_fails_the_batch_with_its_status_and_index(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let good = op(
        "POST",
        "/v1/patients",
        json!({"firstName": "A", "lastName": "B"}),
    );
    // 422 at index 2, naming the field.
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [good, good,
                op("POST", "/v1/appointments", json!({"patientId": w.patient, "start": "tomorrow"})),
                good]}),
        )
        .await;
    assert_batch_error(&r, 422, "validation_error", 2);
    assert_eq!(r.error_field(), Some("start"));
    // 404 at index 1.
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [good,
                op("PATCH", "/v1/patients/pat_doesnotexist", json!({"mrn": "x"}))]}),
        )
        .await;
    assert_batch_error(&r, 404, "not_found", 1);
    // 412 at index 1.
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [good,
                {"method": "PATCH", "path": format!("/v1/patients/{}", w.patient),
                 "body": {"mrn": "x"}, "ifMatch": "\"5\""}]}),
        )
        .await;
    assert_batch_error(&r, 412, "precondition_failed", 1);
    // 409 at index 0.
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [op("DELETE", &format!("/v1/patients/{}", w.patient), Value::Null), good]}),
        )
        .await;
    assert_batch_error(&r, 409, "conflict", 0);
    // 422 for a missing reference and for a body that is not an object.
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [good, good, good,
                op("POST", "/v1/notes", json!({"patientId": "pat_doesnotexist", "text": "x"}))]}),
        )
        .await;
    assert_batch_error(&r, 422, "validation_error", 3);
    assert_eq!(r.error_field(), Some("patientId"));
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [good, op("POST", "/v1/patients", Value::Null)]}),
        )
        .await;
    assert_batch_error(&r, 422, "validation_error", 1);
    // Only the seed records exist.
    assert_eq!(ids(&api.get("/v1/patients").await), vec![w.patient.clone()]);
}

async fn a_failing_batch_applies_nothing(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let note = api
        .create("notes", json!({"patientId": w.patient, "text": "keep me"}))
        .await;
    let before_counts = counts(&api).await;
    let appt_path = format!("/v1/appointments/{}", w.appointment);
    let before_appt = api.get(&appt_path).await.body;
    let before_note = api.get(&format!("/v1/notes/{note}")).await.body;
    let seq = last_sequence(&api).await;
    let writes_audited = || async {
        let r = api.get("/v1/audit-log?limit=1000").await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] != "read")
            .count()
    };
    let audited_before = writes_audited().await;
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [
                op("POST", "/v1/patients", json!({"firstName": "Grace", "lastName": "Hopper"})),
                op("PATCH", &appt_path, json!({"status": "cancelled"})),
                op("POST", "/v1/observations", json!({"patientId": w.patient, "code": "x"})),
                op("DELETE", &format!("/v1/notes/{note}"), Value::Null),
            ]}),
        )
        .await;
    assert_batch_error(&r, 422, "validation_error", 2);
    assert_eq!(r.error_field(), Some("value"));
    assert_eq!(counts(&api).await, before_counts);
    assert_eq!(api.get(&appt_path).await.body, before_appt);
    assert_eq!(
        api.get(&format!("/v1/notes/{note}")).await.body,
        before_note
    );
    assert!(api.events_after(seq).await.is_empty());
    // Nor are the rolled-back writes' audit entries kept.
    assert_eq!(writes_audited().await, audited_before);
    // The tenant's sequence did not move: the next event follows directly.
    api.patient().await;
    let events = api.events_after(seq).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["sequence"], seq + 1);
}

async fn a_batch_of_more_than_1000_operations_is_422(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let good = op(
        "POST",
        "/v1/patients",
        json!({"firstName": "A", "lastName": "B"}),
    );
    let r = api
        .post("/v1/batch", json!({"operations": vec![good; 1001]}))
        .await;
    assert_error(&r, 422, "validation_error", Some("operations"));
    let r = api.post("/v1/batch", json!({"operations": []})).await;
    assert_error(&r, 422, "validation_error", Some("operations"));
    assert!(ids(&api.get("/v1/patients").await).is_empty());
    assert!(api.events_after(0).await.is_empty());
}

async fn a_batch_of_exactly_1000_operations_is_applied(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let ops: Vec<Value> = (0..1000)
        .map(|i| {
            op(
                "POST",
                "/v1/practitioners",
                json!({"firstName": format!("P{i}"), "lastName": "X"}),
            )
        })
        .collect();
    let r = api.post("/v1/batch", json!({ "operations": ops })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    assert_eq!(results[999]["body"]["firstName"], "P999");
    assert_eq!(api.events_after(0).await.len(), 1000);
}

async fn a_bad_path_or_method_in_an_operation_is_422_naming_it(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let p = api.patient().await;
    let good = op("POST", "/v1/notes", json!({"patientId": p, "text": "x"}));
    let body = json!({"firstName": "A", "lastName": "B"});
    let cases = [
        (op("POST", "/v2/patients", body.clone()), "path"),
        (op("POST", "patients", body.clone()), "path"),
        (op("POST", "/v1/unicorns", body.clone()), "path"),
        (op("POST", "/v1/events", body.clone()), "path"),
        (op("POST", "/v1/batch", body.clone()), "path"),
        (
            op("POST", &format!("/v1/patients/{p}/notes"), body.clone()),
            "path",
        ),
        (
            op("POST", &format!("/v1/patients/{p}"), body.clone()),
            "path",
        ),
        (op("PATCH", "/v1/patients", body.clone()), "path"),
        (op("DELETE", "/v1/patients", Value::Null), "path"),
        (json!({"method": "POST", "body": body}), "path"),
        (json!({"method": "POST", "path": 5, "body": body}), "path"),
        (
            op("PUT", &format!("/v1/patients/{p}"), body.clone()),
            "method",
        ),
        (op("GET", "/v1/patients", Value::Null), "method"),
        (op("post", "/v1/patients", body.clone()), "method"),
        (json!({"path": "/v1/patients", "body": body}), "method"),
        (
            json!({"method": "POST", "path": "/v1/patients", "body": body, "extra": 1}),
            "extra",
        ),
    ];
    for (bad, field) in cases {
        let r = api
            .post("/v1/batch", json!({"operations": [good, bad]}))
            .await;
        assert_batch_error(&r, 422, "validation_error", 1);
        assert_eq!(
            r.error_field(),
            Some(format!("operations[1].{field}").as_str()),
            "{bad}: {}",
            r.body
        );
    }
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [good, "POST /v1/patients"]}),
        )
        .await;
    assert_batch_error(&r, 422, "validation_error", 1);
    assert_eq!(r.error_field(), Some("operations[1]"));
    assert!(ids(&api.get("/v1/notes").await).is_empty());
}

async fn a_batch_body_without_a_list_of_operations_is_422(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    for (body, field) in [
        (json!({}), "operations"),
        (json!({"operations": {"method": "POST"}}), "operations"),
        (json!({"operations": null}), "operations"),
        (json!({"operations": [], "atomic": true}), "atomic"),
    ] {
        let r = api.post("/v1/batch", body).await;
        assert_error(&r, 422, "validation_error", Some(field));
    }
}

async fn an_idempotency_key_on_a_batch_replays_it(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let p = api.patient().await;
    let body = json!({"operations": [
        op("POST", "/v1/notes", json!({"patientId": p, "text": "one"})),
        op("PATCH", &format!("/v1/patients/{p}"), json!({"mrn": "M1"})),
    ]});
    let seq = last_sequence(&api).await;
    let first = post_with_key(&api, "/v1/batch", "batch-1", &body).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = post_with_key(&api, "/v1/batch", "batch-1", &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(ids(&api.get("/v1/notes").await).len(), 1);
    assert_eq!(
        api.get(&format!("/v1/patients/{p}")).await.body["version"],
        2
    );
    assert_eq!(api.events_after(seq).await.len(), 2);
    // The same key with other operations is a conflict.
    let other =
        json!({"operations": [op("POST", "/v1/notes", json!({"patientId": p, "text": "two"}))]});
    let r = post_with_key(&api, "/v1/batch", "batch-1", &other).await;
    assert_error(&r, 409, "idempotency_conflict", Some("Idempotency-Key"));
    assert_eq!(ids(&api.get("/v1/notes").await).len(), 1);
    // A failed batch keeps no response under its key.
    let failing = json!({"operations": [op("POST", "/v1/notes", json!({"patientId": p}))]});
    let r = post_with_key(&api, "/v1/batch", "batch-2", &failing).await;
    assert_batch_error(&r, 422, "validation_error", 0);
    let fixed =
        json!({"operations": [op("POST", "/v1/notes", json!({"patientId": p, "text": "x"}))]});
    let r = post_with_key(&api, "/v1/batch", "batch-2", &fixed).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.events_after(seq).await.len(), 3);
}

async fn a_batch_body_may_be_larger_than_one_mebibyte(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let p = api.patient().await;
    // 600 notes of 3,000 characters: about 1.8 MB, more than a single
    // request may carry but well within what 1,000 operations need.
    let text = "n".repeat(3000);
    let ops: Vec<Value> = (0..600)
        .map(|_| op("POST", "/v1/notes", json!({"patientId": p, "text": text})))
        .collect();
    let body = json!({ "operations": ops });
    assert!(body.to_string().len() > 1024 * 1024);
    let r = api.post("/v1/batch", body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ids(&api.get("/v1/notes?limit=500").await).len(), 500);
}

async fn an_operation_if_match_that_is_not_a_version_is_422(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let p = api.patient().await;
    let path = format!("/v1/patients/{p}");
    for bad in [json!(1.5), json!("one"), json!(true), json!([1])] {
        let r = api
            .post(
                "/v1/batch",
                json!({"operations": [
                    {"method": "PATCH", "path": path, "body": {"mrn": "x"}, "ifMatch": bad}
                ]}),
            )
            .await;
        assert_batch_error(&r, 422, "validation_error", 0);
        assert_eq!(r.error_field(), Some("operations[0].ifMatch"), "{bad}");
    }
    let read = api.get(&path).await;
    assert_eq!(read.body["version"], 1);
    assert!(read.body.get("mrn").is_none());
}
