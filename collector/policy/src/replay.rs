//! `policy replay`: backtests policies on a recorded trace through the real engine, against a
//! simulated service, side by side with the Kubernetes HPA and Knative KPA algorithms.
//!
//! **Trace** (CSV): `#` comment lines, a header `time,offered_load[,series…]`, then rows.
//! `time` is seconds (relative or Unix), rows evenly spaced; `offered_load` is requests per
//! second arriving at the service. Further columns are recorded series named
//! `metric{attr="value"}` (quoted as CSV needs), served to policies as they are (for example
//! `inference.prediction.confidence` for retraining rules). JSON traces carry the same:
//! `{"series": [{"name": "offered_load", "points": [[t, v], …]}, …]}`.
//!
//! **Capacity model** (from the scaling policy's `target.capacity`, or replay options): each
//! ready replica serves `perReplicaThroughput` requests/s with `serviceTime`; a new replica
//! serves after `warmup`; removed replicas stop at once. Per step: capacity C = ready × μ;
//! a backlog queue carries what C could not serve; utilisation = served / C; p95 latency =
//! serviceTime + backlog / C + ln(20)·ρ / (μ·(1−ρ)) with ρ capped at 0.99 (the M/M/1 tail for
//! the queueing part), capped at 60 s. The simulator records, per contender,
//! `inference.request.duration` (p95 per step), `inference.queue.duration`,
//! `hw.gpu.utilization`, `inference.requests` (a counter of served requests),
//! `inference.replicas` (ready) and `offered_load`, so each policy sees the consequences of
//! its own replica counts.
//!
//! **Evaluation**: each of our policies at its own interval, as the live runtime schedules it
//! (every step is a tick; a policy is due one interval after its last evaluation); HPA every 15 s sync
//! (rounded up to the trace step) on the scaling policy's own metrics and targets, with
//! metrics as of one metrics-server resolution (15 s) ago, tolerance 0.1, 300 s scale-down
//! stabilization, scale-up max(100 %, 4 pods)/15 s, scale-down 100 %/15 s; KPA every 2 s tick
//! (rounded up) in RPS mode on offered load with target 70 % of a replica's throughput,
//! stable window 60 s, panic window 6 s, panic threshold 200 %, max scale-up rate 1000,
//! max scale-down rate 2, scale-down delay 0.
//!
//! **History** (`ReplayOptions::history`, `--history`): the trace's first part is run by every
//! contender (forecasts fit on it, sizes settle) but not scored; the report counts from there.
//!
//! **Ready and warming**: our policies are offered the provisioned size and the ready count
//! (replicas past their warm-up), as a resizer that reports both does
//! ([`engine::evaluate_sized`]); HPA and KPA keep their own treatment (HPA on the provisioned
//! size, as it does for custom metrics; KPA on the ready count).
//!
//! **Oracle**: beside the contenders, [`oracle_size`] at every step: the fewest replicas whose
//! modelled p95 (no backlog) holds the SLO objective at that step's load, `min`/`max` kept,
//! no warm-up, through the same simulation and scoring; each contender's replica-hours are
//! reported as a ratio to it.
//!
//! **Report**: actions (and actions per day of scored trace), replica-hours and their ratio to
//! the oracle's, SLO-violation minutes (steps where the policy's `slo` signal exceeds its
//! objective), worst latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::check::{CheckReport, Policy};
use super::driver::{Driver, TargetSize, applied_size, starts_job};
use super::engine::{self, PolicyState};
use super::format::{CapacitySpec, ScaleSpec, SloSpec};
use super::series::{parse_series_name, quantile};
use super::signal::{
    Histogram, NANOS, Selector, SignalError, SignalQuery, SignalSource, Stat, VersionSeen, nanos,
};

/// Errors of replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace could not be read or parsed.
    #[error("{file}: {message}")]
    Trace {
        /// The trace file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The policies cannot be replayed.
    #[error("{0}")]
    Policies(String),
}

/// A recorded trace: evenly spaced steps with offered load and recorded series.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// Time of the first row, Unix nanos.
    pub start: u64,
    /// Step between rows.
    pub step: Duration,
    /// Offered load per step, requests per second.
    pub load: Vec<f64>,
    /// Recorded series: (metric, attributes, values per step; NaN = missing).
    pub recorded: Vec<(String, BTreeMap<String, String>, Vec<f64>)>,
}

fn trace_err(file: &Path, message: impl Into<String>) -> ReplayError {
    ReplayError::Trace { file: file.display().to_string(), message: message.into() }
}

/// Splits one CSV line, honouring double quotes.
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_owned()).collect()
}

/// Reads a CSV or JSON trace (by extension `.json`, else CSV).
pub fn load_trace(file: &Path) -> Result<Trace, ReplayError> {
    let text =
        std::fs::read_to_string(file).map_err(|e| trace_err(file, format!("cannot read: {e}")))?;
    let (times, columns) = if file.extension().is_some_and(|e| e == "json") {
        parse_json(&text).map_err(|m| trace_err(file, m))?
    } else {
        parse_csv(&text).map_err(|m| trace_err(file, m))?
    };
    if times.len() < 2 {
        return Err(trace_err(file, "needs at least two rows"));
    }
    let step = times[1] - times[0];
    if step.is_nan() || step <= 0.0 {
        return Err(trace_err(file, "time must increase"));
    }
    for w in times.windows(2) {
        if ((w[1] - w[0]) - step).abs() > step * 1e-3 {
            return Err(trace_err(
                file,
                format!("rows must be evenly spaced: {} then {}", w[0], w[1]),
            ));
        }
    }
    let mut load = None;
    let mut recorded = Vec::new();
    for (name, values) in columns {
        if name == "offered_load" {
            load = Some(values);
        } else {
            let (metric, attrs) = parse_series_name(&name).map_err(|m| trace_err(file, m))?;
            recorded.push((metric, attrs, values));
        }
    }
    let load = load.ok_or_else(|| trace_err(file, "no `offered_load` column"))?;
    Ok(Trace {
        start: (times[0].max(0.0) * NANOS as f64) as u64,
        step: Duration::from_secs_f64(step),
        load: load.into_iter().map(|v| if v.is_finite() { v.max(0.0) } else { 0.0 }).collect(),
        recorded,
    })
}

type Columns = (Vec<f64>, Vec<(String, Vec<f64>)>);

fn parse_csv(text: &str) -> Result<Columns, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let (_, header) = lines.next().ok_or("empty trace")?;
    let names = csv_fields(header);
    if names.first().map(String::as_str) != Some("time") {
        return Err("the first column must be `time`".into());
    }
    let mut times = Vec::new();
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); names.len() - 1];
    for (n, line) in lines {
        let f = csv_fields(line);
        if f.len() != names.len() {
            return Err(format!("line {}: {} fields, header has {}", n + 1, f.len(), names.len()));
        }
        times
            .push(f[0].parse::<f64>().map_err(|_| format!("line {}: bad time {:?}", n + 1, f[0]))?);
        for (i, v) in f[1..].iter().enumerate() {
            let x = if v.is_empty() || v == "_" {
                f64::NAN
            } else {
                v.parse().map_err(|_| format!("line {}: bad value {v:?}", n + 1))?
            };
            cols[i].push(x);
        }
    }
    Ok((times, names.into_iter().skip(1).zip(cols).collect()))
}

