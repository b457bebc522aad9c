//! Automations (docs/design.md §4) end to end: the five example workflows of
//! `examples/workflows/`, against local servers that speak the real
//! protocols — a Twilio-shaped REST endpoint, an SMTP server (aiosmtpd), a
//! Slack-webhook receiver, a billing server — on an injected clock, so
//! "24 hours before" and "after 48 h" take milliseconds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use eventflow_server::config::{Billing, Config, Providers, Secret, Slack, Smtp, SmtpTls, Twilio};
use eventflow_store::ManualClock;
use eventflow_testkit::{
    Answer, Api, Backend, Options, Receiver, SmtpMode, SmtpSink, TestServer, backend_tests, python,
    python_has, self_signed_cert, skipped, wait_for,
};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

backend_tests!(
    a_booked_appointment_gets_a_confirmation_and_a_reminder_24_hours_before,
    a_rescheduled_appointment_moves_its_reminder_and_a_cancelled_one_drops_it,
    no_reminder_for_a_start_less_than_24_hours_away,
    the_billing_claim_goes_out_once_on_the_transition_to_finished,
    an_abnormal_observation_alerts_the_care_team_on_slack_and_by_email,
    onboarding_sends_a_welcome_creates_an_intake_and_reminds_after_48_hours,
    a_new_prescription_alerts_the_pharmacy_signed_and_texts_the_patient,
    sms_goes_through_twilios_rest_api_and_its_status_is_recorded,
    a_failing_step_is_retried_with_backoff_and_a_permanent_failure_fails_the_run,
    bad_input_at_run_time_is_a_clear_error_in_the_run_record,
    workflows_are_created_replaced_and_deleted_through_the_api,
    workflows_list_each_file_with_its_load_status,
    a_timer_fires_once_after_a_restart_with_the_timer_overdue,
    inbound_sms_c_cancels_the_next_appointment_and_r_answers,
    email_goes_over_smtp_with_starttls_and_tls,
    the_claim_validates_against_fhir_r4,
    retention_purges_finished_runs_and_old_outbox_entries_but_keeps_timers,
    create_and_update_steps_change_records_with_their_own_events,
    a_workflow_does_not_run_on_the_events_its_own_steps_wrote,
    concurrent_writes_of_a_workflow_each_land_whole,
    a_workflow_of_yaml_aliases_is_refused_and_the_server_keeps_answering,
    a_template_past_its_fuel_or_output_bound_fails_its_step,
    runs_start_only_when_a_slot_is_free_and_the_others_wait_unleased,
    http_steps_go_through_the_outbound_guard,
    in_production_an_http_step_to_a_plain_http_url_is_refused_at_save,
    two_workflows_that_update_each_other_stop_at_the_chain_depth,
    workflows_that_update_each_other_through_timers_stop_at_the_chain_depth_too,
    a_tenants_own_workflow_uses_a_provider_only_when_the_operator_lists_it,
    a_listed_tenant_sends_up_to_its_daily_quota_and_again_after_midnight_utc,
    a_condition_that_cannot_fit_the_configured_cel_budget_is_refused_at_load_and_save,
    a_condition_over_budget_on_a_large_record_starts_no_run_and_the_workflow_says_why,
);

const LONG: Duration = Duration::from_secs(20);

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows")
}

/// 2026-12-01T09:00:00Z, a Tuesday.
fn t0() -> Timestamp {
    "2026-12-01T09:00:00Z".parse().unwrap()
}

fn at(ts: Timestamp) -> String {
    eventflow_model::time::format(ts)
}

/// A server on a manual clock at [`t0`] with the configuration changed by `f`.
async fn spawn(
    backend: &Backend,
    f: impl FnOnce(&mut Config) + Send + 'static,
) -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let server = backend
        .spawn_with(Options {
            clock: Some(clock.clone()),
            configure: Some(Box::new(f)),
        })
        .await;
    (server, clock)
}

/// The examples, no provider configured (the outbox).
async fn spawn_examples(backend: &Backend) -> (TestServer, Arc<ManualClock>) {
    spawn(backend, |c| c.workflows_dir = examples()).await
}

async fn list(api: &Api, path: &str) -> Vec<Value> {
    let r = api.get(path).await;
    assert_eq!(r.status, 200, "{path}: {:?}", r.body);
    r.body["data"].as_array().cloned().unwrap_or_default()
}

/// Waits until the workflow has `n` runs that ended (succeeded or failed).
async fn finished_runs(api: &Api, workflow: &str, n: usize) -> Vec<Value> {
    wait_for(
        LONG,
        &format!("{n} finished runs of {workflow}"),
        || async {
            let runs = list(api, &format!("/v1/workflow-runs?workflow={workflow}")).await;
            let done: Vec<Value> = runs
                .into_iter()
                .filter(|r| r["status"] != "pending")
                .collect();
            (done.len() >= n).then_some(done)
        },
    )
    .await
}

async fn outbox(api: &Api, n: usize) -> Vec<Value> {
    wait_for(LONG, &format!("{n} notifications"), || async {
        let mut l = list(api, "/v1/notifications").await;
        l.reverse(); // oldest first
        (l.len() >= n).then_some(l)
    })
    .await
}

async fn timers(api: &Api) -> Vec<Value> {
    list(api, "/v1/timers").await
}

