//! Realistic, reproducible events from a seeded generator: varied names,
//! pages and referrers, sent by devices that each keep one browser and one
//! network address, as the tracker on a visitor's page does (one request
//! carries the events of one device).

use serde_json::{Value, json};

/// xorshift64*: small, fast and reproducible from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const NAMES: &[&str] = &[
    "screen_view",
    "screen_view",
    "screen_view",
    "screen_view",
    "click",
    "add_to_cart",
    "purchase",
    "signup",
    "search",
    "video_play",
];
const PAGES: &[&str] = &[
    "https://shop.example/",
    "https://shop.example/pricing?utm_source=newsletter&utm_campaign=spring",
    "https://shop.example/docs/getting-started",
    "https://shop.example/blog/2026/launch",
    "https://shop.example/p/1042?gclid=abc123",
    "https://shop.example/cart",
];
const REFERRERS: &[&str] = &[
    "",
    "",
    "https://www.google.com/",
    "https://t.co/xyz",
    "https://search.naver.com/search.naver?query=shop",
    "https://www.facebook.com/",
    "https://news.ycombinator.com/item?id=1",
];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];

/// The property holding when an event was sent (Unix ms): the end-to-end
/// lag is measured against the newest one visible in ClickHouse.
pub const SENT_MS: &str = "sent_ms";

/// One of `devices` devices, chosen at random.
pub fn device(rng: &mut Rng, devices: u64) -> u64 {
    rng.next() % devices.max(1)
}

/// One event body (the OpenPanel envelope) of `device` sent at `sent_ms`,
/// padded to `size_factor` times the usual property payload.
pub fn event(rng: &mut Rng, device: u64, size_factor: usize, sent_ms: u64) -> Value {
    let mut properties = json!({
        "__path": rng.pick(PAGES),
        "__referrer": rng.pick(REFERRERS),
        "plan": if rng.next().is_multiple_of(3) { "pro" } else { "free" },
        // Wide enough that two events of one request are never identical
        // (the enricher would rightly drop the second as a retry).
        "value": rng.next() >> 32,
        SENT_MS: sent_ms,
    });
    if size_factor > 1 {
        properties["notes"] = json!("x".repeat(120 * (size_factor - 1)));
    }
    json!({"type": "track", "payload": {
        "name": rng.pick(NAMES),
        "deviceId": format!("bench-device-{device}"),
        "properties": properties,
    }})
}

/// The browser `device` sends its events from.
pub fn user_agent(device: u64) -> &'static str {
    USER_AGENTS[(device % USER_AGENTS.len() as u64) as usize]
}

/// The client IP `device` sends from, for the trusted `x-forwarded-for`
/// header: spread over the address space, the same on every request.
pub fn ip(device: u64) -> String {
    let n = Rng::new(device.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)).next();
    format!(
        "{}.{}.{}.{}",
        1 + n % 223,
        (n >> 8) % 256,
        (n >> 16) % 256,
        1 + (n >> 24) % 254
    )
}
