//! The Rust example of README's "Instrument your service": report inference latency and
//! top-1 confidence to the local agent with the OpenTelemetry crates.
//!
//! `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 cargo run -p stoker-agent --example instrument_service`

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::MetricExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Sends to OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4317: the agent).
    let exporter = MetricExporter::builder().with_tonic().build()?;
    let provider = SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("resnet-svc").build())
        .build();
    let meter = provider.meter("resnet-svc");

    // Seconds, with buckets dense where millisecond CNN latencies fall.
    let latency = meter
        .f64_histogram("inference.request.duration")
        .with_unit("s")
        .with_boundaries(vec![
            0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
            0.3, 0.5, 1.0,
        ])
        .build();
    // Top-1 probability, fine near 1 where drift shows first.
    let confidence = meter
        .f64_histogram("inference.prediction.confidence")
        .with_unit("1")
        .with_boundaries(vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99])
        .build();
    let classes = meter.u64_counter("inference.prediction.class").build();

    let model = [KeyValue::new("model.name", "resnet50"), KeyValue::new("model.version", "3")];
    for (seconds, top1, class) in [(0.012, 0.97, "cat"), (0.018, 0.88, "dog")] {
        latency.record(seconds, &model);
        confidence.record(top1, &model);
        let mut attrs = model.to_vec();
        attrs.push(KeyValue::new("class", class));
        classes.add(1, &attrs);
    }
    provider.shutdown()?; // flushes
    Ok(())
}
