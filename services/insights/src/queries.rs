//! The questions the insights API answers, each as bound SQL over the raw
//! `events` table (and `profiles`), results as JSON.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use analytics_http::ApiError;
use analytics_store::Store;
use serde_json::{Value, json};

use crate::params::{Filter, Interval, Range};
use crate::sql::{ANALYTICS_EVENTS, Sql, events_where, hourly_where};

/// Runs queries with a time limit (and a memory limit, when set) and turns
/// ClickHouse errors into answers.
#[derive(Clone)]
pub struct Runner {
    pub store: Store,
    pub timeout: Duration,
    /// ClickHouse `max_memory_usage`; the server's own when `None`.
    pub max_memory_bytes: Option<u64>,
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

    /// Whether the hourly aggregates can answer for `range` exactly: no
    /// per-event filters, and both ends of the range on UTC hour
    /// boundaries (true for whole days in zones with whole-hour offsets).
    pub async fn aggregates_answer(
        &self,
        range: &Range,
        filters: &[Filter],
    ) -> Result<bool, ApiError> {
        if !filters.is_empty() {
            return Ok(false);
        }
        let mut sql = Sql::new(
            "SELECT toStartOfHour(toDateTime(?, ?), 'UTC') = toDateTime(?, ?) \
             AND toStartOfHour(toDateTime(?, ?) + 1, 'UTC') = toDateTime(?, ?) + 1 AS aligned",
        );
        for time in [range.start_sql(), range.end_sql()] {
            sql.str(time.clone())
                .str(&range.timezone)
                .str(time)
                .str(&range.timezone);
        }
        let aligned = self
            .rows(&sql)
            .await?
            .first()
            .is_some_and(|r| int(r, "aligned") == 1);
        if aligned {
            metrics::counter!("analytics_insights_aggregate_queries_total").increment(1);
        }
        Ok(aligned)
    }

    /// All rows of a query, one JSON object each.
    pub async fn rows(&self, sql: &Sql) -> Result<Vec<Value>, ApiError> {
        let mut cursor = self
            .query(sql)
            .fetch_bytes("JSONEachRow")
            .map_err(store_error)?;
        let mut text = Vec::new();
        while let Some(chunk) = cursor.next().await.map_err(store_error)? {
            text.extend_from_slice(&chunk);
        }
        text.split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).map_err(|e| ApiError::Internal(Box::new(e))))
            .collect()
    }
}

/// ClickHouse refusals that are the client's doing become 400/504; the
/// rest are ours.
pub fn store_error(error: clickhouse::error::Error) -> ApiError {
    let text = error.to_string();
    if text.contains("Code: 159") || text.contains("TIMEOUT_EXCEEDED") {
        return ApiError::QueryTimeout(
            "the query took longer than the configured limit; narrow the range or filters",
        );
    }
    if text.contains("time zone") || text.contains("timezone") {
        return ApiError::bad_request("unknown time zone", Some("timezone".into()));
    }
    if text.contains("Code: 241") || text.contains("MEMORY_LIMIT_EXCEEDED") {
        return ApiError::Unavailable {
            reason: "the query needs more memory than it may use; narrow the range or filters",
        };
    }
    if matches!(
        error,
        clickhouse::error::Error::Network(_) | clickhouse::error::Error::TimedOut
    ) {
        return ApiError::Unavailable {
            reason: "the analytics store is unavailable, retry later",
        };
    }
    ApiError::Internal(Box::new(error))
}

