//! The in-memory histogram points of one series, as columns: per point a count, min, max,
//! a layout id and where its bucket counts start in one flat `u64` column. Bucket bounds are
//! kept once per distinct layout, not per point, so a point costs no allocation of its own and
//! a window of points with one layout is merged by adding consecutive slices of the flat
//! column into one accumulator.

use std::sync::Arc;

use super::hist::{Buckets, ExpSide, Histogram, merged_extreme};

/// A bucket layout shared by many points of a series.
#[derive(Clone, Debug, PartialEq)]
enum Layout {
    /// Explicit upper bounds; the point's counts are `bounds.len() + 1` entries.
    Explicit(Arc<[f64]>),
    /// Base-2 exponential at this scale; the point's entries are `zero_count`, then for the
    /// positive and the negative side `offset` (as `i64` bits), `n`, and `n` counts.
    Exponential(i32),
}

/// Histogram points of one series, oldest first (parallel to the series' timestamps).
#[derive(Debug, Default)]
pub(crate) struct HistCols {
    count: Vec<u64>,
    /// `NaN` where the minimum is unknown (not reported, or not derivable for the interval).
    min: Vec<f64>,
    /// `NaN` where the maximum is unknown.
    max: Vec<f64>,
    layout: Vec<u32>,
    start: Vec<usize>,
    buckets: Vec<u64>,
    layouts: Vec<Layout>,
}

fn opt(v: f64) -> Option<f64> {
    (!v.is_nan()).then_some(v)
}

