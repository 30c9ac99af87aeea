//! Integration tests of the demo CNN crate: training and drift, the KServe v2 server with hot
//! reload and its capacity model, and the OTel metrics as a real OTLP/gRPC receiver sees them.

// Tests may unwrap: a panic is the failure report (helpers outside #[test] fns included).
#![allow(clippy::unwrap_used)]

mod serve;
mod support;
mod telemetry;
mod train;
