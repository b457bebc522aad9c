//! The ten clinical record types and the fields of each (docs/design.md §3.1).
//!
//! Every rule about a field lives in its [`FieldSpec`]: validation, defaults,
//! reference checks, list filters and the OpenAPI schema are all derived from
//! these tables, so they cannot disagree.

use std::fmt;
use std::str::FromStr;

/// A clinical record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Patient,
    Practitioner,
    Appointment,
    Encounter,
    Observation,
    Prescription,
    Consent,
    Intake,
    Note,
    Lab,
}

/// What values a field accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldKind {
    /// Any non-empty string of at most 10,000 characters.
    String,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An RFC 3339 date-time with an offset.
    DateTime,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// An E.164 phone number: `+` and 2 to 15 digits.
    Phone,
    /// An email address.
    Email,
    /// A JSON number.
    Number,
    /// A non-negative integer.
    Count,
    /// `true` or `false`.
    Bool,
    /// A JSON number or a string (an observation's value).
    NumberOrString,
    /// The id of a live record of the given type in the same tenant.
    Ref(ResourceType),
    /// A nested object with these fields.
    Object(&'static [FieldSpec]),
    /// A list of objects with these fields.
    List(&'static [FieldSpec]),
}

/// One field of a record type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldSpec {
    /// The JSON name (camelCase), as the API shows it.
    pub name: &'static str,
    /// What the field accepts.
    pub kind: FieldKind,
    /// Required on create (docs/design.md §3.1's last column).
    pub required: bool,
    /// One line for the OpenAPI description.
    pub doc: &'static str,
}

const fn f(name: &'static str, kind: FieldKind, doc: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required: false,
        doc,
    }
}

const fn req(name: &'static str, kind: FieldKind, doc: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required: true,
        doc,
    }
}

use FieldKind::*;
use ResourceType as R;

const CODING: &[FieldSpec] = &[
    f("system", String, "Code system, e.g. `CPT` or `ICD-10`."),
    req("code", String, "The code."),
    f("display", String, "Human-readable text."),
];

const ADDRESS: &[FieldSpec] = &[
    f("line", String, "Street address."),
    f("city", String, "City."),
    f("state", String, "State or region."),
    f("postalCode", String, "Postal code."),
    f("country", String, "Country."),
];

const RANGE: &[FieldSpec] = &[
    f("low", Number, "Lowest normal value."),
    f("high", Number, "Highest normal value."),
];

const FLAGS: &[&str] = &["normal", "low", "high", "critical"];

const PATIENT: &[FieldSpec] = &[
    req("firstName", String, "Given name."),
    req("lastName", String, "Family name."),
    f("birthDate", Date, "Date of birth, YYYY-MM-DD."),
    f(
        "sex",
        Enum(&["female", "male", "other", "unknown"]),
        "Administrative sex.",
    ),
    f("email", Email, "Email address."),
    f("phone", Phone, "Mobile phone, E.164."),
    f("address", Object(ADDRESS), "Postal address."),
    f("mrn", String, "Medical record number."),
    f("locationId", String, "The clinic location."),
    f(
        "active",
        Bool,
        "Whether the record is in use (default true).",
    ),
];

const PRACTITIONER: &[FieldSpec] = &[
    req("firstName", String, "Given name."),
    req("lastName", String, "Family name."),
    f("email", Email, "Email address."),
    f("phone", Phone, "Phone, E.164."),
    f("npi", String, "National Provider Identifier."),
    f("specialty", String, "Specialty."),
];

const APPOINTMENT: &[FieldSpec] = &[
    req("patientId", Ref(R::Patient), "The patient."),
    f("practitionerId", Ref(R::Practitioner), "The practitioner."),
    req("start", DateTime, "Start, RFC 3339."),
    f("end", DateTime, "End, RFC 3339."),
    f(
        "status",
        Enum(&[
            "proposed",
            "booked",
            "arrived",
            "fulfilled",
            "cancelled",
            "noshow",
        ]),
        "Status (default `booked`).",
    ),
    f("reason", String, "Reason for the visit."),
    f("locationId", String, "The clinic location."),
    f(
        "patientPhone",
        Phone,
        "Phone for reminders (defaults to the patient's `phone`).",
    ),
];

const ENCOUNTER: &[FieldSpec] = &[
    req("patientId", Ref(R::Patient), "The patient."),
    f("practitionerId", Ref(R::Practitioner), "The practitioner."),
    f("appointmentId", Ref(R::Appointment), "The appointment."),
    f(
        "status",
        Enum(&["planned", "in-progress", "finished", "cancelled"]),
        "Status (default `in-progress`).",
    ),
    f("date", DateTime, "When it began (default: now)."),
    f("end", DateTime, "When it ended."),
    f("type", String, "Kind of visit."),
    f("serviceCodes", List(CODING), "Services performed (CPT)."),
    f("diagnoses", List(CODING), "Diagnoses (ICD-10)."),
];

