//! API keys: what is stored of them, and their changes (create, rotate,
//! revoke, last use). A change and its audit entry commit together; on
//! PostgreSQL the commit also tells every node to drop its cached keys.
//! Only the SHA-256 of a secret is stored.

pub(crate) mod sql;

use eventflow_model::id::{self, KeyId, TenantId};
use eventflow_model::scope::Scopes;

use crate::error::{Result, StoreError};
use crate::records::{AuditEntry, RecordTx};

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    /// `key_…`.
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// Updated at most once a minute.
    pub last_used_at: Option<String>,
    /// The first 8 characters of the secret after `efk_` (`null` for a key
    /// whose secret was never seen by this version).
    pub prefix: Option<String>,
}

/// Who is calling: the tenant and key an API key belongs to, with what the
/// key may do and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
    /// The SHA-256 of the secret that authenticated (to check it again).
    pub key_hash: String,
    pub scopes: Scopes,
    /// The key stops working at this time (its expiry, or the end of a
    /// rotated secret's grace period).
    pub valid_until: Option<jiff::Timestamp>,
    pub last_used_at: Option<jiff::Timestamp>,
    /// The [`keys epoch`](crate::Notifier::keys_epoch) the key was checked
    /// in: once it moves, a long-lived request checks the key again.
    pub keys_epoch: u64,
    /// A vendor's portal session: only the endpoints with this `owner`
    /// (`None`: an API key, no such limit).
    pub owner: Option<String>,
}

impl Principal {
    /// A key with every scope that never expires (the portal's tests, tools).
    pub fn everything(tenant_id: TenantId, key_id: KeyId) -> Principal {
        Principal {
            tenant_id,
            key_id,
            key_hash: String::new(),
            scopes: Scopes::everything(),
            valid_until: None,
            last_used_at: None,
            keys_epoch: 0,
            owner: None,
        }
    }
}

/// A new secret: its hash (stored) and its prefix (shown).
#[derive(Debug, Clone)]
pub struct Secret {
    pub hash: String,
    pub prefix: String,
}

/// A change to a tenant's keys, made by the key `actor`.
#[derive(Debug, Clone)]
pub enum KeyChange {
    Create {
        tenant: String,
        actor: String,
        name: String,
        scopes: Scopes,
        secret: Secret,
        expires_at: Option<String>,
        /// Refused (409) when the tenant already has this many live keys.
        max_keys: u32,
    },
    /// A new secret for the key; the old one works until `grace_until`
    /// (`None`: stops at once).
    Rotate {
        tenant: String,
        actor: String,
        id: String,
        secret: Secret,
        grace_until: Option<String>,
    },
    Revoke {
        tenant: String,
        actor: String,
        id: String,
    },
    /// Notes a key's use (at most once a minute per key, by the caller).
    Touch { id: String, at: String },
}

/// The columns of [`ApiKey`], in its field order.
pub(crate) const KEY_COLUMNS: &str =
    "id, name, scopes, created_at, expires_at, last_used_at, prefix";

/// One live key of a tenant (`$1` the tenant, `$2` the id), as
/// [`KEY_COLUMNS`]: the same read on the writer's connection and the pool.
pub(crate) fn live_key_sql() -> String {
    format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL"
    )
}

/// A key as its columns hold it ([`KEY_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(crate) struct KeyColumns {
    id: String,
    name: String,
    scopes: String,
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    prefix: Option<String>,
}

/// Makes a key from a row of [`KEY_COLUMNS`], by column name.
pub(crate) fn key_from_row<'r, R: sqlx::Row>(row: &'r R) -> Result<ApiKey>
where
    KeyColumns: sqlx::FromRow<'r, R>,
{
    let c = <KeyColumns as sqlx::FromRow<R>>::from_row(row)?;
    Ok(ApiKey {
        id: c.id,
        name: c.name,
        scopes: serde_json::from_str(&c.scopes).map_err(|_| StoreError::corrupt("key scopes"))?,
        created_at: c.created_at,
        expires_at: c.expires_at,
        last_used_at: c.last_used_at,
        prefix: c.prefix,
    })
}

