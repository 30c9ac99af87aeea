//! Helpers: an in-process collector on OS-assigned loopback ports, OTLP request builders, a
//! reqwest client and peer checks.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use stoker_collector::clock::SharedClock;
use stoker_collector::config::{ServerConfig, Tokens};
use stoker_collector::server::{self, Bound, Handles, ServeOptions};
use stoker_collector::store::{Store, StoreConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct TestServer {
    pub bound: Bound,
    #[allow(dead_code)]
    pub store: Arc<Store>,
    #[allow(dead_code)]
    pub handles: Handles,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub fn loopback0() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

pub async fn start_with(
    tokens: Tokens,
    tweak: impl FnOnce(&mut ServerConfig),
    clock: SharedClock,
) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig { data_dir: Some(dir.path().to_path_buf()), ..StoreConfig::default() };
    let store = Arc::new(Store::open(cfg, clock).expect("open store"));
    let mut server_cfg = ServerConfig {
        api_listen: loopback0(),
        otlp_grpc_listen: loopback0(),
        otlp_http_listen: loopback0(),
        ..ServerConfig::default()
    };
    tweak(&mut server_cfg);
    let cancel = CancellationToken::new();
    tokio::spawn(store.clone().run_background(cancel.clone()));
    let (bound, handles) = server::start(
        ServeOptions {
            server: server_cfg,
            tokens,
            store: store.clone(),
            extra_api: Vec::new(),
            extra_metrics: Vec::new(),
            remote: Default::default(),
        },
        cancel.clone(),
        TaskTracker::new(),
    )
    .await
    .expect("start server");
    TestServer { bound, store, handles, cancel, _dir: dir }
}

pub async fn start() -> TestServer {
    start_with(Tokens::default(), |_| {}, Arc::new(stoker_collector::clock::SystemClock)).await
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client")
}

pub fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_nanos()
        as u64
}

pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

/// One gauge point in a request.
pub fn gauge_request(
    host: &str,
    metric: &str,
    ts: u64,
    v: f64,
    attrs: Vec<KeyValue>,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("host.name", host)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: metric.into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: attrs,
                            time_unix_nano: ts,
                            value: Some(number_data_point::Value::AsDouble(v)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Instant query helper: returns the groups.
pub async fn query(
    c: &reqwest::Client,
    api: std::net::SocketAddr,
    params: &[(&str, &str)],
) -> Vec<serde_json::Value> {
    let r = c.get(format!("http://{api}/api/v1/query")).query(params).send().await.expect("query");
    let status = r.status();
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(status.is_success(), "{params:?}: {status} {body}");
    body["result"]["groups"].as_array().cloned().unwrap_or_default()
}

/// Whether an external peer is usable; fails under STOKER_REQUIRE_PEERS=1, else prints a skip.
pub fn peer_available(ok: bool, peer: &str, script: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("STOKER_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{peer} is required (STOKER_REQUIRE_PEERS=1) but not installed: run .ci/{script}");
    }
    eprintln!("skipping: {peer} not installed (run .ci/{script})");
    false
}

/// `--api-listen`, `--otlp-grpc-listen` and `--otlp-http-listen` on OS-assigned loopback ports,
/// for a real `stoker-collector serve` child.
pub const LOOPBACK_LISTENERS: [&str; 6] = [
    "--api-listen",
    "127.0.0.1:0",
    "--otlp-grpc-listen",
    "127.0.0.1:0",
    "--otlp-http-listen",
    "127.0.0.1:0",
];

/// Where a real collector child listens, from the `listening api=… otlp_grpc=… otlp_http=…`
/// line it prints first on stdout.
pub struct Listening {
    pub api: String,
    #[allow(dead_code)]
    pub grpc: String,
    pub http: String,
}

/// Reads the child's listening line (its stdout must be piped).
pub fn listening(child: &mut std::process::Child) -> Listening {
    use std::io::BufRead as _;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("read listening line");
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
    };
    Listening { api: field("api="), grpc: field("otlp_grpc="), http: field("otlp_http=") }
}

/// A real collector child with where it listens; killed and reaped when dropped, so a failed
/// test leaves no process behind.
pub struct Collector {
    pub child: std::process::Child,
    pub api: String,
    pub http: String,
    #[allow(dead_code)]
    pub grpc: String,
}

/// `stoker-collector serve --data-dir DATA_DIR` on loopback ports with warn-level logs, for
/// [`Collector::start`]; callers add their own arguments and environment.
pub fn serve_command(data_dir: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stoker-collector"));
    cmd.args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(LOOPBACK_LISTENERS)
        .env("RUST_LOG", "warn");
    cmd
}

impl Collector {
    /// Starts `cmd` (a real collector) with stdout piped for its listening line.
    pub fn start(mut cmd: std::process::Command) -> Self {
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn collector");
        Self::attach(child)
    }

    /// Posts an OTLP/HTTP protobuf body to the child's `/v1/metrics`.
    pub async fn export(&self, c: &reqwest::Client, body: Vec<u8>) -> reqwest::Response {
        c.post(format!("http://{}/v1/metrics", self.http))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .expect("export")
    }

    /// Takes over `child` (stdout piped) once it has printed its listening line.
    pub fn attach(mut child: std::process::Child) -> Self {
        let at = listening(&mut child);
        Self { child, api: at.api, http: at.http, grpc: at.grpc }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A policy `name` resizing `svc` (1..=10) through the `command` actuator, which runs
/// `sh -c SHELL` with `{{ desired }}` filled in. It reads the size from `svc.replicas`, sizes
/// for `svc.queue` at 10 per replica every second, and cools down `cooldown` after each action.
pub fn command_policy(name: &str, shell: &str, cooldown: &str) -> String {
    format!(
        r#"apiVersion: stoker/v1
kind: Policy
metadata: {{name: {name}}}
spec:
  target:
    name: svc
    min: 1
    max: 10
    actuator: command
    command: {{argv: [sh, -c, "{shell}"]}}
    current: {{from: signal, signal: {{metric: svc.replicas, stat: last, window: 60s}}}}
  interval: 1s
  scale:
    metrics:
      - name: queue
        signal: {{metric: svc.queue, stat: mean, window: 60s}}
        target: {{value: 10}}
    cooldown: {{scaleUp: {cooldown}, scaleDown: {cooldown}}}
"#
    )
}
