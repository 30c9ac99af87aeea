//! The values that cross the actuator boundary: what the policy engine passes in (bounds,
//! idempotency keys, job context) and what comes back into decision records (outcomes with
//! attempts, HTTP statuses, remote ids). All serde-serialisable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Everything that can go wrong while acting. Retry decisions hang off [`ActuateError::retryable`].
#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    /// The actuator's configuration (spec or collector config) is unusable.
    #[error("actuator configuration: {0}")]
    Config(String),
    /// A secret named by the configuration could not be read.
    #[error("secret `{name}`: {reason}")]
    Secret {
        /// Secret name in `[secrets.<name>]`.
        name: String,
        /// What went wrong (never the value).
        reason: String,
    },
    /// The remote answered with an HTTP error status.
    #[error("{method} {url} answered HTTP {status}: {body}")]
    Http {
        /// Request method.
        method: String,
        /// Request URL.
        url: String,
        /// Response status.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// The request did not complete: connection refused, reset, DNS.
    #[error("{method} {url}: {reason}")]
    Transport {
        /// Request method.
        method: String,
        /// Request URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The request or command took longer than its timeout.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being done.
        what: String,
        /// The limit.
        after: std::time::Duration,
    },
    /// The remote answered, but not in the shape its API documents.
    #[error("unexpected answer from {what}: {reason}")]
    Protocol {
        /// Which call.
        what: String,
        /// What did not fit.
        reason: String,
    },
    /// A job of the same policy and rule is still running; a second one is not started.
    #[error("job {running} of policy {policy} rule {rule} is still running")]
    JobBusy {
        /// Policy name.
        policy: String,
        /// Rule name.
        rule: String,
        /// Idempotency key of the running job.
        running: String,
    },
    /// A `{{ name }}` placeholder has no value in the decision context.
    #[error("template: {0}")]
    Template(String),
    /// A local process could not be started or stopped.
    #[error("process `{program}`: {reason}")]
    Process {
        /// Program.
        program: String,
        /// What happened.
        reason: String,
    },
    /// The actions journal could not be read or written.
    #[error("actions journal: {0}")]
    Journal(String),
    /// A previous attempt with this key was sent but its outcome is unknown and cannot be
    /// established without risking a second action.
    #[error("outcome of {key} unknown after a restart: {reason}")]
    Indeterminate {
        /// Idempotency key.
        key: String,
        /// Why it cannot be settled.
        reason: String,
    },
    /// The action failed for good; `attempts` is every try, for the decision record.
    #[error("{source} (after {} tries)", attempts.len())]
    Failed {
        /// Every try.
        attempts: Vec<AttemptRecord>,
        /// The last error.
        #[source]
        source: Box<ActuateError>,
    },
    /// This actuator cannot do that (for example read the size of a command target that was
    /// never resized).
    #[error("{0}")]
    Unsupported(String),
}

impl From<stoker_policy::template::TemplateError> for ActuateError {
    fn from(e: stoker_policy::template::TemplateError) -> Self {
        ActuateError::Template(e.0)
    }
}

impl ActuateError {
    /// Whether trying again may help: 5xx, 429, timeouts and connection errors, never other 4xx.
    pub fn retryable(&self) -> bool {
        match self {
            ActuateError::Http { status, .. } => *status >= 500 || *status == 429,
            ActuateError::Transport { .. } | ActuateError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The tries made, when the action failed for good ([`ActuateError::Failed`]); empty
    /// otherwise. For the decision record.
    pub fn attempts(&self) -> &[AttemptRecord] {
        match self {
            ActuateError::Failed { attempts, .. } => attempts,
            _ => &[],
        }
    }

    /// The HTTP status, when the remote answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ActuateError::Http { status, .. } => Some(*status),
            ActuateError::Failed { source, .. } => source.status(),
            _ => None,
        }
    }
}

/// The size a target reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleState {
    /// Desired/target size as the remote holds it (`spec.replicas`, `DesiredCapacity`,
    /// `targetSize`, supervised local replicas).
    pub replicas: u32,
    /// How many are actually up, where the remote says (`status.replicas`, running processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<u32>,
    /// The remote's own lower limit (an Auto Scaling group's `MinSize`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_min: Option<u32>,
    /// The remote's own upper limit (an Auto Scaling group's `MaxSize`, a port range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_max: Option<u32>,
    /// Optimistic-concurrency token (Kubernetes `resourceVersion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The policy target's limits; an actuator never sets a size outside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    /// Smallest size.
    pub min: u32,
    /// Largest size.
    pub max: u32,
}

/// A clamp applied to the requested size, recorded in the outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clamp {
    /// What was asked for.
    pub requested: u32,
    /// What was applied.
    pub applied: u32,
    /// Which limit: `policy min`, `policy max`, `remote min`, `remote max`.
    pub reason: String,
}

impl Bounds {
    /// Clamp `desired` into `[min, max]`, saying so when it changed. When `min > max` (a bad
    /// policy the engine should have refused) `max` wins: never above the ceiling.
    pub fn clamp(&self, desired: u32) -> (u32, Option<Clamp>) {
        if desired > self.max {
            (
                self.max,
                Some(Clamp { requested: desired, applied: self.max, reason: "policy max".into() }),
            )
        } else if desired < self.min {
            let applied = self.min.min(self.max);
            (applied, Some(Clamp { requested: desired, applied, reason: "policy min".into() }))
        } else {
            (desired, None)
        }
    }

    /// Narrow these bounds by the limits the remote reports (never widen them).
    pub fn narrowed_by(&self, state: &ScaleState) -> (Bounds, bool) {
        let mut b = *self;
        let mut narrowed = false;
        if let Some(rmax) = state.remote_max {
            if rmax < b.max {
                b.max = rmax;
                narrowed = true;
            }
        }
        if let Some(rmin) = state.remote_min {
            if rmin > b.min {
                b.min = rmin.min(b.max);
                narrowed = true;
            }
        }
        (b, narrowed)
    }
}