fn audit(tenant: &str, actor: &str, action: &str, key_id: &str, at: &str) -> AuditEntry {
    AuditEntry {
        id: id::new_id("aud"),
        tenant: tenant.into(),
        at: at.into(),
        key_id: actor.into(),
        action: action.into(),
        resource_type: "api_key".into(),
        resource_id: key_id.into(),
    }
}

/// Applies a key change inside the writer's transaction: the key as it now
/// stands (`None`: no such live key of the tenant, or a touch).
pub(crate) async fn apply<C: KeyConn + ?Sized>(
    conn: &mut C,
    change: &KeyChange,
    now: &str,
) -> Result<Option<ApiKey>> {
    match change {
        KeyChange::Create {
            tenant,
            actor,
            name,
            scopes,
            secret,
            expires_at,
            max_keys,
        } => {
            // Under the tenant's lock: two nodes cannot both pass the cap.
            conn.lock_tenant(tenant).await?;
            if conn.count_live_keys(tenant).await? >= i64::from(*max_keys) {
                return Err(StoreError::Conflict(format!(
                    "this tenant already has {max_keys} keys (limits.keys_per_tenant); revoke one first"
                )));
            }
            let key = ApiKey {
                id: eventflow_model::id::KeyId::fresh().into_string(),
                name: name.clone(),
                scopes: scopes.names().to_vec(),
                created_at: now.into(),
                expires_at: expires_at.clone(),
                last_used_at: None,
                prefix: Some(secret.prefix.clone()),
            };
            conn.insert_scoped_key(tenant, &key, &secret.hash).await?;
            conn.insert_audit(&audit(tenant, actor, "key.created", &key.id, now))
                .await?;
            Ok(Some(key))
        }
        KeyChange::Rotate {
            tenant,
            actor,
            id,
            secret,
            grace_until,
        } => {
            if !conn
                .rotate_key(tenant, id, secret, grace_until.as_deref())
                .await?
            {
                return Ok(None);
            }
            conn.insert_audit(&audit(tenant, actor, "key.rotated", id, now))
                .await?;
            conn.announce_keys().await?;
            conn.load_key(tenant, id).await
        }
        KeyChange::Revoke { tenant, actor, id } => {
            let Some(key) = conn.load_key(tenant, id).await? else {
                return Ok(None);
            };
            conn.revoke_key(tenant, id, now).await?;
            conn.insert_audit(&audit(tenant, actor, "key.revoked", id, now))
                .await?;
            conn.announce_keys().await?;
            Ok(Some(key))
        }
        KeyChange::Touch { id, at } => {
            conn.touch_key(id, at).await?;
            Ok(None)
        }
    }
}

/// Whether a change can make a cached key wrong (every node must drop its
/// cache when it commits).
pub(crate) fn invalidates(change: &KeyChange) -> bool {
    matches!(change, KeyChange::Rotate { .. } | KeyChange::Revoke { .. })
}

/// A tenant just created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
}

/// The SQL the writer's connection runs for keys (inside its group
/// transaction).
#[async_trait::async_trait]
pub(crate) trait KeyConn: RecordTx {
    /// Inserts a tenant's first key, with every scope.
    async fn insert_api_key(
        &mut self,
        id: &str,
        tenant: &str,
        key_hash: &str,
        name: &str,
        now: &str,
    ) -> Result<()>;
    /// The tenant's keys not revoked.
    async fn count_live_keys(&mut self, tenant: &str) -> Result<i64>;
    async fn insert_scoped_key(&mut self, tenant: &str, key: &ApiKey, key_hash: &str)
    -> Result<()>;
    /// A live key of the tenant.
    async fn load_key(&mut self, tenant: &str, id: &str) -> Result<Option<ApiKey>>;
    /// Gives a live key a new secret; the old one stays valid until
    /// `grace_until` when given. `false`: no such live key.
    async fn rotate_key(
        &mut self,
        tenant: &str,
        id: &str,
        secret: &Secret,
        grace_until: Option<&str>,
    ) -> Result<bool>;
    async fn revoke_key(&mut self, tenant: &str, id: &str, now: &str) -> Result<()>;
    async fn touch_key(&mut self, id: &str, at: &str) -> Result<()>;
    /// Tells other nodes, at commit, that a key changed.
    async fn announce_keys(&mut self) -> Result<()>;
    async fn insert_portal_link(&mut self, link: &PortalLink) -> Result<()>;
    /// Marks a link used, if it is unused and unexpired at `now`; returns it.
    async fn take_portal_link(&mut self, token_hash: &str, now: &str)
    -> Result<Option<PortalLink>>;
}

