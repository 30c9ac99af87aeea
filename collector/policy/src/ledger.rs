//! The ledger: what the engine and the actuators must remember across evaluations, restarts
//! and leaders, behind one trait. Rule state (cooldowns, budgets, stabilization history and
//! condition timers are all inside [`PolicyState`]), decision records, and actions with their
//! idempotency keys and job lifecycle. Each action is one record: the engine's part (what was
//! decided and how it ended) and the actuator's part ([`ActionRecord::actuation`]: the size
//! being set, attempts, the remote job's handle), so a restart or a new leader resumes a
//! pending action from one place.
//!
//! Every write carries a [`Fence`]: the writer's term. A ledger keeps the highest fence it has
//! seen and refuses a write with a lower one, so once a new leader has written, a deposed
//! leader that still believes it leads cannot overwrite its state or record actions
//! ([`LedgerError::Fenced`]). One collector alone writes with [`Fence::SOLE`]. The embedded
//! ledger (`policy.redb`, in the collector) and [`MemoryLedger`] here keep the same contract;
//! a shared coordination store implements it with a compare-and-set on its own revision.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::engine::{Action, Decision, Outcome, PolicyState};

/// Decisions kept; older ones are dropped oldest first.
pub const MAX_DECISIONS: usize = 20_000;
/// Actions kept; beyond it the oldest finished one is dropped.
pub const MAX_ACTIONS: usize = 5_000;

/// A writer's term. Terms only grow: a leader elected later holds a higher one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fence(pub u64);

impl Fence {
    /// The fence of a collector that is the only writer.
    pub const SOLE: Fence = Fence(0);
}

/// Whether this writer leads now, and with which fence: a collector alone always leads with
/// [`Fence::SOLE`]; one of several leads while it holds the coordination store's lease, with
/// its term. Asked before every write, so a writer that lost the lease stops writing at once.
pub trait Leadership: Send + Sync + std::fmt::Debug {
    /// The fence of the current term, or `None` while this writer does not lead.
    fn fence(&self) -> Option<Fence>;
}

/// A fixed fence leads for good (one collector alone, tests).
impl Leadership for Fence {
    fn fence(&self) -> Option<Fence> {
        Some(*self)
    }
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "term {}", self.0)
    }
}

/// Why a ledger refused or failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    /// A writer with a higher term has written: this one no longer leads.
    #[error("write refused: the ledger holds {held}, this writer has {offered}")]
    Fenced {
        /// The highest fence the ledger has seen.
        held: Fence,
        /// The fence this write carried.
        offered: Fence,
    },
    /// This writer does not lead now (it lost or never held the lease).
    #[error("write refused: this collector does not lead")]
    NotLeader,
    /// The storage failed (the message names it).
    #[error("{0}")]
    Storage(String),
}

/// Where an action stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionStatus {
    /// Recorded, not yet confirmed by the actuator (retried after a restart with its key).
    Pending,
    /// Applied (a resize) or started (a job).
    Applied,
    /// Dry run.
    DryRun,
    /// Failed.
    Failed,
    /// A job is running.
    Running,
    /// A job finished well.
    Succeeded,
    /// A job finished badly or timed out.
    JobFailed,
}

impl ActionStatus {
    /// Whether the action may still change (it is kept while the ledger is full).
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Running | Self::Applied)
    }
}

/// An action and its lifecycle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Idempotency key.
    pub key: String,
    /// Decision time, Unix nanos.
    pub time: u64,
    /// Policy.
    pub policy: String,
    /// Rule.
    pub rule: String,
    /// The decision's action.
    pub action: Action,
    /// Dry run or not.
    pub dry_run: bool,
    /// Status.
    pub status: ActionStatus,
    /// Last actuator outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Last update, Unix nanos.
    pub updated: u64,
    /// The actuator's own record of sending it (state, size set, attempts, remote handle, job
    /// status), written before each mutating request and after its outcome: what it reads
    /// back to settle an interrupted attempt instead of acting twice. JSON the actuators
    /// define; the engine does not read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actuation: Option<serde_json::Value>,
}

impl ActionRecord {
    /// The record an actuator starts when it is driven without the engine (no decision
    /// wrote one first): keyed, timed, with no policy part.
    pub fn actuator_only(key: &str, time: u64, status: ActionStatus) -> Self {
        Self {
            key: key.to_owned(),
            time,
            policy: String::new(),
            rule: String::new(),
            action: Action::None,
            dry_run: false,
            status,
            outcome: None,
            updated: time,
            actuation: None,
        }
    }
}

