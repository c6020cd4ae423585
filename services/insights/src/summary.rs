//! When a question may read `session_hours` (migration 0012) instead of
//! `events`: one row per hour, session, device and set of session-level
//! values, about a sixth of the rows of a month of events.
//!
//! The table answers exactly what `events` answers when
//! - the range starts and ends on the hour in a zone whose offset is a
//!   whole number of hours throughout it (its rows are UTC hours),
//! - every filter names one of its columns, and
//! - its count of the range's events equals `events`' own. A materialized
//!   view misses the rows of an insert that failed after `events` took
//!   them (the sink's retry finds them stored and writes no more); such a
//!   range is answered from `events`, counted in
//!   `analytics_insights_summary_checks_total{result="differs"}` and logged.
//!
//! The count is asked once for the questions of one range that arrive
//! together (a dashboard asks a dozen at once) and kept for
//! [`VERDICT_TTL`]: an answer read from the table reflects every row stored
//! up to at most that long before it was asked, and whatever both tables
//! took since.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, Offset, TimeZone};
use clickhouse::Row;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::error::QueryError;
use crate::params::{Filter, Range, Target};
use crate::runner::Runner;
use crate::sql::{ANALYTICS_EVENTS, SCREEN_VIEWS, Sql, column_in_range, condition, events_where};

/// The columns of `session_hours` a filter or a top list may name.
pub const COLUMNS: &[&str] = &[
    "referrer_name",
    "referrer_type",
    "utm_source",
    "utm_campaign",
    "country",
    "region",
    "city",
    "browser",
    "os",
    "device",
];

/// How long the agreement of the two tables over one range is trusted.
pub const VERDICT_TTL: Duration = Duration::from_secs(1);

/// Verdicts kept at most; past this, expired ones are dropped first.
const MAX_VERDICTS: usize = 1024;

/// The table a question over one range reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Events,
    SessionHours,
}

impl Source {
    /// ` FROM table WHERE` the project, the range, analytics events only
    /// (all `session_hours` holds) and the filters.
    pub fn selection(self, project: &str, range: &Range, filters: &[Filter]) -> Sql {
        match self {
            Source::Events => {
                let mut sql = Sql::new(" FROM events");
                sql.append(&events_where(project, range, filters));
                sql
            }
            Source::SessionHours => {
                let mut sql = Sql::new(" FROM session_hours WHERE project_id = ? AND ");
                sql.str(project).append(&hours_in_range(range));
                for filter in filters {
                    sql.push(" AND ").append(&condition(filter));
                }
                sql
            }
        }
    }

    /// The time a row's bucket is taken from.
    pub fn time(self) -> &'static str {
        self.pick("created_at", "hour")
    }

    /// Screen views among the rows aggregated.
    pub fn screen_views(self) -> String {
        match self {
            Source::Events => format!("countIf({SCREEN_VIEWS})"),
            Source::SessionHours => "sumMerge(screen_views)".to_owned(),
        }
    }

    /// Events among the rows aggregated.
    pub fn events(self) -> &'static str {
        self.pick("count()", "countMerge(event_count)")
    }

    /// The first and last time among the rows aggregated.
    pub fn first_and_last(self) -> (&'static str, &'static str) {
        (
            self.pick("min(created_at)", "minMerge(first_at)"),
            self.pick("max(created_at)", "maxMerge(last_at)"),
        )
    }

    /// A row that is or holds a screen view.
    pub fn viewed(self) -> &'static str {
        self.pick(SCREEN_VIEWS, "finalizeAggregation(screen_views) > 0")
    }

    fn pick(self, events: &'static str, session_hours: &'static str) -> &'static str {
        match self {
            Source::Events => events,
            Source::SessionHours => session_hours,
        }
    }
}

