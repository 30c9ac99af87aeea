//! `policy replay`: backtests policies on a recorded trace through the real engine, against a
//! simulated service, side by side with the Kubernetes HPA and Knative KPA algorithms.
//!
//! **Trace** (CSV): `#` comment lines, a header `time,offered_load[,series…]`, then rows.
//! `time` is seconds (relative or Unix), rows evenly spaced; `offered_load` is requests per
//! second arriving at the service. Further columns are recorded series named
//! `metric{attr="value"}` (quoted as CSV needs), served to policies as they are (for example
//! `inference.prediction.confidence` for retraining rules). JSON traces carry the same:
//! `{"series": [{"name": "offered_load", "points": [[t, v], …]}, …]}`.
//!
//! **Capacity model** (from the scaling policy's `target.capacity`, or replay options): each
//! ready replica serves `perReplicaThroughput` requests/s with `serviceTime`; a new replica
//! serves after `warmup`; removed replicas stop at once. Per step: capacity C = ready × μ;
//! a backlog queue carries what C could not serve; utilisation = served / C; p95 latency =
//! serviceTime + backlog / C + ln(20)·ρ / (μ·(1−ρ)) with ρ capped at 0.99 (the M/M/1 tail for
//! the queueing part), capped at 60 s. The simulator records, per contender,
//! `inference.request.duration` (p95 per step), `inference.queue.duration`,
//! `hw.gpu.utilization`, `inference.requests` (a counter of served requests),
//! `inference.replicas` (ready) and `offered_load`, so each policy sees the consequences of
//! its own replica counts.
//!
//! **Evaluation**: each of our policies at its own interval, as the live runtime schedules it
//! (every step is a tick; a policy is due one interval after its last evaluation); HPA every 15 s sync
//! (rounded up to the trace step) on the scaling policy's own metrics and targets, with
//! metrics as of one metrics-server resolution (15 s) ago, tolerance 0.1, 300 s scale-down
//! stabilization, scale-up max(100 %, 4 pods)/15 s, scale-down 100 %/15 s; KPA every 2 s tick
//! (rounded up) in RPS mode on offered load with target 70 % of a replica's throughput,
//! stable window 60 s, panic window 6 s, panic threshold 200 %, max scale-up rate 1000,
//! max scale-down rate 2, scale-down delay 0.
//!
//! **History** (`ReplayOptions::history`, `--history`): the trace's first part is run by every
//! contender (forecasts fit on it, sizes settle) but not scored; the report counts from there.
//!
//! **Ready and warming**: our policies are offered the provisioned size and the ready count
//! (replicas past their warm-up), as a resizer that reports both does
//! ([`engine::evaluate_sized`]); HPA and KPA keep their own treatment (HPA on the provisioned
//! size, as it does for custom metrics; KPA on the ready count).
//!
//! **Oracle**: beside the contenders, [`oracle_size`] at every step: the fewest replicas whose
//! modelled p95 (no backlog) holds the SLO objective at that step's load, `min`/`max` kept,
//! no warm-up, through the same simulation and scoring; each contender's replica-hours are
//! reported as a ratio to it.
//!
//! **Report**: actions (and actions per day of scored trace), replica-hours and their ratio to
//! the oracle's, SLO-violation minutes (steps where the policy's `slo` signal exceeds its
//! objective), worst latency.

mod baselines;
mod report;
mod service;
mod source;
#[cfg(test)]
mod tests;
mod trace;

pub use baselines::*;
pub use report::*;
use service::Service;
pub use service::*;
pub use source::*;
pub use trace::*;

use std::collections::BTreeMap;
use std::time::Duration;

use super::check::{CheckReport, Policy};
use super::driver::{Driver, TargetSize, applied_size, starts_job};
use super::engine::{self, PolicyState};
use super::format::SloSpec;
use super::signal::{Selector, SignalQuery, SignalSource, Stat, nanos};

/// Errors of replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace could not be read or parsed.
    #[error("{file}: {message}")]
    Trace {
        /// The trace file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The policies cannot be replayed.
    #[error("{0}")]
    Policies(String),
}

fn scaling_policy(policies: &[Policy]) -> Result<&Policy, ReplayError> {
    let scaling: Vec<&Policy> = policies.iter().filter(|p| p.doc.spec.scale.is_some()).collect();
    match scaling.as_slice() {
        [one] => Ok(one),
        [] => Err(ReplayError::Policies("no policy scales a target: nothing to replay".into())),
        many => {
            let targets: std::collections::BTreeSet<&str> =
                many.iter().map(|p| p.doc.spec.target.name.as_str()).collect();
            if targets.len() == 1 {
                Ok(many[0])
            } else {
                Err(ReplayError::Policies(format!(
                    "replay simulates one service; these policies scale {} targets",
                    targets.len()
                )))
            }
        }
    }
}

