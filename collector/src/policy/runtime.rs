//! The live policy runtime: loads the policy directory, reloads it on change and on SIGHUP
//! (an invalid edit keeps the last good set and reports the errors), evaluates each policy on
//! its interval through [`engine::evaluate_sized`] (sized on the ready replicas the resizer
//! reports, as replay models it, so a scale-out the warming replicas cover is held), acts through an [`Executor`], and records
//! decisions, state and actions in [`PolicyStore`] so a restart keeps cooldowns, budgets and
//! pending actions.
//!
//! Crash safety: an action is written as `pending` with its idempotency key before the
//! executor is called; on start, pending actions are sent again with the same key, and the
//! executor must treat a repeated key as already done (`OutcomeStatus::Duplicate`).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::check::{self, Diagnostic, Policy, Severity};
use super::driver::{self, Driver, Sizing};
use super::engine::{Action, Decision, Outcome, OutcomeStatus, PolicyState};
use super::format::Mode;
use super::otel::DecisionExporter;
use super::persist::{
    ActionRecord, ActionStatus, Fence, Leadership, Ledger, LedgerError, PersistError, PolicyStore,
};
use super::signal::{SignalSource, nanos};
use crate::actuate::spec::{JobSpec, ResizeSpec};
use crate::clock::SharedClock;

/// How often the runtime wakes to evaluate the policies that are due.
const TICK: Duration = Duration::from_secs(1);

/// A resize target as the executor needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetRef {
    /// Policy name.
    pub policy: String,
    /// Target name.
    pub name: String,
    /// The actuator section.
    pub spec: ResizeSpec,
    /// Bounds (the executor must never go outside them).
    pub min: u32,
    /// Upper bound.
    pub max: u32,
}

/// A job as the executor needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRef {
    /// Policy name.
    pub policy: String,
    /// Rule name.
    pub rule: String,
    /// The job section; string values may hold `{{ name }}` placeholders, filled from
    /// `params` with [`super::template::render`].
    pub spec: JobSpec,
}

/// State of a started job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum JobStatus {
    /// Queued.
    Pending,
    /// Running.
    Running,
    /// Finished well.
    Succeeded,
    /// Finished badly.
    Failed {
        /// Why.
        message: String,
    },
    /// Unknown (the remote did not say).
    Unknown,
}

pub use stoker_policy::driver::TargetSize;

/// Why the executor could not answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

/// How the runtime acts. Implemented by the actuators; a recording fake in tests.
pub trait Executor: Send + Sync {
    /// The target's current size.
    fn current_size<'a>(&'a self, target: &'a TargetRef) -> BoxFuture<'a, Result<u32, ExecError>>;
    /// The target's provisioned and ready replicas. The default knows only the provisioned
    /// size ([`Executor::current_size`]); executors whose resizers report readiness override it.
    fn target_size<'a>(
        &'a self,
        target: &'a TargetRef,
    ) -> BoxFuture<'a, Result<TargetSize, ExecError>> {
        Box::pin(async move {
            self.current_size(target).await.map(|n| TargetSize { provisioned: n, ready: None })
        })
    }
    /// Resizes to `desired` (within min/max). A key seen before must not act twice.
    fn resize<'a>(
        &'a self,
        target: &'a TargetRef,
        desired: u32,
        key: &'a str,
        dry_run: bool,
    ) -> BoxFuture<'a, Outcome>;
    /// Starts a job with template parameters. A key seen before must not start it twice.
    fn start_job<'a>(
        &'a self,
        job: &'a JobRef,
        params: &'a BTreeMap<String, String>,
        key: &'a str,
        dry_run: bool,
    ) -> BoxFuture<'a, Outcome>;
    /// Lifecycle of a started job by its remote id.
    fn job_status<'a>(&'a self, job: &'a JobRef, remote_id: &'a str) -> BoxFuture<'a, JobStatus>;
}

/// A signal source the runtime can share across tasks.
pub type SharedSource = Arc<dyn SignalSource + Send + Sync>;

