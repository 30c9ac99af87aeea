//! Conditions of step rules and retraining rules: one function per kind (signal, drift,
//! accuracy, latency regression; classifier drift and anomalies live in their own modules),
//! the `all`/`any` combinators, and the `for` state a condition keeps between evaluations.

use std::time::Duration;

use crate::drift;
use crate::format::{
    AccuracyCondition, AccuracyEstimate, Condition, DriftCondition, DriftTest, LatencyRegression,
    SignalCondition,
};
use crate::inputs::{
    DEFAULT_DRIFT_WINDOW, DEFAULT_WINDOW, InputValue, Reference, fmt_time, read, reference_window,
};
use crate::signal::{Selector, SignalQuery, SignalSource, Stat, nanos};

use super::{ConditionState, DEFAULT_JS, DEFAULT_MIN_SAMPLES, DEFAULT_P, DEFAULT_PSI};

/// Evaluates a condition: `Some(holds)` or `None` when an input is missing. Inputs seen are
/// appended to `inputs`. `any` holds if one known branch holds; `all` fails if one known
/// branch fails; otherwise missing data makes the result unknown.
pub fn eval_condition(
    c: &Condition,
    source: &dyn SignalSource,
    now: u64,
    inputs: &mut Vec<InputValue>,
) -> Option<bool> {
    if let Some(list) = &c.all {
        return eval_all(list, source, now, inputs);
    }
    if let Some(list) = &c.any {
        return eval_any(list, source, now, inputs);
    }
    if let Some(s) = &c.signal {
        return eval_signal(s, source, now, inputs);
    }
    if let Some(dc) = &c.drift {
        return eval_drift(dc, source, now, inputs);
    }
    if let Some(a) = &c.accuracy {
        return eval_accuracy(a, source, now, inputs);
    }
    if let Some(l) = &c.latency_regression {
        return eval_latency_regression(l, source, now, inputs);
    }
    if let Some(cd) = &c.classifier_drift {
        return drift::eval_classifier_drift(cd, source, now, inputs);
    }
    if let Some(a) = &c.anomaly {
        return crate::anomaly::eval_anomaly(a, source, now, inputs);
    }
    None
}

/// `all`: fails if one known branch fails, holds if every branch holds. Every branch is
/// evaluated, so each records its inputs.
fn eval_all(
    list: &[Condition],
    source: &dyn SignalSource,
    now: u64,
    inputs: &mut Vec<InputValue>,
) -> Option<bool> {
    let results: Vec<Option<bool>> =
        list.iter().map(|s| eval_condition(s, source, now, inputs)).collect();
    if results.contains(&Some(false)) {
        return Some(false);
    }
    if results.iter().all(|r| *r == Some(true)) { Some(true) } else { None }
}

/// `any`: holds if one known branch holds, fails if every branch fails.
fn eval_any(
    list: &[Condition],
    source: &dyn SignalSource,
    now: u64,
    inputs: &mut Vec<InputValue>,
) -> Option<bool> {
    let results: Vec<Option<bool>> =
        list.iter().map(|s| eval_condition(s, source, now, inputs)).collect();
    if results.contains(&Some(true)) {
        return Some(true);
    }
    if results.iter().all(|r| *r == Some(false)) { Some(false) } else { None }
}

/// A signal against a threshold.
fn eval_signal(
    s: &SignalCondition,
    source: &dyn SignalSource,
    now: u64,
    inputs: &mut Vec<InputValue>,
) -> Option<bool> {
    let q = SignalQuery {
        selector: Selector { metric: s.metric.clone(), matchers: s.matchers.clone() },
        stat: s.stat.parse::<Stat>().ok()?,
        window: s.window.map(|w| w.get()).unwrap_or(DEFAULT_WINDOW),
    };
    let value = read(source, &q, now);
    let (holds, against) = value
        .map(|v| compare(v, s.gt, s.gte, s.lt, s.lte))
        .unwrap_or((false, compare(0.0, s.gt, s.gte, s.lt, s.lte).1));
    inputs.push(InputValue {
        name: s.metric.clone(),
        query: q.to_string(),
        value,
        against,
        recommends: None,
        version: None,
    });
    value.map(|_| holds)
}

