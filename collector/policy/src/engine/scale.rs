//! A policy's scaling: the recommendation (step rules, the load forecast, the fitted model,
//! the tracked metrics' ratios), then the constraints in their fixed order, each recorded in
//! the decision with its effect — tolerance → panic → stabilization → forecast floor → rate
//! limit → min/max → cooldown → budget → missing data — and finally the action, its reason
//! and the pruned history of scale events.

use std::time::Duration;

use crate::check::Policy;
use crate::forecast::{Forecasted, step_forecast};
use crate::format::{
    Budget, ForecastMode, MissingData, PanicSpec, RatePolicy, ScaleSpec, SelectPolicy, StepChange,
    TargetSpec, TrackedMetric,
};
use crate::inputs::{InputValue, fmt_time, query, read};
use crate::model::{self, ModelState, step_model};
use crate::signal::{SignalQuery, SignalSource, nanos};

use super::behavior::{behavior, scale_down_limit, scale_up_limit};
use super::conditions::{eval_condition, update_condition};
use super::{
    Action, ConditionState, Constraint, ConstraintEffect, DEFAULT_TOLERANCE, Decision, RuleKind,
    ScaleEvent, ScaleState, mode_of,
};

/// A direction's stabilization window, rate policies and how they combine.
type Direction = (Duration, Vec<RatePolicy>, SelectPolicy);

/// The provisioned size and the replicas the signals reflect (the ready ones), either
/// unknown.
#[derive(Clone, Copy)]
struct Replicas {
    current: Option<u32>,
    base: Option<u32>,
}

impl Replicas {
    fn new(current: Option<u32>, ready: Option<u32>) -> Self {
        Self { current, base: current.map(|c| ready.map_or(c, |r| r.min(c))) }
    }

    /// A recommendation from the ready count: a scale-out that the warming replicas cover is
    /// held at the provisioned size.
    fn covered(self, r: u32) -> u32 {
        match (self.current, self.base) {
            (Some(c), Some(b)) if b < c && r > b && r <= c => c,
            _ => r,
        }
    }
}

/// What every phase of one scale evaluation reads, once the sizes are known.
struct Sizing<'a> {
    policy: &'a Policy,
    scale: &'a ScaleSpec,
    target: &'a TargetSpec,
    source: &'a dyn SignalSource,
    replicas: Replicas,
    /// The provisioned size.
    cur: u32,
    /// The replicas the signals reflect.
    base: u32,
    tolerance: f64,
    now: u64,
}

/// The recommendation before constraints: the highest over the tracked metrics (or the
/// fitted model) and the firing step rules, raw and with the tolerance applied.
struct Recommendation {
    raw: Option<u32>,
    tolerated: Option<u32>,
    /// Metrics whose ratio the tolerance kept at the current size.
    tol_notes: Vec<String>,
    /// Each tracked metric's query, built once; the panic window reads it again.
    queries: Vec<Option<SignalQuery>>,
}

impl Recommendation {
    /// A fitted model replaces the metrics' recommendation; step rules raise it.
    fn merge(&mut self, model_rec: Option<u32>, step_recs: &[u32]) {
        if let Some(r) = model_rec {
            self.raw = Some(r);
            self.tolerated = Some(r);
            self.tol_notes.clear();
        }
        for r in step_recs {
            self.raw = Some(self.raw.map_or(*r, |x| x.max(*r)));
            self.tolerated = Some(self.tolerated.map_or(*r, |x| x.max(*r)));
        }
    }
}

