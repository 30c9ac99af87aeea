use serde_json::json;

use super::*;

fn hist(name: &str) -> Resolved {
    Resolved { family: Family::Histogram, name: name.into() }
}

fn gauge(name: &str) -> Resolved {
    Resolved { family: Family::Gauge, name: name.into() }
}

fn plan<'a>(stat: query::Stat, group: &'a [String], across: Option<Across>) -> Plan<'a> {
    Plan {
        matchers: "model_name=\"resnet\"".into(),
        stat,
        window: Duration::from_secs(60),
        group,
        across,
    }
}

#[test]
fn string_literals_escape_what_promql_needs() {
    assert_eq!(quote("plain"), "\"plain\"");
    assert_eq!(quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
}

#[test]
fn windows_and_instants_are_written_to_the_millisecond() {
    // (t - w, t]: Prometheus 2.x ranges are closed at the left, so one millisecond comes off.
    assert_eq!(range(Duration::from_secs(300)), "[299999ms]");
    assert_eq!(range(Duration::from_millis(1)), "[1ms]");
    assert_eq!(range(Duration::from_nanos(10)), "[1ms]");
    assert_eq!(seconds(1_800_000_000_123_456_789), "1800000000.123");
}

#[test]
fn histogram_quantiles_merge_buckets_by_le_and_the_group() {
    let keys = vec!["host.name".to_owned()];
    let q = PromSource::promql(
        &hist("inference_request_duration_seconds"),
        &plan(query::Stat::Quantile(0.95), &keys, None),
    );
    assert_eq!(
        q,
        "histogram_quantile(0.95, sum by (le, host_name) (increase(inference_request_duration_seconds_bucket{model_name=\"resnet\"}[59999ms])))"
    );
    let q = PromSource::promql(&hist("d"), &plan(query::Stat::Mean, &[], None));
    assert_eq!(
        q,
        "sum by () (increase(d_sum{model_name=\"resnet\"}[59999ms])) / sum by () (increase(d_count{model_name=\"resnet\"}[59999ms]))"
    );
}

#[test]
fn gauge_statistics_aggregate_over_time_then_across_series() {
    let keys = vec!["host.name".to_owned()];
    let q = PromSource::promql(
        &gauge("hw_gpu_utilization_ratio"),
        &plan(query::Stat::Max, &keys, None),
    );
    assert_eq!(
        q,
        "max by (host_name) (max_over_time(hw_gpu_utilization_ratio{model_name=\"resnet\"}[59999ms]))"
    );
    let q = PromSource::promql(&gauge("g"), &plan(query::Stat::Mean, &[], None));
    assert_eq!(
        q,
        "sum by () (sum_over_time(g{model_name=\"resnet\"}[59999ms])) / sum by () (count_over_time(g{model_name=\"resnet\"}[59999ms]))"
    );
    let q = PromSource::promql(&gauge("g"), &plan(query::Stat::Mean, &keys, Some(Across::Max)));
    assert_eq!(q, "max by (host_name) (avg_over_time(g{model_name=\"resnet\"}[59999ms]))");
}

#[test]
fn matchers_keep_their_operators_and_sanitise_keys() {
    let ms = vec![
        Matcher::Eq { key: "host.name".into(), value: "gpu-a".into() },
        Matcher::Ne { key: "model.name".into(), value: "x".into() },
        Matcher::Re {
            key: "k8s.pod.name".into(),
            regex: regex::Regex::new("^web-.*$").expect("re"),
        },
    ];
    assert_eq!(matchers(&ms), "host_name=\"gpu-a\", model_name!=\"x\", k8s_pod_name=~\"web-.*\"");
}

#[test]
fn answers_parse_with_their_special_values() {
    let data = json!({
        "resultType": "vector",
        "result": [
            {"metric": {"host_name": "a"}, "value": [1800000000.5, "0.25"]},
            {"metric": {}, "value": [1800000000.5, "+Inf"]},
        ]
    });
    let rows = parse_vector(&data).expect("vector");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0.get("host_name").map(String::as_str), Some("a"));
    assert_eq!(rows[0].1, 0.25);
    assert!(rows[1].1.is_infinite());
    let scalar = json!({"resultType": "scalar", "result": [1.0, "NaN"]});
    assert!(parse_vector(&scalar).expect("scalar")[0].1.is_nan());
    let err =
        parse_vector(&json!({"resultType": "string", "result": [1.0, "x"]})).expect_err("string");
    assert!(err.contains("string"), "{err}");
    let m = parse_matrix(&json!({"resultType": "matrix", "result": [
        {"metric": {"job": "r"}, "values": [[1800000000, "1"], [1800000010, "2"]]}
    ]}))
    .expect("matrix");
    assert_eq!(m[0].1, vec![(1_800_000_000_000_000_000, 1.0), (1_800_000_010_000_000_000, 2.0)]);
}
