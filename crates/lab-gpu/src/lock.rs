//! Clock locking as a guard. [`plan`] decides what `--lock-clocks base|max|<sm>[,<mem>]` sets
//! on each device (and is all `--dry-run` does); [`ClockLock::acquire`] writes the state file
//! *before* touching any clock, locks, verifies that the clocks reached the requested values and
//! returns a guard that restores when dropped — on success, on error, on an interrupted run (the
//! run returns, it does not `exit`) and on panic (unwinding drops it). A SIGKILL runs no
//! destructor: the state file stays, and [`restore_stale`] (called by every `bench` before
//! anything else, and by `cargo xtask gpu reset`) restores from it.
//!
//! What "restore" means: NVML cannot read a locked range back, so the lab refuses to lock a
//! device whose clocks are already limited by a user-defined lock, and restoring resets what the
//! lab locked (`ResetGpuLockedClocks`, and `ResetMemoryLockedClocks` where it locked memory), which
//! returns the device to the unlocked state recorded before. Applications clocks are recorded
//! and never changed.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backend::{Clocks, Gpu, GpuError};

/// What `--lock-clocks` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockRequest {
    /// SM (and memory, Ampere+) at the default applications clocks.
    Base,
    /// SM (and memory, Ampere+) at the highest supported clocks.
    Max,
    Mhz {
        sm: u32,
        mem: Option<u32>,
    },
}

impl FromStr for ClockRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("--lock-clocks: expected `base`, `max` or `<sm-MHz>[,<mem-MHz>]`, got `{s}`")
        };
        match s {
            "base" => Ok(Self::Base),
            "max" => Ok(Self::Max),
            _ => {
                let mut it = s.split(',');
                let mhz = |p: Option<&str>| -> Result<Option<u32>, String> {
                    match p {
                        None => Ok(None),
                        Some(p) => match p.trim().parse::<u32>() {
                            Ok(0) | Err(_) => Err(bad()),
                            Ok(v) => Ok(Some(v)),
                        },
                    }
                };
                let sm = mhz(it.next())?.ok_or_else(bad)?;
                let mem = mhz(it.next())?;
                if it.next().is_some() {
                    return Err(bad());
                }
                Ok(Self::Mhz { sm, mem })
            }
        }
    }
}

impl std::fmt::Display for ClockRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Base => f.write_str("base"),
            Self::Max => f.write_str("max"),
            Self::Mhz { sm, mem: None } => write!(f, "{sm}"),
            Self::Mhz { sm, mem: Some(m) } => write!(f, "{sm},{m}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("GPU {index}: {source}")]
    Gpu { index: u32, source: GpuError },
    #[error("{0}")]
    Refused(String),
    #[error("clock-lock state file {path}: {why}", path = .0.display(), why = .1)]
    State(PathBuf, String),
}

fn on(index: u32) -> impl Fn(GpuError) -> LockError {
    move |source| LockError::Gpu { index, source }
}

/// What a lock sets on one device, with the clocks it found before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceLock {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub sm_mhz: u32,
    /// `None`: memory clocks are left alone (not requested, or not lockable before Ampere).
    pub mem_mhz: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub before: Clocks,
}

/// The locks of one run: the content of the state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LockPlan {
    /// As given (`max`, `1410,1215`).
    pub request: String,
    pub devices: Vec<DeviceLock>,
}

impl LockPlan {
    /// One line per device: what is set, and how it is restored.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for d in &self.devices {
            let now = |v: Option<u32>| v.map_or("unknown".to_string(), |v| format!("{v} MHz"));
            out += &format!(
                "GPU {} ({}): lock SM clocks at {} MHz (now {})",
                d.index,
                d.name,
                d.sm_mhz,
                now(d.before.sm_mhz)
            );
            match d.mem_mhz {
                Some(m) => {
                    out += &format!(", memory clocks at {m} MHz (now {})", now(d.before.mem_mhz))
                }
                None => out += ", memory clocks unchanged",
            }
            if let Some(n) = &d.note {
                out += &format!(" ({n})");
            }
            out += &format!(
                "; restore: reset the locked SM{} clocks (the unlocked state found before)\n",
                if d.mem_mhz.is_some() {
                    " and memory"
                } else {
                    ""
                }
            );
        }
        out
    }

    /// `max: SM 1980 MHz, memory 2619 MHz on GPU 0` — what provenance records.
    pub fn summary(&self) -> String {
        let per: Vec<String> = self
            .devices
            .iter()
            .map(|d| {
                let mem = d
                    .mem_mhz
                    .map_or("memory unlocked".to_string(), |m| format!("memory {m} MHz"));
                format!("SM {} MHz, {mem} on GPU {}", d.sm_mhz, d.index)
            })
            .collect();
        format!("{}: {}", self.request, per.join("; "))
    }
}

