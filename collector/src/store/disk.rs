//! Persistence in redb: the write-ahead log (group commit), the series catalog, compressed
//! blocks per tier, downsampling and retention. One redb file, `<data_dir>/store.redb`, and a
//! reserve file, `<data_dir>/store.reserve`, that holds disk space for a full disk.
//!
//! A failed commit (a full disk, an I/O error) puts the store in a failing state: ingest
//! answers "unavailable, retry" and `/readyz` not ready, so nothing more is acknowledged. The
//! reserve file is deleted to make room, the database is reopened (redb refuses every write
//! after an I/O error) and the log records already acknowledged are committed again. The store
//! leaves the failing state by itself once the filesystem has room for the reserve twice over.
//!
//! Checkpoints run in their own task, in several short transactions (raw blocks and log
//! truncation; a bounded number of downsampling spans each; retention), so a commit waits at
//! most for one of them, never for a whole checkpoint.
//!
//! Tables:
//! * `wal`: sequence → a batch of log records (define series / points), fsync'd per commit.
//! * `series`: series id → identity and the state a restart needs (cumulative baselines).
//! * `blocks`: `tier << 96 | id << 64 | first_ts` → encoded points of that tier.
//! * `meta`: name → u64 (tier progress, tracked byte counts).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::codec::{self, AggPoint, Reader, WalRecord};
use super::{Cumulative, Index, SeriesData, Store, StoreError, before};
use crate::clock::SharedClock;
use crate::duration::HumanDuration;

const WAL: TableDefinition<u64, &[u8]> = TableDefinition::new("wal");
const SERIES: TableDefinition<u32, &[u8]> = TableDefinition::new("series");
const BLOCKS: TableDefinition<u128, &[u8]> = TableDefinition::new("blocks");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// One downsampled tier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Width of one aggregate (e.g. 10s, 1m).
    pub resolution: HumanDuration,
    /// How long the tier is kept.
    pub retention: HumanDuration,
}

/// Store configuration (the `[store]` section of the collector config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Where the database lives; `None` keeps everything in memory (set by `--data-dir`).
    #[serde(skip)]
    pub data_dir: Option<PathBuf>,
    /// Most series the store accepts; points of new series beyond it are refused and counted.
    pub max_series: usize,
    /// How often the write-ahead log is fsync'd: the most acknowledged data a crash can lose
    /// (must be ≤ 1 s).
    pub commit_interval: HumanDuration,
    /// How often in-memory points move into blocks and tiers/retention are maintained.
    pub checkpoint_interval: HumanDuration,
    /// How long raw points stay in memory after they are on disk.
    pub memory_window: HumanDuration,
    /// How long raw (full-resolution) points are kept on disk.
    pub raw_retention: HumanDuration,
    /// Downsampled tiers, finest first.
    pub tiers: Vec<TierConfig>,
    /// Upper bound on stored block bytes; the oldest data of the finest tier goes first.
    pub max_bytes: u64,
    /// Bound on log bytes waiting for a commit; beyond it ingest answers "retry later".
    pub max_pending_log_bytes: usize,
    /// Oldest point ingest accepts, as an age before now; older points are refused (OTLP
    /// partial success). One ancient timestamp would otherwise make checkpoints downsample
    /// every series from it onwards.
    pub max_point_age: HumanDuration,
    /// How far after now a point may be stamped; later ones are refused. A far-future point
    /// would make every real point of its series "out of order".
    pub max_point_ahead: HumanDuration,
    /// Disk space held in `<data_dir>/store.reserve` and given up when a commit fails, so the
    /// log records already acknowledged can still be written on a full disk (0 = none).
    pub disk_reserve_bytes: u64,
    /// Which store holds the series for policies and `/api/v1/query`: `embedded` (this
    /// store) or `remote` (a Prometheus-compatible store, `[store.remote]`).
    #[serde(skip_serializing_if = "is_embedded")]
    pub backend: crate::remote::Backend,
    /// The remote store (`[store.remote]`), used with `backend = "remote"`.
    #[serde(skip_serializing_if = "is_default_remote")]
    pub remote: crate::remote::RemoteConfig,
}

fn is_embedded(b: &crate::remote::Backend) -> bool {
    *b == crate::remote::Backend::Embedded
}