async fn patient(api: &Api, extra: Value) -> String {
    let mut body = json!({"firstName": "Ada", "lastName": "Lovelace", "phone": "+15551230001"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    api.create("patients", body).await
}

async fn appointment(api: &Api, patient_id: &str, start: Timestamp) -> String {
    api.create(
        "appointments",
        json!({"patientId": patient_id, "start": at(start), "status": "booked"}),
    )
    .await
}

async fn a_booked_appointment_gets_a_confirmation_and_a_reminder_24_hours_before(backend: Backend) {
    let (server, clock) = spawn_examples(&backend).await;
    let api = server.api();
    let p = patient(&api, json!({})).await;
    let start = t0() + SignedDuration::from_hours(72);
    let a = appointment(&api, &p, start).await;

    let runs = finished_runs(&api, "appointment-reminders", 1).await;
    let run = &runs[0];
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["id"].as_str().unwrap().starts_with("run_"));
    assert_eq!(run["steps"][0]["type"], "sms");
    assert_eq!(run["steps"][0]["status"], "succeeded");
    assert_eq!(run["steps"][1]["type"], "schedule");
    let sent = outbox(&api, 1).await;
    assert_eq!(sent[0]["channel"], "sms");
    assert_eq!(sent[0]["to"], "+15551230001");
    assert_eq!(sent[0]["workflow"], "appointment-reminders");
    assert_eq!(sent[0]["provider"], "outbox");
    assert!(
        sent[0]["body"]
            .as_str()
            .unwrap()
            .contains("confirmed for Fri 4 Dec 2026, 09:00 UTC"),
        "{}",
        sent[0]["body"]
    );
    let key = format!("reminder:{a}");
    let pending = list(&api, &format!("/v1/timers?key={key}")).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(
        pending[0]["fireAt"],
        at(start - SignedDuration::from_hours(24))
    );
    assert_eq!(pending[0]["workflow"], "appointment-reminders");

    // A second before: nothing.
    clock.set(start - SignedDuration::from_hours(24) - SignedDuration::from_secs(1));
    server.automations_settled().await;
    assert_eq!(list(&api, "/v1/notifications").await.len(), 1);
    // Due: the reminder goes, once, at its time. The clock stays there: the
    // engine wakes for the time itself, not for a later move of the clock.
    clock.set(start - SignedDuration::from_hours(24));
    let sent = outbox(&api, 2).await;
    assert_eq!(
        sent[1]["createdAt"],
        at(start - SignedDuration::from_hours(24)),
        "sent at the due time: {}",
        sent[1]
    );
    assert!(
        sent[1]["body"]
            .as_str()
            .unwrap()
            .starts_with("Reminder: you have an appointment tomorrow at 09:00"),
        "{}",
        sent[1]["body"]
    );
    assert!(timers(&api).await.is_empty());
    let runs = finished_runs(&api, "appointment-reminders", 2).await;
    let timer_run = runs.iter().find(|r| r["trigger"] == "timer").unwrap();
    assert_eq!(timer_run["timerKey"], key.as_str());
    assert_eq!(timer_run["steps"][0]["name"], "2.1");
    clock.advance(SignedDuration::from_hours(1));
    server.automations_settled().await;
    assert_eq!(list(&api, "/v1/notifications").await.len(), 2, "fires once");
}

async fn a_rescheduled_appointment_moves_its_reminder_and_a_cancelled_one_drops_it(
    backend: Backend,
) {
    let (server, clock) = spawn_examples(&backend).await;
    let api = server.api();
    let p = patient(&api, json!({})).await;
    let a = appointment(&api, &p, t0() + SignedDuration::from_hours(72)).await;
    let b = appointment(&api, &p, t0() + SignedDuration::from_hours(96)).await;
    let c = appointment(&api, &p, t0() + SignedDuration::from_hours(120)).await;
    finished_runs(&api, "appointment-reminders", 3).await;
    assert_eq!(timers(&api).await.len(), 3);

    // Rescheduled: the same key, a new time.
    let later = t0() + SignedDuration::from_hours(200);
    let r = api
        .patch(
            &format!("/v1/appointments/{a}"),
            json!({"start": at(later)}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    finished_runs(&api, "appointment-changes", 1).await;
    let moved = list(&api, &format!("/v1/timers?key=reminder:{a}")).await;
    assert_eq!(
        moved[0]["fireAt"],
        at(later - SignedDuration::from_hours(24))
    );
    // Cancelled and deleted: dropped.
    api.patch(
        &format!("/v1/appointments/{b}"),
        json!({"status": "cancelled"}),
    )
    .await;
    assert_eq!(
        api.delete(&format!("/v1/appointments/{c}")).await.status,
        204
    );
    finished_runs(&api, "appointment-cancelled", 2).await;
    let left: Vec<String> = timers(&api)
        .await
        .iter()
        .map(|t| t["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, [format!("reminder:{a}")]);
    // Nothing fires at the old time; the moved one fires at the new.
    clock.set(t0() + SignedDuration::from_hours(100));
    server.automations_settled().await;
    assert_eq!(
        list(&api, "/v1/notifications").await.len(),
        3,
        "confirmations only"
    );
    clock.set(later - SignedDuration::from_hours(24));
    let sent = outbox(&api, 4).await;
    assert!(sent[3]["body"].as_str().unwrap().starts_with("Reminder"));
}

async fn no_reminder_for_a_start_less_than_24_hours_away(backend: Backend) {
    let (server, clock) = spawn_examples(&backend).await;
    let api = server.api();
    let p = patient(&api, json!({})).await;
    appointment(&api, &p, t0() + SignedDuration::from_hours(5)).await;
    let runs = finished_runs(&api, "appointment-reminders", 1).await;
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["steps"][1]["status"], "skipped", "{}", runs[0]);
    assert!(
        runs[0]["steps"][1]["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("has passed")
    );
    assert!(timers(&api).await.is_empty());
    // A booked appointment moved to less than 24 h away loses its reminder.
    let a = appointment(&api, &p, t0() + SignedDuration::from_hours(50)).await;
    finished_runs(&api, "appointment-reminders", 2).await;
    assert_eq!(timers(&api).await.len(), 1);
    api.patch(
        &format!("/v1/appointments/{a}"),
        json!({"start": at(t0() + SignedDuration::from_hours(10))}),
    )
    .await;
    finished_runs(&api, "appointment-changes", 1).await;
    assert!(timers(&api).await.is_empty());
    clock.advance(SignedDuration::from_hours(60));
    server.automations_settled().await;
    assert_eq!(
        list(&api, "/v1/notifications").await.len(),
        2,
        "two confirmations, no reminder"
    );
}

/// An encounter with service codes and diagnoses, an observation and a
/// prescription on it.
async fn encounter_with_records(api: &Api) -> (String, String) {
    let p = patient(api, json!({})).await;
    let dr = api
        .create(
            "practitioners",
            json!({"firstName": "Gregory", "lastName": "House", "email": "house@example.com"}),
        )
        .await;
    let e = api
        .create(
            "encounters",
            json!({
                "patientId": p, "practitionerId": dr, "status": "in-progress",
                "date": "2026-12-01T08:00:00Z",
                "serviceCodes": [{"system": "CPT", "code": "99213", "display": "Office visit"}],
                "diagnoses": [{"system": "ICD-10", "code": "E11.9", "display": "Type 2 diabetes"}],
            }),
        )
        .await;
    api.create(
        "observations",
        json!({"patientId": p, "encounterId": e, "code": "4548-4", "display": "HbA1c", "value": 7.1, "unit": "%"}),
    )
    .await;
    api.create(
        "prescriptions",
        json!({"patientId": p, "encounterId": e, "practitionerId": dr, "medication": "Metformin 500 mg"}),
    )
    .await;
    (e, p)
}

async fn the_billing_claim_goes_out_once_on_the_transition_to_finished(backend: Backend) {
    let billing = Receiver::start().await;
    let url = billing.url("/claims/clinic-7?token=operators-s3cret");
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = examples();
        c.billing = Some(Billing {
            claim_url: url,
            tenants: Vec::new(),
            daily_quota: None,
        });
    })
    .await;
    let api = server.api();
    let (e, p) = encounter_with_records(&api).await;
    // Not finished yet: nothing.
    api.patch(&format!("/v1/encounters/{e}"), json!({"type": "follow-up"}))
        .await;
    api.patch(
        &format!("/v1/encounters/{e}"),
        json!({"status": "finished"}),
    )
    .await;
    let got = billing.wait_for(1, LONG).await;
    assert_eq!(got[0].header("content-type"), Some("application/fhir+json"));
    let claim = got[0].json();
    assert_eq!(claim["resourceType"], "Claim");
    assert_eq!(claim["patient"]["reference"], format!("Patient/{p}"));
    assert_eq!(
        claim["item"][0]["productOrService"]["coding"][0]["code"],
        "99213"
    );
    assert_eq!(
        claim["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0]["code"],
        "E11.9"
    );
    assert_eq!(claim["supportingInfo"].as_array().unwrap().len(), 2);
    assert!(
        claim["provider"]["reference"]
            .as_str()
            .unwrap()
            .starts_with("Practitioner/")
    );
    // Still finished, another change: no second claim.
    api.patch(
        &format!("/v1/encounters/{e}"),
        json!({"end": "2026-12-01T09:30:00Z"}),
    )
    .await;
    let runs = finished_runs(&api, "billing-claim", 1).await;
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["steps"][0]["detail"]["statusCode"], 200);
    server.automations_settled().await;
    assert_eq!(billing.count(), 1);
    // The tenant's outbox names the billing server, never the operator's
    // path or token.
    let sent = outbox(&api, 1).await;
    let claim = sent.iter().find(|n| n["channel"] == "claim").unwrap();
    assert_eq!(claim["to"], billing.url(""));
    let everything = format!("{sent:?}{runs:?}");
    assert!(!everything.contains("operators-s3cret"), "{everything}");
    assert!(!everything.contains("clinic-7"), "{everything}");
    let n = outbox(&api, 1).await;
    let claims: Vec<&Value> = n.iter().filter(|n| n["channel"] == "claim").collect();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["provider"], "billing");
}

async fn an_abnormal_observation_alerts_the_care_team_on_slack_and_by_email(backend: Backend) {
    let Some(smtp) = SmtpSink::start(SmtpMode::None, None).await else {
        return skipped(
            "an_abnormal_observation_alerts_the_care_team_on_slack_and_by_email",
            "python3 with PyPI aiosmtpd is not installed",
        );
    };
    let slack = Receiver::start().await;
    let slack_url = slack.url("/services/T000/B000/XXXX");
    let port = smtp.port;
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = examples();
        c.providers = Providers {
            slack: Some(Slack {
                webhook_url: Secret::new(slack_url),
                tenants: Vec::new(),
                daily_quota: None,
            }),
            smtp: Some(Smtp {
                host: "127.0.0.1".into(),
                port,
                username: String::new(),
                password: Secret::default(),
                from: "Clinic <clinic@example.com>".into(),
                tls: SmtpTls::None,
                ca_file: None,
                tenants: Vec::new(),
                daily_quota: None,
            }),
            twilio: None,
        };
        c.vars
            .insert("care_team_email".into(), "care-team@example.com".into());
    })
    .await;
    let api = server.api();
    let p = patient(&api, json!({})).await;
    // Normal: nothing.
    let normal = api
        .create(
            "observations",
            json!({"patientId": p, "code": "2345-7", "value": 90, "referenceRange": {"low": 70, "high": 110}}),
        )
        .await;
    // High, with the practitioner's email: Slack and email.
    api.create(
        "observations",
        json!({"patientId": p, "code": "2345-7", "value": 250, "unit": "mg/dL",
               "referenceRange": {"low": 70, "high": 110}, "providerEmail": "house@example.com"}),
    )
    .await;
    // Critical, no provider email: the care team's.
    api.create(
        "observations",
        json!({"patientId": p, "code": "2823-3", "value": 7.2, "flag": "critical"}),
    )
    .await;
    // A correction that makes the normal one low: its flag became abnormal.
    let r = api
        .patch(
            &format!("/v1/observations/{normal}"),
            json!({"flag": "low"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let posted = slack.wait_for(3, LONG).await;
    // The two runs go in parallel: either message may come first.
    let texts: Vec<String> = posted
        .iter()
        .map(|p| p.json()["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("2345-7 = 250 mg/dL (high)")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("2823-3 = 7.2")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.ends_with("(low)")), "{texts:?}");
    let mails = smtp.wait_for(3, LONG).await;
    let mut to: Vec<String> = mails
        .iter()
        .map(|m| m["to"][0].as_str().unwrap().to_string())
        .collect();
    to.sort();
    assert_eq!(
        to,
        [
            "care-team@example.com",
            "care-team@example.com",
            "house@example.com"
        ]
    );
    assert!(
        mails[0]["data"]
            .as_str()
            .unwrap()
            .contains("Subject: Abnormal Result:")
    );
    assert_eq!(mails[0]["from"], "clinic@example.com");
    let runs = finished_runs(&api, "care-team-alert", 3).await;
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    server.automations_settled().await;
    assert_eq!(slack.count(), 3, "the normal result alerted no one");
    let sent = outbox(&api, 6).await;
    let email = sent.iter().find(|n| n["channel"] == "email").unwrap();
    assert_eq!(email["provider"], "smtp");
    assert!(
        email["providerStatus"].as_str().unwrap().starts_with("250"),
        "{email}"
    );
}

async fn onboarding_sends_a_welcome_creates_an_intake_and_reminds_after_48_hours(backend: Backend) {
    let (server, clock) = spawn_examples(&backend).await;
    let api = server.api();
    let forgetful = patient(&api, json!({"email": "ada@example.com"})).await;
    let diligent = patient(
        &api,
        json!({"email": "grace@example.com", "firstName": "Grace"}),
    )
    .await;
    let runs = finished_runs(&api, "patient-onboarding", 2).await;
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    let welcome = outbox(&api, 2).await;
    assert!(
        welcome
            .iter()
            .all(|n| n["subject"] == "Welcome to Our Practice")
    );
    // The intake was created by the workflow, with its own event.
    let intakes = list(&api, &format!("/v1/intakes?patientId={diligent}")).await;
    assert_eq!(intakes.len(), 1, "{intakes:?}");
    let intake = intakes[0]["id"].as_str().unwrap().to_string();
    let events = list(&api, "/v1/events?types=intake.created").await;
    assert_eq!(events.len(), 2);
    assert_eq!(timers(&api).await.len(), 2);
    // One completes the intake: the reminder is cancelled.
    api.patch(
        &format!("/v1/intakes/{intake}"),
        json!({"status": "completed"}),
    )
    .await;
    finished_runs(&api, "intake-completed", 1).await;
    let left = timers(&api).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["key"], format!("intake-reminder:{forgetful}"));
    // 48 hours on: only the other is reminded.
    clock.advance(SignedDuration::from_hours(48));
    let sent = outbox(&api, 3).await;
    assert_eq!(sent[2]["to"], "ada@example.com");
    assert_eq!(sent[2]["subject"], "Your intake form is waiting");
    server.automations_settled().await;
    assert_eq!(list(&api, "/v1/notifications").await.len(), 3);
}

fn twilio_config(base_url: String) -> Twilio {
    Twilio {
        account_sid: "AC0123456789abcdef".into(),
        auth_token: Secret::new("twilio-auth-token"),
        from: "+15550000000".into(),
        base_url,
        tenants: Vec::new(),
        daily_quota: None,
    }
}

fn twilio_ok(sid: &str) -> Answer {
    Answer::Body(201, json!({"sid": sid, "status": "queued"}).to_string())
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn a_new_prescription_alerts_the_pharmacy_signed_and_texts_the_patient(backend: Backend) {
    let pharmacy = Receiver::start().await;
    let twilio = Receiver::start().await;
    twilio.answer(twilio_ok("SM0001"));
    let secret = eventflow_webhook::HmacSecret::generate();
    let (pharmacy_url, twilio_url, exposed) = (
        pharmacy.url("/api/prescriptions"),
        twilio.url(""),
        secret.expose(),
    );
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = examples();
        c.providers.twilio = Some(twilio_config(twilio_url));
        c.vars.insert("pharmacy_url".into(), pharmacy_url);
        c.vars.insert("pharmacy_signing_secret".into(), exposed);
    })
    .await;
    let api = server.api();
    let p = patient(&api, json!({})).await;
    api.create(
        "prescriptions",
        json!({"patientId": p, "medication": "Amoxicillin 500 mg", "dosage": "1 tablet 3x daily"}),
    )
    .await;
    let got = pharmacy.wait_for(1, LONG).await;
    let body = got[0].json();
    assert_eq!(body["patientId"], p.as_str());
    assert_eq!(body["medication"], "Amoxicillin 500 mg");
    assert_eq!(body["dosage"], "1 tablet 3x daily");
    let headers: Vec<(String, String)> = got[0].headers.clone();
    let verified = eventflow_webhook::Verifier::new()
        .with_secret(secret)
        .verify(&headers, &got[0].body, t0().as_second());
    assert!(verified.is_ok(), "{verified:?}");
    assert!(
        got[0]
            .header("idempotency-key")
            .unwrap()
            .starts_with("run_")
    );
    let sms = twilio.wait_for(1, LONG).await;
    let f = form(&sms[0].body);
    assert!(f.contains(&("To".into(), "+15551230001".into())), "{f:?}");
    assert!(f.iter().any(
        |(k, v)| k == "Body" && v.contains("Amoxicillin 500 mg has been sent to your pharmacy")
    ));
    let runs = finished_runs(&api, "pharmacy-alert", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
}

async fn sms_goes_through_twilios_rest_api_and_its_status_is_recorded(backend: Backend) {
    let twilio = Receiver::start().await;
    twilio.answer(twilio_ok("SM9f2c"));
    let base = twilio.url("");
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = examples();
        c.providers.twilio = Some(twilio_config(base));
    })
    .await;
    let api = server.api();
    let p = patient(&api, json!({})).await;
    appointment(&api, &p, t0() + SignedDuration::from_hours(72)).await;
    let got = twilio.wait_for(1, LONG).await;
    assert_eq!(got[0].method, "POST");
    assert_eq!(
        got[0].path,
        "/2010-04-01/Accounts/AC0123456789abcdef/Messages.json"
    );
    assert_eq!(
        got[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    use base64::Engine as _;
    let basic =
        base64::engine::general_purpose::STANDARD.encode("AC0123456789abcdef:twilio-auth-token");
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    let f = form(&got[0].body);
    assert!(f.contains(&("From".into(), "+15550000000".into())), "{f:?}");
    assert!(f.contains(&("To".into(), "+15551230001".into())));
    let sent = outbox(&api, 1).await;
    assert_eq!(sent[0]["provider"], "twilio");
    assert_eq!(sent[0]["providerId"], "SM9f2c");
    assert_eq!(sent[0]["providerStatus"], "queued");
    let runs = finished_runs(&api, "appointment-reminders", 1).await;
    assert_eq!(runs[0]["steps"][0]["detail"]["providerId"], "SM9f2c");
}

async fn a_failing_step_is_retried_with_backoff_and_a_permanent_failure_fails_the_run(
    backend: Backend,
) {
    let twilio = Receiver::start().await;
    twilio.script([
        Answer::Status(500),
        Answer::RetryAfter(429, "20".into()),
        twilio_ok("SM1"),
    ]);
    let base = twilio.url("");
    let (server, clock) = spawn(&backend, move |c| {
        c.workflows_dir = examples();
        c.providers.twilio = Some(twilio_config(base));
    })
    .await;
    let api = server.api();
    let p = patient(&api, json!({})).await;
    appointment(&api, &p, t0() + SignedDuration::from_hours(72)).await;
    twilio.wait_for(1, LONG).await;
    let run = wait_for(LONG, "a retrying step", || async {
        let runs = list(
            &api,
            "/v1/workflow-runs?workflow=appointment-reminders&status=pending",
        )
        .await;
        runs.into_iter()
            .find(|r| r["steps"][0]["status"] == "retrying")
    })
    .await;
    assert!(
        run["steps"][0]["error"].as_str().unwrap().contains("500"),
        "{run}"
    );
    let next: Timestamp = run["nextAttemptAt"].as_str().unwrap().parse().unwrap();
    let wait = next.duration_since(t0());
    assert!(
        wait >= SignedDuration::from_secs(4) && wait <= SignedDuration::from_secs(6),
        "{wait:?}"
    );
    // Not before it is due.
    server.automations_settled().await;
    assert_eq!(twilio.count(), 1);
    clock.set(next);
    twilio.wait_for(2, LONG).await;
    // 429 with Retry-After: 20 s: the wait is at least that.
    let run = wait_for(LONG, "the second failure", || async {
        let r = api
            .get(&format!(
                "/v1/workflow-runs/{}",
                run["id"].as_str().unwrap()
            ))
            .await;
        (r.body["steps"][0]["attempts"] == 2).then_some(r.body)
    })
    .await;
    let next2: Timestamp = run["nextAttemptAt"].as_str().unwrap().parse().unwrap();
    assert!(
        next2.duration_since(next) >= SignedDuration::from_secs(20),
        "{run}"
    );
    clock.set(next2);
    twilio.wait_for(3, LONG).await;
    let runs = finished_runs(&api, "appointment-reminders", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    assert_eq!(runs[0]["steps"][0]["attempts"], 3);
    assert_eq!(twilio.count(), 3, "each attempt once");

    // A 400 from Twilio (a bad number) is not retried: the run fails.
    twilio.answer(Answer::Body(
        400,
        json!({"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}).to_string(),
    ));
    appointment(&api, &p, t0() + SignedDuration::from_hours(96)).await;
    let failed = wait_for(LONG, "a failed run", || async {
        list(&api, "/v1/workflow-runs?status=failed")
            .await
            .into_iter()
            .next()
    })
    .await;
    let error = failed["steps"][0]["error"].as_str().unwrap();
    assert!(error.contains("21211"), "{error}");
    assert_eq!(
        failed["steps"].as_array().unwrap().len(),
        1,
        "later steps did not run"
    );
}

async fn bad_input_at_run_time_is_a_clear_error_in_the_run_record(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("needs-vars.yaml"),
        "name: needs-vars\non: patient.created\nsteps:\n  - sms: {to: '{{ data.phone }}', body: 'Call {{ vars.clinic_phone }}'}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad-record.yaml"),
        "name: bad-record\non: patient.created\nsteps:\n  - create: {type: observation, body: {patientId: '{{ data.id }}', code: x}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("broken.yaml"),
        "name: broken\non: patient.created\nsteps:\n  - fax: {to: x}\n",
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| c.workflows_dir = path).await;
    let api = server.api();
    let listed = list(&api, "/v1/workflows").await;
    let broken = listed.iter().find(|w| w["file"] == "broken.yaml").unwrap();
    assert_eq!(broken["status"], "error");
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("step 1: unknown step \"fax\""),
        "{broken}"
    );
    patient(&api, json!({})).await;
    let runs = finished_runs(&api, "needs-vars", 1).await;
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(
        runs[0]["steps"][0]["error"],
        "body: vars.clinic_phone is not defined"
    );
    let runs = finished_runs(&api, "bad-record", 1).await;
    assert_eq!(runs[0]["status"], "failed");
    let error = runs[0]["steps"][0]["error"].as_str().unwrap();
    assert!(error.contains("value"), "names the missing field: {error}");
    // The server is fine and the other workflows keep running.
    assert_eq!(api.get("/healthz").await.status, 200);
    patient(&api, json!({})).await;
    finished_runs(&api, "needs-vars", 2).await;
}

const GOOD: &str = "name: welcome-sms\non: patient.created\nsteps:\n  - sms: {to: '{{ data.phone }}', body: 'Welcome {{ data.firstName }}'}\n";

async fn workflows_are_created_replaced_and_deleted_through_the_api(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("server-wide.yaml"),
        "name: server-wide\non: patient.deleted\nsteps: [{cancel: {key: k}}]\n",
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = path;
        c.vars.insert(
            "pharmacy_signing_secret".into(),
            "whsec_operators-only".into(),
        );
    })
    .await;
    let api = server.api();
    let yaml = |body: &str| {
        api.request(reqwest::Method::POST, "/v1/workflows")
            .header("content-type", "application/yaml")
            .body(body.to_string())
    };
    // A broken one is refused with the step and the reason, and not saved.
    let r = api
        .send(yaml(
            &GOOD.replace("{{ data.firstName }}", "{{ data.firstName }"),
        ))
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("step 1 (sms): body:"),
        "{:?}",
        r.body
    );
    // The same error shape as every other route: the kind, and the place.
    assert_eq!(r.body["error"]["type"], "validation_error");
    assert_eq!(r.body["error"]["field"], "step 1 (sms)");
    assert_eq!(list(&api, "/v1/workflows").await.len(), 1);
    // Created: it runs.
    let r = api.send(yaml(GOOD)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["status"], "loaded");
    assert_eq!(r.body["scope"], "tenant");
    assert_eq!(api.send(yaml(GOOD)).await.status, 409);
    patient(&api, json!({})).await;
    let sent = outbox(&api, 1).await;
    assert_eq!(sent[0]["body"], "Welcome Ada");
    // Replaced.
    let r = api
        .send(
            api.request(reqwest::Method::PUT, "/v1/workflows/welcome-sms")
                .header("content-type", "application/yaml")
                .body(GOOD.replace("Welcome", "Hello")),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    patient(&api, json!({})).await;
    let sent = outbox(&api, 2).await;
    assert_eq!(sent[1]["body"], "Hello Ada");
    // Another tenant neither sees nor runs it.
    let other = server.new_tenant("other-clinic").await;
    let names: Vec<Value> = list(&other, "/v1/workflows")
        .await
        .iter()
        .map(|w| w["name"].clone())
        .collect();
    assert_eq!(names, [json!("server-wide")]);
    patient(&other, json!({})).await;
    server.automations_settled().await;
    assert!(list(&other, "/v1/notifications").await.is_empty());
    assert_eq!(other.delete("/v1/workflows/welcome-sms").await.status, 404);
    // The server's own workflow cannot be changed through a tenant's key.
    assert_eq!(api.delete("/v1/workflows/server-wide").await.status, 409);
    // The operator's [vars] (they may hold secrets) are not a tenant
    // workflow's to read.
    let peek = "name: peek\non: patient.created\nsteps:\n  - sms: {to: '{{ data.phone }}', body: \"v={{ vars.pharmacy_signing_secret | default('hidden') }}\"}\n";
    assert_eq!(api.send(yaml(peek)).await.status, 201);
    patient(&api, json!({})).await;
    let sent = outbox(&api, 4).await;
    assert!(sent.iter().any(|n| n["body"] == "v=hidden"), "{sent:?}");
    assert!(
        sent.iter()
            .all(|n| !n["body"].as_str().unwrap().contains("operators-only"))
    );
    assert_eq!(api.delete("/v1/workflows/peek").await.status, 204);
    // Deleted.
    assert_eq!(api.delete("/v1/workflows/welcome-sms").await.status, 204);
    assert_eq!(api.get("/v1/workflows/welcome-sms").await.status, 404);
    patient(&api, json!({})).await;
    server.automations_settled().await;
    assert_eq!(list(&api, "/v1/notifications").await.len(), 4);
}

/// `GET /v1/workflows`: each file of the workflows directory, loaded or
/// refused with its file, step and reason; one broken file does not stop the
/// others.
async fn workflows_list_each_file_with_its_load_status(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        examples().join("appointment-reminders.yaml"),
        dir.path().join("a.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "name: broken\non: patient.created\nsteps:\n  - sms: {to: '{{ data.phone }}', body: '{{ data.firstName '}\n",
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let server = backend
        .spawn_with(Options {
            clock: None,
            configure: Some(Box::new(move |c| c.workflows_dir = path)),
        })
        .await;
    let r = server.api().get("/v1/workflows").await;
    assert_eq!(r.status, 200);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{}", r.body);
    assert_eq!(data[0]["name"], "appointment-reminders");
    assert_eq!(data[0]["status"], "loaded");
    assert!(data[0]["error"].is_null());
    assert_eq!(data[1]["file"], "b.yaml");
    assert_eq!(data[1]["status"], "error");
    let e = data[1]["error"].as_str().unwrap();
    assert!(e.starts_with("step 1 (sms): body: "), "{e}");
    assert_eq!(server.anonymous().get("/v1/workflows").await.status, 401);
    // The directory is watched: a fixed file loads, a removed one goes.
    std::fs::write(
        dir.path().join("b.yaml"),
        "name: fixed\non: patient.created\nsteps:\n  - cancel: {key: 'onboarding:{{ data.id }}'}\n",
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let api = server.api();
    wait_for(Duration::from_secs(10), "the reload", || {
        let api = api.clone();
        async move {
            let r = api.get("/v1/workflows").await.body;
            let data = r["data"].as_array()?.clone();
            (data.len() == 1 && data[0]["name"] == "fixed" && data[0]["status"] == "loaded")
                .then_some(())
        }
    })
    .await;
}

async fn a_timer_fires_once_after_a_restart_with_the_timer_overdue(backend: Backend) {
    let (server, clock) = spawn_examples(&backend).await;
    let api = server.api();
    patient(&api, json!({"email": "ada@example.com"})).await;
    finished_runs(&api, "patient-onboarding", 1).await;
    assert_eq!(timers(&api).await.len(), 1);
    // Down for three days: the 48-hour reminder is overdue at restart.
    let later = Arc::new(ManualClock::new(t0() + SignedDuration::from_hours(72)));
    drop(clock);
    let server = server
        .restart(Options {
            clock: Some(later.clone()),
            configure: Some(Box::new(|c: &mut Config| c.workflows_dir = examples())),
        })
        .await;
    let api = server.api();
    // The clock does not move after the start: the overdue timer fires
    // because it is due, at the time of the start.
    let sent = outbox(&api, 2).await;
    assert_eq!(
        sent[1]["createdAt"],
        at(t0() + SignedDuration::from_hours(72)),
        "fired at the start: {}",
        sent[1]
    );
    assert_eq!(sent[1]["subject"], "Your intake form is waiting");
    assert!(timers(&api).await.is_empty());
    // And only once, also after another restart.
    let server = server
        .restart(Options {
            clock: Some(later),
            configure: Some(Box::new(|c: &mut Config| c.workflows_dir = examples())),
        })
        .await;
    let api = server.api();
    server.automations_settled().await;
    assert_eq!(list(&api, "/v1/notifications").await.len(), 2);
    assert_eq!(finished_runs(&api, "patient-onboarding", 2).await.len(), 2);
}

async fn inbound_sms_c_cancels_the_next_appointment_and_r_answers(backend: Backend) {
    if !python_has(&["twilio.request_validator"]) {
        return skipped(
            "inbound_sms_c_cancels_the_next_appointment_and_r_answers",
            "python3 with PyPI twilio is not installed",
        );
    }
    let twilio = Receiver::start().await;
    twilio.answer(twilio_ok("SM1"));
    let base = twilio.url("");
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = examples();
        c.providers.twilio = Some(twilio_config(base));
        c.public_url = Some("https://clinic.example.com".into());
    })
    .await;
    let api = server.api();
    let tenant = server.state.store.tenant_ids().await.unwrap()[0].clone();
    let p = patient(&api, json!({})).await;
    let later = appointment(&api, &p, t0() + SignedDuration::from_hours(96)).await;
    let sooner = appointment(&api, &p, t0() + SignedDuration::from_hours(48)).await;
    finished_runs(&api, "appointment-reminders", 2).await;
    assert_eq!(timers(&api).await.len(), 2);

    let public = format!("https://clinic.example.com/v1/inbound/twilio/{tenant}");
    // Twilio's own helper library signs the request.
    let sign = |params: &Value| {
        python(
            "import sys, json\nfrom twilio.request_validator import RequestValidator\nprint(RequestValidator(sys.argv[1]).compute_signature(sys.argv[2], json.loads(sys.argv[3])))",
            &["twilio-auth-token", &public, &params.to_string()],
        )
    };
    let post = |params: Value, signature: String| {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                params
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())),
            )
            .finish();
        server
            .anonymous()
            .request(
                reqwest::Method::POST,
                &format!("/v1/inbound/twilio/{tenant}"),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(body)
    };
    let c =
        json!({"From": "+15551230001", "To": "+15550000000", "Body": "C", "MessageSid": "SMin1"});
    // Forged, or signed for another body: 403, nothing changes.
    let r = server
        .anonymous()
        .send(post(c.clone(), "bm90IGEgc2lnbmF0dXJl".into()))
        .await;
    assert_eq!(r.status, 403);
    let r = server
        .anonymous()
        .send(post(
            c.clone(),
            sign(&json!({"From": "+15551230001", "Body": "R"})),
        ))
        .await;
    assert_eq!(r.status, 403);
    let r = server
        .anonymous()
        .send(post(c.clone(), String::new()))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        api.get(&format!("/v1/appointments/{sooner}")).await.body["status"],
        "booked"
    );
    assert!(
        list(&api, "/v1/notifications")
            .await
            .iter()
            .all(|n| n["direction"] == "outbound")
    );

    // Signed by Twilio's library: the next booked appointment is cancelled.
    let r = server.anonymous().send(post(c.clone(), sign(&c))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("content-type"), Some("text/xml; charset=utf-8"));
    assert!(
        r.body.as_str().unwrap().contains(
            "<Message>Your appointment on Thu 3 Dec 2026, 09:00 UTC has been cancelled.</Message>"
        ),
        "{}",
        r.body
    );
    assert_eq!(
        api.get(&format!("/v1/appointments/{sooner}")).await.body["status"],
        "cancelled"
    );
    assert_eq!(
        api.get(&format!("/v1/appointments/{later}")).await.body["status"],
        "booked"
    );
    // Its events fired: the reminder is dropped.
    finished_runs(&api, "appointment-cancelled", 1).await;
    let keys: Vec<Value> = timers(&api)
        .await
        .iter()
        .map(|t| t["key"].clone())
        .collect();
    assert_eq!(keys, [json!(format!("reminder:{later}"))]);
    // Twilio's retry of the same message (same MessageSid) does nothing more.
    let r = server.anonymous().send(post(c.clone(), sign(&c))).await;
    assert_eq!(r.status, 200);
    assert!(
        !r.body.as_str().unwrap().contains("<Message>"),
        "{}",
        r.body
    );
    assert_eq!(
        api.get(&format!("/v1/appointments/{later}")).await.body["status"],
        "booked"
    );
    // R: instructions.
    let rr =
        json!({"From": "+15551230001", "To": "+15550000000", "Body": " r ", "MessageSid": "SMin2"});
    let r = server.anonymous().send(post(rr.clone(), sign(&rr))).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.as_str().unwrap().contains("To reschedule"),
        "{}",
        r.body
    );
    // Both recorded.
    let all = list(&api, "/v1/notifications").await;
    let inbound: Vec<&Value> = all.iter().filter(|n| n["direction"] == "inbound").collect();
    assert_eq!(inbound.len(), 2);
    assert_eq!(
        all.iter()
            .filter(|n| n["workflow"] == "inbound-sms")
            .count(),
        4
    );
}