/// `offered` as it is stored over `stored`: the engine's part from `offered`; the actuator's
/// part from `offered` when it carries one, else kept from `stored`.
pub fn merge_action(stored: Option<ActionRecord>, offered: &ActionRecord) -> ActionRecord {
    let mut out = offered.clone();
    if out.actuation.is_none() {
        out.actuation = stored.and_then(|s| s.actuation);
    }
    out
}

/// The record under `key` once the actuator's part is `actuation`: the stored engine part is
/// kept; without one, an [`ActionRecord::actuator_only`] record with `status`.
pub fn with_actuation(
    stored: Option<ActionRecord>,
    key: &str,
    time: u64,
    status: ActionStatus,
    actuation: &serde_json::Value,
) -> ActionRecord {
    let mut out = stored.unwrap_or_else(|| ActionRecord::actuator_only(key, time, status));
    out.actuation = Some(actuation.clone());
    out
}

/// What the engine remembers. Reads may come from any replica; writes carry the writer's
/// fence and are refused once a higher one has written.
pub trait Ledger: Send + Sync + std::fmt::Debug {
    /// Every policy's saved state.
    fn states(&self) -> Result<BTreeMap<String, PolicyState>, LedgerError>;

    /// Saves states and appends decisions in one transaction, so state and record agree.
    fn commit(
        &self,
        fence: Fence,
        states: &[(&str, &PolicyState)],
        decisions: &[Decision],
    ) -> Result<(), LedgerError>;

    /// Saves `states` and inserts or replaces the engine's part of `actions` (as
    /// [`Ledger::put_action`] does) in one transaction, before the actions are sent: what an
    /// action changes in its rule's state (its cooldown, its budget) is never stored without
    /// the pending action, nor the action without it, whenever the writer dies.
    fn commit_pending(
        &self,
        fence: Fence,
        states: &[(&str, &PolicyState)],
        actions: &[ActionRecord],
    ) -> Result<(), LedgerError>;

    /// Newest decisions first, optionally of one policy and rule, at most `limit`.
    fn decisions(
        &self,
        policy: Option<&str>,
        rule: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Decision>, LedgerError>;

    /// Inserts or replaces the engine's part of an action by key ([`merge_action`]: an
    /// `actuation` of `None` keeps the stored one).
    fn put_action(&self, fence: Fence, action: &ActionRecord) -> Result<(), LedgerError>;

    /// Sets the actuator's part of the action under `key` ([`with_actuation`]; `time` and
    /// `status` are used only when no record exists yet).
    fn put_actuation(
        &self,
        fence: Fence,
        key: &str,
        time: u64,
        status: ActionStatus,
        actuation: &serde_json::Value,
    ) -> Result<(), LedgerError>;

    /// The action under `key`.
    fn action(&self, key: &str) -> Result<Option<ActionRecord>, LedgerError>;

    /// All actions, newest first.
    fn actions(&self) -> Result<Vec<ActionRecord>, LedgerError>;

    /// The highest fence that has written.
    fn fence(&self) -> Result<Fence, LedgerError>;
}

/// Checks `offered` against the highest fence `held` and returns the fence to keep.
pub fn admit(held: Fence, offered: Fence) -> Result<Fence, LedgerError> {
    if offered < held { Err(LedgerError::Fenced { held, offered }) } else { Ok(offered) }
}

/// Of `actions` over `max`, the key of the oldest finished one: what a full ledger drops.
pub fn oldest_finished<'a>(
    actions: impl Iterator<Item = &'a ActionRecord>,
    len: usize,
    max: usize,
) -> Option<String> {
    if len <= max {
        return None;
    }
    actions.filter(|a| !a.status.is_open()).min_by_key(|a| a.time).map(|a| a.key.clone())
}

/// A ledger in memory: for tests, replays, and as the reference for the contract.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    inner: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    fence: Fence,
    states: BTreeMap<String, PolicyState>,
    decisions: Vec<Decision>,
    actions: BTreeMap<String, ActionRecord>,
}

impl Memory {
    fn put_states(&mut self, states: &[(&str, &PolicyState)]) {
        for (k, s) in states {
            self.states.insert((*k).to_owned(), (*s).clone());
        }
    }

