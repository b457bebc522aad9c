//! Webhook endpoints: the list, the form to create or edit one, its page
//! with deliveries and a chart, and its buttons (delete, rotate the secret,
//! test, replay, enable or disable, retry a delivery), plus the live check
//! of a CEL filter.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::session::{Me, Posted, Refused};
use super::{Page, Portal, api_message, chart, enc, field, secure, see_other};

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
    Query(q): Query<BTreeMap<String, String>>,
    me: Me,
) -> Page {
    let list = p.get(&me, "/v1/endpoints").await?;
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
    Ok(p.render(
        "endpoints.html",
        Some(&me),
        json!({"title": "Endpoints", "nav": "endpoints", "rows": rows, "notice": notice(&q)}),
    ))
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
        "verifying" => "Challenge sent: deliveries wait until the endpoint answers it.".into(),
        _ => return None,
    })
}

/// The event types and topics the key may see (an endpoint of a key may
/// send only those; a topic is seen with its record type), with their
/// descriptions.
fn visible_types(me: &Me) -> Vec<Value> {
    crate::catalogue::entries()
        .into_iter()
        .filter(|e| me.principal.scopes.sees(&e.name))
        .map(|e| json!({"type": e.name, "description": e.description}))
        .collect()
}

/// Event types grouped by record type, for the checkboxes.
fn type_groups(me: &Me, chosen: &[String]) -> Vec<Value> {
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
    groups
        .into_iter()
        .map(|(g, types)| {
            let glob = format!("{g}.*");
            json!({"group": g, "glob": glob, "all": chosen.contains(&glob), "types": types})
        })
        .collect()
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
    let purpose = match field(f, "purpose") {
        "" => "operations",
        p => p,
    };
    let mut body = json!({
        "url": field(f, "url"),
        "description": opt("description"),
        "eventTypes": types,
        "filter": opt("filter"),
        "payload": if field(f, "payload") == "thin" { "thin" } else { "full" },
        "ordering": if field(f, "ordering") == "resource" { "resource" } else { "none" },
        "rateLimit": if rate.is_empty() { Value::Null } else { rate.parse::<u64>().map(Value::from).unwrap_or(json!(rate)) },
    });
    // Who receives the data and why, and the owner: only from a form that
    // shows them (a vendor's link session's does not).
    if f.iter().any(|(k, _)| k == "purpose") {
        body["recipient"] = opt("recipient");
        body["purpose"] = json!(purpose);
        body["purposeText"] = if purpose == "other" {
            opt("purpose_text")
        } else {
            Value::Null
        };
    }
    if f.iter().any(|(k, _)| k == "owner") {
        body["owner"] = opt("owner");
    }
    body
}

