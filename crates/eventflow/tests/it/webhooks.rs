//! Webhook endpoints and delivery (docs/design.md §3.3, §3.4), end to end against
//! real HTTP receivers on loopback. The per-endpoint limits, the outbound
//! guard, delivery across a restart, the reference verifier and the metrics
//! are in the `webhooks_*` files beside this one.

use std::time::Duration;

use eventflow_testkit::{Answer, Backend, Receiver, backend_tests, wait_for};
use eventflow_webhook::{HmacSecret, Verifier};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

backend_tests!(
    an_endpoint_gets_each_matching_event_signed_with_every_header,
    event_type_globs_and_cel_filters_choose_what_is_sent,
    a_bad_cel_filter_or_field_is_422_naming_it_and_creates_nothing,
    endpoint_sequences_are_gap_free_and_the_missed_events_can_be_fetched,
    thin_payloads_carry_ids_only,
    a_failed_attempt_is_retried_on_the_schedule_with_the_same_webhook_id,
    retry_after_on_429_is_honoured,
    a_410_disables_the_endpoint_and_records_endpoint_disabled,
    after_72_hours_the_delivery_fails_and_the_endpoint_is_disabled,
    the_circuit_breaker_holds_new_attempts_until_a_retry_succeeds,
    a_retry_that_succeeds_ends_the_failure_streak_and_is_one_disclosure,
    a_rotated_secret_and_the_old_one_both_sign_for_24_hours,
    ed25519_endpoints_sign_with_v1a_and_publish_a_public_key,
    replay_queues_matching_events_again,
    a_failed_delivery_can_be_retried_by_hand,
    disclosures_list_who_received_a_patients_data,
    a_hanging_or_dropping_receiver_is_a_failed_attempt,
    resource_ordering_sends_one_record_events_in_sequence,
    endpoints_of_another_tenant_are_invisible,
    a_test_send_returns_the_attempt,
);

const LONG: Duration = Duration::from_secs(20);

