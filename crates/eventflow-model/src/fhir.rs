//! The ten record types as FHIR R4B resources (the server's `/fhir` and
//! the FHIR subscriptions' notifications; docs/fhir.md has the table,
//! field by field). Only the fields Event Flow keeps are mapped;
//! a field FHIR has no element for goes in an extension whose URL is
//! `{public_url}/fhir/StructureDefinition/eventflow-{field}`.

use crate::{Object, ResourceType};
use base64::Engine;
use serde_json::{Value, json};

/// The FHIR id of an Event Flow id: its `_` written as `-` (FHIR ids allow
/// only letters, digits, `-` and `.`).
pub fn fhir_id(id: &str) -> String {
    id.replacen('_', "-", 1)
}

/// The Event Flow id a FHIR id (or an Event Flow id) names: `pat-01…` and
/// `pat_01…` both give `pat_01…`. `None` when it is not the id of a
/// record of type `rt`.
pub fn record_id(rt: ResourceType, given: &str) -> Option<String> {
    let id = match given.split_once('-') {
        Some((prefix, rest)) if !given.contains('_') => format!("{prefix}_{rest}"),
        _ => given.to_string(),
    };
    (ResourceType::from_id(&id) == Some(rt)).then_some(id)
}

/// A FHIR reference to the record with this Event Flow id
/// (`Patient/pat-01…`); `None` for an id of no record type.
pub fn reference(id: &str) -> Option<Value> {
    let rt = ResourceType::from_id(id)?;
    Some(json!({ "reference": format!("{}/{}", rt.fhir_name(), fhir_id(id)) }))
}

/// What a record is mapped with: where extension URLs live.
pub struct Mapper {
    extension_base: String,
}

const CPT: &str = "http://www.ama-assn.org/go/cpt";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10-cm";
const ICD9: &str = "http://hl7.org/fhir/sid/icd-9-cm";
const NCPDP: &str = "http://terminology.hl7.org/NamingSystem/NCPDPProviderIdentificationNumber";
const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
const CONSENT_SCOPE: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";

fn s<'a>(o: &'a Object, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str)
}

/// Sets `key` to `value` unless it is `None`.
fn put(out: &mut Object, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        out.insert(key.to_string(), v);
    }
}

/// A coding system as a URI: `CPT`, `ICD-10` (ICD-10-CM), `ICD-9`
/// (ICD-9-CM), `LOINC` and `SNOMED` by name; one already an `http(s)` URL
/// or a URN kept; any other left out (a FHIR system is a URI, and a
/// guess would be wrong).
fn system(given: Option<&str>) -> Option<&str> {
    let g = given?;
    if ["http://", "https://", "urn:"]
        .iter()
        .any(|p| g.starts_with(p))
    {
        return Some(g);
    }
    match g.to_ascii_lowercase().as_str() {
        "cpt" => Some(CPT),
        "icd-10" | "icd10" | "icd-10-cm" | "icd10cm" => Some(ICD10),
        "icd-9" | "icd9" | "icd-9-cm" | "icd9cm" => Some(ICD9),
        "loinc" => Some(LOINC),
        "snomed" | "snomed-ct" | "snomed ct" | "sct" => Some(SNOMED),
        _ => None,
    }
}

/// A date-time as FHIR writes it (`T` and `Z` upper case, UTC): the
/// record's own value when it is not an RFC 3339 date-time.
fn date_time(t: &str) -> Value {
    match crate::time::parse(t) {
        Some(ts) => json!(crate::time::format(ts)),
        None => json!(t),
    }
}

/// A `CodeableConcept` of one coding (`{system?, code, display?}`).
fn codeable(coding: &Value) -> Option<Value> {
    let code = coding.get("code").and_then(Value::as_str)?;
    let mut c = Object::new();
    if let Some(sys) = system(coding.get("system").and_then(Value::as_str)) {
        c.insert("system".into(), json!(sys));
    }
    c.insert("code".into(), json!(code));
    let display = coding.get("display").and_then(Value::as_str);
    if let Some(d) = display {
        c.insert("display".into(), json!(d));
    }
    let mut concept = json!({ "coding": [c] });
    if let Some(d) = display {
        concept["text"] = json!(d);
    }
    Some(concept)
}

