//! The event log (docs/design.md §3.2, §9): one event per change in the same
//! transaction, the envelope, `previous`, per-tenant gap-free sequences,
//! polling with filters and long poll, fetching one, the list of types, and
//! retention.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use eventflow_testkit::{Api, Backend, Options, Reply, TestServer, backend_tests};
use serde_json::{Value, json};

use crate::helpers::{all_events, assert_timestamp, principal, sequences, woken_by_commits_only};

backend_tests!(
    a_type_filter_of_more_than_50_patterns_is_422,
    every_change_of_every_record_type_writes_one_event_with_the_envelope,
    previous_holds_the_prior_value_of_each_changed_field_and_null_for_new_ones,
    a_patch_that_changes_nothing_writes_no_event,
    sequences_are_gap_free_per_tenant_and_independent_between_tenants,
    after_limit_and_next_after_page_through_the_log,
    limit_defaults_to_100_and_accepts_at_most_1000,
    type_filters_take_exact_names_and_globs,
    resource_type_filters_by_record_type,
    bad_and_unknown_query_parameters_are_rejected,
    an_event_can_be_fetched_by_id_and_only_by_its_tenant,
    event_types_lists_every_type_and_topic_with_its_kind_and_a_description,
    a_long_poll_returns_as_soon_as_a_write_commits,
    a_long_poll_ignores_commits_that_do_not_match_its_filter,
    a_long_poll_with_nothing_new_returns_empty_after_the_wait,
    a_long_poll_waits_at_most_60_seconds,
    a_failing_write_leaves_neither_record_nor_event,
    a_failing_batch_leaves_nothing_and_takes_no_sequence,
    retention_deletes_events_older_than_the_retention_period,
    the_event_api_needs_an_api_key,
);

