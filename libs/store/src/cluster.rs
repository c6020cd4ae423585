//! The single-server migrations rewritten for a ClickHouse cluster.
//!
//! Every table `t` becomes a replicated table `t_local` on every shard
//! (`ON CLUSTER`, `Replicated*MergeTree` keyed by the servers' `{shard}` and
//! `{replica}` macros) behind a `Distributed` table named `t`, so inserts and
//! queries keep using `t`. A materialized view would run on every shard,
//! from the shard's `events_local` into the shard's own table (the schema
//! has one since migration 0012). One set of schema files serves both
//! layouts, and the rewrite is checked statement by statement.

use std::time::{Duration, Instant};

use crate::{Store, StoreError};

/// How long `migrate` waits for every server to catch up with the DDL queue.
const SHARD_SCHEMA_TIMEOUT: Duration = Duration::from_secs(120);

/// Cluster statements for one single-server migration statement.
pub fn rewrite(statement: &str, database: &str, cluster: &str) -> Result<Vec<String>, StoreError> {
    let unsupported = || StoreError::Cluster(format!("cannot rewrite for a cluster: {statement}"));
    if let Some(rest) = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
        let (name, rest) = rest.split_once(' ').ok_or_else(unsupported)?;
        let (columns, rest) = rest.split_once(") ENGINE = ").ok_or_else(unsupported)?;
        let (engine, rest) = rest.split_once('(').ok_or_else(unsupported)?;
        let (args, tail) = rest.split_once(')').ok_or_else(unsupported)?;
        let local = format!("{name}_local");
        let mut replicated_args =
            format!("'/clickhouse/tables/{{shard}}/{database}/{local}', '{{replica}}'");
        if !args.trim().is_empty() {
            replicated_args.push_str(", ");
            replicated_args.push_str(args.trim());
        }
        return Ok(vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {database}.{local} ON CLUSTER {cluster} {columns}) \
                 ENGINE = Replicated{engine}({replicated_args}){tail}"
            ),
            distributed(name, database, cluster),
        ]);
    }
    if let Some(name) = statement.strip_prefix("DROP TABLE IF EXISTS ") {
        let name = name.trim();
        // A view is one object per server; a table is the shards' local
        // tables behind a distributed one.
        let mut dropped = vec![format!(
            "DROP TABLE IF EXISTS {database}.{name} ON CLUSTER {cluster}"
        )];
        if !name.ends_with("_mv") {
            dropped.push(format!(
                "DROP TABLE IF EXISTS {database}.{name}_local ON CLUSTER {cluster}"
            ));
        }
        return Ok(dropped);
    }
    if let Some((table, _)) = crate::migrate::added_column(statement) {
        let change = statement
            .strip_prefix(&format!("ALTER TABLE {table} "))
            .ok_or_else(unsupported)?;
        // 18.16 alters no distributed table `ON CLUSTER`, so the one in
        // front of the shards is made again from their new structure.
        // Inserts through it are synchronous: it holds no queued rows, and
        // an insert in the moment between fails and is retried.
        return Ok(vec![
            format!("ALTER TABLE {database}.{table}_local ON CLUSTER {cluster} {change}"),
            format!("DROP TABLE IF EXISTS {database}.{table} ON CLUSTER {cluster}"),
            distributed(table, database, cluster),
        ]);
    }
    // A backfill reads and writes the distributed tables: rows land on any
    // shard, and every question over the table aggregates across shards.
    if statement.starts_with("INSERT INTO ") {
        return Ok(vec![statement.to_owned()]);
    }
    if let Some(rest) = statement.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
        let (name, rest) = rest.split_once(" TO ").ok_or_else(unsupported)?;
        let (target, select) = rest.split_once(" AS\n").ok_or_else(unsupported)?;
        let select = rewrite_source(select).ok_or_else(unsupported)?;
        return Ok(vec![format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{name} ON CLUSTER {cluster} \
             TO {database}.{target}_local AS\n{}",
            select.replace(
                "FROM events_local",
                &format!("FROM {database}.events_local")
            )
        )]);
    }
    Err(unsupported())
}

/// The distributed table `name` over the shards' `name_local`. One
/// device's events on one shard keeps its visits together; other tables
/// only need spreading.
fn distributed(name: &str, database: &str, cluster: &str) -> String {
    let sharding = if name == "events" {
        "cityHash64(device_id)"
    } else {
        "rand()"
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {database}.{name} ON CLUSTER {cluster} \
         AS {database}.{name}_local \
         ENGINE = Distributed({cluster}, {database}, {name}_local, {sharding})"
    )
}

/// The view's SELECT reading the shard's `events_local` instead of `events`.
fn rewrite_source(select: &str) -> Option<String> {
    let at = select.find("\nFROM events\n")?;
    let mut out = select.to_owned();
    out.replace_range(at..at + "\nFROM events\n".len(), "\nFROM events_local\n");
    Some(out)
}

