//! The consumer stages as the binary runs them: with their health (for
//! `/readyz` and `/metrics`), and on their own beside a small health and
//! metrics server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use analytics_config::Config;
use analytics_streams::StageHealth;
use anyhow::{Context, Result};
use hyper::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::wiring::{bind, consumer_name, load_enrichment, open_meta, redis_client, store};

pub fn enricher_health(config: &Config) -> StageHealth {
    StageHealth::new(
        "enricher",
        config.redis.partitions,
        Duration::from_millis(config.enricher.stall_after_ms),
    )
}

pub fn sink_health(config: &Config) -> StageHealth {
    StageHealth::new(
        "sink",
        config.redis.partitions,
        Duration::from_millis(config.sink.stall_after_ms),
    )
}

/// The consumer stages running in this process: `/readyz` answers 503
/// while one of their partition tasks is gone or stalled, and `/metrics`
/// carries their progress gauges.
#[derive(Clone, Default)]
pub struct ConsumerHealth(pub Vec<StageHealth>);

impl ConsumerHealth {
    pub fn check(&self) -> Result<(), String> {
        let problems: Vec<String> = self.0.iter().filter_map(|h| h.check().err()).collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    pub fn export(&self) {
        self.0.iter().for_each(StageHealth::export);
    }
}

/// `analytics enrich`: an enricher beside its health and metrics server.
pub async fn enricher_alone(config: &Arc<Config>, shutdown: CancellationToken) -> Result<()> {
    let health = enricher_health(config);
    with_admin(config, health.clone(), shutdown, |shutdown| {
        run_enricher(config, health, shutdown)
    })
    .await
}

/// `analytics sink`: a sink beside its health and metrics server.
pub async fn sink_alone(config: &Arc<Config>, shutdown: CancellationToken) -> Result<()> {
    let health = sink_health(config);
    with_admin(config, health.clone(), shutdown, |shutdown| {
        run_sink(config, health, shutdown)
    })
    .await
}

pub async fn run_enricher(
    config: &Arc<Config>,
    health: StageHealth,
    shutdown: CancellationToken,
) -> Result<()> {
    let meta = open_meta(config).await?;
    let deps = analytics_enricher::EnricherDeps {
        redis: redis_client(config)?,
        meta,
        enrichment: load_enrichment(config),
        consumer: consumer_name(config),
        member: format!(
            "{}/{}",
            consumer_name(config),
            uuid::Uuid::new_v4().simple()
        ),
        health,
    };
    analytics_enricher::run(config.clone(), deps, shutdown)
        .await
        .context("enricher failed")
}

pub async fn run_sink(
    config: &Arc<Config>,
    health: StageHealth,
    shutdown: CancellationToken,
) -> Result<()> {
    let deps = analytics_sink::SinkDeps {
        redis: redis_client(config)?,
        store: store(config),
        consumer: consumer_name(config),
        health,
    };
    analytics_sink::run(config.clone(), deps, shutdown)
        .await
        .context("sink failed")
}

/// Runs a consumer stage beside its health and metrics server. The
/// address is bound first: one that is taken ends the process at start.
/// Whichever of the two ends first ends the other.
async fn with_admin<F, Fut>(
    config: &Arc<Config>,
    health: StageHealth,
    shutdown: CancellationToken,
    stage: F,
) -> Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let listener = bind(config).await?;
    let admin = serve_admin(config.clone(), listener, health, shutdown.clone());
    let stage = stage(shutdown.clone());
    tokio::pin!(admin, stage);
    tokio::select! {
        result = &mut stage => {
            shutdown.cancel();
            admin.await?;
            result
        }
        served = &mut admin => {
            shutdown.cancel();
            let result = stage.await;
            served.context("health and metrics server failed")?;
            result
        }
    }
}

/// Health and metrics for a stage that serves no API of its own.
async fn serve_admin(
    config: Arc<Config>,
    listener: TcpListener,
    health: StageHealth,
    shutdown: CancellationToken,
) -> Result<()> {
    let redis = analytics_streams::connect(&redis_client(&config)?, Duration::from_secs(2))
        .await
        .context("cannot connect to Redis")?;
    let metrics = analytics_telemetry::metrics_handle();
    let handler = move |req: Request<Incoming>, _peer: SocketAddr| {
        let (mut redis, metrics, health) = (redis.clone(), metrics.clone(), health.clone());
        async move {
            let ready = async {
                health.check()?;
                analytics_streams::ping(&mut redis)
                    .await
                    .map_err(|e| format!("redis: {e}"))
            };
            let render = || {
                health.export();
                metrics.render()
            };
            analytics_http::health_route(req.uri().path(), ready, render)
                .await
                .unwrap_or_else(|| analytics_http::ApiError::NotFound.into_response())
        }
    };
    analytics_http::serve(listener, handler, Duration::from_secs(10), shutdown).await;
    Ok(())
}
