//! Local replicas: N copies of a configured command on this machine, each with its own port
//! from a range. A supervisor task per replica restarts it when it dies (with backoff) and
//! stops it with SIGTERM, then SIGKILL after the grace period. Scaling in stops the highest
//! replica numbers first, so ports stay dense from `port_from`.
//!
//! The size reported is the number of supervised replicas (`replicas`) and how many of them
//! are ready (`ready`): with a readiness probe (`ready: {http: URL}`), those whose process runs
//! and whose URL answers 2xx when the size is read; without one, those whose process runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::ActFuture;
use super::journaled::{Applied, ResizeBackend};
use super::spec::LocalReplicas;
use super::types::{ActuateError, AttemptRecord, IdempotencyKey, PlannedRequest, ScaleState};

const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A replica that ran this long is considered healthy again: its backoff resets.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// How long one readiness probe may take unless the spec says.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

struct Replica {
    index: u32,
    running: Arc<AtomicBool>,
    restarts: Arc<AtomicU32>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What one replica is doing, for inspection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// Replica number, from 0.
    pub index: u32,
    /// Its port.
    pub port: u16,
    /// Whether its process is alive now.
    pub running: bool,
    /// How often it was restarted after dying.
    pub restarts: u32,
}

/// The local replica set of one target.
pub struct LocalReplicaSet {
    spec: LocalReplicas,
    name: String,
    replicas: std::sync::Mutex<Vec<Replica>>,
    http: reqwest::Client,
}

impl LocalReplicaSet {
    /// A set with no replicas running yet; `http` sends the readiness probes.
    pub fn new(spec: LocalReplicas, name: &str, http: reqwest::Client) -> Self {
        Self { spec, name: name.to_owned(), replicas: std::sync::Mutex::new(Vec::new()), http }
    }

    /// How many of `replicas` are ready: running, and answering the probe when there is one.
    async fn ready_count(&self, replicas: &[ReplicaInfo]) -> u32 {
        let running = replicas.iter().filter(|r| r.running);
        let Some(probe) = &self.spec.ready else {
            return u32::try_from(running.count()).unwrap_or(u32::MAX);
        };
        let timeout = probe.timeout.map(|t| t.get()).unwrap_or(PROBE_TIMEOUT);
        let probes = running.map(|r| {
            let url = fill(&probe.http, r.port, r.index);
            let request = self.http.get(url.clone()).timeout(timeout).send();
            async move {
                match request.await {
                    Ok(answer) if answer.status().is_success() => true,
                    Ok(answer) => {
                        tracing::debug!(replica = r.index, url, status = answer.status().as_u16(), "Replica not ready yet.");
                        false
                    }
                    Err(e) => {
                        tracing::debug!(replica = r.index, url, error = %e, "Replica not ready yet.");
                        false
                    }
                }
            }
        });
        let answers = futures_util::future::join_all(probes).await;
        u32::try_from(answers.into_iter().filter(|ok| *ok).count()).unwrap_or(u32::MAX)
    }

    fn capacity(&self) -> u32 {
        u32::from(self.spec.port_to.saturating_sub(self.spec.port_from)) + 1
    }

    fn port(&self, index: u32) -> u16 {
        replica_port(&self.spec, index)
    }

    fn grace(&self) -> Duration {
        self.spec.stop_grace.map(|d| d.get()).unwrap_or(Duration::from_secs(10))
    }

    /// The replicas now.
    pub fn replicas(&self) -> Vec<ReplicaInfo> {
        let guard = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .iter()
            .map(|r| ReplicaInfo {
                index: r.index,
                port: self.port(r.index),
                running: r.running.load(Ordering::SeqCst),
                restarts: r.restarts.load(Ordering::SeqCst),
            })
            .collect()
    }

    fn argv_for(&self, index: u32) -> Vec<String> {
        replica_argv(&self.spec, index)
    }

    fn spawn_replica(&self, index: u32) -> Result<Replica, ActuateError> {
        // Fail early (and synchronously) on an unusable spec rather than in a retry loop.
        replica_command(&self.spec, index)?;
        let running = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        let supervisor = Supervisor {
            make: {
                let spec = self.spec.clone();
                Box::new(move || replica_command(&spec, index))
            },
            program: self.spec.argv.first().cloned().unwrap_or_default(),
            running: running.clone(),
            restarts: restarts.clone(),
            stop: stop.clone(),
            grace: self.grace(),
        };
        let span = tracing::info_span!("replica", target = %self.name, replica = index, port = self.port(index));
        let task = tokio::spawn(supervisor.run().instrument(span));
        Ok(Replica { index, running, restarts, stop, task })
    }

