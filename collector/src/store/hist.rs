//! Histogram values as the store keeps and merges them: explicit-bucket and base-2 exponential
//! layouts (the two OTLP kinds), with merging across time and series and quantiles that are
//! exact to bucket resolution (the answer always lies inside the bucket holding the true rank).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Buckets of one exponential-histogram side: `counts[i]` counts values in bucket `offset + i`,
/// where bucket `k` covers `(base^k, base^(k+1)]` and `base = 2^(2^-scale)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpSide {
    /// Index of the first bucket.
    pub offset: i32,
    /// Counts, one per bucket from `offset`.
    pub counts: Vec<u64>,
}

impl ExpSide {
    fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// Index of the first bucket and one past the last, `by` halvings coarser (`None` when
    /// empty). Computed in `i64`: an offset near `i32::MAX` cannot overflow.
    fn span(&self, by: u32) -> Option<(i64, i64)> {
        if self.counts.is_empty() {
            return None;
        }
        let by = by.min(31);
        let first = i64::from(self.offset);
        let last = first + self.counts.len() as i64 - 1;
        Some((first >> by, (last >> by) + 1))
    }

    /// The same counts at a coarser scale (`by` halvings of resolution).
    fn downscaled(&self, by: u32) -> ExpSide {
        let Some((first, end)) = self.span(by) else { return self.clone() };
        if by == 0 {
            return self.clone();
        }
        let by = by.min(31);
        let mut counts = vec![0u64; (end - first) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            let idx = (i64::from(self.offset) + i as i64) >> by;
            let slot = &mut counts[(idx - first) as usize];
            *slot = slot.saturating_add(*c);
        }
        // `first` is `offset >> by` of an `i32`, so it fits.
        ExpSide { offset: i32::try_from(first).unwrap_or(self.offset), counts }
    }

    /// Adds (`add`) or subtracts (saturating) another side of the same scale. The union of
    /// the two ranges is allocated: callers bound it first ([`fit_scale`]).
    fn combine(&mut self, other: &ExpSide, add: bool) {
        let Some((ofirst, oend)) = other.span(0) else { return };
        let Some((sfirst, send)) = self.span(0) else {
            if add {
                *self = other.clone();
            }
            return;
        };
        let (first, end) = (sfirst.min(ofirst), send.max(oend));
        if first != sfirst || end != send {
            let mut counts = vec![0u64; (end - first) as usize];
            let at = (sfirst - first) as usize;
            counts[at..at + self.counts.len()].copy_from_slice(&self.counts);
            self.offset = other.offset.min(self.offset);
            self.counts = counts;
        }
        let at = (ofirst - first) as usize;
        for (slot, c) in self.counts[at..].iter_mut().zip(&other.counts) {
            *slot = if add { slot.saturating_add(*c) } else { slot.saturating_sub(*c) };
        }
    }
}

/// Most buckets one side of an exponential histogram spans after a merge or a subtraction:
/// the OTel SDKs' default `max_size`. Two histograms whose union of bucket ranges would be
/// wider are brought to a coarser scale first, as the SDKs do, so merging memory stays bounded
/// whatever the offsets.
pub const MAX_EXP_BUCKETS: usize = 160;

/// The scale at which `a` (at `sa`) and `b` (at `sb`) combine within [`MAX_EXP_BUCKETS`] per
/// side: the finer of the two scales' minimum, lowered until both sides' unions fit.
fn fit_scale(sa: i32, a: [&ExpSide; 2], sb: i32, b: [&ExpSide; 2]) -> i32 {
    let mut s = sa.min(sb);
    loop {
        let fits = (0..2).all(|side| {
            let x = a[side].span(sa.saturating_sub(s).max(0) as u32);
            let y = b[side].span(sb.saturating_sub(s).max(0) as u32);
            let width = match (x, y) {
                (Some((xf, xe)), Some((yf, ye))) => xe.max(ye) - xf.min(yf),
                (Some((f, e)), None) | (None, Some((f, e))) => e - f,
                (None, None) => 0,
            };
            width <= MAX_EXP_BUCKETS as i64
        });
        // Past 31 halvings below both scales every side is at most two buckets wide.
        if fits || s <= sa.min(sb).saturating_sub(32) {
            return s;
        }
        s -= 1;
    }
}

