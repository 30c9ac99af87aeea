//! The safety rails shared by every actuator, written once: idempotency through the journal,
//! clamping to min/max, dry-run, crash recovery and the job lifecycle. Backends
//! ([`ResizeBackend`], [`JobBackend`]) only speak their remote's protocol.

use std::sync::Arc;
use std::time::Duration;

use super::config::ActuateEnv;
use super::http::log_dry_run;
use super::journal::{ActionKind, ActionState, Actuation, Journal};
use super::types::{
    ActuateError, AttemptRecord, Bounds, Clamp, IdempotencyKey, JobContext, JobHandle, JobState,
    JobStatus, PlannedRequest, ResizeOutcome, ScaleState,
};
use super::{ActFuture, JobRunner, Resizer};

/// What a backend reports after setting a size.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Size read back, when the backend reads back.
    pub after: Option<u32>,
    /// Remote id of the change.
    pub remote_id: Option<String>,
    /// Anything worth recording.
    pub note: Option<String>,
}

/// One remote that has a size. Implementations send; they do not journal or clamp.
pub trait ResizeBackend: Send + Sync + 'static {
    /// Actuator name (`kubernetes`).
    fn actuator(&self) -> &'static str;
    /// The target as this backend names it (`infer/deployment/resnet`).
    fn target(&self) -> String;
    /// Read the current state; `None` when this remote cannot be read (command, webhook).
    fn read<'a>(
        &'a self,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<ScaleState>>;
    /// The mutating requests that would set `size` (the dry-run log).
    fn plan(&self, size: u32, key: &IdempotencyKey) -> Result<Vec<PlannedRequest>, ActuateError>;
    /// Set `size`. `state` is what `read` returned just before.
    fn apply<'a>(
        &'a self,
        size: u32,
        state: Option<&'a ScaleState>,
        key: &'a IdempotencyKey,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Applied>;
    /// Stop what the backend runs itself.
    fn shutdown(&self) -> ActFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// A [`Resizer`] over a backend: journal, clamp, dry-run, recovery.
