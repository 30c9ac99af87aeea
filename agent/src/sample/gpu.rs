//! GPU sampling through NVML (nvml-wrapper), initialised once per agent.
//!
//! Every device is sampled each interval: utilisation (general, encoder, decoder), memory
//! controller utilisation, memory used and total, power and its limit, the energy counter,
//! temperature, SM clock, throttle reasons, PCIe throughput, ECC counts, and per-process GPU
//! memory and utilisation. XID errors arrive through an NVML event set watched on a blocking
//! thread ([`watch_xids`]) and are counted per code.
//!
//! Nothing here may bring the agent down: a field the device does not support is skipped (and
//! logged once), a lost GPU reports `hw.status{hw.state="failed"}` and nothing else until it
//! answers again, and a node without a driver never gets a [`GpuSampler`] at all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, TemperatureSensor,
};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::sample::otlp::{BatchBuilder, Kind, kv_int, kv_str};

/// Instrumentation scope of GPU batches.
pub const SCOPE: &str = "stoker-agent/gpu";

/// How long one wait on the XID event set blocks; bounds how late shutdown is noticed.
const XID_WAIT: Duration = Duration::from_millis(500);

/// Why NVML could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The library could not be loaded or NVML could not be initialised (no driver).
    #[error("cannot initialise NVML from {lib}: {source}")]
    Init {
        /// The library asked for.
        lib: String,
        /// What nvml-wrapper said.
        #[source]
        source: NvmlError,
    },
    /// NVML started but could not count the devices.
    #[error("NVML cannot count devices: {0}")]
    Count(#[source] NvmlError),
}

/// XID counts per device index and code, shared between the watcher thread and the sampler.
#[derive(Debug, Default)]
pub struct XidCounts {
    counts: Mutex<HashMap<u32, BTreeMap<u64, u64>>>,
}

impl XidCounts {
    fn add(&self, index: u32, code: u64) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(index).or_default().entry(code).or_insert(0) += 1;
    }

    fn of(&self, index: u32) -> Vec<(u64, u64)> {
        let map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&index)
            .map(|codes| codes.iter().map(|(c, n)| (*c, *n)).collect())
            .unwrap_or_default()
    }
}

/// The XID code reported when NVML says "unknown" (999).
const XID_UNKNOWN: u64 = 999;

#[derive(Debug)]
struct GpuDevice {
    index: u32,
    /// `hw.id`: the UUID, or `gpu-<index>` until the device has answered once.
    uuid: Option<String>,
    model: String,
    lost: bool,
    /// Fields already reported as failing, so each is logged once.
    logged: HashSet<&'static str>,
    /// Newest per-process utilisation sample seen, NVML's cursor.
    last_process_sample: u64,
}

/// Device health as `hw.status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwState {
    /// Every field answered.
    Ok,
    /// Some field is unsupported or failed.
    Degraded,
    /// The device is lost or does not answer.
    Failed,
}

/// Samples every GPU through one NVML handle.
#[derive(Debug)]
pub struct GpuSampler {
    nvml: Arc<Nvml>,
    driver_version: String,
    devices: Vec<GpuDevice>,
    xids: Arc<XidCounts>,
    start: u64,
}

impl GpuSampler {
    /// Load NVML from `lib` and discover the devices. `start` stamps cumulative series.
    pub fn new(lib: &OsStr, start: u64) -> Result<Self, GpuError> {
        let nvml = Nvml::builder()
            .lib_path(lib)
            .init()
            .map_err(|source| GpuError::Init { lib: lib.to_string_lossy().into_owned(), source })?;
        let count = nvml.device_count().map_err(GpuError::Count)?;
        let driver_version = nvml.sys_driver_version().unwrap_or_else(|e| {
            warn!(error = %e, "NVML does not report the driver version.");
            "unknown".into()
        });
        let mut devices = Vec::new();
        for index in 0..count {
            let mut dev = GpuDevice {
                index,
                uuid: None,
                model: "unknown".into(),
                lost: false,
                logged: HashSet::new(),
                last_process_sample: 0,
            };
            identify(&nvml, &mut dev);
            info!(gpu = index, uuid = dev.uuid.as_deref().unwrap_or("?"), model = %dev.model, "GPU found.");
            devices.push(dev);
        }
        Ok(Self {
            nvml: Arc::new(nvml),
            driver_version,
            devices,
            xids: Arc::new(XidCounts::default()),
            start,
        })
    }

