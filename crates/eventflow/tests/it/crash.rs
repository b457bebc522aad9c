//! `kill -9` in the middle of writes: every acknowledged write is there after
//! a restart, with its event, and the event log stays gap-free.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eventflow_testkit::{Api, Backend, ServerProcess, TestDatabase, backend_tests, wait_for};
use serde_json::json;
use tokio::sync::Mutex;

backend_tests!(
    acknowledged_writes_survive_kill_9,
    a_stopping_server_finishes_and_records_the_delivery_under_way,
    taking_over_an_earlier_runs_leases_leaves_this_runs_own_alone,
);

async fn start(dir: &std::path::Path, database_url: &str, key: &str) -> ServerProcess {
    ServerProcess::start(
        env!("CARGO_BIN_EXE_eventflow"),
        dir,
        database_url,
        key,
        &[],
        false,
    )
    .await
}

/// Creates patients on `api` until `stop` is set or a request fails (the
/// server was killed); records the id of each acknowledged one.
fn spawn_writer(
    api: Api,
    name: String,
    acknowledged: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let sent = api
                .request(reqwest::Method::POST, "/v1/patients")
                .json(&json!({"firstName": name, "lastName": format!("P{i}")}))
                .send()
                .await;
            let Ok(resp) = sent else { return };
            if resp.status().as_u16() != 201 {
                return;
            }
            let Ok(body) = resp.json::<serde_json::Value>().await else {
                return;
            };
            acknowledged
                .lock()
                .await
                .push(body["id"].as_str().unwrap().to_string());
        }
    })
}

async fn acknowledged_writes_survive_kill_9(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, _db) = backend.database_url().await;
    let key = "efk_crash-test-key-0123456789abcdefgh";
    let mut node = start(dir.path(), &url, key).await;
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            spawn_writer(
                node.api.clone(),
                format!("W{w}"),
                acknowledged.clone(),
                stop.clone(),
            )
        })
        .collect();
    // Kill once a good number of writes are acknowledged, mid-load.
    wait_for(Duration::from_secs(60), "200 acknowledged writes", || {
        let acknowledged = acknowledged.clone();
        async move { (acknowledged.lock().await.len() >= 200).then_some(()) }
    })
    .await;
    node.child.start_kill().unwrap(); // SIGKILL
    node.child.wait().await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acknowledged = acknowledged.lock().await.clone();

    let node = start(dir.path(), &url, key).await;
    let events = node.api.events_after(0).await;
    let sequences: Vec<i64> = events
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(
        sequences,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "gap-free after the crash"
    );
    let with_event: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    for id in &acknowledged {
        let r = node.api.get(&format!("/v1/patients/{id}")).await;
        assert_eq!(r.status, 200, "acknowledged write {id} was lost");
        assert!(with_event.contains(id.as_str()), "{id} has no event");
    }
    // Nothing committed without its event either: every patient has one.
    let mut listed = 0;
    let mut cursor = String::new();
    loop {
        let r = node
            .api
            .get(&format!("/v1/patients?limit=500{cursor}"))
            .await;
        for p in r.body["data"].as_array().unwrap() {
            assert!(with_event.contains(p["id"].as_str().unwrap()));
            listed += 1;
        }
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(listed, events.len());
    assert!(listed >= acknowledged.len());
}

