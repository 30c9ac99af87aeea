//! OTLP metrics → store points. Every OTLP metric type is mapped: gauges; sums (monotonic
//! cumulative → counter with resets handled, monotonic delta → counter increments,
//! non-monotonic cumulative → gauge); explicit and exponential histograms; summaries (one gauge
//! per quantile with attribute `quantile`, plus `<name>.count` and `<name>.sum` counters).
//! Series attributes are the resource attributes overlaid by the point attributes.

use std::borrow::Cow;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint,
    metric, number_data_point,
};

use crate::store::{Buckets, ExpSide, Histogram, PointValue, Refusal, SeriesKey, Store, Writer};

/// What one export request did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExportOutcome {
    /// Points stored.
    pub accepted: u64,
    /// Points refused (OTLP `rejected_data_points`).
    pub rejected: u64,
    /// Human-readable reasons (OTLP `error_message`), empty when all were accepted.
    pub message: String,
    /// The write-ahead log is over its bound: answer "unavailable, retry".
    pub backlogged: bool,
    /// Of the refused points, those that were well-formed but not storable (non-finite
    /// values, out of order, duplicates, series limits, kind conflicts).
    pub refused_well_formed: u64,
}

impl ExportOutcome {
    /// The OTLP partial-success field: `None` when everything was accepted.
    pub fn partial_success(&self) -> Option<ExportMetricsPartialSuccess> {
        (self.rejected > 0 || !self.message.is_empty()).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: self.rejected as i64,
            error_message: self.message.clone(),
        })
    }

    /// Nothing in the request was usable: every point was malformed (none accepted, none
    /// well-formed). Answered 400 / INVALID_ARGUMENT rather than partial success.
    pub fn all_malformed(&self) -> bool {
        self.accepted == 0 && self.rejected > 0 && self.refused_well_formed == 0
    }
}

/// Tallies refusals by reason for the error message.
#[derive(Default)]
struct Tally {
    rejected: u64,
    by_state: u64,
    reasons: Vec<(String, u64)>,
}

impl Tally {
    fn refuse(&mut self, metric: &str, why: &str) {
        self.refuse_n(metric, why, 1);
    }

    fn refuse_n(&mut self, metric: &str, why: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.rejected += n;
        // Compared without formatting: a request refused point by point allocates nothing.
        let same = |k: &str| {
            k.len() == metric.len() + 2 + why.len()
                && k.starts_with(metric)
                && k.as_bytes()[metric.len()..].starts_with(b": ")
                && k.ends_with(why)
        };
        match self.reasons.iter_mut().find(|(k, _)| same(k)) {
            Some((_, c)) => *c += n,
            None => {
                if self.reasons.len() < 8 {
                    self.reasons.push((format!("{metric}: {why}"), n));
                }
            }
        }
    }

    fn message(&self) -> String {
        let mut m = String::new();
        for (k, n) in &self.reasons {
            if !m.is_empty() {
                m.push_str("; ");
            }
            let _ = write!(m, "{k} ({n})");
        }
        m
    }
}

/// Most attributes on one point, resource or scope.
pub const MAX_ATTRIBUTES: usize = 128;
/// Longest attribute key, bytes.
pub const MAX_ATTR_KEY_BYTES: usize = 256;
/// Longest attribute value (a string, or an array or map rendered as JSON), bytes.
pub const MAX_ATTR_VALUE_BYTES: usize = 4096;
/// Deepest nesting of arrays and maps inside one attribute value.
pub const MAX_VALUE_DEPTH: usize = 4;
/// Most data points one request may carry (summary quantiles count one each); the rest of
/// the request is refused as partial success.
pub const MAX_POINTS_PER_REQUEST: u64 = 100_000;
/// Most new series one request may create; points of further new series are refused as
/// partial success (points of known series still go in).
pub const MAX_NEW_SERIES_PER_REQUEST: u64 = 20_000;
/// Most explicit bounds of one histogram point.
pub const MAX_EXPLICIT_BOUNDS: usize = 1024;
pub use crate::store::MAX_EXP_BUCKETS;

/// An attribute value as a string, or why it cannot be one: a type a metric attribute may not
/// carry, nesting deeper than [`MAX_VALUE_DEPTH`], or longer than [`MAX_ATTR_VALUE_BYTES`].
pub(crate) fn attr_value(v: &Option<AnyValue>) -> Result<Cow<'_, str>, &'static str> {
    let s = match v.as_ref() {
        Some(v) => value_str(v, 0)?,
        None => Cow::Borrowed(""),
    };
    if s.len() > MAX_ATTR_VALUE_BYTES {
        return Err("attribute value longer than 4096 bytes");
    }
    Ok(s)
}

