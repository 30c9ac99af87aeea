//! Policies end to end: the shipped set checks and passes its tests, broken fixtures give the
//! exact messages a user sees, hot reload keeps the last good set, a restart keeps cooldowns
//! and budgets, decisions reach an OTLP receiver, the API serves them, replay runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use stoker_collector::clock::ManualClock;
use stoker_collector::policy::check::check_paths;
use stoker_collector::policy::cli;
use stoker_collector::policy::engine::{Outcome, OutcomeStatus};
use stoker_collector::policy::runtime::{
    ExecError, Executor, JobRef, JobStatus, PolicyRuntime, RuntimeConfig, TargetRef, TargetSize,
};
use stoker_collector::policy::series::{SeriesSource, series_from_notation};
use stoker_collector::policy::signal::NANOS;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn shipped_policies_check_and_pass_their_tests() {
    let dir = root().join("policies");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::check(std::slice::from_ref(&dir), cli::Format::Text, &mut out, &mut err);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::test(&[dir], None, cli::Format::Text, &mut out, &mut err);
    assert_eq!(code, 0, "{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
}

/// The fixtures under `tests/policies/` (reactive and predictive replay policies, the
/// classifier-drift retraining rule with its `policy test` cases) check and pass.
#[test]
fn fixture_policies_check_and_pass_their_tests() {
    let dir = root().join("tests/policies");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::check(std::slice::from_ref(&dir), cli::Format::Text, &mut out, &mut err);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::test(&[dir], None, cli::Format::Text, &mut out, &mut err);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{text}{}", String::from_utf8_lossy(&err));
    assert!(text.contains("classifier-drift.test.yaml"), "{text}");
}

#[test]
fn broken_policies_report_what_a_user_sees() {
    let dir = root().join("collector/tests/invalid_policies");
    let cases: &[(&str, &[&str])] = &[
        ("bad_duration.yaml", &[EXPECT_BAD_DURATION]),
        ("bad_yaml.yaml", &[EXPECT_BAD_YAML]),
        ("huge_pods.yaml", &[EXPECT_HUGE_PODS]),
        ("huge_value.yaml", &[EXPECT_HUGE_VALUE]),
        ("second_document.yaml", &[EXPECT_SECOND_DOCUMENT]),
        ("several_errors.yaml", EXPECT_SEVERAL),
        ("two_thresholds.yaml", &[EXPECT_TWO_THRESHOLDS]),
        ("unknown_field.yaml", &[EXPECT_UNKNOWN_FIELD]),
        ("unknown_placeholder.yaml", &[EXPECT_PLACEHOLDER]),
        ("wrong_actuator_section.yaml", EXPECT_WRONG_SECTION),
    ];
    let mut all = String::new();
    let mut failed = false;
    for (file, expected) in cases {
        let path = dir.join(file);
        let report = check_paths(&[path]);
        let got: Vec<String> = report
            .diagnostics
            .iter()
            .map(|d| d.to_string().replace(&format!("{}/", dir.display()), ""))
            .collect();
        all.push_str(&format!("{file}:\n  {}\n", got.join("\n  ")));
        if got != *expected {
            failed = true;
        }
        assert!(report.has_errors(), "{file} must not check");
    }
    assert!(!failed, "messages differ:\n{all}");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(cli::check(&[dir], cli::Format::Text, &mut out, &mut err), 1);
}

/// Regression: `policy check` on a directory without policies exited 0, so a CI job pointed at
/// the wrong path passed on nothing; `policy test` already failed there.
#[test]
fn check_and_test_fail_on_a_directory_without_policies() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "not a policy").unwrap();
    let paths = [dir.path().to_path_buf()];
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(cli::check(&paths, cli::Format::Text, &mut out, &mut err), 1);
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains(&format!("no policy files under {}", dir.path().display())), "{err}");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(cli::test(&paths, None, cli::Format::Text, &mut out, &mut err), 1);
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains(&format!("no *.test.yaml files under {}", dir.path().display())), "{err}");
}

/// Regression: a ConfigMap mounted as the policy directory holds each file three times (the
/// name, `..data/`, and a timestamped `..2026_…/` directory), and the set was refused for
/// duplicate names. Hidden entries are skipped.
#[test]
fn a_configmap_volume_layout_loads_each_policy_once() {
    let dir = tempfile::tempdir().unwrap();
    let stamped = dir.path().join("..2026_12_03_10_00_00.123");
    std::fs::create_dir(&stamped).unwrap();
    let src = root().join("policies/resnet-serving.yaml");
    std::fs::copy(&src, stamped.join("resnet-serving.yaml")).unwrap();
    std::os::unix::fs::symlink(&stamped, dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink(
        Path::new("..data/resnet-serving.yaml"),
        dir.path().join("resnet-serving.yaml"),
    )
    .unwrap();
    let report = check_paths(&[dir.path().to_path_buf()]);
    assert!(!report.has_errors(), "{:?}", report.diagnostics);
    assert_eq!(report.policies.len(), 1);
}

/// `--format json` gives one document a CI job can turn into annotations: every diagnostic
/// with file, line, column and severity; every test with its failures.
#[test]
fn check_and_test_speak_json() {
    let bad = root().join("collector/tests/invalid_policies/several_errors.yaml");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(cli::check(&[bad], cli::Format::Json, &mut out, &mut err), 1);
    assert!(err.is_empty(), "json mode writes only stdout: {}", String::from_utf8_lossy(&err));
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["errors"], 3, "{doc}");
    assert_eq!(doc["warnings"], 0, "{doc}");
    let first = &doc["diagnostics"][0];
    assert!(first["file"].as_str().unwrap().ends_with("several_errors.yaml"), "{doc}");
    assert_eq!((first["line"].as_u64(), first["col"].as_u64()), (Some(7), Some(10)), "{doc}");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["path"], "spec.target.min");
    assert_eq!(first["message"], "min 10 is greater than max 2");

    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::test(&[root().join("policies")], None, cli::Format::Json, &mut out, &mut err);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let tests = doc["tests"].as_array().unwrap();
    assert!(!tests.is_empty());
    assert_eq!(doc["failed"], 0);
    assert_eq!(doc["passed"].as_u64(), Some(tests.len() as u64));
    assert!(tests.iter().all(|t| t["passed"] == true && t["evaluations"].as_u64() > Some(0)));
}

