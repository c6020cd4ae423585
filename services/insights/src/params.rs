//! Query parameters of the insights API, validated into typed values.
//! Anything that reaches SQL as an identifier comes from a fixed list here;
//! everything else is bound as a value.

use std::collections::HashMap;

use analytics_http::ApiError;
use serde_json::Value;
use time::macros::{datetime, format_description};
use time::{Date, Duration, PrimitiveDateTime, Time};

use crate::sql::Sql;
use crate::zone;

/// Parsed `a=b&c=d` pairs (percent-decoded; the last of a repeated key wins).
pub fn query_pairs(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn bad(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message, Some(param.to_owned()))
}

/// An inclusive range of local times in one time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub start: PrimitiveDateTime,
    pub end: PrimitiveDateTime,
    /// IANA name, in the tz database's spelling.
    pub timezone: String,
}

/// The earliest local time a range may cover. ClickHouse stores times from
/// 1970-01-01 00:00 UTC; a few days later, every local time of every zone
/// is past it, and 1970-01-05 is the first Monday, so a weekly bucket
/// starts there too.
const EARLIEST: PrimitiveDateTime = datetime!(1970-01-05 00:00:00);
/// The latest: ClickHouse's times end in February 2106 (UTC), and 18.16
/// computes calendars up to the end of 2105.
const LATEST: PrimitiveDateTime = datetime!(2105-12-31 23:59:59);
const OUT_OF_STORE: &str = "must lie between 1970-01-05 and 2105-12-31, the times the store keeps";

const SQL_TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

impl Range {
    /// `YYYY-MM-DD hh:mm:ss` of the start, as ClickHouse parses it in `timezone`.
    pub fn start_sql(&self) -> String {
        self.start.format(SQL_TIME).unwrap_or_default()
    }
    pub fn end_sql(&self) -> String {
        self.end.format(SQL_TIME).unwrap_or_default()
    }

    /// The range of the same length just before this one; a `400` naming
    /// `startDate` when it would begin before the earliest time stored.
    pub fn previous(&self) -> Result<Range, ApiError> {
        let length = self.end - self.start + Duration::SECOND;
        let start = self.start.checked_sub(length).filter(|s| *s >= EARLIEST);
        let end = self.start.checked_sub(Duration::SECOND);
        match (start, end) {
            (Some(start), Some(end)) => Ok(Range {
                start,
                end,
                timezone: self.timezone.clone(),
            }),
            _ => Err(bad(
                "startDate",
                "the previous period (as long as the range, just before it) must not begin \
                 before 1970-01-05, the earliest time the store keeps",
            )),
        }
    }

    pub fn start_date(&self) -> Date {
        self.start.date()
    }
    pub fn end_date(&self) -> Date {
        self.end.date()
    }
}

/// Parses `startDate`/`endDate` (a date or a date-time, local to
/// `timezone`), at most `max_days` apart.
pub fn range(params: &HashMap<String, String>, max_days: i64) -> Result<Range, ApiError> {
    let timezone = match params.get("timezone") {
        None => "UTC",
        Some(name) => zone::canonical(name).ok_or_else(|| {
            bad(
                "timezone",
                "must be an IANA time zone name such as Europe/Berlin",
            )
        })?,
    }
    .to_owned();
    let start = params
        .get("startDate")
        .ok_or_else(|| bad("startDate", "startDate is required"))?;
    let end = params
        .get("endDate")
        .ok_or_else(|| bad("endDate", "endDate is required"))?;
    let start = local_time(start, false).ok_or_else(|| {
        bad(
            "startDate",
            "must be an ISO 8601 date (2026-01-05) or date-time (2026-01-05T10:00:00)",
        )
    })?;
    let end = local_time(end, true).ok_or_else(|| {
        bad(
            "endDate",
            "must be an ISO 8601 date (2026-01-05) or date-time (2026-01-05T10:00:00)",
        )
    })?;
    if !(EARLIEST..=LATEST).contains(&start) {
        return Err(bad("startDate", OUT_OF_STORE));
    }
    if !(EARLIEST..=LATEST).contains(&end) {
        return Err(bad("endDate", OUT_OF_STORE));
    }
    if end < start {
        return Err(bad("endDate", "must not be before startDate"));
    }
    if (end - start).whole_days() >= max_days {
        return Err(bad(
            "endDate",
            format!("the range may span at most {max_days} days"),
        ));
    }
    Ok(Range {
        start,
        end,
        timezone,
    })
}

