//! [`Gpu`] over the real NVML (`nvml-wrapper`, which opens `libnvidia-ml.so.1` at run time).
//! The only file of the lab that calls NVML.

use nvml_wrapper::enum_wrappers::device::{Clock, ClockId, TemperatureSensor};
use nvml_wrapper::enums::device::{GpuLockedClocksSetting, UsedGpuMemory};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::gpm::GpmMetricResult;
use nvml_wrapper::{Device, GpmSample, Nvml};

use crate::backend::{
    Clocks, DeviceStatus, Gpu, GpuError, GpuProcess, Probe, ProbeReading, Sample, SystemInfo,
};
use crate::throttle;

pub struct NvmlGpu {
    nvml: Nvml,
}

fn err(what: &str, e: NvmlError) -> GpuError {
    match e {
        NvmlError::NoPermission => GpuError::NoPermission(format!("NVML {what}")),
        NvmlError::NotSupported => GpuError::NotSupported(format!("NVML {what}")),
        e => GpuError::Other(format!("NVML {what}: {e}")),
    }
}

impl NvmlGpu {
    /// Opens NVML; [`GpuError::Unavailable`] when there is no driver or library.
    pub fn open() -> Result<Self, GpuError> {
        match Nvml::init() {
            Ok(nvml) => Ok(Self { nvml }),
            Err(e) => Err(GpuError::Unavailable(match e {
                NvmlError::LibloadingError(e) => format!("cannot load libnvidia-ml.so.1: {e}"),
                e => format!("NVML init: {e}"),
            })),
        }
    }

    fn device(&self, index: u32) -> Result<Device<'_>, GpuError> {
        let count = self
            .nvml
            .device_count()
            .map_err(|e| err("device count", e))?;
        if index >= count {
            return Err(GpuError::NoDevice(index, count));
        }
        self.nvml
            .device_by_index(index)
            .map_err(|e| err("device handle", e))
    }
}

fn used(p: nvml_wrapper::struct_wrappers::device::ProcessInfo) -> GpuProcess {
    GpuProcess {
        pid: p.pid,
        used_bytes: match p.used_gpu_memory {
            UsedGpuMemory::Used(b) => Some(b),
            UsedGpuMemory::Unavailable => None,
        },
    }
}

impl Gpu for NvmlGpu {
    fn system(&self) -> Result<SystemInfo, GpuError> {
        let cuda = self.nvml.sys_cuda_driver_version().ok().map(|v| {
            format!(
                "{}.{}",
                nvml_wrapper::cuda_driver_version_major(v),
                nvml_wrapper::cuda_driver_version_minor(v)
            )
        });
        Ok(SystemInfo {
            source: format!(
                "NVML {}",
                self.nvml
                    .sys_nvml_version()
                    .unwrap_or_else(|_| "unknown".into())
            ),
            driver_version: self.nvml.sys_driver_version().ok(),
            cuda_driver_version: cuda,
            device_count: self
                .nvml
                .device_count()
                .map_err(|e| err("device count", e))?,
        })
    }

    fn status(&self, index: u32) -> Result<DeviceStatus, GpuError> {
        let d = self.device(index)?;
        let arch = d.architecture().ok();
        let reasons = d.current_throttle_reasons().ok().map(|r| r.bits());
        let mem = d.memory_info().ok();
        Ok(DeviceStatus {
            index,
            name: d.name().map_err(|e| err("device name", e))?,
            uuid: d.uuid().unwrap_or_else(|_| "unknown".into()),
            architecture: arch.as_ref().map(|a| a.to_string()),
            compute_capability: d
                .cuda_compute_capability()
                .ok()
                .map(|c| format!("{}.{}", c.major, c.minor)),
            memory_total_bytes: mem.as_ref().map(|m| m.total),
            memory_used_bytes: mem.as_ref().map(|m| m.used),
            clocks: Clocks {
                sm_mhz: d.clock(Clock::SM, ClockId::Current).ok(),
                mem_mhz: d.clock(Clock::Memory, ClockId::Current).ok(),
                sm_app_mhz: d.clock(Clock::SM, ClockId::TargetAppClock).ok(),
                mem_app_mhz: d.clock(Clock::Memory, ClockId::TargetAppClock).ok(),
                sm_default_mhz: d.clock(Clock::SM, ClockId::DefaultAppClock).ok(),
                mem_default_mhz: d.clock(Clock::Memory, ClockId::DefaultAppClock).ok(),
                sm_max_mhz: d.max_clock_info(Clock::SM).ok(),
                mem_max_mhz: d.max_clock_info(Clock::Memory).ok(),
            },
            persistence_mode: d.is_in_persistent_mode().ok(),
            power_limit_mw: d.enforced_power_limit().ok(),
            default_power_limit_mw: d.power_management_limit_default().ok(),
            temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
            throttle_reasons: reasons.map(throttle::names).unwrap_or_default(),
            user_defined_clocks_active: reasons.map(|b| b & throttle::USER_DEFINED_CLOCKS != 0),
            memory_lock_supported: arch.as_ref().is_some_and(|a| {
                !matches!(
                    a,
                    nvml_wrapper::enums::device::DeviceArchitecture::Kepler
                        | nvml_wrapper::enums::device::DeviceArchitecture::Maxwell
                        | nvml_wrapper::enums::device::DeviceArchitecture::Pascal
                        | nvml_wrapper::enums::device::DeviceArchitecture::Volta
                        | nvml_wrapper::enums::device::DeviceArchitecture::Turing
                        | nvml_wrapper::enums::device::DeviceArchitecture::Unknown
                )
            }),
        })
    }

