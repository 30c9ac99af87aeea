//! Capacity-aware sizing (`scale.model`): a queueing model of the target, learned from its own
//! telemetry, that names the fewest replicas whose predicted p95 meets a latency target.
//!
//! **Model.** Each ready replica serves `μ` requests/s; a request spends the service time `s`
//! plus its wait. With `n` ready replicas and arrival rate `λ`, ρ = λ / (n·μ) and the p95 is
//! - `per-replica` queues (random or round-robin routing): `s + ln(20)·ρ / (μ·(1−ρ))`, the
//!   M/M/1 waiting tail of one replica's queue;
//! - `pooled` (one queue, M/M/c): `s + max(0, ln(C/0.05)) / (n·μ − λ)` with `C` the Erlang C
//!   probability that a request waits at all.
//!
//! **Learning.** Every evaluation records a sample (load, utilisation, ready replicas, observed
//! p95). Every `refitEvery` (default 10m; at every evaluation while there is no fit) the
//! model is refitted on the newest `history` (default 1h) of samples: `μ` is the median of
//! `load / (utilisation · ready)` over samples with utilisation in 5–95 %, `s` the median of
//! the observed p95 minus the predicted wait over samples below 90 % utilisation (no backlog).
//! At least [`MIN_SAMPLES`] usable samples are needed; until then the policy's tracked metrics
//! size the target. The error is the mean absolute percentage error of the predicted p95
//! against the observed one, scored on samples below 95 % utilisation taken after the fit
//! that predicted them (out of sample), kept as decayed sums like the forecast's MAPE.
//!
//! **Sizing.** A backlog shows as latency above the model's: `excess = observed − predicted`
//! at the present load and ready count, a backlog of `excess · n·μ` requests, sized to drain
//! within `drain` (default 60s); the load's own noise adds `headroom` (default 2) robust
//! standard deviations of the load over the last 10 minutes ([`load_spread`]), what it may
//! swing by before new replicas are warm: the demand is `λ + backlog / drain + z·σ`. The scale-out size is the
//! fewest replicas predicted to meet `p95` at that demand; the target is scaled in only when
//! the fewest predicted to meet `scaleInAt · p95` (default 0.8) is below the current size, and
//! then to that size: a hysteresis band from the same model, so noise that moves the demand by
//! less than the band causes no action.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::format::{ModelScale, QueueKind, SignalSpec};
use super::inputs::{InputValue, query, read};
use super::signal::{SignalSource, nanos};

/// Default refit interval.
pub const DEFAULT_REFIT: Duration = Duration::from_secs(600);
/// Default history of samples.
pub const DEFAULT_HISTORY: Duration = Duration::from_secs(3600);
/// Default drain time of a backlog.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(60);
/// Default scale-in band.
pub const DEFAULT_SCALE_IN_AT: f64 = 0.8;
/// Default headroom, robust standard deviations of the load.
pub const DEFAULT_HEADROOM: f64 = 2.0;
/// Window of the load's noise estimate.
pub const NOISE_WINDOW: Duration = Duration::from_secs(600);
/// Usable samples needed for a fit.
pub const MIN_SAMPLES: usize = 12;
/// Scored predictions after which the error sums are halved.
pub const SCORE_HALF_AT: f64 = 10_000.0;

/// One observation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When, Unix nanos.
    pub time: u64,
    /// Requests/s.
    pub load: f64,
    /// Busy fraction of the ready replicas.
    pub utilization: f64,
    /// Ready replicas.
    pub ready: u32,
    /// Observed p95, seconds.
    pub p95: f64,
}

/// A fitted model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fit {
    /// Requests/s one replica serves.
    pub throughput: f64,
    /// Seconds per request without waiting.
    pub service_time: f64,
    /// When it was fitted, Unix nanos.
    pub fitted_at: u64,
    /// Samples it was fitted on.
    pub samples: usize,
}

/// What the model remembers between evaluations. The samples are not persisted (after a
/// restart the model fills them again); the fit and its score are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelState {
    /// Newest samples, oldest first.
    #[serde(skip)]
    pub samples: VecDeque<Sample>,
    /// The current fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<Fit>,
    /// Σ |observed − predicted| / observed over scored samples (decayed).
    #[serde(default)]
    pub ape_sum: f64,
    /// (Decayed) number of scored samples.
    #[serde(default)]
    pub scored: f64,
}

impl ModelState {
    /// Mean absolute percentage error of the predicted p95, as a fraction.
    pub fn mape(&self) -> Option<f64> {
        (self.scored > 0.0).then(|| self.ape_sum / self.scored)
    }
}

/// Predicted p95 (seconds) of `n` ready replicas at `load` requests/s; infinite at or above
/// saturation.
pub fn predict(fit: &Fit, queue: QueueKind, load: f64, n: u32) -> f64 {
    let mu = fit.throughput;
    let c = f64::from(n) * mu;
    if n == 0 || load >= c {
        return if load <= 0.0 && n > 0 { fit.service_time } else { f64::INFINITY };
    }
    let rho = load / c;
    let wait = match queue {
        QueueKind::PerReplica => (20f64).ln() * rho / (mu * (1.0 - rho)),
        QueueKind::Pooled => {
            let pw = erlang_c(n, load / mu);
            if pw > 0.05 { (pw / 0.05).ln() / (c - load) } else { 0.0 }
        }
    };
    fit.service_time + wait
}

