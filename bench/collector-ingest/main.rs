//! Collector ingest benchmark: simulates N agents (default 1,000 nodes × 8 GPUs, the agent's
//! GPU, host and inference series) sending OTLP/HTTP protobuf to a real `stoker-collector`
//! process, at 1 Hz and flat out; pushes the same points to a real Prometheus via remote-write
//! (snappy + protobuf) in the same run; and times "p95 over 5 min of one service across all
//! nodes" on both. Prints points/s, CPU and RSS of each server.
//!
//! With VictoriaMetrics installed (`--victoria-metrics BIN`, else `victoria-metrics` on `PATH`
//! or `/usr/bin/victoria-metrics`; `--vm-flat-secs 0` skips it), the same load also goes to a
//! second collector in remote mode (`[store] backend = "remote"`) remote-writing to a
//! VictoriaMetrics started here on loopback, and straight to another VictoriaMetrics by the
//! bench's own remote-write: points/s the collector accepted and points/s that landed in
//! VictoriaMetrics (`stoker_remote_write_samples_sent_total`), CPU and RSS of the collector and
//! of VictoriaMetrics, the send queue's bytes; then the 5-minute p95 over the same data through
//! the embedded collector's API, the remote collector's API (PromQL underneath) and
//! VictoriaMetrics' own PromQL.
//!
//! Run through `bench/collector-ingest/run.sh`, which builds in release mode and installs
//! Prometheus if missing.

// A benchmark measures the real clocks.
#![allow(clippy::disallowed_methods)]

// The collector binary's allocator, so in-process figures match what `serve` does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use stoker_tests::{installed_bin, victoria_command};

const TS_SENTINEL: u64 = 0x5a5a_1234_5678_9abc;
const VAL_SENTINEL: f64 = 123_456.789_012_345;
/// A millisecond timestamp whose varint has the same length (6 bytes) as any current one.
const PROM_TS_SENTINEL: i64 = 1_777_777_777_777;
/// Runs of the 5-minute p95 query per store.
const QUERY_RUNS: usize = 100;

fn p50_p95(mut t: Vec<Duration>) -> (f64, f64) {
    t.sort();
    let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (at(0.5), at(0.95))
}

const BOUNDS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

struct Args {
    nodes: usize,
    gpus: usize,
    rate_secs: u64,
    flat_secs: u64,
    prom_flat_secs: u64,
    nodes_per_request: usize,
    workers: usize,
    collector_bin: String,
    prometheus_bin: String,
    /// VictoriaMetrics binary; `None` skips the remote-store runs.
    vm_bin: Option<String>,
    /// Seconds of flat-out data for the remote-mode collector and for VictoriaMetrics direct.
    vm_flat_secs: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        nodes: 1000,
        gpus: 8,
        rate_secs: 20,
        flat_secs: 300,
        prom_flat_secs: 60,
        nodes_per_request: 10,
        workers: 8,
        collector_bin: "target/release/stoker-collector".into(),
        prometheus_bin: "prometheus".into(),
        vm_bin: installed_bin("victoria-metrics"),
        vm_flat_secs: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--nodes" => a.nodes = v.parse().unwrap_or(a.nodes),
            "--gpus" => a.gpus = v.parse().unwrap_or(a.gpus),
            "--rate-secs" => a.rate_secs = v.parse().unwrap_or(a.rate_secs),
            "--flat-secs" => a.flat_secs = v.parse().unwrap_or(a.flat_secs),
            "--prom-flat-secs" => a.prom_flat_secs = v.parse().unwrap_or(a.prom_flat_secs),
            "--nodes-per-request" => a.nodes_per_request = v.parse().unwrap_or(a.nodes_per_request),
            "--workers" => a.workers = v.parse().unwrap_or(a.workers),
            "--collector-bin" => a.collector_bin = v,
            "--prometheus-bin" => a.prometheus_bin = v,
            "--victoria-metrics" => a.vm_bin = Some(v),
            "--vm-flat-secs" => a.vm_flat_secs = v.parse().unwrap_or(a.vm_flat_secs),
            other => {
                eprintln!("unknown flag {other}");
                std::process::exit(64);
            }
        }
    }
    a
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn gauge(name: &str, attrs: Vec<KeyValue>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: attrs,
                time_unix_nano: TS_SENTINEL,
                value: Some(number_data_point::Value::AsDouble(VAL_SENTINEL)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }
}

