//! Configuration (docs/design.md §6): defaults built in, then the TOML file, then
//! `EVENTFLOW_*` variables and flags (applied by the binary). Unknown keys and
//! bad values stop start-up with a message naming the key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A secret from the configuration: printed as `[redacted]`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The whole configuration. Every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// How the outside world reaches this server (default `http://<listen>`).
    pub public_url: Option<String>,
    /// Where the embedded SQLite database and the bootstrap key live.
    pub data_dir: PathBuf,
    /// Empty: SQLite under `data_dir`. `postgres://…`: PostgreSQL.
    pub database_url: String,
    /// PostgreSQL: connections in the read pool (the writer and the commit
    /// listener have one each besides).
    pub database_pool_size: u32,
    /// PostgreSQL: the longest a statement may run, in seconds.
    pub database_statement_timeout_secs: u64,
    /// Workflow files (automations).
    pub workflows_dir: PathBuf,
    /// Whether webhook endpoints may resolve to private addresses.
    pub allow_private_endpoints: bool,
    /// Which endpoints prove they control their URL before deliveries go.
    pub endpoint_verification: EndpointVerification,
    /// Days events are kept.
    pub event_retention_days: u32,
    /// Days deliveries (with their attempts) are kept once no longer pending.
    pub delivery_retention_days: u32,
    /// Days audit entries are kept.
    pub audit_retention_days: u32,
    /// Days disclosure records are kept, whatever the other retentions.
    pub disclosure_retention_days: u32,
    /// Seconds a webhook receiver has to answer.
    pub delivery_timeout_secs: u64,
    /// Delivery attempts in flight at once, per endpoint.
    pub delivery_concurrency: u32,
    /// Seconds a stopping server gives the delivery attempts and workflow
    /// steps under way to finish and be recorded.
    pub shutdown_grace_secs: u64,
    /// Seconds between the safety-net reads of a waiting long poll or
    /// stream, should a commit's wake-up be lost.
    pub reader_recheck_secs: u64,
    /// Channel providers for automations.
    pub providers: Providers,
    /// Where billing claims go.
    pub billing: Option<Billing>,
    /// Free values for workflow templates.
    pub vars: BTreeMap<String, String>,
    /// Bounds on what clients and tenants can make the server do.
    pub limits: Limits,
    /// Production mode (`--production`): no private endpoints, https only.
    #[serde(skip)]
    pub production: bool,
    /// A file holding the key of the `default` tenant on first start
    /// (`EVENTFLOW_BOOTSTRAP_API_KEY_FILE`); read by [`Config::validate`].
    pub bootstrap_api_key_file: Option<PathBuf>,
    /// Key of the `default` tenant on first start (`EVENTFLOW_BOOTSTRAP_API_KEY`,
    /// or read from `bootstrap_api_key_file`). Never a flag: a flag shows in `ps`.
    #[serde(skip)]
    pub bootstrap_api_key: Option<Secret>,
}

/// The shortest bootstrap key accepted.
pub const MIN_BOOTSTRAP_KEY_LEN: usize = 32;

