//! Load forecasts for predictive scaling.
//!
//! A direct forecast of the value `horizon` ahead (the target's warm-up time) from features
//! known now: the last few values and the trailing mean over six horizons, all relative to the
//! level (the mean of the last horizon), and Fourier terms of the seasonal period (daily by
//! default) at the target time. The model predicts the change from the level; it is linear, fitted by linfa (least squares, or elastic net when a penalty is configured) on
//! standardised features. Direct rather than recursive: errors of one-step models compound
//! over a 5-minute horizon at 10-second steps, and the policy only needs the value at warm-up.
//!
//! The caller owns the schedule: [`fit`] on the store's history when it decides to refit, then
//! [`ForecastModel::predict_from`] with the latest samples each evaluation. Below
//! `min_history` observed, [`fit`] refuses and the policy stays reactive. [`backtest`] replays
//! a series with rolling refits and returns the MAPE of the model and of the naive last-value
//! forecast at the horizon: the per-target error figure for the API and dashboard.

use std::f64::consts::TAU;
use std::time::Duration;

use linfa::prelude::*;
use linfa_elasticnet::ElasticNet;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};

use crate::LearnError;
use crate::score::mape;
use crate::series::{RegularSeries, Sample};
use crate::spec::ForecastSpec;

/// Relative ridge added to least squares (see [`Regressor::LeastSquares`]).
pub const RIDGE: f64 = 1e-6;

pub use crate::spec::DAILY;

/// The linfa regression that fits the linear model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Regressor {
    /// Least squares (linfa-linear) with a vanishing ridge ([`RIDGE`]) so collinear lags stay
    /// solvable.
    LeastSquares,
    /// Elastic net (linfa-elasticnet) on standardised features.
    ElasticNet {
        /// Overall penalty strength.
        penalty: f64,
        /// Share of L1 in the penalty (0 = ridge, 1 = lasso).
        l1_ratio: f64,
    },
}

/// Numeric configuration of the forecaster.
#[derive(Clone, Debug, PartialEq)]
pub struct ForecastConfig {
    /// Grid step of the input series (the store's resolution, e.g. 10 s).
    pub step: Duration,
    /// How far ahead to forecast.
    pub horizon: Duration,
    /// Only the most recent `history` of the input is fitted on.
    pub history: Duration,
    /// Minimum observed history (observed points × step) for a model.
    pub min_history: Duration,
    /// Seasonal period of the Fourier terms.
    pub period: Duration,
    /// Number of Fourier harmonics (sin and cos each); used only once the fitted history
    /// covers a whole period, since a partial cycle would be extrapolated blindly.
    pub fourier_order: usize,
    /// Number of most recent values used as lag features.
    pub lags: usize,
    /// Gaps of at most this many steps are filled forward for features; longer gaps make the
    /// affected rows (and a forecast from inside them) unavailable.
    pub max_gap_steps: usize,
    /// Which linfa regression to use.
    pub regressor: Regressor,
}

impl ForecastConfig {
    /// Defaults for a series of `step` forecast `horizon` ahead: 7 days of history, 1 hour
    /// minimum, daily period with 3 harmonics, 6 lags, gaps of up to 6 steps filled,
    /// least squares.
    pub fn new(step: Duration, horizon: Duration) -> Self {
        Self {
            step,
            horizon,
            history: Duration::from_secs(7 * 86_400),
            min_history: Duration::from_secs(3600),
            period: DAILY,
            fourier_order: 3,
            lags: 6,
            max_gap_steps: 6,
            regressor: Regressor::LeastSquares,
        }
    }

    /// The configuration a policy's `scale.forecast` asks for, on a series of `step`.
    pub fn from_spec(spec: &ForecastSpec, step: Duration) -> Self {
        Self {
            history: spec.history,
            min_history: spec.min_history,
            period: spec.period_or_daily(),
            ..Self::new(step, spec.horizon)
        }
    }

