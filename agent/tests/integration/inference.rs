//! The inference room end to end: OTLP in (Rust clients and the OpenTelemetry Python SDK),
//! scrapes of fixture expositions served locally, probes against a scripted server; asserted
//! on what lands in the outbox.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use stoker_agent::export::Outbox;
use stoker_agent::inference::{
    InferenceConfig, InferenceContext, InferenceHandle, ProbeConfig, ScrapeConfig, ScrapeKind,
    start,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

// ---------------------------------------------------------------------------------------------
// Harness

struct Agent {
    handle: InferenceHandle,
    outbox: Outbox,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn local_config() -> InferenceConfig {
    let mut cfg = InferenceConfig::default();
    cfg.receiver.grpc_listen = "127.0.0.1:0".parse().expect("addr");
    cfg.receiver.http_listen = "127.0.0.1:0".parse().expect("addr");
    cfg
}

fn start_agent(cfg: &InferenceConfig, interval: Duration) -> Agent {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outbox = Outbox::new(10_000);
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let handle = start(
        cfg,
        InferenceContext {
            outbox: outbox.clone(),
            node_resource: vec![kv("host.name", "node-7"), kv("cloud.region", "eu-west-1")],
            interval,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            otlp_grpc_listen: None,
            otlp_http_listen: None,
        },
    )
    .expect("inference room starts");
    Agent { handle, outbox, shutdown, tasks }
}

impl Agent {
    /// Stop the room (it flushes a last interval) and return every batch it produced.
    async fn stop(self) -> Vec<ResourceMetrics> {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(10), self.tasks.wait())
            .await
            .expect("room stops within 10 s");
        self.outbox.drain(usize::MAX)
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn matches(attrs: &[KeyValue], want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| attr(attrs, k) == Some(*v))
}

/// Every metric named `name` under resources whose `service.name` is `service`.
fn metrics<'a>(batches: &'a [ResourceMetrics], service: &str, name: &str) -> Vec<&'a Metric> {
    batches
        .iter()
        .filter(|b| {
            b.resource
                .as_ref()
                .is_some_and(|r| attr(&r.attributes, "service.name") == Some(service))
        })
        .flat_map(|b| b.scope_metrics.iter().flat_map(|s| s.metrics.iter()))
        .filter(|m| m.name == name)
        .collect()
}

#[derive(Debug, Default, PartialEq)]
struct HistTotal {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

/// Sum of the (delta) histogram points matching `want`, across all intervals.
fn hist_total(
    batches: &[ResourceMetrics],
    service: &str,
    name: &str,
    want: &[(&str, &str)],
) -> HistTotal {
    let mut total = HistTotal::default();
    for m in metrics(batches, service, name) {
        let Some(Data::Histogram(h)) = &m.data else { panic!("{name} is not a histogram: {m:?}") };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Delta as i32,
            "{name} is delta"
        );
        for p in h.data_points.iter().filter(|p| matches(&p.attributes, want)) {
            if total.counts.is_empty() {
                total.bounds = p.explicit_bounds.clone();
                total.counts = vec![0; p.bucket_counts.len()];
            }
            assert_eq!(total.bounds, p.explicit_bounds, "{name}: bounds stable across intervals");
            for (t, c) in total.counts.iter_mut().zip(&p.bucket_counts) {
                *t += c;
            }
            total.count += p.count;
            total.sum += p.sum.unwrap_or(0.0);
        }
    }
    total
}

/// Sum of the (delta) monotonic counter points matching `want`.
fn counter_total(
    batches: &[ResourceMetrics],
    service: &str,
    name: &str,
    want: &[(&str, &str)],
) -> f64 {
    let mut total = 0.0;
    for m in metrics(batches, service, name) {
        let Some(Data::Sum(s)) = &m.data else { panic!("{name} is not a sum: {m:?}") };
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Delta as i32,
            "{name} is delta"
        );
        for p in s.data_points.iter().filter(|p| matches(&p.attributes, want)) {
            total += match p.value {
                Some(number_data_point::Value::AsInt(i)) => i as f64,
                Some(number_data_point::Value::AsDouble(d)) => d,
                None => 0.0,
            };
        }
    }
    total
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!((actual - expected).abs() < 1e-9, "{what}: {actual} != {expected}");
}

