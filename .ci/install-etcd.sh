#!/usr/bin/env bash
# Installs Debian's `etcd-server` package (3.4, the server `etcd`) for the cluster tests:
# leader election and the shared policy ledger run against a real etcd speaking its v3
# gRPC-gateway JSON API (collector/src/cluster/). The package's service is not started: each
# test runs its own etcd on loopback ports with a data directory of its own. Idempotent and
# quiet.
set -euo pipefail
if ! command -v etcd >/dev/null; then
  apt-get update -qq >/dev/null
  # A policy-rc.d keeps the package's init scripts from starting a server.
  made_policy=false
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server \
    >/dev/null
  if $made_policy; then rm -f /usr/sbin/policy-rc.d; fi
fi
echo "etcd peers: ok ($(etcd --version 2>&1 | head -n 1))"
