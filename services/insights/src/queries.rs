//! The questions the insights API answers, each as bound SQL over the raw
//! `events` table (and `profiles`), rows read as typed structs, answers as
//! typed structs.
//! Distinct devices and sessions are counted, and sessions grouped, by the
//! 64-bit `device_key` and `session_key` columns (migration 0007).
//!
//! A row type lists its fields in the order of its query's SELECT list,
//! each of the column's exact type on 18.16 and current servers alike
//! (RowBinary is read by position and carries no types): `count()`,
//! `uniqExact` and sums of `UInt64` are `UInt64`, `toUnixTimestamp` is
//! `UInt32`, `windowFunnel` is `UInt8`; anything else is cast in the SQL.

use std::collections::{BTreeMap, HashMap};

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::QueryError;
use crate::params::{Filter, Interval, Range};
use crate::runner::Runner;
use crate::sql::{
    ANALYTICS_EVENTS, IN_SESSION, SCREEN_VIEWS, Sql, condition, events_where, in_range, local_time,
};
use crate::summary::{self, Source};

/// The headline counts of a range but its sessions, which the query of
/// their lengths counts anyway (one exact distinct count of session keys
/// fewer per range: about half of this query's time at 5M events).
#[derive(Debug, Clone, Default, PartialEq, Row, Deserialize, Serialize)]
pub struct Counts {
    pub unique_visitors: u64,
    pub total_screen_views: u64,
    pub total_events: u64,
}

/// The counts of one bucket of a series.
fn bucket_counts(source: Source) -> String {
    format!(
        "uniqExact(device_key) AS unique_visitors, \
         uniqExactIf(session_key, {IN_SESSION}) AS total_sessions, \
         {} AS total_screen_views, {} AS total_events",
        source.screen_views(),
        source.events()
    )
}

/// The sessions of a range: how many, their summed length in seconds, and
/// how many saw one screen.
#[derive(Debug, Clone, Default, PartialEq, Row, Deserialize)]
struct SessionTotals {
    sessions: u64,
    duration: u64,
    bounces: u64,
}

/// The headline numbers of one range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub unique_visitors: u64,
    pub total_sessions: u64,
    pub total_screen_views: u64,
    pub total_events: u64,
    /// Seconds, rounded to two places.
    pub avg_session_duration: f64,
    /// Percent of sessions, rounded to two places.
    pub bounce_rate: f64,
    pub views_per_session: f64,
}

impl Metrics {
    fn of(counts: Counts, sessions: SessionTotals) -> Metrics {
        let session_count = sessions.sessions as f64;
        let ratio = |a: f64| {
            if session_count > 0.0 {
                a / session_count
            } else {
                0.0
            }
        };
        Metrics {
            avg_session_duration: round2(ratio(sessions.duration as f64)),
            bounce_rate: round2(100.0 * ratio(sessions.bounces as f64)),
            views_per_session: round2(ratio(counts.total_screen_views as f64)),
            unique_visitors: counts.unique_visitors,
            total_sessions: sessions.sessions,
            total_screen_views: counts.total_screen_views,
            total_events: counts.total_events,
        }
    }
}

/// A range's numbers beside those of the range just before it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub current: Metrics,
    pub previous: Metrics,
}

/// The counts of a range.
fn counts_sql(source: Source, project: &str, range: &Range, filters: &[Filter]) -> Sql {
    let mut sql = Sql::new(&format!(
        "SELECT uniqExact(device_key) AS unique_visitors, \
         {} AS total_screen_views, {} AS total_events",
        source.screen_views(),
        source.events()
    ));
    sql.append(&source.selection(project, range, filters));
    sql
}

fn sessions_sql(source: Source, project: &str, range: &Range, filters: &[Filter]) -> Sql {
    let (first, last) = source.first_and_last();
    let mut sql = Sql::new(&format!(
        "SELECT count() AS sessions, sum(duration) AS duration, countIf(views = 1) AS bounces \
         FROM (SELECT session_key, toUInt64({last} - {first}) AS duration, \
         {} AS views",
        source.screen_views()
    ));
    sql.append(&source.selection(project, range, filters))
        .push(&format!(" AND {IN_SESSION} GROUP BY session_key)"));
    sql
}