    fn insert_action(&mut self, rec: ActionRecord) {
        self.actions.insert(rec.key.clone(), rec);
        if let Some(k) = oldest_finished(self.actions.values(), self.actions.len(), MAX_ACTIONS) {
            self.actions.remove(&k);
        }
    }
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // Plain data: a panic elsewhere while holding the lock leaves it consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Ledger for MemoryLedger {
    fn states(&self) -> Result<BTreeMap<String, PolicyState>, LedgerError> {
        Ok(self.lock().states.clone())
    }

    fn commit(
        &self,
        fence: Fence,
        states: &[(&str, &PolicyState)],
        decisions: &[Decision],
    ) -> Result<(), LedgerError> {
        let mut m = self.lock();
        m.fence = admit(m.fence, fence)?;
        m.put_states(states);
        m.decisions.extend_from_slice(decisions);
        let over = m.decisions.len().saturating_sub(MAX_DECISIONS);
        m.decisions.drain(..over);
        Ok(())
    }

    fn commit_pending(
        &self,
        fence: Fence,
        states: &[(&str, &PolicyState)],
        actions: &[ActionRecord],
    ) -> Result<(), LedgerError> {
        let mut m = self.lock();
        m.fence = admit(m.fence, fence)?;
        m.put_states(states);
        for a in actions {
            let rec = merge_action(m.actions.remove(&a.key), a);
            m.insert_action(rec);
        }
        Ok(())
    }

    fn decisions(
        &self,
        policy: Option<&str>,
        rule: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Decision>, LedgerError> {
        let m = self.lock();
        Ok(m.decisions
            .iter()
            .rev()
            .filter(|d| policy.is_none_or(|p| p == d.policy) && rule.is_none_or(|r| r == d.rule))
            .take(limit)
            .cloned()
            .collect())
    }

    fn put_action(&self, fence: Fence, action: &ActionRecord) -> Result<(), LedgerError> {
        let mut m = self.lock();
        m.fence = admit(m.fence, fence)?;
        let rec = merge_action(m.actions.remove(&action.key), action);
        m.insert_action(rec);
        Ok(())
    }

    fn put_actuation(
        &self,
        fence: Fence,
        key: &str,
        time: u64,
        status: ActionStatus,
        actuation: &serde_json::Value,
    ) -> Result<(), LedgerError> {
        let mut m = self.lock();
        m.fence = admit(m.fence, fence)?;
        let rec = with_actuation(m.actions.remove(key), key, time, status, actuation);
        m.insert_action(rec);
        Ok(())
    }

    fn action(&self, key: &str) -> Result<Option<ActionRecord>, LedgerError> {
        Ok(self.lock().actions.get(key).cloned())
    }

    fn actions(&self) -> Result<Vec<ActionRecord>, LedgerError> {
        let mut out: Vec<ActionRecord> = self.lock().actions.values().cloned().collect();
        out.sort_by_key(|a| std::cmp::Reverse(a.time));
        Ok(out)
    }

    fn fence(&self) -> Result<Fence, LedgerError> {
        Ok(self.lock().fence)
    }
}

/// The contract every ledger keeps, run against an implementation by its own tests.
pub mod contract {
    use super::*;

    fn action(key: &str, time: u64, status: ActionStatus) -> ActionRecord {
        ActionRecord {
            key: key.to_owned(),
            time,
            policy: "p".into(),
            rule: "scale".into(),
            action: Action::Resize { from: 1, to: 2 },
            dry_run: false,
            status,
            outcome: None,
            updated: time,
            actuation: None,
        }
    }

    /// Panics with what broke unless `ledger` (empty) keeps the contract: states and
    /// decisions saved together and read back newest first, actions replaced by key, and a
    /// lower fence refused after a higher one wrote, with nothing of it stored.
    pub fn check(ledger: &dyn Ledger) {
        let state = PolicyState::default();
        assert_eq!(ledger.fence(), Ok(Fence::SOLE), "an empty ledger holds the sole fence");
        ledger.commit(Fence(1), &[("p", &state)], &[]).expect("first write");
        assert!(ledger.states().expect("states").contains_key("p"));

        ledger.put_action(Fence(1), &action("k1", 10, ActionStatus::Pending)).expect("put");
        ledger.put_action(Fence(1), &action("k1", 10, ActionStatus::Applied)).expect("replace");
        ledger.put_action(Fence(1), &action("k2", 20, ActionStatus::Pending)).expect("put");
        let actions = ledger.actions().expect("actions");
        let keys: Vec<&str> = actions.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["k2", "k1"], "actions newest first, one per key");
        assert_eq!(actions[1].status, ActionStatus::Applied);

