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
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let mime = ct.split(';').next().unwrap_or("").trim();
            if !(mime == "application/json" || mime.ends_with("+json")) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "Content-Type must be application/json (or application/merge-patch+json for PATCH)",
                )
                .with_field("Content-Type"));
            }
        }
        let raw = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than this route accepts",
                )
            } else {
                ApiError::bad_request("the request body could not be read")
            }
        })?;
        let value = serde_json::from_slice(&raw).map_err(|e| {
            // serde_json's message gives line and column, never the content.
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {}", e),
            )
        })?;
        if let Some(path) = eventflow_model::validate::find_nul(&value) {
            let path = if path.is_empty() { "body".into() } else { path };
            return Err(ApiError::invalid(
                &path,
                eventflow_model::validate::NUL_MESSAGE,
            ));
        }
        Ok(JsonBody { value, raw })
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
    /// Fails with 422 on any parameter not in `known`.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
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
