//! Clinical topics: what a change of a record means clinically
//! (`appointment.cancelled`, `observation.critical`, …), decided when its
//! event is written, from the change already in hand, and stored with it.
//!
//! A rule that says "becomes" holds when the value after the change is the
//! one named and the value before was not; "created with" holds on the
//! create event. Topics are matched wherever event types are (endpoint
//! `eventTypes`, workflow `on:`, `?types=`), so a topic name never equals an
//! event type: no record type has an action named like a topic.

use serde_json::Value;

use crate::Object;
use crate::event::Action;
use crate::resource::ResourceType;

/// A topic: its name, the record type it is about, the actions of the
/// events that can carry it, and when it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic {
    pub name: &'static str,
    pub resource: ResourceType,
    /// The event types that can carry it are `{resource}.{action}` of these.
    pub actions: &'static [Action],
    /// When it applies, in one sentence.
    pub description: &'static str,
}

const UPDATED: &[Action] = &[Action::Updated];
const CREATED_OR_UPDATED: &[Action] = &[Action::Created, Action::Updated];
const UPDATED_OR_DELETED: &[Action] = &[Action::Updated, Action::Deleted];

/// Every topic.
pub const TOPICS: [Topic; 18] = [
    Topic {
        name: "appointment.booked",
        resource: ResourceType::Appointment,
        actions: CREATED_OR_UPDATED,
        description: "An appointment was created with status `booked`, or its status became `booked`.",
    },
    Topic {
        name: "appointment.rescheduled",
        resource: ResourceType::Appointment,
        actions: UPDATED,
        description: "The `start` of an appointment that is not cancelled changed.",
    },
    Topic {
        name: "appointment.cancelled",
        resource: ResourceType::Appointment,
        actions: UPDATED_OR_DELETED,
        description: "An appointment's status became `cancelled`, or a `proposed` or `booked` appointment was deleted.",
    },
    Topic {
        name: "appointment.arrived",
        resource: ResourceType::Appointment,
        actions: UPDATED,
        description: "An appointment's status became `arrived`.",
    },
    Topic {
        name: "appointment.noshow",
        resource: ResourceType::Appointment,
        actions: UPDATED,
        description: "An appointment's status became `noshow`.",
    },
    Topic {
        name: "appointment.fulfilled",
        resource: ResourceType::Appointment,
        actions: UPDATED,
        description: "An appointment's status became `fulfilled`.",
    },
    Topic {
        name: "encounter.started",
        resource: ResourceType::Encounter,
        actions: CREATED_OR_UPDATED,
        description: "An encounter was created `in-progress`, or its status became `in-progress`.",
    },
    Topic {
        name: "encounter.finished",
        resource: ResourceType::Encounter,
        actions: UPDATED,
        description: "An encounter's status became `finished`.",
    },
    Topic {
        name: "observation.abnormal",
        resource: ResourceType::Observation,
        actions: CREATED_OR_UPDATED,
        description: "An observation was created with flag `low`, `high` or `critical`, or its flag became one of them.",
    },
    Topic {
        name: "observation.critical",
        resource: ResourceType::Observation,
        actions: CREATED_OR_UPDATED,
        description: "An observation was created with flag `critical`, or its flag became `critical`.",
    },
    Topic {
        name: "lab.final",
        resource: ResourceType::Lab,
        actions: CREATED_OR_UPDATED,
        description: "A lab report was created `final`, or its status became `final`.",
    },
    Topic {
        name: "lab.amended",
        resource: ResourceType::Lab,
        actions: CREATED_OR_UPDATED,
        description: "A lab report was created `amended`, or its status became `amended`.",
    },
    Topic {
        name: "lab.abnormal",
        resource: ResourceType::Lab,
        actions: CREATED_OR_UPDATED,
        description: "A lab report was created with a result flagged `low`, `high` or `critical`, or a result became so flagged.",
    },
    Topic {
        name: "prescription.discontinued",
        resource: ResourceType::Prescription,
        actions: UPDATED,
        description: "A prescription's status became `stopped` or `cancelled`.",
    },
    Topic {
        name: "consent.signed",
        resource: ResourceType::Consent,
        actions: CREATED_OR_UPDATED,
        description: "A consent was created `active`, or its status became `active`.",
    },
    Topic {
        name: "consent.revoked",
        resource: ResourceType::Consent,
        actions: UPDATED,
        description: "A consent's status became `inactive` or `rejected`.",
    },
    Topic {
        name: "intake.completed",
        resource: ResourceType::Intake,
        actions: UPDATED,
        description: "An intake form's status became `completed`.",
    },
    Topic {
        name: "patient.deactivated",
        resource: ResourceType::Patient,
        actions: UPDATED,
        description: "A patient's `active` became false.",
    },
];

