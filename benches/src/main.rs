//! `loadgen`: the benchmark harness. `loadgen suite` measures, in one run on
//! one machine, the baselines (a do-nothing hyper server, raw pipelined
//! XADD, raw ClickHouse inserts) and the pipeline (`analytics up`) in every
//! mode, and writes a JSON report and a Markdown table of ratios.

/// The pipeline's own allocator: the plain server it is compared with runs
/// in this process, and glibc's arena locks were a tenth of the
/// generator's CPU at a fixed rate.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod baselines;
mod cpu;
mod events;
mod insights;
mod lag;
mod load;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use analytics_store::EventRow;
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::{Value, json};

use crate::baselines::Views;
use crate::cpu::{Reading, Servers, process_usage, settle_merges};
use crate::lag::LagProbe;
use crate::load::unix_ms;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Benchmark harness of the analytics pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Baselines, edge (single and batch), end to end; report as JSON + Markdown.
    Suite(SuiteArgs),
    /// Latency of the insights `metrics` question over a stored dataset.
    Insights {
        #[command(flatten)]
        pipeline: SuiteArgs,
        /// Events stored before measuring.
        #[arg(long, default_value_t = 5_000_000)]
        events: u64,
        /// Devices the events belong to.
        #[arg(long, default_value_t = 200_000)]
        devices: u64,
        /// Requests per question.
        #[arg(long, default_value_t = 10)]
        requests: usize,
    },
    /// Drive a running edge.
    Edge {
        #[arg(long, default_value = "127.0.0.1:3002")]
        addr: SocketAddr,
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        client_secret: String,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Requests per second (all connections); as fast as possible when absent.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Serve the do-nothing HTTP baseline (reads each body, answers 202)
    /// until killed; prints the address it listens on.
    PlainServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Time the sink's check of a redelivered batch against the insert of
    /// the same batch, in a scratch database that is dropped afterwards.
    Redelivery {
        #[arg(long, default_value = "http://127.0.0.1:8123")]
        clickhouse_url: String,
        /// Rows per batch (the sink's default `max_rows`).
        #[arg(long, default_value_t = 50_000)]
        rows: usize,
        /// Rows stored beforehand around the batch.
        #[arg(long, default_value_t = 500_000)]
        stored: usize,
        /// Every batch spreads over the same hour of event time (an import
        /// of old events) instead of one second after the other.
        #[arg(long)]
        backdated: bool,
    },
}

#[derive(clap::Args, Clone)]
struct SuiteArgs {
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    clickhouse_url: String,
    /// The `analytics` binary to measure (a release build).
    #[arg(long)]
    analytics: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of the end-to-end run.
    #[arg(long, default_value_t = 60)]
    e2e_seconds: u64,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also run end to end at 2x/4x payload and 1/2 partitions.
    #[arg(long)]
    matrix: bool,
    /// Events of the insights latency run (0: none).
    #[arg(long, default_value_t = 5_000_000)]
    insights_events: u64,
    /// An earlier `analytics` binary whose insights latency is measured in
    /// the same run over the same dataset, reported beside (before/after).
    #[arg(long)]
    insights_before: Option<PathBuf>,
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// Data directory of the run command (`regexes.yaml`, `geoip/*.mmdb`),
    /// so the measured pipeline enriches like a real one.
    #[arg(long, default_value = "data")]
    enrichment_data: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Cmd::Suite(args) => suite(args).await,
            Cmd::Insights {
                pipeline,
                events,
                devices,
                requests,
            } => {
                let data = insights::Dataset { events, devices };
                let measured = insights_latency(&pipeline, data, requests).await?;
                println!("{}", serde_json::to_string_pretty(&measured)?);
                Ok(())
            }
            Cmd::PlainServer { listen } => {
                let addr = baselines::plain_http_server(listen).await?;
                println!("{addr}");
                std::future::pending::<()>().await;
                Ok(())
            }
            Cmd::Redelivery {
                clickhouse_url,
                rows,
                stored,
                backdated,
            } => {
                let database = format!("bench_redelivery_{}", std::process::id());
                let measured = baselines::redelivery_check(
                    &clickhouse_url,
                    &database,
                    rows,
                    stored,
                    backdated,
                )
                .await;
                clickhouse_query(
                    &clickhouse_url,
                    "default",
                    &format!("DROP DATABASE IF EXISTS {database}"),
                )?;
                println!("{}", serde_json::to_string_pretty(&measured?)?);
                Ok(())
            }
            Cmd::Edge {
                addr,
                client_id,
                client_secret,
                batch,
                connections,
                seconds,
                rate,
                seed,
            } => {
                let outcome = load::run(load::Plan {
                    addr,
                    path: if batch > 1 {
                        "/batch".into()
                    } else {
                        "/track".into()
                    },
                    headers: vec![
                        ("openpanel-client-id".into(), client_id),
                        ("openpanel-client-secret".into(), client_secret),
                    ],
                    connections,
                    duration: Duration::from_secs(seconds),
                    rate,
                    batch,
                    size_factor: 1,
                    devices: 10_000,
                    seed,
                })
                .await?;
                println!("{}", serde_json::to_string_pretty(&outcome)?);
                Ok(())
            }
        }
    })
}

/// The do-nothing HTTP baseline in a process of its own, as the edge is,
/// so both are scheduled alike (inside the generator's process, client
/// and server share one runtime, which no real server does). Killed when
/// dropped.
struct PlainServer {
    child: Child,
    addr: SocketAddr,
}

