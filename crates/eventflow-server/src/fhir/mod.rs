//! The FHIR R4B facade under `/fhir` (docs/fhir.md): the records as FHIR
//! resources, read, version read and search, the CapabilityStatement, and
//! every error as an `OperationOutcome`. The same API keys and scopes as
//! `/v1`; reads are audited as `/v1` reads are.

mod capability;
pub use eventflow_model::fhir as map;
mod subscription;
pub mod topics;
mod write;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::header::LOCATION;
use axum::http::header::{CONTENT_TYPE, ETAG, LAST_MODIFIED};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use eventflow_model::resource::FieldKind;
use eventflow_model::{Object, ResourceType, time};
use eventflow_store::{AuditEntry, DateCondition, DatePrefix, EventQuery, ListQuery, Op};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::extract::{JsonBody, Params};

pub use map::Mapper;

/// The media type of every FHIR response.
pub const FHIR_JSON: &str = "application/fhir+json";

/// Most entries in one page of a search.
pub const MAX_COUNT: i64 = 500;

/// The routes under `/fhir`.
pub fn router() -> Router<AppState> {
    let mut router = Router::new()
        .route("/fhir/metadata", get(metadata))
        .route("/fhir/SubscriptionTopic", get(topic_search))
        .route("/fhir/SubscriptionTopic/{id}", get(topic_read))
        .route(
            "/fhir/Subscription",
            get(subscription::search).post(subscription::create),
        )
        .route(
            "/fhir/Subscription/{id}",
            get(subscription::read).delete(subscription::delete),
        )
        .route(
            "/fhir/Subscription/{id}/$status",
            get(subscription::status_op),
        )
        .route(
            "/fhir/Subscription/{id}/$events",
            get(subscription::events_op),
        );
    for rt in ResourceType::ALL {
        let ty = rt.fhir_name();
        let mut collection = get(
            move |s: State<AppState>, a: Auth, h: HeaderMap, q: RawQuery, p: Params| {
                search(s, a, h, q, p, rt)
            },
        );
        let mut item = get(
            move |s: State<AppState>, a: Auth, id: Path<String>, p: Params| read(s, a, id, p, rt),
        );
        if write::WRITABLE.contains(&rt) {
            collection = collection.post(
                move |s: State<AppState>, a: Auth, h: HeaderMap, b: JsonBody| {
                    create(s, a, h, b, rt)
                },
            );
            item = item.put(
                move |s: State<AppState>, a: Auth, id: Path<String>, h: HeaderMap, b: JsonBody| {
                    update(s, a, id, h, b, rt)
                },
            );
        }
        router = router
            .route(&format!("/fhir/{ty}"), collection)
            .route(&format!("/fhir/{ty}/{{id}}"), item)
            .route(
                &format!("/fhir/{ty}/{{id}}/_history/{{vid}}"),
                get(
                    move |s: State<AppState>, a: Auth, ids: Path<(String, String)>, p: Params| {
                        vread(s, a, ids, p, rt)
                    },
                ),
            );
    }
    router
}

/// A FHIR JSON response.
fn fhir(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    r
}

/// A resource read: its `ETag` (`W/"version"`) and `Last-Modified`.
fn resource_response(resource: &Value) -> Response {
    let mut r = fhir(StatusCode::OK, resource);
    if let Some(v) = resource["meta"]["versionId"].as_str()
        && let Ok(h) = HeaderValue::from_str(&format!("W/\"{v}\""))
    {
        r.headers_mut().insert(ETAG, h);
    }
    if let Some(at) = resource["meta"]["lastUpdated"]
        .as_str()
        .and_then(time::parse)
        && let Ok(h) = HeaderValue::from_str(&httpdate(at))
    {
        r.headers_mut().insert(LAST_MODIFIED, h);
    }
    r
}