/// Checks a bootstrap key chosen by the operator; `source` names where it
/// came from (the variable or the file), never the key.
pub fn check_bootstrap_key(key: &str, source: &str) -> Result<(), ConfigError> {
    if key.chars().count() < MIN_BOOTSTRAP_KEY_LEN {
        return Err(ConfigError(format!(
            "{source}: the bootstrap API key must be at least {MIN_BOOTSTRAP_KEY_LEN} characters \
             (a random one: `openssl rand -base64 32`)"
        )));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError(format!(
            "{source}: the bootstrap API key may not contain spaces or control characters"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Providers {
    pub twilio: Option<Twilio>,
    pub smtp: Option<Smtp>,
    pub slack: Option<Slack>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Twilio {
    pub account_sid: String,
    pub auth_token: Secret,
    pub from: String,
    #[serde(default = "default_twilio_url")]
    pub base_url: String,
    /// Tenants (`ten_…`) whose own workflows may use it; the operator's
    /// workflows always may. Empty: the operator's only.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// The most messages one tenant's own workflows may send through it per
    /// UTC day; a step past it fails and sends nothing. The operator's
    /// workflows are not counted. `None`: no quota.
    #[serde(default)]
    pub daily_quota: Option<u32>,
}

fn default_twilio_url() -> String {
    "https://api.twilio.com".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: Secret,
    pub from: String,
    #[serde(default)]
    pub tls: SmtpTls,
    /// A PEM file of a certificate authority to trust besides the public
    /// ones (a clinic's own mail relay).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Tenants (`ten_…`) whose own workflows may use it; the operator's
    /// workflows always may. Empty: the operator's only.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// The most emails one tenant's own workflows may send through it per
    /// UTC day; a step past it fails and sends nothing. The operator's
    /// workflows are not counted. `None`: no quota.
    #[serde(default)]
    pub daily_quota: Option<u32>,
}

fn default_smtp_port() -> u16 {
    587
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    #[default]
    Starttls,
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slack {
    pub webhook_url: Secret,
    /// Tenants (`ten_…`) whose own workflows may use it; the operator's
    /// workflows always may. Empty: the operator's only.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// The most messages one tenant's own workflows may send through it per
    /// UTC day; a step past it fails and sends nothing. The operator's
    /// workflows are not counted. `None`: no quota.
    #[serde(default)]
    pub daily_quota: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Billing {
    pub claim_url: String,
    /// Tenants (`ten_…`) whose own workflows may use it; the operator's
    /// workflows always may. Empty: the operator's only.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// The most claims one tenant's own workflows may send through it per
    /// UTC day; a step past it fails and sends nothing. The operator's
    /// workflows are not counted. `None`: no quota.
    #[serde(default)]
    pub daily_quota: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            public_url: None,
            data_dir: PathBuf::from("./eventflow-data"),
            database_url: String::new(),
            database_pool_size: 8,
            database_statement_timeout_secs: 30,
            workflows_dir: PathBuf::from("./workflows"),
            allow_private_endpoints: true,
            endpoint_verification: EndpointVerification::Full,
            event_retention_days: 30,
            delivery_retention_days: 30,
            audit_retention_days: 2190,
            disclosure_retention_days: 2190,
            delivery_timeout_secs: 15,
            delivery_concurrency: 16,
            shutdown_grace_secs: 20,
            reader_recheck_secs: 5,
            providers: Providers::default(),
            billing: None,
            vars: BTreeMap::new(),
            limits: Limits::default(),
            production: false,
            bootstrap_api_key_file: None,
            bootstrap_api_key: None,
        }
    }
}

/// `[limits]`: every bound that input reaches, with safe defaults. Each is
/// listed, with what happens when it is reached, in the README's "Limits".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Cost units one CEL evaluation (an endpoint `filter`, a workflow
    /// `if`) may spend before it stops as "no match".
    pub cel_cost: u64,
    /// Largest serialized record, in bytes, on every write path.
    pub max_record_bytes: usize,
    /// Largest page of events or records, in bytes (a page always holds at
    /// least one item).
    pub max_page_bytes: usize,
    /// Largest `/v1/batch` body, in bytes.
    pub max_batch_bytes: usize,
    /// Request bodies over 1 MiB being read at once, in all.
    pub large_bodies: usize,
    /// Open event streams and long polls per API key.
    pub streams_per_key: usize,
    /// Open connections in all; more are refused.
    pub max_connections: usize,
    /// Seconds a client has to send a request's head.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    pub body_read_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open.
    pub idle_timeout_secs: u64,
    /// Failed API-key or sign-in attempts per client address per minute.
    pub auth_failures_per_minute: u32,
    /// Seconds a known API key stays cached.
    pub key_cache_ttl_secs: u64,
    /// Entries in the API-key cache.
    pub key_cache_entries: usize,
    /// Template fuel per render (minijinja instructions).
    pub template_fuel: u64,
    /// Largest rendered template, in bytes.
    pub template_output_bytes: usize,
    /// Workflow writes caused by workflow writes, at most, before the run
    /// fails with "loop".
    pub workflow_chain_depth: u32,
    /// Live (not revoked) API keys one tenant may hold.
    pub keys_per_tenant: u32,
    /// Member clinics one organisation may have.
    pub clinics_per_organisation: u32,
    /// Matches a FHIR search counts for its `total`; past it, `total` is
    /// left out.
    pub fhir_search_total: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cel_cost: eventflow_model::filter::DEFAULT_COST_LIMIT,
            max_record_bytes: eventflow_store::DEFAULT_MAX_RECORD_BYTES,
            max_page_bytes: eventflow_store::DEFAULT_PAGE_BYTES,
            max_batch_bytes: 4 * 1024 * 1024,
            large_bodies: 2,
            streams_per_key: 32,
            max_connections: 4096,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            idle_timeout_secs: 75,
            auth_failures_per_minute: 30,
            key_cache_ttl_secs: 60,
            key_cache_entries: 10_000,
            template_fuel: 200_000,
            template_output_bytes: 64 * 1024,
            workflow_chain_depth: 8,
            keys_per_tenant: 1000,
            clinics_per_organisation: 1000,
            fhir_search_total: 10_000,
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 19] = [
            ("cel_cost", self.cel_cost),
            ("max_record_bytes", self.max_record_bytes as u64),
            ("max_page_bytes", self.max_page_bytes as u64),
            ("max_batch_bytes", self.max_batch_bytes as u64),
            ("large_bodies", self.large_bodies as u64),
            ("streams_per_key", self.streams_per_key as u64),
            ("max_connections", self.max_connections as u64),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            (
                "auth_failures_per_minute",
                u64::from(self.auth_failures_per_minute),
            ),
            ("key_cache_ttl_secs", self.key_cache_ttl_secs),
            ("key_cache_entries", self.key_cache_entries as u64),
            ("template_fuel", self.template_fuel),
            ("template_output_bytes", self.template_output_bytes as u64),
            ("workflow_chain_depth", u64::from(self.workflow_chain_depth)),
            ("keys_per_tenant", u64::from(self.keys_per_tenant)),
            (
                "clinics_per_organisation",
                u64::from(self.clinics_per_organisation),
            ),
            ("fhir_search_total", u64::from(self.fhir_search_total)),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError(format!("limits.{key}: must be at least 1")));
            }
        }
        if self.max_record_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError(
                "limits.max_record_bytes: must be at most 16777216".into(),
            ));
        }
        if self.max_batch_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError(
                "limits.max_batch_bytes: must be at most 67108864".into(),
            ));
        }
        if self.key_cache_ttl_secs > 60 {
            return Err(ConfigError(
                "limits.key_cache_ttl_secs: must be at most 60".into(),
            ));
        }
        Ok(())
    }
}