fn counter(name: &str, attrs: Vec<KeyValue>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: attrs,
                start_time_unix_nano: 1,
                time_unix_nano: TS_SENTINEL,
                value: Some(number_data_point::Value::AsDouble(VAL_SENTINEL)),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn histogram(name: &str, attrs: Vec<KeyValue>) -> Metric {
    let counts = vec![40, 30, 15, 8, 4, 2, 1, 0, 0];
    Metric {
        name: name.into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: attrs,
                start_time_unix_nano: 1,
                time_unix_nano: TS_SENTINEL,
                count: counts.iter().sum(),
                sum: Some(VAL_SENTINEL),
                bucket_counts: counts,
                explicit_bounds: BOUNDS.to_vec(),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    }
}

/// The agent's series for one node, as OTLP metrics (one point each).
fn node_metrics(node: usize, gpus: usize) -> (Vec<KeyValue>, Vec<Metric>) {
    let res = vec![
        kv("host.name", &format!("node-{node:04}")),
        kv("host.id", &format!("id-{node:04}")),
        kv("cloud.region", "eu-west-1"),
        kv("pool", "inference"),
    ];
    let mut m = Vec::new();
    for g in 0..gpus {
        let gpu = |extra: Vec<KeyValue>| {
            let mut a =
                vec![kv("hw.id", &format!("GPU-{node:04}-{g}")), kv("hw.model", "NVIDIA A10G")];
            a.extend(extra);
            a
        };
        for task in ["general", "encoder", "decoder"] {
            m.push(gauge("hw.gpu.utilization", gpu(vec![kv("hw.gpu.task", task)])));
        }
        for name in [
            "hw.gpu.memory.usage",
            "hw.gpu.memory.limit",
            "gpu.memory_controller.utilization",
            "hw.power",
            "hw.temperature",
            "gpu.clock.sm",
            "gpu.throttle.reasons",
            "hw.status",
        ] {
            m.push(gauge(name, gpu(vec![])));
        }
        m.push(counter("hw.energy", gpu(vec![])));
        m.push(counter("hw.errors", gpu(vec![kv("error.type", "ecc")])));
    }
    for name in [
        "system.cpu.utilization",
        "system.memory.usage",
        "process.cpu.utilization",
        "process.memory.usage",
    ] {
        m.push(gauge(name, vec![]));
    }
    for svc in ["resnet", "bert"] {
        let inf = |extra: Vec<KeyValue>| {
            let mut a =
                vec![kv("service.name", svc), kv("model.name", svc), kv("model.version", "7")];
            a.extend(extra);
            a
        };
        m.push(histogram("inference.request.duration", inf(vec![])));
        m.push(histogram("inference.queue.duration", inf(vec![])));
        m.push(histogram("inference.compute.duration", inf(vec![])));
        m.push(counter("inference.requests", inf(vec![kv("outcome", "ok")])));
    }
    (res, m)
}

/// A request template: encoded bytes plus the offsets of timestamp and value sentinels.
struct Template {
    bytes: Vec<u8>,
    ts_offsets: Vec<usize>,
    val_offsets: Vec<usize>,
    points: u64,
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect()
}

fn otlp_template(first_node: usize, nodes: usize, gpus: usize) -> Template {
    let mut req = ExportMetricsServiceRequest::default();
    let mut points = 0;
    for n in first_node..first_node + nodes {
        let (res, metrics) = node_metrics(n, gpus);
        points += metrics.len() as u64;
        req.resource_metrics.push(ResourceMetrics {
            resource: Some(Resource { attributes: res, ..Default::default() }),
            scope_metrics: vec![ScopeMetrics { metrics, ..Default::default() }],
            ..Default::default()
        });
    }
    let bytes = req.encode_to_vec();
    let ts_offsets = find_all(&bytes, &TS_SENTINEL.to_le_bytes());
    let val_offsets = find_all(&bytes, &VAL_SENTINEL.to_bits().to_le_bytes());
    Template { bytes, ts_offsets, val_offsets, points }
}

fn instantiate(t: &Template, ts: u64, v: f64) -> Vec<u8> {
    let mut b = t.bytes.clone();
    for o in &t.ts_offsets {
        b[*o..*o + 8].copy_from_slice(&ts.to_le_bytes());
    }
    for o in &t.val_offsets {
        b[*o..*o + 8].copy_from_slice(&v.to_bits().to_le_bytes());
    }
    b
}

// ---- Prometheus remote-write (prost types defined here) ----

#[derive(Clone, PartialEq, prost::Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

fn prom_name(s: &str) -> String {
    s.replace('.', "_")
}

/// The same points as Prometheus series (classic histograms: buckets + sum + count), for
/// `nodes` nodes at timestamp `ts_ms`; returns (samples, OTLP points they represent).
fn prom_request(
    first_node: usize,
    nodes: usize,
    gpus: usize,
    ts_ms: i64,
    v: f64,
) -> (WriteRequest, u64, u64) {
    let mut wr = WriteRequest::default();
    let mut otlp_points = 0;
    for n in first_node..first_node + nodes {
        let (res, metrics) = node_metrics(n, gpus);
        for m in metrics {
            otlp_points += 1;
            let (attrs, kind) = match &m.data {
                Some(metric::Data::Gauge(g)) => (g.data_points[0].attributes.clone(), 0),
                Some(metric::Data::Sum(s)) => (s.data_points[0].attributes.clone(), 1),
                Some(metric::Data::Histogram(h)) => (h.data_points[0].attributes.clone(), 2),
                _ => continue,
            };
            let mut labels: Vec<Label> = res
                .iter()
                .chain(attrs.iter())
                .map(|kv| Label {
                    name: prom_name(&kv.key),
                    value: match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        _ => String::new(),
                    },
                })
                .collect();
            let base = prom_name(&m.name);
            let mut push = |name: String, extra: Option<(&str, String)>, value: f64| {
                let mut l = labels.clone();
                l.push(Label { name: "__name__".into(), value: name });
                if let Some((k, v)) = extra {
                    l.push(Label { name: k.into(), value: v });
                }
                l.sort_by(|a, b| a.name.cmp(&b.name));
                wr.timeseries.push(TimeSeries {
                    labels: l,
                    samples: vec![Sample { value, timestamp: ts_ms }],
                });
            };
            match kind {
                0 => push(base, None, v),
                1 => push(format!("{base}_total"), None, v),
                _ => {
                    let mut cum = 0.0;
                    for (i, c) in
                        [40.0, 30.0, 15.0, 8.0, 4.0, 2.0, 1.0, 0.0, 0.0].iter().enumerate()
                    {
                        cum += c;
                        let le =
                            BOUNDS.get(i).map(|b| b.to_string()).unwrap_or_else(|| "+Inf".into());
                        let _ = cum;
                        push(format!("{base}_bucket"), Some(("le", le)), v);
                    }
                    push(format!("{base}_sum"), None, v);
                    push(format!("{base}_count"), None, v);
                }
            }
            labels.clear();
        }
    }
    let samples = wr.timeseries.len() as u64;
    (wr, samples, otlp_points)
}

