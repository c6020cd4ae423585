//! Group commit of raw events to Redis, and backpressure.
//!
//! Requests hand their entries to one collector task through a bounded
//! queue; the collector packs whatever has queued up into a single pipeline
//! of `XADD`s, so concurrent requests share one round trip. A request is
//! answered only after Redis replied to the pipeline holding its entries.
//! When the queue is full, or a partition is longer than its cap, the
//! request is refused with 503 instead of buffering in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use analytics_streams::Conn;
use analytics_streams::{
    PAYLOAD_FIELD, SlotCommands, StreamError, Topic, query_by_slot, stream_key,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Entries per pipeline; more queue up for the next one.
const MAX_PIPELINE_ENTRIES: usize = 400;
/// Pipelines in flight at once on the shared connection.
const MAX_IN_FLIGHT: usize = 4;

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

struct Job {
    entries: Vec<(u16, Vec<u8>)>,
    done: oneshot::Sender<Result<(), Arc<StreamError>>>,
}

/// Handle used by request handlers; cheap to share.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Estimated length of each raw partition: its last `XLEN` plus what
    /// was admitted since. A request is admitted only while its entries fit
    /// under the cap, so a partition outgrows it only by what was in
    /// flight when the length was last read.
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
        let lengths: Arc<[AtomicU64]> = (0..partitions).map(|_| AtomicU64::new(0)).collect();
        let keys: Arc<[String]> = (0..partitions)
            .map(|p| stream_key(&prefix, Topic::Raw, p))
            .collect();
        tokio::spawn(monitor_lengths(
            conn.clone(),
            keys.clone(),
            lengths.clone(),
            shutdown,
        ));
        let collector = tokio::spawn(collect(conn, keys, rx));
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

async fn collect(conn: Conn, keys: Arc<[String]>, mut rx: mpsc::Receiver<Job>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut count = jobs[0].entries.len();
        while count < MAX_PIPELINE_ENTRIES {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.entries.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let mut conn = conn.clone();
        let keys = keys.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut commands = SlotCommands::new(&conn);
            for job in &jobs {
                for (partition, payload) in &job.entries {
                    let key = &keys[usize::from(*partition)];
                    let mut xadd = redis::cmd("XADD");
                    xadd.arg(key).arg("*").arg(PAYLOAD_FIELD).arg(payload);
                    commands.push(key, xadd);
                }
            }
            let started = Instant::now();
            let result = query_by_slot(&mut conn, commands).await.map(drop);
            metrics::histogram!("analytics_edge_xadd_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("analytics_edge_xadd_batch_entries").record(count as f64);
            let result = result.map_err(|e| Arc::new(StreamError::from(e)));
            for job in jobs {
                let _ = job.done.send(result.clone());
            }
        });
    }
    // Wait for pipelines still in flight before reporting the writer done.
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
}

/// Re-reads the partitions' real lengths (consumers trim them) every 200 ms.
async fn monitor_lengths(
    mut conn: Conn,
    keys: Arc<[String]>,
    estimates: Arc<[AtomicU64]>,
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
                    estimates[p].store(len, Ordering::Relaxed);
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
