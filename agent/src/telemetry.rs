//! The agent's own telemetry and its local HTTP endpoint.
//!
//! [`Publisher`] is how the samplers hand over a batch: it goes to the outbox and, when
//! `/metrics` is enabled, replaces the last batch of the same scope in [`Latest`], which
//! `/metrics` renders in Prometheus text format next to the agent's own counters
//! (`stoker.agent.export.*`, `stoker.agent.inference.*`). `/healthz` answers `ok`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    NumberDataPoint, ResourceMetrics, metric::Data, number_data_point::Value,
};
use tokio_util::sync::CancellationToken;

use crate::export::{ExportCounters, Outbox};
use crate::inference::InferenceStats;
use crate::sample::otlp::{BatchBuilder, Kind};

/// Instrumentation scope of the agent's own telemetry.
pub const SCOPE: &str = "stoker-agent/self";

/// The last batch of each scope, for `/metrics`.
#[derive(Debug, Default)]
pub struct Latest {
    batches: Mutex<BTreeMap<String, ResourceMetrics>>,
    /// The inference room's counters, once it has started.
    inference: OnceLock<Arc<InferenceStats>>,
}

impl Latest {
    fn store(&self, batch: &ResourceMetrics) {
        let scope = batch
            .scope_metrics
            .first()
            .and_then(|s| s.scope.as_ref())
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let mut map = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(scope, batch.clone());
    }

    /// Show the inference room's counters on `/metrics` too.
    pub fn show_inference(&self, stats: Arc<InferenceStats>) {
        let _ = self.inference.set(stats);
    }

    /// Render every stored batch, and the inference room's counters, as Prometheus text
    /// exposition format: `# HELP` and `# TYPE` for every family, as `promtool check metrics`
    /// requires.
    pub fn render(&self) -> String {
        let map = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for batch in map.values() {
            for scope in &batch.scope_metrics {
                for metric in &scope.metrics {
                    let (points, kind): (&[NumberDataPoint], &str) = match &metric.data {
                        Some(Data::Gauge(g)) => (&g.data_points, "gauge"),
                        Some(Data::Sum(s)) if s.is_monotonic => (&s.data_points, "counter"),
                        Some(Data::Sum(s)) => (&s.data_points, "gauge"),
                        _ => continue,
                    };
                    let name = prometheus_name(&metric.name, &metric.unit, kind == "counter");
                    let help = if metric.description.is_empty() {
                        format!("OpenTelemetry metric {}.", metric.name)
                    } else {
                        metric.description.replace('\\', "\\\\").replace('\n', "\\n")
                    };
                    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                    for p in points {
                        let value = match p.value {
                            Some(Value::AsDouble(v)) => v,
                            Some(Value::AsInt(v)) => v as f64,
                            None => continue,
                        };
                        let _ = writeln!(out, "{name}{} {value}", labels(&p.attributes));
                    }
                }
            }
        }
        if let Some(stats) = self.inference.get() {
            stats.render_prometheus(&mut out);
        }
        out
    }
}

/// The Prometheus name of an OTLP metric, as the OpenTelemetry-to-Prometheus translation
/// spells it: dots to underscores, unit suffix, `_total` for counters.
pub fn prometheus_name(name: &str, unit: &str, counter: bool) -> String {
    let mut out: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let suffix = match unit {
        "By" => "_bytes",
        "By/s" => "_bytes_per_second",
        "W" => "_watts",
        "J" => "_joules",
        "Cel" => "_celsius",
        "MHz" => "_megahertz",
        "s" => "_seconds",
        // Only fractions get `_ratio`; states and flags with unit 1 keep their name.
        "1" if !counter && name.ends_with("utilization") => "_ratio",
        _ => "",
    };
    if !out.ends_with(suffix) {
        out.push_str(suffix);
    }
    if counter {
        out.push_str("_total");
    }
    out
}

