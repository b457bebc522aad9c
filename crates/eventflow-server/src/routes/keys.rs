//! API keys (README, "Keys and scopes"): create (the secret is shown once),
//! list, read, revoke, rotate with a grace period. Every route needs
//! `keys:manage`, and a key hands on, rotates or revokes only scopes it
//! holds itself.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use eventflow_model::id::KeyId;
use eventflow_model::scope::Scopes;
use eventflow_store::{ApiKey, KeyChange, Secret};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Auth, generate_key, hash_key};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathId};

/// The longest grace period of a rotated secret: 30 days.
pub const MAX_GRACE_SECONDS: i64 = 30 * 24 * 3600;
/// The longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/api-keys", get(list).post(create))
        .route("/v1/api-keys/{id}", get(read).delete(revoke))
        .route("/v1/api-keys/{id}/rotate", post(rotate))
}

/// A new secret, and what is stored and shown of it.
fn new_secret() -> (String, Secret) {
    let key = generate_key();
    let prefix = key["efk_".len()..].chars().take(8).collect::<String>();
    let secret = Secret {
        hash: hash_key(&key),
        prefix,
    };
    (key, secret)
}

/// `403` naming the first of `wanted` the caller does not hold.
fn within(auth: &Auth, wanted: &Scopes) -> ApiResult<()> {
    auth.scopes()
        .covers(wanted)
        .map_err(|missing| ApiError::forbidden(&missing))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no API key with id {id}"))
}

/// `POST /v1/api-keys {"name", "scopes", "expiresAt"?}`.
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = body.object_of(&["name", "scopes", "expiresAt"])?;
    let name = match body.get("name") {
        Some(Value::String(n)) if !n.is_empty() && n.chars().count() <= MAX_NAME_CHARS => n.clone(),
        Some(Value::String(_)) => {
            return Err(ApiError::invalid("name", "must be 1 to 100 characters"));
        }
        Some(_) => return Err(ApiError::invalid("name", "must be a string")),
        None => return Err(ApiError::invalid("name", "is required")),
    };
    let names = match body.get("scopes") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<&str>>>()
            .ok_or_else(|| ApiError::invalid("scopes", "must be a list of scope names"))?,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid("scopes", "must list at least one scope"));
        }
        Some(_) => return Err(ApiError::invalid("scopes", "must be a list of scope names")),
        None => return Err(ApiError::invalid("scopes", "is required")),
    };
    let scopes = Scopes::parse(names).map_err(|e| ApiError::invalid("scopes", &e))?;
    let expires_at = match body.get("expiresAt") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let at = eventflow_model::time::parse(s).ok_or_else(|| {
                ApiError::invalid("expiresAt", "must be an RFC 3339 date-time with an offset")
            })?;
            if at <= state.clock.now() {
                return Err(ApiError::invalid("expiresAt", "must be in the future"));
            }
            Some(eventflow_model::time::format(at))
        }
        Some(_) => return Err(ApiError::invalid("expiresAt", "must be a string")),
    };
    within(&auth, &scopes)?;
    // A key made by a key that expires expires no later: revoking or
    // outliving a leaked key must not leave keys it made behind for good.
    let expires_at = match (auth.0.valid_until, expires_at) {
        (Some(limit), None) => Some(eventflow_model::time::format(limit)),
        (Some(limit), Some(at)) if eventflow_model::time::parse(&at).is_some_and(|t| t > limit) => {
            return Err(ApiError::invalid(
                "expiresAt",
                "must not be later than the expiry of the key making it",
            ));
        }
        (_, at) => at,
    };
    let (key, secret) = new_secret();
    let created = state
        .store
        .change_key(KeyChange::Create {
            tenant: auth.tenant().to_string(),
            actor: auth.key_id().to_string(),
            name,
            scopes,
            secret,
            expires_at,
            max_keys: state.config.limits.keys_per_tenant,
        })
        .await?
        .ok_or_else(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(with_secret(&created, &key))))
}

fn with_secret(k: &ApiKey, key: &str) -> Value {
    let mut v = json!(k);
    v["key"] = json!(key);
    v
}

/// `GET /v1/api-keys`: the live keys, oldest first, without secrets.
async fn list(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let keys = state.store.api_keys(auth.tenant()).await?;
    Ok(Json(json!({ "data": keys })))
}

/// `GET /v1/api-keys/{id}`.
async fn read(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<ApiKey>> {
    let Ok(key) = KeyId::parse(&id) else {
        return Err(not_found(&id));
    };
    state
        .store
        .api_key(auth.tenant(), &key)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// A live key of the tenant whose scopes the caller holds all of.
async fn load_within(state: &AppState, auth: &Auth, id: &str) -> ApiResult<ApiKey> {
    let Ok(key_id) = KeyId::parse(id) else {
        return Err(not_found(id));
    };
    let key = state
        .store
        .api_key(auth.tenant(), &key_id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let scopes =
        Scopes::parse(key.scopes.iter().map(String::as_str)).map_err(|_| ApiError::internal())?;
    within(auth, &scopes)?;
    Ok(key)
}

/// `DELETE /v1/api-keys/{id}`: the key is `401` on every node at once.
async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    load_within(&state, &auth, &id).await?;
    state
        .store
        .change_key(KeyChange::Revoke {
            tenant: auth.tenant().to_string(),
            actor: auth.key_id().to_string(),
            id: id.clone(),
        })
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/api-keys/{id}/rotate {"graceSeconds"?}`: a new secret for the
/// same key; the old one works for `graceSeconds` more (default 0).
async fn rotate(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    body: Option<JsonBody>,
) -> ApiResult<Json<Value>> {
    let grace = match body.as_ref().filter(|b| !b.value.is_null()) {
        Some(body) => {
            let body = body.object_of(&["graceSeconds"])?;
            match body.get("graceSeconds") {
                None | Some(Value::Null) => 0,
                Some(v) => eventflow_model::validate::as_i64(v)
                    .filter(|g| (0..=MAX_GRACE_SECONDS).contains(g))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "graceSeconds",
                            &format!(
                                "must be a whole number of seconds from 0 to {MAX_GRACE_SECONDS}"
                            ),
                        )
                    })?,
            }
        }
        None => 0,
    };
    load_within(&state, &auth, &id).await?;
    let grace_until = (grace > 0).then(|| {
        eventflow_model::time::format(state.clock.now() + jiff::SignedDuration::from_secs(grace))
    });
    let (key, secret) = new_secret();
    let rotated = state
        .store
        .change_key(KeyChange::Rotate {
            tenant: auth.tenant().to_string(),
            actor: auth.key_id().to_string(),
            id: id.clone(),
            secret,
            grace_until,
        })
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(with_secret(&rotated, &key)))
}
