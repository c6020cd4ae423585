//! Latency of the insights API over a stored dataset: `analytics up` on its
//! own database, `events` (and through the materialized views, the hourly
//! aggregates) filled straight from ClickHouse's `numbers()`, then each
//! question asked in turn, one request at a time.

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
/// Days the dataset spreads over.
const DAYS: u64 = 28;

/// Fills `events` with `count` events over [`DAYS`] days: 50,000 devices,
/// sessions of 20 events, mostly screen views, a few countries and pages.
pub fn fill(p: &Pipeline, count: u64) -> Result<()> {
    let spread = DAYS * 86_400;
    let sql = format!(
        "INSERT INTO events (id, project_id, name, device_id, session_id, created_at, received_at, \
         path, origin, country, browser, os, device) \
         SELECT toString(number), '{project}', \
         if(number % 5 = 0, 'signup', 'screen_view'), \
         concat('d', toString(number % 50000)), concat('s', toString(intDiv(number, 20))), \
         toDateTime({FIRST_DAY} + intDiv(number * {spread}, {count}), 'UTC'), \
         toDateTime({FIRST_DAY} + intDiv(number * {spread}, {count}), 'UTC'), \
         concat('/page/', toString(number % 40)), 'https://example.com', \
         arrayElement(['SE', 'DE', 'US', 'FR'], number % 4 + 1), \
         arrayElement(['Chrome', 'Firefox', 'Safari'], number % 3 + 1), 'Linux', 'desktop' \
         FROM numbers({count})",
        project = p.project,
    );
    clickhouse_query(&p.clickhouse_url, &p.database, &sql)?;
    let stored: u64 =
        clickhouse_query(&p.clickhouse_url, &p.database, "SELECT count() FROM events")?.parse()?;
    if stored != count {
        bail!("{stored} events stored of {count}");
    }
    Ok(())
}

/// One question: a name for the report and the query string of `metrics`.
struct Case {
    name: &'static str,
    query: String,
}

fn cases() -> Vec<Case> {
    // The dataset lies within January 2026.
    const _: () = assert!(DAYS <= 31);
    let day = |d: u64| format!("2026-01-{:02}", d + 1);
    let range = format!("startDate={}&endDate={}", day(DAYS / 2), day(DAYS - 1));
    let filter = percent(&json!([{"key": "country", "operator": "eq", "value": "SE"}]).to_string());
    vec![
        Case {
            name: "metrics, 14 days UTC (hourly aggregates)",
            query: format!("{range}&timezone=UTC"),
        },
        Case {
            name: "metrics, 14 days Asia/Kolkata (raw events)",
            query: format!("{range}&timezone=Asia/Kolkata"),
        },
        Case {
            name: "metrics, 14 days UTC, country filter (raw events)",
            query: format!("{range}&timezone=UTC&filters={filter}"),
        },
    ]
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Asks every case `requests` times after one warm-up request, and
/// reports milliseconds per case (p50, p95, max) with the first answer.
pub async fn measure(p: &Pipeline, requests: usize) -> Result<Value> {
    let mut out = Vec::new();
    for case in cases() {
        let path = format!("/insights/{}/metrics?{}", p.project, case.query);
        let first = get(p.addr, p, &path).await?;
        let mut millis = Vec::with_capacity(requests);
        for _ in 0..requests {
            let started = Instant::now();
            get(p.addr, p, &path).await?;
            millis.push(started.elapsed().as_secs_f64() * 1e3);
        }
        millis.sort_by(f64::total_cmp);
        let at =
            |q: f64| millis[((millis.len() as f64 * q).ceil() as usize).clamp(1, millis.len()) - 1];
        out.push(json!({
            "case": case.name,
            "requests": requests,
            "p50_ms": (at(0.5) * 10.0).round() / 10.0,
            "p95_ms": (at(0.95) * 10.0).round() / 10.0,
            "max_ms": (at(1.0) * 10.0).round() / 10.0,
            "answer": first,
        }));
    }
    Ok(Value::Array(out))
}

async fn get(addr: SocketAddr, p: &Pipeline, path: &str) -> Result<Value> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = Request::get(path)
        .header("host", addr.to_string())
        .header("openpanel-client-id", &p.read_id)
        .header("openpanel-client-secret", &p.read_secret)
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
