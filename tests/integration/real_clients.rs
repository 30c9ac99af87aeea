//! What real clients see, end to end: the OpenTelemetry Python and JS SDKs send histograms
//! with their default (cumulative) temporality to the real collector, directly and through the
//! real agent, both running in-process on loopback ports. The distribution changes between
//! exports, and the collector's p50, p95 and max must stay within one bucket of the truth;
//! services behind one agent keep their own identity and carry the node's `host.name`.
//!
//! Peers: the Python SDK (`.ci/install-python-peers.sh`) and the JS SDK
//! (`.ci/install-js-peers.sh`, into `tests/interop/node_modules`). Without them the tests print
//! `skipping: ...`, unless `STOKER_REQUIRE_PEERS=1`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use stoker_collector::serve::{self, CollectorSettings, RunningCollector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Explicit bucket bounds the SDKs are given; the quantile checks are in these buckets.
const BOUNDS: [f64; 10] = [0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0];
/// The node name the agent reports.
const NODE: &str = "e2e-node";

/// First export: fast requests, 0.001–0.1 s; later exports: slow ones, 1.03–4.0 s. The first
/// export's extremes are far below the later truth, which is what made the answers read low.
fn phases() -> Vec<Vec<f64>> {
    let line = |n: usize, lo: f64, hi: f64| -> Vec<f64> {
        (0..n).map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64).collect()
    };
    vec![line(20, 0.001, 0.1), line(20, 1.03, 2.5), line(20, 2.51, 4.0)]
}

fn truth(q: f64) -> f64 {
    let mut all: Vec<f64> = phases().concat();
    all.sort_by(f64::total_cmp);
    let rank = (q * all.len() as f64).ceil().max(1.0) as usize;
    all[rank - 1]
}

fn interop_dir() -> PathBuf {
    stoker_tests::workspace_root().join("tests/interop")
}

fn python_ok() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn js_ok() -> bool {
    let dir = interop_dir().join("node_modules/@opentelemetry");
    dir.join("sdk-metrics").is_dir() && dir.join("exporter-metrics-otlp-http").is_dir()
}