fn types_of(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// One record of each type: (event prefix, collection, create body, patch,
/// the `previous` that patch must produce).
fn one_of_each(patient: &str) -> Vec<(&'static str, &'static str, Value, Value, Value)> {
    vec![
        (
            "practitioner",
            "practitioners",
            json!({"firstName": "Grace", "lastName": "Hopper"}),
            json!({"specialty": "cardiology"}),
            json!({"specialty": null}),
        ),
        (
            "appointment",
            "appointments",
            json!({"patientId": patient, "start": "2026-12-01T10:00:00Z"}),
            json!({"status": "cancelled"}),
            json!({"status": "booked"}),
        ),
        (
            "encounter",
            "encounters",
            json!({"patientId": patient}),
            json!({"status": "finished"}),
            json!({"status": "in-progress"}),
        ),
        (
            "observation",
            "observations",
            json!({"patientId": patient, "code": "8867-4", "value": 72}),
            json!({"value": 75}),
            json!({"value": 72}),
        ),
        (
            "prescription",
            "prescriptions",
            json!({"patientId": patient, "medication": "amoxicillin"}),
            json!({"dosage": "500 mg"}),
            json!({"dosage": null}),
        ),
        (
            "consent",
            "consents",
            json!({"patientId": patient}),
            json!({"status": "inactive"}),
            json!({"status": "active"}),
        ),
        (
            "intake",
            "intakes",
            json!({"patientId": patient}),
            json!({"status": "completed"}),
            json!({"status": "requested"}),
        ),
        (
            "note",
            "notes",
            json!({"patientId": patient, "text": "first"}),
            json!({"text": "second"}),
            json!({"text": "first"}),
        ),
        (
            "lab",
            "labs",
            json!({"patientId": patient, "code": "CBC"}),
            json!({"status": "amended"}),
            json!({"status": "final"}),
        ),
    ]
}

async fn every_change_of_every_record_type_writes_one_event_with_the_envelope(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let tenant = principal(&server).await.tenant_id;

    // (prefix, collection, id, created body, patch, patched body, previous)
    let mut records = Vec::new();
    let p = api
        .post(
            "/v1/patients",
            json!({"firstName": "Ada", "lastName": "Lovelace", "phone": "+15551234567"}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.body);
    let patient = p.id();
    records.push((
        "patient",
        "patients",
        patient.clone(),
        p.body.clone(),
        json!({"mrn": "MRN-1", "firstName": "Augusta"}),
        json!({"mrn": null, "firstName": "Ada"}),
    ));
    for (prefix, collection, body, patch, previous) in one_of_each(&patient) {
        let r = api.post(&format!("/v1/{collection}"), body).await;
        assert_eq!(r.status, 201, "create {collection}: {}", r.body);
        records.push((prefix, collection, r.id(), r.body, patch, previous));
    }
    let mut patched = Vec::new();
    for (_, collection, id, _, patch, _) in &records {
        let r = api
            .patch(&format!("/v1/{collection}/{id}"), patch.clone())
            .await;
        assert_eq!(r.status, 200, "patch {collection}: {}", r.body);
        assert_eq!(r.body["version"], 2);
        patched.push(r.body);
    }
    // Dependents first, the patient last.
    for (_, collection, id, ..) in records.iter().rev() {
        let r = api.delete(&format!("/v1/{collection}/{id}")).await;
        assert_eq!(r.status, 204, "delete {collection}: {}", r.body);
    }

    let events = all_events(&api, 0).await;
    assert_eq!(events.len(), 30, "one event per change: {events:#?}");
    assert_eq!(sequences(&events), (1..=30).collect::<Vec<_>>());
    let all_types: BTreeSet<String> = types_of(&events).iter().map(|s| s.to_string()).collect();
    assert_eq!(all_types.len(), 30, "the 30 types each fired once");
    let listed = api.get("/v1/event-types").await;
    let listed: BTreeSet<String> = listed.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|t| t["kind"] == "event")
        .map(|t| t["type"].as_str().expect("type").to_string())
        .collect();
    let record_types: BTreeSet<String> = listed.into_iter().collect();
    assert_eq!(
        all_types, record_types,
        "the types fired are the record types listed"
    );

    let mut ids = HashSet::new();
    for e in &events {
        let id = e["id"].as_str().expect("id");
        assert!(id.starts_with("evt_"), "{id}");
        assert!(ids.insert(id.to_string()), "event ids are unique");
        assert_timestamp(e["createdAt"].as_str().expect("createdAt"));
        assert_eq!(e["tenantId"], tenant.as_str());
        assert_eq!(
            keys(&e["resource"]),
            BTreeSet::from(["type", "id", "version"])
        );
        let ty = e["type"].as_str().unwrap();
        let mut want = BTreeSet::from([
            "id",
            "type",
            "sequence",
            "createdAt",
            "tenantId",
            "resource",
            "data",
            "topics",
        ]);
        if ty.ends_with(".updated") {
            want.extend(["previous", "changedFields"]);
        }
        // Whose data it is: every record but a practitioner holds a patient's.
        if !ty.starts_with("practitioner.") {
            want.insert("patientId");
        }
        assert_eq!(keys(e), want, "envelope of {ty}");
    }

    let n = records.len();
    for (i, (prefix, _, id, created, _, previous)) in records.iter().enumerate() {
        let c = &events[i];
        assert_eq!(c["type"], format!("{prefix}.created"));
        assert_eq!(
            c["resource"],
            json!({"type": prefix, "id": id, "version": 1})
        );
        assert_eq!(&c["data"], created, "created: data is the record");

        let u = &events[n + i];
        assert_eq!(u["type"], format!("{prefix}.updated"));
        assert_eq!(
            u["resource"],
            json!({"type": prefix, "id": id, "version": 2})
        );
        assert_eq!(u["data"], patched[i], "updated: data is the record after");
        assert_eq!(&u["previous"], previous, "updated: previous of {prefix}");

        // Deleted in reverse order of creation.
        let d = &events[3 * n - 1 - i];
        assert_eq!(d["type"], format!("{prefix}.deleted"));
        assert_eq!(
            d["resource"],
            json!({"type": prefix, "id": id, "version": 3}),
            "a deletion takes the last version plus one"
        );
        assert_eq!(d["data"], patched[i], "deleted: data is the last state");
    }
}

async fn previous_holds_the_prior_value_of_each_changed_field_and_null_for_new_ones(
    backend: Backend,
) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api
        .create(
            "patients",
            json!({
                "firstName": "Ada", "lastName": "Lovelace", "phone": "+15551234567",
                "address": {"city": "London", "country": "GB"}
            }),
        )
        .await;
    let r = api
        .patch(
            &format!("/v1/patients/{id}"),
            json!({
                "firstName": "Augusta",          // changed
                "lastName": "Lovelace",          // same value: not a change
                "email": "ada@example.com",      // had none
                "phone": null,                   // removed
                "address": {"city": "Oxford"}    // nested change
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("phone").is_none(), "null removes: {}", r.body);
    assert_eq!(
        r.body["address"],
        json!({"city": "Oxford", "country": "GB"})
    );
    let events = all_events(&api, 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["previous"],
        json!({
            "firstName": "Ada",
            "email": null,
            "phone": "+15551234567",
            "address": {"city": "London", "country": "GB"}
        }),
        "top-level fields only, prior values, null when there was none; never server fields"
    );
    assert_eq!(events[0]["data"], r.body);

    // A second update's previous is relative to the first update.
    let r = api
        .patch(
            &format!("/v1/patients/{id}"),
            json!({"email": "a@example.org"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let events = all_events(&api, 2).await;
    assert_eq!(events[0]["previous"], json!({"email": "ada@example.com"}));
    assert_eq!(events[0]["resource"]["version"], 3);
}

async fn a_patch_that_changes_nothing_writes_no_event(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let before = api.get(&format!("/v1/patients/{id}")).await;
    for patch in [
        json!({}),
        json!({"firstName": "Ada"}),
        json!({"firstName": "Ada", "lastName": "Lovelace", "phone": "+15551234567"}),
        json!({"email": null}),
        json!({"version": 1}),
    ] {
        let r = api
            .patch(&format!("/v1/patients/{id}"), patch.clone())
            .await;
        assert_eq!(r.status, 200, "{patch}: {}", r.body);
        assert_eq!(r.body, before.body, "{patch}: the record is unchanged");
        assert_eq!(r.header("etag"), Some("\"1\""));
    }
    // Through a batch too.
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [{"method": "PATCH", "path": format!("/v1/patients/{id}"), "body": {"firstName": "Ada"}}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let events = all_events(&api, 0).await;
    assert_eq!(
        types_of(&events),
        ["patient.created"],
        "no event for no-ops"
    );

    // A real change afterwards takes the next sequence and version.
    let r = api
        .patch(
            &format!("/v1/patients/{id}"),
            json!({"firstName": "Augusta"}),
        )
        .await;
    assert_eq!(r.body["version"], 2);
    let events = all_events(&api, 0).await;
    assert_eq!(sequences(&events), [1, 2]);
    assert_eq!(events[1]["resource"]["version"], 2);
}

async fn sequences_are_gap_free_per_tenant_and_independent_between_tenants(backend: Backend) {
    let server = backend.spawn().await;
    let a = server.api();
    let b = server.new_tenant("b").await;
    for i in 0..5 {
        a.patient().await;
        if i % 2 == 0 {
            b.patient().await;
        }
    }
    let ea = all_events(&a, 0).await;
    let eb = all_events(&b, 0).await;
    assert_eq!(sequences(&ea), [1, 2, 3, 4, 5]);
    assert_eq!(sequences(&eb), [1, 2, 3]);
    let ta: HashSet<&str> = ea.iter().map(|e| e["tenantId"].as_str().unwrap()).collect();
    let tb: HashSet<&str> = eb.iter().map(|e| e["tenantId"].as_str().unwrap()).collect();
    assert_eq!(ta.len(), 1);
    assert_eq!(tb.len(), 1);
    assert_ne!(ta, tb, "each tenant sees only its own events");
}

async fn after_limit_and_next_after_page_through_the_log(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    for _ in 0..12 {
        api.patient().await;
    }
    let r = api.get("/v1/events").await;
    assert_eq!(r.status, 200);
    assert_eq!(keys(&r.body), BTreeSet::from(["data", "nextAfter"]));
    assert_eq!(
        sequences(r.body["data"].as_array().unwrap()),
        (1..=12).collect::<Vec<_>>(),
        "after defaults to 0"
    );
    assert_eq!(r.body["nextAfter"], 12);

    let r = api.get("/v1/events?after=5").await;
    assert_eq!(
        sequences(r.body["data"].as_array().unwrap()),
        (6..=12).collect::<Vec<_>>()
    );

    // Pages of 5: nextAfter is the last returned, and following it reads all.
    let mut after = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = api.get(&format!("/v1/events?after={after}&limit=5")).await;
        assert_eq!(r.status, 200);
        let data = r.body["data"].as_array().unwrap().clone();
        assert!(data.len() <= 5);
        if data.is_empty() {
            assert_eq!(r.body["nextAfter"], after, "nextAfter is the after given");
            break;
        }
        assert_eq!(r.body["nextAfter"], data.last().unwrap()["sequence"]);
        after = r.body["nextAfter"].as_i64().unwrap();
        seen.extend(sequences(&data));
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (1..=12).collect::<Vec<_>>());

    let r = api.get("/v1/events?after=1000").await;
    assert_eq!(r.body, json!({"data": [], "nextAfter": 1000}));
}

async fn limit_defaults_to_100_and_accepts_at_most_1000(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let ops: Vec<Value> = (0..150)
        .map(|i| json!({"method": "POST", "path": "/v1/patients", "body": {"firstName": format!("P{i}"), "lastName": "X"}}))
        .collect();
    let r = api.post("/v1/batch", json!({ "operations": ops })).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let r = api.get("/v1/events").await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 100);
    assert_eq!(r.body["nextAfter"], 100);
    let r = api.get("/v1/events?limit=1000").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 150);
    assert_eq!(r.body["nextAfter"], 150);
    let r = api.get("/v1/events?limit=1").await;
    assert_eq!(sequences(r.body["data"].as_array().unwrap()), [1]);
    for bad in ["1001", "0", "-1", "ten"] {
        let r = api.get(&format!("/v1/events?limit={bad}")).await;
        assert_eq!(r.status, 422, "limit={bad}: {}", r.body);
        assert_eq!(r.error_field(), Some("limit"));
        assert_eq!(r.body["error"]["type"], "validation_error");
    }
}

/// patient.created, appointment.created, encounter.created,
/// appointment.updated, encounter.updated, patient.updated,
/// appointment.deleted: sequences 1..=7.
async fn mixed_log(api: &Api) {
    let patient = api.patient().await;
    let appt = api
        .create(
            "appointments",
            json!({"patientId": patient, "start": "2026-12-01T10:00:00Z"}),
        )
        .await;
    let enc = api
        .create("encounters", json!({"patientId": patient}))
        .await;
    for (path, body) in [
        (
            format!("/v1/appointments/{appt}"),
            json!({"status": "arrived"}),
        ),
        (
            format!("/v1/encounters/{enc}"),
            json!({"status": "finished"}),
        ),
        (format!("/v1/patients/{patient}"), json!({"mrn": "M-1"})),
    ] {
        let r = api.patch(&path, body).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = api.delete(&format!("/v1/appointments/{appt}")).await;
    assert_eq!(r.status, 204);
}

async fn type_filters_take_exact_names_and_globs(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    mixed_log(&api).await;

    let cases: [(&str, &[i64]); 8] = [
        ("appointment.created", &[2]),
        ("appointment.*", &[2, 4, 7]),
        ("appointment.*,encounter.updated", &[2, 4, 5, 7]),
        ("encounter.updated,appointment.*", &[2, 4, 5, 7]),
        ("*.updated", &[]), // a glob is a prefix: `*` only at the end
        ("*", &[1, 2, 3, 4, 5, 6, 7]),
        ("patient.*,encounter.*", &[1, 3, 5, 6]),
        ("lab.created", &[]),
    ];
    for (types, want) in cases {
        let r = api.get(&format!("/v1/events?types={types}")).await;
        if types == "*.updated" {
            // Either refused as an invalid pattern or matching nothing.
            assert!(
                r.status == 422 || r.body["data"] == json!([]),
                "{types}: {}",
                r.body
            );
            continue;
        }
        assert_eq!(r.status, 200, "{types}: {}", r.body);
        let data = r.body["data"].as_array().unwrap();
        assert_eq!(sequences(data), want, "types={types}");
        let next = want.last().copied().unwrap_or(0);
        assert_eq!(r.body["nextAfter"], next, "types={types}");
    }
    // With after: only later matches.
    let r = api.get("/v1/events?types=appointment.*&after=2").await;
    assert_eq!(sequences(r.body["data"].as_array().unwrap()), [4, 7]);
    let r = api
        .get("/v1/events?types=appointment.*&after=2&limit=1")
        .await;
    assert_eq!(sequences(r.body["data"].as_array().unwrap()), [4]);
    assert_eq!(r.body["nextAfter"], 4);

    for bad in ["appointment", "appointment.c*d", "a*b.*"] {
        let r = api.get(&format!("/v1/events?types={bad}")).await;
        assert_eq!(r.status, 422, "types={bad}: {}", r.body);
        assert_eq!(r.error_field(), Some("types"));
    }
}

async fn resource_type_filters_by_record_type(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    mixed_log(&api).await;
    let r = api.get("/v1/events?resourceType=encounter").await;
    assert_eq!(r.status, 200);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(sequences(data), [3, 5]);
    assert!(data.iter().all(|e| e["resource"]["type"] == "encounter"));
    let r = api
        .get("/v1/events?resourceType=appointment&types=appointment.deleted")
        .await;
    assert_eq!(sequences(r.body["data"].as_array().unwrap()), [7]);
    let r = api
        .get("/v1/events?resourceType=patient&types=appointment.*")
        .await;
    assert_eq!(r.body["data"], json!([]), "both filters apply");
    let r = api.get("/v1/events?resourceType=lab").await;
    assert_eq!(r.body, json!({"data": [], "nextAfter": 0}));
    let r = api.get("/v1/events?resourceType=spaceship").await;
    assert_eq!(r.status, 422);
    assert_eq!(r.error_field(), Some("resourceType"));
    // One record's events.
    let enc = r#"/v1/events?resourceType=encounter"#;
    let first = api.get(enc).await.body["data"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api.get(&format!("/v1/events?resourceId={first}")).await;
    let data = r.body["data"].as_array().unwrap();
    assert!(!data.is_empty());
    assert!(data.iter().all(|e| e["resource"]["id"] == first.as_str()));
    let r = api.get("/v1/events?resourceId=not%20an%20id").await;
    assert_eq!(r.error_field(), Some("resourceId"));
}

async fn bad_and_unknown_query_parameters_are_rejected(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    api.patient().await;
    for (query, field) in [
        ("since=1", "since"),
        ("type=patient.created", "type"),
        ("after=-1", "after"),
        ("after=x", "after"),
        ("wait=soon", "wait"),
        ("wait=-1", "wait"),
    ] {
        let r = api.get(&format!("/v1/events?{query}")).await;
        assert_eq!(r.status, 422, "{query}: {}", r.body);
        assert_eq!(r.error_field(), Some(field), "{query}");
        assert_eq!(r.body["error"]["type"], "validation_error");
        assert!(r.body["error"]["message"].as_str().unwrap().contains(field));
    }
}

async fn an_event_can_be_fetched_by_id_and_only_by_its_tenant(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    api.patient().await;
    api.patient().await;
    let events = all_events(&api, 0).await;
    for e in &events {
        let r = api
            .get(&format!("/v1/events/{}", e["id"].as_str().unwrap()))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body, e, "the same envelope as the list");
    }
    let r = api.get("/v1/events/evt_0000000000000000000000000000").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["type"], "not_found");

    let other = server.new_tenant("other").await;
    let r = other
        .get(&format!("/v1/events/{}", events[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(r.status, 404, "another tenant's event is not found");
    assert_eq!(all_events(&other, 0).await, Vec::<Value>::new());
}

async fn event_types_lists_every_type_and_topic_with_its_kind_and_a_description(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let r = api.get("/v1/event-types").await;
    assert_eq!(r.status, 200);
    assert_eq!(keys(&r.body), BTreeSet::from(["data"]));
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 51, "30 record types, 18 topics, 3 operational");
    let mut want = BTreeSet::from([
        "endpoint.disabled".to_string(),
        "delivery.failed".to_string(),
        "delivery.recovered".to_string(),
    ]);
    for prefix in [
        "patient",
        "practitioner",
        "appointment",
        "encounter",
        "observation",
        "prescription",
        "consent",
        "intake",
        "note",
        "lab",
    ] {
        for action in ["created", "updated", "deleted"] {
            want.insert(format!("{prefix}.{action}"));
        }
    }
    let mut got = BTreeSet::new();
    let mut topics = BTreeSet::new();
    for t in data {
        assert_eq!(
            keys(t),
            BTreeSet::from(["type", "kind", "resourceType", "description"])
        );
        let d = t["description"].as_str().unwrap();
        assert!(!d.trim().is_empty() && !d.contains('\n'), "one line: {d:?}");
        let name = t["type"].as_str().unwrap().to_string();
        let resource = t["resourceType"].as_str().unwrap();
        assert!(name.starts_with(&format!("{resource}.")), "{t}");
        match t["kind"].as_str().unwrap() {
            "topic" => topics.insert(name),
            "event" => got.insert(name),
            "operational" => {
                assert!(["endpoint", "delivery"].contains(&resource), "{t}");
                got.insert(name)
            }
            other => panic!("kind {other}"),
        };
    }
    assert_eq!(got, want);
    let all_topics: BTreeSet<String> = eventflow_model::topics::TOPICS
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(topics, all_topics);
}

async fn a_long_poll_returns_as_soon_as_a_write_commits(backend: Backend) {
    let server = woken_by_commits_only(backend).await;
    let api = server.api();
    api.patient().await;
    let tenant = principal(&server).await.tenant_id;
    let poller = api.clone();
    let poll = tokio::spawn(async move { poller.get("/v1/events?after=1&wait=60").await });
    // The write lands while the poll waits.
    server.until_waiting(&tenant, 1).await;
    let id = api.patient().await;
    let r = answered_before_its_wait_ends(poll).await;
    assert_eq!(r.status, 200);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(sequences(data), [2]);
    assert_eq!(data[0]["resource"]["id"], id.as_str());
    assert_eq!(r.body["nextAfter"], 2);

    // When events are already there, wait does not wait.
    let poller = api.clone();
    let poll = tokio::spawn(async move { poller.get("/v1/events?after=0&wait=60").await });
    let r = answered_before_its_wait_ends(poll).await;
    assert_eq!(sequences(r.body["data"].as_array().unwrap()), [1, 2]);
}

/// The answer of a long poll of `wait=60`, which must come before those 60
/// seconds are over (the 30 s bound is a hang guard, far from either).
async fn answered_before_its_wait_ends(poll: tokio::task::JoinHandle<Reply>) -> Reply {
    tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .expect("the long poll answered before its 60 s wait ended")
        .expect("poll")
}

async fn a_long_poll_ignores_commits_that_do_not_match_its_filter(backend: Backend) {
    let server = woken_by_commits_only(backend).await;
    let api = server.api();
    let patient = api.patient().await;
    let tenant = principal(&server).await.tenant_id;
    let poller = api.clone();
    let poll = tokio::spawn(async move {
        poller
            .get("/v1/events?after=1&wait=60&types=encounter.*")
            .await
    });
    server.until_waiting(&tenant, 1).await;
    api.patient().await; // does not match: the poll goes on waiting
    let enc = api
        .create("encounters", json!({"patientId": patient}))
        .await;
    let r = answered_before_its_wait_ends(poll).await;
    assert_eq!(r.status, 200);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(types_of(data), ["encounter.created"]);
    assert_eq!(data[0]["resource"]["id"], enc.as_str());
    assert_eq!(r.body["nextAfter"], 3);
}

async fn a_long_poll_with_nothing_new_returns_empty_after_the_wait(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    api.patient().await;
    let start = Instant::now();
    // A hang guard only: the poll ends by itself when its wait is over.
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        api.get("/v1/events?after=1&wait=1"),
    )
    .await
    .expect("the long poll ended after its wait");
    let elapsed = start.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"data": [], "nextAfter": 1}));
    assert!(
        elapsed >= Duration::from_millis(900),
        "waited {elapsed:?} for wait=1"
    );
    // Another tenant's writes do not end the wait early with nothing.
    let other = server.new_tenant("other").await;
    let tenant = principal(&server).await.tenant_id;
    let poller = api.clone();
    let poll = tokio::spawn(async move {
        let start = Instant::now();
        let r = poller.get("/v1/events?after=1&wait=1").await;
        (r, start.elapsed())
    });
    server.until_waiting(&tenant, 1).await;
    other.patient().await;
    let (r, elapsed) = poll.await.expect("poll");
    assert_eq!(r.body, json!({"data": [], "nextAfter": 1}));
    assert!(elapsed >= Duration::from_millis(900));
}

async fn a_long_poll_waits_at_most_60_seconds(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    api.patient().await;
    for wait in ["61", "3600"] {
        let r = api.get(&format!("/v1/events?wait={wait}")).await;
        assert_eq!(r.status, 422, "wait={wait}");
        assert_eq!(r.error_field(), Some("wait"));
    }
    // 60 itself is accepted (and returns at once: there is an event).
    let r = api.get("/v1/events?wait=60").await;
    assert_eq!(r.status, 200);
    assert_eq!(sequences(r.body["data"].as_array().unwrap()), [1]);
    let r = api.get("/v1/events?wait=0&after=1").await;
    assert_eq!(r.body, json!({"data": [], "nextAfter": 1}));
}

async fn a_failing_write_leaves_neither_record_nor_event(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await; // sequence 1
    let appt = api
        .create(
            "appointments",
            json!({"patientId": patient, "start": "2026-12-01T10:00:00Z"}),
        )
        .await; // sequence 2

    // A create naming a record that does not exist.
    let r = api
        .post(
            "/v1/appointments",
            json!({"patientId": "pat_0000000000000000000000000000", "start": "2026-12-01T10:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.error_field(), Some("patientId"));
    // A create naming a record of another type.
    let r = api.post("/v1/encounters", json!({"patientId": appt})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    // An invalid patch.
    let r = api
        .patch(
            &format!("/v1/patients/{patient}"),
            json!({"sex": "sometimes"}),
        )
        .await;
    assert_eq!(r.status, 422);
    // A patch whose If-Match is stale.
    let r = api
        .send(
            api.request(reqwest::Method::PATCH, &format!("/v1/patients/{patient}"))
                .header("if-match", "\"7\"")
                .json(&json!({"firstName": "Augusta"})),
        )
        .await;
    assert_eq!(r.status, 412);
    // A delete of a record others reference.
    let r = api.delete(&format!("/v1/patients/{patient}")).await;
    assert_eq!(r.status, 409, "{}", r.body);

    let listed = api.get("/v1/appointments").await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    let listed = api.get("/v1/encounters").await;
    assert_eq!(listed.body["data"], json!([]));
    let p = api.get(&format!("/v1/patients/{patient}")).await;
    assert_eq!(p.status, 200);
    assert_eq!(p.body["version"], 1);
    assert_eq!(p.body["firstName"], "Ada");
    assert_eq!(
        types_of(&all_events(&api, 0).await),
        ["patient.created", "appointment.created"]
    );

    // The failures took no sequence number.
    api.patient().await;
    assert_eq!(sequences(&all_events(&api, 0).await), [1, 2, 3]);
}

async fn a_failing_batch_leaves_nothing_and_takes_no_sequence(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await; // sequence 1
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [
                {"method": "POST", "path": "/v1/patients", "body": {"firstName": "B", "lastName": "One"}},
                {"method": "PATCH", "path": format!("/v1/patients/{patient}"), "body": {"mrn": "M-9"}},
                {"method": "POST", "path": "/v1/encounters", "body": {"patientId": patient}},
                {"method": "POST", "path": "/v1/appointments", "body": {"patientId": patient, "start": "not a time"}}
            ]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["index"], 3);

    // The last operation fails in the store (a missing record), not in parsing.
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [
                {"method": "POST", "path": "/v1/patients", "body": {"firstName": "C", "lastName": "Two"}},
                {"method": "DELETE", "path": "/v1/notes/note_0000000000000000000000000000"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body["error"]["index"], 1);

    let patients = api.get("/v1/patients").await;
    assert_eq!(patients.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.get(&format!("/v1/patients/{patient}")).await.body["version"],
        1
    );
    assert_eq!(api.get("/v1/encounters").await.body["data"], json!([]));
    assert_eq!(sequences(&all_events(&api, 0).await), [1]);

    // A batch that succeeds writes one event per change, in operation order,
    // with consecutive sequences.
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [
                {"method": "POST", "path": "/v1/encounters", "body": {"patientId": patient}},
                {"method": "PATCH", "path": format!("/v1/patients/{patient}"), "body": {"mrn": "M-9"}}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let events = all_events(&api, 0).await;
    assert_eq!(sequences(&events), [1, 2, 3]);
    assert_eq!(
        types_of(&events),
        ["patient.created", "encounter.created", "patient.updated"]
    );
}

async fn retention_deletes_events_older_than_the_retention_period(backend: Backend) {
    let start: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let (server, clock) = backend.spawn_with_clock(start).await;
    let api = server.api();
    let days = i64::from(server.state.config.event_retention_days);
    assert_eq!(days, 30, "the default retention");

    let old = [api.patient().await, api.patient().await];
    let old_events = all_events(&api, 0).await;
    assert_eq!(
        old_events[0]["createdAt"], "2026-01-01T00:00:00.000Z",
        "events take their time from the injected clock"
    );
    clock.advance(jiff::SignedDuration::from_hours(24 * 20));
    let newer = api.patient().await;
    clock.advance(jiff::SignedDuration::from_hours(24 * 11));

    // What the server's hourly retention task does.
    let purged = eventflow_server::retention_pass(&server.state)
        .await
        .expect("purge");
    assert_eq!(purged.events, 2);

    let events = all_events(&api, 0).await;
    assert_eq!(sequences(&events), [3]);
    assert_eq!(events[0]["resource"]["id"], newer.as_str());
    let r = api
        .get(&format!(
            "/v1/events/{}",
            old_events[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status, 404, "a purged event is gone");
    // Retention removes events, not records.
    for id in &old {
        assert_eq!(api.get(&format!("/v1/patients/{id}")).await.status, 200);
    }
    // Sequences are never reused after a purge.
    api.patient().await;
    assert_eq!(sequences(&all_events(&api, 0).await), [3, 4]);
    // Purging again at the same cutoff removes nothing more.
    let again = eventflow_server::retention_pass(&server.state)
        .await
        .expect("purge");
    assert_eq!(again.events, 0);
}

/// The retention task itself runs at start (then hourly): a server that
/// starts 31 days after events were written deletes them. SQLite only: the
/// restart reuses the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_task_purges_at_start() {
    let start: jiff::Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
    let (server, _clock) = TestServer::spawn_with_clock(start).await;
    let api = server.api();
    api.patient().await;
    let key = server.key.clone();
    let dir = server.stop().await;

    let later = start + jiff::SignedDuration::from_hours(24 * 31);
    let clock = std::sync::Arc::new(eventflow_store::ManualClock::new(later));
    let server = TestServer::spawn_in(
        dir,
        Options {
            clock: Some(clock),
            configure: None,
        },
    )
    .await;
    let mut api = server.api();
    api.key = Some(key);
    eventflow_testkit::wait_for(
        Duration::from_secs(10),
        "the retention task to delete the 31-day-old event",
        || {
            let api = api.clone();
            async move { all_events(&api, 0).await.is_empty().then_some(()) }
        },
    )
    .await;
    // Nothing recent is removed: a new event stays.
    api.patient().await;
    assert_eq!(sequences(&all_events(&api, 0).await), [2]);
}

async fn the_event_api_needs_an_api_key(backend: Backend) {
    let server = backend.spawn().await;
    server.api().patient().await;
    let anon = server.anonymous();
    for path in [
        "/v1/events",
        "/v1/events?wait=1",
        "/v1/events/evt_0000000000000000000000000000",
        "/v1/events/stream",
        "/v1/event-types",
    ] {
        // Bounded: a stream wrongly opened would never end.
        let r = tokio::time::timeout(Duration::from_secs(10), anon.get(path))
            .await
            .unwrap_or_else(|_| panic!("{path} answered without a key"));
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert_eq!(r.body["error"]["type"], "authentication_error");
    }
    let mut wrong = server.api();
    wrong.key = Some("efk_not-a-key".into());
    assert_eq!(wrong.get("/v1/events").await.status, 401);
}

async fn a_type_filter_of_more_than_50_patterns_is_422(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let many: Vec<String> = (0..51).map(|i| format!("t{i}.*")).collect();
    let r = api
        .get(&format!("/v1/events?types={}", many.join(",")))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["field"], "types");
    // Control characters never reach the database.
    let r = api.get("/v1/events?types=a%00.b").await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = api.get("/v1/events/stream?types=a%00.b").await;
    assert_eq!(r.status, 422, "{}", r.body);
}