// ---- process measurements ----

fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn proc_rss_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

struct Server {
    child: Child,
    name: &'static str,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_collector(
    bin: &str,
    dir: &std::path::Path,
    config: Option<&std::path::Path>,
) -> (Server, String, String) {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--data-dir"]).arg(dir);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--otlp-grpc-listen",
            "127.0.0.1:0",
            "--otlp-http-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("start {bin}: {e} (build it: cargo build --release -p stoker-collector)")
        });
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let (api, http) = (field("api="), field("otlp_http="));
    (Server { child, name: "stoker-collector" }, api, http)
}

fn start_prometheus(bin: &str, dir: &std::path::Path) -> Option<(Server, String)> {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").ok()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--log.level=error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((Server { child, name: "prometheus" }, addr))
}

/// VictoriaMetrics single-node on a loopback port, its caches off and no latency offset (as
/// `collector/tests/integration/remote.rs` runs it, [`stoker_tests::victoria_command`]), so a
/// sample is queryable once flushed.
fn start_victoria(bin: &str, dir: &std::path::Path) -> Option<(Server, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = victoria_command(bin, dir, port).spawn().ok()?;
    Some((Server { child, name: "victoria-metrics" }, format!("http://127.0.0.1:{port}")))
}

/// The value of `name` (no labels) on the collector's `/metrics`.
async fn collector_metric(c: &reqwest::Client, api: &str, name: &str) -> Option<f64> {
    let text = c.get(format!("http://{api}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// The remote-write figures of a remote-mode collector's `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
struct QueueFigures {
    queued: f64,
    sent: f64,
    dropped: f64,
    bytes: f64,
    requests: f64,
}

async fn queue_figures(c: &reqwest::Client, api: &str) -> QueueFigures {
    let text = match c.get(format!("http://{api}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let m = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    QueueFigures {
        queued: m("stoker_remote_write_samples_queued_total"),
        sent: m("stoker_remote_write_samples_sent_total"),
        dropped: m("stoker_remote_write_samples_dropped_total"),
        bytes: m("stoker_remote_write_queue_bytes"),
        requests: m("stoker_remote_write_queue_requests"),
    }
}

/// Waits (up to `limit`) until everything queued was sent or dropped and the queue is empty.
async fn drain(c: &reqwest::Client, api: &str, limit: Duration) -> (QueueFigures, bool) {
    let until = Instant::now() + limit;
    loop {
        let q = queue_figures(c, api).await;
        if q.sent + q.dropped >= q.queued && q.requests == 0.0 {
            return (q, true);
        }
        if Instant::now() >= until {
            return (q, false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the queue's bytes every 250 ms until `stop` is set; returns the most seen.
fn watch_queue_bytes(
    c: &reqwest::Client,
    api: &str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<f64> {
    let (c, api) = (c.clone(), api.to_string());
    tokio::spawn(async move {
        let mut most = 0.0f64;
        while !stop.load(Ordering::Relaxed) {
            if let Some(b) = collector_metric(&c, &api, "stoker_remote_write_queue_bytes").await {
                most = most.max(b);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        most
    })
}

/// Times `QUERY_RUNS` GETs of `url` with `query`: (median ms, p95 ms, the last answer's start).
async fn time_query(c: &reqwest::Client, url: &str, query: &[(&str, &str)]) -> (f64, f64, String) {
    let mut times = Vec::new();
    let mut answer = String::new();
    for _ in 0..QUERY_RUNS {
        let t = Instant::now();
        let body = match c.get(url).query(query).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        times.push(t.elapsed());
        answer = body;
    }
    let (p50, p95) = p50_p95(times);
    (p50, p95, answer.chars().take(160).collect())
}

async fn wait_ready(c: &reqwest::Client, url: &str) -> bool {
    for _ in 0..200 {
        if c.get(url).send().await.map(|r| r.status().is_success()).unwrap_or(false) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

struct Report {
    points: u64,
    secs: f64,
    cpu: f64,
    errors: u64,
}

/// Sends `jobs` (a generator of bodies) with `workers` concurrent connections.
#[allow(clippy::too_many_arguments)] // a benchmark driver: each argument is one of its knobs
async fn drive<F>(
    c: &reqwest::Client,
    url: &str,
    ct: &'static str,
    snappy: bool,
    pid: u32,
    jobs: Vec<(u64, u64)>,
    workers: usize,
    pace: Option<Duration>,
    make: Arc<F>,
) -> Report
where
    F: Fn(u64, u64) -> (Vec<u8>, u64) + Send + Sync + 'static,
{
    let cpu0 = proc_cpu_secs(pid);
    let started = Instant::now();
    let points = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Each worker owns a fixed set of chunks (as an agent owns its node) and sends them in time
    // order, so no series ever sees its points out of order.
    let mut per_worker: Vec<Vec<(u64, u64)>> = vec![Vec::new(); workers];
    for (sec, chunk) in jobs {
        per_worker[chunk as usize % workers].push((sec, chunk));
    }
    let mut handles = Vec::new();
    for mine in per_worker {
        let (c, url, points, errors, make) =
            (c.clone(), url.to_string(), points.clone(), errors.clone(), make.clone());
        handles.push(tokio::spawn(async move {
            for (sec, chunk) in mine {
                if let Some(p) = pace {
                    let due = started + p * sec as u32;
                    tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                }
                let (body, n) = (*make)(sec, chunk);
                let mut req = c.post(&url).header("content-type", ct);
                if snappy {
                    req = req
                        .header("content-encoding", "snappy")
                        .header("x-prometheus-remote-write-version", "0.1.0");
                }
                match req.body(body).send().await {
                    Ok(r) if r.status().is_success() => {
                        // OTLP partial success: count only what was stored.
                        let rejected = if snappy {
                            0
                        } else {
                            r.bytes()
                                .await
                                .ok()
                                .and_then(|b| ExportMetricsServiceResponse::decode(b.as_ref()).ok())
                                .and_then(|x| x.partial_success)
                                .map(|p| p.rejected_data_points as u64)
                                .unwrap_or(0)
                        };
                        points.fetch_add(n - rejected.min(n), Ordering::Relaxed);
                        if rejected > 0 {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(r) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!(
                                "  {url}: {} {}",
                                r.status(),
                                r.text()
                                    .await
                                    .unwrap_or_default()
                                    .chars()
                                    .take(200)
                                    .collect::<String>()
                            );
                        }
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("  {url}: {e}");
                        }
                    }
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let secs = started.elapsed().as_secs_f64();
    Report {
        points: points.load(Ordering::Relaxed),
        secs,
        cpu: proc_cpu_secs(pid) - cpu0,
        errors: errors.load(Ordering::Relaxed),
    }
}

fn print_report(what: &str, who: &str, r: &Report, pid: u32, unit: &str) {
    println!(
        "{what:<28} {who:<17} {:>12.0} {unit}/s  ({} in {:.1} s)  CPU {:>5.1}% of a core  RSS {:>7.1} MiB (peak {:.1})  errors {}",
        r.points as f64 / r.secs,
        r.points,
        r.secs,
        100.0 * r.cpu / r.secs,
        proc_rss_mib(pid, "VmRSS:"),
        proc_rss_mib(pid, "VmHWM:"),
        r.errors
    );
}

/// The store's own capacity without HTTP or a load generator competing for the cores: decode
/// pre-encoded OTLP bodies and write them on one thread; then time policy-style instant
/// queries on the same store.
fn inprocess(
    templates: &[Template],
    chunks: u64,
    ts_of: &dyn Fn(u64) -> u64,
    nodes: usize,
    dir: &std::path::Path,
) {
    use stoker_collector::query::{Matcher, Query, Selector, Stat};
    use stoker_collector::store::{Store, StoreConfig};
    let secs = 60u64;
    println!("\n== in process, one thread: decode + store {secs} s of fleet data (no HTTP) ==");
    let cfg = StoreConfig { data_dir: Some(dir.join("inprocess")), ..StoreConfig::default() };
    let Ok(store) = Store::open(cfg, Arc::new(stoker_collector::clock::SystemClock)) else {
        println!("cannot open an in-process store");
        return;
    };
    let bodies: Vec<Vec<u8>> = (0..secs)
        .flat_map(|s| (0..chunks).map(move |c| (s, c)))
        .map(|(s, c)| instantiate(&templates[c as usize], ts_of(s), 0.5 + (s % 50) as f64 / 100.0))
        .collect();
    let started = Instant::now();
    let mut points = 0u64;
    for (i, b) in bodies.iter().enumerate() {
        let Ok(req) = ExportMetricsServiceRequest::decode(b.as_slice()) else { continue };
        points += stoker_collector::ingest::otlp::export(&store, &req).accepted;
        if i % 200 == 0 {
            let _ = store.commit();
        }
    }
    let _ = store.commit();
    let secs_taken = started.elapsed().as_secs_f64();
    println!(
        "decode + store (1 core)      {:>12.0} points/s  ({points} in {secs_taken:.1} s, log commits included)",
        points as f64 / secs_taken
    );
    let now = ts_of(secs - 1);
    let time = |label: &str, q: &Query, n: usize| {
        let t = Instant::now();
        let mut groups = 0;
        for _ in 0..n {
            groups = store.instant(q, now).map(|g| g.len()).unwrap_or(0);
        }
        println!(
            "{label:<60} {:>8.1} µs/query  ({groups} groups)",
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    };
    let node = "node-0042";
    time(
        "mean 60s hw.gpu.utilization of one node (24 series)",
        &Query::new(
            Selector::new("hw.gpu.utilization").with(Matcher::eq("host.name", node)),
            Stat::Mean,
            Duration::from_secs(60),
        ),
        1000,
    );
    time(
        "p95 30s inference.request.duration{service.name=resnet,host.name=one}",
        &Query::new(
            Selector::new("inference.request.duration")
                .with(Matcher::eq("service.name", "resnet"))
                .with(Matcher::eq("host.name", node)),
            Stat::Quantile(0.95),
            Duration::from_secs(30),
        ),
        1000,
    );
    time(
        &format!("p95 60s inference.request.duration{{service.name=resnet}} ({nodes} nodes)"),
        &Query::new(
            Selector::new("inference.request.duration").with(Matcher::eq("service.name", "resnet")),
            Stat::Quantile(0.95),
            Duration::from_secs(60),
        ),
        20,
    );
    time(
        &format!("mean 60s hw.gpu.utilization{{hw.gpu.task=general}} by host ({nodes} nodes)"),
        &Query::new(
            Selector::new("hw.gpu.utilization").with(Matcher::eq("hw.gpu.task", "general")),
            Stat::Mean,
            Duration::from_secs(60),
        )
        .group_by(["host.name"]),
        20,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let (collector, api, otlp_http) =
        start_collector(&args.collector_bin, &dir.path().join("collector"), None);
    let cpid = collector.child.id();
    assert!(wait_ready(&c, &format!("http://{api}/readyz")).await, "collector did not get ready");
    let prom = start_prometheus(&args.prometheus_bin, dir.path());
    let prom = match prom {
        Some((s, addr)) if wait_ready(&c, &format!("http://{addr}/-/ready")).await => {
            Some((s, addr))
        }
        _ => {
            println!(
                "prometheus: not available (run bench/collector-ingest/run.sh, which installs it); comparing nothing"
            );
            None
        }
    };
    let per_node = node_metrics(0, args.gpus).1.len() as u64;
    println!(
        "fleet: {} nodes × {} GPUs, {} OTLP points per node per interval ({} per interval in all); {} nodes per request",
        args.nodes,
        args.gpus,
        per_node,
        per_node * args.nodes as u64,
        args.nodes_per_request
    );
    let chunks = args.nodes.div_ceil(args.nodes_per_request) as u64;
    let templates: Arc<Vec<Template>> = Arc::new(
        (0..chunks as usize)
            .map(|i| {
                otlp_template(
                    i * args.nodes_per_request,
                    args.nodes_per_request.min(args.nodes - i * args.nodes_per_request),
                    args.gpus,
                )
            })
            .collect(),
    );
    let total_secs = args.rate_secs + args.flat_secs;
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64;
    // Data timestamps: one interval per simulated second, ending now, so both stores accept it.
    let t_start = now_ns - (total_secs + 5) * 1_000_000_000;
    let ts_of = move |sec: u64| t_start + sec * 1_000_000_000;
    let otlp_url = format!("http://{otlp_http}/v1/metrics");
    let make_otlp = {
        let t = templates.clone();
        Arc::new(move |sec: u64, chunk: u64| {
            let tpl = &t[chunk as usize];
            (instantiate(tpl, ts_of(sec), 0.5 + (sec % 50) as f64 / 100.0), tpl.points)
        })
    };
    // Remote-write bodies are templated like the OTLP ones: the sample timestamp (a 6-byte
    // varint for any current millisecond time) and value are patched in place, then snappy'd.
    let want_vm = args.vm_flat_secs > 0 && args.vm_bin.is_some();
    let prom_templates: Option<Arc<Vec<Template>>> = (prom.is_some() || want_vm).then(|| {
        Arc::new(
            (0..chunks as usize)
                .map(|i| {
                    let (wr, n, _) = prom_request(
                        i * args.nodes_per_request,
                        args.nodes_per_request.min(args.nodes - i * args.nodes_per_request),
                        args.gpus,
                        PROM_TS_SENTINEL,
                        VAL_SENTINEL,
                    );
                    let bytes = wr.encode_to_vec();
                    let mut ts_enc = Vec::new();
                    prost::encoding::encode_varint(PROM_TS_SENTINEL as u64, &mut ts_enc);
                    let ts_offsets = find_all(&bytes, &ts_enc);
                    let val_offsets = find_all(&bytes, &VAL_SENTINEL.to_bits().to_le_bytes());
                    Template { bytes, ts_offsets, val_offsets, points: n }
                })
                .collect(),
        )
    });
    let (_, prom_samples_per_interval, _) = prom_request(0, args.nodes, args.gpus, 0, 1.0);
    let make_prom = prom_templates.as_ref().map(|t| {
        let t = t.clone();
        Arc::new(move |sec: u64, chunk: u64| {
            let tpl = &t[chunk as usize];
            let mut b = tpl.bytes.clone();
            let mut ts_enc = Vec::with_capacity(8);
            prost::encoding::encode_varint(ts_of(sec) / 1_000_000, &mut ts_enc);
            for o in &tpl.ts_offsets {
                b[*o..*o + ts_enc.len()].copy_from_slice(&ts_enc);
            }
            let v = 0.5 + (sec % 50) as f64 / 100.0;
            for o in &tpl.val_offsets {
                b[*o..*o + 8].copy_from_slice(&v.to_bits().to_le_bytes());
            }
            let body = snap::raw::Encoder::new().compress_vec(&b).unwrap_or_default();
            (body, tpl.points)
        })
    });
    let jobs = |from: u64, to: u64| -> Vec<(u64, u64)> {
        (from..to).flat_map(|s| (0..chunks).map(move |c| (s, c))).collect()
    };

    inprocess(&templates, chunks, &ts_of, args.nodes, dir.path());

    println!("\n== 1 Hz: {} s of the fleet in real time ==", args.rate_secs);
    let r = drive(
        &c,
        &otlp_url,
        "application/x-protobuf",
        false,
        cpid,
        jobs(0, args.rate_secs),
        args.workers,
        Some(Duration::from_secs(1)),
        make_otlp.clone(),
    )
    .await;
    print_report("1 Hz fleet", collector.name, &r, cpid, "points");
    if let (Some((ps, addr)), Some(mp)) = (&prom, &make_prom) {
        let url = format!("http://{addr}/api/v1/write");
        let r = drive(
            &c,
            &url,
            "application/x-protobuf",
            true,
            ps.child.id(),
            jobs(0, args.rate_secs),
            args.workers,
            Some(Duration::from_secs(1)),
            mp.clone(),
        )
        .await;
        print_report("1 Hz fleet", ps.name, &r, ps.child.id(), "samples");
    }

    println!("\n== flat out: {} s of fleet data as fast as it is taken ==", args.flat_secs);
    let r = drive(
        &c,
        &otlp_url,
        "application/x-protobuf",
        false,
        cpid,
        jobs(args.rate_secs, total_secs),
        args.workers,
        None,
        make_otlp.clone(),
    )
    .await;
    print_report("flat out", collector.name, &r, cpid, "points");
    let ours = r.points as f64 / r.secs;
    if let (Some((ps, addr)), Some(mp)) = (&prom, &make_prom) {
        let url = format!("http://{addr}/api/v1/write");
        // Prometheus takes the first `prom_flat_secs` of the same flat-out data (it is slower;
        // the full 5 minutes would take too long in one run).
        let prom_end = (args.rate_secs + args.prom_flat_secs).min(total_secs);
        let r = drive(
            &c,
            &url,
            "application/x-protobuf",
            true,
            ps.child.id(),
            jobs(args.rate_secs, prom_end),
            args.workers,
            None,
            mp.clone(),
        )
        .await;
        print_report("flat out", ps.name, &r, ps.child.id(), "samples");
        let samples_per_point =
            prom_samples_per_interval as f64 / (per_node * args.nodes as u64) as f64;
        let theirs_points = r.points as f64 / r.secs / samples_per_point;
        println!(
            "  Prometheus stores {samples_per_point:.2} samples per OTLP point (classic histograms); in OTLP points/s it took {theirs_points:.0}; stoker/prometheus = {:.2}×",
            ours / theirs_points
        );
    }

    // Evaluate at the end of the data (the phases above took wall time), so the 5 minute
    // window is full.
    let at_ns = ts_of(total_secs - 1);
    let at_ns_s = at_ns.to_string();
    let at_s = format!("{:.3}", at_ns as f64 / 1e9);
    println!("\n== query: p95 over 5 min of one service across {} nodes ==", args.nodes);
    let mut times = Vec::new();
    let mut answer = String::new();
    for _ in 0..QUERY_RUNS {
        let t = Instant::now();
        let r = c
            .get(format!("http://{api}/api/v1/query"))
            .query(&[
                ("selector", "inference.request.duration{service.name=\"resnet\"}"),
                ("stat", "p95"),
                ("window", "5m"),
                ("time", at_ns_s.as_str()),
            ])
            .send()
            .await;
        times.push(t.elapsed());
        if let Ok(r) = r {
            answer = r.text().await.unwrap_or_default();
        }
    }
    let (p50, p95) = p50_p95(times);
    println!(
        "stoker-collector   median {p50:.2} ms  p95 {p95:.2} ms  ({QUERY_RUNS} runs, HTTP round trip)  answer {}",
        answer.chars().take(160).collect::<String>()
    );
    if let Some((_, addr)) = &prom {
        let mut times = Vec::new();
        let mut answer = String::new();
        for _ in 0..QUERY_RUNS {
            let t = Instant::now();
            let r = c
                .get(format!("http://{addr}/api/v1/query"))
                .query(&[("query", "histogram_quantile(0.95, sum by (le) (rate(inference_request_duration_bucket{service_name=\"resnet\"}[5m])))"), ("time", at_s.as_str())])
                .send()
                .await;
            times.push(t.elapsed());
            if let Ok(r) = r {
                answer = r.text().await.unwrap_or_default();
            }
        }
        let (p50, p95) = p50_p95(times);
        println!(
            "prometheus         median {p50:.2} ms  p95 {p95:.2} ms  ({QUERY_RUNS} runs, HTTP round trip)  answer {}",
            answer.chars().take(160).collect::<String>()
        );
    }
    let m = c.get(format!("http://{api}/metrics")).send().await.ok();
    if let Some(m) = m {
        let text = m.text().await.unwrap_or_default();
        for l in text.lines().filter(|l| {
            l.starts_with("stoker_collector_points_accepted_total")
                || l.starts_with("stoker_collector_series ")
                || l.starts_with("stoker_collector_store_bytes")
        }) {
            println!("  {l}");
        }
    }

    // ---- the remote store: a collector in remote mode on VictoriaMetrics, and
    // VictoriaMetrics written directly by the same remote-write path as Prometheus above ----
    let vm_bin = args.vm_bin.clone().filter(|_| want_vm);
    let (Some(vm_bin), Some(mp)) = (vm_bin, make_prom) else {
        if args.vm_flat_secs > 0 {
            println!(
                "\nvictoria-metrics: not installed (.ci/install-victoria-metrics.sh, or --victoria-metrics BIN); remote-store figures skipped"
            );
        }
        return;
    };
    let vm_end = (args.rate_secs + args.vm_flat_secs).min(total_secs);
    let vms = (
        start_victoria(&vm_bin, &dir.path().join("vm-remote")),
        start_victoria(&vm_bin, &dir.path().join("vm-direct")),
    );
    let (Some((vm_r, vm_r_url)), Some((vm_d, vm_d_url))) = vms else {
        println!("\nvictoria-metrics: {vm_bin} did not start; remote-store figures skipped");
        return;
    };
    for u in [&vm_r_url, &vm_d_url] {
        if !wait_ready(&c, &format!("{u}/health")).await {
            println!("\nvictoria-metrics: {u} did not get ready; remote-store figures skipped");
            return;
        }
    }
    let cfg = dir.path().join("remote.toml");
    let toml = format!(
        "[store]\nbackend = \"remote\"\n\n[store.remote]\nwrite_url = \"{vm_r_url}/api/v1/write\"\nquery_url = \"{vm_r_url}\"\n"
    );
    if let Err(e) = std::fs::write(&cfg, toml) {
        println!("\n{}: {e}; remote-store figures skipped", cfg.display());
        return;
    }
    let (remote, r_api, r_http) =
        start_collector(&args.collector_bin, &dir.path().join("collector-remote"), Some(&cfg));
    let rpid = remote.child.id();
    assert!(
        wait_ready(&c, &format!("http://{r_api}/readyz")).await,
        "remote-mode collector did not get ready"
    );
    let r_url = format!("http://{r_http}/v1/metrics");
    let vm_d_write = format!("{vm_d_url}/api/v1/write");
    let (vmr_pid, vmd_pid) = (vm_r.child.id(), vm_d.child.id());
    let samples_per_point =
        prom_samples_per_interval as f64 / (per_node * args.nodes as u64) as f64;
    println!(
        "\n== remote store: stoker-collector with [store] backend = \"remote\" remote-writing to victoria-metrics ({vm_bin}), against victoria-metrics written directly =="
    );
    println!(
        "   the same fleet: {} s at 1 Hz, then {} s of data flat out; \"landed\" = accepted by victoria-metrics (stoker_remote_write_samples_sent_total), timed from the first request until the queue is empty",
        args.rate_secs,
        vm_end - args.rate_secs
    );
    let mut direct_flat = 0.0;
    let mut remote_flat = (0.0, 0.0);
    for (phase, from, to, pace) in [
        ("1 Hz fleet", 0, args.rate_secs, Some(Duration::from_secs(1))),
        ("flat out", args.rate_secs, vm_end, None),
    ] {
        let q0 = queue_figures(&c, &r_api).await;
        let (cpu0, vm_cpu0) = (proc_cpu_secs(rpid), proc_cpu_secs(vmr_pid));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = watch_queue_bytes(&c, &r_api, stop.clone());
        let started = Instant::now();
        let r = drive(
            &c,
            &r_url,
            "application/x-protobuf",
            false,
            rpid,
            jobs(from, to),
            args.workers,
            pace,
            make_otlp.clone(),
        )
        .await;
        let at_end = queue_figures(&c, &r_api).await;
        let (q1, drained) = drain(&c, &r_api, Duration::from_secs(600)).await;
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let most = watcher.await.unwrap_or(0.0).max(at_end.bytes);
        let (cpu, vm_cpu) = (proc_cpu_secs(rpid) - cpu0, proc_cpu_secs(vmr_pid) - vm_cpu0);
        print_report(phase, "stoker (remote)", &r, rpid, "points");
        let (queued, sent) = (q1.queued - q0.queued, q1.sent - q0.sent);
        let landed = if queued > 0.0 { r.points as f64 * sent / queued } else { 0.0 };
        println!(
            "{:<28} {:<17} {:>12.0} points/s  ({:.0} samples/s; {sent:.0} of {queued:.0} samples queued, {:.2} per point, {:.0} dropped; queue {} after {secs:.1} s)",
            "",
            "  landed in VM",
            landed / secs,
            sent / secs,
            queued / r.points.max(1) as f64,
            q1.dropped - q0.dropped,
            if drained { "empty" } else { "NOT empty" }
        );
        println!(
            "{:<28} {:<17} collector CPU {:.1}% of a core over load + drain; victoria-metrics CPU {:.1}% of a core, RSS {:.1} MiB (peak {:.1}); queue bytes at the end of the load {:.0}, most seen {most:.0}, after drain {:.0}",
            "",
            "",
            100.0 * cpu / secs,
            100.0 * vm_cpu / secs,
            proc_rss_mib(vmr_pid, "VmRSS:"),
            proc_rss_mib(vmr_pid, "VmHWM:"),
            at_end.bytes,
            q1.bytes
        );
        let d = drive(
            &c,
            &vm_d_write,
            "application/x-protobuf",
            true,
            vmd_pid,
            jobs(from, to),
            args.workers,
            pace,
            mp.clone(),
        )
        .await;
        print_report(phase, "victoria-metrics", &d, vmd_pid, "samples");
        let direct_points = d.points as f64 / d.secs / samples_per_point;
        println!(
            "{:<28} {:<17} {direct_points:>12.0} points/s  (OTLP points at {samples_per_point:.2} samples per point)",
            "", "  direct"
        );
        if pace.is_none() {
            direct_flat = direct_points;
            remote_flat = (r.points as f64 / r.secs, landed / secs);
        }
    }
    if direct_flat > 0.0 {
        println!(
            "  flat out: stoker embedded {ours:.0} points/s; stoker remote accepted {:.0}, landed {:.0}; victoria-metrics direct {direct_flat:.0}: remote landed / VM direct = {:.2}×, remote accepted / embedded = {:.2}×",
            remote_flat.0,
            remote_flat.1,
            remote_flat.1 / direct_flat,
            remote_flat.0 / ours.max(1.0)
        );
    }

    // The 5-minute p95 over the same data in each: the seconds [0, vm_end) of the fleet,
    // evaluated at the last of them.
    for u in [&vm_r_url, &vm_d_url] {
        let _ = c.get(format!("{u}/internal/force_flush")).send().await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let at_ns = ts_of(vm_end - 1);
    let at_ns_s = at_ns.to_string();
    let at_s = format!("{:.3}", at_ns as f64 / 1e9);
    println!(
        "\n== query: p95 over 5 min of one service across {} nodes, over the same {vm_end} s of data ({QUERY_RUNS} runs each, HTTP round trip) ==",
        args.nodes
    );
    let api_q = [
        ("selector", "inference.request.duration{service.name=\"resnet\"}"),
        ("stat", "p95"),
        ("window", "5m"),
        ("time", at_ns_s.as_str()),
    ];
    let direct_promql = "histogram_quantile(0.95, sum by (le) (rate(inference_request_duration_bucket{service_name=\"resnet\"}[5m])))";
    // What the remote collector asks for (its value query; it also counts the series).
    let collector_promql = "histogram_quantile(0.95, sum by (le) (increase(inference_request_duration_bucket{service_name=\"resnet\"}[300000ms])))";
    let prom_q = |q: &'static str| [("query", q), ("time", at_s.as_str()), ("nocache", "1")];
    let mut rows = vec![
        ("stoker embedded (API)", format!("http://{api}/api/v1/query"), api_q.to_vec()),
        ("stoker remote (API→VM)", format!("http://{r_api}/api/v1/query"), api_q.to_vec()),
        (
            "VM, collector's PromQL",
            format!("{vm_r_url}/api/v1/query"),
            prom_q(collector_promql).to_vec(),
        ),
        ("VM direct (PromQL)", format!("{vm_d_url}/api/v1/query"), prom_q(direct_promql).to_vec()),
    ];
    if let Some((_, addr)) = prom.as_ref().filter(|_| args.prom_flat_secs == args.vm_flat_secs) {
        rows.push((
            "prometheus (PromQL)",
            format!("http://{addr}/api/v1/query"),
            prom_q(direct_promql).to_vec(),
        ));
    }
    for (label, url, q) in rows {
        let (p50, p95, answer) = time_query(&c, &url, &q).await;
        println!("{label:<24} median {p50:>7.2} ms  p95 {p95:>7.2} ms  answer {answer}");
    }
    drop(remote);
}
