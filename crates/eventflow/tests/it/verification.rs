//! Endpoint verification (the README's "Patient data"): no patient data to
//! a URL nobody has proved they control. A new endpoint, or one whose URL
//! changed, answers a signed challenge before its deliveries go; what was
//! matched meanwhile waits and none of it is lost; 72 hours unanswered
//! disable it. Receivers here are real HTTP servers on loopback.

use std::time::Duration;

use eventflow_testkit::{Answer, Api, Backend, Options, Receiver, backend_tests, wait_for};
use eventflow_webhook::{HmacSecret, Verifier};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

backend_tests!(
    a_new_endpoint_answers_a_signed_challenge_and_then_gets_what_waited,
    a_changed_url_is_verified_again_and_nothing_goes_to_it_meanwhile,
    an_endpoint_unanswered_for_72_hours_is_disabled_and_keeps_what_waited,
    thin_endpoints_deliver_at_once_and_the_setting_says_who_must_verify,
    a_wrong_answer_leaves_the_endpoint_pending_and_says_why,
);

const LONG: Duration = Duration::from_secs(20);

async fn endpoint(api: &Api, id: &str) -> Value {
    api.get(&format!("/v1/endpoints/{id}")).await.body
}

/// Waits until the endpoint's verification is `state`.
async fn until_verification(api: &Api, id: &str, state: &str) -> Value {
    let what = format!("verification {state}");
    wait_for(LONG, &what, || async {
        let e = endpoint(api, id).await;
        (e["verification"] == state).then_some(e)
    })
    .await
}

/// Waits until the endpoint's last challenge was answered wrongly.
async fn until_refused(api: &Api, id: &str) -> Value {
    wait_for(LONG, "a refused challenge recorded", || async {
        let e = endpoint(api, id).await;
        e["verificationError"].is_string().then_some(e)
    })
    .await
}

