#!/usr/bin/env bash
# Load benchmark of the agent's inference room: services pushing 1,000 requests/s of spans and
# metrics over OTLP/gRPC (agent CPU % of one core and RSS growth), then a ramp of span rates
# to find where the agent starts shedding (RESOURCE_EXHAUSTED, counted, never blocking).
# The agent and the load generator are separate processes; both use loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release -p stoker-agent --example inference_load
bin=target/release/examples/inference_load
out=$(mktemp)
"$bin" agent >"$out" 2>&1 &
agent_pid=$!
trap 'kill -INT $agent_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q '^READY' "$out" && break; sleep 0.1; done
read -r _ grpc _http < <(grep '^READY' "$out")
echo "agent pid $agent_pid, OTLP gRPC on $grpc"
"$bin" load "$agent_pid" "$grpc"
kill -INT "$agent_pid"
wait "$agent_pid" || true
trap - EXIT
grep 'agent stats' "$out" || true
rm -f "$out"
