//! Patient data governance (the README's "Patient data"): who an endpoint's
//! recipient is and why it receives data, the disclosure records each
//! delivery of a patient's data leaves, and the accounting a patient may
//! request (JSON, and CSV read back by Python's `csv` module).

use std::time::Duration;

use eventflow_testkit::{Api, Backend, Receiver, backend_tests, python};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::helpers::assert_error;

backend_tests!(
    an_endpoint_names_its_recipient_and_purpose_and_bad_ones_are_422,
    each_delivery_of_a_patients_data_is_a_disclosure_record_that_outlives_its_endpoint,
    a_patients_accounting_lists_disclosures_for_other_purposes_as_json_and_csv,
    disclosures_acknowledged_before_disclosure_records_existed_are_carried_over,
    a_tenant_that_forbids_full_payloads_has_thin_endpoints_only,
);

const LONG: Duration = Duration::from_secs(20);

async fn an_endpoint_names_its_recipient_and_purpose_and_bad_ones_are_422(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    let ep = api
        .create_endpoint(json!({"url": rx.url("/hook?token=x")}))
        .await;
    // By default the recipient is the URL's host, the purpose operations.
    assert_eq!(ep["recipient"], format!("127.0.0.1:{}", rx.port()));
    assert_eq!(ep["purpose"], "operations");
    assert_eq!(ep["purposeText"], Value::Null);
    assert_eq!(ep["owner"], Value::Null);
    let id = ep["id"].as_str().unwrap();
    for (body, field) in [
        (json!({"purpose": "research"}), "purpose"),
        (json!({"purpose": 3}), "purpose"),
        (json!({"purpose": "other"}), "purposeText"),
        (json!({"purposeText": "a registry"}), "purposeText"),
        (
            json!({"purpose": "treatment", "purposeText": "care"}),
            "purposeText",
        ),
        (json!({"recipient": ""}), "recipient"),
        (json!({"recipient": " "}), "recipient"),
        (json!({"recipient": "x".repeat(201)}), "recipient"),
        (json!({"owner": 7}), "owner"),
        (json!({"owner": "é".repeat(201)}), "owner"),
    ] {
        let r = api
            .patch(&format!("/v1/endpoints/{id}"), body.clone())
            .await;
        assert_error(&r, 422, "validation_error", Some(field));
        let mut create = body.clone();
        create["url"] = json!(rx.url("/"));
        let r = api.post("/v1/endpoints", create).await;
        assert_error(&r, 422, "validation_error", Some(field));
    }
    // Nothing changed, nothing was created.
    let listed = api.get("/v1/endpoints").await.body;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["purpose"], "operations");
    let r = api
        .patch(
            &format!("/v1/endpoints/{id}"),
            json!({"recipient": "Acme Labs", "purpose": "other", "purposeText": "a research registry", "owner": "Acme"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["recipient"], "Acme Labs");
    assert_eq!(r.body["purpose"], "other");
    assert_eq!(r.body["purposeText"], "a research registry");
    assert_eq!(r.body["owner"], "Acme");
    // Another purpose drops the text; null gives the host back.
    let r = api
        .patch(
            &format!("/v1/endpoints/{id}"),
            json!({"purpose": "payment", "recipient": null}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["purpose"], "payment");
    assert_eq!(r.body["purposeText"], Value::Null);
    assert_eq!(r.body["recipient"], format!("127.0.0.1:{}", rx.port()));
}

/// The disclosures of the tenant, all pages, with `query` added.
async fn all_disclosures(api: &Api, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = api
            .get(&format!("/v1/disclosures?limit=2{query}{cursor}"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        out.extend(r.body["data"].as_array().unwrap().iter().cloned());
        match r.body["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return out,
        }
    }
}

async fn each_delivery_of_a_patients_data_is_a_disclosure_record_that_outlives_its_endpoint(
    backend: Backend,
) {
    let server = backend.spawn().await;
    let api = server.api();
    let full_rx = Receiver::start().await;
    let thin_rx = Receiver::start().await;
    let full = api
        .create_endpoint(json!({
            "url": full_rx.url("/hook"), "recipient": "Acme Labs",
            "purpose": "other", "purposeText": "a research registry",
        }))
        .await;
    let thin = api
        .create_endpoint(
            json!({"url": thin_rx.url("/"), "payload": "thin", "purpose": "treatment"}),
        )
        .await;
    let patient = api.patient().await;
    api.create(
        "practitioners",
        json!({"firstName": "Gregory", "lastName": "House"}),
    )
    .await;
    let appt = api
        .create(
            "appointments",
            json!({"patientId": patient, "start": "2030-01-01T10:00:00Z", "end": "2030-01-01T10:30:00Z"}),
        )
        .await;
    let r = api
        .patch(
            &format!("/v1/appointments/{appt}"),
            json!({"reason": "Follow-up"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    full_rx.wait_for(4, LONG).await;
    thin_rx.wait_for(4, LONG).await;
    // Three events about the patient, to two endpoints; the practitioner's
    // is about no patient.
    for ep in [&full, &thin] {
        api.wait_until_nothing_pending(ep["id"].as_str().unwrap(), LONG)
            .await;
    }
    let all = all_disclosures(&api, "").await;
    assert_eq!(all.len(), 6, "{all:#?}");
    for d in &all {
        assert!(d["id"].as_str().unwrap().starts_with("dsc_"), "{d}");
        assert_eq!(d["patientId"], patient.as_str());
        assert!(d["deliveryId"].as_str().unwrap().starts_with("dlv_"));
        crate::helpers::assert_timestamp(d["at"].as_str().unwrap());
    }
    let of = |ep: &Value| -> Vec<&Value> {
        all.iter().filter(|d| d["endpointId"] == ep["id"]).collect()
    };
    let sent = of(&full);
    // Sent side by side: acknowledged in either order.
    let mut types: Vec<&str> = sent
        .iter()
        .map(|d| d["eventType"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "appointment.created",
            "appointment.updated",
            "patient.created"
        ]
    );
    let update = *sent
        .iter()
        .find(|d| d["eventType"] == "appointment.updated")
        .unwrap();
    assert_eq!(update["recipient"], "Acme Labs");
    assert_eq!(update["purpose"], "other");
    assert_eq!(update["purposeText"], "a research registry");
    assert_eq!(
        update["origin"],
        full_rx.url("").trim_end_matches('/'),
        "scheme and host only"
    );
    assert_eq!(update["resourceType"], "appointment");
    assert_eq!(update["resourceId"], appt.as_str());
    // The fields sent: the record's, as the receiver got them.
    let got = full_rx.received();
    let body = got
        .iter()
        .map(|r| r.json())
        .find(|b| b["id"] == update["eventId"])
        .expect("the update was delivered");
    let mut sent_fields: Vec<String> = body["data"].as_object().unwrap().keys().cloned().collect();
    let mut recorded: Vec<String> = update["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    sent_fields.sort();
    recorded.sort();
    assert_eq!(recorded, sent_fields);
    assert!(recorded.contains(&"reason".to_string()));
    // A thin payload sends the patient's id alone: no fields.
    for d in of(&thin) {
        assert_eq!(d["fields"], json!([]), "{d}");
        assert_eq!(d["purpose"], "treatment");
        assert!(d.get("purposeText").is_none());
        assert_eq!(d["recipient"], format!("127.0.0.1:{}", thin_rx.port()));
    }
    // Filters.
    assert_eq!(all_disclosures(&api, "&purpose=other").await.len(), 3);
    assert_eq!(all_disclosures(&api, "&purpose=treatment").await.len(), 3);
    assert_eq!(all_disclosures(&api, "&purpose=payment").await.len(), 0);
    let other = api.patient().await;
    for d in all_disclosures(&api, &format!("&patientId={other}")).await {
        assert_eq!(d["patientId"], other.as_str(), "only that patient's");
    }
    let first = all.iter().map(|d| d["at"].as_str().unwrap()).min().unwrap();
    assert_eq!(
        all_disclosures(&api, &format!("&until={first}"))
            .await
            .len(),
        0
    );
    assert_eq!(
        all_disclosures(&api, "&since=2999-01-01T00:00:00Z")
            .await
            .len(),
        0
    );
    assert_eq!(
        all_disclosures(&api, &format!("&since={first}&patientId={patient}"))
            .await
            .len(),
        6
    );
    for (query, field) in [
        ("purpose=research", "purpose"),
        ("since=yesterday", "since"),
        ("until=2030-13-01T00:00:00Z", "until"),
        ("patientId=x", "patientId"),
        ("limit=0", "limit"),
        ("cursor=%20", "cursor"),
        ("recipient=Acme", "recipient"),
    ] {
        let r = api.get(&format!("/v1/disclosures?{query}")).await;
        assert_error(&r, 422, "validation_error", Some(field));
    }
    // The endpoint goes; its disclosures stay, as they were.
    let full_id = full["id"].as_str().unwrap();
    assert_eq!(
        api.delete(&format!("/v1/endpoints/{full_id}")).await.status,
        204
    );
    let after = all_disclosures(&api, &format!("&purpose=other&patientId={patient}")).await;
    assert_eq!(after, sent.into_iter().cloned().collect::<Vec<_>>());
    // Another tenant sees none of them.
    let stranger = server.new_tenant("stranger").await;
    assert_eq!(all_disclosures(&stranger, "").await.len(), 0);
    let r = stranger
        .get(&format!("/v1/patients/{patient}/disclosure-accounting"))
        .await;
    assert_eq!(r.body["data"], json!([]), "{}", r.body);
}

async fn a_patients_accounting_lists_disclosures_for_other_purposes_as_json_and_csv(
    backend: Backend,
) {
    let start: Timestamp = "2026-01-05T09:00:00Z".parse().unwrap();
    let (server, clock) = backend.spawn_with_clock(start).await;
    let api = server.api();
    let rx = Receiver::start().await;
    // A recipient name a spreadsheet would run as a formula.
    api.create_endpoint(json!({
        "url": rx.url("/"), "recipient": "=HYPERLINK(\"http://x\")",
        "purpose": "other", "purposeText": "a registry, for research",
        "eventTypes": ["patient.*"],
    }))
    .await;
    api.create_endpoint(json!({"url": rx.url("/billing"), "purpose": "payment"}))
        .await;
    let patient = api.patient().await;
    rx.wait_for(2, LONG).await;
    let path = format!("/v1/patients/{patient}/disclosure-accounting");
    for ep in api.get("/v1/endpoints").await.body["data"]
        .as_array()
        .unwrap()
    {
        api.wait_until_nothing_pending(ep["id"].as_str().unwrap(), LONG)
            .await;
    }
    let all = api.get("/v1/disclosures").await.body;
    assert_eq!(all["data"].as_array().map(Vec::len), Some(2), "{all}");
    let accounting = api.get(&path).await;
    assert_eq!(accounting.status, 200, "{}", accounting.body);
    let a = &accounting.body;
    assert_eq!(a["patientId"], patient.as_str());
    // Six years back by default.
    assert_eq!(a["since"], "2020-01-07T09:00:00.000Z");
    // Payment is left out: the accounting holds what is not treatment,
    // payment or operations.
    let data = a["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{a}");
    let e = &data[0];
    assert_eq!(e["recipient"], "=HYPERLINK(\"http://x\")");
    assert_eq!(e["purpose"], "other");
    assert_eq!(e["purposeText"], "a registry, for research");
    assert_eq!(e["eventType"], "patient.created");
    let description = e["description"].as_str().unwrap();
    assert!(
        description.starts_with("patient (patient.created): ") && description.contains("firstName"),
        "{description}"
    );
    crate::helpers::assert_timestamp(e["date"].as_str().unwrap());
    // CSV, read back by Python's csv module.
    let r = api
        .send(
            api.request(reqwest::Method::GET, &path)
                .header("accept", "text/csv"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let csv = r.body.as_str().expect("CSV text").to_string();
    let rows: Value = serde_json::from_str(&python(
        "import csv, io, json, sys; print(json.dumps(list(csv.DictReader(io.StringIO(sys.argv[1])))))",
        &[&csv],
    ))
    .unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{csv}");
    assert_eq!(rows[0]["date"], e["date"]);
    assert_eq!(
        rows[0]["recipient"], "'=HYPERLINK(\"http://x\")",
        "not a formula"
    );
    assert_eq!(rows[0]["description"], description);
    assert_eq!(rows[0]["purpose"], "other");
    assert_eq!(rows[0]["purpose_text"], "a registry, for research");
    // Seven years on, the default window has passed it; an explicit since
    // still reaches it.
    clock.advance(SignedDuration::from_hours(24 * 365 * 7));
    let r = api.get(&path).await;
    assert_eq!(r.body["data"], json!([]), "{}", r.body);
    let r = api.get(&format!("{path}?since=2026-01-01T00:00:00Z")).await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    // Errors, and who may ask.
    assert_error(
        &api.get("/v1/patients/appt_0193/disclosure-accounting")
            .await,
        404,
        "not_found",
        None,
    );
    assert_error(
        &api.get(&format!("{path}?since=soon")).await,
        422,
        "validation_error",
        Some("since"),
    );
    let reader = server.scoped(&["patients:read"]).await;
    assert_error(&reader.get(&path).await, 403, "forbidden", None);
    let auditor = server.scoped(&["audit:read"]).await;
    assert_eq!(auditor.get(&path).await.status, 200);
}

/// A database as the build before disclosure records left it: a clinic, an
/// endpoint with a token in its URL and credentials before its host, one
/// full and one thin delivery acknowledged, one still pending.
const BEFORE_DISCLOSURE_RECORDS: &str = "
INSERT INTO tenants (id, name, created_at) VALUES ('ten_1', 'clinic', '2026-01-01T00:00:00.000Z');
INSERT INTO endpoints (id, tenant_id, revision, created_at, updated_at, config, secrets) VALUES
 ('ep_full', 'ten_1', 1, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z',
  '{\"url\":\"https://user:pw@hooks.example.com:8443/in?token=s3cret\",\"payload\":\"full\"}', '[]'),
 ('ep_thin', 'ten_1', 1, '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z',
  '{\"url\":\"http://thin.example.org\",\"payload\":\"thin\"}', '[]');
INSERT INTO events (tenant_id, sequence, id, type, resource_type, resource_id, created_at, body) VALUES
 ('ten_1', 1, 'evt_1', 'patient.created', 'patient', 'pat_1', '2026-01-02T00:00:00.000Z',
  '{\"id\":\"evt_1\",\"data\":{\"id\":\"pat_1\",\"firstName\":\"Ada\"}}');
INSERT INTO deliveries (id, tenant_id, endpoint_id, endpoint_sequence, event_sequence, event_id, event_type,
  resource_id, patient_id, status, created_at, updated_at, succeeded_at) VALUES
 ('dlv_a', 'ten_1', 'ep_full', 1, 1, 'evt_1', 'patient.created', 'pat_1', 'pat_1', 'succeeded',
  '2026-01-02T00:00:00.000Z', '2026-01-02T00:00:01.000Z', '2026-01-02T00:00:01.000Z'),
 ('dlv_b', 'ten_1', 'ep_thin', 1, 1, 'evt_1', 'patient.created', 'pat_1', 'pat_1', 'succeeded',
  '2026-01-02T00:00:00.000Z', '2026-01-02T00:00:02.000Z', '2026-01-02T00:00:02.000Z'),
 ('dlv_c', 'ten_1', 'ep_thin', 2, 1, 'evt_1', 'patient.created', 'pat_1', 'pat_1', 'pending',
  '2026-01-02T00:00:00.000Z', '2026-01-02T00:00:02.000Z', NULL);
";

async fn disclosures_acknowledged_before_disclosure_records_existed_are_carried_over(
    backend: Backend,
) {
    // Migrated up to the version before, filled, migrated to the newest;
    // the disclosure records read back (JSON lists without spaces).
    let rows: Vec<Vec<String>> = crate::helpers::upgraded(
        &backend,
        11,
        BEFORE_DISCLOSURE_RECORDS,
        "SELECT id, tenant_id, patient_id, at, recipient, endpoint_id, origin, delivery_id, event_id, event_type, resource_type, resource_id, fields, purpose FROM disclosures ORDER BY id",
    )
    .await
    .into_iter()
    .map(|r| r.into_iter().map(|c| c.unwrap().replace(", ", ",")).collect())
    .collect();
    let expected = |delivery: &str, at: &str, host: &str, origin: &str, ep: &str, fields: &str| {
        [
            &format!("dsc_{}", &delivery[4..]),
            "ten_1",
            "pat_1",
            at,
            host,
            ep,
            origin,
            delivery,
            "evt_1",
            "patient.created",
            "patient",
            "pat_1",
            fields,
            "operations",
        ]
        .map(str::to_string)
        .to_vec()
    };
    assert_eq!(
        rows,
        [
            // The credentials and the token stay behind; the host is the recipient.
            expected(
                "dlv_a",
                "2026-01-02T00:00:01.000Z",
                "hooks.example.com:8443",
                "https://hooks.example.com:8443",
                "ep_full",
                "[\"id\",\"firstName\"]"
            ),
            // A thin payload sent no fields; a pending delivery disclosed nothing.
            expected(
                "dlv_b",
                "2026-01-02T00:00:02.000Z",
                "thin.example.org",
                "http://thin.example.org",
                "ep_thin",
                "[]"
            ),
        ]
    );
}

async fn a_tenant_that_forbids_full_payloads_has_thin_endpoints_only(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    let r = api.get("/v1/settings").await;
    assert_eq!(r.body, json!({"maxPayload": "full"}));
    let full = api.create_endpoint(json!({"url": rx.url("/")})).await;
    let full = full["id"].as_str().unwrap().to_string();
    // Not while an endpoint sends full payloads: the conflict names it.
    let r = api
        .patch("/v1/settings", json!({"maxPayload": "thin"}))
        .await;
    assert_error(&r, 409, "conflict", None);
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains(&full),
        "{}",
        r.body
    );
    assert_eq!(api.get("/v1/settings").await.body["maxPayload"], "full");
    let r = api
        .patch(&format!("/v1/endpoints/{full}"), json!({"payload": "thin"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api
        .patch("/v1/settings", json!({"maxPayload": "thin"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"maxPayload": "thin"}));
    // Now no endpoint may have full payloads, new or changed.
    let r = api.post("/v1/endpoints", json!({"url": rx.url("/")})).await;
    assert_error(&r, 422, "validation_error", Some("payload"));
    let r = api
        .post(
            "/v1/endpoints",
            json!({"url": rx.url("/"), "payload": "full"}),
        )
        .await;
    assert_error(&r, 422, "validation_error", Some("payload"));
    let r = api
        .patch(&format!("/v1/endpoints/{full}"), json!({"payload": "full"}))
        .await;
    assert_error(&r, 422, "validation_error", Some("payload"));
    assert_eq!(
        api.get(&format!("/v1/endpoints/{full}")).await.body["payload"],
        "thin"
    );
    let thin = api
        .post(
            "/v1/endpoints",
            json!({"url": rx.url("/"), "payload": "thin"}),
        )
        .await;
    assert_eq!(thin.status, 201, "{}", thin.body);
    assert_eq!(
        api.get("/v1/endpoints").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Bad settings change nothing.
    for (body, field) in [
        (json!({"maxPayload": "half"}), "maxPayload"),
        (json!({"maxPayload": null}), "maxPayload"),
        (json!({"payload": "thin"}), "payload"),
    ] {
        let r = api.patch("/v1/settings", body).await;
        assert_error(&r, 422, "validation_error", Some(field));
    }
    assert_eq!(api.get("/v1/settings").await.body["maxPayload"], "thin");
    // Only a key with every scope changes settings; another tenant has its own.
    let writer = server.scoped(&["endpoints:write"]).await;
    let r = writer
        .patch("/v1/settings", json!({"maxPayload": "full"}))
        .await;
    assert_error(&r, 403, "forbidden", None);
    let stranger = server.new_tenant("stranger").await;
    assert_eq!(
        stranger.get("/v1/settings").await.body["maxPayload"],
        "full"
    );
    let r = stranger
        .post("/v1/endpoints", json!({"url": rx.url("/")}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Full payloads allowed again.
    let r = api
        .patch("/v1/settings", json!({"maxPayload": "full"}))
        .await;
    assert_eq!(r.status, 200);
    let r = api
        .patch(&format!("/v1/endpoints/{full}"), json!({"payload": "full"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}