fn parse_json(text: &str) -> Result<Columns, String> {
    #[derive(serde::Deserialize)]
    struct File {
        series: Vec<S>,
    }
    #[derive(serde::Deserialize)]
    struct S {
        name: String,
        points: Vec<(f64, Option<f64>)>,
    }
    let f: File = serde_json::from_str(text).map_err(|e| format!("invalid JSON trace: {e}"))?;
    let first = f.series.first().ok_or("no series")?;
    let times: Vec<f64> = first.points.iter().map(|p| p.0).collect();
    let mut cols = Vec::new();
    for s in f.series {
        if s.points.len() != times.len() {
            return Err(format!(
                "series {:?} has {} points, the first has {}",
                s.name,
                s.points.len(),
                times.len()
            ));
        }
        cols.push((s.name, s.points.into_iter().map(|p| p.1.unwrap_or(f64::NAN)).collect()));
    }
    Ok((times, cols))
}

/// One series of values per step with prefix sums for O(1) means.
#[derive(Clone, Debug)]
struct Column {
    metric: String,
    attrs: BTreeMap<String, String>,
    values: Vec<f64>,
    /// prefix[i] = Σ values[..i] (missing as 0), count[i] = present values in ..i.
    prefix: Vec<f64>,
    count: Vec<u32>,
    counter: bool,
}

impl Column {
    fn new(metric: &str, attrs: BTreeMap<String, String>, counter: bool, capacity: usize) -> Self {
        let mut c = Self {
            metric: metric.to_owned(),
            attrs,
            values: Vec::with_capacity(capacity),
            prefix: Vec::with_capacity(capacity + 1),
            count: Vec::with_capacity(capacity + 1),
            counter,
        };
        c.prefix.push(0.0);
        c.count.push(0);
        c
    }

    fn push(&mut self, v: f64) {
        let (p, n) = (self.prefix[self.prefix.len() - 1], self.count[self.count.len() - 1]);
        self.values.push(v);
        if v.is_finite() {
            self.prefix.push(p + v);
            self.count.push(n + 1);
        } else {
            self.prefix.push(p);
            self.count.push(n);
        }
    }
}

/// Per-bucket prefix counts of the finite values of every column a selector matches, so a
/// histogram over any step range costs one subtraction per bucket instead of a pass over the
/// window of every matching series (drift rules read 1 h of 100 series at each evaluation).
/// Built lazily up to the furthest step asked for; values before the present never change,
/// so rows once built stay exact.
#[derive(Clone, Debug)]
struct BucketPrefix {
    /// Indices of the matching columns.
    columns: Vec<usize>,
    /// `counts[i * BUCKETS + b]` = observations in bucket `b` among steps `..i`.
    counts: Vec<u32>,
}

/// Buckets of a replay histogram: `DEFAULT_BUCKETS` plus the overflow bucket.
const BUCKETS: usize = super::series::DEFAULT_BUCKETS.len() + 1;

impl BucketPrefix {
    /// Rows built so far (steps covered + 1).
    fn rows(&self) -> usize {
        self.counts.len() / BUCKETS
    }

    /// Extends the prefix rows to cover steps `..hi`.
    fn extend_to(&mut self, columns: &[Column], hi: usize) {
        let bounds = &super::series::DEFAULT_BUCKETS;
        while self.rows() <= hi {
            let i = self.rows() - 1;
            let base = self.counts.len() - BUCKETS;
            let mut row = [0u32; BUCKETS];
            row.copy_from_slice(&self.counts[base..]);
            for &c in &self.columns {
                if let Some(v) = columns[c].values.get(i).filter(|v| v.is_finite()) {
                    row[bounds.iter().position(|b| v <= b).unwrap_or(bounds.len())] += 1;
                }
            }
            self.counts.extend_from_slice(&row);
        }
    }

    /// Counts per bucket among steps `lo..hi`.
    fn between(&self, lo: usize, hi: usize) -> [u32; BUCKETS] {
        let mut out = [0u32; BUCKETS];
        for (b, o) in out.iter_mut().enumerate() {
            *o = self.counts[hi * BUCKETS + b] - self.counts[lo * BUCKETS + b];
        }
        out
    }
}

/// The signals one contender sees: the trace's recorded series plus its own simulated ones.
#[derive(Clone, Debug)]
pub struct SimSource {
    start: u64,
    step: u64,
    columns: Vec<Column>,
    /// Step index up to which data exists (exclusive): the simulation's present.
    len: usize,
    /// Histogram prefix counts by selector (see [`BucketPrefix`]); behind a `RefCell` because
    /// [`SignalSource`] reads through `&self`, and a replay is single-threaded.
    histograms: std::cell::RefCell<BTreeMap<Selector, BucketPrefix>>,
}

const SIM_METRICS: [(&str, bool); 6] = [
    ("inference.request.duration", false),
    ("inference.queue.duration", false),
    ("hw.gpu.utilization", false),
    ("inference.requests", true),
    ("inference.replicas", false),
    ("offered_load", false),
];

impl SimSource {
    fn new(trace: &Trace) -> Self {
        let n = trace.load.len();
        let mut columns: Vec<Column> =
            SIM_METRICS.iter().map(|(m, c)| Column::new(m, BTreeMap::new(), *c, n)).collect();
        for (metric, attrs, values) in &trace.recorded {
            let counter = matches!(
                metric.as_str(),
                "inference.feedback" | "inference.prediction.class" | "inference.requests"
            );
            let mut c = Column::new(metric, attrs.clone(), counter, n);
            for v in values {
                c.push(*v);
            }
            columns.push(c);
        }
        Self {
            start: trace.start,
            step: nanos(trace.step).max(1),
            columns,
            len: 0,
            histograms: Default::default(),
        }
    }

    fn record(&mut self, values: [f64; 6]) {
        for (c, v) in self.columns.iter_mut().zip(values) {
            c.push(v);
        }
        self.len += 1;
    }

    /// Step indices (lo, hi] covering (from, to], limited to the present.
    fn range(&self, from: u64, to: u64) -> (usize, usize) {
        let idx = |t: u64| -> usize {
            if t < self.start {
                0
            } else {
                (((t - self.start) / self.step) as usize + 1).min(self.len)
            }
        };
        // Sample i is at start + i·step: (from, to] holds samples i with from < t_i ≤ to.
        (idx(from), idx(to))
    }

    fn matching<'a>(&'a self, sel: &'a Selector) -> impl Iterator<Item = &'a Column> + 'a {
        self.columns.iter().filter(move |c| selects(sel, c))
    }
}

/// Whether `sel` reads column `c`. Simulated series carry no attributes: matchers on them
/// (model.name…) are ignored.
fn selects(sel: &Selector, c: &Column) -> bool {
    c.metric == sel.metric && (c.attrs.is_empty() || sel.matches(&c.attrs))
}

