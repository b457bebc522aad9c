//! API keys: generation, hashing, and the `Authorization: Bearer` extractor.
//! Only the SHA-256 of a key is stored; a key is never logged.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eventflow_model::ResourceType;
use eventflow_model::id::{KeyId, TenantId};
use eventflow_model::scope::{Scope, Scopes};
use eventflow_store::Principal;
use jiff::Timestamp;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// 32 random bytes, base64url: a secret nobody can guess.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new API key: `efk_` and a [`random_token`].
pub fn generate_key() -> String {
    format!("efk_{}", random_token())
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long a key found in no tenant is remembered as unknown (at most
/// `key_cache_ttl_secs`): repeated bad keys cost no database read.
const NEGATIVE_TTL_SECS: u64 = 10;
/// The window in which failed attempts of one client address are counted.
const FAILURE_WINDOW_SECS: i64 = 60;

/// API keys already looked up, by hash, so a request usually costs no
/// database read; unknown keys too, for a short while; and the failed
/// attempts of each client address. All of it bounded (`key_cache_entries`
/// each) and timed on the injected clock: a known key is looked up again
/// after `key_cache_ttl_secs`, so a key removed from the database stops
/// working within that time.
#[derive(Debug)]
pub struct KeyCache {
    ttl: jiff::SignedDuration,
    negative_ttl: jiff::SignedDuration,
    entries: usize,
    failures_per_minute: u32,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// hash → (principal, looked up again after, the keys epoch it was read in)
    known: HashMap<String, (Principal, Timestamp, u64)>,
    /// key id → when its last use was last written
    touched: HashMap<KeyId, Timestamp>,
    /// hash → unknown until
    unknown: HashMap<String, Timestamp>,
    /// client address (an IPv6 address by its /64) → (window start, failures)
    failures: HashMap<IpAddr, (Timestamp, u32)>,
}

/// What the cache says of a key.
pub enum Lookup {
    Known(Principal),
    Unknown,
    /// Not cached: ask the database.
    Ask,
}

/// Drops expired entries of a full map; if it is still full, the entry
/// that expires first.
fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    cap: usize,
    now: Timestamp,
    expiry: impl Fn(&V) -> Timestamp,
) {
    if map.len() < cap {
        return;
    }
    map.retain(|_, v| expiry(v) > now);
    if map.len() >= cap
        && let Some(first) = map
            .iter()
            .min_by_key(|(_, v)| expiry(v))
            .map(|(k, _)| k.clone())
    {
        map.remove(&first);
    }
}

/// The address failures are counted by: IPv4 as is, IPv6 by its /64 (one
/// client usually holds a whole /64).
fn client_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl KeyCache {
    pub fn new(limits: &crate::config::Limits) -> KeyCache {
        let ttl = limits.key_cache_ttl_secs.max(1);
        KeyCache {
            ttl: jiff::SignedDuration::from_secs(ttl as i64),
            negative_ttl: jiff::SignedDuration::from_secs(NEGATIVE_TTL_SECS.min(ttl) as i64),
            entries: limits.key_cache_entries.max(1),
            failures_per_minute: limits.auth_failures_per_minute.max(1),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached answer for a key hash, if it was read in the keys epoch
    /// `epoch` (a key rotated or revoked since makes every entry stale).
    pub fn lookup(&self, hash: &str, now: Timestamp, epoch: u64) -> Lookup {
        let mut inner = self.lock();
        if let Some((p, until, read_in)) = inner.known.get(hash) {
            if *until > now && *read_in == epoch {
                return Lookup::Known(p.clone());
            }
            inner.known.remove(hash);
        }
        if let Some(until) = inner.unknown.get(hash) {
            if *until > now {
                return Lookup::Unknown;
            }
            inner.unknown.remove(hash);
        }
        Lookup::Ask
    }

    /// Remembers what the database said of a key hash, read in the keys
    /// epoch `epoch`.
    pub fn remember(&self, hash: String, principal: Option<Principal>, now: Timestamp, epoch: u64) {
        let mut inner = self.lock();
        match principal {
            Some(p) => {
                make_room(&mut inner.known, self.entries, now, |(_, t, _)| *t);
                inner.known.insert(hash, (p, now + self.ttl, epoch));
            }
            None => {
                make_room(&mut inner.unknown, self.entries, now, |t| *t);
                inner.unknown.insert(hash, now + self.negative_ttl);
            }
        }
    }

    /// `Some(seconds to wait)` when `client` has used up its failed
    /// attempts for the current minute.
    pub fn blocked(&self, client: Option<IpAddr>, now: Timestamp) -> Option<u64> {
        let client = client_bucket(client?);
        let inner = self.lock();
        let (start, n) = inner.failures.get(&client)?;
        let ends = *start + jiff::SignedDuration::from_secs(FAILURE_WINDOW_SECS);
        (ends > now && *n >= self.failures_per_minute).then(|| {
            let secs = ends.duration_since(now).as_secs_f64().ceil();
            (secs as u64).max(1)
        })
    }

    /// Counts one failed attempt of `client`.
    pub fn failed(&self, client: Option<IpAddr>, now: Timestamp) {
        let Some(client) = client.map(client_bucket) else {
            return;
        };
        let window = jiff::SignedDuration::from_secs(FAILURE_WINDOW_SECS);
        let mut inner = self.lock();
        match inner.failures.get_mut(&client) {
            Some((start, n)) if *start + window > now => *n = n.saturating_add(1),
            Some(entry) => *entry = (now, 1),
            None => {
                make_room(&mut inner.failures, self.entries, now, |(t, _)| *t + window);
                inner.failures.insert(client, (now, 1));
            }
        }
    }

    /// Whether the key's last use should be written now: at most once a
    /// minute per key (and not when the stored value is that recent).
    fn due_for_touch(&self, p: &Principal, now: Timestamp) -> bool {
        let minute = jiff::SignedDuration::from_secs(60);
        if p.last_used_at.is_some_and(|t| t + minute > now) {
            return false;
        }
        let mut inner = self.lock();
        if inner
            .touched
            .get(&p.key_id)
            .is_some_and(|t| *t + minute > now)
        {
            return false;
        }
        make_room(&mut inner.touched, self.entries, now, |t| *t + minute);
        inner.touched.insert(p.key_id.clone(), now);
        true
    }

    /// Whether a key checked earlier still holds (for a stream or a long
    /// poll, which outlive their check): not expired, and — once a key was
    /// rotated or revoked, or a clinic left an organisation, anywhere —
    /// still found, and an organisation key acting on a clinic still acting
    /// on a member. An atomic read unless something changed; `p` is
    /// refreshed when it was checked again.
    pub async fn still_valid(
        &self,
        store: &Arc<dyn eventflow_store::Store>,
        p: &mut Principal,
        now: Timestamp,
    ) -> bool {
        if p.valid_until.is_some_and(|until| until <= now) {
            return false;
        }
        if p.key_hash.is_empty() || store.notifier().keys_epoch() == p.keys_epoch {
            return true;
        }
        let Ok(mut fresh) = self
            .authenticate_hash(store, p.key_hash.clone(), None, now)
            .await
        else {
            return false;
        };
        if fresh.tenant_id != p.tenant_id {
            // An organisation's key acting on a clinic: still a member?
            let member = fresh.tenant_id.is_organisation()
                && matches!(
                    store.clinic(&fresh.tenant_id, &p.tenant_id).await,
                    Ok(Some(_))
                );
            if !member {
                return false;
            }
            fresh.tenant_id = p.tenant_id.clone();
        }
        *p = fresh;
        true
    }

    /// Checks a key for a request from `client`: the cache first, then the
    /// database. An address that has failed `auth_failures_per_minute`
    /// times this minute gets a 429 for any key not already cached as
    /// valid; every unknown, revoked or expired key is a failure, all
    /// answered alike.
    pub async fn authenticate(
        &self,
        store: &Arc<dyn eventflow_store::Store>,
        key: &str,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Principal, ApiError> {
        self.authenticate_hash(store, hash_key(key), client, now)
            .await
    }

    /// [`KeyCache::authenticate`] for a key known by its hash (a portal
    /// session's).
    pub async fn authenticate_hash(
        &self,
        store: &Arc<dyn eventflow_store::Store>,
        hash: String,
        client: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<Principal, ApiError> {
        let epoch = store.notifier().keys_epoch();
        let cached = self.lookup(&hash, now, epoch);
        let found = match cached {
            Lookup::Known(p) => Some(p),
            _ => {
                if let Some(wait) = self.blocked(client, now) {
                    return Err(ApiError::too_many_attempts(wait));
                }
                match cached {
                    Lookup::Ask => {
                        let found = store.authenticate(&hash).await?;
                        self.remember(hash, found.clone(), now, epoch);
                        found
                    }
                    _ => None,
                }
            }
        };
        let Some(mut p) = found.filter(|p| p.valid_until.is_none_or(|until| until > now)) else {
            self.failed(client, now);
            return Err(ApiError::unauthorized());
        };
        p.keys_epoch = epoch;
        if self.due_for_touch(&p, now) {
            // Off the request's path: the write joins the writer's next group.
            let store = store.clone();
            let change = eventflow_store::KeyChange::Touch {
                id: p.key_id.to_string(),
                at: eventflow_model::time::format(now),
            };
            tokio::spawn(async move {
                if let Err(e) = store.change_key(change).await {
                    tracing::warn!(error = %e, "could not note a key's last use");
                }
            });
        }
        Ok(p)
    }
}

/// A principal set on an in-process request by the portal, which has
/// authenticated the session itself. Only code of this crate can attach a
/// request extension: nothing from the network can.
#[derive(Debug, Clone)]
pub(crate) struct Internal(pub Principal);

/// The caller, authenticated by its API key.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl Auth {
    pub fn tenant(&self) -> &TenantId {
        &self.0.tenant_id
    }
    pub fn key_id(&self) -> &KeyId {
        &self.0.key_id
    }
    /// The key as the writer of a change.
    pub fn actor(&self) -> eventflow_store::Actor {
        eventflow_store::Actor::Key(self.0.key_id.to_string())
    }
    pub fn scopes(&self) -> &Scopes {
        &self.0.scopes
    }
    /// A vendor's portal session: only the endpoints of this owner.
    pub fn owner(&self) -> Option<&str> {
        self.0.owner.as_deref()
    }
    /// `403` naming the scope unless the key holds it.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.0.scopes.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(scope.name))
        }
    }
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health, metrics, the documentation, signed provider callbacks.
    Public,
    /// A valid key, whatever its scopes: the handler checks finer (a
    /// batch, each operation's collection).
    Key,
    /// A key with this scope.
    Scope(Scope),
}

/// What the route `path` (as the router matched it, `/v1/patients/{id}`)
/// needs for `method`. The OpenAPI document is written from this same
/// function, so it states exactly what the server checks. A `/v1` route
/// missing here needs `*`: forgetting one closes it, never opens it.
pub fn required(method: &Method, path: &str) -> Need {
    let reads = method == Method::GET || method == Method::HEAD;
    let rw = |read: Scope, write: Scope| Need::Scope(if reads { read } else { write });
    // FHIR: a record type's resources need its scopes; the
    // CapabilityStatement is public, as FHIR clients expect.
    if let Some(rest) = path.strip_prefix("/fhir/") {
        let ty = rest.split('/').next().unwrap_or_default();
        return match ResourceType::ALL
            .into_iter()
            .find(|rt| rt.fhir_name() == ty)
        {
            Some(rt) => rw(Scope::read(rt), Scope::write(rt)),
            None if ty == "metadata" => Need::Public,
            // What can be subscribed to: any key may read it.
            None if ty == "SubscriptionTopic" => Need::Key,
            // A subscription is an endpoint.
            None if ty == "Subscription" => rw(Scope::ENDPOINTS_READ, Scope::ENDPOINTS_WRITE),
            None => Need::Scope(Scope::ALL),
        };
    }
    if !path.starts_with("/v1/") || path.starts_with("/v1/inbound/") {
        return Need::Public;
    }
    // `/v1/{family}/{id}/{sub}…`, read without allocating (every request).
    let mut parts = path.trim_start_matches("/v1/").split('/');
    let family = parts.next().unwrap_or_default();
    let sub = parts.nth(1);
    // What a patient's data was disclosed to is the audit's, not the record's.
    if sub == Some("disclosure-accounting") {
        return Need::Scope(Scope::AUDIT_READ);
    }
    if let Some(rt) = ResourceType::ALL
        .into_iter()
        .find(|rt| rt.collection() == family)
    {
        return rw(Scope::read(rt), Scope::write(rt));
    }
    match (family, sub) {
        ("batch", _) => Need::Key,
        ("events", Some("deliveries")) => Need::Scope(Scope::ENDPOINTS_READ),
        ("events" | "event-types", _) => Need::Scope(Scope::EVENTS_READ),
        ("endpoints", Some("secret")) => Need::Scope(Scope::ENDPOINTS_WRITE),
        ("endpoints" | "deliveries", _) => rw(Scope::ENDPOINTS_READ, Scope::ENDPOINTS_WRITE),
        ("portal-links", _) => Need::Scope(Scope::ENDPOINTS_WRITE),
        ("audit-log" | "disclosures", _) => Need::Scope(Scope::AUDIT_READ),
        ("workflows" | "workflow-runs" | "notifications" | "timers", _) => {
            rw(Scope::WORKFLOWS_READ, Scope::WORKFLOWS_WRITE)
        }
        ("api-keys", _) => Need::Scope(Scope::KEYS_MANAGE),
        // Listing its clinics needs only an organisation key; changing who
        // belongs needs clinics:manage.
        ("clinics", _) if reads => Need::Key,
        ("clinics", _) => Need::Scope(Scope::CLINICS_MANAGE),
        _ => Need::Scope(Scope::ALL),
    }
}

/// Authenticates and authorises every request to a `/v1` route before its
/// handler runs (the route's [`required`] scope, `403` naming it when
/// missing), and hands the principal on to [`Auth`].
pub async fn authorize(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let need = match &matched {
        Some(m) => required(req.method(), m.as_str()),
        // Route layers run only for matched routes; refuse rather than assume.
        None => Need::Scope(Scope::ALL),
    };
    if need == Need::Public {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let principal = match principal(&mut parts, &state).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Need::Scope(scope) = need
        && !principal.scopes.allows(scope)
    {
        return ApiError::forbidden(scope.name).into_response();
    }
    // An organisation key without Eventflow-Clinic reads its network; what
    // acts on one clinic needs the header.
    if principal.tenant_id.is_organisation()
        && let Some(m) = &matched
        && !network_route(&parts.method, m.as_str())
    {
        return ApiError::invalid(
            "Eventflow-Clinic",
            "an organisation key acts on one member clinic: send Eventflow-Clinic: ten_… (GET /v1/clinics lists them)",
        )
        .into_response();
    }
    parts.extensions.insert(Authorized(principal));
    req = Request::from_parts(parts, body);
    next.run(req).await
}

/// The header with which an organisation key acts on one member clinic.
pub const CLINIC_HEADER: &str = "eventflow-clinic";

/// Whether an organisation key may use the `/v1` route `path` without
/// [`CLINIC_HEADER`]: the network's event log and record lists, the
/// catalogue, and what the organisation itself owns (its endpoints and
/// their deliveries, its workflows with their runs, timers and outbox, its
/// keys, its clinics, its audit log).
pub fn network_route(method: &Method, path: &str) -> bool {
    let mut parts = path.trim_start_matches("/v1/").split('/');
    let family = parts.next().unwrap_or_default();
    let is_list = parts.next().is_none();
    if ResourceType::ALL.iter().any(|rt| rt.collection() == family) {
        return is_list && method == Method::GET;
    }
    matches!(
        family,
        "events"
            | "event-types"
            | "endpoints"
            | "deliveries"
            | "workflows"
            | "workflow-runs"
            | "timers"
            | "notifications"
            | "api-keys"
            | "clinics"
            | "audit-log"
            | "disclosures"
            | "settings"
            | "portal-links"
    )
}

/// The tenant a request acts on. An organisation key names one of its
/// member clinics with [`CLINIC_HEADER`] and acts on it as a key of that
/// clinic with the organisation key's scopes would (its audit entries name
/// the organisation's key); without it, it reads its network. A clinic key
/// may name only itself. A clinic that is not a member is a `404`, like any
/// other tenant's data.
async fn acting(parts: &Parts, state: &AppState, mut p: Principal) -> Result<Principal, ApiError> {
    let Some(header) = parts.headers.get(CLINIC_HEADER) else {
        return Ok(p);
    };
    let unknown = || {
        ApiError::not_found("no clinic of that id here (GET /v1/clinics lists an organisation's)")
    };
    let clinic = header
        .to_str()
        .ok()
        .and_then(|text| TenantId::parse(text.trim()).ok())
        .ok_or_else(unknown)?;
    if !p.tenant_id.is_organisation() {
        return if p.tenant_id == clinic {
            Ok(p)
        } else {
            Err(unknown())
        };
    }
    if state.store.clinic(&p.tenant_id, &clinic).await?.is_none() {
        return Err(unknown());
    }
    p.tenant_id = clinic;
    Ok(p)
}

/// The principal [`authorize`] found.
#[derive(Debug, Clone)]
struct Authorized(Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(Authorized(p)) = parts.extensions.get::<Authorized>() {
            return Ok(Auth(p.clone()));
        }
        principal(parts, state).await.map(Auth)
    }
}

/// The caller of a request: the portal's signed-in key, or the request's
/// `Authorization: Bearer` key, acting on the tenant it names
/// ([`acting`]).
async fn principal(parts: &mut Parts, state: &AppState) -> Result<Principal, ApiError> {
    if let Some(Internal(p)) = parts.extensions.get::<Internal>() {
        return Ok(p.clone());
    }
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(ApiError::unauthorized)?;
    let key = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .ok_or_else(ApiError::unauthorized)?;
    let client = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let p = state
        .keys
        .authenticate(&state.store, key, client, state.clock.now())
        .await?;
    acting(parts, state, p).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(n: usize) -> Principal {
        Principal::everything(
            TenantId::from_stored(format!("ten_{n}")),
            KeyId::from_stored(format!("key_{n}")),
        )
    }

    #[test]
    fn every_map_of_the_cache_stays_within_key_cache_entries() {
        let limits = crate::config::Limits {
            key_cache_entries: 3,
            ..Default::default()
        };
        let cache = KeyCache::new(&limits);
        let now = Timestamp::now();
        for n in 0..100 {
            cache.remember(format!("known{n}"), Some(principal(n)), now, 0);
            cache.remember(format!("unknown{n}"), None, now, 0);
            cache.failed(Some(IpAddr::from([10, 0, 0, n as u8])), now);
        }
        let inner = cache.lock();
        assert_eq!(inner.known.len(), 3);
        assert_eq!(inner.unknown.len(), 3);
        assert_eq!(inner.failures.len(), 3);
    }

    #[test]
    fn unknown_keys_are_forgotten_quickly_and_known_ones_after_the_ttl() {
        let cache = KeyCache::new(&crate::config::Limits::default());
        let now = Timestamp::now();
        cache.remember("k".into(), Some(principal(1)), now, 0);
        cache.remember("u".into(), None, now, 0);
        assert!(matches!(cache.lookup("u", now, 0), Lookup::Unknown));
        let later = now + jiff::SignedDuration::from_secs(11);
        assert!(matches!(cache.lookup("u", later, 0), Lookup::Ask));
        assert!(matches!(cache.lookup("k", later, 0), Lookup::Known(_)));
        let later = now + jiff::SignedDuration::from_secs(60);
        assert!(matches!(cache.lookup("k", later, 0), Lookup::Ask));
    }

    #[test]
    fn a_keys_last_use_is_written_at_most_once_a_minute() {
        let cache = KeyCache::new(&crate::config::Limits::default());
        let now = Timestamp::now();
        let p = principal(1);
        assert!(cache.due_for_touch(&p, now));
        assert!(!cache.due_for_touch(&p, now + jiff::SignedDuration::from_secs(59)));
        assert!(cache.due_for_touch(&p, now + jiff::SignedDuration::from_secs(60)));
        // Nor when the stored value is that recent (another node wrote it).
        let recent = Principal {
            last_used_at: Some(now),
            ..principal(2)
        };
        assert!(!cache.due_for_touch(&recent, now + jiff::SignedDuration::from_secs(30)));
    }

    #[test]
    fn a_key_change_makes_every_cached_key_stale() {
        let cache = KeyCache::new(&crate::config::Limits::default());
        let now = Timestamp::now();
        cache.remember("k".into(), Some(principal(1)), now, 7);
        assert!(matches!(cache.lookup("k", now, 7), Lookup::Known(_)));
        assert!(matches!(cache.lookup("k", now, 8), Lookup::Ask));
        // Read before the change, remembered after it: never served.
        cache.remember("k".into(), Some(principal(1)), now, 7);
        assert!(matches!(cache.lookup("k", now, 8), Lookup::Ask));
    }

    #[test]
    fn every_v1_route_family_needs_a_scope_and_unknown_ones_need_everything() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required(&get, "/healthz"), Need::Public);
        assert_eq!(required(&post, "/v1/inbound/twilio/{tenant}"), Need::Public);
        assert_eq!(
            required(&get, "/v1/appointments/{id}"),
            Need::Scope(Scope::read(ResourceType::Appointment))
        );
        assert_eq!(
            required(&Method::PATCH, "/v1/patients/{id}"),
            Need::Scope(Scope::write(ResourceType::Patient))
        );
        assert_eq!(
            required(&get, "/v1/endpoints/{id}/secret"),
            Need::Scope(Scope::ENDPOINTS_WRITE)
        );
        assert_eq!(required(&get, "/v1/somewhere-new"), Need::Scope(Scope::ALL));
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(client_bucket(a), client_bucket(b));
        let v4: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_bucket(v4), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