/// The bucket layout and counts of one histogram value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "layout", rename_all = "snake_case")]
pub enum Buckets {
    /// OTLP explicit buckets: `counts.len() == bounds.len() + 1`; bucket `i` covers
    /// `(bounds[i-1], bounds[i]]`, the last one `(bounds[last], +Inf)`.
    Explicit {
        /// Upper bounds, strictly increasing.
        #[serde(with = "arc_slice")]
        bounds: Arc<[f64]>,
        /// Counts per bucket.
        counts: Vec<u64>,
    },
    /// OTLP base-2 exponential buckets.
    Exponential {
        /// Resolution: `base = 2^(2^-scale)`.
        scale: i32,
        /// Values whose magnitude is at most the zero threshold.
        zero_count: u64,
        /// Buckets of positive values.
        positive: ExpSide,
        /// Buckets of negative values (by magnitude).
        negative: ExpSide,
    },
}

/// One histogram value: the observations of one interval (the store keeps deltas) or a merge
/// of many intervals and series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Number of observations.
    pub count: u64,
    /// Sum of observations.
    pub sum: f64,
    /// Smallest observation, where the sender reported it.
    pub min: Option<f64>,
    /// Largest observation, where the sender reported it.
    pub max: Option<f64>,
    /// Bucket counts.
    pub buckets: Buckets,
}

/// The extreme (`pick` = `f64::min` or `f64::max`) of two merged histograms holding `a_count`
/// and `b_count` observations. `None` means unknown, and an unknown side makes the merge unknown:
/// its observations may lie beyond the known one, so keeping the known value would clamp
/// quantiles and `max` to a bound that is not one. An empty side adds nothing.
pub(crate) fn merged_extreme(
    a: Option<f64>,
    a_count: u64,
    b: Option<f64>,
    b_count: u64,
    pick: fn(f64, f64) -> f64,
) -> Option<f64> {
    match (a, b) {
        _ if b_count == 0 => a,
        _ if a_count == 0 => b,
        (Some(x), Some(y)) => Some(pick(x, y)),
        _ => None,
    }
}

/// The interval's extreme from two cumulative extremes (`earlier`, then `now`): a minimum that
/// fell or a maximum that rose was observed in the interval; one that stayed says only that the
/// interval's extreme lies within it, so it is unknown. `beyond(now, earlier)` says whether
/// `now` moved outward.
fn interval_extreme(
    now: Option<f64>,
    earlier: Option<f64>,
    earlier_count: u64,
    beyond: fn(f64, f64) -> bool,
) -> Option<f64> {
    match (now, earlier) {
        (Some(n), _) if earlier_count == 0 => Some(n),
        (Some(n), Some(e)) if beyond(n, e) => Some(n),
        _ => None,
    }
}

impl Histogram {
    /// An explicit-bucket histogram.
    pub fn explicit(bounds: impl Into<Arc<[f64]>>, counts: Vec<u64>, sum: f64) -> Self {
        let count = counts.iter().sum();
        Histogram {
            count,
            sum,
            min: None,
            max: None,
            buckets: Buckets::Explicit { bounds: bounds.into(), counts },
        }
    }

    /// Mean observation (`sum / count`), `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Whether `other` can be subtracted bucket by bucket (same layout kind and bounds).
    pub fn same_layout(&self, other: &Histogram) -> bool {
        match (&self.buckets, &other.buckets) {
            (Buckets::Explicit { bounds: a, .. }, Buckets::Explicit { bounds: b, .. }) => a == b,
            (Buckets::Exponential { .. }, Buckets::Exponential { .. }) => true,
            _ => false,
        }
    }

