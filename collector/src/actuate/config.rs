//! The collector-side configuration of actuators (`[actuators]` in the collector's TOML) and
//! [`ActuateEnv`], the shared context every actuator is built from: secrets, journal, HTTP
//! client, retry policy and clock.
//!
//! ```toml
//! [actuators]
//! request_timeout = "10s"
//! [actuators.retry]
//! max_attempts = 5
//! base_delay = "200ms"
//! max_delay = "10s"
//! [actuators.kubernetes.clusters.prod]
//! kubeconfig = "/etc/stoker/kubeconfig"
//! context = "prod"
//! [actuators.gcp]
//! metadata_url = "http://metadata.google.internal"
//! token_secret = "gcp-token"      # optional: a bearer token from [secrets] instead of the metadata server
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::journal::Journal;
pub use super::retry::RetryConfig;
use super::retry::RetryPolicy;
use super::secrets::Secrets;
use super::types::ActuateError;
use crate::clock::{SharedClock, SystemClock};
use crate::duration::HumanDuration;

/// `[actuators]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActuatorsConfig {
    /// Per-request timeout for remote APIs; default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<HumanDuration>,
    /// Retry policy for remote APIs.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Kubernetes clusters by name.
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
    /// GCP authentication.
    #[serde(default)]
    pub gcp: GcpConfig,
}

/// `[actuators.kubernetes]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Named clusters that policies refer to with `cluster:`.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
}

/// One cluster: a kubeconfig (and context), or in-cluster service-account auth.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Path of a kubeconfig file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Context in that kubeconfig; default its `current-context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Use the pod's service account (`KUBERNETES_SERVICE_HOST`, mounted token and CA).
    #[serde(default)]
    pub in_cluster: bool,
}

/// `[actuators.gcp]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    /// Metadata server base URL; default `http://metadata.google.internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_url: Option<String>,
    /// A secret holding an OAuth access token, used instead of the metadata server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
}

/// What every actuator is built from. Cheap to clone.
#[derive(Clone)]
pub struct ActuateEnv {
    /// `[actuators]`.
    pub config: ActuatorsConfig,
    /// `[secrets]`.
    pub secrets: Secrets,
    /// The persisted journal of actions and jobs.
    pub journal: Arc<Journal>,
    /// Shared HTTP client (rustls).
    pub http: reqwest::Client,
    /// Retry policy for every remote call.
    pub retry: RetryPolicy,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Wall clock for records and job timeouts.
    pub clock: SharedClock,
}

impl std::fmt::Debug for ActuateEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActuateEnv")
            .field("config", &self.config)
            .field("secrets", &self.secrets)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl ActuateEnv {
    /// Build the environment: installs the rustls ring provider (idempotent) and the client.
    pub fn new(
        config: ActuatorsConfig,
        secrets: Secrets,
        journal: Arc<Journal>,
    ) -> Result<Self, ActuateError> {
        let http = default_http_client()?;
        let retry = RetryPolicy::from_config(&config.retry);
        let request_timeout =
            config.request_timeout.map(|d| d.get()).unwrap_or(Duration::from_secs(10));
        Ok(Self {
            config,
            secrets,
            journal,
            http,
            retry,
            request_timeout,
            clock: Arc::new(SystemClock),
        })
    }

    /// The same environment with another retry policy (tests: no jitter, short delays).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same environment with another per-request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The same environment with another clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Now, Unix nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.clock.now()
    }

    /// Now, as a `SystemTime` (request signing).
    pub fn wall_time(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_nanos(self.clock.now())
    }
}

/// A reqwest client with rustls (ring) and the collector's user agent.
pub fn default_http_client() -> Result<reqwest::Client, ActuateError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("stoker-collector/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ActuateError::Config(format!("HTTP client: {e}")))
}
