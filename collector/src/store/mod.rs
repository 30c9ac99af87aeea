//! The embedded time-series store: recent data in memory, everything persisted in redb, and
//! the query interface the policy engine, the HTTP API and the dashboard read through.
//!
//! # The contract for readers (policy engine, API, dashboard)
//!
//! * Time is `u64` Unix nanoseconds; durations are [`std::time::Duration`].
//! * A window is the closed interval `[end - window, end]`; instant queries take `end = now`.
//! * Select series with [`crate::query::Selector`] (metric name + [`crate::query::Matcher`]s:
//!   equal, not-equal, regex, not-regex), then ask [`Store::instant`] or [`Store::range`] with
//!   a [`crate::query::Stat`] (mean/min/max/sum/count/last/rate/increase/quantile) and
//!   `group_by` attribute names. Everything is synchronous, takes `&self` and only short read
//!   locks, so it is cheap to call from a 1 s evaluation loop.
//! * Whole-window reads for statistics that need the distribution:
//!   [`Store::histogram_window`] (merged bucket counts, e.g. `inference.prediction.confidence`
//!   for drift tests) and [`Store::increase_by`] (counter increments by one attribute, e.g.
//!   `inference.prediction.class` by `class`).
//! * Series kinds ([`SeriesKind`]): gauges keep their values; counters keep a reset-corrected
//!   running total (cumulative OTLP sums are turned into increments, resets handled, delta sums
//!   added up); histograms keep per-interval (delta) bucket counts. Non-monotonic sums
//!   (up-down counters) are gauges.
//!
//! # Storage
//!
//! Each series holds its recent points in memory (columns of timestamps and values). Writes go
//! through a [`Writer`], which also appends a compact record to the write-ahead log; a
//! committer task writes the log to redb with an fsync every `commit_interval` (≤ 1 s, default
//! 200 ms), so `kill -9` loses at most that much acknowledged data. A checkpoint (every
//! `checkpoint_interval`, in its own task) moves in-memory points into compressed blocks
//! (tier 0, raw) and truncates the log in one redb transaction, then builds the downsampled
//! tiers (10 s and 1 min aggregates) a bounded number of spans per transaction, then applies
//! retention by age and by bytes, so a commit never waits for a whole checkpoint. When a
//! commit fails (a full disk), the store refuses writes until it recovers by itself; see
//! [`Store::unavailable`] and the `disk` module. Ingest accepts timestamps within
//! [`Store::accepted_window`] only. Points older than `memory_window` are
//! dropped from memory once on disk; queries read disk blocks transparently for older ranges,
//! choosing the finest tier still retained.
//!
//! Out-of-order points (older than the newest point of their series) and duplicates (same
//! timestamp) are refused and counted, as are non-finite values, kind conflicts and series
//! over the cardinality limit ([`RefusalCounts`]).

mod codec;
mod disk;
mod hist;
#[cfg(test)]
mod hist_props;
mod histcol;
mod labels;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use std::time::Duration;

pub use disk::{StoreConfig, TierConfig};
pub use hist::{Buckets, ExpSide, Histogram, MAX_EXP_BUCKETS};
pub(crate) use histcol::HistCols;
pub(crate) use labels::{FxHashMap, series_hash};
pub use labels::{Labels, SeriesKey};

pub(crate) use codec::AggPoint;

use crate::clock::SharedClock;

/// Errors from opening or persisting the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file is empty, damaged or cannot be opened (the message says what to do).
    #[error(transparent)]
    File(#[from] crate::dbfile::DbFileError),
    /// The database opened but what it holds could not be read back.
    #[error(
        "{path}: cannot read the stored data back ({detail}). The file is damaged and its data \
         cannot be recovered by the collector. Keep a copy for inspection, move it aside \
         (`mv {path} {path}.bad`) and start again to create a new, empty store, or restore it \
         from a backup"
    )]
    Unreadable {
        /// The database file.
        path: String,
        /// What failed.
        detail: String,
    },
    /// A redb operation failed.
    #[error("store database: {0}")]
    Db(String),
    /// A stored record could not be decoded.
    #[error("corrupt store record: {0}")]
    Corrupt(String),
    /// The data directory could not be created.
    #[error("create data directory {path}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
        }
    )*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// What a series measures, which decides how its points are kept and aggregated.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    /// A value sampled at a time (OTLP gauge, non-monotonic sum).
    Gauge,
    /// A monotonic counter, kept as a reset-corrected running total.
    Counter,
    /// A histogram, kept as per-interval bucket counts.
    Histogram,
}

