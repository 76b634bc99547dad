#!/usr/bin/env bash
# Local RabbitMQ (with management), PostgreSQL and Redis for Shopfleet, as plain processes on
# loopback with their data under the project (.shopfleet/<instance>/). No root services, no
# systemd, no Docker.
#
#   scripts/servers.sh install            install missing Debian packages (apt-get only if needed)
#   scripts/servers.sh up     [instance]  start what is not running, wait until ready (idempotent)
#   scripts/servers.sh down   [instance]  stop what is running (idempotent)
#   scripts/servers.sh status [instance]  say what runs where
#   scripts/servers.sh env    [instance]  print SHOPFLEET_* URLs (with credentials) for `eval`/`source`
#
# Instances: `dev` (make run), `test` (make test) and `chaos` (the chaos test, which stops and starts
# its servers) use different ports, so all can run at once.
# Every port can be changed by environment:
#   SHOPFLEET_AMQP_PORT   dev 5680   test 5690   chaos 5700   (Erlang distribution port: AMQP port + 20000)
#   SHOPFLEET_MGMT_PORT   dev 15680  test 15690  chaos 15700
#   SHOPFLEET_EPMD_PORT   dev 4380   test 4390   chaos 4400
#   SHOPFLEET_PG_PORT     dev 5440   test 5450   chaos 5460
#   SHOPFLEET_REDIS_PORT  dev 6380   test 6390   chaos 6400
#   SHOPFLEET_DATA_DIR    default <repo>/.shopfleet/<instance>
#   SHOPFLEET_READY_SECONDS  how long to wait for each server to be ready (default 90)
#
# Credentials are generated on first start (random, per data folder), kept in
# <data>/credentials.env with mode 0600, and never passed on a command line.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CMD="${1:-status}"
INSTANCE="${2:-dev}"
case "$INSTANCE" in
  dev)  d_amqp=5680 d_mgmt=15680 d_epmd=4380 d_pg=5440 d_redis=6380 ;;
  test) d_amqp=5690 d_mgmt=15690 d_epmd=4390 d_pg=5450 d_redis=6390 ;;
  chaos) d_amqp=5700 d_mgmt=15700 d_epmd=4400 d_pg=5460 d_redis=6400 ;;
  *) echo "servers.sh: unknown instance '$INSTANCE' (dev, test or chaos)" >&2; exit 2 ;;
esac
AMQP_PORT="${SHOPFLEET_AMQP_PORT:-$d_amqp}"
MGMT_PORT="${SHOPFLEET_MGMT_PORT:-$d_mgmt}"
EPMD_PORT="${SHOPFLEET_EPMD_PORT:-$d_epmd}"
PG_PORT="${SHOPFLEET_PG_PORT:-$d_pg}"
REDIS_PORT="${SHOPFLEET_REDIS_PORT:-$d_redis}"
DATA="${SHOPFLEET_DATA_DIR:-$ROOT/.shopfleet/$INSTANCE}"
READY_SECONDS="${SHOPFLEET_READY_SECONDS:-90}"
NODE="shopfleet-$INSTANCE@localhost"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
RABBIT_SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server
RABBITMQCTL=/usr/lib/rabbitmq/bin/rabbitmqctl

# chromium and chromium-driver: the browser tests of the storefront and the console (Selenium).
PACKAGES=(rabbitmq-server postgresql redis-server librabbitmq-dev libpq-dev libhiredis-dev pkg-config python3 python3-venv
          chromium chromium-driver)
# Python tools from PyPI (the SMTP sink, the API fuzzer, the chaos plot), in a virtualenv shared by
# the instances.
TOOLS_VENV="${SHOPFLEET_TOOLS_VENV:-$ROOT/.shopfleet/tools-venv}"
AIOSMTPD_VERSION=1.4.6
SCHEMATHESIS_VERSION=4.32.5
MATPLOTLIB_VERSION=3.9.4
# The chart's checks: the real Helm SDK (render, lint) and Kubernetes' schemas.
HELM_SDK_VERSION=0.2.2
KUBERNETES_VALIDATE_VERSION=1.37.0
JSONSCHEMA_VERSION=4.26.0
# The browser tests: Selenium driving Debian's Chromium through Debian's chromedriver.
SELENIUM_VERSION=4.51.0

