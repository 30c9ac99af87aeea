//! The policy engine's [`SignalSource`] over the collector's own store: each policy query is
//! translated to the store's synchronous query interface ([`crate::query`]).
//!
//! Windows: the engine reads `(now - window, now]`, the store `[at - window, at]`; with integer
//! nanoseconds the first equals `[now - window + 1ns, now]`, so every read asks the store for a
//! window one nanosecond shorter. Rates still divide by the policy's window.
//!
//! Semantics match the series source `policy test` uses ([`crate::policy::series`]), so a policy
//! behaves live as it did in its tests: `last` sums the newest value of each series, `count`
//! over a window without data is 0, quantiles of gauges are exact over all samples and of
//! histograms come from the merged buckets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::policy::signal::{
    Histogram, Selector, SignalError, SignalQuery, SignalSource, Stat, VersionSeen, chunked_range,
    nanos,
};
use crate::query::{self, Across, Query, QueryError};
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

    fn query(&self, q: &SignalQuery) -> Query {
        let sel = selector(&q.selector);
        // (now - window, now] as the store's closed window.
        let window = q.window.saturating_sub(Duration::from_nanos(1));
        let stat = match q.stat {
            Stat::Mean => query::Stat::Mean,
            Stat::Min => query::Stat::Min,
            Stat::Max => query::Stat::Max,
            Stat::Sum => query::Stat::Sum,
            Stat::Count => query::Stat::Count,
            Stat::Last => query::Stat::Last,
            Stat::Rate => query::Stat::Increase,
            Stat::Increase => query::Stat::Increase,
            Stat::Quantile(p) => query::Stat::Quantile(p),
        };
        let query = Query::new(sel, stat, window);
        // The store's default `last` is the mean across series; the engine's is the sum.
        if q.stat == Stat::Last { query.across(Across::Sum) } else { query }
    }

    /// Turns the store's value into the engine's: rate over the policy's own window, and
    /// `count` of an empty window as 0.
    fn finish(q: &SignalQuery, value: Option<f64>) -> Option<f64> {
        match (q.stat, value) {
            (Stat::Rate, Some(inc)) => Some(inc / q.window.as_secs_f64().max(1e-9)),
            (Stat::Count, None) => Some(0.0),
            (_, v) => v,
        }
    }
}

/// The engine's selector as the store's (attribute equality matchers).
fn selector(s: &Selector) -> query::Selector {
    query::Selector::new(s.metric.clone())
        .with_eq(s.matchers.iter().map(|(k, v)| (k.clone(), v.clone())))
}

fn source_error(what: impl std::fmt::Display, e: QueryError) -> SignalError {
    SignalError::Source { what: what.to_string(), message: e.to_string() }
}

impl SignalSource for StoreSource {
    fn read(&self, q: &SignalQuery, now: u64) -> Result<Option<f64>, SignalError> {
        let groups = self.store.instant(&self.query(q), now).map_err(|e| source_error(q, e))?;
        Ok(Self::finish(q, groups.first().map(|g| g.value)))
    }

    fn histogram(
        &self,
        selector_: &Selector,
        from: u64,
        to: u64,
    ) -> Result<Option<Histogram>, SignalError> {
        let groups = self
            .store
            .histogram_window(&selector(selector_), from.saturating_add(1), to, &[])
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
            .increase_by(&selector(selector_), from.saturating_add(1), to, by)
            .map_err(|e| source_error(format!("increase({selector_}) by {by}"), e))
    }

    fn latest_version(
        &self,
        selector_: &Selector,
        now: u64,
    ) -> Result<Option<VersionSeen>, SignalError> {
        let mut sel = selector_.clone();
        sel.matchers.remove(VERSION_ATTR);
        let store_sel = selector(&sel);
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
        let store_q = self.query(q);
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
        // `finish` reads `count` as 0 where the store has no group, as `read` does.
        chunked_range(from, to, step, RANGE_CHUNK, fetch, |t, points| {
            Self::finish(q, points.get(&t).copied())
        })
    }
}

#[cfg(test)]
mod tests;
