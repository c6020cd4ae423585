//! Runs the insights queries: bound SQL, a time limit (and a memory limit,
//! when set), rows read as typed structs in RowBinary.
//!
//! RowBinary rows carry no column names, and on 18.16 the client cannot
//! check them (`with_validation(false)`): a row is read by position. So
//! before a query runs, the names its SELECT list gives its columns (an
//! alias, or the bare column) are checked against the fields of the row
//! type, in order; a misspelt or misplaced alias is an error, never a
//! silent zero.

use std::sync::Arc;
use std::time::Duration;

use analytics_store::Store;
use clickhouse::RowOwned;
use serde::de::{DeserializeOwned, Visitor};
use serde_json::Value;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::QueryError;
use crate::params::{Filter, Range};
use crate::sql::Sql;
use crate::summary::{Source, Verdicts};

#[derive(Clone)]
pub struct Runner {
    pub store: Store,
    pub timeout: Duration,
    /// ClickHouse `max_memory_usage`; the server's own when `None`.
    pub max_memory_bytes: Option<u64>,
    /// Slots for queries at once (`None`: no limit). Each query already
    /// spreads over all of the server's cores; more of them at once only
    /// share those cores, with their hash tables crowding each other out
    /// of the caches, so the questions of a dashboard asked together are
    /// answered sooner a few at a time.
    pub gate: Option<Arc<Semaphore>>,
    /// Whether questions may read `session_hours` (`None`: `events` only).
    pub summary: Option<Arc<Verdicts>>,
}

impl Runner {
    pub fn query(&self, sql: &Sql) -> clickhouse::query::Query {
        let query = sql
            .query(&self.store)
            .with_setting(
                "max_execution_time",
                self.timeout.as_secs().max(1).to_string(),
            )
            .with_setting("output_format_json_quote_64bit_integers", "0");
        match self.max_memory_bytes {
            Some(bytes) => query.with_setting("max_memory_usage", bytes.to_string()),
            None => query,
        }
    }

    /// The table to answer a question over `range` with `filters` from.
    pub async fn source(
        &self,
        project: &str,
        range: &Range,
        filters: &[Filter],
    ) -> Result<Source, QueryError> {
        match &self.summary {
            Some(verdicts) => verdicts.source(self, project, range, filters).await,
            None => Ok(Source::Events),
        }
    }

    /// A slot for one query, waited for within the query's time limit.
    async fn slot(&self) -> Result<Option<SemaphorePermit<'_>>, QueryError> {
        let Some(gate) = &self.gate else {
            return Ok(None);
        };
        match tokio::time::timeout(self.timeout, gate.acquire()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // The gate is never closed; should it be, the query runs.
            Ok(Err(_)) => Ok(None),
            Err(_) => Err(QueryError::Busy(self.timeout)),
        }
    }

    /// Every row of a query, as `T`.
    pub async fn fetch_all<T>(&self, sql: &Sql) -> Result<Vec<T>, QueryError>
    where
        T: RowOwned + DeserializeOwned,
    {
        check_columns::<T>(&sql.text)?;
        let _slot = self.slot().await?;
        Ok(self.typed(sql).fetch_all::<T>().await?)
    }

    /// The row of an aggregate over the whole selection (no `GROUP BY`):
    /// the server sends one, of zeros when nothing matched; `T::default()`
    /// should it send none.
    pub async fn fetch_one<T>(&self, sql: &Sql) -> Result<T, QueryError>
    where
        T: RowOwned + DeserializeOwned + Default,
    {
        check_columns::<T>(&sql.text)?;
        let _slot = self.slot().await?;
        Ok(self
            .typed(sql)
            .fetch_optional::<T>()
            .await?
            .unwrap_or_default())
    }

    /// A typed query's answer is sent once the query has ended: an error
    /// on the way is then an error answer, never text appended to rows it
    /// began (which 18.16 does, and RowBinary cannot tell from data). The
    /// answers are small: aggregates, at most a page of rows.
    fn typed(&self, sql: &Sql) -> clickhouse::query::Query {
        self.query(sql).with_setting("wait_end_of_query", "1")
    }

    /// Every row of a query as a JSON object, for answers that pass rows
    /// on as ClickHouse writes them (the events list).
    pub async fn json_rows(&self, sql: &Sql) -> Result<Vec<Value>, QueryError> {
        let _slot = self.slot().await?;
        let mut cursor = self.query(sql).fetch_bytes("JSONEachRow")?;
        let mut text = Vec::new();
        while let Some(chunk) = cursor.next().await? {
            text.extend_from_slice(&chunk);
        }
        text.split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).map_err(QueryError::Json))
            .collect()
    }
}

/// An error unless the SELECT list of `sql` names the fields of `T`, in order.
pub fn check_columns<T: DeserializeOwned>(sql: &str) -> Result<(), QueryError> {
    let fields = field_names::<T>();
    let selected = selected_names(sql);
    if selected == fields {
        return Ok(());
    }
    Err(QueryError::Columns {
        selected: selected.into_iter().map(str::to_owned).collect(),
        fields,
    })
}

