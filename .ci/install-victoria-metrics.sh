#!/usr/bin/env bash
# Installs Debian's `victoria-metrics` package (1.79, the single-node server `victoria-metrics`)
# for the remote-store tests: a second Prometheus-compatible store besides Prometheus, taking
# remote-write on /api/v1/write and answering PromQL (MetricsQL) on /api/v1/query. The package's
# service is not started: tests run the server themselves on loopback. Idempotent and quiet.
set -euo pipefail
if ! command -v victoria-metrics >/dev/null; then
  apt-get update -qq >/dev/null
  # A policy-rc.d keeps the package's init scripts from starting a server.
  made_policy=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends victoria-metrics \
    >/dev/null
  if $made_policy; then rm -f /usr/sbin/policy-rc.d; fi
fi
# Debian's build leaves `-version` (and vm_app_version) empty: the package's version says it.
echo "victoria-metrics peers: ok ($(dpkg-query -W -f='${Version}' victoria-metrics))"
