//! The crate's one error type: what went wrong, with the file or input it concerns.

use std::path::PathBuf;

/// Everything the model, trainer, server and load generator can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CnnError {
    /// A tensor operation failed (shape mismatch, bad safetensors, ...).
    #[error("{what}: {source}")]
    Tensor {
        /// What was being done.
        what: &'static str,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },
    /// Reading or writing a file or directory failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A `meta.json` could not be parsed or written.
    #[error("model metadata {}: {source}", path.display())]
    Meta {
        /// The file concerned.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The model directory holds no complete version.
    #[error("no model version under {}", .0.display())]
    NoModel(PathBuf),
    /// A request or argument was malformed; the message says how.
    #[error("{0}")]
    InvalidInput(String),
    /// Training finished but the model is not good enough to publish.
    #[error("held-out accuracy {accuracy:.3} is below the required {required:.3}")]
    AccuracyTooLow {
        /// Measured held-out accuracy.
        accuracy: f64,
        /// The threshold asked for.
        required: f64,
    },
    /// Telemetry could not be set up.
    #[error("telemetry: {0}")]
    Telemetry(String),
}

impl CnnError {
    /// Wraps a candle error with what was being done.
    pub fn tensor(what: &'static str) -> impl FnOnce(candle_core::Error) -> Self {
        move |source| Self::Tensor { what, source }
    }

    /// Wraps an I/O error with what was being done and the path.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }
}

/// Result with [`CnnError`].
pub type Result<T> = std::result::Result<T, CnnError>;