fn histogram_metric(
    name: &str,
    temporality: AggregationTemporality,
    start: u64,
    counts: Vec<u64>,
    sum: f64,
    attrs: Vec<KeyValue>,
) -> Metric {
    Metric {
        name: name.into(),
        unit: "1".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: attrs,
                start_time_unix_nano: start,
                time_unix_nano: start + 1,
                count: counts.iter().sum(),
                sum: Some(sum),
                bucket_counts: counts,
                explicit_bounds: vec![0.5, 0.9, 0.99],
                ..Default::default()
            }],
            aggregation_temporality: temporality as i32,
        })),
        ..Default::default()
    }
}

fn request(service: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A local HTTP server; returns its address.
async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind test server");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

// ---------------------------------------------------------------------------------------------
// OTLP receivers with Rust clients

#[tokio::test]
async fn grpc_metrics_are_aggregated_per_interval_enriched_and_buckets_kept() {
    let agent = start_agent(&local_config(), Duration::from_secs(3600));
    let mut client = MetricsServiceClient::connect(format!("http://{}", agent.handle.grpc_addr))
        .await
        .expect("connect");
    let model = || vec![kv("model.name", "resnet"), kv("model.version", "3")];
    let start = now_nanos();
    // Two delta pushes merge bucket by bucket; a cumulative series that started after the
    // agent counts whole, then by increments.
    for counts in [vec![1, 2, 3, 4], vec![0, 1, 0, 5]] {
        let resp = client
            .export(request(
                "resnet-svc",
                vec![histogram_metric(
                    "inference.prediction.confidence",
                    AggregationTemporality::Delta,
                    start,
                    counts,
                    1.5,
                    model(),
                )],
            ))
            .await
            .expect("export")
            .into_inner();
        assert_eq!(resp.partial_success, None);
    }
    for counts in [vec![1, 0, 0, 1], vec![2, 1, 0, 1]] {
        client
            .export(request(
                "resnet-svc",
                vec![histogram_metric(
                    "inference.request.duration",
                    AggregationTemporality::Cumulative,
                    start,
                    counts,
                    0.25,
                    model(),
                )],
            ))
            .await
            .expect("export");
    }
    let stats = agent.handle.stats.clone();
    let batches = agent.stop().await;

    let confidence = hist_total(
        &batches,
        "resnet-svc",
        "inference.prediction.confidence",
        &[("model.name", "resnet")],
    );
    assert_eq!(confidence.bounds, vec![0.5, 0.9, 0.99]);
    assert_eq!(confidence.counts, vec![1, 3, 3, 9]);
    assert_eq!(confidence.count, 16);
    assert_close(confidence.sum, 3.0, "confidence sum");
    let duration = hist_total(
        &batches,
        "resnet-svc",
        "inference.request.duration",
        &[("model.name", "resnet")],
    );
    assert_eq!(
        duration.counts,
        vec![2, 1, 0, 1],
        "cumulative input ends as its last value, in increments"
    );
    // One point per series per interval, however many pushes.
    let m = metrics(&batches, "resnet-svc", "inference.prediction.confidence");
    assert_eq!(m.len(), 1);
    // The node's resource attributes are added; the service's own are kept.
    let resource = batches
        .iter()
        .find(|b| {
            b.resource
                .as_ref()
                .is_some_and(|r| attr(&r.attributes, "service.name") == Some("resnet-svc"))
        })
        .and_then(|b| b.resource.clone())
        .expect("service resource");
    assert_eq!(attr(&resource.attributes, "host.name"), Some("node-7"));
    assert_eq!(attr(&resource.attributes, "cloud.region"), Some("eu-west-1"));
    assert_eq!(stats.snapshot().points_received, 4);
    // The room's own counters travel under the node's resource.
    let own: f64 = batches
        .iter()
        .filter(|b| {
            b.resource.as_ref().is_some_and(|r| attr(&r.attributes, "service.name").is_none())
        })
        .flat_map(|b| b.scope_metrics.iter().flat_map(|s| s.metrics.iter()))
        .filter(|m| m.name == "stoker.agent.inference.points.received")
        .map(|m| match &m.data {
            Some(Data::Sum(s)) => s
                .data_points
                .iter()
                .map(|p| match p.value {
                    Some(number_data_point::Value::AsInt(i)) => i as f64,
                    _ => 0.0,
                })
                .sum(),
            _ => 0.0,
        })
        .sum();
    assert_eq!(own, 4.0);
}

#[tokio::test]
async fn series_cap_answers_partial_success_and_counts_shed_points() {
    let mut cfg = local_config();
    cfg.receiver.max_series = 2;
    let agent = start_agent(&cfg, Duration::from_secs(3600));
    let mut client = MetricsServiceClient::connect(format!("http://{}", agent.handle.grpc_addr))
        .await
        .expect("connect");
    let counter = |class: &str| Metric {
        name: "inference.prediction.class".into(),
        data: Some(Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: vec![kv("class", class)],
                value: Some(number_data_point::Value::AsInt(1)),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let resp = client
        .export(request(
            "svc",
            vec![counter("cat"), counter("dog"), counter("fox"), counter("owl")],
        ))
        .await
        .expect("export is answered, not refused")
        .into_inner();
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_data_points, 2);
    assert!(partial.error_message.contains("max_series = 2"), "{}", partial.error_message);
    let stats = agent.handle.stats.clone();
    let batches = agent.stop().await;
    assert_eq!(stats.snapshot().points_shed, 2);
    assert_eq!(counter_total(&batches, "svc", "inference.prediction.class", &[]), 2.0);
}

const TRACES_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-svc"}}]},
 "scopeSpans":[{"scope":{"name":"manual"},"spans":[
  {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"infer","kind":2,
   "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000012000000",
   "attributes":[{"key":"model.name","value":{"stringValue":"resnet"}}]},
  {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","name":"infer","kind":2,
   "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000200000000",
   "attributes":[{"key":"model.name","value":{"stringValue":"resnet"}}],"status":{"code":2}}]}]}]}"#;