/// The reference of a drift or regression condition, the first hour of the newest version
/// when none is written; `None` when it does not parse (`policy check` reports it).
fn reference_of(text: Option<&str>) -> Option<Reference> {
    text.map(Reference::parse)
        .unwrap_or(Ok(Reference::FirstOfVersion(Duration::from_secs(3600))))
        .ok()
}

/// Drift of a distribution between the current window and a reference window: chi-square
/// on counts by a label, or KS, PSI or Jensen–Shannon on histograms.
fn eval_drift(
    dc: &DriftCondition,
    source: &dyn SignalSource,
    now: u64,
    inputs: &mut Vec<InputValue>,
) -> Option<bool> {
    let window = dc.window.map(|w| w.get()).unwrap_or(DEFAULT_DRIFT_WINDOW);
    let reference = reference_of(dc.reference.as_deref())?;
    let selector = Selector { metric: dc.metric.clone(), matchers: dc.matchers.clone() };
    let min = dc.min_samples.unwrap_or(DEFAULT_MIN_SAMPLES) as f64;
    let from = now.saturating_sub(nanos(window));
    let mut record =
        |value: Option<f64>, query: String, against: String, version: Option<String>| {
            inputs.push(InputValue {
                name: format!("{} {}", dc.test, dc.metric),
                query,
                value,
                against,
                recommends: None,
                version,
            });
        };
    let Some((rf, rt, sel)) = reference_window(reference, &selector, source, window, now) else {
        record(
            None,
            format!("{}({selector}) reference {:?}", dc.test, dc.reference),
            "reference window not complete".into(),
            None,
        );
        return None;
    };
    let query = format!(
        "{}({sel}) current [{}, {}] vs reference [{}, {}]",
        dc.test,
        fmt_time(from),
        fmt_time(now),
        fmt_time(rf),
        fmt_time(rt)
    );
    let version = sel.matchers.get("model.version").cloned();
    let result = match drift_statistic(dc, source, &sel, (rf, rt), (from, now), min) {
        Ok(r) => r,
        Err(Some(why)) => {
            record(None, query, why, version);
            return None;
        }
        Err(None) => return None,
    };
    let Ok((stat, p)) = result else {
        record(None, query, "histograms not comparable".into(), version);
        return None;
    };
    let (holds, against) = drift_verdict(dc, stat, p);
    record(Some(stat), query, against, version);
    Some(holds)
}

/// A drift test's statistic and, for KS and chi-square, its p-value; `Err` when the test
/// cannot compare the two windows.
type DriftStatistic = Result<(f64, Option<f64>), drift::DriftError>;

/// The drift test's statistic (and p-value, for KS and chi-square) over the reference and
/// current windows. `Err(Some(why))` when there is too little data to test, recorded as the
/// input's reason; `Err(None)` when the source failed. The inner `Err` is a test that could
/// not compare the two.
fn drift_statistic(
    dc: &DriftCondition,
    source: &dyn SignalSource,
    sel: &Selector,
    (rf, rt): (u64, u64),
    (from, now): (u64, u64),
    min: f64,
) -> Result<DriftStatistic, Option<String>> {
    if dc.test == DriftTest::Chi2 {
        let by = dc.by.as_deref().unwrap_or("class");
        let r = source.counts_by(sel, by, rf, rt).map_err(|_| None)?;
        let cu = source.counts_by(sel, by, from, now).map_err(|_| None)?;
        if r.values().sum::<f64>() < min || cu.values().sum::<f64>() < min {
            return Err(Some(format!("fewer than {min} observations")));
        }
        return Ok(drift::chi_square_counts(&r, &cu).map(|t| (t.statistic, Some(t.p_value))));
    }
    let (Some(r), Some(cu)) = (
        source.histogram(sel, rf, rt).ok().flatten(),
        source.histogram(sel, from, now).ok().flatten(),
    ) else {
        return Err(Some("no histogram data".into()));
    };
    if r.total() < min || cu.total() < min {
        return Err(Some(format!("fewer than {min} observations")));
    }
    Ok(match dc.test {
        DriftTest::Psi => drift::psi(&r, &cu).map(|v| (v, None)),
        DriftTest::Js => drift::js_distance(&r, &cu).map(|v| (v, None)),
        // `policy check` refuses an unknown test; KS is what one would get.
        DriftTest::Ks | DriftTest::Chi2 | DriftTest::Unknown(_) => {
            drift::ks_bucketed(&r, &cu).map(|t| (t.statistic, Some(t.p_value)))
        }
    })
}