pub struct JournaledResizer<B> {
    backend: B,
    name: String,
    journal: Arc<Journal>,
    env: ActuateEnv,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl<B: ResizeBackend> JournaledResizer<B> {
    /// Wrap `backend`; `name` is the policy target's name.
    pub fn new(backend: B, name: &str, env: &ActuateEnv) -> Self {
        Self {
            backend,
            name: name.to_owned(),
            journal: env.journal.clone(),
            env: env.clone(),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    /// The backend (tests, local replica inspection).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn journal_target(&self) -> String {
        format!("{}:{}", self.backend.actuator(), self.backend.target())
    }

    fn record(
        &self,
        key: &IdempotencyKey,
        state: ActionState,
        desired: u32,
        created_ns: u64,
    ) -> Actuation {
        Actuation {
            key: key.as_str().to_owned(),
            kind: ActionKind::Resize,
            actuator: self.backend.actuator().to_owned(),
            target: self.journal_target(),
            policy: None,
            rule: Some(self.name.clone()),
            state,
            desired: Some(desired),
            created_ns,
            updated_ns: self.env.now_ns(),
            resize: None,
            handle: None,
            job: None,
            attempts: Vec::new(),
            error: None,
            indeterminate: false,
        }
    }

    async fn read_state(
        &self,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Result<Option<ScaleState>, ActuateError> {
        match self.backend.read(attempts).await? {
            Some(s) => Ok(Some(s)),
            None => Ok(self
                .journal
                .last_size(&self.journal_target())?
                .map(|n| ScaleState { replicas: n, ..Default::default() })),
        }
    }

    async fn resize_locked(
        &self,
        desired: u32,
        bounds: Bounds,
        key: &IdempotencyKey,
        dry_run: bool,
    ) -> Result<ResizeOutcome, ActuateError> {
        let actuator = self.backend.actuator();
        let now = self.env.now_ns();
        let mut created_ns = now;
        let mut recovering = false;
        if let Some(prev) = self.journal.get(key.as_str())? {
            created_ns = prev.created_ns;
            match prev.state {
                ActionState::Applied | ActionState::Unchanged => {
                    if let Some(mut o) = prev.resize {
                        tracing::info!(key = %key, actuator, "Resize already applied under this key; not acting again.");
                        o.replayed = true;
                        return Ok(o);
                    }
                }
                ActionState::DryRun if dry_run => {
                    if let Some(mut o) = prev.resize {
                        o.replayed = true;
                        return Ok(o);
                    }
                }
                ActionState::Pending => recovering = true,
                _ => {}
            }
        }

        let (mut size, mut clamp) = bounds.clamp(desired);
        let mut outcome = ResizeOutcome {
            key: key.clone(),
            actuator: actuator.to_owned(),
            target: self.backend.target(),
            requested: desired,
            applied: size,
            clamp: clamp.clone(),
            dry_run,
            recovered: recovering,
            ..Default::default()
        };

        if dry_run {
            outcome.planned = self.backend.plan(size, key)?;
            for p in &outcome.planned {
                log_dry_run(actuator, p);
            }
            let mut rec = self.record(key, ActionState::DryRun, size, created_ns);
            rec.resize = Some(outcome.clone());
            self.journal.put(&rec)?;
            return Ok(outcome);
        }

        let mut attempts = Vec::new();
        let state = match self.read_state(&mut attempts).await {
            Ok(s) => s,
            Err(e) => return Err(self.fail(key, size, created_ns, attempts, e)),
        };
        if let Some(s) = &state {
            let (narrowed, changed) = bounds.narrowed_by(s);
            if changed {
                let (n, c) = narrowed.clamp(desired);
                if n != size {
                    size = n;
                    clamp = c.map(|c| Clamp { reason: c.reason.replace("policy", "remote"), ..c });
                }
            }
            outcome.before = Some(s.replicas);
        }
        outcome.applied = size;
        outcome.clamp = clamp;
        if let Some(c) = &outcome.clamp {
            tracing::info!(key = %key, requested = c.requested, applied = c.applied, reason = %c.reason, "Clamped resize.");
        }

        if state.as_ref().map(|s| s.replicas) == Some(size) {
            outcome.attempts = attempts;
            outcome.after = Some(size);
            if recovering {
                outcome.note =
                    Some("an interrupted earlier attempt had already applied this size".into());
            }
            let mut rec = self.record(key, ActionState::Unchanged, size, created_ns);
            rec.resize = Some(outcome.clone());
            self.journal.put(&rec)?;
            return Ok(outcome);
        }

        outcome.planned = self.backend.plan(size, key)?;
        // Written before sending: after a crash the pending record makes the next attempt
        // re-read and compare instead of acting blindly.
        self.journal.put(&self.record(key, ActionState::Pending, size, created_ns))?;
        tracing::info!(key = %key, actuator, target = %outcome.target, from = ?outcome.before, to = size, "Resizing.");
        match self.backend.apply(size, state.as_ref(), key, &mut attempts).await {
            Ok(applied) => {
                outcome.changed = true;
                outcome.after = applied.after;
                outcome.remote_id = applied.remote_id;
                outcome.note = match (outcome.note.take(), applied.note) {
                    (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                    (a, b) => a.or(b),
                };
                outcome.attempts = attempts;
                let mut rec = self.record(key, ActionState::Applied, size, created_ns);
                rec.attempts = outcome.attempts.clone();
                rec.resize = Some(outcome.clone());
                self.journal.put(&rec)?;
                Ok(outcome)
            }
            Err(e) => Err(self.fail(key, size, created_ns, attempts, e)),
        }
    }

    fn fail(
        &self,
        key: &IdempotencyKey,
        size: u32,
        created_ns: u64,
        attempts: Vec<AttemptRecord>,
        e: ActuateError,
    ) -> ActuateError {
        tracing::warn!(key = %key, actuator = self.backend.actuator(), error = %e, "Resize failed.");
        let mut rec = self.record(key, ActionState::Failed, size, created_ns);
        rec.error = Some(e.to_string());
        rec.attempts = attempts.clone();
        if let Err(je) = self.journal.put(&rec) {
            tracing::error!(key = %key, error = %je, "Could not record a failed resize.");
        }
        ActuateError::Failed { attempts, source: Box::new(e) }
    }
}

impl<B: ResizeBackend> Resizer for JournaledResizer<B> {
    fn current(&self) -> ActFuture<'_, ScaleState> {
        Box::pin(async move {
            let mut attempts = Vec::new();
            self.read_state(&mut attempts).await?.ok_or_else(|| {
                ActuateError::Unsupported(format!(
                    "{} target {} has no readable size until it has been resized once",
                    self.backend.actuator(),
                    self.backend.target()
                ))
            })
        })
    }

    fn resize<'a>(
        &'a self,
        desired: u32,
        bounds: Bounds,
        key: &'a IdempotencyKey,
        dry_run: bool,
    ) -> ActFuture<'a, ResizeOutcome> {
        Box::pin(async move {
            let _guard = self.one_at_a_time.lock().await;
            self.resize_locked(desired, bounds, key, dry_run).await
        })
    }

    fn shutdown(&self) -> ActFuture<'_, ()> {
        self.backend.shutdown()
    }
}

