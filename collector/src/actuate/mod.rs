//! Actuators: how a decision reaches the world. Resizers change the size of a target
//! (Kubernetes scale subresource, AWS Auto Scaling group, GCP managed instance group, local
//! replicas, a command or a webhook); job runners start model-refresh jobs (GitHub Actions,
//! GitLab pipelines, Kubernetes Jobs, webhooks, commands).
//!
//! [`spec`] holds the policy-facing configuration of each actuator: the sections a policy's
//! `target` and `job` carry. Secrets are never part of it; a spec names a secret that the
//! collector's configuration provides from the environment or a file ([`secrets`]).
//!
//! Every actuator goes through the same safety rails, built once here rather than per backend:
//! - [`journaled::JournaledResizer`] and [`journaled::JournaledJobRunner`] write the
//!   [`journal`] before sending and after the outcome, so a retry after a crash does not apply
//!   twice; they clamp to min/max and honour dry-run (log the exact request, send nothing);
//! - [`retry`] retries 5xx, timeouts and connection errors with exponential backoff and jitter,
//!   never 4xx;
//! - [`http`] renders each request once, for sending and for the dry-run log, with secrets
//!   redacted.

pub mod aws;
pub mod command;
pub mod config;
pub mod gcp;
pub mod github;
pub mod gitlab;
pub mod http;
pub mod journal;
pub mod journaled;
pub mod kubernetes;
pub mod local;
pub mod retry;
pub mod secrets;
pub use stoker_policy::spec;
pub use stoker_policy::template;
pub mod types;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use config::{ActuateEnv, ActuatorsConfig};
pub use journal::{ActionKind, ActionState, Actuation, Journal};
pub use secrets::{Secret, SecretSource, Secrets, SecretsConfig};
pub use types::{
    ActuateError, AttemptRecord, Bounds, Clamp, IdempotencyKey, JobContext, JobHandle, JobState,
    JobStatus, PlannedRequest, ResizeOutcome, ScaleState,
};

use spec::{JobActuator, JobSpec, ResizeActuator, ResizeSpec};

/// A boxed, sendable future returned by actuator traits (the traits are used as `dyn`).
pub type ActFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ActuateError>> + Send + 'a>>;

/// Changes the size of one target. Built by [`build_resizer`]; every implementation returned
/// there journals, clamps and honours dry-run.
pub trait Resizer: Send + Sync {
    /// What the target reports now (one read, with retries).
    fn current(&self) -> ActFuture<'_, ScaleState>;

    /// Resize to `desired`, clamped to `bounds`. `key` makes the call idempotent: a second call
    /// with the same key (in this process or after a restart) does not act again. With
    /// `dry_run` nothing is sent: the outcome carries the request that would have been.
    fn resize<'a>(
        &'a self,
        desired: u32,
        bounds: Bounds,
        key: &'a IdempotencyKey,
        dry_run: bool,
    ) -> ActFuture<'a, ResizeOutcome>;

    /// Stop whatever this actuator runs itself (local replicas); a no-op for remote targets.
    fn shutdown(&self) -> ActFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// Starts model-refresh jobs and follows them to completion. Built by [`build_job_runner`].
pub trait JobRunner: Send + Sync {
    /// Start a job for this decision. Idempotent per `key`; refuses with
    /// [`ActuateError::JobBusy`] while another job of the same policy and rule is running.
    fn start<'a>(
        &'a self,
        ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        dry_run: bool,
    ) -> ActFuture<'a, JobHandle>;

    /// The job's state now; persisted, so `/api/v1/actions` and a restarted collector see it.
    fn poll<'a>(&'a self, handle: &'a JobHandle) -> ActFuture<'a, JobStatus>;
}