/// Evaluates the policy's scaling at `now`: one decision, with every constraint's effect.
pub(super) fn evaluate_scale(
    policy: &Policy,
    scale: &ScaleSpec,
    source: &dyn SignalSource,
    st: &mut ScaleState,
    current: Option<u32>,
    ready: Option<u32>,
    now: u64,
) -> Decision {
    let mut d = scale_decision(policy, scale, current, now);
    let mut missing = Vec::new();
    let replicas = Replicas::new(current, ready);
    // Step rules update their condition state whatever the current size.
    let step_recs = step_rules(scale, source, st, replicas, now, &mut d, &mut missing);

    let (Some(cur), Some(base)) = (current, replicas.base) else {
        d.reason = "no action because the current size is unknown".to_owned();
        return d;
    };
    let target = &policy.doc.spec.target;
    let tolerance = scale.tolerance.unwrap_or(DEFAULT_TOLERANCE);
    let sz = Sizing { policy, scale, target, source, replicas, cur, base, tolerance, now };
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

    let mut rec = tracked_metrics(&sz, &mut d, &mut missing);
    rec.merge(model_rec, &step_recs);
    d.recommendation = rec.raw;

    let freeze = !missing.is_empty() && scale.on_missing_data == MissingData::Freeze;
    let Some(raw_rec) = rec.raw.or(outside_bounds(target, cur)) else {
        no_recommendation(&mut d, cur, &missing);
        return d;
    };

    let mut desired = tolerance_effect(&sz, &mut d, raw_rec, &rec);
    if let Some(panic) = &scale.panic {
        desired = panic_effect(&sz, panic, st, &mut rec.queries, desired, &mut d);
    }
    let up = behavior(scale, true);
    let down = behavior(scale, false);
    desired = stabilization_effect(&sz, st, (up.0, down.0), desired, &mut d);
    if let Some((mode, f)) = &forecast {
        desired = forecast_effect(&sz, &st.model, *mode, f, desired, &mut d);
    }
    desired = rate_limit_effect(&sz, &st.events, (&up, &down), desired, &mut d);
    desired = min_max_effect(&sz, desired, &mut d);
    desired = cooldown_effect(&sz, &st.events, desired, &mut d);
    if let Some(b) = &scale.budget {
        desired = budget_effect(&sz, b, &st.events, desired, &mut d);
    }
    desired = missing_data_effect(&sz, &missing, freeze, desired, &mut d);

    if desired != cur {
        resize(&sz, &mut d, desired, (rec.raw.is_some(), raw_rec), &missing);
        st.events.push(ScaleEvent { time: now, from: cur, to: desired });
        prune_events(&sz, st, (&up.1, &down.1));
    } else {
        d.reason = hold_reason(&d, cur, raw_rec);
    }
    d
}

/// The decision before any input is read.
fn scale_decision(policy: &Policy, scale: &ScaleSpec, current: Option<u32>, now: u64) -> Decision {
    Decision {
        time: now,
        policy: policy.name().to_owned(),
        rule: "scale".to_owned(),
        kind: RuleKind::Scale,
        mode: mode_of(policy, scale.mode),
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
    }
}