fn value_str(v: &AnyValue, depth: usize) -> Result<Cow<'_, str>, &'static str> {
    let Some(v) = v.value.as_ref() else { return Ok(Cow::Borrowed("")) };
    let nested = |depth: usize| {
        if depth >= MAX_VALUE_DEPTH {
            Err("attribute value nested deeper than 4 levels")
        } else {
            Ok(depth + 1)
        }
    };
    Ok(match v {
        any_value::Value::StringValue(s) => Cow::Borrowed(s.as_str()),
        any_value::Value::BoolValue(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        any_value::Value::IntValue(i) => Cow::Owned(i.to_string()),
        any_value::Value::DoubleValue(d) => Cow::Owned(d.to_string()),
        any_value::Value::BytesValue(b) => {
            if b.len() > MAX_ATTR_VALUE_BYTES / 2 {
                return Err("attribute value longer than 4096 bytes");
            }
            Cow::Owned(b.iter().map(|x| format!("{x:02x}")).collect())
        }
        any_value::Value::ArrayValue(a) => {
            let d = nested(depth)?;
            if a.values.len() > MAX_ATTRIBUTES {
                return Err("attribute array longer than 128 items");
            }
            let items: Result<Vec<serde_json::Value>, _> = a
                .values
                .iter()
                .map(|x| value_str(x, d).map(|s| serde_json::Value::String(s.into_owned())))
                .collect();
            Cow::Owned(serde_json::Value::Array(items?).to_string())
        }
        any_value::Value::KvlistValue(kv) => {
            let d = nested(depth)?;
            if kv.values.len() > MAX_ATTRIBUTES {
                return Err("attribute map longer than 128 entries");
            }
            let mut m = serde_json::Map::new();
            for e in &kv.values {
                let v = match &e.value {
                    Some(v) => value_str(v, d)?.into_owned(),
                    None => String::new(),
                };
                m.insert(e.key.clone(), serde_json::Value::String(v));
            }
            Cow::Owned(serde_json::Value::Object(m).to_string())
        }
        // A reference into a profiles dictionary: meaningless in a metrics request.
        _ => return Err("unsupported attribute type"),
    })
}

fn convert_attrs(attrs: &[KeyValue]) -> Result<Vec<(&str, Cow<'_, str>)>, &'static str> {
    if attrs.len() > MAX_ATTRIBUTES {
        return Err("more than 128 attributes");
    }
    attrs
        .iter()
        .map(|kv| {
            if kv.key.len() > MAX_ATTR_KEY_BYTES {
                return Err("attribute key longer than 256 bytes");
            }
            Ok((kv.key.as_str(), attr_value(&kv.value)?))
        })
        .collect()
}

/// Appends one point whose attributes could not take the fast path (non-string values, a key
/// repeated between resource and point): converted, merged and sorted the general way.
fn append_general(
    w: &mut Writer<'_>,
    res: &[(&str, Cow<'_, str>)],
    metric: &str,
    attrs: &[KeyValue],
    ts: u64,
    v: PointValue,
) -> Result<(), PointErr> {
    let pattrs = convert_attrs(attrs).map_err(PointErr::Bad)?;
    // Resource attributes first, point attributes after: on a duplicate key the point's value
    // wins.
    let mut merged: Vec<(&str, &str)> = Vec::with_capacity(res.len() + pattrs.len());
    merged.extend(res.iter().map(|(k, v)| (*k, v.as_ref())));
    merged.extend(pattrs.iter().map(|(k, v)| (*k, v.as_ref())));
    crate::store::sort_pairs(&mut merged);
    w.append(metric, &merged, ts, v).map_err(PointErr::Store)
}

/// Why a point was not stored.
enum PointErr {
    /// The store refused it (and counted it).
    Store(Refusal),
    /// Malformed before it reached the store.
    Bad(&'static str),
}

/// Writes one export request into the store.
///
/// The hot path allocates nothing per point: the resource attributes' share of the series key
/// is computed once per resource, each point adds its own string attributes' shares, and the
/// store finds a known series by that key under a read lock held for the whole request
/// ([`Store::batch_writer`]); attribute lists are only merged and sorted for new series.
pub fn export<'r>(store: &Store, req: &'r ExportMetricsServiceRequest) -> ExportOutcome {
    let mut tally = Tally::default();
    let mut w = store.batch_writer();
    w.limit_new_series(MAX_NEW_SERIES_PER_REQUEST);
    let mut points_left = MAX_POINTS_PER_REQUEST;
    if w.backlogged() {
        let message = match store.unavailable() {
            Some(reason) => format!("{reason}; retry"),
            None => "store is catching up; retry".into(),
        };
        return ExportOutcome { backlogged: true, message, ..Default::default() };
    }
    let (oldest, newest) = store.accepted_window();
    for rm in &req.resource_metrics {
        let empty = Vec::new();
        let res_attrs = rm.resource.as_ref().map(|r| &r.attributes).unwrap_or(&empty);
        let res = match convert_attrs(res_attrs) {
            Ok(res) => res,
            Err(why) => {
                let n: usize =
                    rm.scope_metrics.iter().flat_map(|s| &s.metrics).map(point_count).sum();
                tally.refuse_n("resource", why, n as u64);
                store.refusals.invalid.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
        };
        // The resource's pairs and their share of every series key, once per resource. A
        // resource repeating a key takes the general path (the later value wins there).
        let res_unique =
            res.iter().enumerate().all(|(i, (k, _))| res[..i].iter().all(|(k2, _)| k2 != k));
        let res_key = res.iter().fold(SeriesKey::default(), |key, (k, v)| key.with(k, v));
        let mut scratch: Vec<(&str, &str)> = Vec::with_capacity(res.len() + 8);
        scratch.extend(res.iter().map(|(k, v)| (*k, v.as_ref())));
        let nres = res.len();
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let Some(data) = &m.data else {
                    continue;
                };
                let mkey = SeriesKey::metric(&m.name);
                // `quantile`: a summary's quantile point, stored with a `quantile` attribute.
                let mut point =
                    |w: &mut Writer<'_>,
                     metric: &str,
                     mkey: SeriesKey,
                     attrs: &'r [KeyValue],
                     quantile: Option<f64>,
                     ts: u64,
                     v: Result<Option<PointValue>, &'static str>| {
                        if points_left == 0 {
                            store.refusals.count(Refusal::Invalid);
                            tally.refuse(metric, "request over 100000 data points");
                            return;
                        }
                        points_left -= 1;
                        if attrs.len() > MAX_ATTRIBUTES {
                            store.refusals.count(Refusal::Invalid);
                            tally.refuse(metric, "more than 128 attributes");
                            return;
                        }
                        let v = match v {
                            Ok(Some(v)) => v,
                            Ok(None) => return, // no recorded value (staleness marker)
                            Err(why) => {
                                store.refusals.count(Refusal::Invalid);
                                tally.refuse(metric, why);
                                return;
                            }
                        };
                        if ts == 0 {
                            store.refusals.count(Refusal::Invalid);
                            tally.refuse(metric, "missing time_unix_nano");
                            return;
                        }
                        // Outside the window the store keeps: refused with the reason.
                        if ts < oldest || ts > newest {
                            let r = if ts < oldest { Refusal::TooOld } else { Refusal::TooNew };
                            store.refusals.count(r);
                            tally.refuse(metric, &r.to_string());
                            return;
                        }
                        // Fast path: string attributes whose keys the resource does not repeat.
                        scratch.truncate(nres);
                        let mut key = mkey.plus(res_key);
                        let mut fast = res_unique && quantile.is_none();
                        for kv in attrs {
                            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(any_value::Value::StringValue(s))
                                    if fast
                                        && kv.key.len() <= MAX_ATTR_KEY_BYTES
                                        && s.len() <= MAX_ATTR_VALUE_BYTES
                                        && !scratch.iter().any(|(k, _)| *k == kv.key.as_str()) =>
                                {
                                    scratch.push((kv.key.as_str(), s.as_str()));
                                    key = key.with(&kv.key, s);
                                }
                                _ => {
                                    fast = false;
                                    break;
                                }
                            }
                        }
                        let r = if fast {
                            w.append_keyed(metric, key, &scratch, ts, v).map_err(PointErr::Store)
                        } else if let Some(q) = quantile {
                            let mut attrs = attrs.to_vec();
                            attrs.push(KeyValue {
                                key: "quantile".into(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::StringValue(q.to_string())),
                                }),
                                ..Default::default()
                            });
                            append_general(w, &res, metric, &attrs, ts, v)
                        } else {
                            append_general(w, &res, metric, attrs, ts, v)
                        };
                        match r {
                            Ok(()) => {}
                            Err(PointErr::Store(r)) => {
                                if r != Refusal::Invalid {
                                    tally.by_state += 1;
                                }
                                tally.refuse(metric, &r.to_string())
                            }
                            Err(PointErr::Bad(why)) => {
                                store.refusals.count(Refusal::Invalid);
                                tally.refuse(metric, why);
                            }
                        }
                    };
                match data {
                    metric::Data::Gauge(g) => {
                        for p in &g.data_points {
                            point(
                                &mut w,
                                &m.name,
                                mkey,
                                &p.attributes,
                                None,
                                p.time_unix_nano,
                                number(p).map(|v| v.map(PointValue::Gauge)),
                            );
                        }
                    }
                    metric::Data::Sum(s) => {
                        let cumulative =
                            s.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                        let delta =
                            s.aggregation_temporality == AggregationTemporality::Delta as i32;
                        for p in &s.data_points {
                            let v = number(p).and_then(|v| {
                                match (v, s.is_monotonic, cumulative, delta) {
                                    (None, ..) => Ok(None),
                                    (Some(v), true, true, _) => {
                                        Ok(Some(PointValue::CounterCumulative {
                                            start: p.start_time_unix_nano,
                                            value: v,
                                        }))
                                    }
                                    (Some(v), _, _, true) => Ok(Some(PointValue::CounterDelta(v))),
                                    (Some(v), false, true, _) => Ok(Some(PointValue::Gauge(v))),
                                    _ => Err("sum without aggregation temporality"),
                                }
                            });
                            point(&mut w, &m.name, mkey, &p.attributes, None, p.time_unix_nano, v);
                        }
                    }
                    metric::Data::Histogram(h) => {
                        let cumulative =
                            h.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                        let delta =
                            h.aggregation_temporality == AggregationTemporality::Delta as i32;
                        for p in &h.data_points {
                            let v = explicit(p).and_then(|hist| match (hist, cumulative, delta) {
                                (None, ..) => Ok(None),
                                (Some(hist), true, _) => {
                                    Ok(Some(PointValue::HistogramCumulative {
                                        start: p.start_time_unix_nano,
                                        hist,
                                    }))
                                }
                                (Some(hist), _, true) => Ok(Some(PointValue::HistogramDelta(hist))),
                                _ => Err("histogram without aggregation temporality"),
                            });
                            point(&mut w, &m.name, mkey, &p.attributes, None, p.time_unix_nano, v);
                        }
                    }
                    metric::Data::ExponentialHistogram(h) => {
                        let cumulative =
                            h.aggregation_temporality == AggregationTemporality::Cumulative as i32;
                        let delta =
                            h.aggregation_temporality == AggregationTemporality::Delta as i32;
                        for p in &h.data_points {
                            let v =
                                exponential(p).and_then(|hist| match (hist, cumulative, delta) {
                                    (None, ..) => Ok(None),
                                    (Some(hist), true, _) => {
                                        Ok(Some(PointValue::HistogramCumulative {
                                            start: p.start_time_unix_nano,
                                            hist,
                                        }))
                                    }
                                    (Some(hist), _, true) => {
                                        Ok(Some(PointValue::HistogramDelta(hist)))
                                    }
                                    _ => Err("histogram without aggregation temporality"),
                                });
                            point(&mut w, &m.name, mkey, &p.attributes, None, p.time_unix_nano, v);
                        }
                    }
                    metric::Data::Summary(s) => {
                        let count_name = format!("{}.count", m.name);
                        let sum_name = format!("{}.sum", m.name);
                        let (count_key, sum_key) =
                            (SeriesKey::metric(&count_name), SeriesKey::metric(&sum_name));
                        for p in &s.data_points {
                            if p.flags & 1 != 0 {
                                continue;
                            }
                            for q in &p.quantile_values {
                                point(
                                    &mut w,
                                    &m.name,
                                    mkey,
                                    &p.attributes,
                                    Some(q.quantile),
                                    p.time_unix_nano,
                                    Ok(Some(PointValue::Gauge(q.value))),
                                );
                            }
                            let start = p.start_time_unix_nano;
                            point(
                                &mut w,
                                &count_name,
                                count_key,
                                &p.attributes,
                                None,
                                p.time_unix_nano,
                                Ok(Some(PointValue::CounterCumulative {
                                    start,
                                    value: p.count as f64,
                                })),
                            );
                            point(
                                &mut w,
                                &sum_name,
                                sum_key,
                                &p.attributes,
                                None,
                                p.time_unix_nano,
                                Ok(Some(PointValue::CounterCumulative { start, value: p.sum })),
                            );
                        }
                    }
                }
            }
        }
    }
    let accepted = w.accepted();
    // These points are in memory and in the log buffer, so they are acknowledged even if the
    // buffer just went over its bound; the next request is the one told to retry.
    w.finish();
    ExportOutcome {
        accepted,
        rejected: tally.rejected,
        message: tally.message(),
        backlogged: false,
        refused_well_formed: tally.by_state,
    }
}

