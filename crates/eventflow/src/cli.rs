//! Command-line arguments and the commands that need no server.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use eventflow_model::id::TenantId;
use eventflow_server::{Application, Config, Secret, auth};
use eventflow_store::SystemClock;
use eventflow_store::{NetworkChange, SqliteStore};

use crate::{bench, client};

/// Event Flow: a self-hosted clinical event server. Clinical records in,
/// events out: signed webhooks, polling and streaming, automations.
#[derive(Debug, Parser)]
#[command(name = "eventflow", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "EVENTFLOW_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    ///
    /// Example: eventflow serve --listen 127.0.0.1:7700 --data-dir ./eventflow-data
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    ///
    /// Example: eventflow migrate --data-dir ./eventflow-data
    Migrate(DbArgs),
    /// Manage tenants.
    ///
    /// Example: eventflow tenants create clinic-north --data-dir ./eventflow-data
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Manage organisations: clinic networks.
    ///
    /// Example: eventflow orgs create north-network --data-dir ./eventflow-data
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// Measure the server: write throughput and write → event latency.
    ///
    /// Example: eventflow bench --scenario latency --rate 200 --duration 10
    Bench(bench::BenchArgs),
    /// bench's webhook receiver, run by `eventflow bench` in a process of its own.
    #[command(hide = true)]
    BenchReceiver,
    /// Follow the tenant's events and post each one, signed exactly like a
    /// webhook, to a local URL: develop a receiver with no public address.
    ///
    /// Example: eventflow listen --forward-to http://localhost:3000/webhooks --events 'appointment.*'
    Listen(client::ListenArgs),
    /// Create the records needed for an event of a type to fire, and print their ids.
    ///
    /// Example: eventflow trigger appointment.created
    Trigger(client::TriggerArgs),
    /// Read the event log.
    ///
    /// Example: eventflow events tail --types 'appointment.*'
    #[command(subcommand)]
    Events(EventsCommand),
    /// Manage the tenant's API keys (through the API; needs keys:manage).
    ///
    /// Example: eventflow keys create --name billing --scope appointments:read --scope events:read
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print its secret alone on standard output.
    ///
    /// Example: eventflow keys create --name billing --scope appointments:read --scope events:read
    Create(client::KeysCreateArgs),
    /// List the live keys (never their secrets).
    ///
    /// Example: eventflow keys list
    List(client::KeysListArgs),
    /// Revoke a key: refused on every node within a second.
    ///
    /// Example: eventflow keys revoke key_01J…
    Revoke(client::KeysRevokeArgs),
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Print events as they happen, one line each.
    ///
    /// Example: eventflow events tail --types 'appointment.*,encounter.updated'
    Tail(client::TailArgs),
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    /// Create a tenant and print its API key alone on standard output.
    ///
    /// Works while a server runs on the same database.
    ///
    /// Example: eventflow tenants create clinic-north --data-dir ./eventflow-data
    Create {
        /// The tenant's name (unique).
        name: String,
        /// Make it a member clinic of this organisation (org_…).
        #[arg(long)]
        org: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
enum OrgsCommand {
    /// Create an organisation and print its first API key (every scope)
    /// alone on standard output.
    ///
    /// Example: eventflow orgs create north-network --data-dir ./eventflow-data
    Create {
        /// The organisation's name (unique among tenants and organisations).
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Make an existing clinic a member of the organisation: its events are
    /// in the network's log from its next write on.
    ///
    /// Example: eventflow orgs add-clinic org_… ten_… --data-dir ./eventflow-data
    AddClinic {
        /// The organisation (org_…).
        org: String,
        /// The clinic (ten_…); a clinic belongs to one organisation at most.
        tenant: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "EVENTFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the embedded SQLite database.
    #[arg(long, env = "EVENTFLOW_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A postgres:// URL instead of the embedded SQLite database.
    #[arg(
        long = "database",
        env = "EVENTFLOW_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Address to listen on.
    #[arg(long, env = "EVENTFLOW_LISTEN", value_parser = parse_listen)]
    listen: Option<std::net::SocketAddr>,
    /// How the outside world reaches this server.
    #[arg(long, env = "EVENTFLOW_PUBLIC_URL")]
    public_url: Option<String>,
    /// Directory of workflow files.
    #[arg(long = "workflows", env = "EVENTFLOW_WORKFLOWS_DIR")]
    workflows_dir: Option<PathBuf>,
    /// Allow webhook endpoints on private addresses.
    #[arg(long, env = "EVENTFLOW_ALLOW_PRIVATE_ENDPOINTS", value_parser = parse_allow_private)]
    allow_private_endpoints: Option<bool>,
    /// Days events are kept.
    #[arg(long, env = "EVENTFLOW_EVENT_RETENTION_DAYS", value_parser = parse_retention_days)]
    event_retention_days: Option<u32>,
    /// Production mode: no private endpoints, https only.
    #[arg(long, env = "EVENTFLOW_PRODUCTION")]
    production: bool,
}

// A value can come from the flag or from its variable, and clap's message
// names only the flag: these parsers name both, so a bad variable is found.

fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        "listen: must be an address such as 127.0.0.1:7700 (from --listen or EVENTFLOW_LISTEN)"
            .to_string()
    })
}