impl SignalSource for SimSource {
    fn read(&self, q: &SignalQuery, now: u64) -> Result<Option<f64>, SignalError> {
        let (lo, hi) = self.range(now.saturating_sub(nanos(q.window)), now);
        if hi <= lo {
            return Ok(None);
        }
        let cols: Vec<&Column> = self.matching(&q.selector).collect();
        if cols.is_empty() {
            return Ok(None);
        }
        Ok(match q.stat {
            Stat::Mean | Stat::Sum | Stat::Count => {
                let s: f64 = cols.iter().map(|c| c.prefix[hi] - c.prefix[lo]).sum();
                let n: u32 = cols.iter().map(|c| c.count[hi] - c.count[lo]).sum();
                match q.stat {
                    Stat::Count => Some(f64::from(n)),
                    _ if n == 0 => None,
                    Stat::Mean => Some(s / f64::from(n)),
                    _ => Some(s),
                }
            }
            Stat::Min | Stat::Max => {
                let it = cols
                    .iter()
                    .flat_map(|c| c.values[lo..hi].iter().copied())
                    .filter(|v| v.is_finite());
                if q.stat == Stat::Min { it.reduce(f64::min) } else { it.reduce(f64::max) }
            }
            Stat::Last => {
                let v: Vec<f64> = cols
                    .iter()
                    .filter_map(|c| c.values[lo..hi].iter().rev().find(|v| v.is_finite()).copied())
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum())
            }
            Stat::Rate | Stat::Increase => {
                let inc: f64 = cols
                    .iter()
                    .filter(|c| c.counter)
                    .map(|c| {
                        let end = c.values[hi - 1];
                        let start = if lo > 0 { c.values[lo - 1] } else { c.values[lo] };
                        if end >= start { end - start } else { end }
                    })
                    .sum();
                Some(if q.stat == Stat::Rate {
                    inc / q.window.as_secs_f64().max(1e-9)
                } else {
                    inc
                })
            }
            Stat::Quantile(p) => {
                let mut v: Vec<f64> = cols
                    .iter()
                    .flat_map(|c| c.values[lo..hi].iter().copied())
                    .filter(|v| v.is_finite())
                    .collect();
                quantile(&mut v, p)
            }
        })
    }

    fn histogram(
        &self,
        selector: &Selector,
        from: u64,
        to: u64,
    ) -> Result<Option<Histogram>, SignalError> {
        let (lo, hi) = self.range(from, to);
        if hi <= lo {
            return Ok(None);
        }
        let mut cache = self.histograms.borrow_mut();
        if !cache.contains_key(selector) {
            let columns = self
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| selects(selector, c))
                .map(|(i, _)| i)
                .collect();
            cache.insert(selector.clone(), BucketPrefix { columns, counts: vec![0; BUCKETS] });
        }
        let Some(prefix) = cache.get_mut(selector) else { return Ok(None) };
        prefix.extend_to(&self.columns, hi);
        let counts = prefix.between(lo, hi);
        if counts.iter().all(|c| *c == 0) {
            return Ok(None);
        }
        Ok(Some(Histogram {
            bounds: super::series::DEFAULT_BUCKETS.to_vec(),
            counts: counts.iter().map(|c| f64::from(*c)).collect(),
        }))
    }

    fn counts_by(
        &self,
        selector: &Selector,
        by: &str,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<String, f64>, SignalError> {
        let (lo, hi) = self.range(from, to);
        let mut out = BTreeMap::new();
        if hi <= lo {
            return Ok(out);
        }
        for c in self.matching(selector).filter(|c| c.counter) {
            if let Some(k) = c.attrs.get(by) {
                let start = if lo > 0 { c.values[lo - 1] } else { c.values[lo] };
                *out.entry(k.clone()).or_insert(0.0) += (c.values[hi - 1] - start).max(0.0);
            }
        }
        Ok(out)
    }

    fn latest_version(
        &self,
        selector: &Selector,
        now: u64,
    ) -> Result<Option<VersionSeen>, SignalError> {
        let mut sel = selector.clone();
        sel.matchers.remove("model.version");
        let (_, hi) = self.range(0, now);
        let mut best: Option<VersionSeen> = None;
        for c in self.matching(&sel) {
            let (Some(v), Some(i)) =
                (c.attrs.get("model.version"), c.values[..hi].iter().position(|x| x.is_finite()))
            else {
                continue;
            };
            let first = self.start + i as u64 * self.step;
            if best.as_ref().is_none_or(|b| first > b.first_seen) {
                best = Some(VersionSeen { version: v.clone(), first_seen: first });
            }
        }
        Ok(best)
    }
}

/// Capacity model in plain numbers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Capacity {
    /// Requests/s per ready replica.
    pub throughput: f64,
    /// Seconds per request on an idle replica.
    pub service_time: f64,
    /// Seconds before a new replica serves.
    pub warmup: f64,
}

impl From<&CapacitySpec> for Capacity {
    fn from(c: &CapacitySpec) -> Self {
        Self {
            throughput: c.per_replica_throughput,
            service_time: c.service_time.get().as_secs_f64(),
            warmup: c.warmup.get().as_secs_f64(),
        }
    }
}

/// The simulated service of one contender.
#[derive(Clone, Debug)]
struct Service {
    cap: Capacity,
    /// Ready-at times (seconds since trace start) of provisioned replicas.
    replicas: Vec<f64>,
    backlog: f64,
    served_total: f64,
}

impl Service {
    fn new(cap: Capacity, size: u32) -> Self {
        Self { cap, replicas: vec![0.0; size as usize], backlog: 0.0, served_total: 0.0 }
    }

    fn size(&self) -> u32 {
        self.replicas.len() as u32
    }

    fn ready(&self, t: f64) -> usize {
        self.replicas.iter().filter(|r| **r <= t).count()
    }

    fn resize(&mut self, to: u32, t: f64) {
        let to = to as usize;
        if to > self.replicas.len() {
            let ready_at = t + self.cap.warmup;
            self.replicas.resize(to, ready_at);
        } else {
            // Remove the youngest (possibly still warming) first.
            self.replicas.sort_by(f64::total_cmp);
            self.replicas.truncate(to);
        }
    }

    /// Advances one step; returns [p95, queue, util, served counter, ready, load].
    fn step(&mut self, load: f64, t: f64, dt: f64) -> [f64; 6] {
        let ready = self.ready(t);
        let c = ready as f64 * self.cap.throughput;
        let arriving = load * dt + self.backlog;
        let served = arriving.min(c * dt);
        self.backlog = arriving - served;
        self.served_total += served;
        let util = if c > 0.0 { (served / (c * dt)).min(1.0) } else { 1.0 };
        let (p95, queue) = if c > 0.0 {
            let rho = (load / c).min(0.99);
            let wait = self.backlog / c;
            let tail = (20f64).ln() * rho / (self.cap.throughput * (1.0 - rho));
            ((self.cap.service_time + wait + tail).min(60.0), (wait + tail).min(60.0))
        } else {
            (60.0, 60.0)
        };
        [p95, queue, util, self.served_total, ready as f64, load]
    }
}

