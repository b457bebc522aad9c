//! `eventflow bench`: a load generator and an event reader in one process,
//! against a server it starts itself (embedded SQLite in a temporary
//! directory) or one given with `--api`.
//!
//! Scenarios:
//! - `writes`: as many record creates per second as `--concurrency` clients
//!   can make; every write commits its event. Afterwards every event is
//!   read back, and `lost` counts writes without one.
//! - `latency`: writes at a steady `--rate`; a reader follows the events by
//!   stream (default) or long poll (`--via poll`); the figure is the time
//!   from sending a write to reading its event.

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
    #[arg(long, value_enum, default_value = "stream")]
    via: Via,
    /// Use a running server instead of starting one.
    #[arg(long, env = "EVENTFLOW_API_URL")]
    api: Option<String>,
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
    /// One JSON object on standard output instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Scenario {
    Writes,
    Latency,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Via {
    Stream,
    Poll,
}

struct Target {
    /// Where events are read (the last node).
    base: String,
    /// Where writes go, spread over the nodes.
    write_bases: Vec<String>,
    key: String,
    http: reqwest::Client,
    /// Keeps the temporary data directory alive.
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    /// A POST to node `n` (round robin over the nodes).
    fn post(&self, n: usize, path: &str) -> reqwest::RequestBuilder {
        let base = &self.write_bases[n % self.write_bases.len()];
        self.http
            .post(format!("{base}{path}"))
            .bearer_auth(&self.key)
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
            key,
            http,
            _dir: None,
        });
    }
    if args.nodes == 0 || args.nodes > 16 {
        bail!("--nodes: must be 1 to 16");
    }
    if args.nodes > 1 && args.database.is_none() {
        bail!("--nodes: several nodes need a shared PostgreSQL database (--database postgres://…)");
    }
    let dir = tempfile::tempdir()?;
    let key = eventflow_server::auth::generate_key();
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
        bases.push(format!("http://{}", app.local_addr()));
        tokio::spawn(app.run_until_stopped(std::future::pending()));
    }
    Ok(Target {
        base: bases.last().cloned().unwrap_or_default(),
        write_bases: bases,
        key,
        http,
        _dir: Some(dir),
    })
}

fn patient_body(i: u64) -> Value {
    json!({"firstName": "Bench", "lastName": format!("Patient{i}"), "phone": "+15550100000", "birthDate": "1980-01-01"})
}

/// Peak resident memory of this process (server included when bench
/// started it), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
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
    let t = target(&args).await?;
    t.get("/v1/event-types")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot reach the server at {}", t.base))?;
    let result = match args.scenario {
        Scenario::Writes => writes(&args, &t).await?,
        Scenario::Latency => latency(&args, &t).await?,
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

async fn writes(args: &BenchArgs, t: &Target) -> anyhow::Result<Value> {
    let start_seq = latest_sequence(t).await?;
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let t = Target {
            base: t.base.clone(),
            write_bases: t.write_bases.clone(),
            key: t.key.clone(),
            http: t.http.clone(),
            _dir: None,
        };
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
    let end_seq = latest_sequence(t).await?;
    let events = (end_seq - start_seq).max(0) as u64;
    Ok(json!({
        "scenario": "writes",
        "writes_per_s": (ok as f64 / elapsed).round(),
        "writes": ok,
        "failed": failed.load(std::sync::atomic::Ordering::Relaxed),
        "concurrency": args.concurrency,
        "nodes": t.write_bases.len(),
        "peak_rss_mb": peak_rss_mb(),
        "lost": ok.saturating_sub(events),
    }))
}

async fn latency(args: &BenchArgs, t: &Target) -> anyhow::Result<Value> {
    let start_seq = latest_sequence(t).await?;
    // Send time of each write, by record id; filled before its event can be
    // read because the id is known only from the response, so the reader
    // keeps arrival times too and the two are joined at the end.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = u64::from(args.rate) * args.duration;
    let reader = {
        let base = t.base.clone();
        let key = t.key.clone();
        let http = t.http.clone();
        let arrived = arrived.clone();
        let via = args.via;
        tokio::spawn(async move {
            read_events(via, &http, &base, &key, start_seq, total, arrived).await
        })
    };
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
    let read = tokio::time::timeout(Duration::from_secs(30), reader).await;
    if !matches!(read, Ok(Ok(Ok(())))) {
        eprintln!("the reader did not see every event within 30 s");
    }
    let sent = sent.lock().await;
    let arrived = arrived.lock().await;
    let mut ms: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            arrived
                .get(id)
                .map(|a| a.duration_since(*at).as_secs_f64() * 1e3)
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let lost = sent.keys().filter(|id| !arrived.contains_key(*id)).count();
    let round = |x: f64| (x * 100.0).round() / 100.0;
    Ok(json!({
        "scenario": "latency",
        "via": match args.via { Via::Stream => "stream", Via::Poll => "poll" },
        "rate": args.rate,
        "nodes": t.write_bases.len(),
        "writes": sent.len(),
        "p50_ms": round(percentile(&ms, 0.50)),
        "p99_ms": round(percentile(&ms, 0.99)),
        "max_ms": round(ms.last().copied().unwrap_or(0.0)),
        "peak_rss_mb": peak_rss_mb(),
        "lost": lost,
    }))
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