fn is_default_remote(r: &crate::remote::RemoteConfig) -> bool {
    *r == crate::remote::RemoteConfig::default()
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: None,
            max_series: 2_000_000,
            commit_interval: HumanDuration(Duration::from_millis(200)),
            checkpoint_interval: HumanDuration::from_secs(60),
            memory_window: HumanDuration::from_secs(15 * 60),
            raw_retention: HumanDuration::from_secs(2 * 3600),
            tiers: vec![
                TierConfig {
                    resolution: HumanDuration::from_secs(10),
                    retention: HumanDuration::from_secs(24 * 3600),
                },
                TierConfig {
                    resolution: HumanDuration::from_secs(60),
                    retention: HumanDuration::from_secs(14 * 24 * 3600),
                },
            ],
            max_bytes: 50 << 30,
            max_pending_log_bytes: 512 << 20,
            max_point_age: HumanDuration::from_secs(2 * 3600),
            max_point_ahead: HumanDuration::from_secs(10 * 60),
            disk_reserve_bytes: 16 << 20,
            backend: crate::remote::Backend::Embedded,
            remote: crate::remote::RemoteConfig::default(),
        }
    }
}

impl StoreConfig {
    /// Problems with this configuration, as `(key, message)` pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.commit_interval.get() > Duration::from_secs(1)
            || self.commit_interval.get().is_zero()
        {
            errs.push((
                "store.commit_interval".into(),
                "must be between 1ms and 1s (the durability promise)".into(),
            ));
        }
        if self.checkpoint_interval.get() < Duration::from_secs(1) {
            errs.push(("store.checkpoint_interval".into(), "must be at least 1s".into()));
        }
        if self.max_series == 0 {
            errs.push(("store.max_series".into(), "must be positive".into()));
        }
        if self.backend == crate::remote::Backend::Remote {
            errs.extend(self.remote.validate());
        }
        if self.max_point_age.get().is_zero() {
            errs.push(("store.max_point_age".into(), "must be positive".into()));
        }
        let mut prev = Duration::ZERO;
        for (i, t) in self.tiers.iter().enumerate() {
            if t.resolution.get() <= prev {
                errs.push((
                    format!("store.tiers[{i}].resolution"),
                    "tiers must get coarser, finest first".into(),
                ));
            }
            prev = t.resolution.get();
        }
        errs
    }

    /// Span of one block of tier `k` (0 = raw): 60 aggregates per block.
    fn span(&self, k: usize) -> u64 {
        self.tiers
            .get(k.wrapping_sub(1))
            .map(|t| t.resolution.get().as_nanos() as u64 * 60)
            .unwrap_or(1)
    }

    fn retention(&self, k: usize) -> Duration {
        if k == 0 {
            self.raw_retention.get()
        } else {
            self.tiers.get(k - 1).map(|t| t.retention.get()).unwrap_or_default()
        }
    }
}

/// Counters of the disk side, for `/metrics`.
#[derive(Debug, Default)]
pub struct DiskStats {
    /// Log commits done.
    pub commits: AtomicU64,
    /// Checkpoints done.
    pub checkpoints: AtomicU64,
    /// Bytes in blocks.
    pub block_bytes: AtomicU64,
    /// Bytes in the log table.
    pub wal_bytes: AtomicU64,
    /// Bytes deleted by retention (age or size).
    pub retention_deleted_bytes: AtomicU64,
    /// Failed commits or checkpoints.
    pub errors: AtomicU64,
    /// Log records replayed at the last start.
    pub replayed_records: AtomicU64,
    /// Nanoseconds the last commit took.
    pub last_commit_nanos: AtomicU64,
}

/// The open database.
pub(crate) struct Disk {
    /// `None` between a failed commit and a successful reopen.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    reserve: PathBuf,
    reserve_bytes: u64,
    seq: AtomicU64,
    tier_done: Vec<AtomicU64>,
    retention_shrink: Vec<AtomicU64>,
    commit_lock: Mutex<()>,
    checkpoint_lock: Mutex<()>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk").field("path", &self.path).finish()
    }
}

/// redb's page cache for the store. Recent data is served from the store's own memory, so this
/// only speeds up reads of older blocks (redb's 1 GiB default would dominate RSS).
fn builder() -> redb::Builder {
    let mut b = Database::builder();
    b.set_cache_size(64 << 20);
    b
}

fn closed() -> StoreError {
    StoreError::Db("the store database is closed after a disk error; it reopens by itself".into())
}

