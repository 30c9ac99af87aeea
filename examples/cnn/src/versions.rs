//! The versioned weights directory: `<dir>/v<N>/model.safetensors` and `<dir>/v<N>/meta.json`.
//!
//! A version is published by writing into a hidden temporary directory and renaming it to
//! `v<N>`, so a reader never sees half a version; if another trainer took `v<N>` first the
//! rename fails and the next number is tried.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::DataParams;
use crate::error::{CnnError, Result};

/// Weights file name inside a version directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Metadata file name inside a version directory.
pub const META_FILE: &str = "meta.json";

/// What `meta.json` records about one trained version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Version number (the `N` of `v<N>`).
    pub version: u32,
    /// Held-out accuracy in [0, 1].
    pub accuracy: f64,
    /// Mean top-1 probability on the held-out set.
    pub mean_confidence: f64,
    /// When training finished, RFC 3339 UTC.
    pub trained_at: String,
    /// The same instant in Unix nanoseconds.
    pub trained_at_unix_nanos: u64,
    /// The image distribution trained on.
    pub data: DataParams,
    /// Training images.
    pub train_samples: usize,
    /// Held-out images.
    pub test_samples: usize,
    /// Passes over the training set.
    pub epochs: usize,
    /// Wall-clock training time in seconds.
    pub train_seconds: f64,
    /// Why this version was trained (`STOKER_REASON` when a Stoker actuator ran the job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A versioned model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
}

impl ModelDir {
    /// The directory at `root` (not created until a version is published).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of version `n`.
    pub fn version_path(&self, n: u32) -> PathBuf {
        self.root.join(format!("v{n}"))
    }

    /// Complete versions present (directories `v<N>` holding both files), ascending.
    pub fn versions(&self) -> Result<Vec<u32>> {
        self.numbered_entries(true)
    }

    fn numbered_entries(&self, complete_only: bool) -> Result<Vec<u32>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CnnError::io("list model directory", &self.root)(e)),
        };
        let mut versions = Vec::new();
        for entry in entries {
            let entry = entry.map_err(CnnError::io("list model directory", &self.root))?;
            let name = entry.file_name();
            let Some(n) =
                name.to_str().and_then(|s| s.strip_prefix('v')).and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let path = entry.path();
            if !complete_only
                || (path.join(WEIGHTS_FILE).is_file() && path.join(META_FILE).is_file())
            {
                versions.push(n);
            }
        }
        versions.sort_unstable();
        Ok(versions)
    }

    /// The newest complete version, if any.
    pub fn latest(&self) -> Result<Option<u32>> {
        Ok(self.versions()?.last().copied())
    }

    /// Reads version `n`: its weights bytes and metadata.
    pub fn read(&self, n: u32) -> Result<(Vec<u8>, ModelMeta)> {
        let dir = self.version_path(n);
        let weights_path = dir.join(WEIGHTS_FILE);
        let weights =
            std::fs::read(&weights_path).map_err(CnnError::io("read weights", &weights_path))?;
        let meta_path = dir.join(META_FILE);
        let meta_bytes =
            std::fs::read(&meta_path).map_err(CnnError::io("read metadata", &meta_path))?;
        let meta = serde_json::from_slice(&meta_bytes)
            .map_err(|source| CnnError::Meta { path: meta_path, source })?;
        Ok((weights, meta))
    }

    /// Publishes a new version after the newest: `write_weights` writes the safetensors file
    /// at the path it is given; `meta.version` is set to the number taken. Returns that number.
    pub fn publish(
        &self,
        mut meta: ModelMeta,
        write_weights: impl Fn(&Path) -> Result<()>,
    ) -> Result<(u32, ModelMeta)> {
        std::fs::create_dir_all(&self.root)
            .map_err(CnnError::io("create model directory", &self.root))?;
        let staging = self.root.join(format!(
            ".staging-{}-{}",
            std::process::id(),
            meta.trained_at_unix_nanos
        ));
        std::fs::create_dir_all(&staging)
            .map_err(CnnError::io("create staging directory", &staging))?;
        let result = (|| {
            write_weights(&staging.join(WEIGHTS_FILE))?;
            // A few tries: another trainer may publish the same number between list and rename.
            for _ in 0..16 {
                // Past every `v<N>` entry, complete or not, so a half-copied one is never reused.
                let n = self.numbered_entries(false)?.last().copied().unwrap_or(0) + 1;
                meta.version = n;
                let meta_path = staging.join(META_FILE);
                let json = serde_json::to_vec_pretty(&meta)
                    .map_err(|source| CnnError::Meta { path: meta_path.clone(), source })?;
                std::fs::write(&meta_path, json)
                    .map_err(CnnError::io("write metadata", &meta_path))?;
                let target = self.version_path(n);
                if target.exists() {
                    continue;
                }
                match std::fs::rename(&staging, &target) {
                    Ok(()) => return Ok((n, meta.clone())),
                    Err(_) if target.exists() => continue,
                    Err(e) => return Err(CnnError::io("publish version", &target)(e)),
                }
            }
            Err(CnnError::InvalidInput(format!(
                "could not take a version number under {}",
                self.root.display()
            )))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report
mod tests {
    use super::*;

    fn meta() -> ModelMeta {
        ModelMeta {
            version: 0,
            accuracy: 0.9,
            mean_confidence: 0.8,
            trained_at: "2025-01-01T00:00:00Z".into(),
            trained_at_unix_nanos: 1,
            data: DataParams::default(),
            train_samples: 1,
            test_samples: 1,
            epochs: 1,
            train_seconds: 0.1,
            reason: None,
        }
    }

    #[test]
    fn publishes_consecutive_versions_and_ignores_incomplete_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ModelDir::new(tmp.path().join("models"));
        assert_eq!(dir.latest().unwrap(), None);
        let write = |p: &Path| std::fs::write(p, b"w").map_err(CnnError::io("write", p));
        assert_eq!(dir.publish(meta(), write).unwrap().0, 1);
        // An incomplete v7 (no meta.json) is not a version.
        std::fs::create_dir_all(dir.version_path(7)).unwrap();
        std::fs::write(dir.version_path(7).join(WEIGHTS_FILE), b"x").unwrap();
        let (n, m) = dir.publish(meta(), write).unwrap();
        assert_eq!((n, m.version), (8, 8));
        assert_eq!(dir.versions().unwrap(), vec![1, 8]);
        assert_eq!(dir.latest().unwrap(), Some(8));
        assert_eq!(dir.read(8).unwrap().1.version, 8);
    }
}
