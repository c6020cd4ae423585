//! The pipeline as separate processes (one edge, two enrichers, two sinks)
//! on its own Redis (AOF, `appendfsync always`) and ClickHouse, under
//! steady load, while things break: consumers killed with SIGKILL and
//! restarted, ClickHouse stopped for ten seconds or more, Redis restarted,
//! the edge killed. Afterwards every event that got a 202 is in `events`
//! exactly once and no dead letter is left; every device's events are one
//! session (as in a single process: the whole run is shorter than the
//! session timeout) and every profile
//! counts exactly its accepted increments. One test runs the shipped
//! defaults and kills a sink that holds a batch of a backlog; its twin
//! lowers the claim and flush times to fit more takeovers into its
//! schedule; a third moves partitions between enrichers (one joins, one stalls past its
//! lease and wakes up, one leaves) under the shipped defaults.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use analytics_testkit::*;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

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

/// One pipeline of separate processes on its own Redis and ClickHouse.
struct Farm {
    setup: Setup,
    creds: Credentials,
    redis_dir: PathBuf,
    redis_port: u16,
    redis_server: Proc,
    ch_dir: PathBuf,
    ch_http: u16,
    clickhouse: Proc,
    edge: Proc,
    /// e1, e2 (enrichers), s1, s2 (sinks), each with its own admin port.
    members: Vec<(Setup, &'static str)>,
    procs: Vec<Proc>,
}

impl Farm {
    fn start(name: &str, overrides: &[(&str, &str)]) -> Farm {
        let work = PathBuf::from(var("TEST_WORK_DIR")).join(unique(name));
        let (redis_dir, ch_dir) = (work.join("redis"), work.join("clickhouse"));
        let redis_port = free_port();
        let (ch_http, ch_tcp) = (free_port(), free_port());
        clickhouse_config(&ch_dir, ch_http, ch_tcp);
        let redis_server = start_redis(&redis_dir, redis_port, AOF_ALWAYS);
        let clickhouse = start_clickhouse(&ch_dir, ch_http);
        let mut setup = overrides
            .iter()
            .fold(Setup::new(BIN, name), |setup, (k, v)| setup.with(k, v));
        setup.redis_url = format!("redis://127.0.0.1:{redis_port}");
        setup.clickhouse_url = format!("http://127.0.0.1:{ch_http}");
        setup.admin(&["migrate"]);
        let creds = setup.create_client("Faults");
        let edge = setup.spawn(&["edge"]);
        let members: Vec<(Setup, &str)> = [
            ("e1", "enrich"),
            ("e2", "enrich"),
            ("s1", "sink"),
            ("s2", "sink"),
        ]
        .into_iter()
        .map(|(name, stage)| (setup.member(name), stage))
        .collect();
        let procs = members.iter().map(|(m, stage)| m.spawn(&[stage])).collect();
        Farm {
            setup,
            creds,
            redis_dir,
            redis_port,
            redis_server,
            ch_dir,
            ch_http,
            clickhouse,
            edge,
            members,
            procs,
        }
    }

    fn restart(&mut self, member: usize) {
        self.procs[member] = self.members[member].0.spawn(&[self.members[member].1]);
    }

    fn restart_redis(&mut self) {
        stop(&mut self.redis_server);
        std::thread::sleep(Duration::from_millis(500));
        self.redis_server = start_redis(&self.redis_dir, self.redis_port, AOF_ALWAYS);
    }

    fn restart_edge(&mut self) {
        kill(&mut self.edge);
        std::thread::sleep(Duration::from_millis(500));
        self.edge = self.setup.spawn(&["edge"]);
    }

    /// Waits until every accepted event is stored, then checks that each
    /// is stored once and that no dead letter is left.
    fn verify(self, load: &Load, lag: (Arc<AtomicBool>, std::thread::JoinHandle<u64>)) {
        let accepted = load.accepted.lock().unwrap().clone();
        let sent_done = Instant::now();
        let setup = &self.setup;
        let count = |sql: &str| setup.query(sql).parse::<usize>().unwrap_or(0);
        let mut last_report = Instant::now();
        wait_until(Duration::from_secs(180), || {
            let stored = count("SELECT count() FROM events");
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                eprintln!(
                    "draining: {stored} of {} stored; {}",
                    accepted.len(),
                    stream_state(setup)
                );
            }
            stored >= accepted.len()
        });
        std::thread::sleep(Duration::from_secs(2));
        let drain = sent_done.elapsed();
        lag.0.store(true, Ordering::Relaxed);
        let max_lag = lag.1.join().unwrap();