/// The headline numbers of `range` and of `previous`. The two ranges are
/// asked at once, and in each, the counts and the sessions.
pub async fn metrics(
    runner: &Runner,
    project: &str,
    range: &Range,
    previous: &Range,
    filters: &[Filter],
) -> Result<Comparison, QueryError> {
    let (now, before) = tokio::try_join!(
        runner.source(project, range, filters),
        runner.source(project, previous, filters),
    )?;
    let counts = [(now, range), (before, previous)]
        .map(|(source, r)| counts_sql(source, project, r, filters));
    let sessions = [(now, range), (before, previous)]
        .map(|(source, r)| sessions_sql(source, project, r, filters));
    let (current, earlier, current_sessions, earlier_sessions) = tokio::try_join!(
        runner.fetch_one::<Counts>(&counts[0]),
        runner.fetch_one::<Counts>(&counts[1]),
        runner.fetch_one::<SessionTotals>(&sessions[0]),
        runner.fetch_one::<SessionTotals>(&sessions[1]),
    )?;
    Ok(Comparison {
        current: Metrics::of(current, current_sessions),
        previous: Metrics::of(earlier, earlier_sessions),
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The counts of one bucket of a series, named by its label.
#[derive(Debug, Clone, Default, PartialEq, Row, Deserialize, Serialize)]
pub struct Bucket {
    pub date: String,
    pub unique_visitors: u64,
    pub total_sessions: u64,
    pub total_screen_views: u64,
    pub total_events: u64,
}

/// Counts per bucket, every bucket of the range present.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub interval: &'static str,
    pub series: Vec<Bucket>,
}

fn timeseries_sql(
    source: Source,
    project: &str,
    range: &Range,
    filters: &[Filter],
    interval: Interval,
) -> Sql {
    let mut sql = Sql::new("SELECT ");
    sql.append(&interval.bucket(source.time(), &range.timezone))
        .push(&format!(" AS date, {}", bucket_counts(source)))
        .append(&source.selection(project, range, filters))
        .push(" GROUP BY date ORDER BY date");
    sql
}

pub async fn timeseries(
    runner: &Runner,
    project: &str,
    range: &Range,
    filters: &[Filter],
    interval: Interval,
) -> Result<Series, QueryError> {
    let source = runner.source(project, range, filters).await?;
    let sql = timeseries_sql(source, project, range, filters, interval);
    let mut found: HashMap<String, Bucket> = runner
        .fetch_all::<Bucket>(&sql)
        .await?
        .into_iter()
        .map(|bucket| (bucket.date.clone(), bucket))
        .collect();
    let series = interval
        .labels(range)
        .into_iter()
        .map(|date| Bucket {
            date: date.clone(),
            ..found.remove(&date).unwrap_or_default()
        })
        .collect();
    Ok(Series {
        interval: interval.name(),
        series,
    })
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

/// One value of a top list.
#[derive(Debug, Clone, PartialEq, Row, Deserialize, Serialize)]
pub struct TopRow {
    pub value: String,
    pub views: u64,
    pub unique_visitors: u64,
    pub sessions: u64,
}

/// Page views grouped by a dimension, most viewed first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopList {
    pub dimension: &'static str,
    pub rows: Vec<TopRow>,
}

fn top_sql(
    source: Source,
    project: &str,
    range: &Range,
    filters: &[Filter],
    dimension: Dimension,
    limit: u64,
) -> Sql {
    let mut sql = match dimension {
        Dimension::Column(column) => {
            let mut sql = Sql::new(&format!(
                "SELECT {column} AS value, {} AS views, uniqExact(device_key) AS unique_visitors, \
                 uniqExactIf(session_key, {IN_SESSION}) AS sessions",
                source.screen_views()
            ));
            sql.append(&source.selection(project, range, filters))
                .push(&format!(" AND {} GROUP BY value", source.viewed()));
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
                 FROM (SELECT session_key, any(device_key) AS device, {pick}(path, created_at) AS value FROM events"
            ));
            sql.append(&events_where(project, range, filters))
                .push(&format!(
                    " AND {SCREEN_VIEWS} AND {IN_SESSION} GROUP BY session_key) GROUP BY value"
                ));
            sql
        }
    };
    sql.push(" ORDER BY views DESC, value ASC LIMIT ?")
        .uint(limit);
    sql
}

pub async fn top(
    runner: &Runner,
    project: &str,
    range: &Range,
    filters: &[Filter],
    dimension: Dimension,
    limit: u64,
) -> Result<Vec<TopRow>, QueryError> {
    let source = match dimension {
        Dimension::Column(column) if summary::COLUMNS.contains(&column) => {
            runner.source(project, range, filters).await?
        }
        _ => Source::Events,
    };
    runner
        .fetch_all::<TopRow>(&top_sql(source, project, range, filters, dimension, limit))
        .await
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

/// How many actors got exactly `level` steps into the funnel.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
struct Level {
    level: u8,
    actors: u64,
}

/// How many reached a step, and what share of those who took the first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelStep {
    pub name: String,
    pub count: u64,
    pub conversion_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Funnel {
    pub steps: Vec<FunnelStep>,
}

fn funnel_sql(
    project: &str,
    range: &Range,
    steps: &[Step],
    window_seconds: u64,
    group: FunnelGroup,
) -> Sql {
    let (actor, present) = match group {
        FunnelGroup::Session => ("session_key", IN_SESSION),
        FunnelGroup::Profile => (
            "if(profile_id != '', cityHash64(profile_id), device_key)",
            "(profile_id != '' OR device_id != '')",
        ),
    };
    let mut sql = Sql::new(&format!(
        "SELECT level, count() AS actors FROM (SELECT {actor} AS actor, windowFunnel(?)"
    ));
    sql.uint(window_seconds).push("(created_at");
    for step in steps {
        sql.push(", name = ?").str(&step.name);
        for filter in &step.filters {
            sql.push(" AND ").append(&condition(filter));
        }
    }
    sql.push(") AS level FROM events")
        .append(&events_where(project, range, &[]))
        .push(&format!(" AND {present} GROUP BY actor) GROUP BY level"));
    sql
}

pub async fn funnel(
    runner: &Runner,
    project: &str,
    range: &Range,
    steps: &[Step],
    window_seconds: u64,
    group: FunnelGroup,
) -> Result<Funnel, QueryError> {
    let sql = funnel_sql(project, range, steps, window_seconds, group);
    let levels: BTreeMap<u64, u64> = runner
        .fetch_all::<Level>(&sql)
        .await?
        .into_iter()
        .map(|row| (u64::from(row.level), row.actors))
        .collect();
    let reached = |step: u64| -> u64 { levels.range(step..).map(|(_, n)| n).sum() };
    let first = reached(1);
    let steps = steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let count = reached(i as u64 + 1);
            let rate = if first > 0 {
                100.0 * count as f64 / first as f64
            } else {
                0.0
            };
            FunnelStep {
                name: step.name.clone(),
                count,
                conversion_rate: round2(rate),
            }
        })
        .collect();
    Ok(Funnel { steps })
}

