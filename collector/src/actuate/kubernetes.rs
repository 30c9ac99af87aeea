//! Kubernetes over its REST API with plain reqwest: the scale subresource of Deployments and
//! StatefulSets, and `batch/v1` Jobs. Authentication from the pod's service account
//! (in-cluster) or a kubeconfig (token, token file, client certificate; CA data or file).
//!
//! Wire contract:
//! - `GET   /apis/apps/v1/namespaces/{ns}/{deployments|statefulsets}/{name}/scale`
//! - `PATCH` the same path, `application/merge-patch+json`,
//!   `{"metadata":{"resourceVersion":RV},"spec":{"replicas":N}}`: the resourceVersion makes the
//!   API server refuse (409) if someone changed the scale since we read it; we re-read and retry.
//! - `GET   /apis/apps/v1/namespaces/{ns}/{deployments|statefulsets}/{name}` for the ready
//!   count: `status.readyReplicas` (omitted by the API server when zero), else
//!   `status.availableReplicas`. Without `get` on the object itself (403, an older RBAC) or
//!   when it is gone (404), the ready count is unknown and every provisioned replica counts.
//! - `POST  /apis/batch/v1/namespaces/{ns}/jobs` with the deterministic name
//!   `{name_prefix}-{hash of the idempotency key}`; 409 means it exists: success.
//! - `GET   /apis/batch/v1/namespaces/{ns}/jobs/{name}` for status (`conditions`, `active`).

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde::Deserialize;

use super::ActFuture;
use super::config::{ActuateEnv, ClusterConfig};
use super::http::{Body, HttpCall, send};
use super::journaled::{Applied, JobBackend, Observed, ResizeBackend, Started};
use super::secrets::Secret;
use super::spec::{KubernetesJob, KubernetesScale};
use super::template::render_json;
use super::types::{
    ActuateError, AttemptRecord, IdempotencyKey, JobContext, JobHandle, JobState, PlannedRequest,
    ScaleState,
};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// resourceVersion conflicts tolerated before giving up.
const MAX_CONFLICTS: u32 = 5;

#[derive(Clone, Debug)]
enum Auth {
    None,
    Token(Secret),
    /// Re-read on each request: projected service-account tokens rotate.
    TokenFile(PathBuf),
}

/// A connection to one API server.
#[derive(Clone, Debug)]
pub struct KubeClient {
    server: String,
    auth: Auth,
    env: ActuateEnv,
}

#[derive(Debug, Default, Deserialize)]
struct Kubeconfig {
    #[serde(default, rename = "current-context")]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
}

#[derive(Debug, Deserialize)]
struct NamedCluster {
    name: String,
    cluster: ClusterEntry,
}

#[derive(Debug, Default, Deserialize)]
struct ClusterEntry {
    server: String,
    #[serde(default, rename = "certificate-authority")]
    ca_file: Option<PathBuf>,
    #[serde(default, rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(default, rename = "insecure-skip-tls-verify")]
    insecure: bool,
}

#[derive(Debug, Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: UserEntry,
}

#[derive(Debug, Default, Deserialize)]
struct UserEntry {
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "tokenFile")]
    token_file: Option<PathBuf>,
    #[serde(default, rename = "client-certificate")]
    cert_file: Option<PathBuf>,
    #[serde(default, rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(default, rename = "client-key")]
    key_file: Option<PathBuf>,
    #[serde(default, rename = "client-key-data")]
    key_data: Option<String>,
    #[serde(default)]
    exec: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct NamedContext {
    name: String,
    context: ContextEntry,
}

#[derive(Debug, Deserialize)]
struct ContextEntry {
    cluster: String,
    #[serde(default)]
    user: Option<String>,
}

fn cfg_err(msg: impl Into<String>) -> ActuateError {
    ActuateError::Config(msg.into())
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, ActuateError> {
    std::fs::read(path).map_err(|e| cfg_err(format!("kubernetes {what} {}: {e}", path.display())))
}

fn b64(data: &str, what: &str) -> Result<Vec<u8>, ActuateError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| cfg_err(format!("kubeconfig {what} is not base64: {e}")))
}

