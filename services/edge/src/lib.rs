//! The edge: the OpenPanel-compatible ingestion API.
//!
//! Wire format in: `POST /track` with `{"type", "payload"}`, the per-type
//! routes `/identify`, `/increment`, `/decrement` (bare payload), and
//! `POST /batch` (array of `{type, payload}`), JSON bodies authenticated by
//! the `openpanel-client-*` headers. Wire format out:
//! [`RawEvent`](analytics_event::RawEvent)s in their binary form on the raw
//! stream partition `hash(project, device) % N`, bundled up to 50 to an
//! entry, each after its length.
//!
//! Guarantee: `202` only after Redis acknowledged every event of the
//! request; otherwise an error status and nothing is claimed stored. A
//! client retry of the same event id is harmless (dropped downstream).
//!
//! Also `GET /tracker.js`, the first-party browser tracker (`tracker`).

mod ingest;
mod limits;
mod salt;
mod tracker;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use analytics_config::Config;
use analytics_http::{ApiError, Body, health_route};
use analytics_meta::{Authenticator, Meta};
use analytics_streams::Conn;
use hyper::{Method, Request, Response};
use tokio_util::sync::CancellationToken;

/// What the edge needs from outside.
pub struct EdgeDeps {
    pub redis: Conn,
    pub meta: Meta,
    /// Renders `/metrics`.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
}

/// The edge as a request handler, testable without sockets.
pub struct Edge {
    config: Arc<Config>,
    auth: Authenticator,
    writer: writer::Writer,
    limits: Arc<limits::IngestLimits>,
    salts: salt::SaltCache,
    /// `config.client_ip_header`, parsed once.
    client_ip_header: Option<hyper::header::HeaderName>,
    counters: ingest::AcceptedCounters,
    redis: Conn,
    metrics: Arc<dyn Fn() -> String + Send + Sync>,
}

impl Edge {
    /// Builds the handler and starts its writer; the returned task ends
    /// once every handle on the edge is dropped and pending writes are answered.
    pub fn new(
        config: Arc<Config>,
        deps: EdgeDeps,
        shutdown: CancellationToken,
    ) -> (Arc<Edge>, tokio::task::JoinHandle<()>) {
        let (writer, writer_task) = writer::Writer::start(
            deps.redis.clone(),
            config.redis.key_prefix.clone(),
            config.redis.partitions,
            config.redis.max_stream_len,
            config.edge.max_pending_writes,
            shutdown.clone(),
        );
        let limits = Arc::new(limits::IngestLimits::new(analytics_meta::RateLimits {
            per_client: config.edge.rate_limit_per_client,
            per_ip: config.edge.rate_limit_per_ip,
        }));
        tokio::spawn(shrink_limits(limits.clone(), shutdown.clone()));
        let edge = Edge {
            limits,
            auth: Authenticator::new(
                deps.meta.clone(),
                Duration::from_millis(config.edge.auth_cache_ttl_ms),
            ),
            salts: salt::SaltCache::new(deps.meta),
            // The configuration's check made sure the name is valid.
            client_ip_header: config
                .client_ip_header
                .as_deref()
                .and_then(|name| hyper::header::HeaderName::from_bytes(name.as_bytes()).ok()),
            counters: ingest::AcceptedCounters::register(),
            writer,
            redis: deps.redis,
            metrics: deps.metrics,
            config,
        };
        (Arc::new(edge), writer_task)
    }

    /// Answers one request. `None` when the path is not the edge's, so a
    /// combined server can offer it to another handler.
    pub async fn route<B>(&self, req: Request<B>, peer: SocketAddr) -> Option<Response<Body>>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        if let Some(response) = health_route(path, self.ready(), || (self.metrics)()).await {
            return Some(response);
        }
        if path == "/tracker.js" {
            return Some(tracker::answer(req.method(), req.headers()));
        }
        let route = ingest::route_of(path)?;
        Some(match *req.method() {
            Method::OPTIONS => ingest::preflight(req.headers()),
            Method::POST => self.ingest(route, req, peer).await,
            _ => ingest::with_cors(
                req.headers().get("origin"),
                ApiError::MethodNotAllowed.into_response(),
            ),
        })
    }

    async fn ready(&self) -> Result<(), String> {
        let mut conn = self.redis.clone();
        match tokio::time::timeout(Duration::from_secs(1), analytics_streams::ping(&mut conn)).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err("redis: no answer within 1 s".into()),
        }
    }
}

/// Keeps the rate limiters' memory to recently active keys.
async fn shrink_limits(limits: Arc<limits::IngestLimits>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => limits.shrink(),
        }
    }
}
