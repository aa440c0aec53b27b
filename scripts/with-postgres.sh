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
# TLS only, by default: a throwaway CA (openssl) signs a server certificate for `localhost`
# alone (not 127.0.0.1, so a test can connect by address and see verify-full refuse it), the
# server runs with ssl=on, and pg_hba.conf has `hostssl` lines only, so a plaintext connection
# is refused. TEST_DATABASE_URL is then
#   postgres://postgres@localhost:PORT/postgres?sslmode=verify-full&sslrootcert=CA
# so every PostgreSQL test runs over verified TLS. Also exported: TEST_DATABASE_PORT,
# TEST_DATABASE_CA (the CA's certificate), and TEST_DATABASE_CLIENT_CERT / _KEY, a client
# certificate for the role `workflow_tls_client`, which may log in with it only (`cert`
# authentication; the role itself is created by the test that uses it).
# WITH_POSTGRES_TLS=0 gives the plaintext server of before (TEST_DATABASE_URL on 127.0.0.1,
# no TEST_DATABASE_CA).
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

tls=${WITH_POSTGRES_TLS:-1}
tls_options=
if [ "$tls" = 1 ]; then
    # The CA and the client's files are read by the tests (this user); the server's key only
    # by the server, which refuses a key others can read.
    pki="$dir/tls"
    mkdir -m 755 "$pki"
    openssl_quiet() { openssl "$@" 2>>"$pki/openssl.log" || { cat "$pki/openssl.log" >&2; exit 1; }; }
    openssl_quiet req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=with-postgres throwaway CA" -keyout "$pki/ca.key" -out "$pki/ca.crt" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    issue() { # name subject extensions: a key and a certificate signed by the CA
        openssl_quiet req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr"
        printf '%s\n' "$3" >"$pki/$1.ext"
        openssl_quiet x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
            -CAcreateserial -days 2 -extfile "$pki/$1.ext" -out "$pki/$1.crt"
    }
    # Only the name: connecting to 127.0.0.1 with verify-full must fail.
    issue server "/CN=localhost" "subjectAltName=DNS:localhost
extendedKeyUsage=serverAuth"
    issue client "/CN=workflow_tls_client" "extendedKeyUsage=clientAuth"
    chmod 600 "$pki/server.key"
    if [ "${#as_owner[@]}" -gt 0 ]; then
        chown postgres "$pki/server.key" "$pki/server.crt"
    fi
    # First match wins: the certificate role by certificate only, everyone else over TLS.
    # No `host` line, so a connection without TLS finds no entry and is refused.
    cat >"$data/pg_hba.conf" <<'HBA'
hostssl all workflow_tls_client 127.0.0.1/32 cert
hostssl all all 127.0.0.1/32 trust
HBA
    tls_options="-c ssl=on -c ssl_cert_file=$pki/server.crt -c ssl_key_file=$pki/server.key -c ssl_ca_file=$pki/ca.crt"
fi

# A port can be taken between choosing and binding it: try a few.
started=
for _ in 1 2 3 4 5; do
    port=$(free_port)
    # fsync stays on: the figures measured under this script are durable commits.
    if "${as_owner[@]}" "$PG_BIN/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c max_connections=300 -c shared_buffers=128MB $tls_options" \
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

export TEST_DATABASE_PORT=$port
if [ "$tls" = 1 ]; then
    # localhost is the name the certificate holds (and resolves to 127.0.0.1).
    export TEST_DATABASE_URL="postgres://postgres@localhost:$port/postgres?sslmode=verify-full&sslrootcert=$pki/ca.crt"
    export TEST_DATABASE_CA="$pki/ca.crt"
    export TEST_DATABASE_CLIENT_CERT="$pki/client.crt" TEST_DATABASE_CLIENT_KEY="$pki/client.key"
    echo "with-postgres: PostgreSQL on localhost:$port, TLS only (TEST_DATABASE_URL exported)" >&2
else
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    echo "with-postgres: PostgreSQL on 127.0.0.1:$port (TEST_DATABASE_URL exported)" >&2
fi
set +e
"$@"
status=$?
set -e
exit "$status"
