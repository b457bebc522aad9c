//! Our signatures checked by a verifier we did not write: the Standard
//! Webhooks reference library (PyPI `standardwebhooks`), with both secrets of
//! a rotation and a wrong one (docs/design.md §3.4).

use std::process::Command;
use std::time::Duration;

use eventflow_testkit::{Backend, Receiver, backend_tests, python_has, skipped};
use serde_json::json;

backend_tests!(the_standard_webhooks_reference_library_verifies_our_deliveries,);

async fn the_standard_webhooks_reference_library_verifies_our_deliveries(backend: Backend) {
    if !python_has(&["standardwebhooks"]) {
        return skipped(
            "the_standard_webhooks_reference_library_verifies_our_deliveries",
            "python3 with PyPI standardwebhooks is not installed",
        );
    }
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    let created = api.create_endpoint(json!({"url": rx.url("/")})).await;
    let ep = created["id"].as_str().unwrap().to_string();
    let old = created["secret"].as_str().unwrap().to_string();
    let new = api
        .post(&format!("/v1/endpoints/{ep}/secret/rotate"), json!({}))
        .await
        .body["secret"]
        .as_str()
        .unwrap()
        .to_string();
    api.patient().await;
    let got = rx.wait_for(1, Duration::from_secs(20)).await;
    let req = &got[0];
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("webhook-"))
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, body, headers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
Webhook(secret).verify(body, headers)
print("verified")
"#;
    let body = String::from_utf8(req.body.clone()).unwrap();
    let headers = serde_json::to_string(&headers).unwrap();
    for (secret, ok) in [
        (old.as_str(), true),
        (new.as_str(), true),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", false),
    ] {
        let out = Command::new("python3")
            .args(["-c", script, secret, &body, &headers])
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            ok,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
