//! The running collector as a library: `serve::start` opens the store, binds the listeners and
//! starts every background task, the policy runtime included when a policy directory is
//! given; the binary's `serve` and the one-machine demo both call it, so they run the same
//! collector.
//!
//! The closed loop: OTLP ingest → [`Store`] → [`StoreSource`] → policy runtime
//! ([`crate::policy::runtime`]) → [`ActuatorExecutor`] → actuators, with decisions and actions
//! recorded under the data directory (`policy.redb`, `actions.redb`) and served on the API
//! listener (`/api/v1/policies`, `/decisions`, `/actions`).

pub mod executor;
pub mod store_source;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::actuate::{ActuateEnv, ActuateError, Journal, Secrets};
use crate::clock::SystemClock;
use crate::config::{CollectorConfig, ConfigError};
use crate::policy::otel::DecisionExporter;
use crate::policy::persist::{Ledger, PolicyStore};
use crate::policy::runtime::{PolicyRuntime, RuntimeConfig, RuntimeError, SharedSource};
use crate::remote::{Backend, PromClient, PromSource, Remote, RemoteWriter};
use crate::server::{self, Bound, Handles, MetricsText, ServeOptions, ServerError};
use crate::store::{Store, StoreError};

pub use executor::ActuatorExecutor;
pub use store_source::StoreSource;

/// How often the executor drops the actuators of targets and rules no longer in force.
const ACTUATOR_SWEEP: Duration = Duration::from_secs(5);

/// Everything `start` needs: the parsed configuration plus the command-line overrides already
/// applied to it.
#[derive(Clone, Debug, Default)]
pub struct CollectorSettings {
    /// The configuration (listeners, auth, store, and the sections of the other rooms).
    pub config: CollectorConfig,
    /// Where the store, the policy state and the actions journal live.
    pub data_dir: PathBuf,
    /// The policy directory (`--policies`, wins over `[policy] dir`); with neither, ingest,
    /// store and API run alone.
    pub policies: Option<PathBuf>,
    /// Whether SIGHUP reloads the policy directory. Embedders (the demo, tests) leave it off;
    /// the binary decides with `--reload-signal`.
    pub reload_on_hup: bool,
}

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable (the binary exits 64).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("open the store in {dir}")]
    Store {
        /// Data directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A listener could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The actions journal or the actuator environment could not be set up.
    #[error("set up the actuators in {dir}")]
    Actuators {
        /// Data directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: ActuateError,
    },
    /// The policy runtime could not open its state.
    #[error("start the policy engine on {dir}")]
    Policy {
        /// Policy directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Box<RuntimeError>,
    },
}

impl ServeError {
    /// Whether the configuration is at fault (the binary exits 64, EX_CONFIG).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            ServeError::Config(_)
                | ServeError::Actuators {
                    source: ActuateError::Config(_) | ActuateError::Secret { .. },
                    ..
                }
        )
    }
}

/// A started collector. It stops when the `cancel` token given to [`start`] fires; wait on the
/// tracker for its tasks to finish.
#[derive(Clone)]
pub struct RunningCollector {
    /// Addresses actually bound (ports resolved when 0 was asked for).
    pub bound: Bound,
    /// Counters and readiness of the listeners.
    pub handles: Handles,
    /// The store, for in-process readers.
    pub store: Arc<Store>,
    /// The policy runtime, when a policy directory was given.
    pub policy: Option<PolicyRuntime>,
}

impl std::fmt::Debug for RunningCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningCollector")
            .field("bound", &self.bound)
            .field("handles", &self.handles)
            .field("store", &self.store)
            .field("policy", &self.policy.as_ref().map(|_| "running"))
            .finish()
    }
}

