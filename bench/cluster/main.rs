//! Cluster benchmarks (`[cluster] backend = "etcd"`): prints its figures; release builds
//! only make sense (`bench/cluster/run.sh`). Both modes run their own single-member etcd on
//! loopback (`etcd` on `PATH` or `/usr/bin/etcd`: `.ci/install-etcd.sh`, or `--etcd BIN`).
//!
//! 1. **Takeover** (`takeover`): real release `stoker-collector serve` processes (2, or
//!    `--members N`) on one etcd with `lease_ttl` 10 s (`--ttl S`) and `request_timeout` 2 s
//!    (at most a third of the TTL). The leader is killed with `kill -9` `--kills N` times
//!    (default 20), each at a random point of its keepalive cycle (after a seeded uniform
//!    wait of up to TTL/3); each time the bench polls the survivors' `GET /api/v1/cluster`
//!    every 50 ms and times the kill to the first survivor that reports `role: leader`,
//!    then restarts the killed member and waits until every member agrees on the new leader
//!    before the next kill. The target is the issue's: a takeover within 12 s at a 10 s TTL.
//! 2. **The policy tick with the ledger in etcd** (`ledger`): the live runtime
//!    ([`PolicyRuntime::tick`], a leader's tick as `serve` runs it) over 1,000 policies (the
//!    1,000 rules of `policy-bench` (1), one policy per node, each due every tick) reading a
//!    1,000-node × 8-GPU in-memory embedded store ([`StoreSource`]), with a fake executor,
//!    and the ledger three ways: [`MemoryLedger`], the embedded `policy.redb`
//!    ([`PolicyStore`], fsync on every commit) and the `EtcdLedger` that `cluster::start`
//!    builds for an elected leader (every write fenced on the term and the leader key). Per
//!    ledger: p50/p95 of the tick, ledger calls per tick (a counting wrapper), and for etcd
//!    the Txn RPCs, raft proposals and key puts etcd itself counted (its `/metrics`:
//!    `grpc_server_handled_total{grpc_method="Txn"}`, `etcd_server_proposals_committed_total`,
//!    `etcd_mvcc_put_total`; etcd 3.4's `etcd_mvcc_txn_total` stays 0 for write
//!    transactions, so it is not used).
//!
//! Usage: `cluster-bench [takeover|ledger|all] [--kills N] [--ttl S] [--members N]
//! [--ticks N] [--collector-bin PATH] [--etcd BIN]`.

// A benchmark measures the real clocks.
#![allow(clippy::disallowed_methods)]

#[path = "../shared/node_policy.rs"]
mod node_policy;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use stoker_collector::cluster::{self, ClusterBackend, ClusterConfig, Role};
use stoker_collector::policy::PolicyRuntime;
use stoker_collector::policy::engine::{Decision, Outcome, OutcomeStatus, PolicyState};
use stoker_collector::policy::persist::{
    ActionRecord, ActionStatus, Fence, Leadership, Ledger, LedgerError, PolicyStore,
};
use stoker_collector::policy::runtime::{
    ExecError, Executor, JobRef, JobStatus, RuntimeConfig, TargetRef, TargetSize,
};
use stoker_collector::serve::StoreSource;
use stoker_collector::store::{PointValue, Store, StoreConfig};
use stoker_policy::ledger::MemoryLedger;
use stoker_tests::{KillOnDrop, etcd_command, installed_bin};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the takeover is polled, as the issue asks.
const POLL: Duration = Duration::from_millis(50);
/// Bound of one HTTP request to a member or to etcd.
const HTTP_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound of a member's start (its listening line) and of the members agreeing on a leader,
/// on top of the TTL.
const SETTLE: Duration = Duration::from_secs(30);

const NODES: usize = 1000;
const GPUS: usize = 8;
/// Seconds of data before the first tick: more than the longest window the rules read (60 s).
const HISTORY: usize = 90;
/// Ticks run before the timed ones (the first evaluates every rule from an empty state).
const WARMUP: usize = 2;