const EXPECT_BAD_DURATION: &str = "bad_duration.yaml:9:66: spec.scale.metrics[0].signal.window: invalid duration \"30 parsecs\": unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations) (write it like 30s, 5m, 1h30m or 250ms)";
const EXPECT_BAD_YAML: &str =
    "bad_yaml.yaml:10:12: invalid YAML: while parsing a block mapping, did not find expected key";
// Regressions: `pods` beyond any replica count, a number YAML reads as infinity, and a second
// policy after `---` were all accepted (the second document silently ignored).
const EXPECT_HUGE_PODS: &str = "huge_pods.yaml:10:24: spec.scale.steps[0].change.pods: -99999999999999 is out of range: a replica change lies within ±4294967295";
const EXPECT_HUGE_VALUE: &str = "huge_value.yaml:10:25: spec.scale.metrics[0].target.value: number 1e400 is out of range (a finite number is required)";
const EXPECT_SECOND_DOCUMENT: &str = "second_document.yaml:12:1: a second YAML document: a policy file holds one policy (put each in its own file)";
const EXPECT_SEVERAL: &[&str] = &[
    "several_errors.yaml:7:10: spec.target.min: min 10 is greater than max 2",
    "several_errors.yaml:14:52: spec.scale.metrics[0].signal.stat: unknown statistic \"mode\": use mean, min, max, sum, count, last, rate, increase or a quantile (p95, p99.9, median, quantile(0.95))",
    "several_errors.yaml:18:69: spec.retrain[0].when.drift.test: unknown test \"wasserstein\": use psi, ks, js or chi2",
];
const EXPECT_TWO_THRESHOLDS: &str = "two_thresholds.yaml:9:25: spec.scale.steps[0].when.signal: give exactly one threshold of `gt`, `gte`, `lt`, `lte`";
const EXPECT_UNKNOWN_FIELD: &str = "unknown_field.yaml:10:36: spec.target.kubernetes.deploymnet: unknown field `deploymnet`, expected one of `namespace`, `deployment`, `statefulset`, or `cluster`";
const EXPECT_PLACEHOLDER: &str = "unknown_placeholder.yaml:11:87: spec.retrain[0].job.github.inputs.token: unknown placeholder `{{ secret }}`: use one of reason, policy, rule, target, model, version, value, time, key";
const EXPECT_WRONG_SECTION: &[&str] = &[
    "wrong_actuator_section.yaml:5:74: spec.target.kubernetes: section `kubernetes` does not belong to actuator `aws-asg`",
    "wrong_actuator_section.yaml:5:12: spec.target.aws: actuator `aws-asg` needs a `aws` section",
];

/// An executor that records what it is asked and applies resizes, once per key.
#[derive(Default)]
struct Recording {
    size: Mutex<u32>,
    /// When set, reading the current size fails with this message.
    size_error: Mutex<Option<String>>,
    /// The ready count reported beside the size; `None` reports none (the default method).
    ready: Mutex<Option<u32>>,
    keys: Mutex<Vec<String>>,
    jobs: Mutex<Vec<BTreeMap<String, String>>>,
}

impl Executor for Recording {
    fn current_size<'a>(&'a self, _t: &'a TargetRef) -> BoxFuture<'a, Result<u32, ExecError>> {
        Box::pin(async move {
            match self.size_error.lock().expect("lock").clone() {
                Some(e) => Err(ExecError(e)),
                None => Ok(*self.size.lock().expect("lock")),
            }
        })
    }
    fn target_size<'a>(&'a self, t: &'a TargetRef) -> BoxFuture<'a, Result<TargetSize, ExecError>> {
        Box::pin(async move {
            let provisioned = self.current_size(t).await?;
            Ok(TargetSize { provisioned, ready: *self.ready.lock().expect("lock") })
        })
    }
    fn resize<'a>(
        &'a self,
        _t: &'a TargetRef,
        desired: u32,
        key: &'a str,
        dry_run: bool,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut keys = self.keys.lock().expect("lock");
            let status = if keys.iter().any(|k| k == key) {
                OutcomeStatus::Duplicate
            } else if dry_run {
                OutcomeStatus::DryRun
            } else {
                keys.push(key.to_owned());
                *self.size.lock().expect("lock") = desired;
                OutcomeStatus::Applied
            };
            Outcome { status, attempts: 1, remote_ids: vec![], message: String::new() }
        })
    }
    fn start_job<'a>(
        &'a self,
        _j: &'a JobRef,
        params: &'a BTreeMap<String, String>,
        key: &'a str,
        _dry: bool,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let mut keys = self.keys.lock().expect("lock");
            if keys.iter().any(|k| k == key) {
                return Outcome {
                    status: OutcomeStatus::Duplicate,
                    attempts: 1,
                    remote_ids: vec![],
                    message: String::new(),
                };
            }
            keys.push(key.to_owned());
            self.jobs.lock().expect("lock").push(params.clone());
            Outcome {
                status: OutcomeStatus::Applied,
                attempts: 1,
                remote_ids: vec![format!("run-{key}")],
                message: String::new(),
            }
        })
    }
    fn job_status<'a>(&'a self, _j: &'a JobRef, _id: &'a str) -> BoxFuture<'a, JobStatus> {
        Box::pin(async { JobStatus::Running })
    }
}

