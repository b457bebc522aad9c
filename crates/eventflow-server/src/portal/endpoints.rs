//! Webhook endpoints: the list, the form to create or edit one, its page
//! with deliveries and a chart, and its buttons (delete, rotate the secret,
//! test, replay, enable or disable, retry a delivery), plus the live check
//! of a CEL filter.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::session::Me;
use super::{Portal, api_message, chart, enc, field, form, secure, see_other};

fn state_of(ep: &Value) -> &'static str {
    if ep["disabled"] == true {
        "disabled"
    } else if ep["failureStreak"].as_i64().unwrap_or(0) > 0 {
        "failing"
    } else {
        "enabled"
    }
}

/// Succeeded / (succeeded + failed) among the endpoint's last 100 deliveries.
fn success_rate(deliveries: &[Value]) -> Option<u32> {
    let done: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["status"] != "pending")
        .collect();
    if done.is_empty() {
        return None;
    }
    let ok = done.iter().filter(|d| d["status"] == "succeeded").count();
    Some((ok * 100 / done.len()) as u32)
}

pub(super) async fn endpoints(
    State(p): State<Portal>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let me = signed_in!(p, headers);
    let list = tryp!(p.get(&me, "/v1/endpoints").await);
    let mut rows = Vec::new();
    for (n, ep) in list["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let id = ep["id"].as_str().unwrap_or_default().to_string();
        // Statistics for the first 100 endpoints (one API call each); an
        // endpoint deleted meanwhile just shows none.
        let deliveries = if n < 100 {
            let (status, d) = p
                .call(
                    &me,
                    Method::GET,
                    &format!("/v1/endpoints/{}/deliveries?limit=100", enc(&id)),
                    None,
                )
                .await;
            if status.is_success() {
                d["data"].as_array().cloned().unwrap_or_default()
            } else {
                Vec::new()
            }
        } else {
            Vec::new()
        };
        rows.push(json!({
            "endpoint": ep,
            "state": state_of(&ep),
            "rate": success_rate(&deliveries),
            "pending": deliveries.iter().filter(|d| d["status"] == "pending").count(),
        }));
    }
    p.render(
        "endpoints.html",
        Some(&me),
        json!({"title": "Endpoints", "nav": "endpoints", "rows": rows, "notice": notice(&q)}),
    )
}

/// The message of a `notice` after a redirect (codes only: a link cannot
/// put words of its own on the page).
fn notice(q: &BTreeMap<String, String>) -> Option<String> {
    let n = q.get("n").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let code = q.get("code").and_then(|c| c.parse::<u16>().ok());
    Some(match q.get("notice")?.as_str() {
        "created" => "Endpoint created. Its signing secret is below.".into(),
        "updated" => "Endpoint saved.".into(),
        "deleted" => "Endpoint deleted.".into(),
        "rotated" => "Secret rotated: the old one keeps signing for 24 hours.".into(),
        "sent" => match code {
            Some(c) => format!("Test event sent: the endpoint answered {c}."),
            None => "Test event sent: the endpoint did not answer (see the attempt below).".into(),
        },
        "replayed" => format!("{n} events queued again."),
        "replaying" => {
            format!("Replay started: {n} events queued so far; the rest follow in the background.")
        }
        "replay-start" => {
            "Choose where the replay starts: after a sequence number, or since a time.".into()
        }
        "retried" => "Delivery queued for another attempt now.".into(),
        "enabled" => "Endpoint enabled.".into(),
        "disabled" => "Endpoint disabled: deliveries wait until it is enabled.".into(),
        _ => return None,
    })
}

/// The event types the key may see (an endpoint of a key may send only
/// those), with their descriptions.
fn visible_types(me: &Me) -> Vec<Value> {
    eventflow_model::event::all_types()
        .filter(|(t, _)| me.principal.scopes.sees(t))
        .map(|(t, d)| json!({"type": t, "description": d}))
        .collect()
}

/// Event types grouped by record type, for the checkboxes.
async fn type_groups(_p: &Portal, me: &Me, chosen: &[String]) -> Result<Vec<Value>, Response> {
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for t in visible_types(me) {
        let name = t["type"].as_str().unwrap_or_default().to_string();
        let group = name.split('.').next().unwrap_or_default().to_string();
        groups.entry(group).or_default().push(json!({
            "type": name,
            "description": t["description"],
            "checked": chosen.contains(&name),
        }));
    }
    Ok(groups
        .into_iter()
        .map(|(g, types)| {
            let glob = format!("{g}.*");
            json!({"group": g, "glob": glob, "all": chosen.contains(&glob), "types": types})
        })
        .collect())
}

