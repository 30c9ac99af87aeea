//! Policy engine benchmarks (DESIGN.md "Targets"): prints its figures, release builds only
//! make sense (`bench/policy/run.sh`).
//!
//! 1. **Evaluation per tick**: 1,000 scaling rules (one policy per node: two tracked metrics,
//!    a panic window and a step rule) over a synthetic 1,000-node source of 1,000 nodes × 8
//!    GPUs sampled every second, held in memory with per-series prefix sums and an index by
//!    `(metric, host.name)`, the way a store answers a windowed read. Target < 20 ms a tick.
//! 2. **Replay**: 7 days of 10 s data for 100 nodes: per-node request series generated with
//!    a daily cycle and noise, aggregated into the trace's offered load (the sum the policy's
//!    request signal sees), plus a per-node `inference.prediction.confidence` series that the
//!    retraining rules aggregate across nodes. The default policy set (`policies/`) is
//!    replayed through the real engine. Target < 10 s.
//! 3. **Decision quality**: the default policy set, the reactive fixture with targets at 80 %
//!    of the objective (`tests/policies/reactive.yaml`) and its predictive variant
//!    (`tests/policies/predictive.yaml`, the same plus a forecast floor), against the HPA and
//!    KPA baselines (on the default's metrics) on every trace in `tests/traces/`, side by
//!    side, with the oracle and each contender's replica-hours as a ratio to it and its scale
//!    actions per day, each scored after an unscored history (1 h on traces of 6 h or more,
//!    10 min on the short ones). `quality DIR` replays another policy set as the default.
//! 4. `traces [DIR]` (not part of a plain run): writes the seeded evaluation traces of
//!    [`stoker_collector::policy::tracegen`] (default `tests/traces/`).
//! 5. **The same tick over real stores** (`stores`; part of a plain run): the 1,000 rules of
//!    (1) over the same generated data held three ways — the in-memory source of (1), the
//!    collector's embedded [`Store`](stoker_collector::store::Store) through
//!    [`StoreSource`](stoker_collector::serve::StoreSource), and VictoriaMetrics (started
//!    here on loopback, the data remote-written first) through
//!    [`PromSource`](stoker_collector::remote::PromSource) — in ms per tick, reads and PromQL
//!    requests per tick, and whether the decisions agree. VictoriaMetrics is
//!    `$STOKER_VM_BIN`, else `victoria-metrics` on `PATH` or `/usr/bin/victoria-metrics`;
//!    without it that column is skipped.

// A benchmark measures the real clocks.
#![allow(clippy::disallowed_methods)]

#[path = "../shared/node_policy.rs"]
mod node_policy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stoker_collector::policy::check::{Policy, check_paths, check_text};
use stoker_collector::policy::driver::{self, Driver, TargetSize, applied_size};
use stoker_collector::policy::engine::PolicyState;
use stoker_collector::policy::replay::{self, Baseline, ReplayOptions, Trace};
use stoker_collector::policy::signal::{
    Histogram, NANOS, Selector, SignalError, SignalQuery, SignalSource, Stat, VersionSeen, nanos,
};
use stoker_collector::policy::tracegen;
use stoker_tests::{KillOnDrop, installed_bin, victoria_command};

const NODES: usize = 1000;
const GPUS: usize = 8;
/// Samples kept per series: 10 minutes at 1 s, more than the longest window the rules read.
const KEEP: usize = 600;

/// One series: the last `KEEP` samples at 1 s and their prefix sums.
struct Ring {
    values: Vec<f64>,
    /// prefix[i] = Σ values[..i] over the whole history, for O(1) window sums.
    prefix: Vec<f64>,
}

/// An in-memory store of `NODES × GPUS` GPU utilisation series and one latency series per
/// node, 1 s resolution, indexed by metric and `host.name`.
struct FleetSource {
    start: u64,
    len: usize,
    /// (metric, host) → series.
    index: BTreeMap<(String, String), Vec<Ring>>,
}