    fn validate(&self) -> Result<(), LearnError> {
        let bad =
            |key, reason: &str| Err(LearnError::InvalidConfig { key, reason: reason.to_owned() });
        if self.step.is_zero() {
            return bad("step", "must be greater than zero");
        }
        if self.horizon.is_zero() {
            return bad("horizon", "must be greater than zero");
        }
        if self.period < self.step {
            return bad("period", "must be at least one step");
        }
        if self.lags == 0 {
            return bad("lags", "at least one lag is needed");
        }
        if let Regressor::ElasticNet { penalty, l1_ratio } = self.regressor {
            if !(penalty >= 0.0 && (0.0..=1.0).contains(&l1_ratio)) {
                return bad("regressor", "penalty must be >= 0 and l1Ratio in 0..=1");
            }
        }
        Ok(())
    }

    /// The horizon in whole steps (rounded up, at least one).
    pub fn horizon_steps(&self) -> usize {
        steps(self.horizon, self.step).max(1)
    }
}

fn steps(d: Duration, step: Duration) -> usize {
    let step = step.as_nanos().max(1);
    usize::try_from(d.as_nanos().div_ceil(step)).unwrap_or(usize::MAX)
}

/// A forecast of the value at `at_ns`, with the naive forecast beside it for comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Forecast {
    /// The time forecast for, Unix nanoseconds (origin + horizon).
    pub at_ns: u64,
    /// The model's forecast, clamped at zero (loads are not negative).
    pub value: f64,
    /// The last observed value at the origin: the naive last-value forecast.
    pub last_value: f64,
}

/// Which features a fitted model reads, fixed at fit time.
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    lags: usize,
    windows: [usize; 2],
    fourier: usize,
    period_s: f64,
    h: usize,
}

impl Layout {
    fn lookback(&self) -> usize {
        self.lags.max(self.windows[0]).max(self.windows[1])
    }

    fn width(&self) -> usize {
        self.lags + 1 + 2 * self.fourier
    }
}

/// Causal feature source over a grid: forward-filled values and prefix sums for window means.
pub(crate) struct Features {
    start_ns: u64,
    step_ns: u64,
    filled: Vec<Option<f64>>,
    prefix_sum: Vec<f64>,
    prefix_n: Vec<usize>,
}

impl Features {
    pub(crate) fn new(series: &RegularSeries, max_gap: usize) -> Self {
        let filled = series.forward_filled(max_gap);
        let mut prefix_sum = Vec::with_capacity(filled.len() + 1);
        let mut prefix_n = Vec::with_capacity(filled.len() + 1);
        let (mut s, mut n) = (0.0, 0);
        prefix_sum.push(s);
        prefix_n.push(n);
        for v in &filled {
            if let Some(v) = v {
                s += v;
                n += 1;
            }
            prefix_sum.push(s);
            prefix_n.push(n);
        }
        Self {
            start_ns: series.start_ns,
            step_ns: u64::try_from(series.step.as_nanos()).unwrap_or(u64::MAX),
            filled,
            prefix_sum,
            prefix_n,
        }
    }

    fn time_of(&self, i: usize) -> u64 {
        self.start_ns.saturating_add(self.step_ns.saturating_mul(i as u64))
    }

    fn mean(&self, i: usize, w: usize) -> Option<f64> {
        let (lo, hi) = (i + 1 - w, i + 1);
        let n = self.prefix_n[hi] - self.prefix_n[lo];
        (n * 2 >= w).then(|| (self.prefix_sum[hi] - self.prefix_sum[lo]) / n as f64)
    }

    /// Features at origin `i` for the value at `i + h`, relative to the level (the mean of the
    /// last horizon), which is returned; `None` where the data is too gappy.
    ///
    /// Everything is relative to the current level so the model learns changes, not levels: a
    /// model fitted on a flat stretch would otherwise learn "revert to the training mean" and
    /// keep forecasting the old level after a step change until the next refit.
    fn row(&self, layout: &Layout, i: usize, out: &mut Vec<f64>) -> Option<f64> {
        out.clear();
        if i + 1 < layout.lookback() || i >= self.filled.len() {
            return None;
        }
        let level = self.mean(i, layout.windows[0])?;
        for k in 0..layout.lags {
            out.push(self.filled[i - k]? - level);
        }
        out.push(self.mean(i, layout.windows[1])? - level);
        if layout.fourier > 0 {
            // Phase from wall-clock time, so a daily period lines up with the clock.
            let t = self.time_of(i + layout.h) as f64 / 1e9;
            let phase = TAU * (t % layout.period_s) / layout.period_s;
            for k in 1..=layout.fourier {
                let a = phase * k as f64;
                out.push(a.sin());
                out.push(a.cos());
            }
        }
        Some(level)
    }
}

