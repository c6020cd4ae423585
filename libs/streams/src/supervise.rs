//! Supervision of a consumer stage's partition tasks: a task that panics
//! or returns while the stage should still run stops the stage. Its
//! siblings are told to stop and drain their in-flight batches, and the
//! stage reports which partition failed and why, so the process can exit
//! non-zero and be restarted by whatever runs it.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Why a stage stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum TaskFailure {
    #[error("partition {partition} task panicked: {message}")]
    Panicked { partition: u16, message: String },
    #[error("partition {partition} task was cancelled")]
    Cancelled { partition: u16 },
    #[error("partition {partition} task stopped before shutdown")]
    Stopped { partition: u16 },
}

/// Runs the partition tasks until `stop` is cancelled and all of them have
/// finished. Every task must return once `stop` is cancelled. When one ends
/// first, `stop` is cancelled for the others, they are awaited, and the
/// first failure is returned.
pub async fn supervise<F>(
    tasks: impl IntoIterator<Item = (u16, F)>,
    stop: &CancellationToken,
) -> Result<(), TaskFailure>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut partitions = HashMap::new();
    for (partition, task) in tasks {
        let handle = set.spawn(task);
        partitions.insert(handle.id(), partition);
    }
    let mut failure = None;
    while let Some(done) = set.join_next_with_id().await {
        let found = match done {
            Ok((id, ())) if !stop.is_cancelled() => Some(TaskFailure::Stopped {
                partition: partitions[&id],
            }),
            Ok(_) => None,
            Err(e) => {
                let partition = partitions[&e.id()];
                Some(if e.is_panic() {
                    TaskFailure::Panicked {
                        partition,
                        message: panic_message(e.into_panic()),
                    }
                } else {
                    TaskFailure::Cancelled { partition }
                })
            }
        };
        if let Some(found) = found {
            tracing::error!(error = %found, "stopping the stage: draining the other partitions");
            stop.cancel();
            failure.get_or_insert(found);
        }
    }
    failure.map_or(Ok(()), Err)
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "(no message)".into(), |m| (*m).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

    /// A task that runs until told to stop, then records that it drained.
    async fn steady(stop: CancellationToken, drained: Arc<AtomicBool>) {
        stop.cancelled().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        drained.store(true, Ordering::SeqCst);
    }

    #[tokio::test]
    async fn a_panic_stops_the_stage_after_the_others_drained() {
        let stop = CancellationToken::new();
        let drained = Arc::new(AtomicBool::new(false));
        let failing = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            panic!("batch exploded");
        };
        let tasks: Vec<(u16, Task)> = vec![
            (0, Box::pin(steady(stop.clone(), drained.clone()))),
            (1, Box::pin(failing)),
        ];
        let result = supervise(tasks, &stop).await;
        match result {
            Err(TaskFailure::Panicked { partition, message }) => {
                assert_eq!(partition, 1);
                assert_eq!(message, "batch exploded");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(stop.is_cancelled());
        assert!(drained.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_task_that_returns_early_is_a_failure() {
        let stop = CancellationToken::new();
        let drained = Arc::new(AtomicBool::new(false));
        let tasks: Vec<(u16, Task)> = vec![
            (3, Box::pin(async {})),
            (4, Box::pin(steady(stop.clone(), drained.clone()))),
        ];
        let err = supervise(tasks, &stop).await.unwrap_err();
        assert_eq!(err.to_string(), "partition 3 task stopped before shutdown");
        assert!(drained.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_requested_stop_is_no_failure() {
        let stop = CancellationToken::new();
        let drained = Arc::new(AtomicBool::new(false));
        let tasks = vec![(0, steady(stop.clone(), drained.clone()))];
        let trigger = stop.clone();
        tokio::spawn(async move { trigger.cancel() });
        supervise(tasks, &stop).await.unwrap();
        assert!(drained.load(Ordering::SeqCst));
    }
}
