#!/usr/bin/env bash
# Installs Debian's `prometheus` package for `promtool`, which checks both daemons' /metrics
# (and is the Prometheus server the remote-store tests can talk to). The package's service is
# not started: tests run what they need themselves. Idempotent and quiet.
set -euo pipefail
if ! command -v promtool >/dev/null; then
  bash "$(dirname "$0")/apt-install.sh" prometheus
fi
echo "prometheus peers: ok ($(promtool --version 2>&1 | head -n 1))"
