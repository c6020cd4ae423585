//! The credentials a request presents, read from its headers.

use analytics_meta::Credentials;
use hyper::HeaderMap;
use hyper::header::{HeaderName, ORIGIN};

/// Named once: a header looked up by a string is parsed and checked on
/// every request.
static CLIENT_ID: HeaderName = HeaderName::from_static("openpanel-client-id");
static CLIENT_SECRET: HeaderName = HeaderName::from_static("openpanel-client-secret");

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `openpanel-client-id`, `openpanel-client-secret` and `origin`
/// headers of a request (a value that is not text counts as absent).
pub fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    Credentials {
        id: header(headers, &CLIENT_ID),
        secret: header(headers, &CLIENT_SECRET),
        origin: header(headers, &ORIGIN),
    }
}
