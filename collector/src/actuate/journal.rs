//! The actuators' journal of actions and jobs, kept in the policy [`Ledger`] as each action's
//! actuator part ([`ActionRecord::actuation`](stoker_policy::ledger::ActionRecord::actuation)): one record per idempotency key, one store, one
//! fence, for the engine's decision and the actuator's attempts alike.
//!
//! A record is written *before* a mutating request is sent (state `pending`) and again with
//! the outcome. After a crash (or on a new leader, once the ledger is shared), the engine
//! sends each pending action again with its key and the actuator finds its `pending` record:
//! resizes re-read the target and compare, jobs look for the remote run by their deterministic
//! name or dispatch marker, so a retry never applies twice. Job records follow started →
//! running → succeeded | failed | timed-out.
//!
//! Writes carry the ledger writer's fence: a deposed leader cannot record a pending request,
//! so it never sends one. The embedded ledger commits durably (fsync) before `put` returns.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use stoker_policy::ledger::{ActionStatus, Fence, Leadership, Ledger, LedgerError, MemoryLedger};

use super::types::{ActuateError, AttemptRecord, JobHandle, JobState, JobStatus, ResizeOutcome};

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

/// What an actuator records of one action or job: the [`Ledger`] keeps it as the action's
/// [`ActionRecord::actuation`](stoker_policy::ledger::ActionRecord::actuation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Actuation {
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

impl ActionState {
    /// The engine-side status a record starts with when an actuator writes first.
    fn status(self) -> ActionStatus {
        match self {
            ActionState::Pending => ActionStatus::Pending,
            ActionState::Applied | ActionState::Unchanged => ActionStatus::Applied,
            ActionState::DryRun => ActionStatus::DryRun,
            ActionState::Started | ActionState::Running => ActionStatus::Running,
            ActionState::Succeeded => ActionStatus::Succeeded,
            ActionState::Failed => ActionStatus::Failed,
            ActionState::TimedOut => ActionStatus::JobFailed,
        }
    }
}

/// The journal: a typed view of the actuator part of the ledger's actions.
#[derive(Debug)]
pub struct Journal {
    ledger: Arc<dyn Ledger>,
    leadership: Arc<dyn Leadership>,
    /// The last size set per target (for actuators that cannot read it back), filled from the
    /// ledger on first use and kept current by [`Journal::put`].
    sizes: Mutex<Option<HashMap<String, u32>>>,
}

impl Journal {
    /// A journal in `ledger`, writing with `fence` for good (one collector alone).
    pub fn new(ledger: Arc<dyn Ledger>, fence: Fence) -> Self {
        Self::led_by(ledger, Arc::new(fence))
    }

    /// A journal in `ledger` that writes only while `leadership` leads, with its fence.
    pub fn led_by(ledger: Arc<dyn Ledger>, leadership: Arc<dyn Leadership>) -> Self {
        Self { ledger, leadership, sizes: Mutex::new(None) }
    }

    /// A journal in a fresh in-memory ledger (tests, the fuzz harness).
    pub fn in_memory() -> Self {
        Self::new(Arc::new(MemoryLedger::new()), Fence::SOLE)
    }

    /// The record for `key`.
    pub fn get(&self, key: &str) -> Result<Option<Actuation>, ActuateError> {
        let Some(rec) = self.ledger.action(key).map_err(jerr)? else { return Ok(None) };
        let Some(a) = rec.actuation else { return Ok(None) };
        serde_json::from_value(a).map(Some).map_err(|e| jerr(format!("record {key}: {e}")))
    }

    /// Write `record` durably (insert or replace). A resize in state `applied`/`unchanged`
    /// also remembers the target's size, for actuators that cannot read it back.
    pub fn put(&self, record: &Actuation) -> Result<(), ActuateError> {
        let value = serde_json::to_value(record).map_err(jerr)?;
        let fence = self.leadership.fence().ok_or_else(|| jerr(LedgerError::NotLeader))?;
        self.ledger
            .put_actuation(fence, &record.key, record.created_ns, record.state.status(), &value)
            .map_err(jerr)?;
        if let Some(n) = record.applied_size() {
            let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(m) = sizes.as_mut() {
                m.insert(record.target.clone(), n);
            }
        }
        Ok(())
    }

    /// The last size applied to `target` through this journal.
    pub fn last_size(&self, target: &str) -> Result<Option<u32>, ActuateError> {
        let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        if sizes.is_none() {
            let mut m = HashMap::new();
            // Newest first: the first size seen per target is the last one set.
            for a in self.all()? {
                if let Some(n) = a.applied_size() {
                    m.entry(a.target.clone()).or_insert(n);
                }
            }
            *sizes = Some(m);
        }
        Ok(sizes.as_ref().and_then(|m| m.get(target).copied()))
    }

    /// Every record, newest first.
    fn all(&self) -> Result<Vec<Actuation>, ActuateError> {
        let mut out: Vec<Actuation> = Vec::new();
        for rec in self.ledger.actions().map_err(jerr)? {
            let Some(v) = rec.actuation else { continue };
            match serde_json::from_value::<Actuation>(v) {
                Ok(a) => out.push(a),
                Err(e) => {
                    tracing::warn!(key = %rec.key, error = %e, "Skipping unreadable action record.");
                }
            }
        }
        out.sort_by_key(|a| std::cmp::Reverse((a.created_ns, a.updated_ns)));
        Ok(out)
    }

