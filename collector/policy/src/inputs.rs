//! What the condition and sizing modules share below the engine: the [`InputValue`] a
//! decision records, reading a signal ([`read`], [`query`]), reference windows
//! ([`Reference`], [`reference_window`]) and time as text. It depends only on the format and
//! the signal boundary, so [`super::drift`], [`super::forecast`], [`super::model`],
//! [`super::anomaly`] and [`super::check`] take these from here and the engine calls them
//! without a circle.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::format::SignalSpec;
use super::signal::{NANOS, Selector, SignalQuery, SignalSource, Stat, nanos};

/// Default signal window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default window of drift and accuracy conditions.
pub const DEFAULT_DRIFT_WINDOW: Duration = Duration::from_secs(3600);

/// An input value the decision saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputValue {
    /// Metric or condition name.
    pub name: String,
    /// The query, as text.
    pub query: String,
    /// The value, `None` when there was no data.
    pub value: Option<f64>,
    /// What it was compared with, as text (`target 0.05`, `> 0.2`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub against: String,
    /// The size this input alone recommends (target tracking and steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommends: Option<u32>,
    /// The model version a drift or regression input concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Reference window of a drift or regression condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// The first `Duration` after the newest model version first appeared.
    FirstOfVersion(Duration),
    /// The `Duration` just before the current window.
    Previous(Duration),
    /// A fixed interval, Unix nanos.
    Pinned(u64, u64),
}

impl Reference {
    /// Parses `first-1h-of-version`, `previous-24h` or `pinned <rfc3339>..<rfc3339>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(d) = text.strip_prefix("first-").and_then(|r| r.strip_suffix("-of-version")) {
            return humantime::parse_duration(d)
                .map(Self::FirstOfVersion)
                .map_err(|e| format!("invalid duration {d:?} in reference: {e}"));
        }
        if let Some(d) = text.strip_prefix("previous-") {
            return humantime::parse_duration(d)
                .map(Self::Previous)
                .map_err(|e| format!("invalid duration {d:?} in reference: {e}"));
        }
        if let Some(range) = text.strip_prefix("pinned ") {
            let (a, b) = range
                .split_once("..")
                .ok_or_else(|| format!("pinned reference {range:?} needs `from..to`"))?;
            let parse = |s: &str| {
                humantime::parse_rfc3339(s.trim())
                    .map_err(|e| format!("invalid time {s:?}: {e}"))
                    .and_then(|t| {
                        t.duration_since(std::time::UNIX_EPOCH)
                            .map(nanos)
                            .map_err(|e| format!("time {s:?} before 1970: {e}"))
                    })
            };
            let (from, to) = (parse(a)?, parse(b)?);
            if from >= to {
                return Err(format!("pinned reference {range:?} is empty"));
            }
            return Ok(Self::Pinned(from, to));
        }
        Err(format!("unknown reference {text:?}"))
    }
}

/// The query a signal spec describes.
pub fn query(s: &SignalSpec) -> Result<SignalQuery, String> {
    Ok(SignalQuery {
        selector: Selector { metric: s.metric.clone(), matchers: s.matchers.clone() },
        stat: s.stat.parse::<Stat>()?,
        window: s.window.map(|w| w.get()).unwrap_or(DEFAULT_WINDOW),
    })
}

/// A signal's value at `now`, `None` when it has no data, failed or is not finite. A `count`
/// over a window without data is 0: nothing happened, which is a value, not missing data.
pub(crate) fn read(source: &dyn SignalSource, q: &SignalQuery, now: u64) -> Option<f64> {
    match source.read(q, now) {
        Ok(None) if q.stat == Stat::Count => Some(0.0),
        Ok(v) => v.filter(|v| v.is_finite()),
        Err(_) => None,
    }
}

/// Resolves a reference window `(from, to]` and the selector restricted to the model version
/// it concerns; `None` when the reference is not complete yet.
pub(crate) fn reference_window(
    reference: Reference,
    selector: &Selector,
    source: &dyn SignalSource,
    window: Duration,
    now: u64,
) -> Option<(u64, u64, Selector)> {
    match reference {
        Reference::FirstOfVersion(len) => {
            let v = source.latest_version(selector, now).ok().flatten()?;
            let end = v.first_seen.saturating_add(nanos(len));
            if end > now {
                return None;
            }
            let mut sel = selector.clone();
            sel.matchers.insert("model.version".to_owned(), v.version);
            Some((v.first_seen.saturating_sub(1), end, sel))
        }
        Reference::Previous(len) => {
            let to = now.saturating_sub(nanos(window));
            Some((to.saturating_sub(nanos(len)), to, selector.clone()))
        }
        Reference::Pinned(from, to) => (to <= now).then(|| (from, to, selector.clone())),
    }
}

/// Unix nanos as RFC 3339 to the second, for decisions' details and reasons.
pub(crate) fn fmt_time(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(ns);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `now` in whole seconds, for tests and replay output.
pub fn secs(ns: u64) -> f64 {
    ns as f64 / NANOS as f64
}
