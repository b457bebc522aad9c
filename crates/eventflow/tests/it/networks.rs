//! Clinic networks (README, "Clinic networks"): an organisation and its member
//! clinics; an organisation key acting on one clinic with `Eventflow-Clinic`,
//! or reading the network's log without it; what a clinic's own key never
//! sees; and a clinic leaving.

use std::time::Duration;

use eventflow_testkit::{Api, Backend, Receiver, TestServer, backend_tests};
use serde_json::{Value, json};

use crate::helpers::{SseReader, all_events, assert_error};

backend_tests!(
    an_organisation_creates_clinics_and_acts_on_each_with_the_header,
    the_network_log_numbers_every_member_event_gap_free_in_commit_order,
    a_network_long_poll_and_stream_wake_for_a_member_write,
    clinic_keys_never_see_the_organisation_or_their_siblings,
    a_clinic_that_leaves_stops_reaching_the_network_from_its_next_write,
    an_organisation_endpoint_gets_every_member_event_with_one_gap_free_sequence,
    a_record_list_without_the_header_spans_the_network,
    an_organisation_has_at_most_its_limit_of_clinics,
    the_example_network_workflows_transfer_a_patient_and_alert_on_any_critical_result,
    a_clinic_that_forbids_full_payloads_is_reached_by_no_full_endpoint_of_its_network,
);

/// An organisation ("North network", its client and id) with two member
/// clinics, North A and North B (each its id and a client with its key).
async fn two_clinics(server: &TestServer) -> (Api, String, (String, Api), (String, Api)) {
    let (org, org_id) = server.new_organisation("North network").await;
    let a = clinic(&org, "North A").await;
    let b = clinic(&org, "North B").await;
    (org, org_id, a, b)
}