/// Erlang C: the probability that an arrival waits, `n` servers, offered load `a` = λ/μ < n.
fn erlang_c(n: u32, a: f64) -> f64 {
    // Erlang B by its recurrence (stable for large n), then C from B.
    let mut b = 1.0;
    for k in 1..=n {
        b = a * b / (f64::from(k) + a * b);
    }
    let rho = a / f64::from(n);
    b / (1.0 - rho * (1.0 - b))
}

/// The fewest replicas in `1..=max` predicted to hold `p95` at `load`; `max` if none does.
pub fn size_for(fit: &Fit, queue: QueueKind, load: f64, p95: f64, max: u32) -> u32 {
    let max = max.max(1);
    // Lower bound from saturation, then up: at most a few steps past it for sane targets.
    let start = if fit.throughput > 0.0 {
        ((load / fit.throughput).floor() as u64).clamp(1, u64::from(max)) as u32
    } else {
        max
    };
    (start..=max).find(|n| predict(fit, queue, load, *n) <= p95).unwrap_or(max)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

/// Fits μ and s on `samples` (see the module documentation); `None` with too few usable.
pub fn fit(samples: &VecDeque<Sample>, queue: QueueKind, now: u64) -> Option<Fit> {
    let mut mus: Vec<f64> = samples
        .iter()
        .filter(|s| s.ready > 0 && (0.05..=0.95).contains(&s.utilization) && s.load > 0.0)
        .map(|s| s.load / (s.utilization * f64::from(s.ready)))
        .collect();
    let n_mu = mus.len();
    let throughput = median(&mut mus)?;
    if n_mu < MIN_SAMPLES || !(throughput.is_finite() && throughput > 0.0) {
        return None;
    }
    let zero = Fit { throughput, service_time: 0.0, fitted_at: now, samples: n_mu };
    let mut ss: Vec<f64> = samples
        .iter()
        .filter(|s| s.ready > 0 && s.utilization < 0.9 && s.p95.is_finite())
        .filter_map(|s| {
            let w = predict(&zero, queue, s.load, s.ready);
            w.is_finite().then(|| (s.p95 - w).max(0.0))
        })
        .collect();
    let service_time = median(&mut ss)?;
    Some(Fit { service_time, ..zero })
}

/// The load's robust standard deviation over the last [`NOISE_WINDOW`] of samples: 1.4826 ×
/// the median absolute deviation from the median, so a level shift counts only once it fills
/// half the window, and a single burst not at all.
pub fn load_spread(samples: &VecDeque<Sample>, now: u64) -> f64 {
    let from = now.saturating_sub(nanos(NOISE_WINDOW));
    let mut v: Vec<f64> = samples.iter().filter(|s| s.time > from).map(|s| s.load).collect();
    let Some(m) = median(&mut v) else { return 0.0 };
    let mut dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    median(&mut dev).map_or(0.0, |d| 1.4826 * d)
}

/// What one evaluation of the model gives the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelStep {
    /// The decision's input: the demand the model sized for and its recommendation.
    pub input: InputValue,
    /// The recommended size, with a fit.
    pub replicas: Option<u32>,
}

