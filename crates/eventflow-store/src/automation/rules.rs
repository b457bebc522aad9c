//! The writer's side of automations: each decision of the engine made
//! durable in one transaction with its effects.

use serde_json::json;

use super::rows::*;
use super::sql::AutoConn;
use crate::error::{Result, StoreError};
use crate::records;

/// Why an effect cannot be stored, if it cannot.
fn unstorable(effect: &Effect) -> Option<String> {
    let nul = |what: &str| Some(format!("{what} contains a NUL character (\\u0000)"));
    let has = |s: &str| s.contains('\0');
    match effect {
        // Records are validated by `records::rules::apply`, which refuses NUL.
        Effect::Write(_) => None,
        Effect::Schedule(Timer { key, .. }) | Effect::Cancel { key }
            if key.len() > MAX_TIMER_KEY =>
        {
            Some(format!(
                "the timer key is longer than {MAX_TIMER_KEY} bytes"
            ))
        }
        Effect::Schedule(t) if has(&t.key) => nul("the timer key"),
        Effect::Schedule(t) if eventflow_model::validate::find_nul(&t.context).is_some() => {
            nul("the timer's context")
        }
        Effect::Cancel { key } if has(key) => nul("the timer key"),
        Effect::Notify(n) if has(&n.to) => nul("the recipient"),
        Effect::Notify(n) if n.subject.as_deref().is_some_and(has) => nul("the subject"),
        Effect::Notify(n) if has(&n.body) => nul("the message"),
        _ => None,
    }
}

/// Takes a unit of the tenant's quota for the UTC day of `now`, if the
/// step has none yet and the day's count is below the limit; whether the
/// step may send. One conditional upsert, so concurrent writers (several
/// nodes on PostgreSQL) never take more than the limit between them.
pub(crate) async fn reserve_quota<C: AutoConn>(
    conn: &mut C,
    r: &QuotaReservation,
    now: jiff::Timestamp,
) -> Result<bool> {
    if conn.quota_reserved(&r.run_id, &r.step).await? {
        return Ok(true);
    }
    let day = quota_day(now);
    if !conn.count_quota_use(r, &day).await? {
        return Ok(false);
    }
    conn.insert_quota_use(r, &day).await?;
    Ok(true)
}

fn new_run_row(n: NewRun, node: Option<&str>, now: &str, next_at: &str) -> Run {
    Run {
        id: n.id,
        tenant_id: n.tenant_id,
        workflow: n.workflow,
        event_id: n.event_id,
        origin: n.origin,
        timer_key: n.timer_key,
        path: n.path,
        context: n.context,
        status: RunStatus::Pending,
        steps: Vec::new(),
        next_step: 0,
        window_started_at: None,
        next_at: Some(next_at.to_string()),
        lease_owner: node.map(str::to_string),
        started_at: now.to_string(),
        updated_at: now.to_string(),
        finished_at: None,
        chain_depth: n.chain_depth,
    }
}

/// Inserts a batch's runs, the first `lease` leased to `node`, and moves the cursor; `None`
/// when the cursor is no longer at `from` (another node took the batch).
pub(crate) async fn start_runs<C: AutoConn>(
    conn: &mut C,
    start: &StartRuns,
    node: &str,
    now: jiff::Timestamp,
) -> Result<Option<Vec<Run>>> {
    let cursor = conn.automation_cursor(&start.tenant_id).await?;
    if cursor != start.from {
        return Ok(None);
    }
    conn.set_automation_cursor(&start.tenant_id, start.to)
        .await?;
    for e in &start.condition_errors {
        conn.record_condition_error(&start.tenant_id, e).await?;
    }
    let now_s = eventflow_model::time::format(now);
    let until = eventflow_model::time::format(now + RUN_LEASE);
    let mut runs = Vec::with_capacity(start.runs.len());
    for (i, n) in start.runs.iter().enumerate() {
        let run = if i < start.lease {
            let run = new_run_row(n.clone(), Some(node), &now_s, &until);
            conn.insert_run(&run, Some(&until)).await?;
            run
        } else {
            let run = new_run_row(n.clone(), None, &now_s, &now_s);
            conn.insert_run(&run, None).await?;
            run
        };
        runs.push(run);
    }
    Ok(Some(runs))
}

