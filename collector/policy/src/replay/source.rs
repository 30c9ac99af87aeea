//! The signals one contender sees during a replay: the trace's recorded series and the
//! series its own simulated service produces.

use std::collections::BTreeMap;

use super::trace::{BUCKETS, BucketPrefix, Column, Trace};
use crate::series::quantile;
use crate::signal::{
    Histogram, Selector, SignalError, SignalQuery, SignalSource, Stat, VersionSeen, nanos,
};

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
    pub(super) fn new(trace: &Trace) -> Self {
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

    pub(super) fn record(&mut self, values: [f64; 6]) {
        for (c, v) in self.columns.iter_mut().zip(values) {
            c.push(v);
        }
        self.len += 1;
    }

    /// Step indices (lo, hi] covering (from, to], limited to the present.
    pub(super) fn range(&self, from: u64, to: u64) -> (usize, usize) {
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

    pub(super) fn matching<'a>(
        &'a self,
        sel: &'a Selector,
    ) -> impl Iterator<Item = &'a Column> + 'a {
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
            bounds: crate::series::DEFAULT_BUCKETS.to_vec(),
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
