//! Persistence in redb: the write-ahead log (group commit), the series catalog, compressed
//! blocks per tier, downsampling and retention. One redb file, `<data_dir>/store.redb`.
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
    db: Database,
    path: PathBuf,
    seq: AtomicU64,
    tier_done: Vec<AtomicU64>,
    retention_shrink: Vec<AtomicU64>,
    commit_lock: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk").field("path", &self.path).finish()
    }
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
        let tx = self.db.begin_read()?;
        let table = match tx.open_table(BLOCKS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        read_blocks(&table, tier, id, a, b)
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
    // A modest page cache: recent data is served from the store's own memory, so redb's cache
    // only speeds up reads of older blocks (its 1 GiB default would dominate RSS).
    let db = Database::builder()
        .set_cache_size(64 << 20)
        .create(&path)
        .map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
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
        db,
        path,
        seq: AtomicU64::new(0),
        tier_done: (0..ntiers).map(|_| AtomicU64::new(0)).collect(),
        retention_shrink: (0..ntiers).map(|_| AtomicU64::new(0)).collect(),
        commit_lock: std::sync::Mutex::new(()),
    };
    let mut store = Store::in_memory(config, clock);
    let mut index = Index::default();
    let tx = disk.db.begin_read()?;
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
        if let Ok(mut d) = s.data.write() {
            d.last_ts = row.last_ts;
            d.last_total = row.last_total;
            d.base_total = row.last_total;
            d.cum = row.cum;
            d.mem_start = row.last_ts.saturating_add(1);
            d.older_on_disk = row.last_ts > 0;
            d.dirty = false;
        }
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
        if let Ok(d) = s.data.read() {
            if let Some(n) = s.node {
                if let Some(node) = index.nodes.get(n as usize) {
                    node.last_seen.fetch_max(d.last_ts, Ordering::Relaxed);
                }
            }
        }
    }
    store.index = std::sync::RwLock::new(index);
    store.disk = Some(disk);
    tracing::info!(series = store.series_count(), replayed, "Store opened.");
    Ok(store)
}