const METRICS_JSON: &str = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-svc"}}]},
 "scopeMetrics":[{"metrics":[{"name":"inference.feedback","unit":"1","sum":{"aggregationTemporality":1,"isMonotonic":true,
   "dataPoints":[{"asInt":"5","timeUnixNano":"1700000000000000000","attributes":[{"key":"correct","value":{"stringValue":"true"}}]}]}},
  {"name":"inference.prediction.confidence","unit":"1","histogram":{"aggregationTemporality":1,
   "dataPoints":[{"count":"3","sum":2.5,"bucketCounts":["0","1","2"],"explicitBounds":[0.5,0.9],"timeUnixNano":"1700000000000000000"}]}}]}]}]}"#;

#[tokio::test]
async fn http_receiver_takes_protobuf_and_json_and_rejects_garbage() {
    let mut cfg = local_config();
    cfg.receiver.span_buckets = vec![0.01, 0.1];
    let agent = start_agent(&cfg, Duration::from_secs(3600));
    let client = reqwest::Client::new();
    let base = format!("http://{}", agent.handle.http_addr);

    let post = |path: &str, ct: &str, body: Vec<u8>| {
        client.post(format!("{base}{path}")).header("content-type", ct).body(body).send()
    };
    let r = post("/v1/traces", "application/json", TRACES_JSON.into()).await.expect("post");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let r = post("/v1/metrics", "application/json", METRICS_JSON.into()).await.expect("post");
    assert_eq!(r.status(), 200);
    let body = request(
        "proto-svc",
        vec![histogram_metric(
            "inference.prediction.confidence",
            AggregationTemporality::Delta,
            1,
            vec![1, 1, 1, 1],
            2.0,
            vec![],
        )],
    )
    .encode_to_vec();
    let r = post("/v1/metrics", "application/x-protobuf", body).await.expect("post");
    assert_eq!(r.status(), 200);
    let decoded =
        opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse::decode(
            r.bytes().await.expect("body"),
        )
        .expect("protobuf answer");
    assert_eq!(decoded.partial_success, None);

    assert_eq!(
        post("/v1/metrics", "application/x-protobuf", vec![0xff, 0xff, 0xff])
            .await
            .expect("post")
            .status(),
        400
    );
    assert_eq!(
        post("/v1/metrics", "application/json", b"{not json".to_vec())
            .await
            .expect("post")
            .status(),
        400
    );
    assert_eq!(post("/v1/metrics", "text/plain", b"x".to_vec()).await.expect("post").status(), 415);
    let big = vec![0u8; cfg.receiver.max_body_bytes + 1];
    assert_eq!(
        post("/v1/metrics", "application/x-protobuf", big).await.expect("post").status(),
        413
    );

    // gzip, as exporters send with OTEL_EXPORTER_OTLP_COMPRESSION=gzip; a small body that
    // inflates past the limit is refused, not allocated; other encodings are refused.
    let gzip = |bytes: &[u8]| {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).expect("gzip");
        enc.finish().expect("gzip")
    };
    let body = request(
        "gzip-svc",
        vec![histogram_metric(
            "inference.prediction.confidence",
            AggregationTemporality::Delta,
            1,
            vec![0, 2, 0, 1],
            2.0,
            vec![],
        )],
    )
    .encode_to_vec();
    let send = |ce: &str, body: Vec<u8>| {
        client
            .post(format!("{base}/v1/metrics"))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", ce)
            .body(body)
            .send()
    };
    assert_eq!(send("gzip", gzip(&body)).await.expect("post").status(), 200);
    let bomb = gzip(&vec![0u8; cfg.receiver.max_body_bytes + 1]);
    assert!(bomb.len() < 64 * 1024);
    assert_eq!(send("gzip", bomb).await.expect("post").status(), 413);
    assert_eq!(send("br", body).await.expect("post").status(), 415);

    let stats = agent.handle.stats.clone();
    let batches = agent.stop().await;
    let s = stats.snapshot();
    assert_eq!(s.requests_malformed, 6);
    assert_eq!(
        hist_total(&batches, "gzip-svc", "inference.prediction.confidence", &[]).counts,
        vec![0, 2, 0, 1]
    );
    assert_eq!(s.spans_received, 2);
    let d =
        hist_total(&batches, "json-svc", "inference.request.duration", &[("model.name", "resnet")]);
    assert_eq!(d.bounds, vec![0.01, 0.1]);
    assert_eq!(d.counts, vec![0, 1, 1]);
    assert_close(d.sum, 0.212, "span durations");
    assert_eq!(
        counter_total(&batches, "json-svc", "inference.requests", &[("outcome", "success")]),
        1.0
    );
    assert_eq!(
        counter_total(&batches, "json-svc", "inference.requests", &[("outcome", "failure")]),
        1.0
    );
    // aggregationTemporality 1 is DELTA in OTLP: counted as sent, buckets kept.
    assert_eq!(
        counter_total(&batches, "json-svc", "inference.feedback", &[("correct", "true")]),
        5.0
    );
    assert_eq!(
        hist_total(&batches, "json-svc", "inference.prediction.confidence", &[]).counts,
        vec![0, 1, 2]
    );
    assert_eq!(
        hist_total(&batches, "proto-svc", "inference.prediction.confidence", &[]).counts,
        vec![1, 1, 1, 1]
    );
}

