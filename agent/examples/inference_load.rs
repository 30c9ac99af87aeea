//! Load benchmark of the inference room (run by `bench/inference-load.sh`).
//!
//! `inference_load agent` runs the room alone (receivers on loopback, ports chosen by the OS,
//! the outbox drained every second as the exporter would) and prints `READY <grpc> <http>`.
//! `inference_load load <pid> <grpc>` plays inference services against it, from another process
//! so the agent's CPU and RSS are its own:
//!
//! 1. idle baseline, then 1,000 requests/s for 10 s: 4 services, each exporting 25 server spans
//!    every 100 ms and its cumulative metrics (latency and confidence histograms, class and
//!    feedback counters) every second, as SDK batch exporters do; prints the agent's CPU % of
//!    one core and RSS growth;
//! 2. a ramp of span rates (batches of 512 spans, the SDKs' default batch), 3 s per step, printing the
//!    rate achieved and the requests refused with RESOURCE_EXHAUSTED, and the first rate at
//!    which the agent sheds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind};
use stoker_agent::export::Outbox;
use stoker_agent::inference::{InferenceConfig, InferenceContext, start};

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("agent") => agent().await,
        Some("load") => {
            let pid: u32 = args.get(2).ok_or_else(|| anyhow::anyhow!("pid"))?.parse()?;
            let grpc = args.get(3).ok_or_else(|| anyhow::anyhow!("grpc address"))?.clone();
            load(pid, &grpc).await
        }
        _ => anyhow::bail!("usage: inference_load agent | load <agent pid> <grpc addr>"),
    }
}

async fn agent() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = InferenceConfig::default();
    cfg.receiver.grpc_listen = "127.0.0.1:0".parse()?;
    cfg.receiver.http_listen = "127.0.0.1:0".parse()?;
    let outbox = Outbox::new(1024);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let handle = start(
        &cfg,
        InferenceContext {
            outbox: outbox.clone(),
            node_resource: vec![kv("host.name", "bench-node")],
            interval: Duration::from_secs(1),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            otlp_grpc_listen: None,
            otlp_http_listen: None,
        },
    )?;
    println!("READY {} {}", handle.grpc_addr, handle.http_addr);
    // Stand-in for the exporter: take what the room produces every second.
    let drained = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(outbox.drain(usize::MAX));
        }
    });
    tokio::signal::ctrl_c().await?;
    drained.abort();
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    let s = handle.stats.snapshot();
    println!(
        "agent stats: spans received {} shed {}, points received {} shed {}, requests refused {}",
        s.spans_received, s.spans_shed, s.points_received, s.points_shed, s.requests_refused
    );
    Ok(())
}

/// CPU ticks (user + system) and RSS in KiB of a process, from /proc.
fn proc_usage(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((ticks, rss))
}

