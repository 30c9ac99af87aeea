//! A fake `libnvidia-ml.so` for tests and benchmarks on machines without a GPU.
//!
//! It exports exactly the NVML C functions stoker-agent calls through nvml-wrapper, and answers
//! them from a JSON script named by the `FAKE_NVML_SCRIPT` environment variable:
//!
//! ```json
//! {
//!   "driver_loaded": true,
//!   "driver_version": "550.54.15",
//!   "devices": [{
//!     "uuid": "GPU-0", "name": "NVIDIA H100 80GB HBM3",
//!     "not_supported": ["ecc", "encoder_utilization"],
//!     "lost_after_s": 2.5,
//!     "xid_events": [{"at_s": 0.5, "xid": 79}],
//!     "readings": [{"at_s": 0, "gpu_util": 40, "memory_used": 1024, "processes": [{"pid": 7, "used_memory": 512, "sm_util": 30}]}]
//!   }]
//! }
//! ```
//!
//! Time is measured from `nvmlInit_v2`. The reading in force is the last one whose `at_s` has
//! passed. A field listed in `not_supported` answers `NVML_ERROR_NOT_SUPPORTED`; after
//! `lost_after_s` every call on the device answers `NVML_ERROR_GPU_IS_LOST`;
//! `"driver_loaded": false` (or no script at all) makes `nvmlInit_v2` answer
//! `NVML_ERROR_DRIVER_NOT_LOADED`. Field names for `not_supported`: `utilization`,
//! `encoder_utilization`, `decoder_utilization`, `memory`, `power`, `power_limit`, `energy`,
//! `temperature`, `sm_clock`, `throttle_reasons`, `pcie_throughput`, `ecc`, `processes`,
//! `process_utilization`, `events`.
//!
//! `unsafe` is allowed in this crate only (see Cargo.toml): a C ABI writes through raw pointers.

use std::collections::HashSet;
use std::ffi::{c_char, c_uint, c_ulonglong};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nvml_wrapper_sys::bindings::{
    nvmlDevice_st, nvmlDevice_t, nvmlEventData_t, nvmlEventSet_st, nvmlEventSet_t, nvmlMemory_v2_t,
    nvmlProcessInfo_t, nvmlProcessUtilizationSample_t, nvmlReturn_t, nvmlUtilization_t,
};
use serde::Deserialize;

const SUCCESS: nvmlReturn_t = 0;
const UNINITIALIZED: nvmlReturn_t = 1;
const INVALID_ARGUMENT: nvmlReturn_t = 2;
const NOT_SUPPORTED: nvmlReturn_t = 3;
const NOT_FOUND: nvmlReturn_t = 6;
const INSUFFICIENT_SIZE: nvmlReturn_t = 7;
const DRIVER_NOT_LOADED: nvmlReturn_t = 9;
const TIMEOUT: nvmlReturn_t = 10;
const GPU_IS_LOST: nvmlReturn_t = 15;
const UNKNOWN: nvmlReturn_t = 999;

/// NVML's event type bit for critical XID errors.
const EVENT_CRITICAL_XID: u64 = 0x8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Script {
    #[serde(default = "yes")]
    driver_loaded: bool,
    #[serde(default = "default_driver")]
    driver_version: String,
    #[serde(default)]
    devices: Vec<Device>,
}

fn yes() -> bool {
    true
}

