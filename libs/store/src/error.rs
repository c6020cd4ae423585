//! Errors of the storage layer.

use std::sync::Arc;

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
    #[error("{0}")]
    Cluster(String),
    /// The outcome of a combined insert (see `CombinedInserts`), shared by
    /// every batch in it.
    #[error("combined insert: {0}")]
    Combined(#[source] Arc<StoreError>),
    /// An insert whose outcome is unknown: the task waiting for the
    /// server's answer ended before it came.
    #[error("insert interrupted before the server answered")]
    Interrupted,
}

/// ClickHouse error codes that mean the rows themselves cannot be stored
/// (bad values, wrong types), as opposed to the server not being ready.
const ROW_REFUSALS: &[u32] = &[6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131];

impl StoreError {
    /// True when ClickHouse refused the data itself: retrying the same rows
    /// cannot succeed, so they go to the dead letters.
    pub fn is_row_refusal(&self) -> bool {
        if let StoreError::Combined(e) = self {
            return e.is_row_refusal();
        }
        let StoreError::ClickHouse(clickhouse::error::Error::BadResponse(message)) = self else {
            return false;
        };
        message
            .split("Code: ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|code| code.parse::<u32>().ok())
            .is_some_and(|code| ROW_REFUSALS.contains(&code))
    }

    /// True when the server could not be reached or timed out, as opposed to
    /// refusing the statement: worth retrying as is.
    pub fn is_unavailable(&self) -> bool {
        let error = match self {
            StoreError::ClickHouse(e) | StoreError::Migration { source: e, .. } => e,
            StoreError::Combined(e) => return e.is_unavailable(),
            StoreError::Interrupted => return true,
            StoreError::Cluster(_) => return false,
        };
        matches!(
            error,
            clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(message: &str) -> StoreError {
        StoreError::ClickHouse(clickhouse::error::Error::BadResponse(message.into()))
    }

    #[test]
    fn only_data_errors_are_refusals() {
        assert!(
            bad("Code: 27, e.displayText() = DB::Exception: Cannot parse input").is_row_refusal()
        );
        assert!(bad("Code: 53, e.displayText() = DB::Exception: Type mismatch").is_row_refusal());
        assert!(
            !bad("Code: 60, e.displayText() = DB::Exception: Table db.events doesn't exist.")
                .is_row_refusal()
        );
        assert!(
            !bad("Code: 241, e.displayText() = DB::Exception: Memory limit exceeded")
                .is_row_refusal()
        );
        assert!(!bad("no code at all").is_row_refusal());
        assert!(!StoreError::ClickHouse(clickhouse::error::Error::TimedOut).is_row_refusal());
    }
}
