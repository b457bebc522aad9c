//! The audit log (docs/design.md §5, §9) and the operational endpoints:
//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/docs`.

use std::collections::{BTreeSet, HashSet};

use eventflow_model::ResourceType;
use eventflow_testkit::{Api, Backend, backend_tests};
use serde_json::{Value, json};

use crate::helpers::{assert_timestamp, principal};

backend_tests!(
    the_audit_log_records_every_read_and_write_newest_first,
    the_audit_log_filters_and_pages,
    the_audit_log_belongs_to_the_tenant_and_needs_a_key,
    health_and_readiness_answer_without_a_key,
    metrics_are_prometheus_text_with_requests_and_events,
    no_metric_label_takes_a_value_a_client_made_up,
    openapi_json_describes_every_route_the_server_has,
    docs_render_the_description_from_this_server_alone,
);

/// (action, resourceType, resourceId) of each entry, newest first, all pages.
async fn audit(api: &Api, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/audit-log?limit=1000{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = api.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        out.extend(r.body["data"].as_array().unwrap().iter().cloned());
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn triples(entries: &[Value]) -> Vec<(String, String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["resourceType"].as_str().unwrap().to_string(),
                e["resourceId"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn t(action: &str, rt: &str, id: &str) -> (String, String, String) {
    (action.into(), rt.into(), id.into())
}

/// P created, read, updated; E and O created; E read with O included; the
/// patient list read; O deleted. Returns (P, E, O).
async fn activity(api: &Api) -> (String, String, String) {
    let p = api.patient().await;
    assert_eq!(api.get(&format!("/v1/patients/{p}")).await.status, 200);
    let r = api
        .patch(&format!("/v1/patients/{p}"), json!({"mrn": "M-1"}))
        .await;
    assert_eq!(r.status, 200);
    let e = api.create("encounters", json!({"patientId": p})).await;
    let o = api
        .create(
            "observations",
            json!({"patientId": p, "encounterId": e, "code": "8867-4", "value": 72}),
        )
        .await;
    let r = api
        .get(&format!("/v1/encounters/{e}?include=observations"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["included"]["observations"][0]["id"], o.as_str());
    let r = api.get("/v1/patients").await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.delete(&format!("/v1/observations/{o}")).await.status,
        204
    );
    (p, e, o)
}

async fn the_audit_log_records_every_read_and_write_newest_first(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let key_id = principal(&server).await.key_id;
    assert!(key_id.starts_with("key_"), "{key_id}");
    let (p, e, o) = activity(&api).await;

    let r = api.get("/v1/audit-log").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body.as_object().unwrap().keys().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"data".to_string(), &"nextCursor".to_string()])
    );
    assert_eq!(r.body["nextCursor"], Value::Null);
    let entries = r.body["data"].as_array().unwrap().clone();
    let got = triples(&entries);
    assert_eq!(got.len(), 9, "{got:#?}");
    assert_eq!(got[0], t("delete", "observation", &o));
    assert_eq!(
        got[1],
        t("read", "patient", &p),
        "a list read each record it returned"
    );
    // The include read the encounter and each included record (one request:
    // either order).
    let include: HashSet<_> = got[2..4].iter().cloned().collect();
    assert_eq!(
        include,
        HashSet::from([t("read", "encounter", &e), t("read", "observation", &o)])
    );
    assert_eq!(
        got[4..],
        [
            t("create", "observation", &o),
            t("create", "encounter", &e),
            t("update", "patient", &p),
            t("read", "patient", &p),
            t("create", "patient", &p),
        ]
    );
    let mut ids = HashSet::new();
    for entry in &entries {
        assert_eq!(
            entry
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<BTreeSet<_>>(),
            ["id", "at", "keyId", "action", "resourceType", "resourceId"]
                .into_iter()
                .map(String::from)
                .collect::<BTreeSet<_>>(),
            "who, what, when, action — and no record data"
        );
        assert_eq!(entry["keyId"], key_id.as_str());
        assert_timestamp(entry["at"].as_str().unwrap());
        assert!(ids.insert(entry["id"].as_str().unwrap().to_string()));
    }
    let ats: Vec<&str> = entries.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(
        ats.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {ats:?}"
    );

    // Writes in a batch are audited like single ones.
    let r = api
        .post(
            "/v1/batch",
            json!({"operations": [
                {"method": "POST", "path": "/v1/notes", "body": {"patientId": p, "text": "x"}},
                {"method": "PATCH", "path": format!("/v1/encounters/{e}"), "body": {"status": "finished"}}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let note = r.body["results"][0]["body"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = triples(&audit(&api, "").await);
    let newest: HashSet<_> = got[..2].iter().cloned().collect();
    assert_eq!(
        newest,
        HashSet::from([t("create", "note", &note), t("update", "encounter", &e)])
    );
    // A write that fails is not recorded as done.
    let r = api
        .post("/v1/notes", json!({"patientId": p, "text": ""}))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(triples(&audit(&api, "").await).len(), got.len());
}

async fn the_audit_log_filters_and_pages(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let (p, e, o) = activity(&api).await;
    let all = audit(&api, "").await;

    let got = triples(&audit(&api, &format!("&resourceId={p}")).await);
    assert_eq!(
        got,
        [
            t("read", "patient", &p),
            t("update", "patient", &p),
            t("read", "patient", &p),
            t("create", "patient", &p),
        ]
    );
    let got = triples(&audit(&api, "&resourceType=observation").await);
    assert_eq!(got.len(), 3);
    assert!(
        got.iter()
            .all(|(_, rt, id)| rt == "observation" && *id == o)
    );
    let got = triples(&audit(&api, &format!("&resourceType=encounter&resourceId={e}")).await);
    assert_eq!(
        got,
        [t("read", "encounter", &e), t("create", "encounter", &e)]
    );
    let got = audit(&api, &format!("&resourceType=patient&resourceId={e}")).await;
    assert!(got.is_empty());

    // Pages of 2, following nextCursor, give the same entries in the same order.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v1/audit-log?limit=2".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = api.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let data = r.body["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        paged.extend(data.iter().cloned());
        pages += 1;
        match r.body["nextCursor"].as_str() {
            Some(c) => {
                assert_eq!(data.len(), 2, "a page with a next cursor is full");
                cursor = Some(c.to_string());
            }
            None => break,
        }
    }
    assert_eq!(pages, 5, "9 entries in pages of 2");
    assert_eq!(paged, all);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("resourceType=spaceship", "resourceType"),
        ("action=read", "action"),
    ] {
        let r = api.get(&format!("/v1/audit-log?{query}")).await;
        assert_eq!(r.status, 422, "{query}: {}", r.body);
        assert_eq!(r.error_field(), Some(field));
    }
}

async fn the_audit_log_belongs_to_the_tenant_and_needs_a_key(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    activity(&api).await;
    let r = server.anonymous().get("/v1/audit-log").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["type"], "authentication_error");

    let b = server.new_tenant("b").await;
    assert!(
        audit(&b, "").await.is_empty(),
        "another tenant's log is empty"
    );
    let mine = b.patient().await;
    let got = audit(&b, "").await;
    assert_eq!(triples(&got), [t("create", "patient", &mine)]);
    let a_key = principal(&server).await.key_id;
    assert_ne!(got[0]["keyId"], a_key.as_str(), "b's own key id");
    assert!(got[0]["keyId"].as_str().unwrap().starts_with("key_"));
    assert_eq!(audit(&api, "").await.len(), 9, "a's log is unchanged");
}

async fn health_and_readiness_answer_without_a_key(backend: Backend) {
    let server = backend.spawn().await;
    let anon = server.anonymous();
    let r = anon.get("/healthz").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = anon.get("/readyz").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(anon.get("/nowhere").await.status, 404);
}

async fn metrics_are_prometheus_text_with_requests_and_events(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    api.patient().await;
    let resp = api
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("eventflow_http_requests_total{"),
        "request counter missing:\n{text}"
    );
    assert!(
        text.contains("eventflow_events_total{type=\"patient.created\"}"),
        "event counter missing:\n{text}"
    );
    assert!(text.contains("# TYPE eventflow_events_total counter"));
    // Every sample line is `name{labels} value`.
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line:?}"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "{line:?}");
        }
    }
    // The route label is the pattern, never a concrete id.
    let id = api.patient().await;
    api.get(&format!("/v1/patients/{id}")).await;
    let text = api.get("/metrics").await.body;
    let text = text.as_str().unwrap();
    assert!(!text.contains(&id), "a record id leaked into a label");
    assert!(text.contains("route=\"/v1/patients/{id}\""), "{text}");
}

