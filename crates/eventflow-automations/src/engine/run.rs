//! Executing a run: its steps in order from the next one, each rendered
//! (every template of its settings, off the async workers), handed to its
//! kind in [`steps`](super::steps), and recorded with its effects in one
//! transaction ([`Automations::step_done`](eventflow_store::Automations::step_done)(eventflow_store::Store::step_done)). A failed step is retried on the
//! webhook schedule and then fails the run; a run whose lease another node
//! took stops here.

use std::sync::Arc;

use eventflow_delivery::policy::Next;
use eventflow_model::id::RunId;
use eventflow_model::time;
use eventflow_store::{Effect, Run, RunNext, RunStatus, StepOutcome, StepReport, StepStatus};
use serde_json::{Map, Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::Engine;
use super::steps::{self, At, Done, Tools};
use crate::error::RunError;
use crate::template;
use crate::workflow::{Step, StepKind};

impl Engine {
    /// Executes a run in the slot `permit` holds.
    pub(super) fn spawn_run(self: &Arc<Self>, run: Run, permit: OwnedSemaphorePermit) {
        let fresh = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.id.clone());
        if !fresh {
            return;
        }
        let engine = self.clone();
        // Ids only: an operator can follow one run through the logs.
        let span = tracing::info_span!(
            "workflow_run",
            run = %run.id,
            workflow = %run.workflow,
            tenant = %run.tenant_id,
        );
        tokio::spawn(
            async move {
                let id = run.id.clone();
                engine.execute(run).await;
                engine
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                drop(permit);
                engine.settled.notify_one();
                // A run slot is free: due runs that waited for one can go.
                engine.look_again.notify_one();
            }
            .instrument(span),
        );
    }

    /// Runs a run's steps from its next one until it ends, waits for a
    /// retry, or is lost to another node.
    pub async fn execute(self: &Arc<Self>, mut run: Run) {
        let snapshot = self.registry.snapshot();
        let found = snapshot.find_scoped(&run.tenant_id, &run.workflow);
        // `[vars]` is the operator's (it may hold a signing secret): only
        // the server's own workflows see it, not those a tenant wrote.
        let tenant_owned = found.is_some_and(|(_, own)| own);
        let steps: Result<Vec<Step>, RunError> = match found {
            None => Err(RunError::NotLoaded {
                workflow: run.workflow.clone(),
            }),
            Some((w, _)) => steps_at(&w.steps, &run.path).map(<[Step]>::to_vec),
        };
        drop(snapshot);
        let mut ctx = run.context.clone();
        if let Some(o) = ctx.as_object_mut() {
            let vars = if tenant_owned {
                json!({})
            } else {
                json!(self.settings.vars)
            };
            o.insert("vars".into(), vars);
            o.insert(
                "run".into(),
                json!({"id": run.id, "workflow": run.workflow, "trigger": run.origin}),
            );
        }
        let ctx = Arc::new(ctx);
        loop {
            if run.status != RunStatus::Pending {
                return;
            }
            if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                // The server stops: the next step runs after the restart.
                return;
            }
            let index = run.next_step.max(0) as usize;
            let (name, kind, done, total) = match &steps {
                Err(e) => (
                    step_name(&run.path, index + 1),
                    "unknown",
                    Done::Fail(e.to_string()),
                    index as i64 + 1,
                ),
                Ok(list) => {
                    match list.get(index) {
                        Some(step) => {
                            // A step that calls a provider first renews the
                            // lease, and stops if another node holds the run
                            // (its lease ran out while this one waited).
                            if step.kind.calls_out() {
                                match self
                                    .store
                                    .begin_step(&RunId::from_stored(run.id.clone()), index as i64)
                                    .await
                                {
                                    Ok(true) => {}
                                    Ok(false) => return,
                                    Err(e) => {
                                        tracing::warn!(error = %e, run = %run.id, "automations: could not renew a run's lease");
                                        return;
                                    }
                                }
                            }
                            let span = tracing::info_span!("step", index, kind = step.kind.name());
                            let done = self
                                .perform(&run, step, &ctx, tenant_owned)
                                .instrument(span.clone())
                                .await;
                            // The outcome's kind only: its message may quote
                            // a provider's answer.
                            span.in_scope(|| {
                                tracing::debug!(outcome = done.kind().as_str(), "workflow step");
                            });
                            (
                                step_name(&run.path, step.number),
                                step.kind.name(),
                                done,
                                list.len() as i64,
                            )
                        }
                        // Fewer steps than the run expected (the file changed).
                        None => {
                            let e = RunError::NoStepNumber {
                                workflow: run.workflow.clone(),
                                number: index + 1,
                            };
                            (
                                step_name(&run.path, index + 1),
                                "unknown",
                                Done::Fail(e.to_string()),
                                index as i64 + 1,
                            )
                        }
                    }
                }
            };
            let previous = run.steps.get(index);
            let attempts = previous.map_or(0, |p| p.attempts) + 1;
            let now = self.clock.now();
            let mut outcome = StepOutcome {
                name,
                step_type: kind.to_string(),
                status: StepStatus::Succeeded,
                error: None,
                attempts,
                at: time::format(now),
                detail: None,
            };
            let (effects, next) = match done {
                Done::Ok { detail, effects } => {
                    outcome.detail = detail;
                    (effects, RunNext::Advance)
                }
                Done::Skipped { reason, effects } => {
                    outcome.status = StepStatus::Skipped;
                    outcome.detail = Some(json!({ "reason": reason }));
                    (effects, RunNext::Advance)
                }
                Done::Fail(e) => {
                    outcome.status = StepStatus::Failed;
                    outcome.error = Some(e);
                    (Vec::new(), RunNext::Fail)
                }
                Done::Retry(e, wait) => {
                    let first = run
                        .window_started_at
                        .as_deref()
                        .and_then(time::parse)
                        .unwrap_or(now);
                    match self.policy.after_failure(
                        attempts,
                        first,
                        now,
                        wait,
                        rand::random::<f64>(),
                    ) {
                        Next::RetryAt(at) => {
                            outcome.status = StepStatus::Retrying;
                            outcome.error = Some(e);
                            outcome.detail = Some(json!({ "nextAttemptAt": time::format(at) }));
                            (Vec::new(), RunNext::RetryAt(time::format(at)))
                        }
                        Next::GiveUp => {
                            outcome.status = StepStatus::Failed;
                            outcome.error = Some(format!("gave up after 72 hours of retries: {e}"));
                            (Vec::new(), RunNext::Fail)
                        }
                    }
                }
            };
            let retrying = matches!(next, RunNext::RetryAt(_));
            // A timer set: the due loop looks again once it is recorded.
            let timer_set = effects.iter().any(|e| matches!(e, Effect::Schedule(_)));
            let report = StepReport {
                run_id: run.id.clone(),
                tenant_id: run.tenant_id.clone(),
                index: index as i64,
                total,
                outcome,
                effects,
                next,
                window_started_at: run.window_started_at.clone(),
            };
            match self.store.step_done(report).await {
                Ok(Some(updated)) => {
                    if updated.status != RunStatus::Pending {
                        metrics::counter!("eventflow_workflow_runs_total", "status" => updated.status.as_str())
                            .increment(1);
                    }
                    run = updated;
                    if timer_set {
                        self.look_again.notify_one();
                    }
                }
                // Another node holds the run now.
                Ok(None) => return,
                Err(e) => {
                    // The lease runs out and the step is tried again.
                    tracing::warn!(error = %e, run = %run.id, "automations: could not record a step");
                    return;
                }
            }
            if retrying {
                self.look_again.notify_one();
                return;
            }
        }
    }

    /// Does one step: renders its settings and hands them to its kind.
    async fn perform(&self, run: &Run, step: &Step, ctx: &Arc<Value>, own: bool) -> Done {
        // Off the async workers: a render may take all its fuel.
        let (config, ctx, bounds) = (step.config.clone(), ctx.clone(), self.settings.template);
        let rendered =
            match tokio::task::spawn_blocking(move || render_map(&config, &ctx, bounds)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Done::Fail(e.to_string()),
                Err(_) => return Done::Fail("the step's templates could not be rendered".into()),
            };
        let at = At {
            run,
            label: step_name(&run.path, step.number),
            now: self.clock.now(),
            own,
        };
        if let Some(no) = steps::refused(step.kind, &at, &self.settings) {
            return no;
        }
        let tools = Tools {
            store: self.store.as_ref(),
            http: &self.http,
            mailer: self.mailer.as_ref(),
            settings: &self.settings,
            timeout: self.timeout,
        };
        match step.kind {
            StepKind::Sms => steps::messages::sms(&rendered, &at, &tools).await,
            StepKind::Email => steps::messages::email(&rendered, &at, &tools).await,
            StepKind::Slack => steps::messages::slack(&rendered, &at, &tools).await,
            StepKind::Http => steps::http::request(&rendered, &at, &tools).await,
            StepKind::Create => steps::records::create(&rendered, &at, &self.settings),
            StepKind::Update => steps::records::update(&rendered, &at, &self.settings),
            StepKind::Schedule => steps::timers::schedule(&rendered, &at),
            StepKind::Cancel => steps::timers::cancel(&rendered),
            StepKind::Claim => steps::claim::submit(&rendered, &at, &tools).await,
        }
    }
}

