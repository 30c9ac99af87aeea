//! The daemon: wires the samplers, the publisher, the exporter, the local endpoint and the
//! inference room together, and shuts them down in order.
//!
//! Shutdown has two phases: `shutdown` stops the samplers, receivers and the HTTP endpoint;
//! once they are done (or after the grace period), a last self-telemetry batch is queued and
//! the exporter is told to flush.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::{AgentConfig, ExportAuth};
use crate::export::{ExportCounters, ExporterSettings, Outbox, exporter};
use crate::inference::{self, InferenceContext, InferenceError};
use crate::resource::node_resource;
use crate::sample::gpu::{self, GpuSampler};
use crate::sample::host::{HostError, HostSampler};
use crate::sample::otlp::unix_nanos;
use crate::telemetry::{self, Latest, Publisher};

/// How long the samplers and receivers get to stop before the exporter flushes anyway.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Options that come only from the command line.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Override of the local OTLP/gRPC receiver address.
    pub otlp_grpc_listen: Option<SocketAddr>,
    /// Override of the local OTLP/HTTP receiver address.
    pub otlp_http_listen: Option<SocketAddr>,
    /// Collector credentials, resolved by the caller ([`AgentConfig::export_auth`]) so file
    /// errors name the configuration file; the default sends no token and trusts only the
    /// system's roots.
    pub export_auth: ExportAuth,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// `/metrics` could not bind its address.
    #[error("cannot listen on {addr} for /metrics: {source}")]
    MetricsBind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The host cannot be sampled.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The inference room failed to start.
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// Run the agent until `shutdown` fires, then stop everything and flush the exporter.
pub async fn run(
    cfg: AgentConfig,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let start = unix_nanos();
    let resource = node_resource(&cfg.node);
    let outbox = Outbox::new(cfg.export.queue_batches);
    let counters = Arc::new(ExportCounters::default());
    let tasks = TaskTracker::new();

    let latest = match cfg.metrics_listen {
        Some(addr) => {
            let listener = telemetry::bind(addr)
                .await
                .map_err(|source| DaemonError::MetricsBind { addr, source })?;
            let latest = Arc::new(Latest::default());
            let token = shutdown.clone();
            let l = latest.clone();
            info!(addr = %listener.local_addr().unwrap_or(addr), "Serving /metrics and /healthz.");
            tasks.spawn(
                async move {
                    if let Err(e) = telemetry::serve(listener, l, token).await {
                        error!(error = %e, "The /metrics endpoint stopped.");
                    }
                }
                .instrument(info_span!("metrics_endpoint")),
            );
            Some(latest)
        }
        None => None,
    };
    let publisher = Publisher::new(outbox.clone(), latest.clone());

    let host = HostSampler::new(cfg.processes.clone(), start)?;
    tasks.spawn(
        sample_loop(
            host,
            |s: &mut HostSampler, now, r: &[KeyValue]| s.sample(now, r),
            cfg.interval,
            resource.clone(),
            publisher.clone(),
            shutdown.clone(),
        )
        .instrument(info_span!("host_sampler")),
    );

    start_gpu(&cfg, start, &resource, &publisher, &tasks, &shutdown).await;

    let room = inference::start(
        &cfg.inference,
        InferenceContext {
            outbox: outbox.clone(),
            node_resource: resource.clone(),
            interval: cfg.interval,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            otlp_grpc_listen: opts.otlp_grpc_listen,
            otlp_http_listen: opts.otlp_http_listen,
        },
    )?;
    if let Some(latest) = &latest {
        latest.show_inference(room.stats);
    }

    // The agent's own counters, once per interval.
    {
        let (publisher, outbox, counters, resource, token) = (
            publisher.clone(),
            outbox.clone(),
            counters.clone(),
            resource.clone(),
            shutdown.clone(),
        );
        let interval = cfg.interval;
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                publisher.publish(telemetry::self_batch(
                    unix_nanos(),
                    start,
                    &outbox,
                    &counters,
                    &resource,
                ));
            }
        });
    }

    let export_stop = CancellationToken::new();
    let exporter_task = tokio::spawn(
        exporter::run(
            ExporterSettings {
                endpoint: cfg.collector.clone(),
                timeout: cfg.export.timeout,
                backoff_initial: cfg.export.backoff_initial,
                backoff_max: cfg.export.backoff_max,
                max_batches_per_request: cfg.export.max_batches_per_request,
                shutdown_grace: cfg.export.shutdown_grace,
                auth: opts.export_auth,
            },
            outbox.clone(),
            counters.clone(),
            export_stop.clone(),
        )
        .instrument(info_span!("exporter")),
    );
    info!(collector = %cfg.collector, interval = ?cfg.interval, "Agent started.");

    shutdown.cancelled().await;
    info!("Shutting down.");
    tasks.close();
    if tokio::time::timeout(STOP_GRACE, tasks.wait()).await.is_err() {
        warn!("Some tasks did not stop in time; flushing anyway.");
    }
    publisher.publish(telemetry::self_batch(unix_nanos(), start, &outbox, &counters, &resource));
    export_stop.cancel();
    if let Err(e) = exporter_task.await {
        error!(error = %e, "The exporter task failed.");
    }
    info!("Agent stopped.");
    Ok(())
}

/// Start GPU sampling, or say once that this node has none.
async fn start_gpu(
    cfg: &AgentConfig,
    start: u64,
    resource: &[KeyValue],
    publisher: &Publisher,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let lib = cfg.nvml_lib.clone();
    let init = tokio::task::spawn_blocking(move || GpuSampler::new(lib.as_os_str(), start)).await;
    let sampler = match init {
        Ok(Ok(sampler)) => sampler,
        Ok(Err(e)) => {
            warn!(error = %e, "No usable NVIDIA driver; running with host metrics only.");
            return;
        }
        Err(e) => {
            error!(error = %e, "NVML initialisation panicked; running with host metrics only.");
            return;
        }
    };
    info!(gpus = sampler.device_count(), "GPU sampling started.");
    let (nvml, counts, devices) = sampler.xid_watch();
    let token = shutdown.clone();
    tasks.spawn_blocking(move || gpu::watch_xids(nvml, counts, devices, token));
    tasks.spawn(
        sample_loop(
            sampler,
            |s: &mut GpuSampler, now, r: &[KeyValue]| s.sample(now, r),
            cfg.interval,
            resource.to_vec(),
            publisher.clone(),
            shutdown.clone(),
        )
        .instrument(info_span!("gpu_sampler")),
    );
}

/// Call `sample` every `interval` on the blocking pool and publish what it returns.
async fn sample_loop<S, F>(
    sampler: S,
    sample: F,
    interval: Duration,
    resource: Vec<KeyValue>,
    publisher: Publisher,
    shutdown: CancellationToken,
) where
    S: Send + 'static,
    F: Fn(&mut S, u64, &[KeyValue]) -> opentelemetry_proto::tonic::metrics::v1::ResourceMetrics
        + Send
        + Sync
        + Copy
        + 'static,
{
    // The first tick waits a full interval: CPU usage needs two readings apart.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let resource: Arc<[KeyValue]> = resource.into();
    let mut sampler = Some(sampler);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Some(mut s) = sampler.take() else { break };
        let r = resource.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let batch = sample(&mut s, unix_nanos(), &r);
            (s, batch)
        })
        .await;
        match joined {
            Ok((s, batch)) => {
                sampler = Some(s);
                publisher.publish(batch);
            }
            Err(e) => {
                error!(error = %e, "Sampler panicked; it stops here.");
                break;
            }
        }
    }
}
