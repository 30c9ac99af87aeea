//! Forecast MAPE at a 5-minute horizon against the naive last-value forecast.

use stoker_learn::eval::forecast_evaluation;

#[test]
fn forecaster_beats_naive_where_there_is_structure() {
    let rows = forecast_evaluation(super::SEED).expect("evaluation");
    for row in &rows {
        let (m, n) = (
            row.report.model_mape.expect("model scored"),
            row.report.naive_mape.expect("naive scored"),
        );
        eprintln!("{}: model {:.4} naive {:.4} ({} points)", row.trace, m, n, row.report.points);
        assert!(row.report.points > 1000, "{}: too few points", row.trace);
        match row.trace {
            // Daily cycle, ramp and the flat stretches around a spike: structure or noise the
            // model averages away, where the last value carries the full noise.
            "diurnal" | "slow-ramp" | "spike" => {
                assert!(m < 0.85 * n, "{}: model {m} vs naive {n}", row.trace)
            }
            // A step is unforecastable: the model must not be much worse than naive.
            "step" => assert!(m < 1.1 * n, "step: model {m} vs naive {n}"),
            other => panic!("unexpected trace {other}"),
        }
        assert!(m < 0.08, "{}: model MAPE {m}", row.trace);
    }
    assert_eq!(rows.len(), 4);
}
