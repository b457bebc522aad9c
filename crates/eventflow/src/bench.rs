//! `eventflow bench`: a load generator and an event reader, against a
//! server it starts itself (`eventflow serve` in a process of its own, on
//! embedded SQLite in a temporary directory or on `--database`; inside
//! bench's own process with `--in-process`) or one given with `--api`.
//! Webhooks go to a receiver in a process of its own (`eventflow
//! bench-receiver`), which reports each arrival's time on its standard
//! output. For a server it started, bench reports the server's own peak
//! memory and CPU time per write.
//!
//! Scenarios:
//! - `writes`: as many record creates per second as `--concurrency` clients
//!   can make; every write commits its event. Afterwards every event is
//!   read back, and `lost` counts writes without one.
//! - `latency`: writes at a steady `--rate`; the figure is the time from
//!   sending a write to its webhook reaching bench's receiver (default), or
//!   to reading its event by stream (`--via stream`) or long poll
//!   (`--via poll`).
//! - `throughput`: `--concurrency` writers as fast as they can for
//!   `--duration`, one endpoint; writes and deliveries per second, until the
//!   last delivery arrived.
//! - `fanout`: the same with `--endpoints` endpoints (default 10) on every event.
//! - `backlog`: `throughput` with 1,000,000 deliveries already pending
//!   (scheduled retries of another endpoint), seeded into the embedded
//!   database first; memory and throughput against an empty queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use eventflow_server::{Application, Config, Secret};
use eventflow_store::SystemClock;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value = "writes")]
    scenario: Scenario,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Writes per second (latency).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Concurrent writers (writes).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How the latency reader follows events.
    #[arg(long, value_enum, default_value = "webhook")]
    via: Via,
    /// Use a running server instead of starting one.
    #[arg(long, env = "EVENTFLOW_API_URL")]
    api: Option<String>,
    /// Run the server bench starts inside bench's own process (sharing its
    /// runtime and memory), rather than as `eventflow serve` in a process
    /// of its own.
    #[arg(long)]
    in_process: bool,
    /// API key for --api.
    #[arg(long, env = "EVENTFLOW_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A postgres:// URL for the server bench starts.
    #[arg(long)]
    database: Option<String>,
    /// Servers to start on that database; writes go round robin, events are
    /// read from the last one (so wake-ups cross nodes).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Endpoints on every event (fanout).
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Writes: spread the writers over this many new member clinics of an
    /// organisation (1 to 100), so every write is numbered in the network's
    /// log too. With --api, the key must be an organisation's (eventflow
    /// orgs create).
    #[arg(long, default_value_t = 0)]
    clinics: usize,
    /// Pending deliveries seeded before a backlog run.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// One JSON object on standard output instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Scenario {
    Writes,
    Latency,
    Throughput,
    Fanout,
    Backlog,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Via {
    Webhook,
    Stream,
    Poll,
    /// A FHIR subscription's notifications (full-resource) to bench's receiver.
    Fhir,
}

struct Target {
    /// Where events are read (the last node).
    base: String,
    /// Where writes go, spread over the nodes.
    write_bases: Vec<String>,
    key: String,
    /// The keys writes use, round robin (the clinics' with --clinics).
    write_keys: Vec<String>,
    http: reqwest::Client,
    /// The server processes bench started, killed when dropped: before the
    /// data directory below is removed (fields drop in this order).
    servers: Vec<tokio::process::Child>,
    /// Keeps the temporary data directory alive.
    _dir: Option<tempfile::TempDir>,
    /// The SQLite file of the server bench started, if it did.
    sqlite: Option<std::path::PathBuf>,
    /// Whether the server runs in bench's own process.
    in_process: bool,
}

impl Target {
    /// A copy for a writer task (the data directory stays with the original).
    fn detached(&self) -> Target {
        Target {
            base: self.base.clone(),
            write_bases: self.write_bases.clone(),
            key: self.key.clone(),
            write_keys: self.write_keys.clone(),
            http: self.http.clone(),
            _dir: None,
            sqlite: None,
            servers: Vec::new(),
            in_process: self.in_process,
        }
    }

