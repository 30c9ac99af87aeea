use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram as OtlpHistogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;

const T0: u64 = 1_800_000_000_000_000_000;
const ALL: (u64, u64) = (0, u64::MAX);

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: resource, ..Default::default() }),
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn point(ts: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        time_unix_nano: ts,
        value: Some(number_data_point::Value::AsDouble(v)),
        attributes: attrs,
        ..Default::default()
    }
}

fn gauge(name: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(metric::Data::Gauge(Gauge { data_points: points })),
        ..Default::default()
    }
}

fn delta_counter(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn delta_histogram(ts: u64, counts: Vec<u64>, sum: f64) -> Metric {
    Metric {
        name: "inference.request.duration".into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(OtlpHistogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: ts,
                count: counts.iter().sum(),
                sum: Some(sum),
                bucket_counts: counts,
                explicit_bounds: vec![0.1, 1.0],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    }
}

/// Every series of `e` as `(labels as name=value pairs, samples)`, sorted.
/// A series as `(labels, samples)`.
type Flat = (Vec<(String, String)>, Vec<(i64, f64)>);

fn flat(e: &Encoded) -> Vec<Flat> {
    let mut out: Vec<_> = e
        .shards
        .iter()
        .flatten()
        .map(|t| {
            (
                t.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
                t.samples.iter().map(|s| (s.timestamp, s.value)).collect(),
            )
        })
        .collect();
    out.sort_by(|a: &(Vec<(String, String)>, _), b| a.0.cmp(&b.0));
    out
}

fn value_of(e: &Encoded, name: &str, extra: &[(&str, &str)]) -> Vec<f64> {
    flat(e)
        .into_iter()
        .filter(|(l, _)| {
            l.iter().any(|(k, v)| k == "__name__" && v == name)
                && extra.iter().all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
        })
        .flat_map(|(_, s)| s.into_iter().map(|(_, v)| v))
        .collect()
}

#[test]
fn labels_carry_the_resource_and_the_point_with_the_point_winning() {
    let req = request(
        vec![
            kv("service.name", "resnet"),
            kv("service.namespace", "vision"),
            kv("service.instance.id", "pod-1"),
            kv("host.name", "gpu-a"),
            kv("model.name", "from-resource"),
        ],
        vec![gauge(
            "hw.gpu.utilization",
            "1",
            vec![point(T0, 0.5, vec![kv("model.name", "resnet50")])],
        )],
    );
    let e = encode(&req, 4, ALL, &mut DeltaTotals::default());
    let series = flat(&e);
    assert_eq!(e.samples, 2, "the point and target_info: {series:?}");
    let (labels, samples) = series
        .iter()
        .find(|(l, _)| l[0] == ("__name__".into(), "hw_gpu_utilization_ratio".into()))
        .unwrap_or_else(|| panic!("no gauge in {series:?}"));
    let want: Vec<(String, String)> = [
        ("__name__", "hw_gpu_utilization_ratio"),
        ("host_name", "gpu-a"),
        ("instance", "pod-1"),
        ("job", "vision/resnet"),
        ("model_name", "resnet50"),
        ("service_instance_id", "pod-1"),
        ("service_name", "resnet"),
        ("service_namespace", "vision"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(labels, &want);
    assert_eq!(samples, &vec![((T0 / 1_000_000) as i64, 0.5)]);
    let info = value_of(&e, "target_info", &[("job", "vision/resnet"), ("host_name", "gpu-a")]);
    assert_eq!(info, vec![1.0]);
}

#[test]
fn delta_sums_become_running_totals_per_series() {
    let mut totals = DeltaTotals::default();
    let step = |ts: u64, a: f64, b: f64| {
        request(
            vec![kv("service.name", "resnet")],
            vec![delta_counter(
                "inference.requests",
                vec![
                    point(ts, a, vec![kv("host.name", "a")]),
                    point(ts, b, vec![kv("host.name", "b")]),
                ],
            )],
        )
    };
    let first = encode(&step(T0, 3.0, 1.0), 2, ALL, &mut totals);
    let second = encode(&step(T0 + 1_000_000_000, 2.0, 0.0), 2, ALL, &mut totals);
    assert_eq!(value_of(&first, "inference_requests_total", &[("host_name", "a")]), vec![3.0]);
    assert_eq!(value_of(&second, "inference_requests_total", &[("host_name", "a")]), vec![5.0]);
    assert_eq!(value_of(&second, "inference_requests_total", &[("host_name", "b")]), vec![1.0]);
}

#[test]
fn delta_histograms_become_cumulative_le_buckets() {
    let mut totals = DeltaTotals::default();
    let req = |ts, counts, sum| {
        request(vec![kv("service.name", "resnet")], vec![delta_histogram(ts, counts, sum)])
    };
    encode(&req(T0, vec![2, 1, 0], 0.5), 1, ALL, &mut totals);
    let e = encode(&req(T0 + 1, vec![1, 0, 3], 9.0), 1, ALL, &mut totals);
    let name = "inference_request_duration_seconds_bucket";
    // Running totals per bucket: [3, 1, 3]; cumulative over le: 3, 4, 7.
    assert_eq!(value_of(&e, name, &[("le", "0.1")]), vec![3.0]);
    assert_eq!(value_of(&e, name, &[("le", "1")]), vec![4.0]);
    assert_eq!(value_of(&e, name, &[("le", "+Inf")]), vec![7.0]);
    assert_eq!(value_of(&e, "inference_request_duration_seconds_count", &[]), vec![7.0]);
    assert_eq!(value_of(&e, "inference_request_duration_seconds_sum", &[]), vec![9.5]);
}

#[test]
fn points_outside_the_window_or_without_a_value_are_left_out() {
    let mut stale = point(T0 + 2, 1.0, vec![]);
    stale.value = None;
    let req = request(
        vec![kv("service.name", "resnet")],
        vec![gauge(
            "queue.depth",
            "",
            vec![point(T0 - 1, 1.0, vec![]), point(T0, 2.0, vec![]), stale],
        )],
    );
    let e = encode(&req, 1, (T0, T0 + 10), &mut DeltaTotals::default());
    assert_eq!(value_of(&e, "queue_depth", &[]), vec![2.0]);
    // Nothing in the window: no target_info either.
    let e = encode(&req, 1, (T0 + 100, T0 + 200), &mut DeltaTotals::default());
    assert_eq!(e.samples, 0);
    assert!(e.shards.iter().all(Vec::is_empty));
}

#[test]
fn a_series_keeps_its_shard_from_request_to_request() {
    let mut totals = DeltaTotals::default();
    let shard_of = |e: &Encoded, host: &str| {
        e.shards
            .iter()
            .position(|s| {
                s.iter().any(|t| {
                    t.labels
                        .iter()
                        .any(|l| l.name == "__name__" && l.value == "hw_gpu_utilization_ratio")
                        && t.labels.iter().any(|l| l.name == "host_name" && l.value == host)
                })
            })
            .expect("series in a shard")
    };
    let req = |ts| {
        let points =
            (0..16).map(|h| point(ts, 0.1, vec![kv("host.name", &format!("h{h}"))])).collect();
        request(vec![kv("service.name", "agent")], vec![gauge("hw.gpu.utilization", "1", points)])
    };
    let a = encode(&req(T0), 4, ALL, &mut totals);
    let b = encode(&req(T0 + 1), 4, ALL, &mut totals);
    let mut used = std::collections::BTreeSet::new();
    for h in 0..16 {
        let host = format!("h{h}");
        assert_eq!(shard_of(&a, &host), shard_of(&b, &host), "{host}");
        used.insert(shard_of(&a, &host));
    }
    assert!(used.len() > 1, "sixteen series all in one shard");
}

#[test]
fn label_values_format_as_prometheus_clients_write_them() {
    assert_eq!(format_float(0.005), "0.005");
    assert_eq!(format_float(1.0), "1");
    assert_eq!(format_float(f64::INFINITY), "+Inf");
    assert_eq!(format_float(2.5), "2.5");
}
