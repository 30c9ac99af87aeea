//! Store and query tests: arithmetic of windows, counters, histograms, grouping, refusals,
//! persistence and recovery, retention and downsampling in virtual time, and property tests.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::query::{Across, Matcher, Query, Selector, Stat};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;

fn mem_store(clock: &ManualClock) -> Store {
    Store::in_memory(StoreConfig::default(), Arc::new(clock.clone()))
}

fn gauge(
    store: &Store,
    metric: &str,
    pairs: &[(&str, &str)],
    ts: u64,
    v: f64,
) -> Result<(), Refusal> {
    let mut w = store.writer();
    let r = w.append(metric, pairs, ts, PointValue::Gauge(v));
    w.finish();
    r
}

fn one(store: &Store, q: &Query, at: u64) -> Option<f64> {
    let r = store.instant(q, at).expect("query");
    assert!(r.len() <= 1, "{r:?}");
    r.first().map(|g| g.value)
}

#[test]
fn gauge_window_stats_and_grouping() {
    let clock = ManualClock::new(T0);
    let store = mem_store(&clock);
    for node in ["a", "b"] {
        for i in 0..10u64 {
            let v = if node == "a" { i as f64 } else { 100.0 + i as f64 };
            gauge(
                &store,
                "hw.gpu.utilization",
                &[("host.name", node), ("hw.id", "g0")],
                T0 + i * S,
                v,
            )
            .expect("append");
        }
    }
    let at = T0 + 9 * S;
    let sel = Selector::new("hw.gpu.utilization");
    let w = Duration::from_secs(5); // (4s, 9s]: open at the left
    assert_eq!(
        one(
            &store,
            &Query::new(sel.clone().with(Matcher::eq("host.name", "a")), Stat::Mean, w),
            at
        ),
        Some(7.0)
    );
    assert_eq!(one(&store, &Query::new(sel.clone(), Stat::Max, w), at), Some(109.0));
    assert_eq!(one(&store, &Query::new(sel.clone(), Stat::Min, w), at), Some(5.0));
    assert_eq!(one(&store, &Query::new(sel.clone(), Stat::Count, w), at), Some(10.0));
    // `last` sums the newest value of each series, as a policy reads it.
    assert_eq!(one(&store, &Query::new(sel.clone(), Stat::Last, w), at), Some(118.0));
    assert_eq!(
        one(&store, &Query::new(sel.clone(), Stat::Last, w).across(Across::Mean), at),
        Some((9.0 + 109.0) / 2.0)
    );
    // Exact quantile over all samples of the group: 5..9 and 105..109.
    assert_eq!(
        one(&store, &Query::new(sel.clone(), Stat::Quantile(0.5), w), at),
        Some((9.0 + 105.0) / 2.0)
    );
    let grouped = store
        .instant(&Query::new(sel.clone(), Stat::Mean, w).group_by(["host.name"]), at)
        .expect("query");
    assert_eq!(grouped.len(), 2);
    assert_eq!(grouped[0].group.get("host.name"), Some("a"));
    assert_eq!(grouped[0].value, 7.0);
    assert_eq!(grouped[1].value, 107.0);
    // Regex and not-equal.
    let re = sel.clone().with(Matcher::re("host.name", "b|c").expect("regex"));
    assert_eq!(one(&store, &Query::new(re, Stat::Mean, w), at), Some(107.0));
    let ne = sel.clone().with(Matcher::ne("host.name", "b"));
    assert_eq!(one(&store, &Query::new(ne, Stat::Mean, w), at), Some(7.0));
    // Empty window: no group.
    assert!(
        store.instant(&Query::new(sel.clone(), Stat::Mean, w), T0 + 100 * S).expect("q").is_empty()
    );
    // Range query for charts.
    let r = store
        .range(
            &Query::new(
                sel.with(Matcher::eq("host.name", "a")),
                Stat::Last,
                Duration::from_secs(1),
            ),
            T0,
            T0 + 9 * S,
            Duration::from_secs(3),
        )
        .expect("range");
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].points,
        vec![(T0, 0.0), (T0 + 3 * S, 3.0), (T0 + 6 * S, 6.0), (T0 + 9 * S, 9.0)]
    );
}

