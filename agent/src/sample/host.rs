//! Host sampling with sysinfo: CPU utilisation (total and per core), memory, load average, and
//! the CPU and RSS of the configured serving processes.
//!
//! One `System` lives as long as the sampler and only what is reported is refreshed: CPU usage,
//! RAM, and the matched processes. Finding processes by name or command line needs a scan of
//! `/proc`; that scan reads names and command lines only, and runs every
//! [`RESCAN_EVERY`] samples (or when a matched process disappears), not every tick.

use std::collections::BTreeMap;
use std::path::Path;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use sysinfo::{
    CpuRefreshKind, MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System,
    UpdateKind,
};

use crate::config::ProcessMatch;
use crate::sample::otlp::{BatchBuilder, Kind, kv_int, kv_str};

/// Instrumentation scope of host batches.
pub const SCOPE: &str = "stoker-agent/host";

/// Samples between two scans for processes matched by name or command line.
pub const RESCAN_EVERY: u32 = 10;

/// Keeps the sysinfo state between samples.
#[derive(Debug)]
pub struct HostSampler {
    system: System,
    processes: Vec<ProcessMatch>,
    /// Pids found for each configured process, by index into `processes`.
    matched: Vec<Vec<Pid>>,
    samples_since_scan: u32,
    cpu_count: usize,
    start: u64,
}

/// Why the host sampler could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// sysinfo does not support this system.
    #[error("cannot read system information: {0}")]
    Unsupported(String),
}

impl HostSampler {
    /// A sampler for the given processes; `start` (Unix ns) stamps cumulative series.
    pub fn new(processes: Vec<ProcessMatch>, start: u64) -> Result<Self, HostError> {
        let mut system = System::new().map_err(|e| HostError::Unsupported(e.to_string()))?;
        // The first CPU refresh only sets the baseline usage is measured against.
        system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
        let cpu_count = system.cpus().len().max(1);
        let matched = vec![Vec::new(); processes.len()];
        Ok(Self { system, processes, matched, samples_since_scan: RESCAN_EVERY, cpu_count, start })
    }

    /// Take one sample stamped `now` (Unix ns) and build its batch under `resource`.
    pub fn sample(&mut self, now: u64, resource: &[KeyValue]) -> ResourceMetrics {
        let mut b = BatchBuilder::new(now, self.start);
        self.system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
        self.system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());

        b.f64(
            "system.cpu.utilization",
            "1",
            Kind::Gauge,
            Vec::new(),
            f64::from(self.system.global_cpu_usage()) / 100.0,
        );
        for (i, cpu) in self.system.cpus().iter().enumerate() {
            b.f64(
                "system.cpu.utilization",
                "1",
                Kind::Gauge,
                vec![kv_int("cpu.logical_number", i as i64)],
                f64::from(cpu.usage()) / 100.0,
            );
        }
        let used = self.system.used_memory();
        let total = self.system.total_memory();
        let available = self.system.available_memory();
        b.i64(
            "system.memory.usage",
            "By",
            Kind::UpDown,
            vec![kv_str("system.memory.state", "used")],
            clamp_i64(used),
        );
        b.i64("system.memory.limit", "By", Kind::UpDown, Vec::new(), clamp_i64(total));
        b.i64(
            "system.linux.memory.available",
            "By",
            Kind::UpDown,
            Vec::new(),
            clamp_i64(available),
        );
        if let Ok(load) = System::load_average() {
            for (name, value) in [
                ("system.cpu.load_average.1m", load.one),
                ("system.cpu.load_average.5m", load.five),
                ("system.cpu.load_average.15m", load.fifteen),
            ] {
                b.f64(name, "{thread}", Kind::Gauge, Vec::new(), value);
            }
        }
        if !self.processes.is_empty() {
            self.sample_processes(&mut b);
        }
        b.finish(resource, SCOPE)
    }

    fn sample_processes(&mut self, b: &mut BatchBuilder) {
        let needs_scan =
            self.processes.iter().any(|p| p.process_name.is_some() || p.cmdline_contains.is_some());
        if needs_scan && self.samples_since_scan >= RESCAN_EVERY {
            self.scan();
        }
        self.samples_since_scan = self.samples_since_scan.saturating_add(1);
        for (i, p) in self.processes.iter().enumerate() {
            if let Some(path) = &p.pid_file {
                self.matched[i] = read_pid_file(path).into_iter().collect();
            }
        }
        let mut pids: Vec<Pid> = self.matched.iter().flatten().copied().collect();
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            return;
        }
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory().without_tasks(),
        );
        let mut lost = false;
        for (i, p) in self.processes.iter().enumerate() {
            for pid in &self.matched[i] {
                let Some(proc_) = self.system.process(*pid) else {
                    lost = true;
                    continue;
                };
                let attrs = || {
                    vec![
                        kv_str("stoker.process.group", &p.name),
                        kv_int("process.pid", i64::from(pid.as_u32())),
                        kv_str("process.executable.name", &proc_.name().to_string_lossy()),
                    ]
                };
                b.f64(
                    "process.cpu.utilization",
                    "1",
                    Kind::Gauge,
                    attrs(),
                    f64::from(proc_.cpu_usage()) / 100.0 / self.cpu_count as f64,
                );
                b.i64(
                    "process.memory.usage",
                    "By",
                    Kind::UpDown,
                    attrs(),
                    clamp_i64(proc_.memory()),
                );
            }
        }
        if lost {
            // A matched process exited; look again at the next sample.
            self.samples_since_scan = RESCAN_EVERY;
        }
    }

    /// Scan `/proc` for processes matched by name or command line.
    fn scan(&mut self) {
        self.samples_since_scan = 0;
        let wants_cmd = self.processes.iter().any(|p| p.cmdline_contains.is_some());
        let mut kind = ProcessRefreshKind::nothing().without_tasks();
        if wants_cmd {
            kind = kind.with_cmd(UpdateKind::OnlyIfNotSet);
        }
        // A throwaway System holds the full process table only for the scan, so the
        // long-lived one keeps just the matched processes.
        let Ok(mut scan) = System::new() else {
            return;
        };
        scan.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
        let own = sysinfo::get_current_pid().ok();
        let mut found: BTreeMap<usize, Vec<Pid>> = BTreeMap::new();
        for (pid, proc_) in scan.processes() {
            if Some(*pid) == own || proc_.thread_kind().is_some() {
                continue;
            }
            for (i, p) in self.processes.iter().enumerate() {
                let hit = if let Some(name) = &p.process_name {
                    proc_.name() == name.as_str()
                } else if let Some(needle) = &p.cmdline_contains {
                    let cmd: Vec<String> =
                        proc_.cmd().iter().map(|a| a.to_string_lossy().into_owned()).collect();
                    cmd.join(" ").contains(needle.as_str())
                } else {
                    false
                };
                if hit {
                    found.entry(i).or_default().push(*pid);
                }
            }
        }
        for (i, p) in self.processes.iter().enumerate() {
            if p.pid_file.is_none() {
                let mut pids = found.remove(&i).unwrap_or_default();
                pids.sort_unstable();
                self.matched[i] = pids;
            }
        }
    }
}

/// Read a pid file: the first whitespace-separated token, as a pid.
fn read_pid_file(path: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(path).ok()?;
    let pid: u32 = text.split_whitespace().next()?.parse().ok()?;
    Some(Pid::from_u32(pid))
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
