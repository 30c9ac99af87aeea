//! Local aggregation: everything the room learns in one interval is folded into one data point
//! per series, so the collector's load grows with the number of series, not the request rate.
//!
//! A series is (resource, metric name, point attributes). Output temporality is **delta** for
//! counters (monotonic sums) and histograms: cumulative input — OTel SDK defaults, Prometheus
//! scrapes — is turned into increments against a per-series baseline, resets handled. Gauges,
//! up-down sums and summaries are levels: the last value of the interval is passed on (up-down
//! sums keep cumulative temporality, as levels must). Explicit-bucket histograms keep their
//! bounds exactly; exponential histograms are passed on point by point. State is bounded by
//! `max_series`; points of further series are shed and counted.
//!
//! Pure data structure: no I/O, no clock. Callers pass `now` in Unix nanoseconds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// Instrumentation scope of every batch this room emits.
pub const SCOPE_NAME: &str = "stoker-agent/inference";

/// Exponential histograms are passed on point by point (not merged); this bounds the points
/// one series may hold in an interval.
const MAX_EXPONENTIAL_POINTS: usize = 64;

/// Baselines unseen for this many flushes are forgotten (the series went away).
const BASELINE_TTL_FLUSHES: u64 = 10;

/// A metric's identity in the output: name, unit, description.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricMeta {
    /// Metric name.
    pub name: String,
    /// UCUM unit.
    pub unit: String,
    /// Description.
    pub description: String,
}

impl MetricMeta {
    /// A metric identity without description.
    pub fn new(name: &str, unit: &str) -> Self {
        Self { name: name.to_owned(), unit: unit.to_owned(), description: String::new() }
    }
}

/// One measurement recorded directly (spans, probes), as opposed to an OTLP data point.
#[derive(Clone, Debug)]
pub enum Observation<'a> {
    /// One value into an explicit-bucket histogram with these bounds.
    Histogram {
        /// Bucket upper bounds.
        bounds: &'a [f64],
        /// The value.
        value: f64,
    },
    /// An increment of a monotonic counter.
    Count(u64),
    /// The current value of a gauge.
    Gauge(f64),
}

/// How many points one call accepted and shed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Data points taken into the interval's state.
    pub accepted: u64,
    /// Data points refused because the series cap was reached.
    pub shed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    Int(i64),
    Double(f64),
}

impl Num {
    fn from_point(value: Option<number_data_point::Value>) -> Num {
        match value {
            Some(number_data_point::Value::AsInt(i)) => Num::Int(i),
            Some(number_data_point::Value::AsDouble(d)) => Num::Double(d),
            None => Num::Int(0),
        }
    }
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Double(d) => d,
        }
    }
    fn add(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Num::Int(a.saturating_add(b)),
            (a, b) => Num::Double(a.as_f64() + b.as_f64()),
        }
    }
    fn sub(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Num::Int(a.saturating_sub(b)),
            (a, b) => Num::Double(a.as_f64() - b.as_f64()),
        }
    }
    fn into_value(self) -> number_data_point::Value {
        match self {
            Num::Int(i) => number_data_point::Value::AsInt(i),
            Num::Double(d) => number_data_point::Value::AsDouble(d),
        }
    }
}

#[derive(Clone, Debug)]
struct HistogramAcc {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    has_sum: bool,
    min: Option<f64>,
    max: Option<f64>,
}

impl HistogramAcc {
    fn empty(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
            has_sum: false,
            min: None,
            max: None,
        }
    }

    fn observe(&mut self, value: f64) {
        // Bucket i holds (bounds[i-1], bounds[i]]: OTLP's upper-inclusive convention.
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i] += 1;
        self.count += 1;
        self.sum += value;
        self.has_sum = true;
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
    }

    fn merge(&mut self, other: &HistogramAcc) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.min = merged_extreme(self.min, self.count, other.min, other.count, f64::min);
        self.max = merged_extreme(self.max, self.count, other.max, other.count, f64::max);
        self.count += other.count;
        self.sum += other.sum;
        self.has_sum |= other.has_sum;
    }

    fn from_point(p: &HistogramDataPoint) -> Self {
        let mut counts = p.bucket_counts.clone();
        // A point without buckets is one bucket holding everything.
        counts.resize(p.explicit_bounds.len() + 1, 0);
        if p.bucket_counts.is_empty() {
            if let Some(last) = counts.last_mut() {
                *last = p.count;
            }
        }
        Self {
            bounds: p.explicit_bounds.clone(),
            counts,
            count: p.count,
            sum: p.sum.unwrap_or(0.0),
            has_sum: p.sum.is_some(),
            min: p.min,
            max: p.max,
        }
    }

    /// `self - earlier`, or `None` when `self` cannot follow `earlier` (a reset).
    fn minus(&self, earlier: &HistogramAcc) -> Option<HistogramAcc> {
        if self.bounds != earlier.bounds || self.count < earlier.count {
            return None;
        }
        let mut counts = Vec::with_capacity(self.counts.len());
        for (a, b) in self.counts.iter().zip(&earlier.counts) {
            counts.push(a.checked_sub(*b)?);
        }
        let count = self.count - earlier.count;
        // A lifetime minimum that fell, or maximum that rose, was observed in this interval; one
        // that stayed only bounds the interval's, so it is unknown.
        let moved = |now: Option<f64>, before: Option<f64>, out: fn(f64, f64) -> bool| match (
            now, before,
        ) {
            _ if count == 0 => None,
            (Some(n), _) if earlier.count == 0 => Some(n),
            (Some(n), Some(b)) if out(n, b) => Some(n),
            _ => None,
        };
        Some(HistogramAcc {
            bounds: self.bounds.clone(),
            counts,
            count,
            sum: self.sum - earlier.sum,
            has_sum: self.has_sum,
            min: moved(self.min, earlier.min, |n, b| n < b),
            max: moved(self.max, earlier.max, |n, b| n > b),
        })
    }
}