    async fn set_size(&self, size: u32) -> Result<u32, ActuateError> {
        let size = size.min(self.capacity());
        let (to_stop, result) = {
            let mut guard = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
            let mut result = Ok(());
            while u32::try_from(guard.len()).unwrap_or(u32::MAX) < size {
                let index = u32::try_from(guard.len()).unwrap_or(u32::MAX);
                match self.spawn_replica(index) {
                    Ok(r) => guard.push(r),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let keep = usize::try_from(size).unwrap_or(usize::MAX).min(guard.len());
            (guard.split_off(keep), result)
        };
        stop_all(to_stop).await;
        result?;
        let guard = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        Ok(u32::try_from(guard.len()).unwrap_or(u32::MAX))
    }
}

fn replica_port(spec: &LocalReplicas, index: u32) -> u16 {
    spec.port_from.saturating_add(u16::try_from(index).unwrap_or(u16::MAX))
}

/// `text` with `{port}` and `{replica}` replaced.
fn fill(text: &str, port: u16, index: u32) -> String {
    text.replace("{port}", &port.to_string()).replace("{replica}", &index.to_string())
}

fn replica_argv(spec: &LocalReplicas, index: u32) -> Vec<String> {
    let port = replica_port(spec, index);
    spec.argv.iter().map(|a| fill(a, port, index)).collect()
}

fn replica_command(spec: &LocalReplicas, index: u32) -> Result<Command, ActuateError> {
    let argv = replica_argv(spec, index);
    let program = argv.first().ok_or_else(|| ActuateError::Config("local.argv is empty".into()))?;
    let port = replica_port(spec, index).to_string();
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..])
        .env("STOKER_REPLICA", index.to_string())
        .env("STOKER_PORT", &port)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in &spec.env {
        cmd.env(k, v.replace("{port}", &port).replace("{replica}", &index.to_string()));
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    Ok(cmd)
}

async fn stop_all(replicas: Vec<Replica>) {
    for r in &replicas {
        r.stop.cancel();
    }
    for r in replicas {
        if let Err(e) = r.task.await {
            tracing::warn!(replica = r.index, error = %e, "Replica supervisor ended abnormally.");
        }
    }
}

impl Drop for LocalReplicaSet {
    fn drop(&mut self) {
        // Without an orderly shutdown the supervisors still stop their processes.
        let guard = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
        for r in guard.iter() {
            r.stop.cancel();
        }
    }
}

type MakeCommand = Box<dyn Fn() -> Result<Command, ActuateError> + Send + Sync>;

struct Supervisor {
    make: MakeCommand,
    program: String,
    running: Arc<AtomicBool>,
    restarts: Arc<AtomicU32>,
    stop: CancellationToken,
    grace: Duration,
}

impl Supervisor {
    async fn run(self) {
        let mut backoff = RESTART_BACKOFF_MIN;
        let mut first = true;
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            if !first {
                self.restarts.fetch_add(1, Ordering::SeqCst);
            }
            first = false;
            let spawned = (self.make)().and_then(|mut c| {
                c.spawn().map_err(|e| ActuateError::Process {
                    program: self.program.clone(),
                    reason: e.to_string(),
                })
            });
            match spawned {
                Err(e) => tracing::warn!(error = %e, "Replica failed to start."),
                Ok(mut child) => {
                    self.running.store(true, Ordering::SeqCst);
                    tracing::info!(pid = child.id(), "Replica started.");
                    let started = tokio::time::Instant::now();
                    tokio::select! {
                        status = child.wait() => {
                            self.running.store(false, Ordering::SeqCst);
                            tracing::warn!(status = ?status.ok(), "Replica exited; restarting after backoff.");
                            if started.elapsed() >= HEALTHY_AFTER {
                                backoff = RESTART_BACKOFF_MIN;
                            }
                        }
                        () = self.stop.cancelled() => {
                            terminate(&mut child, self.grace).await;
                            self.running.store(false, Ordering::SeqCst);
                            tracing::info!("Replica stopped.");
                            break;
                        }
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.stop.cancelled() => break,
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
pub async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        if let Err(e) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
            tracing::debug!(pid, error = %e, "SIGTERM failed (already gone?).");
        }
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(pid, "Process ignored SIGTERM; sending SIGKILL.");
    }
    let _ = child.kill().await;
}

impl ResizeBackend for LocalReplicaSet {
    fn actuator(&self) -> &'static str {
        "local"
    }

    fn target(&self) -> String {
        self.name.clone()
    }

    fn read<'a>(
        &'a self,
        _attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<ScaleState>> {
        Box::pin(async move {
            let replicas = self.replicas();
            Ok(Some(ScaleState {
                replicas: u32::try_from(replicas.len()).unwrap_or(u32::MAX),
                ready: Some(self.ready_count(&replicas).await),
                remote_min: None,
                remote_max: Some(self.capacity()),
                version: None,
            }))
        })
    }

    fn plan(&self, size: u32, _key: &IdempotencyKey) -> Result<Vec<PlannedRequest>, ActuateError> {
        let now = u32::try_from(self.replicas().len()).unwrap_or(u32::MAX);
        let mut out = Vec::new();
        for index in now..size.min(self.capacity()) {
            out.push(PlannedRequest {
                method: "exec".into(),
                url: self.argv_for(index).join(" "),
                headers: [("STOKER_PORT".to_string(), self.port(index).to_string())].into(),
                body: None,
            });
        }
        for index in (size..now).rev() {
            out.push(PlannedRequest {
                method: "stop".into(),
                url: format!("replica {index} on port {}", self.port(index)),
                ..Default::default()
            });
        }
        Ok(out)
    }

    fn apply<'a>(
        &'a self,
        size: u32,
        _state: Option<&'a ScaleState>,
        _key: &'a IdempotencyKey,
        _attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Applied> {
        Box::pin(async move {
            let after = self.set_size(size).await?;
            Ok(Applied { after: Some(after), remote_id: None, note: None })
        })
    }

    fn shutdown(&self) -> ActFuture<'_, ()> {
        Box::pin(async move {
            let all = {
                let mut guard = self.replicas.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::take(&mut *guard)
            };
            stop_all(all).await;
            Ok(())
        })
    }
}
