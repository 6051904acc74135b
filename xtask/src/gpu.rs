//! `cargo xtask gpu status|reset`, and what a `bench` needs of the GPU side ([`GpuSetup`]):
//! restoring clocks a killed run left locked (before anything else), the clock lock (decided and
//! refused before any engine starts) and the telemetry sampler. NVML itself lives in `lab-gpu`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lab_gpu::lock::{self, ClockLock, ClockRequest, LockPlan};
use lab_gpu::{Gpu, GpuError, GpuState};
use lab_harness::telemetry::GpuSampling;
use lab_harness::BenchSpec;
use lab_protocol::Device;
use lab_results::provenance::Provenance;

#[derive(clap::Args)]
pub struct Flags {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Devices, driver, CUDA version, clocks (current/applications/default/max), persistence
    /// mode, power limit, temperature, clock event reasons and whether clocks are locked.
    Status {
        /// Print the state as JSON (as recorded in every result's provenance).
        #[arg(long)]
        json: bool,
    },
    /// Restore GPU clocks a run left locked (it was killed), from its state file.
    Reset {
        /// Also reset the locked SM and memory clocks of every GPU when there is no state file
        /// (clocks locked by hand or by another tool).
        #[arg(long)]
        all: bool,
    },
}

pub fn run(flags: Flags) -> Result<()> {
    match flags.cmd {
        Cmd::Status { json } => {
            let state = GpuState::collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&state)?);
            } else {
                print!("{}", state.render());
                let path = lock::default_state_path();
                if path.exists() {
                    println!(
                        "a clock-lock state file exists ({}): a run holds a lock, or was killed (`cargo xtask gpu reset`)",
                        path.display()
                    );
                }
            }
            Ok(())
        }
        Cmd::Reset { all } => {
            let gpu = lab_gpu::open()?;
            println!("{}", reset(gpu.as_ref(), &lock::default_state_path(), all)?);
            Ok(())
        }
    }
}

/// What `gpu reset` did, in one line.
pub fn reset(gpu: &dyn Gpu, state: &std::path::Path, all: bool) -> Result<String> {
    if let Some(done) = lock::restore_stale(gpu, state)? {
        return Ok(done);
    }
    if !all {
        return Ok(format!(
            "nothing to restore: no clock-lock state file at {} (`--all` resets every GPU's locked clocks anyway)",
            state.display()
        ));
    }
    let n = gpu.system()?.device_count;
    let mut done = Vec::new();
    for i in 0..n {
        gpu.reset_sm_clocks(i)
            .with_context(|| format!("GPU {i}: resetting locked SM clocks"))?;
        done.push(format!("GPU {i}: SM clocks unlocked"));
        match gpu.reset_mem_clocks(i) {
            Ok(()) => done.push(format!("GPU {i}: memory clocks unlocked")),
            Err(GpuError::NotSupported(_)) => {}
            Err(e) => return Err(e).with_context(|| format!("GPU {i}: resetting memory clocks")),
        }
    }
    Ok(done.join(", "))
}

/// The GPU side of one `bench`, decided before anything runs.
pub struct GpuSetup {
    gpu: Option<Box<dyn Gpu>>,
    state_path: PathBuf,
    /// Telemetry devices and period.
    telemetry: Option<(Vec<u32>, Duration)>,
    lock: Option<LockPlan>,
    dry_run: bool,
    cuda: bool,
}

impl GpuSetup {
    /// Restores a stale lock, then checks that what `spec` asks for can be done here: NVML for
    /// telemetry (`telemetry_required`: `--telemetry on`; otherwise a run without NVML goes on
    /// without it, saying so) and for the lock, and a lock this device supports. Nothing is
    /// locked yet.
    pub fn new(
        spec: &BenchSpec,
        dry_run: bool,
        telemetry_required: bool,
        open: impl Fn() -> Result<Box<dyn Gpu>, GpuError>,
        state_path: PathBuf,
    ) -> Result<Self> {
        let wants = spec.telemetry_period_ms.is_some() || spec.lock_clocks.is_some();
        let gpu = if wants || state_path.exists() {
            match open() {
                Ok(g) => Some(g),
                Err(e) => {
                    if state_path.exists() {
                        bail!(
                            "a clock-lock state file exists ({}) but the GPU cannot be reached to restore it: {e}",
                            state_path.display()
                        );
                    }
                    if spec.lock_clocks.is_some() {
                        bail!("--lock-clocks: {e}");
                    }
                    if telemetry_required {
                        bail!("--telemetry on: {e}");
                    }
                    eprintln!("GPU telemetry off: {e}");
                    None
                }
            }
        } else {
            None
        };
        if let Some(g) = &gpu {
            if let Some(done) = lock::restore_stale(g.as_ref(), &state_path)? {
                eprintln!("{done}");
            }
        }
        let devices = match (&spec.device, &gpu) {
            (Device::Cuda { ordinal }, _) => vec![*ordinal],
            (Device::Cpu, Some(g)) => (0..g.system()?.device_count).collect(),
            (Device::Cpu, None) => Vec::new(),
        };
        let lock = match (&spec.lock_clocks, &gpu) {
            (Some(req), Some(g)) => {
                if devices.is_empty() {
                    bail!("--lock-clocks: this machine has no GPU");
                }
                let req: ClockRequest = req.parse().map_err(anyhow::Error::msg)?;
                Some(lock::plan(g.as_ref(), &devices, req)?)
            }
            _ => None,
        };
        let telemetry = match (spec.telemetry_period_ms, &gpu) {
            (Some(ms), Some(_)) if !devices.is_empty() => {
                Some((devices, Duration::from_millis(ms)))
            }
            _ => None,
        };
        Ok(Self {
            gpu,
            state_path,
            telemetry,
            lock,
            dry_run,
            cuda: matches!(spec.device, Device::Cuda { .. }),
        })
    }

