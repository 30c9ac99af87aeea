//! A generated fleet for tests, the render benchmark and offline use (`--fake NxM`).
//!
//! Every value is a deterministic function of (node, GPU, time), so a test rendering at a fixed
//! `now` always sees the same numbers, histories line up with current values, and a fleet of
//! 500 nodes × 8 GPUs costs nothing to store. [`FakeSource`] serves it through the real
//! [`Source`] trait and records what it was asked, which is how tests check that the dashboard
//! asks only for what the current screen shows.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::{Clock, Need, Snapshot, Source, SourceError};
use crate::model::{
    ActuatorOutcome, Anomaly, ClusterStatus, ConfidenceHistogram, ConstraintStep, DecisionInput,
    DecisionOutcome, DecisionView, DriftStats, FleetRow, ForecastView, GpuStatus, GpuView,
    JobStatus, LatencyHistory, ModelVersionView, ModelView, NANOS_PER_SEC, NextAction, NodeDetail,
    NodeHealth, Percentiles, ProcessView, Replicas, RuleInput, RuleKind, RuleState, RuleView,
    Series, ServiceView, Unit, UnixNanos, XidEvent,
};

const GIB: u64 = 1 << 30;

/// A generated fleet of `nodes` nodes with `gpus` GPUs each.
#[derive(Debug, Clone, Copy)]
pub struct FakeFleet {
    /// Number of nodes.
    pub nodes: u32,
    /// GPUs per node.
    pub gpus: u32,
}

/// A cheap stateless hash to give every (node, gpu) its own phase and level.
fn mix(a: u64, b: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0x632B_E59B_D9B4_E019);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    x
}

fn unit(a: u64, b: u64) -> f64 {
    (mix(a, b) % 10_000) as f64 / 10_000.0
}

/// A smooth signal in 0..=1 for one key at one time.
fn wave(key: u64, t: UnixNanos) -> f64 {
    let secs = (t / NANOS_PER_SEC) as f64;
    let level = 0.25 + 0.5 * unit(key, 1);
    let period = 300.0 + 900.0 * unit(key, 2);
    let phase = std::f64::consts::TAU * unit(key, 3);
    let slow = 0.2 * (secs / period * std::f64::consts::TAU + phase).sin();
    let fast = 0.05 * (secs / 37.0 + phase * 3.0).sin();
    (level + slow + fast).clamp(0.0, 1.0)
}

fn history(
    window: Duration,
    step: Duration,
    now: UnixNanos,
    f: impl Fn(UnixNanos) -> f64,
) -> Series {
    let step_ns = u64::try_from(step.as_nanos()).unwrap_or(NANOS_PER_SEC).max(1);
    let window_ns = u64::try_from(window.as_nanos()).unwrap_or(0);
    let n = window_ns / step_ns;
    let start = now.saturating_sub(n * step_ns);
    Series { points: (0..=n).map(|i| start + i * step_ns).map(|t| (t, f(t))).collect() }
}

impl FakeFleet {
    /// A fleet of `nodes` × `gpus`.
    pub fn new(nodes: u32, gpus: u32) -> FakeFleet {
        FakeFleet { nodes, gpus }
    }

    /// Name of node `i` (0-based).
    pub fn node_name(&self, i: u32) -> String {
        format!("gpu-node-{:03}", i + 1)
    }

    fn node_index(&self, name: &str) -> Option<u32> {
        let n: u32 = name.strip_prefix("gpu-node-")?.parse().ok()?;
        (1..=self.nodes).contains(&n).then(|| n - 1)
    }

    fn gpu_key(node: u32, gpu: u32) -> u64 {
        (u64::from(node) << 16) | u64::from(gpu)
    }

    fn lost(&self, node: u32, gpu: u32) -> bool {
        node % 131 == 7 && gpu == self.gpus.saturating_sub(1)
    }

    fn degraded(node: u32, gpu: u32) -> bool {
        node % 89 == 11 && gpu == 0
    }

    fn xid(&self, node: u32, now: UnixNanos) -> Option<XidEvent> {
        (node % 53 == 4).then(|| XidEvent {
            code: if node % 2 == 0 { 79 } else { 48 },
            at: now.saturating_sub(u64::from(node % 600) * NANOS_PER_SEC),
        })
    }

