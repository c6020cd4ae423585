//! HTTP plumbing every stage shares: the HTTP/1.1 server loop, JSON
//! answers, the one mapping from errors to statuses, and client
//! authentication against the metadata database.
//!
//! Connections are served by hyper with a header-read timeout; on shutdown
//! the loop stops accepting, asks every open connection to finish its
//! in-flight request, and waits for them.

mod auth;
mod error;

pub use auth::{Authenticator, Caller};
pub use error::ApiError;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
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

/// Serves `handler` on `listener` until `shutdown`, then drains open connections.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    handler: F,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
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
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
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
            Err(reason) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "not ready", "error": reason}),
            ),
        }),
        "/metrics" => Some(text(StatusCode::OK, "text/plain; version=0.0.4", metrics())),
        _ => None,
    }
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
