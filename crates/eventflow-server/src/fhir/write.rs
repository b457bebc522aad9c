//! FHIR `create` and `update` of `Patient`, `Appointment` and
//! `Observation`: the resource read back into the record's fields, the
//! inverse of [`super::map`]. An element Event Flow does not keep is
//! refused (422, its path named), never dropped: what a client wrote is
//! what it reads back.

use eventflow_model::{Object, ResourceType};
use serde_json::{Value, json};

use super::map::{Mapper, record_id};
use crate::error::{ApiError, ApiResult};

/// The types FHIR clients may create and update.
pub const WRITABLE: [ResourceType; 3] = [
    ResourceType::Patient,
    ResourceType::Appointment,
    ResourceType::Observation,
];

/// Elements every resource may carry and that are not kept: the server
/// sets `meta`, and makes no narrative of its own (`text`).
const IGNORED: &[&str] = &["resourceType", "id", "meta", "text"];

fn invalid(path: &str, why: &str) -> ApiError {
    ApiError::invalid(path, why)
}

fn not_kept(path: &str) -> ApiError {
    invalid(
        path,
        "is not kept by Event Flow (docs/fhir.md lists the elements each type keeps)",
    )
}

/// Fails on any member of `o` not in `allowed`, naming `{path}.{member}`.
fn only(o: &Object, path: &str, allowed: &[&str]) -> ApiResult<()> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(not_kept(&format!("{path}.{k}"))),
        None => Ok(()),
    }
}

fn object<'a>(v: &'a Value, path: &str) -> ApiResult<&'a Object> {
    v.as_object()
        .ok_or_else(|| invalid(path, "must be a JSON object"))
}

/// A list of at most one object (FHIR lists the server keeps one of).
fn at_most_one<'a>(o: &'a Object, key: &str, path: &str) -> ApiResult<Option<&'a Object>> {
    let Some(v) = o.get(key) else {
        return Ok(None);
    };
    let path = format!("{path}.{key}");
    let list = v
        .as_array()
        .ok_or_else(|| invalid(&path, "must be a list"))?;
    match list.as_slice() {
        [] => Ok(None),
        [one] => object(one, &path).map(Some),
        _ => Err(invalid(&path, "Event Flow keeps one; send at most one")),
    }
}

fn string<'a>(o: &'a Object, key: &str, path: &str) -> ApiResult<Option<&'a str>> {
    match o.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(&format!("{path}.{key}"), "must be a string")),
    }
}

/// The Event Flow id a reference names, if it is a record of type `rt`.
fn reference_to(v: &Value, rt: ResourceType, path: &str) -> ApiResult<String> {
    let o = object(v, path)?;
    only(o, path, &["reference", "display", "type"])?;
    let reference = string(o, "reference", path)?
        .ok_or_else(|| invalid(&format!("{path}.reference"), "is required"))?;
    reference
        .strip_prefix(rt.fhir_name())
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|id| record_id(rt, id))
        .ok_or_else(|| {
            invalid(
                &format!("{path}.reference"),
                &format!("must be {}/{{id}} of a {}", rt.fhir_name(), rt.fhir_name()),
            )
        })
}

/// The record's fields kept in extensions (`eventflow-{field}`, a
/// `valueString`).
fn extensions(
    mapper: &Mapper,
    res: &Object,
    path: &str,
    fields: &[&str],
    out: &mut Object,
) -> ApiResult<()> {
    let Some(list) = res.get("extension") else {
        return Ok(());
    };
    let path = format!("{path}.extension");
    let list = list
        .as_array()
        .ok_or_else(|| invalid(&path, "must be a list"))?;
    for ext in list {
        let e = object(ext, &path)?;
        only(e, &path, &["url", "valueString"])?;
        let url = string(e, "url", &path)?.unwrap_or("");
        let field = fields
            .iter()
            .find(|f| mapper.extension_url(f) == url)
            .ok_or_else(|| {
                invalid(
                    &format!("{path}.url"),
                    "is not an extension Event Flow keeps",
                )
            })?;
        let value = string(e, "valueString", &path)?
            .ok_or_else(|| invalid(&format!("{path}.valueString"), "is required"))?;
        out.insert((*field).to_string(), json!(value));
    }
    Ok(())
}