fn parse_allow_private(s: &str) -> Result<bool, String> {
    s.trim().parse().map_err(|_| {
        "allow_private_endpoints: must be true or false (from --allow-private-endpoints or EVENTFLOW_ALLOW_PRIVATE_ENDPOINTS)"
            .to_string()
    })
}

fn parse_retention_days(s: &str) -> Result<u32, String> {
    s.trim().parse().map_err(|_| {
        "event_retention_days: must be a whole number of days (from --event-retention-days or EVENTFLOW_EVENT_RETENTION_DAYS)"
            .to_string()
    })
}

impl DbArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(u) = &self.database_url {
            config.database_url = u.clone();
        }
        Ok(config)
    }
}

impl ServeArgs {
    /// The configuration: defaults, then the file, then flags and variables.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = self.db.load()?;
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = &self.public_url {
            config.public_url = Some(v.clone());
        }
        if let Some(v) = &self.workflows_dir {
            config.workflows_dir = v.clone();
        }
        if let Some(v) = self.allow_private_endpoints {
            config.allow_private_endpoints = v;
        }
        if let Some(v) = self.event_retention_days {
            config.event_retention_days = v;
        }
        config.production |= self.production;
        // The key of the `default` tenant is read from the environment or
        // from a file, never from a flag (which any local user sees in `ps`).
        if let Some(k) = std::env::var_os("EVENTFLOW_BOOTSTRAP_API_KEY") {
            let k = k
                .into_string()
                .map_err(|_| anyhow::anyhow!("EVENTFLOW_BOOTSTRAP_API_KEY: must be valid UTF-8"))?;
            config.bootstrap_api_key = Some(Secret::new(k));
        }
        if let Some(f) = std::env::var_os("EVENTFLOW_BOOTSTRAP_API_KEY_FILE") {
            config.bootstrap_api_key_file = Some(f.into());
        }
        config.validate()?;
        Ok(config)
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    // Colours only on a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            init_logging(cli.log_format);
            serve(args).await
        }
        Command::Migrate(db) => migrate(db).await,
        Command::Tenants(TenantsCommand::Create { name, org, db }) => {
            create_tenant(&name, org.as_deref(), db).await
        }
        Command::Orgs(OrgsCommand::Create { name, db }) => create_org(&name, db).await,
        Command::Orgs(OrgsCommand::AddClinic { org, tenant, db }) => {
            add_clinic(&org, &tenant, db).await
        }
        Command::Bench(args) => bench::run(args).await,
        Command::BenchReceiver => bench::receive().await,
        Command::Listen(args) => client::listen(args).await,
        Command::Trigger(args) => client::trigger(args).await,
        Command::Keys(KeysCommand::Create(args)) => client::keys_create(args).await,
        Command::Keys(KeysCommand::List(args)) => client::keys_list(args).await,
        Command::Keys(KeysCommand::Revoke(args)) => client::keys_revoke(args).await,
        Command::Events(EventsCommand::Tail(args)) => client::tail(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    // Descriptors for every connection the cap allows, plus the database's.
    if let Some(open_files) = eventflow_server::conn::raise_open_files_limit()
        && open_files < config.limits.max_connections as u64 + 64
    {
        tracing::warn!(
            open_files,
            max_connections = config.limits.max_connections,
            "the open files limit is below limits.max_connections: lower max_connections or raise the hard limit (ulimit -Hn)"
        );
    }
    let app = Application::build(config, Arc::new(SystemClock)).await?;
    if let Some(b) = app.bootstrap() {
        match (&b.generated_key, &b.key_file) {
            (Some(key), Some(file)) => println!(
                "Created tenant `default` ({}). Its API key, shown only this once:\n\n    {}\n\nIt is also saved in {} (mode 0600).\n",
                b.tenant_id,
                key.expose(),
                file.display()
            ),
            (Some(key), None) => println!(
                "Created tenant `default` ({}). Its API key, shown only this once (it could not be saved to a file):\n\n    {}\n",
                b.tenant_id,
                key.expose()
            ),
            (None, _) => println!(
                "Created tenant `default` ({}) with the key you chose (EVENTFLOW_BOOTSTRAP_API_KEY or bootstrap_api_key_file).",
                b.tenant_id
            ),
        }
    }
    tracing::info!(address = %app.local_addr(), "Event Flow listening");
    println!("Event Flow listening on http://{}", app.local_addr());
    app.run_until_stopped(shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn migrate(db: DbArgs) -> anyhow::Result<()> {
    let mut config = db.load()?;
    config.validate()?;
    if !config.database_url.is_empty() {
        eventflow_store::PgStore::migrate(&config.database_url).await?;
        eprintln!("migrations applied to the PostgreSQL database");
        return Ok(());
    }
    eventflow_server::create_data_dir(&config.data_dir)?;
    SqliteStore::migrate(&eventflow_server::sqlite_path(&config.data_dir)).await?;
    eprintln!(
        "migrations applied to {}",
        eventflow_server::sqlite_path(&config.data_dir).display()
    );
    Ok(())
}

/// A name as `tenants create` and `orgs create` take it.
fn checked_name(name: &str) -> anyhow::Result<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        anyhow::bail!("NAME: must be 1 to 100 characters");
    }
    Ok(name)
}

