//! A retraining rule: its condition, then the gates in order (`for`, cooldown, budget), each
//! recorded in the decision, and the job with its template parameters when all pass.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::check::Policy;
use crate::format::RetrainRule;
use crate::inputs::fmt_time;
use crate::signal::{SignalSource, nanos};

use super::conditions::{eval_condition, first_matcher, update_condition};
use super::{
    Action, Constraint, ConstraintEffect, DEFAULT_RETRAIN_COOLDOWN, Decision, RetrainState,
    RuleKind, mode_of,
};

/// Evaluates one retraining rule at `now`: one decision, a job when the condition has held
/// for its `for` and neither cooldown nor budget blocks it.
pub(super) fn evaluate_retrain(
    policy: &Policy,
    rule: &RetrainRule,
    source: &dyn SignalSource,
    rs: &mut RetrainState,
    now: u64,
) -> Decision {
    let mut inputs = Vec::new();
    let holds = eval_condition(&rule.when, source, now, &mut inputs);
    let hold_for = rule.hold_for.map(|h| h.get()).unwrap_or_default();
    update_condition(&mut rs.condition, holds, hold_for, now);
    let mut d = Decision {
        time: now,
        policy: policy.name().to_owned(),
        rule: rule.name.clone(),
        kind: RuleKind::Retrain,
        mode: mode_of(policy, rule.mode),
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
    let cooldown = rule.cooldown.map(|c| c.get()).unwrap_or(DEFAULT_RETRAIN_COOLDOWN);
    if let Err(reason) = gates(rule, rs, hold_for, cooldown, now, &mut d.constraints) {
        d.reason = reason;
        return d;
    }
    start_job(policy, rule, &mut d, now);
    rs.runs.push(now);
    let keep = rule.budget.as_ref().map(|b| b.per.get()).unwrap_or_default().max(cooldown);
    let cut = now.saturating_sub(nanos(keep));
    rs.runs.retain(|t| *t > cut);
    d
}

/// A retraining constraint's effect: no sizes, only whether it blocked and why.
fn note(c: Constraint, changed: bool, detail: String) -> ConstraintEffect {
    ConstraintEffect { constraint: c, before: None, after: None, changed, detail }
}

/// `for`, cooldown and budget, in that order, for a condition that holds; each is recorded.
/// `Err` with the decision's reason at the first that blocks.
fn gates(
    rule: &RetrainRule,
    rs: &RetrainState,
    hold_for: Duration,
    cooldown: Duration,
    now: u64,
    constraints: &mut Vec<ConstraintEffect>,
) -> Result<(), String> {
    let since = rs.condition.pending_since.unwrap_or(now);
    if !rs.condition.firing {
        let detail = format!(
            "holding since {} for {}, needs {}",
            fmt_time(since),
            humantime::format_duration(Duration::from_nanos(now - since)),
            humantime::format_duration(hold_for)
        );
        constraints.push(note(Constraint::For, true, detail.clone()));
        return Err(format!("no action because of for: {detail}"));
    }
    constraints.push(note(Constraint::For, false, format!("held since {}", fmt_time(since))));
    if let Some(last) = rs.runs.last() {
        let until = last.saturating_add(nanos(cooldown));
        if now < until {
            let detail = format!("cooling down until {}", fmt_time(until));
            constraints.push(note(Constraint::Cooldown, true, detail.clone()));
            return Err(format!("no action because of cooldown: {detail}"));
        }
    }
    constraints.push(note(Constraint::Cooldown, false, "not cooling down".into()));
    if let Some(b) = &rule.budget {
        let cut = now.saturating_sub(nanos(b.per.get()));
        let used = rs.runs.iter().filter(|t| **t > cut).count();
        let detail = format!("{used} of {} runs used in the last {}", b.max_runs, b.per);
        if used >= b.max_runs as usize {
            constraints.push(note(Constraint::Budget, true, detail.clone()));
            return Err(format!("no action because of budget: {detail}"));
        }
        constraints.push(note(Constraint::Budget, false, detail));
    }
    Ok(())
}

/// The job action: its reason from the inputs, its idempotency key and the template
/// parameters (`reason`, `policy`, `rule`, `target`, `time`, `key`, and `value`, `model`,
/// `version` when known).
fn start_job(policy: &Policy, rule: &RetrainRule, d: &mut Decision, now: u64) {
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
}