/// The clock-tick rate of /proc/<pid>/stat (USER_HZ): 100 on Linux unless told otherwise.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn spans_request(service: &str, n: usize, model: &str) -> ExportTraceServiceRequest {
    let now = now_nanos();
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![i as u8; 16],
            span_id: vec![i as u8; 8],
            name: "POST /v2/models/infer".into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 2_000_000 + (i as u64 % 40) * 1_000_000,
            attributes: vec![
                kv("model.name", model),
                kv("model.version", "3"),
                kv("http.route", "/v2/models/{name}/infer"),
                kv("http.request.method", "POST"),
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", service),
                    kv("telemetry.sdk.language", "python"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn metrics_request(service: &str, start: u64, tick: u64) -> ExportMetricsServiceRequest {
    let model = vec![kv("model.name", "resnet"), kv("model.version", "3")];
    let hist = |name: &str, bounds: Vec<f64>| Metric {
        name: name.into(),
        unit: "s".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: model.clone(),
                start_time_unix_nano: start,
                time_unix_nano: now_nanos(),
                count: 250 * tick * (bounds.len() as u64 + 1),
                sum: Some(10.0 * tick as f64),
                bucket_counts: vec![250 * tick; bounds.len() + 1],
                explicit_bounds: bounds,
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    };
    let counter = |name: &str, key: &str, values: &[&str]| Metric {
        name: name.into(),
        unit: "1".into(),
        data: Some(Data::Sum(Sum {
            data_points: values
                .iter()
                .map(|v| {
                    let mut attrs = model.clone();
                    attrs.push(kv(key, v));
                    NumberDataPoint {
                        attributes: attrs,
                        start_time_unix_nano: start,
                        time_unix_nano: now_nanos(),
                        value: Some(number_data_point::Value::AsInt(25 * tick as i64)),
                        ..Default::default()
                    }
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    hist(
                        "inference.request.duration",
                        vec![
                            0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
                            0.1, 0.2, 0.5, 1.0,
                        ],
                    ),
                    hist(
                        "inference.prediction.confidence",
                        vec![0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99],
                    ),
                    counter(
                        "inference.prediction.class",
                        "class",
                        &[
                            "cat", "dog", "car", "ship", "plane", "bird", "deer", "frog", "horse",
                            "truck",
                        ],
                    ),
                    counter("inference.feedback", "correct", &["true", "false"]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn load(pid: u32, grpc: &str) -> anyhow::Result<()> {
    let hz = clock_ticks();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?.connect().await?;

    // Idle baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (t0, rss0) = proc_usage(pid)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (t1, rss_idle) = proc_usage(pid)?;
    let idle_cpu = (t1 - t0) as f64 / hz / 5.0 * 100.0;
    println!("idle: agent CPU {idle_cpu:.2} % of one core, RSS {rss0} KiB -> {rss_idle} KiB");

    // Phase 1: 1,000 requests/s from 4 services for 10 s.
    let seconds = 10u64;
    let refused = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let (t2, _) = proc_usage(pid)?;
    let mut workers = Vec::new();
    for s in 0..4 {
        let channel = channel.clone();
        let refused = Arc::clone(&refused);
        let sent = Arc::clone(&sent);
        workers.push(tokio::spawn(async move {
            let service = format!("cnn-{s}");
            let mut traces = TraceServiceClient::new(channel.clone());
            let mut metrics = MetricsServiceClient::new(channel);
            let start = now_nanos();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for i in 0..seconds * 10 {
                tick.tick().await;
                match traces.export(spans_request(&service, 25, "resnet")).await {
                    Ok(_) => sent.fetch_add(25, Ordering::Relaxed),
                    Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                };
                if i % 10 == 9
                    && metrics.export(metrics_request(&service, start, i / 10 + 1)).await.is_err()
                {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let (t3, rss_load) = proc_usage(pid)?;
    let cpu = (t3 - t2) as f64 / hz / seconds as f64 * 100.0;
    println!(
        "1000 req/s for {seconds} s: {} spans accepted, {} requests refused; agent CPU {cpu:.2} % of one core; RSS {rss_idle} KiB -> {rss_load} KiB (+{:.2} MiB over idle, +{:.2} MiB over start)",
        sent.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        (rss_load as f64 - rss_idle as f64) / 1024.0,
        (rss_load as f64 - rss0 as f64) / 1024.0,
    );

    // Phase 2: ramp the span rate until the agent sheds.
    // 512 spans a request: the SDKs' default max_export_batch_size.
    let batch = 512usize;
    let mut shed_at = None;
    for rate in [25_000u64, 50_000, 100_000, 200_000, 400_000, 800_000] {
        let refused = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let step = Duration::from_secs(3);
        // Enough requests in flight that the agent, not the generator's round trips, limits.
        let n_workers = 64u64;
        let per_worker_interval =
            Duration::from_secs_f64(n_workers as f64 * batch as f64 / rate as f64);
        let (c0, _) = proc_usage(pid)?;
        let begun = tokio::time::Instant::now();
        let mut workers = Vec::new();
        for w in 0..n_workers {
            let mut traces = TraceServiceClient::new(channel.clone());
            let request = spans_request(&format!("cnn-{}", w % 4), batch, "resnet");
            let refused = Arc::clone(&refused);
            let accepted = Arc::clone(&accepted);
            workers.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(per_worker_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                while begun.elapsed() < step {
                    tick.tick().await;
                    match traces.export(request.clone()).await {
                        Ok(_) => accepted.fetch_add(batch as u64, Ordering::Relaxed),
                        Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for w in workers {
            w.await?;
        }
        let elapsed = begun.elapsed().as_secs_f64();
        let (c1, rss) = proc_usage(pid)?;
        let achieved = accepted.load(Ordering::Relaxed) as f64 / elapsed;
        let refused_n = refused.load(Ordering::Relaxed);
        println!(
            "offered {rate:>7} spans/s: accepted {achieved:>9.0} spans/s, refused {refused_n:>6} requests (RESOURCE_EXHAUSTED), agent CPU {:.0} % of one core, RSS {rss} KiB",
            (c1 - c0) as f64 / hz / elapsed * 100.0
        );
        if refused_n > 0 && shed_at.is_none() {
            shed_at = Some((rate, achieved));
        }
    }
    match shed_at {
        Some((rate, achieved)) => println!(
            "shedding starts at an offered {rate} spans/s (accepted {achieved:.0} spans/s at that step)"
        ),
        None => println!("no shedding up to the highest rate this load generator reached"),
    }
    Ok(())
}
