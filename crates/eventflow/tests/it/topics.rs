//! Clinical topics, the patient and the changed fields in every envelope:
//! decided when the event is written, stored with it, and matched wherever
//! event types are (polls, streams, endpoints).

use std::time::Duration;

use eventflow_testkit::{Backend, Receiver, backend_tests};
use serde_json::{Value, json};

use crate::helpers::{all_events, principal, woken_by_commits_only};

backend_tests!(
    an_appointments_life_carries_its_topics_patient_and_changed_fields,
    a_poll_for_a_topic_gets_the_events_that_carry_it,
    an_endpoint_subscribed_to_a_topic_gets_those_events_with_the_topics_header,
    a_thin_payload_keeps_the_patient_the_topics_and_the_changed_fields,
    a_long_poll_for_a_topic_wakes_for_its_event,
);

fn topics(e: &Value) -> Vec<&str> {
    e["topics"]
        .as_array()
        .expect("topics is a list")
        .iter()
        .map(|t| t.as_str().expect("a topic is a string"))
        .collect()
}

async fn an_appointments_life_carries_its_topics_patient_and_changed_fields(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let practitioner = api
        .create(
            "practitioners",
            json!({"firstName": "Grace", "lastName": "Hopper"}),
        )
        .await;
    let appt = api
        .create(
            "appointments",
            json!({"patientId": patient, "start": "2026-12-01T09:00:00Z"}),
        )
        .await;
    let r = api
        .patch(
            &format!("/v1/appointments/{appt}"),
            json!({"start": "2026-12-02T09:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api
        .patch(
            &format!("/v1/appointments/{appt}"),
            json!({"status": "cancelled"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let events = all_events(&api, 0).await;
    let [p, pr, created, moved, cancelled] = &events[..] else {
        panic!("five events: {events:?}");
    };
    assert_eq!(p["patientId"], patient.as_str(), "a patient's own id");
    assert!(topics(p).is_empty());
    assert!(p.get("changedFields").is_none(), "only on updated");
    assert!(
        pr.get("patientId").is_none(),
        "a practitioner has no patient"
    );
    assert_eq!(created["patientId"], patient.as_str());
    assert_eq!(topics(created), ["appointment.booked"], "booked by default");
    assert_eq!(topics(moved), ["appointment.rescheduled"]);
    assert_eq!(moved["changedFields"], json!(["start"]));
    assert_eq!(topics(cancelled), ["appointment.cancelled"]);
    assert_eq!(cancelled["changedFields"], json!(["status"]));
    let _ = practitioner;

    // Stored with the event: reading it again gives the same.
    let id = cancelled["id"].as_str().unwrap();
    let one = api.get(&format!("/v1/events/{id}")).await;
    assert_eq!(one.body["topics"], json!(["appointment.cancelled"]));
    assert_eq!(one.body["patientId"], patient.as_str());
}

async fn a_poll_for_a_topic_gets_the_events_that_carry_it(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            api.create(
                "appointments",
                json!({"patientId": patient, "start": "2026-12-01T09:00:00Z"}),
            )
            .await,
        );
    }
    api.patch(
        &format!("/v1/appointments/{}", ids[1]),
        json!({"status": "cancelled"}),
    )
    .await;
    let r = api.delete(&format!("/v1/appointments/{}", ids[2])).await;
    assert_eq!(r.status, 204, "{}", r.body);

    let r = api.get("/v1/events?types=appointment.cancelled").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got: Vec<(&str, &str)> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("appointment.updated", ids[1].as_str()),
            ("appointment.deleted", ids[2].as_str()),
        ],
        "a status that became cancelled, and a booked appointment deleted"
    );
    // A topic and an event type together: either matches.
    let r = api
        .get("/v1/events?types=appointment.cancelled,patient.created")
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 3);
    // Globs reach topics too.
    let r = api.get("/v1/events?types=appointment.book*").await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 3, "three booked");
}

