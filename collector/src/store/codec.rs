//! Byte formats of the store: write-ahead log records and compressed blocks. Timestamps are
//! delta-varint encoded; values are XOR'd with the previous value of their column and the
//! bit-reversed result varint encoded, so steady series cost a byte or two a point.

use std::sync::Arc;

use super::hist::{Buckets, ExpSide, Histogram};
use super::{Cumulative, SeriesKind};

/// A point read back from disk or memory, aggregated or raw. For a raw point `count` is 1 and
/// `sum = min = max = last` is the value (gauge value, counter total, histogram interval sum).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AggPoint {
    pub ts: u64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    pub hist: Option<Histogram>,
}

impl AggPoint {
    pub fn raw(ts: u64, v: f64, hist: Option<Histogram>) -> Self {
        AggPoint { ts, count: 1, sum: v, min: v, max: v, last: v, hist }
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A cursor over encoded bytes; every read fails cleanly on truncation.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
    pub fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    pub fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    pub fn u32(&mut self) -> Option<u32> {
        let s = self.buf.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_le_bytes(s.try_into().ok()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        let s = self.buf.get(self.pos..self.pos + 8)?;
        self.pos += 8;
        Some(u64::from_le_bytes(s.try_into().ok()?))
    }
    pub fn f64(&mut self) -> Option<f64> {
        self.u64().map(f64::from_bits)
    }
    pub fn str(&mut self) -> Option<&'a str> {
        let n = self.varint()? as usize;
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        std::str::from_utf8(s).ok()
    }
}

// ---- histograms ----

fn put_side(out: &mut Vec<u8>, s: &ExpSide) {
    put_varint(out, zigzag(s.offset as i64));
    put_varint(out, s.counts.len() as u64);
    for c in &s.counts {
        put_varint(out, *c);
    }
}

fn get_side(r: &mut Reader<'_>) -> Option<ExpSide> {
    let offset = unzigzag(r.varint()?) as i32;
    let n = r.varint()? as usize;
    let mut counts = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        counts.push(r.varint()?);
    }
    Some(ExpSide { offset, counts })
}

/// Encodes a histogram; `prev_bounds` lets consecutive points share explicit bounds.
pub(crate) fn put_hist(out: &mut Vec<u8>, h: &Histogram, prev_bounds: Option<&Arc<[f64]>>) {
    put_varint(out, h.count);
    out.extend_from_slice(&h.sum.to_bits().to_le_bytes());
    let flags = (h.min.is_some() as u8) | ((h.max.is_some() as u8) << 1);
    out.push(flags);
    if let Some(m) = h.min {
        out.extend_from_slice(&m.to_bits().to_le_bytes());
    }
    if let Some(m) = h.max {
        out.extend_from_slice(&m.to_bits().to_le_bytes());
    }
    match &h.buckets {
        Buckets::Explicit { bounds, counts } => {
            if prev_bounds.is_some_and(|p| p == bounds) {
                out.push(1);
            } else {
                out.push(0);
                put_varint(out, bounds.len() as u64);
                for b in bounds.iter() {
                    out.extend_from_slice(&b.to_bits().to_le_bytes());
                }
            }
            put_varint(out, counts.len() as u64);
            for c in counts {
                put_varint(out, *c);
            }
        }
        Buckets::Exponential { scale, zero_count, positive, negative } => {
            out.push(2);
            put_varint(out, zigzag(*scale as i64));
            put_varint(out, *zero_count);
            put_side(out, positive);
            put_side(out, negative);
        }
    }
}

pub(crate) fn get_hist(r: &mut Reader<'_>, prev_bounds: Option<&Arc<[f64]>>) -> Option<Histogram> {
    let count = r.varint()?;
    let sum = r.f64()?;
    let flags = r.u8()?;
    let min = if flags & 1 != 0 { Some(r.f64()?) } else { None };
    let max = if flags & 2 != 0 { Some(r.f64()?) } else { None };
    let buckets = match r.u8()? {
        tag @ (0 | 1) => {
            let bounds: Arc<[f64]> = if tag == 1 {
                prev_bounds?.clone()
            } else {
                let n = r.varint()? as usize;
                let mut b = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    b.push(r.f64()?);
                }
                b.into()
            };
            let n = r.varint()? as usize;
            let mut counts = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                counts.push(r.varint()?);
            }
            Buckets::Explicit { bounds, counts }
        }
        2 => {
            let scale = unzigzag(r.varint()?) as i32;
            let zero_count = r.varint()?;
            let positive = get_side(r)?;
            let negative = get_side(r)?;
            Buckets::Exponential { scale, zero_count, positive, negative }
        }
        _ => return None,
    };
    Some(Histogram { count, sum, min, max, buckets })
}

