//! The Rust opentelemetry-otlp exporter (gRPC, in-process) sends known values; the query API
//! returns them exactly (histogram quantiles within bucket resolution).

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_values_come_back_exactly() {
    let srv = common::start().await;
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", srv.bound.otlp_grpc))
        .with_timeout(Duration::from_secs(5))
        .build()
        .expect("exporter");
    let reader = PeriodicReader::builder(exporter).with_interval(Duration::from_secs(3600)).build();
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(
            Resource::builder_empty()
                .with_attributes([
                    KeyValue::new("host.name", "rust-node"),
                    KeyValue::new("service.name", "resnet"),
                ])
                .build(),
        )
        .build();
    let meter = provider.meter("interop");
    let gauge = meter.f64_gauge("hw.gpu.utilization").build();
    gauge.record(0.625, &[KeyValue::new("hw.id", "GPU-0")]);
    let counter = meter.u64_counter("inference.requests").build();
    counter.add(5, &[KeyValue::new("outcome", "ok")]);
    counter.add(7, &[KeyValue::new("outcome", "ok")]);
    let hist = meter
        .f64_histogram("inference.request.duration")
        .with_boundaries(vec![0.01, 0.05, 0.1, 0.5])
        .build();
    for v in [0.005, 0.007, 0.03, 0.04, 0.045, 0.07, 0.2, 0.3, 0.4, 0.45] {
        hist.record(v, &[KeyValue::new("model.name", "resnet")]);
    }
    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.force_flush()).await.expect("join").expect("flush");

    let c = common::client();
    let api = srv.bound.api;
    let g = common::query(
        &c,
        api,
        &[
            ("selector", "hw.gpu.utilization{host.name=\"rust-node\",hw.id=\"GPU-0\"}"),
            ("stat", "last"),
            ("window", "5m"),
        ],
    )
    .await;
    assert_eq!(g[0]["value"], 0.625);
    let g = common::query(
        &c,
        api,
        &[
            ("selector", "inference.requests{outcome=\"ok\"}"),
            ("stat", "increase"),
            ("window", "5m"),
        ],
    )
    .await;
    assert_eq!(g[0]["value"], 12.0, "cumulative counter since its start counts fully");
    let g = common::query(
        &c,
        api,
        &[
            ("selector", "inference.request.duration{model.name=\"resnet\"}"),
            ("stat", "count"),
            ("window", "5m"),
        ],
    )
    .await;
    assert_eq!(g[0]["value"], 10.0);
    let g = common::query(
        &c,
        api,
        &[("selector", "inference.request.duration"), ("stat", "p50"), ("window", "5m")],
    )
    .await;
    let p50 = g[0]["value"].as_f64().expect("p50");
    assert!(p50 > 0.01 && p50 <= 0.05, "p50 {p50} in (0.01, 0.05]");
    let g = common::query(
        &c,
        api,
        &[("selector", "inference.request.duration"), ("stat", "p95"), ("window", "5m")],
    )
    .await;
    let p95 = g[0]["value"].as_f64().expect("p95");
    assert!(p95 > 0.1 && p95 <= 0.5, "p95 {p95} in (0.1, 0.5]");
    let g = common::query(
        &c,
        api,
        &[("selector", "inference.request.duration"), ("stat", "mean"), ("window", "5m")],
    )
    .await;
    let mean = g[0]["value"].as_f64().expect("mean");
    assert!((mean - 1.547 / 10.0).abs() < 1e-9, "mean {mean}");
    provider.shutdown().ok();
}