impl FleetSource {
    fn new(start: u64) -> Self {
        let mut index = BTreeMap::new();
        for n in 0..NODES {
            let host = format!("node-{n}");
            let gpus = (0..GPUS).map(|_| Ring { values: Vec::new(), prefix: vec![0.0] }).collect();
            index.insert(("hw.gpu.utilization".to_owned(), host.clone()), gpus);
            index.insert(
                ("inference.request.duration".to_owned(), host),
                vec![Ring { values: Vec::new(), prefix: vec![0.0] }],
            );
        }
        Self { start, len: 0, index }
    }

    /// Appends one second of samples to every series.
    fn advance(&mut self, rng: &mut u64) {
        let t = self.len as f64;
        for ((metric, host), rings) in self.index.iter_mut() {
            let node: f64 = host[5..].parse().unwrap_or(0.0);
            for (g, r) in rings.iter_mut().enumerate() {
                let base = 0.5 + 0.3 * ((t / 300.0) + node * 0.1 + g as f64).sin();
                let v = if metric == "hw.gpu.utilization" {
                    (base + 0.05 * noise(rng)).clamp(0.0, 1.0)
                } else {
                    0.05 + 0.08 * base + 0.01 * noise(rng)
                };
                let p = r.prefix[r.prefix.len() - 1];
                r.values.push(v);
                r.prefix.push(p + v);
                if r.values.len() > 2 * KEEP {
                    r.values.drain(..KEEP);
                    r.prefix.drain(..KEEP);
                }
            }
        }
        self.len += 1;
    }

    /// The series of `sel`: by host when the selector names one, else every host's.
    fn series<'a>(&'a self, sel: &'a Selector) -> Vec<&'a Ring> {
        match sel.matchers.get("host.name") {
            Some(h) => self
                .index
                .get(&(sel.metric.clone(), h.clone()))
                .map(|r| r.iter().collect())
                .unwrap_or_default(),
            None => self
                .index
                .iter()
                .filter(|((m, _), _)| *m == sel.metric)
                .flat_map(|(_, r)| r.iter())
                .collect(),
        }
    }
}

fn noise(state: &mut u64) -> f64 {
    // xorshift64: deterministic, no dependency.
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

impl SignalSource for FleetSource {
    fn read(&self, q: &SignalQuery, now: u64) -> Result<Option<f64>, SignalError> {
        let secs = (now.saturating_sub(self.start) / NANOS) as usize + 1;
        let hi_abs = secs.min(self.len);
        let w = (nanos(q.window) / NANOS) as usize;
        let lo_abs = hi_abs.saturating_sub(w);
        if hi_abs <= lo_abs {
            return Ok(None);
        }
        let series = self.series(&q.selector);
        if series.is_empty() {
            return Ok(None);
        }
        // Ring offsets: the ring holds the last `values.len()` samples up to `self.len`.
        let span = |r: &Ring| {
            let first = self.len - r.values.len();
            (lo_abs.max(first) - first, hi_abs - first)
        };
        Ok(match q.stat {
            Stat::Mean | Stat::Sum | Stat::Count => {
                let (mut s, mut n) = (0.0, 0usize);
                for r in &series {
                    let (lo, hi) = span(r);
                    s += r.prefix[hi] - r.prefix[lo];
                    n += hi - lo;
                }
                match q.stat {
                    Stat::Count => Some(n as f64),
                    _ if n == 0 => None,
                    Stat::Mean => Some(s / n as f64),
                    _ => Some(s),
                }
            }
            Stat::Min | Stat::Max | Stat::Last => {
                let it = series.iter().flat_map(|r| {
                    let (lo, hi) = span(r);
                    r.values[lo..hi].iter().copied()
                });
                match q.stat {
                    Stat::Min => it.reduce(f64::min),
                    Stat::Max => it.reduce(f64::max),
                    _ => it.last(),
                }
            }
            Stat::Quantile(p) => {
                let mut v: Vec<f64> = series
                    .iter()
                    .flat_map(|r| {
                        let (lo, hi) = span(r);
                        r.values[lo..hi].iter().copied()
                    })
                    .collect();
                stoker_collector::policy::series::quantile(&mut v, p)
            }
            Stat::Rate | Stat::Increase => None,
        })
    }

    fn histogram(&self, _: &Selector, _: u64, _: u64) -> Result<Option<Histogram>, SignalError> {
        Ok(None)
    }

    fn counts_by(
        &self,
        _: &Selector,
        _: &str,
        _: u64,
        _: u64,
    ) -> Result<BTreeMap<String, f64>, SignalError> {
        Ok(BTreeMap::new())
    }

    fn latest_version(&self, _: &Selector, _: u64) -> Result<Option<VersionSeen>, SignalError> {
        Ok(None)
    }
}

/// A source that passes every call on to `inner`, counting the reads and those that had a
/// value and, when `timed`, the time spent in them.
struct CountingSource<'a> {
    inner: &'a dyn SignalSource,
    timed: bool,
    reads: std::cell::Cell<u64>,
    answered: std::cell::Cell<u64>,
    spent: std::cell::Cell<Duration>,
}

