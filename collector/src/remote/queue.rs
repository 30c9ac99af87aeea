//! The durable, sharded remote-write queue.
//!
//! [`RemoteWriter::push`] encodes a request's series ([`super::encode`]), one snappy-compressed
//! `WriteRequest` per shard, and returns once they are committed to `remote-queue.redb`: the
//! committer thread writes whatever arrived since its last commit in one transaction, so
//! concurrent requests share one fsync. Only then is the OTLP request acknowledged, so a
//! collector restart loses nothing it acknowledged; on start the queue is read back and sent.
//!
//! One sender per shard sends its entries in order (a series always maps to one shard, so its
//! samples arrive in time order), several queued entries in one request up to
//! `max_samples_per_send` (protobuf messages concatenate). A 2xx removes them; a 5xx, a 429 or
//! a connection error is retried with doubling backoff and never dropped; any other 4xx means
//! the remote will never take them, so they are dropped and counted. When the queue holds
//! `max_queue_bytes`, [`RemoteWriter::push`] refuses with [`Full`] before touching anything and
//! ingest answers 503 / UNAVAILABLE.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use parking_lot::{Condvar, Mutex};
use prost::Message as _;
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::RemoteConfig;
use super::encode::{self, DeltaTotals};
use super::wire::WriteRequest;
use crate::telemetry::{Durations, counter, gauge};

/// `(shard, sequence)` → snappy-compressed `WriteRequest`.
const QUEUE: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("remote_write_queue");

/// Upper bounds (seconds) of the send-latency histogram on `/metrics`.
const LATENCY_BOUNDS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The queue is at its byte limit: answer 503 / UNAVAILABLE so the sender retries later.
#[derive(Debug, Clone, thiserror::Error)]
#[error("remote store send queue full ({bytes} of {limit} bytes waiting for {url}); retry")]
pub struct Full {
    /// Bytes queued.
    pub bytes: u64,
    /// The limit.
    pub limit: u64,
    /// Where they wait to go.
    pub url: String,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    payload: Vec<u8>,
    samples: u64,
}

/// Counters for `/metrics`.
#[derive(Debug)]
struct Stats {
    bytes: AtomicU64,
    entries: AtomicU64,
    samples_queued: AtomicU64,
    samples_sent: AtomicU64,
    dropped_rejected: AtomicU64,
    retries: AtomicU64,
    send_failures: AtomicU64,
    send_durations: Durations,
    commit_failures: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            samples_queued: AtomicU64::new(0),
            samples_sent: AtomicU64::new(0),
            dropped_rejected: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
            send_durations: Durations::new(&LATENCY_BOUNDS),
            commit_failures: AtomicU64::new(0),
        }
    }
}

/// What the committer has to do.
#[derive(Debug, Default)]
struct Pending {
    writes: Vec<(u32, Entry)>,
    deletes: Vec<(u32, u64)>,
    /// The highest sequence handed in so far.
    handed: u64,
    /// The highest sequence committed (or failed to commit: see `failed_upto`).
    committed: u64,
    /// The highest sequence whose commit failed: those pushes answer "retry".
    failed_upto: u64,
    /// The committer has stopped: nothing more is committed.
    closed: bool,
}

struct Shared {
    config: RemoteConfig,
    db: Option<redb::Database>,
    shards: Vec<Mutex<VecDeque<Entry>>>,
    wake: Vec<Notify>,
    pending: Mutex<Pending>,
    commit_wanted: Condvar,
    committed: Condvar,
    next_seq: AtomicU64,
    stats: Stats,
    totals: Mutex<DeltaTotals>,
    /// Fires when the collector stops or the writer is dropped: the committer and the senders
    /// end (what is queued stays on disk).
    stop: CancellationToken,
}

/// The remote-write side of the collector. Cheap to share as `Arc`.
pub struct RemoteWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RemoteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWriter")
            .field("write_url", &self.shared.config.write_url)
            .field("queued_bytes", &self.shared.stats.bytes.load(Ordering::Relaxed))
            .finish()
    }
}