struct Args {
    mode: String,
    kills: usize,
    ttl: Duration,
    members: usize,
    ticks: usize,
    collector_bin: Option<PathBuf>,
    etcd_bin: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        mode: "all".into(),
        kills: 20,
        ttl: Duration::from_secs(10),
        members: 2,
        ticks: 20,
        collector_bin: None,
        etcd_bin: None,
    };
    let mut it = std::env::args().skip(1);
    let bad = |what: &str| -> ! {
        eprintln!("cluster-bench: {what}");
        eprintln!(
            "usage: cluster-bench [takeover|ledger|all] [--kills N] [--ttl S] [--members N] [--ticks N] [--collector-bin PATH] [--etcd BIN]"
        );
        std::process::exit(64)
    };
    while let Some(k) = it.next() {
        if matches!(k.as_str(), "takeover" | "ledger" | "all") {
            a.mode = k;
            continue;
        }
        let Some(v) = it.next() else { bad(&format!("{k} needs a value")) };
        let num = |v: &str| v.parse::<usize>().unwrap_or_else(|_| bad(&format!("{k} {v}")));
        match k.as_str() {
            "--kills" => a.kills = num(&v),
            "--ttl" => {
                a.ttl = humantime::parse_duration(&v)
                    .or_else(|_| v.parse::<u64>().map(Duration::from_secs))
                    .unwrap_or_else(|_| bad(&format!("--ttl {v}")))
            }
            "--members" => a.members = num(&v).max(2),
            "--ticks" => a.ticks = num(&v).max(1),
            "--collector-bin" => a.collector_bin = Some(v.into()),
            "--etcd" => a.etcd_bin = Some(v),
            other => bad(&format!("unknown argument {other}")),
        }
    }
    if a.ttl < Duration::from_secs(2) || a.ttl.subsec_nanos() != 0 {
        bad("--ttl must be whole seconds, at least 2 s (the collector's own bound)");
    }
    a
}

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; timings are only meaningful with --release");
    }
    let args = parse_args();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(etcd_bin) = args.etcd_bin.clone().or_else(|| installed_bin("etcd")) else {
        eprintln!("cluster-bench: etcd is not installed (.ci/install-etcd.sh, or --etcd BIN)");
        std::process::exit(1);
    };
    let rt =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        };
    let mut failed = false;
    if matches!(args.mode.as_str(), "takeover" | "all") {
        if let Err(e) = rt.block_on(bench_takeover(&args, &etcd_bin)) {
            eprintln!("takeover: {e}");
            failed = true;
        }
    }
    if matches!(args.mode.as_str(), "ledger" | "all") {
        if args.mode == "all" {
            println!();
        }
        if let Err(e) = rt.block_on(bench_ledger(&args, &etcd_bin)) {
            eprintln!("ledger: {e}");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
}

// ---- etcd and members ----

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| format!("local addr: {e}"))
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// A single-member etcd on free loopback ports, killed on drop.
struct Etcd {
    endpoint: String,
    _child: KillOnDrop,
}

