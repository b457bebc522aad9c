//! `claim`: the FHIR R4 `Claim` of an encounter (the one `encounter` names,
//! else the one whose event started the run), built from the encounter,
//! its patient, practitioner, observations and prescriptions, and posted to
//! `[billing] claim_url`; with no billing server configured, it goes to the
//! outbox. The claim is recorded as a notification either way.

use eventflow_model::{Object, ResourceType, time};
use eventflow_store::Store;
use eventflow_store::automation::Effect;
use serde_json::{Map, Value, json};

use super::{At, Done, Tools, send, take_quota};
use crate::channels::Sent;
use crate::claim::{self, ClaimInput};
use crate::workflow::StepKind;

/// The most observations, and prescriptions, a claim lists.
const MAX_ITEMS: u32 = 100;

/// `claim`: an optional `encounter` id.
pub(in crate::engine) async fn submit(
    config: &Map<String, Value>,
    at: &At<'_>,
    tools: &Tools<'_>,
) -> Done {
    let run = at.run;
    let given = config
        .get("encounter")
        .and_then(Value::as_str)
        .unwrap_or("");
    let encounter_id = if given.is_empty() {
        let is_encounter = run
            .context
            .pointer("/resource/type")
            .and_then(Value::as_str)
            == Some("encounter");
        match run.context.pointer("/data/id").and_then(Value::as_str) {
            Some(id) if is_encounter => id.to_string(),
            _ => {
                return Done::Fail(
                    "encounter: name the encounter (the event is not an encounter's)".into(),
                );
            }
        }
    } else {
        given.to_string()
    };
    let input = match claim_input(tools.store, &run.tenant_id, &encounter_id).await {
        Ok(Some(i)) => i,
        Ok(None) => return Done::Fail(format!("encounter: {encounter_id} does not exist")),
        Err(e) => return Done::Retry(format!("could not read the encounter: {e}"), None),
    };
    let claim = claim::build(&input, &time::format(at.now));
    let body = serde_json::to_string(&claim).unwrap_or_default();
    let subject = format!("Claim for encounter {encounter_id}");
    let Some(url) = &tools.settings.claim_url else {
        let n = at.note("claim", "billing".into(), Some(subject), body, None);
        return Done::Ok {
            detail: Some(json!({ "notificationId": n.id, "provider": "outbox" })),
            effects: vec![Effect::Notify(n)],
        };
    };
    let checked = match tools.settings.url_policy.check(url) {
        Ok(u) => u,
        Err(e) => return Done::Fail(format!("[billing] claim_url: {e}")),
    };
    if let Some(no) = take_quota(StepKind::Claim, at, tools).await {
        return no;
    }
    let origin = checked.origin().ascii_serialization();
    let request = tools
        .http
        .post(checked)
        .timeout(tools.timeout)
        .header("content-type", "application/fhir+json")
        .header("idempotency-key", at.idempotency_key())
        .body(body.clone());
    match send(request, "the billing server").await {
        Done::Ok { detail, .. } => {
            let status = detail
                .as_ref()
                .and_then(|d| d.get("statusCode"))
                .map(|c| c.to_string())
                .unwrap_or_default();
            // The billing server by its origin only: the URL's path and
            // query are the operator's (they may carry a token).
            let n = at.note(
                "claim",
                origin,
                Some(subject),
                body,
                Some(("billing", Sent { id: None, status })),
            );
            Done::Ok {
                detail,
                effects: vec![Effect::Notify(n)],
            }
        }
        other => other,
    }
}

/// The encounter and the records its claim lists; `None` when the tenant
/// has no such encounter.
async fn claim_input(
    store: &dyn Store,
    tenant: &str,
    encounter_id: &str,
) -> eventflow_store::Result<Option<ClaimInput>> {
    let Some(encounter) = store
        .get_record(tenant, ResourceType::Encounter, encounter_id)
        .await?
    else {
        return Ok(None);
    };
    let patient = referenced(
        store,
        tenant,
        &encounter,
        ResourceType::Patient,
        "patientId",
    )
    .await?;
    let practitioner = referenced(
        store,
        tenant,
        &encounter,
        ResourceType::Practitioner,
        "practitionerId",
    )
    .await?;
    let observations = store
        .records_referencing(
            tenant,
            ResourceType::Observation,
            "encounterId",
            encounter_id,
            MAX_ITEMS,
        )
        .await?;
    let prescriptions = store
        .records_referencing(
            tenant,
            ResourceType::Prescription,
            "encounterId",
            encounter_id,
            MAX_ITEMS,
        )
        .await?;
    Ok(Some(ClaimInput {
        encounter,
        patient,
        practitioner,
        observations,
        prescriptions,
    }))
}

/// The record of type `rt` the encounter's `field` names, if it names one
/// that exists.
async fn referenced(
    store: &dyn Store,
    tenant: &str,
    encounter: &Object,
    rt: ResourceType,
    field: &str,
) -> eventflow_store::Result<Option<Object>> {
    match encounter.get(field).and_then(Value::as_str) {
        Some(id) => store.get_record(tenant, rt, id).await,
        None => Ok(None),
    }
}
