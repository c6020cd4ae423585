//! Every way a request can fail, and the one mapping to HTTP answers.

use analytics_event::ValidationError;
#[cfg(feature = "auth")]
use analytics_meta::{AuthError, MetaError};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::{Body, json};

/// A refused request. Clients get the message, never internals.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<String>,
    },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request body was not received in time")]
    Timeout,
    #[error("the body must be uncompressed JSON (content-type application/json or text/plain)")]
    UnsupportedMediaType,
    #[error("{reason}")]
    Unavailable { reason: &'static str },
    #[error("{0}")]
    TooManyRequests(&'static str),
    #[error("{0}")]
    QueryTimeout(&'static str),
    #[cfg(feature = "auth")]
    #[error("the metadata database is unavailable; retry shortly")]
    MetaUnavailable(#[source] MetaError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A metadata database that is down or overloaded is worth a retry (503);
/// any other metadata failure is ours (500).
#[cfg(feature = "auth")]
impl From<MetaError> for ApiError {
    fn from(err: MetaError) -> Self {
        match err {
            MetaError::Unavailable(_) => ApiError::MetaUnavailable(err),
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

/// A caller without valid credentials is refused (401, or 403 for a
/// browser origin the project does not allow); one whose address looks up
/// too many unknown ids is told to retry later (429).
#[cfg(feature = "auth")]
impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let message = match err {
            AuthError::MissingId => "missing openpanel-client-id header",
            AuthError::UnknownClient => "unknown client",
            AuthError::BadSecret => "invalid client secret",
            AuthError::MissingSecret => "missing openpanel-client-secret header",
            AuthError::OriginNotAllowed => {
                return ApiError::Forbidden("origin not allowed for this project");
            }
            AuthError::TooManyLookups => {
                return ApiError::TooManyRequests(
                    "too many unknown client ids from this address; retry shortly",
                );
            }
            AuthError::Meta(e) => return ApiError::from(e),
        };
        ApiError::Unauthorized(message)
    }
}

/// A refused body is the client's mistake, named where it lies.
impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        ApiError::bad_request(error.message, error.field)
    }
}

/// Encoding an answer or a stream entry of our own. (Client JSON is parsed
/// by validators that name the field at fault, never through `?`.)
impl From<serde_json::Error> for ApiError {
    fn from(error: serde_json::Error) -> Self {
        ApiError::Internal(Box::new(error))
    }
}

impl ApiError {
    /// A `400` naming the parameter or field at fault.
    pub fn bad_request(message: impl Into<String>, field: Option<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            field,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            #[cfg(feature = "auth")]
            ApiError::MetaUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::QueryTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "invalid",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::Timeout => "timeout",
            ApiError::UnsupportedMediaType => "media_type",
            ApiError::Unavailable { .. } => "unavailable",
            #[cfg(feature = "auth")]
            ApiError::MetaUnavailable(_) => "unavailable",
            ApiError::TooManyRequests(_) => "rate_limited",
            ApiError::QueryTimeout(_) => "query_timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn into_response(self) -> Response<Body> {
        match &self {
            ApiError::Internal(source) => tracing::error!(error = %source, "request failed"),
            #[cfg(feature = "auth")]
            ApiError::MetaUnavailable(source) => tracing::warn!(error = %source, "request refused"),
            _ => {}
        }
        let mut body = json!({"error": self.to_string()});
        if let ApiError::BadRequest {
            field: Some(field), ..
        } = &self
        {
            body["field"] = json!(field);
        }
        let mut response = json(self.status(), &body);
        if self.status() == StatusCode::SERVICE_UNAVAILABLE
            || self.status() == StatusCode::TOO_MANY_REQUESTS
        {
            response.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

#[cfg(all(test, feature = "auth"))]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_are_401_or_403_and_too_many_lookups_a_429_to_retry() {
        let status = |e: AuthError| ApiError::from(e).into_response();
        for refused in [
            AuthError::MissingId,
            AuthError::UnknownClient,
            AuthError::BadSecret,
            AuthError::MissingSecret,
        ] {
            assert_eq!(status(refused).status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(
            status(AuthError::OriginNotAllowed).status(),
            StatusCode::FORBIDDEN
        );
        let limited = status(AuthError::TooManyLookups);
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.headers()[hyper::header::RETRY_AFTER], "1");
    }

    #[test]
    fn an_unavailable_metadata_database_is_a_503_to_retry_and_other_failures_a_500() {
        let down = MetaError::from(sea_orm::DbErr::ConnectionAcquire(
            sea_orm::ConnAcquireErr::Timeout,
        ));
        let response = ApiError::from(down).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[hyper::header::RETRY_AFTER], "1");
        let broken = MetaError::Invalid {
            field: "secret_hash",
            message: "not hex".into(),
        };
        let response = ApiError::from(broken).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!response.headers().contains_key(hyper::header::RETRY_AFTER));
    }
}
