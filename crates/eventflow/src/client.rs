//! The client commands: `trigger`, `events tail`, `listen` and `keys`. They speak to
//! a running server over its HTTP API, like any other client.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use eventflow_model::event::Action;
use eventflow_model::{EventType, FieldKind, FieldSpec, ResourceType, TypeFilter};
use eventflow_webhook::{HmacSecret, Signer, sign_headers};
use futures::StreamExt;
use serde_json::{Map, Value, json};

/// Where the server is, and the key to use.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(
        long = "api",
        env = "EVENTFLOW_API_URL",
        default_value = "http://127.0.0.1:7700"
    )]
    api: String,
    /// An API key. Default: the key in ./eventflow-data/bootstrap-api-key,
    /// which `serve` writes on first start.
    #[arg(long, env = "EVENTFLOW_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

/// A connection to the API.
pub struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl ClientArgs {
    pub fn connect(&self) -> anyhow::Result<Client> {
        let key = match &self.api_key {
            Some(k) => k.clone(),
            None => std::fs::read_to_string("eventflow-data/bootstrap-api-key")
                .map(|k| k.trim().to_string())
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no API key: pass --api-key or set EVENTFLOW_API_KEY (serve printed one on first start)"
                    )
                })?,
        };
        eventflow_delivery::http::install_crypto();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Client {
            base: self.api.trim_end_matches('/').to_string(),
            key,
            http,
        })
    }
}

/// Why a request failed, as one line without a stack of causes.
fn unreachable(base: &str, e: &reqwest::Error) -> anyhow::Error {
    let why = if e.is_connect() {
        "connection refused or host unreachable"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "the request failed"
    };
    anyhow::anyhow!("cannot reach the server at {base}: {why}")
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.map_err(|e| unreachable(&self.base, &e))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("no message");
            if status.as_u16() == 401 {
                bail!("the server refused the API key (401): {message}");
            }
            bail!("the server answered {}: {message}", status.as_u16());
        }
        Ok(value)
    }

    /// The largest sequence in the tenant's log.
    async fn latest_sequence(&self) -> anyhow::Result<i64> {
        let mut after = 0i64;
        loop {
            let r = self
                .send(
                    reqwest::Method::GET,
                    &format!("/v1/events?after={after}&limit=1000"),
                    None,
                )
                .await?;
            let next = r["nextAfter"].as_i64().unwrap_or(after);
            if next == after {
                return Ok(after);
            }
            after = next;
        }
    }

    /// Follows the event stream from `after`, calling `each` for every
    /// event; reconnects after a dropped connection from the last number
    /// seen (each frame's `id:`), so nothing is lost or repeated. Returns only on an error at
    /// the first connection.
    async fn follow<F, Fut>(&self, mut after: i64, types: &str, mut each: F) -> anyhow::Result<()>
    where
        F: FnMut(Value) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut first = true;
        let mut backoff = Duration::from_millis(250);
        loop {
            let mut url = format!("{}/v1/events/stream?after={after}", self.base);
            if !types.is_empty() {
                url.push_str(&format!("&types={types}"));
            }
            let resp = match self.http.get(&url).bearer_auth(&self.key).send().await {
                Ok(r) if r.status().is_success() => r,
                Ok(r) if first => {
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    let message = body["error"]["message"].as_str().unwrap_or("no message");
                    bail!("the server answered {status}: {message}");
                }
                Err(e) if first => return Err(unreachable(&self.base, &e)),
                _ => {
                    eprintln!(
                        "lost the connection to {}; retrying in {backoff:?}",
                        self.base
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if !first {
                eprintln!("reconnected; resuming after sequence {after}");
            }
            first = false;
            backoff = Duration::from_millis(250);
            let mut body = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
                    let frame: Vec<u8> = buf.drain(..pos + 2).collect();
                    // The frame's `id:` is the event's number in the log
                    // read (a tenant's sequence, or an organisation's
                    // networkSequence): the cursor to resume from.
                    let mut id = None;
                    let mut data = None;
                    for line in String::from_utf8_lossy(&frame).lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = v.trim().parse::<i64>().ok();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data = serde_json::from_str::<Value>(v.trim()).ok();
                        }
                    }
                    if let (Some(number), Some(event)) = (id, data)
                        && number > after
                    {
                        after = number;
                        each(event).await;
                    }
                }
            }
            eprintln!("the event stream from {} ended; reconnecting", self.base);
        }
    }
}

