//! [`EtcdLedger`]: the policy [`Ledger`] in etcd, shared by every collector of a cluster, so
//! a new leader resumes from the state, decisions and pending actions the last one wrote.
//!
//! Keys, under a prefix (`/stoker` by default); values are JSON of the same types the
//! embedded ledger (`policy.redb`) stores:
//!
//! - `{prefix}/ledger/fence`: the highest fence that has written, as 20 decimal digits with
//!   leading zeros, so etcd's byte-wise `VALUE` compare orders fences numerically;
//! - `{prefix}/ledger/state/{policy}`: a policy's [`PolicyState`];
//! - `{prefix}/ledger/decision/{time:020}-{writer:016x}-{seq:016x}`: a [`Decision`]. The
//!   writer (random per ledger) and its sequence keep two decisions of one instant apart,
//!   whoever wrote them; keys sort by time, so the newest are read first;
//! - `{prefix}/ledger/action/{key}`: an [`ActionRecord`] by idempotency key.
//!
//! ## Fencing
//!
//! Every write is one transaction whose compares hold only while the stored fence is at
//! most the writer's (`VALUE(fence) < F + 1`, or `create_revision(fence) == 0` before the
//! first write) and which also puts the fence to `F`, so once a higher term has written, a
//! lower one is refused ([`LedgerError::Fenced`], the held fence read in the same
//! transaction's failure branch). A ledger given the election key and its term also
//! compares `create_revision(leader key) == term`: a leader whose lease has expired is
//! refused at once, even before the next leader writes. Then `held` is the new leader's
//! term, or, while nobody leads, the store's revision when the refusal was read, which any
//! later term exceeds.
//!
//! ## Calls
//!
//! [`Ledger`] is synchronous and is called from blocking threads; like the PromQL client,
//! the etcd calls run on a runtime of the ledger's own thread and the caller waits for the
//! answer. A tick's [`Ledger::commit`] is one transaction (states, decisions, fence, and a
//! count of the decisions); past [`MAX_DECISIONS`] the oldest are deleted by a second one.
//! etcd takes at most 128 operations per transaction (`--max-txn-ops`), so a commit of more
//! than [`OPS_PER_TXN`] states and decisions, which one policy's tick does not reach, goes
//! in several, states first.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use stoker_policy::engine::{Decision, PolicyState};
use stoker_policy::ledger::{
    ActionRecord, ActionStatus, Fence, Ledger, LedgerError, MAX_ACTIONS, MAX_DECISIONS,
    merge_action, oldest_finished, with_actuation,
};
use tracing::warn;

use super::etcd::{
    Compare, CompareResult, CompareTarget, EtcdClient, EtcdError, KeyValue, PutRequest,
    RangeRequest, RequestOp, Txn, TxnResponse,
};

/// States and decisions written in one transaction: etcd's default limit of 128
/// operations, less the fence put, the decision count and some room.
pub const OPS_PER_TXN: usize = 120;
/// Keys read per range when scanning.
const PAGE: i64 = 500;
/// Tries of a read-modify-write before giving up on a key that keeps changing.
const ATTEMPTS: usize = 5;
/// Most actions deleted by one trim.
const TRIM_ACTIONS: usize = 64;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The policy ledger in etcd. Every method blocks its caller until etcd answered (each call
/// bounded by the client's timeout); call it from a blocking thread.
pub struct EtcdLedger {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    core: Arc<Core>,
    /// This ledger's writer ID in decision keys.
    writer: u64,
    seq: AtomicU64,
}

impl std::fmt::Debug for EtcdLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLedger")
            .field("endpoints", &self.core.client.endpoints())
            .field("fence_key", &String::from_utf8_lossy(&self.core.keys.fence))
            .field("leader", &self.core.leader)
            .finish()
    }
}

