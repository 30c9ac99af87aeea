//! A parser for the Prometheus text exposition format (0.0.4), and grouping of its samples into
//! histograms and summaries.
//!
//! Why not the `prometheus-parse` crate: its 0.2 line regex (`^\w+`) cannot read metric names
//! with colons, so every vLLM metric (`vllm:e2e_request_latency_seconds`) is lost; it splits
//! label values on `,` and `=`, which mangles values containing them; and it brings regex,
//! chrono and itertools for what is a one-page grammar. This parser follows the format's
//! specification (escapes in label values, `+Inf`/`NaN`, optional timestamps) and is tested on
//! the Triton, TorchServe and vLLM fixtures. A malformed line fails the whole scrape, as in
//! Prometheus, with its line number.

use std::collections::HashMap;

/// The type a `# TYPE` line declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FamilyType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `summary`.
    Summary,
    /// `untyped` or undeclared.
    Untyped,
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Full sample name (`x_bucket`, `x_sum`, ...).
    pub name: String,
    /// Labels in their order of appearance.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A parsed exposition.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    /// Declared family types, by family name.
    pub types: HashMap<String, FamilyType>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

/// A histogram series of an exposition (cumulative, as Prometheus exposes it).
#[derive(Clone, Debug, PartialEq)]
pub struct PromHistogram {
    /// Labels other than `le`, sorted by name.
    pub labels: Vec<(String, String)>,
    /// `(le, cumulative count)` sorted by bound, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    /// `_sum`.
    pub sum: f64,
    /// `_count`.
    pub count: f64,
}

/// A summary series of an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct PromSummary {
    /// Labels other than `quantile`, sorted by name.
    pub labels: Vec<(String, String)>,
    /// `(quantile, value)` sorted by quantile.
    pub quantiles: Vec<(f64, f64)>,
    /// `_sum`.
    pub sum: f64,
    /// `_count`.
    pub count: f64,
}

/// A malformed exposition: the line and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parse an exposition.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let mut exposition = Exposition::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let err = |message: &str| ParseError { line: i + 1, message: message.to_owned() };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                let name = words.next().ok_or_else(|| err("TYPE without a metric name"))?;
                let kind = match words.next() {
                    Some("counter") => FamilyType::Counter,
                    Some("gauge") => FamilyType::Gauge,
                    Some("histogram") => FamilyType::Histogram,
                    Some("summary") => FamilyType::Summary,
                    Some("untyped") => FamilyType::Untyped,
                    _ => return Err(err("TYPE with an unknown type")),
                };
                exposition.types.insert(name.to_owned(), kind);
            }
            continue;
        }
        exposition.samples.push(parse_sample(line).map_err(|m| err(&m))?);
    }
    Ok(exposition)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err("expected a metric name".to_owned());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("expected a value")?;
    let value = parse_float(value).ok_or_else(|| format!("invalid value {value:?}"))?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| format!("invalid timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the timestamp".to_owned());
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// Parse `a="x",b="y"}` and return what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let name_end =
            s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
        let name = &s[..name_end];
        if name.is_empty() {
            return Err("expected a label name".to_owned());
        }
        s = s[name_end..].trim_start();
        s = s.strip_prefix('=').ok_or("expected '=' after a label name")?.trim_start();
        s = s.strip_prefix('"').ok_or("expected a quoted label value")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".to_owned()),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".to_owned()),
            }
        };
        labels.push((name.to_owned(), value));
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".to_owned());
        }
    }
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

fn sorted_without(labels: &[(String, String)], skip: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        labels.iter().filter(|(k, _)| k != skip).cloned().collect();
    out.sort();
    out
}

