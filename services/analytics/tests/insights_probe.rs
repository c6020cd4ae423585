//! A probe of a running `analytics up` with what a hostile read client (or
//! a careless one) sends the insights API: dates outside what ClickHouse
//! stores, time zones spelled every which way, exports that stop reading,
//! profile ids that need percent-encoding, and an oversized event hidden in
//! a batch. Every answer is the documented status (never a 5xx, a hang or
//! a closed connection), and the server and ClickHouse stay within bounds:
//! no new time-zone spelling reaches ClickHouse, no export query outlives
//! the send timeout, exports at once are capped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use analytics_testkit::*;
use serde_json::{Value, json};

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_analytics");

/// 2026-01-05 00:00:00 UTC, the day the export rows lie on.
const DAY: i64 = 1_767_571_200;
/// Export rows of the probe, about 1.5 KB each: 90 MB, more than a
/// connection's socket buffers hold, so a client that stops reading
/// leaves a query blocked in ClickHouse.
const EXPORT_ROWS: u64 = 60_000;
/// The send timeout the shipped defaults give exports.
const SEND_TIMEOUT: Duration = Duration::from_millis(15_000);

/// `analytics up` with its standard error kept, to look for panics.
struct Server {
    setup: Setup,
    up: Proc,
    stderr: std::path::PathBuf,
}

impl Server {
    fn start(setup: Setup) -> Server {
        setup.admin(&["migrate"]);
        let stderr = setup.data_dir.join("up.stderr");
        let child = setup
            .command(&["up"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let up = Proc(child);
        wait_until(Duration::from_secs(60), || {
            http(setup.port, "GET", "/healthz", &[], "").is_ok_and(|r| r.0 == 200)
        });
        Server { setup, up, stderr }
    }

    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.up.0.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    fn assert_no_panic(&self) {
        let text = std::fs::read_to_string(&self.stderr).unwrap();
        assert!(
            !text.contains("panicked"),
            "the server panicked:\n{text:.3000}"
        );
    }
}

/// A read client's GET of `/insights/<project>/<path>`: status, headers, JSON body.
fn get(port: u16, creds: &Credentials, path: &str) -> (u16, Vec<(String, String)>, Value) {
    let path = format!("/insights/{}/{path}", creds.project_id);
    let (status, headers, text) = http(port, "GET", &path, &creds.headers(), "")
        .unwrap_or_else(|e| panic!("{path}: no answer: {e}"));
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, value)
}

/// Asserts a `400` whose JSON error names `field`.
fn refused(port: u16, creds: &Credentials, path: &str, field: &str) {
    let (status, _, body) = get(port, creds, path);
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some(field)),
        "{path}: {body}"
    );
    assert!(body["error"].is_string(), "{path}: {body}");
}

fn retry_after(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, _)| k == "retry-after")
}

/// An export whose client read the status line and about 4 KB, then
/// stopped reading (and keeps the connection open).
fn stalled_export(port: u16, creds: &Credentials, query: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "GET /insights/{}/events?{query}&format=ndjson HTTP/1.1\r\nhost: probe\r\n\
         openpanel-client-id: {}\r\nopenpanel-client-secret: {}\r\n\r\n",
        creds.project_id, creds.id, creds.secret
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = vec![0u8; 4096];
    let mut got = 0;
    while got < head.len() {
        let n = stream.read(&mut head[got..]).unwrap();
        assert!(n > 0, "the export ended after {got} bytes");
        got += n;
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..80])
    );
    stream
}

/// Export queries of `project` running in ClickHouse: count and largest memory.
fn running_exports(setup: &Setup, project: &str) -> (u64, u64) {
    let row = setup.query(&format!(
        "SELECT count(), max(memory_usage) FROM system.processes \
         WHERE position(query, '{project}') > 0 AND position(query, 'system.processes') = 0"
    ));
    let mut cells = row.split('\t').map(|c| c.parse::<u64>().unwrap_or(0));
    (cells.next().unwrap_or(0), cells.next().unwrap_or(0))
}

fn insert_export_rows(setup: &Setup, project: &str) {
    setup.query(&format!(
        "INSERT INTO events (id, project_id, name, device_id, session_id, created_at, received_at, properties) \
         SELECT concat('x-', toString(number)), '{project}', 'screen_view', concat('d', toString(number % 997)), \
         concat('s', toString(number % 5000)), toDateTime({DAY} + intDiv(number, 2)), now(), \
         concat('{{\"p\":\"', arrayStringConcat(arrayMap(i -> hex(SHA256(toString(number * 100 + i))), range(24))), '\"}}') \
         FROM numbers({EXPORT_ROWS})"
    ));
}