/// A step's name in the run record: `2`, or `2.1` inside step 2's timer.
fn step_name(path: &str, number: usize) -> String {
    if path.is_empty() {
        number.to_string()
    } else {
        format!("{path}.{number}")
    }
}

/// The steps at a path: `` the workflow's, `2` those of its step 2.
fn steps_at<'a>(steps: &'a [Step], path: &str) -> Result<&'a [Step], RunError> {
    let mut here = steps;
    if path.is_empty() {
        return Ok(here);
    }
    for part in path.split('.') {
        let n: usize = part.parse().map_err(|_| RunError::BadPath {
            path: path.to_string(),
        })?;
        let Some(step) = n.checked_sub(1).and_then(|i| here.get(i)) else {
            return Err(RunError::NoStep {
                path: path.to_string(),
            });
        };
        if step.kind != StepKind::Schedule {
            return Err(RunError::NotSchedule {
                path: path.to_string(),
            });
        }
        here = &step.steps;
    }
    Ok(here)
}

/// Renders every string of a step's settings (nested `steps` are not part
/// of them). An error names the field.
fn render_map(
    config: &Map<String, Value>,
    ctx: &Value,
    bounds: template::Bounds,
) -> Result<Map<String, Value>, RunError> {
    config
        .iter()
        .map(|(k, v)| Ok((k.clone(), render_value(v, ctx, k, bounds)?)))
        .collect()
}

