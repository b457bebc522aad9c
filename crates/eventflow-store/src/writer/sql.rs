//! The writer's own SQL (transaction control, tenants, retention), once
//! for both backends.

/// [`WriteConn`](crate::writer::WriteConn) for a backend's write connection: transaction
/// control, tenants, and retention.
macro_rules! impl_write_conn {
    ($conn:ty, begin: $begin:expr, announce: $announce:expr, aged_disclosures: $aged_disclosures:expr $(,)?) => {
        const _: () = {
            use async_trait::async_trait;


            use sqlx::{Executor, Row};



            use crate::error::Result;





        #[async_trait]
        impl crate::writer::WriteConn for $conn {
            async fn begin(&mut self) -> Result<()> {
                if let Err(e) = self.conn.execute($begin).await {
                    // The connection may have been lost (a database restart,
                    // a network blip): open a new one and try once more.
                    tracing::warn!(error = %e, "write connection failed; reconnecting");
                    self.reconnect().await?;
                    self.conn.execute($begin).await?;
                }
                Ok(())
            }
            async fn execute(&mut self, sql: &'static str) -> Result<()> {
                self.conn.execute(sql).await?;
                Ok(())
            }
            async fn reconnect(&mut self) -> Result<()> {
                self.reopen().await
            }
            async fn announce(&mut self, tenant: &str, sequence: i64) -> Result<()> {
                let sql: Option<&'static str> = $announce;
                if let Some(sql) = sql {
                    sqlx::query(sql)
                        .bind(format!("{tenant} {sequence}"))
                        .execute(&mut self.conn)
                        .await?;
                }
                Ok(())
            }
            async fn count_tenants(&mut self) -> Result<i64> {
                Ok(sqlx::query("SELECT count(*) FROM tenants")
                    .fetch_one(&mut self.conn)
                    .await?
                    .get(0))
            }
            async fn tenant_name_taken(&mut self, name: &str) -> Result<bool> {
                Ok(sqlx::query("SELECT 1 FROM tenants WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut self.conn)
                    .await?
                    .is_some())
            }
            async fn insert_tenant(&mut self, id: &str, name: &str, now: &str) -> Result<bool> {
                // ON CONFLICT: two nodes bootstrapping one new database at
                // once must not fail; the second learns the name is taken.
                let done = sqlx::query(
                    "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(id)
                .bind(name)
                .bind(now)
                .execute(&mut self.conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }
            async fn purge_aged(&mut self, aged: crate::writer::Aged, before: &str, limit: i64) -> Result<u64> {
                use crate::writer::Aged;
                // The oldest first, by each table's index on its age.
                let (select, tables): (&str, &[(&str, &str)]) = match aged {
                    // A delivery may hold up to 4 KiB of each response (which
                    // may echo patient data): it goes with its event.
                    Aged::Events => (
                        "SELECT id FROM events WHERE created_at < $1 ORDER BY created_at LIMIT $2",
                        &[("deliveries", "event_id"), ("events", "id")],
                    ),
                    // A pending delivery is still to be sent: it stays.
                    Aged::Deliveries => (
                        "SELECT id FROM deliveries WHERE created_at < $1 AND status <> 'pending' \
                         AND endpoint_sequence < (SELECT MAX(n.endpoint_sequence) FROM deliveries n \
                         WHERE n.endpoint_id = deliveries.endpoint_id) \
                         ORDER BY created_at LIMIT $2",
                        &[("deliveries", "id")],
                    ),
                    Aged::Audit => (
                        "SELECT id FROM audit_log WHERE at < $1 ORDER BY at LIMIT $2",
                        &[("audit_log", "id")],
                    ),
                    // By clinic: each clinic's are one range of the key.
                    Aged::Disclosures => {
                        // `before` is the smallest id made at the cutoff; each
                        // clinic's records older than it are the start of its range
                        // of the primary key (tenant_id, id).
                        let found: Vec<(String, String)> = sqlx::query($aged_disclosures)
                            .bind(before)
                            .bind(limit)
                            .fetch_all(&mut self.conn)
                            .await?
                            .iter()
                            .map(|r| (r.get(0), r.get(1)))
                            .collect();
                        // One statement per 200, whichever clinics they are
                        // of: each pair a lookup of the primary key (an OR of
                        // pairs; `IN (VALUES …)` would scan the table on
                        // SQLite). 200 keeps the OR chain well within
                        // SQLite's limit on an expression's depth.
                        for chunk in found.chunks(200) {
                            let mut qb = sqlx::QueryBuilder::new("DELETE FROM disclosures WHERE ");
                            let mut list = qb.separated(" OR ");
                            for (tenant, id) in chunk {
                                list.push("(tenant_id = ")
                                    .push_bind_unseparated(tenant.as_str())
                                    .push_unseparated(" AND id = ")
                                    .push_bind_unseparated(id.as_str())
                                    .push_unseparated(")");
                            }
                            qb.build().execute(&mut self.conn).await?;
                        }
                        return Ok(found.len() as u64);
                    }
                };
                let ids: Vec<String> = sqlx::query(select)
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&mut self.conn)
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if ids.is_empty() {
                    return Ok(0);
                }
                for (table, column) in tables {
                    for chunk in ids.chunks(500) {
                        let mut qb = sqlx::QueryBuilder::new(format!("DELETE FROM {table} WHERE {column} IN ("));
                        let mut list = qb.separated(", ");
                        for id in chunk {
                            list.push_bind(id.as_str());
                        }
                        qb.push(")");
                        if *table == "deliveries" {
                            // Each endpoint's newest delivery stays, whatever
                            // its age: the next is numbered after it, so an
                            // endpoint's sequence never starts over.
                            qb.push(
                                " AND endpoint_sequence < (SELECT MAX(n.endpoint_sequence) FROM deliveries n \
                                 WHERE n.endpoint_id = deliveries.endpoint_id)",
                            );
                        }
                        qb.build().execute(&mut self.conn).await?;
                    }
                }
                Ok(ids.len() as u64)
            }

            async fn purge(&mut self, events_before: &str, keys_before: &str, quota_before: &str) -> Result<()> {
                for (sql, before) in [
                    ("DELETE FROM idempotency_keys WHERE created_at < $1", keys_before),
                    // A portal link is of no use once expired; kept as long
                    // as events for a look at what was made (its making and
                    // its use are audit entries, kept on their own).
                    ("DELETE FROM portal_links WHERE expires_at < $1", events_before),
                    // Automations keep their record as long as the events that
                    // started them: finished runs and outbox entries. Pending
                    // runs and timers stay, whatever their age.
                    ("DELETE FROM workflow_runs WHERE status <> 'pending' AND finished_at < $1", events_before),
                    ("DELETE FROM notifications WHERE created_at < $1", events_before),
                    ("DELETE FROM provider_quota_counts WHERE day < $1", quota_before),
                    ("DELETE FROM provider_quota_uses WHERE day < $1", quota_before),
                ] {
                    sqlx::query(sql).bind(before).execute(&mut self.conn).await?;
                }
                // A write's chain depth is needed until the engine has
                // matched its event.
                sqlx::query(
                    "DELETE FROM workflow_write_depths WHERE sequence <= \
                     (SELECT automation_cursor FROM tenants WHERE tenants.id = workflow_write_depths.tenant_id)",
                )
                .execute(&mut self.conn)
                .await?;
                Ok(())
            }
        }
        };
    };
}
pub(crate) use impl_write_conn;