/// Whether `name` is a topic.
pub fn is_topic(name: &str) -> bool {
    topic(name).is_some()
}

/// The topic named `name`.
pub fn topic(name: &str) -> Option<&'static Topic> {
    TOPICS.iter().find(|t| t.name == name)
}

/// The topics events of `resource` with `action` can carry.
pub fn topics_of(resource: ResourceType, action: Action) -> impl Iterator<Item = &'static Topic> {
    TOPICS
        .iter()
        .filter(move |t| t.resource == resource && t.actions.contains(&action))
}

/// The flags that make an observation or a lab result abnormal.
const ABNORMAL: [&str; 3] = ["low", "high", "critical"];

/// A change of a record, read member by member without copying it: the
/// value of a member before and after.
struct Change<'a> {
    action: Action,
    /// The record after the change; its last state for a delete.
    data: &'a Object,
    /// On an update: the prior value of each changed member (`null`: it
    /// was absent).
    previous: Option<&'a Object>,
}

impl<'a> Change<'a> {
    /// The member after the change (nothing after a delete).
    fn after(&self, field: &str) -> Option<&'a Value> {
        match self.action {
            Action::Deleted => None,
            _ => self.data.get(field),
        }
    }

    /// The member before the change (nothing before a create).
    fn before(&self, field: &str) -> Option<&'a Value> {
        match self.action {
            Action::Created => None,
            Action::Deleted => self.data.get(field),
            Action::Updated => match self.previous.and_then(|p| p.get(field)) {
                Some(Value::Null) => None,
                Some(prior) => Some(prior),
                None => self.data.get(field),
            },
        }
    }

    fn after_str(&self, field: &str) -> Option<&'a str> {
        self.after(field)?.as_str()
    }

    fn before_str(&self, field: &str) -> Option<&'a str> {
        self.before(field)?.as_str()
    }

    /// Created with one of `values` in `field`.
    fn created_with(&self, field: &str, values: &[&str]) -> bool {
        self.action == Action::Created && self.after_str(field).is_some_and(|v| values.contains(&v))
    }

    /// Updated so that `field` holds one of `values` and did not before.
    fn becomes(&self, field: &str, values: &[&str]) -> bool {
        self.action == Action::Updated
            && self.after_str(field).is_some_and(|v| values.contains(&v))
            && !self.before_str(field).is_some_and(|v| values.contains(&v))
    }

    fn created_or_becomes(&self, field: &str, values: &[&str]) -> bool {
        self.created_with(field, values) || self.becomes(field, values)
    }
}

/// The codes of a lab report's results (its `results` member) that are
/// flagged abnormal.
fn abnormal_results(results: Option<&Value>) -> Vec<&Value> {
    results
        .and_then(Value::as_array)
        .map(|results| {
            results
                .iter()
                .filter(|r| {
                    r.get("flag")
                        .and_then(Value::as_str)
                        .is_some_and(|f| ABNORMAL.contains(&f))
                })
                .map(|r| r.get("code").unwrap_or(&Value::Null))
                .collect()
        })
        .unwrap_or_default()
}

