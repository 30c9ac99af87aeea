//! Scraping model servers' Prometheus endpoints (Triton, TorchServe, vLLM, or any exposition)
//! and mapping what they expose onto the `inference.*` vocabulary.
//!
//! Scrapes become *cumulative* OTLP metrics with an unknown start time; the aggregator turns
//! them into per-interval increments (the first scrape only sets the baseline; a counter going
//! down is a server restart). Triton and TorchServe expose cumulative duration *counters*, not
//! histograms: each becomes a histogram without bucket bounds whose `count` is the request
//! counter and `sum` the duration counter, so its increment is exactly the interval's request
//! count and total time — the per-interval mean, in a form the collector can merge.
//! A target that is down is logged once and reported as `stoker.agent.inference.scrape.up` = 0.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::aggregate::kv_str;
use super::config::{ScrapeConfig, ScrapeKind};
use super::prom_text::{self, Exposition};
use super::stats::InferenceStats;
use super::{InferenceError, WorkQueue, log_transition, now_unix_nanos, sleep_or_shutdown};

/// Gauge telling whether the last scrape of a target worked (1) or not (0).
pub const SCRAPE_UP: &str = "stoker.agent.inference.scrape.up";

/// One scrape target and its HTTP client.
#[derive(Debug)]
pub(crate) struct Scraper {
    cfg: ScrapeConfig,
    interval: Duration,
    client: reqwest::Client,
}

impl Scraper {
    /// Build the client; the interval falls back to the agent's.
    pub(crate) fn new(
        cfg: &ScrapeConfig,
        default_interval: Duration,
    ) -> Result<Self, InferenceError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().timeout(cfg.timeout).build().map_err(|source| {
            InferenceError::HttpClient { what: format!("scrape {}", cfg.name), source }
        })?;
        Ok(Self { cfg: cfg.clone(), interval: cfg.interval.unwrap_or(default_interval), client })
    }

    /// The target's name.
    pub(crate) fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Scrape every interval until shutdown.
    pub(crate) async fn run(
        self,
        queue: WorkQueue,
        stats: Arc<InferenceStats>,
        shutdown: CancellationToken,
    ) {
        let mut was_up = None;
        loop {
            let now = now_unix_nanos();
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.scrape_once() => r,
            };
            let (up, mut metrics) = match result {
                Ok(exposition) => {
                    InferenceStats::add(&stats.scrapes, 1);
                    log_transition(&self.cfg.name, &mut was_up, true, "");
                    (1.0, map_exposition(&self.cfg, &exposition, now))
                }
                Err(error) => {
                    InferenceStats::add(&stats.scrape_failures, 1);
                    log_transition(&self.cfg.name, &mut was_up, false, &error);
                    debug!(%error, "Scrape failed.");
                    (0.0, Vec::new())
                }
            };
            metrics.push(gauge(SCRAPE_UP, "1", vec![], up, now));
            queue.offer_counted(target_batch(&self.cfg, metrics));
            if !sleep_or_shutdown(self.interval, &shutdown).await {
                return;
            }
        }
    }

    async fn scrape_once(&self) -> Result<Exposition, String> {
        let response = self
            .client
            .get(&self.cfg.url)
            .header(reqwest::header::ACCEPT, "text/plain;version=0.0.4")
            .send()
            .await
            .map_err(|e| describe_reqwest(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let text = response.text().await.map_err(|e| describe_reqwest(&e))?;
        prom_text::parse(&text).map_err(|e| format!("unparsable exposition: {e}"))
    }
}

/// A short reason for a failed request: timeout, connection refused, or the error itself.
pub(crate) fn describe_reqwest(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timeout".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        error.to_string()
    }
}

fn target_batch(cfg: &ScrapeConfig, metrics: Vec<Metric>) -> ResourceMetrics {
    let kind = match cfg.kind {
        ScrapeKind::Triton => "triton",
        ScrapeKind::Torchserve => "torchserve",
        ScrapeKind::Vllm => "vllm",
        ScrapeKind::Prometheus => "prometheus",
    };
    ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![
                kv_str("service.name", cfg.name.clone()),
                kv_str("stoker.scrape.kind", kind),
            ],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
        ..Default::default()
    }
}