/// The record fields of a FHIR resource of type `rt`, every field the
/// type maps present (`null` when the resource has no value for it), so
/// that an update replaces the record as FHIR's `PUT` does.
pub fn record_fields(mapper: &Mapper, rt: ResourceType, body: &Value) -> ApiResult<Object> {
    let ty = rt.fhir_name();
    let res = object(body, ty)?;
    if res.get("resourceType").and_then(Value::as_str) != Some(ty) {
        return Err(invalid("resourceType", &format!("must be {ty}")));
    }
    let mut out = Object::new();
    match rt {
        ResourceType::Patient => patient(mapper, res, &mut out)?,
        ResourceType::Appointment => appointment(mapper, res, &mut out)?,
        ResourceType::Observation => observation(mapper, res, &mut out)?,
        _ => return Err(invalid("resourceType", "is not written through FHIR")),
    }
    for field in kept(rt) {
        out.entry(field.to_string()).or_insert(Value::Null);
    }
    Ok(out)
}

/// The record fields FHIR writes of each writable type.
fn kept(rt: ResourceType) -> &'static [&'static str] {
    match rt {
        ResourceType::Patient => &[
            "firstName",
            "lastName",
            "birthDate",
            "sex",
            "email",
            "phone",
            "address",
            "mrn",
            "locationId",
            "active",
        ],
        ResourceType::Appointment => &[
            "patientId",
            "practitionerId",
            "start",
            "end",
            "status",
            "reason",
            "locationId",
            "patientPhone",
        ],
        ResourceType::Observation => &[
            "patientId",
            "encounterId",
            "practitionerId",
            "code",
            "display",
            "value",
            "unit",
            "referenceRange",
            "flag",
            "effectiveAt",
            "providerEmail",
        ],
        _ => &[],
    }
}

/// The FHIR path of a record field, for an error about it.
pub fn fhir_path(rt: ResourceType, field: &str) -> String {
    let top = field.split('.').next().unwrap_or(field);
    let element = match (rt, top) {
        (ResourceType::Patient, "firstName") => "name.given",
        (ResourceType::Patient, "lastName") => "name.family",
        (ResourceType::Patient, "sex") => "gender",
        (ResourceType::Patient, "email" | "phone") => "telecom",
        (ResourceType::Patient, "mrn") => "identifier",
        (ResourceType::Appointment, "patientId" | "practitionerId") => "participant.actor",
        (ResourceType::Appointment, "reason") => "reasonCode",
        (ResourceType::Observation, "patientId") => "subject",
        (ResourceType::Observation, "encounterId") => "encounter",
        (ResourceType::Observation, "practitionerId") => "performer",
        (ResourceType::Observation, "code" | "display") => "code",
        (ResourceType::Observation, "value" | "unit") => "value[x]",
        (ResourceType::Observation, "flag") => "interpretation",
        (ResourceType::Observation, "effectiveAt") => "effective[x]",
        (_, "locationId" | "patientPhone" | "providerEmail") => "extension",
        (_, other) => other,
    };
    format!("{}.{element}", rt.fhir_name())
}