/// Retention period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
}

/// Devices of a cohort active `k` periods after its first.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
struct CohortRow {
    cohort_date: String,
    k: i64,
    devices: u64,
}

/// The devices first seen in a period, and how many of them came back in
/// each later period of the range (the first being the cohort's size).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cohort {
    pub date: String,
    pub size: u64,
    pub retained: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retention {
    pub period: &'static str,
    pub cohorts: Vec<Cohort>,
}

fn retention_sql(project: &str, range: &Range, filters: &[Filter], period: Period) -> Sql {
    let (bucket, days) = match period {
        Period::Day => ("toDate", 1),
        Period::Week => ("toMonday", 7),
    };
    let zone = range.timezone.as_str();
    // One pass over the project's events up to the range's end, grouped by
    // device: the cohort is the period of the device's first event (a
    // period is monotonic in time, so the period of the earliest event),
    // and the periods it was active in are those of its events within the
    // range that pass the filters. Each (device, period) is there once, so
    // counting rows counts devices.
    let mut sql = Sql::new(&format!(
        "SELECT toString(cohort) AS cohort_date, \
         toInt64(intDiv(toInt32(period) - toInt32(cohort), {days})) AS k, \
         count() AS devices \
         FROM (SELECT device_key, {bucket}(min(created_at), ?) AS cohort, \
         groupUniqArrayIf({bucket}(created_at, ?), "
    ));
    sql.str(zone).str(zone).append(&in_range(range));
    for filter in filters {
        sql.push(" AND ").append(&condition(filter));
    }
    sql.push(") AS periods FROM events WHERE project_id = ?")
        .str(project)
        .push(" AND created_at <= ")
        .append(&local_time(range.end_sql(), zone))
        .push(&format!(
            " AND {ANALYTICS_EVENTS} GROUP BY device_key HAVING cohort >= {bucket}("
        ))
        .append(&local_time(range.start_sql(), zone))
        .push(", ?)")
        .str(zone)
        .push(") AS per_device ARRAY JOIN periods AS period GROUP BY cohort, k ORDER BY cohort, k");
    sql
}