impl PlainServer {
    fn start() -> Result<PlainServer> {
        use std::io::BufRead;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("plain-server")
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the plain server")?;
        let mut line = String::new();
        let stdout = child
            .stdout
            .take()
            .context("no stdout of the plain server")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("the plain server printed {line:?}, not its address"))?;
        Ok(PlainServer { child, addr })
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `analytics up` under measurement, with its own keys and database,
/// both removed when it is dropped (a suite run would otherwise leave
/// gigabytes of dedupe marks and sessions in Redis).
struct Pipeline {
    child: Child,
    addr: SocketAddr,
    database: String,
    project: String,
    id: String,
    secret: String,
    read_id: String,
    read_secret: String,
    redis_url: String,
    clickhouse_url: String,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Err(e) = remove_keys(&self.redis_url, &format!("{}:*", self.database)) {
            eprintln!("cannot remove the keys of {}: {e}", self.database);
        }
        let drop_db = format!("DROP DATABASE IF EXISTS {}", self.database);
        if let Err(e) = clickhouse_query(&self.clickhouse_url, "default", &drop_db) {
            eprintln!("cannot drop {}: {e}", self.database);
        }
    }
}

/// Unlinks every key matching `pattern`.
fn remove_keys(redis_url: &str, pattern: &str) -> redis::RedisResult<()> {
    let mut conn = redis::Client::open(redis_url)?.get_connection()?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)?;
        if !keys.is_empty() {
            redis::cmd("UNLINK").arg(&keys).query::<()>(&mut conn)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn clickhouse_query(url: &str, database: &str, sql: &str) -> Result<String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            &format!("{url}/?database={database}"),
            "--data-binary",
            sql,
        ])
        .output()?;
    if !out.status.success() {
        bail!("clickhouse: {}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

async fn start_pipeline(args: &SuiteArgs, tag: &str, partitions: u16) -> Result<Pipeline> {
    start_pipeline_with(args, tag, partitions, &[]).await
}

/// An edge process on its own, the way it is deployed next to separate
/// consumers: `analytics up` bootstraps the project and schema and is
/// stopped, then `analytics edge` serves on the same port, keys and data.
/// Nothing drains the raw stream, so every accepted event can be counted there.
async fn start_edge_alone(args: &SuiteArgs, tag: &str, partitions: u16) -> Result<Pipeline> {
    let mut pipeline = start_pipeline(args, tag, partitions).await?;
    let _ = pipeline.child.kill();
    let _ = pipeline.child.wait();
    let mut cmd = analytics_command(
        args,
        "edge",
        &pipeline.database,
        pipeline.addr,
        partitions,
        &[],
    );
    pipeline.child = cmd.spawn().context("cannot start the edge")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(pipeline.addr).is_err() {
        if Instant::now() > deadline {
            bail!("the edge did not come up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(pipeline)
}

/// Forks Redis has made so far (background saves, AOF rewrites).
fn redis_forks(url: &str) -> Result<u64> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let info: String = redis::cmd("INFO").arg("stats").query(&mut conn)?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("total_forks:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Checks that the raw stream holds every event accepted since the last
/// drain (plus any of requests the generator gave up on before their answer
/// came), then empties it as consumers would: a stream left to grow would
/// make Redis fork ever larger copies of itself for its AOF rewrites, which
/// a drained pipeline does not see. Returns the events found.
async fn drain_raw(p: &Pipeline, accepted: u64) -> Result<u64> {
    let found = raw_events(p, 4).await?;
    if found < accepted {
        bail!("{accepted} events accepted by the edge but only {found} on the raw stream");
    }
    let client = redis::Client::open(p.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    for partition in 0..4 {
        let _: u64 = redis::cmd("XTRIM")
            .arg(format!("{}:raw:{{p{partition}}}", p.database))
            .arg("MAXLEN")
            .arg(0)
            .query_async(&mut conn)
            .await?;
    }
    Ok(found)
}

/// Events on the pipeline's raw partitions.
async fn raw_events(p: &Pipeline, partitions: u16) -> Result<u64> {
    let client = redis::Client::open(p.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut total = 0;
    for partition in 0..partitions {
        let key = format!("{}:raw:{{p{partition}}}", p.database);
        total += stream_documents(&mut conn, &key).await?;
    }
    Ok(total)
}

/// The insights questions' latency on a fresh pipeline holding `data`.
async fn insights_latency(
    args: &SuiteArgs,
    data: insights::Dataset,
    requests: usize,
) -> Result<Value> {
    let p = start_pipeline(args, "insights", 1).await?;
    let started = Instant::now();
    insights::fill(&p, data)?;
    eprintln!(
        "{} events stored in {:.1} s",
        data.events,
        started.elapsed().as_secs_f64()
    );
    let mut measured = insights::measure(&p, requests).await?;
    measured["events"] = json!(data.events);
    measured["devices"] = json!(data.devices);
    Ok(measured)
}

/// `analytics <command>` configured for the pipeline `name`.
fn analytics_command(
    args: &SuiteArgs,
    command: &str,
    name: &str,
    addr: SocketAddr,
    partitions: u16,
    env: &[(&str, &str)],
) -> Command {
    let data = std::env::temp_dir().join(name);
    let mut cmd = Command::new(&args.analytics);
    cmd.arg(command)
        .env("ANALYTICS_LISTEN", addr.to_string())
        .env("ANALYTICS_DATA_DIR", &data)
        .env("ANALYTICS_REDIS_URL", &args.redis_url)
        .env("ANALYTICS_REDIS_KEY_PREFIX", name)
        .env("ANALYTICS_REDIS_PARTITIONS", partitions.to_string())
        .env("ANALYTICS_CLICKHOUSE_URL", &args.clickhouse_url)
        .env("ANALYTICS_CLICKHOUSE_DATABASE", name)
        .env("ANALYTICS_CLIENT_IP_HEADER", "x-forwarded-for")
        .envs(env.iter().copied())
        .env("ANALYTICS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let rules = args.enrichment_data.join("regexes.yaml");
    if rules.exists() {
        cmd.env("ANALYTICS_UA_REGEXES", rules);
    }
    let geoip: Vec<String> = std::fs::read_dir(args.enrichment_data.join("geoip"))
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "mmdb"))
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    if !geoip.is_empty() {
        cmd.env("ANALYTICS_GEOIP_DB", geoip.join(","));
    }
    cmd
}

async fn start_pipeline_with(
    args: &SuiteArgs,
    tag: &str,
    partitions: u16,
    env: &[(&str, &str)],
) -> Result<Pipeline> {
    let name = format!("bench_{tag}_{}", std::process::id());
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let data = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&data)?;
    let child = analytics_command(args, "up", &name, addr, partitions, env)
        .spawn()
        .context("cannot start analytics")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let bootstrap = data.join("bootstrap.json");
    loop {
        let ready = std::net::TcpStream::connect(addr).is_ok() && bootstrap.exists();
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("analytics did not come up");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let b: Value = serde_json::from_str(&std::fs::read_to_string(bootstrap)?)?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok(Pipeline {
        child,
        addr,
        redis_url: args.redis_url.clone(),
        clickhouse_url: args.clickhouse_url.clone(),
        database: name,
        project: text(&b["project_id"]),
        id: text(&b["write"]["id"]),
        secret: text(&b["write"]["secret"]),
        read_id: text(&b["read"]["id"]),
        read_secret: text(&b["read"]["secret"]),
    })
}

fn plan(
    args: &SuiteArgs,
    p: &Pipeline,
    batch: usize,
    rate: Option<f64>,
    seconds: u64,
    size_factor: usize,
) -> load::Plan {
    load::Plan {
        addr: p.addr,
        path: if batch > 1 {
            "/batch".into()
        } else {
            "/track".into()
        },
        headers: vec![
            ("openpanel-client-id".into(), p.id.clone()),
            ("openpanel-client-secret".into(), p.secret.clone()),
        ],
        connections: args.connections,
        duration: Duration::from_secs(seconds),
        rate,
        batch,
        size_factor,
        devices: 10_000,
        seed: args.seed,
    }
}

/// Waits until `expected` events are visible in the pipeline's database
/// (the backlog is drained; its one project is the bootstrap project).
/// The rows are counted from the parts' metadata: a `count()` with a
/// `WHERE` reads a column of every stored row (40 ms of server CPU at
/// 3.7 M rows), and asked ten times a second through a drain of a minute
/// or more, that was charged to the run's events as ClickHouse's cost.
async fn wait_visible(args: &SuiteArgs, p: &Pipeline, expected: u64) -> Result<()> {
    let count_sql = format!(
        "SELECT sum(rows) FROM system.parts \
         WHERE database = '{}' AND table = 'events' AND active",
        p.database
    );
    let started = Instant::now();
    loop {
        let visible: u64 = clickhouse_query(&args.clickhouse_url, &p.database, &count_sql)?
            .parse()
            .unwrap_or(0);
        if visible >= expected {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("only {visible} of {expected} events visible after 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How often the end-to-end runs sample the lag, at most (a sample waits
/// for its marker's answer and its query): often enough that the p99 of
/// a 30 s run is not simply its largest sample.
const LAG_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Sends batches for `seconds` (as fast as possible, or `rate` requests of
/// 100 events per second), sampling how far ClickHouse is behind, then
/// waits for the last accepted event to be visible.
async fn end_to_end(
    args: &SuiteArgs,
    p: &Pipeline,
    seconds: u64,
    size_factor: usize,
    rate: Option<f64>,
) -> Result<Value> {
    let servers = Servers::find(&args.redis_url, &args.clickhouse_url);
    let before = Reading::take(Some(p.child.id()), &servers);
    let load = tokio::spawn(load::run(plan(args, p, 100, rate, seconds, size_factor)));
    let mut probe = LagProbe::connect(
        plan(args, p, 1, None, seconds, 1),
        &args.clickhouse_url,
        &p.database,
        &p.project,
    )
    .await?;
    let mut lags = Vec::new();
    let started = Instant::now();
    let mut every = tokio::time::interval(LAG_SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !load.is_finished() {
        every.tick().await;
        probe.mark().await?;
        let newest = probe.newest_stored_ms().await?;
        if started.elapsed() > Duration::from_secs(3) {
            // No marker stored yet: everything sent so far is behind.
            lags.push(match newest {
                Some(newest) => unix_ms().saturating_sub(newest) as f64 / 1000.0,
                None => started.elapsed().as_secs_f64(),
            });
        }
    }
    let outcome = load.await??;
    let sent_done = Instant::now();
    wait_visible(args, p, outcome.events_accepted + probe.accepted()).await?;
    let drain = sent_done.elapsed().as_secs_f64();
    let (_, peak_mb) = process_usage(p.child.id());
    let state = partition_state(p.addr).unwrap_or_default();
    settle_merges(&args.clickhouse_url).await;
    let cpu = before.per_item(
        &Reading::take(Some(p.child.id()), &servers),
        outcome.events_accepted,
    );
    lags.sort_by(|a, b| a.total_cmp(b));
    let p99 = lags
        .get(((lags.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    let events = outcome.events_accepted as f64;
    Ok(json!({
        "events_accepted": outcome.events_accepted,
        "events_per_second": events / (outcome.seconds + drain),
        "send_events_per_second": outcome.events_per_second,
        "drain_seconds": drain,
        "lag_p99_seconds": p99,
        "lag_max_seconds": lags.last().copied().unwrap_or(0.0),
        "lag_samples": lags.len(),
        "peak_rss_mb": peak_mb,
        "partition_state": state,
        // µs per event is seconds per million events.
        "cpu_seconds_per_million": cpu.pipeline_us,
        "cpu_per_stored_event": cpu,
        "rejected_requests": outcome.rejected_requests,
    }))
}

/// The enricher's state per owned partition, read from the pipeline's
/// `/metrics` once the run is drained: the largest partition's open
/// sessions, dedupe keys and sessions log (bytes in Redis), and the
/// sums over the partitions.
fn partition_state(addr: SocketAddr) -> Result<Value> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // HTTP/1.0: the body ends with the connection, never chunked.
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let mut state = json!({});
    for (gauge, name) in [
        ("analytics_enricher_state_sessions", "sessions"),
        ("analytics_enricher_state_dedupe_keys", "dedupe_keys"),
        (
            "analytics_enricher_state_sessions_log_bytes",
            "sessions_log_bytes",
        ),
    ] {
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{gauge}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        state[name] = json!({
            "largest_partition": values.iter().copied().fold(0.0, f64::max),
            "total": values.iter().sum::<f64>(),
        });
    }
    Ok(state)
}

/// Rows per storage baseline run (of the best of three).
const STORAGE_BASELINE_ROWS: usize = 500_000;
/// Rows per insert of a storage baseline.
const STORAGE_BASELINE_BLOCK: usize = 10_000;

/// The cheapest of three runs of an insert baseline (500,000 rows in
/// 10,000-row blocks), each into a scratch database of its own.
/// ClickHouse's CPU is read for the whole server, so whatever else it does
/// meanwhile (merges and cleanups left by earlier work) can only add to a
/// run: the least is the closest to the insert's own cost. The databases
/// are dropped when the suite ends: deleting a database's thousands of
/// files makes the file system slow to create new ones for a while (ext4
/// skips recently freed inodes), which the next run would measure.
async fn best_insert(
    args: &SuiteArgs,
    servers: &Servers,
    database: &str,
    views: Views,
    rows: &[EventRow],
) -> Result<baselines::InsertCost> {
    let mut best: Option<baselines::InsertCost> = None;
    for run in 0..3 {
        let db = format!("{database}_{run}");
        let cost = baselines::clickhouse_insert(
            &args.clickhouse_url,
            &db,
            rows,
            STORAGE_BASELINE_ROWS,
            STORAGE_BASELINE_BLOCK,
            views,
            servers,
        )
        .await?;
        if best
            .as_ref()
            .is_none_or(|b| cost.clickhouse_cpu_us_per_row < b.clickhouse_cpu_us_per_row)
        {
            best = Some(cost);
        }
    }
    Ok(best.expect("three runs"))
}

/// Documents on a stream whose entries are bundles: events (binary, or JSON
/// lines from older edges) on raw, records (binary frames) on enriched.
async fn stream_documents(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Result<u64> {
    let enriched = key.contains(":enriched:");
    let mut start = "-".to_owned();
    let mut events = 0u64;
    loop {
        let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        let Some(last) = page.ids.last() else {
            return Ok(events);
        };
        start = format!("({}", last.id);
        for entry in &page.ids {
            let payload = analytics_streams::payload::plain(&entry.map).unwrap_or_default();
            events += if enriched {
                analytics_store::decode_frames(&payload.into()).len() as u64
            } else {
                analytics_event::raw_documents(&payload).count() as u64
            };
        }
    }
}

/// Drives the pipeline harder than its consumers can drain, with a small
/// stream cap: the edge must push back with 503s while stream lengths stay
/// near the cap and memory stays flat.
async fn overload(args: &SuiteArgs, seconds: u64) -> Result<Value> {
    const CAP: u64 = 50_000;
    let cap = CAP.to_string();
    let p = start_pipeline_with(
        args,
        "overload",
        4,
        &[("ANALYTICS_REDIS_MAX_STREAM_LEN", &cap)],
    )
    .await?;
    let client = redis::Client::open(args.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let load = tokio::spawn(load::run(plan(args, &p, 100, None, seconds, 1)));
    let (mut max_len, mut max_enriched) = (0u64, 0u64);
    let mut rss_samples = Vec::new();
    while !load.is_finished() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for partition in 0..4 {
            for (topic, max) in [("raw", &mut max_len), ("enriched", &mut max_enriched)] {
                let key = format!("{}:{topic}:{{p{partition}}}", p.database);
                let len: u64 = redis::cmd("XLEN")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or(0);
                *max = (*max).max(len);
            }
        }
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap_or_default();
        if let Some(kb) = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        {
            rss_samples.push(kb / 1024.0);
        }
    }
    let outcome = load.await??;
    let (_, peak_mb) = process_usage(p.child.id());
    // Entries are bundles: the cap is on events (records), counted at the end.
    let (mut max_events, mut max_records) = (0u64, 0u64);
    for partition in 0..4 {
        let key = format!("{}:raw:{{p{partition}}}", p.database);
        max_events = max_events.max(stream_documents(&mut conn, &key).await?);
        let key = format!("{}:enriched:{{p{partition}}}", p.database);
        max_records = max_records.max(stream_documents(&mut conn, &key).await?);
    }
    Ok(json!({
        "stream_cap": CAP,
        "max_partition_events_at_end": max_events,
        "max_partition_length": max_len,
        "max_enriched_partition_length": max_enriched,
        "max_enriched_partition_records_at_end": max_records,
        "rss_max_second_half_mb": rss_samples[rss_samples.len() / 2..].iter().copied().fold(0.0, f64::max),
        "rss_max_first_half_mb": rss_samples[..rss_samples.len() / 2].iter().copied().fold(0.0, f64::max),
        "accepted_requests": outcome.accepted_requests,
        "rejected_requests": outcome.rejected_requests,
        "rss_first_mb": rss_samples.first().copied().unwrap_or(0.0),
        "rss_last_mb": rss_samples.last().copied().unwrap_or(0.0),
        "peak_rss_mb": peak_mb,
    }))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown cpu")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

/// Shortest run of the half-rate latency measurement.
const HALF_RATE_SECONDS: u64 = 15;
/// Rounds of single events, each the plain server and then the edge. This
/// machine's speed drifts by tens of percent within a minute; a ratio of
/// two runs far apart in time measures the drift as much as the edge. Five,
/// because one stall of the machine (a neighbour, a Redis AOF rewrite)
/// spoils a whole round's p99: the median of five stands two such rounds.
const SINGLE_ROUNDS: usize = 5;
const _: () = assert!(SINGLE_ROUNDS % 2 == 1, "a median round needs an odd count");

/// The round whose `key` is the median; `rounds` stay in the order they ran.
fn median_by<T>(rounds: &[T], key: impl Fn(&T) -> f64) -> &T {
    let mut order: Vec<&T> = rounds.iter().collect();
    order.sort_by(|a, b| key(a).total_cmp(&key(b)));
    order[order.len() / 2]
}

/// One round: the plain server, then the edge, under the same load.
#[derive(Clone, Serialize)]
struct Round {
    plain: load::Outcome,
    edge: load::Outcome,
    /// Forks Redis made during the edge's run: a background save or AOF
    /// rewrite stalls it, and the tail latency of a run with one is mostly that.
    redis_forks: u64,
}

impl Round {
    /// The edge's requests/s in percent of the plain server's.
    fn share(&self) -> f64 {
        percent(
            self.edge.requests_per_second,
            self.plain.requests_per_second,
        )
    }
}

/// `a` in percent of `b`; 0 when `b` is.
fn percent(a: f64, b: f64) -> f64 {
    if b > 0.0 { 100.0 * a / b } else { 0.0 }
}

/// [`SINGLE_ROUNDS`] rounds of `plain` against the plain server and `edge`
/// against the edge alone, each edge run drained and checked; adds the
/// events found on the raw stream to `in_redis`.
async fn alternate(
    args: &SuiteArgs,
    pipeline: &Pipeline,
    plain: &load::Plan,
    edge: &load::Plan,
    in_redis: &mut u64,
) -> Result<Vec<Round>> {
    let mut rounds = Vec::with_capacity(SINGLE_ROUNDS);
    for _ in 0..SINGLE_ROUNDS {
        let plain = load::run(plain.clone()).await?;
        let forks_before = redis_forks(&args.redis_url)?;
        let edge = load::run(edge.clone()).await?;
        let redis_forks = redis_forks(&args.redis_url)? - forks_before;
        *in_redis += drain_raw(pipeline, edge.events_accepted).await?;
        rounds.push(Round {
            plain,
            edge,
            redis_forks,
        });
    }
    Ok(rounds)
}

/// How late a fixed-rate run's requests left the generator, in words. A
/// connection carries one request at a time, so a request that comes due
/// while every connection awaits an answer leaves late, and its latency
/// counts from when it was due.
fn send_delay(outcome: &load::Outcome) -> String {
    match &outcome.send_delay_ms {
        Some(d) => format!(
            "requests left the generator late by p50 {:.2} ms, p99 {:.2} ms, {:.0}% of them with no connection free when due",
            d.p50, d.p99, d.no_free_connection_percent
        ),
        None => "no send delays (not a fixed rate)".into(),
    }
}

async fn suite(args: SuiteArgs) -> Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let secs = args.seconds;
    let mut report = json!({"machine": machine(), "command": command.join(" ")});
    eprintln!("baseline: plain hyper server (a process of its own)");
    let plain_server = PlainServer::start()?;
    let plain_single = load::Plan {
        addr: plain_server.addr,
        path: "/track".into(),
        headers: Vec::new(),
        connections: args.connections,
        duration: Duration::from_secs(secs),
        rate: None,
        batch: 1,
        size_factor: 1,
        devices: 10_000,
        seed: args.seed,
    };
    eprintln!("baseline: plain hyper server inside the generator's process");
    let plain_in_process = load::run(load::Plan {
        addr: baselines::plain_http_server(SocketAddr::from(([127, 0, 0, 1], 0))).await?,
        ..plain_single.clone()
    })
    .await?;
    let scratch = format!("bench_xadd_{}", std::process::id());
    eprintln!("baseline: pipelined XADD");
    let xadd = baselines::xadd(
        &args.redis_url,
        &format!("{scratch}:{{x}}"),
        8,
        100,
        Duration::from_secs(secs),
    )
    .await?;
    let servers = Servers::find(&args.redis_url, &args.clickhouse_url);
    let constant = baselines::constant_rows(STORAGE_BASELINE_BLOCK)?;
    eprintln!("baseline: constant rows into events without views");
    let bare_constant = best_insert(
        &args,
        &servers,
        &format!("{scratch}_bare"),
        Views::Dropped,
        &constant,
    )
    .await?;
    eprintln!("baseline: ClickHouse inserts");
    let ch = best_insert(&args, &servers, &scratch, Views::Kept, &constant).await?;
    drop(constant);

    let pipeline = start_edge_alone(&args, "edge", 4).await?;
    eprintln!(
        "edge (alone) and the plain server in turn: single events, as fast as possible, {SINGLE_ROUNDS} rounds"
    );
    let mut in_redis = 0;
    let single_plan = plan(&args, &pipeline, 1, None, secs, 1);
    let rounds = alternate(&args, &pipeline, &plain_single, &single_plan, &mut in_redis).await?;
    let median = median_by(&rounds, Round::share).clone();
    let single_share = median.share();
    let Round {
        plain,
        edge: single,
        ..
    } = median;
    // Latency at a steady rate: long enough that one hiccup of the machine
    // is not the p99 by itself; each round the plain server first, at the
    // same rate, for the latency this machine gives a request when the
    // generator shares its cores with a server.
    let half_secs = secs.max(HALF_RATE_SECONDS);
    let half_rate = single.requests_per_second / 2.0;
    eprintln!(
        "edge (alone) and the plain server in turn: single events at half that rate, {SINGLE_ROUNDS} rounds of {half_secs} s"
    );
    let plain_at_half = load::Plan {
        rate: Some(half_rate),
        duration: Duration::from_secs(half_secs),
        ..plain_single.clone()
    };
    let edge_at_half = plan(&args, &pipeline, 1, Some(half_rate), half_secs, 1);
    let half_rounds = alternate(
        &args,
        &pipeline,
        &plain_at_half,
        &edge_at_half,
        &mut in_redis,
    )
    .await?;
    let Round {
        plain: plain_half,
        edge: half,
        redis_forks: forks_during_half,
    } = median_by(&half_rounds, |r| r.edge.latency_ms.p99).clone();
    drop(plain_server);
    eprintln!("edge (alone): batches of 100");
    let batch = load::run(plan(&args, &pipeline, 100, None, secs, 1)).await?;
    in_redis += drain_raw(&pipeline, batch.events_accepted).await?;
    let accepted = rounds
        .iter()
        .chain(&half_rounds)
        .map(|r| r.edge.events_accepted)
        .sum::<u64>()
        + batch.events_accepted;
    drop(pipeline);

    eprintln!("end to end: {} s", args.e2e_seconds);
    let pipeline = start_pipeline(&args, "e2e", 4).await?;
    let e2e = end_to_end(&args, &pipeline, args.e2e_seconds, 1, None).await?;
    let stored = baselines::stored_rows(
        &args.clickhouse_url,
        &pipeline.database,
        STORAGE_BASELINE_ROWS,
    )
    .await?;
    drop(pipeline);
    eprintln!(
        "baseline: bare storage ceiling ({} of the stored rows into events without views)",
        stored.len()
    );
    let bare = best_insert(
        &args,
        &servers,
        &format!("{scratch}_stored"),
        Views::Dropped,
        &stored,
    )
    .await?;
    drop(stored);
    // Lag means something at a rate the pipeline sustains: 80% of what it
    // drained above, on a fresh pipeline.
    let sustained_rate = e2e["events_per_second"].as_f64().unwrap_or(0.0) * 0.8;
    eprintln!(
        "end to end: {sustained_rate:.0} events/s for {} s",
        args.e2e_seconds / 2
    );
    let pipeline = start_pipeline(&args, "e2e_rate", 4).await?;
    let sustained = end_to_end(
        &args,
        &pipeline,
        args.e2e_seconds / 2,
        1,
        Some(sustained_rate / 100.0),
    )
    .await?;
    drop(pipeline);
    let mut matrix = Vec::new();
    if args.matrix {
        for (partitions, size) in [(1u16, 1usize), (2, 1), (4, 2), (4, 4)] {
            eprintln!("end to end: {partitions} partitions, {size}x payload");
            let pipeline =
                start_pipeline(&args, &format!("m{partitions}x{size}"), partitions).await?;
            let result = end_to_end(&args, &pipeline, secs, size, None).await?;
            matrix.push(json!({"partitions": partitions, "payload": size, "result": result}));
        }
    }
    eprintln!(
        "overload: {} s against a 50,000-event stream cap",
        args.e2e_seconds.min(30)
    );
    let overload = overload(&args, args.e2e_seconds.min(30)).await?;
    let insights = if args.insights_events > 0 {
        eprintln!("insights: {} events", args.insights_events);
        let data = insights::Dataset {
            events: args.insights_events,
            devices: (args.insights_events / 25).max(1),
        };
        insights_latency(&args, data, 5).await?
    } else {
        Value::Null
    };
    let insights_before = match (&args.insights_before, args.insights_events) {
        (Some(before), events) if events > 0 => {
            eprintln!("insights before: {}", before.display());
            let earlier = SuiteArgs {
                analytics: before.clone(),
                ..args.clone()
            };
            let data = insights::Dataset {
                events,
                devices: (events / 25).max(1),
            };
            let mut measured = insights_latency(&earlier, data, 5).await?;
            measured["binary"] = json!(before.display().to_string());
            measured
        }
        _ => Value::Null,
    };
    report["insights"] = insights.clone();
    report["insights_before"] = insights_before.clone();
    report["overload"] = overload.clone();
    report["baselines"] = json!({"plain_http": plain, "plain_http_in_process": plain_in_process, "plain_http_at_edge_half_rate": plain_half, "xadd": xadd, "clickhouse_insert": ch, "bare_storage": bare, "bare_storage_constant_rows": bare_constant});
    report["edge"] = json!({
        "process": "analytics edge, alone",
        "single": single,
        "single_rounds": rounds,
        "single_at_half_rate": half,
        "single_at_half_rate_rounds": half_rounds,
        "redis_forks_during_half_rate": forks_during_half,
        "batch_100": batch,
        "accepted_events": accepted,
        "raw_stream_events": in_redis,
    });
    report["end_to_end"] = e2e.clone();
    report["end_to_end_sustained"] = sustained.clone();
    report["matrix"] = json!(matrix);
    let mut md = format!(
        "Measured on {} with `{}`.\n\n| measurement | result | against | target |\n|---|---|---|---|\n",
        report["machine"].as_str().unwrap_or(""),
        report["command"].as_str().unwrap_or("")
    );
    md += &format!(
        "| plain hyper server inside the generator's process (the baseline of earlier runs) | {:.0} req/s | | |\n",
        plain_in_process.requests_per_second
    );
    md += &format!(
        "| plain hyper server, a process of its own as the edge is (baseline; the median round's, below) | {:.0} req/s | | |\n",
        plain.requests_per_second
    );
    md += &format!(
        "| raw pipelined XADD (baseline) | {:.0} entries/s | | |\n",
        xadd.per_second
    );
    md += &format!(
        "| raw ClickHouse insert, whole schema (baseline) | {:.0} rows/s, ClickHouse {:.1} CPU-µs per row | | |\n",
        ch.throughput.per_second, ch.clickhouse_cpu_us_per_row
    );
    md += &format!(
        "| `events` without views, one constant sparse 10,000-row block (the bare ceiling of earlier runs) | {:.0} rows/s, ClickHouse {:.1} CPU-µs per row | | |\n",
        bare_constant.throughput.per_second, bare_constant.clickhouse_cpu_us_per_row
    );
    md += &format!(
        "| bare storage ceiling: the end-to-end run's stored rows into `events` without views, 10,000-row blocks (baseline) | {:.0} rows/s, ClickHouse {:.1} CPU-µs per row | | |\n",
        bare.throughput.per_second, bare.clickhouse_cpu_us_per_row
    );
    md += &format!(
        "| edge (`analytics edge` alone; {in_redis} events on the raw stream for {accepted} accepted), single events, the round with the median share of {SINGLE_ROUNDS} that each run the plain server and then the edge | {:.0} req/s, p99 {:.2} ms | {:.0}% of plain hyper (rounds in order: {}) | ≥ 60% |\n",
        single.requests_per_second,
        single.latency_ms.p99,
        single_share,
        rounds
            .iter()
            .map(|r| format!("{:.0}% of {:.0}", r.share(), r.plain.requests_per_second))
            .collect::<Vec<_>>()
            .join(", ")
    );
    md += &format!(
        "| edge, single events at 50% rate, the round with the median p99 of {SINGLE_ROUNDS} rounds of {half_secs} s that each run the plain server and then the edge | p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; {}; Redis forked {} times meanwhile | plain hyper at that rate: p50 {:.2} ms, p99 {:.2} ms; {} (rounds in order, edge p99 / plain p99: {}) | p99 < 10 ms |\n",
        half.latency_ms.p50,
        half.latency_ms.p99,
        half.latency_ms.p999,
        send_delay(&half),
        forks_during_half,
        plain_half.latency_ms.p50,
        plain_half.latency_ms.p99,
        send_delay(&plain_half),
        half_rounds
            .iter()
            .map(|r| format!(
                "{:.2} / {:.2} ms",
                r.edge.latency_ms.p99, r.plain.latency_ms.p99
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    md += &format!(
        "| edge, batches of 100 | {:.0} events/s | {:.0}% of raw XADD | ≥ 30% |\n",
        batch.events_per_second,
        percent(batch.events_per_second, xadd.per_second)
    );
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    md += &format!(
        "| end to end ({} s, batches of 100) | {:.0} events/s, lag p99 {:.1} s, peak RSS {:.0} MB, {:.1} CPU-s per 1M events | {:.0}% of raw ClickHouse insert | ≥ 100,000 events/s, lag p99 < 2 s, RSS < 512 MB |\n",
        args.e2e_seconds,
        f(&e2e, "events_per_second"),
        f(&e2e, "lag_p99_seconds"),
        f(&e2e, "peak_rss_mb"),
        f(&e2e, "cpu_seconds_per_million"),
        percent(f(&e2e, "events_per_second"), ch.throughput.per_second)
    );
    let cpu = &e2e["cpu_per_stored_event"];
    let bare_us = bare.clickhouse_cpu_us_per_row.max(1e-9);
    md += &format!(
        "| end to end, CPU per stored event | pipeline {:.1} µs, Redis {:.1} µs, ClickHouse {:.1} µs (merges included), total {:.1} µs; {:.0}% of the bare ceiling's rows/s | total {:.1}× the bare ceiling's CPU per row; Redis {:.1}×, ClickHouse {:.1}× | total ≤ 4×, Redis and ClickHouse each ≤ 1.5×; ≥ 25% of the bare rows/s |\n",
        f(cpu, "pipeline_us"),
        f(cpu, "redis_us"),
        f(cpu, "clickhouse_us"),
        f(cpu, "total_us"),
        percent(f(&e2e, "events_per_second"), bare.throughput.per_second),
        f(cpu, "total_us") / bare_us,
        f(cpu, "redis_us") / bare_us,
        f(cpu, "clickhouse_us") / bare_us,
    );
    let state = &e2e["partition_state"];
    let of = |name: &str, which: &str| state[name][which].as_f64().unwrap_or(0.0);
    md += &format!(
        "| enricher state after the end-to-end run (largest partition; all partitions) | {:.0} open sessions, {:.0} dedupe keys, sessions log {:.1} MB; {:.0} sessions, {:.0} keys | | bounded, per partition: open sessions × 90 B + keys × 30 B (events with a client id within the dedupe window, others received within 4–6 s) |\n",
        of("sessions", "largest_partition"),
        of("dedupe_keys", "largest_partition"),
        of("sessions_log_bytes", "largest_partition") / 1e6,
        of("sessions", "total"),
        of("dedupe_keys", "total"),
    );
    md += &format!(
        "| end to end at 80% of that ({} s at {:.0} events/s offered) | {:.0} events/s stored, lag p99 {:.2} s, max {:.2} s ({} samples, at most one every {} ms), peak RSS {:.0} MB | | lag p99 < 2 s |\n",
        args.e2e_seconds / 2,
        f(&sustained, "send_events_per_second"),
        f(&sustained, "events_per_second"),
        f(&sustained, "lag_p99_seconds"),
        f(&sustained, "lag_max_seconds"),
        f(&sustained, "lag_samples"),
        LAG_SAMPLE_EVERY.as_millis(),
        f(&sustained, "peak_rss_mb"),
    );
    md += &format!(
        "| overload (batches as fast as possible, stream cap {} events) | {} requests refused with 503 of {}; longest raw partition {} events at the end ({} entries at most), enriched {} records at the end ({} entries at most); RSS {:.0} MB at start, {:.0} MB at end, peak {:.0} MB in the first half, {:.0} MB in the second | | stay under the cap, 503 not memory |\n",
        overload["stream_cap"],
        overload["rejected_requests"],
        overload["accepted_requests"].as_u64().unwrap_or(0)
            + overload["rejected_requests"].as_u64().unwrap_or(0),
        overload["max_partition_events_at_end"],
        overload["max_partition_length"],
        overload["max_enriched_partition_records_at_end"],
        overload["max_enriched_partition_length"],
        f(&overload, "rss_first_mb"),
        f(&overload, "rss_last_mb"),
        f(&overload, "rss_max_first_half_mb"),
        f(&overload, "rss_max_second_half_mb")
    );
    // The earlier binary's figures of the same case, when measured.
    let before = |case: &str| -> String {
        let found = if case.is_empty() {
            Some(&insights_before["overview_at_once"]).filter(|o| !o.is_null())
        } else {
            insights_before["questions"]
                .as_array()
                .and_then(|qs| qs.iter().find(|q| q["case"] == case))
        };
        found
            .map(|q| {
                format!(
                    "before: p50 {:.0} ms, p95 {:.0} ms",
                    f(q, "p50_ms"),
                    f(q, "p95_ms")
                )
            })
            .unwrap_or_default()
    };
    if let Some(questions) = insights["questions"].as_array() {
        for q in questions {
            let case = q["case"].as_str().unwrap_or("");
            md += &format!(
                "| insights, {} events: {case} | p50 {:.0} ms, p95 {:.0} ms | {} | p95 ≤ 1 s |\n",
                insights["events"],
                f(q, "p50_ms"),
                f(q, "p95_ms"),
                before(case),
            );
        }
        let o = &insights["overview_at_once"];
        md += &format!(
            "| insights: a dashboard overview's {} questions at once | p50 {:.0} ms, p95 {:.0} ms | {} | all within 2 s |\n",
            o["questions"],
            f(o, "p50_ms"),
            f(o, "p95_ms"),
            before(""),
        );
    }
    for m in &matrix {
        let r = &m["result"];
        md += &format!(
            "| end to end, {} partitions, {}x payload | {:.0} events/s; CPU per stored event: pipeline {:.1} µs, Redis {:.1} µs, ClickHouse {:.1} µs | total {:.1}× the bare ceiling's CPU per row | |\n",
            m["partitions"],
            m["payload"],
            f(r, "events_per_second"),
            f(&r["cpu_per_stored_event"], "pipeline_us"),
            f(&r["cpu_per_stored_event"], "redis_us"),
            f(&r["cpu_per_stored_event"], "clickhouse_us"),
            f(&r["cpu_per_stored_event"], "total_us") / bare_us,
        );
    }
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("latest.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.out.join("latest.md"), &md)?;
    println!("{md}");
    for base in [
        format!("{scratch}_bare"),
        format!("{scratch}_stored"),
        scratch,
    ] {
        for run in 0..3 {
            clickhouse_query(
                &args.clickhouse_url,
                "default",
                &format!("DROP DATABASE IF EXISTS {base}_{run}"),
            )?;
        }
    }
    Ok(())
}
