//! Hostile input: requests built to exhaust memory or reach a panic (extreme exponential
//! histogram offsets and scales, bucket floods, empty-point floods, attribute floods, deep
//! values), malformed gRPC, and slowloris connections against the real binary. Each is refused
//! quickly with the protocol's answer, and the collector keeps serving.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Metric,
    ResourceMetrics, ScopeMetrics, exponential_histogram_data_point::Buckets, metric,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::io::AsyncWriteExt;

use crate::common::{self, Collector};

/// An exponential histogram request: one cumulative point per `(scale, offset, counts)`.
fn exp_request(
    host: &str,
    t0: u64,
    points: &[(i32, i32, Vec<u64>)],
) -> ExportMetricsServiceRequest {
    let data_points = points
        .iter()
        .enumerate()
        .map(|(i, (scale, offset, counts))| ExponentialHistogramDataPoint {
            start_time_unix_nano: t0 - 1_000_000_000,
            time_unix_nano: t0 + i as u64 * 1_000_000,
            count: counts.iter().sum(),
            sum: Some(1.0),
            scale: *scale,
            positive: Some(Buckets { offset: *offset, bucket_counts: counts.clone() }),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![common::kv("host.name", host)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "latency".into(),
                    data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                        data_points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn post(c: &reqwest::Client, url: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.post(url).header("content-type", "application/x-protobuf").body(body).send(),
    )
    .await
    .expect("answered within 10 s")
    .expect("post");
    (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
}

fn rpc_message(body: &[u8]) -> String {
    stoker_collector::ingest::RpcStatus::decode(body).map(|s| s.message).unwrap_or_default()
}

/// The real binary, its address space capped at 4 GiB: a request that makes it allocate
/// without bound kills this child (allocation failure), never the machine.
fn spawn_capped(data_dir: &std::path::Path) -> Collector {
    spawn_under(data_dir, "ulimit -v 4194304")
}

/// The real binary started by `sh` after `limit` (a `ulimit` command) on loopback ports.
fn spawn_under(data_dir: &std::path::Path, limit: &str) -> Collector {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("{limit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_stoker-collector"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(common::LOOPBACK_LISTENERS)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn collector");
    Collector::attach(child)
}

/// The request that took the collector down: two cumulative points of one exponential
/// histogram series whose bucket offsets lie two billion buckets apart. Subtracting one from
/// the other laid both onto one vector of ~2·10⁹ counts (16 GB). Run against the real binary
/// with a 4 GiB address-space cap: before the fix the child died; now it answers 400 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_exponential_offsets_are_refused_not_allocated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut col = spawn_capped(dir.path());
    let c = common::client();
    let url = format!("http://{}/v1/metrics", col.http);
    let t0 = common::now_nanos() - 10_000_000_000;
    let killer = exp_request("k", t0, &[(0, -1_000_000_000, vec![1]), (0, 1_000_000_000, vec![2])]);
    let body = killer.encode_to_vec();
    assert!(body.len() < 320, "{} bytes", body.len());
    let started = Instant::now();
    let (code, resp) = post(&c, &url, body).await;
    assert_eq!(code, 400, "{}", rpc_message(&resp));
    assert!(rpc_message(&resp).contains("offset outside"), "{}", rpc_message(&resp));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    // In range at scale 20 (a tiny and a huge magnitude), but just as far apart: accepted,
    // merged at a coarser scale within the bucket limit.
    let far = exp_request("k", t0, &[(20, -1_000_000_000, vec![1]), (20, 1_000_000_000, vec![2])]);
    let (code, resp) = post(&c, &url, far.encode_to_vec()).await;
    assert_eq!(code, 200, "{}", rpc_message(&resp));
    // Integer overflow at the edges of i32, more buckets than allowed, a scale out of range.
    for (pts, why) in [
        (vec![(20, i32::MAX, vec![1, 1])], "offset outside"),
        (vec![(20, i32::MIN, vec![1])], "offset outside"),
        (vec![(0, 0, vec![1; 100_000])], "more than 160 buckets"),
        (vec![(i32::MIN, 0, vec![1])], "scale out of range"),
    ] {
        let (code, resp) =
            post(&c, &url, exp_request("k", t0 + 5_000_000, &pts).encode_to_vec()).await;
        assert_eq!(code, 400, "{}", rpc_message(&resp));
        assert!(rpc_message(&resp).contains(why), "{why}: {}", rpc_message(&resp));
    }
    // Still alive and answering, well under the cap.
    let health = c.get(format!("http://{}/healthz", col.api)).send().await.expect("health");
    assert_eq!(health.status().as_u16(), 200);
    assert!(col.child.try_wait().expect("wait").is_none(), "collector exited");
    let rss = rss_kib(col.child.id());
    assert!(rss < 512 * 1024, "RSS {rss} KiB");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_refused_and_good_points_beside_them_kept() {
    let srv = common::start().await;
    let c = common::client();
    let url = format!("http://{}/v1/metrics", srv.bound.otlp_http);
    let t0 = common::now_nanos() - 10_000_000_000;

    // 4 Mi empty data points: 8 MiB on the wire, ~800 MB decoded. Refused before decoding.
    let mut gauge = Vec::with_capacity(8 << 20);
    for _ in 0..(4 << 20) {
        gauge.extend_from_slice(&[0x0a, 0x00]);
    }
    let wrap = |field: u8, inner: &[u8]| {
        let mut out = vec![field];
        let mut n = inner.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(inner);
        out
    };
    let body = wrap(0x0a, &wrap(0x12, &wrap(0x12, &wrap(0x2a, &gauge))));
    let (code, resp) = post(&c, &url, body).await;
    assert_eq!(code, 413, "{}", rpc_message(&resp));
    assert!(rpc_message(&resp).contains("to decode"), "{}", rpc_message(&resp));

    // Attribute floods and deep values beside a good point: partial success, the good one kept.
    let many: Vec<KeyValue> = (0..200).map(|i| common::kv(&format!("k{i}"), "v")).collect();
    let mut deep = AnyValue { value: Some(any_value::Value::StringValue("x".into())) };
    for _ in 0..10 {
        deep = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![deep] })),
        };
    }
    let deep_kv = KeyValue { key: "deep".into(), value: Some(deep), ..Default::default() };
    let long_kv = common::kv("long", &"x".repeat(10_000));
    let map_kv = KeyValue {
        key: "map".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![common::kv("a", "b")],
            })),
        }),
        ..Default::default()
    };
    let mut req = common::gauge_request("flood", "m", t0, 1.0, many);
    for (i, attrs) in [vec![deep_kv], vec![long_kv], vec![map_kv]].into_iter().enumerate() {
        req.resource_metrics.extend(
            common::gauge_request("flood", "m", t0 + 1 + i as u64, 2.0, attrs).resource_metrics,
        );
    }
    let (code, resp) = post(&c, &url, req.encode_to_vec()).await;
    assert_eq!(code, 200);
    let ps = ExportMetricsServiceResponse::decode(resp.as_slice())
        .expect("response")
        .partial_success
        .expect("partial success");
    assert_eq!(ps.rejected_data_points, 3, "{}", ps.error_message);
    for why in ["more than 128 attributes", "nested deeper", "longer than 4096"] {
        assert!(ps.error_message.contains(why), "{why}: {}", ps.error_message);
    }
    let g = common::query(
        &c,
        srv.bound.api,
        &[("selector", "m{host.name=\"flood\"}"), ("stat", "count"), ("window", "1m")],
    )
    .await;
    assert_eq!(g[0]["value"], 1.0, "{g:?}");

    // Over the points-per-request limit: the first 100,000 go in, the rest come back refused.
    let limit = stoker_collector::ingest::otlp::MAX_POINTS_PER_REQUEST;
    let mut req = common::gauge_request("many", "n", t0, 1.0, vec![]);
    if let Some(metric::Data::Gauge(g)) =
        req.resource_metrics[0].scope_metrics[0].metrics[0].data.as_mut()
    {
        let p = g.data_points[0].clone();
        g.data_points = (0..limit + 10)
            .map(|i| {
                let mut p = p.clone();
                p.attributes = vec![common::kv("i", &(i % 100).to_string())];
                p.time_unix_nano = t0 + i / 100 + 1;
                p
            })
            .collect();
    }
    let (code, resp) = post(&c, &url, req.encode_to_vec()).await;
    assert_eq!(code, 200);
    let ps = ExportMetricsServiceResponse::decode(resp.as_slice())
        .expect("response")
        .partial_success
        .expect("partial success");
    assert_eq!(ps.rejected_data_points, 10, "{}", ps.error_message);
    assert!(ps.error_message.contains("100000 data points"), "{}", ps.error_message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_is_invalid_argument() {
    let srv = common::start().await;
    let c = reqwest::Client::builder().http2_prior_knowledge().build().expect("client");
    let url = format!(
        "http://{}/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        srv.bound.otlp_grpc
    );
    let t0 = common::now_nanos() - 10_000_000_000;
    let mut truncated = common::gauge_request("g", "m", t0, 1.0, vec![]).encode_to_vec();
    truncated.truncate(truncated.len() - 3);
    let killer = exp_request("g", t0, &[(0, -1_000_000_000, vec![1]), (0, 1_000_000_000, vec![2])])
        .encode_to_vec();
    for (msg, want) in
        [(vec![0xffu8; 64], "3"), (truncated, "3"), (vec![0x0a, 0x05, 0x01], "3"), (killer, "3")]
    {
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        frame.extend_from_slice(&msg);
        let r = c
            .post(&url)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(frame)
            .send()
            .await
            .expect("grpc post");
        // An error is a trailers-only response: the status is in the headers.
        let status = r.headers().get("grpc-status").and_then(|v| v.to_str().ok());
        assert_eq!(status, Some(want), "{:?}", r.headers());
    }
    assert_eq!(srv.handles.ingest.decode_errors.load(std::sync::atomic::Ordering::Relaxed), 3);
}

/// 300 connections trickling a request head one byte at a time do not delay normal requests:
/// each answers within a second while they hang on (the real binary, loopback only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_do_not_delay_normal_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let col = spawn_capped(dir.path());
    let stop = tokio_util::sync::CancellationToken::new();
    let mut slow = Vec::new();
    for i in 0..300 {
        let addr = if i % 2 == 0 { col.http.clone() } else { col.api.clone() };
        let stop = stop.clone();
        slow.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else { return 0u32 };
            let head = b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            if s.write_all(head).await.is_err() {
                return 0;
            }
            let mut sent = 0;
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if s.write_all(b"a").await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = common::client();
    let t0 = common::now_nanos() - 10_000_000_000;
    let mut worst = Duration::ZERO;
    for i in 0..10u64 {
        let started = Instant::now();
        let h = c.get(format!("http://{}/healthz", col.api)).send().await.expect("health");
        assert_eq!(h.status().as_u16(), 200);
        let body = common::gauge_request("slow", "m", t0 + i, 1.0, vec![]).encode_to_vec();
        let r = col.export(&c, body).await;
        assert_eq!(r.status().as_u16(), 200);
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    let mut trickled = 0;
    for h in slow {
        trickled += u32::from(h.await.expect("slow task") > 0);
    }
    assert!(trickled >= 290, "only {trickled} slow connections held on");
    assert!(worst < Duration::from_secs(1), "a normal request took {worst:?}");
}

/// Regression: with no connection limit, 1,100 slow connections under a 1,024 open-file limit
/// made `accept` fail on every listener and normal requests timed out. Now each listener holds
/// at most its share of the descriptors, the rest wait in the kernel's backlog, and the API
/// (a listener of its own) answers within a second while the flood hangs on; the flooded port
/// serves again once the flood ends (the real binary, loopback only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_beyond_the_file_limit_leaves_the_api_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let col = spawn_under(dir.path(), "ulimit -n 1024");
    let stop = tokio_util::sync::CancellationToken::new();
    let mut flood = Vec::new();
    for _ in 0..1_100 {
        let (addr, stop) = (col.http.clone(), stop.clone());
        flood.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else { return false };
            if s.write_all(b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.is_err() {
                return false;
            }
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if s.write_all(b"a").await.is_err() {
                    break;
                }
            }
            true
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let c = common::client();
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let r = c
            .get(format!("http://{}/api/v1/series", col.api))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("the API answers during the flood");
        assert_eq!(r.status().as_u16(), 200);
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let connected = futures_util::future::join_all(flood).await;
    let held = connected.into_iter().filter(|c| matches!(c, Ok(true))).count();
    assert!(held >= 1_000, "only {held} of 1,100 flood connections were made");
    assert!(worst < Duration::from_secs(1), "an API request took {worst:?} during the flood");
    // The flood is gone: the flooded port takes exports again.
    let t0 = common::now_nanos() - 10_000_000_000;
    let body = common::gauge_request("after-flood", "m", t0, 1.0, vec![]).encode_to_vec();
    let mut ok = false;
    for _ in 0..50 {
        let r = c
            .post(format!("http://{}/v1/metrics", col.http))
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "ingest serves again after the flood");
}

/// A body declared longer than the limit is refused from its `Content-Length`, before a byte
/// of it is read (nothing is buffered for it), and the connection's answer comes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_oversized_body_is_refused_before_it_is_read() {
    use tokio::io::AsyncReadExt;
    let srv = common::start().await;
    let mut s = tokio::net::TcpStream::connect(srv.bound.otlp_http).await.expect("connect");
    let head = "POST /v1/metrics HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: 1073741824\r\n\r\n";
    s.write_all(head.as_bytes()).await.expect("write head");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("answered without the body")
        .expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(srv.handles.ingest.too_large.load(std::sync::atomic::Ordering::Relaxed), 1);
}
