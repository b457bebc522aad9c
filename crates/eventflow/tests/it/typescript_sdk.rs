//! The TypeScript SDK (`sdks/typescript`) tested by its own tests, Node's
//! test runner, against servers of this build that the tests start
//! themselves: real deliveries verified, the client's calls, the resuming
//! stream, the Next.js example's route, the package's typings.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use eventflow_testkit::{Backend, backend_tests, skipped};

backend_tests!(the_typescript_sdk_passes_its_tests_against_this_server,);

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdks/typescript")
}

/// Installs the SDK's development dependencies from its lockfile (`npm ci`)
/// when they are missing, and builds it, once for every test of this run.
/// `Err` says why it could not.
fn build_once() -> Result<(), String> {
    static BUILT: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(result) = built.as_ref() {
        return result.clone();
    }
    let dir = sdk_dir();
    let result = (|| {
        let node = Command::new("node").arg("--version").output();
        if !node.is_ok_and(|o| o.status.success()) {
            return Err("Node.js is not installed".to_string());
        }
        if !dir.join("node_modules/typescript").exists() {
            let ci = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--silent"])
                .current_dir(&dir)
                .status()
                .map_err(|e| format!("npm: {e}"))?;
            if !ci.success() {
                return Err("npm ci failed in sdks/typescript".to_string());
            }
        }
        let out = Command::new("node")
            .arg("scripts/build.mjs")
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("node: {e}"))?;
        assert!(
            out.status.success(),
            "the SDK builds:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })();
    *built = Some(result.clone());
    result
}

async fn the_typescript_sdk_passes_its_tests_against_this_server(backend: Backend) {
    let test = "the_typescript_sdk_passes_its_tests_against_this_server";
    if let Err(why) = build_once() {
        return skipped(test, &why);
    }
    let dir = sdk_dir();
    let mut files: Vec<String> = std::fs::read_dir(dir.join("test"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the SDK's test files: {files:?}");
    let (url, _db) = backend.database_url().await;
    // One file at a time: on PostgreSQL every file's server shares the
    // test's database (and its tenant), and the stream test counts events.
    // Each test has two minutes; the whole run ten.
    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-timeout=120000"])
        .args(files.iter().map(|f| format!("test/{f}")))
        .current_dir(&dir)
        .env("EVENTFLOW_BIN", env!("CARGO_BIN_EXE_eventflow"))
        .env("EVENTFLOW_SDK_TEST_DATABASE_URL", &url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(600), run)
        .await
        .expect("the SDK's tests finish within ten minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every test ran and passed; none was skipped or left to do.
    let count = |label: &str| -> usize {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# {label} ")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(usize::MAX)
    };
    assert!(count("pass") >= 25, "{stdout}");
    assert_eq!(count("pass"), count("tests"), "{stdout}");
    assert_eq!(count("skipped"), 0, "{stdout}");
    assert_eq!(count("todo"), 0, "{stdout}");
}