async fn email_goes_over_smtp_with_starttls_and_tls(backend: Backend) {
    let certs = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed_cert(certs.path()) else {
        return skipped(
            "email_goes_over_smtp_with_starttls_and_tls",
            "openssl is not installed",
        );
    };
    for tls in [SmtpTls::Starttls, SmtpTls::Tls] {
        let mode = match tls {
            SmtpTls::Starttls => SmtpMode::Starttls(&cert, &key),
            _ => SmtpMode::Tls(&cert, &key),
        };
        let Some(smtp) = SmtpSink::start(mode, Some(("clinic", "s3cret"))).await else {
            return skipped(
                "email_goes_over_smtp_with_starttls_and_tls",
                "python3 with PyPI aiosmtpd is not installed",
            );
        };
        let (port, ca) = (smtp.port, cert.clone());
        let (server, _clock) = spawn(&backend, move |c| {
            c.workflows_dir = examples();
            c.providers.smtp = Some(Smtp {
                host: "127.0.0.1".into(),
                port,
                username: "clinic".into(),
                password: Secret::new("s3cret"),
                from: "clinic@example.com".into(),
                tls,
                ca_file: Some(ca),
                tenants: Vec::new(),
                daily_quota: None,
            });
        })
        .await;
        let api = server.api();
        patient(&api, json!({"email": "ada@example.com"})).await;
        let run = wait_for(LONG, "the welcome email's step", || async {
            let runs = list(&api, "/v1/workflow-runs?workflow=patient-onboarding").await;
            runs.into_iter()
                .find(|r| r["steps"][0]["status"] != Value::Null)
        })
        .await;
        assert_eq!(run["steps"][0]["status"], "succeeded", "{tls:?}: {run}");
        let mails = smtp.wait_for(1, LONG).await;
        assert_eq!(mails[0]["tls"], true, "{tls:?}");
        assert_eq!(mails[0]["auth"], true);
        assert_eq!(mails[0]["to"][0], "ada@example.com");
        assert!(mails[0]["data"].as_str().unwrap().contains("welcome!"));
    }
}

