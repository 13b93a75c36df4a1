#!/usr/bin/env bash
# Analytics benchmark (a funnel and weekly retention): Livora vs DuckDB vs chDB (the ClickHouse engine) on the same generated data,
# with the answers compared. Usage: bench/analytics.sh [EVENTS] [PERSONS] (default 1000000 events,
# a tenth as many persons). The events are generated once and loaded by every engine from the
# same Parquet file. As root, also cold runs (page cache dropped, a new process per engine).
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
    --parquet "$WORK/events.parquet" --image "$WORK/image" > "$WORK/livora.json"
# Cold runs need the page cache dropped, which needs root: each engine opens its data on disk in
# a new process after a drop (Livora maps the column image it kept, as a restarted server does).
if [[ -w /proc/sys/vm/drop_caches ]]; then
    sync
    echo 3 > /proc/sys/vm/drop_caches
    "$CARGO_TARGET_DIR/release/livora" bench analytics --cold "$WORK/image" > "$WORK/livora-cold.json"
    "$VENV/bin/python" bench/analytics.py "$WORK/livora.json" "$WORK/events.parquet" "$WORK"
else
    echo "cold runs skipped: dropping the page cache needs root (/proc/sys/vm/drop_caches)" >&2
    "$VENV/bin/python" bench/analytics.py "$WORK/livora.json" "$WORK/events.parquet"
fi
