//! The dashboard's side of the collector: the [`Source`] trait a data source implements (the
//! HTTP client over `/api/v1`, or [`crate::fake::FakeSource`]), what a screen asks of it
//! ([`Need`]) and what comes back ([`Snapshot`], wrapped by the fetch loop into [`Update`]).
//!
//! [`fetch_loop`] runs on its own tokio task: it asks for exactly what the current screen shows,
//! sends the answer over a bounded channel, and retries with exponential backoff when the source
//! fails. Every few seconds it also asks the collector's place in its cluster for the header
//! (it changes rarely, so not with every poll). The render loop only ever reads the channel
//! without waiting, so a slow or dead collector makes the data stale (and says so), never the
//! screen frozen.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::model::{
    ClusterStatus, DecisionView, FleetRow, ModelView, NANOS_PER_SEC, NodeDetail, RuleView,
    UnixNanos,
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
    /// The source answered that what the screen asks for does not exist (a node that left).
    NotFound {
        /// When the source answered.
        at: UnixNanos,
        /// What was not found, e.g. `node gpu-node-042`.
        what: String,
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
    /// The collector's place in its cluster changed. `None`: not known, because the collector
    /// predates `/api/v1/cluster` or its answer could not be had; the connection is judged by
    /// the screen's fetches alone, so this never means the collector is down.
    Cluster(Option<ClusterStatus>),
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

    /// The collector's place in its cluster; `Ok(None)` when it does not say (a collector from
    /// before `/api/v1/cluster`).
    fn cluster(
        &mut self,
    ) -> impl Future<Output = Result<Option<ClusterStatus>, SourceError>> + Send;
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
        Clock { base_unix: unix, base: tokio::time::Instant::now() }
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
        Backoff { first, max, next: first }
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
    /// Wait between asks for the collector's cluster view, which changes only on an election:
    /// asking with every poll would add a request a second to every screen.
    pub cluster_interval: Duration,
}

