//! The single writer: group commit of everything that changes the database.

use std::collections::HashMap;
use std::sync::Arc;

use eventflow_model::{id, time};
use sqlx::{Executor, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::tx::SqliteTx;
use crate::clock::Clock;
use crate::error::{Result, StoreError};
use crate::notify::Notifier;
use crate::ops::{self, IDEMPOTENCY_WINDOW, RecordTx};
use crate::types::{AuditEntry, NewTenant, WriteOutcome, WriteRequest};

/// A change for the writer.
pub(super) enum Command {
    Write(Box<WriteRequest>),
    Audit(Vec<AuditEntry>),
    CreateTenant {
        name: String,
        key_hash: String,
        only_if_no_tenants: bool,
    },
    Purge {
        events_before: String,
    },
}

pub(super) enum Reply {
    Written(WriteOutcome),
    Done,
    Tenant(Option<NewTenant>),
    Purged(u64),
}

pub(super) struct Job {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Reply>>,
}

/// Takes every waiting job, up to `max_group`, and commits them together.
pub(super) async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Job>,
    clock: Arc<dyn Clock>,
    notifier: Arc<Notifier>,
    max_group: usize,
) {
    let mut jobs = Vec::with_capacity(max_group);
    while rx.recv_many(&mut jobs, max_group).await > 0 {
        commit_group(&mut conn, std::mem::take(&mut jobs), &*clock, &notifier).await;
    }
}

fn failed(what: &str, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(format!("{what}: {e}")))
}

async fn commit_group(
    conn: &mut SqliteConnection,
    jobs: Vec<Job>,
    clock: &dyn Clock,
    notifier: &Notifier,
) {
    let size = jobs.len();
    let now = clock.now();
    if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
        tracing::error!(error = %e, "could not begin a write transaction");
        for job in jobs {
            let _ = job.reply.send(Err(failed("begin", &e)));
        }
        return;
    }
    let mut done: Vec<(oneshot::Sender<Result<Reply>>, Result<Reply>)> = Vec::with_capacity(size);
    let mut sequences: HashMap<String, i64> = HashMap::new();
    let mut event_types: Vec<String> = Vec::new();
    let mut broken: Option<sqlx::Error> = None;
    for job in jobs {
        if broken.is_some() {
            done.push((job.reply, Err(StoreError::Closed)));
            continue;
        }
        if let Err(e) = conn.execute("SAVEPOINT job").await {
            broken = Some(e);
            done.push((job.reply, Err(StoreError::Closed)));
            continue;
        }
        let result = execute(conn, &job.command, now).await;
        let end = if result.is_ok() {
            conn.execute("RELEASE job").await
        } else {
            match conn.execute("ROLLBACK TO job").await {
                Ok(_) => conn.execute("RELEASE job").await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = end {
            broken = Some(e);
        }
        let reply = result.map(|(reply, tenant_seq, types)| {
            if let Some((tenant, seq)) = tenant_seq {
                sequences.insert(tenant, seq);
            }
            event_types.extend(types);
            reply
        });
        done.push((job.reply, reply));
    }
    let commit = match broken {
        Some(e) => Err(e),
        None => conn.execute("COMMIT").await.map(|_| ()),
    };
    match commit {
        Ok(()) => {
            metrics::counter!("eventflow_store_commits_total").increment(1);
            metrics::histogram!("eventflow_store_commit_group_size").record(size as f64);
            for t in event_types {
                metrics::counter!("eventflow_events_total", "type" => t).increment(1);
            }
            for (tenant, seq) in sequences {
                notifier.publish(&tenant, seq);
            }
            for (reply, result) in done {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, jobs = size, "write transaction failed; rolled back");
            let _ = conn.execute("ROLLBACK").await;
            for (reply, _) in done {
                let _ = reply.send(Err(failed("commit", &e)));
            }
        }
    }
}

type Executed = (Reply, Option<(String, i64)>, Vec<String>);

async fn execute(
    conn: &mut SqliteConnection,
    command: &Command,
    now: jiff::Timestamp,
) -> Result<Executed> {
    let now_s = time::format(now);
    match command {
        Command::Write(req) => {
            let mut tx = SqliteTx { conn };
            let applied = ops::apply(&mut tx, req, now).await?;
            let seq = applied.last_sequence.map(|s| (req.tenant.clone(), s));
            Ok((Reply::Written(applied.outcome), seq, applied.event_types))
        }
        Command::Audit(entries) => {
            let mut tx = SqliteTx { conn };
            for e in entries {
                tx.insert_audit(e).await?;
            }
            Ok((Reply::Done, None, Vec::new()))
        }
        Command::CreateTenant {
            name,
            key_hash,
            only_if_no_tenants,
        } => {
            if *only_if_no_tenants {
                let n: i64 = sqlx::query("SELECT count(*) FROM tenants")
                    .fetch_one(&mut *conn)
                    .await?
                    .get(0);
                if n > 0 {
                    return Ok((Reply::Tenant(None), None, Vec::new()));
                }
            }
            let exists = sqlx::query("SELECT 1 FROM tenants WHERE name = ?")
                .bind(name)
                .fetch_optional(&mut *conn)
                .await?;
            if exists.is_some() {
                return Err(StoreError::Conflict(format!(
                    "a tenant named {name:?} already exists"
                )));
            }
            let tenant_id = id::new_id("ten");
            let key_id = id::new_id("key");
            sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)")
                .bind(&tenant_id)
                .bind(name)
                .bind(&now_s)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "INSERT INTO api_keys (id, tenant_id, key_hash, created_at) VALUES (?, ?, ?, ?)",
            )
            .bind(&key_id)
            .bind(&tenant_id)
            .bind(key_hash)
            .bind(&now_s)
            .execute(&mut *conn)
            .await?;
            Ok((
                Reply::Tenant(Some(NewTenant { tenant_id, key_id })),
                None,
                Vec::new(),
            ))
        }
        Command::Purge { events_before } => {
            let n = sqlx::query("DELETE FROM events WHERE created_at < ?")
                .bind(events_before)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            let keys_before = time::format(now - IDEMPOTENCY_WINDOW);
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
                .bind(keys_before)
                .execute(&mut *conn)
                .await?;
            Ok((Reply::Purged(n), None, Vec::new()))
        }
    }
}