/// Starts etcd under `dir` and waits (at most 10 s a try, three tries) until it is healthy.
async fn start_etcd(bin: &str, dir: &Path, c: &reqwest::Client) -> Result<Etcd, String> {
    for attempt in 0..3 {
        let data = dir.join(format!("etcd-{attempt}"));
        let port = free_port()?;
        let child = etcd_command(bin, &data, port, free_port()?)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{bin}: {e}"))?;
        let mut child = KillOnDrop(child);
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if matches!(child.0.try_wait(), Ok(Some(_))) {
                break; // a port was taken meanwhile: try others
            }
            if let Ok(r) = c.get(format!("{endpoint}/health")).send().await {
                if r.text().await.is_ok_and(|t| t.contains("\"health\":\"true\"")) {
                    return Ok(Etcd { endpoint, _child: child });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Err("etcd did not become healthy in three tries".into())
}

/// A member's files: configuration, data, (empty) policy directory and log.
struct Member {
    name: String,
    config: PathBuf,
    data: PathBuf,
    policies: PathBuf,
    log: PathBuf,
}

fn member(root: &Path, name: &str, etcd: &Etcd, ttl: Duration) -> Result<Member, String> {
    let dir = root.join(name);
    let m = Member {
        name: name.to_owned(),
        config: dir.join("collector.toml"),
        data: dir.join("data"),
        policies: dir.join("policies"),
        log: dir.join("stderr.log"),
    };
    std::fs::create_dir_all(&m.policies).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The collector refuses a request timeout over a third of the TTL.
    let timeout = Duration::from_secs(2).min(ttl / 3);
    let toml = format!(
        "[cluster]\nbackend = \"etcd\"\netcd_endpoints = [\"{}\"]\nlease_ttl = \"{}s\"\n\
         request_timeout = \"{}ms\"\nmember = \"{name}\"\n",
        etcd.endpoint,
        ttl.as_secs(),
        timeout.as_millis()
    );
    std::fs::write(&m.config, toml).map_err(|e| format!("{}: {e}", m.config.display()))?;
    Ok(m)
}

/// A running member and where its API listens.
struct Running {
    child: KillOnDrop,
    api: String,
}

/// Starts `m` and waits (at most [`SETTLE`]) for its `listening api=…` line.
fn start_member(bin: &Path, m: &Member) -> Result<Running, String> {
    use std::io::BufRead as _;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&m.log)
        .map_err(|e| format!("{}: {e}", m.log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--data-dir"])
        .arg(&m.data)
        .args(["--api-listen", "127.0.0.1:0"])
        .args(["--otlp-grpc-listen", "127.0.0.1:0"])
        .args(["--otlp-http-listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&m.config)
        .arg("--policies")
        .arg(&m.policies)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    let mut child = KillOnDrop(cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?);
    let stdout = child.0.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // A thread, so the wait is bounded: killing the child (on drop) closes the pipe and ends it.
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(SETTLE)
        .map_err(|_| format!("{} printed no listening line in {SETTLE:?}", m.name))?;
    let api = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("api="))
        .map(str::to_owned)
        .ok_or_else(|| format!("{}: no api= in {line:?} (see {})", m.name, m.log.display()))?;
    Ok(Running { child, api })
}

/// A member's `/api/v1/cluster`, or `None` when it does not answer in [`HTTP_TIMEOUT`].
async fn view(c: &reqwest::Client, api: &str) -> Option<serde_json::Value> {
    let r = c.get(format!("http://{api}/api/v1/cluster")).send().await.ok()?;
    r.json().await.ok()
}

/// The leader's index and term once every running member names the same one.
async fn agreed(c: &reqwest::Client, running: &[Option<Running>]) -> Option<(usize, u64)> {
    let mut leader = None;
    let mut named = Vec::new();
    for (i, r) in running.iter().enumerate() {
        let v = view(c, &r.as_ref()?.api).await?;
        let term = v["term"].as_u64()?;
        if v["role"] == "leader" {
            if leader.is_some() {
                return None;
            }
            leader = Some((i, v["self"].as_str()?.to_owned(), term));
        }
        named.push((v["leader"].as_str()?.to_owned(), term));
    }
    let (i, name, term) = leader?;
    named.iter().all(|(n, t)| *n == name && *t == term).then_some((i, term))
}

async fn wait_agreed(
    c: &reqwest::Client,
    running: &[Option<Running>],
    within: Duration,
) -> Result<(usize, u64), String> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Some(a) = agreed(c, running).await {
            return Ok(a);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the members did not agree on one leader within {within:?}"))
}

/// The collector binary: `--collector-bin`, else `stoker-collector` beside the directory of
/// this example (`target/release/examples/..`).
fn collector_bin(args: &Args) -> Result<PathBuf, String> {
    if let Some(b) = &args.collector_bin {
        return Ok(b.clone());
    }
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("stoker-collector"))
        .filter(|b| b.exists())
        .ok_or_else(|| {
            format!(
                "no stoker-collector beside {}: cargo build --release -p stoker-collector --bin stoker-collector, or --collector-bin",
                exe.display()
            )
        })?;
    Ok(bin)
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---- 1. takeover ----

async fn bench_takeover(args: &Args, etcd_bin: &str) -> Result<(), String> {
    let bin = collector_bin(args)?;
    let c = http_client()?;
    let root = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let etcd = start_etcd(etcd_bin, root.path(), &c).await?;
    let members = (0..args.members)
        .map(|i| member(root.path(), &format!("m{i}"), &etcd, args.ttl))
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = Duration::from_secs(2).min(args.ttl / 3);
    println!(
        "takeover after kill -9 of the leader: {} members (release {}) on one etcd, lease_ttl {} s, request_timeout {} ms, survivors polled every {} ms, {} kills",
        args.members,
        bin.display(),
        args.ttl.as_secs(),
        timeout.as_millis(),
        POLL.as_millis(),
        args.kills
    );
    let mut running = Vec::new();
    for m in &members {
        running.push(Some(start_member(&bin, m)?));
    }
    // A takeover waits out the dead leader's lease; give it that, a follower poll and room.
    let bound = 2 * args.ttl + Duration::from_secs(10);
    let mut took = Vec::new();
    let mut missed = 0usize;
    let mut phase = fastrand::Rng::with_seed(0x5eed);
    for round in 1..=args.kills {
        let (li, term) = wait_agreed(&c, &running, SETTLE + args.ttl).await?;
        // Rounds run in lockstep (restart, agree, kill), so without this every kill would hit
        // the leader at one point of its keepalive cycle (every TTL/3) and measure one case
        // of how much lease was left.
        tokio::time::sleep(args.ttl.div_f64(3.0).mul_f64(phase.f64())).await;
        let Some(mut leader) = running[li].take() else { return Err("no leader process".into()) };
        let killed = Instant::now();
        leader.child.0.kill().map_err(|e| format!("kill -9: {e}"))?;
        let _ = leader.child.0.wait();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next = None;
        while killed.elapsed() < bound && next.is_none() {
            poll.tick().await;
            for (i, r) in running.iter().enumerate() {
                let Some(r) = r else { continue };
                if let Some(v) = view(&c, &r.api).await {
                    if v["role"] == "leader" {
                        next = Some((killed.elapsed(), i, v["term"].as_u64().unwrap_or(0)));
                        break;
                    }
                }
            }
        }
        match next {
            Some((d, i, new_term)) => {
                println!(
                    "  kill {round:>2}: {} killed, {} leads after {:.2} s (term {term} -> {new_term})",
                    members[li].name,
                    members[i].name,
                    secs(d)
                );
                took.push(d);
            }
            None => {
                println!(
                    "  kill {round:>2}: {} killed, no survivor led within {:.0} s",
                    members[li].name,
                    secs(bound)
                );
                missed += 1;
            }
        }
        running[li] = Some(start_member(&bin, &members[li])?);
    }
    wait_agreed(&c, &running, SETTLE + args.ttl).await?;
    drop(running);
    drop(etcd);
    if took.is_empty() {
        return Err("no takeover was observed".into());
    }
    took.sort();
    let mean = took.iter().sum::<Duration>() / took.len() as u32;
    let target = args.ttl + Duration::from_secs(2);
    let scaled = if args.ttl == Duration::from_secs(10) {
        String::new()
    } else {
        format!(" (at this TTL: TTL + 2 s = {} s)", target.as_secs())
    };
    println!(
        "takeover: {} of {} kills taken over: p50 {:.2} s, max {:.2} s (min {:.2} s, mean {:.2} s){}; target <= 12 s at a 10 s TTL{scaled}; {}",
        took.len(),
        args.kills,
        secs(quantile(&took, 0.5)),
        secs(took[took.len() - 1]),
        secs(took[0]),
        secs(mean),
        if missed > 0 {
            format!(", {missed} not within {:.0} s", secs(bound))
        } else {
            String::new()
        },
        if missed == 0 && took[took.len() - 1] <= target { "met" } else { "NOT met" }
    );
    Ok(())
}

// ---- 2. the policy tick with the ledger in etcd ----

/// One policy per node: the rules of `policy-bench` (1), evaluated every second.
fn node_policy(n: usize) -> String {
    node_policy::node_policy_yaml(n, Some("1s"))
}

fn noise(state: &mut u64) -> f64 {
    // xorshift64: deterministic, no dependency.
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// An in-memory embedded store holding `secs` seconds of the fleet at 1 s, from `start`
/// (Unix nanos): per node 8 GPU utilisation series and one latency series, shaped as in
/// `policy-bench`.
fn fleet_store(start: u64, secs: usize) -> Result<Arc<Store>, String> {
    let store = Store::open(
        StoreConfig { data_dir: None, ..StoreConfig::default() },
        Arc::new(stoker_collector::clock::SystemClock),
    )
    .map_err(|e| format!("in-memory store: {e}"))?;
    let hosts: Vec<String> = (0..NODES).map(|n| format!("node-{n}")).collect();
    let gpus: Vec<Vec<String>> =
        (0..NODES).map(|n| (0..GPUS).map(|g| format!("GPU-{n}-{g}")).collect()).collect();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut refused = 0u64;
    for sec in 0..secs {
        let ts = start + sec as u64 * 1_000_000_000;
        let t = sec as f64;
        let mut w = store.writer();
        for (n, host) in hosts.iter().enumerate() {
            let mut base = 0.0;
            for (g, gpu) in gpus[n].iter().enumerate() {
                base = 0.5 + 0.3 * ((t / 300.0) + n as f64 * 0.1 + g as f64).sin();
                let v = (base + 0.05 * noise(&mut rng)).clamp(0.0, 1.0);
                let pairs = [("host.name", host.as_str()), ("hw.id", gpu.as_str())];
                if w.append("hw.gpu.utilization", &pairs, ts, PointValue::Gauge(v)).is_err() {
                    refused += 1;
                }
            }
            let v = 0.05 + 0.08 * base + 0.01 * noise(&mut rng);
            let pairs = [("host.name", host.as_str())];
            if w.append("inference.request.duration", &pairs, ts, PointValue::Gauge(v)).is_err() {
                refused += 1;
            }
        }
        let _ = w.finish();
    }
    if refused > 0 {
        return Err(format!("the store refused {refused} samples"));
    }
    Ok(Arc::new(store))
}

/// Resizes in memory: every target answers its last size (8 at first), every resize applies.
#[derive(Default)]
struct FakeExecutor {
    sizes: Mutex<HashMap<String, u32>>,
}

impl FakeExecutor {
    fn sizes(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Executor for FakeExecutor {
    fn current_size<'a>(&'a self, target: &'a TargetRef) -> BoxFuture<'a, Result<u32, ExecError>> {
        let n = self.sizes().get(&target.name).copied().unwrap_or(8);
        Box::pin(async move { Ok(n) })
    }

    fn target_size<'a>(
        &'a self,
        target: &'a TargetRef,
    ) -> BoxFuture<'a, Result<TargetSize, ExecError>> {
        let n = self.sizes().get(&target.name).copied().unwrap_or(8);
        Box::pin(async move { Ok(TargetSize { provisioned: n, ready: None }) })
    }

    fn resize<'a>(
        &'a self,
        target: &'a TargetRef,
        desired: u32,
        _key: &'a str,
        dry_run: bool,
    ) -> BoxFuture<'a, Outcome> {
        if !dry_run {
            self.sizes().insert(target.name.clone(), desired);
        }
        let status = if dry_run { OutcomeStatus::DryRun } else { OutcomeStatus::Applied };
        Box::pin(async move {
            Outcome { status, attempts: 1, remote_ids: Vec::new(), message: String::new() }
        })
    }

    fn start_job<'a>(
        &'a self,
        _job: &'a JobRef,
        _params: &'a BTreeMap<String, String>,
        _key: &'a str,
        _dry_run: bool,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            Outcome {
                status: OutcomeStatus::Failed,
                attempts: 0,
                remote_ids: Vec::new(),
                message: "no jobs in this bench".into(),
            }
        })
    }

    fn job_status<'a>(&'a self, _job: &'a JobRef, _id: &'a str) -> BoxFuture<'a, JobStatus> {
        Box::pin(async move { JobStatus::Unknown })
    }
}

