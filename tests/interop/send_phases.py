"""Sends phases of histogram observations with the OpenTelemetry Python SDK (default cumulative
temporality), one export per phase. Used by the workspace tests in tests/integration/real_clients.rs.

argv[1] is a JSON object: {"endpoint": "http://127.0.0.1:PORT", "service": "...",
"resource": {...extra resource attributes}, "bounds": [...], "phases": [[values], ...],
"pause": seconds between phases}.
"""
import json
import sys
import time

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource

spec = json.loads(sys.argv[1])
exporter = OTLPMetricExporter(endpoint=spec["endpoint"] + "/v1/metrics")
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
views = [
    View(
        instrument_name="inference.request.duration",
        aggregation=ExplicitBucketHistogramAggregation(spec["bounds"]),
    ),
    View(
        instrument_name="inference.queue.duration",
        aggregation=ExponentialBucketHistogramAggregation(),
    ),
]
attrs = {"service.name": spec["service"], **spec.get("resource", {})}
provider = MeterProvider(metric_readers=[reader], resource=Resource.create(attrs), views=views)
meter = provider.get_meter("stoker-interop")
explicit = meter.create_histogram("inference.request.duration", unit="s")
exponential = meter.create_histogram("inference.queue.duration", unit="s")
for i, phase in enumerate(spec["phases"]):
    if i > 0:
        time.sleep(spec.get("pause", 0))
    for v in phase:
        explicit.record(v, {"model.name": spec["service"]})
        exponential.record(v, {"model.name": spec["service"]})
    assert provider.force_flush(10_000), "flush failed"
provider.shutdown()
