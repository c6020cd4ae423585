//! Typed configuration for every stage of the pipeline.
//!
//! One `Config` is built at start-up from an optional TOML file plus
//! `ANALYTICS_*` overrides. The caller passes the environment in as key/value
//! pairs: this crate never reads the process environment itself. Unknown keys
//! (in the file or among `ANALYTICS_*` variables) and bad values are errors
//! that name the offending key, so a typo fails the start instead of being
//! silently ignored.

mod env;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod net;
pub use net::ProxyNet;

pub use env::ENV_KEYS;

/// Everything a stage can be configured with.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server (edge, insights, health and metrics) binds.
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// Directory for the SQLite metadata file, bootstrap credentials and data files.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// sea-orm database URL; SQLite in `data_dir` when unset.
    #[serde(default)]
    pub metadata_url: Option<String>,
    /// Header a reverse proxy sets to the client IP (e.g. `x-forwarded-for`,
    /// `x-real-ip`); the socket address when unset. In a list, the right-most
    /// address that is not a trusted proxy is the client.
    #[serde(default)]
    pub client_ip_header: Option<String>,
    /// Networks of the reverse proxies allowed to set `client_ip_header`
    /// (`10.0.0.0/8`, `::1`). Empty: the header is believed from any peer,
    /// which is only right when nothing but the proxy can reach the server.
    #[serde(default)]
    pub trusted_proxies: Vec<ProxyNet>,
    /// Path under which the HTTP API is mounted (`/api/v1/analytics`), for a
    /// proxy that forwards that prefix unchanged; empty for the root.
    #[serde(default)]
    pub path_prefix: String,
    /// Name of this process in its consumer groups; the host name when unset.
    #[serde(default)]
    pub consumer_name: Option<String>,
    /// Threads serving HTTP (`edge`, `insights`, and `up`, whose consumers
    /// have threads of their own); one fewer than the machine's cores, at
    /// least one, when unset. The cores left over are for what serving
    /// leans on: the kernel's network work, Redis, the consumers. On 2
    /// cores one thread served a single-event request in 18–22 CPU-µs
    /// against 23–26 with two: a request's tasks (its connection, the group
    /// commit, the Redis connection) then wake each other on one thread.
    /// One thread is a single-threaded runtime: the scheduler then has no
    /// other worker to hand tasks to or wake.
    #[serde(default)]
    pub http_threads: Option<usize>,
    /// MaxMind-format GeoIP files; `*.mmdb` under `<data_dir>/geoip` when empty.
    #[serde(default)]
    pub geoip_db: Vec<PathBuf>,
    /// uap-core `regexes.yaml`; `<data_dir>/regexes.yaml` when unset.
    #[serde(default)]
    pub ua_regexes: Option<PathBuf>,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub clickhouse: ClickHouseConfig,
    #[serde(default)]
    pub edge: EdgeConfig,
    #[serde(default)]
    pub enricher: EnricherConfig,
    #[serde(default)]
    pub sink: SinkConfig,
    #[serde(default)]
    pub insights: InsightsConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InsightsConfig {
    /// Longest `startDate`..`endDate` span.
    #[serde(default = "defaults::max_range_days")]
    pub max_range_days: u32,
    /// Requests per second per client; bursts of twice that pass.
    #[serde(default = "defaults::rate_limit_per_second")]
    pub rate_limit_per_second: u32,
    /// Longest a query may run (ClickHouse `max_execution_time`); then 504.
    #[serde(default = "defaults::query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// ClickHouse queries of questions at once from this server; beyond,
    /// they wait their turn (within `query_timeout_ms`, then 503).
    #[serde(default = "defaults::max_queries")]
    pub max_queries: u32,
    /// Whether questions may read the hourly session summary
    /// (`session_hours`) where it answers exactly what `events` would.
    #[serde(default = "defaults::summary")]
    pub summary: bool,
    /// NDJSON exports streaming at once on this server; beyond, 503.
    #[serde(default = "defaults::max_exports")]
    pub max_exports: u32,
    /// NDJSON exports streaming at once for one client; beyond, 429.
    #[serde(default = "defaults::max_exports_per_client")]
    pub max_exports_per_client: u32,
    /// Memory one export query may use (ClickHouse `max_memory_usage`).
    #[serde(default = "defaults::export_max_memory_bytes")]
    pub export_max_memory_bytes: u64,
    /// An export whose client takes no data for this long is dropped,
    /// and its ClickHouse query with it.
    #[serde(default = "defaults::export_send_timeout_ms")]
    pub export_send_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    #[serde(default = "defaults::redis_url")]
    pub url: String,
    /// Number of partitions of each stream (raw, enriched).
    #[serde(default = "defaults::partitions")]
    pub partitions: u16,
    /// Cap of every partition: past it the edge answers 503 (raw) and
    /// enrichers pause (enriched).
    #[serde(default = "defaults::max_stream_len")]
    pub max_stream_len: u64,
    /// Key prefix of every stream, so several installs can share one Redis.
    #[serde(default = "defaults::key_prefix")]
    pub key_prefix: String,
    /// Redis Cluster: `url` may then list several seed nodes, comma-separated.
    #[serde(default)]
    pub cluster: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    #[serde(default = "defaults::clickhouse_url")]
    pub url: String,
    #[serde(default = "defaults::clickhouse_database")]
    pub database: String,
    #[serde(default = "defaults::clickhouse_user")]
    pub user: String,
    #[serde(default)]
    pub password: String,
    /// Cluster name (from the servers' `remote_servers`) that migrations
    /// target: replicated tables on every shard behind a `Distributed` table.
    #[serde(default)]
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Largest accepted body of a single-event request.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest accepted body of a `/batch` request.
    #[serde(default = "defaults::max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Most events in one `/batch` request.
    #[serde(default = "defaults::max_batch_events")]
    pub max_batch_events: usize,
    /// Time allowed to receive a request's headers and body.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How long a client lookup stays cached.
    #[serde(default = "defaults::auth_cache_ttl_ms")]
    pub auth_cache_ttl_ms: u64,
    /// Most write requests waiting for Redis at once; past it the edge answers 503.
    #[serde(default = "defaults::max_pending_writes")]
    pub max_pending_writes: usize,
    /// Connections the HTTP server serves at once; past it a new connection
    /// is answered 503 and closed, while open ones keep being served.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Ingest requests per second per client (0: no limit); projects may set their own.
    #[serde(default)]
    pub rate_limit_per_client: u32,
    /// Ingest requests per second per source IP (0: no limit); projects may set their own.
    #[serde(default)]
    pub rate_limit_per_ip: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnricherConfig {
    /// Entries read per `XREADGROUP`.
    #[serde(default = "defaults::read_count")]
    pub read_count: usize,
    /// Idle time after which another consumer's pending entry is claimed.
    #[serde(default = "defaults::claim_idle_ms")]
    pub claim_idle_ms: u64,
    /// Deliveries after which an entry goes to the dead-letter stream.
    #[serde(default = "defaults::max_deliveries")]
    pub max_deliveries: u64,
    /// Inactivity that ends a session.
    #[serde(default = "defaults::session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// How far an event may arrive out of order and still join its session.
    #[serde(default = "defaults::session_grace_ms")]
    pub session_grace_ms: u64,
    /// How long a client event id is remembered to drop retries.
    #[serde(default = "defaults::dedupe_window_ms")]
    pub dedupe_window_ms: u64,
    /// How long a partition's lease lasts without renewal: how long a
    /// partition waits for a new owner when its enricher dies without
    /// handing it over. Renewed six times per lifetime.
    #[serde(default = "defaults::lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// A partition task silent this long (no read, no commit) makes
    /// `/readyz` answer 503.
    #[serde(default = "defaults::stall_after_ms")]
    pub stall_after_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// A batch is flushed when it holds this many rows…
    #[serde(default = "defaults::max_rows")]
    pub max_rows: usize,
    /// …or when its oldest row is this old.
    #[serde(default = "defaults::max_age_ms")]
    pub max_age_ms: u64,
    #[serde(default = "defaults::claim_idle_ms")]
    pub claim_idle_ms: u64,
    #[serde(default = "defaults::max_deliveries")]
    pub max_deliveries: u64,
    /// Longest pause between two insert attempts while ClickHouse is down.
    #[serde(default = "defaults::max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// A partition task silent this long (no read, no flush) makes
    /// `/readyz` answer 503.
    #[serde(default = "defaults::stall_after_ms")]
    pub stall_after_ms: u64,
}

mod defaults {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    pub fn listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 3002))
    }
    pub fn data_dir() -> PathBuf {
        PathBuf::from("./data")
    }
    pub fn redis_url() -> String {
        "redis://127.0.0.1:6379".into()
    }
    pub fn partitions() -> u16 {
        4
    }
    pub fn max_stream_len() -> u64 {
        2_000_000
    }
    pub fn key_prefix() -> String {
        "analytics".into()
    }
    pub fn clickhouse_url() -> String {
        "http://127.0.0.1:8123".into()
    }
    pub fn clickhouse_database() -> String {
        "analytics".into()
    }
    pub fn clickhouse_user() -> String {
        "default".into()
    }
    pub fn max_body_bytes() -> usize {
        1 << 20
    }
    pub fn max_batch_bytes() -> usize {
        10 << 20
    }
    pub fn max_batch_events() -> usize {
        2_000
    }
    pub fn request_timeout_ms() -> u64 {
        10_000
    }
    pub fn auth_cache_ttl_ms() -> u64 {
        30_000
    }
    pub fn max_pending_writes() -> usize {
        16_384
    }
    /// Far more than keep-alive producers and proxies need, well within
    /// the file descriptors of a default container.
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn read_count() -> usize {
        2_000
    }
    pub fn claim_idle_ms() -> u64 {
        30_000
    }
    /// Every hand-over counts (a consumer's restart, a takeover), and
    /// entries that fail to decode or are refused are dead-lettered at once:
    /// this only catches entries that keep killing their consumers.
    pub fn max_deliveries() -> u64 {
        20
    }
    pub fn session_timeout_ms() -> u64 {
        30 * 60 * 1000
    }
    pub fn session_grace_ms() -> u64 {
        5 * 60 * 1000
    }
    pub fn dedupe_window_ms() -> u64 {
        60 * 60 * 1000
    }
    pub fn lease_ttl_ms() -> u64 {
        6_000
    }
    pub fn max_range_days() -> u32 {
        400
    }
    pub fn rate_limit_per_second() -> u32 {
        50
    }
    pub fn query_timeout_ms() -> u64 {
        30_000
    }
    /// A ClickHouse query of a question spreads over the server's cores
    /// by itself: two at once keep them busy, more only contend.
    pub fn max_queries() -> u32 {
        2
    }
    pub fn summary() -> bool {
        true
    }
    pub fn max_exports() -> u32 {
        8
    }
    pub fn max_exports_per_client() -> u32 {
        2
    }
    /// Far above what one export window needs (a few thousand rows
    /// sorted), far below what a day's rows sorted at once took.
    pub fn export_max_memory_bytes() -> u64 {
        1 << 30
    }
    pub fn export_send_timeout_ms() -> u64 {
        15_000
    }
    /// Large enough that under load `max_age_ms` decides the flush: ClickHouse
    /// pays per insert (a part of files, written and merged again) more than
    /// per row.
    pub fn max_rows() -> usize {
        50_000
    }
    /// Bounds how far behind the newest visible event is: about this age,
    /// plus the insert (which grows with the rows of a flush) and the way
    /// through the enricher. At 1 s, 90,000 events/s on 2 cores were 2.3 s
    /// behind at worst; at 500 ms, 1.45 s, for about 5% more ClickHouse CPU
    /// per event (twice the parts, each half the size).
    pub fn max_age_ms() -> u64 {
        500
    }
    pub fn max_backoff_ms() -> u64 {
        5_000
    }
    /// Longer than a ClickHouse or Redis restart, shorter than anyone's
    /// patience with a partition that does not move.
    pub fn stall_after_ms() -> u64 {
        60_000
    }
}