/// An organisation's id given on the command line.
fn org_arg(org: &str) -> anyhow::Result<TenantId> {
    TenantId::parse_organisation(org.trim())
        .map_err(|_| anyhow::anyhow!("ORG: must be an organisation's id, org_…"))
}

async fn open(db: DbArgs) -> anyhow::Result<(Arc<dyn eventflow_store::Store>, Config)> {
    let mut config = db.load()?;
    config.validate()?;
    let store = eventflow_server::open_store(&config, Arc::new(SystemClock)).await?;
    Ok((store, config))
}

async fn create_tenant(name: &str, org: Option<&str>, db: DbArgs) -> anyhow::Result<()> {
    let name = checked_name(name)?;
    let org = org.map(org_arg).transpose()?;
    let (store, config) = open(db).await?;
    let key = auth::generate_key();
    let tenant = match org {
        None => store
            .create_tenant(name, &auth::hash_key(&key), false)
            .await?
            .context("tenant not created")?,
        Some(org) => {
            let done = store
                .change_network(NetworkChange::CreateClinic {
                    org: org.clone(),
                    name: name.to_string(),
                    key_hash: auth::hash_key(&key),
                    key_name: "tenants create".into(),
                    max_clinics: config.limits.clinics_per_organisation,
                })
                .await?;
            eprintln!("a member clinic of {org}");
            done.tenant.context("tenant not created")?
        }
    };
    eprintln!("created tenant {name} ({})", tenant.tenant_id);
    println!("{key}");
    Ok(())
}

async fn create_org(name: &str, db: DbArgs) -> anyhow::Result<()> {
    let name = checked_name(name)?;
    let (store, _) = open(db).await?;
    let key = auth::generate_key();
    let done = store
        .change_network(NetworkChange::CreateOrganisation {
            name: name.to_string(),
            key_hash: auth::hash_key(&key),
        })
        .await?;
    let org = done.tenant.context("organisation not created")?;
    eprintln!("created organisation {name} ({})", org.tenant_id);
    println!("{key}");
    Ok(())
}

async fn add_clinic(org: &str, tenant: &str, db: DbArgs) -> anyhow::Result<()> {
    let org = org_arg(org)?;
    let clinic = TenantId::parse(tenant.trim())
        .map_err(|_| anyhow::anyhow!("TENANT: must be a clinic's id, ten_…"))?;
    let (store, config) = open(db).await?;
    let done = store
        .change_network(NetworkChange::AddClinic {
            org: org.clone(),
            clinic,
            max_clinics: config.limits.clinics_per_organisation,
        })
        .await?;
    let clinic = done.clinic.context("the clinic did not join")?;
    eprintln!(
        "{} ({}) is a member of {org} since {}",
        clinic.name, clinic.id, clinic.joined_at
    );
    Ok(())
}