fn endpoint_form(
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
    let groups = type_groups(me, &chosen);
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

pub(super) async fn new_endpoint(State(p): State<Portal>, me: Me) -> Response {
    endpoint_form(
        &p,
        &me,
        json!({"payload": "full", "ordering": "none"}),
        None,
        StatusCode::OK,
    )
}

pub(super) async fn create_endpoint(State(p): State<Portal>, form: Posted) -> Response {
    save_endpoint(&p, &form.me, None, endpoint_body(form.fields())).await
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
}

pub(super) async fn edit_endpoint(State(p): State<Portal>, Path(id): Path<String>, me: Me) -> Page {
    let mut ep = p.get(&me, &format!("/v1/endpoints/{}", enc(&id))).await?;
    // The recipient as given: none when it is the URL's host (the default),
    // so that a new URL brings its own.
    let host = url::Url::parse(ep["url"].as_str().unwrap_or_default())
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
    ep["recipientGiven"] = if ep["recipient"].as_str() != host.as_deref() {
        ep["recipient"].clone()
    } else {
        json!("")
    };
    Ok(endpoint_form(&p, &me, ep, None, StatusCode::OK))
}

pub(super) async fn update_endpoint(
    State(p): State<Portal>,
    Path(id): Path<String>,
    form: Posted,
) -> Response {
    save_endpoint(&p, &form.me, Some(&id), endpoint_body(form.fields())).await
}

pub(super) async fn endpoint(
    State(p): State<Portal>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    me: Me,
) -> Page {
    let id = enc(&id);
    let ep = p.get(&me, &format!("/v1/endpoints/{id}")).await?;
    let secret = if q.contains_key("reveal") {
        Some(p.get(&me, &format!("/v1/endpoints/{id}/secret")).await?)
    } else {
        None
    };
    let recent = p
        .get(&me, &format!("/v1/endpoints/{id}/deliveries?limit=1000"))
        .await?;
    let recent = recent["data"].as_array().cloned().unwrap_or_default();
    let now = p.app.clock.now();
    let svg = chart::deliveries_24h(&recent, now);
    let types = visible_types(&me);
    let shown: Vec<&Value> = recent.iter().take(50).collect();
    Ok(p.render(
        "endpoint.html",
        Some(&me),
        json!({
            "title": origin_of(ep["url"].as_str().unwrap_or("Endpoint")),"nav": "endpoints", "ep": ep, "state": state_of(&ep),
            "secret": secret, "deliveries": shown, "chart": svg,
            "rate": success_rate(&recent[..recent.len().min(100)]),
            "types": types, "notice": notice(&q),
        }),
    ))
}

pub(super) async fn confirm_delete(
    State(p): State<Portal>,
    Path(id): Path<String>,
    me: Me,
) -> Page {
    let ep = p.get(&me, &format!("/v1/endpoints/{}", enc(&id))).await?;
    Ok(p.render(
        "confirm_delete.html",
        Some(&me),
        json!({"title": "Delete endpoint", "nav": "endpoints", "ep": ep}),
    ))
}

/// One of the endpoint page's buttons, posted as `form`: the API request
/// as the signed-in key, then a redirect to the page `to` names from the
/// API's answer; an API refusal shows its status and message on an error
/// page.
async fn act(
    p: &Portal,
    form: &Posted,
    method: Method,
    path: &str,
    body: Option<Value>,
    to: impl FnOnce(&Value) -> String,
) -> Response {
    let (status, out) = p.call(&form.me, method, path, body).await;
    if status.is_success() {
        see_other(&to(&out))
    } else {
        p.error_page(Some(&form.me), status, &api_message(&out))
    }
}

pub(super) async fn delete_endpoint(
    State(p): State<Portal>,
    Path(id): Path<String>,
    form: Posted,
) -> Response {
    let path = format!("/v1/endpoints/{}", enc(&id));
    act(&p, &form, Method::DELETE, &path, None, |_| {
        "/portal/endpoints?notice=deleted".into()
    })
    .await
}

pub(super) async fn rotate(
    State(p): State<Portal>,
    Path(id): Path<String>,
    form: Posted,
) -> Response {
    let id = enc(&id);
    let path = format!("/v1/endpoints/{id}/secret/rotate");
    act(&p, &form, Method::POST, &path, Some(json!({})), |_| {
        format!("/portal/endpoints/{id}?notice=rotated&reveal=1")
    })
    .await
}

pub(super) async fn test_send(
    State(p): State<Portal>,
    Path(id): Path<String>,
    form: Posted,
) -> Response {
    let id = enc(&id);
    let t = form.field("type");
    let body = if t.is_empty() {
        json!({})
    } else {
        json!({"type": t})
    };
    let path = format!("/v1/endpoints/{id}/test");
    act(&p, &form, Method::POST, &path, Some(body), |attempt| {
        let code = attempt["statusCode"]
            .as_u64()
            .map(|c| format!("&code={c}"))
            .unwrap_or_default();
        format!("/portal/endpoints/{id}?notice=sent{code}")
    })
    .await
}

pub(super) async fn replay(
    State(p): State<Portal>,
    Path(id): Path<String>,
    form: Posted,
) -> Response {
    let id = enc(&id);
    let (after, since) = (form.field("after"), form.field("since"));
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
    let path = format!("/v1/endpoints/{id}/replay");
    act(&p, &form, Method::POST, &path, Some(body), |out| {
        let n = out["queued"].as_u64().unwrap_or(0);
        let notice = if out["status"] == "running" {
            "replaying"
        } else {
            "replayed"
        };
        format!("/portal/endpoints/{id}?notice={notice}&n={n}")
    })
    .await
}

pub(super) async fn set_state(
    State(p): State<Portal>,
    Path(id): Path<String>,
    form: Posted,
) -> Response {
    let id = enc(&id);
    let disable = form.field("disabled") == "true";
    let path = format!("/v1/endpoints/{id}");
    let body = json!({"disabled": disable});
    act(&p, &form, Method::PATCH, &path, Some(body), |_| {
        let notice = if disable { "disabled" } else { "enabled" };
        format!("/portal/endpoints/{id}?notice={notice}")
    })
    .await
}

/// "Verify again": a new challenge now.
pub(super) async fn verify(
    State(p): State<Portal>,
    Path(id): Path<String>,
    form: Posted,
) -> Response {
    let id = enc(&id);
    let path = format!("/v1/endpoints/{id}/verify");
    act(&p, &form, Method::POST, &path, None, |_| {
        format!("/portal/endpoints/{id}?notice=verifying")
    })
    .await
}

pub(super) async fn retry(
    State(p): State<Portal>,
    Path(id): Path<String>,
    form: Posted,
) -> Response {
    let path = format!("/v1/deliveries/{}/retry", enc(&id));
    act(
        &p,
        &form,
        Method::POST,
        &path,
        None,
        |d| match d["endpointId"].as_str() {
            Some(ep) => format!("/portal/endpoints/{}?notice=retried", enc(ep)),
            None => "/portal/endpoints".into(),
        },
    )
    .await
}

/// The CEL check as you type: the server's own compile of a filter. It
/// answers in JSON, a refused token included.
pub(super) async fn check_filter(
    State(p): State<Portal>,
    posted: Result<Posted, Refused>,
) -> Response {
    let form = match posted {
        Ok(form) => form,
        Err(Refused::Body(r)) => return r,
        Err(Refused::SignedOut | Refused::Token(_)) => {
            return secure(
                (
                    StatusCode::FORBIDDEN,
                    axum::Json(json!({"ok": false, "error": "sign in again"})),
                )
                    .into_response(),
            );
        }
    };
    let source = form.field("filter");
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
