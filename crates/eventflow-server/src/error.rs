//! The one error type that reaches clients, and its one `IntoResponse`:
//! `{"error": {"type", "message", "field"?, "index"?}}` with the right status
//! (docs/design.md §3). Anything unexpected is logged and becomes an opaque 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use eventflow_model::ValidationError;
use eventflow_store::StoreError;
use serde::Serialize;

/// The machine-readable kind of an error: the `type` of every error body.
/// Clients branch on it; the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 422: a field, header or query parameter is missing, unknown or malformed; `field` names it.
    ValidationError,
    /// 400: the request could not be read.
    InvalidRequest,
    /// 400: the body is not JSON, or nests too deeply.
    MalformedJson,
    /// 400: a JSON object names a member twice.
    DuplicateKey,
    /// 401: no API key, or not a live one.
    AuthenticationError,
    /// 403: the key lacks the scope the operation needs.
    Forbidden,
    /// 404: no such resource in this tenant.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 409: the change conflicts with the current state.
    Conflict,
    /// 409: the `Idempotency-Key` was used with another request.
    IdempotencyConflict,
    /// 412: `If-Match` named another version.
    PreconditionFailed,
    /// 413: the body or the record is over its limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 408: the request was not received in time.
    RequestTimeout,
    /// 429: too many requests or failed keys; `Retry-After` says when to retry.
    RateLimited,
    /// 429: the key has as many open streams as it may.
    TooManyStreams,
    /// 503: the server is at a limit for a moment; retry shortly.
    Busy,
    /// 503: the server is shutting down or its database is unreachable.
    Unavailable,
    /// 500: an internal failure; the server log has the details.
    InternalError,
}

/// An error as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Machine-readable kind.
    pub kind: ErrorKind,
    /// One sentence for a person. Never holds a field value or a secret.
    pub message: String,
    /// The field (or header, or query parameter) at fault.
    pub field: Option<String>,
    /// For a failed batch: the index of the failing operation.
    pub index: Option<usize>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            field: None,
            index: None,
            retry_after: None,
        }
    }

    /// 429 for a client address that has failed authentication too often.
    /// The same error, telling the client to try again in `secs` seconds.
    pub fn retrying_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn too_many_attempts(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::RateLimited,
            format!(
                "too many failed API keys or sign-ins from this address; try again in {retry_after} s"
            ),
        );
        e.retry_after = Some(retry_after);
        e
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400: the request could not be read.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest, message)
    }

    /// 422 naming a field: `"{field}: {message}"`.
    pub fn invalid(field: &str, message: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::ValidationError,
            format!("{field}: {message}"),
        )
        .with_field(field)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::AuthenticationError,
            "missing or invalid API key: send Authorization: Bearer <api key>",
        )
    }

    /// The key is valid but lacks `scope`.
    pub fn forbidden(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorKind::Forbidden,
            format!("this key lacks the scope {scope}"),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::InternalError,
            "internal error; the server log has the details",
        )
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::invalid(&e.field, &e.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Validation(v) => v.into(),
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::TooLarge(m) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::PayloadTooLarge, m)
            }
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, ErrorKind::Conflict, m),
            StoreError::IdempotencyMismatch => ApiError::new(
                StatusCode::CONFLICT,
                ErrorKind::IdempotencyConflict,
                e.to_string(),
            )
            .with_field("Idempotency-Key"),
            StoreError::PreconditionFailed { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                ErrorKind::PreconditionFailed,
                e.to_string(),
            )
            .with_field("If-Match"),
            StoreError::Batch { index, source } => {
                let mut inner = ApiError::from(*source);
                inner.message = format!("operations[{index}]: {}", inner.message);
                inner.index = Some(index);
                inner
            }
            StoreError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Unavailable,
                "the server is shutting down",
            ),
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::internal()
            }
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable kind.
    #[serde(rename = "type")]
    pub kind: ErrorKind,
    /// One sentence for a person; never holds a submitted value.
    #[schema(example = "start: must be an RFC 3339 date-time")]
    pub message: String,
    /// The field, header or query parameter at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a failed batch: the index of the failing operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind,
                message: self.message,
                field: self.field,
                index: self.index,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
