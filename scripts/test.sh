#!/usr/bin/env bash
# Runs every test: formatting, lints, unit, property, HTTP integration, crash and SDK tests,
# and a short fuzzing run.
# Installs what the tests need (the official Segment SDKs) through scripts/test-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/livora-target}"

./scripts/test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The AWS KMS master key (Cargo feature aws-kms) against a local KMS (moto, from test-deps).
cargo clippy -p livora --features aws-kms --all-targets --locked -- -D warnings
cargo test -p livora --features aws-kms --locked --test aws_kms
# A short fuzzing run of the ingestion and query parsers (libFuzzer through cargo fuzz).
./scripts/fuzz.sh 30
