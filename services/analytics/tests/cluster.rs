//! Redis Cluster: the pipeline on a real 3-primary cluster (started by the
//! test script) stores every accepted event once, with sessions, profiles
//! and aliases, and its stream partitions spread over the nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use analytics_testkit::*;
use serde_json::json;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

fn nodes() -> Vec<String> {
    var("TEST_REDIS_CLUSTER_URLS")
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// Keys matching `pattern` on each node (each node holds only its own slots).
fn keys_per_node(pattern: &str) -> Vec<Vec<String>> {
    nodes()
        .iter()
        .map(|url| {
            let mut conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let mut keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap();
            keys.sort();
            keys
        })
        .collect()
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn pipeline_on_a_redis_cluster_stores_every_event_once() {
    let setup = Setup::new(BIN, "cluster")
        .with("ANALYTICS_REDIS_CLUSTER", "true")
        .with("ANALYTICS_REDIS_URL", &var("TEST_REDIS_CLUSTER_URLS"))
        .with("ANALYTICS_REDIS_PARTITIONS", "8");
    setup.admin(&["migrate"]);
    let creds = setup.create_client("Cluster");
    let _up = setup.spawn(&["up"]);

    let mut conn = Conn::open(setup.port).unwrap();
    let accepted = std::cell::Cell::new(0u32);
    let mut post = |path: &str, body: serde_json::Value| {
        let (status, _, text) = conn
            .send("POST", path, &creds.headers(), body.to_string().as_bytes())
            .unwrap();
        assert_eq!(status, 202, "{path}: {text}");
        accepted.set(accepted.get() + 1);
    };
    for device in 0..200 {
        for step in 0..3 {
            post(
                "/track",
                json!({"type": "track", "payload": {
                    "name": "page", "deviceId": format!("dev-{device}"),
                    "id": format!("ev-{device}-{step}"),
                    "properties": {"__path": format!("/p/{step}")}}}),
            );
        }
    }
    // Cookieless events (no device id): yesterday's-id lookups touch
    // session keys in other slots.
    for n in 0..50 {
        post(
            "/track",
            json!({"type": "track", "payload": {"name": "anon", "properties": {"n": n}}}),
        );
    }
    for user in 0..40 {
        post(
            "/identify",
            json!({"profileId": format!("user-{user}"), "firstName": format!("U{user}")}),
        );
        post(
            "/increment",
            json!({"profileId": format!("user-{user}"), "property": "visits", "value": 2,
                   "id": format!("inc-{user}")}),
        );
        post(
            "/track",
            json!({"type": "alias", "payload": {"profileId": format!("user-{user}"),
                   "alias": format!("legacy-{user}")}}),
        );
    }
    let stored = || {
        setup.query(&format!(
            "SELECT count(), uniqExact(id) FROM events WHERE project_id = '{}'",
            creds.project_id
        ))
    };
    // Aliases are applied before events that use them arrive (partitions
    // are processed independently, so there is no order across them).
    let sent = accepted.get();
    wait_until(Duration::from_secs(90), || {
        stored() == format!("{sent}\t{sent}")
    });
    for user in 0..40 {
        post(
            "/track",
            json!({"type": "track", "payload": {"name": "login",
                   "deviceId": format!("dev-{user}"), "profileId": format!("legacy-{user}")}}),
        );
    }
    let accepted = accepted.get();
    wait_until(Duration::from_secs(90), || {
        stored() == format!("{accepted}\t{accepted}")
    });
    // Sessions were assigned through the per-slot session scripts.
    let without_session = setup.query(&format!(
        "SELECT count() FROM events WHERE project_id = '{}' AND name = 'page' AND session_id = ''",
        creds.project_id
    ));
    assert_eq!(without_session, "0");
    let sessions = setup.query(&format!(
        "SELECT uniqExact(session_id) FROM events WHERE project_id = '{}' AND name = 'page'",
        creds.project_id
    ));
    assert_eq!(sessions, "200", "one session per device");
    // Profile scripts ran (each profile's keys in its own slot), and the
    // alias resolved to its profile.
    wait_until(Duration::from_secs(30), || {
        setup.query(
            "SELECT count() FROM (SELECT id, argMax(properties, version) AS p FROM profiles \
             GROUP BY id HAVING visitParamExtractFloat(p, 'visits') = 2)",
        ) == "40"
    });
    let logins = setup.query(&format!(
        "SELECT countIf(profile_id LIKE 'user-%') FROM events WHERE project_id = '{}' AND name = 'login'",
        creds.project_id
    ));
    assert_eq!(logins, "40");

    // The partitions of each topic live on more than one node.
    let raw = keys_per_node(&format!("{}:raw:*", setup.name));
    let holding: Vec<usize> = raw.iter().map(Vec::len).collect();
    assert_eq!(holding.iter().sum::<usize>(), 8, "{raw:?}");
    assert!(
        holding.iter().filter(|n| **n > 0).count() >= 2,
        "partitions not spread: {raw:?}"
    );
    // Each partition's streams share a node (one hash tag).
    let mut node_of = BTreeMap::new();
    for (node, keys) in raw.iter().enumerate() {
        for key in keys {
            node_of.insert(key.replace(":raw:", ":"), node);
        }
    }
    for (node, keys) in keys_per_node(&format!("{}:enriched:*", setup.name))
        .iter()
        .enumerate()
    {
        for key in keys {
            assert_eq!(
                node_of.get(&key.replace(":enriched:", ":")),
                Some(&node),
                "{key}"
            );
        }
    }
    // Admin commands work in cluster mode too.
    let out = setup.command(&["dlq", "list"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "no dead letters expected");
}