/// Three server processes on one PostgreSQL database; one is killed with
/// `kill -9` while all three take writes. The survivors keep taking writes,
/// a reader on a survivor misses nothing, and every write acknowledged by
/// any node — the dead one included — is there with its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_of_three_nodes_loses_nothing_and_the_others_go_on() {
    let Some(Backend::Postgres(base)) = Backend::postgres("crash::one_of_three_nodes") else {
        return;
    };
    let db = TestDatabase::create(&base).await;
    let key = "efk_three-node-crash-key-0123456789abc";
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // A workflow with a timer per patient, due 2 s after the write: some
    // fire on the node that dies, some while it is dead; each must fire once.
    let workflows = tempfile::tempdir().unwrap();
    std::fs::write(
        workflows.path().join("timer-per-patient.yaml"),
        "name: timer-per-patient\non: patient.created\nsteps:\n  - schedule:\n      key: \"t:{{ data.id }}\"\n      after: 2s\n      steps:\n        - sms: {to: \"+15550001111\", body: \"timer {{ data.id }}\"}\n",
    )
    .unwrap();
    let workflows_dir = workflows.path().to_str().unwrap().to_string();
    let mut nodes = Vec::new();
    for dir in &dirs {
        nodes.push(
            ServerProcess::start(
                env!("CARGO_BIN_EXE_eventflow"),
                dir.path(),
                &db.url,
                key,
                &[("EVENTFLOW_WORKFLOWS_DIR", &workflows_dir)],
                false,
            )
            .await,
        );
    }
    // An endpoint subscribed to every patient event: every event must reach
    // it at least once, whichever node wrote it, the dead one included.
    let rx = eventflow_testkit::Receiver::start().await;
    nodes[0]
        .api
        .create_endpoint(json!({"url": rx.url("/"), "eventTypes": ["patient.created"]}))
        .await;
    // A network of two clinics, written to on every node; its
    // organisation's endpoint takes every patient of both.
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_eventflow"))
        .args([
            "orgs",
            "create",
            "three-node-network",
            "--database",
            &db.url,
        ])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let org_key = String::from_utf8(made.stdout).unwrap().trim().to_string();
    let org = nodes[0].api.with_key(&org_key);
    let mut clinic_keys = Vec::new();
    for name in ["three-node-a", "three-node-b"] {
        let r = org.post("/v1/clinics", json!({ "name": name })).await;
        assert_eq!(r.status, 201, "{}", r.body);
        clinic_keys.push(r.body["apiKey"].as_str().unwrap().to_string());
    }
    let network_rx = eventflow_testkit::Receiver::start().await;
    org.create_endpoint(json!({"url": network_rx.url("/"), "eventTypes": ["patient.created"]}))
        .await;
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let in_network: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for w in 0..2 {
            writers.push(spawn_writer(
                node.api.clone(),
                format!("N{n}W{w}"),
                acknowledged.clone(),
                stop.clone(),
            ));
        }
        for (c, key) in clinic_keys.iter().enumerate() {
            writers.push(spawn_writer(
                node.api.with_key(key),
                format!("N{n}C{c}"),
                in_network.clone(),
                stop.clone(),
            ));
        }
    }
    wait_for(Duration::from_secs(60), "150 acknowledged writes", || {
        let acknowledged = acknowledged.clone();
        async move { (acknowledged.lock().await.len() >= 150).then_some(()) }
    })
    .await;
    nodes[0].child.start_kill().unwrap();
    nodes[0].child.wait().await.unwrap();
    // The survivors go on: 150 more writes after the kill.
    let at_kill = acknowledged.lock().await.len();
    wait_for(
        Duration::from_secs(60),
        "writes to go on after the kill",
        || {
            let acknowledged = acknowledged.clone();
            async move { (acknowledged.lock().await.len() >= at_kill + 150).then_some(()) }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acknowledged = acknowledged.lock().await.clone();
    let events = nodes[2].api.events_after(0).await;
    let sequences: Vec<i64> = events
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=events.len() as i64).collect::<Vec<_>>());
    let with_event: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    for id in &acknowledged {
        assert!(
            with_event.contains(id.as_str()),
            "acknowledged write {id} lost"
        );
    }
    // The network's log is gap-free and holds every acknowledged write of
    // both clinics, whichever node wrote it, the dead one included.
    let in_network = in_network.lock().await.clone();
    // As many writers wrote to the network as to the lone tenant, and a
    // writer stops at its first error: had the organisation's lock made
    // groups deadlock, the network's writers would have stopped early.
    assert!(
        in_network.len() * 2 >= acknowledged.len(),
        "{} network writes, {} others",
        in_network.len(),
        acknowledged.len()
    );
    let network = nodes[2].api.with_key(&org_key).events_after(0).await;
    let numbers: Vec<i64> = network
        .iter()
        .map(|e| e["networkSequence"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=network.len() as i64).collect::<Vec<_>>());
    let logged: std::collections::HashSet<&str> = network
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    for id in &in_network {
        assert!(logged.contains(id.as_str()), "network write {id} lost");
    }
    // A write on a survivor still works and is seen by the other survivor.
    let id = nodes[1].api.patient().await;
    let r = nodes[2].api.get(&format!("/v1/patients/{id}")).await;
    assert_eq!(r.status, 200);
    // Every event reached the endpoint: the dead node's leases ran out
    // (60 s) and the survivors took its deliveries over.
    let want: std::collections::HashSet<String> = nodes[2]
        .api
        .events_after(0)
        .await
        .iter()
        .filter(|e| e["type"] == "patient.created")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    wait_for(Duration::from_secs(120), "every event delivered", || {
        let got: std::collections::HashSet<String> = rx
            .received()
            .iter()
            .filter(|r| r.header("webhook-id").is_some())
            .filter_map(|r| r.header("webhook-id").map(str::to_string))
            .collect();
        let missing = want.difference(&got).count();
        async move { (missing == 0).then_some(()) }
    })
    .await;
    // The organisation's endpoint got every network event.
    let want_network: std::collections::HashSet<String> = network
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    wait_for(
        Duration::from_secs(120),
        "every network event delivered",
        || {
            let got: std::collections::HashSet<String> = network_rx
                .received()
                .iter()
                .filter_map(|r| r.header("webhook-id").map(str::to_string))
                .collect();
            let missing = want_network.difference(&got).count();
            async move { (missing == 0).then_some(()) }
        },
    )
    .await;
    // The survivors deliver new events at once again: each of five writes,
    // on either survivor, reaches the receiver as it is written, not when a
    // lease runs out (60 s; the 30 s bound is a hang guard).
    for i in 0..5 {
        let before = rx.count();
        nodes[1 + i % 2].api.patient().await;
        rx.wait_for(before + 1, Duration::from_secs(30)).await;
    }
    // And nothing stays pending: each delivery was recorded by some node.
    // A delivery the dead node sent but had not yet recorded waits for its
    // lease (60 s from when it was taken), then a survivor sends it again.
    let ep = nodes[1].api.get("/v1/endpoints").await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    nodes[1]
        .api
        .wait_until_nothing_pending(&ep, Duration::from_secs(120))
        .await;
    // Each patient's timer fired exactly once, whichever node held it, and
    // no timer or run is left: runs the dead node held were taken over when
    // their leases ran out.
    let patients: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "patient.created")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    // (Patients written after `events` was read have timers too: wait for
    // each of these by name, not for a count.)
    let fired = wait_for(Duration::from_secs(150), "every timer fired", || {
        let api = nodes[2].api.clone();
        let patients = patients.clone();
        async move {
            let by = timer_messages(&api).await;
            patients.iter().all(|p| by.contains_key(p)).then_some(by)
        }
    })
    .await;
    for p in &patients {
        assert_eq!(
            fired.get(p.as_str()),
            Some(&1),
            "the timer of {p} fired once"
        );
    }
    wait_for(Duration::from_secs(120), "no timer or run left", || {
        let api = nodes[1].api.clone();
        async move {
            let timers = api.get("/v1/timers").await.body["data"]
                .as_array()
                .map(Vec::len);
            let runs = api.get("/v1/workflow-runs?status=pending").await.body["data"]
                .as_array()
                .map(Vec::len);
            (timers == Some(0) && runs == Some(0)).then_some(())
        }
    })
    .await;
    // Later, with nothing left to run: still exactly one message per timer,
    // also for the patients written after the kill.
    let last = timer_messages(&nodes[1].api).await;
    assert!(
        last.values().all(|&n| n == 1),
        "each timer fired once: {last:?}"
    );
    assert!(patients.iter().all(|p| last.contains_key(p)));
}

