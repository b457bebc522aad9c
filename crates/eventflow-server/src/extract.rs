//! Request extractors whose rejections use the API's error shape: a JSON
//! body (400 malformed, 413 too large, 415 not JSON) and query parameters
//! (422 naming the parameter).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde_json::Value;

use crate::error::ApiError;

/// A JSON request body, parsed, with the raw bytes kept for idempotency
/// fingerprints.
#[derive(Debug)]
pub struct JsonBody {
    pub value: Value,
    pub raw: Bytes,
    /// Held while a large body is read, parsed and handled.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl JsonBody {
    /// The body as a JSON object; 422 naming `body` otherwise.
    pub fn object(&self) -> Result<&serde_json::Map<String, Value>, ApiError> {
        self.value
            .as_object()
            .ok_or_else(|| ApiError::invalid("body", "must be a JSON object"))
    }

    /// [`JsonBody::object`], holding no member but `fields`: 422 naming the
    /// first other one.
    pub fn object_of(&self, fields: &[&str]) -> Result<&serde_json::Map<String, Value>, ApiError> {
        let object = self.object()?;
        match object.keys().find(|k| !fields.contains(&k.as_str())) {
            Some(k) => Err(ApiError::invalid(
                k,
                &format!("unknown field; this body has {}", fields.join(", ")),
            )),
            None => Ok(object),
        }
    }
}

/// A body larger than this (or of unknown length) waits for one of the
/// `limits.large_bodies` permits before it is read.
pub const LARGE_BODY_BYTES: u64 = 1024 * 1024;

/// The longest a large body waits for a permit before the request is a 503.
pub const LARGE_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The permits to read a large body, and how many requests wait for one.
#[derive(Debug)]
pub struct LargeBodies {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
}

impl LargeBodies {
    pub fn new(permits: usize) -> LargeBodies {
        LargeBodies {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(permits)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Requests waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Permits free now.
    pub fn free(&self) -> usize {
        self.permits.available_permits()
    }

    /// A permit, waiting at most [`LARGE_BODY_WAIT`].
    async fn acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        use std::sync::atomic::Ordering::Relaxed;
        /// Counts a waiting request until it has a permit or goes.
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Relaxed);
            }
        }
        self.waiting.fetch_add(1, Relaxed);
        let _waiting = Waiting(&self.waiting);
        tokio::time::timeout(LARGE_BODY_WAIT, self.permits.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

impl FromRequest<crate::AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &crate::AppState) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let mime = ct.split(';').next().unwrap_or("").trim();
            if !(mime == "application/json" || mime.ends_with("+json")) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    crate::error::ErrorKind::UnsupportedMediaType,
                    "Content-Type must be application/json (or application/merge-patch+json for PATCH)",
                )
                .with_field("Content-Type"));
            }
        }
        let length = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // Few large bodies at once: each takes memory while it is parsed and
        // written, and a parsed body takes several times its length.
        let permit = if length.is_none_or(|n| n > LARGE_BODY_BYTES) {
            Some(state.large_bodies.acquire().await.ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    crate::error::ErrorKind::Busy,
                    "too many large request bodies are being read; try again shortly",
                )
                .retrying_after(5)
            })?)
        } else {
            None
        };
        let raw = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    crate::error::ErrorKind::PayloadTooLarge,
                    "the request body is larger than this route accepts",
                )
            } else {
                ApiError::bad_request("the request body could not be read")
            }
        })?;
        let value = parse_json(&raw)?;
        Ok(JsonBody {
            value,
            raw,
            _permit: permit,
        })
    }
}

/// A body that may be left out: no body at all (no `Content-Type` and no
/// bytes) is `None`; anything else is read as a [`JsonBody`].
impl axum::extract::OptionalFromRequest<crate::AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &crate::AppState) -> Result<Option<Self>, ApiError> {
        let length = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let chunked = req
            .headers()
            .contains_key(axum::http::header::TRANSFER_ENCODING);
        if !req.headers().contains_key(CONTENT_TYPE) && !chunked && length.unwrap_or(0) == 0 {
            return Ok(None);
        }
        <JsonBody as FromRequest<crate::AppState>>::from_request(req, state)
            .await
            .map(Some)
    }
}

