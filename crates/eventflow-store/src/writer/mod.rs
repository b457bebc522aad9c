//! The group-commit writer, shared by every backend.
//!
//! One task per process holds the backend's write connection. It takes every
//! request waiting in its queue (up to a bound), runs them in one transaction
//! — a batch in a savepoint of its own, so one failing request rolls back
//! alone — and commits them together with a single fsync. Requests are ordered by
//! tenant inside a group and each takes its tenant's lock first, so writers
//! on several nodes cannot deadlock.

pub(crate) mod sql;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use eventflow_model::id::{KeyId, TenantId};
use eventflow_model::time;
use tokio::sync::{mpsc, oneshot};

use crate::automation::rules as automation;
use crate::automation::sql::AutoConn;
use crate::automation::{Notification, QuotaReservation, Run, StartRuns, StepReport, quota_day};
use crate::clock::Clock;
use crate::delivery::EndpointChange;
use crate::delivery::rules as outbox;
use crate::delivery::sql::QueueConn;
use crate::delivery::{
    AttemptRecord, ClaimedDelivery, Delivery, EndpointRow, Recorded, Replay, ReplayFrom,
};
use crate::error::{Result, StoreError};
use crate::keys::{KeyConn, NewTenant};
use crate::notify::Notifier;
use crate::records::rules::IDEMPOTENCY_WINDOW;
use crate::records::{AuditEntry, WriteKind, WriteOutcome, WriteRequest};

/// A change for the writer.
/// Rows one retention write deletes (events with their deliveries,
/// deliveries, audit entries or disclosure records), so that other writes
/// go on between them.
pub const PURGE_BATCH: i64 = 2_000;

/// What a retention pass deletes: each kind of history made before its time.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Events (with every delivery made of them, pending or not).
    pub events_before: jiff::Timestamp,
    /// Deliveries no longer pending, with their attempts.
    pub deliveries_before: jiff::Timestamp,
    pub audit_before: jiff::Timestamp,
    pub disclosures_before: jiff::Timestamp,
}

impl Retention {
    /// Everything made before `t`.
    pub fn all_before(t: jiff::Timestamp) -> Retention {
        Retention {
            events_before: t,
            deliveries_before: t,
            audit_before: t,
            disclosures_before: t,
        }
    }
}

/// How many rows a retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub events: u64,
    pub deliveries: u64,
    pub audit_entries: u64,
    pub disclosures: u64,
}

/// The history a retention write deletes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aged {
    Events,
    Deliveries,
    Audit,
    Disclosures,
}

pub(crate) enum Command {
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
    /// Deletes up to `limit` of the oldest rows of one kind made before the
    /// time (events with their deliveries).
    PurgeAged {
        aged: Aged,
        before: String,
        limit: i64,
    },
    /// Keeps a new portal link, with its audit entry.
    PortalLink(Box<(crate::keys::PortalLink, AuditEntry)>),
    /// Uses a portal link (once), with an audit entry.
    UsePortalLink {
        token_hash: String,
        now: String,
    },
    /// Leases endpoints whose challenge is due.
    ClaimVerifications {
        limit: i64,
    },
    /// Records a challenge's outcome.
    Verified(Box<crate::delivery::VerifyRecord>),
    /// Takes the heartbeats that are due.
    ClaimHeartbeats {
        limit: i64,
    },
    /// Changes a tenant's settings.
    Settings {
        tenant: String,
        to: crate::keys::TenantSettings,
    },
    /// Nothing: proves the writer and its connection work.
    Ping,
    Endpoint(Box<EndpointChange>),
    Claim {
        limit: i64,
    },
    Attempted(Box<AttemptRecord>),
    /// Successful attempts, recorded together.
    Succeeded(Vec<AttemptRecord>),
    /// Gives leased deliveries back: due at `next_at`, or (`None`) held
    /// while their endpoint holds them.
    Release {
        ids: Vec<String>,
        next_at: Option<String>,
    },
    Retry {
        tenant: String,
        id: String,
    },
    Replay {
        tenant: String,
        endpoint_id: String,
        from: ReplayFrom,
    },
    ReplayChunk {
        tenant: String,
        id: String,
    },
    StartRuns(Box<StartRuns>),
    ClaimRuns {
        limit: i64,
    },
    FireTimers {
        limit: i64,
    },
    StepDone(Box<StepReport>),
    BeginStep {
        run_id: String,
        index: i64,
    },
    Notify(Box<Notification>),
    ReserveQuota(Box<QuotaReservation>),
    Key(Box<crate::keys::KeyChange>),
    Network(Box<crate::networks::NetworkChange>),
}

