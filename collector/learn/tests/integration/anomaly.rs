//! Anomaly precision and recall on injected anomalies.

use stoker_learn::eval::{history_evaluation, peer_evaluation};

#[test]
fn peer_detector_finds_injected_odd_nodes() {
    let d = peer_evaluation(30, super::SEED).expect("evaluation");
    eprintln!("peers: {d:?} precision {:.3} recall {:.3}", d.precision(), d.recall());
    assert!(d.true_positives >= 30, "too few injected anomalies to judge: {d:?}");
    assert!(d.precision() >= 0.85 && d.recall() >= 0.9, "{d:?}");
}

#[test]
fn history_detector_finds_injected_power_shifts() {
    let d = history_evaluation(2000, super::SEED).expect("evaluation");
    eprintln!("history: {d:?} precision {:.3} recall {:.3}", d.precision(), d.recall());
    assert!(d.true_positives >= 30, "too few injected anomalies to judge: {d:?}");
    assert!(d.precision() >= 0.9 && d.recall() >= 0.9, "{d:?}");
}
