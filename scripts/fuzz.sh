#!/usr/bin/env bash
# Runs the fuzz targets (cargo fuzz, libFuzzer) for SECONDS each (default 30): the ingestion
# parser and the query parser. Installs cargo-fuzz if missing. cargo fuzz needs nightly
# compiler flags; RUSTC_BOOTSTRAP lets the pinned stable toolchain accept them.
#   scripts/fuzz.sh            # the short run CI does
#   scripts/fuzz.sh 3600       # the longer run (see README, Security)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-30}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/livora-target}/fuzz"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi
corpus_root=".cache/fuzz-corpus"
for target in ingest_parse query_parse; do
    mkdir -p "$corpus_root/$target"
    seeds="fuzz/seeds/$target"
    echo "fuzz: $target for ${SECONDS_EACH}s"
    cargo fuzz run --fuzz-dir fuzz "$target" "$corpus_root/$target" "$seeds" -- \
        -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 -print_final_stats=1 \
        2>&1 | tail -n 25
done
