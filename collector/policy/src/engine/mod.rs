//! The policy engine: a pure function from (policy, signals, state, now) to decisions and the
//! next state. No I/O and no clock: the live runtime, `policy test` and `policy replay` call
//! [`evaluate`] with their own [`SignalSource`] and their own notion of `now`.
//!
//! Scaling follows the Kubernetes HPA algorithm (target tracking with tolerance, stabilization
//! windows, rate policies) with Knative's panic mode, then our own cooldowns, budgets and
//! missing-data rule. Constraints apply in one fixed order, and every one is recorded in the
//! decision with its effect:
//! tolerance → panic → stabilization → forecast → rate limit → min/max → cooldown → budget →
//! missing data. A `scale.forecast` ([`super::forecast`]) adds a floor after stabilization.
//! A fitted `scale.model` ([`super::model`]) replaces the tracked metrics' recommendation
//! before the tolerance. With a ready count ([`evaluate_sized`]) ratios apply to the ready
//! replicas and a scale-out covered by warming replicas is held.
//!
//! Here live the decision and state types and the entry points; the rest has a room each:
//! `conditions.rs` (step and retraining conditions), `scale.rs` (the recommendation and each
//! constraint), `behavior.rs` (HPA's rate policies and their defaults) and `retrain.rs`.
//! What the engine shares with the modules it calls (inputs, reads, reference windows) lives
//! below it, in [`super::inputs`].

mod behavior;
mod conditions;
mod retrain;
mod scale;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::Policy;
use super::forecast::ForecastState;
use super::format::Mode;
use super::model::ModelState;
use super::signal::SignalSource;

pub use super::inputs::{DEFAULT_DRIFT_WINDOW, DEFAULT_WINDOW, InputValue, Reference, query, secs};
pub use conditions::eval_condition;

/// Default evaluation interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Default tolerance of target tracking (HPA's).
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// Default scale-down stabilization window (HPA's).
pub const DEFAULT_DOWN_STABILIZATION: Duration = Duration::from_secs(300);
/// Default retrain cooldown.
pub const DEFAULT_RETRAIN_COOLDOWN: Duration = Duration::from_secs(24 * 3600);
/// Default minimum observations in a drift or accuracy window.
pub const DEFAULT_MIN_SAMPLES: u64 = 100;
/// Default PSI threshold (the common "significant shift" rule of thumb, as in Evidently).
pub const DEFAULT_PSI: f64 = 0.2;
/// Default Jensen–Shannon distance threshold (Evidently's).
pub const DEFAULT_JS: f64 = 0.1;
/// Default p-value threshold of KS and chi-square tests.
pub const DEFAULT_P: f64 = 0.05;

/// Which kind of rule a decision is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    /// The policy's scaling (target tracking and step rules together).
    Scale,
    /// A retraining rule.
    Retrain,
}

/// A constraint applied to a recommendation, in the fixed order they apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Constraint {
    /// Ratio within the tolerance band keeps the size.
    Tolerance,
    /// Panic mode: fast scale-up, no scale-down.
    Panic,
    /// Stabilization windows.
    Stabilization,
    /// The load forecast's floor (or, forecast-only, what it would have done).
    Forecast,
    /// Rate policies.
    RateLimit,
    /// Target bounds.
    MinMax,
    /// Cooldown after an action.
    Cooldown,
    /// Action budget.
    Budget,
    /// Missing inputs.
    MissingData,
    /// A condition must hold `for` a while.
    For,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Tolerance => "tolerance",
            Self::Panic => "panic",
            Self::Stabilization => "stabilization",
            Self::Forecast => "forecast",
            Self::RateLimit => "rate limit",
            Self::MinMax => "min/max",
            Self::Cooldown => "cooldown",
            Self::Budget => "budget",
            Self::MissingData => "missing data",
            Self::For => "for",
        };
        f.write_str(s)
    }
}

/// One constraint's effect on the recommendation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConstraintEffect {
    /// Which constraint.
    pub constraint: Constraint,
    /// Desired size before it (scaling only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u32>,
    /// Desired size after it (scaling only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u32>,
    /// Whether it changed or blocked anything.
    pub changed: bool,
    /// What it did, as a sentence.
    pub detail: String,
}

/// What a decision does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Action {
    /// Nothing.
    None,
    /// Resize the target.
    Resize {
        /// Size before.
        from: u32,
        /// Size asked for.
        to: u32,
    },
    /// Start the rule's job with these template parameters.
    StartJob {
        /// Values for the job's `{{ name }}` placeholders.
        params: BTreeMap<String, String>,
    },
}

impl Action {
    /// Whether this acts at all.
    pub fn is_some(&self) -> bool {
        !matches!(self, Self::None)
    }
}

/// What the actuator reported for an action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Result.
    pub status: OutcomeStatus,
    /// Attempts made (retries included).
    pub attempts: u32,
    /// Remote ids (a workflow run, a pipeline, a Job name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ids: Vec<String>,
    /// Detail, such as an error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Result of an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeStatus {
    /// Applied.
    Applied,
    /// Applied earlier under the same idempotency key; nothing done twice.
    Duplicate,
    /// Dry run: the actuator checked it and changed nothing.
    DryRun,
    /// Failed after retries.
    Failed,
}

/// The record of one evaluation of one rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Evaluation time, Unix nanos.
    pub time: u64,
    /// Policy name.
    pub policy: String,
    /// Rule name (`scale` for the policy's scaling).
    pub rule: String,
    /// Scaling or retraining.
    pub kind: RuleKind,
    /// Enforce or dry-run.
    pub mode: Mode,
    /// Input values seen.
    pub inputs: Vec<InputValue>,
    /// Current size (scaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u32>,
    /// Raw recommendation before constraints (scaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<u32>,
    /// Whether the rule's condition holds (retraining; `None` when unknown for lack of data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<bool>,
    /// Constraints in the order applied, with their effect.
    pub constraints: Vec<ConstraintEffect>,
    /// The final action.
    pub action: Action,
    /// Why this action, or "no action because …".
    pub reason: String,
    /// Idempotency key of the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The actuator's outcome, filled in by the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

