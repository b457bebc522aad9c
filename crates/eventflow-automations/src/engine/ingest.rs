//! Ingest: the tenant's new events become runs.
//!
//! For each tenant with new events (a commit wakes it; a sweep every few
//! seconds is the safety net), the events after the tenant's automation
//! cursor are matched against the workflows the tenant runs (`on`, then the
//! CEL `if`), and the runs start in one transaction with the cursor's move
//! ([`Automations::start_runs`](eventflow_store::Automations::start_runs)). A crash before that commit leaves the cursor
//! where it was: the events are matched again. A batch with no run moves the
//! cursor lazily, so an idle write path costs no extra transaction.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use eventflow_model::filter::{Bound, DEFAULT_COST_LIMIT, Outcome};
use eventflow_model::id::{RunId, TenantId};
use eventflow_model::{Event, time};
use eventflow_store::EventQuery;
use eventflow_store::{Actor, ConditionError, NewRun, RunOrigin, StartRuns};
use serde_json::Value;

use super::{BATCH, CURSOR_SAVE_EVERY, Engine};

/// The per-tenant ingest state: the saved cursor and how far this node matched.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    saved: i64,
    scanned: i64,
    since_save: Option<std::time::Instant>,
}

impl Engine {
    pub(super) async fn ingest_loop(self: Arc<Self>) {
        let mut cursors: HashMap<TenantId, Cursor> = HashMap::new();
        // Tenant → its latest sequence when a commit told it (else read).
        let mut todo: BTreeMap<TenantId, Option<i64>> = BTreeMap::new();
        let notifier_store = self.store.clone();
        let mut sweep = tokio::time::interval(CURSOR_SAVE_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = notifier_store.notifier().take_changed() => {
                    for (tenant, latest) in changed {
                        let entry = todo.entry(TenantId::from_stored(tenant)).or_insert(Some(latest));
                        if let Some(known) = entry {
                            *known = (*known).max(latest);
                        }
                    }
                }
                // The safety net (the first tick is at once): every tenant,
                // also those whose commits another node made while no
                // wake-up reached us.
                _ = sweep.tick() => {
                    for tenant in self.store.tenant_ids().await.unwrap_or_default() {
                        todo.insert(tenant, None);
                    }
                }
            }
            for (tenant, latest) in std::mem::take(&mut todo) {
                if let Err(e) = self.ingest(&tenant, latest, &mut cursors).await {
                    tracing::warn!(error = %e, "automations: could not match new events; will try again");
                }
            }
        }
    }

    async fn ingest(
        self: &Arc<Self>,
        tenant: &TenantId,
        known_latest: Option<i64>,
        cursors: &mut HashMap<TenantId, Cursor>,
    ) -> eventflow_store::Result<()> {
        let mut c = match cursors.get(tenant) {
            Some(c) => *c,
            None => {
                let saved = self.store.automation_cursor(tenant).await?;
                Cursor {
                    saved,
                    scanned: saved,
                    since_save: None,
                }
            }
        };
        loop {
            // No workflow runs for the tenant: nothing to match, so the
            // events are not read at all (the write path's only cost is
            // this one small query, and the lazy cursor save).
            // (The latest sequence is known or read first: a workflow
            // loaded in between then sees the events after it.)
            let latest = match known_latest {
                Some(l) => l,
                None => self.store.latest_sequence(tenant).await?,
            };
            if self.registry.snapshot().workflows(tenant).next().is_none() {
                if latest > c.scanned {
                    c.scanned = latest;
                    c.since_save.get_or_insert_with(std::time::Instant::now);
                }
                break;
            }
            let events = self
                .store
                .events_with_writer(
                    tenant,
                    &EventQuery {
                        after: c.scanned,
                        types: Default::default(),
                        resource_type: None,
                        resource_id: None,
                        visible: None,
                        limit: BATCH,
                        max_bytes: eventflow_store::DEFAULT_PAGE_BYTES,
                    },
                )
                .await?;
            // An organisation's log is its network's: events are numbered
            // there by networkSequence, and each one's depth is kept by its
            // clinic, under its own sequence.
            let network = tenant.is_organisation();
            let Some(last) = events.last().map(|(e, _)| e.number_in(network)) else {
                break;
            };
            let first = events.first().map_or(last, |(e, _)| e.number_in(network));
            let mut depths: HashMap<i64, i64> = HashMap::new();
            let written: Vec<&Event> = events
                .iter()
                .filter(|(_, w)| w.as_ref().is_some_and(|w| w.workflow().is_some()))
                .map(|(e, _)| e)
                .collect();
            if !written.is_empty() && !network {
                depths.extend(self.store.write_depths(tenant, first, last).await?);
            } else if !written.is_empty() {
                let mut clinics: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
                for e in &written {
                    let span = clinics
                        .entry(&e.tenant_id)
                        .or_insert((e.sequence, e.sequence));
                    span.0 = span.0.min(e.sequence);
                    span.1 = span.1.max(e.sequence);
                }
                for (clinic, (lo, hi)) in clinics {
                    let of_clinic: HashMap<i64, i64> = self
                        .store
                        .write_depths(&TenantId::from_stored(clinic.to_string()), lo, hi)
                        .await?
                        .into_iter()
                        .collect();
                    for e in written.iter().filter(|e| e.tenant_id == clinic) {
                        if let Some(d) = of_clinic.get(&e.sequence) {
                            depths.insert(e.number_in(true), *d);
                        }
                    }
                }
            }
            let (runs, condition_errors) = self.match_events(tenant, &events, &depths);
            let stale = c
                .since_save
                .is_some_and(|t| t.elapsed() >= CURSOR_SAVE_EVERY);
            if runs.is_empty() && condition_errors.is_empty() && !stale {
                c.scanned = last;
                c.since_save.get_or_insert_with(std::time::Instant::now);
                continue;
            }
            // Only the runs a slot is free for now are leased to this
            // node and started; the others wait in the table, due at once.
            let mut permits = self.free_slots(runs.len());
            let started = self
                .store
                .start_runs(StartRuns {
                    tenant_id: tenant.to_string(),
                    from: c.saved,
                    to: last,
                    lease: permits.len(),
                    runs,
                    condition_errors,
                })
                .await?;
            match started {
                Some(runs) => {
                    c = Cursor {
                        saved: last,
                        scanned: last,
                        since_save: None,
                    };
                    let mut waiting = false;
                    for run in runs {
                        match permits.pop() {
                            Some(permit) if run.lease_owner.is_some() => {
                                self.spawn_run(run, permit)
                            }
                            _ => waiting = true,
                        }
                    }
                    if waiting {
                        self.look_again.notify_one();
                    }
                }
                // Another node matched these events first: start over from
                // where it saved.
                None => {
                    let saved = self.store.automation_cursor(tenant).await?;
                    c = Cursor {
                        saved,
                        scanned: saved,
                        since_save: None,
                    };
                }
            }
        }
        // Save a cursor that only passed unmatched events, once it is old
        // enough, so a restart does not match them all again.
        if c.scanned > c.saved
            && c.since_save
                .is_some_and(|t| t.elapsed() >= CURSOR_SAVE_EVERY)
        {
            match self
                .store
                .start_runs(StartRuns {
                    tenant_id: tenant.to_string(),
                    from: c.saved,
                    to: c.scanned,
                    runs: Vec::new(),
                    lease: 0,
                    condition_errors: Vec::new(),
                })
                .await?
            {
                Some(_) => {
                    c.saved = c.scanned;
                    c.since_save = None;
                }
                None => {
                    let saved = self.store.automation_cursor(tenant).await?;
                    c = Cursor {
                        saved,
                        scanned: saved,
                        since_save: None,
                    };
                }
            }
        }
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.to_string(), c.scanned);
        cursors.insert(tenant.clone(), c);
        Ok(())
    }

    /// The runs a batch of events starts, and the workflows whose `if` ran
    /// out of its budget (the last event of each). A workflow does not run
    /// on an event one of its own steps wrote (no loop of a workflow that
    /// updates the kind of record it listens to).
    fn match_events(
        &self,
        tenant: &str,
        events: &[(Event, Option<Actor>)],
        depths: &HashMap<i64, i64>,
    ) -> (Vec<NewRun>, Vec<ConditionError>) {
        let snapshot = self.registry.snapshot();
        let cel_cost = match self.settings.cel_cost {
            0 => DEFAULT_COST_LIMIT,
            n => n,
        };
        let mut runs = Vec::new();
        let mut errors: BTreeMap<String, ConditionError> = BTreeMap::new();
        for (event, writer) in events {
            let mut bound: Option<Bound> = None;
            // A run started by an event a workflow wrote is one deeper in
            // the chain than the run that wrote it.
            let by_workflow = writer.as_ref().and_then(Actor::workflow);
            let chain_depth = if by_workflow.is_some() {
                let number = event.number_in(eventflow_model::id::is_organisation_id(tenant));
                depths.get(&number).copied().unwrap_or(0) + 1
            } else {
                0
            };
            for w in snapshot.workflows(tenant) {
                if !event.matches(&w.on) {
                    continue;
                }
                if by_workflow == Some(w.name.as_str()) {
                    continue;
                }
                if let Some(cond) = &w.condition {
                    let b = bound.get_or_insert_with(|| Bound::new(event));
                    match cond.evaluate(b, cel_cost) {
                        Outcome::Match => {}
                        Outcome::NoMatch => continue,
                        // No match, and said where the operator and the
                        // tenant look: the log, the metric, the workflow's
                        // `conditionError`. Never the event's data.
                        Outcome::OverBudget => {
                            tracing::warn!(workflow = %w.name, tenant = %tenant, event = %event.id, "workflow condition ran out of its cost budget; no match");
                            metrics::counter!("eventflow_filter_over_budget_total").increment(1);
                            errors.insert(
                                w.name.clone(),
                                ConditionError {
                                    workflow: w.name.clone(),
                                    condition: w.condition_source.clone().unwrap_or_default(),
                                    error: eventflow_store::FilterError {
                                        message: format!(
                                            "ran out of its cost budget ({cel_cost} units); the \
                                             event did not match"
                                        ),
                                        event_id: event.id.clone(),
                                        at: time::format(self.clock.now()),
                                    },
                                },
                            );
                            continue;
                        }
                    }
                }
                runs.push(NewRun {
                    id: RunId::fresh().into_string(),
                    tenant_id: tenant.to_string(),
                    workflow: w.name.clone(),
                    event_id: Some(event.id.clone()),
                    origin: RunOrigin::Event,
                    timer_key: None,
                    path: String::new(),
                    context: serde_json::to_value(event).unwrap_or(Value::Null),
                    chain_depth,
                });
            }
        }
        (runs, errors.into_values().collect())
    }
}
