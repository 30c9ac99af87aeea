#!/usr/bin/env bash
# Installs Debian's `prometheus` package for `promtool`, which checks both daemons' /metrics
# (and is the Prometheus server the remote-store tests can talk to). The package's service is
# not started: tests run what they need themselves. Idempotent and quiet.
set -euo pipefail
if ! command -v promtool >/dev/null; then
  apt-get update -qq >/dev/null
  # A policy-rc.d keeps the package's init scripts from starting a server.
  made_policy=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if $made_policy; then rm -f /usr/sbin/policy-rc.d; fi
fi
echo "prometheus peers: ok ($(promtool --version 2>&1 | head -n 1))"
