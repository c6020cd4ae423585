//! What the stages are built from, made from the configuration: the
//! metadata database, the ClickHouse store, the Redis target, the listener,
//! the enrichment files, the consumer name and the shutdown signal.

use std::time::Duration;

use analytics_config::Config;
use analytics_meta::Meta;
use analytics_store::{Store, StoreSettings};
use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = trigger.cancelled() => return,
        }
        tracing::info!("shutting down: finishing in-flight work");
        trigger.cancel();
    });
    token
}

/// Opens the metadata database, creating its tables on first use.
pub async fn open_meta(config: &Config) -> Result<Meta> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let url = config.metadata_url();
    let meta = Meta::connect(&url)
        .await
        .with_context(|| format!("cannot open metadata database {url}"))?;
    meta.migrate().await.context("metadata migrations failed")?;
    Ok(meta)
}

pub fn store(config: &Config) -> Store {
    Store::new(&StoreSettings {
        url: config.clickhouse.url.clone(),
        database: config.clickhouse.database.clone(),
        user: config.clickhouse.user.clone(),
        password: config.clickhouse.password.clone(),
        cluster: config.clickhouse.cluster.clone(),
    })
}

/// Applies ClickHouse migrations, waiting up to a minute for the server to come up.
pub async fn migrate_clickhouse(config: &Config) -> Result<Vec<u32>> {
    let store = store(config);
    let mut attempts = 0;
    loop {
        match store.migrate().await {
            Ok(applied) => return Ok(applied),
            Err(e) if e.is_unavailable() && attempts < 60 => {
                attempts += 1;
                if attempts == 1 {
                    tracing::warn!(url = %config.clickhouse.url, "waiting for ClickHouse");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("ClickHouse migrations failed"),
        }
    }
}

pub fn redis_client(config: &Config) -> Result<analytics_streams::RedisTarget> {
    analytics_streams::RedisTarget::new(config.redis_urls(), config.redis.cluster)
        .context("invalid redis.url")
}

pub async fn bind(config: &Config) -> Result<TcpListener> {
    TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))
}

pub fn consumer_name(config: &Config) -> String {
    config.consumer_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "analytics".into())
    })
}

/// Opens the user-agent rules and GeoIP files; what is missing or broken
/// is disabled with one warning and the pipeline runs on without it.
pub fn load_enrichment(config: &Config) -> analytics_enrich::Enrichment {
    let rules = config.ua_regexes_file();
    let ua = match analytics_enrich::UaParser::load(&rules) {
        Ok(parser) => Some(parser),
        Err(e) => {
            tracing::warn!(error = %e, "user-agent parsing disabled (set ANALYTICS_UA_REGEXES)");
            None
        }
    };
    let files = config.geoip_files();
    let geo = if files.is_empty() {
        tracing::warn!(
            dir = %config.data_dir.join("geoip").display(),
            "no GeoIP database found; geo enrichment disabled (set ANALYTICS_GEOIP_DB)"
        );
        None
    } else {
        match analytics_enrich::GeoIp::open(&files) {
            Ok(geo) => Some(geo),
            Err(e) => {
                tracing::warn!(error = %e, "geo enrichment disabled");
                None
            }
        }
    };
    analytics_enrich::Enrichment {
        ua,
        geo,
        visits: Default::default(),
    }
}