const OBSERVATION: &[FieldSpec] = &[
    req("patientId", Ref(R::Patient), "The patient."),
    f("encounterId", Ref(R::Encounter), "The encounter."),
    f("practitionerId", Ref(R::Practitioner), "The practitioner."),
    req("code", String, "What was observed (e.g. a LOINC code)."),
    f("display", String, "Human-readable name."),
    req("value", NumberOrString, "The value: a number or a string."),
    f("unit", String, "Unit of the value."),
    f("referenceRange", Object(RANGE), "Normal range."),
    f(
        "flag",
        Enum(FLAGS),
        "Interpretation; computed from `referenceRange` when absent.",
    ),
    f("effectiveAt", DateTime, "When it was observed."),
    f(
        "providerEmail",
        Email,
        "Whom to alert (defaults to the practitioner's `email`).",
    ),
];

const PRESCRIPTION: &[FieldSpec] = &[
    req("patientId", Ref(R::Patient), "The patient."),
    f("practitionerId", Ref(R::Practitioner), "The prescriber."),
    f("encounterId", Ref(R::Encounter), "The encounter."),
    req("medication", String, "The medication."),
    f("dosage", String, "Dosage instructions."),
    f("quantity", Number, "Quantity to dispense."),
    f("refills", Count, "Number of refills."),
    f(
        "status",
        Enum(&["active", "on-hold", "cancelled", "completed", "stopped"]),
        "Status (default `active`).",
    ),
    f(
        "pharmacy",
        Object(&[
            f("name", String, "Pharmacy name."),
            f("phone", Phone, "Pharmacy phone, E.164."),
            f("ncpdpId", String, "NCPDP id."),
        ]),
        "The pharmacy.",
    ),
    f(
        "patientPhone",
        Phone,
        "Phone for notices (defaults to the patient's `phone`).",
    ),
];

const CONSENT: &[FieldSpec] = &[
    req("patientId", Ref(R::Patient), "The patient."),
    f("scope", String, "What the consent covers."),
    f(
        "status",
        Enum(&["active", "rejected", "inactive"]),
        "Status (default `active`).",
    ),
    f("signedAt", DateTime, "When it was signed."),
    f("document", String, "The document or a link to it."),
];

const INTAKE: &[FieldSpec] = &[
    req("patientId", Ref(R::Patient), "The patient."),
    f("form", String, "Which form."),
    f(
        "status",
        Enum(&["requested", "in-progress", "completed"]),
        "Status (default `requested`).",
    ),
    f(
        "responses",
        List(&[
            req("question", String, "The question."),
            f("answer", String, "The answer."),
        ]),
        "Answers.",
    ),
];

const NOTE: &[FieldSpec] = &[
    req("patientId", Ref(R::Patient), "The patient."),
    f("encounterId", Ref(R::Encounter), "The encounter."),
    f("authorId", String, "Who wrote it."),
    f("kind", String, "Kind of note."),
    req("text", String, "The note."),
];

const LAB: &[FieldSpec] = &[
    req("patientId", Ref(R::Patient), "The patient."),
    f("encounterId", Ref(R::Encounter), "The encounter."),
    req("code", String, "The panel or test code."),
    f("display", String, "Human-readable name."),
    f(
        "status",
        Enum(&["registered", "preliminary", "final", "amended"]),
        "Status (default `final`).",
    ),
    f(
        "results",
        List(&[
            req("code", String, "Result code."),
            f("display", String, "Human-readable name."),
            f("value", NumberOrString, "The value."),
            f("unit", String, "Unit."),
            f("referenceRange", Object(RANGE), "Normal range."),
            f(
                "flag",
                Enum(FLAGS),
                "Interpretation; computed from `referenceRange` when absent.",
            ),
        ]),
        "Individual results.",
    ),
    f("issuedAt", DateTime, "When the results were issued."),
];

/// Fields the server sets on every record; read-only for clients.
pub const SERVER_FIELDS: &[&str] = &["id", "version", "createdAt", "updatedAt"];

/// Reference fields that the store indexes, for `include`, filters and the
/// delete check.
pub const REFERENCE_FIELDS: &[&str] = &[
    "patientId",
    "practitionerId",
    "encounterId",
    "appointmentId",
];

impl ResourceType {
    /// All ten, in the order of docs/design.md §3.1.
    pub const ALL: [ResourceType; 10] = [
        R::Patient,
        R::Practitioner,
        R::Appointment,
        R::Encounter,
        R::Observation,
        R::Prescription,
        R::Consent,
        R::Intake,
        R::Note,
        R::Lab,
    ];

