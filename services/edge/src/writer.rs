//! Group commit of raw events to Redis, and backpressure.
//!
//! Requests hand their events to one collector task through a bounded
//! queue; the collector packs whatever has queued up into bundles (up to
//! [`MAX_BUNDLE_EVENTS`] events of one partition per stream entry) and
//! writes them in a single pipeline of `XADD`s, so concurrent requests
//! share one round trip and Redis stores one entry per bundle. Before it
//! cuts a pipeline, the collector lets the requests its thread already has
//! in hand add their events (see [`gather`]). A request is answered only
//! after Redis replied to the pipeline holding its events.
//! When the queue is full, or a partition is longer than its cap, the
//! request is refused with 503 instead of buffering in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use analytics_event::push_raw_event;
use analytics_http::ApiError;
use analytics_streams::payload::compress;
use analytics_streams::{Appended, Conn};
use analytics_streams::{
    COMPRESSED_FIELD, MAX_BUNDLE_BYTES, MAX_BUNDLE_EVENTS, SlotCommands, StreamError, Topic,
    query_by_slot, stream_key,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Events per pipeline; more queue up for the next one.
const MAX_PIPELINE_EVENTS: usize = 2_000;
/// Pipelines in flight at once on the shared connection.
const MAX_IN_FLIGHT: usize = 4;
/// Scheduler rounds a pipeline waits for while each brings more events.
const MAX_GATHER_ROUNDS: usize = 8;

/// Why entries were not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("partition over its length cap")]
    OverCap,
    #[error("too many writes waiting")]
    Saturated,
    #[error("redis write failed: {0}")]
    Redis(#[source] Arc<StreamError>),
}

/// Every write failure is worth a retry: the partition drains, the
/// queue empties, Redis comes back.
impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> ApiError {
        let reason = match error {
            WriteError::OverCap => "ingest queue is full, retry later",
            WriteError::Saturated => "server is busy, retry later",
            WriteError::Redis(e) => {
                tracing::warn!(error = %e, "raw stream write failed");
                "event queue unavailable, retry later"
            }
        };
        ApiError::Unavailable { reason }
    }
}

struct Job {
    entries: Vec<(u16, Vec<u8>)>,
    done: oneshot::Sender<Result<(), Arc<StreamError>>>,
}

/// Handle used by request handlers; cheap to share.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Estimated events on each raw partition: its last `XLEN` times the
    /// events per entry written so far, plus what was admitted since. A
    /// request is admitted only while its events fit under the cap, so a
    /// partition outgrows it only by what was in flight when the length was
    /// last read.
    lengths: Arc<[AtomicU64]>,
    max_len: u64,
}

impl Writer {
    /// Starts the collector and the stream-length monitor.
    pub fn start(
        conn: Conn,
        prefix: String,
        partitions: u16,
        max_stream_len: u64,
        max_pending: usize,
        shutdown: CancellationToken,
    ) -> (Writer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(max_pending.max(1));
        let counters = |_| AtomicU64::new(0);
        let lengths: Arc<[AtomicU64]> = (0..partitions).map(counters).collect();
        let written: Arc<[Appended]> = (0..partitions).map(|_| Appended::default()).collect();
        let keys: Arc<[String]> = (0..partitions)
            .map(|p| stream_key(&prefix, Topic::Raw, p))
            .collect();
        tokio::spawn(monitor_lengths(
            conn.clone(),
            keys.clone(),
            lengths.clone(),
            written.clone(),
            shutdown,
        ));
        let collector = tokio::spawn(collect(conn, keys, written, rx));
        let writer = Writer {
            jobs: tx,
            lengths,
            max_len: max_stream_len,
        };
        (writer, collector)
    }

    /// Counts `entries` against their partitions' caps and returns the
    /// count per partition; `None` (and nothing counted) when one would go
    /// over.
    fn admit(&self, entries: &[(u16, Vec<u8>)]) -> Option<Vec<u64>> {
        let mut per_partition = vec![0u64; self.lengths.len()];
        for (p, _) in entries {
            per_partition[usize::from(*p)] += 1;
        }
        for (p, &n) in per_partition.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let before = self.lengths[p].fetch_add(n, Ordering::Relaxed);
            if before + n > self.max_len {
                self.release(&per_partition[..=p]);
                return None;
            }
        }
        Some(per_partition)
    }

    /// Takes back admitted counts (`counts[p]` for partition `p`).
    fn release(&self, counts: &[u64]) {
        for (p, &n) in counts.iter().enumerate() {
            if n > 0 {
                let _ = self.lengths[p].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                    Some(l.saturating_sub(n))
                });
            }
        }
    }

    /// Writes `entries` (partition, payload) and waits for Redis to confirm.
    pub async fn write(&self, entries: Vec<(u16, Vec<u8>)>) -> Result<(), WriteError> {
        let Some(counts) = self.admit(&entries) else {
            return Err(WriteError::OverCap);
        };
        let (done, confirmed) = oneshot::channel();
        if self.jobs.try_send(Job { entries, done }).is_err() {
            self.release(&counts);
            return Err(WriteError::Saturated);
        }
        match confirmed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.release(&counts);
                Err(WriteError::Redis(e))
            }
            // The collector is gone (shutting down): nothing was written.
            Err(_) => {
                self.release(&counts);
                Err(WriteError::Saturated)
            }
        }
    }
}

