//! The loaded model and the watcher that hot-reloads the newest version from the weights
//! directory. The directory is polled (every 500 ms by default) rather than watched with
//! inotify: publishing is an atomic rename, polling sees it within one interval on every
//! platform and filesystem, and it costs one `readdir` per tick.

use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::model::DigitNet;
use crate::versions::{ModelDir, ModelMeta};

/// A model ready to serve, with its metadata.
#[derive(Debug)]
pub struct LoadedModel {
    /// The network.
    pub model: DigitNet,
    /// Its `meta.json`.
    pub meta: ModelMeta,
}

/// The currently served model, shared by the handlers and the worker: `None` until the first
/// version loads.
pub type ModelSlot = watch::Receiver<Option<Arc<LoadedModel>>>;

/// Loads version `n` from `dir`.
pub fn load_version(dir: &ModelDir, n: u32) -> Result<LoadedModel> {
    let (weights, mut meta) = dir.read(n)?;
    let model = DigitNet::from_safetensors(weights, &Device::Cpu)?;
    // The directory name is authoritative: a copied directory may carry a stale number.
    meta.version = n;
    Ok(LoadedModel { model, meta })
}

/// Polls `dir` every `interval` and publishes into `slot` every version newer than the one
/// served, until `shutdown`. A version that fails to load is logged once and skipped until a
/// newer one appears.
pub async fn watch_versions(
    dir: ModelDir,
    slot: watch::Sender<Option<Arc<LoadedModel>>>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut failed: Option<u32> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let latest = match dir.latest() {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "Could not list the model directory; will retry.");
                continue;
            }
        };
        let current = slot.borrow().as_ref().map(|m| m.meta.version);
        if current.is_some_and(|c| c >= latest) || failed == Some(latest) {
            continue;
        }
        let dir2 = dir.clone();
        match tokio::task::spawn_blocking(move || load_version(&dir2, latest)).await {
            Ok(Ok(loaded)) => {
                tracing::info!(
                    version = latest,
                    previous = ?current,
                    accuracy = loaded.meta.accuracy,
                    "Model version loaded."
                );
                slot.send_replace(Some(Arc::new(loaded)));
                failed = None;
            }
            Ok(Err(e)) => {
                tracing::warn!(version = latest, error = %e, "Could not load the model version; keeping the current one.");
                failed = Some(latest);
            }
            Err(e) => {
                tracing::warn!(version = latest, error = %e, "Model loading task failed.");
                failed = Some(latest);
            }
        }
    }
}