const REDACTED: &str = "<redacted>";

/// A name ClickHouse accepts unquoted: letters, digits, underscores.
fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

macro_rules! default_section {
    ($t:ty) => {
        impl Default for $t {
            fn default() -> Self {
                toml::from_str("").expect("every field has a default")
            }
        }
    };
}
default_section!(Config);
default_section!(RedisConfig);
default_section!(ClickHouseConfig);
default_section!(EdgeConfig);
default_section!(EnricherConfig);
default_section!(SinkConfig);
default_section!(InsightsConfig);

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("unknown environment variable {0} (the README's configuration table lists them)")]
    UnknownEnv(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl Config {
    /// Builds the configuration from an optional file and `ANALYTICS_*` pairs.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?
            }
            None => Config::default(),
        };
        for (key, value) in env {
            if key.starts_with("ANALYTICS_") {
                env::apply(&mut config, &key, &value)?;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the relations between values that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message: message.into(),
            })
        };
        if let Err(e) = url::Url::parse(&self.clickhouse.url) {
            return invalid("clickhouse.url", &format!("not a URL ({e})"));
        }
        for url in self.redis_urls() {
            if let Err(e) = url::Url::parse(url) {
                return invalid("redis.url", &format!("not a URL ({e})"));
            }
            if !url.starts_with("redis://") && !url.starts_with("rediss://") {
                return invalid("redis.url", "must start with redis:// or rediss://");
            }
        }
        if !self.redis.cluster && self.redis_urls().count() != 1 {
            return invalid(
                "redis.url",
                "several URLs need redis.cluster = true (ANALYTICS_REDIS_CLUSTER)",
            );
        }
        if let Some(cluster) = &self.clickhouse.cluster
            && !is_identifier(cluster)
        {
            return invalid(
                "clickhouse.cluster",
                "must be letters, digits and underscores, not starting with a digit",
            );
        }
        let prefix = &self.path_prefix;
        if !prefix.is_empty()
            && (!prefix.starts_with('/')
                || prefix.ends_with('/')
                || prefix.contains("//")
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b)))
        {
            return invalid(
                "path_prefix",
                "must start with '/', not end with '/', and hold only letters, digits and -_.~",
            );
        }
        if !self.clickhouse.url.starts_with("http://") {
            return invalid("clickhouse.url", "must start with http://");
        }
        if !is_identifier(&self.clickhouse.database) {
            return invalid(
                "clickhouse.database",
                "must be letters, digits and underscores, not starting with a digit",
            );
        }
        if self.redis.partitions == 0 || self.redis.partitions > 1024 {
            return invalid("redis.partitions", "must be between 1 and 1024");
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(['{', '}']) {
            return invalid("redis.key_prefix", "must be non-empty and without braces");
        }
        if self.http_threads == Some(0) {
            return invalid("http_threads", "must be at least 1");
        }
        if self.sink.max_rows == 0 {
            return invalid("sink.max_rows", "must be at least 1");
        }
        if self.sink.max_age_ms == 0 {
            return invalid("sink.max_age_ms", "must be at least 1");
        }
        if self.edge.max_batch_events == 0 {
            return invalid("edge.max_batch_events", "must be at least 1");
        }
        if self.edge.max_connections == 0 {
            return invalid("edge.max_connections", "must be at least 1");
        }
        if self.edge.max_body_bytes < 64 || self.edge.max_batch_bytes < self.edge.max_body_bytes {
            return invalid(
                "edge.max_batch_bytes",
                "must be at least edge.max_body_bytes, which must be at least 64",
            );
        }
        if self.enricher.session_timeout_ms < 1000 {
            return invalid("enricher.session_timeout_ms", "must be at least 1000");
        }
        if !(600..=600_000).contains(&self.enricher.lease_ttl_ms) {
            return invalid("enricher.lease_ttl_ms", "must be between 600 and 600000");
        }
        if self.enricher.dedupe_window_ms < 60_000 {
            return invalid("enricher.dedupe_window_ms", "must be at least 60000");
        }
        if self.insights.rate_limit_per_second == 0 || self.insights.max_range_days == 0 {
            return invalid(
                "insights",
                "rate_limit_per_second and max_range_days must be at least 1",
            );
        }
        if self.insights.query_timeout_ms < 1000 {
            return invalid("insights.query_timeout_ms", "must be at least 1000");
        }
        if self.insights.max_queries == 0 {
            return invalid("insights.max_queries", "must be at least 1");
        }
        if self.insights.max_exports == 0 || self.insights.max_exports_per_client == 0 {
            return invalid(
                "insights",
                "max_exports and max_exports_per_client must be at least 1",
            );
        }
        if self.insights.export_max_memory_bytes < 1 << 20 {
            return invalid(
                "insights.export_max_memory_bytes",
                "must be at least 1048576",
            );
        }
        if self.insights.export_send_timeout_ms < 1000 {
            return invalid("insights.export_send_timeout_ms", "must be at least 1000");
        }
        if self.enricher.max_deliveries == 0 || self.sink.max_deliveries == 0 {
            return invalid("max_deliveries", "must be at least 1");
        }
        if let Some(header) = &self.client_ip_header
            && (header.is_empty()
                || !header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return invalid("client_ip_header", "must be a valid header name");
        }
        Ok(())
    }

    /// The GeoIP files to open: the configured ones, else the `*.mmdb`
    /// files the run command placed in `<data_dir>/geoip`.
    pub fn geoip_files(&self) -> Vec<PathBuf> {
        if !self.geoip_db.is_empty() {
            return self.geoip_db.clone();
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.data_dir.join("geoip"))
            .map(|dir| {
                dir.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "mmdb"))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// The user-agent rules file to load.
    pub fn ua_regexes_file(&self) -> PathBuf {
        self.ua_regexes
            .clone()
            .unwrap_or_else(|| self.data_dir.join("regexes.yaml"))
    }

    /// The Redis URLs: one, or a cluster's seed nodes.
    pub fn redis_urls(&self) -> impl Iterator<Item = &str> {
        self.redis
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }

    /// This configuration as TOML, with passwords replaced: what `analytics
    /// config` prints.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.clickhouse.password.is_empty() {
            shown.clickhouse.password = REDACTED.into();
        }
        if let Some(url) = &mut shown.metadata_url
            && let Ok(mut parsed) = url::Url::parse(url)
            && parsed.password().is_some()
        {
            let _ = parsed.set_password(Some(REDACTED));
            *url = parsed.to_string();
        }
        toml::to_string(&shown).expect("a configuration always serializes")
    }

    /// The metadata database URL, SQLite in the data directory by default.
    pub fn metadata_url(&self) -> String {
        match &self.metadata_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("metadata.sqlite").display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
        assert_eq!(c.clickhouse.url, "http://127.0.0.1:8123");
        assert_eq!(c.clickhouse.database, "analytics");
        assert_eq!(c.listen.to_string(), "0.0.0.0:3002");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.client_ip_header, None);
        assert!(
            c.metadata_url()
                .starts_with("sqlite://./data/metadata.sqlite")
        );
        assert_eq!(c.sink.max_rows, 50_000);
        assert_eq!(c.sink.max_age_ms, 500);
        assert_eq!(c.edge.max_connections, 10_000);
    }

    #[test]
    fn environment_overrides_file() {
        let dir = std::env::temp_dir().join(format!("cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\n[sink]\nmax_rows = 5\n").unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("ANALYTICS_SINK_MAX_ROWS", "7"),
                ("ANALYTICS_REDIS_URL", "redis://127.0.0.1:7000/3"),
                ("ANALYTICS_CLIENT_IP_HEADER", "x-forwarded-for"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.sink.max_rows, 7);
        assert_eq!(c.redis.url, "redis://127.0.0.1:7000/3");
        assert_eq!(c.client_ip_header.as_deref(), Some("x-forwarded-for"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::load(None, env(&[("ANALYTICS_SINK_MAX_ROW", "7")])).unwrap_err();
        assert!(err.to_string().contains("ANALYTICS_SINK_MAX_ROW"), "{err}");

        let err = toml::from_str::<Config>("[sink]\nmax_row = 1\n").unwrap_err();
        assert!(err.to_string().contains("max_row"), "{err}");
    }

    #[test]
    fn deployment_settings_parse_and_print_without_passwords() {
        let c = Config::load(
            None,
            env(&[
                ("ANALYTICS_REDIS_CLUSTER", "true"),
                (
                    "ANALYTICS_REDIS_URL",
                    "redis://10.0.0.1:7000, redis://10.0.0.2:7000",
                ),
                ("ANALYTICS_TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
                ("ANALYTICS_PATH_PREFIX", "/api/v1/analytics"),
                ("ANALYTICS_CLICKHOUSE_CLUSTER", "events_cluster"),
                ("ANALYTICS_CLICKHOUSE_PASSWORD", "s3cret"),
                ("ANALYTICS_METADATA_URL", "postgres://meta:hunter2@db/meta"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.redis_urls().collect::<Vec<_>>(),
            ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]
        );
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.clickhouse.cluster.as_deref(), Some("events_cluster"));
        let shown = c.redacted_toml();
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
        let back: Config = toml::from_str(&shown).unwrap();
        assert_eq!(back.path_prefix, "/api/v1/analytics");
        assert_eq!(back.trusted_proxies, c.trusted_proxies);
        assert_eq!(back.redis.url, c.redis.url);
    }

    #[test]
    fn bad_deployment_settings_are_named() {
        for (key, value, named) in [
            (
                "ANALYTICS_REDIS_URL",
                "redis://a:1,redis://b:1",
                "redis.cluster",
            ),
            (
                "ANALYTICS_TRUSTED_PROXIES",
                "10.0.0.0/40",
                "ANALYTICS_TRUSTED_PROXIES",
            ),
            ("ANALYTICS_PATH_PREFIX", "api/", "path_prefix"),
            ("ANALYTICS_PATH_PREFIX", "/api/", "path_prefix"),
            ("ANALYTICS_CLICKHOUSE_CLUSTER", "a b", "clickhouse.cluster"),
            ("ANALYTICS_REDIS_CLUSTER", "yes", "ANALYTICS_REDIS_CLUSTER"),
        ] {
            let err = Config::load(None, env(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(named), "{key}={value}: {err}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::load(None, env(&[("ANALYTICS_LISTEN", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("ANALYTICS_LISTEN"), "{err}");
        let err = Config::load(None, env(&[("ANALYTICS_SINK_MAX_ROWS", "-1")])).unwrap_err();
        assert!(err.to_string().contains("ANALYTICS_SINK_MAX_ROWS"), "{err}");
        let err =
            Config::load(None, env(&[("ANALYTICS_CLICKHOUSE_DATABASE", "a;drop")])).unwrap_err();
        assert!(err.to_string().contains("clickhouse.database"), "{err}");
        let err = Config::load(None, env(&[("ANALYTICS_REDIS_URL", "http://x")])).unwrap_err();
        assert!(err.to_string().contains("redis.url"), "{err}");
        let err = Config::load(None, env(&[("ANALYTICS_EDGE_MAX_CONNECTIONS", "0")])).unwrap_err();
        assert!(err.to_string().contains("edge.max_connections"), "{err}");
        let err = Config::load(None, env(&[("ANALYTICS_HTTP_THREADS", "0")])).unwrap_err();
        assert!(err.to_string().contains("http_threads"), "{err}");
        let err = Config::load(None, env(&[("ANALYTICS_HTTP_THREADS", "two")])).unwrap_err();
        assert!(err.to_string().contains("ANALYTICS_HTTP_THREADS"), "{err}");
    }

    #[test]
    fn http_threads_are_set_or_left_to_the_machine() {
        let set = Config::load(None, env(&[("ANALYTICS_HTTP_THREADS", "3")])).unwrap();
        assert_eq!(set.http_threads, Some(3));
        let blank = Config::load(None, env(&[("ANALYTICS_HTTP_THREADS", " ")])).unwrap();
        assert_eq!(blank.http_threads, None);
        let file = toml::from_str::<Config>("http_threads = 2\n").unwrap();
        assert_eq!(file.http_threads, Some(2));
    }
}