/// A fitted forecaster: a linear function of standardised features.
#[derive(Clone, Debug)]
pub struct ForecastModel {
    cfg: ForecastConfig,
    layout: Layout,
    mean: Vec<f64>,
    scale: Vec<f64>,
    coef: Vec<f64>,
    intercept: f64,
    rows: usize,
    tail: RegularSeries,
}

/// Fits a forecaster on `history` (any order, gaps allowed; only the most recent
/// `cfg.history` is used). Fails with [`LearnError::InsufficientHistory`] below
/// `cfg.min_history` of observed data.
pub fn fit(history: &[Sample], cfg: &ForecastConfig) -> Result<ForecastModel, LearnError> {
    cfg.validate()?;
    let Some(series) = RegularSeries::from_samples(history, cfg.step) else {
        return Err(LearnError::InsufficientHistory {
            have: Duration::ZERO,
            need: cfg.min_history,
        });
    };
    let features = Features::new(&series, cfg.max_gap_steps);
    fit_window(&series, &features, series.len(), cfg)
}

/// Fits on slots `[end - history, end)` of `series`, using only rows whose target is inside.
pub(crate) fn fit_window(
    series: &RegularSeries,
    features: &Features,
    end: usize,
    cfg: &ForecastConfig,
) -> Result<ForecastModel, LearnError> {
    let start = end.saturating_sub(steps(cfg.history, cfg.step));
    let observed = series.values[start..end].iter().filter(|v| v.is_some()).count();
    let have = cfg.step.saturating_mul(u32::try_from(observed).unwrap_or(u32::MAX));
    if have < cfg.min_history {
        return Err(LearnError::InsufficientHistory { have, need: cfg.min_history });
    }
    let h = cfg.horizon_steps();
    let span = cfg.step.saturating_mul(u32::try_from(end - start).unwrap_or(u32::MAX));
    let layout = Layout {
        lags: cfg.lags,
        windows: [h.max(2), (6 * h).max(4)],
        fourier: if span >= cfg.period { cfg.fourier_order } else { 0 },
        period_s: cfg.period.as_secs_f64(),
        h,
    };
    let width = layout.width();
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut row = Vec::with_capacity(width);
    for i in start..end.saturating_sub(h) {
        if let Some(target) = series.values[i + h] {
            if let Some(level) = features.row(&layout, i, &mut row) {
                x.extend_from_slice(&row);
                y.push(target - level);
            }
        }
    }
    let rows = y.len();
    if rows < 4 * (width + 1) {
        return Err(LearnError::InsufficientHistory {
            have,
            need: cfg.min_history.max(cfg.step.saturating_mul(
                u32::try_from(4 * (width + 1) + layout.lookback() + h).unwrap_or(u32::MAX),
            )),
        });
    }
    // Standardise so the elastic-net penalty treats features alike and least squares is well
    // conditioned (lags of a load in the hundreds next to unit Fourier terms).
    let mut mean = vec![0.0; width];
    let mut scale = vec![0.0; width];
    for r in x.chunks_exact(width) {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / rows as f64;
        }
    }
    for r in x.chunks_exact(width) {
        for ((s, m), v) in scale.iter_mut().zip(&mean).zip(r) {
            *s += (v - m).powi(2) / rows as f64;
        }
    }
    for s in &mut scale {
        *s = if *s > 1e-24 { s.sqrt() } else { 1.0 };
    }
    for r in x.chunks_exact_mut(width) {
        for ((v, m), s) in r.iter_mut().zip(&mean).zip(&scale) {
            *v = (*v - m) / s;
        }
    }
    let records = Array2::from_shape_vec((rows, width), x)
        .map_err(|e| LearnError::InvalidInput(format!("feature matrix: {e}")))?;
    let dataset = Dataset::new(records, Array1::from(y));
    let (coef, intercept) = match cfg.regressor {
        Regressor::LeastSquares => {
            // Lags of a flat or perfectly linear load are collinear, which leaves plain least
            // squares without a unique solution (linfa returns NaN). A vanishing ridge, added
            // as extra rows sqrt(n·RIDGE)·I on centred data, keeps it solvable at no visible
            // bias: the features are standardised, so RIDGE is relative to unit variance.
            let y_mean = dataset.targets().mean().unwrap_or(0.0);
            let lambda = (rows as f64 * RIDGE).sqrt();
            let mut records = dataset.records().clone();
            let mut targets = dataset.targets().mapv(|v| v - y_mean);
            let mut penalty_rows = Array2::<f64>::zeros((width, width));
            penalty_rows.diag_mut().fill(lambda);
            records
                .append(ndarray::Axis(0), penalty_rows.view())
                .map_err(|e| LearnError::InvalidInput(format!("ridge rows: {e}")))?;
            targets
                .append(ndarray::Axis(0), Array1::<f64>::zeros(width).view())
                .map_err(|e| LearnError::InvalidInput(format!("ridge rows: {e}")))?;
            let m = LinearRegression::new()
                .with_intercept(false)
                .fit(&Dataset::new(records, targets))
                .map_err(|e| LearnError::fit("least-squares forecaster", e))?;
            (m.params().to_vec(), y_mean)
        }
        Regressor::ElasticNet { penalty, l1_ratio } => {
            let m = ElasticNet::params()
                .penalty(penalty)
                .l1_ratio(l1_ratio)
                .max_iterations(2000)
                .fit(&dataset)
                .map_err(|e| LearnError::fit("elastic-net forecaster", e))?;
            (m.hyperplane().to_vec(), m.intercept())
        }
    };
    let tail_start = end.saturating_sub(layout.lookback() + cfg.max_gap_steps);
    let tail = RegularSeries {
        start_ns: series.time_of(tail_start),
        step: series.step,
        values: series.values[tail_start..end].to_vec(),
    };
    Ok(ForecastModel { cfg: cfg.clone(), layout, mean, scale, coef, intercept, rows, tail })
}

