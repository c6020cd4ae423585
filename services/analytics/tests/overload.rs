//! Overload: with the sinks unable to write, ingest outruns the pipeline.
//! The edge must shed with 503 + Retry-After rather than buffer, both
//! streams must stay near `redis.max_stream_len`, no process may keep
//! growing, and once a working sink starts every accepted event is stored
//! exactly once.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use analytics_testkit::*;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

/// The stream cap of this test, far below the shipped 2,000,000 events per
/// partition: filling four partitions to the shipped cap takes 8 million
/// accepted events, minutes of load and gigabytes of Redis here. What is
/// tested, shedding at the cap and memory that stops growing, does not
/// depend on its size.
const CAP: u64 = 2_000;
const BATCH: usize = 100;

fn rss_mb(proc: &Proc) -> f64 {
    std::fs::read_to_string(format!("/proc/{}/status", proc.0.id()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The longest partition of `topic`, in documents (events, records): entries
/// are bundles, and the cap counts documents.
fn longest(setup: &Setup, topic: &str) -> u64 {
    setup.document_counts(topic).into_iter().max().unwrap()
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn overload_is_shed_with_503_and_streams_and_memory_stay_bounded() {
    let setup =
        Setup::new(BIN, "overload").with("ANALYTICS_REDIS_MAX_STREAM_LEN", &CAP.to_string());
    setup.admin(&["migrate"]);
    let creds = setup.create_client("Overload");
    let edge = setup.spawn(&["edge"]);
    let enricher = setup.member("ov-e").spawn(&["enrich"]);
    // Nothing listens here: this sink can read but never write.
    let stuck = setup.member("ov-stuck").with(
        "ANALYTICS_CLICKHOUSE_URL",
        &format!("http://127.0.0.1:{}", free_port()),
    );
    let mut stuck_sink = stuck.spawn(&["sink"]);

    // Warm up: the enricher has loaded its rules once one event is through.
    let mut conn = Conn::open(setup.port).unwrap();
    let warm = r#"{"type":"track","payload":{"name":"warm","id":"warm-up"}}"#;
    let (status, _, text) = conn
        .send("POST", "/track", &creds.headers(), warm.as_bytes())
        .unwrap();
    assert_eq!(status, 202, "{text}");
    wait_until(Duration::from_secs(60), || longest(&setup, "enriched") > 0);

    let accepted = Mutex::new(BTreeSet::from(["warm-up".to_owned()]));
    let (shed, without_retry_after) = (Mutex::new(0u64), Mutex::new(0u64));
    let samples = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..6 {
            let (accepted, shed, without_retry_after, samples) =
                (&accepted, &shed, &without_retry_after, &samples);
            let (setup, creds, edge, enricher, stuck_sink) =
                (&setup, &creds, &edge, &enricher, &stuck_sink);
            s.spawn(move || {
                let mut conn = Conn::open(setup.port).unwrap();
                for r in 0..150 {
                    let ids: Vec<String> = (0..BATCH).map(|i| format!("ov-{t}-{r}-{i}")).collect();
                    let events: Vec<String> = ids
                        .iter()
                        .map(|id| {
                            format!(
                                r#"{{"type":"track","payload":{{"name":"flood","id":"{id}","deviceId":"{id}"}}}}"#
                            )
                        })
                        .collect();
                    let body = format!("[{}]", events.join(","));
                    let (status, headers, text) = conn
                        .send("POST", "/batch", &creds.headers(), body.as_bytes())
                        .unwrap();
                    match status {
                        202 => accepted.lock().unwrap().extend(ids),
                        503 => {
                            *shed.lock().unwrap() += 1;
                            if !headers.iter().any(|(k, _)| k == "retry-after") {
                                *without_retry_after.lock().unwrap() += 1;
                            }
                            assert!(text.contains("error"), "{text}");
                        }
                        other => panic!("unexpected {other}: {text}"),
                    }
                    if t == 0 && r % 10 == 0 {
                        samples.lock().unwrap().push((
                            longest(setup, "raw"),
                            longest(setup, "enriched"),
                            [rss_mb(edge), rss_mb(enricher), rss_mb(stuck_sink)],
                        ));
                    }
                }
            });
        }
    });
    let shed = *shed.lock().unwrap();
    let accepted = accepted.into_inner().unwrap();
    let samples = samples.into_inner().unwrap();
    eprintln!(
        "overload: {} events accepted, {shed} requests shed with 503; (raw, enriched, RSS MB edge/enricher/sink): {samples:?}",
        accepted.len()
    );
    assert!(shed > 100, "the pipeline never pushed back ({shed} 503s)");
    assert_eq!(
        *without_retry_after.lock().unwrap(),
        0,
        "503 without Retry-After"
    );
    // Streams: the cap, plus what was in flight when a length was read.
    let (raw, enriched) = samples.iter().fold((0, 0), |(r, e), (raw, enriched, _)| {
        (r.max(*raw), e.max(*enriched))
    });
    assert!(raw <= CAP + 2 * BATCH as u64, "raw partition reached {raw}");
    assert!(
        enriched <= CAP + 2_000,
        "enriched partition reached {enriched}"
    );
    // Memory: once the streams are full, the flood goes on but no process
    // grows any more (the sink holds at most one batch of sink.max_rows).
    let (before, end) = samples.split_at(samples.len() - 3);
    for (i, stage) in ["edge", "enricher", "sink"].iter().enumerate() {
        let earlier = before.iter().map(|s| s.2[i]).fold(0.0, f64::max);
        let last = end.iter().map(|s| s.2[i]).fold(0.0, f64::max);
        assert!(
            last <= earlier + 16.0,
            "{stage} still growing while shedding: {earlier:.0} MB, then {last:.0} MB"
        );
    }

    // A sink that can write drains everything, once.
    stuck_sink.0.kill().unwrap();
    let _ = stuck_sink.0.wait();
    // The shipped claim time: the stuck sink's entries are taken over 30 s
    // after it last touched them.
    let _sink = setup.member("ov-s").spawn(&["sink"]);
    let total = accepted.len();
    wait_until(Duration::from_secs(120), || {
        setup.query("SELECT count() FROM events") == total.to_string()
    });
    let stored: BTreeSet<String> = setup
        .query("SELECT id FROM events")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(stored, accepted);
    assert_eq!(
        setup.query("SELECT uniqExact(id) FROM events"),
        total.to_string()
    );
}
