#!/usr/bin/env bash
# Run keygate in front of a demo upstream on this machine.
#
# Loads .env (or .env.example), starts scripts/demo-upstream.py on
# 127.0.0.1:3000, prints two curl commands to try, then runs keygate in the
# foreground. Ctrl-C stops both; the script exits with keygate's exit code.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_DIR="${BUILD_DIR:-build}"
UPSTREAM_PORT=3000

# Load the environment file, exporting every variable it sets.
env_file=.env
[[ -f "$env_file" ]] || env_file=.env.example
set -a
# shellcheck source=/dev/null
. "./$env_file"
set +a
echo "run-demo: environment loaded from $env_file"

config="${KEYGATE_CONFIG:-config/keygate.yaml}"
keygate="$BUILD_DIR/keygate"

if [[ ! -x "$keygate" ]]; then
  echo "run-demo: $keygate not found; build it first with: make build" >&2
  exit 1
fi
if [[ -z "${DEMO_API_KEY:-}" ]]; then
  echo "run-demo: DEMO_API_KEY is not set in $env_file; $config needs it" >&2
  exit 1
fi

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

if port_open "$UPSTREAM_PORT"; then
  echo "run-demo: 127.0.0.1:$UPSTREAM_PORT is already in use; stop what listens there first" >&2
  exit 1
fi

# Start the demo upstream; stop it whenever this script ends.
upstream_pid=
# shellcheck disable=SC2317  # called by the EXIT trap
stop_upstream() {
  if [[ -n "$upstream_pid" ]]; then
    kill "$upstream_pid" 2>/dev/null || true
    wait "$upstream_pid" 2>/dev/null || true
  fi
}
trap stop_upstream EXIT
python3 scripts/demo-upstream.py "$UPSTREAM_PORT" &
upstream_pid=$!

# Wait until it accepts connections (at most 5 s).
for _ in $(seq 50); do
  port_open "$UPSTREAM_PORT" && break
  if ! kill -0 "$upstream_pid" 2>/dev/null; then
    echo "run-demo: the demo upstream failed to start" >&2
    exit 1
  fi
  sleep 0.1
done
if ! port_open "$UPSTREAM_PORT"; then
  echo "run-demo: the demo upstream did not start listening on 127.0.0.1:$UPSTREAM_PORT" >&2
  exit 1
fi

# Where keygate will listen: KEYGATE_LISTEN if set, else the port in the example config.
listen="${KEYGATE_LISTEN:-0.0.0.0:8080}"
port="${listen##*:}"

cat <<MSG

keygate is starting in front of the demo upstream (127.0.0.1:$UPSTREAM_PORT).
From another terminal, try:

  # With the demo key: 200, and the upstream echoes what keygate forwarded
  # (X-Keygate-Key-Id, X-Keygate-Scopes, X-Forwarded-*, X-Request-Id; no X-API-Key).
  curl -i -H "X-API-Key: $DEMO_API_KEY" http://127.0.0.1:$port/orders/42

  # Without a key: 401 missing_api_key.
  curl -i http://127.0.0.1:$port/orders/42

The admin listener answers /healthz, /readyz and /metrics on port 9090.
Press Ctrl-C to stop keygate and the demo upstream.

MSG

# Run keygate in the foreground; its exit code becomes this script's.
status=0
"$keygate" --config "$config" || status=$?
exit "$status"