fn patient(mapper: &Mapper, res: &Object, out: &mut Object) -> ApiResult<()> {
    let p = "Patient";
    only(
        res,
        p,
        &[
            IGNORED,
            &[
                "extension",
                "identifier",
                "active",
                "name",
                "telecom",
                "gender",
                "birthDate",
                "address",
            ],
        ]
        .concat(),
    )?;
    extensions(mapper, res, p, &["locationId"], out)?;
    if let Some(id) = at_most_one(res, "identifier", p)? {
        let path = "Patient.identifier";
        only(id, path, &["type", "value", "system", "use"])?;
        let mr = id["type"]["coding"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["code"] == "MR"));
        if !mr {
            return Err(invalid(
                &format!("{path}.type"),
                "must be the medical record number (v2-0203#MR)",
            ));
        }
        if let Some(v) = string(id, "value", path)? {
            out.insert("mrn".into(), json!(v));
        }
    }
    match res.get("active") {
        None => {}
        Some(Value::Bool(b)) => {
            out.insert("active".into(), json!(b));
        }
        Some(_) => return Err(invalid("Patient.active", "must be true or false")),
    }
    if let Some(name) = at_most_one(res, "name", p)? {
        let path = "Patient.name";
        only(name, path, &["family", "given", "use"])?;
        if let Some(f) = string(name, "family", path)? {
            out.insert("lastName".into(), json!(f));
        }
        if let Some(given) = name.get("given") {
            let parts: Vec<&str> = given
                .as_array()
                .map(|g| g.iter().filter_map(Value::as_str).collect())
                .ok_or_else(|| invalid("Patient.name.given", "must be a list of strings"))?;
            if !parts.is_empty() {
                out.insert("firstName".into(), json!(parts.join(" ")));
            }
        }
    }
    if let Some(list) = res.get("telecom") {
        let list = list
            .as_array()
            .ok_or_else(|| invalid("Patient.telecom", "must be a list"))?;
        for t in list {
            let path = "Patient.telecom";
            let t = object(t, path)?;
            only(t, path, &["system", "value", "use"])?;
            let field = match string(t, "system", path)? {
                Some("phone") => "phone",
                Some("email") => "email",
                _ => {
                    return Err(invalid(
                        "Patient.telecom.system",
                        "Event Flow keeps one phone and one email",
                    ));
                }
            };
            if out.contains_key(field) {
                return Err(invalid(
                    "Patient.telecom",
                    &format!("Event Flow keeps one {field}; send at most one"),
                ));
            }
            if let Some(v) = string(t, "value", path)? {
                out.insert(field.into(), json!(v));
            }
        }
    }
    if let Some(g) = string(res, "gender", p)? {
        out.insert("sex".into(), json!(g));
    }
    if let Some(d) = string(res, "birthDate", p)? {
        out.insert("birthDate".into(), json!(d));
    }
    if let Some(a) = at_most_one(res, "address", p)? {
        let path = "Patient.address";
        only(
            a,
            path,
            &[
                "line",
                "city",
                "state",
                "postalCode",
                "country",
                "use",
                "type",
            ],
        )?;
        let mut address = Object::new();
        if let Some(line) = a.get("line") {
            let lines: Vec<&str> = line
                .as_array()
                .map(|l| l.iter().filter_map(Value::as_str).collect())
                .ok_or_else(|| invalid("Patient.address.line", "must be a list of strings"))?;
            if !lines.is_empty() {
                address.insert("line".into(), json!(lines.join(", ")));
            }
        }
        for key in ["city", "state", "postalCode", "country"] {
            if let Some(v) = string(a, key, path)? {
                address.insert(key.into(), json!(v));
            }
        }
        if !address.is_empty() {
            out.insert("address".into(), Value::Object(address));
        }
    }
    Ok(())
}

fn appointment(mapper: &Mapper, res: &Object, out: &mut Object) -> ApiResult<()> {
    let p = "Appointment";
    only(
        res,
        p,
        &[
            IGNORED,
            &[
                "extension",
                "status",
                "reasonCode",
                "start",
                "end",
                "participant",
            ],
        ]
        .concat(),
    )?;
    extensions(mapper, res, p, &["locationId", "patientPhone"], out)?;
    if let Some(s) = string(res, "status", p)? {
        out.insert("status".into(), json!(s));
    }
    if let Some(r) = at_most_one(res, "reasonCode", p)? {
        only(r, "Appointment.reasonCode", &["text"])?;
        if let Some(t) = string(r, "text", "Appointment.reasonCode")? {
            out.insert("reason".into(), json!(t));
        }
    }
    for key in ["start", "end"] {
        if let Some(t) = string(res, key, p)? {
            out.insert(key.into(), json!(t));
        }
    }
    // An appointment served without an end ends as it starts: written
    // back, it still has no end.
    if out.get("end").is_some() && out.get("end") == out.get("start") {
        out.remove("end");
    }
    let participants = match res.get("participant") {
        None => &[][..],
        Some(v) => v
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| invalid("Appointment.participant", "must be a list"))?,
    };
    for part in participants {
        let path = "Appointment.participant";
        let part = object(part, path)?;
        only(part, path, &["actor", "status", "required"])?;
        let actor = part
            .get("actor")
            .ok_or_else(|| invalid("Appointment.participant.actor", "is required"))?;
        let reference = actor["reference"].as_str().unwrap_or("");
        let (rt, field) = if reference.starts_with("Practitioner/") {
            (ResourceType::Practitioner, "practitionerId")
        } else {
            (ResourceType::Patient, "patientId")
        };
        if out.contains_key(field) {
            return Err(invalid(
                "Appointment.participant",
                "Event Flow keeps one patient and one practitioner",
            ));
        }
        out.insert(
            field.into(),
            json!(reference_to(actor, rt, "Appointment.participant.actor")?),
        );
    }
    Ok(())
}