fn bounds_of(h: &Histogram) -> Option<&Arc<[f64]>> {
    match &h.buckets {
        Buckets::Explicit { bounds, .. } => Some(bounds),
        Buckets::Exponential { .. } => None,
    }
}

// ---- write-ahead log records ----

const REC_DEFINE: u8 = 0;
const REC_GAUGE: u8 = 1;
const REC_COUNTER: u8 = 2;
const REC_HIST: u8 = 3;

pub(crate) fn wal_define(
    w: &mut Vec<u8>,
    id: u32,
    metric: &str,
    kind: SeriesKind,
    pairs: &[(&str, &str)],
) {
    w.push(REC_DEFINE);
    w.extend_from_slice(&id.to_le_bytes());
    w.push(kind.code());
    put_str(w, metric);
    put_varint(w, pairs.len() as u64);
    for (k, v) in pairs {
        put_str(w, k);
        put_str(w, v);
    }
}

pub(crate) fn wal_gauge(w: &mut Vec<u8>, id: u32, ts: u64, v: f64) {
    w.push(REC_GAUGE);
    w.extend_from_slice(&id.to_le_bytes());
    w.extend_from_slice(&ts.to_le_bytes());
    w.extend_from_slice(&v.to_bits().to_le_bytes());
}

pub(crate) fn wal_counter(w: &mut Vec<u8>, id: u32, ts: u64, total: f64, raw: Option<(u64, f64)>) {
    w.push(REC_COUNTER);
    w.extend_from_slice(&id.to_le_bytes());
    w.extend_from_slice(&ts.to_le_bytes());
    w.extend_from_slice(&total.to_bits().to_le_bytes());
    match raw {
        Some((start, v)) => {
            w.push(1);
            w.extend_from_slice(&start.to_le_bytes());
            w.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        None => w.push(0),
    }
}

pub(crate) fn wal_hist(
    w: &mut Vec<u8>,
    id: u32,
    ts: u64,
    delta: &Histogram,
    cum: Option<(u64, &Histogram)>,
) {
    w.push(REC_HIST);
    w.extend_from_slice(&id.to_le_bytes());
    w.extend_from_slice(&ts.to_le_bytes());
    put_hist(w, delta, None);
    match cum {
        Some((start, h)) => {
            w.push(1);
            w.extend_from_slice(&start.to_le_bytes());
            put_hist(w, h, None);
        }
        None => w.push(0),
    }
}

/// One decoded log record. Records are decoded and applied one at a time, so the size of the
/// histogram variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum WalRecord<'a> {
    Define { id: u32, kind: SeriesKind, metric: &'a str, pairs: Vec<(&'a str, &'a str)> },
    Gauge { id: u32, ts: u64, v: f64 },
    Counter { id: u32, ts: u64, total: f64, raw: Option<(u64, f64)> },
    Hist { id: u32, ts: u64, delta: Histogram, cum: Option<(u64, Histogram)> },
}

pub(crate) fn wal_next<'a>(r: &mut Reader<'a>) -> Option<WalRecord<'a>> {
    Some(match r.u8()? {
        REC_DEFINE => {
            let id = r.u32()?;
            let kind = SeriesKind::from_code(r.u8()?)?;
            let metric = r.str()?;
            let n = r.varint()? as usize;
            let mut pairs = Vec::with_capacity(n.min(256));
            for _ in 0..n {
                pairs.push((r.str()?, r.str()?));
            }
            WalRecord::Define { id, kind, metric, pairs }
        }
        REC_GAUGE => WalRecord::Gauge { id: r.u32()?, ts: r.u64()?, v: r.f64()? },
        REC_COUNTER => {
            let (id, ts, total) = (r.u32()?, r.u64()?, r.f64()?);
            let raw = if r.u8()? == 1 { Some((r.u64()?, r.f64()?)) } else { None };
            WalRecord::Counter { id, ts, total, raw }
        }
        REC_HIST => {
            let (id, ts) = (r.u32()?, r.u64()?);
            let delta = get_hist(r, None)?;
            let cum = if r.u8()? == 1 {
                let start = r.u64()?;
                Some((start, get_hist(r, None)?))
            } else {
                None
            };
            WalRecord::Hist { id, ts, delta, cum }
        }
        _ => return None,
    })
}

// ---- series catalog rows ----

/// A series as the catalog keeps it: identity plus the state a restart needs.
pub(crate) struct CatalogRow {
    pub kind: SeriesKind,
    pub metric: String,
    pub pairs: Vec<(String, String)>,
    pub last_ts: u64,
    pub last_total: f64,
    pub cum: Cumulative,
}

