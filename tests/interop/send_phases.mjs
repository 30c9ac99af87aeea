// Sends phases of histogram observations with the OpenTelemetry JS SDK (default cumulative
// temporality), one export per phase: the same contract as send_phases.py. Used by the
// workspace tests in tests/integration/real_clients.rs; dependencies in package.json.
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationType,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';

const spec = JSON.parse(process.argv[2]);
const exporter = new OTLPMetricExporter({ url: `${spec.endpoint}/v1/metrics` });
const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
const provider = new MeterProvider({
  resource: resourceFromAttributes({ 'service.name': spec.service, ...(spec.resource ?? {}) }),
  readers: [reader],
  views: [
    {
      instrumentName: 'inference.request.duration',
      aggregation: {
        type: AggregationType.EXPLICIT_BUCKET_HISTOGRAM,
        options: { boundaries: spec.bounds },
      },
    },
    {
      instrumentName: 'inference.queue.duration',
      aggregation: { type: AggregationType.EXPONENTIAL_HISTOGRAM },
    },
  ],
});
const meter = provider.getMeter('stoker-interop');
const explicit = meter.createHistogram('inference.request.duration', { unit: 's' });
const exponential = meter.createHistogram('inference.queue.duration', { unit: 's' });
const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));
for (const [i, phase] of spec.phases.entries()) {
  if (i > 0) await sleep(spec.pause ?? 0);
  for (const v of phase) {
    explicit.record(v, { 'model.name': spec.service });
    exponential.record(v, { 'model.name': spec.service });
  }
  await provider.forceFlush();
}
await provider.shutdown();
