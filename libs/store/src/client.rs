//! The ClickHouse client and the statements the pipeline runs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clickhouse::{Client, Row};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::features::{Features, deduplication_token};
use crate::rowbinary::{EncodeRow, RowInsert};
use crate::{EncodedEvent, RowKey};

/// A connector with `TCP_NODELAY`, which the crate's default client lacks:
/// without it a request whose body follows its headers in a second write
/// waits for the server's delayed acknowledgement (40 ms on Linux) before
/// the body goes out. Keepalive probes as in the crate's default.
fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector
}

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
        // Idle connections close before ClickHouse's own 3 s keep-alive
        // timeout would close them under a request (the crate's default).
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(2))
            .build(connector());
        let server = Client::with_http_client(http)
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
    pub async fn insert<T: EncodeRow + RowKey>(
        &self,
        table: &str,
        rows: &[T],
    ) -> Result<(), StoreError> {
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
        let mut insert = RowInsert::new::<T>(&client, table);
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
    /// The batch's ids go to the server as rows of a temporary table of a
    /// session of their own (RowBinary, like any insert), not as query text:
    /// a full batch of 50,000 UUIDs is about 1.9 MB of quoted ids, far past
    /// ClickHouse's 256 KiB `max_query_size`, and literal lists that long
    /// are slow to parse. The lookup is then one query whose sets come from
    /// that table (`GLOBAL IN`, so it also holds on a cluster), bounded by
    /// the batch's event times and names along the primary key.
    pub async fn existing_event_ids(
        &self,
        rows: &[EncodedEvent],
    ) -> Result<HashSet<(String, String)>, StoreError> {
        let keys: Vec<_> = rows.iter().map(EncodedEvent::key).collect();
        let (Some(from), Some(to)) = (
            keys.iter().map(|k| k.created_at).min(),
            keys.iter().map(|k| k.created_at).max(),
        ) else {
            return Ok(HashSet::new());
        };
        // The session, and its table with it, ends SESSION_SECONDS after its
        // last query: no statement is spent on dropping it.
        let client = self
            .db
            .clone()
            .with_setting("session_id", check_session())
            .with_setting("session_timeout", SESSION_SECONDS.to_string());
        client
            .query("CREATE TEMPORARY TABLE asked (project_id String, name String, id String)")
            .execute()
            .await?;
        let mut insert = client.insert::<AskedRow>("asked").await?;
        for key in &keys {
            insert
                .write(&AskedRow {
                    project_id: key.project_id.to_owned(),
                    name: key.name.to_owned(),
                    id: key.id.to_owned(),
                })
                .await?;
        }
        insert.end().await?;
        let found = client
            .query(
                "SELECT project_id, id FROM events \
                 WHERE project_id GLOBAL IN (SELECT project_id FROM asked) \
                 AND created_at >= toDateTime(?, 'UTC') AND created_at <= toDateTime(?, 'UTC') \
                 AND name GLOBAL IN (SELECT name FROM asked) \
                 AND (project_id, id) GLOBAL IN (SELECT project_id, id FROM asked)",
            )
            .bind(from)
            .bind(to)
            .fetch_all::<StoredId>()
            .await?;
        Ok(found.into_iter().map(|r| (r.project_id, r.id)).collect())
    }
}

/// Lifetime of a redelivery check's session after its last query.
const SESSION_SECONDS: u32 = 10;

/// One id of a batch being checked, as written to the session's table.
#[derive(Row, Serialize)]
struct AskedRow {
    project_id: String,
    name: String,
    id: String,
}

#[derive(Row, Deserialize)]
struct StoredId {
    project_id: String,
    id: String,
}

/// A session id no other check uses: a session runs one query at a time,
/// and its temporary tables are its own.
fn check_session() -> String {
    static CHECKS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "analytics-check-{}-{nanos}-{}",
        std::process::id(),
        CHECKS.fetch_add(1, Ordering::Relaxed)
    )
}
