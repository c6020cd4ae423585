//! User agents → browser, OS and device, with uap-core's `regexes.yaml`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::EnrichError;

/// Most distinct user agents kept parsed; real traffic repeats a small set.
const CACHE_CAPACITY: usize = 20_000;

/// What a user agent says about the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAgent {
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub os_version: String,
    /// `desktop`, `mobile`, `tablet` or `bot`.
    pub device: &'static str,
    pub brand: String,
    pub model: String,
}

impl UserAgent {
    pub fn is_bot(&self) -> bool {
        self.device == "bot"
    }
}

/// A compiled user-agent parser with a bounded cache of results.
pub struct UaParser {
    extractor: ua_parser::Extractor<'static>,
    cache: Mutex<HashMap<String, Arc<UserAgent>>>,
}

/// Crawler markers that uap-core does not always report as a spider.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "slurp",
    "crawling",
    "headlesschrome",
    "lighthouse",
    "facebookexternalhit",
    "embedly",
    "curl/",
    "wget/",
    "python-requests",
    "go-http-client",
    "axios/",
    "okhttp",
];

impl UaParser {
    /// Loads and compiles a `regexes.yaml`.
    pub fn load(path: &Path) -> Result<Self, EnrichError> {
        let text = std::fs::read_to_string(path).map_err(|source| EnrichError::Read {
            path: path.to_owned(),
            source,
        })?;
        let regexes: ua_parser::Regexes<'static> =
            serde_yaml::from_str(&text).map_err(|e| EnrichError::Format {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let extractor =
            ua_parser::Extractor::try_from(regexes).map_err(|e| EnrichError::Format {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        Ok(UaParser {
            extractor,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Parses `ua`, from the cache when it was seen before.
    pub fn parse(&self, ua: &str) -> Arc<UserAgent> {
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(ua).cloned()) {
            return hit;
        }
        let parsed = Arc::new(self.parse_uncached(ua));
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(ua.to_owned(), parsed.clone());
        }
        parsed
    }

    /// Parses without the cache (also what the benchmarks call "cold").
    pub fn parse_uncached(&self, ua: &str) -> UserAgent {
        let (browser, os, device) = self.extractor.extract(ua);
        let version = |parts: [Option<&str>; 3]| {
            parts
                .into_iter()
                .map_while(|p| p.filter(|p| !p.is_empty()))
                .collect::<Vec<_>>()
                .join(".")
        };
        let other = |s: &str| {
            if s == "Other" {
                String::new()
            } else {
                s.to_owned()
            }
        };
        let mut out = UserAgent::default();
        if let Some(b) = browser {
            out.browser = other(&b.family);
            out.browser_version = version([b.major, b.minor, b.patch]);
        }
        if let Some(o) = os {
            out.os = other(&o.os);
            out.os_version = version([o.major.as_deref(), o.minor.as_deref(), o.patch.as_deref()]);
        }
        let family = device
            .as_ref()
            .map(|d| d.device.to_string())
            .unwrap_or_default();
        if let Some(d) = device {
            out.brand = d.brand.map(|b| b.into_owned()).unwrap_or_default();
            out.model = d.model.map(|m| m.into_owned()).unwrap_or_default();
        }
        out.device = device_type(ua, &family, &out);
        out
    }
}

fn device_type(ua: &str, family: &str, parsed: &UserAgent) -> &'static str {
    let lower = ua.to_ascii_lowercase();
    if family == "Spider" || BOT_MARKERS.iter().any(|m| lower.contains(m)) {
        return "bot";
    }
    let model = parsed.model.to_ascii_lowercase();
    if model.contains("ipad")
        || lower.contains("tablet")
        || (lower.contains("android") && !lower.contains("mobile"))
        || model.contains("kindle")
    {
        return "tablet";
    }
    if lower.contains("mobi")
        || lower.contains("iphone")
        || parsed.os == "Android"
        || parsed.os == "iOS"
    {
        return "mobile";
    }
    "desktop"
}