async fn the_claim_validates_against_fhir_r4(backend: Backend) {
    if !python_has(&["fhir.resources.R4B.claim"]) {
        return skipped(
            "the_claim_validates_against_fhir_r4",
            "python3 with PyPI fhir.resources is not installed",
        );
    }
    let (server, _clock) = spawn_examples(&backend).await;
    let api = server.api();
    let (e, _) = encounter_with_records(&api).await;
    api.patch(
        &format!("/v1/encounters/{e}"),
        json!({"status": "finished", "end": "2026-12-01T09:00:00Z"}),
    )
    .await;
    let claim = wait_for(LONG, "the claim in the outbox", || async {
        let sent = list(&api, "/v1/notifications").await;
        sent.into_iter()
            .find(|n| n["channel"] == "claim")
            .map(|n| n["body"].as_str().unwrap().to_string())
    })
    .await;
    // fhir.resources' R4B package is FHIR R4 (4.3); its Claim model checks
    // every element's type and cardinality.
    let script = r#"
import sys
from fhir.resources.R4B.claim import Claim
c = Claim.model_validate_json(sys.argv[1])
print(c.get_resource_type(), len(c.item), len(c.diagnosis), len(c.supportingInfo))
"#;
    assert_eq!(python(script, &[&claim]), "Claim 1 1 2");
}

