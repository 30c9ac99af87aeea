//! `stoker-tui demo`: the whole closed loop on one machine, in this process.
//!
//! Order of things: a temp dir; model v1 trained in-process; the policy set rendered from
//! [`policies`]; the collector ([`stoker_collector::serve::start`], with the policy engine and
//! its local and command actuators) and the agent ([`stoker_agent::daemon::run`]) as tokio
//! tasks on OS-assigned or freshly picked loopback ports; the demo's load balancer
//! ([`balancer`]); then the load generator ([`stoker_example_cnn::load`]). The actuators start
//! replicas and the trainer as hidden subcommands of this executable ([`child`]). Headless, the
//! [`story`] is narrated from the collector API and a JSON summary is the last line printed;
//! otherwise the dashboard runs over the collector API. Ctrl-C (or the end of the scenario)
//! stops everything in reverse start order, each step bounded in time: the load generator and
//! the balancer; the service (the demo's policy is withdrawn, so the collector's local actuator
//! stops the replicas, which flush their last metrics to the agent); the agent (which flushes
//! to the collector); the collector. Then any child that outlived the actuators is killed
//! (counted as an error).

pub mod balancer;
pub mod child;
pub mod policies;
pub mod story;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stoker_collector::api::types::{QueryResponse, QueryResult};
use stoker_collector::policy::api::{ActionsResponse, DecisionsResponse};
use stoker_collector::serve::{CollectorSettings, start as start_collector};
use stoker_example_cnn::data::DataParams;
use stoker_example_cnn::load::scenario::{
    DEMO_FULL_PHASES, DEMO_SHORT_PHASES, ScenarioKind, ScenarioParams, phases,
};
use stoker_example_cnn::load::targets::{TargetSource, spawn_targets};
use stoker_example_cnn::load::{LoadConfig, run as run_load};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::TuiError;
use crate::cli::{DemoOpts, Scenario};
use crate::client::{Clock, FetchConfig};
use crate::http::HttpSource;
use story::{Observation, Story};

/// How long the first replica may take to answer ready.
const FIRST_REPLICA_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the load generator and the balancer get to stop.
const STOP_LOAD: Duration = Duration::from_secs(10);
/// How long the replicas get to stop once the policy is withdrawn: the collector sweeps
/// removed targets every 5 s, and each replica has the policy's `stop_grace` (5 s).
const STOP_SERVICE: Duration = Duration::from_secs(15);
/// How long the agent gets to stop and flush (its `export.shutdown_grace` is 5 s).
const STOP_AGENT: Duration = Duration::from_secs(10);
/// How long a retrain job still running at shutdown gets after SIGTERM.
const STOP_JOBS: Duration = Duration::from_secs(5);
/// How long the collector's tasks get to stop after cancellation.
const STOP_COLLECTOR: Duration = Duration::from_secs(15);
/// The observer's poll period.
const POLL: Duration = Duration::from_millis(500);
/// The agent's sampling, aggregation and export interval in the demo.
const AGENT_INTERVAL: Duration = Duration::from_millis(500);

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn demo_err(what: impl std::fmt::Display) -> TuiError {
    TuiError::Demo(what.to_string())
}

/// A free loopback port, picked by binding port 0 (the agent's receivers take an address, not
/// a listener, so there is a short race with other programs; never the default 4317/7700).
fn free_port() -> Result<u16, TuiError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(demo_err)?;
    Ok(l.local_addr().map_err(demo_err)?.port())
}

/// `count` consecutive free loopback ports (the local actuator's range), first one returned.
fn free_port_range(count: u16) -> Result<u16, TuiError> {
    for _ in 0..50 {
        let base = free_port()?;
        if base.checked_add(count).is_none() {
            continue;
        }
        let held: Vec<_> =
            (0..count).filter_map(|i| TcpListener::bind(("127.0.0.1", base + i)).ok()).collect();
        if held.len() == usize::from(count) {
            return Ok(base);
        }
    }
    Err(demo_err("no range of free loopback ports found"))
}

/// Runs the demo; the binary's `demo` subcommand.
pub fn run(opts: DemoOpts) -> Result<(), TuiError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| demo_err(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(run_async(opts))
}

