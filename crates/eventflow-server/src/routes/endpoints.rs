//! Webhook endpoints and their deliveries (docs/design.md §3.3): `/v1/endpoints`,
//! `/v1/deliveries`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use eventflow_delivery::{EndpointUrl, UrlPolicy};
use eventflow_model::filter::Filter;
use eventflow_model::id::{self, DeliveryId, EndpointId, ReplayId};
use eventflow_model::scope::Scope;
use eventflow_model::{Event, EventType, Object, TypeFilter, time};
use eventflow_store::endpoint_event_data;
use eventflow_store::{
    DeliveryQuery, DeliveryStatus, EndpointChange, EndpointConfig, EndpointRow, Ordering,
    PayloadMode, Purpose, ReplayFrom, Signing, StoredSecret, Verification, VerificationState,
};
use eventflow_webhook::{Ed25519Key, HmacSecret};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathId};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/endpoints", get(list).post(create))
        .route("/v1/endpoints/{id}", get(read).patch(update).delete(remove))
        .route("/v1/endpoints/{id}/secret", get(secret))
        .route("/v1/endpoints/{id}/secret/rotate", post(rotate))
        .route("/v1/endpoints/{id}/test", post(test_send))
        .route("/v1/endpoints/{id}/verify", post(verify))
        .route("/v1/endpoints/{id}/replay", post(replay))
        .route("/v1/endpoints/{id}/replays/{replay}", get(replay_status))
        .route("/v1/endpoints/{id}/deliveries", get(deliveries))
        .route("/v1/endpoints/{id}/events", get(endpoint_events))
        .route("/v1/deliveries/{id}", get(delivery))
        .route("/v1/deliveries/{id}/retry", post(retry))
}

/// How long the old secret keeps signing after a rotation.
pub const ROTATION_OVERLAP: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);
/// Most endpoints per tenant (each write inserts one delivery per matching
/// endpoint, in one statement).
pub const MAX_ENDPOINTS: usize = 1000;
/// Most custom headers per endpoint.
const MAX_HEADERS: usize = 20;
/// Headers a client may not set: the delivery's own.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "connection",
    "transfer-encoding",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-clinikapi-signature",
];

const FIELDS: &[&str] = &[
    "url",
    "description",
    "eventTypes",
    "filter",
    "payload",
    "ordering",
    "rateLimit",
    "headers",
    "disabled",
    "signing",
    "recipient",
    "purpose",
    "purposeText",
    "owner",
];

/// Longest `recipient`, `purposeText` or `owner`, in characters.
pub const MAX_NAME_CHARS: usize = 200;

fn not_found() -> ApiError {
    ApiError::not_found("no endpoint with that id")
}

/// An endpoint as the API shows it: what its events carry, with its whole
/// URL and its custom headers (never its secrets).
fn endpoint_json(row: &EndpointRow) -> Value {
    let Value::Object(event) = endpoint_event_data(row) else {
        return Value::Null;
    };
    let mut o = serde_json::Map::new();
    for (k, v) in event {
        match k.as_str() {
            "url" => {
                o.insert(k, json!(row.config.url));
            }
            "rateLimit" => {
                o.insert(k, v);
                o.insert("headers".into(), json!(row.config.headers));
            }
            _ => {
                o.insert(k, v);
            }
        }
    }
    Value::Object(o)
}

fn new_secret(signing: Signing, now: &str) -> StoredSecret {
    let secret = match signing {
        Signing::Hmac => HmacSecret::generate().expose(),
        Signing::Ed25519 => Ed25519Key::generate().expose(),
    };
    StoredSecret {
        secret,
        created_at: now.to_string(),
        expires_at: None,
    }
}

fn url_policy(state: &AppState) -> UrlPolicy {
    UrlPolicy {
        allow_private: state.config.allow_private_endpoints,
        https_only: state.config.production,
    }
}

