//! The policy runtime's [`Executor`] over the actuators: one resizer per policy target and one
//! job runner per rule, built on first use and kept (local replicas live inside their resizer),
//! rebuilt when a reloaded policy changed the section, and shut down when the policy set no
//! longer names them ([`ActuatorExecutor::retain`]) or the collector stops
//! ([`ActuatorExecutor::shutdown`]).
//!
//! The actuators already journal, clamp, retry and honour dry-run; this adapter only passes the
//! decision's key, bounds and mode through and turns their outcomes and errors (with the
//! attempts made) into the engine's [`Outcome`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tracing::{info, warn};

use crate::actuate::spec::{JobSpec, ResizeSpec};
use crate::actuate::{
    ActionKind, ActuateEnv, ActuateError, Bounds, IdempotencyKey, JobContext, JobHandle, JobRunner,
    JobState, ResizeOutcome, Resizer, build_job_runner, build_resizer,
};
use crate::policy::engine::{Outcome, OutcomeStatus};
use crate::policy::runtime::{ExecError, Executor, JobRef, JobStatus, TargetRef, TargetSize};

/// How far back [`Executor::job_status`] looks in the journal for a job started before a
/// restart (the in-memory handles are lost then).
const JOURNAL_LOOKBACK: usize = 2_000;

type ResizerKey = (String, String);
/// A cached actuator with the section it was built from (a changed section rebuilds it).
type Cached<S, A> = Mutex<HashMap<(String, String), (S, Arc<A>)>>;

/// Acts for the policy runtime through the actuators built from each policy's sections.
pub struct ActuatorExecutor {
    env: ActuateEnv,
    resizers: Cached<ResizeSpec, dyn Resizer>,
    runners: Cached<JobSpec, dyn JobRunner>,
    /// Handles of jobs started by this process, by the remote id given to the runtime.
    handles: Mutex<HashMap<String, JobHandle>>,
}

impl std::fmt::Debug for ActuatorExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActuatorExecutor").field("env", &self.env).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold plain data; a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ActuatorExecutor {
    /// An executor building its actuators from `env`.
    pub fn new(env: ActuateEnv) -> Self {
        Self {
            env,
            resizers: Mutex::default(),
            runners: Mutex::default(),
            handles: Mutex::default(),
        }
    }

    /// The actuator environment (journal, secrets, HTTP client).
    pub fn env(&self) -> &ActuateEnv {
        &self.env
    }

    /// The resizer of `target`, built now if it is new or its section changed; a replaced one
    /// is shut down.
    async fn resizer(&self, target: &TargetRef) -> Result<Arc<dyn Resizer>, ActuateError> {
        let key = (target.policy.clone(), target.name.clone());
        let replaced = {
            let mut map = lock(&self.resizers);
            match map.get(&key) {
                Some((spec, r)) if *spec == target.spec => return Ok(r.clone()),
                _ => {}
            }
            let built = build_resizer(&target.spec, &target.name, &self.env)?;
            let old = map.insert(key, (target.spec.clone(), built.clone()));
            if old.is_some() {
                info!(policy = %target.policy, target = %target.name, "Target section changed: actuator rebuilt.");
            }
            (built, old)
        };
        if let (_, Some((_, old))) = &replaced {
            if let Err(e) = old.shutdown().await {
                warn!(policy = %target.policy, target = %target.name, error = %e, "Shutting down the replaced actuator failed.");
            }
        }
        Ok(replaced.0)
    }

    fn runner(&self, job: &JobRef) -> Result<Arc<dyn JobRunner>, ActuateError> {
        let key = (job.policy.clone(), job.rule.clone());
        let mut map = lock(&self.runners);
        match map.get(&key) {
            Some((spec, r)) if *spec == job.spec => return Ok(r.clone()),
            _ => {}
        }
        let built = build_job_runner(&job.spec, &self.env)?;
        map.insert(key, (job.spec.clone(), built.clone()));
        Ok(built)
    }

    /// Drops the actuators of targets and rules no longer in the policy set, shutting down
    /// removed resizers (which stops local replicas). `targets` are `(policy, target)` and
    /// `rules` `(policy, rule)` pairs in force.
    pub async fn retain(
        &self,
        targets: &BTreeSet<(String, String)>,
        rules: &BTreeSet<(String, String)>,
    ) {
        let removed: Vec<(ResizerKey, Arc<dyn Resizer>)> = {
            let mut map = lock(&self.resizers);
            let gone: Vec<ResizerKey> =
                map.keys().filter(|k| !targets.contains(*k)).cloned().collect();
            gone.into_iter().filter_map(|k| map.remove(&k).map(|(_, r)| (k, r))).collect()
        };
        lock(&self.runners).retain(|k, _| rules.contains(k));
        for ((policy, target), r) in removed {
            info!(policy = %policy, target = %target, "Target no longer in any policy: actuator shut down.");
            if let Err(e) = r.shutdown().await {
                warn!(policy = %policy, target = %target, error = %e, "Shutting down a removed actuator failed.");
            }
        }
    }

    /// Shuts down every resizer (local replicas stop); call once when the collector stops.
    pub async fn shutdown(&self) {
        let all: Vec<(ResizerKey, Arc<dyn Resizer>)> =
            lock(&self.resizers).drain().map(|(k, (_, r))| (k, r)).collect();
        lock(&self.runners).clear();
        for ((policy, target), r) in all {
            if let Err(e) = r.shutdown().await {
                warn!(policy = %policy, target = %target, error = %e, "Actuator shutdown failed.");
            }
        }
    }

    /// The handle of a job by the remote id this executor reported, from memory or, after a
    /// restart, from the actions journal.
    fn handle(&self, remote_id: &str) -> Option<JobHandle> {
        if let Some(h) = lock(&self.handles).get(remote_id) {
            return Some(h.clone());
        }
        let recent = match self.env.journal.recent(JOURNAL_LOOKBACK) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "Cannot read the actions journal for a job's handle.");
                return None;
            }
        };
        recent.into_iter().filter(|r| r.kind == ActionKind::Job).find_map(|r| {
            let h = r.handle?;
            (h.remote_id.as_deref() == Some(remote_id) || h.key.as_str() == remote_id).then_some(h)
        })
    }
}