impl SeriesKind {
    fn code(self) -> u8 {
        match self {
            SeriesKind::Gauge => 0,
            SeriesKind::Counter => 1,
            SeriesKind::Histogram => 2,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(SeriesKind::Gauge),
            1 => Some(SeriesKind::Counter),
            2 => Some(SeriesKind::Histogram),
            _ => None,
        }
    }
}

/// One point as a writer hands it to the store.
#[derive(Clone, Debug, PartialEq)]
pub enum PointValue {
    /// A gauge reading.
    Gauge(f64),
    /// A cumulative counter reading, counting since `start` (Unix nanos; 0 = unknown).
    CounterCumulative {
        /// Start of the cumulative interval.
        start: u64,
        /// Counter value.
        value: f64,
    },
    /// A counter increment over the interval ending at the point's timestamp.
    CounterDelta(f64),
    /// A cumulative histogram since `start` (0 = unknown).
    HistogramCumulative {
        /// Start of the cumulative interval.
        start: u64,
        /// Counts since start.
        hist: Histogram,
    },
    /// The observations of the interval ending at the point's timestamp.
    HistogramDelta(Histogram),
}

impl PointValue {
    /// The kind of series this point belongs to.
    pub fn kind(&self) -> SeriesKind {
        match self {
            PointValue::Gauge(_) => SeriesKind::Gauge,
            PointValue::CounterCumulative { .. } | PointValue::CounterDelta(_) => {
                SeriesKind::Counter
            }
            PointValue::HistogramCumulative { .. } | PointValue::HistogramDelta(_) => {
                SeriesKind::Histogram
            }
        }
    }
}

/// Why a point was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The series would exceed the configured cardinality limit.
    #[error("series limit reached")]
    Cardinality,
    /// The request would create more new series than one request may
    /// ([`Writer::limit_new_series`]).
    #[error("new-series limit of this request reached")]
    RequestSeries,
    /// Older than the newest stored point of its series.
    #[error("out-of-order point")]
    OutOfOrder,
    /// Same timestamp as the newest stored point of its series.
    #[error("duplicate point")]
    Duplicate,
    /// NaN or infinite value.
    #[error("non-finite value")]
    NonFinite,
    /// The metric already exists as another kind (e.g. gauge vs counter).
    #[error("metric kind conflict")]
    KindConflict,
    /// Malformed point (bad histogram layout, unsupported attribute type, missing value).
    #[error("invalid point")]
    Invalid,
    /// Timestamp older than `store.max_point_age` before now.
    #[error("timestamp older than store.max_point_age")]
    TooOld,
    /// Timestamp more than `store.max_point_ahead` after now.
    #[error("timestamp further ahead than store.max_point_ahead")]
    TooNew,
}

/// Counts of refused points by reason, plus what was accepted. Visible in `/metrics`.
#[derive(Debug, Default)]
pub struct RefusalCounts {
    /// Points accepted.
    pub accepted: AtomicU64,
    /// Refused: cardinality limit.
    pub cardinality: AtomicU64,
    /// Refused: out of order.
    pub out_of_order: AtomicU64,
    /// Refused: duplicate timestamp.
    pub duplicate: AtomicU64,
    /// Refused: NaN or infinity.
    pub non_finite: AtomicU64,
    /// Refused: kind conflict.
    pub kind_conflict: AtomicU64,
    /// Refused: malformed.
    pub invalid: AtomicU64,
    /// Refused: timestamp before the accepted window.
    pub too_old: AtomicU64,
    /// Refused: timestamp after the accepted window.
    pub too_new: AtomicU64,
}

