#!/usr/bin/env bash
# Installs Debian's `faketime` (libfaketime), which the clock-jump test preloads into the real
# collector to move its wall clock while it runs (collector/tests/integration/clock_jump.rs).
# Idempotent and quiet.
set -euo pipefail
if ! ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends faketime >/dev/null
fi
echo "faketime: ok ($(ls /usr/lib/*/faketime/libfaketimeMT.so.1))"
