//! Telemetry shared by every stage: the Prometheus recorder behind the
//! `metrics` facade, log set-up, and the text served at `/metrics`.
//!
//! Metric names follow `analytics_<stage>_<thing>_<unit>`; every stage
//! registers its own through the `metrics` macros.

mod catalogue;

pub use catalogue::{Kind, METRICS};

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets for latencies in seconds, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the process-wide recorder once and returns its handle; later
/// calls return the same handle (tests start several stages in one process).
pub fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (by an embedding
            // program); then this handle simply renders nothing.
            if metrics::set_global_recorder(recorder).is_ok() {
                catalogue::describe_all();
            }
            handle
        })
        .clone()
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`]
/// until `shutdown`. The recorder keeps each sample until then: without
/// this, a process nobody scrapes holds every sample it recorded, and the
/// first scrape after a quiet spell pays for all of them at once.
pub async fn keep_metrics(shutdown: CancellationToken) {
    let handle = metrics_handle();
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => handle.run_upkeep(),
            () = shutdown.cancelled() => return,
        }
    }
}

/// Logs to stderr, filtered by `filter` (a `RUST_LOG`-style directive).
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