/// Parses a JSON body, refusing an object that has the same key twice
/// (`{"a": 1, "a": 2}`): parsers disagree on which one wins, so a proxy or
/// a receiver could read another record than the one stored. A 400 names
/// the key; a body that is not JSON is a 400 with line and column. A string
/// holding a NUL character is a 422 naming where it is (noticed while
/// parsing; only then is the value searched for its path).
pub fn parse_json(raw: &[u8]) -> Result<Value, ApiError> {
    let state = ParseState {
        duplicate: std::cell::RefCell::new(None),
        values_left: std::cell::Cell::new(MAX_JSON_VALUES),
        too_many: std::cell::Cell::new(false),
        nul: std::cell::Cell::new(false),
    };
    let mut de = serde_json::Deserializer::from_slice(raw);
    let parsed = serde::de::DeserializeSeed::deserialize(UniqueKeys(&state), &mut de)
        .and_then(|v| de.end().map(|()| v));
    let value = parsed.map_err(|e| match state.duplicate.take() {
        None if state.too_many.get() => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            crate::error::ErrorKind::PayloadTooLarge,
            format!("the body holds more than {MAX_JSON_VALUES} JSON values"),
        ),
        Some(key) => {
            // A key is a field name, not a value; long ones are cut.
            let shown: String = key.chars().take(64).collect();
            ApiError::new(
                StatusCode::BAD_REQUEST,
                crate::error::ErrorKind::DuplicateKey,
                format!(
                    "the key {shown:?} appears twice in one object (line {}, column {}); send each key once",
                    e.line(),
                    e.column()
                ),
            )
            .with_field(shown)
        }
        // serde_json's message gives line and column, never the content.
        None => ApiError::new(
            StatusCode::BAD_REQUEST,
            crate::error::ErrorKind::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        ),
    })?;
    if state.nul.get()
        && let Some(path) = eventflow_model::validate::find_nul(&value)
    {
        let path = if path.is_empty() { "body".into() } else { path };
        let mut e = ApiError::invalid(&path, eventflow_model::validate::NUL_MESSAGE);
        // In a batch, the operation at fault is named as for any error.
        e.index = path
            .strip_prefix("operations[")
            .and_then(|rest| rest.split(']').next())
            .and_then(|n| n.parse().ok());
        return Err(e);
    }
    Ok(value)
}

/// Most JSON values (numbers, strings, members…) in one body: a parsed
/// value takes tens of bytes, whatever its text took (`[1,1,…]`), so the
/// count bounds a body's memory where its length alone does not.
pub const MAX_JSON_VALUES: u64 = 500_000;

/// What a parse found besides the value.
struct ParseState {
    /// The key found twice.
    duplicate: std::cell::RefCell<Option<String>>,
    /// Values the body may still hold.
    values_left: std::cell::Cell<u64>,
    /// Set when the body held more than [`MAX_JSON_VALUES`].
    too_many: std::cell::Cell<bool>,
    /// Set when a string or a key holds a NUL character.
    nul: std::cell::Cell<bool>,
}

/// Deserializes a [`Value`] like serde_json does, but fails on a repeated
/// key in any object, at any depth, and records that key, and on a body of
/// more than [`MAX_JSON_VALUES`] values. Depth is bounded by serde_json's
/// recursion limit.
#[derive(Clone, Copy)]
struct UniqueKeys<'a>(&'a ParseState);

impl UniqueKeys<'_> {
    fn note_nul(&self, s: &str) {
        if s.contains('\0') {
            self.0.nul.set(true);
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.values_left.get() == 0 {
            self.0.too_many.set(true);
            return Err(serde::de::Error::custom("too many values"));
        }
        self.0.values_left.set(self.0.values_left.get() - 1);
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        self.note_nul(v);
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        self.note_nul(&v);
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.note_nul(&key);
            if object.contains_key(&key) {
                let e = serde::de::Error::custom("duplicate key");
                *self.0.duplicate.borrow_mut() = Some(key);
                return Err(e);
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The `{id}` of a record or event path. An id that cannot be one (not
/// UTF-8, a control character, too long: see
/// [`is_well_formed`](eventflow_model::id::is_well_formed)) is a 404 in the
/// API's error shape, and never reaches the database.
#[derive(Debug)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) if eventflow_model::id::is_well_formed(&id) => Ok(PathId(id)),
            _ => Err(ApiError::not_found("no record with that id")),
        }
    }
}

/// Query parameters as a map; each route checks the names it knows and
/// rejects the rest.
#[derive(Debug, Default)]
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("the query string could not be read"))?;
        let mut nul: Vec<&String> = map
            .iter()
            .filter(|(k, v)| k.contains('\0') || v.contains('\0'))
            .map(|(k, _)| k)
            .collect();
        nul.sort();
        if let Some(name) = nul.first() {
            return Err(ApiError::invalid(
                &name.replace('\0', "\\u0000"),
                eventflow_model::validate::NUL_MESSAGE,
            ));
        }
        Ok(Params(map))
    }
}