async fn retention_purges_finished_runs_and_old_outbox_entries_but_keeps_timers(backend: Backend) {
    let (server, clock) = spawn_examples(&backend).await;
    let api = server.api();
    let p = patient(&api, json!({})).await;
    // A reminder due in 40 days.
    appointment(&api, &p, t0() + SignedDuration::from_hours(24 * 41)).await;
    finished_runs(&api, "appointment-reminders", 1).await;
    outbox(&api, 1).await;
    clock.advance(SignedDuration::from_hours(24 * 31));
    // What the server's hourly retention task does (30 days by default).
    eventflow_server::retention_pass(&server.state)
        .await
        .unwrap();
    assert!(list(&api, "/v1/workflow-runs").await.is_empty());
    assert!(list(&api, "/v1/notifications").await.is_empty());
    assert_eq!(timers(&api).await.len(), 1, "the pending timer stays");
    clock.advance(SignedDuration::from_hours(24 * 9));
    let sent = outbox(&api, 1).await;
    assert!(sent[0]["body"].as_str().unwrap().starts_with("Reminder"));
}

async fn create_and_update_steps_change_records_with_their_own_events(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("chart.yaml"),
        "name: chart\non: patient.created\nsteps:\n  \
         - update: {type: patient, id: '{{ data.id }}', body: {mrn: 'MRN-{{ data.lastName | upper }}'}}\n  \
         - create: {type: note, body: {patientId: '{{ data.id }}', text: 'Chart opened for {{ data.firstName }}'}}\n  \
         - slack: {text: 'New patient {{ data.id }}', channel: '#front-desk'}\n",
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| c.workflows_dir = path).await;
    let api = server.api();
    let p = patient(&api, json!({})).await;
    let runs = finished_runs(&api, "chart", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    assert_eq!(
        api.get(&format!("/v1/patients/{p}")).await.body["mrn"],
        "MRN-LOVELACE"
    );
    let note = runs[0]["steps"][1]["detail"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api.get(&format!("/v1/notes/{note}")).await;
    assert_eq!(r.body["text"], "Chart opened for Ada");
    // Each change fired its own event, like a write through the API.
    let types: Vec<Value> = list(&api, "/v1/events")
        .await
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(
        types,
        [
            json!("patient.created"),
            json!("patient.updated"),
            json!("note.created")
        ]
    );
    // The audit log names the workflow as the writer.
    let audit = list(&api, "/v1/audit-log").await;
    assert!(
        audit
            .iter()
            .any(|a| a["keyId"] == "workflow:chart" && a["resourceId"] == note.as_str()),
        "{audit:?}"
    );
    // No Slack webhook configured: the message is in the outbox.
    let sent = outbox(&api, 1).await;
    assert_eq!(sent[0]["channel"], "slack");
    assert_eq!(sent[0]["to"], "#front-desk");
    assert_eq!(sent[0]["provider"], "outbox");
}

async fn a_workflow_does_not_run_on_the_events_its_own_steps_wrote(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    // Every patient change sets the MRN: without the guard, its own
    // patient.updated would start it again, forever.
    std::fs::write(
        dir.path().join("stamp.yaml"),
        "name: stamp\non: patient.updated\nsteps:\n  - update: {type: patient, id: '{{ data.id }}', body: {mrn: 'M-{{ data.version }}'}}\n",
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| c.workflows_dir = path).await;
    let api = server.api();
    let p = patient(&api, json!({})).await;
    api.patch(&format!("/v1/patients/{p}"), json!({"lastName": "Byron"}))
        .await;
    let runs = finished_runs(&api, "stamp", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    assert_eq!(
        api.get(&format!("/v1/patients/{p}")).await.body["mrn"],
        "M-2"
    );
    // The workflow's own patient.updated started nothing.
    server.automations_settled().await;
    assert_eq!(
        list(&api, "/v1/workflow-runs?workflow=stamp").await.len(),
        1
    );
    let types: Vec<Value> = list(&api, "/v1/events")
        .await
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(
        types,
        [
            json!("patient.created"),
            json!("patient.updated"),
            json!("patient.updated")
        ]
    );
    // A person's next change runs it again.
    api.patch(
        &format!("/v1/patients/{p}"),
        json!({"firstName": "Augusta"}),
    )
    .await;
    finished_runs(&api, "stamp", 2).await;
    assert_eq!(
        api.get(&format!("/v1/patients/{p}")).await.body["mrn"],
        "M-4"
    );
}

async fn concurrent_writes_of_a_workflow_each_land_whole(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| c.workflows_dir = path).await;
    let api = server.api();
    let bodies: Vec<String> = (0..12)
        .map(|i| GOOD.replace("Welcome", &format!("Welcome number {i:02} of many,")))
        .collect();
    let writes = bodies.iter().map(|body| {
        let api = api.clone();
        let body = body.clone();
        async move {
            api.send(
                api.request(reqwest::Method::PUT, "/v1/workflows/welcome-sms")
                    .header("content-type", "application/yaml")
                    .body(body),
            )
            .await
        }
    });
    for r in futures::future::join_all(writes).await {
        assert!(r.status == 200 || r.status == 201, "{:?}", r.body);
    }
    // The file is one of the bodies, whole, and it loads; no temporary
    // file is left behind.
    let tenant_dir = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    let names: Vec<String> = std::fs::read_dir(&tenant_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["welcome-sms.yaml"]);
    let text = std::fs::read_to_string(tenant_dir.join("welcome-sms.yaml")).unwrap();
    assert!(bodies.contains(&text), "{text}");
    let r = api.get("/v1/workflows/welcome-sms").await;
    assert_eq!(r.body["status"], "loaded", "{:?}", r.body);
    assert_eq!(r.body["source"], text.as_str());
}

async fn a_workflow_of_yaml_aliases_is_refused_and_the_server_keeps_answering(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| c.workflows_dir = path).await;
    let api = server.api();
    // A billion laughs: each level nine aliases of the one before.
    let mut bomb = String::from(
        "name: bomb\non: patient.created\nsteps:\n  - cancel: {key: &l0 [x, x, x, x, x, x, x, x, x]}\n",
    );
    for i in 1..9 {
        let p = i - 1;
        bomb.push_str(&format!(
            "  - cancel: {{key: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]}}\n"
        ));
    }
    assert!(bomb.len() < 1000, "{}", bomb.len());
    let r = api
        .send(
            api.request(reqwest::Method::POST, "/v1/workflows")
                .header("content-type", "application/yaml")
                .body(bomb),
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("anchors and aliases"), "{message}");
    // Nothing was written; the server answers and takes a good workflow.
    assert!(list(&api, "/v1/workflows").await.is_empty());
    assert_eq!(api.get("/healthz").await.status, 200);
    let r = api
        .send(
            api.request(reqwest::Method::POST, "/v1/workflows")
                .header("content-type", "application/yaml")
                .body(GOOD),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

async fn a_template_past_its_fuel_or_output_bound_fails_its_step(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("spin.yaml"),
        "name: spin\non: patient.created\nsteps:\n  - sms: {to: '{{ data.phone }}', body: '{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}'}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("huge.yaml"),
        "name: huge\non: patient.created\nsteps:\n  - sms: {to: '{{ data.phone }}', body: \"{{ 'x' * 5000 }}\"}\n",
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = path;
        c.limits.template_output_bytes = 4096;
    })
    .await;
    let api = server.api();
    patient(&api, json!({})).await;
    let runs = finished_runs(&api, "spin", 1).await;
    assert_eq!(runs[0]["status"], "failed", "{}", runs[0]);
    let error = runs[0]["steps"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("body: out of fuel"), "{error}");
    let runs = finished_runs(&api, "huge", 1).await;
    assert_eq!(runs[0]["status"], "failed", "{}", runs[0]);
    assert_eq!(
        runs[0]["steps"][0]["error"],
        "body: output larger than 4096 bytes (limits.template_output_bytes)"
    );
    // Nothing was sent, and the server answers.
    server.automations_settled().await;
    assert!(list(&api, "/v1/notifications").await.is_empty());
    assert_eq!(api.get("/healthz").await.status, 200);
}

