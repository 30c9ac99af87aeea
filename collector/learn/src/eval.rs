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
        Self { rng: SmallRng::seed_from_u64(seed), spare: None }
    }

    /// The next N(0, 1) draw.
    pub fn normal(&mut self) -> f64 {
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
    Trace { name, step: Duration::from_secs(step_s), samples }
}

/// Daily cycle plus noise: quiet at night (~30 rps), a morning ramp to a ~300 rps afternoon
/// plateau, an evening decline; multiplicative noise of `noise` (e.g. 0.04) per 10 s sample.
pub fn diurnal(days: u32, noise: f64, seed: u64) -> Trace {
    let mut g = Gauss::new(seed);
    build("diurnal", 10, days as usize * 8640, |t| diurnal_level(t) * (1.0 + noise * g.normal()))
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
    build("slow-ramp", 10, n, |t| (from + (to - from) * t / span) * (1.0 + noise * g.normal()))
}

/// A step change: `before` rps, then `after` from `at_hour` on, with noise.
pub fn step_change(
    hours: u32,
    at_hour: u32,
    before: f64,
    after: f64,
    noise: f64,
    seed: u64,
) -> Trace {
    let mut g = Gauss::new(seed);
    let at = f64::from(at_hour) * 3600.0;
    build("step", 10, hours as usize * 360, |t| {
        (if t < at { before } else { after }) * (1.0 + noise * g.normal())
    })
}

