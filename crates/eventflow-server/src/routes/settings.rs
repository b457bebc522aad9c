//! The tenant's settings: `/v1/settings` (scope `*`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use eventflow_store::{PayloadMode, TenantSettings};
use serde_json::Value;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/settings", get(read).patch(change))
}

async fn read(State(state): State<AppState>, auth: Auth, params: Params) -> ApiResult<Json<Value>> {
    params.only(&[])?;
    let s = state.store.settings(auth.tenant()).await?;
    Ok(Json(serde_json::to_value(s).unwrap_or_default()))
}

async fn change(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody,
) -> ApiResult<Json<Value>> {
    let body = body.object()?;
    if let Some(key) = body.keys().find(|k| k.as_str() != "maxPayload") {
        return Err(ApiError::invalid(
            key,
            "unknown field; the settings are maxPayload",
        ));
    }
    let mut to = state.store.settings(auth.tenant()).await?;
    if let Some(v) = body.get("maxPayload") {
        to = TenantSettings {
            max_payload: match v.as_str() {
                Some("full") => PayloadMode::Full,
                Some("thin") => PayloadMode::Thin,
                _ => {
                    return Err(ApiError::invalid(
                        "maxPayload",
                        "must be \"full\" or \"thin\"",
                    ));
                }
            },
        };
    }
    let now = state.store.change_settings(auth.tenant(), to).await?;
    Ok(Json(serde_json::to_value(now).unwrap_or_default()))
}