impl RefusalCounts {
    /// Counts one refusal.
    pub fn count(&self, r: Refusal) {
        let c = match r {
            Refusal::Cardinality | Refusal::RequestSeries => &self.cardinality,
            Refusal::OutOfOrder => &self.out_of_order,
            Refusal::Duplicate => &self.duplicate,
            Refusal::NonFinite => &self.non_finite,
            Refusal::KindConflict => &self.kind_conflict,
            Refusal::Invalid => &self.invalid,
            Refusal::TooOld => &self.too_old,
            Refusal::TooNew => &self.too_new,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// `(reason, count)` pairs for exposition.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("cardinality", self.cardinality.load(Ordering::Relaxed)),
            ("out_of_order", self.out_of_order.load(Ordering::Relaxed)),
            ("duplicate", self.duplicate.load(Ordering::Relaxed)),
            ("non_finite", self.non_finite.load(Ordering::Relaxed)),
            ("kind_conflict", self.kind_conflict.load(Ordering::Relaxed)),
            ("invalid", self.invalid.load(Ordering::Relaxed)),
            ("too_old", self.too_old.load(Ordering::Relaxed)),
            ("too_new", self.too_new.load(Ordering::Relaxed)),
        ]
    }
}

/// Cumulative-to-delta state of a series (what the previous cumulative point was).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Cumulative {
    #[default]
    None,
    Counter {
        start: u64,
        raw: f64,
    },
    Hist {
        start: u64,
        prev: Histogram,
    },
}

/// Width of the pre-merged histogram rollups a histogram series keeps next to its raw points.
pub(crate) const ROLLUP_NANOS: u64 = 10_000_000_000;

/// Per-series merges of a histogram series' points in aligned 10 s intervals (`k * 10 s ..`),
/// as columns: a window that holds all `n[r]` points of rollup `r` merges that one value
/// instead of its points. They cover a contiguous suffix of the series' points, oldest first
/// (eviction drops a rollup as soon as it drops any of its points).
#[derive(Debug, Default)]
pub(crate) struct Rollups {
    /// Timestamp of each rollup's first point (its interval is `first_ts / ROLLUP_NANOS`).
    pub first_ts: Vec<u64>,
    /// Points merged into each.
    pub n: Vec<usize>,
    /// Sums of observations.
    pub sums: Vec<f64>,
    /// The merged buckets.
    pub hists: HistCols,
}

impl Rollups {
    /// Number of rollups.
    pub fn len(&self) -> usize {
        self.first_ts.len()
    }

    fn drain_front(&mut self, n: usize) {
        let n = n.min(self.len());
        self.first_ts.drain(..n);
        self.n.drain(..n);
        self.sums.drain(..n);
        self.hists.drain_front(n);
    }
}

/// The points of one series that live in memory.
#[derive(Debug, Default)]
pub(crate) struct SeriesData {
    /// Timestamps, strictly increasing.
    pub ts: Vec<u64>,
    /// Gauge value | counter running total | histogram sum of the interval.
    pub vals: Vec<f64>,
    /// Histogram deltas, one per point (histogram series only), as columns.
    pub hists: HistCols,
    /// Rollups of `hists`, oldest first, covering a contiguous suffix of the points (eviction
    /// drops a rollup as soon as it drops any of its points).
    pub rollups: Rollups,
    /// Counter total just before `ts[0]` (the last point dropped from memory).
    pub base_total: f64,
    /// Cumulative conversion state.
    pub cum: Cumulative,
    /// How many leading points are already in disk blocks.
    pub flushed: usize,
    /// All points before this timestamp are on disk (in blocks); memory holds the rest.
    pub mem_start: u64,
    /// Newest timestamp ever accepted (0 = none).
    pub last_ts: u64,
    /// Total at `last_ts` (counters).
    pub last_total: f64,
    /// Whether anything changed since the last checkpoint.
    pub dirty: bool,
    /// Whether points older than `mem_start` exist on disk (dropped from memory, or from
    /// before a restart). When false, memory alone answers any window.
    pub older_on_disk: bool,
}

impl SeriesData {
    /// Appends a histogram point (its timestamp, sum and buckets) and folds it into its
    /// interval's rollup.
    pub(crate) fn push_hist(&mut self, ts: u64, h: &Histogram) {
        self.ts.push(ts);
        self.vals.push(h.sum);
        self.hists.push(h);
        let k = ts / ROLLUP_NANOS;
        let r = &mut self.rollups;
        match r.first_ts.last().map(|t| t / ROLLUP_NANOS) {
            Some(last) if last == k => {
                let i = r.len() - 1;
                r.n[i] += 1;
                r.sums[i] += h.sum;
                r.hists.merge_into_last(h);
            }
            _ => {
                r.first_ts.push(ts);
                r.n.push(1);
                r.sums.push(h.sum);
                r.hists.push(h);
            }
        }
    }

