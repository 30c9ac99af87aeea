//! The remote store backend: series go out by Prometheus remote-write to a
//! Prometheus-compatible store (VictoriaMetrics, Mimir, Thanos Receive, Cortex, Prometheus)
//! and are read back with PromQL over its HTTP API, so any number of collectors ingest side
//! by side and their policies read the whole fleet.
//!
//! - [`names`]: OpenTelemetry → Prometheus names; [`encode`]: OTLP requests as series;
//!   [`wire`]: the remote-write messages.
//! - [`queue`]: the durable, sharded send queue. A request is acknowledged once its series
//!   are committed to `remote-queue.redb` (one fsync shared by the requests that arrive
//!   together), not once the remote took them: ingest keeps answering while the remote is
//!   down, a restart loses nothing acknowledged, and only a full queue makes ingest answer
//!   503 / UNAVAILABLE so agents buffer.
//! - [`promql`]: the policy engine's [`SignalSource`](crate::policy::signal::SignalSource)
//!   and the `/api/v1/query` backend over PromQL, one grouped query per distinct signal and
//!   tick.
//!
//! In remote mode the embedded store keeps what this collector ingested (node inventory,
//! anomaly scores, a local view) while policies and `/api/v1/query` read the remote.

pub mod encode;
pub mod names;
pub mod promql;
pub mod queue;
pub mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

pub use promql::{PromClient, PromSource};
pub use queue::{Full, RemoteWriter};

/// The remote backend's two halves as the listeners use them; both `None` with the embedded
/// backend.
#[derive(Clone, Debug, Default)]
pub struct Remote {
    /// Where ingest queues what it accepts.
    pub writer: Option<std::sync::Arc<RemoteWriter>>,
    /// What `/api/v1/query` reads.
    pub source: Option<std::sync::Arc<PromSource>>,
}

/// Which store holds the series (`[store] backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The collector's own store on its disk.
    #[default]
    Embedded,
    /// A Prometheus-compatible store through remote-write and PromQL (`[store.remote]`).
    Remote,
}

/// `[store.remote]`: where to write and read, how to authenticate, and the send queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// Prometheus remote-write 1.0 endpoint (snappy protobuf), e.g.
    /// `http://vm:8428/api/v1/write`.
    pub write_url: Option<String>,
    /// Prometheus HTTP API base (`/api/v1/query`, `/api/v1/query_range`, …), e.g.
    /// `http://vm:8428`; for VictoriaMetrics cluster `http://vmselect:8481/select/0/prometheus`.
    pub query_url: Option<String>,
    /// Name of a `[secrets]` entry sent as `Authorization: Bearer …` on writes and queries.
    pub bearer_token_secret: Option<String>,
    /// Further headers on every request (e.g. `X-Scope-OrgID` for Mimir/Cortex tenants).
    pub headers: BTreeMap<String, String>,
    /// PEM file of the CA that signs the remote's certificate (default: the system's roots are
    /// not loaded; plain `http://` or this CA).
    pub ca_file: Option<PathBuf>,
    /// Timeout of one remote-write request.
    pub write_timeout: HumanDuration,
    /// Timeout of one PromQL query; a slow query is a signal error for the rules reading it.
    pub query_timeout: HumanDuration,
    /// Parallel senders; a series always goes through the same one, in time order.
    pub shards: usize,
    /// Bytes (snappy-compressed) the queue may hold before ingest answers 503 / UNAVAILABLE.
    pub max_queue_bytes: u64,
    /// Most samples in one remote-write request.
    pub max_samples_per_send: usize,
    /// First retry delay after a 5xx, a 429 or a connection error; doubles up to
    /// `max_backoff`.
    pub min_backoff: HumanDuration,
    /// Longest retry delay.
    pub max_backoff: HumanDuration,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            write_url: None,
            query_url: None,
            bearer_token_secret: None,
            headers: BTreeMap::new(),
            ca_file: None,
            write_timeout: HumanDuration::from_secs(30),
            query_timeout: HumanDuration::from_secs(10),
            shards: 4,
            max_queue_bytes: 256 << 20,
            max_samples_per_send: 20_000,
            min_backoff: HumanDuration(std::time::Duration::from_millis(50)),
            max_backoff: HumanDuration::from_secs(5),
        }
    }
}

impl RemoteConfig {
    /// Problems with this section when the remote backend is chosen, as `(key, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let url = |key: &str, v: &Option<String>, errs: &mut Vec<(String, String)>| match v {
            None => errs
                .push((format!("store.remote.{key}"), "required with backend = \"remote\"".into())),
            Some(u) => match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                Ok(p) => errs.push((
                    format!("store.remote.{key}"),
                    format!("{u:?}: scheme {:?} is not http or https", p.scheme()),
                )),
                Err(e) => errs.push((format!("store.remote.{key}"), format!("{u:?}: {e}"))),
            },
        };
        url("write_url", &self.write_url, &mut errs);
        url("query_url", &self.query_url, &mut errs);
        if self.shards == 0 || self.shards > 256 {
            errs.push(("store.remote.shards".into(), "must be between 1 and 256".into()));
        }
        if self.max_queue_bytes < 1 << 20 {
            errs.push(("store.remote.max_queue_bytes".into(), "must be at least 1 MiB".into()));
        }
        if self.max_samples_per_send == 0 {
            errs.push(("store.remote.max_samples_per_send".into(), "must be positive".into()));
        }
        if self.write_timeout.get().is_zero() || self.query_timeout.get().is_zero() {
            errs.push(("store.remote".into(), "timeouts must be positive".into()));
        }
        if self.min_backoff.get().is_zero() || self.min_backoff.get() > self.max_backoff.get() {
            errs.push((
                "store.remote.min_backoff".into(),
                "must be positive and at most max_backoff".into(),
            ));
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errs.push((
                    format!("store.remote.headers.{name}"),
                    "not a valid header name".into(),
                ));
            }
        }
        errs
    }

    /// The HTTP client for the remote (rustls; the configured CA when given).
    pub fn http_client(&self) -> Result<reqwest::Client, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("stoker-collector/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(5));
        if let Some(ca) = &self.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("store.remote.ca_file {}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("store.remote.ca_file {}: {e}", ca.display()))?;
            b = b.add_root_certificate(cert);
        }
        b.build().map_err(|e| format!("HTTP client for the remote store: {e}"))
    }

    /// The headers every request carries: the configured ones and the bearer token.
    pub fn headers(&self, bearer: Option<&str>) -> Result<reqwest::header::HeaderMap, String> {
        let mut h = reqwest::header::HeaderMap::new();
        for (k, v) in &self.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| format!("store.remote.headers.{k}: {e}"))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|e| format!("store.remote.headers.{k}: {e}"))?;
            h.insert(name, value);
        }
        if let Some(token) = bearer {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the remote store's bearer token is not a valid header value")?;
            value.set_sensitive(true);
            h.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(h)
    }
}