        let stored: Vec<String> = setup
            .query("SELECT id FROM events")
            .lines()
            .map(str::to_owned)
            .collect();
        let unique: BTreeSet<String> = stored.iter().cloned().collect();
        let lost: Vec<&String> = accepted.difference(&unique).collect();
        let duplicates = stored.len() - unique.len();
        eprintln!(
            "faults: accepted {} events ({} retries), stored {}, duplicates {duplicates}, lost {}, drained in {:.1} s, max lag {max_lag} s",
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

        // Partitions changed owners while devices kept sending: a new owner
        // that did not restore the sessions would split a device's visit.
        let split = setup.query(
            "SELECT device_id, uniqExact(session_id) AS s FROM events WHERE session_id != '' \
             GROUP BY device_id HAVING s > 1 ORDER BY device_id LIMIT 5",
        );
        assert_eq!(split, "", "devices with more than one session");
        for (profile, expected) in &increments_by_profile(&accepted) {
            let properties = setup.query(&format!(
                "SELECT argMax(properties, version) FROM profiles WHERE id = '{profile}'"
            ));
            let visits = serde_json::from_str::<serde_json::Value>(&properties)
                .ok()
                .and_then(|p| p["visits"].as_f64());
            assert_eq!(
                visits,
                Some(*expected as f64),
                "profile {profile}: {properties}"
            );
        }

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
    }
}

fn sleep_until(moment: Instant) {
    std::thread::sleep(moment.saturating_duration_since(Instant::now()));
}

/// The kill schedule's seed: `TEST_FAULT_SEED` replays one.
fn seed() -> Dice {
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
    Dice(seed)
}

/// Consumers die mid-batch and come back, several times: at a random
/// moment of each two-second slot from `from`, one or two random members
/// (every member at least once over the four slots).
fn kill_consumers(farm: &mut Farm, dice: &mut Dice, started: Instant, from: Duration) {
    for slot in 0..4u64 {
        let moment = from + Duration::from_millis(slot * 2_000 + dice.below(1_500));
        std::thread::sleep(moment.saturating_sub(started.elapsed()));
        let mut victims = vec![slot as usize];
        if dice.below(2) == 1 {
            victims.push(dice.below(4) as usize);
        }
        victims.dedup();
        for &v in &victims {
            kill(&mut farm.procs[v]);
        }
        eprintln!(
            "faults: {:.2} s: killed {victims:?}",
            started.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(300 + dice.below(700)));
        for &v in &victims {
            farm.restart(v);
        }
    }
}

/// Sends batches of `size` events with unique ids `<prefix>-<n>` through
/// `/batch`, each batch retried until it gets a 202 (a batch is stored
/// whole or not at all).
fn batch_generator(
    port: u16,
    creds: &Credentials,
    prefix: &str,
    size: u64,
    load: &Load,
) -> std::thread::JoinHandle<()> {
    let prefix = prefix.to_owned();
    requests(port, creds, load, move |n| {
        let ids: Vec<String> = (n * size..(n + 1) * size)
            .map(|i| format!("{prefix}-{i}"))
            .collect();
        let events: Vec<String> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                format!(
                    r#"{{"type":"track","payload":{{"name":"bulk","id":"{id}","deviceId":"{prefix}-d{}","properties":{{"__path":"/b{}"}}}}}}"#,
                    i % 40,
                    i % 7
                )
            })
            .collect();
        ("/batch", format!("[{}]", events.join(",")), ids)
    })
}

/// The prefix of the increment events' ids, devices and profiles.
const INCREMENTS: &str = "inc";

/// Sends `increment` events with ids `inc-<n>` of profile `inc-u<n % 5>`
/// from device `inc-d<n % 10>` (so a profile's events come through
/// several partitions).
fn increment_generator(port: u16, creds: &Credentials, load: &Load) -> std::thread::JoinHandle<()> {
    requests(port, creds, load, move |n| {
        let id = format!("{INCREMENTS}-{n}");
        let body = format!(
            r#"{{"type":"increment","payload":{{"id":"{id}","deviceId":"{INCREMENTS}-d{}","profileId":"{INCREMENTS}-u{}","property":"visits","value":1}}}}"#,
            n % 10,
            n % 5
        );
        ("/track", body, vec![id])
    })
}

