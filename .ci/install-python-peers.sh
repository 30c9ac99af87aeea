#!/usr/bin/env bash
# Python peers for the interop tests: the OpenTelemetry Python SDK and its OTLP exporters
# (gRPC and HTTP/protobuf), pinned so CI measures against a known SDK. Idempotent and quiet.
set -euo pipefail
python3 -m pip install --quiet --disable-pip-version-check \
  "opentelemetry-sdk==1.45.2" \
  "opentelemetry-exporter-otlp-proto-grpc==1.45.2" \
  "opentelemetry-exporter-otlp-proto-http==1.45.2"
