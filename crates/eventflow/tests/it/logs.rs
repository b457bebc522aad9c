//! Logs never hold patient data or secrets: run the real binary with debug
//! logging, send recognisable values through every kind of request, and
//! search everything it printed.

use eventflow_testkit::{Api, ServerProcess};
use serde_json::json;

const MARKERS: &[&str] = &[
    "Zyxwvut",
    "Qmarker",
    "+15557654321",
    "zq@example.org",
    "MRN-77331",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_hold_no_field_values_and_no_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = "efk_log-test-key-that-must-never-be-printed";
    // The example workflows run too (the onboarding SMS carries the name).
    let examples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows");
    let server = ServerProcess::start(
        env!("CARGO_BIN_EXE_eventflow"),
        dir.path(),
        "",
        key,
        &[
            ("RUST_LOG", "debug"),
            ("EVENTFLOW_WORKFLOWS_DIR", examples.to_str().unwrap()),
        ],
        true,
    )
    .await;
    let (mut child, api) = (server.child, server.api);
    // Read what it prints as it prints it: a full pipe would stop the
    // server mid-request (debug logging is verbose).
    let drain = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        tokio::spawn(async move {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut out).await;
            }
            out
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));

    // A webhook endpoint: each delivery attempt is logged in its span.
    let rx = eventflow_testkit::Receiver::start().await;
    let ep = api
        .post("/v1/endpoints", json!({"url": rx.url("/hook")}))
        .await;
    assert_eq!(ep.status, 201, "{}", ep.body);
    let patient = api
        .create(
            "patients",
            json!({"firstName": "Zyxwvut", "lastName": "Qmarker", "phone": "+15557654321",
                   "email": "zq@example.org", "mrn": "MRN-77331"}),
        )
        .await;
    api.get(&format!("/v1/patients/{patient}?include=appointments"))
        .await;
    api.get("/v1/patients?limit=5").await;
    api.patch(
        &format!("/v1/patients/{patient}"),
        json!({"lastName": "Qmarker2"}),
    )
    .await;
    // Rejected requests carrying the values, too.
    api.post(
        "/v1/patients",
        json!({"firstName": "Zyxwvut", "lastName": "Qmarker", "phone": "Zyxwvut"}),
    )
    .await;
    api.post(
        "/v1/patients",
        json!({"firstName": "Zyxwvut", "nickname": "Qmarker"}),
    )
    .await;
    api.get("/v1/events?after=0").await;
    let wrong = Api {
        key: Some("efk_wrong-key-Zyxwvut".into()),
        ..api.clone()
    };
    wrong.get("/v1/patients").await;
    // A key's whole life: made, used, rotated, revoked, refused.
    let made = api
        .post(
            "/v1/api-keys",
            json!({"name": "Zyxwvut", "scopes": ["patients:read"]}),
        )
        .await;
    let first = made.body["key"].as_str().unwrap().to_string();
    let scoped = api.with_key(&first);
    scoped.get("/v1/patients").await;
    scoped.get("/v1/appointments").await;
    let rotated = api
        .post(&format!("/v1/api-keys/{}/rotate", made.id()), json!({}))
        .await;
    let second = rotated.body["key"].as_str().unwrap().to_string();
    api.delete(&format!("/v1/api-keys/{}", made.id())).await;
    api.with_key(&second).get("/v1/patients").await;
    // Wait for a delivery and a workflow run to be done, to find them in
    // the logs by their ids.
    let delivery = eventflow_testkit::wait_for(
        std::time::Duration::from_secs(20),
        "a delivery that succeeded",
        || async {
            let r = api
                .get(&format!("/v1/endpoints/{}/deliveries", ep.id()))
                .await;
            r.body["data"]
                .as_array()?
                .iter()
                .find(|d| d["status"] == "succeeded")
                .map(|d| d["id"].as_str().unwrap().to_string())
        },
    )
    .await;
    let run = eventflow_testkit::wait_for(
        std::time::Duration::from_secs(20),
        "a finished workflow run",
        || async {
            let r = api.get("/v1/workflow-runs").await;
            r.body["data"]
                .as_array()?
                .iter()
                .find(|r| r["status"] != "pending")
                .map(|r| r["id"].as_str().unwrap().to_string())
        },
    )
    .await;

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout.await.unwrap()),
        String::from_utf8_lossy(&stderr.await.unwrap())
    );
    assert!(
        printed.contains("listening"),
        "the server logged nothing: {printed}"
    );
    for marker in MARKERS {
        assert!(
            !printed.contains(marker),
            "a field value reached the logs: {marker}"
        );
    }
    assert!(!printed.contains(key), "the API key reached the logs");
    // Not a terminal: no colour codes in what a collector reads.
    assert!(!printed.contains('\u{1b}'), "ANSI escapes in piped logs");
    // One delivery, one run: each followed by its id in a span.
    assert!(
        printed.contains(&format!("delivery{{delivery={delivery}")),
        "no span of the delivery's attempt: {}",
        printed
            .lines()
            .filter(|l| l.contains("dlv_"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        printed.contains(&format!("workflow_run{{run={run}")),
        "no span of the workflow run"
    );
    for secret in [&first, &second] {
        assert!(
            !printed.contains(&secret[4..]),
            "a created or rotated key reached the logs"
        );
    }
    assert!(
        !printed.contains("wrong-key"),
        "a presented key reached the logs"
    );
}
