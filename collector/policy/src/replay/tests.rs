use std::path::Path;

use super::*;
use crate::format::ScaleSpec;
use crate::signal::{Histogram, NANOS};

fn trace(load: &[f64], step: u64) -> Trace {
    Trace {
        start: 1000 * NANOS,
        step: Duration::from_secs(step),
        load: load.to_vec(),
        recorded: Vec::new(),
    }
}

#[test]
fn parses_csv_traces_with_recorded_series() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("t.csv");
    std::fs::write(&f, "# test\ntime,offered_load,\"inference.prediction.confidence{model.version=\"\"v1\"\"}\"\n0,10,0.9\n5,20,\n10,30,0.8\n").expect("write");
    let t = load_trace(&f).expect("trace");
    assert_eq!(t.step, Duration::from_secs(5));
    assert_eq!(t.load, vec![10.0, 20.0, 30.0]);
    assert_eq!(t.recorded[0].1.get("model.version").map(String::as_str), Some("v1"));
    assert!(t.recorded[0].2[1].is_nan());
    std::fs::write(&f, "time,load\n0,1\n1,2\n").expect("write");
    assert!(load_trace(&f).expect_err("no load").to_string().contains("offered_load"));
}

#[test]
fn service_latency_grows_with_load_and_backlog() {
    let cap = Capacity { throughput: 100.0, service_time: 0.02, warmup: 30.0 };
    let mut svc = Service::new(cap, 2);
    let light = svc.step(50.0, 0.0, 1.0);
    assert!((light[2] - 0.25).abs() < 1e-9, "util {}", light[2]);
    let heavy = svc.step(300.0, 1.0, 1.0);
    assert!(heavy[0] > 0.5, "backlog of 100 requests on 200 req/s: {}", heavy[0]);
    svc.resize(4, 2.0);
    assert_eq!(svc.ready(10.0), 2, "new replicas warm up");
    assert_eq!(svc.ready(32.0), 4);
}

/// Hand-computed HPA on a small trace: one metric `hw.gpu.utilization` mean over 15 s
/// with target value 0.5, 2 replicas of 100 req/s without warm-up, step 15 s (one sync
/// a step), metrics lag 15 s (each sync sees the previous step's utilisation).
///
/// loads: 100, 300, 300, 300, then 100.
/// t=0:   no data yet → keep 2.
/// t=15:  util(0) = 100/200 = 0.5 → ratio 1.0 → 2.
/// t=30:  util(15) = 1.0 (300 on 200 capacity) → 4 (limit max(2·2, 2+4) = 6).
/// t=45:  util(30) = 1.0, still 2 ready then → ceil(4·2) = 8; the +2 at t=30 is outside
///        (30, 45] → start 4 → limit 8 → 8.
/// t=60:  util(45) = 1.0 (4 ready, backlog) → 16; the +4 of t=45 is not after the cutoff
///        t − 15 s (HPA counts events strictly after it) → start 8 → limit 16 → 16.
/// t=75:  util(60) = (1500 + 1500 backlog)/(8·100·15) = 0.25 → ceil(16·0.5) = 8; the 16
///        of t=60 is in the 300 s down window → 16.
/// t=90…: util 100/1600 → 2, held by the window.
/// t=360: the 16 of t=60 left (t − 300, t]; the max is the 8 of t=75 → 8.
/// t=375: → 2.
#[test]
fn hpa_matches_hand_computation() {
    let scale: ScaleSpec = serde_json::from_value(serde_json::json!({
        "metrics": [{"name": "gpu", "signal": {"metric": "hw.gpu.utilization", "stat": "mean", "window": "15s"}, "target": {"value": 0.5}}]
    }))
    .expect("scale");
    let mut load = vec![100.0, 300.0, 300.0, 300.0];
    load.extend(std::iter::repeat_n(100.0, 30));
    let tr = trace(&load, 15);
    let cap = Capacity { throughput: 100.0, service_time: 0.01, warmup: 0.0 };
    let mut hpa = Hpa::new(&scale, 1, 20);
    let mut sizes = Vec::new();
    let run = simulate("hpa", &tr, cap, 2, None, 0, HPA_SYNC, |now, src, size, _| {
        let to = hpa.sync(src, size, now);
        sizes.push(to);
        (Some(to), 0)
    });
    assert_eq!(&sizes[..6], &[2, 2, 4, 8, 16, 16]);
    assert!(sizes[6..24].iter().all(|s| *s == 16), "{sizes:?}");
    assert_eq!((sizes[24], sizes[25]), (8, 2), "{sizes:?}");
    assert_eq!(run.report.scale_ups, 3);
    assert_eq!(run.report.scale_downs, 2);
}