#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn a_hostile_read_client_gets_4xx_and_bounded_servers() {
    let server = Server::start(Setup::new(BIN, "probe"));
    let setup = &server.setup;
    let port = setup.port;
    let project = setup.create_project("A", &[]);
    let read = setup.client(&project, "read");
    let write = setup.client(&project, "write");
    insert_export_rows(setup, &project);
    setup.query(&format!(
        "INSERT INTO profiles (id, project_id, first_name, properties, version) \
         VALUES ('a/b c?d', '{project}', 'Slash', '{{}}', 1)"
    ));

    // Dates outside what ClickHouse stores, and the previous period they imply.
    for (path, field) in [
        (
            "metrics?startDate=-9999-01-01&endDate=-9999-01-01",
            "startDate",
        ),
        (
            "metrics?startDate=0000-01-01&endDate=0000-01-02",
            "startDate",
        ),
        (
            "metrics?startDate=1970-01-05&endDate=1970-01-06",
            "startDate",
        ),
        ("metrics?startDate=2105-12-31&endDate=2106-01-01", "endDate"),
        (
            "timeseries?startDate=-9999-01-01&endDate=-9999-01-03&interval=week",
            "startDate",
        ),
        (
            "timeseries?startDate=9999-12-31&endDate=9999-12-31&interval=hour",
            "startDate",
        ),
        (
            "top/pages?startDate=1969-12-31&endDate=1970-01-06",
            "startDate",
        ),
        (
            "events?startDate=2026-01-05&endDate=99999-01-01&format=ndjson",
            "endDate",
        ),
    ] {
        refused(port, &read, path, field);
    }
    // The first and last days the store keeps answer, in the zones farthest from UTC.
    for zone in ["Pacific/Kiritimati", "Etc/GMT%2B12"] {
        for path in [
            format!("metrics?startDate=1970-01-06&endDate=1970-01-06&timezone={zone}"),
            format!(
                "timeseries?startDate=1970-01-05&endDate=1970-01-11&interval=week&timezone={zone}"
            ),
            format!("metrics?startDate=2105-12-31&endDate=2105-12-31&timezone={zone}"),
            format!(
                "timeseries?startDate=2105-12-31&endDate=2105-12-31&interval=hour&timezone={zone}"
            ),
        ] {
            let (status, _, body) = get(port, &read, &path);
            assert_eq!(status, 200, "{path}: {body}");
        }
    }

    // Time zones: only the tz database's names, sent in its spelling.
    let q = "startDate=2026-01-05&endDate=2026-01-05";
    for zone in [
        "Mars/Olympus",
        "//////usr/////share/zoneinfo/////Europe//Paris",
        "Europe//Paris",
        "/etc/localtime",
        "../../../../etc/passwd",
        "Europe/Paris%00",
    ] {
        let zone = url_escape(zone);
        refused(
            port,
            &read,
            &format!("metrics?{q}&timezone={zone}"),
            "timezone",
        );
        refused(
            port,
            &read,
            &format!("events?{q}&timezone={zone}&format=ndjson"),
            "timezone",
        );
    }
    for spelling in [
        "europe/paris",
        "EUROPE/PARIS",
        "Europe/paris",
        "eUrOpE/pArIs",
    ] {
        let (status, _, body) = get(port, &read, &format!("metrics?{q}&timezone={spelling}"));
        assert_eq!(status, 200, "{spelling}: {body}");
    }
    setup.query("SYSTEM FLUSH LOGS");
    let spellings = |pattern: &str| -> u64 {
        setup
            .query(&format!(
                "SELECT count() FROM system.query_log WHERE position(query, '{project}') > 0 \
                 AND {pattern} AND position(query, 'system.query_log') = 0"
            ))
            .parse()
            .unwrap()
    };
    assert!(spellings("position(query, 'Europe/Paris') > 0") > 0);
    assert_eq!(
        spellings(
            "positionCaseInsensitive(query, 'europe/paris') > 0 AND position(query, 'Europe/Paris') = 0"
        ),
        0,
        "a spelling other than the canonical one reached ClickHouse"
    );
    assert_eq!(
        spellings("(position(query, 'zoneinfo') > 0 OR position(query, 'localtime') > 0)"),
        0
    );

    // Profile ids are percent-decoded; unknown paths are 404, wrong methods 405.
    let (status, _, body) = get(port, &read, "profiles/a%2Fb%20c%3Fd");
    assert_eq!(
        (status, body["id"].as_str()),
        (200, Some("a/b c?d")),
        "{body}"
    );
    assert_eq!(get(port, &read, "profiles/a/b").0, 404);
    assert_eq!(get(port, &read, "profiles/%FF").0, 400);
    assert_eq!(get(port, &read, "metrics/extra").0, 404);
    let path = format!("/insights/{project}/metrics?{q}");
    assert_eq!(
        http(port, "POST", &path, &read.headers(), "{}").unwrap().0,
        405
    );
    refused(port, &read, &format!("events?{q}&format=xml"), "format");

    // One event is capped alike however it arrives: in a batch too.
    let small = json!({"type": "track", "payload": {"name": "small"}});
    let big = json!({"type": "track", "payload": {"name": "big", "properties": {"s": "x".repeat(9_000_000)}}});
    let batch = json!([small, big]).to_string();
    let (status, _, text) = http(port, "POST", "/batch", &write.headers(), &batch).unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("[1]")),
        "{body}"
    );

    // live counts events dated in the last five minutes, not events that
    // arrived then: backdated ones (an import, an offline queue) are history.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut conn = Conn::open(port).unwrap();
    let mut sent = 0;
    for (device, age_ms) in [
        ("live-0", 0),
        ("live-1", 60_000),
        ("live-2", 0),
        ("old-0", 3_600_000),
        ("old-1", 86_400_000),
        ("old-2", 400_000),
        ("old-3", 30 * 86_400_000),
    ] {
        let body = json!({"type": "track", "payload": {"name": "screen_view", "deviceId": device,
                          "timestamp": now_ms - age_ms}});
        let (status, _, text) = conn
            .send(
                "POST",
                "/track",
                &write.headers(),
                body.to_string().as_bytes(),
            )
            .unwrap();
        assert_eq!(status, 202, "{text}");
        sent += 1;
    }
    wait_until(Duration::from_secs(60), || {
        setup
            .query(&format!(
                "SELECT count() FROM events WHERE project_id = '{project}' \
                 AND (device_id LIKE 'live-%' OR device_id LIKE 'old-%')"
            ))
            .parse::<u64>()
            .unwrap()
            == sent
    });
    let (status, _, body) = get(port, &read, "live");
    assert_eq!((status, body), (200, json!({"count": 3})));

    // Exports: a client that stops reading pins nothing past the send
    // timeout, and exports at once are capped per client and in all.
    let day = "startDate=2026-01-05&endDate=2026-01-05";
    let started = Instant::now();
    let mut stalled = vec![
        stalled_export(port, &read, day),
        stalled_export(port, &read, day),
    ];
    let (status, headers, body) = get(port, &read, &format!("events?{day}&format=ndjson"));
    assert_eq!((status, retry_after(&headers)), (429, true), "{body}");
    let others: Vec<Credentials> = (0..4).map(|_| setup.client(&project, "read")).collect();
    for client in &others[..3] {
        stalled.push(stalled_export(port, client, day));
        stalled.push(stalled_export(port, client, day));
    }
    let (status, headers, body) = get(port, &others[3], &format!("events?{day}&format=ndjson"));
    assert_eq!((status, retry_after(&headers)), (503, true), "{body}");
    // Queries blocked on clients that do not read; each holds one window.
    let (running, memory) = running_exports(setup, &project);
    assert!(running >= 1, "no export query is waiting on its client");
    assert!(memory < 256 << 20, "an export query holds {memory} bytes");
    let rss = server.rss_bytes();
    assert!(rss < 512 << 20, "the server holds {rss} bytes");
    wait_until(SEND_TIMEOUT + Duration::from_secs(15), || {
        running_exports(setup, &project).0 == 0
    });
    let gone = started.elapsed();
    assert!(gone >= SEND_TIMEOUT, "queries gone after {gone:?}");
    eprintln!(
        "8 stalled exports: {running} queries blocked, the largest holding {memory} bytes; \
         server RSS {rss} bytes; queries gone after {gone:?}"
    );
    // The connections are still open, with what was buffered for them: they
    // keep their places, so such connections cannot pile up.
    let (status, _, body) = get(port, &read, &format!("events?{day}&format=ndjson"));
    assert_eq!(status, 429, "{body}");
    // A cut-off export ends without the final chunk: the client can tell.
    let mut rest = Vec::new();
    let _ = stalled[0].read_to_end(&mut rest);
    assert!(
        !rest.ends_with(b"0\r\n\r\n"),
        "a cut-off export looked complete"
    );
    drop(stalled);

    // Once those clients are gone, one that reads gets the whole day,
    // newest first, each window's query bounded.
    let path = format!("/insights/{project}/events?{day}&format=ndjson");
    let mut reply = None;
    wait_until(Duration::from_secs(10), || {
        let answer = http(port, "GET", &path, &read.headers(), "").unwrap();
        let done = answer.0 != 429;
        reply = Some(answer);
        done
    });
    let (status, headers, text) = reply.unwrap();
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/x-ndjson")
    );
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len() as u64, EXPORT_ROWS);
    assert!(rows.iter().all(|r| r["error"].is_null()));
    assert!(rows.windows(2).all(|w| {
        let key = |r: &Value| {
            (
                r["created_at"].as_u64(),
                r["id"].as_str().map(str::to_owned),
            )
        };
        key(&w[0]) > key(&w[1])
    }));
    setup.query("SYSTEM FLUSH LOGS");
    let windows = setup.query(&format!(
        "SELECT count(), max(result_rows) FROM system.query_log WHERE type = 2 \
         AND position(query, '{project}') > 0 AND position(query, 'toDateTime(') > 0 \
         AND position(query, 'SELECT id, name') = 1 AND event_time > now() - 60"
    ));
    let (count, largest) = windows.split_once('\t').unwrap();
    assert!(
        count.parse::<u64>().unwrap() >= EXPORT_ROWS / 20_000,
        "{windows}"
    );
    assert!(largest.parse::<u64>().unwrap() <= 20_000, "{windows}");

    server.assert_no_panic();
}

