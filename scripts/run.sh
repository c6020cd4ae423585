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
  redis-server --port 6379 --bind 127.0.0.1 --dir "$(realpath "$state/redis")" \
    --appendonly yes --appendfsync everysec --daemonize yes --logfile "$(realpath "$state/redis")/redis.log"
  wait_for "redis" redis-cli -p 6379 ping
fi
if ! curl -sf http://127.0.0.1:8123/ping >/dev/null 2>&1; then
  echo "starting clickhouse on 127.0.0.1:8123 (data in $state/clickhouse)" >&2
  dir=$(realpath "$state")/clickhouse
  clickhouse_config "$dir" 8123 9000
  nohup clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 &
  wait_for "clickhouse" curl -sf http://127.0.0.1:8123/ping
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/analytics-target}"
cargo build --release -p analytics
exec "$CARGO_TARGET_DIR/release/analytics" up "$@"
