//! The pipeline as separate processes (one edge, two enrichers, two sinks)
//! on its own Redis (AOF, `appendfsync always`) and ClickHouse, under
//! steady load, while things break: consumers killed with SIGKILL and
//! restarted, ClickHouse stopped for ten seconds, Redis restarted, the edge
//! killed. Afterwards every event that got a 202 is in `events` exactly once,
//! the aggregates agree with a recount, and no dead letter is left.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;

/// Redis that writes every acknowledged command to disk before answering.
const AOF_ALWAYS: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

/// Stops a process with SIGTERM (a clean stop) and waits for it.
fn stop(proc: &mut Proc) {
    let _ = Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status();
    let _ = proc.0.wait();
}

/// Kills a process with SIGKILL: no flush, no goodbye.
fn kill(proc: &mut Proc) {
    let _ = proc.0.kill();
    let _ = proc.0.wait();
}

/// Lengths and group states of every stream, for the log.
fn stream_state(setup: &Setup) -> String {
    let Ok(mut redis) =
        redis::Client::open(setup.redis_url.as_str()).and_then(|c| c.get_connection())
    else {
        return "redis unreachable".into();
    };
    let mut out = Vec::new();
    for topic in ["raw", "enriched", "dead"] {
        for p in 0..4 {
            let key = format!("{}:{topic}:{{p{p}}}", setup.name);
            let len: u64 = redis::cmd("XLEN").arg(&key).query(&mut redis).unwrap_or(0);
            let groups: redis::Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&key)
                .query(&mut redis)
                .unwrap_or(redis::Value::Nil);
            out.push(format!("{topic}{p}={len} {groups:?}"));
        }
    }
    out.join("; ")
}

/// A small deterministic generator (xorshift64*) for the kill schedule.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Samples how far behind ClickHouse is while the test runs: now minus the
/// newest stored receive time (whole seconds, as stored).
fn watch_lag(
    setup: &Setup,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let setup = setup.clone();
    std::thread::spawn(move || {
        let mut worst = 0u64;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            let newest = try_clickhouse(
                &setup.clickhouse_url,
                &setup.name,
                "SELECT toUInt64(max(received_at)) FROM events",
            );
            let (Some(newest), Ok(now)) = (
                newest.ok().and_then(|n| n.trim().parse::<u64>().ok()),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH),
            ) else {
                continue; // ClickHouse is down on purpose for a while.
            };
            if newest > 0 {
                worst = worst.max(now.as_secs().saturating_sub(newest));
            }
        }
        worst
    })
}

