//! `schedule` and `cancel`: durable timers, by key. `schedule` sets the
//! timer that runs the step's own steps at `at` (plus `offset`) or `after` a
//! duration from now, replacing the tenant's timer of the same key; a time
//! already past sets nothing and removes the key's earlier timer. `cancel`
//! removes the key's timer.

use eventflow_model::time;
use eventflow_store::automation::{Effect, Timer};
use serde_json::{Map, Value, json};

use super::{At, Done, text};
use crate::duration;

/// `schedule`: `key`, and `at` (with an optional `offset`) or `after`.
pub(in crate::engine) fn schedule(config: &Map<String, Value>, at: &At<'_>) -> Done {
    let key = text(config, "key");
    if key.is_empty() {
        return Done::Fail("key: is empty".into());
    }
    let fire_at = if config.contains_key("after") {
        let after = match duration::parse(&text(config, "after")) {
            Ok(d) => d,
            Err(e) => return Done::Fail(format!("after: {e}")),
        };
        at.now.checked_add(after).ok()
    } else {
        let Some(start) = time::parse(&text(config, "at")) else {
            return Done::Fail("at: is not a time (RFC 3339, e.g. {{ data.start }})".into());
        };
        let offset = match config.get("offset").and_then(Value::as_str) {
            None => jiff::SignedDuration::ZERO,
            Some(o) => match duration::parse(o) {
                Ok(d) => d,
                Err(e) => return Done::Fail(format!("offset: {e}")),
            },
        };
        start.checked_add(offset).ok()
    };
    let Some(fire_at) = fire_at else {
        return Done::Fail("the timer's time is out of range".into());
    };
    if fire_at <= at.now {
        // Too late for this timer (a start less than 24 h away): it is not
        // set, and an earlier one of the key (for a time since moved) goes.
        return Done::Skipped {
            reason: format!("the time {} has passed", time::format(fire_at)),
            effects: vec![Effect::Cancel { key }],
        };
    }
    let run = at.run;
    Done::Ok {
        detail: Some(json!({"key": key, "fireAt": time::format(fire_at)})),
        effects: vec![Effect::Schedule(Timer {
            tenant_id: run.tenant_id.clone(),
            key,
            fire_at: time::format(fire_at),
            workflow: run.workflow.clone(),
            // The timer's run executes this step's own steps.
            path: at.label.clone(),
            context: run.context.clone(),
            event_id: run.event_id.clone(),
            run_id: Some(run.id.clone()),
            created_at: time::format(at.now),
            chain_depth: run.chain_depth,
        })],
    }
}

/// `cancel`: `key`.
pub(in crate::engine) fn cancel(config: &Map<String, Value>) -> Done {
    Done::Ok {
        detail: None,
        effects: vec![Effect::Cancel {
            key: text(config, "key"),
        }],
    }
}