// ---------------------------------------------------------------------------------------------
// The OpenTelemetry Python SDK as the client

/// Whether the Python SDK peer is installed; when not, skip or (in CI) fail.
fn python_sdk_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("STOKER_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!(
                "the OpenTelemetry Python SDK is required (STOKER_REQUIRE_PEERS=1): run .ci/install-python-peers.sh"
            );
        }
        eprintln!(
            "skipping: OpenTelemetry Python SDK not installed (run .ci/install-python-peers.sh)"
        );
    }
    ok
}

async fn python_sdk_push(protocol: &str, compression: &str) {
    if !python_sdk_available() {
        return;
    }
    let mut cfg = local_config();
    cfg.receiver.span_buckets = vec![0.005, 0.01, 0.025, 0.05, 0.1];
    let agent = start_agent(&cfg, Duration::from_secs(3600));
    let endpoint = match protocol {
        "grpc" => format!("http://{}", agent.handle.grpc_addr),
        _ => format!("http://{}", agent.handle.http_addr),
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/otel_push.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg(script)
            .arg(protocol)
            .arg(&endpoint)
            .arg(compression)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python finishes within 60 s")
    .expect("python runs");
    assert!(
        out.status.success(),
        "python SDK push failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let batches = agent.stop().await;

    let model = [("model.name", "resnet"), ("model.version", "3")];
    // Metric histogram + mapped http.server.request.duration + three server spans, all with
    // the same bounds and attributes, merge into one series.
    let d = hist_total(&batches, "resnet-svc", "inference.request.duration", &model);
    assert_eq!(d.bounds, vec![0.005, 0.01, 0.025, 0.05, 0.1]);
    assert_eq!(d.counts, vec![2, 3, 2, 1, 0, 1]);
    assert_eq!(d.count, 9);
    assert_close(d.sum, 0.301, "request duration sum");
    assert!(metrics(&batches, "resnet-svc", "http.server.request.duration").is_empty(), "renamed");
    let c = hist_total(&batches, "resnet-svc", "inference.prediction.confidence", &model);
    assert_eq!(c.bounds, vec![0.5, 0.7, 0.9, 0.95, 0.99]);
    assert_eq!(c.counts, vec![0, 1, 0, 1, 2, 1]);
    assert_close(c.sum, 0.96 + 0.98 + 0.6 + 0.999 + 0.92, "confidence sum");
    assert_eq!(
        counter_total(&batches, "resnet-svc", "inference.prediction.class", &[("class", "cat")]),
        3.0
    );
    assert_eq!(
        counter_total(&batches, "resnet-svc", "inference.prediction.class", &[("class", "dog")]),
        2.0
    );
    assert_eq!(
        counter_total(&batches, "resnet-svc", "inference.feedback", &[("correct", "true")]),
        4.0
    );
    assert_eq!(
        counter_total(&batches, "resnet-svc", "inference.feedback", &[("correct", "false")]),
        1.0
    );
    assert_eq!(
        counter_total(&batches, "resnet-svc", "inference.requests", &[("outcome", "success")]),
        2.0
    );
    assert_eq!(
        counter_total(&batches, "resnet-svc", "inference.requests", &[("outcome", "failure")]),
        1.0
    );
    // The node's host.name wins over the container's.
    let r = batches
        .iter()
        .filter_map(|b| b.resource.as_ref())
        .find(|r| attr(&r.attributes, "service.name") == Some("resnet-svc"))
        .expect("resource");
    assert_eq!(attr(&r.attributes, "host.name"), Some("node-7"));
    assert_eq!(attr(&r.attributes, "telemetry.sdk.language"), Some("python"));
}

#[tokio::test]
async fn python_sdk_pushes_over_grpc() {
    python_sdk_push("grpc", "none").await;
}

#[tokio::test]
async fn python_sdk_pushes_over_grpc_gzipped() {
    python_sdk_push("grpc", "gzip").await;
}

#[tokio::test]
async fn python_sdk_pushes_over_http_protobuf_gzipped() {
    python_sdk_push("http", "gzip").await;
}

// ---------------------------------------------------------------------------------------------
// Scraping fixture expositions

/// Serve `fixture` with every sample value multiplied by 1, then 3, then 2 (a restart: the
/// counters went down) for the remaining scrapes. Increments over the run: 4 × the fixture.
async fn serve_fixture(fixture: &'static str, served: Arc<AtomicUsize>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let served = Arc::clone(&served);
            async move {
                let n = served.fetch_add(1, Ordering::SeqCst);
                let factor = [1.0, 3.0, 2.0][n.min(2)];
                Ok::<_, Infallible>(scale_exposition(fixture, factor))
            }
        }),
    );
    serve(app).await
}

