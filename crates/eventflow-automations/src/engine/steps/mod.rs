//! The kinds of step, one module each, each a function from the step's
//! rendered settings (and what it needs: the HTTP client, the store, the
//! settings) to its outcome, a [`Done`]. The run loop renders the settings,
//! asks [`refused`] whether a tenant's own workflow may use the provider,
//! and calls the kind; it records the outcome with its effects.
//!
//! - [`messages`]: `sms` (Twilio), `email` (SMTP), `slack`; with no
//!   provider configured, the message goes to the outbox.
//! - [`http`]: `http`, a request to a URL, optionally signed.
//! - [`records`]: `create` and `update`, a record write as the workflow.
//! - [`timers`]: `schedule` sets a durable timer, `cancel` removes one.
//! - [`claim`]: `claim`, the FHIR `Claim` of an encounter, to the billing
//!   server or the outbox.
//!
//! Every kind reads its settings as rendered text: a missing setting reads
//! as empty, which each kind refuses where it needs one.

use std::time::Duration;

use eventflow_model::{id, time};
use eventflow_store::AutomationStore;
use eventflow_store::{
    Channel, Direction, Effect, Notification, QuotaReservation, Run, StepStatus,
};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::Settings;
use crate::channels::{Failure, Sent};
use crate::workflow::StepKind;

pub(super) mod claim;
pub(super) mod http;
pub(super) mod messages;
pub(super) mod records;
pub(super) mod timers;

#[cfg(test)]
mod testing;

/// The SMTP client the engine keeps (connections are pooled).
pub(super) type Mailer = lettre::AsyncSmtpTransport<lettre::Tokio1Executor>;

/// A step's result before it is recorded.
#[derive(Debug)]
pub(super) enum Done {
    Ok {
        detail: Option<Value>,
        effects: Vec<Effect>,
    },
    Skipped {
        reason: String,
        effects: Vec<Effect>,
    },
    /// Worth another try, after the provider's `Retry-After` if it gave one.
    Retry(String, Option<Duration>),
    Fail(String),
}

impl Done {
    /// The outcome's kind, as logged (never its message, which may quote a
    /// provider's answer).
    pub(super) fn kind(&self) -> StepStatus {
        match self {
            Done::Ok { .. } => StepStatus::Succeeded,
            Done::Skipped { .. } => StepStatus::Skipped,
            Done::Retry(..) => StepStatus::Retrying,
            Done::Fail(_) => StepStatus::Failed,
        }
    }
}

impl From<Failure> for Done {
    fn from(f: Failure) -> Done {
        match f {
            Failure::Retry(e, wait) => Done::Retry(e, wait),
            Failure::Permanent(e) => Done::Fail(e),
        }
    }
}

/// The step being performed, as its kind sees it.
pub(super) struct At<'a> {
    pub run: &'a Run,
    /// The step's name in the run record: `2`, or `2.1` inside step 2's timer.
    pub label: String,
    /// When the step is performed.
    pub now: Timestamp,
    /// Whether the workflow is the tenant's own (not the operator's).
    pub own: bool,
}

impl At<'_> {
    /// An outbound message of this step: sent through `sent`'s provider,
    /// or put in the outbox when `sent` is `None`.
    pub(super) fn note(
        &self,
        channel: Channel,
        to: String,
        subject: Option<String>,
        body: String,
        sent: Option<(&str, Sent)>,
    ) -> Notification {
        let (provider, provider_id, provider_status) = match sent {
            Some((p, s)) => (p.to_string(), s.id, Some(s.status)),
            None => ("outbox".to_string(), None, None),
        };
        Notification {
            id: id::new_id("ntf"),
            tenant_id: self.run.tenant_id.clone(),
            channel,
            direction: Direction::Outbound,
            to,
            subject,
            body,
            workflow: Some(self.run.workflow.clone()),
            run_id: Some(self.run.id.clone()),
            step: Some(self.label.clone()),
            provider,
            provider_id,
            provider_status,
            created_at: time::format(self.now),
        }
    }

    /// The key a provider sees on each attempt of this step, the same on
    /// every retry: `run id:step`.
    pub(super) fn idempotency_key(&self) -> String {
        format!("{}:{}", self.run.id, self.label)
    }
}

/// What the kinds that reach outside the engine use.
pub(super) struct Tools<'a> {
    pub store: &'a dyn AutomationStore,
    pub http: &'a reqwest::Client,
    pub mailer: Option<&'a Mailer>,
    pub settings: &'a Settings,
    /// The longest a provider or an `http` step may take.
    pub timeout: Duration,
}

/// A message that went out (or to the outbox): the step's detail names it.
pub(super) fn delivered(n: Notification) -> Done {
    let detail = json!({
        "notificationId": n.id,
        "provider": n.provider,
        "providerId": n.provider_id,
        "providerStatus": n.provider_status,
    });
    Done::Ok {
        detail: Some(detail),
        effects: vec![Effect::Notify(n)],
    }
}

