//! `eventflow bench` still measures what BENCHMARKS.md says it measures:
//! every scenario runs for a second, on a server it starts in a process of
//! its own (and inside its own, `--in-process`) and on one already running
//! (`--api`), and loses no event.

use std::process::Command;

use eventflow_testkit::ServerProcess;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_eventflow");

/// Runs `bench` with `args` and a one-second load; its JSON line.
fn bench(args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .args(["--duration", "1", "--json"])
        .env_remove("EVENTFLOW_API_URL")
        .env_remove("EVENTFLOW_API_KEY")
        .env_remove("EVENTFLOW_DATABASE_URL")
        .output()
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| panic!("bench {args:?} printed {stdout}"))
}

#[test]
fn every_bench_scenario_runs_and_loses_nothing() {
    for scenario in ["writes", "latency", "throughput", "fanout", "backlog"] {
        let r = bench(&[
            "--scenario",
            scenario,
            "--endpoints",
            "2",
            "--backlog",
            "500",
        ]);
        assert_eq!(r["scenario"], scenario, "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        let done = r["writes"].as_u64().unwrap_or(0);
        assert!(done > 0, "{scenario} wrote nothing: {r}");
        // The server ran in a process of its own, and bench measured it.
        assert_eq!(r["server"], "own-process", "{r}");
        assert!(r["server_peak_rss_mb"].as_f64().unwrap_or(0.0) > 1.0, "{r}");
        assert!(
            r["server_cpu_ms_per_write"].as_f64().unwrap_or(0.0) > 0.0,
            "{r}"
        );
    }
    // The server inside bench's process, as an option.
    let r = bench(&["--scenario", "throughput", "--in-process"]);
    assert_eq!(
        (&r["server"], &r["lost"]),
        (&serde_json::json!("in-process"), &serde_json::json!(0)),
        "{r}"
    );
    assert!(
        r["server_cpu_ms_per_write"].as_f64().unwrap_or(0.0) > 0.0,
        "{r}"
    );
    for via in ["stream", "poll"] {
        let r = bench(&["--scenario", "latency", "--via", via]);
        assert_eq!(r["lost"], 0, "{r}");
    }
    // Through a FHIR subscription: every write's notification arrives.
    let r = bench(&["--scenario", "latency", "--via", "fhir"]);
    assert_eq!(
        (&r["via"], &r["lost"]),
        (&serde_json::json!("fhir"), &serde_json::json!(0)),
        "{r}"
    );
    assert!(r["writes"].as_u64().unwrap_or(0) > 0, "{r}");
    // Writes spread over a network's clinics: every write is in the
    // network's log.
    let r = bench(&["--scenario", "writes", "--clinics", "3"]);
    assert_eq!(
        (r["clinics"].as_u64(), &r["lost"]),
        (Some(3), &serde_json::json!(0)),
        "{r}"
    );
    assert!(r["writes"].as_u64().unwrap_or(0) > 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_a_server_running_in_its_own_process() {
    let dir = tempfile::tempdir().unwrap();
    let key = "efk_bench-smoke-key-0123456789abcdefghij";
    let server = ServerProcess::start(BIN, dir.path(), "", key, &[], false).await;
    let base = server.api.base.clone();
    for args in [
        vec!["--scenario", "writes"],
        vec!["--scenario", "latency", "--via", "webhook"],
    ] {
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        args.extend(["--api".into(), base.clone(), "--api-key".into(), key.into()]);
        let r = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bench(&args)
        })
        .await
        .unwrap();
        assert_eq!(r["lost"], 0, "{r}");
        assert!(r["writes"].as_u64().unwrap_or(0) > 0, "{r}");
    }
}
