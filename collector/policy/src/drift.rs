//! Drift statistics between a reference window and the current window, computed from the
//! store's bucketed data: PSI, Kolmogorov–Smirnov on bucketed data, Jensen–Shannon distance,
//! chi-square on class counts, and accuracy from feedback.
//!
//! Defaults follow established tools: PSI > 0.2 is a significant shift (the credit-scoring
//! rule of thumb Evidently and NannyML use), Jensen–Shannon distance > 0.1 (Evidently), KS and
//! chi-square significant at p < 0.05. Sample size matters: with a few dozen observations PSI
//! is noisy and a p-value meaningless, so callers refuse windows below `minSamples`
//! (default 100) as "not enough data" rather than deciding on them.
//!
//! Accuracy estimated from mean top-1 confidence assumes a calibrated model: among
//! predictions made with confidence c, a fraction c is right, so the mean confidence equals
//! the expected accuracy. Over-confident models (common for un-tempered CNNs) overestimate it;
//! prefer `inference.feedback` where labels arrive.

use std::collections::{BTreeMap, BTreeSet};

use super::signal::Histogram;

/// Floor for empty bucket proportions in PSI, so an empty bucket gives a large but finite
/// term (the usual practice).
pub const PSI_EPSILON: f64 = 1e-4;

/// Why two distributions cannot be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    /// Different bucket bounds.
    #[error("histograms have different bucket bounds")]
    BoundsDiffer,
    /// No observations on one side.
    #[error("a window has no observations")]
    Empty,
}

/// A test statistic with its p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// The statistic (KS D, chi-square).
    pub statistic: f64,
    /// Probability of a statistic at least this large under "no drift".
    pub p_value: f64,
}

fn proportions(a: &Histogram, b: &Histogram) -> Result<(Vec<f64>, Vec<f64>), DriftError> {
    if a.bounds.len() != b.bounds.len()
        || a.counts.len() != b.counts.len()
        || a.bounds.iter().zip(&b.bounds).any(|(x, y)| (x - y).abs() > 1e-12)
    {
        return Err(DriftError::BoundsDiffer);
    }
    let (ta, tb) = (a.total(), b.total());
    if ta <= 0.0 || tb <= 0.0 {
        return Err(DriftError::Empty);
    }
    Ok((a.counts.iter().map(|c| c / ta).collect(), b.counts.iter().map(|c| c / tb).collect()))
}

/// Population stability index: Σ (c − r) · ln(c / r) over buckets.
pub fn psi(reference: &Histogram, current: &Histogram) -> Result<f64, DriftError> {
    let (r, c) = proportions(reference, current)?;
    Ok(r.iter()
        .zip(&c)
        .map(|(r, c)| {
            let (r, c) = (r.max(PSI_EPSILON), c.max(PSI_EPSILON));
            (c - r) * (c / r).ln()
        })
        .sum())
}

/// Jensen–Shannon distance (square root of the divergence, base 2), in [0, 1].
pub fn js_distance(reference: &Histogram, current: &Histogram) -> Result<f64, DriftError> {
    let (p, q) = proportions(reference, current)?;
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter().zip(m).filter(|(a, _)| **a > 0.0).map(|(a, m)| a * (a / m).log2()).sum()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    let div = 0.5 * kl(&p, &m) + 0.5 * kl(&q, &m);
    Ok(div.max(0.0).sqrt())
}

/// Two-sample Kolmogorov–Smirnov on bucketed data: D is the largest gap between the two
/// empirical CDFs at bucket bounds (a lower bound of the unbucketed D); the p-value uses the
/// asymptotic Kolmogorov distribution with effective size n·m/(n+m) and Stephens' correction.
pub fn ks_bucketed(reference: &Histogram, current: &Histogram) -> Result<TestResult, DriftError> {
    let (r, c) = proportions(reference, current)?;
    let (mut cr, mut cc, mut d) = (0.0, 0.0, 0.0f64);
    for (a, b) in r.iter().zip(&c) {
        cr += a;
        cc += b;
        d = d.max((cr - cc).abs());
    }
    let (n, m) = (reference.total(), current.total());
    let ne = n * m / (n + m);
    let lambda = (ne.sqrt() + 0.12 + 0.11 / ne.sqrt()) * d;
    Ok(TestResult { statistic: d, p_value: kolmogorov_q(lambda) })
}

