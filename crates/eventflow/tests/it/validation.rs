//! What the API refuses, and how (docs/design.md §3 and §3.1): unknown and
//! missing fields, values of the wrong kind, server fields, references,
//! bodies that are not JSON objects, content types, sizes, keys, routes —
//! always with the one error shape, never repeating the submitted value.

use eventflow_testkit::{Api, Backend, Reply, backend_tests};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    World, assert_error, assert_error_shape, counts, ids, last_sequence, minimal_body, world,
};

backend_tests!(
    an_unknown_field_is_422_naming_it,
    each_missing_required_field_is_422_naming_it,
    a_required_field_given_as_null_is_422_naming_it,
    values_of_the_wrong_kind_are_422_naming_the_field,
    a_patch_to_an_invalid_record_is_422_and_changes_nothing,
    server_fields_in_a_create_are_422,
    server_fields_changed_by_a_patch_are_422,
    a_reference_to_a_missing_record_is_422,
    a_reference_to_a_record_of_another_type_is_422,
    a_reference_to_a_deleted_record_is_422,
    malformed_json_is_400_malformed_json,
    a_key_given_twice_is_400_naming_it_and_changes_nothing,
    a_body_that_is_not_a_json_object_is_422,
    a_body_of_another_content_type_is_415,
    a_body_over_one_mebibyte_is_413,
    a_missing_or_bad_api_key_is_401,
    an_unknown_route_is_404_and_a_wrong_method_is_405,
    an_unknown_query_parameter_is_422_naming_it,
    every_error_has_exactly_the_error_shape,
    error_messages_never_repeat_the_submitted_value,
    ids_that_no_record_can_have_are_not_found_never_a_server_error,
);

