//! Collecting provenance on this machine: the host's hardware and software state, the source
//! revision and toolchain, the engines' framework versions (the types are
//! `lab_results::provenance`).

use std::path::Path;

use lab_results::provenance::{Host, Provenance};

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
    fn the_host_is_read_from_the_kernel() {
        let h = host();
        assert!(h.logical_cpus >= 1);
        assert_eq!(h.arch, std::env::consts::ARCH);
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