/// Leases up to `limit` due runs to `node`.
pub(crate) async fn claim_runs<C: AutoConn>(
    conn: &mut C,
    node: &str,
    limit: i64,
    now: jiff::Timestamp,
) -> Result<Vec<Run>> {
    let now_s = eventflow_model::time::format(now);
    let until = eventflow_model::time::format(now + RUN_LEASE);
    let mut runs = conn.due_runs(&now_s, limit).await?;
    for run in &mut runs {
        run.lease_owner = Some(node.to_string());
        run.next_at = Some(until.clone());
        conn.update_run(run, Some(&until)).await?;
    }
    Ok(runs)
}

/// Fires up to `limit` due timers: each is deleted and its run inserted,
/// leased to `node`.
pub(crate) async fn fire_timers<C: AutoConn>(
    conn: &mut C,
    node: &str,
    limit: i64,
    now: jiff::Timestamp,
) -> Result<Vec<Run>> {
    let now_s = eventflow_model::time::format(now);
    let until = eventflow_model::time::format(now + RUN_LEASE);
    let timers = conn.due_timers(&now_s, limit).await?;
    let mut runs = Vec::with_capacity(timers.len());
    for t in timers {
        conn.delete_timer(&t.tenant_id, &t.key).await?;
        let run = new_run_row(
            NewRun {
                id: eventflow_model::id::RunId::fresh().into_string(),
                tenant_id: t.tenant_id,
                workflow: t.workflow,
                event_id: t.event_id,
                origin: RunOrigin::Timer,
                timer_key: Some(t.key),
                path: t.path,
                context: t.context,
                chain_depth: t.chain_depth,
            },
            Some(node),
            &now_s,
            &until,
        );
        conn.insert_run(&run, Some(&until)).await?;
        runs.push(run);
    }
    Ok(runs)
}

/// Before a step with an effect outside the server: renews the run's lease
/// if `node` still holds it at step `index`, so no other node can take the
/// run while the provider is called (steps time out well within a lease).
pub(crate) async fn begin_step<C: AutoConn>(
    conn: &mut C,
    run_id: &str,
    index: i64,
    node: &str,
    now: jiff::Timestamp,
) -> Result<bool> {
    let until = eventflow_model::time::format(now + RUN_LEASE);
    conn.renew_run_lease(run_id, node, index, &until).await
}

/// What [`step_done`] did: the run as it now stands (`None` when this node
/// no longer holds it), and the sequence of an event a write produced.
pub(crate) struct StepRecorded {
    pub run: Option<Run>,
    pub sequence: Option<i64>,
    pub event_types: Vec<String>,
}

