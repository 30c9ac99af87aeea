//! Engine tests in virtual time: one or more per constraint, each checking the recorded effect.

use std::path::Path;
use std::time::Duration;

use super::check::{Policy, check_text};
use super::engine::{Action, Constraint, Decision, PolicyState, evaluate};
use super::series::{SeriesSource, series_from_notation};
use super::signal::NANOS;

const T0: u64 = 1_735_689_600 * NANOS;

fn policy(scale: &str) -> Policy {
    let text = format!(
        "apiVersion: stoker/v1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n  target: {{name: svc, min: 1, max: 20, actuator: command, command: {{argv: [echo]}}}}\n{scale}"
    );
    let (p, _, diags) = check_text(Path::new("p.yaml"), &text);
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.severity == super::check::Severity::Error)
        .map(|d| d.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{text}");
    p.expect("policy")
}

fn source(series: &[(&str, &str)]) -> SeriesSource {
    SeriesSource::new(
        series
            .iter()
            .map(|(n, v)| series_from_notation(n, v, T0, Duration::from_secs(1)).expect("series"))
            .collect(),
    )
}

/// Runs the engine every second from 0 to `until` seconds, applying resizes; returns the
/// decisions of each tick and the final size.
fn run(p: &Policy, src: &SeriesSource, size: u32, until: u64) -> (Vec<Vec<Decision>>, u32) {
    let mut state = PolicyState::default();
    let mut size = size;
    let mut all = Vec::new();
    for s in 0..=until {
        let ev = evaluate(p, src, &state, Some(size), T0 + s * NANOS);
        state = ev.state;
        for d in &ev.decisions {
            if let Action::Resize { to, .. } = d.action {
                size = to;
            }
        }
        all.push(ev.decisions);
    }
    (all, size)
}

fn effect(d: &Decision, c: Constraint) -> &super::engine::ConstraintEffect {
    d.constraints.iter().find(|e| e.constraint == c).expect("constraint recorded")
}

const GPU: &str = "  scale:\n    metrics:\n      - name: gpu\n        signal: {metric: hw.gpu.utilization, stat: mean, window: 1s}\n        target: {value: 0.5}\n";

#[test]
fn constraints_are_recorded_in_the_fixed_order() {
    let p = policy(GPU);
    let src = source(&[("hw.gpu.utilization", "0.9x5")]);
    let (ticks, _) = run(&p, &src, 4, 1);
    let order: Vec<Constraint> = ticks[1][0].constraints.iter().map(|c| c.constraint).collect();
    assert_eq!(
        order,
        vec![
            Constraint::Tolerance,
            Constraint::Stabilization,
            Constraint::RateLimit,
            Constraint::MinMax,
            Constraint::Cooldown,
            Constraint::MissingData
        ]
    );
}

#[test]
fn tolerance_keeps_the_size_inside_the_band() {
    let p = policy(GPU);
    let src = source(&[("hw.gpu.utilization", "0.52x5")]);
    let (ticks, size) = run(&p, &src, 4, 2);
    let d = &ticks[2][0];
    assert_eq!(size, 4);
    assert_eq!(d.recommendation, Some(5), "ceil(4 × 0.52/0.5) = 5");
    let t = effect(d, Constraint::Tolerance);
    assert_eq!((t.before, t.after, t.changed), (Some(5), Some(4), true));
    assert!(d.reason.contains("tolerance"), "{}", d.reason);
}

#[test]
fn target_tracking_scales_up_by_the_ratio() {
    let p = policy(GPU);
    let src = source(&[("hw.gpu.utilization", "0.75x5")]);
    let (ticks, size) = run(&p, &src, 4, 0);
    assert_eq!(ticks[0][0].action, Action::Resize { from: 4, to: 6 });
    assert_eq!(size, 6);
}

#[test]
fn rate_limit_caps_scale_up_per_period() {
    // ratio 5 → raw 10 from 2; HPA default up limit: max(2×2, 2+4) = 6 per 15 s.
    let p = policy(GPU);
    let src = source(&[("hw.gpu.utilization", "2.5x40")]);
    let (ticks, _) = run(&p, &src, 2, 16);
    assert_eq!(ticks[0][0].action, Action::Resize { from: 2, to: 6 });
    let held = &ticks[2][0];
    assert_eq!(held.action, Action::None);
    assert!(effect(held, Constraint::RateLimit).changed);
    assert!(held.reason.contains("rate limit"), "{}", held.reason);
    // At t=15 the +4 of t=0 is no longer after the cutoff (t − 15 s): start 6 → max(12, 10).
    assert_eq!(ticks[15][0].action, Action::Resize { from: 6, to: 12 });
}