impl ForecastModel {
    /// The configuration it was fitted with.
    pub fn config(&self) -> &ForecastConfig {
        &self.cfg
    }

    /// The horizon this model forecasts at (whole steps).
    pub fn horizon(&self) -> Duration {
        self.cfg.step.saturating_mul(u32::try_from(self.layout.h).unwrap_or(u32::MAX))
    }

    /// Number of training rows it was fitted on.
    pub fn training_rows(&self) -> usize {
        self.rows
    }

    /// Whether the seasonal Fourier terms are in use (the history covered a whole period).
    pub fn seasonal(&self) -> bool {
        self.layout.fourier > 0
    }

    /// End of the fitted history, Unix nanoseconds (for the caller's refit schedule).
    pub fn fitted_until_ns(&self) -> u64 {
        self.tail.time_of(self.tail.len().saturating_sub(1))
    }

    /// The forecast one horizon after the end of the fitted history.
    pub fn predict(&self) -> Option<Forecast> {
        self.predict_series(&self.tail)
    }

    /// The forecast one horizon after the latest of `recent` samples, without refitting.
    /// `recent` needs to cover the lookback (six horizons); `None` when it does not or when
    /// its end is inside a gap longer than `max_gap_steps`.
    pub fn predict_from(&self, recent: &[Sample]) -> Option<Forecast> {
        self.predict_series(&RegularSeries::from_samples(recent, self.cfg.step)?)
    }

    fn predict_series(&self, series: &RegularSeries) -> Option<Forecast> {
        let features = Features::new(series, self.cfg.max_gap_steps);
        self.predict_at(&features, series.len().checked_sub(1)?)
    }

