//! Test support (not published): spawn the real server on a random port with
//! a fresh database and speak HTTP to it.
//!
//! ```no_run
//! # async fn demo() {
//! use eventflow_testkit::TestServer;
//! use serde_json::json;
//! let server = TestServer::spawn().await;
//! let api = server.api();
//! let patient = api.post("/v1/patients", json!({"firstName": "Ada", "lastName": "Lovelace"})).await;
//! assert_eq!(patient.status, 201);
//! # }
//! ```
//!
//! # Layout
//! - [`TestServer`], [`Api`], `backend_tests!`: the real server on a random
//!   port, an HTTP client for it, and one test per storage backend.
//! - [`receiver`]: a scriptable webhook receiver on loopback.
//! - [`python`](mod@python): outside tools the tests run (Python reference libraries,
//!   an SMTP server, `openssl`), or a `SKIPPED` line without them.

pub mod python;
pub mod receiver;

pub use python::{SmtpMode, SmtpSink, python, python_has, self_signed_cert, skipped};
pub use receiver::{Answer, Gate, Received, Receiver};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use eventflow_server::{AppState, Application, Config, Secret, auth};
use eventflow_store::{Clock, ManualClock, SystemClock};
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::oneshot;

/// The storage backend a test runs against. Behaviour tests are written once
/// and run on each: SQLite always, PostgreSQL when
/// `EVENTFLOW_TEST_DATABASE_URL` is set (see [`backend_tests!`]).
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend, or `None` (with a note on stderr saying the
    /// test was skipped) when `EVENTFLOW_TEST_DATABASE_URL` is not set.
    pub fn postgres(test: &str) -> Option<Backend> {
        match std::env::var("EVENTFLOW_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ => {
                skipped(
                    &format!("{test} on PostgreSQL"),
                    "EVENTFLOW_TEST_DATABASE_URL is not set",
                );
                None
            }
        }
    }

    /// The `database_url` a server process on this backend takes: empty
    /// (SQLite in its data directory), or a fresh PostgreSQL database, which
    /// lives as long as the returned guard.
    pub async fn database_url(&self) -> (String, Option<TestDatabase>) {
        match self {
            Backend::Sqlite => (String::new(), None),
            Backend::Postgres(base) => {
                let db = TestDatabase::create(base).await;
                (db.url.clone(), Some(db))
            }
        }
    }

    /// A server on this backend with default options.
    pub async fn spawn(&self) -> TestServer {
        self.spawn_with(Options::default()).await
    }

    /// A server on this backend on a [`ManualClock`]; returns the clock too.
    pub async fn spawn_with_clock(&self, start: jiff::Timestamp) -> (TestServer, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(start));
        let server = self
            .spawn_with(Options {
                clock: Some(clock.clone()),
                configure: None,
            })
            .await;
        (server, clock)
    }

    pub async fn spawn_with(&self, options: Options) -> TestServer {
        match self {
            Backend::Sqlite => TestServer::spawn_with(options).await,
            Backend::Postgres(base) => {
                let db = TestDatabase::create(base).await;
                let url = db.url.clone();
                let configure = options.configure;
                let mut server = TestServer::spawn_with(Options {
                    clock: options.clock,
                    configure: Some(Box::new(move |c: &mut Config| {
                        c.database_url = url;
                        if let Some(f) = configure {
                            f(c);
                        }
                    })),
                })
                .await;
                server.database = Some(db);
                server
            }
        }
    }
}

/// A PostgreSQL database of one test's own, dropped with the server.
pub struct TestDatabase {
    /// The URL of this database.
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates `eventflow_test_<random>` on the server of `base`.
    pub async fn create(base: &str) -> TestDatabase {
        use rand::Rng;
        use sqlx::Connection;
        let name = format!("eventflow_test_{:016x}", rand::rng().random::<u64>());
        let (prefix, query) = match base.split_once('?') {
            Some((p, q)) => (p, format!("?{q}")),
            None => (base, String::new()),
        };
        let server = prefix
            .rsplit_once('/')
            .map(|(s, _)| s)
            .filter(|s| s.contains("://") && !s.ends_with(':') && !s.ends_with('/'))
            .unwrap_or(prefix);
        let mut admin = sqlx::PgConnection::connect(base)
            .await
            .expect("EVENTFLOW_TEST_DATABASE_URL must name a reachable PostgreSQL database");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        TestDatabase {
            url: format!("{server}/{name}{query}"),
            admin_url: base.to_string(),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop it from a thread of its own: Drop cannot await, and the test's
        // runtime may be shutting down.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Declares, for each named `async fn NAME(backend: Backend)`, a module
/// `NAME` with one test per backend: `NAME::sqlite` and `NAME::postgres`.
///
/// ```text
/// backend_tests!(a_created_patient_can_be_read_back);
/// async fn a_created_patient_can_be_read_back(backend: Backend) {
///     let server = backend.spawn().await;
///     // ...
/// }
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    // `it::file::NAME::postgres`, as the harness names it.
                    if let Some(backend) = $crate::Backend::postgres(concat!(module_path!(), "::postgres")) {
                        super::$name(backend).await
                    }
                }
            }
        )*
    };
}

