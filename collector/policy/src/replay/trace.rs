//! Recorded traces: CSV and JSON, evenly spaced rows of offered load and recorded series.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::ReplayError;
use crate::series::parse_series_name;
use crate::signal::NANOS;

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
pub(super) struct Column {
    pub(super) metric: String,
    pub(super) attrs: BTreeMap<String, String>,
    pub(super) values: Vec<f64>,
    /// prefix[i] = Σ values[..i] (missing as 0), count[i] = present values in ..i.
    pub(super) prefix: Vec<f64>,
    pub(super) count: Vec<u32>,
    pub(super) counter: bool,
}

impl Column {
    pub(super) fn new(
        metric: &str,
        attrs: BTreeMap<String, String>,
        counter: bool,
        capacity: usize,
    ) -> Self {
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

    pub(super) fn push(&mut self, v: f64) {
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
pub(super) struct BucketPrefix {
    /// Indices of the matching columns.
    pub(super) columns: Vec<usize>,
    /// `counts[i * BUCKETS + b]` = observations in bucket `b` among steps `..i`.
    pub(super) counts: Vec<u32>,
}

/// Buckets of a replay histogram: `DEFAULT_BUCKETS` plus the overflow bucket.
pub(super) const BUCKETS: usize = crate::series::DEFAULT_BUCKETS.len() + 1;

impl BucketPrefix {
    /// Rows built so far (steps covered + 1).
    pub(super) fn rows(&self) -> usize {
        self.counts.len() / BUCKETS
    }

    /// Extends the prefix rows to cover steps `..hi`.
    pub(super) fn extend_to(&mut self, columns: &[Column], hi: usize) {
        let bounds = &crate::series::DEFAULT_BUCKETS;
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
    pub(super) fn between(&self, lo: usize, hi: usize) -> [u32; BUCKETS] {
        let mut out = [0u32; BUCKETS];
        for (b, o) in out.iter_mut().enumerate() {
            *o = self.counts[hi * BUCKETS + b] - self.counts[lo * BUCKETS + b];
        }
        out
    }
}