fn check_types(types: &Option<String>) -> anyhow::Result<String> {
    let types = types.clone().unwrap_or_default();
    TypeFilter::parse_list(types.split(','))
        .map_err(|e| anyhow::anyhow!("--events/--types: {e}"))?;
    Ok(types)
}

// ---- trigger ---------------------------------------------------------------

#[derive(Debug, Clone, Args)]
pub struct TriggerArgs {
    /// The event type to fire, e.g. appointment.created (see GET /v1/event-types).
    event_type: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// A value that passes the field's rules.
fn sample(kind: FieldKind, name: &str, refs: &Map<String, Value>) -> Option<Value> {
    let in_two_days = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    Some(match kind {
        FieldKind::String => json!(format!("Sample {name}")),
        FieldKind::Date => json!("1980-04-12"),
        FieldKind::DateTime => {
            let at = if name == "end" {
                in_two_days + jiff::SignedDuration::from_mins(30)
            } else {
                in_two_days
            };
            json!(eventflow_model::time::format(at))
        }
        FieldKind::Enum(options) => json!(options.first()?),
        FieldKind::Phone => json!("+15555550123"),
        FieldKind::Email => json!("sample@example.com"),
        FieldKind::Number | FieldKind::NumberOrString => json!(1),
        FieldKind::Count => json!(1),
        FieldKind::Bool => json!(true),
        FieldKind::Ref(_) => refs.get(name)?.clone(),
        FieldKind::Object(fields) => Value::Object(body(fields, refs)),
        FieldKind::List(fields) => json!([Value::Object(body(fields, refs))]),
    })
}

/// A body with every required field, and the phone and email fields (so
/// the automations that text or mail have somewhere to send).
fn body(fields: &[FieldSpec], refs: &Map<String, Value>) -> Map<String, Value> {
    let mut o = Map::new();
    for f in fields {
        let wanted = f.required
            || matches!(f.kind, FieldKind::Phone | FieldKind::Email)
            || (matches!(f.kind, FieldKind::Ref(_)) && refs.contains_key(f.name));
        if wanted && let Some(v) = sample(f.kind, f.name, refs) {
            o.insert(f.name.to_string(), v);
        }
    }
    o
}

/// Creates a record of `rt` and whatever it must reference; prints each.
fn create<'a>(
    client: &'a Client,
    rt: ResourceType,
    out: &'a mut Vec<(ResourceType, String)>,
) -> futures::future::BoxFuture<'a, anyhow::Result<String>> {
    Box::pin(async move {
        let mut refs = Map::new();
        for f in rt.fields() {
            if let FieldKind::Ref(target) = f.kind
                && (f.required || target == ResourceType::Practitioner)
            {
                let id = match out.iter().find(|(t, _)| *t == target) {
                    Some((_, id)) => id.clone(),
                    None => create(client, target, out).await?,
                };
                refs.insert(f.name.to_string(), json!(id));
            }
        }
        let created = client
            .send(
                reqwest::Method::POST,
                &format!("/v1/{}", rt.collection()),
                Some(Value::Object(body(rt.fields(), &refs))),
            )
            .await?;
        let id = created["id"]
            .as_str()
            .context("the server returned no id")?
            .to_string();
        println!("created {:<13} {id}", rt.name());
        out.push((rt, id.clone()));
        Ok(id)
    })
}

/// A change to a record that fires `updated`: another status, else a note.
fn change(rt: ResourceType, current: &Value) -> Value {
    if let Some(FieldKind::Enum(options)) = rt.field("status").map(|f| f.kind)
        && let Some(other) = options
            .iter()
            .find(|o| current["status"].as_str() != Some(**o))
    {
        return json!({"status": other});
    }
    let field = rt
        .fields()
        .iter()
        .find(|f| matches!(f.kind, FieldKind::String) && !f.required)
        .or_else(|| {
            rt.fields()
                .iter()
                .find(|f| matches!(f.kind, FieldKind::String))
        })
        .map(|f| f.name)
        .unwrap_or("notes");
    json!({ field: "Changed by eventflow trigger" })
}