/// A `CodeableConcept` of a code (and display) without a system.
fn code_text(code: Option<&str>, display: Option<&str>) -> Value {
    let mut concept = Object::new();
    if let Some(code) = code {
        let mut c = json!({ "code": code });
        if let Some(d) = display {
            c["display"] = json!(d);
        }
        concept.insert("coding".into(), json!([c]));
    }
    if let Some(t) = display.or(code) {
        concept.insert("text".into(), json!(t));
    }
    Value::Object(concept)
}

fn text(t: &str) -> Value {
    json!({ "text": t })
}

fn quantity(value: &Value, unit: Option<&str>) -> Option<Value> {
    // The number as it was written (`105` stays `105`, not `105.0`).
    let mut q = json!({ "value": value.as_number()? });
    if let Some(u) = unit {
        q["unit"] = json!(u);
    }
    Some(q)
}

fn reference_range(range: Option<&Value>, unit: Option<&str>) -> Option<Value> {
    let r = range?.as_object()?;
    let mut out = Object::new();
    for bound in ["low", "high"] {
        if let Some(v) = r.get(bound).and_then(|v| quantity(v, unit)) {
            out.insert(bound.into(), v);
        }
    }
    (!out.is_empty()).then(|| json!([out]))
}

/// An observation's `flag` as a v3 ObservationInterpretation.
fn interpretation(flag: Option<&str>) -> Option<Value> {
    let (code, display) = match flag? {
        "normal" => ("N", "Normal"),
        "low" => ("L", "Low"),
        "high" => ("H", "High"),
        "critical" => ("AA", "Critical abnormal"),
        _ => return None,
    };
    Some(json!([{ "coding": [{ "system": INTERPRETATION, "code": code, "display": display }] }]))
}

/// The value of an observation or a lab result: `valueQuantity` for a
/// number, `valueString` for text.
fn put_value(out: &mut Object, value: Option<&Value>, unit: Option<&str>) {
    match value {
        Some(Value::String(t)) => {
            out.insert("valueString".into(), json!(t));
        }
        Some(v) => put(out, "valueQuantity", quantity(v, unit)),
        None => {}
    }
}

fn telecom(o: &Object, use_phone: &str) -> Option<Value> {
    let mut t = Vec::new();
    if let Some(p) = s(o, "phone") {
        t.push(json!({ "system": "phone", "value": p, "use": use_phone }));
    }
    if let Some(e) = s(o, "email") {
        t.push(json!({ "system": "email", "value": e }));
    }
    (!t.is_empty()).then(|| json!(t))
}

fn human_name(o: &Object) -> Option<Value> {
    let mut n = Object::new();
    if let Some(f) = s(o, "lastName") {
        n.insert("family".into(), json!(f));
    }
    if let Some(g) = s(o, "firstName") {
        n.insert("given".into(), json!([g]));
    }
    (!n.is_empty()).then(|| json!([n]))
}

fn address(a: Option<&Value>) -> Option<Value> {
    let a = a?.as_object()?;
    let mut out = Object::new();
    if let Some(line) = s(a, "line") {
        out.insert("line".into(), json!([line]));
    }
    for key in ["city", "state", "postalCode", "country"] {
        if let Some(v) = s(a, key) {
            out.insert(key.into(), json!(v));
        }
    }
    (!out.is_empty()).then(|| json!([out]))
}

fn refs(ids: &[Option<&str>]) -> Option<Value> {
    let list: Vec<Value> = ids
        .iter()
        .flatten()
        .filter_map(|id| reference(id))
        .collect();
    (!list.is_empty()).then(|| json!(list))
}

