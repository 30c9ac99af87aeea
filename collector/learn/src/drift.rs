//! Classifier-based drift: can a model tell the current window from the reference?
//!
//! A domain classifier (linfa logistic regression) is trained to separate reference rows
//! (label 0) from current rows (label 1) of model-output features, e.g. per-request top-1
//! confidences expanded by [`confidence_features`]. Its k-fold cross-validated ROC-AUC is the
//! drift score: about 0.5 when the windows are alike, towards 1 when they differ. Outside
//! NannyML's 0.45–0.65 band (configurable) is an alert; below the band means the folds
//! disagree systematically, which is as suspicious as above it. This complements the
//! per-histogram statistics (PSI, KS) by looking at all features jointly.

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::Serialize;

use crate::LearnError;
use crate::score::{roc_auc, stratified_folds};

/// Domain-classifier settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftConfig {
    /// Cross-validation folds (stratified).
    pub folds: usize,
    /// ROC-AUC inside this closed band is "no drift".
    pub band: (f64, f64),
    /// L2 regularisation of the logistic regression (linfa's `alpha`).
    pub alpha: f64,
    /// Solver iterations per fit.
    pub max_iterations: u64,
    /// Each window needs at least this many rows for a score.
    pub min_rows: usize,
    /// Seed of the fold assignment, so a replay scores exactly as the live run did.
    pub seed: u64,
}

impl Default for DriftConfig {
    /// 5 folds, NannyML's band 0.45–0.65, alpha 1.0, 100 iterations, 50 rows per window.
    fn default() -> Self {
        Self {
            folds: 5,
            band: (0.45, 0.65),
            alpha: 1.0,
            max_iterations: 100,
            min_rows: 50,
            seed: 0x5EED,
        }
    }
}

/// The drift verdict for one reference/current pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftScore {
    /// Mean out-of-fold ROC-AUC.
    pub auc: f64,
    /// ROC-AUC of each fold.
    pub fold_aucs: Vec<f64>,
    /// True when `auc` is outside the band.
    pub alert: bool,
    /// Rows in the reference window.
    pub reference_rows: usize,
    /// Rows in the current window.
    pub current_rows: usize,
    /// One sentence for the decision record and the dashboard.
    pub why: String,
}

/// Features of one top-1 confidence for the domain classifier: the confidence, its square and
/// its logit. A linear classifier on the raw value only sees a shift of the mean; the square
/// and logit let it see a change of spread and of the tail near 1.
pub fn confidence_features(confidence: f64) -> [f64; 3] {
    let c = confidence.clamp(1e-6, 1.0 - 1e-6);
    [c, c * c, (c / (1.0 - c)).ln()]
}

/// Scores drift between `reference` and `current` rows (equal widths) by the cross-validated
/// ROC-AUC of a logistic domain classifier.
pub fn classifier_drift<R: AsRef<[f64]>>(
    reference: &[R],
    current: &[R],
    cfg: &DriftConfig,
) -> Result<DriftScore, LearnError> {
    if cfg.folds < 2 {
        return Err(LearnError::InvalidConfig {
            key: "folds",
            reason: format!("{} folds: at least 2 are needed", cfg.folds),
        });
    }
    if cfg.band.0.partial_cmp(&cfg.band.1).is_none_or(|o| o.is_gt()) {
        return Err(LearnError::InvalidConfig {
            key: "band",
            reason: format!("{:?} is empty", cfg.band),
        });
    }
    let need = cfg.min_rows.max(cfg.folds);
    if reference.len() < need || current.len() < need {
        return Err(LearnError::InvalidInput(format!(
            "windows of {} reference and {} current rows: each needs at least {need}",
            reference.len(),
            current.len()
        )));
    }
    let width = reference[0].as_ref().len();
    let rows: Vec<&[f64]> = reference.iter().chain(current).map(AsRef::as_ref).collect();
    if width == 0 || rows.iter().any(|r| r.len() != width || r.iter().any(|v| !v.is_finite())) {
        return Err(LearnError::InvalidInput(format!(
            "drift rows must all have {width} finite features"
        )));
    }
    let labels: Vec<bool> = (0..rows.len()).map(|i| i >= reference.len()).collect();
    let fold_of = stratified_folds(&labels, cfg.folds, cfg.seed);
    let mut fold_aucs = Vec::with_capacity(cfg.folds);
    for fold in 0..cfg.folds {
        let (train, test): (Vec<usize>, Vec<usize>) =
            (0..rows.len()).partition(|i| fold_of[*i] != fold);
        let (mean, scale) = standardiser(&rows, &train, width);
        let matrix = |idx: &[usize]| {
            let mut x = Vec::with_capacity(idx.len() * width);
            for &i in idx {
                x.extend(rows[i].iter().zip(&mean).zip(&scale).map(|((v, m), s)| (v - m) / s));
            }
            Array2::from_shape_vec((idx.len(), width), x)
                .map_err(|e| LearnError::InvalidInput(format!("feature matrix: {e}")))
        };
        let targets: Array1<usize> = train.iter().map(|i| usize::from(labels[*i])).collect();
        let dataset = Dataset::new(matrix(&train)?, targets);
        let model = LogisticRegression::default()
            .alpha(cfg.alpha)
            .max_iterations(cfg.max_iterations)
            .fit(&dataset)
            .map_err(|e| LearnError::fit("drift domain classifier", e))?;
        // linfa returns the probability of its "positive" class, which is the more frequent
        // label (first seen on a tie), not necessarily 1 = current: orient it.
        let mut p = model.predict_probabilities(&matrix(&test)?);
        if model.labels().pos.class != 1 {
            p.mapv_inplace(|v| 1.0 - v);
        }
        let test_labels: Vec<bool> = test.iter().map(|i| labels[*i]).collect();
        if let Some(auc) = roc_auc(&p.to_vec(), &test_labels) {
            fold_aucs.push(auc);
        }
    }
    if fold_aucs.is_empty() {
        return Err(LearnError::InvalidInput("no fold could be scored".to_owned()));
    }
    let auc = fold_aucs.iter().sum::<f64>() / fold_aucs.len() as f64;
    let (lo, hi) = cfg.band;
    let alert = auc < lo || auc > hi;
    let why = if auc > hi {
        format!(
            "domain classifier tells current from reference: ROC-AUC {auc:.3} ({}-fold) is above the {lo}–{hi} band",
            fold_aucs.len()
        )
    } else if auc < lo {
        format!(
            "domain classifier ROC-AUC {auc:.3} ({}-fold) is below the {lo}–{hi} band: folds disagree systematically",
            fold_aucs.len()
        )
    } else {
        format!(
            "no drift: ROC-AUC {auc:.3} ({}-fold) is inside the {lo}–{hi} band",
            fold_aucs.len()
        )
    };
    Ok(DriftScore {
        auc,
        fold_aucs,
        alert,
        reference_rows: reference.len(),
        current_rows: current.len(),
        why,
    })
}

