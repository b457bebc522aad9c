//! Vendor portal links: `POST /v1/portal-links` makes a single-use
//! sign-in link to a portal session that sees and manages only the
//! endpoints of one `owner` (a vendor's), read-only if asked.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use eventflow_model::scope::Scope;
use eventflow_model::{ResourceType, time};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{Auth, hash_key, random_token};
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/portal-links", post(create))
}

/// How long a link may be valid: one minute to one day (default an hour).
const MIN_EXPIRY: i64 = 60;
const MAX_EXPIRY: i64 = 24 * 3600;
const DEFAULT_EXPIRY: i64 = 3600;

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    body: JsonBody,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if auth.owner().is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            crate::error::ErrorKind::Forbidden,
            "a vendor's portal session cannot make portal links",
        ));
    }
    let body = body.object()?;
    if let Some(k) = body
        .keys()
        .find(|k| !["owner", "readOnly", "expiresInSeconds"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            k,
            "unknown field; a portal link has owner, readOnly, expiresInSeconds",
        ));
    }
    let owner = match body.get("owner") {
        Some(Value::String(o))
            if !o.trim().is_empty()
                && o.chars().count() <= crate::routes::endpoints::MAX_NAME_CHARS =>
        {
            o.clone()
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "owner",
                "must be 1 to 200 characters: the owner of the endpoints the link manages",
            ));
        }
        None => return Err(ApiError::invalid("owner", "is required")),
    };
    let read_only = match body.get("readOnly") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("readOnly", "must be true or false")),
    };
    let seconds = match body.get("expiresInSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRY,
        Some(v) => eventflow_model::validate::as_i64(v)
            .filter(|n| (MIN_EXPIRY..=MAX_EXPIRY).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "expiresInSeconds",
                    "must be a whole number of seconds from 60 to 86400",
                )
            })?,
    };
    // The session reads what the making key reads (records, events: to
    // choose what its endpoints get) and manages endpoints; no more.
    let mut offered: Vec<Scope> = ResourceType::ALL.into_iter().map(Scope::read).collect();
    offered.extend([Scope::EVENTS_READ, Scope::ENDPOINTS_READ]);
    if !read_only {
        offered.push(Scope::ENDPOINTS_WRITE);
    }
    let scopes: Vec<String> = offered
        .into_iter()
        .filter(|s| auth.scopes().allows(*s))
        .map(|s| s.name.to_string())
        .collect();
    let now = state.clock.now();
    let token = random_token();
    let link = eventflow_store::PortalLink {
        id: eventflow_model::id::new_id("plk"),
        tenant_id: auth.tenant().to_string(),
        key_id: auth.key_id().to_string(),
        key_hash: auth.0.key_hash.clone(),
        token_hash: hash_key(&token),
        owner: owner.clone(),
        read_only,
        scopes,
        created_at: time::format(now),
        expires_at: time::format(now + jiff::SignedDuration::from_secs(seconds)),
    };
    let audit = eventflow_store::AuditEntry {
        id: eventflow_model::id::new_id("aud"),
        tenant: link.tenant_id.clone(),
        at: link.created_at.clone(),
        key_id: link.key_id.clone(),
        action: "portal-link.create".into(),
        resource_type: "portal_link".into(),
        resource_id: link.id.clone(),
    };
    let out = json!({
        "id": link.id,
        "url": format!("{}/portal/link/{token}", state.config.public_url().trim_end_matches('/')),
        "owner": owner,
        "readOnly": read_only,
        "expiresAt": link.expires_at,
    });
    state.store.create_portal_link(link, audit).await?;
    Ok((StatusCode::CREATED, Json(out)))
}
