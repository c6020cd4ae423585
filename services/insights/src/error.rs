//! Why a query got no answer, and which answer the client gets instead.
//!
//! ClickHouse server exceptions are classified by their numeric code, read
//! from the `Code: N` that every server version puts in its message
//! (`Code: 159, e.displayText() = …` on 18.16, `Code: 159. DB::Exception: …`
//! on current servers, `Poco::Exception. Code: 1000, …` for 18.16's Poco
//! exceptions); transport failures by the client's error kind.

use analytics_http::ApiError;
use hyper::StatusCode;

/// The ClickHouse exception codes the insights API answers for.
pub mod code {
    /// Current servers' answer to an unknown time zone ("Cannot load time
    /// zone …"), among other bad function arguments.
    pub const BAD_ARGUMENTS: u32 = 36;
    /// `max_execution_time` reached.
    pub const TIMEOUT_EXCEEDED: u32 = 159;
    /// The server runs as many queries as it may (`max_concurrent_queries`).
    pub const TOO_MANY_SIMULTANEOUS_QUERIES: u32 = 202;
    /// Between the servers of a cluster.
    pub const SOCKET_TIMEOUT: u32 = 209;
    pub const NETWORK_ERROR: u32 = 210;
    pub const ALL_CONNECTION_TRIES_FAILED: u32 = 279;
    /// `max_memory_usage` reached.
    pub const MEMORY_LIMIT_EXCEEDED: u32 = 241;
    /// 18.16's answer to an unknown time zone ("Cannot load time zone …"),
    /// among other exceptions of its Poco library.
    pub const POCO_EXCEPTION: u32 = 1000;
}

