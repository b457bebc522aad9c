//! `SubscriptionTopic`s: one per record event type (`appointment.created`)
//! and one per clinical topic (`appointment.cancelled`), each at the
//! canonical URL `{public_url}/fhir/SubscriptionTopic/{name}`.

use eventflow_model::ResourceType;
use eventflow_model::event::Action;
use eventflow_model::topics::TOPICS;
use serde_json::{Value, json};

/// A topic the server defines: its name (also its FHIR id), the record
/// type it is about, the interactions that trigger it, and what it means.
#[derive(Debug, Clone)]
pub struct TopicDef {
    pub name: String,
    pub resource: ResourceType,
    pub actions: Vec<Action>,
    pub description: String,
}

fn interaction(a: Action) -> &'static str {
    match a {
        Action::Created => "create",
        Action::Updated => "update",
        Action::Deleted => "delete",
    }
}

/// Every topic: the event types of the ten record types, then the
/// clinical topics. Made once, from the model's tables.
pub fn all() -> &'static [TopicDef] {
    static ALL: std::sync::LazyLock<Vec<TopicDef>> = std::sync::LazyLock::new(|| {
        let mut out = Vec::new();
        for rt in ResourceType::ALL {
            for a in Action::ALL {
                out.push(TopicDef {
                    name: format!("{}.{}", rt.name(), a.name()),
                    resource: rt,
                    actions: vec![a],
                    description: format!(
                        "A {} was {} (the event type `{}.{}`).",
                        rt.fhir_name(),
                        a.name(),
                        rt.name(),
                        a.name()
                    ),
                });
            }
        }
        for t in TOPICS.iter() {
            out.push(TopicDef {
                name: t.name.to_string(),
                resource: t.resource,
                actions: t.actions.to_vec(),
                description: t.description.to_string(),
            });
        }
        out
    });
    &ALL
}

/// The topic named `name` (an event type of a record or a clinical topic).
pub fn find(name: &str) -> Option<&'static TopicDef> {
    all().iter().find(|d| d.name == name)
}

/// The canonical URL of a topic.
pub fn url(public_url: &str, name: &str) -> String {
    format!(
        "{}/fhir/SubscriptionTopic/{name}",
        public_url.trim_end_matches('/')
    )
}

/// The filters a subscription to a topic about `rt` may give.
pub fn filters(rt: ResourceType) -> Vec<(&'static str, &'static str)> {
    let mut f = Vec::new();
    if rt == ResourceType::Patient {
        f.push(("_id", "The patient: Patient/pat-…"));
    } else if rt.field("patientId").is_some() {
        f.push(("patient", "The patient: Patient/pat-…"));
    }
    if super::searchable_status(rt) {
        f.push(("status", "The status after the change."));
    }
    f
}

/// The topic as a FHIR R4B `SubscriptionTopic`.
pub fn resource(public_url: &str, date: &str, t: &TopicDef) -> Value {
    let ty = t.resource.fhir_name();
    let definition = format!("http://hl7.org/fhir/StructureDefinition/{ty}");
    let can_filter: Vec<Value> = filters(t.resource)
        .into_iter()
        .map(|(param, doc)| json!({ "description": doc, "resource": ty, "filterParameter": param }))
        .collect();
    let mut r = json!({
        "resourceType": "SubscriptionTopic",
        "id": t.name,
        "url": url(public_url, &t.name),
        "title": t.name,
        "status": "active",
        "date": date,
        "description": t.description,
        "resourceTrigger": [{
            "description": t.description,
            "resource": definition,
            "supportedInteraction": t.actions.iter().map(|a| interaction(*a)).collect::<Vec<_>>(),
        }],
        "notificationShape": [{ "resource": ty }],
    });
    if !can_filter.is_empty() {
        r["canFilterBy"] = json!(can_filter);
    }
    r
}