impl EtcdLedger {
    /// A ledger under `prefix` (e.g. `/stoker`) on `client`'s cluster. With `leader_key` =
    /// `Some(key)` (the election key), a write with fence `F` is also refused unless that key
    /// still exists and was created at revision `F` (the writer's term): a leader whose lease
    /// ended is refused at once, before anyone else writes. The ledger uses a connection pool
    /// of its own, served by its own thread.
    pub fn new(
        client: &EtcdClient,
        prefix: &str,
        leader_key: Option<String>,
    ) -> Result<Self, EtcdError> {
        let client = client.with_own_pool()?;
        let base = format!("{}/ledger", prefix.trim_end_matches('/'));
        let core = Arc::new(Core {
            client,
            keys: Keys {
                fence: format!("{base}/fence").into_bytes(),
                state: format!("{base}/state/"),
                decision: format!("{base}/decision/"),
                action: format!("{base}/action/"),
            },
            leader: leader_key.map(String::into_bytes),
            max_decisions: MAX_DECISIONS,
            max_actions: MAX_ACTIONS,
        });
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EtcdError::Io { what: "ledger runtime", source: e })?;
        std::thread::Builder::new()
            .name("stoker-etcd-ledger".into())
            .spawn(move || {
                // Ends when the last sender (the ledger) is dropped.
                rt.block_on(async move {
                    while let Some(job) = rx.recv().await {
                        tokio::spawn(job);
                    }
                })
            })
            .map_err(|e| EtcdError::Io { what: "ledger thread", source: e })?;
        Ok(Self { jobs, core, writer: fastrand::u64(..), seq: AtomicU64::new(0) })
    }

    /// Runs `work` on the ledger's thread and waits for its answer.
    fn block<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, LedgerError>> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::pin(async move {
            let _ = reply.send(work.await);
        });
        let stopped = || LedgerError::Storage("etcd ledger: its I/O thread stopped".into());
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }

    /// The key of a new decision at `time`.
    fn decision_key(&self, time: u64) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{}{time:020}-{:016x}-{seq:016x}", self.core.keys.decision, self.writer)
    }

    #[cfg(test)]
    fn with_bounds(mut self, decisions: usize, actions: usize) -> Self {
        if let Some(core) = Arc::get_mut(&mut self.core) {
            core.max_decisions = decisions;
            core.max_actions = actions;
        }
        self
    }
}

impl Ledger for EtcdLedger {
    fn states(&self) -> Result<BTreeMap<String, PolicyState>, LedgerError> {
        let core = self.core.clone();
        self.block(async move { core.states().await })
    }

    fn commit(
        &self,
        fence: Fence,
        states: &[(&str, &PolicyState)],
        decisions: &[Decision],
    ) -> Result<(), LedgerError> {
        // Encoded here, so the I/O thread gets owned bytes and a bad record fails early.
        let mut puts = Vec::with_capacity(states.len() + decisions.len());
        for (name, state) in states {
            let key = format!("{}{name}", self.core.keys.state);
            puts.push(PutRequest::new(key.clone(), encode(&key, state)?));
        }
        for d in decisions {
            let key = self.decision_key(d.time);
            puts.push(PutRequest::new(key.clone(), encode(&key, d)?));
        }
        let core = self.core.clone();
        self.block(async move { core.commit(fence, puts).await })
    }

