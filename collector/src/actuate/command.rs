//! Commands as actuators: a resize runs the command with the desired size; a job runs it with
//! the decision context in its environment (`STOKER_POLICY`, `STOKER_RULE`, `STOKER_REASON`,
//! ... and `STOKER_IDEMPOTENCY_KEY`), under a timeout, with its output captured (bounded) into
//! the record. Commands are not retried: an exit status says nothing about whether running
//! again is safe.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::ActFuture;
use super::config::ActuateEnv;
use super::journaled::{Applied, JobBackend, Observed, ResizeBackend, Started};
use super::local::terminate;
use super::spec::CommandSpec;
use super::template::{render, render_map};
use super::types::{
    ActuateError, AttemptRecord, IdempotencyKey, JobContext, JobHandle, JobState, PlannedRequest,
    ScaleState,
};

/// Output kept per stream: the last this many bytes.
const OUTPUT_TAIL: usize = 16 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// `STOKER_<NAME>` for a context variable (upper case, non-alphanumerics as `_`).
pub fn env_name(var: &str) -> String {
    let mut out = String::from("STOKER_");
    for c in var.chars() {
        out.push(if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' });
    }
    out
}

struct Prepared {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
}

fn prepare(spec: &CommandSpec, vars: &BTreeMap<String, String>) -> Result<Prepared, ActuateError> {
    let argv = spec.argv.iter().map(|a| render(a, vars)).collect::<Result<Vec<_>, _>>()?;
    if argv.is_empty() {
        return Err(ActuateError::Config("command.argv is empty".into()));
    }
    let mut env: BTreeMap<String, String> =
        vars.iter().map(|(k, v)| (env_name(k), v.clone())).collect();
    env.extend(render_map(&spec.env, vars)?);
    Ok(Prepared { argv, env })
}

fn planned(p: &Prepared) -> PlannedRequest {
    PlannedRequest {
        method: "exec".into(),
        url: p.argv.join(" "),
        headers: p.env.clone(),
        body: None,
    }
}

fn command(spec: &CommandSpec, p: &Prepared) -> Command {
    let mut cmd = Command::new(&p.argv[0]);
    cmd.args(&p.argv[1..])
        .envs(&p.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    cmd
}

async fn read_tail(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > OUTPUT_TAIL {
                    let cut = tail.len() - OUTPUT_TAIL;
                    tail.drain(..cut);
                }
            }
        }
    }
    tail
}

/// How a command ended.
#[derive(Clone, Debug)]
pub struct CommandResult {
    /// Exit code; `None` when killed by a signal or timed out.
    pub code: Option<i32>,
    /// Whether it ran past its timeout (and was stopped).
    pub timed_out: bool,
    /// stdout then stderr, each its last 16 KiB.
    pub output: String,
}

/// Run to completion (or timeout: SIGTERM, 5 s grace, SIGKILL), capturing output.
async fn run_command(spec: &CommandSpec, p: &Prepared) -> Result<CommandResult, ActuateError> {
    let timeout = spec.timeout.map(|d| d.get()).unwrap_or(DEFAULT_TIMEOUT);
    let mut child = command(spec, p)
        .spawn()
        .map_err(|e| ActuateError::Process { program: p.argv[0].clone(), reason: e.to_string() })?;
    let out = child.stdout.take().map(|s| tokio::spawn(read_tail(s)));
    let err = child.stderr.take().map(|s| tokio::spawn(read_tail(s)));
    let (code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => (status.code(), false),
        Ok(Err(e)) => {
            return Err(ActuateError::Process {
                program: p.argv[0].clone(),
                reason: e.to_string(),
            });
        }
        Err(_) => {
            terminate(&mut child, Duration::from_secs(5)).await;
            (None, true)
        }
    };
    let mut output = String::new();
    if let Some(h) = out {
        output.push_str(&String::from_utf8_lossy(&h.await.unwrap_or_default()));
    }
    if let Some(h) = err {
        let e = h.await.unwrap_or_default();
        if !e.is_empty() {
            if !output.is_empty() && !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str(&String::from_utf8_lossy(&e));
        }
    }
    Ok(CommandResult { code, timed_out, output })
}

/// `actuator: command` for a target: runs the command with `{{ desired }}`, `{{ target }}`,
/// `{{ key }}` (and `STOKER_DESIRED`, ...). Its size is whatever was last applied.
pub struct CommandScaler {
    spec: CommandSpec,
    name: String,
}