fn labels(attrs: &[KeyValue]) -> String {
    if attrs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = attrs
        .iter()
        .map(|kv| {
            let key: String =
                kv.key.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                _ => String::new(),
            };
            let value = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{key}=\"{value}\"")
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Hands finished batches to the outbox and, when `/metrics` is served, to [`Latest`].
#[derive(Clone, Debug)]
pub struct Publisher {
    outbox: Outbox,
    latest: Option<Arc<Latest>>,
}

impl Publisher {
    /// A publisher into `outbox`, also keeping the last batches when `latest` is given.
    pub fn new(outbox: Outbox, latest: Option<Arc<Latest>>) -> Self {
        Self { outbox, latest }
    }

    /// Publish one batch.
    pub fn publish(&self, batch: ResourceMetrics) {
        if let Some(latest) = &self.latest {
            latest.store(&batch);
        }
        self.outbox.push(batch);
    }
}

/// Build the batch of the agent's own counters.
pub fn self_batch(
    now: u64,
    start: u64,
    outbox: &Outbox,
    counters: &ExportCounters,
    resource: &[KeyValue],
) -> ResourceMetrics {
    let stats = outbox.stats();
    let mut b = BatchBuilder::new(now, start);
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    b.i64(
        "stoker.agent.export.dropped",
        "{data_point}",
        Kind::Counter,
        Vec::new(),
        as_i64(stats.dropped_points),
    );
    b.i64(
        "stoker.agent.export.sent",
        "{data_point}",
        Kind::Counter,
        Vec::new(),
        as_i64(counters.sent_points.load(Ordering::Relaxed)),
    );
    b.i64(
        "stoker.agent.export.rejected",
        "{data_point}",
        Kind::Counter,
        Vec::new(),
        as_i64(counters.rejected_points.load(Ordering::Relaxed)),
    );
    b.i64(
        "stoker.agent.export.failures",
        "{request}",
        Kind::Counter,
        Vec::new(),
        as_i64(counters.failed_requests.load(Ordering::Relaxed)),
    );
    b.i64(
        "stoker.agent.export.queue.size",
        "{batch}",
        Kind::UpDown,
        Vec::new(),
        i64::try_from(stats.queued_batches).unwrap_or(i64::MAX),
    );
    b.i64(
        "stoker.agent.export.connected",
        "1",
        Kind::UpDown,
        Vec::new(),
        i64::from(counters.connected.load(Ordering::Relaxed)),
    );
    b.finish(resource, SCOPE)
}

/// Serve `/metrics` and `/healthz` on an already bound listener until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    latest: Arc<Latest>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(latest);
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn metrics(State(latest): State<Arc<Latest>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], latest.render())
}

/// Bind the `/metrics` listener; separate so the daemon can fail before starting anything.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::otlp::kv_str;

    #[test]
    fn prometheus_names_follow_the_otel_translation() {
        assert_eq!(prometheus_name("hw.power", "W", false), "hw_power_watts");
        assert_eq!(prometheus_name("hw.energy", "J", true), "hw_energy_joules_total");
        assert_eq!(prometheus_name("hw.gpu.utilization", "1", false), "hw_gpu_utilization_ratio");
        assert_eq!(prometheus_name("hw.errors", "{error}", true), "hw_errors_total");
    }

    #[test]
    fn render_shows_latest_batch_per_scope_with_labels() {
        let latest = Latest::default();
        let mut b = BatchBuilder::new(1, 0);
        b.f64("hw.power", "W", Kind::Gauge, vec![kv_str("hw.id", "GPU-\"1\"")], 1.0);
        latest.store(&b.finish(&[], "s"));
        let mut b = BatchBuilder::new(2, 0);
        b.f64("hw.power", "W", Kind::Gauge, vec![kv_str("hw.id", "GPU-\"1\"")], 2.5);
        latest.store(&b.finish(&[], "s"));
        let text = latest.render();
        assert_eq!(
            text,
            "# HELP hw_power_watts GPU power draw.\n# TYPE hw_power_watts gauge\n\
             hw_power_watts{hw_id=\"GPU-\\\"1\\\"\"} 2.5\n"
        );
    }
}