/// Passes every call on to `inner`, counting writes and reads.
#[derive(Debug)]
struct CountingLedger {
    inner: Arc<dyn Ledger>,
    commits: AtomicU64,
    put_actions: AtomicU64,
    put_actuations: AtomicU64,
    reads: AtomicU64,
}

impl CountingLedger {
    fn new(inner: Arc<dyn Ledger>) -> Self {
        Self {
            inner,
            commits: AtomicU64::new(0),
            put_actions: AtomicU64::new(0),
            put_actuations: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }

    /// (commits, put_action, put_actuation, reads) so far.
    fn counts(&self) -> [u64; 4] {
        [&self.commits, &self.put_actions, &self.put_actuations, &self.reads]
            .map(|c| c.load(Ordering::Relaxed))
    }

    fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}

impl Ledger for CountingLedger {
    fn states(&self) -> Result<BTreeMap<String, PolicyState>, LedgerError> {
        self.read();
        self.inner.states()
    }

    fn commit(
        &self,
        fence: Fence,
        states: &[(&str, &PolicyState)],
        decisions: &[Decision],
    ) -> Result<(), LedgerError> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.inner.commit(fence, states, decisions)
    }

    fn commit_pending(
        &self,
        fence: Fence,
        states: &[(&str, &PolicyState)],
        actions: &[ActionRecord],
    ) -> Result<(), LedgerError> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.inner.commit_pending(fence, states, actions)
    }

    fn decisions(
        &self,
        policy: Option<&str>,
        rule: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Decision>, LedgerError> {
        self.read();
        self.inner.decisions(policy, rule, limit)
    }

    fn put_action(&self, fence: Fence, action: &ActionRecord) -> Result<(), LedgerError> {
        self.put_actions.fetch_add(1, Ordering::Relaxed);
        self.inner.put_action(fence, action)
    }

    fn put_actuation(
        &self,
        fence: Fence,
        key: &str,
        time: u64,
        status: ActionStatus,
        actuation: &serde_json::Value,
    ) -> Result<(), LedgerError> {
        self.put_actuations.fetch_add(1, Ordering::Relaxed);
        self.inner.put_actuation(fence, key, time, status, actuation)
    }

    fn action(&self, key: &str) -> Result<Option<ActionRecord>, LedgerError> {
        self.read();
        self.inner.action(key)
    }

    fn actions(&self) -> Result<Vec<ActionRecord>, LedgerError> {
        self.read();
        self.inner.actions()
    }

    fn fence(&self) -> Result<Fence, LedgerError> {
        self.read();
        self.inner.fence()
    }
}

