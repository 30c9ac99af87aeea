//! Load scenarios as lists of phases: each phase has a length, a request rate that moves
//! linearly from its start to its end value, and the image distribution to draw from.

use std::time::Duration;

use serde::Serialize;

use crate::data::DataParams;

/// The named scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Base rate, clean images.
    Steady,
    /// Base rate rising linearly to the peak rate.
    Ramp,
    /// Base rate, a burst at the peak rate for the middle third, base rate again.
    Spike,
    /// Base rate; the second half uses drifted images.
    Drift,
    /// Peak rate falling linearly to the low rate.
    RampDown,
    /// The demo story, short: steady → ramp → peak → drift (at peak) → ramp down → low (~4 min).
    DemoShort,
    /// The demo story with longer phases (~11 min).
    DemoFull,
}

/// One phase of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// Name shown in logs and the summary.
    pub name: String,
    /// Length.
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,
    /// Rate at the start, requests per second.
    pub rate_from: f64,
    /// Rate at the end, requests per second.
    pub rate_to: f64,
    /// Distribution the images are drawn from.
    pub data: DataParams,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Phase {
    fn new(name: &str, duration: Duration, rate_from: f64, rate_to: f64, data: DataParams) -> Self {
        Self { name: name.to_string(), duration, rate_from, rate_to, data }
    }

    /// The rate `elapsed` into this phase.
    pub fn rate_at(&self, elapsed: Duration) -> f64 {
        let total = self.duration.as_secs_f64();
        let f = if total > 0.0 { (elapsed.as_secs_f64() / total).clamp(0.0, 1.0) } else { 1.0 };
        self.rate_from + (self.rate_to - self.rate_from) * f
    }
}

/// Rates, lengths and drift of the scenarios (the load generator's flags).
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioParams {
    /// Normal traffic, requests per second.
    pub base_rate: f64,
    /// Peak traffic, requests per second.
    pub peak_rate: f64,
    /// Traffic after the ramp down, requests per second.
    pub low_rate: f64,
    /// Length of a single (non-demo) scenario.
    pub duration: Duration,
    /// Demo phase lengths: steady, ramp, peak, drift, ramp-down, low.
    pub demo_phases: [Duration; 6],
    /// The clean distribution.
    pub clean: DataParams,
    /// The drifted distribution.
    pub drifted: DataParams,
}

/// Default demo phase lengths in seconds for `demo-short` (steady, ramp, peak, drift, ramp-down, low).
pub const DEMO_SHORT_PHASES: [u64; 6] = [20, 20, 40, 60, 20, 60];
/// Default demo phase lengths in seconds for `demo-full`.
pub const DEMO_FULL_PHASES: [u64; 6] = [60, 60, 120, 180, 60, 180];

/// The phases of `kind` with `p`'s rates and lengths.
pub fn phases(kind: ScenarioKind, p: &ScenarioParams) -> Vec<Phase> {
    let (clean, drifted) = (p.clean, p.drifted);
    let third = p.duration / 3;
    match kind {
        ScenarioKind::Steady => {
            vec![Phase::new("steady", p.duration, p.base_rate, p.base_rate, clean)]
        }
        ScenarioKind::Ramp => vec![Phase::new("ramp", p.duration, p.base_rate, p.peak_rate, clean)],
        ScenarioKind::Spike => vec![
            Phase::new("before-spike", third, p.base_rate, p.base_rate, clean),
            Phase::new("spike", third, p.peak_rate, p.peak_rate, clean),
            Phase::new("after-spike", p.duration - 2 * third, p.base_rate, p.base_rate, clean),
        ],
        ScenarioKind::Drift => vec![
            Phase::new("clean", p.duration / 2, p.base_rate, p.base_rate, clean),
            Phase::new("drift", p.duration - p.duration / 2, p.base_rate, p.base_rate, drifted),
        ],
        ScenarioKind::RampDown => {
            vec![Phase::new("ramp-down", p.duration, p.peak_rate, p.low_rate, clean)]
        }
        ScenarioKind::DemoShort | ScenarioKind::DemoFull => {
            let [steady, ramp, peak, drift, down, low] = p.demo_phases;
            vec![
                Phase::new("steady", steady, p.base_rate, p.base_rate, clean),
                Phase::new("ramp", ramp, p.base_rate, p.peak_rate, clean),
                Phase::new("peak", peak, p.peak_rate, p.peak_rate, clean),
                Phase::new("drift", drift, p.peak_rate, p.peak_rate, drifted),
                Phase::new("ramp-down", down, p.peak_rate, p.low_rate, drifted),
                Phase::new("low", low, p.low_rate, p.low_rate, drifted),
            ]
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report
mod tests {
    use super::*;

    fn params() -> ScenarioParams {
        ScenarioParams {
            base_rate: 10.0,
            peak_rate: 50.0,
            low_rate: 5.0,
            duration: Duration::from_secs(30),
            demo_phases: DEMO_SHORT_PHASES.map(Duration::from_secs),
            clean: DataParams::default(),
            drifted: DataParams::demo_drift(),
        }
    }

    #[test]
    fn ramp_interpolates_and_spike_splits_in_thirds() {
        let ramp = &phases(ScenarioKind::Ramp, &params())[0];
        assert_eq!(ramp.rate_at(Duration::ZERO), 10.0);
        assert_eq!(ramp.rate_at(Duration::from_secs(15)), 30.0);
        assert_eq!(ramp.rate_at(Duration::from_secs(99)), 50.0);
        let spike = phases(ScenarioKind::Spike, &params());
        assert_eq!(
            spike.iter().map(|p| p.duration.as_secs()).collect::<Vec<_>>(),
            vec![10, 10, 10]
        );
        assert_eq!(spike[1].rate_from, 50.0);
    }

    #[test]
    fn demo_story_drifts_after_the_peak_and_stays_drifted() {
        let demo = phases(ScenarioKind::DemoShort, &params());
        let names: Vec<_> = demo.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["steady", "ramp", "peak", "drift", "ramp-down", "low"]);
        assert!(demo[..3].iter().all(|p| p.data == DataParams::default()));
        assert!(demo[3..].iter().all(|p| p.data == DataParams::demo_drift()));
        let total: u64 = demo.iter().map(|p| p.duration.as_secs()).sum();
        assert_eq!(total, DEMO_SHORT_PHASES.iter().sum::<u64>());
    }
}
