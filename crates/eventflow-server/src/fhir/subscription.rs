//! FHIR topic-based `Subscription`s (the HL7 Subscriptions R5 Backport IG
//! on R4B). A subscription is an endpoint underneath: made, listed and
//! deleted here, delivered by the one dispatcher (retries, circuit
//! breaker, signatures, disclosures), shown by `/v1/endpoints` with
//! `"kind": "fhir-subscription"`. Its handshake is the endpoint's
//! verification: any 2xx makes it `active`, anything else `error`.

use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use eventflow_model::ResourceType;
use eventflow_model::fhir::{fhir_id, record_id};
use eventflow_model::id::EndpointId;
use eventflow_model::scope::Scope;
use eventflow_store::{EndpointChange, EndpointRow, FhirContent, FhirSubscription};
use serde_json::{Value, json};

use super::{fhir, topics};
use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::extract::{JsonBody, Params};

const IG: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
/// The heartbeat periods a subscription may ask for, in seconds: from ten
/// seconds (a shorter one is load, not liveness) to a day.
const HEARTBEAT_PERIOD: std::ops::RangeInclusive<u64> = 10..=86_400;

fn ext(name: &str) -> String {
    format!("{IG}{name}")
}

fn invalid(path: &str, why: &str) -> ApiError {
    ApiError::invalid(path, why)
}

fn unsupported(path: &str, why: &str) -> ApiError {
    invalid(path, &format!("is not supported: {why}"))
}

/// Refuses a member of `o` not in `kept`, naming `{path}.{member}`.
fn refuse_others(o: &serde_json::Map<String, Value>, kept: &[&str], path: &str) -> ApiResult<()> {
    match o.keys().find(|k| !kept.contains(&k.as_str())) {
        Some(k) => Err(unsupported(
            &format!("{path}.{k}"),
            "this server does not keep it",
        )),
        None => Ok(()),
    }
}

/// The extensions of an element (`extension`), each `(url, value)`; an
/// extension without a value, or not an object, is refused.
fn extensions<'a>(element: Option<&'a Value>, path: &str) -> ApiResult<Vec<(&'a str, &'a Value)>> {
    let Some(list) = element.and_then(|e| e.get("extension")) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| invalid(&format!("{path}.extension"), "must be a list"))?;
    list.iter()
        .map(|e| {
            let url = e["url"]
                .as_str()
                .ok_or_else(|| invalid(&format!("{path}.extension.url"), "is required"))?;
            let value = e
                .as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
                .map(|(_, v)| v)
                .ok_or_else(|| invalid(&format!("{path}.extension"), "must have a value"))?;
            Ok((url, value))
        })
        .collect()
}

/// Reads a filter criterion (`Appointment?patient=Patient/pat-…&status=booked`)
/// of a subscription to a topic about `rt` into CEL conditions over the
/// envelope. Only the topic's `canFilterBy` parameters are taken.
fn filter_conditions(rt: ResourceType, criterion: &str, out: &mut Vec<String>) -> ApiResult<()> {
    let path = "Subscription.criteria.extension";
    let (ty, query) = criterion.split_once('?').unwrap_or((criterion, ""));
    if ty != rt.fhir_name() {
        return Err(invalid(
            path,
            &format!("a filter of this topic starts {}?", rt.fhir_name()),
        ));
    }
    let allowed: Vec<&str> = topics::filters(rt).iter().map(|(p, _)| *p).collect();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if !allowed.contains(&name.as_ref()) {
            return Err(unsupported(
                path,
                &format!(
                    "this topic filters by {}",
                    if allowed.is_empty() {
                        "nothing".to_string()
                    } else {
                        allowed.join(", ")
                    }
                ),
            ));
        }
        match name.as_ref() {
            "patient" | "_id" => {
                let id = value.strip_prefix("Patient/").unwrap_or(&value);
                let id = record_id(ResourceType::Patient, id)
                    .ok_or_else(|| invalid(path, "a patient filter names Patient/pat-…"))?;
                // Ids are letters, digits and one `_`: safe inside a CEL string.
                let field = if rt == ResourceType::Patient {
                    "id"
                } else {
                    "patientId"
                };
                out.push(format!("data.{field} == \"{id}\""));
            }
            "status" => {
                let ok = matches!(
                    rt.field("status").map(|f| f.kind),
                    Some(eventflow_model::resource::FieldKind::Enum(options)) if options.contains(&value.as_ref())
                );
                if !ok {
                    return Err(invalid(path, "the status is not one of the type's"));
                }
                out.push(format!("data.status == \"{value}\""));
            }
            _ => {}
        }
    }
    Ok(())
}

