//! `/v1/{collection}` and `/v1/{collection}/{id}` for the ten record types:
//! create, read with `include`, list, merge patch, delete (docs/design.md §3.1).

use axum::Router;
use axum::extract::State;
use axum::http::header::{ETAG, IF_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use eventflow_model::resource::FieldKind;
use eventflow_model::{Object, ResourceType, time};
use eventflow_store::{
    AuditEntry, Idempotency, ListQuery, Op, WriteKind, WriteOutcome, WriteRequest,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathId};

pub fn router() -> Router<AppState> {
    let mut router = Router::new();
    for rt in ResourceType::ALL {
        let collection = format!("/v1/{}", rt.collection());
        let item = format!("{collection}/{{id}}");
        router = router
            .route(
                &collection,
                post(
                    move |s: State<AppState>, a: Auth, h: HeaderMap, b: JsonBody| {
                        create(s, a, h, b, rt)
                    },
                )
                .get(move |s: State<AppState>, a: Auth, p: Params| list(s, a, p, rt)),
            )
            .route(
                &item,
                get(move |s: State<AppState>, a: Auth, id: PathId, p: Params| {
                    read(s, a, id, p, rt)
                })
                .patch(
                    move |s: State<AppState>, a: Auth, id: PathId, h: HeaderMap, b: JsonBody| {
                        patch(s, a, id, h, b, rt)
                    },
                )
                .delete(
                    move |s: State<AppState>, a: Auth, id: PathId, h: HeaderMap| {
                        delete(s, a, id, h, rt)
                    },
                ),
            );
    }
    router
}

/// Reads `Idempotency-Key` and fingerprints the request it came with.
pub fn idempotency(
    headers: &HeaderMap,
    path: &str,
    body: &Value,
) -> ApiResult<Option<Idempotency>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters")
                .with_field("Idempotency-Key")
        })?;
    let mut hasher = Sha256::new();
    hasher.update(b"POST ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    let mut canonical = String::new();
    canonical_json(body, &mut canonical);
    hasher.update(canonical.as_bytes());
    let fingerprint = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Some(Idempotency {
        key: key.to_string(),
        fingerprint,
    }))
}

/// Writes `v` as JSON with object members sorted by name, so that the same
/// body with its members in another order fingerprints the same.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Parses `If-Match`: `3`, `"3"` or `W/"3"`; `*` matches any version.
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    parse_version(text).map(Some).ok_or_else(|| {
        ApiError::bad_request("If-Match must be a record version such as \"3\"")
            .with_field("If-Match")
    })
}

/// The longest `mrn` a list filters on, in characters.
pub const MAX_MRN_CHARS: usize = 200;

/// The pattern of a version in `If-Match` (and a batch operation's
/// `ifMatch`), as the OpenAPI document states it.
pub const VERSION_PATTERN: &str = r#"^([0-9]{1,18}|"[0-9]{1,18}"|W/"[0-9]{1,18}")$"#;

/// A record version as `If-Match` gives it: `3`, `"3"` or `W/"3"`, and
/// nothing else (no sign, no stray quotes).
pub fn parse_version(text: &str) -> Option<i64> {
    let bare = text.strip_prefix("W/").unwrap_or(text);
    let digits = match bare.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None if bare.len() == text.len() => bare,
        None => return None,
    };
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The HTTP response of a write: status, body, `ETag`, `Location` for a
/// create, `Idempotent-Replayed` for a stored response.
pub fn write_response(out: WriteOutcome, collection: Option<&str>) -> Response {
    let status = StatusCode::from_u16(out.status).unwrap_or(StatusCode::OK);
    let mut headers = HeaderMap::new();
    if let Some(version) = out.body.get("version").and_then(Value::as_i64) {
        headers.insert(ETAG, etag(version));
    }
    if status == StatusCode::CREATED
        && let (Some(c), Some(id)) = (collection, out.body.get("id").and_then(Value::as_str))
        && let Ok(v) = HeaderValue::from_str(&format!("/v1/{c}/{id}"))
    {
        headers.insert(LOCATION, v);
    }
    if out.replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if status == StatusCode::NO_CONTENT {
        return (status, headers).into_response();
    }
    (status, headers, axum::Json(out.body)).into_response()
}