#[test]
fn counters_turn_cumulative_into_increments_across_resets() {
    let clock = ManualClock::new(T0);
    let store = mem_store(&clock);
    let pairs = [("outcome", "ok")];
    let start = T0 - 10 * S;
    let mut w = store.writer();
    // 10, 20, 30, reset (new start) 5, 15
    for (i, (st, v)) in
        [(start, 10.0), (start, 20.0), (start, 30.0), (T0 + 3 * S, 5.0), (T0 + 3 * S, 15.0)]
            .iter()
            .enumerate()
    {
        w.append(
            "inference.requests",
            &pairs,
            T0 + i as u64 * S,
            PointValue::CounterCumulative { start: *st, value: *v },
        )
        .expect("append");
    }
    w.finish();
    let sel = Selector::new("inference.requests");
    let at = T0 + 4 * S;
    // Whole history: 10 (since start) + 10 + 10 + 5 + 10 = 45
    assert_eq!(
        one(&store, &Query::new(sel.clone(), Stat::Increase, Duration::from_secs(60)), at),
        Some(45.0)
    );
    // Window (1s, 4s]: baseline total at 1s = 20, total at 4s = 45
    assert_eq!(
        one(&store, &Query::new(sel.clone(), Stat::Increase, Duration::from_secs(3)), at),
        Some(25.0)
    );
    // (2s, 4s]: 45 - 30 = 15 over 2 seconds.
    assert_eq!(
        one(&store, &Query::new(sel.clone(), Stat::Rate, Duration::from_secs(2)), at),
        Some(7.5)
    );
    // Delta counters add up.
    let mut w = store.writer();
    for i in 0..4u64 {
        w.append(
            "inference.prediction.class",
            &[("class", if i % 2 == 0 { "cat" } else { "dog" })],
            T0 + i * S,
            PointValue::CounterDelta(1.0 + i as f64),
        )
        .expect("append");
    }
    w.finish();
    let by = store
        .increase_by(&Selector::new("inference.prediction.class"), T0 - S, T0 + 10 * S, "class")
        .expect("by class");
    assert_eq!(by.get("cat"), Some(&4.0));
    assert_eq!(by.get("dog"), Some(&6.0));
    // Quantile of a counter is refused with a clear error.
    assert!(
        store.instant(&Query::new(sel, Stat::Quantile(0.5), Duration::from_secs(60)), at).is_err()
    );
}

#[test]
fn histogram_quantiles_merge_across_series_and_time() {
    let clock = ManualClock::new(T0);
    let store = mem_store(&clock);
    let bounds = vec![0.01, 0.05, 0.1, 0.5];
    let mut w = store.writer();
    for node in ["a", "b"] {
        let mut cum = vec![0u64; 5];
        for i in 0..5u64 {
            // each second: 8 fast (≤10ms), 2 slow (50-100ms) on a; b only fast
            cum[0] += 8;
            if node == "a" {
                cum[2] += 2;
            }
            let count: u64 = cum.iter().sum();
            let h = Histogram::explicit(bounds.clone(), cum.clone(), count as f64 * 0.02);
            w.append(
                "inference.request.duration",
                &[("host.name", node), ("service.name", "resnet")],
                T0 + i * S,
                PointValue::HistogramCumulative { start: T0 - S, hist: h },
            )
            .expect("append");
        }
    }
    w.finish();
    let sel =
        Selector::new("inference.request.duration").with(Matcher::eq("service.name", "resnet"));
    let at = T0 + 4 * S;
    let w10 = Duration::from_secs(10);
    // 80 fast + 10 slow in total → p95 lies in (0.05, 0.1]
    let p95 = one(&store, &Query::new(sel.clone(), Stat::Quantile(0.95), w10), at).expect("p95");
    assert!(p95 > 0.05 && p95 <= 0.1, "{p95}");
    let p50 = one(&store, &Query::new(sel.clone(), Stat::Quantile(0.5), w10), at).expect("p50");
    assert!(p50 <= 0.01, "{p50}");
    assert_eq!(one(&store, &Query::new(sel.clone(), Stat::Count, w10), at), Some(90.0));
    assert!(
        (one(&store, &Query::new(sel.clone(), Stat::Mean, w10), at).expect("mean") - 0.02).abs()
            < 1e-12
    );
    let hw = store.histogram_window(&sel, T0 - S, at, &["host.name".to_string()]).expect("window");
    assert_eq!(hw.len(), 2);
    assert_eq!(hw[0].1.count, 50);
    assert_eq!(hw[1].1.count, 40);
    // Window (2s, 4s] only sees the last two intervals: a: 2×10, b: 2×8.
    assert_eq!(one(&store, &Query::new(sel, Stat::Count, Duration::from_secs(2)), at), Some(36.0));
}