impl<'a> CountingSource<'a> {
    fn new(inner: &'a dyn SignalSource, timed: bool) -> Self {
        Self {
            inner,
            timed,
            reads: std::cell::Cell::new(0),
            answered: std::cell::Cell::new(0),
            spent: std::cell::Cell::new(Duration::ZERO),
        }
    }
}

impl SignalSource for CountingSource<'_> {
    fn read(&self, q: &SignalQuery, now: u64) -> Result<Option<f64>, SignalError> {
        let t0 = self.timed.then(Instant::now);
        let r = self.inner.read(q, now);
        if let Some(t0) = t0 {
            self.spent.set(self.spent.get() + t0.elapsed());
        }
        self.reads.set(self.reads.get() + 1);
        if matches!(r, Ok(Some(_))) {
            self.answered.set(self.answered.get() + 1);
        }
        r
    }

    fn histogram(
        &self,
        s: &Selector,
        from: u64,
        to: u64,
    ) -> Result<Option<Histogram>, SignalError> {
        self.inner.histogram(s, from, to)
    }

    fn counts_by(
        &self,
        s: &Selector,
        by: &str,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<String, f64>, SignalError> {
        self.inner.counts_by(s, by, from, to)
    }

    fn latest_version(&self, s: &Selector, now: u64) -> Result<Option<VersionSeen>, SignalError> {
        self.inner.latest_version(s, now)
    }
}

fn node_policy(n: usize) -> Policy {
    let yaml = node_policy::node_policy_yaml(n, None);
    let (p, _, diags) = check_text(Path::new(&format!("node-{n}.yaml")), &yaml);
    match p {
        Some(p) => p,
        None => panic!("bench policy does not check: {diags:?}"),
    }
}

fn bench_evaluation() {
    let start = 1_700_000_000 * NANOS;
    let mut src = FleetSource::new(start);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..KEEP {
        src.advance(&mut rng);
    }
    let policies: Vec<Policy> = (0..NODES).map(node_policy).collect();
    let mut states = vec![PolicyState::default(); NODES];
    let mut sizes = vec![8u32; NODES];
    let mut ticks = Vec::new();
    let mut actions = 0;
    let mut could_act = 0;
    // Scheduled, sized and applied as the live runtime does.
    let mut driver = Driver::new();
    for _ in 0..60 {
        let now = start + (src.len as u64 - 1) * NANOS;
        let t0 = Instant::now();
        for ((p, st), size) in policies.iter().zip(states.iter_mut()).zip(sizes.iter_mut()) {
            let resizer = || Some(TargetSize { provisioned: *size, ready: None });
            for d in driver.tick(p, &src, st, resizer, now).unwrap_or_default() {
                could_act += usize::from(d.could_act());
                if let Some(to) = applied_size(&d) {
                    *size = to;
                    actions += 1;
                }
            }
        }
        ticks.push(t0.elapsed());
        src.advance(&mut rng);
    }
    // Where a tick goes: 10 more ticks with every read timed (outside the figures above, since
    // timing each read adds to the tick), to split the source's reads from the engine's work.
    let timed = CountingSource::new(&src, true);
    let t0 = Instant::now();
    let now = start + (src.len as u64 - 1) * NANOS;
    for _ in 0..10 {
        for ((p, st), size) in policies.iter().zip(states.iter_mut()).zip(sizes.iter_mut()) {
            let resizer = Some(TargetSize { provisioned: *size, ready: None });
            let _ = driver::evaluate(p, &timed, st, resizer, now);
        }
    }
    let (all, reads) = (t0.elapsed() / 10, timed.spent.get() / 10);
    ticks.sort();
    let mean = ticks.iter().sum::<Duration>() / ticks.len() as u32;
    println!(
        "evaluation: 1000 rules over 1000 nodes x 8 GPUs at 1 s: mean {:.2} ms/tick, p50 {:.2} ms, max {:.2} ms over {} ticks ({} resize actions, {} of {} decisions could act); target < 20 ms",
        ms(mean),
        ms(ticks[ticks.len() / 2]),
        ms(ticks[ticks.len() - 1]),
        ticks.len(),
        actions,
        could_act,
        ticks.len() * NODES
    );
    println!(
        "  of a tick with each read timed ({:.2} ms): {} reads answered by the source in {:.2} ms, the engine's own work {:.2} ms",
        ms(all),
        timed.reads.get() / 10,
        ms(reads),
        ms(all.saturating_sub(reads))
    );
}

