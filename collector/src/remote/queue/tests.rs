//! The queue against a local HTTP server that answers remote-write as scripted (the real
//! remote stores are exercised in `tests/integration/remote.rs`).

use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;
use crate::duration::HumanDuration;

const T0: u64 = 1_800_000_000_000_000_000;
const ALL_TIME: (u64, u64) = (0, u64::MAX);

/// What the fake remote has seen, and the statuses it answers with (the last repeats).
struct Script {
    statuses: Vec<u16>,
    calls: AtomicUsize,
    /// Samples of the test's gauge taken (each push also carries one `target_info` sample per
    /// resource, left out here).
    samples: AtomicU64,
    /// `(host_name label, timestamp)` of every gauge sample taken, in arrival order.
    timestamps: Mutex<Vec<(String, i64)>>,
}

async fn write(State(s): State<Arc<Script>>, body: Bytes) -> StatusCode {
    let i = s.calls.fetch_add(1, Ordering::SeqCst);
    let status = s.statuses[i.min(s.statuses.len() - 1)];
    if status == 204 {
        let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy body");
        let w = WriteRequest::decode(raw.as_slice()).expect("protobuf body");
        let gauge = |t: &&super::super::wire::TimeSeries| {
            t.labels.iter().any(|l| l.name == "__name__" && l.value == "hw_gpu_utilization_ratio")
        };
        for t in w.timeseries.iter().filter(gauge) {
            s.samples.fetch_add(t.samples.len() as u64, Ordering::SeqCst);
            let host = t.labels.iter().find(|l| l.name == "host_name").map(|l| l.value.clone());
            let host = host.unwrap_or_default();
            s.timestamps.lock().extend(t.samples.iter().map(|x| (host.clone(), x.timestamp)));
        }
    }
    StatusCode::from_u16(status).expect("status")
}

/// A remote-write endpoint on loopback answering `statuses` in turn.
async fn remote(statuses: &[u16]) -> (String, Arc<Script>) {
    let script = Arc::new(Script {
        statuses: statuses.to_vec(),
        calls: AtomicUsize::new(0),
        samples: AtomicU64::new(0),
        timestamps: Mutex::new(Vec::new()),
    });
    let app = Router::new().route("/api/v1/write", post(write)).with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}/api/v1/write"), script)
}

fn config(url: &str) -> RemoteConfig {
    RemoteConfig {
        write_url: Some(url.to_owned()),
        query_url: Some("http://127.0.0.1:1".into()),
        shards: 2,
        min_backoff: HumanDuration(Duration::from_millis(5)),
        max_backoff: HumanDuration(Duration::from_millis(20)),
        ..RemoteConfig::default()
    }
}