/// A date (start or end of that day) or a date-time without offset.
fn local_time(text: &str, end_of_day: bool) -> Option<PrimitiveDateTime> {
    let text = text.trim();
    let date_format = format_description!("[year]-[month]-[day]");
    if let Ok(date) = Date::parse(text, date_format) {
        let time = if end_of_day {
            Time::from_hms(23, 59, 59).ok()?
        } else {
            Time::MIDNIGHT
        };
        return Some(PrimitiveDateTime::new(date, time));
    }
    let text = text.trim_end_matches('Z').replace(' ', "T");
    let text = text.split('.').next()?;
    let with_seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let without = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    PrimitiveDateTime::parse(text, with_seconds)
        .or_else(|_| PrimitiveDateTime::parse(text, without))
        .ok()
}

/// Bucket size of a time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
    Week,
    Month,
}

impl Interval {
    pub fn parse(value: Option<&str>) -> Result<Interval, ApiError> {
        match value.unwrap_or("day") {
            "hour" => Ok(Interval::Hour),
            "day" => Ok(Interval::Day),
            "week" => Ok(Interval::Week),
            "month" => Ok(Interval::Month),
            _ => Err(bad("interval", "must be one of hour, day, week, month")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
        }
    }

    /// The bucket label of the time `column` in `timezone`, as SQL.
    pub fn bucket(self, column: &str, timezone: &str) -> Sql {
        let mut sql = Sql::default();
        let function = match self {
            Interval::Hour => {
                sql.push(&format!("formatDateTime(toStartOfHour({column}, ?)"))
                    .str(timezone)
                    .push(", '%Y-%m-%dT%H:00:00', ?)")
                    .str(timezone);
                return sql;
            }
            Interval::Day => "toDate",
            Interval::Week => "toMonday",
            Interval::Month => "toStartOfMonth",
        };
        sql.push(&format!("toString({function}({column}, ?))"))
            .str(timezone);
        sql
    }

    /// Every bucket label of the range, so empty buckets can be shown as zeros.
    pub fn labels(self, range: &Range) -> Vec<String> {
        let mut labels = Vec::new();
        match self {
            Interval::Hour => {
                let mut t = range
                    .start
                    .replace_minute(0)
                    .and_then(|t| t.replace_second(0))
                    .unwrap_or(range.start);
                while t <= range.end {
                    labels.push(format!("{}T{:02}:00:00", t.date(), t.hour()));
                    t = match t.checked_add(Duration::HOUR) {
                        Some(next) => next,
                        None => break,
                    };
                }
            }
            Interval::Day | Interval::Week | Interval::Month => {
                let mut day = range.start_date();
                while day <= range.end_date() {
                    let label = match self {
                        Interval::Week => day
                            .checked_sub(Duration::days(i64::from(
                                day.weekday().number_days_from_monday(),
                            )))
                            .unwrap_or(day),
                        Interval::Month => day.replace_day(1).unwrap_or(day),
                        _ => day,
                    };
                    if labels.last() != Some(&label.to_string()) {
                        labels.push(label.to_string());
                    }
                    day = match day.next_day() {
                        Some(next) => next,
                        None => break,
                    };
                }
            }
        }
        labels
    }
}

/// `limit`, 1 to `max`.
pub fn limit(params: &HashMap<String, String>, default: u64, max: u64) -> Result<u64, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| bad("limit", format!("must be a whole number from 1 to {max}"))),
    }
}

/// A condition on events: on the event name, a column, or a property.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub target: Target,
    pub operator: Operator,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A column of `events` from [`FILTER_COLUMNS`].
    Column(&'static str),
    /// A key of the event's `properties`.
    Property(String),
}

/// Columns filters may name.
pub const FILTER_COLUMNS: &[&str] = &[
    "name",
    "path",
    "origin",
    "referrer",
    "referrer_name",
    "referrer_type",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "country",
    "region",
    "city",
    "os",
    "browser",
    "device",
    "brand",
    "model",
    "profile_id",
    "device_id",
    "session_id",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Neq,
    Contains,
    Gt,
    Lt,
    Exists,
}

/// Parses a JSON array of `{"key", "operator", "value"}`; `key` is `name`,
/// a column, or `properties.<key>`.
pub fn filters(text: Option<&str>, param: &str) -> Result<Vec<Filter>, ApiError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| bad(param, format!("must be a JSON array of filters: {e}")))?;
    filters_from_json(&value, param)
}

