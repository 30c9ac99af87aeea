//! Loading and checking policy files: YAML and meaning errors as `file:line:col: path: message`,
//! all of them at once, plus warnings for conflicts.
//!
//! A file is parsed by marked-yaml into nodes that keep their line and column; serde errors
//! carry the node they failed on, and our own meaning checks name a field path
//! (`spec.scale.metrics[1].target`) that [`locate`] walks back to its node. So a type error and
//! a meaning error point the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use marked_yaml::{LoaderOptions, Node};
use serde::Serialize;

use super::format::{
    AccuracyCondition, AccuracyEstimate, AnomalyCondition, ClassifierDriftCondition, Condition,
    CurrentFrom, DriftCondition, DriftTest, LatencyRegression, PolicyDoc, SignalCondition,
    SignalSpec, StepChange, TrackingTarget,
};
use super::signal::Stat;
use super::template;
use crate::spec::JobSpec;

/// Metric names of Stoker's vocabulary (DESIGN.md); others draw a warning.
pub const VOCABULARY: &[&str] = &[
    "hw.gpu.utilization",
    "hw.gpu.memory.usage",
    "hw.gpu.memory.limit",
    "gpu.memory_controller.utilization",
    "hw.power",
    "hw.energy",
    "hw.temperature",
    "gpu.clock.sm",
    "gpu.throttle.reasons",
    "hw.errors",
    "hw.status",
    "process.gpu.memory.usage",
    "process.gpu.utilization",
    "system.cpu.utilization",
    "system.memory.usage",
    "process.cpu.utilization",
    "process.memory.usage",
    "inference.request.duration",
    "inference.queue.duration",
    "inference.compute.duration",
    "inference.requests",
    "inference.batch.size",
    "inference.prediction.confidence",
    "inference.prediction.class",
    "inference.feedback",
    "inference.replicas",
];

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file is not used.
    Error,
    /// The file is used, but probably not as meant.
    Warning,
}

/// One problem in a policy file, positioned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Error or warning.
    pub severity: Severity,
    /// Field path, like `spec.target.min`; empty for syntax errors.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.col)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A policy that passed its checks, with the file it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Source file.
    pub file: PathBuf,
    /// The parsed document.
    pub doc: PolicyDoc,
}

impl Policy {
    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.doc.metadata.name
    }
}

/// The outcome of checking some paths: the usable policies and every diagnostic.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Policies without errors, in path order.
    pub policies: Vec<Policy>,
    /// All diagnostics, errors and warnings, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl CheckReport {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }
}

/// Policy files under `paths`: files as given, directories searched recursively for `*.yaml`
/// and `*.yml`, leaving out tests (`*.test.yaml`). Sorted, so output is stable.
pub fn policy_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, std::io::Error> {
    collect_files(paths, |name| {
        (name.ends_with(".yaml") || name.ends_with(".yml"))
            && !name.ends_with(".test.yaml")
            && !name.ends_with(".test.yml")
    })
}

/// Test files (`*.test.yaml`, `*.test.yml`) under `paths`.
pub fn test_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, std::io::Error> {
    collect_files(paths, |name| name.ends_with(".test.yaml") || name.ends_with(".test.yml"))
}

fn collect_files(
    paths: &[PathBuf],
    wanted: impl Fn(&str) -> bool + Copy,
) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> =
                std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
            entries.sort();
            for entry in entries {
                // Hidden entries are skipped: a Kubernetes ConfigMap volume holds every file
                // once more under `..data` and a timestamped `..2026_…` directory.
                if entry.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
                    continue;
                }
                if entry.is_dir() {
                    out.extend(collect_files(&[entry], wanted)?);
                } else if entry.file_name().and_then(|n| n.to_str()).is_some_and(wanted) {
                    out.push(entry);
                }
            }
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// Checks every policy file under `paths` and the set as a whole.
pub fn check_paths(paths: &[PathBuf]) -> CheckReport {
    let mut report = CheckReport::default();
    let files = match policy_files(paths) {
        Ok(files) => files,
        Err(e) => {
            let file = paths.first().cloned().unwrap_or_default();
            report.diagnostics.push(Diagnostic {
                file,
                line: 1,
                col: 1,
                severity: Severity::Error,
                path: String::new(),
                message: format!("cannot list policy files: {e}"),
            });
            return report;
        }
    };
    let mut nodes = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let (policy, node, diags) = check_text(&file, &text);
                report.diagnostics.extend(diags);
                if let (Some(p), Some(n)) = (policy, node) {
                    nodes.push(n);
                    report.policies.push(p);
                }
            }
            Err(e) => report.diagnostics.push(Diagnostic {
                file: file.clone(),
                line: 1,
                col: 1,
                severity: Severity::Error,
                path: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    let set_diags = check_set(&report.policies, &nodes);
    // A duplicate name makes the later file unusable: decisions and state are keyed by name.
    let dup_files: BTreeSet<PathBuf> = set_diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.file.clone())
        .collect();
    report.policies.retain(|p| !dup_files.contains(&p.file));
    report.diagnostics.extend(set_diags);
    report
}

