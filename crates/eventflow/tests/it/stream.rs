//! `GET /v1/events/stream` (docs/design.md §3.2): the same events as the poll,
//! as Server-Sent Events with `id:` = sequence; `Last-Event-ID` resumes;
//! filters; tenants never see each other's events.

use std::time::Duration;

use eventflow_testkit::{Api, Backend, Options, backend_tests, wait_for};
use serde_json::json;

use crate::helpers::{Sse, SseReader, all_events, principal, sequences, woken_by_commits_only};

backend_tests!(
    the_stream_sends_existing_events_then_new_ones_as_they_commit,
    last_event_id_resumes_after_that_sequence,
    the_stream_filters_by_type_and_resource_type,
    another_tenants_events_never_appear_on_the_stream,
    the_stream_checks_its_key_and_parameters,
    a_stopping_server_ends_open_streams_and_long_polls,
    a_filtered_stream_and_long_poll_still_wake_for_their_event,
    a_key_holds_at_most_its_limit_of_streams_and_long_polls,
);

fn seqs(events: &[Sse]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e.data["sequence"].as_i64().unwrap())
        .collect()
}

async fn the_stream_sends_existing_events_then_new_ones_as_they_commit(backend: Backend) {
    let server = woken_by_commits_only(backend).await;
    let api = server.api();
    for _ in 0..3 {
        api.patient().await;
    }
    let polled = all_events(&api, 0).await;
    let mut stream = SseReader::open(&api, "/v1/events/stream?after=1", None).await;
    let first = stream.take(2).await;
    assert_eq!(seqs(&first), [2, 3]);
    for e in &first {
        let seq = e.data["sequence"].as_i64().unwrap() as usize;
        assert_eq!(e.data, polled[seq - 1], "data: is the polled envelope");
    }
    // Live: written after the stream opened.
    let id = api.patient().await;
    let live = stream.next().await;
    assert_eq!(live.id, "4");
    assert_eq!(live.data["type"], "patient.created");
    assert_eq!(live.data["resource"]["id"], id.as_str());
    let r = api
        .patch(&format!("/v1/patients/{id}"), json!({"mrn": "M"}))
        .await;
    assert_eq!(r.status, 200);
    let e = stream.next().await;
    assert_eq!(e.id, "5");
    assert_eq!(e.data["previous"], json!({"mrn": null}));
    assert_eq!(e.data, all_events(&api, 4).await[0]);

    // Without after: from the beginning.
    let mut all = SseReader::open(&api, "/v1/events/stream", None).await;
    assert_eq!(seqs(&all.take(5).await), [1, 2, 3, 4, 5]);
}

async fn last_event_id_resumes_after_that_sequence(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    for _ in 0..5 {
        api.patient().await;
    }
    let mut first = SseReader::open(&api, "/v1/events/stream", None).await;
    let got = first.take(3).await;
    let last_id = got.last().unwrap().id.clone();
    assert_eq!(last_id, "3");
    drop(first);
    // Writes while disconnected.
    api.patient().await;
    api.patient().await;

    // EventSource reconnects to the same URL (here with after=0) and sends
    // the last id it saw: the header wins.
    let mut resumed =
        SseReader::open(&api, "/v1/events/stream?after=0", Some(last_id.as_str())).await;
    assert_eq!(seqs(&resumed.take(4).await), [4, 5, 6, 7]);
    // Nothing repeated or extra: the next one is the next write.
    api.patient().await;
    assert_eq!(seqs(&resumed.take(1).await), [8]);

    // Every event seen exactly once across the two connections.
    let mut seen = seqs(&got);
    seen.extend(4..=8);
    assert_eq!(seen, sequences(&all_events(&api, 0).await));

    // Resuming at the latest waits for new events only.
    let mut at_end = SseReader::open(&api, "/v1/events/stream", Some("8")).await;
    assert!(
        at_end
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing before a new write"
    );
    api.patient().await;
    assert_eq!(seqs(&at_end.take(1).await), [9]);
}

