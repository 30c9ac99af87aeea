//! The running collector as a library: `serve::start` opens the store, binds the listeners and
//! starts every background task; the binary's `serve` and the one-machine demo both call it,
//! so they run the same collector.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SystemClock;
use crate::config::{CollectorConfig, ConfigError};
use crate::server::{self, Bound, Handles, ServeOptions, ServerError};
use crate::store::{Store, StoreError};

/// Everything `start` needs: the parsed configuration plus the command-line overrides already
/// applied to it.
#[derive(Clone, Debug, Default)]
pub struct CollectorSettings {
    /// The configuration (listeners, auth, store, and the sections of the other rooms).
    pub config: CollectorConfig,
    /// Where the store, the policy state and the actions journal live.
    pub data_dir: PathBuf,
    /// The policy directory; `None` runs ingest, store and API only.
    pub policies: Option<PathBuf>,
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
}

/// A started collector. It stops when the `cancel` token given to [`start`] fires; wait on the
/// tracker for its tasks to finish.
#[derive(Clone, Debug)]
pub struct RunningCollector {
    /// Addresses actually bound (ports resolved when 0 was asked for).
    pub bound: Bound,
    /// Counters and readiness of the listeners.
    pub handles: Handles,
    /// The store, for in-process readers.
    pub store: Arc<Store>,
}

/// Opens the store under `settings.data_dir`, binds the listeners and starts the background
/// tasks on `tracker`; everything stops when `cancel` fires.
pub async fn start(
    settings: CollectorSettings,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> Result<RunningCollector, ServeError> {
    let CollectorSettings { mut config, data_dir, policies } = settings;
    config.store.data_dir = Some(data_dir.clone());
    let tokens = config.auth.tokens()?;
    let store_config = config.store.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(store_config, Arc::new(SystemClock)))
        .await
        .map_err(|join| ServeError::Store {
            dir: data_dir.clone(),
            source: StoreError::Db(format!("store open task failed: {join}")),
        })?
        .map_err(|source| ServeError::Store { dir: data_dir.clone(), source })?;
    let store = Arc::new(store);
    tracker.spawn(store.clone().run_background(cancel.clone()));
    if let Some(dir) = &policies {
        tracing::info!(policies = %dir.display(), "Policy directory given.");
    }
    let (bound, handles) = server::start(
        ServeOptions { server: config.server.clone(), tokens, store: store.clone(), extra_api: Vec::new() },
        cancel,
        tracker,
    )
    .await?;
    Ok(RunningCollector { bound, handles, store })
}
