//! The event log: poll (`GET /v1/events`, with long poll), fetch one, stream
//! (Server-Sent Events), and the list of event types (docs/design.md §3.2).
//!
//! Waiting is driven by the store's commit notifications, never a sleep: a
//! reader subscribes, reads, and if nothing matched, waits for the next
//! commit of its tenant.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use eventflow_model::id::{EventId, TenantId};
use eventflow_model::{Event, ResourceType, TypeFilter};
use eventflow_store::{EventQuery, Store};
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Params, PathId};

/// Longest long poll, in seconds.
pub const MAX_WAIT_SECONDS: i64 = 60;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(list))
        .route("/v1/events/stream", get(stream))
        .route("/v1/events/{id}", get(one))
        .route("/v1/events/{id}/deliveries", get(deliveries))
        .route("/v1/event-types", get(types))
        .route("/v1/event-types/{type}/schema", get(type_schema))
        .route("/v1/event-types/{type}/example", get(type_example))
}

/// The read a poll or a stream makes: the request's filters, and the types
/// the caller's key may see.
fn query(
    state: &AppState,
    auth: &Auth,
    params: &Params,
    after: i64,
    limit: u32,
) -> ApiResult<EventQuery> {
    let (types, resource_type, resource_id) = filters(params)?;
    Ok(EventQuery {
        after,
        types,
        resource_type,
        resource_id,
        visible: auth.scopes().visible_types(),
        limit,
        max_bytes: state.config.limits.max_page_bytes,
    })
}

fn filters(params: &Params) -> ApiResult<(TypeFilter, Option<ResourceType>, Option<String>)> {
    let types = match params.get("types") {
        Some(list) => {
            TypeFilter::parse_list(list.split(',')).map_err(|m| ApiError::invalid("types", &m))?
        }
        None => TypeFilter::default(),
    };
    let resource_type = match params.get("resourceType") {
        Some(t) => Some(t.parse::<ResourceType>().map_err(|_| {
            ApiError::invalid("resourceType", "must be a record type such as appointment")
        })?),
        None => None,
    };
    let resource_id = match params.get("resourceId") {
        Some(id) if eventflow_model::id::is_well_formed(id) => Some(id.to_string()),
        Some(_) => return Err(ApiError::invalid("resourceId", "is not a record id")),
        None => None,
    };
    Ok((types, resource_type, resource_id))
}

/// `GET /v1/events?after=&types=&resourceType=&limit=&wait=`.
async fn list(State(state): State<AppState>, auth: Auth, params: Params) -> ApiResult<Json<Value>> {
    params.only(&[
        "after",
        "types",
        "resourceType",
        "resourceId",
        "limit",
        "wait",
    ])?;
    let after = params.int("after", 0, 0, i64::MAX)?;
    let limit = params.int("limit", 100, 1, 1000)? as u32;
    let wait = params.int("wait", 0, 0, MAX_WAIT_SECONDS)?;
    let q = query(&state, &auth, &params, after, limit)?;
    let bits = wanted_bits(&q);
    // A key that may not see every type moves its cursor past what it may
    // not see: what was committed before the first read has all been looked at.
    let looked_at = match q.visible {
        Some(_) => state.store.latest_sequence(auth.tenant()).await?,
        None => after,
    };
    // A long poll holds a connection and a task: counted against the key.
    let _held = if wait > 0 {
        Some(state.streams.open(auth.key_id())?)
    } else {
        None
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait as u64);
    // Subscribe before the first read, so a commit in between wakes us.
    let mut commits = state.store.notifier().subscribe(auth.tenant());
    let mut shutdown = state.shutdown.clone();
    let mut scan = q.clone();
    // What let the answer go: the first read, a commit's wake-up, the
    // safety-net re-read, or the end of the wait (for the metric).
    let mut by = "at_once";
    let events = loop {
        let committed = *commits.borrow_and_update();
        let events = state.store.events(auth.tenant(), &scan).await?;
        if !events.is_empty() || wait == 0 {
            break events;
        }
        // Nothing up to `committed` matched: later reads start past it.
        scan.after = scan.after.max(committed);
        let woke = next_wanted_commit(
            state.store.notifier(),
            auth.tenant(),
            &mut scan.after,
            bits,
            &mut commits,
            &mut shutdown,
            Patience {
                deadline: Some(deadline),
                recheck: Duration::from_secs(state.config.reader_recheck_secs),
            },
        )
        .await;
        match woke {
            Wake::Commit => by = "commit",
            Wake::Recheck => by = "recheck",
            Wake::Timeout | Wake::Shutdown => {
                by = "timeout";
                break events;
            }
        }
    };
    if wait > 0 {
        metrics::counter!("eventflow_long_polls_answered_total", "by" => by).increment(1);
    }
    // A long poll outlives its key check: a key revoked meanwhile gets
    // nothing.
    if wait > 0 {
        let mut principal = auth.0.clone();
        if !state
            .keys
            .still_valid(&state.store, &mut principal, state.clock.now())
            .await
        {
            return Err(ApiError::unauthorized());
        }
    }
    let next_after = match events.last() {
        Some(e) => e.number_in(auth.tenant().is_organisation()),
        None if scan.visible.is_some() => after.max(looked_at).max(scan.after),
        None => after,
    };
    Ok(Json(json!({"data": events, "nextAfter": next_after})))
}

