//! The dashboard: one static page (HTML, CSS, JavaScript) embedded in the
//! binary, served at `GET /dashboard` and, read-only for one project, at
//! `GET /share/<id>`. It reads everything through the insights API; it
//! has no build step and no third-party code.
//!
//! Wire format: the HTML names its assets with a content version
//! (`app.js?v=<hash>`), so they are cached for a year while the page itself
//! is revalidated with its `ETag` (a `304` when unchanged). Every answer
//! carries a `Content-Security-Policy` that allows scripts, styles and
//! requests from this origin only (no inline script, no inline style
//! attribute); like the insights API, no CORS header lets another origin
//! read it.

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};

use analytics_http::{ApiError, Body, full};

const HTML: &str = include_str!("../dashboard/index.html");
const JS: &str = include_str!("../dashboard/app.js");
const CSS: &str = include_str!("../dashboard/app.css");

/// What the page may load and do.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    body: Bytes,
    etag: HeaderValue,
    /// First hex digits of the content's SHA-256.
    version: String,
    content_type: &'static str,
    cache: &'static str,
}

impl Asset {
    fn new(body: String, content_type: &'static str, cache: &'static str) -> Asset {
        let version = hex::encode(&Sha256::digest(body.as_bytes())[..8]);
        Asset {
            etag: HeaderValue::from_str(&format!("\"{version}\""))
                .unwrap_or(HeaderValue::from_static("\"0\"")),
            body: Bytes::from(body),
            version,
            content_type,
            cache,
        }
    }

    fn answer(&self, method: &Method, headers: &HeaderMap) -> Response<Body> {
        let fresh = headers
            .get(hyper::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().trim_start_matches("W/") == self.etag)
            });
        let (status, body) = if fresh {
            (StatusCode::NOT_MODIFIED, Bytes::new())
        } else if method == Method::HEAD {
            (StatusCode::OK, Bytes::new())
        } else {
            (StatusCode::OK, self.body.clone())
        };
        let mut response = Response::new(full(body));
        *response.status_mut() = status;
        let h = response.headers_mut();
        h.insert("content-type", HeaderValue::from_static(self.content_type));
        h.insert("etag", self.etag.clone());
        h.insert("cache-control", HeaderValue::from_static(self.cache));
        h.insert("content-security-policy", HeaderValue::from_static(CSP));
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        response
    }
}

/// The dashboard's files, built once at start.
pub struct Assets {
    page: Asset,
    share_page: Asset,
    js: Asset,
    css: Asset,
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

impl Assets {
    pub fn new() -> Assets {
        let js = Asset::new(JS.to_owned(), "text/javascript; charset=utf-8", IMMUTABLE);
        let css = Asset::new(CSS.to_owned(), "text/css; charset=utf-8", IMMUTABLE);
        // Relative links, so the page works under any path prefix.
        let page_at = |base: &str| {
            HTML.replace("{css}", &format!("{base}app.css?v={}", css.version))
                .replace("{js}", &format!("{base}app.js?v={}", js.version))
        };
        Assets {
            page: Asset::new(
                page_at("dashboard/"),
                "text/html; charset=utf-8",
                REVALIDATE,
            ),
            share_page: Asset::new(
                page_at("../dashboard/"),
                "text/html; charset=utf-8",
                REVALIDATE,
            ),
            js,
            css,
        }
    }

    /// The page or asset at `path`; `None` for paths that are not the dashboard's.
    pub fn answer(
        &self,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Response<Body>> {
        let asset = match path {
            "/dashboard" => &self.page,
            "/dashboard/app.js" => &self.js,
            "/dashboard/app.css" => &self.css,
            "/dashboard/" => {
                let mut response = Response::new(analytics_http::empty());
                *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
                response
                    .headers_mut()
                    .insert("location", HeaderValue::from_static("../dashboard"));
                return Some(response);
            }
            _ => match path.strip_prefix("/share/") {
                Some(id) if !id.is_empty() && !id.contains('/') => &self.share_page,
                _ => return None,
            },
        };
        if method != Method::GET && method != Method::HEAD {
            return Some(ApiError::MethodNotAllowed.into_response());
        }
        Some(asset.answer(method, headers))
    }
}

impl Default for Assets {
    fn default() -> Self {
        Assets::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_versioned_assets_and_is_revalidated_by_etag() {
        let assets = Assets::new();
        let get = |path: &str, etag: Option<&HeaderValue>| {
            let mut headers = HeaderMap::new();
            if let Some(etag) = etag {
                headers.insert(hyper::header::IF_NONE_MATCH, etag.clone());
            }
            assets.answer(path, &Method::GET, &headers).unwrap()
        };
        let page = get("/dashboard", None);
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()["cache-control"], "no-cache");
        let csp = page.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe"));
        let etag = page.headers()["etag"].clone();
        assert_eq!(
            get("/dashboard", Some(&etag)).status(),
            StatusCode::NOT_MODIFIED
        );
        let html = std::str::from_utf8(&assets.page.body).unwrap();
        assert!(html.contains(&format!("dashboard/app.js?v={}", assets.js.version)));
        assert!(!html.contains("<script>") && !html.contains("style="));
        let shared = std::str::from_utf8(&assets.share_page.body).unwrap();
        assert!(shared.contains("\"../dashboard/app.css?v="));
        assert_eq!(
            get("/dashboard/app.js", None).headers()["cache-control"],
            IMMUTABLE
        );
        assert!(
            assets
                .answer("/share/abc", &Method::GET, &HeaderMap::new())
                .is_some()
        );
        assert!(
            assets
                .answer("/share/abc/info", &Method::GET, &HeaderMap::new())
                .is_none()
        );
        assert!(
            assets
                .answer("/insights/x", &Method::GET, &HeaderMap::new())
                .is_none()
        );
        assert_eq!(
            assets
                .answer("/dashboard", &Method::POST, &HeaderMap::new())
                .unwrap()
                .status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