#[derive(Clone, Debug)]
enum SeriesData {
    Histogram(HistogramAcc),
    Counter(Num),
    /// Last value of a gauge.
    Gauge(NumberDataPoint),
    /// Last value of an up-down sum, cumulative.
    Level(NumberDataPoint),
    Summary(SummaryDataPoint),
    Exponential(Vec<ExponentialHistogramDataPoint>, i32),
}

impl SeriesData {
    fn kind(&self) -> u8 {
        match self {
            SeriesData::Histogram(_) => 1,
            SeriesData::Counter(_) => 2,
            SeriesData::Gauge(_) => 3,
            SeriesData::Level(_) => 4,
            SeriesData::Summary(_) => 5,
            SeriesData::Exponential(..) => 6,
        }
    }
}

#[derive(Debug)]
struct Series {
    resource: Arc<ResourceEntry>,
    meta: Arc<MetricMeta>,
    attributes: Vec<KeyValue>,
    data: SeriesData,
}

#[derive(Debug)]
struct ResourceEntry {
    key: Vec<u8>,
    attributes: Vec<KeyValue>,
}

#[derive(Clone, Debug)]
enum Cumulative {
    Histogram(HistogramAcc),
    Counter(Num),
}

/// What a cumulative point contributes to the interval.
#[derive(Debug)]
enum Delta {
    /// The increment since the previous point (or since a restart).
    Increment(Cumulative),
    /// The first point of a series of unknown start: it only sets the baseline.
    Baseline,
    /// No room for another baseline: the point is shed.
    NoRoom,
}

#[derive(Clone, Debug)]
struct Baseline {
    start: u64,
    value: Cumulative,
    seen_flush: u64,
}

/// The interval state of the room: series accumulated since the last flush, plus the
/// baselines that turn cumulative input into increments.
#[derive(Debug)]
pub struct Aggregator {
    node_resource: Vec<KeyValue>,
    max_series: usize,
    /// Cumulative series whose start time is at or after this had all their increments
    /// observed by us, so their first point counts whole.
    started_at: u64,
    interval_start: u64,
    flushes: u64,
    resources: HashMap<Vec<u8>, Arc<ResourceEntry>>,
    metas: HashMap<MetricMeta, Arc<MetricMeta>>,
    series: HashMap<Vec<u8>, Series>,
    baselines: HashMap<Vec<u8>, Baseline>,
}

impl Aggregator {
    /// An empty aggregator. `node_resource` enriches every resource: the service keeps its
    /// own identity (`service.*` and anything else it set), the node adds what the service did
    /// not set (`cloud.*`, `k8s.*`, labels) and always gives `host.*`, since a service in a
    /// container reports its pod's host name, not the node's. `now` starts the first interval.
    pub fn new(node_resource: Vec<KeyValue>, max_series: usize, now: u64) -> Self {
        Self {
            node_resource,
            max_series: max_series.max(1),
            started_at: now,
            interval_start: now,
            flushes: 0,
            resources: HashMap::new(),
            metas: HashMap::new(),
            series: HashMap::new(),
            baselines: HashMap::new(),
        }
    }

    /// Series held in the current interval.
    pub fn series_len(&self) -> usize {
        self.series.len()
    }

    /// Fold one OTLP batch into the interval. `rename` may map a metric onto another name
    /// and scale its values (for units), returning `None` to keep it as it is.
    pub fn ingest(
        &mut self,
        rm: &ResourceMetrics,
        rename: &dyn Fn(&Metric) -> Option<(MetricMeta, f64)>,
    ) -> Ingested {
        let service_attrs = rm.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let resource = self.resource(service_attrs);
        let mut result = Ingested::default();
        for sm in &rm.scope_metrics {
            for metric in &sm.metrics {
                let (meta, scale) = rename(metric).unwrap_or_else(|| {
                    (
                        MetricMeta {
                            name: metric.name.clone(),
                            unit: metric.unit.clone(),
                            description: metric.description.clone(),
                        },
                        1.0,
                    )
                });
                let meta = self.meta(meta);
                self.ingest_metric(&resource, &meta, metric, scale, &mut result);
            }
        }
        result
    }

