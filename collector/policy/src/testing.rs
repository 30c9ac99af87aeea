//! `policy test`: unit tests beside policies (`*.test.yaml`), in the style of
//! `promtool test rules`. Each test gives input series, a starting size and expectations at
//! evaluation times; the runner drives the real engine in virtual time, applying its resize
//! actions to a simulated size (enforce mode) as an actuator would.
//!
//! ```yaml
//! policies: [resnet-serving.yaml]     # default: every policy file in the same directory
//! tests:
//!   - name: latency breach scales out
//!     policy: resnet-serving          # needed when several policies are loaded
//!     interval: 10s                   # series step; default 10s
//!     evalInterval: 10s               # default: the series step
//!     size: 2                         # starting size
//!     ready: 1                        # ready replicas throughout; default: all of them
//!     series:
//!       - series: 'inference.request.duration{model.name="resnet"}'
//!         values: '0.03x30 0.2x30'
//!     expect:
//!       - at: 5m10s
//!         size: 4
//!         action: scale-up             # scale-up | scale-down | none | retrain
//!         rule: scale                  # which rule's decision `reason`/`constraint` check
//!         reason: "scale up"           # substring of that decision's reason
//!         constraint: rate-limit       # a constraint that changed that decision
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::check::{self, Policy};
use super::driver::{Driver, TargetSize, applied_size};
use super::engine::{Action, Decision, PolicyState};
use super::series::{DEFAULT_BUCKETS, SeriesSource, series_from_notation};
use super::signal::{NANOS, nanos};
use crate::duration::HumanDuration;

/// Virtual time of the first sample: 2025-01-01T00:00:00Z, so records print real dates.
pub const TEST_EPOCH: u64 = 1_735_689_600 * NANOS;

/// A test file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestFile {
    /// Policy files, relative to the test file; default: all in its directory.
    #[serde(default)]
    pub policies: Vec<String>,
    /// The tests.
    pub tests: Vec<TestCase>,
}

/// One test.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestCase {
    /// Shown in output.
    pub name: String,
    /// Policy name; optional when one policy is loaded.
    #[serde(default)]
    pub policy: Option<String>,
    /// Step between samples; default 10s.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
    /// Step between evaluations; default the series step.
    #[serde(default)]
    pub eval_interval: Option<HumanDuration>,
    /// Starting size of the target.
    #[serde(default)]
    pub size: Option<u32>,
    /// Ready replicas throughout the test (never more than the size; the rest are warming),
    /// as a resizer reporting readiness gives them; default: every replica is ready.
    #[serde(default)]
    pub ready: Option<u32>,
    /// Histogram bounds for drift conditions; default tenths of [0, 1].
    #[serde(default)]
    pub buckets: Option<Vec<f64>>,
    /// Input series.
    #[serde(default)]
    pub series: Vec<InputSeries>,
    /// Expectations.
    pub expect: Vec<Expectation>,
}

/// One input series.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSeries {
    /// `metric{attr="value"}`.
    pub series: String,
    /// Values in `a+bxn` notation.
    pub values: String,
}

/// What must hold at one evaluation time.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Time since the first sample.
    pub at: HumanDuration,
    /// Size after this evaluation.
    #[serde(default)]
    pub size: Option<u32>,
    /// `scale-up`, `scale-down`, `none` or `retrain` (for the chosen rule, or any rule).
    #[serde(default)]
    pub action: Option<String>,
    /// Rule whose decision is checked; default: the scale decision, else the first.
    #[serde(default)]
    pub rule: Option<String>,
    /// Substring of the decision's reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// A constraint (kebab-case, like `stabilization`) that changed or blocked the decision.
    #[serde(default)]
    pub constraint: Option<String>,
}

/// The result of one test.
#[derive(Clone, Debug, PartialEq)]
pub struct TestOutcome {
    /// The test file.
    pub file: PathBuf,
    /// The test's name.
    pub name: String,
    /// Failure messages; empty when it passed.
    pub failures: Vec<String>,
    /// Wall time is not measured: virtual time only. Evaluations run.
    pub evaluations: usize,
}

/// Runs every `*.test.yaml` under `paths`. Errors in the files themselves are failures.
pub fn run_paths(paths: &[PathBuf]) -> Vec<TestOutcome> {
    let files = match check::test_files(paths) {
        Ok(f) => f,
        Err(e) => {
            return vec![TestOutcome {
                file: paths.first().cloned().unwrap_or_default(),
                name: "(listing test files)".into(),
                failures: vec![e.to_string()],
                evaluations: 0,
            }];
        }
    };
    files.iter().flat_map(|f| run_file(f)).collect()
}