fn observation(mapper: &Mapper, res: &Object, out: &mut Object) -> ApiResult<()> {
    let p = "Observation";
    only(
        res,
        p,
        &[
            IGNORED,
            &[
                "extension",
                "status",
                "code",
                "subject",
                "encounter",
                "performer",
                "effectiveDateTime",
                "valueQuantity",
                "valueString",
                "interpretation",
                "referenceRange",
            ],
        ]
        .concat(),
    )?;
    extensions(mapper, res, p, &["providerEmail"], out)?;
    // Event Flow keeps observations as they were made: final.
    match string(res, "status", p)? {
        Some("final") => {}
        _ => return Err(invalid("Observation.status", "must be final")),
    }
    if let Some(code) = res.get("code") {
        let path = "Observation.code";
        let c = object(code, path)?;
        only(c, path, &["coding", "text"])?;
        let coding = match c.get("coding").and_then(Value::as_array).map(Vec::as_slice) {
            None | Some([]) => None,
            Some([one]) => Some(object(one, "Observation.code.coding")?),
            Some(_) => {
                return Err(invalid(
                    "Observation.code.coding",
                    "Event Flow keeps one code; send at most one coding",
                ));
            }
        };
        if let Some(cd) = coding {
            only(
                cd,
                "Observation.code.coding",
                &["system", "code", "display"],
            )?;
            if let Some(v) = string(cd, "code", "Observation.code.coding")? {
                out.insert("code".into(), json!(v));
            }
        }
        if let Some(d) = coding
            .and_then(|cd| cd.get("display"))
            .and_then(Value::as_str)
        {
            out.insert("display".into(), json!(d));
        }
    }
    if let Some(s) = res.get("subject") {
        out.insert(
            "patientId".into(),
            json!(reference_to(
                s,
                ResourceType::Patient,
                "Observation.subject"
            )?),
        );
    }
    if let Some(e) = res.get("encounter") {
        out.insert(
            "encounterId".into(),
            json!(reference_to(
                e,
                ResourceType::Encounter,
                "Observation.encounter"
            )?),
        );
    }
    if let Some(list) = res.get("performer") {
        match list.as_array().map(Vec::as_slice) {
            Some([]) => {}
            Some([one]) => {
                out.insert(
                    "practitionerId".into(),
                    json!(reference_to(
                        one,
                        ResourceType::Practitioner,
                        "Observation.performer"
                    )?),
                );
            }
            _ => {
                return Err(invalid(
                    "Observation.performer",
                    "Event Flow keeps one practitioner; send a list of at most one",
                ));
            }
        }
    }
    if let Some(t) = string(res, "effectiveDateTime", p)? {
        out.insert("effectiveAt".into(), json!(t));
    }
    match (res.get("valueQuantity"), res.get("valueString")) {
        (Some(_), Some(_)) => {
            return Err(invalid("Observation.value[x]", "send one value"));
        }
        (Some(q), None) => {
            let path = "Observation.valueQuantity";
            let q = object(q, path)?;
            only(q, path, &["value", "unit", "system", "code"])?;
            let v = q
                .get("value")
                .filter(|v| v.is_number())
                .ok_or_else(|| invalid(&format!("{path}.value"), "must be a number"))?;
            out.insert("value".into(), v.clone());
            if let Some(u) = string(q, "unit", path)? {
                out.insert("unit".into(), json!(u));
            }
        }
        (None, Some(Value::String(s))) => {
            out.insert("value".into(), json!(s));
        }
        (None, Some(_)) => return Err(invalid("Observation.valueString", "must be a string")),
        (None, None) => {}
    }
    if let Some(i) = at_most_one(res, "interpretation", p)? {
        let code = i["coding"][0]["code"].as_str().unwrap_or("");
        let flag = match code {
            "N" => "normal",
            "L" => "low",
            "H" => "high",
            "AA" | "HH" | "LL" => "critical",
            _ => {
                return Err(invalid(
                    "Observation.interpretation",
                    "must be a v3 ObservationInterpretation code N, L, H, AA, HH or LL",
                ));
            }
        };
        out.insert("flag".into(), json!(flag));
    }
    if let Some(r) = at_most_one(res, "referenceRange", p)? {
        let path = "Observation.referenceRange";
        only(r, path, &["low", "high"])?;
        let mut range = Object::new();
        for bound in ["low", "high"] {
            if let Some(b) = r.get(bound) {
                let v = b
                    .get("value")
                    .filter(|v| v.is_number())
                    .ok_or_else(|| invalid(&format!("{path}.{bound}.value"), "must be a number"))?;
                range.insert(bound.into(), v.clone());
            }
        }
        if !range.is_empty() {
            out.insert("referenceRange".into(), Value::Object(range));
        }
    }
    Ok(())
}