#[test]
fn stabilization_delays_scale_down_for_the_window() {
    let p = policy(&format!("{GPU}    behavior:\n      scaleDown: {{stabilizationWindow: 30s}}\n"));
    // High for 10 s (keeps 10 replicas), then low.
    let src = source(&[("hw.gpu.utilization", "0.5x10 0.1x60")]);
    let (ticks, _) = run(&p, &src, 10, 45);
    let d = &ticks[20][0];
    assert_eq!(d.action, Action::None);
    let s = effect(d, Constraint::Stabilization);
    assert_eq!((s.before, s.after), (Some(2), Some(10)));
    assert!(d.reason.contains("stabilization"), "{}", d.reason);
    // The last recommendation of 10 (t=10) leaves the 30 s window (t − 30, t] at t=40.
    assert_eq!(ticks[39][0].action, Action::None);
    assert_eq!(ticks[40][0].action, Action::Resize { from: 10, to: 2 });
}

#[test]
fn min_and_max_bound_the_result() {
    let p = policy(GPU);
    let src = source(&[("hw.gpu.utilization", "100x5")]);
    let (ticks, size) = run(&p, &src, 19, 1);
    assert_eq!(size, 20);
    assert!(effect(&ticks[1][0], Constraint::MinMax).changed);
    let src = source(&[("hw.gpu.utilization", "0.01x400")]);
    let (_, size) = run(
        &policy(&format!("{GPU}    behavior:\n      scaleDown: {{stabilizationWindow: 0s}}\n")),
        &src,
        3,
        2,
    );
    assert_eq!(size, 1, "min is 1");
}

#[test]
fn cooldown_blocks_the_opposite_move() {
    let p = policy(&format!(
        "{GPU}    cooldown: {{scaleDown: 60s}}\n    behavior:\n      scaleDown: {{stabilizationWindow: 0s}}\n"
    ));
    let src = source(&[("hw.gpu.utilization", "1.0x2 0.1x100")]);
    let (ticks, _) = run(&p, &src, 4, 70);
    assert_eq!(ticks[0][0].action, Action::Resize { from: 4, to: 8 });
    let blocked = &ticks[10][0];
    assert_eq!(blocked.action, Action::None);
    assert!(effect(blocked, Constraint::Cooldown).changed);
    assert!(blocked.reason.contains("cooling down until"), "{}", blocked.reason);
    assert_eq!(ticks[59][0].action, Action::None);
    assert!(matches!(ticks[60][0].action, Action::Resize { from: 8, .. }));
}

#[test]
fn budget_limits_actions_per_period() {
    let p = policy(&format!("{GPU}    budget: {{maxRuns: 1, per: 1h}}\n"));
    let src = source(&[("hw.gpu.utilization", "1.0x100")]);
    let (ticks, size) = run(&p, &src, 2, 30);
    assert_eq!(ticks[0][0].action, Action::Resize { from: 2, to: 4 });
    assert_eq!(size, 4);
    let d = &ticks[20][0];
    assert!(effect(d, Constraint::Budget).changed);
    assert!(d.reason.contains("budget"), "{}", d.reason);
}

#[test]
fn missing_data_never_scales_down_by_default() {
    let two = "  scale:\n    behavior:\n      scaleDown: {stabilizationWindow: 0s}\n    metrics:\n      - name: gpu\n        signal: {metric: hw.gpu.utilization, stat: mean, window: 1s}\n        target: {value: 0.5}\n      - name: latency\n        signal: {metric: inference.request.duration, stat: p95, window: 1s}\n        target: {value: 0.1}\n";
    let p = policy(two);
    // GPU says scale down; latency has no data.
    let src = source(&[("hw.gpu.utilization", "0.1x10")]);
    let (ticks, size) = run(&p, &src, 8, 3);
    assert_eq!(size, 8);
    let d = &ticks[3][0];
    let m = effect(d, Constraint::MissingData);
    assert_eq!((m.before, m.after), (Some(2), Some(8)));
    assert!(d.reason.contains("missing data"), "{}", d.reason);
    // But a scale-up on the data present goes through.
    let src = source(&[("hw.gpu.utilization", "1.0x10")]);
    let (_, size) = run(&p, &src, 4, 0);
    assert_eq!(size, 8);
    // No data at all: nothing.
    let (ticks, size) = run(&p, &source(&[]), 4, 1);
    assert_eq!(size, 4);
    assert!(ticks[1][0].reason.contains("missing data"), "{}", ticks[1][0].reason);
}

