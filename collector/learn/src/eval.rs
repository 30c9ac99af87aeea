//! Evaluation harness: generated traces with known structure and a replay-style scaling
//! simulation. Used by the tests and the `evaluate` example to measure what the models buy;
//! the real backtest of policies is `policy replay` in the collector, which calls the same
//! forecaster.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::forecast::{self, ForecastConfig};
use crate::series::{RegularSeries, Sample};

/// Seeded standard-normal generator (Box–Muller over a `SmallRng`): traces are reproducible.
#[derive(Clone, Debug)]
pub struct Gauss {
    rng: SmallRng,
    spare: Option<f64>,
}

impl Gauss {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            spare: None,
        }
    }

    /// The next N(0, 1) draw.
    pub fn next(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1: f64 = self.rng.r#gen::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = self.rng.r#gen();
        let r = (-2.0 * u1.ln()).sqrt();
        self.spare = Some(r * (std::f64::consts::TAU * u2).sin());
        r * (std::f64::consts::TAU * u2).cos()
    }

    /// A uniform draw in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        self.rng.r#gen()
    }
}

/// Start of every generated trace: 2023-11-15 00:00:00 UTC, a midnight, in Unix seconds.
pub const TRACE_START_S: u64 = 1_700_006_400;

/// A generated load trace (requests per second) on a regular step.
#[derive(Clone, Debug)]
pub struct Trace {
    /// Short name for tables.
    pub name: &'static str,
    /// Sample step.
    pub step: Duration,
    /// The samples, in time order.
    pub samples: Vec<Sample>,
}

fn build(name: &'static str, step_s: u64, n: usize, mut f: impl FnMut(f64) -> f64) -> Trace {
    let samples = (0..n)
        .map(|i| {
            let t_s = i as u64 * step_s;
            Sample::new((TRACE_START_S + t_s) * 1_000_000_000, f(t_s as f64).max(0.0))
        })
        .collect();
    Trace {
        name,
        step: Duration::from_secs(step_s),
        samples,
    }
}

/// Daily cycle plus noise: quiet at night (~30 rps), a morning ramp to a ~300 rps afternoon
/// plateau, an evening decline; multiplicative noise of `noise` (e.g. 0.04) per 10 s sample.
pub fn diurnal(days: u32, noise: f64, seed: u64) -> Trace {
    let mut g = Gauss::new(seed);
    build("diurnal", 10, days as usize * 8640, |t| {
        diurnal_level(t) * (1.0 + noise * g.next())
    })
}

/// The noiseless level of [`diurnal`] at `t` seconds after midnight.
pub fn diurnal_level(t: f64) -> f64 {
    let hour = (t / 3600.0) % 24.0;
    // A smooth business-day shape: logistic rise around 08:00, fall around 20:00.
    let rise = 1.0 / (1.0 + (-(hour - 8.0) / 0.8).exp());
    let fall = 1.0 / (1.0 + ((hour - 20.0) / 1.2).exp());
    30.0 + 270.0 * rise * fall
}

/// A slow ramp: linear growth from `from` to `to` rps over `hours`, with noise.
pub fn slow_ramp(hours: u32, from: f64, to: f64, noise: f64, seed: u64) -> Trace {
    let mut g = Gauss::new(seed);
    let n = hours as usize * 360;
    let span = f64::from(hours) * 3600.0;
    build("slow-ramp", 10, n, |t| {
        (from + (to - from) * t / span) * (1.0 + noise * g.next())
    })
}

/// A step change: `before` rps, then `after` from `at_hour` on, with noise.
pub fn step_change(hours: u32, at_hour: u32, before: f64, after: f64, noise: f64, seed: u64) -> Trace {
    let mut g = Gauss::new(seed);
    let at = f64::from(at_hour) * 3600.0;
    build("step", 10, hours as usize * 360, |t| {
        (if t < at { before } else { after }) * (1.0 + noise * g.next())
    })
}

