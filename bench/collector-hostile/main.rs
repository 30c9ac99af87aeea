//! Resident memory of a real `stoker-collector` after hostile OTLP/HTTP traffic, against a clean
//! run of the same valid traffic: `rounds` valid requests of one gauge point for each of
//! `series` series, and in the hostile run, between the rounds, `mutated` byte-mutated SDK
//! payloads from `fuzz/corpus/otlp_protobuf`, six 8 MiB empty-point floods (~800 MB if decoded)
//! and six exponential-offset killers. The hostile run goes first; the clean run waits in each
//! round as long as that round's hostile requests took, so both last as long. Each run starts a fresh collector on a fresh data
//! directory; RSS (`VmRSS`) and peak (`VmHWM`) are read from `/proc` 2 s after the last request.
//!
//! `cargo build -p stoker-collector --bin stoker-collector --example collector-hostile &&
//!  target/debug/examples/collector-hostile [--collector-bin PATH] [--series N] [--rounds N]
//!  [--mutated N]`

// A benchmark measures the real clocks.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

struct Args {
    bin: String,
    series: usize,
    rounds: usize,
    mutated: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        bin: "target/debug/stoker-collector".into(),
        series: 2_000,
        rounds: 60,
        mutated: 3_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let n = || value.parse::<usize>().unwrap_or_else(|e| panic!("{flag} {value}: {e}"));
        match flag.as_str() {
            "--collector-bin" => a.bin = value.clone(),
            "--series" => a.series = n(),
            "--rounds" => a.rounds = n(),
            "--mutated" => a.mutated = n(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_nanos()
        as u64
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

/// One gauge point for each of `series` series (one resource per series).
fn valid_request(series: usize, ts: u64, v: f64) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: (0..series)
            .map(|i| ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("host.name", &format!("node-{i:05}"))],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "hw.gpu.utilization".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![NumberDataPoint {
                                attributes: vec![kv("hw.id", "gpu0")],
                                time_unix_nano: ts,
                                value: Some(number_data_point::Value::AsDouble(v)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

/// A length-delimited protobuf field around `inner`.
fn wrap(tag: u8, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let mut n = inner.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(inner);
    out
}

/// 4 Mi empty gauge points: 8 MiB on the wire, ~800 MB decoded.
fn flood() -> Vec<u8> {
    let gauge: Vec<u8> = std::iter::repeat_n([0x0au8, 0x00], 4 << 20).flatten().collect();
    wrap(0x0a, &wrap(0x12, &wrap(0x12, &wrap(0x2a, &gauge))))
}

/// A small deterministic generator (xorshift), so both runs see the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bit flips, inserted and deleted runs, truncation and maximal varints over a seed.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(b.len().max(1));
        match rng.below(5) {
            0 if !b.is_empty() => b[at] ^= 1 << rng.below(8),
            1 => b
                .splice(
                    at.min(b.len())..at.min(b.len()),
                    (0..rng.below(16)).map(|_| rng.next() as u8),
                )
                .for_each(drop),
            2 if !b.is_empty() => b.truncate(at),
            3 => b
                .splice(at.min(b.len())..at.min(b.len()), [0xff; 9].into_iter().chain([0x01]))
                .for_each(drop),
            _ if b.len() > 1 => {
                let end = (at + rng.below(16)).min(b.len());
                b.drain(at..end);
            }
            _ => b.push(rng.next() as u8),
        }
    }
    b
}

struct Collector {
    child: Child,
    http: String,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(bin: &str, data: &Path) -> Collector {
    let mut child = Command::new(bin)
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(["--api-listen", "127.0.0.1:0", "--otlp-grpc-listen", "127.0.0.1:0"])
        .args(["--otlp-http-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .env_remove("STOKER_READ_TOKEN")
        .env_remove("STOKER_WRITE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("otlp_http="))
        .unwrap_or_else(|| panic!("no otlp_http= in {line:?}"))
        .to_owned();
    Collector { child, http }
}

/// `VmRSS` and `VmHWM` of a process, in kB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Run {
    final_kb: u64,
    peak_kb: u64,
    answers: BTreeMap<(&'static str, u16), usize>,
}

/// One run. The hostile run records how long each round's hostile requests took in `pace`; the
/// clean run then waits as long in each round, so both runs last as long and the store goes
/// through the same number of commit intervals.
async fn run(
    args: &Args,
    hostile: bool,
    seeds: &[Vec<u8>],
    killer: &[u8],
    pace: &mut Vec<Duration>,
) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let col = spawn(&args.bin, dir.path());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let url = format!("http://{}/v1/metrics", col.http);
    let mut answers = BTreeMap::new();
    let mut post = async |class: &'static str, body: Vec<u8>| {
        let status = match c
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        *answers.entry((class, status)).or_insert(0) += 1;
    };
    let flood = flood();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let per_round = args.mutated.div_ceil(args.rounds.max(1));
    let (mut mutated, mut floods) = (0, 0);
    let t0 = now_nanos() - args.rounds as u64 * 1_000_000_000;
    for round in 0..args.rounds {
        post("valid", valid_request(args.series, t0 + round as u64 * 1_000_000_000, round as f64))
            .await;
        if !hostile {
            if let Some(wait) = pace.get(round) {
                tokio::time::sleep(*wait).await;
            }
            continue;
        }
        let started = std::time::Instant::now();
        for _ in 0..per_round.min(args.mutated - mutated) {
            let seed = &seeds[rng.below(seeds.len())];
            post("mutated", mutate(&mut rng, seed)).await;
            mutated += 1;
        }
        if round % (args.rounds / 6).max(1) == 0 && floods < 6 {
            floods += 1;
            post("flood", flood.clone()).await;
            post("killer", killer.to_vec()).await;
        }
        pace.push(started.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (final_kb, peak_kb) = rss(col.child.id());
    Run { final_kb, peak_kb, answers }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/otlp_protobuf");
    let mut seeds = Vec::new();
    let mut killer = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("{}: {e}", corpus.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for path in names {
        let bytes = std::fs::read(&path).expect("read seed");
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("killer")) {
            killer = bytes;
        } else {
            seeds.push(bytes);
        }
    }
    assert!(
        !seeds.is_empty() && !killer.is_empty(),
        "seeds and the killer in {}",
        corpus.display()
    );
    println!(
        "collector {}: {} rounds of {} series, {} mutated requests, 6 floods, 6 killers",
        args.bin, args.rounds, args.series, args.mutated
    );
    let mut pace = Vec::new();
    let hostile = run(&args, true, &seeds, &killer, &mut pace).await;
    let clean = run(&args, false, &seeds, &killer, &mut pace).await;
    for (name, r) in [("valid only", &clean), ("valid + hostile", &hostile)] {
        println!(
            "{name}: final RSS {:.1} MB, peak {:.1} MB; answers {:?}",
            r.final_kb as f64 / 1e3,
            r.peak_kb as f64 / 1e3,
            r.answers
        );
    }
    let excess = (hostile.final_kb as f64 / clean.final_kb.max(1) as f64 - 1.0) * 100.0;
    println!("hostile final RSS is {excess:+.1} % of the clean run's (target: within 10 %)");
}
