//! The developer portal at `/portal` (docs/portal.md): sign in with an API key,
//! manage webhook endpoints, watch deliveries, browse events, see what
//! automations did.
//!
//! Every page is built from the API itself: a portal handler turns a form
//! into an API request and sends it, in process, through the same router the
//! network reaches ([`Portal::call`]), so validation, tenant scoping and the
//! audit log are the API's own. The store is used directly only to check
//! the key at sign-in and to read the tenant's latest event sequence. The API
//! request carries the session's principal as a request extension
//! ([`crate::auth::Internal`]), which only in-process code can set.
//!
//! Sessions: a random id in an `HttpOnly; SameSite=Strict` cookie (plus
//! `Secure` when `public_url` is https or with `--production`), kept in
//! memory for 12 hours at most and 30 minutes unused (a restart signs
//! everyone out; behind a load balancer, use sticky sessions).
//! Every form carries the session's CSRF token; the sign-in form a
//! double-submit token. Pages are server-rendered HTML (minijinja, escaped),
//! readable without JavaScript; `portal.js` only adds the live check of a
//! CEL filter. No asset leaves the binary and the CSP allows nothing else.

mod chart;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use eventflow_model::scope::Scope;
use eventflow_store::Principal;
use minijinja::Environment;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::AppState;
use crate::auth::{Internal, constant_time_eq, hash_key, random_token};

/// How long a session lasts at most, and unused.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// Sessions kept at most, in all and per API key (the oldest go first).
const MAX_SESSIONS: usize = 10_000;
const MAX_SESSIONS_PER_KEY: usize = 20;
const COOKIE: &str = "ef_session";
const PRE_COOKIE: &str = "ef_signin";

struct Session {
    /// The hash of the signed-in key's secret: every request checks it
    /// again, so a key revoked or expired ends its sessions at once.
    key_hash: String,
    key_id: String,
    csrf: String,
    created: Instant,
    expires: Instant,
    idle_until: Instant,
}

#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, Session>,
    swept: Option<Instant>,
}

impl Sessions {
    /// Drops expired sessions, at most once a minute.
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        self.swept = Some(now);
        self.by_id
            .retain(|_, s| s.expires > now && s.idle_until > now);
    }

    fn insert(&mut self, id_hash: String, session: Session) {
        let now = Instant::now();
        self.sweep(now);
        let key_id = session.key_id.clone();
        let mut of_key: Vec<(Instant, String)> = self
            .by_id
            .iter()
            .filter(|(_, s)| s.key_id == key_id)
            .map(|(k, s)| (s.created, k.clone()))
            .collect();
        of_key.sort();
        while of_key.len() >= MAX_SESSIONS_PER_KEY {
            let (_, oldest) = of_key.remove(0);
            self.by_id.remove(&oldest);
        }
        if self.by_id.len() >= MAX_SESSIONS
            && let Some(oldest) = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            self.by_id.remove(&oldest);
        }
        self.by_id.insert(id_hash, session);
    }
}

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
        .route("/portal/deliveries/{id}/retry", post(retry))
        .route("/portal/events", get(events))
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

/// The signed-in user of a request.
struct Me {
    principal: Principal,
    csrf: String,
}

