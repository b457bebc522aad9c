//! An axum extractor (feature `axum`): [`VerifiedEvent`] verifies a
//! delivery's signature against the [`Verifier`] in the router's state and
//! parses it into a [`WebhookEvent`]. A bad or missing signature is a 401, a
//! body that is not an event a 400; the handler never sees either. A
//! signed verification challenge is answered by the extractor itself
//! (`200 {"challenge": …}`), so the endpoint verifies without the handler
//! knowing.
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use eventflow_webhook::{HmacSecret, Verifier};
//! use eventflow_webhook::extract::VerifiedEvent;
//!
//! async fn hook(VerifiedEvent(event): VerifiedEvent) -> &'static str {
//!     println!("{} {}", event.event_type, event.id);
//!     "ok"
//! }
//!
//! # fn app(secret: &str) -> Router {
//! let verifier = Verifier::new().with_secret(HmacSecret::parse(secret).unwrap());
//! Router::new().route("/webhooks", post(hook)).with_state(verifier)
//! # }
//! ```

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;

use crate::Verifier;
use crate::typed::{WebhookEvent, parse};

/// A delivery whose signature checked out, parsed.
#[derive(Debug, Clone)]
pub struct VerifiedEvent(pub WebhookEvent);

impl<S> FromRequest<S> for VerifiedEvent
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = (StatusCode, String);

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = Bytes::from_request(req, state).await.map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                "could not read the body".to_string(),
            )
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        verifier
            .verify(&headers, &body, now)
            .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
        if let Some(answer) = crate::challenge_answer(&body) {
            return Err((StatusCode::OK, answer));
        }
        parse(&body)
            .map(VerifiedEvent)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
    }
}
