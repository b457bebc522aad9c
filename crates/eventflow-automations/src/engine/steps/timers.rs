//! `schedule` and `cancel`: durable timers, by key. `schedule` sets the
//! timer that runs the step's own steps at `at` (plus `offset`) or `after` a
//! duration from now, replacing the tenant's timer of the same key; a time
//! already past sets nothing and removes the key's earlier timer. `cancel`
//! removes the key's timer.

use eventflow_model::time;
use eventflow_store::{Effect, Timer};
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

#[cfg(test)]
mod tests {
    use eventflow_model::time;
    use eventflow_store::{Effect, Timer};
    use jiff::SignedDuration;
    use serde_json::json;

    use super::{cancel, schedule};
    use crate::engine::steps::Done;
    use crate::engine::steps::testing::{Kit, at, config};

    fn timer(done: Done) -> Timer {
        let Done::Ok { effects, .. } = done else {
            panic!("not set: {done:?}");
        };
        match effects.into_iter().next() {
            Some(Effect::Schedule(t)) => t,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn after_sets_a_timer_that_far_from_now_for_the_steps_own_steps() {
        let kit = Kit::new().await;
        let run = kit.run(json!({"data": {"id": "apt_1"}}));
        let a = at(&run);
        let step = config(json!({"key": "follow-up:apt_1", "after": "2d"}));
        let done = schedule(&step, &a);
        let Done::Ok { detail, .. } = &done else {
            panic!("{done:?}");
        };
        let fire_at = time::format(a.now + SignedDuration::from_hours(48));
        assert_eq!(
            detail,
            &Some(json!({"key": "follow-up:apt_1", "fireAt": fire_at}))
        );
        let t = timer(done);
        assert_eq!(t.key, "follow-up:apt_1");
        assert_eq!(t.fire_at, fire_at);
        assert_eq!(t.workflow, "reminders");
        // The timer's run executes step 1's steps, with the run's event.
        assert_eq!(t.path, "1");
        assert_eq!(t.context, json!({"data": {"id": "apt_1"}}));
        assert_eq!(t.run_id.as_deref(), Some("run_test1"));
    }

    #[tokio::test]
    async fn at_with_an_offset_fires_that_long_before_and_a_nested_timer_has_a_nested_path() {
        let kit = Kit::new().await;
        let mut run = kit.run(json!({}));
        run.path = "2".into();
        let mut a = at(&run);
        a.label = "2.1".into();
        let start = a.now + SignedDuration::from_hours(72);
        let step = config(json!({"key": "reminder", "at": time::format(start), "offset": "-24h"}));
        let t = timer(schedule(&step, &a));
        assert_eq!(
            t.fire_at,
            time::format(start - SignedDuration::from_hours(24))
        );
        assert_eq!(t.path, "2.1");
    }

    #[tokio::test]
    async fn a_time_already_past_sets_nothing_and_cancels_the_keys_timer() {
        let kit = Kit::new().await;
        let run = kit.run(json!({}));
        let a = at(&run);
        let start = a.now + SignedDuration::from_hours(10);
        let step = config(json!({"key": "reminder", "at": time::format(start), "offset": "-24h"}));
        match schedule(&step, &a) {
            Done::Skipped { reason, effects } => {
                let passed = time::format(start - SignedDuration::from_hours(24));
                assert_eq!(reason, format!("the time {passed} has passed"));
                assert!(
                    matches!(effects.as_slice(), [Effect::Cancel { key }] if key == "reminder")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_settings_fail_the_step() {
        let kit = Kit::new().await;
        let run = kit.run(json!({}));
        let cases = [
            (json!({"key": "", "after": "1h"}), "key: is empty"),
            (
                json!({"key": "k", "at": "next tuesday"}),
                "at: is not a time (RFC 3339, e.g. {{ data.start }})",
            ),
            (
                json!({"key": "k", "at": ""}),
                "at: is not a time (RFC 3339, e.g. {{ data.start }})",
            ),
        ];
        for (step, want) in cases {
            match schedule(&config(step), &at(&run)) {
                Done::Fail(e) => assert_eq!(e, want),
                other => panic!("{other:?}"),
            }
        }
        for (step, field) in [
            (json!({"key": "k", "after": "soon"}), "after: "),
            (
                json!({"key": "k", "at": "2030-01-01T00:00:00Z", "offset": "a day"}),
                "offset: ",
            ),
        ] {
            match schedule(&config(step), &at(&run)) {
                Done::Fail(e) => assert!(e.starts_with(field), "{e}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn cancel_removes_the_keys_timer() {
        match cancel(&config(json!({"key": "reminder:apt_1"}))) {
            Done::Ok {
                detail: None,
                effects,
            } => assert!(
                matches!(effects.as_slice(), [Effect::Cancel { key }] if key == "reminder:apt_1")
            ),
            other => panic!("{other:?}"),
        }
    }
}