    fn probe<'a>(&'a self, index: u32) -> Result<Box<dyn Probe + 'a>, GpuError> {
        let device = self.device(index)?;
        let gpm = device.gpm_support().unwrap_or(false);
        let prev = if gpm { device.gpm_sample().ok() } else { None };
        Ok(Box::new(NvmlProbe {
            nvml: &self.nvml,
            device,
            prev_gpm: prev,
        }))
    }

    fn lock_sm_clocks(&self, index: u32, min_mhz: u32, max_mhz: u32) -> Result<(), GpuError> {
        let mut d = self.device(index)?;
        d.set_gpu_locked_clocks(GpuLockedClocksSetting::Numeric {
            min_clock_mhz: min_mhz,
            max_clock_mhz: max_mhz,
        })
        .map_err(|e| err("SetGpuLockedClocks", e))
    }

    fn reset_sm_clocks(&self, index: u32) -> Result<(), GpuError> {
        let mut d = self.device(index)?;
        d.reset_gpu_locked_clocks()
            .map_err(|e| err("ResetGpuLockedClocks", e))
    }

    fn lock_mem_clocks(&self, index: u32, min_mhz: u32, max_mhz: u32) -> Result<(), GpuError> {
        let mut d = self.device(index)?;
        d.set_mem_locked_clocks(min_mhz, max_mhz)
            .map_err(|e| err("SetMemoryLockedClocks", e))
    }

    fn reset_mem_clocks(&self, index: u32) -> Result<(), GpuError> {
        let mut d = self.device(index)?;
        d.reset_mem_locked_clocks()
            .map_err(|e| err("ResetMemoryLockedClocks", e))
    }
}

struct NvmlProbe<'a> {
    nvml: &'a Nvml,
    device: Device<'a>,
    prev_gpm: Option<GpmSample<'a>>,
}

impl Probe for NvmlProbe<'_> {
    fn read(&mut self) -> ProbeReading {
        let d = &self.device;
        let util = d.utilization_rates().ok();
        let mut sample = Sample {
            t_unix_ns: crate::now_unix_ns(),
            gpu_util_pct: util.as_ref().map(|u| u.gpu),
            mem_util_pct: util.as_ref().map(|u| u.memory),
            sm_mhz: d.clock(Clock::SM, ClockId::Current).ok(),
            mem_mhz: d.clock(Clock::Memory, ClockId::Current).ok(),
            power_mw: d.power_usage().ok(),
            energy_mj: d.total_energy_consumption().ok(),
            temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
            throttle_bits: d.current_throttle_reasons().ok().map(|r| r.bits()),
            used_bytes: d.memory_info().ok().map(|m| m.used),
            ..Sample::default()
        };
        if let Some(prev) = self.prev_gpm.take() {
            if let Ok(cur) = d.gpm_sample() {
                use nvml_wrapper::enums::gpm::GpmMetricId;
                if let Ok(results) = nvml_wrapper::gpm::gpm_metrics_get(
                    self.nvml,
                    &prev,
                    &cur,
                    &[GpmMetricId::DramBwUtil, GpmMetricId::SmUtil],
                ) {
                    let value = |r: &Result<GpmMetricResult, NvmlError>| {
                        r.as_ref().ok().map(|m| m.value).filter(|v| v.is_finite())
                    };
                    sample.dram_bw_util_pct = results.first().and_then(value);
                    sample.sm_util_pct = results.get(1).and_then(value);
                }
                let _ = prev.free();
                self.prev_gpm = Some(cur);
            }
        }
        let mut processes: Vec<GpuProcess> = d
            .running_compute_processes()
            .map(|v| v.into_iter().map(used).collect())
            .unwrap_or_default();
        if let Ok(g) = d.running_graphics_processes() {
            processes.extend(g.into_iter().map(used));
        }
        ProbeReading { sample, processes }
    }
}