    fn decisions(
        &self,
        policy: Option<&str>,
        rule: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Decision>, LedgerError> {
        let core = self.core.clone();
        let (policy, rule) = (policy.map(str::to_owned), rule.map(str::to_owned));
        self.block(async move { core.decisions(policy, rule, limit).await })
    }

    fn commit_pending(
        &self,
        fence: Fence,
        states: &[(&str, &PolicyState)],
        actions: &[ActionRecord],
    ) -> Result<(), LedgerError> {
        let mut puts = Vec::with_capacity(states.len());
        for (name, state) in states {
            let key = format!("{}{name}", self.core.keys.state);
            puts.push(PutRequest::new(key.clone(), encode(&key, state)?));
        }
        let core = self.core.clone();
        let actions = actions.to_vec();
        self.block(async move { core.commit_pending(fence, puts, actions).await })
    }

    fn put_action(&self, fence: Fence, action: &ActionRecord) -> Result<(), LedgerError> {
        let core = self.core.clone();
        let offered = action.clone();
        let key = offered.key.clone();
        self.block(async move {
            core.update_action(fence, &key, move |stored| merge_action(stored, &offered)).await
        })
    }

    fn put_actuation(
        &self,
        fence: Fence,
        key: &str,
        time: u64,
        status: ActionStatus,
        actuation: &serde_json::Value,
    ) -> Result<(), LedgerError> {
        let core = self.core.clone();
        let (key, actuation) = (key.to_owned(), actuation.clone());
        self.block(async move {
            let k = key.clone();
            core.update_action(fence, &key, move |stored| {
                with_actuation(stored, &k, time, status, &actuation)
            })
            .await
        })
    }

    fn action(&self, key: &str) -> Result<Option<ActionRecord>, LedgerError> {
        let core = self.core.clone();
        let key = format!("{}{key}", self.core.keys.action);
        self.block(async move {
            match core.client.get(key.as_bytes()).await.map_err(storage)? {
                Some(kv) => decode(&kv).map(Some),
                None => Ok(None),
            }
        })
    }

    fn actions(&self) -> Result<Vec<ActionRecord>, LedgerError> {
        let core = self.core.clone();
        self.block(async move {
            let mut out: Vec<ActionRecord> = Vec::new();
            core.scan(&core.keys.action, false, PAGE, |kv| {
                out.push(decode(&kv)?);
                Ok(true)
            })
            .await?;
            out.sort_by_key(|a| std::cmp::Reverse(a.time));
            Ok(out)
        })
    }

    fn fence(&self) -> Result<Fence, LedgerError> {
        let core = self.core.clone();
        self.block(async move {
            let kv = core.client.get(&core.keys.fence).await.map_err(storage)?;
            kv.map_or(Ok(Fence::SOLE), |kv| parse_fence(&core.keys.fence, &kv.value))
        })
    }
}

struct Keys {
    fence: Vec<u8>,
    /// Prefixes, each ending in `/`.
    state: String,
    decision: String,
    action: String,
}

/// What the ledger's thread works with.
struct Core {
    client: EtcdClient,
    keys: Keys,
    /// The election key, which must still have been created at the writer's term.
    leader: Option<Vec<u8>>,
    max_decisions: usize,
    max_actions: usize,
}

/// How a fenced write ended when the fence admitted it.
enum Written {
    /// It was applied.
    Done(TxnResponse),
    /// One of the caller's own compares failed.
    Conflict,
}

impl Core {
    async fn states(&self) -> Result<BTreeMap<String, PolicyState>, LedgerError> {
        let mut out = BTreeMap::new();
        let prefix = self.keys.state.len();
        self.scan(&self.keys.state, false, PAGE, |kv| {
            let name = String::from_utf8_lossy(kv.key.get(prefix..).unwrap_or_default());
            out.insert(name.into_owned(), decode(&kv)?);
            Ok(true)
        })
        .await?;
        Ok(out)
    }

    async fn commit(&self, fence: Fence, puts: Vec<PutRequest>) -> Result<(), LedgerError> {
        let mut rest = puts;
        let mut count = 0;
        // At least one transaction: a commit of nothing still raises the fence.
        loop {
            let tail = rest.split_off(rest.len().min(OPS_PER_TXN));
            let chunk = std::mem::replace(&mut rest, tail);
            let at = chunk.len();
            let mut ops: Vec<RequestOp> = chunk.into_iter().map(RequestOp::Put).collect();
            ops.push(RequestOp::Range(count_of(&self.keys.decision)));
            let resp = self.write_unguarded(fence, ops).await?;
            count = resp.range(at).map_or(count, |r| r.count);
            if rest.is_empty() {
                break;
            }
        }
        let over = usize::try_from(count).unwrap_or(0).saturating_sub(self.max_decisions);
        if over > 0 {
            if let Err(e) = self.trim_decisions(fence, over).await {
                warn!(error = %e, over, "Cannot drop the oldest decisions; the next commit tries again.");
            }
        }
        Ok(())
    }

    async fn trim_decisions(&self, fence: Fence, over: usize) -> Result<(), LedgerError> {
        let mut oldest = RangeRequest::prefix(self.keys.decision.as_bytes());
        oldest.limit = i64::try_from(over).unwrap_or(i64::MAX);
        oldest.keys_only = true;
        let r = self.client.range(&oldest).await.map_err(storage)?;
        let Some(last) = r.kvs.last() else { return Ok(()) };
        let mut end = last.key.clone();
        end.push(0);
        let delete = RequestOp::DeleteRange {
            key: self.keys.decision.clone().into_bytes(),
            range_end: Some(end),
        };
        self.write_unguarded(fence, vec![delete]).await.map(|_| ())
    }

    async fn decisions(
        &self,
        policy: Option<String>,
        rule: Option<String>,
        limit: usize,
    ) -> Result<Vec<Decision>, LedgerError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let filtered = policy.is_some() || rule.is_some();
        let page = if filtered { PAGE } else { i64::try_from(limit).unwrap_or(PAGE).min(PAGE) };
        self.scan(&self.keys.decision, true, page, |kv| {
            let d: Decision = decode(&kv)?;
            let wanted = policy.as_ref().is_none_or(|p| *p == d.policy)
                && rule.as_ref().is_none_or(|r| *r == d.rule);
            if wanted {
                out.push(d);
            }
            Ok(out.len() < limit)
        })
        .await?;
        Ok(out)
    }