fn default_driver() -> String {
    "550.54.15".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Device {
    uuid: String,
    name: String,
    #[serde(default)]
    not_supported: HashSet<String>,
    #[serde(default)]
    lost_after_s: Option<f64>,
    #[serde(default)]
    xid_events: Vec<XidEvent>,
    #[serde(default)]
    readings: Vec<Reading>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct XidEvent {
    at_s: f64,
    xid: u64,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
struct Reading {
    at_s: f64,
    gpu_util: u32,
    mem_util: u32,
    enc_util: u32,
    dec_util: u32,
    memory_used: u64,
    memory_total: u64,
    power_mw: u32,
    power_limit_mw: u32,
    energy_mj: u64,
    temperature_c: u32,
    sm_clock_mhz: u32,
    throttle_reasons: u64,
    pcie_tx_kbps: u32,
    pcie_rx_kbps: u32,
    ecc_corrected: u64,
    ecc_uncorrected: u64,
    processes: Vec<Process>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
struct Process {
    pid: u32,
    used_memory: u64,
    sm_util: u32,
    mem_util: u32,
}

#[derive(Debug)]
struct EventSet {
    devices: Vec<u32>,
}

#[derive(Debug)]
struct Fake {
    script: Script,
    started: Instant,
    sets: Vec<Option<EventSet>>,
    /// (device, index into its xid_events) already delivered.
    delivered: HashSet<(u32, usize)>,
}

static FAKE: Mutex<Option<Fake>> = Mutex::new(None);

fn with_fake<T>(f: impl FnOnce(&mut Fake) -> Result<T, nvmlReturn_t>) -> Result<T, nvmlReturn_t> {
    let mut guard = FAKE.lock().unwrap_or_else(|p| p.into_inner());
    match guard.as_mut() {
        Some(fake) => f(fake),
        None => Err(UNINITIALIZED),
    }
}

fn code(r: Result<(), nvmlReturn_t>) -> nvmlReturn_t {
    match r {
        Ok(()) => SUCCESS,
        Err(c) => c,
    }
}

fn handle_of(index: u32) -> nvmlDevice_t {
    (index as usize + 1) as *mut nvmlDevice_st
}

fn index_of(handle: nvmlDevice_t) -> Option<u32> {
    (handle as usize).checked_sub(1).and_then(|i| u32::try_from(i).ok())
}

impl Fake {
    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The device behind `handle`, if it still answers and supports `field`.
    fn device(&self, handle: nvmlDevice_t, field: &str) -> Result<(u32, &Device), nvmlReturn_t> {
        let index = index_of(handle).ok_or(INVALID_ARGUMENT)?;
        let dev = self.script.devices.get(index as usize).ok_or(INVALID_ARGUMENT)?;
        if dev.lost_after_s.is_some_and(|t| self.elapsed() >= t) {
            return Err(GPU_IS_LOST);
        }
        if dev.not_supported.contains(field) {
            return Err(NOT_SUPPORTED);
        }
        Ok((index, dev))
    }

    fn reading(&self, handle: nvmlDevice_t, field: &str) -> Result<Reading, nvmlReturn_t> {
        let now = self.elapsed();
        let (_, dev) = self.device(handle, field)?;
        Ok(dev
            .readings
            .iter()
            .rfind(|r| r.at_s <= now)
            .or_else(|| dev.readings.first())
            .cloned()
            .unwrap_or_default())
    }
}

unsafe fn put<T>(out: *mut T, value: T) -> Result<(), nvmlReturn_t> {
    if out.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    unsafe { out.write(value) };
    Ok(())
}

unsafe fn put_str(buf: *mut c_char, len: c_uint, value: &str) -> Result<(), nvmlReturn_t> {
    if buf.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let bytes = value.as_bytes();
    if bytes.len() + 1 > len as usize {
        return Err(INSUFFICIENT_SIZE);
    }
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, bytes.len());
        buf.add(bytes.len()).write(0);
    }
    Ok(())
}

/// Start the fake: read the script named by `FAKE_NVML_SCRIPT`.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    let Some(path) = std::env::var_os("FAKE_NVML_SCRIPT") else {
        return DRIVER_NOT_LOADED;
    };
    let script: Script = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake-nvml: cannot use script {}: {e}", path.to_string_lossy());
            return UNKNOWN;
        }
    };
    if !script.driver_loaded {
        return DRIVER_NOT_LOADED;
    }
    let mut guard = FAKE.lock().unwrap_or_else(|p| p.into_inner());
    *guard =
        Some(Fake { script, started: Instant::now(), sets: Vec::new(), delivered: HashSet::new() });
    SUCCESS
}

/// Stop the fake.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    let mut guard = FAKE.lock().unwrap_or_else(|p| p.into_inner());
    *guard = None;
    SUCCESS
}

/// A static description of a return code.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    let text: &'static [u8] = match result {
        SUCCESS => b"Success\0",
        UNINITIALIZED => b"Uninitialized\0",
        INVALID_ARGUMENT => b"Invalid Argument\0",
        NOT_SUPPORTED => b"Not Supported\0",
        NOT_FOUND => b"Not Found\0",
        INSUFFICIENT_SIZE => b"Insufficient Size\0",
        DRIVER_NOT_LOADED => b"Driver Not Loaded\0",
        TIMEOUT => b"Timeout\0",
        GPU_IS_LOST => b"GPU is lost\0",
        _ => b"Unknown Error\0",
    };
    text.as_ptr().cast()
}

/// The scripted driver version.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(buf: *mut c_char, len: c_uint) -> nvmlReturn_t {
    code(with_fake(|f| unsafe { put_str(buf, len, &f.script.driver_version) }))
}

/// The number of scripted devices.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> nvmlReturn_t {
    code(with_fake(|f| unsafe { put(count, u32::try_from(f.script.devices.len()).unwrap_or(0)) }))
}

/// A handle for device `index` (the index plus one, as a pointer).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        if index as usize >= f.script.devices.len() {
            return Err(INVALID_ARGUMENT);
        }
        unsafe { put(device, handle_of(index)) }
    }))
}

