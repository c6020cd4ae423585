//! The ClickHouse client and the statements the pipeline runs.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use clickhouse::Client;

use crate::StoreError;
use crate::features::{Features, deduplication_token};
use crate::rows::{EventRow, InsertRow};

/// Where ClickHouse is and how to log in.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub url: String,
    /// Must already be validated as an identifier (letters, digits, `_`).
    pub database: String,
    pub user: String,
    pub password: String,
    /// Cluster the tables are spread over (`clickhouse.cluster`), if any.
    pub cluster: Option<String>,
}

/// A handle on the analytics database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) server: Client,
    pub(crate) db: Client,
    pub(crate) database: String,
    pub(crate) cluster: Option<String>,
    /// Read from the server on first use.
    features: Arc<OnceLock<Features>>,
}

impl Store {
    pub fn new(settings: &StoreSettings) -> Self {
        let server = Client::default()
            .with_url(&settings.url)
            .with_user(&settings.user)
            .with_password(&settings.password)
            .with_validation(false);
        let mut db = server.clone().with_database(&settings.database);
        if settings.cluster.is_some() {
            // An insert returns once every shard has its rows, not when they
            // are queued on this server for forwarding: the sink acknowledges
            // entries only after that.
            db = db.with_setting("insert_distributed_sync", "1");
        }
        Store {
            server,
            db,
            database: settings.database.clone(),
            cluster: settings.cluster.clone(),
            features: Arc::new(OnceLock::new()),
        }
    }

    /// The client bound to the analytics database, for queries.
    pub fn client(&self) -> &Client {
        &self.db
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.server.query("SELECT 1").execute().await?;
        Ok(())
    }

    /// What the server offers beyond 18.16 (asked once, then remembered).
    pub async fn features(&self) -> Result<Features, StoreError> {
        if let Some(features) = self.features.get() {
            return Ok(*features);
        }
        let version: String = self.server.query("SELECT version()").fetch_one().await?;
        let features = Features::of_version(&version);
        tracing::info!(version, ?features, "ClickHouse server");
        Ok(*self.features.get_or_init(|| features))
    }

    /// Inserts `rows` into `table` as one INSERT; where the server takes
    /// deduplication tokens, a retry of the same rows is dropped by it.
    pub async fn insert<T: InsertRow>(&self, table: &str, rows: &[T]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let client = if self.features().await?.deduplication_token {
            self.db.clone().with_setting(
                "insert_deduplication_token",
                deduplication_token(table, rows),
            )
        } else {
            self.db.clone()
        };
        let mut insert = client.insert::<T>(table).await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Which of these events are already stored: used before inserting a
    /// redelivered batch, so a batch whose acknowledgement was lost is not
    /// counted twice.
    pub async fn existing_event_ids(
        &self,
        rows: &[EventRow],
    ) -> Result<HashSet<(String, String)>, StoreError> {
        let mut by_project: BTreeMap<&str, (Vec<&str>, u32, u32)> = BTreeMap::new();
        for row in rows {
            let entry = by_project
                .entry(&row.project_id)
                .or_insert((Vec::new(), u32::MAX, 0));
            entry.0.push(&row.id);
            entry.1 = entry.1.min(row.created_at);
            entry.2 = entry.2.max(row.created_at);
        }
        let mut found = HashSet::new();
        for (project, (ids, from, to)) in by_project {
            let existing: Vec<String> = self
                .db
                .query(
                    "SELECT id FROM events WHERE project_id = ? \
                     AND created_at >= toDateTime(?, 'UTC') AND created_at <= toDateTime(?, 'UTC') \
                     AND has(?, id)",
                )
                .bind(project)
                .bind(from)
                .bind(to)
                .bind(ids)
                .fetch_all()
                .await?;
            found.extend(existing.into_iter().map(|id| (project.to_owned(), id)));
        }
        Ok(found)
    }
}
