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

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::Policy;
use super::drift;
use super::forecast::{ForecastState, step_forecast};
use super::format::ForecastMode;
use super::format::{
    Condition, DirectionBehavior, MissingData, Mode, RateKind, RatePolicy, RetrainRule, ScaleSpec,
    SelectPolicy, StepChange, TrackedMetric,
};
use super::inputs::{fmt_time, read, reference_window};
use super::model::{self, ModelState, step_model};
use super::signal::{Selector, SignalQuery, SignalSource, Stat, nanos};

pub use super::inputs::{DEFAULT_DRIFT_WINDOW, DEFAULT_WINDOW, InputValue, Reference, query, secs};

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
    let v = source.read(&q, now).ok().flatten()?;
    (v.is_finite() && v >= 0.0).then(|| v.round() as u32)
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
        decisions.push(evaluate_scale(
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
            decisions.push(evaluate_retrain(policy, rule, source, rs, now));
        }
    }
    decisions
}

fn ceil_u32(x: f64) -> u32 {
    if !x.is_finite() || x <= 0.0 {
        0
    } else if x >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        // A tiny epsilon keeps 4.0000000001 (float noise) from becoming 5.
        (x - 1e-9).ceil().max(0.0) as u32
    }
}

/// Ratio of a tracked metric's value to its target, relative to the current size.
fn usage_ratio(m: &TrackedMetric, value: f64, current: u32) -> f64 {
    match (m.target.value, m.target.average_value) {
        (Some(t), _) => value / t,
        (None, Some(t)) => value / (t * f64::from(current.max(1))),
        (None, None) => 1.0,
    }
}

fn apply_step(change: &StepChange, current: u32) -> u32 {
    if let Some(to) = change.to {
        return to;
    }
    let delta = if let Some(p) = change.pods {
        p
    } else if let Some(pc) = change.percent {
        let d = f64::from(current) * pc / 100.0;
        (if d >= 0.0 { d.ceil() } else { d.floor() }) as i64
    } else {
        0
    };
    (i64::from(current) + delta).clamp(0, i64::from(u32::MAX)) as u32
}

fn default_up() -> DirectionBehavior {
    DirectionBehavior {
        stabilization_window: Some(Duration::ZERO.into()),
        policies: Some(vec![
            RatePolicy {
                kind: RateKind::Percent,
                value: 100.0,
                period: Duration::from_secs(15).into(),
            },
            RatePolicy { kind: RateKind::Pods, value: 4.0, period: Duration::from_secs(15).into() },
        ]),
        select: Some(SelectPolicy::Max),
    }
}

fn default_down() -> DirectionBehavior {
    DirectionBehavior {
        stabilization_window: Some(DEFAULT_DOWN_STABILIZATION.into()),
        policies: Some(vec![RatePolicy {
            kind: RateKind::Percent,
            value: 100.0,
            period: Duration::from_secs(15).into(),
        }]),
        select: Some(SelectPolicy::Max),
    }
}

/// A direction's behaviour with HPA defaults for whatever is not written.
fn behavior(scale: &ScaleSpec, up: bool) -> (Duration, Vec<RatePolicy>, SelectPolicy) {
    let written = scale
        .behavior
        .as_ref()
        .and_then(|b| if up { b.scale_up.clone() } else { b.scale_down.clone() });
    let d = if up { default_up() } else { default_down() };
    let w = written.clone().unwrap_or_default();
    (
        w.stabilization_window.or(d.stabilization_window).map(|x| x.get()).unwrap_or_default(),
        w.policies.or(d.policies).unwrap_or_default(),
        w.select.or(d.select).unwrap_or(SelectPolicy::Max),
    )
}

fn effect(c: Constraint, before: u32, after: u32, detail: impl Into<String>) -> ConstraintEffect {
    ConstraintEffect {
        constraint: c,
        before: Some(before),
        after: Some(after),
        changed: before != after,
        detail: detail.into(),
    }
}