impl Default for FetchConfig {
    fn default() -> FetchConfig {
        FetchConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            cluster_interval: Duration::from_secs(5),
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
///
/// While the source answers, the loop also asks its cluster view every `cluster_interval`
/// (first with the first answer, and again at once after an outage, when leadership may have
/// moved), right after the screen's data is sent, and sends [`Update::Cluster`] only when the
/// view changes. A failed ask is logged at debug level and shown as no view; it never marks the
/// collector down.
pub async fn fetch_loop<S: Source>(
    mut source: S,
    mut need: watch::Receiver<Need>,
    updates: mpsc::Sender<Update>,
    clock: Clock,
    mut cfg: FetchConfig,
    cancel: CancellationToken,
) {
    let mut down = false;
    let mut cluster = ClusterPoll { due: tokio::time::Instant::now(), last: None };
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
                    cluster.due = tokio::time::Instant::now();
                    if !send(&updates, Update::Connected { at: now }, &cancel).await {
                        return;
                    }
                }
                (Update::Data { at: now, snapshot }, cfg.interval)
            }
            Ok(Err(SourceError::NotFound(what))) => {
                // The collector answered: it is up, the thing is gone.
                cfg.backoff.reset();
                down = false;
                (Update::NotFound { at: now, what }, cfg.interval)
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
        if !down && tokio::time::Instant::now() >= cluster.due {
            cluster.due = tokio::time::Instant::now() + cfg.cluster_interval;
            let asked = tokio::select! {
                () = cancel.cancelled() => return,
                r = tokio::time::timeout(cfg.timeout, source.cluster()) => r,
            };
            let view = match asked {
                Ok(Ok(view)) => view,
                Ok(Err(e)) => {
                    debug!(error = %e, "Cluster view unavailable; the header shows none.");
                    None
                }
                Err(_elapsed) => {
                    debug!(
                        timeout = ?cfg.timeout,
                        "Cluster view not answered in time; the header shows none."
                    );
                    None
                }
            };
            if view != cluster.last {
                cluster.last = view.clone();
                if !send(&updates, Update::Cluster(view), &cancel).await {
                    return;
                }
            }
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

/// When the fetch loop next asks the cluster view, and what it last sent.
struct ClusterPoll {
    due: tokio::time::Instant,
    last: Option<ClusterStatus>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeFleet, FakeSource};

    const START: UnixNanos = 1_700_000_000 * NANOS_PER_SEC;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let seq: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seq, [500, 1000, 2000, 3000, 3000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    struct Harness {
        need: watch::Sender<Need>,
        updates: mpsc::Receiver<Update>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(source: FakeSource, clock: Clock) -> Harness {
        let (need, need_rx) = watch::channel(Need::Fleet);
        let (tx, updates) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(fetch_loop(
            source,
            need_rx,
            tx,
            clock,
            FetchConfig::default(),
            cancel.clone(),
        ));
        Harness { need, updates, cancel, task }
    }

    #[tokio::test(start_paused = true)]
    async fn reconnects_with_backoff_and_says_so() {
        let clock = Clock::starting_at(START);
        let source = FakeSource::new(FakeFleet::new(3, 2), clock);
        let fail = source.failure_switch();
        *fail.lock().unwrap() = Some("connection refused".into());
        let mut h = start(source, clock);
        let mut retry_gaps = Vec::new();
        for _ in 0..4 {
            match h.updates.recv().await.unwrap() {
                Update::Disconnected { at, error, retry_at } => {
                    assert_eq!(error, "collector unreachable: connection refused");
                    retry_gaps.push((retry_at - at) / 1_000_000);
                }
                other => panic!("expected a disconnect, got {other:?}"),
            }
        }
        assert_eq!(retry_gaps, [500, 1000, 2000, 4000]);
        *fail.lock().unwrap() = None;
        assert!(matches!(h.updates.recv().await.unwrap(), Update::Connected { .. }));
        let Update::Data { at, snapshot: Snapshot::Fleet(rows) } = h.updates.recv().await.unwrap()
        else {
            panic!("expected fleet data");
        };
        assert_eq!(rows.len(), 3);
        // 0.5 + 1 + 2 + 4 s of backoff before the fifth attempt succeeded.
        assert_eq!((at - START) / NANOS_PER_SEC, 7);
        h.cancel.cancel();
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_collector_times_out_instead_of_waiting_forever() {
        let clock = Clock::starting_at(START);
        let source =
            FakeSource::new(FakeFleet::new(3, 2), clock).with_delay(Duration::from_secs(3600));
        let mut h = start(source, clock);
        let Update::Disconnected { at, error, .. } = h.updates.recv().await.unwrap() else {
            panic!("expected a timeout");
        };
        assert_eq!(error, "no answer within 5s");
        assert_eq!((at - START) / NANOS_PER_SEC, 5);
        h.cancel.cancel();
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn asks_for_what_the_screen_shows_and_switches_at_once() {
        let clock = Clock::starting_at(START);
        let source = FakeSource::new(FakeFleet::new(20, 8), clock);
        let log = source.log();
        let mut h = start(source, clock);
        for _ in 0..3 {
            assert!(matches!(
                h.updates.recv().await.unwrap(),
                Update::Data { snapshot: Snapshot::Fleet(_), .. }
            ));
        }
        let t_switch = clock.now();
        let node = Need::Node {
            node: "gpu-node-004".into(),
            window: Duration::from_secs(300),
            step: Duration::from_secs(5),
        };
        h.need.send_replace(node.clone());
        // Whatever was in flight may still arrive; the node answer follows without waiting a full interval.
        let at = loop {
            if let Update::Data { at, snapshot: Snapshot::Node(d) } =
                h.updates.recv().await.unwrap()
            {
                assert_eq!(d.node, "gpu-node-004");
                assert_eq!(d.gpus.len(), 8);
                assert_eq!(d.gpus[0].util_history.points.len(), 61);
                break at;
            }
        };
        assert!(at - t_switch < NANOS_PER_SEC, "switched within a second");
        h.cancel.cancel();
        h.task.await.unwrap();
        let log = log.lock().unwrap();
        assert!(log.needs.iter().all(|n| *n == Need::Fleet || *n == node), "{:?}", log.needs);
        assert_eq!(log.needs.iter().filter(|n| **n == Need::Fleet).count(), 3);
        // Only the node's history was shipped: 8 GPUs × 3 series + CPU, 61 points each.
        assert_eq!(log.points, 25 * 61 * log.needs.iter().filter(|n| **n == node).count() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_node_is_an_answer_not_an_outage() {
        let clock = Clock::starting_at(START);
        let mut h = start(FakeSource::new(FakeFleet::new(2, 1), clock), clock);
        h.need.send_replace(Need::Node {
            node: "gpu-node-999".into(),
            window: Duration::from_secs(300),
            step: Duration::from_secs(5),
        });
        loop {
            match h.updates.recv().await.unwrap() {
                Update::NotFound { what, .. } => {
                    assert_eq!(what, "node gpu-node-999");
                    break;
                }
                Update::Data { snapshot: Snapshot::Fleet(_), .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        h.cancel.cancel();
        h.task.await.unwrap();
    }

    fn cluster_view(role: crate::model::ClusterRole, leader: &str, term: u64) -> ClusterStatus {
        ClusterStatus {
            member: "collector-a".into(),
            role,
            leader: Some(leader.into()),
            members: vec!["collector-a".into(), "collector-b".into()],
            term,
            lease_ttl_s: 10,
            backend: "etcd".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_cluster_view_is_asked_every_few_seconds_and_sent_when_it_changes() {
        use crate::model::ClusterRole::{Follower, Leader};
        let clock = Clock::starting_at(START);
        let source = FakeSource::new(FakeFleet::new(3, 2), clock);
        let log = source.log();
        let answer = source.cluster_switch();
        *answer.lock().unwrap() = Ok(Some(cluster_view(Leader, "collector-a", 12)));
        let mut h = start(source, clock);
        // The first answer brings the screen's data, then the view.
        assert!(matches!(h.updates.recv().await.unwrap(), Update::Data { .. }));
        assert_eq!(
            h.updates.recv().await.unwrap(),
            Update::Cluster(Some(cluster_view(Leader, "collector-a", 12)))
        );
        // Polls at 1..=9 s: the view is asked again at 5 s only, and being the same is not sent.
        for _ in 1..10 {
            assert!(matches!(h.updates.recv().await.unwrap(), Update::Data { .. }));
        }
        {
            let log = log.lock().unwrap();
            assert_eq!((log.needs.len(), log.cluster_asks), (10, 2));
        }
        // The cluster route fails while the rest answers: the view goes, the collector stays up.
        *answer.lock().unwrap() = Err("collector answered 500 for /api/v1/cluster".into());
        loop {
            match h.updates.recv().await.unwrap() {
                Update::Data { .. } => {}
                Update::Cluster(None) => break,
                other => panic!("a failed cluster ask is no outage: {other:?}"),
            }
        }
        assert_eq!((clock.now() - START) / NANOS_PER_SEC, 10);
        *answer.lock().unwrap() = Ok(Some(cluster_view(Follower, "collector-b", 13)));
        loop {
            match h.updates.recv().await.unwrap() {
                Update::Data { .. } => {}
                Update::Cluster(view) => {
                    assert_eq!(view, Some(cluster_view(Follower, "collector-b", 13)));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((clock.now() - START) / NANOS_PER_SEC, 15);
        h.cancel.cancel();
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_outage_the_cluster_view_is_asked_at_once() {
        let clock = Clock::starting_at(START);
        let source = FakeSource::new(FakeFleet::new(3, 2), clock);
        let log = source.log();
        let fail = source.failure_switch();
        let mut h = start(source, clock);
        assert!(matches!(h.updates.recv().await.unwrap(), Update::Data { .. }));
        *fail.lock().unwrap() = Some("connection refused".into());
        assert!(matches!(h.updates.recv().await.unwrap(), Update::Disconnected { .. }));
        // Leadership may have moved while the collector was away.
        *fail.lock().unwrap() = None;
        assert!(matches!(h.updates.recv().await.unwrap(), Update::Connected { .. }));
        assert!(matches!(h.updates.recv().await.unwrap(), Update::Data { .. }));
        // The view (none, unchanged) is not sent, but it was asked within 2 s, not 5.
        assert!(matches!(h.updates.recv().await.unwrap(), Update::Data { .. }));
        assert!((clock.now() - START) / NANOS_PER_SEC < 5);
        assert_eq!(log.lock().unwrap().cluster_asks, 2);
        h.cancel.cancel();
        h.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_the_app_goes_away() {
        let clock = Clock::starting_at(START);
        let h = start(FakeSource::new(FakeFleet::new(1, 1), clock), clock);
        drop(h.updates);
        drop(h.need);
        tokio::time::timeout(Duration::from_secs(10), h.task).await.unwrap().unwrap();
    }
}