impl Disk {
    pub fn file_len(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Start of the first span tier `tier` has not built yet (0 = none built).
    pub fn tier_done(&self, tier: usize) -> u64 {
        self.tier_done.get(tier).map(|d| d.load(Ordering::Relaxed)).unwrap_or(0)
    }

    fn key(tier: usize, id: u32, ts: u64) -> u128 {
        ((tier as u128) << 96) | ((id as u128) << 64) | ts as u128
    }

    /// Points of series `id` in tier `tier` with `a <= ts <= b`, plus the newest point before
    /// `a` (first in the output when present, flagged by `ts < a`).
    pub fn read(&self, tier: usize, id: u32, a: u64, b: u64) -> Result<Vec<AggPoint>, StoreError> {
        let tx = {
            let db = self.db.read();
            db.as_ref().ok_or_else(closed)?.begin_read()?
        };
        let table = match tx.open_table(BLOCKS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        read_blocks(&table, tier, id, a, b)
    }

    /// Runs `f` in one write transaction, committed with an fsync.
    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db.read();
        let mut tx = db.as_ref().ok_or_else(closed)?.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Drops the database handle and opens the file again: after an I/O error redb refuses
    /// every later write ("previous I/O error"), even once the disk has room again.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write();
        // One handle per file: the old one must be gone before the file is opened again.
        *db = None;
        *db = Some(crate::dbfile::open(&self.path, &mut builder())?);
        tracing::info!(file = %self.path.display(), "Store database reopened.");
        Ok(())
    }

    /// Makes sure the reserve file holds `reserve_bytes` of real (not sparse) space.
    fn fill_reserve(&self) -> std::io::Result<()> {
        use std::io::Write as _;
        if self.reserve_bytes == 0 {
            return match std::fs::remove_file(&self.reserve) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        if std::fs::metadata(&self.reserve).is_ok_and(|m| m.len() >= self.reserve_bytes) {
            return Ok(());
        }
        let written = (|| {
            let mut f = std::fs::File::create(&self.reserve)?;
            let chunk = vec![0u8; 1 << 20];
            let mut left = self.reserve_bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&self.reserve);
        }
        written
    }

    /// Gives the reserve's space back to the filesystem; true when there was one.
    fn release_reserve(&self) -> bool {
        std::fs::remove_file(&self.reserve).is_ok()
    }

    /// Bytes free for an unprivileged writer on the data directory's filesystem.
    fn free_bytes(&self) -> Option<u64> {
        let dir = self.path.parent()?;
        let st = nix::sys::statvfs::statvfs(dir).ok()?;
        Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
    }
}

fn read_blocks(
    table: &impl ReadableTable<u128, &'static [u8]>,
    tier: usize,
    id: u32,
    a: u64,
    b: u64,
) -> Result<Vec<AggPoint>, StoreError> {
    let mut blocks = Vec::new();
    for item in table.range(Disk::key(tier, id, 0)..=Disk::key(tier, id, b))?.rev() {
        let (_, v) = item?;
        let v = v.value();
        let last =
            codec::block_last_ts(v).ok_or_else(|| StoreError::Corrupt("block header".into()))?;
        blocks.push(v.to_vec());
        if last < a {
            break;
        }
    }
    let mut out = Vec::new();
    for blk in blocks.iter().rev() {
        codec::decode_block(blk, &mut out).ok_or_else(|| StoreError::Corrupt("block".into()))?;
    }
    // Keep the newest point before `a` (a counter's baseline) and the points in [a, b].
    let first_in = out.partition_point(|p| p.ts < a);
    let end = out.partition_point(|p| p.ts <= b);
    let start = first_in.saturating_sub(1);
    Ok(out.get(start..end).map(|s| s.to_vec()).unwrap_or_default())
}

pub(crate) fn open(config: StoreConfig, clock: SharedClock) -> Result<Store, StoreError> {
    let Some(dir) = config.data_dir.clone() else {
        return Ok(Store::in_memory(config, clock));
    };
    std::fs::create_dir_all(&dir)
        .map_err(|source| StoreError::Dir { path: dir.display().to_string(), source })?;
    let path = dir.join("store.redb");
    let db = crate::dbfile::open(&path, &mut builder())?;
    let shown = path.display().to_string();
    // redb may panic on some damaged pages; a damaged file must end in an error, not a crash.
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        load(config, clock, db, path, dir)
    }));
    match loaded {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e @ (StoreError::File(_) | StoreError::Dir { .. }))) => Err(e),
        Ok(Err(e)) => Err(StoreError::Unreadable { path: shown, detail: e.to_string() }),
        Err(_) => Err(StoreError::Unreadable {
            path: shown,
            detail: "redb failed while reading it".into(),
        }),
    }
}