impl RemoteWriter {
    /// Opens the queue (`<data_dir>/remote-queue.redb`; in memory without a data directory),
    /// reads back what an earlier run left in it and starts the committer and the senders on
    /// `tracker`; they stop when `cancel` fires (the queue stays on disk).
    pub fn start(
        config: RemoteConfig,
        bearer: Option<String>,
        data_dir: Option<&Path>,
        cancel: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Self>, String> {
        let url = config.write_url.clone().ok_or("store.remote.write_url is not set")?;
        let client = config.http_client()?;
        let headers = config.headers(bearer.as_deref())?;
        let nshards = config.shards.max(1);
        let mut shards: Vec<VecDeque<Entry>> = (0..nshards).map(|_| VecDeque::new()).collect();
        let stats = Stats::default();
        let mut max_seq = 0u64;
        let db = match data_dir {
            None => None,
            Some(dir) => {
                let path = dir.join("remote-queue.redb");
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("create {}: {e}", dir.display()))?;
                let db = crate::dbfile::open(&path, &mut redb::Builder::new())
                    .map_err(|e| e.to_string())?;
                let read = |db: &redb::Database| -> Result<(), redb::Error> {
                    let tx = db.begin_write()?;
                    tx.open_table(QUEUE)?;
                    tx.commit()?;
                    let rx = db.begin_read()?;
                    let table = rx.open_table(QUEUE)?;
                    for row in table.iter()? {
                        let (k, v) = row?;
                        let (shard, seq) = k.value();
                        let payload = v.value().to_vec();
                        let samples = samples_in(&payload);
                        stats.bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
                        stats.entries.fetch_add(1, Ordering::Relaxed);
                        max_seq = max_seq.max(seq);
                        // Kept under its stored shard key; a changed shard count only moves
                        // which sender sends it.
                        shards[shard as usize % nshards].push_back(Entry { seq, payload, samples });
                    }
                    Ok(())
                };
                let mut read = read;
                read(&db).map_err(|e| format!("read {}: {e}", path.display()))?;
                Some(db)
            }
        };
        for s in &mut shards {
            s.make_contiguous().sort_by_key(|e| e.seq);
        }
        let recovered = stats.entries.load(Ordering::Relaxed);
        if recovered > 0 {
            tracing::info!(
                entries = recovered,
                bytes = stats.bytes.load(Ordering::Relaxed),
                "Remote-write queue recovered from the last run; sending it."
            );
        }
        let shared = Arc::new(Shared {
            config,
            db,
            shards: shards.into_iter().map(Mutex::new).collect(),
            wake: (0..nshards).map(|_| Notify::new()).collect(),
            pending: Mutex::new(Pending {
                handed: max_seq,
                committed: max_seq,
                ..Default::default()
            }),
            commit_wanted: Condvar::new(),
            committed: Condvar::new(),
            next_seq: AtomicU64::new(max_seq + 1),
            stats,
            totals: Mutex::new(DeltaTotals::default()),
            stop: cancel.child_token(),
        });
        if shared.db.is_some() {
            let s = shared.clone();
            tracker.spawn_blocking(move || committer(&s));
        }
        for shard in 0..nshards {
            let sender = Sender {
                shared: shared.clone(),
                shard,
                client: client.clone(),
                headers: headers.clone(),
                url: url.clone(),
            };
            tracker.spawn(sender.run(shared.stop.clone()));
        }
        let s = shared.clone();
        tracker.spawn(async move {
            s.stop.cancelled().await;
            s.commit_wanted.notify_all();
        });
        Ok(Arc::new(Self { shared }))
    }

