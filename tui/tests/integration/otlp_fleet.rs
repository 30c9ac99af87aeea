//! OTLP metric batches shaped like the agent's: per node, GPU series with `hw.id`, `hw.model`
//! and `gpu.index`, host series, and an inference service's histograms and counters. Shared
//! by the live-collector test and `examples/live-bench.rs` (included there by path).

#![allow(dead_code)]

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// A string attribute.
pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn kv_int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(v)) }),
        ..Default::default()
    }
}

fn gauge(name: &str, points: Vec<(Vec<KeyValue>, f64)>, ts: u64) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points
                .into_iter()
                .map(|(attributes, v)| NumberDataPoint {
                    attributes,
                    time_unix_nano: ts,
                    value: Some(number_data_point::Value::AsDouble(v)),
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    }
}

/// A cumulative monotonic sum with one point per attribute set.
pub fn counter(name: &str, points: Vec<(Vec<KeyValue>, f64)>, start: u64, ts: u64) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points
                .into_iter()
                .map(|(attributes, v)| NumberDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: ts,
                    value: Some(number_data_point::Value::AsDouble(v)),
                    ..Default::default()
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

/// A delta histogram with `counts` over explicit `bounds`.
pub fn histogram(
    name: &str,
    attributes: Vec<KeyValue>,
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
    start: u64,
    ts: u64,
) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: ts,
                count: counts.iter().sum(),
                sum: Some(sum),
                bucket_counts: counts.to_vec(),
                explicit_bounds: bounds.to_vec(),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    }
}

/// Name of node `i`.
pub fn node_name(i: u32) -> String {
    format!("gpu-node-{i:03}")
}

/// Utilisation of GPU `g` of node `n`: distinct per GPU so tests can check mean and max.
pub fn util(n: u32, g: u32) -> f64 {
    f64::from((n * 7 + g * 10) % 100) / 100.0
}

/// One agent interval of node `n` with `gpus` GPUs at `ts`. GPU 1 of node 1 is failed
/// (it reports only `hw.status`), as the agent reports a lost GPU.
pub fn node_batch(n: u32, gpus: u32, ts: u64) -> ResourceMetrics {
    let host = node_name(n);
    let gpu_attrs = |g: u32| {
        vec![
            kv("hw.id", &format!("GPU-{n:03}-{g}")),
            kv("hw.model", "NVIDIA H100"),
            kv_int("gpu.index", i64::from(g)),
        ]
    };
    let failed = |g: u32| n == 1 && g == 1;
    let live: Vec<u32> = (0..gpus).filter(|g| !failed(*g)).collect();
    let per =
        |f: &dyn Fn(u32) -> f64| live.iter().map(|&g| (gpu_attrs(g), f(g))).collect::<Vec<_>>();
    let mut util_pts = per(&|g| util(n, g));
    for (a, _) in &mut util_pts {
        a.push(kv("hw.gpu.task", "general"));
    }
    let mut status = Vec::new();
    for g in 0..gpus {
        for state in ["ok", "degraded", "failed"] {
            let mut a = gpu_attrs(g);
            a.push(kv("hw.type", "gpu"));
            a.push(kv("hw.state", state));
            let is = if failed(g) { "failed" } else { "ok" };
            status.push((a, f64::from(u8::from(state == is))));
        }
    }
    let gib = 1024.0 * 1024.0 * 1024.0;
    let metrics = vec![
        gauge("hw.gpu.utilization", util_pts, ts),
        gauge("gpu.memory_controller.utilization", per(&|g| util(n, g) / 2.0), ts),
        gauge("hw.gpu.memory.usage", per(&|_| 10.0 * gib), ts),
        gauge("hw.gpu.memory.limit", per(&|_| 80.0 * gib), ts),
        gauge("hw.power", per(&|g| 300.0 + f64::from(g)), ts),
        gauge("gpu.power.limit", per(&|_| 700.0), ts),
        gauge("hw.temperature", per(&|g| 50.0 + f64::from(g)), ts),
        gauge("gpu.clock.sm", per(&|_| 1980.0), ts),
        gauge("hw.status", status, ts),
        gauge("system.cpu.utilization", vec![(vec![], 0.25)], ts),
        gauge(
            "system.memory.usage",
            vec![(vec![kv("system.memory.state", "used")], 64.0 * gib)],
            ts,
        ),
        gauge("system.memory.limit", vec![(vec![], 256.0 * gib)], ts),
    ];
    ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![kv("host.name", &host), kv("host.id", &host)],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
        ..Default::default()
    }
}

/// Latency bucket bounds, seconds.
pub const LATENCY_BOUNDS: [f64; 6] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25];

/// One interval (`start`..`ts`) of the `resnet` inference service (model `resnet` at
/// `version`) on node `n`: 100 requests, 2 failed, a latency and confidence histogram. The
/// request counter is cumulative: `tick` intervals have passed since `start`.
pub fn service_batch(
    n: u32,
    version: &str,
    start: u64,
    prev: u64,
    ts: u64,
    tick: u32,
) -> ResourceMetrics {
    let attrs = || vec![kv("model.name", "resnet"), kv("model.version", version)];
    let with = |k: &str, v: &str| {
        let mut a = attrs();
        a.push(kv(k, v));
        a
    };
    let total = f64::from(tick) * 100.0;
    let metrics = vec![
        histogram(
            "inference.request.duration",
            attrs(),
            &LATENCY_BOUNDS,
            &[0, 10, 60, 25, 4, 1, 0],
            3.0,
            prev,
            ts,
        ),
        // Mass mostly above 0.8: a healthy classifier.
        histogram(
            "inference.prediction.confidence",
            attrs(),
            &[0.5, 0.6, 0.7, 0.8, 0.9],
            &[2, 3, 5, 10, 30, 50],
            85.0,
            prev,
            ts,
        ),
        counter(
            "inference.requests",
            vec![
                (with("outcome", "success"), total * 0.98),
                (with("outcome", "failure"), total * 0.02),
            ],
            start,
            ts,
        ),
    ];
    ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![kv("host.name", &node_name(n)), kv("service.name", "resnet-serving")],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
        ..Default::default()
    }
}

/// Wrap resource batches into one export request.
pub fn request(resource_metrics: Vec<ResourceMetrics>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest { resource_metrics }
}
