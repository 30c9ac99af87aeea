//! The model learns the clean digits, loses confidence on drifted ones, and a retrain on the
//! drifted distribution wins it back.

use stoker_example_cnn::data::{DataParams, Dataset};
use stoker_example_cnn::train::{evaluate, train};

use crate::support::{CLEAN, small_config};

#[test]
fn trains_to_ninety_percent_on_clean_data() {
    let e = CLEAN.evaluation;
    assert!(e.accuracy >= 0.9, "held-out accuracy {:.3} < 0.9", e.accuracy);
    assert!(e.mean_confidence > 0.8, "mean confidence {:.3}", e.mean_confidence);
}

#[test]
fn drift_lowers_confidence_and_a_retrain_on_it_recovers() {
    let drifted = DataParams::demo_drift();
    let drifted_set = Dataset::generate(600, &drifted, 99);
    let clean = CLEAN.evaluation;
    let old_on_drift = evaluate(&CLEAN.model, &drifted_set).unwrap();
    assert!(
        old_on_drift.mean_confidence < clean.mean_confidence - 0.15,
        "drift should lower confidence: clean {:.3}, drifted {:.3}",
        clean.mean_confidence,
        old_on_drift.mean_confidence
    );
    let retrained = train(&small_config(drifted)).unwrap();
    let new_on_drift = evaluate(&retrained.model, &drifted_set).unwrap();
    assert!(
        new_on_drift.mean_confidence > old_on_drift.mean_confidence + 0.15,
        "retrain should recover confidence: old {:.3}, new {:.3}",
        old_on_drift.mean_confidence,
        new_on_drift.mean_confidence
    );
    assert!(
        new_on_drift.accuracy >= 0.85,
        "retrained accuracy on drifted data {:.3}",
        new_on_drift.accuracy
    );
}