#[test]
fn refuses_out_of_order_duplicates_non_finite_and_over_cardinality() {
    let clock = ManualClock::new(T0);
    let store = Store::in_memory(
        StoreConfig { max_series: 2, ..StoreConfig::default() },
        Arc::new(clock.clone()),
    );
    gauge(&store, "m", &[("k", "1")], T0 + 5 * S, 1.0).expect("first");
    assert_eq!(gauge(&store, "m", &[("k", "1")], T0 + 5 * S, 2.0), Err(Refusal::Duplicate));
    assert_eq!(gauge(&store, "m", &[("k", "1")], T0 + 4 * S, 2.0), Err(Refusal::OutOfOrder));
    assert_eq!(gauge(&store, "m", &[("k", "1")], T0 + 6 * S, f64::NAN), Err(Refusal::NonFinite));
    assert_eq!(
        gauge(&store, "m", &[("k", "1")], T0 + 6 * S, f64::INFINITY),
        Err(Refusal::NonFinite)
    );
    gauge(&store, "m", &[("k", "2")], T0, 1.0).expect("second series");
    assert_eq!(gauge(&store, "m", &[("k", "3")], T0, 1.0), Err(Refusal::Cardinality));
    let mut w = store.writer();
    assert_eq!(
        w.append("m", &[("k", "1")], T0 + 7 * S, PointValue::CounterDelta(1.0)),
        Err(Refusal::KindConflict)
    );
    w.finish();
    assert_eq!(store.refusals.duplicate.load(Ordering::Relaxed), 1);
    assert_eq!(store.refusals.out_of_order.load(Ordering::Relaxed), 1);
    assert_eq!(store.refusals.non_finite.load(Ordering::Relaxed), 2);
    assert_eq!(store.refusals.cardinality.load(Ordering::Relaxed), 1);
    assert_eq!(store.refusals.kind_conflict.load(Ordering::Relaxed), 1);
    // What was stored is intact.
    let q = Query::new(
        Selector::new("m").with(Matcher::eq("k", "1")),
        Stat::Last,
        Duration::from_secs(60),
    );
    assert_eq!(one(&store, &q, T0 + 10 * S), Some(1.0));
}

fn disk_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        data_dir: Some(dir.to_path_buf()),
        memory_window: crate::duration::HumanDuration::from_secs(60),
        raw_retention: crate::duration::HumanDuration::from_secs(3600),
        ..StoreConfig::default()
    }
}