/// Whether a drift statistic holds against the condition's thresholds, and against what.
/// PSI and JS compare the statistic (`gt` defaults to the test's rule of thumb); KS and
/// chi-square need `p < pValue`, and the statistic above `gt`/`gte` when one is written.
fn drift_verdict(dc: &DriftCondition, stat: f64, p: Option<f64>) -> (bool, String) {
    match dc.test {
        DriftTest::Psi | DriftTest::Js => {
            let def = if dc.test == DriftTest::Psi { DEFAULT_PSI } else { DEFAULT_JS };
            if let Some(t) = dc.gte {
                (stat >= t, format!(">= {t}"))
            } else {
                let t = dc.gt.unwrap_or(def);
                (stat > t, format!("> {t}"))
            }
        }
        DriftTest::Ks | DriftTest::Chi2 | DriftTest::Unknown(_) => {
            let pv = dc.p_value.unwrap_or(DEFAULT_P);
            let p = p.unwrap_or(1.0);
            let (extra, text) = match (dc.gt, dc.gte) {
                (Some(t), _) => (stat > t, format!(" and statistic > {t}")),
                (_, Some(t)) => (stat >= t, format!(" and statistic >= {t}")),
                _ => (true, String::new()),
            };
            (p < pv && extra, format!("p = {p:.4} < {pv}{text}"))
        }
    }
}

/// Accuracy from feedback (the share of `correct=true`) or estimated from the mean
/// prediction confidence, against `lt`/`lte`.
fn eval_accuracy(
    a: &AccuracyCondition,
    source: &dyn SignalSource,
    now: u64,
    inputs: &mut Vec<InputValue>,
) -> Option<bool> {
    let window = a.window.map(|w| w.get()).unwrap_or(DEFAULT_DRIFT_WINDOW);
    let min = a.min_samples.unwrap_or(DEFAULT_MIN_SAMPLES) as f64;
    let (value, query) = if a.estimate == AccuracyEstimate::Feedback {
        let sel =
            Selector { metric: "inference.feedback".to_owned(), matchers: a.matchers.clone() };
        let counts =
            source.counts_by(&sel, "correct", now.saturating_sub(nanos(window)), now).ok()?;
        let q = format!("accuracy from {sel} over {}", humantime::format_duration(window));
        let right = counts.get("true").copied().unwrap_or(0.0);
        let total = right + counts.get("false").copied().unwrap_or(0.0);
        (drift::accuracy_from_feedback(right, total, min), q)
    } else {
        let sel = Selector {
            metric: "inference.prediction.confidence".to_owned(),
            matchers: a.matchers.clone(),
        };
        let mean_q = SignalQuery { selector: sel.clone(), stat: Stat::Mean, window };
        let count_q = SignalQuery { selector: sel, stat: Stat::Count, window };
        let mean = read(source, &mean_q, now);
        let count = read(source, &count_q, now).unwrap_or(0.0);
        (mean.filter(|_| count >= min), format!("estimated accuracy = {mean_q}"))
    };
    let (holds, against) = value
        .map(|v| compare(v, None, None, a.lt, a.lte))
        .unwrap_or((false, compare(0.0, None, None, a.lt, a.lte).1));
    inputs.push(InputValue {
        name: format!("accuracy ({})", a.estimate),
        query,
        value,
        against,
        recommends: None,
        version: None,
    });
    value.map(|_| holds)
}