fn point_count(m: &opentelemetry_proto::tonic::metrics::v1::Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

pub(crate) fn number(p: &NumberDataPoint) -> Result<Option<f64>, &'static str> {
    if p.flags & 1 != 0 {
        return Ok(None);
    }
    match p.value {
        Some(number_data_point::Value::AsDouble(v)) => Ok(Some(v)),
        Some(number_data_point::Value::AsInt(v)) => Ok(Some(v as f64)),
        None => Err("number point without a value"),
    }
}

pub(crate) fn explicit(p: &HistogramDataPoint) -> Result<Option<Histogram>, &'static str> {
    if p.flags & 1 != 0 {
        return Ok(None);
    }
    let (bounds, counts) = if p.bucket_counts.is_empty() {
        (Vec::new(), vec![p.count])
    } else {
        if p.explicit_bounds.len() > MAX_EXPLICIT_BOUNDS {
            return Err("histogram has more than 1024 explicit bounds");
        }
        if p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
            return Err("bucket_counts must have one more entry than explicit_bounds");
        }
        if checked_total(&p.bucket_counts) != Some(p.count) {
            return Err("bucket counts do not add up to count");
        }
        (p.explicit_bounds.clone(), p.bucket_counts.clone())
    };
    Ok(Some(Histogram {
        count: p.count,
        sum: p.sum.unwrap_or(0.0),
        min: p.min,
        max: p.max,
        buckets: Buckets::Explicit { bounds: bounds.into(), counts },
    }))
}