fn record_response(record: Value) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(version) = record.get("version").and_then(Value::as_i64) {
        headers.insert(ETAG, etag(version));
    }
    (headers, axum::Json(record)).into_response()
}

/// The audit entry of a record read (through `/v1` or `/fhir`).
pub(crate) fn read_entry(auth: &Auth, now: &str, rt: &str, id: &str) -> AuditEntry {
    AuditEntry {
        id: eventflow_model::id::new_id("aud"),
        tenant: auth.tenant().to_string(),
        at: now.to_string(),
        key_id: auth.key_id().to_string(),
        action: "read".into(),
        resource_type: rt.to_string(),
        resource_id: id.to_string(),
    }
}

/// One change of one record through the store's write path, as the key
/// (`/v1` and `/fhir` alike).
pub(crate) async fn write_single(
    state: &AppState,
    auth: &Auth,
    op: Op,
    idempotency: Option<Idempotency>,
) -> Result<WriteOutcome, eventflow_store::StoreError> {
    state
        .store
        .write(WriteRequest {
            tenant: auth.tenant().to_string(),
            actor: auth.actor(),
            kind: WriteKind::Single(op),
            idempotency,
        })
        .await
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: JsonBody,
    rt: ResourceType,
) -> ApiResult<Response> {
    let path = format!("/v1/{}", rt.collection());
    let idempotency = idempotency(&headers, &path, &body.value)?;
    let op = Op::Create {
        rt,
        body: body.value,
    };
    let out = write_single(&state, &auth, op, idempotency).await?;
    Ok(write_response(out, Some(rt.collection())))
}

