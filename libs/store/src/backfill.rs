//! Rebuilds the aggregate tables from `events`, for aggregates added after
//! events were already stored. The SELECTs mirror the materialized views of
//! `schemas/clickhouse` (0008 for the hourly counts); the backfill
//! test checks that a rebuilt table answers exactly like one the views
//! filled. Migrations that make an aggregate table again rebuild it here.
//!
//! Run it while no sink is writing: rows inserted during a rebuild of their
//! month can be counted twice or missed.

use crate::{Store, StoreError};

/// An aggregate table (partitioned by month, `PARTITION BY toYYYYMM(hour)`,
/// and rebuilt month by month) and the SELECT of its view, with `{where}`
/// where the month condition goes.
pub(crate) struct Aggregate {
    table: &'static str,
    select: &'static str,
}

/// Profile operations are stored as events for audit; analytics (queries
/// and aggregates) leave them out. The views of `schemas/clickhouse` spell
/// out the same condition.
pub const ANALYTICS_EVENTS: &str = "name NOT IN ('identify', 'increment', 'decrement', 'alias')";

/// Rows that belong to a session, told by the 8-byte key rather than by
/// reading the id strings (the key of the empty id is a constant). The
/// view of `schemas/clickhouse/0008` spells out the same condition.
pub const IN_SESSION: &str = "session_key != cityHash64('')";

const AGGREGATES: &[Aggregate] = &[Aggregate {
    table: "events_hourly",
    select: "SELECT project_id, toStartOfHour(created_at, 'UTC') AS hour, \
                 uniqExactState(device_key) AS visitors, \
                 uniqExactIfState(session_key, toUInt8({in_session})) AS sessions, \
                 sumState(toUInt64(name = 'screen_view')) AS screen_views, countState() AS events \
                 FROM events WHERE {analytics} {where} GROUP BY project_id, hour",
}];

/// The aggregate table `table`, for migrations that rebuild it.
pub(crate) fn aggregate(table: &str) -> Option<&'static Aggregate> {
    AGGREGATES.iter().find(|a| a.table == table)
}

/// What one backfill rebuilt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rebuilt {
    pub table: &'static str,
    /// Months rebuilt (`YYYYMM`).
    pub months: Vec<u32>,
}

impl Store {
    /// Rebuilds every aggregate table from `events`.
    pub async fn backfill(&self) -> Result<Vec<Rebuilt>, StoreError> {
        let months = self.event_months().await?;
        let mut rebuilt = Vec::new();
        for aggregate in AGGREGATES {
            rebuilt.push(self.rebuild(aggregate, &months).await?);
        }
        Ok(rebuilt)
    }

    /// Rebuilds the aggregate table `table` from `events`.
    pub(crate) async fn rebuild_table(&self, table: &'static str) -> Result<Rebuilt, StoreError> {
        let aggregate = aggregate(table).ok_or(StoreError::UnknownAggregate(table))?;
        let months = self.event_months().await?;
        self.rebuild(aggregate, &months).await
    }

    async fn event_months(&self) -> Result<Vec<u32>, StoreError> {
        Ok(self
            .db
            .query("SELECT DISTINCT toYYYYMM(created_at) AS m FROM events ORDER BY m")
            .fetch_all()
            .await?)
    }

    async fn rebuild(&self, aggregate: &Aggregate, months: &[u32]) -> Result<Rebuilt, StoreError> {
        // On a cluster, partitions are dropped from every shard's table.
        let target = match &self.cluster {
            Some(cluster) => crate::cluster::local_table(aggregate.table, &self.database, cluster),
            None => aggregate.table.to_owned(),
        };
        let select = aggregate
            .select
            .replace("{analytics}", ANALYTICS_EVENTS)
            .replace("{in_session}", IN_SESSION);
        for month in months {
            self.db
                .query(&format!("ALTER TABLE {target} DROP PARTITION ?"))
                .bind(*month)
                .execute()
                .await?;
            let sql = select.replace("{where}", "AND toYYYYMM(created_at) = ?");
            self.db
                .query(&format!("INSERT INTO {} {sql}", aggregate.table))
                .bind(*month)
                .execute()
                .await?;
        }
        tracing::info!(table = aggregate.table, "aggregate rebuilt");
        Ok(Rebuilt {
            table: aggregate.table,
            months: months.to_vec(),
        })
    }
}
