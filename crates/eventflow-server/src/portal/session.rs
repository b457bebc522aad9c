//! Sessions, and the two extractors every page and form goes through.
//!
//! A session is a random id in a cookie; the server keeps, in memory, the
//! hash of the signed-in key's secret and the session's CSRF token.
//! - [`Me`], the signed-in user: looked up from the cookie, its key checked
//!   again (a revoked or expired key, or one without `endpoints:read`, ends
//!   the session); without one, the request goes to the sign-in page.
//! - [`Posted`], a form posted by the signed-in user with the session's
//!   CSRF token; a missing or wrong token is refused ([`Refused`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use eventflow_model::scope::Scope;
use eventflow_store::Principal;

use super::{Portal, cookie, field, form};
use crate::auth::{constant_time_eq, hash_key, random_token};

/// How long a session lasts at most, and unused.
pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// Sessions kept at most, in all and per API key (the oldest go first).
const MAX_SESSIONS: usize = 10_000;
const MAX_SESSIONS_PER_KEY: usize = 20;
pub(super) const COOKIE: &str = "ef_session";
pub(super) const PRE_COOKIE: &str = "ef_signin";

/// What a session signed in with.
enum Credential {
    /// An API key: the hash of its secret. Every request checks it again,
    /// so a key revoked or expired ends its sessions at once.
    Key(String),
    /// A vendor portal link (used once): the session acts as this, on the
    /// endpoints of its owner only, while the key that made the link (the
    /// hash of its secret) is live.
    Link(Box<Principal>, String),
}

struct Session {
    credential: Credential,
    key_id: String,
    csrf: String,
    created: Instant,
    expires: Instant,
    idle_until: Instant,
    /// An organisation's key: the member clinic the portal acts on (none:
    /// the network view).
    clinic: Option<String>,
}

#[derive(Default)]
pub(super) struct Sessions {
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

/// The signed-in user of a request, with the key's scopes as they stand
/// now. As an extractor, it redirects to the sign-in page when nobody is
/// signed in; as `Option<Me>`, it never refuses.
pub(super) struct Me {
    pub(super) principal: Principal,
    pub(super) csrf: String,
    /// An organisation's key: its id, and its member clinics to switch
    /// between (the principal acts on the chosen one, or on the network).
    pub(super) organisation: Option<(String, Vec<eventflow_store::Clinic>)>,
    /// The hash of the session's id (the key of [`Sessions`]).
    session: String,
}

impl FromRequestParts<Portal> for Me {
    type Rejection = Redirect;

    async fn from_request_parts(parts: &mut Parts, p: &Portal) -> Result<Self, Redirect> {
        p.me(&parts.headers)
            .await
            .ok_or_else(|| Redirect::to("/portal/sign-in"))
    }
}

impl OptionalFromRequestParts<Portal> for Me {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, p: &Portal) -> Result<Option<Self>, Infallible> {
        Ok(p.me(&parts.headers).await)
    }
}

/// A form (`application/x-www-form-urlencoded`) posted by the signed-in
/// user, whose `csrf` field is the session's token.
pub(super) struct Posted {
    pub(super) me: Me,
    fields: Vec<(String, String)>,
}

impl Posted {
    /// A field's value, trimmed; empty when the form has none.
    pub(super) fn field(&self, name: &str) -> &str {
        field(&self.fields, name)
    }

    /// The fields in order (a field may repeat: checkboxes).
    pub(super) fn fields(&self) -> &[(String, String)] {
        &self.fields
    }
}

/// Why a [`Posted`] form was refused.
pub(super) enum Refused {
    /// The body could not be read: axum's own answer.
    Body(Response),
    /// Nobody is signed in: to the sign-in page.
    SignedOut,
    /// Signed in, but the token is missing or wrong: a 403 error page.
    Token(Response),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Body(r) | Refused::Token(r) => r,
            Refused::SignedOut => Redirect::to("/portal/sign-in").into_response(),
        }
    }
}

impl FromRequest<Portal> for Posted {
    type Rejection = Refused;

    async fn from_request(req: Request, p: &Portal) -> Result<Self, Refused> {
        let id = cookie(req.headers(), COOKIE).map(str::to_owned);
        let body = Bytes::from_request(req, p)
            .await
            .map_err(|e| Refused::Body(e.into_response()))?;
        let fields = form(&body);
        let Some(me) = p.session(id.as_deref()).await else {
            return Err(Refused::SignedOut);
        };
        if !constant_time_eq(field(&fields, "csrf").as_bytes(), me.csrf.as_bytes()) {
            return Err(Refused::Token(p.error_page(
                Some(&me),
                StatusCode::FORBIDDEN,
                "The form's security token did not match; reload the page and try again.",
            )));
        }
        Ok(Posted { me, fields })
    }
}

