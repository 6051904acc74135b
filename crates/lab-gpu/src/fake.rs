//! A fake GPU for testing the lab's GPU code on machines without one. Its whole state is one
//! JSON file ([`FakeFile`]), re-read and re-written on every call, so a test can inspect it
//! after the process that used it was interrupted or killed. Selected with `LAB_GPU_FAKE=<file>`
//! ([`crate::open`]); everything it produces says `fake device` in its source, so a fake number
//! can never pass for a measured one.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{
    Clocks, DeviceStatus, Gpu, GpuError, GpuProcess, Probe, ProbeReading, Sample, SystemInfo,
};
use crate::throttle;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeFile {
    pub devices: Vec<FakeDevice>,
    /// Every state-changing call, in order (`lock_sm 0 1980 1980`, `reset_sm 0`, …).
    #[serde(default)]
    pub log: Vec<String>,
    /// When set, each logged call says whether this file existed at that moment (tests use it
    /// to prove the lock's state file is written before any clock changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeDevice {
    pub name: String,
    pub uuid: String,
    pub architecture: String,
    pub compute_capability: String,
    pub memory_total_bytes: u64,
    pub sm_idle_mhz: u32,
    pub sm_default_mhz: u32,
    pub sm_max_mhz: u32,
    pub mem_default_mhz: u32,
    pub mem_max_mhz: u32,
    pub power_mw: u32,
    /// Whether the caller may change clocks (root); false answers `NoPermission`.
    #[serde(default)]
    pub root: bool,
    /// Locks are accepted but the clocks never move (a lock that does not take).
    #[serde(default)]
    pub ignores_locks: bool,
    #[serde(default)]
    pub locked_sm: Option<[u32; 2]>,
    #[serde(default)]
    pub locked_mem: Option<[u32; 2]>,
    /// Throttle reasons reported by every reading (names as in [`crate::throttle`]).
    #[serde(default)]
    pub throttle: Vec<String>,
    /// GPU memory of a process that appears after the first reading (the "engine").
    #[serde(default)]
    pub engine_bytes: Option<u64>,
}

impl FakeDevice {
    /// An H100-like device (numbers from its datasheet; nothing here is measured).
    pub fn h100(root: bool) -> Self {
        Self {
            name: "Fake H100 80GB HBM3".into(),
            uuid: "GPU-fake-0".into(),
            architecture: "Hopper".into(),
            compute_capability: "9.0".into(),
            memory_total_bytes: 80 << 30,
            sm_idle_mhz: 345,
            sm_default_mhz: 1755,
            sm_max_mhz: 1980,
            mem_default_mhz: 2619,
            mem_max_mhz: 2619,
            power_mw: 300_000,
            root,
            ignores_locks: false,
            locked_sm: None,
            locked_mem: None,
            throttle: Vec::new(),
            engine_bytes: Some(1 << 30),
        }
    }
}

pub struct FakeGpu {
    path: PathBuf,
    guard: Mutex<()>,
}

impl FakeGpu {
    pub fn open(path: &Path) -> Result<Self, GpuError> {
        let gpu = Self {
            path: path.to_path_buf(),
            guard: Mutex::new(()),
        };
        gpu.read()?;
        Ok(gpu)
    }

    /// A file with one device (no watched file) at `path`, opened.
    pub fn single(path: &Path, device: FakeDevice) -> Result<Self, GpuError> {
        Self::create(
            path,
            &FakeFile {
                devices: vec![device],
                log: Vec::new(),
                watch_file: None,
            },
        )
    }

    /// Writes `file` to `path` and opens it.
    pub fn create(path: &Path, file: &FakeFile) -> Result<Self, GpuError> {
        write(path, file)?;
        Self::open(path)
    }

    pub fn read(&self) -> Result<FakeFile, GpuError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            GpuError::Unavailable(format!("fake device {}: {e}", self.path.display()))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| GpuError::Other(format!("fake device {}: {e}", self.path.display())))
    }

    fn change(
        &self,
        index: u32,
        what: String,
        f: impl FnOnce(&mut FakeDevice) -> Result<(), GpuError>,
    ) -> Result<(), GpuError> {
        let _g = self.guard.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = self.read()?;
        let n = file.devices.len() as u32;
        let dev = file
            .devices
            .get_mut(index as usize)
            .ok_or(GpuError::NoDevice(index, n))?;
        if !dev.root {
            return Err(GpuError::NoPermission(format!("fake device: {what}")));
        }
        f(dev)?;
        let witness = match &file.watch_file {
            Some(p) if p.exists() => " [watched file present]",
            Some(_) => " [watched file absent]",
            None => "",
        };
        file.log.push(format!("{what}{witness}"));
        write(&self.path, &file)
    }

    fn device(&self, index: u32) -> Result<FakeDevice, GpuError> {
        let file = self.read()?;
        let n = file.devices.len() as u32;
        file.devices
            .get(index as usize)
            .cloned()
            .ok_or(GpuError::NoDevice(index, n))
    }
}

fn write(path: &Path, file: &FakeFile) -> Result<(), GpuError> {
    let tmp = path.with_extension("partial");
    let text = serde_json::to_string_pretty(file).expect("fake file serializes");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| GpuError::Other(format!("fake device {}: {e}", path.display())))
}

fn current_sm(d: &FakeDevice) -> u32 {
    match d.locked_sm {
        Some([_, max]) if !d.ignores_locks => max,
        _ => d.sm_idle_mhz,
    }
}

fn current_mem(d: &FakeDevice) -> u32 {
    match d.locked_mem {
        Some([_, max]) if !d.ignores_locks => max,
        _ => d.mem_default_mhz,
    }
}

