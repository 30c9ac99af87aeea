//! The policy engine's [`SignalSource`] over the collector's own store: each policy query is
//! translated to the store's synchronous query interface ([`crate::query`]).
//!
//! The engine and the store share one vocabulary: the same [`Stat`](crate::query::Stat), the same window
//! `(now - window, now]`, the same defaults across series (`last` sums the newest value of each
//! series), so each read passes through unchanged. Quantiles of gauges are exact over all
//! samples and of histograms come from the merged buckets, as in the series source `policy test`
//! uses ([`crate::policy::series`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::policy::signal::{
    Histogram, Selector, SignalError, SignalQuery, SignalSource, VersionSeen, chunked_range, nanos,
};
use crate::query::{self, Query, QueryError};
use crate::store::Store;

/// The attribute whose newest value [`SignalSource::latest_version`] reports.
const VERSION_ATTR: &str = "model.version";

/// A series' attributes, as the first-appearance cache keys them.
type SeriesKey = Vec<(String, String)>;

/// Store steps per range query (the store refuses more than 11 000 in one call).
const RANGE_CHUNK: u64 = 10_000;

/// A [`SignalSource`] reading the collector's store. Cheap to share as `Arc`.
#[derive(Debug)]
pub struct StoreSource {
    store: Arc<Store>,
    /// First appearance of each series, by its attributes: it never changes once known, and
    /// finding it may read the series' oldest disk block.
    first_seen: Mutex<HashMap<SeriesKey, u64>>,
}

impl StoreSource {
    /// A source over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store, first_seen: Mutex::new(HashMap::new()) }
    }

    fn query(q: &SignalQuery) -> Query {
        Query::new((&q.selector).into(), q.stat, q.window)
    }
}

fn source_error(what: impl std::fmt::Display, e: QueryError) -> SignalError {
    SignalError::Source { what: what.to_string(), message: e.to_string() }
}

impl SignalSource for StoreSource {
    fn read(&self, q: &SignalQuery, now: u64) -> Result<Option<f64>, SignalError> {
        let groups = self.store.instant(&Self::query(q), now).map_err(|e| source_error(q, e))?;
        Ok(groups.first().map(|g| g.value))
    }

    fn histogram(
        &self,
        selector_: &Selector,
        from: u64,
        to: u64,
    ) -> Result<Option<Histogram>, SignalError> {
        let groups = self
            .store
            .histogram_window(&selector_.into(), from, to, &[])
            .map_err(|e| source_error(format!("histogram({selector_})"), e))?;
        let Some((_, h)) = groups.into_iter().next() else { return Ok(None) };
        if h.count == 0 {
            return Ok(None);
        }
        let (bounds, counts) = h.as_explicit();
        Ok(Some(Histogram {
            bounds: bounds.to_vec(),
            counts: counts.into_iter().map(|c| c as f64).collect(),
        }))
    }

    fn counts_by(
        &self,
        selector_: &Selector,
        by: &str,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<String, f64>, SignalError> {
        self.store
            .increase_by(&selector_.into(), from, to, by)
            .map_err(|e| source_error(format!("increase({selector_}) by {by}"), e))
    }

    fn latest_version(
        &self,
        selector_: &Selector,
        now: u64,
    ) -> Result<Option<VersionSeen>, SignalError> {
        let mut sel = selector_.clone();
        sel.matchers.remove(VERSION_ATTR);
        let store_sel = query::Selector::from(&sel);
        let mut first_by_version: BTreeMap<String, u64> = BTreeMap::new();
        let known: Vec<(SeriesKey, String, Option<u64>)> = {
            let cache = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
            self.store
                .select(&store_sel)
                .into_iter()
                .filter_map(|s| {
                    let version = s.labels.get(VERSION_ATTR)?.to_owned();
                    let key: Vec<(String, String)> =
                        s.labels.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                    let t = cache.get(&key).copied();
                    Some((key, version, t))
                })
                .collect()
        };
        let mut missing = false;
        for (_, version, t) in &known {
            match t {
                Some(t) if *t <= now => {
                    let e = first_by_version.entry(version.clone()).or_insert(*t);
                    *e = (*e).min(*t);
                }
                Some(_) => {}
                None => missing = true,
            }
        }
        if missing {
            let found = self
                .store
                .first_seen(&store_sel)
                .map_err(|e| source_error(format!("latest_version({selector_})"), e))?;
            let mut cache = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
            for (labels, t) in found {
                let key: Vec<(String, String)> =
                    labels.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                if known.iter().any(|(k, _, cached)| k == &key && cached.is_none()) {
                    cache.insert(key, t);
                    if let Some(version) = labels.get(VERSION_ATTR) {
                        if t <= now {
                            let e = first_by_version.entry(version.to_owned()).or_insert(t);
                            *e = (*e).min(t);
                        }
                    }
                }
            }
        }
        Ok(first_by_version
            .into_iter()
            .max_by_key(|(_, t)| *t)
            .map(|(version, first_seen)| VersionSeen { version, first_seen }))
    }

    fn range(
        &self,
        q: &SignalQuery,
        from: u64,
        to: u64,
        step: Duration,
    ) -> Result<Vec<(u64, f64)>, SignalError> {
        let store_q = Self::query(q);
        let step = Duration::from_nanos(nanos(step).max(1));
        let fetch = |start, end| {
            let groups =
                self.store.range(&store_q, start, end, step).map_err(|e| source_error(q, e))?;
            Ok(groups
                .into_iter()
                .next()
                .map(|g| g.points.into_iter().collect())
                .unwrap_or_default())
        };
        chunked_range(from, to, step, RANGE_CHUNK, fetch, |t, points| points.get(&t).copied())
    }
}

#[cfg(test)]
mod tests;
