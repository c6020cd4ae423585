//! Drives an HTTP endpoint over many keep-alive connections (hyper's
//! client), as fast as possible or at a fixed rate, and records every
//! answer's status and latency.
//!
//! At a fixed rate the requests form one schedule, the k-th due at k/rate
//! after the start, and whichever connection is free takes the next one:
//! independent clients do not queue behind each other's answers the way
//! requests pinned to one connection would. A request no connection is
//! free for waits, and its latency still counts from when it was due.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;

use crate::events::{Rng, device, event, ip, user_agent};

/// What to send.
#[derive(Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub connections: usize,
    pub duration: Duration,
    /// Requests per second over all connections; `None` sends as fast as answers come.
    pub rate: Option<f64>,
    /// Events per request: 1 posts an envelope, more post a JSON array.
    pub batch: usize,
    pub size_factor: usize,
    pub devices: u64,
    pub seed: u64,
}

/// What came back.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub requests: u64,
    pub accepted_requests: u64,
    pub rejected_requests: u64,
    pub failed_requests: u64,
    pub events_accepted: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub events_per_second: f64,
    pub latency_ms: Latency,
    /// Under a fixed rate: how late requests left the generator, and the
    /// share of them that no connection was free for when they were due
    /// (the rest are late by the generator's own timers and threads).
    pub send_delay_ms: Option<SendDelay>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SendDelay {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub no_free_connection_percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Microseconds from 1 µs to a minute, three significant digits: every
/// histogram of a run, so that the connections' tallies add up.
fn micros() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

struct Tally {
    histogram: Histogram<u64>,
    delays: Histogram<u64>,
    no_free_connection: u64,
    accepted: u64,
    rejected: u64,
    failed: u64,
}

/// The fixed-rate schedule all connections share.
struct Schedule {
    start: Instant,
    end: Duration,
    nanos_apart: f64,
    taken: AtomicU64,
}

impl Schedule {
    /// When the next request not yet taken by a connection is due, if it
    /// is due within the run.
    fn take(&self) -> Option<Instant> {
        let k = self.taken.fetch_add(1, Ordering::Relaxed);
        let due = Duration::from_nanos((k as f64 * self.nanos_apart) as u64);
        (due < self.end).then(|| self.start + due)
    }
}

/// The body of one request of `device`: its events waiting to be sent.
fn body(rng: &mut Rng, plan: &Plan, device: u64) -> Bytes {
    let now = unix_ms();
    let value = if plan.batch <= 1 {
        event(rng, device, plan.size_factor, now)
    } else {
        Value::Array(
            (0..plan.batch)
                .map(|_| event(rng, device, plan.size_factor, now))
                .collect(),
        )
    };
    Bytes::from(value.to_string())
}

/// The wall clock in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A keep-alive HTTP/1 connection to `addr`, its driver spawned.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A POST of `body` to the plan's path on behalf of `device`: its browser,
/// its address and the plan's credentials.
pub fn request(plan: &Plan, device: u64, body: Bytes) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut request = Request::post(plan.path.as_str())
        .header("host", plan.addr.to_string())
        .header("content-type", "application/json")
        .header("user-agent", user_agent(device))
        .header("x-forwarded-for", ip(device));
    for (k, v) in &plan.headers {
        request = request.header(k, v);
    }
    Ok(request.body(Full::new(body))?)
}

async fn connection(
    plan: Arc<Plan>,
    schedule: Option<Arc<Schedule>>,
    index: usize,
    start: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally {
        histogram: micros()?,
        delays: micros()?,
        no_free_connection: 0,
        accepted: 0,
        rejected: 0,
        failed: 0,
    };
    let mut rng = Rng::new(plan.seed.wrapping_add(index as u64 * 7_919));
    let mut sender = connect(plan.addr).await?;
    loop {
        let device = device(&mut rng, plan.devices);
        let request = request(&plan, device, body(&mut rng, &plan, device))?;
        let due = match &schedule {
            Some(schedule) => match schedule.take() {
                Some(due) => {
                    if Instant::now() > due {
                        tally.no_free_connection += 1;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    Some(due)
                }
                None => break,
            },
            None if start.elapsed() < plan.duration => None,
            None => break,
        };
        if sender.ready().await.is_err() {
            tally.failed += 1;
            break;
        }
        // Latency counts from when the request was due under a fixed rate,
        // so a slow server cannot hide queueing (no coordinated omission).
        let sent = match due {
            Some(due) => {
                let delay = Instant::now().saturating_duration_since(due);
                let _ = tally.delays.record((delay.as_micros() as u64).max(1));
                due
            }
            None => Instant::now(),
        };
        match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                let _ = response.into_body().collect().await;
                let micros = sent.elapsed().as_micros() as u64;
                let _ = tally.histogram.record(micros.max(1));
                if status.is_success() {
                    tally.accepted += 1;
                } else {
                    tally.rejected += 1;
                }
            }
            Err(_) => {
                tally.failed += 1;
                break;
            }
        }
    }
    Ok(tally)
}

/// Runs the plan and summarises it.
pub async fn run(plan: Plan) -> anyhow::Result<Outcome> {
    let plan = Arc::new(plan);
    let start = Instant::now();
    let schedule = plan.rate.map(|rate| {
        Arc::new(Schedule {
            start,
            end: plan.duration,
            nanos_apart: 1e9 / rate,
            taken: AtomicU64::new(0),
        })
    });
    let tasks: Vec<_> = (0..plan.connections)
        .map(|i| tokio::spawn(connection(plan.clone(), schedule.clone(), i, start)))
        .collect();
    let mut histogram = micros()?;
    let mut delays = micros()?;
    let (mut accepted, mut rejected, mut failed, mut no_free_connection) = (0, 0, 0, 0);
    for task in tasks {
        let tally = task.await??;
        histogram.add(&tally.histogram)?;
        delays.add(&tally.delays)?;
        no_free_connection += tally.no_free_connection;
        accepted += tally.accepted;
        rejected += tally.rejected;
        failed += tally.failed;
    }
    let seconds = start.elapsed().as_secs_f64();
    let requests = accepted + rejected + failed;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(Outcome {
        requests,
        accepted_requests: accepted,
        rejected_requests: rejected,
        failed_requests: failed,
        events_accepted: accepted * plan.batch.max(1) as u64,
        seconds,
        requests_per_second: requests as f64 / seconds,
        events_per_second: (accepted * plan.batch.max(1) as u64) as f64 / seconds,
        latency_ms: Latency {
            p50: ms(&histogram, 0.5),
            p90: ms(&histogram, 0.9),
            p99: ms(&histogram, 0.99),
            p999: ms(&histogram, 0.999),
            max: histogram.max() as f64 / 1000.0,
        },
        send_delay_ms: (!delays.is_empty()).then(|| SendDelay {
            p50: ms(&delays, 0.5),
            p99: ms(&delays, 0.99),
            max: delays.max() as f64 / 1000.0,
            no_free_connection_percent: no_free_connection as f64 * 100.0 / delays.len() as f64,
        }),
    })
}
