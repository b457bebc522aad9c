//! The event log, newest first and filtered, and one event with the
//! deliveries it made.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::session::Me;
use super::{Page, Portal, api_message, enc};

pub(super) async fn events(
    State(p): State<Portal>,
    Query(q): Query<BTreeMap<String, String>>,
    me: Me,
) -> Response {
    if let Some(r) = p.endpoints_only(&me) {
        return r;
    }
    const PAGE: i64 = 50;
    let types = q
        .get("types")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let record = q
        .get("record")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    // Newest first: the last PAGE events before `before` (default: the end).
    let before = q.get("before").and_then(|b| b.parse::<i64>().ok());
    let mut filter = String::new();
    if let Some(t) = &types {
        filter.push_str(&format!("&types={}", enc(t)));
    }
    if let Some(r) = &record {
        filter.push_str(&format!("&resourceId={}", enc(r)));
    }
    // Walk back from `before` (default: past the latest) in windows of
    // sequences, keeping the newest PAGE that match. An organisation reads
    // its network's log, numbered by networkSequence.
    let network = me.principal.tenant_id.is_organisation();
    let latest = match p.app.store.latest_sequence(&me.principal.tenant_id).await {
        Ok(l) => l,
        Err(_) => {
            return p.error_page(
                Some(&me),
                StatusCode::SERVICE_UNAVAILABLE,
                "the event log could not be read",
            );
        }
    };
    let mut hi = before.unwrap_or(latest + 1).min(latest + 1);
    let mut window: Vec<Value> = Vec::new();
    const STEP: i64 = 1000;
    // At most 20 windows (20,000 sequences) per page view; "Older" goes on.
    for _ in 0..20 {
        if hi <= 1 || window.len() >= PAGE as usize {
            break;
        }
        let lo = (hi - 1 - STEP).max(0);
        let (status, body) = p
            .call(
                &me,
                Method::GET,
                &format!("/v1/events?after={lo}&limit=1000{filter}"),
                None,
            )
            .await;
        if !status.is_success() {
            return p.render(
                "events.html",
                Some(&me),
                json!({"title": "Events", "nav": "events", "events": [], "types": types, "record": record,
                       "error": api_message(&body)}),
            );
        }
        let mut found: Vec<Value> = body["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| number(e, network).is_some_and(|s| s < hi))
            .collect();
        found.reverse();
        window.extend(found);
        hi = lo + 1;
    }
    window.truncate(PAGE as usize);
    let list = window;
    let older = if list.len() == PAGE as usize {
        list.last().and_then(|e| number(e, network))
    } else {
        (hi > 1).then_some(hi)
    };
    p.render(
        "events.html",
        Some(&me),
        json!({"title": "Events", "nav": "events", "events": list, "types": types, "record": record,
               "older": older, "filter": filter}),
    )
}

/// An event's number in the log the page reads: an organisation's is its
/// network's (`networkSequence`), a clinic's its own (`sequence`).
fn number(event: &Value, network: bool) -> Option<i64> {
    let field = if network {
        "networkSequence"
    } else {
        "sequence"
    };
    event[field].as_i64()
}

pub(super) async fn event(State(p): State<Portal>, Path(id): Path<String>, me: Me) -> Page {
    if let Some(r) = p.endpoints_only(&me) {
        return Err(r);
    }
    let id = enc(&id);
    let e = p.get(&me, &format!("/v1/events/{id}")).await?;
    let deliveries = p.get(&me, &format!("/v1/events/{id}/deliveries")).await?;
    let endpoints = p.get(&me, "/v1/endpoints").await?;
    let urls: HashMap<String, Value> = endpoints["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ep| Some((ep["id"].as_str()?.to_string(), ep["url"].clone())))
        .collect();
    let rows: Vec<Value> = deliveries["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let url = d["endpointId"]
                .as_str()
                .and_then(|i| urls.get(i))
                .cloned()
                .unwrap_or(json!("(deleted endpoint)"));
            json!({"d": d, "url": url})
        })
        .collect();
    let pretty = serde_json::to_string_pretty(&e).unwrap_or_default();
    Ok(p.render(
        "event.html",
        Some(&me),
        json!({"title": e["type"], "nav": "events", "e": e, "json": pretty, "deliveries": rows}),
    ))
}
