//! Clinical records (docs/design.md §3.1 and §9): create, read, list, include,
//! defaults, derived fields, merge patch, versions and deletes, for each of
//! the ten record types.

use std::collections::{BTreeSet, HashSet};

use eventflow_testkit::{Api, Backend, Reply, backend_tests};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    COLLECTIONS, World, assert_error, full_body, ids, last_sequence, minimal_body, world,
};

backend_tests!(
    an_empty_patch_does_not_pick_up_a_phone_the_patient_gained,
    a_new_patient_on_an_appointment_brings_their_phone,
    every_record_type_is_created_with_every_field_and_read_back,
    defaults_are_filled_when_a_field_is_absent,
    given_values_are_kept_over_defaults,
    an_encounter_date_defaults_to_now,
    an_observation_flag_is_computed_from_its_reference_range_when_absent,
    a_given_observation_flag_is_kept,
    a_patch_that_changes_an_observation_value_recomputes_its_flag,
    a_patch_that_resends_the_same_observation_value_keeps_a_given_flag,
    lab_results_get_flags_from_their_reference_ranges,
    patient_phone_defaults_from_the_patient_on_appointments_and_prescriptions,
    a_given_patient_phone_is_not_overwritten,
    provider_email_defaults_from_the_practitioner_on_observations,
    include_on_an_encounter_adds_its_observations_prescriptions_notes_and_labs,
    include_on_a_patient_adds_every_kind_of_related_record,
    fhir_include_names_give_the_same_keys_as_collection_names,
    an_unknown_include_name_is_422_naming_include,
    lists_filter_by_patient_id,
    lists_filter_by_status,
    lists_filter_by_updated_since,
    list_limit_defaults_to_50_and_accepts_1_to_500,
    cursor_pagination_visits_every_record_exactly_once,
    a_merge_patch_merges_nested_objects_and_null_removes_a_field,
    a_patch_accepts_merge_patch_json,
    a_patch_bumps_the_version_and_the_etag,
    if_match_accepts_bare_quoted_and_weak_versions,
    a_patch_with_a_stale_if_match_is_412_and_changes_nothing,
    a_patch_that_changes_nothing_keeps_the_version_and_writes_no_event,
    a_patch_of_a_missing_record_is_404,
    a_deleted_record_is_gone_from_reads_and_lists,
    deleting_a_patient_with_appointments_is_409_naming_appointments,
    a_delete_with_a_stale_if_match_is_412_and_keeps_the_record,
    a_delete_with_a_current_if_match_deletes,
);

async fn patch_with(api: &Api, path: &str, if_match: &str, body: Value) -> Reply {
    api.send(
        api.request(Method::PATCH, path)
            .header("If-Match", if_match)
            .json(&body),
    )
    .await
}

async fn delete_with(api: &Api, path: &str, if_match: &str) -> Reply {
    api.send(
        api.request(Method::DELETE, path)
            .header("If-Match", if_match),
    )
    .await
}

fn is_timestamp(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.ends_with('Z') && s.parse::<jiff::Timestamp>().is_ok())
}

// ---------------------------------------------------------------------------

async fn every_record_type_is_created_with_every_field_and_read_back(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    for (collection, prefix, _) in COLLECTIONS {
        let body = full_body(collection, &w);
        let r = api.post(&format!("/v1/{collection}"), body.clone()).await;
        assert_eq!(r.status, 201, "{collection}: {}", r.body);
        let id = r.id();
        assert!(id.starts_with(prefix), "{collection} id {id}");
        assert_eq!(
            r.header("location"),
            Some(format!("/v1/{collection}/{id}").as_str()),
            "{collection}"
        );
        assert_eq!(r.header("etag"), Some("\"1\""), "{collection}");
        assert_eq!(r.body["version"], 1, "{collection}");
        assert!(
            is_timestamp(&r.body["createdAt"]),
            "{collection}: {}",
            r.body
        );
        assert_eq!(r.body["createdAt"], r.body["updatedAt"], "{collection}");
        // Every given field comes back as given, and nothing else is added.
        let given = body.as_object().unwrap();
        for (k, v) in given {
            assert_eq!(&r.body[k], v, "{collection}.{k}");
        }
        let keys: BTreeSet<&str> = r
            .body
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut want: BTreeSet<&str> = given.keys().map(|k| k.as_str()).collect();
        want.extend(["id", "version", "createdAt", "updatedAt"]);
        assert_eq!(keys, want, "{collection}");

        let read = api.get(&format!("/v1/{collection}/{id}")).await;
        assert_eq!(read.status, 200, "{collection}: {}", read.body);
        assert_eq!(read.body, r.body, "{collection}");
        assert_eq!(read.header("etag"), Some("\"1\""), "{collection}");

        let list = api.get(&format!("/v1/{collection}?limit=500")).await;
        assert_eq!(list.status, 200, "{collection}: {}", list.body);
        let found: Vec<&Value> = list.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["id"] == id.as_str())
            .collect();
        assert_eq!(found, vec![&r.body], "{collection} list");
        assert!(list.body["nextCursor"].is_null(), "{collection}");
    }
}