/// `minimal_body` with `changes` merged over it (top level).
fn with(collection: &str, w: &World, changes: Value) -> Value {
    let mut body = minimal_body(collection, w);
    for (k, v) in changes.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn post_raw(api: &Api, path: &str, content_type: &str, body: impl Into<String>) -> Reply {
    api.send(
        api.request(Method::POST, path)
            .header("Content-Type", content_type)
            .body(body.into()),
    )
    .await
}

// ---------------------------------------------------------------------------

async fn an_unknown_field_is_422_naming_it(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let cases = [
        ("patients", json!({"nickname": "Addy"}), "nickname"),
        ("patients", json!({"FirstName": "Ada"}), "FirstName"),
        (
            "patients",
            json!({"address": {"zip": "12345"}}),
            "address.zip",
        ),
        (
            "encounters",
            json!({"serviceCodes": [{"system": "CPT", "code": "99213", "foo": 1}]}),
            "serviceCodes[0].foo",
        ),
        (
            "encounters",
            json!({"diagnoses": [{"code": "E11.9"}, {"code": "I10", "bar": true}]}),
            "diagnoses[1].bar",
        ),
        (
            "observations",
            json!({"referenceRange": {"low": 1, "mid": 2}}),
            "referenceRange.mid",
        ),
        (
            "prescriptions",
            json!({"pharmacy": {"fax": "x"}}),
            "pharmacy.fax",
        ),
        (
            "intakes",
            json!({"responses": [{"question": "q", "score": 3}]}),
            "responses[0].score",
        ),
        (
            "labs",
            json!({"results": [{"code": "a", "referenceRange": {"mid": 1}}]}),
            "results[0].referenceRange.mid",
        ),
        ("notes", json!({"included": {}}), "included"),
        ("consents", json!({"signature": "x"}), "signature"),
        ("practitioners", json!({"license": "x"}), "license"),
        ("appointments", json!({"duration": 30}), "duration"),
    ];
    let before = counts(&api).await;
    let seq = last_sequence(&api).await;
    for (collection, changes, field) in cases {
        let r = api
            .post(&format!("/v1/{collection}"), with(collection, &w, changes))
            .await;
        assert_error(&r, 422, "validation_error", Some(field));
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
    }
    // The same on a patch.
    let r = api
        .patch(
            &format!("/v1/patients/{}", w.patient),
            json!({"address": {"zip": "1"}}),
        )
        .await;
    assert_error(&r, 422, "validation_error", Some("address.zip"));
    assert_eq!(counts(&api).await, before);
    assert!(api.events_after(seq).await.is_empty());
}

async fn each_missing_required_field_is_422_naming_it(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let required: [(&str, &[&str]); 10] = [
        ("patients", &["firstName", "lastName"]),
        ("practitioners", &["firstName", "lastName"]),
        ("appointments", &["patientId", "start"]),
        ("encounters", &["patientId"]),
        ("observations", &["patientId", "code", "value"]),
        ("prescriptions", &["patientId", "medication"]),
        ("consents", &["patientId"]),
        ("intakes", &["patientId"]),
        ("notes", &["patientId", "text"]),
        ("labs", &["patientId", "code"]),
    ];
    let before = counts(&api).await;
    for (collection, fields) in required {
        // The minimal body is exactly the required fields, and is valid.
        let full = minimal_body(collection, &w);
        assert_eq!(
            full.as_object().unwrap().len(),
            fields.len(),
            "{collection}"
        );
        for field in fields {
            let mut body = full.clone();
            body.as_object_mut().unwrap().remove(*field);
            let r = api.post(&format!("/v1/{collection}"), body).await;
            assert_error(&r, 422, "validation_error", Some(field));
        }
        let r = api.post(&format!("/v1/{collection}"), json!({})).await;
        assert_error(&r, 422, "validation_error", Some(fields[0]));
    }
    // Required members of list items.
    for (collection, changes, field) in [
        (
            "encounters",
            json!({"serviceCodes": [{"system": "CPT"}]}),
            "serviceCodes[0].code",
        ),
        (
            "encounters",
            json!({"diagnoses": [{"code": "E11.9"}, {}]}),
            "diagnoses[1].code",
        ),
        (
            "intakes",
            json!({"responses": [{"answer": "yes"}]}),
            "responses[0].question",
        ),
        (
            "labs",
            json!({"results": [{"value": 1}]}),
            "results[0].code",
        ),
    ] {
        let r = api
            .post(&format!("/v1/{collection}"), with(collection, &w, changes))
            .await;
        assert_error(&r, 422, "validation_error", Some(field));
    }
    assert_eq!(counts(&api).await, before);
}

async fn a_required_field_given_as_null_is_422_naming_it(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    for (collection, field) in [
        ("patients", "lastName"),
        ("appointments", "start"),
        ("observations", "value"),
        ("notes", "text"),
    ] {
        let r = api
            .post(
                &format!("/v1/{collection}"),
                with(collection, &w, json!({ field: null })),
            )
            .await;
        assert_error(&r, 422, "validation_error", Some(field));
    }
}

async fn values_of_the_wrong_kind_are_422_naming_the_field(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        // Dates: YYYY-MM-DD.
        ("patients", json!({"birthDate": "1990-1-1"}), "birthDate"),
        ("patients", json!({"birthDate": "12/31/1990"}), "birthDate"),
        ("patients", json!({"birthDate": "1990-02-30"}), "birthDate"),
        (
            "patients",
            json!({"birthDate": "1990-01-01T00:00:00Z"}),
            "birthDate",
        ),
        ("patients", json!({"birthDate": 19900101}), "birthDate"),
        // Date-times: RFC 3339 with an offset.
        ("appointments", json!({"start": "tomorrow"}), "start"),
        (
            "appointments",
            json!({"start": "2026-11-29T17:00:00"}),
            "start",
        ),
        ("appointments", json!({"start": "2026-11-29"}), "start"),
        (
            "appointments",
            json!({"start": "2026-11-29T17:00:00Z[Europe/Paris]"}),
            "start",
        ),
        ("appointments", json!({"start": 1764435600}), "start"),
        ("appointments", json!({"end": "soon"}), "end"),
        ("encounters", json!({"date": "today"}), "date"),
        ("encounters", json!({"end": "2026-13-01T00:00:00Z"}), "end"),
        (
            "observations",
            json!({"effectiveAt": "noon"}),
            "effectiveAt",
        ),
        ("consents", json!({"signedAt": "yesterday"}), "signedAt"),
        ("labs", json!({"issuedAt": "later"}), "issuedAt"),
        // Enums.
        ("patients", json!({"sex": "f"}), "sex"),
        ("patients", json!({"sex": "FEMALE"}), "sex"),
        ("appointments", json!({"status": "done"}), "status"),
        ("encounters", json!({"status": "open"}), "status"),
        ("prescriptions", json!({"status": "paused"}), "status"),
        ("consents", json!({"status": "pending"}), "status"),
        ("intakes", json!({"status": "done"}), "status"),
        ("labs", json!({"status": "done"}), "status"),
        ("observations", json!({"flag": "abnormal"}), "flag"),
        (
            "labs",
            json!({"results": [{"code": "a", "flag": "weird"}]}),
            "results[0].flag",
        ),
        ("appointments", json!({"status": 1}), "status"),
        // Phones: E.164.
        ("patients", json!({"phone": "5551234567"}), "phone"),
        ("patients", json!({"phone": "+1 555 123 4567"}), "phone"),
        ("patients", json!({"phone": "+0555123"}), "phone"),
        ("patients", json!({"phone": "+1"}), "phone"),
        ("patients", json!({"phone": 15551234567u64}), "phone"),
        ("practitioners", json!({"phone": "call me"}), "phone"),
        (
            "appointments",
            json!({"patientPhone": "555"}),
            "patientPhone",
        ),
        (
            "prescriptions",
            json!({"patientPhone": "555"}),
            "patientPhone",
        ),
        (
            "prescriptions",
            json!({"pharmacy": {"phone": "123-4567"}}),
            "pharmacy.phone",
        ),
        // Emails.
        ("patients", json!({"email": "not-an-email"}), "email"),
        ("patients", json!({"email": "a@b"}), "email"),
        ("patients", json!({"email": "a b@example.com"}), "email"),
        ("practitioners", json!({"email": 42}), "email"),
        (
            "observations",
            json!({"providerEmail": "x"}),
            "providerEmail",
        ),
        // Value: a number or a string.
        ("observations", json!({"value": true}), "value"),
        ("observations", json!({"value": {"mg": 5}}), "value"),
        ("observations", json!({"value": [5]}), "value"),
        ("observations", json!({"value": ""}), "value"),
        (
            "labs",
            json!({"results": [{"code": "a", "value": false}]}),
            "results[0].value",
        ),
        // Counts and numbers.
        ("prescriptions", json!({"refills": -1}), "refills"),
        ("prescriptions", json!({"refills": 1.5}), "refills"),
        ("prescriptions", json!({"refills": "2"}), "refills"),
        ("prescriptions", json!({"quantity": "ten"}), "quantity"),
        (
            "observations",
            json!({"referenceRange": {"low": "4"}}),
            "referenceRange.low",
        ),
        // Booleans.
        ("patients", json!({"active": "yes"}), "active"),
        ("patients", json!({"active": 1}), "active"),
        ("patients", json!({"active": "true"}), "active"),
        // Strings.
        ("patients", json!({"firstName": ""}), "firstName"),
        ("patients", json!({"firstName": 5}), "firstName"),
        ("patients", json!({"lastName": ["Lovelace"]}), "lastName"),
        ("notes", json!({"text": {"body": "x"}}), "text"),
        ("patients", json!({"address": {"city": 5}}), "address.city"),
        ("appointments", json!({"patientId": 5}), "patientId"),
        ("appointments", json!({"patientId": ""}), "patientId"),
        // Objects and lists.
        ("patients", json!({"address": "12 Main St"}), "address"),
        ("prescriptions", json!({"pharmacy": ["x"]}), "pharmacy"),
        (
            "encounters",
            json!({"serviceCodes": {"code": "99213"}}),
            "serviceCodes",
        ),
        (
            "encounters",
            json!({"serviceCodes": ["99213"]}),
            "serviceCodes[0]",
        ),
        (
            "encounters",
            json!({"diagnoses": [{"code": "E11.9"}, 7]}),
            "diagnoses[1]",
        ),
        ("intakes", json!({"responses": [1]}), "responses[0]"),
        ("intakes", json!({"responses": "none"}), "responses"),
        ("labs", json!({"results": ["x"]}), "results[0]"),
    ];
    let before = counts(&api).await;
    let seq = last_sequence(&api).await;
    for (collection, changes, field) in cases {
        let body = with(collection, &w, changes.clone());
        let r = api.post(&format!("/v1/{collection}"), body).await;
        assert_eq!(r.status, 422, "{collection} {changes}: {}", r.body);
        assert_error(&r, 422, "validation_error", Some(field));
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    assert_eq!(counts(&api).await, before);
    assert!(api.events_after(seq).await.is_empty());
}

async fn a_patch_to_an_invalid_record_is_422_and_changes_nothing(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let path = format!("/v1/appointments/{}", w.appointment);
    let before = api.get(&path).await;
    let seq = last_sequence(&api).await;
    for (patch, field) in [
        (json!({"start": "tomorrow"}), "start"),
        (json!({"status": "done"}), "status"),
        (json!({"start": null}), "start"),
        (json!({"patientPhone": "555"}), "patientPhone"),
        (json!({"status": "cancelled", "reason": ""}), "reason"),
        (
            json!({"practitionerId": "prac_doesnotexist"}),
            "practitionerId",
        ),
    ] {
        let r = api.patch(&path, patch).await;
        assert_error(&r, 422, "validation_error", Some(field));
    }
    let after = api.get(&path).await;
    assert_eq!(after.body, before.body);
    assert_eq!(after.header("etag"), Some("\"1\""));
    assert!(api.events_after(seq).await.is_empty());
}

async fn server_fields_in_a_create_are_422(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let before = counts(&api).await;
    for (field, value) in [
        ("id", json!("pat_mine")),
        ("version", json!(1)),
        ("createdAt", json!("2026-01-01T00:00:00Z")),
        ("updatedAt", json!("2026-01-01T00:00:00Z")),
    ] {
        for collection in ["patients", "observations"] {
            let r = api
                .post(
                    &format!("/v1/{collection}"),
                    with(collection, &w, json!({ field: value })),
                )
                .await;
            assert_error(&r, 422, "validation_error", Some(field));
        }
    }
    assert_eq!(counts(&api).await, before);
}

async fn server_fields_changed_by_a_patch_are_422(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let path = format!("/v1/patients/{id}");
    let before = api.get(&path).await;
    for (field, value) in [
        ("id", json!("pat_other")),
        ("version", json!(7)),
        ("createdAt", json!("2020-01-01T00:00:00.000Z")),
        ("updatedAt", json!("2020-01-01T00:00:00.000Z")),
    ] {
        let r = api.patch(&path, json!({ field: value, "mrn": "x" })).await;
        assert_error(&r, 422, "validation_error", Some(field));
    }
    assert_eq!(api.get(&path).await.body, before.body);
}

async fn a_reference_to_a_missing_record_is_422(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let before = counts(&api).await;
    for (collection, changes, field, says) in [
        (
            "appointments",
            json!({"patientId": "pat_doesnotexist"}),
            "patientId",
            "no patient",
        ),
        (
            "appointments",
            json!({"practitionerId": "prac_doesnotexist"}),
            "practitionerId",
            "no practitioner",
        ),
        (
            "encounters",
            json!({"appointmentId": "appt_doesnotexist"}),
            "appointmentId",
            "no appointment",
        ),
        (
            "observations",
            json!({"encounterId": "enc_doesnotexist"}),
            "encounterId",
            "no encounter",
        ),
        (
            "notes",
            json!({"patientId": "pat_0"}),
            "patientId",
            "no patient",
        ),
    ] {
        let r = api
            .post(&format!("/v1/{collection}"), with(collection, &w, changes))
            .await;
        assert_error(&r, 422, "validation_error", Some(field));
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    assert_eq!(counts(&api).await, before);
}

async fn a_reference_to_a_record_of_another_type_is_422(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let before = counts(&api).await;
    for (collection, changes, field) in [
        (
            "appointments",
            json!({"practitionerId": w.patient}),
            "practitionerId",
        ),
        (
            "appointments",
            json!({"patientId": w.practitioner}),
            "patientId",
        ),
        (
            "observations",
            json!({"encounterId": w.appointment}),
            "encounterId",
        ),
        (
            "encounters",
            json!({"appointmentId": w.encounter}),
            "appointmentId",
        ),
        ("notes", json!({"encounterId": w.patient}), "encounterId"),
    ] {
        let r = api
            .post(&format!("/v1/{collection}"), with(collection, &w, changes))
            .await;
        assert_error(&r, 422, "validation_error", Some(field));
    }
    assert_eq!(counts(&api).await, before);
}

async fn a_reference_to_a_deleted_record_is_422(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let gone = api.patient().await;
    assert_eq!(
        api.delete(&format!("/v1/patients/{gone}")).await.status,
        204
    );
    let r = api.post("/v1/consents", json!({"patientId": gone})).await;
    assert_error(&r, 422, "validation_error", Some("patientId"));
}

async fn malformed_json_is_400_malformed_json(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let before = counts(&api).await;
    for text in [
        "{\"firstName\": \"Ada\",",
        "{firstName: \"Ada\"}",
        "{\"firstName\": \"Ada\"}}",
        "",
        "nul",
        "{\"firstName\": 'Ada'}",
    ] {
        let r = post_raw(&api, "/v1/patients", "application/json", text).await;
        assert_error(&r, 400, "malformed_json", None);
        let r = api
            .send(
                api.request(Method::PATCH, &format!("/v1/patients/{id}"))
                    .header("Content-Type", "application/json")
                    .body(text),
            )
            .await;
        assert_error(&r, 400, "malformed_json", None);
        let r = post_raw(&api, "/v1/batch", "application/json", text).await;
        assert_error(&r, 400, "malformed_json", None);
    }
    assert_eq!(counts(&api).await, before);
}

async fn a_key_given_twice_is_400_naming_it_and_changes_nothing(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let before = counts(&api).await;
    let endpoints = api.get("/v1/endpoints").await.body.to_string();
    let twice = r#"{"firstName": "a", "lastName": "b", "firstName": "c"}"#;
    let r = post_raw(&api, "/v1/patients", "application/json", twice).await;
    assert_error(&r, 400, "duplicate_key", Some("firstName"));
    let r = api
        .send(
            api.request(Method::PATCH, &format!("/v1/patients/{id}"))
                .header("Content-Type", "application/merge-patch+json")
                .body(r#"{"lastName": "x", "lastName": "y"}"#),
        )
        .await;
    assert_error(&r, 400, "duplicate_key", Some("lastName"));
    // Deep inside a batch.
    let batch = r#"{"operations": [{"method": "POST", "path": "/v1/patients",
        "body": {"firstName": "a", "lastName": "b", "lastName": "c"}}]}"#;
    let r = post_raw(&api, "/v1/batch", "application/json", batch).await;
    assert_error(&r, 400, "duplicate_key", Some("lastName"));
    let r = post_raw(
        &api,
        "/v1/endpoints",
        "application/json",
        r#"{"url": "https://a.example/hook", "url": "https://b.example/hook"}"#,
    )
    .await;
    assert_error(&r, 400, "duplicate_key", Some("url"));
    assert_eq!(counts(&api).await, before);
    assert_eq!(api.get("/v1/endpoints").await.body.to_string(), endpoints);
    let r = api.get(&format!("/v1/patients/{id}")).await;
    assert_ne!(r.body["lastName"], "y");
}

