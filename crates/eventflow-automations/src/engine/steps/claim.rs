//! `claim`: the FHIR R4 `Claim` of an encounter (the one `encounter` names,
//! else the one whose event started the run), built from the encounter,
//! its patient, practitioner, observations and prescriptions, and posted to
//! `[billing] claim_url`; with no billing server configured, it goes to the
//! outbox. The claim is recorded as a notification either way.

use eventflow_model::id::TenantId;
use eventflow_model::{Object, ResourceType, time};
use eventflow_store::Records;
use eventflow_store::{Channel, Effect};
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
    let tenant = TenantId::from_stored(run.tenant_id.clone());
    let input = match claim_input(tools.store, &tenant, &encounter_id).await {
        Ok(Some(i)) => i,
        Ok(None) => return Done::Fail(format!("encounter: {encounter_id} does not exist")),
        Err(e) => return Done::Retry(format!("could not read the encounter: {e}"), None),
    };
    let claim = claim::build(&input, &time::format(at.now));
    let body = serde_json::to_string(&claim).unwrap_or_default();
    let subject = format!("Claim for encounter {encounter_id}");
    let Some(url) = &tools.settings.claim_url else {
        let n = at.note(Channel::Claim, "billing".into(), Some(subject), body, None);
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
                Channel::Claim,
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
    store: &dyn Records,
    tenant: &TenantId,
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
    store: &dyn Records,
    tenant: &TenantId,
    encounter: &Object,
    rt: ResourceType,
    field: &str,
) -> eventflow_store::Result<Option<Object>> {
    match encounter.get(field).and_then(Value::as_str) {
        Some(id) => store.get_record(tenant, rt, id).await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use eventflow_model::ResourceType;
    use eventflow_store::{Effect, Notification};
    use serde_json::{Value, json};

    use super::submit;
    use crate::engine::steps::Done;
    use crate::engine::steps::testing::{Kit, Server, at, config};

    /// An encounter with a patient, a practitioner, a service code and a
    /// diagnosis; its id and the patient's.
    async fn encounter(kit: &Kit) -> (String, String) {
        let p = kit
            .create(
                ResourceType::Patient,
                json!({"firstName": "Ada", "lastName": "Lovelace"}),
            )
            .await;
        let dr = kit
            .create(
                ResourceType::Practitioner,
                json!({"firstName": "Gregory", "lastName": "House", "email": "house@example.com"}),
            )
            .await;
        let e = kit
            .create(
                ResourceType::Encounter,
                json!({
                    "patientId": p, "practitionerId": dr, "status": "finished",
                    "date": "2026-12-01T08:00:00Z",
                    "serviceCodes": [{"system": "CPT", "code": "99213", "display": "Office visit"}],
                    "diagnoses": [{"system": "ICD-10", "code": "E11.9", "display": "Type 2 diabetes"}],
                }),
            )
            .await;
        (e, p)
    }

    /// The event of an encounter's change, as a run's context.
    fn encounter_event(id: &str) -> Value {
        json!({"type": "encounter.updated", "resource": {"type": "encounter", "id": id}, "data": {"id": id}})
    }

    fn claimed(done: Done) -> (Notification, Value) {
        let Done::Ok { detail, effects } = done else {
            panic!("not done: {done:?}");
        };
        let Some(Effect::Notify(n)) = effects.into_iter().next() else {
            panic!("no notification");
        };
        (n, detail.unwrap_or_default())
    }

    #[tokio::test]
    async fn the_claim_of_the_events_encounter_goes_to_the_outbox_without_a_billing_server() {
        let kit = Kit::new().await;
        let (e, p) = encounter(&kit).await;
        let run = kit.run(encounter_event(&e));
        let (n, detail) = claimed(submit(&config(json!({})), &at(&run), &kit.tools()).await);
        assert_eq!(
            detail,
            json!({"notificationId": n.id, "provider": "outbox"})
        );
        assert_eq!((n.channel.as_str(), n.to.as_str()), ("claim", "billing"));
        assert_eq!(n.subject, Some(format!("Claim for encounter {e}")));
        let claim: Value = serde_json::from_str(&n.body).expect("the claim is JSON");
        assert_eq!(claim["resourceType"], "Claim");
        assert_eq!(claim["patient"]["reference"], format!("Patient/{p}"));
        assert_eq!(
            claim["item"][0]["productOrService"]["coding"][0]["code"],
            "99213"
        );
    }

    #[tokio::test]
    async fn the_claim_of_a_named_encounter_is_posted_to_the_billing_server() {
        let mut kit = Kit::new().await;
        let (e, p) = encounter(&kit).await;
        let billing = Server::answering(200, "{}").await;
        kit.settings.claim_url = Some(format!("{}/claims/clinic-7?token=s3cret", billing.url));
        // The run's event is not the encounter's: the step names it.
        let run = kit.run(json!({"type": "patient.updated", "data": {"id": p}}));
        let step = config(json!({"encounter": e}));
        let (n, detail) = claimed(submit(&step, &at(&run), &kit.tools()).await);
        assert_eq!(detail, json!({"statusCode": 200}));
        assert_eq!(n.provider, "billing");
        assert_eq!(n.provider_status.as_deref(), Some("200"));
        // The billing server by its origin: not the operator's path or token.
        assert_eq!(n.to, billing.url);
        let seen = billing.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/claims/clinic-7");
        assert_eq!(seen[0].header("content-type"), "application/fhir+json");
        assert_eq!(seen[0].header("idempotency-key"), "run_test1:1");
        let claim = seen[0].json();
        assert_eq!(claim["resourceType"], "Claim");
        assert_eq!(
            claim["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0]["code"],
            "E11.9"
        );
        assert_eq!(n.body, serde_json::to_string(&claim).expect("JSON"));
    }

    #[tokio::test]
    async fn a_billing_server_error_is_tried_again_and_a_refusal_fails_the_step() {
        let mut kit = Kit::new().await;
        let (e, _) = encounter(&kit).await;
        let run = kit.run(encounter_event(&e));
        let down = Server::answering(502, "{}").await;
        kit.settings.claim_url = Some(down.url.clone());
        assert!(matches!(
            submit(&config(json!({})), &at(&run), &kit.tools()).await,
            Done::Retry(..)
        ));
        let refusing = Server::answering(422, "{}").await;
        kit.settings.claim_url = Some(refusing.url.clone());
        match submit(&config(json!({})), &at(&run), &kit.tools()).await {
            Done::Fail(e) => assert_eq!(e, "the billing server answered 422 Unprocessable Entity"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn no_encounter_to_claim_fails_the_step() {
        let kit = Kit::new().await;
        let fail = |done: Done| match done {
            Done::Fail(e) => e,
            other => panic!("{other:?}"),
        };
        let run = kit.run(json!({"type": "patient.updated", "resource": {"type": "patient"}, "data": {"id": "pat_1"}}));
        assert_eq!(
            fail(submit(&config(json!({})), &at(&run), &kit.tools()).await),
            "encounter: name the encounter (the event is not an encounter's)"
        );
        let step = config(json!({"encounter": "enc_missing"}));
        assert_eq!(
            fail(submit(&step, &at(&run), &kit.tools()).await),
            "encounter: enc_missing does not exist"
        );
    }
}
