//! The HTTP/1 connections: accepted here rather than by `axum::serve`, so
//! that every bound a client without a key can reach is enforced
//! (README, "Limits"):
//!
//! - at most `max_connections` open at once; one more is closed at once,
//!   before a byte is read, so a flood cannot exhaust file descriptors;
//! - a request head must arrive within `header_read_timeout_secs` (this also
//!   bounds how long an idle keep-alive connection waits for its next
//!   request), or the connection closes;
//! - a request body must arrive within `body_read_timeout_secs` of its head,
//!   or the request is a 408 and the connection closes;
//! - a connection on which no byte moves either way for `idle_timeout_secs`
//!   closes (a client that stops reading a response, a stalled body).
//!
//! Graceful shutdown: the listener closes, each connection finishes the
//! request it is serving, and `serve` returns once all are closed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::config::Limits;
use crate::error::ApiError;

/// The connection bounds, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_connections: usize,
    pub header_read: Duration,
    pub body_read: Duration,
    pub idle: Duration,
}

impl From<&Limits> for Bounds {
    fn from(l: &Limits) -> Self {
        Bounds {
            max_connections: l.max_connections,
            header_read: Duration::from_secs(l.header_read_timeout_secs),
            body_read: Duration::from_secs(l.body_read_timeout_secs),
            idle: Duration::from_secs(l.idle_timeout_secs),
        }
    }
}

/// Accepts and serves connections until `stop` turns true, then waits for
/// the open ones to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    bounds: Bounds,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // Limits::validate keeps it at least 1; a semaphore holds at most
    // `Semaphore::MAX_PERMITS`.
    let cap = bounds.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let open = Arc::new(Semaphore::new(cap));
    let started = Instant::now();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors (or a connection reset before it was
                // taken): wait a little rather than spin, then go on.
                tracing::debug!(error = %e, "accept failed");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            // Over the cap: closed at once, nothing read.
            metrics::counter!("eventflow_connections_refused_total").increment(1);
            drop(tcp);
            continue;
        };
        // Small writes (an SSE event, a long-poll answer) go out at once:
        // with Nagle's algorithm they would wait for the client's delayed
        // ACK, up to 40 ms.
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            connection(tcp, remote, router, bounds, stop, started).await;
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a permit until it is closed.
    let _ = open.acquire_many(cap as u32).await;
    Ok(())
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    router: Router,
    bounds: Bounds,
    mut stop: watch::Receiver<bool>,
    started: Instant,
) {
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: activity.clone(),
        started,
    });
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
        async move { Ok::<_, Infallible>(handle(router, req, remote, bounds.body_read).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let last = activity.load(Ordering::Relaxed);
        let idle_for = started
            .elapsed()
            .saturating_sub(Duration::from_millis(last));
        let idle_left = bounds.idle.saturating_sub(idle_for);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(idle_left) => {
                let now = started.elapsed().as_millis() as u64;
                if now.saturating_sub(activity.load(Ordering::Relaxed))
                    >= bounds.idle.as_millis() as u64
                {
                    // Nothing moved for the whole idle timeout: drop it.
                    return;
                }
            }
        }
    }
}

/// One request through the router, its body under the read deadline, with
/// the client's address as [`ConnectInfo`].
async fn handle(
    router: Router,
    req: Request<Incoming>,
    remote: SocketAddr,
    body_read: Duration,
) -> Response<Body> {
    let timed_out = Arc::new(AtomicBool::new(false));
    let mut req = req.map(|incoming| {
        Body::new(Deadline {
            inner: incoming,
            sleep: Box::pin(tokio::time::sleep(body_read)),
            timed_out: timed_out.clone(),
        })
    });
    req.extensions_mut().insert(ConnectInfo(remote));
    let response = match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if timed_out.load(Ordering::Relaxed) {
        let mut r = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            crate::error::ErrorKind::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                body_read.as_secs()
            ),
        )
        .into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    response
}

/// The body of a request, failing once its deadline has passed.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

/// A request body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A TCP stream that notes when a byte last moved (ms since `started`).
struct Watched {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
    started: Instant,
}

impl Watched {
    fn touch(&self) {
        self.activity
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises the soft limit on open files to the hard limit, so that the
/// connection cap, not the descriptor limit, is what a flood meets first.
/// Returns the limit in force afterwards (when it could be read).
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        // `None` is "unlimited".
        let below = match (limit.current, limit.maximum) {
            (Some(soft), Some(hard)) => soft < hard,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if below {
            limit.current = limit.maximum;
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::warn!(error = %e, "could not raise the open files limit");
            }
        }
        getrlimit(Resource::Nofile).current
    }
    #[cfg(not(unix))]
    None
}