    /// Drops rollups that lost any point to eviction (the first kept point is `first`).
    pub(crate) fn trim_rollups(&mut self, first: u64) {
        let cut = self.rollups.first_ts.partition_point(|t| *t < first);
        self.rollups.drain_front(cut);
    }
}

/// One series: identity plus its in-memory data.
#[derive(Debug)]
pub(crate) struct Series {
    pub id: u32,
    pub metric: Arc<str>,
    pub labels: Labels,
    pub kind: SeriesKind,
    pub node: Option<u32>,
    /// The node's last-seen clock, shared so appends need no index lock.
    pub node_seen: Option<Arc<AtomicU64>>,
    pub data: RwLock<SeriesData>,
}

/// Per-metric inverted index: attribute key → value → series ids (sorted).
#[derive(Debug, Default)]
pub(crate) struct MetricIndex {
    pub ids: Vec<u32>,
    pub postings: FxHashMap<Arc<str>, FxHashMap<Arc<str>, Vec<u32>>>,
    pub kind: Option<SeriesKind>,
}

/// A node (agent / host) seen in resource attributes.
#[derive(Debug)]
pub struct NodeEntry {
    /// `host.name`.
    pub name: String,
    /// `host.id`, or `host.name` when there is no id.
    pub host_id: String,
    /// Resource labels other than host.* (configured labels, cloud.*).
    pub labels: Labels,
    /// Distinct `hw.id` (GPU) values seen on this node's series.
    pub gpus: Vec<String>,
    /// Newest point timestamp from this node (Unix nanos).
    pub last_seen: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    pub series: Vec<Arc<Series>>,
    pub by_key: FxHashMap<SeriesKey, u32>,
    pub by_metric: FxHashMap<Arc<str>, MetricIndex>,
    pub interner: std::collections::HashSet<Arc<str>, labels::FxBuild>,
    pub nodes: Vec<Arc<NodeEntry>>,
    pub node_by_key: FxHashMap<String, u32>,
}

impl Index {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interner.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interner.insert(a.clone());
        a
    }

    #[inline]
    fn lookup(&self, key: SeriesKey) -> Option<&Arc<Series>> {
        self.by_key.get(&key).and_then(|i| self.series.get(*i as usize))
    }

    /// Adds a series with a given id (used by recovery and by new writes).
    fn insert(
        &mut self,
        id: u32,
        metric: &str,
        pairs: &[(&str, &str)],
        kind: SeriesKind,
    ) -> Arc<Series> {
        let metric_a = self.intern(metric);
        let mut v = Vec::with_capacity(pairs.len());
        for (k, val) in pairs {
            let k = self.intern(k);
            let val = self.intern(val);
            v.push((k, val));
        }
        let labels = Labels::from_sorted(v);
        let node = self.node_for(&labels);
        let node_seen = node.and_then(|n| self.nodes.get(n as usize)).map(|n| n.last_seen.clone());
        let series = Arc::new(Series {
            id,
            metric: metric_a.clone(),
            labels: labels.clone(),
            kind,
            node,
            node_seen,
            data: RwLock::new(SeriesData { dirty: true, ..SeriesData::default() }),
        });
        self.by_key.insert(SeriesKey::of(metric, pairs.iter().copied()), id);
        let mi = self.by_metric.entry(metric_a).or_default();
        mi.kind.get_or_insert(kind);
        mi.ids.push(id);
        for (k, val) in labels.raw() {
            mi.postings.entry(k.clone()).or_default().entry(val.clone()).or_default().push(id);
        }
        if self.series.len() <= id as usize {
            self.series.resize_with(id as usize + 1, || series.clone());
        }
        self.series[id as usize] = series.clone();
        series
    }

    fn node_for(&mut self, labels: &Labels) -> Option<u32> {
        let key = labels.get("host.id").or_else(|| labels.get("host.name"))?.to_string();
        let idx = match self.node_by_key.get(&key) {
            Some(i) => *i,
            None => {
                let rest: Vec<(&str, &str)> = labels
                    .iter()
                    .filter(|(k, _)| {
                        !k.starts_with("host.")
                            && !k.starts_with("hw.")
                            && !k.starts_with("process.")
                            && !k.starts_with("service.")
                            && !k.starts_with("model.")
                            && !k.starts_with("telemetry.")
                    })
                    .collect();
                let entry = NodeEntry {
                    name: labels.get("host.name").unwrap_or(&key).to_string(),
                    host_id: key.clone(),
                    labels: Labels::from_pairs(rest),
                    gpus: Vec::new(),
                    last_seen: Arc::new(AtomicU64::new(0)),
                };
                let i = self.nodes.len() as u32;
                self.nodes.push(Arc::new(entry));
                self.node_by_key.insert(key, i);
                i
            }
        };
        if let Some(gpu) = labels.get("hw.id") {
            let node = &self.nodes[idx as usize];
            if !node.gpus.iter().any(|g| g == gpu) {
                let mut gpus = node.gpus.clone();
                gpus.push(gpu.to_string());
                gpus.sort();
                self.nodes[idx as usize] = Arc::new(NodeEntry {
                    name: node.name.clone(),
                    host_id: node.host_id.clone(),
                    labels: node.labels.clone(),
                    gpus,
                    last_seen: node.last_seen.clone(),
                });
            }
        }
        Some(idx)
    }
}