pub(crate) fn exponential(
    p: &ExponentialHistogramDataPoint,
) -> Result<Option<Histogram>, &'static str> {
    if p.flags & 1 != 0 {
        return Ok(None);
    }
    if !(-10..=20).contains(&p.scale) {
        return Err("exponential histogram scale out of range [-10, 20]");
    }
    // Checked before anything is copied: the bucket range must hold values an f64 can carry
    // at this scale, and be at most MAX_EXP_BUCKETS wide.
    let (lo, hi) = index_range(p.scale);
    let side = |b: &Option<
        opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets,
    >| {
        let Some(b) = b.as_ref() else { return Ok(ExpSide::default()) };
        if b.bucket_counts.len() > MAX_EXP_BUCKETS {
            return Err("exponential histogram has more than 160 buckets on one side");
        }
        let first = i64::from(b.offset);
        if !b.bucket_counts.is_empty() && (first < lo || first + b.bucket_counts.len() as i64 > hi)
        {
            return Err("exponential histogram bucket offset outside the range of float64 values");
        }
        Ok(ExpSide { offset: b.offset, counts: b.bucket_counts.clone() })
    };
    let positive = side(&p.positive)?;
    let negative = side(&p.negative)?;
    let total = checked_total(&positive.counts)
        .zip(checked_total(&negative.counts))
        .and_then(|(a, b)| a.checked_add(b))
        .and_then(|t| t.checked_add(p.zero_count));
    if total != Some(p.count) {
        return Err("exponential histogram bucket counts do not add up to count");
    }
    Ok(Some(Histogram {
        count: p.count,
        sum: p.sum.unwrap_or(0.0),
        min: p.min,
        max: p.max,
        buckets: Buckets::Exponential {
            scale: p.scale,
            zero_count: p.zero_count,
            positive,
            negative,
        },
    }))
}

/// Sum of counts, `None` on overflow.
fn checked_total(counts: &[u64]) -> Option<u64> {
    counts.iter().try_fold(0u64, |t, c| t.checked_add(*c))
}

/// Bucket indices `[lo, hi)` at `scale` that hold finite, non-zero float64 magnitudes
/// (`2^-1074 ..= f64::MAX`); bucket `k` covers `(2^(k·2^-scale), 2^((k+1)·2^-scale)]`.
fn index_range(scale: i32) -> (i64, i64) {
    let (lo, hi) = (-1075i64, 1024i64);
    if scale >= 0 {
        (lo << scale, hi << scale)
    } else {
        let by = (-scale).min(62);
        // Floor for the lower end, ceiling for the upper.
        (lo >> by, (hi + (1i64 << by) - 1) >> by)
    }
}
