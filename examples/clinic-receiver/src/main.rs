//! A clinic's webhook receiver, built on the `eventflow-webhook` SDK: the five
//! example automations of `examples/workflows/`, on the receiving side.
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_… EVENTFLOW_API_KEY=efk_… cargo run -p eventflow-example-receiver
//! # then, in another terminal, with no public address needed:
//! eventflow listen --forward-to http://127.0.0.1:3000/webhooks
//! eventflow trigger appointment.created
//! ```
//!
//! Every delivery is verified (the extractor answers 401 to a forged one) and
//! deduplicated on its `webhook-id`. Each side effect — an SMS, an email, a
//! Slack post, a claim, a pharmacy order, a scheduled reminder — is printed
//! as one JSON line on standard output: plug in your Twilio, SMTP or billing
//! client where it says `act(…)`. Records are read and written over the
//! Event Flow API (`EVENTFLOW_API_URL`, `EVENTFLOW_API_KEY`).
//!
//! The same five automations also ship as built-in workflows; this example
//! is for clinics that want them in their own code.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRef, State};
use axum::routing::post;
use eventflow_webhook::extract::VerifiedEvent;
use eventflow_webhook::typed::{
    Appointment, EventKind, Observation, Patient, Prescription, WebhookEvent,
};
use eventflow_webhook::{HmacSecret, Verifier};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

#[derive(Clone)]
struct App {
    verifier: Verifier,
    api: String,
    key: String,
    http: reqwest::Client,
    seen: Arc<Mutex<HashSet<String>>>,
}

impl FromRef<App> for Verifier {
    fn from_ref(app: &App) -> Verifier {
        app.verifier.clone()
    }
}

/// A side effect: here, one JSON line on standard output.
fn act(action: &str, details: Value) {
    let mut line = json!({ "action": action });
    if let (Some(l), Value::Object(d)) = (line.as_object_mut(), details) {
        l.extend(d);
    }
    println!("{line}");
}

fn required(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => {
            eprintln!("error: set {name}");
            std::process::exit(2);
        }
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secret = match HmacSecret::parse(&required("WEBHOOK_SECRET")) {
        Ok(s) => s,
        Err(_) => {
            eprintln!("error: WEBHOOK_SECRET must be a whsec_ secret");
            std::process::exit(2);
        }
    };
    let app = App {
        verifier: Verifier::new().with_secret(secret),
        api: std::env::var("EVENTFLOW_API_URL").unwrap_or_else(|_| "http://127.0.0.1:7700".into()),
        key: required("EVENTFLOW_API_KEY"),
        http: reqwest::Client::new(),
        seen: Arc::default(),
    };
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let router = Router::new()
        .route("/webhooks", post(webhook))
        .with_state(app);
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("receiving webhooks on http://{listen}/webhooks");
    let _ = axum::serve(listener, router).await;
}

/// Verifies, then routes by type and topic. Answers at once; a
/// retried delivery (the same `webhook-id`) is acknowledged and skipped.
async fn webhook(State(app): State<App>, VerifiedEvent(event): VerifiedEvent) -> axum::Json<Value> {
    let first = app
        .seen
        .lock()
        .map(|mut s| s.insert(event.id.clone()))
        .unwrap_or(true);
    if first {
        handle(&app, &event).await;
    }
    axum::Json(json!({"received": true}))
}

async fn handle(app: &App, event: &WebhookEvent) {
    match &event.kind {
        EventKind::AppointmentCreated(Some(appt)) => appointment_booked(appt),
        EventKind::EncounterUpdated(Some(enc)) if event.has_topic("encounter.finished") => {
            encounter_finished(app, &enc.id).await
        }
        EventKind::ObservationCreated(Some(obs)) | EventKind::ObservationUpdated(Some(obs))
            if event.has_topic("observation.abnormal") =>
        {
            observation_abnormal(obs)
        }
        EventKind::PatientCreated(Some(patient)) => patient_onboarding(app, patient).await,
        EventKind::PrescriptionCreated(Some(rx)) => prescription_written(rx),
        _ => {}
    }
}

