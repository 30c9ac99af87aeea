//! One way to drive the engine, for every caller: the live runtime, `policy test`, replay and
//! the benchmarks. Each step is the same everywhere:
//!
//! 1. **schedule**: a policy is due at the first tick, then at the first tick at least one
//!    interval after its last evaluation, give or take [`DUE_SLACK`];
//! 2. **current size**: from the policy's `current: {from: signal}` signal when it says so,
//!    otherwise from the resizer (the actuator live, the test's `size`, the simulated
//!    service in replay) through [`Sizing`];
//! 3. **evaluate** ([`engine::evaluate_sized`]);
//! 4. **record and act**, which are the caller's: the runtime writes a ledger and calls its
//!    actuators, a test checks expectations, replay resizes its service. What changes the
//!    target's size is the same for all: [`applied_size`].
//!
//! Before this module each caller had its own loop and they drifted (one counted a policy due
//! half a tick early, one ignored `current: {from: signal}`), so a policy could pass its
//! tests and backtest and behave differently live.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::Policy;
use crate::engine::{self, Action, Decision, PolicyState};
use crate::format::{CurrentFrom, Mode};
use crate::signal::{SignalSource, nanos};

/// A policy counts as due this much before its next due time, so a tick that wakes a few
/// milliseconds early does not skip a whole interval (a 1 s policy on the 1 s tick would
/// otherwise run every other tick now and then).
pub const DUE_SLACK: Duration = Duration::from_millis(500);

/// A target's size as its resizer reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSize {
    /// Provisioned replicas: the size the remote holds (`spec.replicas`, `DesiredCapacity`).
    pub provisioned: u32,
    /// Of them, the ready ones (serving); `None` when the resizer cannot tell, which counts
    /// every provisioned replica as ready.
    pub ready: Option<u32>,
}

/// Where a policy's current size comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizing {
    /// No scaling rule: retraining rules need no size.
    None,
    /// The policy's `current: {from: signal}` query.
    Signal,
    /// The resizer: ask it before [`Driver::evaluate`].
    Resizer,
}

impl Sizing {
    /// How `policy` learns its current size.
    pub fn of(policy: &Policy) -> Self {
        if policy.doc.spec.scale.is_none() {
            return Self::None;
        }
        let from_signal =
            policy.doc.spec.target.current.as_ref().is_some_and(|c| c.from == CurrentFrom::Signal);
        if from_signal { Self::Signal } else { Self::Resizer }
    }
}

/// The size an enforced decision sets the target to: what every caller applies.
pub fn applied_size(d: &Decision) -> Option<u32> {
    match (&d.action, d.mode) {
        (Action::Resize { to, .. }, Mode::Enforce) => Some(*to),
        _ => None,
    }
}

/// Whether an enforced decision starts a job.
pub fn starts_job(d: &Decision) -> bool {
    matches!((&d.action, d.mode), (Action::StartJob { .. }, Mode::Enforce))
}

/// When each policy is next due, by name.
#[derive(Clone, Debug, Default)]
pub struct Driver {
    next_due: BTreeMap<String, u64>,
}

impl Driver {
    /// A driver with every policy due at its first tick.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `policy` is due at `now`.
    pub fn is_due(&self, policy: &Policy, now: u64) -> bool {
        self.next_due
            .get(policy.name())
            .is_none_or(|due| now.saturating_add(nanos(DUE_SLACK)) >= *due)
    }

    /// Forgets policies no longer loaded: keeps those `loaded` says yes to.
    pub fn retain(&mut self, loaded: impl Fn(&str) -> bool) {
        self.next_due.retain(|k, _| loaded(k));
    }

    /// Records that `policy` was evaluated at `now`: it is next due one interval later.
    pub fn evaluated(&mut self, policy: &Policy, now: u64) {
        self.next_due
            .insert(policy.name().to_owned(), now.saturating_add(nanos(engine::interval(policy))));
    }

    /// [`evaluate`] when `policy` is due at `now`, with the resizer asked only then
    /// and only when the policy reads its size from it; `None` when not due.
    pub fn tick(
        &mut self,
        policy: &Policy,
        source: &dyn SignalSource,
        state: &mut PolicyState,
        resizer: impl FnOnce() -> Option<TargetSize>,
        now: u64,
    ) -> Option<Vec<Decision>> {
        if !self.is_due(policy, now) {
            return None;
        }
        let size = (Sizing::of(policy) == Sizing::Resizer).then(resizer).flatten();
        let decisions = evaluate(policy, source, state, size, now);
        self.evaluated(policy, now);
        Some(decisions)
    }
}

