//! Collector query benchmark: loads N nodes (default 1,000) × M minutes (default 5) of the
//! agent's series at 1 s into a store (on disk, as `serve` runs it, checkpointed once), then
//! times the query — p95 over 5 min of one service across all nodes — through the
//! library interface the policy engine calls ([`Store::instant`]) and through the HTTP query API
//! of a server started in-process, with p50/p95/max over `--runs` runs (default 200).
//!
//! Run: `cargo run --release -p stoker-collector --example collector-query [-- --nodes N
//! --minutes M --gpus G --runs R]`. `--gpus` (default 1) sets how many GPU series each node
//! also has: they grow the index, the query never reads them.

// A benchmark measures the real clocks.
#![allow(clippy::disallowed_methods)]

// The collector binary's allocator, so in-process figures match what `serve` does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stoker_collector::config::{ServerConfig, Tokens};
use stoker_collector::query::{Matcher, Query, Selector, Stat};
use stoker_collector::server::{self, ServeOptions};
use stoker_collector::store::{Histogram, PointValue, Store, StoreConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const BOUNDS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

struct Args {
    nodes: usize,
    minutes: u64,
    gpus: usize,
    runs: usize,
}

fn parse_args() -> Args {
    let mut a = Args { nodes: 1000, minutes: 5, gpus: 1, runs: 200 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--nodes" => a.nodes = v.parse().unwrap_or(a.nodes),
            "--minutes" => a.minutes = v.parse().unwrap_or(a.minutes),
            "--gpus" => a.gpus = v.parse().unwrap_or(a.gpus),
            "--runs" => a.runs = v.parse().unwrap_or(a.runs).max(20),
            other => {
                eprintln!("unknown flag {other}");
                std::process::exit(64);
            }
        }
    }
    a
}

#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
    Hist,
}

/// One series of one node: metric, sorted attributes, kind.
struct SeriesDef {
    metric: &'static str,
    pairs: Vec<(String, String)>,
    kind: Kind,
}

fn node_series(node: usize, gpus: usize) -> Vec<SeriesDef> {
    let res = [
        ("host.name", format!("node-{node:04}")),
        ("host.id", format!("id-{node:04}")),
        ("cloud.region", "eu-west-1".into()),
        ("pool", "inference".into()),
    ];
    let mk = |metric: &'static str, extra: Vec<(&'static str, String)>, kind: Kind| {
        let mut pairs: Vec<(String, String)> = res
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .chain(extra.into_iter().map(|(k, v)| (k.to_string(), v)))
            .collect();
        pairs.sort();
        SeriesDef { metric, pairs, kind }
    };
    let mut out = Vec::new();
    for g in 0..gpus {
        let gpu = |extra: Vec<(&'static str, String)>| {
            let mut a = vec![
                ("hw.id", format!("GPU-{node:04}-{g}")),
                ("hw.model", "NVIDIA A10G".to_string()),
            ];
            a.extend(extra);
            a
        };
        for task in ["general", "encoder", "decoder"] {
            out.push(mk(
                "hw.gpu.utilization",
                gpu(vec![("hw.gpu.task", task.into())]),
                Kind::Gauge,
            ));
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
            out.push(mk(name, gpu(vec![]), Kind::Gauge));
        }
        out.push(mk("hw.energy", gpu(vec![]), Kind::Counter));
        out.push(mk("hw.errors", gpu(vec![("error.type", "ecc".into())]), Kind::Counter));
    }
    for name in [
        "system.cpu.utilization",
        "system.memory.usage",
        "process.cpu.utilization",
        "process.memory.usage",
    ] {
        out.push(mk(name, vec![], Kind::Gauge));
    }
    for svc in ["resnet", "bert"] {
        let inf = |extra: Vec<(&'static str, String)>| {
            let mut a = vec![
                ("service.name", svc.to_string()),
                ("model.name", svc.to_string()),
                ("model.version", "7".to_string()),
            ];
            a.extend(extra);
            a
        };
        out.push(mk("inference.request.duration", inf(vec![]), Kind::Hist));
        out.push(mk("inference.queue.duration", inf(vec![]), Kind::Hist));
        out.push(mk("inference.compute.duration", inf(vec![]), Kind::Hist));
        out.push(mk("inference.requests", inf(vec![("outcome", "ok".into())]), Kind::Counter));
    }
    out
}

/// A delta histogram whose shape moves with node and time, so quantiles are not trivial.
fn hist_point(node: usize, sec: u64) -> Histogram {
    let shift = ((node as u64 + sec) % 4) as usize;
    let mut counts = vec![0u64; BOUNDS.len() + 1];
    for (i, c) in [40u64, 30, 15, 8, 4, 2, 1].iter().enumerate() {
        counts[(i + shift).min(BOUNDS.len())] += c;
    }
    let sum = counts
        .iter()
        .enumerate()
        .map(|(i, c)| *c as f64 * BOUNDS.get(i).copied().unwrap_or(2.0) * 0.7)
        .sum();
    Histogram::explicit(BOUNDS.to_vec(), counts, sum)
}