/// What the demo started, with one stop token per stage so shutdown runs in reverse order.
struct Stack {
    dir: tempfile::TempDir,
    api: SocketAddr,
    port_from: u16,
    policy_dir: PathBuf,
    /// The collector's policy runtime (evaluation times for the story; withdrawn at shutdown).
    policy: Option<stoker_collector::policy::runtime::PolicyRuntime>,
    /// The load generator and the balancer.
    front: CancellationToken,
    front_tasks: TaskTracker,
    agent: CancellationToken,
    agent_tasks: TaskTracker,
    collector: CancellationToken,
    collector_tasks: TaskTracker,
}

async fn run_async(opts: DemoOpts) -> Result<(), TuiError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let say = |s: &str| println!("{s}");
    let dir = tempfile::Builder::new().prefix("stoker-demo-").tempdir().map_err(demo_err)?;
    say(&format!("demo: state in {}", dir.path().display()));
    let exe = std::env::current_exe().map_err(demo_err)?;
    let model_dir = dir.path().join("models");
    let args = child::TrainArgs {
        model_dir: model_dir.clone(),
        brightness: 0.0,
        rotation: 0.0,
        noise: DataParams::default().noise,
        train_samples: 3000,
        test_samples: 500,
        epochs: 3,
        min_accuracy: 0.8,
    };
    let published = tokio::task::spawn_blocking(move || child::train_and_publish(&args))
        .await
        .map_err(demo_err)?
        .map_err(|e| demo_err(format!("train model v1: {e}")))?;
    say(&format!(
        "demo: model v{} trained in {:.1} s, held-out accuracy {:.1} %",
        published.version,
        published.meta.train_seconds,
        published.meta.accuracy * 100.0
    ));

    let agent_grpc = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let agent_http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let port_from = free_port_range(policies::MAX_REPLICAS)?;
    let policy_dir = dir.path().join("policies");
    policies::write_set(
        &policy_dir,
        &policies::RenderParams {
            exe,
            model_dir,
            port_from,
            port_to: port_from + policies::MAX_REPLICAS - 1,
            agent_otlp_grpc: agent_grpc,
        },
    )
    .map_err(demo_err)?;

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let agent_cancel = CancellationToken::new();
    let agent_tasks = TaskTracker::new();
    let mut config = stoker_collector::config::CollectorConfig::default();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.api_listen = any;
    config.server.otlp_grpc_listen = any;
    config.server.otlp_http_listen = any;
    // Demo settings: the retrain job's end is noticed within a second (default 30 s).
    config.policy.job_poll = stoker_collector::duration::HumanDuration::from_secs(1);
    let collector = start_collector(
        CollectorSettings {
            config,
            data_dir: dir.path().join("data"),
            policies: Some(policy_dir.clone()),
            reload_on_hup: false,
        },
        cancel.clone(),
        tracker.clone(),
    )
    .await
    .map_err(|e| demo_err(format!("start the collector: {e}")))?;
    say(&format!(
        "demo: collector API http://{} (OTLP ingest {})",
        collector.bound.api, collector.bound.otlp_grpc
    ));

    let agent_cfg = stoker_agent::config::AgentConfig {
        collector: format!("http://{}", collector.bound.otlp_grpc),
        // The agent's aggregation interval is its export cadence: well under the policy's
        // 1 s evaluation, so a breach reaches the store within about half an evaluation.
        interval: AGENT_INTERVAL,
        ..Default::default()
    };
    let agent_stop = agent_cancel.clone();
    agent_tasks.spawn(async move {
        let opts = stoker_agent::daemon::RunOptions {
            otlp_grpc_listen: Some(agent_grpc),
            otlp_http_listen: Some(agent_http),
            ..Default::default()
        };
        if let Err(e) = stoker_agent::daemon::run(agent_cfg, opts, agent_stop).await {
            tracing::error!(error = %e, "The agent stopped.");
        }
    });
    say(&format!("demo: agent sampling this machine, local OTLP receiver {agent_grpc}"));

    let stack = Stack {
        dir,
        api: collector.bound.api,
        port_from,
        policy_dir,
        policy: collector.policy.clone(),
        front: CancellationToken::new(),
        front_tasks: TaskTracker::new(),
        agent: agent_cancel,
        agent_tasks,
        collector: cancel,
        collector_tasks: tracker,
    };
    let interrupted = CancellationToken::new();
    {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.cancel();
                // A second Ctrl-C forces the exit.
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            }
        });
    }
    let result = drive(&opts, &stack, &interrupted).await;
    shutdown(&stack).await;
    let strays = kill_strays(stack.dir.path());
    match result {
        Ok(Some(story)) => finish_headless(story, strays),
        Ok(None) => {
            if strays > 0 {
                return Err(demo_err(format!(
                    "{strays} child process(es) outlived shutdown and were killed"
                )));
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn finish_headless(mut story: Story, strays: u32) -> Result<(), TuiError> {
    for _ in 0..strays {
        println!("{}", story.error(unix_now(), "a child process outlived shutdown and was killed"));
    }
    let summary = story.summary();
    match serde_json::to_string(&summary) {
        Ok(line) => println!("{line}"),
        Err(e) => return Err(demo_err(format!("encode the summary: {e}"))),
    }
    if summary.loop_closed { Ok(()) } else { Err(TuiError::LoopNotClosed) }
}

/// Everything between start-up and shutdown. Headless returns the story.
async fn drive(
    opts: &DemoOpts,
    stack: &Stack,
    interrupted: &CancellationToken,
) -> Result<Option<Story>, TuiError> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| demo_err(format!("build the HTTP client: {e}")))?;
    let targets_file = stack.dir.path().join("targets.txt");
    let ready = balancer::spawn(
        client.clone(),
        stack.port_from,
        policies::MAX_REPLICAS,
        targets_file.clone(),
        stack.front.clone(),
        &stack.front_tasks,
    );
    println!("demo: waiting for the collector's local actuator to start the first replica");
    let mut waited = ready.clone();
    let first = tokio::time::timeout(FIRST_REPLICA_TIMEOUT, async {
        tokio::select! {
            r = waited.wait_for(|n| *n >= 1) => r.is_ok(),
            _ = interrupted.cancelled() => false,
        }
    })
    .await;
    if interrupted.is_cancelled() {
        return Err(TuiError::Interrupted);
    }
    if !matches!(first, Ok(true)) {
        return Err(demo_err(format!(
            "no replica became ready within {} s: the collector did not start the local actuator",
            FIRST_REPLICA_TIMEOUT.as_secs()
        )));
    }

    let (kind, defaults) = match opts.scenario {
        Scenario::Short => (ScenarioKind::DemoShort, DEMO_SHORT_PHASES),
        Scenario::Full => (ScenarioKind::DemoFull, DEMO_FULL_PHASES),
    };
    let mut demo_phases = defaults.map(Duration::from_secs);
    // The low tail must outlast the 30 s scale-down stabilization plus two scale-in steps.
    demo_phases[5] = demo_phases[5].max(Duration::from_secs(75));
    let params = ScenarioParams {
        base_rate: 15.0,
        peak_rate: 60.0,
        low_rate: 5.0,
        duration: Duration::from_secs(60),
        demo_phases,
        clean: DataParams::default(),
        drifted: DataParams::demo_drift(),
    };
    let total: Duration = demo_phases.iter().sum();
    println!("demo: load scenario {:?}, {} s", opts.scenario, total.as_secs());
    let load_cancel = stack.front.child_token();
    let targets = spawn_targets(
        Vec::new(),
        Some(TargetSource::File(targets_file)),
        client.clone(),
        Duration::from_secs(1),
        load_cancel.clone(),
    );
    let config = LoadConfig {
        scenario: format!("{kind:?}"),
        phases: phases(kind, &params),
        model_name: "cnn".into(),
        send_labels: true,
        timeout: Duration::from_secs(5),
        max_in_flight: 512,
        seed: 42,
        print_progress: false,
    };
    let load_start = unix_now();
    let load = tokio::spawn(run_load(config, targets, client.clone(), load_cancel.clone()));
    // The load begins to fall with the ramp-down phase (the fifth).
    let load_falls_at = load_start + demo_phases[..4].iter().sum::<Duration>().as_nanos() as u64;
    let api = format!("http://{}", stack.api);

    if !opts.headless {
        let source = HttpSource::new(&api, None).map_err(demo_err)?;
        let label = format!("demo {api}");
        let shown = tokio::select! {
            r = crate::run::dashboard(source, label, Clock::system(), FetchConfig::default()) => r,
            _ = interrupted.cancelled() => Ok(()),
        };
        load_cancel.cancel();
        let _ = load.await;
        return shown.map(|()| None);
    }

    let mut story = Story::new(
        unix_now(),
        policies::SLO_SECONDS,
        policies::CONFIDENCE_FLOOR,
        2.0 * policies::EVAL_INTERVAL_SECONDS,
    );
    story.load_falls_at(load_falls_at);
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut load = load;
    let mut load_done = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = interrupted.cancelled() => {
                println!("demo: interrupted");
                break;
            }
            r = &mut load, if !load_done => {
                load_done = true;
                match r {
                    Ok(summary) => println!("demo: load finished: sent {} ok {} rejected {} errors {}", summary.total.sent, summary.total.ok, summary.total.rejected, summary.total.errors),
                    Err(e) => println!("{}", story.error(unix_now(), &format!("the load generator failed: {e}"))),
                }
                break;
            }
        }
        let mut o = observe(&client, &api, *ready.borrow()).await;
        o.evaluations = evaluation_times(stack.policy.as_ref());
        for line in story.observe(&o) {
            println!("{line}");
        }
        if story.summary().loop_closed {
            println!("demo: the loop closed; stopping");
            break;
        }
    }
    load_cancel.cancel();
    if !load_done {
        let _ = load.await;
    }
    Ok(Some(story))
}

