//! Predictive scaling (`scale.forecast`): the engine's side of stoker-learn's load forecaster.
//!
//! Each evaluation, [`step_forecast`]:
//! 1. scores earlier forecasts whose time has come against what the signal then read
//!    (absolute percentage error of the model and of the naive last-value forecast, kept as
//!    decayed sums so the MAPE follows recent behaviour and the state stays small);
//! 2. refits the model every `refitEvery` (default 1h; every 5 minutes while there is none)
//!    on `history` of the signal read at `step` through [`SignalSource::range`];
//! 3. forecasts the load one `horizon` ahead from the latest six horizons of the signal and
//!    turns it into a size, `ceil(forecast / perReplica)`.
//!
//! The engine then applies that size as a floor after stabilization (mode `floor`): it can
//! raise the desired size ahead of a predicted rise, never lower it, so a forecast alone never
//! scales in. In `forecast-only` mode it is recorded and scored and changes nothing.
//!
//! The fitted model lives in [`ForecastState`] but is not persisted: after a restart the
//! first evaluation refits from the store's history. Everything else (pending forecasts,
//! scores) is persisted with the rest of the policy state.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stoker_learn::forecast::{ForecastConfig, ForecastModel, fit};
use stoker_learn::series::Sample;

use super::format::ForecastScale;
use super::inputs::{InputValue, query};
use super::signal::{SignalSource, nanos};

/// Default grid step of forecast inputs.
pub const DEFAULT_STEP: Duration = Duration::from_secs(10);
/// Default refit interval.
pub const DEFAULT_REFIT: Duration = Duration::from_secs(3600);
/// While there is no model (too little history), fitting is retried this often.
pub const RETRY_WITHOUT_MODEL: Duration = Duration::from_secs(300);
/// Forecasts awaiting their time, at most (one per evaluation within a horizon).
pub const MAX_PENDING: usize = 4096;
/// Scored forecasts after which the error sums are halved: an exponential forgetting that
/// keeps the MAPE about recent forecasts.
pub const SCORE_HALF_AT: f64 = 10_000.0;

/// A fitted model shared between successive states (cloning a state must not copy it).
#[derive(Clone, Debug)]
pub struct FittedModel(pub Arc<ForecastModel>);

impl PartialEq for FittedModel {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One forecast, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForecastPoint {
    /// When it was made, Unix nanos.
    pub made_at: u64,
    /// The time it forecasts, Unix nanos.
    pub at: u64,
    /// The forecast load.
    pub value: f64,
    /// The load at `made_at` (the naive forecast).
    pub last_value: f64,
    /// The size it asks for, `ceil(value / perReplica)`.
    pub replicas: u32,
}

/// Decayed error sums of scored forecasts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForecastScore {
    /// Σ |actual − forecast| / actual.
    pub ape_sum: f64,
    /// The same for the naive last-value forecast.
    pub naive_ape_sum: f64,
    /// (Decayed) number of scored forecasts.
    pub scored: f64,
}

impl ForecastScore {
    /// Mean absolute percentage error of the model, as a fraction.
    pub fn mape(&self) -> Option<f64> {
        (self.scored > 0.0).then(|| self.ape_sum / self.scored)
    }

    /// The same for the naive last-value forecast.
    pub fn naive_mape(&self) -> Option<f64> {
        (self.scored > 0.0).then(|| self.naive_ape_sum / self.scored)
    }

    fn add(&mut self, actual: f64, forecast: f64, naive: f64) {
        if !(actual.is_finite() && actual > 0.0) {
            return;
        }
        if self.scored >= SCORE_HALF_AT {
            self.ape_sum /= 2.0;
            self.naive_ape_sum /= 2.0;
            self.scored /= 2.0;
        }
        self.ape_sum += (actual - forecast).abs() / actual;
        self.naive_ape_sum += (actual - naive).abs() / actual;
        self.scored += 1.0;
    }
}

