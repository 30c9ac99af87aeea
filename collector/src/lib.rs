//! stoker-collector: OTLP ingest, the embedded time-series store, the policy engine, actuators
//! and the HTTP API.

pub mod actuate;
pub mod duration;
pub mod policy;
pub mod anomaly;

pub mod clock;
pub mod query;
pub mod store;
pub mod ingest;
pub mod api;
pub mod config;
pub mod telemetry;
pub mod serve;
pub mod server;
