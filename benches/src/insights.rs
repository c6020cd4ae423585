//! Latency of the insights API over a stored dataset: `analytics up` on its
//! own database, `events` filled straight from ClickHouse's `numbers()`
//! (through whatever views the schema has), then each question asked in
//! turn, one request at a time, and a dashboard's overview asked all at
//! once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::{Pipeline, clickhouse_query};

/// 2026-01-01 00:00:00 UTC, the first day of the dataset.
const FIRST_DAY: u64 = 1_767_225_600;
/// Days the dataset spreads over (within January 2026).
const DAYS: u64 = 30;
const _: () = assert!(DAYS <= 31);
/// Events per session: four page views, a signup, a purchase.
const SESSION_EVENTS: u64 = 6;

/// The shape of a stored dataset.
#[derive(Debug, Clone, Copy)]
pub struct Dataset {
    pub events: u64,
    pub devices: u64,
}

/// Fills `events` with the dataset over [`DAYS`] days: sessions of
/// [`SESSION_EVENTS`] events close together in time, each of a device
/// among `devices`, over 40 pages, four countries and three browsers.
pub fn fill(p: &Pipeline, data: Dataset) -> Result<()> {
    let Dataset { events, devices } = data;
    let spread = DAYS * 86_400;
    let sql = format!(
        "INSERT INTO events (id, project_id, name, device_id, session_id, created_at, received_at, \
         path, origin, country, browser, os, device) \
         SELECT toString(number), '{project}', \
         multiIf(number % {SESSION_EVENTS} = 4, 'signup', number % {SESSION_EVENTS} = 5, 'purchase', 'screen_view'), \
         concat('d', toString(intDiv(number, {SESSION_EVENTS}) % {devices})), \
         concat('s', toString(intDiv(number, {SESSION_EVENTS}))), \
         toDateTime({FIRST_DAY} + intDiv(number * {spread}, {events}), 'UTC'), \
         toDateTime({FIRST_DAY} + intDiv(number * {spread}, {events}), 'UTC'), \
         concat('/page/', toString(intDiv(number, 7) % 40)), 'https://example.com', \
         arrayElement(['SE', 'DE', 'US', 'FR'], intDiv(number, {SESSION_EVENTS}) % 4 + 1), \
         arrayElement(['Chrome', 'Firefox', 'Safari'], intDiv(number, {SESSION_EVENTS}) % 3 + 1), \
         'Linux', 'desktop' \
         FROM numbers({events})",
        project = p.project,
    );
    clickhouse_query(&p.clickhouse_url, &p.database, &sql)?;
    let stored: u64 =
        clickhouse_query(&p.clickhouse_url, &p.database, "SELECT count() FROM events")?.parse()?;
    if stored != events {
        bail!("{stored} events stored of {events}");
    }
    Ok(())
}

/// One question: a name for the report and its path after the project.
struct Case {
    name: &'static str,
    path: String,
}

fn day(d: u64) -> String {
    format!("2026-01-{:02}", d + 1)
}

/// An endpoint over the whole dataset's range, in UTC, with `extra`
/// parameters.
fn ask(endpoint: &str, extra: &str) -> String {
    format!(
        "{endpoint}?startDate={}&endDate={}&timezone=UTC{extra}",
        day(0),
        day(DAYS - 1)
    )
}

fn questions() -> Vec<Case> {
    let case = |name, path| Case { name, path };
    vec![
        case("metrics", ask("metrics", "")),
        case("timeseries (day)", ask("timeseries", "&interval=day")),
        case("top pages", ask("top/pages", "")),
        case("top countries", ask("top/countries", "")),
        case(
            "funnel (3 steps)",
            ask("funnel", "&steps=screen_view,signup,purchase"),
        ),
        case("retention (week)", ask("retention", "&period=week")),
    ]
}

/// What a dashboard's overview asks when it opens.
fn overview() -> Vec<String> {
    let mut paths = vec![
        ask("metrics", ""),
        ask("timeseries", "&interval=day"),
        "live".to_owned(),
    ];
    for dimension in [
        "pages",
        "referrers",
        "countries",
        "browsers",
        "os",
        "devices",
    ] {
        paths.push(ask(&format!("top/{dimension}"), ""));
    }
    paths
}

fn percentiles(mut millis: Vec<f64>) -> Value {
    millis.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((millis.len() as f64 * q).ceil() as usize).clamp(1, millis.len()) - 1;
        (millis[i] * 10.0).round() / 10.0
    };
    json!({"p50_ms": at(0.5), "p95_ms": at(0.95), "max_ms": at(1.0), "requests": millis.len()})
}

/// Asks every question `requests` times after one warm-up request, then
/// the overview's questions all at once `requests` times; milliseconds per
/// case (p50, p95, max), with each question's first answer.
pub async fn measure(p: &Pipeline, requests: usize) -> Result<Value> {
    let reader = Reader {
        addr: p.addr,
        id: p.read_id.clone(),
        secret: p.read_secret.clone(),
    };
    let mut cases = Vec::new();
    for case in questions() {
        let path = format!("/insights/{}/{}", p.project, case.path);
        let first = reader.get(&path).await?;
        let mut millis = Vec::with_capacity(requests);
        for _ in 0..requests {
            let started = Instant::now();
            reader.get(&path).await?;
            millis.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let mut row = percentiles(millis);
        row["case"] = json!(case.name);
        row["answer"] = first;
        cases.push(row);
    }
    let mut millis = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let mut asks = tokio::task::JoinSet::new();
        for path in overview() {
            let (reader, path) = (reader.clone(), format!("/insights/{}/{path}", p.project));
            asks.spawn(async move { reader.get(&path).await });
        }
        while let Some(answer) = asks.join_next().await {
            answer??;
        }
        millis.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mut overview_row = percentiles(millis);
    overview_row["questions"] = json!(overview().len());
    Ok(json!({"questions": cases, "overview_at_once": overview_row}))
}

/// The pipeline's read client.
#[derive(Clone)]
struct Reader {
    addr: SocketAddr,
    id: String,
    secret: String,
}

impl Reader {
    async fn get(&self, path: &str) -> Result<Value> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let request = Request::get(path)
            .header("host", self.addr.to_string())
            .header("openpanel-client-id", &self.id)
            .header("openpanel-client-secret", &self.secret)
            .body(Empty::<Bytes>::new())?;
        let response =
            tokio::time::timeout(Duration::from_secs(60), sender.send_request(request)).await??;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{path}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }
}