/// Decides what `request` sets on `devices`; reads only. Refuses what cannot be done: a device
/// already under a user-defined lock, memory clocks on a device that cannot lock them, a clock
/// above the device's maximum.
pub fn plan(gpu: &dyn Gpu, devices: &[u32], request: ClockRequest) -> Result<LockPlan, LockError> {
    let mut out = Vec::new();
    for &index in devices {
        let st = gpu.status(index).map_err(on(index))?;
        if st.user_defined_clocks_active == Some(true) {
            return Err(LockError::Refused(format!(
                "GPU {index} ({}): its clocks are already limited by a user-defined lock; NVML cannot \
                 read that lock back to restore it, so the lab will not lock over it (reset it with \
                 `nvidia-smi -rgc -i {index}` first)",
                st.name
            )));
        }
        let c = &st.clocks;
        let need = |v: Option<u32>, what: &str| {
            v.ok_or_else(|| {
                LockError::Refused(format!(
                    "GPU {index} ({}): NVML does not report its {what}",
                    st.name
                ))
            })
        };
        let (sm, mem, note) = match request {
            ClockRequest::Base | ClockRequest::Max => {
                let (sm, mem) = if request == ClockRequest::Base {
                    (
                        need(c.sm_default_mhz, "default SM clock")?,
                        c.mem_default_mhz,
                    )
                } else {
                    (need(c.sm_max_mhz, "maximum SM clock")?, c.mem_max_mhz)
                };
                if st.memory_lock_supported {
                    (sm, Some(need(mem, "memory clock")?), None)
                } else {
                    (
                        sm,
                        None,
                        Some(format!(
                            "memory clocks cannot be locked on {}",
                            st.architecture.as_deref().unwrap_or("this architecture")
                        )),
                    )
                }
            }
            ClockRequest::Mhz { sm, mem } => {
                if let Some(max) = c.sm_max_mhz.filter(|&m| sm > m) {
                    return Err(LockError::Refused(format!(
                        "GPU {index} ({}): --lock-clocks {request}: SM clock {sm} MHz is above its maximum of {max} MHz",
                        st.name
                    )));
                }
                if let Some(m) = mem {
                    if !st.memory_lock_supported {
                        return Err(LockError::Refused(format!(
                            "GPU {index} ({}): --lock-clocks {request}: memory clocks can be locked on Ampere and newer only ({})",
                            st.name,
                            st.architecture.as_deref().unwrap_or("architecture unknown")
                        )));
                    }
                    if let Some(max) = c.mem_max_mhz.filter(|&x| m > x) {
                        return Err(LockError::Refused(format!(
                            "GPU {index} ({}): --lock-clocks {request}: memory clock {m} MHz is above its maximum of {max} MHz",
                            st.name
                        )));
                    }
                }
                (sm, mem, None)
            }
        };
        out.push(DeviceLock {
            index,
            uuid: st.uuid,
            name: st.name,
            sm_mhz: sm,
            mem_mhz: mem,
            note,
            before: st.clocks,
        });
    }
    Ok(LockPlan {
        request: request.to_string(),
        devices: out,
    })
}

/// The state file: the plan plus who wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub pid: u32,
    pub created_unix_s: u64,
    pub plan: LockPlan,
}

/// Where the state file lives: `$LAB_GPU_STATE`, else one machine-wide file (GPUs are
/// machine-wide) that survives the process: `/var/tmp/inference-lab/gpu-clock-lock.json`.
pub fn default_state_path() -> PathBuf {
    std::env::var_os("LAB_GPU_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/inference-lab/gpu-clock-lock.json"))
}

fn write_state(path: &Path, state: &StateFile) -> Result<(), LockError> {
    let fail = |e: std::io::Error| LockError::State(path.to_path_buf(), e.to_string());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("partial");
    let text = serde_json::to_string_pretty(state).expect("state serializes");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(fail)?;
        f.write_all(text.as_bytes()).map_err(fail)?;
        // On disk before any clock changes, so a crash right after the lock can be undone.
        f.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, path).map_err(fail)
}

fn read_state(path: &Path) -> Result<Option<StateFile>, LockError> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LockError::State(path.to_path_buf(), e.to_string())),
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LockError::State(path.to_path_buf(), format!("unreadable: {e}"))),
    }
}

/// What was changed on one device: (index, SM clocks locked, memory clocks locked).
type Applied = (u32, bool, bool);

fn everything(plan: &LockPlan) -> Vec<Applied> {
    plan.devices
        .iter()
        .map(|d| (d.index, true, d.mem_mhz.is_some()))
        .collect()
}

/// Resets what was locked; removes the state file when everything was restored.
fn restore(gpu: &dyn Gpu, applied: &[Applied], path: &Path) -> Result<Vec<String>, LockError> {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for &(index, sm, mem) in applied {
        if sm {
            match gpu.reset_sm_clocks(index) {
                Ok(()) => done.push(format!("GPU {index}: SM clocks unlocked")),
                Err(e) => failed.push(format!("GPU {index}: SM clocks: {e}")),
            }
        }
        if mem {
            match gpu.reset_mem_clocks(index) {
                Ok(()) => done.push(format!("GPU {index}: memory clocks unlocked")),
                Err(e) => failed.push(format!("GPU {index}: memory clocks: {e}")),
            }
        }
    }
    if !failed.is_empty() {
        return Err(LockError::Refused(format!(
            "restoring GPU clocks failed ({}); the state file {} is kept: run `cargo xtask gpu reset` (as root)",
            failed.join("; "),
            path.display()
        )));
    }
    std::fs::remove_file(path)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(|e| LockError::State(path.to_path_buf(), e.to_string()))?;
    Ok(done)
}

