//! The one seam between the lab and a GPU management library: [`Gpu`] (NVML in
//! [`crate::nvml::NvmlGpu`], a file-backed fake in [`crate::fake::FakeGpu`]) and the plain data it
//! returns. Every field a device may not support is an `Option` (`None`: not supported or not
//! readable there), never a made-up zero.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a GPU call failed, in the categories the lab acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// No NVML here (no driver, no `libnvidia-ml.so.1`): not an error on a CPU machine.
    #[error("no NVML on this machine ({0})")]
    Unavailable(String),
    /// The call needs root (NVML's device commands all do).
    #[error("no permission ({0}): locking GPU clocks needs root")]
    NoPermission(String),
    /// The device does not support the call (e.g. memory clock locks before Ampere).
    #[error("not supported by this device ({0})")]
    NotSupported(String),
    #[error("no GPU with index {0} (this machine has {1})")]
    NoDevice(u32, u32),
    #[error("{0}")]
    Other(String),
}

/// Driver-wide facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemInfo {
    /// Where the numbers come from: `NVML <version>`, or `fake device (<file>)` in tests.
    pub source: String,
    pub driver_version: Option<String>,
    /// The CUDA version the driver supports (`12.8`).
    pub cuda_driver_version: Option<String>,
    pub device_count: u32,
}

/// Clocks of one device in MHz.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Clocks {
    pub sm_mhz: Option<u32>,
    pub mem_mhz: Option<u32>,
    /// Applications clocks now in force (what the GPU boosts from when nothing is locked).
    pub sm_app_mhz: Option<u32>,
    pub mem_app_mhz: Option<u32>,
    /// Default applications clocks (NVML `APP_CLOCK_DEFAULT`; what `--lock-clocks base` locks to).
    pub sm_default_mhz: Option<u32>,
    pub mem_default_mhz: Option<u32>,
    /// Highest clocks the device supports (what `--lock-clocks max` locks to).
    pub sm_max_mhz: Option<u32>,
    pub mem_max_mhz: Option<u32>,
}

/// What a device is and the state it is in: `gpu status`, and every result's provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceStatus {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    /// `Hopper`, `Ampere`, … (NVML's architecture).
    pub architecture: Option<String>,
    /// CUDA compute capability, `9.0`.
    pub compute_capability: Option<String>,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub clocks: Clocks,
    pub persistence_mode: Option<bool>,
    pub power_limit_mw: Option<u32>,
    pub default_power_limit_mw: Option<u32>,
    pub temperature_c: Option<u32>,
    /// Current clock event ("throttle") reasons, NVML names in snake case.
    pub throttle_reasons: Vec<String>,
    /// Whether NVML says user-defined (locked) clocks are limiting the device right now. NVML
    /// cannot read a locked range back, so this is the only outside view of a lock; the lab's
    /// own locks are also in its state file.
    pub user_defined_clocks_active: Option<bool>,
    /// Whether the device supports memory clock locks (Ampere and newer).
    pub memory_lock_supported: bool,
}

/// One reading of one device by the sampler. Times are Unix nanoseconds (the clock engines
/// stamp their iterations with).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub t_unix_ns: u64,
    /// NVML utilization: percent of the last sample period (1/6 s to 1 s, by product) during
    /// which a kernel ran / device memory was read or written. Coarser than the sampling period.
    pub gpu_util_pct: Option<u32>,
    pub mem_util_pct: Option<u32>,
    pub sm_mhz: Option<u32>,
    pub mem_mhz: Option<u32>,
    pub power_mw: Option<u32>,
    /// NVML's energy counter (mJ since the driver loaded; Volta and newer).
    pub energy_mj: Option<u64>,
    pub temperature_c: Option<u32>,
    /// Clock event reasons as NVML's bit mask ([`crate::throttle`] names them).
    pub throttle_bits: Option<u64>,
    pub used_bytes: Option<u64>,
    /// GPU memory of the processes that were not on the device when sampling began (the
    /// engine's process, in its container or not), summed.
    pub engine_bytes: Option<u64>,
    /// GPM (Hopper and newer): DRAM bandwidth utilization in percent over the last period.
    pub dram_bw_util_pct: Option<f64>,
    /// GPM: SM utilization in percent over the last period.
    pub sm_util_pct: Option<f64>,
}

/// A process using a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_bytes: Option<u64>,
}

/// Reads one device repeatedly (holds what consecutive readings need, e.g. the previous GPM
/// sample). `read` never fails as a whole: what could not be read is `None`.
pub trait Probe {
    fn read(&mut self) -> ProbeReading;
}

/// A [`Sample`] without the engine attribution, plus the processes on the device.
#[derive(Debug, Clone, Default)]
pub struct ProbeReading {
    pub sample: Sample,
    pub processes: Vec<GpuProcess>,
}

/// The GPU management interface the lab uses. Setters need root on real devices.
pub trait Gpu: Send + Sync {
    fn system(&self) -> Result<SystemInfo, GpuError>;
    fn status(&self, index: u32) -> Result<DeviceStatus, GpuError>;
    fn probe<'a>(&'a self, index: u32) -> Result<Box<dyn Probe + 'a>, GpuError>;
    /// Locks SM clocks to `[min, max]` MHz (NVML `SetGpuLockedClocks`).
    fn lock_sm_clocks(&self, index: u32, min_mhz: u32, max_mhz: u32) -> Result<(), GpuError>;
    fn reset_sm_clocks(&self, index: u32) -> Result<(), GpuError>;
    /// Locks memory clocks (Ampere and newer; NVML `SetMemoryLockedClocks`).
    fn lock_mem_clocks(&self, index: u32, min_mhz: u32, max_mhz: u32) -> Result<(), GpuError>;
    fn reset_mem_clocks(&self, index: u32) -> Result<(), GpuError>;
}