struct Run {
    report: ContenderReport,
}

fn slo_violated(slo: Option<&SloSpec>, src: &SimSource, now: u64) -> Option<bool> {
    let slo = slo?;
    let q = engine::query(&slo.signal).ok()?;
    Some(src.read(&q, now).ok().flatten().is_some_and(|v| v > slo.objective))
}

/// Drives one contender through the trace, offering `decide(now, src, size, ready) ->
/// (Option<new size>, retrain jobs)` a tick every `every` rounded up to whole steps (every
/// step when zero); `size` is the provisioned count, `ready` the replicas past their warm-up.
/// Steps before `score_from` run (history) but are not scored.
#[allow(clippy::too_many_arguments)]
fn simulate(
    name: &str,
    trace: &Trace,
    cap: Capacity,
    start: u32,
    slo: Option<&SloSpec>,
    score_from: usize,
    every: Duration,
    mut decide: impl FnMut(u64, &SimSource, u32, u32) -> (Option<u32>, u32),
) -> Run {
    let mut src = SimSource::new(trace);
    let mut svc = Service::new(cap, start);
    let dt = trace.step.as_secs_f64();
    let every_steps = (nanos(every).div_ceil(nanos(trace.step).max(1))).max(1) as usize;
    let mut r = ContenderReport {
        name: name.to_owned(),
        scale_ups: 0,
        scale_downs: 0,
        retrain_jobs: 0,
        replica_hours: 0.0,
        slo_violation_minutes: slo.map(|_| 0.0),
        worst_p95: 0.0,
        max_replicas: start,
        actions_per_day: 0.0,
        oracle_ratio: None,
        steps: Vec::with_capacity(trace.load.len()),
    };
    for (i, load) in trace.load.iter().enumerate() {
        let t = i as f64 * dt;
        let now = trace.start + i as u64 * nanos(trace.step);
        let values = svc.step(*load, t, dt);
        let scored = i >= score_from;
        src.record(values);
        r.steps.push(StepRecord {
            replicas: svc.size(),
            ready: svc.ready(t) as u32,
            p95: values[0],
        });
        if i == score_from {
            r.max_replicas = svc.size();
        }
        if scored {
            r.worst_p95 = r.worst_p95.max(values[0]);
            r.replica_hours += f64::from(svc.size()) * dt / 3600.0;
            if slo_violated(slo, &src, now) == Some(true) {
                if let Some(m) = r.slo_violation_minutes.as_mut() {
                    *m += dt / 60.0;
                }
            }
        }
        if i % every_steps == 0 {
            let (to, jobs) = decide(now, &src, svc.size(), svc.ready(t) as u32);
            if scored {
                r.retrain_jobs += jobs;
                if let Some(to) = to {
                    if to > svc.size() {
                        r.scale_ups += 1;
                    } else if to < svc.size() {
                        r.scale_downs += 1;
                    }
                    r.max_replicas = r.max_replicas.max(to);
                }
            }
            if let Some(to) = to {
                svc.resize(to, t);
            }
        }
    }
    let scored_days = (trace.load.len() - score_from.min(trace.load.len())) as f64 * dt / 86_400.0;
    if scored_days > 0.0 {
        r.actions_per_day = f64::from(r.scale_ups + r.scale_downs) / scored_days;
    }
    Run { report: r }
}

/// The oracle through the same simulation and scoring as the contenders: every step it sizes
/// for the next step's load with [`oracle_size`], and its replicas need no warm-up.
fn replay_oracle(
    trace: &Trace,
    cap: Capacity,
    slo: &SloSpec,
    min: u32,
    max: u32,
    score_from: usize,
) -> Run {
    let instant = Capacity { warmup: 0.0, ..cap };
    let size = |i: usize| {
        let load = trace.load.get(i).or(trace.load.last()).copied().unwrap_or(0.0);
        oracle_size(&cap, load, slo.objective, min, max)
    };
    let step = nanos(trace.step).max(1);
    simulate(
        "oracle",
        trace,
        instant,
        size(0),
        Some(slo),
        score_from,
        Duration::ZERO,
        |now, _, _, _| {
            let i = (now.saturating_sub(trace.start) / step) as usize;
            (Some(size(i + 1)), 0)
        },
    )
}

