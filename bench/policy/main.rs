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

// A benchmark measures the real clocks.
#![allow(clippy::disallowed_methods)]

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

/// A source that counts and times the reads it passes on.
struct TimedSource<'a> {
    inner: &'a FleetSource,
    reads: std::cell::Cell<usize>,
    spent: std::cell::Cell<Duration>,
}

impl SignalSource for TimedSource<'_> {
    fn read(&self, q: &SignalQuery, now: u64) -> Result<Option<f64>, SignalError> {
        let t0 = Instant::now();
        let r = self.inner.read(q, now);
        self.spent.set(self.spent.get() + t0.elapsed());
        self.reads.set(self.reads.get() + 1);
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
    let yaml = format!(
        r#"apiVersion: stoker/v1
kind: Policy
metadata: {{name: node-{n}}}
spec:
  target: {{name: pool-{n}, min: 1, max: 64, actuator: kubernetes, kubernetes: {{namespace: infer, deployment: pool-{n}}}}}
  scale:
    metrics:
      - name: p95-latency
        signal: {{metric: inference.request.duration, stat: p95, window: 30s, where: {{host.name: node-{n}}}}}
        target: {{value: 0.100}}
      - name: gpu-busy
        signal: {{metric: hw.gpu.utilization, stat: mean, window: 60s, where: {{host.name: node-{n}}}}}
        target: {{value: 0.60}}
    steps:
      - name: gpu-saturated
        when: {{signal: {{metric: hw.gpu.utilization, stat: min, window: 30s, where: {{host.name: node-{n}}}, gte: 0.95}}}}
        for: 30s
        change: {{pods: 2}}
    panic: {{window: 10s, threshold: 2.0}}
"#
    );
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
    let timed = TimedSource {
        inner: &src,
        reads: std::cell::Cell::new(0),
        spent: std::cell::Cell::new(Duration::ZERO),
    };
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
