//! Liveness of a consumer stage's partition tasks: what `/readyz` of the
//! stage answers, and the `analytics_<stage>_partition_progress_age_seconds`
//! gauge that alerts watch.
//!
//! A task reports progress whenever it completes a step without leaving
//! work behind: a read (empty or not), a commit, a flush. A task that keeps
//! failing the same step (its output store is down, a batch cannot be
//! written) stops reporting, and once it has been silent for `stall_after`
//! the stage is not ready. An idle partition is not stalled: its empty
//! reads are progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared view of one stage's partition tasks; cheap to clone.
#[derive(Clone)]
pub struct StageHealth {
    inner: Arc<Inner>,
}

struct Inner {
    stage: &'static str,
    stall_after: Duration,
    epoch: Instant,
    partitions: Vec<Slot>,
}

#[derive(Default)]
struct Slot {
    running: AtomicBool,
    /// Milliseconds since `epoch` of the last progress.
    progressed_ms: AtomicU64,
}

impl StageHealth {
    /// `stage` names the metric (`analytics_<stage>_partition_…`).
    pub fn new(stage: &'static str, partitions: u16, stall_after: Duration) -> Self {
        StageHealth {
            inner: Arc::new(Inner {
                stage,
                stall_after,
                epoch: Instant::now(),
                partitions: (0..partitions).map(|_| Slot::default()).collect(),
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    /// Marks partition `p`'s task as running, with progress now; the
    /// returned guard reports progress and marks the task gone when
    /// dropped (also when the task panics).
    pub fn start(&self, p: u16) -> PartitionHealth {
        let slot = &self.inner.partitions[usize::from(p)];
        slot.progressed_ms.store(self.now_ms(), Ordering::Relaxed);
        slot.running.store(true, Ordering::Relaxed);
        PartitionHealth {
            health: self.clone(),
            partition: p,
        }
    }

    /// Time since partition `p` last made progress.
    fn progress_age(&self, p: u16) -> Duration {
        let slot = &self.inner.partitions[usize::from(p)];
        let at = slot.progressed_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(at))
    }

    /// `Ok` when every partition task runs and none has been silent for
    /// `stall_after`; otherwise which ones are not, for `/readyz`.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (p, slot) in self.inner.partitions.iter().enumerate() {
            let age = self.progress_age(p as u16);
            if !slot.running.load(Ordering::Relaxed) {
                problems.push(format!("partition {p}: task not running"));
            } else if age >= self.inner.stall_after {
                problems.push(format!(
                    "partition {p}: no progress for {:.1} s",
                    age.as_secs_f64()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{}: {}", self.inner.stage, problems.join("; ")))
        }
    }

    /// Sets the per-partition gauges; called before `/metrics` renders.
    pub fn export(&self) {
        let stage = self.inner.stage;
        for (p, slot) in self.inner.partitions.iter().enumerate() {
            let partition = p.to_string();
            metrics::gauge!(
                format!("analytics_{stage}_partition_progress_age_seconds"),
                "partition" => partition.clone()
            )
            .set(self.progress_age(p as u16).as_secs_f64());
            metrics::gauge!(
                format!("analytics_{stage}_running_tasks"),
                "partition" => partition
            )
            .set(if slot.running.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            });
        }
    }
}

/// One partition task's handle on the stage's health.
pub struct PartitionHealth {
    health: StageHealth,
    partition: u16,
}

impl PartitionHealth {
    pub fn partition(&self) -> u16 {
        self.partition
    }

    pub fn progressed(&self) {
        let slot = &self.health.inner.partitions[usize::from(self.partition)];
        slot.progressed_ms
            .store(self.health.now_ms(), Ordering::Relaxed);
    }
}

impl Drop for PartitionHealth {
    fn drop(&mut self) {
        self.health.inner.partitions[usize::from(self.partition)]
            .running
            .store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_ready_only_while_every_task_runs_and_progresses() {
        let health = StageHealth::new("sink", 2, Duration::from_millis(30));
        // Before its task starts, a partition is not running.
        assert!(
            health
                .check()
                .unwrap_err()
                .contains("partition 0: task not running")
        );
        let first = health.start(0);
        let second = health.start(1);
        assert_eq!(health.check(), Ok(()));
        std::thread::sleep(Duration::from_millis(40));
        first.progressed();
        let err = health.check().unwrap_err();
        assert!(
            err.starts_with("sink: partition 1: no progress for"),
            "{err}"
        );
        assert!(!err.contains("partition 0"), "{err}");
        second.progressed();
        assert_eq!(health.check(), Ok(()));
        drop(second);
        assert_eq!(
            health.check(),
            Err("sink: partition 1: task not running".into())
        );
    }

    #[test]
    fn a_panicking_task_is_seen_as_gone() {
        let health = StageHealth::new("enricher", 1, Duration::from_secs(60));
        let guard = health.start(0);
        let moved = std::thread::spawn(move || {
            let _guard = guard;
            panic!("boom");
        });
        assert!(moved.join().is_err());
        assert!(health.check().unwrap_err().contains("task not running"));
    }
}
