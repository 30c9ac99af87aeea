//! Series identity: a metric name plus a sorted set of string attributes, and the fast hash
//! that maps it to a series id on the ingest path without allocating.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// A sorted, deduplicated set of `key = value` attributes (resource and point attributes
/// merged, point attributes winning). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Labels(Arc<[(Arc<str>, Arc<str>)]>);

impl Labels {
    /// Builds labels from pairs in any order; a later duplicate key wins.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut v: Vec<(Arc<str>, Arc<str>)> = pairs
            .into_iter()
            .map(|(k, v)| (Arc::from(k.as_ref()), Arc::from(v.as_ref())))
            .collect();
        v.reverse();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        Self(v.into())
    }

    pub(crate) fn from_sorted(v: Vec<(Arc<str>, Arc<str>)>) -> Self {
        Self(v.into())
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &*self.0[i].1)
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn raw(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.0
    }

    /// The subset of these labels named in `keys` (missing keys are left out).
    pub fn project(&self, keys: &[String]) -> Labels {
        let mut v: Vec<(Arc<str>, Arc<str>)> = self
            .0
            .iter()
            .filter(|(k, _)| keys.iter().any(|g| g.as_str() == &**k))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Labels(v.into())
    }

    /// The labels as an ordered map, for JSON.
    pub fn to_map(&self) -> std::collections::BTreeMap<String, String> {
        self.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// FxHash: a fast, non-cryptographic hash for in-process maps whose keys are not chosen by an
/// attacker in a way that matters here (a collision costs a comparison, never correctness).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        for b in chunks.remainder() {
            self.add(*b as u64);
        }
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

/// Build-hasher for [`FxHasher`] maps.
pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
/// A HashMap with FxHash.
pub(crate) type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;

/// The identity hash of a series: metric name and sorted attribute pairs.
pub(crate) fn series_hash<'a>(
    metric: &str,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> u64 {
    let mut h = FxHasher::default();
    h.write(metric.as_bytes());
    h.write_u8(0xff);
    for (k, v) in pairs {
        h.write(k.as_bytes());
        h.write_u8(0xfe);
        h.write(v.as_bytes());
        h.write_u8(0xfd);
    }
    h.finish()
}

/// The identity of a series as two independent 64-bit hashes (128 bits): the metric name plus
/// the *set* of its attribute pairs, combined by addition so the order of the pairs does not
/// matter. Ingest computes the resource attributes' share once per resource and adds each
/// point's own pairs, so finding a known series needs neither a merged, sorted attribute list
/// nor any allocation; the store matches series by this key instead of comparing strings
/// (a false match would need a simultaneous collision of two unrelated 64-bit hashes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeriesKey(u64, u64);

const LANE_A: u64 = 0x51_7c_c1_b7_27_22_0a_95;
const LANE_B: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[inline]
fn lanes(tag: u64, parts: [&[u8]; 2]) -> SeriesKey {
    let (mut a, mut b) = (tag, !tag);
    let mut eat = |w: u64| {
        a = (a.rotate_left(5) ^ w).wrapping_mul(LANE_A);
        b = (b ^ w).wrapping_mul(LANE_B).rotate_left(29);
    };
    for p in parts {
        eat(p.len() as u64);
        let mut chunks = p.chunks_exact(8);
        for c in &mut chunks {
            let mut x = [0u8; 8];
            x.copy_from_slice(c);
            eat(u64::from_le_bytes(x));
        }
        let rem = chunks.remainder();
        if !rem.is_empty() {
            let mut x = [0u8; 8];
            x[..rem.len()].copy_from_slice(rem);
            eat(u64::from_le_bytes(x));
        }
    }
    SeriesKey(fmix(a), fmix(b ^ 0x2545_f491_4f6c_dd1d))
}

impl SeriesKey {
    /// The key of a metric name with no attributes.
    #[inline]
    pub fn metric(name: &str) -> Self {
        lanes(1, [name.as_bytes(), &[]])
    }

    /// The share of one attribute pair.
    #[inline]
    pub fn pair(key: &str, value: &str) -> Self {
        lanes(2, [key.as_bytes(), value.as_bytes()])
    }

    /// `self` plus the pair's share.
    #[inline]
    pub fn with(self, key: &str, value: &str) -> Self {
        self.plus(Self::pair(key, value))
    }

    /// The sum of two shares (e.g. a metric and a precomputed set of resource pairs).
    #[inline]
    pub fn plus(self, o: Self) -> Self {
        SeriesKey(self.0.wrapping_add(o.0), self.1.wrapping_add(o.1))
    }

    /// The key of `metric` with these pairs (unique keys, any order).
    pub fn of<'a>(metric: &str, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        pairs.into_iter().fold(Self::metric(metric), |k, (a, b)| k.with(a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_pair_order_and_separates_fields() {
        let a = SeriesKey::of("m", [("a", "1"), ("b", "2")]);
        assert_eq!(a, SeriesKey::of("m", [("b", "2"), ("a", "1")]));
        assert_eq!(a, SeriesKey::metric("m").plus(SeriesKey::pair("b", "2")).with("a", "1"));
        assert_ne!(a, SeriesKey::of("m", [("a", "2"), ("b", "1")]));
        assert_ne!(SeriesKey::of("m", [("ab", "c")]), SeriesKey::of("m", [("a", "bc")]));
        assert_ne!(SeriesKey::of("m", [("a", "12345678")]), SeriesKey::of("m", [("a", "1234567")]));
        assert_ne!(SeriesKey::of("m", []), SeriesKey::of("n", []));
        assert_ne!(SeriesKey::of("m", [("a", "")]), SeriesKey::of("m", []));
    }
}
