//! The sink stage: consumer group `sink` on the enriched stream, writing
//! batches to ClickHouse.
//!
//! Wire format in: bundles of frames (`analytics_store::decode_frames`;
//! `events` rows already in RowBinary, forwarded into the INSERT as they
//! are, or JSON lines from older enrichers and replayed dead letters); out:
//! RowBinary inserts into `events`, `profiles` and `profile_aliases`. A
//! partition's batch is flushed when it holds `max_rows` rows or its
//! oldest row is `max_age` old; the flushes of all partitions that meet in
//! time share one INSERT per table
//! (`analytics_store::CombinedInserts`), each still acknowledged on its own.
//!
//! Guarantee: entries are acknowledged only after ClickHouse accepted their
//! rows. While ClickHouse is down the batch is retried with backoff and its
//! entries stay pending (their idle time is refreshed so no other sink
//! claims them). A batch that may already be stored (redelivered after a
//! crash, or retried after an insert whose outcome is unknown) is checked
//! against the stored ids first, so it is not counted twice. Rows that
//! ClickHouse refuses, and entries that cannot be decoded, go to the
//! dead-letter stream with the reason.

mod buffer;
#[cfg(test)]
mod fakes;
mod flush;
mod partition;
mod tables;

use std::sync::Arc;
use std::time::Duration;

use analytics_config::Config;
use analytics_store::Store;
use analytics_streams::{
    StageHealth, StreamError, Subscription, Topic, connect, consume_partitions, stream_key,
};
use tokio_util::sync::CancellationToken;

use crate::partition::{Partition, StreamLedger};
use crate::tables::Tables;

/// Consumer group name on the enriched stream.
pub const GROUP: &str = "sink";

/// What the sink needs from outside.
pub struct SinkDeps {
    pub redis: analytics_streams::RedisTarget,
    pub store: Store,
    /// This process's name in the consumer group.
    pub consumer: String,
    /// Where each partition task reports progress (`/readyz`, gauges).
    pub health: StageHealth,
}

/// Runs one batching task per enriched partition until `shutdown`; each
/// flushes and acknowledges its current batch before returning. A task
/// that panics stops the others (they drain) and the stage returns the
/// failure.
pub async fn run(
    config: Arc<Config>,
    deps: SinkDeps,
    shutdown: CancellationToken,
) -> Result<(), StreamError> {
    let conn = connect(&deps.redis, Duration::from_secs(5)).await?;
    let prefix = &config.redis.key_prefix;
    let block = Duration::from_millis(config.sink.max_age_ms.clamp(10, 1_000));
    let tables = Tables::new(deps.store);
    let mut partitions = Vec::new();
    for p in 0..config.redis.partitions {
        let subscription = Subscription {
            key: stream_key(prefix, Topic::Enriched, p),
            dead: stream_key(prefix, Topic::Dead, p),
            group: GROUP.into(),
            consumer: deps.consumer.clone(),
            claim_idle: Duration::from_millis(config.sink.claim_idle_ms),
            max_deliveries: config.sink.max_deliveries,
            block,
            takeover: false,
        };
        let ledger = StreamLedger {
            conn: conn.clone(),
            key: subscription.key.clone(),
            dead: subscription.dead.clone(),
            consumer: deps.consumer.clone(),
        };
        let partition = Partition::new(ledger, tables.clone(), config.clone(), p);
        partitions.push((p, subscription, partition));
    }
    consume_partitions(&deps.redis, conn, partitions, &deps.health, &shutdown).await
}