/// A contender's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContenderReport {
    /// `policies`, `hpa`, `kpa` or a directory.
    pub name: String,
    /// Scale-up actions.
    pub scale_ups: u32,
    /// Scale-down actions.
    pub scale_downs: u32,
    /// Retraining jobs started.
    pub retrain_jobs: u32,
    /// Provisioned replica-hours.
    pub replica_hours: f64,
    /// Minutes with the SLO signal above its objective.
    pub slo_violation_minutes: Option<f64>,
    /// Worst p95 latency seen, seconds.
    pub worst_p95: f64,
    /// Most replicas at once.
    pub max_replicas: u32,
    /// Scale actions (ups and downs) per day of scored trace.
    pub actions_per_day: f64,
    /// Replica-hours over the oracle's (see [`oracle_size`]); absent without an SLO.
    pub oracle_ratio: Option<f64>,
}

/// A whole replay.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayReport {
    /// The trace file.
    pub data: String,
    /// Rows × step.
    pub duration_s: f64,
    /// Capacity model used.
    pub capacity: Capacity,
    /// Seconds at the trace's start run as unscored history (`ReplayOptions::history`).
    pub history_s: f64,
    /// Contenders, the replayed policies first.
    pub contenders: Vec<ContenderReport>,
    /// The oracle (see [`oracle_size`]), scored like the contenders; absent without an SLO.
    pub oracle: Option<ContenderReport>,
}

/// Replay options beyond the policies and the trace.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// Capacity used when the scaling policy declares none.
    pub capacity: Option<Capacity>,
    /// Starting size; default the target's min.
    pub start_size: Option<u32>,
    /// The first `history` of the trace is history, not scored: every contender runs through
    /// it (so forecasts have the trace's own past to fit on, and no contender is scored on a
    /// cold start), and actions, replica-hours and SLO minutes count only after it.
    pub history: Option<Duration>,
}

/// What to compare against.
#[derive(Clone, Debug)]
pub enum Baseline {
    /// Kubernetes HPA.
    Hpa,
    /// Knative KPA.
    Kpa,
    /// Another policy set.
    Policies(String, Vec<Policy>),
}

fn scaling_policy(policies: &[Policy]) -> Result<&Policy, ReplayError> {
    let scaling: Vec<&Policy> = policies.iter().filter(|p| p.doc.spec.scale.is_some()).collect();
    match scaling.as_slice() {
        [one] => Ok(one),
        [] => Err(ReplayError::Policies("no policy scales a target: nothing to replay".into())),
        many => {
            let targets: std::collections::BTreeSet<&str> =
                many.iter().map(|p| p.doc.spec.target.name.as_str()).collect();
            if targets.len() == 1 {
                Ok(many[0])
            } else {
                Err(ReplayError::Policies(format!(
                    "replay simulates one service; these policies scale {} targets",
                    targets.len()
                )))
            }
        }
    }
}

struct Run {
    report: ContenderReport,
}

fn slo_violated(slo: Option<&SloSpec>, src: &SimSource, now: u64) -> Option<bool> {
    let slo = slo?;
    let q = engine::query(&slo.signal).ok()?;
    Some(src.read(&q, now).ok().flatten().is_some_and(|v| v > slo.objective))
}

/// Drives one contender through the trace, offering `decide(now, src, size, ready) ->
/// (Option<new size>, retrain jobs)` a tick every `every` rounded up to whole steps (every
/// step when zero); `size` is the provisioned count, `ready` the replicas past their warm-up.
/// Steps before `score_from` run (history) but are not scored.
#[allow(clippy::too_many_arguments)]
fn simulate(
    name: &str,
    trace: &Trace,
    cap: Capacity,
    start: u32,
    slo: Option<&SloSpec>,
    score_from: usize,
    every: Duration,
    mut decide: impl FnMut(u64, &SimSource, u32, u32) -> (Option<u32>, u32),
) -> Run {
    let mut src = SimSource::new(trace);
    let mut svc = Service::new(cap, start);
    let dt = trace.step.as_secs_f64();
    let every_steps = (nanos(every).div_ceil(nanos(trace.step).max(1))).max(1) as usize;
    let mut r = ContenderReport {
        name: name.to_owned(),
        scale_ups: 0,
        scale_downs: 0,
        retrain_jobs: 0,
        replica_hours: 0.0,
        slo_violation_minutes: slo.map(|_| 0.0),
        worst_p95: 0.0,
        max_replicas: start,
        actions_per_day: 0.0,
        oracle_ratio: None,
    };
    for (i, load) in trace.load.iter().enumerate() {
        let t = i as f64 * dt;
        let now = trace.start + i as u64 * nanos(trace.step);
        let values = svc.step(*load, t, dt);
        let scored = i >= score_from;
        src.record(values);
        if i == score_from {
            r.max_replicas = svc.size();
        }
        if scored {
            r.worst_p95 = r.worst_p95.max(values[0]);
            r.replica_hours += f64::from(svc.size()) * dt / 3600.0;
            if slo_violated(slo, &src, now) == Some(true) {
                if let Some(m) = r.slo_violation_minutes.as_mut() {
                    *m += dt / 60.0;
                }
            }
        }
        if i % every_steps == 0 {
            let (to, jobs) = decide(now, &src, svc.size(), svc.ready(t) as u32);
            if scored {
                r.retrain_jobs += jobs;
                if let Some(to) = to {
                    if to > svc.size() {
                        r.scale_ups += 1;
                    } else if to < svc.size() {
                        r.scale_downs += 1;
                    }
                    r.max_replicas = r.max_replicas.max(to);
                }
            }
            if let Some(to) = to {
                svc.resize(to, t);
            }
        }
    }
    let scored_days = (trace.load.len() - score_from.min(trace.load.len())) as f64 * dt / 86_400.0;
    if scored_days > 0.0 {
        r.actions_per_day = f64::from(r.scale_ups + r.scale_downs) / scored_days;
    }
    Run { report: r }
}

/// The oracle's size for a step with `load` requests/s: the fewest replicas in
/// `max(min, 1)..=max` whose modelled p95 without backlog, `serviceTime + ln(20)·ρ/(μ·(1−ρ))`
/// with ρ = load / (n·μ), is at most `objective`; `max` when none is (an objective at or
/// below the service time). It knows each step's load as the step starts and its replicas
/// serve at once (no warm-up), so it never queues and never violates the SLO within the
/// bounds: a floor no realisable policy reaches, against which replica-hours are compared.
pub fn oracle_size(cap: &Capacity, load: f64, objective: f64, min: u32, max: u32) -> u32 {
    let hi = max.max(min);
    let lo = min.max(1).min(hi);
    let mu = cap.throughput;
    let slack = objective - cap.service_time;
    if slack.is_nan() || slack <= 0.0 || mu.is_nan() || mu <= 0.0 {
        return hi;
    }
    let p95 = |n: u32| {
        let rho = (load / (f64::from(n) * mu)).min(0.99);
        cap.service_time + (20f64).ln() * rho / (mu * (1.0 - rho))
    };
    // The tail bound solved for ρ, then checked against the model itself (rounding).
    let x = slack * mu / (20f64).ln();
    let rho = (x / (1.0 + x)).min(0.99);
    let mut n = ceil_ratio(load, mu * rho).clamp(lo, hi);
    while n > lo && p95(n - 1) <= objective {
        n -= 1;
    }
    while n < hi && p95(n) > objective {
        n += 1;
    }
    n
}

