#!/usr/bin/env bash
# Agent overhead: stoker-agent sampling the host and 8 fake GPUs every second, exporting to a
# local OTLP sink, against Prometheus node_exporter scraped once a second, in the same run.
# Prints CPU seconds and peak RSS of both and their ratio.
#
#   bench/agent-overhead.sh [--seconds N] [--gpus N]      (default 300 s, 8 GPUs)
#
# Opt-in, not part of CI: it installs prometheus-node-exporter with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TO_RUN=300
GPUS=8
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_TO_RUN="$2"; shift 2 ;;
    --gpus) GPUS="$2"; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--gpus N]" >&2; exit 64 ;;
  esac
done

NODE_EXPORTER=$(command -v prometheus-node-exporter || command -v node_exporter || true)
if [ -z "$NODE_EXPORTER" ]; then
  echo "installing prometheus-node-exporter..." >&2
  (apt-get install -y -qq prometheus-node-exporter >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq prometheus-node-exporter >/dev/null; })
  NODE_EXPORTER=$(command -v prometheus-node-exporter)
fi

cargo build --release --quiet -p fake-nvml
cargo build --release --quiet -p stoker-agent --bin stoker-agent --example otlp_sink
TARGET=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The fake NVML script: $GPUS devices with realistic readings and two processes each.
{
  echo '{"driver_version": "550.54.15", "devices": ['
  for i in $(seq 0 $((GPUS - 1))); do
    [ "$i" -gt 0 ] && echo ','
    printf '{"uuid": "GPU-bench-%04d", "name": "NVIDIA H100 80GB HBM3", "readings": [' "$i"
    printf '{"at_s": 0, "gpu_util": %d, "mem_util": 30, "enc_util": 0, "dec_util": 0,' $((40 + i))
    printf ' "memory_used": 42949672960, "memory_total": 85899345920, "power_mw": 350000,'
    printf ' "power_limit_mw": 700000, "energy_mj": 987654321, "temperature_c": 62,'
    printf ' "sm_clock_mhz": 1980, "throttle_reasons": 0, "pcie_tx_kbps": 1000, "pcie_rx_kbps": 2000,'
    printf ' "ecc_corrected": 0, "ecc_uncorrected": 0, "processes": ['
    printf '{"pid": %d, "used_memory": 21474836480, "sm_util": 40},' $((10000 + i))
    printf '{"pid": %d, "used_memory": 1073741824, "sm_util": 2}]}]}' $((20000 + i))
  done
  echo ']}'
} > "$WORK/gpus.json"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SINK_PORT=$(port)
NE_PORT=$(port)

"$TARGET/examples/otlp_sink" --listen "127.0.0.1:$SINK_PORT" > "$WORK/sink.out" 2> "$WORK/sink.err" &
SINK=$!; PIDS+=("$SINK")
"$NODE_EXPORTER" --web.listen-address="127.0.0.1:$NE_PORT" > "$WORK/ne.log" 2>&1 &
NE=$!; PIDS+=("$NE")
FAKE_NVML_SCRIPT="$WORK/gpus.json" RUST_LOG=warn "$TARGET/stoker-agent" \
  --interval 1s --collector "http://127.0.0.1:$SINK_PORT" \
  --nvml-lib "$TARGET/libfake_nvml.so" > "$WORK/agent.log" 2>&1 &
AGENT=$!; PIDS+=("$AGENT")

sleep 1
# node_exporter's cost includes being scraped: once a second, as Prometheus would.
(
  end=$((SECONDS + SECONDS_TO_RUN))
  while [ $SECONDS -lt $end ]; do
    curl -s -o /dev/null "http://127.0.0.1:$NE_PORT/metrics" || true
    sleep 1
  done
) &
SCRAPER=$!; PIDS+=("$SCRAPER")
echo "running for ${SECONDS_TO_RUN}s: agent pid $AGENT ($GPUS fake GPUs), node_exporter pid $NE" >&2
wait "$SCRAPER" || true

cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
for p in "$AGENT" "$NE"; do
  kill -0 "$p" 2>/dev/null || { echo "process $p died; agent log:" >&2; cat "$WORK/agent.log" >&2; exit 1; }
done
A_CPU=$(cpu_s "$AGENT"); A_RSS=$(hwm_kib "$AGENT")
N_CPU=$(cpu_s "$NE"); N_RSS=$(hwm_kib "$NE")
kill -TERM "$AGENT"; wait "$AGENT" || true
kill -TERM "$SINK"; wait "$SINK" || true
POINTS=$(awk '/^requests/ {print $4}' "$WORK/sink.out")

awk -v s="$SECONDS_TO_RUN" -v g="$GPUS" -v ac="$A_CPU" -v ar="$A_RSS" -v nc="$N_CPU" -v nr="$N_RSS" -v pts="$POINTS" 'BEGIN {
  printf "agent overhead, %d s at 1 s sampling, %d fake GPUs (points exported: %s)\n", s, g, pts
  printf "%-28s %12s %14s\n", "", "CPU seconds", "peak RSS MiB"
  printf "%-28s %12.2f %14.1f\n", "stoker-agent", ac, ar / 1024
  printf "%-28s %12.2f %14.1f\n", "node_exporter (1 s scrape)", nc, nr / 1024
  printf "%-28s %12.2f %14.2f\n", "ratio agent/node_exporter", (nc > 0 ? ac / nc : 0), (nr > 0 ? ar / nr : 0)
  printf "targets: agent peak RSS <= 15 MiB (%s), agent CPU <= node_exporter CPU (%s)\n",
    (ar / 1024 <= 15 ? "met" : "NOT met"), (ac <= nc ? "met" : "NOT met")
}'
