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
}

impl ExportOutcome {
    /// The OTLP partial-success field: `None` when everything was accepted.
    pub fn partial_success(&self) -> Option<ExportMetricsPartialSuccess> {
        (self.rejected > 0 || !self.message.is_empty()).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: self.rejected as i64,
            error_message: self.message.clone(),
        })
    }
}

/// Tallies refusals by reason for the error message.
#[derive(Default)]
struct Tally {
    rejected: u64,
    reasons: Vec<(String, u64)>,
}

impl Tally {
    fn refuse(&mut self, metric: &str, why: &str) {
        self.rejected += 1;
        let key = format!("{metric}: {why}");
        match self.reasons.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => {
                if self.reasons.len() < 8 {
                    self.reasons.push((key, 1));
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

/// An attribute value as a string; `None` for types a metric attribute may not carry.
fn attr_value(v: &Option<AnyValue>) -> Option<Cow<'_, str>> {
    let Some(v) = v.as_ref().and_then(|v| v.value.as_ref()) else { return Some(Cow::Borrowed("")) };
    Some(match v {
        any_value::Value::StringValue(s) => Cow::Borrowed(s.as_str()),
        any_value::Value::BoolValue(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        any_value::Value::IntValue(i) => Cow::Owned(i.to_string()),
        any_value::Value::DoubleValue(d) => Cow::Owned(d.to_string()),
        any_value::Value::BytesValue(b) => {
            Cow::Owned(b.iter().map(|x| format!("{x:02x}")).collect())
        }
        any_value::Value::ArrayValue(a) => {
            let items: Option<Vec<serde_json::Value>> = a
                .values
                .iter()
                .map(|x| {
                    attr_value(&Some(x.clone())).map(|s| serde_json::Value::String(s.into_owned()))
                })
                .collect();
            Cow::Owned(serde_json::Value::Array(items?).to_string())
        }
        any_value::Value::KvlistValue(kv) => {
            let mut m = serde_json::Map::new();
            for e in &kv.values {
                m.insert(
                    e.key.clone(),
                    serde_json::Value::String(attr_value(&e.value)?.into_owned()),
                );
            }
            Cow::Owned(serde_json::Value::Object(m).to_string())
        }
        // A reference into a profiles dictionary: meaningless in a metrics request.
        _ => return None,
    })
}

fn convert_attrs(attrs: &[KeyValue]) -> Option<Vec<(&str, Cow<'_, str>)>> {
    attrs.iter().map(|kv| Some((kv.key.as_str(), attr_value(&kv.value)?))).collect()
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
    let Some(pattrs) = convert_attrs(attrs) else {
        return Err(PointErr::Bad("unsupported attribute type"));
    };
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
        let Some(res) = convert_attrs(res_attrs) else {
            let n: usize = rm.scope_metrics.iter().flat_map(|s| &s.metrics).map(point_count).sum();
            for _ in 0..n {
                tally.refuse("resource", "unsupported attribute type");
                store.refusals.count(Refusal::Invalid);
            }
            continue;
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
                            Err(PointErr::Store(r)) => tally.refuse(metric, &r.to_string()),
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

fn number(p: &NumberDataPoint) -> Result<Option<f64>, &'static str> {
    if p.flags & 1 != 0 {
        return Ok(None);
    }
    match p.value {
        Some(number_data_point::Value::AsDouble(v)) => Ok(Some(v)),
        Some(number_data_point::Value::AsInt(v)) => Ok(Some(v as f64)),
        None => Err("number point without a value"),
    }
}

fn explicit(p: &HistogramDataPoint) -> Result<Option<Histogram>, &'static str> {
    if p.flags & 1 != 0 {
        return Ok(None);
    }
    let (bounds, counts) = if p.bucket_counts.is_empty() {
        (Vec::new(), vec![p.count])
    } else {
        if p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
            return Err("bucket_counts must have one more entry than explicit_bounds");
        }
        if p.bucket_counts.iter().sum::<u64>() != p.count {
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

fn exponential(p: &ExponentialHistogramDataPoint) -> Result<Option<Histogram>, &'static str> {
    if p.flags & 1 != 0 {
        return Ok(None);
    }
    if !(-10..=20).contains(&p.scale) {
        return Err("exponential histogram scale out of range [-10, 20]");
    }
    let side = |b: &Option<
        opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets,
    >| {
        b.as_ref()
            .map(|b| ExpSide { offset: b.offset, counts: b.bucket_counts.clone() })
            .unwrap_or_default()
    };
    let positive = side(&p.positive);
    let negative = side(&p.negative);
    if positive.counts.len() > 1 << 16 || negative.counts.len() > 1 << 16 {
        return Err("exponential histogram has too many buckets");
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
