//! `/v1/workflows`: the workflows a tenant runs, each loaded or refused with
//! its reason (docs/design.md §4, §9), and the tenant's own workflows created,
//! replaced and deleted.
//!
//! Two kinds of file: those of the workflows directory itself run for every
//! tenant and are the operator's (edit the files); those the API writes go
//! to the tenant's subdirectory (`<workflows_dir>/<tenantId>/<name>.yaml`)
//! and run for that tenant only, so one tenant's key can never change what
//! runs on another tenant's data. The directory is watched either way.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::Params;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/workflows", get(list).post(create))
        .route(
            "/v1/workflows/{name}",
            get(read).put(replace).delete(remove),
        )
}

fn status(l: &eventflow_automations::Loaded) -> Value {
    let scope = if l.tenant.is_some() {
        "tenant"
    } else {
        "server"
    };
    match &l.result {
        Ok(w) => json!({
            "name": w.name, "file": l.file, "status": "loaded", "error": null, "scope": scope,
            "on": w.on.patterns(), "if": w.condition_source,
        }),
        Err(e) => json!({
            "name": l.file.rsplit_once('.').map(|(stem, _)| stem).unwrap_or(&l.file),
            "file": l.file,
            "status": "error",
            "error": e.message,
            "scope": scope,
        }),
    }
}

/// The load status of each file a tenant sees, as listed.
pub fn statuses(snapshot: &eventflow_automations::Snapshot, tenant: &str) -> Vec<Value> {
    snapshot.for_tenant(tenant).map(status).collect()
}

async fn list(State(state): State<AppState>, auth: Auth, params: Params) -> ApiResult<Json<Value>> {
    params.only(&[])?;
    let mut data = statuses(&state.workflows.snapshot(), auth.tenant());
    add_condition_errors(&state, auth.tenant(), &mut data).await?;
    Ok(Json(json!({ "data": data })))
}

/// Sets each loaded workflow's `conditionError`: why its `if` last ran out
/// of its cost budget on one of the tenant's events, while the condition is
/// still the one that did (`null` otherwise).
async fn add_condition_errors(
    state: &AppState,
    tenant: &eventflow_model::id::TenantId,
    list: &mut [Value],
) -> ApiResult<()> {
    let errors = state.store.condition_errors(tenant).await?;
    for w in list.iter_mut().filter(|w| w["status"] == "loaded") {
        let error = errors
            .iter()
            .find(|e| w["name"] == e.workflow.as_str() && w["if"] == e.condition.as_str())
            .map(|e| json!(e.error));
        w["conditionError"] = error.unwrap_or(Value::Null);
    }
    Ok(())
}

fn entry(state: &AppState, tenant: &str, name: &str) -> Option<Value> {
    let snapshot = state.workflows.snapshot();
    snapshot
        .for_tenant(tenant)
        .find(|l| status(l)["name"] == name)
        .map(status)
}

async fn read(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let Some(mut e) = entry(&state, auth.tenant(), &name) else {
        return Err(ApiError::not_found("no such workflow"));
    };
    add_condition_errors(&state, auth.tenant(), std::slice::from_mut(&mut e)).await?;
    if e["scope"] == "tenant" {
        let path = tenant_dir(&state, auth.tenant()).join(format!("{name}.yaml"));
        if let Ok(text) = std::fs::read_to_string(path) {
            e["source"] = json!(text);
        }
    }
    Ok(Json(e))
}

fn tenant_dir(state: &AppState, tenant: &str) -> std::path::PathBuf {
    state.workflows.dir().join(tenant)
}

/// Parses a workflow sent as YAML (or JSON, which is YAML too).
fn parse_body(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    file: &str,
) -> ApiResult<eventflow_automations::Workflow> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/yaml");
    let ok = ["yaml", "json", "text/plain"]
        .iter()
        .any(|t| ct.contains(t));
    if !ok {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            crate::error::ErrorKind::UnsupportedMediaType,
            "send the workflow as application/yaml (or application/json)",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the body is not UTF-8 text"))?;
    eventflow_automations::workflow::parse_with(file, text, state.workflows.checks()).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            crate::error::ErrorKind::ValidationError,
            e.message,
        )
        .with_field(&e.at)
    })
}

