//! The developer portal at `/portal` (docs/portal.md): sign in with an API key,
//! manage webhook endpoints, watch deliveries, browse events, see what
//! automations did.
//!
//! Every page is built from the API itself: a portal handler turns a form
//! into an API request and sends it, in process, through the same router the
//! network reaches (`Portal::call`), so validation, tenant scoping and the
//! audit log are the API's own. The store is used directly only to check
//! the key at sign-in and to read the tenant's latest event sequence. The API
//! request carries the session's principal as a request extension
//! (`auth::Internal`), which only in-process code can set.
//!
//! Sessions: a random id in an `HttpOnly; SameSite=Strict` cookie (plus
//! `Secure` when `public_url` is https or with `--production`), kept in
//! memory for 12 hours at most and 30 minutes unused (a restart signs
//! everyone out; behind a load balancer, use sticky sessions).
//! Every form carries the session's CSRF token; the sign-in form a
//! double-submit token. Pages are server-rendered HTML (minijinja, escaped),
//! readable without JavaScript; `portal.js` only adds the live check of a
//! CEL filter. No asset leaves the binary and the CSP allows nothing else.
//!
//! The modules:
//! - `session`: the sessions, and the extractors the handlers take:
//!   `Me`, the signed-in user (else a redirect to the sign-in page), and
//!   `Posted`, a form whose CSRF token matches the session's.
//! - `sign_in`: the home redirect, signing in and out.
//! - `endpoints`: the endpoint list, form and page, its buttons, and the
//!   live check of a CEL filter.
//! - `chart`: the endpoint page's SVG chart.
//! - `events`: the event log and one event.
//! - `automations`: workflows, runs, the outbox and timers.
//! - `assets`: the stylesheet and the script.
//!
//! This file has the router and what they share: rendering, the in-process
//! API call, and reading forms and cookies.

mod assets;
mod automations;
mod chart;
mod disclosures;
mod endpoints;
mod events;
mod session;
mod sign_in;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use eventflow_model::scope::Scope;
use minijinja::Environment;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::AppState;
use crate::auth::Internal;
use assets::asset;
use automations::automations;
use endpoints::{
    check_filter, confirm_delete, create_endpoint, delete_endpoint, edit_endpoint, endpoint,
    endpoints, new_endpoint, replay, retry, rotate, set_state, test_send, update_endpoint,
};
use events::{event, events};
use session::{Me, Sessions};
use sign_in::{home, sign_in, sign_in_page, sign_out};

/// A page, or the response that stands in for it (an error page, a
/// redirect).
type Page = Result<Response, Response>;

#[derive(Clone)]
struct Portal {
    app: AppState,
    api: Router,
    sessions: Arc<Mutex<Sessions>>,
    /// Compiled on the first page view, not at start (an idle server that
    /// nobody opens the portal of keeps its memory small).
    env: Arc<std::sync::OnceLock<Environment<'static>>>,
}

/// The portal's routes. `api` is the API router (the portal's requests go
/// through it).
pub fn router(app: AppState, api: Router) -> Router {
    let portal = Portal {
        app,
        api,
        sessions: Arc::default(),
        env: Arc::default(),
    };
    Router::new()
        .route("/portal", get(home))
        .route("/portal/", get(home))
        .route("/portal/static/{file}", get(asset))
        .route("/portal/sign-in", get(sign_in_page).post(sign_in))
        .route("/portal/sign-out", post(sign_out))
        .route("/portal/clinic", post(sign_in::switch_clinic))
        .route("/portal/link/{token}", get(sign_in::link_page))
        .route("/portal/link", post(sign_in::use_link))
        .route("/portal/endpoints", get(endpoints).post(create_endpoint))
        .route("/portal/endpoints/new", get(new_endpoint))
        .route("/portal/check-filter", post(check_filter))
        .route(
            "/portal/endpoints/{id}",
            get(endpoint).post(update_endpoint),
        )
        .route("/portal/endpoints/{id}/edit", get(edit_endpoint))
        .route(
            "/portal/endpoints/{id}/delete",
            get(confirm_delete).post(delete_endpoint),
        )
        .route("/portal/endpoints/{id}/rotate", post(rotate))
        .route("/portal/endpoints/{id}/test", post(test_send))
        .route("/portal/endpoints/{id}/replay", post(replay))
        .route("/portal/endpoints/{id}/state", post(set_state))
        .route("/portal/endpoints/{id}/verify", post(endpoints::verify))
        .route("/portal/deliveries/{id}/retry", post(retry))
        .route("/portal/events", get(events))
        .route("/portal/disclosures", get(disclosures::disclosures))
        .route("/portal/disclosures.csv", get(disclosures::accounting_csv))
        .route("/portal/events/{id}", get(event))
        .route("/portal/automations", get(automations))
        .with_state(portal)
}

fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in [
        ("layout.html", include_str!("templates/layout.html")),
        ("sign_in.html", include_str!("templates/sign_in.html")),
        ("endpoints.html", include_str!("templates/endpoints.html")),
        (
            "endpoint_form.html",
            include_str!("templates/endpoint_form.html"),
        ),
        ("endpoint.html", include_str!("templates/endpoint.html")),
        (
            "confirm_delete.html",
            include_str!("templates/confirm_delete.html"),
        ),
        ("events.html", include_str!("templates/events.html")),
        ("event.html", include_str!("templates/event.html")),
        (
            "automations.html",
            include_str!("templates/automations.html"),
        ),
        ("error.html", include_str!("templates/error.html")),
        (
            "disclosures.html",
            include_str!("templates/disclosures.html"),
        ),
        ("link.html", include_str!("templates/link.html")),
    ] {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("portal template {name}: {e}"));
    }
    env
}

/// Headers every portal page carries: nothing may load from elsewhere, no
/// framing, no sniffing, and no caching of pages with tenant data.
fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A form body's fields, in order (a field may repeat: checkboxes).
fn form(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> &'a str {
    f.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .unwrap_or("")
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

impl Portal {
    fn render(&self, name: &str, me: Option<&Me>, ctx: Value) -> Response {
        let mut ctx = ctx;
        if let (Some(o), Some(me)) = (ctx.as_object_mut(), me) {
            o.insert("csrf".into(), json!(me.csrf));
            o.insert("tenant".into(), json!(me.principal.tenant_id));
            o.insert("signed_in".into(), json!(true));
            o.insert("link_owner".into(), json!(me.principal.owner));
            if let Some((org, clinics)) = &me.organisation {
                o.insert(
                    "organisation".into(),
                    json!({"id": org, "clinics": clinics,
                           "acting": (me.principal.tenant_id.as_str() != org).then_some(me.principal.tenant_id.as_str())}),
                );
            }
            // Only what the key may do is offered (the API refuses the rest).
            let scopes = &me.principal.scopes;
            o.insert(
                "can".into(),
                json!({
                    "endpoints_write": scopes.allows(Scope::ENDPOINTS_WRITE),
                    "events_read": scopes.allows(Scope::EVENTS_READ),
                    "workflows_read": scopes.allows(Scope::WORKFLOWS_READ),
                    "audit_read": scopes.allows(Scope::AUDIT_READ),
                }),
            );
        }
        let html = self
            .env
            .get_or_init(templates)
            .get_template(name)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&ctx))));
        match html {
            Ok(h) => secure(Html(h).into_response()),
            Err(e) => {
                tracing::error!(error = %e, template = name, "portal template failed");
                secure(
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the page could not be rendered",
                    )
                        .into_response(),
                )
            }
        }
    }

    /// A vendor's link session sees its owner's endpoints and nothing else:
    /// a 403 page for any other page.
    fn endpoints_only(&self, me: &Me) -> Option<Response> {
        me.principal.owner.is_some().then(|| {
            self.error_page(
                Some(me),
                StatusCode::FORBIDDEN,
                "This session, signed in with a link, manages endpoints only.",
            )
        })
    }

    fn error_page(&self, me: Option<&Me>, status: StatusCode, message: &str) -> Response {
        let mut r = self.render(
            "error.html",
            me,
            json!({"title": "Error", "message": message}),
        );
        *r.status_mut() = status;
        r
    }

    /// Sends an API request in process, as the session's principal.
    async fn call(
        &self,
        me: &Me,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, bytes) = self.call_raw(me, method, path, body, None).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// [`call`](Self::call) with an `Accept` of its own, the answer's body
    /// as it came (CSV, …).
    async fn call_raw(
        &self,
        me: &Me,
        method: Method,
        path: &str,
        body: Option<Value>,
        accept: Option<&str>,
    ) -> (StatusCode, Bytes) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        if let Some(ext) = request.extensions_mut() {
            ext.insert(Internal(me.principal.clone()));
        }
        let body = body
            .map(|b| Body::from(b.to_string()))
            .unwrap_or_else(Body::empty);
        let Ok(request) = request.body(body) else {
            return (
                StatusCode::BAD_REQUEST,
                Bytes::from_static(br#"{"error": {"message": "bad request"}}"#),
            );
        };
        let response = match self.api.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
            .await
            .unwrap_or_default();
        (status, bytes)
    }

    async fn get(&self, me: &Me, path: &str) -> Result<Value, Response> {
        let (status, body) = self.call(me, Method::GET, path, None).await;
        if status.is_success() {
            Ok(body)
        } else {
            Err(self.error_page(Some(me), status, &api_message(&body)))
        }
    }
}

fn api_message(body: &Value) -> String {
    let e = &body["error"];
    let message = e["message"].as_str().unwrap_or("the request failed");
    match e["field"].as_str() {
        Some(f) if !message.starts_with(f) => format!("{f}: {message}"),
        _ => message.to_string(),
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