/// Applies the fields present in `body` to `config` (a create starts from
/// the defaults). `null` clears an optional field.
fn apply_fields(
    state: &AppState,
    body: &Object,
    config: &mut EndpointConfig,
    disabled: &mut bool,
    signing_allowed: bool,
) -> ApiResult<()> {
    for key in body.keys() {
        if !FIELDS.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                key,
                &format!("unknown field; an endpoint has {}", FIELDS.join(", ")),
            ));
        }
    }
    let string = |name: &str, v: &Value| -> ApiResult<Option<String>> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(ApiError::invalid(name, "must be a string")),
        }
    };
    if let Some(v) = body.get("url") {
        let url = string("url", v)?.ok_or_else(|| ApiError::invalid("url", "is required"))?;
        EndpointUrl::parse(&url, url_policy(state))
            .map_err(|e| ApiError::invalid("url", &e.to_string()))?;
        config.url = url;
    }
    if let Some(v) = body.get("description") {
        let d = string("description", v)?;
        if d.as_ref().is_some_and(|d| d.chars().count() > 1000) {
            return Err(ApiError::invalid(
                "description",
                "must be at most 1000 characters",
            ));
        }
        config.description = d;
    }
    if let Some(v) = body.get("eventTypes") {
        let list: Vec<String> = match v {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ApiError::invalid("eventTypes", "must be a list of strings"))?,
            _ => return Err(ApiError::invalid("eventTypes", "must be a list of strings")),
        };
        // Each item as the type or glob itself: an empty one, or one with
        // spaces around it, is a mistake rather than nothing.
        if list.iter().any(|t| t.is_empty() || t.trim() != t) {
            return Err(ApiError::invalid(
                "eventTypes",
                "must not hold an empty type or one with spaces around it",
            ));
        }
        let filter = TypeFilter::parse_list(list.iter().map(String::as_str))
            .map_err(|e| ApiError::invalid("eventTypes", &e))?;
        for pattern in filter.patterns() {
            if !pattern.ends_with('*')
                && EventType::parse(pattern).is_none()
                && !eventflow_model::event::is_operational(pattern)
                && !eventflow_model::topics::is_topic(pattern)
            {
                return Err(ApiError::invalid(
                    "eventTypes",
                    "names an event type or topic that does not exist (GET /v1/event-types lists the types; the README, \"Clinical topics\", the topics)",
                ));
            }
        }
        config.event_types = filter.patterns().to_vec();
    }
    if let Some(v) = body.get("filter") {
        let f = string("filter", v)?;
        if let Some(f) = &f {
            Filter::compile(f, state.config.limits.cel_cost)
                .map_err(|e| ApiError::invalid("filter", &e))?;
        }
        config.filter = f;
    }
    if let Some(v) = body.get("payload") {
        config.payload = match v.as_str() {
            Some("full") => PayloadMode::Full,
            Some("thin") => PayloadMode::Thin,
            _ => return Err(ApiError::invalid("payload", "must be \"full\" or \"thin\"")),
        };
    }
    if let Some(v) = body.get("ordering") {
        config.ordering = match v.as_str() {
            Some("none") => Ordering::None,
            Some("resource") => Ordering::Resource,
            _ => {
                return Err(ApiError::invalid(
                    "ordering",
                    "must be \"none\" or \"resource\"",
                ));
            }
        };
    }
    if let Some(v) = body.get("rateLimit") {
        config.rate_limit = match v {
            Value::Null => None,
            v => match eventflow_model::validate::as_i64(v) {
                Some(n @ 1..=10_000) => Some(n as u32),
                _ => {
                    return Err(ApiError::invalid(
                        "rateLimit",
                        "must be an integer from 1 to 10000 (deliveries per second), or null",
                    ));
                }
            },
        };
    }
    if let Some(v) = body.get("headers") {
        let mut headers = std::collections::BTreeMap::new();
        match v {
            Value::Null => {}
            Value::Object(map) => {
                if map.len() > MAX_HEADERS {
                    return Err(ApiError::invalid(
                        "headers",
                        &format!("must hold at most {MAX_HEADERS} headers"),
                    ));
                }
                for (name, value) in map {
                    let field = format!("headers.{name}");
                    let lower = name.to_ascii_lowercase();
                    if axum::http::HeaderName::from_bytes(lower.as_bytes()).is_err()
                        || name.len() > 100
                    {
                        return Err(ApiError::invalid(
                            "headers",
                            "holds a name that is not a valid HTTP header name",
                        ));
                    }
                    if RESERVED_HEADERS.contains(&lower.as_str())
                        || lower.starts_with("x-eventflow-")
                    {
                        return Err(ApiError::invalid(
                            &field,
                            "is set by the delivery itself and cannot be given",
                        ));
                    }
                    let Some(value) = value.as_str() else {
                        return Err(ApiError::invalid(&field, "must be a string"));
                    };
                    if !value
                        .bytes()
                        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
                        || value.len() > 4096
                    {
                        return Err(ApiError::invalid(
                            &field,
                            "must be a valid HTTP header value (visible ASCII, at most 4096 bytes)",
                        ));
                    }
                    headers.insert(lower, value.to_string());
                }
            }
            _ => return Err(ApiError::invalid("headers", "must be an object of strings")),
        }
        config.headers = headers;
    }
    if let Some(v) = body.get("disabled") {
        *disabled = v
            .as_bool()
            .ok_or_else(|| ApiError::invalid("disabled", "must be true or false"))?;
    }
    if let Some(v) = body.get("signing") {
        let signing = match v.as_str() {
            Some("hmac") => Signing::Hmac,
            Some("ed25519") => Signing::Ed25519,
            _ => {
                return Err(ApiError::invalid(
                    "signing",
                    "must be \"hmac\" or \"ed25519\"",
                ));
            }
        };
        if !signing_allowed && signing != config.signing {
            return Err(ApiError::invalid(
                "signing",
                "cannot be changed; create a new endpoint with the other scheme",
            ));
        }
        config.signing = signing;
    }
    let name = |field: &str, v: &Value| -> ApiResult<Option<String>> {
        let s = string(field, v)?;
        if let Some(s) = &s
            && (s.trim().is_empty() || s.chars().count() > MAX_NAME_CHARS)
        {
            return Err(ApiError::invalid(
                field,
                &format!("must be 1 to {MAX_NAME_CHARS} characters, or null"),
            ));
        }
        Ok(s)
    };
    if let Some(v) = body.get("recipient") {
        config.recipient = name("recipient", v)?;
    }
    if let Some(v) = body.get("owner") {
        config.owner = name("owner", v)?;
    }
    if let Some(v) = body.get("purpose") {
        config.purpose = v.as_str().and_then(Purpose::parse).ok_or_else(|| {
            ApiError::invalid(
                "purpose",
                "must be \"treatment\", \"payment\", \"operations\" or \"other\"",
            )
        })?;
    }
    if let Some(v) = body.get("purposeText") {
        config.purpose_text = name("purposeText", v)?;
    }
    // Only `other` says what it is; a change away from it drops the text.
    if config.purpose != Purpose::Other {
        if body.get("purposeText").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(
                "purposeText",
                "is given only with \"purpose\": \"other\"",
            ));
        }
        config.purpose_text = None;
    } else if config.purpose_text.is_none() {
        return Err(ApiError::invalid(
            "purposeText",
            "is required with \"purpose\": \"other\": say what the data is for",
        ));
    }
    Ok(())
}

