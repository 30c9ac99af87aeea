//! Evaluates the learning models on generated traces with known structure and prints tables:
//! forecast MAPE at a 5-minute horizon against the naive last value, anomaly precision/recall
//! on injected anomalies, classifier-drift false alarms and detection delay, and a replay of
//! a reactive scaler with and without the forecast floor.
//!
//! `cargo run --release -p stoker-learn --example evaluate`

use stoker_learn::drift::DriftConfig;
use stoker_learn::eval;

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.2} %", 100.0 * v))
}

fn main() -> Result<(), stoker_learn::LearnError> {
    let seed = 42;
    println!("Forecast at a 5-minute horizon (10 s steps, hourly refits)");
    println!("{:<10} {:>10} {:>10} {:>8} {:>7}", "trace", "model", "naive", "points", "refits");
    for row in eval::forecast_evaluation(seed)? {
        let r = row.report;
        println!(
            "{:<10} {:>10} {:>10} {:>8} {:>7}",
            row.trace,
            pct(r.model_mape),
            pct(r.naive_mape),
            r.points,
            r.refits
        );
    }

    println!("\nAnomalies on injected ground truth");
    println!(
        "{:<26} {:>9} {:>7} {:>4} {:>4} {:>4}",
        "detector", "precision", "recall", "TP", "FP", "FN"
    );
    for (name, d) in [
        ("peers (DBSCAN, 100x40)", eval::peer_evaluation(100, seed)?),
        ("history (k-means, 5000)", eval::history_evaluation(5000, seed)?),
    ] {
        println!(
            "{:<26} {:>9.3} {:>7.3} {:>4} {:>4} {:>4}",
            name,
            d.precision(),
            d.recall(),
            d.true_positives,
            d.false_positives,
            d.false_negatives
        );
    }

    let cfg = DriftConfig::default();
    let d = eval::drift_evaluation(20, seed, &cfg)?;
    println!(
        "\nClassifier drift ({}-fold ROC-AUC, band {}–{}, windows of {} requests)",
        cfg.folds,
        cfg.band.0,
        cfg.band.1,
        eval::DRIFT_WINDOW
    );
    println!(
        "false alarms: {}/{} clean windows ({:.2} %)",
        d.false_alarms,
        d.clean_windows,
        100.0 * d.false_alarm_rate()
    );
    println!(
        "drift detected: {}/{} streams, delay mean {:.2} windows ({:.0} requests), max {} windows",
        d.detected,
        d.drift_streams,
        d.mean_delay_windows,
        d.mean_delay_windows * eval::DRIFT_WINDOW as f64,
        d.max_delay_windows
    );

    let c = eval::EVAL_CAPACITY;
    println!(
        "\nScaling replay ({} rps/replica, {}s warm-up, target {:.0} %, SLO above {:.0} %)",
        c.per_replica_rps,
        c.warmup.as_secs(),
        100.0 * c.target_utilization,
        100.0 * c.slo_utilization
    );
    println!(
        "{:<10} {:<26} {:>14} {:>14} {:>10}",
        "trace", "scaler", "SLO-viol. min", "replica-hours", "scale-outs"
    );
    for row in eval::scaling_evaluation(seed) {
        for (name, r) in [("reactive", row.reactive), ("reactive + forecast floor", row.predictive)]
        {
            println!(
                "{:<10} {:<26} {:>14.1} {:>14.1} {:>10}",
                row.trace, name, r.slo_violation_minutes, r.replica_hours, r.scale_outs
            );
        }
        println!(
            "{:<10} {:<26} {:>13.0}% {:>13.1}%",
            "",
            "change",
            100.0
                * (row.predictive.slo_violation_minutes
                    / row.reactive.slo_violation_minutes.max(1e-9)
                    - 1.0),
            100.0 * (row.predictive.replica_hours / row.reactive.replica_hours - 1.0)
        );
    }
    Ok(())
}
