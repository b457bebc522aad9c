//! What the dispatcher holds each endpoint to (docs/design.md §3.3, §3.4):
//! its rate limit, the attempts in flight at once, the 4 KiB of a response
//! body it keeps, and a retry that comes due while fresh deliveries keep it
//! busy.

use std::time::Duration;

use eventflow_testkit::{Answer, Backend, Options, Receiver, backend_tests, wait_for};
use serde_json::json;

backend_tests!(
    a_rate_limit_spaces_deliveries,
    attempts_in_flight_per_endpoint_are_limited,
    at_most_4_kib_of_a_response_body_is_kept,
    a_retry_comes_due_on_time_under_steady_traffic,
);

async fn a_rate_limit_spaces_deliveries(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    api.create_endpoint(
        json!({"url": rx.url("/"), "rateLimit": 4, "eventTypes": ["patient.created"]}),
    )
    .await;
    for _ in 0..9 {
        api.patient().await;
    }
    let got = rx.wait_for(9, Duration::from_secs(30)).await;
    // 4 per second: nine deliveries span at least two seconds.
    let span = got[8].at.duration_since(got[0].at);
    assert!(span >= Duration::from_millis(1900), "{span:?}");
}

async fn attempts_in_flight_per_endpoint_are_limited(backend: Backend) {
    let server = backend
        .spawn_with(Options {
            clock: None,
            configure: Some(Box::new(|c| {
                c.delivery_concurrency = 2;
                c.delivery_timeout_secs = 2;
            })),
        })
        .await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.script([Answer::Hang, Answer::Hang]);
    api.create_endpoint(json!({"url": rx.url("/"), "eventTypes": ["patient.created"]}))
        .await;
    for _ in 0..5 {
        api.patient().await;
    }
    let got = rx.wait_for(3, Duration::from_secs(20)).await;
    // Two hang; the third starts only when one of them times out (2 s).
    let gap = got[2].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(1900),
        "the third went after {gap:?}"
    );
    rx.wait_for(5, Duration::from_secs(20)).await;
}

async fn at_most_4_kib_of_a_response_body_is_kept(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.script([Answer::Body(500, "x".repeat(10_000))]);
    let ep = api.create_endpoint(json!({"url": rx.url("/")})).await;
    api.patient().await;
    let d = api.first_delivery(ep["id"].as_str().unwrap()).await;
    let d = api
        .delivery_with_attempts(d["id"].as_str().unwrap(), 1)
        .await;
    let body = d["attempts"][0]["responseBody"].as_str().unwrap();
    assert_eq!(body.len(), 4096);
    assert_eq!(d["attempts"][0]["statusCode"], 500);
}

async fn a_retry_comes_due_on_time_under_steady_traffic(backend: Backend) {
    let (server, clock) = backend.spawn_with_clock(jiff::Timestamp::now()).await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.script([Answer::Status(500)]);
    let ep = api
        .create_endpoint(json!({"url": rx.url("/"), "eventTypes": ["patient.created"]}))
        .await;
    let ep = ep["id"].as_str().unwrap().to_string();
    api.patient().await;
    wait_for(
        Duration::from_secs(20),
        "the first attempt recorded",
        || {
            let api = api.clone();
            let ep = ep.clone();
            async move {
                let l = api
                    .get(&format!("/v1/endpoints/{ep}/deliveries"))
                    .await
                    .body;
                // An attempt made and its retry scheduled (a delivery not
                // yet attempted has a due time too: its lease's end).
                let d = &l["data"][0];
                (d["attempts"].as_array().is_some_and(|a| !a.is_empty())
                    && d["nextAttemptAt"].is_string())
                .then_some(())
            }
        },
    )
    .await;
    clock.advance(jiff::SignedDuration::from_secs(7));
    // Fresh deliveries keep the dispatcher busy; the retry is made while
    // they go on (how soon is a matter for the benchmarks).
    wait_for(
        Duration::from_secs(60),
        "the retry made under steady traffic",
        || {
            let api = api.clone();
            let rx = &rx;
            async move {
                api.patient().await;
                rx.received()
                    .iter()
                    .any(|r| r.header("x-eventflow-attempt") == Some("2"))
                    .then_some(())
            }
        },
    )
    .await;
}