/// An endpoint sends the events of its `eventTypes` (all when empty): a
/// key may create or change only one whose every type it may read itself.
fn within_scopes(auth: &Auth, config: &EndpointConfig) -> ApiResult<()> {
    let filter = TypeFilter::parse_list(config.event_types.iter().map(String::as_str))
        .map_err(|e| ApiError::invalid("eventTypes", &e))?;
    auth.scopes().may_subscribe(&filter).map_err(|t| {
        ApiError::invalid(
            "eventTypes",
            &format!(
                "would send {t} events, which this key may not read; list only types within its scopes"
            ),
        )
    })
}

/// The fields of a FHIR subscription's endpoint that only its
/// `Subscription` changes.
const FHIR_MANAGED: [&str; 6] = [
    "url",
    "eventTypes",
    "filter",
    "payload",
    "headers",
    "ordering",
];

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (saved, secret) = create_endpoint(&state, &auth, body.object()?, None).await?;
    let mut out = endpoint_json(&saved);
    if let Some(secret) = secret {
        out["secret"] = json!(secret);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

/// Makes an endpoint from a `/v1` create body (and, for a FHIR
/// subscription, what its `Subscription` asked for: it is always
/// verified, its handshake being its challenge). Returns the endpoint and
/// its HMAC secret, shown once.
pub(crate) async fn create_endpoint(
    state: &AppState,
    auth: &Auth,
    body: &Object,
    fhir: Option<eventflow_store::FhirSubscription>,
) -> ApiResult<(EndpointRow, Option<String>)> {
    if !body.contains_key("url") {
        return Err(ApiError::invalid("url", "is required"));
    }
    let mut config = EndpointConfig::new(String::new());
    let mut disabled = false;
    apply_fields(state, body, &mut config, &mut disabled, true)?;
    config.fhir = fhir;
    within_scopes(auth, &config)?;
    fixed_owner(
        auth,
        &mut config,
        body.get("owner").is_some_and(|v| !v.is_null()),
        None,
    )?;
    if state.store.endpoints(auth.tenant()).await?.len() >= MAX_ENDPOINTS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorKind::Conflict,
            format!("a tenant has at most {MAX_ENDPOINTS} endpoints; delete one first"),
        ));
    }
    let now = time::format(state.clock.now());
    let secret = new_secret(config.signing, &now);
    let needs = needs_verification(state, &config);
    let row = EndpointRow {
        id: eventflow_model::id::EndpointId::fresh().into_string(),
        tenant_id: auth.tenant().to_string(),
        revision: 1,
        created_at: now.clone(),
        updated_at: now.clone(),
        disabled,
        disabled_reason: disabled.then(|| "manual".to_string()),
        config,
        secrets: vec![secret.clone()],
        last_sequence: 0,
        failure_streak: 0,
        failing_since: None,
        filter_error: None,
        verification: if needs {
            Verification::pending(&now)
        } else {
            Verification::default()
        },
        verify_at: needs.then_some(now),
    };
    let saved = state
        .store
        .change_endpoint(EndpointChange::Create(Box::new(row)))
        .await?
        .ok_or_else(ApiError::internal)?;
    if saved.verification.holds() {
        state.verify.notify_one();
    }
    let secret = (saved.config.signing == Signing::Hmac).then_some(secret.secret);
    Ok((saved, secret))
}

