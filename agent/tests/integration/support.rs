//! Test support: an OTLP/gRPC receiver that records what arrives, the fake NVML library, and a
//! handle on a running agent process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Sink {
    requests: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    /// The `authorization` metadata of each request ("" when absent).
    authorizations: Arc<Mutex<Vec<String>>>,
    reject_points: Arc<AtomicI64>,
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        self.authorizations.lock().unwrap().push(auth);
        self.requests.lock().unwrap().push(request.into_inner());
        let reject = self.reject_points.load(Ordering::Relaxed);
        let partial_success = (reject > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: reject,
            error_message: "test rejects some points".into(),
        });
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success }))
    }
}

/// An OTLP/gRPC metrics receiver on loopback.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    sink: Sink,
    stop: CancellationToken,
}

impl Receiver {
    /// Start on an OS-assigned port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Start on `addr`.
    pub async fn start_on(addr: SocketAddr) -> Self {
        Self::start_with(addr, None).await
    }

    /// Start on an OS-assigned port serving TLS with this certificate and key (PEM).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        let identity = tonic::transport::Identity::from_pem(cert_pem, key_pem);
        Self::start_with("127.0.0.1:0".parse().unwrap(), Some(identity)).await
    }

    async fn start_with(addr: SocketAddr, tls: Option<tonic::transport::Identity>) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = Sink::default();
        let stop = CancellationToken::new();
        let mut builder = tonic::transport::Server::builder();
        if let Some(identity) = tls {
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .unwrap();
        }
        let server = builder
            .add_service(MetricsServiceServer::new(sink.clone()))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(server);
        Self { addr, sink, stop }
    }

    /// The collector URL of this receiver.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer every export with partial success rejecting `n` points.
    pub fn reject_points(&self, n: i64) {
        self.sink.reject_points.store(n, Ordering::Relaxed);
    }

    /// Every data point received so far.
    pub fn points(&self) -> Vec<Point> {
        flatten(&self.sink.requests.lock().unwrap())
    }

    /// The `authorization` metadata of every request so far ("" when absent).
    pub fn authorizations(&self) -> Vec<String> {
        self.sink.authorizations.lock().unwrap().clone()
    }

    /// Number of export requests received so far.
    pub fn request_count(&self) -> usize {
        self.sink.requests.lock().unwrap().len()
    }

    /// Poll until `cond` holds on the points received, for at most `limit`.
    pub async fn wait_for(&self, limit: Duration, cond: impl Fn(&[Point]) -> bool) -> Vec<Point> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let points = self.points();
            if cond(&points) || tokio::time::Instant::now() >= deadline {
                return points;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One number data point with everything a test asserts on.
#[derive(Clone, Debug)]
pub struct Point {
    pub metric: String,
    pub unit: String,
    /// `gauge`, `counter` or `updown`.
    pub kind: &'static str,
    pub attrs: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
    pub scope: String,
    pub value: f64,
    pub time: u64,
}

impl Point {
    /// The attribute `key`, or "".
    pub fn attr(&self, key: &str) -> &str {
        self.attrs.get(key).map(String::as_str).unwrap_or("")
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                _ => String::new(),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn flatten(requests: &[ExportMetricsServiceRequest]) -> Vec<Point> {
    let mut out = Vec::new();
    for req in requests {
        for rm in &req.resource_metrics {
            let resource = rm.resource.as_ref().map(|r| attrs(&r.attributes)).unwrap_or_default();
            for sm in &rm.scope_metrics {
                let scope = sm.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                for m in &sm.metrics {
                    let (kind, points) = match &m.data {
                        Some(Data::Gauge(g)) => ("gauge", &g.data_points),
                        Some(Data::Sum(s)) if s.is_monotonic => ("counter", &s.data_points),
                        Some(Data::Sum(s)) => ("updown", &s.data_points),
                        _ => continue,
                    };
                    for p in points {
                        let value = match p.value {
                            Some(Value::AsDouble(v)) => v,
                            Some(Value::AsInt(v)) => v as f64,
                            None => f64::NAN,
                        };
                        out.push(Point {
                            metric: m.name.clone(),
                            unit: m.unit.clone(),
                            kind,
                            attrs: attrs(&p.attributes),
                            resource: resource.clone(),
                            scope: scope.clone(),
                            value,
                            time: p.time_unix_nano,
                        });
                    }
                }
            }
        }
    }
    out
}

/// The fake NVML shared library, built on first use with the same cargo and profile.
pub fn fake_nvml() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = Path::new(env!("CARGO_BIN_EXE_stoker-agent"));
            let dir = exe.parent().unwrap().to_path_buf();
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            let mut cmd = Command::new(env!("CARGO"));
            cmd.args(["build", "--quiet", "-p", "fake-nvml"]).current_dir(root);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo to build fake-nvml");
            assert!(status.success(), "building fake-nvml failed");
            let lib = dir.join("libfake_nvml.so");
            assert!(lib.exists(), "fake NVML not found at {}", lib.display());
            lib
        })
        .clone()
}

/// A running `stoker-agent` whose stderr goes to a file.
pub struct Agent {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Start the agent with `args`, a config file with `config` (TOML), and the fake NVML
    /// reading `script` (JSON) when given.
    pub fn start(args: &[&str], config: &str, script: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("agent.toml");
        std::fs::write(&cfg_path, config).unwrap();
        let log = dir.path().join("agent.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stoker-agent"));
        cmd.arg("--config").arg(&cfg_path).args(args);
        // Tests run in parallel: the local OTLP receivers take OS-assigned ports, never the
        // 4317/4318 defaults, which another agent on this machine may hold.
        cmd.args(["--otlp-grpc-listen", "127.0.0.1:0", "--otlp-http-listen", "127.0.0.1:0"]);
        cmd.env("RUST_LOG", "info").env_remove("FAKE_NVML_SCRIPT");
        if let Some(script) = script {
            let script_path = dir.path().join("script.json");
            std::fs::write(&script_path, script).unwrap();
            cmd.env("FAKE_NVML_SCRIPT", &script_path);
        }
        let child =
            cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
        Self { child, log, _dir: dir }
    }

    /// What the agent has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Send SIGTERM and wait (at most 15 s) for the exit.
    pub async fn stop(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        panic!("agent did not stop after SIGTERM; log:\n{}", self.log());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A config file pointing at `collector`, sampling every `interval`, with extra TOML appended.
pub fn config(collector: &str, interval: &str, extra: &str) -> String {
    format!("collector = \"{collector}\"\ninterval = \"{interval}\"\n{extra}\n")
}