/// Opens the store under `settings.data_dir`, binds the listeners and starts the background
/// tasks on `tracker` (the policy runtime with its actuators when a policy directory is
/// given); everything stops when `cancel` fires: the runtime, then the actuators (local
/// replicas are stopped), and the store flushes.
pub async fn start(
    settings: CollectorSettings,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> Result<RunningCollector, ServeError> {
    let CollectorSettings { mut config, data_dir, policies, reload_on_hup } = settings;
    let policies = policies.or_else(|| config.policy.dir.clone());
    config.store.data_dir = Some(data_dir.clone());
    let tokens = config.auth.tokens()?;
    let secrets = Secrets::from_config(config.secrets.clone()).map_err(|problems| {
        ServeError::Config(ConfigError::Invalid {
            path: "configuration".into(),
            key: "secrets".into(),
            message: problems.join("; "),
        })
    })?;
    let store_config = config.store.clone();
    let store =
        tokio::task::spawn_blocking(move || Store::open(store_config, Arc::new(SystemClock)))
            .await
            .map_err(|join| ServeError::Store {
                dir: data_dir.clone(),
                source: StoreError::Db(format!("store open task failed: {join}")),
            })?
            .map_err(|source| ServeError::Store { dir: data_dir.clone(), source })?;
    let store = Arc::new(store);
    tracker.spawn(store.clone().run_background(cancel.clone()));
    let remote = start_remote(&config, &secrets, &data_dir, &store, &cancel, &tracker)?;
    // Several collectors: only the leader evaluates and acts (`[cluster]`).
    let cluster = crate::cluster::start(&config.cluster, &cancel, &tracker).map_err(|e| {
        ServeError::Config(ConfigError::Invalid {
            path: "configuration".into(),
            key: "cluster".into(),
            message: e.to_string(),
        })
    })?;

    let mut extra_api = vec![cluster.router()];
    let mut extra_metrics: Vec<MetricsText> = {
        let cluster = cluster.clone();
        vec![Arc::new(move || cluster.metrics_text())]
    };
    if let Some(w) = &remote.writer {
        let w = w.clone();
        extra_metrics.push(Arc::new(move || w.metrics_text()));
    }
    // Policies read the series where the backend keeps them.
    let source: SharedSource = match &remote.source {
        Some(s) => s.clone(),
        None => Arc::new(StoreSource::new(store.clone())),
    };
    // Anomaly signals (issue 9): scored every minute, served at /api/v1/anomalies.
    let scorer = crate::anomaly::AnomalyScorer::new(crate::anomaly::AnomalyConfig::default());
    extra_api.push(crate::anomaly::router(scorer.board()));
    tracker.spawn(
        crate::anomaly::run(store.clone(), scorer, cancel.clone())
            .instrument(tracing::info_span!("anomaly")),
    );
    let policy = match &policies {
        Some(dir) => {
            let paths = PolicyPaths { dir, data_dir: &data_dir, reload_on_hup };
            let inputs = PolicyInputs { store: store.clone(), source, cluster: &cluster };
            let (rt, executor) = start_policy(&config, paths, secrets, inputs, &cancel, &tracker)?;
            extra_api.push(crate::policy::router(rt.clone()));
            let metrics_rt = rt.clone();
            extra_metrics.push(Arc::new(move || metrics_rt.metrics_text()));
            Some((rt, executor))
        }
        None => None,
    };
    let (bound, handles) = server::start(
        ServeOptions {
            server: config.server.clone(),
            tokens,
            store: store.clone(),
            extra_api,
            extra_metrics,
            remote,
        },
        cancel.clone(),
        tracker.clone(),
    )
    .await?;
    let runtime = policy.map(|(rt, executor)| {
        tracker.spawn(
            run_policy(rt.clone(), executor, cancel).instrument(tracing::info_span!("policy")),
        );
        rt
    });
    Ok(RunningCollector { bound, handles, store, policy: runtime })
}

/// With `[store] backend = "remote"`, starts the remote-write queue and the PromQL source.
fn start_remote(
    config: &CollectorConfig,
    secrets: &Secrets,
    data_dir: &std::path::Path,
    store: &Store,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<Remote, ServeError> {
    if config.store.backend != Backend::Remote {
        return Ok(Remote::default());
    }
    let invalid = |key: &str, message: String| {
        ServeError::Config(ConfigError::Invalid {
            path: "configuration".into(),
            key: key.into(),
            message,
        })
    };
    let rc = &config.store.remote;
    let bearer = match &rc.bearer_token_secret {
        Some(name) => Some(
            secrets
                .get(name)
                .map_err(|e| invalid("store.remote.bearer_token_secret", e.to_string()))?
                .expose()
                .to_owned(),
        ),
        None => None,
    };
    let writer =
        RemoteWriter::start(rc.clone(), bearer.clone(), Some(data_dir), cancel.clone(), tracker)
            .map_err(|e| invalid("store.remote", e))?;
    let client = PromClient::new(rc, bearer.as_deref()).map_err(|e| invalid("store.remote", e))?;
    tracing::info!(
        write_url = rc.write_url.as_deref().unwrap_or(""),
        query_url = rc.query_url.as_deref().unwrap_or(""),
        "Remote store backend: series are remote-written and read back with PromQL."
    );
    Ok(Remote {
        writer: Some(writer),
        source: Some(Arc::new(PromSource::new(client, store.clock.clone()))),
    })
}

/// Where the policy engine reads and keeps its files, and whether SIGHUP reloads them.
struct PolicyPaths<'a> {
    dir: &'a std::path::Path,
    data_dir: &'a std::path::Path,
    reload_on_hup: bool,
}

/// What the policy engine reads and whom it answers to.
struct PolicyInputs<'a> {
    store: Arc<Store>,
    source: SharedSource,
    cluster: &'a crate::cluster::Cluster,
}

