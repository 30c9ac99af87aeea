#!/usr/bin/env bash
# Installs Debian's `victoria-metrics` package (1.79, the single-node server `victoria-metrics`)
# for the remote-store tests: a second Prometheus-compatible store besides Prometheus, taking
# remote-write on /api/v1/write and answering PromQL (MetricsQL) on /api/v1/query. The package's
# service is not started: tests run the server themselves on loopback. Idempotent and quiet.
set -euo pipefail
if ! command -v victoria-metrics >/dev/null; then
  bash "$(dirname "$0")/apt-install.sh" victoria-metrics
fi
# Debian's build leaves `-version` (and vm_app_version) empty: the package's version says it.
echo "victoria-metrics peers: ok ($(dpkg-query -W -f='${Version}' victoria-metrics))"