async fn the_stream_filters_by_type_and_resource_type(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let patient = api.patient().await; // 1
    let appt = api
        .create(
            "appointments",
            json!({"patientId": patient, "start": "2026-12-01T10:00:00Z"}),
        )
        .await; // 2
    api.patch(&format!("/v1/patients/{patient}"), json!({"mrn": "1"}))
        .await; // 3
    api.patch(
        &format!("/v1/appointments/{appt}"),
        json!({"status": "arrived"}),
    )
    .await; // 4

    let mut appts = SseReader::open(&api, "/v1/events/stream?types=appointment.*", None).await;
    let mut updates = SseReader::open(
        &api,
        "/v1/events/stream?types=patient.updated,encounter.*",
        None,
    )
    .await;
    let mut patients = SseReader::open(&api, "/v1/events/stream?resourceType=patient", None).await;
    let got = appts.take(2).await;
    assert_eq!(seqs(&got), [2, 4]);
    assert_eq!(got[0].data["type"], "appointment.created");
    assert_eq!(got[1].data["type"], "appointment.updated");
    assert_eq!(seqs(&updates.take(1).await), [3]);
    assert_eq!(seqs(&patients.take(2).await), [1, 3]);

    // Live, through the filters.
    api.patch(&format!("/v1/patients/{patient}"), json!({"mrn": "2"}))
        .await; // 5
    let enc = api
        .create("encounters", json!({"patientId": patient}))
        .await; // 6
    api.delete(&format!("/v1/appointments/{appt}")).await; // 7
    let e = appts.next().await;
    assert_eq!(
        (e.id.as_str(), &e.data["type"]),
        ("7", &json!("appointment.deleted"))
    );
    let got = updates.take(2).await;
    assert_eq!(seqs(&got), [5, 6]);
    assert_eq!(got[1].data["resource"]["id"], enc.as_str());
    assert_eq!(seqs(&patients.take(1).await), [5]);
}

async fn another_tenants_events_never_appear_on_the_stream(backend: Backend) {
    let server = backend.spawn().await;
    let a = server.api();
    let b = server.new_tenant("b").await;
    let mut b_stream = SseReader::open(&b, "/v1/events/stream", None).await;
    let mut a_stream = SseReader::open(&a, "/v1/events/stream", None).await;
    for _ in 0..3 {
        a.patient().await;
    }
    let mine = b.patient().await;
    let e = b_stream.next().await;
    assert_eq!(e.id, "1", "b's own first event, none of a's");
    assert_eq!(e.data["resource"]["id"], mine.as_str());
    let b_tenant = e.data["tenantId"].clone();
    for _ in 0..2 {
        a.patient().await;
    }
    b.patient().await;
    let e = b_stream.next().await;
    assert_eq!(e.id, "2");
    assert_eq!(e.data["tenantId"], b_tenant);
    let got = a_stream.take(5).await;
    assert_eq!(seqs(&got), [1, 2, 3, 4, 5]);
    assert!(got.iter().all(|e| e.data["tenantId"] != b_tenant));
    // Even asking from the start, b sees only its own two.
    let mut again = SseReader::open(&b, "/v1/events/stream?after=0", None).await;
    let got = again.take(2).await;
    assert!(got.iter().all(|e| e.data["tenantId"] == b_tenant));
    assert!(
        again
            .next_within(Duration::from_millis(300))
            .await
            .is_none()
    );
}

/// A request that must be refused: bounded, because a stream that is
/// wrongly accepted never ends.
async fn refused(api: &Api, req: reqwest::RequestBuilder) -> eventflow_testkit::Reply {
    tokio::time::timeout(Duration::from_secs(10), api.send(req))
        .await
        .expect("an error answer, not an open stream")
}

async fn the_stream_checks_its_key_and_parameters(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let anon = server.anonymous();
    let r = refused(
        &anon,
        anon.request(reqwest::Method::GET, "/v1/events/stream"),
    )
    .await;
    assert_eq!(r.status, 401);
    for (query, field) in [
        ("limit=5", "limit"),
        ("wait=5", "wait"),
        ("after=-3", "after"),
        ("types=appointment", "types"),
        ("resourceType=spaceship", "resourceType"),
    ] {
        let path = format!("/v1/events/stream?{query}");
        let r = refused(&api, api.request(reqwest::Method::GET, &path)).await;
        assert_eq!(r.status, 422, "{query}: {}", r.body);
        assert_eq!(r.error_field(), Some(field), "{query}");
    }
    let r = refused(
        &api,
        api.request(reqwest::Method::GET, "/v1/events/stream")
            .header("last-event-id", "yesterday"),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error_field(), Some("Last-Event-ID"));
}

