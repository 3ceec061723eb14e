#!/usr/bin/env bash
# Run market-data-store locally: the API (gunicorn) and one worker, in the foreground.
#
# Uses DATABASE_URL and REDIS_URL when they are set. Otherwise starts a Postgres cluster
# and a Redis server of its own from the installed binaries, with their data under
# .local/ (ignored by git). Applies the migrations, then runs until Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE="$ROOT/.local"
PY="$ROOT/.venv/bin/python"
PIDS=()
PG_DATA=""
mkdir -p "$STATE"

say() { printf 'run-local: %s\n' "$*" >&2; }

pg_bin() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_pg() {  # initdb/pg_ctl refuse to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
  trap - INT TERM EXIT
  say "stopping"
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$PG_DATA" ]; then as_pg "$BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true; fi
}
trap cleanup INT TERM EXIT

if [ -z "${DATABASE_URL:-}" ]; then
  BIN=$(pg_bin)
  [ -n "$BIN" ] || { say "no Postgres binaries found; install postgresql or set DATABASE_URL"; exit 1; }
  PG_PORT=${LOCAL_PG_PORT:-55432}
  PG_DATA="$STATE/pg"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    say "creating a local Postgres cluster in $PG_DATA"
    mkdir -p "$PG_DATA"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DATA"
    as_pg "$BIN/initdb" -D "$PG_DATA" -U postgres -A trust >/dev/null
  fi
  as_pg "$BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w \
    -o "-c port=$PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp" start >/dev/null
  "$BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='market_data'" \
    | grep -q 1 || "$BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres market_data
  export DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/market_data"
  say "Postgres on 127.0.0.1:$PG_PORT"
fi

if [ -z "${REDIS_URL:-}" ]; then
  REDIS_PORT=${LOCAL_REDIS_PORT:-56379}
  mkdir -p "$STATE/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$STATE/redis" --appendonly yes \
    --maxmemory-policy noeviction --save "" >"$STATE/redis/server.log" 2>&1 &
  PIDS+=($!)
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  say "Redis on 127.0.0.1:$REDIS_PORT"
fi

export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$STATE/metrics}"
export BACKFILL_SOURCE_DIR="${BACKFILL_SOURCE_DIR:-$STATE/backfill}"
mkdir -p "$BACKFILL_SOURCE_DIR"
"$PY" -m app.manage migrate
"$ROOT/.venv/bin/gunicorn" -c gunicorn.conf.py & PIDS+=($!)
"$PY" -m worker & PIDS+=($!)
say "API on http://127.0.0.1:${PORT:-8082} — Ctrl-C stops everything"
wait -n "${PIDS[@]}" || true
