//! The networks' SQL, once for both backends (see
//! [`records::sql`](crate::records::sql) for why these are macros).

/// [`NetworkConn`](crate::networks::NetworkConn) for a backend's write
/// connection; `lock` is what locks a row read to commit.
macro_rules! impl_network_conn {
    ($conn:ty, db: $db:ty, lock: $lock:literal $(,)?) => {
        const _: () = {
            use async_trait::async_trait;
            use sqlx::Row;

            use crate::error::Result;
            use crate::networks::{Clinic, NetworkConn};

            #[async_trait]
            impl NetworkConn for $conn {
                async fn insert_tenant_row(
                    &mut self,
                    id: &str,
                    name: &str,
                    kind: &str,
                    org: Option<&str>,
                    joined_at: Option<&str>,
                    now: &str,
                ) -> Result<bool> {
                    let done = sqlx::query(
                        "INSERT INTO tenants (id, name, created_at, kind, org_id, joined_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(id)
                    .bind(name)
                    .bind(now)
                    .bind(kind)
                    .bind(org)
                    .bind(joined_at)
                    .execute(&mut self.conn)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn membership(
                    &mut self,
                    tenant: &str,
                ) -> Result<Option<(String, Option<String>)>> {
                    let row = sqlx::query(concat!(
                        "SELECT kind, org_id FROM tenants WHERE id = $1",
                        $lock
                    ))
                    .bind(tenant)
                    .fetch_optional(&mut self.conn)
                    .await?;
                    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
                }

                async fn set_membership(
                    &mut self,
                    clinic: &str,
                    org: Option<&str>,
                    joined_at: Option<&str>,
                ) -> Result<()> {
                    sqlx::query("UPDATE tenants SET org_id = $2, joined_at = $3 WHERE id = $1")
                        .bind(clinic)
                        .bind(org)
                        .bind(joined_at)
                        .execute(&mut self.conn)
                        .await?;
                    Ok(())
                }

                async fn lock_in_order(&mut self, tenants: &[&str]) -> Result<()> {
                    if $lock.is_empty() || tenants.is_empty() {
                        return Ok(());
                    }
                    let mut qb =
                        sqlx::QueryBuilder::<$db>::new("SELECT id FROM tenants WHERE id IN (");
                    let mut list = qb.separated(", ");
                    for t in tenants {
                        list.push_bind(t.to_string());
                    }
                    qb.push(") OR id IN (SELECT org_id FROM tenants WHERE id IN (");
                    let mut list = qb.separated(", ");
                    for t in tenants {
                        list.push_bind(t.to_string());
                    }
                    qb.push(")) ORDER BY kind = 'organisation', id");
                    qb.push($lock);
                    qb.build().fetch_all(&mut self.conn).await?;
                    Ok(())
                }

                async fn count_members(&mut self, org: &str) -> Result<i64> {
                    Ok(sqlx::query(
                        "SELECT count(*) FROM tenants WHERE org_id = $1 AND kind = 'clinic'",
                    )
                    .bind(org)
                    .fetch_one(&mut self.conn)
                    .await?
                    .try_get(0)?)
                }

                async fn member(&mut self, org: &str, clinic: &str) -> Result<Option<Clinic>> {
                    let row = sqlx::query(crate::networks::sql::MEMBER)
                        .bind(org)
                        .bind(clinic)
                        .fetch_optional(&mut self.conn)
                        .await?;
                    row.map(|r| crate::networks::sql::clinic_from_row(&r))
                        .transpose()
                }
            }
        };
    };
}
pub(crate) use impl_network_conn;

/// [`Networks`](crate::networks::Networks) for a store.
macro_rules! impl_networks {
    ($store:ty) => {
        const _: () = {
            use eventflow_model::id::TenantId;

            use crate::error::Result;
            use crate::networks::{Clinic, NetworkChange, NetworkDone, Networks};

            #[async_trait::async_trait]
            impl Networks for $store {
                async fn change_network(&self, change: NetworkChange) -> Result<NetworkDone> {
                    self.writer.network(change).await
                }

                async fn clinics(&self, org: &TenantId) -> Result<Vec<Clinic>> {
                    let rows = sqlx::query(crate::networks::sql::MEMBERS)
                        .bind(org.as_str())
                        .fetch_all(&self.reads)
                        .await?;
                    rows.iter()
                        .map(crate::networks::sql::clinic_from_row)
                        .collect()
                }

                async fn clinic(
                    &self,
                    org: &TenantId,
                    clinic: &TenantId,
                ) -> Result<Option<Clinic>> {
                    let row = sqlx::query(crate::networks::sql::MEMBER)
                        .bind(org.as_str())
                        .bind(clinic.as_str())
                        .fetch_optional(&self.reads)
                        .await?;
                    row.map(|r| crate::networks::sql::clinic_from_row(&r))
                        .transpose()
                }
            }
        };
    };
}
pub(crate) use impl_networks;

/// The clinic `$2` as a member of the organisation `$1`.
pub(crate) const MEMBER: &str = "SELECT id, name, joined_at FROM tenants \
     WHERE org_id = $1 AND id = $2 AND kind = 'clinic'";

/// The member clinics of the organisation `$1`, oldest member first.
pub(crate) const MEMBERS: &str = "SELECT id, name, joined_at FROM tenants \
     WHERE org_id = $1 AND kind = 'clinic' ORDER BY joined_at, id";

/// A clinic from a row of [`MEMBER`]'s columns.
pub(crate) fn clinic_from_row<'r, R: sqlx::Row>(row: &'r R) -> crate::error::Result<super::Clinic>
where
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(super::Clinic {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        joined_at: row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
    })
}
