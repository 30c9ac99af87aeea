//! HPA's `behavior`: the defaults of each direction (stabilization window, rate policies,
//! select) and the scale-up and scale-down limits its rate policies allow, as the Kubernetes
//! controller computes them.

use std::time::Duration;

use crate::format::{DirectionBehavior, RateKind, RatePolicy, ScaleSpec, SelectPolicy};
use crate::signal::nanos;

use super::{DEFAULT_DOWN_STABILIZATION, ScaleEvent};

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
pub(super) fn behavior(scale: &ScaleSpec, up: bool) -> (Duration, Vec<RatePolicy>, SelectPolicy) {
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

/// HPA's scale-up limit over the rate policies (`calculateScaleUpLimitWithScalingRules`).
pub(super) fn scale_up_limit(
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
pub(super) fn scale_down_limit(
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
