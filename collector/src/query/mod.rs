//! The query interface over the store: selectors, statistics over windows, grouping, range
//! queries for charts, and whole-window reads of histograms and counters.
//!
//! This is the contract the policy engine, the HTTP API and the dashboard use:
//!
//! ```no_run
//! # use std::time::Duration;
//! # use stoker_collector::query::*;
//! # fn f(store: &stoker_collector::store::Store) -> Result<(), QueryError> {
//! let q = Query::new(Selector::new("inference.request.duration").with(Matcher::eq("model.name", "resnet")),
//!                    Stat::Quantile(0.95), Duration::from_secs(30))
//!     .group_by(["service.name"]);
//! for g in store.instant(&q, store.now())? {
//!     println!("{:?} p95 = {} over {} series", g.group, g.value, g.series);
//! }
//! # Ok(()) }
//! ```
//!
//! Semantics, per series kind, of each [`Stat`] over the window `[at - window, at]`:
//!
//! | stat | gauge | counter | histogram |
//! | --- | --- | --- | --- |
//! | mean | mean of samples | mean of running totals | merged sum / merged count |
//! | min, max | of samples | of totals | reported min/max, else bucket bounds |
//! | sum | sum of samples | increase | sum of observations |
//! | count | number of samples | number of samples | number of observations |
//! | last | newest sample | newest total | mean of the newest interval |
//! | increase | last − first | total at end − total before the window (resets handled) | observations |
//! | rate | increase / window seconds | increase / window seconds | observations / second |
//! | pNN, quantile(q) | exact, over all samples of the group | — (error) | merged buckets, exact to bucket resolution |
//!
//! Across the series of a group the default is: mean → mean over all samples (for
//! histograms: merged), min → min, max → max, sum/count/rate/increase → sum, last → sum
//! (the newest value of each series, added up, as a policy reads it: the ready replicas of a
//! deployment, say; pass `across=mean` for a typical value), quantile → over the merged samples or buckets. [`Query::across`] overrides it with an
//! aggregation of the per-series values. Groups with no point in the window are left out
//! (a policy's "missing data").

mod selector;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use selector::{Matcher, Selector};
/// The statistics: one vocabulary with the policy engine's (see [`stoker_policy::signal::Stat`]).
pub use stoker_policy::signal::Stat;

use crate::store::{
    AggPoint, FxHashMap, HistCols, Histogram, Labels, Rollups, Series, SeriesKind, Store,
};

/// Errors a query can return.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The selector or a parameter is malformed.
    #[error("bad query: {0}")]
    Bad(String),
    /// The statistic does not apply to this kind of series.
    #[error("{stat} is not defined for {kind:?} series of {metric}")]
    Unsupported {
        /// The statistic.
        stat: String,
        /// The kind.
        kind: SeriesKind,
        /// The metric.
        metric: String,
    },
    /// Reading from disk failed.
    #[error("store read failed")]
    Store(#[source] crate::store::StoreError),
    /// The remote store did not answer, or answered with an error.
    #[error("remote store: {0}")]
    Remote(String),
}

/// How per-series values combine within a group, when not the stat's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Across {
    /// Mean of per-series values.
    Mean,
    /// Sum of per-series values.
    Sum,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Number of series with data.
    Count,
}

impl std::str::FromStr for Across {
    type Err = QueryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "mean" | "avg" => Across::Mean,
            "sum" => Across::Sum,
            "min" => Across::Min,
            "max" => Across::Max,
            "count" => Across::Count,
            _ => {
                return Err(QueryError::Bad(format!(
                    "unknown aggregation {s:?} (mean, sum, min, max, count)"
                )));
            }
        })
    }
}

/// A query: which series, which statistic over which window, grouped how.
#[derive(Clone, Debug)]
pub struct Query {
    /// Which series.
    pub selector: Selector,
    /// The statistic.
    pub stat: Stat,
    /// Window length: the statistic covers `[at - window, at]`.
    pub window: Duration,
    /// Attributes to group by; empty = one group.
    pub group_by: Vec<String>,
    /// Override of how series combine within a group.
    pub across: Option<Across>,
}

