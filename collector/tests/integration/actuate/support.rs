//! A scripted HTTP peer that records every request, and an actuator environment over a
//! temporary journal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use stoker_collector::actuate::config::{ActuatorsConfig, ClusterConfig};
use stoker_collector::actuate::retry::RetryPolicy;
use stoker_collector::actuate::{ActuateEnv, Journal, SecretSource, Secrets, SecretsConfig};
use stoker_collector::policy::persist::{Fence, PolicyStore};

/// One request the peer saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("request body is JSON")
    }
}

/// The peer's answer.
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, v: serde_json::Value) -> Self {
        Self { status, body: v.to_string(), delay: Duration::ZERO }
    }
    pub fn text(status: u16, body: &str) -> Self {
        Self { status, body: body.to_owned(), delay: Duration::ZERO }
    }
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

pub type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Peer {
    seen: Arc<Mutex<Vec<Seen>>>,
    handler: Handler,
}

pub struct Mock {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn handle(State(peer): State<Peer>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let bytes = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap_or_default();
    let seen =
        Seen { method, path, query, headers, body: String::from_utf8_lossy(&bytes).into_owned() };
    let reply = (peer.handler)(&seen);
    peer.seen.lock().expect("lock").push(seen);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    Response::builder()
        .status(StatusCode::from_u16(reply.status).expect("status"))
        .header("content-type", "application/json")
        .body(Body::from(reply.body))
        .expect("response")
}

impl Mock {
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let peer = Peer { seen: seen.clone(), handler: Arc::new(handler) };
        let app = axum::Router::new().fallback(handle).with_state(peer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests().iter().filter(|s| s.method == method && s.path == path).count()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port with nothing listening.
pub async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub env: ActuateEnv,
}

/// An environment with secrets `github`, `gitlab`, `gitlab-read`, `hook`, `gcp-token` (files)
/// and, when `kube_server` is given, a cluster `test` whose kubeconfig points there.
pub fn test_env(kube_server: Option<&str>) -> TestEnv {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut secrets = SecretsConfig::new();
    for (name, value) in [
        ("github", "gh-token"),
        ("gitlab", "trigger-token"),
        ("gitlab-read", "read-token"),
        ("hook", "hook-key"),
        ("gcp-token", "gcp-file-token"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).expect("write secret");
        secrets.insert(name.into(), SecretSource { env: None, file: Some(path) });
    }
    let mut config = ActuatorsConfig::default();
    if let Some(server) = kube_server {
        let kc = dir.path().join("kubeconfig");
        std::fs::write(
            &kc,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: c\n  cluster:\n    server: \"{server}\"\nusers:\n- name: u\n  user:\n    token: kube-token\ncontexts:\n- name: test\n  context:\n    cluster: c\n    user: u\n"
            ),
        )
        .expect("write kubeconfig");
        config.kubernetes.clusters.insert(
            "test".into(),
            ClusterConfig { kubeconfig: Some(kc), context: None, in_cluster: false },
        );
    }
    // The actuators' journal lives in the embedded policy ledger, as in `serve`.
    let ledger = PolicyStore::open(dir.path()).expect("policy ledger");
    let journal = Arc::new(Journal::new(Arc::new(ledger), Fence::SOLE));
    let env = ActuateEnv::new(config, Secrets::from_config(secrets).expect("secrets"), journal)
        .expect("env")
        .with_retry(RetryPolicy::without_jitter(
            4,
            Duration::from_millis(10),
            Duration::from_millis(40),
        ))
        .with_request_timeout(Duration::from_secs(2));
    TestEnv { dir, env }
}

/// Wait (bounded) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}