    /// Queues the series of `req` (points outside `window`, Unix nanos, left out) and returns
    /// once they are durable. Blocks: call it off the async reactor.
    pub fn push(
        &self,
        req: &ExportMetricsServiceRequest,
        window: (u64, u64),
    ) -> Result<u64, PushError> {
        let sh = &self.shared;
        let bytes = sh.stats.bytes.load(Ordering::Relaxed);
        if bytes >= sh.config.max_queue_bytes {
            return Err(PushError::Full(Full {
                bytes,
                limit: sh.config.max_queue_bytes,
                url: sh.config.write_url.clone().unwrap_or_default(),
            }));
        }
        let encoded = {
            let mut totals = sh.totals.lock();
            encode::encode(req, sh.shards.len(), window, &mut totals)
        };
        let samples = encoded.samples;
        let mut entries = Vec::new();
        for (shard, series) in encoded.shards.into_iter().enumerate() {
            if series.is_empty() {
                continue;
            }
            let n: u64 = series.iter().map(|s| s.samples.len() as u64).sum();
            let raw = WriteRequest { timeseries: series }.encode_to_vec();
            let payload = snap::raw::Encoder::new()
                .compress_vec(&raw)
                .map_err(|e| PushError::Failed(format!("snappy: {e}")))?;
            let seq = sh.next_seq.fetch_add(1, Ordering::SeqCst);
            entries.push((shard as u32, Entry { seq, payload, samples: n }));
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let added: u64 = entries.iter().map(|(_, e)| e.payload.len() as u64).sum();
        sh.stats.bytes.fetch_add(added, Ordering::Relaxed);
        sh.stats.entries.fetch_add(entries.len() as u64, Ordering::Relaxed);
        sh.stats.samples_queued.fetch_add(samples, Ordering::Relaxed);
        if sh.db.is_none() {
            for (shard, e) in entries {
                sh.shards[shard as usize].lock().push_back(e);
                sh.wake[shard as usize].notify_one();
            }
            return Ok(samples);
        }
        let top = entries.iter().map(|(_, e)| e.seq).max().unwrap_or(0);
        let mut p = sh.pending.lock();
        if p.closed {
            drop(p);
            let back: u64 = entries.iter().map(|(_, e)| e.payload.len() as u64).sum();
            sh.stats.bytes.fetch_sub(back, Ordering::Relaxed);
            sh.stats.entries.fetch_sub(entries.len() as u64, Ordering::Relaxed);
            return Err(PushError::Failed("the collector is stopping".into()));
        }
        p.handed = p.handed.max(top);
        p.writes.extend(entries);
        sh.commit_wanted.notify_one();
        while p.committed < top && !p.closed {
            sh.committed.wait_for(&mut p, Duration::from_millis(200));
        }
        if p.failed_upto >= top || p.committed < top {
            return Err(PushError::Failed("the remote-write queue could not be saved".into()));
        }
        Ok(samples)
    }

    /// Bytes waiting to be sent.
    pub fn queued_bytes(&self) -> u64 {
        self.shared.stats.bytes.load(Ordering::Relaxed)
    }

    /// Samples the remote accepted so far.
    pub fn samples_sent(&self) -> u64 {
        self.shared.stats.samples_sent.load(Ordering::Relaxed)
    }

    /// The queue's figures in Prometheus text format, for `/metrics`.
    pub fn metrics_text(&self) -> String {
        let s = &self.shared.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        type Write = fn(&mut String, &str, &str, &[(&str, u64)]);
        let rows: [(Write, &str, &str, u64); 9] = [
            (
                gauge,
                "stoker_remote_write_queue_bytes",
                "Snappy-compressed bytes waiting to be remote-written.",
                l(&s.bytes),
            ),
            (
                gauge,
                "stoker_remote_write_queue_requests",
                "Queued remote-write requests (one per shard and ingest request).",
                l(&s.entries),
            ),
            (
                gauge,
                "stoker_remote_write_queue_limit_bytes",
                "Queue bytes at which ingest answers 503 / UNAVAILABLE.",
                self.shared.config.max_queue_bytes,
            ),
            (
                counter,
                "stoker_remote_write_samples_queued_total",
                "Samples queued for remote-write.",
                l(&s.samples_queued),
            ),
            (
                counter,
                "stoker_remote_write_samples_sent_total",
                "Samples the remote store accepted.",
                l(&s.samples_sent),
            ),
            (
                counter,
                "stoker_remote_write_samples_dropped_total",
                "Samples dropped because the remote store refused them with a 4xx other than 429.",
                l(&s.dropped_rejected),
            ),
            (
                counter,
                "stoker_remote_write_retries_total",
                "Remote-write requests retried after a 5xx, a 429 or a connection error.",
                l(&s.retries),
            ),
            (
                counter,
                "stoker_remote_write_failures_total",
                "Remote-write attempts that failed (retried or dropped).",
                l(&s.send_failures),
            ),
            (
                counter,
                "stoker_remote_write_queue_commit_failures_total",
                "Commits of the queue file that failed (those requests were answered retry).",
                l(&s.commit_failures),
            ),
        ];
        for (write, name, help, value) in rows {
            write(&mut out, name, help, &[("", value)]);
        }
        s.send_durations.render(
            &mut out,
            "stoker_remote_write_send_duration_seconds",
            "Time of one successful remote-write request.",
        );
        out
    }
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        self.shared.commit_wanted.notify_all();
    }
}