impl Query {
    /// A query over all matching series as one group.
    pub fn new(selector: Selector, stat: Stat, window: Duration) -> Self {
        Query { selector, stat, window, group_by: Vec::new(), across: None }
    }

    /// Groups by these attributes.
    pub fn group_by<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Self {
        self.group_by = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Combines per-series values with `across` instead of the stat's default.
    pub fn across(mut self, across: Across) -> Self {
        self.across = Some(across);
        self
    }
}

/// One group's value at one instant.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GroupValue {
    /// The group-by attributes of this group (empty without grouping).
    pub group: Labels,
    /// The value.
    pub value: f64,
    /// How many series contributed.
    pub series: usize,
}

/// One group's values over a range, one per step where the group had data.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GroupRange {
    /// The group-by attributes.
    pub group: Labels,
    /// `(timestamp, value)` pairs.
    pub points: Vec<(u64, f64)>,
}

/// A series as listed by [`Store::select`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SeriesInfo {
    /// Metric name.
    pub metric: String,
    /// Attributes.
    pub labels: Labels,
    /// Kind.
    pub kind: SeriesKind,
    /// Newest point's timestamp (0 = none).
    pub last_ts: u64,
}

/// Per-series accumulation over a window.
#[derive(Clone, Debug, Default)]
struct SeriesAcc {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
    first: Option<f64>,
    last: Option<f64>,
    baseline: Option<f64>,
    hist: Option<Histogram>,
    last_hist_mean: Option<f64>,
}

trait Points {
    fn len(&self) -> usize;
    fn ts(&self, i: usize) -> u64;
    fn agg(&self, i: usize) -> (u64, f64, f64, f64, f64);
    /// Merges the histograms of points `i0..i1` into `acc`; returns the mean of the newest
    /// point in the range that has a histogram.
    fn merge_hists(&self, i0: usize, i1: usize, acc: &mut Option<Histogram>) -> Option<f64>;
}

struct Mem<'a> {
    ts: &'a [u64],
    vals: &'a [f64],
    hists: &'a HistCols,
    rollups: &'a Rollups,
}

impl Points for Mem<'_> {
    fn len(&self) -> usize {
        self.ts.len()
    }
    #[inline]
    fn ts(&self, i: usize) -> u64 {
        self.ts[i]
    }
    #[inline]
    fn agg(&self, i: usize) -> (u64, f64, f64, f64, f64) {
        let v = self.vals[i];
        (1, v, v, v, v)
    }
    fn merge_hists(&self, i0: usize, i1: usize, acc: &mut Option<Histogram>) -> Option<f64> {
        let i1 = i1.min(self.hists.len());
        if i1 <= i0 {
            return None;
        }
        // Rollups wholly inside the range replace their points (one slice of columns merged
        // in place); the points before and after them merge one by one.
        let ro = self.rollups;
        let mut i = i0;
        let r0 = ro.first_ts.partition_point(|t| *t < self.ts[i0]);
        if r0 < ro.len() {
            let idx0 = self.ts.partition_point(|t| *t < ro.first_ts[r0]);
            let (mut r, mut idx) = (r0, idx0);
            while r < ro.len() && idx + ro.n[r] <= i1 && self.ts.get(idx) == Some(&ro.first_ts[r]) {
                idx += ro.n[r];
                r += 1;
            }
            if r > r0 {
                self.hists.merge_range(i0, idx0, self.vals, acc);
                ro.hists.merge_range(r0, r, &ro.sums, acc);
                i = idx;
            }
        }
        self.hists.merge_range(i, i1, self.vals, acc);
        self.hists.mean(i1 - 1, self.vals[i1 - 1])
    }
}