/// Whether the range and filters are ones `session_hours` can answer, its
/// agreement with `events` aside.
pub fn covers(range: &Range, filters: &[Filter]) -> bool {
    let on_the_hour = range.start.minute() == 0
        && range.start.second() == 0
        && range.end.minute() == 59
        && range.end.second() == 59;
    on_the_hour
        && filters
            .iter()
            .all(|f| matches!(&f.target, Target::Column(c) if COLUMNS.contains(c)))
        && whole_hour_offsets(range)
}

/// Whether the offset of the range's zone is a whole number of hours at
/// every hour of the range (and a day either side, which covers the
/// range's instants whatever the offset).
fn whole_hour_offsets(range: &Range) -> bool {
    let Ok(zone) = range.timezone.parse::<chrono_tz::Tz>() else {
        return false;
    };
    let naive = |text: String| NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S").ok();
    let (Some(start), Some(end)) = (naive(range.start_sql()), naive(range.end_sql())) else {
        return false;
    };
    let (from, to) = (
        start - chrono::Duration::days(1),
        end + chrono::Duration::days(1),
    );
    let mut at = from;
    while at <= to {
        let offset = zone.offset_from_utc_datetime(&at).fix().local_minus_utc();
        if offset % 3600 != 0 {
            return false;
        }
        at += chrono::Duration::hours(1);
    }
    true
}

/// `hour` within `range`: the hours wholly inside it, which are all of its
/// events when [`covers`] holds.
pub fn hours_in_range(range: &Range) -> Sql {
    column_in_range("hour", range)
}

/// The events of one range as each table counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Row, Deserialize)]
struct Agreement {
    events: u64,
    summarised: u64,
}

fn agreement_sql(project: &str, range: &Range) -> Sql {
    let mut sql = Sql::new("SELECT (SELECT count() FROM events WHERE project_id = ? AND ");
    sql.str(project)
        .append(&column_in_range("created_at", range))
        .push(&format!(
            " AND {ANALYTICS_EVENTS}) AS events, \
             (SELECT countMerge(event_count) FROM session_hours WHERE project_id = ? AND "
        ))
        .str(project)
        .append(&hours_in_range(range))
        .push(") AS summarised");
    sql
}

type Key = (String, String, String, String);

struct Verdict {
    asked: Instant,
    agrees: Arc<OnceCell<bool>>,
}

/// The recent verdicts on whether `session_hours` agrees with `events`
/// over a project's range; the questions of one range that arrive together
/// share one count.
#[derive(Default)]
pub struct Verdicts {
    recent: Mutex<HashMap<Key, Verdict>>,
}

impl Verdicts {
    /// The table to answer a question over `range` with `filters` from.
    pub async fn source(
        &self,
        runner: &Runner,
        project: &str,
        range: &Range,
        filters: &[Filter],
    ) -> Result<Source, QueryError> {
        if !covers(range, filters) {
            return Ok(Source::Events);
        }
        let cell = self.cell(project, range);
        let agrees = cell
            .get_or_try_init(|| async {
                let counts = runner
                    .fetch_one::<Agreement>(&agreement_sql(project, range))
                    .await?;
                let agrees = counts.events == counts.summarised;
                let result = if agrees { "agrees" } else { "differs" };
                metrics::counter!("analytics_insights_summary_checks_total", "result" => result)
                    .increment(1);
                if !agrees {
                    tracing::warn!(
                        project,
                        start = %range.start,
                        end = %range.end,
                        events = counts.events,
                        summarised = counts.summarised,
                        "session_hours disagrees with events over a range; answering from events"
                    );
                }
                Ok::<bool, QueryError>(agrees)
            })
            .await?;
        Ok(if *agrees {
            Source::SessionHours
        } else {
            Source::Events
        })
    }