async fn list(State(state): State<AppState>, auth: Auth, params: Params) -> ApiResult<Json<Value>> {
    params.only(&[])?;
    let rows = state.store.endpoints(auth.tenant()).await?;
    let data: Vec<Value> = rows
        .iter()
        .filter(|r| owns(&auth, r))
        .map(|r| shown(&auth, r))
        .collect();
    Ok(Json(json!({ "data": data })))
}

/// An endpoint as the key may see it: its custom headers' values (often
/// the receiver's credentials) only with `endpoints:write`, like its secret.
fn shown(auth: &Auth, row: &EndpointRow) -> Value {
    let mut v = endpoint_json(row);
    if !auth.scopes().allows(Scope::ENDPOINTS_WRITE)
        && let Some(headers) = v.get_mut("headers").and_then(Value::as_object_mut)
    {
        for value in headers.values_mut() {
            *value = json!("(hidden: needs endpoints:write)");
        }
    }
    v
}

/// The endpoint id a path gives: an id of another kind names no endpoint.
fn endpoint_id(id: &str) -> ApiResult<EndpointId> {
    EndpointId::parse(id).map_err(|_| not_found())
}

async fn load(state: &AppState, auth: &Auth, id: &str) -> ApiResult<EndpointRow> {
    let id = endpoint_id(id)?;
    state
        .store
        .endpoint(auth.tenant(), &id)
        .await?
        .filter(|row| owns(auth, row))
        .ok_or_else(not_found)
}

