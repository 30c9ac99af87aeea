//! Anomaly signals (issue 9): a store fed with a fleet of 12 nodes over 3 hours where one
//! node's GPU power at the same utilisation drops by 25 % and another node's ResNet latency
//! at the same load rises by 60 % in the last 10 minutes; the scorer flags exactly those
//! against their peers (and the power drop against the node's own history), and
//! `GET /api/v1/anomalies` serves them with the agreed JSON contract.

use std::sync::Arc;
use std::time::Duration;

use stoker_collector::anomaly::{self, AnomalyConfig, AnomalyScorer};
use stoker_collector::clock::ManualClock;
use stoker_collector::config::Tokens;
use stoker_collector::server::{self, ServeOptions};
use stoker_collector::store::{Histogram, PointValue, Store, StoreConfig, sort_pairs};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common;

const NODES: usize = 12;
const MIN: u64 = 60_000_000_000;

/// Deterministic noise in [-1, 1].
fn noise(i: u64, j: u64) -> f64 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ j.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % 20_001) as f64 / 10_000.0 - 1.0
}

fn feed(store: &Store, t0: u64, minutes: u64, anomalous_from: u64) {
    let bounds: Vec<f64> = (1..=200).map(|k| f64::from(k) * 0.002).collect();
    for m in 0..minutes {
        let ts = t0 + m * MIN;
        let mut w = store.writer();
        for n in 0..NODES {
            let node = format!("node-{n:02}");
            // Load follows a cycle of about 75 minutes (the history holds two), shifted per node, so utilisation varies across the
            // fleet and over time; power and latency follow utilisation.
            let phase = m as f64 / 12.0 + n as f64 * 0.5;
            let util = (0.55 + 0.3 * phase.sin() + 0.02 * noise(m, n as u64)).clamp(0.05, 0.98);
            let mut power = 90.0 + 210.0 * util + 4.0 * noise(m, 100 + n as u64);
            let mut latency = 0.030 + 0.060 * util + 0.002 * noise(m, 200 + n as u64);
            if m >= anomalous_from && n == 7 {
                power *= 0.75;
            }
            if m >= anomalous_from && n == 3 {
                latency *= 1.6;
            }
            let gpu = format!("{node}-gpu0");
            let mut pairs = vec![("host.name", node.as_str()), ("hw.id", gpu.as_str())];
            sort_pairs(&mut pairs);
            w.append("hw.gpu.utilization", &pairs, ts, PointValue::Gauge(util)).expect("util");
            w.append("hw.power", &pairs, ts, PointValue::Gauge(power)).expect("power");
            let mut counts = vec![0u64; bounds.len() + 1];
            let b = bounds.iter().position(|b| latency <= *b).unwrap_or(bounds.len());
            counts[b] = 100;
            let mut lp = vec![("host.name", node.as_str()), ("model.name", "resnet")];
            sort_pairs(&mut lp);
            let h = Histogram::explicit(bounds.clone(), counts, latency * 100.0);
            w.append("inference.request.duration", &lp, ts, PointValue::HistogramDelta(h))
                .expect("latency");
        }
        assert!(w.finish());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_the_injected_nodes_against_peers_and_history_and_serves_them() {
    let t0 = 1_800_000_000_000_000_000u64;
    let minutes = 180;
    let clock = ManualClock::new(t0);
    let store = Arc::new(Store::in_memory(StoreConfig::default(), Arc::new(clock.clone())));
    let cfg = AnomalyConfig {
        window: Duration::from_secs(300),
        history: Duration::from_secs(3 * 3600),
        ..AnomalyConfig::default()
    };
    let mut scorer = AnomalyScorer::new(cfg);
    let board = scorer.board();

    // The API answers before the first run: evaluatedAt null, no anomalies.
    let cancel = CancellationToken::new();
    let opts = ServeOptions {
        server: stoker_collector::config::ServerConfig {
            api_listen: "127.0.0.1:0".parse().expect("addr"),
            otlp_grpc_listen: "127.0.0.1:0".parse().expect("addr"),
            otlp_http_listen: "127.0.0.1:0".parse().expect("addr"),
            ..Default::default()
        },
        tokens: Tokens::default(),
        store: store.clone(),
        extra_api: vec![anomaly::router(board)],
        extra_metrics: Vec::new(),
        remote: Default::default(),
    };
    let (bound, _handles) =
        server::start(opts, cancel.clone(), TaskTracker::new()).await.expect("server");
    let c = common::client();
    let url = format!("http://{}/api/v1/anomalies", bound.api);
    let before: serde_json::Value =
        c.get(&url).send().await.expect("get").json().await.expect("json");
    assert_eq!(before, serde_json::json!({"evaluatedAt": null, "anomalies": []}));

    // A clean fleet: nothing flagged.
    feed(&store, t0, minutes, u64::MAX);
    let now = t0 + (minutes - 1) * MIN;
    clock.set(now);
    let clean = scorer.score(&store, now);
    assert_eq!(clean.evaluated_at, Some(now));
    assert!(clean.anomalies.is_empty(), "clean fleet flagged: {:?}", clean.anomalies);

    // A fresh store: the same fleet with node-07's power and node-03's latency off in the
    // last 10 minutes.
    let store = Arc::new(Store::in_memory(StoreConfig::default(), Arc::new(clock.clone())));
    let mut scorer2 = AnomalyScorer::new(AnomalyConfig {
        window: Duration::from_secs(300),
        history: Duration::from_secs(3 * 3600),
        ..AnomalyConfig::default()
    });
    feed(&store, t0, minutes, minutes - 10);
    let r = scorer2.score(&store, now);
    let peers: Vec<(&str, Option<&str>, &str)> = r
        .anomalies
        .iter()
        .filter(|a| a.baseline == "peers")
        .map(|a| (a.subject.as_str(), a.model.as_deref(), a.feature.as_str()))
        .collect();
    assert_eq!(peers.len(), 2, "{:#?}", r.anomalies);
    assert!(peers.contains(&("node-07", None, "hw.power")), "{peers:?}");
    assert!(
        peers.contains(&("node-03/resnet", Some("resnet"), "inference.request.duration")),
        "{peers:?}"
    );
    let power = r
        .anomalies
        .iter()
        .find(|a| a.subject == "node-07" && a.baseline == "peers")
        .expect("power anomaly");
    assert!(power.value < 0.85 * power.expected, "{power:?}");
    assert!(power.why.contains("hw.power"), "{}", power.why);
    let hist: Vec<&str> = r
        .anomalies
        .iter()
        .filter(|a| a.baseline == "history")
        .map(|a| a.subject.as_str())
        .collect();
    assert!(hist.contains(&"node-07"), "own history: {:#?}", r.anomalies);
    assert!(
        hist.iter().all(|s| s.starts_with("node-07") || s.starts_with("node-03")),
        "history false alarms: {hist:?}"
    );

    // Flags persist: `since` stays at the first run; the score series is in the store.
    clock.set(now + MIN);
    let later = scorer2.score(&store, now + MIN);
    let again = later
        .anomalies
        .iter()
        .find(|a| a.subject == "node-07" && a.baseline == "peers")
        .expect("still flagged");
    assert_eq!(again.since, now);

    // The policy condition reads the scores the scorer wrote, through the live engine's
    // store source: node-07 holds for a peers power rule, node-01 does not.
    {
        use stoker_collector::policy::anomaly::eval_anomaly;
        use stoker_collector::policy::format::AnomalyCondition;
        use stoker_collector::serve::StoreSource;
        let src = StoreSource::new(store.clone());
        let cond = |node: &str| AnomalyCondition {
            node: Some(node.into()),
            baseline: Some("peers".into()),
            feature: Some("hw.power".into()),
            ..Default::default()
        };
        let mut inputs = Vec::new();
        assert_eq!(
            eval_anomaly(&cond("node-07"), &src, now + MIN, &mut inputs),
            Some(true),
            "{inputs:?}"
        );
        assert_eq!(
            eval_anomaly(&cond("node-01"), &src, now + MIN, &mut inputs),
            Some(false),
            "{inputs:?}"
        );
    }

    // The HTTP contract, exactly.
    let board = scorer2.board();
    let opts = ServeOptions {
        server: stoker_collector::config::ServerConfig {
            api_listen: "127.0.0.1:0".parse().expect("addr"),
            otlp_grpc_listen: "127.0.0.1:0".parse().expect("addr"),
            otlp_http_listen: "127.0.0.1:0".parse().expect("addr"),
            ..Default::default()
        },
        tokens: Tokens::default(),
        store: store.clone(),
        extra_api: vec![anomaly::router(board)],
        extra_metrics: Vec::new(),
        remote: Default::default(),
    };
    let (bound2, _h2) =
        server::start(opts, cancel.clone(), TaskTracker::new()).await.expect("server");
    let v: serde_json::Value = c
        .get(format!("http://{}/api/v1/anomalies", bound2.api))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(v["evaluatedAt"].as_u64(), Some(now + MIN));
    let list = v["anomalies"].as_array().expect("list");
    assert!(!list.is_empty());
    for a in list {
        let keys: Vec<&str> = a.as_object().expect("object").keys().map(String::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [
                "baseline", "expected", "feature", "model", "node", "score", "since", "subject",
                "value", "why"
            ]
        );
        assert!(a["baseline"] == "peers" || a["baseline"] == "history");
        assert!(
            a["since"].is_u64()
                && a["score"].is_f64()
                && a["value"].is_f64()
                && a["expected"].is_f64()
        );
    }
    let node07 = list.iter().find(|a| a["subject"] == "node-07").expect("node-07");
    assert_eq!(node07["model"], serde_json::Value::Null);
    assert_eq!(node07["node"], "node-07");
    let n03 = list.iter().find(|a| a["subject"] == "node-03/resnet").expect("node-03");
    assert_eq!(n03["model"], "resnet");
    cancel.cancel();
}