/// Times of the demo policy's recent scaling evaluations (its stabilization history), read
/// from the in-process policy runtime.
fn evaluation_times(rt: Option<&stoker_collector::policy::runtime::PolicyRuntime>) -> Vec<u64> {
    rt.and_then(|rt| {
        rt.snapshot()
            .states
            .get(policies::POLICY)
            .map(|s| s.scale.recommendations.iter().map(|r| r.0).collect())
    })
    .unwrap_or_default()
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
) -> Option<T> {
    // The query string is built with `url` (reqwest's `query` feature is not enabled here).
    let url = reqwest::Url::parse_with_params(url, query).ok()?;
    let r = client.get(url).timeout(Duration::from_secs(2)).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json::<T>().await.ok()
}

/// One poll of the collector API.
async fn observe(client: &reqwest::Client, api: &str, ready: usize) -> Observation {
    let time = unix_now();
    let decisions: Option<DecisionsResponse> = get_json(
        client,
        &format!("{api}/api/v1/decisions"),
        &[("policy", policies::POLICY), ("limit", "50")],
    )
    .await;
    let actions: Option<ActionsResponse> = get_json(
        client,
        &format!("{api}/api/v1/actions"),
        &[("policy", policies::POLICY), ("limit", "50")],
    )
    .await;
    let p95: Option<QueryResponse> = get_json(
        client,
        &format!("{api}/api/v1/query"),
        &[
            ("selector", "inference.request.duration{model.name=\"cnn\"}"),
            ("stat", "p95"),
            ("window", policies::LATENCY_WINDOW),
        ],
    )
    .await;
    let conf: Option<QueryResponse> = get_json(
        client,
        &format!("{api}/api/v1/query"),
        &[
            ("selector", "inference.prediction.confidence{model.name=\"cnn\"}"),
            ("stat", "mean"),
            ("window", "10s"),
            ("group_by", "model.version"),
        ],
    )
    .await;
    let p95 = p95.and_then(|r| match r.result {
        QueryResult::Instant(groups) => {
            groups.iter().map(|g| g.value).filter(|v| v.is_finite()).reduce(f64::max)
        }
        QueryResult::Range(_) => None,
    });
    let mut confidence = BTreeMap::new();
    if let Some(QueryResponse { result: QueryResult::Instant(groups), .. }) = conf {
        for g in groups {
            if let Some(v) = g.group.get("model.version")
                && g.value.is_finite()
            {
                confidence.insert(v.clone(), g.value);
            }
        }
    }
    Observation {
        time,
        p95,
        confidence,
        ready_replicas: ready,
        decisions: decisions.map(|d| d.decisions).unwrap_or_default(),
        actions: actions.map(|a| a.actions).unwrap_or_default(),
        evaluations: Vec::new(),
    }
}

