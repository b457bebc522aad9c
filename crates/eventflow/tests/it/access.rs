//! Keys and scopes (README, "Keys and scopes"): keys made, listed, read,
//! revoked and rotated through `/v1/api-keys`; every operation refused
//! (403 naming the scope) to a key without the scope the OpenAPI document
//! names for it; events of record types a key may not read hidden, with
//! its cursor moving past them; no escalation through key creation,
//! rotation or endpoints. Time is a `ManualClock`, never a sleep.

use std::time::Duration;

use eventflow_testkit::{Api, Backend, Options, Reply, TestServer, backend_tests, wait_for};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::helpers::{assert_error, principal};

backend_tests!(
    a_key_is_created_listed_read_and_its_secret_shown_only_once,
    every_operation_needs_the_scope_the_openapi_document_names,
    a_batch_needs_the_write_scope_of_every_collection_it_touches,
    events_of_types_a_key_may_not_read_are_hidden_and_its_cursor_moves_past_them,
    an_endpoint_may_send_only_events_its_key_may_read,
    a_key_hands_on_rotates_and_revokes_only_scopes_it_holds,
    a_revoked_key_is_refused_at_once_like_an_unknown_one,
    a_rotated_secret_works_for_its_grace_period_and_no_longer,
    an_expired_key_is_refused,
    last_used_at_is_noted_on_use,
    key_changes_are_audited_and_no_secret_is_written_anywhere,
    a_tenant_holds_at_most_keys_per_tenant_live_keys,
    bad_key_requests_are_422_naming_the_field_and_change_nothing,
    a_revoked_key_gets_nothing_more_from_an_open_stream_or_long_poll,
    deliveries_of_hidden_types_and_header_values_are_not_shown,
    a_key_made_by_an_expiring_key_expires_no_later,
);

const T0: &str = "2026-11-30T09:00:00Z";

fn t0() -> Timestamp {
    T0.parse().unwrap()
}

async fn create_key(api: &Api, body: Value) -> Reply {
    api.post("/v1/api-keys", body).await
}