fn num(row: &Value, key: &str) -> f64 {
    match &row[key] {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn int(row: &Value, key: &str) -> u64 {
    num(row, key).max(0.0) as u64
}

fn text(row: &Value, key: &str) -> String {
    match &row[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

const COUNTS: &str = "uniqExact(device_id) AS unique_visitors, \
     uniqExactIf(session_id, session_id != '') AS total_sessions, \
     countIf(name = 'screen_view') AS total_screen_views, count() AS total_events";

/// The same counts from `events_hourly`.
const HOURLY_COUNTS: &str = "uniqExactMerge(visitors) AS unique_visitors, \
     uniqExactIfMerge(sessions) AS total_sessions, \
     sumMerge(screen_views) AS total_screen_views, countMerge(events) AS total_events";

/// The headline numbers of one range.
pub async fn metrics(
    runner: &Runner,
    project: &str,
    range: &Range,
    filters: &[Filter],
) -> Result<Value, ApiError> {
    let filter = events_where(project, range, filters);
    let counts = if runner.aggregates_answer(range, filters).await? {
        let mut sql = Sql::new(&format!("SELECT {HOURLY_COUNTS} FROM events_hourly"));
        sql.append(&hourly_where(project, range));
        sql
    } else {
        let mut sql = Sql::new(&format!("SELECT {COUNTS} FROM events"));
        sql.append(&filter);
        sql
    };
    let mut sessions = Sql::new(
        "SELECT count() AS sessions, sum(duration) AS duration, countIf(views = 1) AS bounces \
         FROM (SELECT session_id, toUInt64(max(created_at) - min(created_at)) AS duration, \
         countIf(name = 'screen_view') AS views FROM events",
    );
    sessions
        .append(&filter)
        .push(" AND session_id != '' GROUP BY session_id)");
    let counts = runner.rows(&counts).await?;
    let sessions = runner.rows(&sessions).await?;
    let (c, s) = (
        counts.first().cloned().unwrap_or_default(),
        sessions.first().cloned().unwrap_or_default(),
    );
    let session_count = num(&s, "sessions");
    let ratio = |a: f64| {
        if session_count > 0.0 {
            a / session_count
        } else {
            0.0
        }
    };
    Ok(json!({
        "unique_visitors": int(&c, "unique_visitors"),
        "total_sessions": int(&c, "total_sessions"),
        "total_screen_views": int(&c, "total_screen_views"),
        "total_events": int(&c, "total_events"),
        "avg_session_duration": round2(ratio(num(&s, "duration"))),
        "bounce_rate": round2(100.0 * ratio(num(&s, "bounces"))),
        "views_per_session": round2(ratio(num(&c, "total_screen_views"))),
    }))
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Counts per bucket, every bucket of the range present.
pub async fn timeseries(
    runner: &Runner,
    project: &str,
    range: &Range,
    filters: &[Filter],
    interval: Interval,
) -> Result<Value, ApiError> {
    let hourly = runner.aggregates_answer(range, filters).await?;
    let (column, counts, table) = if hourly {
        ("hour", HOURLY_COUNTS, "events_hourly")
    } else {
        ("created_at", COUNTS, "events")
    };
    let mut sql = Sql::new(&format!(
        "SELECT {} AS date, {counts} FROM {table}",
        interval.bucket_sql(column)
    ));
    for _ in 0..interval.timezone_binds() {
        sql.str(&range.timezone);
    }
    if hourly {
        sql.append(&hourly_where(project, range));
    } else {
        sql.append(&events_where(project, range, filters));
    }
    sql.push(" GROUP BY date ORDER BY date");
    let found: HashMap<String, Value> = runner
        .rows(&sql)
        .await?
        .into_iter()
        .map(|row| (text(&row, "date"), row))
        .collect();
    let series: Vec<Value> = interval
        .labels(range)
        .into_iter()
        .map(|label| {
            let row = found.get(&label).cloned().unwrap_or_default();
            json!({
                "date": label,
                "unique_visitors": int(&row, "unique_visitors"),
                "total_sessions": int(&row, "total_sessions"),
                "total_screen_views": int(&row, "total_screen_views"),
                "total_events": int(&row, "total_events"),
            })
        })
        .collect();
    Ok(json!({"interval": interval.name(), "series": series}))
}

/// A top-list dimension: a column of page views, or a session's first or
/// last page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Column(&'static str),
    EntryPages,
    ExitPages,
}

/// The dimensions `top/:dimension` accepts.
pub const DIMENSIONS: &[(&str, Dimension)] = &[
    ("pages", Dimension::Column("path")),
    ("entry_pages", Dimension::EntryPages),
    ("exit_pages", Dimension::ExitPages),
    ("referrers", Dimension::Column("referrer_name")),
    ("referrer_types", Dimension::Column("referrer_type")),
    ("utm_source", Dimension::Column("utm_source")),
    ("utm_campaign", Dimension::Column("utm_campaign")),
    ("countries", Dimension::Column("country")),
    ("regions", Dimension::Column("region")),
    ("cities", Dimension::Column("city")),
    ("browsers", Dimension::Column("browser")),
    ("os", Dimension::Column("os")),
    ("devices", Dimension::Column("device")),
];

/// Page views grouped by a dimension, most viewed first.
pub async fn top(
    runner: &Runner,
    project: &str,
    range: &Range,
    filters: &[Filter],
    dimension: Dimension,
    limit: u64,
) -> Result<Vec<Value>, ApiError> {
    let filter = events_where(project, range, filters);
    let hourly = matches!(dimension, Dimension::Column(_))
        && runner.aggregates_answer(range, filters).await?;
    let mut sql = match dimension {
        Dimension::Column(column) if hourly => {
            let mut sql = Sql::new(
                "SELECT value, countMerge(views) AS views, uniqExactMerge(visitors) AS unique_visitors, \
                 uniqExactIfMerge(sessions) AS sessions FROM top_hourly",
            );
            sql.append(&hourly_where(project, range))
                .push(" AND dimension = ?")
                .str(column)
                .push(" GROUP BY value");
            sql
        }
        Dimension::Column(column) => {
            let mut sql = Sql::new(&format!(
                "SELECT {column} AS value, count() AS views, uniqExact(device_id) AS unique_visitors, \
                 uniqExactIf(session_id, session_id != '') AS sessions FROM events"
            ));
            sql.append(&filter)
                .push(" AND name = 'screen_view' GROUP BY value");
            sql
        }
        Dimension::EntryPages | Dimension::ExitPages => {
            let pick = if dimension == Dimension::EntryPages {
                "argMin"
            } else {
                "argMax"
            };
            let mut sql = Sql::new(&format!(
                "SELECT value, count() AS views, uniqExact(device) AS unique_visitors, count() AS sessions \
                 FROM (SELECT session_id, any(device_id) AS device, {pick}(path, created_at) AS value FROM events"
            ));
            sql.append(&filter).push(
                " AND name = 'screen_view' AND session_id != '' GROUP BY session_id) GROUP BY value",
            );
            sql
        }
    };
    sql.push(" ORDER BY views DESC, value ASC LIMIT ?")
        .uint(limit);
    Ok(runner
        .rows(&sql)
        .await?
        .into_iter()
        .map(|row| {
            json!({
                "value": text(&row, "value"),
                "views": int(&row, "views"),
                "unique_visitors": int(&row, "unique_visitors"),
                "sessions": int(&row, "sessions"),
            })
        })
        .collect())
}

/// One step of a funnel.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub filters: Vec<Filter>,
}

/// Who must complete the steps in order within the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunnelGroup {
    Session,
    Profile,
}

pub async fn funnel(
    runner: &Runner,
    project: &str,
    range: &Range,
    steps: &[Step],
    window_seconds: u64,
    group: FunnelGroup,
) -> Result<Value, ApiError> {
    let actor = match group {
        FunnelGroup::Session => "session_id",
        FunnelGroup::Profile => "if(profile_id != '', profile_id, device_id)",
    };
    let mut sql = Sql::new(&format!(
        "SELECT level, count() AS actors FROM (SELECT {actor} AS actor, windowFunnel(?)(created_at"
    ));
    sql.uint(window_seconds);
    for step in steps {
        sql.push(", name = ?").str(&step.name);
        for filter in &step.filters {
            sql.push(" AND ").append(&crate::sql::condition(filter));
        }
    }
    sql.push(") AS level FROM events")
        .append(&events_where(project, range, &[]))
        .push(&format!(
            " AND {actor} != '' GROUP BY actor) GROUP BY level"
        ));
    let levels: BTreeMap<u64, u64> = runner
        .rows(&sql)
        .await?
        .iter()
        .map(|row| (int(row, "level"), int(row, "actors")))
        .collect();
    let reached = |step: u64| -> u64 { levels.range(step..).map(|(_, n)| n).sum() };
    let first = reached(1);
    let out: Vec<Value> = steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let count = reached(i as u64 + 1);
            let rate = if first > 0 {
                100.0 * count as f64 / first as f64
            } else {
                0.0
            };
            json!({"name": step.name, "count": count, "conversion_rate": round2(rate)})
        })
        .collect();
    Ok(json!({"steps": out}))
}