pub async fn retention(
    runner: &Runner,
    project: &str,
    range: &Range,
    filters: &[Filter],
    period: Period,
) -> Result<Retention, QueryError> {
    let sql = retention_sql(project, range, filters, period);
    let mut cohorts: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    for row in runner.fetch_all::<CohortRow>(&sql).await? {
        cohorts
            .entry(row.cohort_date)
            .or_default()
            .insert(u64::try_from(row.k).unwrap_or(0), row.devices);
    }
    let interval = if period == Period::Day {
        Interval::Day
    } else {
        Interval::Week
    };
    let labels = interval.labels(range);
    let cohorts = cohorts
        .into_iter()
        .map(|(date, by_k)| {
            let later = labels.iter().filter(|l| **l >= date).count().max(1);
            let retained: Vec<u64> = (0..later as u64)
                .map(|k| by_k.get(&k).copied().unwrap_or(0))
                .collect();
            Cohort {
                size: retained[0],
                date,
                retained,
            }
        })
        .collect();
    Ok(Retention {
        period: if period == Period::Day { "day" } else { "week" },
        cohorts,
    })
}

/// Unique visitors of the last minutes.
#[derive(Debug, Clone, Default, PartialEq, Row, Deserialize, Serialize)]
pub struct Live {
    pub count: u64,
}

fn live_sql(project: &str) -> Sql {
    let mut sql =
        Sql::new("SELECT uniqExact(device_key) AS count FROM events WHERE project_id = ?");
    sql.str(project).push(&format!(
        " AND created_at >= now() - 300 AND {ANALYTICS_EVENTS}"
    ));
    sql
}

/// Unique visitors with an event dated in the last 5 minutes. Event time,
/// not arrival: an import or an app flushing its offline queue sends
/// history, not visitors (future times are clamped at the edge).
pub async fn live(runner: &Runner, project: &str) -> Result<Live, QueryError> {
    runner.fetch_one::<Live>(&live_sql(project)).await
}

/// The columns the events list returns.
pub const EVENT_COLUMNS: &str = "id, name, device_id, profile_id, session_id, \
    toUnixTimestamp(created_at) AS created_at, toUnixTimestamp(received_at) AS received_at, path, origin, \
    referrer, referrer_name, referrer_type, utm_source, utm_medium, utm_campaign, utm_term, utm_content, \
    country, region, city, latitude, longitude, os, os_version, browser, browser_version, device, brand, \
    model, properties, sdk_name, sdk_version";

/// Order of the events list and of every export window.
const NEWEST_FIRST: &str = " ORDER BY created_at DESC, id DESC";