    /// Record one measurement under `resource_attrs` (enriched with the node's).
    pub fn observe(
        &mut self,
        resource_attrs: &[KeyValue],
        meta: &MetricMeta,
        attributes: Vec<KeyValue>,
        observation: Observation<'_>,
    ) -> Ingested {
        let resource = self.resource(resource_attrs);
        let meta = self.meta(meta.clone());
        let (kind, bounds) = match &observation {
            Observation::Histogram { bounds, .. } => (1, *bounds),
            Observation::Count(_) => (2, &[][..]),
            Observation::Gauge(_) => (3, &[][..]),
        };
        let key = series_key(&resource.key, &meta.name, kind, &attributes, bounds);
        let Some(series) =
            self.series_entry(key, &resource, &meta, &attributes, || match &observation {
                Observation::Histogram { bounds, .. } => {
                    SeriesData::Histogram(HistogramAcc::empty(bounds))
                }
                Observation::Count(_) => SeriesData::Counter(Num::Int(0)),
                Observation::Gauge(_) => SeriesData::Gauge(NumberDataPoint::default()),
            })
        else {
            return Ingested { accepted: 0, shed: 1 };
        };
        match (&mut series.data, observation) {
            (SeriesData::Histogram(h), Observation::Histogram { value, .. }) => h.observe(value),
            (SeriesData::Counter(c), Observation::Count(n)) => {
                *c = c.add(Num::Int(i64::try_from(n).unwrap_or(i64::MAX)));
            }
            (SeriesData::Gauge(g), Observation::Gauge(v)) => {
                g.value = Some(number_data_point::Value::AsDouble(v));
            }
            // The key includes the kind, so a series never changes kind.
            _ => {}
        }
        Ingested { accepted: 1, shed: 0 }
    }

    /// Close the interval at `now`: one `ResourceMetrics` per resource, and a fresh interval.
    pub fn flush(&mut self, now: u64) -> Vec<ResourceMetrics> {
        let start = self.interval_start;
        self.interval_start = now;
        self.flushes += 1;
        let flushes = self.flushes;
        self.baselines.retain(|_, b| flushes.saturating_sub(b.seen_flush) <= BASELINE_TTL_FLUSHES);

        // resource key -> (resource, metric meta + kind -> points)
        type PerResource = (Arc<ResourceEntry>, BTreeMap<(Arc<MetricMeta>, u8), Metric>);
        let mut grouped: BTreeMap<Vec<u8>, PerResource> = BTreeMap::new();
        for (_, series) in self.series.drain() {
            let entry = grouped
                .entry(series.resource.key.clone())
                .or_insert_with(|| (Arc::clone(&series.resource), BTreeMap::new()));
            let kind = series.data.kind();
            let metric =
                entry.1.entry((Arc::clone(&series.meta), kind)).or_insert_with(|| Metric {
                    name: series.meta.name.clone(),
                    description: series.meta.description.clone(),
                    unit: series.meta.unit.clone(),
                    ..Default::default()
                });
            push_point(metric, series, start, now);
        }
        // Resources and metas not used this interval are dropped; they are rebuilt on demand.
        self.resources.clear();
        self.metas.clear();
        grouped
            .into_values()
            .map(|(resource, metrics)| ResourceMetrics {
                resource: Some(Resource {
                    attributes: resource.attributes.clone(),
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..Default::default()
                    }),
                    metrics: metrics.into_values().collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect()
    }

    fn resource(&mut self, service_attrs: &[KeyValue]) -> Arc<ResourceEntry> {
        let node = &self.node_resource;
        let mut attrs: Vec<KeyValue> = service_attrs
            .iter()
            .filter(|kv| !(node_owns(&kv.key) && node.iter().any(|n| n.key == kv.key)))
            .cloned()
            .collect();
        let missing: Vec<KeyValue> = node
            .iter()
            .filter(|n| !n.key.starts_with("service."))
            .filter(|n| !attrs.iter().any(|kv| kv.key == n.key))
            .cloned()
            .collect();
        attrs.extend(missing);
        attrs.sort_by(|a, b| a.key.cmp(&b.key));
        let mut key = Vec::new();
        encode_attrs(&attrs, &mut key);
        Arc::clone(
            self.resources
                .entry(key.clone())
                .or_insert_with(|| Arc::new(ResourceEntry { key, attributes: attrs })),
        )
    }

    fn meta(&mut self, meta: MetricMeta) -> Arc<MetricMeta> {
        if let Some(m) = self.metas.get(&meta) {
            return Arc::clone(m);
        }
        let arc = Arc::new(meta.clone());
        self.metas.insert(meta, Arc::clone(&arc));
        arc
    }

    fn series_entry(
        &mut self,
        key: Vec<u8>,
        resource: &Arc<ResourceEntry>,
        meta: &Arc<MetricMeta>,
        attributes: &[KeyValue],
        init: impl FnOnce() -> SeriesData,
    ) -> Option<&mut Series> {
        let len = self.series.len();
        match self.series.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                if len >= self.max_series {
                    return None;
                }
                Some(e.insert(Series {
                    resource: Arc::clone(resource),
                    meta: Arc::clone(meta),
                    attributes: attributes.to_vec(),
                    data: init(),
                }))
            }
        }
    }