    /// Locks the clocks (the guard restores when dropped), or on `--dry-run` prints what it
    /// would set and restore. Returns before any engine starts; a refusal is an error.
    pub fn lock(&self) -> Result<Option<ClockLock<'_>>> {
        let (Some(plan), Some(gpu)) = (&self.lock, &self.gpu) else {
            return Ok(None);
        };
        if self.dry_run {
            eprint!(
                "--lock-clocks {} --dry-run: nothing is changed; it would:\n{}",
                plan.request,
                plan.describe()
            );
            return Ok(None);
        }
        let guard = ClockLock::acquire(gpu.as_ref(), plan.clone(), &self.state_path)?;
        eprintln!("GPU clocks locked ({})", plan.summary());
        Ok(Some(guard))
    }

    /// Records the clock state (after locking) in the run's provenance.
    pub fn record(&self, prov: &mut Provenance, lock: Option<&ClockLock>) {
        if let Some(g) = &self.gpu {
            prov.gpu = Some(GpuState::read(g.as_ref()));
            prov.host.gpus = lab_harness::provenance::gpu_rows(prov.gpu.as_ref().expect("set"));
        }
        prov.gpu_clocks = match (lock, &self.lock) {
            (Some(l), _) => Some(format!("locked: {}", l.plan().summary())),
            (None, Some(plan)) if self.dry_run => Some(format!(
                "not locked (dry run of --lock-clocks {})",
                plan.request
            )),
            _ if self.cuda => Some("not locked".into()),
            _ => None,
        };
    }

    pub fn sampling(&self) -> Option<GpuSampling<'_>> {
        let gpu = self.gpu.as_deref()?;
        let (devices, period) = self.telemetry.clone()?;
        Some(GpuSampling {
            gpu,
            devices,
            period,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_gpu::fake::{FakeDevice, FakeGpu};

    fn scratch(tag: &str, root: bool) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("xtask-gpu-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("gpu.json");
        FakeGpu::single(&fake, FakeDevice::h100(root)).unwrap();
        (fake.clone(), dir.join("lock.json"))
    }

    fn opener(fake: PathBuf) -> impl Fn() -> Result<Box<dyn Gpu>, GpuError> {
        move || Ok(Box::new(FakeGpu::open(&fake)?) as Box<dyn Gpu>)
    }

    fn spec(lock: Option<&str>, telemetry: Option<u64>) -> BenchSpec {
        let mut s: BenchSpec = serde_json::from_value(serde_json::json!({
            "run_id": "t", "model": "m", "targets": [], "scenarios": ["s1"],
            "device": {"kind": "cuda", "ordinal": 0}, "threads": 1, "measure": "quick",
            "warmup_iterations": 0, "iterations": 1, "max_new_tokens": 1, "timeout_s": 1,
            "runtimes": ["native"]
        }))
        .unwrap();
        s.lock_clocks = lock.map(String::from);
        s.telemetry_period_ms = telemetry;
        s
    }

    fn locked(fake: &std::path::Path) -> Option<[u32; 2]> {
        FakeGpu::open(fake).unwrap().read().unwrap().devices[0].locked_sm
    }

    #[test]
    fn a_refused_lock_is_an_error_before_anything_runs() {
        let (fake, state) = scratch("refused", false);
        let setup = GpuSetup::new(
            &spec(Some("max"), None),
            false,
            false,
            opener(fake.clone()),
            state.clone(),
        )
        .unwrap();
        let e = setup.lock().err().unwrap().to_string();
        assert!(
            e.contains("no permission") && e.contains("needs root"),
            "{e}"
        );
        assert!(!state.exists());
        assert_eq!(locked(&fake), None);
        // A lock the device cannot do is refused while planning, before anything else.
        let e = GpuSetup::new(&spec(Some("3000"), None), false, false, opener(fake), state)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("above its maximum of 1980 MHz"), "{e}");
    }

    #[test]
    fn without_nvml_a_lock_or_required_telemetry_is_refused_and_auto_goes_on() {
        let none = || Err::<Box<dyn Gpu>, _>(GpuError::Unavailable("no libnvidia-ml.so.1".into()));
        let state =
            std::env::temp_dir().join(format!("xtask-gpu-none-{}.json", std::process::id()));
        let e = GpuSetup::new(&spec(Some("max"), None), false, false, none, state.clone())
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "--lock-clocks: no NVML on this machine (no libnvidia-ml.so.1)"
        );
        let e = GpuSetup::new(&spec(None, Some(100)), false, true, none, state.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("--telemetry on: no NVML"), "{e}");
        let s = GpuSetup::new(&spec(None, Some(100)), false, false, none, state).unwrap();
        assert!(s.sampling().is_none());
    }

    #[test]
    fn a_lock_is_recorded_and_released_and_a_dry_run_changes_nothing() {
        let (fake, state) = scratch("lock", true);
        let setup = GpuSetup::new(
            &spec(Some("max"), Some(50)),
            false,
            false,
            opener(fake.clone()),
            state.clone(),
        )
        .unwrap();
        let mut prov = lab_harness::provenance::collect(&crate::paths::root(), "now".into());
        {
            let guard = setup.lock().unwrap();
            assert_eq!(locked(&fake), Some([1980, 1980]));
            setup.record(&mut prov, guard.as_ref());
            assert_eq!(
                prov.gpu_clocks.as_deref(),
                Some("locked: max: SM 1980 MHz, memory 2619 MHz on GPU 0")
            );
            // The state recorded is the locked one.
            let g = prov.gpu.as_ref().unwrap();
            assert_eq!(g.devices[0].clocks.sm_mhz, Some(1980));
            assert_eq!(prov.host.gpus, ["0, Fake H100 80GB HBM3, fake, 81920 MiB"]);
            let s = setup.sampling().unwrap();
            assert_eq!(
                (s.devices.clone(), s.period),
                (vec![0], Duration::from_millis(50))
            );
        }
        assert_eq!(locked(&fake), None, "dropping the guard restored");
        assert!(!state.exists());

        let dry = GpuSetup::new(
            &spec(Some("base"), None),
            true,
            false,
            opener(fake.clone()),
            state.clone(),
        )
        .unwrap();
        let guard = dry.lock().unwrap();
        assert!(guard.is_none());
        dry.record(&mut prov, None);
        assert_eq!(
            prov.gpu_clocks.as_deref(),
            Some("not locked (dry run of --lock-clocks base)")
        );
        assert_eq!(locked(&fake), None);
        assert!(FakeGpu::open(&fake).unwrap().read().unwrap().log.len() == 4);
    }

    #[test]
    fn the_next_bench_restores_a_lock_a_killed_run_left_and_gpu_reset_does_too() {
        let (fake, state) = scratch("stale", true);
        let gpu = FakeGpu::open(&fake).unwrap();
        let plan = lock::plan(&gpu, &[0], ClockRequest::Max).unwrap();
        // A killed run: the guard never dropped.
        std::mem::forget(ClockLock::acquire(&gpu, plan.clone(), &state).unwrap());
        assert_eq!(locked(&fake), Some([1980, 1980]));
        // The next bench restores first, even one that asks for no GPU work at all.
        let _ = GpuSetup::new(
            &spec(None, None),
            false,
            false,
            opener(fake.clone()),
            state.clone(),
        )
        .unwrap();
        assert_eq!(locked(&fake), None);
        assert!(!state.exists());
        // `gpu reset` does the same by hand; with nothing to restore it says so.
        std::mem::forget(ClockLock::acquire(&gpu, plan, &state).unwrap());
        let msg = reset(&gpu, &state, false).unwrap();
        assert!(msg.starts_with("restored GPU clocks left locked"), "{msg}");
        assert_eq!(locked(&fake), None);
        let msg = reset(&gpu, &state, false).unwrap();
        assert!(msg.starts_with("nothing to restore"), "{msg}");
        let msg = reset(&gpu, &state, true).unwrap();
        assert_eq!(
            msg,
            "GPU 0: SM clocks unlocked, GPU 0: memory clocks unlocked"
        );
    }
}