fn load(
    config: StoreConfig,
    clock: SharedClock,
    db: Database,
    path: PathBuf,
    dir: PathBuf,
) -> Result<Store, StoreError> {
    {
        let tx = db.begin_write()?;
        tx.open_table(WAL)?;
        tx.open_table(SERIES)?;
        tx.open_table(BLOCKS)?;
        tx.open_table(META)?;
        tx.commit()?;
    }
    let ntiers = config.tiers.len() + 1;
    let disk = Disk {
        db: RwLock::new(Some(db)),
        path,
        reserve: dir.join("store.reserve"),
        reserve_bytes: config.disk_reserve_bytes,
        seq: AtomicU64::new(0),
        tier_done: (0..ntiers).map(|_| AtomicU64::new(0)).collect(),
        retention_shrink: (0..ntiers).map(|_| AtomicU64::new(0)).collect(),
        commit_lock: Mutex::new(()),
        checkpoint_lock: Mutex::new(()),
    };
    let mut store = Store::in_memory(config, clock);
    let mut index = Index::default();
    let tx = disk.db.read().as_ref().ok_or_else(closed)?.begin_read()?;
    // Series catalog.
    let series = tx.open_table(SERIES)?;
    for item in series.iter()? {
        let (k, v) = item?;
        let id = k.value();
        let row = codec::get_catalog(v.value())
            .ok_or_else(|| StoreError::Corrupt(format!("series {id}")))?;
        let pairs: Vec<(&str, &str)> =
            row.pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let s = index.insert(id, &row.metric, &pairs, row.kind);
        let mut d = s.data.write();
        d.last_ts = row.last_ts;
        d.last_total = row.last_total;
        d.base_total = row.last_total;
        d.cum = row.cum;
        d.mem_start = row.last_ts.saturating_add(1);
        d.older_on_disk = row.last_ts > 0;
        d.dirty = false;
    }
    let meta = tx.open_table(META)?;
    for (k, done) in disk.tier_done.iter().enumerate() {
        if let Some(v) = meta.get(format!("tier{k}_done").as_str())? {
            done.store(v.value(), Ordering::Relaxed);
        }
    }
    if let Some(v) = meta.get("block_bytes")? {
        store.stats.block_bytes.store(v.value(), Ordering::Relaxed);
    }
    // Replay the log in order; points at or before a series' recorded last timestamp are
    // already in blocks.
    let wal = tx.open_table(WAL)?;
    let mut replayed = 0u64;
    let mut wal_bytes = 0u64;
    let mut max_seq = 0u64;
    for item in wal.iter()? {
        let (k, v) = item?;
        max_seq = max_seq.max(k.value());
        let buf = v.value();
        wal_bytes += buf.len() as u64;
        let mut r = Reader::new(buf);
        while !r.done() {
            let Some(rec) = codec::wal_next(&mut r) else {
                tracing::warn!(
                    seq = k.value(),
                    "Log batch ends in an undecodable record; skipping the rest of it."
                );
                break;
            };
            replayed += 1;
            replay(&mut index, rec);
        }
    }
    drop((series, meta, wal, tx));
    disk.seq.store(max_seq, Ordering::Relaxed);
    store.stats.wal_bytes.store(wal_bytes, Ordering::Relaxed);
    store.stats.replayed_records.store(replayed, Ordering::Relaxed);
    for s in &index.series {
        let d = s.data.read();
        if let Some(n) = s.node {
            if let Some(node) = index.nodes.get(n as usize) {
                node.last_seen.fetch_max(d.last_ts, Ordering::Relaxed);
            }
        }
    }
    if let Err(e) = disk.fill_reserve() {
        let reason = format!(
            "no room for the disk reserve ({} bytes) in {}: {e}",
            disk.reserve_bytes,
            dir.display()
        );
        tracing::error!(reason, "Store starts refusing writes until the disk has room.");
        store.health.fail(reason);
    }
    store.index = RwLock::new(index);
    store.disk = Some(disk);
    tracing::info!(series = store.series_count(), replayed, "Store opened.");
    Ok(store)
}

fn replay(index: &mut Index, rec: WalRecord<'_>) {
    let (id, ts) = match &rec {
        WalRecord::Define { id, kind, metric, pairs } => {
            if index.series.get(*id as usize).is_none_or(|s| s.id != *id) {
                let s = index.insert(*id, metric, pairs, *kind);
                s.data.write().dirty = true;
            }
            return;
        }
        WalRecord::Gauge { id, ts, .. }
        | WalRecord::Counter { id, ts, .. }
        | WalRecord::Hist { id, ts, .. } => (*id, *ts),
    };
    let Some(s) = index.series.get(id as usize) else { return };
    let mut d = s.data.write();
    if d.last_ts != 0 && ts <= d.last_ts {
        return;
    }
    push_replayed(&mut d, ts, rec);
}

