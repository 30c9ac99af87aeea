//! OTLP export requests as Prometheus remote-write series.
//!
//! - **Names**: [`super::names`] (unit suffix, `_total`, `_bucket`/`_sum`/`_count`).
//! - **Labels**: every resource attribute and every point attribute, keys sanitised, the
//!   point's attribute winning a clash, as the embedded store keys its series (so a policy's
//!   `where: {host.name: a}` selects the same series in both); `job` is `service.name` (with
//!   `service.namespace/` in front when set) and `instance` is `service.instance.id`, and each
//!   resource also gets a `target_info` series carrying its attributes.
//! - **Temporality**: cumulative points pass through; delta sums and histograms are added up
//!   per series here into the cumulative form remote-write needs. That running total lives in
//!   memory ([`DeltaTotals`], bounded); after a restart it starts from 0, which PromQL's
//!   `rate`/`increase` read as a counter reset, losing nothing.
//! - **Histograms**: explicit buckets as cumulative `le` buckets; exponential histograms as
//!   classic buckets at the point's own scale (upper bound of each populated bucket; negative
//!   and zero-bucket counts fall in the lowest one). Remote-write 1.0 has no native histograms.
//! - **Summaries**: one series per quantile (`quantile` label) plus `_sum` and `_count`.
//!
//! Points without a recorded value (staleness markers) and points outside the store's
//! accepted time window are left out, as the embedded store refuses them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric};

use super::names::{self, Family};
use super::wire::{Label, Sample, TimeSeries};
use crate::ingest::otlp::{attr_value, explicit, exponential, number};
use crate::store::Histogram;

/// Most series whose delta points are being added up; beyond it the totals start over (a
/// counter reset to PromQL) rather than grow without bound.
const MAX_DELTA_SERIES: usize = 1_000_000;

/// One request's series, split by shard (a series always lands in the same shard, so its
/// samples stay in time order).
#[derive(Debug, Default)]
pub struct Encoded {
    /// Series per shard.
    pub shards: Vec<Vec<TimeSeries>>,
    /// Samples in all shards.
    pub samples: u64,
}

/// Running totals of delta series, keyed by the hash of the series' labels.
#[derive(Debug, Default)]
pub struct DeltaTotals {
    sums: HashMap<u64, f64>,
    hists: HashMap<u64, HistTotal>,
}

#[derive(Debug, Clone)]
struct HistTotal {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl DeltaTotals {
    fn bound(&mut self) {
        if self.sums.len() + self.hists.len() > MAX_DELTA_SERIES {
            self.sums.clear();
            self.hists.clear();
        }
    }
}

fn labels_hash(labels: &[Label]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut h);
    h.finish()
}

/// Builds series for one request.
struct Builder<'a> {
    out: Encoded,
    totals: &'a mut DeltaTotals,
    window: (u64, u64),
}

impl Builder<'_> {
    fn push(&mut self, mut labels: Vec<Label>, ts_nanos: u64, value: f64) {
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        labels.dedup_by(|later, earlier| later.name == earlier.name);
        let shard = (labels_hash(&labels) % self.out.shards.len() as u64) as usize;
        let timestamp = (ts_nanos / 1_000_000) as i64;
        self.out.shards[shard]
            .push(TimeSeries { labels, samples: vec![Sample { value, timestamp }] });
        self.out.samples += 1;
    }

    fn in_window(&self, ts: u64) -> bool {
        ts != 0 && ts >= self.window.0 && ts <= self.window.1
    }
}

fn label(name: impl Into<String>, value: impl Into<String>) -> Label {
    Label { name: name.into(), value: value.into() }
}

/// The series labels of one point: `__name__`, then the point's attributes over the
/// resource's (earlier entries lose to later ones after the stable sort in `push`, so the
/// point's come last).
fn series_labels(
    name: &str,
    resource: &[Label],
    attrs: &[KeyValue],
    extra: &[Label],
) -> Vec<Label> {
    let mut out = Vec::with_capacity(1 + resource.len() + attrs.len() + extra.len());
    // `dedup_by` after a stable sort keeps the first of equal names: put the winners first.
    out.push(label("__name__", name));
    out.extend(extra.iter().cloned());
    for kv in attrs.iter().rev() {
        let v = attr_value(&kv.value).unwrap_or(Cow::Borrowed(""));
        if !v.is_empty() {
            out.push(label(names::label(&kv.key), v.into_owned()));
        }
    }
    out.extend(resource.iter().cloned());
    out
}