/// Creates a key; its client and its id.
async fn key(server: &TestServer, scopes: &[&str]) -> (Api, String) {
    let r = create_key(&server.api(), json!({"name": "test", "scopes": scopes})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    (
        server.api().with_key(r.body["key"].as_str().unwrap()),
        r.id(),
    )
}

/// The status of a GET that must not be refused for its key.
async fn status_of(api: &Api, path: &str) -> u16 {
    api.get(path).await.status
}

async fn a_key_is_created_listed_read_and_its_secret_shown_only_once(backend: Backend) {
    let (server, _clock) = backend.spawn_with_clock(t0()).await;
    let api = server.api();
    let r = create_key(
        &api,
        json!({"name": "billing vendor", "scopes": ["appointments:read", "events:read"],
               "expiresAt": "2027-01-31T00:00:00Z"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = r.body["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("efk_") && secret.len() == 47, "{secret}");
    assert_eq!(r.body["prefix"], json!(&secret[4..12]));
    assert!(r.id().starts_with("key_"), "{}", r.body);
    assert_eq!(r.body["name"], "billing vendor");
    assert_eq!(
        r.body["scopes"],
        json!(["appointments:read", "events:read"])
    );
    assert_eq!(r.body["createdAt"], "2026-11-30T09:00:00.000Z");
    assert_eq!(r.body["expiresAt"], "2027-01-31T00:00:00.000Z");
    assert_eq!(r.body["lastUsedAt"], Value::Null);

    // Listed and read without the secret.
    let list = api.get("/v1/api-keys").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let listed = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == r.body["id"])
        .cloned()
        .expect("the new key is listed");
    let one = api.get(&format!("/v1/api-keys/{}", r.id())).await;
    assert_eq!(one.status, 200);
    for shown in [&listed, &one.body] {
        assert!(shown.get("key").is_none(), "{shown}");
        assert_eq!(shown["prefix"], r.body["prefix"]);
        assert_eq!(shown["scopes"], r.body["scopes"]);
    }
    assert!(!list.body.to_string().contains(&secret[4..]));
    // The bootstrap key is listed too, with every scope.
    assert!(
        list.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["scopes"] == json!(["*"]) && k["name"] == "bootstrap"),
        "{}",
        list.body
    );
    // The new key works for what it may do, and only that.
    let vendor = api.with_key(&secret);
    assert_eq!(status_of(&vendor, "/v1/appointments").await, 200);
    let r = vendor.get("/v1/patients").await;
    assert_error(&r, 403, "forbidden", None);
    assert_eq!(
        r.body["error"]["message"],
        "this key lacks the scope patients:read"
    );
}

/// A value for a path parameter that names nothing.
fn fill(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "zzz_0".to_string()
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The status of a request, without reading a body that may never end (a
/// stream); the body of a 403.
async fn call(api: &Api, method: &str, path: &str) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = api.request(method.clone(), path);
    if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
        req = req.json(&json!({}));
    }
    let r = req.send().await.expect("sent");
    let status = r.status().as_u16();
    if status == 403 {
        return (status, r.json().await.unwrap_or(Value::Null));
    }
    (status, Value::Null)
}

async fn every_operation_needs_the_scope_the_openapi_document_names(backend: Backend) {
    let server = backend.spawn().await;
    let doc = server.anonymous().get("/openapi.json").await.body;
    // Keys with a scope an operation does not need: clinics:manage (only
    // the clinics' changes need it), and for those, audit:read.
    let (outsider, _) = key(&server, &["clinics:manage"]).await;
    let (audit_reader, _) = key(&server, &["audit:read"]).await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(security) = op.get("security") else {
                panic!("{method} {path} states no security");
            };
            let Some(scopes) = security[0]["apiKey"].as_array() else {
                // Public (security: []): health, documentation, Twilio.
                assert!(
                    !path.starts_with("/v1/") || path.starts_with("/v1/inbound/"),
                    "{method} {path}"
                );
                continue;
            };
            let Some(scope) = scopes.first().and_then(Value::as_str) else {
                continue; // a key, scopes checked per operation (the batch)
            };
            // The tenant's settings govern every key's data: every scope.
            if path == "/v1/settings" {
                assert_eq!(scope, "*", "{method} {path}");
                let (status, _) = call(&audit_reader, method, path).await;
                assert_eq!(status, 403, "{method} {path} without *");
                continue;
            }
            assert_ne!(scope, "*", "{method} {path} needs every scope: not mapped");
            assert!(
                op["responses"].get("403").is_some(),
                "{method} {path} documents no 403"
            );
            let url = fill(path);
            let without = if scope == "clinics:manage" {
                &audit_reader
            } else {
                &outsider
            };
            let (status, body) = call(without, method, &url).await;
            assert_eq!(status, 403, "{method} {path} without {scope}");
            assert_eq!(
                body["error"]["message"],
                json!(format!("this key lacks the scope {scope}")),
                "{method} {path}"
            );
            // With the scope the request goes on (to its own answer).
            let (holder, _) = key(&server, &[scope]).await;
            let (status, _) = call(&holder, method, &url).await;
            assert!(
                ![401, 403].contains(&status),
                "{method} {path} with {scope}: {status}"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} operations checked");
}

async fn a_batch_needs_the_write_scope_of_every_collection_it_touches(backend: Backend) {
    let server = backend.spawn().await;
    let (writer, _) = key(&server, &["patients:write"]).await;
    let ops = json!({"operations": [
        {"method": "POST", "path": "/v1/patients", "body": {"firstName": "Ada", "lastName": "Lovelace"}},
        {"method": "POST", "path": "/v1/practitioners", "body": {"firstName": "Mary", "lastName": "Seacole"}},
    ]});
    let r = writer.post("/v1/batch", ops).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["error"]["index"], 1);
    assert_eq!(
        r.body["error"]["message"],
        "this key lacks the scope practitioners:write"
    );
    // Nothing of it was written.
    let list = server.api().get("/v1/patients").await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 0);
    let one = json!({"operations": [
        {"method": "POST", "path": "/v1/patients", "body": {"firstName": "Ada", "lastName": "Lovelace"}}]});
    assert_eq!(writer.post("/v1/batch", one).await.status, 200);
    // Reading includes is reading: the included type's scope is needed.
    let (reader, _) = key(&server, &["patients:read"]).await;
    let id = server.api().patient().await;
    let r = reader
        .get(&format!("/v1/patients/{id}?include=appointments"))
        .await;
    assert_error(&r, 403, "forbidden", None);
    assert_eq!(
        r.body["error"]["message"],
        "this key lacks the scope appointments:read"
    );
}

async fn events_of_types_a_key_may_not_read_are_hidden_and_its_cursor_moves_past_them(
    backend: Backend,
) {
    let server = backend.spawn().await;
    let api = server.api();
    let (reader, _) = key(&server, &["appointments:read", "events:read"]).await;
    let patient = api.patient().await;
    let appointment = api
        .create(
            "appointments",
            json!({"patientId": patient, "start": "2027-01-05T09:00:00Z", "status": "booked"}),
        )
        .await;
    api.patch(
        &format!("/v1/patients/{patient}"),
        json!({"lastName": "Byron"}),
    )
    .await;
    let all = api.events_after(0).await;
    assert_eq!(all.len(), 3);
    let latest = all.last().unwrap()["sequence"].as_i64().unwrap();

    let r = reader.get("/v1/events").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let types: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["appointment.created"]);
    assert_eq!(r.body["data"][0]["resource"]["id"], json!(appointment));
    // Past the appointment, only a hidden event: nothing, and the cursor
    // moves to the end.
    let after = r.body["nextAfter"].as_i64().unwrap();
    let r = reader.get(&format!("/v1/events?after={after}")).await;
    assert_eq!(r.body["data"], json!([]));
    assert_eq!(r.body["nextAfter"], json!(latest));
    // A filter cannot widen what the key sees.
    let r = reader.get("/v1/events?types=patient.*").await;
    assert_eq!(r.body["data"], json!([]));
    // One hidden event by id is as if it did not exist.
    let hidden = &all[0]["id"];
    assert_eq!(all[0]["type"], "patient.created");
    let r = reader
        .get(&format!("/v1/events/{}", hidden.as_str().unwrap()))
        .await;
    assert_error(&r, 404, "not_found", None);
    // A long poll is not answered by a hidden event, and moves past it.
    let poll = {
        let reader = reader.clone();
        tokio::spawn(async move {
            reader
                .get(&format!("/v1/events?after={latest}&wait=2"))
                .await
        })
    };
    server
        .until_waiting(all[0]["tenantId"].as_str().unwrap(), 1)
        .await;
    api.patch(
        &format!("/v1/patients/{patient}"),
        json!({"lastName": "King"}),
    )
    .await;
    let r = poll.await.unwrap();
    assert_eq!(r.body["data"], json!([]), "{}", r.body);
    assert_eq!(r.body["nextAfter"], json!(latest + 1));
    // A stream shows only what the key may read.
    let mut stream = reader
        .request(reqwest::Method::GET, "/v1/events/stream?after=0")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = stream.chunk().await.unwrap().expect("more of the stream");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    })
    .await
    .expect("a first event");
    assert!(first.contains("appointment.created"), "{first}");
    assert!(!first.contains("patient."), "{first}");
}