impl Mapper {
    pub fn new(public_url: &str) -> Mapper {
        Mapper {
            extension_base: format!(
                "{}/fhir/StructureDefinition/eventflow-",
                public_url.trim_end_matches('/')
            ),
        }
    }

    /// The URL of the extension that carries the field `name`.
    pub fn extension_url(&self, name: &str) -> String {
        format!("{}{name}", self.extension_base)
    }

    /// Extensions for the string fields FHIR has no element for.
    fn extensions(&self, o: &Object, fields: &[&str]) -> Option<Value> {
        let list: Vec<Value> = fields
            .iter()
            .filter_map(|f| {
                let v = s(o, f)?;
                Some(json!({ "url": self.extension_url(f), "valueString": v }))
            })
            .collect();
        (!list.is_empty()).then(|| json!(list))
    }

    /// The record as a FHIR resource of its type.
    pub fn resource(&self, rt: ResourceType, o: &Object) -> Value {
        let mut r = Object::new();
        r.insert("resourceType".into(), json!(rt.fhir_name()));
        if let Some(id) = s(o, "id") {
            r.insert("id".into(), json!(fhir_id(id)));
        }
        let mut meta = Object::new();
        if let Some(v) = o.get("version").and_then(Value::as_i64) {
            meta.insert("versionId".into(), json!(v.to_string()));
        }
        if let Some(u) = s(o, "updatedAt") {
            meta.insert("lastUpdated".into(), json!(u));
        }
        if !meta.is_empty() {
            r.insert("meta".into(), Value::Object(meta));
        }
        match rt {
            ResourceType::Patient => self.patient(o, &mut r),
            ResourceType::Practitioner => practitioner(o, &mut r),
            ResourceType::Appointment => self.appointment(o, &mut r),
            ResourceType::Encounter => encounter(o, &mut r),
            ResourceType::Observation => self.observation(o, &mut r),
            ResourceType::Prescription => self.medication_request(o, &mut r),
            ResourceType::Consent => consent(o, &mut r),
            ResourceType::Intake => self.questionnaire_response(o, &mut r),
            ResourceType::Note => document_reference(o, &mut r),
            ResourceType::Lab => diagnostic_report(o, &mut r),
        }
        Value::Object(r)
    }

    fn patient(&self, o: &Object, r: &mut Object) {
        put(r, "extension", self.extensions(o, &["locationId"]));
        if let Some(mrn) = s(o, "mrn") {
            r.insert(
                "identifier".into(),
                json!([{
                    "type": { "coding": [{ "system": V2_0203, "code": "MR", "display": "Medical record number" }] },
                    "value": mrn,
                }]),
            );
        }
        r.insert(
            "active".into(),
            json!(o.get("active").and_then(Value::as_bool).unwrap_or(true)),
        );
        put(r, "name", human_name(o));
        put(r, "telecom", telecom(o, "mobile"));
        put(r, "gender", s(o, "sex").map(|g| json!(g)));
        put(r, "birthDate", s(o, "birthDate").map(|d| json!(d)));
        put(r, "address", address(o.get("address")));
    }

    fn appointment(&self, o: &Object, r: &mut Object) {
        put(
            r,
            "extension",
            self.extensions(o, &["locationId", "patientPhone"]),
        );
        r.insert("status".into(), json!(s(o, "status").unwrap_or("booked")));
        put(r, "reasonCode", s(o, "reason").map(|t| json!([text(t)])));
        // FHIR has start and end together or neither; Event Flow's end is
        // optional: without one, the appointment ends as it starts.
        let start = s(o, "start").map(date_time);
        put(
            r,
            "end",
            s(o, "end").map(date_time).or_else(|| start.clone()),
        );
        put(r, "start", start);
        let participants: Vec<Value> = [s(o, "patientId"), s(o, "practitionerId")]
            .into_iter()
            .flatten()
            .filter_map(reference)
            .map(|actor| json!({ "actor": actor, "status": "accepted" }))
            .collect();
        r.insert("participant".into(), json!(participants));
    }