    fn ingest_metric(
        &mut self,
        resource: &Arc<ResourceEntry>,
        meta: &Arc<MetricMeta>,
        metric: &Metric,
        scale: f64,
        result: &mut Ingested,
    ) {
        let cumulative = AggregationTemporality::Cumulative as i32;
        match &metric.data {
            Some(Data::Histogram(h)) => {
                for p in &h.data_points {
                    let mut acc = HistogramAcc::from_point(p);
                    if scale != 1.0 {
                        acc.bounds.iter_mut().for_each(|b| *b *= scale);
                        acc.sum *= scale;
                        acc.min = acc.min.map(|m| m * scale);
                        acc.max = acc.max.map(|m| m * scale);
                    }
                    let key = series_key(&resource.key, &meta.name, 1, &p.attributes, &acc.bounds);
                    let delta = if h.aggregation_temporality == cumulative {
                        // Baselines follow the *source* series: two source metrics renamed
                        // onto one output series must not be subtracted from each other.
                        let source =
                            series_key(&resource.key, &metric.name, 1, &p.attributes, &acc.bounds);
                        match self.delta_of(
                            &source,
                            p.start_time_unix_nano,
                            Cumulative::Histogram(acc),
                        ) {
                            Delta::Increment(Cumulative::Histogram(d)) => d,
                            Delta::Increment(Cumulative::Counter(_)) => continue,
                            Delta::Baseline => {
                                result.accepted += 1;
                                continue;
                            }
                            Delta::NoRoom => {
                                result.shed += 1;
                                continue;
                            }
                        }
                    } else {
                        acc
                    };
                    let bounds = delta.bounds.clone();
                    match self.series_entry(key, resource, meta, &p.attributes, || {
                        SeriesData::Histogram(HistogramAcc::empty(&bounds))
                    }) {
                        Some(Series { data: SeriesData::Histogram(h), .. }) => {
                            h.merge(&delta);
                            result.accepted += 1;
                        }
                        Some(_) => result.accepted += 1,
                        None => result.shed += 1,
                    }
                }
            }
            Some(Data::Sum(s)) if s.is_monotonic => {
                for p in &s.data_points {
                    let mut value = Num::from_point(p.value);
                    if scale != 1.0 {
                        value = Num::Double(value.as_f64() * scale);
                    }
                    let key = series_key(&resource.key, &meta.name, 2, &p.attributes, &[]);
                    let delta = if s.aggregation_temporality == cumulative {
                        let source = series_key(&resource.key, &metric.name, 2, &p.attributes, &[]);
                        match self.delta_of(
                            &source,
                            p.start_time_unix_nano,
                            Cumulative::Counter(value),
                        ) {
                            Delta::Increment(Cumulative::Counter(d)) => d,
                            Delta::Increment(Cumulative::Histogram(_)) => continue,
                            Delta::Baseline => {
                                result.accepted += 1;
                                continue;
                            }
                            Delta::NoRoom => {
                                result.shed += 1;
                                continue;
                            }
                        }
                    } else {
                        value
                    };
                    match self.series_entry(key, resource, meta, &p.attributes, || {
                        SeriesData::Counter(Num::Int(0))
                    }) {
                        Some(Series { data: SeriesData::Counter(c), .. }) => {
                            *c = c.add(delta);
                            result.accepted += 1;
                        }
                        Some(_) => result.accepted += 1,
                        None => result.shed += 1,
                    }
                }
            }
            Some(Data::Sum(s)) => {
                let delta_input = s.aggregation_temporality != cumulative;
                for p in &s.data_points {
                    let point = scaled_point(p, scale);
                    let key = series_key(&resource.key, &meta.name, 4, &p.attributes, &[]);
                    match self.series_entry(key, resource, meta, &p.attributes, || {
                        SeriesData::Level(NumberDataPoint::default())
                    }) {
                        Some(Series { data: SeriesData::Level(last), .. }) => {
                            if delta_input && last.value.is_some() {
                                // An up-down delta adds to what the interval holds.
                                let sum =
                                    Num::from_point(last.value).add(Num::from_point(point.value));
                                last.value = Some(sum.into_value());
                                last.time_unix_nano = point.time_unix_nano;
                            } else {
                                *last = point;
                            }
                            result.accepted += 1;
                        }
                        Some(_) => result.accepted += 1,
                        None => result.shed += 1,
                    }
                }
            }
            Some(Data::Gauge(g)) => {
                for p in &g.data_points {
                    let point = scaled_point(p, scale);
                    let key = series_key(&resource.key, &meta.name, 3, &p.attributes, &[]);
                    match self.series_entry(key, resource, meta, &p.attributes, || {
                        SeriesData::Gauge(NumberDataPoint::default())
                    }) {
                        Some(Series { data: SeriesData::Gauge(last), .. }) => {
                            if point.time_unix_nano >= last.time_unix_nano {
                                *last = point;
                            }
                            result.accepted += 1;
                        }
                        Some(_) => result.accepted += 1,
                        None => result.shed += 1,
                    }
                }
            }
            Some(Data::Summary(s)) => {
                for p in &s.data_points {
                    let key = series_key(&resource.key, &meta.name, 5, &p.attributes, &[]);
                    let mut point = p.clone();
                    if scale != 1.0 {
                        point.sum *= scale;
                        point.quantile_values.iter_mut().for_each(|q| q.value *= scale);
                    }
                    match self.series_entry(key, resource, meta, &p.attributes, || {
                        SeriesData::Summary(SummaryDataPoint::default())
                    }) {
                        Some(Series { data: SeriesData::Summary(last), .. }) => {
                            *last = point;
                            result.accepted += 1;
                        }
                        Some(_) => result.accepted += 1,
                        None => result.shed += 1,
                    }
                }
            }
            Some(Data::ExponentialHistogram(e)) => {
                for p in &e.data_points {
                    let key = series_key(&resource.key, &meta.name, 6, &p.attributes, &[]);
                    let temporality = e.aggregation_temporality;
                    match self.series_entry(key, resource, meta, &p.attributes, || {
                        SeriesData::Exponential(Vec::new(), temporality)
                    }) {
                        Some(Series { data: SeriesData::Exponential(points, _), .. }) => {
                            if temporality == cumulative {
                                // A later cumulative point supersedes the earlier ones.
                                points.clear();
                            }
                            if points.len() >= MAX_EXPONENTIAL_POINTS {
                                result.shed += 1;
                            } else {
                                points.push(p.clone());
                                result.accepted += 1;
                            }
                        }
                        Some(_) => result.accepted += 1,
                        None => result.shed += 1,
                    }
                }
            }
            None => {}
        }
    }

