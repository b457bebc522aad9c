//! Several servers on one PostgreSQL database (PostgreSQL only: SQLite is one
//! process per file). Skipped, saying so, without `EVENTFLOW_TEST_DATABASE_URL`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventflow_testkit::{Api, Backend, Options, TestDatabase, TestServer, wait_for};
use serde_json::json;

/// Three servers sharing one fresh database, all acting for `default`.
async fn three_nodes(test: &str) -> Option<(TestDatabase, Vec<TestServer>, Vec<Api>)> {
    three_nodes_with(test, None, None).await
}

/// Three servers on one database, with a shared clock and workflows.
async fn three_nodes_with(
    test: &str,
    clock: Option<Arc<dyn eventflow_store::Clock>>,
    workflows: Option<std::path::PathBuf>,
) -> Option<(TestDatabase, Vec<TestServer>, Vec<Api>)> {
    let Backend::Postgres(base) = Backend::postgres(test)? else {
        return None;
    };
    let db = TestDatabase::create(&base).await;
    let mut servers = Vec::new();
    for _ in 0..3 {
        let url = db.url.clone();
        let workflows = workflows.clone();
        servers.push(
            TestServer::spawn_with(Options {
                clock: clock.clone(),
                configure: Some(Box::new(move |c| {
                    c.database_url = url;
                    if let Some(w) = workflows {
                        c.workflows_dir = w;
                    }
                })),
            })
            .await,
        );
    }
    // Only the first start created `default`; its key works on every node.
    let key = servers[0].key.clone();
    let apis = servers
        .iter()
        .map(|s| {
            let mut api = s.api();
            api.key = Some(key.clone());
            api
        })
        .collect();
    Some((db, servers, apis))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_never_misses_an_event_written_on_three_nodes() {
    let Some((_db, _servers, apis)) = three_nodes("multinode::reader_never_misses").await else {
        return;
    };
    const PER_WRITER: usize = 20;
    const WRITERS_PER_NODE: usize = 6;
    let total = 3 * WRITERS_PER_NODE * PER_WRITER;

    let reader = {
        let api = apis[2].clone();
        tokio::spawn(async move {
            let mut after = 0i64;
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while seen.len() < total && Instant::now() < deadline {
                let r = api
                    .get(&format!("/v1/events?after={after}&wait=5&limit=1000"))
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
                for e in r.body["data"].as_array().unwrap() {
                    seen.push(e["sequence"].as_i64().unwrap());
                }
                after = r.body["nextAfter"].as_i64().unwrap();
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for api in &apis {
        for w in 0..WRITERS_PER_NODE {
            let api = api.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let r = api
                        .post(
                            "/v1/patients",
                            json!({"firstName": format!("W{w}"), "lastName": format!("P{i}")}),
                        )
                        .await;
                    assert_eq!(r.status, 201, "{}", r.body);
                }
            }));
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let seen = reader.await.unwrap();
    let expected: Vec<i64> = (1..=total as i64).collect();
    assert_eq!(seen, expected, "every event once, gap-free, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_poll_on_one_node_wakes_for_a_write_on_another() {
    let Some((_db, servers, apis)) = three_nodes("multinode::long_poll_wakes").await else {
        return;
    };
    let waiter = {
        let api = apis[1].clone();
        tokio::spawn(async move { api.get("/v1/events?after=0&wait=60").await })
    };
    // Let the long poll reach its wait; a write before it would also answer
    // at once, which proves nothing about the wake-up.
    let tenant = servers[1]
        .state
        .store
        .authenticate(&eventflow_server::auth::hash_key(&servers[0].key))
        .await
        .unwrap()
        .unwrap()
        .tenant_id;
    servers[1].until_waiting(&tenant, 1).await;
    apis[0]
        .post("/v1/patients", json!({"firstName": "A", "lastName": "B"}))
        .await;
    // Answered with the event before its 60 s wait is over (the 30 s bound
    // is a hang guard).
    let r = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the long poll answered before its wait ended")
        .unwrap();
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_written_on_one_node_are_read_on_the_others() {
    let Some((_db, _servers, apis)) = three_nodes("multinode::records_shared").await else {
        return;
    };
    let id = apis[0].patient().await;
    let mut versions = HashSet::new();
    for (i, api) in apis.iter().enumerate() {
        let r = api
            .patch(
                &format!("/v1/patients/{id}"),
                json!({"mrn": format!("M{i}")}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        versions.insert(r.body["version"].as_i64().unwrap());
    }
    assert_eq!(versions, HashSet::from([2, 3, 4]));
    let r = apis[2].get(&format!("/v1/patients/{id}")).await;
    assert_eq!(r.body["mrn"], "M2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_resume_after_the_database_drops_every_connection() {
    use sqlx::Connection;
    let Some(Backend::Postgres(base)) = Backend::postgres("multinode::writes_resume") else {
        return;
    };
    let db = TestDatabase::create(&base).await;
    let url = db.url.clone();
    let server = TestServer::spawn_with(Options {
        clock: None,
        configure: Some(Box::new(move |c| c.database_url = url)),
    })
    .await;
    let api = server.api();
    api.patient().await;
    // What a database restart or a network blip does to every connection.
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db.name())
    .execute(&mut admin)
    .await
    .unwrap();
    // The next write opens a new connection instead of failing for good.
    let r = api
        .post(
            "/v1/patients",
            json!({"firstName": "After", "lastName": "Restart"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(api.get("/readyz").await.status, 200);
    assert_eq!(api.events_after(0).await.len(), 2);
}

/// Workflow runs and timers are shared work: writes on three nodes start
/// each run once, and each timer fires once, whichever node takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_start_each_run_once_and_fire_each_timer_once() {
    let start: jiff::Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
    let clock = Arc::new(eventflow_store::ManualClock::new(start));
    let examples =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows");
    let Some((_db, servers, apis)) = three_nodes_with(
        "multinode::three_nodes_start_each_run_once_and_fire_each_timer_once",
        Some(clock.clone()),
        Some(examples),
    )
    .await
    else {
        return;
    };
    const PER_NODE: usize = 10;
    let mut writers = Vec::new();
    for (n, api) in apis.iter().enumerate() {
        let api = api.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..PER_NODE {
                let r = api
                    .post(
                        "/v1/patients",
                        json!({"firstName": "P", "lastName": format!("N{n}"), "email": format!("p{n}-{i}@example.com")}),
                    )
                    .await;
                assert_eq!(r.status, 201, "{}", r.body);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let total = 3 * PER_NODE;
    let per_recipient = |subject: &'static str, api: Api| async move {
        let r = api.get("/v1/notifications?limit=1000").await;
        let mut by: HashMap<String, usize> = HashMap::new();
        for n in r.body["data"].as_array().unwrap() {
            if n["subject"] == subject {
                *by.entry(n["to"].as_str().unwrap().to_string()).or_default() += 1;
            }
        }
        by
    };
    eventflow_testkit::wait_for(
        Duration::from_secs(30),
        "every onboarding run done",
        || async {
            let r = apis[1]
                .get("/v1/workflow-runs?workflow=patient-onboarding&status=succeeded&limit=1000")
                .await;
            (r.body["data"].as_array().unwrap().len() >= total).then_some(())
        },
    )
    .await;
    let welcomes = per_recipient("Welcome to Our Practice", apis[2].clone()).await;
    assert_eq!(welcomes.len(), total);
    assert!(
        welcomes.values().all(|&n| n == 1),
        "each welcome once: {welcomes:?}"
    );
    let r = apis[0].get("/v1/timers").await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), total);

    // 48 hours on: the thirty timers fire, each once, on whichever node.
    clock.advance(jiff::SignedDuration::from_hours(48));
    let reminders =
        eventflow_testkit::wait_for(Duration::from_secs(30), "every reminder", || async {
            let by = per_recipient("Your intake form is waiting", apis[0].clone()).await;
            (by.values().sum::<usize>() >= total).then_some(by)
        })
        .await;
    for s in &servers {
        s.automations_settled().await;
    }
    let again = per_recipient("Your intake form is waiting", apis[1].clone()).await;
    assert_eq!(again, reminders);
    assert_eq!(reminders.len(), total);
    assert!(
        reminders.values().all(|&n| n == 1),
        "each timer fired once: {reminders:?}"
    );
    let r = apis[2].get("/v1/timers").await;
    assert!(r.body["data"].as_array().unwrap().is_empty());
}

/// README, "Keys and scopes": a key revoked or rotated on one server
/// process is refused by another at once, though that one had it cached
/// (`key_cache_ttl_secs` 60): the revocation reaches it through
/// PostgreSQL's LISTEN/NOTIFY. The wait is bounded well below the cache's
/// 60 s, so only the notification can end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_on_one_process_is_refused_by_another_that_cached_it() {
    let Some(Backend::Postgres(base)) = Backend::postgres("multinode::revoked_key") else {
        return;
    };
    let db = TestDatabase::create(&base).await;
    let admin = "efk_two-process-revocation-key-0123456789";
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for dir in &dirs {
        nodes.push(
            eventflow_testkit::ServerProcess::start(
                env!("CARGO_BIN_EXE_eventflow"),
                dir.path(),
                &db.url,
                admin,
                &[],
                false,
            )
            .await,
        );
    }
    let (a, b) = (&nodes[0].api, &nodes[1].api);
    let mut keys = Vec::new();
    for name in ["revoked", "rotated"] {
        let r = a
            .post(
                "/v1/api-keys",
                json!({"name": name, "scopes": ["patients:read"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let k = b.with_key(r.body["key"].as_str().unwrap());
        // Node b checks it, and caches it.
        assert_eq!(k.get("/v1/patients").await.status, 200);
        keys.push((r.id(), k));
    }
    let r = a.delete(&format!("/v1/api-keys/{}", keys[0].0)).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = a
        .post(&format!("/v1/api-keys/{}/rotate", keys[1].0), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (_, k) in &keys {
        wait_for(
            Duration::from_secs(10),
            "the other process to refuse the old secret",
            || async { (k.get("/v1/patients").await.status == 401).then_some(()) },
        )
        .await;
    }
    // The rotated key's new secret works on b.
    let new = b.with_key(r.body["key"].as_str().unwrap());
    assert_eq!(new.get("/v1/patients").await.status, 200);
}

/// docs/fhir.md, "Heartbeats": with several nodes, one node sends each
/// heartbeat. Thirty quiet subscriptions, three nodes on one clock, three
/// heartbeat periods: each subscription gets one heartbeat a period.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_send_each_heartbeat_once() {
    let start: jiff::Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
    let clock = Arc::new(eventflow_store::ManualClock::new(start));
    let Some((_db, _servers, apis)) = three_nodes_with(
        "multinode::three_nodes_send_each_heartbeat_once",
        Some(clock.clone()),
        None,
    )
    .await
    else {
        return;
    };
    let topic = crate::helpers::topic_url(&apis[0], "patient.created").await;
    let rx = eventflow_testkit::Receiver::start().await;
    const SUBSCRIPTIONS: usize = 30;
    let mut ids = Vec::new();
    for n in 0..SUBSCRIPTIONS {
        let r = apis[n % 3]
            .post(
                "/fhir/Subscription",
                crate::helpers::with_heartbeat(
                    crate::helpers::subscription(
                        &topic,
                        &rx.url(&format!("/s{n}")),
                        "id-only",
                        None,
                    ),
                    60,
                ),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        wait_for(
            Duration::from_secs(20),
            "the subscription active",
            || async {
                let r = apis[0].get(&format!("/fhir/Subscription/{id}")).await;
                (r.body["status"] == "active").then_some(())
            },
        )
        .await;
    }
    let beats = |path: String| {
        rx.received()
            .iter()
            .filter(|r| {
                r.path == path && r.header("x-eventflow-event-type") == Some("fhir.heartbeat")
            })
            .map(|r| r.json()["timestamp"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    for period in 1..=3usize {
        clock.advance(jiff::SignedDuration::from_secs(if period == 1 {
            61
        } else {
            60
        }));
        rx.wait_for(SUBSCRIPTIONS * (1 + period), Duration::from_secs(30))
            .await;
    }
    for n in 0..SUBSCRIPTIONS {
        let got = beats(format!("/s{n}"));
        assert_eq!(got.len(), 3, "subscription {n}: {got:?}");
        let distinct: HashSet<&String> = got.iter().collect();
        assert_eq!(distinct.len(), 3, "subscription {n}: {got:?}");
    }
    assert_eq!(rx.count(), SUBSCRIPTIONS * 4);
}
