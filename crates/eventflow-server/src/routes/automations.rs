//! What automations did (docs/design.md §4): `GET /v1/workflow-runs`, the
//! outbox `GET /v1/notifications`, pending `GET /v1/timers`, and inbound SMS
//! `POST /v1/inbound/twilio/{tenantId}`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use eventflow_model::id::{self, RunId, TenantId};
use eventflow_model::{ResourceType, time};
use eventflow_store::{Actor, Channel, Direction, Notification, Run, RunQuery, RunStatus, Timer};
use eventflow_store::{ListQuery, Op, WriteKind, WriteRequest};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Auth, constant_time_eq};
use crate::error::{ApiError, ApiResult};
use crate::extract::Params;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/workflow-runs", get(list_runs))
        .route("/v1/workflow-runs/{id}", get(get_run))
        .route("/v1/notifications", get(list_notifications))
        .route("/v1/timers", get(list_timers))
        .route("/v1/inbound/twilio/{tenant}", post(inbound_twilio))
}

/// `{"data", "nextCursor"}` from up to `limit + 1` rows read newest first:
/// the extra row only says that there is a next page, which starts below
/// the last id shown.
fn page<T>(mut rows: Vec<T>, limit: u32, show: impl Fn(&T) -> (String, Value)) -> Json<Value> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let shown: Vec<(String, Value)> = rows.iter().map(show).collect();
    let next = if more {
        shown.last().map(|(id, _)| id.clone())
    } else {
        None
    };
    let data: Vec<Value> = shown.into_iter().map(|(_, v)| v).collect();
    Json(json!({ "data": data, "nextCursor": next }))
}

fn cursor(params: &Params, prefix: &str) -> ApiResult<Option<String>> {
    match params.get("cursor") {
        None => Ok(None),
        Some(c) if c.starts_with(prefix) && id::is_well_formed(c) => Ok(Some(c.to_string())),
        Some(_) => Err(ApiError::invalid(
            "cursor",
            "is not a cursor this list gave",
        )),
    }
}

async fn list_runs(
    State(state): State<AppState>,
    auth: Auth,
    params: Params,
) -> ApiResult<Json<Value>> {
    params.only(&["workflow", "status", "eventId", "limit", "cursor"])?;
    let status = match params.get("status") {
        None => None,
        Some(s) => Some(
            s.parse::<RunStatus>()
                .map_err(|_| ApiError::invalid("status", "must be pending, succeeded or failed"))?,
        ),
    };
    let limit = params.int("limit", 100, 1, 1000)? as u32;
    let q = RunQuery {
        workflow: params.get("workflow").map(str::to_string),
        status,
        event_id: params.get("eventId").map(str::to_string),
        before: cursor(&params, "run_")?,
        limit: limit + 1,
    };
    let runs = state.store.workflow_runs(auth.tenant(), &q).await?;
    Ok(page(runs, limit, |r| (r.id.clone(), run_json(r))))
}

async fn get_run(
    State(state): State<AppState>,
    auth: Auth,
    Path(run): Path<String>,
) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::not_found("no such workflow run");
    let run = RunId::parse(&run).map_err(|_| not_found())?;
    match state.store.workflow_run(auth.tenant(), &run).await? {
        Some(r) => Ok(Json(run_json(&r))),
        None => Err(not_found()),
    }
}

async fn list_notifications(
    State(state): State<AppState>,
    auth: Auth,
    params: Params,
) -> ApiResult<Json<Value>> {
    params.only(&["limit", "cursor"])?;
    let limit = params.int("limit", 100, 1, 1000)? as u32;
    let list = state
        .store
        .notifications(
            auth.tenant(),
            cursor(&params, "ntf_")?.as_deref(),
            limit + 1,
        )
        .await?;
    Ok(page(list, limit, |n| (n.id.clone(), notification_json(n))))
}

