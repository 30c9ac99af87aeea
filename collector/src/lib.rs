//! stoker-collector: OTLP ingest, the embedded time-series store, the policy engine, actuators
//! and the HTTP API.

pub mod actuate;
pub mod anomaly;
pub use stoker_policy::duration;
pub mod fuzz;
pub mod policy;

pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod dbfile;
pub mod ingest;
pub mod query;
pub mod remote;
pub mod serve;
pub mod server;
pub mod store;
pub mod telemetry;
