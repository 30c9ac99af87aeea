//! API and auth: separate read and write bearer tokens, gRPC auth, nodes with health in
//! virtual time, series listing, range queries and the OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use prost::Message;
use stoker_collector::clock::ManualClock;
use stoker_collector::config::Tokens;

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_ingest_and_api_separately() {
    let t0 = 1_800_000_000_000_000_000u64;
    let clock = ManualClock::new(t0);
    let tokens = Tokens { read: Some("read-secret".into()), write: Some("write-secret".into()) };
    let srv = common::start_with(tokens, |_| {}, Arc::new(clock.clone())).await;
    let c = common::client();
    let ingest = format!("http://{}/v1/metrics", srv.bound.otlp_http);
    let body = |host: &str, ts: u64| {
        common::gauge_request(
            host,
            "hw.gpu.utilization",
            ts,
            0.5,
            vec![common::kv("hw.id", &format!("{host}-gpu"))],
        )
        .encode_to_vec()
    };
    let post = |token: Option<&'static str>, b: Vec<u8>| {
        let mut r = c.post(&ingest).header("content-type", "application/x-protobuf").body(b);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(post(None, body("n1", t0)).await.expect("post").status().as_u16(), 401);
    assert_eq!(
        post(Some("read-secret"), body("n1", t0)).await.expect("post").status().as_u16(),
        401,
        "the read token cannot write"
    );
    assert_eq!(
        post(Some("write-secret"), body("n1", t0)).await.expect("post").status().as_u16(),
        200
    );
    assert_eq!(
        post(Some("write-secret"), body("n2", t0 - 60_000_000_000))
            .await
            .expect("post")
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        post(Some("write-secret"), body("n3", t0 - 600_000_000_000))
            .await
            .expect("post")
            .status()
            .as_u16(),
        200
    );

    // gRPC without a token: UNAUTHENTICATED; with it: accepted.
    let mut grpc = MetricsServiceClient::connect(format!("http://{}", srv.bound.otlp_grpc))
        .await
        .expect("connect");
    let err =
        grpc.export(common::gauge_request("n4", "m", t0, 1.0, vec![])).await.expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(common::gauge_request("n4", "m", t0, 1.0, vec![]));
    req.metadata_mut().insert("authorization", "Bearer write-secret".parse().expect("header"));
    grpc.export(req).await.expect("with token");

    let api = srv.bound.api;
    let r = c.get(format!("http://{api}/api/v1/nodes")).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .get(format!("http://{api}/api/v1/nodes"))
        .bearer_auth("write-secret")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 401, "the write token cannot read");
    assert_eq!(
        c.get(format!("http://{api}/healthz")).send().await.expect("healthz").status().as_u16(),
        200
    );
    assert_eq!(
        c.get(format!("http://{api}/readyz")).send().await.expect("readyz").status().as_u16(),
        200
    );

    let nodes: serde_json::Value = c
        .get(format!("http://{api}/api/v1/nodes"))
        .bearer_auth("read-secret")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let nodes = nodes["nodes"].as_array().expect("nodes").clone();
    assert_eq!(nodes.len(), 4);
    let health = |n: &str| {
        nodes.iter().find(|x| x["name"] == n).map(|x| {
            (x["health"].as_str().unwrap_or("").to_string(), x["gpu_count"].as_u64().unwrap_or(99))
        })
    };
    assert_eq!(health("n1"), Some(("ok".into(), 1)));
    assert_eq!(health("n2"), Some(("stale".into(), 1)));
    assert_eq!(health("n3"), Some(("lost".into(), 1)));
    assert_eq!(health("n4"), Some(("ok".into(), 0)));

    // Time passes: n1 goes stale.
    clock.advance(Duration::from_secs(45));
    let nodes: serde_json::Value = c
        .get(format!("http://{api}/api/v1/nodes"))
        .bearer_auth("read-secret")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let n1 = nodes["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|x| x["name"] == "n1")
        .cloned()
        .expect("n1");
    assert_eq!(n1["health"], "stale");

    let series: serde_json::Value = c
        .get(format!("http://{api}/api/v1/series"))
        .query(&[("selector", "hw.gpu.utilization{host.name=~\"n[12]\"}")])
        .bearer_auth("read-secret")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(series["series"].as_array().expect("series").len(), 2);
    let metrics: serde_json::Value = c
        .get(format!("http://{api}/api/v1/series"))
        .bearer_auth("read-secret")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(
        metrics["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .any(|m| m["name"] == "hw.gpu.utilization" && m["series"] == 3)
    );

    let start = (t0 - 120_000_000_000).to_string();
    let end = t0.to_string();
    let range: serde_json::Value = c
        .get(format!("http://{api}/api/v1/query"))
        .query(&[
            ("selector", "hw.gpu.utilization"),
            ("stat", "count"),
            ("window", "30s"),
            ("group_by", "host.name"),
            ("start", start.as_str()),
            ("end", end.as_str()),
            ("step", "30s"),
        ])
        .bearer_auth("read-secret")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(range["result"]["type"], "range");
    let groups = range["result"]["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "n1 and n2 have points in the range: {range}");

    let doc: serde_json::Value = c
        .get(format!("http://{api}/api/v1/openapi.json"))
        .bearer_auth("read-secret")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    for p in ["/api/v1/series", "/api/v1/query", "/api/v1/nodes"] {
        assert!(doc["paths"][p].is_object(), "{p} documented");
    }
    let m = c
        .get(format!("http://{api}/metrics"))
        .bearer_auth("read-secret")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        m.contains("stoker_collector_ingest_request_errors_total{cause=\"unauthorized\"} 5"),
        "{m}"
    );
}
