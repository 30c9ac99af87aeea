//! Sampling: the host (sysinfo) and the GPUs (NVML), each turned into one OTLP batch per
//! interval. The samplers do blocking reads, so the daemon runs each sample on tokio's
//! blocking pool and keeps the async workers free for export and the local receivers.

pub mod gpu;
pub mod host;
pub mod otlp;
