//! An organisation's member clinics (README, "Clinic networks"): list,
//! create a member clinic with its first key, end a membership. Only an
//! organisation key reading its network (no `Eventflow-Clinic`) has them: to
//! any other caller they do not exist.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use eventflow_model::id::TenantId;
use eventflow_store::{Clinic, NetworkChange};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Auth, generate_key, hash_key};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathId};

/// The longest clinic name, in characters (as `tenants create`'s).
pub const MAX_NAME_CHARS: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/clinics", get(list).post(create))
        .route("/v1/clinics/{id}", delete(remove))
}

/// The organisation of the caller, or `404`: a clinic's key (or an
/// organisation key acting on one clinic) has no clinics.
fn organisation(auth: &Auth) -> ApiResult<&TenantId> {
    let tenant = auth.tenant();
    if tenant.is_organisation() {
        Ok(tenant)
    } else {
        Err(ApiError::not_found(
            "no organisation: /v1/clinics takes an organisation key, without Eventflow-Clinic",
        ))
    }
}

/// `GET /v1/clinics`.
async fn list(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let org = organisation(&auth)?;
    let clinics: Vec<Clinic> = state.store.clinics(org).await?;
    Ok(Json(json!({ "data": clinics })))
}

/// `POST /v1/clinics {"name"}`: a new member clinic and its first key (every
/// scope), shown only in this answer.
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let org = organisation(&auth)?.clone();
    let body = body.object_of(&["name"])?;
    let name = match body.get("name") {
        Some(Value::String(n)) => {
            let n = n.trim();
            if n.is_empty() || n.chars().count() > MAX_NAME_CHARS {
                return Err(ApiError::invalid("name", "must be 1 to 100 characters"));
            }
            n.to_string()
        }
        Some(_) => return Err(ApiError::invalid("name", "must be a string")),
        None => return Err(ApiError::invalid("name", "is required")),
    };
    let key = generate_key();
    let done = state
        .store
        .change_network(NetworkChange::CreateClinic {
            org,
            name,
            key_hash: hash_key(&key),
            key_name: "clinics create".into(),
            max_clinics: state.config.limits.clinics_per_organisation,
        })
        .await?;
    let clinic = done.clinic.ok_or_else(ApiError::internal)?;
    let mut out = serde_json::to_value(&clinic).map_err(|_| ApiError::internal())?;
    out["apiKey"] = json!(key);
    Ok((StatusCode::CREATED, Json(out)))
}

/// `DELETE /v1/clinics/{id}`: the clinic leaves; it and its data stay. Its
/// events are the network's no more from its next write on.
async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    let org = organisation(&auth)?.clone();
    let not_member = || ApiError::not_found(format!("no member clinic with id {id}"));
    let clinic = TenantId::parse(&id).map_err(|_| not_member())?;
    let done = state
        .store
        .change_network(NetworkChange::RemoveClinic { org, clinic })
        .await?;
    match done.clinic {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(not_member()),
    }
}