impl Store {
    /// Waits until every server of `cluster` has as many columns of tables
    /// and views in the database as this one (a table made again is
    /// missing its columns until it is there). `ON CLUSTER` statements run
    /// on each server from a queue; a server that lags must not receive
    /// rows before its tables have their columns (nor, with a view, before
    /// the view exists, or its table would miss them).
    pub(crate) async fn wait_for_shards(&self, cluster: &str) -> Result<(), StoreError> {
        let hosts: Vec<(String, u16)> = self
            .server
            .query("SELECT host_address, port FROM system.clusters WHERE cluster = ?")
            .bind(cluster)
            .fetch_all()
            .await?;
        if hosts.is_empty() {
            return Err(StoreError::Cluster(format!(
                "cluster {cluster} is not among this server's remote_servers"
            )));
        }
        // schema_migrations is each server's own record, not a cluster table.
        let count = "SELECT count() FROM system.columns \
             WHERE database = ? AND table != 'schema_migrations'";
        let wanted: u64 = self
            .server
            .query(count)
            .bind(&self.database)
            .fetch_one()
            .await?;
        let started = Instant::now();
        for (host, port) in hosts {
            let remote = format!("{host}:{port}");
            loop {
                let there: u64 = self
                    .server
                    .query(
                        "SELECT count() FROM remote(?, system.columns) \
                         WHERE database = ? AND table != 'schema_migrations'",
                    )
                    .bind(&remote)
                    .bind(&self.database)
                    .fetch_one()
                    .await
                    .unwrap_or(0);
                if there >= wanted {
                    break;
                }
                if started.elapsed() > SHARD_SCHEMA_TIMEOUT {
                    return Err(StoreError::Cluster(format!(
                        "{remote} has {there} of {wanted} columns of {} after {:?}",
                        self.database, SHARD_SCHEMA_TIMEOUT
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::MIGRATIONS;

    #[test]
    fn every_migration_statement_has_a_cluster_form() {
        for migration in MIGRATIONS {
            for statement in migration.statements() {
                let rewritten = rewrite(&statement, "db", "c").unwrap();
                if statement.starts_with("INSERT INTO ") {
                    assert_eq!(
                        rewritten,
                        std::slice::from_ref(&statement),
                        "a backfill runs as written"
                    );
                    assert!(!statement.contains("_local"), "{statement}");
                    continue;
                }
                for s in &rewritten {
                    assert!(
                        s.contains(" ON CLUSTER c ") || s.ends_with(" ON CLUSTER c"),
                        "{s}"
                    );
                    assert!(
                        !s.contains("FROM events\n"),
                        "a view still reads `events`: {s}"
                    );
                }
            }
        }
    }

    #[test]
    fn tables_become_replicated_behind_distributed() {
        let sql = "CREATE TABLE IF NOT EXISTS profiles (\n    id String,\n    version UInt64\n) \
                   ENGINE = ReplacingMergeTree(version)\nORDER BY (project_id, id)";
        let out = rewrite(sql, "db", "c").unwrap();
        assert_eq!(
            out[0],
            "CREATE TABLE IF NOT EXISTS db.profiles_local ON CLUSTER c (\n    id String,\n    version UInt64\n) \
             ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/profiles_local', '{replica}', version)\n\
             ORDER BY (project_id, id)"
        );
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS db.profiles ON CLUSTER c AS db.profiles_local \
             ENGINE = Distributed(c, db, profiles_local, rand())"
        );
        let events = "CREATE TABLE IF NOT EXISTS events (\n    device_id String\n) ENGINE = MergeTree()\nORDER BY device_id";
        let out = rewrite(events, "db", "c").unwrap();
        assert!(out[0].contains(
            "ReplicatedMergeTree('/clickhouse/tables/{shard}/db/events_local', '{replica}')\n"
        ));
        assert!(out[1].ends_with("Distributed(c, db, events_local, cityHash64(device_id))"));
    }

    #[test]
    fn dropped_tables_go_on_every_shard_with_their_local_tables() {
        assert_eq!(
            rewrite("DROP TABLE IF EXISTS top_hourly_mv", "db", "c").unwrap(),
            ["DROP TABLE IF EXISTS db.top_hourly_mv ON CLUSTER c"]
        );
        assert_eq!(
            rewrite("DROP TABLE IF EXISTS top_hourly", "db", "c").unwrap(),
            [
                "DROP TABLE IF EXISTS db.top_hourly ON CLUSTER c",
                "DROP TABLE IF EXISTS db.top_hourly_local ON CLUSTER c"
            ]
        );
    }

    #[test]
    fn added_columns_go_to_the_shards_and_the_distributed_table_is_made_again() {
        assert_eq!(
            rewrite(
                "ALTER TABLE events ADD COLUMN k UInt64 MATERIALIZED cityHash64(d)",
                "db",
                "c"
            )
            .unwrap(),
            [
                "ALTER TABLE db.events_local ON CLUSTER c ADD COLUMN k UInt64 MATERIALIZED cityHash64(d)",
                "DROP TABLE IF EXISTS db.events ON CLUSTER c",
                "CREATE TABLE IF NOT EXISTS db.events ON CLUSTER c AS db.events_local \
                 ENGINE = Distributed(c, db, events_local, cityHash64(device_id))"
            ]
        );
    }

    #[test]
    fn views_read_and_write_the_shard_tables() {
        let sql =
            "CREATE MATERIALIZED VIEW IF NOT EXISTS x_mv TO x AS\nSELECT a\nFROM events\nWHERE b";
        let out = rewrite(sql, "db", "c").unwrap();
        assert_eq!(
            out,
            [
                "CREATE MATERIALIZED VIEW IF NOT EXISTS db.x_mv ON CLUSTER c TO db.x_local AS\nSELECT a\nFROM db.events_local\nWHERE b"
            ]
        );
        assert!(rewrite("DROP TABLE events", "db", "c").is_err());
    }
}
