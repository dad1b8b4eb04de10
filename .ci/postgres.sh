#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the store tests.
#
#   export ITERFLOW_TEST_POSTGRES_URL="$(bash .ci/postgres.sh start)"
#   bash .ci/postgres.sh stop
#
# `start` (the default) installs the Debian package if no server is installed,
# initdb's a cluster, starts it on 127.0.0.1 on a free port, creates a database,
# and prints its SQLAlchemy URL on stdout (everything else goes to stderr).
# Idempotent: a second `start` finds the running server and prints the same URL.
# The cluster lives in $ITERFLOW_PG_DIR (default /tmp/iterflow-pg) and belongs
# to the `postgres` user when run as root (postgres refuses to run as root).
set -euo pipefail

COMMAND="${1:-start}"
case "$COMMAND" in
    start|stop) ;;
    *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac

PG_DIR="${ITERFLOW_PG_DIR:-/tmp/iterflow-pg}"
DATA="$PG_DIR/data"
DB_NAME="${ITERFLOW_PG_DB:-iterflow_test}"

log() { echo "postgres.sh: $*" >&2; }

find_bin() {
    # The newest installed major version wins.
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$dir" && -x "$dir/postgres" ]]; then
        echo "$dir"
    fi
}

BIN="$(find_bin)"
if [[ "$COMMAND" == stop ]]; then
    if [[ -n "$BIN" && -f "$DATA/PG_VERSION" ]]; then
        if [[ "$(id -u)" == 0 ]]; then
            runuser -u postgres -- "$BIN/pg_ctl" -D "$DATA" -m fast stop >&2 || true
        else
            "$BIN/pg_ctl" -D "$DATA" -m fast stop >&2 || true
        fi
    fi
    exit 0
fi
if [[ -z "$BIN" ]]; then
    log "PostgreSQL is not installed; installing the Debian package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    BIN="$(find_bin)"
    [[ -n "$BIN" ]] || { log "postgresql installed but no server binary found"; exit 1; }
fi

# postgres will not run as root: act as the `postgres` user (created by the
# Debian package) when we are root, as ourselves otherwise.
if [[ "$(id -u)" == 0 ]]; then
    PG_USER=postgres
    as_pg() { runuser -u postgres -- "$@"; }
else
    PG_USER="$(id -un)"
    as_pg() { "$@"; }
fi

mkdir -p "$PG_DIR"
if [[ "$(id -u)" == 0 ]]; then
    chown "$PG_USER" "$PG_DIR"
fi
chmod 700 "$PG_DIR"

if [[ ! -f "$DATA/PG_VERSION" ]]; then
    log "initdb in $DATA"
    # trust auth is fine: the server listens on 127.0.0.1 only and holds test data.
    as_pg "$BIN/initdb" -D "$DATA" -U "$PG_USER" --auth=trust --encoding=UTF8 \
        --locale=C.UTF-8 >&2 || as_pg "$BIN/initdb" -D "$DATA" -U "$PG_USER" \
        --auth=trust --encoding=UTF8 --no-locale >&2
fi

free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

running() { as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

if running && [[ -f "$PG_DIR/port" ]]; then
    PORT="$(cat "$PG_DIR/port")"
    log "server already running on 127.0.0.1:$PORT"
else
    PORT="$(free_port)"
    echo "$PORT" > "$PG_DIR/port"
    log "starting the server on 127.0.0.1:$PORT"
    # The socket goes in our own directory (/var/run/postgresql may not exist or
    # belong to another cluster). fsync off: a test cluster need not survive a
    # power cut, and it makes the suite noticeably faster.
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-p $PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >&2 || { cat "$PG_DIR/server.log" >&2; exit 1; }
fi

psql_cmd() { as_pg "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d postgres -tAq "$@"; }

if [[ "$(psql_cmd -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]]; then
    log "creating database $DB_NAME"
    psql_cmd -c "CREATE DATABASE \"$DB_NAME\"" >&2
fi

echo "postgresql+psycopg://$PG_USER@127.0.0.1:$PORT/$DB_NAME"
