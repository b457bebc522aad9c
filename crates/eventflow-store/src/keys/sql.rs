//! The keys' and tenants' SQL, once for both backends (see
//! [`records::sql`](crate::records::sql) for why these are macros).

/// [`KeyConn`](crate::keys::KeyConn) for a backend's write connection.
macro_rules! impl_key_conn {
    ($conn:ty, announce_keys: $announce_keys:expr $(,)?) => {
        const _: () = {
            use async_trait::async_trait;


            use sqlx::Row;

            use crate::codec::json_text;

            use crate::error::Result;
            use crate::keys::*;




        #[async_trait]
        impl KeyConn for $conn {
            async fn insert_api_key(&mut self, id: &str, tenant: &str, key_hash: &str, name: &str, now: &str) -> Result<()> {
                sqlx::query("INSERT INTO api_keys (id, tenant_id, key_hash, created_at, name) VALUES ($1, $2, $3, $4, $5)")
                    .bind(id)
                    .bind(tenant)
                    .bind(key_hash)
                    .bind(now)
                    .bind(name)
                    .execute(&mut self.conn)
                    .await?;
                Ok(())
            }
            async fn count_live_keys(&mut self, tenant: &str) -> Result<i64> {
                Ok(sqlx::query("SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL")
                    .bind(tenant)
                    .fetch_one(&mut self.conn)
                    .await?
                    .get(0))
            }
            async fn insert_scoped_key(&mut self, tenant: &str, key: &crate::keys::ApiKey, key_hash: &str) -> Result<()> {
                sqlx::query(
                    "INSERT INTO api_keys (id, tenant_id, key_hash, created_at, name, scopes, prefix, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&key.id)
                .bind(tenant)
                .bind(key_hash)
                .bind(&key.created_at)
                .bind(&key.name)
                .bind(json_text(&key.scopes)?)
                .bind(&key.prefix)
                .bind(&key.expires_at)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }
            async fn load_key(&mut self, tenant: &str, id: &str) -> Result<Option<crate::keys::ApiKey>> {
                let row = sqlx::query(sqlx::AssertSqlSafe(crate::keys::live_key_sql()))
                    .bind(tenant)
                    .bind(id)
                    .fetch_optional(&mut self.conn)
                    .await?;
                row.as_ref().map(crate::keys::key_from_row).transpose()
            }
            async fn rotate_key(
                &mut self,
                tenant: &str,
                id: &str,
                secret: &crate::keys::Secret,
                grace_until: Option<&str>,
            ) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE api_keys SET \
                     previous_hash = CASE WHEN $4 IS NULL THEN NULL ELSE key_hash END, \
                     previous_until = $4, key_hash = $3, prefix = $5 \
                     WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
                )
                .bind(tenant)
                .bind(id)
                .bind(&secret.hash)
                .bind(grace_until)
                .bind(&secret.prefix)
                .execute(&mut self.conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }
            async fn revoke_key(&mut self, tenant: &str, id: &str, now: &str) -> Result<()> {
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = $3, previous_hash = NULL, previous_until = NULL \
                     WHERE tenant_id = $1 AND id = $2",
                )
                .bind(tenant)
                .bind(id)
                .bind(now)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }
            async fn touch_key(&mut self, id: &str, at: &str) -> Result<()> {
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 \
                     AND (last_used_at IS NULL OR last_used_at < $2)",
                )
                .bind(id)
                .bind(at)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }
            async fn insert_portal_link(&mut self, l: &crate::keys::PortalLink) -> Result<()> {
                sqlx::query(
                    "INSERT INTO portal_links (id, tenant_id, key_id, token_hash, owner, read_only, created_at, expires_at, scopes, key_hash) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&l.id)
                .bind(&l.tenant_id)
                .bind(&l.key_id)
                .bind(&l.token_hash)
                .bind(&l.owner)
                .bind(i64::from(l.read_only))
                .bind(&l.created_at)
                .bind(&l.expires_at)
                .bind(crate::codec::json_text(&l.scopes)?)
                .bind(&l.key_hash)
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }
            async fn take_portal_link(&mut self, token_hash: &str, now: &str) -> Result<Option<crate::keys::PortalLink>> {
                let row = sqlx::query(
                    "UPDATE portal_links SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                     RETURNING id, tenant_id, key_id, token_hash, owner, read_only, created_at, expires_at, scopes, key_hash",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&mut self.conn)
                .await?;
                row.map(|r| Ok(crate::keys::PortalLink {
                    scopes: serde_json::from_str(r.get::<&str, _>(8))
                        .map_err(|_| crate::StoreError::corrupt("portal link scopes"))?,
                    id: r.get(0),
                    tenant_id: r.get(1),
                    key_id: r.get(2),
                    token_hash: r.get(3),
                    owner: r.get(4),
                    read_only: r.get::<i64, _>(5) != 0,
                    created_at: r.get(6),
                    expires_at: r.get(7),
                    key_hash: r.get(9),
                }))
                .transpose()
            }
            async fn announce_keys(&mut self) -> Result<()> {
                let sql: Option<&'static str> = $announce_keys;
                if let Some(sql) = sql {
                    sqlx::query(sql).execute(&mut self.conn).await?;
                }
                Ok(())
            }
        }
        };
    };
}
pub(crate) use impl_key_conn;