fn file_failure(file: &Path, msg: String) -> Vec<TestOutcome> {
    vec![TestOutcome {
        file: file.to_owned(),
        name: "(file)".into(),
        failures: vec![msg],
        evaluations: 0,
    }]
}

/// Runs one test file.
pub fn run_file(file: &Path) -> Vec<TestOutcome> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return file_failure(file, format!("{}: cannot read: {e}", file.display())),
    };
    let node = match check::parse_node(&text) {
        Ok(n) => n,
        Err((l, c, m)) => return file_failure(file, format!("{}:{l}:{c}: {m}", file.display())),
    };
    let tf: TestFile = match marked_yaml::from_node(&node) {
        Ok(t) => t,
        Err(e) => {
            let (l, c) = e.start_mark().map(|m| (m.line(), m.column())).unwrap_or((1, 1));
            return file_failure(file, format!("{}:{l}:{c}: {e}", file.display()));
        }
    };
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let paths: Vec<PathBuf> = if tf.policies.is_empty() {
        vec![dir.clone()]
    } else {
        tf.policies.iter().map(|p| dir.join(p)).collect()
    };
    let report = check::check_paths(&paths);
    if report.has_errors() {
        let errs: Vec<String> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity == check::Severity::Error)
            .map(|d| d.to_string())
            .collect();
        return file_failure(file, format!("policies do not check:\n{}", errs.join("\n")));
    }
    tf.tests.iter().map(|t| run_case(file, t, &report.policies)).collect()
}

fn action_word(d: &Decision) -> &'static str {
    match &d.action {
        Action::None => "none",
        Action::Resize { from, to } if to > from => "scale-up",
        Action::Resize { .. } => "scale-down",
        Action::StartJob { .. } => "retrain",
    }
}

fn describe(d: &Decision) -> String {
    let mut s = format!("      {} [{}]: {}", d.rule, action_word(d), d.reason);
    for i in &d.inputs {
        let _ = write!(
            s,
            "\n        input {} = {}",
            i.query,
            i.value.map(|v| format!("{v}")).unwrap_or_else(|| "no data".into())
        );
    }
    for c in d.constraints.iter().filter(|c| c.changed) {
        let _ = write!(s, "\n        {}: {}", c.constraint, c.detail);
    }
    s
}

/// Runs one test case against the loaded policies.
pub fn run_case(file: &Path, t: &TestCase, policies: &[Policy]) -> TestOutcome {
    let mut out = TestOutcome {
        file: file.to_owned(),
        name: t.name.clone(),
        failures: Vec::new(),
        evaluations: 0,
    };
    let policy = match &t.policy {
        Some(name) => policies.iter().find(|p| p.name() == name),
        None if policies.len() == 1 => policies.first(),
        None => None,
    };
    let Some(policy) = policy else {
        out.failures.push(match &t.policy {
            Some(n) => format!("no policy named {n:?} is loaded"),
            None => format!("{} policies are loaded: name one with `policy:`", policies.len()),
        });
        return out;
    };
    let step = t.interval.map(|d| d.get()).unwrap_or(Duration::from_secs(10));
    let eval = t.eval_interval.map(|d| d.get()).unwrap_or(step);
    if eval.is_zero() || step.is_zero() {
        out.failures.push("interval and evalInterval must be greater than 0".into());
        return out;
    }
    let mut series = Vec::new();
    for s in &t.series {
        match series_from_notation(&s.series, &s.values, TEST_EPOCH, step) {
            Ok(x) => series.push(x),
            Err(e) => out.failures.push(format!("series {:?}: {e}", s.series)),
        }
    }
    if !out.failures.is_empty() {
        return out;
    }
    let mut source = SeriesSource::new(series);
    source.buckets = t.buckets.clone().unwrap_or_else(|| DEFAULT_BUCKETS.to_vec());
    let mut by_time: BTreeMap<u64, Vec<&Expectation>> = BTreeMap::new();
    for e in &t.expect {
        let at = nanos(e.at.get());
        if at % nanos(eval) != 0 {
            out.failures.push(format!(
                "expectation at {} is not a multiple of evalInterval {}",
                e.at,
                HumanDuration(eval)
            ));
        }
        by_time.entry(at).or_default().push(e);
    }
    if !out.failures.is_empty() {
        return out;
    }
    let last = by_time.keys().next_back().copied().unwrap_or(0);
    let mut size = t.size;
    let mut state = PolicyState::default();
    // Scheduled, sized and applied as the live runtime does: the test's `size` and `ready`
    // are what the resizer reports.
    let mut driver = Driver::new();
    let mut at = 0u64;
    while at <= last {
        let now = TEST_EPOCH + at;
        let resizer = size.map(|provisioned| TargetSize { provisioned, ready: t.ready });
        let decisions = match driver.tick(policy, &source, &mut state, || resizer, now) {
            Some(d) => {
                out.evaluations += 1;
                d
            }
            None => Vec::new(),
        };
        for d in &decisions {
            if let Some(to) = applied_size(d) {
                size = Some(to);
            }
        }
        if let Some(exps) = by_time.get(&at) {
            for e in exps {
                check_expectation(&mut out, e, &decisions, size);
            }
        }
        at += nanos(eval);
    }
    out
}

