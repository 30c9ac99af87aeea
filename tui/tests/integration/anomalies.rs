//! `HttpSource` and `/api/v1/anomalies`: the exact JSON the collector's anomaly detection
//! serves is read into the Fleet rows (a count per node) and the Node screen (the list with
//! why); a collector without anomaly detection (404) gives no anomalies and no error. The
//! collector is stood in for by a small loopback HTTP server answering the four paths the two
//! screens ask for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use stoker_collector::api::types::{
    InstantGroup, NodeHealth, NodeItem, NodesResponse, QueryResponse, QueryResult, RangeGroup,
    RangePoint,
};
use stoker_tui::client::{Need, Snapshot, Source};
use stoker_tui::http::HttpSource;
use stoker_tui::model::NANOS_PER_SEC;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const T: u64 = 1_700_000_000 * NANOS_PER_SEC;

/// The anomalies endpoint's answer, written out as the contract gives it (highest score first).
const ANOMALIES: &str = r#"{"evaluatedAt": 1700000000000000000, "anomalies": [
  {"subject": "node-b/cnn", "node": "node-b", "model": "cnn", "baseline": "history",
   "feature": "power_at_util", "value": 410.0, "expected": 330.0, "score": 5.0,
   "why": "410 W at 70 % utilisation; its history says 330 W", "since": 1699999940000000000},
  {"subject": "node-b", "node": "node-b", "model": null, "baseline": "peers",
   "feature": "latency_at_gpu_load", "value": 0.094, "expected": 0.041, "score": 4.2,
   "why": "p95 94 ms at 60 % GPU load; peers see 41 ms", "since": 1699999880000000000},
  {"subject": "node-c", "node": "node-c", "model": null, "baseline": "history",
   "feature": "cpu", "value": 0.9, "expected": 0.2, "score": 3.0,
   "why": "CPU 90 % against 20 % usually", "since": 1699999900000000000}
]}"#;

fn node(name: &str, id: &str) -> NodeItem {
    NodeItem {
        name: name.into(),
        host_id: id.into(),
        last_seen_unix_nano: T,
        age_seconds: 1.0,
        health: NodeHealth::Ok,
        gpu_count: 0,
        labels: BTreeMap::new(),
    }
}

/// The body for one request target (path and query string).
fn answer(target: &str, anomalies: bool) -> (u16, String) {
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/api/v1/nodes" => {
            let r = NodesResponse {
                nodes: vec![node("node-a", "id-a"), node("node-b", "id-b"), node("node-c", "id-c")],
                now_unix_nano: T,
            };
            (200, serde_json::to_string(&r).unwrap())
        }
        "/api/v1/anomalies" if anomalies => (200, ANOMALIES.to_owned()),
        "/api/v1/query" => {
            let result = if target.contains("step=") {
                // Every node has a CPU history, so the Node screen finds it.
                let points = vec![RangePoint { t: T, v: 0.5 }];
                QueryResult::Range(vec![RangeGroup { group: BTreeMap::new(), points }])
            } else {
                QueryResult::Instant(Vec::<InstantGroup>::new())
            };
            let r = QueryResponse {
                stat: "last".into(),
                window_seconds: 60.0,
                time_unix_nano: T,
                result,
            };
            (200, serde_json::to_string(&r).unwrap())
        }
        _ => (404, r#"{"error":"not found"}"#.to_owned()),
    }
}

/// Serves HTTP/1.1 on loopback, one request per connection; returns the base URL.
async fn serve(anomalies: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let anomalies = Arc::new(anomalies);
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let anomalies = anomalies.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf);
                let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, body) = answer(&target, *anomalies);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn source(url: &str) -> HttpSource {
    let _ = rustls::crypto::ring::default_provider().install_default();
    HttpSource::new(url, None).unwrap()
}

fn node_need(name: &str) -> Need {
    Need::Node {
        node: name.into(),
        window: Duration::from_secs(300),
        step: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn anomalies_reach_the_fleet_rows_and_the_node_screen() {
    let url = serve(true).await;
    let mut src = source(&url);
    let Snapshot::Fleet(rows) = src.fetch(&Need::Fleet).await.unwrap() else {
        panic!("not a fleet")
    };
    let count = |name: &str| rows.iter().find(|r| r.node == name).unwrap().health.anomalies;
    assert_eq!((count("node-a"), count("node-b"), count("node-c")), (0, 2, 1));
    let Snapshot::Node(d) = src.fetch(&node_need("node-b")).await.unwrap() else {
        panic!("not a node")
    };
    assert_eq!(d.anomalies.len(), 2);
    // The collector's order (highest score first) is kept.
    let a = &d.anomalies[0];
    assert_eq!(
        (a.subject.as_str(), a.model.as_deref(), a.baseline.as_str()),
        ("node-b/cnn", Some("cnn"), "history")
    );
    assert_eq!(
        (a.feature.as_str(), a.value, a.expected, a.score),
        ("power_at_util", 410.0, 330.0, 5.0)
    );
    assert_eq!(a.since, 1_699_999_940 * NANOS_PER_SEC);
    assert_eq!(d.anomalies[1].why, "p95 94 ms at 60 % GPU load; peers see 41 ms");
    assert_eq!(d.anomalies[1].model, None);
    let Snapshot::Node(d) = src.fetch(&node_need("node-a")).await.unwrap() else {
        panic!("not a node")
    };
    assert!(d.anomalies.is_empty());
}

#[tokio::test]
async fn a_collector_without_anomaly_detection_is_not_an_error() {
    let url = serve(false).await;
    let mut src = source(&url);
    let Snapshot::Fleet(rows) = src.fetch(&Need::Fleet).await.unwrap() else {
        panic!("not a fleet")
    };
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.health.anomalies == 0));
    let Snapshot::Node(d) = src.fetch(&node_need("node-b")).await.unwrap() else {
        panic!("not a node")
    };
    assert!(d.anomalies.is_empty());
}