/// The store. Share it as `Arc<Store>`; all methods take `&self`.
#[derive(Debug)]
pub struct Store {
    pub(crate) index: RwLock<Index>,
    pub(crate) config: StoreConfig,
    pub(crate) disk: Option<disk::Disk>,
    pub(crate) wal: Mutex<Vec<u8>>,
    pub(crate) wal_pending_since: AtomicU64,
    /// Refused and accepted point counts.
    pub refusals: RefusalCounts,
    pub(crate) clock: SharedClock,
    pub(crate) stats: disk::DiskStats,
    pub(crate) health: Health,
}

/// Whether the store can write to disk. While it cannot, ingest refuses new data (agents keep
/// it and retry) and `/readyz` says not ready, so nothing is acknowledged that could be lost.
#[derive(Debug, Default)]
pub(crate) struct Health {
    failing: AtomicBool,
    reason: Mutex<String>,
}

impl Health {
    pub(crate) fn fail(&self, reason: String) {
        *self.reason.lock() = reason;
        self.failing.store(true, Ordering::Release);
    }

    pub(crate) fn recover(&self) {
        self.failing.store(false, Ordering::Release);
        self.reason.lock().clear();
    }

    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }
}

impl Store {
    /// A store that lives only in memory (tests, `policy test`, replay). Nothing is persisted
    /// and nothing is evicted until [`Store::checkpoint`] is called.
    pub fn in_memory(config: StoreConfig, clock: SharedClock) -> Self {
        Store {
            index: RwLock::new(Index::default()),
            config,
            disk: None,
            wal: Mutex::new(Vec::new()),
            wal_pending_since: AtomicU64::new(0),
            refusals: RefusalCounts::default(),
            clock,
            stats: disk::DiskStats::default(),
            health: Health::default(),
        }
    }

    /// Opens (or creates) the store in `config.data_dir`, recovering blocks and replaying the
    /// write-ahead log.
    pub fn open(config: StoreConfig, clock: SharedClock) -> Result<Self, StoreError> {
        disk::open(config, clock)
    }