/// A query that got no answer from the store.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The server stopped the query at its time limit.
    #[error("the query ran past its time limit: {0}")]
    Timeout(#[source] clickhouse::error::Error),
    /// The server stopped the query at its memory limit.
    #[error("the query ran past its memory limit: {0}")]
    MemoryLimit(#[source] clickhouse::error::Error),
    /// The server does not know the range's time zone.
    #[error("the server does not know the time zone: {0}")]
    UnknownTimeZone(#[source] clickhouse::error::Error),
    /// The server could not be reached, did not answer in time, or is
    /// overloaded.
    #[error("the analytics store is unavailable: {0}")]
    Unavailable(#[source] clickhouse::error::Error),
    /// Any other failure of the store: ours to fix.
    #[error("the analytics store failed the query: {0}")]
    Store(#[source] clickhouse::error::Error),
    /// The query's SELECT list does not name the fields its rows are read
    /// into, in their order (RowBinary rows carry no names).
    #[error("the query selects {selected:?}, its rows are read as {fields:?}")]
    Columns {
        selected: Vec<String>,
        fields: &'static [&'static str],
    },
    /// Every slot for a query stayed taken for the query's whole time limit.
    #[error("no query slot came free within {0:?}")]
    Busy(std::time::Duration),
    /// A JSON row without what the query selects.
    #[error("a row lacks {0}")]
    Row(&'static str),
    /// A JSON row that is not JSON.
    #[error("a row is not JSON: {0}")]
    Json(#[source] serde_json::Error),
}

impl From<clickhouse::error::Error> for QueryError {
    fn from(error: clickhouse::error::Error) -> QueryError {
        use clickhouse::error::Error;
        let text = match &error {
            Error::Network(_) | Error::TimedOut => return QueryError::Unavailable(error),
            Error::BadResponse(text) => text,
            _ => return QueryError::Store(error),
        };
        match exception_code(text) {
            Some(code::TIMEOUT_EXCEEDED) => QueryError::Timeout(error),
            Some(code::MEMORY_LIMIT_EXCEEDED) => QueryError::MemoryLimit(error),
            // Both codes are general ones: the message says whether a time
            // zone is at fault.
            Some(code::BAD_ARGUMENTS | code::POCO_EXCEPTION) if text.contains("time zone") => {
                QueryError::UnknownTimeZone(error)
            }
            Some(
                code::TOO_MANY_SIMULTANEOUS_QUERIES
                | code::SOCKET_TIMEOUT
                | code::NETWORK_ERROR
                | code::ALL_CONNECTION_TRIES_FAILED,
            ) => QueryError::Unavailable(error),
            _ => QueryError::Store(error),
        }
    }
}

impl QueryError {
    /// The HTTP status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            QueryError::MemoryLimit(_) | QueryError::Unavailable(_) | QueryError::Busy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            QueryError::UnknownTimeZone(_) => StatusCode::BAD_REQUEST,
            QueryError::Store(_)
            | QueryError::Columns { .. }
            | QueryError::Row(_)
            | QueryError::Json(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The ClickHouse exception code, when the server raised one.
    pub fn error_code(&self) -> Option<u32> {
        match self {
            QueryError::Timeout(e)
            | QueryError::MemoryLimit(e)
            | QueryError::UnknownTimeZone(e)
            | QueryError::Unavailable(e)
            | QueryError::Store(e) => match e {
                clickhouse::error::Error::BadResponse(text) => exception_code(text),
                _ => None,
            },
            QueryError::Busy(_)
            | QueryError::Columns { .. }
            | QueryError::Row(_)
            | QueryError::Json(_) => None,
        }
    }
}

/// The client's answer: a clear message, never the store's internals.
impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> ApiError {
        match error {
            QueryError::Timeout(_) => ApiError::QueryTimeout(
                "the query took longer than the configured limit; narrow the range or filters",
            ),
            QueryError::MemoryLimit(_) => ApiError::Unavailable {
                reason: "the query needs more memory than it may use; narrow the range or filters",
            },
            QueryError::UnknownTimeZone(_) => {
                ApiError::bad_request("unknown time zone", Some("timezone".into()))
            }
            QueryError::Unavailable(_) => ApiError::Unavailable {
                reason: "the analytics store is unavailable, retry later",
            },
            QueryError::Busy(_) => ApiError::Unavailable {
                reason: "the analytics store is busy with other questions, retry later",
            },
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

/// The `N` of the first `Code: N` in a server's message.
fn exception_code(text: &str) -> Option<u32> {
    let (_, after) = text.split_once("Code: ")?;
    let digits = after
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after.len());
    after[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error;

    fn server(text: &str) -> QueryError {
        QueryError::from(Error::BadResponse(text.into()))
    }

    /// Messages as the servers send them (18.16's verbatim from the test server).
    const TIMEOUT_18: &str = "Code: 159, e.displayText() = DB::Exception: Timeout exceeded: \
        elapsed 3.000000091 seconds, maximum: 1, e.what() = DB::Exception";
    const TIMEOUT_NOW: &str = "Code: 159. DB::Exception: Timeout exceeded: elapsed 1.2 seconds, \
        maximum: 1. (TIMEOUT_EXCEEDED) (version 25.8.1.1)";
    const ZONE_18: &str = "Poco::Exception. Code: 1000, e.code() = 0, e.displayText() = \
        Exception: Cannot load time zone Mars/Base, e.what() = Exception";
    const ZONE_NOW: &str = "Code: 36. DB::Exception: Cannot load time zone Mars/Base: In scope \
        SELECT toDateTime(0, 'Mars/Base'). (BAD_ARGUMENTS)";
    const MEMORY_18: &str = "Code: 241, e.displayText() = DB::Exception: Memory limit (for query) \
        exceeded: would use 9.54 MiB, maximum: 976.56 KiB, e.what() = DB::Exception";
    const MEMORY_NOW: &str = "Code: 241. DB::Exception: Memory limit (for query) exceeded: would \
        use 9.54 MiB. (MEMORY_LIMIT_EXCEEDED)";

    #[test]
    fn codes_are_read_from_every_format() {
        assert_eq!(exception_code(TIMEOUT_18), Some(159));
        assert_eq!(exception_code(TIMEOUT_NOW), Some(159));
        assert_eq!(exception_code(ZONE_18), Some(1000));
        assert_eq!(exception_code(ZONE_NOW), Some(36));
        // As the client spells it from the exception-code header of an empty body.
        assert_eq!(exception_code("Code: 241"), Some(241));
        assert_eq!(exception_code("bad response"), None);
        assert_eq!(exception_code("Code: x"), None);
        assert_eq!(server(ZONE_NOW).error_code(), Some(36));
        assert_eq!(QueryError::from(Error::TimedOut).error_code(), None);
    }

    #[test]
    fn server_exceptions_are_classified_by_code() {
        for (text, status) in [
            (TIMEOUT_18, StatusCode::GATEWAY_TIMEOUT),
            (TIMEOUT_NOW, StatusCode::GATEWAY_TIMEOUT),
            (MEMORY_18, StatusCode::SERVICE_UNAVAILABLE),
            (MEMORY_NOW, StatusCode::SERVICE_UNAVAILABLE),
            (ZONE_18, StatusCode::BAD_REQUEST),
            (ZONE_NOW, StatusCode::BAD_REQUEST),
            (
                "Code: 202. DB::Exception: Too many simultaneous queries. Maximum: 100. \
                 (TOO_MANY_SIMULTANEOUS_QUERIES)",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            // A general code, but no time zone at fault: ours.
            (
                "Code: 36. DB::Exception: Illegal argument of windowFunnel. (BAD_ARGUMENTS)",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                "Poco::Exception. Code: 1000, e.code() = 13, e.displayText() = Access to file \
                 denied",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            // A message that merely mentions a timeout, under another code.
            (
                "Code: 47. DB::Exception: Missing columns: 'timeout_exceeded' \
                 (UNKNOWN_IDENTIFIER)",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                "Code: 62. DB::Exception: Syntax error (SYNTAX_ERROR)",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ] {
            assert_eq!(server(text).status(), status, "{text}");
            assert_eq!(ApiError::from(server(text)).status(), status, "{text}");
        }
    }

    #[test]
    fn transport_failures_are_unavailable() {
        for error in [Error::TimedOut, Error::Network("connection refused".into())] {
            let error = QueryError::from(error);
            assert!(matches!(error, QueryError::Unavailable(_)), "{error}");
            assert_eq!(
                ApiError::from(error).status(),
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
        assert_eq!(
            QueryError::from(Error::NotEnoughData).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn clients_get_a_clear_message_naming_the_field() {
        match ApiError::from(server(ZONE_18)) {
            ApiError::BadRequest { message, field } => {
                assert_eq!(message, "unknown time zone");
                assert_eq!(field.as_deref(), Some("timezone"));
            }
            other => panic!("{other:?}"),
        }
        let internal = ApiError::from(server("Code: 62. DB::Exception: Syntax error"));
        assert_eq!(internal.to_string(), "internal error");
        // The source is kept for the log.
        let ApiError::Internal(source) = internal else {
            panic!("not internal")
        };
        assert!(source.to_string().contains("Syntax error"), "{source}");
    }
}