/// Graceful shutdown does not wait on followers: an open stream and a
/// pending long poll end, and the server stops.
async fn a_stopping_server_ends_open_streams_and_long_polls(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    api.patient().await;
    let mut stream = SseReader::open(&api, "/v1/events/stream?after=0", None).await;
    stream.next().await;
    let poll = {
        let api = api.clone();
        tokio::spawn(async move {
            api.request(reqwest::Method::GET, "/v1/events?after=1&wait=60")
                .send()
                .await
        })
    };
    server.stop().await;
    // The stream is ended, and the long poll answered (empty) or cut: not
    // held for its 60 s (the 30 s bounds are hang guards).
    assert!(
        stream.ends_within(Duration::from_secs(30)).await,
        "the server kept the stream open"
    );
    let polled = tokio::time::timeout(Duration::from_secs(30), poll).await;
    assert!(polled.is_ok(), "the long poll was still held");
}

/// A follower whose filter matches nothing for a while still wakes for its
/// event (the skipped, non-matching events are not read again and again).
async fn a_filtered_stream_and_long_poll_still_wake_for_their_event(backend: Backend) {
    let server = woken_by_commits_only(backend).await;
    let api = server.api();
    let patient = api.patient().await;
    let mut stream = SseReader::open(
        &api,
        "/v1/events/stream?after=0&types=consent.created",
        None,
    )
    .await;
    let poll = {
        let api = api.clone();
        tokio::spawn(async move { api.get("/v1/events?after=0&wait=30&types=consent.*").await })
    };
    for i in 0..20 {
        api.post(
            "/v1/notes",
            json!({"patientId": patient, "text": format!("n{i}")}),
        )
        .await;
    }
    api.post("/v1/consents", json!({"patientId": patient}))
        .await;
    let e = stream.next().await;
    assert_eq!(e.data["type"], "consent.created");
    let r = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the long poll answers")
        .unwrap();
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["type"], "consent.created");
    assert_eq!(r.body["nextAfter"], data[0]["sequence"]);
}

async fn a_key_holds_at_most_its_limit_of_streams_and_long_polls(backend: Backend) {
    let server = backend
        .spawn_with(Options {
            configure: Some(Box::new(|c| c.limits.streams_per_key = 2)),
            ..Options::default()
        })
        .await;
    let api = server.api();
    let first = SseReader::open(&api, "/v1/events/stream?after=0", None).await;
    let poll = {
        let api = api.clone();
        tokio::spawn(async move { api.get("/v1/events?after=0&wait=30&types=consent.*").await })
    };
    let tenant = principal(&server).await.tenant_id;
    server.until_waiting(&tenant, 2).await;
    // A third, stream or long poll, is refused with a time to come back.
    for path in ["/v1/events/stream?after=0", "/v1/events?after=0&wait=5"] {
        let r = api.get(path).await;
        assert_eq!(r.status, 429, "{path}: {:?}", r.body);
        assert_eq!(r.body["error"]["type"], "too_many_streams");
        assert!(r.header("retry-after").is_some());
    }
    // A plain poll is not counted; another key is not held back.
    assert_eq!(api.get("/v1/events?after=0").await.status, 200);
    let other = server.new_tenant("other").await;
    let _theirs = SseReader::open(&other, "/v1/events/stream?after=0", None).await;
    // The long poll answers and the stream closes: the key may open again.
    let patient = api.patient().await;
    api.post("/v1/consents", json!({"patientId": patient}))
        .await;
    assert_eq!(poll.await.unwrap().status, 200);
    drop(first);
    api.patient().await; // written to the closed stream: the server notices.
    wait_for(Duration::from_secs(20), "room for a stream again", || {
        let api = api.clone();
        async move {
            let r = api
                .send(api.request(
                    reqwest::Method::GET,
                    "/v1/events?after=0&wait=1&types=lab.*",
                ))
                .await;
            (r.status == 200).then_some(())
        }
    })
    .await;
    let _again = SseReader::open(&api, "/v1/events/stream?after=0", None).await;
}