pub(crate) fn put_catalog(
    out: &mut Vec<u8>,
    kind: SeriesKind,
    metric: &str,
    pairs: &[(std::sync::Arc<str>, std::sync::Arc<str>)],
    last_ts: u64,
    last_total: f64,
    cum: &Cumulative,
) {
    out.push(kind.code());
    put_str(out, metric);
    put_varint(out, pairs.len() as u64);
    for (k, v) in pairs {
        put_str(out, k);
        put_str(out, v);
    }
    out.extend_from_slice(&last_ts.to_le_bytes());
    out.extend_from_slice(&last_total.to_bits().to_le_bytes());
    match cum {
        Cumulative::None => out.push(0),
        Cumulative::Counter { start, raw } => {
            out.push(1);
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&raw.to_bits().to_le_bytes());
        }
        Cumulative::Hist { start, prev } => {
            out.push(2);
            out.extend_from_slice(&start.to_le_bytes());
            put_hist(out, prev, None);
        }
    }
}

pub(crate) fn get_catalog(buf: &[u8]) -> Option<CatalogRow> {
    let mut r = Reader::new(buf);
    let kind = SeriesKind::from_code(r.u8()?)?;
    let metric = r.str()?.to_string();
    let n = r.varint()? as usize;
    let mut pairs = Vec::with_capacity(n.min(256));
    for _ in 0..n {
        pairs.push((r.str()?.to_string(), r.str()?.to_string()));
    }
    let last_ts = r.u64()?;
    let last_total = r.f64()?;
    let cum = match r.u8()? {
        0 => Cumulative::None,
        1 => Cumulative::Counter { start: r.u64()?, raw: r.f64()? },
        2 => {
            let start = r.u64()?;
            Cumulative::Hist { start, prev: get_hist(&mut r, None)? }
        }
        _ => return None,
    };
    Some(CatalogRow { kind, metric, pairs, last_ts, last_total, cum })
}

// ---- blocks ----

struct XorCol {
    prev: u64,
}

impl XorCol {
    fn put(&mut self, out: &mut Vec<u8>, v: f64) {
        let bits = v.to_bits();
        put_varint(out, (bits ^ self.prev).reverse_bits());
        self.prev = bits;
    }
    fn get(&mut self, r: &mut Reader<'_>) -> Option<f64> {
        let bits = r.varint()?.reverse_bits() ^ self.prev;
        self.prev = bits;
        Some(f64::from_bits(bits))
    }
}

/// Encodes points (sorted by time) into a block. Layout: version, flags, count, first and last
/// timestamp, timestamp deltas, then value columns and histograms.
pub(crate) fn encode_block(points: &[AggPoint]) -> Vec<u8> {
    let simple = points
        .iter()
        .all(|p| p.count == 1 && p.sum == p.last && p.min == p.last && p.max == p.last);
    let has_hist = points.iter().any(|p| p.hist.is_some());
    let mut out = Vec::with_capacity(16 + points.len() * 4);
    out.push(1);
    out.push((simple as u8) | ((has_hist as u8) << 1));
    let first = points.first().map(|p| p.ts).unwrap_or(0);
    let last = points.last().map(|p| p.ts).unwrap_or(0);
    out.extend_from_slice(&last.to_le_bytes());
    out.extend_from_slice(&first.to_le_bytes());
    put_varint(&mut out, points.len() as u64);
    // Delta-of-delta: a steady interval costs one byte a point.
    let (mut prev, mut prev_delta) = (first, 0i64);
    for p in points {
        let delta = (p.ts - prev) as i64;
        put_varint(&mut out, zigzag(delta.wrapping_sub(prev_delta)));
        prev = p.ts;
        prev_delta = delta;
    }
    if simple {
        let mut c = XorCol { prev: 0 };
        for p in points {
            c.put(&mut out, p.last);
        }
    } else {
        for p in points {
            put_varint(&mut out, p.count);
        }
        for f in [
            |p: &AggPoint| p.sum,
            |p: &AggPoint| p.min,
            |p: &AggPoint| p.max,
            |p: &AggPoint| p.last,
        ] {
            let mut c = XorCol { prev: 0 };
            for p in points {
                c.put(&mut out, f(p));
            }
        }
    }
    if has_hist {
        let mut prev_bounds: Option<Arc<[f64]>> = None;
        for p in points {
            match &p.hist {
                Some(h) => {
                    out.push(1);
                    put_hist(&mut out, h, prev_bounds.as_ref());
                    if let Some(b) = bounds_of(h) {
                        prev_bounds = Some(b.clone());
                    }
                }
                None => out.push(0),
            }
        }
    }
    out
}