/// Build the resizer a policy target names. Fails (without I/O) when the spec is invalid or a
/// cluster/secret it names is not configured.
pub fn build_resizer(
    spec: &ResizeSpec,
    target_name: &str,
    env: &ActuateEnv,
) -> Result<Arc<dyn Resizer>, ActuateError> {
    let problems = spec.validate();
    if let Some(p) = problems.first() {
        return Err(ActuateError::Config(format!("{}: {}", p.path, p.message)));
    }
    let missing = |s: &str| ActuateError::Config(format!("missing `{s}` section"));
    let resizer: Arc<dyn Resizer> = match spec.actuator {
        Some(ResizeActuator::Kubernetes) => {
            let k = spec.kubernetes.as_ref().ok_or_else(|| missing("kubernetes"))?;
            let backend = kubernetes::KubernetesScaler::new(k, env)?;
            Arc::new(journaled::JournaledResizer::new(backend, target_name, env))
        }
        Some(ResizeActuator::AwsAsg) => {
            let a = spec.aws.as_ref().ok_or_else(|| missing("aws"))?;
            let backend = aws::AsgScaler::new(a, env)?;
            Arc::new(journaled::JournaledResizer::new(backend, target_name, env))
        }
        Some(ResizeActuator::GcpMig) => {
            let g = spec.gcp.as_ref().ok_or_else(|| missing("gcp"))?;
            let backend = gcp::MigScaler::new(g, env)?;
            Arc::new(journaled::JournaledResizer::new(backend, target_name, env))
        }
        Some(ResizeActuator::Local) => {
            let l = spec.local.as_ref().ok_or_else(|| missing("local"))?;
            let backend = local::LocalReplicaSet::new(l.clone(), target_name, env.http.clone());
            Arc::new(journaled::JournaledResizer::new(backend, target_name, env))
        }
        Some(ResizeActuator::Command) => {
            let c = spec.command.as_ref().ok_or_else(|| missing("command"))?;
            let backend = command::CommandScaler::new(c.clone(), target_name);
            Arc::new(journaled::JournaledResizer::new(backend, target_name, env))
        }
        Some(ResizeActuator::Webhook) => {
            let w = spec.webhook.as_ref().ok_or_else(|| missing("webhook"))?;
            let backend = webhook::WebhookScaler::new(w.clone(), target_name, env)?;
            Arc::new(journaled::JournaledResizer::new(backend, target_name, env))
        }
        None => return Err(ActuateError::Config("missing `actuator`".into())),
    };
    Ok(resizer)
}

/// Build the job runner a retraining rule's `job` names.
pub fn build_job_runner(
    spec: &JobSpec,
    env: &ActuateEnv,
) -> Result<Arc<dyn JobRunner>, ActuateError> {
    let problems = spec.validate();
    if let Some(p) = problems.first() {
        return Err(ActuateError::Config(format!("{}: {}", p.path, p.message)));
    }
    let missing = |s: &str| ActuateError::Config(format!("missing `{s}` section"));
    let timeout = spec.timeout.map(|d| d.get()).unwrap_or(std::time::Duration::from_secs(6 * 3600));
    let runner: Arc<dyn JobRunner> = match spec.actuator {
        Some(JobActuator::GithubWorkflow) => {
            let g = spec.github.as_ref().ok_or_else(|| missing("github"))?;
            Arc::new(journaled::JournaledJobRunner::new(
                github::GithubDispatcher::new(g.clone(), env)?,
                timeout,
                env,
            ))
        }
        Some(JobActuator::GitlabPipeline) => {
            let g = spec.gitlab.as_ref().ok_or_else(|| missing("gitlab"))?;
            Arc::new(journaled::JournaledJobRunner::new(
                gitlab::GitlabTrigger::new(g.clone(), env)?,
                timeout,
                env,
            ))
        }
        Some(JobActuator::KubernetesJob) => {
            let k = spec.kubernetes.as_ref().ok_or_else(|| missing("kubernetes"))?;
            Arc::new(journaled::JournaledJobRunner::new(
                kubernetes::KubernetesJobLauncher::new(k.clone(), env)?,
                timeout,
                env,
            ))
        }
        Some(JobActuator::Webhook) => {
            let w = spec.webhook.as_ref().ok_or_else(|| missing("webhook"))?;
            Arc::new(journaled::JournaledJobRunner::new(
                webhook::WebhookJob::new(w.clone(), env)?,
                timeout,
                env,
            ))
        }
        Some(JobActuator::Command) => {
            let c = spec.command.as_ref().ok_or_else(|| missing("command"))?;
            Arc::new(journaled::JournaledJobRunner::new(
                command::CommandJob::new(c.clone(), env),
                timeout,
                env,
            ))
        }
        None => return Err(ActuateError::Config("missing `actuator`".into())),
    };
    Ok(runner)
}
