//! The persisted journal of actions and jobs (`<data-dir>/actions.redb`).
//!
//! A record is written *before* a mutating request is sent (state `pending`) and again with
//! the outcome. After a crash, a `pending` record tells the actuator that the request may have
//! been applied: resizes re-read the target and compare, jobs look for the remote run by their
//! deterministic name or dispatch marker, so a retry never applies twice. Job records follow
//! started → running → succeeded | failed | timed-out and are what `/api/v1/actions` serves.
//!
//! redb commits are durable (fsync) when `commit` returns.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::types::{ActuateError, AttemptRecord, JobHandle, JobState, JobStatus, ResizeOutcome};

const ACTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("actions");
const BY_TIME: TableDefinition<(u64, &str), ()> = TableDefinition::new("actions_by_time");
const TARGET_SIZE: TableDefinition<&str, u32> = TableDefinition::new("target_size");

/// Resize or job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// A resize of a target.
    Resize,
    /// A model-refresh job.
    Job,
}

/// Where an action stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionState {
    /// Sent (or about to be); outcome not yet recorded. After a crash: settle before acting.
    Pending,
    /// Resize applied.
    Applied,
    /// Resize not needed: the target already had the size.
    Unchanged,
    /// Dry-run: recorded, nothing sent.
    DryRun,
    /// Job accepted, not yet running.
    Started,
    /// Job running.
    Running,
    /// Job succeeded.
    Succeeded,
    /// Resize or job failed.
    Failed,
    /// Job ran past its timeout.
    TimedOut,
}

impl ActionState {
    /// The state of a job in this lifecycle.
    pub fn from_job(s: JobState) -> Self {
        match s {
            JobState::Started => ActionState::Started,
            JobState::Running => ActionState::Running,
            JobState::Succeeded => ActionState::Succeeded,
            JobState::Failed => ActionState::Failed,
            JobState::TimedOut => ActionState::TimedOut,
        }
    }

    /// Whether nothing more will happen to the action.
    pub fn is_terminal(self) -> bool {
        !matches!(self, ActionState::Pending | ActionState::Started | ActionState::Running)
    }
}

/// One action or job, as persisted and served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Idempotency key.
    pub key: String,
    /// Resize or job.
    pub kind: ActionKind,
    /// Actuator name.
    pub actuator: String,
    /// Target or job description.
    pub target: String,
    /// Policy, for jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Rule, for jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// State.
    pub state: ActionState,
    /// Size being set (resizes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<u32>,
    /// First written, Unix nanoseconds.
    pub created_ns: u64,
    /// Last written, Unix nanoseconds.
    pub updated_ns: u64,
    /// Resize outcome, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<ResizeOutcome>,
    /// Job handle, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<JobHandle>,
    /// Job status, as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobStatus>,
    /// Tries so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
    /// Last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// An interrupted start whose effect cannot be established: never started again under
    /// this key, since it may already have run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub indeterminate: bool,
}

fn jerr(e: impl std::fmt::Display) -> ActuateError {
    ActuateError::Journal(e.to_string())
}

/// The journal: a redb file.
#[derive(Debug)]
pub struct Journal {
    db: Database,
}

impl Journal {
    /// Open (or create) the journal at `path`; conventionally `<data-dir>/actions.redb`.
    pub fn open(path: &Path) -> Result<Self, ActuateError> {
        let db =
            crate::dbfile::open(path, &mut Database::builder()).map_err(|e| jerr(e.to_string()))?;
        let tx = db.begin_write().map_err(jerr)?;
        {
            tx.open_table(ACTIONS).map_err(jerr)?;
            tx.open_table(BY_TIME).map_err(jerr)?;
            tx.open_table(TARGET_SIZE).map_err(jerr)?;
        }
        tx.commit().map_err(jerr)?;
        Ok(Self { db })
    }

    /// The record for `key`.
    pub fn get(&self, key: &str) -> Result<Option<ActionRecord>, ActuateError> {
        let tx = self.db.begin_read().map_err(jerr)?;
        let table = tx.open_table(ACTIONS).map_err(jerr)?;
        let Some(raw) = table.get(key).map_err(jerr)? else { return Ok(None) };
        serde_json::from_slice(raw.value())
            .map(Some)
            .map_err(|e| jerr(format!("record {key}: {e}")))
    }

    /// Write `record` durably (insert or replace). A resize in state `applied`/`unchanged`
    /// also remembers the target's size, for actuators that cannot read it back.
    pub fn put(&self, record: &ActionRecord) -> Result<(), ActuateError> {
        let bytes = serde_json::to_vec(record).map_err(jerr)?;
        let tx = self.db.begin_write().map_err(jerr)?;
        {
            let mut actions = tx.open_table(ACTIONS).map_err(jerr)?;
            let previous = actions.insert(record.key.as_str(), bytes.as_slice()).map_err(jerr)?;
            if previous.is_none() {
                let mut by_time = tx.open_table(BY_TIME).map_err(jerr)?;
                by_time.insert((record.created_ns, record.key.as_str()), ()).map_err(jerr)?;
            }
            drop(previous);
            if record.kind == ActionKind::Resize
                && matches!(record.state, ActionState::Applied | ActionState::Unchanged)
            {
                if let Some(n) = record.resize.as_ref().map(|o| o.applied) {
                    let mut sizes = tx.open_table(TARGET_SIZE).map_err(jerr)?;
                    sizes.insert(record.target.as_str(), n).map_err(jerr)?;
                }
            }
        }
        tx.commit().map_err(jerr)
    }

