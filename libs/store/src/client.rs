//! The ClickHouse client and the statements the pipeline runs.

use std::collections::HashSet;
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
    ///
    /// The ids travel in the query text, which ClickHouse caps
    /// (`max_query_size`, 256 KiB by default): they are asked in chunks of
    /// at most [`ID_BYTES_PER_QUERY`], each chunk sorted by event time so its
    /// time range (and the rows the server scans) stays narrow. A few chunks
    /// run at once.
    pub async fn existing_event_ids(
        &self,
        rows: &[EventRow],
    ) -> Result<HashSet<(String, String)>, StoreError> {
        let mut chunks = tokio::task::JoinSet::new();
        let mut found = HashSet::new();
        for chunk in id_chunks(rows, ID_BYTES_PER_QUERY) {
            if chunks.len() >= CONCURRENT_ID_QUERIES
                && let Some(done) = chunks.join_next().await
            {
                found.extend(done.map_err(StoreError::Task)??);
            }
            let client = self.db.clone();
            chunks.spawn(async move { chunk.existing(&client).await });
        }
        while let Some(done) = chunks.join_next().await {
            found.extend(done.map_err(StoreError::Task)??);
        }
        Ok(found)
    }
}

/// Raw id bytes per existence query. Quoting at most doubles them (every
/// byte escaped), which keeps the query well under ClickHouse's default
/// `max_query_size` of 256 KiB.
pub const ID_BYTES_PER_QUERY: usize = 64 * 1024;
const CONCURRENT_ID_QUERIES: usize = 4;

/// Ids of one project within one event-time range, asked in one query.
#[derive(Debug)]
struct IdChunk {
    project: String,
    from: u32,
    to: u32,
    ids: Vec<String>,
}

impl IdChunk {
    async fn existing(self, client: &Client) -> Result<Vec<(String, String)>, StoreError> {
        let existing: Vec<String> = client
            .query(
                "SELECT id FROM events WHERE project_id = ? \
                 AND created_at >= toDateTime(?, 'UTC') AND created_at <= toDateTime(?, 'UTC') \
                 AND has(?, id)",
            )
            .bind(&self.project)
            .bind(self.from)
            .bind(self.to)
            .bind(&self.ids)
            .fetch_all()
            .await?;
        let project = self.project;
        Ok(existing
            .into_iter()
            .map(|id| (project.clone(), id))
            .collect())
    }
}

/// Splits rows into per-project chunks whose ids total at most `budget`
/// bytes (one id longer than the budget still gets a chunk of its own).
fn id_chunks(rows: &[EventRow], budget: usize) -> Vec<IdChunk> {
    let mut sorted: Vec<&EventRow> = rows.iter().collect();
    sorted.sort_unstable_by(|a, b| {
        (a.project_id.as_str(), a.created_at).cmp(&(b.project_id.as_str(), b.created_at))
    });
    let mut chunks: Vec<IdChunk> = Vec::new();
    let mut bytes = 0;
    for row in sorted {
        match chunks.last_mut() {
            Some(chunk) if chunk.project == row.project_id && bytes + row.id.len() <= budget => {
                chunk.to = row.created_at;
                chunk.ids.push(row.id.clone());
                bytes += row.id.len();
            }
            _ => {
                chunks.push(IdChunk {
                    project: row.project_id.clone(),
                    from: row.created_at,
                    to: row.created_at,
                    ids: vec![row.id.clone()],
                });
                bytes = row.id.len();
            }
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(project: &str, id: String, created_at: u32) -> EventRow {
        EventRow {
            project_id: project.into(),
            id,
            created_at,
            ..EventRow::default()
        }
    }

    #[test]
    fn chunks_stay_within_the_budget_and_keep_every_id_once() {
        let rows: Vec<EventRow> = (0..10_000u32)
            .map(|n| {
                let project = if n % 3 == 0 { "a" } else { "b" };
                row(project, format!("{:036}", n), 1_000_000 - n)
            })
            .collect();
        let by_id: std::collections::HashMap<&str, &EventRow> =
            rows.iter().map(|r| (r.id.as_str(), r)).collect();
        let chunks = id_chunks(&rows, ID_BYTES_PER_QUERY);
        let mut seen = HashSet::new();
        for chunk in &chunks {
            assert!(chunk.ids.iter().map(String::len).sum::<usize>() <= ID_BYTES_PER_QUERY);
            assert!(chunk.from <= chunk.to);
            for id in &chunk.ids {
                let row = by_id[id.as_str()];
                assert_eq!(row.project_id, chunk.project);
                assert!((chunk.from..=chunk.to).contains(&row.created_at));
                assert!(seen.insert(id.clone()));
            }
        }
        assert_eq!(seen.len(), rows.len());
        // 10,000 ids of 36 bytes need at least six chunks of 64 KiB.
        assert!(chunks.len() >= 6, "{} chunks", chunks.len());
    }

    #[test]
    fn an_id_longer_than_the_budget_is_asked_alone() {
        let rows = vec![
            row("a", "x".repeat(10), 1),
            row("a", "y".repeat(100), 2),
            row("a", "z".repeat(10), 3),
        ];
        let chunks = id_chunks(&rows, 50);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.ids.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
    }
}
