//! The client commands (docs/design.md §7): `trigger` for each of the 30 record
//! event types, `events tail`, and `listen` forwarding signed events to a
//! local receiver, and `keys create|list|revoke` — run as the real binary
//! against a real server.

use std::process::Stdio;
use std::time::Duration;

use eventflow_model::EventType;
use eventflow_testkit::{Answer, Backend, Options, Receiver, TestServer, backend_tests, wait_for};
use eventflow_webhook::{HmacSecret, Verifier};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_eventflow");

backend_tests!(
    trigger_fires_each_of_the_30_record_event_types,
    events_tail_prints_each_new_event,
    listen_forwards_signed_events_and_prints_a_line_each,
    listen_forwards_the_events_of_a_topic_with_their_topics,
    listen_with_an_organisation_key_follows_the_network,
    keys_create_list_and_revoke_work_through_the_api,
);

fn command(server: &TestServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("EVENTFLOW_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args)
        .env("EVENTFLOW_API_URL", &server.base)
        .env("EVENTFLOW_API_KEY", &server.key)
        .kill_on_drop(true);
    cmd
}

/// A running client command and its output lines.
struct Running {
    child: Child,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
}

fn lines(
    from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn start(mut cmd: Command) -> Running {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    Running {
        child,
        stdout,
        stderr,
    }
}

/// The next line of `rx` that contains `needle`, within 20 s.
async fn line_with(rx: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) if line.contains(needle) => return line,
            Ok(Some(line)) => seen.push(line),
            Ok(None) => panic!("the output ended before a line with {needle:?}: {seen:#?}"),
            Err(_) => panic!("no line with {needle:?} within 20 s: {seen:#?}"),
        }
    }
}