/// Accepted increments per profile, from the accepted ids.
fn increments_by_profile(accepted: &BTreeSet<String>) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for id in accepted {
        if let Some(n) = id
            .strip_prefix(INCREMENTS)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse::<u64>().ok())
        {
            *counts
                .entry(format!("{INCREMENTS}-u{}", n % 5))
                .or_insert(0) += 1;
        }
    }
    counts
}

/// The most rows one partition task of the sink on `port` holds.
fn most_buffered(port: u16) -> f64 {
    let Ok((200, _, text)) = http(port, "GET", "/metrics", &[], "") else {
        return 0.0;
    };
    text.lines()
        .filter(|l| l.starts_with("analytics_sink_buffered_rows{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max)
}

/// The shipped defaults (`sink.max_rows` 50,000, `sink.max_age_ms` 500 ms,
/// `enricher.read_count` 2,000, `claim_idle_ms` 30 s): consumers killed at
/// random, then, while ClickHouse is stopped for about 13 s, a sink that
/// holds a batch of a backlog (8,000 rows or more) is killed; its restart
/// redelivers that batch, which is checked against ClickHouse before
/// inserting.
#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn nothing_is_lost_or_doubled_under_the_shipped_defaults() {
    let mut farm = Farm::start("defaults", &[]);
    let mut dice = seed();
    let load = Load::default();
    let lag_stop = Arc::new(AtomicBool::new(false));
    let lag = watch_lag(&farm.setup, lag_stop.clone());
    let port = farm.setup.port;
    let mut generators: Vec<_> = (0..2)
        .map(|g| generator(port, &farm.creds, &format!("g{g}"), "screen_view", &load))
        .collect();
    generators
        .extend((0..2).map(|g| batch_generator(port, &farm.creds, &format!("b{g}"), 100, &load)));
    generators.push(increment_generator(port, &farm.creds, &load));
    let started = Instant::now();
    let at = |second: u64| sleep_until(started + Duration::from_secs(second));
    kill_consumers(&mut farm, &mut dice, started, Duration::from_secs(1));
    at(10);
    stop(&mut farm.clickhouse);
    let ch_stopped = Instant::now();
    // s1 goes away while a backlog grows, then comes back to it: each of
    // its partition tasks reads a batch of at least 8,000 rows that it
    // cannot insert (a fifth of the shipped `max_rows`: the backlog this
    // test's load builds in its outage; `stages` redelivers a full batch).
    kill(&mut farm.procs[2]);
    let setup = farm.setup.clone();
    wait_until(Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(900));
        setup.document_counts("enriched").into_iter().max() >= Some(12_000)
    });
    farm.restart(2);
    let s1 = farm.members[2].0.port;
    let mut held = 0.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while held < 8_000.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        held = most_buffered(s1);
    }
    kill(&mut farm.procs[2]);
    eprintln!(
        "faults: {:.2} s: killed s1 holding {held} rows in one partition",
        started.elapsed().as_secs_f64()
    );
    assert!(held >= 8_000.0, "s1 held only {held} rows when killed");
    std::thread::sleep(Duration::from_millis(300 + dice.below(700)));
    farm.restart(2);
    let outage = Duration::from_secs(13).saturating_sub(ch_stopped.elapsed());
    std::thread::sleep(outage);
    farm.clickhouse = start_clickhouse(&farm.ch_dir, farm.ch_http);
    eprintln!(
        "faults: ClickHouse back after {:.1} s",
        ch_stopped.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    farm.restart_redis();
    std::thread::sleep(Duration::from_secs(2));
    farm.restart_edge();
    std::thread::sleep(Duration::from_secs(3));
    load.stop.store(true, Ordering::Relaxed);
    for g in generators {
        g.join().unwrap();
    }
    farm.verify(&load, (lag_stop, lag));
}