const T0: u64 = 1_735_689_600 * NANOS;

const RETRAIN: &str = "apiVersion: stoker/v1\nkind: Policy\nmetadata: {name: r}\nspec:\n  target: {name: svc, min: 1, max: 4, actuator: command, command: {argv: [echo]}}\n  interval: 1s\n  retrain:\n    - name: low\n      when: {accuracy: {estimate: mean-confidence, window: 10s, minSamples: 5, lt: 0.8}}\n      cooldown: 1h\n      budget: {maxRuns: 1, per: 30d}\n      job: {actuator: command, command: {argv: [retrain, '{{ reason }}']}}\n";

fn runtime(dir: &Path, exec: Arc<Recording>, now: ManualClock) -> PolicyRuntime {
    let series = vec![
        series_from_notation(
            "inference.prediction.confidence",
            "0.5x100000",
            T0,
            Duration::from_secs(1),
        )
        .expect("series"),
    ];
    PolicyRuntime::new(
        RuntimeConfig::new(dir.join("policies"), dir.join("data")),
        exec,
        Arc::new(SeriesSource::new(series)),
        Arc::new(now),
        None,
    )
    .expect("runtime")
}

#[tokio::test]
async fn hot_reload_keeps_the_last_good_set_on_a_broken_edit() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("policies")).expect("dir");
    let file = tmp.path().join("policies/r.yaml");
    std::fs::write(&file, RETRAIN).expect("write");
    let rt = runtime(tmp.path(), Arc::new(Recording::default()), ManualClock::new(T0));
    assert_eq!(rt.snapshot().policies.len(), 1);
    std::fs::write(&file, RETRAIN.replace("max: 4", "max: 0")).expect("write");
    assert!(!rt.reload_if_changed(), "a broken edit is refused");
    let snap = rt.snapshot();
    assert_eq!(snap.policies.len(), 1, "the last good set stays");
    assert_eq!(snap.policies[0].doc.spec.target.max, 4);
    assert!(
        snap.errors
            .iter()
            .any(|e| e.to_string().ends_with("r.yaml:5:36: spec.target.max: must be at least 1")),
        "{:?}",
        snap.errors
    );
    assert!(rt.metrics_text().contains("stoker_policy_reload_failures_total 1"));
    std::fs::write(&file, RETRAIN.replace("max: 4", "max: 6")).expect("write");
    assert!(rt.reload_if_changed());
    let snap = rt.snapshot();
    assert!(snap.errors.is_empty());
    assert_eq!(snap.policies[0].doc.spec.target.max, 6);
}

#[tokio::test]
async fn a_tick_a_little_early_still_evaluates_a_due_policy() {
    // The runtime ticks every second; a 1 s policy must not skip a tick that wakes a few
    // milliseconds before its due time, yet a tick half an interval early is not due.
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("policies")).expect("dir");
    std::fs::write(tmp.path().join("policies/r.yaml"), RETRAIN).expect("write");
    let exec = Arc::new(Recording::default());
    let rt = runtime(tmp.path(), exec.clone(), ManualClock::new(T0 + 20 * NANOS));
    let count =
        |rt: &PolicyRuntime| rt.store().decisions(Some("r"), None, 10).expect("decisions").len();
    rt.tick(T0 + 20 * NANOS).await;
    assert_eq!(count(&rt), 1, "the first tick evaluates (and fires)");
    rt.tick(T0 + 20 * NANOS + 995_000_000).await;
    assert_eq!(count(&rt), 2, "5 ms early is still due: a cooldown decision is recorded");
    rt.tick(T0 + 21 * NANOS + 300_000_000).await;
    assert_eq!(count(&rt), 2, "0.7 s before the next due time is not due");
    rt.tick(T0 + 21 * NANOS + 990_000_000).await;
    assert_eq!(count(&rt), 3);
    assert_eq!(exec.jobs.lock().expect("lock").len(), 1, "cooldown and budget still hold");
}

