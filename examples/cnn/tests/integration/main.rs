//! Integration tests of the demo CNN crate: training and drift, the KServe v2 server with hot
//! reload and its capacity model, and the OTel metrics as a real OTLP/gRPC receiver sees them.

mod serve;
mod support;
mod telemetry;
mod train;