/// Opens the policy ledger (state, decisions, actions and the actuators' journal in one), and
/// builds the runtime over the store and the actuators.
fn start_policy(
    config: &CollectorConfig,
    PolicyPaths { dir, data_dir, reload_on_hup }: PolicyPaths<'_>,
    secrets: Secrets,
    PolicyInputs { store, source, cluster }: PolicyInputs<'_>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<(PolicyRuntime, Arc<ActuatorExecutor>), ServeError> {
    let actuators = |source| ServeError::Actuators { dir: data_dir.to_path_buf(), source };
    let policy_err = |source: RuntimeError| ServeError::Policy {
        dir: dir.to_path_buf(),
        source: Box::new(source),
    };
    let rc = {
        let mut rc = RuntimeConfig::new(dir.to_path_buf(), data_dir.to_path_buf());
        rc.reload_poll = config.policy.reload_poll.get();
        rc.job_poll = config.policy.job_poll.get();
        rc.reload_on_hup = reload_on_hup;
        rc.leadership = cluster.leadership.clone();
        rc
    };
    // The cluster's shared ledger, or the embedded one of a collector alone.
    let ledger: Arc<dyn Ledger> = match &cluster.ledger {
        Some(shared) => shared.clone(),
        None => Arc::new(PolicyStore::open(data_dir).map_err(|e| policy_err(e.into()))?),
    };
    let journal = Journal::led_by(ledger.clone(), rc.leadership.clone());
    // A journal file of its own, from before it moved into the ledger, comes over once (into
    // the embedded ledger: a collector that joins a cluster starts without one).
    if cluster.ledger.is_none() {
        journal.import_file(&data_dir.join("actions.redb")).map_err(actuators)?;
    }
    // One clock for the store, the engine and the actuators' records.
    let clock = store.clock.clone();
    let env = ActuateEnv::new(config.actuators.clone(), secrets, Arc::new(journal))
        .map_err(actuators)?
        .with_clock(clock.clone());
    let executor = Arc::new(ActuatorExecutor::new(env));
    let exporter = config
        .policy
        .otlp_logs_endpoint
        .clone()
        .map(|endpoint| DecisionExporter::spawn(endpoint, cancel.clone(), tracker));
    let rt =
        PolicyRuntime::with_ledger(rc, ledger, executor.clone(), source, clock.clone(), exporter)
            .map_err(policy_err)?;
    let loaded = rt.snapshot();
    tracing::info!(policies = %dir.display(), loaded = loaded.policies.len(), errors = loaded.errors.len(), "Policy engine started.");
    Ok((rt, executor))
}

/// Runs the policy runtime until `cancel`, sweeping the actuators of removed policies, then
/// shuts the actuators down (local replicas stop with the collector).
async fn run_policy(rt: PolicyRuntime, executor: Arc<ActuatorExecutor>, cancel: CancellationToken) {
    let sweep = {
        let (rt, executor) = (rt.clone(), executor.clone());
        async move {
            let mut every = tokio::time::interval(ACTUATOR_SWEEP);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                let snap = rt.snapshot();
                let targets: BTreeSet<(String, String)> = snap
                    .policies
                    .iter()
                    .map(|p| (p.name().to_owned(), p.doc.spec.target.name.clone()))
                    .collect();
                let rules: BTreeSet<(String, String)> = snap
                    .policies
                    .iter()
                    .flat_map(|p| {
                        p.doc
                            .spec
                            .retrain
                            .iter()
                            .map(move |r| (p.name().to_owned(), r.name.clone()))
                    })
                    .collect();
                executor.retain(&targets, &rules).await;
            }
        }
    };
    tokio::select! {
        _ = rt.run(cancel.clone()) => {}
        _ = sweep => {}
    }
    executor.shutdown().await;
    tracing::info!("Policy engine stopped; actuators shut down.");
}
