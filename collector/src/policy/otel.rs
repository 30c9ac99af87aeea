//! Decision records as OpenTelemetry log records, sent over OTLP/gRPC to an optional endpoint.
//!
//! Each record is one `LogRecord`: body = the decision's reason, attributes = policy, rule,
//! kind, mode, action, sizes and key (`stoker.decision.*`), plus the full record as JSON in
//! `stoker.decision.json` so nothing is lost. A bounded queue feeds a background task; when it
//! is full the record is dropped and counted, never blocking the engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::engine::{Action, Decision};

/// Queue length between the engine and the exporter.
pub const QUEUE: usize = 1024;

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

/// The log record of one decision.
pub fn decision_log_record(d: &Decision) -> LogRecord {
    let mut attrs = vec![
        s("stoker.decision.policy", d.policy.clone()),
        s("stoker.decision.rule", d.rule.clone()),
        s("stoker.decision.kind", format!("{:?}", d.kind).to_lowercase()),
        s(
            "stoker.decision.mode",
            serde_json::to_value(d.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
    ];
    match &d.action {
        Action::None => attrs.push(s("stoker.decision.action", "none")),
        Action::Resize { from, to } => {
            attrs.push(s("stoker.decision.action", "resize"));
            attrs.push(kv("stoker.decision.from", any_value::Value::IntValue(i64::from(*from))));
            attrs.push(kv("stoker.decision.to", any_value::Value::IntValue(i64::from(*to))));
        }
        Action::StartJob { .. } => attrs.push(s("stoker.decision.action", "start-job")),
    }
    if let Some(k) = &d.key {
        attrs.push(s("stoker.decision.key", k.clone()));
    }
    if let Ok(json) = serde_json::to_string(d) {
        attrs.push(s("stoker.decision.json", json));
    }
    LogRecord {
        time_unix_nano: d.time,
        observed_time_unix_nano: d.time,
        severity_number: if d.action.is_some() { 9 } else { 5 }, // INFO / DEBUG
        severity_text: if d.action.is_some() { "INFO".into() } else { "DEBUG".into() },
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(d.reason.clone())) }),
        attributes: attrs,
        ..Default::default()
    }
}

/// An OTLP export request carrying `decisions`.
pub fn export_request(decisions: &[Decision]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![s("service.name", "stoker-collector")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "stoker.policy".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: decisions.iter().map(decision_log_record).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends decision records to an OTLP/gRPC endpoint in the background.
#[derive(Clone, Debug)]
pub struct DecisionExporter {
    tx: mpsc::Sender<Decision>,
    dropped: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl DecisionExporter {
    /// Starts the exporter task for `endpoint` (like `http://127.0.0.1:4317`) on `tracker`.
    /// When `shutdown` fires it sends what is queued (each batch within the export timeout)
    /// and ends, so waiting on the tracker flushes the decision log.
    pub fn spawn(endpoint: String, shutdown: CancellationToken, tracker: &TaskTracker) -> Self {
        let (tx, mut rx) = mpsc::channel::<Decision>(QUEUE);
        let failed = Arc::new(AtomicU64::new(0));
        let failed_task = failed.clone();
        tracker.spawn(async move {
            let mut client = None;
            loop {
                let first = tokio::select! {
                    _ = shutdown.cancelled() => None,
                    d = rx.recv() => match d { Some(d) => Some(d), None => break },
                };
                let stopping = first.is_none();
                let mut batch: Vec<Decision> = first.into_iter().collect();
                while batch.len() < 256 {
                    match rx.try_recv() {
                        Ok(d) => batch.push(d),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    break;
                }
                if client.is_none() {
                    let connect = LogsServiceClient::connect(endpoint.clone());
                    match tokio::time::timeout(Duration::from_secs(10), connect).await {
                        Ok(Ok(c)) => client = Some(c),
                        Ok(Err(e)) => {
                            failed_task.fetch_add(batch.len() as u64, Ordering::Relaxed);
                            warn!(endpoint = %endpoint, error = %e, "Cannot reach the OTLP endpoint for decision logs.");
                            if stopping {
                                break;
                            }
                            continue;
                        }
                        Err(_) => {
                            failed_task.fetch_add(batch.len() as u64, Ordering::Relaxed);
                            warn!(endpoint = %endpoint, "Connecting to the OTLP endpoint for decision logs timed out.");
                            if stopping {
                                break;
                            }
                            continue;
                        }
                    }
                }
                if let Some(c) = client.as_mut() {
                    let req = export_request(&batch);
                    let res = tokio::time::timeout(Duration::from_secs(10), c.export(req)).await;
                    if !matches!(res, Ok(Ok(_))) {
                        failed_task.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        warn!(endpoint = %endpoint, "Decision log export failed.");
                        client = None;
                        if stopping {
                            break;
                        }
                    }
                }
            }
        });
        Self { tx, dropped: Arc::new(AtomicU64::new(0)), failed }
    }

    /// Queues a record; drops and counts it when the queue is full.
    pub fn offer(&self, d: Decision) {
        if self.tx.try_send(d).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records that failed to export.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}