#[test]
fn survives_restart_from_log_and_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let h = Histogram::explicit(vec![1.0, 2.0], vec![1, 2, 3], 9.0);
    {
        let store = Store::open(disk_config(dir.path()), Arc::new(clock.clone())).expect("open");
        let mut w = store.writer();
        for i in 0..100u64 {
            w.append("g", &[("host.id", "n1")], T0 + i * S, PointValue::Gauge(i as f64))
                .expect("g");
            w.append(
                "c",
                &[("host.id", "n1")],
                T0 + i * S,
                PointValue::CounterCumulative { start: T0 - S, value: 2.0 * (i + 1) as f64 },
            )
            .expect("c");
            w.append("h", &[("host.id", "n1")], T0 + i * S, PointValue::HistogramDelta(h.clone()))
                .expect("h");
        }
        w.finish();
        clock.set(T0 + 100 * S);
        store.checkpoint().expect("checkpoint"); // 0..99 into blocks
        let mut w = store.writer();
        for i in 100..120u64 {
            w.append("g", &[("host.id", "n1")], T0 + i * S, PointValue::Gauge(i as f64))
                .expect("g");
            w.append(
                "c",
                &[("host.id", "n1")],
                T0 + i * S,
                PointValue::CounterCumulative { start: T0 - S, value: 2.0 * (i + 1) as f64 },
            )
            .expect("c");
        }
        w.finish();
        store.commit().expect("commit"); // 100..119 only in the log
        // The store is dropped without a checkpoint: a crash after the last commit.
    }
    clock.set(T0 + 2000 * S);
    let store = Store::open(disk_config(dir.path()), Arc::new(clock.clone())).expect("reopen");
    assert_eq!(store.series_count(), 3);
    let at = T0 + 119 * S;
    // (T0 - 1s, T0 + 119s]: every point.
    let all = Duration::from_secs(120);
    let g = Selector::new("g");
    assert_eq!(one(&store, &Query::new(g.clone(), Stat::Count, all), at), Some(120.0));
    assert_eq!(one(&store, &Query::new(g.clone(), Stat::Mean, all), at), Some(59.5));
    assert_eq!(one(&store, &Query::new(Selector::new("c"), Stat::Increase, all), at), Some(240.0));
    assert_eq!(one(&store, &Query::new(Selector::new("h"), Stat::Count, all), at), Some(600.0));
    // The cumulative baseline survived: the next reading adds only its increment.
    let mut w = store.writer();
    w.append(
        "c",
        &[("host.id", "n1")],
        T0 + 120 * S,
        PointValue::CounterCumulative { start: T0 - S, value: 242.0 },
    )
    .expect("c");
    w.finish();
    assert_eq!(
        one(
            &store,
            &Query::new(Selector::new("c"), Stat::Increase, Duration::from_secs(121)),
            T0 + 120 * S
        ),
        Some(242.0)
    );
    assert_eq!(store.nodes().len(), 1);
    assert_eq!(store.nodes()[0].last_seen.load(Ordering::Relaxed), T0 + 120 * S);
}

#[test]
fn downsamples_and_applies_retention_in_virtual_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let cfg = StoreConfig {
        data_dir: Some(dir.path().to_path_buf()),
        memory_window: crate::duration::HumanDuration::from_secs(60),
        raw_retention: crate::duration::HumanDuration::from_secs(1800),
        tiers: vec![
            TierConfig {
                resolution: crate::duration::HumanDuration::from_secs(10),
                retention: crate::duration::HumanDuration::from_secs(4 * 3600),
            },
            TierConfig {
                resolution: crate::duration::HumanDuration::from_secs(60),
                retention: crate::duration::HumanDuration::from_secs(48 * 3600),
            },
        ],
        ..StoreConfig::default()
    };
    let store = Store::open(cfg, Arc::new(clock.clone())).expect("open");
    let start = T0 / (3600 * S) * (3600 * S);
    // Three hours of 1 s data, value = minute of the hour, checkpoint every minute.
    for m in 0..180u64 {
        let mut w = store.writer();
        for s in 0..60u64 {
            let ts = start + (m * 60 + s) * S;
            w.append("g", &[("host.id", "n1")], ts, PointValue::Gauge((m % 60) as f64))
                .expect("append");
            w.append("c", &[("host.id", "n1")], ts, PointValue::CounterDelta(1.0)).expect("append");
        }
        w.finish();
        clock.set(start + (m + 1) * 60 * S);
        store.checkpoint().expect("checkpoint");
    }
    let now = clock.now();
    assert!(
        store.memory_points() <= 2 * 61,
        "memory holds only the last minute: {}",
        store.memory_points()
    );
    let g = Selector::new("g");
    // Recent: raw from disk + memory: last 10 minutes, minutes 50..59 of hour 3.
    let mean10 = one(&store, &Query::new(g.clone(), Stat::Mean, Duration::from_secs(600)), now - S)
        .expect("mean");
    assert!((mean10 - 54.5).abs() < 0.2, "{mean10}");
    // Older than raw retention (1800 s): served by the 10 s tier, still exact for the mean.
    let at = start + 3600 * S; // hour 1, window 30 minutes: minutes 30..59 (+ the boundary point)
    let mean = one(&store, &Query::new(g.clone(), Stat::Mean, Duration::from_secs(1799)), at - S)
        .expect("tier mean");
    assert!((mean - 44.5).abs() < 0.5, "{mean}");
    assert_eq!(
        one(&store, &Query::new(g.clone(), Stat::Max, Duration::from_secs(3599)), at - S),
        Some(59.0)
    );
    // Counter increase over a downsampled hour is exact.
    let inc = one(
        &store,
        &Query::new(Selector::new("c"), Stat::Increase, Duration::from_secs(3600)),
        start + 3600 * S - S,
    )
    .expect("inc");
    assert!((inc - 3600.0).abs() <= 1.0, "{inc}");
    // Raw blocks older than raw retention are gone.
    let disk = store.disk.as_ref().expect("disk");
    let id = store.matching(&g)[0].id;
    assert!(disk.read(0, id, start, start + 3600 * S).expect("read").is_empty());
    assert!(!disk.read(1, id, start, start + 3600 * S).expect("read").is_empty());
    // Advance five hours: the 10 s tier of hour 0 ages out, the 1 min tier keeps it.
    clock.set(now + 5 * 3600 * S);
    store.checkpoint().expect("checkpoint");
    assert!(disk.read(1, id, start, start + 3599 * S).expect("read").is_empty());
    let one_min = disk.read(2, id, start, start + 3599 * S).expect("read");
    assert_eq!(one_min.len(), 60, "one aggregate per minute");
    assert!(store.disk_stats().retention_deleted_bytes.load(Ordering::Relaxed) > 0);
}

