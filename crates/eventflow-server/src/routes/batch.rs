//! `POST /v1/batch`: up to 1,000 creates, patches and deletes, applied all or
//! nothing in one transaction.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use eventflow_model::ResourceType;
use eventflow_store::{Op, WriteKind, WriteRequest};
use serde_json::Value;

use super::records::{idempotency, write_response};
use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;

/// Most operations in one batch.
pub const MAX_OPERATIONS: usize = 1000;

/// `max_body`: `limits.max_batch_bytes`.
pub fn router(max_body: usize) -> Router<AppState> {
    Router::new().route(
        "/v1/batch",
        post(batch).layer(DefaultBodyLimit::max(max_body)),
    )
}

fn op_error(index: usize, field: &str, message: &str) -> ApiError {
    let mut e = ApiError::invalid(&format!("operations[{index}].{field}"), message);
    e.index = Some(index);
    e
}

/// Parses one `{"method", "path", "body"?, "ifMatch"?}`.
pub fn parse_operation(index: usize, v: &Value) -> ApiResult<Op> {
    let Some(o) = v.as_object() else {
        let mut e = ApiError::invalid(&format!("operations[{index}]"), "must be an object");
        e.index = Some(index);
        return Err(e);
    };
    for key in o.keys() {
        if !["method", "path", "body", "ifMatch"].contains(&key.as_str()) {
            return Err(op_error(index, key, "unknown field"));
        }
    }
    let method = o
        .get("method")
        .and_then(Value::as_str)
        .ok_or_else(|| op_error(index, "method", "must be POST, PATCH or DELETE"))?;
    let path = o
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| op_error(index, "path", "is required, e.g. /v1/patients"))?;
    let rest = path
        .strip_prefix("/v1/")
        .ok_or_else(|| op_error(index, "path", "must start with /v1/"))?;
    let mut parts = rest.split('/');
    let rt = parts
        .next()
        .and_then(ResourceType::from_collection)
        .ok_or_else(|| {
            op_error(
                index,
                "path",
                "must name a record collection such as /v1/patients",
            )
        })?;
    let id = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
    if parts.next().is_some() {
        return Err(op_error(index, "path", "has too many segments"));
    }
    let if_match = match o.get("ifMatch") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            eventflow_model::validate::as_i64(&Value::Number(n.clone()))
                .ok_or_else(|| op_error(index, "ifMatch", "must be a record version"))?,
        ),
        Some(Value::String(s)) => Some(
            super::records::parse_version(s)
                .ok_or_else(|| op_error(index, "ifMatch", "must be a record version"))?,
        ),
        Some(_) => return Err(op_error(index, "ifMatch", "must be a record version")),
    };
    let body = o.get("body").cloned().unwrap_or(Value::Null);
    match (method, id) {
        ("POST", None) => Ok(Op::Create { rt, body }),
        ("PATCH", Some(id)) => Ok(Op::Patch {
            rt,
            id,
            patch: body,
            if_match,
        }),
        ("DELETE", Some(id)) => Ok(Op::Delete { rt, id, if_match }),
        ("POST", Some(_)) => Err(op_error(
            index,
            "path",
            "POST takes a collection path, without an id",
        )),
        ("PATCH" | "DELETE", None) => Err(op_error(
            index,
            "path",
            "PATCH and DELETE take a record path, /v1/{collection}/{id}",
        )),
        _ => Err(op_error(index, "method", "must be POST, PATCH or DELETE")),
    }
}

async fn batch(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    let Some(top) = body.value.as_object() else {
        return Err(ApiError::invalid(
            "body",
            "must be a JSON object with operations",
        ));
    };
    if let Some(key) = top.keys().find(|k| *k != "operations") {
        return Err(ApiError::invalid(key, "unknown field"));
    }
    let ops = top
        .get("operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("operations", "is required: a list of operations"))?;
    if ops.is_empty() || ops.len() > MAX_OPERATIONS {
        return Err(ApiError::invalid(
            "operations",
            "must hold from 1 to 1000 operations",
        ));
    }
    let ops = ops
        .iter()
        .enumerate()
        .map(|(i, v)| parse_operation(i, v))
        .collect::<ApiResult<Vec<_>>>()?;
    // Each operation needs its collection's write scope; nothing is written
    // when one lacks it.
    for (i, op) in ops.iter().enumerate() {
        let (Op::Create { rt, .. } | Op::Patch { rt, .. } | Op::Delete { rt, .. }) = op;
        auth.require(eventflow_model::scope::Scope::write(*rt))
            .map_err(|mut e| {
                e.index = Some(i);
                e
            })?;
    }
    let idempotency = idempotency(&headers, "/v1/batch", &body.value)?;
    let out = state
        .store
        .write(WriteRequest {
            tenant: auth.tenant().to_string(),
            actor: auth.actor(),
            kind: WriteKind::Batch(ops),
            idempotency,
        })
        .await?;
    Ok(write_response(out, None))
}