fn push_replayed(d: &mut SeriesData, ts: u64, rec: WalRecord<'_>) {
    if d.ts.is_empty() {
        d.mem_start = d.mem_start.min(ts).max(1);
        if d.last_ts == 0 {
            d.mem_start = ts;
        }
    }
    match rec {
        WalRecord::Gauge { v, .. } => {
            d.ts.push(ts);
            d.vals.push(v);
        }
        WalRecord::Counter { total, raw, .. } => {
            d.ts.push(ts);
            d.vals.push(total);
            d.last_total = total;
            if let Some((start, raw)) = raw {
                d.cum = Cumulative::Counter { start, raw };
            }
        }
        WalRecord::Hist { delta, cum, .. } => {
            d.push_hist(ts, &delta);
            if let Some((start, prev)) = cum {
                d.cum = Cumulative::Hist { start, prev };
            }
        }
        WalRecord::Define { .. } => return,
    }
    d.last_ts = ts;
    d.dirty = true;
}

/// Writes the pending log buffer as one redb transaction with an fsync. On failure the store
/// starts failing (ingest refuses, `/readyz` not ready), gives up its disk reserve, reopens the
/// database and tries once more, so what was already acknowledged reaches the disk; the
/// records stay queued for the next commit while it cannot. While failing, each call also
/// checks whether the disk has room again and, if so, restores the reserve and recovers.
pub(crate) fn commit(store: &Store) -> Result<usize, StoreError> {
    let Some(disk) = &store.disk else { return Ok(0) };
    let _guard = disk.commit_lock.lock();
    let r = match commit_once(store, disk) {
        Ok(n) => Ok(n),
        Err(e) => {
            disk_failed(store, disk, &e);
            commit_once(store, disk)
        }
    };
    if r.is_ok() && store.health.is_failing() {
        try_recover(store, disk);
    }
    r
}

fn commit_once(store: &Store, disk: &Disk) -> Result<usize, StoreError> {
    if disk.db.read().is_none() {
        disk.reopen()?;
    }
    let started = crate::clock::Stopwatch::start();
    let buf = std::mem::take(&mut *store.wal.lock());
    if buf.is_empty() {
        return Ok(0);
    }
    let seq = disk.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let result = disk.write(|tx| {
        tx.open_table(WAL)?.insert(seq, buf.as_slice())?;
        Ok(())
    });
    if let Err(e) = result {
        // Put the records back in front so nothing acknowledged is dropped; the next commit
        // retries them.
        let mut w = store.wal.lock();
        let newer = std::mem::take(&mut *w);
        *w = buf;
        w.extend_from_slice(&newer);
        store.stats.errors.fetch_add(1, Ordering::Relaxed);
        return Err(e);
    }
    store.stats.commits.fetch_add(1, Ordering::Relaxed);
    store.stats.wal_bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
    store.stats.last_commit_nanos.store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok(buf.len())
}

/// A write failed: refuse new data, make room from the reserve, and reopen the database.
fn disk_failed(store: &Store, disk: &Disk, e: &StoreError) {
    let was_failing = store.health.is_failing();
    store.health.fail(format!("store cannot write to disk: {e}"));
    let released = disk.release_reserve();
    if !was_failing {
        tracing::error!(
            error = %e,
            released_reserve = released,
            "Store write failed; refusing new data until the disk recovers."
        );
    }
    if let Err(e) = disk.reopen() {
        if was_failing {
            tracing::debug!(error = %e, "Store database did not reopen yet; will retry.");
        } else {
            tracing::warn!(error = %e, "Store database did not reopen yet; will retry.");
        }
    }
}

/// Leaves the failing state once the database is open, nothing is waiting to be written and
/// the filesystem has room for the reserve twice over (so the restored reserve does not leave
/// the disk as full as before).
fn try_recover(store: &Store, disk: &Disk) {
    if disk.db.read().is_none() || !store.wal.lock().is_empty() {
        return;
    }
    let want = disk.reserve_bytes.max(1 << 20).saturating_mul(2);
    if disk.free_bytes().is_some_and(|free| free < want) {
        return;
    }
    if disk.fill_reserve().is_err() {
        return;
    }
    store.health.recover();
    tracing::info!("Store writes to disk again; accepting data.");
}