/// What a job backend reports when it started (or found) a job.
#[derive(Clone, Debug, Default)]
pub struct Started {
    /// Remote id.
    pub remote_id: Option<String>,
    /// Link for people.
    pub url: Option<String>,
    /// Detail (`already existed`).
    pub detail: Option<String>,
}

/// A job's state as the remote reports it.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Lifecycle state.
    pub state: JobState,
    /// Detail.
    pub detail: Option<String>,
    /// Captured output.
    pub output: Option<String>,
}

/// One remote that runs jobs.
pub trait JobBackend: Send + Sync + 'static {
    /// Actuator name.
    fn actuator(&self) -> &'static str;
    /// What runs (`acme/models retrain.yml@main`).
    fn describe(&self) -> String;
    /// The requests that would start the job (the dry-run log).
    fn plan(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
    ) -> Result<Vec<PlannedRequest>, ActuateError>;
    /// Start the job.
    fn start<'a>(
        &'a self,
        ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Started>;
    /// After a crash between sending and recording: the job that was started, `None` when
    /// nothing was (so starting is safe), or [`ActuateError::Indeterminate`].
    fn recover<'a>(
        &'a self,
        ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        sent_ns: u64,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<Started>>;
    /// The job's state now.
    fn poll<'a>(
        &'a self,
        handle: &'a JobHandle,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Observed>;
    /// Best-effort stop of a job that ran past its timeout.
    fn cancel<'a>(&'a self, _handle: &'a JobHandle) -> ActFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// A [`JobRunner`] over a backend: journal, one-at-a-time per rule, dry-run, recovery,