    fn observation(&self, o: &Object, r: &mut Object) {
        put(r, "extension", self.extensions(o, &["providerEmail"]));
        r.insert("status".into(), json!("final"));
        r.insert("code".into(), code_text(s(o, "code"), s(o, "display")));
        put(r, "subject", s(o, "patientId").and_then(reference));
        put(r, "encounter", s(o, "encounterId").and_then(reference));
        put(r, "effectiveDateTime", s(o, "effectiveAt").map(date_time));
        put(r, "performer", refs(&[s(o, "practitionerId")]));
        put_value(r, o.get("value"), s(o, "unit"));
        put(r, "interpretation", interpretation(s(o, "flag")));
        put(
            r,
            "referenceRange",
            reference_range(o.get("referenceRange"), s(o, "unit")),
        );
    }

    fn medication_request(&self, o: &Object, r: &mut Object) {
        put(r, "extension", self.extensions(o, &["patientPhone"]));
        // A pharmacy is a contained Organization when it has a name or an
        // NCPDP id (an Organization needs one of them); its phone alone
        // is kept in an extension.
        let pharmacy = o
            .get("pharmacy")
            .and_then(Value::as_object)
            .filter(|p| s(p, "name").is_some() || s(p, "ncpdpId").is_some());
        if let Some(p) = pharmacy {
            let mut org = json!({ "resourceType": "Organization", "id": "pharmacy" });
            if let Some(n) = s(p, "name") {
                org["name"] = json!(n);
            }
            if let Some(ph) = s(p, "phone") {
                org["telecom"] = json!([{ "system": "phone", "value": ph }]);
            }
            if let Some(id) = s(p, "ncpdpId") {
                org["identifier"] = json!([{ "system": NCPDP, "value": id }]);
            }
            r.insert("contained".into(), json!([org]));
        } else if let Some(ph) = o
            .get("pharmacy")
            .and_then(Value::as_object)
            .and_then(|p| s(p, "phone"))
        {
            let mut ext = r
                .get("extension")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            ext.push(json!({ "url": self.extension_url("pharmacyPhone"), "valueString": ph }));
            r.insert("extension".into(), json!(ext));
        }
        r.insert("status".into(), json!(s(o, "status").unwrap_or("active")));
        r.insert("intent".into(), json!("order"));
        put(r, "medicationCodeableConcept", s(o, "medication").map(text));
        put(r, "subject", s(o, "patientId").and_then(reference));
        put(r, "encounter", s(o, "encounterId").and_then(reference));
        put(r, "requester", s(o, "practitionerId").and_then(reference));
        put(
            r,
            "dosageInstruction",
            s(o, "dosage").map(|d| json!([{ "text": d }])),
        );
        let mut dispense = Object::new();
        if let Some(q) = o.get("quantity").and_then(|q| quantity(q, None)) {
            dispense.insert("quantity".into(), q);
        }
        if let Some(n) = o.get("refills").and_then(Value::as_u64) {
            dispense.insert("numberOfRepeatsAllowed".into(), json!(n));
        }
        if pharmacy.is_some() {
            dispense.insert("performer".into(), json!({ "reference": "#pharmacy" }));
        }
        if !dispense.is_empty() {
            r.insert("dispenseRequest".into(), Value::Object(dispense));
        }
    }

    fn questionnaire_response(&self, o: &Object, r: &mut Object) {
        put(r, "extension", self.extensions(o, &["form"]));
        // FHIR has no "requested": a form sent and not yet begun is in progress.
        let status = match s(o, "status") {
            Some("completed") => "completed",
            _ => "in-progress",
        };
        r.insert("status".into(), json!(status));
        put(r, "subject", s(o, "patientId").and_then(reference));
        let items: Vec<Value> = o
            .get("responses")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let mut it = json!({ "linkId": (i + 1).to_string() });
                        if let Some(q) = item.get("question").and_then(Value::as_str) {
                            it["text"] = json!(q);
                        }
                        if let Some(a) = item.get("answer").and_then(Value::as_str) {
                            it["answer"] = json!([{ "valueString": a }]);
                        }
                        it
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !items.is_empty() {
            r.insert("item".into(), json!(items));
        }
    }
}

