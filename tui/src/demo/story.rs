//! The headless demo's narrator: a pure state machine fed with what the observer polled from
//! the collector API (decisions, actions, the latency and confidence queries), which returns
//! the story's log lines and keeps the run's summary. No I/O and no clock of its own: every
//! observation carries its time, so tests feed it recorded sequences.
//!
//! **Breach to scale.** `breach_to_scale_seconds` = (time of the first scale-out decision whose
//! action was applied, from ≥ 1 replica) − (time of the first observation, taken every 500 ms
//! from `/api/v1/query` with the policy's own signal — p95 of `inference.request.duration` over
//! 10 s — above the policy's scale-out threshold, target × (1 + tolerance) = 110 ms), looking
//! only at observations made while at least one replica served. Negative means the engine saw
//! the breach before the observer's next poll. Target: ≤ 2 evaluation intervals (2 s).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use stoker_collector::policy::engine::{Action, Decision, OutcomeStatus};
use stoker_collector::policy::persist::{ActionRecord, ActionStatus};

/// p95 above this is a breach the policy must act on: its 100 ms target plus 10 % tolerance.
pub const SCALE_THRESHOLD_SECONDS: f64 = 0.110;

/// One poll of the collector.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// When, Unix nanos.
    pub time: u64,
    /// p95 latency over the policy's window, when there was data.
    pub p95: Option<f64>,
    /// Mean confidence over the last 10 s, per `model.version`.
    pub confidence: BTreeMap<String, f64>,
    /// Replicas answering ready.
    pub ready_replicas: usize,
    /// Newest first, as the API lists them.
    pub decisions: Vec<Decision>,
    /// Newest first.
    pub actions: Vec<ActionRecord>,
    /// Times of the scaling rule's recent evaluations, Unix nanos (any order; repeats ignored).
    pub evaluations: Vec<u64>,
}

/// The JSON summary, the last line the headless demo prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Applied scale-outs from ≥ 1 replica (the initial 0 → 1 placement is not counted).
    pub scale_outs: u32,
    /// Applied scale-ins after the load began to fall (the ramp-down phase).
    pub scale_ins: u32,
    /// Applied scale-ins before the load fell: a flap under load.
    pub scale_ins_under_load: u32,
    /// When the load began to fall, seconds since the story's start.
    pub load_fell_at_seconds: Option<f64>,
    /// First applied scale-out (from ≥ 1 replica), seconds since the story's start.
    pub first_scale_out_at_seconds: Option<f64>,
    /// First scale-in counted in `scale_ins`, seconds since the story's start.
    pub first_scale_in_at_seconds: Option<f64>,
    /// Retraining jobs started.
    pub retrain_jobs: u32,
    /// `model.version` values seen in the confidence signal, ascending.
    pub model_versions_seen: Vec<String>,
    /// See the module documentation; `None` when no breach or no scale-out was seen.
    pub breach_to_scale_seconds: Option<f64>,
    /// p95 went back under the SLO after the first scale-out.
    pub latency_recovered: bool,
    /// A newer model version's mean confidence reached the policy's floor.
    pub confidence_recovered: bool,
    /// Largest gap between consecutive evaluations of the scaling rule that the observer saw.
    pub evaluation_gap_max_seconds: Option<f64>,
    /// Mean gap between consecutive evaluations of the scaling rule.
    pub evaluation_gap_mean_seconds: Option<f64>,
    /// Failed actions, failed jobs and demo errors.
    pub errors: u32,
    /// Everything above happened, within target, with no errors.
    pub loop_closed: bool,
}

/// The narrator's state.
#[derive(Debug, Clone)]
pub struct Story {
    start: u64,
    slo: f64,
    floor: f64,
    max_breach_to_scale: f64,
    summary: Summary,
    action_status: BTreeMap<String, ActionStatus>,
    decisions_seen: BTreeSet<String>,
    first_breach: Option<u64>,
    first_scale_out: Option<u64>,
    drift_told: bool,
    first_version: Option<String>,
    versions: BTreeSet<String>,
    demo_errors: u32,
    failed_keys: BTreeSet<String>,
    load_falls_at: Option<u64>,
    last_evaluation: Option<u64>,
    data_since: Option<u64>,
    gaps: (u32, f64),
}

fn secs(a: u64, b: u64) -> f64 {
    (b as f64 - a as f64) / 1e9
}