/// Parses and checks one file's text. Returns the policy when it has no errors, the node tree
/// (for locating set-level findings) and the diagnostics.
pub fn check_text(file: &Path, text: &str) -> (Option<Policy>, Option<Node>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let node = match parse_node(text) {
        Ok(node) => node,
        Err((line, col, message)) => {
            out.push(diag(file, line, col, Severity::Error, "", message));
            return (None, None, out);
        }
    };
    if let Some((line, col)) = second_document(text) {
        out.push(diag(
            file,
            line,
            col,
            Severity::Error,
            "",
            "a second YAML document: a policy file holds one policy (put each in its own file)",
        ));
    }
    out.extend(non_finite_numbers(file, &node, ""));
    let doc: PolicyDoc = match marked_yaml::from_node(&node) {
        Ok(doc) => doc,
        Err(e) => {
            let (line, col) = e.start_mark().map(|m| (m.line(), m.column())).unwrap_or((1, 1));
            let path = e.path().unwrap_or_default().to_owned();
            out.push(diag(
                file,
                line,
                col,
                Severity::Error,
                &path,
                serde_message(&e.to_string(), &path),
            ));
            return (None, Some(node), out);
        }
    };
    let mut checker = Checker { file, root: &node, out: Vec::new() };
    checker.doc(&doc);
    out.extend(checker.out);
    let ok = !out.iter().any(|d| d.severity == Severity::Error);
    (ok.then(|| Policy { file: file.to_owned(), doc }), Some(node), out)
}

/// Parses YAML into marked nodes, or (line, col, message).
pub fn parse_node(text: &str) -> Result<Node, (usize, usize, String)> {
    let options = LoaderOptions::default().error_on_duplicate_keys(true).toplevel_mapping();
    marked_yaml::parse_yaml_with_options(0, text, options).map_err(|e| {
        use marked_yaml::LoadError as L;
        let (mark, message) = match &e {
            L::TopLevelMustBeMapping(m) => (Some(*m), "the document must be a mapping".to_owned()),
            L::TopLevelMustBeSequence(m) => {
                (Some(*m), "the document must be a sequence".to_owned())
            }
            L::UnexpectedAnchor(m) => (Some(*m), "anchors are not supported".to_owned()),
            L::MappingKeyMustBeScalar(m) => (Some(*m), "mapping keys must be scalars".to_owned()),
            L::UnexpectedTag(m) => (Some(*m), "YAML tags are not supported".to_owned()),
            L::ScanError(m, _) => {
                let text = e.to_string();
                let msg = text.split_once(": ").map(|(_, r)| r.to_owned()).unwrap_or(text);
                (Some(*m), format!("invalid YAML: {msg}"))
            }
            L::DuplicateKey(inner) => (
                inner.key.span().start().copied(),
                format!("duplicate key `{}`", inner.key.as_str()),
            ),
        };
        let (line, col) = mark.map(|m| (m.line(), m.column())).unwrap_or((1, 1));
        (line, col, message)
    })
}

/// Where a second document starts (line, column), if the text has one. marked-yaml reads the
/// first document only; a policy after a `---` would be ignored without a word.
fn second_document(text: &str) -> Option<(usize, usize)> {
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
    /// Start marks of the documents that hold something (a bare trailing `---` does not).
    #[derive(Default)]
    struct Docs {
        start: Option<(usize, usize)>,
        with_content: Vec<(usize, usize)>,
    }
    impl MarkedEventReceiver for Docs {
        fn on_event(&mut self, ev: Event, mark: yaml_rust2::scanner::Marker) {
            let content = match ev {
                Event::DocumentStart => {
                    self.start = Some((mark.line(), mark.col() + 1));
                    false
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => true,
                Event::Scalar(v, ..) => !v.is_empty() && v != "~" && v != "null",
                _ => false,
            };
            if content {
                if let Some(start) = self.start.take() {
                    self.with_content.push(start);
                }
            }
        }
    }
    let mut docs = Docs::default();
    // A syntax error is reported by `parse_node`; here only the documents before it count.
    let _ = Parser::new_from_str(text).load(&mut docs, true);
    docs.with_content.get(1).copied()
}

/// Numbers YAML reads as infinite or NaN (`1e400`, `.inf`, `.nan`): every number in a policy
/// must be finite, and serde would otherwise take `1e400` as infinity without complaint.
fn non_finite_numbers(file: &Path, node: &Node, path: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    match node {
        Node::Scalar(s) if s.may_coerce() => {
            let t = s.as_str().trim();
            let number_like = t
                .trim_start_matches(['+', '-'])
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == '.');
            let non_finite = if t.trim_start_matches(['+', '-']).starts_with('.') {
                matches!(
                    t.trim_start_matches(['+', '-']),
                    ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN"
                )
            } else {
                number_like && t.parse::<f64>().is_ok_and(|v| !v.is_finite())
            };
            if non_finite {
                let (line, col) =
                    s.span().start().map(|m| (m.line(), m.column())).unwrap_or((1, 1));
                out.push(diag(
                    file,
                    line,
                    col,
                    Severity::Error,
                    path,
                    format!("number {t} is out of range (a finite number is required)"),
                ));
            }
        }
        Node::Scalar(_) => {}
        Node::Mapping(m) => {
            for (k, v) in m.iter() {
                let p = if path.is_empty() {
                    k.as_str().to_owned()
                } else {
                    format!("{path}.{}", k.as_str())
                };
                out.extend(non_finite_numbers(file, v, &p));
            }
        }
        Node::Sequence(seq) => {
            for (i, v) in seq.iter().enumerate() {
                out.extend(non_finite_numbers(file, v, &format!("{path}[{i}]")));
            }
        }
    }
    out
}