/// Guards the histogram prefix cache: every window, over recorded series with gaps and
/// over a simulated series that grows while it is read, gives what a pass over the values
/// gives (the implementation before the cache).
#[test]
fn cached_histograms_match_a_pass_over_the_window() {
    let n = 50;
    let mut recorded = Vec::new();
    for (k, version) in ["v1", "v1", "v2"].iter().enumerate() {
        let mut attrs = BTreeMap::new();
        attrs.insert("model.version".to_owned(), (*version).to_owned());
        attrs.insert("host.name".to_owned(), format!("h{k}"));
        let values =
            (0..n)
                .map(|i| {
                    if (i + k) % 7 == 0 { f64::NAN } else { ((i * 13 + k * 5) % 23) as f64 / 20.0 }
                })
                .collect();
        recorded.push(("inference.prediction.confidence".to_owned(), attrs, values));
    }
    let tr =
        Trace { start: 1000 * NANOS, step: Duration::from_secs(10), load: vec![1.0; n], recorded };
    let mut src = SimSource::new(&tr);
    let by_pass = |src: &SimSource, sel: &Selector, from: u64, to: u64| {
        let (lo, hi) = src.range(from, to);
        let bounds = crate::series::DEFAULT_BUCKETS.to_vec();
        let mut counts = vec![0.0; bounds.len() + 1];
        let mut any = false;
        for c in src.matching(sel) {
            for v in c.values[lo..hi.max(lo)].iter().filter(|v| v.is_finite()) {
                counts[bounds.iter().position(|b| v <= b).unwrap_or(bounds.len())] += 1.0;
                any = true;
            }
        }
        any.then_some(Histogram { bounds, counts })
    };
    let all =
        Selector { metric: "inference.prediction.confidence".into(), matchers: BTreeMap::new() };
    let mut v1 = all.clone();
    v1.matchers.insert("model.version".into(), "v1".into());
    let util = Selector { metric: "hw.gpu.utilization".into(), matchers: BTreeMap::new() };
    let mut checked = 0;
    for i in 0..n {
        src.record([0.1, 0.0, (i % 11) as f64 / 10.0, 0.0, 1.0, 1.0]);
        let now = tr.start + i as u64 * 10 * NANOS;
        for sel in [&all, &v1, &util] {
            for (from, to) in [
                (now.saturating_sub(60 * NANOS), now),
                (tr.start - 1, tr.start + 100 * NANOS),
                (0, now),
                (now, now),
            ] {
                let cached = src.histogram(sel, from, to).expect("histogram");
                assert_eq!(
                    cached,
                    by_pass(&src, sel, from, to),
                    "{sel} ({from}, {to}] at step {i}"
                );
                checked += usize::from(cached.is_some());
            }
        }
    }
    assert!(checked > 300, "most windows hold data: {checked}");
}

/// Guards the per-policy interval: a 60 s retraining policy beside a 5 s scaling policy is
/// evaluated every 60 s of a 10 s trace, as the live runtime would, not at every step.
#[test]
fn each_policy_is_evaluated_at_its_own_interval() {
    let check = |name: &str, text: &str| {
        let (p, _, diags) = crate::check::check_text(Path::new(name), text);
        p.unwrap_or_else(|| panic!("{name}: {diags:?}"))
    };
    let target = "target: {name: svc, min: 1, max: 4, actuator: command, command: {argv: [echo]}, capacity: {perReplicaThroughput: 100, serviceTime: 10ms, warmup: 0s}}";
    let scaling = check(
        "s.yaml",
        &format!(
            "apiVersion: stoker/v1\nkind: Policy\nmetadata: {{name: s}}\nspec:\n  {target}\n  interval: 5s\n  scale:\n    metrics:\n      - name: gpu\n        signal: {{metric: hw.gpu.utilization, stat: mean, window: 30s}}\n        target: {{value: 0.6}}\n"
        ),
    );
    let retrain = check(
        "r.yaml",
        &format!(
            "apiVersion: stoker/v1\nkind: Policy\nmetadata: {{name: r}}\nspec:\n  {target}\n  interval: 60s\n  retrain:\n    - name: low\n      when: {{accuracy: {{estimate: mean-confidence, window: 1h, minSamples: 1, lt: 0.85}}}}\n      cooldown: 1s\n      job: {{actuator: command, command: {{argv: [retrain]}}}}\n"
        ),
    );
    let mut tr = trace(&[50.0; 60], 10);
    tr.recorded.push((
        "inference.prediction.confidence".to_owned(),
        BTreeMap::new(),
        vec![0.5; 60],
    ));
    let r = replay("t", &[scaling, retrain], &tr, None, &ReplayOptions::default()).expect("replay");
    // 600 s of trace: evaluations at 0, 60, …, 540 s, each starting a job (cooldown 1 s).
    assert_eq!(r.contenders[0].retrain_jobs, 10, "{:?}", r.contenders[0]);
}