    /// The states and the engine's part of the actions in one fenced transaction, each
    /// action compare-and-set on its mod revision (merged with what is stored, as
    /// [`Core::update_action`] does).
    async fn commit_pending(
        &self,
        fence: Fence,
        states: Vec<PutRequest>,
        actions: Vec<ActionRecord>,
    ) -> Result<(), LedgerError> {
        for _ in 0..ATTEMPTS {
            let mut guards = Vec::with_capacity(actions.len());
            let mut ops: Vec<RequestOp> = states.iter().cloned().map(RequestOp::Put).collect();
            for a in &actions {
                let k = format!("{}{}", self.keys.action, a.key).into_bytes();
                let kv = self.client.get(&k).await.map_err(storage)?;
                let (stored, revision) = match kv {
                    Some(kv) => (serde_json::from_slice(&kv.value).ok(), kv.mod_revision),
                    None => (None, 0),
                };
                let value = encode(&a.key, &merge_action(stored, a))?;
                guards.push(Compare::new(
                    k.clone(),
                    CompareResult::Equal,
                    CompareTarget::Mod(revision),
                ));
                ops.push(RequestOp::Put(PutRequest::new(k, value)));
            }
            match self.write(fence, &guards, ops).await? {
                Written::Done(_) => return Ok(()),
                Written::Conflict => continue,
            }
        }
        Err(LedgerError::Storage(format!(
            "etcd ledger: pending actions changed under this write {ATTEMPTS} times in a row"
        )))
    }

    /// Replaces the action under `key` with `update(stored)`, compare-and-set on its mod
    /// revision, and bounds the actions.
    async fn update_action(
        &self,
        fence: Fence,
        key: &str,
        update: impl Fn(Option<ActionRecord>) -> ActionRecord,
    ) -> Result<(), LedgerError> {
        let k = format!("{}{key}", self.keys.action).into_bytes();
        for _ in 0..ATTEMPTS {
            let kv = self.client.get(&k).await.map_err(storage)?;
            // A record that no longer decodes is replaced, as the embedded ledger does.
            let (stored, revision) = match kv {
                Some(kv) => (serde_json::from_slice(&kv.value).ok(), kv.mod_revision),
                None => (None, 0),
            };
            let value = encode(key, &update(stored))?;
            let unchanged =
                Compare::new(k.clone(), CompareResult::Equal, CompareTarget::Mod(revision));
            let ops = vec![
                RequestOp::Put(PutRequest::new(k.clone(), value)),
                RequestOp::Range(count_of(&self.keys.action)),
            ];
            match self.write(fence, &[unchanged], ops).await? {
                Written::Done(resp) => {
                    let count = resp.range(1).map_or(0, |r| r.count);
                    if usize::try_from(count).unwrap_or(0) > self.max_actions {
                        if let Err(e) = self.trim_actions(fence).await {
                            warn!(error = %e, "Cannot drop the oldest finished actions; the next write tries again.");
                        }
                    }
                    return Ok(());
                }
                Written::Conflict => continue,
            }
        }
        Err(LedgerError::Storage(format!(
            "etcd ledger: action {key} changed under this write {ATTEMPTS} times in a row"
        )))
    }

    /// Deletes the oldest finished actions while there are more than the bound; an open
    /// one is never dropped.
    async fn trim_actions(&self, fence: Fence) -> Result<(), LedgerError> {
        let mut all: Vec<(ActionRecord, KeyValue)> = Vec::new();
        let mut len = 0;
        self.scan(&self.keys.action, false, PAGE, |kv| {
            len += 1;
            if let Ok(r) = serde_json::from_slice::<ActionRecord>(&kv.value) {
                all.push((r, kv));
            }
            Ok(true)
        })
        .await?;
        let mut guards = Vec::new();
        let mut ops = Vec::new();
        while ops.len() < TRIM_ACTIONS {
            let Some(key) = oldest_finished(all.iter().map(|(r, _)| r), len, self.max_actions)
            else {
                break;
            };
            let Some(at) = all.iter().position(|(r, _)| r.key == key) else { break };
            let (_, kv) = all.swap_remove(at);
            len -= 1;
            // Deleted only if nobody updated it meanwhile (it may have been reopened).
            guards.push(Compare::new(
                kv.key.clone(),
                CompareResult::Equal,
                CompareTarget::Mod(kv.mod_revision),
            ));
            ops.push(RequestOp::DeleteRange { key: kv.key, range_end: None });
        }
        if ops.is_empty() {
            return Ok(());
        }
        // A conflict leaves the trim to the next write.
        self.write(fence, &guards, ops).await.map(|_| ())
    }