/// Whether the caller may see the endpoint: any of its tenant's, or, for a
/// vendor's portal session, only those of its owner.
fn owns(auth: &Auth, row: &EndpointRow) -> bool {
    auth.owner()
        .is_none_or(|o| row.config.owner.as_deref() == Some(o))
}

async fn read(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    Ok(Json(shown(&auth, &load(&state, &auth, &id).await?)))
}

/// Saves a new state built from the current one; retried when another
/// change landed in between.
async fn save(
    state: &AppState,
    auth: &Auth,
    id: &str,
    change: impl Fn(&mut EndpointRow) -> ApiResult<()>,
) -> ApiResult<EndpointRow> {
    for _ in 0..5 {
        let before = load(state, auth, id).await?;
        let mut row = before.clone();
        change(&mut row)?;
        if row.config.filter != before.config.filter {
            row.filter_error = None;
        }
        row.revision = before.revision + 1;
        row.updated_at = time::format(state.clock.now());
        match state
            .store
            .change_endpoint(EndpointChange::Update {
                row: Box::new(row),
                expected: before.revision,
            })
            .await
        {
            Ok(Some(saved)) => return Ok(saved),
            Ok(None) => return Err(not_found()),
            Err(eventflow_store::StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        crate::error::ErrorKind::Conflict,
        "the endpoint keeps changing; try again",
    ))
}

async fn update(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    body: JsonBody,
) -> ApiResult<Json<Value>> {
    let body = body.object()?.clone();
    let now = time::format(state.clock.now());
    let saved = save(&state, &auth, &id, |row| {
        let before = row.clone();
        // A FHIR subscription's sending is what its Subscription says.
        if row.config.fhir.is_some()
            && let Some(field) = FHIR_MANAGED.iter().find(|f| body.contains_key(**f))
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                crate::error::ErrorKind::Conflict,
                "this endpoint is a FHIR subscription: change it through /fhir/Subscription",
            )
            .with_field(*field));
        }
        let mut disabled = row.disabled;
        // Both before and after: a key may not take over (point elsewhere,
        // re-enable, narrow) an endpoint that sends what it may not read.
        within_scopes(&auth, &row.config)?;
        apply_fields(&state, &body, &mut row.config, &mut disabled, false)?;
        within_scopes(&auth, &row.config)?;
        fixed_owner(
            &auth,
            &mut row.config,
            body.get("owner").is_some_and(|v| !v.is_null()),
            Some(&before.config),
        )?;
        if disabled != row.disabled {
            row.disabled = disabled;
            row.disabled_reason = disabled.then(|| "manual".to_string());
        }
        reverify(&state, &before, row, &now);
        Ok(())
    })
    .await?;
    // A challenge to send; or a FHIR subscription enabled again, whose
    // heartbeat may be due.
    if saved.verification.holds() || saved.config.fhir.is_some() {
        state.verify.notify_one();
    }
    Ok(Json(endpoint_json(&saved)))
}

/// A vendor's portal session makes and keeps endpoints of its own owner:
/// another owner in the body is a 422 (none, or null, is its own). Who
/// receives the data and why is the clinic's to say: such a session
/// cannot change them (a new endpoint's recipient is its owner).
fn fixed_owner(
    auth: &Auth,
    config: &mut EndpointConfig,
    given: bool,
    before: Option<&EndpointConfig>,
) -> ApiResult<()> {
    let Some(owner) = auth.owner() else {
        return Ok(());
    };
    let fresh;
    let before = match before {
        Some(b) => b,
        None => {
            fresh = EndpointConfig {
                recipient: Some(owner.to_string()),
                ..EndpointConfig::new(config.url.clone())
            };
            &fresh
        }
    };
    for (field, same) in [
        (
            "recipient",
            config.recipient == before.recipient || config.recipient.is_none(),
        ),
        ("purpose", config.purpose == before.purpose),
        ("purposeText", config.purpose_text == before.purpose_text),
    ] {
        if !same {
            return Err(ApiError::invalid(
                field,
                "is the clinic's to set, not a vendor's portal session's",
            ));
        }
    }
    config.recipient = before.recipient.clone();
    if given && config.owner.as_deref() != Some(owner) {
        return Err(ApiError::invalid(
            "owner",
            "is fixed for this portal session: the endpoints it manages are its owner's",
        ));
    }
    config.owner = Some(owner.to_string());
    Ok(())
}