/// Evaluates `policy` at `now` on `state` (updated in place), its current size found as
/// [`Sizing::of`] says. `resizer` is what the resizer reported, used only for
/// [`Sizing::Resizer`]; `None` there means the size is unknown, which never acts.
pub fn evaluate(
    policy: &Policy,
    source: &dyn SignalSource,
    state: &mut PolicyState,
    resizer: Option<TargetSize>,
    now: u64,
) -> Vec<Decision> {
    let (current, ready) = match Sizing::of(policy) {
        Sizing::None => (None, None),
        Sizing::Signal => (engine::current_from_signal(policy, source, now), None),
        Sizing::Resizer => match resizer {
            Some(s) => (Some(s.provisioned), s.ready),
            None => (None, None),
        },
    };
    engine::evaluate_sized(policy, source, state, current, ready, now)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::check::check_text;
    use crate::series::{SeriesSource, series_from_notation};
    use crate::signal::NANOS;

    const T0: u64 = 1_700_000_000 * NANOS;

    fn policy(extra_target: &str, interval: &str) -> Policy {
        let text = format!(
            "apiVersion: stoker/v1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n  target: {{name: svc, min: 1, max: 40, actuator: command, command: {{argv: [echo]}}{extra_target}}}\n  interval: {interval}\n  scale:\n    metrics:\n      - name: busy\n        signal: {{metric: busy, stat: mean, window: 5s}}\n        target: {{value: 0.5}}\n"
        );
        let (p, _, diags) = check_text(Path::new("p.yaml"), &text);
        p.unwrap_or_else(|| panic!("{diags:?}"))
    }

    fn source() -> SeriesSource {
        let busy = series_from_notation("busy", "1x600", T0, Duration::from_secs(1));
        let replicas = series_from_notation("replicas", "3x600", T0, Duration::from_secs(1));
        SeriesSource::new(vec![busy.expect("series"), replicas.expect("series")])
    }

    #[test]
    fn a_policy_is_due_at_its_first_tick_then_an_interval_later_give_or_take_the_slack() {
        let p = policy("", "30s");
        let mut d = Driver::new();
        assert!(d.is_due(&p, T0));
        d.evaluated(&p, T0);
        assert!(!d.is_due(&p, T0 + 10 * NANOS));
        assert!(!d.is_due(&p, T0 + 29 * NANOS));
        // 400 ms early is within the 500 ms slack; 600 ms early is not.
        assert!(d.is_due(&p, T0 + 30 * NANOS - 400_000_000));
        assert!(!d.is_due(&p, T0 + 30 * NANOS - 600_000_000));
        d.retain(|name| name != "p");
        assert!(d.is_due(&p, T0 + NANOS), "a forgotten policy is due again");
    }

    #[test]
    fn the_size_comes_from_the_signal_when_the_policy_says_so_and_never_asks_the_resizer() {
        let p = policy(", current: {from: signal, signal: {metric: replicas, stat: last}}", "1s");
        assert_eq!(Sizing::of(&p), Sizing::Signal);
        let mut st = PolicyState::default();
        let now = T0 + 60 * NANOS;
        let ds = Driver::new()
            .tick(&p, &source(), &mut st, || panic!("the resizer was asked"), now)
            .expect("due");
        // busy 1.0 against 0.5 on the 3 replicas the signal reports: 6.
        assert_eq!(ds[0].current, Some(3));
        assert_eq!(applied_size(&ds[0]), Some(6));
    }

    #[test]
    fn an_unknown_size_from_the_resizer_never_acts() {
        let p = policy("", "1s");
        assert_eq!(Sizing::of(&p), Sizing::Resizer);
        let mut st = PolicyState::default();
        let ds = evaluate(&p, &source(), &mut st, None, T0 + 60 * NANOS);
        assert_eq!(ds[0].current, None);
        assert_eq!(applied_size(&ds[0]), None);
        let ready = Some(TargetSize { provisioned: 4, ready: Some(2) });
        let ds = evaluate(&p, &source(), &mut st, ready, T0 + 61 * NANOS);
        assert_eq!(ds[0].current, Some(4));
        // Sized on the 2 ready replicas: 4, which the 4 provisioned already cover.
        assert_eq!(applied_size(&ds[0]), None);
    }
}