/// Encodes `req` into `shards` shards. `window` is the accepted time range (Unix nanos).
pub fn encode(
    req: &ExportMetricsServiceRequest,
    shards: usize,
    window: (u64, u64),
    totals: &mut DeltaTotals,
) -> Encoded {
    let mut b = Builder {
        out: Encoded { shards: vec![Vec::new(); shards.max(1)], samples: 0 },
        totals,
        window,
    };
    for rm in &req.resource_metrics {
        let empty = Vec::new();
        let attrs = rm.resource.as_ref().map(|r| &r.attributes).unwrap_or(&empty);
        let get = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| attr_value(&kv.value).ok())
                .filter(|v| !v.is_empty())
        };
        let mut resource: Vec<Label> = Vec::with_capacity(attrs.len() + 2);
        let job = match (get("service.namespace"), get("service.name")) {
            (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
            (None, Some(name)) => Some(name.into_owned()),
            _ => None,
        };
        // `job` and `instance` first: they win over attributes sanitised to the same name.
        if let Some(job) = &job {
            resource.push(label("job", job.clone()));
        }
        if let Some(instance) = get("service.instance.id") {
            resource.push(label("instance", instance.into_owned()));
        }
        for kv in attrs.iter().rev() {
            let v = attr_value(&kv.value).unwrap_or(Cow::Borrowed(""));
            if !v.is_empty() {
                resource.push(label(names::label(&kv.key), v.into_owned()));
            }
        }
        let mut newest = 0u64;
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                if let Some(data) = &m.data {
                    newest = newest.max(encode_metric(&mut b, &m.name, &m.unit, data, &resource));
                }
            }
        }
        if newest != 0 && !resource.is_empty() {
            b.push(series_labels("target_info", &resource, &[], &[]), newest, 1.0);
        }
    }
    b.out
}

/// Encodes one metric's points; returns the newest timestamp written (0 = none).
fn encode_metric(
    b: &mut Builder<'_>,
    name: &str,
    unit: &str,
    data: &metric::Data,
    resource: &[Label],
) -> u64 {
    let mut newest = 0u64;
    let cumulative = |t: i32| t == AggregationTemporality::Cumulative as i32;
    match data {
        metric::Data::Gauge(g) => {
            let pname = names::metric(name, unit, Family::Gauge);
            for p in &g.data_points {
                if let (Ok(Some(v)), true) = (number(p), b.in_window(p.time_unix_nano)) {
                    b.push(
                        series_labels(&pname, resource, &p.attributes, &[]),
                        p.time_unix_nano,
                        v,
                    );
                    newest = newest.max(p.time_unix_nano);
                }
            }
        }
        metric::Data::Sum(s) => {
            let family = if s.is_monotonic { Family::Counter } else { Family::Gauge };
            let pname = names::metric(name, unit, family);
            let is_cumulative = cumulative(s.aggregation_temporality);
            for p in &s.data_points {
                let (Ok(Some(v)), true) = (number(p), b.in_window(p.time_unix_nano)) else {
                    continue;
                };
                let labels = series_labels(&pname, resource, &p.attributes, &[]);
                let v = if is_cumulative {
                    v
                } else {
                    b.totals.bound();
                    let total = b.totals.sums.entry(labels_hash(&labels)).or_insert(0.0);
                    *total += v;
                    *total
                };
                b.push(labels, p.time_unix_nano, v);
                newest = newest.max(p.time_unix_nano);
            }
        }
        metric::Data::Histogram(h) => {
            let points =
                h.data_points.iter().map(|p| (p.time_unix_nano, &p.attributes, explicit(p)));
            let temporality = h.aggregation_temporality;
            newest = histograms(b, name, unit, resource, cumulative(temporality), points);
        }
        metric::Data::ExponentialHistogram(h) => {
            let points =
                h.data_points.iter().map(|p| (p.time_unix_nano, &p.attributes, exponential(p)));
            let temporality = h.aggregation_temporality;
            newest = histograms(b, name, unit, resource, cumulative(temporality), points);
        }
        metric::Data::Summary(s) => {
            let pname = names::base(name);
            for p in &s.data_points {
                if p.flags & 1 != 0 || !b.in_window(p.time_unix_nano) {
                    continue;
                }
                let ts = p.time_unix_nano;
                for q in &p.quantile_values {
                    let extra = [label("quantile", format_float(q.quantile))];
                    b.push(series_labels(&pname, resource, &p.attributes, &extra), ts, q.value);
                }
                b.push(
                    series_labels(&format!("{pname}_sum"), resource, &p.attributes, &[]),
                    ts,
                    p.sum,
                );
                b.push(
                    series_labels(&format!("{pname}_count"), resource, &p.attributes, &[]),
                    ts,
                    p.count as f64,
                );
                newest = newest.max(ts);
            }
        }
    }
    newest
}

