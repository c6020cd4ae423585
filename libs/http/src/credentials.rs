//! The credentials a request presents, read from its headers.

use analytics_meta::Credentials;
use hyper::HeaderMap;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `openpanel-client-id`, `openpanel-client-secret` and `origin`
/// headers of a request (a value that is not text counts as absent).
pub fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    Credentials {
        id: header(headers, "openpanel-client-id"),
        secret: header(headers, "openpanel-client-secret"),
        origin: header(headers, "origin"),
    }
}
