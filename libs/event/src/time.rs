//! Event timestamps: what clients may send, and how we print them.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Latest accepted client time (year 2200), epoch milliseconds.
const MAX_MS: i64 = 7_258_118_400_000;

/// Parses an RFC 3339 string or epoch milliseconds into epoch milliseconds.
/// `None` for anything else, including dates before 1970 or after 2200.
pub fn parse_timestamp(value: &Value) -> Option<i64> {
    let ms = match value {
        Value::String(s) => {
            let s = s.trim();
            let parsed = OffsetDateTime::parse(s, &Rfc3339)
                .or_else(|_| OffsetDateTime::parse(&format!("{}Z", s.replace(' ', "T")), &Rfc3339))
                .ok()?;
            i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()?
        }
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))?,
        _ => return None,
    };
    (0..=MAX_MS).contains(&ms).then_some(ms)
}

/// The system clock in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-01-05T10:00:00.123Z`.
pub fn format_rfc3339_millis(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_rfc3339_space_separated_and_epoch_ms() {
        assert_eq!(
            parse_timestamp(&json!("2026-01-05T10:00:00.250Z")),
            Some(1_767_607_200_250)
        );
        assert_eq!(
            parse_timestamp(&json!("2026-01-05T12:00:00+02:00")),
            Some(1_767_607_200_000)
        );
        assert_eq!(
            parse_timestamp(&json!("2026-01-05 10:00:00")),
            Some(1_767_607_200_000)
        );
        assert_eq!(
            parse_timestamp(&json!(1_767_607_200_000i64)),
            Some(1_767_607_200_000)
        );
    }

    #[test]
    fn refuses_garbage_and_out_of_range() {
        assert_eq!(parse_timestamp(&json!("yesterday")), None);
        assert_eq!(parse_timestamp(&json!(-5)), None);
        assert_eq!(parse_timestamp(&json!(1e300)), None);
        assert_eq!(parse_timestamp(&json!(true)), None);
    }

    #[test]
    fn formats_with_milliseconds() {
        assert_eq!(
            format_rfc3339_millis(1_767_607_200_250),
            "2026-01-05T10:00:00.250Z"
        );
    }
}
