//! Sessions, dedupe, profiles, aliases and bots through the real pipeline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use analytics_testkit::*;
use serde_json::json;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An hour ago, on a whole minute, so scripted visits stay in the past.
fn base_ms() -> i64 {
    (now_ms() - 3_600_000) / 60_000 * 60_000
}

fn iso(ms: i64) -> String {
    let secs = ms / 1000;
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%S.000Z"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Client {
    port: u16,
    creds: Credentials,
}

impl Client {
    fn post(&self, path: &str, body: serde_json::Value, user_agent: &str) -> (u16, String) {
        let mut headers = self.creds.headers();
        headers.push(("user-agent", user_agent));
        let (status, _, text) = http(self.port, "POST", path, &headers, &body.to_string()).unwrap();
        (status, text)
    }

    fn track(&self, device: &str, name: &str, at_ms: i64, extra: serde_json::Value) {
        let mut properties = json!({"__timestamp": iso(at_ms)});
        properties
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        let body = json!({"type": "track", "payload": {"name": name, "deviceId": device, "properties": properties}});
        let (status, text) = self.post("/track", body, CHROME);
        assert_eq!(status, 202, "{text}");
    }
}

fn up(name: &str) -> (Setup, Proc, Client) {
    let setup = Setup::new(BIN, name);
    let proc = setup.spawn(&["up"]);
    let client = Client {
        port: setup.port,
        creds: setup.bootstrap(),
    };
    (setup, proc, client)
}

