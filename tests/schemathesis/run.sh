#!/usr/bin/env bash
# Schemathesis (PyPI, pinned in requirements.txt) judges the dispatcher's HTTP API against its
# own /openapi.json: build the dispatcher, start it on a free loopback port with a throwaway
# data directory, run Schemathesis's checks over generated valid and invalid requests (no 5xx,
# only documented status codes and content types, responses matching their schemas, auth
# enforced, ...), stop it. Exit status: Schemathesis's.
#
# The two data-acceptance checks are left out by default (SCHEMATHESIS_EXCLUDE_CHECKS= runs
# them): the validation the server does (non-blank text, http(s) URLs that pass the SSRF guard,
# webhook_url-or-channel, the 60 KiB evidence limit) is richer than JSON Schema can state, so a
# schema-valid body may still be refused with a 400 naming the field, and the reverse.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

venv="${SCHEMATHESIS_VENV:-$root/target/schemathesis-venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

cargo build --quiet --locked -p dispatcher --bin dispatcher
bin="${CARGO_TARGET_DIR:-$root/target}/debug/dispatcher"

work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
key="schemathesis-test-key-0123456789"
# Deliveries go nowhere reachable (the generated webhook URLs are refused by the SSRF guard or
# fail): this run judges the API, not delivery.
DISPATCHER_API_KEYS="$key" "$bin" --listen "127.0.0.1:$port" --data-dir "$work/data" \
    >"$work/dispatcher.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

echo "== schemathesis against the dispatcher (http://127.0.0.1:$port)"
status=0
exclude="${SCHEMATHESIS_EXCLUDE_CHECKS-positive_data_acceptance,negative_data_rejection}"
exclude_args=()
if [ -n "$exclude" ]; then
    exclude_args=(--exclude-checks "$exclude")
fi
"$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" \
    --header "Authorization: Bearer $key" \
    --checks all \
    "${exclude_args[@]}" \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
    --seed 1 \
    --no-color \
    --workers 2 || status=$?
if [ "$status" -ne 0 ]; then
    echo "-- dispatcher log (last 40 lines):" >&2
    tail -n 40 "$work/dispatcher.log" >&2
fi
exit "$status"
