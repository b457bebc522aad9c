//! Event types, type globs, and the event envelope (docs/design.md §3.2).

use serde::{Deserialize, Serialize};

use crate::Object;
use crate::resource::ResourceType;

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Created, Action::Updated, Action::Deleted];

    pub fn name(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
        }
    }
}

/// A known event type: `appointment.created`, …
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType {
    pub resource: ResourceType,
    pub action: Action,
}

impl EventType {
    pub fn new(resource: ResourceType, action: Action) -> Self {
        EventType { resource, action }
    }

    /// `appointment.created`.
    pub fn name(self) -> String {
        format!("{}.{}", self.resource.name(), self.action.name())
    }

    /// All 30 record event types, grouped by resource.
    pub fn all() -> impl Iterator<Item = EventType> {
        ResourceType::ALL
            .into_iter()
            .flat_map(|r| Action::ALL.into_iter().map(move |a| EventType::new(r, a)))
    }

    /// Parses `appointment.created`.
    pub fn parse(s: &str) -> Option<EventType> {
        let (resource, action) = s.split_once('.')?;
        let resource = resource.parse().ok()?;
        let action = Action::ALL.into_iter().find(|a| a.name() == action)?;
        Some(EventType::new(resource, action))
    }

    /// One line for `GET /v1/event-types`.
    pub fn description(self) -> String {
        let what = match self.resource {
            ResourceType::Patient => "A patient record",
            ResourceType::Practitioner => "A practitioner record",
            ResourceType::Appointment => "An appointment",
            ResourceType::Encounter => "An encounter (visit)",
            ResourceType::Observation => "An observation (vital sign or lab value)",
            ResourceType::Prescription => "A prescription",
            ResourceType::Consent => "A consent",
            ResourceType::Intake => "An intake form",
            ResourceType::Note => "A clinical note",
            ResourceType::Lab => "A lab report",
        };
        let how = match self.action {
            Action::Created => "was created.",
            Action::Updated => {
                "was changed; `previous` holds the prior values of the changed fields."
            }
            Action::Deleted => "was deleted; `data` holds its last state.",
        };
        format!("{what} {how}")
    }
}

/// Event types about delivery itself (docs/design.md §3.3), entered in the
/// tenant's log like record events: type, and a one-line description.
pub const OPERATIONAL_TYPES: [(&str, &str); 3] = [
    (
        "endpoint.disabled",
        "A webhook endpoint was disabled: it answered 410 Gone, or all its deliveries failed for 72 hours; `data` is the endpoint and `data.disabledReason` says which.",
    ),
    (
        "delivery.failed",
        "A delivery gave up after 72 hours of retries; `data` is the delivery. It stays visible for retry and replay.",
    ),
    (
        "delivery.recovered",
        "An endpoint that had failed 5 times or more in a row (its circuit breaker open) succeeded again; `data` is the delivery that succeeded, with `failuresBefore`.",
    ),
];

/// An event type's bit of 64 (a hash: two types may share one). The OR of
/// the bits of a commit's events says, with false positives only, which
/// types it may hold.
pub fn type_bit(event_type: &str) -> u64 {
    // FNV-1a: the same bit in every process.
    let hash = event_type.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    1 << (hash % 64)
}

/// Every event type, the 30 record ones then the operational ones, each
/// with its one-line description: the list `GET /v1/event-types` serves.
pub fn all_types() -> impl Iterator<Item = (String, String)> {
    EventType::all().map(|t| (t.name(), t.description())).chain(
        OPERATIONAL_TYPES
            .iter()
            .map(|(t, d)| (t.to_string(), d.to_string())),
    )
}

/// Whether a type is one of [`OPERATIONAL_TYPES`].
pub fn is_operational(event_type: &str) -> bool {
    OPERATIONAL_TYPES.iter().any(|(t, _)| *t == event_type)
}

/// Most patterns one filter may hold.
pub const MAX_PATTERNS: usize = 50;

