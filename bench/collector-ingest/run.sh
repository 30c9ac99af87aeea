#!/usr/bin/env bash
# Collector ingest benchmark: builds the collector and the bench in release mode, installs
# Prometheus (Debian package) if missing, and runs the fleet simulation against both; with
# VictoriaMetrics installed (.ci/install-victoria-metrics.sh) also against a collector in remote
# mode writing to VictoriaMetrics and against VictoriaMetrics written directly.
# Usage: bench/collector-ingest/run.sh [--nodes N] [--gpus G] [--rate-secs S] [--flat-secs S] [--prom-flat-secs S]
#        [--nodes-per-request K] [--workers W] [--victoria-metrics BIN] [--vm-flat-secs S (0: skip)]
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v prometheus >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null
fi
# VictoriaMetrics for the remote-store figures; without it they are skipped.
if ! command -v victoria-metrics >/dev/null; then
  .ci/install-victoria-metrics.sh || echo "victoria-metrics: not installed; remote-store figures skipped"
fi
cargo build --release -q -p stoker-collector --bin stoker-collector --example collector-ingest
exec target/release/examples/collector-ingest --collector-bin target/release/stoker-collector "$@"
