//! Webhook endpoints and deliveries as rows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::text_enum;

/// What is sent: the whole envelope, or ids only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PayloadMode {
    #[default]
    Full,
    Thin,
}

/// What a FHIR subscription's notifications carry (the Subscriptions
/// Backport IG's `backport-payload-content`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FhirContent {
    /// The notification alone: no resource, no reference to it.
    Empty,
    /// A reference to the resource (its URL), not its content.
    #[default]
    IdOnly,
    /// The resource itself.
    FullResource,
}

impl FhirContent {
    pub fn as_str(self) -> &'static str {
        match self {
            FhirContent::Empty => "empty",
            FhirContent::IdOnly => "id-only",
            FhirContent::FullResource => "full-resource",
        }
    }
}

/// An endpoint that is a FHIR topic-based subscription (made through
/// `POST /fhir/Subscription`): what it was asked for, as the FHIR
/// `Subscription` shows it again, and what its notifications need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FhirSubscription {
    /// The topic's name (`appointment.cancelled`).
    pub topic: String,
    /// The server's `public_url` when it was made: the topic's canonical
    /// URL, the resources' and the subscription's own URLs start with it.
    pub base: String,
    pub content: FhirContent,
    /// `backport-filter-criteria` as given (`Appointment?patient=…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_criteria: Vec<String>,
    /// `reason`, as given.
    pub reason: String,
    /// `channel.header`, as given (`Name: value`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<String>,
    /// `backport-timeout`: seconds a notification may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// `backport-heartbeat-period`: seconds without a notification after
    /// which a heartbeat is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<u32>,
}

/// A heartbeat due to a FHIR subscription: its endpoint, and how many
/// events it has been sent (its last `endpointSequence`).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub endpoint: EndpointRow,
    pub events: i64,
}

/// Whether events about one record reach the endpoint one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    #[default]
    None,
    Resource,
}

/// How deliveries are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Signing {
    #[default]
    Hmac,
    Ed25519,
}

/// Why an endpoint receives patient data: the purpose a disclosure is
/// recorded with. Treatment, payment and operations are left out of the
/// accounting a patient may request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Treatment,
    Payment,
    #[default]
    Operations,
    Other,
}

impl Purpose {
    pub const ALL: [Purpose; 4] = [
        Purpose::Treatment,
        Purpose::Payment,
        Purpose::Operations,
        Purpose::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Treatment => "treatment",
            Purpose::Payment => "payment",
            Purpose::Operations => "operations",
            Purpose::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Treatment, payment and operations: disclosures a patient's
    /// accounting leaves out.
    pub fn is_tpo(self) -> bool {
        self != Purpose::Other
    }
}

/// The settings of an endpoint a client chooses (the `config` column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConfig {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Event types and globs; empty: every event.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// A CEL expression over the envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default)]
    pub payload: PayloadMode,
    #[serde(default)]
    pub ordering: Ordering,
    /// Most deliveries per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// Sent with every delivery.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub signing: Signing,
    /// Who receives the data (an organisation's name); `None`: the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    #[serde(default)]
    pub purpose: Purpose,
    /// What the purpose is, for `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_text: Option<String>,
    /// Who manages the endpoint (a vendor's name): a portal link for that
    /// owner sees and manages only its endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Set when the endpoint is a FHIR subscription: its notifications are
    /// FHIR Bundles, and its handshake is its verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir: Option<FhirSubscription>,
}

impl EndpointConfig {
    /// The settings of a new endpoint for `url`: every other field at its default.
    pub fn new(url: String) -> EndpointConfig {
        EndpointConfig {
            url,
            description: None,
            event_types: Vec::new(),
            filter: None,
            payload: PayloadMode::Full,
            ordering: Ordering::None,
            rate_limit: None,
            headers: BTreeMap::new(),
            signing: Signing::Hmac,
            recipient: None,
            purpose: Purpose::Operations,
            purpose_text: None,
            owner: None,
            fhir: None,
        }
    }

    /// Who receives the data: the recipient given, or the URL's host.
    pub fn recipient(&self) -> String {
        match &self.recipient {
            Some(r) => r.clone(),
            None => crate::delivery::rules::url_origin(&self.url)
                .split_once("://")
                .map(|(_, host)| host.to_string())
                .unwrap_or_default(),
        }
    }
}