/// What a change does to an endpoint's verification: a new URL must be
/// proved again (or, when not required, is no longer verified); an
/// endpoint switched to full payloads that needs it and is not verified is
/// challenged; one enabled again after it was disabled `unverified` gets a
/// new challenge and a new 72 hours. One that no longer needs it (switched
/// to thin, or enabled while verification is off) stops waiting.
/// Whether an endpoint must answer a challenge before it is sent
/// anything: as `endpoint_verification` says for its payload, and always
/// for a FHIR subscription (its handshake).
fn needs_verification(state: &AppState, config: &EndpointConfig) -> bool {
    config.fhir.is_some() || state.config.endpoint_verification.requires(config.payload)
}

fn reverify(state: &AppState, before: &EndpointRow, row: &mut EndpointRow, now: &str) {
    let needs = needs_verification(state, &row.config);
    let url_changed = row.config.url != before.config.url;
    let enabled_unverified =
        before.disabled && !row.disabled && before.disabled_reason.as_deref() == Some("unverified");
    let newly_needed = needs
        && !needs_verification(state, &before.config)
        && row.verification.state != VerificationState::Verified;
    let payload_changed = row.config.payload != before.config.payload;
    if needs && (url_changed || enabled_unverified || newly_needed) {
        row.verification = Verification::pending(now);
        row.verify_at = Some(now.to_string());
    } else if !needs
        && (url_changed || (row.verification.holds() && (enabled_unverified || payload_changed)))
    {
        // Not required (any more): a new URL is not verified, and what a
        // challenge held goes.
        row.verification = Verification::default();
        row.verify_at = None;
    }
}

/// `POST /v1/endpoints/{id}/verify`: sends a new challenge now. Until it
/// is answered the endpoint's deliveries wait.
async fn verify(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let now = time::format(state.clock.now());
    let saved = save(&state, &auth, &id, |row| {
        if row.disabled {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                crate::error::ErrorKind::Conflict,
                "the endpoint is disabled; enable it (PATCH {\"disabled\": false}), which sends a new challenge when it needs one",
            ));
        }
        row.verification = Verification::pending(&now);
        row.verify_at = Some(now.clone());
        Ok(())
    })
    .await?;
    state.verify.notify_one();
    Ok((StatusCode::ACCEPTED, Json(endpoint_json(&saved))))
}

