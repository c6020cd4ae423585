//! User agents seen in real traffic against uap-core's rules (the test
//! command fetches `regexes.yaml` and names it in `TEST_UA_REGEXES`).

use analytics_enrich::UaParser;

fn parser() -> UaParser {
    let path = std::env::var("TEST_UA_REGEXES")
        .expect("TEST_UA_REGEXES is not set: run the tests through scripts/test.sh");
    UaParser::load(path.as_ref()).expect("regexes.yaml loads")
}

/// (user agent, browser, browser major version, OS, device type)
const CASES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Chrome",
        "124",
        "Windows",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
        "Chrome",
        "123",
        "Mac OS X",
        "desktop",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
        "Chrome",
        "122",
        "Linux",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Firefox",
        "125",
        "Windows",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:124.0) Gecko/20100101 Firefox/124.0",
        "Firefox",
        "124",
        "Mac OS X",
        "desktop",
    ),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0",
        "Firefox",
        "115",
        "Ubuntu",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
        "Edge",
        "124",
        "Windows",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
        "Safari",
        "17",
        "Mac OS X",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/109.0.0.0",
        "Opera",
        "109",
        "Windows",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
        "IE",
        "11",
        "Windows",
        "desktop",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
        "Mobile Safari",
        "17",
        "iOS",
        "mobile",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
        "Mobile Safari",
        "16",
        "iOS",
        "mobile",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
        "Chrome Mobile iOS",
        "124",
        "iOS",
        "mobile",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15",
        "Firefox iOS",
        "125",
        "iOS",
        "mobile",
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mobile Safari",
        "17",
        "iOS",
        "tablet",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
        "Chrome Mobile",
        "124",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Mobile Safari/537.36",
        "Chrome Mobile",
        "123",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
        "Samsung Internet",
        "24",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (Linux; Android 12; SAMSUNG SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Safari/537.36",
        "Samsung Internet",
        "23",
        "Android",
        "tablet",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Chrome",
        "124",
        "Android",
        "tablet",
    ),
    (
        "Mozilla/5.0 (Linux; Android 11; Pixel 5 Build/RQ3A.210805.001.A1; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36",
        "Chrome Mobile WebView",
        "124",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
        "Chrome Mobile",
        "124",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
        "Firefox Mobile",
        "125",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; HD1913) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36 EdgA/124.0.2478.64",
        "Edge Mobile",
        "124",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (Linux; Android 13; 2201116SG) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 OPR/82.0.0.0",
        "Opera Mobile",
        "82",
        "Android",
        "mobile",
    ),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Googlebot",
        "2",
        "",
        "bot",
    ),
    (
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.91 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Googlebot",
        "2",
        "Android",
        "bot",
    ),
    (
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "bingbot",
        "2",
        "",
        "bot",
    ),
    (
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "YandexBot",
        "3",
        "",
        "bot",
    ),
    (
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
        "Baiduspider",
        "2",
        "",
        "bot",
    ),
    (
        "Mozilla/5.0 (compatible; Yeti/1.1; +http://naver.me/spd)",
        "Yeti",
        "1",
        "",
        "bot",
    ),
    (
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "FacebookBot",
        "1",
        "",
        "bot",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
        "Applebot",
        "0",
        "Mac OS X",
        "bot",
    ),
    ("curl/8.5.0", "curl", "8", "", "bot"),
];

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn real_user_agents_parse_to_browser_os_and_device() {
    let parser = parser();
    let mut wrong = Vec::new();
    for (ua, browser, major, os, device) in CASES {
        let parsed = parser.parse_uncached(ua);
        let got_major = parsed.browser_version.split('.').next().unwrap_or("");
        if (
            parsed.browser.as_str(),
            got_major,
            parsed.os.as_str(),
            parsed.device,
        ) != (*browser, *major, *os, *device)
        {
            wrong.push(format!(
                "{ua}\n  expected {browser} {major} / {os} / {device}\n  got      {} {} / {} / {}",
                parsed.browser, parsed.browser_version, parsed.os, parsed.device
            ));
        }
    }
    assert!(CASES.len() >= 30);
    assert!(
        wrong.is_empty(),
        "{} of {} wrong:\n{}",
        wrong.len(),
        CASES.len(),
        wrong.join("\n")
    );
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn versions_brands_and_models_are_extracted() {
    let parser = parser();
    let iphone = parser.parse(CASES[10].0);
    assert_eq!(
        (iphone.browser_version.as_str(), iphone.os_version.as_str()),
        ("17.4.1", "17.4.1")
    );
    assert_eq!(
        (iphone.brand.as_str(), iphone.model.as_str()),
        ("Apple", "iPhone")
    );
    let pixel = parser.parse(CASES[15].0);
    assert_eq!(
        (
            pixel.brand.as_str(),
            pixel.model.as_str(),
            pixel.os_version.as_str()
        ),
        ("Google", "Pixel 8", "14")
    );
    let samsung = parser.parse(CASES[16].0);
    assert_eq!(
        (samsung.brand.as_str(), samsung.model.as_str()),
        ("Samsung", "SM-S918B")
    );
    let mac = parser.parse(CASES[1].0);
    assert_eq!(
        (mac.os_version.as_str(), mac.brand.as_str()),
        ("10.15.7", "Apple")
    );
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn cached_and_uncached_parses_agree_and_garbage_is_harmless() {
    let parser = parser();
    for (ua, ..) in CASES {
        assert_eq!(*parser.parse(ua), parser.parse_uncached(ua));
        assert_eq!(*parser.parse(ua), parser.parse_uncached(ua));
    }
    for junk in ["", "x", "\u{0}\u{1}", &"A".repeat(10_000)] {
        let parsed = parser.parse(junk);
        assert_eq!(
            (parsed.browser.as_str(), parsed.device),
            ("", "desktop"),
            "{junk:.20}"
        );
    }
}