/// The type bits of the commits a reader may want: those its filters and
/// its key's visible types both match.
fn wanted_bits(q: &EventQuery) -> u64 {
    let bits = q.types.bits(q.resource_type.map(ResourceType::name));
    match &q.visible {
        Some(visible) => bits & visible.bits(None),
        None => bits,
    }
}

/// `GET /v1/events/{id}`.
async fn one(
    State(state): State<AppState>,
    auth: Auth,
    PathId(id): PathId,
) -> ApiResult<Json<Event>> {
    visible_event(&state, &auth, &id)
        .await
        .map(|(_, event)| Json(event))
}

/// An event of the tenant whose type the key may see; `404` otherwise, as
/// if it did not exist.
async fn visible_event(state: &AppState, auth: &Auth, id: &str) -> ApiResult<(EventId, Event)> {
    let not_found = || ApiError::not_found(format!("no event with id {id}"));
    let id = EventId::parse(id).map_err(|_| not_found())?;
    let event = state
        .store
        .event_by_id(auth.tenant(), &id)
        .await?
        .filter(|e| auth.scopes().sees(&e.event_type))
        .ok_or_else(not_found)?;
    Ok((id, event))
}

/// `GET /v1/event-types`: the catalogue, every event type, topic and
/// operational type. Under `/v1`, so it takes an API key like every other
/// route there (and as the OpenAPI document says: 401 without one).
async fn types(_auth: Auth) -> Json<Value> {
    Json(json!({ "data": crate::catalogue::entries() }))
}

/// The catalogue's entry named by the path (a name that is none is a 404).
fn catalogue_entry(
    name: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<crate::catalogue::Entry> {
    let name = name.map(|p| p.0).unwrap_or_default();
    crate::catalogue::entry(&name).ok_or_else(|| {
        ApiError::not_found("no event type or topic of that name (GET /v1/event-types lists them)")
    })
}

/// `GET /v1/event-types/{type}/schema`: the JSON Schema of the envelope.
async fn type_schema(
    _auth: Auth,
    name: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<impl axum::response::IntoResponse> {
    let entry = catalogue_entry(name)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/schema+json")],
        Json(crate::catalogue::schema(&entry)),
    ))
}

