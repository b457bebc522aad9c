//! `create` and `update`: a record write in the workflow's name
//! (`workflow:NAME` is its writer), applied in the transaction that records
//! the step. A run started by a chain of workflow writes as long as
//! `limits.workflow_chain_depth` writes nothing: workflows that update each
//! other stop there.

use eventflow_model::ResourceType;
use eventflow_store::Effect;
use eventflow_store::{Actor, Op, WriteKind, WriteRequest};
use serde_json::{Map, Value, json};

use super::{At, Done, text};
use crate::engine::Settings;

/// The chain of workflow writes a run may come from when
/// `limits.workflow_chain_depth` is 0.
const DEFAULT_CHAIN_DEPTH: i64 = 8;

/// `create`: `type`, `body`.
pub(in crate::engine) fn create(
    config: &Map<String, Value>,
    at: &At<'_>,
    settings: &Settings,
) -> Done {
    write(config, at, settings, |rt, body| Ok(Op::Create { rt, body }))
}

/// `update`: `type`, `id`, `body` (a merge patch).
pub(in crate::engine) fn update(
    config: &Map<String, Value>,
    at: &At<'_>,
    settings: &Settings,
) -> Done {
    write(config, at, settings, |rt, body| {
        let id = text(config, "id");
        if id.is_empty() {
            return Err(Done::Fail("id: is empty".into()));
        }
        Ok(Op::Patch {
            rt,
            id,
            patch: body,
            if_match: None,
        })
    })
}

fn write(
    config: &Map<String, Value>,
    at: &At<'_>,
    settings: &Settings,
    op: impl FnOnce(ResourceType, Value) -> Result<Op, Done>,
) -> Done {
    let limit = match settings.workflow_chain_depth {
        0 => DEFAULT_CHAIN_DEPTH,
        n => i64::from(n),
    };
    if at.run.chain_depth >= limit {
        return Done::Fail(format!(
            "loop: this run was started by a chain of {} workflow writes \
             (limits.workflow_chain_depth is {limit}); workflows that update each \
             other need an `if` that stops them",
            at.run.chain_depth
        ));
    }
    let rt: ResourceType = match text(config, "type").parse() {
        Ok(rt) => rt,
        Err(_) => return Done::Fail("type: not a record type".into()),
    };
    let body = config.get("body").cloned().unwrap_or(json!({}));
    let op = match op(rt, body) {
        Ok(op) => op,
        Err(no) => return no,
    };
    // An organisation's workflow writes in a member clinic: `clinic`, or
    // the clinic whose event started the run. A clinic's writes in itself.
    let network = eventflow_model::id::is_organisation_id(&at.run.tenant_id);
    let clinic = text(config, "clinic");
    let tenant = match (network, clinic.is_empty()) {
        (true, false) => clinic,
        (true, true) => match at.run.context["tenantId"].as_str() {
            Some(t) if t != at.run.tenant_id => t.to_string(),
            _ => return Done::Fail("clinic: is needed: the run has no clinic's event".into()),
        },
        (false, true) => at.run.tenant_id.clone(),
        (false, false) if clinic == at.run.tenant_id => clinic,
        (false, false) => {
            return Done::Fail("clinic: a clinic's workflow writes in its own clinic only".into());
        }
    };
    Done::Ok {
        detail: None,
        effects: vec![Effect::Write(Box::new(WriteRequest {
            tenant,
            actor: Actor::Workflow(at.run.workflow.clone()),
            kind: WriteKind::Single(op),
            idempotency: None,
        }))],
    }
}

#[cfg(test)]
mod tests {
    use eventflow_model::ResourceType;
    use eventflow_store::{Actor, Effect, Run, RunNext, StepOutcome, StepReport};
    use eventflow_store::{
        Automations, EventLog, EventQuery, ListQuery, Op, Records, WriteKind, WriteRequest,
    };
    use serde_json::{Map, Value, json};

    use super::{create, update};
    use crate::engine::Settings;
    use crate::engine::steps::Done;
    use crate::engine::steps::testing::{Kit, at, config};

    /// Records the step's outcome with its effects, as the run loop does.
    async fn record(kit: &Kit, run: &Run, done: Done) -> Run {
        let Done::Ok { effects, .. } = done else {
            panic!("not done: {done:?}");
        };
        let report = StepReport {
            run_id: run.id.clone(),
            tenant_id: run.tenant_id.clone(),
            index: 0,
            total: 1,
            outcome: StepOutcome {
                name: "1".into(),
                step_type: "create".into(),
                status: eventflow_store::StepStatus::Succeeded,
                error: None,
                attempts: 1,
                at: eventflow_model::time::format(jiff::Timestamp::now()),
                detail: None,
            },
            effects,
            next: RunNext::Advance,
            window_started_at: None,
        };
        kit.store
            .step_done(report)
            .await
            .expect("the step is recorded")
            .expect("this node holds the run")
    }