    async fn write_unguarded(
        &self,
        fence: Fence,
        ops: Vec<RequestOp>,
    ) -> Result<TxnResponse, LedgerError> {
        match self.write(fence, &[], ops).await? {
            Written::Done(resp) => Ok(resp),
            Written::Conflict => Err(LedgerError::Storage(
                "etcd ledger: a write was refused for no reason it could read".into(),
            )),
        }
    }

    /// One transaction: `ops` and the fence put, if the fence (and the leader key, when
    /// this ledger has one) admit `fence` and `guards` hold.
    async fn write(
        &self,
        fence: Fence,
        guards: &[Compare],
        ops: Vec<RequestOp>,
    ) -> Result<Written, LedgerError> {
        let fence_key = &self.keys.fence;
        let mut success = ops;
        success.push(RequestOp::Put(PutRequest::new(fence_key.clone(), padded(fence.0.into()))));
        let mut failure = vec![RequestOp::Range(RangeRequest::key(fence_key.clone()))];
        if let Some(key) = &self.leader {
            failure.push(RequestOp::Range(RangeRequest::key(key.clone())));
        }
        // The fence key exists after the first write; before it, a second attempt compares
        // its absence instead (a VALUE compare on a missing key fails).
        let mut fence_exists = true;
        for _ in 0..ATTEMPTS {
            let admitted = if fence_exists {
                let above = padded(u128::from(fence.0) + 1);
                Compare::new(fence_key.clone(), CompareResult::Less, CompareTarget::Value(above))
            } else {
                Compare::new(fence_key.clone(), CompareResult::Equal, CompareTarget::Create(0))
            };
            let mut compare = vec![admitted];
            if let Some(key) = &self.leader {
                let term = i64::try_from(fence.0).unwrap_or(i64::MAX);
                compare.push(Compare::new(
                    key.clone(),
                    CompareResult::Equal,
                    CompareTarget::Create(term),
                ));
            }
            compare.extend_from_slice(guards);
            let txn = Txn { compare, success: success.clone(), failure: failure.clone() };
            let resp = self.client.txn(&txn).await.map_err(storage)?;
            if resp.succeeded {
                return Ok(Written::Done(resp));
            }
            let stored = resp.range(0).and_then(|r| r.kvs.first());
            let held = match stored {
                Some(kv) => parse_fence(fence_key, &kv.value)?,
                None => Fence::SOLE,
            };
            if held > fence {
                return Err(LedgerError::Fenced { held, offered: fence });
            }
            if self.leader.is_some() {
                let leader = resp.range(1).and_then(|r| r.kvs.first());
                if leader.map(|kv| kv.create_revision.max(0).unsigned_abs()) != Some(fence.0) {
                    let now = leader.map_or(resp.header.revision, |kv| kv.create_revision);
                    let held = Fence(now.max(0).unsigned_abs());
                    return Err(LedgerError::Fenced { held, offered: fence });
                }
            }
            if stored.is_some() != fence_exists {
                fence_exists = stored.is_some();
                continue;
            }
            return Ok(Written::Conflict);
        }
        Err(LedgerError::Storage(format!(
            "etcd ledger: {} kept appearing and vanishing",
            String::from_utf8_lossy(fence_key)
        )))
    }

    /// Visits the keys under `prefix` in key order (`descending`: last first), `page` at a
    /// time, all from one revision, until `visit` says stop.
    async fn scan(
        &self,
        prefix: &str,
        descending: bool,
        page: i64,
        mut visit: impl FnMut(KeyValue) -> Result<bool, LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut req = RangeRequest::prefix(prefix.as_bytes());
        req.limit = page.max(1);
        req.descending = descending;
        loop {
            let r = self.client.range(&req).await.map_err(storage)?;
            // Later pages read the revision the first one did: one consistent view.
            req.revision = r.header.revision;
            let Some(last) = r.kvs.last().map(|kv| kv.key.clone()) else { return Ok(()) };
            for kv in r.kvs {
                if !visit(kv)? {
                    return Ok(());
                }
            }
            if !r.more {
                return Ok(());
            }
            if descending {
                req.range_end = Some(last);
            } else {
                req.key = last;
                req.key.push(0);
            }
        }
    }
}