    fn last_seen(node: u32, now: UnixNanos) -> UnixNanos {
        if node % 97 == 13 {
            now.saturating_sub(95 * NANOS_PER_SEC)
        } else {
            now.saturating_sub(u64::from(node % 3) * NANOS_PER_SEC)
        }
    }

    fn gpu(
        &self,
        node: u32,
        gpu: u32,
        now: UnixNanos,
        window: Duration,
        step: Duration,
    ) -> GpuView {
        let key = Self::gpu_key(node, gpu);
        let lost = self.lost(node, gpu);
        let total = 80 * GIB;
        let util = |t| wave(key, t);
        let mem = |t| (0.2 + 0.7 * wave(key ^ 0xAA, t)) * total as f64;
        let power = |t| 90.0 + 600.0 * wave(key, t);
        GpuView {
            index: gpu,
            uuid: format!("GPU-{:08x}-{:04x}", mix(key, 9) as u32, gpu),
            model: "NVIDIA H100 80GB HBM3".to_owned(),
            status: if lost {
                GpuStatus::Failed
            } else if Self::degraded(node, gpu) {
                GpuStatus::Degraded
            } else {
                GpuStatus::Ok
            },
            util: (!lost).then(|| util(now)),
            mem_ctrl_util: (!lost).then(|| 0.6 * util(now)),
            mem_used: (!lost).then(|| mem(now) as u64),
            mem_total: Some(total),
            power_w: (!lost).then(|| power(now)),
            power_limit_w: Some(700.0),
            temp_c: (!lost).then(|| 38.0 + 45.0 * util(now)),
            sm_clock_mhz: (!lost).then(|| 1200.0 + 780.0 * util(now)),
            last_xid: if gpu == 0 { self.xid(node, now) } else { None },
            util_history: history(window, step, now, util),
            mem_history: history(window, step, now, mem),
            power_history: history(window, step, now, power),
        }
    }

    /// The Fleet screen's rows at `now`.
    pub fn fleet_rows(&self, now: UnixNanos) -> Vec<FleetRow> {
        (0..self.nodes)
            .map(|n| {
                let live: Vec<u64> = (0..self.gpus)
                    .filter(|&g| !self.lost(n, g))
                    .map(|g| Self::gpu_key(n, g))
                    .collect();
                let utils: Vec<f64> = live.iter().map(|&k| wave(k, now)).collect();
                let count = utils.len().max(1) as f64;
                let mean = (!utils.is_empty()).then(|| utils.iter().sum::<f64>() / count);
                let max = utils.iter().copied().reduce(f64::max);
                let mem: f64 = live
                    .iter()
                    .map(|&k| (0.2 + 0.7 * wave(k ^ 0xAA, now)) * (80 * GIB) as f64)
                    .sum();
                let gpu_lost = (0..self.gpus).filter(|&g| self.lost(n, g)).count() as u32;
                FleetRow {
                    node: self.node_name(n),
                    gpus: self.gpus,
                    gpu_busy_mean: mean,
                    gpu_busy_max: max,
                    gpu_mem_used: Some(mem as u64),
                    gpu_mem_total: Some(u64::from(self.gpus) * 80 * GIB),
                    power_w: Some(utils.iter().map(|u| 90.0 + 600.0 * u).sum()),
                    temp_max_c: max.map(|u| 38.0 + 45.0 * u),
                    cpu: Some(wave(u64::from(n) ^ 0xC0, now)),
                    mem_used: Some((wave(u64::from(n) ^ 0xE0, now) * (2048 * GIB) as f64) as u64),
                    mem_total: Some(2048 * GIB),
                    health: NodeHealth {
                        last_seen: Self::last_seen(n, now),
                        gpus_lost: gpu_lost,
                        gpus_degraded: (0..self.gpus).filter(|&g| Self::degraded(n, g)).count()
                            as u32,
                        last_xid: self.xid(n, now),
                        anomalies: self.anomalies(n, now).len() as u32,
                    },
                }
            })
            .collect()
    }