/// Retention period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
}

pub async fn retention(
    runner: &Runner,
    project: &str,
    range: &Range,
    filters: &[Filter],
    period: Period,
) -> Result<Value, ApiError> {
    let (bucket, days) = match period {
        Period::Day => ("toDate", 1),
        Period::Week => ("toMonday", 7),
    };
    // Activity per device and period in the range; the cohort is the
    // period of a device's first event ever (up to the range's end). The
    // right side has one row per device, so ALL keeps every period of the
    // left; ANY would too on 18.16, but current servers read ANY INNER as
    // one row per key on both sides. They also require subquery names.
    let mut sql = Sql::new(&format!(
        "SELECT toString(cohort) AS cohort_date, intDiv(toInt32(period) - toInt32(cohort), {days}) AS k, \
         uniqExact(device_id) AS devices FROM (SELECT DISTINCT device_id, {bucket}(created_at, ?) AS period FROM events"
    ));
    sql.str(&range.timezone)
        .append(&events_where(project, range, filters))
        .push(&format!(
            ") AS activity ALL INNER JOIN (SELECT device_id, min({bucket}(created_at, ?)) AS cohort FROM events \
             WHERE project_id = ? AND created_at <= toDateTime(?, ?) AND {ANALYTICS_EVENTS} GROUP BY device_id) \
             AS cohorts USING device_id WHERE cohort >= {bucket}(toDateTime(?, ?), ?) GROUP BY cohort, k ORDER BY cohort, k"
        ));
    sql.str(&range.timezone)
        .str(project)
        .str(range.end_sql())
        .str(&range.timezone)
        .str(range.start_sql())
        .str(&range.timezone)
        .str(&range.timezone);
    let mut cohorts: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    for row in runner.rows(&sql).await? {
        cohorts
            .entry(text(&row, "cohort_date"))
            .or_default()
            .insert(int(&row, "k"), int(&row, "devices"));
    }
    let interval = if period == Period::Day {
        Interval::Day
    } else {
        Interval::Week
    };
    let labels = interval.labels(range);
    let out: Vec<Value> = cohorts
        .into_iter()
        .map(|(date, by_k)| {
            let later = labels.iter().filter(|l| **l >= date).count().max(1);
            let retained: Vec<u64> = (0..later as u64)
                .map(|k| by_k.get(&k).copied().unwrap_or(0))
                .collect();
            json!({"date": date, "size": retained[0], "retained": retained})
        })
        .collect();
    Ok(json!({"period": if period == Period::Day { "day" } else { "week" }, "cohorts": out}))
}

