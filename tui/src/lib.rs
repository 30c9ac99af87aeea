//! stoker-tui: the terminal dashboard over the collector, and the one-machine demo.
//!
//! Data flows one way: a [`client::Source`] answers what the current screen needs on a fetch
//! task ([`client::fetch_loop`]) → bounded channel → [`app::App::apply`] → [`view::render`].
//! Keys go through [`app::App::handle_key`], which may change what the screen needs.

// Tests may unwrap: a panic there is a failed test, which is what it should be.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod app;
pub mod cli;
pub mod client;
pub mod demo;
pub mod fake;
pub mod http;
pub mod model;
pub mod outcome;
pub mod run;
pub mod view;

pub use cli::{Cli, Command, DemoOpts, Scenario};

/// Why the dashboard binary stopped with an error; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    /// A configuration input (the token file) is unusable. Exit 64.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Something this binary does not contain yet. Exit 69 (EX_UNAVAILABLE).
    #[error("{0}")]
    NotBuilt(&'static str),
    /// The terminal could not be set up or drawn to. Exit 1.
    #[error("terminal: {0}")]
    Terminal(String),
    /// The demo could not start or run a part of its stack. Exit 1.
    #[error("demo: {0}")]
    Demo(String),
    /// The headless demo ended without closing the loop (its summary says what is missing). Exit 1.
    #[error("demo: the loop did not close (see the summary line)")]
    LoopNotClosed,
    /// Stopped by Ctrl-C before the demo got going. Exit 130.
    #[error("interrupted")]
    Interrupted,
}

impl TuiError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            TuiError::Config { .. } => 64,
            TuiError::NotBuilt(_) => 69,
            TuiError::Terminal(_) | TuiError::Demo(_) | TuiError::LoopNotClosed => 1,
            TuiError::Interrupted => 130,
        }
    }
}