pub(crate) fn checkpoint(store: &Store, now: u64) -> Result<(), StoreError> {
    let Some(disk) = &store.disk else {
        evict(store, now);
        return Ok(());
    };
    let _one = disk.checkpoint_lock.lock();
    if let Some(reason) = store.unavailable() {
        // Blocks would need room the disk does not have; the log on disk holds the data, and
        // the commit below retries what is still queued.
        commit(store)?;
        return Err(StoreError::Db(format!("checkpoint skipped: {reason}")));
    }
    let r = checkpoint_disk(store, disk, now);
    if let Err(e) = &r {
        store.stats.errors.fetch_add(1, Ordering::Relaxed);
        // A failed commit inside the checkpoint has handled the disk already.
        if !matches!(e, StoreError::Corrupt(_)) && !store.health.is_failing() {
            let _guard = disk.commit_lock.lock();
            disk_failed(store, disk, e);
        }
    }
    r
}

/// What phase 1 of a checkpoint took from a series, to give back if its transaction fails.
struct Taken {
    series: usize,
    flushed: usize,
    dirty: bool,
}

fn checkpoint_disk(store: &Store, disk: &Disk, now: u64) -> Result<(), StoreError> {
    commit(store)?;
    if let Some(reason) = store.unavailable() {
        // The commit just failed over to the reserve; blocks must not use up that room.
        return Err(StoreError::Db(format!("checkpoint skipped: {reason}")));
    }
    let upto_seq = disk.seq.load(Ordering::Relaxed);
    let series = store.series_snapshot();
    let cfg = &store.config;
    let mut block_bytes = store.stats.block_bytes.load(Ordering::Relaxed) as i128;
    let mut earliest = u64::MAX;

    // Phase 1: new raw points into blocks, changed catalog rows, and the log truncated up to
    // the last commit, in one transaction (the points are encoded before it starts).
    let mut taken = Vec::new();
    let mut raw: Vec<(u128, Vec<u8>)> = Vec::new();
    let mut rows: Vec<(u32, Vec<u8>)> = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let mut d = s.data.write();
        if let Some(t) = d.ts.first() {
            earliest = earliest.min(*t);
        }
        let (old_flushed, dirty) = (d.flushed, d.dirty);
        if d.flushed < d.ts.len() {
            let pts: Vec<AggPoint> = (d.flushed..d.ts.len())
                .map(|i| AggPoint::raw(d.ts[i], d.vals[i], d.hists.get(i, d.vals[i])))
                .collect();
            raw.push((Disk::key(0, s.id, pts[0].ts), codec::encode_block(&pts)));
            d.flushed = d.ts.len();
        }
        if d.dirty {
            d.dirty = false;
            let mut buf = Vec::new();
            codec::put_catalog(
                &mut buf,
                s.kind,
                &s.metric,
                s.labels.raw(),
                d.last_ts,
                d.last_total,
                &d.cum,
            );
            rows.push((s.id, buf));
        }
        if old_flushed != d.flushed || dirty {
            taken.push(Taken { series: i, flushed: old_flushed, dirty });
        }
    }
    let phase1 = disk.write(|tx| {
        let mut bytes = block_bytes;
        let mut blocks = tx.open_table(BLOCKS)?;
        let mut catalog = tx.open_table(SERIES)?;
        for (id, row) in &rows {
            catalog.insert(*id, row.as_slice())?;
        }
        for (key, enc) in &raw {
            bytes += enc.len() as i128;
            if let Some(old) = blocks.insert(*key, enc.as_slice())? {
                bytes -= old.value().len() as i128;
            }
        }
        tx.open_table(META)?.insert("block_bytes", bytes.max(0) as u64)?;
        // Everything up to `upto_seq` is now in blocks or in the catalog.
        let mut wal = tx.open_table(WAL)?;
        let mut wal_deleted = 0u64;
        wal.retain_in(0..=upto_seq, |_, v| {
            wal_deleted += v.len() as u64;
            false
        })?;
        Ok((bytes, wal_deleted))
    });
    let (bytes, wal_deleted) = match phase1 {
        Ok(v) => v,
        Err(e) => {
            // Not on disk after all: the next checkpoint writes these points and rows again.
            for t in taken {
                if let Some(s) = series.get(t.series) {
                    let mut d = s.data.write();
                    d.flushed = d.flushed.min(t.flushed);
                    d.dirty |= t.dirty;
                }
            }
            return Err(e);
        }
    };
    block_bytes = bytes;
    store.stats.block_bytes.store(block_bytes.max(0) as u64, Ordering::Relaxed);
    store.stats.wal_bytes.fetch_sub(
        wal_deleted.min(store.stats.wal_bytes.load(Ordering::Relaxed)),
        Ordering::Relaxed,
    );

    // Phase 2: downsampled tiers. Tier k is built from tier k-1, one span (60 aggregates) at a
    // time, once the span lies a grace period in the past; spans older than the tier's
    // retention are skipped. Each transaction covers a bounded amount of work (spans × series).
    let grace = cfg.checkpoint_interval.get().as_nanos() as u64;
    let spans_per_tx = (20_000 / series.len().max(1)).max(1);
    for k in 1..=cfg.tiers.len() {
        let span = cfg.span(k);
        let width = cfg.tiers[k - 1].resolution.get().as_nanos() as u64;
        let target = now.saturating_sub(grace) / span * span;
        let mut done = disk.tier_done[k].load(Ordering::Relaxed);
        if done == 0 {
            if earliest == u64::MAX {
                continue;
            }
            done = earliest / span * span;
        }
        done = done.max(before(now, cfg.retention(k)) / span * span);
        let mut spans = 0;
        while done.saturating_add(span) <= target && spans < 2_000 {
            let (next, bytes) = disk.write(|tx| {
                let mut bytes = block_bytes;
                let mut at = done;
                let mut blocks = tx.open_table(BLOCKS)?;
                let mut n = 0;
                while at.saturating_add(span) <= target && n < spans_per_tx {
                    bytes += downsample_span(&mut blocks, &series, k, at, span, width)?;
                    at += span;
                    n += 1;
                }
                let mut meta = tx.open_table(META)?;
                meta.insert(format!("tier{k}_done").as_str(), at)?;
                meta.insert("block_bytes", bytes.max(0) as u64)?;
                Ok((at, bytes))
            })?;
            spans += ((next - done) / span) as usize;
            done = next;
            block_bytes = bytes;
            disk.tier_done[k].store(done, Ordering::Relaxed);
            store.stats.block_bytes.store(block_bytes.max(0) as u64, Ordering::Relaxed);
        }
        disk.tier_done[k].store(done, Ordering::Relaxed);
    }

    // Phase 3: retention by age, then by bytes (the oldest data of the finest tier goes first).
    let (deleted, bytes) = disk.write(|tx| {
        let mut bytes = block_bytes;
        let mut blocks = tx.open_table(BLOCKS)?;
        let mut deleted = 0i128;
        for k in 0..=cfg.tiers.len() {
            let shrink = disk.retention_shrink[k].load(Ordering::Relaxed);
            let keep = cfg.retention(k).as_nanos() as u64 >> shrink.min(63);
            deleted += prune(&mut blocks, &series, k, now.saturating_sub(keep))?;
        }
        bytes -= deleted;
        let mut rounds = 0;
        while bytes > cfg.max_bytes as i128 && rounds < 16 {
            rounds += 1;
            // Shrink the finest tier that still keeps more than its memory-backed minimum.
            let Some(k) = (0..=cfg.tiers.len()).find(|k| {
                let keep = cfg.retention(*k).as_nanos() as u64
                    >> disk.retention_shrink[*k].load(Ordering::Relaxed).min(63);
                keep > cfg.span(*k).max(cfg.memory_window.get().as_nanos() as u64)
            }) else {
                break;
            };
            let shrink = disk.retention_shrink[k].fetch_add(1, Ordering::Relaxed) + 1;
            let keep = cfg.retention(k).as_nanos() as u64 >> shrink.min(63);
            let d = prune(&mut blocks, &series, k, now.saturating_sub(keep))?;
            deleted += d;
            bytes -= d;
            tracing::warn!(
                tier = k,
                keep_secs = keep / 1_000_000_000,
                "Store over max_bytes; shortened retention."
            );
        }
        tx.open_table(META)?.insert("block_bytes", bytes.max(0) as u64)?;
        Ok((deleted, bytes))
    })?;
    store.stats.retention_deleted_bytes.fetch_add(deleted.max(0) as u64, Ordering::Relaxed);
    store.stats.block_bytes.store(bytes.max(0) as u64, Ordering::Relaxed);
    store.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
    // Only now that the blocks are durable may memory let go of them.
    evict(store, now);
    Ok(())
}