/// It prints its figures (accepted, stored, duplicates, lost, drain time,
/// max lag, the kill schedule's seed); `--no-capture` shows them. Kill times
/// and victims are random; `TEST_FAULT_SEED` replays a schedule.
#[test]
fn nothing_is_lost_or_doubled_while_everything_breaks() {
    let work = PathBuf::from(var("TEST_WORK_DIR")).join(unique("faults"));
    let (redis_dir, ch_dir) = (work.join("redis"), work.join("clickhouse"));
    let redis_port = free_port();
    let (ch_http, ch_tcp) = (free_port(), free_port());
    clickhouse_config(&ch_dir, ch_http, ch_tcp);
    let mut redis_server = start_redis(&redis_dir, redis_port, AOF_ALWAYS);
    let mut clickhouse = start_clickhouse(&ch_dir, ch_http);

    let mut setup = Setup::new("faults")
        .with("ANALYTICS_SINK_CLAIM_IDLE_MS", "3000")
        .with("ANALYTICS_ENRICHER_CLAIM_IDLE_MS", "3000")
        .with("ANALYTICS_SINK_MAX_BACKOFF_MS", "500")
        .with("ANALYTICS_SINK_MAX_AGE_MS", "300");
    setup.redis_url = format!("redis://127.0.0.1:{redis_port}");
    setup.clickhouse_url = format!("http://127.0.0.1:{ch_http}");
    setup.admin(&["migrate"]);
    let creds = setup.create_client("Faults");
    let mut edge = setup.spawn(&["edge"]);
    let members: Vec<(Setup, &str)> = [
        ("e1", "enrich"),
        ("e2", "enrich"),
        ("s1", "sink"),
        ("s2", "sink"),
    ]
    .into_iter()
    .map(|(name, stage)| (setup.member(name), stage))
    .collect();
    let mut procs: Vec<Proc> = members.iter().map(|(m, stage)| m.spawn(&[stage])).collect();

    let seed = std::env::var("TEST_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("faults: kill schedule seed {seed} (TEST_FAULT_SEED={seed} replays it)");
    let mut dice = Dice(seed);
    let load = Load::default();
    let lag_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lag = watch_lag(&setup, lag_stop.clone());
    let generators: Vec<_> = (0..3)
        .map(|g| generator(setup.port, &creds, &format!("g{g}"), "screen_view", &load))
        .collect();
    let started = Instant::now();
    let at = |second: u64| {
        let target = started + Duration::from_secs(second);
        if let Some(wait) = target.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    };

    // Consumers die mid-batch and come back, several times: at a random
    // moment of each two-second slot, one or two random members (every
    // member at least once over the four slots).
    for slot in 0..4u64 {
        let moment = Duration::from_millis(1_000 + slot * 2_000 + dice.below(1_500));
        std::thread::sleep(moment.saturating_sub(started.elapsed()));
        let mut victims = vec![slot as usize];
        if dice.below(2) == 1 {
            victims.push(dice.below(4) as usize);
        }
        victims.dedup();
        for &v in &victims {
            kill(&mut procs[v]);
        }
        eprintln!(
            "faults: {:.2} s: killed {victims:?}",
            started.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(300 + dice.below(700)));
        for &v in &victims {
            procs[v] = members[v].0.spawn(&[members[v].1]);
        }
    }
    // ClickHouse away for ten seconds.
    at(10);
    stop(&mut clickhouse);
    at(20);
    clickhouse = start_clickhouse(&ch_dir, ch_http);
    // Redis restarts (everything acknowledged is in its AOF).
    at(23);
    stop(&mut redis_server);
    std::thread::sleep(Duration::from_millis(500));
    redis_server = start_redis(&redis_dir, redis_port, AOF_ALWAYS);
    // The edge dies.
    at(27);
    kill(&mut edge);
    std::thread::sleep(Duration::from_millis(500));
    edge = setup.spawn(&["edge"]);
    at(31);
    load.stop.store(true, Ordering::Relaxed);
    for g in generators {
        g.join().unwrap();
    }
    let accepted = load.accepted.lock().unwrap().clone();
    let sent_done = Instant::now();
    let count = |sql: &str| setup.query(sql).parse::<usize>().unwrap_or(0);
    let mut last_report = Instant::now();
    wait_until(Duration::from_secs(120), || {
        let stored = count("SELECT count() FROM events");
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "draining: {stored} of {} stored; {}",
                accepted.len(),
                stream_state(&setup)
            );
        }
        stored >= accepted.len()
    });
    std::thread::sleep(Duration::from_secs(2));
    let drain = sent_done.elapsed();
    lag_stop.store(true, Ordering::Relaxed);
    let max_lag = lag.join().unwrap();

    let stored: Vec<String> = setup
        .query("SELECT id FROM events")
        .lines()
        .map(str::to_owned)
        .collect();
    let unique: BTreeSet<String> = stored.iter().cloned().collect();
    let lost: Vec<&String> = accepted.difference(&unique).collect();
    let duplicates = stored.len() - unique.len();
    eprintln!(
        "faults: accepted {} events ({} retries), stored {}, duplicates {duplicates}, lost {}, drained in {:.1} s, max lag {max_lag} s (ClickHouse stopped for 10 s of it)",
        accepted.len(),
        load.retries.load(Ordering::Relaxed),
        stored.len(),
        lost.len(),
        drain.as_secs_f64()
    );
    assert!(
        accepted.len() > 300,
        "too little traffic: {}",
        accepted.len()
    );
    if duplicates > 0 {
        eprintln!(
            "faults: stored twice (id, copies, sessions, received): {}",
            setup.query(
                "SELECT id, count(), groupUniqArray(session_id), groupArray(received_at) FROM events \
                 GROUP BY id HAVING count() > 1 ORDER BY id LIMIT 10"
            )
        );
    }
    assert_eq!(duplicates, 0, "events stored twice");
    assert!(
        lost.is_empty(),
        "accepted but not stored: {:?}",
        &lost[..lost.len().min(10)]
    );
    assert_eq!(unique, accepted, "stored events nobody got a 202 for");

    // A ClickHouse stop in the middle of an insert can leave the aggregate
    // tables short of rows `events` has (a view's insert is not atomic with
    // its table's); the documented repair is a backfill, after which the
    // aggregates agree with a recount of `events`.
    for s in &mut procs[2..] {
        stop(s);
    }
    setup.admin(&["backfill"]);
    assert_eq!(
        setup.query("SELECT sum(n) FROM (SELECT countMerge(events) AS n FROM sessions GROUP BY project_id, session_id)"),
        setup.query("SELECT count() FROM events WHERE session_id != ''")
    );
    assert_eq!(
        setup.query("SELECT countMerge(events) FROM events_hourly"),
        setup.query("SELECT count() FROM events")
    );
    // No dead letters.
    let mut redis = redis::Client::open(setup.redis_url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let dead: u64 = (0..4)
        .map(|p| {
            redis::cmd("XLEN")
                .arg(format!("{}:dead:{{p{p}}}", setup.name))
                .query::<u64>(&mut redis)
                .unwrap()
        })
        .sum();
    assert_eq!(dead, 0);
    drop((edge, procs, clickhouse, redis_server));
}