async fn defaults_are_filled_when_a_field_is_absent(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let expected = [
        ("patients", "active", json!(true)),
        ("appointments", "status", json!("booked")),
        ("encounters", "status", json!("in-progress")),
        ("prescriptions", "status", json!("active")),
        ("consents", "status", json!("active")),
        ("intakes", "status", json!("requested")),
        ("labs", "status", json!("final")),
    ];
    for (collection, field, value) in expected {
        let r = api
            .post(&format!("/v1/{collection}"), minimal_body(collection, &w))
            .await;
        assert_eq!(r.status, 201, "{collection}: {}", r.body);
        assert_eq!(r.body[field], value, "{collection}.{field}");
        let read = api.get(&format!("/v1/{collection}/{}", r.id())).await;
        assert_eq!(read.body[field], value, "{collection}.{field} on read");
    }
}

async fn given_values_are_kept_over_defaults(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    for (collection, field, value) in [
        ("patients", "active", json!(false)),
        ("appointments", "status", json!("cancelled")),
        ("encounters", "status", json!("planned")),
        ("prescriptions", "status", json!("stopped")),
        ("consents", "status", json!("inactive")),
        ("intakes", "status", json!("in-progress")),
        ("labs", "status", json!("amended")),
    ] {
        let mut body = minimal_body(collection, &w);
        body[field] = value.clone();
        let r = api.post(&format!("/v1/{collection}"), body).await;
        assert_eq!(r.status, 201, "{collection}: {}", r.body);
        assert_eq!(r.body[field], value, "{collection}.{field}");
    }
}

