#!/usr/bin/env bash
# Hardware check for a machine with an NVIDIA GPU and driver (run by hand, not in CI):
# builds the agent in release, runs it for ~20 s against the real libnvidia-ml.so.1, exporting
# to a loopback OTLP sink and serving /metrics, then prints the GPU series both saw and the
# agent's log. Exits non-zero if no GPU series arrived.
#
#   bench/gpu-check.sh [--seconds N] [--nvml-lib PATH]      (default 20 s, libnvidia-ml.so.1)
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_SECONDS=20
NVML_LIB=libnvidia-ml.so.1
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) RUN_SECONDS="$2"; shift 2 ;;
    --nvml-lib) NVML_LIB="$2"; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--nvml-lib PATH]" >&2; exit 64 ;;
  esac
done

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,uuid,name,driver_version,utilization.gpu,memory.used,power.draw,temperature.gpu --format=csv || true

# On a machine without a Rust toolchain, carry prebuilt target/release binaries instead.
if command -v cargo >/dev/null; then
  cargo build --release --quiet -p stoker-agent --bin stoker-agent --example otlp_sink
fi
TARGET=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

SINK_PORT=14417
METRICS_PORT=19464
"$TARGET/examples/otlp_sink" --listen "127.0.0.1:$SINK_PORT" --show hw. > "$WORK/sink.out" 2>&1 &
SINK=$!
sleep 0.5
RUST_LOG=info "$TARGET/stoker-agent" --interval 1s --collector "http://127.0.0.1:$SINK_PORT" \
  --nvml-lib "$NVML_LIB" --metrics-listen "127.0.0.1:$METRICS_PORT" > "$WORK/agent.log" 2>&1 &
AGENT=$!
sleep "$RUN_SECONDS"

echo "=== /metrics: GPU and per-process GPU series"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^(hw_|gpu_|process_gpu_)' || echo "(none)"
echo "=== agent peak RSS: $(awk '/^VmHWM/ {print $2, $3}' /proc/$AGENT/status), CPU s: $(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' /proc/$AGENT/stat)"
kill -TERM "$AGENT"; wait "$AGENT" || true
kill -TERM "$SINK"; wait "$SINK" || true
echo "=== OTLP sink: hw.* series (last values)"
cat "$WORK/sink.out"
echo "=== agent log"
cat "$WORK/agent.log"
grep -q '^hw\.gpu\.utilization' "$WORK/sink.out" || { echo "FAIL: no hw.gpu.utilization arrived" >&2; exit 1; }
echo "OK: GPU series arrived over OTLP"