    /// Number of devices NVML reported at start.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// What the XID watcher needs: the NVML handle and the shared counts.
    pub fn xid_watch(&self) -> (Arc<Nvml>, Arc<XidCounts>, u32) {
        (
            self.nvml.clone(),
            self.xids.clone(),
            u32::try_from(self.devices.len()).unwrap_or(u32::MAX),
        )
    }

    /// Sample every device and build the batch under `resource`, stamped `now` (Unix ns).
    pub fn sample(&mut self, now: u64, resource: &[KeyValue]) -> ResourceMetrics {
        let mut b = BatchBuilder::new(now, self.start);
        for dev in &mut self.devices {
            sample_device(&self.nvml, &self.driver_version, &self.xids, dev, &mut b);
        }
        b.finish(resource, SCOPE)
    }
}

fn identify(nvml: &Nvml, dev: &mut GpuDevice) {
    if let Ok(device) = nvml.device_by_index(dev.index) {
        if let Ok(uuid) = device.uuid() {
            dev.uuid = Some(uuid);
        }
        if let Ok(name) = device.name() {
            dev.model = name;
        }
    }
}

/// Tracks how one device's sample goes, field by field.
struct Probe<'d> {
    dev: &'d mut GpuDevice,
    lost: bool,
    degraded: bool,
}

impl Probe<'_> {
    /// Read one field. `None` if it failed; a lost GPU stops every later read.
    fn read<T>(
        &mut self,
        field: &'static str,
        f: impl FnOnce() -> Result<T, NvmlError>,
    ) -> Option<T> {
        if self.lost {
            return None;
        }
        match f() {
            Ok(v) => Some(v),
            Err(NvmlError::GpuLost) => {
                self.lost = true;
                None
            }
            Err(e) => {
                self.degraded = true;
                if self.dev.logged.insert(field) {
                    warn!(gpu = self.dev.index, field, error = %e, "GPU field unavailable; skipping it.");
                }
                None
            }
        }
    }
}

