//! Bad input: truncated or garbage protobuf, wrong content type, oversized bodies, NaN/Inf,
//! out-of-order and duplicate points, unknown attribute types. Each gets the protocol's error
//! answer, is counted, nothing stored is lost, and the server keeps serving.

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use stoker_collector::clock::SystemClock;
use stoker_collector::config::Tokens;

use crate::common;

async fn post(c: &reqwest::Client, url: &str, ct: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let r = c.post(url).header("content-type", ct).body(body).send().await.expect("post");
    (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_counted_and_harmless() {
    let srv = common::start_with(
        Tokens::default(),
        |s| s.max_body_bytes = 64 * 1024,
        std::sync::Arc::new(SystemClock),
    )
    .await;
    let c = common::client();
    let url = format!("http://{}/v1/metrics", srv.bound.otlp_http);
    let t0 = common::now_nanos() - 10_000_000_000;
    let good = common::gauge_request("bad-node", "m", t0, 1.0, vec![]);
    let (code, body) = post(&c, &url, "application/x-protobuf", good.encode_to_vec()).await;
    assert_eq!(code, 200);
    let resp = ExportMetricsServiceResponse::decode(body.as_slice()).expect("response");
    assert!(resp.partial_success.is_none());

    // Truncated protobuf and garbage: 400 with a google.rpc.Status body.
    let mut enc = common::gauge_request("bad-node", "m", t0 + 1, 2.0, vec![]).encode_to_vec();
    enc.truncate(enc.len() - 3);
    let (code, body) = post(&c, &url, "application/x-protobuf", enc).await;
    assert_eq!(code, 400);
    let status =
        stoker_collector::ingest::RpcStatus::decode(body.as_slice()).expect("rpc status body");
    assert_eq!(status.code, 3);
    let (code, _) = post(&c, &url, "application/x-protobuf", vec![0xff; 100]).await;
    assert_eq!(code, 400);
    let (code, _) = post(&c, &url, "application/json", b"{\"resourceMetrics\": [".to_vec()).await;
    assert_eq!(code, 400);
    // Wrong content type: 415.
    let (code, _) = post(&c, &url, "text/plain", b"m 1".to_vec()).await;
    assert_eq!(code, 415);
    // Oversized: 413, answered before the body is read, so the connection closes and says so
    // (a pooled connection reused after it would fail the next request).
    let r = c
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(vec![0u8; 200 * 1024])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));

    // NaN, Inf, out-of-order, duplicate, unknown attribute type: partial success.
    let mut req = ExportMetricsServiceRequest::default();
    for (ts, v) in
        [(t0 + 5, f64::NAN), (t0 + 6, f64::INFINITY), (t0 - 5, 3.0), (t0, 4.0), (t0 + 7, 5.0)]
    {
        req.resource_metrics
            .extend(common::gauge_request("bad-node", "m", ts, v, vec![]).resource_metrics);
    }
    let strindex = KeyValue {
        key: "weird".into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValueStrindex(3)) }),
        ..Default::default()
    };
    req.resource_metrics.extend(
        common::gauge_request("bad-node", "m", t0 + 8, 6.0, vec![strindex]).resource_metrics,
    );
    let (code, body) = post(&c, &url, "application/x-protobuf", req.encode_to_vec()).await;
    assert_eq!(code, 200);
    let resp = ExportMetricsServiceResponse::decode(body.as_slice()).expect("response");
    let ps = resp.partial_success.expect("partial success");
    assert_eq!(ps.rejected_data_points, 5, "{}", ps.error_message);
    assert!(
        ps.error_message.contains("non-finite")
            && ps.error_message.contains("out-of-order")
            && ps.error_message.contains("duplicate"),
        "{}",
        ps.error_message
    );

    // The same over gRPC: partial success in the response.
    let mut grpc = MetricsServiceClient::connect(format!("http://{}", srv.bound.otlp_grpc))
        .await
        .expect("grpc connect");
    let r = grpc
        .export(common::gauge_request("bad-node", "m", t0 + 9, f64::NAN, vec![]))
        .await
        .expect("grpc export");
    assert_eq!(r.into_inner().partial_success.expect("partial").rejected_data_points, 1);
    let r = grpc
        .export(common::gauge_request("bad-node", "m", t0 + 10, 10.0, vec![]))
        .await
        .expect("grpc export");
    assert!(r.into_inner().partial_success.is_none());

    // Nothing stored was lost: 1.0 (t0), 5.0 (t0+7), 10.0 (t0+10); the server still answers.
    let g = common::query(
        &c,
        srv.bound.api,
        &[("selector", "m{host.name=\"bad-node\"}"), ("stat", "count"), ("window", "1m")],
    )
    .await;
    assert_eq!(g[0]["value"], 3.0);
    let g =
        common::query(&c, srv.bound.api, &[("selector", "m"), ("stat", "sum"), ("window", "1m")])
            .await;
    assert_eq!(g[0]["value"], 16.0);
    // Counted and visible.
    let metrics = c
        .get(format!("http://{}/metrics", srv.bound.api))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "stoker_collector_points_refused_total{reason=\"non_finite\"} 3",
        "stoker_collector_points_refused_total{reason=\"out_of_order\"} 1",
        "stoker_collector_points_refused_total{reason=\"duplicate\"} 1",
        "stoker_collector_points_refused_total{reason=\"invalid\"} 1",
        "stoker_collector_ingest_request_errors_total{cause=\"decode\"} 3",
        "stoker_collector_ingest_request_errors_total{cause=\"content_type\"} 1",
        "stoker_collector_ingest_request_errors_total{cause=\"too_large\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    // Bad query parameters are a 400 with a message, not a crash.
    let r = c
        .get(format!("http://{}/api/v1/query", srv.bound.api))
        .query(&[("selector", "m{a=b}"), ("stat", "mean")])
        .send()
        .await
        .expect("q");
    assert_eq!(r.status().as_u16(), 400);
    let r = c
        .get(format!("http://{}/api/v1/query", srv.bound.api))
        .query(&[("selector", "m"), ("stat", "p101")])
        .send()
        .await
        .expect("q");
    assert_eq!(r.status().as_u16(), 400);
}