/// What a `Subscription` asks for, checked: the `/v1` endpoint body it
/// becomes, and what the endpoint keeps of FHIR's.
fn read_subscription(
    state: &AppState,
    body: &Value,
) -> ApiResult<(serde_json::Map<String, Value>, FhirSubscription)> {
    let o = body
        .as_object()
        .ok_or_else(|| invalid("Subscription", "must be a JSON object"))?;
    if o.get("resourceType").and_then(Value::as_str) != Some("Subscription") {
        return Err(invalid("resourceType", "must be Subscription"));
    }
    // `id`, `meta`, `text` and `error` are the server's (as on any write);
    // everything else is kept or refused.
    const KEPT: [&str; 10] = [
        "resourceType",
        "id",
        "meta",
        "text",
        "status",
        "reason",
        "criteria",
        "_criteria",
        "channel",
        "error",
    ];
    refuse_others(o, &KEPT, "Subscription")?;
    match o.get("status").and_then(Value::as_str) {
        Some("requested" | "active") => {}
        _ => return Err(invalid("Subscription.status", "must be requested")),
    }
    let reason = o
        .get("reason")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty() && r.len() <= 1000)
        .ok_or_else(|| {
            invalid(
                "Subscription.reason",
                "is required (at most 1,000 characters)",
            )
        })?;
    let criteria = o.get("criteria").and_then(Value::as_str).ok_or_else(|| {
        invalid(
            "Subscription.criteria",
            "is required: a SubscriptionTopic's canonical URL",
        )
    })?;
    let public = state.config.public_url();
    let topic = criteria
        .rsplit_once("/fhir/SubscriptionTopic/")
        .map(|(_, name)| name)
        .and_then(topics::find)
        .filter(|t| criteria == topics::url(&public, &t.name))
        .ok_or_else(|| {
            invalid(
                "Subscription.criteria",
                "must be the canonical URL of a SubscriptionTopic of this server (GET /fhir/SubscriptionTopic)",
            )
        })?;
    let mut conditions = Vec::new();
    let mut filter_criteria = Vec::new();
    for (url, value) in extensions(o.get("_criteria"), "Subscription.criteria")? {
        if url != ext("backport-filter-criteria") {
            return Err(unsupported(
                "Subscription.criteria.extension",
                "an unknown extension",
            ));
        }
        let f = value
            .as_str()
            .filter(|f| f.len() <= 1000)
            .ok_or_else(|| invalid("Subscription.criteria.extension", "must be a string"))?;
        filter_conditions(topic.resource, f, &mut conditions)?;
        filter_criteria.push(f.to_string());
    }
    let channel = o
        .get("channel")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("Subscription.channel", "is required"))?;
    const CHANNEL: [&str; 6] = [
        "type",
        "endpoint",
        "payload",
        "_payload",
        "header",
        "extension",
    ];
    refuse_others(channel, &CHANNEL, "Subscription.channel")?;
    if channel.get("type").and_then(Value::as_str) != Some("rest-hook") {
        return Err(unsupported("Subscription.channel.type", "only rest-hook"));
    }
    let endpoint = channel
        .get("endpoint")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("Subscription.channel.endpoint", "is required for rest-hook"))?;
    match channel.get("payload").and_then(Value::as_str) {
        None | Some("application/fhir+json" | "application/json") => {}
        Some(_) => {
            return Err(unsupported(
                "Subscription.channel.payload",
                "only application/fhir+json",
            ));
        }
    }
    let mut content = FhirContent::IdOnly;
    for (url, value) in extensions(channel.get("_payload"), "Subscription.channel.payload")? {
        if url != ext("backport-payload-content") {
            return Err(unsupported(
                "Subscription.channel.payload.extension",
                "an unknown extension",
            ));
        }
        content = match value.as_str() {
            Some("empty") => FhirContent::Empty,
            Some("id-only") => FhirContent::IdOnly,
            Some("full-resource") => FhirContent::FullResource,
            _ => {
                return Err(invalid(
                    "Subscription.channel.payload.extension",
                    "must be empty, id-only or full-resource",
                ));
            }
        };
    }
    let mut timeout = None;
    let mut heartbeat = None;
    let most = state.config.delivery_timeout_secs;
    for (url, value) in extensions(
        Some(&Value::Object(channel.clone())),
        "Subscription.channel",
    )? {
        let path = "Subscription.channel.extension";
        if url == ext("backport-timeout") {
            let t = value
                .as_u64()
                .filter(|t| (1..=most).contains(t))
                .ok_or_else(|| {
                    invalid(
                        path,
                        &format!("backport-timeout must be 1 to {most} seconds"),
                    )
                })?;
            timeout = Some(t as u32);
        } else if url == ext("backport-max-count") {
            if value.as_u64() != Some(1) {
                return Err(unsupported(
                    path,
                    "each notification carries one event (backport-max-count 1)",
                ));
            }
        } else if url == ext("backport-heartbeat-period") {
            let p = value
                .as_u64()
                .filter(|p| HEARTBEAT_PERIOD.contains(p))
                .ok_or_else(|| {
                    invalid(
                        path,
                        &format!(
                            "backport-heartbeat-period must be {} to {} seconds",
                            HEARTBEAT_PERIOD.start(),
                            HEARTBEAT_PERIOD.end()
                        ),
                    )
                })?;
            heartbeat = Some(p as u32);
        } else {
            return Err(unsupported(path, "an unknown extension"));
        }
    }
    let mut headers = serde_json::Map::new();
    let mut header = Vec::new();
    if let Some(list) = channel.get("header") {
        let list = list
            .as_array()
            .ok_or_else(|| invalid("Subscription.channel.header", "must be a list"))?;
        for h in list {
            let (name, value) = h
                .as_str()
                .and_then(|h| h.split_once(':'))
                .ok_or_else(|| invalid("Subscription.channel.header", "each is `Name: value`"))?;
            let name = name.trim();
            if headers.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                return Err(invalid(
                    "Subscription.channel.header",
                    "names a header twice",
                ));
            }
            headers.insert(name.to_string(), json!(value.trim()));
            header.push(h.as_str().unwrap_or_default().to_string());
        }
    }
    let mut v1 = serde_json::Map::new();
    v1.insert("url".into(), json!(endpoint));
    v1.insert("eventTypes".into(), json!([topic.name]));
    if !conditions.is_empty() {
        v1.insert("filter".into(), json!(conditions.join(" && ")));
    }
    // What a notification discloses: the resource itself, or its id.
    let payload = if content == FhirContent::FullResource {
        "full"
    } else {
        "thin"
    };
    v1.insert("payload".into(), json!(payload));
    if !headers.is_empty() {
        v1.insert("headers".into(), Value::Object(headers));
    }
    v1.insert(
        "description".into(),
        json!(format!("FHIR subscription: {}", topic.name)),
    );
    let sub = FhirSubscription {
        topic: topic.name.clone(),
        base: state.config.public_url().trim_end_matches('/').to_string(),
        content,
        filter_criteria,
        reason: reason.to_string(),
        header,
        timeout,
        heartbeat,
    };
    Ok((v1, sub))
}

