//! `create` and `update`: a record write in the workflow's name
//! (`workflow:NAME` is its writer), applied in the transaction that records
//! the step. A run started by a chain of workflow writes as long as
//! `limits.workflow_chain_depth` writes nothing: workflows that update each
//! other stop there.

use eventflow_model::ResourceType;
use eventflow_store::automation::Effect;
use eventflow_store::{Op, WriteKind, WriteRequest};
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
    Done::Ok {
        detail: None,
        effects: vec![Effect::Write(Box::new(WriteRequest {
            tenant: at.run.tenant_id.clone(),
            key_id: format!("workflow:{}", at.run.workflow),
            kind: WriteKind::Single(op),
            idempotency: None,
        }))],
    }
}