impl Story {
    /// A story starting at `start` (Unix nanos), with the SLO (s), the confidence floor and the
    /// largest acceptable breach-to-scale time (s).
    pub fn new(start: u64, slo: f64, floor: f64, max_breach_to_scale: f64) -> Story {
        Story {
            start,
            slo,
            floor,
            max_breach_to_scale,
            summary: Summary::default(),
            action_status: BTreeMap::new(),
            decisions_seen: BTreeSet::new(),
            first_breach: None,
            first_scale_out: None,
            drift_told: false,
            first_version: None,
            versions: BTreeSet::new(),
            demo_errors: 0,
            failed_keys: BTreeSet::new(),
            load_falls_at: None,
            last_evaluation: None,
            data_since: None,
            gaps: (0, 0.0),
        }
    }

    /// Tells the story when the load begins to fall (Unix nanos): scale-ins count from then.
    pub fn load_falls_at(&mut self, t: u64) {
        self.load_falls_at = Some(t);
        self.summary.load_fell_at_seconds = Some(secs(self.start, t));
    }

    fn line(&self, t: u64, text: String) -> String {
        format!("[{:6.1}s] {text}", secs(self.start, t).max(0.0))
    }

    /// Records an error of the demo itself (a child that outlived shutdown, a failed start).
    pub fn error(&mut self, t: u64, what: &str) -> String {
        self.demo_errors += 1;
        self.line(t, format!("ERROR: {what}"))
    }

