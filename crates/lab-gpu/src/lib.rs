//! The lab's GPU side, and the only place NVML is used: device state for `gpu status` and
//! provenance ([`GpuState`]), a telemetry [`sampler`] run around each target, what the samples
//! say about a time window ([`analysis`]: energy, throttling, utilization, memory), and clock
//! locking as a guard ([`lock`]). NVML is loaded at run time, so all of it builds and tests on
//! machines without a GPU; [`fake::FakeGpu`] stands in for a device in tests
//! (`LAB_GPU_FAKE=<file>`), and says so in everything it produces.
//!
//! Depends on no other lab crate.

pub mod analysis;
pub mod backend;
pub mod fake;
pub mod lock;
pub mod nvml;
pub mod sampler;
pub mod throttle;

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use backend::{DeviceStatus, Gpu, GpuError, Sample, SystemInfo};

/// Nanoseconds since the Unix epoch: the clock the sampler and the engines' iteration stamps share.
pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The GPU interface of this machine: the fake device when `LAB_GPU_FAKE` names one, else NVML.
pub fn open() -> Result<Box<dyn Gpu>, GpuError> {
    if let Some(p) = std::env::var_os("LAB_GPU_FAKE") {
        return Ok(Box::new(fake::FakeGpu::open(Path::new(&p))?));
    }
    Ok(Box::new(nvml::NvmlGpu::open()?))
}

/// Every device's state: `cargo xtask gpu status`, and each run's provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuState {
    /// Why nothing could be read (no NVML here): the one line `gpu status` prints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceStatus>,
    /// Devices that could not be read, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl GpuState {
    pub fn read(gpu: &dyn Gpu) -> Self {
        let system = match gpu.system() {
            Ok(s) => s,
            Err(e) => {
                return Self {
                    unavailable: Some(e.to_string()),
                    system: None,
                    devices: Vec::new(),
                    errors: Vec::new(),
                }
            }
        };
        let mut devices = Vec::new();
        let mut errors = Vec::new();
        for i in 0..system.device_count {
            match gpu.status(i) {
                Ok(d) => devices.push(d),
                Err(e) => errors.push(format!("GPU {i}: {e}")),
            }
        }
        Self {
            unavailable: None,
            system: Some(system),
            devices,
            errors,
        }
    }

    /// [`open`] and [`GpuState::read`]; no NVML is a state, not an error.
    pub fn collect() -> Self {
        match open() {
            Ok(gpu) => Self::read(gpu.as_ref()),
            Err(e) => Self {
                unavailable: Some(e.to_string()),
                system: None,
                devices: Vec::new(),
                errors: Vec::new(),
            },
        }
    }

    /// Human-readable, for `gpu status`.
    pub fn render(&self) -> String {
        if let Some(why) = &self.unavailable {
            return format!("no GPU state: {why}\n");
        }
        let mut out = String::new();
        if let Some(s) = &self.system {
            out += &format!(
                "{}; driver {}; CUDA {}; {} device(s)\n",
                s.source,
                s.driver_version.as_deref().unwrap_or("unknown"),
                s.cuda_driver_version.as_deref().unwrap_or("unknown"),
                s.device_count
            );
        }
        let mhz = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
        for d in &self.devices {
            let c = &d.clocks;
            out += &format!(
                "GPU {} {} ({}, {}, cc {}), memory {} of {} MiB used\n",
                d.index,
                d.name,
                d.uuid,
                d.architecture.as_deref().unwrap_or("?"),
                d.compute_capability.as_deref().unwrap_or("?"),
                d.memory_used_bytes
                    .map_or("?".into(), |b| (b >> 20).to_string()),
                d.memory_total_bytes
                    .map_or("?".into(), |b| (b >> 20).to_string()),
            );
            out += &format!(
                "  clocks MHz: SM {} (applications {}, default {}, max {}); memory {} (applications {}, default {}, max {})\n",
                mhz(c.sm_mhz), mhz(c.sm_app_mhz), mhz(c.sm_default_mhz), mhz(c.sm_max_mhz),
                mhz(c.mem_mhz), mhz(c.mem_app_mhz), mhz(c.mem_default_mhz), mhz(c.mem_max_mhz),
            );
            out += &format!(
                "  persistence mode {}; power limit {} W (default {} W); {} °C\n",
                match d.persistence_mode {
                    Some(true) => "on",
                    Some(false) => "off",
                    None => "?",
                },
                d.power_limit_mw
                    .map_or("?".into(), |w| format!("{:.0}", f64::from(w) / 1e3)),
                d.default_power_limit_mw
                    .map_or("?".into(), |w| format!("{:.0}", f64::from(w) / 1e3)),
                mhz(d.temperature_c),
            );
            out += &format!(
                "  clock event reasons: {}; locked: {}\n",
                if d.throttle_reasons.is_empty() {
                    "none".to_string()
                } else {
                    d.throttle_reasons.join(", ")
                },
                match d.user_defined_clocks_active {
                    Some(true) => "yes (user-defined clocks are limiting)",
                    Some(false) => "no user-defined clock limit active",
                    None => "unknown",
                }
            );
        }
        for e in &self.errors {
            out += &format!("{e}\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeDevice, FakeGpu};

    #[test]
    fn state_of_a_device_renders_every_field_gpu_status_promises() {
        let path = std::env::temp_dir().join(format!("lab-gpu-state-{}.json", std::process::id()));
        let gpu = FakeGpu::single(&path, FakeDevice::h100(false)).unwrap();
        let st = GpuState::read(&gpu);
        let text = st.render();
        let _ = std::fs::remove_file(&path);
        for want in [
            "fake device (",
            "driver fake; CUDA 12.8; 1 device(s)",
            "GPU 0 Fake H100 80GB HBM3 (GPU-fake-0, Hopper, cc 9.0)",
            "SM 345 (applications 1755, default 1755, max 1980)",
            "persistence mode on; power limit 700 W",
            "clock event reasons: none; locked: no user-defined clock limit active",
        ] {
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
        // It round-trips as provenance does.
        let back: GpuState = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn without_nvml_the_state_is_one_line() {
        if Path::new("/dev/nvidiactl").exists() {
            return; // a GPU machine: NVML may be there
        }
        let e = nvml::NvmlGpu::open()
            .err()
            .expect("no NVML without a driver");
        assert!(matches!(e, GpuError::Unavailable(_)), "{e:?}");
        let st = GpuState {
            unavailable: Some(e.to_string()),
            system: None,
            devices: Vec::new(),
            errors: Vec::new(),
        };
        let text = st.render();
        assert!(
            text.starts_with("no GPU state: no NVML on this machine ("),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1);
    }
}