/// A page of the events list: the rows as ClickHouse writes them in JSON,
/// and the cursor of the next page when this one is full.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventsPage {
    pub events: Vec<Value>,
    pub next: Option<String>,
}

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
        sql.push(" AND (toUnixTimestamp(created_at) < ?")
            .uint(*at)
            .push(" OR (toUnixTimestamp(created_at) = ?")
            .uint(*at)
            .push(" AND id < ?))")
            .str(id);
    }
    sql.push(NEWEST_FIRST).push(" LIMIT ?").uint(limit);
    sql
}

pub async fn events(
    runner: &Runner,
    project: &str,
    range: &Range,
    filters: &[Filter],
    cursor: Option<&(u64, String)>,
    limit: u64,
) -> Result<EventsPage, QueryError> {
    let sql = events_sql(project, range, filters, cursor, limit);
    let events = runner.json_rows(&sql).await?;
    let next = match events.last() {
        Some(last) if events.len() as u64 == limit => Some(cursor_after(last)?),
        _ => None,
    };
    Ok(EventsPage { events, next })
}

/// The cursor of the page after the event `row`: `created_at:id`.
fn cursor_after(row: &Value) -> Result<String, QueryError> {
    let at = row
        .get("created_at")
        .and_then(Value::as_u64)
        .ok_or(QueryError::Row("created_at as a number"))?;
    let id = row
        .get("id")
        .and_then(Value::as_str)
        .ok_or(QueryError::Row("id as a string"))?;
    Ok(format!("{at}:{id}"))
}

/// Matching events in one UTC hour (Unix seconds of its start).
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct HourCount {
    pub hour: u32,
    pub n: u64,
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

/// A profile's latest traits; empty strings when it has none.
#[derive(Debug, Clone, Default, PartialEq, Row, Deserialize)]
struct Traits {
    first_name: String,
    last_name: String,
    email: String,
    avatar: String,
    /// JSON object text.
    properties: String,
}

#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
struct Alias {
    alias: String,
}

/// A profile's events: how many, and the first and last time (Unix seconds).
#[derive(Debug, Clone, Default, PartialEq, Row, Deserialize)]
struct Activity {
    events: u64,
    first_seen: u32,
    last_seen: u32,
}

/// A profile's latest traits, aliases and activity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub id: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub avatar: String,
    pub properties: Value,
    pub aliases: Vec<String>,
    pub event_count: u64,
    pub first_seen: u32,
    pub last_seen: u32,
}

fn profile_sql(project: &str, profile_id: &str) -> [Sql; 3] {
    let mut traits = Sql::new(
        "SELECT argMax(first_name, version) AS first_name, argMax(last_name, version) AS last_name, \
         argMax(email, version) AS email, argMax(avatar, version) AS avatar, \
         argMax(properties, version) AS properties FROM profiles WHERE project_id = ?",
    );
    traits.str(project).push(" AND id = ?").str(profile_id);
    let mut aliases = Sql::new("SELECT DISTINCT alias FROM profile_aliases WHERE project_id = ?");
    aliases
        .str(project)
        .push(" AND profile_id = ?")
        .str(profile_id)
        .push(" ORDER BY alias");
    let mut activity = Sql::new(
        "SELECT count() AS events, toUnixTimestamp(min(created_at)) AS first_seen, \
         toUnixTimestamp(max(created_at)) AS last_seen FROM events WHERE project_id = ?",
    );
    activity
        .str(project)
        .push(" AND profile_id = ?")
        .str(profile_id);
    [traits, aliases, activity]
}