/// The names the outermost SELECT list of `sql` gives its columns: each
/// item's alias, or the item itself when it has none.
fn selected_names(sql: &str) -> Vec<&str> {
    let Some(list) = sql.trim_start().strip_prefix("SELECT ") else {
        return Vec::new();
    };
    let list = list.strip_prefix("DISTINCT ").unwrap_or(list);
    let mut items = Vec::new();
    let (mut depth, mut quoted, mut escaped) = (0i32, false, false);
    let (mut start, mut end) = (0, list.len());
    // Every delimiter is ASCII, so each index sliced at is a char boundary.
    for (i, b) in list.bytes().enumerate() {
        if quoted {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'\'' => quoted = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'\'' => quoted = true,
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            b' ' if depth == 0 && list[i..].starts_with(" FROM ") => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    items.push(&list[start..end]);
    items
        .into_iter()
        .map(|item| {
            let item = item.trim();
            item.rfind(" AS ").map_or(item, |at| item[at + 4..].trim())
        })
        .collect()
}

/// The names of the fields of the struct `T`, in order, as serde reads them.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    /// A deserializer that only notes the fields a struct asks for.
    struct Fields<'a>(&'a mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("fields noted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // Always an error: only the noted fields matter.
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Pair {
        value: String,
        views: u64,
    }

    #[test]
    fn the_select_list_names_its_columns() {
        assert_eq!(
            selected_names(
                "SELECT formatDateTime(toStartOfHour(created_at, ?), '%Y, %m FROM ''x\\'', ?) AS date, \
                 uniqExact(device_id) AS visitors FROM (SELECT x AS y, z FROM t) WHERE a IN (1, 2)"
            ),
            ["date", "visitors"]
        );
        assert_eq!(
            selected_names("SELECT DISTINCT alias FROM profile_aliases WHERE x = ?"),
            ["alias"]
        );
        assert_eq!(
            selected_names("SELECT level, count() AS actors FROM (SELECT 1)"),
            ["level", "actors"]
        );
        assert_eq!(
            selected_names("SELECT [a = b AND c, d] AS aligned"),
            ["aligned"]
        );
        assert_eq!(
            selected_names("SELECT toInt64(CAST(x AS Int32)) AS k, CAST(y AS UInt8) FROM t"),
            ["k", "UInt8)"]
        );
    }

    #[test]
    fn a_misspelt_or_misplaced_alias_is_an_error() {
        assert_eq!(field_names::<Pair>(), ["value", "views"]);
        check_columns::<Pair>("SELECT path AS value, count() AS views FROM events").unwrap();
        for sql in [
            "SELECT path AS value, count() AS view FROM events",
            "SELECT count() AS views, path AS value FROM events",
            "SELECT path AS value FROM events",
            "SELECT path AS value, count() AS views, 1 AS extra FROM events",
        ] {
            let error = check_columns::<Pair>(sql).unwrap_err();
            assert!(matches!(error, QueryError::Columns { .. }), "{sql}");
            assert_eq!(error.status(), hyper::StatusCode::INTERNAL_SERVER_ERROR);
        }
    }

    /// A runner whose store nobody answers at: a query that gets past the
    /// gate fails as unavailable, one the gate holds back as busy.
    fn unreachable(timeout: Duration, slots: usize) -> Runner {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        Runner {
            store: Store::new(&analytics_store::StoreSettings {
                url: format!("http://127.0.0.1:{port}"),
                database: "analytics".into(),
                user: "default".into(),
                password: String::new(),
                cluster: None,
            }),
            timeout,
            max_memory_bytes: None,
            gate: Some(Arc::new(Semaphore::new(slots))),
            summary: None,
        }
    }

    #[tokio::test]
    async fn a_query_waits_for_a_slot_within_its_time_limit_then_is_busy() {
        let sql = Sql::new("SELECT value, views FROM t");
        let runner = unreachable(Duration::from_millis(200), 1);
        let gate = runner.gate.clone().unwrap();
        let taken = gate.acquire().await.unwrap();
        let started = std::time::Instant::now();
        let error = runner.json_rows(&sql).await.unwrap_err();
        assert!(matches!(error, QueryError::Busy(_)), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(error.status(), hyper::StatusCode::SERVICE_UNAVAILABLE);

        // A slot freed while the query waits lets it through (to a store
        // that is not there).
        let waiting = tokio::spawn({
            let runner = runner.clone();
            async move { runner.json_rows(&sql).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(taken);
        let error = waiting.await.unwrap().unwrap_err();
        assert!(matches!(error, QueryError::Unavailable(_)), "{error}");
        assert_eq!(gate.available_permits(), 1, "the slot is given back");
    }
}