fn sample_device(
    nvml: &Nvml,
    driver: &str,
    xids: &XidCounts,
    dev: &mut GpuDevice,
    b: &mut BatchBuilder,
) {
    if dev.uuid.is_none() {
        identify(nvml, dev);
    }
    let hw_id = dev.uuid.clone().unwrap_or_else(|| format!("gpu-{}", dev.index));
    let base = vec![
        kv_str("hw.id", &hw_id),
        kv_str("hw.model", &dev.model),
        kv_int("gpu.index", i64::from(dev.index)),
        kv_str("gpu.driver.version", driver),
    ];
    let with = |extra: &[KeyValue]| -> Vec<KeyValue> {
        let mut v = base.clone();
        v.extend_from_slice(extra);
        v
    };
    let index = dev.index;
    let device = match nvml.device_by_index(index) {
        Ok(d) => Some(d),
        Err(e) => {
            if !dev.lost {
                warn!(gpu = index, error = %e, "GPU does not answer; reporting it failed.");
            }
            dev.lost = true;
            None
        }
    };
    let mut state = HwState::Failed;
    if let Some(device) = device {
        let mut p = Probe { dev, lost: false, degraded: false };
        if let Some(u) = p.read("utilization", || device.utilization_rates()) {
            let task = [kv_str("hw.gpu.task", "general")];
            b.f64("hw.gpu.utilization", "1", Kind::Gauge, with(&task), f64::from(u.gpu) / 100.0);
            b.f64(
                "gpu.memory_controller.utilization",
                "1",
                Kind::Gauge,
                with(&[]),
                f64::from(u.memory) / 100.0,
            );
        }
        if let Some(u) = p.read("encoder_utilization", || device.encoder_utilization()) {
            let task = [kv_str("hw.gpu.task", "encoder")];
            b.f64(
                "hw.gpu.utilization",
                "1",
                Kind::Gauge,
                with(&task),
                f64::from(u.utilization) / 100.0,
            );
        }
        if let Some(u) = p.read("decoder_utilization", || device.decoder_utilization()) {
            let task = [kv_str("hw.gpu.task", "decoder")];
            b.f64(
                "hw.gpu.utilization",
                "1",
                Kind::Gauge,
                with(&task),
                f64::from(u.utilization) / 100.0,
            );
        }
        if let Some(m) = p.read("memory", || device.memory_info()) {
            b.i64("hw.gpu.memory.usage", "By", Kind::UpDown, with(&[]), clamp(m.used));
            b.i64("hw.gpu.memory.limit", "By", Kind::UpDown, with(&[]), clamp(m.total));
        }
        if let Some(mw) = p.read("power", || device.power_usage()) {
            b.f64("hw.power", "W", Kind::Gauge, with(&[]), f64::from(mw) / 1000.0);
        }
        if let Some(mw) = p.read("power_limit", || device.enforced_power_limit()) {
            b.f64("gpu.power.limit", "W", Kind::Gauge, with(&[]), f64::from(mw) / 1000.0);
        }
        if let Some(mj) = p.read("energy", || device.total_energy_consumption()) {
            b.f64("hw.energy", "J", Kind::Counter, with(&[]), mj as f64 / 1000.0);
        }
        if let Some(c) = p.read("temperature", || device.temperature(TemperatureSensor::Gpu)) {
            b.f64("hw.temperature", "Cel", Kind::Gauge, with(&[]), f64::from(c));
        }
        if let Some(mhz) = p.read("sm_clock", || device.clock_info(Clock::SM)) {
            b.f64("gpu.clock.sm", "MHz", Kind::Gauge, with(&[]), f64::from(mhz));
        }
        if let Some(r) = p.read("throttle_reasons", || device.current_throttle_reasons()) {
            b.i64("gpu.throttle.reasons", "", Kind::Gauge, with(&[]), clamp(r.bits()));
        }
        for (direction, counter) in
            [("transmit", PcieUtilCounter::Send), ("receive", PcieUtilCounter::Receive)]
        {
            if let Some(kbs) = p.read("pcie_throughput", || device.pcie_throughput(counter)) {
                let dir = [kv_str("network.io.direction", direction)];
                b.f64(
                    "gpu.pcie.throughput",
                    "By/s",
                    Kind::Gauge,
                    with(&dir),
                    f64::from(kbs) * 1024.0,
                );
            }
        }
        for (kind, error) in [
            ("ecc_corrected", MemoryError::Corrected),
            ("ecc_uncorrected", MemoryError::Uncorrected),
        ] {
            if let Some(n) = p.read("ecc", || device.total_ecc_errors(error, EccCounter::Aggregate))
            {
                b.i64(
                    "hw.errors",
                    "{error}",
                    Kind::Counter,
                    with(&[kv_str("error.type", kind)]),
                    clamp(n),
                );
            }
        }
        if let Some(procs) = p.read("processes", || device.running_compute_processes()) {
            for proc_ in procs {
                if let UsedGpuMemory::Used(bytes) = proc_.used_gpu_memory {
                    let pid = [kv_int("process.pid", i64::from(proc_.pid))];
                    b.i64("process.gpu.memory.usage", "By", Kind::Gauge, with(&pid), clamp(bytes));
                }
            }
        }
        let since = p.dev.last_process_sample;
        let samples = p.read("process_utilization", || {
            match device.process_utilization_stats(since) {
                // NotFound means no process ran since the last sample, not a failure.
                Err(NvmlError::NotFound) => Ok(Vec::new()),
                other => other,
            }
        });
        if let Some(samples) = samples {
            let mut newest: BTreeMap<u32, (u64, u32)> = BTreeMap::new();
            for s in samples {
                let entry = newest.entry(s.pid).or_insert((0, 0));
                if s.timestamp >= entry.0 {
                    *entry = (s.timestamp, s.sm_util);
                }
                p.dev.last_process_sample = p.dev.last_process_sample.max(s.timestamp);
            }
            for (pid, (_, sm)) in newest {
                let pid = [kv_int("process.pid", i64::from(pid))];
                b.f64(
                    "process.gpu.utilization",
                    "1",
                    Kind::Gauge,
                    with(&pid),
                    f64::from(sm) / 100.0,
                );
            }
        }
        state = if p.lost {
            HwState::Failed
        } else if p.degraded {
            HwState::Degraded
        } else {
            HwState::Ok
        };
        let dev = p.dev;
        if p.lost && !dev.lost {
            warn!(gpu = index, uuid = %hw_id, "GPU lost; reporting it failed until it answers again.");
        } else if !p.lost && dev.lost {
            info!(gpu = index, uuid = %hw_id, "GPU answers again.");
        }
        dev.lost = p.lost;
    }
    for (code, n) in xids.of(index) {
        let kind =
            if code == XID_UNKNOWN { "xid_unknown".to_owned() } else { format!("xid_{code}") };
        b.i64(
            "hw.errors",
            "{error}",
            Kind::Counter,
            with(&[kv_str("error.type", &kind)]),
            clamp(n),
        );
    }
    for (name, s) in
        [("ok", HwState::Ok), ("degraded", HwState::Degraded), ("failed", HwState::Failed)]
    {
        b.i64(
            "hw.status",
            "1",
            Kind::UpDown,
            with(&[kv_str("hw.type", "gpu"), kv_str("hw.state", name)]),
            i64::from(state == s),
        );
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Watch for XID errors until `shutdown` fires. Blocking: run it on a blocking thread.
///
/// Devices that cannot deliver events are logged once and left out; if no device can, the
/// watcher returns and XIDs are simply not counted.
pub fn watch_xids(
    nvml: Arc<Nvml>,
    counts: Arc<XidCounts>,
    devices: u32,
    shutdown: CancellationToken,
) {
    let mut registered: Vec<u32> = Vec::new();
    let mut set = match nvml.create_event_set() {
        Ok(set) => set,
        Err(e) => {
            warn!(error = %e, "NVML event sets unavailable; XID errors will not be counted.");
            return;
        }
    };
    for index in 0..devices {
        let Ok(device) = nvml.device_by_index(index) else {
            warn!(gpu = index, "GPU does not answer; its XID errors will not be counted.");
            continue;
        };
        match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(s) => {
                set = s;
                registered.push(index);
            }
            Err(e) => {
                warn!(gpu = index, error = %e.error, "GPU cannot report XID events; they will not be counted.");
                // A failed registration frees the set: build it again for the devices so far.
                let Some(rebuilt) = rebuild_set(&nvml, &registered) else {
                    return;
                };
                set = rebuilt;
            }
        }
    }
    if registered.is_empty() {
        return;
    }
    let wait_ms = u32::try_from(XID_WAIT.as_millis()).unwrap_or(500);
    while !shutdown.is_cancelled() {
        match set.wait(wait_ms) {
            Ok(event) => {
                if let Some(xid) = event.event_data {
                    let code = match xid {
                        XidError::Value(v) => v,
                        XidError::Unknown => XID_UNKNOWN,
                    };
                    match event.device.index() {
                        Ok(index) => {
                            warn!(gpu = index, xid = code, "GPU reported an XID error.");
                            counts.add(index, code);
                        }
                        Err(e) => {
                            warn!(xid = code, error = %e, "XID error from an unidentifiable GPU.")
                        }
                    }
                }
            }
            Err(NvmlError::Timeout) => {}
            Err(_) => {
                // A lost GPU makes every wait fail at once; do not spin.
                std::thread::sleep(XID_WAIT);
            }
        }
    }
}

fn rebuild_set<'n>(nvml: &'n Nvml, indices: &[u32]) -> Option<nvml_wrapper::EventSet<'n>> {
    let mut set = nvml.create_event_set().ok()?;
    for index in indices {
        let device = nvml.device_by_index(*index).ok()?;
        set = device.register_events(EventTypes::CRITICAL_XID_ERROR, set).ok()?;
    }
    Some(set)
}
