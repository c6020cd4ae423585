//! The dashboard and the tracker in a real browser (Debian's Chromium,
//! driven by playwright-core): the figures the dashboard shows for a
//! generated dataset equal the insights API's answers (and a recount of
//! the dataset done here), filters travel in the URL, refused credentials
//! and share links behave; the tracker's events reach ClickHouse from an
//! allowed origin only, and not at all when opted out. The page's and the
//! tracker's gzipped sizes are measured and bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use analytics_testkit::*;
use serde_json::{Value, json};

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

/// Page assets (HTML, CSS, JavaScript), gzipped, at most.
const DASHBOARD_GZIP_LIMIT: u64 = 60 * 1024;
/// The tracker, gzipped, at most.
const TRACKER_GZIP_LIMIT: u64 = 2_000;

/// 2026-02-16 00:00:00 UTC, a Monday.
const BASE: i64 = 1_771_200_000;
const DAY: i64 = 86_400;
const TZ: &str = "Asia/Seoul";
const TZ_OFFSET: i64 = 9 * 3600;
const START: &str = "2026-03-02";
const END: &str = "2026-03-15";
const PAGES: &[&str] = &["/", "/pricing", "/docs", "/blog", "/signup"];
const COUNTRIES: &[&str] = &["KR", "US", "DE", "JP"];
const FUNNEL: &[&str] = &["view_product", "add_to_cart", "purchase"];

struct Event {
    row: Value,
    name: String,
    device: String,
    path: String,
    country: String,
    at: i64,
}

/// Four weeks of visits: page views, a funnel with drop-off, return visits.
fn generate(project: &str, devices: u64, seed: u64) -> Vec<Event> {
    let mut rng = Rng(seed);
    let mut events = Vec::new();
    let mut n = 0u64;
    for d in 0..devices {
        let device = format!("{project}-dev-{d}");
        let country = COUNTRIES[rng.below(4) as usize];
        let browser = ["Chrome", "Firefox", "Safari"][rng.below(3) as usize];
        let mut day = rng.below(28) as i64;
        let mut visit = 0;
        while day < 28 {
            let session = format!("{device}-s{visit}");
            let mut at = BASE + day * DAY + rng.below(80_000) as i64;
            let mut names: Vec<(&str, &str)> = (0..1 + rng.below(4))
                .map(|_| ("screen_view", PAGES[rng.below(PAGES.len() as u64) as usize]))
                .collect();
            for (i, step) in FUNNEL.iter().enumerate() {
                if rng.below(100) >= [60, 55, 70][i] {
                    break;
                }
                names.push((step, "/pricing"));
            }
            for (name, path) in names {
                n += 1;
                events.push(Event {
                    row: json!({
                        "id": format!("{project}-e{n:07}"), "project_id": project, "name": name,
                        "device_id": device, "profile_id": "", "session_id": session,
                        "created_at": utc_time(at), "received_at": utc_time(at), "path": path,
                        "country": country, "referrer_type": "direct", "browser": browser,
                        "properties": json!({"plan": if d % 3 == 0 { "pro" } else { "free" }}).to_string(),
                    }),
                    name: name.to_owned(),
                    device: device.clone(),
                    path: path.to_owned(),
                    country: country.to_owned(),
                    at,
                });
                at += 20 + rng.below(300) as i64;
            }
            visit += 1;
            day += 1 + rng.below(6) as i64;
        }
    }
    events
}

fn insert(setup: &Setup, events: &[Event]) {
    let rows: Vec<Value> = events.iter().map(|e| e.row.clone()).collect();
    setup.insert_json("events", &rows);
}

/// Runs a node script of `tests/browser` with playwright-core on NODE_PATH;
/// its JSON summary (the last line it prints).
fn node(script: &str, input: &Value) -> Value {
    let node_path = var("TEST_BROWSER_NODE_PATH");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(script);
    let out = Command::new("node")
        .arg(&script)
        .arg(input.to_string())
        .env("NODE_PATH", &node_path)
        .current_dir(Path::new(&node_path).parent().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

/// Where screenshots go: under the build directory.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Reader<'a> {
    port: u16,
    project: &'a str,
    client: &'a Credentials,
}

impl Reader<'_> {
    fn get(&self, path_and_query: &str) -> Value {
        let path = format!("/insights/{}/{path_and_query}", self.project);
        let (status, _, text) = http(self.port, "GET", &path, &self.client.headers(), "").unwrap();
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap()
    }
    fn post(&self, path: &str, body: &Value) -> Value {
        let path = format!("/insights/{}/{path}", self.project);
        let mut headers = self.client.headers();
        headers.push(("content-type", "application/json"));
        let (status, _, text) =
            http(self.port, "POST", &path, &headers, &body.to_string()).unwrap();
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap()
    }
}

