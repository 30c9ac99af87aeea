//! The demo CNN service for Stoker: a small convolutional digit classifier ([`model`]) trained
//! on procedurally drawn images ([`data`], [`train`]) into a versioned weights directory
//! ([`versions`]), served over the Open Inference Protocol with OpenTelemetry metrics and hot
//! reload ([`serve`]), and driven by a scenario load generator ([`load`]).
//!
//! The three binaries (`cnn-train`, `cnn-serve`, `cnn-load`) are thin wrappers over this library.

pub mod cli;
pub mod data;
pub mod error;
pub mod load;
pub mod model;
pub mod serve;
pub mod train;
pub mod versions;

pub use error::{CnnError, Result};
