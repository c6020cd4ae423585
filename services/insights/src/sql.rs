//! SQL text with its bound values, in the order of their `?`s. Values are
//! bound by the ClickHouse client (quoted and escaped there); only fixed
//! identifiers from this crate are ever written into the text.

use analytics_store::Store;
use serde_json::Value;

use crate::params::{Filter, Operator, Range, Target};

pub use analytics_store::{ANALYTICS_EVENTS, IN_SESSION, SCREEN_VIEWS};

#[derive(Debug, Clone)]
pub enum Bound {
    Str(String),
    F64(f64),
    U64(u64),
}

#[derive(Debug, Clone, Default)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bound>,
}

impl Sql {
    pub fn new(text: &str) -> Sql {
        Sql {
            text: text.to_owned(),
            binds: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    pub fn str(&mut self, value: impl Into<String>) -> &mut Sql {
        self.binds.push(Bound::Str(value.into()));
        self
    }

    pub fn num(&mut self, value: f64) -> &mut Sql {
        self.binds.push(Bound::F64(value));
        self
    }

    pub fn uint(&mut self, value: u64) -> &mut Sql {
        self.binds.push(Bound::U64(value));
        self
    }

    /// Appends another fragment with its values.
    pub fn append(&mut self, other: &Sql) -> &mut Sql {
        self.text.push_str(&other.text);
        self.binds.extend(other.binds.iter().cloned());
        self
    }

    /// The query with every value bound.
    pub fn query(&self, store: &Store) -> clickhouse::query::Query {
        debug_assert_eq!(
            self.text.matches('?').count(),
            self.binds.len(),
            "{}",
            self.text
        );
        let mut query = store.client().query(&self.text);
        for bound in &self.binds {
            query = match bound {
                Bound::Str(s) => query.bind(s.as_str()),
                Bound::F64(f) => query.bind(*f),
                Bound::U64(u) => query.bind(*u),
            };
        }
        query
    }
}

/// `created_at` within `range` (local times parsed in its time zone).
pub fn in_range(range: &Range) -> Sql {
    column_in_range("created_at", range)
}

/// A time column within `range`.
pub fn column_in_range(column: &str, range: &Range) -> Sql {
    let mut sql = Sql::new(&format!("{column} >= "));
    sql.append(&local_time(range.start_sql(), &range.timezone))
        .push(&format!(" AND {column} <= "))
        .append(&local_time(range.end_sql(), &range.timezone));
    sql
}

/// The instant of the local time `time` (`YYYY-MM-DD hh:mm:ss`) in `timezone`.
pub fn local_time(time: String, timezone: &str) -> Sql {
    let mut sql = Sql::new("toDateTime(?, ?)");
    sql.str(time).str(timezone);
    sql
}

/// The conditions every analytics query starts from: one project, the
/// range, analytics events only, and the user's filters.
pub fn events_where(project: &str, range: &Range, filters: &[Filter]) -> Sql {
    let mut sql = Sql::new(" WHERE project_id = ? AND ");
    sql.str(project).append(&in_range(range));
    sql.push(" AND ").push(ANALYTICS_EVENTS);
    for filter in filters {
        sql.push(" AND ").append(&condition(filter));
    }
    sql
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One filter as a condition.
pub fn condition(filter: &Filter) -> Sql {
    let mut sql = Sql::default();
    let number = filter.value.as_f64();
    match (&filter.target, filter.operator) {
        (Target::Column(col), Operator::Eq) => {
            sql.push(&format!("{col} = ?"))
                .str(value_text(&filter.value));
        }
        (Target::Column(col), Operator::Neq) => {
            sql.push(&format!("{col} != ?"))
                .str(value_text(&filter.value));
        }
        (Target::Column(col), Operator::Contains) => {
            sql.push(&format!("positionCaseInsensitive({col}, ?) > 0"))
                .str(value_text(&filter.value));
        }
        (Target::Column(col), Operator::Gt) => {
            sql.push(&format!("toFloat64OrZero({col}) > ?"))
                .num(number.unwrap_or(0.0));
        }
        (Target::Column(col), Operator::Lt) => {
            sql.push(&format!("toFloat64OrZero({col}) < ?"))
                .num(number.unwrap_or(0.0));
        }
        (Target::Column(col), Operator::Exists) => {
            sql.push(&format!("{col} != ''"));
        }
        (Target::Property(key), op) => property_condition(&mut sql, key, op, &filter.value),
    }
    sql
}

fn property_condition(sql: &mut Sql, key: &str, op: Operator, value: &Value) {
    let compare = match op {
        Operator::Eq => "=",
        Operator::Neq => "!=",
        Operator::Gt => ">",
        Operator::Lt => "<",
        Operator::Contains => {
            sql.push("positionCaseInsensitive(visitParamExtractString(properties, ?), ?) > 0")
                .str(key)
                .str(value_text(value));
            return;
        }
        Operator::Exists => {
            sql.push("visitParamHas(properties, ?)").str(key);
            return;
        }
    };
    match value {
        Value::Number(n) => {
            sql.push(&format!(
                "visitParamExtractFloat(properties, ?) {compare} ?"
            ))
            .str(key)
            .num(n.as_f64().unwrap_or(0.0));
        }
        Value::Bool(b) => {
            sql.push(&format!("visitParamExtractBool(properties, ?) {compare} ?"))
                .str(key)
                .uint(u64::from(*b));
        }
        other => {
            sql.push(&format!(
                "visitParamExtractString(properties, ?) {compare} ?"
            ))
            .str(key)
            .str(value_text(other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::filters;

    #[test]
    fn every_value_is_bound_and_counted() {
        let f = filters(
            Some(r#"[{"key":"properties.plan","value":"x' OR 1=1 --"},{"key":"country","operator":"contains","value":"K"},
                     {"key":"properties.n","operator":"gt","value":2},{"key":"properties.ok","value":true},
                     {"key":"path","operator":"exists"},{"key":"properties.q","operator":"exists"}]"#),
            "filters",
        )
        .unwrap();
        let range = crate::params::range(
            &[("startDate", "2026-01-05"), ("endDate", "2026-01-05")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            10,
        )
        .unwrap();
        let sql = events_where("p", &range, &f);
        assert_eq!(sql.text.matches('?').count(), sql.binds.len());
        assert!(!sql.text.contains("OR 1=1"), "{}", sql.text);
        assert!(
            sql.text
                .contains("visitParamExtractString(properties, ?) = ?")
        );
        assert!(sql.text.contains("positionCaseInsensitive(country, ?) > 0"));
        assert!(
            sql.text
                .contains("visitParamExtractBool(properties, ?) = ?")
        );
    }
}