impl Exposition {
    /// Samples named exactly `name`.
    pub fn samples_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The series of histogram family `family` (from `_bucket`, `_sum`, `_count`).
    pub fn histograms(&self, family: &str) -> Vec<PromHistogram> {
        let bucket = format!("{family}_bucket");
        let sum = format!("{family}_sum");
        let count = format!("{family}_count");
        let mut by_labels: HashMap<Vec<(String, String)>, PromHistogram> = HashMap::new();
        for s in &self.samples {
            let labels = sorted_without(&s.labels, "le");
            let entry = || PromHistogram {
                labels: labels.clone(),
                buckets: Vec::new(),
                sum: 0.0,
                count: 0.0,
            };
            if s.name == bucket {
                let Some(le) = s.label("le").and_then(parse_float) else {
                    continue;
                };
                by_labels.entry(labels.clone()).or_insert_with(entry).buckets.push((le, s.value));
            } else if s.name == sum {
                by_labels.entry(labels.clone()).or_insert_with(entry).sum = s.value;
            } else if s.name == count {
                by_labels.entry(labels.clone()).or_insert_with(entry).count = s.value;
            }
        }
        let mut out: Vec<PromHistogram> = by_labels
            .into_values()
            .filter(|h| !h.buckets.is_empty())
            .map(|mut h| {
                h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                h
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// The series of summary family `family` (from quantile samples, `_sum`, `_count`).
    pub fn summaries(&self, family: &str) -> Vec<PromSummary> {
        let sum = format!("{family}_sum");
        let count = format!("{family}_count");
        let mut by_labels: HashMap<Vec<(String, String)>, PromSummary> = HashMap::new();
        for s in &self.samples {
            let labels = sorted_without(&s.labels, "quantile");
            let entry = || PromSummary {
                labels: labels.clone(),
                quantiles: Vec::new(),
                sum: 0.0,
                count: 0.0,
            };
            if s.name == family {
                let Some(q) = s.label("quantile").and_then(parse_float) else {
                    continue;
                };
                by_labels.entry(labels.clone()).or_insert_with(entry).quantiles.push((q, s.value));
            } else if s.name == sum {
                by_labels.entry(labels.clone()).or_insert_with(entry).sum = s.value;
            } else if s.name == count {
                by_labels.entry(labels.clone()).or_insert_with(entry).count = s.value;
            }
        }
        let mut out: Vec<PromSummary> = by_labels
            .into_values()
            .map(|mut s| {
                s.quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
                s
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_colon_names_escapes_and_special_values() {
        let text = "# HELP vllm:x help, with = signs\n# TYPE vllm:x counter\n\
                    vllm:x{model_name=\"a,b=c\",path=\"C:\\\\dir \\\"q\\\"\\n\",} 3.5 1700000000000\n\
                    y +Inf\nz NaN\n";
        let exp = parse(text).expect("parses");
        assert_eq!(exp.types.get("vllm:x"), Some(&FamilyType::Counter));
        assert_eq!(exp.samples[0].name, "vllm:x");
        assert_eq!(exp.samples[0].label("model_name"), Some("a,b=c"));
        assert_eq!(exp.samples[0].label("path"), Some("C:\\dir \"q\"\n"));
        assert_eq!(exp.samples[0].value, 3.5);
        assert_eq!(exp.samples[1].value, f64::INFINITY);
        assert!(exp.samples[2].value.is_nan());
    }

    #[test]
    fn malformed_lines_name_their_line() {
        assert_eq!(parse("ok 1\nbad{a=\"x} 1\n").expect_err("must fail").line, 2);
        assert_eq!(
            parse("x{a=b} 1").expect_err("must fail").message,
            "expected a quoted label value"
        );
        assert_eq!(
            parse("x 1 2 3").expect_err("must fail").message,
            "unexpected text after the timestamp"
        );
        assert!(parse("x one").is_err());
    }

    #[test]
    fn groups_histograms_and_summaries_by_labels() {
        let text = "h_bucket{m=\"a\",le=\"0.1\"} 1\nh_bucket{m=\"a\",le=\"+Inf\"} 3\nh_bucket{m=\"a\",le=\"0.01\"} 0\n\
                    h_sum{m=\"a\"} 0.7\nh_count{m=\"a\"} 3\n\
                    s{quantile=\"0.9\"} 12\ns{quantile=\"0.5\"} 10\ns_sum 100\ns_count 9\n";
        let exp = parse(text).expect("parses");
        let h = exp.histograms("h");
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].labels, vec![("m".to_owned(), "a".to_owned())]);
        assert_eq!(h[0].buckets, vec![(0.01, 0.0), (0.1, 1.0), (f64::INFINITY, 3.0)]);
        assert_eq!((h[0].sum, h[0].count), (0.7, 3.0));
        let s = exp.summaries("s");
        assert_eq!(s[0].quantiles, vec![(0.5, 10.0), (0.9, 12.0)]);
        assert_eq!((s[0].sum, s[0].count), (100.0, 9.0));
    }
}
