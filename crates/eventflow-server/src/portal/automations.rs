//! What the automations did: workflows with their load status, recent
//! runs, the notification outbox and pending timers.

use axum::extract::State;
use serde_json::json;

use super::session::Me;
use super::{Page, Portal};

pub(super) async fn automations(State(p): State<Portal>, me: Me) -> Page {
    if let Some(r) = p.endpoints_only(&me) {
        return Err(r);
    }
    let workflows = p.get(&me, "/v1/workflows").await?;
    let runs = p.get(&me, "/v1/workflow-runs?limit=50").await?;
    let outbox = p.get(&me, "/v1/notifications?limit=50").await?;
    let timers = p.get(&me, "/v1/timers?limit=200").await?;
    Ok(p.render(
        "automations.html",
        Some(&me),
        json!({
            "title": "Automations", "nav": "automations",
            "workflows": workflows["data"], "runs": runs["data"],
            "outbox": outbox["data"], "timers": timers["data"],
        }),
    ))
}