    /// `self - earlier` for cumulative histograms of the same layout (the increments between
    /// two cumulative points), with the extremes that can be derived (see `interval_extreme`).
    /// `None` when a bucket went down: the counter was reset.
    pub fn delta_since(&self, earlier: &Histogram) -> Option<Histogram> {
        if self.count < earlier.count {
            return None;
        }
        let buckets = match (&self.buckets, &earlier.buckets) {
            (
                Buckets::Explicit { bounds, counts },
                Buckets::Explicit { bounds: eb, counts: ec },
            ) => {
                if bounds != eb || counts.len() != ec.len() {
                    return None;
                }
                let mut out = Vec::with_capacity(counts.len());
                for (a, b) in counts.iter().zip(ec) {
                    out.push(a.checked_sub(*b)?);
                }
                Buckets::Explicit { bounds: bounds.clone(), counts: out }
            }
            (
                Buckets::Exponential { scale, zero_count, positive, negative },
                Buckets::Exponential { scale: es, zero_count: ez, positive: ep, negative: en },
            ) => {
                let s = fit_scale(*scale, [positive, negative], *es, [ep, en]);
                let (mut p, mut n) = (
                    positive.downscaled((scale - s) as u32),
                    negative.downscaled((scale - s) as u32),
                );
                let (ep, en) = (ep.downscaled((es - s) as u32), en.downscaled((es - s) as u32));
                if p.total() < ep.total() || n.total() < en.total() {
                    return None;
                }
                p.combine(&ep, false);
                n.combine(&en, false);
                Buckets::Exponential {
                    scale: s,
                    zero_count: zero_count.checked_sub(*ez)?,
                    positive: p,
                    negative: n,
                }
            }
            _ => return None,
        };
        let count = self.count - earlier.count;
        let (min, max) = if count == 0 {
            (None, None)
        } else {
            (
                interval_extreme(self.min, earlier.min, earlier.count, |n, e| n < e),
                interval_extreme(self.max, earlier.max, earlier.count, |n, e| n > e),
            )
        };
        Some(Histogram { count, sum: self.sum - earlier.sum, min, max, buckets })
    }

    /// Adds `other` into `self` (merging across time or series). Explicit layouts with different
    /// bounds merge onto the union of bounds (each count lands in the union bucket with its own
    /// upper bound, so no count moves across one of its own bounds); exponential layouts merge at
    /// the coarser scale; an exponential merged into an explicit one is first laid onto explicit
    /// bounds of its own buckets.
    pub fn merge(&mut self, other: &Histogram) {
        self.min = merged_extreme(self.min, self.count, other.min, other.count, f64::min);
        self.max = merged_extreme(self.max, self.count, other.max, other.count, f64::max);
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
        match (&mut self.buckets, &other.buckets) {
            (
                Buckets::Explicit { bounds, counts },
                Buckets::Explicit { bounds: ob, counts: oc },
            ) => {
                if (Arc::ptr_eq(bounds, ob) || bounds == ob) && counts.len() == oc.len() {
                    for (a, b) in counts.iter_mut().zip(oc) {
                        *a = a.saturating_add(*b);
                    }
                } else {
                    let (nb, nc) = union_merge(bounds, counts, ob, oc);
                    *bounds = nb;
                    *counts = nc;
                }
            }
            (
                Buckets::Exponential { scale, zero_count, positive, negative },
                Buckets::Exponential { scale: os, zero_count: oz, positive: op, negative: on },
            ) => {
                let s = fit_scale(*scale, [positive, negative], *os, [op, on]);
                if s < *scale {
                    *positive = positive.downscaled((*scale - s) as u32);
                    *negative = negative.downscaled((*scale - s) as u32);
                    *scale = s;
                }
                positive.combine(&op.downscaled((os - s) as u32), true);
                negative.combine(&on.downscaled((os - s) as u32), true);
                *zero_count = zero_count.saturating_add(*oz);
            }
            (Buckets::Explicit { bounds, counts }, Buckets::Exponential { .. }) => {
                let (ob, oc) = other.as_explicit();
                let (nb, nc) = union_merge(bounds, counts, &ob, &oc);
                *bounds = nb;
                *counts = nc;
            }
            (Buckets::Exponential { .. }, Buckets::Explicit { bounds: ob, counts: oc }) => {
                let (b, c) = self.as_explicit();
                let (nb, nc) = union_merge(&b, &c, ob, oc);
                self.buckets = Buckets::Explicit { bounds: nb, counts: nc };
            }
        }
    }

