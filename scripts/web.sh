#!/usr/bin/env bash
# The dashboard (web/: React, TypeScript, Vite).
#
#   scripts/web.sh build   installs its npm modules, regenerates the API types from the
#                          OpenAPI document and builds it into crates/server/dashboard, which
#                          the server embeds (commit the result: building Livora needs no Node)
#   scripts/web.sh check   fails if the committed build or API types are not what the sources
#                          give, or if the types do not check
#   scripts/web.sh test    the component tests (Vitest)
#   scripts/web.sh e2e     the end-to-end tests in Chromium against a running `livora demo`
#                          (scripts/e2e.sh)
set -euo pipefail
cd "$(dirname "$0")/../web"

install() {
    command -v npm >/dev/null || { echo "web: npm not found (Node.js 20+ is needed)" >&2; exit 1; }
    if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
        npm ci --no-audit --no-fund --loglevel=error
    fi
}

case "${1:-build}" in
build)
    install
    npm run --silent api-types
    npm run --silent build
    ;;
check)
    install
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    npx openapi-typescript ../crates/server/src/openapi.json -o "$tmp/schema.d.ts" >/dev/null
    if ! diff -q "$tmp/schema.d.ts" src/api/schema.d.ts >/dev/null; then
        echo "web: src/api/schema.d.ts is not the OpenAPI document's: run scripts/web.sh build" >&2
        exit 1
    fi
    npx tsc --noEmit
    npx vite build --logLevel error --outDir "$tmp/dist" --emptyOutDir
    if ! diff -r "$tmp/dist" ../crates/server/dashboard >/dev/null; then
        diff -r "$tmp/dist" ../crates/server/dashboard | head -5 >&2 || true
        echo "web: crates/server/dashboard is not the build of web/: run scripts/web.sh build" >&2
        exit 1
    fi
    ;;
test)
    install
    npx vitest run
    ;;
e2e)
    install
    exec ../scripts/e2e.sh
    ;;
*)
    echo "usage: scripts/web.sh build|check|test|e2e" >&2
    exit 2
    ;;
esac