pub fn filters_from_json(value: &Value, param: &str) -> Result<Vec<Filter>, ApiError> {
    let Value::Array(items) = value else {
        return Err(bad(param, "must be a JSON array of filters"));
    };
    if items.len() > 20 {
        return Err(bad(param, "at most 20 filters"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = format!("{param}[{i}]");
            let key = item
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&field, "\"key\" is required"))?;
            let target = match key.strip_prefix("properties.") {
                Some(prop) if !prop.is_empty() && prop.len() <= 200 => {
                    Target::Property(prop.to_owned())
                }
                Some(_) => return Err(bad(&field, "property name must be 1 to 200 characters")),
                None => Target::Column(
                    FILTER_COLUMNS
                        .iter()
                        .find(|c| **c == key)
                        .copied()
                        .ok_or_else(|| {
                            bad(
                                &field,
                                format!(
                                    "unknown key; use properties.<name> or one of {}",
                                    FILTER_COLUMNS.join(", ")
                                ),
                            )
                        })?,
                ),
            };
            let operator = match item.get("operator").and_then(Value::as_str).unwrap_or("eq") {
                "eq" => Operator::Eq,
                "neq" => Operator::Neq,
                "contains" => Operator::Contains,
                "gt" => Operator::Gt,
                "lt" => Operator::Lt,
                "exists" => Operator::Exists,
                _ => {
                    return Err(bad(
                        &field,
                        "operator must be eq, neq, contains, gt, lt or exists",
                    ));
                }
            };
            let value = item.get("value").cloned().unwrap_or(Value::Null);
            let ok = match operator {
                Operator::Exists => true,
                Operator::Gt | Operator::Lt => value.as_f64().is_some_and(f64::is_finite),
                _ => value.is_string() || value.is_number() || value.is_boolean(),
            };
            if !ok {
                return Err(bad(
                    &field,
                    "value does not suit the operator (gt/lt take numbers)",
                ));
            }
            Ok(Filter {
                target,
                operator,
                value,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ranges_are_inclusive_local_days() {
        let r = range(
            &params(&[
                ("startDate", "2026-01-05"),
                ("endDate", "2026-01-06"),
                ("timezone", "Asia/Seoul"),
            ]),
            400,
        )
        .unwrap();
        assert_eq!(
            (r.start_sql().as_str(), r.end_sql().as_str()),
            ("2026-01-05 00:00:00", "2026-01-06 23:59:59")
        );
        let p = r.previous().unwrap();
        assert_eq!(
            (p.start_sql().as_str(), p.end_sql().as_str()),
            ("2026-01-03 00:00:00", "2026-01-04 23:59:59")
        );
        let r = range(
            &params(&[
                ("startDate", "2026-01-05T10:30:00Z"),
                ("endDate", "2026-01-05 12:00"),
            ]),
            400,
        )
        .unwrap();
        assert_eq!(
            (r.start_sql().as_str(), r.end_sql().as_str()),
            ("2026-01-05 10:30:00", "2026-01-05 12:00:00")
        );
    }

    #[test]
    fn bad_ranges_name_the_parameter() {
        let field = |p: &[(&str, &str)]| range(&params(p), 31).unwrap_err().to_string();
        assert!(field(&[("endDate", "2026-01-05")]).contains("startDate"));
        assert!(
            field(&[("startDate", "2026-01-05"), ("endDate", "2026-01-04")]).contains("before")
        );
        assert!(
            field(&[("startDate", "2026-01-05"), ("endDate", "2026-03-04")]).contains("31 days")
        );
        assert!(
            field(&[("startDate", "yesterday"), ("endDate", "2026-01-04")]).contains("ISO 8601")
        );
        assert!(
            field(&[
                ("startDate", "2026-01-05"),
                ("endDate", "2026-01-05"),
                ("timezone", "UTC'; DROP")
            ])
            .contains("IANA")
        );
    }

    #[test]
    fn dates_outside_the_store_name_the_parameter() {
        let refused = |start: &str, end: &str, zone: &str| match range(
            &params(&[("startDate", start), ("endDate", end), ("timezone", zone)]),
            400,
        ) {
            Err(ApiError::BadRequest { field, .. }) => field,
            other => panic!("{start}..{end}: {other:?}"),
        };
        for (start, end, field) in [
            ("-9999-01-01", "-9999-01-01", "startDate"),
            ("0000-01-01", "0000-01-02", "startDate"),
            ("1970-01-01", "1970-01-06", "startDate"),
            ("1970-01-04T23:59:59", "1970-01-06", "startDate"),
            ("9999-12-31", "9999-12-31", "startDate"),
            ("2105-12-31", "2106-01-01", "endDate"),
            ("2105-12-31T00:00", "9999-12-31T23:59:59", "endDate"),
        ] {
            assert_eq!(
                refused(start, end, "Pacific/Kiritimati").as_deref(),
                Some(field)
            );
        }
        // The first and last days the store keeps, in the zones farthest from UTC.
        for zone in ["Pacific/Kiritimati", "Etc/GMT+12"] {
            let first = range(
                &params(&[
                    ("startDate", "1970-01-05"),
                    ("endDate", "1970-01-05"),
                    ("timezone", zone),
                ]),
                400,
            )
            .unwrap();
            assert_eq!(Interval::Week.labels(&first), ["1970-01-05"]);
            let last = range(
                &params(&[
                    ("startDate", "2105-12-31"),
                    ("endDate", "2105-12-31"),
                    ("timezone", zone),
                ]),
                400,
            )
            .unwrap();
            assert_eq!(Interval::Hour.labels(&last).len(), 24);
            assert_eq!(last.previous().unwrap().start_sql(), "2105-12-30 00:00:00");
        }
    }

    #[test]
    fn the_previous_period_must_fit_too() {
        let r = |start: &str, end: &str| {
            range(&params(&[("startDate", start), ("endDate", end)]), 400).unwrap()
        };
        let p = r("1970-01-06", "1970-01-06").previous().unwrap();
        assert_eq!(
            (p.start_sql().as_str(), p.end_sql().as_str()),
            ("1970-01-05 00:00:00", "1970-01-05 23:59:59")
        );
        match r("1970-01-05", "1970-01-06").previous() {
            Err(ApiError::BadRequest { field, .. }) => {
                assert_eq!(field.as_deref(), Some("startDate"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn time_zones_are_canonical_names() {
        let zone = |name: &str| {
            range(
                &params(&[
                    ("startDate", "2026-01-05"),
                    ("endDate", "2026-01-05"),
                    ("timezone", name),
                ]),
                400,
            )
            .map(|r| r.timezone)
        };
        assert_eq!(zone("europe/paris").unwrap(), "Europe/Paris");
        for name in [
            "//////usr/////share/zoneinfo/////Europe//Paris",
            "/etc/localtime",
            "Mars/Olympus",
            "",
        ] {
            assert!(
                zone(name).unwrap_err().to_string().contains("IANA"),
                "{name}"
            );
        }
    }

    #[test]
    fn labels_cover_every_bucket() {
        let r = range(
            &params(&[("startDate", "2026-01-30"), ("endDate", "2026-02-10")]),
            400,
        )
        .unwrap();
        assert_eq!(Interval::Day.labels(&r).len(), 12);
        assert_eq!(
            Interval::Week.labels(&r),
            ["2026-01-26", "2026-02-02", "2026-02-09"]
        );
        assert_eq!(Interval::Month.labels(&r), ["2026-01-01", "2026-02-01"]);
        let r = range(
            &params(&[
                ("startDate", "2026-01-05T22:15:00"),
                ("endDate", "2026-01-06T01:00:00"),
            ]),
            400,
        )
        .unwrap();
        assert_eq!(
            Interval::Hour.labels(&r),
            [
                "2026-01-05T22:00:00",
                "2026-01-05T23:00:00",
                "2026-01-06T00:00:00",
                "2026-01-06T01:00:00"
            ]
        );
    }

    #[test]
    fn filters_take_known_columns_or_properties() {
        let f = filters(Some(r#"[{"key":"properties.plan","operator":"eq","value":"pro"},{"key":"country","value":"KR"},{"key":"properties.n","operator":"gt","value":3}]"#), "filters").unwrap();
        assert_eq!(f[0].target, Target::Property("plan".into()));
        assert_eq!(f[1].target, Target::Column("country"));
        assert_eq!(f[2].operator, Operator::Gt);
        for bad_filter in [
            r#"{"key":"name"}"#,
            r#"[{"key":"name; DROP TABLE events"}]"#,
            r#"[{"key":"properties."}]"#,
            r#"[{"key":"name","operator":"like"}]"#,
            r#"[{"key":"properties.n","operator":"gt","value":"3"}]"#,
            r#"[{"key":"name","value":{"a":1}}]"#,
            "not json",
        ] {
            assert!(
                filters(Some(bad_filter), "filters").is_err(),
                "{bad_filter}"
            );
        }
    }
}