    /// The name used in event types and `resource.type`: `patient`.
    pub fn name(self) -> &'static str {
        match self {
            R::Patient => "patient",
            R::Practitioner => "practitioner",
            R::Appointment => "appointment",
            R::Encounter => "encounter",
            R::Observation => "observation",
            R::Prescription => "prescription",
            R::Consent => "consent",
            R::Intake => "intake",
            R::Note => "note",
            R::Lab => "lab",
        }
    }

    /// The collection in the URL: `patients`; also the key under `included`.
    pub fn collection(self) -> &'static str {
        match self {
            R::Patient => "patients",
            R::Practitioner => "practitioners",
            R::Appointment => "appointments",
            R::Encounter => "encounters",
            R::Observation => "observations",
            R::Prescription => "prescriptions",
            R::Consent => "consents",
            R::Intake => "intakes",
            R::Note => "notes",
            R::Lab => "labs",
        }
    }

    /// The id prefix, without the underscore.
    pub fn id_prefix(self) -> &'static str {
        match self {
            R::Patient => "pat",
            R::Practitioner => "prac",
            R::Appointment => "appt",
            R::Encounter => "enc",
            R::Observation => "obs",
            R::Prescription => "rx",
            R::Consent => "cons",
            R::Intake => "intk",
            R::Note => "note",
            R::Lab => "lab",
        }
    }

    /// The FHIR resource name, accepted by `include` beside the collection name.
    pub fn fhir_name(self) -> &'static str {
        match self {
            R::Patient => "Patient",
            R::Practitioner => "Practitioner",
            R::Appointment => "Appointment",
            R::Encounter => "Encounter",
            R::Observation => "Observation",
            R::Prescription => "MedicationRequest",
            R::Consent => "Consent",
            R::Intake => "QuestionnaireResponse",
            R::Note => "DocumentReference",
            R::Lab => "DiagnosticReport",
        }
    }

    /// The schema name in OpenAPI: `Patient`.
    pub fn title(self) -> &'static str {
        match self {
            R::Patient => "Patient",
            R::Practitioner => "Practitioner",
            R::Appointment => "Appointment",
            R::Encounter => "Encounter",
            R::Observation => "Observation",
            R::Prescription => "Prescription",
            R::Consent => "Consent",
            R::Intake => "Intake",
            R::Note => "Note",
            R::Lab => "Lab",
        }
    }

    /// The fields a client may write, in the order responses show them.
    pub fn fields(self) -> &'static [FieldSpec] {
        match self {
            R::Patient => PATIENT,
            R::Practitioner => PRACTITIONER,
            R::Appointment => APPOINTMENT,
            R::Encounter => ENCOUNTER,
            R::Observation => OBSERVATION,
            R::Prescription => PRESCRIPTION,
            R::Consent => CONSENT,
            R::Intake => INTAKE,
            R::Note => NOTE,
            R::Lab => LAB,
        }
    }

    /// The field spec of a top-level field.
    pub fn field(self, name: &str) -> Option<&'static FieldSpec> {
        self.fields().iter().find(|f| f.name == name)
    }

    /// Whether this type has a `status` field (and so a `status` list filter).
    pub fn has_status(self) -> bool {
        self.field("status").is_some()
    }

    /// The types that `?include=` accepts on a record of this type, and which
    /// reference field of the included type points back at this one.
    pub fn includable(self) -> &'static [ResourceType] {
        match self {
            R::Encounter => &[R::Observation, R::Prescription, R::Note, R::Lab],
            R::Patient => &[
                R::Observation,
                R::Prescription,
                R::Note,
                R::Lab,
                R::Appointment,
                R::Encounter,
                R::Consent,
                R::Intake,
            ],
            _ => &[],
        }
    }

    /// The reference field that points at a record of this type (`patientId`).
    pub fn reference_field(self) -> Option<&'static str> {
        match self {
            R::Patient => Some("patientId"),
            R::Practitioner => Some("practitionerId"),
            R::Encounter => Some("encounterId"),
            R::Appointment => Some("appointmentId"),
            _ => None,
        }
    }

    /// Parses an `include` name: a collection (`observations`) or a FHIR name
    /// (`Observation`).
    pub fn from_include_name(name: &str) -> Option<ResourceType> {
        Self::ALL
            .into_iter()
            .find(|r| r.collection() == name || r.fhir_name() == name)
    }

    /// Parses a collection name from a URL.
    pub fn from_collection(name: &str) -> Option<ResourceType> {
        Self::ALL.into_iter().find(|r| r.collection() == name)
    }

    /// The type whose ids carry this prefix (`pat_…` → Patient); `None` also
    /// for an id that is not [well formed](crate::id::is_well_formed).
    pub fn from_id(id: &str) -> Option<ResourceType> {
        if !crate::id::is_well_formed(id) {
            return None;
        }
        let (prefix, _) = id.split_once('_')?;
        Self::ALL.into_iter().find(|r| r.id_prefix() == prefix)
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ResourceType {
    type Err = UnknownResourceType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or(UnknownResourceType)
    }
}

/// The string named no record type.
#[derive(Debug, thiserror::Error)]
#[error("unknown resource type")]
pub struct UnknownResourceType;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in ResourceType::ALL {
            assert_eq!(r.name().parse::<ResourceType>().unwrap(), r);
            assert_eq!(ResourceType::from_collection(r.collection()), Some(r));
            assert_eq!(ResourceType::from_include_name(r.fhir_name()), Some(r));
            assert!(r.fields().iter().any(|f| f.required));
        }
    }

    #[test]
    fn every_reference_field_is_indexed() {
        for r in ResourceType::ALL {
            for field in r.fields() {
                if let FieldKind::Ref(_) = field.kind {
                    assert!(REFERENCE_FIELDS.contains(&field.name), "{}", field.name);
                }
            }
        }
    }
}