fn check_expectation(
    out: &mut TestOutcome,
    e: &Expectation,
    decisions: &[Decision],
    size: Option<u32>,
) {
    let mut problems = Vec::new();
    if let Some(want) = e.size {
        if size != Some(want) {
            problems.push(format!(
                "expected size {want}, got {}",
                size.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())
            ));
        }
    }
    let chosen = match &e.rule {
        Some(r) => decisions.iter().find(|d| &d.rule == r),
        None => decisions.iter().find(|d| d.rule == "scale").or(decisions.first()),
    };
    if let Some(r) = &e.rule {
        if chosen.is_none() {
            problems.push(format!("no rule named {r:?} was evaluated"));
        }
    }
    if let Some(want) = &e.action {
        let got: Vec<&str> = match (&e.rule, chosen) {
            (Some(_), Some(d)) => vec![action_word(d)],
            _ => decisions.iter().map(action_word).filter(|a| *a != "none").collect(),
        };
        let ok = if want == "none" {
            got.iter().all(|a| *a == "none")
        } else {
            got.contains(&want.as_str())
        };
        if !ok {
            problems.push(format!(
                "expected action {want}, got {}",
                if got.is_empty() { "none".to_owned() } else { got.join(", ") }
            ));
        }
    }
    if let (Some(want), Some(d)) = (&e.reason, chosen) {
        if !d.reason.contains(want.as_str()) {
            problems.push(format!("expected reason containing {want:?}, got {:?}", d.reason));
        }
    }
    if let (Some(want), Some(d)) = (&e.constraint, chosen) {
        let hit = d.constraints.iter().any(|c| {
            c.changed
                && serde_json::to_value(c.constraint)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s == want))
                    .unwrap_or(false)
        });
        if !hit {
            let applied: Vec<String> = d
                .constraints
                .iter()
                .filter(|c| c.changed)
                .map(|c| c.constraint.to_string())
                .collect();
            problems.push(format!(
                "expected constraint {want} to take effect; took effect: {}",
                if applied.is_empty() { "none".into() } else { applied.join(", ") }
            ));
        }
    }
    if !problems.is_empty() {
        let mut msg = format!("at {}: {}", e.at, problems.join("; "));
        for d in decisions {
            msg.push('\n');
            msg.push_str(&describe(d));
        }
        out.failures.push(msg);
    }
}

/// Human-readable report; returns it with the number of failed tests.
pub fn render(outcomes: &[TestOutcome]) -> (String, usize) {
    let mut s = String::new();
    let mut failed = 0;
    for o in outcomes {
        if o.failures.is_empty() {
            let _ = writeln!(s, "ok   {}: {}", o.file.display(), o.name);
        } else {
            failed += 1;
            let _ = writeln!(s, "FAIL {}: {}", o.file.display(), o.name);
            for f in &o.failures {
                for line in f.lines() {
                    let _ = writeln!(s, "    {line}");
                }
            }
        }
    }
    let _ = writeln!(s, "{} passed, {} failed", outcomes.len() - failed, failed);
    (s, failed)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// JUnit XML: one testsuite per file, one testcase per test.
pub fn junit(outcomes: &[TestOutcome]) -> String {
    let mut by_file: BTreeMap<&Path, Vec<&TestOutcome>> = BTreeMap::new();
    for o in outcomes {
        by_file.entry(&o.file).or_default().push(o);
    }
    let total_fail = outcomes.iter().filter(|o| !o.failures.is_empty()).count();
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"stoker policy test\" tests=\"{}\" failures=\"{total_fail}\">\n",
        outcomes.len()
    );
    for (file, list) in by_file {
        let name = xml_escape(&file.display().to_string());
        let fails = list.iter().filter(|o| !o.failures.is_empty()).count();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{fails}\">",
            list.len()
        );
        for o in list {
            let _ =
                write!(s, "    <testcase classname=\"{name}\" name=\"{}\"", xml_escape(&o.name));
            if o.failures.is_empty() {
                s.push_str("/>\n");
            } else {
                let msg = xml_escape(o.failures[0].lines().next().unwrap_or(""));
                let _ = writeln!(
                    s,
                    ">\n      <failure message=\"{msg}\">{}</failure>\n    </testcase>",
                    xml_escape(&o.failures.join("\n"))
                );
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}
