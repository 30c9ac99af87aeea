//! How the engine reads the world: the [`SignalSource`] trait and its query types.
//!
//! The engine never touches the store directly. The live runtime reads through an
//! implementation over the collector's store; `policy test` through the series written in a
//! test file ([`super::series`]); `policy replay` through its simulated service
//! ([`super::replay`]). All timestamps are Unix nanoseconds; windows end at `now`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Nanoseconds per second.
pub const NANOS: u64 = 1_000_000_000;

/// A metric and attribute equality matchers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Selector {
    /// Metric name.
    pub metric: String,
    /// Attribute equality matchers (all must match).
    pub matchers: BTreeMap<String, String>,
}

impl Selector {
    /// Whether a series with `attrs` matches.
    pub fn matches(&self, attrs: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|(k, v)| attrs.get(k) == Some(v))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.metric)?;
        if !self.matchers.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.matchers.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}={v:?}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// A statistic over a window: the one vocabulary of policies, the store's queries, the HTTP
/// API and the PromQL backend.
///
/// For gauges, over the samples in the window (across all matching series); for histograms,
/// over the observations (mean = sum/count, quantiles from merged buckets); for counters,
/// `rate` (per second) and `increase` summed across series. Written `mean` (or `avg`), `min`,
/// `max`, `sum`, `count`, `last`, `rate`, `increase`, and quantiles as `p95`, `p99.9`,
/// `median` or `quantile(0.95)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Stat {
    /// Arithmetic mean.
    Mean,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Sum (for counters: the increase).
    Sum,
    /// Number of samples or observations.
    Count,
    /// Most recent value (summed across matching series).
    Last,
    /// Per-second increase of a counter.
    Rate,
    /// Increase of a counter over the window.
    Increase,
    /// The q-quantile, 0 ≤ q ≤ 1.
    Quantile(f64),
}

impl std::str::FromStr for Stat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        Ok(match text {
            "mean" | "avg" => Self::Mean,
            "min" => Self::Min,
            "max" => Self::Max,
            "sum" => Self::Sum,
            "count" => Self::Count,
            "last" => Self::Last,
            "rate" => Self::Rate,
            "increase" => Self::Increase,
            "median" => Self::Quantile(0.5),
            other => {
                let q = if let Some(p) = other.strip_prefix('p') {
                    p.parse::<f64>().ok().map(|p| p / 100.0)
                } else {
                    other
                        .strip_prefix("quantile(")
                        .and_then(|r| r.strip_suffix(')'))
                        .and_then(|q| q.trim().parse::<f64>().ok())
                };
                match q {
                    Some(q) if (0.0..=1.0).contains(&q) => Self::Quantile(q),
                    _ => {
                        return Err(format!(
                            "unknown statistic {other:?}: use mean, min, max, sum, count, last, \
                             rate, increase or a quantile (p95, p99.9, median, quantile(0.95))"
                        ));
                    }
                }
            }
        })
    }
}

impl fmt::Display for Stat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mean => f.write_str("mean"),
            Self::Min => f.write_str("min"),
            Self::Max => f.write_str("max"),
            Self::Sum => f.write_str("sum"),
            Self::Count => f.write_str("count"),
            Self::Last => f.write_str("last"),
            Self::Rate => f.write_str("rate"),
            Self::Increase => f.write_str("increase"),
            // Rounded so that 0.07 reads `p7`, not `p7.000000000000001`.
            Self::Quantile(q) => write!(f, "p{}", (q * 100.0 * 1e6).round() / 1e6),
        }
    }
}

/// One signal read: a statistic of a selector over a window ending at `now`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalQuery {
    /// What series.
    pub selector: Selector,
    /// Which statistic.
    pub stat: Stat,
    /// Window length.
    pub window: Duration,
}

impl fmt::Display for SignalQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})[{}]", self.stat, self.selector, humantime::format_duration(self.window))
    }
}

/// Merged histogram buckets over a time range: `counts[i]` observations fell at or below
/// `bounds[i]` and above `bounds[i-1]`; the last count is the overflow bucket (`+Inf`), so
/// `counts.len() == bounds.len() + 1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Upper bounds, increasing.
    pub bounds: Vec<f64>,
    /// Observation counts per bucket, including the overflow bucket.
    pub counts: Vec<f64>,
}

impl Histogram {
    /// Total observations.
    pub fn total(&self) -> f64 {
        self.counts.iter().sum()
    }
}

/// The newest model version seen for a selector and when it first appeared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSeen {
    /// The `model.version` attribute value.
    pub version: String,
    /// First sample with that version, Unix nanos.
    pub first_seen: u64,
}

/// Why a signal could not be read (as opposed to "no data", which is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The source failed.
    #[error("reading {what}: {message}")]
    Source {
        /// The query, as text.
        what: String,
        /// What went wrong.
        message: String,
    },
}