impl Portal {
    fn cookie_attrs(&self) -> &'static str {
        if self.app.config.production || self.app.config.public_url().starts_with("https://") {
            "; Path=/portal; HttpOnly; SameSite=Strict; Secure"
        } else {
            "; Path=/portal; HttpOnly; SameSite=Strict"
        }
    }

    /// The signed-in user, with the key's scopes as they stand now: the
    /// key is checked again (through the API's key cache), and a session
    /// whose key was revoked, expired or lost `endpoints:read` ends.
    async fn me(&self, headers: &HeaderMap) -> Option<Me> {
        let id = cookie(headers, COOKIE)?;
        let session_hash = hash_key(id);
        let (key_hash, csrf) = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            sessions.sweep(now);
            let s = sessions.by_id.get_mut(&session_hash)?;
            if s.expires <= now || s.idle_until <= now {
                sessions.by_id.remove(&session_hash);
                return None;
            }
            s.idle_until = now + SESSION_IDLE;
            (s.key_hash.clone(), s.csrf.clone())
        };
        let checked = self
            .app
            .keys
            .authenticate_hash(&self.app.store, key_hash, None, self.app.clock.now())
            .await;
        match checked {
            Ok(principal) if principal.scopes.allows(Scope::ENDPOINTS_READ) => {
                Some(Me { principal, csrf })
            }
            Ok(_) | Err(_) => {
                self.sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .by_id
                    .remove(&session_hash);
                None
            }
        }
    }

    /// The session of a form post whose CSRF token matches, else `None`.
    async fn me_posting(&self, headers: &HeaderMap, f: &[(String, String)]) -> Option<Me> {
        let me = self.me(headers).await?;
        constant_time_eq(field(f, "csrf").as_bytes(), me.csrf.as_bytes()).then_some(me)
    }

    fn render(&self, name: &str, me: Option<&Me>, ctx: Value) -> Response {
        let mut ctx = ctx;
        if let (Some(o), Some(me)) = (ctx.as_object_mut(), me) {
            o.insert("csrf".into(), json!(me.csrf));
            o.insert("tenant".into(), json!(me.principal.tenant_id));
            o.insert("signed_in".into(), json!(true));
            // Only what the key may do is offered (the API refuses the rest).
            let scopes = &me.principal.scopes;
            o.insert(
                "can".into(),
                json!({
                    "endpoints_write": scopes.allows(Scope::ENDPOINTS_WRITE),
                    "events_read": scopes.allows(Scope::EVENTS_READ),
                    "workflows_read": scopes.allows(Scope::WORKFLOWS_READ),
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
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(ext) = request.extensions_mut() {
            ext.insert(Internal(me.principal.clone()));
        }
        let body = body
            .map(|b| Body::from(b.to_string()))
            .unwrap_or_else(Body::empty);
        let Ok(request) = request.body(body) else {
            return (
                StatusCode::BAD_REQUEST,
                json!({"error": {"message": "bad request"}}),
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
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
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

/// `scheme://host:port` of a URL: page titles end up in browser history, and
/// an endpoint's path or query may carry a token.
fn origin_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "Endpoint".into())
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---- Assets ---------------------------------------------------------------

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "portal.css" => (include_str!("static/portal.css"), "text/css; charset=utf-8"),
        "portal.js" => (
            include_str!("static/portal.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return secure((StatusCode::NOT_FOUND, "no such file").into_response()),
    };
    secure(
        (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            body,
        )
            .into_response(),
    )
}

// ---- Sign-in ----------------------------------------------------------------

async fn home(State(p): State<Portal>, headers: HeaderMap) -> Response {
    if p.me(&headers).await.is_some() {
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

async fn sign_in_page(State(p): State<Portal>, headers: HeaderMap) -> Response {
    if p.me(&headers).await.is_some() {
        return see_other("/portal/endpoints");
    }
    sign_in_form(&p, None, StatusCode::OK)
}

async fn sign_in(
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
        tenant: principal.tenant_id.clone(),
        at: eventflow_model::time::format(p.app.clock.now()),
        key_id: principal.key_id.clone(),
        action: "portal.sign-in".into(),
        resource_type: "api_key".into(),
        resource_id: principal.key_id.clone(),
    };
    if let Err(e) = p.app.store.record_reads(vec![entry]).await {
        tracing::error!(error = %e, "could not write a sign-in to the audit log");
        return p.error_page(
            None,
            StatusCode::SERVICE_UNAVAILABLE,
            "The sign-in could not be recorded; try again.",
        );
    }
    let id = random_token();
    let now = Instant::now();
    // A new id at every sign-in (no fixation); an earlier session of this
    // browser ends.
    let mut sessions = p.sessions.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(old) = cookie(&headers, COOKIE) {
        sessions.by_id.remove(&hash_key(old));
    }
    sessions.insert(
        hash_key(&id),
        Session {
            key_hash: hash_key(key),
            key_id: principal.key_id.clone(),
            csrf: random_token(),
            created: now,
            expires: now + SESSION_TTL,
            idle_until: now + SESSION_IDLE,
        },
    );
    drop(sessions);
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

async fn sign_out(State(p): State<Portal>, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    if p.me_posting(&headers, &f).await.is_some()
        && let Some(id) = cookie(&headers, COOKIE)
    {
        p.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .remove(&hash_key(id));
    }
    let mut r = see_other("/portal/sign-in");
    if let Ok(v) = HeaderValue::from_str(&format!("{COOKIE}={}; Max-Age=0", p.cookie_attrs())) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    secure(r)
}

macro_rules! signed_in {
    ($p:expr, $headers:expr) => {
        match $p.me(&$headers).await {
            Some(me) => me,
            None => return see_other("/portal/sign-in"),
        }
    };
}

macro_rules! posting {
    ($p:expr, $headers:expr, $f:expr) => {
        match $p.me_posting(&$headers, &$f).await {
            Some(me) => me,
            None => {
                return match $p.me(&$headers).await {
                    Some(me) => $p.error_page(
                        Some(&me),
                        StatusCode::FORBIDDEN,
                        "The form's security token did not match; reload the page and try again.",
                    ),
                    None => see_other("/portal/sign-in"),
                };
            }
        }
    };
}

macro_rules! tryp {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

// ---- Endpoints ------------------------------------------------------------

fn state_of(ep: &Value) -> &'static str {
    if ep["disabled"] == true {
        "disabled"
    } else if ep["failureStreak"].as_i64().unwrap_or(0) > 0 {
        "failing"
    } else {
        "enabled"
    }
}

/// Succeeded / (succeeded + failed) among the endpoint's last 100 deliveries.
fn success_rate(deliveries: &[Value]) -> Option<u32> {
    let done: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["status"] != "pending")
        .collect();
    if done.is_empty() {
        return None;
    }
    let ok = done.iter().filter(|d| d["status"] == "succeeded").count();
    Some((ok * 100 / done.len()) as u32)
}

async fn endpoints(
    State(p): State<Portal>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let me = signed_in!(p, headers);
    let list = tryp!(p.get(&me, "/v1/endpoints").await);
    let mut rows = Vec::new();
    for (n, ep) in list["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let id = ep["id"].as_str().unwrap_or_default().to_string();
        // Statistics for the first 100 endpoints (one API call each); an
        // endpoint deleted meanwhile just shows none.
        let deliveries = if n < 100 {
            let (status, d) = p
                .call(
                    &me,
                    Method::GET,
                    &format!("/v1/endpoints/{}/deliveries?limit=100", enc(&id)),
                    None,
                )
                .await;
            if status.is_success() {
                d["data"].as_array().cloned().unwrap_or_default()
            } else {
                Vec::new()
            }
        } else {
            Vec::new()
        };
        rows.push(json!({
            "endpoint": ep,
            "state": state_of(&ep),
            "rate": success_rate(&deliveries),
            "pending": deliveries.iter().filter(|d| d["status"] == "pending").count(),
        }));
    }
    p.render(
        "endpoints.html",
        Some(&me),
        json!({"title": "Endpoints", "nav": "endpoints", "rows": rows, "notice": notice(&q)}),
    )
}

/// The message of a `notice` after a redirect (codes only: a link cannot
/// put words of its own on the page).
fn notice(q: &BTreeMap<String, String>) -> Option<String> {
    let n = q.get("n").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let code = q.get("code").and_then(|c| c.parse::<u16>().ok());
    Some(match q.get("notice")?.as_str() {
        "created" => "Endpoint created. Its signing secret is below.".into(),
        "updated" => "Endpoint saved.".into(),
        "deleted" => "Endpoint deleted.".into(),
        "rotated" => "Secret rotated: the old one keeps signing for 24 hours.".into(),
        "sent" => match code {
            Some(c) => format!("Test event sent: the endpoint answered {c}."),
            None => "Test event sent: the endpoint did not answer (see the attempt below).".into(),
        },
        "replayed" => format!("{n} events queued again."),
        "replaying" => {
            format!("Replay started: {n} events queued so far; the rest follow in the background.")
        }
        "replay-start" => {
            "Choose where the replay starts: after a sequence number, or since a time.".into()
        }
        "retried" => "Delivery queued for another attempt now.".into(),
        "enabled" => "Endpoint enabled.".into(),
        "disabled" => "Endpoint disabled: deliveries wait until it is enabled.".into(),
        _ => return None,
    })
}

/// The event types the key may see (an endpoint of a key may send only
/// those), with their descriptions.
fn visible_types(me: &Me) -> Vec<Value> {
    eventflow_model::event::all_types()
        .filter(|(t, _)| me.principal.scopes.sees(t))
        .map(|(t, d)| json!({"type": t, "description": d}))
        .collect()
}

/// Event types grouped by record type, for the checkboxes.
async fn type_groups(_p: &Portal, me: &Me, chosen: &[String]) -> Result<Vec<Value>, Response> {
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for t in visible_types(me) {
        let name = t["type"].as_str().unwrap_or_default().to_string();
        let group = name.split('.').next().unwrap_or_default().to_string();
        groups.entry(group).or_default().push(json!({
            "type": name,
            "description": t["description"],
            "checked": chosen.contains(&name),
        }));
    }
    Ok(groups
        .into_iter()
        .map(|(g, types)| {
            let glob = format!("{g}.*");
            json!({"group": g, "glob": glob, "all": chosen.contains(&glob), "types": types})
        })
        .collect())
}

fn endpoint_body(f: &[(String, String)]) -> Value {
    let types: Vec<&str> = f
        .iter()
        .filter(|(k, _)| k == "types")
        .map(|(_, v)| v.as_str())
        .collect();
    // A ticked "all of x.*" covers its group's types.
    let globs: Vec<&str> = types
        .iter()
        .copied()
        .filter(|t| t.ends_with(".*"))
        .collect();
    let types: Vec<&str> = types
        .into_iter()
        .filter(|t| {
            t.ends_with(".*") || !globs.iter().any(|g| t.starts_with(g.trim_end_matches('*')))
        })
        .collect();
    let opt = |name: &str| {
        let v = field(f, name);
        if v.is_empty() { Value::Null } else { json!(v) }
    };
    let rate = field(f, "rate_limit");
    json!({
        "url": field(f, "url"),
        "description": opt("description"),
        "eventTypes": types,
        "filter": opt("filter"),
        "payload": if field(f, "payload") == "thin" { "thin" } else { "full" },
        "ordering": if field(f, "ordering") == "resource" { "resource" } else { "none" },
        "rateLimit": if rate.is_empty() { Value::Null } else { rate.parse::<u64>().map(Value::from).unwrap_or(json!(rate)) },
    })
}

async fn endpoint_form(
    p: &Portal,
    me: &Me,
    ep: Value,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let chosen: Vec<String> = ep["eventTypes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let groups = tryp!(type_groups(p, me, &chosen).await);
    let editing = ep["id"].is_string();
    let mut r = p.render(
        "endpoint_form.html",
        Some(me),
        json!({
            "title": if editing { "Edit endpoint" } else { "New endpoint" },
            "nav": "endpoints", "ep": ep, "groups": groups, "error": error, "editing": editing,
        }),
    );
    *r.status_mut() = status;
    r
}

async fn new_endpoint(State(p): State<Portal>, headers: HeaderMap) -> Response {
    let me = signed_in!(p, headers);
    endpoint_form(
        &p,
        &me,
        json!({"payload": "full", "ordering": "none"}),
        None,
        StatusCode::OK,
    )
    .await
}

async fn create_endpoint(State(p): State<Portal>, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    save_endpoint(&p, &me, None, endpoint_body(&f)).await
}

/// Creates (`id` none) or updates an endpoint from the form, then goes to
/// its page; on the API's refusal, shows the form again with the reason.
async fn save_endpoint(p: &Portal, me: &Me, id: Option<&str>, input: Value) -> Response {
    let (method, path) = match id {
        None => (Method::POST, "/v1/endpoints".to_string()),
        Some(id) => (Method::PATCH, format!("/v1/endpoints/{}", enc(id))),
    };
    let (status, out) = p.call(me, method, &path, Some(input.clone())).await;
    if status.is_success() {
        let saved = out["id"].as_str().unwrap_or_default();
        let notice = if id.is_none() {
            "created&reveal=1"
        } else {
            "updated"
        };
        return see_other(&format!("/portal/endpoints/{}?notice={notice}", enc(saved)));
    }
    let mut ep = input;
    if let Some(id) = id {
        ep["id"] = json!(id);
    }
    endpoint_form(
        p,
        me,
        ep,
        Some(api_message(&out)),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

async fn edit_endpoint(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let me = signed_in!(p, headers);
    let ep = tryp!(p.get(&me, &format!("/v1/endpoints/{}", enc(&id))).await);
    endpoint_form(&p, &me, ep, None, StatusCode::OK).await
}

async fn update_endpoint(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    save_endpoint(&p, &me, Some(&id), endpoint_body(&f)).await
}

async fn endpoint(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let me = signed_in!(p, headers);
    let id = enc(&id);
    let ep = tryp!(p.get(&me, &format!("/v1/endpoints/{id}")).await);
    let secret = if q.contains_key("reveal") {
        Some(tryp!(
            p.get(&me, &format!("/v1/endpoints/{id}/secret")).await
        ))
    } else {
        None
    };
    let recent = tryp!(
        p.get(&me, &format!("/v1/endpoints/{id}/deliveries?limit=1000"))
            .await
    );
    let recent = recent["data"].as_array().cloned().unwrap_or_default();
    let now = p.app.clock.now();
    let svg = chart::deliveries_24h(&recent, now);
    let types = visible_types(&me);
    let shown: Vec<&Value> = recent.iter().take(50).collect();
    p.render(
        "endpoint.html",
        Some(&me),
        json!({
            "title": origin_of(ep["url"].as_str().unwrap_or("Endpoint")),"nav": "endpoints", "ep": ep, "state": state_of(&ep),
            "secret": secret, "deliveries": shown, "chart": svg,
            "rate": success_rate(&recent[..recent.len().min(100)]),
            "types": types, "notice": notice(&q),
        }),
    )
}

async fn confirm_delete(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let me = signed_in!(p, headers);
    let ep = tryp!(p.get(&me, &format!("/v1/endpoints/{}", enc(&id))).await);
    p.render(
        "confirm_delete.html",
        Some(&me),
        json!({"title": "Delete endpoint", "nav": "endpoints", "ep": ep}),
    )
}

/// Runs an action on the API and goes back to the endpoint's page with a
/// notice, or shows the API's error.
async fn act(
    p: &Portal,
    me: &Me,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Response> {
    let (status, out) = p.call(me, method, path, body).await;
    if status.is_success() {
        Ok(out)
    } else {
        Err(p.error_page(Some(me), status, &api_message(&out)))
    }
}

async fn delete_endpoint(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    tryp!(
        act(
            &p,
            &me,
            Method::DELETE,
            &format!("/v1/endpoints/{}", enc(&id)),
            None
        )
        .await
    );
    see_other("/portal/endpoints?notice=deleted")
}

async fn rotate(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    let id = enc(&id);
    tryp!(
        act(
            &p,
            &me,
            Method::POST,
            &format!("/v1/endpoints/{id}/secret/rotate"),
            Some(json!({}))
        )
        .await
    );
    see_other(&format!("/portal/endpoints/{id}?notice=rotated&reveal=1"))
}

async fn test_send(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    let id = enc(&id);
    let t = field(&f, "type");
    let body = if t.is_empty() {
        json!({})
    } else {
        json!({"type": t})
    };
    let attempt = tryp!(
        act(
            &p,
            &me,
            Method::POST,
            &format!("/v1/endpoints/{id}/test"),
            Some(body)
        )
        .await
    );
    let code = attempt["statusCode"]
        .as_u64()
        .map(|c| format!("&code={c}"))
        .unwrap_or_default();
    see_other(&format!("/portal/endpoints/{id}?notice=sent{code}"))
}

async fn replay(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    let id = enc(&id);
    let (after, since) = (field(&f, "after"), field(&f, "since"));
    let body = if !after.is_empty() {
        json!({"after": after.parse::<i64>().map(Value::from).unwrap_or(json!(after))})
    } else if !since.is_empty() {
        // <input type=datetime-local> gives "2026-11-29T10:00" in UTC here.
        let since = match since.len() {
            16 => format!("{since}:00Z"),
            19 => format!("{since}Z"),
            _ => since.to_string(),
        };
        json!({"since": since})
    } else {
        // Replaying everything is rarely meant: ask where to start.
        return see_other(&format!("/portal/endpoints/{id}?notice=replay-start"));
    };
    let out = tryp!(
        act(
            &p,
            &me,
            Method::POST,
            &format!("/v1/endpoints/{id}/replay"),
            Some(body)
        )
        .await
    );
    let n = out["queued"].as_u64().unwrap_or(0);
    if out["status"] == "running" {
        return see_other(&format!("/portal/endpoints/{id}?notice=replaying&n={n}"));
    }
    see_other(&format!("/portal/endpoints/{id}?notice=replayed&n={n}"))
}

async fn set_state(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    let id = enc(&id);
    let disable = field(&f, "disabled") == "true";
    tryp!(
        act(
            &p,
            &me,
            Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(json!({"disabled": disable}))
        )
        .await
    );
    let n = if disable { "disabled" } else { "enabled" };
    see_other(&format!("/portal/endpoints/{id}?notice={n}"))
}

async fn retry(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    let d = tryp!(
        act(
            &p,
            &me,
            Method::POST,
            &format!("/v1/deliveries/{}/retry", enc(&id)),
            None
        )
        .await
    );
    match d["endpointId"].as_str() {
        Some(ep) => see_other(&format!("/portal/endpoints/{}?notice=retried", enc(ep))),
        None => see_other("/portal/endpoints"),
    }
}

/// The CEL check as you type: the server's own compile of a filter.
async fn check_filter(State(p): State<Portal>, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    if p.me_posting(&headers, &f).await.is_none() {
        return secure(
            (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"ok": false, "error": "sign in again"})),
            )
                .into_response(),
        );
    }
    let source = field(&f, "filter");
    let result = if source.is_empty() {
        json!({"ok": true})
    } else {
        match eventflow_model::filter::Filter::compile(source, p.app.config.limits.cel_cost) {
            Ok(_) => json!({"ok": true}),
            Err(e) => json!({"ok": false, "error": e}),
        }
    };
    secure(axum::Json(result).into_response())
}

// ---- Events -----------------------------------------------------------------

async fn events(
    State(p): State<Portal>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let me = signed_in!(p, headers);
    const PAGE: i64 = 50;
    let types = q
        .get("types")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let record = q
        .get("record")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    // Newest first: the last PAGE events before `before` (default: the end).
    let before = q.get("before").and_then(|b| b.parse::<i64>().ok());
    let mut filter = String::new();
    if let Some(t) = &types {
        filter.push_str(&format!("&types={}", enc(t)));
    }
    if let Some(r) = &record {
        filter.push_str(&format!("&resourceId={}", enc(r)));
    }
    // Walk back from `before` (default: past the latest) in windows of
    // sequences, keeping the newest PAGE that match.
    let latest = match p.app.store.latest_sequence(&me.principal.tenant_id).await {
        Ok(l) => l,
        Err(_) => {
            return p.error_page(
                Some(&me),
                StatusCode::SERVICE_UNAVAILABLE,
                "the event log could not be read",
            );
        }
    };
    let mut hi = before.unwrap_or(latest + 1).min(latest + 1);
    let mut window: Vec<Value> = Vec::new();
    const STEP: i64 = 1000;
    // At most 20 windows (20,000 sequences) per page view; "Older" goes on.
    for _ in 0..20 {
        if hi <= 1 || window.len() >= PAGE as usize {
            break;
        }
        let lo = (hi - 1 - STEP).max(0);
        let (status, body) = p
            .call(
                &me,
                Method::GET,
                &format!("/v1/events?after={lo}&limit=1000{filter}"),
                None,
            )
            .await;
        if !status.is_success() {
            return p.render(
                "events.html",
                Some(&me),
                json!({"title": "Events", "nav": "events", "events": [], "types": types, "record": record,
                       "error": api_message(&body)}),
            );
        }
        let mut found: Vec<Value> = body["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["sequence"].as_i64().is_some_and(|s| s < hi))
            .collect();
        found.reverse();
        window.extend(found);
        hi = lo + 1;
    }
    window.truncate(PAGE as usize);
    let list = window;
    let older = if list.len() == PAGE as usize {
        list.last().and_then(|e| e["sequence"].as_i64())
    } else {
        (hi > 1).then_some(hi)
    };
    p.render(
        "events.html",
        Some(&me),
        json!({"title": "Events", "nav": "events", "events": list, "types": types, "record": record,
               "older": older, "filter": filter}),
    )
}

async fn event(State(p): State<Portal>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let me = signed_in!(p, headers);
    let id = enc(&id);
    let e = tryp!(p.get(&me, &format!("/v1/events/{id}")).await);
    let deliveries = tryp!(p.get(&me, &format!("/v1/events/{id}/deliveries")).await);
    let endpoints = tryp!(p.get(&me, "/v1/endpoints").await);
    let urls: HashMap<String, Value> = endpoints["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ep| Some((ep["id"].as_str()?.to_string(), ep["url"].clone())))
        .collect();
    let rows: Vec<Value> = deliveries["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let url = d["endpointId"]
                .as_str()
                .and_then(|i| urls.get(i))
                .cloned()
                .unwrap_or(json!("(deleted endpoint)"));
            json!({"d": d, "url": url})
        })
        .collect();
    let pretty = serde_json::to_string_pretty(&e).unwrap_or_default();
    p.render(
        "event.html",
        Some(&me),
        json!({"title": e["type"], "nav": "events", "e": e, "json": pretty, "deliveries": rows}),
    )
}

// ---- Automations ------------------------------------------------------------

async fn automations(State(p): State<Portal>, headers: HeaderMap) -> Response {
    let me = signed_in!(p, headers);
    let workflows = tryp!(p.get(&me, "/v1/workflows").await);
    let runs = tryp!(p.get(&me, "/v1/workflow-runs?limit=50").await);
    let outbox = tryp!(p.get(&me, "/v1/notifications?limit=50").await);
    let timers = tryp!(p.get(&me, "/v1/timers?limit=200").await);
    p.render(
        "automations.html",
        Some(&me),
        json!({
            "title": "Automations", "nav": "automations",
            "workflows": workflows["data"], "runs": runs["data"],
            "outbox": outbox["data"], "timers": timers["data"],
        }),
    )
}
