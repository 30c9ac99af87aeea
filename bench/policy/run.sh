#!/bin/sh
# Policy engine benchmarks: evaluation per tick, 7-day replay, default policies vs HPA/KPA.
# Release build; prints its figures. Usage: bench/policy/run.sh [eval|replay|quality [DIR]|traces [DIR]]
set -eu
cd "$(dirname "$0")/../.."
exec cargo run --quiet --release -p stoker-collector --example policy-bench -- "$@"
