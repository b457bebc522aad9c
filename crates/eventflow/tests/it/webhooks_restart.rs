//! Delivery across a crash (docs/design.md §3.4, at least once): attempts
//! in flight when the server process is killed with `kill -9` are made again
//! after it starts.

use std::collections::HashSet;
use std::time::Duration;

use eventflow_testkit::{Answer, Backend, Receiver, ServerProcess, backend_tests, wait_for};
use serde_json::json;

backend_tests!(attempts_in_flight_at_kill_9_are_made_again_after_restart,);

async fn attempts_in_flight_at_kill_9_are_made_again_after_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, _db) = backend.database_url().await;
    let key = "efk_delivery-crash-key-0123456789abcdef";
    let start = || {
        ServerProcess::start(
            env!("CARGO_BIN_EXE_eventflow"),
            dir.path(),
            &url,
            key,
            &[],
            false,
        )
    };
    let rx = Receiver::start().await;
    rx.answer(Answer::Hang);
    let mut node = start().await;
    let ep = node
        .api
        .create_endpoint(json!({"url": rx.url("/"), "eventTypes": ["patient.created"]}))
        .await;
    let ep = ep["id"].as_str().unwrap().to_string();
    for _ in 0..30 {
        node.api.patient().await;
    }
    // Attempts are in flight (the receiver never answers) when the process dies.
    rx.wait_for(5, Duration::from_secs(30)).await;
    node.child.start_kill().unwrap();
    node.child.wait().await.unwrap();
    rx.answer(Answer::Status(200));
    let before_restart = rx.count();
    let node = start().await;
    let events = node.api.events_after(0).await;
    let want: HashSet<String> = events
        .iter()
        .filter(|e| e["type"] == "patient.created")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(want.len(), 30);
    // A node's leases run out after 60 s on PostgreSQL (another node may
    // still hold them); on SQLite the one process takes them back at start.
    wait_for(
        Duration::from_secs(120),
        "every event delivered after the restart",
        || {
            let got: HashSet<String> = rx
                .received()
                .iter()
                .skip(before_restart)
                .filter_map(|r| r.header("webhook-id").map(str::to_string))
                .collect();
            let done = want.is_subset(&got);
            async move { done.then_some(()) }
        },
    )
    .await;
    node.api
        .wait_until_nothing_pending(&ep, Duration::from_secs(60))
        .await;
}
