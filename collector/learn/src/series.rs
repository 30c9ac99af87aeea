//! Samples on a regular grid: what the forecaster consumes.
//!
//! The store hands over `(timestamp, value)` points; recorded telemetry has gaps (agent
//! restarts, dropped exports) and jitter. [`RegularSeries`] snaps points onto a grid of the
//! configured step, keeps gaps as `None` and fills short gaps forward for lag features only.

use std::time::Duration;

/// One observation: Unix nanoseconds and a value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Unix time in nanoseconds (OTLP's unit).
    pub t_ns: u64,
    /// The observed value (request rate, scaling signal, ...).
    pub value: f64,
}

impl Sample {
    /// A sample at `t_ns` with `value`.
    pub const fn new(t_ns: u64, value: f64) -> Self {
        Self { t_ns, value }
    }
}

/// Values on a regular grid starting at `start_ns`, one slot per `step`; `None` is a gap.
#[derive(Clone, Debug, PartialEq)]
pub struct RegularSeries {
    /// Time of slot 0, Unix nanoseconds.
    pub start_ns: u64,
    /// Grid step.
    pub step: Duration,
    /// One slot per step; `None` where nothing was observed.
    pub values: Vec<Option<f64>>,
}

impl RegularSeries {
    /// Snaps samples (any order) onto a grid of `step` anchored at the earliest sample.
    /// Non-finite values are dropped; several samples in one slot are averaged.
    /// Returns `None` for an empty input or a zero step.
    pub fn from_samples(samples: &[Sample], step: Duration) -> Option<Self> {
        let step_ns = u64::try_from(step.as_nanos()).ok().filter(|s| *s > 0)?;
        let finite = samples.iter().filter(|s| s.value.is_finite());
        let start_ns = finite.clone().map(|s| s.t_ns).min()?;
        let end_ns = finite.clone().map(|s| s.t_ns).max()?;
        let slot = |t: u64| ((t - start_ns) + step_ns / 2) / step_ns;
        let len = usize::try_from(slot(end_ns)).ok()?.checked_add(1)?;
        let mut sums = vec![(0.0_f64, 0_u32); len];
        for s in finite {
            let i = usize::try_from(slot(s.t_ns)).ok()?;
            sums[i].0 += s.value;
            sums[i].1 += 1;
        }
        let values = sums.into_iter().map(|(sum, n)| (n > 0).then(|| sum / f64::from(n))).collect();
        Some(Self { start_ns, step, values })
    }

    /// A gap-free series from plain values.
    pub fn from_values(start_ns: u64, step: Duration, values: &[f64]) -> Self {
        Self { start_ns, step, values: values.iter().map(|v| Some(*v)).collect() }
    }

    /// Number of grid slots.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the grid has no slots.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Number of observed (non-gap) slots.
    pub fn observed(&self) -> usize {
        self.values.iter().filter(|v| v.is_some()).count()
    }

    /// Time of slot `i`, Unix nanoseconds.
    pub fn time_of(&self, i: usize) -> u64 {
        let step_ns = u64::try_from(self.step.as_nanos()).unwrap_or(u64::MAX);
        self.start_ns.saturating_add(step_ns.saturating_mul(i as u64))
    }

    /// The series with gaps of at most `max_gap` slots filled with the last observed value.
    /// Longer gaps stay `None`: carrying a value across them would invent data.
    pub fn forward_filled(&self, max_gap: usize) -> Vec<Option<f64>> {
        let mut out = Vec::with_capacity(self.values.len());
        let mut last: Option<(usize, f64)> = None;
        for (i, v) in self.values.iter().enumerate() {
            match v {
                Some(x) => {
                    last = Some((i, *x));
                    out.push(Some(*x));
                }
                None => out.push(last.filter(|(j, _)| i - j <= max_gap).map(|(_, x)| x)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn snaps_jittered_samples_and_keeps_gaps() {
        let samples = [
            Sample::new(100 * S, 1.0),
            Sample::new(110 * S + S / 3, 2.0), // jitter rounds to slot 1
            Sample::new(140 * S, 5.0),         // slots 2 and 3 are gaps
            Sample::new(139 * S, 3.0),         // same slot as 140 s: averaged
            Sample::new(150 * S, f64::NAN),    // dropped
        ];
        let s = RegularSeries::from_samples(&samples, Duration::from_secs(10)).expect("series");
        assert_eq!(s.start_ns, 100 * S);
        assert_eq!(s.values, vec![Some(1.0), Some(2.0), None, None, Some(4.0)]);
        assert_eq!(s.observed(), 3);
        assert_eq!(s.time_of(4), 140 * S);
        assert_eq!(s.forward_filled(1), vec![Some(1.0), Some(2.0), Some(2.0), None, Some(4.0)]);
    }

    #[test]
    fn empty_or_zero_step_has_no_series() {
        assert!(RegularSeries::from_samples(&[], Duration::from_secs(1)).is_none());
        assert!(RegularSeries::from_samples(&[Sample::new(1, 1.0)], Duration::ZERO).is_none());
    }
}
