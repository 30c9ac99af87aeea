#!/usr/bin/env bash
# Installs the Python peers that interop tests use: the OpenTelemetry Python SDK with its OTLP
# exporters (gRPC and HTTP), and moto's server mode for the AWS Auto Scaling API.
# Idempotent and quiet; safe to run on every CI run.
set -euo pipefail
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  'opentelemetry-sdk>=1.27' 'opentelemetry-exporter-otlp>=1.27' 'moto[server]>=5' \
  >/dev/null
python3 -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http, moto'
echo "python peers: ok"