// ---- 5. the same tick over real stores ----

/// Seconds of data written to each store: the ring's history, then one second per tick.
const STORE_TICKS: usize = 60;
/// Ticks that evaluate every rule (`driver::evaluate`), each at its own second.
const STORE_FULL_TICKS: usize = 10;

/// What one source did over the ticks of [`ticks_over`].
struct TickFigures {
    /// Driver ticks (each policy when due, as the runtime schedules it).
    ticks: Vec<Duration>,
    /// Ticks evaluating every rule.
    full: Vec<Duration>,
    reads: u64,
    answered: u64,
    /// Remote requests over the driver ticks and over the full ticks.
    requests: (u64, u64),
    /// Each driver tick's decisions, as text, to compare sources.
    decisions: Vec<Vec<String>>,
}

/// [`STORE_TICKS`] driver ticks of `policies` over `src` at `now_of(0..)`, then
/// [`STORE_FULL_TICKS`] ticks that evaluate every rule, each at a later second (a remote
/// source keeps its answers for one `now`, so a repeated `now` would be free).
fn ticks_over(
    policies: &[Policy],
    src: &dyn SignalSource,
    now_of: &dyn Fn(usize) -> u64,
    requests: &dyn Fn() -> u64,
) -> TickFigures {
    let src = CountingSource::new(src, false);
    let mut states = vec![PolicyState::default(); policies.len()];
    let mut sizes = vec![8u32; policies.len()];
    let mut driver = Driver::new();
    let mut ticks = Vec::new();
    let mut decisions = Vec::new();
    let r0 = requests();
    for i in 0..STORE_TICKS {
        let now = now_of(i);
        let mut seen = Vec::new();
        let t0 = Instant::now();
        for ((p, st), size) in policies.iter().zip(states.iter_mut()).zip(sizes.iter_mut()) {
            let resizer = || Some(TargetSize { provisioned: *size, ready: None });
            for d in driver.tick(p, &src, st, resizer, now).unwrap_or_default() {
                if let Some(to) = applied_size(&d) {
                    *size = to;
                }
                seen.push(format!("{} {} {:?} {:?}", d.policy, d.rule, d.recommendation, d.action));
            }
        }
        ticks.push(t0.elapsed());
        decisions.push(seen);
    }
    let r1 = requests();
    let mut full = Vec::new();
    for i in STORE_TICKS..STORE_TICKS + STORE_FULL_TICKS {
        let now = now_of(i);
        let t0 = Instant::now();
        for ((p, st), size) in policies.iter().zip(states.iter_mut()).zip(sizes.iter()) {
            let resizer = Some(TargetSize { provisioned: *size, ready: None });
            let _ = driver::evaluate(p, &src, st, resizer, now);
        }
        full.push(t0.elapsed());
    }
    let r2 = requests();
    TickFigures {
        ticks,
        full,
        reads: src.reads.get(),
        answered: src.answered.get(),
        requests: (r1 - r0, r2 - r1),
        decisions,
    }
}

