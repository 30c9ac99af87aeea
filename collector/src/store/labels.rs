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
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut v: Vec<(Arc<str>, Arc<str>)> =
            pairs.into_iter().map(|(k, v)| (Arc::from(k.as_ref()), Arc::from(v.as_ref()))).collect();
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
pub(crate) fn series_hash<'a>(metric: &str, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
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

/// A second, independent identity hash (FNV-1a). The store matches series by both hashes
/// (128 bits) instead of comparing every attribute string on the ingest path; a false match
/// would need a simultaneous collision of two unrelated 64-bit hashes.
pub(crate) fn series_hash2<'a>(metric: &str, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8], sep: u8| {
        for b in bytes.iter().chain(std::iter::once(&sep)) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(metric.as_bytes(), 0xff);
    for (k, v) in pairs {
        eat(k.as_bytes(), 0xfe);
        eat(v.as_bytes(), 0xfd);
    }
    h
}