impl CommandScaler {
    /// A command resizer for target `name`.
    pub fn new(spec: CommandSpec, name: &str) -> Self {
        Self { spec, name: name.to_owned() }
    }

    fn vars(&self, size: u32, key: &IdempotencyKey) -> BTreeMap<String, String> {
        [
            ("desired".to_string(), size.to_string()),
            ("target".to_string(), self.name.clone()),
            ("key".to_string(), key.as_str().to_owned()),
        ]
        .into()
    }
}

impl ResizeBackend for CommandScaler {
    fn actuator(&self) -> &'static str {
        "command"
    }

    fn target(&self) -> String {
        self.name.clone()
    }

    fn read<'a>(
        &'a self,
        _attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<ScaleState>> {
        Box::pin(async { Ok(None) })
    }

    fn plan(&self, size: u32, key: &IdempotencyKey) -> Result<Vec<PlannedRequest>, ActuateError> {
        Ok(vec![planned(&prepare(&self.spec, &self.vars(size, key))?)])
    }

    fn apply<'a>(
        &'a self,
        size: u32,
        _state: Option<&'a ScaleState>,
        key: &'a IdempotencyKey,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Applied> {
        Box::pin(async move {
            let p = prepare(&self.spec, &self.vars(size, key))?;
            let res = run_command(&self.spec, &p).await?;
            let label = format!("exec {}", p.argv.join(" "));
            let ok = res.code == Some(0);
            attempts.push(AttemptRecord {
                request: label,
                status: None,
                error: (!ok).then(|| {
                    format!(
                        "exit {:?}{}",
                        res.code,
                        if res.timed_out { " (timed out)" } else { "" }
                    )
                }),
                delay_ms: 0,
            });
            if ok {
                Ok(Applied {
                    after: None,
                    remote_id: None,
                    note: (!res.output.is_empty()).then_some(res.output),
                })
            } else {
                Err(ActuateError::Process {
                    program: p.argv[0].clone(),
                    reason: format!(
                        "exit {:?}{}: {}",
                        res.code,
                        if res.timed_out { ", timed out" } else { "" },
                        res.output.trim()
                    ),
                })
            }
        })
    }
}

type Results = Arc<Mutex<HashMap<String, Option<CommandResult>>>>;

/// `actuator: command` for a job: runs in the background; `poll` reports its end.
pub struct CommandJob {
    spec: CommandSpec,
    results: Results,
}

impl CommandJob {
    /// A command job runner.
    pub fn new(spec: CommandSpec, _env: &ActuateEnv) -> Self {
        Self { spec, results: Arc::new(Mutex::new(HashMap::new())) }
    }

    fn vars(ctx: &JobContext, key: &IdempotencyKey) -> BTreeMap<String, String> {
        let mut vars = ctx.vars();
        vars.insert("idempotency_key".into(), key.as_str().to_owned());
        vars
    }
}