/// A latency statistic now against the same statistic over the reference window, as a
/// ratio compared with `gt`/`gte`.
fn eval_latency_regression(
    l: &LatencyRegression,
    source: &dyn SignalSource,
    now: u64,
    inputs: &mut Vec<InputValue>,
) -> Option<bool> {
    let window = l.window.map(|w| w.get()).unwrap_or(DEFAULT_DRIFT_WINDOW);
    let metric = l.metric.clone().unwrap_or_else(|| "inference.request.duration".to_owned());
    let stat = l.stat.as_deref().unwrap_or("p95").parse::<Stat>().ok()?;
    let reference = reference_of(l.reference.as_deref())?;
    let selector = Selector { metric, matchers: l.matchers.clone() };
    let mut record = |value: Option<f64>, query: String, against: String| {
        inputs.push(InputValue {
            name: "latency regression".into(),
            query,
            value,
            against,
            recommends: None,
            version: None,
        });
    };
    let Some((rf, rt, sel)) = reference_window(reference, &selector, source, window, now) else {
        record(
            None,
            format!("{stat}({selector}) vs reference"),
            "reference window not complete".into(),
        );
        return None;
    };
    let cur_q = SignalQuery { selector: sel.clone(), stat, window };
    let ref_q = SignalQuery { selector: sel, stat, window: Duration::from_nanos(rt - rf) };
    let query = format!("{cur_q} / {ref_q} ending {}", fmt_time(rt));
    let (Some(cur), Some(base)) = (read(source, &cur_q, now), read(source, &ref_q, rt)) else {
        record(None, query, "no data".into());
        return None;
    };
    if base <= 0.0 {
        record(None, query, "reference is zero".into());
        return None;
    }
    let ratio = cur / base;
    let (holds, against) = compare(ratio, l.gt, l.gte, None, None);
    record(Some(ratio), query, against);
    Some(holds)
}

/// The first threshold written (`gt`, `gte`, `lt`, `lte`, in that order): whether `value`
/// passes it, and the threshold as text.
fn compare(
    value: f64,
    gt: Option<f64>,
    gte: Option<f64>,
    lt: Option<f64>,
    lte: Option<f64>,
) -> (bool, String) {
    if let Some(t) = gt {
        (value > t, format!("> {t}"))
    } else if let Some(t) = gte {
        (value >= t, format!(">= {t}"))
    } else if let Some(t) = lt {
        (value < t, format!("< {t}"))
    } else if let Some(t) = lte {
        (value <= t, format!("<= {t}"))
    } else {
        (false, "no threshold".to_owned())
    }
}

/// Advances a condition's `for` state: pending from the first evaluation it holds, firing
/// once it has held `hold_for` without a break; a break or unknown resets it.
pub(super) fn update_condition(
    cs: &mut ConditionState,
    holds: Option<bool>,
    hold_for: Duration,
    now: u64,
) {
    if holds == Some(true) {
        let since = *cs.pending_since.get_or_insert(now);
        cs.firing = now.saturating_sub(since) >= nanos(hold_for);
    } else {
        cs.pending_since = None;
        cs.firing = false;
    }
}

/// The first matcher on `key` anywhere in a condition (its own kind first, then its `all`
/// and `any` branches), for a job's `{{ model }}` parameter.
pub(super) fn first_matcher(c: &Condition, key: &str) -> Option<String> {
    let own = c
        .signal
        .as_ref()
        .and_then(|s| s.matchers.get(key))
        .or_else(|| c.drift.as_ref().and_then(|s| s.matchers.get(key)))
        .or_else(|| c.accuracy.as_ref().and_then(|s| s.matchers.get(key)))
        .or_else(|| c.latency_regression.as_ref().and_then(|s| s.matchers.get(key)))
        .or_else(|| c.classifier_drift.as_ref().and_then(|s| s.matchers.get(key)))
        .cloned();
    own.or_else(|| c.all.iter().chain(c.any.iter()).flatten().find_map(|s| first_matcher(s, key)))
}
