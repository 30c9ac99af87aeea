#!/usr/bin/env bash
# Installs Debian's `etcd-server` package (3.4, the server `etcd`) for the cluster tests:
# leader election and the shared policy ledger run against a real etcd speaking its v3
# gRPC-gateway JSON API (collector/src/cluster/). The package's service is not started: each
# test runs its own etcd on loopback ports with a data directory of its own. Idempotent and
# quiet.
set -euo pipefail
if ! command -v etcd >/dev/null; then
  bash "$(dirname "$0")/apt-install.sh" etcd-server
fi
echo "etcd peers: ok ($(etcd --version 2>&1 | head -n 1))"