async fn a_body_that_is_not_a_json_object_is_422(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let before = counts(&api).await;
    for body in [
        json!([]),
        json!([{"firstName": "A", "lastName": "B"}]),
        json!("x"),
        json!(1),
        json!(true),
        Value::Null,
    ] {
        let r = api.post("/v1/patients", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_error_shape(&r, false);
        assert_eq!(r.body["error"]["type"], "validation_error");
        let r = api.patch(&format!("/v1/patients/{id}"), body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_error_shape(&r, false);
        let r = api.post("/v1/batch", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_error_shape(&r, false);
    }
    assert_eq!(counts(&api).await, before);
    assert_eq!(
        api.get(&format!("/v1/patients/{id}")).await.body["version"],
        1
    );
}

async fn a_body_of_another_content_type_is_415(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let before = counts(&api).await;
    let body = json!({"firstName": "Ada", "lastName": "Lovelace"}).to_string();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "multipart/form-data; boundary=x",
    ] {
        let r = post_raw(&api, "/v1/patients", ct, body.clone()).await;
        assert_error(&r, 415, "unsupported_media_type", Some("Content-Type"));
        let r = api
            .send(
                api.request(Method::PATCH, &format!("/v1/patients/{id}"))
                    .header("Content-Type", ct)
                    .body(json!({"mrn": "x"}).to_string()),
            )
            .await;
        assert_error(&r, 415, "unsupported_media_type", Some("Content-Type"));
        let r = post_raw(&api, "/v1/batch", ct, json!({"operations": []}).to_string()).await;
        assert_error(&r, 415, "unsupported_media_type", Some("Content-Type"));
    }
    assert_eq!(counts(&api).await, before);
    assert_eq!(
        api.get(&format!("/v1/patients/{id}")).await.body["version"],
        1
    );
}

async fn a_body_over_one_mebibyte_is_413(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let before = counts(&api).await;
    let big = "a".repeat(1024 * 1024 + 1);
    let r = api
        .post("/v1/patients", json!({"firstName": big, "lastName": "B"}))
        .await;
    assert_error(&r, 413, "payload_too_large", None);
    let r = api
        .patch(&format!("/v1/patients/{id}"), json!({"mrn": big}))
        .await;
    assert_error(&r, 413, "payload_too_large", None);
    assert_eq!(counts(&api).await, before);
    // Just under the limit is read (and then judged on its fields).
    let under = "a".repeat(1024 * 1024 - 100);
    let r = api
        .post("/v1/patients", json!({"firstName": under, "lastName": "B"}))
        .await;
    assert_error(&r, 422, "validation_error", Some("firstName"));
}

async fn a_missing_or_bad_api_key_is_401(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let anonymous = server.anonymous();
    let bad = Api {
        key: Some("efk_not-a-real-key".into()),
        ..api.clone()
    };
    let checks = |r: Reply| assert_error(&r, 401, "authentication_error", None);
    for client in [&anonymous, &bad] {
        checks(client.get("/v1/patients").await);
        checks(client.get(&format!("/v1/patients/{id}")).await);
        checks(client.get("/v1/patients/pat_doesnotexist").await);
        checks(
            client
                .post("/v1/patients", json!({"firstName": "A", "lastName": "B"}))
                .await,
        );
        checks(
            client
                .patch(&format!("/v1/patients/{id}"), json!({"mrn": "x"}))
                .await,
        );
        checks(client.delete(&format!("/v1/patients/{id}")).await);
        checks(client.get("/v1/events").await);
        checks(client.post("/v1/batch", json!({"operations": []})).await);
    }
    for header in [
        "Basic dXNlcjpwYXNz".to_string(),
        "Bearer ".to_string(),
        format!("Token {}", server.key),
        server.key.clone(),
    ] {
        let r = anonymous
            .send(
                anonymous
                    .request(Method::GET, "/v1/patients")
                    .header("Authorization", header),
            )
            .await;
        checks(r);
    }
    // Nothing was changed or created.
    let r = api.get(&format!("/v1/patients/{id}")).await;
    assert_eq!(r.body["version"], 1);
    assert_eq!(ids(&api.get("/v1/patients").await).len(), 1);
}

async fn an_unknown_route_is_404_and_a_wrong_method_is_405(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    for path in [
        "/v1/nothing",
        "/nothing",
        "/v1/patient",
        &format!("/v1/patients/{id}/extra"),
    ] {
        let r = api.get(path).await;
        assert_error(&r, 404, "not_found", None);
    }
    for (method, path) in [
        (Method::PUT, "/v1/patients".to_string()),
        (Method::DELETE, "/v1/patients".to_string()),
        (Method::PATCH, "/v1/patients".to_string()),
        (Method::POST, format!("/v1/patients/{id}")),
        (Method::PUT, format!("/v1/patients/{id}")),
        (Method::GET, "/v1/batch".to_string()),
    ] {
        let r = api
            .send(api.request(method.clone(), &path).json(&json!({})))
            .await;
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
        assert_error_shape(&r, false);
        assert_eq!(r.body["error"]["type"], "method_not_allowed");
    }
    assert_eq!(
        api.get(&format!("/v1/patients/{id}")).await.body["version"],
        1
    );
}

async fn an_unknown_query_parameter_is_422_naming_it(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let r = api.get("/v1/patients?sort=name").await;
    assert_error(&r, 422, "validation_error", Some("sort"));
    let r = api
        .get(&format!("/v1/patients/{id}?fields=firstName"))
        .await;
    assert_error(&r, 422, "validation_error", Some("fields"));
    // Filters a type does not have.
    let r = api.get(&format!("/v1/practitioners?patientId={id}")).await;
    assert_error(&r, 422, "validation_error", Some("patientId"));
    let r = api.get("/v1/notes?status=active").await;
    assert_error(&r, 422, "validation_error", Some("status"));
}

async fn every_error_has_exactly_the_error_shape(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let patient = format!("/v1/patients/{}", w.patient);
    let mut replies = vec![
        // 400
        post_raw(&api, "/v1/patients", "application/json", "{").await,
        // 401
        server.anonymous().get("/v1/patients").await,
        // 404
        api.get("/v1/patients/pat_doesnotexist").await,
        api.get("/v1/nowhere").await,
        // 405
        api.send(api.request(Method::PUT, "/v1/patients")).await,
        // 409
        api.delete(&patient).await,
        // 412
        api.send(
            api.request(Method::PATCH, &patient)
                .header("If-Match", "\"9\"")
                .json(&json!({"mrn": "x"})),
        )
        .await,
        // 413
        api.post("/v1/notes", json!({"text": "a".repeat(1_100_000)}))
            .await,
        // 415
        post_raw(&api, "/v1/patients", "text/plain", "hello").await,
        // 422
        api.post("/v1/patients", json!({"firstName": "A"})).await,
        api.get("/v1/patients?limit=0").await,
    ];
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![400, 401, 404, 404, 405, 409, 412, 413, 415, 422, 422]
    );
    for r in replies.drain(..) {
        assert_error_shape(&r, false);
    }
}

async fn error_messages_never_repeat_the_submitted_value(backend: Backend) {
    const SECRET: &str = "SECRET-VALUE";
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let s = format!("555-{SECRET}");
    let posts: Vec<(&str, Value)> = vec![
        ("patients", json!({"phone": s})),
        ("patients", json!({"email": s})),
        ("patients", json!({"birthDate": s})),
        ("patients", json!({"sex": s})),
        ("patients", json!({"active": s})),
        ("patients", json!({"address": s})),
        ("patients", json!({"address": {"city": [s]}})),
        ("appointments", json!({"start": s})),
        ("appointments", json!({"status": s})),
        (
            "appointments",
            json!({"patientId": format!("pat_{SECRET}")}),
        ),
        ("appointments", json!({"practitionerId": s})),
        ("observations", json!({"value": {"x": s}})),
        ("observations", json!({"flag": s})),
        ("prescriptions", json!({"refills": s})),
        ("prescriptions", json!({"quantity": s})),
        ("intakes", json!({"responses": [s]})),
        ("labs", json!({"results": [{"code": "a", "value": [s]}]})),
    ];
    let mut replies = Vec::new();
    for (collection, changes) in posts {
        replies.push(
            api.post(&format!("/v1/{collection}"), with(collection, &w, changes))
                .await,
        );
    }
    let patient = format!("/v1/patients/{}", w.patient);
    replies.push(api.patch(&patient, json!({"phone": s})).await);
    replies.push(api.patch(&patient, json!({"birthDate": s})).await);
    for text in [
        format!("{{\"firstName\": \"{SECRET}\" \"lastName\": 1}}"),
        format!("{{\"firstName\": {SECRET}}}"),
        format!("{{\"phone\": \"{SECRET}"),
    ] {
        replies.push(post_raw(&api, "/v1/patients", "application/json", text).await);
    }
    for query in [
        format!("status={SECRET}"),
        format!("updatedSince={SECRET}"),
        format!("limit={SECRET}"),
        format!("cursor={SECRET}"),
    ] {
        replies.push(api.get(&format!("/v1/appointments?{query}")).await);
    }
    replies.push(
        api.get(&format!("/v1/encounters/{}?include={SECRET}", w.encounter))
            .await,
    );
    replies.push(
        api.post(
            "/v1/batch",
            json!({"operations": [{"method": "POST", "path": "/v1/patients",
                                   "body": {"firstName": "A", "lastName": "B", "phone": s}}]}),
        )
        .await,
    );
    for r in replies {
        assert!(r.status >= 400, "{}", r.body);
        let text = r.body.to_string();
        assert!(
            !text.contains(SECRET),
            "{} repeats the value: {text}",
            r.status
        );
        for (name, value) in &r.headers {
            let v = value.to_str().unwrap_or_default();
            assert!(!v.contains(SECRET), "header {name} repeats the value");
        }
    }
}

async fn ids_that_no_record_can_have_are_not_found_never_a_server_error(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    // A NUL byte, a control character, invalid UTF-8, and very long ids.
    let long = format!("pat_{}", "0".repeat(5000));
    let bad_ids = [
        "pat_%00x",
        "pat_%01",
        "pat_%FF",
        "%C3%28",
        "pat_%0A%0D",
        long.as_str(),
    ];
    for id in bad_ids {
        let path = format!("/v1/patients/{id}");
        assert_error(&api.get(&path).await, 404, "not_found", None);
        assert_error(
            &api.get(&format!("{path}?include=observations")).await,
            404,
            "not_found",
            None,
        );
        assert_error(
            &api.patch(&path, json!({"mrn": "x"})).await,
            404,
            "not_found",
            None,
        );
        assert_error(&api.delete(&path).await, 404, "not_found", None);
        let r = api
            .get(&format!("/v1/events/{}", id.replacen("pat", "evt", 1)))
            .await;
        assert_error(&r, 404, "not_found", None);
        // As a filter or cursor: nothing, or a 422 — never a 500.
        for path in [
            format!("/v1/appointments?patientId={id}"),
            format!("/v1/appointments?cursor={id}"),
            format!("/v1/audit-log?resourceId={id}"),
            format!("/v1/audit-log?cursor={id}"),
        ] {
            let r = api.get(&path).await;
            assert!(
                r.status == 200 || r.status == 422,
                "{path}: {} {}",
                r.status,
                r.body
            );
            if r.status == 200 {
                if path.starts_with("/v1/appointments") {
                    assert!(ids(&r).is_empty());
                }
            } else {
                assert_error_shape(&r, false);
            }
        }
    }
    // As a reference in a body.
    for bad in [r"pat_\u0000", r"pat_\u0001x", r"pat_\n"] {
        let text = format!(r#"{{"patientId": "{bad}", "start": "2026-12-01T09:00:00Z"}}"#);
        let r = post_raw(&api, "/v1/appointments", "application/json", text).await;
        assert_error(&r, 422, "validation_error", Some("patientId"));
    }
    let r = api
        .patch(
            &format!("/v1/appointments/{}", w.appointment),
            json!({"practitionerId": "prac_\u{0}"}),
        )
        .await;
    assert_error(&r, 422, "validation_error", Some("practitionerId"));
    // As the id in a batch operation's path.
    for id in [r"pat_\u0000", r"pat_\u00ff", "pat_a/b"] {
        let text = format!(
            r#"{{"operations": [{{"method": "PATCH", "path": "/v1/patients/{id}", "body": {{"mrn": "x"}}}}]}}"#
        );
        let r = post_raw(&api, "/v1/batch", "application/json", text).await;
        assert!(r.status == 404 || r.status == 422, "{id}: {}", r.body);
        assert_eq!(r.body["error"]["index"], 0, "{}", r.body);
    }
    // The server is still fine.
    assert_eq!(
        api.get(&format!("/v1/patients/{}", w.patient)).await.status,
        200
    );
}
