//! Configuration (DESIGN.md §6): defaults built in, then the TOML file, then
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
    /// Days events are kept.
    pub event_retention_days: u32,
    /// Seconds a webhook receiver has to answer.
    pub delivery_timeout_secs: u64,
    /// Delivery attempts in flight at once, per endpoint.
    pub delivery_concurrency: u32,
    /// Channel providers for automations.
    pub providers: Providers,
    /// Where billing claims go.
    pub billing: Option<Billing>,
    /// Free values for workflow templates.
    pub vars: BTreeMap<String, String>,
    /// Production mode (`--production`): no private endpoints, https only.
    #[serde(skip)]
    pub production: bool,
    /// Key of the `default` tenant on first start (`EVENTFLOW_BOOTSTRAP_API_KEY`).
    #[serde(skip)]
    pub bootstrap_api_key: Option<Secret>,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Billing {
    pub claim_url: String,
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
            event_retention_days: 30,
            delivery_timeout_secs: 15,
            delivery_concurrency: 16,
            providers: Providers::default(),
            billing: None,
            vars: BTreeMap::new(),
            production: false,
            bootstrap_api_key: None,
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
        if self.event_retention_days == 0 || self.event_retention_days > 36_500 {
            return Err(ConfigError(
                "event_retention_days: must be from 1 to 36500".into(),
            ));
        }
        if self.database_pool_size == 0 || self.database_pool_size > 1000 {
            return Err(ConfigError(
                "database_pool_size: must be from 1 to 1000".into(),
            ));
        }
        if self.delivery_timeout_secs == 0 || self.delivery_timeout_secs > 300 {
            return Err(ConfigError(
                "delivery_timeout_secs: must be from 1 to 300".into(),
            ));
        }
        if self.delivery_concurrency == 0 || self.delivery_concurrency > 1000 {
            return Err(ConfigError(
                "delivery_concurrency: must be from 1 to 1000".into(),
            ));
        }
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
        let e = Config::from_toml("[providers.smtp]\nhost = \"h\"\nfrom = \"f\"\nport = \"x\"\n")
            .unwrap_err();
        assert!(e.0.starts_with("providers.smtp.port: "), "{e}");
    }

    #[test]
    fn the_documented_example_parses() {
        let c = Config::from_toml(include_str!("../../../docs/eventflow.example.toml")).unwrap();
        assert_eq!(c.event_retention_days, 30);
        assert!(format!("{c:?}").contains("[redacted]"));
        assert!(!format!("{c:?}").contains("your-auth-token"));
    }
}