fn pid_alive(pid: u32) -> bool {
    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
}

/// Restores the locks a previous run left behind (it was killed before its guard could drop).
/// `Ok(None)`: there was nothing to restore. Refuses while the process that wrote the file is
/// still running (another run holds the lock).
pub fn restore_stale(gpu: &dyn Gpu, path: &Path) -> Result<Option<String>, LockError> {
    let Some(state) = read_state(path)? else {
        return Ok(None);
    };
    if pid_alive(state.pid) {
        return Err(LockError::Refused(format!(
            "GPU clocks are locked by another running process (pid {}, state file {}); wait for it or stop it",
            state.pid,
            path.display()
        )));
    }
    let done = restore(gpu, &everything(&state.plan), path)?;
    Ok(Some(format!(
        "restored GPU clocks left locked ({}) by process {} that did not finish: {}",
        state.plan.summary(),
        state.pid,
        done.join(", ")
    )))
}

/// A held clock lock; dropping it restores.
pub struct ClockLock<'g> {
    gpu: &'g dyn Gpu,
    path: PathBuf,
    plan: LockPlan,
    /// What this guard changed so far (a refused or failed lock restores only that).
    applied: Vec<Applied>,
    held: bool,
}

/// How close a verified clock must be to the requested one: 1 % or 15 MHz, whichever is larger.
fn close(got: u32, want: u32) -> bool {
    got.abs_diff(want) <= (want / 100).max(15)
}

impl<'g> ClockLock<'g> {
    /// Writes the state file, locks every device of `plan`, and verifies (with the GPU idle,
    /// as locked clocks hold then too) that the clocks reached the requested values. Any failure
    /// restores what was already locked before returning the error.
    pub fn acquire(gpu: &'g dyn Gpu, plan: LockPlan, path: &Path) -> Result<Self, LockError> {
        if let Some(old) = read_state(path)? {
            return Err(LockError::Refused(format!(
                "a clock-lock state file from process {} exists ({}): restore it first (`cargo xtask gpu reset`)",
                old.pid,
                path.display()
            )));
        }
        write_state(
            path,
            &StateFile {
                pid: std::process::id(),
                created_unix_s: crate::now_unix_ns() / 1_000_000_000,
                plan: plan.clone(),
            },
        )?;
        // From here on, dropping `lock` restores (including on the `?`s below).
        let mut lock = Self {
            gpu,
            path: path.to_path_buf(),
            plan,
            applied: Vec::new(),
            held: true,
        };
        for d in lock.plan.devices.clone() {
            gpu.lock_sm_clocks(d.index, d.sm_mhz, d.sm_mhz)
                .map_err(on(d.index))?;
            lock.applied.push((d.index, true, false));
            if let Some(m) = d.mem_mhz {
                gpu.lock_mem_clocks(d.index, m, m).map_err(on(d.index))?;
                lock.applied.last_mut().expect("pushed above").2 = true;
            }
        }
        for d in &lock.plan.devices {
            let now = gpu.status(d.index).map_err(on(d.index))?.clocks;
            let sm_ok = now.sm_mhz.is_some_and(|v| close(v, d.sm_mhz));
            let mem_ok = d
                .mem_mhz
                .is_none_or(|m| now.mem_mhz.is_some_and(|v| close(v, m)));
            if !sm_ok || !mem_ok {
                return Err(LockError::Refused(format!(
                    "GPU {} ({}): after locking to SM {} MHz{} the device reports SM {:?} MHz, memory {:?} MHz: the lock did not take (restored)",
                    d.index,
                    d.name,
                    d.sm_mhz,
                    d.mem_mhz.map(|m| format!(", memory {m} MHz")).unwrap_or_default(),
                    now.sm_mhz,
                    now.mem_mhz
                )));
            }
        }
        Ok(lock)
    }

    pub fn plan(&self) -> &LockPlan {
        &self.plan
    }

    /// Restores now and reports failures (dropping does the same but can only print them).
    pub fn release(mut self) -> Result<Vec<String>, LockError> {
        self.held = false;
        restore(self.gpu, &self.applied, &self.path)
    }
}

impl Drop for ClockLock<'_> {
    fn drop(&mut self) {
        if self.held {
            self.held = false;
            match restore(self.gpu, &self.applied, &self.path) {
                Ok(done) if done.is_empty() => {}
                Ok(done) => eprintln!("GPU clocks restored: {}", done.join(", ")),
                Err(e) => eprintln!("error: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
