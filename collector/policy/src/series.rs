//! Input series as written in policy tests, and a [`SignalSource`] over them.
//!
//! Notation after `promtool test rules`: a series is `metric{attr="value",…}` and its values
//! a space-separated list of `a+bxn` (n+1 values a, a+b, …, a+n·b), `a-bxn`, `axn` (a repeated
//! n+1 times), a plain number, `_` (missing) or `_xn` (n missing). Sample i is at
//! `start + i × interval`.
//!
//! Reading rules: every sample is one observation, so gauges and histograms alike give
//! mean/min/max/sum/count/quantiles over the samples in the window, `last` sums each series'
//! latest sample, `rate`/`increase` treat samples as counter values; `histogram` buckets the
//! samples with the test's `buckets`; `counts_by` is the counter increase per attribute value.

use std::collections::BTreeMap;

use super::signal::{
    Histogram, NANOS, Selector, SignalError, SignalQuery, SignalSource, Stat, VersionSeen, nanos,
};

/// Default histogram bounds for tests: tenths of the unit interval (confidences).
pub const DEFAULT_BUCKETS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// One series with its samples, sorted by time.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Metric name.
    pub metric: String,
    /// Attributes.
    pub attrs: BTreeMap<String, String>,
    /// (Unix nanos, value), increasing in time.
    pub points: Vec<(u64, f64)>,
}

/// Parses `metric{a="b",c="d"}`.
pub fn parse_series_name(text: &str) -> Result<(String, BTreeMap<String, String>), String> {
    let text = text.trim();
    let Some(open) = text.find('{') else {
        if text.is_empty() {
            return Err("empty series name".into());
        }
        return Ok((text.to_owned(), BTreeMap::new()));
    };
    let metric = text[..open].trim().to_owned();
    let body = text[open + 1..]
        .strip_suffix('}')
        .ok_or_else(|| format!("series {text:?} lacks a closing `}}`"))?;
    let mut attrs = BTreeMap::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let (key, after) =
            rest.split_once('=').ok_or_else(|| format!("expected `key=\"value\"` in {text:?}"))?;
        let after = after.trim_start();
        let after = after
            .strip_prefix('"')
            .ok_or_else(|| format!("value of {key:?} must be quoted in {text:?}"))?;
        let end = after.find('"').ok_or_else(|| format!("unclosed quote in {text:?}"))?;
        attrs.insert(key.trim().to_owned(), after[..end].to_owned());
        rest = after[end + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    if metric.is_empty() {
        return Err(format!("series {text:?} has no metric name"));
    }
    Ok((metric, attrs))
}

/// Expands `a+bxn`-notation into values (`None` = missing).
pub fn expand_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        let (head, times) = match token.rsplit_once('x') {
            Some((h, n)) => {
                let n: usize = n.parse().map_err(|_| format!("bad repeat count in {token:?}"))?;
                (h, Some(n))
            }
            None => (token, None),
        };
        if head == "_" {
            out.extend(std::iter::repeat_n(None, times.unwrap_or(1)));
            continue;
        }
        // Split `a+b` / `a-b` at the last sign that is not the leading one nor an exponent's.
        let bytes = head.as_bytes();
        let split = (1..bytes.len()).rev().find(|&i| {
            (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E')
        });
        let (a, b) = match split {
            Some(i) => {
                let a: f64 = head[..i].parse().map_err(|_| format!("bad number in {token:?}"))?;
                let b: f64 = head[i..].parse().map_err(|_| format!("bad step in {token:?}"))?;
                (a, b)
            }
            None => (head.parse().map_err(|_| format!("bad value {token:?}"))?, 0.0),
        };
        match times {
            Some(n) => out.extend((0..=n).map(|k| Some(a + b * k as f64))),
            None if split.is_some() => return Err(format!("{token:?} needs `xN` after the step")),
            None => out.push(Some(a)),
        }
    }
    Ok(out)
}

/// A [`SignalSource`] over in-memory series.
#[derive(Clone, Debug, Default)]
pub struct SeriesSource {
    /// The series.
    pub series: Vec<Series>,
    /// Histogram bounds for drift tests.
    pub buckets: Vec<f64>,
}

impl SeriesSource {
    /// A source over `series` with the default buckets.
    pub fn new(series: Vec<Series>) -> Self {
        Self { series, buckets: DEFAULT_BUCKETS.to_vec() }
    }

    fn matching<'a>(&'a self, sel: &'a Selector) -> impl Iterator<Item = &'a Series> + 'a {
        self.series.iter().filter(move |s| s.metric == sel.metric && sel.matches(&s.attrs))
    }

    fn values_in(&self, sel: &Selector, from: u64, to: u64) -> Vec<f64> {
        self.matching(sel)
            .flat_map(|s| s.points.iter().filter(|(t, _)| *t > from && *t <= to).map(|(_, v)| *v))
            .collect()
    }

    /// Counter increase of one series over (from, to].
    fn increase(s: &Series, from: u64, to: u64) -> Option<f64> {
        let end = s.points.iter().rev().find(|(t, _)| *t <= to && *t > from)?.1;
        let start = s.points.iter().rev().find(|(t, _)| *t <= from).map(|p| p.1);
        let start = start.unwrap_or_else(|| {
            s.points.iter().find(|(t, _)| *t > from).map(|p| p.1).unwrap_or(end)
        });
        Some(if end >= start { end - start } else { end })
    }
}

/// Quantile by linear interpolation between closest ranks.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let pos = q * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(values[lo] + (values[hi] - values[lo]) * (pos - lo as f64))
}