/// A flat load with one spike: `level` rps, `factor`× for `minutes` starting at `at_hour`.
pub fn spike(hours: u32, at_hour: u32, minutes: u32, level: f64, factor: f64, noise: f64, seed: u64) -> Trace {
    let mut g = Gauss::new(seed);
    let (a, b) = (f64::from(at_hour) * 3600.0, f64::from(at_hour) * 3600.0 + f64::from(minutes) * 60.0);
    build("spike", 10, hours as usize * 360, |t| {
        let l = if (a..b).contains(&t) { level * factor } else { level };
        l * (1.0 + noise * g.next())
    })
}

/// The capacity model of the simulated service.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Capacity {
    /// Requests per second one ready replica serves at 100 % utilisation.
    pub per_replica_rps: f64,
    /// Time from a scale-out decision until the new replica serves.
    pub warmup: Duration,
    /// Minimum replicas.
    pub min: u32,
    /// Maximum replicas.
    pub max: u32,
    /// The scaler's target utilisation (HPA-style target tracking).
    pub target_utilization: f64,
    /// Above this utilisation of the ready replicas, latency breaks the SLO.
    pub slo_utilization: f64,
}

/// Which scaler drives the simulation.
#[derive(Clone, Debug, PartialEq)]
pub enum Scaler {
    /// HPA-like target tracking on the mean load of the last 30 s: 10 % tolerance,
    /// immediate scale-out, scale-in to the highest recommendation of the last 5 minutes.
    Reactive,
    /// The same reactive scaler with a forecast floor: the replicas the load forecast one
    /// warm-up ahead needs. The floor only raises; scale-in stays the reactive scaler's.
    ForecastFloor {
        /// Forecaster configuration (its horizon should be the warm-up).
        config: ForecastConfig,
        /// Refit interval.
        refit_every: Duration,
    },
}

/// What a simulated run cost and how often it broke the SLO.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimReport {
    /// Minutes during which the load exceeded the SLO utilisation of the ready replicas.
    pub slo_violation_minutes: f64,
    /// Replica-hours paid for (ready and warming replicas).
    pub replica_hours: f64,
    /// Number of scale-out actions.
    pub scale_outs: usize,
    /// Evaluations at which the forecast floor was above the reactive recommendation.
    pub floor_raised: usize,
}

