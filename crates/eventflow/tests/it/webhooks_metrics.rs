//! Delivery metrics on `GET /metrics` (docs/design.md §5): deliveries by
//! outcome, attempt durations, failing endpoints and the longest failure
//! streak.

use std::time::Duration;

use eventflow_testkit::{Answer, Backend, Receiver, backend_tests, wait_for};
use serde_json::json;

backend_tests!(delivery_metrics_are_exported,);

async fn delivery_metrics_are_exported(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    rx.script([Answer::Status(500)]);
    api.create_endpoint(json!({"url": rx.url("/")})).await;
    api.patient().await;
    api.patient().await;
    rx.wait_for(2, Duration::from_secs(20)).await;
    let text = wait_for(Duration::from_secs(20), "delivery metrics", || {
        let api = api.clone();
        async move {
            let r = api
                .request(reqwest::Method::GET, "/metrics")
                .send()
                .await
                .ok()?;
            let t = r.text().await.ok()?;
            (t.contains("eventflow_deliveries_total{outcome=\"succeeded\"}")
                && t.contains("eventflow_deliveries_total{outcome=\"retrying\"}")
                && t.contains("eventflow_endpoints_failing"))
            .then_some(t)
        }
    })
    .await;
    assert!(
        text.contains("eventflow_delivery_attempt_duration_seconds"),
        "{text}"
    );
    assert!(
        text.contains("eventflow_endpoint_failure_streak_max"),
        "{text}"
    );
}