    /// Increment of a cumulative value since the last one seen for `key`.
    fn delta_of(&mut self, key: &[u8], start: u64, value: Cumulative) -> Delta {
        let flushes = self.flushes;
        if let Some(base) = self.baselines.get_mut(key) {
            let same_run = start == base.start;
            let delta = match (&value, &base.value) {
                (Cumulative::Histogram(now), Cumulative::Histogram(before)) if same_run => {
                    now.minus(before).map(Cumulative::Histogram)
                }
                (Cumulative::Counter(now), Cumulative::Counter(before)) if same_run => {
                    if now.as_f64() >= before.as_f64() {
                        Some(Cumulative::Counter(now.sub(*before)))
                    } else {
                        None
                    }
                }
                _ => None,
            };
            // A reset (new start time, or a value going down): everything counted since the
            // restart is new, its extremes too.
            let delta = delta.unwrap_or_else(|| value.clone());
            *base = Baseline { start, value, seen_flush: flushes };
            return Delta::Increment(delta);
        }
        if self.baselines.len() >= self.max_series.saturating_mul(2) {
            return Delta::NoRoom;
        }
        // The series began after the agent did: every increment since its start is ours to count.
        let whole = start != 0 && start >= self.started_at;
        self.baselines
            .insert(key.to_vec(), Baseline { start, value: value.clone(), seen_flush: flushes });
        if whole { Delta::Increment(value) } else { Delta::Baseline }
    }
}

fn scaled_point(p: &NumberDataPoint, scale: f64) -> NumberDataPoint {
    let mut point = p.clone();
    if scale != 1.0 {
        point.value =
            Some(number_data_point::Value::AsDouble(Num::from_point(p.value).as_f64() * scale));
    }
    point.exemplars.clear();
    point
}

fn push_point(metric: &mut Metric, series: Series, start: u64, now: u64) {
    let delta = AggregationTemporality::Delta as i32;
    let attributes = series.attributes;
    match series.data {
        SeriesData::Histogram(h) => {
            let point = HistogramDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: h.count,
                sum: h.has_sum.then_some(h.sum),
                bucket_counts: h.counts,
                explicit_bounds: h.bounds,
                min: h.min,
                max: h.max,
                ..Default::default()
            };
            match &mut metric.data {
                Some(Data::Histogram(hist)) => hist.data_points.push(point),
                _ => {
                    metric.data = Some(Data::Histogram(Histogram {
                        data_points: vec![point],
                        aggregation_temporality: delta,
                    }))
                }
            }
        }
        SeriesData::Counter(n) => {
            let point = NumberDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(n.into_value()),
                ..Default::default()
            };
            match &mut metric.data {
                Some(Data::Sum(sum)) => sum.data_points.push(point),
                _ => {
                    metric.data = Some(Data::Sum(Sum {
                        data_points: vec![point],
                        aggregation_temporality: delta,
                        is_monotonic: true,
                    }))
                }
            }
        }
        SeriesData::Gauge(mut point) => {
            point.attributes = attributes;
            if point.time_unix_nano == 0 {
                point.time_unix_nano = now;
            }
            match &mut metric.data {
                Some(Data::Gauge(g)) => g.data_points.push(point),
                _ => metric.data = Some(Data::Gauge(Gauge { data_points: vec![point] })),
            }
        }
        SeriesData::Level(mut point) => {
            point.attributes = attributes;
            match &mut metric.data {
                Some(Data::Sum(sum)) => sum.data_points.push(point),
                _ => {
                    metric.data = Some(Data::Sum(Sum {
                        data_points: vec![point],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: false,
                    }))
                }
            }
        }
        SeriesData::Summary(point) => match &mut metric.data {
            Some(Data::Summary(s)) => s.data_points.push(point),
            _ => metric.data = Some(Data::Summary(Summary { data_points: vec![point] })),
        },
        SeriesData::Exponential(points, temporality) => match &mut metric.data {
            Some(Data::ExponentialHistogram(e)) => e.data_points.extend(points),
            _ => {
                metric.data = Some(Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: points,
                    aggregation_temporality: temporality,
                }))
            }
        },
    }
}

/// The extreme (`pick` = `f64::min` or `f64::max`) of two merged histograms of `a_count` and
/// `b_count` observations. `None` is unknown, and an unknown side makes the merge unknown: its
/// observations may lie beyond the known one. An empty side adds nothing.
fn merged_extreme(
    a: Option<f64>,
    a_count: u64,
    b: Option<f64>,
    b_count: u64,
    pick: fn(f64, f64) -> f64,
) -> Option<f64> {
    match (a, b) {
        _ if b_count == 0 => a,
        _ if a_count == 0 => b,
        (Some(x), Some(y)) => Some(pick(x, y)),
        _ => None,
    }
}

/// Keys the node is the authority on: which host a series was measured on. A service's own
/// `host.name` inside a container is its pod's, which would split the node's series.
fn node_owns(key: &str) -> bool {
    key.starts_with("host.")
}