async fn read(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    params: Params,
    rt: ResourceType,
) -> ApiResult<Response> {
    params.only(&["include"])?;
    let mut includes: Vec<ResourceType> = Vec::new();
    if let Some(list) = params.get("include") {
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let inc = ResourceType::from_include_name(name)
                .filter(|inc| rt.includable().contains(inc))
                .ok_or_else(|| {
                    let allowed: Vec<&str> =
                        rt.includable().iter().map(|r| r.collection()).collect();
                    let hint = if allowed.is_empty() {
                        format!("a {rt} has nothing to include")
                    } else {
                        format!("must be a list of {}", allowed.join(", "))
                    };
                    ApiError::invalid("include", &hint)
                })?;
            // Included records are read too: their read scope is needed.
            auth.require(eventflow_model::scope::Scope::read(inc))?;
            if !includes.contains(&inc) {
                includes.push(inc);
            }
        }
    }
    let record = state
        .store
        .get_record(auth.tenant(), rt, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no {rt} with id {id}")))?;
    let now = time::format(state.clock.now());
    let mut reads = vec![read_entry(&auth, &now, rt.name(), &id)];
    let mut body = Value::Object(record);
    if !includes.is_empty() {
        let field = rt.reference_field().unwrap_or("patientId");
        let mut included = Object::new();
        for inc in includes {
            let records = state
                .store
                .records_referencing(auth.tenant(), inc, field, &id, 1000)
                .await?;
            for r in &records {
                if let Some(rid) = r.get("id").and_then(Value::as_str) {
                    reads.push(read_entry(&auth, &now, inc.name(), rid));
                }
            }
            included.insert(
                inc.collection().to_string(),
                Value::Array(records.into_iter().map(Value::Object).collect()),
            );
        }
        body["included"] = Value::Object(included);
    }
    state.store.record_reads(reads).await?;
    Ok(record_response(body))
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    params: Params,
    rt: ResourceType,
) -> ApiResult<Response> {
    params.only(&[
        "patientId",
        "status",
        "mrn",
        "updatedSince",
        "limit",
        "cursor",
    ])?;
    let mrn = params.get("mrn").map(str::to_string);
    if mrn.is_some() && rt != ResourceType::Patient {
        return Err(ApiError::invalid(
            "mrn",
            &format!("{} have no mrn to filter on", rt.collection()),
        ));
    }
    if mrn
        .as_ref()
        .is_some_and(|m| m.chars().count() > MAX_MRN_CHARS)
    {
        return Err(ApiError::invalid(
            "mrn",
            &format!("must be at most {MAX_MRN_CHARS} characters"),
        ));
    }
    let patient_id = params.get("patientId").map(str::to_string);
    if patient_id.is_some() && rt.field("patientId").is_none() {
        return Err(ApiError::invalid(
            "patientId",
            &format!("{} have no patientId to filter on", rt.collection()),
        ));
    }
    if let Some(p) = &patient_id
        && ResourceType::from_id(p) != Some(ResourceType::Patient)
    {
        return Err(ApiError::invalid(
            "patientId",
            "must be the id of a patient (pat_…)",
        ));
    }
    let status = params.get("status").map(str::to_string);
    if let Some(s) = &status {
        match rt.field("status").map(|f| f.kind) {
            Some(FieldKind::Enum(options)) if options.contains(&s.as_str()) => {}
            Some(FieldKind::Enum(options)) => {
                return Err(ApiError::invalid(
                    "status",
                    &format!("must be one of {}", options.join(", ")),
                ));
            }
            _ => {
                return Err(ApiError::invalid(
                    "status",
                    &format!("{} have no status to filter on", rt.collection()),
                ));
            }
        }
    }
    let updated_since = match params.get("updatedSince") {
        Some(s) => Some(time::format(time::parse(s).ok_or_else(|| {
            ApiError::invalid("updatedSince", "must be an RFC 3339 date-time")
        })?)),
        None => None,
    };
    let cursor = params.get("cursor").map(str::to_string);
    if let Some(c) = &cursor
        && ResourceType::from_id(c) != Some(rt)
    {
        return Err(ApiError::invalid(
            "cursor",
            "must be a nextCursor returned by this list",
        ));
    }
    let q = ListQuery {
        patient_id,
        status,
        mrn,
        updated_since,
        limit: params.int("limit", 50, 1, 500)? as u32,
        cursor,
        max_bytes: Some(state.config.limits.max_page_bytes),
        ..Default::default()
    };
    let page = state.store.list_records(auth.tenant(), rt, &q).await?;
    let now = time::format(state.clock.now());
    // A network's list is read in each record's own clinic.
    let reads = page
        .data
        .iter()
        .filter_map(|r| {
            let id = r.get("id").and_then(Value::as_str)?;
            let mut entry = read_entry(&auth, &now, rt.name(), id);
            if let Some(clinic) = r.get("tenantId").and_then(Value::as_str) {
                entry.tenant = clinic.to_string();
            }
            Some(entry)
        })
        .collect();
    state.store.record_reads(reads).await?;
    Ok(axum::Json(json!({"data": page.data, "nextCursor": page.next_cursor})).into_response())
}

async fn patch(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    headers: HeaderMap,
    body: JsonBody,
    rt: ResourceType,
) -> ApiResult<Response> {
    let if_match = if_match(&headers)?;
    let op = Op::Patch {
        rt,
        id,
        patch: body.value,
        if_match,
    };
    let out = write_single(&state, &auth, op, None).await?;
    Ok(write_response(out, None))
}

async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
    headers: HeaderMap,
    rt: ResourceType,
) -> ApiResult<Response> {
    let if_match = if_match(&headers)?;
    let out = write_single(&state, &auth, Op::Delete { rt, id, if_match }, None).await?;
    Ok(write_response(out, None))
}