/// marked-yaml's error text without the path prefix it adds, starting lower-case.
fn serde_message(text: &str, path: &str) -> String {
    let body = if path.is_empty() {
        text
    } else {
        text.strip_prefix(path).and_then(|t| t.strip_prefix(": ")).unwrap_or(text)
    };
    let mut chars = body.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn diag(
    file: &Path,
    line: usize,
    col: usize,
    severity: Severity,
    path: &str,
    message: impl Into<String>,
) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        line,
        col,
        severity,
        path: path.to_owned(),
        message: message.into(),
    }
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            out.push(Seg::Key(key.to_owned()));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

/// The (line, col) of the deepest node along `path`; a missing key points at its parent.
pub fn locate(root: &Node, path: &str) -> (usize, usize) {
    let mut node = root;
    for seg in parse_path(path) {
        let next = match (&seg, node) {
            (Seg::Key(k), Node::Mapping(m)) => m.get_node(k),
            (Seg::Index(i), Node::Sequence(s)) => s.get_node(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    // yaml-rust marks a block mapping after its first key; its first key reads better.
    let mark = match node {
        Node::Mapping(m) => m
            .iter()
            .next()
            .and_then(|(k, _)| k.span().start().copied())
            .or(node.span().start().copied()),
        _ => node.span().start().copied(),
    };
    mark.map(|m| (m.line(), m.column())).unwrap_or((1, 1))
}

struct Checker<'a> {
    file: &'a Path,
    root: &'a Node,
    out: Vec<Diagnostic>,
}

const REFERENCE_HELP: &str =
    "use first-<duration>-of-version, previous-<duration> or pinned <rfc3339>..<rfc3339>";

impl Checker<'_> {
    fn at(&mut self, severity: Severity, path: &str, message: impl Into<String>) {
        let (line, col) = locate(self.root, path);
        self.out.push(diag(self.file, line, col, severity, path, message));
    }

    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.at(Severity::Error, path, message);
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.at(Severity::Warning, path, message);
    }

    fn doc(&mut self, doc: &PolicyDoc) {
        if doc.api_version != "stoker/v1" {
            self.err("apiVersion", format!("must be `stoker/v1`, not {:?}", doc.api_version));
        }
        if doc.kind != "Policy" {
            self.err("kind", format!("must be `Policy`, not {:?}", doc.kind));
        }
        let name = &doc.metadata.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        {
            self.err(
                "metadata.name",
                format!("{name:?} must be non-empty lower-case letters, digits, `-`, `_` or `.`"),
            );
        }
        let spec = &doc.spec;
        let t = &spec.target;
        if t.name.trim().is_empty() {
            self.err("spec.target.name", "must not be empty");
        }
        if t.min > t.max {
            self.err("spec.target.min", format!("min {} is greater than max {}", t.min, t.max));
        }
        if t.max == 0 {
            self.err("spec.target.max", "must be at least 1");
        }
        for p in t.resize_spec().validate() {
            self.err(&format!("spec.target.{}", p.path), p.message);
        }
        if let Some(cur) = &t.current {
            match (cur.from, &cur.signal) {
                (CurrentFrom::Signal, None) => {
                    self.err("spec.target.current", "`from: signal` needs a `signal`")
                }
                (CurrentFrom::Signal, Some(s)) => self.signal("spec.target.current.signal", s),
                (CurrentFrom::Actuator, Some(_)) => {
                    self.err("spec.target.current.signal", "only used with `from: signal`")
                }
                (CurrentFrom::Actuator, None) => {}
            }
        }
        if let Some(c) = &t.capacity {
            if c.per_replica_throughput.is_nan() || c.per_replica_throughput <= 0.0 {
                self.err("spec.target.capacity.perReplicaThroughput", "must be greater than 0");
            }
            if c.service_time.get().is_zero() {
                self.err("spec.target.capacity.serviceTime", "must be greater than 0");
            }
        }
        if let Some(i) = spec.interval {
            if i.get().is_zero() {
                self.err("spec.interval", "must be greater than 0");
            }
        }
        if let Some(slo) = &spec.slo {
            self.signal("spec.slo.signal", &slo.signal);
            if slo.objective.is_nan() || slo.objective <= 0.0 {
                self.err("spec.slo.objective", "must be greater than 0");
            }
        }
        if spec.scale.is_none() && spec.retrain.is_empty() {
            self.err("spec", "a policy needs `scale`, `retrain` or both");
        }
        if let Some(scale) = &spec.scale {
            self.scale(scale);
        }
        let mut names = BTreeSet::new();
        for (i, rule) in spec.retrain.iter().enumerate() {
            let path = format!("spec.retrain[{i}]");
            if !names.insert(rule.name.as_str()) {
                self.err(&format!("{path}.name"), format!("duplicate rule name {:?}", rule.name));
            }
            self.condition(&format!("{path}.when"), &rule.when, true);
            if let Some(b) = &rule.budget {
                self.budget(&format!("{path}.budget"), b);
            }
            for p in rule.job.validate() {
                self.err(&format!("{path}.job.{}", p.path), p.message);
            }
            self.job_templates(&format!("{path}.job"), &rule.job);
        }
    }

    fn scale(&mut self, scale: &super::format::ScaleSpec) {
        if scale.metrics.is_empty() && scale.steps.is_empty() && scale.model.is_none() {
            self.err("spec.scale", "needs `metrics` (target tracking), `steps` or `model`");
        }
        if let Some(m) = &scale.model {
            self.model(m);
        }
        let mut names = BTreeSet::new();
        for (i, m) in scale.metrics.iter().enumerate() {
            let path = format!("spec.scale.metrics[{i}]");
            if !names.insert(m.name.as_str()) {
                self.err(&format!("{path}.name"), format!("duplicate metric name {:?}", m.name));
            }
            self.signal(&format!("{path}.signal"), &m.signal);
            self.tracking_target(&format!("{path}.target"), &m.target);
        }
        for (i, s) in scale.steps.iter().enumerate() {
            let path = format!("spec.scale.steps[{i}]");
            if !names.insert(s.name.as_str()) {
                self.err(&format!("{path}.name"), format!("duplicate rule name {:?}", s.name));
            }
            self.condition(&format!("{path}.when"), &s.when, false);
            self.step_change(&format!("{path}.change"), &s.change);
        }
        if let Some(t) = scale.tolerance {
            if !(0.0..1.0).contains(&t) {
                self.err("spec.scale.tolerance", format!("{t} must be at least 0 and below 1"));
            }
        }
        if let Some(p) = &scale.panic {
            if let Some(th) = p.threshold {
                if th.is_nan() || th <= 1.0 {
                    self.err("spec.scale.panic.threshold", format!("{th} must be greater than 1"));
                }
            }
            if p.window.is_some_and(|w| w.get().is_zero()) {
                self.err("spec.scale.panic.window", "must be greater than 0");
            }
            if scale.metrics.is_empty() {
                self.err("spec.scale.panic", "panic mode needs target-tracking `metrics`");
            }
        }
        if let Some(b) = &scale.behavior {
            for (dir, d) in [("scaleUp", &b.scale_up), ("scaleDown", &b.scale_down)] {
                let Some(d) = d else { continue };
                for (j, p) in d.policies.iter().flatten().enumerate() {
                    let path = format!("spec.scale.behavior.{dir}.policies[{j}]");
                    if p.value.is_nan() || p.value <= 0.0 {
                        self.err(&format!("{path}.value"), "must be greater than 0");
                    }
                    if p.period.get().is_zero() {
                        self.err(&format!("{path}.period"), "must be greater than 0");
                    }
                }
                if d.policies.as_ref().is_some_and(Vec::is_empty) {
                    self.err(
                        &format!("spec.scale.behavior.{dir}.policies"),
                        "must list at least one policy (use `select: Disabled` to forbid this direction)",
                    );
                }
            }
        }
        if let Some(b) = &scale.budget {
            self.budget("spec.scale.budget", b);
        }
        if let Some(f) = &scale.forecast {
            for problem in f.spec().problems() {
                // stoker-learn names the key first: `horizon: must be …`.
                let (key, msg) = problem.split_once(": ").unwrap_or(("", problem.as_str()));
                let path = if key.is_empty() {
                    "spec.scale.forecast".to_owned()
                } else {
                    format!("spec.scale.forecast.{key}")
                };
                self.err(&path, msg.to_owned());
            }
            if f.per_replica.is_nan() || f.per_replica <= 0.0 {
                self.err(
                    "spec.scale.forecast.perReplica",
                    format!("{} must be greater than 0", f.per_replica),
                );
            }
            if f.step.is_some_and(|s| s.get().is_zero()) {
                self.err("spec.scale.forecast.step", "must be greater than 0");
            }
            if f.step.is_some_and(|s| s.get() > f.horizon.get()) {
                self.err("spec.scale.forecast.step", "must not be longer than the horizon");
            }
            self.signal("spec.scale.forecast.signal", &f.signal);
        }
        self.step_conflicts(scale);
    }

    fn model(&mut self, m: &super::format::ModelScale) {
        self.signal("spec.scale.model.load", &m.load);
        self.signal("spec.scale.model.latency", &m.latency);
        self.signal("spec.scale.model.utilization", &m.utilization);
        if !(m.p95.is_finite() && m.p95 > 0.0) {
            self.err("spec.scale.model.p95", format!("{} must be greater than 0", m.p95));
        }
        if let Some(z) = m.headroom {
            if !(z.is_finite() && z >= 0.0) {
                self.err("spec.scale.model.headroom", format!("{z} must be at least 0"));
            }
        }
        if let Some(x) = m.scale_in_at {
            if !(x > 0.0 && x <= 1.0) {
                self.err("spec.scale.model.scaleInAt", format!("{x} must be in (0, 1]"));
            }
        }
        for (key, d) in [("drain", m.drain), ("refitEvery", m.refit_every), ("history", m.history)]
        {
            if d.is_some_and(|d| d.get().is_zero()) {
                self.err(&format!("spec.scale.model.{key}"), "must be greater than 0");
            }
        }
    }

    fn budget(&mut self, path: &str, b: &super::format::Budget) {
        if b.max_runs == 0 {
            self.err(&format!("{path}.maxRuns"), "must be at least 1");
        }
        if b.per.get().is_zero() {
            self.err(&format!("{path}.per"), "must be greater than 0");
        }
    }

    fn tracking_target(&mut self, path: &str, t: &TrackingTarget) {
        match (t.value, t.average_value) {
            (Some(_), Some(_)) => self.err(path, "give either `value` or `averageValue`, not both"),
            (None, None) => self.err(path, "needs `value` or `averageValue`"),
            (Some(v), None) if v.is_nan() || v <= 0.0 => {
                self.err(&format!("{path}.value"), "must be greater than 0")
            }
            (None, Some(v)) if v.is_nan() || v <= 0.0 => {
                self.err(&format!("{path}.averageValue"), "must be greater than 0")
            }
            _ => {}
        }
    }

    fn step_change(&mut self, path: &str, c: &StepChange) {
        let n =
            [c.pods.is_some(), c.percent.is_some(), c.to.is_some()].iter().filter(|b| **b).count();
        if n != 1 {
            self.err(path, "give exactly one of `pods`, `percent` and `to`");
        }
        if c.pods == Some(0) || c.percent == Some(0.0) {
            self.err(path, "a change of 0 does nothing");
        }
        // Replica counts are u32; a change beyond that range is a typo, not a policy.
        if let Some(p) = c.pods.filter(|p| p.unsigned_abs() > u64::from(u32::MAX)) {
            self.err(
                &format!("{path}.pods"),
                format!("{p} is out of range: a replica change lies within ±{}", u32::MAX),
            );
        }
    }

    fn metric_name(&mut self, path: &str, metric: &str) {
        if metric.trim().is_empty() {
            self.err(path, "must not be empty");
        } else if !VOCABULARY.contains(&metric) {
            self.warn(path, format!("metric {metric:?} is not in Stoker's vocabulary"));
        }
    }

    fn stat(&mut self, path: &str, stat: &str) {
        if let Err(e) = stat.parse::<Stat>() {
            self.err(path, e);
        }
    }

    fn window(&mut self, path: &str, w: Option<crate::duration::HumanDuration>) {
        if w.is_some_and(|w| w.get().is_zero()) {
            self.err(path, "must be greater than 0");
        }
    }

    fn signal(&mut self, path: &str, s: &SignalSpec) {
        self.metric_name(&format!("{path}.metric"), &s.metric);
        self.stat(&format!("{path}.stat"), &s.stat);
        self.window(&format!("{path}.window"), s.window);
    }

    fn thresholds(&mut self, path: &str, present: &[(&str, Option<f64>)]) {
        let given: Vec<&str> =
            present.iter().filter(|(_, v)| v.is_some()).map(|(n, _)| *n).collect();
        if given.len() != 1 {
            let names: Vec<String> = present.iter().map(|(n, _)| format!("`{n}`")).collect();
            self.err(path, format!("give exactly one threshold of {}", names.join(", ")));
        }
    }

    fn reference(&mut self, path: &str, reference: Option<&str>) {
        if let Some(r) = reference {
            if let Err(e) = super::inputs::Reference::parse(r) {
                self.err(path, format!("{e}; {REFERENCE_HELP}"));
            }
        }
    }

    fn condition(&mut self, path: &str, c: &Condition, retrain: bool) {
        let kinds = [
            c.all.is_some(),
            c.any.is_some(),
            c.signal.is_some(),
            c.drift.is_some(),
            c.accuracy.is_some(),
            c.latency_regression.is_some(),
            c.classifier_drift.is_some(),
            c.anomaly.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            self.err(
                path,
                "give exactly one of `all`, `any`, `signal`, `drift`, `classifierDrift`, `accuracy`, `latencyRegression`, `anomaly`",
            );
            return;
        }
        for (key, list) in [("all", &c.all), ("any", &c.any)] {
            if let Some(list) = list {
                if list.is_empty() {
                    self.err(&format!("{path}.{key}"), "must list at least one condition");
                }
                for (i, sub) in list.iter().enumerate() {
                    self.condition(&format!("{path}.{key}[{i}]"), sub, retrain);
                }
            }
        }
        if let Some(s) = &c.signal {
            self.signal_condition(&format!("{path}.signal"), s);
        }
        if let Some(d) = &c.drift {
            self.drift_condition(&format!("{path}.drift"), d);
        }
        if let Some(a) = &c.accuracy {
            self.accuracy_condition(&format!("{path}.accuracy"), a);
        }
        if let Some(l) = &c.latency_regression {
            self.latency_regression_condition(&format!("{path}.latencyRegression"), l);
        }
        if let Some(d) = &c.classifier_drift {
            self.classifier_drift_condition(&format!("{path}.classifierDrift"), d);
        }
        if let Some(a) = &c.anomaly {
            self.anomaly_condition(&format!("{path}.anomaly"), a);
        }
        if !retrain && (c.drift.is_some() || c.accuracy.is_some() || c.classifier_drift.is_some()) {
            self.warn(path, "drift and accuracy conditions are meant for retraining rules");
        }
    }

    /// The `signal` condition at `p` (its path, key included).
    fn signal_condition(&mut self, p: &str, s: &SignalCondition) {
        self.metric_name(&format!("{p}.metric"), &s.metric);
        self.stat(&format!("{p}.stat"), &s.stat);
        self.window(&format!("{p}.window"), s.window);
        self.thresholds(p, &[("gt", s.gt), ("gte", s.gte), ("lt", s.lt), ("lte", s.lte)]);
    }

    /// The `drift` condition at `p` (its path, key included).
    fn drift_condition(&mut self, p: &str, d: &DriftCondition) {
        self.metric_name(&format!("{p}.metric"), &d.metric);
        self.window(&format!("{p}.window"), d.window);
        self.reference(&format!("{p}.reference"), d.reference.as_deref());
        match &d.test {
            DriftTest::Psi | DriftTest::Js => {
                if d.p_value.is_some() {
                    self.err(&format!("{p}.pValue"), format!("test `{}` has no p-value", d.test));
                }
                if d.gt.is_some() && d.gte.is_some() {
                    self.err(p, "give either `gt` or `gte`, not both");
                }
            }
            DriftTest::Ks | DriftTest::Chi2 => {
                if let Some(pv) = d.p_value {
                    if !(pv > 0.0 && pv < 1.0) {
                        self.err(&format!("{p}.pValue"), format!("{pv} must be between 0 and 1"));
                    }
                }
                if d.gt.is_some() && d.gte.is_some() {
                    self.err(p, "give either `gt` or `gte`, not both");
                }
            }
            DriftTest::Unknown(other) => self.err(
                &format!("{p}.test"),
                format!("unknown test {other:?}: use psi, ks, js or chi2"),
            ),
        }
        if d.by.is_some() && d.test != DriftTest::Chi2 {
            self.err(&format!("{p}.by"), "only used with `test: chi2`");
        }
    }

    /// The `accuracy` condition at `p` (its path, key included).
    fn accuracy_condition(&mut self, p: &str, a: &AccuracyCondition) {
        if let AccuracyEstimate::Unknown(other) = &a.estimate {
            self.err(
                &format!("{p}.estimate"),
                format!("unknown estimate {other:?}: use mean-confidence or feedback"),
            );
        }
        self.window(&format!("{p}.window"), a.window);
        self.thresholds(p, &[("lt", a.lt), ("lte", a.lte)]);
    }

    /// The `latency_regression` condition at `p` (its path, key included).
    fn latency_regression_condition(&mut self, p: &str, l: &LatencyRegression) {
        if let Some(m) = &l.metric {
            self.metric_name(&format!("{p}.metric"), m);
        }
        if let Some(s) = &l.stat {
            self.stat(&format!("{p}.stat"), s);
        }
        self.window(&format!("{p}.window"), l.window);
        self.reference(&format!("{p}.reference"), l.reference.as_deref());
        self.thresholds(p, &[("gt", l.gt), ("gte", l.gte)]);
    }

    /// The `classifier_drift` condition at `p` (its path, key included).
    fn classifier_drift_condition(&mut self, p: &str, d: &ClassifierDriftCondition) {
        if let Some(m) = &d.metric {
            self.metric_name(&format!("{p}.metric"), m);
        }
        self.window(&format!("{p}.window"), d.window);
        self.reference(&format!("{p}.reference"), d.reference.as_deref());
        if let Some([lo, hi]) = d.band {
            if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo >= hi {
                self.err(&format!("{p}.band"), format!("[{lo}, {hi}]: give [low, high] with 0 <= low < high <= 1 (ROC-AUC; default [0.45, 0.65])"));
            } else if lo > 0.5 || hi < 0.5 {
                self.err(&format!("{p}.band"), format!("[{lo}, {hi}] excludes 0.5, the AUC of identical windows: it would always alert"));
            }
        }
        let folds = d.folds.unwrap_or(super::drift::CLASSIFIER_FOLDS);
        if !(2..=20).contains(&folds) {
            self.err(&format!("{p}.folds"), format!("{folds}: use 2 to 20 folds"));
        }
        if let Some(m) = d.min_samples {
            if (m as usize) < folds * 2 {
                self.err(
                    &format!("{p}.minSamples"),
                    format!("{m} is too few for {folds} folds: at least {}", folds * 2),
                );
            }
        }
    }

    /// The `anomaly` condition at `p` (its path, key included).
    fn anomaly_condition(&mut self, p: &str, a: &AnomalyCondition) {
        if let Some(b) = &a.baseline {
            if !matches!(b.as_str(), "peers" | "history") {
                self.err(
                    &format!("{p}.baseline"),
                    format!("unknown baseline {b:?}: use peers or history"),
                );
            }
        }
        self.window(&format!("{p}.window"), a.window);
        if let Some(g) = a.gte {
            if !(g.is_finite() && g >= 0.0) {
                self.err(&format!("{p}.gte"), format!("{g}: a score threshold is a number >= 0"));
            }
        }
    }

    fn job_templates(&mut self, path: &str, job: &JobSpec) {
        let mut strings: Vec<(String, &str)> = Vec::new();
        if let Some(g) = &job.github {
            strings.extend(
                g.inputs.iter().map(|(k, v)| (format!("{path}.github.inputs.{k}"), v.as_str())),
            );
        }
        if let Some(g) = &job.gitlab {
            strings.extend(
                g.variables
                    .iter()
                    .map(|(k, v)| (format!("{path}.gitlab.variables.{k}"), v.as_str())),
            );
        }
        if let Some(c) = &job.command {
            strings.extend(
                c.argv
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{path}.command.argv[{i}]"), v.as_str())),
            );
            strings
                .extend(c.env.iter().map(|(k, v)| (format!("{path}.command.env.{k}"), v.as_str())));
        }
        let mut k8s = Vec::new();
        if let Some(k) = &job.kubernetes {
            collect_json_strings(&k.spec, &format!("{path}.kubernetes.spec"), &mut k8s);
        }
        strings.extend(k8s.iter().map(|(p, s)| (p.clone(), s.as_str())));
        for (p, s) in strings {
            if let Err(e) = template::check(s) {
                self.err(&p, e);
            }
        }
    }

    /// Two step rules on one signal in opposite directions whose threshold ranges overlap
    /// would fight: warn.
    fn step_conflicts(&mut self, scale: &super::format::ScaleSpec) {
        let ranges: Vec<_> = scale
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let sig = s.when.signal.as_ref()?;
                let dir = step_direction(&s.change)?;
                Some((
                    i,
                    dir,
                    sig.metric.clone(),
                    sig.stat.clone(),
                    sig.matchers.clone(),
                    range_of(sig),
                ))
            })
            .collect();
        for (a, b) in ranges.iter().flat_map(|a| ranges.iter().map(move |b| (a, b))) {
            if a.0 < b.0 && a.1 != b.1 && a.2 == b.2 && a.3 == b.3 && a.4 == b.4 {
                let (lo, hi) = (a.5.0.max(b.5.0), a.5.1.min(b.5.1));
                if lo < hi {
                    self.warn(
                        &format!("spec.scale.steps[{}].when", b.0),
                        format!(
                            "conflicts with steps[{}]: both fire when {} {} is between {lo} and {hi}, one scaling up and one down",
                            a.0, a.3, a.2
                        ),
                    );
                }
            }
        }
    }
}