#[tokio::test]
async fn restart_keeps_cooldowns_budgets_and_decisions() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("policies")).expect("dir");
    std::fs::write(tmp.path().join("policies/r.yaml"), RETRAIN).expect("write");
    let exec = Arc::new(Recording::default());
    let now = ManualClock::new(T0 + 20 * NANOS);
    {
        let rt = runtime(tmp.path(), exec.clone(), now.clone());
        rt.tick(T0 + 20 * NANOS).await;
        assert_eq!(exec.jobs.lock().expect("lock").len(), 1, "the rule fires once");
        rt.tick(T0 + 21 * NANOS).await;
        assert_eq!(exec.jobs.lock().expect("lock").len(), 1);
    }
    // A new process: same data dir, two hours later (cooldown over, budget spent).
    now.set(T0 + 7200 * NANOS);
    let rt = runtime(tmp.path(), exec.clone(), now.clone());
    rt.tick(T0 + 7200 * NANOS).await;
    assert_eq!(exec.jobs.lock().expect("lock").len(), 1, "the budget survived the restart");
    let decisions = rt.store().decisions(Some("r"), None, 10).expect("decisions");
    assert!(decisions[0].reason.contains("budget"), "{}", decisions[0].reason);
    assert!(
        decisions.iter().any(|d| d.reason.contains("cooldown")),
        "cooldown recorded before the restart"
    );
    let actions = rt.store().actions().expect("actions");
    assert_eq!(actions.len(), 1);
    assert_eq!(
        actions[0].outcome.as_ref().map(|o| o.remote_ids.clone()),
        Some(vec![format!("run-r/low/{}", T0 + 20 * NANOS)])
    );
}

mod otlp {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use stoker_collector::policy::engine::{Action, Decision, RuleKind};
    use stoker_collector::policy::format::Mode;
    use stoker_collector::policy::otel::DecisionExporter;
    use tokio::sync::mpsc;

    struct Receiver(mpsc::Sender<ExportLogsServiceRequest>);

    #[tonic::async_trait]
    impl LogsService for Receiver {
        async fn export(
            &self,
            req: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            let _ = self.0.send(req.into_inner()).await;
            Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
        }
    }

    #[tokio::test]
    async fn decision_records_arrive_as_otlp_logs() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LogsServiceServer::new(Receiver(tx)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let shutdown = tokio_util::sync::CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let exporter =
            DecisionExporter::spawn(format!("http://{addr}"), shutdown.clone(), &tracker);
        let decision = Decision {
            time: T0,
            policy: "resnet-serving".into(),
            rule: "scale".into(),
            kind: RuleKind::Scale,
            mode: Mode::Enforce,
            inputs: vec![],
            current: Some(2),
            recommendation: Some(6),
            condition: None,
            constraints: vec![],
            action: Action::Resize { from: 2, to: 6 },
            reason: "scale up from 2 to 6".into(),
            key: Some("resnet-serving/scale/1".into()),
            outcome: None,
        };
        exporter.offer(decision.clone());
        let req = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("in time")
            .expect("request");
        let rec = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec.time_unix_nano, T0);
        let body = format!("{:?}", rec.body);
        assert!(body.contains("scale up from 2 to 6"), "{body}");
        assert!(rec.attributes.iter().any(|a| a.key == "stoker.decision.policy"));
        assert!(rec.attributes.iter().any(|a| a.key == "stoker.decision.to"));

        // Records queued when the collector stops are sent before the task ends.
        for i in 0..3 {
            exporter.offer(Decision { time: T0 + i + 1, ..decision.clone() });
        }
        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(20), tracker.wait()).await.expect("flushed");
        let mut times = Vec::new();
        while let Ok(req) = rx.try_recv() {
            for rl in &req.resource_logs {
                for sl in &rl.scope_logs {
                    times.extend(sl.log_records.iter().map(|r| r.time_unix_nano));
                }
            }
        }
        assert_eq!(times, vec![T0 + 1, T0 + 2, T0 + 3]);
    }
}

/// The live runtime sizes on the ready replicas the resizer reports, as replay does: at
/// utilisation 0.8 against a 0.5 target, 10 provisioned of which 5 ready need 8, which the
/// warming 5 already cover, so nothing is sent; once all 10 are ready they need 16. The API
/// shows both counts.
#[tokio::test]
async fn live_decisions_hold_a_scale_out_the_warming_replicas_cover() {
    const UTIL: &str = "apiVersion: stoker/v1\nkind: Policy\nmetadata: {name: u}\nspec:\n  target: {name: svc, min: 1, max: 40, actuator: command, command: {argv: [echo]}}\n  interval: 1s\n  scale:\n    metrics:\n      - name: busy\n        signal: {metric: hw.gpu.utilization, stat: mean, window: 10s}\n        target: {value: 0.5}\n";
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("policies")).expect("dir");
    std::fs::write(tmp.path().join("policies/u.yaml"), UTIL).expect("write");
    let exec = Arc::new(Recording::default());
    *exec.size.lock().expect("lock") = 10;
    *exec.ready.lock().expect("lock") = Some(5);
    let series = vec![
        series_from_notation("hw.gpu.utilization", "0.8x1000", T0, Duration::from_secs(1))
            .expect("series"),
    ];
    let rt = PolicyRuntime::new(
        RuntimeConfig::new(tmp.path().join("policies"), tmp.path().join("data")),
        exec.clone(),
        Arc::new(SeriesSource::new(series)),
        Arc::new(ManualClock::new(T0 + 30 * NANOS)),
        None,
    )
    .expect("runtime");
    rt.tick(T0 + 30 * NANOS).await;
    assert!(exec.keys.lock().expect("lock").is_empty(), "warming replicas cover the scale-out");
    assert_eq!(*exec.size.lock().expect("lock"), 10);
    let status = stoker_collector::policy::api::policies_status(&rt, T0 + 30 * NANOS);
    let rule = &status.policies[0].rules[0];
    assert_eq!((rule.provisioned, rule.ready), (Some(10), Some(5)), "{rule:?}");
    let json = serde_json::to_value(rule).expect("json");
    assert_eq!((json["provisioned"].as_u64(), json["ready"].as_u64()), (Some(10), Some(5)));

    // All ready: the same utilisation now asks for 16.
    *exec.ready.lock().expect("lock") = Some(10);
    rt.tick(T0 + 31 * NANOS).await;
    assert_eq!(*exec.size.lock().expect("lock"), 16);
}