impl Params {
    /// Fails with 422 on any parameter not in `known`, and on a known one
    /// given with no value (`?updatedSince=`): an empty value is a mistake
    /// in the caller's URL, not a request for the default.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        self.only_allowing_empty(known, &[])
    }

    /// As [`only`](Self::only), but the parameters in `may_be_empty` may
    /// also be given empty (where an empty value means something, such as
    /// the exact key of `/v1/timers?key=`).
    pub fn only_allowing_empty(
        &self,
        known: &[&str],
        may_be_empty: &[&str],
    ) -> Result<(), ApiError> {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        for name in names {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::invalid(
                    name,
                    &format!(
                        "unknown query parameter; this route takes {}",
                        known.join(", ")
                    ),
                ));
            }
            if self.0[name].is_empty() && !may_be_empty.contains(&name.as_str()) {
                return Err(ApiError::invalid(
                    name,
                    "must not be empty; leave the parameter out for the default",
                ));
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// An integer parameter within `min..=max`, or `default` when absent.
    pub fn int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            // Digits with an optional minus: `+5` is not an integer here.
            Some(s) if s.starts_with('+') => Err(ApiError::invalid(
                name,
                &format!("must be an integer from {min} to {max}"),
            )),
            Some(s) => match s.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::invalid(
                    name,
                    &format!("must be an integer from {min} to {max}"),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_repeated_key_is_refused_naming_it_at_any_depth() {
        for (body, key) in [
            (r#"{"firstName": "a", "firstName": "c"}"#, "firstName"),
            (r#"{"a": {"b": 1, "c": {"d": 1, "d": 1}}}"#, "d"),
            (r#"[{"x": 1}, {"y": 1, "y": 2}]"#, "y"),
            (r#"{"operations": [{"body": {"k": [], "k": null}}]}"#, "k"),
        ] {
            let e = parse_json(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.kind, crate::error::ErrorKind::DuplicateKey);
            assert_eq!(e.field.as_deref(), Some(key), "{body}");
        }
    }

    #[test]
    fn json_without_repeats_parses_as_serde_json_does() {
        for body in [
            r#"{"a": 1, "b": [1, -2, 3.5, 1e300, "x", null, true, {"a": 1}], "c": {}}"#,
            r#"[]"#,
            r#""text \u00e9""#,
            r#"18446744073709551615"#,
            r#"{"a": {"a": {"a": 1}}}"#,
        ] {
            let want: Value = serde_json::from_str(body).unwrap();
            assert_eq!(parse_json(body.as_bytes()).unwrap(), want, "{body}");
        }
        // Keys keep their order.
        let v = parse_json(br#"{"z": 1, "a": 2}"#).unwrap();
        assert_eq!(
            v.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["z", "a"]
        );
        assert_eq!(parse_json(b"{\"a\":1}").unwrap(), json!({"a": 1}));
    }

    #[test]
    fn malformed_or_too_deep_json_is_a_400_not_a_crash() {
        for body in [&b"{"[..], b"{\"a\":1} x", b"", b"[1,]"] {
            let e = parse_json(body).unwrap_err();
            assert_eq!(e.kind, crate::error::ErrorKind::MalformedJson);
        }
        let deep = "[".repeat(100_000);
        assert_eq!(
            parse_json(deep.as_bytes()).unwrap_err().kind,
            crate::error::ErrorKind::MalformedJson
        );
    }
}