/// The FHIR status of a subscription's endpoint.
fn status(row: &EndpointRow) -> &'static str {
    match (row.disabled, row.disabled_reason.as_deref()) {
        (true, Some("manual")) => "off",
        (true, _) => "error",
        _ if row.verification.holds() => "requested",
        _ => "active",
    }
}

/// Why a subscription is in `error`, in a sentence: its handshake's
/// failure, or why its endpoint was disabled.
fn error(row: &EndpointRow) -> Option<String> {
    if status(row) != "error" {
        return None;
    }
    if let Some(e) = &row.verification.last_error {
        return Some(e.clone());
    }
    Some(match row.disabled_reason.as_deref() {
        Some("failing") => "notifications failed for too long; the endpoint was disabled".into(),
        Some("gone") => "the receiver answered 410 Gone; the endpoint was disabled".into(),
        Some("unverified") => "the handshake was not answered with a 2xx".into(),
        Some(other) => other.to_string(),
        None => "the endpoint was disabled".into(),
    })
}

/// The endpoint as the FHIR `Subscription` it is.
pub fn resource(row: &EndpointRow, sub: &FhirSubscription, show_headers: bool) -> Value {
    let mut channel = json!({
        "type": "rest-hook",
        "endpoint": row.config.url,
        "payload": "application/fhir+json",
        "_payload": { "extension": [{ "url": ext("backport-payload-content"), "valueCode": sub.content.as_str() }] },
    });
    if !sub.header.is_empty() {
        // Header values are often credentials: shown to keys that may
        // change the subscription only, as on /v1.
        let header: Vec<String> = sub
            .header
            .iter()
            .map(|h| match h.split_once(':') {
                Some((name, _)) if !show_headers => {
                    format!("{name}: (hidden: needs endpoints:write)")
                }
                _ => h.clone(),
            })
            .collect();
        channel["header"] = json!(header);
    }
    let mut channel_ext = vec![json!({ "url": ext("backport-max-count"), "valuePositiveInt": 1 })];
    if let Some(t) = sub.timeout {
        channel_ext.push(json!({ "url": ext("backport-timeout"), "valueUnsignedInt": t }));
    }
    if let Some(p) = sub.heartbeat {
        channel_ext.push(json!({ "url": ext("backport-heartbeat-period"), "valueUnsignedInt": p }));
    }
    channel["extension"] = json!(channel_ext);
    let mut r = json!({
        "resourceType": "Subscription",
        "id": fhir_id(&row.id),
        "meta": { "versionId": row.revision.to_string(), "lastUpdated": row.updated_at },
        "status": status(row),
        "reason": sub.reason,
        "criteria": eventflow_delivery::fhir::topic_url(sub),
        "channel": channel,
    });
    if !sub.filter_criteria.is_empty() {
        r["_criteria"] = json!({ "extension": sub.filter_criteria.iter().map(|f| json!({
            "url": ext("backport-filter-criteria"), "valueString": f,
        })).collect::<Vec<_>>() });
    }
    if let Some(e) = error(row) {
        r["error"] = json!(e);
    }
    r
}

