//! gzip'd OTLP: `Content-Encoding: gzip` over HTTP (protobuf and JSON) and gRPC message
//! compression are inflated and stored; the body limit applies to the inflated size (413 /
//! RESOURCE_EXHAUSTED); a corrupt gzip body is a 400 with a `google.rpc.Status`; an unknown
//! encoding is a 415. Real clients: the in-process Rust exporter with gzip over gRPC and the
//! Python SDK with `OTEL_EXPORTER_OTLP_COMPRESSION=gzip` over both transports.

use std::io::Write;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prost::Message;
use stoker_collector::clock::SystemClock;
use stoker_collector::config::Tokens;

use crate::common;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    ct: &str,
    encoding: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let r = c
        .post(url)
        .header("content-type", ct)
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .expect("post");
    (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_inflated_within_the_limit() {
    let limit = 64 * 1024;
    let srv = common::start_with(
        Tokens::default(),
        |s| s.max_body_bytes = limit,
        std::sync::Arc::new(SystemClock),
    )
    .await;
    let c = common::client();
    let url = format!("http://{}/v1/metrics", srv.bound.otlp_http);
    let t0 = common::now_nanos() - 10_000_000_000;

    // Protobuf and JSON, gzip'd: stored.
    let req = common::gauge_request("gz-node", "gz.m", t0, 1.5, vec![]);
    let (code, body) =
        post(&c, &url, "application/x-protobuf", "gzip", gzip(&req.encode_to_vec())).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        ExportMetricsServiceResponse::decode(body.as_slice())
            .expect("response")
            .partial_success
            .is_none()
    );
    let req = common::gauge_request("gz-node", "gz.m", t0 + 1, 2.5, vec![]);
    let (code, body) =
        post(&c, &url, "application/json", "gzip", gzip(&serde_json::to_vec(&req).expect("json")))
            .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let g = common::query(
        &c,
        srv.bound.api,
        &[("selector", "gz.m{host.name=\"gz-node\"}"), ("stat", "sum"), ("window", "1m")],
    )
    .await;
    assert_eq!(g[0]["value"], 4.0);

    // A small compressed body that inflates past the limit: 413, counted, nothing stored.
    let mut big = common::gauge_request("gz-node", "gz.m", t0 + 2, 9.0, vec![]);
    big.resource_metrics[0]
        .resource
        .as_mut()
        .expect("resource")
        .attributes
        .push(common::kv("padding", &"x".repeat(limit * 2)));
    let bomb = gzip(&big.encode_to_vec());
    assert!(bomb.len() < limit / 4, "compressed {} bytes", bomb.len());
    let (code, body) = post(&c, &url, "application/x-protobuf", "gzip", bomb).await;
    assert_eq!(code, 413);
    assert_eq!(
        stoker_collector::ingest::RpcStatus::decode(body.as_slice()).expect("status").code,
        8
    );
    // Corrupt gzip: 400 with a google.rpc.Status (INVALID_ARGUMENT).
    let mut broken =
        gzip(&common::gauge_request("gz-node", "gz.m", t0 + 3, 9.0, vec![]).encode_to_vec());
    let n = broken.len();
    broken[n / 2] ^= 0xff;
    broken.truncate(n - 4);
    let (code, body) = post(&c, &url, "application/x-protobuf", "gzip", broken).await;
    assert_eq!(code, 400);
    assert_eq!(
        stoker_collector::ingest::RpcStatus::decode(body.as_slice()).expect("status").code,
        3
    );
    // An encoding we do not speak: 415.
    let (code, _) = post(&c, &url, "application/x-protobuf", "br", vec![1, 2, 3]).await;
    assert_eq!(code, 415);
    let g = common::query(
        &c,
        srv.bound.api,
        &[("selector", "gz.m{host.name=\"gz-node\"}"), ("stat", "count"), ("window", "1m")],
    )
    .await;
    assert_eq!(g[0]["value"], 2.0, "refused bodies stored nothing");

    // gRPC with gzip message compression; over the limit once inflated: RESOURCE_EXHAUSTED.
    let mut grpc = MetricsServiceClient::connect(format!("http://{}", srv.bound.otlp_grpc))
        .await
        .expect("grpc connect")
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let r = grpc
        .export(common::gauge_request("gz-node", "gz.m", t0 + 4, 3.0, vec![]))
        .await
        .expect("gzip grpc export");
    assert!(r.into_inner().partial_success.is_none());
    assert_eq!(
        srv.handles.ingest.gzip_requests.load(std::sync::atomic::Ordering::Relaxed),
        5,
        "4 gzip HTTP requests before, 1 gRPC now"
    );
    let mut big = common::gauge_request("gz-node", "gz.m", t0 + 5, 9.0, vec![]);
    big.resource_metrics[0]
        .resource
        .as_mut()
        .expect("resource")
        .attributes
        .push(common::kv("padding", &"x".repeat(limit * 2)));
    let err = grpc.export(big).await.expect_err("over the limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    let g = common::query(
        &c,
        srv.bound.api,
        &[("selector", "gz.m{host.name=\"gz-node\"}"), ("stat", "sum"), ("window", "1m")],
    )
    .await;
    assert_eq!(g[0]["value"], 7.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_exporter_with_gzip_over_grpc() {
    let srv = common::start().await;
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", srv.bound.otlp_grpc))
        .with_compression(opentelemetry_otlp::Compression::Gzip)
        .with_timeout(Duration::from_secs(5))
        .build()
        .expect("exporter");
    let reader = PeriodicReader::builder(exporter).with_interval(Duration::from_secs(3600)).build();
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(
            Resource::builder_empty()
                .with_attributes([KeyValue::new("host.name", "gz-rust")])
                .build(),
        )
        .build();
    let meter = provider.meter("gzip");
    meter.f64_gauge("hw.gpu.utilization").build().record(0.375, &[KeyValue::new("hw.id", "GPU-1")]);
    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.force_flush()).await.expect("join").expect("flush");
    let c = common::client();
    let g = common::query(
        &c,
        srv.bound.api,
        &[
            ("selector", "hw.gpu.utilization{host.name=\"gz-rust\"}"),
            ("stat", "last"),
            ("window", "5m"),
        ],
    )
    .await;
    assert_eq!(g[0]["value"], 0.375);
    assert_eq!(
        srv.handles.ingest.gzip_requests.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the exporter compressed"
    );
    provider.shutdown().ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_with_gzip() {
    if !common::peer_available(
        crate::ingest_python::python_ok(),
        "OpenTelemetry Python SDK",
        "install-python-peers.sh",
    ) {
        return;
    }
    let srv = common::start().await;
    crate::ingest_python::run_python(
        "grpc",
        format!("http://{}", srv.bound.otlp_grpc),
        "pygz-grpc",
        Some("gzip"),
    )
    .await;
    crate::ingest_python::run_python(
        "http",
        format!("http://{}", srv.bound.otlp_http),
        "pygz-http",
        Some("gzip"),
    )
    .await;
    let c = common::client();
    for host in ["pygz-grpc", "pygz-http"] {
        let g = common::query(
            &c,
            srv.bound.api,
            &[
                ("selector", &format!("hw.gpu.utilization{{host.name=\"{host}\"}}")),
                ("stat", "last"),
                ("window", "5m"),
            ],
        )
        .await;
        assert_eq!(g[0]["value"], 0.42, "{host}");
        let g = common::query(
            &c,
            srv.bound.api,
            &[
                ("selector", &format!("inference.request.duration{{host.name=\"{host}\"}}")),
                ("stat", "count"),
                ("window", "5m"),
            ],
        )
        .await;
        assert_eq!(g[0]["value"], 10.0, "{host}");
    }
    // The SDK really compressed: both exports arrived gzip'd.
    assert!(srv.handles.ingest.gzip_requests.load(std::sync::atomic::Ordering::Relaxed) >= 2);
}