        // The actuator's part and the engine's part of one action, written in either order.
        let sent = serde_json::json!({"state": "pending", "desired": 3});
        ledger.put_actuation(Fence(1), "k1", 10, ActionStatus::Pending, &sent).expect("actuation");
        let k1 = ledger.action("k1").expect("read").expect("k1");
        assert_eq!((k1.status, k1.actuation.as_ref()), (ActionStatus::Applied, Some(&sent)));
        ledger.put_action(Fence(1), &action("k1", 10, ActionStatus::Failed)).expect("outcome");
        let k1 = ledger.action("k1").expect("read").expect("k1");
        assert_eq!(k1.status, ActionStatus::Failed);
        assert_eq!(k1.actuation.as_ref(), Some(&sent), "the engine's write kept the actuation");
        ledger
            .put_actuation(Fence(1), "solo", 5, ActionStatus::Pending, &sent)
            .expect("an actuator driven alone");
        let solo = ledger.action("solo").expect("read").expect("solo");
        assert_eq!((solo.time, solo.status, solo.policy.as_str()), (5, ActionStatus::Pending, ""));
        assert_eq!(ledger.action("none"), Ok(None));

        // State and pending action in one write; the stored actuator part is kept.
        let mut cooled = PolicyState::default();
        cooled.scale.panic_until = Some(99);
        let pending = action("k1", 10, ActionStatus::Pending);
        ledger.commit_pending(Fence(1), &[("p", &cooled)], &[pending]).expect("commit pending");
        assert_eq!(ledger.states().expect("states")["p"], cooled);
        let k1 = ledger.action("k1").expect("read").expect("k1");
        assert_eq!((k1.status, k1.actuation.as_ref()), (ActionStatus::Pending, Some(&sent)));

        // A new leader writes with term 2; the deposed one (term 1) is refused.
        ledger.commit(Fence(2), &[], &[]).expect("new leader");
        assert_eq!(ledger.fence(), Ok(Fence(2)));
        let stale = ledger.put_action(Fence(1), &action("k3", 30, ActionStatus::Pending));
        assert_eq!(stale, Err(LedgerError::Fenced { held: Fence(2), offered: Fence(1) }));
        let stale = ledger.commit(Fence(1), &[("q", &state)], &[]);
        assert!(matches!(stale, Err(LedgerError::Fenced { .. })), "{stale:?}");
        assert!(!ledger.states().expect("states").contains_key("q"), "a refused commit stored");
        let stale = ledger.commit_pending(
            Fence(1),
            &[("q", &state)],
            &[action("k9", 30, ActionStatus::Pending)],
        );
        assert!(matches!(stale, Err(LedgerError::Fenced { .. })), "{stale:?}");
        assert!(!ledger.states().expect("states").contains_key("q"), "a refused commit stored");
        let stale = ledger.put_actuation(Fence(1), "k9", 30, ActionStatus::Pending, &sent);
        assert!(matches!(stale, Err(LedgerError::Fenced { .. })), "{stale:?}");
        assert_eq!(ledger.actions().expect("actions").len(), 3, "a refused action stored");
        ledger.put_action(Fence(2), &action("k3", 30, ActionStatus::Pending)).expect("leader");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_ledger_keeps_the_contract() {
        contract::check(&MemoryLedger::new());
    }

    #[test]
    fn a_full_ledger_drops_the_oldest_finished_action_never_an_open_one() {
        let rec = |key: &str, time, status| ActionRecord {
            key: key.into(),
            time,
            policy: "p".into(),
            rule: "r".into(),
            action: Action::None,
            dry_run: false,
            status,
            outcome: None,
            updated: time,
            actuation: None,
        };
        let all = [
            rec("open-old", 1, ActionStatus::Pending),
            rec("done-old", 2, ActionStatus::Succeeded),
            rec("done-new", 3, ActionStatus::Failed),
        ];
        assert_eq!(oldest_finished(all.iter(), 3, 3), None);
        assert_eq!(oldest_finished(all.iter(), 3, 2).as_deref(), Some("done-old"));
    }
}
