//! Policies in the running collector. The format, checks, engine, policy tests and replay are
//! the pure `stoker-policy` crate, re-exported here under their usual paths; this module adds
//! what needs the process: the live [`runtime`] with its persistence ([`persist`]), API
//! ([`api`]) and decision log export ([`otel`]).
//!
//! Data flows one way: signals → [`engine::evaluate`] → decisions → executor → records.

pub use stoker_policy::{
    anomaly, check, cli, drift, driver, engine, forecast, format, ledger, model, replay, series,
    signal, template, testing, tracegen,
};

pub mod api;
pub mod otel;
pub mod persist;
pub mod runtime;

pub use api::router;
pub use check::{CheckReport, Diagnostic, Policy, Severity, check_paths};
pub use engine::{Decision, Evaluation, PolicyState, evaluate};
pub use runtime::{Executor, PolicyRuntime};
pub use signal::{SignalQuery, SignalSource};