    /// The buckets as explicit bounds and counts (exponential buckets become their upper bounds).
    pub fn as_explicit(&self) -> (Arc<[f64]>, Vec<u64>) {
        match &self.buckets {
            Buckets::Explicit { bounds, counts } => (bounds.clone(), counts.clone()),
            Buckets::Exponential { .. } => {
                let mut bounds = Vec::new();
                let mut counts = Vec::new();
                // Buckets whose upper bound overflows f64 belong to the open-ended ends: +Inf
                // to the last bucket, -Inf to the first. No count is dropped.
                let (mut below, mut above) = (0u64, 0u64);
                for (_, hi, c) in self.ranges() {
                    if hi.is_finite() {
                        bounds.push(hi);
                        counts.push(c);
                    } else if hi > 0.0 {
                        above = above.saturating_add(c);
                    } else {
                        below = below.saturating_add(c);
                    }
                }
                counts.push(above);
                counts[0] = counts[0].saturating_add(below);
                (bounds.into(), counts)
            }
        }
    }

    /// Buckets in ascending value order as `(lower, upper, count)`.
    pub fn ranges(&self) -> Vec<(f64, f64, u64)> {
        match &self.buckets {
            Buckets::Explicit { bounds, counts } => {
                let mut out = Vec::with_capacity(counts.len());
                for (i, c) in counts.iter().enumerate() {
                    let lo = if i == 0 { f64::NEG_INFINITY } else { bounds[i - 1] };
                    let hi = bounds.get(i).copied().unwrap_or(f64::INFINITY);
                    out.push((lo, hi, *c));
                }
                out
            }
            Buckets::Exponential { scale, zero_count, positive, negative } => {
                let base = 2f64.powf(2f64.powi(-*scale));
                let mut out = Vec::new();
                for (i, c) in negative.counts.iter().enumerate().rev() {
                    let k = negative.offset.saturating_add(i as i32);
                    out.push((-base.powi(k.saturating_add(1)), -base.powi(k), *c));
                }
                if *zero_count > 0 {
                    out.push((0.0, 0.0, *zero_count));
                }
                for (i, c) in positive.counts.iter().enumerate() {
                    let k = positive.offset.saturating_add(i as i32);
                    out.push((base.powi(k), base.powi(k.saturating_add(1)), *c));
                }
                out
            }
        }
    }

