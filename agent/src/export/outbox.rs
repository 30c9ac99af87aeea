//! The bounded, drop-oldest queue between producers and the exporter.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use tokio::sync::Notify;

/// A cloneable handle to the queue of metric batches waiting for export.
///
/// `push` never blocks and never fails: a full queue drops its oldest batch, because the
/// newest data is what policies act on. Drops are counted in data points so they can be
/// exported as the agent's own telemetry.
#[derive(Clone, Debug)]
pub struct Outbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Mutex<VecDeque<ResourceMetrics>>,
    capacity: usize,
    ready: Notify,
    pushed_points: AtomicU64,
    dropped_points: AtomicU64,
}

/// Counters describing the outbox since the agent started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Batches waiting now.
    pub queued_batches: usize,
    /// Data points accepted by `push`.
    pub pushed_points: u64,
    /// Data points dropped because the queue was full.
    pub dropped_points: u64,
}

impl Outbox {
    /// An outbox holding at most `capacity` batches (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
                capacity,
                ready: Notify::new(),
                pushed_points: AtomicU64::new(0),
                dropped_points: AtomicU64::new(0),
            }),
        }
    }

    /// Queue one batch; if the queue is full, drop the oldest batch first.
    pub fn push(&self, batch: ResourceMetrics) {
        let points = count_points(&batch);
        self.inner.pushed_points.fetch_add(points, Ordering::Relaxed);
        let mut queue = self.lock();
        while queue.len() >= self.inner.capacity {
            if let Some(old) = queue.pop_front() {
                self.inner.dropped_points.fetch_add(count_points(&old), Ordering::Relaxed);
            }
        }
        queue.push_back(batch);
        drop(queue);
        self.inner.ready.notify_one();
    }

    /// Take up to `max` batches, oldest first, without waiting.
    pub fn drain(&self, max: usize) -> Vec<ResourceMetrics> {
        let mut queue = self.lock();
        let n = queue.len().min(max);
        queue.drain(..n).collect()
    }

    /// Put batches back at the front after a failed export, keeping their order. Batches that
    /// no longer fit are dropped (oldest first) and counted.
    pub fn requeue(&self, batches: Vec<ResourceMetrics>) {
        let mut queue = self.lock();
        for batch in batches.into_iter().rev() {
            if queue.len() >= self.inner.capacity {
                self.inner.dropped_points.fetch_add(count_points(&batch), Ordering::Relaxed);
                continue;
            }
            queue.push_front(batch);
        }
    }

    /// Wait until something has been pushed since the last wake-up.
    pub async fn ready(&self) {
        if !self.lock().is_empty() {
            return;
        }
        self.inner.ready.notified().await;
    }

    /// Current counters.
    pub fn stats(&self) -> OutboxStats {
        OutboxStats {
            queued_batches: self.lock().len(),
            pushed_points: self.inner.pushed_points.load(Ordering::Relaxed),
            dropped_points: self.inner.dropped_points.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<ResourceMetrics>> {
        // A producer that panicked mid-push leaves a consistent queue; keep serving it.
        self.inner.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Number of data points in a batch, the unit that drops are counted in.
pub fn count_points(batch: &ResourceMetrics) -> u64 {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    batch
        .scope_metrics
        .iter()
        .flat_map(|scope| scope.metrics.iter())
        .map(|metric| match &metric.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        } as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ScopeMetrics, metric::Data,
    };

    fn batch(points: usize, tag: f64) -> ResourceMetrics {
        let data_points = (0..points)
            .map(|_| NumberDataPoint {
                value: Some(
                    opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(
                        tag,
                    ),
                ),
                ..Default::default()
            })
            .collect();
        ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "m".into(),
                    data: Some(Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn tag(batch: &ResourceMetrics) -> f64 {
        use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
        match &batch.scope_metrics[0].metrics[0].data {
            Some(Data::Gauge(g)) => match g.data_points[0].value {
                Some(Value::AsDouble(v)) => v,
                _ => f64::NAN,
            },
            _ => f64::NAN,
        }
    }

    #[test]
    fn full_queue_drops_oldest_and_counts_points() {
        let outbox = Outbox::new(2);
        outbox.push(batch(3, 1.0));
        outbox.push(batch(2, 2.0));
        outbox.push(batch(1, 3.0));
        let stats = outbox.stats();
        assert_eq!(stats.queued_batches, 2);
        assert_eq!(stats.pushed_points, 6);
        assert_eq!(stats.dropped_points, 3);
        let left: Vec<f64> = outbox.drain(10).iter().map(tag).collect();
        assert_eq!(left, vec![2.0, 3.0]);
    }

    #[test]
    fn requeue_keeps_order_and_drops_what_no_longer_fits() {
        let outbox = Outbox::new(3);
        outbox.push(batch(1, 1.0));
        outbox.push(batch(1, 2.0));
        let taken = outbox.drain(2);
        outbox.push(batch(1, 3.0));
        outbox.push(batch(1, 4.0));
        outbox.requeue(taken);
        let left: Vec<f64> = outbox.drain(10).iter().map(tag).collect();
        assert_eq!(left, vec![2.0, 3.0, 4.0]);
        assert_eq!(outbox.stats().dropped_points, 1);
    }
}
