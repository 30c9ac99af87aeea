//! Policies: the YAML format ([`format`]), its checks with positions ([`check`]), the pure
//! engine ([`engine`]) and its drift statistics ([`drift`]), the signal boundary
//! ([`signal::SignalSource`]), and the tools built on the engine: unit tests of policies
//! ([`testing`]), backtests ([`replay`]), and the live [`runtime`] with its persistence,
//! API and decision log export.
//!
//! Data flows one way: signals → [`engine::evaluate`] → decisions → executor → records.

pub mod anomaly;
pub mod api;
pub mod check;
pub mod cli;
pub mod drift;
pub mod engine;
pub mod forecast;
pub mod replay;
pub mod runtime;
pub mod format;
pub mod otel;
pub mod persist;
pub mod series;
pub mod signal;
pub mod template;
pub mod testing;

pub use check::{check_paths, CheckReport, Diagnostic, Policy, Severity};
pub use engine::{evaluate, Decision, Evaluation, PolicyState};
pub use api::router;
pub use runtime::{Executor, PolicyRuntime};
pub use signal::{SignalQuery, SignalSource};

#[cfg(test)]
mod engine_tests;