    async fn patients(kit: &Kit) -> Vec<Map<String, Value>> {
        kit.store
            .list_records(
                &kit.tenant,
                ResourceType::Patient,
                &ListQuery {
                    mrn: None,
                    limit: 10,
                    ..ListQuery::default()
                },
            )
            .await
            .expect("the patients")
            .data
    }

    #[tokio::test]
    async fn a_create_step_writes_the_record_as_the_workflow() {
        let kit = Kit::new().await;
        let run = kit.started_run().await;
        let step = config(json!({
            "type": "patient",
            "body": {"firstName": "Ada", "lastName": "Lovelace"},
        }));
        let done = create(&step, &at(&run), &kit.settings);
        let run = record(&kit, &run, done).await;
        assert_eq!(run.status, eventflow_store::RunStatus::Succeeded);
        let list = patients(&kit).await;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["firstName"], "Ada");
        assert_eq!(list[0]["lastName"], "Lovelace");
        // Its event names the workflow as the writer.
        let events = kit
            .store
            .events_with_writer(
                &kit.tenant,
                &EventQuery {
                    limit: 10,
                    max_bytes: eventflow_store::DEFAULT_PAGE_BYTES,
                    ..EventQuery::default()
                },
            )
            .await
            .expect("the events");
        let (event, writer) = events.last().expect("an event");
        assert_eq!(event.event_type, "patient.created");
        assert_eq!(writer, &Some(Actor::Workflow("reminders".into())));
        let stored = writer.as_ref().map(ToString::to_string);
        assert_eq!(stored.as_deref(), Some("workflow:reminders"));
    }

    #[tokio::test]
    async fn an_update_step_patches_the_record() {
        let kit = Kit::new().await;
        let written = kit
            .store
            .write(WriteRequest {
                tenant: kit.tenant.to_string(),
                actor: Actor::Key("key_test".into()),
                kind: WriteKind::Single(Op::Create {
                    rt: ResourceType::Patient,
                    body: json!({"firstName": "Ada", "lastName": "Lovelace"}),
                }),
                idempotency: None,
            })
            .await
            .expect("the patient is written");
        let id = written.body["id"].as_str().expect("an id").to_string();
        let run = kit.started_run().await;
        let step = config(json!({"type": "patient", "id": id, "body": {"mrn": "MRN-LOVELACE"}}));
        let done = update(&step, &at(&run), &kit.settings);
        record(&kit, &run, done).await;
        let patient = kit
            .store
            .get_record(&kit.tenant, ResourceType::Patient, &id)
            .await
            .expect("a read")
            .expect("the patient");
        assert_eq!(patient["mrn"], "MRN-LOVELACE");
        assert_eq!(patient["firstName"], "Ada");
    }

    #[tokio::test]
    async fn bad_settings_fail_the_step_and_write_nothing() {
        let kit = Kit::new().await;
        let run = kit.run(json!({}));
        let a = at(&run);
        let fail = |done: Done| match done {
            Done::Fail(e) => e,
            other => panic!("{other:?}"),
        };
        let step = config(json!({"type": "starship", "body": {}}));
        assert_eq!(
            fail(create(&step, &a, &kit.settings)),
            "type: not a record type"
        );
        let step = config(json!({"type": "patient", "id": "", "body": {}}));
        assert_eq!(fail(update(&step, &a, &kit.settings)), "id: is empty");
    }

    /// Whether a `create` step of `run` writes (`Ok`) or why not.
    fn outcome(step: &Map<String, Value>, run: &Run, settings: &Settings) -> Result<(), String> {
        match create(step, &at(run), settings) {
            Done::Ok { effects, .. } => {
                assert!(matches!(effects.as_slice(), [Effect::Write(_)]));
                Ok(())
            }
            Done::Fail(e) => Err(e),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_run_at_the_end_of_a_chain_of_workflow_writes_writes_nothing() {
        let mut kit = Kit::new().await;
        let mut run = kit.run(json!({}));
        let step = config(json!({"type": "patient", "body": {"firstName": "A", "lastName": "B"}}));
        run.chain_depth = 7;
        assert_eq!(outcome(&step, &run, &kit.settings), Ok(()));
        run.chain_depth = 8;
        let e = outcome(&step, &run, &kit.settings).expect_err("the default limit is 8");
        assert!(
            e.starts_with(
                "loop: this run was started by a chain of 8 workflow writes \
                 (limits.workflow_chain_depth is 8)"
            ),
            "{e}"
        );
        kit.settings.workflow_chain_depth = 2;
        run.chain_depth = 1;
        assert_eq!(outcome(&step, &run, &kit.settings), Ok(()));
        run.chain_depth = 2;
        assert!(outcome(&step, &run, &kit.settings).is_err());
    }
}