/// Builds the tier-`k` block of every series for the span starting at `a`; returns the change
/// in stored bytes.
fn downsample_span(
    blocks: &mut redb::Table<u128, &[u8]>,
    series: &[Arc<super::Series>],
    k: usize,
    a: u64,
    span: u64,
    width: u64,
) -> Result<i128, StoreError> {
    let b = a + span - 1;
    let mut bytes = 0i128;
    for s in series {
        let src = {
            let d = s.data.read();
            if d.last_ts < a || d.last_ts == 0 {
                continue;
            }
            if k == 1 && d.mem_start <= a {
                let i0 = d.ts.partition_point(|t| *t < a);
                let i1 = d.ts.partition_point(|t| *t <= b);
                (i0..i1)
                    .map(|i| AggPoint::raw(d.ts[i], d.vals[i], d.hists.get(i, d.vals[i])))
                    .collect()
            } else {
                Vec::new()
            }
        };
        let src = if src.is_empty() {
            let mut v = read_blocks(blocks, k - 1, s.id, a, b)?;
            v.retain(|p| p.ts >= a);
            v
        } else {
            src
        };
        if src.is_empty() {
            continue;
        }
        let mut agg = Vec::new();
        codec::downsample(&src, width, &mut agg);
        let enc = codec::encode_block(&agg);
        bytes += enc.len() as i128;
        if let Some(old) = blocks.insert(Disk::key(k, s.id, a), enc.as_slice())? {
            bytes -= old.value().len() as i128;
        }
    }
    Ok(bytes)
}