    /// The last size applied to `target` through this journal.
    pub fn last_size(&self, target: &str) -> Result<Option<u32>, ActuateError> {
        let tx = self.db.begin_read().map_err(jerr)?;
        let table = tx.open_table(TARGET_SIZE).map_err(jerr)?;
        Ok(table.get(target).map_err(jerr)?.map(|v| v.value()))
    }

    /// Up to `limit` records, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<ActionRecord>, ActuateError> {
        let tx = self.db.begin_read().map_err(jerr)?;
        let by_time = tx.open_table(BY_TIME).map_err(jerr)?;
        let actions = tx.open_table(ACTIONS).map_err(jerr)?;
        let mut out = Vec::new();
        for entry in by_time.iter().map_err(jerr)?.rev() {
            if out.len() >= limit {
                break;
            }
            let (k, _) = entry.map_err(jerr)?;
            let (_, key) = k.value();
            if let Some(raw) = actions.get(key).map_err(jerr)? {
                match serde_json::from_slice::<ActionRecord>(raw.value()) {
                    Ok(r) => out.push(r),
                    Err(e) => tracing::warn!(key, error = %e, "Skipping unreadable action record."),
                }
            }
        }
        Ok(out)
    }

    /// Jobs of `policy`/`rule` that are not over (pending, started or running).
    pub fn active_jobs(&self, policy: &str, rule: &str) -> Result<Vec<ActionRecord>, ActuateError> {
        let tx = self.db.begin_read().map_err(jerr)?;
        let actions = tx.open_table(ACTIONS).map_err(jerr)?;
        let mut out = Vec::new();
        for entry in actions.iter().map_err(jerr)? {
            let (_, v) = entry.map_err(jerr)?;
            let Ok(r) = serde_json::from_slice::<ActionRecord>(v.value()) else { continue };
            if r.kind == ActionKind::Job
                && !r.state.is_terminal()
                && r.policy.as_deref() == Some(policy)
                && r.rule.as_deref() == Some(rule)
            {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Forget terminal records created before `before_ns`; returns how many went.
    pub fn prune(&self, before_ns: u64) -> Result<usize, ActuateError> {
        let tx = self.db.begin_write().map_err(jerr)?;
        let mut removed = 0;
        {
            let mut by_time = tx.open_table(BY_TIME).map_err(jerr)?;
            let mut actions = tx.open_table(ACTIONS).map_err(jerr)?;
            let mut old = Vec::new();
            for entry in by_time.range((0u64, "")..(before_ns, "")).map_err(jerr)? {
                let (k, _) = entry.map_err(jerr)?;
                let (t, key) = k.value();
                old.push((t, key.to_owned()));
            }
            for (t, key) in old {
                let terminal = match actions.get(key.as_str()).map_err(jerr)? {
                    Some(raw) => serde_json::from_slice::<ActionRecord>(raw.value())
                        .map(|r| r.state.is_terminal())
                        .unwrap_or(true),
                    None => true,
                };
                if terminal {
                    actions.remove(key.as_str()).map_err(jerr)?;
                    by_time.remove((t, key.as_str())).map_err(jerr)?;
                    removed += 1;
                }
            }
        }
        tx.commit().map_err(jerr)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, t: u64, state: ActionState) -> ActionRecord {
        ActionRecord {
            key: key.into(),
            kind: ActionKind::Job,
            actuator: "command".into(),
            target: "job".into(),
            policy: Some("p".into()),
            rule: Some("r".into()),
            state,
            desired: None,
            created_ns: t,
            updated_ns: t,
            resize: None,
            handle: None,
            job: None,
            attempts: vec![],
            error: None,
            indeterminate: false,
        }
    }

    #[test]
    fn survives_reopen_and_lists_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("actions.redb");
        {
            let j = Journal::open(&path).expect("open");
            j.put(&record("a", 1, ActionState::Succeeded)).expect("put");
            j.put(&record("b", 2, ActionState::Running)).expect("put");
            let mut b = record("b", 2, ActionState::Running);
            b.updated_ns = 3;
            j.put(&b).expect("update");
        }
        let j = Journal::open(&path).expect("reopen");
        let keys: Vec<_> = j.recent(10).expect("recent").into_iter().map(|r| r.key).collect();
        assert_eq!(keys, vec!["b", "a"]);
        assert_eq!(j.active_jobs("p", "r").expect("active").len(), 1);
        assert_eq!(j.prune(10).expect("prune"), 1);
        assert_eq!(j.recent(10).expect("recent").len(), 1);
    }
}