fn step_direction(c: &StepChange) -> Option<i8> {
    match (c.pods, c.percent) {
        (Some(p), _) => Some(p.signum() as i8),
        (_, Some(p)) => Some(if p > 0.0 { 1 } else { -1 }),
        _ => None,
    }
}

fn range_of(s: &super::format::SignalCondition) -> (f64, f64) {
    match (s.gt.or(s.gte), s.lt.or(s.lte)) {
        (Some(lo), _) => (lo, f64::INFINITY),
        (_, Some(hi)) => (f64::NEG_INFINITY, hi),
        _ => (f64::NEG_INFINITY, f64::INFINITY),
    }
}

fn collect_json_strings(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::String(s) => out.push((path.to_owned(), s.clone())),
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect_json_strings(x, &format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                collect_json_strings(x, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Findings across files: duplicate policy names (error), two policies resizing one target
/// (warning: they would fight).
fn check_set(policies: &[Policy], nodes: &[Node]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut names: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut targets: BTreeMap<String, &Path> = BTreeMap::new();
    for (p, node) in policies.iter().zip(nodes) {
        if let Some(first) = names.get(p.name()) {
            let (line, col) = locate(node, "metadata.name");
            out.push(diag(
                &p.file,
                line,
                col,
                Severity::Error,
                "metadata.name",
                format!("policy name {:?} is already used by {}", p.name(), first.display()),
            ));
        } else {
            names.insert(p.name(), &p.file);
        }
        if p.doc.spec.scale.is_some() {
            let key = target_key(p);
            if let Some(first) = targets.get(&key) {
                let (line, col) = locate(node, "spec.target");
                out.push(diag(
                    &p.file,
                    line,
                    col,
                    Severity::Warning,
                    "spec.target",
                    format!(
                        "target {:?} is also resized by {}; the two policies may scale it in opposite directions",
                        p.doc.spec.target.name,
                        first.display()
                    ),
                ));
            } else {
                targets.insert(key, &p.file);
            }
        }
    }
    out
}

/// Identity of a resized target: its name and actuator section.
fn target_key(p: &Policy) -> String {
    let spec = p.doc.spec.target.resize_spec();
    format!("{}|{}", p.doc.spec.target.name, serde_json::to_string(&spec).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `classifierDrift` and `anomaly` leaves: sound ones pass, each bad key is named.
    #[test]
    fn checks_classifier_drift_and_anomaly_conditions() {
        let policy = |when: &str| {
            format!(
                "apiVersion: stoker/v1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n  target: {{name: t, min: 1, max: 2, actuator: kubernetes, kubernetes: {{namespace: n, deployment: d}}}}\n  retrain:\n    - name: r\n      when: {when}\n      job: {{actuator: webhook, webhook: {{url: \"https://example.test/hook\"}}}}\n"
            )
        };
        let errors = |when: &str| -> Vec<(String, String)> {
            let (_, _, diags) = check_text(Path::new("p.yaml"), &policy(when));
            diags
                .into_iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| (d.path, d.message))
                .collect()
        };
        assert_eq!(
            errors(
                "{classifierDrift: {window: 1h, reference: first-1h-of-version, band: [0.45, 0.65], folds: 5, minSamples: 1000}}"
            ),
            vec![]
        );
        assert_eq!(
            errors(
                "{anomaly: {node: gpu-07, baseline: peers, feature: hw.power, window: 5m, gte: 3.5}}"
            ),
            vec![]
        );
        let e = errors("{classifierDrift: {band: [0.6, 0.9]}}");
        assert!(
            e.len() == 1
                && e[0].0.ends_with("classifierDrift.band")
                && e[0].1.contains("excludes 0.5"),
            "{e:?}"
        );
        let e = errors("{classifierDrift: {band: [0.7, 0.3]}}");
        assert!(e.len() == 1 && e[0].1.contains("low < high"), "{e:?}");
        let e = errors("{classifierDrift: {folds: 1}}");
        assert!(e.len() == 1 && e[0].0.ends_with("classifierDrift.folds"), "{e:?}");
        let e = errors("{classifierDrift: {folds: 5, minSamples: 6}}");
        assert!(e.len() == 1 && e[0].0.ends_with("classifierDrift.minSamples"), "{e:?}");
        let e = errors("{classifierDrift: {reference: yesterday}}");
        assert!(e.len() == 1 && e[0].0.ends_with("classifierDrift.reference"), "{e:?}");
        let e = errors("{anomaly: {baseline: fleet}}");
        assert!(
            e.len() == 1
                && e[0].0.ends_with("anomaly.baseline")
                && e[0].1.contains("peers or history"),
            "{e:?}"
        );
        let e = errors("{anomaly: {gte: -1}}");
        assert!(e.len() == 1 && e[0].0.ends_with("anomaly.gte"), "{e:?}");
        let e = errors("{anomaly: {}, signal: {metric: m, stat: mean, gt: 1}}");
        assert!(e.iter().any(|(_, m)| m.contains("exactly one")), "{e:?}");
        let e = errors("{classifierDrift: {bands: [0.4, 0.6]}}");
        assert!(!e.is_empty(), "unknown keys are refused: {e:?}");
    }

    /// Drift tests and accuracy estimates are enums read from any spelling: every known one
    /// means what it did as a string and is written back the same, and an unknown one is
    /// reported at its position with the allowed names, beside the file's other problems
    /// (serde refusing the variant would have stopped at the first).
    #[test]
    fn drift_tests_and_estimates_keep_their_spellings_and_diagnostics() {
        use crate::format::{AccuracyEstimate, DriftTest};
        for (text, test) in [
            ("psi", DriftTest::Psi),
            ("ks", DriftTest::Ks),
            ("js", DriftTest::Js),
            ("chi2", DriftTest::Chi2),
        ] {
            let read: DriftTest = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(read, test);
            assert_eq!(serde_json::to_value(&read).unwrap(), serde_json::json!(text));
            assert_eq!(read.to_string(), text);
        }
        for (text, estimate) in [
            ("mean-confidence", AccuracyEstimate::MeanConfidence),
            ("feedback", AccuracyEstimate::Feedback),
        ] {
            let read: AccuracyEstimate = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(read, estimate);
            assert_eq!(serde_json::to_value(&read).unwrap(), serde_json::json!(text));
        }
        let text = "apiVersion: stoker/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  target: {name: t, min: 1, max: 2, actuator: kubernetes, kubernetes: {namespace: n, deployment: d}}\n  retrain:\n    - name: r\n      when: {all: [{drift: {metric: m, test: wasserstein}}, {accuracy: {estimate: guess, lt: 0.9}}, {drift: {metric: m, test: psi, pValue: 0.1}}]}\n      job: {actuator: webhook, webhook: {url: \"https://example.test/hook\"}}\n";
        let (policy, _, diags) = check_text(Path::new("p.yaml"), text);
        assert!(policy.is_none());
        let shown: Vec<String> =
            diags.iter().filter(|d| d.severity == Severity::Error).map(|d| d.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "p.yaml:8:46: spec.retrain[0].when.all[0].drift.test: unknown test \"wasserstein\": use psi, ks, js or chi2",
                "p.yaml:8:83: spec.retrain[0].when.all[1].accuracy.estimate: unknown estimate \"guess\": use mean-confidence or feedback",
                "p.yaml:8:140: spec.retrain[0].when.all[2].drift.pValue: test `psi` has no p-value",
            ],
            "{shown:#?}"
        );
    }

    #[test]
    fn locates_nested_paths() {
        let node = parse_node("a:\n  b:\n    - x: 1\n    - y: 2\n").expect("yaml");
        assert_eq!(locate(&node, "a.b[1].y"), (4, 10));
        // A missing key points at the deepest node found.
        assert_eq!(locate(&node, "a.b[1].z"), (4, 7));
    }
}