fn ceil_ratio(a: f64, b: f64) -> u32 {
    let x = a / b;
    if !x.is_finite() || x <= 0.0 {
        0
    } else if x >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        (x - 1e-9).ceil().max(0.0) as u32
    }
}

/// The oracle through the same simulation and scoring as the contenders: every step it sizes
/// for the next step's load with [`oracle_size`], and its replicas need no warm-up.
fn replay_oracle(
    trace: &Trace,
    cap: Capacity,
    slo: &SloSpec,
    min: u32,
    max: u32,
    score_from: usize,
) -> Run {
    let instant = Capacity { warmup: 0.0, ..cap };
    let size = |i: usize| {
        let load = trace.load.get(i).or(trace.load.last()).copied().unwrap_or(0.0);
        oracle_size(&cap, load, slo.objective, min, max)
    };
    let step = nanos(trace.step).max(1);
    simulate(
        "oracle",
        trace,
        instant,
        size(0),
        Some(slo),
        score_from,
        Duration::ZERO,
        |now, _, _, _| {
            let i = (now.saturating_sub(trace.start) / step) as usize;
            (Some(size(i + 1)), 0)
        },
    )
}

fn replay_policies(
    name: &str,
    policies: &[Policy],
    trace: &Trace,
    cap: Capacity,
    start: u32,
    slo: Option<&SloSpec>,
    score_from: usize,
) -> Run {
    let mut states: Vec<PolicyState> = vec![PolicyState::default(); policies.len()];
    // Each policy at its own interval, scheduled, sized and applied as the live runtime does;
    // the simulated service is the resizer. The simulation offers every step as a tick.
    let mut driver = Driver::new();
    simulate(name, trace, cap, start, slo, score_from, Duration::ZERO, |now, src, size, ready| {
        let mut to = None;
        let mut jobs = 0;
        for (p, st) in policies.iter().zip(states.iter_mut()) {
            let resizer = || Some(TargetSize { provisioned: size, ready: Some(ready) });
            let Some(decisions) = driver.tick(p, src, st, resizer, now) else { continue };
            for d in &decisions {
                if let Some(n) = applied_size(d) {
                    to = Some(n);
                }
                jobs += u32::from(starts_job(d));
            }
        }
        (to, jobs)
    })
}

/// The Kubernetes HPA (v2, `behavior` defaults) on the scaling policy's metrics.
pub struct Hpa {
    metrics: Vec<super::format::TrackedMetric>,
    min: u32,
    max: u32,
    recs: Vec<(u64, u32)>,
    events: Vec<(u64, i64)>,
}

/// HPA's sync period.
pub const HPA_SYNC: Duration = Duration::from_secs(15);
/// metrics-server resolution: HPA sees metrics this old.
pub const HPA_METRICS_LAG: Duration = Duration::from_secs(15);

impl Hpa {
    /// An HPA for `scale`'s metrics within `min..=max`.
    pub fn new(scale: &ScaleSpec, min: u32, max: u32) -> Self {
        Self { metrics: scale.metrics.clone(), min, max, recs: Vec::new(), events: Vec::new() }
    }

    /// One sync: the new desired size (HPA's `computeReplicasForMetrics` then
    /// `normalizeDesiredReplicasWithBehaviors`).
    pub fn sync(&mut self, src: &dyn SignalSource, current: u32, now: u64) -> u32 {
        let seen = now.saturating_sub(nanos(HPA_METRICS_LAG));
        let mut rec: Option<u32> = None;
        for m in &self.metrics {
            let Ok(q) = engine::query(&m.signal) else { continue };
            let Some(v) = src.read(&q, seen).ok().flatten() else { continue };
            let ratio = match (m.target.value, m.target.average_value) {
                (Some(t), _) => v / t,
                (_, Some(t)) => v / (t * f64::from(current.max(1))),
                _ => continue,
            };
            let r = if (ratio - 1.0).abs() <= 0.1 {
                current
            } else {
                (f64::from(current.max(1)) * ratio - 1e-9).ceil().max(0.0) as u32
            };
            rec = Some(rec.map_or(r, |x| x.max(r)));
        }
        // No metric readable: HPA keeps the current size.
        let Some(rec) = rec else { return current };
        // Stabilization: up window 0 s, down window 300 s.
        self.recs.push((now, rec));
        let down_cut = now.saturating_sub(300 * NANOS);
        self.recs.retain(|(t, _)| *t > down_cut);
        let down_rec = self.recs.iter().map(|r| r.1).max().unwrap_or(rec);
        let mut desired = current;
        if desired < rec {
            desired = rec;
        }
        if desired > down_rec {
            desired = down_rec;
        }
        // Rate: up max(100 %, 4 pods)/15 s; down 100 %/15 s.
        let cut = now.saturating_sub(15 * NANOS);
        self.events.retain(|(t, _)| *t > cut);
        if desired > current {
            let added: i64 = self.events.iter().filter(|e| e.1 > 0).map(|e| e.1).sum();
            let start = (i64::from(current) - added).max(0) as f64;
            let limit = (start * 2.0).max(start + 4.0) as u32;
            desired = desired.min(limit.max(current));
        } else if desired < current {
            let removed: i64 = self.events.iter().filter(|e| e.1 < 0).map(|e| -e.1).sum();
            let start = i64::from(current) + removed;
            let limit = (start as f64 * 0.0) as u32;
            desired = desired.max(limit);
        }
        desired = desired.clamp(self.min, self.max);
        if desired != current {
            self.events.push((now, i64::from(desired) - i64::from(current)));
        }
        desired
    }
}

/// Knative's KPA in RPS mode.
pub struct Kpa {
    target: f64,
    min: u32,
    max: u32,
    panic_since: Option<u64>,
    max_panic: u32,
}

/// KPA's tick.
pub const KPA_TICK: Duration = Duration::from_secs(2);

impl Kpa {
    /// A KPA with `target` requests/s per replica.
    pub fn new(target: f64, min: u32, max: u32) -> Self {
        Self { target, min, max, panic_since: None, max_panic: 0 }
    }