/// `policy test` takes a ready count: 10 provisioned of which 5 ready at utilisation 0.8
/// against 0.5 hold their size; all 10 ready scale out to 16.
#[test]
fn policy_test_takes_a_ready_count() {
    const UTIL: &str = "apiVersion: stoker/v1\nkind: Policy\nmetadata: {name: u}\nspec:\n  target: {name: svc, min: 1, max: 40, actuator: command, command: {argv: [echo]}}\n  interval: 10s\n  scale:\n    metrics:\n      - name: busy\n        signal: {metric: hw.gpu.utilization, stat: mean, window: 30s}\n        target: {value: 0.5}\n";
    const TESTS: &str = "tests:\n  - name: warming replicas cover the scale-out\n    size: 10\n    ready: 5\n    series: [{series: hw.gpu.utilization, values: '0.8x10'}]\n    expect: [{at: 60s, size: 10, action: none}]\n  - name: all ready scale out\n    size: 10\n    series: [{series: hw.gpu.utilization, values: '0.8x10'}]\n    expect: [{at: 0s, size: 16, action: scale-up}]\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("u.yaml"), UTIL).unwrap();
    std::fs::write(dir.path().join("u.test.yaml"), TESTS).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::test(&[dir.path().to_path_buf()], None, cli::Format::Text, &mut out, &mut err);
    assert_eq!(code, 0, "{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
    // The same case without the ready count fails: the ready count is what holds the size.
    std::fs::write(dir.path().join("u.test.yaml"), TESTS.replace("    ready: 5\n", "")).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::test(&[dir.path().to_path_buf()], None, cli::Format::Text, &mut out, &mut err);
    assert_eq!(code, 1, "{}", String::from_utf8_lossy(&out));
}

#[tokio::test]
async fn api_serves_policies_decisions_and_actions() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("policies")).expect("dir");
    std::fs::write(tmp.path().join("policies/r.yaml"), RETRAIN).expect("write");
    let rt = runtime(tmp.path(), Arc::new(Recording::default()), ManualClock::new(T0 + 30 * NANOS));
    rt.tick(T0 + 20 * NANOS).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, stoker_collector::policy::router(rt)).await });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .expect("get")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    let p = get("/api/v1/policies").await;
    assert_eq!(p["policies"][0]["rules"][0]["state"], "cooling-down", "{p}");
    let d = get("/api/v1/decisions?policy=r").await;
    assert_eq!(d["decisions"][0]["action"]["type"], "start-job", "{d}");
    let a = get("/api/v1/actions").await;
    assert_eq!(a["actions"][0]["status"], "running", "{a}");
}

/// Regression: when the target's size could not be read (no kubeconfig), the collector only
/// logged it; the decision made without a size is not recorded, so `/api/v1/policies` showed the
/// rule `ok`. The rule now carries the problem, since when, and loses it once the size reads.
#[tokio::test]
async fn a_rule_that_cannot_read_its_size_says_so_until_it_can() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("policies")).expect("dir");
    let scaling = "apiVersion: stoker/v1\nkind: Policy\nmetadata: {name: s}\nspec:\n  target: {name: svc, min: 1, max: 4, actuator: command, command: {argv: [echo]}}\n  interval: 1s\n  scale:\n    metrics:\n      - name: conf\n        signal: {metric: inference.prediction.confidence, stat: mean, window: 10s}\n        target: {value: 0.5}\n";
    std::fs::write(tmp.path().join("policies/s.yaml"), scaling).expect("write");
    let exec = Arc::new(Recording::default());
    *exec.size_error.lock().unwrap() = Some("no kubeconfig found".into());
    let rt = runtime(tmp.path(), exec.clone(), ManualClock::new(T0 + 30 * NANOS));
    rt.tick(T0 + 20 * NANOS).await;
    rt.tick(T0 + 21 * NANOS).await;
    let status = stoker_collector::policy::api::policies_status(&rt, T0 + 21 * NANOS);
    let rule = &status.policies[0].rules[0];
    assert_eq!(rule.problem.as_deref(), Some("cannot read the current size: no kubeconfig found"));
    assert_eq!(rule.problem_since, Some(T0 + 20 * NANOS), "since the first failure");
    *exec.size_error.lock().unwrap() = None;
    *exec.size.lock().unwrap() = 2;
    rt.tick(T0 + 22 * NANOS).await;
    let status = stoker_collector::policy::api::policies_status(&rt, T0 + 22 * NANOS);
    assert_eq!(status.policies[0].rules[0].problem, None, "{:?}", status.policies[0].rules[0]);
}