/// One signing secret (`whsec_…` or, for Ed25519, `whsk_…`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSecret {
    pub secret: String,
    pub created_at: String,
    /// Set on the old secret by a rotation: it signs until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("secret", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Whether an endpoint has proved it controls its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VerificationState {
    /// A challenge is out: deliveries wait (`pending`, no attempt) until
    /// the endpoint answers it.
    Pending,
    /// It answered the challenge at its current URL.
    Verified,
    /// Never challenged: made before verification existed, or while it was
    /// not required. Deliveries go.
    #[default]
    Skipped,
}

/// An endpoint's verification (the `verification` column).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub state: VerificationState,
    /// The challenge out while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// When the challenge was first sent: 72 h later an endpoint still
    /// pending is disabled (`unverified`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Attempts made with the current challenge.
    #[serde(default)]
    pub attempts: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<String>,
    /// Why the last attempt did not verify it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Verification {
    /// A new challenge, out from `now`.
    pub fn pending(now: &str) -> Verification {
        Verification {
            state: VerificationState::Pending,
            challenge: Some(crate::delivery::rules::new_challenge()),
            started_at: Some(now.to_string()),
            attempts: 0,
            verified_at: None,
            last_error: None,
        }
    }

    /// Whether the endpoint's deliveries wait for it.
    pub fn holds(&self) -> bool {
        self.state == VerificationState::Pending
    }
}

/// An endpoint row.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRow {
    pub id: String,
    pub tenant_id: String,
    /// Bumped on every change.
    pub revision: i64,
    pub created_at: String,
    pub updated_at: String,
    pub disabled: bool,
    /// `manual`, `gone` (it answered 410) or `failing` (72 h of failures).
    pub disabled_reason: Option<String>,
    pub config: EndpointConfig,
    /// Newest first.
    pub secrets: Vec<StoredSecret>,
    pub last_sequence: i64,
    pub failure_streak: i64,
    pub failing_since: Option<String>,
    /// Why the filter last stopped without an answer; cleared when the
    /// filter changes.
    pub filter_error: Option<FilterError>,
    pub verification: Verification,
    /// When the challenge is next sent (pending only).
    pub verify_at: Option<String>,
}

/// A filter evaluation that was stopped: the event it was stopped on, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterError {
    pub message: String,
    pub event_id: String,
    pub at: String,
}

impl EndpointRow {
    /// The secrets that still sign at `now` (a formatted timestamp).
    pub fn active_secrets(&self, now: &str) -> impl Iterator<Item = &StoredSecret> {
        self.secrets
            .iter()
            .filter(move |s| s.expires_at.as_deref().is_none_or(|e| e > now))
    }
}

text_enum! {
    /// Where a delivery stands.
    pub enum DeliveryStatus("delivery status") {
        Pending = "pending",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

/// One attempt to deliver, as listed (docs/design.md §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1, 2, …
    pub attempt: i64,
    pub at: String,
    /// The response's status; null when none came (timeout, refused, …).
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    /// The first 4 KiB of the response body.
    pub response_body: Option<String>,
    /// What went wrong, when something did.
    pub error: Option<String>,
}

/// A delivery: one event for one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `dlv_…`
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The endpoint's gap-free number for the event.
    pub endpoint_sequence: i64,
    /// The event's sequence in the tenant's log.
    pub event_sequence: i64,
    #[serde(skip)]
    pub resource_id: String,
    /// When the current 72-hour retry window began: the first attempt, or
    /// the last manual retry or replay.
    #[serde(skip)]
    pub window_started_at: Option<String>,
    /// `pending`, `succeeded` or `failed`.
    #[schema(value_type = String, example = "pending")]
    pub status: DeliveryStatus,
    pub created_at: String,
    pub updated_at: String,
    /// When a pending delivery is next attempted.
    pub next_attempt_at: Option<String>,
    pub attempts: Vec<Attempt>,
}

/// A delivery a dispatcher holds a lease on, with what it needs to send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery: Delivery,
    /// The event; `None` when retention already removed it.
    pub event: Option<std::sync::Arc<eventflow_model::Event>>,
    /// The endpoint's revision when claimed, to refresh a cached copy.
    pub endpoint_revision: i64,
}