async fn an_encounter_date_defaults_to_now(backend: Backend) {
    let start: jiff::Timestamp = "2026-11-29T17:00:00Z".parse().unwrap();
    let (server, clock) = backend.spawn_with_clock(start).await;
    let api = server.api();
    let patient = api.patient().await;
    clock.advance(jiff::SignedDuration::from_mins(5));
    let r = api
        .post("/v1/encounters", json!({"patientId": patient}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["date"], "2026-11-29T17:05:00.000Z");
    assert_eq!(r.body["date"], r.body["createdAt"]);
    // A given date is kept.
    let r = api
        .post(
            "/v1/encounters",
            json!({"patientId": patient, "date": "2026-01-02T03:04:05Z"}),
        )
        .await;
    assert_eq!(r.body["date"], "2026-01-02T03:04:05Z");
}

async fn an_observation_flag_is_computed_from_its_reference_range_when_absent(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let cases = [
        (json!(60), json!({"low": 70, "high": 99}), Some("low")),
        (json!(120.5), json!({"low": 70, "high": 99}), Some("high")),
        (json!(85), json!({"low": 70, "high": 99}), Some("normal")),
        (json!(70), json!({"low": 70, "high": 99}), Some("normal")),
        (json!(99), json!({"low": 70, "high": 99}), Some("normal")),
        (json!(3), json!({"low": 4}), Some("low")),
        (json!(5), json!({"low": 4}), Some("normal")),
        (json!(7), json!({"high": 6}), Some("high")),
        (json!("positive"), json!({"low": 1, "high": 2}), None),
    ];
    for (value, range, flag) in cases {
        let r = api
            .post(
                "/v1/observations",
                json!({"patientId": patient, "code": "x", "value": value, "referenceRange": range}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        match flag {
            Some(f) => assert_eq!(r.body["flag"], f, "value {value} range {range}"),
            None => assert!(r.body.get("flag").is_none(), "{}", r.body),
        }
        let read = api.get(&format!("/v1/observations/{}", r.id())).await;
        assert_eq!(read.body["flag"], r.body["flag"]);
    }
    // Without a range there is nothing to compute.
    let r = api
        .post(
            "/v1/observations",
            json!({"patientId": patient, "code": "x", "value": 5}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(r.body.get("flag").is_none(), "{}", r.body);
}

async fn a_given_observation_flag_is_kept(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let r = api
        .post(
            "/v1/observations",
            json!({"patientId": patient, "code": "x", "value": 85,
                   "referenceRange": {"low": 70, "high": 99}, "flag": "critical"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["flag"], "critical");
    // A patch of another field keeps it too.
    let r = api
        .patch(
            &format!("/v1/observations/{}", r.id()),
            json!({"unit": "mg/dL"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["flag"], "critical");
}

async fn a_patch_that_changes_an_observation_value_recomputes_its_flag(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let id = api
        .create(
            "observations",
            json!({"patientId": patient, "code": "x", "value": 85,
                   "referenceRange": {"low": 70, "high": 99}}),
        )
        .await;
    let path = format!("/v1/observations/{id}");
    let r = api.patch(&path, json!({"value": 140})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["flag"], "high");
    assert_eq!(r.body["version"], 2);
    let r = api.patch(&path, json!({"value": 50})).await;
    assert_eq!(r.body["flag"], "low");
    // Moving the range recomputes as well.
    let r = api
        .patch(&path, json!({"referenceRange": {"low": 40}}))
        .await;
    assert_eq!(r.body["flag"], "normal");
    assert_eq!(r.body["referenceRange"], json!({"low": 40, "high": 99}));
    // A flag given in the same patch wins.
    let r = api
        .patch(&path, json!({"value": 500, "flag": "critical"}))
        .await;
    assert_eq!(r.body["flag"], "critical");
    assert_eq!(api.get(&path).await.body["flag"], "critical");
}

async fn a_patch_that_resends_the_same_observation_value_keeps_a_given_flag(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let id = api
        .create(
            "observations",
            json!({"patientId": patient, "code": "x", "value": 85,
                   "referenceRange": {"low": 70, "high": 99}, "flag": "critical"}),
        )
        .await;
    let path = format!("/v1/observations/{id}");
    let before = last_sequence(&api).await;
    let r = api
        .patch(
            &path,
            json!({"value": 85, "referenceRange": {"low": 70, "high": 99}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["flag"], "critical",
        "an unchanged value keeps the flag"
    );
    assert_eq!(r.body["version"], 1, "a patch that changes nothing");
    assert!(api.events_after(before).await.is_empty());
}

async fn lab_results_get_flags_from_their_reference_ranges(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let r = api
        .post(
            "/v1/labs",
            json!({"patientId": patient, "code": "24323-8", "results": [
                {"code": "a", "value": 3.1, "referenceRange": {"low": 3.5, "high": 5.1}},
                {"code": "b", "value": 140, "referenceRange": {"low": 135, "high": 145}},
                {"code": "c", "value": 11, "referenceRange": {"low": 0.6, "high": 1.2}},
                {"code": "d", "value": 11, "referenceRange": {"low": 0.6, "high": 1.2}, "flag": "critical"},
                {"code": "e", "value": "negative"},
                {"code": "f", "value": 4}
            ]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let flags: Vec<Value> = r.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.get("flag").cloned().unwrap_or(Value::Null))
        .collect();
    assert_eq!(
        flags,
        vec![
            json!("low"),
            json!("normal"),
            json!("high"),
            json!("critical"),
            Value::Null,
            Value::Null
        ]
    );
    let read = api.get(&format!("/v1/labs/{}", r.id())).await;
    assert_eq!(read.body["results"], r.body["results"]);
    // Replacing the results computes the flags of the new ones.
    let p = api
        .patch(
            &format!("/v1/labs/{}", r.id()),
            json!({"results": [{"code": "a", "value": 9, "referenceRange": {"high": 5}}]}),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["results"][0]["flag"], "high");
}

async fn patient_phone_defaults_from_the_patient_on_appointments_and_prescriptions(
    backend: Backend,
) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let appt = api
        .post(
            "/v1/appointments",
            json!({"patientId": patient, "start": "2026-12-01T09:00:00Z"}),
        )
        .await;
    assert_eq!(appt.status, 201, "{}", appt.body);
    assert_eq!(appt.body["patientPhone"], "+15551234567");
    let rx = api
        .post(
            "/v1/prescriptions",
            json!({"patientId": patient, "medication": "Amoxicillin"}),
        )
        .await;
    assert_eq!(rx.status, 201, "{}", rx.body);
    assert_eq!(rx.body["patientPhone"], "+15551234567");
    assert_eq!(
        api.get(&format!("/v1/prescriptions/{}", rx.id()))
            .await
            .body["patientPhone"],
        "+15551234567"
    );
    // A patient without a phone gives none.
    let no_phone = api
        .create("patients", json!({"firstName": "No", "lastName": "Phone"}))
        .await;
    let appt = api
        .post(
            "/v1/appointments",
            json!({"patientId": no_phone, "start": "2026-12-01T09:00:00Z"}),
        )
        .await;
    assert_eq!(appt.status, 201);
    assert!(appt.body.get("patientPhone").is_none(), "{}", appt.body);
}

async fn a_given_patient_phone_is_not_overwritten(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let appt = api
        .post(
            "/v1/appointments",
            json!({"patientId": patient, "start": "2026-12-01T09:00:00Z", "patientPhone": "+447700900123"}),
        )
        .await;
    assert_eq!(appt.status, 201, "{}", appt.body);
    assert_eq!(appt.body["patientPhone"], "+447700900123");
    let rx = api
        .post(
            "/v1/prescriptions",
            json!({"patientId": patient, "medication": "Amoxicillin", "patientPhone": "+447700900124"}),
        )
        .await;
    assert_eq!(rx.body["patientPhone"], "+447700900124");
    // A later patch of another field keeps the given phone.
    let p = api
        .patch(
            &format!("/v1/appointments/{}", appt.id()),
            json!({"reason": "Follow-up"}),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["patientPhone"], "+447700900123");
}

async fn provider_email_defaults_from_the_practitioner_on_observations(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let r = api
        .post(
            "/v1/observations",
            json!({"patientId": w.patient, "practitionerId": w.practitioner, "code": "x", "value": 1}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["providerEmail"], "house@example.com");
    // Not overwritten when given.
    let r = api
        .post(
            "/v1/observations",
            json!({"patientId": w.patient, "practitionerId": w.practitioner, "code": "x",
                   "value": 1, "providerEmail": "oncall@example.com"}),
        )
        .await;
    assert_eq!(r.body["providerEmail"], "oncall@example.com");
    // Without a practitioner there is none.
    let r = api
        .post(
            "/v1/observations",
            json!({"patientId": w.patient, "code": "x", "value": 1}),
        )
        .await;
    assert!(r.body.get("providerEmail").is_none(), "{}", r.body);
}

/// Creates, for `w.encounter`, one observation, prescription, note and lab,
/// plus one of each on a second encounter of the same patient. Returns the
/// ids on `w.encounter`, by collection.
async fn encounter_children(api: &Api, w: &World) -> Vec<(&'static str, String)> {
    let other = api
        .create("encounters", json!({"patientId": w.patient}))
        .await;
    let mut mine = Vec::new();
    for enc in [&w.encounter, &other] {
        for collection in ["observations", "prescriptions", "notes", "labs"] {
            let mut body = minimal_body(collection, w);
            body["encounterId"] = json!(enc);
            let id = api.create(collection, body).await;
            if enc == &w.encounter {
                mine.push((collection, id));
            }
        }
    }
    mine
}

async fn include_on_an_encounter_adds_its_observations_prescriptions_notes_and_labs(
    backend: Backend,
) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let mine = encounter_children(&api, &w).await;
    let r = api
        .get(&format!(
            "/v1/encounters/{}?include=observations,prescriptions,notes,labs",
            w.encounter
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], w.encounter.as_str());
    assert_eq!(r.header("etag"), Some("\"1\""));
    let included = r.body["included"].as_object().expect("included");
    let keys: BTreeSet<&str> = included.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["observations", "prescriptions", "notes", "labs"])
    );
    for (collection, id) in &mine {
        let list = included[*collection].as_array().unwrap();
        assert_eq!(list.len(), 1, "{collection}: {list:?}");
        assert_eq!(list[0]["id"], id.as_str());
        // The full record, as a read shows it.
        let read = api.get(&format!("/v1/{collection}/{id}")).await;
        assert_eq!(list[0], read.body);
    }
    // Only what was asked for.
    let r = api
        .get(&format!("/v1/encounters/{}?include=notes", w.encounter))
        .await;
    let keys: Vec<&String> = r.body["included"].as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["notes"]);
    // Without include there is no `included`.
    let r = api.get(&format!("/v1/encounters/{}", w.encounter)).await;
    assert!(r.body.get("included").is_none());
}

async fn include_on_a_patient_adds_every_kind_of_related_record(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let other = World {
        patient: api.patient().await,
        practitioner: w.practitioner.clone(),
        appointment: w.appointment.clone(),
        encounter: w.encounter.clone(),
    };
    let kinds = [
        "observations",
        "prescriptions",
        "notes",
        "labs",
        "appointments",
        "encounters",
        "consents",
        "intakes",
    ];
    for collection in kinds {
        api.create(collection, minimal_body(collection, &w)).await;
        // Records of another patient are not included.
        api.create(collection, minimal_body(collection, &other))
            .await;
    }
    let r = api
        .get(&format!(
            "/v1/patients/{}?include={}",
            w.patient,
            kinds.join(",")
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let included = r.body["included"].as_object().expect("included");
    assert_eq!(included.len(), kinds.len());
    for collection in kinds {
        let list = included[collection].as_array().expect(collection);
        // The world already has one appointment and one encounter.
        let want = if matches!(collection, "appointments" | "encounters") {
            2
        } else {
            1
        };
        assert_eq!(list.len(), want, "{collection}: {list:?}");
        for x in list {
            assert_eq!(x["patientId"], w.patient.as_str(), "{collection}");
        }
    }
}

async fn fhir_include_names_give_the_same_keys_as_collection_names(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    encounter_children(&api, &w).await;
    let by_name = api
        .get(&format!(
            "/v1/encounters/{}?include=observations,prescriptions,notes,labs",
            w.encounter
        ))
        .await;
    let fhir = api
        .get(&format!(
            "/v1/encounters/{}?include=Observation,MedicationRequest,DocumentReference,DiagnosticReport",
            w.encounter
        ))
        .await;
    assert_eq!(fhir.status, 200, "{}", fhir.body);
    assert_eq!(fhir.body["included"], by_name.body["included"]);
    let two = api
        .get(&format!(
            "/v1/encounters/{}?include=Observation,MedicationRequest",
            w.encounter
        ))
        .await;
    let keys: BTreeSet<&String> = two.body["included"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        BTreeSet::from([&"observations".to_string(), &"prescriptions".to_string()])
    );
    // A type named twice (both ways) is included once.
    let twice = api
        .get(&format!(
            "/v1/encounters/{}?include=observations,Observation",
            w.encounter
        ))
        .await;
    assert_eq!(twice.status, 200, "{}", twice.body);
    assert_eq!(
        twice.body["included"],
        json!({"observations": by_name.body["included"]["observations"]})
    );
    // On a patient, the rest of the FHIR names.
    api.create("consents", json!({"patientId": w.patient}))
        .await;
    api.create("intakes", json!({"patientId": w.patient})).await;
    let names = "appointments,encounters,consents,intakes";
    let fhir_names = "Appointment,Encounter,Consent,QuestionnaireResponse";
    let a = api
        .get(&format!("/v1/patients/{}?include={names}", w.patient))
        .await;
    let b = api
        .get(&format!("/v1/patients/{}?include={fhir_names}", w.patient))
        .await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(a.body["included"], b.body["included"]);
    assert_eq!(b.body["included"].as_object().unwrap().len(), 4);
}

async fn an_unknown_include_name_is_422_naming_include(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    for path in [
        format!("/v1/encounters/{}?include=observations,bogus", w.encounter),
        format!("/v1/encounters/{}?include=appointments", w.encounter),
        format!("/v1/patients/{}?include=Patient", w.patient),
        format!("/v1/practitioners/{}?include=observations", w.practitioner),
    ] {
        let r = api.get(&path).await;
        assert_error(&r, 422, "validation_error", Some("include"));
    }
}

async fn lists_filter_by_patient_id(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let a = api.patient().await;
    let b = api.patient().await;
    let mut of_a = HashSet::new();
    for p in [&a, &b, &a] {
        let id = api
            .create("notes", json!({"patientId": p, "text": "note"}))
            .await;
        if p == &a {
            of_a.insert(id);
        }
    }
    let r = api.get(&format!("/v1/notes?patientId={a}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got: HashSet<String> = ids(&r).into_iter().collect();
    assert_eq!(got, of_a);
    let r = api.get("/v1/notes?patientId=pat_doesnotexist").await;
    assert_eq!(r.status, 200);
    assert!(ids(&r).is_empty());
}

async fn lists_filter_by_status(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let p = api.patient().await;
    let booked = api
        .create(
            "appointments",
            json!({"patientId": p, "start": "2026-12-01T09:00:00Z"}),
        )
        .await;
    let cancelled = api
        .create(
            "appointments",
            json!({"patientId": p, "start": "2026-12-01T10:00:00Z", "status": "cancelled"}),
        )
        .await;
    let r = api.get("/v1/appointments?status=booked").await;
    assert_eq!(ids(&r), vec![booked.clone()]);
    let r = api.get("/v1/appointments?status=cancelled").await;
    assert_eq!(ids(&r), vec![cancelled.clone()]);
    // A patch moves a record between filters.
    api.patch(
        &format!("/v1/appointments/{booked}"),
        json!({"status": "fulfilled"}),
    )
    .await;
    assert!(ids(&api.get("/v1/appointments?status=booked").await).is_empty());
    assert_eq!(
        ids(&api.get("/v1/appointments?status=fulfilled").await),
        vec![booked.clone()]
    );
    // Combined with patientId.
    let r = api
        .get(&format!("/v1/appointments?status=cancelled&patientId={p}"))
        .await;
    assert_eq!(ids(&r), vec![cancelled]);
    // A status the type does not have is 422.
    let r = api.get("/v1/appointments?status=in-progress").await;
    assert_error(&r, 422, "validation_error", Some("status"));
}

async fn lists_filter_by_updated_since(backend: Backend) {
    let start: jiff::Timestamp = "2026-11-29T17:00:00Z".parse().unwrap();
    let (server, clock) = backend.spawn_with_clock(start).await;
    let api = server.api();
    let first = api.patient().await; // 17:00
    clock.advance(jiff::SignedDuration::from_hours(1));
    let second = api.patient().await; // 18:00
    clock.advance(jiff::SignedDuration::from_hours(1));
    api.patch(&format!("/v1/patients/{first}"), json!({"mrn": "M1"}))
        .await; // first updated at 19:00
    let all = |r: &Reply| ids(r).into_iter().collect::<HashSet<_>>();
    let r = api
        .get("/v1/patients?updatedSince=2026-11-29T17:30:00Z")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(all(&r), HashSet::from([first.clone(), second.clone()]));
    // Inclusive.
    let r = api
        .get("/v1/patients?updatedSince=2026-11-29T18:00:00.000Z")
        .await;
    assert_eq!(all(&r), HashSet::from([first.clone(), second.clone()]));
    // An offset is understood: 19:30+01:00 is 18:30Z.
    let r = api
        .get("/v1/patients?updatedSince=2026-11-29T19:30:00%2B01:00")
        .await;
    assert_eq!(all(&r), HashSet::from([first.clone()]));
    let r = api
        .get("/v1/patients?updatedSince=2026-11-29T19:00:01Z")
        .await;
    assert!(ids(&r).is_empty());
    let r = api.get("/v1/patients?updatedSince=yesterday").await;
    assert_error(&r, 422, "validation_error", Some("updatedSince"));
}

async fn list_limit_defaults_to_50_and_accepts_1_to_500(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    for i in 0..51 {
        api.create(
            "practitioners",
            json!({"firstName": format!("P{i}"), "lastName": "X"}),
        )
        .await;
    }
    let r = api.get("/v1/practitioners").await;
    assert_eq!(r.status, 200);
    assert_eq!(ids(&r).len(), 50);
    assert!(r.body["nextCursor"].is_string());
    let r = api.get("/v1/practitioners?limit=1").await;
    assert_eq!(ids(&r).len(), 1);
    let r = api.get("/v1/practitioners?limit=500").await;
    assert_eq!(ids(&r).len(), 51);
    assert!(r.body["nextCursor"].is_null());
    for bad in ["0", "501", "-1", "ten", "1.5"] {
        let r = api.get(&format!("/v1/practitioners?limit={bad}")).await;
        assert_error(&r, 422, "validation_error", Some("limit"));
    }
}

async fn cursor_pagination_visits_every_record_exactly_once(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let p = api.patient().await;
    let mut created = HashSet::new();
    for i in 0..11 {
        created.insert(
            api.create(
                "notes",
                json!({"patientId": p, "text": format!("note {i}")}),
            )
            .await,
        );
    }
    for limit in [1, 3, 5, 11, 12] {
        let mut seen = Vec::new();
        let mut path = format!("/v1/notes?limit={limit}");
        for page in 0.. {
            assert!(page <= 12, "pagination does not end");
            let r = api.get(&path).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let page_ids = ids(&r);
            assert!(page_ids.len() <= limit);
            seen.extend(page_ids);
            match r.body["nextCursor"].as_str() {
                Some(c) => path = format!("/v1/notes?limit={limit}&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), created.len(), "limit {limit}: {seen:?}");
        let unique: HashSet<String> = seen.into_iter().collect();
        assert_eq!(unique, created, "limit {limit}");
    }
    // Filters hold across pages.
    let other = api.patient().await;
    api.create("notes", json!({"patientId": other, "text": "x"}))
        .await;
    let r = api.get(&format!("/v1/notes?patientId={p}&limit=6")).await;
    let c = r.body["nextCursor"].as_str().unwrap().to_string();
    let r2 = api
        .get(&format!("/v1/notes?patientId={p}&limit=6&cursor={c}"))
        .await;
    assert_eq!(ids(&r).len() + ids(&r2).len(), 11);
    assert!(r2.body["nextCursor"].is_null());
    // A cursor still works when the record it names was deleted.
    let r = api.get(&format!("/v1/notes?patientId={p}&limit=4")).await;
    let page1 = ids(&r);
    let c = r.body["nextCursor"].as_str().unwrap().to_string();
    assert_eq!(c, page1[3]);
    assert_eq!(api.delete(&format!("/v1/notes/{c}")).await.status, 204);
    let r = api
        .get(&format!("/v1/notes?patientId={p}&limit=100&cursor={c}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(page1.len() + ids(&r).len(), 11);
    // A cursor that is not one is 422.
    let r = api.get("/v1/notes?cursor=nonsense").await;
    assert_error(&r, 422, "validation_error", Some("cursor"));
}

async fn a_merge_patch_merges_nested_objects_and_null_removes_a_field(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let r = api.post("/v1/patients", full_body("patients", &w)).await;
    let path = format!("/v1/patients/{}", r.id());
    let before = last_sequence(&api).await;
    let p = api
        .patch(
            &path,
            json!({"address": {"city": "Cambridge", "postalCode": null}, "mrn": null, "sex": "other"}),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(
        p.body["address"],
        json!({"line": "12 St James's Square", "city": "Cambridge", "state": "LND", "country": "GB"})
    );
    assert!(p.body.get("mrn").is_none(), "{}", p.body);
    assert_eq!(p.body["sex"], "other");
    assert_eq!(p.body["firstName"], "Ada");
    assert_eq!(p.body["createdAt"], r.body["createdAt"]);
    let read = api.get(&path).await;
    assert_eq!(read.body, p.body);
    // One updated event with the prior values of what changed.
    let events = api.events_after(before).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "patient.updated");
    assert_eq!(
        events[0]["previous"],
        json!({"sex": "female", "address": r.body["address"], "mrn": "MRN-0001"})
    );
    // Removing a required field is refused.
    let bad = api.patch(&path, json!({"lastName": null})).await;
    assert_error(&bad, 422, "validation_error", Some("lastName"));
    assert_eq!(api.get(&path).await.body, p.body);
}

async fn a_patch_accepts_merge_patch_json(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let path = format!("/v1/patients/{id}");
    let r = api
        .send(
            api.request(Method::PATCH, &path)
                .header("Content-Type", "application/merge-patch+json")
                .body(json!({"mrn": "M-7"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mrn"], "M-7");
    let r = api
        .send(
            api.request(Method::PATCH, &path)
                .header("Content-Type", "application/json; charset=utf-8")
                .body(json!({"mrn": "M-8"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.get(&path).await.body["mrn"], "M-8");
}

async fn a_patch_bumps_the_version_and_the_etag(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let path = format!("/v1/patients/{id}");
    for v in 2..=4 {
        let r = api.patch(&path, json!({"mrn": format!("M-{v}")})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["version"], v);
        let etag = format!("\"{v}\"");
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        let read = api.get(&path).await;
        assert_eq!(read.header("etag"), Some(etag.as_str()));
        assert_eq!(read.body["version"], v);
        assert_ne!(read.body["updatedAt"], Value::Null);
    }
}

async fn if_match_accepts_bare_quoted_and_weak_versions(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let path = format!("/v1/patients/{id}");
    for (i, header) in ["1", "\"2\"", "W/\"3\""].into_iter().enumerate() {
        let r = patch_with(&api, &path, header, json!({"mrn": format!("M{i}")})).await;
        assert_eq!(r.status, 200, "If-Match {header}: {}", r.body);
        assert_eq!(r.body["version"], i as i64 + 2);
    }
    let r = delete_with(&api, &path, "W/\"4\"").await;
    assert_eq!(r.status, 204, "{}", r.body);
}

async fn a_patch_with_a_stale_if_match_is_412_and_changes_nothing(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let path = format!("/v1/patients/{id}");
    api.patch(&path, json!({"mrn": "M1"})).await; // version 2
    let before = api.get(&path).await;
    let seq = last_sequence(&api).await;
    for stale in ["1", "\"1\"", "W/\"1\"", "3"] {
        let r = patch_with(&api, &path, stale, json!({"mrn": "STALE"})).await;
        assert_error(&r, 412, "precondition_failed", Some("If-Match"));
    }
    assert_eq!(api.get(&path).await.body, before.body);
    assert!(api.events_after(seq).await.is_empty());
    let r = patch_with(&api, &path, "2", json!({"mrn": "FRESH"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn a_patch_that_changes_nothing_keeps_the_version_and_writes_no_event(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    let r = api.post("/v1/patients", full_body("patients", &w)).await;
    let path = format!("/v1/patients/{}", r.id());
    let seq = last_sequence(&api).await;
    for noop in [
        json!({}),
        json!({"firstName": "Ada"}),
        json!({"address": {"city": "London"}}),
        json!({"nickname": null}),
        json!({"id": r.id(), "version": 1}),
    ] {
        let p = api.patch(&path, noop.clone()).await;
        assert_eq!(p.status, 200, "{noop}: {}", p.body);
        assert_eq!(p.body, r.body, "{noop}");
        assert_eq!(p.header("etag"), Some("\"1\""));
    }
    assert!(api.events_after(seq).await.is_empty());
    assert_eq!(api.get(&path).await.body, r.body);
}

async fn a_patch_of_a_missing_record_is_404(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let r = api
        .patch("/v1/patients/pat_doesnotexist", json!({"mrn": "x"}))
        .await;
    assert_error(&r, 404, "not_found", None);
    // A patient's id under another collection is not found either.
    let r = api
        .patch(&format!("/v1/practitioners/{patient}"), json!({"npi": "1"}))
        .await;
    assert_error(&r, 404, "not_found", None);
    let r = api.get(&format!("/v1/notes/{patient}")).await;
    assert_error(&r, 404, "not_found", None);
    let r = api.delete(&format!("/v1/labs/{patient}")).await;
    assert_error(&r, 404, "not_found", None);
    assert_eq!(
        api.get(&format!("/v1/patients/{patient}")).await.status,
        200
    );
}

async fn a_deleted_record_is_gone_from_reads_and_lists(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let w = world(&api).await;
    for (collection, _, prefix) in COLLECTIONS {
        if matches!(
            collection,
            "patients" | "practitioners" | "appointments" | "encounters"
        ) {
            continue; // referenced by the world; see below
        }
        let id = api.create(collection, minimal_body(collection, &w)).await;
        let path = format!("/v1/{collection}/{id}");
        let seq = last_sequence(&api).await;
        let r = api.delete(&path).await;
        assert_eq!(r.status, 204, "{collection}: {}", r.body);
        assert_eq!(r.body, Value::Null);
        assert_error(&api.get(&path).await, 404, "not_found", None);
        assert!(!ids(&api.get(&format!("/v1/{collection}")).await).contains(&id));
        let events = api.events_after(seq).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["type"], format!("{prefix}.deleted"));
        // Deleting again, or patching, is 404.
        assert_error(&api.delete(&path).await, 404, "not_found", None);
        assert_error(
            &api.patch(&path, json!({"status": null})).await,
            404,
            "not_found",
            None,
        );
    }
    // Unreferenced records of the other four types delete too.
    for (collection, body) in [
        ("encounters", json!({"patientId": w.patient})),
        (
            "appointments",
            json!({"patientId": w.patient, "start": "2026-12-01T09:00:00Z"}),
        ),
        ("practitioners", json!({"firstName": "A", "lastName": "B"})),
        ("patients", json!({"firstName": "A", "lastName": "B"})),
    ] {
        let id = api.create(collection, body).await;
        let path = format!("/v1/{collection}/{id}");
        assert_eq!(api.delete(&path).await.status, 204, "{collection}");
        assert_eq!(api.get(&path).await.status, 404);
    }
}

async fn deleting_a_patient_with_appointments_is_409_naming_appointments(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let p = api.patient().await;
    let appt = api
        .create(
            "appointments",
            json!({"patientId": p, "start": "2026-12-01T09:00:00Z"}),
        )
        .await;
    let path = format!("/v1/patients/{p}");
    let seq = last_sequence(&api).await;
    let r = api.delete(&path).await;
    assert_error(&r, 409, "conflict", None);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("appointments"), "{message}");
    assert_eq!(api.get(&path).await.status, 200);
    assert!(api.events_after(seq).await.is_empty());
    // Every referencing type is named.
    api.create("notes", json!({"patientId": p, "text": "x"}))
        .await;
    let r = api.delete(&path).await;
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("appointments") && message.contains("notes"),
        "{message}"
    );
    // A practitioner referenced by an appointment is protected too.
    let w = world(&api).await;
    let r = api
        .delete(&format!("/v1/practitioners/{}", w.practitioner))
        .await;
    assert_error(&r, 409, "conflict", None);
    // Once the references are gone, the delete succeeds.
    let p2 = api.patient().await;
    let a2 = api
        .create(
            "appointments",
            json!({"patientId": p2, "start": "2026-12-01T09:00:00Z"}),
        )
        .await;
    assert_eq!(
        api.delete(&format!("/v1/appointments/{a2}")).await.status,
        204
    );
    assert_eq!(api.delete(&format!("/v1/patients/{p2}")).await.status, 204);
    let _ = appt;
}

async fn a_delete_with_a_stale_if_match_is_412_and_keeps_the_record(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let path = format!("/v1/patients/{id}");
    api.patch(&path, json!({"mrn": "M1"})).await; // version 2
    let seq = last_sequence(&api).await;
    for stale in ["1", "\"1\"", "W/\"3\""] {
        let r = delete_with(&api, &path, stale).await;
        assert_error(&r, 412, "precondition_failed", Some("If-Match"));
    }
    let read = api.get(&path).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["version"], 2);
    assert!(api.events_after(seq).await.is_empty());
}

async fn a_delete_with_a_current_if_match_deletes(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let path = format!("/v1/patients/{id}");
    let r = delete_with(&api, &path, "\"1\"").await;
    assert_eq!(r.status, 204, "{}", r.body);
    let events = api.events_after(0).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "patient.deleted");
    assert_eq!(last["resource"]["version"], 2);
    assert_eq!(last["data"]["id"], id.as_str());
}

async fn a_new_patient_on_an_appointment_brings_their_phone(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let first = api.patient().await;
    let second = api
        .create(
            "patients",
            json!({"firstName": "Grace", "lastName": "Hopper", "phone": "+15559990000"}),
        )
        .await;
    let appt = api
        .create(
            "appointments",
            json!({"patientId": first, "start": "2026-12-01T09:00:00Z"}),
        )
        .await;
    let r = api
        .patch(
            &format!("/v1/appointments/{appt}"),
            json!({"patientId": second}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["patientPhone"], "+15559990000");
    // A phone given in the same patch wins.
    let r = api
        .patch(
            &format!("/v1/appointments/{appt}"),
            json!({"patientId": first, "patientPhone": "+15550001111"}),
        )
        .await;
    assert_eq!(r.body["patientPhone"], "+15550001111");
}

async fn an_empty_patch_does_not_pick_up_a_phone_the_patient_gained(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api
        .create("patients", json!({"firstName": "No", "lastName": "Phone"}))
        .await;
    let appt = api
        .create(
            "appointments",
            json!({"patientId": patient, "start": "2026-12-01T09:00:00Z"}),
        )
        .await;
    api.patch(
        &format!("/v1/patients/{patient}"),
        json!({"phone": "+15557770000"}),
    )
    .await;
    let before = last_sequence(&api).await;
    let r = api
        .patch(&format!("/v1/appointments/{appt}"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 1);
    assert!(r.body.get("patientPhone").is_none());
    assert_eq!(
        last_sequence(&api).await,
        before,
        "no event for a patch that changes nothing"
    );
}
