#!/bin/sh
# Policy engine benchmarks: evaluation per tick, 7-day replay, default policies vs HPA/KPA, and
# the same tick over the embedded store and over VictoriaMetrics (PromQL; skipped without
# victoria-metrics: .ci/install-victoria-metrics.sh, or STOKER_VM_BIN).
# Release build; prints its figures.
# Usage: bench/policy/run.sh [eval|replay|stores|quality [DIR]|traces [DIR]]
set -eu
cd "$(dirname "$0")/../.."
exec cargo run --quiet --release -p stoker-collector --example policy-bench -- "$@"