/// Errors starting the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The state file.
    #[error(transparent)]
    Persist(#[from] PersistError),
    /// The ledger could not be read.
    #[error("policy ledger: {0}")]
    Ledger(#[from] LedgerError),
}

/// Runtime settings.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Policy directory (`--policies`, default `./policies`).
    pub policies_dir: PathBuf,
    /// Data directory; the state goes to `policy.redb` in it.
    pub data_dir: PathBuf,
    /// How often the directory is checked for changes.
    pub reload_poll: Duration,
    /// How often running jobs are polled.
    pub job_poll: Duration,
    /// Whether SIGHUP reloads the directory (the binary's `--reload-signal`).
    pub reload_on_hup: bool,
    /// Whether this collector leads, and the fence its ledger writes carry ([`Fence::SOLE`]
    /// for a collector alone). The runtime evaluates and acts only while it leads.
    pub leadership: Arc<dyn Leadership>,
}

impl RuntimeConfig {
    /// Defaults for a policy and data directory.
    pub fn new(policies_dir: PathBuf, data_dir: PathBuf) -> Self {
        Self {
            policies_dir,
            data_dir,
            reload_poll: Duration::from_secs(2),
            job_poll: Duration::from_secs(30),
            reload_on_hup: false,
            leadership: Arc::new(Fence::SOLE),
        }
    }
}

/// Counters for `/metrics` and the API.
#[derive(Debug, Default)]
pub struct RuntimeCounters {
    /// Successful loads.
    pub reloads: AtomicU64,
    /// Loads refused for errors.
    pub reload_failures: AtomicU64,
    /// Decisions recorded.
    pub decisions: AtomicU64,
    /// Actions attempted.
    pub actions: AtomicU64,
    /// Actions that failed.
    pub action_failures: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Shared, so a tick takes the due policies without copying each one.
    policies: Vec<Arc<Policy>>,
    states: BTreeMap<String, PolicyState>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    fingerprint: u64,
    driver: Driver,
    last: BTreeMap<(String, String), Decision>,
    /// Why a policy's scaling cannot act now (its target's size cannot be read), and since when.
    problems: BTreeMap<String, (String, u64)>,
    /// The size each policy's target last reported (resizer-read targets only).
    sizes: BTreeMap<String, TargetSize>,
    last_reload: u64,
    last_job_poll: u64,
}

/// The running policy engine; cheap to clone.
#[derive(Clone)]
pub struct PolicyRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    cfg: RuntimeConfig,
    store: Arc<dyn Ledger>,
    executor: Arc<dyn Executor>,
    source: SharedSource,
    clock: SharedClock,
    exporter: Option<DecisionExporter>,
    counters: RuntimeCounters,
    inner: Mutex<Inner>,
}

/// Snapshot of the loaded set for the API.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Loaded policies.
    pub policies: Vec<Policy>,
    /// Their state.
    pub states: BTreeMap<String, PolicyState>,
    /// Errors of the last refused load (empty when the last load was good).
    pub errors: Vec<Diagnostic>,
    /// Warnings of the loaded set.
    pub warnings: Vec<Diagnostic>,
    /// Last decision per (policy, rule).
    pub last: BTreeMap<(String, String), Decision>,
    /// Per policy, why its scaling cannot act now and since when (Unix nanos).
    pub problems: BTreeMap<String, (String, u64)>,
    /// The provisioned and ready replicas each policy's target last reported (policies whose
    /// size comes from the resizer, not from a signal).
    pub sizes: BTreeMap<String, TargetSize>,
    /// Time of the last load attempt.
    pub last_reload: u64,
}

fn fingerprint(dir: &PathBuf) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Ok(files) = check::policy_files(std::slice::from_ref(dir)) {
        for f in files {
            f.hash(&mut h);
            std::fs::read(&f).unwrap_or_default().hash(&mut h);
        }
    }
    h.finish()
}

impl PolicyRuntime {
    /// Opens the embedded ledger (`policy.redb` under the data directory) and starts over it
    /// ([`PolicyRuntime::with_ledger`]).
    pub fn new(
        cfg: RuntimeConfig,
        executor: Arc<dyn Executor>,
        source: SharedSource,
        clock: SharedClock,
        exporter: Option<DecisionExporter>,
    ) -> Result<Self, RuntimeError> {
        let ledger = Arc::new(PolicyStore::open(&cfg.data_dir)?);
        Self::with_ledger(cfg, ledger, executor, source, clock, exporter)
    }