/// The local day (Asia/Seoul) of an event, as an index from BASE.
fn local_day(at: i64) -> i64 {
    (at + TZ_OFFSET - BASE).div_euclid(DAY)
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn the_dashboard_in_chromium_shows_the_apis_answers() {
    let setup = Setup::new(BIN, "dashboard");
    setup.admin(&["migrate"]);
    let a = setup.create_project("Shop A", &[]);
    let b = setup.create_project("Blog B", &[]);
    let read = setup.client(&a, "read");
    let root = setup.client(&a, "root");
    let write = setup.client(&a, "write");
    let events_a = generate(&a, 400, 0x9E37_79B9_7F4A_7C15);
    let events_b = generate(&b, 40, 0xD1B5_4A32_D192_ED03);
    insert(&setup, &events_a);
    insert(&setup, &events_b);
    let _up = setup.spawn(&["up"]);
    let api = Reader {
        port: setup.port,
        project: &a,
        client: &read,
    };
    let q = format!("startDate={START}&endDate={END}&timezone={TZ}");

    // The recount: March 2 to 15 in Seoul are local days 14 to 27.
    let in_range: Vec<&Event> = events_a
        .iter()
        .filter(|e| (14..28).contains(&local_day(e.at)))
        .collect();
    let metrics = api.get(&format!("metrics?{q}"));
    assert_eq!(metrics["current"]["total_events"], in_range.len());
    let visitors: BTreeSet<&str> = in_range.iter().map(|e| e.device.as_str()).collect();
    assert_eq!(metrics["current"]["unique_visitors"], visitors.len());
    let count_by = |key: fn(&Event) -> &str| {
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for e in in_range.iter().filter(|e| e.name == "screen_view") {
            *counts.entry(key(e)).or_default() += 1;
        }
        counts
            .iter()
            .max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(x.0)))
            .map(|(k, v)| (k.to_string(), *v))
            .unwrap()
    };
    let pages = api.get(&format!("top/pages?{q}&limit=10"));
    let countries = api.get(&format!("top/countries?{q}&limit=10"));
    assert_eq!(
        (
            pages["rows"][0]["value"].as_str().unwrap().to_owned(),
            pages["rows"][0]["views"].as_u64().unwrap()
        ),
        count_by(|e| &e.path)
    );
    assert_eq!(
        (
            countries["rows"][0]["value"].as_str().unwrap().to_owned(),
            countries["rows"][0]["views"].as_u64().unwrap()
        ),
        count_by(|e| &e.country)
    );
    let top_page = pages["rows"][0]["value"].as_str().unwrap().to_owned();
    let filter = json!([{"key": "path", "operator": "eq", "value": top_page}]).to_string();
    let filtered = api.get(&format!("metrics?{q}&filters={}", url_escape(&filter)));
    let funnel_body = json!({
        "startDate": START, "endDate": END, "timezone": TZ, "window": 86400, "groupBy": "session",
        "steps": [{"name": "view_product"}, {"name": "add_to_cart"}, {"name": "purchase"}],
    });
    let funnel = api.post("funnel", &funnel_body);
    let retention = api.get(&format!("retention?{q}&period=day"));
    let events = api.get(&format!("events?{q}&limit=50"));

    // Share links: one open, one with a password, one revoked; and a
    // share of project A asked about project B.
    let open = setup.admin(&["share", "create", "--project", &a]);
    let locked = setup.admin(&[
        "share",
        "create",
        "--project",
        &a,
        "--password",
        "s3cret pass",
        "--expires-days",
        "7",
    ]);
    let revoked = setup.admin(&["share", "create", "--project", &a]);
    let listed = setup.admin(&["share", "list", "--project", &a]);
    assert_eq!(listed["shares"].as_array().unwrap().len(), 3, "{listed}");
    assert!(!listed.to_string().contains(open["token"].as_str().unwrap()));
    let gone = setup.admin(&["share", "revoke", revoked["id"].as_str().unwrap()]);
    assert_eq!(gone["revoked"], true);
    let share_get = |share: &Value, project: &str| {
        let path = format!(
            "/share/{}/insights/{project}/metrics?{q}",
            share["id"].as_str().unwrap()
        );
        let token = share["token"].as_str().unwrap();
        let (status, _, text) =
            http(setup.port, "GET", &path, &[("x-share-token", token)], "").unwrap();
        (status, text)
    };
    let (status, text) = share_get(&open, &a);
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["current"],
        metrics["current"]
    );
    let (status, text) = share_get(&open, &b);
    assert_eq!(status, 403, "a share of A read B: {text}");
    assert_eq!(share_get(&revoked, &a).0, 404);
    assert_eq!(share_get(&locked, &a).0, 401, "the password was skipped");
    let forged = json!({"id": open["id"], "token": "0".repeat(64)});
    assert_eq!(share_get(&forged, &a).0, 401);

    let shots = screenshot_dir();
    let summary = node(
        "dashboard.mjs",
        &json!({
            "base": format!("http://127.0.0.1:{}", setup.port),
            "projects": {"a": a, "b": b},
            "read": {"id": read.id, "secret": read.secret},
            "root": {"id": root.id, "secret": root.secret},
            "write": {"id": write.id, "secret": write.secret},
            "range": {"from": START, "to": END, "tz": TZ},
            "funnel": funnel_body,
            "shares": {"open": open["path"], "locked": locked["path"], "revoked": revoked["path"],
                       "password": "s3cret pass"},
            "screenshots": shots,
        }),
    );
    eprintln!("dashboard summary: {summary}");

    // Sizes and the page's own errors.
    let gzipped = summary["sizes"]["gzipped"].as_u64().unwrap();
    assert!(
        gzipped <= DASHBOARD_GZIP_LIMIT,
        "dashboard assets: {gzipped} bytes gzipped"
    );
    assert_eq!(summary["pageErrors"], json!([]), "{summary}");
    // Refusals at sign-in.
    assert_eq!(summary["wrongSecret"], "Wrong client id or secret.");
    assert!(
        summary["writeClient"]
            .as_str()
            .unwrap()
            .contains("read or root client"),
        "{summary}"
    );
    // The overview's figures are the API's.
    let kpis = |shown: &Value, answer: &Value, what: &str| {
        for key in [
            "unique_visitors",
            "total_sessions",
            "total_screen_views",
            "total_events",
            "avg_session_duration",
            "bounce_rate",
            "views_per_session",
        ] {
            let got = shown[key]["value"].as_f64().unwrap_or(f64::NAN);
            let want = answer[key].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-9,
                "{what} {key}: shown {got}, API {want}"
            );
        }
        for key in ["unique_visitors", "total_events"] {
            let text = shown[key]["text"].as_str().unwrap().replace(',', "");
            assert_eq!(text, answer[key].to_string(), "{what} {key}");
        }
    };
    kpis(
        &summary["overview"]["kpis"],
        &metrics["current"],
        "overview",
    );
    let first_rows = |shown: &Value, answer: &Value| {
        let rows = shown.as_array().unwrap();
        assert!(rows.len() >= 3, "{shown}");
        for (row, want) in rows.iter().zip(answer["rows"].as_array().unwrap()) {
            assert_eq!(row["value"], want["value"]);
            assert_eq!(row["views"], want["views"].to_string());
        }
    };
    first_rows(&summary["overview"]["pages"], &pages);
    first_rows(&summary["overview"]["countries"], &countries);
    // A root client may switch to any project.
    let offered = summary["overview"]["projectsOffered"].as_array().unwrap();
    assert!(
        offered.contains(&json!(a)) && offered.contains(&json!(b)),
        "{offered:?}"
    );
    // A click on the top page filters the page, and the URL carries it.
    assert_eq!(summary["filtered"]["chips"], json!(["path"]));
    kpis(
        &summary["filtered"]["kpis"],
        &filtered["current"],
        "filtered",
    );
    kpis(
        &summary["reopened"]["kpis"],
        &filtered["current"],
        "reopened URL",
    );
    // Funnel, retention and the events list.
    let counts: Vec<String> = funnel["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].to_string())
        .collect();
    assert_eq!(summary["funnel"], json!(counts));
    let cohort = &retention["cohorts"][0];
    assert_eq!(summary["retention"]["cohort"], cohort["date"]);
    assert_eq!(
        summary["retention"]["day0"],
        cohort["retained"][0].to_string()
    );
    assert_eq!(
        summary["retention"]["day1"],
        cohort["retained"][1].to_string()
    );
    assert_eq!(summary["events"]["first"], events["events"][0]["id"]);
    assert_eq!(summary["events"]["rows"], 50);
    assert!(
        summary["events"]["detail"]
            .as_str()
            .unwrap()
            .contains("\"plan\"")
    );
    // Share links.
    kpis(&summary["share"]["kpis"], &metrics["current"], "share");
    assert_eq!(summary["share"]["otherProject"], 403);
    assert_eq!(summary["locked"]["asked"], true);
    assert_eq!(summary["locked"]["wrong"], "Wrong password.");
    kpis(
        &summary["locked"]["kpis"],
        &metrics["current"],
        "locked share",
    );
    assert!(
        summary["revoked"]
            .as_str()
            .unwrap()
            .contains("does not exist or was revoked"),
        "{summary}"
    );
    for shot in ["overview-1280.png", "overview-375.png"] {
        assert!(shots.join(shot).exists(), "{shot}");
    }
    eprintln!(
        "dashboard: {gzipped} bytes gzipped; overview ready in {} ms",
        summary["overview"]["readyMs"]
    );
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn the_tracker_in_chromium_stores_views_clicks_and_links_from_allowed_origins_only() {
    let setup = Setup::new(BIN, "tracker");
    setup.admin(&["migrate"]);
    let (allowed, blocked) = (free_port(), free_port());
    let origin = format!("http://127.0.0.1:{allowed}");
    let project = setup.create_project("Site", &[&origin]);
    let client = setup.client(&project, "write");
    let _up = setup.spawn(&["up"]);

    let summary = node(
        "tracker.mjs",
        &json!({
            "edge": format!("http://127.0.0.1:{}", setup.port),
            "clientId": client.id,
            "allowed": allowed,
            "blocked": blocked,
        }),
    );
    eprintln!("tracker summary: {summary}");
    let gzipped = summary["gzipped"].as_u64().unwrap();
    assert!(
        gzipped <= TRACKER_GZIP_LIMIT,
        "tracker.js: {gzipped} bytes gzipped"
    );
    assert_eq!(
        summary["etag"].as_str().map(|e| e.starts_with('"')),
        Some(true)
    );
    assert_eq!(summary["optOutRequests"], 0, "{summary}");

    let rows = || {
        setup.query(&format!(
            "SELECT name, path, referrer, browser, origin, properties FROM events \
             WHERE project_id = '{project}' ORDER BY name, path FORMAT JSONEachRow"
        ))
    };
    wait_until(Duration::from_secs(60), || rows().lines().count() >= 8);
    // Nothing more arrives late.
    std::thread::sleep(Duration::from_secs(2));
    let rows: Vec<Value> = rows()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("link_out", "/app/page-3"),
        ("page_left", "/app/page-3"),
        ("purchase_click", "/app/page-3"),
        ("queued_before_load", "/app.html"),
        ("screen_view", "/app.html"),
        ("screen_view", "/app/page-2"),
        ("screen_view", "/app/page-3"),
        ("signup", "/app/page-2"),
    ]
    .iter()
    .map(|(n, p)| (n.to_string(), p.to_string()))
    .collect();
    assert_eq!(names, expected, "{rows:#?}");
    for row in &rows {
        assert_eq!(row["origin"], origin.as_str(), "{row}");
        assert!(
            !row["referrer"].as_str().unwrap().is_empty(),
            "no referrer: {row}"
        );
        assert!(
            !row["browser"].as_str().unwrap().is_empty(),
            "no browser: {row}"
        );
        let properties: Value = serde_json::from_str(row["properties"].as_str().unwrap()).unwrap();
        match row["name"].as_str().unwrap() {
            "purchase_click" => {
                assert_eq!(properties["plan"], "pro", "{row}");
                assert_eq!(properties["price"], "9", "{row}");
            }
            "link_out" => assert_eq!(
                properties["href"],
                format!("http://127.0.0.1:{blocked}/elsewhere.html"),
                "{row}"
            ),
            "signup" => assert_eq!(properties["from"], "api", "{row}"),
            _ => {}
        }
    }
    // The first view came from the landing page; later ones from the view before.
    let referrer_of = |path: &str| {
        rows.iter()
            .find(|r| r["name"] == "screen_view" && r["path"] == path)
            .map(|r| r["referrer"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(referrer_of("/app.html"), format!("{origin}/landing.html"));
    assert_eq!(referrer_of("/app/page-2"), format!("{origin}/app.html"));
    // The blocked origin's attempt was refused by the edge.
    assert!(
        summary["blocked"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.as_u64() != Some(202)),
        "{summary}"
    );
    assert!(
        !summary["blocked"].as_array().unwrap().is_empty(),
        "{summary}"
    );
    eprintln!("tracker.js: {gzipped} bytes gzipped");
}
