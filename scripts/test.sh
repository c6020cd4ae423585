#!/usr/bin/env bash
# The test command: installs what is missing, starts a private Redis,
# ClickHouse, MariaDB and PostgreSQL on free loopback ports in a temporary
# directory, runs every unit and integration test against them, and stops
# them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/servers.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/analytics-target}"
ensure_packages

work=$(mktemp -d /tmp/analytics-test.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

redis_port=$(free_port)
ch_http=$(free_port)
ch_tcp=$(free_port)
pids+=("$(start_redis "$work/redis" "$redis_port" | head -1)")
# Queries are logged (system.query_log) for the current-ClickHouse
# compatibility test, which replays the insights API's queries on chdb.
pids+=("$(start_clickhouse "$work/clickhouse" "$ch_http" "$ch_tcp" "<log_queries>1</log_queries>" | head -1)")
# Two ClickHouse servers sharing a ZooKeeper, one shard each, for the
# ClickHouse cluster test.
command -v java >/dev/null && [ -f /usr/share/java/zookeeper.jar ] \
  || { echo "installing zookeeper" >&2; apt_install zookeeper; }
zk_port=$(free_port)
pids+=("$(start_zookeeper "$work/zookeeper" "$zk_port" | head -1)")
shards=()
for n in 1 2; do shards+=("$(free_port) $(free_port) $(free_port)"); done  # http tcp interserver
for n in 0 1; do
  read -r http tcp interserver <<<"${shards[$n]}"
  clickhouse_cluster_config "$work/clickhouse-shard$n" analytics_cluster "0$((n + 1))" "$zk_port" "$interserver" \
    "$(cut -d' ' -f2 <<<"${shards[0]}")" "$(cut -d' ' -f2 <<<"${shards[1]}")"
  pids+=("$(start_clickhouse "$work/clickhouse-shard$n" "$http" "$tcp" | head -1)")
done
export TEST_CLICKHOUSE_CLUSTER_URLS="http://127.0.0.1:$(cut -d' ' -f1 <<<"${shards[0]}"),http://127.0.0.1:$(cut -d' ' -f1 <<<"${shards[1]}")"

# A 3-primary Redis Cluster for the cluster-mode test.
read -r -a cluster < <(cluster_ports 3)
mapfile -t cluster_pids < <(start_redis_cluster "$work/redis-cluster" "${cluster[@]}")
pids+=("${cluster_pids[@]}")
export TEST_REDIS_CLUSTER_URLS="redis://127.0.0.1:${cluster[0]},redis://127.0.0.1:${cluster[1]},redis://127.0.0.1:${cluster[2]}"

# MariaDB and PostgreSQL, for the metadata, migration and authentication
# tests (which also run on SQLite, needing no server). PostgreSQL runs as
# user postgres, which must reach its directory inside the work directory.
{ command -v mariadbd || [ -x /usr/sbin/mariadbd ]; } >/dev/null \
  || { echo "installing mariadb-server" >&2; apt_install mariadb-server; }
[ -n "$(postgres_bin)" ] || { echo "installing postgresql" >&2; apt_install postgresql; }
chmod 711 "$work"
mysql_port=$(free_port)
postgres_port=$(free_port)
pids+=("$(start_mariadb "$work/mariadb" "$mysql_port" | head -1)")
pids+=("$(start_postgres "$work/postgres" "$postgres_port" | head -1)")
export TEST_MYSQL_URL="mysql://root@127.0.0.1:$mysql_port"
export TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$postgres_port/postgres"

# The published OpenPanel SDK, for the end-to-end client test.
sdk_dir="$CARGO_TARGET_DIR/openpanel-sdk"
if [ ! -d "$sdk_dir/node_modules/@openpanel/sdk" ]; then
  mkdir -p "$sdk_dir"
  (cd "$sdk_dir" && npm init -y >/dev/null && npm install --no-audit --no-fund @openpanel/sdk@1 >/dev/null)
fi

# The published @openpanel/web tracker, driven in Debian's Chromium by
# playwright-core, for the browser test.
browser_dir="$CARGO_TARGET_DIR/browser-client"
if [ ! -d "$browser_dir/node_modules/@openpanel/web" ] || [ ! -d "$browser_dir/node_modules/playwright-core" ]; then
  mkdir -p "$browser_dir"
  (cd "$browser_dir" && npm init -y >/dev/null && npm install --no-audit --no-fund @openpanel/web@1 playwright-core@1 >/dev/null)
fi
command -v chromium >/dev/null || { echo "installing chromium" >&2; apt_install chromium chromium-driver; }

# uap-core's user-agent rules, for the user-agent tests.
fetch_npm_files uap-core "$CARGO_TARGET_DIR/uap-core" regexes.yaml

# Deployment checkers: docker-compose 1.29 (PyYAML 5.4.1 only builds with
# Cython < 3, and it wants an older jsonschema than kubernetes-validate, so
# each lives in its own virtualenv), promtool, and nginx for the
# reverse-proxy example.
tools="${TEST_TOOLS_DIR:-/var/tmp/analytics-tools}"
python_tool "$tools/compose" "cython<3" "--no-build-isolation=PyYAML==5.4.1" "docker-compose==1.29.2"
python_tool "$tools/k8s" "kubernetes-validate==1.37.0"
# chdb: the current ClickHouse release, in process.
python_tool "$tools/chdb" "chdb==4.4.0"
command -v promtool >/dev/null || { echo "installing prometheus (promtool)" >&2; apt_install prometheus; }
command -v nginx >/dev/null || { echo "installing nginx" >&2; apt_install nginx; }
export TEST_DOCKER_COMPOSE="$tools/compose/bin/docker-compose"
export TEST_DEPLOY_PYTHON="$tools/compose/bin/python"
export TEST_KUBERNETES_VALIDATE="$tools/k8s/bin/kubernetes-validate"
export TEST_CHDB_PYTHON="$tools/chdb/bin/python"

export TEST_UA_REGEXES="$CARGO_TARGET_DIR/uap-core/regexes.yaml"
export TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
export TEST_CLICKHOUSE_URL="http://127.0.0.1:$ch_http"
export TEST_SDK_NODE_PATH="$sdk_dir/node_modules"
export TEST_BROWSER_NODE_PATH="$browser_dir/node_modules"
export TEST_WORK_DIR="$work"

# The tracker's and the dashboard's budgets, gzipped as a browser would
# receive them (the browser test measures the served files again).
tracker_gz=$(gzip -9 -c services/edge/src/tracker.js | wc -c)
dashboard_gz=$(cat services/insights/dashboard/*.html services/insights/dashboard/*.css services/insights/dashboard/*.js | gzip -9 | wc -c)
echo "tracker.js: $tracker_gz bytes gzipped (limit 2000); dashboard assets: $dashboard_gz bytes gzipped (limit 61440)" >&2
[ "$tracker_gz" -le 2000 ] || { echo "tracker.js is over its 2,000-byte budget" >&2; exit 1; }
[ "$dashboard_gz" -le 61440 ] || { echo "the dashboard is over its 60 KB budget" >&2; exit 1; }

cargo build --workspace --all-targets
# Tests that need the servers above are #[ignore]d (a plain `cargo test`
# skips them, saying why): here they all run.
cargo nextest run --workspace --no-fail-fast --test-threads 2 --run-ignored all "$@"
