//! Small builders for OTLP metric messages. The samplers build proto messages directly rather
//! than going through SDK instruments: a batch is built, pushed and forgotten, which keeps the
//! agent's memory flat.

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric::Data, number_data_point::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// A string attribute.
pub fn kv_str(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        key_strindex: 0,
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
    }
}

/// An integer attribute.
pub fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        key_strindex: 0,
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }),
    }
}

/// The string value of `key` in `attrs`, if present and a string.
pub fn attr_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// Collects the metrics of one sample into a `ResourceMetrics` batch.
#[derive(Debug)]
pub struct BatchBuilder {
    time: u64,
    start: u64,
    metrics: Vec<Metric>,
}

/// Whether a metric is a gauge, a monotonic counter or an up-down counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Last value.
    Gauge,
    /// Cumulative monotonic sum.
    Counter,
    /// Cumulative non-monotonic sum.
    UpDown,
}

impl BatchBuilder {
    /// A builder whose points are stamped `time`; cumulative sums start at `start`.
    pub fn new(time: u64, start: u64) -> Self {
        Self { time, start, metrics: Vec::new() }
    }

    fn metric(&mut self, name: &str, unit: &str, kind: Kind) -> &mut Vec<NumberDataPoint> {
        let pos = match self.metrics.iter().position(|m| m.name == name) {
            Some(pos) => pos,
            None => {
                let data = match kind {
                    Kind::Gauge => Data::Gauge(Gauge { data_points: Vec::new() }),
                    Kind::Counter | Kind::UpDown => Data::Sum(Sum {
                        data_points: Vec::new(),
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: kind == Kind::Counter,
                    }),
                };
                self.metrics.push(Metric {
                    name: name.to_owned(),
                    description: describe(name).to_owned(),
                    unit: unit.to_owned(),
                    data: Some(data),
                    ..Default::default()
                });
                self.metrics.len() - 1
            }
        };
        match &mut self.metrics[pos].data {
            Some(Data::Gauge(g)) => &mut g.data_points,
            Some(Data::Sum(s)) => &mut s.data_points,
            // Only this builder creates metrics, always with gauge or sum data.
            _ => unreachable!("BatchBuilder only creates gauges and sums"),
        }
    }

    fn point(&self, kind: Kind, attrs: Vec<KeyValue>, value: Value) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: if kind == Kind::Gauge { 0 } else { self.start },
            time_unix_nano: self.time,
            value: Some(value),
            ..Default::default()
        }
    }

    /// Add a floating-point data point to metric `name`.
    pub fn f64(&mut self, name: &str, unit: &str, kind: Kind, attrs: Vec<KeyValue>, value: f64) {
        let point = self.point(kind, attrs, Value::AsDouble(value));
        self.metric(name, unit, kind).push(point);
    }

    /// Add an integer data point to metric `name`.
    pub fn i64(&mut self, name: &str, unit: &str, kind: Kind, attrs: Vec<KeyValue>, value: i64) {
        let point = self.point(kind, attrs, Value::AsInt(value));
        self.metric(name, unit, kind).push(point);
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// Finish the batch under `resource`, from instrumentation scope `scope`.
    pub fn finish(self, resource: &[KeyValue], scope: &str) -> ResourceMetrics {
        ResourceMetrics {
            resource: Some(Resource { attributes: resource.to_vec(), ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: scope.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                metrics: self.metrics,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

/// The description of one of the agent's metrics, sent over OTLP and shown as `# HELP` on
/// `/metrics`. Every name the samplers emit has one; a test checks that.
pub fn describe(name: &str) -> &'static str {
    match name {
        "system.cpu.utilization" => "Fraction of CPU time busy, per logical CPU and overall.",
        "system.cpu.load_average.1m" => "Host load average over 1 minute.",
        "system.cpu.load_average.5m" => "Host load average over 5 minutes.",
        "system.cpu.load_average.15m" => "Host load average over 15 minutes.",
        "system.memory.usage" => "Host memory in use, by state.",
        "system.memory.limit" => "Total host memory.",
        "system.linux.memory.available" => "Host memory available for new work (MemAvailable).",
        "process.cpu.utilization" => "Fraction of one CPU used by a watched serving process.",
        "process.memory.usage" => "Resident memory of a watched serving process.",
        "hw.gpu.utilization" => "Fraction of time the GPU was busy, by task.",
        "gpu.memory_controller.utilization" => {
            "Fraction of time the GPU memory was read or written."
        }
        "hw.gpu.memory.usage" => "GPU memory in use.",
        "hw.gpu.memory.limit" => "GPU memory in total.",
        "hw.power" => "GPU power draw.",
        "gpu.power.limit" => "GPU power limit enforced by the driver.",
        "hw.energy" => "GPU energy consumed since the driver loaded.",
        "hw.temperature" => "GPU core temperature.",
        "gpu.clock.sm" => "GPU streaming multiprocessor clock.",
        "gpu.throttle.reasons" => "Why the GPU clocks are held back (1 for each active reason).",
        "gpu.pcie.throughput" => "GPU PCIe traffic, by direction.",
        "hw.errors" => "GPU errors counted by the driver (ECC, Xid), by type.",
        "hw.status" => "GPU health (1 for the current state).",
        "process.gpu.utilization" => "Fraction of GPU time used by one process.",
        "process.gpu.memory.usage" => "GPU memory used by one process.",
        "stoker.agent.export.dropped" => "Data points dropped because the export buffer was full.",
        "stoker.agent.export.sent" => "Data points the collector accepted.",
        "stoker.agent.export.rejected" => "Data points the collector rejected.",
        "stoker.agent.export.failures" => "Export requests that failed.",
        "stoker.agent.export.queue.size" => "Batches waiting in the export buffer.",
        "stoker.agent.export.connected" => "1 while the exporter is connected to the collector.",
        _ => "",
    }
}

/// Current wall-clock time as Unix nanoseconds, the unit of every OTLP timestamp.
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_of_one_name_share_a_metric_and_sums_carry_start_time() {
        let mut b = BatchBuilder::new(20, 10);
        b.f64("a", "1", Kind::Gauge, vec![kv_int("cpu", 0)], 0.5);
        b.f64("a", "1", Kind::Gauge, vec![kv_int("cpu", 1)], 0.25);
        b.i64("c", "J", Kind::Counter, vec![], 7);
        let rm = b.finish(&[kv_str("host.name", "h")], "s");
        let metrics = &rm.scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 2);
        match &metrics[0].data {
            Some(Data::Gauge(g)) => assert_eq!(g.data_points.len(), 2),
            other => panic!("{other:?}"),
        }
        match &metrics[1].data {
            Some(Data::Sum(s)) => {
                assert!(s.is_monotonic);
                assert_eq!(s.data_points[0].start_time_unix_nano, 10);
                assert_eq!(s.data_points[0].time_unix_nano, 20);
            }
            other => panic!("{other:?}"),
        }
    }
}
