//! OpenTelemetry instrumentation of the service, written the way the top README tells users to
//! instrument theirs: an OTLP/gRPC metric exporter to `OTEL_EXPORTER_OTLP_ENDPOINT` (the local
//! Stoker agent by default), a periodic reader, and the instruments of Stoker's vocabulary.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use crate::error::{CnnError, Result};

/// Where metrics go when `OTEL_EXPORTER_OTLP_ENDPOINT` is unset: the local agent's receiver.
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://127.0.0.1:4317";
/// Export interval when `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds) is unset: 1 s, so the
/// demo's control loop sees changes quickly (the OTel default is 60 s).
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Bucket boundaries in seconds for the latency histograms: fine around the 10–500 ms range
/// a small model's latency and queueing live in, coarse beyond.
pub const LATENCY_BUCKETS: [f64; 25] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2, 0.25,
    0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
];

/// Bucket boundaries for top-1 confidence: 0.05 steps, 0.05 … 1.0.
pub fn confidence_buckets() -> Vec<f64> {
    (1..=20).map(|i| f64::from(i) / 20.0).collect()
}

/// Exporter settings, normally from the standard OTel environment variables.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// gRPC endpoint of the OTLP receiver.
    pub endpoint: String,
    /// How often metrics are exported.
    pub interval: Duration,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// `service.instance.id` resource attribute (the replica's listen address).
    pub instance_id: String,
}

impl OtlpSettings {
    /// Settings from `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_METRIC_EXPORT_INTERVAL` (ms) and
    /// `OTEL_SERVICE_NAME`, falling back to the agent's address, 1 s and `default_service`.
    pub fn from_env(default_service: &str, instance_id: &str) -> Result<Self> {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_OTLP_ENDPOINT.to_string());
        let interval = match std::env::var("OTEL_METRIC_EXPORT_INTERVAL") {
            Ok(ms) => ms
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| CnnError::InvalidInput(format!("OTEL_METRIC_EXPORT_INTERVAL={ms:?} is not a positive number of milliseconds")))?,
            Err(_) => DEFAULT_EXPORT_INTERVAL,
        };
        let service_name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| default_service.to_string());
        Ok(Self { endpoint, interval, service_name, instance_id: instance_id.to_string() })
    }
}

/// Builds the meter provider exporting over OTLP/gRPC. Must run inside a tokio runtime (the
/// tonic channel's worker is spawned there). Call `shutdown()` on it last, to flush.
pub fn otlp_meter_provider(settings: &OtlpSettings) -> Result<SdkMeterProvider> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(settings.endpoint.clone())
        .with_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| {
            CnnError::Telemetry(format!("build OTLP exporter for {}: {e}", settings.endpoint))
        })?;
    let reader = PeriodicReader::builder(exporter).with_interval(settings.interval).build();
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.instance.id", settings.instance_id.clone()))
        .build();
    Ok(SdkMeterProvider::builder().with_reader(reader).with_resource(resource).build())
}

/// The service's instruments.
#[derive(Debug, Clone)]
pub struct InferenceMetrics {
    request_duration: Histogram<f64>,
    queue_duration: Histogram<f64>,
    compute_duration: Histogram<f64>,
    confidence: Histogram<f64>,
    batch_size: Histogram<u64>,
    class: Counter<u64>,
    requests: Counter<u64>,
    feedback: Counter<u64>,
}

/// How a request ended, the `outcome` attribute of `inference.requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with predictions.
    Ok,
    /// Turned away because the queue was full (503).
    Rejected,
    /// Malformed request (400).
    Invalid,
    /// No model loaded yet (503).
    Unavailable,
    /// The model failed (500).
    Error,
}

impl Outcome {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Invalid => "invalid",
            Outcome::Unavailable => "unavailable",
            Outcome::Error => "error",
        }
    }
}

/// `model.name` and `model.version` for one recording.
pub fn model_attributes(model_name: &str, version: Option<u32>) -> [KeyValue; 2] {
    [
        KeyValue::new("model.name", model_name.to_string()),
        KeyValue::new(
            "model.version",
            version.map_or_else(|| "none".to_string(), |v| v.to_string()),
        ),
    ]
}

impl InferenceMetrics {
    /// The instruments from a provider (meter scope `stoker-example-cnn`).
    pub fn new(provider: &impl opentelemetry::metrics::MeterProvider) -> Self {
        Self::from_meter(&provider.meter("stoker-example-cnn"))
    }

    /// The instruments from a meter.
    pub fn from_meter(meter: &Meter) -> Self {
        let latency = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build()
        };
        Self {
            request_duration: latency(
                "inference.request.duration",
                "Time from request arrival to response, queueing included.",
            ),
            queue_duration: latency(
                "inference.queue.duration",
                "Time a request waited in the replica's queue.",
            ),
            compute_duration: latency(
                "inference.compute.duration",
                "Time of the model's forward pass.",
            ),
            confidence: meter
                .f64_histogram("inference.prediction.confidence")
                .with_unit("1")
                .with_description("Top-1 class probability of each prediction.")
                .with_boundaries(confidence_buckets())
                .build(),
            batch_size: meter
                .u64_histogram("inference.batch.size")
                .with_unit("{image}")
                .with_description("Images per inference request.")
                .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
                .build(),
            class: meter
                .u64_counter("inference.prediction.class")
                .with_unit("{prediction}")
                .with_description("Predictions per predicted class.")
                .build(),
            requests: meter
                .u64_counter("inference.requests")
                .with_unit("{request}")
                .with_description("Inference requests by outcome.")
                .build(),
            feedback: meter
                .u64_counter("inference.feedback")
                .with_unit("{prediction}")
                .with_description("Predictions whose true label was supplied, by correctness.")
                .build(),
        }
    }

    /// Records one finished request: its outcome and total duration.
    pub fn request(&self, attrs: &[KeyValue; 2], outcome: Outcome, duration: Duration) {
        let mut with_outcome = attrs.to_vec();
        with_outcome.push(KeyValue::new("outcome", outcome.as_str()));
        self.requests.add(1, &with_outcome);
        self.request_duration.record(duration.as_secs_f64(), attrs);
    }

    /// Records queueing, compute time and batch size of a served request.
    pub fn served(&self, attrs: &[KeyValue; 2], queue: Duration, compute: Duration, batch: usize) {
        self.queue_duration.record(queue.as_secs_f64(), attrs);
        self.compute_duration.record(compute.as_secs_f64(), attrs);
        self.batch_size.record(batch as u64, attrs);
    }

    /// Records one prediction; `correct` when the caller supplied the true label.
    pub fn prediction(
        &self,
        attrs: &[KeyValue; 2],
        class: usize,
        confidence: f32,
        correct: Option<bool>,
    ) {
        self.confidence.record(f64::from(confidence), attrs);
        let mut with_class = attrs.to_vec();
        with_class.push(KeyValue::new("class", class.to_string()));
        self.class.add(1, &with_class);
        if let Some(correct) = correct {
            let mut with_correct = attrs.to_vec();
            with_correct.push(KeyValue::new("correct", correct.to_string()));
            self.feedback.add(1, &with_correct);
        }
    }
}