pub async fn trigger(args: TriggerArgs) -> anyhow::Result<()> {
    let Some(event_type) = EventType::parse(&args.event_type) else {
        bail!(
            "unknown event type {:?}: use one of the 30 record event types, such as appointment.created",
            args.event_type
        );
    };
    let client = args.client.connect()?;
    let mut made = Vec::new();
    let rt = event_type.resource;
    let id = create(&client, rt, &mut made).await?;
    let path = format!("/v1/{}/{id}", rt.collection());
    match event_type.action {
        Action::Created => {}
        Action::Updated => {
            let current = client.send(reqwest::Method::GET, &path, None).await?;
            client
                .send(reqwest::Method::PATCH, &path, Some(change(rt, &current)))
                .await?;
            println!("updated {:<13} {id}", rt.name());
        }
        Action::Deleted => {
            client.send(reqwest::Method::DELETE, &path, None).await?;
            println!("deleted {:<13} {id}", rt.name());
        }
    }
    eprintln!("fired {}", event_type.name());
    Ok(())
}

// ---- events tail -----------------------------------------------------------

#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Only these event types or globs, comma-separated: appointment.*,encounter.updated
    #[arg(long)]
    types: Option<String>,
    /// Start after this sequence (default: only new events).
    #[arg(long)]
    after: Option<i64>,
    #[command(flatten)]
    client: ClientArgs,
}

fn event_line(e: &Value) -> String {
    format!(
        "{}  {:<22} {}  {} {}  seq {}",
        e["createdAt"].as_str().unwrap_or(""),
        e["type"].as_str().unwrap_or(""),
        e["id"].as_str().unwrap_or(""),
        e["resource"]["type"].as_str().unwrap_or(""),
        e["resource"]["id"].as_str().unwrap_or(""),
        e["sequence"]
    )
}

pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let types = check_types(&args.types)?;
    let client = args.client.connect()?;
    let after = match args.after {
        Some(a) => a,
        None => client.latest_sequence().await?,
    };
    eprintln!("following events after sequence {after} (Ctrl-C stops)");
    client
        .follow(after, &types, |e| {
            let line = event_line(&e);
            async move {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        })
        .await
}

// ---- listen ----------------------------------------------------------------

#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// The local URL each event is posted to, e.g. http://localhost:3000/webhooks
    #[arg(long)]
    forward_to: String,
    /// Only these event types or globs, comma-separated.
    #[arg(long)]
    events: Option<String>,
    /// Replay events after this sequence first (default: only new events).
    #[arg(long)]
    after: Option<i64>,
    /// Where the signing secret is kept across runs.
    /// Default: $XDG_CONFIG_HOME/eventflow/listen-secret (or ~/.config/…).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

fn secret_path(given: &Option<PathBuf>) -> PathBuf {
    if let Some(p) = given {
        return p.clone();
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    config.join("eventflow").join("listen-secret")
}

/// The secret kept in `path`, or a new one written there (mode 0600).
fn listen_secret(path: &PathBuf) -> anyhow::Result<HmacSecret> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return HmacSecret::parse(text.trim()).map_err(|_| {
            anyhow::anyhow!(
                "{} does not hold a whsec_ secret; delete it to make a new one",
                path.display()
            )
        });
    }
    let secret = HmacSecret::generate();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write the secret to {}", path.display()))?;
    writeln!(file, "{}", secret.expose())?;
    Ok(secret)
}