/// HPA's scale-up limit over the rate policies (`calculateScaleUpLimitWithScalingRules`).
fn scale_up_limit(
    current: u32,
    events: &[ScaleEvent],
    policies: &[RatePolicy],
    select: SelectPolicy,
    now: u64,
) -> u32 {
    if select == SelectPolicy::Disabled {
        return current;
    }
    let mut limits = Vec::new();
    for p in policies {
        let cutoff = now.saturating_sub(nanos(p.period.get()));
        let added: i64 = events
            .iter()
            .filter(|e| e.time > cutoff && e.to > e.from)
            .map(|e| i64::from(e.to) - i64::from(e.from))
            .sum();
        let start = (i64::from(current) - added).max(0) as f64;
        let limit = match p.kind {
            RateKind::Pods => start + p.value,
            RateKind::Percent => (start * (1.0 + p.value / 100.0)).ceil(),
        };
        limits.push(limit);
    }
    let pick = match select {
        SelectPolicy::Min => limits.iter().copied().fold(f64::INFINITY, f64::min),
        _ => limits.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    if pick.is_finite() { pick.clamp(0.0, f64::from(u32::MAX)) as u32 } else { u32::MAX }
}

/// HPA's scale-down limit (`calculateScaleDownLimitWithBehaviors`).
fn scale_down_limit(
    current: u32,
    events: &[ScaleEvent],
    policies: &[RatePolicy],
    select: SelectPolicy,
    now: u64,
) -> u32 {
    if select == SelectPolicy::Disabled {
        return current;
    }
    let mut limits = Vec::new();
    for p in policies {
        let cutoff = now.saturating_sub(nanos(p.period.get()));
        let removed: i64 = events
            .iter()
            .filter(|e| e.time > cutoff && e.to < e.from)
            .map(|e| i64::from(e.from) - i64::from(e.to))
            .sum();
        let start = (i64::from(current) + removed) as f64;
        let limit = match p.kind {
            RateKind::Pods => start - p.value,
            RateKind::Percent => (start * (1.0 - p.value / 100.0)).trunc(),
        };
        limits.push(limit);
    }
    // Max selects the policy allowing the biggest change: the lowest limit.
    let pick = match select {
        SelectPolicy::Min => limits.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        _ => limits.iter().copied().fold(f64::INFINITY, f64::min),
    };
    if pick.is_finite() { pick.clamp(0.0, f64::from(u32::MAX)) as u32 } else { 0 }
}

fn mode_of(policy: &Policy, over: Option<Mode>) -> Mode {
    over.unwrap_or(policy.doc.spec.mode)
}

fn evaluate_scale(
    policy: &Policy,
    scale: &ScaleSpec,
    source: &dyn SignalSource,
    st: &mut ScaleState,
    current: Option<u32>,
    ready: Option<u32>,
    now: u64,
) -> Decision {
    let mode = mode_of(policy, scale.mode);
    let target = &policy.doc.spec.target;
    let mut d = Decision {
        time: now,
        policy: policy.name().to_owned(),
        rule: "scale".to_owned(),
        kind: RuleKind::Scale,
        mode,
        // Sized once: an input per metric and step condition plus the forecast; one effect
        // per constraint.
        inputs: Vec::with_capacity(scale.metrics.len() + scale.steps.len() + 1),
        current,
        recommendation: None,
        condition: None,
        constraints: Vec::with_capacity(9),
        action: Action::None,
        reason: String::new(),
        key: None,
        outcome: None,
    };
    let tolerance = scale.tolerance.unwrap_or(DEFAULT_TOLERANCE);
    let mut missing = Vec::new();
    let mut raw: Option<u32> = None;
    let mut tolerated: Option<u32> = None;
    let mut tol_notes = Vec::new();
    // The replicas the signals reflect, and those still warming on top of them.
    let base = current.map(|c| ready.map_or(c, |r| r.min(c)));
    // A recommendation from the ready count: a scale-out that the warming replicas cover is
    // held at the provisioned size.
    let covered = |r: u32| match (current, base) {
        (Some(c), Some(b)) if b < c && r > b && r <= c => c,
        _ => r,
    };

    // Step rules update their condition state whatever the current size.
    let mut step_recs = Vec::new();
    for step in &scale.steps {
        // Looked up before inserting, so the name is not copied at every evaluation.
        if !st.steps.contains_key(&step.name) {
            st.steps.insert(step.name.clone(), ConditionState::default());
        }
        let Some(cs) = st.steps.get_mut(&step.name) else { continue };
        let mut inputs = Vec::new();
        let holds = eval_condition(&step.when, source, now, &mut inputs);
        let hold_for = step.hold_for.map(|h| h.get()).unwrap_or_default();
        update_condition(cs, holds, hold_for, now);
        if holds.is_none() {
            missing.push(step.name.clone());
        }
        let rec = match (cs.firing, base) {
            (true, Some(b)) => Some(covered(apply_step(&step.change, b))),
            _ => None,
        };
        for mut i in inputs {
            i.name = format!("{}: {}", step.name, i.name);
            i.recommends = rec;
            d.inputs.push(i);
        }
        if let Some(r) = rec {
            step_recs.push(r);
        }
    }

    let (Some(cur), Some(base)) = (current, base) else {
        d.reason = "no action because the current size is unknown".to_owned();
        return d;
    };
    if base < cur {
        d.inputs.push(InputValue {
            name: "ready replicas".to_owned(),
            query: "resizer".to_owned(),
            value: Some(f64::from(base)),
            against: format!("{} of {cur} provisioned still warming", cur - base),
            recommends: None,
            version: None,
        });
    }

    // The forecast is made (and earlier ones scored) whatever the reactive inputs say.
    let forecast = scale.forecast.as_ref().map(|fc| {
        let f = step_forecast(fc, source, &mut st.forecast, now);
        d.inputs.push(f.input.clone());
        (fc.mode, f)
    });

    // The queueing model learns at every evaluation; once fitted it sizes the target in
    // place of the tracked metrics' ratios.
    let model_rec = scale.model.as_ref().and_then(|m| {
        let upper = target.max.max(target.min);
        let s = step_model(m, source, &mut st.model, cur, base, upper, now);
        d.inputs.push(s.input);
        s.replicas
    });

    // Each tracked metric's query is built once; the panic window reads it again below.
    let mut queries: Vec<Option<SignalQuery>> = Vec::with_capacity(scale.metrics.len());
    for m in &scale.metrics {
        let q = match query(&m.signal) {
            Ok(q) => q,
            Err(e) => {
                missing.push(format!("{} ({e})", m.name));
                queries.push(None);
                continue;
            }
        };
        let value = read(source, &q, now);
        let against = match (m.target.value, m.target.average_value) {
            (Some(v), _) => format!("target {v}"),
            (_, Some(v)) => format!("average target {v}"),
            _ => String::new(),
        };
        let rec = value.map(|v| {
            let ratio = usage_ratio(m, v, base);
            let r = covered(ceil_u32(f64::from(base.max(1)) * ratio));
            let t = if r == cur {
                cur
            } else if (ratio - 1.0).abs() <= tolerance {
                if r != cur {
                    tol_notes.push(format!("{} ratio {ratio:.3} within ±{tolerance}", m.name));
                }
                cur
            } else {
                r
            };
            (r, t)
        });
        if value.is_none() {
            missing.push(m.name.clone());
        }
        d.inputs.push(InputValue {
            name: m.name.clone(),
            query: q.to_string(),
            value,
            against,
            recommends: rec.map(|r| r.0),
            version: None,
        });
        queries.push(Some(q));
        if let Some((r, t)) = rec {
            raw = Some(raw.map_or(r, |x: u32| x.max(r)));
            tolerated = Some(tolerated.map_or(t, |x: u32| x.max(t)));
        }
    }
    if let Some(r) = model_rec {
        raw = Some(r);
        tolerated = Some(r);
        tol_notes.clear();
    }
    for r in &step_recs {
        raw = Some(raw.map_or(*r, |x| x.max(*r)));
        tolerated = Some(tolerated.map_or(*r, |x| x.max(*r)));
    }
    d.recommendation = raw;

    let freeze = !missing.is_empty() && scale.on_missing_data == MissingData::Freeze;
    // Outside the bounds (a target with no replicas yet has no data either), the bounds apply
    // whatever the inputs say, as HPA's minReplicas and maxReplicas do: below `min` the target
    // is raised to it, above `max` lowered to it.
    let upper = target.max.max(target.min);
    let bound = if cur < target.min {
        Some(target.min)
    } else if cur > upper {
        Some(upper)
    } else {
        None
    };
    let Some(raw_rec) = raw.or(bound) else {
        let why = if missing.is_empty() {
            "no action because no rule recommends a size".to_owned()
        } else {
            format!("no action because of missing data: {}", missing.join(", "))
        };
        if !missing.is_empty() {
            d.constraints.push(ConstraintEffect {
                constraint: Constraint::MissingData,
                before: Some(cur),
                after: Some(cur),
                changed: true,
                detail: format!("no data for {}", missing.join(", ")),
            });
        }
        d.reason = why;
        return d;
    };

    // 1. Tolerance.
    let mut desired = tolerated.unwrap_or(raw_rec);
    d.constraints.push(effect(
        Constraint::Tolerance,
        raw_rec,
        desired,
        if tol_notes.is_empty() {
            format!("±{tolerance}: no metric within the band")
        } else {
            tol_notes.join("; ")
        },
    ));

    // 2. Panic.
    if let Some(panic) = &scale.panic {
        let window = panic.window.map(|w| w.get()).unwrap_or(Duration::from_secs(6));
        let threshold = panic.threshold.unwrap_or(2.0);
        let hold = panic.hold.map(|h| h.get()).unwrap_or(Duration::from_secs(60));
        let mut panic_rec: Option<u32> = None;
        for (m, q) in scale.metrics.iter().zip(queries.iter_mut()) {
            let Some(q) = q else { continue };
            q.window = window;
            if let Some(v) = read(source, q, now) {
                let r = covered(ceil_u32(f64::from(base.max(1)) * usage_ratio(m, v, base)));
                panic_rec = Some(panic_rec.map_or(r, |x| x.max(r)));
            }
        }
        let before = desired;
        if let Some(pr) = panic_rec {
            if f64::from(pr) >= threshold * f64::from(cur.max(1)) {
                st.panic_until = Some(now.saturating_add(nanos(hold)));
            }
        }
        let panicking = st.panic_until.is_some_and(|u| now < u);
        if panicking {
            desired = desired.max(panic_rec.unwrap_or(0)).max(cur);
        } else {
            st.panic_until = None;
        }
        d.constraints.push(effect(
            Constraint::Panic,
            before,
            desired,
            match (panicking, panic_rec) {
                (true, pr) => format!(
                    "panicking until {}: short-window ({}) recommendation {}, no scale-down",
                    st.panic_until.map(fmt_time).unwrap_or_default(),
                    humantime::format_duration(window),
                    pr.map(|p| p.to_string()).unwrap_or_else(|| "none".into())
                ),
                (false, Some(pr)) => {
                    format!("short-window recommendation {pr} below {threshold}× current")
                }
                (false, None) => "no short-window data".to_owned(),
            },
        ));
    }

    // 3. Stabilization (HPA's stabilizeRecommendationWithBehaviors).
    let (up_window, up_policies, up_select) = behavior(scale, true);
    let (down_window, down_policies, down_select) = behavior(scale, false);
    {
        let before = desired;
        let up_cut = now.saturating_sub(nanos(up_window));
        let down_cut = now.saturating_sub(nanos(down_window));
        let mut up_rec = desired;
        let mut down_rec = desired;
        for &(t, r) in &st.recommendations {
            if t > up_cut {
                up_rec = up_rec.min(r);
            }
            if t > down_cut {
                down_rec = down_rec.max(r);
            }
        }
        st.recommendations.push((now, desired));
        let keep = now.saturating_sub(nanos(up_window.max(down_window)));
        st.recommendations.retain(|&(t, _)| t > keep);
        let mut stabilized = cur;
        if stabilized < up_rec {
            stabilized = up_rec;
        }
        if stabilized > down_rec {
            stabilized = down_rec;
        }
        desired = stabilized;
        d.constraints.push(effect(
            Constraint::Stabilization,
            before,
            desired,
            format!(
                "highest recommendation in the last {} is {down_rec}; lowest in the last {} is {up_rec}",
                humantime::format_duration(down_window),
                humantime::format_duration(up_window)
            ),
        ));
    }

    // 3b. Forecast floor: raises the desired size to what the forecast load needs, never
    // lowers it; forecast-only records what it would have done.
    if let Some((mode, f)) = &forecast {
        let before = desired;
        // With a fitted model, the forecast load is sized by the model.
        let by_model = scale
            .model
            .as_ref()
            .zip(f.input.value)
            .and_then(|(m, v)| model::size_at(m, &st.model, v, target.max.max(target.min)));
        let detail = match (f.replicas.and(by_model).or(f.replicas), mode) {
            (None, _) => f.input.against.clone(),
            (Some(r), ForecastMode::Floor) => {
                desired = desired.max(r);
                format!(
                    "forecast load {:.1} needs {r}: floor {}",
                    f.input.value.unwrap_or_default(),
                    if r > before {
                        format!("raises {before} to {r}")
                    } else {
                        "below the desired size".to_owned()
                    }
                )
            }
            (Some(r), ForecastMode::ForecastOnly) => format!(
                "forecast-only: load {:.1} needs {r}, would {}",
                f.input.value.unwrap_or_default(),
                if r > before {
                    format!("raise {before} to {r}")
                } else {
                    "change nothing".to_owned()
                }
            ),
        };
        d.constraints.push(effect(Constraint::Forecast, before, desired, detail));
    }

    // 4. Rate limit.
    {
        let before = desired;
        let detail;
        if desired > cur {
            let limit = scale_up_limit(cur, &st.events, &up_policies, up_select, now);
            desired = desired.min(limit.max(cur));
            detail = format!("scale-up limit {limit}");
        } else if desired < cur {
            let limit = scale_down_limit(cur, &st.events, &down_policies, down_select, now);
            desired = desired.max(limit.min(cur));
            detail = format!("scale-down limit {limit}");
        } else {
            detail = "no change asked".to_owned();
        }
        d.constraints.push(effect(Constraint::RateLimit, before, desired, detail));
    }

    // 5. Min/max.
    {
        let before = desired;
        desired = desired.clamp(target.min, target.max.max(target.min));
        d.constraints.push(effect(
            Constraint::MinMax,
            before,
            desired,
            format!("bounds {}..={}", target.min, target.max),
        ));
    }

    // 6. Cooldown.
    {
        let before = desired;
        let cd = scale.cooldown.clone().unwrap_or_default();
        let last = st.events.last().map(|e| e.time);
        let (wait, dir) = if desired > cur {
            (cd.scale_up.map(|d| d.get()).unwrap_or_default(), "scale-up")
        } else {
            (cd.scale_down.map(|d| d.get()).unwrap_or_default(), "scale-down")
        };
        let until = last.map(|l| l.saturating_add(nanos(wait)));
        let blocked = desired != cur && until.is_some_and(|u| now < u) && !wait.is_zero();
        if blocked {
            desired = cur;
        }
        d.constraints.push(effect(
            Constraint::Cooldown,
            before,
            desired,
            match (blocked, until) {
                (true, Some(u)) => format!("{dir} cooling down until {}", fmt_time(u)),
                _ => "not cooling down".to_owned(),
            },
        ));
    }

    // 7. Budget.
    if let Some(b) = &scale.budget {
        let before = desired;
        let cut = now.saturating_sub(nanos(b.per.get()));
        let used = st.events.iter().filter(|e| e.time > cut).count();
        let spent = used >= b.max_runs as usize;
        if spent && desired != cur {
            desired = cur;
        }
        d.constraints.push(effect(
            Constraint::Budget,
            before,
            desired,
            format!("{used} of {} actions used in the last {}", b.max_runs, b.per),
        ));
    }

    // 8. Missing data.
    {
        let before = desired;
        let detail = if missing.is_empty() {
            "all inputs present".to_owned()
        } else {
            match scale.on_missing_data {
                MissingData::Hold => {
                    if desired < cur {
                        desired = cur.min(target.max.max(target.min));
                    }
                    format!("no data for {}: holding against scale-down", missing.join(", "))
                }
                MissingData::Freeze => {
                    if freeze {
                        desired = cur;
                    }
                    format!("no data for {}: frozen", missing.join(", "))
                }
                MissingData::Ignore => format!("no data for {}: ignored", missing.join(", ")),
            }
        };
        d.constraints.push(effect(Constraint::MissingData, before, desired, detail));
    }

    if desired != cur {
        d.action = Action::Resize { from: cur, to: desired };
        d.key = Some(format!("{}/scale/{now}", policy.name()));
        let inputs: Vec<String> = d
            .inputs
            .iter()
            .filter(|i| i.recommends == Some(raw_rec))
            .map(|i| {
                format!("{} = {}", i.name, i.value.map(|v| format!("{v:.4}")).unwrap_or("-".into()))
            })
            .collect();
        let dir = if desired > cur { "up" } else { "down" };
        d.reason = if raw.is_some() {
            format!(
                "scale {dir} from {cur} to {desired}: recommended {raw_rec} ({})",
                inputs.join(", ")
            )
        } else {
            let why = if missing.is_empty() {
                String::new()
            } else {
                format!(" (no data for {})", missing.join(", "))
            };
            format!(
                "scale {dir} from {cur} to {desired}: outside the bounds {}..={} without a recommendation{why}",
                target.min, target.max
            )
        };
        if let Some(c) =
            d.constraints.iter().find(|c| c.constraint == Constraint::Forecast && c.changed)
        {
            d.reason.push_str(&format!("; {}", c.detail));
        }
        st.events.push(ScaleEvent { time: now, from: cur, to: desired });
        let keep = [
            up_policies.iter().map(|p| p.period.get()).max().unwrap_or_default(),
            down_policies.iter().map(|p| p.period.get()).max().unwrap_or_default(),
            scale.budget.as_ref().map(|b| b.per.get()).unwrap_or_default(),
            scale
                .cooldown
                .as_ref()
                .and_then(|c| c.scale_up.max(c.scale_down))
                .map(|d| d.get())
                .unwrap_or_default(),
        ]
        .into_iter()
        .max()
        .unwrap_or_default();
        let cut = now.saturating_sub(nanos(keep));
        // Keep the last event always: cooldowns measure from it.
        let last = st.events.len().saturating_sub(1);
        let mut i = 0;
        st.events.retain(|e| {
            let keep_it = e.time > cut || i == last;
            i += 1;
            keep_it
        });
    } else {
        d.reason = if raw_rec == cur {
            format!("no action because the recommendation equals the current size {cur}")
        } else {
            let blocker = d
                .constraints
                .iter()
                .rev()
                .find(|c| c.changed && c.after == Some(cur))
                .or_else(|| d.constraints.iter().rev().find(|c| c.changed));
            match blocker {
                Some(c) => format!("no action because of {}: {}", c.constraint, c.detail),
                None => format!("no action: recommended {raw_rec}, constraints kept {cur}"),
            }
        };
    }
    d
}

fn update_condition(cs: &mut ConditionState, holds: Option<bool>, hold_for: Duration, now: u64) {
    if holds == Some(true) {
        let since = *cs.pending_since.get_or_insert(now);
        cs.firing = now.saturating_sub(since) >= nanos(hold_for);
    } else {
        cs.pending_since = None;
        cs.firing = false;
    }
}

fn evaluate_retrain(
    policy: &Policy,
    rule: &RetrainRule,
    source: &dyn SignalSource,
    rs: &mut RetrainState,
    now: u64,
) -> Decision {
    let mode = mode_of(policy, rule.mode);
    let mut inputs = Vec::new();
    let holds = eval_condition(&rule.when, source, now, &mut inputs);
    let hold_for = rule.hold_for.map(|h| h.get()).unwrap_or_default();
    update_condition(&mut rs.condition, holds, hold_for, now);
    let mut d = Decision {
        time: now,
        policy: policy.name().to_owned(),
        rule: rule.name.clone(),
        kind: RuleKind::Retrain,
        mode,
        inputs,
        current: None,
        recommendation: None,
        condition: holds,
        constraints: Vec::new(),
        action: Action::None,
        reason: String::new(),
        key: None,
        outcome: None,
    };
    let note = |c: Constraint, changed: bool, detail: String| ConstraintEffect {
        constraint: c,
        before: None,
        after: None,
        changed,
        detail,
    };
    let Some(true) = holds else {
        if holds.is_none() {
            d.constraints.push(note(
                Constraint::MissingData,
                true,
                "not enough data to decide".into(),
            ));
            d.reason = "no action because of missing data: not enough data to decide".to_owned();
        } else {
            d.reason = "no action because the condition does not hold".to_owned();
        }
        return d;
    };
    let since = rs.condition.pending_since.unwrap_or(now);
    if !rs.condition.firing {
        let detail = format!(
            "holding since {} for {}, needs {}",
            fmt_time(since),
            humantime::format_duration(Duration::from_nanos(now - since)),
            humantime::format_duration(hold_for)
        );
        d.constraints.push(note(Constraint::For, true, detail.clone()));
        d.reason = format!("no action because of for: {detail}");
        return d;
    }
    d.constraints.push(note(Constraint::For, false, format!("held since {}", fmt_time(since))));
    let cooldown = rule.cooldown.map(|c| c.get()).unwrap_or(DEFAULT_RETRAIN_COOLDOWN);
    if let Some(last) = rs.runs.last() {
        let until = last.saturating_add(nanos(cooldown));
        if now < until {
            let detail = format!("cooling down until {}", fmt_time(until));
            d.constraints.push(note(Constraint::Cooldown, true, detail.clone()));
            d.reason = format!("no action because of cooldown: {detail}");
            return d;
        }
    }
    d.constraints.push(note(Constraint::Cooldown, false, "not cooling down".into()));
    if let Some(b) = &rule.budget {
        let cut = now.saturating_sub(nanos(b.per.get()));
        let used = rs.runs.iter().filter(|t| **t > cut).count();
        let detail = format!("{used} of {} runs used in the last {}", b.max_runs, b.per);
        if used >= b.max_runs as usize {
            d.constraints.push(note(Constraint::Budget, true, detail.clone()));
            d.reason = format!("no action because of budget: {detail}");
            return d;
        }
        d.constraints.push(note(Constraint::Budget, false, detail));
    }
    let why: Vec<String> = d
        .inputs
        .iter()
        .map(|i| {
            format!(
                "{} = {} ({})",
                i.name,
                i.value.map(|v| format!("{v:.4}")).unwrap_or("-".into()),
                i.against
            )
        })
        .collect();
    let reason = why.join("; ");
    let key = format!("{}/{}/{now}", policy.name(), rule.name);
    let mut params = BTreeMap::new();
    params.insert("reason".to_owned(), reason.clone());
    params.insert("policy".to_owned(), policy.name().to_owned());
    params.insert("rule".to_owned(), rule.name.clone());
    params.insert("target".to_owned(), policy.doc.spec.target.name.clone());
    params.insert("time".to_owned(), fmt_time(now));
    params.insert("key".to_owned(), key.clone());
    if let Some(v) = d.inputs.iter().find_map(|i| i.value) {
        params.insert("value".to_owned(), format!("{v}"));
    }
    if let Some(model) = first_matcher(&rule.when, "model.name") {
        params.insert("model".to_owned(), model);
    }
    if let Some(version) = d.inputs.iter().find_map(|i| i.version.clone()) {
        params.insert("version".to_owned(), version);
    }
    d.action = Action::StartJob { params };
    d.key = Some(key);
    d.reason = format!("start job: {reason}");
    rs.runs.push(now);
    let keep = rule.budget.as_ref().map(|b| b.per.get()).unwrap_or_default().max(cooldown);
    let cut = now.saturating_sub(nanos(keep));
    rs.runs.retain(|t| *t > cut);
    d
}

fn first_matcher(c: &Condition, key: &str) -> Option<String> {
    let own = c
        .signal
        .as_ref()
        .and_then(|s| s.matchers.get(key))
        .or_else(|| c.drift.as_ref().and_then(|s| s.matchers.get(key)))
        .or_else(|| c.accuracy.as_ref().and_then(|s| s.matchers.get(key)))
        .or_else(|| c.latency_regression.as_ref().and_then(|s| s.matchers.get(key)))
        .or_else(|| c.classifier_drift.as_ref().and_then(|s| s.matchers.get(key)))
        .cloned();
    own.or_else(|| c.all.iter().chain(c.any.iter()).flatten().find_map(|s| first_matcher(s, key)))
}

fn compare(
    value: f64,
    gt: Option<f64>,
    gte: Option<f64>,
    lt: Option<f64>,
    lte: Option<f64>,
) -> (bool, String) {
    if let Some(t) = gt {
        (value > t, format!("> {t}"))
    } else if let Some(t) = gte {
        (value >= t, format!(">= {t}"))
    } else if let Some(t) = lt {
        (value < t, format!("< {t}"))
    } else if let Some(t) = lte {
        (value <= t, format!("<= {t}"))
    } else {
        (false, "no threshold".to_owned())
    }
}

/// Evaluates a condition: `Some(holds)` or `None` when an input is missing. Inputs seen are
/// appended to `inputs`. `any` holds if one known branch holds; `all` fails if one known
/// branch fails; otherwise missing data makes the result unknown.
pub fn eval_condition(
    c: &Condition,
    source: &dyn SignalSource,
    now: u64,
    inputs: &mut Vec<InputValue>,
) -> Option<bool> {
    if let Some(list) = &c.all {
        let results: Vec<Option<bool>> =
            list.iter().map(|s| eval_condition(s, source, now, inputs)).collect();
        if results.contains(&Some(false)) {
            return Some(false);
        }
        return if results.iter().all(|r| *r == Some(true)) { Some(true) } else { None };
    }
    if let Some(list) = &c.any {
        let results: Vec<Option<bool>> =
            list.iter().map(|s| eval_condition(s, source, now, inputs)).collect();
        if results.contains(&Some(true)) {
            return Some(true);
        }
        return if results.iter().all(|r| *r == Some(false)) { Some(false) } else { None };
    }
    if let Some(s) = &c.signal {
        let q = SignalQuery {
            selector: Selector { metric: s.metric.clone(), matchers: s.matchers.clone() },
            stat: Stat::parse(&s.stat).ok()?,
            window: s.window.map(|w| w.get()).unwrap_or(DEFAULT_WINDOW),
        };
        let value = read(source, &q, now);
        let (holds, against) = value
            .map(|v| compare(v, s.gt, s.gte, s.lt, s.lte))
            .unwrap_or((false, compare(0.0, s.gt, s.gte, s.lt, s.lte).1));
        inputs.push(InputValue {
            name: s.metric.clone(),
            query: q.to_string(),
            value,
            against,
            recommends: None,
            version: None,
        });
        return value.map(|_| holds);
    }
    if let Some(dc) = &c.drift {
        let window = dc.window.map(|w| w.get()).unwrap_or(DEFAULT_DRIFT_WINDOW);
        let reference = dc
            .reference
            .as_deref()
            .map(Reference::parse)
            .unwrap_or(Ok(Reference::FirstOfVersion(Duration::from_secs(3600))))
            .ok()?;
        let selector = Selector { metric: dc.metric.clone(), matchers: dc.matchers.clone() };
        let min = dc.min_samples.unwrap_or(DEFAULT_MIN_SAMPLES) as f64;
        let from = now.saturating_sub(nanos(window));
        let mut record =
            |value: Option<f64>, query: String, against: String, version: Option<String>| {
                inputs.push(InputValue {
                    name: format!("{} {}", dc.test, dc.metric),
                    query,
                    value,
                    against,
                    recommends: None,
                    version,
                });
            };
        let Some((rf, rt, sel)) = reference_window(reference, &selector, source, window, now)
        else {
            record(
                None,
                format!("{}({selector}) reference {:?}", dc.test, dc.reference),
                "reference window not complete".into(),
                None,
            );
            return None;
        };
        let query = format!(
            "{}({sel}) current [{}, {}] vs reference [{}, {}]",
            dc.test,
            fmt_time(from),
            fmt_time(now),
            fmt_time(rf),
            fmt_time(rt)
        );
        let version = sel.matchers.get("model.version").cloned();
        let pv = dc.p_value.unwrap_or(DEFAULT_P);
        let result = if dc.test == "chi2" {
            let by = dc.by.as_deref().unwrap_or("class");
            let r = source.counts_by(&sel, by, rf, rt).ok()?;
            let cu = source.counts_by(&sel, by, from, now).ok()?;
            if r.values().sum::<f64>() < min || cu.values().sum::<f64>() < min {
                record(None, query, format!("fewer than {min} observations"), version);
                return None;
            }
            drift::chi_square_counts(&r, &cu).map(|t| (t.statistic, Some(t.p_value)))
        } else {
            let (Some(r), Some(cu)) = (
                source.histogram(&sel, rf, rt).ok().flatten(),
                source.histogram(&sel, from, now).ok().flatten(),
            ) else {
                record(None, query, "no histogram data".into(), version);
                return None;
            };
            if r.total() < min || cu.total() < min {
                record(None, query, format!("fewer than {min} observations"), version);
                return None;
            }
            match dc.test.as_str() {
                "psi" => drift::psi(&r, &cu).map(|v| (v, None)),
                "js" => drift::js_distance(&r, &cu).map(|v| (v, None)),
                _ => drift::ks_bucketed(&r, &cu).map(|t| (t.statistic, Some(t.p_value))),
            }
        };
        let Ok((stat, p)) = result else {
            record(None, query, "histograms not comparable".into(), version);
            return None;
        };
        let (holds, against) = match dc.test.as_str() {
            "psi" | "js" => {
                let def = if dc.test == "psi" { DEFAULT_PSI } else { DEFAULT_JS };
                if let Some(t) = dc.gte {
                    (stat >= t, format!(">= {t}"))
                } else {
                    let t = dc.gt.unwrap_or(def);
                    (stat > t, format!("> {t}"))
                }
            }
            _ => {
                let p = p.unwrap_or(1.0);
                let (extra, text) = match (dc.gt, dc.gte) {
                    (Some(t), _) => (stat > t, format!(" and statistic > {t}")),
                    (_, Some(t)) => (stat >= t, format!(" and statistic >= {t}")),
                    _ => (true, String::new()),
                };
                (p < pv && extra, format!("p = {p:.4} < {pv}{text}"))
            }
        };
        record(Some(stat), query, against, version);
        return Some(holds);
    }
    if let Some(a) = &c.accuracy {
        let window = a.window.map(|w| w.get()).unwrap_or(DEFAULT_DRIFT_WINDOW);
        let min = a.min_samples.unwrap_or(DEFAULT_MIN_SAMPLES) as f64;
        let (value, query) = if a.estimate == "feedback" {
            let sel =
                Selector { metric: "inference.feedback".to_owned(), matchers: a.matchers.clone() };
            let counts =
                source.counts_by(&sel, "correct", now.saturating_sub(nanos(window)), now).ok()?;
            let q = format!("accuracy from {sel} over {}", humantime::format_duration(window));
            let right = counts.get("true").copied().unwrap_or(0.0);
            let total = right + counts.get("false").copied().unwrap_or(0.0);
            (drift::accuracy_from_feedback(right, total, min), q)
        } else {
            let sel = Selector {
                metric: "inference.prediction.confidence".to_owned(),
                matchers: a.matchers.clone(),
            };
            let mean_q = SignalQuery { selector: sel.clone(), stat: Stat::Mean, window };
            let count_q = SignalQuery { selector: sel, stat: Stat::Count, window };
            let mean = read(source, &mean_q, now);
            let count = read(source, &count_q, now).unwrap_or(0.0);
            (mean.filter(|_| count >= min), format!("estimated accuracy = {mean_q}"))
        };
        let (holds, against) = value
            .map(|v| compare(v, None, None, a.lt, a.lte))
            .unwrap_or((false, compare(0.0, None, None, a.lt, a.lte).1));
        inputs.push(InputValue {
            name: format!("accuracy ({})", a.estimate),
            query,
            value,
            against,
            recommends: None,
            version: None,
        });
        return value.map(|_| holds);
    }
    if let Some(l) = &c.latency_regression {
        let window = l.window.map(|w| w.get()).unwrap_or(DEFAULT_DRIFT_WINDOW);
        let metric = l.metric.clone().unwrap_or_else(|| "inference.request.duration".to_owned());
        let stat = Stat::parse(l.stat.as_deref().unwrap_or("p95")).ok()?;
        let reference = l
            .reference
            .as_deref()
            .map(Reference::parse)
            .unwrap_or(Ok(Reference::FirstOfVersion(Duration::from_secs(3600))))
            .ok()?;
        let selector = Selector { metric, matchers: l.matchers.clone() };
        let mut record = |value: Option<f64>, query: String, against: String| {
            inputs.push(InputValue {
                name: "latency regression".into(),
                query,
                value,
                against,
                recommends: None,
                version: None,
            });
        };
        let Some((rf, rt, sel)) = reference_window(reference, &selector, source, window, now)
        else {
            record(
                None,
                format!("{stat}({selector}) vs reference"),
                "reference window not complete".into(),
            );
            return None;
        };
        let cur_q = SignalQuery { selector: sel.clone(), stat, window };
        let ref_q = SignalQuery { selector: sel, stat, window: Duration::from_nanos(rt - rf) };
        let query = format!("{cur_q} / {ref_q} ending {}", fmt_time(rt));
        let (Some(cur), Some(base)) = (read(source, &cur_q, now), read(source, &ref_q, rt)) else {
            record(None, query, "no data".into());
            return None;
        };
        if base <= 0.0 {
            record(None, query, "reference is zero".into());
            return None;
        }
        let ratio = cur / base;
        let (holds, against) = compare(ratio, l.gt, l.gte, None, None);
        record(Some(ratio), query, against);
        return Some(holds);
    }
    if let Some(cd) = &c.classifier_drift {
        return drift::eval_classifier_drift(cd, source, now, inputs);
    }
    if let Some(a) = &c.anomaly {
        return super::anomaly::eval_anomaly(a, source, now, inputs);
    }
    None
}
