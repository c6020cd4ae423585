//! `analytics`: the one binary. Parses configuration, wires the stages
//! together and runs one stage, all of them (`up`), or an admin command.
//! Stage logic lives in `services/*`, building blocks in `libs/*`.

mod bootstrap;

/// Allocation dominates the request path's profile under glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use analytics_config::Config;
use analytics_meta::{ClientKind, Meta};
use analytics_store::{Store, StoreSettings};
use analytics_streams::StageHealth;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hyper::Request;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "analytics",
    version,
    about = "High-volume product analytics pipeline"
)]
struct Cli {
    /// TOML configuration file; ANALYTICS_* variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Single-node mode: migrate, then run every stage in this process.
    Up,
    /// Run the ingestion edge.
    Edge,
    /// Run the insights API.
    Insights,
    /// Run an enricher (consumer group member).
    Enrich,
    /// Run a ClickHouse sink (consumer group member).
    Sink,
    /// Apply ClickHouse and metadata migrations.
    Migrate,
    /// Rebuild the aggregate tables from `events` (run with no sink writing).
    Backfill,
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage API clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Inspect, replay or drop dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Check the configuration (file + ANALYTICS_* variables) and print it
    /// as TOML, passwords redacted.
    Config,
    /// Exit 0 when this process's own server answers 200 on PATH: a
    /// container health check that needs no curl in the image.
    Probe {
        #[arg(default_value = "/readyz")]
        path: String,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Print dead letters as JSON lines (oldest first, per partition).
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put dead letters back on the stream they failed in.
    Replay(DlqTarget),
    /// Delete dead letters for good.
    Drop(DlqTarget),
}

#[derive(clap::Args)]
struct DlqTarget {
    /// Partition of the entry (from `dlq list`).
    #[arg(long, requires = "id")]
    partition: Option<u16>,
    /// Id of the entry in the dead-letter stream.
    #[arg(long, requires = "partition")]
    id: Option<String>,
    /// Every dead letter of every partition.
    #[arg(long, conflicts_with_all = ["partition", "id"])]
    all: bool,
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Create a project and print it as JSON.
    Create {
        #[arg(long)]
        name: String,
        /// Browser origin allowed to send events with only a client id (repeatable).
        #[arg(long = "origin")]
        origins: Vec<String>,
    },
    /// Ingest rate limits in requests per second (0: the edge's default).
    Limits {
        #[arg(long)]
        project: String,
        #[arg(long, default_value_t = 0)]
        per_client: u32,
        #[arg(long, default_value_t = 0)]
        per_ip: u32,
    },
    /// Keep crawler traffic (tagged `device = 'bot'`, the default) or drop it.
    Bots {
        #[arg(long)]
        project: String,
        #[arg(long, value_parser = ["keep", "drop"])]
        policy: String,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Create a client and print its id and secret as JSON.
    Create {
        #[arg(long)]
        project: String,
        #[arg(long = "type", value_parser = ["write", "read", "root"])]
        kind: String,
    },
    /// Delete a client; edges refuse it within `edge.auth_cache_ttl_ms`.
    Revoke {
        #[arg(long)]
        id: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let env = std::env::vars().filter(|(k, _)| k.starts_with("ANALYTICS_") && k != "ANALYTICS_LOG");
    let config =
        Arc::new(Config::load(cli.config.as_deref(), env).context("invalid configuration")?);
    analytics_telemetry::init_logging(
        &std::env::var("ANALYTICS_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli.command, config))
}

async fn run(command: Command, config: Arc<Config>) -> Result<()> {
    match command {
        Command::Migrate => {
            open_meta(&config).await?;
            let applied = migrate_clickhouse(&config).await?;
            println!("{}", serde_json::json!({"applied": applied}));
            Ok(())
        }
        Command::Backfill => {
            migrate_clickhouse(&config).await?;
            let rebuilt = store(&config).backfill().await?;
            println!("{}", serde_json::json!({"rebuilt": rebuilt}));
            Ok(())
        }
        Command::Project(ProjectCommand::Create { name, origins }) => {
            let meta = open_meta(&config).await?;
            let project = meta.create_project(&name, &origins).await?;
            let out = serde_json::json!({"id": project.id, "name": project.name, "origins": project.allowed_origins});
            println!("{out}");
            Ok(())
        }
        Command::Project(ProjectCommand::Limits {
            project,
            per_client,
            per_ip,
        }) => {
            let meta = open_meta(&config).await?;
            let limits = analytics_meta::RateLimits { per_client, per_ip };
            meta.set_rate_limits(&project, limits).await?;
            println!(
                "{}",
                serde_json::json!({"project": project, "rate_limits": limits})
            );
            Ok(())
        }
        Command::Project(ProjectCommand::Bots { project, policy }) => {
            let meta = open_meta(&config).await?;
            meta.set_drop_bots(&project, policy == "drop").await?;
            println!(
                "{}",
                serde_json::json!({"project": project, "bots": policy})
            );
            Ok(())
        }
        Command::Client(ClientCommand::Create { project, kind }) => {
            let meta = open_meta(&config).await?;
            let kind: ClientKind = kind.parse()?;
            let client = meta.create_client(&project, kind).await?;
            println!("{}", serde_json::to_string(&client)?);
            Ok(())
        }
        Command::Client(ClientCommand::Revoke { id }) => {
            let meta = open_meta(&config).await?;
            let revoked = meta.revoke_client(&id).await?;
            println!("{}", serde_json::json!({"id": id, "revoked": revoked}));
            if revoked {
                Ok(())
            } else {
                anyhow::bail!("no client {id}")
            }
        }
        Command::Dlq(command) => dlq(&config, command).await,
        Command::Config => {
            print!("{}", config.redacted_toml());
            Ok(())
        }
        Command::Probe { path } => probe(&config, &path).await,
        Command::Up => up(config).await,
        Command::Edge | Command::Insights => {
            let shutdown = shutdown_on_signal();
            let listener = bind(&config).await?;
            let meta = open_meta(&config).await?;
            let apis = if matches!(command, Command::Edge) {
                Apis::EDGE
            } else {
                Apis::INSIGHTS
            };
            let consumers = ConsumerHealth(Vec::new());
            serve_api(&config, meta, apis, consumers, listener, shutdown).await
        }
        Command::Enrich => {
            let health = enricher_health(&config);
            with_admin(&config, health.clone(), |shutdown| {
                run_enricher(&config, health, shutdown)
            })
            .await
        }
        Command::Sink => {
            let health = sink_health(&config);
            with_admin(&config, health.clone(), |shutdown| {
                run_sink(&config, health, shutdown)
            })
            .await
        }
    }
}

async fn up(config: Arc<Config>) -> Result<()> {
    let shutdown = shutdown_on_signal();
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

fn shutdown_on_signal() -> CancellationToken {
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
async fn open_meta(config: &Config) -> Result<Meta> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let url = config.metadata_url();
    let meta = Meta::connect(&url)
        .await
        .with_context(|| format!("cannot open metadata database {url}"))?;
    meta.migrate().await.context("metadata migrations failed")?;
    Ok(meta)
}

fn store(config: &Config) -> Store {
    Store::new(&StoreSettings {
        url: config.clickhouse.url.clone(),
        database: config.clickhouse.database.clone(),
        user: config.clickhouse.user.clone(),
        password: config.clickhouse.password.clone(),
        cluster: config.clickhouse.cluster.clone(),
    })
}

/// Applies ClickHouse migrations, waiting up to a minute for the server to come up.
async fn migrate_clickhouse(config: &Config) -> Result<Vec<u32>> {
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

fn redis_client(config: &Config) -> Result<analytics_streams::RedisTarget> {
    analytics_streams::RedisTarget::new(config.redis_urls(), config.redis.cluster)
        .context("invalid redis.url")
}

async fn bind(config: &Config) -> Result<TcpListener> {
    TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))
}

fn consumer_name(config: &Config) -> String {
    config.consumer_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "analytics".into())
    })
}

/// Which APIs one HTTP server offers.
#[derive(Clone, Copy)]
struct Apis {
    edge: bool,
    insights: bool,
}

impl Apis {
    const EDGE: Apis = Apis {
        edge: true,
        insights: false,
    };
    const INSIGHTS: Apis = Apis {
        edge: false,
        insights: true,
    };
    const ALL: Apis = Apis {
        edge: true,
        insights: true,
    };
}

fn enricher_health(config: &Config) -> StageHealth {
    StageHealth::new(
        "enricher",
        config.redis.partitions,
        Duration::from_millis(config.enricher.stall_after_ms),
    )
}

fn sink_health(config: &Config) -> StageHealth {
    StageHealth::new(
        "sink",
        config.redis.partitions,
        Duration::from_millis(config.sink.stall_after_ms),
    )
}

/// The consumer stages running in this process: `/readyz` answers 503
/// while one of their partition tasks is gone or stalled, and `/metrics`
/// carries their progress gauges.
#[derive(Clone)]
struct ConsumerHealth(Vec<StageHealth>);

impl ConsumerHealth {
    fn check(&self) -> Result<(), String> {
        let problems: Vec<String> = self.0.iter().filter_map(|h| h.check().err()).collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    fn export(&self) {
        self.0.iter().for_each(StageHealth::export);
    }
}

/// Serves the edge and/or the insights API (with health and metrics) on
/// `listener` until `shutdown`.
async fn serve_api(
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
    let (edge, writer) = analytics_edge::Edge::new(
        config.clone(),
        analytics_edge::EdgeDeps {
            redis,
            meta: meta.clone(),
            metrics: Arc::new(move || metrics.render()),
        },
        shutdown.clone(),
    );
    let insights = apis.insights.then(|| {
        analytics_insights::Insights::new(
            config,
            analytics_insights::InsightsDeps {
                store: store(config),
                meta,
            },
        )
    });
    let edge_routes = apis.edge;
    let prefix: Arc<str> = config.path_prefix.as_str().into();
    let handler = move |mut req: Request<Incoming>, peer: SocketAddr| {
        let (edge, insights, prefix) = (edge.clone(), insights.clone(), prefix.clone());
        let consumers = consumers.clone();
        async move {
            if !analytics_http::strip_path_prefix(&mut req, &prefix) {
                return analytics_http::ApiError::NotFound.into_response();
            }
            match req.uri().path() {
                "/readyz" => {
                    if let Err(reason) = consumers.check() {
                        return analytics_http::not_ready(&reason);
                    }
                }
                "/metrics" => consumers.export(),
                _ => {}
            }
            if let Some(insights) = &insights
                && req.uri().path().starts_with("/insights/")
            {
                if let Some(response) = insights.route(req, peer).await {
                    return response;
                }
                return analytics_http::ApiError::NotFound.into_response();
            }
            let path = req.uri().path();
            let health = matches!(path, "/healthz" | "/readyz" | "/metrics");
            if (edge_routes || health)
                && let Some(response) = edge.route(req, peer).await
            {
                return response;
            }
            analytics_http::ApiError::NotFound.into_response()
        }
    };
    tracing::info!(listen = %config.listen, edge = apis.edge, insights = apis.insights, "API listening");
    let timeout = Duration::from_millis(config.edge.request_timeout_ms);
    let options = analytics_http::ServeOptions {
        header_timeout: timeout,
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

async fn run_enricher(
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
        health,
    };
    analytics_enricher::run(config.clone(), deps, shutdown)
        .await
        .context("enricher failed")
}

/// Opens the user-agent rules and GeoIP files; what is missing or broken
/// is disabled with one warning and the pipeline runs on without it.
fn load_enrichment(config: &Config) -> analytics_enrich::Enrichment {
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
    analytics_enrich::Enrichment { ua, geo }
}

async fn run_sink(
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

/// The dead-letter admin commands.
async fn dlq(config: &Config, command: DlqCommand) -> Result<()> {
    use analytics_streams::{Topic, dead_entries, drop_dead, replay_dead, stream_key};
    let mut conn = analytics_streams::connect(&redis_client(config)?, Duration::from_secs(5))
        .await
        .context("cannot connect to Redis")?;
    let partitions = 0..config.redis.partitions;
    let key = |p: u16| stream_key(&config.redis.key_prefix, Topic::Dead, p);
    let (target, replay) = match command {
        DlqCommand::List { limit } => {
            for p in partitions {
                for entry in dead_entries(&mut conn, &key(p), limit).await? {
                    let mut line = serde_json::to_value(&entry)?;
                    line["partition"] = p.into();
                    println!("{line}");
                }
            }
            return Ok(());
        }
        DlqCommand::Replay(target) => (target, true),
        DlqCommand::Drop(target) => (target, false),
    };
    let mut chosen: Vec<(u16, String)> = Vec::new();
    match (target.all, target.partition, target.id) {
        (true, _, _) => {
            // Ids are taken first, so replayed entries that fail again and
            // come back as new dead letters are not picked up twice.
            for p in partitions {
                let entries = dead_entries(&mut conn, &key(p), usize::MAX >> 1).await?;
                chosen.extend(entries.into_iter().map(|e| (p, e.id)));
            }
        }
        (false, Some(p), Some(id)) if p < config.redis.partitions => chosen.push((p, id)),
        _ => anyhow::bail!("name an entry with --partition and --id, or use --all"),
    }
    let mut done = 0;
    for (p, id) in &chosen {
        let changed = if replay {
            replay_dead(&mut conn, &key(*p), id).await?
        } else {
            drop_dead(&mut conn, &key(*p), id).await?
        };
        done += u64::from(changed);
    }
    let action = if replay { "replayed" } else { "dropped" };
    println!("{}", serde_json::json!({ action: done }));
    Ok(())
}

/// Runs a consumer stage beside its health and metrics server. The
/// address is bound first: one that is taken ends the process at start.
/// Whichever of the two ends first ends the other.
async fn with_admin<F, Fut>(config: &Arc<Config>, health: StageHealth, stage: F) -> Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let shutdown = shutdown_on_signal();
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

/// Asks this configuration's own server for `path`; an error unless it answers 200.
async fn probe(config: &Config, path: &str) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        head.truncate(n);
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .with_context(|| format!("{addr}{path}: no answer within 3 s"))?
        .with_context(|| format!("{addr}{path}: cannot connect"))?;
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        anyhow::bail!("{addr}{path}: {status_line}")
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