fn series_key(
    resource: &[u8],
    name: &str,
    kind: u8,
    attrs: &[KeyValue],
    bounds: &[f64],
) -> Vec<u8> {
    let mut key = Vec::with_capacity(resource.len() + name.len() + 64);
    key.extend_from_slice(&(resource.len() as u64).to_le_bytes());
    key.extend_from_slice(resource);
    key.extend_from_slice(&(name.len() as u64).to_le_bytes());
    key.extend_from_slice(name.as_bytes());
    key.push(kind);
    // Histograms with other bounds are other series: merging them would misplace counts.
    for b in bounds {
        key.extend_from_slice(&b.to_bits().to_le_bytes());
    }
    key.push(0xff);
    if attrs.windows(2).all(|w| w[0].key <= w[1].key) {
        encode_attrs(attrs, &mut key);
    } else {
        let mut sorted: Vec<&KeyValue> = attrs.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        for kv in sorted {
            encode_kv(kv, &mut key);
        }
    }
    key
}

fn encode_attrs(attrs: &[KeyValue], out: &mut Vec<u8>) {
    for kv in attrs {
        encode_kv(kv, out);
    }
}

fn encode_kv(kv: &KeyValue, out: &mut Vec<u8>) {
    // Length-delimited protobuf encoding: unambiguous, so distinct attribute sets never collide.
    kv.encode_length_delimited(out).unwrap_or_default();
}

/// Data points in a batch: the export module's count, so drops and sheds use one unit.
pub use crate::export::count_points;

