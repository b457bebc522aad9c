//! Where a webhook may go (docs/design.md §3.4, "SSRF guard"): private and
//! loopback addresses refused when an endpoint is saved and again when a
//! delivery connects, and `https://` only in production.

use eventflow_testkit::{Backend, Options, Receiver, backend_tests};
use serde_json::json;

backend_tests!(
    without_allow_private_endpoints_private_addresses_are_refused_at_create_and_at_connect,
    production_mode_takes_https_endpoints_only,
);

async fn without_allow_private_endpoints_private_addresses_are_refused_at_create_and_at_connect(
    backend: Backend,
) {
    let server = backend
        .spawn_with(Options {
            clock: None,
            configure: Some(Box::new(|c| c.allow_private_endpoints = false)),
        })
        .await;
    let api = server.api();
    let rx = Receiver::start().await;
    for url in [
        rx.url("/"),
        "http://169.254.169.254/latest".to_string(),
        "http://[::1]:9/".to_string(),
        "http://10.0.0.1/".to_string(),
    ] {
        let r = api.post("/v1/endpoints", json!({"url": url})).await;
        assert_eq!(r.status, 422, "{url}: {:?}", r.body);
        assert_eq!(r.error_field(), Some("url"));
    }
    // A name passes at create time, but resolves to a forbidden address:
    // refused when the delivery connects (DNS rebinding). This machine's
    // own name resolves to loopback or its private address.
    let host = std::fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
        .await
        .map(|a| a.collect())
        .unwrap_or_default();
    assert!(
        !resolved.is_empty()
            && resolved
                .iter()
                .all(|a| eventflow_delivery::forbidden(a.ip()).is_some()),
        "this test needs the machine's host name ({host:?}) to resolve to a private or loopback address"
    );
    let url = format!("http://{host}:{}/", rx.port());
    // A full endpoint's verification challenge is refused so: it stays
    // pending, and says why.
    let full = api
        .create_endpoint(json!({"url": url, "eventTypes": ["patient.created"]}))
        .await;
    let full = full["id"].as_str().unwrap().to_string();
    let refused = eventflow_testkit::wait_for(
        std::time::Duration::from_secs(20),
        "the challenge refused",
        || async {
            let e = api.get(&format!("/v1/endpoints/{full}")).await.body;
            e["verificationError"].as_str().map(str::to_string)
        },
    )
    .await;
    assert!(refused.contains("may not use"), "{refused}");
    // A thin one delivers without a challenge: each delivery is refused so.
    let ep = api
        .create_endpoint(json!({"url": url, "eventTypes": ["patient.created"], "payload": "thin"}))
        .await;
    let ep = ep["id"].as_str().unwrap().to_string();
    let t = api
        .post(&format!("/v1/endpoints/{ep}/test"), json!({}))
        .await;
    assert!(t.body["statusCode"].is_null(), "{:?}", t.body);
    assert!(
        t.body["error"].as_str().unwrap().contains("may not use"),
        "{:?}",
        t.body
    );
    api.patient().await;
    let d = api.first_delivery(&ep).await;
    let d = api
        .delivery_with_attempts(d["id"].as_str().unwrap(), 1)
        .await;
    assert!(
        d["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("may not use"),
        "{d}"
    );
    assert_eq!(rx.count(), 0, "nothing reached the loopback receiver");
}

async fn production_mode_takes_https_endpoints_only(backend: Backend) {
    let server = backend
        .spawn_with(Options {
            clock: None,
            configure: Some(Box::new(|c| {
                c.production = true;
                c.allow_private_endpoints = false;
            })),
        })
        .await;
    let api = server.api();
    let r = api
        .post(
            "/v1/endpoints",
            json!({"url": "http://hooks.example.com/x"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("https"),
        "{:?}",
        r.body
    );
    let ep = api
        .create_endpoint(json!({"url": "https://hooks.example.com/x"}))
        .await;
    let id = ep["id"].as_str().unwrap();
    let r = api
        .patch(
            &format!("/v1/endpoints/{id}"),
            json!({"url": "http://hooks.example.com/x"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.error_field(), Some("url"));
}
