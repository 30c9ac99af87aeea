//! The embedded [`Ledger`]: `<data-dir>/policy.redb` holds engine state per policy
//! (cooldowns, stabilization history, budgets), decision records, actions with their
//! idempotency keys, job lifecycle and the actuators' records of what they sent, and the
//! highest write fence seen. A file of its own, so
//! the policy room does not depend on the store's internals. Values are JSON: small, few, and
//! readable when debugging.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::engine::{Decision, PolicyState};
pub use stoker_policy::ledger::{
    ActionRecord, ActionStatus, Fence, Leadership, Ledger, LedgerError,
};
use stoker_policy::ledger::{
    MAX_ACTIONS, MAX_DECISIONS, admit, merge_action, oldest_finished, with_actuation,
};

const STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("policy_state");
const DECISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("decisions");
const ACTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("actions");
/// `fence`: the highest write fence seen.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Errors of the policy state file.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// redb failed.
    #[error("policy state database {path}: {source}")]
    Db {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: redb::Error,
    },
    /// The file is empty or damaged (the message says what to do).
    #[error(transparent)]
    File(#[from] crate::dbfile::DbFileError),
    /// A record did not encode or decode.
    #[error("policy state record: {0}")]
    Codec(#[from] serde_json::Error),
    /// A writer with a higher fence has written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<PersistError> for LedgerError {
    fn from(e: PersistError) -> Self {
        match e {
            PersistError::Ledger(l) => l,
            other => LedgerError::Storage(other.to_string()),
        }
    }
}

/// The policy state database.
pub struct PolicyStore {
    db: Database,
    path: String,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore").field("path", &self.path).finish()
    }
}

