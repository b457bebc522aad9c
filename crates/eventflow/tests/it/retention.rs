//! Retention (the README's "Retention and growth"): each kind of history is
//! kept for its own time, and under steady traffic no table of the store
//! grows without bound. The clock is a manual one: days pass at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventflow_testkit::{Answer, Backend, Options, Receiver, TestServer, backend_tests, wait_for};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

backend_tests!(
    under_steady_traffic_every_table_levels_off,
    each_history_is_kept_for_its_own_time,
);

const LONG: Duration = Duration::from_secs(30);

/// The row count of every table `list` names, through `pool` (either
/// backend's), which it then closes.
macro_rules! count_tables {
    ($pool:expr, $list:expr) => {{
        use sqlx::Row;
        let pool = $pool;
        let tables: Vec<String> = sqlx::query($list)
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut counts = BTreeMap::new();
        for t in tables {
            let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
                .fetch_one(&pool)
                .await
                .unwrap()
                .get(0);
            counts.insert(t, n);
        }
        pool.close().await;
        counts
    }};
}

/// The row count of every table of the server's database.
async fn row_counts(server: &TestServer) -> BTreeMap<String, i64> {
    match &server.database {
        Some(db) => count_tables!(
            sqlx::PgPool::connect(&db.url).await.unwrap(),
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'"
        ),
        None => {
            let path = eventflow_server::sqlite_path(server.dir.path());
            count_tables!(
                sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display()))
                    .await
                    .unwrap(),
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    }
}

async fn spawn(
    backend: &Backend,
    start: Timestamp,
    days: [u32; 4],
) -> (TestServer, Arc<eventflow_store::ManualClock>) {
    let clock = Arc::new(eventflow_store::ManualClock::new(start));
    let server = backend
        .spawn_with(Options {
            clock: Some(clock.clone()),
            configure: Some(Box::new(move |c| {
                c.event_retention_days = days[0];
                c.delivery_retention_days = days[1];
                c.audit_retention_days = days[2];
                c.disclosure_retention_days = days[3];
            })),
        })
        .await;
    (server, clock)
}

