#!/usr/bin/env bash
# Installs the Python peers the interop tests use: the OpenTelemetry Python SDK and its OTLP
# exporters (gRPC and HTTP). Idempotent and quiet.
set -euo pipefail
if python3 -c "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http" 2>/dev/null; then
  exit 0
fi
pip install --quiet --break-system-packages opentelemetry-sdk opentelemetry-exporter-otlp 2>/dev/null \
  || pip install --quiet opentelemetry-sdk opentelemetry-exporter-otlp
