//! The simulated service a replay runs its contenders against, and the oracle's size.

use serde::Serialize;

use crate::format::CapacitySpec;

/// Capacity model in plain numbers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Capacity {
    /// Requests/s per ready replica.
    pub throughput: f64,
    /// Seconds per request on an idle replica.
    pub service_time: f64,
    /// Seconds before a new replica serves.
    pub warmup: f64,
}

impl From<&CapacitySpec> for Capacity {
    fn from(c: &CapacitySpec) -> Self {
        Self {
            throughput: c.per_replica_throughput,
            service_time: c.service_time.get().as_secs_f64(),
            warmup: c.warmup.get().as_secs_f64(),
        }
    }
}

/// The simulated service of one contender.
#[derive(Clone, Debug)]
pub(super) struct Service {
    pub(super) cap: Capacity,
    /// Ready-at times (seconds since trace start) of provisioned replicas.
    pub(super) replicas: Vec<f64>,
    pub(super) backlog: f64,
    pub(super) served_total: f64,
}

impl Service {
    pub(super) fn new(cap: Capacity, size: u32) -> Self {
        Self { cap, replicas: vec![0.0; size as usize], backlog: 0.0, served_total: 0.0 }
    }

    pub(super) fn size(&self) -> u32 {
        self.replicas.len() as u32
    }

    pub(super) fn ready(&self, t: f64) -> usize {
        self.replicas.iter().filter(|r| **r <= t).count()
    }

    pub(super) fn resize(&mut self, to: u32, t: f64) {
        let to = to as usize;
        if to > self.replicas.len() {
            let ready_at = t + self.cap.warmup;
            self.replicas.resize(to, ready_at);
        } else {
            // Remove the youngest (possibly still warming) first.
            self.replicas.sort_by(f64::total_cmp);
            self.replicas.truncate(to);
        }
    }

    /// Advances one step; returns [p95, queue, util, served counter, ready, load].
    pub(super) fn step(&mut self, load: f64, t: f64, dt: f64) -> [f64; 6] {
        let ready = self.ready(t);
        let c = ready as f64 * self.cap.throughput;
        let arriving = load * dt + self.backlog;
        let served = arriving.min(c * dt);
        self.backlog = arriving - served;
        self.served_total += served;
        let util = if c > 0.0 { (served / (c * dt)).min(1.0) } else { 1.0 };
        let (p95, queue) = if c > 0.0 {
            let rho = (load / c).min(0.99);
            let wait = self.backlog / c;
            let tail = (20f64).ln() * rho / (self.cap.throughput * (1.0 - rho));
            ((self.cap.service_time + wait + tail).min(60.0), (wait + tail).min(60.0))
        } else {
            (60.0, 60.0)
        };
        [p95, queue, util, self.served_total, ready as f64, load]
    }
}

/// The oracle's size for a step with `load` requests/s: the fewest replicas in
/// `max(min, 1)..=max` whose modelled p95 without backlog, `serviceTime + ln(20)·ρ/(μ·(1−ρ))`
/// with ρ = load / (n·μ), is at most `objective`; `max` when none is (an objective at or
/// below the service time). It knows each step's load as the step starts and its replicas
/// serve at once (no warm-up), so it never queues and never violates the SLO within the
/// bounds: a floor no realisable policy reaches, against which replica-hours are compared.
pub fn oracle_size(cap: &Capacity, load: f64, objective: f64, min: u32, max: u32) -> u32 {
    let hi = max.max(min);
    let lo = min.max(1).min(hi);
    let mu = cap.throughput;
    let slack = objective - cap.service_time;
    if slack.is_nan() || slack <= 0.0 || mu.is_nan() || mu <= 0.0 {
        return hi;
    }
    let p95 = |n: u32| {
        let rho = (load / (f64::from(n) * mu)).min(0.99);
        cap.service_time + (20f64).ln() * rho / (mu * (1.0 - rho))
    };
    // The tail bound solved for ρ, then checked against the model itself (rounding).
    let x = slack * mu / (20f64).ln();
    let rho = (x / (1.0 + x)).min(0.99);
    let mut n = ceil_ratio(load, mu * rho).clamp(lo, hi);
    while n > lo && p95(n - 1) <= objective {
        n -= 1;
    }
    while n < hi && p95(n) > objective {
        n += 1;
    }
    n
}

fn ceil_ratio(a: f64, b: f64) -> u32 {
    let x = a / b;
    if !x.is_finite() || x <= 0.0 {
        0
    } else if x >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        (x - 1e-9).ceil().max(0.0) as u32
    }
}