    /// The verdict of a range asked less than [`VERDICT_TTL`] ago, or a
    /// new one to fill. A count that failed leaves its cell empty, and the
    /// next question asks again.
    fn cell(&self, project: &str, range: &Range) -> Arc<OnceCell<bool>> {
        let key = (
            project.to_owned(),
            range.start_sql(),
            range.end_sql(),
            range.timezone.clone(),
        );
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= MAX_VERDICTS {
            recent.retain(|_, v| now.duration_since(v.asked) < VERDICT_TTL);
        }
        if recent.len() >= MAX_VERDICTS {
            recent.clear();
        }
        let verdict = recent.entry(key).or_insert_with(|| Verdict {
            asked: now,
            agrees: Arc::new(OnceCell::new()),
        });
        if now.duration_since(verdict.asked) >= VERDICT_TTL {
            *verdict = Verdict {
                asked: now,
                agrees: Arc::new(OnceCell::new()),
            };
        }
        verdict.agrees.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::filters;
    use time::macros::datetime;

    fn range(start: time::PrimitiveDateTime, end: time::PrimitiveDateTime, zone: &str) -> Range {
        Range {
            start,
            end,
            timezone: zone.to_owned(),
        }
    }

    fn first_two_days_of_march(zone: &str) -> Range {
        range(
            datetime!(2026-03-01 00:00:00),
            datetime!(2026-03-02 23:59:59),
            zone,
        )
    }

    /// Whether the summary serves `start..=end` in `zone`, unfiltered.
    fn covered(start: time::PrimitiveDateTime, end: time::PrimitiveDateTime, zone: &str) -> bool {
        covers(&range(start, end, zone), &[])
    }

    fn march_covered(zone: &str) -> bool {
        covered(
            datetime!(2026-03-01 00:00:00),
            datetime!(2026-03-31 23:59:59),
            zone,
        )
    }

    #[test]
    fn whole_days_in_whole_hour_zones_are_covered() {
        for zone in ["UTC", "Asia/Seoul", "America/New_York", "Europe/Berlin"] {
            assert!(march_covered(zone), "{zone}");
        }
    }

    #[test]
    fn part_hours_and_part_hour_zones_are_not() {
        let day = datetime!(2026-03-01 23:59:59);
        assert!(!covered(datetime!(2026-03-01 00:30:00), day, "UTC"));
        assert!(!covered(
            datetime!(2026-03-01 00:00:00),
            datetime!(2026-03-01 10:15:59),
            "UTC"
        ));
        for zone in ["Asia/Kolkata", "America/St_Johns", "Asia/Kathmandu"] {
            assert!(!march_covered(zone), "{zone}");
        }
    }

    #[test]
    fn a_zone_that_left_a_part_hour_offset_is_covered_only_after() {
        // Pyongyang was UTC+8:30 until 2018-05-04 23:30 local time.
        let zone = "Asia/Pyongyang";
        assert!(!covered(
            datetime!(2018-05-01 00:00:00),
            datetime!(2018-05-31 23:59:59),
            zone
        ));
        assert!(covered(
            datetime!(2018-06-01 00:00:00),
            datetime!(2018-06-30 23:59:59),
            zone
        ));
    }

    #[test]
    fn only_filters_on_its_columns_are_covered() {
        let days = first_two_days_of_march("UTC");
        let on = |text: &str| filters(Some(text), "filters").unwrap();
        assert!(covers(
            &days,
            &on(
                r#"[{"key":"country","value":"SE"},{"key":"browser","operator":"contains","value":"fire"}]"#
            )
        ));
        assert!(!covers(&days, &on(r#"[{"key":"path","value":"/"}]"#)));
        assert!(!covers(
            &days,
            &on(r#"[{"key":"country","value":"SE"},{"key":"properties.plan","value":"pro"}]"#)
        ));
    }

    #[test]
    fn the_agreement_binds_every_value_and_reads_as_its_row() {
        let days = first_two_days_of_march("Asia/Seoul");
        let sql = agreement_sql("p", &days);
        assert_eq!(sql.text.matches('?').count(), sql.binds.len());
        crate::runner::check_columns::<Agreement>(&sql.text).unwrap();
    }
}