/// The same breakage on a tighter clock: claims after 3 s instead of 30,
/// flushes every 300 ms instead of every 500 and retries at most 500 ms
/// apart, so that takeovers of killed consumers' entries (not only their
/// restarts) happen within the schedule. The test above runs the defaults.
#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn nothing_is_lost_or_doubled_while_everything_breaks() {
    let mut farm = Farm::start(
        "faults",
        &[
            ("ANALYTICS_SINK_CLAIM_IDLE_MS", "3000"),
            ("ANALYTICS_ENRICHER_CLAIM_IDLE_MS", "3000"),
            ("ANALYTICS_SINK_MAX_BACKOFF_MS", "500"),
            ("ANALYTICS_SINK_MAX_AGE_MS", "300"),
        ],
    );
    let mut dice = seed();
    let load = Load::default();
    let lag_stop = Arc::new(AtomicBool::new(false));
    let lag = watch_lag(&farm.setup, lag_stop.clone());
    let mut generators: Vec<_> = (0..3)
        .map(|g| {
            generator(
                farm.setup.port,
                &farm.creds,
                &format!("g{g}"),
                "screen_view",
                &load,
            )
        })
        .collect();
    generators.push(increment_generator(farm.setup.port, &farm.creds, &load));
    let started = Instant::now();
    let at = |second: u64| sleep_until(started + Duration::from_secs(second));
    kill_consumers(&mut farm, &mut dice, started, Duration::from_secs(1));
    // ClickHouse away for ten seconds.
    at(10);
    stop(&mut farm.clickhouse);
    at(20);
    farm.clickhouse = start_clickhouse(&farm.ch_dir, farm.ch_http);
    // Redis restarts (everything acknowledged is in its AOF).
    at(23);
    farm.restart_redis();
    // The edge dies.
    at(27);
    farm.restart_edge();
    at(31);
    load.stop.store(true, Ordering::Relaxed);
    for g in generators {
        g.join().unwrap();
    }
    farm.verify(&load, (lag_stop, lag));
}

/// A counter of a process's `/metrics`, summed over its labels.
fn counter(port: u16, name: &str) -> f64 {
    let Ok((200, _, text)) = http(port, "GET", "/metrics", &[], "") else {
        return 0.0;
    };
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends a signal to a process.
fn signal(proc: &Proc, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &proc.0.id().to_string()])
        .status();
}

/// Partitions move between enrichers under load, with the shipped
/// defaults (6 s leases): a third enricher joins and takes its share; e1
/// is frozen (SIGSTOP) for longer than its leases live, so the others take
/// its partitions over while it still believes it owns them, and when it
/// wakes up its work is refused (it counts the lost leases) instead of
/// being stored a second time; then e2 leaves with a clean stop and hands
/// its partitions over. Every event is stored once, sessions and profiles
/// as in one process.
#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn partitions_change_owners_without_an_event_processed_twice() {
    let mut farm = Farm::start("owners", &[]);
    let load = Load::default();
    let lag_stop = Arc::new(AtomicBool::new(false));
    let lag = watch_lag(&farm.setup, lag_stop.clone());
    let port = farm.setup.port;
    let mut generators: Vec<_> = (0..2)
        .map(|g| generator(port, &farm.creds, &format!("g{g}"), "screen_view", &load))
        .collect();
    generators.push(batch_generator(port, &farm.creds, "b0", 100, &load));
    generators.push(increment_generator(port, &farm.creds, &load));
    let started = Instant::now();
    let at = |second: u64| sleep_until(started + Duration::from_secs(second));
    at(4);
    let joiner = farm.setup.member("e3");
    let e3 = joiner.spawn(&["enrich"]);
    let acquired_by_e3 = || counter(joiner.port, "analytics_streams_leases_acquired_total");
    wait_until(Duration::from_secs(20), || acquired_by_e3() >= 1.0);
    eprintln!(
        "owners: {:.1} s: e3 joined and owns {} partitions",
        started.elapsed().as_secs_f64(),
        acquired_by_e3()
    );
    at(12);
    let e1 = farm.members[0].0.port;
    signal(&farm.procs[0], "-STOP");
    eprintln!(
        "owners: {:.1} s: e1 frozen",
        started.elapsed().as_secs_f64()
    );
    // Past the 6 s lease, and long enough for the others to work on.
    std::thread::sleep(Duration::from_secs(10));
    signal(&farm.procs[0], "-CONT");
    wait_until(Duration::from_secs(20), || {
        counter(e1, "analytics_streams_leases_lost_total") >= 1.0
    });
    eprintln!(
        "owners: {:.1} s: e1 woke up and gave up {} leases",
        started.elapsed().as_secs_f64(),
        counter(e1, "analytics_streams_leases_lost_total")
    );
    at(30);
    stop(&mut farm.procs[1]);
    eprintln!("owners: {:.1} s: e2 left", started.elapsed().as_secs_f64());
    at(38);
    load.stop.store(true, Ordering::Relaxed);
    for g in generators {
        g.join().unwrap();
    }
    let _e3 = e3;
    farm.verify(&load, (lag_stop, lag));
}
