//! A webhook receiver for tests: a real HTTP/1.1 server on loopback (keep-
//! alive, `Content-Length` bodies) that records every request and answers as
//! told — any status, 429/503 with `Retry-After`, a hang past the timeout,
//! or a dropped connection.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How the receiver answers a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// This status, with a short body.
    Status(u16),
    /// This status and body.
    Body(u16, String),
    /// 429 or 503 with this `Retry-After` value.
    RetryAfter(u16, String),
    /// Never answers (the client's timeout fires).
    Hang,
    /// Closes the connection without a response.
    Drop,
    /// This status, once the gate is opened (a request under way, held).
    Held(Gate, u16),
}

/// Holds [`Answer::Held`] replies until [`Gate::open`].
#[derive(Debug, Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }
}

/// Two gates are equal when they are the same gate.
impl PartialEq for Gate {
    fn eq(&self, other: &Gate) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Gate {
    /// Lets every held reply, and every later one, go.
    pub fn open(&self) {
        self.0.close();
    }
}

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Debug)]
struct State {
    received: Mutex<Vec<Received>>,
    /// Verification challenges answered (kept apart from `received`).
    challenges: Mutex<Vec<Received>>,
    /// Whether challenges are answered as a receiver built on the SDK
    /// does; when not, they are received and answered like anything else.
    answers_challenges: std::sync::atomic::AtomicBool,
    script: Mutex<VecDeque<Answer>>,
    default: Mutex<Answer>,
    arrived: Notify,
}

/// The receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts a receiver answering 200 to everything, and verification
    /// challenges with the challenge (as the SDK's extractor does).
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State {
            received: Mutex::new(Vec::new()),
            challenges: Mutex::new(Vec::new()),
            answers_challenges: std::sync::atomic::AtomicBool::new(true),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Answer::Status(200)),
            arrived: Notify::new(),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        Receiver { port, state, task }
    }

    /// `http://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answers every later request so (after any scripted replies).
    pub fn answer(&self, reply: Answer) {
        *crate::locked(&self.state.default) = reply;
    }

    /// Answers the next requests with these, in order, then as [`answer`](Self::answer) says.
    pub fn script(&self, replies: impl IntoIterator<Item = Answer>) {
        crate::locked(&self.state.script).extend(replies);
    }

    /// Stops answering verification challenges: from now on they are
    /// received, and answered, like any other request.
    pub fn ignore_challenges(&self) {
        self.state
            .answers_challenges
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Answers verification challenges again (the default).
    pub fn answer_challenges(&self) {
        self.state
            .answers_challenges
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The verification challenges answered so far.
    pub fn challenges(&self) -> Vec<Received> {
        crate::locked(&self.state.challenges).clone()
    }

    /// Waits until at least `n` challenges were answered; panics after `timeout`.
    pub async fn wait_for_challenges(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.until(n, timeout, "challenges answered", Self::challenges)
            .await
    }

    /// Everything received so far (challenges it answered aside).
    pub fn received(&self) -> Vec<Received> {
        crate::locked(&self.state.received).clone()
    }

    pub fn count(&self) -> usize {
        crate::locked(&self.state.received).len()
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.until(n, timeout, "requests received", Self::received)
            .await
    }

    /// Waits until `list` holds at least `n`; panics after `timeout`.
    async fn until(
        &self,
        n: usize,
        timeout: Duration,
        what: &str,
        list: fn(&Self) -> Vec<Received>,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let got = list(self);
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("{} {what} within {timeout:?}, not {n}", got.len());
            }
        }
    }
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        // Read until the head is complete.
        let (method, path, headers, head_len, content_length) = loop {
            let mut header_buf = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut header_buf);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let cl = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    break (
                        req.method.unwrap_or("").to_string(),
                        req.path.unwrap_or("").to_string(),
                        headers,
                        len,
                        cl,
                    );
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return,
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_len + content_length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_len..head_len + content_length].to_vec();
        buf.drain(..head_len + content_length);
        if state
            .answers_challenges
            .load(std::sync::atomic::Ordering::SeqCst)
            && let Some(answer) = eventflow_webhook::challenge_answer(&body)
        {
            crate::locked(&state.challenges).push(Received {
                method,
                path,
                headers,
                body,
                at: Instant::now(),
            });
            state.arrived.notify_waiters();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                answer.len()
            );
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        let reply = {
            let next = crate::locked(&state.script).pop_front();
            next.unwrap_or_else(|| crate::locked(&state.default).clone())
        };
        crate::locked(&state.received).push(Received {
            method,
            path,
            headers,
            body,
            at: Instant::now(),
        });
        state.arrived.notify_waiters();
        let (status, extra, text) = match reply {
            Answer::Status(s) => (s, String::new(), format!("status {s}")),
            Answer::Body(s, b) => (s, String::new(), b),
            Answer::RetryAfter(s, after) => {
                (s, format!("retry-after: {after}\r\n"), "slow down".into())
            }
            Answer::Hang => {
                std::future::pending::<()>().await;
                return;
            }
            Answer::Drop => return,
            Answer::Held(gate, s) => {
                // Closed: open.
                let _ = gate.0.acquire().await;
                (s, String::new(), format!("status {s}"))
            }
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{extra}\r\n{text}",
            text.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