fn print_ticks(label: &str, f: &TickFigures, reference: Option<&TickFigures>, remote: bool) {
    let stats = |t: &[Duration]| {
        let mut s = t.to_vec();
        s.sort();
        let mean = s.iter().sum::<Duration>() / s.len().max(1) as u32;
        (ms(mean), ms(s[s.len() / 2]), ms(s[s.len() - 1]))
    };
    let (mean, p50, max) = stats(&f.ticks);
    let (fmean, fp50, fmax) = stats(&f.full);
    let n = (f.ticks.len() + f.full.len()) as u64;
    let agree = reference.map(|r| {
        let same = r.decisions.iter().zip(&f.decisions).filter(|(a, b)| a == b).count();
        format!(
            "; decisions equal to the in-memory source's in {same} of {} ticks",
            r.decisions.len()
        )
    });
    println!(
        "  {label:<34} driver tick mean {mean:>8.2} ms, p50 {p50:>8.2} ms, max {max:>8.2} ms ({} ticks); every-rule tick mean {fmean:>8.2} ms, p50 {fp50:.2} ms, max {fmax:.2} ms ({} ticks)",
        f.ticks.len(),
        f.full.len()
    );
    let requests = if remote {
        format!(
            "; PromQL requests/tick {:.2} (driver ticks, catalog read included), {:.2} (every-rule ticks)",
            f.requests.0 as f64 / f.ticks.len() as f64,
            f.requests.1 as f64 / f.full.len() as f64
        )
    } else {
        String::new()
    };
    println!(
        "  {:<34} {:.0} reads/tick, {:.1} % with a value{requests}{}",
        "",
        f.reads as f64 / n as f64,
        100.0 * f.answered as f64 / f.reads.max(1) as f64,
        agree.unwrap_or_default()
    );
}

/// VictoriaMetrics single-node on a loopback port, its caches off and no latency offset
/// ([`stoker_tests::victoria_command`], as `collector/tests/integration/remote.rs` runs it);
/// killed when dropped.
struct Victoria {
    _child: KillOnDrop,
    url: String,
    _dir: tempfile::TempDir,
}

/// `STOKER_VM_BIN`, else `victoria-metrics` on `PATH` or in `/usr/bin`.
fn victoria_bin() -> Option<String> {
    std::env::var("STOKER_VM_BIN").ok().or_else(|| installed_bin("victoria-metrics"))
}

async fn start_victoria(bin: &str, c: &reqwest::Client) -> Result<Victoria, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child =
        victoria_command(bin, dir.path(), port).spawn().map_err(|e| format!("{bin}: {e}"))?;
    let vm =
        Victoria { _child: KillOnDrop(child), url: format!("http://127.0.0.1:{port}"), _dir: dir };
    for _ in 0..200 {
        if c.get(format!("{}/health", vm.url)).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(vm);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{bin} did not get ready at {}", vm.url))
}

/// One second of the fleet: `(metric, host, gpu, value)` of every series' newest sample.
fn newest(src: &FleetSource) -> Vec<(&str, &str, usize, f64)> {
    src.index
        .iter()
        .flat_map(|((m, h), rings)| {
            rings
                .iter()
                .enumerate()
                .filter_map(move |(g, r)| r.values.last().map(|v| (m.as_str(), h.as_str(), g, *v)))
        })
        .collect()
}