    /// The server(s) bench started at `bases` in `dir`, reading and writing
    /// with `key`: in processes of their own (`servers`), or, with none,
    /// inside bench's.
    fn started(
        args: &BenchArgs,
        dir: tempfile::TempDir,
        http: reqwest::Client,
        bases: Vec<String>,
        key: String,
        servers: Vec<tokio::process::Child>,
    ) -> Target {
        Target {
            base: bases.last().cloned().unwrap_or_default(),
            write_bases: bases,
            write_keys: vec![key.clone()],
            key,
            http,
            sqlite: args
                .database
                .is_none()
                .then(|| eventflow_server::sqlite_path(&dir.path().join("node0"))),
            _dir: Some(dir),
            in_process: servers.is_empty(),
            servers,
        }
    }

    /// The process ids of the servers bench started in processes of their own.
    fn server_pids(&self) -> Vec<u32> {
        self.servers.iter().filter_map(|c| c.id()).collect()
    }

    /// A POST to node `n` (round robin over the nodes and the write keys).
    fn post(&self, n: usize, path: &str) -> reqwest::RequestBuilder {
        let base = &self.write_bases[n % self.write_bases.len()];
        let key = self
            .write_keys
            .get(n % self.write_keys.len().max(1))
            .unwrap_or(&self.key);
        self.http.post(format!("{base}{path}")).bearer_auth(key)
    }
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }
}

async fn target(args: &BenchArgs) -> anyhow::Result<Target> {
    eventflow_delivery::http::install_crypto();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    if let Some(api) = &args.api {
        let key = args
            .api_key
            .clone()
            .context("--api needs --api-key (or EVENTFLOW_API_KEY)")?;
        let base = api.trim_end_matches('/').to_string();
        return Ok(Target {
            write_bases: vec![base.clone()],
            base,
            write_keys: vec![key.clone()],
            key,
            http,
            _dir: None,
            sqlite: None,
            servers: Vec::new(),
            in_process: false,
        });
    }
    if args.nodes == 0 || args.nodes > 16 {
        bail!("--nodes: must be 1 to 16");
    }
    if args.nodes > 1 && args.database.is_none() {
        bail!("--nodes: several nodes need a shared PostgreSQL database (--database postgres://…)");
    }
    let dir = tempfile::tempdir()?;
    if !args.in_process {
        return spawned(args, dir, http).await;
    }
    let mut key = eventflow_server::auth::generate_key();
    let mut bases = Vec::new();
    for n in 0..args.nodes {
        let config = Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.path().join(format!("node{n}")),
            database_url: args.database.clone().unwrap_or_default(),
            bootstrap_api_key: Some(Secret::new(key.clone())),
            ..Config::default()
        };
        let app = Application::build(config, Arc::new(SystemClock)).await?;
        if n == 0 && app.bootstrap().is_none() {
            // A shared database (--database) already has tenants: bench in a
            // tenant of its own, so its events are the only ones it reads.
            let name = format!("bench-{}", eventflow_model::id::new_id("run"));
            app.state()
                .store
                .create_tenant(&name, &eventflow_server::auth::hash_key(&key), false)
                .await?;
        }
        if n == 0 && args.clinics > 0 {
            // A network: bench reads with its organisation's key.
            let org_key = eventflow_server::auth::generate_key();
            app.state()
                .store
                .change_network(eventflow_store::NetworkChange::CreateOrganisation {
                    name: format!("bench-{}", eventflow_model::id::new_id("org")),
                    key_hash: eventflow_server::auth::hash_key(&org_key),
                })
                .await?;
            key = org_key;
        }
        bases.push(format!("http://{}", app.local_addr()));
        tokio::spawn(app.run_until_stopped(std::future::pending()));
    }
    Ok(Target::started(args, dir, http, bases, key, Vec::new()))
}