/// A soak on the manual clock: the same traffic every day (writes, reads,
/// idempotent writes, webhook deliveries of patient data) and the
/// server's retention pass each day. Once the longest retention has
/// passed, every table holds as many rows one day as the day before.
async fn under_steady_traffic_every_table_levels_off(backend: Backend) {
    let start: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    let (server, clock) = spawn(&backend, start, [2, 1, 3, 4]).await;
    let api = server.api();
    let rx = Receiver::start().await;
    let ep = api
        .create_endpoint(
            json!({"url": rx.url("/"), "purpose": "other", "purposeText": "a registry"}),
        )
        .await;
    let ep = ep["id"].as_str().unwrap().to_string();
    let mut patients = Vec::new();
    for _ in 0..4 {
        patients.push(api.patient().await);
    }
    let mut sent = 4;
    let mut by_day = Vec::new();
    for day in 0..10 {
        for (i, p) in patients.iter().enumerate() {
            let r = api
                .send(
                    api.request(reqwest::Method::PATCH, &format!("/v1/patients/{p}"))
                        .header("idempotency-key", format!("day-{day}-{i}"))
                        .json(&json!({"phone": format!("+1555000{day:02}{i:02}")})),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(api.get(&format!("/v1/patients/{p}")).await.status, 200);
        }
        sent += patients.len();
        rx.wait_for(sent, LONG).await;
        api.wait_until_nothing_pending(&ep, LONG).await;
        eventflow_server::retention_pass(&server.state)
            .await
            .expect("retention");
        by_day.push(row_counts(&server).await);
        clock.advance(SignedDuration::from_hours(24));
    }
    // The longest retention is four days: from the sixth day on, nothing grows.
    for day in 6..10 {
        assert_eq!(
            by_day[day], by_day[5],
            "day {day} against day 5 (every table's row count)"
        );
    }
    // And the history is really there, not purged early.
    let last = &by_day[9];
    assert_eq!(last["events"], 12, "{last:?}");
    assert_eq!(last["disclosures"], 20, "{last:?}");
    assert!(last["audit_log"] > 0 && last["deliveries"] > 0, "{last:?}");
}

/// Each kind of history goes after its own retention, in bounded writes:
/// deliveries before their events, events before audit entries, audit
/// entries before disclosure records; a pending delivery stays, and so does
/// each endpoint's newest delivery (its numbering goes on from it); the
/// records themselves stay.
async fn each_history_is_kept_for_its_own_time(backend: Backend) {
    let start: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    let (server, clock) = spawn(&backend, start, [3, 1, 5, 7]).await;
    let api = server.api();
    let rx = Receiver::start().await;
    let ep = api
        .create_endpoint(json!({"url": rx.url("/"), "eventTypes": ["patient.*"]}))
        .await;
    let ep = ep["id"].as_str().unwrap().to_string();
    let patient = api.patient().await;
    rx.wait_for(1, LONG).await;
    api.wait_until_nothing_pending(&ep, LONG).await;
    // Another clinic's disclosure of the same age: each clinic's records
    // are purged, not only the first's.
    let other = server.new_tenant("Other clinic").await;
    let other_rx = Receiver::start().await;
    let other_ep = other
        .create_endpoint(json!({"url": other_rx.url("/"), "eventTypes": ["patient.*"]}))
        .await;
    let other_ep = other_ep["id"].as_str().unwrap().to_string();
    other.patient().await;
    other_rx.wait_for(1, LONG).await;
    other.wait_until_nothing_pending(&other_ep, LONG).await;
    // A delivery that stays pending: its receiver answers 410 Gone, which
    // disables the endpoint and leaves the delivery waiting for it.
    let held_rx = Receiver::start().await;
    held_rx.answer(Answer::Status(410));
    let held = api
        .create_endpoint(json!({"url": held_rx.url("/"), "eventTypes": ["patient.*"]}))
        .await;
    let held = held["id"].as_str().unwrap().to_string();
    let r = api
        .patch(
            &format!("/v1/patients/{patient}"),
            json!({"phone": "+15550001111"}),
        )
        .await;
    assert_eq!(r.status, 200);
    held_rx.wait_for(1, LONG).await;
    wait_for(LONG, "the endpoint disabled", || {
        let api = api.clone();
        let held = held.clone();
        async move {
            let r = api.get(&format!("/v1/endpoints/{held}")).await;
            (r.body["disabled"] == true).then_some(())
        }
    })
    .await;
    let count = |name: &'static str| {
        let server = &server;
        async move { row_counts(server).await[name] }
    };
    let pass = || async {
        eventflow_server::retention_pass(&server.state)
            .await
            .expect("retention")
    };
    rx.wait_for(2, LONG).await;
    api.wait_until_nothing_pending(&ep, LONG).await;
    let deliveries = count("deliveries").await;
    assert!(deliveries >= 2);
    assert_eq!(pass().await, eventflow_store::Purged::default());
    // Two days on: the finished deliveries go, not the pending one, and
    // not an endpoint's newest (the next is numbered after it).
    clock.advance(SignedDuration::from_hours(48));
    let p = pass().await;
    assert_eq!((p.events, p.audit_entries, p.disclosures), (0, 0, 0));
    assert_eq!(p.deliveries, 1, "{p:?}");
    assert_eq!(count("deliveries").await, deliveries - 1);
    // Four days on: the events, with the deliveries made of them, but for
    // each endpoint's newest.
    clock.advance(SignedDuration::from_hours(48));
    let p = pass().await;
    assert!(
        p.events >= 2 && p.audit_entries == 0 && p.disclosures == 0,
        "{p:?}"
    );
    assert_eq!(count("deliveries").await, 3);
    assert_eq!(
        api.get(&format!("/v1/patients/{patient}")).await.status,
        200
    );
    assert!(count("audit_log").await > 0);
    // Six days on: the audit entries; eight: the disclosure records.
    clock.advance(SignedDuration::from_hours(48));
    let p = pass().await;
    assert!(p.audit_entries > 0 && p.disclosures == 0, "{p:?}");
    assert_eq!(count("disclosures").await, 3);
    clock.advance(SignedDuration::from_hours(48));
    let p = pass().await;
    assert_eq!(p.disclosures, 3, "{p:?}");
    assert_eq!(count("disclosures").await, 0);
    // The endpoint's numbering goes on from its newest delivery kept.
    api.patch(
        &format!("/v1/patients/{patient}"),
        json!({"phone": "+15550002222"}),
    )
    .await;
    let got = rx.wait_for(3, LONG).await;
    assert_eq!(got[2].header("x-eventflow-endpoint-sequence"), Some("3"));
}
