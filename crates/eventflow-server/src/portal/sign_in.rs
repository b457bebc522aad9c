//! Signing in with an API key, and signing out.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use eventflow_model::scope::Scope;
use serde_json::json;

use super::session::{COOKIE, Me, PRE_COOKIE, Posted, Refused, SESSION_TTL};
use super::{Portal, cookie, field, form, secure, see_other};
use crate::auth::{constant_time_eq, random_token};

pub(super) async fn home(me: Option<Me>) -> Response {
    if me.is_some() {
        see_other("/portal/endpoints")
    } else {
        see_other("/portal/sign-in")
    }
}

fn sign_in_form(p: &Portal, error: Option<&str>, status: StatusCode) -> Response {
    let token = random_token();
    let mut r = p.render(
        "sign_in.html",
        None,
        json!({"title": "Sign in", "pre": token, "error": error}),
    );
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&format!("{PRE_COOKIE}={token}{}", p.cookie_attrs())) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

pub(super) async fn sign_in_page(State(p): State<Portal>, me: Option<Me>) -> Response {
    if me.is_some() {
        return see_other("/portal/endpoints");
    }
    sign_in_form(&p, None, StatusCode::OK)
}

pub(super) async fn sign_in(
    State(p): State<Portal>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let pre = cookie(&headers, PRE_COOKIE).unwrap_or("");
    if pre.is_empty() || !constant_time_eq(field(&f, "pre").as_bytes(), pre.as_bytes()) {
        return sign_in_form(
            &p,
            Some("The form expired; please sign in again."),
            StatusCode::FORBIDDEN,
        );
    }
    let key = field(&f, "api_key");
    // The API's key check: its cache, and its limit on failed attempts per
    // client address, which sign-ins share.
    let client = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let now = p.app.clock.now();
    let checked = if key.is_empty() || key.len() > 200 {
        match p.app.keys.blocked(client, now) {
            Some(wait) => Err(crate::ApiError::too_many_attempts(wait)),
            None => {
                p.app.keys.failed(client, now);
                Err(crate::ApiError::unauthorized())
            }
        }
    } else {
        p.app
            .keys
            .authenticate(&p.app.store, key, client, now)
            .await
    };
    let principal = match checked {
        Ok(principal) if !principal.scopes.allows(Scope::ENDPOINTS_READ) => {
            return sign_in_form(
                &p,
                Some("This key lacks the scope endpoints:read, which the portal needs."),
                StatusCode::FORBIDDEN,
            );
        }
        Ok(principal) => principal,
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => {
            let mut r = sign_in_form(
                &p,
                Some(&format!(
                    "Too many failed sign-ins from this address; try again in {} seconds.",
                    e.retry_after.unwrap_or(60)
                )),
                StatusCode::TOO_MANY_REQUESTS,
            );
            if let Some(secs) = e.retry_after {
                r.headers_mut().insert(header::RETRY_AFTER, secs.into());
            }
            return r;
        }
        Err(_) => {
            return sign_in_form(
                &p,
                Some("That API key is not valid."),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    let entry = eventflow_store::AuditEntry {
        id: eventflow_model::id::new_id("aud"),
        tenant: principal.tenant_id.to_string(),
        at: eventflow_model::time::format(p.app.clock.now()),
        key_id: principal.key_id.to_string(),
        action: "portal.sign-in".into(),
        resource_type: "api_key".into(),
        resource_id: principal.key_id.to_string(),
    };
    if let Err(e) = p.app.store.record_reads(vec![entry]).await {
        tracing::error!(error = %e, "could not write a sign-in to the audit log");
        return p.error_page(
            None,
            StatusCode::SERVICE_UNAVAILABLE,
            "The sign-in could not be recorded; try again.",
        );
    }
    let id = p.start_session(&headers, key, &principal);
    signed_in(&p, &id)
}

/// To the endpoints, with the new session's cookie (the sign-in form's
/// cookie cleared).
fn signed_in(p: &Portal, id: &str) -> Response {
    let mut r = see_other("/portal/endpoints");
    let attrs = p.cookie_attrs();
    for c in [
        format!("{COOKIE}={id}{attrs}; Max-Age={}", SESSION_TTL.as_secs()),
        format!("{PRE_COOKIE}={attrs}; Max-Age=0"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    secure(r)
}

/// Ends the session when the form's token matches; either way the cookie
/// is cleared and the browser goes to the sign-in page.
pub(super) async fn sign_out(State(p): State<Portal>, posted: Result<Posted, Refused>) -> Response {
    match posted {
        Ok(posted) => p.end_session(&posted.me),
        Err(Refused::Body(r)) => return r,
        Err(Refused::SignedOut | Refused::Token(_)) => {}
    }
    let mut r = see_other("/portal/sign-in");
    if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}={}; Max-Age=0", p.cookie_attrs())) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    secure(r)
}

/// `POST /portal/clinic`: an organisation's session switches to one of its
/// member clinics (`clinic` = `ten_…`), or back to the network (empty).
pub(super) async fn switch_clinic(
    State(p): State<Portal>,
    posted: Result<Posted, Refused>,
) -> Response {
    let posted = match posted {
        Ok(posted) => posted,
        Err(Refused::Body(r) | Refused::Token(r)) => return r,
        Err(Refused::SignedOut) => return see_other("/portal/sign-in"),
    };
    let Some((_, clinics)) = &posted.me.organisation else {
        return p.error_page(
            Some(&posted.me),
            StatusCode::NOT_FOUND,
            "This key belongs to a clinic, not an organisation.",
        );
    };
    let chosen = posted.field("clinic");
    if chosen.is_empty() {
        p.act_on(&posted.me, None);
    } else if clinics.iter().any(|c| c.id == chosen) {
        p.act_on(&posted.me, Some(chosen.to_string()));
    } else {
        return p.error_page(
            Some(&posted.me),
            StatusCode::NOT_FOUND,
            "No member clinic of that id.",
        );
    }
    see_other("/portal/endpoints")
}

/// `GET /portal/link/{token}`: the landing page of a vendor portal link.
/// Nothing is used yet (a link previewer or a mail scanner that fetches
/// it spends nothing): the button posts it.
pub(super) async fn link_page(
    State(p): State<Portal>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    let pre = random_token();
    let mut r = p.render(
        "link.html",
        None,
        json!({"title": "Sign in with a link", "pre": pre, "token": token}),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("{PRE_COOKIE}={pre}{}", p.cookie_attrs())) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// `POST /portal/link`: uses a portal link (once) and starts a session on
/// the endpoints of its owner.
pub(super) async fn use_link(State(p): State<Portal>, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let pre = cookie(&headers, PRE_COOKIE).unwrap_or("");
    if pre.is_empty() || !constant_time_eq(field(&f, "pre").as_bytes(), pre.as_bytes()) {
        return p.error_page(
            None,
            StatusCode::FORBIDDEN,
            "The form expired; open the link again.",
        );
    }
    let token = field(&f, "token");
    let used = if token.is_empty() || token.len() > 200 {
        Ok(None)
    } else {
        p.app
            .store
            .use_portal_link(&crate::auth::hash_key(token), p.app.clock.now())
            .await
    };
    let link = match used {
        Ok(Some(link)) => link,
        Ok(None) => {
            return p.error_page(
                None,
                StatusCode::GONE,
                "This sign-in link was used already, or has expired. Ask for a new one.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "could not use a portal link");
            return p.error_page(
                None,
                StatusCode::SERVICE_UNAVAILABLE,
                "The link could not be checked; try again.",
            );
        }
    };
    let Ok(scopes) = eventflow_model::scope::Scopes::parse(link.scopes.iter().map(String::as_str))
    else {
        return p.error_page(
            None,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the link could not be used",
        );
    };
    let principal = eventflow_store::Principal {
        tenant_id: eventflow_model::id::TenantId::from_stored(link.tenant_id),
        key_id: eventflow_model::id::KeyId::from_stored(link.id),
        key_hash: String::new(),
        scopes,
        valid_until: None,
        last_used_at: None,
        keys_epoch: 0,
        owner: Some(link.owner.clone()),
    };
    let id = p.start_link_session(&headers, principal, link.key_hash);
    signed_in(&p, &id)
}
