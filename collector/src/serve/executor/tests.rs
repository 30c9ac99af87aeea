//! The executor over real `command` actuators writing to a temp directory: outcomes, keys,
//! dry-run, bounds, rebuilds on a changed section, removal, failures with attempts, jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::actuate::spec::{CommandSpec, JobActuator, ResizeActuator};
use crate::actuate::{ActuatorsConfig, Journal, Secrets};

fn executor(dir: &Path) -> ActuatorExecutor {
    let ledger = crate::policy::persist::PolicyStore::open(dir).expect("policy ledger");
    let journal = Arc::new(Journal::new(Arc::new(ledger), crate::policy::persist::Fence::SOLE));
    ActuatorExecutor::new(
        ActuateEnv::new(ActuatorsConfig::default(), Secrets::default(), journal).expect("env"),
    )
}

fn sh(script: &str) -> CommandSpec {
    CommandSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: BTreeMap::new(),
        cwd: None,
        timeout: None,
    }
}

fn target(file: &Path, min: u32, max: u32) -> TargetRef {
    TargetRef {
        policy: "p".into(),
        name: "svc".into(),
        spec: ResizeSpec {
            actuator: Some(ResizeActuator::Command),
            command: Some(sh(&format!("echo {{{{ desired }}}} >> {}", file.display()))),
            ..ResizeSpec::default()
        },
        min,
        max,
    }
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn resizes_once_per_key_within_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("size");
    let ex = executor(dir.path());
    let t = target(&file, 1, 5);
    // A command target has no size until it was resized once.
    assert!(ex.current_size(&t).await.is_err());
    let o = ex.resize(&t, 3, "p/scale/1", false).await;
    assert_eq!(o.status, OutcomeStatus::Applied, "{o:?}");
    assert_eq!(o.attempts, 1);
    assert_eq!(lines(&file), ["3"]);
    assert_eq!(ex.current_size(&t).await.expect("size"), 3);
    // The same key again (a retry after a crash) does not run the command twice.
    let o = ex.resize(&t, 3, "p/scale/1", false).await;
    assert_eq!(o.status, OutcomeStatus::Duplicate, "{o:?}");
    assert_eq!(lines(&file), ["3"]);
    // Above max: clamped, and the message says so.
    let o = ex.resize(&t, 50, "p/scale/2", false).await;
    assert_eq!(o.status, OutcomeStatus::Applied);
    assert!(o.message.contains("clamped 50 -> 5"), "{}", o.message);
    assert_eq!(lines(&file), ["3", "5"]);
    // Dry run: nothing runs; the message shows what would have.
    let o = ex.resize(&t, 4, "p/scale/3", true).await;
    assert_eq!(o.status, OutcomeStatus::DryRun, "{o:?}");
    assert!(o.message.contains("would send exec sh -c echo 4"), "{}", o.message);
    assert_eq!(lines(&file), ["3", "5"]);
}

#[tokio::test]
async fn rebuilds_on_a_changed_section_and_drops_removed_targets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let ex = executor(dir.path());
    assert_eq!(ex.resize(&target(&a, 1, 9), 2, "k1", false).await.status, OutcomeStatus::Applied);
    // The policy was edited to write elsewhere: the new command runs.
    assert_eq!(ex.resize(&target(&b, 1, 9), 4, "k2", false).await.status, OutcomeStatus::Applied);
    assert_eq!((lines(&a), lines(&b)), (vec!["2".to_string()], vec!["4".to_string()]));
    assert_eq!(lock(&ex.resizers).len(), 1);
    ex.retain(&BTreeSet::new(), &BTreeSet::new()).await;
    assert!(lock(&ex.resizers).is_empty());
}

#[tokio::test]
async fn failures_carry_attempts_and_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ex = executor(dir.path());
    let mut t = target(&dir.path().join("x"), 1, 9);
    t.spec.command = Some(sh("echo no capacity >&2; exit 3"));
    let o = ex.resize(&t, 2, "k", false).await;
    assert_eq!(o.status, OutcomeStatus::Failed);
    assert!(o.attempts >= 1);
    assert!(o.message.contains("no capacity"), "{}", o.message);
    // An invalid section fails without running anything.
    t.spec.command = None;
    let o = ex.resize(&t, 2, "k2", false).await;
    assert_eq!(o.status, OutcomeStatus::Failed);
    assert!(o.message.contains("command"), "{}", o.message);
}

#[tokio::test]
async fn jobs_start_once_and_report_their_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("job");
    let ex = executor(dir.path());
    let job = JobRef {
        policy: "p".into(),
        rule: "refresh".into(),
        spec: JobSpec {
            actuator: Some(JobActuator::Command),
            command: Some(sh(&format!("echo {{{{ reason }}}} > {}", out.display()))),
            ..JobSpec::default()
        },
    };
    let params = BTreeMap::from([("reason".to_string(), "drift".to_string())]);
    let o = ex.start_job(&job, &params, "p/refresh/1", false).await;
    assert_eq!(o.status, OutcomeStatus::Applied, "{o:?}");
    let id = o.remote_ids.first().cloned().expect("an id to follow");
    let mut status = JobStatus::Unknown;
    for _ in 0..100 {
        status = ex.job_status(&job, &id).await;
        if status == JobStatus::Succeeded {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, JobStatus::Succeeded);
    assert_eq!(lines(&out), ["drift"]);
    assert_eq!(ex.job_status(&job, "no-such-job").await, JobStatus::Unknown);
}
