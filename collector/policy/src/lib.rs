//! stoker-policy: the YAML format ([`format`]) with the actuator sections it embeds ([`spec`]),
//! its checks with positions ([`check`]), the pure engine ([`engine`]) and its drift statistics
//! ([`drift`]), the signal boundary ([`signal::SignalSource`]), and the tools built on the
//! engine: unit tests of policies ([`testing`]), backtests ([`replay`]) on seeded traces
//! ([`tracegen`]) and the `policy check|test|replay` commands ([`cli`]). Capacity-aware sizing
//! (`scale.model`) is its own module ([`model`]), as the load forecast is ([`forecast`]).
//! What those modules and the engine share (inputs, reads, reference windows) is [`inputs`],
//! below them all.
//!
//! Data flows one way: signals → [`engine::evaluate`] → decisions. Nothing here reads a clock,
//! a file outside the commands' arguments, or the network: time is an argument.

pub mod anomaly;
pub mod check;
pub mod cli;
pub mod drift;
pub mod driver;
pub mod duration;
pub mod engine;
pub mod forecast;
pub mod format;
pub mod inputs;
pub mod ledger;
pub mod model;
pub mod replay;
pub mod series;
pub mod signal;
pub mod spec;
pub mod template;
pub mod testing;
pub mod tracegen;

pub use check::{CheckReport, Diagnostic, Policy, Severity, check_paths};
pub use engine::{Decision, Evaluation, PolicyState, evaluate};
pub use signal::{SignalQuery, SignalSource};

#[cfg(test)]
mod engine_tests;