/// The newest timestamp in a block, read from its header.
pub(crate) fn block_last_ts(buf: &[u8]) -> Option<u64> {
    let mut r = Reader::new(buf);
    r.u8()?;
    r.u8()?;
    r.u64()
}

pub(crate) fn decode_block(buf: &[u8], out: &mut Vec<AggPoint>) -> Option<()> {
    let mut r = Reader::new(buf);
    if r.u8()? != 1 {
        return None;
    }
    let flags = r.u8()?;
    let (simple, has_hist) = (flags & 1 != 0, flags & 2 != 0);
    let _last = r.u64()?;
    let mut ts = r.u64()?;
    let n = r.varint()? as usize;
    let base = out.len();
    let mut delta = 0i64;
    for _ in 0..n {
        delta = delta.wrapping_add(unzigzag(r.varint()?));
        ts = ts.wrapping_add(delta as u64);
        out.push(AggPoint::raw(ts, 0.0, None));
    }
    let pts = &mut out[base..];
    if simple {
        let mut c = XorCol { prev: 0 };
        for p in pts.iter_mut() {
            let v = c.get(&mut r)?;
            p.sum = v;
            p.min = v;
            p.max = v;
            p.last = v;
        }
    } else {
        for p in pts.iter_mut() {
            p.count = r.varint()?;
        }
        for col in 0..4 {
            let mut c = XorCol { prev: 0 };
            for p in pts.iter_mut() {
                let v = c.get(&mut r)?;
                match col {
                    0 => p.sum = v,
                    1 => p.min = v,
                    2 => p.max = v,
                    _ => p.last = v,
                }
            }
        }
    }
    if has_hist {
        let mut prev_bounds: Option<Arc<[f64]>> = None;
        for p in pts.iter_mut() {
            if r.u8()? == 1 {
                let h = get_hist(&mut r, prev_bounds.as_ref())?;
                if let Some(b) = bounds_of(&h) {
                    prev_bounds = Some(b.clone());
                }
                p.hist = Some(h);
            }
        }
    }
    Some(())
}

/// Downsamples sorted points into buckets of `width` nanoseconds. Each output point carries
/// the timestamp of the last input point of its bucket (so counter totals stay exact).
pub(crate) fn downsample(points: &[AggPoint], width: u64, out: &mut Vec<AggPoint>) {
    let mut cur: Option<(u64, AggPoint)> = None;
    for p in points {
        let b = p.ts / width;
        match &mut cur {
            Some((cb, acc)) if *cb == b => {
                acc.ts = p.ts;
                acc.count += p.count;
                acc.sum += p.sum;
                acc.min = acc.min.min(p.min);
                acc.max = acc.max.max(p.max);
                acc.last = p.last;
                match (&mut acc.hist, &p.hist) {
                    (Some(a), Some(h)) => a.merge(h),
                    (None, Some(h)) => acc.hist = Some(h.clone()),
                    _ => {}
                }
            }
            _ => {
                if let Some((_, acc)) = cur.take() {
                    out.push(acc);
                }
                cur = Some((b, p.clone()));
            }
        }
    }
    if let Some((_, acc)) = cur {
        out.push(acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip() {
        let h = Histogram::explicit(vec![0.1, 0.5], vec![1, 2, 3], 4.2);
        let pts = vec![
            AggPoint {
                ts: 1_000,
                count: 3,
                sum: 3.0,
                min: 0.5,
                max: 2.0,
                last: 1.0,
                hist: Some(h.clone()),
            },
            AggPoint {
                ts: 2_500,
                count: 1,
                sum: 1.0,
                min: 1.0,
                max: 1.0,
                last: 1.0,
                hist: Some(h),
            },
        ];
        let enc = encode_block(&pts);
        let mut back = Vec::new();
        decode_block(&enc, &mut back).expect("decodes");
        assert_eq!(back, pts);
        assert_eq!(block_last_ts(&enc), Some(2_500));
        let raw: Vec<AggPoint> =
            (0..100).map(|i| AggPoint::raw(i * 1_000_000_000, 0.5, None)).collect();
        let enc = encode_block(&raw);
        assert!(enc.len() < 100 * 3, "steady gauge costs {} bytes", enc.len());
        let mut back = Vec::new();
        decode_block(&enc, &mut back).expect("decodes");
        assert_eq!(back, raw);
        // truncation never panics
        for cut in 0..enc.len() {
            let mut v = Vec::new();
            let _ = decode_block(&enc[..cut], &mut v);
        }
    }
}
