//! Where a result came from: source revision, toolchain, host hardware and software state.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// `git rev-parse HEAD`, or `unknown` outside a git checkout.
    pub git_rev: String,
    /// Uncommitted changes were present when the run started.
    pub git_dirty: bool,
    /// sha256 of `flake.lock`, when the checkout has one.
    pub flake_lock_sha256: Option<String>,
    pub rustc: String,
    /// UTC, RFC 3339.
    pub started_at: String,
    pub host: Host,
    /// The machine's read bandwidth in GB/s (10^9 bytes/s), measured by `native-membw` with the
    /// run's threads just before the engines ran (CPU runs that build engine-native).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bandwidth_gb_per_s: Option<f64>,
    /// Every GPU's state from NVML when the run started (clocks, power limit, persistence,
    /// throttle reasons), or why there is none (`unavailable`). Absent in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<lab_gpu::GpuState>,
    /// The run's GPU clocks: `not locked`, or what `--lock-clocks` locked them to (a dry run
    /// says what it would have set). Absent on CPU runs and in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_clocks: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpu_model: String,
    pub cpu_vendor: String,
    pub cpu_family: String,
    pub cpu_model_number: String,
    /// SIMD features that matter for inference kernels, as the kernel reports them.
    pub cpu_simd: Vec<String>,
    pub logical_cpus: usize,
    pub memory_bytes: Option<u64>,
    /// One row per GPU, `index, name, driver, memory` (from NVML; older runs have
    /// `nvidia-smi` rows), empty when no NVIDIA GPU is visible. The full state is
    /// [`Provenance::gpu`].
    pub gpus: Vec<String>,
}