async fn runs_start_only_when_a_slot_is_free_and_the_others_wait_unleased(backend: Backend) {
    let receiver = Receiver::start().await;
    receiver.answer(Answer::Hang);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hang.yaml"),
        format!(
            "name: hang\non: patient.created\nsteps:\n  - http: {{url: '{}', body: {{id: '{{{{ data.id }}}}'}}}}\n",
            receiver.url("/slow")
        ),
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = path;
        c.delivery_timeout_secs = 5;
    })
    .await;
    let api = server.api();
    // 40 runs against a node that executes 32 at once.
    let ops: Vec<Value> = (0..40)
        .map(|i| json!({"method": "POST", "path": "/v1/patients", "body": {"firstName": format!("P{i}"), "lastName": "X"}}))
        .collect();
    let r = api.post("/v1/batch", json!({"operations": ops})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    receiver.wait_for(32, LONG).await;
    // The 8 without a slot wait in the table, leased to no node (any node
    // may take them), with their due time; none of them called out.
    let waiting = wait_for(LONG, "8 runs waiting unleased", || async {
        let runs = list(&api, "/v1/workflow-runs?workflow=hang&status=pending").await;
        let waiting: Vec<Value> = runs
            .into_iter()
            .filter(|r| !r["nextAttemptAt"].is_null() && r["steps"].as_array().unwrap().is_empty())
            .collect();
        (waiting.len() == 8).then_some(waiting)
    })
    .await;
    assert_eq!(waiting.len(), 8);
    assert_eq!(receiver.count(), 32);
    // When the hanging calls time out, the slots go to the waiting runs.
    receiver.wait_for(40, LONG).await;
}