/// Q_KS(λ) = 2 Σ_{j≥1} (−1)^{j−1} e^{−2 j² λ²}.
pub fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda < 1e-3 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for j in 1..=100 {
        let j = f64::from(j);
        let term = sign * (-2.0 * j * j * lambda * lambda).exp();
        sum += term;
        if term.abs() < 1e-12 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Chi-square goodness of fit of the current class counts against the reference class
/// proportions (classes from both windows; reference counts get +0.5 so a class new in the
/// current window has a finite expected count). Degrees of freedom: classes − 1.
pub fn chi_square_counts(
    reference: &BTreeMap<String, f64>,
    current: &BTreeMap<String, f64>,
) -> Result<TestResult, DriftError> {
    let classes: BTreeSet<&String> = reference.keys().chain(current.keys()).collect();
    let k = classes.len();
    let ref_total: f64 =
        classes.iter().map(|c| reference.get(*c).copied().unwrap_or(0.0) + 0.5).sum();
    let cur_total: f64 = current.values().sum();
    if k < 2 || cur_total <= 0.0 {
        return Err(DriftError::Empty);
    }
    let stat: f64 = classes
        .iter()
        .map(|c| {
            let e = cur_total * (reference.get(*c).copied().unwrap_or(0.0) + 0.5) / ref_total;
            let o = current.get(*c).copied().unwrap_or(0.0);
            (o - e) * (o - e) / e
        })
        .sum();
    let df = (k - 1) as f64;
    Ok(TestResult { statistic: stat, p_value: chi_square_sf(stat, df) })
}

/// Upper tail of the chi-square distribution: Q(df/2, x/2).
pub fn chi_square_sf(x: f64, df: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(df / 2.0, x / 2.0)
}

fn ln_gamma(x: f64) -> f64 {
    // Lanczos approximation (g = 7, n = 9), good to ~15 digits for x > 0.
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized upper incomplete gamma Q(a, x) (series below a+1, continued fraction above).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x < a + 1.0 {
        let mut sum = 1.0 / a;
        let mut del = sum;
        let mut ap = a;
        for _ in 0..500 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        let p = sum * (-x + a * x.ln() - ln_gamma(a)).exp();
        (1.0 - p).clamp(0.0, 1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..500 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-15 {
                break;
            }
        }
        ((-x + a * x.ln() - ln_gamma(a)).exp() * h).clamp(0.0, 1.0)
    }
}

/// Accuracy measured from feedback counts, or `None` below `min_samples` labelled answers.
pub fn accuracy_from_feedback(correct: f64, total: f64, min_samples: f64) -> Option<f64> {
    (total >= min_samples && total > 0.0).then(|| correct / total)
}

/// Default `minSamples` of `classifierDrift`. Cross-validated AUC is biased low on small
/// windows (each held-out fold's class mix runs against its training folds'): in the unit
/// test, identical windows of 240 observations scored 0.44, outside the band; with 1,440
/// they score inside it.
pub const CLASSIFIER_MIN_SAMPLES: u64 = 1000;
/// Default cross-validation folds of `classifierDrift`.
pub const CLASSIFIER_FOLDS: usize = 5;
/// At most this many rows per window go to the domain classifier: larger windows are scaled
/// down proportionally (bucket shares kept, largest remainders first), which bounds the fit
/// time of a live evaluation without changing what the classifier can tell apart.
pub const CLASSIFIER_MAX_ROWS: usize = 2000;

/// Rows of [`stoker_learn::drift::confidence_features`] from a histogram: each observation
/// stands at its bucket's midpoint (the first bucket's at its upper bound, the overflow
/// bucket's at the last bound), at most `max_rows` rows in the histogram's proportions.
pub fn histogram_rows(h: &Histogram, max_rows: usize) -> Vec<[f64; 3]> {
    let total = h.total();
    if total <= 0.0 || h.bounds.is_empty() {
        return Vec::new();
    }
    let scale = (max_rows as f64 / total).min(1.0);
    let wanted: Vec<f64> = h.counts.iter().map(|c| c.max(0.0) * scale).collect();
    let mut n: Vec<usize> = wanted.iter().map(|w| w.floor() as usize).collect();
    let budget = (total * scale).round() as usize;
    let mut order: Vec<usize> = (0..wanted.len()).collect();
    order.sort_by(|a, b| {
        (wanted[*b] - wanted[*b].floor()).total_cmp(&(wanted[*a] - wanted[*a].floor()))
    });
    let mut have: usize = n.iter().sum();
    for i in order {
        if have >= budget {
            break;
        }
        if wanted[i] > n[i] as f64 {
            n[i] += 1;
            have += 1;
        }
    }
    let last = h.bounds.len() - 1;
    let mut rows = Vec::with_capacity(have);
    for (i, k) in n.iter().enumerate() {
        let x = match i {
            0 => h.bounds[0],
            i if i > last => h.bounds[last],
            i => (h.bounds[i - 1] + h.bounds[i]) / 2.0,
        };
        rows.extend(std::iter::repeat_n(stoker_learn::drift::confidence_features(x), *k));
    }
    rows
}

/// Evaluates `classifierDrift`: `Some(true)` when the domain classifier's cross-validated
/// ROC-AUC between the reference and the current window is outside the band; `None` (with
/// the reason recorded) when a window is incomplete, missing or too small.
pub fn eval_classifier_drift(
    cd: &super::format::ClassifierDriftCondition,
    source: &dyn super::signal::SignalSource,
    now: u64,
    inputs: &mut Vec<super::inputs::InputValue>,
) -> Option<bool> {
    use super::inputs::{DEFAULT_DRIFT_WINDOW, InputValue, Reference, fmt_time, reference_window};
    use super::signal::{Selector, nanos};
    let window = cd.window.map(|w| w.get()).unwrap_or(DEFAULT_DRIFT_WINDOW);
    let reference = cd
        .reference
        .as_deref()
        .map(Reference::parse)
        .unwrap_or(Ok(Reference::FirstOfVersion(std::time::Duration::from_secs(3600))))
        .ok()?;
    let metric = cd.metric.clone().unwrap_or_else(|| "inference.prediction.confidence".to_owned());
    let selector = Selector { metric, matchers: cd.matchers.clone() };
    let min = cd.min_samples.unwrap_or(CLASSIFIER_MIN_SAMPLES) as f64;
    let band = cd.band.unwrap_or([0.45, 0.65]);
    let from = now.saturating_sub(nanos(window));
    let mut record =
        |value: Option<f64>, query: String, against: String, version: Option<String>| {
            inputs.push(InputValue {
                name: format!("classifier drift {}", selector.metric),
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
            format!("auc({selector}) reference {:?}", cd.reference),
            "reference window not complete".into(),
            None,
        );
        return None;
    };
    let query = format!(
        "auc({sel}) current [{}, {}] vs reference [{}, {}]",
        fmt_time(from),
        fmt_time(now),
        fmt_time(rf),
        fmt_time(rt)
    );
    let version = sel.matchers.get("model.version").cloned();
    let (Some(r), Some(cu)) = (
        source.histogram(&sel, rf, rt).ok().flatten(),
        source.histogram(&sel, from, now).ok().flatten(),
    ) else {
        record(None, query, "no histogram data".into(), version);
        return None;
    };
    if r.total() < min || cu.total() < min {
        record(None, query, format!("fewer than {min} observations"), version);
        return None;
    }
    let cfg = stoker_learn::drift::DriftConfig {
        folds: cd.folds.unwrap_or(CLASSIFIER_FOLDS),
        band: (band[0], band[1]),
        min_rows: (min as usize).min(CLASSIFIER_MAX_ROWS),
        ..Default::default()
    };
    let rows_r = histogram_rows(&r, CLASSIFIER_MAX_ROWS);
    let rows_c = histogram_rows(&cu, CLASSIFIER_MAX_ROWS);
    match stoker_learn::drift::classifier_drift(&rows_r, &rows_c, &cfg) {
        Ok(score) => {
            record(
                Some(score.auc),
                query,
                format!("ROC-AUC outside [{}, {}]", band[0], band[1]),
                version,
            );
            Some(score.alert)
        }
        Err(e) => {
            record(None, query, format!("no score: {e}"), version);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(counts: &[f64]) -> Histogram {
        Histogram { bounds: (1..counts.len()).map(|i| i as f64).collect(), counts: counts.to_vec() }
    }

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() < tol, "{a} != {b}");
    }

    #[test]
    fn histogram_rows_keep_bucket_shares_within_the_row_budget() {
        let hist =
            Histogram { bounds: vec![0.5, 0.8, 0.9], counts: vec![1000.0, 3000.0, 0.0, 6000.0] };
        let rows = histogram_rows(&hist, 2000);
        assert_eq!(rows.len(), 2000);
        let at = |x: f64| rows.iter().filter(|r| (r[0] - x).abs() < 1e-9).count();
        // First bucket at its upper bound, inner buckets at midpoints, overflow at the last bound.
        assert_eq!((at(0.5), at(0.65), at(0.85), at(0.9)), (200, 600, 0, 1200));
        let small = Histogram { bounds: vec![0.5], counts: vec![3.0, 4.0] };
        assert_eq!(histogram_rows(&small, 2000).len(), 7, "small windows are used whole");
        assert!(
            histogram_rows(&Histogram { bounds: vec![0.5], counts: vec![0.0, 0.0] }, 10).is_empty()
        );
    }

    /// The condition through a policy source: two replicas' confidences, one shifting after
    /// 4 h; the first hour of the version is the reference.
    #[test]
    fn classifier_drift_condition_alerts_outside_the_band_only() {
        use crate::format::ClassifierDriftCondition;
        use crate::series::{SeriesSource, series_from_notation};
        use crate::signal::NANOS;
        let src = |b: &str| {
            let step = std::time::Duration::from_secs(5);
            SeriesSource::new(vec![
                series_from_notation(r#"inference.prediction.confidence{model.name="resnet",model.version="v7",host.name="a"}"#, "0.95x5039", 0, step).expect("a"),
                series_from_notation(r#"inference.prediction.confidence{model.name="resnet",model.version="v7",host.name="b"}"#, b, 0, step).expect("b"),
            ])
        };
        let cond: ClassifierDriftCondition = serde_json::from_value(
            serde_json::json!({"window": "1h", "where": {"model.name": "resnet"}}),
        )
        .expect("condition");
        let shifted = src("0.75x2879 0.45x2160");
        let steady = src("0.75x5039");
        let mut inputs = Vec::new();
        let at = |h: f64| (h * 3600.0) as u64 * NANOS;
        assert_eq!(
            eval_classifier_drift(&cond, &steady, at(6.0), &mut inputs),
            Some(false),
            "{inputs:?}"
        );
        let auc = inputs[0].value.expect("auc");
        assert!((0.45..=0.65).contains(&auc), "same distribution: AUC {auc}");
        assert_eq!(inputs[0].version.as_deref(), Some("v7"));
        inputs.clear();
        assert_eq!(
            eval_classifier_drift(&cond, &shifted, at(3.9), &mut inputs),
            Some(false),
            "before the shift: {inputs:?}"
        );
        inputs.clear();
        assert_eq!(
            eval_classifier_drift(&cond, &shifted, at(5.0), &mut inputs),
            Some(true),
            "{inputs:?}"
        );
        assert!(inputs[0].value.expect("auc") > 0.65, "{inputs:?}");
        // A band that takes the shift in: no alert.
        let wide: ClassifierDriftCondition =
            serde_json::from_value(serde_json::json!({"window": "1h", "band": [0.0, 1.0]}))
                .expect("condition");
        inputs.clear();
        assert_eq!(eval_classifier_drift(&wide, &shifted, at(5.0), &mut inputs), Some(false));
        // The reference hour is not over yet: unknown, with the reason.
        inputs.clear();
        assert_eq!(eval_classifier_drift(&cond, &shifted, at(0.5), &mut inputs), None);
        assert!(inputs[0].against.contains("reference"), "{inputs:?}");
    }

    #[test]
    fn psi_matches_hand_computation() {
        // (0.25-0.5)·ln(0.5) + (0.75-0.5)·ln(1.5) = 0.173287 + 0.101366
        close(psi(&h(&[50.0, 50.0]), &h(&[25.0, 75.0])).expect("psi"), 0.274653, 1e-5);
        close(psi(&h(&[10.0, 10.0]), &h(&[30.0, 30.0])).expect("psi"), 0.0, 1e-12);
    }

    #[test]
    fn js_distance_matches_hand_computation() {
        // M = (0.375, 0.625); JSD = ½(0.046554 + 0.051035) = 0.048795; sqrt = 0.220896
        close(js_distance(&h(&[1.0, 1.0]), &h(&[1.0, 3.0])).expect("js"), 0.220896, 1e-5);
        close(js_distance(&h(&[1.0, 0.0]), &h(&[0.0, 1.0])).expect("js"), 1.0, 1e-12);
    }

    #[test]
    fn ks_statistic_and_p_value() {
        let r = ks_bucketed(&h(&[50.0, 50.0]), &h(&[25.0, 75.0])).expect("ks");
        close(r.statistic, 0.25, 1e-12);
        // ne = 50; λ = (7.0711 + 0.12 + 0.01556)·0.25 = 1.801665; Q(λ) ≈ 2e^{-6.4920} = 0.003031
        close(r.p_value, 0.003031, 2e-6);
        close(kolmogorov_q(1.358), 0.0500, 5e-4);
    }

    #[test]
    fn chi_square_tail_matches_tables() {
        close(chi_square_sf(3.841459, 1.0), 0.05, 1e-6);
        close(chi_square_sf(5.991465, 2.0), 0.05, 1e-6);
        close(chi_square_sf(18.307038, 10.0), 0.05, 1e-6);
        close(chi_square_sf(0.5, 3.0), 0.918891, 1e-5);
    }

    #[test]
    fn chi_square_on_class_counts() {
        let r = BTreeMap::from([("cat".to_owned(), 499.5), ("dog".to_owned(), 499.5)]);
        let c = BTreeMap::from([("cat".to_owned(), 60.0), ("dog".to_owned(), 40.0)]);
        // expected 50/50 → (10² + 10²)/50 = 4.0, df 1 → p = 0.0455
        let t = chi_square_counts(&r, &c).expect("chi2");
        close(t.statistic, 4.0, 1e-9);
        close(t.p_value, 0.045500, 1e-5);
    }

    #[test]
    fn different_bounds_are_refused() {
        let a = Histogram { bounds: vec![1.0], counts: vec![1.0, 1.0] };
        let b = Histogram { bounds: vec![2.0], counts: vec![1.0, 1.0] };
        assert_eq!(psi(&a, &b), Err(DriftError::BoundsDiffer));
    }

    #[test]
    fn feedback_accuracy_needs_samples() {
        assert_eq!(accuracy_from_feedback(90.0, 100.0, 100.0), Some(0.9));
        assert_eq!(accuracy_from_feedback(9.0, 10.0, 100.0), None);
    }

    proptest! {
        #[test]
        fn statistics_are_bounded_and_zero_on_identity(counts in proptest::collection::vec(1.0f64..1000.0, 2..12), other in proptest::collection::vec(0.0f64..1000.0, 12)) {
            let a = h(&counts);
            let b = h(&other[..counts.len()]);
            prop_assume!(b.total() > 0.0);
            prop_assert!(psi(&a, &a).expect("psi").abs() < 1e-9);
            prop_assert!(psi(&a, &b).expect("psi") >= -1e-12);
            let js = js_distance(&a, &b).expect("js");
            prop_assert!((0.0..=1.0 + 1e-12).contains(&js));
            let ks = ks_bucketed(&a, &b).expect("ks");
            prop_assert!((0.0..=1.0).contains(&ks.statistic));
            prop_assert!((0.0..=1.0).contains(&ks.p_value));
        }
    }
}