    /// Loads the policies and the saved rule states from `ledger`, which every decision,
    /// action and state goes to from then on.
    pub fn with_ledger(
        cfg: RuntimeConfig,
        ledger: Arc<dyn Ledger>,
        executor: Arc<dyn Executor>,
        source: SharedSource,
        clock: SharedClock,
        exporter: Option<DecisionExporter>,
    ) -> Result<Self, RuntimeError> {
        // A member that does not lead yet reads the states when it comes to lead
        // ([`PolicyRuntime::take_over`]); the shared store may not even answer now.
        let states = match cfg.leadership.fence() {
            Some(_) => ledger.states()?,
            None => BTreeMap::new(),
        };
        let rt = Self {
            shared: Arc::new(Shared {
                cfg,
                store: ledger,
                executor,
                source,
                clock,
                exporter,
                counters: RuntimeCounters::default(),
                inner: Mutex::new(Inner { states, ..Inner::default() }),
            }),
        };
        rt.reload();
        Ok(rt)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data; keep serving it.
        self.shared.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counters.
    pub fn counters(&self) -> &RuntimeCounters {
        &self.shared.counters
    }

    /// The ledger: decisions, actions and rule states.
    pub fn store(&self) -> &dyn Ledger {
        self.shared.store.as_ref()
    }

    /// Runs ledger work on the blocking pool: a commit waits for fsync (or a round trip to a
    /// shared store), which must not stall the async workers that serve ingest and the API.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Ledger, Fence) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let store = self.shared.store.clone();
        let Some(fence) = self.shared.cfg.leadership.fence() else {
            return Err(LedgerError::NotLeader);
        };
        tokio::task::spawn_blocking(move || f(store.as_ref(), fence))
            .await
            .unwrap_or_else(|e| Err(LedgerError::Storage(format!("policy ledger task: {e}"))))
    }

    /// Now, from the injected clock.
    pub fn now(&self) -> u64 {
        self.shared.clock.now()
    }

    /// Loads the policy directory. On errors the last good set stays and the errors are kept
    /// for the API; returns whether the new set was taken.
    pub fn reload(&self) -> bool {
        let dir = self.shared.cfg.policies_dir.clone();
        let report = check::check_paths(std::slice::from_ref(&dir));
        let fp = fingerprint(&dir);
        let now = self.now();
        let mut inner = self.lock();
        inner.fingerprint = fp;
        inner.last_reload = now;
        if report.has_errors() {
            self.shared.counters.reload_failures.fetch_add(1, Ordering::Relaxed);
            inner.errors = report
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .cloned()
                .collect();
            for d in &inner.errors {
                error!(diagnostic = %d, "Policy reload refused; keeping the last good set.");
            }
            return false;
        }
        self.shared.counters.reloads.fetch_add(1, Ordering::Relaxed);
        inner.errors.clear();
        inner.warnings = report.diagnostics;
        let names: Vec<String> = report.policies.iter().map(|p| p.name().to_owned()).collect();
        inner.driver.retain(|k| names.iter().any(|n| n == k));
        inner.sizes.retain(|k, _| names.contains(k));
        info!(policies = names.len(), dir = %dir.display(), "Policies loaded.");
        inner.policies = report.policies.into_iter().map(Arc::new).collect();
        true
    }

    /// Reloads when the files changed since the last load.
    pub fn reload_if_changed(&self) -> bool {
        let fp = fingerprint(&self.shared.cfg.policies_dir);
        if fp == self.lock().fingerprint {
            return false;
        }
        self.reload()
    }

