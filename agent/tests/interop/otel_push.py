"""Push known metrics and spans to a Stoker agent with the OpenTelemetry Python SDK.

Usage: otel_push.py grpc|http ENDPOINT [gzip]   (ENDPOINT like http://127.0.0.1:4317)

Records exactly what agent/tests/integration/inference.rs asserts: request-duration and
confidence histograms with explicit millisecond buckets, class and feedback counters,
an `http.server.request.duration` histogram (mapped by the agent), and server spans with
fixed start and end times. Exits non-zero if a flush fails.
"""

import sys
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

protocol, endpoint = sys.argv[1], sys.argv[2]
gzip = len(sys.argv) > 3 and sys.argv[3] == "gzip"
if protocol == "grpc":
    from grpc import Compression
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    compression = Compression.Gzip if gzip else Compression.NoCompression
    metric_exporter = OTLPMetricExporter(endpoint=endpoint, insecure=True, timeout=10, compression=compression)
    span_exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=10, compression=compression)
else:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    compression = Compression.Gzip if gzip else Compression.NoCompression
    metric_exporter = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics", timeout=10, compression=compression)
    span_exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces", timeout=10, compression=compression)

resource = Resource.create({"service.name": "resnet-svc", "host.name": "container-1"})
reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
meters = MeterProvider(resource=resource, metric_readers=[reader])
tracers = TracerProvider(resource=resource)
tracers.add_span_processor(BatchSpanProcessor(span_exporter))

meter = meters.get_meter("resnet-svc")
latency_buckets = [0.005, 0.01, 0.025, 0.05, 0.1]
model = {"model.name": "resnet", "model.version": "3"}

latency = meter.create_histogram(
    "inference.request.duration", unit="s", explicit_bucket_boundaries_advisory=latency_buckets
)
for v in [0.003, 0.007, 0.007, 0.02, 0.2]:
    latency.record(v, model)

http_latency = meter.create_histogram(
    "http.server.request.duration", unit="s", explicit_bucket_boundaries_advisory=latency_buckets
)
http_latency.record(0.012, model)

confidence = meter.create_histogram(
    "inference.prediction.confidence", unit="1",
    explicit_bucket_boundaries_advisory=[0.5, 0.7, 0.9, 0.95, 0.99],
)
for v in [0.96, 0.98, 0.6, 0.999, 0.92]:
    confidence.record(v, model)

classes = meter.create_counter("inference.prediction.class", unit="{prediction}")
for c in ["cat", "cat", "cat", "dog", "dog"]:
    classes.add(1, {**model, "class": c})

feedback = meter.create_counter("inference.feedback", unit="{prediction}")
feedback.add(4, {**model, "correct": "true"})
feedback.add(1, {**model, "correct": "false"})

tracer = tracers.get_tracer("resnet-svc")
base = time.time_ns()
for i, (ms, failed) in enumerate([(4, False), (8, False), (40, True)]):
    start = base + i * 100_000_000
    span = tracer.start_span("POST /infer", kind=SpanKind.SERVER, start_time=start, attributes=model)
    if failed:
        span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=start + ms * 1_000_000)
# Not a server span: must not count.
tracer.start_span("preprocess", kind=SpanKind.INTERNAL, attributes=model).end()

ok = meters.force_flush(timeout_millis=15_000) and tracers.force_flush(timeout_millis=15_000)
meters.shutdown()
tracers.shutdown()
print("flushed" if ok else "flush failed")
sys.exit(0 if ok else 1)
