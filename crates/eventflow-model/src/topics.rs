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

/// Every topic: its name, the record type it is about, and when it applies.
pub const TOPICS: [(&str, ResourceType, &str); 18] = [
    (
        "appointment.booked",
        ResourceType::Appointment,
        "An appointment was created with status `booked`, or its status became `booked`.",
    ),
    (
        "appointment.rescheduled",
        ResourceType::Appointment,
        "The `start` of an appointment that is not cancelled changed.",
    ),
    (
        "appointment.cancelled",
        ResourceType::Appointment,
        "An appointment's status became `cancelled`, or a `proposed` or `booked` appointment was deleted.",
    ),
    (
        "appointment.arrived",
        ResourceType::Appointment,
        "An appointment's status became `arrived`.",
    ),
    (
        "appointment.noshow",
        ResourceType::Appointment,
        "An appointment's status became `noshow`.",
    ),
    (
        "appointment.fulfilled",
        ResourceType::Appointment,
        "An appointment's status became `fulfilled`.",
    ),
    (
        "encounter.started",
        ResourceType::Encounter,
        "An encounter was created `in-progress`, or its status became `in-progress`.",
    ),
    (
        "encounter.finished",
        ResourceType::Encounter,
        "An encounter's status became `finished`.",
    ),
    (
        "observation.abnormal",
        ResourceType::Observation,
        "An observation was created with flag `low`, `high` or `critical`, or its flag became one of them.",
    ),
    (
        "observation.critical",
        ResourceType::Observation,
        "An observation was created with flag `critical`, or its flag became `critical`.",
    ),
    (
        "lab.final",
        ResourceType::Lab,
        "A lab report was created `final`, or its status became `final`.",
    ),
    (
        "lab.amended",
        ResourceType::Lab,
        "A lab report was created `amended`, or its status became `amended`.",
    ),
    (
        "lab.abnormal",
        ResourceType::Lab,
        "A lab report was created with a result flagged `low`, `high` or `critical`, or a result became so flagged.",
    ),
    (
        "prescription.discontinued",
        ResourceType::Prescription,
        "A prescription's status became `stopped` or `cancelled`.",
    ),
    (
        "consent.signed",
        ResourceType::Consent,
        "A consent was created `active`, or its status became `active`.",
    ),
    (
        "consent.revoked",
        ResourceType::Consent,
        "A consent's status became `inactive` or `rejected`.",
    ),
    (
        "intake.completed",
        ResourceType::Intake,
        "An intake form's status became `completed`.",
    ),
    (
        "patient.deactivated",
        ResourceType::Patient,
        "A patient's `active` became false.",
    ),
];

/// Whether `name` is a topic.
pub fn is_topic(name: &str) -> bool {
    TOPICS.iter().any(|(t, _, _)| *t == name)
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
        for (topic, rt, _) in TOPICS {
            assert!(topic.starts_with(&format!("{}.", rt.name())), "{topic}");
            assert!(crate::EventType::parse(topic).is_none(), "{topic}");
            assert!(is_topic(topic));
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