impl SignalSource for SeriesSource {
    fn read(&self, q: &SignalQuery, now: u64) -> Result<Option<f64>, SignalError> {
        let from = now.saturating_sub(nanos(q.window));
        Ok(match q.stat {
            Stat::Rate | Stat::Increase => {
                let incs: Vec<f64> = self
                    .matching(&q.selector)
                    .filter_map(|s| Self::increase(s, from, now))
                    .collect();
                if incs.is_empty() {
                    None
                } else {
                    let total: f64 = incs.iter().sum();
                    Some(if q.stat == Stat::Rate {
                        total / q.window.as_secs_f64().max(1e-9)
                    } else {
                        total
                    })
                }
            }
            Stat::Last => {
                let lasts: Vec<f64> = self
                    .matching(&q.selector)
                    .filter_map(|s| {
                        s.points.iter().rev().find(|(t, _)| *t > from && *t <= now).map(|p| p.1)
                    })
                    .collect();
                (!lasts.is_empty()).then(|| lasts.iter().sum())
            }
            stat => {
                let mut v = self.values_in(&q.selector, from, now);
                if v.is_empty() {
                    return Ok(None);
                }
                match stat {
                    Stat::Mean => Some(v.iter().sum::<f64>() / v.len() as f64),
                    Stat::Min => v.iter().copied().reduce(f64::min),
                    Stat::Max => v.iter().copied().reduce(f64::max),
                    Stat::Sum => Some(v.iter().sum()),
                    Stat::Count => Some(v.len() as f64),
                    Stat::Quantile(p) => quantile(&mut v, p),
                    _ => None,
                }
            }
        })
    }

    fn histogram(
        &self,
        selector: &Selector,
        from: u64,
        to: u64,
    ) -> Result<Option<Histogram>, SignalError> {
        let values = self.values_in(selector, from, to);
        if values.is_empty() {
            return Ok(None);
        }
        let mut counts = vec![0.0; self.buckets.len() + 1];
        for v in values {
            let i = self.buckets.iter().position(|b| v <= *b).unwrap_or(self.buckets.len());
            counts[i] += 1.0;
        }
        Ok(Some(Histogram { bounds: self.buckets.clone(), counts }))
    }

    fn counts_by(
        &self,
        selector: &Selector,
        by: &str,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<String, f64>, SignalError> {
        let mut out = BTreeMap::new();
        for s in self.matching(selector) {
            if let (Some(key), Some(inc)) = (s.attrs.get(by), Self::increase(s, from, to)) {
                *out.entry(key.clone()).or_insert(0.0) += inc;
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
        let mut first: BTreeMap<&String, u64> = BTreeMap::new();
        for s in self.matching(&sel) {
            if let (Some(version), Some((t, _))) = (s.attrs.get("model.version"), s.points.first())
            {
                if *t <= now {
                    let e = first.entry(version).or_insert(*t);
                    *e = (*e).min(*t);
                }
            }
        }
        let best = first
            .into_iter()
            .max_by_key(|(_, t)| *t)
            .map(|(v, t)| VersionSeen { version: v.clone(), first_seen: t });
        Ok(best)
    }
}

/// Builds a series from notation, sample i at `start + i·step` (missing values skipped).
pub fn series_from_notation(
    name: &str,
    values: &str,
    start: u64,
    step: std::time::Duration,
) -> Result<Series, String> {
    let (metric, attrs) = parse_series_name(name)?;
    let step = nanos(step);
    let points = expand_values(values)?
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (start + i as u64 * step, v)))
        .collect();
    Ok(Series { metric, attrs, points })
}

/// Seconds to nanos.
pub const fn secs(s: u64) -> u64 {
    s * NANOS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expands_promtool_notation() {
        assert_eq!(
            expand_values("1+2x3 _ 5 _x2 -1-1x1 7x1").expect("valid"),
            vec![
                Some(1.0),
                Some(3.0),
                Some(5.0),
                Some(7.0),
                None,
                Some(5.0),
                None,
                None,
                Some(-1.0),
                Some(-2.0),
                Some(7.0),
                Some(7.0)
            ]
        );
        assert_eq!(expand_values("1e-3").expect("valid"), vec![Some(0.001)]);
        assert!(expand_values("1+2").is_err());
        assert!(expand_values("abc").is_err());
    }

    #[test]
    fn parses_series_names() {
        let (m, a) =
            parse_series_name(r#"inference.request.duration{model.name="resnet", outcome="ok"}"#)
                .expect("valid");
        assert_eq!(m, "inference.request.duration");
        assert_eq!(a.get("outcome").map(String::as_str), Some("ok"));
        assert!(parse_series_name("x{a=b}").is_err());
    }

    #[test]
    fn reads_statistics_over_windows() {
        let s = series_from_notation("m", "1 2 3 4 5", secs(0), Duration::from_secs(10))
            .expect("series");
        let src = SeriesSource::new(vec![s]);
        let q = |stat, w| SignalQuery {
            selector: Selector { metric: "m".into(), matchers: BTreeMap::new() },
            stat,
            window: Duration::from_secs(w),
        };
        assert_eq!(src.read(&q(Stat::Mean, 30), secs(40)).expect("read"), Some(4.0));
        assert_eq!(src.read(&q(Stat::Max, 100), secs(40)).expect("read"), Some(5.0));
        // (0, 40] leaves out the sample at t=0: median of 2, 3, 4, 5.
        assert_eq!(src.read(&q(Stat::Quantile(0.5), 100), secs(40)).expect("read"), Some(3.5));
        assert_eq!(src.read(&q(Stat::Increase, 20), secs(40)).expect("read"), Some(2.0));
        assert_eq!(src.read(&q(Stat::Rate, 20), secs(40)).expect("read"), Some(0.1));
        assert_eq!(src.read(&q(Stat::Mean, 5), secs(45)).expect("read"), None);
    }
}