    /// One tick (Knative `autoscaler.Scale`); `ready` is the ready replica count.
    pub fn tick(&mut self, src: &dyn SignalSource, ready: u32, now: u64) -> u32 {
        let sel = Selector { metric: "offered_load".into(), matchers: BTreeMap::new() };
        let read = |w: u64| {
            src.read(
                &SignalQuery {
                    selector: sel.clone(),
                    stat: Stat::Mean,
                    window: Duration::from_secs(w),
                },
                now,
            )
            .ok()
            .flatten()
        };
        let (Some(stable), Some(panic)) = (read(60), read(6)) else { return ready.max(self.min) };
        let ready_f = f64::from(ready.max(1));
        let max_up = (1000.0 * ready_f).ceil();
        let max_down = (ready_f / 2.0).floor();
        let dspc = (stable / self.target).ceil();
        let dppc = (panic / self.target).ceil();
        let desired_stable = dspc.max(max_down).min(max_up) as u32;
        let desired_panic = dppc.max(max_down).min(max_up) as u32;
        let over = dppc / ready_f >= 2.0;
        match (self.panic_since, over) {
            (None, true) => {
                self.panic_since = Some(now);
                self.max_panic = ready;
            }
            (Some(_), true) => self.panic_since = Some(now),
            (Some(since), false) if now > since + 60 * NANOS => {
                self.panic_since = None;
                self.max_panic = 0;
            }
            _ => {}
        }
        let mut desired = desired_stable;
        if self.panic_since.is_some() {
            if desired_panic > self.max_panic {
                self.max_panic = desired_panic;
            }
            desired = self.max_panic;
        }
        desired.clamp(self.min, self.max)
    }
}

/// Replays `policies` on `trace`, with an optional baseline.
pub fn replay(
    data: &str,
    policies: &[Policy],
    trace: &Trace,
    baseline: Option<&Baseline>,
    opts: &ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    let main = scaling_policy(policies)?;
    let cap =
        main.doc.spec.target.capacity.as_ref().map(Capacity::from).or(opts.capacity).ok_or_else(
            || {
                ReplayError::Policies(format!(
                    "policy {:?} declares no `target.capacity` and no capacity was given",
                    main.name()
                ))
            },
        )?;
    let t = &main.doc.spec.target;
    let start = opts.start_size.unwrap_or(t.min.max(1)).clamp(t.min, t.max);
    let slo = policies.iter().find_map(|p| p.doc.spec.slo.as_ref());
    let history = opts.history.unwrap_or_default();
    let score_from =
        (nanos(history).div_ceil(nanos(trace.step).max(1)) as usize).min(trace.load.len());
    if score_from >= trace.load.len() && !trace.load.is_empty() {
        return Err(ReplayError::Policies(format!(
            "history of {} covers the whole trace: nothing left to score",
            humantime::format_duration(history)
        )));
    }
    let mut contenders =
        vec![replay_policies("policies", policies, trace, cap, start, slo, score_from).report];
    match baseline {
        None => {}
        Some(Baseline::Hpa) => {
            let scale = main.doc.spec.scale.clone().unwrap_or_default();
            if scale.metrics.is_empty() {
                return Err(ReplayError::Policies(
                    "the HPA baseline needs target-tracking `metrics` in the scaling policy".into(),
                ));
            }
            let mut hpa = Hpa::new(&scale, t.min, t.max);
            let run = simulate(
                "hpa",
                trace,
                cap,
                start,
                slo,
                score_from,
                HPA_SYNC,
                |now, src, size, _| (Some(hpa.sync(src, size, now)), 0),
            );
            contenders.push(run.report);
        }
        Some(Baseline::Kpa) => {
            let mut kpa = Kpa::new(0.7 * cap.throughput, t.min, t.max);
            let run = simulate(
                "kpa",
                trace,
                cap,
                start,
                slo,
                score_from,
                KPA_TICK,
                |now, src, size, _| {
                    let ready = src
                        .read(
                            &SignalQuery {
                                selector: Selector {
                                    metric: "inference.replicas".into(),
                                    matchers: BTreeMap::new(),
                                },
                                stat: Stat::Last,
                                window: Duration::from_secs(3600),
                            },
                            now,
                        )
                        .ok()
                        .flatten()
                        .map(|r| r as u32)
                        .unwrap_or(size);
                    (Some(kpa.tick(src, ready, now)), 0)
                },
            );
            contenders.push(run.report);
        }
        Some(Baseline::Policies(name, other)) => {
            scaling_policy(other)?;
            contenders
                .push(replay_policies(name, other, trace, cap, start, slo, score_from).report);
        }
    }
    let oracle = slo.map(|slo| replay_oracle(trace, cap, slo, t.min, t.max, score_from).report);
    if let Some(o) = &oracle {
        for c in &mut contenders {
            if o.replica_hours > 0.0 {
                c.oracle_ratio = Some(c.replica_hours / o.replica_hours);
            }
        }
    }
    Ok(ReplayReport {
        data: data.to_owned(),
        duration_s: trace.load.len() as f64 * trace.step.as_secs_f64(),
        capacity: cap,
        history_s: score_from as f64 * trace.step.as_secs_f64(),
        contenders,
        oracle,
    })
}

/// Policies from a check report, or an error listing the problems.
pub fn usable(report: &CheckReport) -> Result<Vec<Policy>, ReplayError> {
    if report.has_errors() {
        let errs: Vec<String> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity == super::check::Severity::Error)
            .map(|d| d.to_string())
            .collect();
        return Err(ReplayError::Policies(errs.join("\n")));
    }
    Ok(report.policies.clone())
}