fn practitioner(o: &Object, r: &mut Object) {
    put(
        r,
        "identifier",
        s(o, "npi").map(|n| json!([{ "system": NPI, "value": n }])),
    );
    put(r, "name", human_name(o));
    put(r, "telecom", telecom(o, "work"));
    put(
        r,
        "qualification",
        s(o, "specialty").map(|t| json!([{ "code": text(t) }])),
    );
}

fn encounter(o: &Object, r: &mut Object) {
    r.insert(
        "status".into(),
        json!(s(o, "status").unwrap_or("in-progress")),
    );
    r.insert(
        "class".into(),
        json!({
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
            "display": "ambulatory",
        }),
    );
    let mut types: Vec<Value> = Vec::new();
    if let Some(t) = s(o, "type") {
        types.push(text(t));
    }
    if let Some(codes) = o.get("serviceCodes").and_then(Value::as_array) {
        types.extend(codes.iter().filter_map(codeable));
    }
    if !types.is_empty() {
        r.insert("type".into(), json!(types));
    }
    put(r, "subject", s(o, "patientId").and_then(reference));
    put(
        r,
        "participant",
        s(o, "practitionerId")
            .and_then(reference)
            .map(|p| json!([{ "individual": p }])),
    );
    put(r, "appointment", refs(&[s(o, "appointmentId")]));
    let mut period = Object::new();
    if let Some(start) = s(o, "date") {
        period.insert("start".into(), date_time(start));
    }
    if let Some(end) = s(o, "end") {
        period.insert("end".into(), date_time(end));
    }
    if !period.is_empty() {
        r.insert("period".into(), Value::Object(period));
    }
    if let Some(d) = o.get("diagnoses").and_then(Value::as_array) {
        let reasons: Vec<Value> = d.iter().filter_map(codeable).collect();
        if !reasons.is_empty() {
            r.insert("reasonCode".into(), json!(reasons));
        }
    }
}

fn consent(o: &Object, r: &mut Object) {
    r.insert("status".into(), json!(s(o, "status").unwrap_or("active")));
    // What the consent covers: FHIR's scope codes when the clinic wrote
    // one of them, its words otherwise; FHIR's scope is required, so a
    // consent without one is about privacy.
    let scope = match s(o, "scope") {
        Some(t @ ("adr" | "research" | "patient-privacy" | "treatment")) => json!({
            "coding": [{ "system": CONSENT_SCOPE, "code": t }],
            "text": t,
        }),
        Some(t) => text(t),
        None => json!({ "coding": [{ "system": CONSENT_SCOPE, "code": "patient-privacy" }] }),
    };
    r.insert("scope".into(), scope);
    r.insert(
        "category".into(),
        json!([{ "coding": [{ "system": LOINC, "code": "59284-0", "display": "Patient Consent" }] }]),
    );
    put(r, "patient", s(o, "patientId").and_then(reference));
    put(r, "dateTime", s(o, "signedAt").map(date_time));
    // FHIR wants the policy a consent follows (a policy or a rule): the
    // signed document when it is a link, else the document's name; a
    // consent with neither is the patient's own opt-in or opt-out.
    match s(o, "document") {
        Some(doc) if doc.starts_with("http://") || doc.starts_with("https://") => {
            r.insert("sourceAttachment".into(), json!({ "url": doc }));
            r.insert("policy".into(), json!([{ "uri": doc }]));
        }
        Some(doc) => {
            r.insert("sourceAttachment".into(), json!({ "title": doc }));
            r.insert("policyRule".into(), text(doc));
        }
        None => {
            let (code, display) = if s(o, "status") == Some("rejected") {
                ("OPTOUT", "opt-out")
            } else {
                ("OPTIN", "opt-in")
            };
            r.insert(
                "policyRule".into(),
                json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code, "display": display }] }),
            );
        }
    }
}