/// What etcd itself counted: Txn RPCs (every code), raft proposals committed, keys put.
async fn etcd_counts(c: &reqwest::Client, endpoint: &str) -> Result<[f64; 3], String> {
    let text = c
        .get(format!("{endpoint}/metrics"))
        .send()
        .await
        .map_err(|e| format!("etcd /metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("etcd /metrics: {e}"))?;
    let sum = |name: &str, having: &str| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(having))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok([
        sum("grpc_server_handled_total", "grpc_method=\"Txn\""),
        sum("etcd_server_proposals_committed_total", ""),
        sum("etcd_mvcc_put_total", ""),
    ])
}

/// One ledger's figures.
struct LedgerRun {
    ticks: Vec<Duration>,
    /// Per timed tick: commits, put_action, put_actuation, reads.
    calls: [f64; 4],
    decisions: f64,
    actions: f64,
    /// Per timed tick, from etcd's counters (etcd only).
    etcd: Option<[f64; 3]>,
}

/// What every ledger's run shares: the policies, the source and the ticks' times.
struct TickSetup {
    policies: PathBuf,
    data: PathBuf,
    source: Arc<StoreSource>,
    /// The first tick's time (Unix nanos); each next tick is one second later.
    first: u64,
    /// Timed ticks.
    ticks: usize,
}

/// Runs the policy runtime over `ledger` as `leadership` leads: [`WARMUP`] ticks, then the
/// timed ones, with etcd's counters read before and after them when `etcd` names one.
async fn run_ledger(
    s: &TickSetup,
    ledger: Arc<dyn Ledger>,
    leadership: Arc<dyn Leadership>,
    etcd: Option<(&reqwest::Client, &str)>,
) -> Result<LedgerRun, String> {
    let (first, ticks) = (s.first, s.ticks);
    let counting = Arc::new(CountingLedger::new(ledger));
    let mut cfg = RuntimeConfig::new(s.policies.clone(), s.data.clone());
    cfg.leadership = leadership;
    // Jobs are polled every 30 s of virtual time by default; none run here.
    let rt = PolicyRuntime::with_ledger(
        cfg,
        counting.clone(),
        Arc::new(FakeExecutor::default()),
        s.source.clone(),
        Arc::new(stoker_collector::clock::SystemClock),
        None,
    )
    .map_err(|e| format!("policy runtime: {e}"))?;
    let loaded = rt.snapshot().policies.len();
    if loaded != NODES {
        return Err(format!("{loaded} policies loaded, not {NODES}"));
    }
    let second = 1_000_000_000u64;
    for i in 0..WARMUP {
        rt.tick(first + i as u64 * second).await;
    }
    let calls0 = counting.counts();
    let (dec0, act0) = (
        rt.counters().decisions.load(Ordering::Relaxed),
        rt.counters().actions.load(Ordering::Relaxed),
    );
    let etcd0 = match etcd {
        Some((c, e)) => Some(etcd_counts(c, e).await?),
        None => None,
    };
    let mut times = Vec::new();
    for i in WARMUP..WARMUP + ticks {
        let t0 = Instant::now();
        rt.tick(first + i as u64 * second).await;
        times.push(t0.elapsed());
    }
    let per = |a: u64, b: u64| (a - b) as f64 / ticks as f64;
    let calls1 = counting.counts();
    let etcd = match (etcd, etcd0) {
        (Some((c, e)), Some(before)) => {
            let after = etcd_counts(c, e).await?;
            Some([0, 1, 2].map(|k| (after[k] - before[k]) / ticks as f64))
        }
        _ => None,
    };
    if calls1[0] == calls0[0] {
        return Err("no commit in the timed ticks".into());
    }
    times.sort();
    Ok(LedgerRun {
        ticks: times,
        calls: [0, 1, 2, 3].map(|k| per(calls1[k], calls0[k])),
        decisions: per(rt.counters().decisions.load(Ordering::Relaxed), dec0),
        actions: per(rt.counters().actions.load(Ordering::Relaxed), act0),
        etcd,
    })
}

fn print_ledger(label: &str, r: &LedgerRun, base: Option<&LedgerRun>) {
    let p50 = quantile(&r.ticks, 0.5);
    let vs = base
        .map(|b| format!(", x{:.1} the in-memory p50", ms(p50) / ms(quantile(&b.ticks, 0.5))))
        .unwrap_or_default();
    println!(
        "  {label:<34} p50 {:>9.2} ms/tick, p95 {:>9.2} ms, max {:>9.2} ms over {} ticks{vs}",
        ms(p50),
        ms(quantile(&r.ticks, 0.95)),
        ms(r.ticks[r.ticks.len() - 1]),
        r.ticks.len()
    );
    println!(
        "  {:<34} ledger calls per tick: {:.1} commits, {:.1} put_action, {:.1} put_actuation, {:.1} reads ({:.1} decisions recorded, {:.1} actions)",
        "", r.calls[0], r.calls[1], r.calls[2], r.calls[3], r.decisions, r.actions
    );
    if let Some([txn, proposals, puts]) = r.etcd {
        println!(
            "  {:<34} etcd per tick: {txn:.1} Txn RPCs, {proposals:.1} raft proposals committed, {puts:.1} keys put",
            ""
        );
    }
}

async fn bench_ledger(args: &Args, etcd_bin: &str) -> Result<(), String> {
    let c = http_client()?;
    let root = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let policies = root.path().join("policies");
    std::fs::create_dir_all(&policies).map_err(|e| format!("{}: {e}", policies.display()))?;
    for n in 0..NODES {
        let file = policies.join(format!("node-{n}.yaml"));
        std::fs::write(&file, node_policy(n)).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    // Data ending a little before now, so the embedded store takes it as ingest would.
    let secs = HISTORY + WARMUP + args.ticks;
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1_700_000_000);
    let start = (wall - secs as u64 - 30) * 1_000_000_000;
    let t_gen = Instant::now();
    let store = tokio::task::block_in_place(|| fleet_store(start, secs))?;
    let source = Arc::new(StoreSource::new(store));
    let first = start + HISTORY as u64 * 1_000_000_000;
    println!(
        "policy tick by ledger: {NODES} policies (the 1000 rules of policy-bench (1), each due every tick) over an in-memory embedded store of {NODES} nodes x {GPUS} GPUs at 1 s ({secs} s, {} series, written in {:.1} s), fake executor; {WARMUP} warm-up ticks, then {} timed",
        NODES * (GPUS + 1),
        t_gen.elapsed().as_secs_f64(),
        args.ticks
    );
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let setup = TickSetup { policies, data, source, first, ticks: args.ticks };
    let alone: Arc<dyn Leadership> = Arc::new(Fence::SOLE);

    let memory = run_ledger(&setup, Arc::new(MemoryLedger::new()), alone.clone(), None).await?;
    print_ledger("MemoryLedger", &memory, None);

    let redb = PolicyStore::open(&setup.data).map_err(|e| format!("policy.redb: {e}"))?;
    let embedded = run_ledger(&setup, Arc::new(redb), alone, None).await?;
    print_ledger("embedded policy.redb (PolicyStore)", &embedded, Some(&memory));

    let etcd = start_etcd(etcd_bin, root.path(), &c).await?;
    let cfg = ClusterConfig {
        backend: ClusterBackend::Etcd,
        etcd_endpoints: vec![etcd.endpoint.clone()],
        member: Some("bench".into()),
        ..ClusterConfig::default()
    };
    let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
    let joined = cluster::start(&cfg, &cancel, &tracker).map_err(|e| format!("cluster: {e}"))?;
    let mut view = joined.view.clone();
    let led = tokio::time::timeout(SETTLE, view.wait_for(|v| v.role == Role::Leader)).await.is_ok();
    if !led {
        return Err(format!("the bench's member did not lead within {SETTLE:?}"));
    }
    let term = joined.view.borrow().term;
    let Some(ledger) = joined.ledger.clone() else {
        return Err("cluster::start gave no etcd ledger".into());
    };
    let leadership = joined.leadership.clone();
    let in_etcd = run_ledger(&setup, ledger, leadership, Some((&c, &etcd.endpoint))).await?;
    print_ledger(&format!("EtcdLedger (leader, term {term})"), &in_etcd, Some(&memory));
    cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    drop(joined);
    drop(etcd);
    Ok(())
}