/// A member clinic made through the API: its id and a client with its own
/// first key.
async fn clinic(org: &Api, name: &str) -> (String, Api) {
    let r = org.post("/v1/clinics", json!({ "name": name })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.body["apiKey"].as_str().unwrap();
    assert!(key.starts_with("efk_"));
    (r.id(), org.with_key(key))
}

async fn an_organisation_creates_clinics_and_acts_on_each_with_the_header(backend: Backend) {
    let server = backend.spawn().await;
    let (org, org_id) = server.new_organisation("North network").await;
    assert!(org_id.starts_with("org_"), "{org_id}");
    assert_eq!(org.get("/v1/clinics").await.body, json!({"data": []}));
    let (a, a_key) = clinic(&org, "North A").await;
    let (b, _) = clinic(&org, "North B").await;
    let listed = org.get("/v1/clinics").await;
    assert_eq!(listed.status, 200);
    let ids: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str(), b.as_str()], "oldest member first");
    assert_eq!(listed.body["data"][0]["name"], "North A");
    assert!(listed.body["data"][0]["joinedAt"].is_string());

    // With the header, the organisation's key acts on that clinic.
    let patient = org.acting_on(&a).patient().await;
    let r = a_key.get(&format!("/v1/patients/{patient}")).await;
    assert_eq!(r.status, 200, "the patient is clinic A's: {}", r.body);
    let r = org
        .acting_on(&b)
        .get(&format!("/v1/patients/{patient}"))
        .await;
    assert_eq!(r.status, 404, "and not clinic B's");
    // Its audit entry names the organisation's key.
    let org_key = org.get("/v1/api-keys").await.body["data"][0]["id"].clone();
    let audit = a_key.get("/v1/audit-log").await;
    assert!(
        audit.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["resourceId"] == patient.as_str() && e["keyId"] == org_key),
        "{}",
        audit.body
    );

    // Without it, what acts on one clinic is refused, naming the header.
    for r in [
        org.post("/v1/patients", json!({"firstName": "A", "lastName": "B"}))
            .await,
        org.get(&format!("/v1/patients/{patient}")).await,
    ] {
        assert_error(&r, 422, "validation_error", Some("Eventflow-Clinic"));
    }

    // Bad input, and a name taken, change nothing.
    assert_error(
        &org.post("/v1/clinics", json!({"name": " "})).await,
        422,
        "validation_error",
        Some("name"),
    );
    assert_error(
        &org.post("/v1/clinics", json!({"name": "X", "city": "Oslo"}))
            .await,
        422,
        "validation_error",
        Some("city"),
    );
    assert_eq!(
        org.post("/v1/clinics", json!({"name": "North A"}))
            .await
            .status,
        409
    );
    assert_eq!(
        org.get("/v1/clinics").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Changing who belongs needs clinics:manage.
    let r = org
        .post(
            "/v1/api-keys",
            json!({"name": "reader", "scopes": ["events:read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let reader = org.with_key(r.body["key"].as_str().unwrap());
    assert_error(
        &reader.post("/v1/clinics", json!({"name": "North C"})).await,
        403,
        "forbidden",
        None,
    );
    assert_eq!(reader.get("/v1/clinics").await.status, 200);
}

async fn the_network_log_numbers_every_member_event_gap_free_in_commit_order(backend: Backend) {
    let server = backend.spawn().await;
    let (org, _, (a, a_key), (b, b_key)) = two_clinics(&server).await;
    let rx = Receiver::start().await;
    a_key.create_endpoint(json!({"url": rx.url("/a")})).await;
    for i in 0..3 {
        a_key.patient().await;
        b_key.patient().await;
        if i == 1 {
            org.acting_on(&b).patient().await;
        }
    }
    let network = all_events(&org, 0).await;
    assert_eq!(network.len(), 7);
    let numbers: Vec<i64> = network
        .iter()
        .map(|e| e["networkSequence"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=7).collect::<Vec<i64>>(), "gap-free, in order");
    let tenants: Vec<&str> = network
        .iter()
        .map(|e| e["tenantId"].as_str().unwrap())
        .collect();
    assert_eq!(
        tenants,
        [&a, &b, &a, &b, &b, &a, &b].map(String::as_str),
        "in commit order, each with its clinic"
    );
    // Each clinic's own sequence stays its own.
    let of_b: Vec<i64> = network
        .iter()
        .filter(|e| e["tenantId"] == b.as_str())
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(of_b, [1, 2, 3, 4]);
    // `after` counts in networkSequence there.
    let r = org.get("/v1/events?after=5").await;
    assert_eq!(
        r.body["data"][0]["networkSequence"], 6,
        "after=5 starts at 6"
    );
    assert_eq!(r.body["nextAfter"], 7);
    // One event, by id, from the network's log.
    let id = network[1]["id"].as_str().unwrap();
    let one = org.get(&format!("/v1/events/{id}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body, network[1]);
    // A member's events carry networkSequence everywhere: in its own log
    // and in its webhooks.
    let own = all_events(&a_key, 0).await;
    assert_eq!(own.len(), 3);
    assert!(own.iter().all(|e| e["networkSequence"].is_i64()), "{own:?}");
    let got = rx.wait_for(3, Duration::from_secs(20)).await;
    assert!(
        got.iter().all(|r| r.json()["networkSequence"].is_i64()),
        "webhooks carry networkSequence"
    );
}

async fn a_network_long_poll_and_stream_wake_for_a_member_write(backend: Backend) {
    let server = backend.spawn().await;
    let (org, org_id, (_, a_key), (_, b_key)) = two_clinics(&server).await;
    a_key.patient().await;
    let mut stream = SseReader::open(&org, "/v1/events/stream?after=0", None).await;
    let first = stream.next().await;
    assert_eq!(first.id, "1", "id: is the networkSequence");
    let poller = org.clone();
    let poll = tokio::spawn(async move { poller.get("/v1/events?after=1&wait=60").await });
    server.until_waiting(&org_id, 2).await;
    let id = b_key.patient().await;
    let r = tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .expect("the long poll answers")
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"][0]["data"]["id"], id.as_str());
    assert_eq!(r.body["nextAfter"], 2);
    let live = stream.next().await;
    assert_eq!(live.id, "2");
    assert_eq!(live.data["data"]["id"], id.as_str());
}

async fn clinic_keys_never_see_the_organisation_or_their_siblings(backend: Backend) {
    let server = backend.spawn().await;
    let (org, org_id, (a, a_key), (b, b_key)) = two_clinics(&server).await;
    let outsider = server.new_tenant("Elsewhere").await;
    let outsider_id = crate::helpers::principal_of(&server, &outsider)
        .await
        .tenant_id
        .to_string();
    let b_patient = b_key.patient().await;
    outsider.patient().await;

    // A clinic's key has no organisation and no sibling.
    assert_eq!(a_key.get("/v1/clinics").await.status, 404);
    assert_eq!(
        a_key
            .post("/v1/clinics", json!({"name": "Mine"}))
            .await
            .status,
        404
    );
    let r = a_key
        .acting_on(&b)
        .get(&format!("/v1/patients/{b_patient}"))
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        a_key.acting_on(&a).get("/v1/patients").await.status,
        200,
        "naming itself is allowed"
    );
    assert_eq!(
        a_key.acting_on(&org_id).get("/v1/patients").await.status,
        404
    );
    assert!(all_events(&a_key, 0).await.is_empty(), "nothing of B's");
    // The organisation cannot act on a clinic that is not its member.
    for other in [outsider_id.as_str(), "ten_nope", "nonsense", &org_id] {
        let r = org.acting_on(other).get("/v1/patients").await;
        assert_error(&r, 404, "not_found", None);
    }
    // Its network holds its members' events only.
    let network = all_events(&org, 0).await;
    assert_eq!(network.len(), 1);
    assert_eq!(network[0]["tenantId"], b.as_str());
}

async fn a_clinic_that_leaves_stops_reaching_the_network_from_its_next_write(backend: Backend) {
    let server = backend.spawn().await;
    let (org, _) = server.new_organisation("North network").await;
    let (a, a_key) = clinic(&org, "North A").await;
    let before = a_key.patient().await;
    // A stream the organisation opened on the clinic ends with the
    // membership.
    let mut stream = SseReader::open(&org.acting_on(&a), "/v1/events/stream?after=1", None).await;
    assert_eq!(org.delete(&format!("/v1/clinics/{a}")).await.status, 204);
    let after = a_key.patient().await;
    assert!(
        stream.ends_within(Duration::from_secs(30)).await,
        "the stream on a former member ends"
    );
    let network = all_events(&org, 0).await;
    let in_network: Vec<&Value> = network.iter().map(|e| &e["data"]["id"]).collect();
    assert_eq!(in_network, [&json!(before)], "the earlier event stays");
    let own = all_events(&a_key, 0).await;
    assert_eq!(own.len(), 2, "the clinic and its data stay");
    assert!(own[1].get("networkSequence").is_none(), "{}", own[1]);
    assert_eq!(own[1]["data"]["id"], after.as_str());
    // No longer a member: the organisation cannot act on it.
    assert_eq!(org.acting_on(&a).get("/v1/patients").await.status, 404);
    assert_eq!(org.get("/v1/clinics").await.body, json!({"data": []}));
    assert_error(
        &org.delete(&format!("/v1/clinics/{a}")).await,
        404,
        "not_found",
        None,
    );
}

async fn an_organisation_endpoint_gets_every_member_event_with_one_gap_free_sequence(
    backend: Backend,
) {
    let server = backend.spawn().await;
    let (org, org_id, (a, a_key), (b, b_key)) = two_clinics(&server).await;
    let outsider = server.new_tenant("Elsewhere").await;
    let rx = Receiver::start().await;
    let ep = org
        .create_endpoint(json!({"url": rx.url("/network"), "eventTypes": ["patient.created"]}))
        .await;
    let ep = ep["id"].as_str().unwrap().to_string();
    // A clinic's key never sees the organisation's endpoint.
    assert_eq!(a_key.get(&format!("/v1/endpoints/{ep}")).await.status, 404);
    assert_eq!(a_key.get("/v1/endpoints").await.body, json!({"data": []}));
    let mut patients = Vec::new();
    for _ in 0..2 {
        patients.push(a_key.patient().await);
        patients.push(b_key.patient().await);
        outsider.patient().await;
    }
    let got = rx.wait_for(4, Duration::from_secs(20)).await;
    let mut by_sequence: Vec<(i64, Value)> = got
        .iter()
        .map(|r| {
            let n = r
                .header("x-eventflow-endpoint-sequence")
                .unwrap()
                .parse()
                .unwrap();
            (n, r.json())
        })
        .collect();
    by_sequence.sort_by_key(|(n, _)| *n);
    let numbers: Vec<i64> = by_sequence.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        [1, 2, 3, 4],
        "one gap-free endpointSequence across clinics"
    );
    let tenants: Vec<&str> = by_sequence
        .iter()
        .map(|(_, e)| e["tenantId"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, [&a, &b, &a, &b].map(String::as_str));
    let delivered: Vec<&str> = by_sequence
        .iter()
        .map(|(_, e)| e["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        delivered,
        patients.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(
        by_sequence
            .iter()
            .all(|(_, e)| e["networkSequence"].is_i64())
    );
    // The organisation sees its endpoint's deliveries; they count as
    // disclosures of the clinic whose patient they carry.
    let deliveries = org.get(&format!("/v1/endpoints/{ep}/deliveries")).await;
    assert_eq!(deliveries.body["data"].as_array().unwrap().len(), 4);
    let disclosed = crate::helpers::wait_for_disclosure(&a_key, &patients[0], &ep).await;
    assert_eq!(disclosed["eventType"], "patient.created");
    // Its URL may hold the organisation's credentials: the clinic sees where.
    assert_eq!(disclosed["organisationId"], org_id.as_str());
    assert_eq!(
        disclosed["origin"],
        rx.url("").trim_end_matches('/'),
        "{disclosed}"
    );
    let none = b_key
        .get(&format!("/v1/disclosures?patientId={}", patients[0]))
        .await;
    assert_eq!(none.body["data"], json!([]), "not another clinic's");
    // A clinic that leaves reaches the endpoint no more.
    assert_eq!(org.delete(&format!("/v1/clinics/{a}")).await.status, 204);
    a_key.patient().await;
    let last = b_key.patient().await;
    let got = rx.wait_for(5, Duration::from_secs(20)).await;
    let fifth = got
        .iter()
        .find(|r| r.header("x-eventflow-endpoint-sequence") == Some("5"))
        .unwrap();
    assert_eq!(fifth.json()["data"]["id"], last.as_str());
    // A replay goes through the network's log.
    let r = org
        .post(&format!("/v1/endpoints/{ep}/replay"), json!({"after": 0}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    // Each of the five network events goes again (at least once: one
    // whose first delivery was still being recorded may go twice), and
    // nothing else does.
    let mut want: Vec<String> = patients.clone();
    want.push(last);
    let again = eventflow_testkit::wait_for(Duration::from_secs(20), "the replay", || async {
        let got = rx.received();
        want.iter()
            .all(|p| {
                got.iter()
                    .filter(|r| r.json()["data"]["id"] == p.as_str())
                    .count()
                    >= 2
            })
            .then_some(got)
    })
    .await;
    for r in &again {
        let id = r.json()["data"]["id"].as_str().unwrap().to_string();
        assert!(want.contains(&id), "only the network's events: {id}");
    }
}

async fn a_record_list_without_the_header_spans_the_network(backend: Backend) {
    let server = backend.spawn().await;
    let (org, _, (a, a_key), (b, b_key)) = two_clinics(&server).await;
    let outsider = server.new_tenant("Elsewhere").await;
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push((a_key.patient().await, a.clone()));
        made.push((b_key.patient().await, b.clone()));
        outsider.patient().await;
    }
    // Paged across clinics, each record with its clinic.
    let mut seen = Vec::new();
    let mut path = "/v1/patients?limit=4".to_string();
    for _ in 0..3 {
        let r = org.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        for p in r.body["data"].as_array().unwrap() {
            seen.push((
                p["id"].as_str().unwrap().to_string(),
                p["tenantId"].as_str().unwrap().to_string(),
            ));
        }
        match r.body["nextCursor"].as_str() {
            Some(c) => path = format!("/v1/patients?limit=4&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen, made,
        "every member's patients, oldest first, none of the outsider's"
    );
    // Filters apply across the network: a patient found by MRN in
    // whichever clinic has it.
    let r = a_key
        .create(
            "patients",
            json!({"firstName": "Grace", "lastName": "Hopper", "mrn": "MRN-7"}),
        )
        .await;
    let r2 = org.get("/v1/patients?mrn=MRN-7").await;
    assert_eq!(r2.status, 200, "{}", r2.body);
    assert_eq!(r2.body["data"][0]["id"], r.as_str(), "{}", r2.body);
    assert_eq!(r2.body["data"][0]["tenantId"], a.as_str());
    assert_eq!(r2.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        b_key.get("/v1/patients?mrn=MRN-7").await.body["data"],
        json!([])
    );
    assert_error(
        &org.get("/v1/appointments?mrn=MRN-7").await,
        422,
        "validation_error",
        Some("mrn"),
    );
    assert_error(
        &org.get(&format!("/v1/patients?mrn={}", "M".repeat(201)))
            .await,
        422,
        "validation_error",
        Some("mrn"),
    );
    let p = &made[1].0;
    let r = org.get(&format!("/v1/appointments?patientId={p}")).await;
    assert_eq!(r.body["data"], json!([]));
    // A clinic's own list has no tenantId and only its records.
    let own = a_key.get("/v1/patients").await;
    let own = own.body["data"].as_array().unwrap();
    assert_eq!(own.len(), 4, "its three, and Grace");
    assert!(own.iter().all(|p| p.get("tenantId").is_none()));
    // The reads are in each clinic's audit log, naming the organisation key.
    let org_key = org.get("/v1/api-keys").await.body["data"][0]["id"].clone();
    let audit = b_key.get("/v1/audit-log").await;
    let read_by_org: Vec<&Value> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "read" && e["keyId"] == org_key)
        .collect();
    assert_eq!(read_by_org.len(), 3, "{}", audit.body);
}

/// The organisation's workflow from `examples/workflows/network/`, created
/// through the API with its key.
async fn network_workflow(org: &Api, file: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/workflows/network")
        .join(file);
    let yaml = std::fs::read_to_string(path).unwrap();
    let r = org
        .send(
            org.request(reqwest::Method::POST, "/v1/workflows")
                .header("content-type", "application/yaml")
                .body(yaml),
        )
        .await;
    assert!(r.status == 201 || r.status == 200, "{file}: {}", r.body);
    assert_eq!(r.body["status"], "loaded", "{file}: {}", r.body);
}

/// The organisation's runs of a workflow once `n` have ended.
async fn ended_runs(org: &Api, workflow: &str, n: usize) -> Vec<Value> {
    eventflow_testkit::wait_for(
        Duration::from_secs(30),
        &format!("{n} runs of {workflow}"),
        || async {
            let r = org
                .get(&format!("/v1/workflow-runs?workflow={workflow}"))
                .await;
            let ended: Vec<Value> = r.body["data"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r["status"] != "pending" && r["status"] != "running")
                .collect();
            (ended.len() >= n).then_some(ended)
        },
    )
    .await
}

async fn the_example_network_workflows_transfer_a_patient_and_alert_on_any_critical_result(
    backend: Backend,
) {
    let server = backend.spawn().await;
    let (org, _, (a, a_key), (b, b_key)) = two_clinics(&server).await;
    let outsider = server.new_tenant("Elsewhere").await;
    let outsider_id = crate::helpers::principal_of(&server, &outsider)
        .await
        .tenant_id
        .to_string();
    network_workflow(&org, "patient-transfer.yaml").await;
    network_workflow(&org, "critical-result-alert.yaml").await;
    // Clinic B's own endpoint for new patients, made just before: the
    // organisation's write into B reaches it like any of B's writes.
    let rx = Receiver::start().await;
    let ep = b_key
        .create_endpoint(json!({"url": rx.url("/b"), "eventTypes": ["patient.created"]}))
        .await;
    let ep_path = format!("/v1/endpoints/{}", ep["id"].as_str().unwrap());
    eventflow_testkit::wait_for(Duration::from_secs(20), "B's endpoint verified", || async {
        (b_key.get(&ep_path).await.body["verification"] == "verified").then_some(())
    })
    .await;

    // A patient of clinic A moves to clinic B.
    let ada = a_key
        .create(
            "patients",
            json!({"firstName": "Ada", "lastName": "Lovelace", "birthDate": "1815-12-10",
                   "mrn": "MRN-0042", "locationId": a}),
        )
        .await;
    let r = a_key
        .patch(&format!("/v1/patients/{ada}"), json!({"locationId": b}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let runs = ended_runs(&org, "patient-transfer", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{runs:?}");
    let in_b = b_key.get("/v1/patients").await;
    let moved = &in_b.body["data"][0];
    assert_eq!(
        (&moved["mrn"], &moved["firstName"], &moved["birthDate"]),
        (&json!("MRN-0042"), &json!("Ada"), &json!("1815-12-10")),
        "{}",
        in_b.body
    );
    let got = rx.wait_for(1, Duration::from_secs(20)).await;
    let delivered = got[0].json();
    assert_eq!(delivered["type"], "patient.created");
    assert_eq!(delivered["data"]["id"], moved["id"], "{delivered}");
    // Both changes are in the network's log, each with its clinic.
    let network = all_events(&org, 0).await;
    let kinds: Vec<(String, String)> = network
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["tenantId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("patient.updated".into(), a.clone())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("patient.created".into(), b.clone())),
        "{kinds:?}"
    );
    // The clinic's own workflows do not see the organisation's.
    assert_eq!(
        a_key
            .get("/v1/workflow-runs?workflow=patient-transfer")
            .await
            .body["data"],
        json!([])
    );

    // A location outside the network fails the step, with the reason, and
    // writes nothing there.
    let r = a_key
        .patch(
            &format!("/v1/patients/{ada}"),
            json!({"locationId": outsider_id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let runs = ended_runs(&org, "patient-transfer", 2).await;
    let failed = runs.iter().find(|r| r["status"] == "failed").unwrap();
    assert!(
        failed.to_string().contains("not a member clinic"),
        "{failed}"
    );
    assert_eq!(outsider.get("/v1/patients").await.body["data"], json!([]));

    // Any member's critical result reaches the network's channel (here the
    // organisation's outbox: no Slack is configured).
    for (key, clinic) in [(&a_key, &a), (&b_key, &b)] {
        let p = key.patient().await;
        let r = key
            .post(
                "/v1/observations",
                json!({"patientId": p, "code": "2823-3", "value": 7.2, "unit": "mmol/L", "flag": "critical"}),
            )
            .await;
        assert_eq!(r.status, 201, "{clinic}: {}", r.body);
    }
    ended_runs(&org, "network-critical-alert", 2).await;
    let outbox = org.get("/v1/notifications").await;
    let texts: Vec<&str> = outbox.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["channel"] == "slack")
        .map(|n| n["body"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(texts.len(), 2, "{}", outbox.body);
    for clinic in [&a, &b] {
        assert!(
            texts.iter().any(|t| t.contains(clinic.as_str())),
            "{texts:?}"
        );
    }
}

async fn an_organisation_has_at_most_its_limit_of_clinics(backend: Backend) {
    let server = backend
        .spawn_with(eventflow_testkit::Options {
            clock: None,
            configure: Some(Box::new(|c| c.limits.clinics_per_organisation = 2)),
        })
        .await;
    let (org, _) = server.new_organisation("North network").await;
    let (a, _) = clinic(&org, "North A").await;
    clinic(&org, "North B").await;
    let r = org.post("/v1/clinics", json!({"name": "North C"})).await;
    assert_error(&r, 409, "conflict", None);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("clinics_per_organisation"),
        "{}",
        r.body
    );
    assert_eq!(
        org.get("/v1/clinics").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "nothing was made"
    );
    // A clinic that leaves makes room.
    assert_eq!(org.delete(&format!("/v1/clinics/{a}")).await.status, 204);
    clinic(&org, "North C").await;
}

async fn a_clinic_that_forbids_full_payloads_is_reached_by_no_full_endpoint_of_its_network(
    backend: Backend,
) {
    let server = backend.spawn().await;
    let (org, org_id, (a, a_key), _) = two_clinics(&server).await;
    let rx = Receiver::start().await;
    let full = org.create_endpoint(json!({"url": rx.url("/")})).await;
    let full = full["id"].as_str().unwrap().to_string();
    // Clinic A may not forbid full payloads while the network's endpoint
    // would get its patients' records: the conflict names the endpoint.
    let r = a_key
        .patch("/v1/settings", json!({"maxPayload": "thin"}))
        .await;
    crate::helpers::assert_error(&r, 409, "conflict", None);
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains(&full),
        "{}",
        r.body
    );
    assert_eq!(a_key.get("/v1/settings").await.body["maxPayload"], "full");
    // Made thin, it may.
    let r = org
        .patch(&format!("/v1/endpoints/{full}"), json!({"payload": "thin"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = a_key
        .patch("/v1/settings", json!({"maxPayload": "thin"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // And then the organisation makes no full endpoint, new or changed.
    let r = org
        .post("/v1/endpoints", json!({"url": rx.url("/x")}))
        .await;
    crate::helpers::assert_error(&r, 422, "validation_error", Some("payload"));
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains(&a),
        "{}",
        r.body
    );
    let r = org
        .patch(&format!("/v1/endpoints/{full}"), json!({"payload": "full"}))
        .await;
    crate::helpers::assert_error(&r, 422, "validation_error", Some("payload"));
    // A clinic that forbids full payloads joins no network with a full endpoint.
    let (other_org, other_id) = server.new_organisation("South network").await;
    other_org
        .create_endpoint(json!({"url": rx.url("/south")}))
        .await;
    let loner = server.new_tenant("Loner clinic").await;
    let r = loner
        .patch("/v1/settings", json!({"maxPayload": "thin"}))
        .await;
    assert_eq!(r.status, 200);
    let loner_id = crate::helpers::principal_of(&server, &loner)
        .await
        .tenant_id;
    let joined = server
        .state
        .store
        .change_network(eventflow_store::NetworkChange::AddClinic {
            org: eventflow_model::id::TenantId::from_stored(other_id.clone()),
            clinic: loner_id,
            max_clinics: 1000,
        })
        .await;
    assert!(
        matches!(joined, Err(eventflow_store::StoreError::Conflict(ref m)) if m.contains("full payloads")),
        "{joined:?}"
    );
    let _ = org_id;
}