    /// A snapshot for the API.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            policies: inner.policies.iter().map(|p| Policy::clone(p)).collect(),
            states: inner.states.clone(),
            errors: inner.errors.clone(),
            warnings: inner.warnings.clone(),
            last: inner.last.clone(),
            problems: inner.problems.clone(),
            sizes: inner.sizes.clone(),
            last_reload: inner.last_reload,
        }
    }

    /// Sends every `pending` action again with its key (after a crash); call once at start.
    pub async fn resume_pending(&self) {
        let Ok(actions) = self.db(|s, _| s.actions()).await else { return };
        for a in actions.into_iter().filter(|a| a.status == ActionStatus::Pending) {
            info!(key = %a.key, "Resuming a pending action.");
            self.execute(a).await;
        }
    }

    async fn execute(&self, mut rec: ActionRecord) -> Option<Outcome> {
        let policy = self.lock().policies.iter().find(|p| p.name() == rec.policy).cloned();
        let Some(policy) = policy else {
            warn!(key = %rec.key, policy = %rec.policy, "Pending action of a policy no longer loaded; dropping it.");
            rec.status = ActionStatus::Failed;
            rec.outcome = Some(Outcome {
                status: OutcomeStatus::Failed,
                attempts: 0,
                remote_ids: vec![],
                message: "policy no longer loaded".into(),
            });
            let outcome = rec.outcome.clone();
            let _ = self.db(move |s, fence| s.put_action(fence, &rec)).await;
            return outcome;
        };
        self.shared.counters.actions.fetch_add(1, Ordering::Relaxed);
        let outcome = match &rec.action {
            Action::Resize { to, .. } => {
                let t = target_ref(&policy);
                self.shared.executor.resize(&t, *to, &rec.key, rec.dry_run).await
            }
            Action::StartJob { params } => {
                let rule = policy.doc.spec.retrain.iter().find(|r| r.name == rec.rule)?;
                let job = JobRef {
                    policy: policy.name().to_owned(),
                    rule: rule.name.clone(),
                    spec: rule.job.clone(),
                };
                self.shared.executor.start_job(&job, params, &rec.key, rec.dry_run).await
            }
            Action::None => return None,
        };
        rec.status = match (outcome.status, &rec.action) {
            (OutcomeStatus::Failed, _) => {
                self.shared.counters.action_failures.fetch_add(1, Ordering::Relaxed);
                ActionStatus::Failed
            }
            (OutcomeStatus::DryRun, _) => ActionStatus::DryRun,
            (_, Action::StartJob { .. }) => ActionStatus::Running,
            _ => ActionStatus::Applied,
        };
        rec.outcome = Some(outcome.clone());
        rec.updated = self.now();
        let key = rec.key.clone();
        if let Err(e) = self.db(move |s, fence| s.put_action(fence, &rec)).await {
            error!(error = %e, key = %key, "Cannot record an action outcome.");
        }
        Some(outcome)
    }

    /// One evaluation pass at `now`: every policy whose interval has come, give or take
    /// [`driver::DUE_SLACK`] (a tick that wakes a little early still evaluates a policy due at
    /// it).
    pub async fn tick(&self, now: u64) {
        let due: Vec<Arc<Policy>> = {
            let inner = self.lock();
            inner.policies.iter().filter(|p| inner.driver.is_due(p, now)).cloned().collect()
        };
        // What each evaluated policy leaves: its new state and the decisions to record, written
        // in one ledger commit at the end of the tick (one etcd transaction or fsync for every
        // policy due, not one each; the state an action changes was written before it acted).
        let mut evaluated: Vec<(Arc<Policy>, PolicyState, Vec<Decision>)> = Vec::new();
        for policy in due {
            let resizer = match Sizing::of(&policy) {
                Sizing::None | Sizing::Signal => None,
                Sizing::Resizer => {
                    match self.shared.executor.target_size(&target_ref(&policy)).await {
                        Ok(size) => {
                            let mut inner = self.lock();
                            inner.problems.remove(policy.name());
                            inner.sizes.insert(policy.name().to_owned(), size);
                            Some(size)
                        }
                        Err(e) => {
                            warn!(policy = policy.name(), error = %e, "Cannot read the current size.");
                            let why = format!("cannot read the current size: {e}");
                            let mut inner = self.lock();
                            inner.sizes.remove(policy.name());
                            let since = match inner.problems.get(policy.name()) {
                                Some((old, since)) if *old == why => *since,
                                _ => now,
                            };
                            inner.problems.insert(policy.name().to_owned(), (why, since));
                            None
                        }
                    }
                }
            };
            // The state is taken out of the map once and updated in place (evaluate would copy it
            // again).
            let mut state = self.lock().states.get(policy.name()).cloned().unwrap_or_default();
            let decisions =
                driver::evaluate(&policy, self.shared.source.as_ref(), &mut state, resizer, now);
            // Every action of this evaluation is recorded as pending together with the state it
            // changes (cooldown, budget) before any is sent: a writer that dies after sending
            // leaves both behind, so its successor resends the action under its key and keeps
            // the cooldown, instead of deciding again under a new key.
            let pending: Vec<ActionRecord> = decisions
                .iter()
                .filter(|d| d.action.is_some())
                .filter_map(|d| {
                    Some(ActionRecord {
                        key: d.key.clone()?,
                        time: d.time,
                        policy: d.policy.clone(),
                        rule: d.rule.clone(),
                        action: d.action.clone(),
                        dry_run: d.mode == Mode::DryRun,
                        status: ActionStatus::Pending,
                        outcome: None,
                        updated: now,
                        actuation: None,
                    })
                })
                .collect();
            if !pending.is_empty() {
                let (name, st, recs) = (policy.name().to_owned(), state.clone(), pending.clone());
                let written = self
                    .db(move |s, fence| s.commit_pending(fence, &[(name.as_str(), &st)], &recs));
                if let Err(e) = written.await {
                    // Nothing of this evaluation is kept: the next tick evaluates again.
                    error!(error = %e, policy = policy.name(), "Cannot record pending actions; not acting.");
                    continue;
                }
            }
            let mut pending = pending.into_iter();
            let mut recorded = Vec::new();
            for mut d in decisions {
                if d.action.is_some() && d.key.is_some() {
                    let Some(rec) = pending.next() else { continue };
                    d.outcome = self.execute(rec).await;
                }
                if d.could_act() {
                    recorded.push(d);
                }
            }
            evaluated.push((policy, state, recorded));
        }
        if !evaluated.is_empty() {
            self.record(evaluated, now).await;
        }
        self.poll_jobs(now).await;
    }

    /// Commits the states and decisions of one tick's evaluations, then takes them in memory.
    async fn record(&self, evaluated: Vec<(Arc<Policy>, PolicyState, Vec<Decision>)>, now: u64) {
        // The states and records go to the blocking pool and come back, not copied.
        let fence = self.shared.cfg.leadership.fence();
        let store = self.shared.store.clone();
        let committed = tokio::task::spawn_blocking(move || {
            let r = match fence {
                Some(fence) => {
                    let states: Vec<(&str, &PolicyState)> =
                        evaluated.iter().map(|(p, st, _)| (p.name(), st)).collect();
                    let decisions: Vec<Decision> =
                        evaluated.iter().flat_map(|(_, _, d)| d.iter().cloned()).collect();
                    store.commit(fence, &states, &decisions)
                }
                None => Err(LedgerError::NotLeader),
            };
            (evaluated, r)
        })
        .await;
        let evaluated = match committed {
            Ok((evaluated, Ok(()))) => evaluated,
            Ok((evaluated, Err(e))) => {
                error!(error = %e, policies = evaluated.len(), "Cannot persist policy states.");
                evaluated
            }
            Err(e) => {
                // The task panicked and took the states with it: keep those in memory.
                error!(error = %e, "Policy ledger task failed; states not persisted.");
                return;
            }
        };
        let mut inner = self.lock();
        for (policy, state, recorded) in evaluated {
            self.shared.counters.decisions.fetch_add(recorded.len() as u64, Ordering::Relaxed);
            inner.states.insert(policy.name().to_owned(), state);
            inner.driver.evaluated(&policy, now);
            for d in recorded {
                if let Some(x) = &self.shared.exporter {
                    x.offer(d.clone());
                }
                inner.last.insert((d.policy.clone(), d.rule.clone()), d);
            }
        }
    }

    async fn poll_jobs(&self, now: u64) {
        {
            let mut inner = self.lock();
            if now < inner.last_job_poll + nanos(self.shared.cfg.job_poll) {
                return;
            }
            inner.last_job_poll = now;
        }
        let Ok(actions) = self.db(|s, _| s.actions()).await else { return };
        for mut a in actions.into_iter().filter(|a| a.status == ActionStatus::Running) {
            let policy = self.lock().policies.iter().find(|p| p.name() == a.policy).cloned();
            let Some(rule) =
                policy.as_ref().and_then(|p| p.doc.spec.retrain.iter().find(|r| r.name == a.rule))
            else {
                continue;
            };
            let Some(id) = a.outcome.as_ref().and_then(|o| o.remote_ids.first().cloned()) else {
                continue;
            };
            let job =
                JobRef { policy: a.policy.clone(), rule: a.rule.clone(), spec: rule.job.clone() };
            let status = self.shared.executor.job_status(&job, &id).await;
            let timeout =
                rule.job.timeout.map(|t| t.get()).unwrap_or(Duration::from_secs(6 * 3600));
            let new = match status {
                JobStatus::Succeeded => ActionStatus::Succeeded,
                JobStatus::Failed { .. } => ActionStatus::JobFailed,
                _ if now > a.time + nanos(timeout) => ActionStatus::JobFailed,
                _ => ActionStatus::Running,
            };
            if new != a.status {
                a.status = new;
                a.updated = now;
                let _ = self.db(move |s, fence| s.put_action(fence, &a)).await;
            }
        }
    }

    /// Takes over as the writer with `fence`: the rule states (cooldowns, stabilization,
    /// budgets) are read back from the ledger, where the previous leader left them, and every
    /// pending action is sent again with its key.
    async fn take_over(&self, fence: Fence) {
        match self.db(|s, _| s.states()).await {
            Ok(states) => self.lock().states = states,
            Err(e) => {
                error!(error = %e, "Cannot read the rule states back; keeping those in memory.")
            }
        }
        info!(term = fence.0, "Leading: evaluating policies and acting.");
        self.resume_pending().await;
    }

    /// One tick of [`PolicyRuntime::run`]: evaluates while this collector leads, takes over
    /// when it has just come to lead; `led` is the term it last led with.
    async fn lead_tick(&self, led: &mut Option<Fence>) {
        let now_leading = self.shared.cfg.leadership.fence();
        if now_leading != *led {
            match now_leading {
                Some(fence) => self.take_over(fence).await,
                None => warn!("No longer leading: not evaluating or acting."),
            }
            *led = now_leading;
        }
        if led.is_some() {
            self.tick(self.now()).await;
        }
    }

    /// Runs until `shutdown`: evaluates every second while this collector leads, reloads on
    /// file change and, when configured, on SIGHUP.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut led = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut poll = tokio::time::interval(self.shared.cfg.reload_poll);
        #[cfg(unix)]
        let mut hup = if self.shared.cfg.reload_on_hup {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
        } else {
            None
        };
        loop {
            #[cfg(unix)]
            let hup_fut = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hup_fut = std::future::pending::<()>();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.lead_tick(&mut led).await,
                _ = poll.tick() => { self.reload_if_changed(); }
                _ = hup_fut => {
                    info!("SIGHUP: reloading policies.");
                    self.reload();
                }
            }
        }
    }

    /// Prometheus text for the runtime's counters.
    pub fn metrics_text(&self) -> String {
        let c = &self.shared.counters;
        let inner = self.lock();
        let mut s = String::new();
        for (name, help, v) in [
            (
                "stoker_policy_reloads_total",
                "Policy sets loaded.",
                c.reloads.load(Ordering::Relaxed),
            ),
            (
                "stoker_policy_reload_failures_total",
                "Policy reloads refused for errors (the last good set stays).",
                c.reload_failures.load(Ordering::Relaxed),
            ),
            (
                "stoker_policy_decisions_total",
                "Decision records written.",
                c.decisions.load(Ordering::Relaxed),
            ),
            (
                "stoker_policy_actions_total",
                "Actions sent to actuators.",
                c.actions.load(Ordering::Relaxed),
            ),
            (
                "stoker_policy_action_failures_total",
                "Actions that failed.",
                c.action_failures.load(Ordering::Relaxed),
            ),
            (
                "stoker_policy_log_records_dropped_total",
                "Decision log records dropped (queue full).",
                self.shared.exporter.as_ref().map(|e| e.dropped()).unwrap_or(0),
            ),
        ] {
            s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"));
        }
        s.push_str(&format!(
            "# HELP stoker_policy_config_errors Errors in the policy directory (0 = last load good).\n# TYPE stoker_policy_config_errors gauge\nstoker_policy_config_errors {}\n# HELP stoker_policies_loaded Policies in force.\n# TYPE stoker_policies_loaded gauge\nstoker_policies_loaded {}\n",
            inner.errors.len(),
            inner.policies.len()
        ));
        s
    }
}

/// The target of a policy, as the executor takes it.
pub fn target_ref(p: &Policy) -> TargetRef {
    let t = &p.doc.spec.target;
    TargetRef {
        policy: p.name().to_owned(),
        name: t.name.clone(),
        spec: t.resize_spec(),
        min: t.min,
        max: t.max,
    }
}