fn bench_stores() {
    use stoker_collector::remote::wire::{Label, Sample, TimeSeries, WriteRequest};
    use stoker_collector::store::{PointValue, Store, StoreConfig};

    let secs = KEEP + STORE_TICKS + STORE_FULL_TICKS;
    // Data ending a little before now, so the embedded store accepts it as ingest would.
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1_700_000_000);
    let start = (wall - secs as u64 - 30) * NANOS;
    let mut src = FleetSource::new(start);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let store = match Store::open(
        StoreConfig { data_dir: None, ..StoreConfig::default() },
        std::sync::Arc::new(stoker_collector::clock::SystemClock),
    ) {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => panic!("in-memory store: {e}"),
    };
    // VictoriaMetrics gets the same samples by remote-write, 10 s of the fleet per request.
    let mut batches: Vec<WriteRequest> = Vec::new();
    let mut series: BTreeMap<(String, String, usize), usize> = BTreeMap::new();
    let t_gen = Instant::now();
    let mut stored = 0u64;
    for sec in 0..secs {
        src.advance(&mut rng);
        let ts = start + sec as u64 * NANOS;
        let mut w = store.writer();
        if sec % 10 == 0 {
            batches.push(WriteRequest::default());
            series.clear();
        }
        let Some(batch) = batches.last_mut() else { continue };
        for (metric, host, g, v) in newest(&src) {
            let gpu = format!("GPU-{}-{g}", &host[5..]);
            let pairs: Vec<(&str, &str)> = if metric == "hw.gpu.utilization" {
                vec![("host.name", host), ("hw.id", gpu.as_str())]
            } else {
                vec![("host.name", host)]
            };
            if w.append(metric, &pairs, ts, PointValue::Gauge(v)).is_ok() {
                stored += 1;
            }
            let at = *series.entry((metric.to_owned(), host.to_owned(), g)).or_insert_with(|| {
                let mut labels = vec![Label {
                    name: "__name__".into(),
                    value: stoker_collector::remote::names::base(metric),
                }];
                labels.extend(pairs.iter().map(|(k, v)| Label {
                    name: stoker_collector::remote::names::label(k),
                    value: (*v).to_owned(),
                }));
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                batch.timeseries.push(TimeSeries { labels, samples: Vec::new() });
                batch.timeseries.len() - 1
            });
            batch.timeseries[at]
                .samples
                .push(Sample { value: v, timestamp: (ts / 1_000_000) as i64 });
        }
        let _ = w.finish();
    }
    let samples: usize =
        batches.iter().flat_map(|b| b.timeseries.iter()).map(|s| s.samples.len()).sum();
    println!();
    println!(
        "evaluation over real stores: the 1000 rules of (1) over {secs} s of the same generated data ({} series, {samples} samples; embedded store took {stored}, generated in {:.1} s), {STORE_TICKS} driver ticks at 1 s then {STORE_FULL_TICKS} ticks evaluating every rule",
        src.index.values().map(Vec::len).sum::<usize>(),
        t_gen.elapsed().as_secs_f64()
    );
    let now_of = |i: usize| start + (KEEP + i) as u64 * NANOS;
    let policies: Vec<Policy> = (0..NODES).map(node_policy).collect();
    let none = || 0u64;

    let mem = ticks_over(&policies, &src, &now_of, &none);
    print_ticks("in-memory source (as in (1))", &mem, None, false);

    let embedded = stoker_collector::serve::StoreSource::new(store.clone());
    let emb = ticks_over(&policies, &embedded, &now_of, &none);
    print_ticks("embedded store (StoreSource)", &emb, Some(&mem), false);
    drop(embedded);
    drop(store);

    let Some(bin) = victoria_bin() else {
        println!(
            "  victoria-metrics: not installed (.ci/install-victoria-metrics.sh, or STOKER_VM_BIN); remote column skipped"
        );
        return;
    };
    let rt =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => panic!("HTTP client: {e}"),
    };
    let vm = match rt.block_on(start_victoria(&bin, &c)) {
        Ok(vm) => vm,
        Err(e) => {
            println!("  victoria-metrics: {e}; remote column skipped");
            return;
        }
    };
    let t_write = Instant::now();
    let written = rt.block_on(async {
        let mut ok = 0usize;
        for b in &batches {
            use prost::Message as _;
            let body =
                snap::raw::Encoder::new().compress_vec(&b.encode_to_vec()).unwrap_or_default();
            let r = c
                .post(format!("{}/api/v1/write", vm.url))
                .header("content-type", "application/x-protobuf")
                .header("content-encoding", "snappy")
                .header("x-prometheus-remote-write-version", "0.1.0")
                .body(body)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    ok += b.timeseries.iter().map(|s| s.samples.len()).sum::<usize>();
                }
                Ok(r) => eprintln!("  remote-write: {}", r.status()),
                Err(e) => eprintln!("  remote-write: {e}"),
            }
        }
        let _ = c.get(format!("{}/internal/force_flush", vm.url)).send().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        ok
    });
    println!(
        "  remote-wrote {written} samples to victoria-metrics in {:.1} s ({:.0} samples/s, one request per 10 s of the fleet)",
        t_write.elapsed().as_secs_f64(),
        written as f64 / t_write.elapsed().as_secs_f64()
    );
    drop(batches);
    let config = stoker_collector::remote::RemoteConfig {
        query_url: Some(vm.url.clone()),
        write_url: Some(format!("{}/api/v1/write", vm.url)),
        ..stoker_collector::remote::RemoteConfig::default()
    };
    let client = match stoker_collector::remote::PromClient::new(&config, None) {
        Ok(c) => c,
        Err(e) => panic!("PromClient: {e}"),
    };
    let prom = stoker_collector::remote::PromSource::new(
        client,
        std::sync::Arc::new(stoker_collector::clock::SystemClock),
    );
    let requests = || prom.client().requests();
    let remote = ticks_over(&policies, &prom, &now_of, &requests);
    print_ticks("victoria-metrics (PromSource)", &remote, Some(&mem), true);
    drop(vm);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// 7 days of 10 s data for 100 nodes, aggregated as the policies read it.