/// Guards 7ecdab6: below `min` the bound applies without any data (a target with no replicas
/// has none), so the first replica is placed; once inside the bounds, missing data acts no more.
#[test]
fn below_min_is_raised_to_min_without_data() {
    let p = policy(GPU);
    let (ticks, size) = run(&p, &source(&[]), 0, 3);
    let d = &ticks[0][0];
    assert_eq!(d.action, Action::Resize { from: 0, to: 1 }, "{}", d.reason);
    assert_eq!(d.recommendation, None, "nothing recommended: the bound alone acts");
    let m = effect(d, Constraint::MinMax);
    assert_eq!((m.after, m.detail.as_str()), (Some(1), "bounds 1..=20"));
    assert!(
        d.reason.contains("outside the bounds 1..=20 without a recommendation (no data for gpu)"),
        "{}",
        d.reason
    );
    assert_eq!(size, 1);
    for (t, tick) in ticks.iter().enumerate().skip(1) {
        assert_eq!(tick[0].action, Action::None, "t={t}");
        assert!(tick[0].reason.contains("missing data"), "t={t}: {}", tick[0].reason);
    }
}

/// The mirror of 7ecdab6: above `max` the target is lowered to it without any data, despite
/// `hold` (which only keeps the size from going below what the data would allow) and the
/// scale-down stabilization window.
#[test]
fn above_max_is_lowered_to_max_without_data() {
    let p = policy(GPU);
    let (ticks, size) = run(&p, &source(&[]), 25, 3);
    let d = &ticks[0][0];
    assert_eq!(d.action, Action::Resize { from: 25, to: 20 }, "{}", d.reason);
    assert!(d.reason.starts_with("scale down from 25 to 20: outside the bounds"), "{}", d.reason);
    let m = effect(d, Constraint::MissingData);
    assert_eq!((m.after, m.changed), (Some(20), false), "{m:?}");
    assert_eq!(size, 20);
    assert!(ticks[1..].iter().all(|t| t[0].action == Action::None));
}

#[test]
fn freeze_on_missing_data_blocks_everything() {
    let p = policy(&format!("{GPU}    onMissingData: freeze\n      \n").replace(
        "  scale:\n    metrics:",
        "  scale:\n    metrics:\n      - name: lat\n        signal: {metric: inference.request.duration, stat: p95, window: 1s}\n        target: {value: 0.1}",
    ));
    let src = source(&[("hw.gpu.utilization", "1.0x10")]);
    let (_, size) = run(&p, &src, 4, 2);
    assert_eq!(size, 4);
}

#[test]
fn panic_scales_fast_and_blocks_scale_down() {
    let p = policy(
        "  scale:\n    metrics:\n      - name: gpu\n        signal: {metric: hw.gpu.utilization, stat: mean, window: 60s}\n        target: {value: 0.5}\n    panic: {window: 2s, threshold: 2.0, hold: 30s}\n    behavior:\n      scaleDown: {stabilizationWindow: 0s}\n      scaleUp: {policies: [{type: Pods, value: 100, period: 1s}]}\n",
    );
    // 59 s at target, then a 4 s burst (t=59..62): the 60 s mean stays within tolerance,
    // the 2 s window sees the burst.
    let src = source(&[("hw.gpu.utilization", "0.5x58 2.5x3 0.05x60")]);
    let (ticks, _) = run(&p, &src, 4, 100);
    let burst = &ticks[59][0];
    let panic = effect(burst, Constraint::Panic);
    assert!(panic.changed, "{panic:?}");
    assert_eq!(burst.action, Action::Resize { from: 4, to: 12 }, "2 s mean 1.5 → ratio 3");
    // Last over-threshold tick is t=63 → panic until t=93: no scale-down before, although
    // the short window reads 0.05 from t=64.
    for (t, tick) in ticks.iter().enumerate().take(93).skip(64) {
        assert!(
            !matches!(tick[0].action, Action::Resize { from, to } if to < from),
            "scaled down at {t}"
        );
    }
    assert!(
        ticks[95..].iter().any(|d| matches!(d[0].action, Action::Resize { from, to } if to < from))
    );
}