#[test]
fn byte_budget_shortens_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(T0);
    let cfg = StoreConfig { max_bytes: 20_000, ..disk_config(dir.path()) };
    let store = Store::open(cfg, Arc::new(clock.clone())).expect("open");
    for m in 0..30u64 {
        let mut w = store.writer();
        for s in 0..60u64 {
            for k in 0..5 {
                let key = format!("{k}");
                w.append(
                    "g",
                    &[("k", key.as_str())],
                    T0 + (m * 60 + s) * S,
                    PointValue::Gauge(((m * 60 + s) * 7919 % 1000) as f64 * 1.37),
                )
                .expect("append");
            }
        }
        w.finish();
        clock.set(T0 + (m + 1) * 60 * S);
        store.checkpoint().expect("checkpoint");
    }
    assert!(
        store.disk_stats().block_bytes.load(Ordering::Relaxed) <= 20_000 + 30_000,
        "{}",
        store.disk_bytes()
    );
    assert!(store.disk_stats().retention_deleted_bytes.load(Ordering::Relaxed) > 0);
}

/// Reference: a plain list of (ts, value) points.
fn model_mean(points: &[(u64, f64)], a: u64, b: u64) -> Option<f64> {
    let v: Vec<f64> = points.iter().filter(|p| p.0 >= a && p.0 <= b).map(|p| p.1).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn window_stats_match_a_model(gaps in prop::collection::vec(1u64..5_000_000_000, 1..60), vals in prop::collection::vec(-1e6f64..1e6, 60), at_off in 0u64..300_000_000_000, win in 1u64..200_000_000_000) {
        let clock = ManualClock::new(T0);
        let store = mem_store(&clock);
        let mut ts = T0;
        let mut pts = Vec::new();
        let mut w = store.writer();
        for (i, g) in gaps.iter().enumerate() {
            ts += g;
            pts.push((ts, vals[i]));
            w.append("m", &[], ts, PointValue::Gauge(vals[i])).expect("append");
            w.append("c", &[], ts, PointValue::CounterDelta(vals[i].abs())).expect("append");
        }
        w.finish();
        let at = T0 + at_off;
        // The window is (at - win, at]: its first nanosecond.
        let a = at.saturating_sub(win) + 1;
        let got = one(&store, &Query::new(Selector::new("m"), Stat::Mean, Duration::from_nanos(win)), at);
        let want = model_mean(&pts, a, at);
        match (got, want) {
            (Some(g), Some(w)) => prop_assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{g} vs {w}"),
            (g, w) => prop_assert_eq!(g, w),
        }
        let inc = one(&store, &Query::new(Selector::new("c"), Stat::Increase, Duration::from_nanos(win)), at);
        let want_inc: f64 = pts.iter().filter(|p| p.0 >= a && p.0 <= at).map(|p| p.1.abs()).sum();
        if let Some(inc) = inc {
            prop_assert!((inc - want_inc).abs() <= 1e-6 * want_inc.max(1.0), "{inc} vs {want_inc}");
        } else {
            prop_assert_eq!(want_inc, 0.0);
        }
    }

    #[test]
    fn histogram_quantile_is_within_the_true_bucket(samples in prop::collection::vec(0.0f64..10.0, 1..400), q in 0.0f64..=1.0) {
        let bounds = vec![0.5, 1.0, 2.0, 4.0, 8.0];
        let mut counts = vec![0u64; 6];
        for s in &samples {
            counts[bounds.partition_point(|b| b < s)] += 1;
        }
        let h = Histogram::explicit(bounds.clone(), counts, samples.iter().sum());
        let est = h.quantile(q).expect("non-empty");
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        // The true q-quantile by rank ceil(q*n) (nearest rank), and its bucket.
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        let truth = sorted[rank - 1];
        let (lo, hi) = h.quantile_bucket(q).expect("bucket");
        let lo_b = if lo.is_finite() { lo } else { 0.0 };
        let hi_b = if hi.is_finite() { hi } else { 10.0 };
        prop_assert!(est >= lo_b - 1e-9 && est <= hi_b + 1e-9, "estimate {est} outside bucket ({lo}, {hi}]");
        prop_assert!(truth >= lo_b - 1e-9 && truth <= hi_b + 1e-9 || rank == 1, "truth {truth} outside bucket ({lo}, {hi}]");
    }
}