fn reason_bits(d: &FakeDevice) -> Result<u64, GpuError> {
    let mut bits = throttle::bits(&d.throttle).map_err(GpuError::Other)?;
    if d.locked_sm.is_some() {
        bits |= throttle::USER_DEFINED_CLOCKS;
    }
    Ok(bits)
}

impl Gpu for FakeGpu {
    fn system(&self) -> Result<SystemInfo, GpuError> {
        let file = self.read()?;
        Ok(SystemInfo {
            source: format!("fake device ({})", self.path.display()),
            driver_version: Some("fake".into()),
            cuda_driver_version: Some("12.8".into()),
            device_count: file.devices.len() as u32,
        })
    }

    fn status(&self, index: u32) -> Result<DeviceStatus, GpuError> {
        let d = self.device(index)?;
        let bits = reason_bits(&d)?;
        Ok(DeviceStatus {
            index,
            name: d.name.clone(),
            uuid: d.uuid.clone(),
            architecture: Some(d.architecture.clone()),
            compute_capability: Some(d.compute_capability.clone()),
            memory_total_bytes: Some(d.memory_total_bytes),
            memory_used_bytes: Some(0),
            clocks: Clocks {
                sm_mhz: Some(current_sm(&d)),
                mem_mhz: Some(current_mem(&d)),
                sm_app_mhz: Some(d.sm_default_mhz),
                mem_app_mhz: Some(d.mem_default_mhz),
                sm_default_mhz: Some(d.sm_default_mhz),
                mem_default_mhz: Some(d.mem_default_mhz),
                sm_max_mhz: Some(d.sm_max_mhz),
                mem_max_mhz: Some(d.mem_max_mhz),
            },
            persistence_mode: Some(true),
            power_limit_mw: Some(700_000),
            default_power_limit_mw: Some(700_000),
            temperature_c: Some(40),
            throttle_reasons: throttle::names(bits),
            user_defined_clocks_active: Some(bits & throttle::USER_DEFINED_CLOCKS != 0),
            memory_lock_supported: !matches!(
                d.architecture.as_str(),
                "Kepler" | "Maxwell" | "Pascal" | "Volta" | "Turing"
            ),
        })
    }

    fn probe<'a>(&'a self, index: u32) -> Result<Box<dyn Probe + 'a>, GpuError> {
        self.device(index)?;
        Ok(Box::new(FakeProbe {
            gpu: self,
            index,
            start: Instant::now(),
            reads: 0,
        }))
    }

    fn lock_sm_clocks(&self, index: u32, min_mhz: u32, max_mhz: u32) -> Result<(), GpuError> {
        self.change(index, format!("lock_sm {index} {min_mhz} {max_mhz}"), |d| {
            d.locked_sm = Some([min_mhz, max_mhz]);
            Ok(())
        })
    }

    fn reset_sm_clocks(&self, index: u32) -> Result<(), GpuError> {
        self.change(index, format!("reset_sm {index}"), |d| {
            d.locked_sm = None;
            Ok(())
        })
    }

    fn lock_mem_clocks(&self, index: u32, min_mhz: u32, max_mhz: u32) -> Result<(), GpuError> {
        self.change(
            index,
            format!("lock_mem {index} {min_mhz} {max_mhz}"),
            |d| {
                if matches!(
                    d.architecture.as_str(),
                    "Kepler" | "Maxwell" | "Pascal" | "Volta" | "Turing"
                ) {
                    return Err(GpuError::NotSupported(
                        "fake device: memory clock lock".into(),
                    ));
                }
                d.locked_mem = Some([min_mhz, max_mhz]);
                Ok(())
            },
        )
    }

    fn reset_mem_clocks(&self, index: u32) -> Result<(), GpuError> {
        self.change(index, format!("reset_mem {index}"), |d| {
            d.locked_mem = None;
            Ok(())
        })
    }
}

struct FakeProbe<'a> {
    gpu: &'a FakeGpu,
    index: u32,
    start: Instant,
    reads: u32,
}

impl Probe for FakeProbe<'_> {
    fn read(&mut self) -> ProbeReading {
        let Ok(d) = self.gpu.device(self.index) else {
            return ProbeReading::default();
        };
        self.reads += 1;
        let t_unix_ns = crate::now_unix_ns();
        let elapsed_us = self.start.elapsed().as_micros() as u64;
        // The energy counter grows by power × time (mW × µs / 10^6 = mJ) from an arbitrary base.
        let energy_mj = 5_000_000 + u64::from(d.power_mw) * elapsed_us / 1_000_000;
        let engine = if self.reads > 1 { d.engine_bytes } else { None };
        ProbeReading {
            sample: Sample {
                t_unix_ns,
                gpu_util_pct: Some(if self.reads > 1 { 90 } else { 0 }),
                mem_util_pct: Some(if self.reads > 1 { 40 } else { 0 }),
                sm_mhz: Some(current_sm(&d)),
                mem_mhz: Some(current_mem(&d)),
                power_mw: Some(d.power_mw),
                energy_mj: Some(energy_mj),
                temperature_c: Some(40),
                throttle_bits: reason_bits(&d).ok(),
                used_bytes: Some((512 << 20) + engine.unwrap_or(0)),
                engine_bytes: None,
                dram_bw_util_pct: (d.architecture == "Hopper").then_some(55.0),
                sm_util_pct: (d.architecture == "Hopper").then_some(80.0),
            },
            processes: engine
                .map(|b| {
                    vec![GpuProcess {
                        pid: 4242,
                        used_bytes: Some(b),
                    }]
                })
                .unwrap_or_default(),
        }
    }
}
