//! What a replay reports, and its side-by-side table.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::service::Capacity;
use super::trace::Trace;
use crate::check::Policy;

/// A contender's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContenderReport {
    /// `policies`, `hpa`, `kpa` or a directory.
    pub name: String,
    /// Scale-up actions.
    pub scale_ups: u32,
    /// Scale-down actions.
    pub scale_downs: u32,
    /// Retraining jobs started.
    pub retrain_jobs: u32,
    /// Provisioned replica-hours.
    pub replica_hours: f64,
    /// Minutes with the SLO signal above its objective.
    pub slo_violation_minutes: Option<f64>,
    /// Worst p95 latency seen, seconds.
    pub worst_p95: f64,
    /// Most replicas at once.
    pub max_replicas: u32,
    /// Scale actions (ups and downs) per day of scored trace.
    pub actions_per_day: f64,
    /// Replica-hours over the oracle's (see [`oracle_size`]); absent without an SLO.
    pub oracle_ratio: Option<f64>,
    /// Every step of the trace, history included: what the contender ran and what its
    /// service answered ([`Timeline`]).
    #[serde(skip)]
    pub steps: Vec<StepRecord>,
}

/// One step of one contender.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StepRecord {
    /// Provisioned replicas during the step.
    pub replicas: u32,
    /// Replicas past their warm-up.
    pub ready: u32,
    /// The step's modelled p95 latency, seconds.
    pub p95: f64,
}

/// A whole replay.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayReport {
    /// The trace file.
    pub data: String,
    /// Rows × step.
    pub duration_s: f64,
    /// Capacity model used.
    pub capacity: Capacity,
    /// Seconds at the trace's start run as unscored history (`ReplayOptions::history`).
    pub history_s: f64,
    /// Contenders, the replayed policies first.
    pub contenders: Vec<ContenderReport>,
    /// The oracle (see [`oracle_size`]), scored like the contenders; absent without an SLO.
    pub oracle: Option<ContenderReport>,
}

impl ReplayReport {
    /// The replay step by step as CSV, for plotting or for finding where a contender spent its
    /// replica-hours: `time_s` from the trace's start, `offered_load`, then per contender (the
    /// oracle last) `NAME_replicas`, `NAME_ready` and `NAME_p95`. One row per trace step,
    /// history included (`scored` is 0 there).
    pub fn timeline_csv(&self, trace: &Trace) -> String {
        let all: Vec<&ContenderReport> = self.contenders.iter().chain(&self.oracle).collect();
        let mut s = String::from("time_s,scored,offered_load");
        for c in &all {
            let n = c.name.replace([',', '"', '\n'], "_");
            let _ = write!(s, ",{n}_replicas,{n}_ready,{n}_p95");
        }
        s.push('\n');
        let step = trace.step.as_secs_f64();
        for (i, load) in trace.load.iter().enumerate() {
            let t = i as f64 * step;
            let _ = write!(s, "{t},{},{load}", u8::from(t >= self.history_s));
            for c in &all {
                match c.steps.get(i) {
                    Some(r) => {
                        let _ = write!(s, ",{},{},{}", r.replicas, r.ready, r.p95);
                    }
                    None => s.push_str(",,,"),
                }
            }
            s.push('\n');
        }
        s
    }
}

/// Replay options beyond the policies and the trace.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// Capacity used when the scaling policy declares none.
    pub capacity: Option<Capacity>,
    /// Starting size; default the target's min.
    pub start_size: Option<u32>,
    /// The first `history` of the trace is history, not scored: every contender runs through
    /// it (so forecasts have the trace's own past to fit on, and no contender is scored on a
    /// cold start), and actions, replica-hours and SLO minutes count only after it.
    pub history: Option<Duration>,
}

/// What to compare against.
#[derive(Clone, Debug)]
pub enum Baseline {
    /// Kubernetes HPA.
    Hpa,
    /// Knative KPA.
    Kpa,
    /// Another policy set.
    Policies(String, Vec<Policy>),
}

/// The side-by-side table.
pub fn render_table(r: &ReplayReport) -> String {
    let mut s = format!(
        "replay of {} ({:.1} h; capacity {} req/s per replica, service time {} s, warm-up {} s)\n",
        r.data,
        r.duration_s / 3600.0,
        r.capacity.throughput,
        r.capacity.service_time,
        r.capacity.warmup
    );
    if r.history_s > 0.0 {
        let _ = writeln!(
            s,
            "scored after the first {:.1} h (history: run by every contender, not counted)",
            r.history_s / 3600.0
        );
    }
    let _ = writeln!(
        s,
        "{:<28} {:>10} {:>10} {:>11} {:>8} {:>14} {:>9} {:>12} {:>10} {:>9}",
        "",
        "scale-ups",
        "scale-dn",
        "actions/day",
        "retrain",
        "replica-hours",
        "x-oracle",
        "SLO-viol-min",
        "worst-p95",
        "max-size"
    );
    for c in r.contenders.iter().chain(r.oracle.as_ref()) {
        let _ = writeln!(
            s,
            "{:<28} {:>10} {:>10} {:>11.1} {:>8} {:>14.2} {:>9} {:>12} {:>9.3}s {:>9}",
            c.name,
            c.scale_ups,
            c.scale_downs,
            c.actions_per_day,
            c.retrain_jobs,
            c.replica_hours,
            c.oracle_ratio.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
            c.slo_violation_minutes.map(|m| format!("{m:.1}")).unwrap_or_else(|| "-".into()),
            c.worst_p95,
            c.max_replicas
        );
    }
    if r.oracle.is_some() {
        s.push_str(
            "oracle: at every step the fewest replicas whose modelled p95 (no backlog) holds the SLO objective at that step's load, min/max kept, no warm-up\n",
        );
    }
    s
}
