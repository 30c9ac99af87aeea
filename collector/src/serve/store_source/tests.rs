//! Each statistic of [`StoreSource`] over a real store fed through its append API, with the
//! engine's window `(now - window, now]`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::policy::signal::{Stat, grid};
use crate::store::{Histogram as StoreHist, PointValue, StoreConfig};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;

fn source() -> (StoreSource, Arc<Store>) {
    let store = Arc::new(Store::in_memory(StoreConfig::default(), Arc::new(ManualClock::new(T0))));
    (StoreSource::new(store.clone()), store)
}

fn append(store: &Store, metric: &str, pairs: &[(&str, &str)], ts: u64, v: PointValue) {
    let mut pairs = pairs.to_vec();
    crate::store::sort_pairs(&mut pairs);
    let mut w = store.writer();
    w.append(metric, &pairs, ts, v).expect("append");
    w.finish();
}

fn sel(metric: &str, pairs: &[(&str, &str)]) -> Selector {
    Selector {
        metric: metric.into(),
        matchers: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn q(metric: &str, pairs: &[(&str, &str)], stat: Stat, secs: u64) -> SignalQuery {
    SignalQuery { selector: sel(metric, pairs), stat, window: Duration::from_secs(secs) }
}

fn close(a: Option<f64>, b: f64) {
    let a = a.expect("a value");
    assert!((a - b).abs() < 1e-6 * b.abs().max(1.0), "{a} != {b}");
}

#[test]
fn gauge_statistics_over_the_half_open_window() {
    let (src, store) = source();
    // Two replicas, one sample a second: a = 0..9, b = 100..109.
    for (host, base) in [("a", 0.0), ("b", 100.0)] {
        for i in 0..10u64 {
            append(
                &store,
                "queue.depth",
                &[("host.name", host), ("svc", "x")],
                T0 + i * S,
                PointValue::Gauge(base + i as f64),
            );
        }
    }
    let now = T0 + 9 * S;
    // (now - 4s, now] holds seconds 6..9: the sample at exactly now - 4s is left out.
    let m = "queue.depth";
    close(src.read(&q(m, &[("host.name", "a")], Stat::Mean, 4), now).expect("read"), 7.5);
    close(src.read(&q(m, &[], Stat::Min, 4), now).expect("read"), 6.0);
    close(src.read(&q(m, &[], Stat::Max, 4), now).expect("read"), 109.0);
    close(
        src.read(&q(m, &[("host.name", "a")], Stat::Sum, 4), now).expect("read"),
        6.0 + 7.0 + 8.0 + 9.0,
    );
    close(src.read(&q(m, &[], Stat::Count, 4), now).expect("read"), 8.0);
    // `last` sums the newest value of each series.
    close(src.read(&q(m, &[], Stat::Last, 4), now).expect("read"), 9.0 + 109.0);
    // Exact quantile over all samples: 6..9 and 106..109.
    close(src.read(&q(m, &[], Stat::Quantile(0.5), 4), now).expect("read"), (9.0 + 106.0) / 2.0);
    close(
        src.read(&q(m, &[("host.name", "b")], Stat::Quantile(1.0 - 1e-9), 4), now).expect("read"),
        109.0,
    );
    // Matchers narrow; no data is `None` for every statistic (the engine reads a `count`
    // without data as 0, whatever the source).
    assert_eq!(src.read(&q(m, &[("svc", "y")], Stat::Mean, 4), now).expect("read"), None);
    assert_eq!(src.read(&q(m, &[("svc", "y")], Stat::Count, 4), now).expect("read"), None);
    assert_eq!(src.read(&q(m, &[], Stat::Mean, 4), T0 + 60 * S).expect("read"), None);
}

#[test]
fn counter_rate_and_increase_sum_across_series() {
    let (src, store) = source();
    // Two cumulative counters: +10/s and +30/s.
    for (host, per_s) in [("a", 10.0), ("b", 30.0)] {
        for i in 0..=20u64 {
            append(
                &store,
                "requests",
                &[("host.name", host)],
                T0 + i * S,
                PointValue::CounterCumulative { start: T0 - S, value: per_s * i as f64 },
            );
        }
    }
    let now = T0 + 20 * S;
    close(src.read(&q("requests", &[], Stat::Increase, 10), now).expect("read"), 400.0);
    close(src.read(&q("requests", &[], Stat::Rate, 10), now).expect("read"), 40.0);
    close(src.read(&q("requests", &[("host.name", "b")], Stat::Rate, 5), now).expect("read"), 30.0);
}

#[test]
fn histograms_merge_across_series() {
    let (src, store) = source();
    let bounds: Arc<[f64]> = vec![0.1, 0.5, 1.0].into();
    // Per second and replica: a has 8 fast and 2 slow requests, b 10 in the middle bucket.
    for i in 1..=10u64 {
        append(
            &store,
            "latency",
            &[("host.name", "a")],
            T0 + i * S,
            PointValue::HistogramDelta(StoreHist::explicit(
                bounds.clone(),
                vec![8, 0, 2, 0],
                8.0 * 0.05 + 2.0 * 0.8,
            )),
        );
        append(
            &store,
            "latency",
            &[("host.name", "b")],
            T0 + i * S,
            PointValue::HistogramDelta(StoreHist::explicit(
                bounds.clone(),
                vec![0, 10, 0, 0],
                10.0 * 0.3,
            )),
        );
    }
    let now = T0 + 10 * S;
    // Last 5 seconds: 40 fast, 50 middle, 10 slow.
    let h = src.histogram(&sel("latency", &[]), now - 5 * S, now).expect("read").expect("data");
    assert_eq!(h.bounds, vec![0.1, 0.5, 1.0]);
    assert_eq!(h.counts, vec![40.0, 50.0, 10.0, 0.0]);
    close(src.read(&q("latency", &[], Stat::Count, 5), now).expect("read"), 100.0);
    close(
        src.read(&q("latency", &[], Stat::Mean, 5), now).expect("read"),
        (5.0 * (0.4 + 1.6) + 5.0 * 3.0) / 100.0,
    );
    // p95 falls in the (0.5, 1.0] bucket, p30 in the first.
    let p95 =
        src.read(&q("latency", &[], Stat::Quantile(0.95), 5), now).expect("read").expect("p95");
    assert!(p95 > 0.5 && p95 <= 1.0, "{p95}");
    let p30 =
        src.read(&q("latency", &[], Stat::Quantile(0.30), 5), now).expect("read").expect("p30");
    assert!(p30 <= 0.1, "{p30}");
    assert_eq!(
        src.histogram(&sel("latency", &[("host.name", "c")]), now - 5 * S, now).expect("read"),
        None
    );
}

#[test]
fn counts_by_attribute_and_latest_version() {
    let (src, store) = source();
    for i in 0..=10u64 {
        for (class, per_s) in [("cat", 2.0), ("dog", 5.0)] {
            append(
                &store,
                "predictions",
                &[("class", class), ("model.version", "v1")],
                T0 + i * S,
                PointValue::CounterCumulative { start: T0 - S, value: per_s * i as f64 },
            );
        }
    }
    // v2 appears at T0 + 6s, v3 (of another model) a nanosecond later.
    for i in 6..=10u64 {
        append(
            &store,
            "predictions",
            &[("class", "cat"), ("model.version", "v2")],
            T0 + i * S,
            PointValue::CounterCumulative { start: T0 + 5 * S, value: i as f64 },
        );
        append(
            &store,
            "predictions",
            &[("class", "cat"), ("model.version", "v3"), ("model.name", "other")],
            T0 + i * S + 1,
            PointValue::CounterCumulative { start: T0 + 5 * S, value: i as f64 },
        );
    }
    let now = T0 + 10 * S;
    let by = src
        .counts_by(&sel("predictions", &[("model.version", "v1")]), "class", now - 4 * S, now)
        .expect("read");
    assert_eq!(by, BTreeMap::from([("cat".to_string(), 8.0), ("dog".to_string(), 20.0)]));
    let v = src
        .latest_version(&sel("predictions", &[("class", "cat")]), now)
        .expect("read")
        .expect("a version");
    assert_eq!(v.version, "v3");
    assert_eq!(v.first_seen, T0 + 6 * S + 1);
    // Before v2 appeared, v1 is the newest; a version matcher in the selector is ignored.
    let v = src
        .latest_version(&sel("predictions", &[("model.version", "v1"), ("class", "dog")]), now)
        .expect("read")
        .expect("a version");
    assert_eq!((v.version.as_str(), v.first_seen), ("v1", T0));
    let v =
        src.latest_version(&sel("predictions", &[]), T0 + 5 * S).expect("read").expect("a version");
    assert_eq!(v.version, "v1");
    assert_eq!(src.latest_version(&sel("absent", &[]), now).expect("read"), None);
}

#[test]
fn range_matches_point_reads() {
    let (src, store) = source();
    for i in 0..120u64 {
        append(&store, "load", &[("svc", "x")], T0 + i * S, PointValue::Gauge((i % 17) as f64));
    }
    let query = q("load", &[], Stat::Mean, 10);
    let from = T0 + 3 * S + 1;
    let to = T0 + 200 * S;
    let step = Duration::from_secs(5);
    let fast = src.range(&query, from, to, step).expect("range");
    let slow: Vec<(u64, f64)> = grid(from, to, step)
        .filter_map(|t| src.read(&query, t).expect("read").map(|v| (t, v)))
        .collect();
    assert_eq!(fast.len(), slow.len());
    assert!(!fast.is_empty());
    for ((ta, a), (tb, b)) in fast.iter().zip(&slow) {
        assert_eq!(ta, tb);
        assert!((a - b).abs() < 1e-9, "{a} != {b} at {ta}");
    }
    // `count` leaves out the points without data, as point reads answer `None` there.
    let counts = src.range(&q("load", &[], Stat::Count, 10), from, to, step).expect("range");
    let with_data = grid(from, to, step).filter(|t| *t < T0 + 130 * S).count();
    assert_eq!(counts.len(), with_data);
    assert!(counts.iter().all(|p| p.1 > 0.0));
}