/// The scripted UUID.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    dev: nvmlDevice_t,
    buf: *mut c_char,
    len: c_uint,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let (_, d) = f.device(dev, "uuid")?;
        unsafe { put_str(buf, len, &d.uuid) }
    }))
}

/// The scripted model name.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(
    dev: nvmlDevice_t,
    buf: *mut c_char,
    len: c_uint,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let (_, d) = f.device(dev, "name")?;
        unsafe { put_str(buf, len, &d.name) }
    }))
}

/// The device's index.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(dev: nvmlDevice_t, index: *mut c_uint) -> nvmlReturn_t {
    code(with_fake(|f| {
        let (i, _) = f.device(dev, "index")?;
        unsafe { put(index, i) }
    }))
}

/// GPU and memory-controller utilisation, percent.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    dev: nvmlDevice_t,
    out: *mut nvmlUtilization_t,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "utilization")?;
        unsafe { put(out, nvmlUtilization_t { gpu: r.gpu_util, memory: r.mem_util }) }
    }))
}

/// Encoder utilisation, percent, over a 1 s period.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetEncoderUtilization(
    dev: nvmlDevice_t,
    util: *mut c_uint,
    period: *mut c_uint,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "encoder_utilization")?;
        unsafe {
            put(util, r.enc_util)?;
            put(period, 1_000_000)
        }
    }))
}

/// Decoder utilisation, percent, over a 1 s period.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetDecoderUtilization(
    dev: nvmlDevice_t,
    util: *mut c_uint,
    period: *mut c_uint,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "decoder_utilization")?;
        unsafe {
            put(util, r.dec_util)?;
            put(period, 1_000_000)
        }
    }))
}

/// Memory used and total, bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    dev: nvmlDevice_t,
    out: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "memory")?;
        if out.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        let version = unsafe { (*out).version };
        unsafe {
            put(
                out,
                nvmlMemory_v2_t {
                    version,
                    total: r.memory_total,
                    reserved: 0,
                    free: r.memory_total.saturating_sub(r.memory_used),
                    used: r.memory_used,
                },
            )
        }
    }))
}

/// Power draw, milliwatts.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(
    dev: nvmlDevice_t,
    mw: *mut c_uint,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "power")?;
        unsafe { put(mw, r.power_mw) }
    }))
}

/// Enforced power limit, milliwatts.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetEnforcedPowerLimit(
    dev: nvmlDevice_t,
    mw: *mut c_uint,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "power_limit")?;
        unsafe { put(mw, r.power_limit_mw) }
    }))
}

/// Energy since the driver loaded, millijoules.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEnergyConsumption(
    dev: nvmlDevice_t,
    mj: *mut c_ulonglong,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "energy")?;
        unsafe { put(mj, r.energy_mj) }
    }))
}

/// GPU temperature, °C (sensor 0 only).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    dev: nvmlDevice_t,
    sensor: c_uint,
    c: *mut c_uint,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "temperature")?;
        if sensor != 0 {
            return Err(INVALID_ARGUMENT);
        }
        unsafe { put(c, r.temperature_c) }
    }))
}

/// SM clock, MHz (clock type 1 only).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    dev: nvmlDevice_t,
    clock: c_uint,
    mhz: *mut c_uint,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "sm_clock")?;
        if clock != 1 {
            return Err(NOT_SUPPORTED);
        }
        unsafe { put(mhz, r.sm_clock_mhz) }
    }))
}

/// Throttle reasons bitmask.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksThrottleReasons(
    dev: nvmlDevice_t,
    bits: *mut c_ulonglong,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "throttle_reasons")?;
        unsafe { put(bits, r.throttle_reasons) }
    }))
}

/// PCIe throughput, KB/s; counter 0 = transmit, 1 = receive.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPcieThroughput(
    dev: nvmlDevice_t,
    counter: c_uint,
    kbs: *mut c_uint,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "pcie_throughput")?;
        let v = match counter {
            0 => r.pcie_tx_kbps,
            1 => r.pcie_rx_kbps,
            _ => return Err(INVALID_ARGUMENT),
        };
        unsafe { put(kbs, v) }
    }))
}

/// ECC error totals; error type 0 = corrected, 1 = uncorrected.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEccErrors(
    dev: nvmlDevice_t,
    error_type: c_uint,
    _counter: c_uint,
    count: *mut c_ulonglong,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "ecc")?;
        let v = match error_type {
            0 => r.ecc_corrected,
            1 => r.ecc_uncorrected,
            _ => return Err(INVALID_ARGUMENT),
        };
        unsafe { put(count, v) }
    }))
}