fn nan_none(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

fn same_bounds(a: &Arc<[f64]>, b: &Arc<[f64]>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

impl HistCols {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.count.len()
    }

    fn end(&self, i: usize) -> usize {
        self.start.get(i + 1).copied().unwrap_or(self.buckets.len())
    }

    fn layout_id(&mut self, l: Layout) -> u32 {
        let same = |x: &Layout| match (x, &l) {
            (Layout::Explicit(a), Layout::Explicit(b)) => same_bounds(a, b),
            (a, b) => a == b,
        };
        if let Some(&last) = self.layout.last() {
            if same(&self.layouts[last as usize]) {
                return last;
            }
        }
        if let Some(i) = self.layouts.iter().position(same) {
            return i as u32;
        }
        self.layouts.push(l);
        (self.layouts.len() - 1) as u32
    }

    /// Appends a point (its `sum` lives in the series' value column).
    pub fn push(&mut self, h: &Histogram) {
        self.count.push(h.count);
        self.min.push(h.min.unwrap_or(f64::NAN));
        self.max.push(h.max.unwrap_or(f64::NAN));
        self.start.push(self.buckets.len());
        let l = match &h.buckets {
            Buckets::Explicit { bounds, counts } => {
                self.buckets.extend_from_slice(counts);
                Layout::Explicit(bounds.clone())
            }
            Buckets::Exponential { scale, zero_count, positive, negative } => {
                self.buckets.push(*zero_count);
                for side in [positive, negative] {
                    self.buckets.push(side.offset as i64 as u64);
                    self.buckets.push(side.counts.len() as u64);
                    self.buckets.extend_from_slice(&side.counts);
                }
                Layout::Exponential(*scale)
            }
        };
        let id = self.layout_id(l);
        self.layout.push(id);
    }

    /// Merges `h` into the newest point (a rollup taking one more point of its interval):
    /// in place when the layouts match, else by rebuilding that point.
    pub fn merge_into_last(&mut self, h: &Histogram) {
        let Some(i) = self.len().checked_sub(1) else {
            self.push(h);
            return;
        };
        if let (Layout::Explicit(b), Buckets::Explicit { bounds, counts }) =
            (&self.layouts[self.layout[i] as usize], &h.buckets)
        {
            let s = self.start[i];
            if same_bounds(b, bounds) && self.buckets.len() - s == counts.len() {
                for (a, c) in self.buckets[s..].iter_mut().zip(counts) {
                    *a += c;
                }
                let n = self.count[i];
                self.min[i] =
                    nan_none(merged_extreme(opt(self.min[i]), n, h.min, h.count, f64::min));
                self.max[i] =
                    nan_none(merged_extreme(opt(self.max[i]), n, h.max, h.count, f64::max));
                self.count[i] += h.count;
                return;
            }
        }
        let Some(mut m) = self.get(i, 0.0) else { return };
        m.merge(h);
        self.buckets.truncate(self.start[i]);
        self.count.pop();
        self.min.pop();
        self.max.pop();
        self.layout.pop();
        self.start.pop();
        self.push(&m);
    }

    /// Point `i` as a [`Histogram`] with the given `sum`; `None` past the end.
    pub fn get(&self, i: usize, sum: f64) -> Option<Histogram> {
        let l = self.layouts.get(*self.layout.get(i)? as usize)?;
        let raw = &self.buckets[self.start[i]..self.end(i)];
        let buckets = match l {
            Layout::Explicit(bounds) => {
                Buckets::Explicit { bounds: bounds.clone(), counts: raw.to_vec() }
            }
            Layout::Exponential(scale) => {
                let mut pos = 1;
                let mut side = || {
                    let offset = *raw.get(pos)? as i64 as i32;
                    let n = *raw.get(pos + 1)? as usize;
                    let counts = raw.get(pos + 2..pos + 2 + n)?.to_vec();
                    pos += 2 + n;
                    Some(ExpSide { offset, counts })
                };
                let positive = side().unwrap_or_default();
                let negative = side().unwrap_or_default();
                Buckets::Exponential {
                    scale: *scale,
                    zero_count: raw.first().copied().unwrap_or(0),
                    positive,
                    negative,
                }
            }
        };
        Some(Histogram {
            count: self.count[i],
            sum,
            min: opt(self.min[i]),
            max: opt(self.max[i]),
            buckets,
        })
    }

    /// Mean observation of point `i` (`sums[i] / count`), `None` when empty or absent.
    pub fn mean(&self, i: usize, sum: f64) -> Option<f64> {
        let c = *self.count.get(i)?;
        (c > 0).then(|| sum / c as f64)
    }

    /// Merges points `i0..i1` into `acc` (`sums` is the series' value column). Points whose
    /// explicit layout matches the accumulator's are added in place, slice by slice; anything
    /// else goes through [`Histogram::merge`].
    pub fn merge_range(&self, i0: usize, i1: usize, sums: &[f64], acc: &mut Option<Histogram>) {
        let i1 = i1.min(self.len());
        let mut i = i0;
        while i < i1 {
            let lid = self.layout[i];
            if let (
                Layout::Explicit(b),
                Some(Histogram {
                    count,
                    sum,
                    min,
                    max,
                    buckets: Buckets::Explicit { bounds, counts },
                }),
            ) = (&self.layouts[lid as usize], acc.as_mut())
            {
                if same_bounds(bounds, b) {
                    let n = counts.len();
                    let mut j = i;
                    while j < i1 && self.layout[j] == lid && self.end(j) - self.start[j] == n {
                        let (s, e) = (self.start[j], self.start[j] + n);
                        for (a, c) in counts.iter_mut().zip(&self.buckets[s..e]) {
                            *a += c;
                        }
                        let n = self.count[j];
                        *min = merged_extreme(*min, *count, opt(self.min[j]), n, f64::min);
                        *max = merged_extreme(*max, *count, opt(self.max[j]), n, f64::max);
                        *count += n;
                        *sum += sums[j];
                        j += 1;
                    }
                    if j > i {
                        i = j;
                        continue;
                    }
                }
            }
            if let Some(h) = self.get(i, sums[i]) {
                match acc {
                    Some(m) => m.merge(&h),
                    None => *acc = Some(h),
                }
            }
            i += 1;
        }
    }

    /// Drops the oldest `n` points.
    pub fn drain_front(&mut self, n: usize) {
        let n = n.min(self.len());
        if n == 0 {
            return;
        }
        let cut = if n < self.len() { self.start[n] } else { self.buckets.len() };
        self.count.drain(..n);
        self.min.drain(..n);
        self.max.drain(..n);
        self.layout.drain(..n);
        self.start.drain(..n);
        self.buckets.drain(..cut);
        for s in &mut self.start {
            *s -= cut;
        }
        let first = self.layout.first().copied();
        if self.layouts.len() > 1 && self.layout.iter().all(|l| Some(*l) == first) {
            // Keep the layout table small once old layouts have aged out.
            let keep = first.map(|l| self.layouts[l as usize].clone());
            self.layouts.clear();
            self.layouts.extend(keep);
            self.layout.iter_mut().for_each(|l| *l = 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(scale: i32, zero: u64, off: i32, counts: Vec<u64>) -> Histogram {
        let count = zero + counts.iter().sum::<u64>();
        Histogram {
            count,
            sum: 1.0,
            min: Some(0.5),
            max: None,
            buckets: Buckets::Exponential {
                scale,
                zero_count: zero,
                positive: ExpSide { offset: off, counts },
                negative: ExpSide { offset: -3, counts: vec![] },
            },
        }
    }

    #[test]
    fn round_trips_and_merges_like_histogram_merge() {
        let mut c = HistCols::default();
        let b1: Arc<[f64]> = vec![1.0, 2.0].into();
        let pts = vec![
            Histogram::explicit(b1.clone(), vec![1, 2, 3], 10.0),
            Histogram {
                min: Some(0.1),
                max: Some(9.0),
                ..Histogram::explicit(vec![1.0, 2.0], vec![4, 0, 1], 5.0)
            },
            exp(2, 1, -2, vec![1, 0, 3]),
            Histogram::explicit(vec![1.0, 5.0], vec![0, 2, 2], 7.0),
            Histogram::explicit(b1, vec![1, 1, 1], 3.0),
        ];
        let sums: Vec<f64> = pts.iter().map(|h| h.sum).collect();
        for h in &pts {
            c.push(h);
        }
        assert_eq!(c.layouts.len(), 3, "equal bounds share one layout");
        for (i, h) in pts.iter().enumerate() {
            assert_eq!(c.get(i, h.sum).as_ref(), Some(h));
        }
        for (i0, i1) in [(0, 5), (0, 2), (1, 4), (3, 5), (2, 3)] {
            let mut want: Option<Histogram> = None;
            for h in &pts[i0..i1] {
                match &mut want {
                    Some(m) => m.merge(h),
                    None => want = Some(h.clone()),
                }
            }
            let mut got = None;
            c.merge_range(i0, i1, &sums, &mut got);
            assert_eq!(got, want, "{i0}..{i1}");
        }
        c.drain_front(2);
        assert_eq!(c.len(), 3);
        for (i, h) in pts[2..].iter().enumerate() {
            assert_eq!(c.get(i, h.sum).as_ref(), Some(h));
        }
        c.drain_front(5);
        assert_eq!(c.len(), 0);
        assert_eq!(c.get(0, 0.0), None);

        // A rollup absorbing points: in place for the same layout, rebuilt for another.
        let mut r = HistCols::default();
        let mut want = pts[0].clone();
        r.push(&pts[0]);
        for h in &pts[1..] {
            r.merge_into_last(h);
            want.merge(h);
            assert_eq!(r.len(), 1);
            assert_eq!(r.get(0, want.sum).as_ref(), Some(&want));
        }
    }
}