/// A count of the keys under `prefix`, read inside a write.
fn count_of(prefix: &str) -> RangeRequest {
    let mut r = RangeRequest::prefix(prefix.as_bytes());
    r.count_only = true;
    r
}

/// A fence as stored: 20 digits, so byte order is numeric order. `u128` so that `F + 1`
/// of the highest `u64` still has 20 digits.
fn padded(n: u128) -> Vec<u8> {
    format!("{n:020}").into_bytes()
}

fn parse_fence(key: &[u8], value: &[u8]) -> Result<Fence, LedgerError> {
    std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()).map(Fence).ok_or_else(|| {
        LedgerError::Storage(format!(
            "etcd ledger: {} holds {:?}, not a fence",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(value)
        ))
    })
}

fn encode<T: serde::Serialize>(key: &str, v: &T) -> Result<Vec<u8>, LedgerError> {
    serde_json::to_vec(v).map_err(|e| LedgerError::Storage(format!("etcd ledger: {key}: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T, LedgerError> {
    serde_json::from_slice(&kv.value).map_err(|e| {
        LedgerError::Storage(format!("etcd ledger: {}: {e}", String::from_utf8_lossy(&kv.key)))
    })
}

fn storage(e: EtcdError) -> LedgerError {
    LedgerError::Storage(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::election::{Campaign, campaign};
    use crate::cluster::testing;
    use stoker_policy::engine::{Action, RuleKind};
    use stoker_policy::format::Mode;

    fn client(endpoint: &str) -> EtcdClient {
        EtcdClient::new(&[endpoint.to_owned()], Duration::from_secs(5)).unwrap()
    }

    fn decision(time: u64, policy: &str, rule: &str) -> Decision {
        Decision {
            time,
            policy: policy.into(),
            rule: rule.into(),
            kind: RuleKind::Scale,
            mode: Mode::Enforce,
            inputs: Vec::new(),
            current: Some(1),
            recommendation: Some(2),
            condition: None,
            constraints: Vec::new(),
            action: Action::Resize { from: 1, to: 2 },
            reason: format!("{policy}/{rule} at {time}"),
            key: None,
            outcome: None,
        }
    }

    /// Runs `f` on a blocking thread, as the policy runtime calls a ledger.
    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.unwrap()
    }

    #[tokio::test]
    async fn the_etcd_ledger_keeps_the_contract() {
        let Some(etcd) = testing::etcd().await else { return };
        let ledger = EtcdLedger::new(&client(&etcd.endpoint), "/stoker", None).unwrap();
        blocking(move || stoker_policy::ledger::contract::check(&ledger)).await;
    }

    #[tokio::test]
    async fn decisions_are_newest_first_filtered_and_bounded_and_fences_order_as_numbers() {
        let Some(etcd) = testing::etcd().await else { return };
        let ledger =
            EtcdLedger::new(&client(&etcd.endpoint), "/stoker", None).unwrap().with_bounds(5, 2);
        blocking(move || {
            let state = PolicyState::default();
            // Two decisions of one instant, then more than the bound.
            let first = [decision(10, "p", "scale"), decision(10, "p", "other")];
            ledger.commit(Fence(9), &[("p", &state)], &first).unwrap();
            let later: Vec<Decision> = (11..16).map(|t| decision(t, "q", "scale")).collect();
            // Fence 10 after 9: as text "10" < "9"; padded, it is admitted.
            ledger.commit(Fence(10), &[("q", &state)], &later).unwrap();
            assert_eq!(
                ledger.commit(Fence(9), &[], &[]),
                Err(LedgerError::Fenced { held: Fence(10), offered: Fence(9) })
            );

            let all = ledger.decisions(None, None, 100).unwrap();
            let times: Vec<u64> = all.iter().map(|d| d.time).collect();
            assert_eq!(times, [15, 14, 13, 12, 11], "bounded to 5, newest first");
            let q = ledger.decisions(Some("q"), Some("scale"), 2).unwrap();
            assert_eq!(q.iter().map(|d| d.time).collect::<Vec<_>>(), [15, 14]);
            assert!(ledger.decisions(Some("p"), None, 10).unwrap().is_empty());
            assert_eq!(ledger.states().unwrap().keys().collect::<Vec<_>>(), ["p", "q"]);

            // Actions: the oldest finished goes, an open one stays.
            let rec = |key: &str, time, status| ActionRecord {
                status,
                policy: "p".into(),
                ..ActionRecord::actuator_only(key, time, status)
            };
            ledger.put_action(Fence(10), &rec("open", 1, ActionStatus::Pending)).unwrap();
            ledger.put_action(Fence(10), &rec("done", 2, ActionStatus::Succeeded)).unwrap();
            ledger.put_action(Fence(10), &rec("new", 3, ActionStatus::Failed)).unwrap();
            let keys: Vec<String> = ledger.actions().unwrap().into_iter().map(|a| a.key).collect();
            assert_eq!(keys, ["new", "open"]);
        })
        .await;
    }

    #[tokio::test]
    async fn a_commit_larger_than_one_transaction_is_stored_whole() {
        let Some(etcd) = testing::etcd().await else { return };
        let ledger = EtcdLedger::new(&client(&etcd.endpoint), "/s", None).unwrap();
        blocking(move || {
            let state = PolicyState::default();
            let many: Vec<Decision> = (0..300).map(|t| decision(t, "p", "r")).collect();
            ledger.commit(Fence(1), &[("p", &state)], &many).unwrap();
            assert_eq!(ledger.decisions(None, None, 1000).unwrap().len(), 300);
        })
        .await;
    }

    #[tokio::test]
    async fn a_leader_whose_lease_expired_is_refused_before_anyone_else_writes() {
        let Some(etcd) = testing::etcd().await else { return };
        let c = client(&etcd.endpoint);
        let key = "/stoker/leader";
        // A leader that never keeps its 1 s lease alive.
        let lease = c.lease_grant(Duration::from_secs(1)).await.unwrap();
        let Campaign::Won { term } = campaign(&c, key, "old", lease.id).await.unwrap() else {
            panic!("nobody else campaigns")
        };
        let old = EtcdLedger::new(&c, "/stoker", Some(key.into())).unwrap();
        let old = Arc::new(old);
        let state = PolicyState::default();
        let o = old.clone();
        blocking(move || o.commit(Fence(term), &[("p", &PolicyState::default())], &[]))
            .await
            .expect("the leader writes while its lease lives");

        let gone = async {
            while c.get(key.as_bytes()).await.unwrap().is_some() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), gone).await.expect("the lease expires");

        let o = old.clone();
        let s = state.clone();
        let refused = blocking(move || o.commit(Fence(term), &[("late", &s)], &[])).await;
        match refused {
            Err(LedgerError::Fenced { held, offered }) => {
                assert_eq!(offered, Fence(term));
                assert!(held > offered, "{held} > {offered}");
            }
            other => panic!("expected Fenced, got {other:?}"),
        }
        let o = old.clone();
        let refused = blocking(move || {
            let rec = ActionRecord::actuator_only("k", 1, ActionStatus::Pending);
            o.put_action(Fence(term), &rec)
        })
        .await;
        assert!(matches!(refused, Err(LedgerError::Fenced { .. })), "{refused:?}");
        let o = old.clone();
        let (states, fence, actions) =
            blocking(move || (o.states().unwrap(), o.fence().unwrap(), o.actions().unwrap())).await;
        assert!(!states.contains_key("late"), "a refused commit stored");
        assert!(actions.is_empty(), "a refused action stored");
        assert_eq!(fence, Fence(term), "nobody else has written");

        // The next leader writes; the old one is refused with the new term as the reason.
        let lease = c.lease_grant(Duration::from_secs(5)).await.unwrap();
        let Campaign::Won { term: next } = campaign(&c, key, "new", lease.id).await.unwrap() else {
            panic!("the key was free")
        };
        assert!(next > term);
        let new = EtcdLedger::new(&c, "/stoker", Some(key.into())).unwrap();
        let s = state.clone();
        blocking(move || new.commit(Fence(next), &[("p", &s)], &[])).await.unwrap();
        let refused = blocking(move || old.commit(Fence(term), &[], &[])).await;
        assert_eq!(refused, Err(LedgerError::Fenced { held: Fence(next), offered: Fence(term) }));
    }
}