#[test]
fn replay_compares_the_default_set_with_hpa_and_kpa() {
    let tmp = tempfile::tempdir().expect("tmp");
    for trace in ["spike.csv", "flash-crowd.csv"] {
        for baseline in ["hpa", "kpa"] {
            let timeline = tmp.path().join(format!("{trace}-{baseline}.csv"));
            let args = cli::ReplayArgs {
                policies: root().join("policies"),
                data: root().join("tests/traces").join(trace),
                baseline: Some(baseline.into()),
                json: true,
                timeline: Some(timeline.clone()),
                ..Default::default()
            };
            let (mut out, mut err) = (Vec::new(), Vec::new());
            assert_eq!(
                cli::replay(&args, &mut out, &mut err),
                0,
                "{}",
                String::from_utf8_lossy(&err)
            );
            let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
            assert_eq!(v["contenders"][1]["name"], baseline);
            assert!(v["contenders"][0]["replica_hours"].as_f64().expect("hours") > 0.0);
            // `--timeline`: one row per trace step after the header, a column set per
            // contender and the oracle.
            let csv = std::fs::read_to_string(&timeline).expect("timeline written");
            let rows = csv.lines().count() - 1;
            let steps = v["duration_s"].as_f64().expect("duration") / 5.0;
            assert_eq!(rows as f64, steps, "{trace}: one row per 5 s step");
            let header = csv.lines().next().expect("header");
            assert!(
                header
                    .ends_with(&format!("{baseline}_p95,oracle_replicas,oracle_ready,oracle_p95")),
                "{header}"
            );
        }
    }
}

/// Predictive scaling backtest (issue 9), full traces through the real engine and the very
/// forecasts the live engine makes: `tests/policies/predictive.yaml` (the default policy with
/// targets at 80 % of the objective, plus a forecast floor 3 minutes ahead) against
/// `tests/policies/reactive.yaml` (the same without the forecast), with the default's
/// `max: 80` (above what the traces need) and 2-minute warm-up. The trace's first hour is
/// history: both run through it (the forecaster fits on it, nobody is scored on the cold
/// start), only the rest is scored. The predictive policy must have fewer SLO-violation
/// minutes at no more than 10 % more replica-hours on diurnal and slow-ramp: strictly fewer on
/// diurnal (0.5 against 1.5), no more on slow-ramp, where both lose 1.0 minute since replay
/// sizes on ready replicas (before, with ratios compounding on warming replicas: 0.0 against
/// 1.0).
#[test]
fn predictive_policy_beats_the_reactive_one_on_diurnal_and_ramp_traces() {
    use stoker_collector::policy::replay::{self, Baseline, ReplayOptions};
    let load = |p: PathBuf| replay::usable(&check_paths(&[p])).expect("policies check");
    let reactive = load(root().join("tests/policies/reactive.yaml"));
    let predictive = load(root().join("tests/policies/predictive.yaml"));
    let opts =
        ReplayOptions { history: Some(std::time::Duration::from_secs(3600)), ..Default::default() };
    for trace in ["slow-ramp.csv", "diurnal.csv"] {
        let t = replay::load_trace(&root().join("tests/traces").join(trace)).expect("trace");
        let b = Baseline::Policies("reactive".into(), reactive.clone());
        let r = replay::replay(trace, &predictive, &t, Some(&b), &opts).expect("replay");
        eprintln!("{}", replay::render_table(&r));
        assert_eq!(r.history_s, 3600.0);
        let (p, re) = (&r.contenders[0], &r.contenders[1]);
        let (pv, rv) =
            (p.slo_violation_minutes.expect("slo"), re.slo_violation_minutes.expect("slo"));
        let fewer = if trace == "diurnal.csv" { pv < rv } else { pv <= rv };
        assert!(fewer, "{trace}: predictive {pv:.1} SLO-violation minutes, reactive {rv:.1}");
        assert!(
            p.replica_hours <= 1.10 * re.replica_hours,
            "{trace}: predictive {:.1} replica-hours, reactive {:.1}",
            p.replica_hours,
            re.replica_hours
        );
    }
}

/// Decisions close to the oracle (issue 14), so a regression shows in CI: on the slow-ramp
/// trace (6 h, the first hour unscored) the default set spends at most 1.25× the oracle's
/// replica-hours (the fewest replicas whose modelled p95 holds the objective at every step,
/// no warm-up; 1.62× before capacity-aware sizing), loses no more SLO minutes than HPA and
/// takes at most half of HPA's scale actions per day.
#[test]
fn default_set_stays_within_a_quarter_of_the_oracle_on_a_ramp() {
    use stoker_collector::policy::replay::{self, Baseline, ReplayOptions};
    let policies = replay::usable(&check_paths(&[root().join("policies")])).expect("policies");
    let t = replay::load_trace(&root().join("tests/traces/slow-ramp.csv")).expect("trace");
    let opts =
        ReplayOptions { history: Some(std::time::Duration::from_secs(3600)), ..Default::default() };
    let r =
        replay::replay("slow-ramp", &policies, &t, Some(&Baseline::Hpa), &opts).expect("replay");
    eprintln!("{}", replay::render_table(&r));
    let (d, h) = (&r.contenders[0], &r.contenders[1]);
    let o = r.oracle.as_ref().expect("oracle");
    assert_eq!(o.slo_violation_minutes, Some(0.0), "{o:?}");
    let ratio = d.oracle_ratio.expect("ratio");
    assert!(ratio <= 1.25, "default {ratio:.3}× the oracle's replica-hours: {d:?}");
    assert!(h.oracle_ratio.expect("ratio") > ratio, "{h:?}");
    assert!(d.slo_violation_minutes <= h.slo_violation_minutes, "{d:?} {h:?}");
    assert!(d.actions_per_day <= h.actions_per_day / 2.0, "{d:?} {h:?}");
}