/// This machine's own host name, which resolves to loopback or a private
/// address only.
async fn own_host_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
        .await
        .map(|a| a.collect())
        .unwrap_or_default();
    assert!(
        !resolved.is_empty()
            && resolved
                .iter()
                .all(|a| eventflow_delivery::forbidden(a.ip()).is_some()),
        "this test needs the machine's host name ({host:?}) to resolve to a private or loopback address"
    );
    host
}

async fn http_steps_go_through_the_outbound_guard(backend: Backend) {
    let receiver = Receiver::start().await;
    let host = own_host_name().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, var) in [("to-literal", "literal"), ("to-name", "named")] {
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            format!(
                "name: {name}\non: patient.created\nsteps:\n  - http: {{url: '{{{{ vars.{var} }}}}', method: PUT, headers: {{x-probe: '1'}}, body: {{phone: '{{{{ data.phone }}}}'}}}}\n"
            ),
        )
        .unwrap();
    }
    let path = dir.path().to_path_buf();
    let literal = receiver.url("/admin");
    let named = format!("http://{host}:{}/admin", receiver.port());
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = path;
        c.allow_private_endpoints = false;
        c.vars.insert("literal".into(), literal);
        c.vars.insert("named".into(), named);
    })
    .await;
    let api = server.api();
    patient(&api, json!({})).await;
    for (workflow, says) in [
        ("to-literal", "points at a loopback address"),
        ("to-name", "resolves to a loopback address"),
    ] {
        let runs = finished_runs(&api, workflow, 1).await;
        let run = &runs[0];
        assert_eq!(run["status"], "failed", "{run}");
        let step = &run["steps"][0];
        let error = step["error"].as_str().unwrap();
        assert!(error.contains(says), "{workflow}: {error}");
        assert!(error.contains("allow_private_endpoints"), "{error}");
        // Refused before anything was sent: no status, one try.
        assert!(step["detail"].get("statusCode").is_none(), "{step}");
        assert_eq!(step["attempts"], 1, "{step}");
    }
    server.automations_settled().await;
    assert_eq!(receiver.count(), 0, "the local receiver got nothing");
    // A URL a tenant's file fixes is checked when it is saved.
    let r = api
        .send(
            api.request(reqwest::Method::POST, "/v1/workflows")
                .header("content-type", "application/yaml")
                .body(format!(
                    "name: scan\non: patient.created\nsteps:\n  - http: {{url: '{}'}}\n",
                    receiver.url("/")
                )),
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("step 1 (http): url: points at a loopback address"),
        "{message}"
    );
}