/// Records a sample, scores the current fit on it, refits when due, and recommends a size
/// for `ready` ready replicas out of `current` provisioned, within `max`.
pub fn step_model(
    spec: &ModelScale,
    source: &dyn SignalSource,
    st: &mut ModelState,
    current: u32,
    ready: u32,
    max: u32,
    now: u64,
) -> ModelStep {
    let queue = spec.queue.unwrap_or_default();
    let q = |s: &SignalSpec| query(s).ok().and_then(|q| read(source, &q, now));
    let (load, util, p95) = (q(&spec.load), q(&spec.utilization), q(&spec.latency));
    let mut input = InputValue {
        name: "model".to_owned(),
        query: query(&spec.load).map(|q| q.to_string()).unwrap_or_default(),
        value: load,
        against: String::new(),
        recommends: None,
        version: None,
    };
    if let (Some(load), Some(utilization), Some(p95)) = (load, util, p95) {
        let sample = Sample { time: now, load, utilization, ready, p95 };
        if let Some(f) = &st.fit {
            let predicted = predict(f, queue, load, ready);
            if utilization < 0.95 && p95 > 0.0 && predicted.is_finite() {
                if st.scored >= SCORE_HALF_AT {
                    st.ape_sum /= 2.0;
                    st.scored /= 2.0;
                }
                st.ape_sum += (p95 - predicted).abs() / p95;
                st.scored += 1.0;
            }
        }
        st.samples.push_back(sample);
    }
    let keep = now.saturating_sub(nanos(spec.history.map(|h| h.get()).unwrap_or(DEFAULT_HISTORY)));
    while st.samples.front().is_some_and(|s| s.time <= keep) {
        st.samples.pop_front();
    }
    let refit = nanos(spec.refit_every.map(|r| r.get()).unwrap_or(DEFAULT_REFIT));
    if st.fit.is_none_or(|f| now >= f.fitted_at.saturating_add(refit)) {
        if let Some(f) = fit(&st.samples, queue, now) {
            st.fit = Some(f);
        }
    }
    let (Some(f), Some(load)) = (st.fit, load) else {
        input.against = match st.fit {
            None => {
                format!("no fit yet ({} samples, {MIN_SAMPLES} usable needed)", st.samples.len())
            }
            Some(_) => "no load data".to_owned(),
        };
        return ModelStep { input, replicas: None };
    };
    // A backlog: latency above what the model predicts at this load and ready count.
    let backlog = match p95 {
        Some(obs) if ready > 0 => {
            let at = predict(&f, queue, load.min(0.99 * f64::from(ready) * f.throughput), ready);
            (obs - at).max(0.0) * f64::from(ready) * f.throughput
        }
        _ => 0.0,
    };
    let drain = spec.drain.map(|d| d.get()).unwrap_or(DEFAULT_DRAIN).as_secs_f64().max(1e-3);
    let spread = load_spread(&st.samples, now);
    let z = spec.headroom.unwrap_or(DEFAULT_HEADROOM);
    let demand = load + backlog / drain + z * spread;
    let up = size_for(&f, queue, demand, spec.p95, max);
    let band = spec.scale_in_at.unwrap_or(DEFAULT_SCALE_IN_AT);
    let down = size_for(&f, queue, demand, spec.p95 * band, max);
    let rec = if up > current {
        up
    } else if down < current {
        down
    } else {
        current
    };
    input.recommends = Some(rec);
    input.against = format!(
        "demand {demand:.1} req/s (load {load:.1}, backlog {backlog:.0}, noise σ {spread:.1}); μ {:.1} req/s, s {:.1} ms; p95 {} needs {up}, scale-in band {down}; error {}",
        f.throughput,
        f.service_time * 1000.0,
        spec.p95,
        st.mape().map(|m| format!("{:.1} %", m * 100.0)).unwrap_or_else(|| "-".into())
    );
    ModelStep { input, replicas: Some(rec) }
}

/// The size the fitted model asks for at a forecast `load` (the forecast floor with a
/// model); `None` without a fit.
pub fn size_at(spec: &ModelScale, st: &ModelState, load: f64, max: u32) -> Option<u32> {
    let f = st.fit?;
    Some(size_for(&f, spec.queue.unwrap_or_default(), load, spec.p95, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit50() -> Fit {
        Fit { throughput: 50.0, service_time: 0.02, fitted_at: 0, samples: 100 }
    }

    #[test]
    fn per_replica_prediction_is_the_m_m_1_tail() {
        let f = fit50();
        // 10 replicas at 250 req/s: ρ 0.5, wait ln 20 · 0.5 / (50 · 0.5) = 0.0599 s.
        let p = predict(&f, QueueKind::PerReplica, 250.0, 10);
        assert!((p - (0.02 + 20f64.ln() / 50.0)).abs() < 1e-12, "{p}");
        assert!(predict(&f, QueueKind::PerReplica, 500.0, 10).is_infinite());
        // Holding 150 ms at 1000 req/s: ρ ≤ 0.6845 → 1000 / (50 · 0.6845) = 29.2 → 30.
        assert_eq!(size_for(&f, QueueKind::PerReplica, 1000.0, 0.150, 80), 30);
        assert_eq!(size_for(&f, QueueKind::PerReplica, 1e6, 0.150, 80), 80);
    }

    #[test]
    fn pooled_queue_needs_fewer_replicas() {
        let f = fit50();
        // Erlang C for 2 servers at a = 1: 1/3.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
        let pooled = size_for(&f, QueueKind::Pooled, 1000.0, 0.150, 80);
        let single = size_for(&f, QueueKind::PerReplica, 1000.0, 0.150, 80);
        assert!(pooled < single && pooled > 20, "{pooled} vs {single}");
    }

    #[test]
    fn fits_throughput_and_service_time_from_samples() {
        let truth = fit50();
        let mut samples = VecDeque::new();
        for i in 0..40u32 {
            let ready = 5 + i % 7;
            let load = 40.0 * f64::from(ready) * (0.3 + 0.01 * f64::from(i % 30));
            let util = load / (50.0 * f64::from(ready));
            let p95 = predict(&truth, QueueKind::PerReplica, load, ready);
            samples.push_back(Sample { time: u64::from(i), load, utilization: util, ready, p95 });
        }
        let f = fit(&samples, QueueKind::PerReplica, 99).expect("fit");
        assert!((f.throughput - 50.0).abs() < 1e-9, "{f:?}");
        assert!((f.service_time - 0.02).abs() < 1e-9, "{f:?}");
        samples.truncate(MIN_SAMPLES - 1);
        assert_eq!(fit(&samples, QueueKind::PerReplica, 99), None);
    }
}