/// An HTTP date (`Tue, 01 Dec 2026 09:00:00 GMT`).
fn httpdate(at: jiff::Timestamp) -> String {
    at.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The server's FHIR base for links: `{public_url}/fhir` when
/// `public_url` is configured; otherwise the address the client used
/// (its `Host`), so that links work whatever port the server bound.
fn base(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    match (&state.config.public_url, host) {
        (None, Some(host)) => format!("http://{host}/fhir"),
        _ => format!("{}/fhir", state.config.public_url().trim_end_matches('/')),
    }
}

fn mapper(state: &AppState) -> Mapper {
    Mapper::new(&state.config.public_url())
}

/// `_format`, which FHIR clients send: JSON is all this server speaks.
fn check_format(params: &Params) -> ApiResult<()> {
    match params.get("_format") {
        // A `+` the client did not escape arrives as a space.
        None
        | Some(
            "json"
            | "application/json"
            | "application/fhir+json"
            | "application/fhir json"
            | "application/json+fhir"
            | "application/json fhir",
        ) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            ErrorKind::ValidationError,
            "only JSON is served: _format must be json or application/fhir+json",
        )
        .with_field("_format")),
    }
}

/// A route that takes no parameter but `_format`.
fn only_format(params: &Params) -> ApiResult<()> {
    params.only(&["_format"])?;
    check_format(params)
}

async fn metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Params,
) -> ApiResult<Response> {
    only_format(&params)?;
    let now = time::format(state.clock.now());
    Ok(fhir(
        StatusCode::OK,
        &capability::statement(&base(&state, &headers), &now),
    ))
}

/// The audit entry of a resource read through FHIR, as a `/v1` read.
fn read_entry(auth: &Auth, now: &str, rt: ResourceType, id: &str) -> AuditEntry {
    crate::routes::records::read_entry(auth, now, rt.name(), id)
}

/// A record (or a version of it) read: audited, then answered as its
/// resource.
async fn audited_read(
    state: &AppState,
    auth: &Auth,
    rt: ResourceType,
    id: &str,
    record: &Object,
) -> ApiResult<Response> {
    let now = time::format(state.clock.now());
    state
        .store
        .record_reads(vec![read_entry(auth, &now, rt, id)])
        .await?;
    Ok(resource_response(&mapper(state).resource(rt, record)))
}

fn not_found(rt: ResourceType) -> ApiError {
    ApiError::not_found(format!("no {} with this id", rt.fhir_name()))
}

async fn read(
    State(state): State<AppState>,
    auth: Auth,
    Path(given): Path<String>,
    params: Params,
    rt: ResourceType,
) -> ApiResult<Response> {
    only_format(&params)?;
    let id = map::record_id(rt, &given).ok_or_else(|| not_found(rt))?;
    let record = state
        .store
        .get_record(auth.tenant(), rt, &id)
        .await?
        .ok_or_else(|| not_found(rt))?;
    audited_read(&state, &auth, rt, &id, &record).await
}

/// Events of one record read per page while looking for a version.
const VREAD_PAGE: u32 = 200;

async fn vread(
    State(state): State<AppState>,
    auth: Auth,
    Path((given, vid)): Path<(String, String)>,
    params: Params,
    rt: ResourceType,
) -> ApiResult<Response> {
    only_format(&params)?;
    let id = map::record_id(rt, &given).ok_or_else(|| not_found(rt))?;
    let version: i64 = vid
        .parse()
        .ok()
        .filter(|v| *v > 0 && vid.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            ApiError::not_found(format!("no such version of this {}", rt.fhir_name()))
        })?;
    // The current version is the record itself; a later one does not
    // exist. Only an earlier one is looked for in the event log.
    let current = state.store.get_record(auth.tenant(), rt, &id).await?;
    let current_version = current
        .as_ref()
        .and_then(|r| r.get("version"))
        .and_then(Value::as_i64);
    if let (Some(record), Some(v)) = (&current, current_version) {
        if v == version {
            return audited_read(&state, &auth, rt, &id, record).await;
        }
        if version > v {
            return Err(ApiError::not_found(format!(
                "no such version of this {}",
                rt.fhir_name()
            )));
        }
    }
    // The record's events, oldest first, until the one that wrote the
    // version: what the event log still holds (its retention).
    let mut after = 0;
    let found = loop {
        let page = state
            .store
            .events(
                auth.tenant(),
                &EventQuery {
                    after,
                    resource_type: Some(rt),
                    resource_id: Some(id.clone()),
                    limit: VREAD_PAGE,
                    max_bytes: state.config.limits.max_page_bytes,
                    ..EventQuery::default()
                },
            )
            .await?;
        let Some(last) = page.last() else {
            break None;
        };
        after = last.sequence;
        // Versions rise with the log: past the one asked for, it is not there.
        let past = last.resource.version >= version;
        if let Some(e) = page.into_iter().find(|e| e.resource.version == version) {
            break Some(e);
        }
        if past {
            break None;
        }
    };
    let event = found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no such version of this {} in the event log",
            rt.fhir_name()
        ))
    })?;
    if event.event_type.ends_with(".deleted") {
        return Err(ApiError::new(
            StatusCode::GONE,
            ErrorKind::NotFound,
            format!("this version of the {} is its deletion", rt.fhir_name()),
        ));
    }
    audited_read(&state, &auth, rt, &id, &event.data).await
}

