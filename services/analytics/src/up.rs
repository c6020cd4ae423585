//! Single-node mode: every stage in one process.

use std::sync::Arc;

use analytics_config::Config;
use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::api::{Apis, serve_api};
use crate::bootstrap;
use crate::consumers::{ConsumerHealth, enricher_health, run_enricher, run_sink, sink_health};
use crate::wiring::{bind, migrate_clickhouse, open_meta};

pub async fn up(config: Arc<Config>, shutdown: CancellationToken) -> Result<()> {
    let listener = bind(&config).await?;
    let meta = open_meta(&config).await?;
    migrate_clickhouse(&config).await?;
    let credentials = bootstrap::ensure(&config, &meta).await?;
    bootstrap::print(&config, &credentials);
    let (enricher_health, sink_health) = (enricher_health(&config), sink_health(&config));
    let consumers = ConsumerHealth(vec![enricher_health.clone(), sink_health.clone()]);
    let edge = {
        let (config, meta, shutdown) = (config.clone(), meta.clone(), shutdown.clone());
        tokio::spawn(async move {
            serve_api(&config, meta, Apis::ALL, consumers, listener, shutdown).await
        })
    };
    // The consumers get threads of their own: a batch being enriched or
    // encoded is CPU work that does not yield, and on the edge's threads it
    // would hold requests back for its whole duration. The OS time-slices
    // threads; tasks on one runtime only take turns at await points.
    let consumers = tokio::runtime::Builder::new_multi_thread()
        .thread_name("consumers")
        .enable_all()
        .build()
        .context("cannot start the consumers' runtime")?;
    let enricher = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        consumers.spawn(async move { run_enricher(&config, enricher_health, shutdown).await })
    };
    let sink = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        consumers.spawn(async move { run_sink(&config, sink_health, shutdown).await })
    };
    // The first stage to stop, by error, panic or signal, stops the others:
    // no events are taken in while the stages that store them are gone.
    let mut stages = tokio::task::JoinSet::new();
    for (name, task) in [("edge", edge), ("enricher", enricher), ("sink", sink)] {
        stages.spawn(async move { (name, task.await) });
    }
    let mut failure = None;
    while let Some(done) = stages.join_next().await {
        let (name, result) = done.context("stage supervision failed")?;
        let result = match result {
            Ok(Ok(())) if !shutdown.is_cancelled() => Err(anyhow::anyhow!("stopped unasked")),
            Ok(result) => result,
            Err(e) => Err(anyhow::Error::new(e).context("panicked")),
        };
        if let Err(e) = result {
            tracing::error!(stage = name, error = %format!("{e:#}"), "stage failed; stopping the others");
            failure.get_or_insert(e.context(format!("{name} failed")));
        }
        shutdown.cancel();
    }
    // Every task has finished; the runtime only has idle threads left.
    consumers.shutdown_background();
    failure.map_or(Ok(()), Err)
}