/// Map an exposition onto OTLP metrics (cumulative, start unknown) for the target's kind,
/// plus the histograms and summaries named in the config.
pub fn map_exposition(cfg: &ScrapeConfig, exposition: &Exposition, now: u64) -> Vec<Metric> {
    let mut metrics = match cfg.kind {
        ScrapeKind::Triton => map_triton(exposition, now),
        ScrapeKind::Torchserve => map_torchserve(exposition, now),
        ScrapeKind::Vllm => map_vllm(exposition, now),
        ScrapeKind::Prometheus => Vec::new(),
    };
    for family in &cfg.histograms {
        metrics.push(histogram_family(exposition, family, family, unit_of(family), now));
    }
    for family in &cfg.summaries {
        metrics.push(summary_family(exposition, family, now));
    }
    metrics.retain(has_points);
    metrics
}

fn has_points(metric: &Metric) -> bool {
    match &metric.data {
        Some(Data::Gauge(g)) => !g.data_points.is_empty(),
        Some(Data::Sum(s)) => !s.data_points.is_empty(),
        Some(Data::Histogram(h)) => !h.data_points.is_empty(),
        Some(Data::Summary(s)) => !s.data_points.is_empty(),
        Some(Data::ExponentialHistogram(e)) => !e.data_points.is_empty(),
        None => false,
    }
}

fn unit_of(name: &str) -> &'static str {
    if name.ends_with("_seconds") {
        "s"
    } else if name.ends_with("_milliseconds") || name.ends_with("_ms") {
        "ms"
    } else if name.ends_with("_microseconds") || name.ends_with("_us") {
        "us"
    } else {
        ""
    }
}