impl KubeClient {
    /// The client for `cluster` (a name under `[actuators.kubernetes.clusters]`), or the
    /// default: in-cluster when `KUBERNETES_SERVICE_HOST` is set, else `$KUBECONFIG` or
    /// `~/.kube/config`.
    pub fn for_cluster(cluster: Option<&str>, env: &ActuateEnv) -> Result<Self, ActuateError> {
        let cfg = match cluster {
            Some(name) => env.config.kubernetes.clusters.get(name).cloned().ok_or_else(|| {
                cfg_err(format!(
                    "cluster `{name}` is not configured under [actuators.kubernetes.clusters]"
                ))
            })?,
            None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
                ClusterConfig { in_cluster: true, ..Default::default() }
            }
            None => {
                let path = std::env::var_os("KUBECONFIG")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"))
                    })
                    .ok_or_else(|| {
                        cfg_err("no cluster named, not in a cluster, and no kubeconfig found")
                    })?;
                ClusterConfig { kubeconfig: Some(path), ..Default::default() }
            }
        };
        Self::from_config(&cfg, env)
    }

    /// The client for one cluster entry.
    pub fn from_config(cfg: &ClusterConfig, env: &ActuateEnv) -> Result<Self, ActuateError> {
        if cfg.in_cluster {
            return Self::in_cluster(env);
        }
        let path = cfg
            .kubeconfig
            .as_ref()
            .ok_or_else(|| cfg_err("a cluster needs `kubeconfig` or `in_cluster = true`"))?;
        let text = String::from_utf8(read_file(path, "kubeconfig")?)
            .map_err(|_| cfg_err(format!("kubeconfig {} is not UTF-8", path.display())))?;
        Self::from_kubeconfig_text(&text, cfg.context.as_deref(), path.parent(), env).map_err(|e| {
            match e {
                ActuateError::Config(m) => cfg_err(format!("{m} (in {})", path.display())),
                other => other,
            }
        })
    }

    /// The client a kubeconfig's text describes: its `context` (default `current-context`),
    /// files named in it relative to `base`. The parser and resolver `from_config` uses, and
    /// the kubeconfig fuzz target's entry point (`crate::fuzz::kubeconfig`).
    pub fn from_kubeconfig_text(
        text: &str,
        context: Option<&str>,
        base: Option<&Path>,
        env: &ActuateEnv,
    ) -> Result<Self, ActuateError> {
        let kc: Kubeconfig =
            serde_saphyr::from_str(text).map_err(|e| cfg_err(format!("kubeconfig: {e}")))?;
        Self::from_kubeconfig(&kc, context, base, env)
    }

    fn from_kubeconfig(
        kc: &Kubeconfig,
        context: Option<&str>,
        base: Option<&Path>,
        env: &ActuateEnv,
    ) -> Result<Self, ActuateError> {
        let ctx_name = context
            .map(str::to_owned)
            .or_else(|| kc.current_context.clone())
            .ok_or_else(|| cfg_err("kubeconfig has no current-context; name a `context`"))?;
        let ctx = kc
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .ok_or_else(|| cfg_err(format!("kubeconfig has no context `{ctx_name}`")))?;
        let cluster =
            kc.clusters.iter().find(|c| c.name == ctx.context.cluster).ok_or_else(|| {
                cfg_err(format!("kubeconfig has no cluster `{}`", ctx.context.cluster))
            })?;
        let user = match &ctx.context.user {
            Some(u) => Some(
                kc.users
                    .iter()
                    .find(|x| &x.name == u)
                    .ok_or_else(|| cfg_err(format!("kubeconfig has no user `{u}`")))?,
            ),
            None => None,
        };
        let resolve = |p: &PathBuf| match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p.clone(),
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("stoker-collector/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(5));
        let c = &cluster.cluster;
        let ca = match (&c.ca_data, &c.ca_file) {
            (Some(d), _) => Some(b64(d, "certificate-authority-data")?),
            (None, Some(f)) => Some(read_file(&resolve(f), "certificate-authority")?),
            _ => None,
        };
        if let Some(pem) = ca {
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| cfg_err(format!("kubeconfig CA: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        if c.insecure {
            tracing::warn!(server = %c.server, "kubeconfig disables TLS verification for this cluster.");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let mut auth = Auth::None;
        if let Some(u) = user.map(|u| &u.user) {
            if u.exec.is_some() && u.token.is_none() && u.token_file.is_none() {
                return Err(cfg_err(
                    "kubeconfig user uses an exec credential plugin, which the collector does not run; use a token or client certificate",
                ));
            }
            let cert = match (&u.cert_data, &u.cert_file) {
                (Some(d), _) => Some(b64(d, "client-certificate-data")?),
                (None, Some(f)) => Some(read_file(&resolve(f), "client-certificate")?),
                _ => None,
            };
            let key = match (&u.key_data, &u.key_file) {
                (Some(d), _) => Some(b64(d, "client-key-data")?),
                (None, Some(f)) => Some(read_file(&resolve(f), "client-key")?),
                _ => None,
            };
            if let (Some(mut cert), Some(key)) = (cert, key) {
                cert.push(b'\n');
                cert.extend_from_slice(&key);
                let id = reqwest::Identity::from_pem(&cert)
                    .map_err(|e| cfg_err(format!("kubeconfig client certificate: {e}")))?;
                builder = builder.identity(id);
            }
            if let Some(t) = &u.token {
                auth = Auth::Token(Secret::new(t.clone()));
            } else if let Some(f) = &u.token_file {
                auth = Auth::TokenFile(resolve(f));
            }
        }
        let http = builder.build().map_err(|e| cfg_err(format!("kubernetes HTTP client: {e}")))?;
        let mut env = env.clone();
        env.http = http;
        Ok(Self { server: c.server.trim_end_matches('/').to_owned(), auth, env })
    }

    fn in_cluster(env: &ActuateEnv) -> Result<Self, ActuateError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            cfg_err("in_cluster: KUBERNETES_SERVICE_HOST is not set (not running in a pod?)")
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let kc = Kubeconfig {
            current_context: Some("in-cluster".into()),
            clusters: vec![NamedCluster {
                name: "in-cluster".into(),
                cluster: ClusterEntry {
                    server: format!("https://{host}:{port}"),
                    ca_file: Some(PathBuf::from(SA_DIR).join("ca.crt")),
                    ..Default::default()
                },
            }],
            users: vec![NamedUser {
                name: "sa".into(),
                user: UserEntry {
                    token_file: Some(PathBuf::from(SA_DIR).join("token")),
                    ..Default::default()
                },
            }],
            contexts: vec![NamedContext {
                name: "in-cluster".into(),
                context: ContextEntry { cluster: "in-cluster".into(), user: Some("sa".into()) },
            }],
        };
        Self::from_kubeconfig(&kc, None, None, env)
    }

    /// A request to `path` with auth and JSON accept headers. `redact` leaves the token out
    /// (dry-run rendering).
    fn call(&self, method: Method, path: &str, redact: bool) -> Result<HttpCall, ActuateError> {
        let mut call = HttpCall::new(method, format!("{}{}", self.server, path))
            .header("accept", "application/json");
        let token = match &self.auth {
            Auth::None => None,
            Auth::Token(t) => Some(t.clone()),
            Auth::TokenFile(_) if redact => Some(Secret::new(String::new())),
            Auth::TokenFile(p) => Some(Secret::new(
                String::from_utf8_lossy(&read_file(p, "token file")?).trim().to_owned(),
            )),
        };
        if let Some(t) = token {
            call =
                call.secret_header("authorization", Secret::new(format!("Bearer {}", t.expose())));
        }
        Ok(call)
    }
}

fn u32_at(v: &serde_json::Value, pointer: &str) -> Option<u32> {
    v.pointer(pointer).and_then(serde_json::Value::as_u64).and_then(|n| u32::try_from(n).ok())
}

/// The ready count a Deployment's or StatefulSet's status says: `readyReplicas`, else
/// `availableReplicas`; both are omitted when zero, so a status without them (but with
/// `observedGeneration` or `replicas`) means none ready. `None` when there is no status yet.
fn ready_replicas(v: &serde_json::Value) -> Option<u32> {
    let status = v.get("status").filter(|s| s.is_object())?;
    u32_at(status, "/readyReplicas").or_else(|| u32_at(status, "/availableReplicas")).or_else(
        || {
            (status.get("observedGeneration").is_some() || status.get("replicas").is_some())
                .then_some(0)
        },
    )
}

/// `actuator: kubernetes`: a Deployment or StatefulSet's scale subresource.
pub struct KubernetesScaler {
    client: KubeClient,
    namespace: String,
    kind: &'static str,
    name: String,
}

impl KubernetesScaler {
    /// From a policy's `kubernetes:` section.
    pub fn new(spec: &KubernetesScale, env: &ActuateEnv) -> Result<Self, ActuateError> {
        let (kind, name) = match (&spec.deployment, &spec.statefulset) {
            (Some(d), None) => ("deployments", d.clone()),
            (None, Some(s)) => ("statefulsets", s.clone()),
            _ => {
                return Err(cfg_err(
                    "kubernetes: give exactly one of `deployment` and `statefulset`",
                ));
            }
        };
        Ok(Self {
            client: KubeClient::for_cluster(spec.cluster.as_deref(), env)?,
            namespace: spec.namespace.clone(),
            kind,
            name,
        })
    }

    fn object_path(&self) -> String {
        format!("/apis/apps/v1/namespaces/{}/{}/{}", self.namespace, self.kind, self.name)
    }

    fn path(&self) -> String {
        format!("{}/scale", self.object_path())
    }

    /// The ready replicas of the Deployment or StatefulSet, `None` when they cannot be read
    /// (no `get` on the object, or it is gone).
    async fn read_ready(
        &self,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Result<Option<u32>, ActuateError> {
        let call = self.client.call(Method::GET, &self.object_path(), false)?;
        let answer = send(&self.client.env, &call, &[403, 404], attempts).await?;
        if answer.status == 403 || answer.status == 404 {
            tracing::debug!(target = %self.target(), status = answer.status, "Cannot read the ready replicas; counting every replica as ready.");
            return Ok(None);
        }
        let v = answer.json("kubernetes workload")?;
        Ok(ready_replicas(&v))
    }

    fn patch(
        &self,
        size: u32,
        version: Option<&str>,
        redact: bool,
    ) -> Result<HttpCall, ActuateError> {
        let mut body = serde_json::json!({"spec": {"replicas": size}});
        if let Some(rv) = version {
            body["metadata"] = serde_json::json!({"resourceVersion": rv});
        }
        Ok(self
            .client
            .call(Method::PATCH, &self.path(), redact)?
            .header("content-type", "application/merge-patch+json")
            .body(Body::Raw {
                content_type: "application/merge-patch+json".into(),
                bytes: serde_json::to_vec(&body).unwrap_or_default(),
            }))
    }

    async fn read_scale(
        &self,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Result<ScaleState, ActuateError> {
        let call = self.client.call(Method::GET, &self.path(), false)?;
        let v = send(&self.client.env, &call, &[], attempts).await?.json("kubernetes scale")?;
        let replicas = u32_at(&v, "/spec/replicas").unwrap_or(0);
        Ok(ScaleState {
            replicas,
            ready: None,
            remote_min: None,
            remote_max: None,
            version: v
                .pointer("/metadata/resourceVersion")
                .and_then(|x| x.as_str())
                .map(str::to_owned),
        })
    }
}

impl ResizeBackend for KubernetesScaler {
    fn actuator(&self) -> &'static str {
        "kubernetes"
    }

    fn target(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.kind.trim_end_matches('s'), self.name)
    }

    fn read<'a>(
        &'a self,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<ScaleState>> {
        Box::pin(async move {
            let mut state = self.read_scale(attempts).await?;
            state.ready = self.read_ready(attempts).await?;
            Ok(Some(state))
        })
    }

    fn plan(&self, size: u32, _key: &IdempotencyKey) -> Result<Vec<PlannedRequest>, ActuateError> {
        Ok(vec![self.patch(size, Some("<resourceVersion read before sending>"), true)?.planned()])
    }

    fn apply<'a>(
        &'a self,
        size: u32,
        state: Option<&'a ScaleState>,
        _key: &'a IdempotencyKey,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Applied> {
        Box::pin(async move {
            let mut version = state.and_then(|s| s.version.clone());
            let mut conflicts = 0;
            loop {
                let call = self.patch(size, version.as_deref(), false)?;
                let answer = send(&self.client.env, &call, &[409], attempts).await?;
                if answer.status != 409 {
                    let v = answer.json("kubernetes scale")?;
                    let note = (conflicts > 0).then(|| {
                        format!("{conflicts} resourceVersion conflict(s) re-read and retried")
                    });
                    return Ok(Applied {
                        after: u32_at(&v, "/spec/replicas"),
                        remote_id: None,
                        note,
                    });
                }
                conflicts += 1;
                if conflicts > MAX_CONFLICTS {
                    return Err(ActuateError::Http {
                        method: "PATCH".into(),
                        url: call.url.clone(),
                        status: 409,
                        body: format!("resourceVersion conflict {conflicts} times in a row"),
                    });
                }
                tracing::info!(target = %self.target(), conflicts, "Scale changed since read (409); re-reading.");
                let fresh = self.read_scale(attempts).await?;
                if fresh.replicas == size {
                    return Ok(Applied {
                        after: Some(size),
                        remote_id: None,
                        note: Some(
                            "the scale already had this size when re-read after a conflict".into(),
                        ),
                    });
                }
                version = fresh.version;
            }
        })
    }
}