/// A delivery just written by the writer, handed to this node's dispatcher
/// at commit (already leased to this node).
#[derive(Debug, Clone)]
pub struct FreshDelivery {
    pub delivery: Delivery,
    pub event: std::sync::Arc<eventflow_model::Event>,
    pub endpoint: std::sync::Arc<EndpointRow>,
}

/// What an attempt led to, decided by the dispatcher's policy.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptVerdict {
    Succeeded,
    /// Failed; try again at this time.
    RetryAt(jiff::Timestamp),
    /// Failed, and retries are exhausted (72 h).
    GiveUp,
    /// The endpoint answered 410 Gone: it is disabled at once.
    Gone,
    /// Nothing was sent: the event is past retention. The delivery fails;
    /// the endpoint's health is not touched.
    Expired,
}

/// The outcome of one attempt, for the writer to record.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub tenant_id: String,
    pub delivery_id: String,
    pub endpoint_id: String,
    /// The node that made it; the record applies only while its lease holds.
    pub node: String,
    pub attempt: Attempt,
    pub verdict: AttemptVerdict,
    /// What a success disclosed, when it carried a patient's data (the
    /// writer stamps its time).
    pub disclosure: Option<crate::delivery::rules::Disclosed>,
}

/// What recording an attempt did to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recorded {
    /// False when the lease had passed to another node (nothing recorded).
    pub applied: bool,
    /// Consecutive failures now.
    pub failure_streak: i64,
    /// The endpoint is disabled (now or before).
    pub endpoint_disabled: bool,
    /// This success closed an open circuit breaker.
    pub recovered: bool,
}

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayFrom {
    /// Events with a sequence greater than this.
    After(i64),
    /// Events created at or after this time (formatted timestamp).
    Since(String),
}

/// A replay and how far it has come.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Replay {
    pub id: String,
    #[serde(skip)]
    pub tenant_id: String,
    pub endpoint_id: String,
    /// `running` or `done`.
    pub status: String,
    /// Events queued again so far.
    pub queued: i64,
    /// The last event sequence looked at.
    pub cursor: i64,
    /// The tenant's latest sequence when it was asked for: it ends there.
    pub up_to: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Replay {
    pub fn running(&self) -> bool {
        self.status == "running"
    }
}

/// A disclosure record: a successful delivery that carried a patient's
/// data, as it was sent (who received it, where, what and why). Kept
/// `disclosure_retention_days`, whatever becomes of the event, the delivery
/// or the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disclosure {
    /// `dsc_…`
    pub id: String,
    /// The clinic whose patient it is.
    #[serde(skip)]
    pub tenant_id: String,
    pub patient_id: String,
    /// When the receiver acknowledged it.
    pub at: String,
    /// Who received it: the endpoint's `recipient` (by default its URL's host).
    pub recipient: String,
    pub endpoint_id: String,
    /// Scheme and host of the endpoint's URL.
    pub origin: String,
    pub event_id: String,
    pub event_type: String,
    pub resource_type: String,
    pub resource_id: String,
    /// The record's top-level field names sent (none for a thin payload).
    pub fields: Vec<String>,
    /// `treatment`, `payment`, `operations` or `other`.
    #[schema(value_type = String, example = "operations")]
    pub purpose: Purpose,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose_text: Option<String>,
    pub delivery_id: String,
    /// Set when an organisation's endpoint received it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organisation_id: Option<String>,
}

/// Filters and paging of a disclosure list (oldest first).
#[derive(Debug, Clone, Default)]
pub struct DisclosureQuery {
    pub patient_id: Option<String>,
    /// At or after (formatted timestamp).
    pub since: Option<String>,
    /// Before (formatted timestamp).
    pub until: Option<String>,
    pub purpose: Option<Purpose>,
    pub limit: u32,
    /// The id after which to continue.
    pub cursor: Option<String>,
}

/// Filters and paging of a delivery list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub status: Option<DeliveryStatus>,
    pub limit: u32,
    /// The id after which to continue (newest first: ids before it).
    pub cursor: Option<String>,
}

/// Counts of deliveries by status, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub pending_due: i64,
    pub pending_later: i64,
    pub failed: i64,
    /// Endpoints (not deleted) whose last attempt failed.
    pub failing_endpoints: i64,
    /// The longest failure streak of an endpoint that is not deleted.
    pub max_failure_streak: i64,
}