impl PolicyStore {
    /// Opens or creates `<dir>/policy.redb`.
    pub fn open(dir: &Path) -> Result<Self, PersistError> {
        let path = dir.join("policy.redb");
        let p = path.display().to_string();
        let err = |e: redb::Error| PersistError::Db { path: p.clone(), source: e };
        std::fs::create_dir_all(dir).map_err(|e| err(redb::Error::Io(e)))?;
        let db = crate::dbfile::open(&path, &mut Database::builder())?;
        let store = Self { db, path: p };
        // Create the tables so reads never meet a missing table.
        store.write(|txn| {
            txn.open_table(STATES)?;
            txn.open_table(DECISIONS)?;
            txn.open_table(ACTIONS)?;
            txn.open_table(META)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// In a write transaction: admits `offered` against the fence held, or refuses.
    fn fenced(
        txn: &redb::WriteTransaction,
        offered: Fence,
    ) -> Result<Result<(), LedgerError>, redb::Error> {
        let mut meta = txn.open_table(META)?;
        let held = Fence(meta.get("fence")?.map(|v| v.value()).unwrap_or(0));
        match admit(held, offered) {
            Ok(keep) => {
                if keep > held {
                    meta.insert("fence", keep.0)?;
                }
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    fn err(&self, e: impl Into<redb::Error>) -> PersistError {
        PersistError::Db { path: self.path.clone(), source: e.into() }
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), PersistError> {
        self.write_fenced(None, f)
    }

    /// A write transaction that commits only when `fence` (if any) is admitted; a refused
    /// one is aborted, so nothing of it is stored.
    fn write_fenced(
        &self,
        fence: Option<Fence>,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), PersistError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        if let Some(offered) = fence {
            if let Err(refused) = Self::fenced(&txn, offered).map_err(|e| self.err(e))? {
                txn.abort().map_err(|e| self.err(e))?;
                return Err(refused.into());
            }
        }
        f(&txn).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))
    }

    /// Every policy's saved state.
    pub fn states(&self) -> Result<BTreeMap<String, PolicyState>, PersistError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(STATES).map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.insert(k.value().to_owned(), serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Saves states and appends decisions in one transaction, so state and record agree.
    pub fn commit(
        &self,
        fence: Fence,
        states: &[(&str, &PolicyState)],
        decisions: &[Decision],
    ) -> Result<(), PersistError> {
        let encoded_states = encode_states(states)?;
        let encoded: Vec<Vec<u8>> =
            decisions.iter().map(serde_json::to_vec).collect::<Result<_, _>>()?;
        self.write_fenced(Some(fence), |txn| {
            put_states(txn, &encoded_states)?;
            let mut dt = txn.open_table(DECISIONS)?;
            let mut next = dt.last()?.map(|(k, _)| k.value() + 1).unwrap_or(0);
            for v in &encoded {
                dt.insert(next, v.as_slice())?;
                next += 1;
            }
            let len = dt.len()?;
            if len > MAX_DECISIONS as u64 {
                let drop_below = next - MAX_DECISIONS as u64;
                dt.retain_in(..drop_below, |_, _| false)?;
            }
            Ok(())
        })
    }

    /// Newest decisions first, optionally of one policy and rule.
    pub fn decisions(
        &self,
        policy: Option<&str>,
        rule: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Decision>, PersistError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(DECISIONS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))?.rev() {
            let (_, v) = row.map_err(|e| self.err(e))?;
            let d: Decision = serde_json::from_slice(v.value())?;
            if policy.is_some_and(|p| p != d.policy) || rule.is_some_and(|r| r != d.rule) {
                continue;
            }
            out.push(d);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Inserts or replaces the engine's part of an action by key, keeping the stored
    /// actuator's part when `a` carries none.
    pub fn put_action(&self, fence: Fence, a: &ActionRecord) -> Result<(), PersistError> {
        self.update_action(fence, &a.key, |stored| merge_action(stored, a))
    }

    /// Sets the actuator's part of the action under `key`.
    pub fn put_actuation(
        &self,
        fence: Fence,
        key: &str,
        time: u64,
        status: ActionStatus,
        actuation: &serde_json::Value,
    ) -> Result<(), PersistError> {
        self.update_action(fence, key, |stored| {
            with_actuation(stored, key, time, status, actuation)
        })
    }

    /// Reads the record under `key`, replaces it with `update(stored)` and bounds the table,
    /// in one fenced transaction.
    fn update_action(
        &self,
        fence: Fence,
        key: &str,
        update: impl FnOnce(Option<ActionRecord>) -> ActionRecord,
    ) -> Result<(), PersistError> {
        let mut codec = None;
        self.write_fenced(Some(fence), |txn| {
            let mut t = txn.open_table(ACTIONS)?;
            codec = replace_action(&mut t, key, update)?.err();
            Ok(())
        })?;
        codec.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Saves `states` and the engine's part of `actions` in one fenced transaction.
    pub fn commit_pending(
        &self,
        fence: Fence,
        states: &[(&str, &PolicyState)],
        actions: &[ActionRecord],
    ) -> Result<(), PersistError> {
        let encoded_states = encode_states(states)?;
        // An offered record that encodes merges into one that does (the stored actuator part
        // is JSON already), so a codec error cannot split the state from its actions below.
        for a in actions {
            serde_json::to_vec(a)?;
        }
        let mut codec = None;
        self.write_fenced(Some(fence), |txn| {
            put_states(txn, &encoded_states)?;
            let mut t = txn.open_table(ACTIONS)?;
            for a in actions {
                if let Err(e) = replace_action(&mut t, &a.key, |stored| merge_action(stored, a))? {
                    codec = Some(e);
                }
            }
            Ok(())
        })?;
        codec.map_or(Ok(()), |e| Err(e.into()))
    }

    /// The action under `key`.
    pub fn action(&self, key: &str) -> Result<Option<ActionRecord>, PersistError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(ACTIONS).map_err(|e| self.err(e))?;
        let Some(v) = t.get(key).map_err(|e| self.err(e))? else { return Ok(None) };
        Ok(Some(serde_json::from_slice(v.value())?))
    }

    /// All actions, newest first.
    pub fn actions(&self) -> Result<Vec<ActionRecord>, PersistError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(ACTIONS).map_err(|e| self.err(e))?;
        let mut out: Vec<ActionRecord> = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (_, v) = row.map_err(|e| self.err(e))?;
            out.push(serde_json::from_slice(v.value())?);
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.time));
        Ok(out)
    }

    /// The highest fence that has written.
    pub fn fence(&self) -> Result<Fence, PersistError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(META).map_err(|e| self.err(e))?;
        Ok(Fence(t.get("fence").map_err(|e| self.err(e))?.map(|v| v.value()).unwrap_or(0)))
    }
}

/// Each policy's state as the JSON it is stored as.
fn encode_states<'a>(
    states: &[(&'a str, &PolicyState)],
) -> Result<Vec<(&'a str, Vec<u8>)>, serde_json::Error> {
    states.iter().map(|(k, s)| serde_json::to_vec(s).map(|v| (*k, v))).collect()
}

/// Stores encoded states in `txn`.
fn put_states(txn: &redb::WriteTransaction, states: &[(&str, Vec<u8>)]) -> Result<(), redb::Error> {
    let mut st = txn.open_table(STATES)?;
    for (k, v) in states {
        st.insert(*k, v.as_slice())?;
    }
    Ok(())
}

/// Replaces the action under `key` with `update(stored)` in `t` and bounds the table. The
/// outer error is the database's; the inner one a record that did not encode (then nothing
/// was written for it).
fn replace_action(
    t: &mut redb::Table<'_, &'static str, &'static [u8]>,
    key: &str,
    update: impl FnOnce(Option<ActionRecord>) -> ActionRecord,
) -> Result<Result<(), serde_json::Error>, redb::Error> {
    let stored = match t.get(key)? {
        Some(v) => serde_json::from_slice::<ActionRecord>(v.value()).ok(),
        None => None,
    };
    let v = match serde_json::to_vec(&update(stored)) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    t.insert(key, v.as_slice())?;
    let len = t.len()? as usize;
    if len > MAX_ACTIONS {
        // Keys start with the policy name, so the oldest finished goes by time instead.
        let mut records = Vec::with_capacity(len);
        for row in t.iter()? {
            if let Ok(r) = serde_json::from_slice::<ActionRecord>(row?.1.value()) {
                records.push(r);
            }
        }
        if let Some(k) = oldest_finished(records.iter(), len, MAX_ACTIONS) {
            t.remove(k.as_str())?;
        }
    }
    Ok(Ok(()))
}

impl Ledger for PolicyStore {
    fn states(&self) -> Result<BTreeMap<String, PolicyState>, LedgerError> {
        Ok(PolicyStore::states(self)?)
    }

    fn commit(
        &self,
        fence: Fence,
        states: &[(&str, &PolicyState)],
        decisions: &[Decision],
    ) -> Result<(), LedgerError> {
        Ok(PolicyStore::commit(self, fence, states, decisions)?)
    }

    fn decisions(
        &self,
        policy: Option<&str>,
        rule: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Decision>, LedgerError> {
        Ok(PolicyStore::decisions(self, policy, rule, limit)?)
    }

    fn put_action(&self, fence: Fence, action: &ActionRecord) -> Result<(), LedgerError> {
        Ok(PolicyStore::put_action(self, fence, action)?)
    }

    fn put_actuation(
        &self,
        fence: Fence,
        key: &str,
        time: u64,
        status: ActionStatus,
        actuation: &serde_json::Value,
    ) -> Result<(), LedgerError> {
        Ok(PolicyStore::put_actuation(self, fence, key, time, status, actuation)?)
    }

    fn commit_pending(
        &self,
        fence: Fence,
        states: &[(&str, &PolicyState)],
        actions: &[ActionRecord],
    ) -> Result<(), LedgerError> {
        Ok(PolicyStore::commit_pending(self, fence, states, actions)?)
    }

    fn action(&self, key: &str) -> Result<Option<ActionRecord>, LedgerError> {
        Ok(PolicyStore::action(self, key)?)
    }

    fn actions(&self) -> Result<Vec<ActionRecord>, LedgerError> {
        Ok(PolicyStore::actions(self)?)
    }

    fn fence(&self) -> Result<Fence, LedgerError> {
        Ok(PolicyStore::fence(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_ledger_keeps_the_contract_and_its_fence_across_a_restart() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let store = PolicyStore::open(dir.path()).expect("open");
            stoker_policy::ledger::contract::check(&store);
        }
        let store = PolicyStore::open(dir.path()).expect("reopen");
        assert_eq!(Ledger::fence(&store), Ok(Fence(2)));
        let state = PolicyState::default();
        let stale = Ledger::commit(&store, Fence(1), &[("late", &state)], &[]);
        assert!(matches!(stale, Err(LedgerError::Fenced { .. })), "{stale:?}");
        assert!(!Ledger::states(&store).expect("states").contains_key("late"));
    }
}