/// A list of event type patterns: exact names (`encounter.updated`), globs
/// ending in `*` (`appointment.*`, `*`). Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeFilter {
    patterns: Vec<String>,
}

impl TypeFilter {
    /// Parses a comma-separated list. A pattern that cannot match any type
    /// is an error naming the pattern's position.
    pub fn parse_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut patterns: Vec<String> = Vec::new();
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let chars_ok = item
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._*-".contains(&b));
            let valid = chars_ok
                && item.len() <= 100
                && match item.strip_suffix('*') {
                    Some(prefix) => !prefix.contains('*'),
                    None => !item.contains('*') && item.contains('.'),
                };
            if !valid {
                return Err(
                    "must be event types or globs such as appointment.* (a `*` only at the end)"
                        .into(),
                );
            }
            if !patterns.iter().any(|p| p == item) {
                patterns.push(item.to_string());
            }
            if patterns.len() > MAX_PATTERNS {
                return Err(format!("must hold at most {MAX_PATTERNS} types or globs"));
            }
        }
        Ok(TypeFilter { patterns })
    }

    /// The patterns as given (deduplicated).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether no pattern was given (everything matches).
    pub fn is_all(&self) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p == "*")
    }

    /// The [`type_bit`]s of every known type the filter matches, of the
    /// record type `resource` when given (every bit when that is everything):
    /// a reader whose bits miss a commit's bits has nothing to read in it.
    pub fn bits(&self, resource: Option<&str>) -> u64 {
        if self.is_all() && resource.is_none() {
            return u64::MAX;
        }
        let of_resource = |t: &str| {
            resource.is_none_or(|r| t.strip_prefix(r).is_some_and(|rest| rest.starts_with('.')))
        };
        let types = all_types()
            .map(|(t, _)| t)
            .filter(|t| self.matches(t) && of_resource(t))
            .fold(0, |bits, t| bits | type_bit(&t));
        // A topic is carried by its record type's events: a reader of a
        // topic wakes for the commits of that type.
        crate::topics::TOPICS
            .iter()
            .filter(|t| self.matches(t.name) && of_resource(t.name))
            .flat_map(|t| {
                t.actions
                    .iter()
                    .map(|a| EventType::new(t.resource, *a).name())
            })
            .fold(types, |bits, t| bits | type_bit(&t))
    }

    pub fn matches(&self, event_type: &str) -> bool {
        self.is_all()
            || self.patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => event_type.starts_with(prefix),
                None => p == event_type,
            })
    }

    /// Exact names and glob prefixes, for building a query.
    pub fn split(&self) -> (Vec<&str>, Vec<&str>) {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        for p in &self.patterns {
            match p.strip_suffix('*') {
                Some(prefix) => prefixes.push(prefix),
                None => exact.push(p.as_str()),
            }
        }
        (exact, prefixes)
    }
}

/// Which record an event is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourceRef {
    /// The record type, e.g. `appointment`.
    #[serde(rename = "type")]
    pub resource_type: String,
    pub id: String,
    pub version: i64,
}

/// The event envelope, as polled, streamed and delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `evt_…`; receivers deduplicate on it.
    pub id: String,
    /// `{resource}.created|updated|deleted`, e.g. `appointment.created`.
    #[serde(rename = "type")]
    #[schema(example = "appointment.created")]
    pub event_type: String,
    /// Per tenant, gap-free, in commit order.
    pub sequence: i64,
    /// While the tenant is a member clinic of an organisation (or is one):
    /// the event's number in the network's log, per organisation, gap-free,
    /// in commit order (README, "Clinic networks").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_sequence: Option<i64>,
    pub created_at: String,
    pub tenant_id: String,
    pub resource: ResourceRef,
    /// The record after the change; for `deleted`, its last state.
    #[schema(value_type = Object)]
    pub data: Object,
    /// On `updated` only: the prior value of each changed top-level field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub previous: Option<Object>,
    /// The patient whose data the record holds: the record's own id for a
    /// patient, its `patientId` otherwise; absent for practitioners and
    /// operational events. Kept by thin payloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    /// What the change means clinically (`appointment.cancelled`, …): see
    /// the README's "Clinical topics". Decided when the event was written;
    /// may be empty. Kept by thin payloads.
    #[serde(default)]
    pub topics: Vec<String>,
    /// On `updated` only: the names of the changed top-level fields. Kept by
    /// thin payloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_fields: Option<Vec<String>>,
}