async fn deliveries(api: &Api, id: &str) -> Vec<Value> {
    api.get(&format!("/v1/endpoints/{id}/deliveries?limit=100"))
        .await
        .body["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn a_new_endpoint_answers_a_signed_challenge_and_then_gets_what_waited(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    // Not answering yet: the receiver is still being deployed.
    rx.ignore_challenges();
    rx.answer(Answer::Status(503));
    let ep = api
        .create_endpoint(json!({"url": rx.url("/hook"), "ordering": "resource"}))
        .await;
    let id = ep["id"].as_str().unwrap().to_string();
    assert_eq!(ep["verification"], "pending");
    let secret = HmacSecret::parse(ep["secret"].as_str().unwrap()).unwrap();
    let refused = until_refused(&api, &id).await;
    assert_eq!(refused["verification"], "pending");
    assert_eq!(refused["verificationError"], "answered 503");
    // The challenge is signed like any delivery.
    let asked = rx.received();
    let c = &asked[0];
    assert_eq!(
        c.header("x-eventflow-event-type"),
        Some("endpoint.verification")
    );
    Verifier::new()
        .with_secret(secret.clone())
        .verify(&c.headers, &c.body, Timestamp::now().as_second())
        .expect("a challenge verifies with the endpoint's secret");
    let body = c.json();
    assert_eq!(body["type"], "endpoint.verification");
    assert_eq!(body["endpointId"], id.as_str());
    assert!(body["challenge"].as_str().unwrap().len() >= 32);
    // Meanwhile: a patient and three changes to it; nothing is sent.
    let patient = api.patient().await;
    for n in 0..3 {
        let r = api
            .patch(
                &format!("/v1/patients/{patient}"),
                json!({"phone": format!("+1555000000{n}")}),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let waiting = wait_for(LONG, "four deliveries waiting", || async {
        let d = deliveries(&api, &id).await;
        (d.len() == 4).then_some(d)
    })
    .await;
    for d in &waiting {
        assert_eq!(d["status"], "pending", "{d}");
        assert_eq!(d["attempts"], json!([]), "no attempt while unverified: {d}");
    }
    let before = rx.count();
    // Deployed: it answers now. Verify again.
    rx.answer(Answer::Status(200));
    rx.answer_challenges();
    let r = api
        .post(&format!("/v1/endpoints/{id}/verify"), json!({}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["verification"], "pending");
    let verified = until_verification(&api, &id, "verified").await;
    crate::helpers::assert_timestamp(verified["verifiedAt"].as_str().unwrap());
    assert_eq!(verified["verificationError"], Value::Null);
    // What waited goes, every one, in the order it was written.
    let got = rx.wait_for(before + 4, LONG).await;
    let sent: Vec<Value> = got[before..].iter().map(|r| r.json()).collect();
    let types: Vec<&str> = sent.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "patient.created",
            "patient.updated",
            "patient.updated",
            "patient.updated"
        ]
    );
    let versions: Vec<i64> = sent
        .iter()
        .map(|b| b["resource"]["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    let numbers: Vec<&str> = got[before..]
        .iter()
        .map(|r| r.header("x-eventflow-endpoint-sequence").unwrap())
        .collect();
    assert_eq!(numbers, ["1", "2", "3", "4"]);
    // And new events go at once.
    api.patient().await;
    rx.wait_for(before + 5, LONG).await;
}

async fn a_changed_url_is_verified_again_and_nothing_goes_to_it_meanwhile(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    second.ignore_challenges();
    second.answer(Answer::Status(404));
    let ep = api.create_endpoint(json!({"url": first.url("/")})).await;
    let id = ep["id"].as_str().unwrap().to_string();
    until_verification(&api, &id, "verified").await;
    assert_eq!(first.challenges().len(), 1);
    api.patient().await;
    first.wait_for(1, LONG).await;
    // A typo in the new URL: someone else's host.
    let r = api
        .patch(
            &format!("/v1/endpoints/{id}"),
            json!({"url": second.url("/")}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["verification"], "pending");
    until_refused(&api, &id).await;
    let patient = api.patient().await;
    let held = wait_for(LONG, "the new delivery waiting", || async {
        deliveries(&api, &id)
            .await
            .into_iter()
            .find(|d| d["endpointSequence"] == 2)
    })
    .await;
    assert_eq!(held["status"], "pending");
    assert_eq!(held["attempts"], json!([]));
    // The stranger got the challenge and nothing else; the old URL nothing more.
    assert!(
        second
            .received()
            .iter()
            .all(|r| r.json()["type"] == "endpoint.verification")
    );
    assert_eq!(first.count(), 1);
    // Fixed: back to the first receiver, which proves itself again.
    let r = api
        .patch(
            &format!("/v1/endpoints/{id}"),
            json!({"url": first.url("/")}),
        )
        .await;
    assert_eq!(r.status, 200);
    until_verification(&api, &id, "verified").await;
    assert_eq!(first.challenges().len(), 2);
    let got = first.wait_for(2, LONG).await;
    assert_eq!(got[1].json()["resource"]["id"], patient.as_str());
    assert!(
        second
            .received()
            .iter()
            .all(|r| r.json()["type"] == "endpoint.verification")
    );
}

async fn an_endpoint_unanswered_for_72_hours_is_disabled_and_keeps_what_waited(backend: Backend) {
    let start: Timestamp = "2026-06-01T09:00:00Z".parse().unwrap();
    let (server, clock) = backend.spawn_with_clock(start).await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.ignore_challenges();
    rx.answer(Answer::Status(500));
    let ep = api.create_endpoint(json!({"url": rx.url("/")})).await;
    let id = ep["id"].as_str().unwrap().to_string();
    until_refused(&api, &id).await;
    let patient = api.patient().await;
    // Retried on the delivery schedule, then, 72 hours on, given up.
    clock.advance(SignedDuration::from_mins(5));
    wait_for(LONG, "a second challenge", || async {
        (rx.count() >= 2).then_some(())
    })
    .await;
    clock.advance(SignedDuration::from_hours(71));
    wait_for(LONG, "a third challenge", || async {
        (rx.count() >= 3).then_some(())
    })
    .await;
    assert_eq!(
        endpoint(&api, &id).await["disabled"],
        false,
        "not before 72 h"
    );
    // Half an hour at a time, whenever the next retry was scheduled.
    let disabled = wait_for(LONG, "the endpoint disabled", || async {
        clock.advance(SignedDuration::from_mins(30));
        let e = endpoint(&api, &id).await;
        (e["disabled"] == true).then_some(e)
    })
    .await;
    let hours = eventflow_store::Clock::now(&*clock)
        .duration_since(start)
        .as_hours();
    assert!(hours >= 72, "disabled after {hours} h");
    assert_eq!(disabled["disabledReason"], "unverified");
    assert_eq!(disabled["verification"], "pending");
    let events = crate::helpers::all_events(&api, 0).await;
    let logged = events
        .iter()
        .find(|e| e["type"] == "endpoint.disabled")
        .expect("endpoint.disabled logged");
    assert_eq!(logged["data"]["disabledReason"], "unverified");
    // What waited is still there, never attempted.
    let waiting = deliveries(&api, &id).await;
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0]["status"], "pending");
    assert_eq!(waiting[0]["attempts"], json!([]));
    // Enabled again: a new challenge and 72 new hours; answered, it delivers.
    rx.answer(Answer::Status(200));
    rx.answer_challenges();
    let r = api
        .patch(&format!("/v1/endpoints/{id}"), json!({"disabled": false}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["verification"], "pending");
    until_verification(&api, &id, "verified").await;
    let got = wait_for(LONG, "the delivery that waited", || async {
        rx.received()
            .into_iter()
            .find(|r| r.json()["type"] == "patient.created")
    })
    .await;
    assert_eq!(got.json()["resource"]["id"], patient.as_str());
    // verify on a disabled endpoint is a conflict: enabling is the way.
    let r = api
        .patch(&format!("/v1/endpoints/{id}"), json!({"disabled": true}))
        .await;
    assert_eq!(r.status, 200);
    let r = api
        .post(&format!("/v1/endpoints/{id}/verify"), json!({}))
        .await;
    crate::helpers::assert_error(&r, 409, "conflict", None);
}

async fn thin_endpoints_deliver_at_once_and_the_setting_says_who_must_verify(backend: Backend) {
    use eventflow_server::config::EndpointVerification;
    // The default, `full`: a thin endpoint carries no patient data and is
    // not challenged.
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.ignore_challenges();
    let thin = api
        .create_endpoint(json!({"url": rx.url("/"), "payload": "thin"}))
        .await;
    assert_eq!(thin["verification"], "skipped");
    api.patient().await;
    let got = rx.wait_for(1, LONG).await;
    assert_eq!(got[0].json()["type"], "patient.created");
    // Switched to full, it must prove itself first.
    let id = thin["id"].as_str().unwrap();
    let r = api
        .patch(&format!("/v1/endpoints/{id}"), json!({"payload": "full"}))
        .await;
    assert_eq!(r.body["verification"], "pending");
    drop(server);
    for (setting, payload, expected) in [
        (EndpointVerification::All, "thin", "pending"),
        (EndpointVerification::Off, "full", "skipped"),
    ] {
        let server = backend
            .spawn_with(Options {
                configure: Some(Box::new(move |c| c.endpoint_verification = setting)),
                ..Options::default()
            })
            .await;
        let api = server.api();
        let rx = Receiver::start().await;
        let ep = api
            .create_endpoint(json!({"url": rx.url("/"), "payload": payload}))
            .await;
        assert_eq!(ep["verification"], expected, "{setting:?}");
        let id = ep["id"].as_str().unwrap().to_string();
        if expected == "pending" {
            until_verification(&api, &id, "verified").await;
        }
        api.patient().await;
        rx.wait_for(1, LONG).await;
        if setting == EndpointVerification::Off {
            assert!(rx.challenges().is_empty(), "no challenge unless asked");
            let r = api
                .post(&format!("/v1/endpoints/{id}/verify"), json!({}))
                .await;
            assert_eq!(r.status, 202);
            until_verification(&api, &id, "verified").await;
            assert_eq!(rx.challenges().len(), 1);
        }
    }
}

async fn a_wrong_answer_leaves_the_endpoint_pending_and_says_why(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.ignore_challenges();
    // A receiver that says yes to anything proves nothing.
    rx.answer(Answer::Body(200, "ok".into()));
    let ep = api.create_endpoint(json!({"url": rx.url("/")})).await;
    let id = ep["id"].as_str().unwrap().to_string();
    let e = until_refused(&api, &id).await;
    assert_eq!(e["verification"], "pending");
    assert_eq!(
        e["verificationError"],
        "answered 200 without the challenge in its body"
    );
    // Another challenge's value is no answer either.
    rx.answer(Answer::Body(200, json!({"challenge": "0123"}).to_string()));
    let r = api
        .post(&format!("/v1/endpoints/{id}/verify"), json!({}))
        .await;
    assert_eq!(r.status, 202);
    wait_for(LONG, "the second challenge refused", || async {
        (rx.count() >= 2).then_some(())
    })
    .await;
    let e = until_refused(&api, &id).await;
    assert_eq!(e["verification"], "pending");
    rx.answer_challenges();
    let r = api
        .post(&format!("/v1/endpoints/{id}/verify"), json!({}))
        .await;
    assert_eq!(r.status, 202);
    until_verification(&api, &id, "verified").await;
    // Another tenant cannot make it verify (or see it).
    let stranger = server.new_tenant("stranger").await;
    let r = stranger
        .post(&format!("/v1/endpoints/{id}/verify"), json!({}))
        .await;
    assert_eq!(r.status, 404);
}