async fn trigger_fires_each_of_the_30_record_event_types(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    for t in EventType::all() {
        let name = t.name();
        let before = api.events_after(0).await.len();
        let out = command(&server, &["trigger", &name])
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "trigger {name}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("created ") && l.contains(t.resource.name())),
            "{name} printed the ids it made: {stdout}"
        );
        let events = api.events_after(0).await;
        let fired: Vec<&str> = events[before..]
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            fired.last(),
            Some(&name.as_str()),
            "trigger {name} fired {fired:?}"
        );
    }
    let out = command(&server, &["trigger", "nope.created"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .next()
            .unwrap()
            .contains("unknown event type"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

async fn events_tail_prints_each_new_event(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    api.patient().await; // before the tail: not printed
    let mut tail = start(command(
        &server,
        &["events", "tail", "--types", "patient.*"],
    ));
    line_with(&mut tail.stderr, "following events after sequence 1").await;
    let id = api.patient().await;
    api.create(
        "practitioners",
        serde_json::json!({"firstName": "A", "lastName": "B"}),
    )
    .await;
    let line = line_with(&mut tail.stdout, "patient.created").await;
    assert!(line.contains(&id), "{line}");
    let deleted = api.delete(&format!("/v1/patients/{id}")).await;
    assert_eq!(deleted.status, 204);
    let line = tail.stdout.recv().await.unwrap();
    assert!(
        line.contains("patient.deleted"),
        "practitioner events are filtered out: {line}"
    );
    tail.child.kill().await.unwrap();
}

async fn listen_forwards_signed_events_and_prints_a_line_each(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("listen-secret");
    let secret_arg = secret_file.to_str().unwrap().to_string();
    let listen_args = [
        "listen",
        "--forward-to",
        &rx.url("/hooks"),
        "--events",
        "patient.created",
        "--secret-file",
        &secret_arg,
    ];
    let mut listen = start(command(&server, &listen_args));
    let first = line_with(&mut listen.stderr, "signing secret: whsec_").await;
    let secret = first
        .split_whitespace()
        .find(|w| w.starts_with("whsec_"))
        .unwrap()
        .to_string();
    let id = api.patient().await;
    api.create(
        "practitioners",
        serde_json::json!({"firstName": "A", "lastName": "B"}),
    )
    .await;
    let line = line_with(&mut listen.stdout, "patient.created").await;
    assert!(line.ends_with("→ 200"), "{line}");
    let got = rx.wait_for(1, Duration::from_secs(20)).await;
    let req = &got[0];
    assert_eq!(req.path, "/hooks");
    assert_eq!(req.json()["data"]["id"], id.as_str());
    assert_eq!(
        req.header("x-eventflow-event-type"),
        Some("patient.created")
    );
    Verifier::new()
        .with_secret(HmacSecret::parse(&secret).unwrap())
        .verify(&req.headers, &req.body, jiff::Timestamp::now().as_second())
        .expect("signed like a webhook");
    assert!(req.header("x-clinikapi-signature").is_some());
    // A failing local receiver is a line, not the end of listen.
    rx.answer(Answer::Status(500));
    api.patient().await;
    let line = line_with(&mut listen.stdout, "patient.created").await;
    assert!(line.ends_with("→ 500"), "{line}");
    listen.child.kill().await.unwrap();
    // The secret is kept across runs.
    let mut again = start(command(&server, &listen_args));
    let line = line_with(&mut again.stderr, "signing secret:").await;
    assert!(line.contains(&secret), "{line}");
    again.child.kill().await.unwrap();
}

async fn listen_forwards_the_events_of_a_topic_with_their_topics(backend: Backend) {
    let server = backend.spawn().await;
    let api = server.api();
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("listen-secret");
    let mut listen = start(command(
        &server,
        &[
            "listen",
            "--forward-to",
            &rx.url("/hooks"),
            "--events",
            "appointment.cancelled",
            "--secret-file",
            secret_file.to_str().unwrap(),
        ],
    ));
    line_with(&mut listen.stderr, "forwarding events after sequence").await;
    let w = crate::helpers::world(&api).await;
    let path = format!("/v1/appointments/{}", w.appointment);
    for change in [
        serde_json::json!({"reason": "Follow-up"}),
        serde_json::json!({"status": "cancelled"}),
    ] {
        assert_eq!(api.patch(&path, change).await.status, 200);
    }
    let line = line_with(&mut listen.stdout, "appointment.updated").await;
    assert!(line.contains("[appointment.cancelled]"), "{line}");
    let got = rx.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["data"]["status"], "cancelled");
    assert_eq!(
        got[0].header("x-eventflow-topics"),
        Some("appointment.cancelled")
    );
    listen.child.kill().await.unwrap();
    assert_eq!(rx.count(), 1, "only the event that carries the topic");
}

async fn listen_with_an_organisation_key_follows_the_network(backend: Backend) {
    let server = backend.spawn().await;
    let (org, _) = server.new_organisation("North network").await;
    let mut clinic_keys = Vec::new();
    for name in ["North A", "North B"] {
        let r = org
            .post("/v1/clinics", serde_json::json!({ "name": name }))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        clinic_keys.push(org.with_key(r.body["apiKey"].as_str().unwrap()));
    }
    // Clinic A's own sequence runs ahead of the network's count of B's.
    for _ in 0..3 {
        clinic_keys[0].patient().await;
    }
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("listen-secret");
    let mut cmd = command(
        &server,
        &[
            "listen",
            "--forward-to",
            &rx.url("/hooks"),
            "--secret-file",
            secret_file.to_str().unwrap(),
        ],
    );
    cmd.env("EVENTFLOW_API_KEY", org.key.as_deref().unwrap());
    let mut listen = start(cmd);
    line_with(&mut listen.stderr, "forwarding events after sequence 3").await;
    let mut written = Vec::new();
    for i in 0..4 {
        written.push(clinic_keys[i % 2].patient().await);
    }
    let got = rx.wait_for(4, Duration::from_secs(20)).await;
    let forwarded: Vec<String> = got
        .iter()
        .map(|r| r.json()["data"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(forwarded, written, "every network event, in order");
    listen.child.kill().await.unwrap();
}

/// `listen` across a server restart on the same port: it reconnects and
/// resumes after the last sequence it saw, losing and repeating nothing.
/// (The client is the same for both backends; this runs on SQLite.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_resumes_after_a_dropped_connection_without_loss_or_repeat() {
    let port = eventflow_testkit::free_port();
    let listen_on = move |c: &mut eventflow_server::Config| {
        c.listen = format!("127.0.0.1:{port}").parse().unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    let key = "efk_listen-resume-key-0123456789abcdef";
    let with_key = move |c: &mut eventflow_server::Config| {
        listen_on(c);
        c.bootstrap_api_key = Some(eventflow_server::Secret::new(key));
    };
    let server = TestServer::spawn_in(
        dir,
        Options {
            clock: None,
            configure: Some(Box::new(with_key)),
        },
    )
    .await;
    let rx = Receiver::start().await;
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("s");
    let mut cmd = command(
        &server,
        &[
            "listen",
            "--forward-to",
            &rx.url("/"),
            "--secret-file",
            secret_file.to_str().unwrap(),
        ],
    );
    cmd.env("EVENTFLOW_API_KEY", key);
    let mut listen = start(cmd);
    line_with(&mut listen.stderr, "forwarding events after sequence 0").await;
    let api = |server: &TestServer| {
        let mut api = server.api();
        api.key = Some(key.to_string());
        api
    };
    for _ in 0..3 {
        api(&server).patient().await;
    }
    rx.wait_for(3, Duration::from_secs(20)).await;
    let dir = server.stop().await;
    line_with(&mut listen.stderr, "reconnecting").await;
    let server = TestServer::spawn_in(
        dir,
        Options {
            clock: None,
            configure: Some(Box::new(with_key)),
        },
    )
    .await;
    for _ in 0..2 {
        api(&server).patient().await;
    }
    rx.wait_for(5, Duration::from_secs(30)).await;
    // Nothing more arrives: count the lines listen printed for all five.
    wait_for(Duration::from_secs(10), "five lines", || {
        let n = rx.count();
        async move { (n == 5).then_some(()) }
    })
    .await;
    let ids: std::collections::HashSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5, "no event repeated or lost");
    let seqs: Vec<i64> = rx
        .received()
        .iter()
        .map(|r| r.json()["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    listen.child.kill().await.unwrap();
}

#[tokio::test]
async fn listen_with_an_unreachable_server_says_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "listen",
            "--forward-to",
            "http://127.0.0.1:9/x",
            "--api",
            "http://127.0.0.1:9",
            "--api-key",
            "efk_x",
        ])
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(
        first.contains("cannot reach the server at http://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let out = Command::new(BIN)
        .args(["listen", "--forward-to", "ftp://x", "--api-key", "efk_x"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--forward-to"));
}

async fn keys_create_list_and_revoke_work_through_the_api(backend: Backend) {
    let server = backend.spawn().await;
    let out = command(
        &server,
        &[
            "keys",
            "create",
            "--name",
            "billing",
            "--scope",
            "appointments:read",
            "--scope",
            "events:read",
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The secret alone on standard output; what it may do on standard error.
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("efk_"), "{secret}");
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(said.contains("appointments:read,events:read"), "{said}");
    let k = server.api().with_key(&secret);
    assert_eq!(k.get("/v1/appointments").await.status, 200);

    let out = command(&server, &["keys", "list"]).output().await.unwrap();
    assert!(out.status.success());
    let listed = String::from_utf8(out.stdout).unwrap();
    let line = listed
        .lines()
        .find(|l| l.contains("billing"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains(&secret[..12]), "{line}");
    assert!(!listed.contains(&secret[12..]), "a secret listed: {listed}");
    let id = line.split_whitespace().next().unwrap();

    let out = command(&server, &["keys", "revoke", id])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(k.get("/v1/appointments").await.status, 401);
    // A scope the server does not know: its message, and a failure.
    let out = command(
        &server,
        &[
            "keys",
            "create",
            "--name",
            "x",
            "--scope",
            "patients:delete",
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("patients:delete"));
}