/// A change to the configuration before start.
pub type Configure = Box<dyn FnOnce(&mut Config) + Send>;

/// What `spawn_with` can change.
#[derive(Default)]
pub struct Options {
    /// The clock; the system clock when `None`.
    pub clock: Option<Arc<dyn Clock>>,
    /// Changes to the configuration before start.
    pub configure: Option<Configure>,
}

/// A running server with its own temporary data directory.
pub struct TestServer {
    pub base: String,
    pub key: String,
    pub state: AppState,
    http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Removed when the server is dropped.
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database, when on that backend; dropped last.
    pub database: Option<TestDatabase>,
}

impl TestServer {
    /// A server on the system clock.
    pub async fn spawn() -> TestServer {
        Self::spawn_with(Options::default()).await
    }

    /// A server on a [`ManualClock`] starting at `start`; returns the clock.
    pub async fn spawn_with_clock(start: jiff::Timestamp) -> (TestServer, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(start));
        let server = Self::spawn_with(Options {
            clock: Some(clock.clone()),
            configure: None,
        })
        .await;
        (server, clock)
    }

    pub async fn spawn_with(options: Options) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        Self::spawn_in(dir, options).await
    }

    /// A server on an existing data directory (to test restarts).
    pub async fn spawn_in(dir: tempfile::TempDir, options: Options) -> TestServer {
        let key = auth::generate_key();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.path().to_path_buf(),
            // Workflows a test writes through the API stay in its own
            // directory, never in the working directory.
            workflows_dir: dir.path().join("workflows"),
            bootstrap_api_key: Some(Secret::new(key.clone())),
            ..Config::default()
        };
        if let Some(f) = options.configure {
            f(&mut config);
        }
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let app = Application::build(config, clock)
            .await
            .expect("the server starts");
        let base = format!("http://{}", app.local_addr());
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        TestServer {
            base,
            key,
            state,
            http: http_client(),
            shutdown: Some(tx),
            task: Some(task),
            dir,
            database: None,
        }
    }

    /// Stops the server and hands back its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        std::mem::replace(&mut self.dir, dir)
    }

    /// Stops the server and starts it again on the same data directory and
    /// database (a real restart: a new store, writer, dispatcher and engine).
    pub async fn restart(mut self, options: Options) -> TestServer {
        let key = self.key.clone();
        let database = self.database.take();
        let url = database.as_ref().map(|d| d.url.clone());
        let dir = self.stop().await;
        let configure = options.configure;
        let mut server = TestServer::spawn_in(
            dir,
            Options {
                clock: options.clock,
                configure: Some(Box::new(move |c: &mut Config| {
                    if let Some(url) = url {
                        c.database_url = url;
                    }
                    if let Some(f) = configure {
                        f(c);
                    }
                })),
            },
        )
        .await;
        server.key = key;
        server.database = database;
        server
    }

    /// Waits (at most 20 s) until this server's automation engine has
    /// matched every committed event of every tenant, runs nothing, and has
    /// looked for due timers and retries after the call: whatever the
    /// automations were going to do by now is done, so a test can say that
    /// nothing (more) happened.
    pub async fn automations_settled(&self) {
        let store = self.state.store.clone();
        let engine = self.state.engine.clone();
        wait_for(Duration::from_secs(20), "the automations to settle", || {
            let (store, engine) = (store.clone(), engine.clone());
            async move {
                if !engine.settle(Duration::from_secs(5)).await {
                    return None;
                }
                for tenant in store.tenant_ids().await.ok()? {
                    let latest = store.latest_sequence(&tenant).await.ok()?;
                    if !engine.caught_up(&tenant, latest) {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
    }

    /// Waits (at most 10 s) until `n` readers — long polls, streams — wait
    /// on the tenant's commits, so a test's write lands while they wait.
    pub async fn until_waiting(&self, tenant: &str, n: usize) {
        let store = self.state.store.clone();
        let tenant = tenant.to_string();
        wait_for(
            Duration::from_secs(10),
            "a reader waiting on commits",
            || {
                let waiting = store.notifier().waiting(&tenant);
                async move { (waiting >= n).then_some(()) }
            },
        )
        .await;
    }

    /// A client for the `default` tenant.
    pub fn api(&self) -> Api {
        Api {
            base: self.base.clone(),
            key: Some(self.key.clone()),
            http: self.http.clone(),
            clinic: None,
        }
    }

    /// Creates a key of the `default` tenant with these scopes (through the
    /// API) and returns a client using it.
    pub async fn scoped(&self, scopes: &[&str]) -> Api {
        let r = self
            .api()
            .post(
                "/v1/api-keys",
                serde_json::json!({"name": "scoped", "scopes": scopes}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        self.api()
            .with_key(r.body["key"].as_str().expect("a secret"))
    }

    /// A client with no API key.
    pub fn anonymous(&self) -> Api {
        Api {
            base: self.base.clone(),
            key: None,
            http: self.http.clone(),
            clinic: None,
        }
    }

    /// Creates an organisation and returns a client with its first key
    /// (every scope), and its id.
    pub async fn new_organisation(&self, name: &str) -> (Api, String) {
        let key = auth::generate_key();
        let done = self
            .state
            .store
            .change_network(eventflow_store::NetworkChange::CreateOrganisation {
                name: name.to_string(),
                key_hash: auth::hash_key(&key),
            })
            .await
            .expect("organisation created");
        let org = done.tenant.expect("organisation returned").tenant_id;
        (self.api().with_key(&key), org.into_string())
    }

    /// Creates another tenant and returns a client for it.
    pub async fn new_tenant(&self, name: &str) -> Api {
        let key = auth::generate_key();
        self.state
            .store
            .create_tenant(name, &auth::hash_key(&key), false)
            .await
            .expect("tenant created")
            .expect("tenant returned");
        Api {
            base: self.base.clone(),
            key: Some(key),
            http: self.http.clone(),
            clinic: None,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// How long the delivery helpers of [`Api`] wait: a hang guard, far above
/// the time a delivery takes.
const DELIVERY_WAIT: Duration = Duration::from_secs(20);

/// An HTTP client for one tenant.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: Option<String>,
    pub http: reqwest::Client,
    /// Sent as `Eventflow-Clinic`: the member clinic an organisation key
    /// acts on.
    pub clinic: Option<String>,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The JSON body, or `Value::Null` when empty, or a string when not JSON.
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `body.id` as a string.
    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap_or_default().to_string()
    }

    /// `body.error.field`.
    pub fn error_field(&self) -> Option<&str> {
        self.body["error"]["field"].as_str()
    }
}

impl Api {
    /// The same server with another key.
    pub fn with_key(&self, key: &str) -> Api {
        Api {
            key: Some(key.to_string()),
            ..self.clone()
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The same key acting on a member clinic (`Eventflow-Clinic`).
    pub fn acting_on(&self, clinic: &str) -> Api {
        Api {
            clinic: Some(clinic.to_string()),
            ..self.clone()
        }
    }

    /// A request builder with the API key set (and `Eventflow-Clinic`).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, self.url(path));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        if let Some(c) = &self.clinic {
            r = r.header("eventflow-clinic", c);
        }
        r
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(self.request(reqwest::Method::PATCH, path).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Creates a record and returns its id; panics unless 201.
    pub async fn create(&self, collection: &str, body: Value) -> String {
        let r = self.post(&format!("/v1/{collection}"), body).await;
        assert_eq!(r.status, 201, "create {collection}: {}", r.body);
        r.id()
    }

    /// A patient with a phone number; returns its id.
    pub async fn patient(&self) -> String {
        self.create(
            "patients",
            serde_json::json!({"firstName": "Ada", "lastName": "Lovelace", "phone": "+15551234567"}),
        )
        .await
    }

    /// Creates a webhook endpoint and returns it (with its `id` and, for an
    /// HMAC endpoint, its `secret`); panics unless 201.
    pub async fn create_endpoint(&self, body: Value) -> Value {
        let r = self.post("/v1/endpoints", body).await;
        assert_eq!(r.status, 201, "create endpoint: {}", r.body);
        r.body
    }

    /// Waits (at most 20 s) until the endpoint lists a delivery; returns
    /// the newest.
    pub async fn first_delivery(&self, endpoint: &str) -> Value {
        let path = format!("/v1/endpoints/{endpoint}/deliveries");
        wait_for(DELIVERY_WAIT, "a delivery listed", || {
            let path = path.clone();
            async move {
                let r = self.get(&path).await.body;
                r["data"].as_array().and_then(|a| a.first().cloned())
            }
        })
        .await
    }

    /// Waits (at most 20 s) until the delivery has at least `n` attempts
    /// recorded; returns it.
    pub async fn delivery_with_attempts(&self, delivery: &str, n: usize) -> Value {
        let path = format!("/v1/deliveries/{delivery}");
        wait_for(DELIVERY_WAIT, &format!("{n} attempts recorded"), || {
            let path = path.clone();
            async move {
                let d = self.get(&path).await.body;
                (d["attempts"].as_array().map(Vec::len).unwrap_or(0) >= n).then_some(d)
            }
        })
        .await
    }

    /// Waits (at most `timeout`) until the endpoint has no pending delivery.
    pub async fn wait_until_nothing_pending(&self, endpoint: &str, timeout: Duration) {
        let path = format!("/v1/endpoints/{endpoint}/deliveries?status=pending");
        wait_for(timeout, "no delivery left pending", || {
            let path = path.clone();
            async move {
                let l = self.get(&path).await.body;
                (l["data"].as_array().map(Vec::len) == Some(0)).then_some(())
            }
        })
        .await;
    }

    /// All events after `after`, paging through.
    pub async fn events_after(&self, after: i64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = after;
        loop {
            let r = self
                .get(&format!("/v1/events?after={after}&limit=1000"))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            let data = r.body["data"].as_array().cloned().unwrap_or_default();
            if data.is_empty() {
                return out;
            }
            let next = r.body["nextAfter"].as_i64().expect("nextAfter");
            assert!(
                next > after,
                "nextAfter did not advance past {after}: {}",
                r.body
            );
            after = next;
            out.extend(data);
        }
    }
}

/// The real `eventflow` binary running as a process of its own: for tests
/// that kill it (`kill -9`) or read what it prints.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    /// A client for the tenant whose key was given.
    pub api: Api,
}

impl ServerProcess {
    /// Starts `bin serve` on a free port with `data_dir`, `database_url`
    /// (empty: SQLite) and `key` as the bootstrap key, plus `env`; waits (at
    /// most 30 s) until `/readyz` answers. With `capture`, stdout and stderr
    /// are piped for [`tokio::process::Child::wait_with_output`].
    pub async fn start(
        bin: &str,
        data_dir: &std::path::Path,
        database_url: &str,
        key: &str,
        env: &[(&str, &str)],
        capture: bool,
    ) -> ServerProcess {
        let port = free_port();
        let output = || {
            if capture {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            }
        };
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .env("EVENTFLOW_BOOTSTRAP_API_KEY", key)
            .env_remove("EVENTFLOW_DATABASE_URL")
            .envs(env.iter().copied())
            .stdout(output())
            .stderr(output())
            .kill_on_drop(true);
        if !database_url.is_empty() {
            cmd.args(["--database", database_url]);
        }
        let child = cmd.spawn().expect("the server process starts");
        let api = Api {
            base: format!("http://127.0.0.1:{port}"),
            key: Some(key.to_string()),
            http: http_client(),
            clinic: None,
        };
        wait_for(
            Duration::from_secs(30),
            "the server to answer /readyz",
            || {
                let (http, url) = (api.http.clone(), api.url("/readyz"));
                async move {
                    let r = http.get(url).send().await.ok()?;
                    r.status().is_success().then_some(())
                }
            },
        )
        .await;
        ServerProcess { child, api }
    }
}

/// Waits until `check` returns `Some`, polling every 10 ms, for at most
/// `timeout`; panics with `what` otherwise. For conditions with no event to
/// wait on; never a fixed sleep.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A plain HTTP client for tests (installs the TLS provider first, as every
/// reqwest client of the workspace needs).
/// A port no one listens on now, for a server a test starts itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn http_client() -> reqwest::Client {
    eventflow_delivery::http::install_crypto();
    reqwest::Client::new()
}

/// Locks `m`, also after a panic elsewhere while it was held: what it guards
/// (requests received, replies scripted) stays worth reading for the test
/// that reports the failure.
pub(crate) fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