fn replay_policies(
    name: &str,
    policies: &[Policy],
    trace: &Trace,
    cap: Capacity,
    start: u32,
    slo: Option<&SloSpec>,
    score_from: usize,
) -> Run {
    let mut states: Vec<PolicyState> = vec![PolicyState::default(); policies.len()];
    // Each policy at its own interval, scheduled, sized and applied as the live runtime does;
    // the simulated service is the resizer. The simulation offers every step as a tick.
    let mut driver = Driver::new();
    simulate(name, trace, cap, start, slo, score_from, Duration::ZERO, |now, src, size, ready| {
        let mut to = None;
        let mut jobs = 0;
        for (p, st) in policies.iter().zip(states.iter_mut()) {
            let resizer = || Some(TargetSize { provisioned: size, ready: Some(ready) });
            let Some(decisions) = driver.tick(p, src, st, resizer, now) else { continue };
            for d in &decisions {
                if let Some(n) = applied_size(d) {
                    to = Some(n);
                }
                jobs += u32::from(starts_job(d));
            }
        }
        (to, jobs)
    })
}

/// Replays `policies` on `trace`, with an optional baseline.
pub fn replay(
    data: &str,
    policies: &[Policy],
    trace: &Trace,
    baseline: Option<&Baseline>,
    opts: &ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    let main = scaling_policy(policies)?;
    let cap =
        main.doc.spec.target.capacity.as_ref().map(Capacity::from).or(opts.capacity).ok_or_else(
            || {
                ReplayError::Policies(format!(
                    "policy {:?} declares no `target.capacity` and no capacity was given",
                    main.name()
                ))
            },
        )?;
    let t = &main.doc.spec.target;
    let start = opts.start_size.unwrap_or(t.min.max(1)).clamp(t.min, t.max);
    let slo = policies.iter().find_map(|p| p.doc.spec.slo.as_ref());
    let history = opts.history.unwrap_or_default();
    let score_from =
        (nanos(history).div_ceil(nanos(trace.step).max(1)) as usize).min(trace.load.len());
    if score_from >= trace.load.len() && !trace.load.is_empty() {
        return Err(ReplayError::Policies(format!(
            "history of {} covers the whole trace: nothing left to score",
            humantime::format_duration(history)
        )));
    }
    let mut contenders =
        vec![replay_policies("policies", policies, trace, cap, start, slo, score_from).report];
    match baseline {
        None => {}
        Some(Baseline::Hpa) => {
            let scale = main.doc.spec.scale.clone().unwrap_or_default();
            if scale.metrics.is_empty() {
                return Err(ReplayError::Policies(
                    "the HPA baseline needs target-tracking `metrics` in the scaling policy".into(),
                ));
            }
            let mut hpa = Hpa::new(&scale, t.min, t.max);
            let run = simulate(
                "hpa",
                trace,
                cap,
                start,
                slo,
                score_from,
                HPA_SYNC,
                |now, src, size, _| (Some(hpa.sync(src, size, now)), 0),
            );
            contenders.push(run.report);
        }
        Some(Baseline::Kpa) => {
            let mut kpa = Kpa::new(0.7 * cap.throughput, t.min, t.max);
            let run = simulate(
                "kpa",
                trace,
                cap,
                start,
                slo,
                score_from,
                KPA_TICK,
                |now, src, size, _| {
                    let ready = src
                        .read(
                            &SignalQuery {
                                selector: Selector {
                                    metric: "inference.replicas".into(),
                                    matchers: BTreeMap::new(),
                                },
                                stat: Stat::Last,
                                window: Duration::from_secs(3600),
                            },
                            now,
                        )
                        .ok()
                        .flatten()
                        .map(|r| r as u32)
                        .unwrap_or(size);
                    (Some(kpa.tick(src, ready, now)), 0)
                },
            );
            contenders.push(run.report);
        }
        Some(Baseline::Policies(name, other)) => {
            scaling_policy(other)?;
            contenders
                .push(replay_policies(name, other, trace, cap, start, slo, score_from).report);
        }
    }
    let oracle = slo.map(|slo| replay_oracle(trace, cap, slo, t.min, t.max, score_from).report);
    if let Some(o) = &oracle {
        for c in &mut contenders {
            if o.replica_hours > 0.0 {
                c.oracle_ratio = Some(c.replica_hours / o.replica_hours);
            }
        }
    }
    Ok(ReplayReport {
        data: data.to_owned(),
        duration_s: trace.load.len() as f64 * trace.step.as_secs_f64(),
        capacity: cap,
        history_s: score_from as f64 * trace.step.as_secs_f64(),
        contenders,
        oracle,
    })
}

/// Policies from a check report, or an error listing the problems.
pub fn usable(report: &CheckReport) -> Result<Vec<Policy>, ReplayError> {
    if report.has_errors() {
        let errs: Vec<String> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity == super::check::Severity::Error)
            .map(|d| d.to_string())
            .collect();
        return Err(ReplayError::Policies(errs.join("\n")));
    }
    Ok(report.policies.clone())
}