fn scale_exposition(text: &str, factor: f64) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with('#') || line.trim().is_empty() {
                return line.to_owned();
            }
            let (head, value) = line.rsplit_once(' ').expect("sample line");
            let v: f64 = value.parse().expect("fixture value");
            format!("{head} {}", v * factor)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn scrape_fixture(
    fixture: &'static str,
    kind: ScrapeKind,
    name: &str,
) -> (Vec<ResourceMetrics>, stoker_agent::inference::InferenceStatsSnapshot) {
    let served = Arc::new(AtomicUsize::new(0));
    let addr = serve_fixture(fixture, Arc::clone(&served)).await;
    let mut cfg = local_config();
    cfg.scrape.push(ScrapeConfig {
        name: name.into(),
        url: format!("http://{addr}/metrics"),
        kind,
        interval: Some(Duration::from_millis(40)),
        timeout: Duration::from_secs(2),
        histograms: vec![],
        summaries: vec![],
    });
    let agent = start_agent(&cfg, Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served.load(Ordering::SeqCst) < 5 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the aggregator take the last scrape before stopping.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = agent.handle.stats.clone();
    let batches = agent.stop().await;
    assert!(served.load(Ordering::SeqCst) >= 5, "scraped at least 5 times");
    (batches, stats.snapshot())
}

#[tokio::test]
async fn triton_counters_become_interval_means_across_a_restart() {
    let (batches, stats) =
        scrape_fixture(include_str!("../fixtures/triton.prom"), ScrapeKind::Triton, "triton").await;
    assert_eq!(stats.scrape_failures, 0);
    let densenet = [("model.name", "densenet_onnx"), ("model.version", "1")];
    // Increments: (3-1)x + 2x after the reset = 4x the fixture.
    assert_eq!(
        counter_total(
            &batches,
            "triton",
            "inference.requests",
            &[densenet[0], ("outcome", "success")]
        ),
        800.0
    );
    assert_eq!(
        counter_total(
            &batches,
            "triton",
            "inference.requests",
            &[densenet[0], ("outcome", "failure")]
        ),
        24.0
    );
    let request = hist_total(&batches, "triton", "inference.request.duration", &densenet);
    assert_eq!((request.count, request.bounds.len()), (800, 0));
    assert_close(request.sum, 12.0, "request seconds");
    assert_close(request.sum / request.count as f64, 0.015, "mean request latency");
    let queue = hist_total(&batches, "triton", "inference.queue.duration", &densenet);
    assert_close(queue.sum / queue.count as f64, 0.002, "mean queue latency");
    let compute = hist_total(&batches, "triton", "inference.compute.duration", &densenet);
    assert_close(compute.sum / compute.count as f64, 0.012, "mean compute latency");
    let batch = hist_total(&batches, "triton", "inference.batch.size", &densenet);
    assert_close(batch.sum / batch.count as f64, 8.0, "mean batch size");
    let resnet = hist_total(
        &batches,
        "triton",
        "inference.request.duration",
        &[("model.name", "resnet50"), ("model.version", "2")],
    );
    assert_close(resnet.sum / resnet.count as f64, 0.01, "resnet mean latency");
    // Every delta point is an increment: none negative, even across the reset.
    for m in metrics(&batches, "triton", "inference.requests") {
        if let Some(Data::Sum(s)) = &m.data {
            for p in &s.data_points {
                assert!(
                    matches!(p.value, Some(number_data_point::Value::AsDouble(v)) if v >= 0.0),
                    "{p:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn torchserve_latency_counters_become_interval_means() {
    let (batches, _) = scrape_fixture(
        include_str!("../fixtures/torchserve.prom"),
        ScrapeKind::Torchserve,
        "torchserve",
    )
    .await;
    let resnet = [("model.name", "resnet-18"), ("model.version", "default")];
    assert_eq!(counter_total(&batches, "torchserve", "inference.requests", &resnet), 200.0);
    let request = hist_total(&batches, "torchserve", "inference.request.duration", &resnet);
    assert_eq!(request.count, 200);
    assert_close(request.sum / request.count as f64, 0.04, "mean inference latency");
    let queue = hist_total(&batches, "torchserve", "inference.queue.duration", &resnet);
    assert_close(queue.sum / queue.count as f64, 0.002, "mean queue latency");
    // The uuid label is not a series of its own.
    for m in metrics(&batches, "torchserve", "inference.request.duration") {
        if let Some(Data::Histogram(h)) = &m.data {
            assert!(h.data_points.iter().all(|p| attr(&p.attributes, "uuid").is_none()));
        }
    }
}

#[tokio::test]
async fn vllm_histograms_keep_their_buckets_across_a_restart() {
    let (batches, _) =
        scrape_fixture(include_str!("../fixtures/vllm.prom"), ScrapeKind::Vllm, "vllm").await;
    let model = [("model.name", "facebook/opt-125m")];
    let e2e = hist_total(&batches, "vllm", "inference.request.duration", &model);
    assert_eq!(e2e.bounds, vec![0.3, 0.5, 1.0, 2.5]);
    // Fixture buckets (per bucket) 2,4,6,2,0 times 4.
    assert_eq!(e2e.counts, vec![8, 16, 24, 8, 0]);
    assert_close(e2e.sum, 34.0, "e2e sum");
    let queue = hist_total(&batches, "vllm", "inference.queue.duration", &model);
    assert_eq!(queue.counts, vec![40, 16, 0]);
    let ttft = hist_total(&batches, "vllm", "vllm.time_to_first_token_seconds", &model);
    assert_eq!(ttft.counts, vec![32, 24, 0]);
    assert_eq!(
        counter_total(&batches, "vllm", "inference.requests", &[("finished_reason", "stop")]),
        48.0
    );
}

#[tokio::test]
async fn a_target_that_is_down_is_reported_not_fatal() {
    let mut cfg = local_config();
    cfg.scrape.push(ScrapeConfig {
        name: "gone".into(),
        url: format!("http://{}/metrics", closed_port()),
        kind: ScrapeKind::Triton,
        interval: Some(Duration::from_millis(30)),
        timeout: Duration::from_millis(500),
        histograms: vec![],
        summaries: vec![],
    });
    let agent = start_agent(&cfg, Duration::from_millis(50));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while agent.handle.stats.snapshot().scrape_failures < 2
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = agent.handle.stats.clone();
    let batches = agent.stop().await;
    let s = stats.snapshot();
    assert!(s.scrape_failures >= 2, "{s:?}");
    assert_eq!(s.scrapes, 0);
    let up: Vec<f64> = metrics(&batches, "gone", "stoker.agent.inference.scrape.up")
        .iter()
        .filter_map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.first().and_then(|p| match p.value {
                Some(number_data_point::Value::AsDouble(v)) => Some(v),
                _ => None,
            }),
            _ => None,
        })
        .collect();
    assert!(!up.is_empty() && up.iter().all(|v| *v == 0.0), "{up:?}");
}

// ---------------------------------------------------------------------------------------------
// Probes

fn probe(name: &str, url: String, timeout: Duration) -> ProbeConfig {
    ProbeConfig {
        name: name.into(),
        url,
        method: "POST".into(),
        headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
        body_file: None,
        interval: Some(Duration::from_millis(50)),
        timeout,
        model: stoker_agent::inference::config::ProbeModel {
            name: Some("resnet".into()),
            version: Some("1".into()),
        },
    }
}

#[tokio::test]
async fn probes_record_latency_errors_timeouts_and_refusals() {
    let body_seen = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&body_seen);
    let (fail_hits, hang_hits) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (fails, hangs) = (Arc::clone(&fail_hits), Arc::clone(&hang_hits));
    let app = axum::Router::new()
        .route(
            "/v2/models/resnet/infer",
            axum::routing::post(move |body: axum::body::Bytes| {
                let seen = Arc::clone(&seen);
                async move {
                    if body.as_ref() == br#"{"inputs":[]}"# {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    "{}"
                }
            }),
        )
        .route(
            "/fail",
            axum::routing::post(move || {
                fails.fetch_add(1, Ordering::SeqCst);
                async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }
            }),
        )
        .route(
            "/hang",
            axum::routing::post(move || {
                hangs.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }
            }),
        );
    let addr = serve(app).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let body_path = dir.path().join("request.json");
    std::fs::write(&body_path, br#"{"inputs":[]}"#).expect("write body");

    let mut cfg = local_config();
    let mut ok =
        probe("ok", format!("http://{addr}/v2/models/resnet/infer"), Duration::from_secs(2));
    ok.body_file = Some(body_path);
    cfg.probe = vec![
        ok,
        probe("fail", format!("http://{addr}/fail"), Duration::from_secs(2)),
        probe("hang", format!("http://{addr}/hang"), Duration::from_millis(150)),
        probe("refused", format!("http://{}/", closed_port()), Duration::from_secs(2)),
    ];
    let agent = start_agent(&cfg, Duration::from_millis(200));
    // Bounded wait until every probe has run at least 3 times (the refused one is the fastest).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline
        && [&body_seen, &fail_hits, &hang_hits].iter().any(|c| c.load(Ordering::SeqCst) < 3)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The third hanging request times out 150 ms after it arrived.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = agent.handle.stats.clone();
    let batches = agent.stop().await;

    let ok_count = counter_total(
        &batches,
        "ok",
        "inference.probe.requests",
        &[("outcome", "success"), ("model.name", "resnet")],
    );
    assert!(ok_count >= 3.0, "ok probes: {ok_count}");
    assert!(body_seen.load(Ordering::SeqCst) >= 3, "the body file was sent");
    let latency = hist_total(
        &batches,
        "ok",
        "inference.probe.duration",
        &[("http.response.status_code", "200")],
    );
    assert_eq!(latency.count as f64, ok_count);
    // 30 ms of injected delay: nothing below the 0.03 bound's bucket.
    let below_30ms: u64 = latency
        .bounds
        .iter()
        .zip(&latency.counts)
        .filter(|(b, _)| **b < 0.03)
        .map(|(_, c)| c)
        .sum();
    assert_eq!(below_30ms, 0, "{latency:?}");
    assert!(latency.sum / latency.count as f64 >= 0.03);

    assert!(
        counter_total(
            &batches,
            "fail",
            "inference.probe.requests",
            &[("outcome", "failure"), ("error.type", "500")]
        ) >= 3.0
    );
    assert_eq!(
        hist_total(
            &batches,
            "fail",
            "inference.probe.duration",
            &[("http.response.status_code", "500")]
        )
        .count as f64,
        counter_total(&batches, "fail", "inference.probe.requests", &[])
    );
    assert!(
        counter_total(&batches, "hang", "inference.probe.requests", &[("error.type", "timeout")])
            >= 2.0
    );
    assert_eq!(
        counter_total(&batches, "hang", "inference.probe.requests", &[("outcome", "success")]),
        0.0
    );
    assert!(
        counter_total(
            &batches,
            "refused",
            "inference.probe.requests",
            &[("error.type", "connection")]
        ) >= 3.0
    );
    let s = stats.snapshot();
    assert!(s.probe_failures >= 8 && s.probes > s.probe_failures, "{s:?}");
}

#[tokio::test]
async fn a_missing_probe_body_file_fails_at_start_and_a_bad_config_names_its_keys() {
    let mut cfg = local_config();
    let mut p = probe("p", "http://127.0.0.1:1/".into(), Duration::from_secs(1));
    p.body_file = Some("/nonexistent/stoker/body.json".into());
    cfg.probe.push(p);
    let ctx = || InferenceContext {
        outbox: Outbox::new(1),
        node_resource: vec![],
        interval: Duration::from_secs(1),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        otlp_grpc_listen: None,
        otlp_http_listen: None,
    };
    let err = start(&cfg, ctx()).expect_err("missing body file");
    assert!(err.to_string().contains("/nonexistent/stoker/body.json"), "{err}");

    let mut cfg = local_config();
    cfg.receiver.max_series = 0;
    let err = start(&cfg, ctx()).expect_err("invalid");
    assert!(err.to_string().contains("inference.receiver.max_series"), "{err}");

    // A port in use is an error at start, naming the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut cfg = local_config();
    cfg.receiver.grpc_listen = taken.local_addr().expect("addr");
    let err = start(&cfg, ctx()).expect_err("port in use");
    assert!(err.to_string().contains("gRPC"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_work_queue_refuses_with_resource_exhausted_and_counts_what_it_shed() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind};

    let mut cfg = local_config();
    cfg.receiver.max_in_flight = 1;
    let agent = start_agent(&cfg, Duration::from_secs(3600));
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", agent.handle.grpc_addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
    let spans: Vec<Span> = (0..50u64)
        .map(|i| Span {
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 1_000 + i * 1_000_000,
            attributes: vec![kv("model.name", &format!("m{}", i % 5))],
            ..Default::default()
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "burst")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    // Bursts of concurrent exports against a queue of one: refusals come fast, never a wait.
    let (mut ok, mut refused, mut rounds) = (0u64, 0u64, 0);
    while refused == 0 && rounds < 20 {
        rounds += 1;
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let mut client = TraceServiceClient::new(channel.clone());
            let request = request.clone();
            calls.spawn(
                async move { client.export(request).await.map(|_| ()).map_err(|s| s.code()) },
            );
        }
        while let Some(result) = calls.join_next().await {
            match result.expect("task") {
                Ok(()) => ok += 1,
                Err(tonic::Code::ResourceExhausted) => refused += 1,
                Err(other) => panic!("unexpected status {other:?}"),
            }
        }
    }
    assert!(refused > 0, "no refusal in {rounds} bursts of 200 against a queue of 1");
    let stats = agent.handle.stats.clone();
    let batches = agent.stop().await;
    let s = stats.snapshot();
    assert_eq!(s.requests_refused, refused);
    assert_eq!(s.spans_shed, refused * 50);
    assert_eq!(s.spans_received, (ok + refused) * 50);
    // What was accepted is all there: 10 spans per model per accepted request.
    let accepted: f64 = (0..5)
        .map(|m| {
            counter_total(
                &batches,
                "burst",
                "inference.requests",
                &[("model.name", &format!("m{m}"))],
            )
        })
        .sum();
    assert_eq!(accepted, (ok * 50) as f64);
}

#[tokio::test]
async fn grpc_receiver_answers_malformed_messages_invalid_argument() {
    let agent = start_agent(&local_config(), Duration::from_secs(3600));
    let client = reqwest::Client::builder().http2_prior_knowledge().build().expect("client");
    let mut truncated = request("grpc-bad", vec![]).encode_to_vec();
    truncated.push(0x0a);
    for path in [
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    ] {
        for msg in [vec![0xffu8; 32], vec![0x0a, 0x05, 0x01], truncated.clone()] {
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            frame.extend_from_slice(&msg);
            let r = client
                .post(format!("http://{}{path}", agent.handle.grpc_addr))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(frame)
                .send()
                .await
                .expect("grpc post");
            // Errors are trailers-only responses: the status is in the headers.
            let status = r.headers().get("grpc-status").and_then(|v| v.to_str().ok());
            assert_eq!(status, Some("3"), "{path} {msg:?}: {:?}", r.headers());
        }
    }
}