fn percentiles(mut t: Vec<Duration>) -> (f64, f64, f64) {
    t.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| ms(t[((t.len() - 1) as f64 * q).round() as usize]);
    (at(0.5), at(0.95), ms(t[t.len() - 1]))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig { data_dir: Some(dir.path().to_path_buf()), ..StoreConfig::default() };
    let store = Arc::new(
        Store::open(cfg, Arc::new(stoker_collector::clock::SystemClock)).expect("open store"),
    );

    let secs = args.minutes * 60;
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_nanos() as u64;
    let t0 = now_ns - (secs + 5) * 1_000_000_000;
    let fleet: Vec<Vec<SeriesDef>> = (0..args.nodes).map(|n| node_series(n, args.gpus)).collect();
    let per_node = fleet[0].len();
    println!(
        "fleet: {} nodes, {per_node} series per node ({} series), {secs} s at 1 s; {} points",
        args.nodes,
        per_node * args.nodes,
        per_node as u64 * args.nodes as u64 * secs
    );
    let started = Instant::now();
    let mut accepted = 0u64;
    for sec in 0..secs {
        let ts = t0 + sec * 1_000_000_000;
        let v = 0.5 + (sec % 50) as f64 / 100.0;
        for (n, series) in fleet.iter().enumerate() {
            let mut w = store.writer();
            for s in series {
                let pairs: Vec<(&str, &str)> =
                    s.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let value = match s.kind {
                    Kind::Gauge => PointValue::Gauge(v),
                    Kind::Counter => PointValue::CounterDelta(1.0),
                    Kind::Hist => PointValue::HistogramDelta(hist_point(n, sec)),
                };
                let _ = w.append(s.metric, &pairs, ts, value);
            }
            accepted += w.accepted();
            w.finish();
        }
        if sec % 10 == 9 {
            store.commit().expect("commit");
        }
    }
    store.commit().expect("commit");
    let load = started.elapsed().as_secs_f64();
    let t = Instant::now();
    store.checkpoint().expect("checkpoint");
    println!(
        "loaded {accepted} points in {load:.1} s ({:.0} points/s, one thread, store appends only); checkpoint {:.1} s",
        accepted as f64 / load,
        t.elapsed().as_secs_f64()
    );

    let at = t0 + (secs - 1) * 1_000_000_000;
    let sel =
        || Selector::new("inference.request.duration").with(Matcher::eq("service.name", "resnet"));
    let queries = [
        (
            "p95 5m inference.request.duration{service.name=resnet}",
            Query::new(sel(), Stat::Quantile(0.95), Duration::from_secs(300)),
            "p95",
            "5m",
            "",
        ),
        (
            "p95 1m inference.request.duration{service.name=resnet}",
            Query::new(sel(), Stat::Quantile(0.95), Duration::from_secs(60)),
            "p95",
            "1m",
            "",
        ),
        (
            "mean 5m by host.name (1 group per node)",
            Query::new(sel(), Stat::Mean, Duration::from_secs(300)).group_by(["host.name"]),
            "mean",
            "5m",
            "host.name",
        ),
    ];
    println!(
        "\n== library: Store::instant (the policy engine's interface), {} runs each ==",
        args.runs
    );
    for (label, q, ..) in &queries {
        let mut times = Vec::with_capacity(args.runs);
        let mut answer = None;
        for _ in 0..args.runs {
            let t = Instant::now();
            let g = store.instant(q, at).expect("query");
            times.push(t.elapsed());
            answer = Some((g.len(), g.first().map(|g| (g.value, g.series))));
        }
        let (p50, p95, max) = percentiles(times);
        println!(
            "{label:<58} p50 {p50:>7.2} ms  p95 {p95:>7.2} ms  max {max:>7.2} ms  (groups, first) {answer:?}"
        );
    }

    let cancel = CancellationToken::new();
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let server_cfg = ServerConfig {
        api_listen: loopback,
        otlp_grpc_listen: loopback,
        otlp_http_listen: loopback,
        ..ServerConfig::default()
    };
    let (bound, _) = server::start(
        ServeOptions {
            server: server_cfg,
            tokens: Tokens::default(),
            store: store.clone(),
            extra_api: Vec::new(),
            extra_metrics: Vec::new(),
            remote: Default::default(),
        },
        cancel.clone(),
        TaskTracker::new(),
    )
    .await
    .expect("start server");
    let c = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let url = format!("http://{}/api/v1/query", bound.api);
    let at_s = at.to_string();
    println!(
        "\n== HTTP: GET /api/v1/query (in-process server, keep-alive client), {} runs each ==",
        args.runs
    );
    for (label, _, stat, window, group_by) in &queries {
        let mut params = vec![
            ("selector", "inference.request.duration{service.name=\"resnet\"}"),
            ("stat", *stat),
            ("window", *window),
            ("time", at_s.as_str()),
        ];
        if !group_by.is_empty() {
            params.push(("group_by", *group_by));
        }
        let mut times = Vec::with_capacity(args.runs);
        let mut bytes = 0;
        for _ in 0..args.runs {
            let t = Instant::now();
            let r = c.get(&url).query(&params).send().await.expect("query");
            assert!(r.status().is_success(), "{}", r.status());
            bytes = r.bytes().await.expect("body").len();
            times.push(t.elapsed());
        }
        let (p50, p95, max) = percentiles(times);
        println!(
            "{label:<58} p50 {p50:>7.2} ms  p95 {p95:>7.2} ms  max {max:>7.2} ms  ({bytes} bytes)"
        );
    }
    cancel.cancel();
}
