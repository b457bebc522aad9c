//! `GET /v1/audit-log`: who read or changed which record, when.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use eventflow_model::ResourceType;
use eventflow_store::AuditQuery;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::Params;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/audit-log", get(list))
}

async fn list(State(state): State<AppState>, auth: Auth, params: Params) -> ApiResult<Json<Value>> {
    params.only(&["resourceType", "resourceId", "limit", "cursor"])?;
    let resource_type = match params.get("resourceType") {
        Some(t) => Some(
            t.parse::<ResourceType>()
                .map_err(|_| {
                    ApiError::invalid("resourceType", "must be a record type such as patient")
                })?
                .name()
                .to_string(),
        ),
        None => None,
    };
    // An id that cannot be one is refused before it reaches the database.
    let id_param = |name: &str| match params.get(name) {
        Some(v) if !eventflow_model::id::is_well_formed(v) => {
            Err(ApiError::invalid(name, "must be an id such as pat_…"))
        }
        v => Ok(v.map(str::to_string)),
    };
    let q = AuditQuery {
        resource_type,
        resource_id: id_param("resourceId")?,
        limit: params.int("limit", 100, 1, 1000)? as u32,
        cursor: id_param("cursor")?,
    };
    let page = state.store.audit_log(auth.tenant(), &q).await?;
    Ok(Json(
        json!({"data": page.data, "nextCursor": page.next_cursor}),
    ))
}