async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    load(&state, &auth, &id).await?;
    state
        .store
        .change_endpoint(EndpointChange::Delete {
            tenant: auth.tenant().to_string(),
            id,
        })
        .await?
        .ok_or_else(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The secret a receiver verifies with: for HMAC the newest `whsec_`, for
/// Ed25519 the public key (the private key never leaves the server).
fn secret_json(row: &EndpointRow, now: &str) -> Value {
    let active: Vec<&StoredSecret> = row.active_secrets(now).collect();
    match row.config.signing {
        Signing::Hmac => json!({
            "secret": active.first().map(|s| s.secret.clone()),
            "previous": active.iter().skip(1).map(|s| json!({"secret": s.secret, "expiresAt": s.expires_at})).collect::<Vec<_>>(),
        }),
        Signing::Ed25519 => {
            let public = |s: &StoredSecret| {
                Ed25519Key::parse(&s.secret)
                    .ok()
                    .map(|k| k.public_key().to_string())
            };
            json!({
                "publicKey": active.first().and_then(|s| public(s)),
                "previous": active.iter().skip(1).map(|s| json!({"publicKey": public(s), "expiresAt": s.expires_at})).collect::<Vec<_>>(),
            })
        }
    }
}

async fn secret(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let row = load(&state, &auth, &id).await?;
    Ok(Json(secret_json(&row, &time::format(state.clock.now()))))
}

async fn rotate(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let now_ts = state.clock.now();
    let now = time::format(now_ts);
    let until = time::format(now_ts + ROTATION_OVERLAP);
    let saved = save(&state, &auth, &id, |row| {
        let mut kept: Vec<StoredSecret> = row.active_secrets(&now).cloned().collect();
        if let Some(current) = kept.first_mut()
            && current.expires_at.is_none()
        {
            current.expires_at = Some(until.clone());
        }
        kept.insert(0, new_secret(row.config.signing, &now));
        // At most the new and the two before it.
        kept.truncate(3);
        row.secrets = kept;
        Ok(())
    })
    .await?;
    Ok(Json(secret_json(&saved, &now)))
}

/// What a test send sends: the catalogue's example of the type (of a
/// topic, an envelope carrying it), as a new event of this tenant, now, with
/// sequence 0 (no event is numbered 0).
fn sample_event(tenant: &str, entry: &crate::catalogue::Entry, now: &str) -> ApiResult<Event> {
    let mut event: Event = crate::catalogue::example(entry)
        .and_then(|e| serde_json::from_value(e).ok())
        .ok_or_else(ApiError::internal)?;
    event.id = eventflow_model::id::EventId::fresh().into_string();
    event.sequence = 0;
    event.created_at = now.to_string();
    event.tenant_id = tenant.to_string();
    Ok(event)
}

async fn test_send(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    raw: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    // The body is optional: none sends an appointment.created.
    let body: Option<Value> = if raw.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(crate::extract::parse_json(&raw)?)
    };
    let requested = match body.as_ref() {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| k.as_str() != "type") {
                return Err(ApiError::invalid(
                    k,
                    "unknown field; a test send takes type",
                ));
            }
            // Not a string: a name of nothing.
            o.get("type").map(|t| t.as_str().unwrap_or_default())
        }
        Some(_) => return Err(ApiError::invalid("body", "must be a JSON object")),
    };
    let entry =
        crate::catalogue::entry(requested.unwrap_or("appointment.created")).ok_or_else(|| {
            ApiError::invalid(
                "type",
                "must be an event type or topic (GET /v1/event-types lists them)",
            )
        })?;
    let row = load(&state, &auth, &id).await?;
    if row.config.fhir.is_some() {
        // A notification numbers real events: a made-up one would break
        // the subscription's count.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorKind::Conflict,
            "this endpoint is a FHIR subscription: its handshake is its test (POST /v1/endpoints/{id}/verify sends it again)",
        ));
    }
    let event = sample_event(auth.tenant(), &entry, &time::format(state.clock.now()))?;
    let (attempt, _, _) = eventflow_delivery::dispatcher::send(
        &state.http,
        state.config.allow_private_endpoints,
        &*state.clock,
        &row,
        &event,
        0,
        1,
    )
    .await;
    let mut out = serde_json::to_value(&attempt).unwrap_or_default();
    out["eventId"] = json!(event.id);
    out["eventType"] = json!(event.event_type);
    Ok(Json(out))
}

async fn replay(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    body: JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = body.object()?;
    if let Some(k) = body
        .keys()
        .find(|k| !["after", "since"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            k,
            "unknown field; a replay takes after or since",
        ));
    }
    let from = match (body.get("after"), body.get("since")) {
        (Some(a), None) => ReplayFrom::After(
            eventflow_model::validate::as_i64(a)
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    ApiError::invalid("after", "must be a sequence number (0 or more)")
                })?,
        ),
        (None, Some(s)) => {
            let at = s
                .as_str()
                .and_then(time::parse)
                .ok_or_else(|| ApiError::invalid("since", "must be an RFC 3339 time"))?;
            ReplayFrom::Since(time::format(at))
        }
        _ => {
            return Err(ApiError::invalid(
                "after",
                "give exactly one of after (a sequence) or since (a time)",
            ));
        }
    };
    load(&state, &auth, &id).await?;
    let id = endpoint_id(&id)?;
    let replay = state
        .store
        .replay(auth.tenant(), &id, from)
        .await?
        .ok_or_else(not_found)?;
    if replay.running() {
        state.replays.notify_one();
    }
    Ok((StatusCode::ACCEPTED, Json(json!(replay))))
}

