//! Query parameters of the insights API, validated into typed values.
//! Anything that reaches SQL as an identifier comes from a fixed list here;
//! everything else is bound as a value.

use std::collections::HashMap;

use analytics_http::ApiError;
use serde_json::Value;
use time::macros::format_description;
use time::{Date, Duration, PrimitiveDateTime, Time};

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
    /// IANA name, checked by the server when the query runs.
    pub timezone: String,
}

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

    /// The range of the same length just before this one.
    pub fn previous(&self) -> Range {
        let length = self.end - self.start + Duration::SECOND;
        Range {
            start: self.start - length,
            end: self.start - Duration::SECOND,
            timezone: self.timezone.clone(),
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
    let timezone = params
        .get("timezone")
        .map(String::as_str)
        .unwrap_or("UTC")
        .to_owned();
    if timezone.is_empty()
        || timezone.len() > 64
        || !timezone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
    {
        return Err(bad(
            "timezone",
            "must be an IANA time zone name such as Europe/Berlin",
        ));
    }
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

    /// SQL of the bucket label of the time `column` in the time zone bound as `?`.
    pub fn bucket_sql(self, column: &str) -> String {
        match self {
            Interval::Hour => {
                format!("formatDateTime(toStartOfHour({column}, ?), '%Y-%m-%dT%H:00:00', ?)")
            }
            Interval::Day => format!("toString(toDate({column}, ?))"),
            Interval::Week => format!("toString(toMonday({column}, ?))"),
            Interval::Month => format!("toString(toStartOfMonth({column}, ?))"),
        }
    }

    /// How many times the time zone is bound in [`Interval::bucket_sql`].
    pub fn timezone_binds(self) -> usize {
        if self == Interval::Hour { 2 } else { 1 }
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
                    t += Duration::HOUR;
                }
            }
            Interval::Day | Interval::Week | Interval::Month => {
                let mut day = range.start_date();
                while day <= range.end_date() {
                    let label = match self {
                        Interval::Week => {
                            day - Duration::days(i64::from(day.weekday().number_days_from_monday()))
                        }
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
        let p = r.previous();
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
