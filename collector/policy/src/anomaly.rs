//! The `anomaly` condition: holds while the collector's anomaly scorer
//! (`stoker_collector::anomaly`) has flagged a matching subject within the window. It reads the
//! scorer's `stoker.anomaly.score` gauge through the ordinary [`SignalSource`], so it works in
//! the live engine, in `policy test` fixtures and in `policy replay` traces alike.

use std::collections::BTreeMap;
use std::time::Duration;

use super::format::AnomalyCondition;
use super::inputs::{InputValue, read};
use super::signal::{Selector, SignalQuery, SignalSource, Stat};

/// The gauge the scorer writes for flagged subjects.
pub const SCORE_METRIC: &str = "stoker.anomaly.score";
/// Attribute keys of [`SCORE_METRIC`].
pub const ATTR_NODE: &str = "anomaly.node";
/// Model attribute of [`SCORE_METRIC`] (absent for node-level anomalies).
pub const ATTR_MODEL: &str = "anomaly.model";
/// `peers` or `history`.
pub const ATTR_BASELINE: &str = "anomaly.baseline";
/// The feature that deviates most.
pub const ATTR_FEATURE: &str = "anomaly.feature";

/// Default window of an `anomaly` condition.
pub const DEFAULT_ANOMALY_WINDOW: Duration = Duration::from_secs(300);

/// The query an `anomaly` condition reads: the highest score of matching subjects.
pub fn anomaly_query(a: &AnomalyCondition) -> SignalQuery {
    let mut matchers = BTreeMap::new();
    for (k, v) in [
        (ATTR_NODE, &a.node),
        (ATTR_MODEL, &a.model),
        (ATTR_BASELINE, &a.baseline),
        (ATTR_FEATURE, &a.feature),
    ] {
        if let Some(v) = v {
            matchers.insert(k.to_owned(), v.clone());
        }
    }
    SignalQuery {
        selector: Selector { metric: SCORE_METRIC.to_owned(), matchers },
        stat: Stat::Max,
        window: a.window.map(|w| w.get()).unwrap_or(DEFAULT_ANOMALY_WINDOW),
    }
}

/// Evaluates `anomaly`: holds when the highest matching score in the window is at least
/// `gte` (default: any flagged anomaly, score > 0). No score series in the window means no
/// subject was flagged: the condition does not hold (it is not missing data).
pub fn eval_anomaly(
    a: &AnomalyCondition,
    source: &dyn SignalSource,
    now: u64,
    inputs: &mut Vec<InputValue>,
) -> Option<bool> {
    let q = anomaly_query(a);
    let value = read(source, &q, now);
    let (holds, against) = match a.gte {
        Some(t) => (value.is_some_and(|v| v >= t), format!(">= {t}")),
        None => (value.is_some_and(|v| v > 0.0), "> 0 (flagged)".to_owned()),
    };
    inputs.push(InputValue {
        name: "anomaly".to_owned(),
        query: q.to_string(),
        value,
        against,
        recommends: None,
        version: None,
    });
    Some(holds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{SeriesSource, series_from_notation};
    use crate::signal::NANOS;

    #[test]
    fn holds_only_for_matching_flagged_subjects_in_the_window() {
        let s = series_from_notation(
            r#"stoker.anomaly.score{anomaly.node="gpu-07",anomaly.baseline="peers",anomaly.feature="hw.power"}"#,
            "_x10 6.2x5 0",
            0,
            Duration::from_secs(60),
        )
        .expect("series");
        let src = SeriesSource::new(vec![s]);
        let mut inputs = Vec::new();
        let node = |n: &str| AnomalyCondition { node: Some(n.into()), ..Default::default() };
        assert_eq!(
            eval_anomaly(&node("gpu-07"), &src, 5 * 60 * NANOS, &mut inputs),
            Some(false),
            "nothing flagged yet"
        );
        assert_eq!(eval_anomaly(&node("gpu-07"), &src, 12 * 60 * NANOS, &mut inputs), Some(true));
        assert_eq!(
            eval_anomaly(&node("gpu-01"), &src, 12 * 60 * NANOS, &mut inputs),
            Some(false),
            "another node"
        );
        let strict = AnomalyCondition { gte: Some(7.0), ..node("gpu-07") };
        assert_eq!(
            eval_anomaly(&strict, &src, 12 * 60 * NANOS, &mut inputs),
            Some(false),
            "score under gte"
        );
        // Flagged at minutes 10-15, cleared (the 0) at 16: holds until the flagged points
        // leave the 5-minute window (0, 20] → (15, 20].
        assert_eq!(eval_anomaly(&node("gpu-07"), &src, 19 * 60 * NANOS, &mut inputs), Some(true));
        assert_eq!(eval_anomaly(&node("gpu-07"), &src, 20 * 60 * NANOS, &mut inputs), Some(false));
        assert!(inputs[1].query.contains("stoker.anomaly.score"), "{:?}", inputs[1]);
    }
}