/// Writes the tenant's file durably and reloads: a temporary file of its
/// own (concurrent writes never share one), fsynced, renamed over the
/// workflow's file, and the directory fsynced, all before the answer.
fn save_file(state: &AppState, tenant: &str, name: &str, body: &Bytes) -> ApiResult<()> {
    use std::io::Write;
    let dir = tenant_dir(state, tenant);
    let created = !dir.is_dir();
    std::fs::create_dir_all(&dir).map_err(write_failed)?;
    if created {
        // The new subdirectory's entry in the workflows directory.
        sync_dir(state.workflows.dir()).map_err(write_failed)?;
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(write_failed)?;
    tmp.write_all(body).map_err(write_failed)?;
    tmp.as_file().sync_all().map_err(write_failed)?;
    tmp.persist(dir.join(format!("{name}.yaml")))
        .map_err(|e| write_failed(e.error))?;
    sync_dir(&dir).map_err(write_failed)?;
    Ok(())
}

/// [`save_file`] and the reload, off the async workers (fsync waits for the
/// disk).
async fn save(state: &AppState, tenant: &str, name: &str, body: &Bytes) -> ApiResult<()> {
    let (state, tenant, name, body) = (
        state.clone(),
        tenant.to_string(),
        name.to_string(),
        body.clone(),
    );
    tokio::task::spawn_blocking(move || {
        save_file(&state, &tenant, &name, &body)?;
        let path = tenant_dir(&state, &tenant).join(format!("{name}.yaml"));
        state.workflows.reload(Some(&path));
        Ok(())
    })
    .await
    .map_err(|_| write_failed(std::io::Error::other("the write task failed")))?
}

fn write_failed(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "could not write a workflow file");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        crate::error::ErrorKind::InternalError,
        "the workflow file could not be written (is workflows_dir writable?)",
    )
}

/// Makes a directory's entries (a file renamed in, one removed) durable.
fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn check_scope(state: &AppState, tenant: &str, name: &str) -> ApiResult<bool> {
    match entry(state, tenant, name) {
        Some(e) if e["scope"] == "server" => Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorKind::Conflict,
            format!(
                "{name} is a workflow of the server's workflows directory; change its file there"
            ),
        )),
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let w = parse_body(&state, &headers, &body, "workflow")?;
    if check_scope(&state, auth.tenant(), &w.name)? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            crate::error::ErrorKind::Conflict,
            format!(
                "a workflow named {} exists; PUT /v1/workflows/{} replaces it",
                w.name, w.name
            ),
        ));
    }
    save(&state, auth.tenant(), &w.name, &body).await?;
    let e = entry(&state, auth.tenant(), &w.name).unwrap_or(Value::Null);
    Ok((StatusCode::CREATED, Json(e)))
}

async fn replace(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let w = parse_body(&state, &headers, &body, &format!("{name}.yaml"))?;
    if w.name != name {
        return Err(ApiError::invalid(
            "name",
            &format!("must be {name}, the name in the path"),
        ));
    }
    let existed = check_scope(&state, auth.tenant(), &name)?;
    save(&state, auth.tenant(), &name, &body).await?;
    let e = entry(&state, auth.tenant(), &name).unwrap_or(Value::Null);
    Ok((
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        Json(e),
    ))
}

async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if !check_scope(&state, auth.tenant(), &name)? {
        return Err(ApiError::not_found("no such workflow"));
    }
    let dir = tenant_dir(&state, auth.tenant());
    let tenant = auth.tenant().to_string();
    let st = state.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let mut removed = false;
        for ext in ["yaml", "yml"] {
            removed |= std::fs::remove_file(dir.join(format!("{name}.{ext}"))).is_ok();
        }
        if !removed {
            // Listed under another file name: find it by the name inside.
            let snapshot = st.workflows.snapshot();
            if let Some(l) = snapshot
                .for_tenant(&tenant)
                .find(|l| l.tenant.is_some() && status(l)["name"] == name)
            {
                removed = std::fs::remove_file(dir.join(&l.file)).is_ok();
            }
        }
        if removed {
            sync_dir(&dir).map_err(write_failed)?;
        }
        st.workflows.reload(None);
        Ok::<bool, ApiError>(removed)
    })
    .await
    .map_err(|_| write_failed(std::io::Error::other("the delete task failed")))??;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such workflow"))
    }
}
