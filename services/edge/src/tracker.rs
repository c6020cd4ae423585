//! `GET /tracker.js`: the first-party browser tracker, embedded in the
//! binary. It sends OpenPanel `{"type", "payload"}` bodies to this edge's
//! `/track` through the browser path (client id plus an allowed `Origin`).
//!
//! Served with a content-hash `ETag` (a `304` when it matches) and an hour's
//! cache lifetime; any origin may load it.

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

use analytics_http::{ApiError, Body, full};

/// The script as shipped (no build step).
pub const SCRIPT: &str = include_str!("tracker.js");

/// FNV-1a, 64 bits: a content hash for the `ETag`, not a security measure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The `ETag` of the script.
pub fn etag() -> String {
    format!("\"{:016x}\"", fnv1a(SCRIPT.as_bytes()))
}

pub fn answer(method: &Method, headers: &HeaderMap) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed.into_response();
    }
    let etag = etag();
    let fresh = headers
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    let body = if fresh || method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(SCRIPT.as_bytes())
    };
    let mut response = Response::new(full(body));
    if fresh {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = response.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        h.insert("etag", etag);
    }
    h.insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_revalidated_by_its_content_hash() {
        let first = answer(&Method::GET, &HeaderMap::new());
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()["cache-control"], "public, max-age=3600");
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::IF_NONE_MATCH,
            first.headers()["etag"].clone(),
        );
        assert_eq!(
            answer(&Method::GET, &headers).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            answer(&Method::POST, &HeaderMap::new()).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }
}
