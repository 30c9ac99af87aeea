//! Integration tests of stoker-agent: the real binary, run against the fake NVML library
//! (`tests/fake-nvml`) and an OTLP/gRPC receiver started in the test; the inference receivers,
//! scrapers and probes driven directly.

// Test code: a failed unwrap is a failed test, in helpers as in `#[test]` functions.
#![allow(clippy::unwrap_used)]

mod config;
mod export;
mod gpu;
mod inference;
mod prom_text_fuzz;
mod prometheus;
mod support;
