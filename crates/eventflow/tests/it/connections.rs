//! The connections themselves, before any key is checked (README,
//! "Limits"): a request head or body that does not arrive in time, an idle
//! connection, and more connections than `max_connections`. These bounds
//! do not touch storage, so each test runs once.

use std::time::Duration;

use eventflow_testkit::{Options, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds a wait for the server to act (never a measure of speed).
const LONG: Duration = Duration::from_secs(20);

async fn spawn(
    configure: impl FnOnce(&mut eventflow_server::Config) + Send + 'static,
) -> TestServer {
    TestServer::spawn_with(Options {
        clock: None,
        configure: Some(Box::new(configure)),
    })
    .await
}

async fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Reads until the server closes the connection (a reset counts as
/// closed); panics if it is still open after [`LONG`].
async fn read_until_closed(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(LONG, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept the connection open; it sent {:?}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_head_is_disconnected_while_others_are_served() {
    let server = spawn(|c| c.limits.header_read_timeout_secs = 1).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut tcp = connect(&server).await;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: clinic\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(tcp);
    }
    assert_healthz_on_a_new_connection(&server).await;
    for tcp in &mut slow {
        let got = read_until_closed(tcp).await;
        assert!(!got.contains("200 OK"), "{got}");
    }
    assert_healthz_on_a_new_connection(&server).await;
}

/// One request on a connection of its own: a pooled keep-alive connection
/// would itself be closed after the short header timeout these tests set,
/// racing the request sent on it.
async fn assert_healthz_on_a_new_connection(server: &TestServer) {
    let mut tcp = connect(server).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: clinic\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut tcp).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_408_and_nothing_is_written() {
    let server = spawn(|c| c.limits.body_read_timeout_secs = 1).await;
    let api = server.api();
    let mut tcp = connect(&server).await;
    let head = format!(
        "POST /v1/patients HTTP/1.1\r\nHost: clinic\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"firstName\": ",
        server.key
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let got = read_until_closed(&mut tcp).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("\"request_timeout\""), "{got}");
    let r = api.get("/v1/patients").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 0, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = spawn(|c| {
        c.limits.idle_timeout_secs = 1;
        c.limits.header_read_timeout_secs = 60;
    })
    .await;
    let mut tcp = connect(&server).await;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: clinic\r\n\r\n")
        .await
        .unwrap();
    // Answered, kept alive, then closed once nothing moves.
    let got = read_until_closed(&mut tcp).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(!got.contains("connection: close"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once_while_open_ones_work() {
    let server = spawn(|c| {
        c.limits.max_connections = 3;
        c.limits.header_read_timeout_secs = 60;
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(&server).await);
    }
    // The fourth is accepted by the kernel, then closed without a byte.
    let mut extra = connect(&server).await;
    let got = read_until_closed(&mut extra).await;
    assert_eq!(got, "");
    // The three open ones are served, one request after another.
    for tcp in &mut open {
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: clinic\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = read_until_closed(tcp).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    }
    // Closed connections free their places.
    let r = server.api().get("/healthz").await;
    assert_eq!(r.status, 200, "{}", r.body);
}
