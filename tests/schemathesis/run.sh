#!/usr/bin/env bash
# Schemathesis (PyPI, pinned in requirements.txt) judges the dispatcher's HTTP API against its
# own /openapi.json: build the dispatcher, start it on a free loopback port with a throwaway
# data directory, run Schemathesis's checks over generated valid and invalid requests (no 5xx,
# only documented status codes and content types, responses matching their schemas, auth
# enforced, ...), stop it. Exit status: Schemathesis's.
#
# Every check runs, the data-acceptance ones too (positive_data_acceptance: a schema-valid
# request must be accepted; negative_data_rejection: a schema-violating one refused): the
# document states the server's validation as far as JSON Schema can (see openapi.rs), and
# lists the channels this instance knows. SCHEMATHESIS_EXCLUDE_CHECKS=a,b leaves some out;
# SCHEMATHESIS_SEED and SCHEMATHESIS_MAX_EXAMPLES vary the run.
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
# fail): this run judges the API, not delivery. Breakers of those dead targets queue new tasks
# rather than answer 503 (a documented answer, but one Schemathesis counts as a server error).
DISPATCHER_API_KEYS="$key" "$bin" --listen "127.0.0.1:$port" --data-dir "$work/data" \
    --breaker-open-policy queue \
    >"$work/dispatcher.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

echo "== schemathesis against the dispatcher (http://127.0.0.1:$port)"
status=0
exclude="${SCHEMATHESIS_EXCLUDE_CHECKS-}"
exclude_args=()
if [ -n "$exclude" ]; then
    exclude_args=(--exclude-checks "$exclude")
fi
"$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" \
    --header "Authorization: Bearer $key" \
    --checks all \
    "${exclude_args[@]}" \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
    --seed "${SCHEMATHESIS_SEED:-1}" \
    --no-color \
    --workers 2 || status=$?
if [ "$status" -ne 0 ]; then
    echo "-- dispatcher log (last 40 lines):" >&2
    tail -n 40 "$work/dispatcher.log" >&2
fi
exit "$status"