/// The search parameters a type takes.
fn search_params(rt: ResourceType) -> Vec<&'static str> {
    let mut known = vec!["_id", "_lastUpdated", "_count", "_cursor", "_format"];
    if rt.field("patientId").is_some() {
        known.push("patient");
    }
    if searchable_status(rt) {
        known.push("status");
    }
    if rt == ResourceType::Patient {
        known.push("identifier");
    }
    if matches!(rt, ResourceType::Appointment | ResourceType::Encounter) {
        known.push("date");
    }
    known
}

/// The conditions of a `date` search, one per value: a prefix (`eq` when
/// none, `gt`, `ge`, `lt`, `le`, `sa`, `eb`) and a date (`YYYY`,
/// `YYYY-MM`, `YYYY-MM-DD`, in UTC) or an instant; a value covers its
/// precision, so `eq2026-12-01` is that whole day. Every one must hold.
fn date_conditions(values: &[String]) -> ApiResult<Vec<DateCondition>> {
    let bad = || {
        ApiError::invalid(
            "date",
            "must be a date (YYYY, YYYY-MM, YYYY-MM-DD) or an instant (RFC 3339), after eq, gt, ge, lt, le, sa or eb",
        )
    };
    let mut out = Vec::new();
    for value in values {
        // A `+` the client did not escape (an offset) arrives as a space.
        let value = value.replace(' ', "+");
        let (prefix, rest) = match value.get(..2) {
            Some(p) if p.bytes().all(|b| b.is_ascii_lowercase()) => (p, &value[2..]),
            _ => ("eq", value.as_str()),
        };
        let prefix = match prefix {
            "eq" => DatePrefix::Eq,
            "gt" => DatePrefix::Gt,
            "ge" => DatePrefix::Ge,
            "lt" => DatePrefix::Lt,
            "le" => DatePrefix::Le,
            "sa" => DatePrefix::Sa,
            "eb" => DatePrefix::Eb,
            "ne" | "ap" => {
                return Err(ApiError::invalid(
                    "date",
                    "ne and ap are not supported; use eq, gt, ge, lt, le, sa or eb",
                ));
            }
            _ => return Err(bad()),
        };
        let (lo, hi) = date_span(rest).ok_or_else(bad)?;
        out.push(DateCondition {
            prefix,
            lo: time::format(lo),
            hi: time::format(hi),
        });
    }
    Ok(out)
}

/// The instants a date or an instant covers: `[first, after)`.
fn date_span(s: &str) -> Option<(jiff::Timestamp, jiff::Timestamp)> {
    use jiff::civil::Date;
    let utc = |d: Date| time::parse(&format!("{d}T00:00:00Z"));
    let day = |y: i16, m: i8, d: i8| Date::new(y, m, d).ok();
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !s.is_ascii() {
        return None;
    }
    match s.len() {
        4 if digits(s) => {
            let y: i16 = s.parse().ok()?;
            Some((utc(day(y, 1, 1)?)?, utc(day(y.checked_add(1)?, 1, 1)?)?))
        }
        7 if digits(&s[..4]) && &s[4..5] == "-" && digits(&s[5..]) => {
            let first = day(s[..4].parse().ok()?, s[5..].parse().ok()?, 1)?;
            Some((
                utc(first)?,
                utc(first.checked_add(jiff::Span::new().months(1)).ok()?)?,
            ))
        }
        10 => {
            let d: Date = s.parse().ok()?;
            Some((utc(d)?, utc(d.tomorrow().ok()?)?))
        }
        _ => {
            // An instant covers its last digit (`…:05.5` a tenth of a
            // second), at least the millisecond the server keeps.
            let at = time::parse(s)?;
            let fraction = s
                .split_once('.')
                .map_or(0, |(_, f)| f.bytes().take_while(u8::is_ascii_digit).count());
            let ms = at.as_millisecond();
            let width = match fraction {
                0 => 1000,
                1 => 100,
                2 => 10,
                _ => 1,
            };
            let lo = jiff::Timestamp::from_millisecond(ms).ok()?;
            Some((
                lo,
                lo.checked_add(jiff::SignedDuration::from_millis(width))
                    .ok()?,
            ))
        }
    }
}

