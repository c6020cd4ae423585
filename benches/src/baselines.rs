//! The ceilings of this machine, measured in the same run as the pipeline
//! so results can be given as ratios: an HTTP server that does nothing, raw
//! pipelined `XADD`s, and raw ClickHouse inserts of the same row type, into
//! the whole schema and into `events` alone. The bare storage ceiling is
//! the rows the pipeline stored in the end-to-end run, inserted again into
//! `events` alone.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use analytics_store::{EncodedEvent, EventRow, Store, StoreSettings};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::cpu::{Servers, settle_merges};
use crate::events::{Rng, device, event};

/// Starts a hyper server that reads each body and answers 202, on `addr`
/// (port 0: a free one); it runs until the process ends.
pub async fn plain_http_server(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                    *response.status_mut() = StatusCode::ACCEPTED;
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub items: u64,
    pub seconds: f64,
    pub per_second: f64,
}

/// Pipelined `XADD`s of event-sized payloads to a scratch stream from
/// `connections` connections, `pipeline` per round trip.
pub async fn xadd(
    redis_url: &str,
    key: &str,
    connections: usize,
    pipeline: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let client = redis::Client::open(redis_url)?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(c as u64 + 1);
            let payloads: Vec<String> = (0..pipeline)
                .map(|_| {
                    let device = device(&mut rng, 10_000);
                    event(&mut rng, device, 1, crate::load::unix_ms()).to_string()
                })
                .collect();
            let mut sent = 0u64;
            while start.elapsed() < duration {
                let mut pipe = redis::pipe();
                for payload in &payloads {
                    pipe.cmd("XADD")
                        .arg(&key)
                        .arg("*")
                        .arg("e")
                        .arg(payload)
                        .ignore();
                }
                pipe.query_async::<()>(&mut conn).await?;
                sent += pipeline as u64;
            }
            Ok::<u64, redis::RedisError>(sent)
        }));
    }
    let mut items = 0;
    for task in tasks {
        items += task.await??;
    }
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut client.get_multiplexed_async_connection().await?)
        .await?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(Throughput {
        items,
        seconds,
        per_second: items as f64 / seconds,
    })
}

/// A database of the benchmark's server, as the default user.
fn store(clickhouse_url: &str, database: &str) -> Store {
    Store::new(&StoreSettings {
        url: clickhouse_url.into(),
        database: database.into(),
        user: "default".into(),
        password: String::new(),
        cluster: None,
    })
}

/// The analytics schema in a scratch database of the benchmark's server.
async fn scratch_store(clickhouse_url: &str, database: &str) -> anyhow::Result<Store> {
    let store = store(clickhouse_url, database);
    store.migrate().await?;
    Ok(store)
}

/// Whether a storage baseline keeps the schema's materialized views. Since
/// migration 0010 the schema has none and both baselines insert into the
/// same tables; the pair stays to show what a view added would cost.
#[derive(Debug, Clone, Copy)]
pub enum Views {
    /// The whole schema: what the sink's inserts cost.
    Kept,
    /// `events` alone: the bare storage ceiling.
    Dropped,
}

/// Rows/s of a storage baseline and ClickHouse's CPU per row, the merges
/// the inserts caused included.
#[derive(Debug, Clone, Serialize)]
pub struct InsertCost {
    #[serde(flatten)]
    pub throughput: Throughput,
    pub clickhouse_cpu_us_per_row: f64,
}

/// `batch` rows of a constant, sparsely filled event (few columns set, one
/// event time): the cheapest rows the table can be given, kept to compare
/// with earlier runs, whose bare ceiling inserted a block of 10,000 of them
/// over and over.
pub fn constant_rows(batch: usize) -> anyhow::Result<Vec<EventRow>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as u32;
    Ok((0..batch)
        .map(|i| EventRow {
            id: format!("00000000-0000-7000-8000-{i:012}"),
            project_id: "baseline".into(),
            name: "screen_view".into(),
            device_id: format!("bench-device-{}", i % 10_000),
            session_id: format!("session-{}", i % 3_000),
            created_at: now,
            received_at: now,
            path: "/pricing".into(),
            origin: "https://shop.example".into(),
            referrer_type: "search".into(),
            referrer_name: "Google".into(),
            country: "KR".into(),
            browser: "Chrome".into(),
            os: "Windows".into(),
            device: "desktop".into(),
            properties: r#"{"plan":"pro","value":42}"#.into(),
            ..EventRow::default()
        })
        .collect())
}

/// The first `limit` rows the pipeline stored in `database`, in the order
/// they arrived: the generator's events as enriched and stored, which the
/// bare storage ceiling inserts again.
pub async fn stored_rows(
    clickhouse_url: &str,
    database: &str,
    limit: usize,
) -> anyhow::Result<Vec<EventRow>> {
    let rows = store(clickhouse_url, database)
        .client()
        .query("SELECT ?fields FROM events ORDER BY received_at, id LIMIT ?")
        .bind(limit as u64)
        .fetch_all::<EventRow>()
        .await?;
    anyhow::ensure!(!rows.is_empty(), "{database} holds no events to reinsert");
    Ok(rows)
}