fn document_reference(o: &Object, r: &mut Object) {
    r.insert("status".into(), json!("current"));
    put(r, "type", s(o, "kind").map(text));
    put(r, "subject", s(o, "patientId").and_then(reference));
    if let Some(author) = s(o, "authorId") {
        // A practitioner's or the patient's id is a reference; anything
        // else is the author's name.
        let a = match ResourceType::from_id(author) {
            Some(ResourceType::Practitioner | ResourceType::Patient) => reference(author),
            _ => None,
        }
        .unwrap_or_else(|| json!({ "display": author }));
        r.insert("author".into(), json!([a]));
    }
    let data = base64::engine::general_purpose::STANDARD.encode(s(o, "text").unwrap_or(""));
    r.insert(
        "content".into(),
        json!([{ "attachment": { "contentType": "text/plain; charset=utf-8", "data": data } }]),
    );
    put(
        r,
        "context",
        s(o, "encounterId")
            .and_then(reference)
            .map(|e| json!({ "encounter": [e] })),
    );
}

fn diagnostic_report(o: &Object, r: &mut Object) {
    let subject = s(o, "patientId").and_then(reference);
    let status = s(o, "status").unwrap_or("final");
    let results = o.get("results").and_then(Value::as_array);
    if let Some(list) = results.filter(|l| !l.is_empty()) {
        let contained: Vec<Value> = list
            .iter()
            .enumerate()
            .map(|(i, res)| {
                let res = res.as_object().cloned().unwrap_or_default();
                let mut obs = Object::new();
                obs.insert("resourceType".into(), json!("Observation"));
                obs.insert("id".into(), json!(format!("result-{}", i + 1)));
                obs.insert("status".into(), json!(status));
                obs.insert(
                    "code".into(),
                    code_text(s(&res, "code"), s(&res, "display")),
                );
                put(&mut obs, "subject", subject.clone());
                put_value(&mut obs, res.get("value"), s(&res, "unit"));
                put(&mut obs, "interpretation", interpretation(s(&res, "flag")));
                put(
                    &mut obs,
                    "referenceRange",
                    reference_range(res.get("referenceRange"), s(&res, "unit")),
                );
                Value::Object(obs)
            })
            .collect();
        let refs: Vec<Value> = (1..=contained.len())
            .map(|i| json!({ "reference": format!("#result-{i}") }))
            .collect();
        r.insert("contained".into(), json!(contained));
        r.insert("result".into(), json!(refs));
    }
    r.insert("status".into(), json!(status));
    r.insert("code".into(), code_text(s(o, "code"), s(o, "display")));
    put(r, "subject", subject);
    put(r, "encounter", s(o, "encounterId").and_then(reference));
    put(r, "issued", s(o, "issuedAt").map(date_time));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_with_a_dash_and_read_in_either_spelling() {
        assert_eq!(fhir_id("pat_01abc"), "pat-01abc");
        assert_eq!(
            record_id(ResourceType::Patient, "pat-01abc").as_deref(),
            Some("pat_01abc")
        );
        assert_eq!(
            record_id(ResourceType::Patient, "pat_01abc").as_deref(),
            Some("pat_01abc")
        );
        assert_eq!(record_id(ResourceType::Appointment, "pat-01abc"), None);
        assert_eq!(record_id(ResourceType::Patient, "pat-01-abc"), None);
        assert_eq!(record_id(ResourceType::Patient, ""), None);
    }

    #[test]
    fn systems_are_uris() {
        assert_eq!(system(Some("CPT")), Some(CPT));
        assert_eq!(system(Some("ICD-10")), Some(ICD10));
        assert_eq!(system(Some("ICD-9-CM")), Some(ICD9));
        assert_eq!(system(Some("ICD-11")), None);
        assert_eq!(system(Some("urn:oid:1.2")), Some("urn:oid:1.2"));
        assert_eq!(system(Some("x:y")), None);
        assert_eq!(system(Some("local")), None);
    }
}
