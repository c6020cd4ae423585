//! Referrer classification.

use crate::page::Page;

/// Name and type of where a visit came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerClass {
    pub name: String,
    /// `search`, `social`, `email`, `ad`, `internal`, `direct` or `other`.
    pub kind: &'static str,
}

/// Known sources: a host suffix, its display name and type.
const KNOWN: &[(&str, &str, &str)] = &[
    ("google.", "Google", "search"),
    ("bing.com", "Bing", "search"),
    ("duckduckgo.com", "DuckDuckGo", "search"),
    ("search.yahoo.com", "Yahoo", "search"),
    ("yandex.", "Yandex", "search"),
    ("baidu.com", "Baidu", "search"),
    ("naver.com", "Naver", "search"),
    ("ecosia.org", "Ecosia", "search"),
    ("facebook.com", "Facebook", "social"),
    ("instagram.com", "Instagram", "social"),
    ("t.co", "Twitter", "social"),
    ("twitter.com", "Twitter", "social"),
    ("x.com", "Twitter", "social"),
    ("linkedin.com", "LinkedIn", "social"),
    ("reddit.com", "Reddit", "social"),
    ("youtube.com", "YouTube", "social"),
    ("tiktok.com", "TikTok", "social"),
    ("kakao.com", "Kakao", "social"),
    ("vk.com", "VK", "social"),
    ("mail.google.com", "Gmail", "email"),
    ("outlook.live.com", "Outlook", "email"),
    ("mail.yahoo.com", "Yahoo Mail", "email"),
];

fn host_matches(host: &str, pattern: &str) -> bool {
    if let Some(stem) = pattern.strip_suffix('.') {
        // "google." matches google.com, www.google.co.uk, …
        host.split('.').any(|label| label == stem)
    } else {
        host == pattern || host.ends_with(&format!(".{pattern}"))
    }
}

/// Classifies `referrer` for a page on `own_origin`. Paid-campaign markers
/// on the page (`gclid`, `fbclid`, `utm_medium=cpc`) make it an ad visit.
pub fn classify_referrer(referrer: &str, own_origin: &str, page: &Page) -> ReferrerClass {
    let paid = ["gclid", "fbclid", "msclkid"]
        .iter()
        .any(|k| !page.utm(k).is_empty())
        || matches!(
            page.utm("utm_medium").to_ascii_lowercase().as_str(),
            "cpc" | "ppc" | "paid"
        );
    let host = url::Url::parse(referrer).ok().and_then(|u| {
        u.host_str()
            .map(|h| h.trim_start_matches("www.").to_ascii_lowercase())
    });
    let Some(host) = host else {
        return ReferrerClass {
            name: String::new(),
            kind: if paid { "ad" } else { "direct" },
        };
    };
    let own_host = url::Url::parse(own_origin).ok().and_then(|u| {
        u.host_str()
            .map(|h| h.trim_start_matches("www.").to_ascii_lowercase())
    });
    if own_host.as_deref() == Some(host.as_str()) {
        return ReferrerClass {
            name: String::new(),
            kind: "internal",
        };
    }
    let known = KNOWN
        .iter()
        .filter(|(pattern, _, _)| host_matches(&host, pattern))
        .max_by_key(|(pattern, _, _)| pattern.len());
    match known {
        Some((_, name, kind)) => ReferrerClass {
            name: (*name).to_owned(),
            kind: if paid { "ad" } else { kind },
        },
        None => ReferrerClass {
            name: host,
            kind: if paid { "ad" } else { "other" },
        },
    }
}