impl JobBackend for CommandJob {
    fn actuator(&self) -> &'static str {
        "command"
    }

    fn describe(&self) -> String {
        self.spec.argv.join(" ")
    }

    fn plan(
        &self,
        ctx: &JobContext,
        key: &IdempotencyKey,
    ) -> Result<Vec<PlannedRequest>, ActuateError> {
        Ok(vec![planned(&prepare(&self.spec, &Self::vars(ctx, key))?)])
    }

    fn start<'a>(
        &'a self,
        ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Started> {
        Box::pin(async move {
            let p = prepare(&self.spec, &Self::vars(ctx, key))?;
            attempts.push(AttemptRecord {
                request: format!("exec {}", p.argv.join(" ")),
                ..Default::default()
            });
            // Spawn here, synchronously, so a program that cannot start fails the start.
            let probe = which_ok(&p.argv[0], self.spec.cwd.as_deref());
            if let Err(reason) = probe {
                return Err(ActuateError::Process { program: p.argv[0].clone(), reason });
            }
            let results = self.results.clone();
            let k = key.as_str().to_owned();
            results.lock().unwrap_or_else(|e| e.into_inner()).insert(k.clone(), None);
            let spec = self.spec.clone();
            tokio::spawn(async move {
                let res = run_command(&spec, &p).await.unwrap_or_else(|e| CommandResult {
                    code: None,
                    timed_out: false,
                    output: e.to_string(),
                });
                tracing::info!(key = %k, code = ?res.code, timed_out = res.timed_out, "Job command ended.");
                results.lock().unwrap_or_else(|e| e.into_inner()).insert(k, Some(res));
            });
            Ok(Started { remote_id: None, url: None, detail: None })
        })
    }

    fn recover<'a>(
        &'a self,
        _ctx: &'a JobContext,
        key: &'a IdempotencyKey,
        _sent_ns: u64,
        _attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Option<Started>> {
        Box::pin(async move {
            Err(ActuateError::Indeterminate {
                key: key.as_str().to_owned(),
                reason: "the collector stopped while starting the command; it may have run, so it is not run again"
                    .into(),
            })
        })
    }

    fn poll<'a>(
        &'a self,
        handle: &'a JobHandle,
        _attempts: &'a mut Vec<AttemptRecord>,
    ) -> ActFuture<'a, Observed> {
        Box::pin(async move {
            let guard = self.results.lock().unwrap_or_else(|e| e.into_inner());
            Ok(match guard.get(handle.key.as_str()) {
                Some(None) => Observed { state: JobState::Running, detail: None, output: None },
                Some(Some(res)) => Observed {
                    state: if res.timed_out {
                        JobState::TimedOut
                    } else if res.code == Some(0) {
                        JobState::Succeeded
                    } else {
                        JobState::Failed
                    },
                    detail: Some(match res.code {
                        Some(c) => format!("exit code {c}"),
                        None if res.timed_out => "timed out".into(),
                        None => "killed by a signal".into(),
                    }),
                    output: Some(res.output.clone()),
                },
                None => Observed {
                    state: JobState::Failed,
                    detail: Some(
                        "the collector restarted while the command ran; its outcome is unknown"
                            .into(),
                    ),
                    output: None,
                },
            })
        })
    }
}

/// Whether `program` looks runnable (a path that exists, or a name found on `PATH`).
fn which_ok(program: &str, cwd: Option<&str>) -> Result<(), String> {
    let path = std::path::Path::new(program);
    if program.contains('/') {
        let full = match cwd {
            Some(dir) if path.is_relative() => std::path::Path::new(dir).join(path),
            _ => path.to_path_buf(),
        };
        return if full.exists() {
            Ok(())
        } else {
            Err(format!("{} does not exist", full.display()))
        };
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if found { Ok(()) } else { Err(format!("`{program}` not found on PATH")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_becomes_environment() {
        assert_eq!(env_name("model.version"), "STOKER_MODEL_VERSION");
        let spec = CommandSpec {
            argv: vec!["echo".into(), "{{ reason }}".into()],
            env: [("X".to_string(), "{{ policy }}".to_string())].into(),
            cwd: None,
            timeout: None,
        };
        let ctx = JobContext::new("p", "r").with("reason", "drift");
        let p = prepare(&spec, &CommandJob::vars(&ctx, &IdempotencyKey::new("p", "r", 1)))
            .expect("prepare");
        assert_eq!(p.argv, vec!["echo", "drift"]);
        assert_eq!(p.env["STOKER_REASON"], "drift");
        assert_eq!(p.env["X"], "p");
        assert_eq!(p.env["STOKER_IDEMPOTENCY_KEY"], "p/r/1");
    }

    #[tokio::test]
    async fn captures_output_and_times_out() {
        let spec = CommandSpec {
            argv: vec!["sh".into(), "-c".into(), "echo hello; echo oops >&2; exit 3".into()],
            env: BTreeMap::new(),
            cwd: None,
            timeout: None,
        };
        let p = prepare(&spec, &BTreeMap::new()).expect("prepare");
        let res = run_command(&spec, &p).await.expect("runs");
        assert_eq!(res.code, Some(3));
        assert_eq!(res.output, "hello\noops\n");

        let slow = CommandSpec {
            argv: vec!["sleep".into(), "30".into()],
            env: BTreeMap::new(),
            cwd: None,
            timeout: Some(crate::duration::HumanDuration(Duration::from_millis(200))),
        };
        let p = prepare(&slow, &BTreeMap::new()).expect("prepare");
        let res = run_command(&slow, &p).await.expect("runs");
        assert!(res.timed_out);
    }
}
