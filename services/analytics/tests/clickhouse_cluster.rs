//! ClickHouse cluster: migrations with `clickhouse.cluster` build
//! replicated tables behind `Distributed` ones on two real servers (with the
//! ZooKeeper the test script starts); the same events sent to a
//! single-server install and to the cluster spread over both shards and
//! give the same insights answers.

use std::time::Duration;

use analytics_testkit::*;
use serde_json::Value;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

const CLUSTER: &str = "analytics_cluster";

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn a_two_shard_cluster_answers_like_a_single_server() {
    let urls = var("TEST_CLICKHOUSE_CLUSTER_URLS");
    let nodes: Vec<&str> = urls.split(',').collect();
    let single = Install::start(Setup::new(BIN, "chsingle"));
    let mut cluster_setup = Setup::new(BIN, "chcluster")
        .with("ANALYTICS_CLICKHOUSE_URL", nodes[0])
        .with("ANALYTICS_CLICKHOUSE_CLUSTER", CLUSTER);
    cluster_setup.clickhouse_url = nodes[0].to_owned();
    let cluster = Install::start(cluster_setup);

    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let events = sample_events(now_s);
    for install in [&single, &cluster] {
        install.send(&events);
    }
    let total = events.len() as u64;
    wait_until(Duration::from_secs(90), || {
        single.stored() == total && cluster.stored() == total
    });

    // Both shards hold part of the events, and nothing twice.
    let per_shard: Vec<u64> = nodes
        .iter()
        .map(|url| {
            clickhouse(
                url,
                &cluster.setup.name,
                &format!(
                    "SELECT count() FROM events_local WHERE project_id = '{}'",
                    cluster.project
                ),
            )
            .parse()
            .unwrap()
        })
        .collect();
    assert_eq!(per_shard.iter().sum::<u64>(), total, "{per_shard:?}");
    assert!(
        per_shard.iter().all(|n| *n > 0),
        "one shard is empty: {per_shard:?}"
    );
    let q = format!(
        "startDate={}&endDate={}",
        utc_date(now_s - 3 * 86_400),
        utc_date(now_s)
    );
    let queries = [
        format!("metrics?{q}"),
        format!("metrics?{q}&timezone=Asia/Seoul"),
        format!("timeseries?{q}&interval=hour"),
        format!("timeseries?{q}&interval=day&timezone=America/New_York"),
        format!("top/pages?{q}&limit=10"),
        format!("top/entry_pages?{q}"),
        format!("top/referrers?{q}"),
        format!("funnel?{q}&steps=screen_view,signup"),
        format!("retention?{q}&period=day"),
    ];
    // Answers settle once the last rows are in on both sides.
    for query in &queries {
        let mut last = (Value::Null, Value::Null);
        let settled = (0..50).any(|_| {
            last = (single.insights(query), cluster.insights(query));
            if last.0 == last.1 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
            false
        });
        assert!(settled, "{query}:\nsingle  {}\ncluster {}", last.0, last.1);
    }
    let metrics = single.insights(&format!("metrics?{q}"));
    assert_eq!(
        metrics["current"]["unique_visitors"], 120,
        "the comparison must cover real data: {metrics}"
    );

    // A cluster from before migration 10, whose migrations 8 to 10 make the
    // hourly aggregates again and then drop them, on every shard (11 finds
    // its column there and skips it).
    let db = &cluster.setup.name;
    cluster.setup.query("TRUNCATE TABLE schema_migrations");
    cluster.setup.query(
        "INSERT INTO schema_migrations (version, name) \
         SELECT number + 1, 'earlier' FROM numbers(7)",
    );
    assert_eq!(
        cluster.setup.admin(&["migrate"])["applied"],
        serde_json::json!([8, 9, 10, 11, 12])
    );
    for url in &nodes {
        let left = clickhouse(
            url,
            "system",
            &format!(
                "SELECT groupArray(name) FROM tables \
                 WHERE database = '{db}' AND name LIKE 'events_hourly%'"
            ),
        );
        assert_eq!(left, "[]", "on {url}");
    }
    for query in &queries[..3] {
        assert_eq!(single.insights(query), cluster.insights(query), "{query}");
    }
}