    /// The `q`-quantile (0 ≤ q ≤ 1), linearly interpolated inside the bucket that holds rank
    /// `q * count`; open-ended buckets are closed by the reported min/max, or by their finite
    /// bound. `None` when the histogram is empty or `q` is out of range.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if !(0.0..=1.0).contains(&q) || self.count == 0 {
            return None;
        }
        let ranges = self.ranges();
        let total = ranges.iter().fold(0u64, |t, r| t.saturating_add(r.2));
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0u64;
        for (lo, hi, c) in ranges.iter().copied() {
            if c == 0 {
                continue;
            }
            if seen.saturating_add(c) as f64 >= rank {
                let lo = if lo.is_finite() {
                    lo
                } else {
                    self.min.unwrap_or(if hi > 0.0 { 0.0f64.min(hi) } else { hi })
                };
                let hi = if hi.is_finite() { hi } else { self.max.unwrap_or(lo) };
                let lo = match self.min {
                    Some(m) if m > lo && m <= hi => m,
                    _ => lo,
                };
                let hi = match self.max {
                    Some(m) if m < hi && m >= lo => m,
                    _ => hi,
                };
                let frac = ((rank - seen as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lo + (hi - lo) * frac);
            }
            seen = seen.saturating_add(c);
        }
        ranges.iter().rev().find(|r| r.2 > 0).map(|r| if r.1.is_finite() { r.1 } else { r.0 })
    }

    /// The bucket `(lower, upper]` that holds the `q`-quantile's rank: the resolution a quantile
    /// answer is exact to.
    pub fn quantile_bucket(&self, q: f64) -> Option<(f64, f64)> {
        let ranges = self.ranges();
        let total = ranges.iter().fold(0u64, |t, r| t.saturating_add(r.2));
        if total == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0u64;
        for (lo, hi, c) in ranges {
            if c > 0 && seen.saturating_add(c) as f64 >= rank {
                return Some((lo, hi));
            }
            seen = seen.saturating_add(c);
        }
        None
    }
}

mod arc_slice {
    //! serde for `Arc<[f64]>` (serde's `rc` feature is not enabled in the workspace).
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Arc<[f64]>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[f64]>, D::Error> {
        Vec::<f64>::deserialize(d).map(Into::into)
    }
}