fn replay(index: &mut Index, rec: WalRecord<'_>) {
    let (id, ts) = match &rec {
        WalRecord::Define { id, kind, metric, pairs } => {
            if index.series.get(*id as usize).is_none_or(|s| s.id != *id) {
                let s = index.insert(*id, metric, pairs, *kind);
                if let Ok(mut d) = s.data.write() {
                    d.dirty = true;
                }
            }
            return;
        }
        WalRecord::Gauge { id, ts, .. }
        | WalRecord::Counter { id, ts, .. }
        | WalRecord::Hist { id, ts, .. } => (*id, *ts),
    };
    let Some(s) = index.series.get(id as usize) else { return };
    let Ok(mut d) = s.data.write() else { return };
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

/// Writes the pending log buffer as one redb transaction with an fsync.
pub(crate) fn commit(store: &Store) -> Result<usize, StoreError> {
    let Some(disk) = &store.disk else { return Ok(0) };
    let _guard =
        disk.commit_lock.lock().map_err(|_| StoreError::Db("commit lock poisoned".into()))?;
    let started = std::time::Instant::now(); // measures the commit for /metrics only, not logic
    let buf = match store.wal.lock() {
        Ok(mut w) => std::mem::take(&mut *w),
        Err(_) => return Err(StoreError::Db("log buffer lock poisoned".into())),
    };
    if buf.is_empty() {
        return Ok(0);
    }
    let seq = disk.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let result = (|| -> Result<(), StoreError> {
        let mut tx = disk.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut t = tx.open_table(WAL)?;
            t.insert(seq, buf.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    })();
    if let Err(e) = result {
        // Put the records back in front so nothing acknowledged is dropped; the next commit
        // retries them.
        if let Ok(mut w) = store.wal.lock() {
            let newer = std::mem::take(&mut *w);
            *w = buf;
            w.extend_from_slice(&newer);
        }
        store.stats.errors.fetch_add(1, Ordering::Relaxed);
        return Err(e);
    }
    store.stats.commits.fetch_add(1, Ordering::Relaxed);
    store.stats.wal_bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
    store.stats.last_commit_nanos.store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok(buf.len())
}

pub(crate) fn checkpoint(store: &Store, now: u64) -> Result<(), StoreError> {
    if store.disk.is_none() {
        evict(store, now);
        return Ok(());
    }
    let r = checkpoint_disk(store, now);
    if r.is_err() {
        store.stats.errors.fetch_add(1, Ordering::Relaxed);
    }
    r
}

fn checkpoint_disk(store: &Store, now: u64) -> Result<(), StoreError> {
    let Some(disk) = &store.disk else { return Ok(()) };
    commit(store)?;
    let upto_seq = disk.seq.load(Ordering::Relaxed);
    let series = store.series_snapshot();
    let cfg = &store.config;
    let mut tx = disk.db.begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    let mut block_bytes = store.stats.block_bytes.load(Ordering::Relaxed) as i128;
    let mut earliest = u64::MAX;
    {
        let mut blocks = tx.open_table(BLOCKS)?;
        let mut catalog = tx.open_table(SERIES)?;
        let mut buf = Vec::new();
        for s in &series {
            let (points, row) = {
                let Ok(mut d) = s.data.write() else {
                    continue;
                };
                if let Some(t) = d.ts.first() {
                    earliest = earliest.min(*t);
                }
                let pts: Vec<AggPoint> = (d.flushed..d.ts.len())
                    .map(|i| AggPoint::raw(d.ts[i], d.vals[i], d.hists.get(i, d.vals[i])))
                    .collect();
                d.flushed = d.ts.len();
                let row = if d.dirty {
                    d.dirty = false;
                    buf.clear();
                    codec::put_catalog(
                        &mut buf,
                        s.kind,
                        &s.metric,
                        s.labels.raw(),
                        d.last_ts,
                        d.last_total,
                        &d.cum,
                    );
                    Some(buf.clone())
                } else {
                    None
                };
                (pts, row)
            };
            if let Some(row) = row {
                catalog.insert(s.id, row.as_slice())?;
            }
            if let Some(first) = points.first() {
                let enc = codec::encode_block(&points);
                block_bytes += enc.len() as i128;
                if let Some(old) = blocks.insert(Disk::key(0, s.id, first.ts), enc.as_slice())? {
                    block_bytes -= old.value().len() as i128;
                }
            }
        }
        // Downsampled tiers: tier k is built from tier k-1, one span (60 aggregates) at a time,
        // once the span lies a grace period in the past.
        let grace = cfg.checkpoint_interval.get().as_nanos() as u64;
        let mut meta = tx.open_table(META)?;
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
            let mut spans = 0;
            while done + span <= target && spans < 2_000 {
                let (a, b) = (done, done + span - 1);
                for s in &series {
                    let src = {
                        let Ok(d) = s.data.read() else { continue };
                        if d.last_ts < a || d.last_ts == 0 {
                            continue;
                        }
                        if k == 1 && d.mem_start <= a {
                            let i0 = d.ts.partition_point(|t| *t < a);
                            let i1 = d.ts.partition_point(|t| *t <= b);
                            (i0..i1)
                                .map(|i| {
                                    AggPoint::raw(d.ts[i], d.vals[i], d.hists.get(i, d.vals[i]))
                                })
                                .collect()
                        } else {
                            Vec::new()
                        }
                    };
                    let src = if src.is_empty() {
                        let mut v = read_blocks(&blocks, k - 1, s.id, a, b)?;
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
                    block_bytes += enc.len() as i128;
                    if let Some(old) = blocks.insert(Disk::key(k, s.id, a), enc.as_slice())? {
                        block_bytes -= old.value().len() as i128;
                    }
                }
                done += span;
                spans += 1;
            }
            disk.tier_done[k].store(done, Ordering::Relaxed);
            meta.insert(format!("tier{k}_done").as_str(), done)?;
        }
        // Retention by age, then by bytes (the oldest data of the finest tier goes first).
        let mut deleted = 0i128;
        for k in 0..=cfg.tiers.len() {
            let shrink = disk.retention_shrink[k].load(Ordering::Relaxed);
            let keep = cfg.retention(k).as_nanos() as u64 >> shrink.min(63);
            deleted += prune(&mut blocks, &series, k, now.saturating_sub(keep))?;
        }
        block_bytes -= deleted;
        let mut rounds = 0;
        while block_bytes > cfg.max_bytes as i128 && rounds < 16 {
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
            block_bytes -= d;
            tracing::warn!(
                tier = k,
                keep_secs = keep / 1_000_000_000,
                "Store over max_bytes; shortened retention."
            );
        }
        store.stats.retention_deleted_bytes.fetch_add(deleted.max(0) as u64, Ordering::Relaxed);
        meta.insert("block_bytes", block_bytes.max(0) as u64)?;
        // Truncate the log: everything up to `upto_seq` is in blocks or in the catalog.
        let mut wal = tx.open_table(WAL)?;
        let mut wal_deleted = 0u64;
        wal.retain_in(0..=upto_seq, |_, v| {
            wal_deleted += v.len() as u64;
            false
        })?;
        store.stats.wal_bytes.fetch_sub(
            wal_deleted.min(store.stats.wal_bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    }
    tx.commit()?;
    store.stats.block_bytes.store(block_bytes.max(0) as u64, Ordering::Relaxed);
    store.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
    // Only now that the blocks are durable may memory let go of them.
    evict(store, now);
    Ok(())
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
        let Ok(mut d) = s.data.write() else { continue };
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

/// The committer and checkpointer loop.
pub(crate) async fn run_background(store: Arc<Store>, cancel: tokio_util::sync::CancellationToken) {
    let commit_every = store.config.commit_interval.get();
    let checkpoint_every = store.config.checkpoint_interval.get();
    let mut commit_tick = tokio::time::interval(commit_every);
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checkpoint_tick = tokio::time::interval(checkpoint_every);
    checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checkpoint_tick.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = commit_tick.tick() => {
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.commit()).await {
                    Ok(Err(e)) => tracing::error!(error = %e, "Log commit failed; will retry."),
                    Err(e) => tracing::error!(error = %e, "Log commit task failed."),
                    Ok(Ok(_)) => {}
                }
            }
            _ = checkpoint_tick.tick() => {
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.checkpoint()).await {
                    Ok(Err(e)) => tracing::error!(error = %e, "Checkpoint failed; will retry."),
                    Err(e) => tracing::error!(error = %e, "Checkpoint task failed."),
                    Ok(Ok(())) => {}
                }
            }
        }
    }
    let s = store.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = s.checkpoint() {
            tracing::error!(error = %e, "Final checkpoint failed; the log still holds the data.");
        }
    })
    .await;
}
