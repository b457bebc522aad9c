//! Disclosure records: `/v1/disclosures` (every successful delivery that
//! carried a patient's data) and `/v1/patients/{id}/disclosure-accounting`
//! (what a patient may ask for: the disclosures for purposes other than
//! treatment, payment and operations), as JSON or CSV.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use eventflow_model::{id, time};
use eventflow_store::{Disclosure, DisclosureQuery, Purpose};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Params, PathId};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/disclosures", get(list))
        .route("/v1/patients/{id}/disclosure-accounting", get(accounting))
}

/// How far back a patient's accounting reaches by default: six years.
const ACCOUNTING_DAYS: i64 = 6 * 365;
/// Most entries of an accounting in one answer (`nextCursor` goes on).
pub const MAX_ACCOUNTING_PAGE: i64 = 10_000;

async fn list(State(state): State<AppState>, auth: Auth, params: Params) -> ApiResult<Json<Value>> {
    params.only(&["patientId", "since", "until", "purpose", "limit", "cursor"])?;
    let patient_id = match params.get("patientId") {
        Some(p) if !id::is_well_formed(p) => {
            return Err(ApiError::invalid(
                "patientId",
                "must be a patient id such as pat_…",
            ));
        }
        p => p.map(str::to_string),
    };
    let q = DisclosureQuery {
        patient_id,
        since: time_param(&params, "since")?,
        until: time_param(&params, "until")?,
        purpose: match params.get("purpose") {
            None => None,
            Some(p) => Some(Purpose::parse(p).ok_or_else(|| {
                ApiError::invalid("purpose", "must be treatment, payment, operations or other")
            })?),
        },
        limit: params.int("limit", 100, 1, 1000)? as u32,
        cursor: cursor(&params)?,
    };
    let (data, next) = state.store.disclosures(auth.tenant(), &q).await?;
    Ok(Json(json!({ "data": data, "nextCursor": next })))
}

fn cursor(params: &Params) -> ApiResult<Option<String>> {
    match params.get("cursor") {
        Some(c) if !c.starts_with("dsc_") || !id::is_well_formed(c) => Err(ApiError::invalid(
            "cursor",
            "must be a disclosure id (dsc_…)",
        )),
        c => Ok(c.map(str::to_string)),
    }
}

/// An RFC 3339 time parameter, in the stored form (comparable as text).
fn time_param(params: &Params, name: &str) -> ApiResult<Option<String>> {
    params
        .get(name)
        .map(|s| {
            time::parse(s)
                .map(time::format)
                .ok_or_else(|| ApiError::invalid(name, "must be an RFC 3339 time"))
        })
        .transpose()
}

/// One line of a patient's accounting.
fn entry(d: &Disclosure) -> Value {
    json!({
        "date": d.at,
        "recipient": d.recipient,
        "origin": d.origin,
        "description": description(d),
        "purpose": d.purpose,
        "purposeText": d.purpose_text,
        "eventType": d.event_type,
        "resourceType": d.resource_type,
        "fields": d.fields,
        "disclosureId": d.id,
    })
}

/// What was sent, in words: the record type and its fields.
fn description(d: &Disclosure) -> String {
    if d.fields.is_empty() {
        format!("{} ({}): identifiers only", d.resource_type, d.event_type)
    } else {
        format!(
            "{} ({}): {}",
            d.resource_type,
            d.event_type,
            d.fields.join(", ")
        )
    }
}

async fn accounting(
    State(state): State<AppState>,
    auth: Auth,
    PathId(patient): PathId,
    headers: HeaderMap,
    params: Params,
) -> ApiResult<Response> {
    params.only(&["since", "until", "limit", "cursor"])?;
    if !patient.starts_with("pat_") || !id::is_well_formed(&patient) {
        return Err(ApiError::not_found("no patient with that id"));
    }
    let now = state.clock.now();
    let since = match time_param(&params, "since")? {
        Some(s) => s,
        None => time::format(
            now.checked_sub(jiff::SignedDuration::from_hours(24 * ACCOUNTING_DAYS))
                .unwrap_or(now),
        ),
    };
    let until = time_param(&params, "until")?;
    let q = DisclosureQuery {
        patient_id: Some(patient.clone()),
        since: Some(since.clone()),
        until: until.clone(),
        purpose: Some(Purpose::Other),
        limit: params.int("limit", 1000, 1, MAX_ACCOUNTING_PAGE)? as u32,
        cursor: cursor(&params)?,
    };
    let (data, next) = state.store.disclosures(auth.tenant(), &q).await?;
    let csv = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    if !csv {
        return Ok(Json(json!({
            "patientId": patient,
            "since": since,
            "until": until.unwrap_or_else(|| time::format(now)),
            "data": data.iter().map(entry).collect::<Vec<_>>(),
            "nextCursor": next,
        }))
        .into_response());
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let head = [
        "date",
        "recipient",
        "origin",
        "description",
        "purpose",
        "purpose_text",
        "event_type",
        "resource_type",
        "disclosure_id",
    ];
    w.write_record(head).map_err(|_| ApiError::internal())?;
    for d in &data {
        let description = description(d);
        let row = [
            d.at.as_str(),
            d.recipient.as_str(),
            d.origin.as_str(),
            description.as_str(),
            d.purpose.as_str(),
            d.purpose_text.as_deref().unwrap_or(""),
            d.event_type.as_str(),
            d.resource_type.as_str(),
            d.id.as_str(),
        ];
        w.write_record(row.map(|c| spreadsheet_safe(c).into_owned()))
            .map_err(|_| ApiError::internal())?;
    }
    let body = w.into_inner().map_err(|_| ApiError::internal())?;
    let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
    if let Some(next) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        response.headers_mut().insert("eventflow-next-cursor", next);
    }
    Ok(response)
}

/// A cell a spreadsheet will not run as a formula: text a client chose
/// (a recipient's name) that starts with `=`, `+`, `-`, `@` or a control
/// character gets a leading `'`.
fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::spreadsheet_safe;

    #[test]
    fn a_cell_that_a_spreadsheet_would_run_is_quoted() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("@SUM(1)"), "'@SUM(1)");
        assert_eq!(spreadsheet_safe("Acme Labs"), "Acme Labs");
        assert_eq!(spreadsheet_safe(""), "");
    }
}