/// A vendor portal link: a single-use sign-in to the endpoints of one owner.
#[derive(Debug, Clone, PartialEq)]
pub struct PortalLink {
    /// `plk_…`
    pub id: String,
    pub tenant_id: String,
    /// The key that made it.
    pub key_id: String,
    /// The SHA-256 of that key's secret: the session lasts while it is live.
    pub key_hash: String,
    /// The SHA-256 of the link's token (the token itself is never kept).
    pub token_hash: String,
    pub owner: String,
    pub read_only: bool,
    /// The scopes the session gets.
    pub scopes: Vec<String>,
    pub created_at: String,
    pub expires_at: String,
}

/// A tenant's settings (`/v1/settings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSettings {
    /// `thin`: no endpoint may have full payloads.
    pub max_payload: crate::delivery::PayloadMode,
}

/// Tenants and their API keys, and the store's housekeeping (health, retention).
#[async_trait::async_trait]
pub trait Tenants: Send + Sync + 'static {
    /// The tenant, key and scopes of a live API key, by the SHA-256 hash of
    /// its secret (or of the secret a rotation replaced, still in its grace
    /// period: `valid_until` says until when).
    async fn authenticate(&self, key_hash: &str) -> Result<Option<Principal>>;

    /// Creates, rotates, revokes or touches a key, with its audit entry;
    /// the key as it now stands (`None`: no such live key).
    async fn change_key(&self, change: KeyChange) -> Result<Option<ApiKey>>;

    /// The tenant's live keys, oldest first.
    async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKey>>;

    /// One live key of the tenant.
    async fn api_key(&self, tenant: &TenantId, id: &KeyId) -> Result<Option<ApiKey>>;

    /// Creates a tenant with one API key (given as its hash). With
    /// `only_if_no_tenants`, does nothing (and returns `None`) unless the
    /// database has no tenant yet: the bootstrap on first start.
    async fn create_tenant(
        &self,
        name: &str,
        key_hash: &str,
        only_if_no_tenants: bool,
    ) -> Result<Option<NewTenant>>;

    /// Deletes the history older than `r` says (events with their
    /// deliveries, finished deliveries, audit entries, disclosure records),
    /// in writes of bounded size; then idempotency keys older than 24
    /// hours and provider quota counts more than four days old. Returns
    /// how many rows of each kind went.
    async fn purge(&self, r: crate::writer::Retention) -> Result<crate::writer::Purged>;

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<()>;

    /// The tenant's settings.
    async fn settings(&self, tenant: &TenantId) -> Result<TenantSettings>;

    /// Keeps a new portal link, with its audit entry.
    async fn create_portal_link(&self, link: PortalLink, audit: crate::AuditEntry) -> Result<()>;

    /// Uses a portal link: the link, when its token's hash names one not
    /// used and not expired at `now` (it is used from then on), with its
    /// audit entry; `None` otherwise.
    async fn use_portal_link(
        &self,
        token_hash: &str,
        now: jiff::Timestamp,
    ) -> Result<Option<PortalLink>>;

    /// Changes the tenant's settings under its lock. `thin` while an
    /// endpoint of the tenant has full payloads is a conflict.
    async fn change_settings(
        &self,
        tenant: &TenantId,
        to: TenantSettings,
    ) -> Result<TenantSettings>;
}
