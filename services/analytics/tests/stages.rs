//! Stages run as separate processes: consumer groups share the work, take
//! over a dead member's entries, and dead-letter what cannot be processed.

use std::time::Duration;

use analytics_testkit::*;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

fn send(setup: &Setup, creds: &Credentials, n: u32) {
    let mut conn = Conn::open(setup.port).unwrap();
    for i in 0..n {
        let body = format!(
            r#"{{"type":"track","payload":{{"name":"s","deviceId":"dev-{}","properties":{{"n":{i}}}}}}}"#,
            i % 50
        );
        let (status, _, text) = conn
            .send("POST", "/track", &creds.headers(), body.as_bytes())
            .unwrap();
        assert_eq!(status, 202, "{text}");
    }
}

fn stored(setup: &Setup, creds: &Credentials) -> String {
    setup.query(&format!(
        "SELECT count(), uniqExact(id) FROM events WHERE project_id = '{}'",
        creds.project_id
    ))
}

fn metric(setup: &Setup, name: &str) -> f64 {
    let (_, _, text) = http(setup.port, "GET", "/metrics", &[], "").unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A store on the setup's database, as the sink opens it.
fn store(setup: &Setup) -> analytics_store::Store {
    analytics_store::Store::new(&analytics_store::StoreSettings {
        url: setup.clickhouse_url.clone(),
        database: setup.name.clone(),
        user: "default".into(),
        password: String::new(),
        cluster: None,
    })
}

fn redis(setup: &Setup) -> redis::Connection {
    redis::Client::open(setup.redis_url.as_str())
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn two_enrichers_and_two_sinks_share_the_work() {
    let setup = Setup::new(BIN, "share");
    setup.admin(&["migrate"]);
    let creds = setup.create_client("Stages");
    let _edge = setup.spawn(&["edge"]);
    let members: Vec<(Setup, Proc)> = [
        ("enrich", "e1"),
        ("enrich", "e2"),
        ("sink", "s1"),
        ("sink", "s2"),
    ]
    .into_iter()
    .map(|(stage, name)| {
        let m = setup.member(name);
        let p = m.spawn(&[stage]);
        (m, p)
    })
    .collect();
    send(&setup, &creds, 2_000);
    wait_until(Duration::from_secs(60), || {
        stored(&setup, &creds) == "2000\t2000"
    });
    for (m, _) in &members[2..] {
        assert!(
            metric(m, "analytics_sink_rows_total") > 0.0,
            "a sink did no work"
        );
    }
    for (m, _) in &members[..2] {
        assert!(
            metric(m, "analytics_enricher_events_total") > 0.0,
            "an enricher did no work"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(stored(&setup, &creds), "2000\t2000");
}

/// Claims after 2 s (instead of the shipped 30 s), retries at most 200 ms
/// apart and counts a partition stalled after 2 s (instead of 60), so the
/// stall and the takeover show within seconds; the twin below runs the
/// shipped defaults.
#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn a_dead_sinks_entries_are_taken_over_quickly_when_claims_are_early() {
    dead_sinks_entries_are_taken_over(
        Setup::new(BIN, "takeover")
            .with("ANALYTICS_SINK_CLAIM_IDLE_MS", "2000")
            .with("ANALYTICS_SINK_MAX_BACKOFF_MS", "200")
            .with("ANALYTICS_SINK_STALL_AFTER_MS", "2000"),
        Duration::from_secs(2),
    );
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn a_dead_sinks_entries_are_taken_over() {
    dead_sinks_entries_are_taken_over(
        Setup::new(BIN, "takeover_defaults"),
        Duration::from_secs(60),
    );
}

/// A sink that cannot reach ClickHouse stalls (its `/readyz` answers 503
/// once `stall_after` has passed), dies, and its entries are taken over.
fn dead_sinks_entries_are_taken_over(setup: Setup, stall_after: Duration) {
    setup.admin(&["migrate"]);
    let creds = setup.create_client("Stages");
    let _edge = setup.spawn(&["edge"]);
    let enricher = setup.member("e1");
    let _enricher = enricher.spawn(&["enrich"]);
    // This sink reads entries but can never store them: its ClickHouse is unreachable.
    let mut stuck = setup.member("stuck");
    stuck.clickhouse_url = format!("http://127.0.0.1:{}", free_port());
    let mut stuck_proc = stuck.spawn(&["sink"]);
    send(&setup, &creds, 300);
    let mut conn = redis(&setup);
    let pending = |conn: &mut redis::Connection| -> u64 {
        (0..4)
            .map(|p| {
                let summary: (u64, redis::Value, redis::Value, redis::Value) =
                    redis::cmd("XPENDING")
                        .arg(format!("{}:enriched:{{p{p}}}", setup.name))
                        .arg("sink")
                        .query(conn)
                        .unwrap();
                summary.0
            })
            .sum()
    };
    // It holds one batch per partition while it retries, and reads no further.
    wait_until(Duration::from_secs(30), || pending(&mut conn) > 0);
    let stuck_since = std::time::Instant::now();
    let ready = |s: &Setup| http(s.port, "GET", "/readyz", &[], "").unwrap();
    let (status, _, body) = ready(&stuck);
    assert_eq!(status, 200, "not stalled yet: {body}");
    wait_until(stall_after + Duration::from_secs(30), || {
        ready(&stuck).0 == 503
    });
    assert!(stuck_since.elapsed() >= stall_after.saturating_sub(Duration::from_secs(2)));
    let (_, _, body) = ready(&stuck);
    assert!(body.contains("no progress for"), "{body}");
    assert!(
        metric(&stuck, "analytics_sink_partition_progress_age_seconds")
            >= stall_after.as_secs_f64()
    );
    // kill -9: no flush, no goodbye; its entries stay pending under its name.
    stuck_proc.0.kill().unwrap();
    stuck_proc.0.wait().unwrap();
    let abandoned = pending(&mut conn);
    assert!(abandoned > 0);
    let rescuer = setup.member("rescuer");
    let _rescuer = rescuer.spawn(&["sink"]);
    wait_until(Duration::from_secs(90), || {
        stored(&setup, &creds) == "300\t300"
    });
    wait_until(Duration::from_secs(10), || pending(&mut conn) == 0);
    assert!(metric(&rescuer, "analytics_streams_claimed_total") >= abandoned as f64);
}

fn analytics_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn batches_are_written_as_bundles_and_stored_event_by_event() {
    let setup = Setup::new(BIN, "bundles").with("ANALYTICS_CONSUMER_NAME", "only");
    setup.admin(&["migrate"]);
    let creds = setup.create_client("Bundles");
    let edge = setup.spawn(&["edge"]);
    // One device: every event of the batch goes to one partition.
    let events: Vec<String> = (0..120)
        .map(|i| {
            format!(r#"{{"type":"track","payload":{{"name":"b","deviceId":"one","properties":{{"i":{i}}}}}}}"#)
        })
        .collect();
    let body = format!("[{}]", events.join(","));
    let (status, _, text) = http(setup.port, "POST", "/batch", &creds.headers(), &body).unwrap();
    assert_eq!(status, 202, "{text}");
    let mut documents: Vec<u64> = setup
        .documents("raw")
        .concat()
        .iter()
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["properties"]["i"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let entries: u64 = setup.raw_len();
    documents.sort_unstable();
    assert_eq!(documents, (0..120).collect::<Vec<u64>>());
    assert!(entries > 1 && entries < 120, "{entries} entries");
    drop(edge);
    // The enricher bundles its records too; the sink stores them one by one.
    let _enricher = setup.spawn(&["enrich"]);
    wait_until(Duration::from_secs(30), || {
        setup.document_counts("enriched").iter().sum::<u64>() == 120
    });
    let mut records: Vec<u64> = setup
        .documents("enriched")
        .concat()
        .iter()
        .map(|d| {
            let record: serde_json::Value = serde_json::from_str(d).unwrap();
            assert_eq!(record["t"], "events", "{d}");
            let properties: serde_json::Value =
                serde_json::from_str(record["r"]["properties"].as_str().unwrap()).unwrap();
            properties["i"].as_u64().unwrap()
        })
        .collect();
    records.sort_unstable();
    assert_eq!(records, (0..120).collect::<Vec<u64>>());
    let entries: u64 = setup.stream_lengths("enriched").iter().sum();
    assert!(entries > 1 && entries < 120, "{entries} enriched entries");
    let _sink = setup.member("only").spawn(&["sink"]);
    wait_until(Duration::from_secs(30), || {
        stored(&setup, &creds) == "120\t120"
    });
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn undecodable_entries_go_to_the_dead_letter_stream() {
    let setup = Setup::new(BIN, "poison").with("ANALYTICS_CONSUMER_NAME", "only");
    let _up = setup.spawn(&["up"]);
    let creds = setup.bootstrap();
    let mut conn = redis(&setup);
    let raw = format!("{}:raw:{{p1}}", setup.name);
    let enriched = format!("{}:enriched:{{p2}}", setup.name);
    let _: String = redis::cmd("XADD")
        .arg(&raw)
        .arg("*")
        .arg("e")
        .arg("{not json")
        .query(&mut conn)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&enriched)
        .arg("*")
        .arg("e")
        .arg("[1,2]")
        .query(&mut conn)
        .unwrap();
    // JSON records, as enrichers before the binary frames wrote them and as
    // replayed dead letters hold them, are still stored.
    let legacy = |id: &str| {
        serde_json::to_string(&analytics_store::Record::Events(
            analytics_store::EventRow {
                id: id.into(),
                project_id: creds.project_id.clone(),
                name: "legacy".into(),
                created_at: (analytics_now_ms() / 1000) as u32,
                received_at: (analytics_now_ms() / 1000) as u32,
                ..Default::default()
            },
        ))
        .unwrap()
    };
    let _: String = redis::cmd("XADD")
        .arg(&enriched)
        .arg("*")
        .arg("e")
        .arg(format!("{}\n{}", legacy("legacy-1"), legacy("legacy-2")))
        .query(&mut conn)
        .unwrap();
    // A bundle with one good and one bad event: the good one is stored, the
    // bad one alone goes to the dead letters.
    let good = serde_json::json!({
        "id": "bundled-1", "project_id": creds.project_id, "kind": "track", "name": "s",
        "device_id": "bundled", "received_at_ms": analytics_now_ms(), "id_from_client": true
    });
    let _: String = redis::cmd("XADD")
        .arg(&raw)
        .arg("*")
        .arg("e")
        .arg(format!("{good}\n{{\"half\":"))
        .query(&mut conn)
        .unwrap();
    send(&setup, &creds, 10);
    let dead_reasons = |conn: &mut redis::Connection| -> Vec<String> {
        [1, 2]
            .iter()
            .flat_map(|p| {
                let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(format!("{}:dead:{{p{p}}}", setup.name))
                    .arg("-")
                    .arg("+")
                    .query(conn)
                    .unwrap();
                entries
                    .ids
                    .into_iter()
                    .map(|e| e.get::<String>("reason").unwrap_or_default())
            })
            .collect()
    };
    wait_until(Duration::from_secs(30), || {
        dead_reasons(&mut conn).len() == 3
    });
    let reasons = dead_reasons(&mut conn).join(" | ");
    assert_eq!(
        reasons.matches("cannot decode raw event").count(),
        2,
        "{reasons}"
    );
    assert!(
        reasons.contains("cannot decode enriched record"),
        "{reasons}"
    );
    wait_until(Duration::from_secs(30), || {
        stored(&setup, &creds) == "13\t13"
    });
    let dead_payloads: Vec<String> = redis::cmd("XRANGE")
        .arg(format!("{}:dead:{{p1}}", setup.name))
        .arg("-")
        .arg("+")
        .query::<redis::streams::StreamRangeReply>(&mut conn)
        .unwrap()
        .ids
        .into_iter()
        .map(|e| e.get::<String>("e").unwrap_or_default())
        .collect();
    assert!(
        dead_payloads.contains(&"{\"half\":".to_owned()),
        "only the bad document is a dead letter: {dead_payloads:?}"
    );
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn dead_letters_can_be_listed_replayed_and_dropped() {
    let setup = Setup::new(BIN, "dlq").with("ANALYTICS_CONSUMER_NAME", "only");
    let _up = setup.spawn(&["up"]);
    let creds = setup.bootstrap();
    let mut conn = redis(&setup);
    // A poison entry, and a valid event that an operator parked by hand.
    let raw = format!("{}:raw:{{p0}}", setup.name);
    let dead = format!("{}:dead:{{p0}}", setup.name);
    let _: String = redis::cmd("XADD")
        .arg(&raw)
        .arg("*")
        .arg("e")
        .arg("{broken")
        .query(&mut conn)
        .unwrap();
    let valid = serde_json::json!({
        "id": "parked-1", "project_id": creds.project_id, "kind": "track", "name": "parked",
        "device_id": "d1", "received_at_ms": 1_767_607_200_000i64
    });
    let _: String = redis::cmd("XADD")
        .arg(&dead)
        .arg("*")
        .arg("source")
        .arg(&raw)
        .arg("group")
        .arg("enricher")
        .arg("id")
        .arg("0-1")
        .arg("reason")
        .arg("parked by an operator")
        .arg("e")
        .arg(valid.to_string())
        .query(&mut conn)
        .unwrap();
    let list = || -> Vec<serde_json::Value> {
        let out = setup.command(&["dlq", "list"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_until(Duration::from_secs(30), || list().len() == 2);
    let entries = list();
    let parked = entries
        .iter()
        .find(|e| e["reason"] == "parked by an operator")
        .unwrap();
    let poison = entries
        .iter()
        .find(|e| e["reason"] != "parked by an operator")
        .unwrap();
    assert!(
        poison["reason"]
            .as_str()
            .unwrap()
            .contains("cannot decode raw event"),
        "{poison}"
    );
    assert_eq!(poison["payload"], "{broken");
    let id = parked["id"].as_str().unwrap();
    let replayed = setup.admin(&["dlq", "replay", "--partition", "0", "--id", id]);
    assert_eq!(replayed["replayed"], 1);
    wait_until(Duration::from_secs(30), || stored(&setup, &creds) == "1\t1");
    assert_eq!(setup.query("SELECT name FROM events"), "parked");
    let dropped = setup.admin(&["dlq", "drop", "--all"]);
    assert_eq!(dropped["dropped"], 1);
    assert!(list().is_empty());
}

/// A consumer whose health and metrics address is taken stops at once,
/// naming the address, instead of running without its admin server.
#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn a_taken_admin_address_ends_the_consumer_at_start() {
    let setup = Setup::new(BIN, "taken");
    setup.admin(&["migrate"]);
    let holder = std::net::TcpListener::bind(("127.0.0.1", setup.port)).unwrap();
    for stage in ["sink", "enrich"] {
        let (status, stderr) = setup.run_until_exit(&[stage], Duration::from_secs(10));
        assert!(!status.success(), "{stage} exited 0");
        assert!(
            stderr.contains(&format!("cannot listen on 127.0.0.1:{}", setup.port)),
            "{stage}: {stderr}"
        );
    }
    drop(holder);
}

/// A cache TTL of 500 ms (instead of the shipped 30 s) keeps this test
/// short; the twin below waits out the shipped TTL.
#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn a_revoked_client_is_refused_within_the_cache_ttl() {
    revoked_client_is_refused_within(
        Setup::new(BIN, "revoke").with("ANALYTICS_EDGE_AUTH_CACHE_TTL_MS", "500"),
        Duration::from_millis(500),
    );
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn a_revoked_client_is_refused_within_the_shipped_cache_ttl() {
    revoked_client_is_refused_within(Setup::new(BIN, "revoke_defaults"), Duration::from_secs(30));
}

fn revoked_client_is_refused_within(setup: Setup, ttl: Duration) {
    let _up = setup.spawn(&["up"]);
    let creds = setup.create_client("Revoked");
    let valid = r#"{"type":"track","payload":{"name":"a"}}"#;
    assert_eq!(
        http(setup.port, "POST", "/track", &creds.headers(), valid)
            .unwrap()
            .0,
        202
    );
    let out = setup.admin(&["client", "revoke", "--id", &creds.id]);
    assert_eq!(out["revoked"], true);
    std::thread::sleep(ttl + Duration::from_millis(100));
    let response = http(setup.port, "POST", "/track", &creds.headers(), valid).unwrap();
    assert_eq!(response.0, 401, "{}", response.2);
    // Secrets never reach logs or metrics.
    let (_, _, metrics) = http(setup.port, "GET", "/metrics", &[], "").unwrap();
    assert!(!metrics.contains(&creds.secret) && !metrics.contains(&creds.id));
}

/// A sink died after inserting most of a full batch (the shipped
/// `sink.max_rows`, 50,000 rows with UUID-sized ids: far more id text
/// than ClickHouse's 256 KiB `max_query_size`) and before acknowledging
/// it. Restarted under its name, it reads the batch again, checks it
/// against ClickHouse and stores each row once.
#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn a_redelivered_full_batch_is_stored_once() {
    let full = analytics_config::Config::load(None, [])
        .unwrap()
        .sink
        .max_rows;
    assert_eq!(full % 50, 0, "whole entries of 50 rows");
    let setup = Setup::new(BIN, "redeliver");
    setup.admin(&["migrate"]);
    let creds = setup.create_client("Redeliver");
    let now = (analytics_now_ms() / 1000) as u32;
    let rows: Vec<analytics_store::EventRow> = (0..full as u32)
        .map(|i| analytics_store::EventRow {
            id: format!("0194c3a2-7b1e-7c3d-9e4f-{i:012}"),
            project_id: creds.project_id.clone(),
            name: "redelivered".into(),
            device_id: format!("dev-{}", i % 300),
            session_id: format!("ses-{}", i % 300),
            created_at: now - i % 3_600,
            received_at: now,
            ..Default::default()
        })
        .collect();
    let key = format!("{}:enriched:{{p0}}", setup.name);
    let mut conn = redis(&setup);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("sink")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut conn)
        .unwrap();
    for chunk in rows.chunks(50) {
        let bundle: Vec<String> = chunk
            .iter()
            .map(|r| serde_json::to_string(&analytics_store::Record::Events(r.clone())).unwrap())
            .collect();
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("e")
            .arg(bundle.join("\n"))
            .query(&mut conn)
            .unwrap();
    }
    // The dead sink's read: every entry is pending under its name.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("sink")
        .arg("s1")
        .arg("COUNT")
        .arg(full / 50)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    // …and its insert of the first 70% of the rows, before it died.
    let inserted = full * 7 / 10;
    let store = store(&setup);
    block_on(store.insert("events", &rows[..inserted])).unwrap();
    let pending = |conn: &mut redis::Connection| -> u64 {
        let summary: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg(&key)
            .arg("sink")
            .query(conn)
            .unwrap();
        summary.0
    };
    assert_eq!(pending(&mut conn), (full / 50) as u64);

    let sink = setup.member("s1");
    let _sink = sink.spawn(&["sink"]);
    wait_until(Duration::from_secs(60), || pending(&mut conn) == 0);
    assert_eq!(stored(&setup, &creds), format!("{full}\t{full}"));
    assert_eq!(
        metric(&sink, "analytics_sink_duplicates_skipped_total"),
        inserted as f64
    );
    assert_eq!(metric(&sink, "analytics_sink_insert_errors_total"), 0.0);
}

/// Flushes that meet in time share one INSERT per table: batches written
/// at once by several tasks are all stored, each row once, in fewer parts
/// than batches (a part of files per insert is most of what an insert
/// costs the server).
#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn concurrent_batches_are_combined_into_fewer_inserts() {
    const BATCHES: u32 = 8;
    const ROWS: u32 = 1_000;
    let setup = Setup::new(BIN, "combined");
    setup.admin(&["migrate"]);
    let store = store(&setup);
    let inserts = analytics_store::CombinedInserts::new(store, "events");
    let now = (analytics_now_ms() / 1000) as u32;
    let batches: Vec<Vec<analytics_store::EventRow>> = (0..BATCHES)
        .map(|b| {
            (0..ROWS)
                .map(|i| analytics_store::EventRow {
                    id: format!("b{b}-{i}"),
                    project_id: "combined".into(),
                    name: "combined".into(),
                    device_id: format!("dev-{i}"),
                    created_at: now,
                    received_at: now,
                    ..Default::default()
                })
                .collect()
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = batches
            .into_iter()
            .map(|rows| {
                let inserts = inserts.clone();
                tokio::spawn(async move { inserts.insert(&rows).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    });
    assert_eq!(
        setup.query("SELECT count(), uniqExact(id) FROM events"),
        format!("{0}\t{0}", BATCHES * ROWS)
    );
    // Parts made by inserts are level 0 (merges make higher levels); the
    // rows all fall in one month, so an insert made one part.
    let inserted_parts: u32 = setup
        .query(&format!(
            "SELECT count() FROM system.parts WHERE database = '{}' AND table = 'events' AND level = 0",
            setup.name
        ))
        .parse()
        .unwrap();
    assert!(
        (1..BATCHES).contains(&inserted_parts),
        "{inserted_parts} inserts for {BATCHES} batches"
    );
}
