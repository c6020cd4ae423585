//! `ANALYTICS_*` overrides: one typed setter per documented variable.

use std::str::FromStr;

use crate::{Config, ConfigError};

type Setter = fn(&mut Config, &str, &str) -> Result<(), ConfigError>;

fn parse<T: FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::Invalid {
            key: key.into(),
            message: format!("cannot parse {value:?}: {e}"),
        })
}

fn optional(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

macro_rules! setters {
    ($($name:literal => |$c:ident, $k:ident, $v:ident| $body:expr;)*) => {
        /// Every environment variable the configuration accepts.
        pub const ENV_KEYS: &[&str] = &[$($name),*];

        const SETTERS: &[(&str, Setter)] = &[$(($name, |$c, $k, $v| {
            let _ = &$k;
            $body;
            Ok(())
        })),*];
    };
}

setters! {
    "ANALYTICS_LISTEN" => |c, k, v| c.listen = parse(k, v)?;
    "ANALYTICS_DATA_DIR" => |c, k, v| c.data_dir = parse(k, v)?;
    "ANALYTICS_METADATA_URL" => |c, k, v| c.metadata_url = optional(v);
    "ANALYTICS_CLIENT_IP_HEADER" => |c, k, v| c.client_ip_header = optional(v).map(|h| h.to_ascii_lowercase());
    "ANALYTICS_TRUSTED_PROXIES" => |c, k, v| c.trusted_proxies = v.split(',').map(str::trim).filter(|n| !n.is_empty()).map(|n| parse(k, n)).collect::<Result<_, _>>()?;
    "ANALYTICS_PATH_PREFIX" => |c, k, v| c.path_prefix = v.trim().to_owned();
    "ANALYTICS_CONSUMER_NAME" => |c, k, v| c.consumer_name = optional(v);
    "ANALYTICS_HTTP_THREADS" => |c, k, v| c.http_threads = optional(v).map(|n| parse(k, &n)).transpose()?;
    "ANALYTICS_GEOIP_DB" => |c, k, v| c.geoip_db = v.split(',').map(str::trim).filter(|p| !p.is_empty()).map(Into::into).collect();
    "ANALYTICS_UA_REGEXES" => |c, k, v| c.ua_regexes = optional(v).map(Into::into);
    "ANALYTICS_REDIS_URL" => |c, k, v| c.redis.url = v.trim().to_owned();
    "ANALYTICS_REDIS_CLUSTER" => |c, k, v| c.redis.cluster = parse(k, v)?;
    "ANALYTICS_REDIS_PARTITIONS" => |c, k, v| c.redis.partitions = parse(k, v)?;
    "ANALYTICS_REDIS_MAX_STREAM_LEN" => |c, k, v| c.redis.max_stream_len = parse(k, v)?;
    "ANALYTICS_REDIS_KEY_PREFIX" => |c, k, v| c.redis.key_prefix = v.trim().to_owned();
    "ANALYTICS_CLICKHOUSE_URL" => |c, k, v| c.clickhouse.url = v.trim().to_owned();
    "ANALYTICS_CLICKHOUSE_DATABASE" => |c, k, v| c.clickhouse.database = v.trim().to_owned();
    "ANALYTICS_CLICKHOUSE_USER" => |c, k, v| c.clickhouse.user = v.trim().to_owned();
    "ANALYTICS_CLICKHOUSE_PASSWORD" => |c, k, v| c.clickhouse.password = v.to_owned();
    "ANALYTICS_CLICKHOUSE_CLUSTER" => |c, k, v| c.clickhouse.cluster = optional(v);
    "ANALYTICS_EDGE_MAX_BODY_BYTES" => |c, k, v| c.edge.max_body_bytes = parse(k, v)?;
    "ANALYTICS_EDGE_MAX_BATCH_BYTES" => |c, k, v| c.edge.max_batch_bytes = parse(k, v)?;
    "ANALYTICS_EDGE_MAX_BATCH_EVENTS" => |c, k, v| c.edge.max_batch_events = parse(k, v)?;
    "ANALYTICS_EDGE_REQUEST_TIMEOUT_MS" => |c, k, v| c.edge.request_timeout_ms = parse(k, v)?;
    "ANALYTICS_EDGE_AUTH_CACHE_TTL_MS" => |c, k, v| c.edge.auth_cache_ttl_ms = parse(k, v)?;
    "ANALYTICS_EDGE_MAX_PENDING_WRITES" => |c, k, v| c.edge.max_pending_writes = parse(k, v)?;
    "ANALYTICS_EDGE_MAX_CONNECTIONS" => |c, k, v| c.edge.max_connections = parse(k, v)?;
    "ANALYTICS_EDGE_RATE_LIMIT_PER_CLIENT" => |c, k, v| c.edge.rate_limit_per_client = parse(k, v)?;
    "ANALYTICS_EDGE_RATE_LIMIT_PER_IP" => |c, k, v| c.edge.rate_limit_per_ip = parse(k, v)?;
    "ANALYTICS_ENRICHER_READ_COUNT" => |c, k, v| c.enricher.read_count = parse(k, v)?;
    "ANALYTICS_ENRICHER_CLAIM_IDLE_MS" => |c, k, v| c.enricher.claim_idle_ms = parse(k, v)?;
    "ANALYTICS_ENRICHER_MAX_DELIVERIES" => |c, k, v| c.enricher.max_deliveries = parse(k, v)?;
    "ANALYTICS_ENRICHER_SESSION_TIMEOUT_MS" => |c, k, v| c.enricher.session_timeout_ms = parse(k, v)?;
    "ANALYTICS_ENRICHER_SESSION_GRACE_MS" => |c, k, v| c.enricher.session_grace_ms = parse(k, v)?;
    "ANALYTICS_ENRICHER_DEDUPE_WINDOW_MS" => |c, k, v| c.enricher.dedupe_window_ms = parse(k, v)?;
    "ANALYTICS_ENRICHER_LEASE_TTL_MS" => |c, k, v| c.enricher.lease_ttl_ms = parse(k, v)?;
    "ANALYTICS_ENRICHER_STALL_AFTER_MS" => |c, k, v| c.enricher.stall_after_ms = parse(k, v)?;
    "ANALYTICS_INSIGHTS_MAX_RANGE_DAYS" => |c, k, v| c.insights.max_range_days = parse(k, v)?;
    "ANALYTICS_INSIGHTS_RATE_LIMIT_PER_SECOND" => |c, k, v| c.insights.rate_limit_per_second = parse(k, v)?;
    "ANALYTICS_INSIGHTS_QUERY_TIMEOUT_MS" => |c, k, v| c.insights.query_timeout_ms = parse(k, v)?;
    "ANALYTICS_INSIGHTS_MAX_QUERIES" => |c, k, v| c.insights.max_queries = parse(k, v)?;
    "ANALYTICS_INSIGHTS_SUMMARY" => |c, k, v| c.insights.summary = parse(k, v)?;
    "ANALYTICS_INSIGHTS_MAX_EXPORTS" => |c, k, v| c.insights.max_exports = parse(k, v)?;
    "ANALYTICS_INSIGHTS_MAX_EXPORTS_PER_CLIENT" => |c, k, v| c.insights.max_exports_per_client = parse(k, v)?;
    "ANALYTICS_INSIGHTS_EXPORT_MAX_MEMORY_BYTES" => |c, k, v| c.insights.export_max_memory_bytes = parse(k, v)?;
    "ANALYTICS_INSIGHTS_EXPORT_SEND_TIMEOUT_MS" => |c, k, v| c.insights.export_send_timeout_ms = parse(k, v)?;
    "ANALYTICS_SINK_MAX_ROWS" => |c, k, v| c.sink.max_rows = parse(k, v)?;
    "ANALYTICS_SINK_MAX_AGE_MS" => |c, k, v| c.sink.max_age_ms = parse(k, v)?;
    "ANALYTICS_SINK_CLAIM_IDLE_MS" => |c, k, v| c.sink.claim_idle_ms = parse(k, v)?;
    "ANALYTICS_SINK_MAX_DELIVERIES" => |c, k, v| c.sink.max_deliveries = parse(k, v)?;
    "ANALYTICS_SINK_MAX_BACKOFF_MS" => |c, k, v| c.sink.max_backoff_ms = parse(k, v)?;
    "ANALYTICS_SINK_STALL_AFTER_MS" => |c, k, v| c.sink.stall_after_ms = parse(k, v)?;
}

/// Applies one `ANALYTICS_*` variable, refusing names nobody defined.
pub(crate) fn apply(config: &mut Config, key: &str, value: &str) -> Result<(), ConfigError> {
    match SETTERS.iter().find(|(name, _)| *name == key) {
        Some((_, set)) => set(config, key, value),
        None => Err(ConfigError::UnknownEnv(key.to_owned())),
    }
}
