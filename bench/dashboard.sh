#!/usr/bin/env bash
# The dashboard's first load: the overview page's time to interactive on localhost (from a
# reload to the KPIs and the revenue chart drawn, a fresh browser context each run, median
# of 7) against the release build of `livora demo` with its 90 days of demo data, and the
# JavaScript and CSS it loads, gzipped. See BENCHMARKS.md "Dashboard".
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/livora-target}"
cargo build --release -p livora --locked --quiet
LIVORA_BIN="$CARGO_TARGET_DIR/release/livora" exec ./scripts/e2e.sh --bench "$@"