    /// The Node screen's data for `node` at `now`, `None` if there is no such node.
    pub fn node_detail(
        &self,
        node: &str,
        now: UnixNanos,
        window: Duration,
        step: Duration,
    ) -> Option<NodeDetail> {
        let n = self.node_index(node)?;
        let gpus: Vec<GpuView> =
            (0..self.gpus).map(|g| self.gpu(n, g, now, window, step)).collect();
        let mut processes: Vec<ProcessView> = gpus
            .iter()
            .filter(|g| g.status != GpuStatus::Failed)
            .flat_map(|g| {
                let key = Self::gpu_key(n, g.index);
                let used = g.mem_used.unwrap_or(0);
                [
                    ProcessView {
                        pid: 4000 + g.index * 10,
                        name: "tritonserver".to_owned(),
                        gpu_index: g.index,
                        gpu_mem: Some(used * 3 / 4),
                        gpu_util: g.util.map(|u| u * 0.8),
                        cpu: Some(0.4 + unit(key, 5)),
                        mem: Some(6 * GIB + mix(key, 6) % GIB),
                    },
                    ProcessView {
                        pid: 4001 + g.index * 10,
                        name: "python3 trainer.py".to_owned(),
                        gpu_index: g.index,
                        gpu_mem: Some(used / 4),
                        gpu_util: g.util.map(|u| u * 0.2),
                        cpu: Some(unit(key, 7)),
                        mem: Some(2 * GIB + mix(key, 8) % GIB),
                    },
                ]
            })
            .collect();
        processes.sort_by(|a, b| b.gpu_mem.cmp(&a.gpu_mem).then(a.pid.cmp(&b.pid)));
        let services = ["resnet50", "efficientnet-b4", "yolov8"]
            .iter()
            .enumerate()
            .map(|(i, model)| {
                let key = u64::from(n) * 8 + i as u64;
                let load = wave(key ^ 0x5E, now);
                ServiceView {
                    name: format!("{model}-serving"),
                    model: (*model).to_owned(),
                    version: format!("v{}", 3 + i * 2),
                    rate_rps: Some(50.0 + 400.0 * load),
                    errors_rps: Some(if n % 41 == 3 { 2.5 } else { 0.0 }),
                    latency: latency_at(key, load),
                }
            })
            .collect();
        Some(NodeDetail {
            node: node.to_owned(),
            last_seen: Self::last_seen(n, now),
            window,
            cpu_history: history(window, step, now, |t| wave(u64::from(n) ^ 0xC0, t)),
            mem_used: Some((wave(u64::from(n) ^ 0xE0, now) * (2048 * GIB) as f64) as u64),
            mem_total: Some(2048 * GIB),
            gpus,
            processes,
            services,
            anomalies: self.anomalies(n, now),
        })
    }

    /// Anomalies flagged on node `n` at `now`, highest score first: every 17th node (from the
    /// sixth) runs slow against its peers, and its resnet50 has drifted from its own history.
    pub fn anomalies(&self, n: u32, now: UnixNanos) -> Vec<Anomaly> {
        if n % 17 != 5 {
            return Vec::new();
        }
        let node = self.node_name(n);
        let since = now.saturating_sub((120 + u64::from(n)) * NANOS_PER_SEC);
        vec![
            Anomaly {
                subject: node.clone(),
                node: node.clone(),
                model: None,
                baseline: "peers".to_owned(),
                feature: "latency_at_gpu_load".to_owned(),
                value: 0.094,
                expected: 0.041,
                score: 4.2,
                why: "p95 latency 94 ms at 60 % GPU load; peers at that load see 41 ms".to_owned(),
                since,
            },
            Anomaly {
                subject: format!("{node}/resnet50"),
                node,
                model: Some("resnet50".to_owned()),
                baseline: "history".to_owned(),
                feature: "power_at_util".to_owned(),
                value: 410.0,
                expected: 330.0,
                score: 3.1,
                why: "GPU power 410 W at 70 % utilisation; its own history says 330 W".to_owned(),
                since: since + 60 * NANOS_PER_SEC,
            },
        ]
    }

