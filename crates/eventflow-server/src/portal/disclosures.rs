//! A patient's disclosures: the accounting the patient may request (with
//! its CSV), and every disclosure record of their data.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::session::Me;
use super::{Portal, api_message, enc};

fn patient(q: &BTreeMap<String, String>) -> Option<String> {
    q.get("patient")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub(super) async fn disclosures(
    State(p): State<Portal>,
    Query(q): Query<BTreeMap<String, String>>,
    me: Me,
) -> Response {
    if let Some(r) = p.endpoints_only(&me) {
        return r;
    }
    let Some(patient) = patient(&q) else {
        return p.render(
            "disclosures.html",
            Some(&me),
            json!({"title": "Disclosures", "nav": "disclosures"}),
        );
    };
    let id = enc(&patient);
    let (status, accounting) = p
        .call(
            &me,
            Method::GET,
            &format!("/v1/patients/{id}/disclosure-accounting"),
            None,
        )
        .await;
    if !status.is_success() {
        return p.error_page(Some(&me), status, &api_message(&accounting));
    }
    let (status, all) = p
        .call(
            &me,
            Method::GET,
            &format!("/v1/disclosures?patientId={id}&limit=1000"),
            None,
        )
        .await;
    if !status.is_success() {
        return p.error_page(Some(&me), status, &api_message(&all));
    }
    p.render(
        "disclosures.html",
        Some(&me),
        json!({
            "title": "Disclosures", "nav": "disclosures", "patient": patient,
            "accounting": accounting["data"], "since": accounting["since"],
            "all": all["data"], "more": all["nextCursor"].is_string(),
        }),
    )
}

/// The accounting as CSV, for the patient.
pub(super) async fn accounting_csv(
    State(p): State<Portal>,
    Query(q): Query<BTreeMap<String, String>>,
    me: Me,
) -> Response {
    if let Some(r) = p.endpoints_only(&me) {
        return r;
    }
    let Some(patient) = patient(&q) else {
        return p.error_page(
            Some(&me),
            StatusCode::UNPROCESSABLE_ENTITY,
            "patient: is required",
        );
    };
    let path = format!(
        "/v1/patients/{}/disclosure-accounting?limit=10000",
        enc(&patient)
    );
    let (status, bytes) = p
        .call_raw(&me, Method::GET, &path, None, Some("text/csv"))
        .await;
    if !status.is_success() {
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        return p.error_page(Some(&me), status, &api_message(&body));
    }
    // The patient id is an id (checked by the API): safe in a file name.
    let name = format!(
        "attachment; filename=\"disclosure-accounting-{}.csv\"",
        patient.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "")
    );
    super::secure(
        (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, name),
            ],
            bytes,
        )
            .into_response(),
    )
}