/// Windows answered with the 10 s rollups merge exactly what point-by-point merging gives,
/// across changing bucket layouts and after eviction cut into a rollup's interval.
#[test]
fn histogram_rollups_match_point_by_point_merges() {
    let clock = ManualClock::new(T0);
    let cfg = StoreConfig {
        raw_retention: crate::duration::HumanDuration::from_secs(200),
        ..StoreConfig::default()
    };
    let store = Store::in_memory(cfg, Arc::new(clock.clone()));
    let mut pts: Vec<(u64, Histogram)> = Vec::new();
    for i in 0..120u64 {
        let ts = T0 + i * 3 * S + (i % 7) * 100_000_000;
        let bounds = if (40..50).contains(&i) { vec![0.1, 0.5, 2.0] } else { vec![0.1, 1.0] };
        let n = bounds.len() + 1;
        let counts: Vec<u64> = (0..n as u64).map(|b| (i * 7 + b * 3) % 5).collect();
        let h = Histogram::explicit(bounds, counts, i as f64 * 0.25);
        let mut w = store.writer();
        w.append("lat", &[("host.name", "a")], ts, PointValue::HistogramDelta(h.clone()))
            .expect("append");
        w.finish();
        pts.push((ts, h));
    }
    let sel = Selector::new("lat");
    let check = |pts: &[(u64, Histogram)]| {
        for (a, b) in [(0, 400), (5, 95), (29, 31), (100, 200), (0, 10), (31, 359), (150, 151)] {
            let (a, b) = (T0 + a * S, T0 + b * S);
            let mut want: Option<Histogram> = None;
            // (a, b]: open at the left, as every window.
            for (_, h) in pts.iter().filter(|(t, _)| *t > a && *t <= b) {
                match &mut want {
                    Some(m) => m.merge(h),
                    None => want = Some(h.clone()),
                }
            }
            let got = store
                .histogram_window(&sel, a, b, &[])
                .expect("window")
                .into_iter()
                .next()
                .map(|(_, h)| h);
            match (&got, &want) {
                (Some(g), Some(w)) => {
                    assert_eq!(
                        (g.count, &g.buckets, g.min, g.max),
                        (w.count, &w.buckets, w.min, w.max),
                        "{a}..{b}"
                    );
                    assert!((g.sum - w.sum).abs() < 1e-9, "{a}..{b}");
                }
                _ => assert_eq!(got, want, "{a}..{b}"),
            }
        }
    };
    check(&pts);
    // Evict: raw retention 200 s at T0 + 305.5 s drops points before T0 + 105.5 s, inside a
    // 10 s interval.
    clock.set(T0 + 305 * S + S / 2);
    store.checkpoint().expect("evict");
    let kept: Vec<(u64, Histogram)> =
        pts.iter().filter(|(t, _)| *t >= T0 + 105 * S + S / 2).cloned().collect();
    assert!(kept.len() < pts.len());
    check(&kept);
}
