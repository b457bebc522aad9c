//! Bounds on what one tenant can make the shared parts of the server do:
//! filters that cost too much, replays, records and pages too large.

use std::time::Duration;

use eventflow_testkit::{Backend, Options, Receiver, backend_tests, wait_for};
use serde_json::{Value, json};

backend_tests!(
    a_filter_that_can_never_fit_its_budget_is_refused_when_saved,
    a_filter_that_runs_out_of_budget_does_not_match_and_says_why,
    the_filters_of_one_write_share_a_budget,
    a_long_replay_goes_on_in_chunks_and_reports_its_progress,
    nul_characters_are_refused_in_every_body_and_parameter,
    a_step_whose_outcome_cannot_be_stored_fails_once_with_the_reason,
    a_record_over_the_size_limit_is_413_on_every_write_path,
    pages_of_events_and_records_end_early_at_the_byte_limit,
    retention_deletes_old_events_in_batches_with_their_deliveries,
    large_bodies_are_bounded_in_size_values_and_number_at_once,
    a_replay_with_a_costly_filter_goes_in_shorter_chunks,
);

const LONG: Duration = Duration::from_secs(20);

/// The replay at `path` once it is done.
async fn replay_done(api: &eventflow_testkit::Api, path: &str) -> Value {
    wait_for(LONG, "the replay done", || async {
        let r = api.get(path).await.body;
        (r["status"] == "done").then_some(r)
    })
    .await
}

/// `[0..9].all(v, …)` nested `depth` times: 10^depth iterations whatever the
/// event.
fn nested(depth: usize) -> String {
    let mut s = "true".to_string();
    for d in 0..depth {
        s = format!("[0,1,2,3,4,5,6,7,8,9].all(v{d}, {s})");
    }
    s
}