/// One gauge point per host at `ts`.
fn request(hosts: usize, ts: u64) -> ExportMetricsServiceRequest {
    let resource_metrics = (0..hosts)
        .map(|h| ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "host.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("gpu-{h}"))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "hw.gpu.utilization".into(),
                    unit: "1".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: ts,
                            value: Some(number_data_point::Value::AsDouble(0.5)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

async fn push(w: &Arc<RemoteWriter>, req: ExportMetricsServiceRequest) -> Result<u64, PushError> {
    let w = w.clone();
    tokio::task::spawn_blocking(move || w.push(&req, ALL_TIME)).await.expect("join")
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn stat(w: &RemoteWriter, f: impl Fn(&Stats) -> &AtomicU64) -> u64 {
    f(&w.shared.stats).load(Ordering::SeqCst)
}

#[tokio::test]
async fn server_errors_are_retried_until_the_remote_takes_the_samples() {
    let (url, script) = remote(&[500, 503, 429, 204]).await;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&url);
    cfg.shards = 1;
    let w =
        RemoteWriter::start(cfg, None, Some(dir.path()), cancel.clone(), &tracker).expect("start");
    // Three gauge points and one `target_info` sample per host.
    assert_eq!(push(&w, request(3, T0)).await.expect("push"), 6);
    until("the samples to land", || script.samples.load(Ordering::SeqCst) == 3).await;
    until("the queue to empty", || w.queued_bytes() == 0).await;
    assert_eq!(stat(&w, |s| &s.retries), 3);
    assert_eq!(stat(&w, |s| &s.dropped_rejected), 0);
    assert_eq!(w.samples_sent(), 6);
    let text = w.metrics_text();
    assert!(text.contains("stoker_remote_write_retries_total 3"), "{text}");
    assert!(text.contains("stoker_remote_write_samples_sent_total 6"), "{text}");
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test]
async fn a_refusal_drops_only_that_request_and_counts_it() {
    let (url, script) = remote(&[400, 204]).await;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut cfg = config(&url);
    cfg.shards = 1;
    let w = RemoteWriter::start(cfg, None, None, cancel.clone(), &tracker).expect("start");
    push(&w, request(2, T0)).await.expect("push");
    until("the refusal", || stat(&w, |s| &s.dropped_rejected) == 4).await;
    push(&w, request(2, T0 + 1_000_000_000)).await.expect("push");
    until("the second request to land", || script.samples.load(Ordering::SeqCst) == 2).await;
    assert_eq!(stat(&w, |s| &s.retries), 0);
    assert_eq!(w.samples_sent(), 4);
    assert_eq!(stat(&w, |s| &s.dropped_rejected), 4, "only the refused request was dropped");
    let got: Vec<i64> = script.timestamps.lock().iter().map(|(_, t)| *t).collect();
    assert_eq!(got, vec![1_800_000_001_000; 2]);
    cancel.cancel();
}

#[tokio::test]
async fn a_full_queue_refuses_before_taking_anything() {
    let (url, script) = remote(&[503]).await;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut cfg = config(&url);
    cfg.max_queue_bytes = 1;
    let w = RemoteWriter::start(cfg, None, None, cancel.clone(), &tracker).expect("start");
    push(&w, request(4, T0)).await.expect("the first push fits");
    let queued = stat(&w, |s| &s.samples_queued);
    let bytes = w.queued_bytes();
    match push(&w, request(4, T0 + 1)).await {
        Err(PushError::Full(f)) => {
            assert_eq!(f.limit, 1);
            assert!(f.to_string().contains("full"), "{f}");
        }
        other => panic!("expected Full, got {other:?}"),
    }
    // Nothing of the refused request was counted or queued.
    assert_eq!(stat(&w, |s| &s.samples_queued), queued);
    assert_eq!(w.queued_bytes(), bytes);
    until("a retry", || script.calls.load(Ordering::SeqCst) >= 2).await;
    assert_eq!(w.samples_sent(), 0);
    cancel.cancel();
}

#[tokio::test]
async fn what_was_acknowledged_survives_a_restart_and_is_sent_by_the_next_run() {
    let dir = tempfile::tempdir().expect("tmp");
    // First run: the remote is down; the pushes are acknowledged (durable) but not sent.
    {
        let (url, script) = remote(&[500]).await;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let w = RemoteWriter::start(config(&url), None, Some(dir.path()), cancel.clone(), &tracker)
            .expect("start");
        for k in 0..5u64 {
            push(&w, request(3, T0 + k * 1_000_000_000)).await.expect("push");
        }
        until("some retries", || script.calls.load(Ordering::SeqCst) >= 2).await;
        assert_eq!(w.samples_sent(), 0);
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }
    // Second run: the queue is read back and sent, each series in time order.
    let (url, script) = remote(&[204]).await;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let w = RemoteWriter::start(config(&url), None, Some(dir.path()), cancel.clone(), &tracker)
        .expect("restart");
    until("the recovered samples to land", || script.samples.load(Ordering::SeqCst) == 15).await;
    until("the queue to empty", || w.queued_bytes() == 0).await;
    assert_eq!(w.samples_sent(), 30, "15 gauge points and 15 target_info samples");
    let got = script.timestamps.lock().clone();
    for h in 0..3 {
        let host = format!("gpu-{h}");
        let ts: Vec<i64> = got.iter().filter(|(g, _)| *g == host).map(|(_, t)| *t).collect();
        let want: Vec<i64> = (0..5).map(|k| 1_800_000_000_000 + k * 1000).collect();
        assert_eq!(ts, want, "{host}: each sample once, in time order");
    }
    // New pushes get sequence numbers after the recovered ones and are sent too.
    push(&w, request(1, T0 + 9_000_000_000)).await.expect("push");
    until("the new sample", || script.samples.load(Ordering::SeqCst) == 16).await;
    until("the queue to empty again", || w.queued_bytes() == 0).await;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    // The writer holds the queue file open until it is dropped, as a serving collector does.
    drop(w);
    // Sent entries were deleted from the file: a third run has nothing to send.
    let (url, script) = remote(&[204]).await;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let w = RemoteWriter::start(config(&url), None, Some(dir.path()), cancel.clone(), &tracker)
        .expect("third run");
    assert_eq!(w.queued_bytes(), 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(script.calls.load(Ordering::SeqCst), 0);
    cancel.cancel();
}

#[test]
fn samples_in_reads_a_stored_payload() {
    let series = (0..3)
        .map(|i| super::super::wire::TimeSeries {
            labels: vec![],
            samples: vec![super::super::wire::Sample { value: 1.0, timestamp: i }; 2],
        })
        .collect();
    let raw = WriteRequest { timeseries: series }.encode_to_vec();
    let payload = snap::raw::Encoder::new().compress_vec(&raw).expect("snappy");
    assert_eq!(samples_in(&payload), 6);
    assert_eq!(samples_in(b"not snappy"), 0);
}