impl Portal {
    pub(super) fn cookie_attrs(&self) -> &'static str {
        if self.app.config.production || self.app.config.public_url().starts_with("https://") {
            "; Path=/portal; HttpOnly; SameSite=Strict; Secure"
        } else {
            "; Path=/portal; HttpOnly; SameSite=Strict"
        }
    }

    /// The signed-in user of a request's session cookie.
    async fn me(&self, headers: &HeaderMap) -> Option<Me> {
        self.session(cookie(headers, COOKIE)).await
    }

    /// The signed-in user of a session id, with the key's scopes as they
    /// stand now: the key is checked again (through the API's key cache),
    /// and a session whose key was revoked, expired or lost
    /// `endpoints:read` ends.
    async fn session(&self, id: Option<&str>) -> Option<Me> {
        let session_hash = hash_key(id?);
        let (credential, csrf, clinic) = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            sessions.sweep(now);
            let s = sessions.by_id.get_mut(&session_hash)?;
            if s.expires <= now || s.idle_until <= now {
                sessions.by_id.remove(&session_hash);
                return None;
            }
            s.idle_until = now + SESSION_IDLE;
            let credential = match &s.credential {
                Credential::Key(hash) => (hash.clone(), None),
                Credential::Link(p, maker) => (maker.clone(), Some((**p).clone())),
            };
            (credential, s.csrf.clone(), s.clinic.clone())
        };
        let (key_hash, link) = credential;
        if let Some(principal) = link {
            // The key that made the link must still be live.
            let live = self
                .app
                .keys
                .authenticate_hash(&self.app.store, key_hash, None, self.app.clock.now())
                .await
                .is_ok();
            if !live {
                self.sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .by_id
                    .remove(&session_hash);
                return None;
            }
            return Some(Me {
                principal,
                csrf,
                organisation: None,
                session: session_hash,
            });
        }
        let checked = self
            .app
            .keys
            .authenticate_hash(&self.app.store, key_hash, None, self.app.clock.now())
            .await;
        match checked {
            Ok(mut principal) if principal.scopes.allows(Scope::ENDPOINTS_READ) => {
                let organisation = if principal.tenant_id.is_organisation() {
                    let org = principal.tenant_id.clone();
                    let clinics = self.app.store.clinics(&org).await.unwrap_or_default();
                    // Acting on a clinic that is still a member; else the
                    // network view.
                    if let Some(c) = clinic.filter(|c| clinics.iter().any(|m| &m.id == c)) {
                        principal.tenant_id = eventflow_model::id::TenantId::from_stored(c);
                    }
                    Some((org.into_string(), clinics))
                } else {
                    None
                };
                Some(Me {
                    principal,
                    csrf,
                    organisation,
                    session: session_hash,
                })
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

    /// Starts a session for `key`, just checked, and returns its id (the
    /// cookie's value). A new id at every sign-in (no fixation); the
    /// browser's earlier session, named in `headers`, ends.
    pub(super) fn start_session(
        &self,
        headers: &HeaderMap,
        key: &str,
        principal: &Principal,
    ) -> String {
        self.open(
            headers,
            principal.key_id.to_string(),
            Credential::Key(hash_key(key)),
        )
    }

    /// Starts a session for a portal link just used: it acts as
    /// `principal` (the link's owner's endpoints only) while the key that
    /// made the link (`maker_hash`) is live, and lasts at most
    /// [`SESSION_TTL`]. Returns its id (the cookie's value).
    pub(super) fn start_link_session(
        &self,
        headers: &HeaderMap,
        principal: Principal,
        maker_hash: String,
    ) -> String {
        let key_id = principal.key_id.to_string();
        self.open(
            headers,
            key_id,
            Credential::Link(Box::new(principal), maker_hash),
        )
    }

    /// A new session (a new id each time: no fixation); the browser's
    /// earlier one, named in `headers`, ends. Returns its id.
    fn open(&self, headers: &HeaderMap, key_id: String, credential: Credential) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = cookie(headers, COOKIE) {
            sessions.by_id.remove(&hash_key(old));
        }
        sessions.insert(
            hash_key(&id),
            Session {
                credential,
                key_id,
                csrf: random_token(),
                created: now,
                expires: now + SESSION_TTL,
                idle_until: now + SESSION_IDLE,
                clinic: None,
            },
        );
        id
    }

    /// Sets the member clinic an organisation's session acts on (`None`:
    /// the network view).
    pub(super) fn act_on(&self, me: &Me, clinic: Option<String>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sessions.by_id.get_mut(&me.session) {
            s.clinic = clinic;
        }
    }

    /// Ends the session of `me`.
    pub(super) fn end_session(&self, me: &Me) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .remove(&me.session);
    }
}