/// The side-by-side table.
pub fn render_table(r: &ReplayReport) -> String {
    let mut s = format!(
        "replay of {} ({:.1} h; capacity {} req/s per replica, service time {} s, warm-up {} s)\n",
        r.data,
        r.duration_s / 3600.0,
        r.capacity.throughput,
        r.capacity.service_time,
        r.capacity.warmup
    );
    if r.history_s > 0.0 {
        let _ = writeln!(
            s,
            "scored after the first {:.1} h (history: run by every contender, not counted)",
            r.history_s / 3600.0
        );
    }
    let _ = writeln!(
        s,
        "{:<28} {:>10} {:>10} {:>11} {:>8} {:>14} {:>9} {:>12} {:>10} {:>9}",
        "",
        "scale-ups",
        "scale-dn",
        "actions/day",
        "retrain",
        "replica-hours",
        "x-oracle",
        "SLO-viol-min",
        "worst-p95",
        "max-size"
    );
    for c in r.contenders.iter().chain(r.oracle.as_ref()) {
        let _ = writeln!(
            s,
            "{:<28} {:>10} {:>10} {:>11.1} {:>8} {:>14.2} {:>9} {:>12} {:>9.3}s {:>9}",
            c.name,
            c.scale_ups,
            c.scale_downs,
            c.actions_per_day,
            c.retrain_jobs,
            c.replica_hours,
            c.oracle_ratio.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
            c.slo_violation_minutes.map(|m| format!("{m:.1}")).unwrap_or_else(|| "-".into()),
            c.worst_p95,
            c.max_replicas
        );
    }
    if r.oracle.is_some() {
        s.push_str(
            "oracle: at every step the fewest replicas whose modelled p95 (no backlog) holds the SLO objective at that step's load, min/max kept, no warm-up\n",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(load: &[f64], step: u64) -> Trace {
        Trace {
            start: 1000 * NANOS,
            step: Duration::from_secs(step),
            load: load.to_vec(),
            recorded: Vec::new(),
        }
    }

    #[test]
    fn parses_csv_traces_with_recorded_series() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("t.csv");
        std::fs::write(&f, "# test\ntime,offered_load,\"inference.prediction.confidence{model.version=\"\"v1\"\"}\"\n0,10,0.9\n5,20,\n10,30,0.8\n").expect("write");
        let t = load_trace(&f).expect("trace");
        assert_eq!(t.step, Duration::from_secs(5));
        assert_eq!(t.load, vec![10.0, 20.0, 30.0]);
        assert_eq!(t.recorded[0].1.get("model.version").map(String::as_str), Some("v1"));
        assert!(t.recorded[0].2[1].is_nan());
        std::fs::write(&f, "time,load\n0,1\n1,2\n").expect("write");
        assert!(load_trace(&f).expect_err("no load").to_string().contains("offered_load"));
    }

    #[test]
    fn service_latency_grows_with_load_and_backlog() {
        let cap = Capacity { throughput: 100.0, service_time: 0.02, warmup: 30.0 };
        let mut svc = Service::new(cap, 2);
        let light = svc.step(50.0, 0.0, 1.0);
        assert!((light[2] - 0.25).abs() < 1e-9, "util {}", light[2]);
        let heavy = svc.step(300.0, 1.0, 1.0);
        assert!(heavy[0] > 0.5, "backlog of 100 requests on 200 req/s: {}", heavy[0]);
        svc.resize(4, 2.0);
        assert_eq!(svc.ready(10.0), 2, "new replicas warm up");
        assert_eq!(svc.ready(32.0), 4);
    }

    /// Hand-computed HPA on a small trace: one metric `hw.gpu.utilization` mean over 15 s
    /// with target value 0.5, 2 replicas of 100 req/s without warm-up, step 15 s (one sync
    /// a step), metrics lag 15 s (each sync sees the previous step's utilisation).
    ///
    /// loads: 100, 300, 300, 300, then 100.
    /// t=0:   no data yet → keep 2.
    /// t=15:  util(0) = 100/200 = 0.5 → ratio 1.0 → 2.
    /// t=30:  util(15) = 1.0 (300 on 200 capacity) → 4 (limit max(2·2, 2+4) = 6).
    /// t=45:  util(30) = 1.0, still 2 ready then → ceil(4·2) = 8; the +2 at t=30 is outside
    ///        (30, 45] → start 4 → limit 8 → 8.
    /// t=60:  util(45) = 1.0 (4 ready, backlog) → 16; the +4 of t=45 is not after the cutoff
    ///        t − 15 s (HPA counts events strictly after it) → start 8 → limit 16 → 16.
    /// t=75:  util(60) = (1500 + 1500 backlog)/(8·100·15) = 0.25 → ceil(16·0.5) = 8; the 16
    ///        of t=60 is in the 300 s down window → 16.
    /// t=90…: util 100/1600 → 2, held by the window.
    /// t=360: the 16 of t=60 left (t − 300, t]; the max is the 8 of t=75 → 8.
    /// t=375: → 2.
    #[test]
    fn hpa_matches_hand_computation() {
        let scale: ScaleSpec = serde_json::from_value(serde_json::json!({
            "metrics": [{"name": "gpu", "signal": {"metric": "hw.gpu.utilization", "stat": "mean", "window": "15s"}, "target": {"value": 0.5}}]
        }))
        .expect("scale");
        let mut load = vec![100.0, 300.0, 300.0, 300.0];
        load.extend(std::iter::repeat_n(100.0, 30));
        let tr = trace(&load, 15);
        let cap = Capacity { throughput: 100.0, service_time: 0.01, warmup: 0.0 };
        let mut hpa = Hpa::new(&scale, 1, 20);
        let mut sizes = Vec::new();
        let run = simulate("hpa", &tr, cap, 2, None, 0, HPA_SYNC, |now, src, size, _| {
            let to = hpa.sync(src, size, now);
            sizes.push(to);
            (Some(to), 0)
        });
        assert_eq!(&sizes[..6], &[2, 2, 4, 8, 16, 16]);
        assert!(sizes[6..24].iter().all(|s| *s == 16), "{sizes:?}");
        assert_eq!((sizes[24], sizes[25]), (8, 2), "{sizes:?}");
        assert_eq!(run.report.scale_ups, 3);
        assert_eq!(run.report.scale_downs, 2);
    }

    /// Guards the histogram prefix cache: every window, over recorded series with gaps and
    /// over a simulated series that grows while it is read, gives what a pass over the values
    /// gives (the implementation before the cache).
    #[test]
    fn cached_histograms_match_a_pass_over_the_window() {
        let n = 50;
        let mut recorded = Vec::new();
        for (k, version) in ["v1", "v1", "v2"].iter().enumerate() {
            let mut attrs = BTreeMap::new();
            attrs.insert("model.version".to_owned(), (*version).to_owned());
            attrs.insert("host.name".to_owned(), format!("h{k}"));
            let values = (0..n)
                .map(|i| {
                    if (i + k) % 7 == 0 { f64::NAN } else { ((i * 13 + k * 5) % 23) as f64 / 20.0 }
                })
                .collect();
            recorded.push(("inference.prediction.confidence".to_owned(), attrs, values));
        }
        let tr = Trace {
            start: 1000 * NANOS,
            step: Duration::from_secs(10),
            load: vec![1.0; n],
            recorded,
        };
        let mut src = SimSource::new(&tr);
        let by_pass = |src: &SimSource, sel: &Selector, from: u64, to: u64| {
            let (lo, hi) = src.range(from, to);
            let bounds = crate::series::DEFAULT_BUCKETS.to_vec();
            let mut counts = vec![0.0; bounds.len() + 1];
            let mut any = false;
            for c in src.matching(sel) {
                for v in c.values[lo..hi.max(lo)].iter().filter(|v| v.is_finite()) {
                    counts[bounds.iter().position(|b| v <= b).unwrap_or(bounds.len())] += 1.0;
                    any = true;
                }
            }
            any.then_some(Histogram { bounds, counts })
        };
        let all = Selector {
            metric: "inference.prediction.confidence".into(),
            matchers: BTreeMap::new(),
        };
        let mut v1 = all.clone();
        v1.matchers.insert("model.version".into(), "v1".into());
        let util = Selector { metric: "hw.gpu.utilization".into(), matchers: BTreeMap::new() };
        let mut checked = 0;
        for i in 0..n {
            src.record([0.1, 0.0, (i % 11) as f64 / 10.0, 0.0, 1.0, 1.0]);
            let now = tr.start + i as u64 * 10 * NANOS;
            for sel in [&all, &v1, &util] {
                for (from, to) in [
                    (now.saturating_sub(60 * NANOS), now),
                    (tr.start - 1, tr.start + 100 * NANOS),
                    (0, now),
                    (now, now),
                ] {
                    let cached = src.histogram(sel, from, to).expect("histogram");
                    assert_eq!(
                        cached,
                        by_pass(&src, sel, from, to),
                        "{sel} ({from}, {to}] at step {i}"
                    );
                    checked += usize::from(cached.is_some());
                }
            }
        }
        assert!(checked > 300, "most windows hold data: {checked}");
    }

    /// Guards the per-policy interval: a 60 s retraining policy beside a 5 s scaling policy is
    /// evaluated every 60 s of a 10 s trace, as the live runtime would, not at every step.
    #[test]
    fn each_policy_is_evaluated_at_its_own_interval() {
        let check = |name: &str, text: &str| {
            let (p, _, diags) = crate::check::check_text(Path::new(name), text);
            p.unwrap_or_else(|| panic!("{name}: {diags:?}"))
        };
        let target = "target: {name: svc, min: 1, max: 4, actuator: command, command: {argv: [echo]}, capacity: {perReplicaThroughput: 100, serviceTime: 10ms, warmup: 0s}}";
        let scaling = check(
            "s.yaml",
            &format!(
                "apiVersion: stoker/v1\nkind: Policy\nmetadata: {{name: s}}\nspec:\n  {target}\n  interval: 5s\n  scale:\n    metrics:\n      - name: gpu\n        signal: {{metric: hw.gpu.utilization, stat: mean, window: 30s}}\n        target: {{value: 0.6}}\n"
            ),
        );
        let retrain = check(
            "r.yaml",
            &format!(
                "apiVersion: stoker/v1\nkind: Policy\nmetadata: {{name: r}}\nspec:\n  {target}\n  interval: 60s\n  retrain:\n    - name: low\n      when: {{accuracy: {{estimate: mean-confidence, window: 1h, minSamples: 1, lt: 0.85}}}}\n      cooldown: 1s\n      job: {{actuator: command, command: {{argv: [retrain]}}}}\n"
            ),
        );
        let mut tr = trace(&[50.0; 60], 10);
        tr.recorded.push((
            "inference.prediction.confidence".to_owned(),
            BTreeMap::new(),
            vec![0.5; 60],
        ));
        let r =
            replay("t", &[scaling, retrain], &tr, None, &ReplayOptions::default()).expect("replay");
        // 600 s of trace: evaluations at 0, 60, …, 540 s, each starting a job (cooldown 1 s).
        assert_eq!(r.contenders[0].retrain_jobs, 10, "{:?}", r.contenders[0]);
    }

    /// Hand-computed oracle sizes: 50 req/s per replica, 20 ms, objective 150 ms holds
    /// ρ ≤ x/(1+x) with x = 0.13 · 50 / ln 20 = 2.1697, ρ ≤ 0.6845: 1,000 req/s needs
    /// 1000 / (50 · 0.6845) = 29.2 → 30 replicas (29 would give p95 0.1529 s).
    #[test]
    fn oracle_size_is_the_fewest_replicas_holding_the_objective() {
        let cap = Capacity { throughput: 50.0, service_time: 0.02, warmup: 120.0 };
        assert_eq!(oracle_size(&cap, 1000.0, 0.150, 1, 100), 30);
        assert_eq!(oracle_size(&cap, 1000.0, 0.150, 1, 20), 20, "max kept");
        assert_eq!(oracle_size(&cap, 0.0, 0.150, 0, 100), 1, "one replica at least");
        assert_eq!(oracle_size(&cap, 10.0, 0.150, 5, 100), 5, "min kept");
        assert_eq!(oracle_size(&cap, 10.0, 0.010, 1, 100), 100, "objective below service time");
    }

    /// The oracle through the simulation: no SLO minute within the bounds, a size change at
    /// every load change, and every contender's replica-hours reported against it.
    #[test]
    fn oracle_never_violates_and_contenders_report_their_ratio() {
        let check = |text: &str| {
            let (p, _, diags) = crate::check::check_text(Path::new("s.yaml"), text);
            p.unwrap_or_else(|| panic!("{diags:?}"))
        };
        let policy = check(
            "apiVersion: stoker/v1\nkind: Policy\nmetadata: {name: s}\nspec:\n  target: {name: svc, min: 1, max: 40, actuator: command, command: {argv: [echo]}, capacity: {perReplicaThroughput: 50, serviceTime: 20ms, warmup: 60s}}\n  interval: 5s\n  slo: {signal: {metric: inference.request.duration, stat: p95, window: 30s}, objective: 0.150}\n  scale:\n    metrics:\n      - name: gpu\n        signal: {metric: hw.gpu.utilization, stat: mean, window: 30s}\n        target: {value: 0.6}\n",
        );
        let mut load = vec![200.0; 120];
        load.extend(vec![900.0; 120]);
        load.extend(vec![300.0; 120]);
        let tr = trace(&load, 5);
        let r = replay("t", &[policy], &tr, Some(&Baseline::Hpa), &ReplayOptions::default())
            .expect("replay");
        let o = r.oracle.as_ref().expect("oracle with an SLO");
        assert_eq!(o.slo_violation_minutes, Some(0.0), "{o:?}");
        // 200 → 6, 900 → 27, 300 → 9 replicas; 10 min at each: (6 + 27 + 9) / 6 h.
        assert!((o.replica_hours - 42.0 / 6.0).abs() < 0.1, "{o:?}");
        assert_eq!((o.scale_ups, o.scale_downs), (1, 1), "{o:?}");
        for c in &r.contenders {
            let ratio = c.oracle_ratio.expect("ratio");
            assert!((ratio - c.replica_hours / o.replica_hours).abs() < 1e-9);
            assert!(c.actions_per_day > 0.0, "{c:?}");
        }
    }

    #[test]
    fn kpa_panics_on_a_burst_and_never_scales_down_while_panicking() {
        let mut load = vec![100.0; 40];
        load.extend(vec![1000.0; 5]);
        load.extend(vec![100.0; 60]);
        let tr = trace(&load, 2);
        let cap = Capacity { throughput: 100.0, service_time: 0.01, warmup: 0.0 };
        let mut kpa = Kpa::new(70.0, 1, 100);
        let mut sizes = Vec::new();
        simulate("kpa", &tr, cap, 2, None, 0, KPA_TICK, |now, src, size, _| {
            let to = kpa.tick(src, size, now);
            sizes.push(to);
            (Some(to), 0)
        });
        assert_eq!(sizes[30], 2, "stable: ceil(100/70) = 2");
        let peak = *sizes.iter().max().expect("sizes");
        assert!(peak >= 10, "panic scale-up to the 6 s window's demand: {sizes:?}");
        let peak_at = sizes.iter().position(|s| *s == peak).expect("peak");
        // Panic lasts 60 s (30 ticks) after the last over-threshold tick.
        assert!(sizes[peak_at..peak_at + 25].iter().all(|s| *s == peak), "{sizes:?}");
        assert_eq!(*sizes.last().expect("last"), 2);
    }
}