/// Unique visitors with an event dated in the last 5 minutes. Event time,
/// not arrival: an import or an app flushing its offline queue sends
/// history, not visitors (future times are clamped at the edge).
pub async fn live(runner: &Runner, project: &str) -> Result<Value, ApiError> {
    let mut sql = Sql::new(&format!(
        "SELECT uniqExact(device_id) AS count FROM events WHERE project_id = ? \
         AND created_at >= now() - 300 AND {ANALYTICS_EVENTS}"
    ));
    sql.str(project);
    let rows = runner.rows(&sql).await?;
    Ok(json!({"count": rows.first().map(|r| int(r, "count")).unwrap_or(0)}))
}

/// The columns the events list returns.
pub const EVENT_COLUMNS: &str = "id, name, device_id, profile_id, session_id, \
    toUnixTimestamp(created_at) AS created_at, toUnixTimestamp(received_at) AS received_at, path, origin, \
    referrer, referrer_name, referrer_type, utm_source, utm_medium, utm_campaign, utm_term, utm_content, \
    country, region, city, latitude, longitude, os, os_version, browser, browser_version, device, brand, \
    model, properties, sdk_name, sdk_version";

/// Order of the events list and of every export window.
const NEWEST_FIRST: &str = " ORDER BY created_at DESC, id DESC";

/// Newest-first events after an optional cursor `(created_at, id)`.
pub fn events_sql(
    project: &str,
    range: &Range,
    filters: &[Filter],
    cursor: Option<&(u64, String)>,
    limit: u64,
) -> Sql {
    let mut sql = Sql::new(&format!("SELECT {EVENT_COLUMNS} FROM events"));
    sql.append(&events_where(project, range, filters));
    if let Some((at, id)) = cursor {
        sql.push(" AND (toUnixTimestamp(created_at) < ? OR (toUnixTimestamp(created_at) = ? AND id < ?))")
            .uint(*at)
            .uint(*at)
            .str(id);
    }
    sql.push(NEWEST_FIRST).push(" LIMIT ?").uint(limit);
    sql
}

