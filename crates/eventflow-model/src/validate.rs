//! Checks a record body against its type's [`FieldSpec`]s, fills defaults and
//! computes observation flags.
//!
//! Messages name the field (`address.postalCode`, `results[0].value`) and say
//! what is expected. They never repeat the value: values are patient data.

use serde_json::Value;

use crate::Object;
use crate::resource::{FieldKind, FieldSpec, ResourceType, SERVER_FIELDS};

/// A field of a request body is missing, unknown or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The path of the field, e.g. `start` or `address.city`.
    pub field: String,
    /// What is wrong, without the value.
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Longest string a field accepts, in characters.
pub const MAX_STRING_CHARS: usize = 100_000;

/// Checks a complete record body (server fields removed): no unknown field,
/// every value of the right kind, every required field present. Nulls must
/// have been removed already (see [`strip_nulls`]).
pub fn check(rt: ResourceType, body: &Object) -> Result<(), ValidationError> {
    check_object(rt.fields(), body, "")?;
    Ok(())
}

/// The path (`address.line`, `results[2].code`) of the first string — a
/// member name or a value — holding a NUL character, which no field may:
/// PostgreSQL cannot store it, and what sits in front of a server may read
/// a string as ending there.
pub fn find_nul(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &mut String) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Object(o) => o.iter().any(|(k, v)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                if k.contains('\0') {
                    path.push_str(&k.replace('\0', "\\u0000"));
                    return true;
                }
                path.push_str(k);
                let found = walk(v, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then_some(path)
}

/// The message for a string holding a NUL character.
pub const NUL_MESSAGE: &str = "must not contain a NUL character (\\u0000)";

/// Rejects server-set fields in a create body.
pub fn reject_server_fields(body: &Object) -> Result<(), ValidationError> {
    for name in SERVER_FIELDS {
        if body.contains_key(*name) {
            return Err(ValidationError::new(
                *name,
                "is set by the server and cannot be written",
            ));
        }
    }
    Ok(())
}

/// Removes `null` members from objects, recursively (a null field is an
/// absent field). Lists keep their items.
pub fn strip_nulls(body: &mut Object) {
    body.retain(|_, v| !v.is_null());
    for value in body.values_mut() {
        match value {
            Value::Object(o) => strip_nulls(o),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(o) = item {
                        strip_nulls(o);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Fills the defaults of a new record: `status`, `active`, an encounter's `date`.
pub fn apply_defaults(rt: ResourceType, body: &mut Object, now: &str) {
    let default_status = match rt {
        ResourceType::Appointment => Some("booked"),
        ResourceType::Encounter => Some("in-progress"),
        ResourceType::Prescription => Some("active"),
        ResourceType::Consent => Some("active"),
        ResourceType::Intake => Some("requested"),
        ResourceType::Lab => Some("final"),
        _ => None,
    };
    if let Some(status) = default_status {
        body.entry("status")
            .or_insert_with(|| Value::String(status.into()));
    }
    if rt == ResourceType::Patient {
        body.entry("active").or_insert(Value::Bool(true));
    }
    if rt == ResourceType::Encounter {
        body.entry("date")
            .or_insert_with(|| Value::String(now.into()));
    }
}

/// Computes `flag` from `value` and `referenceRange` where the client gave no
/// flag: `low` below the range, `high` above it, `normal` within. Applies to
/// an observation and to each result of a lab. `recompute` also replaces a
/// flag (used when a patch changed the value or range but not the flag).
pub fn compute_flags(rt: ResourceType, body: &mut Object, recompute: bool) {
    match rt {
        ResourceType::Observation => flag_one(body, recompute),
        ResourceType::Lab => {
            if let Some(Value::Array(results)) = body.get_mut("results") {
                for r in results {
                    if let Value::Object(o) = r {
                        flag_one(o, recompute);
                    }
                }
            }
        }
        _ => {}
    }
}

fn flag_one(o: &mut Object, recompute: bool) {
    if o.contains_key("flag") && !recompute {
        return;
    }
    let value = o.get("value").and_then(Value::as_f64);
    let range = o.get("referenceRange").and_then(Value::as_object);
    let (Some(value), Some(range)) = (value, range) else {
        if recompute {
            o.remove("flag");
        }
        return;
    };
    let low = range.get("low").and_then(Value::as_f64);
    let high = range.get("high").and_then(Value::as_f64);
    if low.is_none() && high.is_none() {
        if recompute {
            o.remove("flag");
        }
        return;
    }
    let flag = if low.is_some_and(|l| value < l) {
        "low"
    } else if high.is_some_and(|h| value > h) {
        "high"
    } else {
        "normal"
    };
    o.insert("flag".into(), Value::String(flag.into()));
}

/// Orders a record's members as responses show them: `id`, the fields in
/// their declared order, then `version`, `createdAt`, `updatedAt`.
pub fn normalize(rt: ResourceType, mut body: Object) -> Object {
    let mut out = Object::new();
    if let Some(id) = body.remove("id") {
        out.insert("id".into(), id);
    }
    for field in rt.fields() {
        if let Some(v) = body.remove(field.name) {
            out.insert(field.name.into(), v);
        }
    }
    for name in ["version", "createdAt", "updatedAt"] {
        if let Some(v) = body.remove(name) {
            out.insert(name.into(), v);
        }
    }
    out.extend(body);
    out
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn check_object(fields: &[FieldSpec], body: &Object, prefix: &str) -> Result<(), ValidationError> {
    for key in body.keys() {
        if !fields.iter().any(|f| f.name == key) {
            return Err(ValidationError::new(join(prefix, key), "unknown field"));
        }
    }
    for field in fields {
        let path = join(prefix, field.name);
        match body.get(field.name) {
            None | Some(Value::Null) if field.required => {
                return Err(ValidationError::new(path, "is required"));
            }
            None | Some(Value::Null) => {}
            Some(value) => check_value(field.kind, value, &path)?,
        }
    }
    Ok(())
}

fn check_value(kind: FieldKind, value: &Value, path: &str) -> Result<(), ValidationError> {
    let err = |m: &str| Err(ValidationError::new(path, m));
    match kind {
        FieldKind::String | FieldKind::Ref(_) => match value.as_str() {
            Some("") => err("must not be empty"),
            Some(s) if s.chars().count() > MAX_STRING_CHARS => {
                err("must be at most 100000 characters")
            }
            Some(s) if s.contains('\0') => err(NUL_MESSAGE),
            Some(s) => {
                if let FieldKind::Ref(rt) = kind
                    && ResourceType::from_id(s) != Some(rt)
                {
                    return Err(ValidationError::new(
                        path,
                        format!("must be the id of a {rt} ({}_…)", rt.id_prefix()),
                    ));
                }
                Ok(())
            }
            None => err("must be a string"),
        },
        FieldKind::Date => match value.as_str() {
            Some(s) if s.len() == 10 && s.parse::<jiff::civil::Date>().is_ok() => Ok(()),
            _ => err("must be a date, YYYY-MM-DD"),
        },
        FieldKind::DateTime => match value.as_str() {
            Some(s) if crate::time::parse(s).is_some() => Ok(()),
            _ => err("must be an RFC 3339 date-time"),
        },
        FieldKind::Enum(options) => match value.as_str() {
            Some(s) if options.contains(&s) => Ok(()),
            _ => Err(ValidationError::new(
                path,
                format!("must be one of {}", options.join(", ")),
            )),
        },
        FieldKind::Phone => match value.as_str() {
            Some(s) if is_e164(s) => Ok(()),
            _ => err("must be an E.164 phone number, e.g. +15551234567"),
        },
        FieldKind::Email => match value.as_str() {
            Some(s) if is_email(s) => Ok(()),
            _ => err("must be an email address"),
        },
        FieldKind::Number => match value {
            Value::Number(_) => Ok(()),
            _ => err("must be a number"),
        },
        FieldKind::Count => match as_whole(value).filter(|n| *n >= 0.0) {
            Some(_) => Ok(()),
            None => err("must be a non-negative integer"),
        },
        FieldKind::Bool => match value {
            Value::Bool(_) => Ok(()),
            _ => err("must be true or false"),
        },
        FieldKind::NumberOrString => match value {
            Value::Number(_) => Ok(()),
            Value::String(s) if s.contains('\0') => err(NUL_MESSAGE),
            Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_STRING_CHARS => Ok(()),
            _ => err("must be a number or a non-empty string"),
        },
        FieldKind::Object(fields) => match value {
            Value::Object(o) => check_object(fields, o, path),
            _ => err("must be an object"),
        },
        FieldKind::List(fields) => match value {
            Value::Array(items) => {
                if items.len() > 1000 {
                    return err("must have at most 1000 items");
                }
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    match item {
                        Value::Object(o) => check_object(fields, o, &item_path)?,
                        _ => return Err(ValidationError::new(item_path, "must be an object")),
                    }
                }
                Ok(())
            }
            _ => err("must be a list"),
        },
    }
}

/// What [`is_email`] accepts, as an ECMA-262 pattern (with a `maxLength`
/// of 254): no `@`, white space (Unicode `White_Space`) or control
/// character in either part, and a domain holding a dot, neither first nor
/// last.
pub const EMAIL_PATTERN: &str = concat!(
    "^[^@\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+",
    "@[^@.\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
    "[^@\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*",
    "\\.",
    "[^@\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*",
    "[^@.\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]$",
);

/// A JSON number that is a whole number, also when written with a
/// fraction of zero (`3.0`): JSON Schema's `integer` and JSON's number
/// model make no difference between the two.
pub fn as_whole(value: &Value) -> Option<f64> {
    let n = value.as_f64()?;
    // `u64::MAX as f64` is 2^64, one past the largest count.
    (n.fract() == 0.0 && n.abs() < u64::MAX as f64).then_some(n)
}

/// A whole JSON number (see [`as_whole`]) as an `i64`, if it is one.
pub fn as_i64(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        as_whole(value)
            // Both bounds as f64 are ±2^63: out of range, or rounded into it.
            .filter(|n| *n > i64::MIN as f64 && *n < i64::MAX as f64)
            .map(|n| n as i64)
    })
}

/// `+` followed by 2 to 15 digits, the first not 0.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// A plain address: one `@`, a local part, and a dotted domain, no spaces,
/// at most 254 characters. [`EMAIL_PATTERN`] says the same for OpenAPI.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && s.chars().count() <= 254
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Object {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn unknown_and_nested_fields_are_named() {
        let e = check(
            ResourceType::Patient,
            &obj(json!({"firstName": "A", "lastName": "B", "nickname": "x"})),
        )
        .unwrap_err();
        assert_eq!(e.field, "nickname");
        let e = check(
            ResourceType::Patient,
            &obj(json!({"firstName": "A", "lastName": "B", "address": {"zip": "1"}})),
        )
        .unwrap_err();
        assert_eq!(e.field, "address.zip");
        let e = check(
            ResourceType::Encounter,
            &obj(json!({"patientId": "pat_1", "serviceCodes": [{"system": "CPT"}]})),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "serviceCodes[0].code: is required");
    }

    #[test]
    fn messages_never_repeat_the_value() {
        let e = check(
            ResourceType::Patient,
            &obj(json!({"firstName": "A", "lastName": "B", "phone": "555-SECRET"})),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("SECRET"));
    }

    #[test]
    fn flags_follow_the_reference_range() {
        let mut o = obj(json!({"value": 7.5, "referenceRange": {"low": 4, "high": 6}}));
        compute_flags(ResourceType::Observation, &mut o, false);
        assert_eq!(o["flag"], "high");
        let mut o = obj(json!({"value": 3, "referenceRange": {"low": 4}}));
        compute_flags(ResourceType::Observation, &mut o, false);
        assert_eq!(o["flag"], "low");
        let mut o =
            obj(json!({"value": 5, "referenceRange": {"low": 4, "high": 6}, "flag": "critical"}));
        compute_flags(ResourceType::Observation, &mut o, false);
        assert_eq!(o["flag"], "critical");
        let mut o = obj(json!({"value": "positive"}));
        compute_flags(ResourceType::Observation, &mut o, false);
        assert!(!o.contains_key("flag"));
    }

    #[test]
    fn phones_and_emails() {
        assert!(is_e164("+15551234567"));
        assert!(!is_e164("15551234567"));
        assert!(!is_e164("+0555"));
        assert!(is_email("a@b.co"));
        assert!(!is_email("a@b"));
        assert!(!is_email("a b@c.d"));
    }
}
