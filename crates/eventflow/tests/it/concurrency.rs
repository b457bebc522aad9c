//! Sequences under concurrent writers (docs/design.md §3.2): a reader polling
//! `after=N` never misses an event that commits later with a smaller number,
//! and concurrent changes to one record each get their own version.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use eventflow_testkit::{Api, Backend, backend_tests};
use serde_json::{Value, json};

use crate::helpers::{all_events, sequences};

backend_tests!(
    a_polling_reader_sees_every_event_once_in_order_while_16_writers_create,
    mixed_concurrent_writes_keep_sequences_gap_free_and_versions_ordered,
    concurrent_patches_to_one_record_get_distinct_versions_in_sequence_order,
    concurrent_patches_with_the_same_if_match_let_exactly_one_win,
    failing_writes_committed_beside_good_ones_leave_nothing_and_spoil_nothing,
);

const WRITERS: usize = 16;
const PER_WRITER: usize = 40;

/// Polls `after=N` with a long poll until `want` events are seen (or 60 s
/// pass), checking each page continues exactly where the last one ended.
async fn poll_until(api: Api, types: Option<&'static str>, want: usize) -> Vec<Value> {
    let mut seen: Vec<Value> = Vec::with_capacity(want);
    let mut after = 0i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reader saw {} of {want} events in 60 s",
            seen.len()
        );
        let mut path = format!("/v1/events?after={after}&wait=5&limit=37");
        if let Some(t) = types {
            path.push_str(&format!("&types={t}"));
        }
        let r = api.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let data = r.body["data"].as_array().expect("data").clone();
        let next = r.body["nextAfter"].as_i64().expect("nextAfter");
        if data.is_empty() {
            assert_eq!(next, after);
            continue;
        }
        let seqs = sequences(&data);
        if types.is_none() {
            let expected: Vec<i64> = (after + 1..=after + data.len() as i64).collect();
            assert_eq!(
                seqs, expected,
                "after={after}: the page must continue without a gap (a gap here is an event \
                 that commits later with a smaller sequence, which a reader would miss)"
            );
        } else {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] > after);
        }
        assert_eq!(next, *seqs.last().unwrap());
        after = next;
        seen.extend(data);
    }
    seen
}

async fn a_polling_reader_sees_every_event_once_in_order_while_16_writers_create(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let total = WRITERS * PER_WRITER;

    let reader = tokio::spawn(poll_until(api.clone(), None, total));
    // A second reader that only follows one writer's records by type.
    let filtered = tokio::spawn(poll_until(api.clone(), Some("practitioner.*"), PER_WRITER));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let api = api.clone();
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(PER_WRITER);
            for i in 0..PER_WRITER {
                let (collection, body) = if w == 0 {
                    (
                        "practitioners",
                        json!({"firstName": format!("W{w}"), "lastName": format!("N{i}")}),
                    )
                } else {
                    (
                        "patients",
                        json!({"firstName": format!("W{w}"), "lastName": format!("N{i}")}),
                    )
                };
                ids.push(api.create(collection, body).await);
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for w in writers {
        for id in w.await.expect("writer") {
            assert!(written.insert(id), "ids are unique");
        }
    }
    let seen = tokio::time::timeout(Duration::from_secs(90), reader)
        .await
        .expect("the reader finishes")
        .expect("reader");

    assert_eq!(seen.len(), total, "every write's event, once");
    assert_eq!(
        sequences(&seen),
        (1..=total as i64).collect::<Vec<_>>(),
        "strictly increasing, gap-free, no repeats"
    );
    let ids: HashSet<String> = seen
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids, written,
        "each event is about a record that was written"
    );
    let event_ids: HashSet<&str> = seen.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(event_ids.len(), total);
    // Nothing more arrives than was written.
    let r = api.get(&format!("/v1/events?after={total}")).await;
    assert_eq!(r.body["data"], json!([]));

    let filtered = tokio::time::timeout(Duration::from_secs(30), filtered)
        .await
        .expect("the filtered reader finishes")
        .expect("filtered reader");
    assert_eq!(filtered.len(), PER_WRITER);
    assert!(filtered.iter().all(|e| e["type"] == "practitioner.created"));
}

async fn mixed_concurrent_writes_keep_sequences_gap_free_and_versions_ordered(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let api = api.clone();
        let patient = patient.clone();
        tasks.push(tokio::spawn(async move {
            let mut events = 0usize;
            for i in 0..10 {
                let id = api
                    .create("encounters", json!({"patientId": patient}))
                    .await;
                events += 1;
                let r = api
                    .patch(
                        &format!("/v1/encounters/{id}"),
                        json!({"type": format!("w{w}-{i}")}),
                    )
                    .await;
                assert_eq!(r.status, 200);
                events += 1;
                // A batch: two events in one transaction.
                let r = api
                    .post(
                        "/v1/batch",
                        json!({"operations": [
                            {"method": "PATCH", "path": format!("/v1/encounters/{id}"), "body": {"status": "finished"}},
                            {"method": "DELETE", "path": format!("/v1/encounters/{id}")}
                        ]}),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.body);
                events += 2;
                // A failing write in between takes no sequence.
                let r = api
                    .post("/v1/encounters", json!({"patientId": "pat_missing"}))
                    .await;
                assert_eq!(r.status, 422);
            }
            events
        }));
    }
    let mut total = 1;
    for t in tasks {
        total += t.await.expect("writer");
    }
    let events = all_events(&api, 0).await;
    assert_eq!(sequences(&events), (1..=total as i64).collect::<Vec<_>>());
    // Per record, versions rise 1, 2, 3, 4 in sequence order.
    let mut versions: HashMap<String, Vec<i64>> = HashMap::new();
    for e in &events[1..] {
        versions
            .entry(e["resource"]["id"].as_str().unwrap().to_string())
            .or_default()
            .push(e["resource"]["version"].as_i64().unwrap());
    }
    assert_eq!(versions.len(), 80);
    for (id, v) in versions {
        assert_eq!(v, [1, 2, 3, 4], "{id}");
    }
}

