//! The replay-style simulation: the forecast floor must cut SLO-violation minutes on the
//! diurnal and slow-ramp traces at no more than 10 % extra replica-hours (issue 9's bar).

use stoker_learn::eval::scaling_evaluation;

#[test]
fn forecast_floor_beats_reactive_within_ten_percent_more_replica_hours() {
    for row in scaling_evaluation(super::SEED) {
        let (r, p) = (row.reactive, row.predictive);
        eprintln!("{}: reactive {r:?}\n  predictive {p:?}", row.trace);
        assert!(
            p.slo_violation_minutes < r.slo_violation_minutes,
            "{}: {} vs {} SLO-violation minutes",
            row.trace,
            p.slo_violation_minutes,
            r.slo_violation_minutes
        );
        assert!(p.replica_hours <= 1.10 * r.replica_hours, "{}: {p:?} vs {r:?}", row.trace);
        assert!(p.floor_raised > 0, "{}: the floor never acted", row.trace);
    }
}