/// Lowers the memory cap of export queries to 160 MiB, under what a window
/// of 2,000 events of 150 KB needs (about 300 MB) and over what a window of
/// small events needs (50 to 80 MB, mostly read buffers), so that the
/// second window of an export fails after the first was sent. The probe
/// above is the twin with the shipped cap.
#[test]
#[ignore = "needs the servers scripts/test.sh starts"]
fn an_export_failing_midway_ends_with_an_error_line() {
    let server = Server::start(
        Setup::new(BIN, "probe_midway")
            .with("ANALYTICS_INSIGHTS_EXPORT_MAX_MEMORY_BYTES", "167772160"),
    );
    let setup = &server.setup;
    let project = setup.create_project("A", &[]);
    let read = setup.client(&project, "read");
    setup.query(&format!(
        "INSERT INTO events (id, project_id, name, device_id, created_at, received_at, properties) \
         SELECT concat('big-', toString(number)), '{project}', 'screen_view', 'big', \
         toDateTime({DAY} + number), now(), \
         concat('{{\"p\":\"', arrayStringConcat(arrayMap(i -> '{}', range(5000))), '\"}}') \
         FROM numbers(2000)",
        "x".repeat(30)
    ));
    // The next day's events, small: the newest window, which fits.
    setup.query(&format!(
        "INSERT INTO events (id, project_id, name, device_id, created_at, received_at, properties) \
         SELECT concat('small-', toString(number)), '{project}', 'screen_view', 'small', \
         toDateTime({} + intDiv(number, 10)), now(), '{{}}' FROM numbers(19000)",
        DAY + 86_400
    ));
    let path =
        format!("/insights/{project}/events?startDate=2026-01-05&endDate=2026-01-06&format=ndjson");
    let (status, _, text) = http(setup.port, "GET", &path, &read.headers(), "").unwrap();
    assert_eq!(status, 200);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, rows) = lines.split_last().unwrap();
    assert_eq!(rows.len(), 19_000, "the first window's rows");
    assert!(rows.iter().all(|r| r["device_id"] == "small"));
    assert!(
        last["error"].as_str().is_some_and(|e| e.contains("memory")),
        "{last}"
    );
    // Refused before it began, an export is an ordinary error answer.
    let path =
        format!("/insights/{project}/events?startDate=2026-01-05&endDate=2026-01-05&format=ndjson");
    let (status, headers, text) = http(setup.port, "GET", &path, &read.headers(), "").unwrap();
    assert_eq!((status, retry_after(&headers)), (503, true), "{text}");
    assert!(serde_json::from_str::<Value>(&text).unwrap()["error"].is_string());
    server.assert_no_panic();
}