    /// Takes one observation; returns the story's new lines.
    pub fn observe(&mut self, o: &Observation) -> Vec<String> {
        let mut out = Vec::new();
        // Decisions, oldest first, each told once.
        for d in o.decisions.iter().rev() {
            let id = format!("{}/{}/{}", d.policy, d.rule, d.time);
            if !d.action.is_some() || !self.decisions_seen.insert(id) {
                continue;
            }
            let inputs: Vec<String> = d
                .inputs
                .iter()
                .map(|i| match i.value {
                    Some(v) => format!("{}={v:.3} ({})", i.name, i.against),
                    None => format!("{}=no data", i.name),
                })
                .collect();
            match &d.action {
                Action::Resize { from, to } if to > from && *from == 0 => {
                    out.push(self.line(d.time, format!("Initial placement: {from} -> {to} replica(s) ({}).", d.reason)));
                }
                Action::Resize { from, to } if to > from => out.push(self.line(
                    d.time,
                    format!("Scale-out decided {from} -> {to}: {}; inputs: {}.", d.reason, inputs.join(", ")),
                )),
                Action::Resize { from, to } if self.load_fell(d.time) => out.push(self.line(
                    d.time,
                    format!("Scale-in decided {from} -> {to} after stabilization: {}; inputs: {}.", d.reason, inputs.join(", ")),
                )),
                Action::Resize { from, to } => out.push(self.line(
                    d.time,
                    format!("Scale-in decided {from} -> {to} while the load is still high: {}; inputs: {}.", d.reason, inputs.join(", ")),
                )),
                Action::StartJob { .. } => {
                    if !self.drift_told {
                        self.drift_told = true;
                        out.push(self.line(d.time, format!("Drift detected: {}; inputs: {}.", d.reason, inputs.join(", "))));
                    }
                }
                Action::None => {}
            }
            if let Some(outcome) = &d.outcome
                && outcome.status == OutcomeStatus::Failed
                && self.failed_keys.insert(format!("decision {}/{}/{}", d.policy, d.rule, d.time))
            {
                out.push(self.line(d.time, format!("ERROR: actuator failed: {}", outcome.message)));
            }
        }
        // Actions, oldest first, told on each status change.
        for a in o.actions.iter().rev() {
            let before = self.action_status.insert(a.key.clone(), a.status);
            if before == Some(a.status) {
                continue;
            }
            match (&a.action, a.status) {
                (Action::Resize { from, to }, ActionStatus::Applied) => {
                    if *from >= 1 && to > from {
                        self.summary.scale_outs += 1;
                        if self.first_scale_out.is_none() {
                            self.first_scale_out = Some(a.time);
                            self.summary.first_scale_out_at_seconds =
                                Some(secs(self.start, a.time));
                            if let Some(b) = self.first_breach {
                                self.summary.breach_to_scale_seconds = Some(secs(b, a.time));
                            }
                        }
                        out.push(self.line(
                            a.updated,
                            format!("Scale-out applied: {from} -> {to} replicas."),
                        ));
                    } else if to < from && self.load_fell(a.time) {
                        self.summary.scale_ins += 1;
                        if self.summary.first_scale_in_at_seconds.is_none() {
                            self.summary.first_scale_in_at_seconds = Some(secs(self.start, a.time));
                        }
                        out.push(self.line(
                            a.updated,
                            format!(
                                "Scale-in applied: {from} -> {to} replicas (the load has fallen)."
                            ),
                        ));
                    } else if to < from {
                        self.summary.scale_ins_under_load += 1;
                        out.push(self.line(a.updated, format!("Scale-in applied under load: {from} -> {to} replicas (a flap; not counted).")));
                    }
                }
                (Action::StartJob { .. }, ActionStatus::Applied | ActionStatus::Running)
                    if before.is_none() || before == Some(ActionStatus::Pending) =>
                {
                    self.summary.retrain_jobs += 1;
                    out.push(self.line(a.updated, format!("Retrain job started ({}).", a.key)));
                }
                (Action::StartJob { .. }, ActionStatus::Succeeded) => {
                    if before.is_none() {
                        self.summary.retrain_jobs += 1;
                    }
                    out.push(self.line(a.updated, "Retrain job succeeded.".to_owned()));
                }
                (_, ActionStatus::Failed | ActionStatus::JobFailed)
                    if self.failed_keys.insert(a.key.clone()) =>
                {
                    let msg = a.outcome.as_ref().map(|o| o.message.clone()).unwrap_or_default();
                    out.push(
                        self.line(a.updated, format!("ERROR: action {} failed: {msg}", a.key)),
                    );
                }
                _ => {}
            }
        }
        // Evaluation cadence of the scaling rule, from the first observation with latency data
        // on (before it, evaluations without data record no recommendation).
        if self.data_since.is_none() && o.p95.is_some() {
            self.data_since = Some(o.time);
        }
        let since = self.data_since.unwrap_or(u64::MAX);
        let mut evals: Vec<u64> = o
            .evaluations
            .iter()
            .copied()
            .filter(|t| *t >= since && self.last_evaluation.is_none_or(|l| *t > l))
            .collect();
        evals.sort_unstable();
        evals.dedup();
        for t in evals {
            if let Some(l) = self.last_evaluation {
                let gap = secs(l, t);
                self.gaps = (self.gaps.0 + 1, self.gaps.1 + gap);
                self.summary.evaluation_gap_mean_seconds =
                    Some(self.gaps.1 / f64::from(self.gaps.0));
                if self.summary.evaluation_gap_max_seconds.is_none_or(|g| gap > g) {
                    self.summary.evaluation_gap_max_seconds = Some(gap);
                }
            }
            self.last_evaluation = Some(t);
        }
        // Latency, seen by the observer.
        if let Some(p95) = o.p95 {
            if o.ready_replicas >= 1 && self.first_breach.is_none() && p95 > SCALE_THRESHOLD_SECONDS
            {
                self.first_breach = Some(o.time);
                out.push(self.line(
                    o.time,
                    format!(
                        "Latency breach measurable: p95 {:.0} ms > {:.0} ms.",
                        p95 * 1e3,
                        SCALE_THRESHOLD_SECONDS * 1e3
                    ),
                ));
                if let Some(s) = self.first_scale_out {
                    self.summary.breach_to_scale_seconds = Some(secs(o.time, s));
                }
            }
            if !self.summary.latency_recovered
                && self.first_scale_out.is_some_and(|s| o.time > s)
                && p95 < self.slo
            {
                self.summary.latency_recovered = true;
                out.push(self.line(
                    o.time,
                    format!(
                        "Latency back under the SLO: p95 {:.0} ms < {:.0} ms.",
                        p95 * 1e3,
                        self.slo * 1e3
                    ),
                ));
            }
        }
        // Model versions and confidence.
        for (version, mean) in &o.confidence {
            if self.versions.insert(version.clone()) {
                if self.first_version.is_none() {
                    self.first_version = Some(version.clone());
                    out.push(self.line(
                        o.time,
                        format!("Model version {version} serving (mean confidence {mean:.3})."),
                    ));
                } else {
                    out.push(self.line(o.time, format!("New model version {version} serving.")));
                }
            }
        }
        if !self.summary.confidence_recovered
            && let Some(newest) = o
                .confidence
                .keys()
                .filter(|v| Some(*v) != self.first_version.as_ref())
                .max_by_key(|v| v.parse::<u64>().unwrap_or(0))
            && let Some(mean) = o.confidence.get(newest)
            && *mean >= self.floor
        {
            self.summary.confidence_recovered = true;
            out.push(self.line(
                o.time,
                format!(
                    "Confidence recovered: version {newest} mean {mean:.3} >= {:.2}.",
                    self.floor
                ),
            ));
        }
        out
    }

    /// Whether the load had begun to fall at `t`.
    fn load_fell(&self, t: u64) -> bool {
        self.load_falls_at.is_some_and(|f| t >= f)
    }