/// Replays `trace` through the capacity model under `scaler`, evaluating every sample step,
/// and scores from `score_from` after the trace start (earlier steps only warm up the scaler
/// and the forecaster). Both scalers see the same load; only the recommendation differs.
pub fn simulate(trace: &Trace, capacity: &Capacity, scaler: &Scaler, score_from: Duration) -> SimReport {
    let step_s = trace.step.as_secs_f64();
    let load: Vec<f64> = trace.samples.iter().map(|s| s.value).collect();
    let n = load.len();
    let warm_steps = (capacity.warmup.as_secs_f64() / step_s).ceil() as usize;
    let metric_steps = ((30.0 / step_s).ceil() as usize).max(1);
    let stab_steps = (300.0 / step_s).ceil() as usize;
    let score_start = (score_from.as_secs_f64() / step_s) as usize;
    let per = capacity.per_replica_rps * capacity.target_utilization;
    let clamp = |r: f64| (r.ceil().max(0.0) as u32).clamp(capacity.min, capacity.max);

    let series = RegularSeries::from_values(trace.samples.first().map_or(0, |s| s.t_ns), trace.step, &load);
    let floor_source = match scaler {
        Scaler::Reactive => None,
        Scaler::ForecastFloor { config, refit_every } => Some((
            forecast::Features::new(&series, config.max_gap_steps),
            config,
            ((refit_every.as_secs_f64() / step_s).ceil() as usize).max(1),
        )),
    };
    let mut model: Option<forecast::ForecastModel> = None;
    let mut last_fit: Option<usize> = None;

    // Replicas: ready count and the steps at which warming ones become ready.
    let mut ready = capacity.min;
    let mut warming: std::collections::VecDeque<usize> = Default::default();
    let mut recent: std::collections::VecDeque<u32> = Default::default();
    let mut report = SimReport {
        slo_violation_minutes: 0.0,
        replica_hours: 0.0,
        scale_outs: 0,
        floor_raised: 0,
    };
    for i in 0..n {
        while warming.front().is_some_and(|r| *r <= i) {
            warming.pop_front();
            ready += 1;
        }
        let total = ready + warming.len() as u32;
        // Reactive recommendation with tolerance and scale-in stabilisation.
        let lo = (i + 1).saturating_sub(metric_steps);
        let observed = load[lo..=i].iter().sum::<f64>() / (i + 1 - lo) as f64;
        let ratio = observed / (f64::from(total) * per);
        let raw = if (ratio - 1.0).abs() <= 0.1 { total } else { clamp(observed / per) };
        recent.push_back(raw);
        if recent.len() > stab_steps {
            recent.pop_front();
        }
        let stabilised = if raw >= total { raw } else { recent.iter().copied().max().unwrap_or(raw).min(total) };
        let mut desired = stabilised;
        if let Some((features, config, refit)) = &floor_source {
            if last_fit.is_none_or(|f| i - f >= *refit) {
                last_fit = Some(i);
                if let Ok(m) = forecast::fit_window(&series, features, i + 1, config) {
                    model = Some(m);
                }
            }
            if let Some(f) = model.as_ref().and_then(|m| m.predict_at(features, i)) {
                let floor = clamp(f.value / per);
                if floor > desired {
                    desired = floor;
                    report.floor_raised += 1;
                }
            }
        }
        if desired > total {
            report.scale_outs += 1;
            for _ in total..desired {
                warming.push_back(i + warm_steps);
            }
        } else if desired < total {
            // Scale in: cancel warming replicas first, then stop ready ones.
            for _ in desired..total {
                if warming.pop_back().is_none() {
                    ready = ready.saturating_sub(1);
                }
            }
        }
        if i >= score_start {
            let paid = ready + warming.len() as u32;
            report.replica_hours += f64::from(paid) * step_s / 3600.0;
            if load[i] > f64::from(ready) * capacity.per_replica_rps * capacity.slo_utilization {
                report.slo_violation_minutes += step_s / 60.0;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_is_seeded_and_standard() {
        let mut g = Gauss::new(9);
        let xs: Vec<f64> = (0..20_000).map(|_| g.next()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
        assert_eq!(Gauss::new(9).next(), xs[0]);
    }

    #[test]
    fn diurnal_shape_is_quiet_at_night_busy_in_the_afternoon() {
        assert!(diurnal_level(3.0 * 3600.0) < 35.0);
        assert!(diurnal_level(15.0 * 3600.0) > 290.0);
        let t = diurnal(1, 0.0, 1);
        assert_eq!(t.samples.len(), 8640);
        assert_eq!(t.samples[0].t_ns, TRACE_START_S * 1_000_000_000);
    }

    #[test]
    fn a_fixed_fleet_never_scales_and_counts_saturation() {
        // min = max = 2 replicas of 10 rps, SLO at 90 %: a flat 20 rps load violates always.
        let trace = step_change(1, 2, 20.0, 20.0, 0.0, 1);
        let cap = Capacity {
            per_replica_rps: 10.0,
            warmup: Duration::from_secs(60),
            min: 2,
            max: 2,
            target_utilization: 0.7,
            slo_utilization: 0.9,
        };
        let r = simulate(&trace, &cap, &Scaler::Reactive, Duration::ZERO);
        assert_eq!(r.scale_outs, 0);
        assert!((r.slo_violation_minutes - 60.0).abs() < 1e-9, "{r:?}");
        assert!((r.replica_hours - 2.0).abs() < 1e-9, "{r:?}");
    }
}
