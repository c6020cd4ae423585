//! Prometheus: every stage's `/metrics` passes `promtool check metrics`;
//! the alerting rules pass `promtool check rules` and their unit tests; the
//! Grafana dashboard and the rules only use metrics the pipeline exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use analytics_telemetry::{Kind, METRICS};
use analytics_testkit::*;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

/// Runs promtool with `args`, feeding `stdin`; its exit status and output.
fn promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let (ok, stdout, stderr) =
        run_with_input(Command::new("promtool").args(args), stdin.as_bytes());
    (ok, String::from_utf8_lossy(&stdout).into_owned() + &stderr)
}

/// Metric family names of an exposition text (from its `# TYPE` lines).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The `analytics_*` series names an expression or rule file refers to,
/// with histogram suffixes removed.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("analytics_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// The names of `names` missing from the metric catalogue.
fn uncatalogued(names: &BTreeSet<String>) -> Vec<String> {
    names
        .iter()
        .filter(|n| !METRICS.iter().any(|(m, _, _)| m == n))
        .cloned()
        .collect()
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn every_stage_exports_metrics_promtool_accepts() {
    let setup = Setup::new(BIN, "prom");
    setup.admin(&["migrate"]);
    let creds = setup.create_client("Prom");
    let edge = setup.spawn(&["edge"]);
    let stages = [
        ("enrich", setup.member("prom-e")),
        ("sink", setup.member("prom-s")),
        ("insights", setup.member("prom-i")),
    ];
    let _procs: Vec<Proc> = stages.iter().map(|(cmd, s)| s.spawn(&[cmd])).collect();

    let mut conn = Conn::open(setup.port).unwrap();
    for i in 0..20 {
        let body =
            format!(r#"{{"type":"track","payload":{{"name":"p","properties":{{"i":{i}}}}}}}"#);
        let (status, _, text) = conn
            .send("POST", "/track", &creds.headers(), body.as_bytes())
            .unwrap();
        assert_eq!(status, 202, "{text}");
    }
    let (status, _, _) = conn.send("POST", "/track", &[], b"{}").unwrap();
    assert_eq!(status, 401);
    wait_until(Duration::from_secs(60), || {
        setup.query(&format!(
            "SELECT count() FROM events WHERE project_id = '{}'",
            creds.project_id
        )) == "20"
    });
    let insights = &stages[2].1;
    let path = format!(
        "/insights/{}/metrics?startDate=2020-01-01&endDate=2030-01-01",
        creds.project_id
    );
    let _ = http(insights.port, "GET", &path, &creds.headers(), "");
    // The consumers publish stream gauges every few seconds.
    let metrics_of = |port: u16| http(port, "GET", "/metrics", &[], "").unwrap().2;
    wait_until(Duration::from_secs(30), || {
        metrics_of(stages[1].1.port).contains("analytics_streams_lag_entries")
            && metrics_of(stages[0].1.port).contains("analytics_streams_dead_letters_entries")
    });

    let mut seen = BTreeSet::new();
    let ports = [("edge", setup.port)]
        .into_iter()
        .chain(stages.iter().map(|(cmd, s)| (*cmd, s.port)));
    for (stage, port) in ports {
        let text = metrics_of(port);
        let (ok, report) = promtool(&["check", "metrics"], &text);
        assert!(ok, "{stage}: {report}\n{text}");
        let names = families(&text);
        assert!(!names.is_empty(), "{stage} exports nothing");
        seen.extend(names);
    }
    let unknown = uncatalogued(&seen);
    assert!(
        unknown.is_empty(),
        "exported but not catalogued: {unknown:?}"
    );
    for needed in [
        "analytics_edge_accepted_events_total",
        "analytics_edge_rejected_requests_total",
        "analytics_enricher_events_total",
        "analytics_sink_rows_total",
        "analytics_sink_flush_seconds",
        "analytics_streams_lag_entries",
        "analytics_streams_pending_entries",
        "analytics_streams_dead_letters_entries",
        "analytics_insights_requests_total",
        "analytics_enricher_partition_progress_age_seconds",
        "analytics_enricher_running_tasks",
        "analytics_sink_partition_progress_age_seconds",
        "analytics_sink_running_tasks",
    ] {
        assert!(seen.contains(needed), "no {needed} in {seen:?}");
    }
    drop(edge);
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn promtool_catches_a_metric_without_help() {
    let (ok, report) = promtool(
        &["check", "metrics"],
        "# TYPE analytics_edge_things counter\nanalytics_edge_things 1\n",
    );
    assert!(!ok, "{report}");
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn alerting_rules_pass_promtool_and_their_unit_tests() {
    let rules = deploy("prometheus/alerts.yml");
    let (ok, report) = promtool(&["check", "rules", rules.to_str().unwrap()], "");
    assert!(ok, "{report}");
    let tests = deploy("prometheus/alerts.test.yml");
    let (ok, report) = promtool(&["test", "rules", tests.to_str().unwrap()], "");
    assert!(ok, "{report}");

    let text = std::fs::read_to_string(rules).unwrap();
    let used = referenced(&text);
    let unknown = uncatalogued(&used);
    assert!(unknown.is_empty(), "rules use unknown metrics: {unknown:?}");
}

#[test]
fn dashboard_covers_the_pipeline_with_exported_metrics() {
    let text = std::fs::read_to_string(deploy("grafana/analytics-pipeline.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    let used = referenced(&exprs.join("\n"));
    let unknown = uncatalogued(&used);
    assert!(
        unknown.is_empty(),
        "dashboard uses unknown metrics: {unknown:?}"
    );
    for (what, metric) in [
        ("ingest rate", "analytics_edge_accepted_events_total"),
        (
            "rejects by reason",
            "analytics_edge_rejected_requests_total",
        ),
        ("lag per group", "analytics_streams_lag_entries"),
        ("pending", "analytics_streams_pending_entries"),
        ("flush latency", "analytics_sink_flush_seconds"),
        ("DLQ size", "analytics_streams_dead_letters_entries"),
    ] {
        assert!(used.contains(metric), "no panel for {what}");
    }
    // Histogram panels ask for buckets, counters for rates.
    for expr in &exprs {
        for name in referenced(expr) {
            let kind = METRICS.iter().find(|(n, _, _)| *n == name).unwrap().1;
            match kind {
                Kind::Histogram => assert!(expr.contains(&format!("{name}_bucket")), "{expr}"),
                Kind::Counter => assert!(expr.contains("rate("), "{expr}"),
                Kind::Gauge => {}
            }
        }
    }
}