/// [`Tenants`](crate::Tenants) for a store.
macro_rules! impl_tenants {
    ($store:ty, $db:ty) => {
        const _: () = {
            use async_trait::async_trait;
            use eventflow_model::id::{KeyId, TenantId};


            use sqlx::Row;



            use crate::error::Result;
            use crate::keys::*;




        #[async_trait]
        impl crate::Tenants for $store {
            async fn authenticate(&self, key_hash: &str) -> Result<Option<crate::keys::Principal>> {
                let row = sqlx::query(
                    "SELECT tenant_id, id, scopes, expires_at, last_used_at, previous_until, \
                     key_hash = $1 FROM api_keys \
                     WHERE (key_hash = $1 OR previous_hash = $1) AND revoked_at IS NULL",
                )
                .bind(key_hash)
                .fetch_optional(&self.reads)
                .await?;
                let Some(r) = row else { return Ok(None) };
                let scopes: Vec<String> = serde_json::from_str(r.try_get::<&str, _>(2)?)
                    .map_err(|_| crate::error::StoreError::corrupt("key scopes"))?;
                let scopes = eventflow_model::scope::Scopes::parse(scopes.iter().map(String::as_str))
                    .map_err(|_| crate::error::StoreError::corrupt("key scopes"))?;
                let stamp = |i: usize| -> Result<Option<jiff::Timestamp>> {
                    r.try_get::<Option<String>, _>(i)?
                        .map(|s| s.parse().map_err(|_| crate::error::StoreError::corrupt("key time")))
                        .transpose()
                };
                let expires = stamp(3)?;
                let current: bool = r.try_get(6)?;
                let grace = if current { None } else { stamp(5)?.or(Some(jiff::Timestamp::MIN)) };
                let valid_until = match (expires, grace) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                Ok(Some(crate::keys::Principal {
                    owner: None,
                    tenant_id: TenantId::from_stored(r.try_get(0)?),
                    key_id: KeyId::from_stored(r.try_get(1)?),
                    key_hash: key_hash.to_string(),
                    scopes,
                    valid_until,
                    last_used_at: stamp(4)?,
                    keys_epoch: 0,
                }))
            }

            async fn change_key(&self, change: crate::keys::KeyChange) -> Result<Option<crate::keys::ApiKey>> {
                self.writer.key(change).await
            }

            async fn create_portal_link(&self, link: crate::keys::PortalLink, audit: crate::AuditEntry) -> Result<()> {
                self.writer.portal_link(link, audit).await
            }

            async fn use_portal_link(&self, token_hash: &str, now: jiff::Timestamp) -> Result<Option<crate::keys::PortalLink>> {
                self.writer.use_portal_link(token_hash, now).await
            }

            async fn settings(&self, tenant: &TenantId) -> Result<crate::keys::TenantSettings> {
                let row = sqlx::query("SELECT max_payload FROM tenants WHERE id = $1")
                    .bind(tenant.as_str())
                    .fetch_optional(&self.reads)
                    .await?;
                let max = row.map(|r| r.get::<String, _>(0)).unwrap_or_else(|| "full".into());
                Ok(crate::keys::TenantSettings {
                    max_payload: crate::delivery::rules::payload_mode(&max)?,
                })
            }

            async fn change_settings(
                &self,
                tenant: &TenantId,
                to: crate::keys::TenantSettings,
            ) -> Result<crate::keys::TenantSettings> {
                self.writer.settings(tenant.as_str(), to).await
            }

            async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<crate::keys::ApiKey>> {
                let sql = format!(
                    "SELECT {} FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL ORDER BY id",
                    crate::keys::KEY_COLUMNS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(tenant.as_str())
                    .fetch_all(&self.reads)
                    .await?;
                rows.iter().map(crate::keys::key_from_row).collect()
            }

            async fn api_key(&self, tenant: &TenantId, id: &KeyId) -> Result<Option<crate::keys::ApiKey>> {
                let row = sqlx::query(sqlx::AssertSqlSafe(crate::keys::live_key_sql()))
                    .bind(tenant.as_str())
                    .bind(id.as_str())
                    .fetch_optional(&self.reads)
                    .await?;
                row.as_ref().map(crate::keys::key_from_row).transpose()
            }

            async fn create_tenant(
                &self,
                name: &str,
                key_hash: &str,
                only_if_no_tenants: bool,
            ) -> Result<Option<NewTenant>> {
                self.writer
                    .create_tenant(name, key_hash, only_if_no_tenants)
                    .await
            }

            async fn purge(&self, r: crate::writer::Retention) -> Result<crate::writer::Purged> {
                self.writer.purge(r).await
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.reads).await?;
                // The writer's connection too: without it nothing can change.
                self.writer.ping().await
            }
        }
        };
    };
}
pub(crate) use impl_tenants;
