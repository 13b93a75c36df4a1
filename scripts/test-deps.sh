#!/usr/bin/env bash
# Installs what the tests run besides Livora: the official Segment SDKs (SDK compatibility
# tests), DuckDB from PyPI (reads sealed Parquet segments with a reader that is not ours),
# moto from PyPI (a local AWS KMS, for the aws-kms master key test) and s3s-fs (an
# S3-protocol server that checks request signatures, for the object-storage test) and
# aiosmtpd from PyPI (a local SMTP server, for the email channel's test).
#
# Idempotent: a stamp file records the pinned versions; when it matches, this
# script does nothing, so test commands may call it every time.
#
#   LIVORA_TEST_DEPS  install dir (default: <repo root>/.cache/test-deps)
#
# Layout:
#   $LIVORA_TEST_DEPS/venv/                       Python venv: segment-analytics-python, duckdb, moto, aiosmtpd, statsmodels
#   $LIVORA_TEST_DEPS/node/node_modules/          @segment/analytics-node
#   $LIVORA_TEST_DEPS/s3s/bin/s3s-fs              S3 server (cargo install, own target dir)
#   $LIVORA_TEST_DEPS/stamp                       pinned versions
set -euo pipefail

PY_SDK_VERSION="2.4.0"    # PyPI: segment-analytics-python (import segment.analytics)
NODE_SDK_VERSION="3.1.0"  # npm: @segment/analytics-node (needs node >= 20)
DUCKDB_VERSION="1.5.6"    # PyPI: duckdb
S3S_VERSION="0.14.1"      # crates.io: s3s-fs (newer versions need a newer compiler)
MOTO_VERSION="5.1.0"      # PyPI: moto[server] (a local AWS KMS for the aws-kms feature's test)
AIOSMTPD_VERSION="1.4.6"  # PyPI: aiosmtpd (a local SMTP server for the email channel's test)
# PyPI: statsmodels, Holt-Winters beside ours (crates/intel/tests/airpassengers.rs), with the
# numpy/scipy/pandas it works with (statsmodels 0.14 does not import under pandas 3).
STATSMODELS_VERSION="0.14.5"
STATSMODELS_STACK="numpy==2.2.6 scipy==1.15.3 pandas==2.2.3"

SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
DEPS_DIR="${LIVORA_TEST_DEPS:-$REPO_ROOT/.cache/test-deps}"
STAMP="$DEPS_DIR/stamp"
WANT_STAMP="segment-analytics-python==$PY_SDK_VERSION duckdb==$DUCKDB_VERSION moto==$MOTO_VERSION aiosmtpd==$AIOSMTPD_VERSION statsmodels==$STATSMODELS_VERSION $STATSMODELS_STACK @segment/analytics-node@$NODE_SDK_VERSION s3s-fs@$S3S_VERSION"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT_STAMP" \
      && -x "$DEPS_DIR/venv/bin/python" \
      && -d "$DEPS_DIR/node/node_modules/@segment/analytics-node" \
      && -x "$DEPS_DIR/s3s/bin/s3s-fs" ]]; then
    echo "test-deps: up to date in $DEPS_DIR ($WANT_STAMP)"
    exit 0
fi

mkdir -p "$DEPS_DIR"
DEPS_DIR="$(cd "$DEPS_DIR" && pwd)"  # absolute, so the venv works from any cwd
STAMP="$DEPS_DIR/stamp"
rm -f "$STAMP"
LOG="$DEPS_DIR/install.log"
: > "$LOG"

# Run a command with its output going to $LOG; show the log if it fails.
quiet() {
    if ! "$@" >>"$LOG" 2>&1; then
        echo "test-deps: failed: $*" >&2
        cat "$LOG" >&2
        exit 1
    fi
}

# --- Python ---------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || { echo "test-deps: $PYTHON not found" >&2; exit 1; }
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
        echo "test-deps: installing python3-venv" >&2
        quiet apt-get update -qq
        quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    else
        echo "test-deps: python venv/ensurepip missing; install python3-venv" >&2
        exit 1
    fi
fi
if [[ ! -x "$DEPS_DIR/venv/bin/python" ]]; then
    rm -rf "$DEPS_DIR/venv"
    quiet "$PYTHON" -m venv "$DEPS_DIR/venv"
fi
quiet "$DEPS_DIR/venv/bin/python" -m pip install --disable-pip-version-check \
    "segment-analytics-python==$PY_SDK_VERSION" "duckdb==$DUCKDB_VERSION" \
    "moto[server]==$MOTO_VERSION" "aiosmtpd==$AIOSMTPD_VERSION" \
    "statsmodels==$STATSMODELS_VERSION" $STATSMODELS_STACK

# --- Node -----------------------------------------------------------------
command -v node >/dev/null || { echo "test-deps: node not found" >&2; exit 1; }
command -v npm >/dev/null || { echo "test-deps: npm not found" >&2; exit 1; }
mkdir -p "$DEPS_DIR/node"
cat > "$DEPS_DIR/node/package.json" <<JSON
{
  "name": "livora-sdk-test-deps",
  "private": true,
  "version": "0.0.0",
  "dependencies": {
    "@segment/analytics-node": "$NODE_SDK_VERSION"
  }
}
JSON
quiet npm install --prefix "$DEPS_DIR/node" --no-audit --no-fund

# --- s3s-fs ---------------------------------------------------------------
# Its own target dir: a caller's CARGO_TARGET_DIR may be locked by the `cargo test` running us.
if [[ ! -x "$DEPS_DIR/s3s/bin/s3s-fs" ]] || ! "$DEPS_DIR/s3s/bin/s3s-fs" --version 2>/dev/null | grep -q "$S3S_VERSION"; then
    command -v cargo >/dev/null || { echo "test-deps: cargo not found" >&2; exit 1; }
    echo "test-deps: building s3s-fs $S3S_VERSION (about 2-3 minutes)" >&2
    quiet env -u CARGO_TARGET_DIR cargo install "s3s-fs@$S3S_VERSION" --locked --features binary \
        --root "$DEPS_DIR/s3s" --target-dir "$DEPS_DIR/s3s-build"
    rm -rf "$DEPS_DIR/s3s-build"
fi

echo "$WANT_STAMP" > "$STAMP"
echo "test-deps: installed $WANT_STAMP into $DEPS_DIR"