/// `GET /v1/event-types/{type}/example`: an envelope valid against it.
async fn type_example(
    _auth: Auth,
    name: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<Json<Value>> {
    let entry = catalogue_entry(name)?;
    crate::catalogue::example(&entry)
        .map(Json)
        .ok_or_else(ApiError::internal)
}

/// Why a wait for the next commit ended.
enum Wake {
    Commit,
    /// The safety-net re-read: a wake-up can be lost (a PostgreSQL listener
    /// reconnecting misses notifications), so waiting readers look again
    /// every few seconds.
    Recheck,
    Timeout,
    Shutdown,
}

/// How long a reader waits: until its deadline (a long poll's `wait`; a
/// stream has none), looking again every `recheck` (`reader_recheck_secs`)
/// without a wake-up.
#[derive(Debug, Clone, Copy)]
struct Patience {
    deadline: Option<tokio::time::Instant>,
    recheck: Duration,
}

/// Waits for the next commit.
async fn next_commit(
    commits: &mut watch::Receiver<i64>,
    shutdown: &mut watch::Receiver<bool>,
    patience: Patience,
) -> Wake {
    if *shutdown.borrow() {
        return Wake::Shutdown;
    }
    let deadline = patience.deadline;
    let recheck = tokio::time::Instant::now() + patience.recheck;
    let until = deadline.map_or(recheck, |d| d.min(recheck));
    tokio::select! {
        changed = commits.changed() => match changed {
            Ok(()) => Wake::Commit,
            Err(_) => Wake::Shutdown,
        },
        _ = shutdown.changed() => Wake::Shutdown,
        _ = tokio::time::sleep_until(until) => {
            if deadline.is_some_and(|d| until >= d) { Wake::Timeout } else { Wake::Recheck }
        }
    }
}

/// Waits for a commit that may hold an event the reader wants. A commit
/// whose events are all of types the reader does not want (its `bits`),
/// all known here (see `Notifier::nothing_for`), only moves `after` past
/// it: no read. One look at the latest commit serves the check and the
/// cursor alike, so a commit landing in between is never passed over.
async fn next_wanted_commit(
    notifier: &eventflow_store::Notifier,
    tenant: &str,
    after: &mut i64,
    bits: u64,
    commits: &mut watch::Receiver<i64>,
    shutdown: &mut watch::Receiver<bool>,
    patience: Patience,
) -> Wake {
    loop {
        match next_commit(commits, shutdown, patience).await {
            Wake::Commit => {
                let latest = *commits.borrow_and_update();
                if !notifier.nothing_for(tenant, *after, latest, bits) {
                    return Wake::Commit;
                }
                *after = (*after).max(latest);
            }
            other => return other,
        }
    }
}

struct Follow {
    /// Counts this stream against its key until it ends.
    _held: crate::streams::Held,
    /// The key, checked again before each event once any key changed: a
    /// revoked or expired key's stream ends.
    principal: eventflow_store::Principal,
    keys: Arc<crate::auth::KeyCache>,
    clock: Arc<dyn eventflow_store::Clock>,
    /// The type bits the stream wants (see `Notifier::nothing_for`).
    bits: u64,
    /// `reader_recheck_secs`.
    recheck: Duration,
    store: Arc<dyn Store>,
    shutdown: watch::Receiver<bool>,
    tenant: TenantId,
    query: EventQuery,
    commits: watch::Receiver<i64>,
    buffer: VecDeque<Event>,
}

/// `GET /v1/events/stream?after=&types=&resourceType=`: Server-Sent Events,
/// `id:` = sequence, so a reconnect with `Last-Event-ID` resumes.
async fn stream(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    params: Params,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    params.only(&["after", "types", "resourceType", "resourceId"])?;
    let mut after = params.int("after", 0, 0, i64::MAX)?;
    if let Some(last) = headers.get("last-event-id") {
        after = last
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request("Last-Event-ID must be an event sequence number")
                    .with_field("Last-Event-ID")
            })?;
    }
    let query = query(&state, &auth, &params, after, 500)?;
    let held = state.streams.open(auth.key_id())?;
    let follow = Follow {
        _held: held,
        principal: auth.0.clone(),
        keys: state.keys.clone(),
        clock: state.clock.clone(),
        bits: wanted_bits(&query),
        recheck: Duration::from_secs(state.config.reader_recheck_secs),
        commits: state.store.notifier().subscribe(auth.tenant()),
        shutdown: state.shutdown.clone(),
        store: state.store.clone(),
        tenant: auth.tenant().clone(),
        query,
        buffer: VecDeque::new(),
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        loop {
            let now = f.clock.now();
            if !f.keys.still_valid(&f.store, &mut f.principal, now).await {
                return None;
            }
            if let Some(event) = f.buffer.pop_front() {
                let number = event.number_in(f.tenant.is_organisation());
                f.query.after = number;
                let data = serde_json::to_string(&event).unwrap_or_default();
                let sse = SseEvent::default().id(number.to_string()).data(data);
                return Some((Ok(sse), f));
            }
            let committed = *f.commits.borrow_and_update();
            match f.store.events(&f.tenant, &f.query).await {
                Ok(events) if !events.is_empty() => f.buffer.extend(events),
                Ok(_) => {
                    // Nothing up to `committed` matched the filters.
                    f.query.after = f.query.after.max(committed);
                    let woke = next_wanted_commit(
                        f.store.notifier(),
                        &f.tenant,
                        &mut f.query.after,
                        f.bits,
                        &mut f.commits,
                        &mut f.shutdown,
                        Patience {
                            deadline: None,
                            recheck: f.recheck,
                        },
                    )
                    .await;
                    if let Wake::Shutdown = woke {
                        return None;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event stream ended by a store error");
                    return None;
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `GET /v1/events/{id}/deliveries`: which endpoints the event went to, and
/// how each delivery stands (with every attempt).
async fn deliveries(
    State(state): State<AppState>,
    auth: Auth,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Json<Value>> {
    let (id, _) = visible_event(&state, &auth, &id).await?;
    let list = state.store.event_deliveries(auth.tenant(), &id).await?;
    Ok(Json(serde_json::json!({ "data": list })))
}