    /// The configuration in force.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Now, by the store's clock.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// Starts a batch of writes. Call [`Writer::finish`] to hand its log records to the
    /// committer; the points are visible to queries as soon as each append returns.
    pub fn writer(&self) -> Writer<'_> {
        Writer {
            store: self,
            wal: Vec::new(),
            accepted: 0,
            held: None,
            hold: false,
            new_series_left: u64::MAX,
        }
    }

    /// A writer for one large batch (an export request): it keeps the series index
    /// read-locked between appends (letting go only to add a new series), so known series are
    /// found without taking the lock per point. While it lives, do not open another writer or
    /// query the store on the same thread.
    pub fn batch_writer(&self) -> Writer<'_> {
        Writer {
            store: self,
            wal: Vec::new(),
            accepted: 0,
            held: Some(self.index.read()),
            hold: true,
            new_series_left: u64::MAX,
        }
    }

    /// Why the store cannot take writes now (the disk failed a commit and has not recovered),
    /// or `None` when it can. Ingest answers "unavailable, retry" and `/readyz` not ready while
    /// this is `Some`.
    pub fn unavailable(&self) -> Option<String> {
        self.health.is_failing().then(|| self.health.reason.lock().clone())
    }

    /// The timestamps ingest accepts now: `[now - max_point_age, now + max_point_ahead]`.
    pub fn accepted_window(&self) -> (u64, u64) {
        let now = self.clock.now();
        (
            before(now, self.config.max_point_age.get()),
            now.saturating_add(self.config.max_point_ahead.get().as_nanos() as u64),
        )
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.index.read().series.len()
    }

    /// Number of points held in memory.
    pub fn memory_points(&self) -> usize {
        let series: Vec<Arc<Series>> = self.index.read().series.clone();
        series.iter().map(|s| s.data.read().ts.len()).sum()
    }

    /// Bytes kept on disk (blocks plus log), as tracked by the store.
    pub fn disk_bytes(&self) -> u64 {
        self.stats.block_bytes.load(Ordering::Relaxed)
            + self.stats.wal_bytes.load(Ordering::Relaxed)
    }

    /// Size of the database file.
    pub fn file_bytes(&self) -> u64 {
        self.disk.as_ref().map(|d| d.file_len()).unwrap_or(0)
    }

    /// Disk statistics (commits, checkpoints, retention).
    pub fn disk_stats(&self) -> &disk::DiskStats {
        &self.stats
    }

    /// Nodes seen, with their last-seen time.
    pub fn nodes(&self) -> Vec<Arc<NodeEntry>> {
        self.index.read().nodes.clone()
    }

    pub(crate) fn series_snapshot(&self) -> Vec<Arc<Series>> {
        self.index.read().series.clone()
    }

    /// Writes the pending log records to disk now (the committer does this every
    /// `commit_interval`). Returns the number of bytes committed.
    pub fn commit(&self) -> Result<usize, StoreError> {
        disk::commit(self)
    }

    /// Moves in-memory points to disk blocks, builds downsampled tiers, applies retention and
    /// drops old points from memory. `now` comes from the store clock.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        disk::checkpoint(self, self.clock.now())
    }

    /// Runs the committer and checkpointer until `cancel` fires, then commits and checkpoints
    /// a last time.
    pub async fn run_background(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        disk::run_background(self, cancel).await
    }
}

/// A batch of writes; see [`Store::writer`].
#[derive(Debug)]
pub struct Writer<'a> {
    store: &'a Store,
    wal: Vec<u8>,
    accepted: u64,
    /// The index read guard a batch writer keeps between appends.
    held: Option<parking_lot::RwLockReadGuard<'a, Index>>,
    hold: bool,
    /// New series this writer may still create.
    new_series_left: u64,
}

