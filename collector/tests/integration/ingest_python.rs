//! The OpenTelemetry Python SDK sends known values over OTLP gRPC and OTLP/HTTP (protobuf);
//! the query API returns them exactly (histogram quantiles within bucket resolution,
//! exponential histograms included).

use crate::common;

const SCRIPT: &str = r#"
import sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import View, ExplicitBucketHistogramAggregation, ExponentialBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource

transport, endpoint, host = sys.argv[1:4]
if transport == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    exporter = OTLPMetricExporter(endpoint=endpoint, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    exporter = OTLPMetricExporter(endpoint=endpoint + "/v1/metrics")
reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3600000)
views = [
    View(instrument_name="inference.request.duration", aggregation=ExplicitBucketHistogramAggregation([0.01, 0.05, 0.1, 0.5])),
    View(instrument_name="inference.batch.size", aggregation=ExponentialBucketHistogramAggregation()),
]
provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"host.name": host, "service.name": "pysvc"}), views=views)
meter = provider.get_meter("interop")
requests = meter.create_counter("inference.requests")
requests.add(3, {"outcome": "ok"})
requests.add(4, {"outcome": "ok"})
requests.add(1, {"outcome": "error"})
duration = meter.create_histogram("inference.request.duration", unit="s")
for v in [0.002, 0.004, 0.02, 0.03, 0.06, 0.07, 0.08, 0.09, 0.2, 0.3]:
    duration.record(v, {"model.name": "pyresnet"})
batch = meter.create_histogram("inference.batch.size")
for v in [1, 2, 2, 4, 4, 4, 8, 8, 16, 32]:
    batch.record(v)
gauge = meter.create_gauge("hw.gpu.utilization")
gauge.set(0.42, {"hw.id": "GPU-7"})
assert provider.force_flush(10000), "flush failed"
provider.shutdown()
"#;

pub(crate) fn python_ok() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs the SDK script; `compression` sets `OTEL_EXPORTER_OTLP_COMPRESSION` (e.g. `gzip`).
pub(crate) async fn run_python(
    transport: &str,
    endpoint: String,
    host: &str,
    compression: Option<&str>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("send.py");
    std::fs::write(&path, SCRIPT).expect("write script");
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), {
        let mut cmd = tokio::process::Command::new("python3");
        cmd.arg(&path)
            .args([transport, &endpoint, host])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_COMPRESSION");
        if let Some(c) = compression {
            cmd.env("OTEL_EXPORTER_OTLP_COMPRESSION", c);
        }
        cmd.output()
    })
    .await
    .expect("python finished in time")
    .expect("python ran");
    assert!(
        out.status.success(),
        "python {transport} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_grpc_and_http() {
    if !common::peer_available(python_ok(), "OpenTelemetry Python SDK", "install-python-peers.sh") {
        return;
    }
    let srv = common::start().await;
    run_python("grpc", format!("http://{}", srv.bound.otlp_grpc), "py-grpc", None).await;
    run_python("http", format!("http://{}", srv.bound.otlp_http), "py-http", None).await;
    let c = common::client();
    let api = srv.bound.api;
    for host in ["py-grpc", "py-http"] {
        let sel = |m: &str, extra: &str| format!("{m}{{host.name=\"{host}\"{extra}}}");
        let g = common::query(
            &c,
            api,
            &[
                ("selector", &sel("hw.gpu.utilization", ",hw.id=\"GPU-7\"")),
                ("stat", "last"),
                ("window", "5m"),
            ],
        )
        .await;
        assert_eq!(g[0]["value"], 0.42, "{host}");
        let g = common::query(
            &c,
            api,
            &[
                ("selector", &sel("inference.requests", "")),
                ("stat", "increase"),
                ("window", "5m"),
                ("group_by", "outcome"),
            ],
        )
        .await;
        assert_eq!(g.len(), 2, "{host}: {g:?}");
        assert_eq!(g[0]["group"]["outcome"], "error");
        assert_eq!(g[0]["value"], 1.0);
        assert_eq!(g[1]["value"], 7.0);
        let g = common::query(
            &c,
            api,
            &[
                ("selector", &sel("inference.request.duration", ",model.name=\"pyresnet\"")),
                ("stat", "count"),
                ("window", "5m"),
            ],
        )
        .await;
        assert_eq!(g[0]["value"], 10.0, "{host}");
        let g = common::query(
            &c,
            api,
            &[
                ("selector", &sel("inference.request.duration", "")),
                ("stat", "p50"),
                ("window", "5m"),
            ],
        )
        .await;
        let p50 = g[0]["value"].as_f64().expect("p50");
        assert!(p50 > 0.05 && p50 <= 0.1, "{host}: p50 {p50} must lie in the bucket (0.05, 0.1]");
        let g = common::query(
            &c,
            api,
            &[
                ("selector", &sel("inference.request.duration", "")),
                ("stat", "max"),
                ("window", "5m"),
            ],
        )
        .await;
        assert_eq!(g[0]["value"], 0.3, "{host}: reported max");
        // Exponential histogram: 10 observations; the median (4) lies within one bucket of
        // the default scale (base 2^(2^-20) at most; coarse scales still contain 4).
        let g = common::query(
            &c,
            api,
            &[("selector", &sel("inference.batch.size", "")), ("stat", "count"), ("window", "5m")],
        )
        .await;
        assert_eq!(g[0]["value"], 10.0, "{host}");
        let g = common::query(
            &c,
            api,
            &[("selector", &sel("inference.batch.size", "")), ("stat", "p50"), ("window", "5m")],
        )
        .await;
        let p50 = g[0]["value"].as_f64().expect("p50");
        assert!((3.9..=4.1).contains(&p50), "{host}: exponential p50 {p50}");
        let g = common::query(
            &c,
            api,
            &[("selector", &sel("inference.batch.size", "")), ("stat", "mean"), ("window", "5m")],
        )
        .await;
        assert_eq!(g[0]["value"], 8.1, "{host}");
    }
}