async fn replay_status(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, replay)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::not_found("no replay with that id");
    let (Ok(ep), Ok(replay)) = (EndpointId::parse(&id), ReplayId::parse(&replay)) else {
        return Err(not_found());
    };
    load(&state, &auth, &id).await.map_err(|_| not_found())?;
    let id = ep;
    let r = state
        .store
        .get_replay(auth.tenant(), &id, &replay)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(json!(r)))
}

async fn deliveries(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    params: Params,
) -> ApiResult<Json<Value>> {
    params.only(&["status", "limit", "cursor"])?;
    let status = match params.get("status") {
        None => None,
        Some(s) => Some(
            s.parse::<DeliveryStatus>()
                .map_err(|_| ApiError::invalid("status", "must be pending, succeeded or failed"))?,
        ),
    };
    let cursor = match params.get("cursor") {
        Some(c) if !id::is_well_formed(c) => {
            return Err(ApiError::invalid("cursor", "must be a delivery id"));
        }
        c => c.map(str::to_string),
    };
    load(&state, &auth, &id).await?;
    let id = endpoint_id(&id)?;
    let q = DeliveryQuery {
        status,
        limit: params.int("limit", 100, 1, 1000)? as u32,
        cursor,
    };
    let (mut data, next) = state.store.deliveries(auth.tenant(), &id, &q).await?;
    // Deliveries of events the key may not see are left out (the cursor
    // still pages past them).
    data.retain(|d| auth.scopes().sees(&d.event_type));
    Ok(Json(json!({ "data": data, "nextCursor": next })))
}

async fn endpoint_events(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    params: Params,
) -> ApiResult<Json<Value>> {
    params.only(&["after", "limit"])?;
    let after = params.int("after", 0, 0, i64::MAX)?;
    let limit = params.int("limit", 100, 1, 1000)? as u32;
    load(&state, &auth, &id).await?;
    let id = endpoint_id(&id)?;
    let found = state
        .store
        .endpoint_events(auth.tenant(), &id, after, limit)
        .await?;
    let next = found.last().map(|(n, _)| *n).unwrap_or(after);
    let data: Vec<Value> = found
        .into_iter()
        .filter(|(_, e)| auth.scopes().sees(&e.event_type))
        .map(|(n, e)| {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            v["endpointSequence"] = json!(n);
            v
        })
        .collect();
    Ok(Json(json!({ "data": data, "nextAfter": next })))
}

/// The delivery id a path gives: an id of another kind names no delivery.
fn delivery_id(id: &str) -> ApiResult<DeliveryId> {
    DeliveryId::parse(id).map_err(|_| ApiError::not_found("no delivery with that id"))
}

/// A delivery of the tenant of an event the key may see; 404 otherwise.
async fn visible_delivery(
    state: &AppState,
    auth: &Auth,
    id: &DeliveryId,
) -> ApiResult<eventflow_store::Delivery> {
    let d = state
        .store
        .delivery(auth.tenant(), id)
        .await?
        .filter(|d| auth.scopes().sees(&d.event_type))
        .ok_or_else(|| ApiError::not_found("no delivery with that id"))?;
    if auth.owner().is_some() {
        load(state, auth, &d.endpoint_id)
            .await
            .map_err(|_| ApiError::not_found("no delivery with that id"))?;
    }
    Ok(d)
}

async fn delivery(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let id = delivery_id(&id)?;
    let d = visible_delivery(&state, &auth, &id).await?;
    Ok(Json(serde_json::to_value(d).unwrap_or_default()))
}

async fn retry(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = delivery_id(&id)?;
    visible_delivery(&state, &auth, &id).await?;
    let d = state
        .store
        .retry_delivery(auth.tenant(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("no delivery with that id"))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(d).unwrap_or_default()),
    ))
}
