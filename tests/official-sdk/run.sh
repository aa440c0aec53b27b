#!/usr/bin/env bash
# The official DingTalk Stream SDK (PyPI dingtalk-stream, pinned in requirements.txt) judges
# dingtalk-mock: build the mock, start it in TLS mode on a free loopback port, run
# check_mock.py with the SDK in a venv, stop the mock. Exit status: the script's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

venv="${OFFICIAL_SDK_VENV:-$root/target/official-sdk-venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

cargo build --quiet --locked -p dingtalk-mock --bin dingtalk-mock
mock_bin="${CARGO_TARGET_DIR:-$root/target}/debug/dingtalk-mock"

work="$(mktemp -d)"
mock_pid=""
cleanup() {
    if [ -n "$mock_pid" ]; then
        kill "$mock_pid" 2>/dev/null || true
        wait "$mock_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
# Redelivery after 2 s so the script's non-200-ACK check does not wait the default 60 s.
"$mock_bin" --listen "127.0.0.1:$port" --tls --write-ca "$work/ca.pem" \
    --redelivery-after 2 --ping-interval 0 >"$work/mock.log" 2>&1 &
mock_pid=$!

for _ in $(seq 1 100); do
    [ -s "$work/ca.pem" ] && break
    sleep 0.1
done
if [ ! -s "$work/ca.pem" ]; then
    echo "dingtalk-mock did not start:" >&2
    cat "$work/mock.log" >&2
    exit 1
fi

export MOCK="https://127.0.0.1:$port"
export DINGTALK_OPENAPI_ENDPOINT="$MOCK"
# The mock's throwaway CA, for requests (REQUESTS_CA_BUNDLE) and for ssl/websockets/aiohttp
# (SSL_CERT_FILE): TLS is verified as against the real cloud.
export REQUESTS_CA_BUNDLE="$work/ca.pem"
export SSL_CERT_FILE="$work/ca.pem"
echo "== official dingtalk-stream SDK against dingtalk-mock ($MOCK)"
status=0
"$venv/bin/python" "$here/check_mock.py" || status=$?
if [ "$status" -ne 0 ]; then
    echo "-- mock log (last 50 lines):" >&2
    tail -n 50 "$work/mock.log" >&2
fi
exit "$status"