/// Whether `status` is searched: the types whose FHIR status is the
/// record's own (a QuestionnaireResponse's is not: `requested` and
/// `in-progress` are both FHIR's `in-progress`).
fn searchable_status(rt: ResourceType) -> bool {
    rt.has_status() && rt != ResourceType::Intake
}

/// `_lastUpdated=ge…` or `gt…`: an instant or a date. Returns the first
/// instant a match may have been updated at. A value covers its
/// precision (a date its day, an instant without a fraction its second),
/// so `gt` starts after the whole of it.
fn last_updated(value: &str) -> ApiResult<jiff::Timestamp> {
    let bad = || {
        ApiError::invalid(
            "_lastUpdated",
            "must be ge or gt followed by a date (YYYY-MM-DD) or an instant (RFC 3339)",
        )
    };
    // A `+` the client did not escape (an offset) arrives as a space.
    let value = value.replace(' ', "+");
    let (strict, rest) = if let Some(r) = value.strip_prefix("gt") {
        (true, r)
    } else if let Some(r) = value.strip_prefix("ge") {
        (false, r)
    } else {
        return Err(bad());
    };
    let (at, precision) = match time::parse(rest) {
        Some(t) if rest.contains('.') => (t, jiff::SignedDuration::from_millis(1)),
        Some(t) => (t, jiff::SignedDuration::from_secs(1)),
        None if rest.len() == 10 && rest.parse::<jiff::civil::Date>().is_ok() => (
            time::parse(&format!("{rest}T00:00:00Z")).ok_or_else(bad)?,
            jiff::SignedDuration::from_hours(24),
        ),
        None => return Err(bad()),
    };
    if strict {
        at.checked_add(precision).map_err(|_| bad())
    } else {
        Ok(at)
    }
}

/// Refuses a search parameter given twice (`patient=A&patient=B`): the
/// server would otherwise keep one and drop the other. `date` may be
/// given twice (a range: `date=ge…&date=lt…`), not more.
fn no_repeats(query: Option<&str>) -> ApiResult<()> {
    let mut seen: Vec<String> = Vec::new();
    for (name, _) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let most = if name == "date" { 2 } else { 1 };
        if seen.iter().filter(|n| **n == name).count() >= most {
            return Err(ApiError::invalid(
                &name,
                "is given more than once; this server takes each parameter once",
            ));
        }
        seen.push(name.into_owned());
    }
    Ok(())
}

/// A patient named by a search: `Patient/pat-…`, `pat-…` or `pat_…`.
fn patient_param(value: &str) -> ApiResult<String> {
    let id = value.strip_prefix("Patient/").unwrap_or(value);
    map::record_id(ResourceType::Patient, id).ok_or_else(|| {
        ApiError::invalid(
            "patient",
            "must name a patient: Patient/pat-… or the patient's id",
        )
    })
}

