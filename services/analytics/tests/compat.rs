//! Current ClickHouse: every insights route runs against 18.16 with sample
//! data; the SQL it sent (from `system.query_log`) is replayed on chdb, the
//! current ClickHouse release in process, after applying every migration
//! there and loading the same rows. Both engines must give the same answers.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use analytics_testkit::*;
use serde_json::{Value, json};

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

/// The query as the insights API sent it, answering in TabSeparated.
fn as_tsv(query: &str) -> String {
    let trimmed = query.trim_end();
    let body = match trimmed.rfind("FORMAT ") {
        Some(at) if !trimmed[at + 7..].contains(char::is_whitespace) => &trimmed[..at],
        _ => trimmed,
    };
    format!("{} FORMAT TabSeparated", body.trim_end())
}

/// Every insights route of the OpenAPI description.
fn documented_routes() -> BTreeSet<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.json"),
    )
    .unwrap();
    let spec: Value = serde_json::from_str(&text).unwrap();
    let mut routes = BTreeSet::new();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        if let Some(rest) = path.strip_prefix("/insights/{projectId}/") {
            for method in methods.as_object().unwrap().keys() {
                routes.insert(format!("{} {rest}", method.to_uppercase()));
            }
        }
    }
    routes
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn insights_queries_answer_alike_on_current_clickhouse() {
    let install = Install::start(Setup::new(BIN, "compat"));
    let (setup, project, read) = (&install.setup, &install.project, &install.read);

    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut events = sample_events(now_s);
    for user in 0..10 {
        events.push((
            "/identify".to_owned(),
            json!({"profileId": format!("user-{user}"), "firstName": "Ada", "email": format!("u{user}@example.com"),
                   "properties": {"plan": if user % 2 == 0 { "pro" } else { "free" }}}),
        ));
        events.push((
            "/track".to_owned(),
            json!({"type": "track", "payload": {"name": "login", "deviceId": format!("d{user}"),
                   "profileId": format!("user-{user}"), "id": format!("login-{user}"),
                   "timestamp": (now_s - 3600) * 1000}}),
        ));
    }
    install.send(&events);
    let total = events.len() as u64;
    wait_until(Duration::from_secs(60), || install.stored() == total);
    wait_until(Duration::from_secs(30), || {
        setup
            .try_query("SELECT count() FROM profiles")
            .is_ok_and(|n| n.trim() == "10")
    });

    // Every route, unfiltered and filtered, in UTC and in other time zones
    // (a half-hour one among them).
    let q = format!(
        "startDate={}&endDate={}",
        utc_date(now_s - 3 * 86_400),
        utc_date(now_s)
    );
    let filter = url_escape(&json!([{"key": "path", "value": "/pricing"}]).to_string());
    let mut gets = vec![
        format!("metrics?{q}"),
        format!("metrics?{q}&filters={filter}"),
        format!("metrics?{q}&timezone=Asia/Kolkata"),
        format!("timeseries?{q}&interval=hour"),
        format!("timeseries?{q}&interval=day&timezone=America/New_York"),
        format!("timeseries?{q}&interval=week&filters={filter}"),
        format!("timeseries?{q}&interval=month"),
        format!("funnel?{q}&steps=screen_view,signup"),
        format!("funnel?{q}&steps=screen_view,login&groupBy=profile&window=86400"),
        format!("retention?{q}&period=day"),
        format!("retention?{q}&period=week&filters={filter}"),
        "live".to_owned(),
        format!("events?{q}&limit=20"),
        format!("events?{q}&limit=5&format=ndjson&filters={filter}"),
        "profiles/user-1".to_owned(),
    ];
    for dimension in [
        "pages",
        "entry_pages",
        "exit_pages",
        "referrers",
        "referrer_types",
        "utm_source",
        "utm_campaign",
        "countries",
        "regions",
        "cities",
        "browsers",
        "os",
        "devices",
    ] {
        gets.push(format!("top/{dimension}?{q}&limit=10"));
    }
    gets.push(format!(
        "top/pages?{q}&filters={filter}&timezone=Asia/Kolkata"
    ));
    let read = read.headers();
    let mut covered = BTreeSet::new();
    for get in &gets {
        let path = format!("/insights/{project}/{get}");
        let (status, _, text) = http(setup.port, "GET", &path, &read, "").unwrap();
        assert_eq!(status, 200, "{path}: {text}");
        let route = get.split('?').next().unwrap();
        let route = match route.split_once('/') {
            Some(("top", _)) => "top/{dimension}".to_owned(),
            Some(("profiles", _)) => "profiles/{profileId}".to_owned(),
            _ => route.to_owned(),
        };
        covered.insert(format!("GET {route}"));
    }
    let body = json!({"startDate": utc_date(now_s - 3 * 86_400), "endDate": utc_date(now_s),
        "steps": [{"name": "screen_view", "filters": [{"key": "path", "value": "/"}]}, {"name": "signup"}]});
    let mut headers = read.to_vec();
    headers.push(("content-type", "application/json"));
    let (status, _, text) = http(
        setup.port,
        "POST",
        &format!("/insights/{project}/funnel"),
        &headers,
        &body.to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{text}");
    covered.insert("POST funnel".to_owned());
    assert_eq!(
        covered,
        documented_routes(),
        "every documented route is exercised"
    );

    // What the insights API asked ClickHouse: this project's queries.
    setup.try_query("SYSTEM FLUSH LOGS").unwrap();
    let logged = setup
        .try_query(&format!(
            "SELECT DISTINCT query FROM system.query_log WHERE type = 2 AND query LIKE 'SELECT%' \
             AND position(query, '{project}') > 0 \
             AND event_time > now() - 600 FORMAT JSONEachRow"
        ))
        .unwrap();
    let queries: Vec<String> = logged
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["query"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .filter(|q| {
            !q.contains("system.") && !q.contains("SELECT count() FROM events WHERE project_id")
        })
        .map(|q| as_tsv(&q))
        .collect();
    assert!(queries.len() >= 25, "too few queries logged: {queries:#?}");

    // The schema as the product creates it on a current server.
    let current = analytics_store::Features::of_version("26.9");
    let migrations: Vec<String> = analytics_store::MIGRATIONS
        .iter()
        .flat_map(|m| m.statements())
        .map(|s| current.adapt(&s))
        .collect();
    let mut tables = serde_json::Map::new();
    for table in ["events", "profiles", "profile_aliases"] {
        let rows = setup
            .try_query(&format!("SELECT * FROM {table} FORMAT TabSeparated"))
            .unwrap();
        tables.insert(table.into(), json!(rows));
    }
    // A retried insert carrying the same deduplication token is dropped.
    let retried = "INSERT INTO events (id, project_id, name) SETTINGS insert_deduplication_token = 'batch-1' \
                   VALUES ('retry-1', 'p', 'x')";
    let after = [
        retried,
        retried,
        "SELECT count() FROM events WHERE id = 'retry-1'",
    ];
    let job = json!({"database": setup.name, "migrations": migrations, "tables": tables,
                     "queries": queries, "after": after});
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/chdb_run.py");
    let (ok, stdout, stderr) = run_with_input(
        Command::new(var("TEST_CHDB_PYTHON")).arg(script),
        job.to_string().as_bytes(),
    );
    assert!(ok, "chdb: {stderr}");
    let report: Value = serde_json::from_slice(&stdout).unwrap();
    let current = report["server"].as_str().unwrap();
    let major: u32 = current.split('.').next().unwrap().parse().unwrap();
    assert!(
        major >= 25,
        "chdb runs ClickHouse {current}, not a current release"
    );

    assert_eq!(
        report["after"][2]["ok"].as_str().map(str::trim),
        Some("1"),
        "deduplication token: {}",
        report["after"]
    );
    let mut mismatches = Vec::new();
    for (query, answer) in queries.iter().zip(report["results"].as_array().unwrap()) {
        let old = setup
            .try_query(query)
            .unwrap_or_else(|e| format!("error: {e}"));
        match answer.get("ok").and_then(Value::as_str) {
            Some(new) if new == old => {}
            Some(new) => {
                mismatches.push(format!("{query}\n  18.16: {old:?}\n  {current}: {new:?}"))
            }
            None => mismatches.push(format!("{query}\n  {current} failed: {}", answer["error"])),
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} queries differ:\n{}",
        mismatches.len(),
        queries.len(),
        mismatches.join("\n\n")
    );
}
