//! The HTTP face of Event Flow: axum routes, authentication and scopes,
//! errors to HTTP, OpenAPI, metrics, the developer portal. Only this crate
//! knows HTTP.
//!
//! # Layout
//! - [`Application`]: build from a [`Config`], then `run_until_stopped` —
//!   the same path in production and in tests.
//! - [`config`]: the configuration file, its defaults and checks.
//! - [`error`]: [`ApiError`], the one error shape clients see.
//! - [`auth`]: API keys (hashing, the key cache, failed-attempt counts), the
//!   `authorize` route layer that checks each route's scope, and the
//!   [`auth::Auth`] extractor.
//! - [`extract`]: JSON body and query extractors with API-shaped rejections.
//! - [`routes`]: one module per area, each with a `router()`.
//! - [`openapi`]: the OpenAPI 3.1 document, built from the record field tables.
//! - [`fhir`]: the FHIR R4B facade at `/fhir`: `map` (records as FHIR
//!   resources, from the model), `write` (resources back into records), `capability` (the
//!   CapabilityStatement), `topics` (the SubscriptionTopics), `subscription`
//!   (topic-based Subscriptions, endpoints underneath), and the layer that makes every error there an
//!   `OperationOutcome`.
//! - [`catalogue`]: the event catalogue (each type and topic, the JSON Schema
//!   of its envelope, an example) and the AsyncAPI document of the webhooks.
//! - [`telemetry`]: the Prometheus recorder and the request middleware.
//! - [`conn`]: serving connections: the cap, and the read and idle timeouts.
//! - [`streams`]: open streams and long polls counted per API key.
//! - [`portal`]: the developer portal at `/portal`, built on the API in process.
//!   `portal/mod.rs` has its router; `session` the sessions and the `Me`
//!   (signed in) and `Posted` (CSRF-checked form) extractors; `sign_in`,
//!   `endpoints` (with `chart`), `events`, `automations` and `assets` the
//!   pages.

pub mod auth;
pub mod catalogue;
pub mod config;
pub mod conn;
pub mod error;
pub mod extract;
pub mod fhir;
pub mod openapi;
pub mod portal;
pub mod routes;
pub mod streams;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use eventflow_store::{Clock, Store, StoreError};
use eventflow_store::{PgConfig, PgStore};
use eventflow_store::{SqliteConfig, SqliteStore};
use tokio::net::TcpListener;

pub use config::{Config, ConfigError, Secret};
pub use error::{ApiError, ApiResult};

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<Config>,
    pub keys: Arc<auth::KeyCache>,
    /// Turns true when the server begins to stop: open streams and long
    /// polls end, so the graceful shutdown does not wait on them.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The delivery client, for test sends.
    pub http: reqwest::Client,
    /// The workflow files, loaded and kept current.
    pub workflows: Arc<eventflow_automations::Registry>,
    /// This node's automation engine.
    pub engine: Arc<eventflow_automations::Engine>,
    /// Wakes the replay driver when a replay is left running.
    pub replays: Arc<tokio::sync::Notify>,
    /// Wakes this node's verifier when a challenge is made due.
    pub verify: Arc<tokio::sync::Notify>,
    /// Open streams and long polls per API key.
    pub streams: Arc<streams::Streams>,
    /// Permits to read a large request body (`limits.large_bodies`).
    pub large_bodies: Arc<extract::LargeBodies>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(String),
}

/// The bootstrap key of the `default` tenant, when this start created it
/// and generated the key (so the caller prints it once).
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub tenant_id: String,
    /// The generated key; `None` when it came from `EVENTFLOW_BOOTSTRAP_API_KEY`.
    pub generated_key: Option<Secret>,
    /// Where the generated key was written.
    pub key_file: Option<std::path::PathBuf>,
}