/// `--history` scores only what follows it: the same replay with and without an hour of
/// history differs by the cold start, and a history as long as the trace is refused.
#[test]
fn replay_history_is_run_but_not_scored() {
    use stoker_collector::policy::replay::{self, ReplayOptions};
    let policies = replay::usable(&check_paths(&[root().join("policies")])).expect("policies");
    let t = replay::load_trace(&root().join("tests/traces/diurnal.csv")).expect("trace");
    let cold = replay::replay("d", &policies, &t, None, &ReplayOptions::default()).expect("replay");
    let warm = replay::replay(
        "d",
        &policies,
        &t,
        None,
        &ReplayOptions {
            history: Some(std::time::Duration::from_secs(3600)),
            ..Default::default()
        },
    )
    .expect("replay");
    let (c, w) = (&cold.contenders[0], &warm.contenders[0]);
    assert!(
        c.slo_violation_minutes.expect("slo") > 0.0,
        "the cold start from 2 replicas at 372 req/s violates: {c:?}"
    );
    assert_eq!(w.slo_violation_minutes, Some(0.0), "{w:?}");
    assert!(
        w.replica_hours < c.replica_hours && w.replica_hours > 0.8 * c.replica_hours,
        "{c:?} {w:?}"
    );
    let all = ReplayOptions {
        history: Some(std::time::Duration::from_secs(24 * 3600)),
        ..Default::default()
    };
    assert!(
        replay::replay("d", &policies, &t, None, &all)
            .expect_err("nothing left")
            .to_string()
            .contains("whole trace")
    );
}

/// The live runtime and the driver loop that `policy test`, replay and the policy benchmark
/// run decide the same on the same virtual-time inputs: a policy due every 3 s on ticks 1 s
/// apart, each but the first 200 ms early, sized by a resizer that applies what it is asked.
/// Same evaluations, same decisions, same final size.
#[tokio::test]
async fn the_live_runtime_decides_as_the_shared_driver_does() {
    use stoker_collector::policy::check::check_text;
    use stoker_collector::policy::driver::{Driver, applied_size};
    use stoker_collector::policy::engine::PolicyState;

    const P: &str = "apiVersion: stoker/v1\nkind: Policy\nmetadata: {name: d}\nspec:\n  target: {name: svc, min: 1, max: 40, actuator: command, command: {argv: [echo]}}\n  interval: 3s\n  scale:\n    metrics:\n      - name: busy\n        signal: {metric: hw.gpu.utilization, stat: mean, window: 5s}\n        target: {value: 0.5}\n";
    let source = || {
        let s = series_from_notation(
            "hw.gpu.utilization",
            "0.3x20 0.9x30 0.6x30 0.2x40",
            T0,
            Duration::from_secs(1),
        )
        .expect("series");
        SeriesSource::new(vec![s])
    };
    let ticks: Vec<u64> =
        (0..120u64).map(|k| if k == 0 { T0 } else { T0 + k * NANOS - 200_000_000 }).collect();

    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("policies")).expect("dir");
    std::fs::write(tmp.path().join("policies/d.yaml"), P).expect("write");
    let exec = Arc::new(Recording::default());
    *exec.size.lock().expect("lock") = 2;
    let rt = PolicyRuntime::new(
        RuntimeConfig::new(tmp.path().join("policies"), tmp.path().join("data")),
        exec.clone(),
        Arc::new(source()),
        Arc::new(ManualClock::new(T0)),
        None,
    )
    .expect("runtime");
    for &t in &ticks {
        rt.tick(t).await;
    }
    let mut live = rt.store().decisions(Some("d"), None, 10_000).expect("decisions");
    live.reverse();
    for d in &mut live {
        d.outcome = None;
    }

    let (policy, _, diags) = check_text(Path::new("d.yaml"), P);
    let policy = policy.unwrap_or_else(|| panic!("{diags:?}"));
    let src = source();
    let mut driver = Driver::new();
    let mut state = PolicyState::default();
    let mut size = 2;
    let mut driven = Vec::new();
    let mut evaluations = 0;
    for &t in &ticks {
        let resizer = || Some(TargetSize { provisioned: size, ready: None });
        let Some(decisions) = driver.tick(&policy, &src, &mut state, resizer, t) else {
            continue;
        };
        evaluations += 1;
        for d in decisions {
            if let Some(to) = applied_size(&d) {
                size = to;
            }
            if d.could_act() {
                driven.push(d);
            }
        }
    }

    // Due at 0 s, then every 3 s (a tick 200 ms early counts): 40 evaluations in 120 ticks.
    assert_eq!(evaluations, 40);
    let resizes = driven.iter().filter(|d| applied_size(d).is_some()).count();
    assert!(resizes >= 2, "the trace should resize the target: {driven:#?}");
    assert_eq!(live.len(), driven.len());
    for (l, d) in live.iter().zip(&driven) {
        assert_eq!(l, d, "live and driven decisions differ at {}", d.time);
    }
    assert_eq!(*exec.size.lock().expect("lock"), size);
}