/// Stops one stage: cancels its token and waits at most `grace` for its tasks.
async fn stop_stage(what: &str, token: &CancellationToken, tasks: &TaskTracker, grace: Duration) {
    token.cancel();
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            stage = what,
            grace_s = grace.as_secs(),
            "The stage did not stop within its grace period."
        );
    }
}

/// Replicas of the demo service still running (their command line names the state dir).
fn replicas_running(dir: &Path) -> usize {
    processes_with(&[&dir.to_string_lossy(), child::SERVE]).len()
}

/// Stops the service before the agent: withdraws the demo's policy so the collector's
/// actuator sweep stops the local replicas (each drains and flushes its metrics to the agent),
/// and waits for them, at most [`STOP_SERVICE`].
async fn stop_service(stack: &Stack) {
    let Some(rt) = &stack.policy else { return };
    for (name, _) in policies::TEMPLATES {
        if let Err(e) = std::fs::remove_file(stack.policy_dir.join(name)) {
            tracing::warn!(error = %e, "Cannot withdraw the demo policy; the replicas stop with the collector.");
            return;
        }
    }
    rt.reload();
    let deadline = tokio::time::Instant::now() + STOP_SERVICE;
    while replicas_running(stack.dir.path()) > 0 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("The replicas did not stop in time; they stop with the collector.");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops a retrain job still running (Ctrl-C during the drift phase): once the replicas are
/// gone, whatever child still names the demo's directory is a job the command actuator
/// started. SIGTERM, then at most [`STOP_JOBS`] to exit; [`kill_strays`] handles the rest.
async fn stop_jobs(stack: &Stack) {
    let jobs = processes_mentioning(stack.dir.path());
    if jobs.is_empty() {
        return;
    }
    println!("demo: stopping {} running retrain job process(es)", jobs.len());
    for pid in &jobs {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = tokio::time::Instant::now() + STOP_JOBS;
    while !processes_mentioning(stack.dir.path()).is_empty()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops everything in reverse start order: load → service → jobs → agent (flush) → collector.
async fn shutdown(stack: &Stack) {
    println!("demo: stopping the load, the service, the agent and the collector, in that order");
    let began = tokio::time::Instant::now();
    let mut mark = began;
    let mut lap = || {
        let now = tokio::time::Instant::now();
        let took = now - mark;
        mark = now;
        took.as_secs_f64()
    };
    stop_stage("load", &stack.front, &stack.front_tasks, STOP_LOAD).await;
    let load = lap();
    stop_service(stack).await;
    let service = lap();
    stop_jobs(stack).await;
    let jobs = lap();
    stop_stage("agent", &stack.agent, &stack.agent_tasks, STOP_AGENT).await;
    let agent = lap();
    stop_stage("collector", &stack.collector, &stack.collector_tasks, STOP_COLLECTOR).await;
    let collector = lap();
    println!(
        "demo: stopped in {:.1} s (load {load:.1} s, service {service:.1} s, jobs {jobs:.1} s, agent {agent:.1} s, collector {collector:.1} s)",
        began.elapsed().as_secs_f64()
    );
}

/// Processes whose command line mentions `dir` (every child of the demo does: the model dir).
pub fn processes_mentioning(dir: &Path) -> Vec<i32> {
    processes_with(&[&dir.to_string_lossy()])
}

/// Processes (other than this one) whose command line contains every one of `needles`.
fn processes_with(needles: &[&str]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(PathBuf::from(format!("/proc/{pid}/cmdline")))
                .map(|c| {
                    let cmdline = String::from_utf8_lossy(&c).replace('\0', " ");
                    needles.iter().all(|n| cmdline.contains(n))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILLs children that outlived the actuators' shutdown; returns how many there were.
fn kill_strays(dir: &Path) -> u32 {
    let strays = processes_mentioning(dir);
    for pid in &strays {
        tracing::error!(pid, "A child process outlived shutdown; killing it.");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    strays.len() as u32
}
