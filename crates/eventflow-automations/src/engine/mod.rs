//! The automation engine: driven by the event log, never by an HTTP handler.
//!
//! - **Ingest.** For each tenant with new events (a commit wakes it; a 5 s
//!   sweep is the safety net), the engine reads the events after the
//!   tenant's automation cursor, matches them against the workflows the
//!   tenant runs (`on`, then the CEL `if`), and starts the runs in one
//!   transaction with the cursor's move ([`Automations::start_runs`](eventflow_store::Automations::start_runs)). A crash
//!   before that commit leaves the cursor where it was: the events are
//!   matched again. A batch with no run moves the cursor lazily (every few
//!   seconds), so an idle write path costs no extra transaction.
//! - **Runs.** A run executes its steps in order. Each step's outcome is
//!   recorded with its effects in one transaction ([`Automations::step_done`](eventflow_store::Automations::step_done)); a
//!   failed step is retried with the webhook schedule (5 s … 12 h, for 72 h)
//!   and then fails the run. Runs are leased: another node (or, on SQLite,
//!   the next start) takes over a run whose node died.
//! - **Timers.** `schedule` sets a durable timer (same key: replaced);
//!   when it is due, [`Automations::fire_timers`](eventflow_store::Automations::fire_timers) deletes it and starts its run in
//!   one transaction, so it fires once. The engine sleeps until the next due
//!   run or timer on the injected clock, and looks at least once a second.
//!
//! # Layout
//! - this module: the [`Engine`], its [`Settings`], starting and stopping.
//! - `ingest`: the loop that turns each tenant's new events into runs.
//! - `due`: the loop that fires due timers and takes due runs.
//! - `run`: executing a run, step after step: renders a step's settings,
//!   hands them to its kind, records the outcome and its effects.
//! - `steps`: one module per kind of step, each a function from the step's
//!   rendered settings to its outcome: `messages` (`sms`, `email`,
//!   `slack`), `http`, `records` (`create`, `update`), `timers`
//!   (`schedule`, `cancel`), `claim`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use eventflow_delivery::policy::RetryPolicy;
use eventflow_store::{AutomationStore, Clock};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::channels::{self, Smtp, Twilio};
use crate::registry::Registry;
use crate::template;

mod due;
mod ingest;
mod run;
mod steps;

/// What the engine needs from the configuration. `Debug` shows no secret
/// (the Slack webhook URL is one: it carries its token).
#[derive(Clone, Default)]
pub struct Settings {
    pub twilio: Option<Twilio>,
    pub smtp: Option<Smtp>,
    pub slack_webhook_url: Option<String>,
    pub claim_url: Option<String>,
    /// `[vars]`: `{{ vars.name }}` in templates.
    pub vars: BTreeMap<String, String>,
    /// The longest a provider or an `http` step may take.
    pub step_timeout: Duration,
    /// `limits.template_fuel` and `limits.template_output_bytes`.
    pub template: template::Bounds,
    /// `limits.workflow_chain_depth`: a workflow write whose run is that
    /// many workflow writes deep fails the run (0: the default, 8).
    pub workflow_chain_depth: u32,
    /// Per provider, the tenants whose own workflows may use it (the
    /// operator's workflows always may).
    pub provider_tenants: ProviderTenants,
    /// Per provider, `daily_quota`: the most one tenant's own workflows may
    /// send through it per UTC day (`None`: no quota).
    pub provider_quotas: ProviderQuotas,
    /// `limits.cel_cost`: the units one evaluation of a workflow's `if` may
    /// spend (0: the default, 100,000).
    pub cel_cost: u64,
    /// The guard of `http` steps and claims: `allow_private_endpoints` and
    /// `--production`'s https rule, as for webhook endpoints.
    pub url_policy: eventflow_delivery::UrlPolicy,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("twilio", &self.twilio)
            .field("smtp", &self.smtp)
            .field(
                "slack_webhook_url",
                &self.slack_webhook_url.as_ref().map(|_| "[redacted]"),
            )
            .field("claim_url", &self.claim_url)
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("step_timeout", &self.step_timeout)
            .field("template", &self.template)
            .field("url_policy", &self.url_policy)
            .field("provider_tenants", &self.provider_tenants)
            .field("provider_quotas", &self.provider_quotas)
            .field("cel_cost", &self.cel_cost)
            .finish()
    }
}

/// `tenants = [...]` of each `[providers.*]` table and of `[billing]`.
#[derive(Debug, Clone, Default)]
pub struct ProviderTenants {
    pub twilio: Vec<String>,
    pub smtp: Vec<String>,
    pub slack: Vec<String>,
    pub billing: Vec<String>,
}