async fn an_endpoint_gets_each_matching_event_signed_with_every_header(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    let ep = api
        .create_endpoint(json!({"url": rx.url("/hook"), "eventTypes": ["patient.*"]}))
        .await;
    let secret = ep["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert!(ep["id"].as_str().unwrap().starts_with("ep_"));
    let patient = api.patient().await;
    let got = rx.wait_for(1, LONG).await;
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hook");
    let body = req.json();
    assert_eq!(body["type"], "patient.created");
    assert_eq!(body["resource"]["id"], patient);
    assert_eq!(body["data"]["id"], patient);
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("webhook-id"), body["id"].as_str());
    assert_eq!(
        req.header("x-eventflow-event-type"),
        Some("patient.created")
    );
    assert_eq!(req.header("x-eventflow-attempt"), Some("1"));
    assert_eq!(req.header("x-eventflow-endpoint-sequence"), Some("1"));
    let ts = req.header("webhook-timestamp").unwrap();
    let clinik = req.header("x-clinikapi-signature").unwrap();
    assert!(clinik.starts_with(&format!("t={ts},v1=")), "{clinik}");
    let verifier = Verifier::new().with_secret(HmacSecret::parse(&secret).unwrap());
    let now = Timestamp::now().as_second();
    verifier
        .verify(&req.headers, &req.body, now)
        .expect("verifies");
    // The receiver SDK parses it into a typed event.
    match eventflow_webhook::typed::parse(&req.body)
        .expect("parses")
        .kind
    {
        eventflow_webhook::typed::EventKind::PatientCreated(Some(p)) => assert_eq!(p.id, patient),
        other => panic!("{other:?}"),
    }
    // Tampering is caught.
    let mut forged = req.body.clone();
    forged[5] ^= 1;
    assert!(verifier.verify(&req.headers, &forged, now).is_err());

    let d = api.first_delivery(ep["id"].as_str().unwrap()).await;
    let d = api
        .delivery_with_attempts(d["id"].as_str().unwrap(), 1)
        .await;
    assert!(d["id"].as_str().unwrap().starts_with("dlv_"));
    // The event lists the deliveries made of it.
    let of_event = api
        .get(&format!(
            "/v1/events/{}/deliveries",
            body["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(of_event.status, 200, "{:?}", of_event.body);
    assert_eq!(of_event.body["data"][0]["id"], d["id"]);
    assert_eq!(of_event.body["data"][0]["endpointId"], ep["id"]);
    assert_eq!(api.get("/v1/events/evt_0000/deliveries").await.status, 404);
    for key in [
        "id",
        "endpointId",
        "eventId",
        "eventType",
        "status",
        "attempts",
    ] {
        assert!(d.get(key).is_some(), "{key} in {d}");
    }
    let d = wait_for(LONG, "succeeded", || {
        let api = api.clone();
        let id = d["id"].as_str().unwrap().to_string();
        async move {
            let d = api.get(&format!("/v1/deliveries/{id}")).await.body;
            (d["status"] == "succeeded").then_some(d)
        }
    })
    .await;
    let a = &d["attempts"][0];
    assert_eq!(a["attempt"], 1);
    assert_eq!(a["statusCode"], 200);
    assert_eq!(a["responseBody"], "status 200");
    assert!(a["durationMs"].is_u64());
    assert!(a["error"].is_null());
    // A practitioner event does not match patient.*.
    api.create("practitioners", json!({"firstName": "A", "lastName": "B"}))
        .await;
    api.patient().await;
    let got = rx.wait_for(2, LONG).await;
    assert_eq!(got[1].json()["type"], "patient.created");
    assert_eq!(got[1].header("x-eventflow-endpoint-sequence"), Some("2"));
}

async fn event_type_globs_and_cel_filters_choose_what_is_sent(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    api.create_endpoint(json!({
        "url": rx.url("/critical"),
        "eventTypes": ["observation.*"],
        "filter": "data.flag in ['high', 'critical']",
    }))
    .await;
    let patient = api.patient().await;
    for value in [70, 250, 80, 300] {
        api.create(
            "observations",
            json!({"patientId": patient, "code": "glucose", "value": value, "unit": "mg/dL",
                   "referenceRange": {"low": 60, "high": 140}}),
        )
        .await;
    }
    let sentinel = api
        .create(
            "observations",
            json!({"patientId": patient, "code": "glucose", "value": 999, "unit": "mg/dL", "flag": "critical"}),
        )
        .await;
    // Attempts to one endpoint run concurrently, so arrivals may be in any
    // order: the sentinel, written last, is the last of the flagged ones by
    // sequence.
    let mut got = rx.wait_for(3, LONG).await;
    got.sort_by_key(|r| r.json()["sequence"].as_i64());
    let last = got.last().unwrap().json();
    assert_eq!(
        last["data"]["id"], sentinel,
        "only the flagged ones, the sentinel last"
    );
    assert_eq!(got.len(), 3);
    for r in &got {
        assert!(["high", "critical"].contains(&r.json()["data"]["flag"].as_str().unwrap()));
    }
}

async fn a_bad_cel_filter_or_field_is_422_naming_it_and_creates_nothing(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let url = "http://127.0.0.1:9/hook";
    for (body, field) in [
        (json!({"url": url, "filter": "data.status =="}), "filter"),
        (json!({"url": url, "filter": "dta.status == 'x'"}), "filter"),
        (json!({"url": "ftp://x.example/"}), "url"),
        (json!({}), "url"),
        (
            json!({"url": url, "eventTypes": ["nope.created"]}),
            "eventTypes",
        ),
        (json!({"url": url, "eventTypes": "patient.*"}), "eventTypes"),
        (json!({"url": url, "payload": "some"}), "payload"),
        (json!({"url": url, "ordering": "strict"}), "ordering"),
        (json!({"url": url, "rateLimit": 0}), "rateLimit"),
        (
            json!({"url": url, "headers": {"webhook-id": "x"}}),
            "headers.webhook-id",
        ),
        (json!({"url": url, "signing": "rsa"}), "signing"),
        (json!({"url": url, "color": "red"}), "color"),
    ] {
        let r = api.post("/v1/endpoints", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {:?}", r.body);
        assert_eq!(r.error_field(), Some(field), "{body}: {:?}", r.body);
    }
    let r = api
        .post("/v1/endpoints", json!({"url": url, "filter": "data.x =="}))
        .await;
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains("CEL"),
        "the parser's message: {:?}",
        r.body
    );
    assert_eq!(api.get("/v1/endpoints").await.body["data"], json!([]));
}

async fn endpoint_sequences_are_gap_free_and_the_missed_events_can_be_fetched(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    let ep = api
        .create_endpoint(json!({"url": rx.url("/"), "eventTypes": ["patient.created"]}))
        .await;
    let ep_id = ep["id"].as_str().unwrap();
    for _ in 0..5 {
        api.patient().await;
        api.create("practitioners", json!({"firstName": "A", "lastName": "B"}))
            .await;
    }
    let got = rx.wait_for(5, LONG).await;
    let mut seqs: Vec<i64> = got
        .iter()
        .map(|r| {
            r.header("x-eventflow-endpoint-sequence")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    seqs.sort();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let r = api
        .get(&format!("/v1/endpoints/{ep_id}/events?after=2"))
        .await;
    assert_eq!(r.status, 200);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0]["endpointSequence"], 3);
    assert_eq!(data[0]["type"], "patient.created");
    assert_eq!(r.body["nextAfter"], 5);
}

async fn thin_payloads_carry_ids_only(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    api.create_endpoint(json!({"url": rx.url("/"), "payload": "thin"}))
        .await;
    let patient = api.patient().await;
    let got = rx.wait_for(1, LONG).await;
    let body = got[0].json();
    assert_eq!(body["resource"]["id"], patient);
    assert!(
        body.get("data").is_none() && body.get("previous").is_none(),
        "{body}"
    );
    let text = String::from_utf8_lossy(&got[0].body).to_string();
    assert!(
        !text.contains("Lovelace") && !text.contains("firstName"),
        "{text}"
    );
}

async fn a_failed_attempt_is_retried_on_the_schedule_with_the_same_webhook_id(backend: Backend) {
    let (server, clock) = backend.spawn_with_clock(Timestamp::now()).await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.script([Answer::Status(500), Answer::Status(503)]);
    let ep = api.create_endpoint(json!({"url": rx.url("/")})).await;
    api.patient().await;
    rx.wait_for(1, LONG).await;
    let d = api.first_delivery(ep["id"].as_str().unwrap()).await;
    let id = d["id"].as_str().unwrap().to_string();
    let d = api.delivery_with_attempts(&id, 1).await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["attempts"][0]["statusCode"], 500);
    // Not before 5 s − 20 %.
    let first = Timestamp::from_millisecond(
        eventflow_model::time::parse(d["attempts"][0]["at"].as_str().unwrap())
            .unwrap()
            .as_millisecond(),
    )
    .unwrap();
    let next = eventflow_model::time::parse(d["nextAttemptAt"].as_str().unwrap()).unwrap();
    let wait = next.duration_since(first);
    assert!(
        wait >= SignedDuration::from_secs(4) && wait <= SignedDuration::from_secs(6),
        "{wait:?}"
    );
    clock.advance(SignedDuration::from_secs(7));
    rx.wait_for(2, LONG).await;
    let d = api.delivery_with_attempts(&id, 2).await;
    assert_eq!(d["attempts"][1]["statusCode"], 503);
    let next2 = eventflow_model::time::parse(d["nextAttemptAt"].as_str().unwrap()).unwrap();
    let wait2 = next2.duration_since(
        eventflow_model::time::parse(d["attempts"][1]["at"].as_str().unwrap()).unwrap(),
    );
    assert!(
        wait2 >= SignedDuration::from_secs(24) && wait2 <= SignedDuration::from_secs(36),
        "{wait2:?}"
    );
    clock.advance(SignedDuration::from_secs(40));
    let got = rx.wait_for(3, LONG).await;
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "the same webhook-id on every retry"
    );
    let attempts_hdr: Vec<_> = got
        .iter()
        .map(|r| r.header("x-eventflow-attempt").unwrap().to_string())
        .collect();
    assert_eq!(attempts_hdr, ["1", "2", "3"]);
    wait_for(LONG, "succeeded", || {
        let api = api.clone();
        let id = id.clone();
        async move {
            (api.get(&format!("/v1/deliveries/{id}")).await.body["status"] == "succeeded")
                .then_some(())
        }
    })
    .await;
}

async fn retry_after_on_429_is_honoured(backend: Backend) {
    let (server, clock) = backend.spawn_with_clock(Timestamp::now()).await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.script([Answer::RetryAfter(429, "120".into())]);
    let ep = api.create_endpoint(json!({"url": rx.url("/")})).await;
    api.patient().await;
    let d = api.first_delivery(ep["id"].as_str().unwrap()).await;
    let d = api
        .delivery_with_attempts(d["id"].as_str().unwrap(), 1)
        .await;
    let at = eventflow_model::time::parse(d["attempts"][0]["at"].as_str().unwrap()).unwrap();
    let next = eventflow_model::time::parse(d["nextAttemptAt"].as_str().unwrap()).unwrap();
    assert!(
        next.duration_since(at) >= SignedDuration::from_secs(120),
        "{d}"
    );
    clock.advance(SignedDuration::from_secs(60));
    clock.advance(SignedDuration::from_secs(61));
    rx.wait_for(2, LONG).await;
}

async fn a_410_disables_the_endpoint_and_records_endpoint_disabled(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.answer(Answer::Status(410));
    let ep = api
        .create_endpoint(json!({"url": rx.url("/hook?token=s3cret"), "eventTypes": ["patient.*"]}))
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_string();
    api.patient().await;
    rx.wait_for(1, LONG).await;
    let ep = wait_for(LONG, "disabled", || {
        let api = api.clone();
        let ep_id = ep_id.clone();
        async move {
            let e = api.get(&format!("/v1/endpoints/{ep_id}")).await.body;
            (e["disabled"] == true).then_some(e)
        }
    })
    .await;
    assert_eq!(ep["disabledReason"], "gone");
    let events = api.get("/v1/events?types=endpoint.disabled").await.body;
    let e = &events["data"][0];
    assert_eq!(e["type"], "endpoint.disabled");
    assert_eq!(e["resource"]["id"], ep_id.as_str());
    assert_eq!(e["data"]["disabledReason"], "gone");
    // The event may reach other receivers: the URL is cut to its origin.
    assert_eq!(e["data"]["url"], rx.url("").as_str(), "{e}");
    // Disabled: nothing more is sent.
    api.patient().await;
    api.patient().await;
    assert_eq!(rx.count(), 1);
    // Re-enabled: the waiting delivery goes again.
    rx.answer(Answer::Status(200));
    let r = api
        .patch(
            &format!("/v1/endpoints/{ep_id}"),
            json!({"disabled": false}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["disabled"], false);
    rx.wait_for(2, LONG).await;
}

async fn after_72_hours_the_delivery_fails_and_the_endpoint_is_disabled(backend: Backend) {
    let (server, clock) = backend.spawn_with_clock(Timestamp::now()).await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.answer(Answer::Status(500));
    let ep = api
        .create_endpoint(json!({"url": rx.url("/"), "eventTypes": ["patient.created"]}))
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_string();
    api.patient().await;
    let d = api.first_delivery(&ep_id).await;
    let id = d["id"].as_str().unwrap().to_string();
    let mut seen = 1;
    api.delivery_with_attempts(&id, 1).await;
    // Walk the clock through the schedule: each step past the next due time.
    for _ in 0..40 {
        let d = api.get(&format!("/v1/deliveries/{id}")).await.body;
        if d["status"] == "failed" {
            break;
        }
        let next = eventflow_model::time::parse(d["nextAttemptAt"].as_str().unwrap()).unwrap();
        let now = {
            use eventflow_store::Clock;
            clock.now()
        };
        clock.advance(next.duration_since(now) + SignedDuration::from_millis(1));
        seen += 1;
        api.delivery_with_attempts(&id, seen).await;
    }
    let d = api.get(&format!("/v1/deliveries/{id}")).await.body;
    assert_eq!(d["status"], "failed", "{d}");
    let n = d["attempts"].as_array().unwrap().len();
    assert!((13..=16).contains(&n), "about 14 attempts in 72 h, got {n}");
    let events = api
        .get("/v1/events?types=delivery.failed,endpoint.disabled")
        .await
        .body;
    let types: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"delivery.failed"), "{types:?}");
    assert!(types.contains(&"endpoint.disabled"), "{types:?}");
    let ep = api.get(&format!("/v1/endpoints/{ep_id}")).await.body;
    assert_eq!(ep["disabled"], true);
    assert_eq!(ep["disabledReason"], "failing");
    // A failed delivery stays listed.
    let failed = api
        .get(&format!("/v1/endpoints/{ep_id}/deliveries?status=failed"))
        .await
        .body;
    assert_eq!(failed["data"][0]["id"], id.as_str());
    // Enabled again and retried by hand, it gets a new 72-hour window: one
    // more failure schedules a retry instead of giving up at once.
    let r = api
        .patch(
            &format!("/v1/endpoints/{ep_id}"),
            json!({"disabled": false}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = api
        .post(&format!("/v1/deliveries/{id}/retry"), json!({}))
        .await;
    assert_eq!(r.status, 202);
    let d = api.delivery_with_attempts(&id, n + 1).await;
    assert_eq!(d["status"], "pending", "{d}");
    assert!(d["nextAttemptAt"].is_string(), "{d}");
}

async fn the_circuit_breaker_holds_new_attempts_until_a_retry_succeeds(backend: Backend) {
    let (server, clock) = backend.spawn_with_clock(Timestamp::now()).await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.answer(Answer::Status(500));
    let ep = api
        .create_endpoint(json!({"url": rx.url("/"), "eventTypes": ["patient.created"]}))
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_string();
    // Five failures in a row, one at a time.
    for n in 1..=5 {
        api.patient().await;
        rx.wait_for(n, LONG).await;
        crate::helpers::wait_for_failure_streak(&api, &ep_id, n as i64).await;
    }
    // Open: a new event gets no attempt of its own.
    api.patient().await;
    let sixth = wait_for(LONG, "the sixth delivery", || {
        let api = api.clone();
        let ep_id = ep_id.clone();
        async move {
            let list = api
                .get(&format!("/v1/endpoints/{ep_id}/deliveries"))
                .await
                .body;
            let data = list["data"].as_array().cloned().unwrap_or_default();
            (data.len() == 6).then(|| data[0].clone())
        }
    })
    .await;
    let sixth_id = sixth["id"].as_str().unwrap().to_string();
    wait_for(LONG, "the sixth deferred", || {
        let api = api.clone();
        let id = sixth_id.clone();
        async move {
            let d = api.get(&format!("/v1/deliveries/{id}")).await.body;
            d["nextAttemptAt"].as_str().map(|_| ())
        }
    })
    .await;
    assert_eq!(rx.count(), 5, "no attempt while the breaker is open");
    // The retries come due: exactly one probe goes, and fails.
    clock.advance(SignedDuration::from_secs(10));
    rx.wait_for(6, LONG).await;
    crate::helpers::wait_for_failure_streak(&api, &ep_id, 6).await;
    assert_eq!(rx.count(), 6, "one probe at a time");
    // Now the receiver recovers; the next scheduled retry succeeds and the backlog drains.
    rx.answer(Answer::Status(200));
    clock.advance(SignedDuration::from_secs(60));
    let got = rx.wait_for(7, LONG).await;
    assert!(got.len() >= 7);
    // Every delivery succeeded.
    api.wait_until_nothing_pending(&ep_id, LONG).await;
    let recovered = api.get("/v1/events?types=delivery.recovered").await.body;
    assert_eq!(
        recovered["data"].as_array().unwrap().len(),
        1,
        "{recovered}"
    );
    let ep = api.get(&format!("/v1/endpoints/{ep_id}")).await.body;
    assert_eq!(ep["failureStreak"], 0);
}

/// A success after failures ends the endpoint's failure streak and is one
/// disclosure; so does a success when another node's failures left a
/// streak this node has not seen.
async fn a_retry_that_succeeds_ends_the_failure_streak_and_is_one_disclosure(backend: Backend) {
    let (server, clock) = backend.spawn_with_clock(Timestamp::now()).await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.answer(Answer::Status(500));
    let ep = api
        .create_endpoint(json!({"url": rx.url("/"), "eventTypes": ["patient.created"]}))
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_string();
    let patient = api.patient().await;
    rx.wait_for(1, LONG).await;
    let streak = |n: i64| crate::helpers::wait_for_failure_streak(&api, &ep_id, n);
    streak(1).await;
    rx.answer(Answer::Status(200));
    clock.advance(SignedDuration::from_secs(60));
    rx.wait_for(2, LONG).await;
    api.wait_until_nothing_pending(&ep_id, LONG).await;
    streak(0).await;
    let list = api
        .get(&format!("/v1/disclosures?patientId={patient}"))
        .await
        .body;
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    assert_eq!(data[0]["endpointId"], ep_id.as_str(), "{list}");
    // A later event goes at once, and is a disclosure of its own.
    let other = api.patient().await;
    rx.wait_for(3, LONG).await;
    api.wait_until_nothing_pending(&ep_id, LONG).await;
    let list = api
        .get(&format!("/v1/disclosures?patientId={other}"))
        .await
        .body;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    // Another node's two failures, as the database has them.
    crate::helpers::execute(
        &server,
        &format!("UPDATE endpoints SET failure_streak = 2 WHERE id = '{ep_id}'"),
    )
    .await;
    streak(2).await;
    let third = api.patient().await;
    rx.wait_for(4, LONG).await;
    api.wait_until_nothing_pending(&ep_id, LONG).await;
    streak(0).await;
    let list = api
        .get(&format!("/v1/disclosures?patientId={third}"))
        .await
        .body;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
}

async fn a_rotated_secret_and_the_old_one_both_sign_for_24_hours(backend: Backend) {
    let (server, clock) = backend.spawn_with_clock(Timestamp::now()).await;
    let api = server.api();
    let rx = Receiver::start().await;
    let ep = api.create_endpoint(json!({"url": rx.url("/")})).await;
    let ep_id = ep["id"].as_str().unwrap();
    let old = ep["secret"].as_str().unwrap().to_string();
    assert_eq!(
        api.get(&format!("/v1/endpoints/{ep_id}/secret")).await.body["secret"],
        old.as_str()
    );
    let r = api
        .post(&format!("/v1/endpoints/{ep_id}/secret/rotate"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let new = r.body["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    api.patient().await;
    let got = rx.wait_for(1, LONG).await;
    let sigs = got[0].header("webhook-signature").unwrap();
    assert_eq!(sigs.split(' ').count(), 2, "{sigs}");
    assert_eq!(
        got[0]
            .header("x-clinikapi-signature")
            .unwrap()
            .matches("v1=")
            .count(),
        2
    );
    let now = {
        use eventflow_store::Clock;
        clock.now().as_second()
    };
    for s in [&old, &new] {
        Verifier::new()
            .with_secret(HmacSecret::parse(s).unwrap())
            .verify(&got[0].headers, &got[0].body, now)
            .expect("each secret verifies");
    }
    clock.advance(SignedDuration::from_hours(25));
    api.patient().await;
    let got = rx.wait_for(2, LONG).await;
    let sigs = got[1].header("webhook-signature").unwrap();
    assert_eq!(sigs.split(' ').count(), 1, "the old secret expired: {sigs}");
}

async fn ed25519_endpoints_sign_with_v1a_and_publish_a_public_key(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    let ep = api
        .create_endpoint(json!({"url": rx.url("/"), "signing": "ed25519"}))
        .await;
    assert!(
        ep.get("secret").is_none(),
        "the private key never leaves the server"
    );
    let public = ep["publicKey"].as_str().unwrap().to_string();
    assert!(public.starts_with("whpk_"));
    api.patient().await;
    let got = rx.wait_for(1, LONG).await;
    assert!(
        got[0]
            .header("webhook-signature")
            .unwrap()
            .starts_with("v1a,")
    );
    assert!(got[0].header("x-clinikapi-signature").is_none());
    Verifier::new()
        .with_public_key(eventflow_webhook::Ed25519PublicKey::parse(&public).unwrap())
        .verify(&got[0].headers, &got[0].body, Timestamp::now().as_second())
        .expect("verifies with the public key");
}

async fn replay_queues_matching_events_again(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    api.patient().await;
    api.patient().await;
    let rx = Receiver::start().await;
    let ep = api
        .create_endpoint(json!({"url": rx.url("/"), "eventTypes": ["patient.created"]}))
        .await;
    let ep_id = ep["id"].as_str().unwrap();
    api.patient().await;
    rx.wait_for(1, LONG).await;
    let r = api
        .post(
            &format!("/v1/endpoints/{ep_id}/replay"),
            json!({"after": 0}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["queued"], 3);
    let got = rx.wait_for(4, LONG).await;
    let mut seqs: Vec<i64> = got
        .iter()
        .map(|r| r.json()["sequence"].as_i64().unwrap())
        .collect();
    seqs.sort();
    assert_eq!(seqs, vec![1, 2, 3, 3]);
    let r = api
        .post(
            &format!("/v1/endpoints/{ep_id}/replay"),
            json!({"since": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.body["queued"], 3);
    rx.wait_for(7, LONG).await;
    let r = api
        .post(
            &format!("/v1/endpoints/{ep_id}/replay"),
            json!({"after": 1, "since": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = api
        .post("/v1/endpoints/ep_0000/replay", json!({"after": 1}))
        .await;
    assert_eq!(r.status, 404);
}

async fn a_failed_delivery_can_be_retried_by_hand(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.script([Answer::Status(500)]);
    let ep = api.create_endpoint(json!({"url": rx.url("/")})).await;
    api.patient().await;
    rx.wait_for(1, LONG).await;
    let d = api.first_delivery(ep["id"].as_str().unwrap()).await;
    let id = d["id"].as_str().unwrap().to_string();
    api.delivery_with_attempts(&id, 1).await;
    let r = api
        .post(&format!("/v1/deliveries/{id}/retry"), json!({}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    rx.wait_for(2, LONG).await;
    let d = api.delivery_with_attempts(&id, 2).await;
    assert_eq!(d["attempts"][1]["statusCode"], 200);
    assert_eq!(
        api.post("/v1/deliveries/dlv_0000/retry", json!({}))
            .await
            .status,
        404
    );
}

async fn disclosures_list_who_received_a_patients_data(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    let ep = api.create_endpoint(json!({"url": rx.url("/")})).await;
    let patient = api.patient().await;
    let other = api.patient().await;
    api.create(
        "appointments",
        json!({"patientId": patient, "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T10:30:00Z"}),
    )
    .await;
    rx.wait_for(3, LONG).await;
    api.wait_until_nothing_pending(ep["id"].as_str().unwrap(), LONG)
        .await;
    let list = api
        .get(&format!("/v1/disclosures?patientId={patient}"))
        .await
        .body;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(2), "{list:#}");
    // In the order they were acknowledged (sent side by side, the two may
    // arrive either way round).
    let mut types: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["eventType"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["appointment.created", "patient.created"]);
    assert_eq!(list["data"][0]["endpointId"], ep["id"]);
    // Where it went: scheme and host, never the path (it may hold a token).
    let origin = rx.url("");
    assert_eq!(list["data"][0]["origin"], origin.trim_end_matches('/'));
    let r = api
        .get(&format!("/v1/disclosures?patientId={other}"))
        .await
        .body;
    assert_eq!(r["data"].as_array().unwrap().len(), 1);
    let r = api.get("/v1/disclosures?patientId=bad").await;
    assert_eq!(r.status, 422);
}

async fn a_hanging_or_dropping_receiver_is_a_failed_attempt(backend: Backend) {
    let server = backend
        .spawn_with(eventflow_testkit::Options {
            clock: None,
            configure: Some(Box::new(|c| c.delivery_timeout_secs = 1)),
        })
        .await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.script([Answer::Hang, Answer::Drop]);
    let ep = api
        .create_endpoint(json!({"url": rx.url("/"), "eventTypes": ["patient.created"]}))
        .await;
    api.patient().await;
    let d = api.first_delivery(ep["id"].as_str().unwrap()).await;
    let id = d["id"].as_str().unwrap().to_string();
    let d = api.delivery_with_attempts(&id, 1).await;
    let a = &d["attempts"][0];
    assert!(a["statusCode"].is_null(), "{a}");
    assert!(a["error"].as_str().unwrap().contains("timed out"), "{a}");
    api.post(&format!("/v1/deliveries/{id}/retry"), json!({}))
        .await;
    let d = api.delivery_with_attempts(&id, 2).await;
    let a = &d["attempts"][1];
    assert!(a["statusCode"].is_null(), "{a}");
    assert!(a["error"].is_string(), "{a}");
    assert!(
        !a["error"].as_str().unwrap().contains("127.0.0.1"),
        "no URL in the error: {a}"
    );
}

async fn resource_ordering_sends_one_record_events_in_sequence(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    api.create_endpoint(
        json!({"url": rx.url("/"), "ordering": "resource", "eventTypes": ["patient.*"]}),
    )
    .await;
    let patient = api.patient().await;
    for i in 0..9 {
        api.patch(
            &format!("/v1/patients/{patient}"),
            json!({"phone": format!("+1555000{i:04}")}),
        )
        .await;
    }
    let got = rx.wait_for(10, LONG).await;
    let versions: Vec<i64> = got
        .iter()
        .map(|r| r.json()["resource"]["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, (1..=10).collect::<Vec<_>>());
}

async fn endpoints_of_another_tenant_are_invisible(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let other = server.new_tenant("other").await;
    let rx = Receiver::start().await;
    let ep = api.create_endpoint(json!({"url": rx.url("/")})).await;
    let ep_id = ep["id"].as_str().unwrap();
    for path in [
        format!("/v1/endpoints/{ep_id}"),
        format!("/v1/endpoints/{ep_id}/secret"),
        format!("/v1/endpoints/{ep_id}/deliveries"),
        format!("/v1/endpoints/{ep_id}/events"),
    ] {
        assert_eq!(other.get(&path).await.status, 404, "{path}");
    }
    assert_eq!(
        other.delete(&format!("/v1/endpoints/{ep_id}")).await.status,
        404
    );
    assert_eq!(other.get("/v1/endpoints").await.body["data"], json!([]));
    // The other tenant's events never reach this endpoint.
    other.patient().await;
    api.patient().await;
    let got = rx.wait_for(1, LONG).await;
    assert_eq!(got.len(), 1);
    let d = api.first_delivery(ep_id).await;
    assert_eq!(
        other
            .get(&format!("/v1/deliveries/{}", d["id"].as_str().unwrap()))
            .await
            .status,
        404
    );
}

async fn a_test_send_returns_the_attempt(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.script([Answer::Body(201, "thanks".into())]);
    let ep = api.create_endpoint(json!({"url": rx.url("/")})).await;
    let ep_id = ep["id"].as_str().unwrap();
    let r = api
        .post(
            &format!("/v1/endpoints/{ep_id}/test"),
            json!({"type": "encounter.updated"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["statusCode"], 201);
    assert_eq!(r.body["responseBody"], "thanks");
    let got = rx.received();
    assert_eq!(got[0].json()["type"], "encounter.updated");
    let r = api
        .post(
            &format!("/v1/endpoints/{ep_id}/test"),
            json!({"type": "nope"}),
        )
        .await;
    assert_eq!(r.status, 422);
    // Delete: gone from the API, nothing more sent.
    assert_eq!(
        api.delete(&format!("/v1/endpoints/{ep_id}")).await.status,
        204
    );
    assert_eq!(api.get(&format!("/v1/endpoints/{ep_id}")).await.status, 404);
}