/// The topics of a change of a record of type `rt`: `data` is the record
/// after the change (its last state for a delete), `previous` the prior
/// values of the changed members (on an update). Reads only the members the
/// rules name; copies nothing.
pub fn topics(
    rt: ResourceType,
    action: Action,
    data: &Object,
    previous: Option<&Object>,
) -> Vec<String> {
    let change = Change {
        action,
        data,
        previous,
    };
    let mut out: Vec<&str> = Vec::new();
    let mut add = |topic: &'static str, holds: bool| {
        if holds {
            out.push(topic);
        }
    };
    match rt {
        ResourceType::Appointment => {
            add(
                "appointment.booked",
                change.created_or_becomes("status", &["booked"]),
            );
            add(
                "appointment.rescheduled",
                action == Action::Updated
                    && change.after_str("status") != Some("cancelled")
                    && change.before("start") != change.after("start"),
            );
            add(
                "appointment.cancelled",
                change.becomes("status", &["cancelled"])
                    || (action == Action::Deleted
                        && matches!(change.before_str("status"), Some("proposed" | "booked"))),
            );
            add(
                "appointment.arrived",
                change.becomes("status", &["arrived"]),
            );
            add("appointment.noshow", change.becomes("status", &["noshow"]));
            add(
                "appointment.fulfilled",
                change.becomes("status", &["fulfilled"]),
            );
        }
        ResourceType::Encounter => {
            add(
                "encounter.started",
                change.created_or_becomes("status", &["in-progress"]),
            );
            add(
                "encounter.finished",
                change.becomes("status", &["finished"]),
            );
        }
        ResourceType::Observation => {
            add(
                "observation.abnormal",
                change.created_or_becomes("flag", &ABNORMAL),
            );
            add(
                "observation.critical",
                change.created_or_becomes("flag", &["critical"]),
            );
        }
        ResourceType::Lab => {
            add("lab.final", change.created_or_becomes("status", &["final"]));
            add(
                "lab.amended",
                change.created_or_becomes("status", &["amended"]),
            );
            let after = abnormal_results(change.after("results"));
            let before = abnormal_results(change.before("results"));
            add(
                "lab.abnormal",
                action != Action::Deleted && after.iter().any(|code| !before.contains(code)),
            );
        }
        ResourceType::Prescription => add(
            "prescription.discontinued",
            change.becomes("status", &["stopped", "cancelled"]),
        ),
        ResourceType::Consent => {
            add(
                "consent.signed",
                change.created_or_becomes("status", &["active"]),
            );
            add(
                "consent.revoked",
                change.becomes("status", &["inactive", "rejected"]),
            );
        }
        ResourceType::Intake => add("intake.completed", change.becomes("status", &["completed"])),
        ResourceType::Patient => add(
            "patient.deactivated",
            action == Action::Updated
                && change.after("active") == Some(&Value::Bool(false))
                && change.before("active") != Some(&Value::Bool(false)),
        ),
        ResourceType::Note | ResourceType::Practitioner => {}
    }
    out.into_iter().map(str::to_string).collect()
}

