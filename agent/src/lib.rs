//! stoker-agent: the daemon on each serving node. It samples the host (sysinfo) and GPUs (NVML),
//! receives telemetry from inference services, and exports everything over OTLP.
//!
//! Data flows one way: `sample` → [`telemetry::Publisher`] → [`export::Outbox`] → the exporter
//! task → the collector. [`daemon::run`] wires it together; `main.rs` only parses flags.

pub mod config;
pub mod daemon;
pub mod export;
pub mod inference;
pub mod resource;
pub mod sample;
pub mod telemetry;
