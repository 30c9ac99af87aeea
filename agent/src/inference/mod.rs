//! Inference signals: what the agent learns from the services on its node, normalised into the
//! `inference.*` vocabulary and pushed to the [`Outbox`](crate::export::Outbox).
//!
//! Three ways in, one way out:
//!
//! ```text
//! OTLP gRPC/HTTP receivers ─┐
//! model-server scrapers ────┼─▶ bounded work queue ─▶ aggregator task ─▶ per-interval batches ─▶ Outbox
//! active probes ────────────┘        (try_send: full = shed, counted)
//! ```
//!
//! Everything arrives as OTLP `ResourceMetrics` (spans are turned into request-duration
//! histograms at the receiver, scrapes into cumulative metrics at the scraper, probe results
//! into delta histograms at the prober), so one [`aggregate::Aggregator`] owns all interval
//! state, the series cap and the cumulative-to-delta baselines.

pub mod aggregate;
pub mod config;
pub mod probe;
pub mod prom_text;
pub mod receiver;
pub mod scrape;
pub mod spans;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, info, info_span, warn};

pub use aggregate::{Aggregator, Ingested, MetricMeta};
pub use config::{
    ConfigProblem, DEFAULT_INFERENCE_CONFIG, InferenceConfig, ProbeConfig, ReceiverConfig,
    ScrapeConfig, ScrapeKind,
};
pub use stats::{InferenceStats, InferenceStatsSnapshot};

/// What the inference room needs from the daemon.
pub struct InferenceContext {
    /// Where finished per-interval batches go.
    pub outbox: crate::export::Outbox,
    /// The node's resource attributes (host.name, host.id, labels, cloud.*), for enrichment.
    pub node_resource: Vec<KeyValue>,
    /// Aggregation interval: one batch per resource per interval.
    pub interval: std::time::Duration,
    /// Fired by the daemon to stop every task of the room.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The daemon's task tracker; the room's tasks are spawned on it.
    pub tasks: tokio_util::task::TaskTracker,
    /// Override of the local OTLP gRPC / HTTP receiver addresses from the CLI.
    pub otlp_grpc_listen: Option<std::net::SocketAddr>,
    /// Override of the local OTLP HTTP receiver address from the CLI.
    pub otlp_http_listen: Option<std::net::SocketAddr>,
}

