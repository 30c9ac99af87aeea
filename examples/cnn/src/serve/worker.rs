//! The replica's capacity model: one worker serves requests one at a time from a bounded
//! queue, and each request occupies it for at least the service time (the forward pass, then
//! a padding sleep). So one replica serves at most `1 / service_time` requests per second
//! (25/s at the default 40 ms) whatever the CPU, and adding replicas adds capacity even on a
//! two-core machine. A full queue turns requests away at once (503).

use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::CnnError;
use crate::serve::reload::{LoadedModel, ModelSlot};

/// One request waiting to be served.
#[derive(Debug)]
pub struct Job {
    /// `n × 784` pixels.
    pub pixels: Vec<f32>,
    /// Number of images.
    pub n: usize,
    /// When it entered the queue.
    pub enqueued: Instant,
    /// Where the answer goes.
    pub reply: oneshot::Sender<JobResult>,
}

/// The worker's answer to one job.
#[derive(Debug)]
pub struct JobResult {
    /// Probability rows, or why the model failed.
    pub probabilities: Result<Vec<Vec<f32>>, String>,
    /// The model that served it (`None` if none was loaded).
    pub model: Option<Arc<LoadedModel>>,
    /// Time spent queued.
    pub queue: Duration,
    /// Time of the forward pass.
    pub compute: Duration,
}

/// The sending side of the bounded queue.
#[derive(Debug, Clone)]
pub struct JobQueue {
    tx: mpsc::Sender<Job>,
}

impl JobQueue {
    /// Enqueues without waiting; gives the job back when the queue is full or closed.
    pub fn try_enqueue(&self, job: Job) -> Result<(), Box<Job>> {
        self.tx.try_send(job).map_err(|e| Box::new(e.into_inner()))
    }
}

/// Starts the worker: a queue of `capacity` requests served one at a time, each taking at
/// least `service_time`. It stops when `shutdown` fires, after the job in hand.
pub fn spawn_worker(
    capacity: usize,
    service_time: Duration,
    model: ModelSlot,
    shutdown: CancellationToken,
) -> (JobQueue, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Job>(capacity.max(1));
    let handle = tokio::spawn(async move {
        loop {
            let job = tokio::select! {
                _ = shutdown.cancelled() => return,
                job = rx.recv() => match job { Some(job) => job, None => return },
            };
            let started = Instant::now();
            let queue = started.saturating_duration_since(job.enqueued);
            let current = model.borrow().clone();
            let (probabilities, compute) = match current.clone() {
                Some(loaded) => {
                    let (pixels, n) = (job.pixels, job.n);
                    let run = tokio::task::spawn_blocking(move || {
                        loaded
                            .model
                            .probabilities(&pixels, n, &Device::Cpu)
                            .map_err(|e: CnnError| e.to_string())
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("inference task failed: {e}")));
                    (run, started.elapsed())
                }
                None => (Err("no model loaded".to_string()), Duration::ZERO),
            };
            // Padding: the replica stays busy for the whole service time.
            tokio::time::sleep_until(started + service_time).await;
            let _ = job.reply.send(JobResult { probabilities, model: current, queue, compute });
        }
    });
    (JobQueue { tx }, handle)
}