/// What the engine reads signals through. Keep implementations cheap: the engine may call
/// `read` several times per rule per tick.
pub trait SignalSource {
    /// The statistic over `(now - window, now]`, or `None` when there is no data in it (for
    /// every statistic, `count` included: the engine reads a `count` without data as 0).
    fn read(&self, q: &SignalQuery, now: u64) -> Result<Option<f64>, SignalError>;

    /// Merged histogram buckets of all matching series over `(from, to]`, or `None`.
    fn histogram(
        &self,
        selector: &Selector,
        from: u64,
        to: u64,
    ) -> Result<Option<Histogram>, SignalError>;

    /// Counter increase over `(from, to]` per value of attribute `by`, across matching series.
    fn counts_by(
        &self,
        selector: &Selector,
        by: &str,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<String, f64>, SignalError>;

    /// The newest `model.version` among matching series (by first appearance), if any.
    fn latest_version(
        &self,
        selector: &Selector,
        now: u64,
    ) -> Result<Option<VersionSeen>, SignalError>;

    /// The statistic of `q` at every multiple of `step` (Unix time) in `(from, to]`, each
    /// over its own window ending there, oldest first; points without data are left out.
    /// Forecasts read their fitting history and their latest inputs through this.
    ///
    /// The default calls [`SignalSource::read`] once per point; a store with a cheaper range
    /// scan should override it and return the same points.
    fn range(
        &self,
        q: &SignalQuery,
        from: u64,
        to: u64,
        step: Duration,
    ) -> Result<Vec<(u64, f64)>, SignalError> {
        let step = nanos(step).max(1);
        let mut out = Vec::new();
        let mut t = (from / step).saturating_add(1).saturating_mul(step);
        while t <= to {
            if let Some(v) = self.read(q, t)?.filter(|v| v.is_finite()) {
                out.push((t, v));
            }
            t = t.saturating_add(step);
        }
        Ok(out)
    }
}

/// The grid points [`SignalSource::range`] reads: multiples of `step` in `(from, to]`.
pub fn grid(from: u64, to: u64, step: Duration) -> impl Iterator<Item = u64> {
    let step = nanos(step).max(1);
    let first = (from / step).saturating_add(1).saturating_mul(step);
    (0..)
        .map(move |k: u64| first.saturating_add(k.saturating_mul(step)))
        .take_while(move |t| *t <= to && *t >= first)
}

/// A [`SignalSource::range`] read in chunks: walks the [`grid`] of `(from, to]` at most `chunk`
/// points at a time, `fetch(start, end)` answering one chunk as time → value, and `finish(t,
/// &chunk)` giving each grid point's value (`None` leaves the point out, so a source can read
/// `count` as 0 where there is no data). Non-finite values are left out.
pub fn chunked_range<E>(
    from: u64,
    to: u64,
    step: Duration,
    chunk: u64,
    mut fetch: impl FnMut(u64, u64) -> Result<BTreeMap<u64, f64>, E>,
    finish: impl Fn(u64, &BTreeMap<u64, f64>) -> Option<f64>,
) -> Result<Vec<(u64, f64)>, E> {
    let step_n = nanos(step).max(1);
    let Some(first) = grid(from, to, step).next() else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let mut start = first;
    while start <= to {
        let end = start.saturating_add(step_n.saturating_mul(chunk.max(1) - 1)).min(to);
        let points = fetch(start, end)?;
        let mut t = start;
        while t <= end {
            if let Some(v) = finish(t, &points).filter(|v| v.is_finite()) {
                out.push((t, v));
            }
            match t.checked_add(step_n) {
                Some(n) => t = n,
                None => break,
            }
        }
        match end.checked_add(step_n) {
            Some(n) if end < to => start = n,
            _ => break,
        }
    }
    Ok(out)
}

/// Nanoseconds in a duration, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_statistics() {
        assert_eq!("p95".parse(), Ok(Stat::Quantile(0.95)));
        assert_eq!("quantile(0.95)".parse(), Ok(Stat::Quantile(0.95)));
        assert_eq!("median".parse(), Ok(Stat::Quantile(0.5)));
        assert_eq!("mean".parse(), Ok(Stat::Mean));
        assert_eq!("p100".parse(), Ok(Stat::Quantile(1.0)));
        assert!("p101".parse::<Stat>().is_err());
        assert!("quantile(2)".parse::<Stat>().is_err());
        assert!("mode".parse::<Stat>().expect_err("unknown").contains("p95"));
        // Display reads back as the same statistic.
        for s in ["p95", "p99.9", "p7", "rate", "last"] {
            let stat: Stat = s.parse().expect("parses");
            assert_eq!(stat.to_string(), s);
        }
        assert_eq!(Stat::Quantile(0.99).to_string(), "p99");
    }
}