fn render_value(
    v: &Value,
    ctx: &Value,
    field: &str,
    bounds: template::Bounds,
) -> Result<Value, RunError> {
    match v {
        Value::String(s) => template::render(s, ctx, bounds)
            .map(Value::String)
            .map_err(|reason| RunError::Render {
                field: field.to_string(),
                reason,
            }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| render_value(item, ctx, &format!("{field}[{i}]"), bounds))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(k, item)| {
                Ok((
                    k.clone(),
                    render_value(item, ctx, &format!("{field}.{k}"), bounds)?,
                ))
            })
            .collect::<Result<Map<_, _>, RunError>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::{render_map, steps_at};
    use crate::error::RunError;
    use crate::template::Bounds;

    #[test]
    fn a_run_finds_the_steps_of_its_path_or_says_why_not() {
        let w = crate::workflow::parse(
            "w.yaml",
            "name: w\non: patient.created\nsteps:\n  - cancel: {key: a}\n  - schedule:\n      key: b\n      after: 1h\n      steps:\n        - cancel: {key: c}\n",
        )
        .expect("the workflow loads");
        assert_eq!(steps_at(&w.steps, "").map(<[_]>::len), Ok(2));
        assert_eq!(steps_at(&w.steps, "2").map(<[_]>::len), Ok(1));
        let err = |path: &str| steps_at(&w.steps, path).expect_err(path);
        assert_eq!(err("3"), RunError::NoStep { path: "3".into() });
        assert_eq!(err("1"), RunError::NotSchedule { path: "1".into() });
        assert_eq!(err("2.x"), RunError::BadPath { path: "2.x".into() });
        assert_eq!(
            err("1").to_string(),
            "step 1 of the workflow is not a schedule any more"
        );
    }

    #[test]
    fn a_template_that_does_not_render_names_its_field() {
        let config: Map<String, Value> = serde_json::from_value(json!({
            "to": "{{ data.phone }}",
            "body": {"lines": ["Hello {{ data.name }}", "{{ data.missing }}"]},
        }))
        .expect("settings");
        let ctx = json!({"data": {"phone": "+1555", "name": "Ada"}});
        let e = render_map(&config, &ctx, Bounds::default()).expect_err("data.missing");
        assert_eq!(e.field(), Some("body.lines[1]"));
        assert!(e.to_string().starts_with("body.lines[1]: "), "{e}");
        let ctx = json!({"data": {"phone": "+1555", "name": "Ada", "missing": "here"}});
        let rendered = render_map(&config, &ctx, Bounds::default()).expect("it renders");
        assert_eq!(
            Value::Object(rendered),
            json!({"to": "+1555", "body": {"lines": ["Hello Ada", "here"]}})
        );
    }
}