/// Matching events per UTC hour of the range, newest hour first: what an
/// export plans its windows from. Read from the sorting key's columns and
/// the filters' only, and grouped into at most one row per hour.
pub fn export_plan_sql(project: &str, range: &Range, filters: &[Filter]) -> Sql {
    let mut sql =
        Sql::new("SELECT toUInt32(toStartOfHour(created_at)) AS hour, count() AS n FROM events");
    sql.append(&events_where(project, range, filters))
        .push(" GROUP BY hour ORDER BY hour DESC");
    sql
}

/// Newest-first events of one export window: from `from` (inclusive) to
/// `until` (exclusive), in Unix seconds, an absent end unbounded.
pub fn export_window_sql(
    project: &str,
    range: &Range,
    filters: &[Filter],
    from: Option<u64>,
    until: Option<u64>,
) -> Sql {
    let mut sql = Sql::new(&format!("SELECT {EVENT_COLUMNS} FROM events"));
    sql.append(&events_where(project, range, filters));
    if let Some(from) = from {
        sql.push(" AND created_at >= toDateTime(?)").uint(from);
    }
    if let Some(until) = until {
        sql.push(" AND created_at < toDateTime(?)").uint(until);
    }
    sql.push(NEWEST_FIRST);
    sql
}

/// A profile's latest traits, aliases and activity; `None` when unknown.
pub async fn profile(
    runner: &Runner,
    project: &str,
    profile_id: &str,
) -> Result<Option<Value>, ApiError> {
    let mut traits = Sql::new(
        "SELECT argMax(first_name, version) AS first_name, argMax(last_name, version) AS last_name, \
         argMax(email, version) AS email, argMax(avatar, version) AS avatar, \
         argMax(properties, version) AS properties FROM profiles WHERE project_id = ? AND id = ?",
    );
    traits.str(project).str(profile_id);
    let mut aliases = Sql::new(
        "SELECT DISTINCT alias FROM profile_aliases WHERE project_id = ? AND profile_id = ? ORDER BY alias",
    );
    aliases.str(project).str(profile_id);
    let mut activity = Sql::new(
        "SELECT count() AS events, toUnixTimestamp(min(created_at)) AS first_seen, \
         toUnixTimestamp(max(created_at)) AS last_seen FROM events WHERE project_id = ? AND profile_id = ?",
    );
    activity.str(project).str(profile_id);
    let traits = runner
        .rows(&traits)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let activity = runner
        .rows(&activity)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let aliases: Vec<String> = runner
        .rows(&aliases)
        .await?
        .iter()
        .map(|r| text(r, "alias"))
        .collect();
    let events = int(&activity, "events");
    let properties: Value =
        serde_json::from_str(&text(&traits, "properties")).unwrap_or(Value::Null);
    if events == 0 && properties.is_null() {
        return Ok(None);
    }
    Ok(Some(json!({
        "id": profile_id,
        "first_name": text(&traits, "first_name"),
        "last_name": text(&traits, "last_name"),
        "email": text(&traits, "email"),
        "avatar": text(&traits, "avatar"),
        "properties": if properties.is_null() { json!({}) } else { properties },
        "aliases": aliases,
        "event_count": events,
        "first_seen": if events > 0 { int(&activity, "first_seen") } else { 0 },
        "last_seen": if events > 0 { int(&activity, "last_seen") } else { 0 },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    #[test]
    fn clickhouse_refusals_map_to_client_answers() {
        let timeout = clickhouse::error::Error::BadResponse(
            "Code: 159, e.displayText() = DB::Exception: Timeout exceeded: elapsed 1.2 seconds"
                .into(),
        );
        assert_eq!(store_error(timeout).status(), StatusCode::GATEWAY_TIMEOUT);
        let unknown = clickhouse::error::Error::BadResponse(
            "Code: 1000, e.displayText() = Cannot load time zone Mars/Base".into(),
        );
        assert_eq!(store_error(unknown).status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            store_error(clickhouse::error::Error::TimedOut).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
