//! What the automations did: workflows with their load status, recent
//! runs, the notification outbox and pending timers.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use super::{Portal, see_other};

pub(super) async fn automations(State(p): State<Portal>, headers: HeaderMap) -> Response {
    let me = signed_in!(p, headers);
    let workflows = tryp!(p.get(&me, "/v1/workflows").await);
    let runs = tryp!(p.get(&me, "/v1/workflow-runs?limit=50").await);
    let outbox = tryp!(p.get(&me, "/v1/notifications?limit=50").await);
    let timers = tryp!(p.get(&me, "/v1/timers?limit=200").await);
    p.render(
        "automations.html",
        Some(&me),
        json!({
            "title": "Automations", "nav": "automations",
            "workflows": workflows["data"], "runs": runs["data"],
            "outbox": outbox["data"], "timers": timers["data"],
        }),
    )
}