/// A subscription's endpoint, if `given` names one of the tenant's.
async fn load(
    state: &AppState,
    auth: &Auth,
    given: &str,
) -> ApiResult<(EndpointRow, FhirSubscription)> {
    let missing = || ApiError::not_found("no Subscription with this id");
    let id = given
        .split_once('-')
        .filter(|_| !given.contains('_'))
        .map_or_else(|| given.to_string(), |(p, rest)| format!("{p}_{rest}"));
    let id = EndpointId::parse(&id).map_err(|_| missing())?;
    let row = state
        .store
        .endpoint(auth.tenant(), &id)
        .await?
        .filter(|r| {
            auth.owner()
                .is_none_or(|o| r.config.owner.as_deref() == Some(o))
        })
        .ok_or_else(missing)?;
    let sub = row.config.fhir.clone().ok_or_else(missing)?;
    Ok((row, sub))
}

pub(super) async fn create(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: JsonBody,
) -> ApiResult<Response> {
    let (v1, sub) = read_subscription(&state, &body.value)?;
    let (row, _secret) =
        crate::routes::endpoints::create_endpoint(&state, &auth, &v1, Some(sub.clone()))
            .await
            .map_err(|mut e| {
                // The endpoint's fields are the channel's.
                e.field = e.field.map(|f| match f.as_str() {
                    "url" => "Subscription.channel.endpoint".to_string(),
                    h if h.starts_with("headers") => "Subscription.channel.header".to_string(),
                    "eventTypes" => "Subscription.criteria".to_string(),
                    "filter" => "Subscription.criteria.extension".to_string(),
                    _ => f,
                });
                e
            })?;
    let resource = resource(&row, &sub, true);
    let mut r = fhir(StatusCode::CREATED, &resource);
    if let Ok(h) = HeaderValue::from_str(&format!(
        "{}/Subscription/{}",
        super::base(&state, &headers),
        fhir_id(&row.id)
    )) {
        r.headers_mut().insert(LOCATION, h);
    }
    Ok(r)
}

pub(super) async fn read(
    State(state): State<AppState>,
    auth: Auth,
    Path(given): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    super::only_format(&params)?;
    let (row, sub) = load(&state, &auth, &given).await?;
    let show = auth.scopes().allows(Scope::ENDPOINTS_WRITE);
    Ok(fhir(StatusCode::OK, &resource(&row, &sub, show)))
}

pub(super) async fn search(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    params: Params,
) -> ApiResult<Response> {
    params.only(&["status", "url", "_format"])?;
    super::check_format(&params)?;
    let show = auth.scopes().allows(Scope::ENDPOINTS_WRITE);
    let wanted = params.get("status");
    if let Some(s) = wanted
        && !["requested", "active", "error", "off"].contains(&s)
    {
        return Err(invalid("status", "must be requested, active, error or off"));
    }
    let base = super::base(&state, &headers);
    let entries: Vec<Value> = state
        .store
        .endpoints(auth.tenant())
        .await?
        .iter()
        .filter(|r| {
            auth.owner()
                .is_none_or(|o| r.config.owner.as_deref() == Some(o))
        })
        .filter_map(|r| Some((r, r.config.fhir.as_ref()?)))
        .filter(|(r, _)| wanted.is_none_or(|w| status(r) == w))
        .filter(|(r, _)| params.get("url").is_none_or(|u| r.config.url == u))
        .map(|(r, sub)| {
            json!({
                "fullUrl": format!("{base}/Subscription/{}", fhir_id(&r.id)),
                "resource": resource(r, sub, show),
                "search": { "mode": "match" },
            })
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "link": [{ "relation": "self", "url": format!("{base}/Subscription") }],
    });
    if !entries.is_empty() {
        bundle["entry"] = json!(entries);
    }
    Ok(fhir(StatusCode::OK, &bundle))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(given): Path<String>,
) -> ApiResult<Response> {
    let (row, _) = load(&state, &auth, &given).await?;
    let id = EndpointId::parse(&row.id).map_err(|_| ApiError::internal())?;
    state
        .store
        .change_endpoint(EndpointChange::Delete {
            tenant: auth.tenant().to_string(),
            id: id.into_string(),
        })
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorKind::NotFound,
                "no Subscription with this id",
            )
        })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The subscription's event count: its newest delivery's