/// Opens the store the configuration names: SQLite under `data_dir` unless
/// `database_url` names a PostgreSQL database.
pub async fn open_store(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Store>, StartError> {
    if !config.database_url.is_empty() {
        let pg = PgConfig {
            pool_size: config.database_pool_size,
            statement_timeout: Duration::from_secs(config.database_statement_timeout_secs),
            cel_cost: config.limits.cel_cost,
            max_record_bytes: config.limits.max_record_bytes,
            ..PgConfig::default()
        };
        return Ok(PgStore::open(&config.database_url, clock, pg).await?);
    }
    create_data_dir(&config.data_dir)?;
    let store = SqliteStore::open(
        &sqlite_path(&config.data_dir),
        clock,
        SqliteConfig {
            cel_cost: config.limits.cel_cost,
            max_record_bytes: config.limits.max_record_bytes,
            ..SqliteConfig::default()
        },
    )
    .await?;
    Ok(store)
}

/// Creates the data directory, readable by its owner alone (0700, whatever
/// the umask): it holds the database and the bootstrap key. A directory
/// that exists already is left as it is.
pub fn create_data_dir(dir: &Path) -> Result<(), StartError> {
    let fail = |e: std::io::Error| {
        StartError::Io(format!("cannot create data_dir {}: {e}", dir.display()))
    };
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir).map_err(fail)?;
        // The umask may have taken bits off (never added any): set it exactly.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    #[cfg(not(unix))]
    builder.create(dir).map_err(fail)?;
    Ok(())
}

/// The SQLite database file under a data directory.
pub fn sqlite_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("eventflow.db")
}

/// Creates the `default` tenant on first start.
pub async fn bootstrap(
    config: &Config,
    store: &dyn Store,
) -> Result<Option<Bootstrap>, StartError> {
    let (key, generated) = match &config.bootstrap_api_key {
        Some(k) => {
            config::check_bootstrap_key(k.expose(), "EVENTFLOW_BOOTSTRAP_API_KEY")?;
            (k.expose().to_string(), false)
        }
        None => (auth::generate_key(), true),
    };
    if generated {
        // The key file goes in data_dir, which only the SQLite backend has
        // created so far: make sure it exists before the tenant does, or a
        // failed write would leave `default` with a key nobody ever saw.
        create_data_dir(&config.data_dir)?;
    }
    let Some(tenant) = store
        .create_tenant("default", &auth::hash_key(&key), true)
        .await?
    else {
        return Ok(None);
    };
    let mut key_file = None;
    if generated {
        let path = config.data_dir.join("bootstrap-api-key");
        // The tenant exists now: whatever happens to the file, the caller
        // must still print the key, or it is lost.
        match write_private(&path, &format!("{key}\n")) {
            Ok(()) => key_file = Some(path),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not save the bootstrap key; it is printed once only")
            }
        }
    }
    Ok(Some(Bootstrap {
        tenant_id: tenant.tenant_id.into_string(),
        generated_key: generated.then(|| Secret::new(key)),
        key_file,
    }))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(text.as_bytes())
}

/// A built server: bound to its port, store open, ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    bootstrap: Option<Bootstrap>,
    stopping: tokio::sync::watch::Sender<bool>,
}

