//! The exporter task: drains the [`Outbox`] and sends `ExportMetricsServiceRequest`s to the
//! collector over OTLP/gRPC.
//!
//! Failures never block producers. A retryable failure (collector down, deadline, overload)
//! puts the batches back at the front of the outbox, drops the connection and waits with
//! exponential backoff; a permanent rejection (the collector says the data is invalid) is
//! counted and not retried, as the OTLP specification asks. Partial success counts the
//! rejected points. On shutdown the task makes one bounded attempt to flush what is queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tracing::{debug, info, warn};

use super::Outbox;
use super::outbox::count_points;
use crate::config::ExportAuth;

/// How the exporter reaches the collector.
#[derive(Clone, Debug)]
pub struct ExporterSettings {
    /// `http://host:port` of the collector's OTLP/gRPC ingest.
    pub endpoint: String,
    /// Deadline of one request (and of connecting).
    pub timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Batches per request at most.
    pub max_batches_per_request: usize,
    /// How long the final flush may take.
    pub shutdown_grace: Duration,
    /// Bearer token and extra trusted CAs.
    pub auth: ExportAuth,
}

/// Counters the exporter keeps; exported as the agent's own telemetry.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Data points the collector accepted.
    pub sent_points: AtomicU64,
    /// Data points the collector refused (partial success or a permanent error).
    pub rejected_points: AtomicU64,
    /// Requests that failed (connect errors included).
    pub failed_requests: AtomicU64,
    /// Whether the last attempt reached the collector.
    pub connected: AtomicBool,
}