pub async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let target = reqwest::Url::parse(&args.forward_to)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| anyhow::anyhow!("--forward-to: must be an http:// or https:// URL"))?;
    let types = check_types(&args.events)?;
    let path = secret_path(&args.secret_file);
    let secret = listen_secret(&path)?;
    let client = args.client.connect()?;
    let after = match args.after {
        Some(a) => a,
        None => client.latest_sequence().await?,
    };
    eprintln!(
        "forwarding events after sequence {after} to {target}\nsigning secret: {} (kept in {})",
        secret.expose(),
        path.display()
    );
    let local = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let signers = [Signer::Hmac(secret)];
    let mut number = 0i64;
    client
        .follow(after, &types, |event| {
            number += 1;
            let body = serde_json::to_vec(&event).unwrap_or_default();
            let id = event["id"].as_str().unwrap_or("").to_string();
            let ts = jiff::Timestamp::now().as_second();
            let signed = sign_headers(&signers, &id, ts, &body);
            let mut req = local.post(target.clone()).body(body);
            for (k, v) in signed.pairs() {
                req = req.header(k, v);
            }
            let topics: Vec<&str> = event["topics"]
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let topics = topics.join(",");
            let req = req
                .header("content-type", "application/json")
                .header(
                    "x-eventflow-event-type",
                    event["type"].as_str().unwrap_or(""),
                )
                .header("x-eventflow-topics", topics.as_str())
                .header("x-eventflow-attempt", "1")
                .header("x-eventflow-endpoint-sequence", number.to_string());
            let shown = if topics.is_empty() {
                String::new()
            } else {
                format!(" [{topics}]")
            };
            let line = format!(
                "{}  {:<22} {}{shown}",
                event["createdAt"].as_str().unwrap_or(""),
                event["type"].as_str().unwrap_or(""),
                id
            );
            async move {
                let outcome = match req.send().await {
                    Ok(r) => format!("→ {}", r.status().as_u16()),
                    Err(e) if e.is_connect() => {
                        "→ could not connect to the local URL (is your receiver running?)".into()
                    }
                    Err(e) if e.is_timeout() => "→ the local URL did not answer within 15 s".into(),
                    Err(_) => "→ the request to the local URL failed".into(),
                };
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}  {outcome}");
                let _ = out.flush();
            }
        })
        .await
}

// ---- keys ------------------------------------------------------------------

#[derive(Debug, Clone, Args)]
pub struct KeysCreateArgs {
    /// A name to tell the key apart by, such as billing-vendor.
    #[arg(long)]
    name: String,
    /// A scope the key gets; give --scope once for each (at most the
    /// scopes of the key making it). See the README, "Keys and scopes".
    #[arg(long = "scope", required = true)]
    scopes: Vec<String>,
    /// When the key stops working (RFC 3339, such as 2027-01-31T00:00:00Z).
    #[arg(long)]
    expires_at: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct KeysListArgs {
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct KeysRevokeArgs {
    /// The key's id (key_…), as `keys list` shows it.
    id: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// `eventflow keys create`: prints the new secret alone on standard output
/// (it is shown only once), what it may do on standard error.
pub async fn keys_create(args: KeysCreateArgs) -> anyhow::Result<()> {
    let client = args.client.connect()?;
    let mut body = json!({"name": args.name, "scopes": args.scopes});
    if let Some(at) = &args.expires_at {
        body["expiresAt"] = json!(at);
    }
    let key = client
        .send(reqwest::Method::POST, "/v1/api-keys", Some(body))
        .await?;
    println!("{}", key["key"].as_str().unwrap_or_default());
    eprintln!(
        "created {} ({}) with {}; the secret above is shown only once",
        key["id"].as_str().unwrap_or_default(),
        key["name"].as_str().unwrap_or_default(),
        scope_list(&key["scopes"]),
    );
    Ok(())
}

fn scope_list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// `eventflow keys list`: one line per live key, oldest first.
pub async fn keys_list(args: KeysListArgs) -> anyhow::Result<()> {
    let client = args.client.connect()?;
    let keys = client
        .send(reqwest::Method::GET, "/v1/api-keys", None)
        .await?;
    let mut out = std::io::stdout().lock();
    for k in keys["data"].as_array().into_iter().flatten() {
        let text = |f: &str| k[f].as_str().unwrap_or("-").to_string();
        writeln!(
            out,
            "{}  efk_{:<8}  {:<24} {}  last used {}  expires {}",
            text("id"),
            k["prefix"].as_str().unwrap_or("?"),
            text("name"),
            scope_list(&k["scopes"]),
            text("lastUsedAt"),
            text("expiresAt"),
        )?;
    }
    Ok(())
}

/// `eventflow keys revoke ID`.
pub async fn keys_revoke(args: KeysRevokeArgs) -> anyhow::Result<()> {
    let client = args.client.connect()?;
    if !eventflow_model::id::is_well_formed(&args.id) {
        bail!("{:?} is not a key id (key_…)", args.id);
    }
    client
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/api-keys/{}", args.id),
            None,
        )
        .await?;
    eprintln!("revoked {}: it is refused from now on", args.id);
    Ok(())
}