async fn list_timers(
    State(state): State<AppState>,
    auth: Auth,
    params: Params,
) -> ApiResult<Json<Value>> {
    params.only_allowing_empty(&["key", "limit"], &["key"])?;
    let limit = params.int("limit", 1000, 1, 10_000)? as u32;
    // `key` matches exactly, also an empty one.
    let key = params.0.get("key").map(String::as_str);
    let timers = state.store.timers(auth.tenant(), key, limit).await?;
    let data: Vec<Value> = timers.iter().map(timer_json).collect();
    Ok(Json(json!({ "data": data })))
}

// ---- Inbound SMS ----------------------------------------------------------

/// Twilio's request signature: base64 of HMAC-SHA1, keyed with the auth
/// token, over the URL followed by each form parameter's name and value,
/// sorted by name.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine as _;
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        crate::error::ErrorKind::Forbidden,
        "X-Twilio-Signature is missing or does not match this request",
    )
}

/// A TwiML answer: the message Twilio texts back, or none.
fn twiml(message: Option<&str>) -> Response {
    let body = match message {
        Some(m) => {
            let escaped = m
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            format!("<Message>{escaped}</Message>")
        }
        None => String::new(),
    };
    (
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{body}</Response>"),
    )
        .into_response()
}

async fn inbound_twilio(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let Some(twilio) = &state.config.providers.twilio else {
        return Err(ApiError::not_found(
            "inbound SMS needs [providers.twilio] in the configuration (its auth token checks the signature)",
        ));
    };
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!(
        "{}/v1/inbound/twilio/{tenant}{query}",
        state.config.public_url().trim_end_matches('/')
    );
    let expected = twilio_signature(twilio.auth_token.expose(), &url, &params);
    let given = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(forbidden());
    }
    let tenant_id = match TenantId::parse(&tenant) {
        Ok(t) if state.store.tenant_ids().await?.contains(&t) => t,
        _ => return Err(ApiError::not_found("no such tenant")),
    };
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let (from, to, text) = (get("From"), get("To"), get("Body"));
    for (name, value) in [("From", &from), ("To", &to), ("Body", &text)] {
        if value.contains('\0') {
            return Err(ApiError::invalid(
                name,
                eventflow_model::validate::NUL_MESSAGE,
            ));
        }
    }
    let now = state.clock.now();
    let now_s = time::format(now);
    let message = |dir: Direction,
                   recipient: &str,
                   body: &str,
                   provider: &str,
                   provider_id: Option<String>| {
        Notification {
            id: id::new_id("ntf"),
            tenant_id: tenant.clone(),
            channel: Channel::Sms,
            direction: dir,
            to: recipient.to_string(),
            subject: None,
            body: body.to_string(),
            workflow: Some("inbound-sms".into()),
            run_id: None,
            step: None,
            provider: provider.into(),
            provider_id,
            provider_status: Some(if dir == Direction::Inbound {
                "received".into()
            } else {
                "replied".into()
            }),
            created_at: now_s.clone(),
        }
    };
    let fresh = state
        .store
        .add_notification(message(
            Direction::Inbound,
            &to,
            &text,
            "twilio",
            Some(get("MessageSid")).filter(|s| !s.is_empty()),
        ))
        .await?;
    if !fresh {
        // Twilio's retry of a message already handled (same MessageSid):
        // acknowledged, and nothing happens twice.
        return Ok(twiml(None));
    }
    let reply = match text.to_ascii_uppercase().as_str() {
        "C" | "CANCEL" => match next_booked(&state, &tenant_id, &from, now).await? {
            None => "We found no upcoming appointment for this number.".to_string(),
            Some(appt) => {
                let id = appt
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let version = appt.get("version").and_then(Value::as_i64);
                let start = appt
                    .get("start")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let outcome = state
                    .store
                    .write(WriteRequest {
                        tenant: tenant.clone(),
                        actor: Actor::InboundSms,
                        kind: WriteKind::Single(Op::Patch {
                            rt: ResourceType::Appointment,
                            id,
                            patch: json!({"status": "cancelled"}),
                            if_match: version,
                        }),
                        idempotency: None,
                    })
                    .await;
                match outcome {
                    Ok(_) => format!(
                        "Your appointment on {} has been cancelled.",
                        eventflow_automations::template::render(
                            "{{ s | datetime }}",
                            &json!({"s": start}),
                            Default::default(),
                        )
                        .unwrap_or(start)
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "inbound SMS: could not cancel the appointment");
                        "We could not cancel your appointment; please call the clinic.".to_string()
                    }
                }
            }
        },
        "R" | "RESCHEDULE" => state
            .config
            .vars
            .get("reschedule_message")
            .cloned()
            .unwrap_or_else(|| {
                "To reschedule, please call the clinic or book a new time online.".into()
            }),
        _ => "Reply C to cancel your next appointment or R to reschedule.".to_string(),
    };
    state
        .store
        .add_notification(message(Direction::Outbound, &from, &reply, "twilio", None))
        .await?;
    Ok(twiml(Some(&reply)))
}