/// Prometheus label names onto the inference vocabulary; others are kept as they are.
fn normalise_labels(labels: &[(String, String)], drop: &[&str]) -> Vec<KeyValue> {
    let mut out: Vec<KeyValue> = labels
        .iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .map(|(k, v)| {
            let key = match k.as_str() {
                "model" | "model_name" => "model.name",
                "version" | "model_version" => "model.version",
                other => other,
            };
            kv_str(key, v.clone())
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Per-model sums of the counters a Triton or TorchServe exposition gives.
type ModelCounters = BTreeMap<Vec<(String, String)>, BTreeMap<&'static str, f64>>;

/// Sum samples named `name` into `counters[model labels][field]`, over the labels not kept.
fn collect(
    exposition: &Exposition,
    counters: &mut ModelCounters,
    name: &str,
    field: &'static str,
    keep: &[&str],
) {
    for s in exposition.samples_named(name) {
        let mut key: Vec<(String, String)> =
            s.labels.iter().filter(|(k, _)| keep.contains(&k.as_str())).cloned().collect();
        key.sort();
        *counters.entry(key).or_default().entry(field).or_insert(0.0) += s.value;
    }
}

fn counts_histogram(
    name: &str,
    unit: &str,
    points: Vec<(Vec<KeyValue>, f64, f64)>,
    now: u64,
) -> Metric {
    let data_points = points
        .into_iter()
        .map(|(attributes, count, sum)| {
            let count = count.max(0.0).round() as u64;
            HistogramDataPoint {
                attributes,
                time_unix_nano: now,
                count,
                sum: Some(sum),
                bucket_counts: vec![count],
                ..Default::default()
            }
        })
        .collect();
    Metric {
        name: name.to_owned(),
        unit: unit.to_owned(),
        data: Some(Data::Histogram(Histogram {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    }
}

fn counter(name: &str, unit: &str, points: Vec<(Vec<KeyValue>, f64)>, now: u64) -> Metric {
    let data_points = points
        .into_iter()
        .map(|(attributes, value)| NumberDataPoint {
            attributes,
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsDouble(value)),
            ..Default::default()
        })
        .collect();
    Metric {
        name: name.to_owned(),
        unit: unit.to_owned(),
        data: Some(Data::Sum(Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn gauge(name: &str, unit: &str, attributes: Vec<KeyValue>, value: f64, now: u64) -> Metric {
    Metric {
        name: name.to_owned(),
        unit: unit.to_owned(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsDouble(value)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}

fn with(attrs: &[KeyValue], key: &str, value: &str) -> Vec<KeyValue> {
    let mut out = attrs.to_vec();
    out.push(kv_str(key, value));
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn map_triton(exposition: &Exposition, now: u64) -> Vec<Metric> {
    const KEEP: [&str; 2] = ["model", "version"];
    let mut c = ModelCounters::new();
    for (name, field) in [
        ("nv_inference_request_success", "success"),
        ("nv_inference_request_failure", "failure"),
        ("nv_inference_count", "inferences"),
        ("nv_inference_exec_count", "executions"),
        ("nv_inference_request_duration_us", "request_us"),
        ("nv_inference_queue_duration_us", "queue_us"),
        ("nv_inference_compute_input_duration_us", "compute_us"),
        ("nv_inference_compute_infer_duration_us", "compute_us"),
        ("nv_inference_compute_output_duration_us", "compute_us"),
    ] {
        collect(exposition, &mut c, name, field, &KEEP);
    }
    let mut requests = Vec::new();
    let (mut request, mut queue, mut compute, mut batch) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (labels, f) in &c {
        let attrs = normalise_labels(labels, &[]);
        let get = |k: &str| f.get(k).copied();
        if let Some(v) = get("success") {
            requests.push((with(&attrs, "outcome", "success"), v));
        }
        if let Some(v) = get("failure") {
            requests.push((with(&attrs, "outcome", "failure"), v));
        }
        // Triton's durations are per successful request (its docs divide by request_success).
        if let Some(n) = get("success") {
            if let Some(us) = get("request_us") {
                request.push((attrs.clone(), n, us / 1e6));
            }
            if let Some(us) = get("queue_us") {
                queue.push((attrs.clone(), n, us / 1e6));
            }
            if let Some(us) = get("compute_us") {
                compute.push((attrs.clone(), n, us / 1e6));
            }
        }
        // Mean batch size = inferences / executions over the interval.
        if let (Some(inferences), Some(executions)) = (get("inferences"), get("executions")) {
            batch.push((attrs.clone(), executions, inferences));
        }
    }
    vec![
        counter("inference.requests", "{request}", requests, now),
        counts_histogram("inference.request.duration", "s", request, now),
        counts_histogram("inference.queue.duration", "s", queue, now),
        counts_histogram("inference.compute.duration", "s", compute, now),
        counts_histogram("inference.batch.size", "{item}", batch, now),
    ]
}

fn map_torchserve(exposition: &Exposition, now: u64) -> Vec<Metric> {
    const KEEP: [&str; 2] = ["model_name", "model_version"];
    let mut c = ModelCounters::new();
    for (name, field) in [
        ("ts_inference_requests_total", "requests"),
        ("ts_inference_latency_microseconds", "latency_us"),
        ("ts_queue_latency_microseconds", "queue_us"),
    ] {
        collect(exposition, &mut c, name, field, &KEEP);
    }
    let (mut requests, mut request, mut queue) = (Vec::new(), Vec::new(), Vec::new());
    for (labels, f) in &c {
        let attrs = normalise_labels(labels, &[]);
        let Some(n) = f.get("requests").copied() else {
            continue;
        };
        // TorchServe's counter does not split by outcome, so no `outcome` attribute.
        requests.push((attrs.clone(), n));
        if let Some(us) = f.get("latency_us") {
            request.push((attrs.clone(), n, us / 1e6));
        }
        if let Some(us) = f.get("queue_us") {
            queue.push((attrs.clone(), n, us / 1e6));
        }
    }
    vec![
        counter("inference.requests", "{request}", requests, now),
        counts_histogram("inference.request.duration", "s", request, now),
        counts_histogram("inference.queue.duration", "s", queue, now),
    ]
}

fn map_vllm(exposition: &Exposition, now: u64) -> Vec<Metric> {
    let mut metrics = Vec::new();
    let mut families: Vec<(&String, &prom_text::FamilyType)> =
        exposition.types.iter().filter(|(name, _)| name.starts_with("vllm:")).collect();
    families.sort();
    for (family, kind) in families {
        let otel_name = match family.as_str() {
            "vllm:e2e_request_latency_seconds" => "inference.request.duration".to_owned(),
            "vllm:request_queue_time_seconds" => "inference.queue.duration".to_owned(),
            "vllm:request_inference_time_seconds" => "inference.compute.duration".to_owned(),
            other => other.replacen("vllm:", "vllm.", 1),
        };
        match kind {
            prom_text::FamilyType::Histogram => {
                metrics.push(histogram_family(
                    exposition,
                    family,
                    &otel_name,
                    unit_of(family),
                    now,
                ));
            }
            prom_text::FamilyType::Counter
                if family.trim_end_matches("_total") == "vllm:request_success" =>
            {
                let total = format!("{}_total", family.trim_end_matches("_total"));
                let points = exposition
                    .samples_named(&total)
                    .map(|s| {
                        (with(&normalise_labels(&s.labels, &[]), "outcome", "success"), s.value)
                    })
                    .collect();
                metrics.push(counter("inference.requests", "{request}", points, now));
            }
            prom_text::FamilyType::Counter => {
                // Prometheus counters may be exposed with or without the `_total` suffix.
                let points: Vec<_> = exposition
                    .samples
                    .iter()
                    .filter(|s| s.name == *family || s.name == format!("{family}_total"))
                    .map(|s| (normalise_labels(&s.labels, &[]), s.value))
                    .collect();
                metrics.push(counter(otel_name.trim_end_matches("_total"), "", points, now));
            }
            prom_text::FamilyType::Gauge => {
                for s in exposition.samples_named(family) {
                    metrics.push(gauge(
                        &otel_name,
                        "",
                        normalise_labels(&s.labels, &[]),
                        s.value,
                        now,
                    ));
                }
            }
            prom_text::FamilyType::Summary => metrics.push(summary_family(exposition, family, now)),
            prom_text::FamilyType::Untyped => {}
        }
    }
    metrics
}

/// A Prometheus histogram family as an OTLP cumulative histogram, buckets preserved.
fn histogram_family(
    exposition: &Exposition,
    family: &str,
    otel_name: &str,
    unit: &str,
    now: u64,
) -> Metric {
    let data_points = exposition
        .histograms(family)
        .into_iter()
        .map(|h| {
            let mut bounds = Vec::with_capacity(h.buckets.len());
            let mut counts = Vec::with_capacity(h.buckets.len() + 1);
            let mut previous = 0.0;
            for (le, cumulative) in &h.buckets {
                if le.is_finite() {
                    bounds.push(*le);
                }
                counts.push((cumulative - previous).max(0.0).round() as u64);
                previous = *cumulative;
            }
            if h.buckets.last().is_none_or(|(le, _)| le.is_finite()) {
                // No +Inf bucket: what `_count` holds beyond the last bound.
                counts.push((h.count - previous).max(0.0).round() as u64);
            }
            HistogramDataPoint {
                attributes: normalise_labels(&h.labels, &[]),
                time_unix_nano: now,
                count: h.count.max(0.0).round() as u64,
                sum: Some(h.sum),
                bucket_counts: counts,
                explicit_bounds: bounds,
                ..Default::default()
            }
        })
        .collect();
    Metric {
        name: otel_name.to_owned(),
        unit: unit.to_owned(),
        data: Some(Data::Histogram(Histogram {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    }
}

/// A Prometheus summary family as an OTLP summary, passed on as it is.
fn summary_family(exposition: &Exposition, family: &str, now: u64) -> Metric {
    let data_points = exposition
        .summaries(family)
        .into_iter()
        .map(|s| SummaryDataPoint {
            attributes: normalise_labels(&s.labels, &[]),
            time_unix_nano: now,
            count: s.count.max(0.0).round() as u64,
            sum: s.sum,
            quantile_values: s
                .quantiles
                .iter()
                .map(|(q, v)| ValueAtQuantile { quantile: *q, value: *v })
                .collect(),
            ..Default::default()
        })
        .collect();
    Metric {
        name: family.replacen("vllm:", "vllm.", 1),
        unit: unit_of(family).to_owned(),
        data: Some(Data::Summary(Summary { data_points })),
        ..Default::default()
    }
}