#[test]
fn step_rules_fire_after_their_for_duration() {
    let p = policy(
        "  scale:\n    steps:\n      - name: hot\n        when: {signal: {metric: hw.gpu.utilization, stat: mean, window: 1s, gt: 0.9}}\n        for: 5s\n        change: {pods: 2}\n",
    );
    let src = source(&[("hw.gpu.utilization", "0.95x20")]);
    let (ticks, _) = run(&p, &src, 3, 6);
    assert_eq!(ticks[4][0].action, Action::None);
    assert_eq!(ticks[5][0].action, Action::Resize { from: 3, to: 5 });
}

const RETRAIN: &str = "  retrain:\n    - name: low-confidence\n      when: {accuracy: {estimate: mean-confidence, window: 10s, minSamples: 5, lt: 0.8}}\n      for: 5s\n      cooldown: 20s\n      budget: {maxRuns: 2, per: 1h}\n      job:\n        actuator: github-workflow\n        github: {repo: acme/models, workflow: retrain.yml, ref: main, inputs: {reason: '{{ reason }}'}}\n";

#[test]
fn retrain_waits_for_then_respects_cooldown_and_budget() {
    let p = policy(RETRAIN);
    let src = source(&[("inference.prediction.confidence", "0.6x200")]);
    let (ticks, _) = run(&p, &src, 1, 120);
    let fired: Vec<usize> = ticks
        .iter()
        .enumerate()
        .filter(|(_, d)| matches!(d[0].action, Action::StartJob { .. }))
        .map(|(i, _)| i)
        .collect();
    // First evaluation with 5 samples in the window is t=4 (samples at 0..4); for 5s → t=9.
    assert_eq!(fired, vec![9, 29], "cooldown 20s, then budget of 2");
    assert!(ticks[8][0].reason.contains("for"), "{}", ticks[8][0].reason);
    assert!(ticks[20][0].reason.contains("cooldown"), "{}", ticks[20][0].reason);
    assert!(ticks[60][0].reason.contains("budget"), "{}", ticks[60][0].reason);
    if let Action::StartJob { params } = &ticks[9][0].action {
        assert!(params["reason"].contains("accuracy"), "{params:?}");
        assert_eq!(params["rule"], "low-confidence");
    }
    assert_eq!(
        ticks[9][0].key.as_deref(),
        Some(format!("p/low-confidence/{}", T0 + 9 * NANOS).as_str())
    );
}

#[test]
fn retrain_on_missing_data_does_nothing() {
    let p = policy(RETRAIN);
    let (ticks, _) = run(&p, &source(&[]), 1, 10);
    assert!(ticks.iter().all(|d| d[0].action == Action::None));
    assert!(ticks[10][0].reason.contains("missing data"));
}