fn wait_for_count(setup: &Setup, sql_where: &str, n: u64) {
    wait_until(Duration::from_secs(60), || {
        setup
            .query(&format!("SELECT count() FROM events WHERE {sql_where}"))
            .parse::<u64>()
            .unwrap_or(0)
            >= n
    });
    // Anything more would arrive within a flush or two.
    std::thread::sleep(Duration::from_millis(800));
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn a_device_keeps_its_session_for_30_minutes_of_activity() {
    let (setup, _up, client) = up("sessions");
    let t0 = base_ms();
    client.track("dev-a", "screen_view", t0, json!({}));
    client.track("dev-a", "screen_view", t0 + 60_000, json!({}));
    client.track("dev-a", "screen_view", t0 + 60_000 + 31 * 60_000, json!({}));
    wait_for_count(&setup, "device_id = 'dev-a'", 3);
    let sessions = setup.query(
        "SELECT session_id FROM events WHERE device_id = 'dev-a' ORDER BY created_at FORMAT TSV",
    );
    let ids: Vec<&str> = sessions.lines().collect();
    assert_eq!(ids.len(), 3, "{sessions}");
    assert!(ids.iter().all(|id| id.len() == 32), "{sessions}");
    assert_eq!(ids[0], ids[1], "one minute apart: same session");
    assert_ne!(ids[1], ids[2], "31 minutes apart: a new session");
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn two_enrichers_give_the_same_sessions_as_one() {
    let setup = Setup::new(BIN, "twoenrich");
    setup.admin(&["migrate"]);
    let creds = setup.create_client("Two");
    let _edge = setup.spawn(&["edge"]);
    let mut members = Vec::new();
    for (stage, name) in [("enrich", "e1"), ("enrich", "e2"), ("sink", "s1")] {
        members.push(setup.member(name).spawn(&[stage]));
    }
    let client = Client {
        port: setup.port,
        creds,
    };
    // 20 devices, each: 5 events a minute apart, 40 minutes of silence, 3 more.
    let t0 = base_ms() - 3_600_000;
    let minutes = [0, 1, 2, 3, 4, 44, 45, 46];
    for m in minutes {
        for d in 0..20 {
            client.track(
                &format!("dev-{d}"),
                "screen_view",
                t0 + m * 60_000,
                json!({}),
            );
        }
    }
    wait_for_count(&setup, "1", 160);
    let per_device = setup.query(
        "SELECT device_id, groupArray(n) FROM (SELECT device_id, session_id, count() AS n, min(created_at) AS start \
         FROM events GROUP BY device_id, session_id ORDER BY device_id, start) GROUP BY device_id FORMAT TSV",
    );
    let lines: Vec<&str> = per_device.lines().collect();
    assert_eq!(lines.len(), 20, "{per_device}");
    for line in lines {
        assert!(
            line.ends_with("\t[5,3]"),
            "expected a 5-event and a 3-event session: {line}"
        );
    }
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn retries_with_the_same_ids_are_stored_once() {
    let (setup, _up, client) = up("dedupe");
    let events: Vec<serde_json::Value> = (0..1000)
        .map(|i| json!({"type": "track", "payload": {"name": "buy", "id": format!("evt-{i}"), "deviceId": format!("d{}", i % 37)}}))
        .collect();
    for _ in 0..2 {
        for chunk in events.chunks(250) {
            let (status, text) = client.post("/batch", json!(chunk), CHROME);
            assert_eq!(status, 202, "{text}");
        }
    }
    // Identical events without ids, from one client within a second.
    let same = json!({"type": "track", "payload": {"name": "tap", "deviceId": "twin"}});
    assert_eq!(client.post("/track", same.clone(), CHROME).0, 202);
    assert_eq!(client.post("/track", same, CHROME).0, 202);
    wait_for_count(&setup, "name = 'tap'", 1);
    wait_for_count(&setup, "name = 'buy'", 1000);
    let summary = setup.query(
        "SELECT countIf(name = 'buy'), uniqExactIf(id, name = 'buy'), countIf(name = 'tap') FROM events",
    );
    assert_eq!(summary, "1000\t1000\t1");
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn concurrent_increments_on_a_new_profile_all_count() {
    let (setup, _up, client) = up("increment");
    std::thread::scope(|s| {
        for t in 0..10 {
            let client = &client;
            s.spawn(move || {
                for i in 0..10 {
                    let body = json!({"profileId": "fresh-user", "property": "visits", "value": 1, "id": format!("inc-{t}-{i}")});
                    let (status, text) = client.post("/increment", body, CHROME);
                    assert_eq!(status, 202, "{text}");
                }
            });
        }
    });
    wait_for_count(&setup, "name = 'increment'", 100);
    wait_until(Duration::from_secs(30), || {
        setup.query(
            "SELECT visitParamExtractFloat(argMax(properties, version), 'visits') FROM profiles WHERE id = 'fresh-user'",
        ) == "100"
    });
    let decrement = json!({"profileId": "fresh-user", "property": "visits", "value": 30});
    assert_eq!(client.post("/decrement", decrement, CHROME).0, 202);
    wait_until(Duration::from_secs(30), || {
        setup.query(
            "SELECT visitParamExtractFloat(argMax(properties, version), 'visits') FROM profiles WHERE id = 'fresh-user'",
        ) == "70"
    });
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn identify_merges_traits_and_alias_links_ids() {
    let (setup, _up, client) = up("identity");
    let identify = |body: serde_json::Value| {
        let (status, text) = client.post("/identify", body, CHROME);
        assert_eq!(status, 202, "{text}");
        std::thread::sleep(Duration::from_millis(300));
    };
    identify(
        json!({"profileId": "u-1", "deviceId": "phone", "firstName": "Ada", "properties": {"plan": "free", "team": "core"}}),
    );
    identify(
        json!({"profileId": "u-1", "email": "ada@example.com", "properties": {"plan": "pro"}}),
    );
    let alias = json!({"type": "alias", "payload": {"profileId": "u-1", "alias": "legacy-42"}});
    assert_eq!(client.post("/track", alias, CHROME).0, 202);
    std::thread::sleep(Duration::from_millis(300));
    // Later events: one under the alias, one from the identified device without a profile.
    let by_alias = json!({"type": "track", "payload": {"name": "old_app_open", "profileId": "legacy-42", "deviceId": "tablet"}});
    assert_eq!(client.post("/track", by_alias, CHROME).0, 202);
    let by_device =
        json!({"type": "track", "payload": {"name": "phone_open", "deviceId": "phone"}});
    assert_eq!(client.post("/track", by_device, CHROME).0, 202);
    wait_for_count(&setup, "name IN ('old_app_open', 'phone_open')", 2);
    let profile = setup.query(
        "SELECT argMax(first_name, version), argMax(email, version), argMax(properties, version) \
         FROM profiles WHERE id = 'u-1' FORMAT TSV",
    );
    let fields: Vec<&str> = profile.split('\t').collect();
    assert_eq!(fields[..2], ["Ada", "ada@example.com"], "{profile}");
    let properties: serde_json::Value = serde_json::from_str(fields[2]).unwrap();
    assert_eq!(properties, json!({"plan": "pro", "team": "core"}));
    let owners = setup.query(
        "SELECT name, profile_id FROM events WHERE name IN ('old_app_open', 'phone_open') ORDER BY name FORMAT TSV",
    );
    assert_eq!(owners, "old_app_open\tu-1\nphone_open\tu-1");
    wait_until(Duration::from_secs(10), || {
        setup.query("SELECT profile_id FROM profile_aliases WHERE alias = 'legacy-42'") == "u-1"
    });
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn the_per_session_query_sums_up_a_scripted_visit() {
    let (setup, _up, client) = up("sessionview");
    let t0 = base_ms();
    let page = |path: &str| json!({"__path": format!("https://shop.example{path}?utm_source=news"), "__referrer": "https://www.google.com/"});
    client.track("visitor", "screen_view", t0, page("/a"));
    client.track("visitor", "add_to_cart", t0 + 30_000, page("/a"));
    client.track("visitor", "screen_view", t0 + 60_000, page("/b"));
    client.track("visitor", "screen_view", t0 + 120_000, page("/c"));
    client.track("bouncer", "screen_view", t0, page("/landing"));
    wait_for_count(&setup, "1", 5);
    // A per-session query like the README's (with the columns this visit
    // tells apart), over `events` as a user would run it.
    let sessions = setup.query(
        "SELECT any(device_id) AS visitor, max(created_at) - min(created_at), count(), \
         countIf(name = 'screen_view') AS views, \
         argMinIf(path, created_at, name = 'screen_view'), \
         argMaxIf(path, created_at, name = 'screen_view'), views = 1, \
         argMin(referrer_type, created_at), argMin(utm_source, created_at), any(browser) \
         FROM events WHERE session_id != '' GROUP BY session_key, session_id \
         ORDER BY visitor FORMAT TSV",
    );
    assert_eq!(
        sessions,
        "bouncer\t0\t1\t1\t/landing\t/landing\t1\tsearch\tnews\tChrome\n\
         visitor\t120\t4\t3\t/a\t/c\t0\tsearch\tnews\tChrome"
    );
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn bots_are_tagged_without_sessions_or_dropped_by_project_setting() {
    let (setup, up_proc, client) = up("bots");
    let bot_event = |name: &str| {
        let body = json!({"type": "track", "payload": {"name": name}});
        assert_eq!(client.post("/track", body, GOOGLEBOT).0, 202);
    };
    bot_event("crawl_kept");
    wait_for_count(&setup, "name = 'crawl_kept'", 1);
    assert_eq!(
        setup.query(
            "SELECT device, browser, session_id = '' FROM events WHERE name = 'crawl_kept' FORMAT TSV"
        ),
        "bot\tGooglebot\t1"
    );
    drop(up_proc);
    setup.admin(&[
        "project",
        "bots",
        "--project",
        &client.creds.project_id,
        "--policy",
        "drop",
    ]);
    let _up = setup.spawn(&["up"]);
    bot_event("crawl_dropped");
    client.track("human", "after_bot", base_ms(), json!({}));
    wait_for_count(&setup, "name = 'after_bot'", 1);
    assert_eq!(
        setup.query("SELECT count() FROM events WHERE name = 'crawl_dropped'"),
        "0"
    );
}