impl Points for [AggPoint] {
    fn len(&self) -> usize {
        <[AggPoint]>::len(self)
    }
    fn ts(&self, i: usize) -> u64 {
        self[i].ts
    }
    fn agg(&self, i: usize) -> (u64, f64, f64, f64, f64) {
        let p = &self[i];
        (p.count, p.sum, p.min, p.max, p.last)
    }
    fn merge_hists(&self, i0: usize, i1: usize, acc: &mut Option<Histogram>) -> Option<f64> {
        let mut last = None;
        for p in &self[i0..i1] {
            if let Some(h) = &p.hist {
                match acc {
                    Some(m) => m.merge(h),
                    None => *acc = Some(h.clone()),
                }
                last = h.mean();
            }
        }
        last
    }
}

fn lower(p: &(impl Points + ?Sized), t: u64) -> usize {
    let (mut lo, mut hi) = (0, p.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if p.ts(mid) < t { lo = mid + 1 } else { hi = mid }
    }
    lo
}

/// Accumulates points with `a <= ts <= b`; `fallback` is the baseline when no point precedes `a`.
/// `want_hist` (histogram series only) merges the histograms and skips the per-point value
/// statistics, which no histogram statistic reads (only whether the window has points).
fn accumulate(
    p: &(impl Points + ?Sized),
    a: u64,
    b: u64,
    fallback: f64,
    want_hist: bool,
) -> SeriesAcc {
    let i0 = lower(p, a);
    let i1 = lower(p, b.saturating_add(1));
    let mut acc = SeriesAcc { min: f64::INFINITY, max: f64::NEG_INFINITY, ..Default::default() };
    if want_hist {
        acc.n = i1.saturating_sub(i0) as u64;
        acc.last_hist_mean = p.merge_hists(i0, i1, &mut acc.hist);
        return acc;
    }
    acc.baseline = Some(if i0 > 0 { p.agg(i0 - 1).4 } else { fallback });
    for i in i0..i1 {
        let (n, s, mn, mx, last) = p.agg(i);
        acc.n += n;
        acc.sum += s;
        acc.min = acc.min.min(mn);
        acc.max = acc.max.max(mx);
        if acc.first.is_none() {
            acc.first = Some(if n == 1 { s } else { last });
        }
        acc.last = Some(last);
    }
    acc
}

/// The first nanosecond of the window `(at - window, at]`; a zero window reads the instant `at`.
fn window_start(at: u64, window: Duration) -> u64 {
    crate::store::before(at, window).saturating_add(1).min(at)
}

fn stat_of(kind: SeriesKind, stat: Stat, acc: &SeriesAcc, window_s: f64) -> Option<f64> {
    if acc.n == 0 {
        return None;
    }
    let increase = || match kind {
        SeriesKind::Counter => Some((acc.last? - acc.baseline.unwrap_or(0.0)).max(0.0)),
        SeriesKind::Gauge => Some(acc.last? - acc.first?),
        SeriesKind::Histogram => acc.hist.as_ref().map(|h| h.count as f64),
    };
    match kind {
        SeriesKind::Histogram => {
            let h = acc.hist.as_ref()?;
            match stat {
                Stat::Mean => h.mean(),
                Stat::Sum => Some(h.sum),
                Stat::Count | Stat::Increase => Some(h.count as f64),
                Stat::Rate => Some(h.count as f64 / window_s),
                Stat::Min => h.min.or_else(|| h.quantile(0.0)),
                Stat::Max => h.max.or_else(|| h.quantile(1.0)),
                Stat::Last => acc.last_hist_mean,
                Stat::Quantile(q) => h.quantile(q),
            }
        }
        _ => match stat {
            Stat::Mean => Some(acc.sum / acc.n as f64),
            Stat::Min => Some(acc.min),
            Stat::Max => Some(acc.max),
            Stat::Sum if kind == SeriesKind::Counter => increase(),
            Stat::Sum => Some(acc.sum),
            Stat::Count => Some(acc.n as f64),
            Stat::Last => acc.last,
            Stat::Increase => increase(),
            Stat::Rate => increase().map(|i| i / window_s),
            Stat::Quantile(_) => None,
        },
    }
}

/// A group being accumulated.
struct GroupAcc {
    labels: Labels,
    series: usize,
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
    vals: Vec<f64>,
    samples: Vec<f64>,
    hist: Option<Histogram>,
}