/// The longest `delivery_timeout_secs`: an attempt ends at least 15 s
/// before the 60 s lease on its delivery could pass to another node.
pub const MAX_DELIVERY_TIMEOUT_SECS: u64 = 45;

/// Which endpoints must answer a challenge before deliveries go to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EndpointVerification {
    /// Endpoints with full payloads (patient data); thin ones deliver at once.
    #[default]
    Full,
    /// Every endpoint.
    All,
    /// None: no challenge is sent unless asked for (`POST …/verify`).
    Off,
}

impl EndpointVerification {
    /// Whether an endpoint with this payload waits for its verification.
    pub fn requires(self, payload: eventflow_store::PayloadMode) -> bool {
        match self {
            EndpointVerification::Full => payload == eventflow_store::PayloadMode::Full,
            EndpointVerification::All => true,
            EndpointVerification::Off => false,
        }
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Self::from_toml(&text)
            .map_err(|e| ConfigError(format!("config file {}: {}", path.display(), e.0)))
    }

    /// Parses TOML over the defaults.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            // serde's message names an unknown key but not the key whose
            // value is wrong ("invalid socket address syntax"): find the key
            // at the error's position and put it first.
            let message = e.message().trim_end();
            match e.span().and_then(|span| key_at(text, span)) {
                Some(key) => ConfigError(format!("{key}: {message}{}", key_hint(&e))),
                None => ConfigError(format!("{message}{}", key_hint(&e))),
            }
        })
    }

    /// Checks values that types alone do not; call after all overrides.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if self.production {
            self.allow_private_endpoints = false;
        }
        for (name, days) in [
            ("event_retention_days", self.event_retention_days),
            ("delivery_retention_days", self.delivery_retention_days),
            ("audit_retention_days", self.audit_retention_days),
            ("disclosure_retention_days", self.disclosure_retention_days),
        ] {
            if days == 0 || days > 36_500 {
                return Err(ConfigError(format!("{name}: must be from 1 to 36500")));
            }
        }
        if self.database_pool_size == 0 || self.database_pool_size > 1000 {
            return Err(ConfigError(
                "database_pool_size: must be from 1 to 1000".into(),
            ));
        }
        // An attempt must end well within the lease (60 s) that keeps other
        // nodes from taking the delivery while it is under way.
        if self.delivery_timeout_secs == 0 || self.delivery_timeout_secs > MAX_DELIVERY_TIMEOUT_SECS
        {
            return Err(ConfigError(format!(
                "delivery_timeout_secs: must be from 1 to {MAX_DELIVERY_TIMEOUT_SECS} (an attempt ends within the 60 s lease on its delivery)"
            )));
        }
        if !(1..=3600).contains(&self.reader_recheck_secs) {
            return Err(ConfigError(
                "reader_recheck_secs: must be from 1 to 3600".into(),
            ));
        }
        if self.shutdown_grace_secs > 300 {
            return Err(ConfigError(
                "shutdown_grace_secs: must be at most 300".into(),
            ));
        }
        if self.delivery_concurrency == 0 || self.delivery_concurrency > 1000 {
            return Err(ConfigError(
                "delivery_concurrency: must be from 1 to 1000".into(),
            ));
        }
        self.limits.validate()?;
        let quotas = [
            (
                "providers.twilio",
                self.providers.twilio.as_ref().and_then(|t| t.daily_quota),
            ),
            (
                "providers.smtp",
                self.providers.smtp.as_ref().and_then(|t| t.daily_quota),
            ),
            (
                "providers.slack",
                self.providers.slack.as_ref().and_then(|t| t.daily_quota),
            ),
            ("billing", self.billing.as_ref().and_then(|b| b.daily_quota)),
        ];
        for (table, quota) in quotas {
            if quota == Some(0) {
                return Err(ConfigError(format!(
                    "{table}.daily_quota: must be at least 1 (to keep a tenant's own workflows \
                     off the provider, leave the tenant out of tenants)"
                )));
            }
        }
        self.load_bootstrap_key()?;
        if self.database_statement_timeout_secs == 0 {
            return Err(ConfigError(
                "database_statement_timeout_secs: must be at least 1".into(),
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError(
                "public_url: must start with http:// or https://".into(),
            ));
        }
        if !self.database_url.is_empty()
            && !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return Err(ConfigError(
                "database_url: must be empty (SQLite) or a postgres:// URL".into(),
            ));
        }
        Ok(())
    }

    /// Reads `bootstrap_api_key_file` (one line; a final newline is
    /// ignored) and checks the key, wherever it came from.
    fn load_bootstrap_key(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.bootstrap_api_key_file {
            if self.bootstrap_api_key.is_some() {
                return Err(ConfigError(
                    "EVENTFLOW_BOOTSTRAP_API_KEY and bootstrap_api_key_file (EVENTFLOW_BOOTSTRAP_API_KEY_FILE) are both set; set one"
                        .into(),
                ));
            }
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!(
                    "bootstrap_api_key_file: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            let key = text.strip_suffix('\n').unwrap_or(&text);
            let key = key.strip_suffix('\r').unwrap_or(key);
            check_bootstrap_key(key, &format!("bootstrap_api_key_file ({})", path.display()))?;
            self.bootstrap_api_key = Some(Secret::new(key));
        } else if let Some(key) = &self.bootstrap_api_key {
            check_bootstrap_key(key.expose(), "EVENTFLOW_BOOTSTRAP_API_KEY")?;
        }
        Ok(())
    }

    /// `public_url`, or `http://<listen>`.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

/// The dotted path of the key (or the value of the key) at `span`, the
/// innermost one when tables nest: `providers.smtp.port`.
fn key_at(text: &str, span: std::ops::Range<usize>) -> Option<String> {
    use toml::de::{DeTable, DeValue};
    fn walk(table: &DeTable<'_>, span: &std::ops::Range<usize>, path: &mut Vec<String>) -> bool {
        let inside = |s: std::ops::Range<usize>| s.start <= span.start && span.end <= s.end;
        for (key, value) in table {
            path.push(key.get_ref().to_string());
            if let DeValue::Table(inner) = value.get_ref()
                && walk(inner, span, path)
            {
                return true;
            }
            if inside(key.span()) || inside(value.span()) {
                return true;
            }
            path.pop();
        }
        false
    }
    let doc = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    walk(doc.get_ref(), &span, &mut path).then(|| path.join("."))
}

fn key_hint(e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => format!(" (at bytes {}..{})", span.start, span.end),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::from_toml("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(e.0.contains("listen_port"), "{e}");
        let e = Config::from_toml("[providers.twilio]\naccount_sid = \"AC\"\nauth_token = \"x\"\nfrom = \"+1555\"\nregion = \"us\"\n").unwrap_err();
        assert!(e.0.contains("region"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::from_toml("listen = \"nowhere\"").unwrap_err();
        assert!(e.0.starts_with("listen: "), "{e}");
        let e = Config::from_toml("event_retention_days = \"ten\"").unwrap_err();
        assert!(e.0.starts_with("event_retention_days: "), "{e}");
        let e = Config::from_toml("endpoint_verification = \"some\"").unwrap_err();
        assert!(e.0.starts_with("endpoint_verification: "), "{e}");
        let e = Config::from_toml("audit_retention_days = \"six years\"").unwrap_err();
        assert!(e.0.starts_with("audit_retention_days: "), "{e}");
        for (text, name) in [
            ("audit_retention_days = 0", "audit_retention_days: "),
            (
                "disclosure_retention_days = 40000",
                "disclosure_retention_days: ",
            ),
            ("delivery_retention_days = 0", "delivery_retention_days: "),
        ] {
            let e = Config::from_toml(text).unwrap().validate().unwrap_err();
            assert!(e.0.starts_with(name), "{e}");
        }
        let e = Config::from_toml("[providers.smtp]\nhost = \"h\"\nfrom = \"f\"\nport = \"x\"\n")
            .unwrap_err();
        assert!(e.0.starts_with("providers.smtp.port: "), "{e}");
    }

    #[test]
    fn a_delivery_timeout_must_end_within_the_lease() {
        let mut c = Config::from_toml("delivery_timeout_secs = 46\n").unwrap();
        let e = c.validate().unwrap_err();
        assert!(
            e.0.starts_with("delivery_timeout_secs: must be from 1 to 45"),
            "{e}"
        );
        let mut c = Config::from_toml("delivery_timeout_secs = 45\n").unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn the_reader_recheck_is_from_a_second_to_an_hour() {
        for bad in ["0", "3601"] {
            let mut c = Config::from_toml(&format!("reader_recheck_secs = {bad}\n")).unwrap();
            let e = c.validate().unwrap_err();
            assert_eq!(e.0, "reader_recheck_secs: must be from 1 to 3600");
        }
        let mut c = Config::from_toml("reader_recheck_secs = 3600\n").unwrap();
        c.validate().unwrap();
        assert_eq!(Config::default().reader_recheck_secs, 5);
    }

    #[test]
    fn limits_are_checked() {
        let mut c = Config::from_toml("[limits]\nstreams_per_key = 0\n").unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!(e.0, "limits.streams_per_key: must be at least 1");
        let e = Config::from_toml("[limits]\nstreams = 3\n").unwrap_err();
        assert!(e.0.contains("streams"), "{e}");
    }

    #[test]
    fn a_short_bootstrap_key_is_refused_naming_the_variable() {
        let mut c = Config {
            bootstrap_api_key: Some(Secret::new("a")),
            ..Config::default()
        };
        let e = c.validate().unwrap_err();
        assert!(e.0.starts_with("EVENTFLOW_BOOTSTRAP_API_KEY: "), "{e}");
        assert!(e.0.contains("at least 32"), "{e}");
        let mut c = Config {
            bootstrap_api_key: Some(Secret::new("x".repeat(32))),
            ..Config::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn the_bootstrap_key_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = "k".repeat(40);
        std::fs::write(&path, format!("{key}\n")).unwrap();
        let mut c = Config::from_toml(&format!(
            "bootstrap_api_key_file = {:?}\n",
            path.display().to_string()
        ))
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.bootstrap_api_key.as_ref().unwrap().expose(), key);

        std::fs::write(&path, "short\n").unwrap();
        let mut c = Config {
            bootstrap_api_key_file: Some(path.clone()),
            ..Config::default()
        };
        let e = c.validate().unwrap_err();
        assert!(e.0.starts_with("bootstrap_api_key_file"), "{e}");
        assert!(!e.0.contains("short"), "the key is not shown: {e}");

        let mut c = Config {
            bootstrap_api_key_file: Some(dir.path().join("missing")),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().0.contains("cannot read"));
    }

    #[test]
    fn the_documented_example_parses() {
        let c = Config::from_toml(include_str!("../../../docs/eventflow.example.toml")).unwrap();
        assert_eq!(c.event_retention_days, 30);
        assert_eq!(c.delivery_retention_days, 30);
        assert_eq!(c.endpoint_verification, EndpointVerification::Full);
        assert_eq!(c.audit_retention_days, 2190);
        assert_eq!(c.disclosure_retention_days, 2190);
        assert!(format!("{c:?}").contains("[redacted]"));
        assert!(!format!("{c:?}").contains("your-auth-token"));
    }
}
