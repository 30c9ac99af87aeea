#!/usr/bin/env bash
# Installs the OpenTelemetry JS SDK the interop tests use (tests/interop/package.json, pinned by
# its package-lock.json) into tests/interop/node_modules. Needs Node.js and npm: installed from
# Debian's packages when missing. Idempotent and quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error >/dev/null
node -e "require.resolve('@opentelemetry/sdk-metrics', {paths: ['tests/interop']})"
echo "js peers: ok ($(node --version), sdk-metrics $(node -p "require('./tests/interop/node_modules/@opentelemetry/sdk-metrics/package.json').version"))"