    /// Up to `limit` records, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<Actuation>, ActuateError> {
        let mut all = self.all()?;
        all.truncate(limit);
        Ok(all)
    }

    /// Jobs of `policy`/`rule` that are not over (pending, started or running).
    pub fn active_jobs(&self, policy: &str, rule: &str) -> Result<Vec<Actuation>, ActuateError> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|r| {
                r.kind == ActionKind::Job
                    && !r.state.is_terminal()
                    && r.policy.as_deref() == Some(policy)
                    && r.rule.as_deref() == Some(rule)
            })
            .collect())
    }

    /// Moves the records of a journal file of its own (`actions.redb`, from before the
    /// journal moved into the ledger) into this one, then renames the file
    /// `actions.redb.imported`, so nothing an earlier version recorded is lost. Returns how
    /// many records came over; an absent file is 0.
    pub fn import_file(&self, path: &Path) -> Result<usize, ActuateError> {
        const ACTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("actions");
        if !path.exists() {
            return Ok(0);
        }
        let records: Vec<Actuation> = {
            let db = crate::dbfile::open(path, &mut Database::builder()).map_err(jerr)?;
            let tx = db.begin_read().map_err(jerr)?;
            let table = match tx.open_table(ACTIONS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(jerr(e)),
            };
            let mut out = Vec::new();
            for row in table.iter().map_err(jerr)? {
                let (k, v) = row.map_err(jerr)?;
                match serde_json::from_slice::<Actuation>(v.value()) {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        tracing::warn!(key = k.value(), error = %e, file = %path.display(), "Skipping an unreadable record while importing.")
                    }
                }
            }
            out
        };
        for r in &records {
            if self.get(&r.key)?.is_none() {
                self.put(r)?;
            }
        }
        let mut done = path.as_os_str().to_owned();
        done.push(".imported");
        std::fs::rename(path, &done)
            .map_err(|e| jerr(format!("rename {} after importing it: {e}", path.display())))?;
        tracing::info!(file = %path.display(), records = records.len(), "Imported the actions journal into the policy ledger.");
        Ok(records.len())
    }
}

impl Actuation {
    /// The size a finished resize left its target at.
    fn applied_size(&self) -> Option<u32> {
        let done = matches!(self.state, ActionState::Applied | ActionState::Unchanged);
        (self.kind == ActionKind::Resize && done)
            .then(|| self.resize.as_ref().map(|o| o.applied))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, t: u64, state: ActionState) -> Actuation {
        Actuation {
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
        let open = || {
            let ledger = crate::policy::persist::PolicyStore::open(dir.path()).expect("open");
            Journal::new(Arc::new(ledger), Fence::SOLE)
        };
        {
            let j = open();
            j.put(&record("a", 1, ActionState::Succeeded)).expect("put");
            j.put(&record("b", 2, ActionState::Running)).expect("put");
            let mut b = record("b", 2, ActionState::Running);
            b.updated_ns = 3;
            j.put(&b).expect("update");
        }
        let j = open();
        let keys: Vec<_> = j.recent(10).expect("recent").into_iter().map(|r| r.key).collect();
        assert_eq!(keys, vec!["b", "a"]);
        assert_eq!(j.get("b").expect("get").expect("b").updated_ns, 3);
        assert_eq!(j.active_jobs("p", "r").expect("active").len(), 1);
    }

    #[test]
    fn a_journal_file_of_its_own_is_imported_once_and_renamed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("actions.redb");
        {
            let db = Database::create(&path).expect("create");
            let tx = db.begin_write().expect("tx");
            {
                let mut t =
                    tx.open_table(TableDefinition::<&str, &[u8]>::new("actions")).expect("table");
                let rec =
                    serde_json::to_vec(&record("old", 7, ActionState::Pending)).expect("json");
                t.insert("old", rec.as_slice()).expect("insert");
                t.insert("broken", b"{".as_slice()).expect("insert");
            }
            tx.commit().expect("commit");
        }
        let j = Journal::in_memory();
        assert_eq!(j.import_file(&path).expect("import"), 1);
        assert_eq!(j.get("old").expect("get").expect("imported").state, ActionState::Pending);
        assert!(!path.exists());
        assert!(dir.path().join("actions.redb.imported").exists());
        assert_eq!(j.import_file(&path).expect("again"), 0, "an imported file is not read twice");
    }

    #[test]
    fn the_last_size_comes_from_the_ledger_after_a_restart() {
        let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::new());
        let mut r = record("k", 1, ActionState::Applied);
        r.kind = ActionKind::Resize;
        r.target = "command:scale".into();
        r.resize = Some(ResizeOutcome { applied: 4, ..Default::default() });
        Journal::new(ledger.clone(), Fence::SOLE).put(&r).expect("put");
        let fresh = Journal::new(ledger, Fence::SOLE);
        assert_eq!(fresh.last_size("command:scale").expect("size"), Some(4));
        assert_eq!(fresh.last_size("other").expect("size"), None);
    }
}
