//! `GET /v1/workflows`: the workflow files of the workflows directory, each
//! loaded or refused with its reason (DESIGN.md §4, §9).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Auth;
use crate::extract::Params;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/workflows", get(list))
}

/// The load status of each file, as listed.
pub fn statuses(snapshot: &eventflow_automations::Snapshot) -> Vec<Value> {
    snapshot
        .loaded
        .iter()
        .map(|l| match &l.result {
            Ok(w) => json!({"name": w.name, "file": l.file, "status": "loaded", "error": null}),
            Err(e) => json!({
                "name": l.file.rsplit_once('.').map(|(stem, _)| stem).unwrap_or(&l.file),
                "file": l.file,
                "status": "error",
                "error": e.message,
            }),
        })
        .collect()
}

async fn list(
    State(state): State<AppState>,
    _auth: Auth,
    params: Params,
) -> crate::error::ApiResult<Json<Value>> {
    params.only(&[])?;
    Ok(Json(
        json!({ "data": statuses(&state.workflows.snapshot()) }),
    ))
}