/// Packs the jobs' events into bundles: per partition, events after
/// their lengths ([`push_raw_event`]), at most [`MAX_BUNDLE_EVENTS`] or [`MAX_BUNDLE_BYTES`] each.
/// Returns (partition, events, payload) per bundle.
fn bundle(jobs: &[Job], partitions: usize) -> Vec<(usize, usize, Vec<u8>)> {
    let mut open: Vec<(usize, Vec<u8>)> = (0..partitions).map(|_| (0, Vec::new())).collect();
    let mut bundles = Vec::new();
    for (partition, payload) in jobs.iter().flat_map(|job| &job.entries) {
        let p = usize::from(*partition);
        let (events, buf) = &mut open[p];
        push_raw_event(buf, payload);
        *events += 1;
        if *events >= MAX_BUNDLE_EVENTS || buf.len() >= MAX_BUNDLE_BYTES {
            bundles.push((p, std::mem::take(events), std::mem::take(buf)));
        }
    }
    for (p, (events, buf)) in open.into_iter().enumerate() {
        if events > 0 {
            bundles.push((p, events, buf));
        }
    }
    bundles
}

async fn collect(
    conn: Conn,
    keys: Arc<[String]>,
    written: Arc<[Appended]>,
    mut rx: mpsc::Receiver<Job>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // What arrives while every pipeline slot is taken joins this one.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let jobs = gather(first, &mut rx).await;
        let mut conn = conn.clone();
        let keys = keys.clone();
        let written = written.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let bundles = bundle(&jobs, keys.len());
            let mut commands = SlotCommands::new(&conn);
            for (partition, _, payload) in &bundles {
                let key = &keys[*partition];
                let mut xadd = redis::cmd("XADD");
                xadd.arg(key)
                    .arg("*")
                    .arg(COMPRESSED_FIELD)
                    .arg(compress(payload));
                commands.push(key, xadd);
            }
            let started = Instant::now();
            let result = query_by_slot(&mut conn, commands).await.map(drop);
            metrics::histogram!("analytics_edge_xadd_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("analytics_edge_xadd_batch_entries").record(bundles.len() as f64);
            if result.is_ok() {
                for (partition, events, _) in &bundles {
                    written[*partition].add(*events as u64, 1);
                }
            }
            let result = result.map_err(|e| Arc::new(StreamError::from(e)));
            for job in jobs {
                let _ = job.done.send(result.clone());
            }
        });
    }
    // Wait for pipelines still in flight before reporting the writer done.
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
}

/// Takes queued jobs after `first` until they hold [`MAX_PIPELINE_EVENTS`]
/// events; while the queue keeps growing, first yields to the tasks that
/// are ready on this thread (requests already read, whose events are on
/// their way), round after round until one adds nothing, at most
/// [`MAX_GATHER_ROUNDS`].
///
/// Every pipeline costs a write, a read and a wake-up on both sides, and
/// under load Redis answers quickly enough that, cut at once, a pipeline
/// held a handful of requests. A quiet edge pays one round (a pass over
/// an empty run queue), a busy one sends fewer, larger pipelines.
async fn gather(first: Job, rx: &mut mpsc::Receiver<Job>) -> Vec<Job> {
    let mut events = first.entries.len();
    let mut jobs = vec![first];
    for round in 0..=MAX_GATHER_ROUNDS {
        let before = jobs.len();
        while events < MAX_PIPELINE_EVENTS {
            let Ok(job) = rx.try_recv() else { break };
            events += job.entries.len();
            jobs.push(job);
        }
        let added_nothing = round > 0 && jobs.len() == before;
        if events >= MAX_PIPELINE_EVENTS || added_nothing || round == MAX_GATHER_ROUNDS {
            break;
        }
        tokio::task::yield_now().await;
    }
    jobs
}

/// Re-reads the partitions' real lengths (consumers trim them) every 200 ms.
async fn monitor_lengths(
    mut conn: Conn,
    keys: Arc<[String]>,
    estimates: Arc<[AtomicU64]>,
    written: Arc<[Appended]>,
    shutdown: CancellationToken,
) {
    loop {
        let mut commands = SlotCommands::new(&conn);
        for key in keys.iter() {
            let mut xlen = redis::cmd("XLEN");
            xlen.arg(key);
            commands.push(key, xlen);
        }
        let read = query_by_slot(&mut conn, commands)
            .await
            .and_then(|replies| {
                redis::from_redis_value::<Vec<u64>>(redis::Value::Array(replies))
                    .map_err(Into::into)
            });
        match read {
            Ok(read) => {
                for (p, len) in read.into_iter().enumerate() {
                    let events = written[p].items_in(len).ceil() as u64;
                    estimates[p].store(events, Ordering::Relaxed);
                    metrics::gauge!("analytics_edge_stream_length_entries", "partition" => p.to_string())
                        .set(len as f64);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read stream lengths"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