/// `actuator: kubernetes-job`: a `batch/v1` Job with a deterministic name.
pub struct KubernetesJobLauncher {
    client: KubeClient,
    spec: KubernetesJob,
}

impl KubernetesJobLauncher {
    /// From a rule's `job.kubernetes` section.
    pub fn new(spec: KubernetesJob, env: &ActuateEnv) -> Result<Self, ActuateError> {
        Ok(Self { client: KubeClient::for_cluster(spec.cluster.as_deref(), env)?, spec })
    }

    /// The Job's name for `key`: `{name_prefix}-{10 hex digits}`, at most 63 characters.
    pub fn job_name(&self, key: &IdempotencyKey) -> String {
        let mut prefix: String = self
            .spec
            .name_prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
            .collect();
        prefix.truncate(52);
        format!("{}-{}", prefix.trim_end_matches('-'), key.short_hash(10))
    }

    fn jobs_path(&self) -> String {
        format!("/apis/batch/v1/namespaces/{}/jobs", self.spec.namespace)
    }

    fn manifest(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
    ) -> Result<serde_json::Value, ActuateError> {
        let spec = render_json(&self.spec.spec, &ctx.vars())?;
        let label = |s: &str| -> String {
            let mut v: String = s
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' })
                .collect();
            v.truncate(63);
            v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
        };
        Ok(serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": self.job_name(key),
                "namespace": self.spec.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "stoker",
                    "stoker.dev/policy": label(&ctx.policy),
                    "stoker.dev/rule": label(&ctx.rule),
                },
                "annotations": {"stoker.dev/idempotency-key": key.as_str()},
            },
            "spec": spec,
        }))
    }

    fn create(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
        redact: bool,
    ) -> Result<HttpCall, ActuateError> {
        Ok(self
            .client
            .call(Method::POST, &self.jobs_path(), redact)?
            .body(Body::Json(self.manifest(ctx, key)?)))
    }

    async fn get_job(
        &self,
        name: &str,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Result<Option<serde_json::Value>, ActuateError> {
        let call = self.client.call(Method::GET, &format!("{}/{name}", self.jobs_path()), false)?;
        let answer = send(&self.client.env, &call, &[404], attempts).await?;
        if answer.status == 404 { Ok(None) } else { Ok(Some(answer.json("kubernetes job")?)) }
    }
}

