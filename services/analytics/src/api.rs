//! The HTTP server of the edge and/or the insights API, with health and
//! metrics: one [`App`] that answers requests without sockets, and the
//! server that feeds it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use analytics_config::Config;
use analytics_edge::{Edge, EdgeDeps};
use analytics_http::{ApiError, Body, ServeOptions};
use analytics_insights::{Insights, InsightsDeps};
use analytics_meta::Meta;
use anyhow::{Context, Result};
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::consumers::ConsumerHealth;
use crate::wiring::{bind, open_meta, redis_client, store};

/// Which APIs one HTTP server offers.
#[derive(Debug, Clone, Copy)]
pub struct Apis {
    pub edge: bool,
    pub insights: bool,
}

impl Apis {
    pub const EDGE: Apis = Apis {
        edge: true,
        insights: false,
    };
    pub const INSIGHTS: Apis = Apis {
        edge: false,
        insights: true,
    };
    pub const ALL: Apis = Apis {
        edge: true,
        insights: true,
    };
}

/// What the API server answers with: the edge (which also serves
/// `/healthz`, `/readyz` and `/metrics`), the insights API when offered,
/// and the health of the consumer stages of this process.
pub struct AppDeps {
    pub edge: Arc<Edge>,
    pub insights: Option<Arc<Insights>>,
    pub consumers: ConsumerHealth,
}

/// The API server's requests, answered without sockets: the path prefix
/// is stripped, `/insights/…` (and the dashboard, `/dashboard` and
/// `/share/…`) goes to the insights API, the rest to the
/// edge (or only its health routes, when the edge's API is not offered).
pub struct App {
    deps: AppDeps,
    prefix: String,
    edge_routes: bool,
}

impl App {
    pub fn new(config: &Config, apis: Apis, deps: AppDeps) -> App {
        App {
            deps,
            prefix: config.path_prefix.clone(),
            edge_routes: apis.edge,
        }
    }

    pub async fn handle<B>(&self, mut req: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !analytics_http::strip_path_prefix(&mut req, &self.prefix) {
            return ApiError::NotFound.into_response();
        }
        match req.uri().path() {
            "/readyz" => {
                if let Err(reason) = self.deps.consumers.check() {
                    return analytics_http::not_ready(&reason);
                }
            }
            "/metrics" => self.deps.consumers.export(),
            _ => {}
        }
        if let Some(insights) = &self.deps.insights
            && Insights::serves(req.uri().path())
        {
            return insights
                .route(req, peer)
                .await
                .unwrap_or_else(|| ApiError::NotFound.into_response());
        }
        let health = matches!(req.uri().path(), "/healthz" | "/readyz" | "/metrics");
        if (self.edge_routes || health)
            && let Some(response) = self.deps.edge.route(req, peer).await
        {
            return response;
        }
        ApiError::NotFound.into_response()
    }
}

/// `analytics edge` / `analytics insights`: one API server on its own.
pub async fn serve_alone(
    config: &Arc<Config>,
    apis: Apis,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = bind(config).await?;
    let meta = open_meta(config).await?;
    serve_api(
        config,
        meta,
        apis,
        ConsumerHealth::default(),
        listener,
        shutdown,
    )
    .await
}

/// Serves the edge and/or the insights API (with health and metrics) on
/// `listener` until `shutdown`.
pub async fn serve_api(
    config: &Arc<Config>,
    meta: Meta,
    apis: Apis,
    consumers: ConsumerHealth,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let redis = analytics_streams::connect(&redis_client(config)?, Duration::from_secs(5))
        .await
        .context("cannot connect to Redis")?;
    let metrics = analytics_telemetry::metrics_handle();
    let edge_deps = EdgeDeps {
        redis,
        meta: meta.clone(),
        metrics: Arc::new(move || metrics.render()),
    };
    let (edge, writer) = Edge::new(config.clone(), edge_deps, shutdown.clone());
    let insights = apis.insights.then(|| {
        let store = store(config);
        Insights::new(config, InsightsDeps { store, meta })
    });
    let deps = AppDeps {
        edge,
        insights,
        consumers,
    };
    let app = Arc::new(App::new(config, apis, deps));
    let handler = move |req, peer| {
        let app = app.clone();
        async move { app.handle(req, peer).await }
    };
    tracing::info!(listen = %config.listen, edge = apis.edge, insights = apis.insights, "API listening");
    let options = ServeOptions {
        header_timeout: Duration::from_millis(config.edge.request_timeout_ms),
        max_connections: config.edge.max_connections,
    };
    let serve = analytics_http::serve(listener, handler, options, shutdown.clone());
    tokio::pin!(serve, writer);
    // The writer group-commits every accepted event: without it nothing
    // can be stored, so its end before shutdown ends the server too.
    tokio::select! {
        () = &mut serve => {
            writer.await.context("the edge's stream writer panicked")?;
            Ok(())
        }
        ended = &mut writer => {
            let unasked = !shutdown.is_cancelled();
            shutdown.cancel();
            serve.await;
            ended.context("the edge's stream writer panicked")?;
            if unasked {
                anyhow::bail!("the edge's stream writer stopped");
            }
            Ok(())
        }
    }
}
