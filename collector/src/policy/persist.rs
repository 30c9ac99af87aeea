//! Durable policy state in `<data-dir>/policy.redb`: engine state per policy (cooldowns,
//! stabilization history, budgets), decision records, and actions with their idempotency
//! keys and job lifecycle. A file of its own, so the policy room does not depend on the
//! store's internals. Values are JSON: small, few, and readable when debugging.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::engine::{Decision, Outcome, PolicyState};

const STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("policy_state");
const DECISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("decisions");
const ACTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("actions");

/// Decisions kept; older ones are dropped oldest first.
pub const MAX_DECISIONS: u64 = 20_000;
/// Actions kept.
pub const MAX_ACTIONS: u64 = 5_000;

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
    /// The blocking task that ran the transaction did not finish.
    #[error("policy state task: {0}")]
    Task(String),
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
    pub action: super::engine::Action,
    /// Dry run or not.
    pub dry_run: bool,
    /// Status.
    pub status: ActionStatus,
    /// Last actuator outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Last update, Unix nanos.
    pub updated: u64,
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
            Ok(())
        })?;
        Ok(store)
    }

    fn err(&self, e: impl Into<redb::Error>) -> PersistError {
        PersistError::Db { path: self.path.clone(), source: e.into() }
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), PersistError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
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
        states: &[(&str, &PolicyState)],
        decisions: &[Decision],
    ) -> Result<(), PersistError> {
        let encoded_states: Vec<(&str, Vec<u8>)> = states
            .iter()
            .map(|(k, s)| serde_json::to_vec(s).map(|v| (*k, v)))
            .collect::<Result<_, _>>()?;
        let encoded: Vec<Vec<u8>> =
            decisions.iter().map(serde_json::to_vec).collect::<Result<_, _>>()?;
        self.write(|txn| {
            let mut st = txn.open_table(STATES)?;
            for (k, v) in &encoded_states {
                st.insert(*k, v.as_slice())?;
            }
            let mut dt = txn.open_table(DECISIONS)?;
            let mut next = dt.last()?.map(|(k, _)| k.value() + 1).unwrap_or(0);
            for v in &encoded {
                dt.insert(next, v.as_slice())?;
                next += 1;
            }
            let len = dt.len()?;
            if len > MAX_DECISIONS {
                let drop_below = next - MAX_DECISIONS;
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

    /// Inserts or replaces an action by key.
    pub fn put_action(&self, a: &ActionRecord) -> Result<(), PersistError> {
        let v = serde_json::to_vec(a)?;
        self.write(|txn| {
            let mut t = txn.open_table(ACTIONS)?;
            t.insert(a.key.as_str(), v.as_slice())?;
            if t.len()? > MAX_ACTIONS {
                // Keys start with the policy name, so drop the oldest finished by time instead.
                let mut oldest: Option<(u64, String)> = None;
                for row in t.iter()? {
                    let (k, v) = row?;
                    if let Ok(r) = serde_json::from_slice::<ActionRecord>(v.value()) {
                        let done = !matches!(
                            r.status,
                            ActionStatus::Pending | ActionStatus::Running | ActionStatus::Applied
                        );
                        if done && oldest.as_ref().is_none_or(|o| r.time < o.0) {
                            oldest = Some((r.time, k.value().to_owned()));
                        }
                    }
                }
                if let Some((_, k)) = oldest {
                    t.remove(k.as_str())?;
                }
            }
            Ok(())
        })
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
}