impl Command {
    /// Adds to `out` the rows of `tenants` the command locks: its tenant's,
    /// and a key change's or a membership change's.
    fn locks<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Command::Key(change) => match &**change {
                crate::keys::KeyChange::Create { tenant, .. }
                | crate::keys::KeyChange::Rotate { tenant, .. }
                | crate::keys::KeyChange::Revoke { tenant, .. } => out.push(tenant),
                crate::keys::KeyChange::Touch { .. } => {}
            },
            Command::Network(change) => match &**change {
                crate::networks::NetworkChange::CreateClinic { org, .. } => out.push(org),
                crate::networks::NetworkChange::AddClinic { org, clinic, .. }
                | crate::networks::NetworkChange::RemoveClinic { org, clinic } => {
                    out.extend([clinic.as_str(), org.as_str()])
                }
                crate::networks::NetworkChange::CreateOrganisation { .. } => {}
            },
            // A step may write in another clinic (an organisation's
            // workflow): its rows are taken in the one order too.
            Command::StepDone(report) => {
                out.push(&report.tenant_id);
                out.extend(report.effects.iter().filter_map(|e| match e {
                    crate::automation::Effect::Write(req) => Some(req.tenant.as_str()),
                    _ => None,
                }));
            }
            other => out.extend(other.tenant()),
        }
    }

    /// The tenant whose lock the command takes, if any.
    fn tenant(&self) -> Option<&str> {
        match self {
            Command::Write(req) => Some(&req.tenant),
            Command::Endpoint(change) => Some(match &**change {
                EndpointChange::Create(row) => &row.tenant_id,
                EndpointChange::Update { row, .. } => &row.tenant_id,
                EndpointChange::Delete { tenant, .. } => tenant,
            }),
            Command::Attempted(rec) => Some(&rec.tenant_id),
            Command::Replay { tenant, .. } => Some(tenant),
            Command::Settings { tenant, .. } => Some(tenant),
            Command::Verified(rec) => Some(&rec.tenant_id),
            Command::ReplayChunk { tenant, .. } => Some(tenant),
            Command::StartRuns(start) => Some(&start.tenant_id),
            Command::StepDone(report) => Some(&report.tenant_id),
            _ => None,
        }
    }
}

pub(crate) enum Reply {
    Written(WriteOutcome),
    Done,
    Tenant(Option<NewTenant>),
    Purged(u64),
    Endpoint(Option<Box<EndpointRow>>),
    Claimed(Vec<ClaimedDelivery>),
    Recorded(Recorded),
    Delivery(Option<Delivery>),
    Replay(Option<Replay>),
    Runs(Option<Vec<Run>>),
    Run(Option<Run>),
    Flag(bool),
    Key(Option<crate::keys::ApiKey>),
    Network(crate::networks::NetworkDone),
    Settings(crate::keys::TenantSettings),
    Endpoints(Vec<EndpointRow>),
    Heartbeats(Vec<crate::delivery::Heartbeat>),
    PortalLink(Option<Box<crate::keys::PortalLink>>),
}

pub(crate) struct Job {
    pub command: Command,
    pub reply: oneshot::Sender<Result<Reply>>,
}

/// The sending side of a writer.
#[derive(Debug, Clone)]
pub(crate) struct WriterHandle {
    jobs: mpsc::Sender<Job>,
}

