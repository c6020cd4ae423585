//! Errors of the storage layer.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: u32,
        name: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
}

impl StoreError {
    /// True when the server could not be reached or timed out, as opposed to
    /// refusing the statement: worth retrying as is.
    pub fn is_unavailable(&self) -> bool {
        let error = match self {
            StoreError::ClickHouse(e) | StoreError::Migration { source: e, .. } => e,
        };
        matches!(
            error,
            clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
        )
    }
}
