//! The baselines a replay compares against: the Kubernetes HPA and the Knative KPA, each as
//! its controller computes a size.

use std::collections::BTreeMap;

use crate::engine;
use crate::signal::{NANOS, Selector, SignalQuery, SignalSource, Stat, nanos};
use std::time::Duration;

use crate::format::ScaleSpec;

/// The Kubernetes HPA (v2, `behavior` defaults) on the scaling policy's metrics.
pub struct Hpa {
    metrics: Vec<crate::format::TrackedMetric>,
    min: u32,
    max: u32,
    recs: Vec<(u64, u32)>,
    events: Vec<(u64, i64)>,
}

/// HPA's sync period.
pub const HPA_SYNC: Duration = Duration::from_secs(15);
/// metrics-server resolution: HPA sees metrics this old.
pub const HPA_METRICS_LAG: Duration = Duration::from_secs(15);

impl Hpa {
    /// An HPA for `scale`'s metrics within `min..=max`.
    pub fn new(scale: &ScaleSpec, min: u32, max: u32) -> Self {
        Self { metrics: scale.metrics.clone(), min, max, recs: Vec::new(), events: Vec::new() }
    }

    /// One sync: the new desired size (HPA's `computeReplicasForMetrics` then
    /// `normalizeDesiredReplicasWithBehaviors`).
    pub fn sync(&mut self, src: &dyn SignalSource, current: u32, now: u64) -> u32 {
        let seen = now.saturating_sub(nanos(HPA_METRICS_LAG));
        let mut rec: Option<u32> = None;
        for m in &self.metrics {
            let Ok(q) = engine::query(&m.signal) else { continue };
            let Some(v) = src.read(&q, seen).ok().flatten() else { continue };
            let ratio = match (m.target.value, m.target.average_value) {
                (Some(t), _) => v / t,
                (_, Some(t)) => v / (t * f64::from(current.max(1))),
                _ => continue,
            };
            let r = if (ratio - 1.0).abs() <= 0.1 {
                current
            } else {
                (f64::from(current.max(1)) * ratio - 1e-9).ceil().max(0.0) as u32
            };
            rec = Some(rec.map_or(r, |x| x.max(r)));
        }
        // No metric readable: HPA keeps the current size.
        let Some(rec) = rec else { return current };
        // Stabilization: up window 0 s, down window 300 s.
        self.recs.push((now, rec));
        let down_cut = now.saturating_sub(300 * NANOS);
        self.recs.retain(|(t, _)| *t > down_cut);
        let down_rec = self.recs.iter().map(|r| r.1).max().unwrap_or(rec);
        let mut desired = current;
        if desired < rec {
            desired = rec;
        }
        if desired > down_rec {
            desired = down_rec;
        }
        // Rate: up max(100 %, 4 pods)/15 s; down 100 %/15 s.
        let cut = now.saturating_sub(15 * NANOS);
        self.events.retain(|(t, _)| *t > cut);
        if desired > current {
            let added: i64 = self.events.iter().filter(|e| e.1 > 0).map(|e| e.1).sum();
            let start = (i64::from(current) - added).max(0) as f64;
            let limit = (start * 2.0).max(start + 4.0) as u32;
            desired = desired.min(limit.max(current));
        } else if desired < current {
            let removed: i64 = self.events.iter().filter(|e| e.1 < 0).map(|e| -e.1).sum();
            let start = i64::from(current) + removed;
            let limit = (start as f64 * 0.0) as u32;
            desired = desired.max(limit);
        }
        desired = desired.clamp(self.min, self.max);
        if desired != current {
            self.events.push((now, i64::from(desired) - i64::from(current)));
        }
        desired
    }
}

/// Knative's KPA in RPS mode.
pub struct Kpa {
    target: f64,
    min: u32,
    max: u32,
    panic_since: Option<u64>,
    max_panic: u32,
}

/// KPA's tick.
pub const KPA_TICK: Duration = Duration::from_secs(2);

impl Kpa {
    /// A KPA with `target` requests/s per replica.
    pub fn new(target: f64, min: u32, max: u32) -> Self {
        Self { target, min, max, panic_since: None, max_panic: 0 }
    }

    /// One tick (Knative `autoscaler.Scale`); `ready` is the ready replica count.
    pub fn tick(&mut self, src: &dyn SignalSource, ready: u32, now: u64) -> u32 {
        let sel = Selector { metric: "offered_load".into(), matchers: BTreeMap::new() };
        let read = |w: u64| {
            src.read(
                &SignalQuery {
                    selector: sel.clone(),
                    stat: Stat::Mean,
                    window: Duration::from_secs(w),
                },
                now,
            )
            .ok()
            .flatten()
        };
        let (Some(stable), Some(panic)) = (read(60), read(6)) else { return ready.max(self.min) };
        let ready_f = f64::from(ready.max(1));
        let max_up = (1000.0 * ready_f).ceil();
        let max_down = (ready_f / 2.0).floor();
        let dspc = (stable / self.target).ceil();
        let dppc = (panic / self.target).ceil();
        let desired_stable = dspc.max(max_down).min(max_up) as u32;
        let desired_panic = dppc.max(max_down).min(max_up) as u32;
        let over = dppc / ready_f >= 2.0;
        match (self.panic_since, over) {
            (None, true) => {
                self.panic_since = Some(now);
                self.max_panic = ready;
            }
            (Some(_), true) => self.panic_since = Some(now),
            (Some(since), false) if now > since + 60 * NANOS => {
                self.panic_since = None;
                self.max_panic = 0;
            }
            _ => {}
        }
        let mut desired = desired_stable;
        if self.panic_since.is_some() {
            if desired_panic > self.max_panic {
                self.max_panic = desired_panic;
            }
            desired = self.max_panic;
        }
        desired.clamp(self.min, self.max)
    }
}