async fn concurrent_patches_to_one_record_get_distinct_versions_in_sequence_order(
    backend: Backend,
) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let n = 24;
    let mut tasks = Vec::new();
    for i in 0..n {
        let api = api.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let r = api
                .patch(
                    &format!("/v1/patients/{id}"),
                    json!({"mrn": format!("M{i}")}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(
                r.header("etag"),
                Some(format!("\"{}\"", r.body["version"]).as_str())
            );
            (
                r.body["mrn"].as_str().unwrap().to_string(),
                r.body["version"].as_i64().unwrap(),
            )
        }));
    }
    let mut by_mrn = HashMap::new();
    for t in tasks {
        let (mrn, version) = t.await.expect("patch");
        by_mrn.insert(mrn, version);
    }
    let mut versions: Vec<i64> = by_mrn.values().copied().collect();
    versions.sort();
    assert_eq!(
        versions,
        (2..=n + 1).collect::<Vec<_>>(),
        "every patch got its own version"
    );

    let events = all_events(&api, 1).await;
    assert_eq!(events.len(), n as usize);
    assert_eq!(
        events
            .iter()
            .map(|e| e["resource"]["version"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        (2..=n + 1).collect::<Vec<_>>(),
        "versions rise in sequence order"
    );
    // Each event's previous is the state the one before it left.
    let mut prior = Value::Null;
    for e in &events {
        assert_eq!(e["type"], "patient.updated");
        assert_eq!(e["previous"], json!({ "mrn": prior }));
        let mrn = e["data"]["mrn"].as_str().unwrap();
        assert_eq!(
            by_mrn[mrn],
            e["resource"]["version"].as_i64().unwrap(),
            "the response and the event agree on the version"
        );
        assert_eq!(e["data"]["version"], e["resource"]["version"]);
        prior = json!(mrn);
    }
    let last = api.get(&format!("/v1/patients/{id}")).await;
    assert_eq!(last.body["version"], n + 1);
    assert_eq!(last.body["mrn"], prior);
}

async fn concurrent_patches_with_the_same_if_match_let_exactly_one_win(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let id = api.patient().await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let api = api.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            api.send(
                api.request(reqwest::Method::PATCH, &format!("/v1/patients/{id}"))
                    .header("if-match", "\"1\"")
                    .json(&json!({"mrn": format!("M{i}")})),
            )
            .await
            .status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("patch"));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        11,
        "{statuses:?}"
    );
    let events = all_events(&api, 0).await;
    assert_eq!(sequences(&events), [1, 2], "one update, one event");
    assert_eq!(events[1]["resource"]["version"], 2);
}

/// Concurrent requests share one transaction (group commit). Invalid ones,
/// failing batches and stale versions among them change nothing, and every
/// good one beside them commits with its event.
async fn failing_writes_committed_beside_good_ones_leave_nothing_and_spoil_nothing(
    backend: Backend,
) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let before = api.events_after(0).await.len();
    let mut tasks = Vec::new();
    for i in 0..60usize {
        let api = api.clone();
        let patient = patient.clone();
        tasks.push(tokio::spawn(async move {
            match i % 4 {
                // Good: a new appointment.
                0 => {
                    let r = api
                        .post(
                            "/v1/appointments",
                            json!({"patientId": patient, "start": "2026-12-01T09:00:00Z"}),
                        )
                        .await;
                    assert_eq!(r.status, 201, "{}", r.body);
                    true
                }
                // Bad reference: refused before anything is written.
                1 => {
                    let r = api
                        .post(
                            "/v1/appointments",
                            json!({"patientId": "pat_0000000000000000000000000000dead", "start": "2026-12-01T09:00:00Z"}),
                        )
                        .await;
                    assert_eq!(r.status, 422, "{}", r.body);
                    false
                }
                // A batch whose second operation fails after the first wrote.
                2 => {
                    let r = api
                        .post(
                            "/v1/batch",
                            json!({"operations": [
                                {"method": "POST", "path": "/v1/notes", "body": {"patientId": patient, "text": "x"}},
                                {"method": "POST", "path": "/v1/notes", "body": {"patientId": patient}},
                            ]}),
                        )
                        .await;
                    assert_eq!(r.status, 422, "{}", r.body);
                    assert_eq!(r.body["error"]["index"], 1);
                    false
                }
                // A stale version.
                _ => {
                    let r = api
                        .send(
                            api.request(reqwest::Method::PATCH, &format!("/v1/patients/{patient}"))
                                .header("If-Match", "99")
                                .json(&json!({"mrn": "X"})),
                        )
                        .await;
                    assert_eq!(r.status, 412, "{}", r.body);
                    false
                }
            }
        }));
    }
    let mut good = 0;
    for t in tasks {
        if t.await.unwrap() {
            good += 1;
        }
    }
    let events = api.events_after(0).await;
    assert_eq!(
        events.len() - before,
        good,
        "one event per good write, none for the rest"
    );
    assert!(events.iter().all(|e| e["type"] != "note.created"));
    let notes = api.get(&format!("/v1/notes?patientId={patient}")).await;
    assert_eq!(notes.body["data"].as_array().unwrap().len(), 0);
    let p = api.get(&format!("/v1/patients/{patient}")).await;
    assert_eq!(p.body["version"], 1);
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "gap-free"
    );
}