async fn an_endpoint_subscribed_to_a_topic_gets_those_events_with_the_topics_header(
    backend: Backend,
) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    api.create_endpoint(json!({"url": rx.url("/"), "eventTypes": ["appointment.cancelled"]}))
        .await;
    let patient = api.patient().await;
    let appt = api
        .create(
            "appointments",
            json!({"patientId": patient, "start": "2026-12-01T09:00:00Z"}),
        )
        .await;
    api.patch(
        &format!("/v1/appointments/{appt}"),
        json!({"reason": "follow-up"}),
    )
    .await;
    api.patch(
        &format!("/v1/appointments/{appt}"),
        json!({"status": "cancelled"}),
    )
    .await;
    let got = rx.wait_for(1, Duration::from_secs(20)).await;
    let body = got[0].json();
    assert_eq!(body["type"], "appointment.updated");
    assert_eq!(body["topics"], json!(["appointment.cancelled"]));
    assert_eq!(
        got[0].header("x-eventflow-topics"),
        Some("appointment.cancelled")
    );
    // Nothing else was sent: the next event the endpoint matches is the
    // only one after a marker it would match too.
    let marker = api
        .create(
            "appointments",
            json!({"patientId": patient, "start": "2026-12-03T09:00:00Z", "status": "proposed"}),
        )
        .await;
    api.delete(&format!("/v1/appointments/{marker}")).await;
    let got = rx.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2, "only the two cancellations");
    assert_eq!(got[1].json()["resource"]["id"], marker.as_str());
}

async fn a_thin_payload_keeps_the_patient_the_topics_and_the_changed_fields(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    api.create_endpoint(
        json!({"url": rx.url("/"), "payload": "thin", "eventTypes": ["encounter.*"]}),
    )
    .await;
    let patient = api.patient().await;
    let enc = api
        .create("encounters", json!({"patientId": patient}))
        .await;
    api.patch(
        &format!("/v1/encounters/{enc}"),
        json!({"status": "finished"}),
    )
    .await;
    let got = rx.wait_for(2, Duration::from_secs(20)).await;
    let mut bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    bodies.sort_by_key(|b| b["sequence"].as_i64());
    let (created, finished) = (&bodies[0], &bodies[1]);
    for b in [created, finished] {
        assert!(
            b.get("data").is_none() && b.get("previous").is_none(),
            "thin: {b}"
        );
        assert_eq!(b["patientId"], patient.as_str());
    }
    assert_eq!(created["topics"], json!(["encounter.started"]));
    assert!(created.get("changedFields").is_none());
    assert_eq!(finished["topics"], json!(["encounter.finished"]));
    assert_eq!(finished["changedFields"], json!(["status"]));
    let headers: Vec<Option<&str>> = {
        let mut g: Vec<_> = got.iter().collect();
        g.sort_by_key(|r| r.json()["sequence"].as_i64());
        g.into_iter()
            .map(|r| r.header("x-eventflow-topics"))
            .collect()
    };
    assert_eq!(
        headers,
        [Some("encounter.started"), Some("encounter.finished")]
    );
}

async fn a_long_poll_for_a_topic_wakes_for_its_event(backend: Backend) {
    let server = woken_by_commits_only(backend).await;
    let api = server.api();
    let patient = api.patient().await;
    let appt = api
        .create(
            "appointments",
            json!({"patientId": patient, "start": "2026-12-01T09:00:00Z"}),
        )
        .await;
    let tenant = principal(&server).await.tenant_id;
    let poller = api.clone();
    let poll = tokio::spawn(async move {
        poller
            .get("/v1/events?after=2&wait=60&types=appointment.arrived")
            .await
    });
    server.until_waiting(&tenant, 1).await;
    // An update of the same record without the topic: the poll waits on.
    api.patch(
        &format!("/v1/appointments/{appt}"),
        json!({"reason": "check-up"}),
    )
    .await;
    api.patch(
        &format!("/v1/appointments/{appt}"),
        json!({"status": "arrived"}),
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .expect("the long poll answered before its 60 s wait ended")
        .expect("poll");
    assert_eq!(r.status, 200, "{}", r.body);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["topics"], json!(["appointment.arrived"]));
}