/// lifecycle and timeout.
pub struct JournaledJobRunner<B> {
    backend: B,
    timeout: Duration,
    journal: Arc<Journal>,
    env: ActuateEnv,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl<B: JobBackend> JournaledJobRunner<B> {
    /// Wrap `backend`; jobs running longer than `timeout` are marked timed out.
    pub fn new(backend: B, timeout: Duration, env: &ActuateEnv) -> Self {
        Self {
            backend,
            timeout,
            journal: env.journal.clone(),
            env: env.clone(),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }

    fn record(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
        state: ActionState,
        created_ns: u64,
    ) -> Actuation {
        Actuation {
            key: key.as_str().to_owned(),
            kind: ActionKind::Job,
            actuator: self.backend.actuator().to_owned(),
            target: self.backend.describe(),
            policy: Some(ctx.policy.clone()),
            rule: Some(ctx.rule.clone()),
            state,
            desired: None,
            created_ns,
            updated_ns: self.env.now_ns(),
            resize: None,
            handle: None,
            job: None,
            attempts: Vec::new(),
            error: None,
            indeterminate: false,
        }
    }

    fn started(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
        created_ns: u64,
        started: Started,
        attempts: Vec<AttemptRecord>,
    ) -> Result<JobHandle, ActuateError> {
        let handle = JobHandle {
            key: key.clone(),
            actuator: self.backend.actuator().to_owned(),
            remote_id: started.remote_id.clone(),
            url: started.url.clone(),
            dry_run: false,
        };
        let mut rec = self.record(ctx, key, ActionState::Started, created_ns);
        rec.handle = Some(handle.clone());
        rec.attempts = attempts;
        rec.job = Some(JobStatus {
            key: key.clone(),
            state: JobState::Started,
            detail: started.detail,
            remote_id: started.remote_id,
            url: started.url,
            output: None,
            started_ns: created_ns,
            finished_ns: None,
        });
        self.journal.put(&rec)?;
        tracing::info!(key = %key, actuator = self.backend.actuator(), remote_id = ?handle.remote_id, "Job started.");
        Ok(handle)
    }

    fn failed(
        &self,
        mut rec: Actuation,
        attempts: Vec<AttemptRecord>,
        e: ActuateError,
    ) -> ActuateError {
        tracing::warn!(key = %rec.key, actuator = self.backend.actuator(), error = %e, "Job did not start.");
        rec.state = ActionState::Failed;
        rec.indeterminate = matches!(e, ActuateError::Indeterminate { .. });
        rec.updated_ns = self.env.now_ns();
        rec.error = Some(e.to_string());
        rec.attempts = attempts.clone();
        if let Err(je) = self.journal.put(&rec) {
            tracing::error!(key = %rec.key, error = %je, "Could not record a failed job start.");
        }
        ActuateError::Failed { attempts, source: Box::new(e) }
    }

    async fn start_locked(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
        dry_run: bool,
    ) -> Result<JobHandle, ActuateError> {
        let now = self.env.now_ns();
        let mut attempts = Vec::new();
        if let Some(prev) = self.journal.get(key.as_str())? {
            if prev.indeterminate {
                return Err(ActuateError::Indeterminate {
                    key: key.as_str().to_owned(),
                    reason: prev
                        .error
                        .unwrap_or_else(|| "an interrupted start may have run".into()),
                });
            }
            match (prev.state, prev.handle.clone()) {
                (ActionState::Pending, _) => {
                    tracing::warn!(key = %key, "A job start under this key was interrupted; looking for what it started.");
                    match self.backend.recover(ctx, key, prev.created_ns, &mut attempts).await {
                        Ok(Some(started)) => {
                            return self.started(ctx, key, prev.created_ns, started, attempts);
                        }
                        Ok(None) => {}
                        Err(e) => return Err(self.failed(prev, attempts, e)),
                    }
                }
                (ActionState::DryRun, Some(h)) if dry_run => return Ok(h),
                (ActionState::DryRun, _) | (ActionState::Failed, None) => {}
                (_, Some(h)) => return Ok(h),
                (_, None) => {}
            }
        }
        let busy: Vec<_> = self
            .journal
            .active_jobs(&ctx.policy, &ctx.rule)?
            .into_iter()
            .filter(|r| r.key != key.as_str())
            .collect();
        if let Some(r) = busy.first() {
            return Err(ActuateError::JobBusy {
                policy: ctx.policy.clone(),
                rule: ctx.rule.clone(),
                running: r.key.clone(),
            });
        }
        if dry_run {
            let planned = self.backend.plan(ctx, key)?;
            for p in &planned {
                log_dry_run(self.backend.actuator(), p);
            }
            let handle = JobHandle {
                key: key.clone(),
                actuator: self.backend.actuator().to_owned(),
                remote_id: None,
                url: None,
                dry_run: true,
            };
            let mut rec = self.record(ctx, key, ActionState::DryRun, now);
            rec.handle = Some(handle.clone());
            rec.error = Some(format!(
                "dry run; would send: {}",
                serde_json::to_string(&planned).unwrap_or_default()
            ));
            self.journal.put(&rec)?;
            return Ok(handle);
        }
        let pending = self.record(ctx, key, ActionState::Pending, now);
        self.journal.put(&pending)?;
        match self.backend.start(ctx, key, &mut attempts).await {
            Ok(started) => self.started(ctx, key, now, started, attempts),
            Err(e) => Err(self.failed(pending, attempts, e)),
        }
    }

    async fn poll_inner(&self, handle: &JobHandle) -> Result<JobStatus, ActuateError> {
        let rec = self.journal.get(handle.key.as_str())?.ok_or_else(|| {
            ActuateError::Journal(format!("no job recorded under {}", handle.key))
        })?;
        let mut status = rec.job.clone().unwrap_or(JobStatus {
            key: handle.key.clone(),
            state: JobState::Failed,
            detail: rec.error.clone(),
            remote_id: None,
            url: None,
            output: None,
            started_ns: rec.created_ns,
            finished_ns: None,
        });
        if rec.state.is_terminal() || handle.dry_run {
            return Ok(status);
        }
        let now = self.env.now_ns();
        let mut rec = rec;
        let timeout_ns = u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(status.started_ns) > timeout_ns {
            if let Err(e) = self.backend.cancel(handle).await {
                tracing::warn!(key = %handle.key, error = %e, "Could not cancel a timed-out job.");
            }
            status.state = JobState::TimedOut;
            status.detail =
                Some(format!("ran longer than {}", humantime::format_duration(self.timeout)));
            status.finished_ns = Some(now);
        } else {
            let mut attempts = Vec::new();
            let observed = self.backend.poll(handle, &mut attempts).await?;
            // The backend may have written a terminal state itself meanwhile (commands).
            if let Some(fresh) = self.journal.get(handle.key.as_str())? {
                if fresh.state.is_terminal() {
                    if let Some(j) = fresh.job {
                        return Ok(j);
                    }
                }
            }
            status.state = observed.state;
            status.detail = observed.detail.or(status.detail);
            if observed.output.is_some() {
                status.output = observed.output;
            }
            if observed.state.is_terminal() {
                status.finished_ns = Some(now);
            }
        }
        rec.state = ActionState::from_job(status.state);
        rec.updated_ns = now;
        rec.job = Some(status.clone());
        self.journal.put(&rec)?;
        Ok(status)
    }
}

impl<B: JobBackend> JobRunner for JournaledJobRunner<B> {
    fn start<'a>(
        &'a self,
        ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        dry_run: bool,
    ) -> ActFuture<'a, JobHandle> {
        Box::pin(async move {
            let _guard = self.one_at_a_time.lock().await;
            self.start_locked(ctx, key, dry_run).await
        })
    }

    fn poll<'a>(&'a self, handle: &'a JobHandle) -> ActFuture<'a, JobStatus> {
        Box::pin(self.poll_inner(handle))
    }
}