fn endpoint_body(f: &[(String, String)]) -> Value {
    let types: Vec<&str> = f
        .iter()
        .filter(|(k, _)| k == "types")
        .map(|(_, v)| v.as_str())
        .collect();
    // A ticked "all of x.*" covers its group's types.
    let globs: Vec<&str> = types
        .iter()
        .copied()
        .filter(|t| t.ends_with(".*"))
        .collect();
    let types: Vec<&str> = types
        .into_iter()
        .filter(|t| {
            t.ends_with(".*") || !globs.iter().any(|g| t.starts_with(g.trim_end_matches('*')))
        })
        .collect();
    let opt = |name: &str| {
        let v = field(f, name);
        if v.is_empty() { Value::Null } else { json!(v) }
    };
    let rate = field(f, "rate_limit");
    json!({
        "url": field(f, "url"),
        "description": opt("description"),
        "eventTypes": types,
        "filter": opt("filter"),
        "payload": if field(f, "payload") == "thin" { "thin" } else { "full" },
        "ordering": if field(f, "ordering") == "resource" { "resource" } else { "none" },
        "rateLimit": if rate.is_empty() { Value::Null } else { rate.parse::<u64>().map(Value::from).unwrap_or(json!(rate)) },
    })
}

async fn endpoint_form(
    p: &Portal,
    me: &Me,
    ep: Value,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let chosen: Vec<String> = ep["eventTypes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let groups = tryp!(type_groups(p, me, &chosen).await);
    let editing = ep["id"].is_string();
    let mut r = p.render(
        "endpoint_form.html",
        Some(me),
        json!({
            "title": if editing { "Edit endpoint" } else { "New endpoint" },
            "nav": "endpoints", "ep": ep, "groups": groups, "error": error, "editing": editing,
        }),
    );
    *r.status_mut() = status;
    r
}

pub(super) async fn new_endpoint(State(p): State<Portal>, headers: HeaderMap) -> Response {
    let me = signed_in!(p, headers);
    endpoint_form(
        &p,
        &me,
        json!({"payload": "full", "ordering": "none"}),
        None,
        StatusCode::OK,
    )
    .await
}

pub(super) async fn create_endpoint(
    State(p): State<Portal>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    save_endpoint(&p, &me, None, endpoint_body(&f)).await
}

/// Creates (`id` none) or updates an endpoint from the form, then goes to
/// its page; on the API's refusal, shows the form again with the reason.
async fn save_endpoint(p: &Portal, me: &Me, id: Option<&str>, input: Value) -> Response {
    let (method, path) = match id {
        None => (Method::POST, "/v1/endpoints".to_string()),
        Some(id) => (Method::PATCH, format!("/v1/endpoints/{}", enc(id))),
    };
    let (status, out) = p.call(me, method, &path, Some(input.clone())).await;
    if status.is_success() {
        let saved = out["id"].as_str().unwrap_or_default();
        let notice = if id.is_none() {
            "created&reveal=1"
        } else {
            "updated"
        };
        return see_other(&format!("/portal/endpoints/{}?notice={notice}", enc(saved)));
    }
    let mut ep = input;
    if let Some(id) = id {
        ep["id"] = json!(id);
    }
    endpoint_form(
        p,
        me,
        ep,
        Some(api_message(&out)),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

pub(super) async fn edit_endpoint(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let me = signed_in!(p, headers);
    let ep = tryp!(p.get(&me, &format!("/v1/endpoints/{}", enc(&id))).await);
    endpoint_form(&p, &me, ep, None, StatusCode::OK).await
}

pub(super) async fn update_endpoint(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    save_endpoint(&p, &me, Some(&id), endpoint_body(&f)).await
}

pub(super) async fn endpoint(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let me = signed_in!(p, headers);
    let id = enc(&id);
    let ep = tryp!(p.get(&me, &format!("/v1/endpoints/{id}")).await);
    let secret = if q.contains_key("reveal") {
        Some(tryp!(
            p.get(&me, &format!("/v1/endpoints/{id}/secret")).await
        ))
    } else {
        None
    };
    let recent = tryp!(
        p.get(&me, &format!("/v1/endpoints/{id}/deliveries?limit=1000"))
            .await
    );
    let recent = recent["data"].as_array().cloned().unwrap_or_default();
    let now = p.app.clock.now();
    let svg = chart::deliveries_24h(&recent, now);
    let types = visible_types(&me);
    let shown: Vec<&Value> = recent.iter().take(50).collect();
    p.render(
        "endpoint.html",
        Some(&me),
        json!({
            "title": origin_of(ep["url"].as_str().unwrap_or("Endpoint")),"nav": "endpoints", "ep": ep, "state": state_of(&ep),
            "secret": secret, "deliveries": shown, "chart": svg,
            "rate": success_rate(&recent[..recent.len().min(100)]),
            "types": types, "notice": notice(&q),
        }),
    )
}

pub(super) async fn confirm_delete(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let me = signed_in!(p, headers);
    let ep = tryp!(p.get(&me, &format!("/v1/endpoints/{}", enc(&id))).await);
    p.render(
        "confirm_delete.html",
        Some(&me),
        json!({"title": "Delete endpoint", "nav": "endpoints", "ep": ep}),
    )
}

/// Runs an action on the API and goes back to the endpoint's page with a
/// notice, or shows the API's error.
async fn act(
    p: &Portal,
    me: &Me,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Response> {
    let (status, out) = p.call(me, method, path, body).await;
    if status.is_success() {
        Ok(out)
    } else {
        Err(p.error_page(Some(me), status, &api_message(&out)))
    }
}

pub(super) async fn delete_endpoint(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    tryp!(
        act(
            &p,
            &me,
            Method::DELETE,
            &format!("/v1/endpoints/{}", enc(&id)),
            None
        )
        .await
    );
    see_other("/portal/endpoints?notice=deleted")
}

pub(super) async fn rotate(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    let id = enc(&id);
    tryp!(
        act(
            &p,
            &me,
            Method::POST,
            &format!("/v1/endpoints/{id}/secret/rotate"),
            Some(json!({}))
        )
        .await
    );
    see_other(&format!("/portal/endpoints/{id}?notice=rotated&reveal=1"))
}

pub(super) async fn test_send(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    let id = enc(&id);
    let t = field(&f, "type");
    let body = if t.is_empty() {
        json!({})
    } else {
        json!({"type": t})
    };
    let attempt = tryp!(
        act(
            &p,
            &me,
            Method::POST,
            &format!("/v1/endpoints/{id}/test"),
            Some(body)
        )
        .await
    );
    let code = attempt["statusCode"]
        .as_u64()
        .map(|c| format!("&code={c}"))
        .unwrap_or_default();
    see_other(&format!("/portal/endpoints/{id}?notice=sent{code}"))
}

pub(super) async fn replay(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    let id = enc(&id);
    let (after, since) = (field(&f, "after"), field(&f, "since"));
    let body = if !after.is_empty() {
        json!({"after": after.parse::<i64>().map(Value::from).unwrap_or(json!(after))})
    } else if !since.is_empty() {
        // <input type=datetime-local> gives "2026-11-29T10:00" in UTC here.
        let since = match since.len() {
            16 => format!("{since}:00Z"),
            19 => format!("{since}Z"),
            _ => since.to_string(),
        };
        json!({"since": since})
    } else {
        // Replaying everything is rarely meant: ask where to start.
        return see_other(&format!("/portal/endpoints/{id}?notice=replay-start"));
    };
    let out = tryp!(
        act(
            &p,
            &me,
            Method::POST,
            &format!("/v1/endpoints/{id}/replay"),
            Some(body)
        )
        .await
    );
    let n = out["queued"].as_u64().unwrap_or(0);
    if out["status"] == "running" {
        return see_other(&format!("/portal/endpoints/{id}?notice=replaying&n={n}"));
    }
    see_other(&format!("/portal/endpoints/{id}?notice=replayed&n={n}"))
}

pub(super) async fn set_state(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    let id = enc(&id);
    let disable = field(&f, "disabled") == "true";
    tryp!(
        act(
            &p,
            &me,
            Method::PATCH,
            &format!("/v1/endpoints/{id}"),
            Some(json!({"disabled": disable}))
        )
        .await
    );
    let n = if disable { "disabled" } else { "enabled" };
    see_other(&format!("/portal/endpoints/{id}?notice={n}"))
}

pub(super) async fn retry(
    State(p): State<Portal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let me = posting!(p, headers, f);
    let d = tryp!(
        act(
            &p,
            &me,
            Method::POST,
            &format!("/v1/deliveries/{}/retry", enc(&id)),
            None
        )
        .await
    );
    match d["endpointId"].as_str() {
        Some(ep) => see_other(&format!("/portal/endpoints/{}?notice=retried", enc(ep))),
        None => see_other("/portal/endpoints"),
    }
}

/// The CEL check as you type: the server's own compile of a filter.
pub(super) async fn check_filter(
    State(p): State<Portal>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    if p.me_posting(&headers, &f).await.is_none() {
        return secure(
            (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"ok": false, "error": "sign in again"})),
            )
                .into_response(),
        );
    }
    let source = field(&f, "filter");
    let result = if source.is_empty() {
        json!({"ok": true})
    } else {
        match eventflow_model::filter::Filter::compile(source, p.app.config.limits.cel_cost) {
            Ok(_) => json!({"ok": true}),
            Err(e) => json!({"ok": false, "error": e}),
        }
    };
    secure(axum::Json(result).into_response())
}

/// `scheme://host:port` of a URL: page titles end up in browser history, and
/// an endpoint's path or query may carry a token.
fn origin_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "Endpoint".into())
}