/// Deletes blocks of `tier` that end before `cutoff`; returns the bytes deleted.
fn prune(
    blocks: &mut redb::Table<u128, &[u8]>,
    series: &[Arc<super::Series>],
    tier: usize,
    cutoff: u64,
) -> Result<i128, StoreError> {
    let mut deleted = 0i128;
    for s in series {
        let lo = Disk::key(tier, s.id, 0);
        let hi = Disk::key(tier, s.id, cutoff);
        blocks.retain_in(lo..hi, |_, v| {
            let keep = codec::block_last_ts(v).is_some_and(|t| t >= cutoff);
            if !keep {
                deleted += v.len() as i128;
            }
            keep
        })?;
    }
    Ok(deleted)
}

/// Drops points older than the memory window that are already on disk (or, for an in-memory
/// store, older than the raw retention).
fn evict(store: &Store, now: u64) {
    let persistent = store.disk.is_some();
    let horizon = before(
        now,
        if persistent {
            store.config.memory_window.get()
        } else {
            store.config.raw_retention.get()
        },
    );
    for s in store.series_snapshot() {
        let mut d = s.data.write();
        let limit = if persistent { d.flushed } else { d.ts.len() };
        let n = d.ts[..limit].partition_point(|t| *t < horizon);
        if n == 0 {
            continue;
        }
        d.base_total = d.vals[n - 1];
        d.ts.drain(..n);
        d.vals.drain(..n);
        if s.kind == super::SeriesKind::Histogram {
            d.hists.drain_front(n);
            let first = d.ts.first().copied().unwrap_or(u64::MAX);
            d.trim_rollups(first);
        }
        d.flushed -= n.min(d.flushed);
        d.older_on_disk = persistent;
        d.mem_start = d.ts.first().copied().unwrap_or(d.last_ts.saturating_add(1));
    }
}

/// The committer loop: a commit every `commit_interval`, in its own task so that nothing
/// else (a checkpoint in particular) delays it.
async fn commit_loop(store: Arc<Store>, cancel: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(store.config.commit_interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.commit()).await {
                    // The failing state was logged where it began.
                    Ok(Err(e)) => tracing::debug!(error = %e, "Log commit failed; will retry."),
                    Err(e) => tracing::error!(error = %e, "Log commit task failed."),
                    Ok(Ok(_)) => {}
                }
            }
        }
    }
}

/// Runs the committer and the checkpointer until `cancel` fires, then checkpoints (or at least
/// commits) a last time.
pub(crate) async fn run_background(store: Arc<Store>, cancel: tokio_util::sync::CancellationToken) {
    let committer = tokio::spawn(commit_loop(store.clone(), cancel.clone()));
    let mut checkpoint_tick = tokio::time::interval(store.config.checkpoint_interval.get());
    checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checkpoint_tick.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = checkpoint_tick.tick() => {
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.checkpoint()).await {
                    Ok(Err(e)) if store.unavailable().is_some() => {
                        tracing::debug!(error = %e, "Checkpoint not done; the disk is failing.");
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "Checkpoint failed; will retry."),
                    Err(e) => tracing::error!(error = %e, "Checkpoint task failed."),
                    Ok(Ok(())) => {}
                }
            }
        }
    }
    let _ = committer.await;
    let s = store.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = s.checkpoint() {
            let _ = s.commit();
            let unwritten = s.wal.lock().len();
            if unwritten == 0 {
                tracing::warn!(
                    error = %e,
                    "Final checkpoint not done; the write-ahead log on disk holds the data and \
                     is replayed at the next start."
                );
            } else {
                tracing::error!(
                    error = %e,
                    unwritten_bytes = unwritten,
                    "Final checkpoint and commit failed; the newest log records are lost."
                );
            }
        }
    })
    .await;
}