/// Why a push did not queue anything durable.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The queue is at its byte limit.
    #[error(transparent)]
    Full(#[from] Full),
    /// The queue file could not be written.
    #[error("{0}; retry")]
    Failed(String),
}

/// Samples in a stored payload (for the counters of a queue read back at start).
fn samples_in(payload: &[u8]) -> u64 {
    snap::raw::Decoder::new()
        .decompress_vec(payload)
        .ok()
        .and_then(|raw| WriteRequest::decode(raw.as_slice()).ok())
        .map(|w| w.timeseries.iter().map(|t| t.samples.len() as u64).sum())
        .unwrap_or(0)
}

/// Commits queued writes and sent deletes, each batch in one transaction.
fn committer(sh: &Shared) {
    let Some(db) = &sh.db else { return };
    loop {
        let (writes, deletes, top) = {
            let mut p = sh.pending.lock();
            while p.writes.is_empty() && p.deletes.is_empty() && !sh.stop.is_cancelled() {
                sh.commit_wanted.wait_for(&mut p, Duration::from_millis(500));
            }
            if p.writes.is_empty() && p.deletes.is_empty() {
                // Stopping with nothing left.
                p.closed = true;
                sh.committed.notify_all();
                return;
            }
            (std::mem::take(&mut p.writes), std::mem::take(&mut p.deletes), p.handed)
        };
        let result = (|| -> Result<(), redb::Error> {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(QUEUE)?;
                for (shard, e) in &writes {
                    t.insert((*shard, e.seq), e.payload.as_slice())?;
                }
                for k in &deletes {
                    t.remove(*k)?;
                }
            }
            tx.commit()?;
            Ok(())
        })();
        let ok = result.is_ok();
        if let Err(e) = result {
            sh.stats.commit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "Remote-write queue commit failed; those ingest requests are answered retry.");
        }
        if ok {
            for (shard, e) in writes {
                let s = shard as usize;
                sh.shards[s].lock().push_back(e);
                sh.wake[s].notify_one();
            }
        } else {
            let dropped: u64 = writes.iter().map(|(_, e)| e.payload.len() as u64).sum();
            sh.stats.bytes.fetch_sub(dropped, Ordering::Relaxed);
            sh.stats.entries.fetch_sub(writes.len() as u64, Ordering::Relaxed);
            // Deletes are retried with the next commit.
            sh.pending.lock().deletes.extend(deletes);
        }
        let mut p = sh.pending.lock();
        if !ok {
            p.failed_upto = p.failed_upto.max(top);
        }
        p.committed = p.committed.max(top);
        sh.committed.notify_all();
    }
}

struct Sender {
    shared: Arc<Shared>,
    shard: usize,
    client: reqwest::Client,
    headers: reqwest::header::HeaderMap,
    url: String,
}

/// How one send ended.
enum Outcome {
    Sent,
    Rejected(String),
    Retry(String, Option<Duration>),
}

