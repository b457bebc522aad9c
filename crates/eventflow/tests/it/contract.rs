//! The OpenAPI document against the running server: Schemathesis (PyPI
//! `schemathesis`, 4.x) generates requests from `/openapi.json`, valid and
//! invalid, and checks every answer against it, with the committed
//! configuration `.ci/schemathesis.toml`. Zero failures, or the document
//! and the server disagree.
//!
//! SQLite only: the contract is the HTTP layer's, which both backends share
//! (their behaviour is the behaviour suite's to compare).

use std::path::Path;
use std::time::Duration;

use eventflow_testkit::python::skipped;
use eventflow_testkit::{Options, TestServer};

/// Whether `st` (Schemathesis 4) runs.
fn schemathesis_installed() -> bool {
    std::process::Command::new("st")
        .arg("--version")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("version 4."))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_contract() {
    if !schemathesis_installed() {
        return skipped(
            "openapi_contract",
            "python3 with PyPI schemathesis is not installed",
        );
    }
    let workflows = tempfile::tempdir().unwrap();
    let workflows_dir = workflows.path().to_path_buf();
    let server = TestServer::spawn_with(Options {
        clock: None,
        configure: Some(Box::new(move |c| {
            c.workflows_dir = workflows_dir;
            // A test send goes to whatever URL the run made up.
            c.delivery_timeout_secs = 2;
            // The run sends bad keys on purpose (checking that each route
            // wants one): they must be a 401, not the 429 that protects a
            // real server from guessing.
            c.limits.auth_failures_per_minute = 1_000_000;
            // Generating a large case can take Schemathesis longer than a
            // keep-alive connection normally waits, and a pooled connection
            // may sit idle between its phases: one the server closes just
            // as Schemathesis sends on it is a reset it reports as a
            // failure. No connection is closed for idling during the run
            // (it is bounded at 15 minutes below).
            c.limits.header_read_timeout_secs = 1200;
            c.limits.idle_timeout_secs = 1200;
        })),
    })
    .await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = root.join(".ci/schemathesis.toml");
    let reports = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new("st")
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/openapi.json", server.base))
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", server.key))
        .args(["--checks", "all", "--max-failures", "50"])
        .arg("--report-dir")
        .arg(reports.path())
        .env("NO_COLOR", "1")
        // Its cache (`.schemathesis/`) stays out of the source tree.
        .current_dir(reports.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("Schemathesis finishes within 15 minutes")
        .expect("st runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Schemathesis found the document and the server disagreeing:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