impl Decision {
    /// Whether this evaluation could have acted: something recommended a change or a
    /// condition held. Only these are worth recording.
    pub fn could_act(&self) -> bool {
        self.action.is_some()
            || self.condition == Some(true)
            || matches!((self.recommendation, self.current), (Some(r), Some(c)) if r != c)
    }
}

/// State of a condition with a `for` duration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConditionState {
    /// Since when the condition has held without a break.
    pub pending_since: Option<u64>,
    /// Whether it has held for its `for` duration.
    pub firing: bool,
}

/// A past scale action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleEvent {
    /// When.
    pub time: u64,
    /// Size before.
    pub from: u32,
    /// Size after.
    pub to: u32,
}

/// State of a policy's scaling.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScaleState {
    /// Past recommendations (after panic), for stabilization.
    pub recommendations: Vec<(u64, u32)>,
    /// Past scale actions, for rate limits, cooldowns and budget.
    pub events: Vec<ScaleEvent>,
    /// Panic mode lasts until this time.
    pub panic_until: Option<u64>,
    /// Step rules' condition state, by name.
    pub steps: BTreeMap<String, ConditionState>,
    /// The forecaster's state (`scale.forecast`).
    #[serde(default)]
    pub forecast: ForecastState,
    /// The queueing model's state (`scale.model`).
    #[serde(default)]
    pub model: ModelState,
}

/// State of a retraining rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrainState {
    /// The condition's state.
    pub condition: ConditionState,
    /// Start times of past runs, for cooldown and budget.
    pub runs: Vec<u64>,
}

/// Everything the engine remembers about one policy between evaluations. Persisted by the
/// runtime so cooldowns, stabilization and budgets survive restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    /// Scaling state.
    pub scale: ScaleState,
    /// Retraining rules' state, by name.
    pub retrain: BTreeMap<String, RetrainState>,
}

/// The output of one evaluation of one policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// One decision for scaling (when the policy scales) and one per retraining rule.
    pub decisions: Vec<Decision>,
    /// The state to pass to the next evaluation.
    pub state: PolicyState,
}

/// The evaluation interval of a policy.
pub fn interval(policy: &Policy) -> Duration {
    policy.doc.spec.interval.map(|d| d.get()).unwrap_or(DEFAULT_INTERVAL)
}

/// The current size read from the policy's `current: {from: signal}` signal, if it has one.
pub fn current_from_signal(policy: &Policy, source: &dyn SignalSource, now: u64) -> Option<u32> {
    let cur = policy.doc.spec.target.current.as_ref()?;
    let q = query(cur.signal.as_ref()?).ok()?;
    let v = crate::inputs::read(source, &q, now)?;
    (v >= 0.0).then(|| v.round() as u32)
}

/// Evaluates one policy at `now`. `current` is the target's size (from the actuator or
/// [`current_from_signal`]); `None` means unknown, which never acts.
pub fn evaluate(
    policy: &Policy,
    source: &dyn SignalSource,
    state: &PolicyState,
    current: Option<u32>,
    now: u64,
) -> Evaluation {
    let mut next = state.clone();
    let decisions = evaluate_in_place(policy, source, &mut next, current, now);
    Evaluation { decisions, state: next }
}

/// [`evaluate`] on a state the caller owns, updated in place: the same decisions and the same
/// next state, without copying the state (its stabilization history, a fitted forecast model)
/// at every evaluation. For callers that keep the state only to pass it to the next
/// evaluation (replay, benchmarks).
pub fn evaluate_in_place(
    policy: &Policy,
    source: &dyn SignalSource,
    state: &mut PolicyState,
    current: Option<u32>,
    now: u64,
) -> Vec<Decision> {
    evaluate_sized(policy, source, state, current, None, now)
}

/// [`evaluate_in_place`] with the target's ready count beside its provisioned size
/// (`current`), for resizers that report both. Signals reflect only ready replicas, so
/// target tracking, step rules and panic size on `ready` (HPA's treatment of unready pods,
/// for every signal): a metric asks for `ceil(ready × ratio)`, and a scale-out that the
/// replicas still warming (`current − ready`) already cover is held at `current` instead of
/// compounding on the provisioned size. `None` counts every provisioned replica as ready.
pub fn evaluate_sized(
    policy: &Policy,
    source: &dyn SignalSource,
    state: &mut PolicyState,
    current: Option<u32>,
    ready: Option<u32>,
    now: u64,
) -> Vec<Decision> {
    let mut decisions = Vec::with_capacity(
        usize::from(policy.doc.spec.scale.is_some()) + policy.doc.spec.retrain.len(),
    );
    if let Some(scale) = &policy.doc.spec.scale {
        decisions.push(scale::evaluate_scale(
            policy,
            scale,
            source,
            &mut state.scale,
            current,
            ready,
            now,
        ));
    }
    for rule in &policy.doc.spec.retrain {
        if !state.retrain.contains_key(&rule.name) {
            state.retrain.insert(rule.name.clone(), RetrainState::default());
        }
        if let Some(rs) = state.retrain.get_mut(&rule.name) {
            decisions.push(retrain::evaluate_retrain(policy, rule, source, rs, now));
        }
    }
    decisions
}

fn mode_of(policy: &Policy, over: Option<Mode>) -> Mode {
    over.unwrap_or(policy.doc.spec.mode)
}
