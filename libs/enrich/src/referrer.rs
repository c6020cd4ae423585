//! Referrer classification.

use crate::page::{Page, plain_host};

/// Name and type of where a visit came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerClass {
    pub name: String,
    /// `search`, `social`, `email`, `ad`, `internal`, `direct` or `other`.
    pub kind: &'static str,
}

/// Known sources: a host suffix, its display name and type.
const KNOWN: &[(&str, &str, &str)] = &[
    // Search engines, global and regional.
    ("google.", "Google", "search"),
    ("bing.com", "Bing", "search"),
    ("duckduckgo.com", "DuckDuckGo", "search"),
    ("search.yahoo.com", "Yahoo", "search"),
    ("search.yahoo.co.jp", "Yahoo Japan", "search"),
    ("yandex.", "Yandex", "search"),
    ("ya.ru", "Yandex", "search"),
    ("baidu.com", "Baidu", "search"),
    ("naver.com", "Naver", "search"),
    ("daum.net", "Daum", "search"),
    ("sogou.com", "Sogou", "search"),
    ("so.com", "360 Search", "search"),
    ("seznam.cz", "Seznam", "search"),
    ("ecosia.org", "Ecosia", "search"),
    ("qwant.com", "Qwant", "search"),
    ("startpage.com", "Startpage", "search"),
    ("search.brave.com", "Brave Search", "search"),
    ("ask.com", "Ask", "search"),
    ("aol.com", "AOL", "search"),
    ("perplexity.ai", "Perplexity", "search"),
    ("chatgpt.com", "ChatGPT", "search"),
    // Social networks and messengers.
    ("facebook.com", "Facebook", "social"),
    ("fb.com", "Facebook", "social"),
    ("m.me", "Messenger", "social"),
    ("instagram.com", "Instagram", "social"),
    ("threads.net", "Threads", "social"),
    ("t.co", "Twitter", "social"),
    ("twitter.com", "Twitter", "social"),
    ("x.com", "Twitter", "social"),
    ("linkedin.com", "LinkedIn", "social"),
    ("lnkd.in", "LinkedIn", "social"),
    ("reddit.com", "Reddit", "social"),
    ("youtube.com", "YouTube", "social"),
    ("youtu.be", "YouTube", "social"),
    ("tiktok.com", "TikTok", "social"),
    ("pinterest.", "Pinterest", "social"),
    ("snapchat.com", "Snapchat", "social"),
    ("kakao.com", "Kakao", "social"),
    ("kakaocorp.com", "Kakao", "social"),
    ("band.us", "Naver Band", "social"),
    ("blog.naver.com", "Naver Blog", "social"),
    ("line.me", "LINE", "social"),
    ("weibo.com", "Weibo", "social"),
    ("vk.com", "VK", "social"),
    ("ok.ru", "Odnoklassniki", "social"),
    ("whatsapp.com", "WhatsApp", "social"),
    ("t.me", "Telegram", "social"),
    ("discord.com", "Discord", "social"),
    ("discord.gg", "Discord", "social"),
    ("news.ycombinator.com", "Hacker News", "social"),
    ("quora.com", "Quora", "social"),
    ("tumblr.com", "Tumblr", "social"),
    ("mastodon.social", "Mastodon", "social"),
    ("bsky.app", "Bluesky", "social"),
    // Webmail.
    ("mail.google.com", "Gmail", "email"),
    ("outlook.live.com", "Outlook", "email"),
    ("outlook.office.com", "Outlook", "email"),
    ("mail.yahoo.com", "Yahoo Mail", "email"),
    ("mail.naver.com", "Naver Mail", "email"),
    ("mail.daum.net", "Daum Mail", "email"),
    ("mail.yandex.ru", "Yandex Mail", "email"),
    ("mail.proton.me", "Proton Mail", "email"),
];

fn host_matches(host: &str, pattern: &str) -> bool {
    if let Some(stem) = pattern.strip_suffix('.') {
        // "google." matches google.com, www.google.co.uk, …
        host.split('.').any(|label| label == stem)
    } else {
        host == pattern
            || host
                .strip_suffix(pattern)
                .is_some_and(|rest| rest.ends_with('.'))
    }
}

/// Classifies `referrer` for a page on `own_origin`. Paid-campaign markers
/// on the page (`gclid`, `fbclid`, `utm_medium=cpc`) make it an ad visit.
pub fn classify_referrer(referrer: &str, own_origin: &str, page: &Page) -> ReferrerClass {
    let medium = page.utm("utm_medium");
    let paid = ["gclid", "fbclid", "msclkid"]
        .iter()
        .any(|k| !page.utm(k).is_empty())
        || ["cpc", "ppc", "paid"]
            .iter()
            .any(|m| medium.eq_ignore_ascii_case(m));
    let emailed = medium.eq_ignore_ascii_case("email");
    let Some(host) = site_of(referrer) else {
        let kind = match (paid, emailed) {
            (true, _) => "ad",
            (_, true) => "email",
            _ => "direct",
        };
        return ReferrerClass {
            name: String::new(),
            kind,
        };
    };
    if site_of(own_origin).as_deref() == Some(host.as_str()) {
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

/// The host of an absolute URL as a site: lowercase, without `www.`.
fn site_of(url: &str) -> Option<String> {
    let site = |host: &str| {
        host.to_ascii_lowercase()
            .trim_start_matches("www.")
            .to_owned()
    };
    match plain_host(url) {
        Some(plain) => Some(site(plain.host)),
        None => url::Url::parse(url).ok()?.host_str().map(site),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed_site(url: &str) -> Option<String> {
        let host = url::Url::parse(url).ok()?.host_str()?.to_owned();
        Some(
            host.to_ascii_lowercase()
                .trim_start_matches("www.")
                .to_owned(),
        )
    }

    #[test]
    fn plain_hosts_are_read_without_a_parse_and_the_rest_with_one() {
        for url in [
            "https://www.Google.com/search?q=a",
            "HTTP://news.ycombinator.com:8080",
            "https://a.example:99999/",
            "https://0x7f.1/",
            "https://1.2.3.4/x",
            "https://user@host.example/",
            "https://xn--nxasmq6b.example/",
            "https://bad\\host.example/",
            " https://padded.example/ ",
            "https://exämple.com/",
            "android-app://com.google.android.gm/",
            "https:///path",
            "https://host.example.:/#f",
        ] {
            assert_eq!(site_of(url), parsed_site(url), "{url}");
        }
        assert_eq!(
            plain_host("https://WWW.Google.com/x").map(|p| p.host),
            Some("WWW.Google.com")
        );
        assert!(plain_host("https://1.2.3.4/").is_none());
    }

    proptest! {
        #[test]
        fn every_url_reads_as_the_url_parser_reads_it(url in "(https?|HTTP|ftp)(://|:/|:)[a-zA-Z0-9.:@x\\[\\]%-]{0,24}[/?#]?[a-z/]{0,4}") {
            prop_assert_eq!(site_of(&url), parsed_site(&url));
        }
    }
}
