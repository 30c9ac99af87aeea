//! Classifier-drift false-alarm rate and detection delay.

use stoker_learn::drift::DriftConfig;
use stoker_learn::eval::drift_evaluation;

#[test]
fn drift_is_caught_within_a_few_windows_with_few_false_alarms() {
    let d = drift_evaluation(6, super::SEED, &DriftConfig::default()).expect("evaluation");
    eprintln!("drift: {d:?}");
    assert_eq!(d.detected, d.drift_streams, "{d:?}");
    assert!(d.false_alarm_rate() <= 0.05, "{d:?}");
    assert!(d.max_delay_windows <= 6 && d.mean_delay_windows <= 5.0, "{d:?}");
}
