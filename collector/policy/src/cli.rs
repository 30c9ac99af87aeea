//! The `policy` subcommands' logic: `check`, `test`, `replay`. The binary only parses flags
//! and calls these; each returns the process exit code and writes to the given streams, so
//! tests run them in-process.

use std::io::Write;
use std::path::PathBuf;

use super::check::{Diagnostic, Severity, check_paths};
use super::replay::{self, Baseline, Capacity, ReplayOptions};
use super::testing;

/// How `policy check` and `policy test` print their results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Lines for people: `file:line:col: message`, `ok`/`FAIL` per test.
    #[default]
    Text,
    /// One JSON document on stdout, for CI annotations.
    Json,
}

/// `policy check PATH... [--format text|json]`: prints every diagnostic; exit 0 without
/// errors, 1 with. Paths that hold no policy file at all are an error: a CI job pointed at the
/// wrong directory must fail, not pass on nothing.
pub fn check(paths: &[PathBuf], format: Format, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut report = check_paths(paths);
    let files = report.policies.len() + count_failed_files(&report);
    if files == 0 && report.diagnostics.is_empty() {
        report.diagnostics.push(Diagnostic {
            file: paths.first().cloned().unwrap_or_default(),
            line: 1,
            col: 1,
            severity: Severity::Error,
            path: String::new(),
            message: format!("no policy files under {}", display_paths(paths)),
        });
    }
    let errors = report.diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    let warnings = report.diagnostics.len() - errors;
    match format {
        Format::Text => {
            for d in &report.diagnostics {
                let _ = writeln!(err, "{d}");
            }
            let _ = writeln!(out, "{files} policies checked: {errors} errors, {warnings} warnings");
        }
        Format::Json => {
            let diagnostics: Vec<_> = report
                .diagnostics
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "file": d.file.display().to_string(),
                        "line": d.line,
                        "col": d.col,
                        "severity": match d.severity {
                            Severity::Error => "error",
                            Severity::Warning => "warning",
                        },
                        "path": d.path,
                        "message": d.message,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "policies": files,
                "errors": errors,
                "warnings": warnings,
                "diagnostics": diagnostics,
            });
            let _ = writeln!(out, "{doc}");
        }
    }
    i32::from(errors > 0)
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn count_failed_files(report: &super::check::CheckReport) -> usize {
    let ok: std::collections::BTreeSet<_> = report.policies.iter().map(|p| &p.file).collect();
    let bad: std::collections::BTreeSet<_> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error && !ok.contains(&d.file))
        .map(|d| &d.file)
        .collect();
    bad.len()
}

/// `policy test PATH... [--junit FILE] [--format text|json]`: exit 0 when all pass, 1
/// otherwise, and 1 when the paths hold no test file.
pub fn test(
    paths: &[PathBuf],
    junit: Option<&PathBuf>,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let outcomes = testing::run_paths(paths);
    let (text, failed) = testing::render(&outcomes);
    match format {
        Format::Text => {
            let _ = write!(out, "{text}");
        }
        Format::Json => {
            let tests: Vec<_> = outcomes
                .iter()
                .map(|o| {
                    serde_json::json!({
                        "file": o.file.display().to_string(),
                        "name": o.name,
                        "passed": o.failures.is_empty(),
                        "failures": o.failures,
                        "evaluations": o.evaluations,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "passed": outcomes.len() - failed,
                "failed": failed,
                "tests": tests,
            });
            let _ = writeln!(out, "{doc}");
        }
    }
    if let Some(file) = junit {
        if let Err(e) = std::fs::write(file, testing::junit(&outcomes)) {
            let _ = writeln!(err, "{}: cannot write JUnit report: {e}", file.display());
            return 1;
        }
    }
    if outcomes.is_empty() {
        let _ = writeln!(err, "no *.test.yaml files under {}", display_paths(paths));
        return 1;
    }
    i32::from(failed > 0)
}

/// Flags of `policy replay`.
#[derive(Clone, Debug, Default)]
pub struct ReplayArgs {
    /// `--policies DIR`.
    pub policies: PathBuf,
    /// `--data FILE`.
    pub data: PathBuf,
    /// `--baseline hpa|kpa|DIR`.
    pub baseline: Option<String>,
    /// `--json`.
    pub json: bool,
    /// `--throughput`: per-replica requests/s when the policy declares no capacity.
    pub throughput: Option<f64>,
    /// `--service-time` seconds.
    pub service_time: Option<f64>,
    /// `--warmup` seconds.
    pub warmup: Option<f64>,
    /// `--start-size`.
    pub start_size: Option<u32>,
    /// `--history`: the trace's first part, run but not scored (e.g. `2h`).
    pub history: Option<std::time::Duration>,
    /// `--timeline FILE`: also write every step of every contender as CSV.
    pub timeline: Option<PathBuf>,
}

/// `policy replay`: prints the side-by-side table or JSON; exit 0, or 1 on errors.
pub fn replay(args: &ReplayArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let policies = match replay::usable(&check_paths(std::slice::from_ref(&args.policies))) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return 1;
        }
    };
    let trace = match replay::load_trace(&args.data) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return 1;
        }
    };
    let baseline = match args.baseline.as_deref() {
        None => None,
        Some("hpa") => Some(Baseline::Hpa),
        Some("kpa") => Some(Baseline::Kpa),
        Some(dir) => match replay::usable(&check_paths(&[PathBuf::from(dir)])) {
            Ok(p) => Some(Baseline::Policies(dir.to_owned(), p)),
            Err(e) => {
                let _ = writeln!(err, "baseline {dir}: {e}");
                return 1;
            }
        },
    };
    let capacity = args.throughput.map(|t| Capacity {
        throughput: t,
        service_time: args.service_time.unwrap_or(0.05),
        warmup: args.warmup.unwrap_or(0.0),
    });
    let opts = ReplayOptions { capacity, start_size: args.start_size, history: args.history };
    match replay::replay(
        &args.data.display().to_string(),
        &policies,
        &trace,
        baseline.as_ref(),
        &opts,
    ) {
        Ok(report) => {
            if let Some(path) = &args.timeline {
                if let Err(e) = std::fs::write(path, report.timeline_csv(&trace)) {
                    let _ = writeln!(err, "{}: cannot write the timeline: {e}", path.display());
                    return 1;
                }
            }
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(j) => {
                        let _ = writeln!(out, "{j}");
                    }
                    Err(e) => {
                        let _ = writeln!(err, "cannot encode the report: {e}");
                        return 1;
                    }
                }
            } else {
                let _ = write!(out, "{}", replay::render_table(&report));
            }
            0
        }
        Err(e) => {
            let _ = writeln!(err, "{e}");
            1
        }
    }
}