/// Why the room could not start.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The `[inference]` section is invalid; every problem is listed.
    #[error("invalid [inference] configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigProblem>),
    /// A receiver could not bind its address.
    #[error("bind the OTLP {protocol} receiver on {addr}")]
    Bind {
        /// `gRPC` or `HTTP`.
        protocol: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A probe's body file could not be read.
    #[error("read the body file {path} of probe {probe}")]
    ProbeBody {
        /// The probe's name.
        probe: String,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client for scrapes and probes could not be built.
    #[error("build the HTTP client for {what}")]
    HttpClient {
        /// `scrape <name>` or `probe <name>`.
        what: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// `spawn` was called outside a Tokio runtime.
    #[error("the inference room must be started inside a Tokio runtime")]
    NoRuntime,
}

/// What a started room tells its caller.
#[derive(Clone, Debug)]
pub struct InferenceHandle {
    /// The room's counters.
    pub stats: Arc<InferenceStats>,
    /// Where the OTLP/gRPC receiver listens (the bound port when 0 was asked).
    pub grpc_addr: SocketAddr,
    /// Where the OTLP/HTTP receiver listens.
    pub http_addr: SocketAddr,
}

/// Messages to the aggregator task.
#[derive(Debug)]
pub(crate) enum Work {
    /// Batches to fold in; the reply, when asked, says how many points were shed.
    Batches { batches: Vec<ResourceMetrics>, reply: Option<oneshot::Sender<Ingested>> },
}

/// The sending side of the work queue, shared by receivers, scrapers and probes.
#[derive(Clone, Debug)]
pub(crate) struct WorkQueue {
    tx: mpsc::Sender<Work>,
    stats: Arc<InferenceStats>,
}

impl WorkQueue {
    /// Queue batches without waiting; `false` when the queue is full (the caller counts what
    /// it sheds, in its own unit: points or spans).
    pub(crate) fn offer(
        &self,
        batches: Vec<ResourceMetrics>,
        reply: Option<oneshot::Sender<Ingested>>,
    ) -> bool {
        self.tx.try_send(Work::Batches { batches, reply }).is_ok()
    }

    /// Queue a batch of our own (scrape, probe); what does not fit is counted as shed points.
    pub(crate) fn offer_counted(&self, batch: ResourceMetrics) {
        let points = aggregate::count_points(&batch);
        if !self.offer(vec![batch], None) {
            InferenceStats::add(&self.stats.points_shed, points);
        }
    }
}

/// Requests waiting for the aggregator, per configured `max_in_flight` request.
fn queue_capacity(cfg: &ReceiverConfig) -> usize {
    cfg.max_in_flight.max(1)
}

/// Start the room: receivers, scrapers, probes and the aggregator, all on `ctx.tasks`, all
/// stopping on `ctx.shutdown` (the aggregator flushes a last batch first). The handle carries
/// the bound addresses and the room's counters, which the agent's `/metrics` shows.
pub fn start(
    cfg: &InferenceConfig,
    ctx: InferenceContext,
) -> Result<InferenceHandle, InferenceError> {
    let problems = cfg.validate();
    if !problems.is_empty() {
        return Err(InferenceError::Config(problems));
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(InferenceError::NoRuntime);
    }
    let stats = Arc::new(InferenceStats::default());
    let (tx, rx) = mpsc::channel(queue_capacity(&cfg.receiver));
    let queue = WorkQueue { tx, stats: Arc::clone(&stats) };

    let mut receiver_cfg = cfg.receiver.clone();
    if let Some(addr) = ctx.otlp_grpc_listen {
        receiver_cfg.grpc_listen = addr;
    }
    if let Some(addr) = ctx.otlp_http_listen {
        receiver_cfg.http_listen = addr;
    }
    // Everything that can fail is done before any task starts, so an error leaves nothing behind.
    let probes = cfg
        .probe
        .iter()
        .map(|p| probe::Prober::new(p, ctx.interval))
        .collect::<Result<Vec<_>, _>>()?;
    let scrapers = cfg
        .scrape
        .iter()
        .map(|s| scrape::Scraper::new(s, ctx.interval))
        .collect::<Result<Vec<_>, _>>()?;
    let receivers = receiver::Receivers::bind(&receiver_cfg, queue.clone(), Arc::clone(&stats))?;
    let handle = InferenceHandle {
        stats: Arc::clone(&stats),
        grpc_addr: receivers.grpc_addr,
        http_addr: receivers.http_addr,
    };
    receivers.spawn(&ctx.tasks, ctx.shutdown.clone());
    for scraper in scrapers {
        let span = info_span!("scrape", target = %scraper.name());
        ctx.tasks.spawn(
            scraper.run(queue.clone(), Arc::clone(&stats), ctx.shutdown.clone()).instrument(span),
        );
    }
    for prober in probes {
        let span = info_span!("probe", probe = %prober.name());
        ctx.tasks.spawn(
            prober.run(queue.clone(), Arc::clone(&stats), ctx.shutdown.clone()).instrument(span),
        );
    }
    let map_http = receiver_cfg.map_http_server_duration;
    let aggregator =
        Aggregator::new(ctx.node_resource.clone(), receiver_cfg.max_series, now_unix_nanos());
    let tasks = ctx.tasks.clone();
    tasks.spawn(
        run_aggregator(aggregator, rx, map_http, ctx, Arc::clone(&stats))
            .instrument(info_span!("inference")),
    );
    info!(grpc = %handle.grpc_addr, http = %handle.http_addr, "Inference receivers listening.");
    Ok(handle)
}

/// Wall-clock now in Unix nanoseconds: OTLP timestamps. Logic takes it as a parameter.
pub(crate) fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn run_aggregator(
    mut aggregator: Aggregator,
    mut rx: mpsc::Receiver<Work>,
    map_http: bool,
    ctx: InferenceContext,
    stats: Arc<InferenceStats>,
) {
    let rename = move |m: &Metric| spans::rename_metric(m, map_http);
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + ctx.interval, ctx.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut exported = InferenceStatsSnapshot::default();
    let started = now_unix_nanos();
    let mut last_flush = started;
    loop {
        tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => break,
            _ = ticker.tick() => {
                let now = now_unix_nanos();
                flush(&mut aggregator, &ctx, &stats, &mut exported, last_flush, now);
                last_flush = now;
            }
            work = rx.recv() => match work {
                Some(Work::Batches { batches, reply }) => {
                    let mut total = Ingested::default();
                    for batch in &batches {
                        let got = aggregator.ingest(batch, &rename);
                        total.accepted += got.accepted;
                        total.shed += got.shed;
                    }
                    InferenceStats::add(&stats.points_shed, total.shed);
                    if let Some(reply) = reply {
                        // The sender may have gone (client hung up); nothing to tell then.
                        let _ = reply.send(total);
                    }
                }
                None => break,
            },
        }
    }
    // Fold in what was already queued, then flush once more so the last interval is not lost.
    rx.close();
    while let Ok(Work::Batches { batches, reply }) = rx.try_recv() {
        for batch in &batches {
            aggregator.ingest(batch, &rename);
        }
        drop(reply);
    }
    flush(&mut aggregator, &ctx, &stats, &mut exported, last_flush, now_unix_nanos());
    info!("Inference aggregator stopped.");
}

fn flush(
    aggregator: &mut Aggregator,
    ctx: &InferenceContext,
    stats: &InferenceStats,
    exported: &mut InferenceStatsSnapshot,
    start: u64,
    now: u64,
) {
    let batches = aggregator.flush(now);
    for batch in batches {
        ctx.outbox.push(batch);
    }
    let current = stats.snapshot();
    ctx.outbox.push(stats_batch(&ctx.node_resource, exported, &current, start, now));
    *exported = current;
}

/// The room's own counters as delta sums, under the node's resource.
fn stats_batch(
    node_resource: &[KeyValue],
    before: &InferenceStatsSnapshot,
    now_stats: &InferenceStatsSnapshot,
    start: u64,
    now: u64,
) -> ResourceMetrics {
    let metrics = now_stats
        .named()
        .into_iter()
        .zip(before.named())
        .map(|((name, description, value), (_, _, earlier))| Metric {
            name: name.to_owned(),
            description: description.to_owned(),
            unit: "1".to_owned(),
            data: Some(Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsInt(
                        i64::try_from(value.saturating_sub(earlier)).unwrap_or(i64::MAX),
                    )),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        })
        .collect();
    ResourceMetrics {
        resource: Some(Resource { attributes: node_resource.to_vec(), ..Default::default() }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                name: aggregate::SCOPE_NAME.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..Default::default()
            }),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Log a target's state change once, not every interval.
pub(crate) fn log_transition(name: &str, was_up: &mut Option<bool>, up: bool, detail: &str) {
    if *was_up != Some(up) {
        if up {
            info!(target_name = name, "Target is up.");
        } else {
            warn!(target_name = name, error = detail, "Target is down.");
        }
        *was_up = Some(up);
    }
}

/// Sleep `period`, or return `false` when shutdown fires first.
pub(crate) async fn sleep_or_shutdown(
    period: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(period) => true,
    }
}