/// The lifecycle state a Job's status says.
pub fn job_state(job: &serde_json::Value) -> (JobState, Option<String>) {
    if let Some(conds) = job.pointer("/status/conditions").and_then(|c| c.as_array()) {
        for c in conds {
            let is_true = c.get("status").and_then(|s| s.as_str()) == Some("True");
            let reason = c.get("reason").and_then(|s| s.as_str()).map(str::to_owned);
            match c.get("type").and_then(|s| s.as_str()) {
                Some("Complete") if is_true => return (JobState::Succeeded, reason),
                Some("Failed") if is_true => {
                    let msg = c.get("message").and_then(|s| s.as_str()).map(str::to_owned);
                    return (JobState::Failed, msg.or(reason));
                }
                _ => {}
            }
        }
    }
    if job.pointer("/status/active").and_then(|a| a.as_u64()).unwrap_or(0) > 0 {
        (JobState::Running, None)
    } else {
        (JobState::Started, None)
    }
}

impl JobBackend for KubernetesJobLauncher {
    fn actuator(&self) -> &'static str {
        "kubernetes-job"
    }

    fn describe(&self) -> String {
        format!("{}/job/{}-*", self.spec.namespace, self.spec.name_prefix)
    }

    fn plan(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
    ) -> Result<Vec<PlannedRequest>, ActuateError> {
        Ok(vec![self.create(ctx, key, true)?.planned()])
    }

    fn start<'a>(
        &'a self,
        ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Started> {
        Box::pin(async move {
            let name = self.job_name(key);
            let answer =
                send(&self.client.env, &self.create(ctx, key, false)?, &[409], attempts).await?;
            let detail =
                (answer.status == 409).then(|| "already existed (409): adopted".to_string());
            Ok(Started { remote_id: Some(name), url: None, detail })
        })
    }

    fn recover<'a>(
        &'a self,
        _ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        _sent_ns: u64,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<Started>> {
        Box::pin(async move {
            let name = self.job_name(key);
            Ok(self.get_job(&name, attempts).await?.map(|_| Started {
                remote_id: Some(name),
                url: None,
                detail: Some("found after a restart".into()),
            }))
        })
    }

    fn poll<'a>(
        &'a self,
        handle: &'a JobHandle,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Observed> {
        Box::pin(async move {
            let name = handle.remote_id.clone().unwrap_or_else(|| self.job_name(&handle.key));
            match self.get_job(&name, attempts).await? {
                Some(job) => {
                    let (state, detail) = job_state(&job);
                    Ok(Observed { state, detail, output: None })
                }
                None => Ok(Observed {
                    state: JobState::Failed,
                    detail: Some("the Job no longer exists".into()),
                    output: None,
                }),
            }
        })
    }

    fn cancel<'a>(&'a self, handle: &'a JobHandle) -> ActFuture<'a, ()> {
        Box::pin(async move {
            let name = handle.remote_id.clone().unwrap_or_else(|| self.job_name(&handle.key));
            let call = self
                .client
                .call(Method::DELETE, &format!("{}/{name}", self.jobs_path()), false)?
                .body(Body::Json(serde_json::json!({"propagationPolicy": "Background"})));
            send(&self.client.env, &call, &[404], &mut Vec::new()).await?;
            Ok(())
        })
    }
}