/// Compute processes and their GPU memory; a null buffer asks for the count.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    dev: nvmlDevice_t,
    count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "processes")?;
        if count.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        let n = r.processes.len();
        let room = unsafe { *count } as usize;
        unsafe { count.write(u32::try_from(n).unwrap_or(0)) };
        if infos.is_null() || room < n {
            return if n == 0 { Ok(()) } else { Err(INSUFFICIENT_SIZE) };
        }
        for (i, p) in r.processes.iter().enumerate() {
            unsafe {
                infos.add(i).write(nvmlProcessInfo_t {
                    pid: p.pid,
                    usedGpuMemory: p.used_memory,
                    gpuInstanceId: u32::MAX,
                    computeInstanceId: u32::MAX,
                });
            }
        }
        Ok(())
    }))
}

/// Per-process utilisation samples newer than `last_seen` (µs); a null buffer asks for the count.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    dev: nvmlDevice_t,
    samples: *mut nvmlProcessUtilizationSample_t,
    count: *mut c_uint,
    last_seen: c_ulonglong,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let r = f.reading(dev, "process_utilization")?;
        if count.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        if r.processes.is_empty() || now_us <= last_seen {
            return Err(NOT_FOUND);
        }
        let n = r.processes.len();
        let room = unsafe { *count } as usize;
        unsafe { count.write(u32::try_from(n).unwrap_or(0)) };
        if samples.is_null() || room < n {
            return Err(INSUFFICIENT_SIZE);
        }
        for (i, p) in r.processes.iter().enumerate() {
            unsafe {
                samples.add(i).write(nvmlProcessUtilizationSample_t {
                    pid: p.pid,
                    timeStamp: now_us,
                    smUtil: p.sm_util,
                    memUtil: p.mem_util,
                    encUtil: 0,
                    decUtil: 0,
                });
            }
        }
        Ok(())
    }))
}

/// A new, empty event set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> nvmlReturn_t {
    code(with_fake(|f| {
        f.sets.push(Some(EventSet { devices: Vec::new() }));
        unsafe { put(set, f.sets.len() as *mut nvmlEventSet_st) }
    }))
}

fn set_index(set: nvmlEventSet_t) -> Option<usize> {
    (set as usize).checked_sub(1)
}

/// Register a device for XID events.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceRegisterEvents(
    dev: nvmlDevice_t,
    types: c_ulonglong,
    set: nvmlEventSet_t,
) -> nvmlReturn_t {
    code(with_fake(|f| {
        let (index, _) = f.device(dev, "events")?;
        if types & EVENT_CRITICAL_XID == 0 {
            return Err(NOT_SUPPORTED);
        }
        let set = set_index(set)
            .and_then(|i| f.sets.get_mut(i))
            .and_then(Option::as_mut)
            .ok_or(INVALID_ARGUMENT)?;
        set.devices.push(index);
        Ok(())
    }))
}

/// Free an event set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetFree(set: nvmlEventSet_t) -> nvmlReturn_t {
    code(with_fake(|f| {
        let slot = set_index(set).and_then(|i| f.sets.get_mut(i)).ok_or(INVALID_ARGUMENT)?;
        *slot = None;
        Ok(())
    }))
}

/// Deliver the next due XID event of a registered device, waiting up to `timeout_ms`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: nvmlEventSet_t,
    data: *mut nvmlEventData_t,
    timeout_ms: c_uint,
) -> nvmlReturn_t {
    if data.is_null() {
        return INVALID_ARGUMENT;
    }
    let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
    loop {
        let step = with_fake(|f| {
            let now = f.elapsed();
            let devices = set_index(set)
                .and_then(|i| f.sets.get(i))
                .and_then(Option::as_ref)
                .ok_or(INVALID_ARGUMENT)?
                .devices
                .clone();
            for index in devices {
                let Some(dev) = f.script.devices.get(index as usize) else {
                    continue;
                };
                for (k, ev) in dev.xid_events.iter().enumerate() {
                    if f.delivered.contains(&(index, k)) {
                        continue;
                    }
                    if ev.at_s <= now {
                        f.delivered.insert((index, k));
                        return Ok(Some(nvmlEventData_t {
                            device: handle_of(index),
                            eventType: EVENT_CRITICAL_XID,
                            eventData: ev.xid,
                            gpuInstanceId: u32::MAX,
                            computeInstanceId: u32::MAX,
                        }));
                    }
                }
            }
            Ok(None)
        });
        match step {
            Ok(Some(event)) => {
                unsafe { data.write(event) };
                return SUCCESS;
            }
            Ok(None) => {}
            Err(c) => return c,
        }
        let now = Instant::now();
        if now >= deadline {
            return TIMEOUT;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}
