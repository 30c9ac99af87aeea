//! Active probes: a configured request (for example a sample image to a KServe v2
//! `/v2/models/{name}/infer` endpoint) sent every interval, its latency and outcome recorded.
//! Timeouts, refused connections and error statuses are outcomes, never crashes.
//!
//! Each probe yields `inference.probe.duration` (histogram, s, for every response) and
//! `inference.probe.requests` (counter) with `outcome` = success|failure and, on failure,
//! `error.type` = the HTTP status code, `timeout` or `connection`.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::aggregate::{Aggregator, MetricMeta, Observation, kv_str};
use super::config::{DEFAULT_LATENCY_BUCKETS, ProbeConfig};
use super::stats::InferenceStats;
use super::{InferenceError, WorkQueue, log_transition, now_unix_nanos, sleep_or_shutdown};

/// `inference.probe.duration`, seconds.
pub const PROBE_DURATION: &str = "inference.probe.duration";
/// `inference.probe.requests`, with `outcome`.
pub const PROBE_REQUESTS: &str = "inference.probe.requests";

/// How one probe request ended.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeOutcome {
    /// A response arrived: its status and the time to its full body.
    Response {
        /// HTTP status code.
        status: u16,
        /// Time from sending to the end of the body.
        latency: Duration,
    },
    /// No response within the timeout.
    Timeout,
    /// The connection could not be made (refused, unreachable, DNS).
    Connection,
    /// Any other failure (protocol error, body cut short).
    Other(String),
}

/// One probe and its client.
#[derive(Debug)]
pub(crate) struct Prober {
    cfg: ProbeConfig,
    interval: Duration,
    client: reqwest::Client,
    method: reqwest::Method,
    headers: reqwest::header::HeaderMap,
    body: Option<bytes::Bytes>,
}

impl Prober {
    /// Build the client and read the body file now, so a missing file fails at start.
    pub(crate) fn new(
        cfg: &ProbeConfig,
        default_interval: Duration,
    ) -> Result<Self, InferenceError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().timeout(cfg.timeout).build().map_err(|source| {
            InferenceError::HttpClient { what: format!("probe {}", cfg.name), source }
        })?;
        let body = match &cfg.body_file {
            Some(path) => Some(bytes::Bytes::from(std::fs::read(path).map_err(|source| {
                InferenceError::ProbeBody { probe: cfg.name.clone(), path: path.clone(), source }
            })?)),
            None => None,
        };
        // Validation has checked method and headers; anything still invalid is skipped.
        let method =
            reqwest::Method::from_bytes(cfg.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &cfg.headers {
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            interval: cfg.interval.unwrap_or(default_interval),
            client,
            method,
            headers,
            body,
        })
    }

    /// The probe's name.
    pub(crate) fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Probe every interval until shutdown.
    pub(crate) async fn run(
        self,
        queue: WorkQueue,
        stats: Arc<InferenceStats>,
        shutdown: CancellationToken,
    ) {
        let mut was_up = None;
        loop {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                o = self.probe_once() => o,
            };
            InferenceStats::add(&stats.probes, 1);
            let ok = matches!(outcome, ProbeOutcome::Response { status, .. } if (200..300).contains(&status));
            if !ok {
                InferenceStats::add(&stats.probe_failures, 1);
            }
            log_transition(&self.cfg.name, &mut was_up, ok, &format!("{outcome:?}"));
            debug!(?outcome, "Probe done.");
            queue.offer_counted(outcome_batch(&self.cfg, &outcome, now_unix_nanos()));
            if !sleep_or_shutdown(self.interval, &shutdown).await {
                return;
            }
        }
    }

    /// Send the request once. Latency is measured on tokio's clock.
    pub(crate) async fn probe_once(&self) -> ProbeOutcome {
        let mut request =
            self.client.request(self.method.clone(), &self.cfg.url).headers(self.headers.clone());
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let started = tokio::time::Instant::now();
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                ProbeOutcome::Timeout
            } else if e.is_connect() {
                ProbeOutcome::Connection
            } else {
                ProbeOutcome::Other(e.to_string())
            }
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return classify(e),
        };
        let status = response.status().as_u16();
        // The body is part of the latency a client sees.
        if let Err(e) = response.bytes().await {
            return classify(e);
        }
        ProbeOutcome::Response { status, latency: started.elapsed() }
    }
}

/// The probe's measurements as a delta batch (resource `service.name` = the probe's name).
pub fn outcome_batch(cfg: &ProbeConfig, outcome: &ProbeOutcome, now: u64) -> ResourceMetrics {
    let mut attrs: Vec<KeyValue> = Vec::new();
    if let Some(name) = &cfg.model.name {
        attrs.push(kv_str("model.name", name.clone()));
    }
    if let Some(version) = &cfg.model.version {
        attrs.push(kv_str("model.version", version.clone()));
    }
    let error_type = match outcome {
        ProbeOutcome::Response { status, .. } if (200..300).contains(status) => None,
        ProbeOutcome::Response { status, .. } => Some(status.to_string()),
        ProbeOutcome::Timeout => Some("timeout".to_owned()),
        ProbeOutcome::Connection => Some("connection".to_owned()),
        ProbeOutcome::Other(_) => Some("other".to_owned()),
    };
    let resource = [kv_str("service.name", cfg.name.clone())];
    let mut local = Aggregator::new(Vec::new(), usize::MAX, now);
    if let ProbeOutcome::Response { status, latency } = outcome {
        let mut a = attrs.clone();
        a.push(kv_str("http.response.status_code", status.to_string()));
        a.sort_by(|x, y| x.key.cmp(&y.key));
        local.observe(
            &resource,
            &MetricMeta::new(PROBE_DURATION, "s"),
            a,
            Observation::Histogram {
                bounds: &DEFAULT_LATENCY_BUCKETS,
                value: latency.as_secs_f64(),
            },
        );
    }
    let mut a = attrs;
    a.push(kv_str("outcome", if error_type.is_none() { "success" } else { "failure" }));
    if let Some(e) = error_type {
        a.push(kv_str("error.type", e));
    }
    a.sort_by(|x, y| x.key.cmp(&y.key));
    local.observe(
        &resource,
        &MetricMeta::new(PROBE_REQUESTS, "{request}"),
        a,
        Observation::Count(1),
    );
    local.flush(now).into_iter().next().unwrap_or_default()
}
