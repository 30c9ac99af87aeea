//! stoker-agent: the daemon on each serving node. It samples the host (sysinfo) and GPUs (NVML),
//! receives telemetry from inference services, and exports everything over OTLP.

pub mod export;
pub mod inference;
