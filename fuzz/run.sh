#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) from its committed corpus.
#
# With cargo-fuzz installed (`cargo install cargo-fuzz`), libFuzzer runs each target under
# AddressSanitizer (stable rustc accepts the nightly flags with RUSTC_BOOTSTRAP=1); new corpus
# entries land in fuzz/corpus/<target>/, crashes in fuzz/artifacts/<target>/ (move a crash to
# fuzz/crashes/<target>/ once fixed: the replay test keeps feeding it). Without cargo-fuzz the
# built-in mutation loop of the test suite runs instead, SECONDS per target, and prints
# executions and crashes per target.
set -euo pipefail
secs="${1:-60}"
cd "$(dirname "$0")/.."
targets=(otlp_protobuf otlp_json selector policy_yaml replay_trace kubeconfig prom_text)
if cargo fuzz --version >/dev/null 2>&1; then
  for t in "${targets[@]}"; do
    echo "== $t ($secs s)"
    RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -timeout=5 2>&1 |
      grep -E '^(#[0-9]+.*DONE|Done|==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)' || true
  done
else
  echo "cargo-fuzz not installed; running the built-in mutation loop ($secs s per target)"
  log="$(mktemp)"
  status=0
  STOKER_FUZZ_SECS="$secs" cargo test -q -p stoker-collector --test integration \
    fuzz_corpus::mutated -- --nocapture >"$log" 2>&1 || status=1
  STOKER_FUZZ_SECS="$secs" cargo test -q -p stoker-agent --test integration \
    prom_text_fuzz::mutated -- --nocapture >>"$log" 2>&1 || status=1
  grep -E '^fuzz |panicked|saved' "$log" || true
  rm -f "$log"
  exit "$status"
fi