/// A profile's latest traits, aliases and activity, asked at once; `None`
/// when unknown.
pub async fn profile(
    runner: &Runner,
    project: &str,
    profile_id: &str,
) -> Result<Option<Profile>, QueryError> {
    let [traits, aliases, activity] = profile_sql(project, profile_id);
    let (traits, aliases, activity) = tokio::try_join!(
        runner.fetch_one::<Traits>(&traits),
        runner.fetch_all::<Alias>(&aliases),
        runner.fetch_one::<Activity>(&activity),
    )?;
    let properties: Value = serde_json::from_str(&traits.properties).unwrap_or(Value::Null);
    if activity.events == 0 && properties.is_null() {
        return Ok(None);
    }
    let seen = |at: u32| if activity.events > 0 { at } else { 0 };
    Ok(Some(Profile {
        id: profile_id.to_owned(),
        first_name: traits.first_name,
        last_name: traits.last_name,
        email: traits.email,
        avatar: traits.avatar,
        properties: if properties.is_null() {
            Value::Object(serde_json::Map::new())
        } else {
            properties
        },
        aliases: aliases.into_iter().map(|a| a.alias).collect(),
        event_count: activity.events,
        first_seen: seen(activity.first_seen),
        last_seen: seen(activity.last_seen),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::filters;
    use crate::runner::check_columns;
    use analytics_http::ApiError;
    use hyper::StatusCode;
    use serde_json::json;

    fn range(start: &str, end: &str, zone: &str) -> Range {
        let params = [("startDate", start), ("endDate", end), ("timezone", zone)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::params::range(&params, 400).unwrap()
    }

    fn assert_bound(sql: &Sql) {
        assert_eq!(
            sql.text.matches('?').count(),
            sql.binds.len(),
            "{}",
            sql.text
        );
    }

    #[test]
    fn clickhouse_refusals_map_to_client_answers() {
        let answer = |e: clickhouse::error::Error| ApiError::from(QueryError::from(e)).status();
        let timeout = clickhouse::error::Error::BadResponse(
            "Code: 159, e.displayText() = DB::Exception: Timeout exceeded: elapsed 1.2 seconds"
                .into(),
        );
        assert_eq!(answer(timeout), StatusCode::GATEWAY_TIMEOUT);
        let unknown = clickhouse::error::Error::BadResponse(
            "Code: 1000, e.displayText() = Cannot load time zone Mars/Base".into(),
        );
        assert_eq!(answer(unknown), StatusCode::BAD_REQUEST);
        assert_eq!(
            answer(clickhouse::error::Error::TimedOut),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    /// Every query selects its row type's fields, in order, every value bound.
    #[test]
    fn every_query_selects_what_its_rows_read() {
        let r = range("2026-01-05", "2026-01-11", "Asia/Kolkata");
        let f = filters(
            Some(r#"[{"key":"country","value":"KR"},{"key":"properties.n","operator":"gt","value":2}]"#),
            "filters",
        )
        .unwrap();
        for source in [Source::Events, Source::SessionHours] {
            let sql = counts_sql(source, "p", &r, &f);
            check_columns::<Counts>(&sql.text).unwrap();
            assert_bound(&sql);
            for interval in [
                Interval::Hour,
                Interval::Day,
                Interval::Week,
                Interval::Month,
            ] {
                let sql = timeseries_sql(source, "p", &r, &f, interval);
                check_columns::<Bucket>(&sql.text).unwrap();
                assert_bound(&sql);
            }
            for (_, dimension) in DIMENSIONS {
                let sql = top_sql(source, "p", &r, &f, *dimension, 10);
                check_columns::<TopRow>(&sql.text).unwrap();
                assert_bound(&sql);
            }
            let sql = sessions_sql(source, "p", &r, &f);
            check_columns::<SessionTotals>(&sql.text).unwrap();
            assert_bound(&sql);
        }
        let steps = [
            Step {
                name: "a".into(),
                filters: f.clone(),
            },
            Step {
                name: "b".into(),
                filters: Vec::new(),
            },
        ];
        for group in [FunnelGroup::Session, FunnelGroup::Profile] {
            let sql = funnel_sql("p", &r, &steps, 3600, group);
            check_columns::<Level>(&sql.text).unwrap();
            assert_bound(&sql);
        }
        for period in [Period::Day, Period::Week] {
            let sql = retention_sql("p", &r, &f, period);
            check_columns::<CohortRow>(&sql.text).unwrap();
            assert_bound(&sql);
        }
        let sql = live_sql("p");
        check_columns::<Live>(&sql.text).unwrap();
        assert_bound(&sql);
        let [traits, aliases, activity] = profile_sql("p", "user");
        check_columns::<Traits>(&traits.text).unwrap();
        check_columns::<Alias>(&aliases.text).unwrap();
        check_columns::<Activity>(&activity.text).unwrap();
        for sql in [traits, aliases, activity] {
            assert_bound(&sql);
        }
        let sql = export_plan_sql("p", &r, &f);
        check_columns::<HourCount>(&sql.text).unwrap();
        assert_bound(&sql);
        assert_bound(&events_sql("p", &r, &f, Some(&(5, "x".into())), 10));
        assert_bound(&export_window_sql("p", &r, &f, Some(1), Some(2)));
    }

    #[test]
    fn retention_binds_each_value_at_its_placeholder() {
        let r = range("2026-01-05", "2026-01-11", "Asia/Kolkata");
        let sql = retention_sql("proj", &r, &[], Period::Week);
        // The values in the order of their placeholders: the zones of the
        // cohort's and the activity's periods, the range's conditions, the
        // project and the end of the scan, then the cohorts' lower bound.
        let strings: Vec<&str> = sql
            .binds
            .iter()
            .map(|b| match b {
                crate::sql::Bound::Str(s) => s.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            strings,
            [
                "Asia/Kolkata",
                "Asia/Kolkata",
                "2026-01-05 00:00:00",
                "Asia/Kolkata",
                "2026-01-11 23:59:59",
                "Asia/Kolkata",
                "proj",
                "2026-01-11 23:59:59",
                "Asia/Kolkata",
                "2026-01-05 00:00:00",
                "Asia/Kolkata",
                "Asia/Kolkata",
            ]
        );
        assert!(sql.text.contains(&format!(
            "WHERE project_id = ? AND created_at <= toDateTime(?, ?) AND {ANALYTICS_EVENTS}"
        )));
        assert!(
            sql.text
                .contains("HAVING cohort >= toMonday(toDateTime(?, ?), ?)) AS per_device")
        );
    }

    /// The answers keep their JSON: integers stay integers, rates and
    /// averages are floats rounded to two places.
    #[test]
    fn answers_keep_their_json() {
        let counts = Counts {
            unique_visitors: 3,
            total_screen_views: 5,
            total_events: 9,
        };
        let sessions = SessionTotals {
            sessions: 3,
            duration: 100,
            bounces: 1,
        };
        let m = Metrics::of(counts.clone(), sessions);
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"unique_visitors": 3, "total_sessions": 3, "total_screen_views": 5, "total_events": 9,
                   "avg_session_duration": 33.33, "bounce_rate": 33.33, "views_per_session": 1.67})
        );
        let none = Metrics::of(Counts::default(), SessionTotals::default());
        let text = serde_json::to_value(&none).unwrap().to_string();
        assert_eq!(
            text,
            r#"{"avg_session_duration":0.0,"bounce_rate":0.0,"total_events":0,"total_screen_views":0,"total_sessions":0,"unique_visitors":0,"views_per_session":0.0}"#
        );
        let whole = Metrics::of(
            Counts {
                total_screen_views: 32,
                ..counts
            },
            SessionTotals {
                sessions: 2,
                duration: 10,
                bounces: 0,
            },
        );
        assert!(
            serde_json::to_value(&whole)
                .unwrap()
                .to_string()
                .contains(r#""avg_session_duration":5.0,"bounce_rate":0.0"#)
        );
        let page = EventsPage {
            events: vec![json!({"id": "e1", "created_at": 17})],
            next: None,
        };
        assert_eq!(
            serde_json::to_value(&page).unwrap().to_string(),
            r#"{"events":[{"created_at":17,"id":"e1"}],"next":null}"#
        );
    }

    #[test]
    fn the_next_cursor_comes_from_typed_fields_or_fails() {
        assert_eq!(
            cursor_after(&json!({"id": "e9", "created_at": 1_771_200_000u64})).unwrap(),
            "1771200000:e9"
        );
        for row in [
            json!({"id": "e9"}),
            json!({"created_at": 5}),
            json!({"id": 9, "created_at": 5}),
            json!({"id": "e9", "created_at": "5"}),
        ] {
            assert_eq!(
                cursor_after(&row).unwrap_err().status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{row}"
            );
        }
    }
}