async fn an_endpoint_may_send_only_events_its_key_may_read(backend: Backend) {
    let server = backend.spawn().await;
    let (k, _) = key(&server, &["appointments:read", "endpoints:write"]).await;
    let url = "http://127.0.0.1:9/hook";
    let ok = k
        .post(
            "/v1/endpoints",
            json!({"url": url, "eventTypes": ["appointment.*", "delivery.failed"]}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    for types in [json!(["patient.created"]), json!(["*"]), json!(null)] {
        let r = k
            .post("/v1/endpoints", json!({"url": url, "eventTypes": types}))
            .await;
        assert_error(&r, 422, "validation_error", Some("eventTypes"));
    }
    let r = k
        .patch(
            &format!("/v1/endpoints/{}", ok.id()),
            json!({"eventTypes": ["appointment.*", "note.*"]}),
        )
        .await;
    assert_error(&r, 422, "validation_error", Some("eventTypes"));
    // An endpoint of every type, made by another key: this key may not
    // point it elsewhere.
    let wide = server
        .api()
        .post("/v1/endpoints", json!({"url": url}))
        .await;
    let r = k
        .patch(
            &format!("/v1/endpoints/{}", wide.id()),
            json!({"url": "http://127.0.0.1:9/mine"}),
        )
        .await;
    assert_error(&r, 422, "validation_error", Some("eventTypes"));
    // Nor narrow it to what it may read, and so take it over.
    let r = k
        .patch(
            &format!("/v1/endpoints/{}", wide.id()),
            json!({"url": "http://127.0.0.1:9/mine", "eventTypes": ["appointment.*"]}),
        )
        .await;
    assert_error(&r, 422, "validation_error", Some("eventTypes"));
    let after = server
        .api()
        .get(&format!("/v1/endpoints/{}", wide.id()))
        .await;
    assert_eq!(after.body["url"], url);
    assert_eq!(after.body["eventTypes"], json!([]));
}

async fn a_key_hands_on_rotates_and_revokes_only_scopes_it_holds(backend: Backend) {
    let server = backend.spawn().await;
    let (manager, manager_id) = key(&server, &["keys:manage", "patients:write"]).await;
    let r = create_key(&manager, json!({"name": "n", "scopes": ["patients:read"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let lesser = r.id();
    for (scopes, missing) in [
        (json!(["patients:write", "labs:read"]), "labs:read"),
        (json!(["records:read"]), "records:read"),
        (json!(["*"]), "*"),
    ] {
        let r = create_key(&manager, json!({"name": "n", "scopes": scopes})).await;
        assert_error(&r, 403, "forbidden", None);
        assert_eq!(
            r.body["error"]["message"],
            json!(format!("this key lacks the scope {missing}"))
        );
    }
    // The bootstrap key has `*`: this key may not rotate or revoke it.
    let admin_id = server.api().get("/v1/api-keys").await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["scopes"] == json!(["*"]))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = manager
        .post(&format!("/v1/api-keys/{admin_id}/rotate"), json!({}))
        .await;
    assert_error(&r, 403, "forbidden", None);
    let r = manager.delete(&format!("/v1/api-keys/{admin_id}")).await;
    assert_error(&r, 403, "forbidden", None);
    assert_eq!(status_of(&server.api(), "/v1/patients").await, 200);
    // It may rotate and revoke what it could have made, itself included.
    let r = manager
        .post(&format!("/v1/api-keys/{lesser}/rotate"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["scopes"], json!(["patients:read"]));
    assert_eq!(
        manager
            .delete(&format!("/v1/api-keys/{lesser}"))
            .await
            .status,
        204
    );
    assert_eq!(
        manager
            .delete(&format!("/v1/api-keys/{manager_id}"))
            .await
            .status,
        204
    );
    assert_eq!(status_of(&manager, "/v1/api-keys").await, 401);
    // Without keys:manage, no key route at all.
    let (plain, _) = key(&server, &["records:write"]).await;
    let r = create_key(&plain, json!({"name": "n", "scopes": ["patients:read"]})).await;
    assert_eq!(
        r.body["error"]["message"],
        "this key lacks the scope keys:manage"
    );
}

async fn a_revoked_key_is_refused_at_once_like_an_unknown_one(backend: Backend) {
    let server = backend.spawn().await;
    let (k, id) = key(&server, &["patients:read"]).await;
    // Used, so cached.
    assert_eq!(status_of(&k, "/v1/patients").await, 200);
    let r = server.api().delete(&format!("/v1/api-keys/{id}")).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let refused = k.get("/v1/patients").await;
    let unknown = server
        .api()
        .with_key("efk_nobodyhasthiskeynobodyhasthiskeynobodyhas")
        .get("/v1/patients")
        .await;
    assert_error(&refused, 401, "authentication_error", None);
    assert_eq!(refused.body, unknown.body);
    let r = server.api().get(&format!("/v1/api-keys/{id}")).await;
    assert_error(&r, 404, "not_found", None);
    let list = server.api().get("/v1/api-keys").await;
    assert!(!list.body.to_string().contains(&id), "{}", list.body);
    let r = server.api().delete(&format!("/v1/api-keys/{id}")).await;
    assert_error(&r, 404, "not_found", None);
}

async fn a_rotated_secret_works_for_its_grace_period_and_no_longer(backend: Backend) {
    let (server, clock) = backend.spawn_with_clock(t0()).await;
    let (old, id) = key(&server, &["patients:read"]).await;
    assert_eq!(status_of(&old, "/v1/patients").await, 200);
    let r = server
        .api()
        .post(
            &format!("/v1/api-keys/{id}/rotate"),
            json!({"graceSeconds": 60}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], json!(id));
    let new = server.api().with_key(r.body["key"].as_str().unwrap());
    assert_ne!(new.key, old.key);
    assert_eq!(r.body["prefix"], json!(&new.key.as_deref().unwrap()[4..12]));
    assert_eq!(status_of(&old, "/v1/patients").await, 200);
    assert_eq!(status_of(&new, "/v1/patients").await, 200);
    clock.advance(SignedDuration::from_secs(61));
    assert_eq!(status_of(&old, "/v1/patients").await, 401);
    assert_eq!(status_of(&new, "/v1/patients").await, 200);
    // Without a grace period the old secret stops at once (no body at all).
    let r = server
        .api()
        .send(
            server
                .api()
                .request(reqwest::Method::POST, &format!("/v1/api-keys/{id}/rotate")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status_of(&new, "/v1/patients").await, 401);
    let newest = server.api().with_key(r.body["key"].as_str().unwrap());
    assert_eq!(status_of(&newest, "/v1/patients").await, 200);
}

async fn an_expired_key_is_refused(backend: Backend) {
    let (server, clock) = backend.spawn_with_clock(t0()).await;
    let r = create_key(
        &server.api(),
        json!({"name": "an hour", "scopes": ["patients:read"], "expiresAt": "2026-11-30T11:00:00+01:00"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["expiresAt"], "2026-11-30T10:00:00.000Z",
        "{}",
        r.body
    );
    let k = server.api().with_key(r.body["key"].as_str().unwrap());
    assert_eq!(status_of(&k, "/v1/patients").await, 200);
    clock.advance(SignedDuration::from_secs(3599));
    assert_eq!(status_of(&k, "/v1/patients").await, 200);
    clock.advance(SignedDuration::from_secs(1));
    let r = k.get("/v1/patients").await;
    assert_error(&r, 401, "authentication_error", None);
}

async fn last_used_at_is_noted_on_use(backend: Backend) {
    let (server, clock) = backend.spawn_with_clock(t0()).await;
    let (k, id) = key(&server, &["patients:read"]).await;
    let used_at = |expected: &'static str| {
        let api = server.api();
        let path = format!("/v1/api-keys/{id}");
        wait_for(Duration::from_secs(20), expected, move || {
            let (api, path) = (api.clone(), path.clone());
            async move {
                let r = api.get(&path).await;
                (r.body["lastUsedAt"] == expected).then_some(())
            }
        })
    };
    assert_eq!(status_of(&k, "/v1/patients").await, 200);
    used_at("2026-11-30T09:00:00.000Z").await;
    clock.advance(SignedDuration::from_secs(90));
    assert_eq!(status_of(&k, "/v1/patients").await, 200);
    used_at("2026-11-30T09:01:30.000Z").await;
}

async fn key_changes_are_audited_and_no_secret_is_written_anywhere(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let r = create_key(&api, json!({"name": "n", "scopes": ["patients:read"]})).await;
    let id = r.id();
    let first = r.body["key"].as_str().unwrap().to_string();
    let r = api
        .post(
            &format!("/v1/api-keys/{id}/rotate"),
            json!({"graceSeconds": 5}),
        )
        .await;
    let second = r.body["key"].as_str().unwrap().to_string();
    assert_eq!(api.delete(&format!("/v1/api-keys/{id}")).await.status, 204);
    let log = api.get("/v1/audit-log").await;
    let actions: Vec<&str> = log.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resourceId"] == id.as_str())
        .map(|e| {
            assert_eq!(e["resourceType"], "api_key");
            assert!(e["keyId"].as_str().unwrap().starts_with("key_"));
            assert_ne!(e["keyId"], id.as_str());
            e["action"].as_str().unwrap()
        })
        .collect();
    assert_eq!(actions, ["key.revoked", "key.rotated", "key.created"]);
    // No secret in the audit log, the event log, or the key's own record.
    let events = api.get("/v1/events").await;
    let listed = api.get("/v1/api-keys").await;
    for text in [
        log.body.to_string(),
        events.body.to_string(),
        listed.body.to_string(),
    ] {
        assert!(!text.contains(&first[4..]) && !text.contains(&second[4..]));
    }
}

async fn a_tenant_holds_at_most_keys_per_tenant_live_keys(backend: Backend) {
    let server = backend
        .spawn_with(Options {
            clock: None,
            configure: Some(Box::new(|c| c.limits.keys_per_tenant = 3)),
        })
        .await;
    // The bootstrap key and two more.
    let (_, second) = key(&server, &["patients:read"]).await;
    key(&server, &["patients:read"]).await;
    let body = json!({"name": "one too many", "scopes": ["patients:read"]});
    let r = create_key(&server.api(), body.clone()).await;
    assert_error(&r, 409, "conflict", None);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keys_per_tenant")
    );
    // A revoked key frees its place.
    server.api().delete(&format!("/v1/api-keys/{second}")).await;
    assert_eq!(create_key(&server.api(), body).await.status, 201);
}

async fn bad_key_requests_are_422_naming_the_field_and_change_nothing(backend: Backend) {
    let (server, _clock) = backend.spawn_with_clock(t0()).await;
    let api = server.api();
    let before = api.get("/v1/api-keys").await.body;
    for (body, field) in [
        (json!({"scopes": ["patients:read"]}), "name"),
        (json!({"name": "", "scopes": ["patients:read"]}), "name"),
        (json!({"name": "n"}), "scopes"),
        (json!({"name": "n", "scopes": []}), "scopes"),
        (
            json!({"name": "n", "scopes": ["patients:delete"]}),
            "scopes",
        ),
        (json!({"name": "n", "scopes": [7]}), "scopes"),
        (
            json!({"name": "n", "scopes": ["patients:read"], "expiresAt": "tomorrow"}),
            "expiresAt",
        ),
        (
            json!({"name": "n", "scopes": ["patients:read"], "expiresAt": T0}),
            "expiresAt",
        ),
        (
            json!({"name": "n", "scopes": ["patients:read"], "extra": 1}),
            "extra",
        ),
    ] {
        let r = create_key(&api, body.clone()).await;
        assert_error(&r, 422, "validation_error", Some(field));
        if body["scopes"] == json!(["patients:delete"]) {
            assert!(
                r.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("patients:delete")
            );
        }
    }
    let (_, id) = key(&server, &["patients:read"]).await;
    for grace in [json!(-1), json!(2_592_001), json!("60"), json!(1.5)] {
        let r = api
            .post(
                &format!("/v1/api-keys/{id}/rotate"),
                json!({"graceSeconds": grace}),
            )
            .await;
        assert_error(&r, 422, "validation_error", Some("graceSeconds"));
    }
    let after = api.get("/v1/api-keys").await.body;
    assert_eq!(
        after["data"].as_array().unwrap().len(),
        before["data"].as_array().unwrap().len() + 1
    );
    // Malformed keys are 401s like any other.
    for bad in ["efk_", "not a key", "efk_ünïcode"] {
        let r = api.with_key(bad).get("/v1/patients").await;
        assert_eq!(r.status, 401, "{bad:?}");
    }
}

async fn a_revoked_key_gets_nothing_more_from_an_open_stream_or_long_poll(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let tenant = principal(&server).await.tenant_id;
    let (k, id) = key(&server, &["patients:read", "events:read"]).await;
    let mut stream = k
        .request(reqwest::Method::GET, "/v1/events/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let poll = {
        let k = k.clone();
        tokio::spawn(async move { k.get("/v1/events?wait=30").await })
    };
    server.until_waiting(&tenant, 2).await;
    assert_eq!(api.delete(&format!("/v1/api-keys/{id}")).await.status, 204);
    api.patient().await;
    // The long poll wakes for the write and answers 401, not the event.
    let r = poll.await.unwrap();
    assert_error(&r, 401, "authentication_error", None);
    // The stream ends without the event.
    let rest = tokio::time::timeout(Duration::from_secs(20), async {
        let mut text = String::new();
        while let Some(chunk) = stream.chunk().await.unwrap_or(None) {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    })
    .await
    .expect("the stream ends");
    assert!(!rest.contains("patient.created"), "{rest}");
}

async fn deliveries_of_hidden_types_and_header_values_are_not_shown(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = eventflow_testkit::Receiver::start().await;
    let ep = api
        .post(
            "/v1/endpoints",
            json!({"url": rx.url("/hook"), "headers": {"X-Receiver-Token": "s3cr3t-value"}}),
        )
        .await;
    assert_eq!(ep.status, 201, "{}", ep.body);
    let ep = ep.id();
    let patient = api.patient().await;
    api.create(
        "appointments",
        json!({"patientId": patient, "start": "2027-01-05T09:00:00Z", "status": "booked"}),
    )
    .await;
    let all = wait_for(Duration::from_secs(20), "two deliveries", || {
        let api = api.clone();
        let path = format!("/v1/endpoints/{ep}/deliveries");
        async move {
            let r = api.get(&path).await;
            let data = r.body["data"].as_array()?.clone();
            (data.len() == 2).then_some(data)
        }
    })
    .await;
    let (k, _) = key(&server, &["appointments:read", "endpoints:read"]).await;
    let r = k.get(&format!("/v1/endpoints/{ep}/deliveries")).await;
    let types: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["appointment.created"]);
    let hidden = all
        .iter()
        .find(|d| d["eventType"] == "patient.created")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = k.get(&format!("/v1/deliveries/{hidden}")).await;
    assert_error(&r, 404, "not_found", None);
    let (writer, _) = key(&server, &["appointments:read", "endpoints:write"]).await;
    let r = writer
        .post(&format!("/v1/deliveries/{hidden}/retry"), json!({}))
        .await;
    assert_error(&r, 404, "not_found", None);
    // Header values, like secrets, need endpoints:write.
    let r = k.get(&format!("/v1/endpoints/{ep}")).await;
    assert!(!r.body.to_string().contains("s3cr3t-value"), "{}", r.body);
    assert!(
        r.body["headers"].get("x-receiver-token").is_some(),
        "{}",
        r.body
    );
    let r = writer.get(&format!("/v1/endpoints/{ep}")).await;
    assert_eq!(r.body["headers"]["x-receiver-token"], "s3cr3t-value");
}

async fn a_key_made_by_an_expiring_key_expires_no_later(backend: Backend) {
    let (server, _clock) = backend.spawn_with_clock(t0()).await;
    let r = create_key(
        &server.api(),
        json!({"name": "temp", "scopes": ["keys:manage", "patients:read"], "expiresAt": "2026-12-01T00:00:00Z"}),
    )
    .await;
    let temp = server.api().with_key(r.body["key"].as_str().unwrap());
    let r = create_key(&temp, json!({"name": "child", "scopes": ["patients:read"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["expiresAt"], "2026-12-01T00:00:00.000Z");
    let r = create_key(
        &temp,
        json!({"name": "later", "scopes": ["patients:read"], "expiresAt": "2027-01-01T00:00:00Z"}),
    )
    .await;
    assert_error(&r, 422, "validation_error", Some("expiresAt"));
}
