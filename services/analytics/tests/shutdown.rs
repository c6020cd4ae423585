//! A rolling restart under load: SIGTERM makes `analytics up` finish
//! in-flight requests, flush and acknowledge its batches and exit; the
//! restarted process carries on. Every event that got a 202 is stored
//! exactly once.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use analytics_testkit::*;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn sigterm_loses_and_duplicates_nothing() {
    let setup = Setup::new(BIN, "sigterm");
    let first = setup.spawn(&["up"]);
    let creds = setup.bootstrap();
    let load = Load::default();
    let sender = generator(setup.port, &creds, "sd", "rolling", &load);
    wait_for_accepted(&load, 200, "before SIGTERM");
    let mut first = first;
    let pid = first.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = first.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "analytics did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit after SIGTERM: {status}");
    let before_restart = load.accepted.lock().unwrap().len();
    let _second = setup.spawn(&["up"]);
    wait_for_accepted(&load, before_restart + 200, "after the restart");
    load.stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let accepted = load.accepted.lock().unwrap().clone();
    let n = accepted.len();
    wait_until(Duration::from_secs(60), || {
        setup
            .query("SELECT count() FROM events WHERE name = 'rolling'")
            .parse::<usize>()
            .unwrap_or(0)
            >= n
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        setup.query("SELECT count(), uniqExact(id) FROM events WHERE name = 'rolling'"),
        format!("{n}\t{n}")
    );
    let stored: BTreeSet<String> = setup
        .query("SELECT id FROM events WHERE name = 'rolling'")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(stored, accepted);
}

/// Waits until the generator has `count` events accepted, so each
/// process of the restart is seen taking traffic however slow the machine
/// (a fixed pause saw one accepted event when the machine was busy).
fn wait_for_accepted(load: &Load, count: usize, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let accepted = load.accepted.lock().unwrap().len();
        if accepted >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: {accepted} of {count} events accepted within 60 s, {} retries",
            load.retries.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// When a consumer stage of `up` fails (here: its stream key holds a
/// string, so its consumer group cannot be created), the process says
/// which stage and why, stops taking events and exits non-zero.
#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn up_stops_when_a_consumer_stage_fails() {
    for (stage, topic) in [("enricher", "raw"), ("sink", "enriched")] {
        let setup = Setup::new(BIN, &format!("fails_{stage}"));
        let mut redis = redis::Client::open(setup.redis_url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let key = format!("{}:{topic}:{{p2}}", setup.name);
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("not a stream")
            .query(&mut redis)
            .unwrap();
        let (status, stderr) = setup.run_until_exit(&["up"], Duration::from_secs(60));
        assert!(!status.success(), "up exited 0 without its {stage}");
        assert!(stderr.contains(&format!("{stage} failed")), "{stderr}");
        assert!(stderr.contains("WRONGTYPE"), "{stderr}");
        assert!(
            http(setup.port, "GET", "/healthz", &[], "").is_err(),
            "the edge still answers without its {stage}"
        );
    }
}