fn fleet_trace() -> Trace {
    let step = 10.0;
    let steps = (7 * 86_400) / 10;
    let nodes = 100;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut load = vec![0.0; steps];
    let mut recorded = Vec::new();
    for n in 0..nodes {
        let phase = n as f64 * 0.01;
        let mut conf = Vec::with_capacity(steps);
        for (i, l) in load.iter_mut().enumerate() {
            let t = i as f64 * step;
            let day = (std::f64::consts::TAU * (t / 86_400.0 - 0.42 + phase)).sin();
            // Per node 1–12 req/s; the fleet 100–1200 req/s like the diurnal trace.
            *l += (6.5 + 5.5 * day + 0.5 * noise(&mut rng)).max(0.0);
            conf.push((0.9 + 0.05 * noise(&mut rng)).clamp(0.0, 1.0));
        }
        let mut attrs = BTreeMap::new();
        attrs.insert("model.name".to_owned(), "resnet".to_owned());
        attrs.insert("model.version".to_owned(), "v1".to_owned());
        attrs.insert("host.name".to_owned(), format!("node-{n}"));
        recorded.push(("inference.prediction.confidence".to_owned(), attrs, conf));
    }
    Trace { start: 1_700_000_000 * NANOS, step: Duration::from_secs(10), load, recorded }
}