/// Starts `eventflow serve` (this binary) for each node, each in a process
/// of its own, and waits (at most 60 s) until each answers `/readyz`.
async fn spawned(
    args: &BenchArgs,
    dir: tempfile::TempDir,
    http: reqwest::Client,
) -> anyhow::Result<Target> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().context("bench's own binary")?;
    let mut key = eventflow_server::auth::generate_key();
    let mut bases = Vec::new();
    let mut servers = Vec::new();
    for n in 0..args.nodes {
        let data = dir.path().join(format!("node{n}"));
        let log = dir.path().join(format!("node{n}.log"));
        let mut cmd = tokio::process::Command::new(&exe);
        // Only what bench says configures the server: none of the
        // EVENTFLOW_ settings of bench's environment.
        clean_env(cmd.as_std_mut());
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .env("EVENTFLOW_BOOTSTRAP_API_KEY", &key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true);
        if let Some(db) = &args.database {
            // In the environment, not on the command line (where `ps` shows it).
            cmd.env("EVENTFLOW_DATABASE_URL", db);
        }
        let mut server = cmd.spawn().context("could not start eventflow serve")?;
        // It prints the address it listens on (a port of its own choosing:
        // no other process can take it in between).
        let stdout = server.stdout.take().context("the server's output")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let said = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.strip_prefix("Event Flow listening on ") {
                    return Some(at.trim().to_string());
                }
            }
            None
        })
        .await;
        let Ok(Some(base)) = said else {
            let _ = server.start_kill();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "the server did not start: {}",
                log.lines().last().unwrap_or("it printed nothing")
            );
        };
        // Whatever else it prints is read and dropped: a full pipe would stop it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        servers.push(server);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http
                .get(format!("{base}/readyz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            let exited = match servers.last_mut() {
                Some(s) => s.try_wait()?.is_some(),
                None => false,
            };
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                bail!(
                    "the server did not get ready: {}",
                    log.lines().last().unwrap_or("it printed nothing")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bases.push(base);
    }
    // A shared database that already has tenants ignores the bootstrap key:
    // bench then writes in a tenant of its own, so its events are the only
    // ones it reads.
    let cli = |what: &[&str]| -> anyhow::Result<String> {
        let mut cmd = std::process::Command::new(&exe);
        clean_env(&mut cmd);
        cmd.args(what)
            .arg("--data-dir")
            .arg(dir.path().join("node0"));
        if let Some(db) = &args.database {
            cmd.env("EVENTFLOW_DATABASE_URL", db);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!(
                "eventflow {}: {}",
                what.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let unknown = http
        .get(format!("{}/v1/event-types", bases[0]))
        .bearer_auth(&key)
        .send()
        .await?
        .status()
        == reqwest::StatusCode::UNAUTHORIZED;
    if unknown {
        key = cli(&[
            "tenants",
            "create",
            &format!("bench-{}", eventflow_model::id::new_id("run")),
        ])?;
    }
    if args.clinics > 0 {
        key = cli(&[
            "orgs",
            "create",
            &format!("bench-{}", eventflow_model::id::new_id("org")),
        ])?;
    }
    Ok(Target::started(args, dir, http, bases, key, servers))
}

/// Leaves out of a child's environment every `EVENTFLOW_` setting (and
/// `RUST_LOG`) of bench's own: the server bench starts is configured by
/// bench alone, as `--in-process` is.
fn clean_env(cmd: &mut std::process::Command) {
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("EVENTFLOW_") || n == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
}

/// CPU time (user and system) a process has used, in milliseconds.
fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces), from the
    // third: utime and stime are the 14th and 15th, in clock ticks
    // (USER_HZ, 100 on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

/// Peak resident memory of a process, in MB.
fn peak_rss_mb_of(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The server's CPU time so far (of every node bench started), in ms; of
/// bench's own process when the server runs in it. `None` against `--api`.
fn server_cpu_ms(t: &Target) -> Option<f64> {
    if t.in_process {
        return cpu_ms(std::process::id());
    }
    let pids = t.server_pids();
    if pids.is_empty() {
        return None;
    }
    pids.into_iter().map(cpu_ms).sum()
}

/// What the server bench started used: its peak memory (the largest node's)
/// and its CPU time per write over the run (`cpu_before` taken before the
/// load). Nothing against `--api`.
fn server_figures(
    t: &Target,
    cpu_before: Option<f64>,
    writes: usize,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    if t.in_process {
        m.insert("server".into(), json!("in-process"));
    } else if !t.servers.is_empty() {
        m.insert("server".into(), json!("own-process"));
    } else {
        return m;
    }
    let rss = if t.in_process {
        peak_rss_mb()
    } else {
        t.server_pids()
            .iter()
            .filter_map(|p| peak_rss_mb_of(&p.to_string()))
            .reduce(f64::max)
    };
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    m.insert(
        "server_peak_rss_mb".into(),
        json!(rss.map(|r| (r * 10.0).round() / 10.0)),
    );
    if let (Some(before), Some(after)) = (cpu_before, server_cpu_ms(t))
        && writes > 0
    {
        m.insert(
            "server_cpu_ms_per_write".into(),
            json!(round((after - before) / writes as f64)),
        );
    }
    m
}

fn patient_body(i: u64) -> Value {
    json!({"firstName": "Bench", "lastName": format!("Patient{i}"), "phone": "+15550100000", "birthDate": "1980-01-01"})
}

/// Peak resident memory of bench's own process (the server's too with
/// `--in-process`), in MB.
fn peak_rss_mb() -> Option<f64> {
    peak_rss_mb_of("self")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn latest_sequence(t: &Target) -> anyhow::Result<i64> {
    // The newest event: page forward from 0 would be slow; the stream of
    // events is ordered, so ask for events after a large number first.
    let mut after = 0i64;
    loop {
        let r: Value = t
            .get(&format!("/v1/events?after={after}&limit=1000"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let next = r["nextAfter"].as_i64().unwrap_or(after);
        if next == after {
            return Ok(after);
        }
        after = next;
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.duration == 0 || args.duration > 3600 {
        bail!("--duration: must be 1 to 3600 seconds");
    }
    let mut t = target(&args).await?;
    if args.clinics > 0 {
        if args.scenario != Scenario::Writes {
            bail!("--clinics: only with --scenario writes");
        }
        network_of(&mut t, args.clinics).await?;
    }
    t.get("/v1/event-types")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot reach the server at {}", t.base))?;
    let result = match args.scenario {
        Scenario::Writes => writes(&args, &t).await?,
        Scenario::Latency => latency(&args, &t).await?,
        Scenario::Throughput => throughput(&args, &t, 1, "throughput").await?,
        Scenario::Fanout => {
            if args.endpoints == 0 || args.endpoints > 100 {
                bail!("--endpoints: must be 1 to 100");
            }
            throughput(&args, &t, args.endpoints, "fanout").await?
        }
        Scenario::Backlog => backlog(&args, &t).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!();
        for (k, v) in result.as_object().into_iter().flatten() {
            println!("{k:<16} {v}");
        }
    }
    Ok(())
}

/// Makes `n` member clinics with the organisation key; writes then go to
/// them round robin.
async fn network_of(t: &mut Target, n: usize) -> anyhow::Result<()> {
    if n == 0 || n > 100 {
        bail!("--clinics: must be 1 to 100");
    }
    let run = eventflow_model::id::new_id("run");
    let mut keys = Vec::new();
    for i in 0..n {
        let r = t
            .http
            .post(format!("{}/v1/clinics", t.base))
            .bearer_auth(&t.key)
            .json(&json!({"name": format!("bench-{run}-{i}")}))
            .send()
            .await?;
        if r.status().as_u16() == 404 {
            bail!("--clinics: the key must be an organisation's (eventflow orgs create)");
        }
        let body: Value = r.error_for_status()?.json().await?;
        keys.push(
            body["apiKey"]
                .as_str()
                .context("a clinic's key")?
                .to_string(),
        );
    }
    t.write_keys = keys;
    Ok(())
}

/// `result` with the figures of the server bench started ([`server_figures`]).
fn with_server(mut result: Value, server: serde_json::Map<String, Value>) -> Value {
    if let Some(o) = result.as_object_mut() {
        o.extend(server);
    }
    result
}

async fn writes(args: &BenchArgs, t: &Target) -> anyhow::Result<Value> {
    let start_seq = latest_sequence(t).await?;
    let cpu_before = server_cpu_ms(t);
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let t = t.detached();
        let ok = ok.clone();
        let failed = failed.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w as u64 * 1_000_000_000;
            while Instant::now() < deadline {
                i += 1;
                match t
                    .post(w, "/v1/patients")
                    .json(&patient_body(i))
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 201 => {
                        ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let progress = tokio::spawn({
        let ok = ok.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprint!(
                    "\rwrites: {:>4.0}s  {} ok",
                    started.elapsed().as_secs_f64(),
                    ok.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
        }
    });
    for task in tasks {
        task.await?;
    }
    progress.abort();
    eprintln!();
    let elapsed = started.elapsed().as_secs_f64();
    let ok = ok.load(std::sync::atomic::Ordering::Relaxed);
    let server = server_figures(t, cpu_before, ok as usize);
    let end_seq = latest_sequence(t).await?;
    let events = (end_seq - start_seq).max(0) as u64;
    Ok(with_server(
        json!({
            "scenario": "writes",
            "writes_per_s": (ok as f64 / elapsed).round(),
            "writes": ok,
            "failed": failed.load(std::sync::atomic::Ordering::Relaxed),
            "concurrency": args.concurrency,
            "nodes": t.write_bases.len(),
            "clinics": args.clinics,
            "peak_rss_mb": peak_rss_mb(),
            "lost": ok.saturating_sub(events),
        }),
        server,
    ))
}

async fn latency(args: &BenchArgs, t: &Target) -> anyhow::Result<Value> {
    let total = u64::from(args.rate) * args.duration;
    // Arrival time of each write's event (stream, poll) or webhook, by
    // record id; the send times come from the writes' responses, and the
    // two are joined at the end.
    enum Reader {
        Events(
            tokio::task::JoinHandle<anyhow::Result<()>>,
            Arc<Mutex<HashMap<String, Instant>>>,
        ),
        Webhook(Arc<Arrivals>),
    }
    let reader = if matches!(args.via, Via::Webhook | Via::Fhir) {
        let (url, arrivals) = receiver().await?;
        if args.via == Via::Fhir {
            fhir_subscription(t, &url).await?;
        } else {
            endpoints(t, &url, 1).await?;
        }
        Reader::Webhook(arrivals)
    } else {
        let start_seq = latest_sequence(t).await?;
        let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let (base, key, http, via) = (t.base.clone(), t.key.clone(), t.http.clone(), args.via);
        let a = arrived.clone();
        let task =
            tokio::spawn(
                async move { read_events(via, &http, &base, &key, start_seq, total, a).await },
            );
        Reader::Events(task, arrived)
    };
    let cpu_before = server_cpu_ms(t);
    let sent = paced_writes(args, t, total).await;
    let arrived: HashMap<String, Instant> = match reader {
        Reader::Events(task, arrived) => {
            let read = tokio::time::timeout(Duration::from_secs(30), task).await;
            if !matches!(read, Ok(Ok(Ok(())))) {
                eprintln!("the reader did not see every event within 30 s");
            }
            arrived.lock().await.clone()
        }
        Reader::Webhook(arrivals) => {
            wait_delivered(&arrivals, &sent, 1).await;
            arrivals
                .first
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|((_, id), at)| (id.clone(), *at))
                .collect()
        }
    };
    let mut ms: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            arrived
                .get(id)
                .map(|a| a.duration_since(*at).as_secs_f64() * 1e3)
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let lost = sent.len() - ms.len();
    let server = server_figures(t, cpu_before, sent.len());
    let round = |x: f64| (x * 100.0).round() / 100.0;
    Ok(with_server(
        json!({
            "scenario": "latency",
            "via": match args.via { Via::Stream => "stream", Via::Poll => "poll", Via::Webhook => "webhook", Via::Fhir => "fhir" },
            "rate": args.rate,
            "nodes": t.write_bases.len(),
            "writes": sent.len(),
            "p50_ms": round(percentile(&ms, 0.50)),
            "p99_ms": round(percentile(&ms, 0.99)),
            "max_ms": round(ms.last().copied().unwrap_or(0.0)),
            "peak_rss_mb": peak_rss_mb(),
            "lost": lost,
        }),
        server,
    ))
}

/// `total` record writes at a steady `--rate`; the send time of each, by
/// the id the server gave it.
async fn paced_writes(args: &BenchArgs, t: &Target, total: u64) -> HashMap<String, Instant> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    let mut tick =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut writers = Vec::new();
    for i in 0..total {
        tick.tick().await;
        let req = t.post(i as usize, "/v1/patients").json(&patient_body(i));
        let sent = sent.clone();
        writers.push(tokio::spawn(async move {
            let at = Instant::now();
            let r = req.send().await.ok()?;
            let body: Value = r.json().await.ok()?;
            let id = body["id"].as_str()?.to_string();
            sent.lock().await.insert(id, at);
            Some(())
        }));
        if i % u64::from(args.rate.max(1)) == 0 {
            eprint!(
                "\rlatency: {:>4.0}s  {i} writes",
                started.elapsed().as_secs_f64()
            );
        }
    }
    for w in writers {
        let _ = w.await;
    }
    eprintln!();
    sent.lock().await.clone()
}

async fn read_events(
    via: Via,
    http: &reqwest::Client,
    base: &str,
    key: &str,
    after: i64,
    total: u64,
    arrived: Arc<Mutex<HashMap<String, Instant>>>,
) -> anyhow::Result<()> {
    let mut seen = 0u64;
    match via {
        Via::Webhook | Via::Fhir => bail!("webhook arrivals are counted by bench's receiver"),
        Via::Poll => {
            let mut after = after;
            while seen < total {
                let r: Value = http
                    .get(format!("{base}/v1/events?after={after}&wait=30&limit=1000"))
                    .bearer_auth(key)
                    .send()
                    .await?
                    .json()
                    .await?;
                let now = Instant::now();
                let mut a = arrived.lock().await;
                for e in r["data"].as_array().into_iter().flatten() {
                    if let Some(id) = e["resource"]["id"].as_str() {
                        a.insert(id.to_string(), now);
                        seen += 1;
                    }
                }
                after = r["nextAfter"].as_i64().unwrap_or(after);
            }
        }
        Via::Stream => {
            let resp = http
                .get(format!("{base}/v1/events/stream?after={after}"))
                .bearer_auth(key)
                .send()
                .await?
                .error_for_status()?;
            let mut body = resp.bytes_stream();
            let mut buf = Vec::new();
            while seen < total {
                let Some(chunk) = body.next().await else {
                    break;
                };
                let now = Instant::now();
                buf.extend_from_slice(&chunk?);
                while let Some(pos) = buf.windows(2).position(|w| w == b"\n\n") {
                    let frame: Vec<u8> = buf.drain(..pos + 2).collect();
                    for line in String::from_utf8_lossy(&frame).lines() {
                        if let Some(data) = line.strip_prefix("data:") {
                            let e: Value = serde_json::from_str(data.trim())?;
                            if let Some(id) = e["resource"]["id"].as_str() {
                                arrived.lock().await.insert(id.to_string(), now);
                                seen += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// What bench's receiver saw: when each record's delivery first arrived,
/// per endpoint (the path names it: `/ep{n}`), how many arrived, and when
/// the last did. The receiver runs in a process of its own
/// ([`receive`]); its child handle is kept here, so it ends with this.
#[derive(Default)]
struct Arrivals {
    first: std::sync::Mutex<HashMap<(usize, String), Instant>>,
    total: std::sync::atomic::AtomicU64,
    last: std::sync::Mutex<Option<Instant>>,
    process: std::sync::Mutex<Option<tokio::process::Child>>,
}

/// Microseconds since the Unix epoch: the clock the receiver's process and
/// bench's share (one machine).
fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// Starts bench's webhook receiver (`eventflow bench-receiver`) in a
/// process of its own; its URL, and its arrivals as it reports them.
async fn receiver() -> anyhow::Result<(String, Arc<Arrivals>)> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().context("bench's own binary")?;
    // Its standard input stays open while bench runs: at its end, however
    // bench ends, the receiver ends too.
    let mut child = tokio::process::Command::new(exe)
        .arg("bench-receiver")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("could not start bench's receiver")?;
    let stdout = child.stdout.take().context("the receiver's output")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("the receiver did not start within 30 s")??
        .context("the receiver ended before it listened")?;
    let arrivals: Arc<Arrivals> = Arc::default();
    *arrivals.process.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    // Its clock and ours: the receiver's times are Unix microseconds.
    let (base_instant, base_unix) = (Instant::now(), unix_micros());
    let a = arrivals.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut parts = line.split(' ');
            let (Some(ep), Some(id), Some(at)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(ep), Ok(at)) = (ep.parse::<usize>(), at.parse::<u128>()) else {
                continue;
            };
            let at = if at >= base_unix {
                base_instant + Duration::from_micros((at - base_unix) as u64)
            } else {
                base_instant
                    .checked_sub(Duration::from_micros((base_unix - at) as u64))
                    .unwrap_or(base_instant)
            };
            a.first
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((ep, id.to_string()))
                .or_insert(at);
            a.total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut last = a.last.lock().unwrap_or_else(|e| e.into_inner());
            *last = Some(last.map_or(at, |l| l.max(at)));
        }
    });
    Ok((url, arrivals))
}

/// `eventflow bench-receiver`: bench's webhook receiver. Prints its URL,
/// then a line `<endpoint> <record id> <Unix microseconds>` for each
/// delivery when it arrived; answers 204 (a verification challenge, with
/// the challenge). Ends when its standard input or output closes (bench
/// gone).
pub async fn receive() -> anyhow::Result<()> {
    use axum::extract::{Path, State};
    type Lines = tokio::sync::mpsc::UnboundedSender<String>;
    async fn hook(
        State(out): State<Lines>,
        Path(ep): Path<String>,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        if let Some(answer) = eventflow_webhook::challenge_answer(&body) {
            return answer.into_response();
        }
        let at = unix_micros();
        let n: usize = ep.trim_start_matches("ep").parse().unwrap_or(usize::MAX);
        // Only the record id is read: the receiver shares the CPU with the server.
        #[derive(serde::Deserialize)]
        struct Envelope {
            resource: Resource,
        }
        #[derive(serde::Deserialize)]
        struct Resource {
            id: String,
        }
        if let Ok(v) = serde_json::from_slice::<Envelope>(&body) {
            let _ = out.send(format!("{n} {} {at}\n", v.resource.id));
        } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
            // A FHIR notification: the record is its event's focus
            // (`…/Patient/pat-01…`); a handshake names none.
            let status = &v["entry"][0]["resource"];
            if let Some(focus) = status["notificationEvent"][0]["focus"]["reference"].as_str()
                && let Some(id) = focus.rsplit('/').next()
            {
                let _ = out.send(format!("{n} {} {at}\n", id.replacen('-', "_", 1)));
            }
        }
        axum::http::StatusCode::NO_CONTENT.into_response()
    }
    std::thread::spawn(|| {
        use std::io::Read;
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let app = axum::Router::new()
        .route("/{ep}", axum::routing::post(hook))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}\n", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // Lines are written as they come, a batch at a time, by a thread of
    // their own (a full pipe blocks it, not the runtime); a closed output
    // (bench gone) ends the receiver.
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(url.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return;
        }
        let mut batch = String::new();
        while let Some(line) = rx.blocking_recv() {
            batch.push_str(&line);
            while batch.len() < 64 * 1024
                && let Ok(more) = rx.try_recv()
            {
                batch.push_str(&more);
            }
            if stdout
                .write_all(batch.as_bytes())
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return;
            }
            batch.clear();
        }
    })
    .await?;
    Ok(())
}

/// Subscribes bench's receiver through FHIR to `patient.created`, with the
/// whole resource in each notification, and waits (at most 10 s) until
/// its handshake made it active.
async fn fhir_subscription(t: &Target, receiver: &str) -> anyhow::Result<()> {
    let topic: Value = t
        .get("/fhir/SubscriptionTopic/patient.created")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let ig = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
    let sub: Value = t
        .post(0, "/fhir/Subscription")
        .json(&json!({
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "eventflow bench",
            "criteria": topic["url"],
            "channel": {
                "type": "rest-hook",
                "endpoint": format!("{receiver}/ep0"),
                "payload": "application/fhir+json",
                "_payload": {"extension": [{"url": format!("{ig}backport-payload-content"), "valueCode": "full-resource"}]},
            },
        }))
        .send()
        .await?
        .error_for_status()
        .context("could not create a FHIR subscription")?
        .json()
        .await?;
    let id = sub["id"].as_str().context("subscription id")?.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: Value = t
            .get(&format!("/fhir/Subscription/{id}"))
            .send()
            .await?
            .json()
            .await?;
        if now["status"] == "active" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the FHIR subscription is {} after 10 s", now["status"]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Registers `n` endpoints on bench's receiver, for patient.created.
async fn endpoints(t: &Target, receiver: &str, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        t.post(0, "/v1/endpoints")
            .json(&json!({"url": format!("{receiver}/ep{i}"), "eventTypes": ["patient.created"]}))
            .send()
            .await?
            .error_for_status()
            .context("could not create an endpoint")?;
    }
    Ok(())
}

/// Waits (at most 120 s) until every sent record reached each of `n` endpoints.
async fn wait_delivered(arrivals: &Arrivals, sent: &HashMap<String, Instant>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let got = arrivals
            .first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        if got >= sent.len() * n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("not every delivery arrived within 120 s");
}

async fn throughput(args: &BenchArgs, t: &Target, n: usize, name: &str) -> anyhow::Result<Value> {
    let (url, arrivals) = receiver().await?;
    endpoints(t, &url, n).await?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let cpu_before = server_cpu_ms(t);
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let t = t.detached();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w as u64 * 1_000_000_000;
            while Instant::now() < deadline {
                i += 1;
                let Ok(r) = t
                    .post(w, "/v1/patients")
                    .json(&patient_body(i))
                    .send()
                    .await
                else {
                    continue;
                };
                let at = Instant::now();
                if let Ok(body) = r.json::<Value>().await
                    && let Some(id) = body["id"].as_str()
                {
                    sent.lock().await.insert(id.to_string(), at);
                }
            }
        }));
    }
    let progress = tokio::spawn({
        let arrivals = arrivals.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprint!(
                    "\r{:>4.0}s  {} deliveries",
                    started.elapsed().as_secs_f64(),
                    arrivals.total.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
        }
    });
    for task in tasks {
        task.await?;
    }
    let writes_elapsed = started.elapsed().as_secs_f64();
    let sent = sent.lock().await.clone();
    wait_delivered(&arrivals, &sent, n).await;
    let server = server_figures(t, cpu_before, sent.len());
    progress.abort();
    eprintln!();
    let last = arrivals
        .last
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_else(Instant::now);
    let delivered = arrivals
        .first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len();
    let elapsed = last
        .duration_since(started)
        .as_secs_f64()
        .max(writes_elapsed);
    Ok(with_server(
        json!({
            "scenario": name,
            "endpoints": n,
            "writes_per_s": (sent.len() as f64 / writes_elapsed).round(),
            "deliveries_per_s": (delivered as f64 / elapsed).round(),
            "writes": sent.len(),
            "deliveries": delivered,
            "drain_s": ((elapsed - writes_elapsed) * 100.0).round() / 100.0,
            "concurrency": args.concurrency,
            "nodes": t.write_bases.len(),
            "peak_rss_mb": peak_rss_mb(),
            "lost": (sent.len() * n).saturating_sub(delivered),
        }),
        server,
    ))
}

/// Seeds `--backlog` pending deliveries, due in an hour, for an endpoint of
/// their own, straight into the embedded database (through the API it would
/// take as long as writing them); then runs `throughput`.
async fn backlog(args: &BenchArgs, t: &Target) -> anyhow::Result<Value> {
    use sqlx::Connection;
    let Some(path) = &t.sqlite else {
        bail!(
            "--scenario backlog seeds the embedded SQLite database; run it without --api and --database"
        );
    };
    let (url, _arrivals) = receiver().await?;
    let ep: Value = t
        .post(0, "/v1/endpoints")
        .json(&json!({"url": format!("{url}/backlog"), "eventTypes": ["practitioner.created"]}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let ep = ep["id"].as_str().context("endpoint id")?.to_string();
    let event: Value = t
        .post(0, "/v1/practitioners")
        .json(&json!({"firstName": "Backlog", "lastName": "Seed"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let practitioner = event["id"].as_str().context("record id")?.to_string();
    let events: Value = t
        .get("/v1/events?types=practitioner.created&limit=1")
        .send()
        .await?
        .json()
        .await?;
    let e = &events["data"][0];
    eprintln!("seeding {} pending deliveries …", args.backlog);
    let seeded = Instant::now();
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    sqlx::query("PRAGMA busy_timeout = 30000")
        .execute(&mut conn)
        .await?;
    let now = eventflow_model::time::format(jiff::Timestamp::now());
    let later =
        eventflow_model::time::format(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1));
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i <= $1) \
         INSERT INTO deliveries (id, tenant_id, endpoint_id, endpoint_sequence, event_sequence, event_id, \
         event_type, resource_id, patient_id, ordered, status, created_at, updated_at, next_at, attempt_count, attempts) \
         SELECT 'dlv_backlog' || i, $2, $3, i, $4, $5, 'practitioner.created', $6, NULL, 0, 'pending', $7, $7, $8, 1, \
         '[{\"attempt\":1,\"at\":\"' || $7 || '\",\"statusCode\":503,\"durationMs\":1,\"responseBody\":null,\"error\":null}]' FROM n",
    )
    .bind(args.backlog as i64)
    .bind(e["tenantId"].as_str().unwrap_or_default())
    .bind(&ep)
    .bind(e["sequence"].as_i64().unwrap_or(0))
    .bind(e["id"].as_str().unwrap_or_default())
    .bind(&practitioner)
    .bind(&now)
    .bind(&later)
    .execute(&mut conn)
    .await?;
    sqlx::query("UPDATE endpoints SET last_sequence = $1 WHERE id = $2")
        .bind(args.backlog as i64 + 2)
        .bind(&ep)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    eprintln!("seeded in {:.1} s", seeded.elapsed().as_secs_f64());
    // The server's memory before the load: bench's own with --in-process.
    let rss_before = server_figures(t, None, 0).remove("server_peak_rss_mb");
    let mut result = throughput(args, t, 1, "backlog").await?;
    result["backlog"] = json!(args.backlog);
    result["server_peak_rss_mb_before_load"] = rss_before.unwrap_or(Value::Null);
    Ok(result)
}
