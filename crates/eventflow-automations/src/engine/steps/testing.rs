//! What the step kinds' tests share: a real SQLite store in a temporary
//! directory with one tenant, a run of a workflow, and local servers that
//! record what they were sent (HTTP, and a small SMTP server).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use eventflow_model::id::TenantId;
use eventflow_model::{ResourceType, time};
use eventflow_store::{Automations, Op, Records, SystemClock, Tenants, WriteKind, WriteRequest};
use eventflow_store::{NewRun, Run, RunOrigin, StartRuns};
use eventflow_store::{SqliteConfig, SqliteStore};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::{At, Mailer, Tools};
use crate::engine::Settings;

/// The longest a test's provider call may take before it counts as a
/// timeout (a bound on a broken test, not a measure of speed).
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// A store with one tenant, and the settings and clients steps run with.
pub(crate) struct Kit {
    _dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub tenant: TenantId,
    pub settings: Settings,
    pub http: reqwest::Client,
    pub mailer: Option<Mailer>,
    pub timeout: Duration,
}

impl Kit {
    pub(crate) async fn new() -> Kit {
        eventflow_delivery::http::install_crypto();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(
            &dir.path().join("eventflow.db"),
            Arc::new(SystemClock),
            SqliteConfig::default(),
        )
        .await
        .expect("the store opens");
        let tenant = store
            .create_tenant("Clinic", "hash-of-a-key", false)
            .await
            .expect("the tenant is created")
            .expect("a new tenant")
            .tenant_id;
        let mut settings = Settings::default();
        // The test servers listen on 127.0.0.1.
        settings.url_policy.allow_private = true;
        Kit {
            _dir: dir,
            store,
            tenant,
            settings,
            http: eventflow_delivery::http::client(true, TIMEOUT),
            mailer: None,
            timeout: TIMEOUT,
        }
    }

    pub(crate) fn tools(&self) -> Tools<'_> {
        Tools {
            store: self.store.as_ref(),
            http: &self.http,
            mailer: self.mailer.as_ref(),
            settings: &self.settings,
            timeout: self.timeout,
        }
    }

    /// A run of workflow `reminders` at its first step, started by an
    /// event with `context` (not in the store).
    pub(crate) fn run(&self, context: Value) -> Run {
        let now = time::format(jiff::Timestamp::now());
        Run {
            id: "run_test1".into(),
            tenant_id: self.tenant.to_string(),
            workflow: "reminders".into(),
            event_id: Some("evt_test1".into()),
            origin: RunOrigin::Event,
            timer_key: None,
            path: String::new(),
            context,
            status: eventflow_store::RunStatus::Pending,
            steps: Vec::new(),
            next_step: 0,
            window_started_at: None,
            next_at: None,
            lease_owner: None,
            started_at: now.clone(),
            updated_at: now,
            finished_at: None,
            chain_depth: 0,
        }
    }

    /// Writes a record as an API key would; its id.
    pub(crate) async fn create(&self, rt: ResourceType, body: Value) -> String {
        let written = self
            .store
            .write(WriteRequest {
                tenant: self.tenant.to_string(),
                actor: eventflow_store::Actor::Key("key_test".into()),
                kind: WriteKind::Single(Op::Create { rt, body }),
                idempotency: None,
            })
            .await
            .expect("the record is written");
        written.body["id"].as_str().expect("an id").to_string()
    }

    /// A run of workflow `reminders` started in the store and leased to
    /// this node, as the engine starts one.
    pub(crate) async fn started_run(&self) -> Run {
        let runs = self
            .store
            .start_runs(StartRuns {
                tenant_id: self.tenant.to_string(),
                from: 0,
                to: 0,
                runs: vec![NewRun {
                    id: eventflow_model::id::RunId::fresh().into_string(),
                    tenant_id: self.tenant.to_string(),
                    workflow: "reminders".into(),
                    event_id: None,
                    origin: RunOrigin::Event,
                    timer_key: None,
                    path: String::new(),
                    context: json!({}),
                    chain_depth: 0,
                }],
                lease: 1,
                condition_errors: Vec::new(),
            })
            .await
            .expect("the run starts")
            .expect("the cursor had not moved");
        runs.into_iter().next().expect("one run")
    }
}

/// The first step of `run`, performed now, in an operator's workflow.
pub(crate) fn at(run: &Run) -> At<'_> {
    At {
        run,
        label: "1".into(),
        now: jiff::Timestamp::now(),
        own: false,
    }
}

/// A step's rendered settings, from a JSON object.
pub(crate) fn config(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("settings are an object, not {other}"),
    }
}

/// A request a [`Server`] received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The body as a form (`To=…&Body=…`), decoded.
    pub(crate) fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// A local HTTP server that records every request and answers each with
/// one status and body (or never answers).
pub(crate) struct Server {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Answers every request with `status` and `body`.
    pub(crate) async fn answering(status: u16, body: &'static str) -> Server {
        Server::start(Some((status, body))).await
    }

    /// Takes every request and never answers.
    pub(crate) async fn silent() -> Server {
        Server::start(None).await
    }

    async fn start(answer: Option<(u16, &'static str)>) -> Server {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let log = log.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .expect("a request body");
                log.lock().expect("the log").push(Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    headers: parts.headers,
                    body: body.to_vec(),
                });
                let Some((status, body)) = answer else {
                    return std::future::pending().await;
                };
                (
                    StatusCode::from_u16(status).expect("a status"),
                    [("content-type", "application/json")],
                    body,
                )
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { url, seen, task }
    }

    /// What it received so far, in order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("the log").clone()
    }
}

/// A local SMTP server (no TLS, no authentication) that takes every
/// message and keeps its text.
pub(crate) struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    pub(crate) async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("an address").port();
        let mails: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = mails.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, kept.clone()));
            }
        });
        SmtpSink { port, mails, task }
    }

    /// The messages taken so far (headers and body, as sent).
    pub(crate) fn mails(&self) -> Vec<String> {
        self.mails.lock().expect("the mails").clone()
    }
}

/// One SMTP conversation: every command is accepted.
async fn session(stream: tokio::net::TcpStream, mails: Arc<Mutex<Vec<String>>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    if write.write_all(b"220 sink ESMTP\r\n").await.is_err() {
        return;
    }
    while let Ok(Some(line)) = lines.next_line().await {
        let command = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match command.as_str() {
            "EHLO" | "HELO" => b"250 sink\r\n",
            "DATA" => {
                if write.write_all(b"354 go ahead\r\n").await.is_err() {
                    return;
                }
                let mut mail = String::new();
                while let Ok(Some(l)) = lines.next_line().await {
                    if l == "." {
                        break;
                    }
                    mail.push_str(&l);
                    mail.push('\n');
                }
                mails.lock().expect("the mails").push(mail);
                b"250 2.0.0 queued\r\n"
            }
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"250 OK\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