impl GroupAcc {
    fn new(labels: Labels) -> Self {
        GroupAcc {
            labels,
            series: 0,
            n: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            vals: Vec::new(),
            samples: Vec::new(),
            hist: None,
        }
    }
}

fn quantile_of(samples: &mut [f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let pos = q * (samples.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(samples[lo] + (samples[hi] - samples[lo]) * frac)
}

struct Grouper<'q> {
    keys: &'q [String],
    map: FxHashMap<u64, Vec<usize>>,
    groups: Vec<GroupAcc>,
}

impl<'q> Grouper<'q> {
    fn new(keys: &'q [String]) -> Self {
        Grouper { keys, map: FxHashMap::default(), groups: Vec::new() }
    }

    fn slot(&mut self, labels: &Labels) -> usize {
        if self.keys.is_empty() {
            if self.groups.is_empty() {
                self.groups.push(GroupAcc::new(Labels::default()));
            }
            return 0;
        }
        let vals = self.keys.iter().map(|k| labels.get(k));
        let h = crate::store::series_hash(
            "",
            self.keys.iter().map(|k| k.as_str()).zip(vals.clone().map(|v| v.unwrap_or("\u{0}"))),
        );
        if let Some(cands) = self.map.get(&h) {
            for c in cands {
                if self.keys.iter().all(|k| self.groups[*c].labels.get(k) == labels.get(k)) {
                    return *c;
                }
            }
        }
        let idx = self.groups.len();
        self.groups.push(GroupAcc::new(labels.project(self.keys)));
        self.map.entry(h).or_default().push(idx);
        idx
    }
}

impl Store {
    /// Series ids matching a selector, with their series.
    pub(crate) fn matching(&self, sel: &Selector) -> Vec<Arc<Series>> {
        let idx = self.index.read();
        let Some(mi) = idx.by_metric.get(sel.metric.as_str()) else { return Vec::new() };
        // Intersect equality postings (smallest first), then filter by the other matchers.
        let mut eq_lists: Vec<&Vec<u32>> = Vec::new();
        for m in &sel.matchers {
            if let Matcher::Eq { key, value } = m {
                match mi.postings.get(key.as_str()).and_then(|p| p.get(value.as_str())) {
                    Some(l) => eq_lists.push(l),
                    None => return Vec::new(),
                }
            }
        }
        eq_lists.sort_by_key(|l| l.len());
        let base: &[u32] = eq_lists.first().map(|l| l.as_slice()).unwrap_or(&mi.ids);
        let mut out = Vec::new();
        'ids: for id in base {
            for l in eq_lists.iter().skip(1) {
                if l.binary_search(id).is_err() {
                    continue 'ids;
                }
            }
            let s = &idx.series[*id as usize];
            if sel.matchers.iter().all(|m| m.matches(&s.labels)) {
                out.push(s.clone());
            }
        }
        out
    }

    /// Lists the series matching a selector.
    pub fn select(&self, sel: &Selector) -> Vec<SeriesInfo> {
        self.matching(sel)
            .into_iter()
            .map(|s| SeriesInfo {
                metric: s.metric.to_string(),
                labels: s.labels.clone(),
                kind: s.kind,
                last_ts: s.data.read().last_ts,
            })
            .collect()
    }

    /// Metric names known to the store, with their kind and series count.
    pub fn metrics(&self) -> Vec<(String, SeriesKind, usize)> {
        let idx = self.index.read();
        let mut v: Vec<_> = idx
            .by_metric
            .iter()
            .filter_map(|(m, mi)| Some((m.to_string(), mi.kind?, mi.ids.len())))
            .collect();
        v.sort();
        v
    }

    /// Points of a series over `[a, b]` (plus the newest point before `a`), from disk and
    /// memory; `Err` only when disk reads fail.
    fn materialize(
        &self,
        s: &Series,
        a: u64,
        b: u64,
        want_hist: bool,
    ) -> Result<(Vec<AggPoint>, f64), QueryError> {
        let d = s.data.read();
        let mut out = Vec::new();
        let mut fallback = d.base_total;
        if a < d.mem_start && d.older_on_disk {
            if let Some(disk) = &self.disk {
                let upto = b.min(d.mem_start.saturating_sub(1));
                let now = self.clock.now();
                let tier = self.tier_for(now, a);
                out = if tier == 0 {
                    disk.read(0, s.id, a, upto).map_err(QueryError::Store)?
                } else {
                    let done = self.tier_done(tier);
                    let mut v = if done > a {
                        disk.read(tier, s.id, a, upto.min(done.saturating_sub(1)))
                            .map_err(QueryError::Store)?
                    } else {
                        Vec::new()
                    };
                    if upto >= done {
                        let mut raw =
                            disk.read(0, s.id, done.max(a), upto).map_err(QueryError::Store)?;
                        raw.retain(|p| p.ts >= done.max(a) && v.last().is_none_or(|l| p.ts > l.ts));
                        v.extend(raw);
                    }
                    v
                };
                if out.first().is_some_and(|p| p.ts >= a) {
                    fallback = 0.0;
                }
            }
        }
        let i0 = d.ts.partition_point(|t| *t < a).saturating_sub(1);
        let i1 = d.ts.partition_point(|t| *t <= b);
        for i in i0..i1 {
            if out.last().is_some_and(|l: &AggPoint| l.ts >= d.ts[i]) {
                continue;
            }
            let h = if want_hist { d.hists.get(i, d.vals[i]) } else { None };
            out.push(AggPoint::raw(d.ts[i], d.vals[i], h));
        }
        Ok((out, fallback))
    }

    /// The finest tier whose retention still covers `a`.
    fn tier_for(&self, now: u64, a: u64) -> usize {
        let cfg = &self.config;
        if a >= crate::store::before(now, cfg.raw_retention.get()) {
            return 0;
        }
        for (k, t) in cfg.tiers.iter().enumerate() {
            if a >= crate::store::before(now, t.retention.get()) {
                return k + 1;
            }
        }
        cfg.tiers.len()
    }

    /// Accumulates one series over `[a, b]`.
    fn series_acc(
        &self,
        s: &Series,
        a: u64,
        b: u64,
        want_hist: bool,
    ) -> Result<SeriesAcc, QueryError> {
        {
            let d = s.data.read();
            if a >= d.mem_start || self.disk.is_none() || !d.older_on_disk {
                let mem = Mem { ts: &d.ts, vals: &d.vals, hists: &d.hists, rollups: &d.rollups };
                return Ok(accumulate(&mem, a, b, d.base_total, want_hist));
            }
        }
        let (pts, fallback) = self.materialize(s, a, b, want_hist)?;
        Ok(accumulate(pts.as_slice(), a, b, fallback, want_hist))
    }

    fn fold(
        &self,
        q: &Query,
        s: &Series,
        mut acc: SeriesAcc,
        g: &mut GroupAcc,
        window_s: f64,
    ) -> Result<(), QueryError> {
        if acc.n == 0 {
            return Ok(());
        }
        if let (Stat::Quantile(_), SeriesKind::Counter) = (q.stat, s.kind) {
            return Err(QueryError::Unsupported {
                stat: q.stat.to_string(),
                kind: s.kind,
                metric: s.metric.to_string(),
            });
        }
        g.series += 1;
        let default_merge = q.across.is_none();
        if default_merge {
            match (q.stat, s.kind) {
                (Stat::Quantile(_) | Stat::Mean, SeriesKind::Histogram) => {
                    if let Some(h) = acc.hist.take() {
                        match &mut g.hist {
                            Some(m) => m.merge(&h),
                            None => g.hist = Some(h),
                        }
                    }
                    return Ok(());
                }
                (Stat::Mean, _) => {
                    g.n += acc.n;
                    g.sum += acc.sum;
                    return Ok(());
                }
                _ => {}
            }
        }
        if let (Stat::Quantile(_), SeriesKind::Gauge, true) = (q.stat, s.kind, default_merge) {
            return Err(QueryError::Bad("internal: gauge quantile handled by caller".into()));
        }
        if let Some(v) = stat_of(s.kind, q.stat, &acc, window_s) {
            g.vals.push(v);
            g.min = g.min.min(v);
            g.max = g.max.max(v);
            g.sum += v;
        }
        Ok(())
    }

    fn finish(q: &Query, g: &mut GroupAcc) -> Option<f64> {
        if g.series == 0 {
            return None;
        }
        if let Some(a) = q.across {
            let n = g.vals.len();
            if n == 0 {
                return None;
            }
            return Some(match a {
                Across::Mean => g.sum / n as f64,
                Across::Sum => g.sum,
                Across::Min => g.min,
                Across::Max => g.max,
                Across::Count => n as f64,
            });
        }
        match q.stat {
            Stat::Quantile(qq) => {
                if let Some(h) = &g.hist {
                    h.quantile(qq)
                } else {
                    quantile_of(&mut g.samples, qq)
                }
            }
            Stat::Mean => {
                if let Some(h) = &g.hist {
                    h.mean()
                } else if g.n > 0 {
                    Some(g.sum / g.n as f64)
                } else {
                    None
                }
            }
            Stat::Min => (!g.vals.is_empty()).then_some(g.min),
            Stat::Max => (!g.vals.is_empty()).then_some(g.max),
            Stat::Last | Stat::Sum | Stat::Count | Stat::Rate | Stat::Increase => {
                (!g.vals.is_empty()).then_some(g.sum)
            }
        }
    }

    fn eval_window(
        &self,
        q: &Query,
        series: &[Arc<Series>],
        a: u64,
        b: u64,
    ) -> Result<Vec<GroupValue>, QueryError> {
        let window_s = q.window.as_secs_f64();
        let window_s = if window_s > 0.0 { window_s } else { 1.0 };
        let want_hist = true;
        let mut grouper = Grouper::new(&q.group_by);
        for s in series {
            let slot = grouper.slot(&s.labels);
            let g = &mut grouper.groups[slot];
            if let (Stat::Quantile(_), SeriesKind::Gauge, None) = (q.stat, s.kind, q.across) {
                // Exact quantile over every sample of the group.
                let d = s.data.read();
                let before = g.samples.len();
                if a >= d.mem_start || self.disk.is_none() || !d.older_on_disk {
                    let i0 = d.ts.partition_point(|t| *t < a);
                    let i1 = d.ts.partition_point(|t| *t <= b);
                    g.samples.extend_from_slice(&d.vals[i0..i1]);
                } else {
                    drop(d);
                    let (pts, _) = self.materialize(s, a, b, false)?;
                    // Downsampled points contribute their mean: exact on raw data, approximate
                    // on tiers.
                    g.samples.extend(
                        pts.iter().filter(|p| p.ts >= a).map(|p| p.sum / p.count.max(1) as f64),
                    );
                }
                if g.samples.len() > before {
                    g.series += 1;
                }
                continue;
            }
            let acc = self.series_acc(s, a, b, want_hist && s.kind == SeriesKind::Histogram)?;
            self.fold(q, s, acc, g, window_s)?;
        }
        let mut out = Vec::with_capacity(grouper.groups.len());
        for mut g in grouper.groups {
            if let Some(v) = Self::finish(q, &mut g) {
                out.push(GroupValue { group: g.labels, value: v, series: g.series });
            }
        }
        out.sort_by(|x, y| x.group.iter().cmp(y.group.iter()));
        Ok(out)
    }

    /// Evaluates `q` over the window `[at - q.window, at]`: one value per group with data.
    pub fn instant(&self, q: &Query, at: u64) -> Result<Vec<GroupValue>, QueryError> {
        let series = self.matching(&q.selector);
        self.eval_window(q, &series, window_start(at, q.window), at)
    }

    /// Evaluates `q` at `start, start + step, …, ≤ end`, each over `[t - q.window, t]`.
    pub fn range(
        &self,
        q: &Query,
        start: u64,
        end: u64,
        step: Duration,
    ) -> Result<Vec<GroupRange>, QueryError> {
        let step_n = step.as_nanos() as u64;
        if step_n == 0 {
            return Err(QueryError::Bad("step must be positive".into()));
        }
        if end < start {
            return Err(QueryError::Bad("end before start".into()));
        }
        let steps = (end - start) / step_n + 1;
        if steps > 11_000 {
            return Err(QueryError::Bad(format!(
                "{steps} steps; at most 11000 per query (raise step)"
            )));
        }
        let series = self.matching(&q.selector);
        let mut by_group: BTreeMap<Vec<(String, String)>, GroupRange> = BTreeMap::new();
        for i in 0..steps {
            let t = start + i * step_n;
            for g in self.eval_window(q, &series, window_start(t, q.window), t)? {
                let key: Vec<(String, String)> =
                    g.group.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                by_group
                    .entry(key)
                    .or_insert_with(|| GroupRange { group: g.group.clone(), points: Vec::new() })
                    .points
                    .push((t, g.value));
            }
        }
        Ok(by_group.into_values().collect())
    }

    /// The merged histogram of every matching series over `[start, end]`, per group: the
    /// bucket distribution for drift statistics (e.g. `inference.prediction.confidence`).
    pub fn histogram_window(
        &self,
        sel: &Selector,
        start: u64,
        end: u64,
        group_by: &[String],
    ) -> Result<Vec<(Labels, Histogram)>, QueryError> {
        let start = start.saturating_add(1);
        let mut grouper = Grouper::new(group_by);
        for s in self.matching(sel) {
            if s.kind != SeriesKind::Histogram {
                return Err(QueryError::Unsupported {
                    stat: "histogram".into(),
                    kind: s.kind,
                    metric: s.metric.to_string(),
                });
            }
            let acc = self.series_acc(&s, start, end, true)?;
            if let Some(h) = acc.hist {
                let slot = grouper.slot(&s.labels);
                let g = &mut grouper.groups[slot];
                match &mut g.hist {
                    Some(m) => m.merge(&h),
                    None => g.hist = Some(h),
                }
            }
        }
        Ok(grouper.groups.into_iter().filter_map(|g| Some((g.labels, g.hist?))).collect())
    }

    /// Counter increments over `[start, end]` summed by the value of one attribute (e.g.
    /// `inference.prediction.class` by `class`). Series without the attribute are left out.
    pub fn increase_by(
        &self,
        sel: &Selector,
        start: u64,
        end: u64,
        attr: &str,
    ) -> Result<BTreeMap<String, f64>, QueryError> {
        let start = start.saturating_add(1);
        let mut out = BTreeMap::new();
        for s in self.matching(sel) {
            let Some(v) = s.labels.get(attr) else { continue };
            let acc = self.series_acc(&s, start, end, s.kind == SeriesKind::Histogram)?;
            if let Some(inc) = stat_of(s.kind, Stat::Increase, &acc, 1.0) {
                *out.entry(v.to_string()).or_insert(0.0) += inc;
            }
        }
        Ok(out)
    }

    /// The first point's timestamp of every matching series (series without points are left
    /// out): when a label value such as `model.version` first appeared. Reads from the coarsest
    /// tier that still holds the series' start when it has left memory.
    pub fn first_seen(&self, sel: &Selector) -> Result<Vec<(Labels, u64)>, QueryError> {
        let mut out = Vec::new();
        for s in self.matching(sel) {
            let first = {
                let d = s.data.read();
                if d.mem_start == 0 || self.disk.is_none() {
                    Some(d.ts.first().copied())
                } else {
                    None
                }
            };
            let first = match first {
                Some(f) => f,
                None => self.materialize(&s, 1, u64::MAX, false)?.0.first().map(|p| p.ts),
            };
            if let Some(t) = first {
                out.push((s.labels.clone(), t));
            }
        }
        Ok(out)
    }

    fn tier_done(&self, tier: usize) -> u64 {
        self.disk.as_ref().map(|d| d.tier_done(tier)).unwrap_or(0)
    }
}