impl Writer<'_> {
    /// Lets this writer create at most `n` new series; appends beyond are refused with
    /// [`Refusal::RequestSeries`] (points of known series still go in).
    pub fn limit_new_series(&mut self, n: u64) {
        self.new_series_left = n;
    }

    /// Appends one point to the series `metric{pairs}`. `pairs` must not repeat a key (use
    /// [`sort_pairs`] to resolve duplicates); their order does not matter.
    pub fn append(
        &mut self,
        metric: &str,
        pairs: &[(&str, &str)],
        ts: u64,
        value: PointValue,
    ) -> Result<(), Refusal> {
        self.append_keyed(metric, SeriesKey::of(metric, pairs.iter().copied()), pairs, ts, value)
    }

    /// [`Writer::append`] with the series key already computed (`key` must be
    /// `SeriesKey::of(metric, pairs)`; ingest sums it from per-resource and per-point shares).
    /// `pairs` are read only when the series is new.
    pub fn append_keyed(
        &mut self,
        metric: &str,
        key: SeriesKey,
        pairs: &[(&str, &str)],
        ts: u64,
        value: PointValue,
    ) -> Result<(), Refusal> {
        let r = self.append_inner(metric, key, pairs, ts, value);
        match r {
            Ok(()) => self.accepted += 1,
            Err(e) => self.store.refusals.count(e),
        }
        r
    }

    fn resolve(
        &mut self,
        metric: &str,
        key: SeriesKey,
        pairs: &[(&str, &str)],
        kind: SeriesKind,
    ) -> Result<Arc<Series>, Refusal> {
        {
            let guard;
            let idx: &Index = match &self.held {
                Some(g) => g,
                None => {
                    guard = self.store.index.read();
                    &guard
                }
            };
            if let Some(s) = idx.lookup(key) {
                return if s.kind == kind { Ok(s.clone()) } else { Err(Refusal::KindConflict) };
            }
            if let Some(mi) = idx.by_metric.get(metric) {
                if mi.kind.is_some_and(|k| k != kind) {
                    return Err(Refusal::KindConflict);
                }
            }
        }
        // A new series: sort its pairs, take the write lock (letting go of a held read guard).
        self.held = None;
        // `key` does not depend on the pairs' order, so the caller's stands for the sorted pairs.
        let mut sorted: Vec<(&str, &str)> = pairs.to_vec();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let r = (|| {
            let mut idx = self.store.index.write();
            if let Some(s) = idx.lookup(key) {
                return if s.kind == kind {
                    Ok((s.clone(), false))
                } else {
                    Err(Refusal::KindConflict)
                };
            }
            if self.new_series_left == 0 {
                return Err(Refusal::RequestSeries);
            }
            if idx.series.len() >= self.store.config.max_series {
                return Err(Refusal::Cardinality);
            }
            self.new_series_left -= 1;
            let id = idx.series.len() as u32;
            Ok((idx.insert(id, metric, &sorted, kind), true))
        })();
        let r = r.map(|(s, created)| {
            if created {
                codec::wal_define(&mut self.wal, s.id, metric, kind, &sorted);
            }
            s
        });
        if self.hold {
            self.held = Some(self.store.index.read());
        }
        r
    }

    fn append_inner(
        &mut self,
        metric: &str,
        key: SeriesKey,
        pairs: &[(&str, &str)],
        ts: u64,
        value: PointValue,
    ) -> Result<(), Refusal> {
        match &value {
            PointValue::Gauge(v)
            | PointValue::CounterDelta(v)
            | PointValue::CounterCumulative { value: v, .. } => {
                if !v.is_finite() {
                    return Err(Refusal::NonFinite);
                }
            }
            PointValue::HistogramCumulative { hist, .. } | PointValue::HistogramDelta(hist) => {
                if !hist.sum.is_finite() {
                    return Err(Refusal::NonFinite);
                }
                if let Buckets::Explicit { bounds, counts } = &hist.buckets {
                    if counts.len() != bounds.len() + 1
                        || bounds.windows(2).any(|w| w[0] >= w[1])
                        || bounds.iter().any(|b| !b.is_finite())
                    {
                        return Err(Refusal::Invalid);
                    }
                }
            }
        }
        let series = self.resolve(metric, key, pairs, value.kind())?;
        let mut d = series.data.write();
        if d.last_ts != 0 {
            if ts == d.last_ts {
                return Err(Refusal::Duplicate);
            }
            if ts < d.last_ts {
                return Err(Refusal::OutOfOrder);
            }
        }
        // A point that makes the arithmetic fail is refused, not a failed request: the lock is
        // released as the panic unwinds (parking_lot locks do not poison), and the log only
        // gets the point's record once it was applied.
        let wal_len = self.wal.len();
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            apply(&mut d, ts, value, Some((&mut self.wal, series.id)))
        }));
        drop(d);
        if applied.is_err() {
            self.wal.truncate(wal_len);
            return Err(Refusal::Invalid);
        }
        if let Some(seen) = &series.node_seen {
            seen.fetch_max(ts, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Points accepted so far in this batch.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Hands the batch's log records to the committer. Returns false (and keeps the points in
    /// memory) when the log is over its bound because the disk is not keeping up: callers
    /// should answer "unavailable, retry".
    pub fn finish(mut self) -> bool {
        self.held = None;
        self.store.refusals.accepted.fetch_add(self.accepted, Ordering::Relaxed);
        let wal = std::mem::take(&mut self.wal);
        if self.store.disk.is_none() || wal.is_empty() {
            return true;
        }
        let mut w = self.store.wal.lock();
        if w.is_empty() {
            self.store.wal_pending_since.store(self.store.clock.now(), Ordering::Relaxed);
        }
        w.extend_from_slice(&wal);
        w.len() <= self.store.config.max_pending_log_bytes
    }

    /// Whether the committer is behind (the log buffer is over its bound) or the disk is
    /// failing: ingest should answer "unavailable, retry" before taking more.
    pub fn backlogged(&self) -> bool {
        self.store.health.is_failing()
            || self.store.wal.lock().len() > self.store.config.max_pending_log_bytes
    }
}

/// Sorts attribute pairs by key and drops duplicate keys (the later one wins).
pub fn sort_pairs<'a>(pairs: &mut Vec<(&'a str, &'a str)>) {
    pairs.reverse();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    pairs.dedup_by(|a, b| a.0 == b.0);
}

