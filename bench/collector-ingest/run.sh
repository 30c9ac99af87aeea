#!/usr/bin/env bash
# Collector ingest benchmark: builds the collector and the bench in release mode, installs
# Prometheus (Debian package) if missing, and runs the fleet simulation against both.
# Usage: bench/collector-ingest/run.sh [--nodes N] [--gpus G] [--rate-secs S] [--flat-secs S] [--prom-flat-secs S]
#        [--nodes-per-request K] [--workers W]
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v prometheus >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null
fi
cargo build --release -q -p stoker-collector --bin stoker-collector --example collector-ingest
exec target/release/examples/collector-ingest --collector-bin target/release/stoker-collector "$@"