fn load_policies(dir: &Path) -> Vec<Policy> {
    match replay::usable(&check_paths(&[dir.to_path_buf()])) {
        Ok(p) => p,
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

fn bench_replay(root: &Path) {
    let t0 = Instant::now();
    let trace = fleet_trace();
    let generated = t0.elapsed();
    let policies = load_policies(&root.join("policies"));
    let t1 = Instant::now();
    let report = replay::replay(
        "7d x 100 nodes (generated)",
        &policies,
        &trace,
        None,
        &ReplayOptions::default(),
    );
    let took = t1.elapsed();
    let report = match report {
        Ok(r) => r,
        Err(e) => panic!("replay: {e}"),
    };
    let c = &report.contenders[0];
    println!(
        "replay: 7 days of 10 s data for 100 nodes ({} steps, {} series): {:.2} s (trace generated in {:.2} s); target < 10 s; {} ups, {} downs, {} retrain jobs, {:.0} replica-hours",
        trace.load.len(),
        trace.recorded.len() + 1,
        took.as_secs_f64(),
        generated.as_secs_f64(),
        c.scale_ups,
        c.scale_downs,
        c.retrain_jobs,
        c.replica_hours
    );
}

/// Unscored history at the start of each trace: an hour on traces of 6 hours or more (the
/// forecast fits on that hour), 10 minutes on the short spike and flash-crowd traces (past the
/// cold start, before their events).
fn quality_history(trace: &Trace) -> Duration {
    if trace.load.len() as f64 * trace.step.as_secs_f64() >= 6.0 * 3600.0 {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(600)
    }
}

fn bench_quality(root: &Path, policies: &Path) {
    let default = load_policies(policies);
    let fixture = |name: &str| {
        let p = root.join("tests/policies").join(name);
        p.exists().then(|| load_policies(&p))
    };
    let reactive = fixture("reactive.yaml");
    let predictive = fixture("predictive.yaml");
    let mut traces: Vec<PathBuf> = std::fs::read_dir(root.join("tests/traces"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    traces.sort();
    println!();
    println!(
        "decision quality (SLO: p95 of inference.request.duration over 30 s <= 150 ms; scored after the history):"
    );
    println!(
        "{:<16} {:<18} {:>9} {:>14} {:>12} {:>9} {:>11} {:>8} {:>8}",
        "trace",
        "contender",
        "history",
        "SLO-viol-min",
        "replica-h",
        "x-oracle",
        "actions/d",
        "ups",
        "downs"
    );
    for file in traces {
        let trace = match replay::load_trace(&file) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let history = quality_history(&trace);
        let opts = ReplayOptions { history: Some(history), ..ReplayOptions::default() };
        let t0 = Instant::now();
        let mut rows = Vec::new();
        let mut oracle = None;
        for (label, b) in [("hpa", Baseline::Hpa), ("kpa", Baseline::Kpa)] {
            match replay::replay(&name, &default, &trace, Some(&b), &opts) {
                Ok(r) => {
                    if rows.is_empty() {
                        rows.push(("default".to_owned(), r.contenders[0].clone()));
                        oracle = r.oracle.clone();
                    }
                    rows.push((label.to_owned(), r.contenders[1].clone()));
                }
                Err(e) => panic!("{e}"),
            }
        }
        for (i, (label, p)) in [("reactive (80 %)", &reactive), ("predictive (80 %)", &predictive)]
            .into_iter()
            .enumerate()
        {
            if let Some(p) = p {
                match replay::replay(&name, p, &trace, None, &opts) {
                    Ok(r) => rows.insert(1 + i, (label.to_owned(), r.contenders[0].clone())),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        rows.extend(oracle.map(|o| ("oracle".to_owned(), o)));
        for (label, c) in rows {
            println!(
                "{:<16} {:<18} {:>9} {:>14} {:>12.1} {:>9} {:>11.1} {:>8} {:>8}",
                name,
                label,
                humantime::format_duration(history).to_string(),
                c.slo_violation_minutes.map(|m| format!("{m:.1}")).unwrap_or_else(|| "-".into()),
                c.replica_hours,
                c.oracle_ratio.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
                c.actions_per_day,
                c.scale_ups,
                c.scale_downs
            );
        }
        eprintln!("  ({name}: {:.2} s for all contenders)", t0.elapsed().as_secs_f64());
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; timings are only meaningful with --release");
    }
    let only = std::env::args().nth(1);
    let want = |s: &str| only.as_deref().is_none_or(|o| o == s);
    if want("eval") {
        bench_evaluation();
    }
    if want("replay") {
        bench_replay(&root);
    }
    if want("stores") {
        bench_stores();
    }
    if want("quality") {
        // `quality DIR` runs another policy set as the default (to compare candidates).
        let dir = match (only.as_deref(), std::env::args().nth(2)) {
            (Some("quality"), Some(d)) => PathBuf::from(d),
            _ => root.join("policies"),
        };
        bench_quality(&root, &dir);
    }
    // Not part of a plain run: writes the seeded evaluation traces (`traces [DIR]`, default
    // tests/traces).
    if only.as_deref() == Some("traces") {
        let dir =
            std::env::args().nth(2).map(PathBuf::from).unwrap_or_else(|| root.join("tests/traces"));
        for shape in tracegen::Shape::ALL {
            let file = dir.join(format!("{}.csv", shape.file_stem()));
            if let Err(e) = std::fs::write(&file, tracegen::to_csv(shape, tracegen::SEED)) {
                panic!("{}: cannot write: {e}", file.display());
            }
            println!("wrote {}", file.display());
        }
    }
}
