//! The command line (docs/design.md §2, §6, §7), run as the real binary:
//! `serve` and its bootstrap key, `tenants create` beside a running server,
//! `migrate`, the configuration file with flag and variable overrides, and
//! `--help`.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventflow_testkit::free_port;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_eventflow");

/// The command with no `EVENTFLOW_*` variable inherited from the caller.
fn eventflow(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("EVENTFLOW_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `serve` process, killed when dropped.
struct Served {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let sink = buf.clone();
    // The thread holds `sink` until the pipe closes: `run` waits for that.
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buf
}

impl Served {
    /// Starts `serve` with `cmd` (already holding its arguments) and waits
    /// until it prints its address and answers `/healthz`.
    async fn start(mut cmd: Command, port: u16) -> Served {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn eventflow serve");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let mut served = Served {
            child,
            stdout,
            stderr,
            base: format!("http://127.0.0.1:{port}"),
        };
        let line = format!("Event Flow listening on http://127.0.0.1:{port}");
        let http = eventflow_testkit::http_client();
        // Bounded: 30 s to print the address and answer /healthz; if the
        // process exits or the time runs out, say what it printed.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = served.child.try_wait().expect("try_wait") {
                panic!(
                    "serve exited ({status}):\n{}\n{}",
                    served.stdout(),
                    served.stderr()
                );
            }
            if served.stdout().contains(&line)
                && let Ok(r) = http.get(format!("{}/healthz", served.base)).send().await
                && r.status() == 200
            {
                return served;
            }
            if Instant::now() > deadline {
                panic!(
                    "serve did not print its address and answer /healthz in 30 s:\n{}\n{}",
                    served.stdout(),
                    served.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Stops the server (SIGTERM on Unix, so it shuts down cleanly).
    fn stop(mut self) {
        #[cfg(unix)]
        {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_cmd(dir: &Path, data: &Path, port: u16) -> Command {
    let mut cmd = eventflow(dir);
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    cmd
}

/// Runs a command to its end; kills it (and fails the test) if it is
/// still running after 30 s.
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the command was still running after 30 s: {}{}",
                stdout.lock().unwrap(),
                stderr.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The readers end when the pipes close, which they do at exit.
    let drained = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&stdout) + Arc::strong_count(&stderr) > 2 && Instant::now() < drained {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stdout = stdout.lock().unwrap().clone().into_bytes();
    let stderr = stderr.lock().unwrap().clone().into_bytes();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// `Command::output`, bounded.
trait Bounded {
    fn bounded(&mut self) -> Output;
}

impl Bounded for Command {
    fn bounded(&mut self) -> Output {
        run(self)
    }
}

/// Runs a command that must fail (before serving, for `serve`).
fn run_to_failure(mut cmd: Command) -> Output {
    let out = run(&mut cmd);
    assert!(
        !out.status.success(),
        "expected a failure, got success: {}",
        text(&out.stdout)
    );
    out
}

/// The first line of standard error.
fn first_line(out: &Output) -> String {
    text(&out.stderr)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn call(
    base: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = eventflow_testkit::http_client()
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn create_patient(base: &str, key: &str) -> (u16, Value) {
    call(
        base,
        key,
        reqwest::Method::POST,
        "/v1/patients",
        Some(json!({"firstName": "Ada", "lastName": "Lovelace"})),
    )
    .await
}

/// `efk_…` tokens in a text.
fn keys_in(s: &str) -> Vec<String> {
    s.split(|c: char| c.is_whitespace())
        .filter(|w| w.starts_with("efk_"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_fresh_data_dir_prints_a_generated_key_once_and_saves_it_0600() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let server = Served::start(serve_cmd(dir.path(), &data, port), port).await;
    let out = server.stdout();
    let printed = keys_in(&out);
    assert_eq!(printed.len(), 1, "the key is printed once:\n{out}");
    let key = printed[0].clone();
    assert!(
        !server.stderr().contains(&key),
        "the key must not reach the logs"
    );

    let file = data.join("bootstrap-api-key");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "bootstrap-api-key mode {mode:o}");
    }
    // The key works; another does not.
    let (status, body) = create_patient(&server.base, &key).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = create_patient(&server.base, "efk_wrong").await;
    assert_eq!(status, 401);
    server.stop();

    // A second start on the same data: no new key, the old one still works.
    let port = free_port();
    let again = Served::start(serve_cmd(dir.path(), &data, port), port).await;
    let out = again.stdout();
    assert!(keys_in(&out).is_empty(), "no key on a second start:\n{out}");
    assert!(!out.contains("API key"), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), key);
    let (status, body) = call(
        &again.base,
        &key,
        reqwest::Method::GET,
        "/v1/patients",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"].as_array().unwrap().len(),
        1,
        "the data survived"
    );
    // The database holds only a hash of the key.
    again.stop();
    let db = std::fs::read(data.join("eventflow.db")).unwrap();
    let wal = std::fs::read(data.join("eventflow.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "the key itself is stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_key_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let key = "clinic-chosen-key-0123456789-abcdefgh";
    let mut cmd = serve_cmd(dir.path(), &data, port);
    cmd.env("EVENTFLOW_BOOTSTRAP_API_KEY", key);
    let server = Served::start(cmd, port).await;
    let out = server.stdout();
    assert!(
        !out.contains(key),
        "a key the user chose is not printed:\n{out}"
    );
    assert!(keys_in(&out).is_empty(), "{out}");
    assert!(
        !data.join("bootstrap-api-key").exists(),
        "no key file when the key came from the environment"
    );
    let (status, body) = create_patient(&server.base, key).await;
    assert_eq!(status, 201, "{body}");
    assert!(!server.stderr().contains(key));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_database_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    // The server runs with umask 000: everything it creates would be
    // readable and writable by every local user unless it sets modes itself.
    let mut cmd = Command::new("sh");
    cmd.current_dir(dir.path())
        .arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    for (name, _) in std::env::vars() {
        if name.starts_with("EVENTFLOW_") {
            cmd.env_remove(name);
        }
    }
    let server = Served::start(cmd, port).await;
    let key = keys_in(&server.stdout()).pop().expect("the generated key");
    let (status, body) = create_patient(&server.base, &key).await;
    assert_eq!(status, 201, "{body}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data_dir");
    for name in [
        "eventflow.db",
        "eventflow.db-wal",
        "eventflow.db-shm",
        "bootstrap-api-key",
    ] {
        let path = data.join(name);
        assert!(path.exists(), "{name} exists while the server runs");
        assert_eq!(mode(&path), 0o600, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_bootstrap_key_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = serve_cmd(dir.path(), &data, free_port());
    cmd.env("EVENTFLOW_BOOTSTRAP_API_KEY", "a");
    let out = run_to_failure(cmd);
    let line = first_line(&out);
    assert!(line.contains("EVENTFLOW_BOOTSTRAP_API_KEY"), "{line}");
    assert!(line.contains("at least 32 characters"), "{line}");
    assert!(
        !data.join("eventflow.db").exists(),
        "nothing is created with a refused key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_key_is_not_a_flag_but_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = "efk_from-a-file-0123456789abcdefghijkl";
    // A flag would show the key to every local user in `ps`.
    let mut cmd = serve_cmd(dir.path(), &data, free_port());
    cmd.arg("--bootstrap-api-key").arg(key);
    let out = run_to_failure(cmd);
    assert!(
        text(&out.stderr).contains("--bootstrap-api-key"),
        "{}",
        text(&out.stderr)
    );
    let file = dir.path().join("bootstrap.key");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    let port = free_port();
    let mut cmd = serve_cmd(dir.path(), &data, port);
    cmd.env("EVENTFLOW_BOOTSTRAP_API_KEY_FILE", &file);
    let server = Served::start(cmd, port).await;
    let (status, body) = create_patient(&server.base, key).await;
    assert_eq!(status, 201, "{body}");
    assert!(!server.stdout().contains(key));
    assert!(!server.stderr().contains(key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_create_prints_only_the_key_and_works_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let server = Served::start(serve_cmd(dir.path(), &data, port), port).await;
    let default_key = keys_in(&server.stdout())[0].clone();
    let (status, _) = create_patient(&server.base, &default_key).await;
    assert_eq!(status, 201);

    let out = eventflow(dir.path())
        .args(["tenants", "create", "clinic-north", "--data-dir"])
        .arg(&data)
        .bounded();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the key alone on stdout: {stdout:?}");
    assert!(stdout.ends_with('\n'));
    let key = lines[0].to_string();
    assert!(key.starts_with("efk_") && !key.contains(' '), "{key}");
    assert!(
        !text(&out.stderr).contains(&key),
        "messages go to stderr, without the key"
    );

    // The new key works against the running server, for a new tenant.
    let (status, body) = create_patient(&server.base, &key).await;
    assert_eq!(status, 201, "{body}");
    let (_, events) = call(&server.base, &key, reqwest::Method::GET, "/v1/events", None).await;
    let events = events["data"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["sequence"], 1, "its own sequence");
    let (_, default_events) = call(
        &server.base,
        &default_key,
        reqwest::Method::GET,
        "/v1/events",
        None,
    )
    .await;
    let default_events = default_events["data"].as_array().unwrap();
    assert_eq!(default_events.len(), 1);
    assert_ne!(default_events[0]["tenantId"], events[0]["tenantId"]);
    let (status, _) = call(
        &server.base,
        &key,
        reqwest::Method::GET,
        &format!(
            "/v1/patients/{}",
            default_events[0]["resource"]["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(
        status, 404,
        "the new tenant cannot read the default tenant's"
    );

    // The same name again: a one-line error and a failing exit code.
    let out = eventflow(dir.path())
        .args(["tenants", "create", "clinic-north", "--data-dir"])
        .arg(&data)
        .bounded();
    assert!(!out.status.success());
    assert!(text(&out.stdout).is_empty(), "no key for a failure");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(
        stderr.contains("already exists") && stderr.contains("clinic-north"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A bad name.
    let out = eventflow(dir.path())
        .args(["tenants", "create", "  ", "--data-dir"])
        .arg(&data)
        .bounded();
    assert!(!out.status.success());
    assert!(first_line(&out).contains("NAME"), "{}", first_line(&out));
    // The server kept running throughout.
    let (status, _) = create_patient(&server.base, &default_key).await;
    assert_eq!(status, 201);
}

/// The id in a `created … (id)` line of standard error.
fn created_id(out: &std::process::Output) -> String {
    let stderr = text(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("created "))
        .unwrap_or_else(|| panic!("a created line: {stderr}"));
    line.rsplit('(')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgs_create_and_add_clinic_and_tenants_create_org_make_a_network() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let server = Served::start(serve_cmd(dir.path(), &data, port), port).await;
    let run = |args: &[&str]| {
        eventflow(dir.path())
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .bounded()
    };
    let out = run(&["orgs", "create", "north-network"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let org_key = text(&out.stdout).trim().to_string();
    assert_eq!(text(&out.stdout).lines().count(), 1, "the key alone");
    assert!(org_key.starts_with("efk_"));
    let org = created_id(&out);
    assert!(org.starts_with("org_"), "{org}");

    let out = run(&["tenants", "create", "north-a", "--org", &org]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let a = created_id(&out);
    let out = run(&["tenants", "create", "north-b"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let b = created_id(&out);
    let b_key = text(&out.stdout).trim().to_string();
    let out = run(&["orgs", "add-clinic", &org, &b]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).is_empty());

    // The running server sees the network at once.
    let (status, clinics) = call(
        &server.base,
        &org_key,
        reqwest::Method::GET,
        "/v1/clinics",
        None,
    )
    .await;
    assert_eq!(status, 200, "{clinics}");
    let ids: Vec<&str> = clinics["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str(), b.as_str()]);
    let (status, _) = create_patient(&server.base, &b_key).await;
    assert_eq!(status, 201);
    let (_, network) = call(
        &server.base,
        &org_key,
        reqwest::Method::GET,
        "/v1/events",
        None,
    )
    .await;
    assert_eq!(network["data"][0]["tenantId"], b.as_str());
    assert_eq!(network["data"][0]["networkSequence"], 1);

    // Mistakes are one line and change nothing.
    let out = run(&["orgs", "create", "north-b"]);
    assert!(!out.status.success());
    assert!(
        first_line(&out).contains("already exists"),
        "{}",
        first_line(&out)
    );
    let out = run(&["orgs", "create", "other-network"]);
    let other = created_id(&out);
    for (args, says) in [
        (
            vec!["orgs", "add-clinic", &other, &b],
            "another organisation",
        ),
        (
            vec!["orgs", "add-clinic", "org_nope", &b],
            "no organisation",
        ),
        (vec!["orgs", "add-clinic", &org, "ten_nope"], "no clinic"),
        (vec!["orgs", "add-clinic", "ten_x", &b], "ORG"),
        (vec!["orgs", "add-clinic", &org, &other], "TENANT"),
        (
            vec!["tenants", "create", "north-c", "--org", "nonsense"],
            "ORG",
        ),
    ] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let (_, clinics) = call(
        &server.base,
        &org_key,
        reqwest::Method::GET,
        "/v1/clinics",
        None,
    )
    .await;
    assert_eq!(clinics["data"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_prepares_a_database_that_serve_then_uses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    for _ in 0..2 {
        let out = eventflow(dir.path())
            .arg("migrate")
            .arg("--data-dir")
            .arg(&data)
            .bounded();
        assert!(out.status.success(), "migrate: {}", text(&out.stderr));
        assert!(text(&out.stdout).is_empty(), "messages go to stderr");
    }
    assert!(data.join("eventflow.db").exists());
    let port = free_port();
    let server = Served::start(serve_cmd(dir.path(), &data, port), port).await;
    let key = keys_in(&server.stdout());
    assert_eq!(
        key.len(),
        1,
        "a migrated but empty database still bootstraps"
    );
    let (status, _) = create_patient(&server.base, &key[0]).await;
    assert_eq!(status, 201);
    // Migrating while the server runs is harmless.
    let out = eventflow(dir.path())
        .arg("migrate")
        .arg("--data-dir")
        .arg(&data)
        .bounded();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (status, _) = create_patient(&server.base, &key[0]).await;
    assert_eq!(status, 201);
}

fn write_config(dir: &Path, toml: &str) -> std::path::PathBuf {
    let path = dir.join("eventflow.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_config_key_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (toml, key) in [
        ("listen_port = 7700\n", "listen_port"),
        (
            "[providers.twilio]\naccount_sid = \"AC1\"\nauth_token = \"t\"\nfrom = \"+15550000000\"\nregion = \"us\"\n",
            "region",
        ),
        ("[provider]\nx = 1\n", "provider"),
    ] {
        let config = write_config(dir.path(), toml);
        for command in [&["serve"][..], &["migrate"], &["tenants", "create", "x"]] {
            let mut cmd = eventflow(dir.path());
            cmd.args(command)
                .arg("--config")
                .arg(&config)
                .arg("--data-dir")
                .arg(&data);
            if command[0] == "serve" {
                cmd.arg("--listen")
                    .arg(format!("127.0.0.1:{}", free_port()));
            }
            let out = run_to_failure(cmd);
            let line = first_line(&out);
            assert!(line.contains(key), "{command:?} with {toml:?}: {line}");
            assert!(!text(&out.stderr).contains("panicked"));
            assert!(!text(&out.stdout).contains("listening"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_value_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (toml, key) in [
        ("listen = \"nowhere\"\n", "listen"),
        ("event_retention_days = \"x\"\n", "event_retention_days"),
        ("event_retention_days = 0\n", "event_retention_days"),
        (
            "allow_private_endpoints = \"yes\"\n",
            "allow_private_endpoints",
        ),
        ("public_url = \"ftp://clinic\"\n", "public_url"),
        ("database_url = \"mysql://db\"\n", "database_url"),
        (
            "[providers.smtp]\nhost = \"h\"\nfrom = \"f\"\nport = \"x\"\n",
            "port",
        ),
        (
            "[providers.smtp]\nhost = \"h\"\nfrom = \"f\"\ntls = \"bogus\"\n",
            "tls",
        ),
    ] {
        let config = write_config(dir.path(), toml);
        let mut cmd = eventflow(dir.path());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data);
        if !toml.starts_with("listen") {
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{}", free_port()));
        }
        let out = run_to_failure(cmd);
        let line = first_line(&out);
        // The key as a word: `listen` in "listening" does not count.
        let named = line
            .match_indices(key)
            .any(|(i, _)| !line[i + key.len()..].starts_with(|c: char| c.is_alphanumeric()));
        assert!(named, "{toml:?} must name {key}: {line}");
        assert!(!text(&out.stderr).contains("panicked"));
    }
    // Not TOML at all: the file is named.
    let config = write_config(dir.path(), "listen = [\n");
    let mut cmd = eventflow(dir.path());
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data);
    let out = run_to_failure(cmd);
    assert!(
        first_line(&out).contains("eventflow.toml"),
        "{}",
        first_line(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_environment_value_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (var, value) in [
        ("EVENTFLOW_LISTEN", "bad"),
        ("EVENTFLOW_EVENT_RETENTION_DAYS", "x"),
        ("EVENTFLOW_ALLOW_PRIVATE_ENDPOINTS", "maybe"),
        ("EVENTFLOW_PUBLIC_URL", "clinic.example"),
    ] {
        let mut cmd = eventflow(dir.path());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .env(var, value);
        if var != "EVENTFLOW_LISTEN" {
            cmd.arg("--listen")
                .arg(format!("127.0.0.1:{}", free_port()));
        }
        let out = run_to_failure(cmd);
        let line = first_line(&out);
        let setting = var.trim_start_matches("EVENTFLOW_").to_lowercase();
        assert!(
            line.contains(var) || line.contains(&setting),
            "{var}={value} must be named: {line}"
        );
    }
    // An unknown config file named by the variable.
    let mut cmd = eventflow(dir.path());
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .env("EVENTFLOW_CONFIG", dir.path().join("missing.toml"));
    let out = run_to_failure(cmd);
    assert!(
        first_line(&out).contains("missing.toml"),
        "{}",
        first_line(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_and_variables_override_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file_data = dir.path().join("from-file");
    let (p_file, p_env, p_flag) = (free_port(), free_port(), free_port());
    let config = write_config(
        dir.path(),
        &format!(
            "listen = \"127.0.0.1:{p_file}\"\ndata_dir = \"{}\"\nevent_retention_days = 7\n",
            file_data.display()
        ),
    );
    // The file alone.
    let mut cmd = eventflow(dir.path());
    cmd.arg("serve").arg("--config").arg(&config);
    let server = Served::start(cmd, p_file).await;
    assert!(
        file_data.join("eventflow.db").exists(),
        "data_dir from the file"
    );
    server.stop();
    // A variable beats the file.
    let mut cmd = eventflow(dir.path());
    cmd.arg("serve")
        .env("EVENTFLOW_CONFIG", &config)
        .env("EVENTFLOW_LISTEN", format!("127.0.0.1:{p_env}"));
    let server = Served::start(cmd, p_env).await;
    server.stop();
    // A flag beats the variable and the file.
    let flag_data = dir.path().join("from-flag");
    let mut cmd = eventflow(dir.path());
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{p_flag}"))
        .arg("--data-dir")
        .arg(&flag_data)
        .env("EVENTFLOW_LISTEN", format!("127.0.0.1:{p_env}"));
    let server = Served::start(cmd, p_flag).await;
    assert!(flag_data.join("eventflow.db").exists(), "--data-dir wins");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_no_flags_uses_the_documented_defaults() {
    // The data directory defaults to ./eventflow-data.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = eventflow(dir.path());
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    let server = Served::start(cmd, port).await;
    let data = dir.path().join("eventflow-data");
    assert!(data.join("eventflow.db").exists());
    let key = std::fs::read_to_string(data.join("bootstrap-api-key")).unwrap();
    let (status, _) = create_patient(&server.base, key.trim()).await;
    assert_eq!(status, 201);
    server.stop();

    // The address defaults to 127.0.0.1:7700: checked when that port is
    // free on this machine (a note says so when it is not).
    if TcpListener::bind("127.0.0.1:7700").is_err() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "note: the default address 127.0.0.1:7700 was not checked: the port is in use"
        );
        return;
    }
    let mut cmd = eventflow(dir.path());
    cmd.arg("serve");
    let server = Served::start(cmd, 7700).await;
    let (status, _) = create_patient(&server.base, key.trim()).await;
    assert_eq!(status, 201, "the same ./eventflow-data again");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_has_help_with_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let out = eventflow(dir.path()).arg("--help").bounded();
    assert!(out.status.success());
    let top = text(&out.stdout);
    for command in [
        "serve", "migrate", "tenants", "orgs", "bench", "listen", "trigger", "events",
    ] {
        assert!(
            top.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "--help lists {command}:\n{top}"
        );
    }
    for command in [
        &["serve"][..],
        &["migrate"],
        &["tenants"],
        &["tenants", "create"],
        &["orgs"],
        &["orgs", "create"],
        &["orgs", "add-clinic"],
        &["bench"],
        &["listen"],
        &["trigger"],
        &["events"],
        &["events", "tail"],
    ] {
        let out = eventflow(dir.path()).args(command).arg("--help").bounded();
        assert!(out.status.success(), "{command:?} --help");
        let help = text(&out.stdout);
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with("Example: eventflow ")),
            "{command:?} --help has an example line:\n{help}"
        );
        assert!(help.contains("Usage: eventflow"), "{help}");
    }
    let out = eventflow(dir.path()).arg("serve").arg("--help").bounded();
    let help = text(&out.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--config",
        "--database",
        "--workflows",
    ] {
        assert!(help.contains(flag), "serve --help lists {flag}");
    }
    // An unknown command is an error, not a panic.
    let out = eventflow(dir.path()).arg("frobnicate").bounded();
    assert!(!out.status.success());
    assert!(!text(&out.stderr).contains("panicked"));
}

/// The same commands with `--database postgres://…`: `serve` bootstraps,
/// `tenants create` works beside it, `migrate` applies. Skipped, saying so,
/// without `EVENTFLOW_TEST_DATABASE_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_tenants_and_migrate_work_on_postgres() {
    let Some(eventflow_testkit::Backend::Postgres(base)) =
        eventflow_testkit::Backend::postgres("it::cli::serve_tenants_and_migrate_work_on_postgres")
    else {
        return;
    };
    let db = eventflow_testkit::TestDatabase::create(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let out = eventflow(dir.path())
        .arg("migrate")
        .arg("--database")
        .arg(&db.url)
        .bounded();
    assert!(out.status.success(), "migrate: {}", text(&out.stderr));

    let port = free_port();
    let mut cmd = serve_cmd(dir.path(), &data, port);
    cmd.env("EVENTFLOW_DATABASE_URL", &db.url);
    let server = Served::start(cmd, port).await;
    let printed = keys_in(&server.stdout());
    assert_eq!(printed.len(), 1, "{}", server.stdout());
    let default_key = printed[0].clone();
    assert_eq!(
        std::fs::read_to_string(data.join("bootstrap-api-key"))
            .unwrap()
            .trim(),
        default_key
    );
    assert!(
        !data.join("eventflow.db").exists(),
        "no SQLite database beside PostgreSQL"
    );
    let (status, _) = create_patient(&server.base, &default_key).await;
    assert_eq!(status, 201);

    let out = eventflow(dir.path())
        .args(["tenants", "create", "clinic-south", "--database"])
        .arg(&db.url)
        .bounded();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    let key = stdout.trim().to_string();
    let (status, body) = create_patient(&server.base, &key).await;
    assert_eq!(status, 201, "{body}");
    let (_, events) = call(&server.base, &key, reqwest::Method::GET, "/v1/events", None).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1);
    assert_eq!(events["data"][0]["sequence"], 1);

    let out = eventflow(dir.path())
        .args(["tenants", "create", "clinic-south", "--database"])
        .arg(&db.url)
        .bounded();
    assert!(!out.status.success());
    assert!(
        first_line(&out).contains("already exists"),
        "{}",
        first_line(&out)
    );
    server.stop();

    // A second start on the same database prints no key.
    let port = free_port();
    let mut cmd = serve_cmd(dir.path(), &data, port);
    cmd.arg("--database").arg(&db.url);
    let again = Served::start(cmd, port).await;
    assert!(keys_in(&again.stdout()).is_empty(), "{}", again.stdout());
    let (status, _) = create_patient(&again.base, &default_key).await;
    assert_eq!(status, 201);
    again.stop();
    drop(db);
}