    /// The summary so far.
    pub fn summary(&self) -> Summary {
        let mut s = self.summary.clone();
        let mut versions: Vec<String> = self.versions.iter().cloned().collect();
        versions.sort_by_key(|v| v.parse::<u64>().unwrap_or(u64::MAX));
        s.model_versions_seen = versions;
        s.errors = self.failed_keys.len() as u32 + self.demo_errors;
        s.loop_closed = s.scale_outs >= 1
            && s.scale_ins >= 1
            && s.scale_ins_under_load == 0
            && s.retrain_jobs >= 1
            && s.model_versions_seen.len() >= 2
            && s.latency_recovered
            && s.confidence_recovered
            && s.errors == 0
            && s.breach_to_scale_seconds.is_some_and(|d| d <= self.max_breach_to_scale);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoker_collector::policy::engine::RuleKind;
    use stoker_collector::policy::format::Mode;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn decision(t: u64, rule: &str, action: Action) -> Decision {
        Decision {
            time: T0 + t,
            policy: "demo-cnn".into(),
            rule: rule.into(),
            kind: if rule == "scale" { RuleKind::Scale } else { RuleKind::Retrain },
            mode: Mode::Enforce,
            inputs: Vec::new(),
            current: None,
            recommendation: None,
            condition: None,
            constraints: Vec::new(),
            action,
            reason: "because".into(),
            key: None,
            outcome: None,
        }
    }

    fn action(t: u64, key: &str, action: Action, status: ActionStatus) -> ActionRecord {
        ActionRecord {
            key: key.into(),
            time: T0 + t,
            policy: "demo-cnn".into(),
            rule: "scale".into(),
            action,
            dry_run: false,
            status,
            outcome: None,
            updated: T0 + t,
            actuation: None,
        }
    }

    fn obs(t: u64, p95: Option<f64>, conf: &[(&str, f64)]) -> Observation {
        Observation {
            time: T0 + t,
            p95,
            confidence: conf.iter().map(|(v, c)| (v.to_string(), *c)).collect(),
            ready_replicas: 1,
            ..Observation::default()
        }
    }

    #[test]
    fn whole_loop_closes_and_measures_breach_to_scale() {
        let mut story = Story::new(T0, 0.150, 0.85, 2.0);
        let out = story.observe(&obs(S, Some(0.05), &[("1", 0.97)]));
        assert!(out.iter().any(|l| l.contains("Model version 1 serving")));
        // Observer sees the breach at 10 s; the engine scales at 11 s.
        story.observe(&obs(10 * S, Some(0.2), &[("1", 0.97)]));
        let up = Action::Resize { from: 1, to: 3 };
        let mut o = obs(11 * S, Some(0.3), &[("1", 0.97)]);
        o.decisions = vec![decision(11 * S, "scale", up.clone())];
        o.actions = vec![action(11 * S, "k1", up, ActionStatus::Applied)];
        let out = story.observe(&o);
        assert!(out.iter().any(|l| l.contains("Scale-out decided 1 -> 3")), "{out:?}");
        story.observe(&obs(20 * S, Some(0.09), &[("1", 0.97)]));
        let job = Action::StartJob { params: BTreeMap::new() };
        let mut o = obs(30 * S, Some(0.09), &[("1", 0.55)]);
        o.decisions = vec![decision(30 * S, "confidence-drift", job.clone())];
        o.actions = vec![action(30 * S, "k2", job.clone(), ActionStatus::Running)];
        let out = story.observe(&o);
        assert!(out.iter().any(|l| l.contains("Drift detected")));
        assert!(out.iter().any(|l| l.contains("Retrain job started")));
        let mut o = obs(40 * S, Some(0.09), &[("1", 0.55), ("2", 0.95)]);
        o.actions = vec![action(40 * S, "k2", job, ActionStatus::Succeeded)];
        let out = story.observe(&o);
        assert!(out.iter().any(|l| l.contains("New model version 2")));
        assert!(out.iter().any(|l| l.contains("Confidence recovered")));
        let before = story.summary();
        assert!(!before.loop_closed, "no scale-in yet");
        story.load_falls_at(T0 + 60 * S);
        let down = Action::Resize { from: 3, to: 1 };
        let mut o = obs(80 * S, Some(0.05), &[("2", 0.95)]);
        o.actions = vec![action(80 * S, "k3", down, ActionStatus::Applied)];
        story.observe(&o);
        let s = story.summary();
        assert_eq!((s.scale_outs, s.scale_ins, s.retrain_jobs, s.errors), (1, 1, 1, 0));
        assert_eq!(s.model_versions_seen, vec!["1", "2"]);
        assert_eq!(s.breach_to_scale_seconds, Some(1.0));
        assert_eq!(
            (s.first_scale_out_at_seconds, s.load_fell_at_seconds, s.first_scale_in_at_seconds),
            (Some(11.0), Some(60.0), Some(80.0))
        );
        assert!(s.latency_recovered && s.confidence_recovered && s.loop_closed);
    }

    #[test]
    fn scale_in_under_load_is_a_flap_and_only_a_later_one_counts() {
        let mut story = Story::new(T0, 0.150, 0.85, 2.0);
        story.load_falls_at(T0 + 100 * S);
        let up = Action::Resize { from: 1, to: 4 };
        let mut o = obs(10 * S, Some(0.2), &[]);
        o.actions = vec![action(10 * S, "up", up, ActionStatus::Applied)];
        story.observe(&o);
        let flap = Action::Resize { from: 4, to: 2 };
        let mut o = obs(50 * S, Some(0.05), &[]);
        o.decisions = vec![decision(50 * S, "scale", flap.clone())];
        o.actions = vec![action(50 * S, "flap", flap, ActionStatus::Applied)];
        let out = story.observe(&o);
        assert!(out.iter().any(|l| l.contains("while the load is still high")), "{out:?}");
        assert!(out.iter().any(|l| l.contains("under load")), "{out:?}");
        let s = story.summary();
        assert_eq!(
            (s.scale_ins, s.scale_ins_under_load, s.first_scale_in_at_seconds),
            (0, 1, None)
        );
        let down = Action::Resize { from: 4, to: 1 };
        let mut o = obs(130 * S, Some(0.05), &[]);
        o.actions = vec![action(130 * S, "down", down, ActionStatus::Applied)];
        let out = story.observe(&o);
        assert!(out.iter().any(|l| l.contains("the load has fallen")), "{out:?}");
        let s = story.summary();
        assert_eq!(
            (s.scale_ins, s.scale_ins_under_load, s.first_scale_in_at_seconds),
            (1, 1, Some(130.0))
        );
        assert!(!s.loop_closed, "a flap under load keeps the loop open");
    }

    #[test]
    fn evaluation_gaps_are_measured_once_data_flows() {
        let mut story = Story::new(T0, 0.150, 0.85, 2.0);
        // Before any latency data: not measured.
        let mut o = obs(S, None, &[]);
        o.evaluations = vec![T0, T0 + 5 * S];
        story.observe(&o);
        assert_eq!(story.summary().evaluation_gap_max_seconds, None);
        let mut o = obs(10 * S, Some(0.05), &[]);
        o.evaluations = vec![T0 + 5 * S, T0 + 10 * S, T0 + 11 * S];
        story.observe(&o);
        // Overlapping history, newest first, with repeats.
        let mut o = obs(11 * S, Some(0.05), &[]);
        o.evaluations = vec![T0 + 13 * S, T0 + 11 * S, T0 + 10 * S];
        story.observe(&o);
        assert_eq!(story.summary().evaluation_gap_max_seconds, Some(2.0));
        assert_eq!(story.summary().evaluation_gap_mean_seconds, Some(1.5));
    }

    #[test]
    fn initial_placement_is_not_a_scale_out_and_failures_count_once() {
        let mut story = Story::new(T0, 0.150, 0.85, 2.0);
        let first = Action::Resize { from: 0, to: 1 };
        let mut o = obs(S, None, &[]);
        o.decisions = vec![decision(S, "scale", first.clone())];
        o.actions = vec![action(S, "k0", first, ActionStatus::Applied)];
        let out = story.observe(&o);
        assert!(out[0].contains("Initial placement"));
        let job = Action::StartJob { params: BTreeMap::new() };
        let mut o = obs(2 * S, None, &[]);
        o.actions = vec![action(2 * S, "k1", job, ActionStatus::JobFailed)];
        story.observe(&o);
        story.observe(&o);
        let s = story.summary();
        assert_eq!((s.scale_outs, s.errors), (0, 1));
        assert!(!s.loop_closed);
    }

    #[test]
    fn slow_scale_out_does_not_close_the_loop() {
        let mut story = Story::new(T0, 0.150, 0.85, 2.0);
        story.observe(&obs(10 * S, Some(0.2), &[]));
        let up = Action::Resize { from: 1, to: 2 };
        let mut o = obs(15 * S, Some(0.2), &[]);
        o.actions = vec![action(15 * S, "k", up, ActionStatus::Applied)];
        story.observe(&o);
        assert_eq!(story.summary().breach_to_scale_seconds, Some(5.0));
    }
}
