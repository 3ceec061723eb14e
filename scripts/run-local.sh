#!/usr/bin/env bash
# Run market-data-store locally: the API (gunicorn) and one worker, in the foreground.
#
# Uses DATABASE_URL and REDIS_URL when they are set. Otherwise starts a Postgres cluster
# and a Redis server of its own from the installed binaries, with their data and logs
# under .local/ (LOCAL_STATE_DIR; ignored by git). Applies the migrations, then runs until
# Ctrl-C.
#
# Local defaults (each overridable from the environment): the API listens on 127.0.0.1
# only (HOST), drift checks are off unless REGISTRY_URL is set (REGISTRY_URL=off), and
# backfill files come from .local/backfill (BACKFILL_SOURCE_DIR).
#
# Ctrl-C stops everything, in order, within about 10 s even in the middle of a job:
#   1. the API and the worker (the running job is cancelled and recorded `cancelled`; a
#      backfill resumes from its checkpoint when triggered again; the worker deregisters
#      from RQ), killed if they are not gone after STOP_GRACE_SECONDS (default 7);
#   2. then Redis (after the worker, so the worker can say goodbye to it);
#   3. then Postgres, always.
# Postgres and Redis run in sessions of their own, so the terminal's Ctrl-C reaches them
# only through this script, in that order. A second Ctrl-C while stopping is ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE=${LOCAL_STATE_DIR:-$ROOT/.local}
LOGS="$STATE/logs"
PY="$ROOT/.venv/bin/python"
GRACE=${STOP_GRACE_SECONDS:-7}
APP_PIDS=()
REDIS_PID=""
PG_DATA=""
BIN=""
mkdir -p "$STATE" "$LOGS"

say() { printf 'run-local: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

pg_bin() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_pg() {  # initdb/pg_ctl refuse to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

alive() { kill -0 "$1" 2>/dev/null; }

stop_pids() {  # stop_pids SIGNAL SECONDS PID...: signal, wait up to SECONDS, then SIGKILL
  local sig=$1 secs=$2; shift 2
  local pid deadline=$((SECONDS + secs))
  for pid in "$@"; do kill "-$sig" "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if alive "$pid"; then
      say "process $pid did not stop within ${secs}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
}

cleanup() {
  trap '' INT TERM  # a second Ctrl-C must not cut the stop short (ignored by what we run now, too)
  trap - EXIT
  say "stopping"
  if [ ${#APP_PIDS[@]} -gt 0 ]; then
    # gunicorn's workers too: they hold the listening socket until they are gone
    local children=()
    if command -v pgrep >/dev/null 2>&1; then
      mapfile -t children < <(pgrep -P "${APP_PIDS[0]}" || true)
    fi
    stop_pids INT "$GRACE" "${APP_PIDS[@]}" "${children[@]}"
  fi
  if [ -n "$REDIS_PID" ]; then stop_pids TERM 5 "$REDIS_PID"; fi
  if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    as_pg "$BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 5 stop >/dev/null 2>&1 \
      || as_pg "$BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 5 stop >/dev/null 2>&1 \
      || say "Postgres did not stop; read $LOGS/postgres.log"
  fi
  say "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${DATABASE_URL:-}" ]; then
  BIN=$(pg_bin)
  [ -n "$BIN" ] || fail "no Postgres binaries found; install postgresql or set DATABASE_URL"
  PG_PORT=${LOCAL_PG_PORT:-55432}
  PG_DIR="$STATE/pg"
  if [ ! -f "$PG_DIR/PG_VERSION" ]; then
    say "creating a local Postgres cluster in $PG_DIR"
    mkdir -p "$PG_DIR"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PG_DIR"; fi
    as_pg "$BIN/initdb" -D "$PG_DIR" -U postgres -A trust >"$LOGS/initdb.log" 2>&1 \
      || fail "initdb failed; read $LOGS/initdb.log"
  fi
  touch "$LOGS/postgres.log"
  if [ "$(id -u)" = 0 ]; then chown postgres "$LOGS/postgres.log"; fi
  if as_pg "$BIN/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1; then
    say "a Postgres from an earlier run still uses $PG_DIR; stopping it first"
    as_pg "$BIN/pg_ctl" -D "$PG_DIR" -m fast -w -t 10 stop >/dev/null 2>&1 || true
  fi
  PG_DATA="$PG_DIR"  # from here on, cleanup stops it whatever happens
  as_pg setsid "$BIN/pg_ctl" -D "$PG_DIR" -l "$LOGS/postgres.log" -w -t 30 \
    -o "-c port=$PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp" start >/dev/null 2>&1 \
    || fail "Postgres did not start; read $LOGS/postgres.log"
  "$BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='market_data'" \
    | grep -q 1 || "$BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres market_data
  export DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/market_data"
fi

if [ -z "${REDIS_URL:-}" ]; then
  REDIS_PORT=${LOCAL_REDIS_PORT:-56379}
  mkdir -p "$STATE/redis"
  setsid redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$STATE/redis" --appendonly yes \
    --maxmemory-policy noeviction --save "" >"$LOGS/redis.log" 2>&1 &
  REDIS_PID=$!
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    alive "$REDIS_PID" || break
    sleep 0.1
  done
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || fail "Redis did not start; read $LOGS/redis.log"
fi

export HOST=${HOST:-127.0.0.1}
export PORT=${PORT:-8082}
export REGISTRY_URL=${REGISTRY_URL:-off}
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$STATE/metrics}"
export BACKFILL_SOURCE_DIR="${BACKFILL_SOURCE_DIR:-$STATE/backfill}"
mkdir -p "$BACKFILL_SOURCE_DIR"

"$PY" -m app.manage migrate >"$LOGS/migrate.log" 2>&1 || fail "migrations failed; read $LOGS/migrate.log"

"$ROOT/.venv/bin/gunicorn" -c gunicorn.conf.py &
APP_PIDS+=($!)
"$PY" -m worker &
APP_PIDS+=($!)

# the API answers, or its start failed (its output is above)
for _ in $(seq 300); do
  "$PY" - "$HOST" "$PORT" <<'EOF' && break
import sys, urllib.request
host = sys.argv[1] if sys.argv[1] not in ("0.0.0.0", "::") else "127.0.0.1"
try:
    urllib.request.urlopen(f"http://{host}:{sys.argv[2]}/healthz", timeout=1)
except Exception:
    sys.exit(1)
EOF
  alive "${APP_PIDS[0]}" || fail "the API did not start (its output is above); Postgres log: $LOGS/postgres.log"
  sleep 0.2
done

shown_db=$(printf '%s' "$DATABASE_URL" | sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#')
if [ -n "${ADMIN_TOKEN:-}" ]; then token="from ADMIN_TOKEN"; else token="the default 'iamalive' (export ADMIN_TOKEN=... to change it)"; fi
if [ "$REGISTRY_URL" = off ]; then drift="off (set REGISTRY_URL to the schema registry to turn them on)"; else drift="against $REGISTRY_URL"; fi
cat >&2 <<EOF
run-local: ready
  API            http://$HOST:$PORT   (OpenAPI: /openapi.json; jobs: /jobs)
  token          $token
  DATABASE_URL   $shown_db
  REDIS_URL      $REDIS_URL
  backfill dir   $BACKFILL_SOURCE_DIR   (sources for POST /backfill/bars_ohlcv)
  drift checks   $drift
  logs           $LOGS   (API and worker: this terminal)
  Ctrl-C stops everything.
EOF

wait -n "${APP_PIDS[@]}" || true
say "a process exited on its own; stopping the rest"