/// One histogram metric's points (explicit or exponential, as `(time, attributes, decoded)`);
/// returns the newest timestamp written (0 = none). Points that do not decode or fall
/// outside the window are left out.
fn histograms<'a>(
    b: &mut Builder<'_>,
    name: &str,
    unit: &str,
    resource: &[Label],
    is_cumulative: bool,
    points: impl Iterator<Item = (u64, &'a Vec<KeyValue>, Result<Option<Histogram>, &'static str>)>,
) -> u64 {
    let pname = names::metric(name, unit, Family::Histogram);
    let mut newest = 0u64;
    for (ts, attrs, hist) in points {
        if let (Ok(Some(hist)), true) = (hist, b.in_window(ts)) {
            histogram(b, &pname, resource, attrs, ts, &hist, is_cumulative);
            newest = newest.max(ts);
        }
    }
    newest
}

/// A histogram point as `_bucket{le}` (cumulative), `_sum` and `_count`.
fn histogram(
    b: &mut Builder<'_>,
    pname: &str,
    resource: &[Label],
    attrs: &[KeyValue],
    ts: u64,
    hist: &Histogram,
    is_cumulative: bool,
) {
    let (bounds, counts) = hist.as_explicit();
    let mut total = HistTotal { bounds: bounds.to_vec(), counts, count: hist.count, sum: hist.sum };
    if !is_cumulative {
        b.totals.bound();
        let key = labels_hash(&series_labels(pname, resource, attrs, &[]));
        let kept = b.totals.hists.entry(key).or_insert_with(|| HistTotal {
            bounds: total.bounds.clone(),
            counts: vec![0; total.counts.len()],
            count: 0,
            sum: 0.0,
        });
        // New bounds start the series over: PromQL reads the drop as a reset.
        if kept.bounds != total.bounds {
            *kept = HistTotal {
                bounds: total.bounds.clone(),
                counts: vec![0; total.counts.len()],
                count: 0,
                sum: 0.0,
            };
        }
        for (k, c) in kept.counts.iter_mut().zip(&total.counts) {
            *k = k.saturating_add(*c);
        }
        kept.count = kept.count.saturating_add(total.count);
        kept.sum += total.sum;
        total = kept.clone();
    }
    let bucket = format!("{pname}_bucket");
    let mut running = 0u64;
    for (i, c) in total.counts.iter().enumerate() {
        running = running.saturating_add(*c);
        let le = total.bounds.get(i).map(|b| format_float(*b)).unwrap_or_else(|| "+Inf".into());
        b.push(series_labels(&bucket, resource, attrs, &[label("le", le)]), ts, running as f64);
    }
    b.push(series_labels(&format!("{pname}_sum"), resource, attrs, &[]), ts, total.sum);
    b.push(series_labels(&format!("{pname}_count"), resource, attrs, &[]), ts, total.count as f64);
}

/// A float as a label value, as Prometheus clients write `le` and `quantile` (`0.005`, `1`,
/// `1e+06` style is not needed: Rust's shortest round-trip form parses back exactly).
fn format_float(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests;