/// Hand-computed oracle sizes: 50 req/s per replica, 20 ms, objective 150 ms holds
/// ρ ≤ x/(1+x) with x = 0.13 · 50 / ln 20 = 2.1697, ρ ≤ 0.6845: 1,000 req/s needs
/// 1000 / (50 · 0.6845) = 29.2 → 30 replicas (29 would give p95 0.1529 s).
#[test]
fn oracle_size_is_the_fewest_replicas_holding_the_objective() {
    let cap = Capacity { throughput: 50.0, service_time: 0.02, warmup: 120.0 };
    assert_eq!(oracle_size(&cap, 1000.0, 0.150, 1, 100), 30);
    assert_eq!(oracle_size(&cap, 1000.0, 0.150, 1, 20), 20, "max kept");
    assert_eq!(oracle_size(&cap, 0.0, 0.150, 0, 100), 1, "one replica at least");
    assert_eq!(oracle_size(&cap, 10.0, 0.150, 5, 100), 5, "min kept");
    assert_eq!(oracle_size(&cap, 10.0, 0.010, 1, 100), 100, "objective below service time");
}

/// The oracle through the simulation: no SLO minute within the bounds, a size change at
/// every load change, and every contender's replica-hours reported against it.
#[test]
fn oracle_never_violates_and_contenders_report_their_ratio() {
    let check = |text: &str| {
        let (p, _, diags) = crate::check::check_text(Path::new("s.yaml"), text);
        p.unwrap_or_else(|| panic!("{diags:?}"))
    };
    let policy = check(
        "apiVersion: stoker/v1\nkind: Policy\nmetadata: {name: s}\nspec:\n  target: {name: svc, min: 1, max: 40, actuator: command, command: {argv: [echo]}, capacity: {perReplicaThroughput: 50, serviceTime: 20ms, warmup: 60s}}\n  interval: 5s\n  slo: {signal: {metric: inference.request.duration, stat: p95, window: 30s}, objective: 0.150}\n  scale:\n    metrics:\n      - name: gpu\n        signal: {metric: hw.gpu.utilization, stat: mean, window: 30s}\n        target: {value: 0.6}\n",
    );
    let mut load = vec![200.0; 120];
    load.extend(vec![900.0; 120]);
    load.extend(vec![300.0; 120]);
    let tr = trace(&load, 5);
    let r = replay("t", &[policy], &tr, Some(&Baseline::Hpa), &ReplayOptions::default())
        .expect("replay");
    let o = r.oracle.as_ref().expect("oracle with an SLO");
    assert_eq!(o.slo_violation_minutes, Some(0.0), "{o:?}");
    // 200 → 6, 900 → 27, 300 → 9 replicas; 10 min at each: (6 + 27 + 9) / 6 h.
    assert!((o.replica_hours - 42.0 / 6.0).abs() < 0.1, "{o:?}");
    assert_eq!((o.scale_ups, o.scale_downs), (1, 1), "{o:?}");
    for c in &r.contenders {
        let ratio = c.oracle_ratio.expect("ratio");
        assert!((ratio - c.replica_hours / o.replica_hours).abs() < 1e-9);
        assert!(c.actions_per_day > 0.0, "{c:?}");
    }
    // The timeline: a header and one row per step; the oracle's replicas are its sizes above,
    // and a contender's replica-steps add up to its replica-hours.
    let csv = r.timeline_csv(&tr);
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows[0],
        [
            "time_s",
            "scored",
            "offered_load",
            "policies_replicas",
            "policies_ready",
            "policies_p95",
            "hpa_replicas",
            "hpa_ready",
            "hpa_p95",
            "oracle_replicas",
            "oracle_ready",
            "oracle_p95"
        ]
    );
    assert_eq!(rows.len(), 1 + load.len());
    assert_eq!((rows[1][0], rows[1][2]), ("0", "200"));
    let oracle_at = |i: usize| rows[1 + i][9].parse::<u32>().expect("replicas");
    assert_eq!((oracle_at(60), oracle_at(180), oracle_at(300)), (6, 27, 9));
    let steps: f64 = rows[1..].iter().map(|r| r[3].parse::<f64>().expect("replicas")).sum();
    assert!((steps * 5.0 / 3600.0 - r.contenders[0].replica_hours).abs() < 1e-6);
}

#[test]
fn kpa_panics_on_a_burst_and_never_scales_down_while_panicking() {
    let mut load = vec![100.0; 40];
    load.extend(vec![1000.0; 5]);
    load.extend(vec![100.0; 60]);
    let tr = trace(&load, 2);
    let cap = Capacity { throughput: 100.0, service_time: 0.01, warmup: 0.0 };
    let mut kpa = Kpa::new(70.0, 1, 100);
    let mut sizes = Vec::new();
    simulate("kpa", &tr, cap, 2, None, 0, KPA_TICK, |now, src, size, _| {
        let to = kpa.tick(src, size, now);
        sizes.push(to);
        (Some(to), 0)
    });
    assert_eq!(sizes[30], 2, "stable: ceil(100/70) = 2");
    let peak = *sizes.iter().max().expect("sizes");
    assert!(peak >= 10, "panic scale-up to the 6 s window's demand: {sizes:?}");
    let peak_at = sizes.iter().position(|s| *s == peak).expect("peak");
    // Panic lasts 60 s (30 ticks) after the last over-threshold tick.
    assert!(sizes[peak_at..peak_at + 25].iter().all(|s| *s == peak), "{sizes:?}");
    assert_eq!(*sizes.last().expect("last"), 2);
}