#[test]
fn psi_drift_against_the_first_period_of_a_version() {
    let p = policy(
        "  retrain:\n    - name: drift\n      when: {drift: {metric: inference.prediction.confidence, test: psi, window: 20s, reference: first-20s-of-version, minSamples: 10}}\n      cooldown: 1h\n      job: {actuator: command, command: {argv: [retrain, '{{ version }}']}}\n",
    );
    // Version v2 appears at t=0: confident for 40 s, then unsure.
    let src =
        source(&[(r#"inference.prediction.confidence{model.version="v2"}"#, "0.95x39 0.45x40")]);
    let (ticks, _) = run(&p, &src, 1, 79);
    assert!(
        ticks[10][0].reason.contains("missing data"),
        "reference incomplete: {}",
        ticks[10][0].reason
    );
    assert_eq!(ticks[30][0].condition, Some(false));
    let fired =
        ticks.iter().position(|d| matches!(d[0].action, Action::StartJob { .. })).expect("fires");
    // At t=40 the 20 s window holds one unsure answer in 20: PSI with the 1e-4 floor for the
    // empty reference bucket is already 0.31 > 0.2.
    assert_eq!(fired, 40);
    if let Action::StartJob { params } = &ticks[fired][0].action {
        assert_eq!(params["version"], "v2");
    }
}

#[test]
fn dry_run_is_recorded_as_such() {
    let p = policy(&format!("  mode: dry-run\n{GPU}"));
    let src = source(&[("hw.gpu.utilization", "1.0x5")]);
    let ev = evaluate(&p, &src, &PolicyState::default(), Some(2), T0 + NANOS);
    assert_eq!(ev.decisions[0].mode, super::format::Mode::DryRun);
    assert_eq!(ev.decisions[0].action, Action::Resize { from: 2, to: 4 });
}

/// Ready and warming replicas (HPA's unready pods, for every signal): the GPU at twice its
/// target on 5 ready replicas asks for 10. With 10 provisioned (5 still warming) that is
/// covered: no action. Counted on the provisioned size it would compound to 20; with a
/// latency at three times its target it asks for 15 of 10 provisioned, and gets them.
#[test]
fn scale_out_covered_by_warming_replicas_is_held() {
    let p = policy(GPU);
    let src = source(&[("hw.gpu.utilization", "1.0x5")]);
    let now = T0 + 2 * NANOS;
    let mut st = PolicyState::default();
    let d = &super::engine::evaluate_sized(&p, &src, &mut st, Some(10), Some(5), now)[0];
    assert_eq!(d.action, Action::None, "{d:?}");
    assert_eq!(d.recommendation, Some(10));
    assert!(d.inputs.iter().any(|i| i.name == "ready replicas" && i.value == Some(5.0)));
    let d = &evaluate(&p, &src, &PolicyState::default(), Some(10), now).decisions[0];
    assert_eq!(d.action, Action::Resize { from: 10, to: 20 }, "{d:?}");
    let lat = policy(
        "  scale:\n    metrics:\n      - name: p95\n        signal: {metric: inference.request.duration, stat: max, window: 1s}\n        target: {value: 0.1}\n",
    );
    let src = source(&[("inference.request.duration", "0.3x5")]);
    let mut st = PolicyState::default();
    let d = &super::engine::evaluate_sized(&lat, &src, &mut st, Some(10), Some(5), now)[0];
    assert_eq!(d.action, Action::Resize { from: 10, to: 15 }, "{d:?}");
}

/// `scale.model` replaces the ratio once fitted: 30 s of samples at 250 req/s on 10 ready
/// replicas at 50 % busy (μ = 50 req/s) with p95 80 ms (s = 20 ms, the M/M/1 tail 60 ms)
/// fit the model; then 500 req/s needs the fewest replicas holding 130 ms (no noise
/// headroom here): 15 give 139.8 ms, 16 give 119.9 ms → 16, although the GPU ratio alone
/// would ask for only 10 · 0.5 / 0.5 = 10.
#[test]
fn model_sizes_the_target_once_fitted() {
    let p = policy(&format!(
        "{GPU}    model:\n      load: {{metric: inference.requests, stat: max, window: 1s}}\n      latency: {{metric: inference.request.duration, stat: max, window: 1s}}\n      utilization: {{metric: hw.gpu.utilization, stat: max, window: 1s}}\n      p95: 0.130\n      headroom: 0\n"
    ));
    let tail = 20f64.ln() / 50.0;
    let lat = format!("{}x30 {}x5", 0.02 + tail, 0.02 + tail);
    let src = source(&[
        ("inference.requests", "250x30 500x5"),
        ("hw.gpu.utilization", "0.5x36"),
        ("inference.request.duration", lat.as_str()),
    ]);
    let mut st = PolicyState::default();
    for s in 0..30 {
        let d =
            super::engine::evaluate_sized(&p, &src, &mut st, Some(10), Some(10), T0 + s * NANOS);
        assert_eq!(d[0].action, Action::None, "at {s} s: {:?}", d[0]);
    }
    let fit = st.scale.model.fit.expect("fitted");
    assert!((fit.throughput - 50.0).abs() < 1e-6 && (fit.service_time - 0.02).abs() < 1e-6);
    let d =
        &super::engine::evaluate_sized(&p, &src, &mut st, Some(10), Some(10), T0 + 31 * NANOS)[0];
    assert_eq!(d.action, Action::Resize { from: 10, to: 16 }, "{d:?}");
    assert_eq!(d.recommendation, Some(16), "{d:?}");
}
