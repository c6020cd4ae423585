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
    /// A query parameter's value (at most 200 bytes of it), or empty.
    pub fn utm(&self, key: &str) -> &str {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| truncate(v, 200))
            .unwrap_or_default()
    }
}

/// Parses an absolute URL or a bare path (`/a/b?x=1#top`).
pub fn parse_page(raw: &str) -> Page {
    let raw = raw.trim();
    if raw.is_empty() {
        return Page::default();
    }
    if let Some(page) = plain_page(raw) {
        return page;
    }
    if let Ok(url) = url::Url::parse(raw)
        && url.has_host()
    {
        return page_of(&url);
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

/// The page of a parsed absolute URL.
fn page_of(url: &url::Url) -> Page {
    Page {
        origin: url.origin().ascii_serialization(),
        path: truncate(url.path(), MAX_PATH_LEN).to_owned(),
        query: url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    }
}

/// An `http(s)://host[:port]` URL split at its host, when the host is
/// letters, digits, dots and dashes (what almost every page and referrer
/// is) and the URL holds nothing a URL parser would rewrite there: no
/// addresses (an all-digit last label may be one, `0x7f.1`), user info,
/// punycode, blanks, backslashes or non-ASCII. `None` sends a URL to the
/// parser.
pub(crate) struct PlainUrl<'a> {
    /// `http` or `https`, lowercase.
    pub scheme: &'static str,
    pub host: &'a str,
    /// The port when one is given and is not the scheme's own.
    pub port: Option<u16>,
    /// From the first `/`, `?` or `#` on.
    pub rest: &'a str,
}

pub(crate) fn plain_host(url: &str) -> Option<PlainUrl<'_>> {
    let (scheme, after) = url.split_once("://")?;
    let (scheme, default_port) = if scheme.eq_ignore_ascii_case("http") {
        ("http", 80)
    } else if scheme.eq_ignore_ascii_case("https") {
        ("https", 443)
    } else {
        return None;
    };
    if !url.bytes().all(|b| b > b' ' && b.is_ascii() && b != b'\\') {
        return None;
    }
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (host, port) = match after[..end].split_once(':') {
        Some((host, "")) => (host, None),
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, Some(port.parse::<u16>().ok()?))
        }
        Some(_) => return None,
        None => (&after[..end], None),
    };
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !host
            .rsplit('.')
            .find(|label| !label.is_empty())
            .is_some_and(|label| label.as_bytes()[0].is_ascii_digit())
        && !contains_ignoring_case(host, b"xn--");
    plain.then_some(PlainUrl {
        scheme,
        host,
        port: port.filter(|p| *p != default_port),
        rest: &after[end..],
    })
}

/// A page of a plain URL whose path and query a URL parser would keep as
/// they are (no dot segments, nothing it escapes), read without one.
fn plain_page(raw: &str) -> Option<Page> {
    let url = plain_host(raw)?;
    let rest = url.rest.split('#').next().unwrap_or("");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let kept = |b: u8| b.is_ascii_alphanumeric() || b"-._~/!$&()*+,;=:@%".contains(&b);
    let path_kept =
        path.bytes().all(kept) && !path.contains("/.") && !contains_ignoring_case(path, b"%2e");
    // The query may also hold `?` and `/`; a parser escapes quotes in it.
    if !path_kept || !query.bytes().all(|b| kept(b) || b == b'?') {
        return None;
    }
    let host = url.host.to_ascii_lowercase();
    let origin = match url.port {
        Some(port) => format!("{}://{host}:{port}", url.scheme),
        None => format!("{}://{host}", url.scheme),
    };
    Some(Page {
        origin,
        path: truncate(if path.is_empty() { "/" } else { path }, MAX_PATH_LEN).to_owned(),
        query: url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    })
}

/// Whether `s` holds `needle`, ASCII case aside (no lowercase copy made).
fn contains_ignoring_case(s: &str, needle: &[u8]) -> bool {
    s.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the URL parser makes of an absolute URL.
    fn parsed(raw: &str) -> Option<Page> {
        let url = url::Url::parse(raw.trim())
            .ok()
            .filter(url::Url::has_host)?;
        Some(page_of(&url))
    }

    #[test]
    fn plain_pages_read_as_the_url_parser_reads_them() {
        for raw in [
            "https://Shop.Example/p/1?utm_source=news&utm_campaign=spring+sale#x",
            "HTTPS://shop.example:443/a",
            "http://shop.example:80",
            "http://shop.example:8080/a?b=%41&c",
            "https://shop.example:/a/../b",
            "https://shop.example/a/./b",
            "https://shop.example/%2E%2e/b",
            "https://shop.example/a b",
            "https://shop.example/?q=\"x\"&r='y'",
            "https://shop.example?x=1",
            "https://shop.example/é",
        ] {
            if let Some(page) = plain_page(raw) {
                assert_eq!(Some(page), parsed(raw), "{raw}");
            }
            assert_eq!(Some(parse_page(raw)), parsed(raw), "{raw}");
        }
        assert!(plain_page("https://shop.example/a/../b").is_none());
        assert!(plain_page("https://shop.example/p?x=1#f").is_some());
    }

    proptest! {
        #[test]
        fn every_absolute_page_reads_as_the_url_parser_reads_it(
            raw in "(https?|HTTP)://[a-zA-Z0-9.-]{1,12}(:[0-9]{0,6})?(/[a-zA-Z0-9.%~!$&'()*+,;=:@ \"<>`{}-]{0,8}){0,3}(\\?[a-z0-9=&+%?/ '\"-]{0,12})?(#[a-z]{0,3})?"
        ) {
            match parsed(&raw) {
                Some(expected) => prop_assert_eq!(parse_page(&raw), expected),
                // The parser refuses it: so must the plain reading.
                None => prop_assert!(plain_page(&raw).is_none()),
            }
        }
    }
}