/// One SDK run: sends every phase from `service` to `endpoint`.
async fn send(sdk: Sdk, endpoint: &str, service: &str, resource: Value) {
    let spec = json!({
        "endpoint": endpoint,
        "service": service,
        "resource": resource,
        "bounds": BOUNDS,
        "phases": phases(),
        // Long enough for the agent to flush between exports (its interval is 200 ms).
        "pause": 0.4,
    })
    .to_string();
    let mut cmd = match sdk {
        Sdk::Python => {
            let mut c = tokio::process::Command::new("python3");
            c.arg(interop_dir().join("send_phases.py"));
            c
        }
        Sdk::Js => {
            let mut c = tokio::process::Command::new("node");
            c.arg(interop_dir().join("send_phases.mjs"));
            c
        }
    };
    cmd.arg(spec)
        .current_dir(interop_dir())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE");
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the SDK finished in time")
        .expect("the SDK ran");
    assert!(out.status.success(), "{sdk:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[derive(Clone, Copy, Debug)]
enum Sdk {
    Python,
    Js,
}

struct Stack {
    collector: RunningCollector,
    agent_http: Option<SocketAddr>,
    cancel: CancellationToken,
    agent_cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.agent_cancel.cancel();
        self.cancel.cancel();
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// The collector on loopback ports and, with `agent`, an agent exporting to it.
async fn stack(agent: bool) -> Stack {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = stoker_collector::config::CollectorConfig::default();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.api_listen = any;
    config.server.otlp_grpc_listen = any;
    config.server.otlp_http_listen = any;
    let cancel = CancellationToken::new();
    let settings = CollectorSettings {
        config,
        data_dir: dir.path().join("data"),
        ..CollectorSettings::default()
    };
    let collector =
        serve::start(settings, cancel.clone(), TaskTracker::new()).await.expect("start collector");
    let agent_cancel = CancellationToken::new();
    let agent_http = agent.then(|| {
        let (grpc, http) = (free_port(), free_port());
        let mut cfg = stoker_agent::config::AgentConfig {
            collector: format!("http://{}", collector.bound.otlp_grpc),
            interval: Duration::from_millis(200),
            // No NVML here: host metrics only.
            nvml_lib: dir.path().join("no-libnvidia-ml.so"),
            ..Default::default()
        };
        cfg.node.host_name = Some(NODE.into());
        let opts = stoker_agent::daemon::RunOptions {
            otlp_grpc_listen: Some(grpc),
            otlp_http_listen: Some(http),
            ..Default::default()
        };
        let stop = agent_cancel.clone();
        tokio::spawn(async move {
            stoker_agent::daemon::run(cfg, opts, stop).await.expect("agent runs");
        });
        http
    });
    if let Some(http) = agent_http {
        wait_listening(http).await;
    }
    Stack { collector, agent_http, cancel, agent_cancel, _dir: dir }
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client")
}

/// One statistic over the last 5 minutes; `None` when no series matched.
async fn stat(api: SocketAddr, selector: &str, stat: &str) -> Option<f64> {
    let r = client()
        .get(format!("http://{api}/api/v1/query"))
        .query(&[("selector", selector), ("stat", stat), ("window", "5m")])
        .send()
        .await
        .expect("query");
    let body: Value = r.json().await.expect("json");
    body["result"]["groups"][0]["value"].as_f64()
}

/// Waits (bounded) until `selector` has counted every observation.
async fn wait_counted(api: SocketAddr, selector: &str) {
    let want = phases().concat().len() as f64;
    for _ in 0..100 {
        if stat(api, selector, "count").await == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{selector}: count never reached {want} (last {:?})",
        stat(api, selector, "count").await
    );
}

fn bucket(v: f64) -> usize {
    BOUNDS.partition_point(|b| *b < v)
}

/// p50, p95 and max of both histograms of `service` are within one bucket of the truth:
/// the explicit one in `BOUNDS`, the exponential one within two of its buckets at the SDKs'
/// scale for this range (scale 3 or finer: a factor of 2^(1/8) a bucket).
async fn assert_close_to_truth(api: SocketAddr, service: &str, what: &str) {
    let explicit = format!("inference.request.duration{{service.name=\"{service}\"}}");
    let exponential = format!("inference.queue.duration{{service.name=\"{service}\"}}");
    wait_counted(api, &explicit).await;
    wait_counted(api, &exponential).await;
    for (name, q) in [("p50", 0.5), ("p95", 0.95), ("max", 1.0)] {
        let true_value = truth(q);
        let got = stat(api, &explicit, name).await.expect("explicit answer");
        let (b_true, b_got) = (bucket(true_value), bucket(got));
        assert!(
            b_true.abs_diff(b_got) <= 1,
            "{what}: explicit {name} {got} (bucket {b_got}) against the truth {true_value} \
             (bucket {b_true})"
        );
        let got = stat(api, &exponential, name).await.expect("exponential answer");
        assert!(
            (got / true_value).log2().abs() <= 2.0 / 8.0,
            "{what}: exponential {name} {got} against the truth {true_value}"
        );
    }
    let max = stat(api, &explicit, "max").await.expect("max");
    assert_eq!(max, 4.0, "{what}: the maximum rose in a later export and is known exactly");
}

/// The SDK sends to the collector, then through an agent, and both answer close to the truth.
async fn cumulative_direct_and_through_the_agent(sdk: Sdk, name: &str) {
    let direct = stack(false).await;
    let endpoint = format!("http://{}", direct.collector.bound.otlp_http);
    let service = format!("{name}-direct");
    send(sdk, &endpoint, &service, json!({})).await;
    assert_close_to_truth(direct.collector.bound.api, &service, &format!("{name} → collector"))
        .await;

    let node = stack(true).await;
    let endpoint = format!("http://{}", node.agent_http.expect("agent"));
    let service = format!("{name}-agent");
    send(sdk, &endpoint, &service, json!({})).await;
    let what = format!("{name} → agent → collector");
    assert_close_to_truth(node.collector.bound.api, &service, &what).await;
}

/// Regression: a cumulative histogram's extremes were dropped when it was turned into
/// increments, a window merge kept the first export's (0.001–0.1), and p50/p95/max read as
/// 0.05/0.095/0.1 where the truth is about 2.1/3.8/4.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cumulative_histograms_direct_and_through_the_agent() {
    let python = python_ok();
    if stoker_tests::peer_available(python, "OpenTelemetry Python SDK", "install-python-peers.sh") {
        cumulative_direct_and_through_the_agent(Sdk::Python, "python").await;
    }
}

/// The same with the JS SDK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_cumulative_histograms_direct_and_through_the_agent() {
    if stoker_tests::peer_available(js_ok(), "OpenTelemetry JS SDK", "install-js-peers.sh") {
        cumulative_direct_and_through_the_agent(Sdk::Js, "js").await;
    }
}

/// Regression: the agent's own `service.name=stoker-agent` overwrote every service's, so two
/// services on one node merged into one series (count 16 instead of 8 + 8) and
/// `inference.request.duration{service.name="resnet"}` matched nothing. One service is the JS
/// SDK with a pod's `host.name` (as its host detector reports inside a container); both must
/// carry the node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_behind_one_agent_keep_their_identity() {
    let python = stoker_tests::peer_available(
        python_ok(),
        "OpenTelemetry Python SDK",
        "install-python-peers.sh",
    );
    let js = stoker_tests::peer_available(js_ok(), "OpenTelemetry JS SDK", "install-js-peers.sh");
    if !(python && js) {
        return;
    }
    let node = stack(true).await;
    let endpoint = format!("http://{}", node.agent_http.expect("agent"));
    tokio::join!(
        send(Sdk::Python, &endpoint, "resnet", json!({"service.version": "1.4.0"})),
        send(Sdk::Js, &endpoint, "bert", json!({"host.name": "bert-7f9c-pod"})),
    );
    let api = node.collector.bound.api;
    let n = phases().concat().len() as f64;
    for service in ["resnet", "bert"] {
        let sel = format!("inference.request.duration{{service.name=\"{service}\"}}");
        wait_counted(api, &sel).await;
        assert_eq!(stat(api, &sel, "count").await, Some(n), "{service}: its own series only");
        let on_node = format!(
            "inference.request.duration{{service.name=\"{service}\",host.name=\"{NODE}\"}}"
        );
        assert_eq!(stat(api, &on_node, "count").await, Some(n), "{service} carries the node");
    }
    let r = client()
        .get(format!("http://{api}/api/v1/series"))
        .query(&[("selector", "inference.request.duration")])
        .send()
        .await
        .expect("series");
    let body: Value = r.json().await.expect("json");
    let series = body["series"].as_array().expect("series list");
    let services: Vec<&str> =
        series.iter().filter_map(|s| s["labels"]["service.name"].as_str()).collect();
    assert_eq!(series.len(), 2, "two series, one per service: {body}");
    assert!(services.contains(&"resnet") && services.contains(&"bert"), "{services:?}");
    for s in series {
        assert_eq!(s["labels"]["host.name"], NODE, "{s}");
        assert_ne!(s["labels"]["service.name"], "stoker-agent", "{s}");
    }
    let resnet = series.iter().find(|s| s["labels"]["service.name"] == "resnet").expect("resnet");
    assert_eq!(
        resnet["labels"]["service.version"], "1.4.0",
        "the service's version, not the agent's"
    );
}