fn union_merge(ab: &[f64], ac: &[u64], bb: &[f64], bc: &[u64]) -> (Arc<[f64]>, Vec<u64>) {
    let mut bounds: Vec<f64> =
        ab.iter().chain(bb.iter()).copied().filter(|b| b.is_finite()).collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    let mut counts = vec![0u64; bounds.len() + 1];
    for (src_b, src_c) in [(ab, ac), (bb, bc)] {
        for (i, c) in src_c.iter().enumerate() {
            let slot = match src_b.get(i) {
                Some(upper) => bounds.partition_point(|b| b < upper),
                None => bounds.len(),
            };
            counts[slot] = counts[slot].saturating_add(*c);
        }
    }
    (bounds.into(), counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_quantile_lies_in_the_right_bucket() {
        // 10 observations in (0,1], 80 in (1,2], 10 in (2,5]
        let h = Histogram::explicit(vec![1.0, 2.0, 5.0], vec![10, 80, 10, 0], 150.0);
        let p50 = h.quantile(0.5).expect("p50");
        assert!((1.0..=2.0).contains(&p50), "{p50}");
        let p95 = h.quantile(0.95).expect("p95");
        assert!((2.0..=5.0).contains(&p95), "{p95}");
        assert_eq!(h.quantile_bucket(0.95), Some((2.0, 5.0)));
        assert_eq!(h.mean(), Some(1.5));
    }

    fn with_extremes(mut h: Histogram, min: Option<f64>, max: Option<f64>) -> Histogram {
        h.min = min;
        h.max = max;
        h
    }

    /// Regression (real SDKs, cumulative temporality): the increment between two cumulative
    /// points lost both extremes, the window merge then kept the first point's (0.001–0.1) and
    /// p50/p95/max read 0.05/0.095/0.1 where the truth was about 2.1/3.8/4.0.
    #[test]
    fn cumulative_increments_keep_what_the_extremes_tell_and_quantiles_follow_the_data() {
        let bounds: Arc<[f64]> = vec![0.01, 0.05, 0.1, 1.0, 2.0, 3.0, 4.0, 5.0].into();
        let first = with_extremes(
            Histogram::explicit(bounds.clone(), vec![10, 5, 5, 0, 0, 0, 0, 0, 0], 0.8),
            Some(0.001),
            Some(0.1),
        );
        let second = with_extremes(
            Histogram::explicit(bounds, vec![10, 5, 5, 0, 10, 10, 20, 0, 0], 110.8),
            Some(0.001),
            Some(4.0),
        );
        let delta = second.delta_since(&first).expect("monotonic");
        assert_eq!(delta.count, 40);
        assert_eq!(delta.max, Some(4.0), "a maximum that rose was observed in the interval");
        assert_eq!(delta.min, None, "a minimum that stayed only bounds the interval's");
        let mut window = first.clone();
        window.merge(&delta);
        assert_eq!(window.min, None, "an unknown side makes the merged minimum unknown");
        assert_eq!(window.max, Some(4.0));
        let p95 = window.quantile(0.95).expect("p95");
        assert!((3.0..=4.0).contains(&p95), "p95 {p95} lies in the bucket of the truth");
        let p50 = window.quantile(0.5).expect("p50");
        assert!((1.0..=3.0).contains(&p50), "p50 {p50}");

        // A maximum that did not rise says nothing exact about the interval.
        let mut third = second.clone();
        if let Buckets::Explicit { counts, .. } = &mut third.buckets {
            counts[1] += 2;
        }
        third.count += 2;
        let d = third.delta_since(&second).expect("monotonic");
        assert_eq!((d.min, d.max), (None, None));
        // The first point of a series counts whole; an empty increment adds no unknowns.
        let empty = second.delta_since(&second).expect("no change");
        let mut w = first.clone();
        w.merge(&empty);
        assert_eq!((w.min, w.max), (Some(0.001), Some(0.1)));
    }

    #[test]
    fn merged_extremes_are_unknown_when_either_side_is() {
        let known = |min, max| {
            with_extremes(Histogram::explicit(vec![1.0], vec![1, 1], 2.0), Some(min), Some(max))
        };
        let unknown = Histogram::explicit(vec![1.0], vec![0, 3], 9.0);
        let mut a = known(0.5, 1.5);
        a.merge(&known(0.2, 1.2));
        assert_eq!((a.min, a.max), (Some(0.2), Some(1.5)));
        a.merge(&unknown);
        assert_eq!((a.min, a.max), (None, None));
        // Without a known maximum the open last bucket is closed by its finite bound, never
        // by a stale extreme.
        assert_eq!(a.quantile(1.0), Some(1.0));
    }

    #[test]
    fn merge_with_different_bounds_uses_the_union() {
        let mut a = Histogram::explicit(vec![1.0, 4.0], vec![1, 2, 0], 5.0);
        let b = Histogram::explicit(vec![2.0, 4.0], vec![3, 4, 1], 20.0);
        a.merge(&b);
        let (bounds, counts) = a.as_explicit();
        assert_eq!(&*bounds, &[1.0, 2.0, 4.0]);
        assert_eq!(counts, vec![1, 3, 6, 1]);
        assert_eq!(a.count, 11);
    }

    #[test]
    fn exponential_merge_and_delta() {
        let a = Histogram {
            count: 6,
            sum: 12.0,
            min: None,
            max: None,
            buckets: Buckets::Exponential {
                scale: 1,
                zero_count: 1,
                positive: ExpSide { offset: 0, counts: vec![1, 2, 2] },
                negative: ExpSide::default(),
            },
        };
        let later = Histogram {
            count: 9,
            sum: 20.0,
            min: None,
            max: None,
            buckets: Buckets::Exponential {
                scale: 0,
                zero_count: 1,
                positive: ExpSide { offset: 0, counts: vec![5, 3] },
                negative: ExpSide::default(),
            },
        };
        let d = later.delta_since(&a).expect("monotonic");
        assert_eq!(d.count, 3);
        match &d.buckets {
            Buckets::Exponential { scale, positive, zero_count, .. } => {
                assert_eq!(*scale, 0);
                assert_eq!(*zero_count, 0);
                assert_eq!(positive.counts, vec![2, 1]);
            }
            other => panic!("{other:?}"),
        }
        let q = later.quantile(0.5).expect("q");
        assert!((1.0..=2.0).contains(&q), "{q}");
    }
}
