#!/usr/bin/env bash
# End-to-end tests of the dashboard in a real Chromium (Debian's `chromium` package driven by
# npm's playwright-core; a browser download at install time does not work here), against
# `livora demo` started here on 127.0.0.1 and stopped at the end. Screenshots of every page
# go to $E2E_ARTIFACTS (default target/e2e). `--bench` measures the first load instead.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/livora-target}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
ARTIFACTS="${E2E_ARTIFACTS:-$ROOT/target/e2e}"

if [[ ! -x "$CHROMIUM" ]]; then
    if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
        echo "e2e: installing Debian's chromium" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "e2e: no Chromium at $CHROMIUM: install Debian's chromium package (or set CHROMIUM)" >&2
        exit 1
    fi
fi
(cd web && { [[ -f node_modules/.package-lock.json && node_modules/.package-lock.json -nt package-lock.json ]] \
    || npm ci --no-audit --no-fund --loglevel=error; })

# LIVORA_BIN: a binary already built (bench/dashboard.sh passes the release build).
if [[ -z "${LIVORA_BIN:-}" ]]; then
    cargo build -p livora --locked --quiet
fi
BIN="${LIVORA_BIN:-$CARGO_TARGET_DIR/debug/livora}"
DATA="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# No live traffic: the numbers on screen and the API's answers must be of the same data.
"$BIN" demo --listen "127.0.0.1:$PORT" --data-dir "$DATA" --backfill-days 90 --rate 0 \
    >"$DATA/demo.out" 2>"$DATA/demo.err" &
PID=$!
stop() {
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap stop EXIT
if ! (cd web && node e2e/run.mjs --url "http://127.0.0.1:$PORT" --data-dir "$DATA" \
        --chromium "$CHROMIUM" --out "$ARTIFACTS" "$@"); then
    echo "e2e: failed; the server's log:" >&2
    tail -n 40 "$DATA/demo.err" >&2
    exit 1
fi