/// A deposed leader cannot act: once a writer with a higher fence has written to the ledger,
/// a runtime writing with a lower one records no pending action, so it calls no actuator, and
/// its decisions and state are refused. The runtime holding the higher fence acts.
#[tokio::test]
async fn a_runtime_with_a_stale_fence_neither_acts_nor_records() {
    use stoker_collector::policy::ledger::{Fence, Ledger, MemoryLedger};

    const UTIL: &str = "apiVersion: stoker/v1\nkind: Policy\nmetadata: {name: u}\nspec:\n  target: {name: svc, min: 1, max: 40, actuator: command, command: {argv: [echo]}}\n  interval: 1s\n  scale:\n    metrics:\n      - name: busy\n        signal: {metric: hw.gpu.utilization, stat: mean, window: 10s}\n        target: {value: 0.5}\n";
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("policies")).expect("dir");
    std::fs::write(tmp.path().join("policies/u.yaml"), UTIL).expect("write");
    let ledger = Arc::new(MemoryLedger::new());
    ledger.commit(Fence(2), &[], &[]).expect("the new leader wrote");
    let start = |fence: Fence| {
        let exec = Arc::new(Recording::default());
        *exec.size.lock().expect("lock") = 2;
        let series = vec![
            series_from_notation("hw.gpu.utilization", "0.8x100", T0, Duration::from_secs(1))
                .expect("series"),
        ];
        let mut cfg = RuntimeConfig::new(tmp.path().join("policies"), tmp.path().join("data"));
        cfg.leadership = Arc::new(fence);
        let rt = PolicyRuntime::with_ledger(
            cfg,
            ledger.clone(),
            exec.clone(),
            Arc::new(SeriesSource::new(series)),
            Arc::new(ManualClock::new(T0 + 30 * NANOS)),
            None,
        )
        .expect("runtime");
        (rt, exec)
    };

    let (deposed, exec) = start(Fence(1));
    deposed.tick(T0 + 30 * NANOS).await;
    assert!(exec.keys.lock().expect("lock").is_empty(), "a deposed leader called the actuator");
    assert_eq!(*exec.size.lock().expect("lock"), 2);
    assert!(ledger.decisions(None, None, 10).expect("decisions").is_empty());
    assert!(ledger.actions().expect("actions").is_empty());

    let (leader, exec) = start(Fence(2));
    leader.tick(T0 + 30 * NANOS).await;
    assert_eq!(*exec.size.lock().expect("lock"), 4, "0.8 against 0.5 on 2 replicas");
    assert_eq!(ledger.actions().expect("actions").len(), 1);
    assert_eq!(ledger.decisions(None, None, 10).expect("decisions").len(), 1);
}

/// The API shows a scaling rule's capacity model: how many samples it holds, its fit once it
/// has one, and its prediction error; a rule without `scale.model` shows none.
#[tokio::test]
async fn the_api_shows_the_capacity_model_of_a_scaling_rule() {
    const MODEL: &str = "apiVersion: stoker/v1\nkind: Policy\nmetadata: {name: m}\nspec:\n  target: {name: svc, min: 1, max: 40, actuator: command, command: {argv: [echo]}}\n  interval: 1s\n  scale:\n    metrics:\n      - name: busy\n        signal: {metric: hw.gpu.utilization, stat: mean, window: 10s}\n        target: {value: 0.5}\n    model:\n      load: {metric: inference.requests, stat: rate, window: 10s}\n      latency: {metric: inference.request.duration, stat: p95, window: 10s}\n      utilization: {metric: hw.gpu.utilization, stat: mean, window: 10s}\n      p95: 0.130\n";
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("policies")).expect("dir");
    std::fs::write(tmp.path().join("policies/m.yaml"), MODEL).expect("write");
    std::fs::write(tmp.path().join("policies/r.yaml"), RETRAIN).expect("write");
    let exec = Arc::new(Recording::default());
    *exec.size.lock().expect("lock") = 2;
    let step = Duration::from_secs(1);
    let series = vec![
        series_from_notation("hw.gpu.utilization", "0.5x300", T0, step).expect("series"),
        series_from_notation("inference.requests", "0+40x300", T0, step).expect("series"),
        series_from_notation("inference.request.duration", "0.1x300", T0, step).expect("series"),
    ];
    let rt = PolicyRuntime::new(
        RuntimeConfig::new(tmp.path().join("policies"), tmp.path().join("data")),
        exec,
        Arc::new(SeriesSource::new(series)),
        Arc::new(ManualClock::new(T0)),
        None,
    )
    .expect("runtime");
    for k in 10..40 {
        rt.tick(T0 + k * NANOS).await;
    }
    let status = stoker_collector::policy::api::policies_status(&rt, T0 + 40 * NANOS);
    let rule = |policy: &str, rule: &str| {
        let p = status.policies.iter().find(|p| p.name == policy).expect("policy");
        p.rules.iter().find(|r| r.rule == rule).expect("rule").clone()
    };
    let model = rule("m", "scale").model.expect("a scaling rule with a model shows it");
    assert_eq!(model.samples, 30, "one sample per evaluation");
    // 40 req/s on 2 replicas at utilisation 0.5: 40 req/s per replica.
    let fit = model.fit.expect("fitted on 30 steady samples");
    assert!((fit.throughput - 40.0).abs() < 1.0 && fit.service_time > 0.0, "{fit:?}");
    assert!(rule("r", "low").model.is_none());
    let json = serde_json::to_value(&status).expect("json");
    assert!(json.to_string().contains("\"samples\":30"), "{json}");
}