/// The engine's outcome of a resize.
fn resize_outcome(o: &ResizeOutcome) -> Outcome {
    let status = if o.dry_run {
        OutcomeStatus::DryRun
    } else if o.replayed {
        OutcomeStatus::Duplicate
    } else {
        OutcomeStatus::Applied
    };
    let mut message = Vec::new();
    if let Some(c) = &o.clamp {
        message.push(format!("clamped {} -> {} ({})", c.requested, c.applied, c.reason));
    }
    if let (Some(b), Some(a)) = (o.before, o.after) {
        message.push(format!("{b} -> {a}"));
    }
    if o.dry_run {
        for p in &o.planned {
            message.push(format!("would send {} {}", p.method, p.url));
        }
    }
    if let Some(n) = &o.note {
        message.push(n.clone());
    }
    Outcome {
        status,
        attempts: u32::try_from(o.attempts.len()).unwrap_or(u32::MAX),
        remote_ids: o.remote_id.iter().cloned().collect(),
        message: message.join("; "),
    }
}

/// The engine's outcome of a failed action: the attempts the actuator made, at least one.
fn failed(e: &ActuateError) -> Outcome {
    Outcome {
        status: OutcomeStatus::Failed,
        attempts: u32::try_from(e.attempts().len().max(1)).unwrap_or(u32::MAX),
        remote_ids: Vec::new(),
        message: e.to_string(),
    }
}

impl Executor for ActuatorExecutor {
    fn current_size<'a>(&'a self, target: &'a TargetRef) -> BoxFuture<'a, Result<u32, ExecError>> {
        Box::pin(async move {
            let r = self.resizer(target).await.map_err(|e| ExecError(e.to_string()))?;
            r.current().await.map(|s| s.replicas).map_err(|e| ExecError(e.to_string()))
        })
    }

    fn target_size<'a>(
        &'a self,
        target: &'a TargetRef,
    ) -> BoxFuture<'a, Result<TargetSize, ExecError>> {
        Box::pin(async move {
            let r = self.resizer(target).await.map_err(|e| ExecError(e.to_string()))?;
            let s = r.current().await.map_err(|e| ExecError(e.to_string()))?;
            Ok(TargetSize { provisioned: s.replicas, ready: s.ready })
        })
    }

    fn resize<'a>(
        &'a self,
        target: &'a TargetRef,
        desired: u32,
        key: &'a str,
        dry_run: bool,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let r = match self.resizer(target).await {
                Ok(r) => r,
                Err(e) => return failed(&e),
            };
            let key = IdempotencyKey::from_raw(key);
            let bounds = Bounds { min: target.min, max: target.max };
            match r.resize(desired, bounds, &key, dry_run).await {
                Ok(o) => resize_outcome(&o),
                Err(e) => failed(&e),
            }
        })
    }

    fn start_job<'a>(
        &'a self,
        job: &'a JobRef,
        params: &'a BTreeMap<String, String>,
        key: &'a str,
        dry_run: bool,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let runner = match self.runner(job) {
                Ok(r) => r,
                Err(e) => return failed(&e),
            };
            let ctx = JobContext {
                policy: job.policy.clone(),
                rule: job.rule.clone(),
                values: params.clone(),
            };
            let key = IdempotencyKey::from_raw(key);
            match runner.start(&ctx, &key, dry_run).await {
                Ok(h) => {
                    // The runtime follows the job by this id; jobs without a remote id (a
                    // command, a webhook) are followed by their key.
                    let id = h.remote_id.clone().unwrap_or_else(|| h.key.as_str().to_owned());
                    let status =
                        if h.dry_run { OutcomeStatus::DryRun } else { OutcomeStatus::Applied };
                    let message = h.url.clone().unwrap_or_default();
                    lock(&self.handles).insert(id.clone(), h);
                    Outcome { status, attempts: 1, remote_ids: vec![id], message }
                }
                Err(e) => failed(&e),
            }
        })
    }

    fn job_status<'a>(&'a self, job: &'a JobRef, remote_id: &'a str) -> BoxFuture<'a, JobStatus> {
        Box::pin(async move {
            let Some(handle) = self.handle(remote_id) else { return JobStatus::Unknown };
            let runner = match self.runner(job) {
                Ok(r) => r,
                Err(e) => return JobStatus::Failed { message: e.to_string() },
            };
            match runner.poll(&handle).await {
                Ok(s) => match s.state {
                    JobState::Started => JobStatus::Pending,
                    JobState::Running => JobStatus::Running,
                    JobState::Succeeded => JobStatus::Succeeded,
                    JobState::Failed => {
                        JobStatus::Failed { message: s.detail.unwrap_or_else(|| "failed".into()) }
                    }
                    JobState::TimedOut => JobStatus::Failed {
                        message: s.detail.unwrap_or_else(|| "timed out".into()),
                    },
                },
                Err(e) => {
                    warn!(policy = %job.policy, rule = %job.rule, error = %e, "Polling a job failed.");
                    JobStatus::Unknown
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