/// Evaluates every step rule's condition and returns what the firing ones recommend (from
/// the ready count). Their inputs go into the decision, named by the rule.
fn step_rules(
    scale: &ScaleSpec,
    source: &dyn SignalSource,
    st: &mut ScaleState,
    replicas: Replicas,
    now: u64,
    d: &mut Decision,
    missing: &mut Vec<String>,
) -> Vec<u32> {
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
        let rec = match (cs.firing, replicas.base) {
            (true, Some(b)) => Some(replicas.covered(apply_step(&step.change, b))),
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
    step_recs
}

/// Target tracking: each metric's `ceil(ready × ratio)`, raw and within the tolerance band.
fn tracked_metrics(sz: &Sizing, d: &mut Decision, missing: &mut Vec<String>) -> Recommendation {
    let (cur, base, tolerance) = (sz.cur, sz.base, sz.tolerance);
    let mut rec = Recommendation {
        raw: None,
        tolerated: None,
        tol_notes: Vec::new(),
        queries: Vec::with_capacity(sz.scale.metrics.len()),
    };
    for m in &sz.scale.metrics {
        let q = match query(&m.signal) {
            Ok(q) => q,
            Err(e) => {
                missing.push(format!("{} ({e})", m.name));
                rec.queries.push(None);
                continue;
            }
        };
        let value = read(sz.source, &q, sz.now);
        let against = match (m.target.value, m.target.average_value) {
            (Some(v), _) => format!("target {v}"),
            (_, Some(v)) => format!("average target {v}"),
            _ => String::new(),
        };
        let sized = value.map(|v| {
            let ratio = usage_ratio(m, v, base);
            let r = sz.replicas.covered(ceil_u32(f64::from(base.max(1)) * ratio));
            let t = if r == cur {
                cur
            } else if (ratio - 1.0).abs() <= tolerance {
                if r != cur {
                    rec.tol_notes.push(format!("{} ratio {ratio:.3} within ±{tolerance}", m.name));
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
            recommends: sized.map(|r| r.0),
            version: None,
        });
        rec.queries.push(Some(q));
        if let Some((r, t)) = sized {
            rec.raw = Some(rec.raw.map_or(r, |x: u32| x.max(r)));
            rec.tolerated = Some(rec.tolerated.map_or(t, |x: u32| x.max(t)));
        }
    }
    rec
}

/// Outside the bounds (a target with no replicas yet has no data either), the bounds apply
/// whatever the inputs say, as HPA's minReplicas and maxReplicas do: below `min` the target
/// is raised to it, above `max` lowered to it.
fn outside_bounds(target: &TargetSpec, cur: u32) -> Option<u32> {
    let upper = target.max.max(target.min);
    if cur < target.min {
        Some(target.min)
    } else if cur > upper {
        Some(upper)
    } else {
        None
    }
}

/// Nothing recommends a size: the reason, and the missing data when that is why.
fn no_recommendation(d: &mut Decision, cur: u32, missing: &[String]) {
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
}

/// Constraint 1, tolerance: metrics within the band keep the current size.
fn tolerance_effect(sz: &Sizing, d: &mut Decision, raw_rec: u32, rec: &Recommendation) -> u32 {
    let desired = rec.tolerated.unwrap_or(raw_rec);
    d.constraints.push(effect(
        Constraint::Tolerance,
        raw_rec,
        desired,
        if rec.tol_notes.is_empty() {
            format!("±{}: no metric within the band", sz.tolerance)
        } else {
            rec.tol_notes.join("; ")
        },
    ));
    desired
}

/// Constraint 2, panic (Knative): a short-window recommendation at `threshold`× the current size
/// starts panic mode for `hold`, in which the size only grows.
fn panic_effect(
    sz: &Sizing,
    panic: &PanicSpec,
    st: &mut ScaleState,
    queries: &mut [Option<SignalQuery>],
    mut desired: u32,
    d: &mut Decision,
) -> u32 {
    let (cur, base, now) = (sz.cur, sz.base, sz.now);
    let window = panic.window.map(|w| w.get()).unwrap_or(Duration::from_secs(6));
    let threshold = panic.threshold.unwrap_or(2.0);
    let hold = panic.hold.map(|h| h.get()).unwrap_or(Duration::from_secs(60));
    let mut panic_rec: Option<u32> = None;
    for (m, q) in sz.scale.metrics.iter().zip(queries.iter_mut()) {
        let Some(q) = q else { continue };
        q.window = window;
        if let Some(v) = read(sz.source, q, now) {
            let r = sz.replicas.covered(ceil_u32(f64::from(base.max(1)) * usage_ratio(m, v, base)));
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
    desired
}

/// Constraint 3, stabilization (HPA's stabilizeRecommendationWithBehaviors): no higher than the
/// lowest recommendation within the scale-up window, no lower than the highest within the
/// scale-down window. Records this recommendation for the next evaluations.
fn stabilization_effect(
    sz: &Sizing,
    st: &mut ScaleState,
    (up_window, down_window): (Duration, Duration),
    desired: u32,
    d: &mut Decision,
) -> u32 {
    let now = sz.now;
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
    let mut stabilized = sz.cur;
    if stabilized < up_rec {
        stabilized = up_rec;
    }
    if stabilized > down_rec {
        stabilized = down_rec;
    }
    d.constraints.push(effect(
        Constraint::Stabilization,
        before,
        stabilized,
        format!(
            "highest recommendation in the last {} is {down_rec}; lowest in the last {} is {up_rec}",
            humantime::format_duration(down_window),
            humantime::format_duration(up_window)
        ),
    ));
    stabilized
}

/// Constraint 3b, forecast floor: raises the desired size to what the forecast load needs, never
/// lowers it; forecast-only records what it would have done.
fn forecast_effect(
    sz: &Sizing,
    model_state: &ModelState,
    mode: ForecastMode,
    f: &Forecasted,
    mut desired: u32,
    d: &mut Decision,
) -> u32 {
    let before = desired;
    // With a fitted model, the forecast load is sized by the model.
    let by_model = sz
        .scale
        .model
        .as_ref()
        .zip(f.input.value)
        .and_then(|(m, v)| model::size_at(m, model_state, v, sz.target.max.max(sz.target.min)));
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
            if r > before { format!("raise {before} to {r}") } else { "change nothing".to_owned() }
        ),
    };
    d.constraints.push(effect(Constraint::Forecast, before, desired, detail));
    desired
}

/// Constraint 4, rate limit: HPA's rate policies of the direction asked for.
fn rate_limit_effect(
    sz: &Sizing,
    events: &[ScaleEvent],
    (up, down): (&Direction, &Direction),
    mut desired: u32,
    d: &mut Decision,
) -> u32 {
    let (cur, now) = (sz.cur, sz.now);
    let before = desired;
    let detail;
    if desired > cur {
        let limit = scale_up_limit(cur, events, &up.1, up.2, now);
        desired = desired.min(limit.max(cur));
        detail = format!("scale-up limit {limit}");
    } else if desired < cur {
        let limit = scale_down_limit(cur, events, &down.1, down.2, now);
        desired = desired.max(limit.min(cur));
        detail = format!("scale-down limit {limit}");
    } else {
        detail = "no change asked".to_owned();
    }
    d.constraints.push(effect(Constraint::RateLimit, before, desired, detail));
    desired
}

/// Constraint 5, min/max: the target's bounds.
fn min_max_effect(sz: &Sizing, desired: u32, d: &mut Decision) -> u32 {
    let target = sz.target;
    let bounded = desired.clamp(target.min, target.max.max(target.min));
    d.constraints.push(effect(
        Constraint::MinMax,
        desired,
        bounded,
        format!("bounds {}..={}", target.min, target.max),
    ));
    bounded
}

/// Constraint 6, cooldown: no change within the direction's cooldown after the last action.
fn cooldown_effect(sz: &Sizing, events: &[ScaleEvent], mut desired: u32, d: &mut Decision) -> u32 {
    let (cur, now) = (sz.cur, sz.now);
    let before = desired;
    let cd = sz.scale.cooldown.clone().unwrap_or_default();
    let last = events.last().map(|e| e.time);
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
    desired
}

/// Constraint 7, budget: at most `maxRuns` actions per period.
fn budget_effect(
    sz: &Sizing,
    b: &Budget,
    events: &[ScaleEvent],
    mut desired: u32,
    d: &mut Decision,
) -> u32 {
    let before = desired;
    let cut = sz.now.saturating_sub(nanos(b.per.get()));
    let used = events.iter().filter(|e| e.time > cut).count();
    let spent = used >= b.max_runs as usize;
    if spent && desired != sz.cur {
        desired = sz.cur;
    }
    d.constraints.push(effect(
        Constraint::Budget,
        before,
        desired,
        format!("{used} of {} actions used in the last {}", b.max_runs, b.per),
    ));
    desired
}

/// Constraint 8, missing data: `hold` refuses a scale-down, `freeze` any change, `ignore` nothing.
fn missing_data_effect(
    sz: &Sizing,
    missing: &[String],
    freeze: bool,
    mut desired: u32,
    d: &mut Decision,
) -> u32 {
    let (cur, target) = (sz.cur, sz.target);
    let before = desired;
    let detail = if missing.is_empty() {
        "all inputs present".to_owned()
    } else {
        match sz.scale.on_missing_data {
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
    desired
}

/// The resize action, its idempotency key and its reason: what recommended it (or the bounds
/// that forced it), and the forecast floor when that raised it.
fn resize(
    sz: &Sizing,
    d: &mut Decision,
    desired: u32,
    (recommended, raw_rec): (bool, u32),
    missing: &[String],
) {
    let (cur, now, target) = (sz.cur, sz.now, sz.target);
    d.action = Action::Resize { from: cur, to: desired };
    d.key = Some(format!("{}/scale/{now}", sz.policy.name()));
    let inputs: Vec<String> = d
        .inputs
        .iter()
        .filter(|i| i.recommends == Some(raw_rec))
        .map(|i| {
            format!("{} = {}", i.name, i.value.map(|v| format!("{v:.4}")).unwrap_or("-".into()))
        })
        .collect();
    let dir = if desired > cur { "up" } else { "down" };
    d.reason = if recommended {
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
}

/// Drops scale events older than every rate-policy period, the budget's period and the
/// cooldowns; the last event stays always, as cooldowns measure from it.
fn prune_events(sz: &Sizing, st: &mut ScaleState, (up, down): (&[RatePolicy], &[RatePolicy])) {
    let scale = sz.scale;
    let keep = [
        up.iter().map(|p| p.period.get()).max().unwrap_or_default(),
        down.iter().map(|p| p.period.get()).max().unwrap_or_default(),
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
    let cut = sz.now.saturating_sub(nanos(keep));
    let last = st.events.len().saturating_sub(1);
    let mut i = 0;
    st.events.retain(|e| {
        let keep_it = e.time > cut || i == last;
        i += 1;
        keep_it
    });
}

/// Why the size stays: the recommendation is the current size, or the last constraint that
/// brought it back there.
fn hold_reason(d: &Decision, cur: u32, raw_rec: u32) -> String {
    if raw_rec == cur {
        return format!("no action because the recommendation equals the current size {cur}");
    }
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