/// What the forecaster remembers between evaluations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForecastState {
    /// The fitted model; not persisted (refitted after a restart).
    #[serde(skip)]
    pub model: Option<FittedModel>,
    /// Time of the last fit attempt; not persisted, so a restart refits at once.
    #[serde(skip)]
    pub last_fit: Option<u64>,
    /// End of the history the model was fitted on, Unix nanos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted_until: Option<u64>,
    /// Training rows of the model.
    #[serde(default)]
    pub training_rows: usize,
    /// The latest forecast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<ForecastPoint>,
    /// Forecasts not yet scored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<ForecastPoint>,
    /// Scores of the forecasts whose time has come.
    #[serde(default)]
    pub score: ForecastScore,
    /// Why there is no forecast (too little history, a fit failure), when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The result of one forecasting step.
#[derive(Clone, Debug, PartialEq)]
pub struct Forecasted {
    /// The input as the decision records it (value = forecast load).
    pub input: InputValue,
    /// The size the forecast asks for, when there is a forecast.
    pub replicas: Option<u32>,
}

/// Scores, refits if due, and forecasts; see the module documentation.
pub fn step_forecast(
    fc: &ForecastScale,
    source: &dyn SignalSource,
    st: &mut ForecastState,
    now: u64,
) -> Forecasted {
    let mut input = InputValue {
        name: "forecast".to_owned(),
        query: String::new(),
        value: None,
        against: String::new(),
        recommends: None,
        version: None,
    };
    let q = match query(&fc.signal) {
        Ok(q) => q,
        Err(e) => {
            input.against = e;
            return Forecasted { input, replicas: None };
        }
    };
    let step = fc.step.map(|s| s.get()).unwrap_or(DEFAULT_STEP);
    let horizon = fc.horizon.get();
    input.query = format!("forecast of {q} at +{}", humantime::format_duration(horizon));

    // 1. Score what has come due.
    let (due, later): (Vec<ForecastPoint>, Vec<ForecastPoint>) =
        st.pending.iter().partition(|p| p.at <= now);
    st.pending = later;
    for p in due {
        if let Some(actual) = source.read(&q, p.at).ok().flatten() {
            st.score.add(actual, p.value, p.last_value);
        }
    }

    // 2. Refit when due.
    let every = if st.model.is_some() {
        fc.refit_every.map(|r| r.get()).unwrap_or(DEFAULT_REFIT)
    } else {
        RETRY_WITHOUT_MODEL.min(fc.refit_every.map(|r| r.get()).unwrap_or(DEFAULT_REFIT))
    };
    let cfg = ForecastConfig::from_spec(&fc.spec(), step);
    if st.last_fit.is_none_or(|t| now.saturating_sub(t) >= nanos(every)) {
        st.last_fit = Some(now);
        let history = source.range(&q, now.saturating_sub(nanos(fc.history.get())), now, step);
        match history.map_err(|e| e.to_string()).and_then(|h| {
            let samples: Vec<Sample> = h.into_iter().map(|(t, v)| Sample::new(t, v)).collect();
            fit(&samples, &cfg).map_err(|e| e.to_string())
        }) {
            Ok(m) => {
                st.fitted_until = Some(m.fitted_until_ns());
                st.training_rows = m.training_rows();
                st.model = Some(FittedModel(Arc::new(m)));
                st.problem = None;
            }
            Err(e) => {
                // Keep an older model if there is one: a failed refit is no reason to go blind.
                st.problem = Some(e);
            }
        }
    }

    // 3. Forecast from the latest six horizons.
    let Some(model) = st.model.clone() else {
        input.against = format!("no forecast: {}", st.problem.as_deref().unwrap_or("no model yet"));
        return Forecasted { input, replicas: None };
    };
    let lookback = (6 * cfg.horizon_steps() + cfg.lags + 2) as u64;
    let from = now.saturating_sub(lookback.saturating_mul(nanos(step)));
    let recent: Vec<Sample> = match source.range(&q, from, now, step) {
        Ok(r) => r.into_iter().map(|(t, v)| Sample::new(t, v)).collect(),
        Err(e) => {
            input.against = format!("no forecast: {e}");
            return Forecasted { input, replicas: None };
        }
    };
    let Some(f) = model.0.predict_from(&recent) else {
        input.against = "no forecast: recent data too sparse".to_owned();
        return Forecasted { input, replicas: None };
    };
    let per = fc.per_replica.max(f64::MIN_POSITIVE);
    let replicas = (f.value / per - 1e-9).ceil().clamp(0.0, f64::from(u32::MAX)) as u32;
    let point = ForecastPoint {
        made_at: now,
        at: f.at_ns,
        value: f.value,
        last_value: f.last_value,
        replicas,
    };
    if st.pending.len() < MAX_PENDING {
        st.pending.push(point);
    }
    st.last = Some(point);
    input.value = Some(f.value);
    input.recommends = Some(replicas);
    input.against = format!(
        "{} per replica → {replicas} replicas; MAPE {}",
        fc.per_replica,
        st.score
            .mape()
            .map(|m| format!("{:.1} %", m * 100.0))
            .unwrap_or_else(|| "not scored yet".into())
    );
    Forecasted { input, replicas: Some(replicas) }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::check::check_text;
    use crate::engine::{Action, Constraint, PolicyState, evaluate};
    use crate::series::{SeriesSource, series_from_notation};
    use crate::signal::NANOS;

    fn policy(mode: &str) -> crate::check::Policy {
        let yaml = format!(
            "apiVersion: stoker/v1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n  target: {{name: t, min: 1, max: 100, actuator: kubernetes, kubernetes: {{namespace: n, deployment: d}}}}\n  scale:\n    metrics:\n      - name: load\n        signal: {{metric: inference.requests, stat: mean, window: 10s}}\n        target: {{averageValue: 1000}}\n    forecast: {{horizon: 5m, history: 1d, minHistory: 1h, mode: {mode}, perReplica: 10, signal: {{metric: inference.requests, stat: mean, window: 10s}}}}\n"
        );
        let (p, _, diags) = check_text(Path::new("p.yaml"), &yaml);
        p.unwrap_or_else(|| panic!("{diags:?}"))
    }

    /// A steady ramp of 1 req/s per 10 s: after an hour the forecast five minutes ahead is
    /// about 30 req/s above the current load, which at 10 req/s per replica sets a floor
    /// far above what target tracking (1000 per replica) asks for.
    #[test]
    fn floor_raises_the_size_and_forecast_only_records_it() {
        let s = series_from_notation(
            "inference.requests",
            "100+1x720",
            0,
            std::time::Duration::from_secs(10),
        )
        .expect("series");
        let src = SeriesSource::new(vec![s]);
        let now = 7200 * NANOS;
        for (mode, acts) in [("floor", true), ("forecast-only", false)] {
            let p = policy(mode);
            let ev = evaluate(&p, &src, &PolicyState::default(), Some(1), now);
            let d = &ev.decisions[0];
            let input = d.inputs.iter().find(|i| i.name == "forecast").expect("forecast input");
            let f = input.value.expect("a forecast");
            assert!((f - 850.0).abs() < 10.0, "ramp at 820 now, +30 in 5 minutes: {f}");
            let c = d
                .constraints
                .iter()
                .find(|c| c.constraint == Constraint::Forecast)
                .expect("forecast constraint");
            assert_eq!(c.changed, acts, "{c:?}");
            if acts {
                assert_eq!(c.after, Some(85), "{c:?}");
                assert!(matches!(d.action, Action::Resize { from: 1, .. }), "{:?}", d.action);
            } else {
                assert!(c.detail.starts_with("forecast-only"), "{c:?}");
                assert_eq!(d.action, Action::None);
            }
            assert!(ev.state.scale.forecast.model.is_some());
            assert_eq!(ev.state.scale.forecast.pending.len(), 1);
        }
    }

    /// Too little history: no forecast, the policy stays reactive and says why.
    #[test]
    fn too_little_history_stays_reactive() {
        let s = series_from_notation(
            "inference.requests",
            "100x100",
            0,
            std::time::Duration::from_secs(10),
        )
        .expect("series");
        let src = SeriesSource::new(vec![s]);
        let ev = evaluate(&policy("floor"), &src, &PolicyState::default(), Some(1), 1000 * NANOS);
        let d = &ev.decisions[0];
        let c = d
            .constraints
            .iter()
            .find(|c| c.constraint == Constraint::Forecast)
            .expect("forecast constraint");
        assert!(!c.changed);
        assert!(c.detail.contains("not enough history"), "{c:?}");
        assert!(ev.state.scale.forecast.problem.is_some());
    }
}
