//! HTTP plumbing every stage shares: the HTTP/1.1 server loop, JSON
//! answers, and the one mapping from errors to statuses. With the `auth`
//! feature, also the credentials of a request (its `openpanel-client-*`
//! headers) for `analytics_meta::Authenticator` and the statuses of its
//! refusals; without it, the crate links no database driver.
//!
//! Connections are served by hyper with a header-read timeout, at most
//! `max_connections` at once: past it a new connection is answered `503`
//! with `Retry-After` and closed at once, while open ones keep being
//! served. On shutdown the loop stops accepting, asks every open
//! connection to finish its in-flight request, and waits for them.

#[cfg(feature = "auth")]
mod credentials;
mod error;

#[cfg(feature = "auth")]
pub use credentials::credentials;
pub use error::ApiError;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Error of a streamed response body (a failed upstream read); the
/// connection is cut, since the status line is already sent.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body: a whole buffer or a stream.
pub type Body = BoxBody<Bytes, BodyError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// How [`serve`] treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Time allowed to receive a request's headers.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl ServeOptions {
    /// Far more than keep-alive producers and proxies need, well within
    /// the file descriptors of a default container.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
}

/// A header timeout with the default connection cap.
impl From<Duration> for ServeOptions {
    fn from(header_timeout: Duration) -> Self {
        ServeOptions {
            header_timeout,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The answer to a connection past the cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\n\
    content-length: 47\r\n\r\n{\"error\":\"too many connections; retry shortly\"}";

/// Answers a connection past the cap with a 503 and closes it, without
/// waiting: what the client already sent is read off first (up to a
/// bound), so closing sends a FIN rather than a reset that could discard
/// the answer.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(REFUSAL);
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// Serves `handler` on `listener` until `shutdown`, then drains open connections.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    handler: F,
    options: impl Into<ServeOptions>,
    shutdown: CancellationToken,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let ServeOptions {
        header_timeout,
        max_connections,
    } = options.into();
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut refused = 0u64;
    let mut reported_at: Option<Instant> = None;
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    }
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(stream);
            refused += 1;
            if reported_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(
                    max_connections,
                    refused,
                    "connection cap reached; refusing new connections"
                );
                reported_at = Some(Instant::now());
                refused = 0;
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req, peer).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Some(header_timeout))
                .max_buf_size(32 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// A JSON response.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    json_bytes(status, body.to_string().into_bytes())
}

/// A response whose body is already serialized JSON.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A plain-text response.
pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The `/healthz`, `/readyz` and `/metrics` answers, or `None` for other paths.
/// `ready` is awaited only for `/readyz`.
pub async fn health_route<R>(
    path: &str,
    ready: R,
    metrics: impl FnOnce() -> String,
) -> Option<Response<Body>>
where
    R: Future<Output = Result<(), String>>,
{
    match path {
        "/healthz" => Some(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        "/readyz" => Some(match ready.await {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
            Err(reason) => not_ready(&reason),
        }),
        "/metrics" => Some(text(StatusCode::OK, "text/plain; version=0.0.4", metrics())),
        _ => None,
    }
}

/// The `/readyz` answer of a server that is not ready, and why.
pub fn not_ready(reason: &str) -> Response<Body> {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({"status": "not ready", "error": reason}),
    )
}

/// Removes the mount point `prefix` (`/api/v1/analytics`) from the request's
/// path so routes match as if served at the root. Health and metrics paths
/// also answer unprefixed, for probes that talk to the server directly.
/// Returns `false` when the path lies outside the prefix.
pub fn strip_path_prefix<B>(req: &mut Request<B>, prefix: &str) -> bool {
    if prefix.is_empty() || matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return true;
    }
    let Some(rest) = req.uri().path().strip_prefix(prefix) else {
        return false;
    };
    let rest = match rest {
        "" => "/",
        r if r.starts_with('/') => r,
        _ => return false,
    };
    let path_and_query = match req.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    };
    match path_and_query.parse() {
        Ok(uri) => {
            *req.uri_mut() = uri;
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod prefix_tests {
    use super::*;

    fn stripped(prefix: &str, uri: &str) -> Option<String> {
        let mut req = Request::get(uri).body(()).unwrap();
        strip_path_prefix(&mut req, prefix).then(|| req.uri().to_string())
    }

    #[test]
    fn the_prefix_is_removed_and_the_query_kept() {
        let p = "/api/v1/analytics";
        assert_eq!(
            stripped(p, "/api/v1/analytics/track").as_deref(),
            Some("/track")
        );
        assert_eq!(
            stripped(p, "/api/v1/analytics/insights/x/metrics?startDate=1").as_deref(),
            Some("/insights/x/metrics?startDate=1")
        );
        assert_eq!(stripped(p, "/api/v1/analytics").as_deref(), Some("/"));
        assert_eq!(stripped(p, "/healthz").as_deref(), Some("/healthz"));
        assert_eq!(stripped(p, "/track"), None);
        assert_eq!(stripped(p, "/api/v1/analyticsx/track"), None);
        assert_eq!(stripped("", "/track").as_deref(), Some("/track"));
    }
}

#[cfg(test)]
mod serve_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(options: impl Into<ServeOptions>) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handler = |_req: Request<Incoming>, _peer: SocketAddr| async {
            text(StatusCode::OK, "text/plain", "ok".into())
        };
        let options: ServeOptions = options.into();
        tokio::spawn(serve(listener, handler, options, shutdown.clone()));
        (addr, shutdown)
    }

    /// Sends a keep-alive request; the status of its answer, or `None` when
    /// the connection ended before an answer.
    async fn get(stream: &mut TcpStream) -> Option<u16> {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n")
                && head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| body.len() >= n)
            {
                break;
            }
        }
        let text = String::from_utf8_lossy(&answer);
        text.split_whitespace().nth(1)?.parse().ok()
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_refused_while_open_ones_keep_working() {
        // A cap of 2, so that three sockets pass it.
        let (addr, shutdown) = server(ServeOptions {
            header_timeout: Duration::from_secs(10),
            max_connections: 2,
        })
        .await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert_eq!(get(&mut first).await, Some(200));
        assert_eq!(get(&mut second).await, Some(200));

        let mut third = TcpStream::connect(addr).await.unwrap();
        assert_eq!(get(&mut third).await, Some(503));
        let mut rest = Vec::new();
        let _ = third.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "the refused connection is closed");

        assert_eq!(get(&mut first).await, Some(200));
        assert_eq!(get(&mut second).await, Some(200));
        // A closed connection frees its place.
        drop(first);
        let mut again = None;
        for _ in 0..50 {
            let mut next = TcpStream::connect(addr).await.unwrap();
            again = get(&mut next).await;
            if again == Some(200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(again, Some(200));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_default_cap_serves_many_connections_at_once() {
        let (addr, shutdown) = server(Duration::from_secs(10)).await;
        let mut open = Vec::new();
        for _ in 0..300 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            assert_eq!(get(&mut stream).await, Some(200));
            open.push(stream);
        }
        for stream in &mut open {
            assert_eq!(get(stream).await, Some(200));
        }
        shutdown.cancel();
    }
}