    pub(crate) fn predict_at(&self, features: &Features, i: usize) -> Option<Forecast> {
        let mut row = Vec::with_capacity(self.layout.width());
        let level = features.row(&self.layout, i, &mut row)?;
        let value = level
            + row
                .iter()
                .zip(&self.mean)
                .zip(&self.scale)
                .zip(&self.coef)
                .map(|(((v, m), s), c)| (v - m) / s * c)
                .sum::<f64>()
            + self.intercept;
        Some(Forecast {
            at_ns: features.time_of(i + self.layout.h),
            value: value.max(0.0),
            last_value: features.filled[i]?,
        })
    }
}

/// How [`backtest`] replays a series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BacktestPlan {
    /// Forecasts start once this much of the series has passed (the first fit's data).
    pub warmup: Duration,
    /// Refit interval, as the collector's schedule would do it.
    pub refit_every: Duration,
}

/// Forecast error at the horizon over a replayed series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BacktestReport {
    /// MAPE of the model (fraction), `None` if nothing was scored.
    pub model_mape: Option<f64>,
    /// MAPE of the naive last-value forecast over the same points.
    pub naive_mape: Option<f64>,
    /// Number of scored forecasts.
    pub points: usize,
    /// Number of (re)fits performed.
    pub refits: usize,
}