fn standardiser(rows: &[&[f64]], idx: &[usize], width: usize) -> (Vec<f64>, Vec<f64>) {
    let n = idx.len().max(1) as f64;
    let mut mean = vec![0.0; width];
    let mut var = vec![0.0; width];
    for &i in idx {
        for (m, v) in mean.iter_mut().zip(rows[i]) {
            *m += v / n;
        }
    }
    for &i in idx {
        for ((s, m), v) in var.iter_mut().zip(&mean).zip(rows[i]) {
            *s += (v - m).powi(2) / n;
        }
    }
    let scale = var.into_iter().map(|v| if v > 1e-24 { v.sqrt() } else { 1.0 }).collect();
    (mean, scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Gauss;

    fn confidences(n: usize, mean: f64, sd: f64, rng: &mut Gauss) -> Vec<[f64; 3]> {
        (0..n).map(|_| confidence_features((mean + sd * rng.normal()).clamp(0.01, 0.999))).collect()
    }

    #[test]
    fn same_distribution_stays_in_band() {
        let mut rng = Gauss::new(1);
        let a = confidences(600, 0.85, 0.08, &mut rng);
        let b = confidences(600, 0.85, 0.08, &mut rng);
        let s = classifier_drift(&a, &b, &DriftConfig::default()).expect("score");
        assert!(!s.alert, "{s:?}");
        assert!((s.auc - 0.5).abs() < 0.06, "{s:?}");
        assert_eq!(s.fold_aucs.len(), 5);
    }

    #[test]
    fn shifted_confidence_alerts_with_a_reason() {
        let mut rng = Gauss::new(2);
        let a = confidences(600, 0.85, 0.08, &mut rng);
        let b = confidences(600, 0.72, 0.12, &mut rng);
        let s = classifier_drift(&a, &b, &DriftConfig::default()).expect("score");
        assert!(s.alert && s.auc > 0.75, "{s:?}");
        assert!(s.why.contains("above the 0.45–0.65 band"), "{}", s.why);
    }

    #[test]
    fn a_wider_spread_alone_is_seen() {
        // Same mean, doubled spread: invisible to a mean test, visible through c² and logit.
        let mut rng = Gauss::new(3);
        let a = confidences(800, 0.7, 0.05, &mut rng);
        let b = confidences(800, 0.7, 0.15, &mut rng);
        let s = classifier_drift(&a, &b, &DriftConfig::default()).expect("score");
        assert!(s.alert && s.auc > 0.65, "{s:?}");
    }

    #[test]
    fn rejects_small_or_ragged_windows_and_bad_config() {
        let a = vec![vec![1.0]; 10];
        assert!(matches!(
            classifier_drift(&a, &a, &DriftConfig::default()),
            Err(LearnError::InvalidInput(_))
        ));
        let mut b = vec![vec![1.0]; 60];
        b[3] = vec![1.0, 2.0];
        assert!(classifier_drift(&b.clone(), &b, &DriftConfig::default()).is_err());
        let cfg = DriftConfig { folds: 1, ..DriftConfig::default() };
        assert!(matches!(
            classifier_drift(&b.clone(), &b, &cfg),
            Err(LearnError::InvalidConfig { key: "folds", .. })
        ));
    }
}
