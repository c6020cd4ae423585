//! Harness of the integration tests: the real `analytics` binary (whose
//! path each test crate passes in, from `CARGO_BIN_EXE_analytics`) against
//! the Redis and ClickHouse that `scripts/test.sh` started (URLs in
//! `TEST_REDIS_URL` / `TEST_CLICKHOUSE_URL`). Each test gets its own
//! ClickHouse database, Redis key prefix, data directory and port.
//!
//! Tests that need those servers are `#[ignore]`d with the reason, so that
//! a plain `cargo test` runs everything else; `scripts/test.sh` runs them
//! all. Without the servers' environment, [`var`] fails such a test by
//! naming the variable. Requests go through a blocking wrapper of hyper's
//! HTTP/1.1 client ([`Conn`], [`http`]).

mod client;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use client::{Conn, Reply, block_on, http};

/// The value of the environment variable `name`, which `scripts/test.sh`
/// sets; a test run without it fails, naming it (at the test's line).
#[track_caller]
pub fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) => value,
        Err(_) => panic!("{name} is not set: run the integration tests through scripts/test.sh"),
    }
}

/// A free loopback port below the kernel's ephemeral range (32768 and up),
/// so outgoing connections of running servers cannot take it before the
/// process that was given it binds it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(2_654_435_761)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A name unique to this test run: database, key prefix, directory.
pub fn unique(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t_{name}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Settings of one isolated pipeline.
#[derive(Clone)]
pub struct Setup {
    /// The `analytics` binary the commands run.
    pub bin: PathBuf,
    pub name: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub redis_url: String,
    pub clickhouse_url: String,
    pub extra: Vec<(String, String)>,
}

impl Setup {
    /// A pipeline of the binary at `bin` (a test crate's
    /// `env!("CARGO_BIN_EXE_analytics")`), named after `name`.
    #[track_caller]
    pub fn new(bin: &str, name: &str) -> Setup {
        let name = unique(name);
        let data_dir = PathBuf::from(var("TEST_WORK_DIR")).join(&name);
        std::fs::create_dir_all(&data_dir).unwrap();
        Setup {
            bin: PathBuf::from(bin),
            port: free_port(),
            data_dir,
            redis_url: var("TEST_REDIS_URL"),
            clickhouse_url: var("TEST_CLICKHOUSE_URL"),
            extra: Vec::new(),
            name,
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Setup {
        self.extra.push((key.into(), value.into()));
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ANALYTICS_LOG", "warn")
            .env("ANALYTICS_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("ANALYTICS_DATA_DIR", &self.data_dir)
            .env("ANALYTICS_REDIS_URL", &self.redis_url)
            .env("ANALYTICS_REDIS_KEY_PREFIX", &self.name)
            .env("ANALYTICS_CLICKHOUSE_URL", &self.clickhouse_url)
            .env("ANALYTICS_CLICKHOUSE_DATABASE", &self.name);
        if let Ok(rules) = std::env::var("TEST_UA_REGEXES") {
            cmd.env("ANALYTICS_UA_REGEXES", rules);
        }
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs an admin command and parses its JSON output.
    pub fn admin(&self, args: &[&str]) -> serde_json::Value {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Starts a long-running subcommand and waits until it answers `/healthz`.
    /// The port must be free: a process still serving it would answer for
    /// the new one (use [`Setup::member`] for a process of its own).
    pub fn spawn(&self, args: &[&str]) -> Proc {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", self.port)).is_ok(),
            "{args:?}: port {} is taken by another process of this test",
            self.port
        );
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let proc = Proc(child);
        wait_until(Duration::from_secs(60), || {
            http(self.port, "GET", "/healthz", &[], "")
                .map(|r| r.0 == 200)
                .unwrap_or(false)
        });
        proc
    }

    /// A new project and write client, made with the admin commands.
    /// Runs a subcommand that is expected to stop by itself within
    /// `timeout` (the test fails if it does not); its exit status and
    /// what it wrote to stderr.
    pub fn run_until_exit(
        &self,
        args: &[&str],
        timeout: Duration,
    ) -> (std::process::ExitStatus, String) {
        let mut child = Proc(self.command(args).stderr(Stdio::piped()).spawn().unwrap());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < timeout,
                "{args:?} still runs after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    }

    pub fn create_client(&self, project_name: &str) -> Credentials {
        let project_id = self.create_project(project_name, &[]);
        self.client(&project_id, "write")
    }

    /// A new project admitting browsers from `origins`; its id.
    pub fn create_project(&self, name: &str, origins: &[&str]) -> String {
        let mut args = vec!["project", "create", "--name", name];
        for origin in origins {
            args.extend(["--origin", origin]);
        }
        self.admin(&args)["id"].as_str().unwrap().to_owned()
    }

    /// A new client of `kind` (write, read, root) for `project_id`.
    pub fn client(&self, project_id: &str, kind: &str) -> Credentials {
        let client = self.admin(&["client", "create", "--project", project_id, "--type", kind]);
        Credentials {
            project_id: project_id.to_owned(),
            id: client["id"].as_str().unwrap().into(),
            secret: client["secret"].as_str().unwrap().into(),
        }
    }

    /// Another process of the same pipeline: its own port and consumer name.
    pub fn member(&self, consumer: &str) -> Setup {
        let mut other = self.clone().with("ANALYTICS_CONSUMER_NAME", consumer);
        other.port = free_port();
        other
    }

    pub fn bootstrap(&self) -> Credentials {
        let text = std::fs::read_to_string(self.data_dir.join("bootstrap.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        Credentials {
            project_id: v["project_id"].as_str().unwrap().into(),
            id: v["write"]["id"].as_str().unwrap().into(),
            secret: v["write"]["secret"].as_str().unwrap().into(),
        }
    }

    pub fn query(&self, sql: &str) -> String {
        clickhouse(&self.clickhouse_url, &self.name, sql)
    }

    /// Inserts JSON rows into `table`, naming their columns as the sink
    /// does: the columns left out take their DEFAULT expressions (without
    /// a column list, 18.16 fills them with zeros).
    pub fn insert_json(&self, table: &str, rows: &[Value]) {
        let columns: std::collections::BTreeSet<&str> = rows
            .iter()
            .flat_map(|row| row.as_object().unwrap().keys().map(String::as_str))
            .collect();
        let columns: Vec<&str> = columns.into_iter().collect();
        let mut sql = format!(
            "INSERT INTO {table} ({}) FORMAT JSONEachRow\n",
            columns.join(", ")
        );
        for row in rows {
            sql.push_str(&row.to_string());
            sql.push('\n');
        }
        self.query(&sql);
    }

    /// Like [`Setup::query`], for a statement that may fail.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        try_clickhouse(&self.clickhouse_url, &self.name, sql)
    }

    /// Total length of the raw stream partitions.
    pub fn raw_len(&self) -> u64 {
        self.stream_lengths("raw").iter().sum()
    }

    /// The documents (events on raw, records on enriched) on each of the
    /// four partitions of `topic`, as JSON text (an entry is a bundle: of
    /// binary events on raw, of binary frames on enriched).
    pub fn documents(&self, topic: &str) -> Vec<Vec<String>> {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        (0..4)
            .map(|p| {
                let range: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(format!("{}:{topic}:{{p{p}}}", self.name))
                    .arg("-")
                    .arg("+")
                    .query(&mut conn)
                    .unwrap();
                range
                    .ids
                    .iter()
                    .flat_map(|e| {
                        let payload = analytics_streams::payload::plain(&e.map).unwrap_or_default();
                        if topic == "enriched" {
                            // Binary frames, shown as the JSON of each record.
                            analytics_store::decode_bundle(&payload)
                                .into_iter()
                                .map(|(_, r)| serde_json::to_string(&r.unwrap()).unwrap())
                                .collect::<Vec<_>>()
                        } else {
                            // Raw events, shown as JSON.
                            analytics_event::raw_documents(&payload)
                                .map(|d| serde_json::to_string(&d.decode().unwrap()).unwrap())
                                .collect()
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Documents on each of the four partitions of `topic`.
    pub fn document_counts(&self, topic: &str) -> Vec<u64> {
        self.documents(topic)
            .iter()
            .map(|documents| documents.len() as u64)
            .collect()
    }

    /// Length of each of the four partitions of `topic` (raw, enriched, dead).
    pub fn stream_lengths(&self, topic: &str) -> Vec<u64> {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        (0..4)
            .map(|p| {
                redis::cmd("XLEN")
                    .arg(format!("{}:{topic}:{{p{p}}}", self.name))
                    .query::<u64>(&mut conn)
                    .unwrap()
            })
            .collect()
    }
}

pub struct Credentials {
    pub project_id: String,
    pub id: String,
    pub secret: String,
}

impl Credentials {
    pub fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            ("openpanel-client-id", self.id.as_str()),
            ("openpanel-client-secret", self.secret.as_str()),
            ("content-type", "application/json"),
        ]
    }
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "condition not met within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `sql` on ClickHouse over HTTP and returns the trimmed TSV answer.
pub fn clickhouse(url: &str, database: &str, sql: &str) -> String {
    try_clickhouse(url, database, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .trim()
        .to_owned()
}

/// Like [`clickhouse`], for a server that may be down or refuse; the
/// answer as it came (untrimmed: TabSeparated rows may end in a tab).
pub fn try_clickhouse(url: &str, database: &str, sql: &str) -> Result<String, String> {
    let port: u16 = url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let path = format!("/?database={database}");
    match http(port, "POST", &path, &[], sql) {
        Ok((200, _, body)) => Ok(body),
        Ok((status, _, body)) => Err(format!("{status}: {body}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes a private ClickHouse config with the same helper the scripts use.
pub fn clickhouse_config(dir: &Path, http_port: u16, tcp_port: u16) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/servers.sh");
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && clickhouse_config {} {http_port} {tcp_port}",
            root.display(),
            dir.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts a private ClickHouse from a config written by [`clickhouse_config`]
/// and waits until it answers.
pub fn start_clickhouse(dir: &Path, http_port: u16) -> Proc {
    let proc = Proc(
        Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                dir.join("config.xml").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(30), || {
        http(http_port, "GET", "/ping", &[], "")
            .map(|r| r.0 == 200)
            .unwrap_or(false)
    });
    proc
}

/// What a load generator thread shares with its test.
#[derive(Clone, Default)]
pub struct Load {
    pub stop: Arc<AtomicBool>,
    /// Ids that got a 202.
    pub accepted: Arc<Mutex<BTreeSet<String>>>,
    pub retries: Arc<AtomicU64>,
}

/// Sends `name` events with unique ids `<prefix>-<n>`, retrying each until
/// it gets a 202, as SDKs do on connection errors and 503s. The last event
/// is settled even after `stop`, so every id tried ends up accepted.
pub fn generator(
    port: u16,
    creds: &Credentials,
    prefix: &str,
    name: &str,
    load: &Load,
) -> std::thread::JoinHandle<()> {
    let (prefix, name) = (prefix.to_owned(), name.to_owned());
    requests(port, creds, load, move |n| {
        let id = format!("{prefix}-{n}");
        let body = format!(
            r#"{{"type":"track","payload":{{"name":"{name}","id":"{id}","deviceId":"{prefix}-d{}","properties":{{"__path":"/p{}"}}}}}}"#,
            n % 17,
            n % 5
        );
        ("/track", body, vec![id])
    })
}

/// Sends the `n`-th request that `next(n)` gives (path, body, the event
/// ids it carries) until `load.stop`, each retried until it gets a 202,
/// and records the ids of every accepted one. A request in flight when
/// `stop` comes is settled first.
pub fn requests(
    port: u16,
    creds: &Credentials,
    load: &Load,
    mut next: impl FnMut(u64) -> (&'static str, String, Vec<String>) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let headers: Vec<(String, String)> = creds
        .headers()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let load = load.clone();
    std::thread::spawn(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut conn: Option<Conn> = None;
        let mut n = 0u64;
        while !load.stop.load(Ordering::Relaxed) {
            let (path, body, ids) = next(n);
            loop {
                let reply = match conn.as_mut() {
                    Some(c) => c.send("POST", path, &headers, body.as_bytes()),
                    None => Conn::open(port).and_then(|mut c| {
                        let reply = c.send("POST", path, &headers, body.as_bytes());
                        conn = Some(c);
                        reply
                    }),
                };
                if let Ok((202, _, _)) = reply {
                    load.accepted.lock().unwrap().extend(ids);
                    break;
                }
                conn = None;
                load.retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(30));
            }
            n += 1;
        }
    })
}

/// Starts a private `redis-server` on `port` with its files in `dir` (plus
/// `args`) and waits until it answers.
pub fn start_redis(dir: &Path, port: u16, args: &[&str]) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let proc = Proc(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(args)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(20), || {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        client
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    });
    proc
}

/// The same events, with fixed ids, devices and times, for any install:
/// 120 visitors' screen views (paths, referrers) over the last two days,
/// and a sign-up for every third.
pub fn sample_events(now_s: i64) -> Vec<(String, Value)> {
    let pages = ["/", "/pricing", "/docs", "/blog", "/signup"];
    let referrers = [
        "https://www.google.com/",
        "https://news.ycombinator.com/",
        "",
    ];
    let mut out = Vec::new();
    for device in 0..120 {
        let start = now_s - 40 * 3600 + device * 600;
        for step in 0..(2 + device % 4) {
            let at = start + step * 60;
            let path = pages[((device + step) % 5) as usize];
            let mut properties = json!({"__path": format!("https://shop.example{path}")});
            if step == 0 && !referrers[(device % 3) as usize].is_empty() {
                properties["__referrer"] = json!(referrers[(device % 3) as usize]);
            }
            out.push((
                "/track".to_owned(),
                json!({"type": "track", "payload": {
                    "name": "screen_view", "deviceId": format!("d{device}"),
                    "id": format!("sv-{device}-{step}"),
                    "timestamp": at * 1000, "properties": properties}}),
            ));
        }
        if device % 3 == 0 {
            out.push((
                "/track".to_owned(),
                json!({"type": "track", "payload": {
                    "name": "signup", "deviceId": format!("d{device}"),
                    "id": format!("su-{device}"), "timestamp": (start + 300) * 1000}}),
            ));
        }
    }
    out
}

/// `YYYY-MM-DD` of a Unix time in UTC (Howard Hinnant's civil-from-days).
pub fn utc_date(unix_s: i64) -> String {
    let z = unix_s.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time in UTC, as ClickHouse reads a
/// `DateTime('UTC')` in JSONEachRow.
pub fn utc_time(unix_s: i64) -> String {
    let secs = unix_s.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02}",
        utc_date(unix_s),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A small deterministic generator (xorshift64) for generated datasets:
/// the same seed gives the same data in every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Percent-encodes everything but unreserved characters, for query strings.
pub fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs `command` with `input` on its standard input; its exit status and
/// what it printed (standard output, then standard error).
pub fn run_with_input(command: &mut Command, input: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written from another thread, so a large input cannot deadlock
    // against a child that is already filling its output pipe.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A pipeline under test: migrated, a project with a write and a read
/// client, and `analytics up` running.
pub struct Install {
    pub setup: Setup,
    _up: Proc,
    pub project: String,
    pub write: Credentials,
    pub read: Credentials,
}

impl Install {
    pub fn start(setup: Setup) -> Install {
        setup.admin(&["migrate"]);
        let project = setup.create_project("Shop", &[]);
        let write = setup.client(&project, "write");
        let read = setup.client(&project, "read");
        let up = setup.spawn(&["up"]);
        Install {
            write,
            read,
            project,
            _up: up,
            setup,
        }
    }

    /// Sends `(path, body)` requests on one connection; each must get 202.
    pub fn send(&self, events: &[(String, Value)]) {
        let mut conn = Conn::open(self.setup.port).unwrap();
        for (path, body) in events {
            let (status, _, text) = conn
                .send(
                    "POST",
                    path,
                    &self.write.headers(),
                    body.to_string().as_bytes(),
                )
                .unwrap();
            assert_eq!(status, 202, "{text}");
        }
    }

    /// An insights answer, which must be a 200.
    pub fn insights(&self, path_and_query: &str) -> Value {
        let path = format!("/insights/{}/{path_and_query}", self.project);
        let (status, _, text) =
            http(self.setup.port, "GET", &path, &self.read.headers(), "").unwrap();
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Events of the project stored in ClickHouse.
    pub fn stored(&self) -> u64 {
        self.setup
            .query(&format!(
                "SELECT count() FROM events WHERE project_id = '{}'",
                self.project
            ))
            .parse()
            .unwrap()
    }
}