    /// The Models screen's data at `now`.
    pub fn models(&self, now: UnixNanos, window: Duration, step: Duration) -> Vec<ModelView> {
        let specs: [(&str, &[&str]); 3] = [
            ("resnet50", &["v7", "v6"]),
            ("efficientnet-b4", &["v3"]),
            ("yolov8", &["v12", "v11"]),
        ];
        specs
            .iter()
            .enumerate()
            .map(|(mi, (name, versions))| ModelView {
                name: (*name).to_owned(),
                current_version: versions[0].to_owned(),
                versions: versions
                    .iter()
                    .enumerate()
                    .map(|(vi, v)| {
                        let key = (mi as u64) << 8 | vi as u64;
                        let share = if vi == 0 { 0.9 } else { 0.1 };
                        let load = |t| wave(key ^ 0x77, t);
                        let lat = |t, q: f64| latency_at(key, load(t)).p50.unwrap_or(0.0) * q;
                        let psi = 0.05 + 0.25 * unit(key, 11) + 0.02 * load(now);
                        ModelVersionView {
                            version: (*v).to_owned(),
                            first_seen: now
                                .saturating_sub((3 + 20 * vi as u64) * 86_400 * NANOS_PER_SEC),
                            rate_rps: Some(share * (400.0 + 1600.0 * load(now))),
                            errors_rps: Some(if mi == 2 && vi == 0 { 1.2 } else { 0.0 }),
                            latency: latency_at(key, load(now)),
                            latency_history: LatencyHistory {
                                p50: history(window, step, now, |t| lat(t, 1.0)),
                                p95: history(window, step, now, |t| lat(t, 2.1)),
                                p99: history(window, step, now, |t| lat(t, 3.4)),
                            },
                            rate_history: history(window, step, now, |t| {
                                share * (400.0 + 1600.0 * load(t))
                            }),
                            confidence: confidence(key, psi),
                            drift: Some(DriftStats {
                                test: "psi".to_owned(),
                                value: psi,
                                threshold: Some(0.2),
                                reference: "first-1h-of-version".to_owned(),
                                window: Duration::from_secs(3600),
                                history: history(window, step, now, |t| {
                                    0.05 + 0.25 * unit(key, 11) + 0.02 * load(t)
                                }),
                            }),
                            accuracy: (vi == 0).then_some(0.93 - psi * 0.3),
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// The Policies screen's rules at `now`.
    pub fn policies(&self, now: UnixNanos) -> Vec<RuleView> {
        let s = NANOS_PER_SEC;
        vec![
            RuleView {
                policy: "resnet-serving".to_owned(),
                rule: "p95-latency".to_owned(),
                kind: RuleKind::Scale,
                state: RuleState::Firing,
                inputs: vec![RuleInput {
                    name: "p95 inference.request.duration".to_owned(),
                    current: Some(0.071),
                    target: 0.050,
                    unit: Unit::Seconds,
                }],
                replicas: Some(Replicas { current: 6, desired: 9, min: 2, max: 40 }),
                next_action: NextAction::Now,
                forecast: Some(ForecastView {
                    mode: "floor".to_owned(),
                    load: Some(1480.0),
                    replicas: Some(8),
                    mape: Some(0.118),
                    naive_mape: Some(0.274),
                    scored: 212.0,
                    problem: None,
                }),
                problem: None,
                ready: None,
            },
            RuleView {
                policy: "resnet-serving".to_owned(),
                rule: "gpu-busy".to_owned(),
                kind: RuleKind::Scale,
                state: RuleState::Pending { since: now - 42 * s },
                inputs: vec![RuleInput {
                    name: "mean hw.gpu.utilization".to_owned(),
                    current: Some(0.78),
                    target: 0.70,
                    unit: Unit::Ratio,
                }],
                replicas: Some(Replicas { current: 6, desired: 7, min: 2, max: 40 }),
                next_action: NextAction::At {
                    at: now + 18 * s,
                    reason: "rate limit 4 pods/15s".to_owned(),
                },
                forecast: None,
                problem: None,
                ready: None,
            },
            RuleView {
                policy: "resnet-serving".to_owned(),
                rule: "confidence-drift".to_owned(),
                kind: RuleKind::Retrain,
                state: RuleState::Cooling { until: now + 20 * 3600 * s },
                inputs: vec![
                    RuleInput {
                        name: "psi confidence".to_owned(),
                        current: Some(0.26),
                        target: 0.2,
                        unit: Unit::Plain,
                    },
                    RuleInput {
                        name: "mean confidence".to_owned(),
                        current: Some(0.88),
                        target: 0.85,
                        unit: Unit::Ratio,
                    },
                ],
                replicas: None,
                next_action: NextAction::At {
                    at: now + 20 * 3600 * s,
                    reason: "cooldown 24h".to_owned(),
                },
                forecast: None,
                problem: None,
                ready: None,
            },
            RuleView {
                policy: "efficientnet-serving".to_owned(),
                rule: "p95-latency".to_owned(),
                kind: RuleKind::Scale,
                state: RuleState::DryRun,
                inputs: vec![RuleInput {
                    name: "p95 inference.request.duration".to_owned(),
                    current: Some(0.032),
                    target: 0.040,
                    unit: Unit::Seconds,
                }],
                replicas: Some(Replicas { current: 4, desired: 3, min: 2, max: 12 }),
                next_action: NextAction::Blocked("dry-run: decides, never acts".to_owned()),
                forecast: Some(ForecastView {
                    mode: "forecast-only".to_owned(),
                    load: None,
                    replicas: None,
                    mape: None,
                    naive_mape: None,
                    scored: 0.0,
                    problem: Some("4m of history, fewer than minHistory 30m".to_owned()),
                }),
                problem: None,
                ready: None,
            },
            RuleView {
                policy: "yolo-serving".to_owned(),
                rule: "gpu-busy".to_owned(),
                kind: RuleKind::Scale,
                state: RuleState::Ok,
                inputs: vec![RuleInput {
                    name: "mean hw.gpu.utilization".to_owned(),
                    current: None,
                    target: 0.65,
                    unit: Unit::Ratio,
                }],
                replicas: Some(Replicas { current: 3, desired: 3, min: 3, max: 10 }),
                next_action: NextAction::Blocked("missing data: hold".to_owned()),
                forecast: None,
                problem: None,
                ready: None,
            },
            RuleView {
                policy: "yolo-serving".to_owned(),
                rule: "accuracy".to_owned(),
                kind: RuleKind::Retrain,
                state: RuleState::Ok,
                inputs: vec![RuleInput {
                    name: "accuracy (feedback)".to_owned(),
                    current: Some(0.91),
                    target: 0.85,
                    unit: Unit::Ratio,
                }],
                replicas: None,
                next_action: NextAction::Blocked("budget 3/3 runs per 30d spent".to_owned()),
                forecast: None,
                problem: None,
                ready: None,
            },
        ]
    }

    /// The newest `limit` decisions at `now`, newest first; one every 30 s.
    pub fn decisions(&self, now: UnixNanos, limit: usize) -> Vec<DecisionView> {
        let s = NANOS_PER_SEC;
        let newest = now - now % (30 * s);
        (0..limit as u64)
            .map(|i| {
                let time = newest - i * 30 * s;
                let seq = time / (30 * s);
                let id = format!("d-{seq:010}");
                match seq % 4 {
                    0 => DecisionView {
                        id,
                        time,
                        policy: "resnet-serving".to_owned(),
                        rule: "p95-latency".to_owned(),
                        dry_run: false,
                        inputs: vec![
                            DecisionInput { name: "p95 latency".to_owned(), value: Some(0.071), unit: Unit::Seconds },
                            DecisionInput { name: "replicas".to_owned(), value: Some(6.0), unit: Unit::Plain },
                        ],
                        recommendation: "replicas 6 -> 9 (ceil(6 * 0.071 / 0.050))".to_owned(),
                        constraints: vec![
                            ConstraintStep { name: "tolerance".to_owned(), effect: "ratio 1.42 outside 0.1: keep 9".to_owned(), changed: false },
                            ConstraintStep { name: "stabilization".to_owned(), effect: "scale-up window 0s: keep 9".to_owned(), changed: false },
                            ConstraintStep { name: "rate limit".to_owned(), effect: "9 -> 9 (max(100%, 4 pods)/15s)".to_owned(), changed: false },
                            ConstraintStep { name: "min/max".to_owned(), effect: "within 2..40".to_owned(), changed: false },
                        ],
                        outcome: DecisionOutcome::Action("scale resnet 6 -> 9".to_owned()),
                        actuator: Some(ActuatorOutcome {
                            actuator: "kubernetes".to_owned(),
                            attempts: 1 + (seq % 3) as u32,
                            status: "applied".to_owned(),
                            failed: false,
                            remote_ids: vec![format!("infer/resnet generation {}", 40 + seq % 100)],
                        }),
                        job: None,
                    },
                    1 => DecisionView {
                        id,
                        time,
                        policy: "resnet-serving".to_owned(),
                        rule: "gpu-busy".to_owned(),
                        dry_run: false,
                        inputs: vec![DecisionInput { name: "mean gpu busy".to_owned(), value: Some(0.42), unit: Unit::Ratio }],
                        recommendation: "replicas 9 -> 6".to_owned(),
                        constraints: vec![
                            ConstraintStep { name: "tolerance".to_owned(), effect: "ratio 0.60 outside 0.1: keep 6".to_owned(), changed: false },
                            ConstraintStep { name: "stabilization".to_owned(), effect: "6 -> 9 (highest in 300s window)".to_owned(), changed: true },
                        ],
                        outcome: DecisionOutcome::NoAction("stabilization window holds 9 replicas until the load stays low for 300s".to_owned()),
                        actuator: None,
                        job: None,
                    },
                    2 => DecisionView {
                        id,
                        time,
                        policy: "resnet-serving".to_owned(),
                        rule: "confidence-drift".to_owned(),
                        dry_run: false,
                        inputs: vec![
                            DecisionInput { name: "psi".to_owned(), value: Some(0.26), unit: Unit::Plain },
                            DecisionInput { name: "mean confidence".to_owned(), value: Some(0.88), unit: Unit::Ratio },
                        ],
                        recommendation: "retrain resnet50 (psi 0.26 > 0.2 for 10m)".to_owned(),
                        constraints: vec![
                            ConstraintStep { name: "cooldown".to_owned(), effect: "last run 4h ago, cooldown 24h".to_owned(), changed: true },
                        ],
                        outcome: if seq % 8 == 2 {
                            DecisionOutcome::Action("retrain resnet50 via github-workflow".to_owned())
                        } else {
                            DecisionOutcome::NoAction("cooldown until 20h from now".to_owned())
                        },
                        actuator: (seq % 8 == 2).then(|| ActuatorOutcome {
                            actuator: "github-workflow".to_owned(),
                            attempts: 2,
                            status: "applied after 1 retry (502)".to_owned(),
                            failed: false,
                            remote_ids: vec![format!("run {}", 9_000_000 + seq % 1000)],
                        }),
                        job: (seq % 8 == 2).then(|| JobStatus {
                            id: format!("run {}", 9_000_000 + seq % 1000),
                            state: "running".to_owned(),
                            url: Some("https://github.com/acme/models/actions".to_owned()),
                        }),
                    },
                    _ => DecisionView {
                        id,
                        time,
                        policy: "efficientnet-serving".to_owned(),
                        rule: "p95-latency".to_owned(),
                        dry_run: true,
                        inputs: vec![DecisionInput { name: "p95 latency".to_owned(), value: Some(0.032), unit: Unit::Seconds }],
                        recommendation: "replicas 4 -> 3".to_owned(),
                        constraints: vec![
                            ConstraintStep { name: "tolerance".to_owned(), effect: "ratio 0.80 outside 0.1: keep 3".to_owned(), changed: false },
                            ConstraintStep { name: "min/max".to_owned(), effect: "within 2..12".to_owned(), changed: false },
                        ],
                        outcome: DecisionOutcome::NoAction("dry-run: would scale 4 -> 3".to_owned()),
                        actuator: None,
                        job: None,
                    },
                }
            })
            .collect()
    }

    /// Answer a [`Need`] at `now`, as a source would.
    pub fn answer(&self, need: &Need, now: UnixNanos) -> Result<Snapshot, SourceError> {
        Ok(match need {
            Need::Fleet => Snapshot::Fleet(self.fleet_rows(now)),
            Need::Node { node, window, step } => Snapshot::Node(
                self.node_detail(node, now, *window, *step)
                    .ok_or_else(|| SourceError::NotFound(format!("node {node}")))?,
            ),
            Need::Models { window, step } => Snapshot::Models(self.models(now, *window, *step)),
            Need::Policies => Snapshot::Policies(self.policies(now)),
            Need::Decisions { limit } => Snapshot::Decisions(self.decisions(now, *limit)),
        })
    }
}

fn latency_at(key: u64, load: f64) -> Percentiles {
    let base = 0.008 + 0.02 * unit(key, 4) + 0.03 * load * load;
    Percentiles { p50: Some(base), p95: Some(base * 2.1), p99: Some(base * 3.4) }
}

fn confidence(key: u64, psi: f64) -> ConfidenceHistogram {
    let bounds: Vec<f64> = (1..10).map(|i| f64::from(i) / 10.0).collect();
    // Mass piles up near 1.0; drift moves some of it down.
    let counts: Vec<u64> = (0..10u32)
        .map(|i| {
            let x = f64::from(i) / 9.0;
            let w = (x * 4.0).exp() * (1.0 - psi) + psi * 30.0 * (1.0 - (x - 0.5).abs());
            (w * (50.0 + 10.0 * unit(key, u64::from(i)))) as u64
        })
        .collect();
    let total: u64 = counts.iter().sum();
    let mean = (total > 0).then(|| {
        counts.iter().enumerate().map(|(i, c)| (i as f64 + 0.5) / 10.0 * *c as f64).sum::<f64>()
            / total as f64
    });
    ConfidenceHistogram { bounds, counts, mean }
}

/// What a [`FakeSource`] was asked, for tests and the benchmark.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    /// Every need asked, in order.
    pub needs: Vec<Need>,
    /// History points returned in total (the cost the dashboard puts on the API).
    pub points: u64,
    /// Times the cluster view was asked.
    pub cluster_asks: u32,
}

/// What a [`FakeSource`] answers when asked its cluster view: the view (`None`, as a collector
/// from before clustering), or an error message.
pub type ClusterAnswer = Result<Option<ClusterStatus>, String>;

/// A [`Source`] over a [`FakeFleet`], optionally failing on purpose.
#[derive(Debug, Clone)]
pub struct FakeSource {
    fleet: FakeFleet,
    clock: Clock,
    log: Arc<Mutex<RequestLog>>,
    fail: Arc<Mutex<Option<String>>>,
    cluster: Arc<Mutex<ClusterAnswer>>,
    delay: Duration,
}

impl FakeSource {
    /// Serve `fleet`, with timestamps from `clock`.
    pub fn new(fleet: FakeFleet, clock: Clock) -> FakeSource {
        FakeSource {
            fleet,
            clock,
            log: Arc::default(),
            fail: Arc::default(),
            cluster: Arc::new(Mutex::new(Ok(None))),
            delay: Duration::ZERO,
        }
    }

    /// Answer only after `delay` (tokio time), like a slow collector.
    pub fn with_delay(mut self, delay: Duration) -> FakeSource {
        self.delay = delay;
        self
    }

    /// A handle on what this source (and its clones) was asked.
    pub fn log(&self) -> Arc<Mutex<RequestLog>> {
        Arc::clone(&self.log)
    }

    /// A switch: set `Some(message)` to fail every fetch as unreachable, `None` to recover.
    pub fn failure_switch(&self) -> Arc<Mutex<Option<String>>> {
        Arc::clone(&self.fail)
    }

    /// What the cluster view is answered with (at first `Ok(None)`: no cluster to tell of).
    /// An `Err` fails only that ask, as a collector whose other routes work.
    pub fn cluster_switch(&self) -> Arc<Mutex<ClusterAnswer>> {
        Arc::clone(&self.cluster)
    }
}

fn points(s: &Snapshot) -> u64 {
    let n = |s: &Series| s.points.len() as u64;
    match s {
        Snapshot::Fleet(_) | Snapshot::Policies(_) | Snapshot::Decisions(_) => 0,
        Snapshot::Node(d) => {
            n(&d.cpu_history)
                + d.gpus
                    .iter()
                    .map(|g| n(&g.util_history) + n(&g.mem_history) + n(&g.power_history))
                    .sum::<u64>()
        }
        Snapshot::Models(ms) => ms
            .iter()
            .flat_map(|m| &m.versions)
            .map(|v| {
                n(&v.latency_history.p50)
                    + n(&v.latency_history.p95)
                    + n(&v.latency_history.p99)
                    + n(&v.rate_history)
                    + v.drift.as_ref().map_or(0, |d| n(&d.history))
            })
            .sum(),
    }
}

impl Source for FakeSource {
    async fn fetch(&mut self, need: &Need) -> Result<Snapshot, SourceError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Ok(mut log) = self.log.lock() {
            log.needs.push(need.clone());
        }
        if let Some(msg) = self.fail.lock().ok().and_then(|f| f.clone()) {
            return Err(SourceError::Unreachable(msg));
        }
        let snapshot = self.fleet.answer(need, self.clock.now())?;
        if let Ok(mut log) = self.log.lock() {
            log.points += points(&snapshot);
        }
        Ok(snapshot)
    }

    async fn cluster(&mut self) -> Result<Option<ClusterStatus>, SourceError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if let Ok(mut log) = self.log.lock() {
            log.cluster_asks += 1;
        }
        if let Some(msg) = self.fail.lock().ok().and_then(|f| f.clone()) {
            return Err(SourceError::Unreachable(msg));
        }
        match self.cluster.lock() {
            Ok(answer) => answer.clone().map_err(SourceError::Unreachable),
            Err(_) => Err(SourceError::Unreachable("cluster switch poisoned".to_owned())),
        }
    }
}