async fn search(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    params: Params,
    rt: ResourceType,
) -> ApiResult<Response> {
    let known = search_params(rt);
    params.only(&known)?;
    no_repeats(query.as_deref())?;
    check_format(&params)?;
    let count = params.int("_count", 50, 1, MAX_COUNT)?;
    let patient_id = params.get("patient").map(patient_param).transpose()?;
    let status = params.get("status").map(str::to_string);
    if let Some(st) = &status
        && let Some(FieldKind::Enum(options)) = rt.field("status").map(|f| f.kind)
        && !options.contains(&st.as_str())
    {
        return Err(ApiError::invalid(
            "status",
            &format!("must be one of {}", options.join(", ")),
        ));
    }
    // `value` or `|value`: an MRN has no system here, so an identifier
    // of any system names no patient.
    let (mrn, other_system) = match params.get("identifier").map(|i| i.split_once('|')) {
        None => (None, false),
        Some(None) => (params.get("identifier").map(str::to_string), false),
        Some(Some(("", v))) => (Some(v.to_string()), false),
        Some(Some((_, v))) => (Some(v.to_string()), true),
    };
    if mrn
        .as_ref()
        .is_some_and(|m| m.chars().count() > crate::routes::records::MAX_MRN_CHARS)
    {
        return Err(ApiError::invalid("identifier", "is too long"));
    }
    let since = params.get("_lastUpdated").map(last_updated).transpose()?;
    let dates: Vec<String> = url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .filter(|(name, _)| name == "date")
        .map(|(_, v)| v.into_owned())
        .collect();
    let dates = date_conditions(&dates)?;
    let cursor = params.get("_cursor").map(str::to_string);
    if let Some(c) = &cursor
        && ResourceType::from_id(c) != Some(rt)
    {
        return Err(ApiError::invalid(
            "_cursor",
            "must be the _cursor of a next link this search returned",
        ));
    }
    let only_id = match params.get("_id") {
        Some(given) => Some(map::record_id(rt, given).ok_or_else(|| {
            ApiError::invalid("_id", &format!("must be the id of a {}", rt.fhir_name()))
        })?),
        None => None,
    };
    let q = ListQuery {
        patient_id: patient_id.clone(),
        status: status.clone(),
        mrn: mrn.clone(),
        updated_since: since.map(time::format),
        dates: dates.clone(),
        limit: count as u32,
        cursor,
        max_bytes: Some(state.config.limits.max_page_bytes),
    };
    // `total`, unless the matches reach `limits.fhir_search_total` (then
    // counting them would cost more than the page); `None` until counted.
    let mut total = None;
    let (records, next) = match &only_id {
        _ if other_system => (Vec::new(), None),
        // One id: that record, if it also meets the other criteria.
        Some(id) => {
            let found = state.store.get_record(auth.tenant(), rt, id).await?;
            (found.into_iter().collect::<Vec<_>>(), None)
        }
        None => {
            let page = state.store.list_records(auth.tenant(), rt, &q).await?;
            if page.next_cursor.is_some() || q.cursor.is_some() {
                let most = state.config.limits.fhir_search_total;
                let n = state
                    .store
                    .count_records(auth.tenant(), rt, &q, most)
                    .await?;
                total = (n < u64::from(most)).then_some(n);
            } else {
                total = Some(page.data.len() as u64);
            }
            (page.data, page.next_cursor)
        }
    };
    let matches = |r: &Object| {
        let field = |k: &str| r.get(k).and_then(Value::as_str);
        only_id.is_none()
            || (patient_id
                .as_deref()
                .is_none_or(|p| field("patientId") == Some(p))
                && status.as_deref().is_none_or(|s| field("status") == Some(s))
                && mrn.as_deref().is_none_or(|m| field("mrn") == Some(m))
                && since.is_none_or(|at| {
                    field("updatedAt")
                        .and_then(time::parse)
                        .is_some_and(|u| u >= at)
                })
                && (dates.is_empty() || {
                    let (start, end) = eventflow_store::date_columns(rt, r);
                    start.is_some_and(|s| dates.iter().all(|d| d.holds(&s, end.as_deref())))
                }))
    };
    let records: Vec<Object> = records.into_iter().filter(|r| matches(r)).collect();
    if only_id.is_some() || other_system {
        total = Some(records.len() as u64);
    }
    let now = time::format(state.clock.now());
    let reads = records
        .iter()
        .filter_map(|r| {
            let id = r.get("id").and_then(Value::as_str)?;
            Some(read_entry(&auth, &now, rt, id))
        })
        .collect();
    state.store.record_reads(reads).await?;
    let base = base(&state, &headers);
    let m = mapper(&state);
    let entries: Vec<Value> = records
        .iter()
        .map(|r| {
            let resource = m.resource(rt, r);
            json!({
                "fullUrl": format!("{base}/{}/{}", rt.fhir_name(), resource["id"].as_str().unwrap_or("")),
                "resource": resource,
                "search": { "mode": "match" },
            })
        })
        .collect();
    // The search's own parameters in order (a repeated `date` twice),
    // then the page's.
    let mut given: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .filter(|(name, _)| name != "_cursor" && name != "_count")
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
    given.sort();
    let link = |cursor: Option<&str>| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in &given {
            q.append_pair(name, value);
        }
        q.append_pair("_count", &count.to_string());
        if let Some(c) = cursor {
            q.append_pair("_cursor", c);
        }
        format!("{base}/{}?{}", rt.fhir_name(), q.finish())
    };
    let mut links = vec![json!({ "relation": "self", "url": link(params.get("_cursor")) })];
    if let Some(c) = &next {
        links.push(json!({ "relation": "next", "url": link(Some(c)) }));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": now,
        "link": links,
        "entry": entries,
    });
    if let Some(n) = total {
        bundle["total"] = json!(n);
    }
    if bundle["entry"].as_array().is_some_and(Vec::is_empty) {
        bundle.as_object_mut().map(|b| b.remove("entry"));
    }
    Ok(fhir(StatusCode::OK, &bundle))
}

