#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster on loopback.
#
#   scripts/with-postgres.sh cargo test --workspace --locked
#
# Creates a cluster in a temporary directory with initdb, starts it with pg_ctl on a free
# 127.0.0.1 port (Unix sockets off), exports TEST_DATABASE_URL (a superuser URL: tests create
# a fresh database each), runs the command, then always stops the server and deletes the
# directory. The command's exit status is the script's.
#
# Needs PostgreSQL's server binaries (PG_BIN, default /usr/lib/postgresql/15/bin); when they are
# missing and we are root, `apt-get install -y postgresql` installs them. initdb refuses to
# run as root: as root the cluster belongs to the `postgres` user (created by the package).
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 <command> [args...]" >&2
    exit 64
fi

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$PG_BIN/initdb" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "with-postgres: installing PostgreSQL (apt-get install -y postgresql)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >/dev/null \
            || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >/dev/null; }
    fi
    if [ ! -x "$PG_BIN/initdb" ]; then
        found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
        if [ -n "$found" ] && [ -x "$found/initdb" ]; then
            PG_BIN=$found
        else
            echo "with-postgres: no initdb under $PG_BIN; install PostgreSQL or set PG_BIN" >&2
            exit 69
        fi
    fi
fi

# As root, run the server as the unprivileged postgres user.
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    as_owner=(runuser -u postgres --)
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/with-postgres.XXXXXX")
chmod 755 "$dir"
if [ "${#as_owner[@]}" -gt 0 ]; then
    chown postgres "$dir"
fi
data="$dir/data"

cleanup() {
    status=$?
    if [ -f "$data/postmaster.pid" ]; then
        "${as_owner[@]}" "$PG_BIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

"${as_owner[@]}" "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }

# A port can be taken between choosing and binding it: try a few.
started=
for _ in 1 2 3 4 5; do
    port=$(free_port)
    # fsync stays on: the figures measured under this script are durable commits.
    if "${as_owner[@]}" "$PG_BIN/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c max_connections=300 -c shared_buffers=128MB" \
        start >/dev/null; then
        started=1
        break
    fi
done
if [ -z "$started" ]; then
    echo "with-postgres: the server did not start" >&2
    cat "$dir/server.log" >&2 || true
    exit 1
fi

export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
echo "with-postgres: PostgreSQL on 127.0.0.1:$port (TEST_DATABASE_URL exported)" >&2
set +e
"$@"
status=$?
set -e
exit "$status"
