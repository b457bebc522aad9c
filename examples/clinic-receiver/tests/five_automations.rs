//! The example receiver, run as its binary, fed real deliveries by a real
//! server: each of the five example automations does its part, a forged
//! request is refused, and a redelivery is not acted on twice.

use std::process::Stdio;
use std::time::Duration;

use eventflow_testkit::TestServer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

async fn next_action(rx: &mut mpsc::UnboundedReceiver<Value>, action: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(v)) if v["action"] == action => return v,
            Ok(Some(_)) => continue,
            _ => panic!("no {action} action within 20 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_five_automations_run_on_the_receiving_side() {
    let server = TestServer::spawn().await;
    let api = server.api();
    let port = eventflow_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}/webhooks");
    let ep = api.post("/v1/endpoints", json!({"url": url})).await;
    assert_eq!(ep.status, 201);
    let secret = ep.body["secret"].as_str().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_clinic-receiver"))
        .env("WEBHOOK_SECRET", &secret)
        .env("EVENTFLOW_API_URL", &server.base)
        .env("EVENTFLOW_API_KEY", &server.key)
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), stderr.next_line()).await;
    assert!(
        format!("{ready:?}").contains("receiving webhooks"),
        "{ready:?}"
    );
    let (tx, mut actions) = mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap_or(Value::Null));
        }
    });

    // 4. Onboarding.
    let patient = api
        .create("patients", json!({"firstName": "Ada", "lastName": "Lovelace", "phone": "+15551234567", "email": "ada@example.com"}))
        .await;
    assert_eq!(
        next_action(&mut actions, "email").await["to"],
        "ada@example.com"
    );
    let intake = next_action(&mut actions, "intake_created").await;
    assert!(
        intake["intakeId"].as_str().unwrap().starts_with("int"),
        "{intake}"
    );
    next_action(&mut actions, "schedule_task").await;

    // 1. Confirmation and reminder.
    let start = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(72)).to_string();
    api.create(
        "appointments",
        json!({"patientId": patient, "start": start, "end": start}),
    )
    .await;
    let sms = next_action(&mut actions, "sms").await;
    assert_eq!(sms["to"], "+15551234567");
    assert!(sms["body"].as_str().unwrap().contains("confirmed"));
    next_action(&mut actions, "schedule_reminder").await;

    // 3. Care team on a critical result.
    let doctor = api
        .create(
            "practitioners",
            json!({"firstName": "Grace", "lastName": "Hopper", "email": "grace@example.com"}),
        )
        .await;
    api.create(
        "observations",
        json!({"patientId": patient, "practitionerId": doctor, "code": "glucose", "value": 480, "unit": "mg/dL", "flag": "critical"}),
    )
    .await;
    assert!(
        next_action(&mut actions, "slack").await["text"]
            .as_str()
            .unwrap()
            .contains("critical")
    );
    assert_eq!(
        next_action(&mut actions, "email").await["to"],
        "grace@example.com"
    );

    // 2. Billing on the transition to finished.
    let enc = api
        .create("encounters", json!({"patientId": patient, "serviceCodes": [{"code": "99213"}], "diagnoses": [{"code": "E11.9"}]}))
        .await;
    api.patch(
        &format!("/v1/encounters/{enc}"),
        json!({"status": "finished"}),
    )
    .await;
    let claim = next_action(&mut actions, "claim").await;
    assert_eq!(claim["encounterId"], enc.as_str());
    assert_eq!(claim["observations"], 0);

    // 5. Pharmacy.
    api.create(
        "prescriptions",
        json!({"patientId": patient, "medication": "metformin 500 mg", "dosage": "twice daily"}),
    )
    .await;
    assert_eq!(
        next_action(&mut actions, "pharmacy").await["medication"],
        "metformin 500 mg"
    );
    assert!(
        next_action(&mut actions, "sms").await["body"]
            .as_str()
            .unwrap()
            .contains("metformin")
    );

    // A redelivery (the same webhook-id) is acknowledged, not acted on again:
    // the next pharmacy action is the next prescription's.
    let ep_id = ep.body["id"].as_str().unwrap().to_string();
    let list = api
        .get(&format!("/v1/endpoints/{ep_id}/deliveries?limit=1"))
        .await
        .body;
    let last = list["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(list["data"][0]["eventType"], "prescription.created");
    assert_eq!(
        api.post(&format!("/v1/deliveries/{last}/retry"), json!({}))
            .await
            .status,
        202
    );
    eventflow_testkit::wait_for(Duration::from_secs(20), "the redelivery", || {
        let api = api.clone();
        let last = last.clone();
        async move {
            let d = api.get(&format!("/v1/deliveries/{last}")).await.body;
            (d["attempts"].as_array().map(Vec::len) == Some(2) && d["status"] == "succeeded")
                .then_some(())
        }
    })
    .await;
    api.create(
        "prescriptions",
        json!({"patientId": patient, "medication": "lisinopril 10 mg"}),
    )
    .await;
    assert_eq!(
        next_action(&mut actions, "pharmacy").await["medication"],
        "lisinopril 10 mg"
    );

    // A forged request is refused before any handler runs.
    let forged = eventflow_testkit::http_client()
        .post(&url)
        .header("webhook-id", "evt_forged")
        .header(
            "webhook-timestamp",
            jiff::Timestamp::now().as_second().to_string(),
        )
        .header("webhook-signature", "v1,AAAA")
        .body(r#"{"id":"evt_forged","type":"patient.created"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    child.kill().await.unwrap();
}