/// 1. SMS confirmation, and a reminder 24 hours before.
fn appointment_booked(appt: &Appointment) {
    let Some(phone) = &appt.patient_phone else {
        return;
    };
    let start = appt.start.clone().unwrap_or_default();
    act(
        "sms",
        json!({"to": phone, "body": format!("Your appointment is confirmed for {start}. Reply C to cancel or R to reschedule.")}),
    );
    if let Ok(at) = start.parse::<Timestamp>() {
        let send_at = at - SignedDuration::from_hours(24);
        if send_at > Timestamp::now() {
            act(
                "schedule_reminder",
                json!({"appointmentId": appt.id, "to": phone, "sendAt": send_at.to_string(),
                       "body": format!("Reminder: you have an appointment tomorrow at {start}.")}),
            );
        }
    }
}

/// 2. Billing: the encounter with its observations and prescriptions.
async fn encounter_finished(app: &App, id: &str) {
    let url = format!(
        "{}/v1/encounters/{id}?include=observations,prescriptions",
        app.api
    );
    let Ok(resp) = app.http.get(url).bearer_auth(&app.key).send().await else {
        return;
    };
    let Ok(enc) = resp.json::<Value>().await else {
        return;
    };
    act(
        "claim",
        json!({
            "encounterId": id,
            "patientId": enc["patientId"],
            "codes": enc["serviceCodes"],
            "diagnoses": enc["diagnoses"],
            "observations": enc["included"]["observations"].as_array().map(Vec::len).unwrap_or(0),
            "prescriptions": enc["included"]["prescriptions"].as_array().map(Vec::len).unwrap_or(0),
        }),
    );
}

/// 3. Care team: Slack and email on the topic `observation.abnormal`.
fn observation_abnormal(obs: &Observation) {
    let code = obs.code.clone().unwrap_or_default();
    let patient = obs.patient_id.clone().unwrap_or_default();
    act(
        "slack",
        json!({"channel": "#clinical-alerts", "text": format!("Abnormal result for patient {patient}: {code} = {} {} ({})",
            obs.value.clone().unwrap_or(Value::Null), obs.unit.clone().unwrap_or_default(), obs.flag.clone().unwrap_or_default())}),
    );
    if let Some(to) = &obs.provider_email {
        act(
            "email",
            json!({"to": to, "subject": format!("Abnormal Result: {code}")}),
        );
    }
}

/// 4. Onboarding: welcome email, an intake to fill in, a reminder in 48 h.
async fn patient_onboarding(app: &App, patient: &Patient) {
    if let Some(email) = &patient.email {
        act(
            "email",
            json!({"to": email, "subject": "Welcome to Our Practice"}),
        );
    }
    let created = app
        .http
        .post(format!("{}/v1/intakes", app.api))
        .bearer_auth(&app.key)
        .json(&json!({"patientId": patient.id, "form": "new-patient"}))
        .send()
        .await;
    let intake = match created {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string)),
        Err(_) => None,
    };
    act(
        "intake_created",
        json!({"patientId": patient.id, "intakeId": intake}),
    );
    let run_at = Timestamp::now() + SignedDuration::from_hours(48);
    act(
        "schedule_task",
        json!({"type": "intake-reminder", "patientId": patient.id, "runAt": run_at.to_string()}),
    );
}

/// 5. Pharmacy: submit the prescription, tell the patient.
fn prescription_written(rx: &Prescription) {
    act(
        "pharmacy",
        json!({"patientId": rx.patient_id, "medication": rx.medication, "dosage": rx.dosage, "prescriberId": rx.practitioner_id}),
    );
    if let Some(phone) = &rx.patient_phone {
        act(
            "sms",
            json!({"to": phone, "body": format!("Your prescription for {} has been sent to your pharmacy.", rx.medication.clone().unwrap_or_default())}),
        );
    }
}