/// A string attribute.
pub fn kv_str(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// The string form of an attribute value (for matching service and model names).
pub fn attr_string<'a>(attrs: &'a [KeyValue], key: &str) -> Option<std::borrow::Cow<'a, str>> {
    let value = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        any_value::Value::StringValue(s) => std::borrow::Cow::Borrowed(s.as_str()),
        any_value::Value::IntValue(i) => std::borrow::Cow::Owned(i.to_string()),
        any_value::Value::BoolValue(b) => std::borrow::Cow::Owned(b.to_string()),
        any_value::Value::DoubleValue(d) => std::borrow::Cow::Owned(d.to_string()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_point(
        start: u64,
        counts: Vec<u64>,
        sum: f64,
        attrs: Vec<KeyValue>,
    ) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes: attrs,
            start_time_unix_nano: start,
            time_unix_nano: start + 1,
            count: counts.iter().sum(),
            sum: Some(sum),
            bucket_counts: counts,
            explicit_bounds: vec![0.01, 0.1],
            ..Default::default()
        }
    }

    fn batch(service: &str, metric: Metric) -> ResourceMetrics {
        ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
            ..Default::default()
        }
    }

    fn histogram(temporality: AggregationTemporality, points: Vec<HistogramDataPoint>) -> Metric {
        Metric {
            name: "inference.prediction.confidence".into(),
            unit: "1".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: points,
                aggregation_temporality: temporality as i32,
            })),
            ..Default::default()
        }
    }

    fn only_histogram(out: &[ResourceMetrics]) -> &HistogramDataPoint {
        match &out[0].scope_metrics[0].metrics[0].data {
            Some(Data::Histogram(h)) => &h.data_points[0],
            other => panic!("not a histogram: {other:?}"),
        }
    }

    fn no_rename(_: &Metric) -> Option<(MetricMeta, f64)> {
        None
    }

    #[test]
    fn delta_histograms_merge_bucket_by_bucket_and_resource_is_enriched() {
        let mut agg = Aggregator::new(vec![kv_str("host.name", "node-1")], 100, 1_000);
        let m = |c| {
            histogram(
                AggregationTemporality::Delta,
                vec![hist_point(1_000, c, 0.5, vec![kv_str("model.name", "resnet")])],
            )
        };
        assert_eq!(
            agg.ingest(&batch("svc", m(vec![1, 2, 3])), &no_rename),
            Ingested { accepted: 1, shed: 0 }
        );
        agg.ingest(&batch("svc", m(vec![0, 1, 4])), &no_rename);
        let out = agg.flush(2_000);
        assert_eq!(out.len(), 1);
        let p = only_histogram(&out);
        assert_eq!(p.bucket_counts, vec![1, 3, 7]);
        assert_eq!(p.explicit_bounds, vec![0.01, 0.1]);
        assert_eq!(p.count, 11);
        assert_eq!(p.sum, Some(1.0));
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (1_000, 2_000));
        let attrs = &out[0].resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
        assert_eq!(attr_string(attrs, "host.name").as_deref(), Some("node-1"));
        assert_eq!(attr_string(attrs, "service.name").as_deref(), Some("svc"));
        assert!(agg.flush(3_000).is_empty(), "a flushed interval starts empty");
    }

    /// Regression: the node's `service.name=stoker-agent` used to overwrite every service's,
    /// merging two services on one node into one series. The test node carries the agent's
    /// whole identity, as the daemon passes it, not just `host.name`.
    #[test]
    fn each_service_keeps_its_identity_and_the_node_adds_its_own() {
        let node = vec![
            kv_str("service.name", "stoker-agent"),
            kv_str("service.version", "9.9.9"),
            kv_str("host.name", "node-1"),
            kv_str("cloud.region", "eu-west-1"),
            kv_str("pool", "a100"),
        ];
        let mut agg = Aggregator::new(node, 100, 1_000);
        let m = || {
            histogram(
                AggregationTemporality::Delta,
                vec![hist_point(1_000, vec![1, 2, 3], 0.5, vec![])],
            )
        };
        let mut resnet = batch("resnet", m());
        if let Some(r) = resnet.resource.as_mut() {
            r.attributes.push(kv_str("service.version", "1.2.0"));
            r.attributes.push(kv_str("pool", "h100-override"));
            // A containerised SDK reports its pod as the host: the node is the authority.
            r.attributes.push(kv_str("host.name", "resnet-pod-7f9c"));
        }
        agg.ingest(&resnet, &no_rename);
        agg.ingest(&batch("bert", m()), &no_rename);
        let out = agg.flush(2_000);
        assert_eq!(out.len(), 2, "two services, two resources");
        let mut seen: Vec<(String, String, String, String, String)> = out
            .iter()
            .map(|rm| {
                let a = rm.resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
                let get = |k| attr_string(&a, k).map(|v| v.to_string()).unwrap_or_default();
                (
                    get("service.name"),
                    get("service.version"),
                    get("host.name"),
                    get("cloud.region"),
                    get("pool"),
                )
            })
            .collect();
        seen.sort();
        let row = |s: &str, v: &str, pool: &str| {
            (
                s.to_owned(),
                v.to_owned(),
                "node-1".to_owned(),
                "eu-west-1".to_owned(),
                pool.to_owned(),
            )
        };
        assert_eq!(seen, vec![row("bert", "", "a100"), row("resnet", "1.2.0", "h100-override")]);
        for rm in &out {
            match &rm.scope_metrics[0].metrics[0].data {
                Some(Data::Histogram(h)) => assert_eq!(h.data_points[0].count, 6),
                other => panic!("not a histogram: {other:?}"),
            }
        }
    }

    #[test]
    fn cumulative_histograms_become_increments_with_resets() {
        let mut agg = Aggregator::new(vec![], 100, 1_000);
        let m = |start, c: Vec<u64>, sum| {
            histogram(AggregationTemporality::Cumulative, vec![hist_point(start, c, sum, vec![])])
        };
        // Started after the agent: the first point counts whole.
        agg.ingest(&batch("svc", m(1_500, vec![1, 1, 0], 0.1)), &no_rename);
        assert_eq!(only_histogram(&agg.flush(2_000)).bucket_counts, vec![1, 1, 0]);
        agg.ingest(&batch("svc", m(1_500, vec![3, 1, 2], 0.5)), &no_rename);
        let out = agg.flush(3_000);
        let p = only_histogram(&out);
        assert_eq!(p.bucket_counts, vec![2, 0, 2]);
        assert!((p.sum.unwrap_or_default() - 0.4).abs() < 1e-12);
        // Restart of the service: new start time, counts from zero again.
        agg.ingest(&batch("svc", m(2_500, vec![0, 1, 0], 0.05)), &no_rename);
        assert_eq!(only_histogram(&agg.flush(4_000)).bucket_counts, vec![0, 1, 0]);
    }

    /// Regression: increments of cumulative histograms dropped both extremes, and a merge then
    /// kept the other side's, so the collector's p95 and `max` were clamped to stale values.
    #[test]
    fn cumulative_increments_keep_derivable_extremes_and_merges_mark_the_rest_unknown() {
        let mut agg = Aggregator::new(vec![], 100, 1_000);
        let m = |c: Vec<u64>, sum, min, max| {
            let mut p = hist_point(1_500, c, sum, vec![]);
            (p.min, p.max) = (Some(min), Some(max));
            histogram(AggregationTemporality::Cumulative, vec![p])
        };
        // First export counts whole, extremes included; the second raises the maximum.
        agg.ingest(&batch("svc", m(vec![2, 1, 0], 0.06, 0.004, 0.05)), &no_rename);
        agg.ingest(&batch("svc", m(vec![2, 1, 3], 6.06, 0.004, 4.0)), &no_rename);
        let out = agg.flush(2_000);
        let p = only_histogram(&out);
        assert_eq!(p.bucket_counts, vec![2, 1, 3]);
        assert_eq!(p.max, Some(4.0), "a maximum that rose is the interval's");
        assert_eq!(p.min, None, "the merge of a known and an unknown minimum is unknown");
        // Next interval: only the middle bucket grows; neither extreme moved, so both unknown.
        agg.ingest(&batch("svc", m(vec![2, 3, 3], 6.16, 0.004, 4.0)), &no_rename);
        let out = agg.flush(3_000);
        let p = only_histogram(&out);
        assert_eq!(p.bucket_counts, vec![0, 2, 0]);
        assert_eq!((p.min, p.max), (None, None));
        // A restart: everything since is new, and so are its extremes.
        let mut restarted = m(vec![1, 0, 0], 0.002, 0.002, 0.002);
        if let Some(Data::Histogram(h)) = &mut restarted.data {
            h.data_points[0].start_time_unix_nano = 2_500;
        }
        agg.ingest(&batch("svc", restarted), &no_rename);
        let out = agg.flush(4_000);
        let p = only_histogram(&out);
        assert_eq!((p.min, p.max), (Some(0.002), Some(0.002)));
    }

    #[test]
    fn cumulative_series_older_than_the_agent_only_set_a_baseline() {
        let mut agg = Aggregator::new(vec![], 100, 1_000);
        let counter = |v: i64| Metric {
            name: "inference.feedback".into(),
            data: Some(Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    start_time_unix_nano: 0,
                    value: Some(number_data_point::Value::AsInt(v)),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        agg.ingest(&batch("svc", counter(100)), &no_rename);
        assert!(agg.flush(2_000).is_empty());
        agg.ingest(&batch("svc", counter(130)), &no_rename);
        agg.ingest(&batch("svc", counter(135)), &no_rename);
        let out = agg.flush(3_000);
        match &out[0].scope_metrics[0].metrics[0].data {
            Some(Data::Sum(s)) => {
                assert_eq!(s.aggregation_temporality, AggregationTemporality::Delta as i32);
                assert_eq!(s.data_points[0].value, Some(number_data_point::Value::AsInt(35)));
            }
            other => panic!("{other:?}"),
        }
        // A counter going down is a reset: the new value is all increment.
        agg.ingest(&batch("svc", counter(7)), &no_rename);
        match &agg.flush(4_000)[0].scope_metrics[0].metrics[0].data {
            Some(Data::Sum(s)) => {
                assert_eq!(s.data_points[0].value, Some(number_data_point::Value::AsInt(7)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn observations_fill_upper_inclusive_buckets() {
        let mut agg = Aggregator::new(vec![], 100, 0);
        let meta = MetricMeta::new("inference.request.duration", "s");
        for v in [0.005, 0.01, 0.05, 0.2] {
            agg.observe(
                &[],
                &meta,
                vec![],
                Observation::Histogram { bounds: &[0.01, 0.1], value: v },
            );
        }
        let out = agg.flush(10);
        let p = only_histogram(&out);
        assert_eq!(p.bucket_counts, vec![2, 1, 1]);
        assert_eq!((p.min, p.max), (Some(0.005), Some(0.2)));
    }

    #[test]
    fn series_cap_sheds_and_counts_new_series_only() {
        let mut agg = Aggregator::new(vec![], 2, 0);
        let meta = MetricMeta::new("inference.requests", "{request}");
        let obs = |agg: &mut Aggregator, model: &str| {
            agg.observe(&[], &meta, vec![kv_str("model.name", model)], Observation::Count(1))
        };
        assert_eq!(obs(&mut agg, "a").shed, 0);
        assert_eq!(obs(&mut agg, "b").shed, 0);
        assert_eq!(obs(&mut agg, "c").shed, 1);
        assert_eq!(obs(&mut agg, "a").shed, 0, "existing series still accept");
        assert_eq!(agg.series_len(), 2);
        agg.flush(1);
        assert_eq!(obs(&mut agg, "c").shed, 0, "the cap is per interval");
    }

    /// Regression: two cumulative source metrics renamed onto one output series shared a
    /// baseline, so each export looked like a reset of the other and was counted whole again.
    #[test]
    fn renamed_cumulative_sources_keep_separate_baselines() {
        let mut agg = Aggregator::new(vec![], 100, 1_000);
        let rename = |m: &Metric| (m.name == "b").then(|| (MetricMeta::new("a", "1"), 1.0));
        let push = |agg: &mut Aggregator, name: &str, counts: Vec<u64>| {
            let mut m = histogram(
                AggregationTemporality::Cumulative,
                vec![hist_point(1_500, counts, 1.0, vec![])],
            );
            m.name = name.into();
            agg.ingest(&batch("svc", m), &rename);
        };
        for _ in 0..2 {
            push(&mut agg, "a", vec![3, 0, 0]);
            push(&mut agg, "b", vec![0, 1, 0]);
        }
        let out = agg.flush(2_000);
        assert_eq!(only_histogram(&out).bucket_counts, vec![3, 1, 0]);
    }

    #[test]
    fn delta_exponential_points_are_passed_on_within_a_bound() {
        use opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram;
        let mut agg = Aggregator::new(vec![], 100, 0);
        let metric = Metric {
            name: "x".into(),
            data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint { count: 1, ..Default::default() }],
                aggregation_temporality: AggregationTemporality::Delta as i32,
            })),
            ..Default::default()
        };
        let mut total = Ingested::default();
        for _ in 0..MAX_EXPONENTIAL_POINTS + 1 {
            let got = agg.ingest(&batch("svc", metric.clone()), &no_rename);
            total.accepted += got.accepted;
            total.shed += got.shed;
        }
        assert_eq!(total, Ingested { accepted: MAX_EXPONENTIAL_POINTS as u64, shed: 1 });
        let out = agg.flush(1);
        match &out[0].scope_metrics[0].metrics[0].data {
            Some(Data::ExponentialHistogram(e)) => {
                assert_eq!(e.data_points.len(), MAX_EXPONENTIAL_POINTS)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rename_scales_bounds_and_sum() {
        let mut agg = Aggregator::new(vec![], 100, 0);
        let mut metric = histogram(
            AggregationTemporality::Delta,
            vec![hist_point(0, vec![1, 0, 0], 5.0, vec![])],
        );
        metric.name = "http.server.duration".into();
        metric.unit = "ms".into();
        let rename = |m: &Metric| {
            (m.name == "http.server.duration")
                .then(|| (MetricMeta::new("inference.request.duration", "s"), 0.001))
        };
        agg.ingest(&batch("svc", metric), &rename);
        let out = agg.flush(1);
        assert_eq!(out[0].scope_metrics[0].metrics[0].name, "inference.request.duration");
        let p = only_histogram(&out);
        assert_eq!(p.explicit_bounds, vec![0.01 * 0.001, 0.1 * 0.001]);
        assert_eq!(p.sum, Some(0.005));
    }
}