impl Sender {
    async fn run(self, cancel: CancellationToken) {
        let sh = self.shared.clone();
        let mut backoff = sh.config.min_backoff.get();
        loop {
            // The next batch: queued entries from the front, up to the samples limit.
            let batch: Vec<(u64, u64, usize)> = {
                let q = sh.shards[self.shard].lock();
                let mut out = Vec::new();
                let mut samples = 0u64;
                for (i, e) in q.iter().enumerate() {
                    if !out.is_empty()
                        && samples + e.samples > sh.config.max_samples_per_send as u64
                    {
                        break;
                    }
                    samples += e.samples;
                    out.push((e.seq, e.samples, i));
                }
                out
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = sh.wake[self.shard].notified() => continue,
                    // A wake-up raced with the check above: look again now and then.
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
            let body = {
                let q = sh.shards[self.shard].lock();
                if batch.len() == 1 {
                    q[0].payload.clone()
                } else {
                    let mut raw = Vec::new();
                    for e in q.iter().take(batch.len()) {
                        if let Ok(r) = snap::raw::Decoder::new().decompress_vec(&e.payload) {
                            raw.extend_from_slice(&r);
                        }
                    }
                    snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
                }
            };
            let samples: u64 = batch.iter().map(|b| b.1).sum();
            let started = tokio::time::Instant::now();
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                o = self.send(body) => o,
            };
            match outcome {
                Outcome::Sent => {
                    let took = started.elapsed();
                    let s = &sh.stats;
                    s.send_durations.observe(took);
                    s.samples_sent.fetch_add(samples, Ordering::Relaxed);
                    self.remove(batch.len());
                    backoff = sh.config.min_backoff.get();
                }
                Outcome::Rejected(why) => {
                    sh.stats.send_failures.fetch_add(1, Ordering::Relaxed);
                    sh.stats.dropped_rejected.fetch_add(samples, Ordering::Relaxed);
                    tracing::warn!(url = %self.url, samples, reason = %why, "The remote store refused a remote-write request; its samples are dropped (not retryable).");
                    self.remove(batch.len());
                }
                Outcome::Retry(why, after) => {
                    sh.stats.send_failures.fetch_add(1, Ordering::Relaxed);
                    sh.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = after.unwrap_or(backoff).min(sh.config.max_backoff.get());
                    tracing::debug!(url = %self.url, reason = %why, wait_ms = wait.as_millis() as u64, "Remote-write failed; retrying.");
                    // Jitter keeps the shards of many collectors from retrying in step.
                    let jitter = wait.mul_f64(fastrand::f64() * 0.2);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait + jitter) => {}
                    }
                    backoff = (backoff * 2).min(sh.config.max_backoff.get());
                }
            }
        }
    }

    /// Takes the first `n` entries off the shard and has the committer delete them.
    fn remove(&self, n: usize) {
        let sh = &self.shared;
        let gone: Vec<Entry> = {
            let mut q = sh.shards[self.shard].lock();
            let n = n.min(q.len());
            q.drain(..n).collect()
        };
        // The deletes are handed to the committer before the counters fall, so a queue that
        // reads empty has nothing left that a stop could forget to delete.
        if sh.db.is_some() {
            let mut p = sh.pending.lock();
            p.deletes.extend(gone.iter().map(|e| (self.shard as u32, e.seq)));
            sh.commit_wanted.notify_one();
        }
        let bytes: u64 = gone.iter().map(|e| e.payload.len() as u64).sum();
        sh.stats.bytes.fetch_sub(bytes, Ordering::Relaxed);
        sh.stats.entries.fetch_sub(gone.len() as u64, Ordering::Relaxed);
    }

    async fn send(&self, body: Vec<u8>) -> Outcome {
        let req = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .header(reqwest::header::CONTENT_ENCODING, "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .timeout(self.shared.config.write_timeout.get())
            .body(body);
        match req.send().await {
            Err(e) => Outcome::Retry(e.to_string(), None),
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    return Outcome::Sent;
                }
                let after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = resp.text().await.unwrap_or_default();
                let why = format!("{status}: {}", text.chars().take(300).collect::<String>());
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    Outcome::Retry(why, after)
                } else {
                    Outcome::Rejected(why)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
