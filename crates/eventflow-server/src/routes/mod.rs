//! The routes, one module per area, merged here. Look for the route of
//! anything in seconds: records in `records`, the event log in `events`.

pub mod audit;
pub mod automations;
pub mod batch;
pub mod clinics;
pub mod disclosures;
pub mod endpoints;
pub mod events;
pub mod keys;
pub mod ops;
pub mod portal_links;
pub mod records;
pub mod settings;
pub mod workflows;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode};
use axum::middleware;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::error::ApiError;
use crate::{AppState, openapi, telemetry};

/// Largest request body on most routes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The whole application router: the API, and the portal on top of it.
pub fn router(state: AppState) -> Router {
    let api = api_router(state.clone());
    let portal = crate::portal::router(state, api.clone());
    let request_id = HeaderName::from_static("x-request-id");
    api.merge(
        portal
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(middleware::from_fn(telemetry::track))
            .layer(PropagateRequestIdLayer::new(request_id.clone()))
            .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid)),
    )
}

/// The API's routes (everything under `/v1`, operations, documentation).
fn api_router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(records::router())
        .merge(batch::router(state.config.limits.max_batch_bytes))
        .merge(endpoints::router())
        .merge(disclosures::router())
        .merge(settings::router())
        .merge(portal_links::router())
        .merge(events::router())
        .merge(audit::router())
        .merge(keys::router())
        .merge(clinics::router())
        .merge(ops::router())
        .merge(workflows::router())
        .merge(automations::router())
        .merge(openapi::router())
        .merge(crate::fhir::router())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authorize,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(crate::fhir::outcomes))
        .layer(middleware::from_fn(telemetry::track))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; GET /openapi.json lists them")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        crate::error::ErrorKind::MethodNotAllowed,
        "this route does not accept that method",
    )
}
