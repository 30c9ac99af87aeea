//! Policies: the YAML format ([`format`]), its checks with positions ([`check`]), the pure
//! engine ([`engine`]) and its drift statistics ([`drift`]), the signal boundary
//! ([`signal::SignalSource`]), and the tools built on the engine: unit tests of policies
//! ([`testing`]), backtests ([`replay`]) on seeded traces ([`tracegen`]), and the live
//! [`runtime`] with its persistence, API and decision log export. Capacity-aware sizing
//! (`scale.model`) is its own module ([`model`]), as the load forecast is ([`forecast`]).
//!
//! Data flows one way: signals → [`engine::evaluate`] → decisions → executor → records.

pub mod anomaly;
pub mod api;
pub mod check;
pub mod cli;
pub mod drift;
pub mod engine;
pub mod forecast;
pub mod format;
pub mod model;
pub mod otel;
pub mod persist;
pub mod replay;
pub mod runtime;
pub mod series;
pub mod signal;
pub mod template;
pub mod testing;
pub mod tracegen;

pub use api::router;
pub use check::{CheckReport, Diagnostic, Policy, Severity, check_paths};
pub use engine::{Decision, Evaluation, PolicyState, evaluate};
pub use runtime::{Executor, PolicyRuntime};
pub use signal::{SignalQuery, SignalSource};

#[cfg(test)]
mod engine_tests;