/// The patient whose data a record holds: the record itself for a patient,
/// its `patientId` otherwise (none for a practitioner).
pub fn patient_of(rt: ResourceType, data: &Object) -> Option<String> {
    match rt {
        ResourceType::Patient => data.get("id").and_then(Value::as_str).map(str::to_string),
        _ => data
            .get("patientId")
            .and_then(Value::as_str)
            .map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: serde_json::Value) -> Object {
        v.as_object().cloned().unwrap_or_default()
    }

    fn created(rt: ResourceType, data: serde_json::Value) -> Vec<String> {
        topics(rt, Action::Created, &obj(data), None)
    }

    /// An update from `before` to `after` (whole records), as the store
    /// makes it: the record after, and the prior values of what changed.
    fn updated(
        rt: ResourceType,
        before: serde_json::Value,
        after: serde_json::Value,
    ) -> Vec<String> {
        let (before, after) = (obj(before), obj(after));
        let previous = crate::patch::changed_fields(&before, &after, &[]);
        topics(rt, Action::Updated, &after, Some(&previous))
    }

    fn deleted(rt: ResourceType, data: serde_json::Value) -> Vec<String> {
        topics(rt, Action::Deleted, &obj(data), None)
    }

    use ResourceType as R;

    #[test]
    fn appointments() {
        assert_eq!(
            created(R::Appointment, json!({"status": "booked"})),
            ["appointment.booked"]
        );
        assert!(created(R::Appointment, json!({"status": "proposed"})).is_empty());
        assert_eq!(
            updated(
                R::Appointment,
                json!({"status": "proposed"}),
                json!({"status": "booked"})
            ),
            ["appointment.booked"]
        );
        assert_eq!(
            updated(
                R::Appointment,
                json!({"status": "booked", "start": "a"}),
                json!({"status": "cancelled", "start": "a"})
            ),
            ["appointment.cancelled"]
        );
        assert_eq!(
            updated(
                R::Appointment,
                json!({"status": "booked", "start": "a"}),
                json!({"status": "booked", "start": "b"})
            ),
            ["appointment.rescheduled"]
        );
        // Moving a cancelled appointment is no rescheduling.
        assert!(
            updated(
                R::Appointment,
                json!({"status": "cancelled", "start": "a"}),
                json!({"status": "cancelled", "start": "b"})
            )
            .is_empty()
        );
        for status in ["arrived", "noshow", "fulfilled"] {
            assert_eq!(
                updated(
                    R::Appointment,
                    json!({"status": "booked"}),
                    json!({"status": status})
                ),
                [format!("appointment.{status}")]
            );
        }
        assert_eq!(
            deleted(R::Appointment, json!({"status": "booked"})),
            ["appointment.cancelled"]
        );
        assert!(deleted(R::Appointment, json!({"status": "fulfilled"})).is_empty());
        // Nothing changes: nothing becomes.
        assert!(
            updated(
                R::Appointment,
                json!({"status": "booked", "reason": "a"}),
                json!({"status": "booked", "reason": "b"})
            )
            .is_empty()
        );
    }

    #[test]
    fn encounters_observations_and_labs() {
        assert_eq!(
            created(R::Encounter, json!({"status": "in-progress"})),
            ["encounter.started"]
        );
        assert_eq!(
            updated(
                R::Encounter,
                json!({"status": "planned"}),
                json!({"status": "in-progress"})
            ),
            ["encounter.started"]
        );
        assert_eq!(
            updated(
                R::Encounter,
                json!({"status": "in-progress"}),
                json!({"status": "finished"})
            ),
            ["encounter.finished"]
        );
        assert_eq!(
            created(R::Observation, json!({"flag": "critical"})),
            ["observation.abnormal", "observation.critical"]
        );
        assert_eq!(
            created(R::Observation, json!({"flag": "high"})),
            ["observation.abnormal"]
        );
        assert!(created(R::Observation, json!({"flag": "normal"})).is_empty());
        // Already abnormal: only the step to critical is news.
        assert_eq!(
            updated(
                R::Observation,
                json!({"flag": "high"}),
                json!({"flag": "critical"})
            ),
            ["observation.critical"]
        );
        assert_eq!(
            created(
                R::Lab,
                json!({"status": "final", "results": [{"code": "a", "flag": "low"}]})
            ),
            ["lab.final", "lab.abnormal"]
        );
        assert_eq!(
            updated(
                R::Lab,
                json!({"status": "final", "results": [{"code": "a", "flag": "normal"}]}),
                json!({"status": "amended", "results": [{"code": "a", "flag": "high"}]})
            ),
            ["lab.amended", "lab.abnormal"]
        );
        assert!(updated(
            R::Lab,
            json!({"status": "final", "results": [{"code": "a", "flag": "high"}]}),
            json!({"status": "final", "results": [{"code": "a", "flag": "high"}], "display": "x"})
        )
        .is_empty());
    }

    #[test]
    fn prescriptions_consents_intakes_and_patients() {
        for status in ["stopped", "cancelled"] {
            assert_eq!(
                updated(
                    R::Prescription,
                    json!({"status": "active"}),
                    json!({"status": status})
                ),
                ["prescription.discontinued"]
            );
        }
        assert_eq!(
            created(R::Consent, json!({"status": "active"})),
            ["consent.signed"]
        );
        for status in ["inactive", "rejected"] {
            assert_eq!(
                updated(
                    R::Consent,
                    json!({"status": "active"}),
                    json!({"status": status})
                ),
                ["consent.revoked"]
            );
        }
        assert_eq!(
            updated(
                R::Intake,
                json!({"status": "in-progress"}),
                json!({"status": "completed"})
            ),
            ["intake.completed"]
        );
        assert_eq!(
            updated(
                R::Patient,
                json!({"active": true}),
                json!({"active": false})
            ),
            ["patient.deactivated"]
        );
        // A member that was absent comes back as absent.
        assert_eq!(
            updated(R::Patient, json!({}), json!({"active": false})),
            ["patient.deactivated"]
        );
        assert!(created(R::Patient, json!({"active": false})).is_empty());
    }

    #[test]
    fn every_topic_is_named_after_its_record_type_and_is_no_event_type() {
        for t in TOPICS {
            assert!(
                t.name.starts_with(&format!("{}.", t.resource.name())),
                "{}",
                t.name
            );
            assert!(crate::EventType::parse(t.name).is_none(), "{}", t.name);
            assert!(is_topic(t.name));
        }
    }

    /// Every change between the values of each enum field (and of `active`
    /// and a lab result's flag), under every action: a topic appears only
    /// on the actions its table row names, which is what the catalogue's
    /// schemas promise.
    #[test]
    fn a_topic_is_carried_only_by_the_actions_it_names() {
        use crate::resource::FieldKind;
        for rt in ResourceType::ALL {
            let mut changes: Vec<(serde_json::Value, serde_json::Value)> = Vec::new();
            for field in rt.fields() {
                let values: Vec<serde_json::Value> = match field.kind {
                    FieldKind::Enum(options) => options.iter().map(|o| json!(o)).collect(),
                    FieldKind::Bool => vec![json!(true), json!(false)],
                    FieldKind::DateTime => {
                        vec![json!("2026-12-01T09:00:00Z"), json!("2026-12-02T09:00:00Z")]
                    }
                    FieldKind::List(_) => ["normal", "low", "high", "critical"]
                        .iter()
                        .map(|f| json!([{"code": "a", "flag": f}]))
                        .collect(),
                    _ => continue,
                };
                for a in &values {
                    changes.push((json!({}), json!({ field.name: a })));
                    for b in &values {
                        changes.push((json!({ field.name: a }), json!({ field.name: b })));
                    }
                }
            }
            for (before, after) in changes {
                let mut seen = Vec::new();
                seen.extend(
                    created(rt, after.clone())
                        .into_iter()
                        .map(|t| (t, Action::Created)),
                );
                seen.extend(
                    updated(rt, before.clone(), after.clone())
                        .into_iter()
                        .map(|t| (t, Action::Updated)),
                );
                seen.extend(
                    topics(rt, Action::Deleted, &obj(before.clone()), None)
                        .into_iter()
                        .map(|t| (t, Action::Deleted)),
                );
                for (name, action) in seen {
                    let t = topic(&name).unwrap();
                    assert_eq!(t.resource, rt, "{name}");
                    assert!(
                        t.actions.contains(&action),
                        "{name} on {action:?}: {before} -> {after}"
                    );
                    assert!(topics_of(rt, action).any(|o| o.name == name));
                }
            }
        }
    }

    #[test]
    fn the_patient_is_the_record_or_its_patient_id() {
        let p = obj(json!({"id": "pat_1"}));
        assert_eq!(patient_of(R::Patient, &p).as_deref(), Some("pat_1"));
        let a = obj(json!({"id": "apt_1", "patientId": "pat_2"}));
        assert_eq!(patient_of(R::Appointment, &a).as_deref(), Some("pat_2"));
        assert_eq!(
            patient_of(R::Practitioner, &obj(json!({"id": "prac_1"}))),
            None
        );
    }
}