/// The engine's settings from the configuration.
fn engine_settings(config: &Config) -> Result<eventflow_automations::Settings, StartError> {
    use eventflow_automations::channels;
    let p = &config.providers;
    let ca_pem = match p.smtp.as_ref().and_then(|s| s.ca_file.as_ref()) {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            StartError::Io(format!(
                "providers.smtp.ca_file: cannot read {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    Ok(eventflow_automations::Settings {
        twilio: p.twilio.as_ref().map(|t| channels::Twilio {
            account_sid: t.account_sid.clone(),
            auth_token: t.auth_token.expose().to_string(),
            from: t.from.clone(),
            base_url: t.base_url.clone(),
        }),
        smtp: p.smtp.as_ref().map(|s| channels::Smtp {
            host: s.host.clone(),
            port: s.port,
            username: s.username.clone(),
            password: s.password.expose().to_string(),
            from: s.from.clone(),
            tls: match s.tls {
                config::SmtpTls::None => channels::SmtpTls::None,
                config::SmtpTls::Starttls => channels::SmtpTls::Starttls,
                config::SmtpTls::Tls => channels::SmtpTls::Tls,
            },
            ca_pem: ca_pem.clone(),
        }),
        slack_webhook_url: p.slack.as_ref().map(|s| s.webhook_url.expose().to_string()),
        claim_url: config.billing.as_ref().map(|b| b.claim_url.clone()),
        vars: config.vars.clone(),
        step_timeout: Duration::from_secs(config.delivery_timeout_secs),
        template: eventflow_automations::template::Bounds {
            fuel: config.limits.template_fuel,
            output_bytes: config.limits.template_output_bytes,
        },
        url_policy: eventflow_delivery::UrlPolicy {
            allow_private: config.allow_private_endpoints,
            https_only: config.production,
        },
        workflow_chain_depth: config.limits.workflow_chain_depth,
        provider_tenants: eventflow_automations::ProviderTenants {
            twilio: p
                .twilio
                .as_ref()
                .map(|t| t.tenants.clone())
                .unwrap_or_default(),
            smtp: p
                .smtp
                .as_ref()
                .map(|s| s.tenants.clone())
                .unwrap_or_default(),
            slack: p
                .slack
                .as_ref()
                .map(|s| s.tenants.clone())
                .unwrap_or_default(),
            billing: config
                .billing
                .as_ref()
                .map(|b| b.tenants.clone())
                .unwrap_or_default(),
        },
        cel_cost: config.limits.cel_cost,
        provider_quotas: eventflow_automations::ProviderQuotas {
            twilio: p.twilio.as_ref().and_then(|t| t.daily_quota),
            smtp: p.smtp.as_ref().and_then(|s| s.daily_quota),
            slack: p.slack.as_ref().and_then(|s| s.daily_quota),
            billing: config.billing.as_ref().and_then(|b| b.daily_quota),
        },
    })
}

impl Application {
    /// Opens the store, creates the bootstrap tenant if the database is new,
    /// and binds the listener (port 0 picks a free one).
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> Result<Application, StartError> {
        let store = open_store(&config, clock.clone()).await?;
        Self::with_store(config, clock, store).await
    }

    /// Like [`build`](Self::build) with a store already open.
    pub async fn with_store(
        config: Config,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
    ) -> Result<Application, StartError> {
        telemetry::prometheus();
        let bootstrap = bootstrap(&config, &*store).await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let (stopping, shutdown) = tokio::sync::watch::channel(false);
        let http = eventflow_delivery::http::client(
            config.allow_private_endpoints,
            Duration::from_secs(config.delivery_timeout_secs),
        );
        let workflows = Arc::new(eventflow_automations::Registry::load_checked(
            &config.workflows_dir,
            eventflow_automations::Checks {
                url_policy: Some(eventflow_delivery::UrlPolicy {
                    allow_private: config.allow_private_endpoints,
                    https_only: config.production,
                }),
                cel_cost: config.limits.cel_cost,
            },
        ));
        let engine = eventflow_automations::Engine::new(
            store.clone(),
            workflows.clone(),
            engine_settings(&config)?,
            http.clone(),
            clock.clone(),
        )
        .map_err(StartError::Io)?;
        let keys = Arc::new(auth::KeyCache::new(&config.limits));
        let streams = streams::Streams::new(config.limits.streams_per_key);
        let large_bodies = Arc::new(extract::LargeBodies::new(config.limits.large_bodies));
        let state = AppState {
            store,
            clock,
            config: Arc::new(config),
            http,
            workflows,
            engine,
            keys,
            shutdown,
            replays: Arc::default(),
            verify: Arc::default(),
            streams,
            large_bodies,
        };
        let router = routes::router(state.clone());
        Ok(Application {
            listener,
            router,
            state,
            bootstrap,
            stopping,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.listen)
    }

    /// Set when this start created the `default` tenant.
    pub fn bootstrap(&self) -> Option<&Bootstrap> {
        self.bootstrap.as_ref()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains open requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let retention = tokio::spawn(retention_loop(self.state.clone()));
        let replays = tokio::spawn(replay_loop(self.state.clone()));
        let watcher = self.state.workflows.watch(Duration::from_secs(1));
        let config = &self.state.config;
        let dispatcher = eventflow_delivery::dispatcher::start(
            self.state.store.clone(),
            self.state.clock.clone(),
            eventflow_delivery::dispatcher::DispatchConfig {
                allow_private: config.allow_private_endpoints,
                timeout: Duration::from_secs(config.delivery_timeout_secs),
                per_endpoint_concurrency: config.delivery_concurrency as usize,
                verify_wake: self.state.verify.clone(),
                ..Default::default()
            },
            self.state.shutdown.clone(),
        );
        let engine = self.state.engine.start();
        let stopping = self.stopping;
        let stopped = stopping.subscribe();
        tokio::spawn(async move {
            shutdown.await;
            let _ = stopping.send(true);
        });
        let bounds = conn::Bounds::from(&self.state.config.limits);
        let result = conn::serve(self.listener, self.router, bounds, stopped).await;
        retention.abort();
        replays.abort();
        watcher.abort();
        for task in engine {
            task.abort();
        }
        // Attempts and steps under way finish and are recorded, within a
        // bound, so a deploy does not send again what was sent.
        let grace = Duration::from_secs(self.state.config.shutdown_grace_secs);
        let deliveries = async {
            if let Some(d) = dispatcher {
                d.stop(grace).await;
            }
        };
        tokio::join!(deliveries, self.state.engine.stop(grace));
        result
    }
}

/// Drives running replays (this node's, and any other node's that stopped),
/// a chunk — one short write — of each in turn, so other writes go on
/// between chunks and one long replay does not hold back another. Woken
/// when a replay is left running, and looks every second.
async fn replay_loop(state: AppState) {
    loop {
        let running = match state.store.running_replays(64).await {
            Ok(running) => running,
            Err(e) => {
                tracing::warn!(error = %e, "could not list running replays");
                Vec::new()
            }
        };
        let mut progress = false;
        for (tenant, id) in running {
            match state.store.replay_chunk(&tenant, &id).await {
                Ok(Some(_)) => progress = true,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(replay = %id, error = %e, "replay chunk failed; will try again")
                }
            }
            tokio::task::yield_now().await;
        }
        if !progress {
            let _ = tokio::time::timeout(Duration::from_secs(1), state.replays.notified()).await;
        }
    }
}

/// Deletes the history past its retention, at start and hourly.
async fn retention_loop(state: AppState) {
    loop {
        match retention_pass(&state).await {
            Ok(p) if p == eventflow_store::Purged::default() => {}
            Ok(p) => tracing::info!(
                events = p.events,
                deliveries = p.deliveries,
                audit_entries = p.audit_entries,
                disclosures = p.disclosures,
                "retention: deleted old history"
            ),
            Err(e) => tracing::warn!(error = %e, "retention clean-up failed"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// One retention pass, at the clock's now: events older than
/// `event_retention_days` (with their deliveries), deliveries no longer
/// pending older than `delivery_retention_days`, audit entries older than
/// `audit_retention_days`, disclosure records older than
/// `disclosure_retention_days`; each in writes of bounded size.
pub async fn retention_pass(state: &AppState) -> eventflow_store::Result<eventflow_store::Purged> {
    let now = state.clock.now();
    let c = &state.config;
    // At most 36,500 days (checked with the configuration): within jiff's range.
    let before = |days: u32| {
        now.checked_sub(jiff::SignedDuration::from_hours(24 * i64::from(days)))
            .unwrap_or(jiff::Timestamp::MIN)
    };
    state
        .store
        .purge(eventflow_store::Retention {
            events_before: before(c.event_retention_days),
            deliveries_before: before(c.delivery_retention_days),
            audit_before: before(c.audit_retention_days),
            disclosures_before: before(c.disclosure_retention_days),
        })
        .await
}
