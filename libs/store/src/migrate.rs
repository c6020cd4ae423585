//! Numbered ClickHouse migrations from `schemas/clickhouse`, applied in
//! order and recorded in `schema_migrations`. Every statement is idempotent
//! (`IF NOT EXISTS`; an `ADD COLUMN`, which 18.16 cannot qualify so, is
//! skipped when the column is there), so two processes migrating at once,
//! or a migration interrupted half-way, converge on the same schema.

use clickhouse::Row;
use serde::Serialize;

use crate::{Store, StoreError};

/// One migration file: its number, name and statements.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migrations {
    ($($version:literal => $name:literal),* $(,)?) => {
        /// Every migration, in the order they apply.
        pub const MIGRATIONS: &[Migration] = &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../../schemas/clickhouse/", $name, ".sql")),
        }),*];
    };
}

migrations! {
    1 => "0001_events",
    2 => "0002_profiles",
    3 => "0003_profile_aliases",
    4 => "0004_sessions",
    5 => "0005_hourly_aggregates",
    6 => "0006_drop_top_hourly",
    7 => "0007_integer_keys",
    8 => "0008_hourly_keys",
    9 => "0009_drop_sessions",
    10 => "0010_drop_hourly_aggregates",
    11 => "0011_event_kind",
    12 => "0012_session_hours",
}

#[derive(Row, Serialize)]
struct Applied {
    version: u32,
    name: String,
}

impl Migration {
    /// The statements of the file: split on `;` at the end of a line, comments dropped.
    pub fn statements(&self) -> Vec<String> {
        let mut statements = Vec::new();
        let mut current = String::new();
        for line in self.sql.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with("--") || trimmed.is_empty() {
                continue;
            }
            current.push_str(line);
            current.push('\n');
            if trimmed.ends_with(';') {
                let statement = current.trim().trim_end_matches(';').to_owned();
                statements.push(statement);
                current.clear();
            }
        }
        if !current.trim().is_empty() {
            statements.push(current.trim().to_owned());
        }
        statements
    }
}

impl Store {
    /// Creates the database if needed and applies the migrations not yet
    /// recorded. Returns the versions applied by this call.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        let on_cluster = match &self.cluster {
            Some(cluster) => format!(" ON CLUSTER {cluster}"),
            None => String::new(),
        };
        self.server
            .query(&format!(
                "CREATE DATABASE IF NOT EXISTS {}{on_cluster}",
                self.database
            ))
            .execute()
            .await?;
        self.db
            .query(
                "CREATE TABLE IF NOT EXISTS schema_migrations \
                 (version UInt32, name String, applied_at DateTime DEFAULT now()) \
                 ENGINE = MergeTree() ORDER BY version",
            )
            .execute()
            .await?;
        let done: Vec<u32> = self
            .db
            .query("SELECT DISTINCT version FROM schema_migrations")
            .fetch_all()
            .await?;
        let mut applied = Vec::new();
        let features = self.features().await?;
        for migration in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
            let adapted = migration
                .statements()
                .into_iter()
                .map(|s| features.adapt(&s));
            let statements = match &self.cluster {
                None => adapted.collect(),
                Some(cluster) => {
                    let mut rewritten = Vec::new();
                    for statement in adapted {
                        rewritten.extend(crate::cluster::rewrite(
                            &statement,
                            &self.database,
                            cluster,
                        )?);
                    }
                    rewritten
                }
            };
            for statement in statements {
                if let Some((table, column)) = added_column(&statement)
                    && self.has_column(table, column).await?
                {
                    continue;
                }
                self.db
                    .query(&statement)
                    .execute()
                    .await
                    .map_err(|source| StoreError::Migration {
                        version: migration.version,
                        name: migration.name,
                        source,
                    })?;
            }
            let mut insert = self.db.insert::<Applied>("schema_migrations").await?;
            insert
                .write(&Applied {
                    version: migration.version,
                    name: migration.name.to_owned(),
                })
                .await?;
            insert.end().await?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "migration applied"
            );
            applied.push(migration.version);
        }
        if let Some(cluster) = &self.cluster {
            self.wait_for_shards(cluster).await?;
        }
        Ok(applied)
    }

    /// Whether `table` (`t` of this database, or `db.t`) has `column`.
    async fn has_column(&self, table: &str, column: &str) -> Result<bool, StoreError> {
        let (database, table) = table.split_once('.').unwrap_or((&self.database, table));
        let found: u64 = self
            .db
            .query(
                "SELECT count() FROM system.columns \
                 WHERE database = ? AND table = ? AND name = ?",
            )
            .bind(database)
            .bind(table)
            .bind(column)
            .fetch_one()
            .await?;
        Ok(found > 0)
    }
}

/// The table and column of an `ALTER TABLE t [ON CLUSTER c] ADD COLUMN k …`
/// statement.
pub(crate) fn added_column(statement: &str) -> Option<(&str, &str)> {
    let rest = statement.strip_prefix("ALTER TABLE ")?;
    let (table, mut rest) = rest.split_once(' ')?;
    if let Some(on_cluster) = rest.strip_prefix("ON CLUSTER ") {
        rest = on_cluster.split_once(' ')?.1;
    }
    let rest = rest.strip_prefix("ADD COLUMN ")?;
    let (column, _) = rest.split_once(' ')?;
    Some((table, column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_split_into_statements() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
            let statements = m.statements();
            assert!(!statements.is_empty());
            for s in statements {
                assert!(!s.ends_with(';') && !s.starts_with("--"), "{s}");
            }
        }
    }

    #[test]
    fn added_columns_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE events ADD COLUMN k UInt64 MATERIALIZED cityHash64(x)"),
            Some(("events", "k"))
        );
        assert_eq!(
            added_column("ALTER TABLE db.events_local ON CLUSTER c ADD COLUMN k UInt64"),
            Some(("db.events_local", "k"))
        );
        assert_eq!(added_column("ALTER TABLE events DROP COLUMN k"), None);
        assert_eq!(added_column("CREATE TABLE IF NOT EXISTS k (x UInt8)"), None);
    }

    #[test]
    fn statement_splitting_keeps_multiline_statements_whole() {
        let m = Migration {
            version: 9,
            name: "x",
            sql: "-- c\nCREATE TABLE a (\n x UInt8\n) ENGINE = Log;\n\nCREATE TABLE b (y UInt8) ENGINE = Log;\n",
        };
        assert_eq!(
            m.statements(),
            vec![
                "CREATE TABLE a (\n x UInt8\n) ENGINE = Log".to_owned(),
                "CREATE TABLE b (y UInt8) ENGINE = Log".to_owned()
            ]
        );
    }
}
