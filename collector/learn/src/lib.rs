//! stoker-learn: learning from recorded telemetry, as pure numerics over plain slices.
//!
//! Three models, each a small piece the collector's policy engine calls with data it already
//! holds (this crate does no I/O and reads no clock, so `policy replay` runs the same code):
//!
//! - [`forecast`]: a load forecaster (lagged values + seasonal Fourier terms, linfa linear or
//!   elastic-net regression) at a horizon set to the target's warm-up time, with its MAPE
//!   against a naive last-value forecast;
//! - [`anomaly`]: flags for nodes/GPUs/models whose feature vectors are unlike their own
//!   history (k-means distance) or their peers (DBSCAN), each with a human "why";
//! - [`drift`]: a domain classifier (linfa logistic regression) between a reference and a
//!   current window, scored by cross-validated ROC-AUC against NannyML's 0.45–0.65 band.
//!
//! [`spec`] holds the policy-facing configuration (`scale.forecast`), [`score`] the numerics
//! linfa lacks (MAPE, ROC-AUC, folds), and [`eval`] generated traces and a replay-style
//! scaling simulation used by the tests and the `evaluate` example.

pub mod anomaly;
pub mod drift;
pub mod eval;
pub mod forecast;
pub mod score;
pub mod series;
pub mod spec;

use std::time::Duration;

/// Everything that can go wrong when fitting or applying a model.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// Fewer observations than the configured minimum history: no model, no forecast.
    #[error("not enough history: {have:?} observed, at least {need:?} needed")]
    InsufficientHistory {
        /// Observed span (observed points × step).
        have: Duration,
        /// The configured minimum.
        need: Duration,
    },
    /// A configuration value that cannot work (zero step, empty band, k < 2, ...).
    #[error("invalid {key}: {reason}")]
    InvalidConfig {
        /// The configuration key, as written in policies where it has one.
        key: &'static str,
        /// Why the value is rejected.
        reason: String,
    },
    /// Input rows of different widths, or an empty window.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A linfa model failed to fit.
    #[error("fitting the {model} failed")]
    Fit {
        /// Which model was being fitted.
        model: &'static str,
        /// linfa's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl LearnError {
    pub(crate) fn fit<E: std::error::Error + Send + Sync + 'static>(
        model: &'static str,
        source: E,
    ) -> Self {
        Self::Fit { model, source: Box::new(source) }
    }
}