impl WriterHandle {
    /// Starts the writer task on `conn`.
    pub fn start<C: WriteConn + QueueConn + AutoConn + 'static>(
        conn: C,
        clock: Arc<dyn Clock>,
        notifier: Arc<Notifier>,
        wake: Arc<tokio::sync::Notify>,
        max_group: usize,
    ) -> WriterHandle {
        let (jobs, rx) = mpsc::channel(4096);
        tokio::spawn(run(conn, rx, clock, notifier, wake, max_group.max(1)));
        WriterHandle { jobs }
    }

    pub async fn send(&self, command: Command) -> Result<Reply> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job { command, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        // A dropped reply means the group was abandoned (a bug panicked in
        // it and it was rolled back), not that the store is closing.
        rx.await.map_err(|_| StoreError::Aborted)?
    }

    pub async fn write(&self, req: WriteRequest) -> Result<WriteOutcome> {
        match self.send(Command::Write(Box::new(req))).await? {
            Reply::Written(outcome) => Ok(outcome),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn audit(&self, entries: Vec<AuditEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.send(Command::Audit(entries)).await.map(|_| ())
    }

    pub async fn create_tenant(
        &self,
        name: &str,
        key_hash: &str,
        only_if_no_tenants: bool,
    ) -> Result<Option<NewTenant>> {
        match self
            .send(Command::CreateTenant {
                name: name.to_string(),
                key_hash: key_hash.to_string(),
                only_if_no_tenants,
            })
            .await?
        {
            Reply::Tenant(t) => Ok(t),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn key(&self, change: crate::keys::KeyChange) -> Result<Option<crate::keys::ApiKey>> {
        match self.send(Command::Key(Box::new(change))).await? {
            Reply::Key(k) => Ok(k),
            _ => unreachable!("key reply"),
        }
    }

    pub async fn network(
        &self,
        change: crate::networks::NetworkChange,
    ) -> Result<crate::networks::NetworkDone> {
        match self.send(Command::Network(Box::new(change))).await? {
            Reply::Network(done) => Ok(done),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn ping(&self) -> Result<()> {
        self.send(Command::Ping).await.map(|_| ())
    }

    pub async fn portal_link(
        &self,
        link: crate::keys::PortalLink,
        audit: AuditEntry,
    ) -> Result<()> {
        self.send(Command::PortalLink(Box::new((link, audit))))
            .await
            .map(|_| ())
    }

    pub async fn use_portal_link(
        &self,
        token_hash: &str,
        now: jiff::Timestamp,
    ) -> Result<Option<crate::keys::PortalLink>> {
        match self
            .send(Command::UsePortalLink {
                token_hash: token_hash.to_string(),
                now: time::format(now),
            })
            .await?
        {
            Reply::PortalLink(l) => Ok(l.map(|l| *l)),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn claim_verifications(&self, limit: i64) -> Result<Vec<EndpointRow>> {
        match self.send(Command::ClaimVerifications { limit }).await? {
            Reply::Endpoints(rows) => Ok(rows),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn claim_heartbeats(&self, limit: i64) -> Result<Vec<crate::delivery::Heartbeat>> {
        match self.send(Command::ClaimHeartbeats { limit }).await? {
            Reply::Heartbeats(due) => Ok(due),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn record_verification(&self, rec: crate::delivery::VerifyRecord) -> Result<()> {
        self.send(Command::Verified(Box::new(rec)))
            .await
            .map(|_| ())
    }

    pub async fn settings(
        &self,
        tenant: &str,
        to: crate::keys::TenantSettings,
    ) -> Result<crate::keys::TenantSettings> {
        match self
            .send(Command::Settings {
                tenant: tenant.to_string(),
                to,
            })
            .await?
        {
            Reply::Settings(s) => Ok(s),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn endpoint(&self, change: EndpointChange) -> Result<Option<EndpointRow>> {
        match self.send(Command::Endpoint(Box::new(change))).await? {
            Reply::Endpoint(row) => Ok(row.map(|r| *r)),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn claim(&self, limit: i64) -> Result<Vec<ClaimedDelivery>> {
        match self.send(Command::Claim { limit }).await? {
            Reply::Claimed(c) => Ok(c),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn attempted(&self, rec: AttemptRecord) -> Result<Recorded> {
        match self.send(Command::Attempted(Box::new(rec))).await? {
            Reply::Recorded(r) => Ok(r),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn succeeded(&self, recs: Vec<AttemptRecord>) -> Result<()> {
        if recs.is_empty() {
            return Ok(());
        }
        self.send(Command::Succeeded(recs)).await.map(|_| ())
    }

    pub async fn release(&self, ids: Vec<String>, next_at: jiff::Timestamp) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let next_at = Some(time::format(next_at));
        self.send(Command::Release { ids, next_at })
            .await
            .map(|_| ())
    }

    pub async fn hold(&self, ids: Vec<String>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.send(Command::Release { ids, next_at: None })
            .await
            .map(|_| ())
    }

    pub async fn retry(&self, tenant: &str, id: &str) -> Result<Option<Delivery>> {
        match self
            .send(Command::Retry {
                tenant: tenant.to_string(),
                id: id.to_string(),
            })
            .await?
        {
            Reply::Delivery(d) => Ok(d),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn replay(
        &self,
        tenant: &str,
        endpoint_id: &str,
        from: ReplayFrom,
    ) -> Result<Option<Replay>> {
        match self
            .send(Command::Replay {
                tenant: tenant.to_string(),
                endpoint_id: endpoint_id.to_string(),
                from,
            })
            .await?
        {
            Reply::Replay(r) => Ok(r),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn replay_chunk(&self, tenant: &str, id: &str) -> Result<Option<Replay>> {
        match self
            .send(Command::ReplayChunk {
                tenant: tenant.to_string(),
                id: id.to_string(),
            })
            .await?
        {
            Reply::Replay(r) => Ok(r),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    /// Starts a batch's runs; `None` when another node took the batch.
    pub async fn start_runs(&self, start: StartRuns) -> Result<Option<Vec<Run>>> {
        match self.send(Command::StartRuns(Box::new(start))).await? {
            Reply::Runs(runs) => Ok(runs),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn claim_runs(&self, limit: i64) -> Result<Vec<Run>> {
        match self.send(Command::ClaimRuns { limit }).await? {
            Reply::Runs(runs) => Ok(runs.unwrap_or_default()),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn fire_timers(&self, limit: i64) -> Result<Vec<Run>> {
        match self.send(Command::FireTimers { limit }).await? {
            Reply::Runs(runs) => Ok(runs.unwrap_or_default()),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn step_done(&self, report: StepReport) -> Result<Option<Run>> {
        match self.send(Command::StepDone(Box::new(report))).await? {
            Reply::Run(run) => Ok(run),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn notify(&self, n: Notification) -> Result<bool> {
        match self.send(Command::Notify(Box::new(n))).await? {
            Reply::Flag(b) => Ok(b),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn reserve_quota(&self, r: QuotaReservation) -> Result<bool> {
        match self.send(Command::ReserveQuota(Box::new(r))).await? {
            Reply::Flag(b) => Ok(b),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    pub async fn begin_step(&self, run_id: &str, index: i64) -> Result<bool> {
        match self
            .send(Command::BeginStep {
                run_id: run_id.to_string(),
                index,
            })
            .await?
        {
            Reply::Flag(b) => Ok(b),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }

    /// Deletes the history older than `r` says: events (with their
    /// deliveries), finished deliveries, audit entries and disclosure
    /// records, each in writes of at most [`PURGE_BATCH`] rows so that
    /// other writes go on between them; then what else has aged out.
    pub async fn purge(&self, r: Retention) -> Result<Purged> {
        let mut purged = Purged::default();
        for (aged, before) in [
            (Aged::Events, r.events_before),
            (Aged::Deliveries, r.deliveries_before),
            (Aged::Audit, r.audit_before),
            (Aged::Disclosures, r.disclosures_before),
        ] {
            // Disclosure records by their ids, which sort by when they were
            // sent: each clinic's range of the primary key is its index of age.
            let before = match aged {
                Aged::Disclosures => eventflow_model::id::id_floor_at("dsc", before),
                _ => time::format(before),
            };
            let mut total = 0;
            loop {
                let n = match self
                    .send(Command::PurgeAged {
                        aged,
                        before: before.clone(),
                        limit: PURGE_BATCH,
                    })
                    .await?
                {
                    Reply::Purged(n) => n,
                    _ => return Err(StoreError::corrupt("writer reply")),
                };
                total += n;
                if n < PURGE_BATCH as u64 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            match aged {
                Aged::Events => purged.events = total,
                Aged::Deliveries => purged.deliveries = total,
                Aged::Audit => purged.audit_entries = total,
                Aged::Disclosures => purged.disclosures = total,
            }
        }
        match self
            .send(Command::Purge {
                events_before: time::format(r.events_before),
            })
            .await?
        {
            Reply::Purged(_) => Ok(purged),
            _ => Err(StoreError::corrupt("writer reply")),
        }
    }
}

async fn run<C: WriteConn + QueueConn + AutoConn>(
    mut conn: C,
    mut rx: mpsc::Receiver<Job>,
    clock: Arc<dyn Clock>,
    notifier: Arc<Notifier>,
    wake: Arc<tokio::sync::Notify>,
    max_group: usize,
) {
    let mut jobs = Vec::with_capacity(max_group);
    while rx.recv_many(&mut jobs, max_group).await > 0 {
        let mut group = std::mem::take(&mut jobs);
        // Stable: one tenant's requests keep their arrival order.
        // Tenant locks first, in tenant order; commands that lock no tenant
        // (claims, batched results, retries) after them. Every node takes
        // its locks in this order, so two nodes never wait on each other
        // in a cycle.
        group.sort_by(|a, b| {
            let (ta, tb) = (a.command.tenant(), b.command.tenant());
            (ta.is_none(), ta).cmp(&(tb.is_none(), tb))
        });
        // A bug that panics inside one group must not take every later write
        // down with the task: the group's callers get an error (their reply
        // senders are dropped), its transaction is rolled back, and the
        // writer goes on.
        let outcome = AssertUnwindSafe(commit_group(&mut conn, group, &*clock, &notifier, &wake))
            .catch_unwind()
            .await;
        if outcome.is_err() {
            tracing::error!("a write group panicked; rolled back, continuing");
            let _ = conn.execute("ROLLBACK").await;
            conn.fanout().invalidate();
        }
    }
}

/// Whether a command can fail with a domain error after it has written
/// something (only a batch: operation 3 can fail after 1 and 2 wrote).
fn command_may_fail_after_writing(command: &Command) -> bool {
    matches!(command, Command::Write(req) if matches!(req.kind, WriteKind::Batch(_)))
}

/// How long the quota rows of a day are kept: past the last retry of a
/// step that reserved a unit that day (72 h), plus a day.
const QUOTA_KEPT: jiff::SignedDuration = jiff::SignedDuration::from_hours(4 * 24);

fn failed(what: &str, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("{what}: {e}"))
}

async fn commit_group<C: WriteConn + QueueConn + AutoConn>(
    conn: &mut C,
    mut jobs: Vec<Job>,
    clock: &dyn Clock,
    notifier: &Notifier,
    wake: &tokio::sync::Notify,
) {
    // A database error in one request must not fail the others of its
    // group: the group is rolled back, that request gets the error, and the
    // rest are written again without it. Each round drops a request, so this
    // ends.
    loop {
        match try_group(conn, &jobs, clock).await {
            Ok(Attempt::Committed {
                results,
                sequences,
                event_types,
            }) => {
                metrics::counter!("eventflow_store_commits_total").increment(1);
                metrics::histogram!("eventflow_store_commit_group_size").record(jobs.len() as f64);
                for t in event_types {
                    metrics::counter!("eventflow_events_total", "type" => t).increment(1);
                }
                let mut written = conn.fanout().take_noted();
                for (tenant, seq) in sequences {
                    match written.remove(&tenant) {
                        Some((first, last, types)) => {
                            notifier.publish_commit(&tenant, first, last.max(seq), types)
                        }
                        None => notifier.publish(&tenant, seq),
                    }
                }
                for (tenant, (first, last, types)) in written {
                    notifier.publish_commit(&tenant, first, last, types);
                }
                if conn.fanout().committed() {
                    wake.notify_one();
                }
                // A key rotated or revoked, or a clinic that left its
                // organisation: what was checked before must be checked again.
                if jobs.iter().any(|j| match &j.command {
                    Command::Key(change) => crate::keys::invalidates(change),
                    Command::Network(change) => crate::networks::invalidates(change),
                    _ => false,
                }) {
                    notifier.keys_changed();
                }
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
                return;
            }
            Ok(Attempt::Failed { culprit, error }) => {
                let _ = conn.execute("ROLLBACK").await;
                conn.fanout().invalidate();
                match culprit {
                    Some(i) if jobs.len() > 1 => {
                        tracing::warn!(error = %error, jobs = jobs.len(), "a write failed; rolled back, writing the rest of its group again");
                        let job = jobs.remove(i);
                        let _ = job.reply.send(Err(failed("write", &error)));
                    }
                    _ => {
                        tracing::error!(error = %error, jobs = jobs.len(), "write transaction failed; rolled back");
                        for job in jobs {
                            let _ = job.reply.send(Err(failed("commit", &error)));
                        }
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not begin a write transaction");
                for job in jobs {
                    let _ = job.reply.send(Err(failed("begin", &e)));
                }
                return;
            }
        }
    }
}

/// How one round of a group went.
enum Attempt {
    /// Committed: each job's result, in order; the tenants' new latest
    /// sequences; the event types written.
    Committed {
        results: Vec<Result<Reply>>,
        sequences: HashMap<String, i64>,
        event_types: Vec<String>,
    },
    /// The transaction broke (it is still open: the caller rolls it back),
    /// at the job `culprit` if the error was its own.
    Failed {
        culprit: Option<usize>,
        error: StoreError,
    },
}

/// Runs the jobs in one transaction and commits it. `Err` when it could not
/// begin.
async fn try_group<C: WriteConn + QueueConn + AutoConn>(
    conn: &mut C,
    jobs: &[Job],
    clock: &dyn Clock,
) -> Result<Attempt> {
    let now = clock.now();
    conn.fanout().start_group(now);
    conn.begin().await?;
    // Several tenants' writes in one transaction: their rows (and their
    // organisations') are locked in one order first, as every other group
    // takes them, so no two nodes' groups wait on each other in a cycle.
    let mut tenants: Vec<&str> = Vec::with_capacity(jobs.len());
    for job in jobs {
        job.command.locks(&mut tenants);
    }
    tenants.sort_unstable();
    tenants.dedup();
    if tenants.len() > 1
        && let Err(error) = conn.lock_in_order(&tenants).await
    {
        return Ok(Attempt::Failed {
            culprit: None,
            error,
        });
    }
    let mut results: Vec<Result<Reply>> = Vec::with_capacity(jobs.len());
    let mut sequences: HashMap<String, i64> = HashMap::new();
    let mut event_types: Vec<String> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        // A single change fails with a domain error (invalid, not found,
        // conflict…) only before its first write, so it needs no savepoint;
        // a batch can fail half-way and gets one. Any database error inside
        // an unguarded job breaks the transaction.
        let guarded = command_may_fail_after_writing(&job.command);
        let fresh_before = conn.fanout().fresh_len();
        let noted_before = conn.fanout().noted_len();
        let audits_before = conn.fanout().audits_len();
        if guarded && let Err(error) = conn.execute("SAVEPOINT job").await {
            return Ok(Attempt::Failed {
                culprit: Some(i),
                error,
            });
        }
        conn.fanout().start_request();
        let result = execute(conn, &job.command, now).await;
        let end = match (&result, guarded) {
            (Ok(_), true) => conn.execute("RELEASE job").await,
            (Err(_), true) => {
                conn.fanout().truncate_fresh(fresh_before);
                conn.fanout().truncate_noted(noted_before);
                conn.fanout().truncate_audits(audits_before);
                // Locks taken since the savepoint go with it (PostgreSQL).
                conn.fanout().forget_locks();
                match conn.execute("ROLLBACK TO job").await {
                    Ok(()) => conn.execute("RELEASE job").await,
                    Err(e) => Err(e),
                }
            }
            (Ok(_), false) => Ok(()),
            (Err(e), false) if e.is_domain() => Ok(()),
            (Err(e), false) => Err(failed("write", e)),
        };
        if let Err(error) = end {
            return Ok(Attempt::Failed {
                culprit: Some(i),
                error,
            });
        }
        results.push(result.map(|(reply, tenant_seq, types)| {
            if let Some((tenant, seq)) = tenant_seq {
                sequences.insert(tenant, seq);
            }
            event_types.extend(types);
            reply
        }));
    }
    // The group's audit entries, in one insert (or a few).
    if let Err(error) = conn.flush_audits().await {
        return Ok(Attempt::Failed {
            culprit: None,
            error,
        });
    }
    // Other nodes learn of every log written: each tenant's, and each
    // organisation's network log (numbered past its own events).
    let networks = conn.fanout().noted_networks();
    let tenants = sequences
        .iter()
        .filter(|(tenant, _)| !networks.iter().any(|(org, _)| org == *tenant))
        .map(|(tenant, seq)| (tenant.as_str(), *seq));
    let orgs = networks.iter().map(|(org, last)| {
        let own = sequences.get(org).copied().unwrap_or(0);
        (org.as_str(), (*last).max(own))
    });
    for (tenant, seq) in tenants.chain(orgs) {
        if let Err(error) = conn.announce(tenant, seq).await {
            return Ok(Attempt::Failed {
                culprit: None,
                error,
            });
        }
    }
    if let Err(error) = conn.execute("COMMIT").await {
        return Ok(Attempt::Failed {
            culprit: None,
            error,
        });
    }
    Ok(Attempt::Committed {
        results,
        sequences,
        event_types,
    })
}

type Executed = (Reply, Option<(String, i64)>, Vec<String>);

async fn execute<C: WriteConn + QueueConn + AutoConn>(
    conn: &mut C,
    command: &Command,
    now: jiff::Timestamp,
) -> Result<Executed> {
    let now_s = time::format(now);
    match command {
        Command::Write(req) => {
            conn.lock_tenant(&req.tenant).await?;
            let applied = crate::records::rules::apply(conn, req, now).await?;
            let seq = applied.last_sequence.map(|s| (req.tenant.clone(), s));
            Ok((Reply::Written(applied.outcome), seq, applied.event_types))
        }
        Command::Audit(entries) => {
            for e in entries {
                conn.insert_audit(e).await?;
            }
            Ok((Reply::Done, None, Vec::new()))
        }
        Command::CreateTenant {
            name,
            key_hash,
            only_if_no_tenants,
        } => {
            if *only_if_no_tenants && conn.count_tenants().await? > 0 {
                return Ok((Reply::Tenant(None), None, Vec::new()));
            }
            if conn.tenant_name_taken(name).await? {
                return Err(StoreError::Conflict(format!(
                    "a tenant named {name:?} already exists"
                )));
            }
            let tenant_id = TenantId::fresh();
            let key_id = KeyId::fresh();
            if !conn.insert_tenant(&tenant_id, name, &now_s).await? {
                // Another node took the name between the check and here.
                if *only_if_no_tenants {
                    return Ok((Reply::Tenant(None), None, Vec::new()));
                }
                return Err(StoreError::Conflict(format!(
                    "a tenant named {name:?} already exists"
                )));
            }
            // The first key has every scope; its name says where it came from.
            let key_name = if *only_if_no_tenants {
                "bootstrap"
            } else {
                "tenants create"
            };
            conn.insert_api_key(&key_id, &tenant_id, key_hash, key_name, &now_s)
                .await?;
            Ok((
                Reply::Tenant(Some(NewTenant { tenant_id, key_id })),
                None,
                Vec::new(),
            ))
        }
        Command::Ping => Ok((Reply::Done, None, Vec::new())),
        Command::PortalLink(made) => {
            let (link, audit) = &**made;
            conn.insert_portal_link(link).await?;
            conn.insert_audit(audit).await?;
            Ok((Reply::Done, None, Vec::new()))
        }
        Command::UsePortalLink { token_hash, now } => {
            let link = conn.take_portal_link(token_hash, now).await?;
            if let Some(l) = &link {
                conn.insert_audit(&AuditEntry {
                    id: eventflow_model::id::new_id("aud"),
                    tenant: l.tenant_id.clone(),
                    at: now.clone(),
                    key_id: l.id.clone(),
                    action: "portal-link.use".into(),
                    resource_type: "portal_link".into(),
                    resource_id: l.id.clone(),
                })
                .await?;
            }
            Ok((Reply::PortalLink(link.map(Box::new)), None, Vec::new()))
        }
        Command::ClaimVerifications { limit } => {
            let rows = outbox::claim_verifications(conn, *limit).await?;
            Ok((Reply::Endpoints(rows), None, Vec::new()))
        }
        Command::ClaimHeartbeats { limit } => {
            let due = outbox::claim_heartbeats(conn, *limit).await?;
            Ok((Reply::Heartbeats(due), None, Vec::new()))
        }
        Command::Verified(rec) => {
            conn.lock_tenant(&rec.tenant_id).await?;
            let seq = outbox::record_verification(conn, rec).await?;
            let seq = seq.map(|s| (rec.tenant_id.clone(), s));
            Ok((Reply::Done, seq, Vec::new()))
        }
        Command::Settings { tenant, to } => {
            conn.lock_tenant(tenant).await?;
            let now = outbox::change_settings(conn, tenant, *to).await?;
            Ok((Reply::Settings(now), None, Vec::new()))
        }
        Command::Key(change) => {
            let key = crate::keys::apply(conn, change, &now_s).await?;
            Ok((Reply::Key(key), None, Vec::new()))
        }
        Command::Network(change) => {
            let done = crate::networks::apply(conn, change, &now_s).await?;
            Ok((Reply::Network(done), None, Vec::new()))
        }
        Command::Endpoint(change) => {
            conn.lock_tenant(command.tenant().unwrap_or_default())
                .await?;
            let row = outbox::change_endpoint(conn, change).await?;
            // Re-enabling makes paused deliveries due: let the dispatcher look.
            conn.fanout().wake_dispatcher = true;
            Ok((Reply::Endpoint(row.map(Box::new)), None, Vec::new()))
        }
        Command::Claim { limit } => {
            let node = conn.fanout().node.clone();
            let claimed = outbox::claim(conn, &node, *limit).await?;
            Ok((Reply::Claimed(claimed), None, Vec::new()))
        }
        Command::Attempted(rec) => {
            conn.lock_tenant(&rec.tenant_id).await?;
            let (recorded, seq) = outbox::record_attempt(conn, rec).await?;
            let seq = seq.map(|s| (rec.tenant_id.clone(), s));
            Ok((Reply::Recorded(recorded), seq, Vec::new()))
        }
        Command::Succeeded(recs) => {
            outbox::succeed_many(conn, recs).await?;
            Ok((Reply::Done, None, Vec::new()))
        }
        Command::Release { ids, next_at } => {
            let node = conn.fanout().node.clone();
            outbox::release(conn, ids, &node, next_at.as_deref()).await?;
            Ok((Reply::Done, None, Vec::new()))
        }
        Command::Retry { tenant, id } => {
            let d = outbox::retry(conn, tenant, id).await?;
            if d.is_some() {
                conn.fanout().wake_dispatcher = true;
            }
            Ok((Reply::Delivery(d), None, Vec::new()))
        }
        Command::Replay {
            tenant,
            endpoint_id,
            from,
        } => {
            conn.lock_tenant(tenant).await?;
            let r = outbox::start_replay(conn, tenant, endpoint_id, from).await?;
            conn.fanout().wake_dispatcher = true;
            Ok((Reply::Replay(r), None, Vec::new()))
        }
        Command::ReplayChunk { tenant, id } => {
            conn.lock_tenant(tenant).await?;
            let r = outbox::continue_replay(conn, tenant, id).await?;
            conn.fanout().wake_dispatcher = true;
            Ok((Reply::Replay(r), None, Vec::new()))
        }
        Command::StartRuns(start) => {
            conn.lock_tenant(&start.tenant_id).await?;
            let node = conn.fanout().node.clone();
            let runs = automation::start_runs(conn, start, &node, now).await?;
            Ok((Reply::Runs(runs), None, Vec::new()))
        }
        Command::ClaimRuns { limit } => {
            let node = conn.fanout().node.clone();
            let runs = automation::claim_runs(conn, &node, *limit, now).await?;
            Ok((Reply::Runs(Some(runs)), None, Vec::new()))
        }
        Command::FireTimers { limit } => {
            let node = conn.fanout().node.clone();
            let runs = automation::fire_timers(conn, &node, *limit, now).await?;
            Ok((Reply::Runs(Some(runs)), None, Vec::new()))
        }
        Command::StepDone(report) => {
            conn.lock_tenant(&report.tenant_id).await?;
            let node = conn.fanout().node.clone();
            // A step whose effects the database refuses is recorded as
            // failed, with the reason, in place of its effects: otherwise it
            // would run again at every lease, sending its messages again.
            let fresh_before = conn.fanout().fresh_len();
            let noted_before = conn.fanout().noted_len();
            let audits_before = conn.fanout().audits_len();
            conn.execute("SAVEPOINT step").await?;
            let done = match automation::step_done(conn, report, &node, now).await {
                Ok(done) => done,
                Err(e) if !e.is_domain() => {
                    conn.execute("ROLLBACK TO step").await?;
                    // What the rolled-back effects handed over or noted
                    // (deliveries, wake-ups, locks) goes with them.
                    conn.fanout().truncate_fresh(fresh_before);
                    conn.fanout().truncate_noted(noted_before);
                    conn.fanout().truncate_audits(audits_before);
                    conn.fanout().forget_locks();
                    tracing::warn!(run = %report.run_id, error = %e, "a step's outcome could not be stored; the step fails");
                    let failed = report.failed_unstored();
                    automation::step_done(conn, &failed, &node, now).await?
                }
                Err(e) => return Err(e),
            };
            conn.execute("RELEASE step").await?;
            let seq = done.sequence.map(|s| (report.tenant_id.clone(), s));
            Ok((Reply::Run(done.run), seq, done.event_types))
        }
        Command::Notify(n) => {
            let inserted = conn.insert_notification(n).await?;
            Ok((Reply::Flag(inserted), None, Vec::new()))
        }
        Command::ReserveQuota(r) => {
            let may = automation::reserve_quota(conn, r, now).await?;
            Ok((Reply::Flag(may), None, Vec::new()))
        }
        Command::BeginStep { run_id, index } => {
            let node = conn.fanout().node.clone();
            let held = automation::begin_step(conn, run_id, *index, &node, now).await?;
            Ok((Reply::Flag(held), None, Vec::new()))
        }
        Command::PurgeAged {
            aged,
            before,
            limit,
        } => {
            let n = conn.purge_aged(*aged, before, *limit).await?;
            Ok((Reply::Purged(n), None, Vec::new()))
        }
        Command::Purge { events_before } => {
            let keys_before = time::format(now - IDEMPOTENCY_WINDOW);
            // Quota counts are needed for their day only; the unit a step
            // reserved, while the step may still be retried (72 h).
            let quota_before = quota_day(now - QUOTA_KEPT);
            conn.purge(events_before, &keys_before, &quota_before)
                .await?;
            Ok((Reply::Purged(0), None, Vec::new()))
        }
    }
}

/// A backend's dedicated write connection, as the group-commit writer
/// drives it: transaction control, tenants and retention, on top of each
/// feature's statements.
#[async_trait::async_trait]
pub(crate) trait WriteConn:
    KeyConn + QueueConn + AutoConn + crate::networks::NetworkConn
{
    /// Begins the group's transaction (reconnecting first if the connection was lost).
    async fn begin(&mut self) -> Result<()>;
    /// Runs one statement that takes no parameters (`SAVEPOINT job`,
    /// `COMMIT`, …); both backends spell transaction control alike.
    async fn execute(&mut self, sql: &'static str) -> Result<()>;
    /// Tells other nodes, at commit, that the tenant's events reached `sequence`.
    async fn announce(&mut self, tenant: &str, sequence: i64) -> Result<()>;
    async fn count_tenants(&mut self) -> Result<i64>;
    async fn tenant_name_taken(&mut self, name: &str) -> Result<bool>;
    /// Inserts a tenant; `false` when the name is taken.
    async fn insert_tenant(&mut self, id: &str, name: &str, now: &str) -> Result<bool>;
    /// Replaces a lost connection with a new one.
    async fn reconnect(&mut self) -> Result<()>;
    /// Deletes up to `limit` of the oldest rows of one kind made before
    /// `before` (events with the deliveries made of them; deliveries no
    /// longer pending); returns how many went.
    async fn purge_aged(&mut self, aged: Aged, before: &str, limit: i64) -> Result<u64>;
    /// Deletes idempotency keys created before `keys_before`, the
    /// automations' records older than `events_before`, and provider quota
    /// rows of days before `quota_before` (a UTC date).
    async fn purge(
        &mut self,
        events_before: &str,
        keys_before: &str,
        quota_before: &str,
    ) -> Result<()>;
}
