//! Typed events: a delivery's body parsed into a [`WebhookEvent`], whose
//! [`EventKind`] names what happened and carries the record as a struct.
//!
//! ```
//! use eventflow_webhook::typed::{EventKind, parse};
//!
//! let body = br#"{"id":"evt_1","type":"appointment.created","sequence":7,
//!   "createdAt":"2026-11-29T17:00:00.000Z","tenantId":"ten_1",
//!   "resource":{"type":"appointment","id":"apt_1","version":1},
//!   "patientId":"pat_1","topics":["appointment.booked"],
//!   "data":{"id":"apt_1","version":1,"patientId":"pat_1","start":"2026-12-01T09:00:00Z",
//!           "end":"2026-12-01T09:30:00Z","status":"booked","patientPhone":"+15551234567"}}"#;
//! let event = parse(body).unwrap();
//! assert_eq!(event.patient_id.as_deref(), Some("pat_1"));
//! assert!(event.has_topic("appointment.booked"));
//! match &event.kind {
//!     EventKind::AppointmentCreated(Some(appt)) => {
//!         assert_eq!(appt.patient_phone.as_deref(), Some("+15551234567"));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```
//!
//! Besides the record, the envelope names the event's patient
//! ([`WebhookEvent::patient_id`]), what the change means clinically
//! ([`WebhookEvent::topics`], e.g. `appointment.cancelled`, `lab.final`) and,
//! on `updated`, which top-level fields changed
//! ([`WebhookEvent::changed_fields`]); events from a server that did not send
//! these parse with `None` and no topics.
//!
//! Record fields are `Option`s and unknown fields land in `other`, so a
//! newer server's records still parse. A `thin` payload has no `data` and no
//! `previous`: the variant then holds `None`; it keeps `patientId`, `topics`
//! and `changedFields`. An event type this version does not know is
//! [`EventKind::Other`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A patient record, as events carry it. Fields this version does not know are in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Patient {
    pub id: String,
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Anything else the record holds.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A practitioner record, as events carry it. Fields this version does not know are in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Practitioner {
    pub id: String,
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub npi: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specialty: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Anything else the record holds.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A appointment record, as events carry it. Fields this version does not know are in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Appointment {
    pub id: String,
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub practitioner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Anything else the record holds.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A encounter record, as events carry it. Fields this version does not know are in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encounter {
    pub id: String,
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub practitioner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_codes: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnoses: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Anything else the record holds.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A observation record, as events carry it. Fields this version does not know are in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    pub id: String,
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub practitioner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_range: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Anything else the record holds.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A prescription record, as events carry it. Fields this version does not know are in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prescription {
    pub id: String,
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub practitioner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medication: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dosage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refills: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pharmacy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Anything else the record holds.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A consent record, as events carry it. Fields this version does not know are in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Consent {
    pub id: String,
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Anything else the record holds.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A intake record, as events carry it. Fields this version does not know are in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intake {
    pub id: String,
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Anything else the record holds.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A note record, as events carry it. Fields this version does not know are in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    pub id: String,
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Anything else the record holds.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A lab record, as events carry it. Fields this version does not know are in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lab {
    pub id: String,
    #[serde(default)]
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Anything else the record holds.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Which record an event is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRef {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub id: String,
    pub version: i64,
}

/// The record of a record event, typed.
fn record<T: serde::de::DeserializeOwned>(
    event_type: &str,
    data: Option<Value>,
) -> Result<Option<Box<T>>, ParseError> {
    data.map(|d| {
        serde_json::from_value(d)
            .map(Box::new)
            .map_err(|e| ParseError::Data(event_type.to_string(), describe(&e)))
    })
    .transpose()
}

macro_rules! kinds {
    ($($name:literal => $variant:ident($record:ty)),* $(,)?) => {
        /// What happened, with the record after the change (for `deleted`:
        /// its last state); `None` when the payload is thin.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum EventKind {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant(Option<Box<$record>>),
            )*
            /// `endpoint.disabled`: the endpoint, with `disabledReason`.
            EndpointDisabled(Option<Value>),
            /// `delivery.failed`: the delivery that gave up after 72 hours.
            DeliveryFailed(Option<Value>),
            /// `delivery.recovered`: the delivery that succeeded again.
            DeliveryRecovered(Option<Value>),
            /// A type this version of the crate does not know, and its data.
            Other(String, Option<Value>),
        }

        impl EventKind {
            fn from_parts(event_type: &str, data: Option<Value>) -> Result<EventKind, ParseError> {
                Ok(match event_type {
                    $($name => EventKind::$variant(record(event_type, data)?),)*
                    "endpoint.disabled" => EventKind::EndpointDisabled(data),
                    "delivery.failed" => EventKind::DeliveryFailed(data),
                    "delivery.recovered" => EventKind::DeliveryRecovered(data),
                    other => EventKind::Other(other.to_string(), data),
                })
            }
        }
    };
}

kinds! {
    "patient.created" => PatientCreated(Patient),
    "patient.updated" => PatientUpdated(Patient),
    "patient.deleted" => PatientDeleted(Patient),
    "practitioner.created" => PractitionerCreated(Practitioner),
    "practitioner.updated" => PractitionerUpdated(Practitioner),
    "practitioner.deleted" => PractitionerDeleted(Practitioner),
    "appointment.created" => AppointmentCreated(Appointment),
    "appointment.updated" => AppointmentUpdated(Appointment),
    "appointment.deleted" => AppointmentDeleted(Appointment),
    "encounter.created" => EncounterCreated(Encounter),
    "encounter.updated" => EncounterUpdated(Encounter),
    "encounter.deleted" => EncounterDeleted(Encounter),
    "observation.created" => ObservationCreated(Observation),
    "observation.updated" => ObservationUpdated(Observation),
    "observation.deleted" => ObservationDeleted(Observation),
    "prescription.created" => PrescriptionCreated(Prescription),
    "prescription.updated" => PrescriptionUpdated(Prescription),
    "prescription.deleted" => PrescriptionDeleted(Prescription),
    "consent.created" => ConsentCreated(Consent),
    "consent.updated" => ConsentUpdated(Consent),
    "consent.deleted" => ConsentDeleted(Consent),
    "intake.created" => IntakeCreated(Intake),
    "intake.updated" => IntakeUpdated(Intake),
    "intake.deleted" => IntakeDeleted(Intake),
    "note.created" => NoteCreated(Note),
    "note.updated" => NoteUpdated(Note),
    "note.deleted" => NoteDeleted(Note),
    "lab.created" => LabCreated(Lab),
    "lab.updated" => LabUpdated(Lab),
    "lab.deleted" => LabDeleted(Lab),
}

/// An event as a receiver gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// `evt_…`: the same on every retry; deduplicate on it.
    pub id: String,
    /// `appointment.created`, …
    pub event_type: String,
    pub sequence: i64,
    pub created_at: String,
    pub tenant_id: String,
    pub resource: ResourceRef,
    /// The record's patient: the record's own id on `patient.*` events, its
    /// `patientId` otherwise. `None` for practitioners, for operational
    /// events (`endpoint.*`, `delivery.*`), for a record without a patient,
    /// and on events written by a server that did not send it.
    pub patient_id: Option<String>,
    /// What the change means clinically (`appointment.cancelled`,
    /// `lab.final`, `observation.critical`, …); often empty. Empty, too, on
    /// events written by a server that did not send topics. The delivery's
    /// `x-eventflow-topics` header carries the same list comma-separated, but
    /// only the body is signed: decide on this field. See
    /// [`has_topic`](Self::has_topic).
    pub topics: Vec<String>,
    /// On `updated`: the names of the changed top-level fields. Kept by thin
    /// payloads, which drop `previous`. `None` on other events and on events
    /// written by a server that did not send it.
    pub changed_fields: Option<Vec<String>>,
    /// On `updated`: the prior value of each changed top-level field; `None`
    /// when the payload is thin.
    pub previous: Option<Map<String, Value>>,
    pub kind: EventKind,
}

impl WebhookEvent {
    /// Whether the event carries this topic, e.g. `appointment.cancelled`.
    pub fn has_topic(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
    }

    /// Whether an `updated` event changed this top-level field: by
    /// [`changed_fields`](Self::changed_fields), so a thin payload answers
    /// too, or by the keys of `previous` from a server that does not send
    /// `changedFields`.
    pub fn changed(&self, field: &str) -> bool {
        match &self.changed_fields {
            Some(fields) => fields.iter().any(|f| f == field),
            None => self
                .previous
                .as_ref()
                .is_some_and(|p| p.contains_key(field)),
        }
    }
}

/// Why a body is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not an event envelope: {0}")]
    Envelope(String),
    #[error("the data of a {0} event does not fit its record type: {1}")]
    Data(String, String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    sequence: i64,
    created_at: String,
    tenant_id: String,
    resource: ResourceRef,
    #[serde(default)]
    patient_id: Option<String>,
    /// Absent from older servers' events; `null` is taken as empty too.
    #[serde(default)]
    topics: Option<Vec<String>>,
    #[serde(default)]
    changed_fields: Option<Vec<String>>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    previous: Option<Map<String, Value>>,
}

/// A serde error without the value it met (it may be patient data, and the
/// message can end up in logs or a response).
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "could not be read",
        Category::Syntax => "is not valid JSON",
        Category::Data => "has a missing field or a value of the wrong type",
        Category::Eof => "ends too early",
    };
    if e.line() > 0 {
        format!("{what} (line {}, column {})", e.line(), e.column())
    } else {
        what.to_string()
    }
}

/// Parses a delivery's body (verify it first: [`crate::Verifier`]).
pub fn parse(body: &[u8]) -> Result<WebhookEvent, ParseError> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| ParseError::Envelope(describe(&e)))?;
    let kind = EventKind::from_parts(&raw.event_type, raw.data)?;
    Ok(WebhookEvent {
        id: raw.id,
        event_type: raw.event_type,
        sequence: raw.sequence,
        created_at: raw.created_at,
        tenant_id: raw.tenant_id,
        resource: raw.resource,
        patient_id: raw.patient_id,
        topics: raw.topics.unwrap_or_default(),
        changed_fields: raw.changed_fields,
        previous: raw.previous,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_unknown_and_bad_bodies() {
        let thin = br#"{"id":"evt_1","type":"encounter.updated","sequence":2,"createdAt":"t","tenantId":"ten_1","resource":{"type":"encounter","id":"enc_1","version":3}}"#;
        let e = parse(thin).unwrap();
        assert_eq!(e.kind, EventKind::EncounterUpdated(None));
        let future = br#"{"id":"evt_1","type":"invoice.created","sequence":2,"createdAt":"t","tenantId":"ten_1","resource":{"type":"invoice","id":"inv_1","version":1},"data":{"x":1}}"#;
        assert!(
            matches!(parse(future).unwrap().kind, EventKind::Other(t, Some(_)) if t == "invoice.created")
        );
        assert!(matches!(parse(b"nope"), Err(ParseError::Envelope(_))));
        let wrong = br#"{"id":"evt_1","type":"patient.created","sequence":2,"createdAt":"t","tenantId":"ten_1","resource":{"type":"patient","id":"pat_1","version":1},"data":{"id":"pat_1","firstName":["Secret Name"]}}"#;
        let e = parse(wrong).unwrap_err();
        assert!(matches!(e, ParseError::Data(..)));
        assert!(
            !e.to_string().contains("Secret"),
            "no values in errors: {e}"
        );
    }

    #[test]
    fn patient_topics_and_changed_fields_are_read() {
        let body = br#"{"id":"evt_1","type":"appointment.updated","sequence":4,"createdAt":"t","tenantId":"ten_1","resource":{"type":"appointment","id":"apt_1","version":2},"patientId":"pat_1","topics":["appointment.cancelled"],"changedFields":["status","reason"],"data":{"id":"apt_1","version":2,"patientId":"pat_1","status":"cancelled","reason":"sick"},"previous":{"status":"booked","reason":null}}"#;
        let e = parse(body).unwrap();
        assert_eq!(e.patient_id.as_deref(), Some("pat_1"));
        assert_eq!(e.topics, ["appointment.cancelled"]);
        assert_eq!(
            e.changed_fields.as_deref(),
            Some(&["status".to_string(), "reason".to_string()][..])
        );
        assert!(matches!(e.kind, EventKind::AppointmentUpdated(Some(_))));
    }

    #[test]
    fn an_older_servers_event_has_no_topics() {
        let body = br#"{"id":"evt_1","type":"appointment.updated","sequence":4,"createdAt":"t","tenantId":"ten_1","resource":{"type":"appointment","id":"apt_1","version":2},"data":{"id":"apt_1","version":2,"status":"cancelled"},"previous":{"status":"booked"}}"#;
        let e = parse(body).unwrap();
        assert_eq!(e.patient_id, None);
        assert!(e.topics.is_empty());
        assert_eq!(e.changed_fields, None);
        assert!(!e.has_topic("appointment.cancelled"));
        assert!(e.changed("status"));
        // `null` is read as no topics, too.
        let null = br#"{"id":"evt_1","type":"delivery.failed","sequence":5,"createdAt":"t","tenantId":"ten_1","resource":{"type":"delivery","id":"dlv_1","version":1},"topics":null}"#;
        let e = parse(null).unwrap();
        assert!(e.topics.is_empty());
        assert_eq!(e.kind, EventKind::DeliveryFailed(None));
        // A topic of the wrong type is an envelope error, not a panic.
        let wrong = br#"{"id":"evt_1","type":"lab.updated","sequence":5,"createdAt":"t","tenantId":"ten_1","resource":{"type":"lab","id":"lab_1","version":2},"topics":[1]}"#;
        assert!(matches!(parse(wrong), Err(ParseError::Envelope(_))));
    }

    #[test]
    fn a_thin_event_keeps_patient_topics_and_changed_fields() {
        let body = br#"{"id":"evt_1","type":"lab.updated","sequence":9,"createdAt":"t","tenantId":"ten_1","resource":{"type":"lab","id":"lab_1","version":3},"patientId":"pat_7","topics":["lab.amended","lab.abnormal"],"changedFields":["status","results"]}"#;
        let e = parse(body).unwrap();
        assert_eq!(e.kind, EventKind::LabUpdated(None));
        assert_eq!(e.previous, None);
        assert_eq!(e.patient_id.as_deref(), Some("pat_7"));
        assert!(e.has_topic("lab.amended"));
        assert!(e.has_topic("lab.abnormal"));
        assert!(!e.has_topic("lab.final"));
        assert!(!e.has_topic("lab"));
        assert!(!e.has_topic(""));
        assert_eq!(e.changed_fields.as_ref().map(Vec::len), Some(2));
        assert!(e.changed("status"));
        assert!(e.changed("results"));
        assert!(!e.changed("code"));
    }

    #[test]
    fn unknown_fields_are_kept() {
        let body = br#"{"id":"evt_1","type":"patient.updated","sequence":2,"createdAt":"t","tenantId":"ten_1","resource":{"type":"patient","id":"pat_1","version":2},"data":{"id":"pat_1","version":2,"firstName":"Ada","shoeSize":38},"previous":{"firstName":"Ad"}}"#;
        let e = parse(body).unwrap();
        assert!(e.changed("firstName"));
        let EventKind::PatientUpdated(Some(p)) = e.kind else {
            panic!()
        };
        assert_eq!(p.first_name.as_deref(), Some("Ada"));
        assert_eq!(p.other["shoeSize"], 38);
    }
}
