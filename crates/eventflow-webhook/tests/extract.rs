//! The axum extractor: a signed delivery reaches the handler parsed; a
//! forged, stale or unsigned one is refused before it.
#![cfg(feature = "axum")]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use eventflow_webhook::extract::VerifiedEvent;
use eventflow_webhook::typed::EventKind;
use eventflow_webhook::{HmacSecret, Signer, Verifier, sign_headers};
use tower::ServiceExt;

async fn hook(VerifiedEvent(event): VerifiedEvent) -> String {
    match event.kind {
        EventKind::AppointmentCreated(Some(appt)) => format!("booked {}", appt.id),
        other => format!("other {other:?}"),
    }
}

const BODY: &str = r#"{"id":"evt_1","type":"appointment.created","sequence":1,"createdAt":"2026-11-29T17:00:00.000Z","tenantId":"ten_1","resource":{"type":"appointment","id":"apt_1","version":1},"data":{"id":"apt_1","version":1,"status":"booked"}}"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs() as i64
}

async fn send(app: Router, ts: i64, secret: &HmacSecret, body: &str) -> (StatusCode, String) {
    let signed = sign_headers(
        &[Signer::Hmac(secret.clone())],
        "evt_1",
        ts,
        body.as_bytes(),
    );
    let mut req = Request::post("/hook");
    for (k, v) in signed.pairs() {
        req = req.header(k, v);
    }
    let resp = app
        .oneshot(
            req.body(Body::from(body.to_string()))
                .expect("a well-formed request"),
        )
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("the response body, under 1 MiB");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn the_extractor_verifies_then_parses() {
    let secret = HmacSecret::generate();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(Verifier::new().with_secret(secret.clone()));
    assert_eq!(
        send(app.clone(), now(), &secret, BODY).await,
        (StatusCode::OK, "booked apt_1".to_string())
    );
    let (status, _) = send(app.clone(), now(), &HmacSecret::generate(), BODY).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another secret");
    let (status, _) = send(app.clone(), now() - 3600, &secret, BODY).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an hour old");
    let (status, msg) = send(app.clone(), now(), &secret, "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{msg}");
    let resp = app
        .oneshot(Request::post("/hook").body(Body::from(BODY)).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "unsigned");
}

#[tokio::test]
async fn the_extractor_answers_a_signed_challenge_itself_and_refuses_a_forged_one() {
    let secret = HmacSecret::generate();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(Verifier::new().with_secret(secret.clone()));
    let challenge = r#"{"type":"endpoint.verification","endpointId":"ep_1","challenge":"5f2a"}"#;
    let (status, body) = send(app.clone(), now(), &secret, challenge).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"challenge":"5f2a"}"#, "the handler never saw it");
    // Signed with another secret, it proves nothing: refused like any forgery.
    let (status, body) = send(app.clone(), now(), &HmacSecret::generate(), challenge).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!body.contains("5f2a"), "{body}");
}
