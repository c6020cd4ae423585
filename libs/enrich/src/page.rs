//! Page URL → origin, path and campaign parameters.

const MAX_PATH_LEN: usize = 2_000;

/// Where an event happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// `https://shop.example` (empty when only a path was sent).
    pub origin: String,
    /// Path without query string and fragment.
    pub path: String,
    pub query: Vec<(String, String)>,
}

impl Page {
    /// A query parameter's value, or empty.
    pub fn utm(&self, key: &str) -> String {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| truncate(v, 200).to_owned())
            .unwrap_or_default()
    }
}

/// Parses an absolute URL or a bare path (`/a/b?x=1#top`).
pub fn parse_page(raw: &str) -> Page {
    let raw = raw.trim();
    if raw.is_empty() {
        return Page::default();
    }
    if let Ok(url) = url::Url::parse(raw)
        && url.has_host()
    {
        return Page {
            origin: url.origin().ascii_serialization(),
            path: truncate(url.path(), MAX_PATH_LEN).to_owned(),
            query: url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        };
    }
    let without_fragment = raw.split('#').next().unwrap_or("");
    let (path, query) = without_fragment
        .split_once('?')
        .unwrap_or((without_fragment, ""));
    Page {
        origin: String::new(),
        path: truncate(path, MAX_PATH_LEN).to_owned(),
        query: url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
