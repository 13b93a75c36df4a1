#!/usr/bin/env bash
# Runs every test: formatting, lints, unit, property, HTTP integration, crash and SDK tests,
# the dashboard's component and end-to-end tests (in Chromium), and a short fuzzing run.
# Installs what the tests need (the official Segment SDKs) through scripts/test-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/livora-target}"

# A target dir shared between checkouts keeps every checkout's test binaries (each path gets
# its own hashes) and incremental state; a full disk fails the build halfway. Below 20 GB free,
# drop the incremental state and workspace executables not touched in the last hour (cargo
# rebuilds whatever it still needs), and say so.
mkdir -p "$CARGO_TARGET_DIR"
free_gb=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR==2 { print int($4 / 1048576) }')
if [ "$free_gb" -lt 20 ]; then
  echo "test.sh: only ${free_gb} GB free under $CARGO_TARGET_DIR; pruning old build artifacts"
  rm -rf "$CARGO_TARGET_DIR/debug/incremental"
  if [ -d "$CARGO_TARGET_DIR/debug/deps" ]; then
    find "$CARGO_TARGET_DIR/debug/deps" -maxdepth 1 -type f -mmin +60 \
      \( ! -name '*.*' -o -name 'liblivora_*' -o -name 'livora_*' \) -delete
  fi
  free_gb=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR==2 { print int($4 / 1048576) }')
  echo "test.sh: ${free_gb} GB free after pruning"
fi

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