fn cpuinfo_field(cpuinfo: &str, key: &str) -> String {
    cpuinfo
        .lines()
        .find(|l| l.split(':').next().map(str::trim) == Some(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn host() -> Host {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo_field(&cpuinfo, "flags");
    let interesting = [
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx512_bf16",
        "avx_vnni",
        "amx_tile",
        "neon",
        "asimd",
    ];
    let cpu_simd = flags
        .split_whitespace()
        .filter(|f| interesting.contains(f))
        .map(String::from)
        .collect();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_bytes = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024);
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let os = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    };
    Host {
        hostname: read("/proc/sys/kernel/hostname"),
        os,
        kernel: read("/proc/sys/kernel/osrelease"),
        arch: std::env::consts::ARCH.to_string(),
        cpu_model: cpuinfo_field(&cpuinfo, "model name"),
        cpu_vendor: cpuinfo_field(&cpuinfo, "vendor_id"),
        cpu_family: cpuinfo_field(&cpuinfo, "cpu family"),
        cpu_model_number: cpuinfo_field(&cpuinfo, "model"),
        cpu_simd,
        logical_cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_bytes,
        gpus: Vec::new(),
    }
}

/// `index, name, driver, memory` per device of `state` ([`Host::gpus`]).
pub fn gpu_rows(state: &lab_gpu::GpuState) -> Vec<String> {
    let driver = state
        .system
        .as_ref()
        .and_then(|s| s.driver_version.clone())
        .unwrap_or_else(|| "unknown".into());
    state
        .devices
        .iter()
        .map(|d| {
            format!(
                "{}, {}, {driver}, {}",
                d.index,
                d.name,
                d.memory_total_bytes
                    .map_or("unknown".into(), |b| format!("{} MiB", b >> 20))
            )
        })
        .collect()
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Baseline profile name: numbers are comparable only within one profile.
/// CPU: `cpu-<vendor>-f<family>m<model>-<threads>t`; GPU: `gpu-<name>`.
pub fn hardware_profile(host: &Host, device: &lab_protocol::Device, threads: usize) -> String {
    match device {
        lab_protocol::Device::Cpu => format!(
            "cpu-{}-f{}m{}-{}t",
            slug(&host.cpu_vendor),
            slug(&host.cpu_family),
            slug(&host.cpu_model_number),
            threads
        ),
        lab_protocol::Device::Cuda { ordinal } => {
            let name = host
                .gpus
                .get(*ordinal as usize)
                .and_then(|row| row.split(',').nth(1))
                .map(slug)
                .unwrap_or_else(|| "unknown".into());
            format!("gpu-{name}")
        }
    }
}

pub fn collect(root: &Path, started_at: String) -> Provenance {
    let sh = xshell::Shell::new().expect("current directory is readable");
    sh.change_dir(root);
    let git_rev = xshell::cmd!(sh, "git rev-parse HEAD")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_else(|_| "unknown".into());
    let git_dirty = xshell::cmd!(sh, "git status --porcelain --untracked-files=no")
        .quiet()
        .ignore_stderr()
        .read()
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false);
    let rustc = xshell::cmd!(sh, "rustc --version")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_else(|_| "unknown".into());
    let lock = root.join("flake.lock");
    let flake_lock_sha256 = lock
        .exists()
        .then(|| crate::sha256_file(&lock).ok())
        .flatten();
    let gpu = lab_gpu::GpuState::collect();
    let mut host = host();
    host.gpus = gpu_rows(&gpu);
    Provenance {
        git_rev,
        git_dirty,
        flake_lock_sha256,
        rustc,
        started_at,
        host,
        read_bandwidth_gb_per_s: None,
        gpu: Some(gpu),
        gpu_clocks: None,
    }
}

/// Seconds since the Unix epoch as RFC 3339 UTC, without a date library.
pub fn rfc3339(unix_secs: u64) -> String {
    let (days, rem) = (unix_secs / 86_400, unix_secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The framework an engine is built on and its version, from `Cargo.lock` (`candle-core 0.10.2`),
/// or the engine package's own version when it uses none (the native engine).
pub fn engine_version(root: &Path, package: &str) -> String {
    const FRAMEWORKS: [&str; 4] = ["candle-core", "llama-cpp-2", "mistralrs", "burn"];
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let mut own = None;
    for block in lock.split("[[package]]") {
        let field = |k: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        if field("name").as_deref() == Some(package) {
            own = field("version");
            for dep in block
                .lines()
                .map(|l| l.trim().trim_matches(|c| c == '"' || c == ','))
            {
                let name = dep.split_whitespace().next().unwrap_or("");
                if FRAMEWORKS.contains(&name) {
                    // Dependency entries are `name` or `name version` (when several exist).
                    let version = dep
                        .split_whitespace()
                        .nth(1)
                        .map(str::to_string)
                        .or_else(|| {
                            lock.split("[[package]]").find_map(|b| {
                                b.contains(&format!("name = \"{name}\"\n")).then(|| {
                                    b.lines()
                                        .find_map(|l| l.strip_prefix("version = \""))
                                        .unwrap_or("?")
                                        .trim_end_matches('"')
                                        .to_string()
                                })
                            })
                        });
                    return format!("{name} {}", version.unwrap_or_else(|| "?".into()));
                }
            }
        }
    }
    format!("{package} {}", own.unwrap_or_else(|| "?".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn profile_names_are_slugs() {
        let mut h = host();
        h.cpu_vendor = "GenuineIntel".into();
        h.cpu_family = "6".into();
        h.cpu_model_number = "167".into();
        h.gpus = vec!["0, NVIDIA H100 80GB HBM3, 580.1, 81559 MiB".into()];
        assert_eq!(
            hardware_profile(&h, &lab_protocol::Device::Cpu, 2),
            "cpu-genuineintel-f6m167-2t"
        );
        assert_eq!(
            hardware_profile(&h, &lab_protocol::Device::Cuda { ordinal: 0 }, 2),
            "gpu-nvidia-h100-80gb-hbm3"
        );
    }

    #[test]
    fn engine_versions_come_from_the_lock_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        assert!(engine_version(&root, "engine-candle").starts_with("candle-core 0."));
        assert!(engine_version(&root, "engine-llamacpp").starts_with("llama-cpp-2 0."));
        assert_eq!(
            engine_version(&root, "engine-native"),
            "engine-native 0.0.0"
        );
    }
}
