#!/bin/sh
# Cluster benchmarks: leader takeover after kill -9 among real release collectors on one etcd,
# and the leader's policy tick with the ledger in etcd against the embedded one. Builds the
# collector binary first (the takeover starts it); etcd is `.ci/install-etcd.sh`.
# Release build; prints its figures.
# Usage: bench/cluster/run.sh [takeover|ledger|all] [--kills N] [--ttl S] [--members N]
#        [--ticks N] [--collector-bin PATH] [--etcd BIN]
set -eu
cd "$(dirname "$0")/../.."
cargo build --quiet --release -p stoker-collector --bin stoker-collector
exec cargo run --quiet --release -p stoker-collector --example cluster-bench -- "$@"