/// `endpointSequence` (retention keeps each endpoint's newest delivery).
async fn events_since_start(state: &AppState, auth: &Auth, row: &EndpointRow) -> ApiResult<i64> {
    let id = EndpointId::parse(&row.id).map_err(|_| ApiError::internal())?;
    let (newest, _) = state
        .store
        .deliveries(
            auth.tenant(),
            &id,
            &eventflow_store::DeliveryQuery {
                status: None,
                limit: 1,
                cursor: None,
            },
        )
        .await?;
    Ok(newest.first().map_or(0, |d| d.endpoint_sequence))
}

/// `GET /fhir/Subscription/{id}/$status`.
pub(super) async fn status_op(
    State(state): State<AppState>,
    auth: Auth,
    Path(given): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    super::only_format(&params)?;
    let (row, sub) = load(&state, &auth, &given).await?;
    let count = events_since_start(&state, &auth, &row).await?;
    let error = error(&row);
    let now = eventflow_model::time::format(state.clock.now());
    Ok(fhir(
        StatusCode::OK,
        &eventflow_delivery::fhir::status_bundle(
            &sub,
            &row,
            status(&row),
            count,
            error.as_deref(),
            &now,
        ),
    ))
}

/// Most events one `$events` returns; ask again from the last number for more.
pub const MAX_EVENTS: i64 = 100;

/// `GET /fhir/Subscription/{id}/$events?eventsSinceNumber=&eventsUntilNumber=&content=`:
/// the subscription's events again, by number, while the event log holds them.
pub(super) async fn events_op(
    State(state): State<AppState>,
    auth: Auth,
    Path(given): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    params.only(&[
        "eventsSinceNumber",
        "eventsUntilNumber",
        "content",
        "_format",
    ])?;
    super::check_format(&params)?;
    let (row, sub) = load(&state, &auth, &given).await?;
    // The events carry the records of the topic's type: reading them needs
    // that type's read scope, as reading the records does.
    let topic = topics::find(&sub.topic).ok_or_else(ApiError::internal)?;
    auth.require(Scope::read(topic.resource))?;
    let count = events_since_start(&state, &auth, &row).await?;
    let since = params.int("eventsSinceNumber", 1, 1, i64::MAX)?;
    let until = params.int("eventsUntilNumber", count.max(1), 1, i64::MAX)?;
    if until < since {
        return Err(invalid(
            "eventsUntilNumber",
            "must not be below eventsSinceNumber",
        ));
    }
    let content = match params.get("content") {
        None => sub.content,
        Some("empty") => FhirContent::Empty,
        Some("id-only") => FhirContent::IdOnly,
        Some("full-resource") => FhirContent::FullResource,
        Some(_) => {
            return Err(invalid(
                "content",
                "must be empty, id-only or full-resource",
            ));
        }
    };
    let limit = (until - since + 1).min(MAX_EVENTS);
    let id = EndpointId::parse(&row.id).map_err(|_| ApiError::internal())?;
    let found = state
        .store
        .endpoint_events(auth.tenant(), &id, since - 1, limit as u32)
        .await?;
    let events: Vec<(i64, &eventflow_model::Event)> = found
        .iter()
        .filter(|(n, _)| *n <= until)
        .map(|(n, e)| (*n, e))
        .collect();
    let now = eventflow_model::time::format(state.clock.now());
    Ok(fhir(
        StatusCode::OK,
        &eventflow_delivery::fhir::events_bundle(
            &sub,
            &row,
            eventflow_delivery::fhir::Kind::QueryEvent,
            status(&row),
            count,
            &events,
            content,
            &now,
        ),
    ))
}
