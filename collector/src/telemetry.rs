//! The collector's own telemetry in Prometheus text format (`/metrics`): ingest rate, refused
//! points by reason, store size, query latency.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ingest::IngestStats;
use crate::store::Store;

const QUERY_BOUNDS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// A latency histogram of fixed bounds (seconds), updated without locks.
#[derive(Debug)]
pub struct Durations {
    bounds: &'static [f64],
    /// One count per bound and one for `+Inf`, not cumulative.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Durations {
    /// An empty histogram over `bounds` (ascending, seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        let i = self.bounds.iter().position(|b| s <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Writes the histogram as `name_bucket{le}`, `name_sum` and `name_count`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {cum}");
    }
}

/// Query latency and counts.
#[derive(Debug)]
pub struct QueryStats {
    durations: Durations,
    errors: AtomicU64,
}

impl Default for QueryStats {
    fn default() -> Self {
        Self { durations: Durations::new(&QUERY_BOUNDS), errors: AtomicU64::new(0) }
    }
}

impl QueryStats {
    /// Records one query that took `d`.
    pub fn observe(&self, d: std::time::Duration, ok: bool) {
        self.durations.observe(d);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes one metric family of `kind` (`counter`, `gauge`) with its `(labels, value)` samples.
fn family(out: &mut String, kind: &str, name: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// Writes a counter family.
pub fn counter(out: &mut String, name: &str, help: &str, samples: &[(&str, u64)]) {
    family(out, "counter", name, help, samples);
}

/// Writes a gauge family.
pub fn gauge(out: &mut String, name: &str, help: &str, samples: &[(&str, u64)]) {
    family(out, "gauge", name, help, samples);
}

/// Renders everything as Prometheus text exposition.
pub fn render(store: &Store, ingest: &IngestStats, queries: &QueryStats) -> String {
    let mut out = String::with_capacity(4096);
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    counter(
        &mut out,
        "stoker_collector_ingest_requests_total",
        "OTLP export requests received.",
        &[
            ("transport=\"grpc\"", l(&ingest.grpc_requests)),
            ("transport=\"http\"", l(&ingest.http_requests)),
        ],
    );
    counter(
        &mut out,
        "stoker_collector_ingest_request_errors_total",
        "OTLP export requests answered with an error, by cause.",
        &[
            ("cause=\"decode\"", l(&ingest.decode_errors)),
            ("cause=\"content_type\"", l(&ingest.bad_content_type)),
            ("cause=\"too_large\"", l(&ingest.too_large)),
            ("cause=\"backlogged\"", l(&ingest.backlogged)),
            ("cause=\"unauthorized\"", l(&ingest.unauthorized)),
        ],
    );
    counter(
        &mut out,
        "stoker_collector_points_accepted_total",
        "Data points stored.",
        &[("", l(&store.refusals.accepted))],
    );
    let refused = store.refusals.snapshot();
    let labels: Vec<String> = refused.iter().map(|(r, _)| format!("reason=\"{r}\"")).collect();
    let samples: Vec<(&str, u64)> =
        labels.iter().zip(&refused).map(|(lbl, (_, v))| (lbl.as_str(), *v)).collect();
    counter(
        &mut out,
        "stoker_collector_points_refused_total",
        "Data points refused, by reason.",
        &samples,
    );
    gauge(
        &mut out,
        "stoker_collector_series",
        "Series in the store.",
        &[("", store.series_count() as u64)],
    );
    gauge(
        &mut out,
        "stoker_collector_series_limit",
        "Configured series limit.",
        &[("", store.config().max_series as u64)],
    );
    gauge(&mut out, "stoker_collector_nodes", "Nodes seen.", &[("", store.nodes().len() as u64)]);
    gauge(
        &mut out,
        "stoker_collector_memory_points",
        "Points held in memory.",
        &[("", store.memory_points() as u64)],
    );
    let ds = store.disk_stats();
    gauge(
        &mut out,
        "stoker_collector_store_bytes",
        "Bytes stored on disk, by part.",
        &[
            ("part=\"blocks\"", l(&ds.block_bytes)),
            ("part=\"log\"", l(&ds.wal_bytes)),
            ("part=\"file\"", store.file_bytes()),
        ],
    );
    counter(
        &mut out,
        "stoker_collector_store_commits_total",
        "Write-ahead log commits (fsync).",
        &[("", l(&ds.commits))],
    );
    counter(
        &mut out,
        "stoker_collector_store_checkpoints_total",
        "Checkpoints into blocks.",
        &[("", l(&ds.checkpoints))],
    );
    counter(
        &mut out,
        "stoker_collector_store_errors_total",
        "Failed commits or checkpoints.",
        &[("", l(&ds.errors))],
    );
    counter(
        &mut out,
        "stoker_collector_store_retention_deleted_bytes_total",
        "Block bytes deleted by retention.",
        &[("", l(&ds.retention_deleted_bytes))],
    );
    queries.durations.render(
        &mut out,
        "stoker_collector_query_duration_seconds",
        "API query latency.",
    );
    counter(
        &mut out,
        "stoker_collector_query_errors_total",
        "API queries that failed.",
        &[("", l(&queries.errors))],
    );
    out
}