async fn no_metric_label_takes_a_value_a_client_made_up(backend: Backend) {
    use eventflow_testkit::{Answer, Receiver, wait_for};
    let server = backend.spawn().await;
    let api = server.api();
    // Any token is a method to HTTP: none may become a series of its own.
    let http = reqwest::Client::new();
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{i}X").as_bytes()).unwrap();
        let r = http
            .request(method, format!("{}/healthz", server.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    // An endpoint that fails, then is deleted: its id is no series either.
    let rx = Receiver::start().await;
    rx.answer(Answer::Status(500));
    let ep = api.post("/v1/endpoints", json!({"url": rx.url("/")})).await;
    assert_eq!(ep.status, 201, "{}", ep.body);
    let ep_id = ep.id();
    api.patient().await;
    rx.wait_for(1, std::time::Duration::from_secs(20)).await;
    wait_for(
        std::time::Duration::from_secs(20),
        "the failure counted",
        || {
            let (api, ep_id) = (api.clone(), ep_id.clone());
            async move {
                (api.get(&format!("/v1/endpoints/{ep_id}")).await.body["failureStreak"] == 1)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        api.delete(&format!("/v1/endpoints/{ep_id}")).await.status,
        204
    );
    let text = api.get("/metrics").await.body;
    let text = text.as_str().unwrap();
    assert!(
        !text.contains("MADEUP"),
        "a made-up method is a label:\n{text}"
    );
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(!text.contains(&ep_id), "an endpoint id is a label:\n{text}");
}

fn v1_routes() -> Vec<(String, Vec<&'static str>)> {
    let mut routes = Vec::new();
    for rt in ResourceType::ALL {
        routes.push((format!("/v1/{}", rt.collection()), vec!["post", "get"]));
        routes.push((
            format!("/v1/{}/{{id}}", rt.collection()),
            vec!["get", "patch", "delete"],
        ));
    }
    for (path, methods) in [
        ("/v1/batch", vec!["post"]),
        ("/v1/events", vec!["get"]),
        ("/v1/events/{id}", vec!["get"]),
        ("/v1/events/{id}/deliveries", vec!["get"]),
        ("/v1/events/stream", vec!["get"]),
        ("/v1/event-types", vec!["get"]),
        ("/v1/audit-log", vec!["get"]),
        ("/v1/endpoints", vec!["post", "get"]),
        ("/v1/endpoints/{id}", vec!["get", "patch", "delete"]),
        ("/v1/endpoints/{id}/secret", vec!["get"]),
        ("/v1/endpoints/{id}/secret/rotate", vec!["post"]),
        ("/v1/endpoints/{id}/test", vec!["post"]),
        ("/v1/endpoints/{id}/replay", vec!["post"]),
        ("/v1/endpoints/{id}/replays/{replay}", vec!["get"]),
        ("/v1/endpoints/{id}/deliveries", vec!["get"]),
        ("/v1/endpoints/{id}/events", vec!["get"]),
        ("/v1/deliveries/{id}", vec!["get"]),
        ("/v1/deliveries/{id}/retry", vec!["post"]),
        ("/v1/disclosures", vec!["get"]),
        ("/v1/workflows", vec!["get", "post"]),
        ("/v1/workflows/{name}", vec!["get", "put", "delete"]),
        ("/v1/workflow-runs", vec!["get"]),
        ("/v1/workflow-runs/{id}", vec!["get"]),
        ("/v1/notifications", vec!["get"]),
        ("/v1/timers", vec!["get"]),
        ("/v1/inbound/twilio/{tenantId}", vec!["post"]),
    ] {
        routes.push((path.to_string(), methods));
    }
    routes
}

/// Collects every `$ref` in a JSON document.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                if k == "$ref" {
                    out.push(v.as_str().unwrap());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

async fn openapi_json_describes_every_route_the_server_has(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let r = server.anonymous().get("/openapi.json").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let doc = r.body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1: {}",
        doc["openapi"]
    );
    // utoipa's model has no place for the JSON Schema keywords of the
    // webhooks' envelopes; `catalogue` checks the whole document with
    // openapi-spec-validator.
    let mut paths_only = doc.clone();
    paths_only.as_object_mut().unwrap().remove("webhooks");
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_value(paths_only).expect("a valid OpenAPI document");
    assert!(!parsed.paths.paths.is_empty());

    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in v1_routes() {
        let item = paths
            .get(&path)
            .unwrap_or_else(|| panic!("{path} is missing from /openapi.json"));
        for m in methods {
            assert!(item.get(m).is_some(), "{m} {path} is missing");
            assert!(item[m]["responses"].is_object(), "{m} {path} has responses");
        }
    }
    // Every record type has its schema, with the fields that validate it.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for rt in ResourceType::ALL {
        let s = &schemas[rt.title()];
        for f in rt.fields() {
            assert!(
                s["properties"].get(f.name).is_some(),
                "{}.{} missing",
                rt.title(),
                f.name
            );
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }
    let mut op_ids = HashSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if let Some(id) = op["operationId"].as_str() {
                assert!(op_ids.insert(id.to_string()), "duplicate operationId {id}");
            }
            // The server really has each documented route.
            let concrete = path.replace("{id}", "x_0");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut req = api.request(m, &concrete);
            if method == "post" || method == "patch" {
                req = req.json(&json!({}));
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = if path.ends_with("/stream") {
                String::new() // an open stream: the status says enough
            } else {
                resp.text().await.unwrap()
            };
            assert!(
                status != 405 && !body.contains("no such route"),
                "{method} {path} is documented but the server answers {status} {body}"
            );
        }
    }
}

async fn docs_render_the_description_from_this_server_alone(backend: Backend) {
    let server = backend.spawn().await;
    let anon = server.anonymous();
    // /docs leads to the page (a redirect to /docs/ is followed).
    let resp = anon
        .request(reqwest::Method::GET, "/docs")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page_url = resp.url().clone();
    assert!(page_url.as_str().starts_with(&server.base), "{page_url}");
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    let html = resp.text().await.unwrap();
    assert!(html.contains("<html"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("src=\"//"),
        "the page must not name another host:\n{html}"
    );

    // Every script and stylesheet it references comes from this server.
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            assets.push(part.split('"').next().unwrap().to_string());
        }
    }
    assert!(
        assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")),
        "{assets:?}"
    );
    let mut initializer = None;
    for asset in &assets {
        let url = page_url.join(asset).unwrap();
        assert_eq!(
            url.origin(),
            page_url.origin(),
            "{asset} is not served by this server"
        );
        let resp = server.api().http.get(url.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let body = resp.text().await.unwrap_or_default();
        assert!(!body.is_empty(), "{url} is empty");
        if asset.contains("initializer") {
            initializer = Some(body);
        }
    }
    // The configuration points at this server's /openapi.json and turns
    // Swagger UI's online validator (validator.swagger.io) off.
    let init = initializer.expect("the page loads its configuration script");
    assert!(init.contains("\"/openapi.json\""), "{init}");
    assert!(
        !init.contains("http://") && !init.contains("https://"),
        "{init}"
    );
    assert!(
        init.contains("\"validatorUrl\": \"none\"") || init.contains("\"validatorUrl\":\"none\""),
        "the online validator badge would load from the internet:\n{init}"
    );
}