/// Identifies one intended action so that it is applied at most once, across retries and
/// collector restarts. Deterministic from policy, rule and decision time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key of the decision `policy`/`rule` made at `decision_time_ns` (Unix nanoseconds).
    pub fn new(policy: &str, rule: &str, decision_time_ns: u64) -> Self {
        Self(format!("{policy}/{rule}/{decision_time_ns}"))
    }

    /// A key from its text form (as stored in a record).
    pub fn from_raw(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `len` lowercase hex digits of the key's SHA-256: stable, DNS-label safe, for remote
    /// names (Kubernetes Job names).
    pub fn short_hash(&self, len: usize) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        let mut hex = hex::encode(digest);
        hex.truncate(len.min(64));
        hex
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One try of one request, as recorded in an outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// `METHOD URL` (no secrets: they live in headers, which are not recorded).
    pub request: String,
    /// HTTP status, when there was an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The error, when the try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Backoff waited before this try, in milliseconds.
    pub delay_ms: u64,
}

/// A request exactly as it would be sent, secrets redacted: the dry-run log and record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRequest {
    /// HTTP method, or `exec` for a command.
    pub method: String,
    /// URL, or the command's argv joined by spaces.
    pub url: String,
    /// Headers (or environment), secret values replaced by `<redacted>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Body as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// What a resize did, for the decision record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeOutcome {
    /// Idempotency key.
    pub key: IdempotencyKey,
    /// Which actuator (`kubernetes`, `aws-asg`, ...).
    pub actuator: String,
    /// The target, as the actuator names it (`infer/deployment/resnet`).
    pub target: String,
    /// What the decision asked for.
    pub requested: u32,
    /// The size set (after clamping).
    pub applied: u32,
    /// The clamp, when one applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamp: Option<Clamp>,
    /// Size before acting, when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u32>,
    /// Size read back after acting, when the actuator reads back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u32>,
    /// Whether a change was sent (false for no-ops, dry-runs and replays).
    pub changed: bool,
    /// Dry-run: nothing was sent; `planned` holds what would have been.
    pub dry_run: bool,
    /// This outcome was recorded earlier under the same key and is returned again.
    pub replayed: bool,
    /// A previous attempt under this key was interrupted (crash) and was settled by re-reading.
    pub recovered: bool,
    /// Every try of every request, in order.
    pub attempts: Vec<AttemptRecord>,
    /// The mutating requests (as sent, or as they would be in a dry-run).
    pub planned: Vec<PlannedRequest>,
    /// Remote id of the change (a GCP operation name, an AWS request id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    /// Anything worth telling (read-back differs, conflicts retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The decision behind a job, as a string map for templating (`{{ reason }}`) and for a
/// command's environment. `policy` and `rule` are always present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobContext {
    /// Policy name.
    pub policy: String,
    /// Rule name.
    pub rule: String,
    /// Everything else: `reason`, `model_name`, `model_version`, input values.
    pub values: BTreeMap<String, String>,
}

impl JobContext {
    /// A context for `policy`/`rule` with no values yet.
    pub fn new(policy: impl Into<String>, rule: impl Into<String>) -> Self {
        Self { policy: policy.into(), rule: rule.into(), values: BTreeMap::new() }
    }

    /// Add a value.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.values.insert(name.into(), value.into());
        self
    }

    /// All variables for templating: the values plus `policy` and `rule`.
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut vars = self.values.clone();
        vars.insert("policy".into(), self.policy.clone());
        vars.insert("rule".into(), self.rule.clone());
        vars
    }
}

/// Where a job started: enough to poll it, also after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobHandle {
    /// Idempotency key (the journal's key for the job).
    pub key: IdempotencyKey,
    /// Which actuator.
    pub actuator: String,
    /// Remote id (workflow run id, pipeline id, Job name, pid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    /// Link for people (run URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Dry-run: nothing started.
    pub dry_run: bool,
}

/// A job's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Accepted by the remote, not yet running (queued).
    Started,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished unsuccessfully (or could not be started).
    Failed,
    /// Ran longer than the job's timeout.
    TimedOut,
}

impl JobState {
    /// Whether the job is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::TimedOut)
    }
}

/// A job's state as last seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Idempotency key.
    pub key: IdempotencyKey,
    /// Lifecycle state.
    pub state: JobState,
    /// Remote detail (`conclusion: failure`, exit status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Remote id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    /// Link for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Captured output (commands), bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// When it started, Unix nanoseconds.
    pub started_ns: u64,
    /// When it ended, Unix nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ns: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_says_why() {
        let b = Bounds { min: 2, max: 10 };
        assert_eq!(b.clamp(5), (5, None));
        assert_eq!(b.clamp(50).0, 10);
        assert_eq!(b.clamp(50).1.map(|c| c.reason), Some("policy max".into()));
        assert_eq!(b.clamp(0).0, 2);
        let state = ScaleState {
            replicas: 3,
            remote_max: Some(8),
            remote_min: Some(3),
            ..Default::default()
        };
        let (n, narrowed) = b.narrowed_by(&state);
        assert!(narrowed);
        assert_eq!(n, Bounds { min: 3, max: 8 });
    }

    #[test]
    fn keys_are_deterministic_and_dns_safe() {
        let a = IdempotencyKey::new("resnet", "drift", 42);
        assert_eq!(a, IdempotencyKey::new("resnet", "drift", 42));
        assert_ne!(a.short_hash(10), IdempotencyKey::new("resnet", "drift", 43).short_hash(10));
        assert!(a.short_hash(10).chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
