#!/usr/bin/env bash
# Runs every test: formatting, lints, unit, property, HTTP integration, crash and SDK tests,
# the dashboard's component and end-to-end tests (in Chromium), and a short fuzzing run.
# Installs what the tests need (the official Segment SDKs) through scripts/test-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/livora-target}"

./scripts/test-deps.sh
# The dashboard: its committed build and API types are what web/ gives; its component tests.
./scripts/web.sh check
./scripts/web.sh test
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The master key in a cloud KMS (Cargo features aws-kms, gcp-kms, azure-kms): AWS against
# moto's local KMS (from test-deps), GCP KMS and Azure Key Vault against local servers that
# speak their REST protocols (tests/cloud_kms.rs).
KMS_FEATURES=aws-kms,gcp-kms,azure-kms
cargo clippy -p livora --features "$KMS_FEATURES" --all-targets --locked -- -D warnings
cargo test -p livora-store --features "$KMS_FEATURES" --locked --lib kms
cargo test -p livora --features "$KMS_FEATURES" --locked --test aws_kms --test cloud_kms
# The dashboard in Chromium against `livora demo` (screenshots in target/e2e).
./scripts/e2e.sh
# A short fuzzing run of the ingestion and query parsers (libFuzzer through cargo fuzz).
./scripts/fuzz.sh 30