async fn a_filter_that_can_never_fit_its_budget_is_refused_when_saved(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let url = "http://127.0.0.1:9/hook";
    let r = api
        .post("/v1/endpoints", json!({"url": url, "filter": nested(7)}))
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.error_field(), Some("filter"));
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("cost"), "{message}");
    // A PATCH is checked the same way, and changes nothing.
    let ep = api.post("/v1/endpoints", json!({"url": url})).await;
    assert_eq!(ep.status, 201);
    let path = format!("/v1/endpoints/{}", ep.id());
    let r = api.patch(&path, json!({"filter": nested(8)})).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(api.get(&path).await.body["filter"], Value::Null);
    // What fits is saved.
    let r = api.patch(&path, json!({"filter": nested(2)})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

async fn a_filter_that_runs_out_of_budget_does_not_match_and_says_why(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    // Quadratic in the number of results: cheap for a few, too costly for
    // hundreds.
    let costly = api
        .post(
            "/v1/endpoints",
            json!({
                "url": rx.url("/costly"),
                "eventTypes": ["lab.created"],
                "filter": "data.results.all(a, data.results.all(b, a.code != b.code || a.value == b.value))",
            }),
        )
        .await;
    assert_eq!(costly.status, 201, "{:?}", costly.body);
    let plain = api
        .post(
            "/v1/endpoints",
            json!({"url": rx.url("/plain"), "eventTypes": ["lab.created"]}),
        )
        .await;
    assert_eq!(plain.status, 201);
    let patient = api.patient().await;
    let result =
        |i: usize| json!({"code": format!("c{i}"), "display": "x", "value": i, "unit": "u"});
    let big = api
        .create(
            "labs",
            json!({"patientId": patient, "code": "24323-8", "results": (0..400).map(result).collect::<Vec<_>>()}),
        )
        .await;
    let small = api
        .create(
            "labs",
            json!({"patientId": patient, "code": "24323-8", "results": (0..3).map(result).collect::<Vec<_>>()}),
        )
        .await;
    // The plain endpoint gets both (in either order: attempts run
    // concurrently); the costly one only the small lab.
    let got = rx.wait_for(3, LONG).await;
    let to = |path: &str| -> Vec<String> {
        let mut ids: Vec<String> = got
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.json()["data"]["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let mut both = vec![big.clone(), small.clone()];
    both.sort();
    assert_eq!(to("/plain"), both);
    assert_eq!(to("/costly"), vec![small]);
    let path = format!("/v1/endpoints/{}", costly.id());
    let ep = api.get(&path).await.body;
    let error = &ep["filterError"];
    assert!(
        error["message"].as_str().unwrap().contains("cost budget"),
        "{ep}"
    );
    let big_event = api
        .get(&format!("/v1/events?after=0&resourceId={big}"))
        .await
        .body["data"][0]["id"]
        .clone();
    assert_eq!(error["eventId"], big_event);
    // A new filter clears the record.
    let r = api
        .patch(&path, json!({"filter": "size(data.results) < 10"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["filterError"], Value::Null);
}

async fn the_filters_of_one_write_share_a_budget(backend: Backend) {
    let server = backend
        .spawn_with(Options {
            configure: Some(Box::new(|c| c.limits.cel_cost = 3_000)),
            ..Options::default()
        })
        .await;
    let api = server.api();
    let rx = Receiver::start().await;
    // Each filter fits its own budget on this lab (about 2,100 units of 3,000), but
    // twenty of them do not fit the write's (ten filters' worth).
    let mut endpoints = Vec::new();
    for i in 0..20 {
        let r = api
            .post(
                "/v1/endpoints",
                json!({
                    "url": rx.url(&format!("/{i}")),
                    "eventTypes": ["lab.created"],
                    "filter": "data.results.exists(r, r.code == 'c29')",
                }),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        endpoints.push(r.id());
    }
    let patient = api.patient().await;
    let results: Vec<Value> = (0..30)
        .map(|i| json!({"code": format!("c{i}"), "display": "x", "value": i, "unit": "u"}))
        .collect();
    api.create(
        "labs",
        json!({"patientId": patient, "code": "24323-8", "results": results}),
    )
    .await;
    let mut stopped = 0;
    let mut matched = std::collections::BTreeSet::new();
    for (i, id) in endpoints.iter().enumerate() {
        let ep = api.get(&format!("/v1/endpoints/{id}")).await.body;
        match ep["filterError"]["message"].as_str() {
            Some(m) => {
                assert!(m.contains("filters of one write together"), "{m}");
                stopped += 1;
            }
            None => {
                matched.insert(format!("/{i}"));
            }
        }
    }
    assert!(
        matched.len() >= 5 && stopped >= 5,
        "{} matched, {stopped} stopped",
        matched.len()
    );
    // Each endpoint whose filter ran and matched got the lab (a delivery is
    // at least once: count endpoints, not requests); no stopped one did.
    let reached = loop {
        let got = rx.received();
        let reached: std::collections::BTreeSet<String> =
            got.iter().map(|r| r.path.clone()).collect();
        if reached.len() >= matched.len() {
            break reached;
        }
        rx.wait_for(got.len() + 1, LONG).await;
    };
    assert_eq!(reached, matched);
}

async fn a_long_replay_goes_on_in_chunks_and_reports_its_progress(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let body = json!({"firstName": "Ada", "lastName": "Lovelace"});
    for _ in 0..2 {
        let ops: Vec<Value> = (0..600)
            .map(|_| json!({"method": "POST", "path": "/v1/patients", "body": body}))
            .collect();
        let r = api.post("/v1/batch", json!({ "operations": ops })).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let rx = Receiver::start().await;
    let ep = api
        .post(
            "/v1/endpoints",
            json!({"url": rx.url("/"), "eventTypes": ["patient.created"]}),
        )
        .await;
    assert_eq!(ep.status, 201);
    let ep = ep.id();
    // Written after the replay is asked for: not part of it.
    let r = api
        .post(&format!("/v1/endpoints/{ep}/replay"), json!({"after": 0}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["status"], "running", "{:?}", r.body);
    assert_eq!(r.body["upTo"], 1200);
    let first = r.body["queued"].as_i64().unwrap();
    assert!(first > 0 && first < 1200, "the first chunk only: {first}");
    api.patient().await;
    let path = format!("/v1/endpoints/{ep}/replays/{}", r.id());
    let done = replay_done(&api, &path).await;
    assert_eq!(done["queued"], 1200, "{done}");
    assert_eq!(done["cursor"], 1200, "{done}");
    // Every replayed event once, and the new patient once.
    let got = rx.wait_for(1201, LONG).await;
    let mut sequences: Vec<i64> = got
        .iter()
        .map(|r| r.json()["sequence"].as_i64().unwrap())
        .collect();
    sequences.sort();
    sequences.dedup();
    assert_eq!(sequences.len(), 1201);
    // Another tenant cannot see it.
    let other = server.new_tenant("other").await;
    assert_eq!(other.get(&path).await.status, 404);
}

async fn nul_characters_are_refused_in_every_body_and_parameter(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await;
    let nul = "Ada\u{0}Lovelace";
    for (path, body, field) in [
        (
            "/v1/patients".to_string(),
            json!({"firstName": nul, "lastName": "L"}),
            "firstName",
        ),
        (
            "/v1/patients".to_string(),
            json!({"firstName": "A", "lastName": "L", "address": {"line": nul}}),
            "address.line",
        ),
        (
            "/v1/batch".to_string(),
            json!({"operations": [{"method": "POST", "path": "/v1/patients",
                                   "body": {"firstName": "A", "lastName": nul}}]}),
            "operations[0].body.lastName",
        ),
        (
            "/v1/endpoints".to_string(),
            json!({"url": "http://127.0.0.1:9/", "description": nul}),
            "description",
        ),
    ] {
        let r = api.post(&path, body).await;
        assert_eq!(r.status, 422, "{path}: {:?}", r.body);
        assert_eq!(r.error_field(), Some(field), "{:?}", r.body);
        assert!(
            r.body["error"]["message"].as_str().unwrap().contains("NUL"),
            "{:?}",
            r.body
        );
    }
    let r = api
        .patch(&format!("/v1/patients/{patient}"), json!({"lastName": nul}))
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.error_field(), Some("lastName"));
    let r = api.get("/v1/appointments?patientId=pat_%00").await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.error_field(), Some("patientId"));
    // Nothing was written: the patient alone, unchanged.
    let events = api.get("/v1/events?after=0").await.body;
    assert_eq!(events["data"].as_array().unwrap().len(), 1, "{events}");
    assert_eq!(api.get("/v1/endpoints").await.body["data"], json!([]));
}

async fn a_step_whose_outcome_cannot_be_stored_fails_once_with_the_reason(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    for yaml in [
        "name: nul-sms\non: patient.created\nsteps:\n  - sms: {to: '+15551234567', body: '{{ \"a\\x00b\" }}'}\n",
        "name: long-key\non: patient.created\nsteps:\n  - cancel: {key: '{% for i in range(2000) %}x{% endfor %}'}\n",
    ] {
        let r = api
            .send(
                api.request(reqwest::Method::POST, "/v1/workflows")
                    .header("content-type", "application/yaml")
                    .body(yaml),
            )
            .await;
        assert_eq!(r.status, 201, "{yaml}: {:?}", r.body);
    }
    api.patient().await;
    let runs = wait_for(LONG, "both runs finished", || {
        let api = api.clone();
        async move {
            let runs = api.get("/v1/workflow-runs").await.body["data"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (runs.len() == 2 && runs.iter().all(|r| r["status"] != "pending")).then_some(runs)
        }
    })
    .await;
    for run in &runs {
        assert_eq!(run["status"], "failed", "{run}");
        let step = &run["steps"][0];
        let error = step["error"].as_str().unwrap_or_default();
        match run["workflow"].as_str().unwrap() {
            "nul-sms" => assert!(error.contains("the message contains a NUL"), "{run}"),
            _ => assert!(error.contains("longer than 1024 bytes"), "{run}"),
        }
        assert_eq!(step["attempts"], 1, "{run}");
    }
    server.automations_settled().await;
    assert_eq!(api.get("/v1/notifications").await.body["data"], json!([]));
    // The server goes on writing.
    api.patient().await;
}

async fn a_record_over_the_size_limit_is_413_on_every_write_path(backend: Backend) {
    let server = backend
        .spawn_with(Options {
            configure: Some(Box::new(|c| c.limits.max_record_bytes = 4_096)),
            ..Options::default()
        })
        .await;
    let api = server.api();
    let big = "x".repeat(5_000);
    let assert_too_large = |r: &eventflow_testkit::Reply| {
        assert_eq!(r.status, 413, "{:?}", r.body);
        assert_eq!(r.body["error"]["type"], "payload_too_large");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("at most 4096 bytes"), "{message}");
    };
    let r = api
        .post("/v1/patients", json!({"firstName": big, "lastName": "L"}))
        .await;
    assert_too_large(&r);
    // A patch that grows a record past the limit.
    let patient = api.patient().await;
    let r = api
        .patch(&format!("/v1/patients/{patient}"), json!({"lastName": big}))
        .await;
    assert_too_large(&r);
    // A batch: the operation is named, and nothing of the batch is applied.
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [
                {"method": "POST", "path": "/v1/patients", "body": {"firstName": "A", "lastName": "B"}},
                {"method": "POST", "path": "/v1/patients", "body": {"firstName": big, "lastName": "B"}},
            ]}),
        )
        .await;
    assert_too_large(&r);
    assert_eq!(r.body["error"]["index"], 1);
    let events = api.get("/v1/events?after=0").await.body;
    assert_eq!(events["data"].as_array().unwrap().len(), 1, "{events}");
    let stored = api.get(&format!("/v1/patients/{patient}")).await.body;
    assert_eq!(stored["lastName"], "Lovelace");
}

async fn pages_of_events_and_records_end_early_at_the_byte_limit(backend: Backend) {
    let server = backend
        .spawn_with(Options {
            configure: Some(Box::new(|c| c.limits.max_page_bytes = 2_000)),
            ..Options::default()
        })
        .await;
    let api = server.api();
    let mut ids = Vec::new();
    for i in 0..6 {
        // One record larger than a whole page: it still comes, alone.
        let size = if i == 3 { 3_000 } else { 500 };
        ids.push(
            api.create(
                "patients",
                json!({"firstName": "x".repeat(size), "lastName": format!("P{i}")}),
            )
            .await,
        );
    }
    // Events: each page ends early; nextAfter carries on; nothing is lost.
    let mut after = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    while seen.len() < 6 {
        let page = api.get(&format!("/v1/events?after={after}")).await.body;
        let data = page["data"].as_array().unwrap();
        assert!(!data.is_empty() && data.len() < 6, "{}", data.len());
        seen.extend(
            data.iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string()),
        );
        after = page["nextAfter"].as_i64().unwrap();
        pages += 1;
    }
    assert_eq!(seen, ids);
    assert!(pages >= 3, "{pages} pages");
    // Records: the same, with the cursor.
    let mut path = "/v1/patients?limit=50".to_string();
    let mut listed = Vec::new();
    loop {
        let page = api.get(&path).await.body;
        let data = page["data"].as_array().unwrap();
        assert!(!data.is_empty() && data.len() < 6, "{}", data.len());
        listed.extend(data.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        match page["nextCursor"].as_str() {
            Some(c) => path = format!("/v1/patients?limit=50&cursor={c}"),
            None => break,
        }
    }
    let mut sorted = ids.clone();
    sorted.sort();
    listed.sort();
    assert_eq!(listed, sorted);
}

async fn retention_deletes_old_events_in_batches_with_their_deliveries(backend: Backend) {
    let start: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let (server, clock) = backend.spawn_with_clock(start).await;
    let api = server.api();
    let rx = Receiver::start().await;
    let ep = api
        .post(
            "/v1/endpoints",
            json!({"url": rx.url("/"), "eventTypes": ["patient.created"]}),
        )
        .await
        .id();
    // More old events than one retention write deletes.
    let body = json!({"firstName": "Ada", "lastName": "Lovelace"});
    for _ in 0..3 {
        let ops: Vec<Value> = (0..800)
            .map(|_| json!({"method": "POST", "path": "/v1/patients", "body": body}))
            .collect();
        assert_eq!(
            api.post("/v1/batch", json!({ "operations": ops }))
                .await
                .status,
            200
        );
    }
    rx.wait_for(2_400, LONG).await;
    let old_delivery = api
        .get(&format!("/v1/endpoints/{ep}/deliveries?limit=1"))
        .await
        .body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    clock.advance(jiff::SignedDuration::from_hours(24 * 31));
    api.patient().await;
    rx.wait_for(2_401, LONG).await;
    // What the server's hourly retention task does.
    let purged = eventflow_server::retention_pass(&server.state)
        .await
        .expect("purge");
    assert_eq!(purged.events, 2_400);
    // The deliveries of the purged events are gone with them; the new one stays.
    assert_eq!(
        api.get(&format!("/v1/deliveries/{old_delivery}"))
            .await
            .status,
        404
    );
    let left = api
        .get(&format!("/v1/endpoints/{ep}/deliveries"))
        .await
        .body;
    assert_eq!(left["data"].as_array().unwrap().len(), 1, "{left}");
    let events = api.get("/v1/events?after=0").await.body;
    assert_eq!(events["data"].as_array().unwrap().len(), 1);
}

async fn large_bodies_are_bounded_in_size_values_and_number_at_once(backend: Backend) {
    let server = backend
        .spawn_with(Options {
            configure: Some(Box::new(|c| c.limits.large_bodies = 1)),
            ..Options::default()
        })
        .await;
    let api = server.api();
    // Over the batch size limit.
    let big = format!(
        r#"{{"operations": [], "pad": "{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let r = api
        .send(
            api.request(reqwest::Method::POST, "/v1/batch")
                .header("content-type", "application/json")
                .body(big),
        )
        .await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    // Small in bytes, but too many values.
    let ones = vec!["1"; 600_000].join(",");
    let r = api
        .send(
            api.request(reqwest::Method::POST, "/v1/batch")
                .header("content-type", "application/json")
                .body(format!(r#"{{"operations": [], "pad": [{ones}]}}"#)),
        )
        .await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JSON values"),
        "{:?}",
        r.body
    );
    // One large body at a time: a second waits while the first is read.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let first = {
        let req = api
            .request(reqwest::Method::POST, "/v1/batch")
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) },
            )));
        let api = api.clone();
        tokio::spawn(async move { api.send(req).await })
    };
    tx.send(Ok(
        br#"{"operations": [{"method": "POST", "path": "/v1/patients", "body": "#.to_vec(),
    ))
    .await
    .unwrap();
    let state = server.state.clone();
    wait_for(LONG, "the first body holds the permit", || {
        let free = state.large_bodies.free();
        async move { (free == 0).then_some(()) }
    })
    .await;
    let second = {
        let padded = format!(
            r#"{{"operations": [{{"method": "POST", "path": "/v1/patients", "body": {{"firstName": "B", "lastName": "{}"}}}}]}}"#,
            "y".repeat(1_100_000)
        );
        let api = api.clone();
        tokio::spawn(async move {
            api.send(
                api.request(reqwest::Method::POST, "/v1/batch")
                    .header("content-type", "application/json")
                    .body(padded),
            )
            .await
        })
    };
    let state = server.state.clone();
    wait_for(LONG, "the second body waits for the permit", || {
        let waiting = state.large_bodies.waiting();
        async move { (waiting == 1).then_some(()) }
    })
    .await;
    assert!(!second.is_finished());
    tx.send(Ok(br#"{"firstName": "A", "lastName": "L"}}]}"#.to_vec()))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(first.await.unwrap().status, 200);
    // The second (a field too long) is refused, after its turn.
    assert_eq!(second.await.unwrap().status, 422);
    assert_eq!(server.state.large_bodies.free(), 1);
}

async fn a_replay_with_a_costly_filter_goes_in_shorter_chunks(backend: Backend) {
    let server = backend
        .spawn_with(Options {
            configure: Some(Box::new(|c| c.limits.cel_cost = 3_000)),
            ..Options::default()
        })
        .await;
    let api = server.api();
    let patient = api.patient().await;
    let results: Vec<Value> = (0..30)
        .map(|i| json!({"code": format!("c{i}"), "display": "x", "value": i, "unit": "u"}))
        .collect();
    let ops: Vec<Value> = (0..40)
        .map(|_| {
            json!({"method": "POST", "path": "/v1/labs",
                   "body": {"patientId": patient, "code": "24323-8", "results": results}})
        })
        .collect();
    assert_eq!(
        api.post("/v1/batch", json!({ "operations": ops }))
            .await
            .status,
        200
    );
    let rx = Receiver::start().await;
    // About 2,100 units an event: a chunk (ten filters' worth, 30,000 units)
    // holds about 14 of the 40 labs.
    let ep = api
        .post(
            "/v1/endpoints",
            json!({"url": rx.url("/"), "eventTypes": ["lab.created"],
                   "filter": "data.results.exists(r, r.code == 'c29')"}),
        )
        .await
        .id();
    let r = api
        .post(&format!("/v1/endpoints/{ep}/replay"), json!({"after": 0}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["status"], "running", "{:?}", r.body);
    let first = r.body["queued"].as_i64().unwrap();
    assert!(first > 0 && first < 40, "{first}");
    let path = format!("/v1/endpoints/{ep}/replays/{}", r.id());
    let done = replay_done(&api, &path).await;
    assert_eq!(done["queued"], 40, "{done}");
    assert_eq!(rx.wait_for(40, LONG).await.len(), 40);
    let ep = api.get(&format!("/v1/endpoints/{ep}")).await.body;
    assert_eq!(
        ep["filterError"],
        Value::Null,
        "no event was passed over: {ep}"
    );
}