/// How many timer messages the outbox holds per patient id.
async fn timer_messages(api: &Api) -> std::collections::HashMap<String, usize> {
    let mut by = std::collections::HashMap::new();
    let mut cursor = String::new();
    loop {
        let r = api
            .get(&format!("/v1/notifications?limit=1000{cursor}"))
            .await
            .body;
        for n in r["data"].as_array().unwrap() {
            if let Some(id) = n["body"].as_str().and_then(|b| b.strip_prefix("timer ")) {
                *by.entry(id.to_string()).or_insert(0) += 1;
            }
        }
        match r["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return by,
        }
    }
}

/// SIGTERM while a webhook is under way: the server stops taking requests,
/// lets the attempt end and records it before it exits, so the restarted
/// server does not send it again.
async fn a_stopping_server_finishes_and_records_the_delivery_under_way(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, _db) = backend.database_url().await;
    let key = "efk_graceful-stop-key-0123456789abcdef";
    let server = start(dir.path(), &url, key).await;
    let api = server.api.clone();
    let rx = eventflow_testkit::Receiver::start().await;
    let gate = eventflow_testkit::Gate::default();
    rx.answer(eventflow_testkit::Answer::Held(gate.clone(), 200));
    let ep = api
        .post("/v1/endpoints", json!({"url": rx.url("/hook")}))
        .await;
    assert_eq!(ep.status, 201, "{}", ep.body);
    api.patient().await;
    // The attempt is under way, held by the receiver.
    rx.wait_for(1, Duration::from_secs(20)).await;
    let mut child = server.child;
    let pid = child.id().expect("a running server");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    // It stops listening first.
    wait_for(
        Duration::from_secs(20),
        "the server to stop listening",
        || {
            let api = api.clone();
            async move {
                api.request(reqwest::Method::GET, "/healthz")
                    .send()
                    .await
                    .is_err()
                    .then_some(())
            }
        },
    )
    .await;
    // The answer comes while it stops; it exits once it is recorded.
    gate.open();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the server exits")
        .unwrap();
    assert!(status.success(), "{status}");
    let again = start(dir.path(), &url, key).await;
    let r = again
        .api
        .get(&format!("/v1/endpoints/{}/deliveries", ep.id()))
        .await;
    let deliveries = r.body["data"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{}", r.body);
    assert_eq!(deliveries[0]["status"], "succeeded", "{}", r.body);
    assert_eq!(deliveries[0]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(rx.count(), 1);
}

/// At start the server takes over the leases an earlier run left (SQLite:
/// one process per file). It serves requests before that runs, so a
/// delivery it has just handed over may already be under way: its lease is
/// its own and stays, or the delivery would be claimed and sent twice.
async fn taking_over_an_earlier_runs_leases_leaves_this_runs_own_alone(backend: Backend) {
    let start: jiff::Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
    let (server, clock) = backend.spawn_with_clock(start).await;
    let api = server.api();
    let rx = eventflow_testkit::Receiver::start().await;
    let gate = eventflow_testkit::Gate::default();
    rx.answer(eventflow_testkit::Answer::Held(gate.clone(), 200));
    // Thin: no challenge first, the delivery goes at once.
    let ep = api
        .post(
            "/v1/endpoints",
            json!({"url": rx.url("/hook"), "payload": "thin"}),
        )
        .await;
    assert_eq!(ep.status, 201, "{}", ep.body);
    let ep = ep.body["id"].as_str().unwrap().to_string();
    api.patient().await;
    // Under way, held by the receiver.
    rx.wait_for(1, Duration::from_secs(20)).await;
    server
        .state
        .store
        .take_over_leases(eventflow_store::Clock::now(&*clock))
        .await
        .unwrap();
    let pending = api
        .get(&format!("/v1/endpoints/{ep}/deliveries?status=pending"))
        .await
        .body;
    let next = pending["data"][0]["nextAttemptAt"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(next, eventflow_model::time::format(start), "{pending}");
    gate.open();
    api.wait_until_nothing_pending(&ep, Duration::from_secs(20))
        .await;
    assert_eq!(rx.count(), 1);
}
