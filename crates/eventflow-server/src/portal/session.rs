//! Sessions: a random id in a cookie, the signed-in key's hash and the
//! session's CSRF token kept in memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use eventflow_model::scope::Scope;
use eventflow_store::Principal;

use super::{Portal, cookie, field};
use crate::auth::{constant_time_eq, hash_key};

/// How long a session lasts at most, and unused.
pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
pub(super) const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// Sessions kept at most, in all and per API key (the oldest go first).
const MAX_SESSIONS: usize = 10_000;
const MAX_SESSIONS_PER_KEY: usize = 20;
pub(super) const COOKIE: &str = "ef_session";
pub(super) const PRE_COOKIE: &str = "ef_signin";

pub(super) struct Session {
    /// The hash of the signed-in key's secret: every request checks it
    /// again, so a key revoked or expired ends its sessions at once.
    pub(super) key_hash: String,
    pub(super) key_id: String,
    pub(super) csrf: String,
    pub(super) created: Instant,
    pub(super) expires: Instant,
    pub(super) idle_until: Instant,
}

#[derive(Default)]
pub(super) struct Sessions {
    pub(super) by_id: HashMap<String, Session>,
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

    pub(super) fn insert(&mut self, id_hash: String, session: Session) {
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

/// The signed-in user of a request.
pub(super) struct Me {
    pub(super) principal: Principal,
    pub(super) csrf: String,
}

impl Portal {
    pub(super) fn cookie_attrs(&self) -> &'static str {
        if self.app.config.production || self.app.config.public_url().starts_with("https://") {
            "; Path=/portal; HttpOnly; SameSite=Strict; Secure"
        } else {
            "; Path=/portal; HttpOnly; SameSite=Strict"
        }
    }

    /// The signed-in user, with the key's scopes as they stand now: the
    /// key is checked again (through the API's key cache), and a session
    /// whose key was revoked, expired or lost `endpoints:read` ends.
    pub(super) async fn me(&self, headers: &HeaderMap) -> Option<Me> {
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
    pub(super) async fn me_posting(
        &self,
        headers: &HeaderMap,
        f: &[(String, String)],
    ) -> Option<Me> {
        let me = self.me(headers).await?;
        constant_time_eq(field(f, "csrf").as_bytes(), me.csrf.as_bytes()).then_some(me)
    }
}