log() { echo "servers[$INSTANCE]: $*" >&2; }
die() { echo "servers[$INSTANCE]: error: $*" >&2; exit 1; }

missing_packages() {
  local p missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

install_packages() {
  local missing; missing="$(missing_packages)"
  if [ -z "$missing" ]; then return 0; fi
  if [ "$(id -u)" != 0 ]; then
    die "missing Debian packages: $missing — install them with: sudo apt-get install -y $missing"
  fi
  log "installing: $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the packages' own system services from starting; ours run as local processes.
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1; fi
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  if [ "$created" = 1 ]; then rm -f "$policy"; fi
  # A package install may have started system services anyway (no policy-rc.d honoured): stop them.
  for s in rabbitmq-server postgresql redis-server; do
    command -v service >/dev/null && service "$s" stop >/dev/null 2>&1 || true
  done
}

ensure_python_tools() {
  if "$TOOLS_VENV/bin/python" -c 'import aiosmtpd, schemathesis, matplotlib, helm_python, kubernetes_validate, jsonschema, selenium' 2>/dev/null; then return 0; fi
  log "installing aiosmtpd $AIOSMTPD_VERSION (the SMTP sink), schemathesis $SCHEMATHESIS_VERSION (API fuzzing), matplotlib $MATPLOTLIB_VERSION (the chaos plot), helm-python-sdk $HELM_SDK_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION (the chart's checks), selenium $SELENIUM_VERSION (the browser tests) into $TOOLS_VENV"
  [ -x "$TOOLS_VENV/bin/pip" ] || python3 -m venv "$TOOLS_VENV" || die "cannot create a Python virtualenv at $TOOLS_VENV (is python3-venv installed?)"
  "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" "schemathesis==$SCHEMATHESIS_VERSION" \
    "matplotlib==$MATPLOTLIB_VERSION" "helm-python-sdk==$HELM_SDK_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    "jsonschema==$JSONSCHEMA_VERSION" "selenium==$SELENIUM_VERSION" >&2 \
    || die "cannot install the Python tools (aiosmtpd, schemathesis, matplotlib, helm-python-sdk, kubernetes-validate, selenium) from PyPI into $TOOLS_VENV"
}

random_secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

ensure_credentials() {
  mkdir -p "$DATA"
  local f="$DATA/credentials.env"
  if [ ! -f "$f" ]; then
    umask 077
    {
      echo "AMQP_USER=shopfleet"
      echo "AMQP_PASSWORD=$(random_secret)"
      echo "PG_USER=shopfleet"
      echo "PG_PASSWORD=$(random_secret)"
      echo "REDIS_PASSWORD=$(random_secret)"
    } > "$f"
  fi
  # Added later: the migrations identity's password and the fleet secret every service's
  # password is derived from (docs/security.md).
  grep -q '^MIGRATOR_PASSWORD=' "$f" || (umask 077; echo "MIGRATOR_PASSWORD=$(random_secret)" >> "$f")
  grep -q '^FLEET_SECRET=' "$f" || (umask 077; echo "FLEET_SECRET=$(random_secret)$(random_secret)" >> "$f")
  # shellcheck disable=SC1090
  . "$f"
}

# Run a command as the PostgreSQL owner: PostgreSQL refuses to run as root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

wait_for() { # description, command...
  local what="$1"; shift
  local deadline=$((SECONDS + READY_SECONDS))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then die "$what not ready after ${READY_SECONDS}s"; fi
    sleep 0.2
  done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- RabbitMQ
rabbit_env() {
  export HOME="$DATA/rabbitmq/home"           # the Erlang cookie lives here
  export ERL_EPMD_PORT="$EPMD_PORT"
  export ERL_EPMD_ADDRESS=127.0.0.1        # epmd on loopback only
  export RABBITMQ_NODENAME="$NODE"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$AMQP_PORT"
  export RABBITMQ_DIST_PORT=$((AMQP_PORT + 20000))
  export RABBITMQ_MNESIA_BASE="$DATA/rabbitmq/mnesia"
  export RABBITMQ_LOG_BASE="$DATA/rabbitmq/log"
  export RABBITMQ_CONFIG_FILE="$DATA/rabbitmq/rabbitmq.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$DATA/rabbitmq/enabled_plugins"
  export RABBITMQ_PID_FILE="$DATA/rabbitmq/rabbit.pid"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$DATA/rabbitmq/advanced.config"
  export ERL_CRASH_DUMP="$DATA/rabbitmq/erl_crash.dump"   # Erlang CLI tools write one on failure
}

# Only asks rabbitmqctl when our server process is alive: the Erlang CLI starts an epmd of its own
# when none runs, which would then outlive us.
rabbit_running() {
  rabbit_env
  [ -f "$DATA/rabbitmq/server.pid" ] && kill -0 "$(cat "$DATA/rabbitmq/server.pid")" 2>/dev/null || return 1
  timeout 20 "$RABBITMQCTL" -n "$NODE" -q status >/dev/null 2>&1
}

start_epmd() {
  if epmd -port "$EPMD_PORT" -names >/dev/null 2>&1; then return 0; fi
  setsid epmd -port "$EPMD_PORT" -address 127.0.0.1 </dev/null >/dev/null 2>&1 &
  echo $! > "$DATA/rabbitmq/epmd.pid"
  wait_for "epmd on 127.0.0.1:$EPMD_PORT" epmd -port "$EPMD_PORT" -names
}

rabbit_up() {
  if rabbit_running; then log "RabbitMQ already running on 127.0.0.1:$AMQP_PORT"; return; fi
  port_busy "$AMQP_PORT" && die "port $AMQP_PORT is taken by another process (set SHOPFLEET_AMQP_PORT)"
  rabbit_env
  mkdir -p "$HOME" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
  umask 077
  cat > "$RABBITMQ_CONFIG_FILE" <<CONF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
default_user = $AMQP_USER
default_pass = $AMQP_PASSWORD
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
loopback_users = none
log.console = false
log.file.level = warning
CONF
  echo "[]." > "$RABBITMQ_ADVANCED_CONFIG_FILE"
  echo "[rabbitmq_management]." > "$RABBITMQ_ENABLED_PLUGINS_FILE"
  umask 022
  # Our own epmd on our own port, started before any Erlang CLI call, so that `down` stops it by pid.
  start_epmd
  setsid "$RABBIT_SERVER" </dev/null >"$RABBITMQ_LOG_BASE/startup.log" 2>&1 &
  echo $! > "$DATA/rabbitmq/server.pid"
  local deadline=$((SECONDS + READY_SECONDS))
  until timeout 20 "$RABBITMQCTL" -n "$NODE" -q await_startup >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$DATA/rabbitmq/server.pid")" 2>/dev/null; then
      tail -20 "$RABBITMQ_LOG_BASE/startup.log" >&2 || true
      die "RabbitMQ exited during start (log: $RABBITMQ_LOG_BASE)"
    fi
    [ $SECONDS -ge $deadline ] && die "RabbitMQ not ready after ${READY_SECONDS}s (log: $RABBITMQ_LOG_BASE)"
    sleep 0.5
  done
  wait_for "RabbitMQ management API on 127.0.0.1:$MGMT_PORT" port_busy "$MGMT_PORT"
  log "RabbitMQ ready on amqp://127.0.0.1:$AMQP_PORT, management http://127.0.0.1:$MGMT_PORT"
}

rabbit_down() {
  rabbit_env
  if rabbit_running; then
    timeout 60 "$RABBITMQCTL" -n "$NODE" -q stop >/dev/null 2>&1 || true
  fi
  mkdir -p "$DATA/rabbitmq"
  local f
  for f in server.pid epmd.pid; do
    if [ -f "$DATA/rabbitmq/$f" ]; then
      local pid; pid="$(cat "$DATA/rabbitmq/$f")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$DATA/rabbitmq/$f"
    fi
  done
  # An epmd on our port that we did not start (an Erlang CLI call started it): ask it to go once
  # the node has left it.
  local deadline=$((SECONDS + 15))
  while epmd -port "$EPMD_PORT" -names >/dev/null 2>&1; do
    epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
    [ $SECONDS -ge $deadline ] && { log "epmd on port $EPMD_PORT did not stop"; break; }
    sleep 0.2
  done
}

# ---------------------------------------------------------------- PostgreSQL
pg_dir() { echo "$DATA/postgres"; }

pg_running() { [ -n "$PG_BIN" ] && [ -f "$(pg_dir)/data/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$(pg_dir)/data" status >/dev/null 2>&1; }

pg_up() {
  [ -n "$PG_BIN" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
  local dir; dir="$(pg_dir)"
  if pg_running; then pg_bootstrap; log "PostgreSQL already running on 127.0.0.1:$PG_PORT"; return; fi
  port_busy "$PG_PORT" && die "port $PG_PORT is taken by another process (set SHOPFLEET_PG_PORT)"
  mkdir -p "$dir/socket"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$dir"
    # The postgres user must be able to reach its folder.
    local p="$dir"; while [ "$p" != / ]; do p="$(dirname "$p")"; chmod o+x "$p" 2>/dev/null || true; done
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    local pw="$dir/.pw"
    (umask 077; printf '%s\n' "$PG_PASSWORD" > "$pw")
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$pw"
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U "$PG_USER" --pwfile="$pw" --auth=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; rm -f "$pw"; die "initdb failed"; }
    rm -f "$pw"
  fi
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$READY_SECONDS" \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $dir/socket -c max_connections=200" start >/dev/null \
    || { tail -20 "$dir/postgres.log" >&2; die "PostgreSQL did not start (log: $dir/postgres.log)"; }
  pg_bootstrap
  log "PostgreSQL ready on 127.0.0.1:$PG_PORT"
}

# What the cluster's superuser does once, and nothing else: the migrations identity
# (shopfleet_migrator: makes the services' roles and owns the database `shopfleet`; CREATEDB so
# tests and chaos runs can make databases of their own) and the database. Passwords go through
# stdin, never argv.
pg_bootstrap() {
  PGPASSWORD="$PG_PASSWORD" "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 -q >/dev/null <<SQL || die "could not make the migrations identity and the database shopfleet"
SELECT 'CREATE ROLE shopfleet_migrator LOGIN CREATEROLE CREATEDB NOSUPERUSER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shopfleet_migrator')\gexec
ALTER ROLE shopfleet_migrator LOGIN CREATEROLE CREATEDB NOSUPERUSER PASSWORD '$MIGRATOR_PASSWORD';
GRANT pg_signal_backend TO shopfleet_migrator;
SELECT 'CREATE DATABASE shopfleet OWNER shopfleet_migrator' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'shopfleet')\gexec
REVOKE ALL ON DATABASE postgres FROM PUBLIC;
SQL
}

pg_down() {
  pg_running || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$(pg_dir)/data" -m fast -w -t 60 stop >/dev/null || true
}

# ---------------------------------------------------------------- Redis
redis_running() { [ -f "$DATA/redis/redis.pid" ] && kill -0 "$(cat "$DATA/redis/redis.pid")" 2>/dev/null; }

redis_ping() { REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping | grep -q PONG; }

redis_up() {
  if redis_running; then log "Redis already running on 127.0.0.1:$REDIS_PORT"; return; fi
  port_busy "$REDIS_PORT" && die "port $REDIS_PORT is taken by another process (set SHOPFLEET_REDIS_PORT)"
  mkdir -p "$DATA/redis"
  (umask 077; cat > "$DATA/redis/redis.conf" <<CONF
bind 127.0.0.1
port $REDIS_PORT
daemonize yes
pidfile $DATA/redis/redis.pid
logfile $DATA/redis/redis.log
dir $DATA/redis
save ""
# Carts and idempotency keys survive a restart (a chaos run restarts Redis while customers shop);
# at most the last second of writes is lost.
appendonly yes
appendfsync everysec
requirepass $REDIS_PASSWORD
CONF
)
  redis-server "$DATA/redis/redis.conf" >/dev/null
  wait_for "Redis on 127.0.0.1:$REDIS_PORT" redis_ping
  log "Redis ready on 127.0.0.1:$REDIS_PORT"
}

redis_down() {
  redis_running || return 0
  local pid; pid="$(cat "$DATA/redis/redis.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$DATA/redis/redis.pid"
}

print_env() {
  echo "export SHOPFLEET_AMQP_URL='amqp://$AMQP_USER:$AMQP_PASSWORD@127.0.0.1:$AMQP_PORT/%2F'"
  echo "export SHOPFLEET_AMQP_MANAGEMENT_URL='http://$AMQP_USER:$AMQP_PASSWORD@127.0.0.1:$MGMT_PORT'"
  # The migrations identity on the fleet's database; the cluster's superuser is this script's only.
  echo "export SHOPFLEET_DATABASE_URL='postgres://shopfleet_migrator:$MIGRATOR_PASSWORD@127.0.0.1:$PG_PORT/shopfleet'"
  # Every service's broker and database password derives from it: the operator's, never a service's.
  echo "export SHOPFLEET_FLEET_SECRET='$FLEET_SECRET'"
  echo "export SHOPFLEET_REDIS_URL='redis://:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/0'"
  # What tests need to stop and start servers themselves (fault tests).
  echo "export SHOPFLEET_SERVERS_SCRIPT='$ROOT/scripts/servers.sh'"
  echo "export SHOPFLEET_SERVERS_INSTANCE='$INSTANCE'"
  # The Python with the SMTP sink (aiosmtpd): \$SHOPFLEET_PYTHON -m aiosmtpd -n -l 127.0.0.1:2525 …
  echo "export SHOPFLEET_PYTHON='$TOOLS_VENV/bin/python'"
}

report() {
  local state
  if rabbit_running; then state=running; else state=stopped; fi
  echo "RabbitMQ    $state  amqp://127.0.0.1:$AMQP_PORT  management http://127.0.0.1:$MGMT_PORT  (node $NODE)"
  if pg_running; then state=running; else state=stopped; fi
  echo "PostgreSQL  $state  postgres://127.0.0.1:$PG_PORT"
  if redis_running; then state=running; else state=stopped; fi
  echo "Redis       $state  redis://127.0.0.1:$REDIS_PORT"
  echo "data        $DATA   (credentials: $DATA/credentials.env; 'scripts/servers.sh env $INSTANCE' prints the URLs)"
}

case "$CMD" in
  install) install_packages ;;
  up)
    install_packages
    ensure_python_tools
    ensure_credentials
    pg_up; redis_up; rabbit_up
    ;;
  down)
    ensure_credentials
    rabbit_down; redis_down; pg_down
    log "stopped"
    ;;
  # Single servers, for fault-injection tests.
  up-rabbitmq) ensure_credentials; rabbit_up ;;
  close-connections)  # what an operator's `rabbitmqctl close_all_connections` does to clients
    ensure_credentials; rabbit_env
    "$RABBITMQCTL" -n "$NODE" -q close_all_connections --global "closed by servers.sh close-connections" >/dev/null ;;
  down-rabbitmq) ensure_credentials; rabbit_down ;;
  up-postgres) ensure_credentials; pg_up ;;
  down-postgres) ensure_credentials; pg_down ;;
  up-redis) ensure_credentials; redis_up ;;
  down-redis) ensure_credentials; redis_down ;;
  status) ensure_credentials; report ;;
  env) ensure_credentials; print_env ;;
  *) echo "usage: scripts/servers.sh install|up|down|status|env [dev|test|chaos]" >&2; exit 2 ;;
esac
