//! A FHIR R4 `Claim` built from an encounter (the `claim` step): the
//! encounter's CPT `serviceCodes` as items, its ICD-10 `diagnoses`, the
//! patient and the provider, and its observations and prescriptions as
//! supporting information. Checked in the tests against the FHIR R4
//! definition with PyPI's `fhir.resources`.

use eventflow_model::Object;
use serde_json::{Value, json};

/// The records a claim is built from.
#[derive(Debug, Default)]
pub struct ClaimInput {
    pub encounter: Object,
    pub patient: Option<Object>,
    pub practitioner: Option<Object>,
    pub observations: Vec<Object>,
    pub prescriptions: Vec<Object>,
}

const CPT: &str = "http://www.ama-assn.org/go/cpt";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10-cm";

fn s<'a>(o: &'a Object, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str)
}

/// A coding's system as a FHIR URI: `CPT` and `ICD-10` are named by their
/// URIs; a system already given as a URI is kept.
fn system(given: Option<&str>, default: &str) -> String {
    match given {
        Some(g) if g.contains(':') => g.to_string(),
        Some(g) if g.eq_ignore_ascii_case("cpt") => CPT.to_string(),
        Some(g) if g.to_ascii_lowercase().starts_with("icd") => ICD10.to_string(),
        _ => default.to_string(),
    }
}

fn codeable(coding: &Value, default_system: &str) -> Option<Value> {
    let code = coding.get("code").and_then(Value::as_str)?;
    let mut c = json!({
        "system": system(coding.get("system").and_then(Value::as_str), default_system),
        "code": code,
    });
    if let Some(d) = coding.get("display").and_then(Value::as_str) {
        c["display"] = json!(d);
    }
    Some(json!({ "coding": [c] }))
}

fn reference(kind: &str, record: &Object, display: Option<String>) -> Value {
    let mut r = json!({ "reference": format!("{kind}/{}", s(record, "id").unwrap_or("")) });
    if let Some(d) = display.filter(|d| !d.is_empty()) {
        r["display"] = json!(d);
    }
    r
}

fn person_name(o: &Object) -> Option<String> {
    let name = [s(o, "firstName"), s(o, "lastName")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    (!name.is_empty()).then_some(name)
}

/// The FHIR date of an RFC 3339 timestamp (its first ten characters).
fn date_of(ts: Option<&str>) -> Option<String> {
    ts.and_then(|t| t.get(..10)).map(str::to_string)
}

/// Builds the claim. `created` is now, RFC 3339.
pub fn build(input: &ClaimInput, created: &str) -> Value {
    let enc = &input.encounter;
    let patient = match &input.patient {
        Some(p) => reference("Patient", p, person_name(p)),
        None => json!({ "reference": format!("Patient/{}", s(enc, "patientId").unwrap_or("")) }),
    };
    let provider = match &input.practitioner {
        Some(p) => reference("Practitioner", p, person_name(p)),
        None => json!({ "display": "The clinic" }),
    };
    let diagnoses: Vec<Value> = enc
        .get("diagnoses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| codeable(d, ICD10))
        .enumerate()
        .map(|(i, c)| json!({ "sequence": i + 1, "diagnosisCodeableConcept": c }))
        .collect();
    let mut supporting: Vec<Value> = Vec::new();
    for (kind, records) in [
        ("Observation", &input.observations),
        ("MedicationRequest", &input.prescriptions),
    ] {
        for r in records {
            supporting.push(json!({
                "sequence": supporting.len() + 1,
                "category": { "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/claiminformationcategory",
                    "code": "info",
                }]},
                "valueReference": reference(kind, r, s(r, "display").or(s(r, "medication")).map(str::to_string)),
            }));
        }
    }
    let served = date_of(s(enc, "date")).or_else(|| date_of(Some(created)));
    let encounter_ref = reference("Encounter", enc, None);
    let items: Vec<Value> = enc
        .get("serviceCodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| codeable(c, CPT))
        .enumerate()
        .map(|(i, product)| {
            let mut item = json!({
                "sequence": i + 1,
                "productOrService": product,
                "servicedDate": served,
                "encounter": [encounter_ref.clone()],
            });
            if !diagnoses.is_empty() {
                item["diagnosisSequence"] = json!((1..=diagnoses.len()).collect::<Vec<_>>());
            }
            if !supporting.is_empty() {
                item["informationSequence"] = json!((1..=supporting.len()).collect::<Vec<_>>());
            }
            item
        })
        .collect();
    let mut claim = json!({
        "resourceType": "Claim",
        "identifier": [{ "system": "urn:eventflow:encounter", "value": s(enc, "id").unwrap_or("") }],
        "status": "active",
        "type": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/claim-type",
            "code": "professional",
        }]},
        "use": "claim",
        "patient": patient,
        "created": created,
        "provider": provider,
        "priority": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/processpriority",
            "code": "normal",
        }]},
        // R4 requires one; the server keeps no coverage records, so the
        // billing system resolves the patient's coverage on file.
        "insurance": [{
            "sequence": 1,
            "focal": true,
            "coverage": { "display": "Coverage on file" },
        }],
    });
    if !diagnoses.is_empty() {
        claim["diagnosis"] = json!(diagnoses);
    }
    if !supporting.is_empty() {
        claim["supportingInfo"] = json!(supporting);
    }
    if !items.is_empty() {
        claim["item"] = json!(items);
    }
    if let (Some(start), end) = (s(enc, "date"), s(enc, "end")) {
        let mut period = json!({ "start": start });
        if let Some(e) = end {
            period["end"] = json!(e);
        }
        claim["billablePeriod"] = period;
    }
    claim
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Object {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn codes_diagnoses_and_supporting_info_are_numbered() {
        let input = ClaimInput {
            encounter: obj(json!({
                "id": "enc_1", "patientId": "pat_1", "date": "2026-11-20T10:00:00Z",
                "serviceCodes": [{"system": "CPT", "code": "99213", "display": "Office visit"}],
                "diagnoses": [{"system": "ICD-10", "code": "E11.9"}, {"code": "I10"}],
            })),
            patient: Some(obj(
                json!({"id": "pat_1", "firstName": "Ada", "lastName": "Lovelace"}),
            )),
            practitioner: None,
            observations: vec![obj(json!({"id": "obs_1", "display": "HbA1c"}))],
            prescriptions: vec![obj(json!({"id": "rx_1", "medication": "Metformin"}))],
        };
        let c = build(&input, "2026-11-20T11:00:00Z");
        assert_eq!(c["item"][0]["productOrService"]["coding"][0]["system"], CPT);
        assert_eq!(c["item"][0]["diagnosisSequence"], json!([1, 2]));
        assert_eq!(
            c["diagnosis"][1]["diagnosisCodeableConcept"]["coding"][0]["system"],
            ICD10
        );
        assert_eq!(
            c["supportingInfo"][1]["valueReference"]["reference"],
            "MedicationRequest/rx_1"
        );
        assert_eq!(c["patient"]["display"], "Ada Lovelace");
        assert_eq!(c["provider"]["display"], "The clinic");
        assert_eq!(c["item"][0]["servicedDate"], "2026-11-20");
    }
}