/// A setting as rendered text (`""` when the step has none).
pub(super) fn text(config: &Map<String, Value>, key: &str) -> String {
    config
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The provider a kind sends through: its table in the configuration, its
/// name in the quota counts, and what its quota counts.
struct Provider {
    table: &'static str,
    name: &'static str,
    unit: &'static str,
    tenants: fn(&Settings) -> &[String],
    quota: fn(&Settings) -> Option<u32>,
}

fn provider(kind: StepKind) -> Option<Provider> {
    Some(match kind {
        StepKind::Sms => Provider {
            table: "[providers.twilio]",
            name: "twilio",
            unit: "sms",
            tenants: |s| &s.provider_tenants.twilio,
            quota: |s| s.provider_quotas.twilio,
        },
        StepKind::Email => Provider {
            table: "[providers.smtp]",
            name: "smtp",
            unit: "emails",
            tenants: |s| &s.provider_tenants.smtp,
            quota: |s| s.provider_quotas.smtp,
        },
        StepKind::Slack => Provider {
            table: "[providers.slack]",
            name: "slack",
            unit: "slack messages",
            tenants: |s| &s.provider_tenants.slack,
            quota: |s| s.provider_quotas.slack,
        },
        StepKind::Claim => Provider {
            table: "[billing]",
            name: "billing",
            unit: "claims",
            tenants: |s| &s.provider_tenants.billing,
            quota: |s| s.provider_quotas.billing,
        },
        _ => return None,
    })
}

/// Whether the kind's provider is configured (a step without one writes to
/// the outbox).
fn configured(kind: StepKind, s: &Settings) -> bool {
    match kind {
        StepKind::Sms => s.twilio.is_some(),
        StepKind::Email => s.smtp.is_some(),
        StepKind::Slack => s.slack_webhook_url.is_some(),
        StepKind::Claim => s.claim_url.is_some(),
        _ => false,
    }
}

/// A tenant's own workflow uses a configured provider only when the
/// operator lists the tenant for it: `Some` with the failure when not.
pub(super) fn refused(kind: StepKind, at: &At<'_>, settings: &Settings) -> Option<Done> {
    let p = provider(kind)?;
    let listed = (p.tenants)(settings).contains(&at.run.tenant_id);
    (configured(kind, settings) && at.own && !listed).then(|| {
        Done::Fail(format!(
            "{} steps of a tenant's own workflows may not use {}: the operator has not \
             listed this tenant in its tenants",
            kind.name(),
            p.table
        ))
    })
}

/// Before a step of a tenant's own workflow calls a provider with a
/// `daily_quota`: takes a unit of the tenant's quota for today (UTC);
/// `Some` with the failure when the step may not send. The operator's
/// workflows are not counted: the quota bounds what a tenant's own
/// workflows make the operator's accounts send.
pub(super) async fn take_quota(kind: StepKind, at: &At<'_>, tools: &Tools<'_>) -> Option<Done> {
    if !at.own {
        return None;
    }
    let p = provider(kind)?;
    let limit = (p.quota)(tools.settings)?;
    let reservation = QuotaReservation {
        tenant_id: at.run.tenant_id.clone(),
        provider: p.name.to_string(),
        limit: i64::from(limit),
        run_id: at.run.id.clone(),
        step: at.label.clone(),
    };
    match tools.store.reserve_quota(reservation).await {
        Ok(true) => None,
        Ok(false) => Some(Done::Fail(format!(
            "daily quota of {limit} {} reached for this tenant ({} daily_quota; \
             it starts again at midnight UTC)",
            p.unit, p.table
        ))),
        Err(e) => Some(Done::Retry(
            format!("could not take a unit of the daily quota: {e}"),
            None,
        )),
    }
}

/// Sends a request whose answer matters only by its status (an `http`
/// step, a claim): a 2xx is done, with its status in the detail.
pub(super) async fn send(request: reqwest::RequestBuilder, who: &str) -> Done {
    match crate::channels::send(request, who).await {
        Ok(code) => Done::Ok {
            detail: Some(json!({ "statusCode": code })),
            effects: Vec::new(),
        },
        Err(f) => f.into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::testing::{Kit, at};
    use super::{Done, refused};
    use crate::channels::Twilio;
    use crate::workflow::StepKind;

    #[tokio::test]
    async fn a_tenants_own_workflow_uses_a_provider_only_when_the_operator_lists_the_tenant() {
        let mut kit = Kit::new().await;
        let run = kit.run(json!({}));
        let mut own = at(&run);
        own.own = true;
        // No provider configured: the outbox is open to everyone.
        assert!(refused(StepKind::Sms, &own, &kit.settings).is_none());
        kit.settings.twilio = Some(Twilio {
            account_sid: "AC1".into(),
            auth_token: "t".into(),
            from: "+1".into(),
            base_url: "http://127.0.0.1:9".into(),
        });
        match refused(StepKind::Sms, &own, &kit.settings) {
            Some(Done::Fail(e)) => assert_eq!(
                e,
                "sms steps of a tenant's own workflows may not use [providers.twilio]: the \
                 operator has not listed this tenant in its tenants"
            ),
            other => panic!("{other:?}"),
        }
        // The operator's own workflows always may; a listed tenant's too.
        assert!(refused(StepKind::Sms, &at(&run), &kit.settings).is_none());
        kit.settings.provider_tenants.twilio = vec![kit.tenant.to_string()];
        assert!(refused(StepKind::Sms, &own, &kit.settings).is_none());
        // Kinds without a provider are never refused.
        assert!(refused(StepKind::Http, &own, &kit.settings).is_none());
    }
}
