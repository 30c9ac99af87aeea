#!/usr/bin/env bash
# Installs the Python peers that interop tests run against. Idempotent and quiet.
set -euo pipefail
# moto's server mode: the AWS Auto Scaling peer for collector/tests/integration/actuate/cloud.rs.
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