/// Inserts `total` rows into a scratch database with or without the
/// schema's materialized views, in blocks of `batch` taken from `rows` in
/// turn (from the start again when they run out).
pub async fn clickhouse_insert(
    clickhouse_url: &str,
    database: &str,
    rows: &[EventRow],
    total: usize,
    batch: usize,
    views: Views,
    servers: &Servers,
) -> anyhow::Result<InsertCost> {
    let store = scratch_store(clickhouse_url, database).await?;
    if let Views::Dropped = views {
        let list = format!(
            "SELECT name FROM system.tables WHERE database = '{database}' AND engine = 'MaterializedView'"
        );
        for view in crate::clickhouse_query(clickhouse_url, "default", &list)?.lines() {
            crate::clickhouse_query(
                clickhouse_url,
                "default",
                &format!("DROP TABLE {database}.{view}"),
            )?;
        }
    }
    settle_merges(clickhouse_url).await;
    let cpu_before = servers.clickhouse_seconds();
    let start = Instant::now();
    let mut inserted = 0;
    for block in rows.chunks(batch).cycle() {
        if inserted >= total {
            break;
        }
        store.insert("events", block).await?;
        inserted += block.len();
    }
    let seconds = start.elapsed().as_secs_f64();
    settle_merges(clickhouse_url).await;
    let cpu = servers.clickhouse_seconds() - cpu_before;
    Ok(InsertCost {
        throughput: Throughput {
            items: inserted as u64,
            seconds,
            per_second: inserted as f64 / seconds,
        },
        clickhouse_cpu_us_per_row: cpu * 1e6 / inserted.max(1) as f64,
    })
}

/// What the sink's check of a redelivered batch costs beside the insert
/// of the same batch.
#[derive(Debug, Clone, Serialize)]
pub struct RedeliveryCheck {
    pub rows: usize,
    pub backdated: bool,
    /// Rows already in `events` around the batch (same project, same hour).
    pub stored_rows: usize,
    /// Best of five: inserting a batch of `rows` new events.
    pub insert_seconds: f64,
    /// Best of five: asking which of a stored batch's `rows` ids exist.
    pub check_seconds: f64,
    pub check_per_insert: f64,
}

/// Fills a scratch database with `stored` events, then times inserts of
/// `rows`-row batches against existence checks of such a batch's ids (as
/// a sink does for a redelivered batch). Live traffic: each batch holds
/// one second of event time after the one before. `backdated`: every batch
/// spreads over the same hour, as an import of old events does, so each
/// check scans that whole hour.
pub async fn redelivery_check(
    clickhouse_url: &str,
    database: &str,
    rows: usize,
    stored: usize,
    backdated: bool,
) -> anyhow::Result<RedeliveryCheck> {
    let store = scratch_store(clickhouse_url, database).await?;
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as u32
        - 7_200;
    let created_at = |n: usize, i: usize| -> u32 {
        if backdated {
            start + (i % 3_600) as u32
        } else {
            start + n as u32
        }
    };
    let batch = |n: usize| -> Vec<EventRow> {
        (0..rows)
            .map(|i| EventRow {
                id: format!("0194c3a2-{n:04}-7000-8000-{i:012}"),
                project_id: "redelivery".into(),
                name: "screen_view".into(),
                device_id: format!("device-{}", i % 2_000),
                session_id: format!("session-{n}-{}", i % 500),
                created_at: created_at(n, i),
                received_at: start + n as u32,
                properties: r#"{"plan":"pro"}"#.into(),
                ..EventRow::default()
            })
            .collect()
    };
    let mut n = 0;
    while n * rows < stored {
        store.insert("events", &batch(n)).await?;
        n += 1;
    }
    let mut insert_seconds = f64::MAX;
    let mut check_seconds = f64::MAX;
    for _ in 0..5 {
        // Encoded as the enricher encodes them, which is what the sink
        // inserts and checks.
        let fresh: Vec<EncodedEvent> = batch(n).iter().map(EncodedEvent::from).collect();
        n += 1;
        let start = Instant::now();
        store.insert("events", &fresh).await?;
        insert_seconds = insert_seconds.min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let found = store.existing_event_ids(&fresh).await?;
        check_seconds = check_seconds.min(start.elapsed().as_secs_f64());
        anyhow::ensure!(
            found.len() == rows,
            "the check found {} of {rows} stored rows",
            found.len()
        );
    }
    Ok(RedeliveryCheck {
        rows,
        backdated,
        stored_rows: n * rows,
        insert_seconds,
        check_seconds,
        check_per_insert: check_seconds / insert_seconds,
    })
}