/// The sender's next booked appointment (by `patientPhone`) that has not
/// started yet.
async fn next_booked(
    state: &AppState,
    tenant: &TenantId,
    phone: &str,
    now: jiff::Timestamp,
) -> ApiResult<Option<eventflow_model::Object>> {
    if phone.is_empty() {
        return Ok(None);
    }
    let now_s = time::format(now);
    let mut best: Option<eventflow_model::Object> = None;
    let mut cursor = None;
    // Booked appointments, a page at a time (at most 50,000 looked at).
    for _ in 0..50 {
        let page = state
            .store
            .list_records(
                tenant,
                ResourceType::Appointment,
                &ListQuery {
                    mrn: None,
                    status: Some("booked".into()),
                    limit: 1000,
                    cursor: cursor.take(),
                    ..Default::default()
                },
            )
            .await?;
        for a in page.data {
            let start = a
                .get("start")
                .and_then(Value::as_str)
                .and_then(time::parse)
                .map(time::format);
            let Some(start) = start else { continue };
            if a.get("patientPhone").and_then(Value::as_str) != Some(phone) || start <= now_s {
                continue;
            }
            let earlier = best
                .as_ref()
                .and_then(|b| {
                    b.get("start")
                        .and_then(Value::as_str)
                        .and_then(time::parse)
                        .map(time::format)
                })
                .is_none_or(|b| start < b);
            if earlier {
                best = Some(a);
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(best)
}

/// A run as `GET /v1/workflow-runs` shows it.
fn run_json(r: &Run) -> Value {
    json!({
        "id": r.id,
        "workflow": r.workflow,
        "eventId": r.event_id,
        "trigger": r.origin,
        "timerKey": r.timer_key,
        "status": r.status,
        "startedAt": r.started_at,
        "updatedAt": r.updated_at,
        "finishedAt": r.finished_at,
        "nextAttemptAt": if r.status == RunStatus::Pending && r.lease_owner.is_none() { r.next_at.clone() } else { None },
        "steps": r.steps,
    })
}

/// A timer as `GET /v1/timers` shows it.
fn timer_json(t: &Timer) -> Value {
    json!({
        "key": t.key,
        "fireAt": t.fire_at,
        "workflow": t.workflow,
        "eventId": t.event_id,
        "runId": t.run_id,
        "createdAt": t.created_at,
    })
}

/// A message of the outbox as `GET /v1/notifications` shows it.
fn notification_json(n: &Notification) -> Value {
    json!({
        "id": n.id,
        "channel": n.channel,
        "direction": n.direction,
        "to": n.to,
        "subject": n.subject,
        "body": n.body,
        "workflow": n.workflow,
        "runId": n.run_id,
        "step": n.step,
        "provider": n.provider,
        "providerId": n.provider_id,
        "providerStatus": n.provider_status,
        "createdAt": n.created_at,
    })
}
