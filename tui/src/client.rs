//! The dashboard's side of the collector: the [`Source`] trait a data source implements (the
//! HTTP client over `/api/v1`, or [`crate::fake::FakeSource`]), what a screen asks of it
//! ([`Need`]) and what comes back ([`Snapshot`], wrapped by the fetch loop into [`Update`]).
//!
//! [`fetch_loop`] runs on its own tokio task: it asks for exactly what the current screen shows,
//! sends the answer over a bounded channel, and retries with exponential backoff when the source
//! fails. The render loop only ever reads the channel without waiting, so a slow or dead
//! collector makes the data stale (and says so), never the screen frozen.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::model::{
    DecisionView, FleetRow, ModelView, NANOS_PER_SEC, NodeDetail, RuleView, UnixNanos,
};

/// What the screen on show needs; the fetch loop asks the source for this and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Fleet: one summary row per node, no histories.
    Fleet,
    /// Node detail: one node's GPUs with histories, processes and services.
    Node {
        /// `host.name` of the node.
        node: String,
        /// History window (5 to 60 minutes).
        window: Duration,
        /// Spacing of history points.
        step: Duration,
    },
    /// Models: every model and version with latency/rate/drift histories.
    Models {
        /// History window.
        window: Duration,
        /// Spacing of history points.
        step: Duration,
    },
    /// Policies: every rule's state.
    Policies,
    /// Decisions: the newest `limit` records.
    Decisions {
        /// How many records, newest first.
        limit: usize,
    },
}

/// A source's answer to a [`Need`], in view-model terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Snapshot {
    /// Answer to [`Need::Fleet`].
    Fleet(Vec<FleetRow>),
    /// Answer to [`Need::Node`].
    Node(NodeDetail),
    /// Answer to [`Need::Models`].
    Models(Vec<ModelView>),
    /// Answer to [`Need::Policies`].
    Policies(Vec<RuleView>),
    /// Answer to [`Need::Decisions`], newest first.
    Decisions(Vec<DecisionView>),
}

/// What the fetch loop tells the app.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Fresh data, fetched at `at`.
    Data {
        /// When the source answered.
        at: UnixNanos,
        /// The data.
        snapshot: Snapshot,
    },
    /// The source answers again (sent before the first data after an outage).
    Connected {
        /// When.
        at: UnixNanos,
    },
    /// A fetch failed; the next attempt is at `retry_at`.
    Disconnected {
        /// When the fetch failed.
        at: UnixNanos,
        /// Why, as a sentence.
        error: String,
        /// When the loop tries again.
        retry_at: UnixNanos,
    },
}

/// Why a source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The collector could not be reached or did not answer in time.
    #[error("collector unreachable: {0}")]
    Unreachable(String),
    /// The collector answered with an error status.
    #[error("collector answered {status} for {path}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The API path asked.
        path: String,
    },
    /// The answer could not be understood.
    #[error("collector sent an answer that could not be read: {0}")]
    Decode(String),
    /// The thing asked for does not exist (a node that left the fleet).
    #[error("{0} not found")]
    NotFound(String),
}

/// A data source for the dashboard. Implementations convert their wire types into the view
/// model and fetch only what `need` names.
pub trait Source: Send + 'static {
    /// Fetch what the current screen needs.
    fn fetch(&mut self, need: &Need) -> impl Future<Output = Result<Snapshot, SourceError>> + Send;
}

/// Wall-clock time for timestamps, advanced by `tokio::time` so tests can pause and step it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_unix: UnixNanos,
    base: tokio::time::Instant,
}

impl Clock {
    /// A clock reading `unix` now and advancing with tokio's time.
    pub fn starting_at(unix: UnixNanos) -> Clock {
        Clock {
            base_unix: unix,
            base: tokio::time::Instant::now(),
        }
    }

    /// A clock set from the system's wall clock.
    pub fn system() -> Clock {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Clock::starting_at(unix)
    }

    /// Now, in Unix nanoseconds.
    pub fn now(&self) -> UnixNanos {
        let elapsed = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.base_unix.saturating_add(elapsed)
    }
}

/// Exponential backoff between reconnect attempts. No jitter: a dashboard is one client, so
/// there is no herd to spread, and a fixed sequence is what the banner can promise.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Start at `first`, double each failure, never above `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(15))
    }
}

/// How the fetch loop paces itself.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Wait between successful fetches.
    pub interval: Duration,
    /// A fetch that takes longer counts as failed.
    pub timeout: Duration,
    /// Waits between failed fetches.
    pub backoff: Backoff,
}

impl Default for FetchConfig {
    fn default() -> FetchConfig {
        FetchConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Fetch what `need` names, forever: every `interval` while the source answers, at once when the
/// screen changes, and after growing backoff while it fails. Ends when `cancel` fires or either
/// channel closes. The `updates` channel is bounded: when the render loop falls behind, this
/// loop waits (asking the collector less often), and the screen never waits on it.
pub async fn fetch_loop<S: Source>(
    mut source: S,
    mut need: watch::Receiver<Need>,
    updates: mpsc::Sender<Update>,
    clock: Clock,
    mut cfg: FetchConfig,
    cancel: CancellationToken,
) {
    let mut down = false;
    loop {
        let current = need.borrow_and_update().clone();
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            r = tokio::time::timeout(cfg.timeout, source.fetch(&current)) => r,
        };
        let now = clock.now();
        let (update, wait) = match result {
            Ok(Ok(snapshot)) => {
                cfg.backoff.reset();
                if down {
                    down = false;
                    if !send(&updates, Update::Connected { at: now }, &cancel).await {
                        return;
                    }
                }
                (Update::Data { at: now, snapshot }, cfg.interval)
            }
            Ok(Err(e)) => {
                down = true;
                let d = cfg.backoff.next_delay();
                let u = Update::Disconnected {
                    at: now,
                    error: e.to_string(),
                    retry_at: now.saturating_add(nanos(d)),
                };
                (u, d)
            }
            Err(_elapsed) => {
                down = true;
                let d = cfg.backoff.next_delay();
                let u = Update::Disconnected {
                    at: now,
                    error: format!("no answer within {:?}", cfg.timeout),
                    retry_at: now.saturating_add(nanos(d)),
                };
                (u, d)
            }
        };
        if !send(&updates, update, &cancel).await {
            return;
        }
        if down {
            // Keep to the backoff even when the screen changes: a dead collector is not
            // hammered by someone flicking between tabs.
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        } else {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                changed = need.changed() => if changed.is_err() { return },
            }
        }
    }
}

async fn send(updates: &mpsc::Sender<Update>, update: Update, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        r = updates.send(update) => r.is_ok(),
    }
}

/// Seconds between two times, for messages.
pub fn secs_between(earlier: UnixNanos, later: UnixNanos) -> u64 {
    later.saturating_sub(earlier) / NANOS_PER_SEC
}