/// `GET /fhir/SubscriptionTopic`: every topic, or those of `url` or
/// `_id` (each at most once).
async fn topic_search(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    params: Params,
) -> ApiResult<Response> {
    params.only(&["url", "_id", "_format"])?;
    no_repeats(query.as_deref())?;
    check_format(&params)?;
    let public = state.config.public_url();
    let now = time::format(state.clock.now());
    let base = base(&state, &headers);
    let entries: Vec<Value> = topics::all()
        .iter()
        .filter(|t| params.get("_id").is_none_or(|id| id == t.name))
        .filter(|t| {
            params
                .get("url")
                .is_none_or(|u| u == topics::url(&public, &t.name))
        })
        .map(|t| {
            json!({
                "fullUrl": format!("{base}/SubscriptionTopic/{}", t.name),
                "resource": topics::resource(&public, &now, t),
                "search": { "mode": "match" },
            })
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": now,
        "total": entries.len(),
        "link": [{ "relation": "self", "url": format!("{base}/SubscriptionTopic") }],
    });
    if !entries.is_empty() {
        bundle["entry"] = json!(entries);
    }
    Ok(fhir(StatusCode::OK, &bundle))
}

/// `GET /fhir/SubscriptionTopic/{id}`.
async fn topic_read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    only_format(&params)?;
    let t = topics::find(&id).ok_or_else(|| {
        ApiError::not_found(
            "no SubscriptionTopic with this id; GET /fhir/SubscriptionTopic lists them",
        )
    })?;
    let now = time::format(state.clock.now());
    Ok(fhir(
        StatusCode::OK,
        &topics::resource(&state.config.public_url(), &now, t),
    ))
}

/// An error about a record field, named by its FHIR path.
fn in_fhir_terms(rt: ResourceType, mut e: ApiError) -> ApiError {
    if let Some(field) = &e.field
        && rt.field(field.split('.').next().unwrap_or(field)).is_some()
    {
        e.field = Some(write::fhir_path(rt, field));
    }
    e
}

/// A written resource: its status, `ETag`, `Last-Modified`, and for a
/// create its `Location` (the version read).
fn written(
    state: &AppState,
    headers: &HeaderMap,
    rt: ResourceType,
    status: StatusCode,
    record: &Object,
) -> Response {
    let resource = mapper(state).resource(rt, record);
    let mut r = resource_response(&resource);
    *r.status_mut() = status;
    if status == StatusCode::CREATED
        && let (Some(id), Some(v)) = (
            resource["id"].as_str(),
            resource["meta"]["versionId"].as_str(),
        )
        && let Ok(h) = HeaderValue::from_str(&format!(
            "{}/{}/{id}/_history/{v}",
            base(state, headers),
            rt.fhir_name()
        ))
    {
        r.headers_mut().insert(LOCATION, h);
    }
    r
}