async fn in_production_an_http_step_to_a_plain_http_url_is_refused_at_save(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = path;
        c.production = true;
        c.allow_private_endpoints = false;
    })
    .await;
    let api = server.api();
    let save = |url: &str| {
        api.request(reqwest::Method::POST, "/v1/workflows")
            .header("content-type", "application/yaml")
            .body(format!(
                "name: hook\non: patient.created\nsteps:\n  - http: {{url: \"{url}\"}}\n"
            ))
    };
    for url in [
        "http://hooks.example.com/in",
        "http://{{ data.id }}.example.com/in",
    ] {
        let r = api.send(save(url)).await;
        assert_eq!(r.status, 422, "{url}: {:?}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("step 1 (http): url: must use https:// in production"),
            "{message}"
        );
    }
    assert!(list(&api, "/v1/workflows").await.is_empty());
    let r = api.send(save("https://hooks.example.com/in")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

async fn two_workflows_that_update_each_other_stop_at_the_chain_depth(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    // Each answers the other's change with one of its own, with no `if`.
    for (name, field) in [("ping", "mrn"), ("pong", "lastName")] {
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            format!(
                "name: {name}\non: patient.updated\nsteps:\n  - update: {{type: patient, id: '{{{{ data.id }}}}', body: {{{field}: '{name}-{{{{ data.version }}}}'}}}}\n"
            ),
        )
        .unwrap();
    }
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = path;
        c.limits.workflow_chain_depth = 3;
    })
    .await;
    let api = server.api();
    let p = patient(&api, json!({})).await;
    api.patch(&format!("/v1/patients/{p}"), json!({"lastName": "Byron"}))
        .await;
    // The person's change (version 2) starts both; each write starts the
    // other one deeper; the runs 3 writes deep fail instead of writing.
    let failed = wait_for(LONG, "a run stopped as a loop", || async {
        let runs = list(&api, "/v1/workflow-runs?status=failed").await;
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    let error = failed[0]["steps"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("loop: "), "{error}");
    assert!(
        error.contains("limits.workflow_chain_depth is 3"),
        "{error}"
    );
    let caught_up = wait_for(LONG, "the engine to settle", || async {
        server.automations_settled().await;
        let runs = list(&api, "/v1/workflow-runs").await;
        runs.iter()
            .all(|r| r["status"] != "pending")
            .then_some(runs)
    })
    .await;
    let seq = list(&api, "/v1/events").await.len() as i64;
    // It stopped: a bounded number of versions, and no more runs come.
    let version = api.get(&format!("/v1/patients/{p}")).await.body["version"]
        .as_i64()
        .unwrap();
    assert!(version <= 2 + 2 * 3, "version {version}");
    server.automations_settled().await;
    assert_eq!(list(&api, "/v1/events").await.len() as i64, seq);
    assert_eq!(list(&api, "/v1/workflow-runs").await.len(), caught_up.len());
}

async fn workflows_that_update_each_other_through_timers_stop_at_the_chain_depth_too(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    // `ping` answers a change a second later, through a timer; `pong` at once.
    std::fs::write(
        dir.path().join("ping.yaml"),
        "name: ping\non: patient.updated\nsteps:\n  - schedule:\n      key: 'ping:{{ data.id }}'\n      after: 1s\n      steps:\n        - update: {type: patient, id: '{{ data.id }}', body: {mrn: 'ping-{{ data.version }}'}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pong.yaml"),
        "name: pong\non: patient.updated\nif: has(data.mrn) && data.mrn.startsWith('ping')\nsteps:\n  - update: {type: patient, id: '{{ data.id }}', body: {lastName: 'pong-{{ data.version }}'}}\n",
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let (server, clock) = spawn(&backend, move |c| {
        c.workflows_dir = path;
        c.limits.workflow_chain_depth = 3;
    })
    .await;
    let api = server.api();
    let p = patient(&api, json!({})).await;
    api.patch(&format!("/v1/patients/{p}"), json!({"lastName": "Byron"}))
        .await;
    // Each round: the engine settles, the timer (if any) comes due.
    let mut stopped = None;
    for _ in 0..20 {
        server.automations_settled().await;
        let failed = list(&api, "/v1/workflow-runs?status=failed").await;
        if !failed.is_empty() {
            stopped = Some(failed);
            break;
        }
        clock.advance(jiff::SignedDuration::from_secs(2));
    }
    let failed = stopped.expect("the chain stopped within 20 rounds");
    let looped = failed.iter().any(|run| {
        run["steps"].as_array().into_iter().flatten().any(|step| {
            step["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("loop: "))
        })
    });
    assert!(looped, "{failed:?}");
    // Nothing more comes: no timer left, the version bounded.
    clock.advance(jiff::SignedDuration::from_secs(2));
    server.automations_settled().await;
    assert!(timers(&api).await.is_empty());
    let version = api.get(&format!("/v1/patients/{p}")).await.body["version"]
        .as_i64()
        .unwrap();
    assert!(version <= 2 + 2 * 3, "version {version}");
}

async fn a_tenants_own_workflow_uses_a_provider_only_when_the_operator_lists_it(backend: Backend) {
    let twilio = Receiver::start().await;
    twilio.answer(twilio_ok("SM1"));
    let base = twilio.url("");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = path;
        c.providers.twilio = Some(twilio_config(base));
    })
    .await;
    let api = server.api();
    let other = server.new_tenant("listed-clinic").await;
    let listed = other.get("/v1/workflows").await;
    assert_eq!(listed.status, 200);
    // The first tenant is not listed: its own sms step fails, nothing is sent.
    let r = api
        .send(
            api.request(reqwest::Method::POST, "/v1/workflows")
                .header("content-type", "application/yaml")
                .body(GOOD),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    patient(&api, json!({})).await;
    let runs = finished_runs(&api, "welcome-sms", 1).await;
    assert_eq!(runs[0]["status"], "failed", "{}", runs[0]);
    let error = runs[0]["steps"][0]["error"].as_str().unwrap();
    assert!(error.contains("may not use [providers.twilio]"), "{error}");
    server.automations_settled().await;
    assert_eq!(twilio.count(), 0);
}

/// The tenant an API key belongs to, from the envelope of an event it writes.
async fn tenant_id(api: &Api) -> String {
    api.create(
        "practitioners",
        json!({"firstName": "Grace", "lastName": "Hopper"}),
    )
    .await;
    let events = api.events_after(0).await;
    events.last().unwrap()["tenantId"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn a_listed_tenant_sends_up_to_its_daily_quota_and_again_after_midnight_utc(
    backend: Backend,
) {
    let twilio = Receiver::start().await;
    twilio.answer(twilio_ok("SM1"));
    let base = twilio.url("");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (server, clock) = spawn(&backend, {
        let path = path.clone();
        move |c| c.workflows_dir = path
    })
    .await;
    let (first, second) = (server.api(), server.new_tenant("second-clinic").await);
    let listed = vec![tenant_id(&first).await, tenant_id(&second).await];
    // The operator lists both tenants, with a quota of 2 SMS a day each.
    let server = server
        .restart(Options {
            clock: Some(clock.clone()),
            configure: Some(Box::new(move |c: &mut Config| {
                c.workflows_dir = path;
                let mut twilio = twilio_config(base);
                twilio.tenants = listed;
                twilio.daily_quota = Some(2);
                c.providers.twilio = Some(twilio);
            })),
        })
        .await;
    let first = server.api();
    let second = Api {
        base: server.base.clone(),
        ..second
    };
    for api in [&first, &second] {
        let r = api
            .send(
                api.request(reqwest::Method::POST, "/v1/workflows")
                    .header("content-type", "application/yaml")
                    .body(GOOD),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    // Three new patients of the first tenant: two texts go out, the third
    // step fails with the reason and sends nothing.
    for _ in 0..3 {
        patient(&first, json!({})).await;
    }
    let runs = finished_runs(&first, "welcome-sms", 3).await;
    let ok = runs.iter().filter(|r| r["status"] == "succeeded").count();
    assert_eq!(ok, 2, "{runs:?}");
    let failed: Vec<&Value> = runs.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{runs:?}");
    let error = failed[0]["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("daily quota of 2 sms reached for this tenant"),
        "{error}"
    );
    server.automations_settled().await;
    assert_eq!(twilio.count(), 2);
    let sent = list(&first, "/v1/notifications").await;
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|n| n["provider"] == "twilio"), "{sent:?}");
    // The second tenant's count is its own.
    patient(&second, json!({})).await;
    let runs = finished_runs(&second, "welcome-sms", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    twilio.wait_for(3, LONG).await;
    // Past midnight UTC the first tenant's quota starts again.
    clock.advance(SignedDuration::from_hours(15) + SignedDuration::from_mins(1));
    patient(&first, json!({})).await;
    let runs = finished_runs(&first, "welcome-sms", 4).await;
    assert_eq!(
        runs.iter().filter(|r| r["status"] == "succeeded").count(),
        3,
        "{runs:?}"
    );
    twilio.wait_for(4, LONG).await;
    // The retention pass keeps the count of the day under way.
    eventflow_server::retention_pass(&server.state)
        .await
        .unwrap();
    for _ in 0..2 {
        patient(&first, json!({})).await;
    }
    let runs = finished_runs(&first, "welcome-sms", 6).await;
    assert_eq!(
        runs.iter().filter(|r| r["status"] == "succeeded").count(),
        4,
        "one more today, then the quota: {runs:?}"
    );
    server.automations_settled().await;
    assert_eq!(twilio.count(), 5);
}

/// Costs a few thousand units whatever the event: within the default
/// budget, not within 1,000.
const HEAVY_IF: &str = "[0,1,2,3,4,5,6,7,8,9].all(a, [0,1,2,3,4,5,6,7,8,9].all(b, a + b >= 0))";

async fn a_condition_that_cannot_fit_the_configured_cel_budget_is_refused_at_load_and_save(
    backend: Backend,
) {
    let heavy = format!(
        "name: heavy\non: patient.created\nif: '{HEAVY_IF}'\nsteps: [{{cancel: {{key: k}}}}]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("heavy.yaml"), &heavy).unwrap();
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| {
        c.workflows_dir = path;
        c.limits.cel_cost = 1_000;
    })
    .await;
    let api = server.api();
    let listed = list(&api, "/v1/workflows").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["status"], "error");
    assert_eq!(listed[0]["file"], "heavy.yaml");
    let error = listed[0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("if: costs more than the limit of 1000 units"),
        "{error}"
    );
    // Through the API: a 422 with the field and the reason.
    let r = api
        .send(
            api.request(reqwest::Method::PUT, "/v1/workflows/heavy-own")
                .header("content-type", "application/yaml")
                .body(heavy.replace("name: heavy", "name: heavy-own")),
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("if: costs more than the limit of 1000 units"),
        "{message}"
    );
}

async fn a_condition_over_budget_on_a_large_record_starts_no_run_and_the_workflow_says_why(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    // The operator's: it runs for every tenant.
    std::fs::write(
        dir.path().join("lab-check.yaml"),
        "name: lab-check\non: lab.created\n\
         if: 'data.results.all(a, data.results.all(b, a.code != b.code || a.value == b.value))'\n\
         steps:\n  - slack: {text: 'lab {{ data.id }} checked'}\n",
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let (server, _clock) = spawn(&backend, move |c| c.workflows_dir = path).await;
    let api = server.api();
    let other = server.new_tenant("other-clinic").await;
    let p = patient(&api, json!({})).await;
    let result =
        |i: usize| json!({"code": format!("c{i}"), "display": "x", "value": i, "unit": "u"});
    let lab = |n: usize| json!({"patientId": p, "code": "24323-8", "results": (0..n).map(result).collect::<Vec<_>>()});
    // Cheap on a small lab: it matches and runs.
    let small = api.create("labs", lab(3)).await;
    let runs = finished_runs(&api, "lab-check", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    // Over budget on 400 results: no run, and the workflow says why.
    let big = api.create("labs", lab(400)).await;
    let big_event = api
        .get(&format!("/v1/events?after=0&resourceId={big}"))
        .await
        .body["data"][0]["id"]
        .clone();
    let listed = wait_for(LONG, "the condition error", || async {
        let l = list(&api, "/v1/workflows").await;
        (!l[0]["conditionError"].is_null()).then_some(l)
    })
    .await;
    let error = &listed[0]["conditionError"];
    assert_eq!(error["eventId"], big_event, "{error}");
    assert_eq!(
        error["message"],
        "ran out of its cost budget (100000 units); the event did not match"
    );
    assert!(error["at"].is_string(), "{error}");
    let one = api.get("/v1/workflows/lab-check").await;
    assert_eq!(one.body["conditionError"], *error);
    server.automations_settled().await;
    let runs = list(&api, "/v1/workflow-runs?workflow=lab-check").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let sent = list(&api, "/v1/notifications").await;
    assert_eq!(sent.len(), 1);
    assert!(sent[0]["body"].as_str().unwrap().contains(&small));
    // Counted where the operator looks; never the record's data.
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("eventflow_filter_over_budget_total")),
        "{metrics}"
    );
    // Another tenant runs the same workflow and sees no error of this one's.
    let theirs = list(&other, "/v1/workflows").await;
    assert_eq!(theirs[0]["name"], "lab-check");
    assert_eq!(theirs[0]["conditionError"], Value::Null);
    // A new condition clears it.
    std::fs::write(
        dir.path().join("lab-check.yaml"),
        "name: lab-check\non: lab.created\nif: size(data.results) < 10\n\
         steps:\n  - slack: {text: 'lab {{ data.id }} checked'}\n",
    )
    .unwrap();
    wait_for(LONG, "the new condition", || async {
        let l = list(&api, "/v1/workflows").await;
        (l[0]["if"] == "size(data.results) < 10").then_some(l)
    })
    .await;
    let listed = list(&api, "/v1/workflows").await;
    assert_eq!(listed[0]["conditionError"], Value::Null);
}