/// A flat load with one spike: `level` rps, `factor`× for `minutes` starting at `at_hour`.
pub fn spike(
    hours: u32,
    at_hour: u32,
    minutes: u32,
    level: f64,
    factor: f64,
    noise: f64,
    seed: u64,
) -> Trace {
    let mut g = Gauss::new(seed);
    let (a, b) =
        (f64::from(at_hour) * 3600.0, f64::from(at_hour) * 3600.0 + f64::from(minutes) * 60.0);
    build("spike", 10, hours as usize * 360, |t| {
        let l = if (a..b).contains(&t) { level * factor } else { level };
        l * (1.0 + noise * g.normal())
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
pub fn simulate(
    trace: &Trace,
    capacity: &Capacity,
    scaler: &Scaler,
    score_from: Duration,
) -> SimReport {
    let step_s = trace.step.as_secs_f64();
    let load: Vec<f64> = trace.samples.iter().map(|s| s.value).collect();
    let n = load.len();
    let warm_steps = (capacity.warmup.as_secs_f64() / step_s).ceil() as usize;
    let metric_steps = ((30.0 / step_s).ceil() as usize).max(1);
    let stab_steps = (300.0 / step_s).ceil() as usize;
    let score_start = (score_from.as_secs_f64() / step_s) as usize;
    let per = capacity.per_replica_rps * capacity.target_utilization;
    let clamp = |r: f64| (r.ceil().max(0.0) as u32).clamp(capacity.min, capacity.max);

    let series =
        RegularSeries::from_values(trace.samples.first().map_or(0, |s| s.t_ns), trace.step, &load);
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
        let stabilised =
            if raw >= total { raw } else { recent.iter().copied().max().unwrap_or(raw).min(total) };
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
        let xs: Vec<f64> = (0..20_000).map(|_| g.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
        assert_eq!(Gauss::new(9).normal(), xs[0]);
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

/// Forecast error of one trace at the horizon: model against naive last value.
#[derive(Clone, Debug, PartialEq)]
pub struct ForecastRow {
    /// Trace name.
    pub trace: &'static str,
    /// The backtest's figures.
    pub report: crate::forecast::BacktestReport,
}

/// The forecaster at a 5-minute horizon (10 s steps, hourly refits) on every generated
/// trace: diurnal (3 days, scored on the last 2), step change, spike and slow ramp (scored
/// after 2 hours).
pub fn forecast_evaluation(seed: u64) -> Result<Vec<ForecastRow>, crate::LearnError> {
    let cfg = ForecastConfig::new(Duration::from_secs(10), Duration::from_secs(300));
    let hour = Duration::from_secs(3600);
    let cases = [
        (diurnal(3, 0.04, seed), Duration::from_secs(86_400)),
        (step_change(8, 4, 100.0, 160.0, 0.04, seed + 1), 2 * hour),
        (spike(8, 4, 5, 100.0, 3.0, 0.04, seed + 2), 2 * hour),
        (slow_ramp(6, 10.0, 370.0, 0.04, seed + 3), hour),
    ];
    cases
        .into_iter()
        .map(|(trace, warmup)| {
            let plan = crate::forecast::BacktestPlan { warmup, refit_every: hour };
            Ok(ForecastRow {
                trace: trace.name,
                report: crate::forecast::backtest(&trace.samples, &cfg, &plan)?,
            })
        })
        .collect()
}

/// Detection quality against injected ground truth.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Detection {
    /// Flags that were injected anomalies.
    pub true_positives: usize,
    /// Flags on normal points.
    pub false_positives: usize,
    /// Injected anomalies not flagged.
    pub false_negatives: usize,
}

impl Detection {
    /// TP / (TP + FP); 1 when nothing was flagged.
    pub fn precision(&self) -> f64 {
        let flagged = self.true_positives + self.false_positives;
        if flagged == 0 { 1.0 } else { self.true_positives as f64 / flagged as f64 }
    }

    /// TP / (TP + FN); 1 when nothing was injected.
    pub fn recall(&self) -> f64 {
        let injected = self.true_positives + self.false_negatives;
        if injected == 0 { 1.0 } else { self.true_positives as f64 / injected as f64 }
    }

    fn count(&mut self, flagged: bool, injected: bool) {
        match (flagged, injected) {
            (true, true) => self.true_positives += 1,
            (true, false) => self.false_positives += 1,
            (false, true) => self.false_negatives += 1,
            (false, false) => {}
        }
    }
}

/// Fleet comparison on `rounds` generated fleets of 40 nodes (features: p95 latency at 60 %
/// GPU load ≈ 50 ± 3 ms, power at 60 % utilisation ≈ 250 ± 10 W). Each node is anomalous with
/// probability 5 %: latency +40 % (20 ms, ~7σ) or power −25 % (~6σ).
pub fn peer_evaluation(rounds: usize, seed: u64) -> Result<Detection, crate::LearnError> {
    let mut g = Gauss::new(seed);
    let det = crate::anomaly::PeerDetector::new(vec![
        "p95_latency_at_60pct_gpu_s".into(),
        "power_at_60pct_util_w".into(),
    ]);
    let mut d = Detection::default();
    for _ in 0..rounds {
        let mut injected = Vec::new();
        let subjects: Vec<crate::anomaly::Subject> = (0..40)
            .map(|i| {
                let mut values = vec![0.050 + 0.003 * g.normal(), 250.0 + 10.0 * g.normal()];
                let bad = g.uniform() < 0.05;
                if bad {
                    if g.uniform() < 0.5 {
                        values[0] *= 1.4;
                    } else {
                        values[1] *= 0.75;
                    }
                }
                injected.push(bad);
                crate::anomaly::Subject { id: format!("node-{i}"), values }
            })
            .collect();
        let flagged: std::collections::HashSet<String> =
            det.detect(&subjects)?.into_iter().map(|a| a.subject).collect();
        for (s, bad) in subjects.iter().zip(injected) {
            d.count(flagged.contains(&s.id), bad);
        }
    }
    Ok(d)
}

/// Own-history detection for one GPU: 2000 history samples of (utilisation, power = 80 W +
/// 220 W × utilisation ± 6 W), then a stream of `n` samples of which 3 % have power shifted
/// by ±40–80 W at the same utilisation.
pub fn history_evaluation(n: usize, seed: u64) -> Result<Detection, crate::LearnError> {
    let mut g = Gauss::new(seed);
    let sample = |g: &mut Gauss| {
        let u = g.uniform();
        vec![u, 80.0 + 220.0 * u + 6.0 * g.normal()]
    };
    let history: Vec<Vec<f64>> = (0..2000).map(|_| sample(&mut g)).collect();
    let cfg = crate::anomaly::HistoryConfig::new(vec!["gpu_utilization".into(), "power_w".into()]);
    let model = crate::anomaly::HistoryModel::fit(&history, &cfg)?;
    let mut d = Detection::default();
    for _ in 0..n {
        let mut x = sample(&mut g);
        let bad = g.uniform() < 0.03;
        if bad {
            let shift = 40.0 + 40.0 * g.uniform();
            x[1] += if g.uniform() < 0.5 { shift } else { -shift };
        }
        d.count(model.check("gpu-0", &x).is_some(), bad);
    }
    Ok(d)
}

/// Classifier-drift figures on confidence streams.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriftEvaluation {
    /// Windows scored on streams without drift.
    pub clean_windows: usize,
    /// Of those, windows that alerted.
    pub false_alarms: usize,
    /// Drift streams evaluated.
    pub drift_streams: usize,
    /// Drift streams whose drift was detected at all.
    pub detected: usize,
    /// Mean detection delay, in windows after the onset, over detected streams.
    pub mean_delay_windows: f64,
    /// Largest detection delay, in windows.
    pub max_delay_windows: usize,
}

impl DriftEvaluation {
    /// False alarms per clean window.
    pub fn false_alarm_rate(&self) -> f64 {
        self.false_alarms as f64 / self.clean_windows.max(1) as f64
    }
}

/// Requests per drift window in [`drift_evaluation`].
pub const DRIFT_WINDOW: usize = 500;

/// Streams of per-request top-1 confidences (N(0.86, 0.07), clipped), in windows of
/// [`DRIFT_WINDOW`] requests; the first two windows are the reference. `streams` clean streams
/// of 20 windows measure false alarms; `streams` drift streams get a gradual drift from window
/// 8 (mean −0.01 and spread +0.005 per window, the look of a slowly shifting input
/// population) and measure the delay until the first alert.
pub fn drift_evaluation(
    streams: usize,
    seed: u64,
    cfg: &crate::drift::DriftConfig,
) -> Result<DriftEvaluation, crate::LearnError> {
    use crate::drift::{classifier_drift, confidence_features};
    const WINDOWS: usize = 20;
    const ONSET: usize = 8;
    let mut g = Gauss::new(seed);
    let window = |g: &mut Gauss, mean: f64, sd: f64| -> Vec<[f64; 3]> {
        (0..DRIFT_WINDOW)
            .map(|_| confidence_features((mean + sd * g.normal()).clamp(0.05, 0.999)))
            .collect()
    };
    let mut out = DriftEvaluation {
        clean_windows: 0,
        false_alarms: 0,
        drift_streams: streams,
        detected: 0,
        mean_delay_windows: 0.0,
        max_delay_windows: 0,
    };
    let mut delays = Vec::new();
    for s in 0..2 * streams {
        let drifting = s % 2 == 1;
        let mut reference = window(&mut g, 0.86, 0.07);
        reference.extend(window(&mut g, 0.86, 0.07));
        for w in 2..WINDOWS {
            let k = if drifting && w >= ONSET { (w - ONSET + 1) as f64 } else { 0.0 };
            let current = window(&mut g, 0.86 - 0.01 * k, 0.07 + 0.005 * k);
            let alert = classifier_drift(&reference, &current, cfg)?.alert;
            if !drifting || w < ONSET {
                out.clean_windows += 1;
                out.false_alarms += usize::from(alert);
            } else if alert {
                delays.push(w - ONSET);
                break;
            }
        }
    }
    out.detected = delays.len();
    out.mean_delay_windows = delays.iter().sum::<usize>() as f64 / delays.len().max(1) as f64;
    out.max_delay_windows = delays.iter().copied().max().unwrap_or(0);
    Ok(out)
}

/// One trace's replay: the reactive scaler and the same scaler with a forecast floor.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalingRow {
    /// Trace name.
    pub trace: &'static str,
    /// HPA-like reactive scaler.
    pub reactive: SimReport,
    /// Reactive with the forecast floor.
    pub predictive: SimReport,
}

/// The capacity model of [`scaling_evaluation`]: 10 rps per replica, 5-minute warm-up,
/// 2–80 replicas, target utilisation 75 %, SLO broken above 90 %.
pub const EVAL_CAPACITY: Capacity = Capacity {
    per_replica_rps: 10.0,
    warmup: Duration::from_secs(300),
    min: 2,
    max: 80,
    target_utilization: 0.75,
    slo_utilization: 0.9,
};

/// Replays the diurnal (3 days, scored on the last 2) and slow-ramp (12 h, scored after 2 h)
/// traces through [`EVAL_CAPACITY`] with both scalers; the forecaster's horizon is the warm-up.
pub fn scaling_evaluation(seed: u64) -> Vec<ScalingRow> {
    let predictive = Scaler::ForecastFloor {
        config: ForecastConfig::new(Duration::from_secs(10), EVAL_CAPACITY.warmup),
        refit_every: Duration::from_secs(3600),
    };
    [
        (diurnal(3, 0.04, seed), Duration::from_secs(86_400)),
        (slow_ramp(6, 10.0, 370.0, 0.04, seed + 3), Duration::from_secs(3600)),
    ]
    .into_iter()
    .map(|(trace, from)| ScalingRow {
        trace: trace.name,
        reactive: simulate(&trace, &EVAL_CAPACITY, &Scaler::Reactive, from),
        predictive: simulate(&trace, &EVAL_CAPACITY, &predictive, from),
    })
    .collect()
}