/// `daily_quota` of each `[providers.*]` table and of `[billing]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProviderQuotas {
    pub twilio: Option<u32>,
    pub smtp: Option<u32>,
    pub slack: Option<u32>,
    pub billing: Option<u32>,
}

/// Runs executing at once on a node.
const MAX_RUNNING: usize = 32;
/// Events matched per batch.
const BATCH: u32 = 500;
/// How often a cursor that only moved past unmatched events is saved.
const CURSOR_SAVE_EVERY: Duration = Duration::from_secs(5);
/// The longest a step may call a provider (a run's lease is 60 s).
const MAX_STEP_TIME: Duration = Duration::from_secs(45);

/// The engine of one node.
pub struct Engine {
    store: Arc<dyn AutomationStore>,
    registry: Arc<Registry>,
    settings: Settings,
    http: reqwest::Client,
    mailer: Option<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>>,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    running: Arc<Semaphore>,
    /// Runs this node executes: a run claimed again while it runs is not
    /// started twice.
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The longest a provider or an `http` step may take: well within a
    /// run's lease, so no other node takes a run while a step is under way.
    timeout: Duration,
    /// Pokes the timer loop (a timer was set, a run was put off or ended).
    look_again: Notify,
    /// Passes of the timer loop so far.
    passes: tokio::sync::watch::Sender<u64>,
    /// Set when the server stops: runs end after the step under way.
    stopping: std::sync::atomic::AtomicBool,
    /// Signalled whenever a run this node executes ends or pauses.
    settled: Notify,
    /// Per tenant, the last event sequence this node has matched.
    progress: std::sync::Mutex<HashMap<String, i64>>,
}

impl Engine {
    /// An engine over the store and the workflows. Fails only when the SMTP
    /// settings cannot make a client (a host name that is not one).
    pub fn new(
        store: Arc<dyn AutomationStore>,
        registry: Arc<Registry>,
        settings: Settings,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Engine>, String> {
        let timeout = if settings.step_timeout.is_zero() {
            Duration::from_secs(15)
        } else {
            settings.step_timeout.min(MAX_STEP_TIME)
        };
        let mailer = settings
            .smtp
            .as_ref()
            .map(|s| channels::mailer(s, timeout))
            .transpose()?;
        Ok(Arc::new(Engine {
            store,
            registry,
            settings,
            http,
            mailer,
            clock,
            policy: RetryPolicy::default(),
            running: Arc::new(Semaphore::new(MAX_RUNNING)),
            in_flight: Default::default(),
            timeout,
            look_again: Notify::new(),
            passes: tokio::sync::watch::Sender::new(0),
            progress: Default::default(),
            stopping: Default::default(),
            settled: Notify::new(),
        }))
    }

    /// After the loops were aborted (no run starts any more): lets each run
    /// under way finish the step it is on and record it, then waits, at most
    /// `grace`, for them all, so a restart does not perform a step again that
    /// was performed. Runs resume from their next step after the restart (or
    /// on another node).
    pub async fn stop(&self, grace: Duration) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let running = self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len();
            if running == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, self.settled.notified())
                .await
                .is_err()
            {
                tracing::warn!(
                    running,
                    "stopping: workflow steps still under way; they will be run again"
                );
                return;
            }
        }
    }

    /// Starts the ingest and timer loops; abort the handles to stop.
    pub fn start(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let ingest = self.clone();
        let due = self.clone();
        vec![
            tokio::spawn(async move { ingest.ingest_loop().await }),
            tokio::spawn(async move { due.due_loop().await }),
        ]
    }
    /// Up to `n` run slots that are free now, taken.
    fn free_slots(&self, n: usize) -> Vec<OwnedSemaphorePermit> {
        std::iter::from_fn(|| self.running.clone().try_acquire_owned().ok())
            .take(n)
            .collect()
    }

    /// Whether this node's engine has matched the tenant's events up to
    /// `sequence` and executes no run now. With [`Engine::settle`], what tests
    /// wait on before saying that nothing (more) happened.
    pub fn caught_up(&self, tenant: &str, sequence: i64) -> bool {
        let matched = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .is_some_and(|&p| p >= sequence)
            || sequence == 0;
        matched
            && self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Makes the engine look for due timers and runs now; returns once a
    /// whole pass has run after the call (at most `timeout`; `false` if not).
    pub async fn settle(&self, timeout: Duration) -> bool {
        let mut passes = self.passes.subscribe();
        let settled = async {
            // Two passes: the first may have begun before the call.
            for _ in 0..2 {
                passes.borrow_and_update();
                self.look_again.notify_one();
                if passes.changed().await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(timeout, settled)
            .await
            .unwrap_or(false)
    }
}
