#!/usr/bin/env bash
# Start, stop or query a throwaway PostgreSQL server on loopback, from Debian's packages.
#
# Installs the `postgresql` package when its binaries are missing (apt-get; root or sudo),
# creates a cluster with initdb in a run folder on the first start, and starts it on a
# loopback port with trust authentication for local connections only.  PostgreSQL refuses to
# run as root, so as root the server runs as the `postgres` user the package creates (the run
# folder is then owned by it).  Quick and idempotent when it is already set up or running.
#
#   scripts/postgres.sh start|stop|status|url|ensure
#
# Environment (all optional):
#   PG_PORT      port on 127.0.0.1                    (default 15432)
#   PG_RUN_DIR   data, log and socket folder          (default .run/postgres; as root:
#                /tmp/marquee-postgres-<port>, since the server's user must own it)
#   PG_DB        database created on the first start  (default marquee)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${PG_PORT:-15432}"
DB="${PG_DB:-marquee}"
if [[ "$(id -u)" == 0 ]]; then
  RUN="${PG_RUN_DIR:-/tmp/marquee-postgres-$PORT}"
  AS=(runuser -u postgres --)
  USER_NAME=postgres
else
  RUN="${PG_RUN_DIR:-$ROOT/.run/postgres}"
  AS=()
  USER_NAME="$(id -un)"
fi
DATA="$RUN/data"
LOG="$RUN/postgres.log"

log() { echo "postgres.sh: $*" >&2; }

bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n "$d" && -x "$d/initdb" ]] && echo "$d"
}

ensure() {
  if [[ -n "$(bindir)" ]]; then return 0; fi
  log "installing Debian's postgresql package"
  local sudo=""; [[ "$(id -u)" == 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  # The package's own cluster is not ours: keep it from holding port 5432.
  $sudo service postgresql stop >/dev/null 2>&1 || true
  [[ -n "$(bindir)" ]] || { log "postgresql binaries not found after install"; exit 1; }
}

is_running() {
  local bin; bin="$(bindir)" || return 1
  [[ -f "$DATA/postmaster.pid" ]] && "${AS[@]}" "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

url() { echo "postgresql+psycopg://$USER_NAME@127.0.0.1:$PORT/$DB"; }

start() {
  ensure
  local bin; bin="$(bindir)"
  if is_running; then log "already running on 127.0.0.1:$PORT"; url; return 0; fi
  mkdir -p "$RUN"
  if [[ "$(id -u)" == 0 ]]; then chown postgres:postgres "$RUN"; chmod 700 "$RUN"; fi
  if [[ ! -f "$DATA/PG_VERSION" ]]; then
    "${AS[@]}" "$bin/initdb" -D "$DATA" -U "$USER_NAME" --auth=trust -E UTF8 --no-locale -N >/dev/null
  fi
  "${AS[@]}" "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $RUN -c fsync=off -c max_connections=50" start >/dev/null
  if ! "${AS[@]}" "$bin/psql" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" -d postgres -Atqc \
      "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    "${AS[@]}" "$bin/createdb" -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" "$DB"
  fi
  log "running on 127.0.0.1:$PORT (data in $DATA)"
  url
}

stop() {
  local bin; bin="$(bindir)" || return 0
  if is_running; then
    "${AS[@]}" "$bin/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    log "stopped"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if is_running; then echo "running on 127.0.0.1:$PORT"; else echo "stopped"; exit 3; fi ;;
  url) url ;;
  ensure) ensure ;;
  *) echo "usage: $0 start|stop|status|url|ensure" >&2; exit 2 ;;
esac
