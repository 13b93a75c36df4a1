#!/usr/bin/env bash
# Analytics benchmark (a funnel and weekly retention): Livora vs DuckDB vs chDB (the ClickHouse engine) on the same generated data,
# with the answers compared. Usage: bench/analytics.sh [EVENTS] [PERSONS] (default 1000000 events,
# a tenth as many persons). The events are generated once and loaded by every engine from the
# same Parquet file.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/livora-target}"
EVENTS="${1:-1000000}"
PERSONS="${2:-$((EVENTS / 10))}"
VENV=.cache/bench-venv
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q 'duckdb==1.*' 'chdb==3.*' >/dev/null
cargo build --release -q -p livora
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$CARGO_TARGET_DIR/release/livora" bench analytics --events "$EVENTS" --persons "$PERSONS" --runs 5 \
    --parquet "$WORK/events.parquet" > "$WORK/livora.json"
"$VENV/bin/python" bench/analytics.py "$WORK/livora.json" "$WORK/events.parquet"