/// An envelope without its record (`data`, `previous`): what a thin
/// payload carries, in the envelope's order.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThinEvent<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    sequence: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    network_sequence: Option<i64>,
    created_at: &'a str,
    tenant_id: &'a str,
    resource: &'a ResourceRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient_id: Option<&'a str>,
    topics: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    changed_fields: Option<&'a [String]>,
}

impl Event {
    /// The envelope without its record, for a thin payload.
    pub fn thin(&self) -> ThinEvent<'_> {
        ThinEvent {
            id: &self.id,
            event_type: &self.event_type,
            sequence: self.sequence,
            network_sequence: self.network_sequence,
            created_at: &self.created_at,
            tenant_id: &self.tenant_id,
            resource: &self.resource,
            patient_id: self.patient_id.as_deref(),
            topics: &self.topics,
            changed_fields: self.changed_fields.as_deref(),
        }
    }

    /// The event's number in the log it is read from: its
    /// `networkSequence` in an organisation's network log, its `sequence`
    /// in its tenant's.
    pub fn number_in(&self, network_log: bool) -> i64 {
        match self.network_sequence {
            Some(n) if network_log => n,
            _ => self.sequence,
        }
    }

    /// Whether `filter` matches the event: its type, or one of its topics.
    pub fn matches(&self, filter: &TypeFilter) -> bool {
        filter.matches(&self.event_type) || self.topics.iter().any(|t| filter.matches(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_types_parse_back() {
        let all: Vec<_> = EventType::all().collect();
        assert_eq!(all.len(), 30);
        for t in all {
            assert_eq!(EventType::parse(&t.name()), Some(t));
        }
    }

    #[test]
    fn a_topic_matches_its_events_and_wakes_for_its_record_type() {
        let f = TypeFilter::parse_list(["appointment.cancelled"]).unwrap();
        assert!(!f.matches("appointment.updated"));
        let bits = f.bits(None);
        assert_ne!(bits & type_bit("appointment.updated"), 0);
        assert_ne!(bits & type_bit("appointment.deleted"), 0);
        assert_eq!(f.bits(Some("patient")) & type_bit("appointment.updated"), 0);
        let mut event: Event = serde_json::from_value(serde_json::json!({
            "id": "evt_1", "type": "appointment.updated", "sequence": 1,
            "createdAt": "2026-11-29T17:00:00.000Z", "tenantId": "ten_1",
            "resource": {"type": "appointment", "id": "apt_1", "version": 2},
            "data": {}
        }))
        .unwrap();
        // An event stored before topics existed has none.
        assert!(event.topics.is_empty() && !event.matches(&f));
        event.topics = vec!["appointment.cancelled".into()];
        assert!(event.matches(&f));
        assert!(event.matches(&TypeFilter::parse_list(["appointment.*"]).unwrap()));
    }

    #[test]
    fn globs_match_by_prefix() {
        let f = TypeFilter::parse_list("appointment.*,encounter.updated".split(',')).unwrap();
        assert!(f.matches("appointment.deleted"));
        assert!(f.matches("encounter.updated"));
        assert!(!f.matches("encounter.created"));
        assert!(TypeFilter::parse_list(["a*b"]).is_err());
        assert!(TypeFilter::parse_list(["a\0.b"]).is_err());
        let many: Vec<String> = (0..51).map(|i| format!("t{i}.*")).collect();
        assert!(TypeFilter::parse_list(many.iter().map(String::as_str)).is_err());
        let dupes = vec!["a.*"; 500];
        assert!(TypeFilter::parse_list(dupes).is_ok());
        assert!(TypeFilter::default().matches("anything.at_all"));
    }
}