/// Exponential backoff without jitter (one agent per node, so no thundering herd to break).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Start at `initial`, double up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, next: initial }
    }

    /// The delay to wait now; the following one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// After a success, start again from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Why one export attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint URL is malformed.
    #[error("collector endpoint {endpoint:?} is invalid: {source}")]
    Endpoint {
        /// The configured endpoint.
        endpoint: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The collector could not be reached.
    #[error("cannot connect to the collector at {endpoint}: {source}")]
    Connect {
        /// The configured endpoint.
        endpoint: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The request failed with a gRPC status.
    #[error("export failed: {0}")]
    Status(#[from] tonic::Status),
}

impl ExportError {
    /// Whether the batches should be kept and sent again later.
    fn retryable(&self) -> bool {
        match self {
            ExportError::Endpoint { .. } => false,
            ExportError::Connect { .. } => true,
            // The codes the OTLP specification lists as retryable.
            ExportError::Status(status) => matches!(
                status.code(),
                tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Aborted
                    | tonic::Code::OutOfRange
                    | tonic::Code::Unavailable
                    | tonic::Code::DataLoss
                    | tonic::Code::Unknown
            ),
        }
    }
}

struct Connection {
    settings: ExporterSettings,
    client: Option<MetricsServiceClient<Channel>>,
}

impl Connection {
    async fn client(&mut self) -> Result<&mut MetricsServiceClient<Channel>, ExportError> {
        if self.client.is_none() {
            let endpoint = Endpoint::from_shared(self.settings.endpoint.clone())
                .map_err(|source| ExportError::Endpoint {
                    endpoint: self.settings.endpoint.clone(),
                    source,
                })?
                .connect_timeout(self.settings.timeout)
                .timeout(self.settings.timeout)
                .tcp_nodelay(true);
            let endpoint = if self.settings.endpoint.starts_with("https://") {
                // rustls with the system's roots, plus the configured CA when there is one.
                let mut tls = ClientTlsConfig::new().with_native_roots();
                if let Some(pem) = &self.settings.auth.ca_pem {
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                endpoint.tls_config(tls).map_err(|source| ExportError::Endpoint {
                    endpoint: self.settings.endpoint.clone(),
                    source,
                })?
            } else {
                endpoint
            };
            let channel = endpoint.connect().await.map_err(|source| ExportError::Connect {
                endpoint: self.settings.endpoint.clone(),
                source,
            })?;
            self.client = Some(MetricsServiceClient::new(channel));
        }
        match self.client.as_mut() {
            Some(client) => Ok(client),
            // Set just above; kept as an error rather than a panic.
            None => Err(ExportError::Status(tonic::Status::internal("no client"))),
        }
    }

    /// Send one request; returns the points the collector rejected.
    async fn send(
        &mut self,
        batches: &[ResourceMetrics],
        counters: &ExportCounters,
    ) -> Result<(), ExportError> {
        let points: u64 = batches.iter().map(count_points).sum();
        let mut request =
            tonic::Request::new(ExportMetricsServiceRequest { resource_metrics: batches.to_vec() });
        if let Some(token) = &self.settings.auth.token {
            match format!("Bearer {token}").parse() {
                Ok(value) => {
                    request.metadata_mut().insert("authorization", value);
                }
                // Checked when the config was resolved; refuse rather than send unauthenticated.
                Err(_) => {
                    return Err(ExportError::Status(tonic::Status::unauthenticated(
                        "the configured token is not a valid header value",
                    )));
                }
            }
        }
        let result = match self.client().await {
            Ok(client) => client.export(request).await.map_err(ExportError::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(response) => {
                counters.connected.store(true, Ordering::Relaxed);
                let rejected = response
                    .into_inner()
                    .partial_success
                    .map(|p| {
                        if p.rejected_data_points > 0 || !p.error_message.is_empty() {
                            warn!(
                                rejected = p.rejected_data_points,
                                message = %p.error_message,
                                "Collector accepted the export only in part."
                            );
                        }
                        u64::try_from(p.rejected_data_points).unwrap_or(0)
                    })
                    .unwrap_or(0)
                    .min(points);
                counters.sent_points.fetch_add(points - rejected, Ordering::Relaxed);
                counters.rejected_points.fetch_add(rejected, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                counters.failed_requests.fetch_add(1, Ordering::Relaxed);
                if e.retryable() {
                    counters.connected.store(false, Ordering::Relaxed);
                    self.client = None;
                } else {
                    counters.rejected_points.fetch_add(points, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }
}

/// Run the exporter until `shutdown` fires, then flush for at most `shutdown_grace`.
pub async fn run(
    settings: ExporterSettings,
    outbox: Outbox,
    counters: Arc<ExportCounters>,
    shutdown: CancellationToken,
) {
    let max = settings.max_batches_per_request.max(1);
    let grace = settings.shutdown_grace;
    let mut backoff = Backoff::new(settings.backoff_initial, settings.backoff_max);
    let mut conn = Connection { settings, client: None };
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = outbox.ready() => {}
        }
        let batches = outbox.drain(max);
        if batches.is_empty() {
            continue;
        }
        match conn.send(&batches, &counters).await {
            Ok(()) => {
                if failing {
                    info!(endpoint = %conn.settings.endpoint, "Collector reachable again; export resumed.");
                    failing = false;
                }
                backoff.reset();
            }
            Err(e) if e.retryable() => {
                outbox.requeue(batches);
                let delay = backoff.next_delay();
                if failing {
                    debug!(error = %e, delay = ?delay, "Export still failing; retrying.");
                } else {
                    warn!(error = %e, delay = ?delay, "Export failed; keeping data in the outbox and retrying with backoff.");
                    failing = true;
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => {
                warn!(error = %e, batches = batches.len(), "Collector refused the export; data dropped.");
            }
        }
    }
    flush(&mut conn, &outbox, &counters, max, grace).await;
}

/// Send what is left, once, within `grace`.
async fn flush(
    conn: &mut Connection,
    outbox: &Outbox,
    counters: &ExportCounters,
    max: usize,
    grace: Duration,
) {
    let work = async {
        loop {
            let batches = outbox.drain(max);
            if batches.is_empty() {
                return true;
            }
            if let Err(e) = conn.send(&batches, counters).await {
                warn!(error = %e, "Final flush failed.");
                outbox.requeue(batches);
                return false;
            }
        }
    };
    match tokio::time::timeout(grace, work).await {
        Ok(true) => info!("Outbox flushed."),
        Ok(false) => {}
        Err(_) => warn!(grace = ?grace, "Final flush timed out."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let seen: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seen, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(ExportError::Status(tonic::Status::unavailable("x")).retryable());
        assert!(ExportError::Status(tonic::Status::deadline_exceeded("x")).retryable());
        assert!(!ExportError::Status(tonic::Status::invalid_argument("x")).retryable());
        assert!(!ExportError::Status(tonic::Status::unauthenticated("x")).retryable());
    }
}
