//! A real browser client: headless Chromium loads the published
//! `@openpanel/web` tracker from pages on a loopback origin the project
//! allows (CORS preflight included), and from one it does not allow.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use analytics_testkit::*;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn openpanel_web_in_chromium_reaches_clickhouse_from_allowed_origins_only() {
    let setup = Setup::new(BIN, "browser");
    setup.admin(&["migrate"]);
    let (allowed, blocked) = (free_port(), free_port());
    let origin = format!("http://127.0.0.1:{allowed}");
    let project_id = setup.create_project("Web", &[&origin]);
    let client = setup.client(&project_id, "write");
    let _up = setup.spawn(&["up"]);

    let node_path = var("TEST_BROWSER_NODE_PATH");
    let tracker = Path::new(&node_path).join("@openpanel/web/dist/src/tracker.global.js");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/run.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}", setup.port))
        .arg(&client.id)
        .arg(allowed.to_string())
        .arg(blocked.to_string())
        .arg(&tracker)
        .env("NODE_PATH", &node_path)
        .current_dir(Path::new(&node_path).parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browser run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["accepted"],
        serde_json::json!([202, 202, 202]),
        "{summary}"
    );
    // The blocked page did try: the edge refused it, or the browser did.
    let tried = summary["blocked"].as_array().unwrap().len()
        + summary["blockedFailures"].as_array().unwrap().len();
    assert!(tried > 0, "the blocked page sent nothing: {summary}");
    assert!(
        summary["blocked"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.as_u64() != Some(202)),
        "{summary}"
    );

    let rows = || {
        setup.query(&format!(
            "SELECT name, path, origin, browser, os FROM events WHERE project_id = '{project_id}' \
             ORDER BY name, path FORMAT TSV"
        ))
    };
    wait_until(Duration::from_secs(60), || rows().lines().count() >= 3);
    // Everything the edge accepted is in ClickHouse, and it accepted only
    // the allowed origin's three events.
    let (_, _, metrics) = http(setup.port, "GET", "/metrics", &[], "").unwrap();
    let accepted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("analytics_edge_accepted_events_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(accepted, 3.0, "{metrics}");
    let rows = rows();
    let rows: Vec<Vec<&str>> = rows.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    // uap-core names headless Chromium by the token in its user agent.
    let agent = summary["userAgent"].as_str().unwrap();
    let browser = if agent.contains("HeadlessChrome/") {
        "HeadlessChrome"
    } else {
        "Chrome"
    };
    let expected = [
        ("screen_view", "/one.html"),
        ("screen_view", "/two.html"),
        ("signup_clicked", "/two.html"),
    ];
    for (row, (name, path)) in rows.iter().zip(expected) {
        assert_eq!(row[0], name, "{rows:?}");
        assert_eq!(row[1], path, "{rows:?}");
        assert_eq!(row[2], origin, "{rows:?}");
        assert_eq!(row[3], browser, "{rows:?} ({agent})");
        assert_eq!(row[4], "Linux", "{rows:?} ({agent})");
    }
}