/// Records a step's outcome and applies its effects, if `node` still holds
/// the run and the step is the one due.
pub(crate) async fn step_done<C: AutoConn + crate::networks::NetworkConn>(
    conn: &mut C,
    report: &StepReport,
    node: &str,
    now: jiff::Timestamp,
) -> Result<StepRecorded> {
    let mut recorded = StepRecorded {
        run: None,
        sequence: None,
        event_types: Vec::new(),
    };
    let Some(mut run) = conn.run_for_update(&report.run_id).await? else {
        return Ok(recorded);
    };
    if run.tenant_id != report.tenant_id
        || run.status != RunStatus::Pending
        || run.lease_owner.as_deref() != Some(node)
        || run.next_step != report.index
    {
        return Ok(recorded);
    }
    let now_s = eventflow_model::time::format(now);
    let mut outcome = report.outcome.clone();
    let mut next = report.next.clone();
    // What the database cannot store fails the step, once, with the reason,
    // instead of failing the write (and the step again at every lease).
    let unstorable = report.effects.iter().find_map(unstorable);
    if let Some(why) = &unstorable {
        outcome.status = StepStatus::Failed;
        outcome.error = Some(format!("{why}; it cannot be stored"));
        next = RunNext::Fail;
    }
    for effect in report.effects.iter().filter(|_| unstorable.is_none()) {
        match effect {
            // An organisation's workflow writes in a member clinic only;
            // checked here, under the rows' locks, so a clinic that just
            // left gets nothing.
            Effect::Write(req)
                if req.tenant != run.tenant_id
                    && conn.member(&run.tenant_id, &req.tenant).await?.is_none() =>
            {
                outcome.status = StepStatus::Failed;
                outcome.error = Some(format!(
                    "clinic: {} is not a member clinic of this organisation",
                    req.tenant
                ));
                next = RunNext::Fail;
                break;
            }
            Effect::Write(req) => match write_in(conn, req, now).await {
                Ok(applied) => {
                    // The events this write made carry the run's depth on
                    // to the runs they start (kept by the clinic written).
                    if let Some(last) = applied.last_sequence {
                        let n = applied.event_types.len() as i64;
                        for sequence in (last - n + 1)..=last {
                            conn.record_write_depth(&req.tenant, sequence, run.chain_depth)
                                .await?;
                        }
                    }
                    recorded.sequence = applied.last_sequence;
                    recorded.event_types.extend(applied.event_types);
                    let id = applied.outcome.body.get("id").cloned();
                    let version = applied.outcome.body.get("version").cloned();
                    outcome.detail = Some(json!({"id": id, "version": version}));
                }
                // Nothing was written: the step fails with the reason.
                Err(e) if e.is_domain() => {
                    outcome.status = StepStatus::Failed;
                    outcome.error = Some(e.to_string());
                    next = RunNext::Fail;
                    break;
                }
                Err(e) => return Err(e),
            },
            Effect::Schedule(t) => {
                let t = Timer {
                    chain_depth: run.chain_depth,
                    ..t.clone()
                };
                conn.upsert_timer(&t).await?;
            }
            Effect::Cancel { key } => {
                let found = conn.delete_timer(&run.tenant_id, key).await?;
                let detail = outcome.detail.get_or_insert_with(|| json!({}));
                if let Some(d) = detail.as_object_mut() {
                    d.insert("key".into(), json!(key));
                    d.insert("cancelled".into(), json!(found));
                }
            }
            Effect::Notify(n) => {
                conn.insert_notification(n).await?;
            }
        }
    }
    let index = usize::try_from(report.index).map_err(|_| StoreError::corrupt("step index"))?;
    if index < run.steps.len() {
        run.steps[index] = outcome;
    } else {
        run.steps.push(outcome);
    }
    run.updated_at = now_s.clone();
    let lease = eventflow_model::time::format(now + RUN_LEASE);
    let mut lease_until = None;
    match next {
        RunNext::Advance => {
            run.next_step += 1;
            run.window_started_at = None;
            if run.next_step >= report.total {
                run.status = RunStatus::Succeeded;
                run.finished_at = Some(now_s);
                run.next_at = None;
                run.lease_owner = None;
            } else {
                run.next_at = Some(lease.clone());
                lease_until = Some(lease.as_str());
            }
        }
        RunNext::RetryAt(at) => {
            run.window_started_at = report
                .window_started_at
                .clone()
                .or_else(|| Some(now_s.clone()));
            run.next_at = Some(at);
            run.lease_owner = None;
        }
        RunNext::Fail => {
            run.status = RunStatus::Failed;
            run.finished_at = Some(now_s);
            run.next_at = None;
            run.lease_owner = None;
        }
    }
    conn.update_run(&run, lease_until).await?;
    recorded.run = Some(run);
    Ok(recorded)
}

/// A step's write, in its own clinic or (an organisation's) in a member
/// clinic: that clinic is locked and its endpoints checked first, as for
/// any write of it, so the event reaches the clinic's current endpoints.
async fn write_in<C: AutoConn>(
    conn: &mut C,
    req: &crate::records::WriteRequest,
    now: jiff::Timestamp,
) -> Result<records::rules::Applied> {
    conn.lock_tenant(&req.tenant).await?;
    records::rules::apply(conn, req, now).await
}