/// Replays `samples` in time order: at every step after `plan.warmup` it forecasts one
/// horizon ahead from data known then (refitting every `plan.refit_every`), and scores model
/// and naive forecasts against what was later observed. Origins where no model could be fitted
/// yet, or whose target is a gap, are not scored.
pub fn backtest(
    samples: &[Sample],
    cfg: &ForecastConfig,
    plan: &BacktestPlan,
) -> Result<BacktestReport, LearnError> {
    cfg.validate()?;
    let series = RegularSeries::from_samples(samples, cfg.step)
        .ok_or_else(|| LearnError::InvalidInput("no samples to backtest".to_owned()))?;
    let features = Features::new(&series, cfg.max_gap_steps);
    let h = cfg.horizon_steps();
    let refit = steps(plan.refit_every, cfg.step).max(1);
    let first = steps(plan.warmup, cfg.step);
    let mut model: Option<ForecastModel> = None;
    let mut last_fit: Option<usize> = None;
    let mut pairs_model = Vec::new();
    let mut pairs_naive = Vec::new();
    let mut refits = 0;
    for i in first..series.len().saturating_sub(h) {
        if last_fit.is_none_or(|f| i - f >= refit) {
            last_fit = Some(i);
            match fit_window(&series, &features, i + 1, cfg) {
                Ok(m) => {
                    model = Some(m);
                    refits += 1;
                }
                Err(LearnError::InsufficientHistory { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let (Some(m), Some(actual)) = (&model, series.values[i + h]) else {
            continue;
        };
        if let Some(f) = m.predict_at(&features, i) {
            pairs_model.push((actual, f.value));
            pairs_naive.push((actual, f.last_value));
        }
    }
    Ok(BacktestReport {
        model_mape: mape(pairs_model.iter().copied()),
        naive_mape: mape(pairs_naive.iter().copied()),
        points: pairs_model.len(),
        refits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn samples(values: impl IntoIterator<Item = f64>, step_s: u64) -> Vec<Sample> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| Sample::new(1_700_000_000 * S + i as u64 * step_s * S, v))
            .collect()
    }

    #[test]
    fn short_history_gives_no_model() {
        let cfg = ForecastConfig::new(Duration::from_secs(10), Duration::from_secs(300));
        // 30 minutes of 10 s data < 1 h minimum.
        let err = fit(&samples((0..180).map(|i| 100.0 + i as f64), 10), &cfg).expect_err("short");
        assert!(
            matches!(err, LearnError::InsufficientHistory { have, need }
                if have == Duration::from_secs(1800) && need == Duration::from_secs(3600)),
            "{err}"
        );
        assert!(matches!(fit(&[], &cfg), Err(LearnError::InsufficientHistory { .. })));
    }

    #[test]
    fn learns_a_linear_trend_exactly() {
        // y = 50 + 0.5 i: the value 30 steps ahead is last + 15, which the model must find.
        let cfg = ForecastConfig::new(Duration::from_secs(10), Duration::from_secs(300));
        let model = fit(&samples((0..720).map(|i| 50.0 + 0.5 * i as f64), 10), &cfg).expect("fit");
        assert!(!model.seasonal(), "2 hours of history must not use a daily period");
        let f = model.predict().expect("forecast");
        assert!((f.last_value - (50.0 + 0.5 * 719.0)).abs() < 1e-9);
        assert!((f.value - (50.0 + 0.5 * 749.0)).abs() < 1e-3, "{f:?}");
        assert_eq!(f.at_ns, (1_700_000_000 + 749 * 10) * S);
        assert_eq!(model.horizon(), Duration::from_secs(300));
    }

    #[test]
    fn predicts_from_newer_samples_without_refit_and_refuses_inside_gaps() {
        let cfg = ForecastConfig::new(Duration::from_secs(10), Duration::from_secs(60));
        let all = samples((0..1000).map(|i| 10.0 + 0.1 * i as f64), 10);
        let model = fit(&all[..600], &cfg).expect("fit");
        let f = model.predict_from(&all[900..]).expect("forecast");
        assert!((f.value - (10.0 + 0.1 * 1005.0)).abs() < 1e-3, "{f:?}");
        // The last 10 slots missing (> max_gap_steps = 6): no forecast from stale data.
        let mut gappy = all[900..990].to_vec();
        gappy.push(all[999]);
        assert!(model.predict_from(&gappy[..90]).is_some());
        assert!(model.predict_from(&gappy).is_none());
        // Too few samples for the lookback.
        assert!(model.predict_from(&all[990..]).is_none());
    }

    #[test]
    fn gaps_in_history_are_skipped_not_invented() {
        let cfg = ForecastConfig::new(Duration::from_secs(10), Duration::from_secs(60));
        let mut all = samples((0..1500).map(|i| 20.0 + 0.2 * i as f64), 10);
        all.drain(400..700); // a 50-minute outage
        let model = fit(&all, &cfg).expect("fit");
        let f = model.predict().expect("forecast");
        assert!((f.value - (20.0 + 0.2 * 1505.0)).abs() < 1e-3, "{f:?}");
    }

    #[test]
    fn seasonal_terms_track_a_noiseless_daily_cycle() {
        // 3 days of a pure daily sine at 5-minute steps, 1-hour horizon: far from linear over
        // the horizon, so the lags alone cannot follow it, the Fourier terms can.
        let step = 300;
        let n = 3 * 288;
        let y = (0..n).map(|i| 100.0 + 50.0 * (TAU * i as f64 / 288.0).sin());
        let all = samples(y, step);
        let mut cfg = ForecastConfig::new(Duration::from_secs(step), Duration::from_secs(3600));
        cfg.min_history = Duration::from_secs(86_400);
        let report = backtest(
            &all,
            &cfg,
            &BacktestPlan {
                warmup: Duration::from_secs(2 * 86_400),
                refit_every: Duration::from_secs(6 * 3600),
            },
        )
        .expect("backtest");
        let (m, naive) = (report.model_mape.expect("m"), report.naive_mape.expect("n"));
        assert!(m < 0.01 && m < naive / 5.0, "model {m} naive {naive}");
        assert_eq!(report.refits, 4);
    }

    #[test]
    fn elastic_net_fits_too() {
        let mut cfg = ForecastConfig::new(Duration::from_secs(10), Duration::from_secs(60));
        cfg.regressor = Regressor::ElasticNet { penalty: 0.01, l1_ratio: 0.5 };
        let model = fit(&samples((0..800).map(|i| 30.0 + 0.1 * i as f64), 10), &cfg).expect("fit");
        let f = model.predict().expect("forecast");
        assert!((f.value - (30.0 + 0.1 * 805.0)).abs() < 1.0, "{f:?}");
    }
}
