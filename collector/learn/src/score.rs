//! Scores linfa does not provide, owned here and checked against hand-computed values:
//! MAPE (forecast error), ROC-AUC (drift classifier) and stratified k-fold assignment.

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

/// Actual values with a magnitude below this are skipped by [`mape`]: a percentage error
/// against (almost) zero load is meaningless and would dominate the mean.
pub const MAPE_MIN_ACTUAL: f64 = 1e-9;

/// Mean absolute percentage error, as a fraction (0.05 = 5 %), over pairs `(actual, forecast)`.
/// Pairs with a non-finite value or |actual| < [`MAPE_MIN_ACTUAL`] are skipped; `None` when
/// nothing is left.
pub fn mape(pairs: impl IntoIterator<Item = (f64, f64)>) -> Option<f64> {
    let (sum, n) = pairs
        .into_iter()
        .filter(|(a, f)| a.is_finite() && f.is_finite() && a.abs() >= MAPE_MIN_ACTUAL)
        .fold((0.0, 0_usize), |(sum, n), (a, f)| (sum + ((a - f) / a).abs(), n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Area under the ROC curve of `scores` for the binary `labels` (true = positive), computed
/// as the Mann–Whitney U statistic with tied scores given their average rank.
/// `None` unless both classes are present and every score is finite.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    if scores.len() != labels.len() || scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let n_pos = labels.iter().filter(|l| **l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Sum of (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// Assigns each row to one of `k` folds, stratified by label: each class is shuffled with a
/// seeded RNG and dealt round-robin, so every fold holds both classes in about the overall
/// proportion. Returns the fold index of each row.
pub fn stratified_folds(labels: &[bool], k: usize, seed: u64) -> Vec<usize> {
    let k = k.max(1);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut fold = vec![0; labels.len()];
    for class in [false, true] {
        let mut rows: Vec<usize> = (0..labels.len()).filter(|i| labels[*i] == class).collect();
        rows.shuffle(&mut rng);
        for (j, row) in rows.into_iter().enumerate() {
            fold[row] = j % k;
        }
    }
    fold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mape_matches_hand_computation() {
        // |100-90|/100 = 0.1, |50-60|/50 = 0.2, |200-200|/200 = 0 -> mean 0.1
        let m = mape([(100.0, 90.0), (50.0, 60.0), (200.0, 200.0)]).expect("mape");
        assert!((m - 0.1).abs() < 1e-12, "{m}");
        // zero actuals and NaNs are skipped, not divided by
        let m = mape([(0.0, 5.0), (10.0, 15.0), (f64::NAN, 1.0)]).expect("mape");
        assert!((m - 0.5).abs() < 1e-12, "{m}");
        assert_eq!(mape([(0.0, 1.0)]), None);
    }

    #[test]
    fn auc_matches_hand_computation() {
        // Perfect separation and its reverse.
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]), Some(0.0));
        // Pairs (pos, neg): pos 0.35 beats neg 0.1, loses to neg 0.4; pos 0.8 beats both -> 3/4.
        let auc = roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).expect("auc");
        assert!((auc - 0.75).abs() < 1e-12, "{auc}");
        // A tie between a positive and a negative counts one half: pairs 0.5 vs 0.5 = 0.5,
        // 0.5 vs 0.2 = 1 -> (0.5 + 1) / 2 = 0.75.
        let auc = roc_auc(&[0.5, 0.5, 0.2], &[true, false, false]).expect("auc");
        assert!((auc - 0.75).abs() < 1e-12, "{auc}");
        // All scores tied: no information, 0.5.
        assert_eq!(roc_auc(&[1.0; 4], &[true, false, true, false]), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(roc_auc(&[0.1, f64::NAN], &[true, false]), None);
    }

    #[test]
    fn folds_are_stratified_and_seeded() {
        let labels: Vec<bool> = (0..100).map(|i| i < 30).collect();
        let folds = stratified_folds(&labels, 5, 7);
        for f in 0..5 {
            let pos = (0..100).filter(|i| folds[*i] == f && labels[*i]).count();
            let neg = (0..100).filter(|i| folds[*i] == f && !labels[*i]).count();
            assert_eq!((pos, neg), (6, 14), "fold {f}");
        }
        assert_eq!(folds, stratified_folds(&labels, 5, 7));
        assert_ne!(folds, stratified_folds(&labels, 5, 8));
    }
}