/// One change through the store's write path, its errors in FHIR terms.
async fn write_one(
    state: &AppState,
    auth: &Auth,
    rt: ResourceType,
    op: Op,
    idempotency: Option<eventflow_store::Idempotency>,
) -> ApiResult<eventflow_store::WriteOutcome> {
    crate::routes::records::write_single(state, auth, op, idempotency)
        .await
        .map_err(|e| in_fhir_terms(rt, e.into()))
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: JsonBody,
    rt: ResourceType,
) -> ApiResult<Response> {
    let path = format!("/fhir/{}", rt.fhir_name());
    let idempotency = crate::routes::records::idempotency(&headers, &path, &body.value)?;
    let mut fields = write::record_fields(&mapper(&state), rt, &body.value)?;
    fields.retain(|_, v| !v.is_null());
    let op = Op::Create {
        rt,
        body: Value::Object(fields),
    };
    let out = write_one(&state, &auth, rt, op, idempotency).await?;
    let status = StatusCode::from_u16(out.status).unwrap_or(StatusCode::CREATED);
    match out.body {
        Value::Object(record) if status.is_success() => {
            Ok(written(&state, &headers, rt, status, &record))
        }
        // A stored answer to the same idempotency key that was an error.
        _ => Err(ApiError::new(
            status,
            ErrorKind::Conflict,
            "the stored answer to this Idempotency-Key was an error",
        )),
    }
}

async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(given): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
    rt: ResourceType,
) -> ApiResult<Response> {
    let id = map::record_id(rt, &given).ok_or_else(|| not_found(rt))?;
    // FHIR: the resource names itself, as the URL does.
    let named = body
        .value
        .get("id")
        .and_then(Value::as_str)
        .and_then(|b| map::record_id(rt, b));
    if named.as_deref() != Some(id.as_str()) {
        return Err(ApiError::invalid(
            "id",
            "must be the id in the URL: an update names the resource it replaces",
        ));
    }
    let if_match = crate::routes::records::if_match(&headers)?;
    let fields = write::record_fields(&mapper(&state), rt, &body.value)?;
    let op = Op::Patch {
        rt,
        id,
        patch: Value::Object(fields),
        if_match,
    };
    let out = write_one(&state, &auth, rt, op, None).await?;
    match out.body {
        Value::Object(record) => Ok(written(&state, &headers, rt, StatusCode::OK, &record)),
        _ => Err(ApiError::internal()),
    }
}

/// The FHIR issue type of an error kind.
fn issue_code(kind: &str) -> &'static str {
    match kind {
        "validation_error" => "invalid",
        "invalid_request" | "malformed_json" | "duplicate_key" => "structure",
        "authentication_error" => "login",
        "forbidden" => "forbidden",
        "not_found" => "not-found",
        "method_not_allowed" | "unsupported_media_type" => "not-supported",
        "conflict" | "idempotency_conflict" | "precondition_failed" => "conflict",
        "payload_too_large" => "too-long",
        "request_timeout" => "timeout",
        "rate_limited" | "too_many_streams" => "throttled",
        "busy" | "unavailable" => "transient",
        _ => "exception",
    }
}

/// An `OperationOutcome` of one error issue.
pub fn outcome(code: &str, message: &str, field: Option<&str>) -> Value {
    let mut issue = json!({
        "severity": "error",
        "code": code,
        "diagnostics": message,
    });
    if let Some(f) = field {
        issue["expression"] = json!([f]);
    }
    json!({ "resourceType": "OperationOutcome", "issue": [issue] })
}

/// Largest error body rewritten as an `OperationOutcome`.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Every error under `/fhir` leaves as an `OperationOutcome` with its
/// status, whoever made it (authentication, limits, routing, a handler):
/// the API's error body is rewritten, its status and headers
/// (`Retry-After`, `Allow`) kept.
pub async fn outcomes(req: Request, next: Next) -> Response {
    let fhir_path = req.uri().path() == "/fhir" || req.uri().path().starts_with("/fhir/");
    let res = next.run(req).await;
    if !fhir_path || !(res.status().is_client_error() || res.status().is_server_error()) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let error: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let e = &error["error"];
    let kind = e["type"].as_str().unwrap_or("");
    let message = e["message"].as_str().map_or_else(
        || {
            parts
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_string()
        },
        str::to_string,
    );
    let code = if parts.status == StatusCode::GONE {
        "deleted"
    } else if kind.is_empty() {
        match parts.status {
            StatusCode::NOT_FOUND => "not-found",
            StatusCode::METHOD_NOT_ALLOWED => "not-supported",
            s if s.is_server_error() => "exception",
            _ => "invalid",
        }
    } else {
        issue_code(kind)
    };
    let body = outcome(code, &message, e["field"].as_str()).to_string();
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