/// Applies a point to series data (ingest and log replay), writing a log record if asked.
pub(crate) fn apply(
    d: &mut SeriesData,
    ts: u64,
    value: PointValue,
    wal: Option<(&mut Vec<u8>, u32)>,
) {
    if d.ts.is_empty() && d.mem_start == 0 {
        d.mem_start = ts;
    }
    match value {
        PointValue::Gauge(v) => {
            d.ts.push(ts);
            d.vals.push(v);
            if let Some((w, id)) = wal {
                codec::wal_gauge(w, id, ts, v);
            }
        }
        PointValue::CounterDelta(inc) => {
            let total = d.last_total + inc;
            d.ts.push(ts);
            d.vals.push(total);
            d.last_total = total;
            if let Some((w, id)) = wal {
                codec::wal_counter(w, id, ts, total, None);
            }
        }
        PointValue::CounterCumulative { start, value } => {
            let inc = match &d.cum {
                Cumulative::Counter { start: ps, raw } => {
                    let restarted = start != 0 && *ps != 0 && start != *ps;
                    if restarted || value < *raw { value } else { value - raw }
                }
                // A new series counts from its start time when the sender says when that was;
                // otherwise its first reading is only the baseline.
                _ => {
                    if start != 0 && start <= ts {
                        value
                    } else {
                        0.0
                    }
                }
            };
            let total = d.last_total + inc;
            d.cum = Cumulative::Counter { start, raw: value };
            d.ts.push(ts);
            d.vals.push(total);
            d.last_total = total;
            if let Some((w, id)) = wal {
                codec::wal_counter(w, id, ts, total, Some((start, value)));
            }
        }
        PointValue::HistogramDelta(h) => {
            if let Some((w, id)) = wal {
                codec::wal_hist(w, id, ts, &h, None);
            }
            d.push_hist(ts, &h);
        }
        PointValue::HistogramCumulative { start, hist } => {
            let delta = match &d.cum {
                Cumulative::Hist { start: ps, prev } => {
                    let restarted = start != 0 && *ps != 0 && start != *ps;
                    // After a reset everything since the restart is new, the extremes too.
                    if restarted { None } else { hist.delta_since(prev) }
                        .unwrap_or_else(|| hist.clone())
                }
                _ => {
                    if start != 0 && start <= ts {
                        hist.clone()
                    } else {
                        let mut empty = hist.clone();
                        empty.count = 0;
                        empty.sum = 0.0;
                        empty.min = None;
                        empty.max = None;
                        match &mut empty.buckets {
                            Buckets::Explicit { counts, .. } => {
                                counts.iter_mut().for_each(|c| *c = 0)
                            }
                            Buckets::Exponential { zero_count, positive, negative, .. } => {
                                *zero_count = 0;
                                *positive = ExpSide::default();
                                *negative = ExpSide::default();
                            }
                        }
                        empty
                    }
                }
            };
            if let Some((w, id)) = wal {
                codec::wal_hist(w, id, ts, &delta, Some((start, &hist)));
            }
            d.cum = Cumulative::Hist { start, prev: hist };
            d.push_hist(ts, &delta);
        }
    }
    d.last_ts = ts;
    d.dirty = true;
}

/// How long ago (relative to `now`) a duration reaches, saturating at 0.
pub(crate) fn before(now: u64, d: Duration) -> u64 {
    now.saturating_sub(d.as_nanos() as u64)
}
